"""Fault class 2, divergence: an arm whose loss blows up or turns non-finite ends `diverged`
(or, inside a CG line search, the search backs off); the other arms finish; nothing NaN or
infinite is ever written as if it were a result (empty cell in metrics.csv, null in JSON).

Already covered elsewhere: Adam with lr=10 ends diverged while the CG arm finishes
(tests/test_engine.py::test_divergent_arm_ends_diverged_and_other_arm_finishes) and the app
shows it with its curve cut at the divergence epoch and a marker
(tests/test_app_pages.py::test_diverged_arm_is_shown_as_diverged_with_its_curve_up_to_then).
This module adds non-finite losses inside CG line searches and CG steps, the same checks
through the JobManager, and a strict check of the raw files.
"""

from __future__ import annotations

import collections
import csv
import json
import math

import pytest
from streamlit.testing.v1 import AppTest

from twophase import runs
from twophase.training import branch as branch_mod
from twophase.config import RunConfig
from twophase.training.run import run_experiment
from twophase.jobs import JobManager
from twophase.optim import NonlinearCG

from test_app_pages import APP, TIMEOUT, chart, status_of, table_with

NUMERIC = [c for c in runs.METRIC_COLUMNS if c not in runs.STRING_COLUMNS]


def tiny(data_root, **changes) -> RunConfig:
    base = dict(model="mlp", dataset="mnist", data_root=data_root, subset=256, val_subset=256, epochs=3,
                batch_size=64, switch_epoch=1, seed=1, threads=1, arms=["two-phase", "adam", "cg"])
    base.update(changes)
    return RunConfig(**base)


def strict_json(text: str):
    """json.loads that refuses NaN and Infinity (which Python's json would accept)."""
    def no_constants(name):
        raise ValueError(f"non-standard JSON constant {name}")
    return json.loads(text, parse_constant=no_constants)


def assert_files_hold_no_non_finite_numbers(path) -> list[dict]:
    """Every numeric cell of metrics.csv is empty or a finite number; the JSON files are strict JSON.
    Returns the rows of metrics.csv."""
    with open(path / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for column in NUMERIC:
            cell = row[column]
            if cell != "":
                assert math.isfinite(float(cell)), (column, row)
                assert cell.lower() not in ("nan", "inf", "-inf", "infinity"), (column, row)
    strict_json((path / "summary.json").read_text())
    strict_json((path / "config.json").read_text())
    for line in (path / "events.jsonl").read_text().splitlines():
        strict_json(line)
    return rows


@pytest.fixture
def arm_of_optimizer(monkeypatch):
    """Maps id(first parameter) of every arm's model to the arm's name (to tell CG optimizers apart)."""
    names = {}
    real_init = branch_mod.Branch.__init__

    def init(self, model, strategy, *args, **kwargs):
        real_init(self, model, strategy, *args, **kwargs)
        names[id(next(self.model.parameters()))] = strategy.name

    monkeypatch.setattr(branch_mod.Branch, "__init__", init)
    return lambda optimizer: names.get(id(optimizer.param_groups[0]["params"][0]))


def test_nan_loss_inside_cg_line_searches_makes_the_search_back_off(data_root, tmp_path, monkeypatch,
                                                                     arm_of_optimizer):
    # Every second full-batch loss evaluation (start points and line-search trials alike) of
    # the CG arms returns NaN: the searches must treat those points as "too far" and never
    # step onto one; the arms finish with finite figures; Adam is untouched.
    real_closure = branch_mod.make_closure
    calls, poisoned = collections.Counter(), collections.Counter()

    def closure_factory(model, loss_fn, x, y, counter, **kwargs):
        inner = real_closure(model, loss_fn, x, y, counter, **kwargs)
        key = id(next(model.parameters()))

        def closure(backward: bool = True):
            loss = inner(backward=backward)
            calls[key] += 1
            if calls[key] % 2 == 0:
                poisoned[key] += 1
                return loss * math.nan
            return loss

        return closure

    steps = collections.defaultdict(list)
    real_step = NonlinearCG.step

    def step(self, closure):
        out = real_step(self, closure)
        steps[arm_of_optimizer(self)].append(self.last_step)
        return out

    monkeypatch.setattr(branch_mod, "make_closure", closure_factory)
    monkeypatch.setattr(NonlinearCG, "step", step)
    summary = run_experiment(tiny(data_root, epochs=3, full_batch_iters=2), str(tmp_path), "20260101-000000-0000a1")

    assert set(steps) == {"two-phase", "cg"} and len(poisoned) == 2 and all(poisoned.values())
    for arm, infos in steps.items():
        statuses = collections.Counter(i.status for i in infos)
        assert statuses["non_finite"] + sum(i.non_finite_evals for i in infos) > 0, (arm, statuses)
        assert set(statuses) <= {"ok", "restarted", "line_search_failed", "non_finite", "converged"}
        for info in infos:
            if info.step_size > 0:  # an accepted step: never onto a NaN point, never uphill
                assert math.isfinite(info.loss_after) and info.loss_after <= info.loss_before, (arm, info)
    assert summary["status"] == "completed"
    assert {a: s["status"] for a, s in summary["arms"].items()} == dict.fromkeys(["two-phase", "adam", "cg"],
                                                                               "completed")
    rows = assert_files_hold_no_non_finite_numbers(tmp_path / "20260101-000000-0000a1")
    for arm in ("two-phase", "adam", "cg"):
        mine = [r for r in rows if r["arm"] == arm]
        assert [int(r["epoch"]) for r in mine] == [0, 1, 2, 3]
        assert all(r["train_loss"] != "" for r in mine)
        if arm != "adam":  # CG epochs: the full-batch loss never goes up
            losses = [float(r["train_loss"]) for r in mine if r["phase"] == "cg"]
            assert all(b <= a * (1 + 1e-6) for a, b in zip(losses, losses[1:])), (arm, losses)


def test_cg_step_that_leaves_a_non_finite_loss_ends_that_arm_diverged(data_root, tmp_path, monkeypatch,
                                                                      arm_of_optimizer):
    # The CG-only arm's second iteration leaves a parameter NaN (an overflow in the step):
    # its loss is NaN from then on. That arm ends `diverged` at that epoch, with a `diverged`
    # event; two-phase and Adam finish every epoch; the files hold no NaN.
    seen = collections.Counter()
    real_step = NonlinearCG.step

    def step(self, closure):
        out = real_step(self, closure)
        arm = arm_of_optimizer(self)
        seen[arm] += 1
        if arm == "cg" and seen[arm] == 2:
            self.param_groups[0]["params"][0].data.view(-1)[0] = math.nan
        return out

    monkeypatch.setattr(NonlinearCG, "step", step)
    run_id = "20260101-000000-0000a2"
    summary = run_experiment(tiny(data_root, epochs=4), str(tmp_path), run_id)

    assert summary["status"] == "diverged"
    arms = summary["arms"]
    assert arms["cg"]["status"] == "diverged" and arms["cg"]["epochs"] == 2
    assert arms["two-phase"]["status"] == arms["adam"]["status"] == "completed"
    assert arms["two-phase"]["epochs"] == arms["adam"]["epochs"] == 4
    # the summary's figures for the diverged arm are null, never NaN
    assert arms["cg"]["train_loss"] is None and arms["cg"]["val_loss"] is None
    run = runs.load_run(str(tmp_path), run_id)
    assert run.warnings == [] and run.status == "diverged"
    assert [e for e in run.events if e["kind"] == "diverged"] == [
        {"arm": "cg", "kind": "diverged", "epoch": 2, "value": None}]
    rows = assert_files_hold_no_non_finite_numbers(tmp_path / run_id)
    (last,) = [r for r in rows if r["arm"] == "cg" and r["epoch"] == "2"]
    assert last["train_loss"] == "" and last["val_loss"] == ""  # written empty, not "nan"
    assert max(int(r["epoch"]) for r in rows if r["arm"] == "cg") == 2  # nothing after the divergence

    # The app says so: status diverged, the cg arm's row diverged, a marker on the loss chart.
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["run"] = run_id
    monkeypatch.setenv("TWOPHASE_RUNS", str(tmp_path))
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert status_of(at) == "diverged"
    final = table_with(at, "arm", "status")
    assert dict(zip(final["arm"], final["status"])) == {"two-phase": "completed", "adam": "completed",
                                                        "cg": "diverged"}
    marks = [t for t in chart(at, "Loss")["data"] if (t.get("meta") or {}).get("role") == "diverged"]
    assert [m["meta"]["arm"] for m in marks] == ["cg"]


def test_adam_blow_up_through_the_job_manager_writes_no_nan(data_root, tmp_path):
    # The set-up of test_engine's divergence test, run the way the app runs it.
    jobs = JobManager(str(tmp_path))
    cfg = tiny(data_root, arms=["adam", "cg"], lr=10.0, loss="cross-entropy", batch_size=16, switch_epoch=None,
               model_sizes={"depth": 4, "width": 128})
    run_id = jobs.submit(cfg)
    assert jobs.wait(run_id, 120) == "diverged"
    snap = jobs.snapshot(run_id)
    assert snap.error is None
    assert snap.summary["arms"]["adam"]["status"] == "diverged"
    assert snap.summary["arms"]["cg"]["status"] == "completed"
    (event,) = [e for e in snap.events if e["kind"] == "diverged"]
    assert event["arm"] == "adam"
    rows = assert_files_hold_no_non_finite_numbers(tmp_path / run_id)
    adam = [r for r in rows if r["arm"] == "adam"]
    assert int(adam[-1]["epoch"]) == event["epoch"]  # the last row is the divergence epoch
    assert max(int(r["epoch"]) for r in rows if r["arm"] == "cg") == 3
    # its figures are either empty or the blown-up finite values that tripped the 1000x rule
    first = float(adam[0]["train_loss"])
    last = adam[-1]["train_loss"]
    assert last == "" or float(last) > 1000 * first
