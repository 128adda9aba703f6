"""Soak test (slow, not in the default suite): 50 short runs back to back through the app's
JobManager (worker processes), some stopped or their worker killed (SIGKILL) at a random moment,
then resumed from their checkpoints; afterwards every run has completed (or was stopped before it
had a checkpoint), no (arm, epoch) row is lost or duplicated, and the server process's memory
(RSS), threads and open files are back at their starting level.

Run it with:  .venv/bin/python -m pytest -m slow tests/test_soak.py
"""

from __future__ import annotations

import gc
import os
import random
import signal
import threading
import time

import pytest

from twophase import runs
from twophase.config import RunConfig
from twophase.jobs import JobManager

RUNS = 50
RSS_SLACK_MB = 64  # allocator noise and caches; a leak of one run's data or model per run would exceed it


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def os_threads() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    raise RuntimeError("no Threads in /proc/self/status")


def settle() -> None:
    gc.collect()
    time.sleep(0.5)
    gc.collect()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def kill_worker(runs_dir: str, run_id: str, rng: random.Random) -> bool:
    """SIGKILL the worker process training `run_id` once it has trained a little (False: it ended first)."""
    deadline = time.time() + 30
    while time.time() < deadline:
        summary = runs.load_run(runs_dir, run_id).summary or {}
        pid = summary.get("pid")
        if summary.get("status") == "running" and isinstance(pid, int) and pid != os.getpid():
            time.sleep(rng.uniform(0.0, 1.5))
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                return False
            return True
        if summary.get("status") in runs.FINAL_STATUSES:
            return False
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_fifty_app_runs_with_random_stops_kills_and_resumes_end_whole_and_leak_nothing(data_root, tmp_path):
    rng = random.Random(20261202)
    jobs = JobManager(str(tmp_path))  # the app's: each run trains in a worker process
    epochs = 6

    def config(seed: int) -> RunConfig:
        return RunConfig(model="mlp", data_root=data_root, subset=512, val_subset=256, epochs=epochs, batch_size=32,
                         switch_epoch=2, seed=seed, threads=1, checkpoint_every=2)

    # warm up: the first run loads the data cache, torch's kernels and thread pools
    assert jobs.wait(jobs.submit(config(0)), 120) == "completed"
    settle()
    rss0, py_threads0, os_threads0, fds0 = rss_mb(), threading.active_count(), os_threads(), open_fds()

    started, actions = [], {"stopped": 0, "killed": 0, "resumed": 0}
    for i in range(1, RUNS + 1):
        run_id = jobs.submit(config(i))
        started.append(run_id)
        roll = rng.random()
        if roll < 0.3:  # stop at a random moment (queued, loading, or training), sometimes twice
            time.sleep(rng.uniform(0.0, 1.5))
            jobs.stop(run_id)
            if rng.random() < 0.5:
                jobs.stop(run_id)
            actions["stopped"] += 1
        elif roll < 0.5 and kill_worker(str(tmp_path), run_id, rng):
            actions["killed"] += 1
        status = jobs.wait(run_id, 120)
        if status in ("stopped", "failed") and runs.checkpoint_info(runs.run_path(tmp_path, run_id)) is not None \
                and rng.random() < 0.5:  # resume some at once; the rest at the end
            jobs.resume(run_id)
            actions["resumed"] += 1
            jobs.wait(run_id, 120)
    for run_id in started:  # resume every run left with a checkpoint, until each has completed
        while runs.checkpoint_info(runs.run_path(tmp_path, run_id)) is not None and jobs.status(run_id) != "completed":
            jobs.resume(run_id)
            actions["resumed"] += 1
            assert jobs.wait(run_id, 120) in ("completed", "stopped", "failed")
    settle()
    rss1, py_threads1, os_threads1, fds1 = rss_mb(), threading.active_count(), os_threads(), open_fds()

    outcomes = {run_id: runs.load_run(str(tmp_path), run_id).status for run_id in started}
    print(f"RSS {rss0:.0f} -> {rss1:.0f} MB; Python threads {py_threads0} -> {py_threads1}; OS threads "
          f"{os_threads0} -> {os_threads1}; open files {fds0} -> {fds1}; actions {actions}; "
          f"outcomes {sorted(outcomes.values())}")
    assert actions["stopped"] and actions["killed"] and actions["resumed"], actions
    # only a run stopped before its first epoch was measured has no checkpoint and stays stopped
    assert set(outcomes.values()) <= {"completed", "stopped"}, outcomes
    assert jobs.active() == []
    assert py_threads1 == py_threads0, (py_threads0, py_threads1)
    assert os_threads1 <= os_threads0, (os_threads0, os_threads1)
    assert fds1 <= fds0, (fds0, fds1)
    assert rss1 - rss0 <= RSS_SLACK_MB, f"RSS grew from {rss0:.0f} MB to {rss1:.0f} MB over {RUNS} runs"
    for info in runs.list_runs(str(tmp_path)):
        assert info.damaged is None and info.status in ("completed", "stopped"), info
        run = runs.load_run(str(tmp_path), info.run_id)
        assert run.warnings == []
        keys = list(zip(run.metrics["arm"], run.metrics["epoch"]))
        assert len(keys) == len(set(keys)), f"run {info.run_id} has a duplicated (arm, epoch) row"
        if info.status == "completed":  # no row lost either: every arm, every epoch
            assert sorted(keys) == sorted((arm, e) for arm in run.config["arms"] for e in range(epochs + 1))
