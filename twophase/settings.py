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
import statistics
import time
from pathlib import Path

from twophase.errors import TwophaseError

__all__ = ["VARIABLES", "runs_dir", "data_root", "jobs_mode", "dist_timeout", "environment", "JOB_MODES", "busy_cores", "usable_cores", "free_cores",
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


LOADAVG = "/proc/loadavg"  # its fourth field: the tasks runnable at this instant / all tasks
BUSY_LOOKS, BUSY_LOOK_S = 10, 0.003  # a 30-ms look at the run queue


def busy_cores() -> float:
    """The cores other work keeps busy now: the median, over a 30-ms look, of the tasks runnable at
    that instant (/proc/loadavg) less this process's looking thread. Where that file is missing,
    the 1-minute load average, which lags by a minute and counts this process's own recent work
    (a benchmark that had kept one core busy then saw that core as taken)."""
    counts = []
    for look in range(BUSY_LOOKS):
        try:
            with open(LOADAVG) as fh:
                runnable = int(fh.read().split()[3].split("/")[0])
        except (OSError, ValueError, IndexError):
            break
        counts.append(max(0, runnable - 1))
        if look + 1 < BUSY_LOOKS:
            time.sleep(BUSY_LOOK_S)
    if counts:
        return float(statistics.median(counts))
    try:
        return os.getloadavg()[0]
    except OSError:
        return 0.0


def usable_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def free_cores(busy: float | None = None) -> tuple[int, int]:
    """(cores this process may use, of those the ones not busy now: `busy` or busy_cores())."""
    cores = usable_cores()
    busy = busy_cores() if busy is None else busy
    return cores, max(1, min(cores, round(cores - busy)))


def threads_for(threads, for_app: bool = False) -> tuple[int, str]:
    """The torch thread count for a run's `threads` setting, and why. "auto": the free cores now; in
    the app, one fewer on a machine of four cores or less (the page and the browser need one). A
    number is kept (0: torch's default)."""
    if threads != "auto":
        return int(threads), f"{threads} (set)"
    busy = busy_cores()
    cores, free = free_cores(busy)
    chosen = free - 1 if for_app and cores <= 4 and free > 1 else free
    where = "the app, one core left for the page" if for_app and chosen < free else "free cores"
    return max(1, chosen), f"auto: {max(1, chosen)} of {cores} cores ({where}, {busy:g} busy now)"


def environment() -> dict[str, str]:
    """The TWOPHASE_* variables set in this process now (handed to a worker process with its run)."""
    return {k: v for k, v in os.environ.items() if k.startswith("TWOPHASE_")}
