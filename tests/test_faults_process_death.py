"""Fault class 4, process death: the server process is killed with SIGKILL in the middle of a run,
and in the middle of a summary.json write. On restart the run is `interrupted`, every epoch
that had completed is in metrics.csv, summary.json is valid JSON, and the app shows the run.

The "server" is a Python process that trains through twophase.jobs.JobManager, exactly as
the app's process does (the app adds only the pages around the same JobManager). The restart
is a new JobManager on the same runs folder (what app.py creates at startup), then the app
itself through AppTest. The first two tests train in the server's thread (mode "thread": the
training dies with the server); the last one trains in a worker process, as the app does by
default, which ends the run `interrupted` itself when its server dies.

Already covered elsewhere: a bare run_experiment process killed mid-run
(tests/test_jobs.py::test_process_killed_mid_run_leaves_an_interrupted_run), a RunWriter
killed while rewriting summary.json in a loop (tests/test_runs.py::test_summary_survives_sigkill_during_writes),
a crash between the temp write and the rename (test_store.py::test_summary_crash_between_temp_write_and_rename),
pid reuse and other hosts (test_store.py::test_mark_interrupted_pid_reuse_and_other_host).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from streamlit.testing.v1 import AppTest

from twophase import runs
from twophase.jobs import JobManager

from conftest import ROOT
from test_app_pages import APP, TIMEOUT, plotly_specs, status_of, table_with

SERVER = """
import json, os, sys, time
from twophase.config import RunConfig
from twophase.jobs import JobManager

runs_dir, data_root, mode, jobs_mode = sys.argv[1:5]
if mode == "summary":  # hang inside the summary.json write of the switch, once its temp file is written
    real_replace = os.replace
    def replace(src, dst):
        if str(dst).endswith("summary.json") and '"switch_epoch": 3' in open(src).read():
            print(json.dumps({"temp_file": str(src)}), flush=True)
            time.sleep(600)
        return real_replace(src, dst)
    os.replace = replace
jobs = JobManager(runs_dir, mode=jobs_mode)
run_id = jobs.submit(RunConfig(model="mlp", data_root=data_root, subset=1024, val_subset=256, epochs=10000,
                               batch_size=32, switch_epoch=3, threads=1))
if mode == "run":
    summary = os.path.join(runs_dir, run_id, "summary.json")
    while len(jobs.snapshot(run_id).records) < 4 * 2 or "arms" not in json.load(open(summary)):
        time.sleep(0.02)  # epochs 0..3 of both arms, and the switch written into summary.json
    print(json.dumps({"run_id": run_id, "records": jobs.snapshot(run_id).records}), flush=True)
time.sleep(600)
"""


def start_server(runs_dir, data_root, mode: str, jobs_mode: str = "thread") -> subprocess.Popen:
    """The server process; jobs_mode "thread" trains in it (so it dies with it), "process" in a worker."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(SERVER), str(runs_dir), data_root, mode, jobs_mode],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=str(ROOT))


def read_line_then_kill(proc: subprocess.Popen) -> dict:
    try:
        line = proc.stdout.readline()
        if not line:
            proc.wait(timeout=10)
            pytest.fail(f"the server process ended early: {proc.stderr.read()}")
        return json.loads(line)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()


def strict_json(text: str):
    def no_constants(name):
        raise ValueError(name)
    return json.loads(text, parse_constant=no_constants)


def test_server_killed_mid_run_leaves_an_interrupted_run_with_every_completed_epoch(runs_dir, data_root,
                                                                                     monkeypatch):
    proc = start_server(runs_dir, data_root, "run")
    seen = read_line_then_kill(proc)
    assert proc.returncode == -signal.SIGKILL
    run_id = seen["run_id"]
    assert [i.status for i in runs.list_runs(runs_dir, raw=True)] == ["running"]  # the dead process could not say otherwise
    assert [i.status for i in runs.list_runs(runs_dir)] == ["interrupted"]  # but a reader sees its process is gone

    JobManager(str(runs_dir))  # the restarted server
    [info] = runs.list_runs(runs_dir)
    assert info.run_id == run_id and info.status == "interrupted"
    assert info.damaged is None or "partial line" in info.damaged  # at worst the row being written
    summary = strict_json((runs_dir / run_id / "summary.json").read_text())
    assert summary["status"] == "interrupted" and str(proc.pid) in summary["interrupted_reason"]
    assert summary["arms"] and all(a["status"] == "interrupted" for a in summary["arms"].values())
    assert summary["ended"]

    # every record the server had reported is in metrics.csv, exactly, and epochs have no gaps
    run = runs.load_run(runs_dir, run_id)
    rows = run.metrics.to_dict("records")
    key = {(r["arm"], int(r["epoch"])): r for r in rows}
    for record in seen["records"]:
        row = key[(record["arm"], record["epoch"])]
        for column in ("phase", "train_loss", "val_acc", "grad_norm", "data_passes", "loss_evals"):
            assert row[column] == record[column], (column, record, row)
    for arm in ("two-phase", "adam"):
        epochs = sorted(e for a, e in key if a == arm)
        assert epochs == list(range(len(epochs))) and len(epochs) >= 4
    assert not [n for n in os.listdir(runs_dir / run_id) if n.endswith(".tmp")]

    # the app, started afresh on that folder, shows it as interrupted with its curves
    monkeypatch.setenv("TWOPHASE_RUNS", str(runs_dir))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["run"] = run_id
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert status_of(at) == "interrupted"
    assert len(plotly_specs(at)) == 4
    assert [b for b in at.button if b.key == "stop"] == []  # nothing to stop: no process owns it
    at.switch_page("pages/runs.py").run()
    assert not at.exception
    assert dict(zip(*[table_with(at, "run", "status")[c] for c in ("run", "status")])) == {run_id: "interrupted"}


def test_server_killed_during_a_summary_write_leaves_the_previous_summary(runs_dir, data_root):
    proc = start_server(runs_dir, data_root, "summary")
    hung = read_line_then_kill(proc)
    temp = hung["temp_file"]
    [info] = runs.list_runs(runs_dir)
    folder = runs_dir / info.run_id
    # killed with the new summary written to its temp file, not yet renamed over summary.json
    assert os.path.exists(temp) and os.path.dirname(temp) == str(folder)
    assert strict_json(open(temp).read())["arms"]["two-phase"]["switch_epoch"] == 3
    old = strict_json((folder / "summary.json").read_text())
    assert old["status"] == "running" and "arms" not in old  # the summary before the switch
    assert info.damaged is None

    JobManager(str(runs_dir))  # the restarted server
    [info] = runs.list_runs(runs_dir)
    assert info.status == "interrupted" and info.damaged is None
    summary = strict_json((folder / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["started"] == old["started"]
    assert not os.path.exists(temp)  # the half-done write is cleaned up with the run
    run = runs.load_run(runs_dir, info.run_id)
    assert run.warnings == [] or all("partial line" in w for w in run.warnings)
    for arm in ("two-phase", "adam"):
        epochs = sorted(run.metrics.loc[run.metrics["arm"] == arm, "epoch"].astype(int))
        assert epochs == list(range(len(epochs)))
    assert run.metrics.loc[run.metrics["arm"] == "two-phase", "epoch"].max() == 3  # killed in its epoch-3 write


def test_server_killed_mid_run_in_process_mode_the_worker_ends_the_run_interrupted_and_exits(runs_dir, data_root):
    from twophase.jobs.worker import SERVER_GONE

    proc = start_server(runs_dir, data_root, "run", jobs_mode="process")
    seen = read_line_then_kill(proc)
    run_id = seen["run_id"]
    deadline = time.time() + 60
    while runs.load_run(runs_dir, run_id).status != "interrupted":  # the worker notices within a mini-batch
        assert time.time() < deadline, "the worker did not end the run after its server died"
        time.sleep(0.1)
    run = runs.load_run(runs_dir, run_id)
    assert run.summary["error"] == SERVER_GONE
    worker_pid = run.summary["pid"]
    assert worker_pid != proc.pid
    while os.path.exists(f"/proc/{worker_pid}") and _state(worker_pid) not in ("Z", None):
        assert time.time() < deadline, "the worker process outlived its run"
        time.sleep(0.1)
    key = {(r["arm"], int(r["epoch"])): r for r in run.metrics.to_dict("records")}
    for record in seen["records"]:
        assert key[(record["arm"], record["epoch"])]["train_loss"] == record["train_loss"]
    JobManager(str(runs_dir))  # a restarted server leaves the worker's own ending alone
    assert runs.load_run(runs_dir, run_id).summary["error"] == SERVER_GONE


def _state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None
