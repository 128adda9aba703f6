"""What the app's JobManager and a worker process say to each other, both ends.

Server -> worker, on the worker's stdin:

    {"runs_dir": "...", "run_id": "...", "config": {RunConfig fields}, "environ": {TWOPHASE_*},
     "resume": false}                      (true: continue the run from its checkpoint)
    stop                                   (any number of times; the first one counts)

End of file on stdin means the server is gone. Worker -> server, on the worker's stdout, one
JSON object per line, flushed at once:

    {"kind": "status", "status": "running"}
    {"kind": "record", "record": {...}}      one per arm and epoch (also in metrics.csv)
    {"kind": "event", "event": {...}}        peak, switch, trial, diverged (also in events.jsonl)
    {"kind": "progress", "arm": "adam", "fraction": 0.42}   at most every PROGRESS_S per arm
    {"kind": "summary", "summary": {...}}    the last line of a run that ended on its own terms

NaN and infinities travel as Python's json writes them (NaN, Infinity): both ends are Python.
"""

from __future__ import annotations

import json
import math
import threading
import time

__all__ = ["STOP", "PROGRESS_S", "KINDS", "start_line", "read_start", "Feed", "parse"]

STOP = "stop"
PROGRESS_S = 0.2  # the least time between two progress lines of one arm
KINDS = ("status", "record", "event", "progress", "summary")


def start_line(runs_dir: str, run_id: str, config: dict, environ: dict, resume: bool = False) -> str:
    """The line that hands a worker its run (resume: continue it from its checkpoint)."""
    return json.dumps({"runs_dir": str(runs_dir), "run_id": run_id, "config": config, "environ": environ,
                       "resume": bool(resume)})


def read_start(line: str) -> dict:
    """The start line's fields (runs_dir, run_id, config, environ, resume); ValueError when it is not one."""
    start = json.loads(line)
    if not isinstance(start, dict) or not {"runs_dir", "run_id", "config"} <= set(start):
        raise ValueError(f"not a start line: {line[:200]!r}")
    start.setdefault("environ", {})
    start["resume"] = start.get("resume") is True
    return start


def _plain(value):
    """JSON for numpy/torch scalars."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


class Feed:
    """The worker's end: writes its JSON lines to a text stream, one lock so lines never interleave."""

    def __init__(self, stream):
        self.stream = stream
        self.lock = threading.Lock()
        self.last_progress: dict[str, float] = {}

    def send(self, kind: str, **fields) -> None:
        line = json.dumps({"kind": kind, **fields}, default=_plain)
        with self.lock:
            try:
                self.stream.write(line + "\n")
                self.stream.flush()
            except (BrokenPipeError, ValueError, OSError):
                pass  # the server is gone; the run folder still gets everything

    def progress(self, arm: str, fraction: float) -> None:
        now = time.monotonic()
        if fraction < 1.0 and now - self.last_progress.get(arm, -math.inf) < PROGRESS_S:
            return
        self.last_progress[arm] = now
        self.send("progress", arm=arm, fraction=fraction)


def parse(line: str) -> dict | None:
    """The server's end: one worker line as a message dict, or None for a line that is not one
    of the worker's (a library printing to stdout)."""
    try:
        msg = json.loads(line)
    except ValueError:
        return None
    if not isinstance(msg, dict) or msg.get("kind") not in KINDS:
        return None
    return msg
