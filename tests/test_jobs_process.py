"""Runs trained in worker processes (JobManager mode "process", the app's): the live feed,
Stop, a worker that dies, a server that goes away, the warm worker, and bad settings."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from twophase.jobs import launcher
from twophase import runs
from twophase.config import RunConfig
from twophase.jobs import JobManager
from twophase.jobs.worker import SERVER_GONE

from conftest import ROOT, tiny_settings

TIMEOUT = 180


def config(data_root, **changes) -> RunConfig:
    return RunConfig(**{**tiny_settings(), "data_root": data_root, "threads": 1, **changes})


def wait_for(predicate, timeout=TIMEOUT, what="condition"):
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_a_run_trains_in_a_worker_process_and_streams_what_it_writes(tmp_path, data_root):
    jobs = JobManager(str(tmp_path), mode="process")
    run_id = jobs.submit(config(data_root))
    assert jobs.wait(run_id, TIMEOUT) == "completed"
    snap = jobs.snapshot(run_id)
    run = runs.load_run(str(tmp_path), run_id)
    # every record the page saw is a row of metrics.csv, in order, with the same numbers
    assert len(snap.records) == len(run.metrics) == 2 * 4
    for record, (_, row) in zip(snap.records, run.metrics.iterrows()):
        assert (record["arm"], record["epoch"]) == (row["arm"], row["epoch"])
        assert record["train_loss"] == pytest.approx(row["train_loss"], rel=1e-12)
    assert snap.progress == {"two-phase": 1.0, "adam": 1.0}
    assert snap.summary["status"] == run.summary["status"] == "completed"
    # the worker, not this process, owned the run while it trained
    assert run.summary["pid"] == jobs._jobs[run_id].process.pid != os.getpid()


def test_stop_ends_a_running_worker_run_stopped_and_keeps_its_epochs(tmp_path, data_root):
    jobs = JobManager(str(tmp_path), mode="process")
    run_id = jobs.submit(config(data_root, epochs=5000))
    wait_for(lambda: len(jobs.snapshot(run_id).records) >= 4, what="a few epochs")
    assert jobs.stop(run_id)
    assert jobs.wait(run_id, 60) == "stopped"
    run = runs.load_run(str(tmp_path), run_id)
    assert run.status == "stopped" and run.summary["error"] is None
    assert len(run.metrics) >= 4
    assert jobs.stop(run_id) is False  # already finished


def test_a_killed_worker_ends_the_run_failed_saying_so_and_keeps_what_it_logged(tmp_path, data_root):
    jobs = JobManager(str(tmp_path), mode="process")
    run_id = jobs.submit(config(data_root, epochs=5000))
    wait_for(lambda: len(jobs.snapshot(run_id).records) >= 4, what="a few epochs")
    worker = jobs._jobs[run_id].process
    os.kill(worker.pid, signal.SIGKILL)
    assert jobs.wait(run_id, 60) == "failed"
    snap = jobs.snapshot(run_id)
    assert f"exit code {-signal.SIGKILL}" in snap.error and "without finishing the run" in snap.error
    run = runs.load_run(str(tmp_path), run_id)
    assert run.status == "failed" and "without finishing the run" in run.summary["error"]
    assert len(run.metrics) >= 4  # the epochs logged before the kill


def test_a_worker_whose_server_goes_away_ends_the_run_interrupted(tmp_path, data_root):
    cfg = config(data_root, epochs=5000)
    run_id = runs.new_run_id()
    from twophase.schema import metric_columns

    runs.RunWriter(str(tmp_path), run_id, cfg.to_dict(), columns=metric_columns(cfg.hessian_probe), status="queued")
    worker = launcher.start_worker()
    worker.stdin.write(json.dumps({"runs_dir": str(tmp_path), "run_id": run_id, "config": cfg.to_dict(),
                                   "environ": {}}) + "\n")
    worker.stdin.flush()
    records = 0
    for line in worker.stdout:
        records += json.loads(line)["kind"] == "record"
        if records >= 4:
            break
    worker.stdin.close()  # what the worker sees when the server process dies
    kinds = [json.loads(line)["kind"] for line in worker.stdout]
    assert worker.wait(60) == 0
    assert kinds[-1] == "summary"
    run = runs.load_run(str(tmp_path), run_id)
    assert run.status == "interrupted" and run.summary["error"] == SERVER_GONE
    assert len(run.metrics) >= 4


def test_a_warm_worker_is_started_ahead_and_takes_the_next_run(tmp_path, data_root):
    JobManager(str(tmp_path), mode="process", warm=True)
    spare = launcher.SPARE.proc
    assert spare is not None and spare.poll() is None
    jobs = JobManager(str(tmp_path), mode="process")
    run_id = jobs.submit(config(data_root))
    assert jobs.wait(run_id, TIMEOUT) == "completed"
    assert jobs._jobs[run_id].process.pid == spare.pid  # the waiting worker trained it
    assert runs.load_run(str(tmp_path), run_id).summary["pid"] == spare.pid


def test_stop_of_a_queued_run_in_process_mode_starts_no_worker(tmp_path, data_root):
    jobs = JobManager(str(tmp_path), mode="process", max_concurrent=1)
    first = jobs.submit(config(data_root, epochs=5000))
    second = jobs.submit(config(data_root))
    assert jobs.status(second) == "queued"
    assert jobs.stop(second)
    assert jobs.wait(second, 30) == "stopped"
    assert jobs._jobs[second].process is None
    assert runs.load_run(str(tmp_path), second).status == "stopped"
    jobs.stop(first)
    assert jobs.wait(first, 60) == "stopped"


def test_an_unknown_mode_is_refused_naming_the_allowed_ones(tmp_path):
    with pytest.raises(ValueError, match="mode must be one of process, thread, got 'fork'"):
        JobManager(str(tmp_path), mode="fork")


def test_the_app_names_a_bad_twophase_jobs_value_and_starts_nothing(runs_dir, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("TWOPHASE_JOBS", "fork")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    assert not at.exception
    assert any("TWOPHASE_JOBS" in e.value and "process, thread" in e.value for e in at.error)
    assert "jobs" not in at.session_state


def test_the_worker_module_exits_quietly_when_the_server_closes_before_giving_work():
    proc = subprocess.run([sys.executable, "-m", "twophase.jobs.worker"], input="", capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert proc.returncode == 0 and proc.stdout == "" and "Traceback" not in proc.stderr
