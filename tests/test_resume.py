"""Resume: a stopped, killed or failed run continues from its checkpoint in the same folder.

The rows a resumed run writes equal those of a run never interrupted (bit for bit at one thread,
except the seconds columns); refusals say why, and a refused resume changes nothing on disk.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from twophase import runs
from twophase.config import RunConfig
from twophase.jobs.manager import JobManager
from twophase.training.checkpoint import ResumeError, resume_config
from twophase.training.run import run_experiment

ROOT = Path(__file__).resolve().parent.parent
ARMS = ["adam", "two-phase@3", "adam-lbfgs@4"]


def config(data_root: str, epochs: int = 10, every: int = 4) -> RunConfig:
    return RunConfig(model="mlp", subset=256, val_subset=200, epochs=epochs, batch_size=64, arms=list(ARMS),
                     seed=1, threads=1, checkpoint_every=every, data_root=data_root)


def read(runs_dir, run_id) -> tuple[pd.DataFrame, list[dict]]:
    """metrics.csv without its seconds columns (wall time differs), and the events."""
    run = runs.load_run(runs_dir, run_id)
    metrics = run.metrics.drop(columns=[c for c in run.metrics.columns if "seconds" in c])
    return metrics.reset_index(drop=True), run.events


def stop_at(epoch: int, arm: str = "adam"):
    """A should_stop that turns true once `arm` has written epoch `epoch` (mid-epoch for the others)."""
    seen = {"stop": False}

    def on_record(row):
        if row["arm"] == arm and row["epoch"] >= epoch:
            seen["stop"] = True

    return on_record, lambda: seen["stop"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir):
    """One run of config() trained without interruption."""
    where = tmp_path_factory.mktemp("reference")
    summary = run_experiment(config(str(data_dir)), str(where), "20261202-000000-000000")
    assert summary["status"] == "completed"
    return read(where, "20261202-000000-000000")


def test_a_stopped_run_resumed_writes_the_rows_of_a_run_never_stopped(runs_dir, data_root, reference):
    run_id = "20261202-000001-000001"
    on_record, should_stop = stop_at(6)
    stopped = run_experiment(config(data_root), str(runs_dir), run_id, should_stop=should_stop, on_record=on_record)
    assert stopped["status"] == "stopped"
    folder = runs.run_path(runs_dir, run_id)
    info = json.loads((folder / runs.CHECKPOINT_INFO_FILE).read_text())
    assert 5 <= info["epoch"] <= 6 and (folder / runs.CHECKPOINT_FILE).is_file()  # the last whole epoch, not epoch 4
    written = len(runs.load_run(runs_dir, run_id).metrics)
    assert written > info["rows"]  # the stopped epoch's partial rows, to be rewound

    cfg, checked = resume_config(runs_dir, run_id)
    assert cfg == config(data_root) and checked["epoch"] == info["epoch"]
    resumed = run_experiment(cfg, str(runs_dir), run_id, resume=True)
    assert resumed["status"] == "completed"

    metrics, events = read(runs_dir, run_id)
    pd.testing.assert_frame_equal(metrics, reference[0])
    assert events == reference[1]
    summary = runs.load_run(runs_dir, run_id).summary
    assert summary["resumed"][0]["epoch"] == info["epoch"] and summary["resumed"][0]["was"] == "stopped"
    assert summary["duration_s"] >= stopped["duration_s"] and summary["started"] == stopped["started"]
    assert not (folder / runs.CHECKPOINT_FILE).exists()  # completed: nothing left to resume
    with pytest.raises(ResumeError, match="completed every epoch"):
        resume_config(runs_dir, run_id)


def test_a_killed_cli_run_resumes_from_its_last_written_checkpoint(runs_dir, data_root, reference):
    run_id = "20261202-000002-000002"
    command = [sys.executable, "-m", "twophase", "run", "--model", "mlp", "--subset", "256", "--val-subset", "200",
               "--epochs", "10", "--batch-size", "64", "--arms", ",".join(ARMS), "--seed", "1", "--threads", "1",
               "--checkpoint-every", "4", "--data-dir", data_root, "--runs-dir", str(runs_dir), "--run-id", run_id]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True, start_new_session=True)
    for line in proc.stdout:  # kill -9 once the two-phase arm is past epoch 6
        if "two-phase@3] epoch    7/10" in line:
            os.killpg(proc.pid, signal.SIGKILL)
            break
    proc.wait(60)
    assert proc.returncode == -signal.SIGKILL
    folder = runs.run_path(runs_dir, run_id)
    assert json.loads((folder / runs.CHECKPOINT_INFO_FILE).read_text())["epoch"] == 4  # every 4 epochs

    listed = subprocess.run([sys.executable, "-m", "twophase", "--runs-dir", str(runs_dir), "resume", run_id],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert listed.returncode == 0, listed.stderr
    assert f"run {run_id}: resuming mlp on mnist after epoch 4 of 10" in listed.stdout
    assert "status: completed" in listed.stdout
    metrics, events = read(runs_dir, run_id)
    pd.testing.assert_frame_equal(metrics, reference[0])
    assert events == reference[1]
    summary = runs.load_run(runs_dir, run_id).summary
    assert [r["was"] for r in summary["resumed"]] == ["interrupted"]


def test_resume_refusals_name_the_reason_and_change_nothing(runs_dir, data_root):
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "twophase", "--runs-dir", str(runs_dir), "resume", *args],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)

    missing = cli("20261202-000003-ffffff")
    assert missing.returncode == 2 and "20261202-000003-ffffff" in missing.stderr and "Traceback" not in missing.stderr

    run_id = "20261202-000003-000003"
    on_record, should_stop = stop_at(2)
    run_experiment(config(data_root, epochs=6), str(runs_dir), run_id, should_stop=should_stop, on_record=on_record)
    folder = runs.run_path(runs_dir, run_id)
    before = {name: (folder / name).read_bytes() for name in (runs.METRICS_FILE, runs.EVENTS_FILE, runs.SUMMARY_FILE)}

    (folder / runs.CHECKPOINT_FILE).write_bytes(b"not a checkpoint")  # damaged: refused before anything changes
    damaged = cli(run_id)
    assert damaged.returncode == 2 and "not a readable twophase checkpoint" in damaged.stderr
    assert "Traceback" not in damaged.stderr
    (folder / runs.CHECKPOINT_FILE).unlink()
    gone = cli(run_id)
    assert gone.returncode == 2 and "has no checkpoint" in gone.stderr
    assert {name: (folder / name).read_bytes() for name in before} == before

    two = RunConfig(**{**config(data_root).to_dict(), "processes": 2})
    runs.RunWriter(runs_dir, "20261202-000003-000004", two.to_dict(), columns=["arm", "epoch"],
                   status="queued").update_summary(status="stopped")
    with pytest.raises(ResumeError, match="multi-process runs keep no checkpoint"):
        resume_config(runs_dir, "20261202-000003-000004")


def test_the_app_resumes_a_stopped_run_with_its_records_kept(runs_dir, data_root, reference):
    manager = JobManager(str(runs_dir), mode="process")  # the app's: a worker process trains it
    cfg = config(data_root)
    run_id = manager.submit(cfg)
    while manager.status(run_id) in ("queued", "running") and not any(
            r["epoch"] >= 3 for r in manager.snapshot(run_id).records if r["arm"] == "two-phase@3"):
        time.sleep(0.05)
    manager.stop(run_id)
    assert manager.wait(run_id, 120) == "stopped"
    kept = json.loads((runs.run_path(runs_dir, run_id) / runs.CHECKPOINT_INFO_FILE).read_text())

    assert manager.resume(run_id) == run_id
    with pytest.raises(ResumeError, match="it can be resumed once it has ended"):
        manager.resume(run_id)
    first = manager.snapshot(run_id)
    assert len(first.records) >= kept["rows"]  # starts with the checkpoint's records, not from nothing
    assert manager.wait(run_id, 300) == "completed"
    live = pd.DataFrame(manager.snapshot(run_id).records)
    assert len(live) == len(reference[0]) and list(live["epoch"]) == list(reference[0]["epoch"])
    metrics, events = read(runs_dir, run_id)
    pd.testing.assert_frame_equal(metrics, reference[0])
    assert events == reference[1]


def test_rewind_checks_both_files_before_changing_either(tmp_path):
    writer = runs.RunWriter(tmp_path, "20261202-000004-000004", {}, columns=["arm", "epoch"], status="running")
    for epoch in range(3):
        writer.append({"arm": "adam", "epoch": epoch})
    writer.event({"type": "peak", "epoch": 1})
    metrics = (writer.path / runs.METRICS_FILE).read_bytes()
    with pytest.raises(ValueError, match="fewer than the checkpoint's 2"):
        writer.rewind(2, 2)
    assert (writer.path / runs.METRICS_FILE).read_bytes() == metrics
    assert writer.rewind(2, 0) == []
    assert (writer.path / runs.METRICS_FILE).read_text().splitlines() == ["arm,epoch", "adam,0", "adam,1"]
    assert (writer.path / runs.EVENTS_FILE).read_text() == ""


def test_the_runs_and_train_pages_offer_resume_for_a_stopped_run_and_follow_it(runs_dir, data_root, reference):
    from test_app_pages import new_app, status_of, wait_final

    run_id = "20261202-000005-000005"
    on_record, should_stop = stop_at(3)
    run_experiment(config(data_root), str(runs_dir), run_id, should_stop=should_stop, on_record=on_record)
    epoch = json.loads((runs.run_path(runs_dir, run_id) / runs.CHECKPOINT_INFO_FILE).read_text())["epoch"]

    at = new_app()
    at.query_params["run"] = run_id
    at.run()
    assert status_of(at) == "stopped" and at.button(key="resume") and at.button(key="rerun_settings")
    at.switch_page("pages/runs.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(f"after epoch {epoch} of 10" in c.value for c in at.caption)
    at.button(key="runs_resume").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    at.switch_page("pages/train.py")  # what Open does (AppTest keeps the page it was last given)
    at.query_params["run"] = run_id
    at.run()
    assert status_of(at) in ("queued", "running")
    assert wait_final(at, 300) == "completed"
    assert [b for b in at.button if b.key == "resume"] == []  # completed: nothing to resume
    metrics, events = read(runs_dir, run_id)
    pd.testing.assert_frame_equal(metrics, reference[0])
    assert events == reference[1]


def test_a_zip_of_runs_leaves_the_checkpoint_out_unless_asked(runs_dir, data_root):
    import io
    import zipfile

    run_id = "20261202-000006-000006"
    on_record, should_stop = stop_at(2)
    run_experiment(config(data_root, epochs=6), str(runs_dir), run_id, should_stop=should_stop, on_record=on_record)
    plain = zipfile.ZipFile(io.BytesIO(runs.zip_runs(runs_dir, [run_id]))).namelist()
    assert f"{run_id}/metrics.csv" in plain and f"{run_id}/{runs.CHECKPOINT_FILE}" not in plain
    full = zipfile.ZipFile(io.BytesIO(runs.zip_runs(runs_dir, [run_id], checkpoints=True))).namelist()
    assert {f"{run_id}/{runs.CHECKPOINT_FILE}", f"{run_id}/{runs.CHECKPOINT_INFO_FILE}"} <= set(full)


def test_a_run_whose_process_died_while_the_app_is_up_reads_interrupted_and_offers_resume_and_delete(runs_dir,
                                                                                                     data_root):
    # M7: the app marked dead runs only when it started; a run whose process died later read as
    # running, with Stop disabled and no Delete, so it could not be cleaned up
    from test_app_pages import new_app

    at = new_app()  # the app is up first
    run_id = "20261202-000007-000007"
    on_record, should_stop = stop_at(3)
    run_experiment(config(data_root), str(runs_dir), run_id, should_stop=should_stop, on_record=on_record)
    path = runs.run_path(runs_dir, run_id)
    summary = json.loads((path / runs.SUMMARY_FILE).read_text())  # then its process is killed -9:
    summary.update(status="running", pid=2 ** 22 + 11, pid_start=1, ended=None)  # left "running" by a dead pid
    (path / runs.SUMMARY_FILE).write_text(json.dumps(summary))
    at.switch_page("pages/runs.py").run()
    assert not at.exception, [e.value for e in at.exception]
    at.selectbox(key="runs_selected").set_value(run_id).run()
    assert "interrupted" in at.selectbox(key="runs_selected").format_func(run_id)
    assert [b for b in at.button if b.key == "runs_stop"] == []
    assert at.button(key="runs_resume") and at.button(key="runs_delete")
    at.checkbox(key="runs_confirm_delete").check().run()
    at.button(key="runs_delete").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert not path.exists()
