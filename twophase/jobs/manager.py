"""The JobManager: runs queued, trained in the background, a bounded number at a time.

The app holds one JobManager per process (in st.cache_resource). Pages call
`submit`, `stop`, `snapshot` and `list`; they never touch a running job's
objects: `snapshot` returns copies made under a lock. No streamlit here.

Each job has a background thread. How it trains depends on `mode`:

- "process" (the default, and the app's): the job thread hands the run to a
  worker process (`python -m twophase.jobs.worker`) and reads the records, events and
  progress the worker streams back on a pipe. Training then never competes with
  the pages for the server's interpreter lock (building the four charts of one
  redraw takes about 0.2 s of Python). With `warm=True` a worker is started ahead of time, so a
  run starts training at once instead of after the imports (about 3 s here).
  Stop writes `stop` to the worker's stdin; if the server dies, the worker sees
  its stdin close and ends the run `interrupted`.
- "thread": the job thread trains the run itself (tests, scripts, the CLI's wait).

A config with processes > 1 is trained by torchrun in a subprocess
(`python -m torch.distributed.run --nproc-per-node=N -m twophase run ...`); its
job thread follows the run folder that the processes' rank 0 writes, and Stop
interrupts the processes (SIGINT, then SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field

import pandas as pd

from twophase import data as data_mod
from twophase import runs, settings
from twophase.config import RunConfig
from twophase.jobs import launcher, protocol
from twophase.runs.files import now_iso
from twophase.schema import FINAL_STATUSES, metric_columns
from twophase.training.run import run_experiment

log = logging.getLogger(__name__)
DEFAULT_MAX_CONCURRENT = 1  # 2 cores: one training at a time; others wait as `queued`
MODES = settings.JOB_MODES  # where a one-process run trains: a worker process, or the job's thread
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


@dataclass
class RunView:
    """What a page shows of one run: the live job's state when this manager trains it, else the
    run folder's (`JobManager.get_run`). metrics: the records as a DataFrame (columns of
    twophase/schema.py). warnings: damage found in the run's files (read from disk)."""

    run_id: str
    status: str
    config: dict
    metrics: pd.DataFrame
    events: list = field(default_factory=list)
    progress: dict = field(default_factory=dict)
    error: str | None = None
    summary: dict | None = None
    warnings: list = field(default_factory=list)
    live: bool = False  # held by this manager (Stop works)

    @classmethod
    def from_run(cls, run: "runs.Run") -> "RunView":
        """The view of a run folder read from disk (`runs.load_run`): progress from its records."""
        config = run.config or {}
        progress = {}
        epochs = _whole_number(config.get("epochs"))
        if len(run.metrics) and "arm" in run.metrics.columns and epochs:
            for arm, part in run.metrics.groupby("arm"):
                progress[arm] = min(1.0, float(part["epoch"].max()) / epochs)
        return cls(run.run_id, run.status, config, run.metrics, run.events, progress,
                   (run.summary or {}).get("error"), run.summary, run.warnings)

    @property
    def arm_status(self) -> dict:
        arms = (self.summary or {}).get("arms")
        if not isinstance(arms, dict):  # a damaged summary.json: no per-arm status
            return {}
        return {a: v.get("status", "") for a, v in arms.items() if isinstance(v, dict)}


def _whole_number(value) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


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
        self.process: subprocess.Popen | None = None  # the worker process, or torchrun for processes > 1
        self.control_lock = threading.Lock()  # one writer at a time on a worker's stdin
        self.seen: tuple | None = None  # sizes and times of the run files last read
        self.resumed_from: str | None = None  # a resumed run: its status on disk before (stopped ...)
        self.after: "_Job | None" = None  # a group's previous seed: this one waits for it to end


class JobManager:
    """Runs RunConfigs in the background, at most `max_concurrent` at once.

    runs_dir: where runs are written (default: runs.default_runs_dir()).
    mode: "process" (train each run in a worker process, the default) or "thread"
        (train in the job's own thread); see the module docstring.
    warm: keep a worker process started and waiting (mode "process"), so a run
        starts training at once; the app sets it.
    On creation, runs on disk left `running` or `queued` by a dead process are
    marked `interrupted`.
    """

    def __init__(self, runs_dir: str | None = None, max_concurrent: int = DEFAULT_MAX_CONCURRENT,
                 mode: str = "process", warm: bool = False):
        if not isinstance(max_concurrent, int) or max_concurrent < 1:
            raise ValueError(f"max_concurrent must be a whole number >= 1, got {max_concurrent!r}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.runs_dir = runs_dir or runs.default_runs_dir()
        self.max_concurrent = max_concurrent
        self.mode = mode
        self.warm = bool(warm) and mode == "process"
        self._lock = threading.Lock()
        self._slots = threading.Semaphore(max_concurrent)
        self._jobs: dict[str, _Job] = {}
        runs.mark_interrupted(self.runs_dir)
        if self.warm:
            launcher.SPARE.warm()

    # ------------------------------------------------------------- actions
    def submit(self, config: RunConfig) -> str:
        """Validate `config`, write the run folder as `queued`, start its thread; return the run id.
        With config.seeds > 1, one run per seed is queued (seed, seed + 1, ...; they train in turn),
        all with `group` set to the first one's id, which is returned (see `group`).

        Raises ConfigError for a bad config and DatasetUnavailable for a dataset whose files are not
        there (nothing is written or started then).
        """
        config.validate()
        data_mod.require(config.dataset, config.data_root or None)
        run_id = runs.new_run_id()
        if config.seeds > 1:  # one run per seed, queued in turn; the first run's id names the group
            return self._submit_group(config, run_id)
        return self._submit_one(copy.deepcopy(config), run_id)

    def group(self, run_id: str) -> list[str]:
        """The runs of run `run_id`'s several-seed group, on disk or queued here, in seed order
        ([run_id] for a run of one seed; [] when there is no such run)."""
        view = self.get_run(run_id)
        if view is None:
            return []
        group = (view.config or {}).get("group")
        if not isinstance(group, str) or not group:
            return [run_id]
        members = {}
        for info in runs.list_runs(self.runs_dir):
            if isinstance(info.config, dict) and info.config.get("group") == group:
                members[info.run_id] = info.config.get("seed")
        with self._lock:
            for job in self._jobs.values():
                if job.config.group == group:
                    members[job.run_id] = job.config.seed
        return sorted(members, key=lambda r: (members[r] if isinstance(members[r], int) else 0, r))

    def _submit_group(self, config: RunConfig, first_id: str) -> str:
        from twophase.config import seed_configs

        ids = [first_id] + [runs.new_run_id() for _ in range(config.seeds - 1)]
        previous = None
        for member, run_id in zip(seed_configs(copy.deepcopy(config), group=first_id), ids):
            self._submit_one(member, run_id, after=previous)
            previous = self._jobs[run_id]
        return first_id

    def _submit_one(self, config: RunConfig, run_id: str, after: "_Job | None" = None) -> str:
        if config.processes > 1:
            writer = None  # the launched processes' rank 0 creates the run folder
        else:
            writer = runs.RunWriter(self.runs_dir, run_id, config.to_dict(), columns=metric_columns(config.hessian_probe),
                                     status="queued")
        job = _Job(run_id, config, writer)
        job.after = after
        with self._lock:
            self._jobs[run_id] = job
        work = self._work_processes if config.processes > 1 else self._work
        job.thread = threading.Thread(target=work, args=(job,), name=f"twophase-{run_id}", daemon=True)
        job.thread.start()
        return run_id

    def resume(self, run_id: str) -> str:
        """Queue run `run_id` (stopped, interrupted or failed) to continue from its checkpoint; returns
        the run id. The job starts with the records and events kept at the checkpoint; the folder on
        disk is untouched until it trains (then rewound to the checkpoint and written on).

        Raises ResumeError saying why a run cannot be resumed (running here, completed, no
        checkpoint ...) and DatasetUnavailable when its dataset's files are not there."""
        from twophase.training.checkpoint import ResumeError, resume_config

        held = self._jobs.get(run_id)
        if held is not None and held.status not in FINAL_STATUSES:
            raise ResumeError(f"run {run_id} is {held.status} now; it can be resumed once it has ended")
        config, info = resume_config(self.runs_dir, run_id)
        data_mod.require(config.dataset, config.data_root or None)
        run = runs.load_run(self.runs_dir, run_id)
        job = _Job(run_id, config, None)
        job.resumed_from = run.status
        job.records = [{k: _plain(v) for k, v in row.items()}
                       for row in run.metrics.iloc[:info["rows"]].to_dict("records")]
        job.events = [dict(e) for e in run.events[:info["events"]]]
        for record in job.records:
            if record.get("arm") in job.progress and isinstance(record.get("epoch"), int):
                job.progress[record["arm"]] = min(1.0, record["epoch"] / config.epochs)
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
        if self.mode == "process" and job.config.processes == 1:
            self._tell_worker(job, protocol.STOP)
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
        runs.delete_run(self.runs_dir, run_id)
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

    def get_run(self, run_id: str) -> RunView | None:
        """The run's current state: this manager's job when it holds one, else the files on disk
        (None when there is no such run, or its id is not a valid run id)."""
        snap = self.snapshot(run_id)
        if snap is not None:
            return RunView(run_id, snap.status, snap.config, pd.DataFrame(snap.records), snap.events,
                           snap.progress, snap.error, snap.summary, live=True)
        try:
            run = runs.load_run(self.runs_dir, run_id)
        except (FileNotFoundError, ValueError, TypeError):
            return None
        return RunView.from_run(run)

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
                if self.mode == "process":
                    self._train_in_worker(job)
                else:
                    self._train(job)
            finally:
                self._slots.release()

    def _wait_for_slot(self, job: _Job) -> bool:
        """Wait for a training slot; a queued job stopped meanwhile ends `stopped` at once (returns False)."""
        while job.after is not None and job.after.thread is not None and job.after.thread.is_alive():
            if job.stop_event.is_set():  # a group's later seed, stopped before its turn
                self._end_queued(job)
                return False
            job.after.thread.join(0.1)
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
        if job.resumed_from is not None:  # a resume stopped before it began: the folder is as it was
            self._set(job, status=job.resumed_from)
            return
        if job.writer is not None:
            job.writer.update_summary(status="stopped", error=None, ended=now_iso())
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
            summary = run_experiment(job.config, self.runs_dir, job.run_id, writer=job.writer,
                                     resume=job.resumed_from is not None,
                                     should_stop=job.stop_event.is_set, on_record=on_record,
                                     on_event=on_event, on_progress=on_progress, on_status=on_status)
            self._set(job, status=summary["status"], error=summary.get("error"), summary=summary)
        except Exception as exc:  # never leave a job `running` forever
            self._set(job, status="failed", error=f"{type(exc).__name__}: {exc}")

    def _train_in_worker(self, job: _Job) -> None:
        """Hand the run to a worker process and copy what it streams back into the job."""
        proc = None
        try:
            proc = launcher.SPARE.take()
            start = protocol.start_line(self.runs_dir, job.run_id, job.config.to_dict(), settings.environment(),
                                        resume=job.resumed_from is not None)
            self._tell_worker(job, start, hand_over=proc)
            if job.stop_event.is_set():  # a Stop that came while the worker was being handed the run
                self._tell_worker(job, protocol.STOP)
            for line in proc.stdout:
                self._take_message(job, line)
            proc.wait()
        except Exception as exc:  # never leave a job `running` forever
            if proc is not None and proc.poll() is None:
                proc.kill()
            if proc is not None:
                launcher.close_worker(proc)
            self._set(job, status="failed", error=f"{type(exc).__name__}: {exc}")
            self._end_on_disk(job, "failed", job.error)
            return
        finally:
            if self.warm:
                launcher.SPARE.warm()  # the next run starts warm
        if job.summary is not None and job.summary.get("status") in FINAL_STATUSES:
            launcher.close_worker(proc)
            self._set(job, status=job.summary["status"], error=job.summary.get("error"))
            return
        # The worker ended without reporting the run's end: killed, out of memory, a crash.
        proc.log.seek(0)
        tail = proc.log.read().decode("utf-8", "replace")[-LOG_TAIL:].strip()
        launcher.close_worker(proc)
        error = (f"the training process ended (exit code {proc.returncode}) without finishing the run"
                 + (f"; its last output:\n{tail}" if tail else ""))
        self._set(job, status="failed", error=error)
        self._end_on_disk(job, "failed", error)

    def _take_message(self, job: _Job, line: str) -> None:
        msg = protocol.parse(line)
        if msg is None:
            return  # not one of the worker's lines (a library printing to stdout)
        kind = msg["kind"]
        with self._lock:
            if kind == "record":
                job.records.append(dict(msg["record"]))
            elif kind == "event":
                job.events.append(dict(msg["event"]))
            elif kind == "progress":
                job.progress[msg["arm"]] = min(1.0, max(0.0, float(msg["fraction"])))
            elif kind == "status" and msg["status"] not in FINAL_STATUSES:
                job.status = msg["status"]  # the final status comes with the summary
            elif kind == "summary":
                job.summary = msg["summary"]

    def _tell_worker(self, job: _Job, line: str, hand_over: subprocess.Popen | None = None) -> None:
        """Write one line to the job's worker; a worker already gone is not an error (its pipe's
        end then reports it). hand_over: a worker given its start line, which becomes the job's
        only after that line is written, so a Stop can never overtake it."""
        with job.control_lock:
            proc = hand_over or job.process
            if proc is None or proc.stdin is None:
                return
            try:
                proc.stdin.write(line + "\n")
                proc.stdin.flush()
            except (BrokenPipeError, ValueError, OSError):
                pass
            if hand_over is not None:
                job.process = hand_over

    def _work_processes(self, job: _Job) -> None:
        """A job with config.processes > 1: launch torchrun, follow its run folder, stop it on request."""
        if not self._wait_for_slot(job):
            return
        try:
            self._launch_and_follow(job)
        except Exception as exc:  # never leave a job `running` forever
            if job.process is not None:
                launcher.terminate(job.process, grace_s=10)
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
            command = launcher.torchrun_command(n, ["run", "--config", config_path, "--run-id", job.run_id,
                                                       "--runs-dir", str(self.runs_dir), "--quiet"])
            with open(log_path, "wb") as log:
                # own session: a Ctrl-C in the app's terminal does not reach it; Stop does
                job.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                               stdin=subprocess.DEVNULL, start_new_session=True)
            stopper = None
            while job.process.poll() is None:
                self._read_run(job)
                if job.stop_event.is_set() and stopper is None:
                    stopper = threading.Thread(target=launcher.terminate, args=(job.process,), daemon=True)
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
        path = runs.run_path(self.runs_dir, job.run_id)
        try:
            seen = tuple((os.stat(path / name).st_size, os.stat(path / name).st_mtime_ns)
                         for name in (runs.METRICS_FILE, runs.EVENTS_FILE, runs.SUMMARY_FILE))
        except OSError:
            return  # not created yet
        if seen == job.seen:
            return
        try:
            run = runs.load_run(self.runs_dir, job.run_id)
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
            if runs.run_path(self.runs_dir, job.run_id).exists():
                runs.mark_ended(self.runs_dir, job.run_id, status, error)
            else:
                writer = runs.RunWriter(self.runs_dir, job.run_id, job.config.to_dict(),
                                         columns=metric_columns(job.config.hessian_probe), status="queued")
                writer.update_summary(status=status, error=error, ended=now_iso())
            run = runs.load_run(self.runs_dir, job.run_id)
            self._set(job, summary=run.summary)
        except Exception as exc:  # disk trouble: the job's own status still says what happened
            log.warning("run %s: could not record its end (%s) on disk: %s: %s", job.run_id, status,
                        type(exc).__name__, exc)

    def _set(self, job: _Job, **fields) -> None:
        with self._lock:
            for key, value in fields.items():
                setattr(job, key, value)


def _plain(value):
    """A metrics cell as a plain Python value (numpy scalars unwrapped)."""
    return value.item() if hasattr(value, "item") else value
