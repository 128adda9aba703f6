"""Run ids and where a run's folder is.

A run id is ``YYYYmmdd-HHMMSS-xxxxxx`` (UTC time plus 6 random lowercase hex digits, see
``RUN_ID_PATTERN``). Every function that takes a run id from outside checks it against the
pattern first, so a value such as ``"../x"`` or ``"/etc"`` can never make this package touch
anything outside the runs directory.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from pathlib import Path

from twophase import settings

#: A run id: UTC date, UTC time, 6 random lowercase hex digits. ``[0-9]`` rather than
#: ``\d`` so that no non-ASCII digit passes; used with ``re.fullmatch``.
RUN_ID_PATTERN: str = r"[0-9]{8}-[0-9]{6}-[0-9a-f]{6}"
RUN_ID_RE = re.compile(RUN_ID_PATTERN)

#: The files of a run folder.
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.csv"
EVENTS_FILE = "events.jsonl"
SUMMARY_FILE = "summary.json"
CHECKPOINT_FILE = "checkpoint.pt"     # the trainer's state after a whole epoch (twophase/training/checkpoint.py)
CHECKPOINT_INFO_FILE = "checkpoint.json"  # what it holds: epoch, rows and events written by then


def default_runs_dir() -> Path:
    """The runs directory to use when none is given.

    The environment variable ``TWOPHASE_RUNS`` when set and not empty, else ``./runs``;
    returned as an absolute path (relative values are taken from the current directory).
    The folder is not created here.
    """
    return settings.runs_dir().expanduser().resolve()


def resolve_runs_dir(runs_dir: str | os.PathLike | None) -> Path:
    """``runs_dir`` as an absolute Path; None means ``default_runs_dir()``."""
    if runs_dir is None:
        return default_runs_dir()
    if not isinstance(runs_dir, (str, os.PathLike)):
        raise TypeError(f"runs_dir must be a path (str or os.PathLike), got {type(runs_dir).__name__}")
    return Path(runs_dir).expanduser().resolve()


def new_run_id() -> str:
    """A fresh run id ``YYYYmmdd-HHMMSS-xxxxxx``: UTC time now plus 6 random hex digits."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


def is_valid_run_id(value: object) -> bool:
    """True when ``value`` is a str matching ``RUN_ID_PATTERN`` in full."""
    return isinstance(value, str) and RUN_ID_RE.fullmatch(value) is not None


def check_run_id(run_id: object) -> str:
    """Return ``run_id`` when it is a valid run id, else raise.

    Raises TypeError when it is not a str and ValueError when it does not match
    ``RUN_ID_PATTERN`` (the message names ``run_id`` and the pattern).
    """
    if not isinstance(run_id, str):
        raise TypeError(f"run_id must be a str like 20260101-120000-0a1b2c, got {type(run_id).__name__}")
    if RUN_ID_RE.fullmatch(run_id) is None:
        raise ValueError(
            f"run_id {run_id!r} is not a valid run id: expected YYYYmmdd-HHMMSS-xxxxxx "
            f"(digits, then 6 lowercase hex digits; regex {RUN_ID_PATTERN})"
        )
    return run_id


def run_path(runs_dir: str | os.PathLike | None, run_id: str) -> Path:
    """The folder of run ``run_id`` under ``runs_dir`` (checked id; may not exist)."""
    root = resolve_runs_dir(runs_dir)
    path = root / check_run_id(run_id)
    # The pattern already forbids separators and dots; this is a second guard.
    if path.parent != root:  # pragma: no cover - unreachable with a valid id
        raise ValueError(f"run_id {run_id!r} would point outside the runs directory {root}")
    return path


