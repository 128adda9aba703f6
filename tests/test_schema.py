"""twophase/schema.py: the typed records, events and summaries read back what the engine wrote,
and an older or damaged file reads without an exception."""

import json
import math

from twophase import runs
from twophase.config import RunConfig
from twophase.schema import ArmSummary, Event, EventKind, Record, RunSummary, Status
from twophase.training import run_experiment


def small_run(tmp_path, data_root):
    config = RunConfig(model="mlp", subset=256, val_subset=128, epochs=4, batch_size=128, arms=["adam", "two-phase@2"],
                       data_root=data_root, threads=1)
    return run_experiment(config, runs_dir=str(tmp_path))


def test_a_real_summary_reads_back_whole_and_writes_back_the_same(tmp_path, data_root):
    summary = small_run(tmp_path, data_root)
    on_disk = json.loads((tmp_path / summary["run_id"] / "summary.json").read_text())
    read = RunSummary.from_dict(on_disk)
    assert read.status == Status.COMPLETED
    assert set(read.arms) == {"adam", "two-phase@2"}
    branch = read.arms["two-phase@2"]
    assert branch.switch["switch_epoch"] == 2 and branch.shared_epochs == 2
    assert branch.figures["data_passes"] > read.arms["adam"].figures["data_passes"] > 0
    assert branch.vs_adam and set(branch.vs_adam) >= {"epoch", "data_passes", "seconds"}
    assert read.extra["pid"] == on_disk["pid"] and "config" not in RunSummary.KNOWN
    assert read.to_dict() == on_disk  # nothing is lost on a rewrite


def test_records_and_events_round_trip_through_the_run_folder(tmp_path, data_root):
    summary = small_run(tmp_path, data_root)
    info = runs.load_run(str(tmp_path), summary["run_id"])
    rows = info.metrics.to_dict("records")
    records = [Record.from_row(r) for r in rows]
    assert [r.epoch for r in records if r.arm == "adam"] == [0, 1, 2, 3, 4]
    assert all(r.hess_min is None for r in records)
    assert Record.from_row(records[3].to_row()) == records[3]
    switch = [Event.from_dict(e) for e in info.events if e["kind"] == EventKind.SWITCH]
    assert [(e.arm, e.epoch) for e in switch] == [("two-phase@2", 2)]
    trial = Event(arm="two-phase@trial", kind=EventKind.TRIAL, epoch=5, value=0.1, kept=False)
    assert Event.from_dict(trial.to_dict()) == trial


def test_damaged_or_old_summaries_read_as_defaults_not_exceptions():
    assert RunSummary.from_dict(None).status == "unknown"
    odd = RunSummary.from_dict({"status": "completed", "arms": {"adam": {"epochs": "many", "train_loss": "x"},
                                                                "bad": 3}, "events": "none", "error": 7})
    assert list(odd.arms) == ["adam"] and odd.arms["adam"].epochs == 0
    assert odd.arms["adam"].figures["train_loss"] is None and odd.events == [] and odd.error is None
    old = ArmSummary.from_dict({"status": "completed", "epochs": 40, "phase": "cg", "train_loss": 0.5})
    assert old.switch is None and old.label == "" and old.figures["seconds"] is None
    row = Record.from_row({"arm": "adam", "epoch": "3", "train_loss": "nan"})
    assert row.epoch == 3 and math.isnan(row.train_loss) and math.isnan(row.seconds)
