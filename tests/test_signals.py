"""Ctrl-C and SIGTERM on `python -m twophase run` (a real subprocess, real signals).

- One SIGINT or one SIGTERM: the run stops after the current mini-batch or CG iteration, ends
  `stopped` on disk with every epoch before it, and the command exits 0.
- A second SIGINT aborts at once: still `stopped` on disk (never left `running`), exit code 130,
  no traceback.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from twophase import runs

ROOT = Path(__file__).resolve().parent.parent
RUN_ID = "20260101-000000-5157a1"


def start(tmp_path, data_root, extra=()) -> subprocess.Popen:
    options = {"--subset": "512", "--val-subset": "256", "--epochs": "100000", "--batch-size": "16",
               "--threads": "1"}
    options.update(dict(zip(extra[::2], extra[1::2])))
    cmd = [sys.executable, "-m", "twophase", "run", *[x for kv in options.items() for x in kv], "--data-dir", data_root,
           "--runs-dir", str(tmp_path), "--run-id", RUN_ID, "--quiet"]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_epochs(proc, tmp_path, count: int, timeout: float = 120) -> None:
    metrics = tmp_path / RUN_ID / "metrics.csv"
    deadline = time.time() + timeout
    while not (metrics.exists() and len(metrics.read_text().splitlines()) > count):
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "no epochs were written"
        time.sleep(0.2)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_one_signal_stops_the_run_cleanly(tmp_path, data_root, sig):
    proc = start(tmp_path, data_root)
    try:
        wait_for_epochs(proc, tmp_path, 4)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "stopping after the current mini-batch" in err
    run = runs.load_run(str(tmp_path), RUN_ID)
    assert run.status == "stopped" and run.summary["error"] is None
    # the summary counts the epochs metrics.csv holds (never one more for the epoch cut short)
    for arm, figures in run.summary["arms"].items():
        assert figures["epochs"] == run.metrics[run.metrics["arm"] == arm]["epoch"].max()


def test_a_second_ctrl_c_aborts_at_once_and_still_ends_the_run(tmp_path, data_root):
    # CG on a CNN and 4,096 images: one CG iteration (full-set passes) takes seconds, and the engine
    # polls the stop flag only between iterations, so the second Ctrl-C comes inside one
    proc = start(tmp_path, data_root, ["--arms", "cg", "--model", "vgg5-max-relu", "--subset", "4096"])
    try:
        wait_for_epochs(proc, tmp_path, 1)
        time.sleep(1.0)  # inside the first CG epoch
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "Traceback" not in err, err
    run = runs.load_run(str(tmp_path), RUN_ID)
    assert run.status == "stopped" and "second Ctrl-C" in run.summary["error"]
    assert run.summary["arms"]["cg"]["status"] == "stopped"
