"""JobManager: background runs, the concurrency bound, stop, snapshots, and a killed process."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from twophase import runs
from twophase.config import RunConfig
from twophase.errors import ConfigError
from twophase.jobs import JobManager


def tiny(data_root, **changes):
    base = dict(model="mlp", data_root=data_root, subset=256, val_subset=256, epochs=3, batch_size=64,
                switch_epoch=2, threads=1)
    base.update(changes)
    return RunConfig(**base)


def test_submit_runs_in_background_and_completes(data_root, tmp_path):
    jobs = JobManager(str(tmp_path))
    run_id = jobs.submit(tiny(data_root))
    assert runs.is_valid_run_id(run_id)
    assert jobs.wait(run_id, timeout=120) == "completed"
    snap = jobs.snapshot(run_id)
    assert snap.status == "completed" and snap.finished
    assert len(snap.records) == 2 * 4
    assert snap.progress == {"two-phase": 1.0, "adam": 1.0}
    assert runs.load_run(str(tmp_path), run_id).summary["status"] == "completed"


def test_bad_config_is_refused_and_nothing_is_written(data_root, tmp_path):
    jobs = JobManager(str(tmp_path))
    with pytest.raises(ConfigError) as info:
        jobs.submit(tiny(data_root, tolerance=1.5))
    assert "tolerance" in info.value.errors
    assert runs.list_runs(str(tmp_path)) == []


def test_second_run_queues_until_the_first_ends_and_stopping_a_queued_run(data_root, tmp_path):
    jobs = JobManager(str(tmp_path), max_concurrent=1)
    first = jobs.submit(tiny(data_root, epochs=400, subset=1024, batch_size=16, switch_epoch=None))
    deadline = time.time() + 60  # the first holds the one slot before the others are submitted
    while jobs.status(first) != "running":
        assert time.time() < deadline and jobs.status(first) == "queued", jobs.status(first)
        time.sleep(0.05)
    second = jobs.submit(tiny(data_root))
    third = jobs.submit(tiny(data_root))
    assert jobs.status(second) == "queued" and jobs.status(third) == "queued"
    assert jobs.stop(third)
    assert jobs.stop(first)
    assert jobs.stop(first)  # pressing Stop twice is harmless
    assert jobs.wait(first, 30) == "stopped"
    assert jobs.wait(third, 30) == "stopped"
    assert jobs.wait(second, 120) == "completed"
    assert runs.load_run(str(tmp_path), third).summary["status"] == "stopped"


def test_snapshot_is_a_copy(data_root, tmp_path):
    jobs = JobManager(str(tmp_path))
    run_id = jobs.submit(tiny(data_root))
    jobs.wait(run_id, 120)
    snap = jobs.snapshot(run_id)
    snap.records.clear()
    assert len(jobs.snapshot(run_id).records) == 8


def test_deleting_a_running_run_is_refused(data_root, tmp_path):
    jobs = JobManager(str(tmp_path))
    run_id = jobs.submit(tiny(data_root, epochs=400, subset=1024, batch_size=16, switch_epoch=None))
    with pytest.raises(RuntimeError):
        jobs.delete(run_id)
    jobs.stop(run_id)
    jobs.wait(run_id, 30)
    jobs.delete(run_id)
    assert runs.list_runs(str(tmp_path)) == []


def test_process_killed_mid_run_leaves_an_interrupted_run(data_root, tmp_path):
    script = textwrap.dedent(f"""
        from twophase.config import RunConfig
        from twophase.training.run import run_experiment
        cfg = RunConfig(model="mlp", data_root={data_root!r}, subset=1024, val_subset=256, epochs=10000,
                        batch_size=16, threads=1)
        run_experiment(cfg, {str(tmp_path)!r}, "20260101-000000-00dead")
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            path = tmp_path / "20260101-000000-00dead" / "metrics.csv"
            if path.exists() and len(path.read_text().splitlines()) >= 6:  # header + 5 records
                break
            time.sleep(0.1)
        else:
            pytest.fail("the subprocess never wrote its first epochs")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    JobManager(str(tmp_path))  # a restarted server marks dead runs at startup
    [info] = runs.list_runs(str(tmp_path))
    assert info.status == "interrupted"
    run = runs.load_run(str(tmp_path), "20260101-000000-00dead")
    assert len(run.metrics) >= 5
    assert run.metrics["epoch"].max() >= 2
    json.loads((tmp_path / "20260101-000000-00dead" / "summary.json").read_text())
