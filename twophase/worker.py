"""A training process for the app: trains one run and streams it back on stdout.

The JobManager starts `python -m twophase.worker` ahead of time (imports take seconds;
a warm worker starts training at once), then writes one JSON line on its stdin:

    {"runs_dir": "...", "run_id": "...", "config": {RunConfig fields}, "environ": {TWOPHASE_*}}

The run's folder already exists (the manager created it `queued`); the worker takes it
over (`RunWriter.attach`) and trains it with `run_experiment` in its main thread, so
training never shares the server's interpreter lock with the pages that draw it.

Everything it learns goes to stdout as one JSON object per line, flushed at once:

    {"kind": "status", "status": "running"}
    {"kind": "record", "record": {...}}      one per arm and epoch (also in metrics.csv)
    {"kind": "event", "event": {...}}        peak, switch, diverged, ... (also in events.jsonl)
    {"kind": "progress", "arm": "adam", "fraction": 0.42}   at most every PROGRESS_S per arm
    {"kind": "summary", "summary": {...}}    the last line of a run that ended on its own terms

After the start line, stdin carries control: a line `stop` asks the run to stop after the
current mini-batch or CG iteration (it ends `stopped`). End of file on stdin means the
server is gone (closed, crashed or killed): the run stops the same way and ends
`interrupted`, with an error saying so. Either way the folder keeps everything logged.
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time

PROGRESS_S = 0.2  # the least time between two progress lines of one arm
SERVER_GONE = "the app's server stopped while this run was training; everything logged until then is kept"


class Feed:
    """Writes the worker's JSON lines to a text stream, one lock so lines never interleave."""

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


def _plain(value):
    """JSON for numpy/torch scalars. (NaN and infinities go out as NaN/Infinity, which
    Python's json reads back: both ends of the pipe are Python.)"""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def watch_control(stdin, stop: threading.Event, server_gone: threading.Event) -> None:
    """Read control lines until end of file: `stop` sets `stop`; end of file sets both."""
    for line in stdin:
        if line.strip() == "stop":
            stop.set()
    server_gone.set()
    stop.set()


def serve(stdin=None, stdout=None) -> int:
    """Wait for one start line, train that run, stream it; returns the exit code."""
    stdin = stdin or sys.stdin
    feed = Feed(stdout or sys.stdout)
    line = stdin.readline()
    if not line.strip():
        return 0  # the server went away before giving work: nothing to do
    from twophase import runs
    from twophase.config import RunConfig
    from twophase.training.run import run_experiment

    start = json.loads(line)
    os.environ.update(start.get("environ") or {})  # TWOPHASE_* as the server has them now
    runs_dir, run_id = start["runs_dir"], start["run_id"]
    config = RunConfig.from_dict(start["config"])
    stop, server_gone = threading.Event(), threading.Event()
    threading.Thread(target=watch_control, args=(stdin, stop, server_gone), daemon=True,
                     name="twophase-worker-control").start()
    writer = runs.RunWriter.attach(runs_dir, run_id)
    summary = run_experiment(
        config, runs_dir, run_id, writer=writer, should_stop=stop.is_set,
        on_record=lambda r: feed.send("record", record=dict(r)),
        on_event=lambda e: feed.send("event", event=dict(e)),
        on_progress=feed.progress,
        on_status=lambda s: feed.send("status", status=s))
    if server_gone.is_set() and summary.get("status") == "stopped":
        writer.update_summary(status="interrupted", error=SERVER_GONE)
        summary = dict(summary, status="interrupted", error=SERVER_GONE)
    feed.send("summary", summary=summary)
    return 0


def main() -> int:
    try:
        import torch  # noqa: F401  (the slow imports, done before the start line arrives)

        import twophase.training.run  # noqa: F401
    except KeyboardInterrupt:
        return 130
    return serve()


if __name__ == "__main__":
    raise SystemExit(main())
