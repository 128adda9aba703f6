"""Background jobs: runs trained in threads, a bounded number at a time.

The app holds one JobManager per process (in st.cache_resource). Pages call
`submit`, `stop`, `snapshot` and `list`; they never touch a running thread's
objects: `snapshot` returns copies made under a lock. No streamlit here.

A config with processes > 1 is trained by torchrun in a subprocess
(`python -m torch.distributed.run --nproc-per-node=N -m twophase run ...`); its
job thread follows the run folder that the processes' rank 0 writes, and Stop
interrupts the processes (SIGINT, then SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field

from twophase import distributed, store
from twophase.config import RunConfig
from twophase.experiment import FINAL_STATUSES, _now, metric_columns, run_experiment

DEFAULT_MAX_CONCURRENT = 1  # 2 cores: one training at a time; others wait as `queued`
POLL_S = 0.5  # how often a multi-process job re-reads its run folder
LOG_TAIL = 3000  # characters of torchrun's output kept in the error of a failed launch


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
        self.process: subprocess.Popen | None = None  # torchrun, for processes > 1
        self.seen: tuple | None = None  # sizes and times of the run files last read


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
        if config.processes > 1:
            writer = None  # the launched processes' rank 0 creates the run folder
        else:
            writer = store.RunWriter(self.runs_dir, run_id, config.to_dict(), columns=metric_columns(config),
                                     status="queued")
        job = _Job(run_id, config, writer)
        with self._lock:
            self._jobs[run_id] = job
        work = self._work_processes if config.processes > 1 else self._work
        job.thread = threading.Thread(target=work, args=(job,), name=f"twophase-{run_id}", daemon=True)
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
        if self._wait_for_slot(job):
            try:
                self._train(job)
            finally:
                self._slots.release()

    def _wait_for_slot(self, job: _Job) -> bool:
        """Wait for a training slot; a queued job stopped meanwhile ends `stopped` at once (returns False)."""
        while not self._slots.acquire(timeout=0.1):
            if job.stop_event.is_set():
                self._end_queued(job)
                return False
        if job.stop_event.is_set():
            self._slots.release()
            self._end_queued(job)
            return False
        return True

    def _end_queued(self, job: _Job) -> None:
        if job.writer is not None:
            job.writer.update_summary(status="stopped", error=None, ended=_now())
        else:  # a multi-process job's folder is written by its processes, which never started
            self._end_on_disk(job, "stopped", None)
        self._set(job, status="stopped")

    def _train(self, job: _Job) -> None:
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

    def _work_processes(self, job: _Job) -> None:
        """A job with config.processes > 1: launch torchrun, follow its run folder, stop it on request."""
        if not self._wait_for_slot(job):
            return
        try:
            self._launch_and_follow(job)
        except Exception as exc:  # never leave a job `running` forever
            if job.process is not None:
                distributed.terminate(job.process, grace_s=10)
            self._set(job, status="failed", error=f"{type(exc).__name__}: {exc}")
            self._end_on_disk(job, "failed", job.error)
        finally:
            self._slots.release()

    def _launch_and_follow(self, job: _Job) -> None:
        n = job.config.processes
        with tempfile.TemporaryDirectory(prefix=f"twophase-{job.run_id}-") as tmp:
            config_path = os.path.join(tmp, "config.json")
            with open(config_path, "w") as fh:
                json.dump(job.config.to_dict(), fh)
            log_path = os.path.join(tmp, "torchrun.log")
            command = distributed.torchrun_command(n, ["run", "--config", config_path, "--run-id", job.run_id,
                                                       "--runs-dir", str(self.runs_dir), "--quiet"])
            with open(log_path, "wb") as log:
                # own session: a Ctrl-C in the app's terminal does not reach it; Stop does
                job.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                               stdin=subprocess.DEVNULL, start_new_session=True)
            stopper = None
            while job.process.poll() is None:
                self._read_run(job)
                if job.stop_event.is_set() and stopper is None:
                    stopper = threading.Thread(target=distributed.terminate, args=(job.process,), daemon=True)
                    stopper.start()
                time.sleep(POLL_S)
            if stopper is not None:
                stopper.join()
            self._read_run(job)
            if job.summary is not None and job.summary.get("status") in FINAL_STATUSES:
                self._set(job, status=job.summary["status"], error=job.summary.get("error"))
                return
            # The processes ended without writing their end: killed, or failed before training.
            if job.stop_event.is_set():
                status, error = "stopped", None
            else:
                with open(log_path, "rb") as fh:
                    tail = fh.read().decode("utf-8", "replace")[-LOG_TAIL:]
                status = "failed"
                error = (f"the {n} training processes ended (torchrun exit code {job.process.returncode}) "
                         f"without finishing the run; torchrun's last output:\n{tail}")
            self._set(job, status=status, error=error)
            self._end_on_disk(job, status, error)

    def _read_run(self, job: _Job) -> None:
        """Copy what rank 0 wrote (records, events, summary) into the job, if anything changed."""
        path = store.run_path(self.runs_dir, job.run_id)
        try:
            seen = tuple((os.stat(path / name).st_size, os.stat(path / name).st_mtime_ns)
                         for name in (store.METRICS_FILE, store.EVENTS_FILE, store.SUMMARY_FILE))
        except OSError:
            return  # not created yet
        if seen == job.seen:
            return
        try:
            run = store.load_run(self.runs_dir, job.run_id)
        except OSError:
            return  # read again at the next poll
        records = [{k: _plain(v) for k, v in row.items()} for row in run.metrics.to_dict("records")]
        progress = dict(job.progress)
        for record in records:
            if record.get("arm") in progress and isinstance(record.get("epoch"), int):
                progress[record["arm"]] = min(1.0, max(progress[record["arm"]], record["epoch"] / job.config.epochs))
        status = (run.summary or {}).get("status")
        with self._lock:
            job.seen = seen
            job.records, job.events, job.progress = records, [dict(e) for e in run.events], progress
            job.summary = run.summary
            if status in ("queued", "running"):
                job.status = status

    def _end_on_disk(self, job: _Job, status: str, error: str | None) -> None:
        """Record the end of a multi-process job whose processes did not write it."""
        try:
            if store.run_path(self.runs_dir, job.run_id).exists():
                distributed.mark_ended(self.runs_dir, job.run_id, status, error)
            else:
                writer = store.RunWriter(self.runs_dir, job.run_id, job.config.to_dict(),
                                         columns=metric_columns(job.config), status="queued")
                writer.update_summary(status=status, error=error, ended=_now())
            run = store.load_run(self.runs_dir, job.run_id)
            self._set(job, summary=run.summary)
        except Exception:  # disk trouble: the job's own status still says what happened
            pass

    def _set(self, job: _Job, **fields) -> None:
        with self._lock:
            for key, value in fields.items():
                setattr(job, key, value)


def _plain(value):
    """A metrics cell as a plain Python value (numpy scalars unwrapped)."""
    return value.item() if hasattr(value, "item") else value
