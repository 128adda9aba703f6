"""One Adam trunk, branches at the switch: the same records as arms trained one by one.

- Against the fixture (tests/fixtures/engine_records.json): the records, events and per-arm
  summaries that the per-arm engine (c3ccbb0, every arm training its own Adam phase) made for
  three configs. On the machine kind it was recorded on (same CPU model and vector ISA, one
  thread) they must be equal bit for bit; elsewhere float32 kernels sum in another order, so
  the Adam phase is held to ADAM_RTOL (2e-5) and the later phases to the comparison of
  tests/test_distributed.py (the structure exactly, figures within 5%).
- Sharing on against sharing off in this process: bit for bit on any machine.
- Several switch points from one trunk: each branch's rows up to its switch are the trunk's.
"""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from tests.fixtures import engine_records as fx
from twophase import runs
from twophase.config import RunConfig
from twophase.training.run import run_experiment

FIXTURE = json.loads(fx.FIXTURE.read_text())
SAME_MACHINE = (FIXTURE["cpu_model"], FIXTURE["cpu_capability"]) == (fx.cpu_model(), fx.cpu_capability())
# Across machine kinds float32 kernels sum in another order: the Adam phase of the fixture's runs
# differed by up to 2.7e-6 (grad_norm) on an Intel Xeon (AVX512) against the AMD EPYC that recorded
# it (1.6e-6 failed a 1e-6 bound there); a logic change moves these figures by far more.
ADAM_RTOL = 2e-5
OLD_ARM_KEYS = ("status", "epochs", "phase", "train_loss", "train_acc", "val_loss", "val_acc", "grad_norm",
                "data_passes", "loss_evals", "switch_epoch", "peak_epoch", "peak_grad_norm", "threshold")


def _key(record: dict) -> tuple:
    return record["arm"], record["epoch"]


def _close(a, b, rtol: float) -> bool:
    if a is None or b is None or isinstance(a, str):
        return a == b
    return a == b or math.isclose(a, b, rel_tol=rtol, abs_tol=0.0)


@pytest.mark.parametrize("name", list(fx.CONFIGS))
def test_records_equal_the_per_arm_engine(name, data_root):
    expected = FIXTURE["runs"][name]
    got = fx.record_run(name, fx.CONFIGS[name], data_root)
    assert got["status"] == expected["status"] == "completed"
    old = {_key(r): r for r in expected["records"]}
    new = {_key(r): r for r in got["records"]}
    assert sorted(new) == sorted(old)
    assert [(e["arm"], e["kind"], e["epoch"]) for e in got["events"]] == \
        [(e["arm"], e["kind"], e["epoch"]) for e in expected["events"]]
    for key in old:
        a, b = old[key], new[key]
        assert set(a) <= set(b), key
        for column, value in a.items():
            if SAME_MACHINE:
                assert b[column] == value, (name, key, column, b[column], value)
            else:
                rtol = ADAM_RTOL if a["phase"] in ("init", "adam") else 5e-2
                assert _close(b[column], value, 0 if column in ("arm", "epoch", "phase") else rtol), \
                    (name, key, column, b[column], value)
    for arm, figures in expected["arms"].items():
        for k in OLD_ARM_KEYS:
            if k in figures:
                rtol = 0 if SAME_MACHINE or k in ("status", "epochs", "phase", "switch_epoch", "peak_epoch") else 5e-2
                assert _close(got["arms"][arm][k], figures[k], rtol), (name, arm, k)


def _metrics(tmp_path, values, run_id, **options):
    summary = run_experiment(RunConfig(**values), str(tmp_path), run_id, **options)
    assert summary["status"] == "completed", summary
    return runs.load_run(str(tmp_path), run_id), summary


def test_sharing_the_trunk_changes_nothing_but_the_cost_of_computing_it(data_root, tmp_path):
    values = dict(fx.CONFIGS["adaptive-all-arms"], data_root=data_root,
                  arms=["two-phase", "adam", "adam-lbfgs", "cg", "two-phase@3", "two-phase@50%",
                        "two-phase@2:float64"])
    shared, s1 = _metrics(tmp_path, values, "20260101-000000-0000a1")
    alone, s2 = _metrics(tmp_path, values, "20260101-000000-0000a2", share_trunk=False)
    cols = [c for c in shared.metrics.columns if c != "seconds"]
    a = shared.metrics[cols].sort_values(["arm", "epoch"]).reset_index(drop=True)
    b = alone.metrics[cols].sort_values(["arm", "epoch"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)
    assert shared.events == alone.events
    assert shared.summary["shared_trunk"] is True and alone.summary["shared_trunk"] is False
    assert [s1["arms"][a]["shared_epochs"] for a in values["arms"]] == \
        [s2["arms"][a]["shared_epochs"] for a in values["arms"]]


def test_arms_switching_at_one_epoch_ride_one_branch(data_root):
    from twophase.training.setup import prepare
    from twophase.training.trainer import MemoryLog, Trainer

    cfg = RunConfig(**dict(fx.CONFIGS["adaptive-all-arms"], data_root=data_root, epochs=10,
                           arms=["adam", "two-phase@2", "two-phase@20%", "two-phase@2:float64", "adam-lbfgs@2"]))
    cfg.validate()
    log = MemoryLog()
    trainer = Trainer(cfg, prepare(cfg), log)
    trainer.start()
    for epoch in (1, 2, 3):
        trainer.train_epoch(epoch)
    by_name = {a.name: a for a in trainer.arms}
    assert by_name["two-phase@2"].branch is by_name["two-phase@20%"].branch
    assert by_name["two-phase@2:float64"].branch is not by_name["two-phase@2"].branch
    assert len(trainer.branches) == 3  # float32 CG, float64 CG, L-BFGS
    rows = {(r.arm, r.epoch): r for r in log.records}
    a, b = rows[("two-phase@2", 3)], rows[("two-phase@20%", 3)]
    assert (a.train_loss, a.data_passes, a.loss_evals, a.phase) == (b.train_loss, b.data_passes, b.loss_evals, "cg")


def test_branches_share_the_trunk_rows_up_to_their_switch_and_are_charged_its_cost(data_root, tmp_path):
    values = dict(fx.CONFIGS["adaptive-all-arms"], data_root=data_root, epochs=6,
                  arms=["adam", "two-phase@2", "two-phase@4", "two-phase@50%:float64", "two-phase"])
    run, summary = _metrics(tmp_path, values, "20260101-000000-0000a3")
    df = run.metrics.set_index(["arm", "epoch"]).sort_index()
    adam = df.loc["adam"]
    for arm, switch in (("two-phase@2", 2), ("two-phase@4", 4), ("two-phase@50%:float64", 3)):
        part = df.loc[arm]
        assert summary["arms"][arm]["switch_epoch"] == switch
        assert summary["arms"][arm]["shared_epochs"] == switch
        shared = part.loc[:switch]
        # the trunk's rows: same figures and cost (a fixed switch reads no norm, so no extra pass)
        cols = ["train_loss", "val_loss", "grad_norm", "data_passes", "loss_evals"]
        pd.testing.assert_frame_equal(shared[cols], adam.loc[:switch, cols])
        assert (part.loc[switch + 1:, "phase"] == "cg").all() and (part.loc[1:switch, "phase"] == "adam").all()
        assert (part.loc[switch + 1:, "train_loss"] != adam.loc[switch + 1:, "train_loss"]).all()
        ratio = summary["arms"][arm]["vs_adam"]
        assert set(ratio) == {"epoch", "data_passes", "seconds"}
        assert ratio["epoch"]["at"] == 6
        assert ratio["epoch"]["ratio"] == pytest.approx(part.loc[6, "train_loss"] / adam.loc[6, "train_loss"])
        assert ratio["data_passes"]["at"] == pytest.approx(min(part["data_passes"].max(), adam["data_passes"].max()))
    # the adaptive rule reads the full-set norm each Adam epoch: one pass more per epoch than Adam
    paper = df.loc["two-phase"]
    k = summary["arms"]["two-phase"]["switch_epoch"]
    assert k is not None
    assert paper.loc[k, "data_passes"] == pytest.approx(adam.loc[k, "data_passes"] + k)
    assert summary["arms"]["two-phase"]["label"] == f"two-phase (switched at {k})"
    assert summary["arms"]["two-phase@2"]["label"] == "two-phase (switch at 2)"
    # float64 branch: its CG ran in double precision from the trunk's float32 weights
    assert df.loc["two-phase@50%:float64"].loc[4:, "train_loss"].notna().all()


# ----------------------------------------------------------------------------- switch signals in the engine


def test_plateau_curvature_and_trial_arms_are_charged_for_what_their_rules_read(data_root, tmp_path):
    values = dict(fx.CONFIGS["adaptive-all-arms"], data_root=data_root, epochs=8, lr=3e-3,
                  arms=["adam", "two-phase@plateau:threshold=0.5:window=2", "two-phase@curvature:epsilon=10:probe_every=3",
                        "two-phase@trial:trial_every=2:trial_passes=3"])
    run, summary = _metrics(tmp_path, values, "20260101-000000-0000b1")
    df = run.metrics.set_index(["arm", "epoch"]).sort_index()
    adam = df.loc["adam"]
    assert "hess_min" not in run.metrics.columns  # probing for a rule is not the monitoring probe
    plateau = summary["arms"]["two-phase@plateau:threshold=0.5:window=2"]
    # a window of 2 needs 3 losses: the earliest switch is epoch 3; each Adam epoch reads the loss (1/3 pass)
    assert plateau["switch_epoch"] is not None and plateau["switch_epoch"] >= 3 and plateau["reads"] == "loss"
    k = plateau["switch_epoch"]
    part = df.loc["two-phase@plateau:threshold=0.5:window=2"]
    assert part.loc[k, "data_passes"] == pytest.approx(adam.loc[k, "data_passes"] + k / 3)
    curv = summary["arms"]["two-phase@curvature:epsilon=10:probe_every=3"]
    # epsilon 10 accepts any finite ratio above -10: the first probe (epoch 3) fires; charged its work
    assert curv["switch_epoch"] == 3
    part = df.loc["two-phase@curvature:epsilon=10:probe_every=3"]
    probe_passes = (1 + 2 * 20) * min(512, 256) / 256
    assert part.loc[3, "data_passes"] == pytest.approx(adam.loc[3, "data_passes"] + probe_passes)
    assert part.loc[2, "data_passes"] == adam.loc[2, "data_passes"]
    trial_name = "two-phase@trial:trial_every=2:trial_passes=3"
    trials = [e for e in run.events if e["kind"] == "trial" and e["arm"] == trial_name]
    assert trials and [e["epoch"] for e in trials][:2] in ([2], [2, 4])
    part = df.loc[trial_name]
    arm = summary["arms"][trial_name]
    if arm["switch_epoch"] is None:  # every trial dropped: Adam's figures, and the trials' cost on top
        assert all(not e["kept"] for e in trials)
        pd.testing.assert_series_equal(part["train_loss"], adam["train_loss"])
        assert (part.loc[3:, "data_passes"] >= adam.loc[3:, "data_passes"] + 3).all()
    else:  # kept: CG from the trial's epoch on, the dropped trials before it charged
        s = arm["switch_epoch"]
        assert trials[-1]["kept"] and trials[-1]["epoch"] == s and arm["trials"] == len(trials)
        assert (part.loc[s + 1:, "phase"] == "cg").all()
        assert part.loc[s, "data_passes"] >= adam.loc[s, "data_passes"] + 3 * (len(trials) - 1)


def test_a_trial_is_kept_exactly_when_cg_beats_adam_per_pass(data_root, tmp_path):
    # CG from the start beats Adam per pass on this tiny problem early on, and loses late:
    # with a generous trial (1 trial at epoch 2) it is kept; its records are CG from epoch 3
    values = dict(fx.CONFIGS["adaptive-all-arms"], data_root=data_root, epochs=6, lr=1e-4,
                  arms=["adam", "two-phase@trial:trial_every=2:trial_passes=2"])
    run, summary = _metrics(tmp_path, values, "20260101-000000-0000b2")
    [trial] = [e for e in run.events if e["kind"] == "trial"][:1]
    arm = summary["arms"]["two-phase@trial:trial_every=2:trial_passes=2"]
    assert trial["epoch"] == 2 and trial["value"] is not None
    assert trial["kept"] == (trial["value"] > 1)
    assert (arm["switch_epoch"] == 2) == trial["kept"]


def test_the_monitoring_probe_runs_every_k_epochs_at_each_switch_and_at_the_end(data_root, tmp_path):
    values = dict(fx.CONFIGS["adaptive-all-arms"], data_root=data_root, epochs=7, hessian_probe=True, probe_every=3,
                  arms=["adam", "two-phase@2"])
    run, summary = _metrics(tmp_path, values, "20260101-000000-0000c1")
    df = run.metrics.set_index(["arm", "epoch"]).sort_index()
    probed = {arm: sorted(int(e) for e in df.loc[arm].index[df.loc[arm, "hess_min"].notna()]) for arm in ("adam", "two-phase@2")}
    assert probed["adam"] == [0, 2, 3, 6, 7]  # 2: the branch's switch, probed on the trunk
    assert probed["two-phase@2"] == [0, 2, 3, 6, 7]
    assert df.loc[("adam", 2), "hess_min"] == df.loc[("two-phase@2", 2), "hess_min"]
    assert summary["arms"]["adam"]["probe_seconds"] > 0
