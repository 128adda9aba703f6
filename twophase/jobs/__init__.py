"""Training runs in the background for the app.

    manager.py   JobManager: the queue, one background thread per run, snapshots, get_run()
    protocol.py  the lines a JobManager and a worker process exchange (both ends)
    worker.py    python -m twophase.jobs.worker: trains one run in its own process, streams it back
    launcher.py  starting and ending worker processes and torchrun launches

Workers never import streamlit; pages read snapshots (JobManager.get_run), never a job's objects.
"""

from twophase.jobs.manager import MODES, JobManager, JobSnapshot, RunView

__all__ = ["JobManager", "JobSnapshot", "RunView", "MODES"]
