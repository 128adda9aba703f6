"""A training process for the app: trains one run and streams it back (python -m twophase.jobs.worker).

The JobManager starts it ahead of time (imports take seconds; a warm worker starts training at
once), then writes the start line on its stdin (twophase/jobs/protocol.py). The run's folder
already exists (the manager created it `queued`, or it is a run to resume from its checkpoint);
the worker takes it over (`RunWriter.attach`)
and trains it with `run_experiment` in its main thread, so training never shares the server's
interpreter lock with the pages that draw it.

After the start line, stdin carries control: `stop` asks the run to stop after the current
mini-batch or CG iteration (it ends `stopped`). End of file on stdin means the server is gone
(closed, crashed or killed): the run stops the same way and ends `interrupted`, with an error
saying so. Either way the folder keeps everything logged.
"""

from __future__ import annotations

import os
import sys
import threading

from twophase.jobs.protocol import STOP, Feed, read_start

SERVER_GONE = "the app's server stopped while this run was training; everything logged until then is kept"


def watch_control(stdin, stop: threading.Event, server_gone: threading.Event) -> None:
    """Read control lines until end of file: `stop` sets `stop`; end of file sets both."""
    for line in stdin:
        if line.strip() == STOP:
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

    start = read_start(line)
    os.environ.update(start["environ"])  # TWOPHASE_* as the server has them now
    runs_dir, run_id = start["runs_dir"], start["run_id"]
    config = RunConfig.from_dict(start["config"])
    stop, server_gone = threading.Event(), threading.Event()
    threading.Thread(target=watch_control, args=(stdin, stop, server_gone), daemon=True,
                     name="twophase-worker-control").start()
    writer = runs.RunWriter.attach(runs_dir, run_id)
    summary = run_experiment(
        config, runs_dir, run_id, writer=writer, should_stop=stop.is_set, for_app=True, resume=start["resume"],
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
