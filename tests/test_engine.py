"""The engine and the comparison run: identical starts, events, determinism, divergence, stop."""

import math
import threading
import time

import pandas as pd
import pytest

from twophase import runs
from twophase.config import RunConfig
from twophase.training.run import run_experiment


def tiny(data_root, **changes) -> RunConfig:
    base = dict(model="mlp", dataset="mnist", data_root=data_root, subset=256, val_subset=256, epochs=4,
                batch_size=64, switch_epoch=2, seed=3, threads=1)
    base.update(changes)
    return RunConfig(**base)


def read_metrics(runs_dir, run_id) -> pd.DataFrame:
    return runs.load_run(runs_dir, run_id).metrics


def test_run_writes_complete_directory_with_finite_columns(data_root, tmp_path):
    summary = run_experiment(tiny(data_root), str(tmp_path), "20260101-000000-abcdef")
    assert summary["status"] == "completed"
    run = runs.load_run(str(tmp_path), "20260101-000000-abcdef")
    df = run.metrics
    assert list(df.columns[:12]) == runs.METRIC_COLUMNS
    assert set(df["arm"]) == {"two-phase", "adam"}
    assert len(df) == 2 * (4 + 1)  # epoch 0 plus 4 epochs per arm
    numeric = df[runs.METRIC_COLUMNS[3:]]
    assert numeric.notna().all().all() and (numeric.abs() < 1e30).all().all()
    assert run.summary["status"] == "completed"
    assert run.config["model"] == "mlp"


def test_arms_start_from_identical_weights(data_root, tmp_path):
    run_experiment(tiny(data_root, arms=["two-phase", "adam", "cg", "adam-lbfgs"], epochs=1, switch_epoch=1),
                   str(tmp_path), "20260101-000000-000001")
    df = read_metrics(str(tmp_path), "20260101-000000-000001")
    start = df[df["epoch"] == 0]
    assert len(start) == 4
    assert start["train_loss"].nunique() == 1 and start["grad_norm"].nunique() == 1
    # Adam phase with the same batch order: two-phase and adam agree exactly after epoch 1.
    first = df[df["epoch"] == 1].set_index("arm")
    assert first.loc["two-phase", "train_loss"] == first.loc["adam", "train_loss"]
    assert first.loc["adam-lbfgs", "train_loss"] == first.loc["adam", "train_loss"]


def test_two_phase_switches_and_records_peak_and_switch_events(data_root, tmp_path):
    summary = run_experiment(tiny(data_root, switch_epoch=None, tolerance=0.9, epochs=8, lr=3e-3),
                             str(tmp_path), "20260101-000000-000002")
    events = runs.load_run(str(tmp_path), "20260101-000000-000002").events
    kinds = [(e["arm"], e["kind"]) for e in events]
    assert ("two-phase", "switch") in kinds and ("two-phase", "peak") in kinds
    switch = next(e for e in events if e["kind"] == "switch")
    peak = next(e for e in events if e["kind"] == "peak")
    assert peak["epoch"] <= switch["epoch"]
    assert switch["value"] <= 0.9 * peak["value"] + 1e-12
    assert math.isclose(switch["threshold"], 0.9 * peak["value"], rel_tol=1e-9)
    df = read_metrics(str(tmp_path), "20260101-000000-000002")
    tp = df[df["arm"] == "two-phase"].set_index("epoch")
    assert (tp.loc[switch["epoch"] + 1:, "phase"] == "cg").all()
    assert (tp.loc[1:switch["epoch"], "phase"] == "adam").all()
    assert summary["arms"]["two-phase"]["switch_epoch"] == switch["epoch"]
    # Every CG iteration evaluates the full-batch loss and gradient at least once, and it is counted.
    cost = tp.loc[switch["epoch"]:, ["data_passes", "loss_evals"]].diff().dropna()
    assert len(cost) >= 2 and (cost["data_passes"] >= 1.0).all() and (cost["loss_evals"] >= 1).all()


def test_an_arm_switched_at_its_last_epoch_reports_the_phase_it_trained_in(data_root, tmp_path):
    """summary.json (the Runs page's arm table) and metrics.csv (Compare's final table) agree on
    the phase: the rule fired after the last epoch, which Adam trained; no CG epoch followed."""
    from twophase import analysis

    run_experiment(tiny(data_root, arms=["two-phase@4", "two-phase@2", "adam"], switch_epoch=None),
                   str(tmp_path), "20260101-000000-00000e")
    run = runs.load_run(str(tmp_path), "20260101-000000-00000e")
    arms = run.summary["arms"]
    assert arms["two-phase@4"]["switch_epoch"] == 4
    final = analysis.final_table(run.metrics, run.events).set_index("arm")
    assert arms["two-phase@4"]["phase"] == final.loc["two-phase@4", "phase"] == "adam"
    assert arms["two-phase@2"]["phase"] == final.loc["two-phase@2", "phase"] == "cg"
    assert arms["adam"]["phase"] == final.loc["adam", "phase"] == "adam"


def test_same_seed_gives_identical_metrics_apart_from_time(data_root, tmp_path):
    for run_id in ("20260101-000000-00000a", "20260101-000000-00000b"):
        run_experiment(tiny(data_root), str(tmp_path), run_id)
    a = read_metrics(str(tmp_path), "20260101-000000-00000a").drop(columns=["seconds"])
    b = read_metrics(str(tmp_path), "20260101-000000-00000b").drop(columns=["seconds"])
    pd.testing.assert_frame_equal(a, b)


def test_divergent_arm_ends_diverged_and_other_arm_finishes(data_root, tmp_path):
    # An absurd learning rate blows Adam up (loss x 1000 and more); the CG-only arm ignores lr.
    cfg = tiny(data_root, arms=["adam", "cg"], lr=10.0, loss="cross-entropy", epochs=3, batch_size=16,
               model_sizes={"depth": 4, "width": 128})
    summary = run_experiment(cfg, str(tmp_path), "20260101-000000-00000c")
    run = runs.load_run(str(tmp_path), "20260101-000000-00000c")
    arms = summary["arms"]
    if arms["adam"]["status"] != "diverged":
        pytest.fail(f"expected Adam with lr=9 to diverge, got {arms['adam']}")
    assert arms["cg"]["status"] == "completed"
    assert summary["status"] == "diverged"
    assert any(e["kind"] == "diverged" and e["arm"] == "adam" for e in run.events)
    # Nothing non-finite is written as if it were a result.
    adam = run.metrics[run.metrics["arm"] == "adam"]
    assert not (adam["train_loss"].dropna().abs() == float("inf")).any()
    assert run.metrics[run.metrics["arm"] == "cg"]["epoch"].max() == 3


def test_stop_from_another_thread_ends_stopped_quickly_with_files_readable(data_root, tmp_path):
    cfg = tiny(data_root, epochs=500, subset=2048, batch_size=32, switch_epoch=None)
    flag = threading.Event()
    result = {}

    def work():
        result["summary"] = run_experiment(cfg, str(tmp_path), "20260101-000000-00000d", should_stop=flag.is_set)

    t = threading.Thread(target=work)
    t.start()
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if len(read_metrics(str(tmp_path), "20260101-000000-00000d")) >= 4:
                break
        except Exception:
            pass
        time.sleep(0.05)
    before = len(read_metrics(str(tmp_path), "20260101-000000-00000d"))
    flag.set()
    t.join(timeout=60)
    assert not t.is_alive()
    # it stops within the mini-batch under way: at most the epoch each arm was in finishes
    assert len(read_metrics(str(tmp_path), "20260101-000000-00000d")) <= before + len(cfg.arms)
    assert result["summary"]["status"] == "stopped"
    run = runs.load_run(str(tmp_path), "20260101-000000-00000d")
    assert run.summary["status"] == "stopped"
    assert len(run.metrics) >= 4


def test_hessian_probe_columns_appear_only_when_enabled(data_root, tmp_path):
    run_experiment(tiny(data_root, epochs=2, switch_epoch=1), str(tmp_path), "20260101-000000-0000e0")
    run_experiment(tiny(data_root, epochs=2, switch_epoch=1, hessian_probe=True), str(tmp_path),
                   "20260101-000000-0000e1")
    off = read_metrics(str(tmp_path), "20260101-000000-0000e0")
    on = read_metrics(str(tmp_path), "20260101-000000-0000e1")
    assert "hess_min" not in off.columns and "hess_max" not in off.columns
    assert on[["hess_min", "hess_max"]].notna().all().all()
    assert (on["hess_min"] <= on["hess_max"]).all()
    # The probe is monitoring: it changes neither the training nor the cost charged to the arms.
    pd.testing.assert_frame_equal(off.drop(columns=["seconds"]),
                                  on.drop(columns=["seconds", "hess_min", "hess_max"]))
