"""Background jobs: runs trained in threads, a bounded number at a time.

The app holds one JobManager per process (in st.cache_resource). Pages call
`submit`, `stop`, `snapshot` and `list`; they never touch a running thread's
objects: `snapshot` returns copies made under a lock. No streamlit here.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass, field

from twophase import store
from twophase.config import RunConfig
from twophase.experiment import FINAL_STATUSES, _now, metric_columns, run_experiment

DEFAULT_MAX_CONCURRENT = 1  # 2 cores: one training at a time; others wait as `queued`


@dataclass
class JobSnapshot:
    """A consistent copy of one job's state, safe to read from any thread."""

    run_id: str
    status: str
    config: dict
    records: list = field(default_factory=list)
    events: list = field(default_factory=list)
    progress: dict = field(default_factory=dict)  # arm -> fraction 0..1
    error: str | None = None
    summary: dict | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINAL_STATUSES


class _Job:
    def __init__(self, run_id: str, config: RunConfig, writer):
        self.run_id = run_id
        self.config = config
        self.writer = writer
        self.status = "queued"
        self.records: list[dict] = []
        self.events: list[dict] = []
        self.progress = {arm: 0.0 for arm in config.arms}
        self.error: str | None = None
        self.summary: dict | None = None
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None


class JobManager:
    """Runs RunConfigs in background threads, at most `max_concurrent` at once.

    runs_dir: where runs are written (default: store.default_runs_dir()).
    On creation, runs on disk left `running` or `queued` by a dead process are
    marked `interrupted`.
    """

    def __init__(self, runs_dir: str | None = None, max_concurrent: int = DEFAULT_MAX_CONCURRENT):
        if not isinstance(max_concurrent, int) or max_concurrent < 1:
            raise ValueError(f"max_concurrent must be a whole number >= 1, got {max_concurrent!r}")
        self.runs_dir = runs_dir or store.default_runs_dir()
        self.max_concurrent = max_concurrent
        self._lock = threading.Lock()
        self._slots = threading.Semaphore(max_concurrent)
        self._jobs: dict[str, _Job] = {}
        store.mark_interrupted(self.runs_dir)

    # ------------------------------------------------------------- actions
    def submit(self, config: RunConfig) -> str:
        """Validate `config`, write the run folder as `queued`, start its thread; return the run id.

        Raises ConfigError for a bad config (nothing is written or started then).
        """
        config.validate()
        config = copy.deepcopy(config)
        run_id = store.new_run_id()
        writer = store.RunWriter(self.runs_dir, run_id, config.to_dict(), columns=metric_columns(config),
                                 status="queued")
        job = _Job(run_id, config, writer)
        with self._lock:
            self._jobs[run_id] = job
        job.thread = threading.Thread(target=self._work, args=(job,), name=f"twophase-{run_id}", daemon=True)
        job.thread.start()
        return run_id

    def stop(self, run_id: str) -> bool:
        """Ask a job to stop; takes effect within one mini-batch or CG iteration.
        A queued job ends `stopped` without training. Returns False if unknown or already finished."""
        job = self._jobs.get(run_id)
        if job is None or job.status in FINAL_STATUSES:
            return False
        job.stop_event.set()
        return True

    def wait(self, run_id: str, timeout: float | None = None) -> str:
        """Block until the job's thread ends (tests, CLI); return its status."""
        job = self._jobs[run_id]
        job.thread.join(timeout)
        return job.status

    def delete(self, run_id: str) -> None:
        """Delete a finished run from disk; refused while it is queued or running."""
        job = self._jobs.get(run_id)
        if job is not None and job.status not in FINAL_STATUSES:
            raise RuntimeError(f"run {run_id} is {job.status}; stop it before deleting it")
        store.delete_run(self.runs_dir, run_id)
        with self._lock:
            self._jobs.pop(run_id, None)

    # ------------------------------------------------------------ reading
    def status(self, run_id: str) -> str | None:
        job = self._jobs.get(run_id)
        return job.status if job is not None else None

    def snapshot(self, run_id: str) -> JobSnapshot | None:
        """A copy of the job's records, events and progress; None for a run this manager does not hold."""
        job = self._jobs.get(run_id)
        if job is None:
            return None
        with self._lock:
            return JobSnapshot(
                run_id=run_id, status=job.status, config=job.config.to_dict(),
                records=[dict(r) for r in job.records], events=[dict(e) for e in job.events],
                progress=dict(job.progress), error=job.error,
                summary=copy.deepcopy(job.summary),
            )

    def list(self) -> list[JobSnapshot]:
        """Jobs held by this manager (newest first), without their records."""
        with self._lock:
            jobs = list(self._jobs.values())
            out = [JobSnapshot(run_id=j.run_id, status=j.status, config=j.config.to_dict(),
                               progress=dict(j.progress), error=j.error) for j in jobs]
        return sorted(out, key=lambda s: s.run_id, reverse=True)

    def active(self) -> list[str]:
        with self._lock:
            return [j.run_id for j in self._jobs.values() if j.status not in FINAL_STATUSES]

    # ------------------------------------------------------------- worker
    def _work(self, job: _Job) -> None:
        with self._slots:
            if job.stop_event.is_set():
                self._set(job, status="stopped")
                job.writer.update_summary(status="stopped", error=None, ended=_now())
                return

            def on_record(record):
                with self._lock:
                    job.records.append(dict(record))

            def on_event(event):
                with self._lock:
                    job.events.append(dict(event))

            def on_progress(arm, fraction):
                job.progress[arm] = min(1.0, max(0.0, fraction))

            def on_status(status):
                self._set(job, status=status)

            try:
                summary = run_experiment(job.config, self.runs_dir, writer=job.writer,
                                         should_stop=job.stop_event.is_set, on_record=on_record,
                                         on_event=on_event, on_progress=on_progress, on_status=on_status)
                self._set(job, status=summary["status"], error=summary.get("error"), summary=summary)
            except Exception as exc:  # never leave a job `running` forever
                self._set(job, status="failed", error=f"{type(exc).__name__}: {exc}")

    def _set(self, job: _Job, **fields) -> None:
        with self._lock:
            for key, value in fields.items():
                setattr(job, key, value)
