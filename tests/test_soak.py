"""Soak test (slow, not in the default suite): 20 short runs back to back through one JobManager,
some stopped at a random moment; afterwards the process's memory (RSS) and thread count are
back at their starting level, and every run on disk is whole.

Run it with:  .venv/bin/python -m pytest -m slow tests/test_soak.py
"""

from __future__ import annotations

import gc
import random
import threading
import time

import pytest

from twophase import runs
from twophase.config import RunConfig
from twophase.jobs import JobManager

RUNS = 20
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


@pytest.mark.slow
def test_twenty_runs_back_to_back_with_random_stops_leak_neither_memory_nor_threads(data_root, tmp_path):
    rng = random.Random(20260101)
    jobs = JobManager(str(tmp_path))

    def config(seed: int) -> RunConfig:
        return RunConfig(model="mlp", data_root=data_root, subset=512, val_subset=256, epochs=4, batch_size=32,
                         switch_epoch=2, seed=seed, threads=1)

    # warm up: the first run loads the data cache, torch's kernels and thread pools
    assert jobs.wait(jobs.submit(config(0)), 120) == "completed"
    settle()
    rss0, py_threads0, os_threads0 = rss_mb(), threading.active_count(), os_threads()

    outcomes = {}
    for i in range(1, RUNS + 1):
        run_id = jobs.submit(config(i))
        if rng.random() < 0.4:  # stop this one at a random moment (queued, loading, or training)
            time.sleep(rng.uniform(0.0, 1.0))
            jobs.stop(run_id)
            if rng.random() < 0.5:
                jobs.stop(run_id)  # and sometimes press Stop twice
        outcomes[run_id] = jobs.wait(run_id, 120)
    settle()
    rss1, py_threads1, os_threads1 = rss_mb(), threading.active_count(), os_threads()

    print(f"RSS {rss0:.0f} -> {rss1:.0f} MB; Python threads {py_threads0} -> {py_threads1}; "
          f"OS threads {os_threads0} -> {os_threads1}; outcomes {sorted(outcomes.values())}")
    assert set(outcomes.values()) <= {"completed", "stopped"}, outcomes
    assert "completed" in outcomes.values()
    assert jobs.active() == []
    assert py_threads1 == py_threads0, (py_threads0, py_threads1)
    assert os_threads1 <= os_threads0, (os_threads0, os_threads1)
    assert rss1 - rss0 <= RSS_SLACK_MB, f"RSS grew from {rss0:.0f} MB to {rss1:.0f} MB over {RUNS} runs"
    for info in runs.list_runs(str(tmp_path)):
        assert info.damaged is None and info.status in ("completed", "stopped"), info
        run = runs.load_run(str(tmp_path), info.run_id)
        assert run.warnings == []
        if info.status == "completed":
            assert len(run.metrics) == 2 * 5
