"""Every TWOPHASE_* environment variable: the one place they are read, with their defaults.

    TWOPHASE_RUNS          the runs folder                                   default ./runs
    TWOPHASE_DATA          the datasets folder (torchvision's layout)        default ./data
    TWOPHASE_JOBS          where the app trains a run: "process" (a worker   default process
                           process per run) or "thread" (the server's own
                           threads, for debugging)
    TWOPHASE_DIST_TIMEOUT  seconds a collective of a multi-process run may   default 600
                           wait for a dead peer before the run fails

Each function reads its variable when called (a test, or the app's job manager handing a run to
a worker process, may set it after import) and raises TwophaseError naming the variable and what
it allows when the value is unusable. `environment()` is what a worker process is given.
"""

from __future__ import annotations

import os
from pathlib import Path

from twophase.errors import TwophaseError

__all__ = ["VARIABLES", "runs_dir", "data_root", "jobs_mode", "dist_timeout", "environment", "JOB_MODES", "free_cores",
           "threads_for"]

JOB_MODES = ("process", "thread")
VARIABLES = {
    "TWOPHASE_RUNS": ("./runs", "the runs folder"),
    "TWOPHASE_DATA": ("./data", "the datasets folder (torchvision's layout; MNIST is copied there on first use)"),
    "TWOPHASE_JOBS": ("process", "where the app trains a run: process (a worker process per run) or thread"),
    "TWOPHASE_DIST_TIMEOUT": ("600", "seconds a collective of a multi-process run waits for a dead peer"),
}


def _get(name: str) -> str:
    return os.environ.get(name, "").strip()


def runs_dir() -> Path:
    """$TWOPHASE_RUNS when set and not empty, else ./runs."""
    return Path(_get("TWOPHASE_RUNS") or VARIABLES["TWOPHASE_RUNS"][0])


def data_root() -> str:
    """$TWOPHASE_DATA when set and not empty, else ./data."""
    return _get("TWOPHASE_DATA") or VARIABLES["TWOPHASE_DATA"][0]


def jobs_mode() -> str:
    """$TWOPHASE_JOBS: "process" (unset) or "thread"."""
    value = _get("TWOPHASE_JOBS") or VARIABLES["TWOPHASE_JOBS"][0]
    if value not in JOB_MODES:
        raise TwophaseError(f"TWOPHASE_JOBS is {value!r}; allowed values: {', '.join(JOB_MODES)} "
                            "(unset means process)")
    return value


def dist_timeout() -> float:
    """$TWOPHASE_DIST_TIMEOUT in seconds (a positive number; 600 when unset)."""
    text = _get("TWOPHASE_DIST_TIMEOUT")
    if not text:
        return float(VARIABLES["TWOPHASE_DIST_TIMEOUT"][0])
    try:
        value = float(text)
    except ValueError:
        raise TwophaseError(f"TWOPHASE_DIST_TIMEOUT={text!r} is not a number of seconds") from None
    if not value > 0 or value != value or value == float("inf"):
        raise TwophaseError(f"TWOPHASE_DIST_TIMEOUT must be a positive number of seconds, got {text!r}")
    return value


def free_cores() -> tuple[int, int]:
    """(cores this process may use, of those the ones not busy now by the 1-minute load average)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    return cores, max(1, min(cores, round(cores - load)))


def threads_for(threads, for_app: bool = False) -> tuple[int, str]:
    """The torch thread count for a run's `threads` setting, and why. "auto": the free cores now; in
    the app, one fewer on a machine of four cores or less (the page and the browser need one). A
    number is kept (0: torch's default)."""
    if threads != "auto":
        return int(threads), f"{threads} (set)"
    cores, free = free_cores()
    chosen = free - 1 if for_app and cores <= 4 and free > 1 else free
    where = "the app, one core left for the page" if for_app and chosen < free else "free cores"
    return max(1, chosen), f"auto: {max(1, chosen)} of {cores} cores ({where}, load {cores - free:g} busy)"


def environment() -> dict[str, str]:
    """The TWOPHASE_* variables set in this process now (handed to a worker process with its run)."""
    return {k: v for k, v in os.environ.items() if k.startswith("TWOPHASE_")}
