"""RunWriter: creates a run folder and appends to it while the run trains.

* A new run folder is prepared under a hidden temporary name and renamed into place, so a
  listing never sees a half-created run.
* ``metrics.csv`` rows are written whole with one ``write`` call and then fsynced; a crash can
  at worst leave one partial last line, which the readers drop and report.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import shutil
import sys
import tempfile
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping

from twophase.runs.files import (MAX_EVENTS_BYTES, MAX_METRICS_BYTES, UnreadableFile, atomic_write_bytes,
                                 atomic_write_text, csv_cell, dumps, fsync_dir, now_iso, parse_json, read_bounded,
                                 read_json_object)
from twophase.runs.ids import (CONFIG_FILE, EVENTS_FILE, METRICS_FILE, SUMMARY_FILE, check_run_id,
                               resolve_runs_dir, run_path)
from twophase.runs.owner import hostname, process_start
from twophase.schema import FINAL_STATUSES, METRIC_COLUMNS, STATUSES

# Summary keys that identify the owner of a run; ``write_summary`` keeps them.
RESERVE_FILE = ".reserve"  # disk held for the final summary while a run is open (hidden: readers skip it)
RESERVE_BYTES = 128 * 1024
OWNER_KEYS = ("run_id", "pid", "pid_start", "hostname", "created", "versions")


@lru_cache(maxsize=1)
def package_versions() -> dict[str, str | None]:
    """Versions of python, torch, twophase and numpy (None for a package not installed).

    Read from the installed package metadata, so torch is never imported here.
    """
    from importlib import metadata

    versions: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name in ("torch", "twophase", "numpy"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    if versions["twophase"] is None:
        try:
            from twophase import __version__

            versions["twophase"] = __version__
        except ImportError:  # pragma: no cover - twophase always importable here
            pass
    return versions


def check_status(status: object) -> None:
    if status not in STATUSES:
        raise ValueError(f"status {status!r} is not allowed; allowed: {', '.join(STATUSES)}")


class RunWriter:
    """Writes one run's folder; owned by the process (and thread) that trains it.

    Creating a RunWriter creates ``<runs_dir>/<run_id>/`` with ``config.json``,
    ``summary.json`` (status, owner, times, versions), ``metrics.csv`` (header only) and
    an empty ``events.jsonl``. The folder is built under a hidden temporary name and
    renamed into place, so listings never see it half made.

    All methods are thread-safe (one lock): a training thread may write while another
    thread reads through ``summary`` or the module's readers.

    Args:
        runs_dir: folder holding all runs (created when missing); None means
            ``default_runs_dir()``.
        run_id: id of the new run, usually ``new_run_id()``; must match ``RUN_ID_PATTERN``.
            A run with this id must not exist yet (FileExistsError).
        config: the run's config as a JSON-able dict (``RunConfig.to_dict()``), written
            unchanged to config.json.
        columns: the metrics.csv columns, fixed for the life of the run. Default
            ``METRIC_COLUMNS``; pass ``METRIC_COLUMNS + PROBE_COLUMNS`` for the
            Hessian columns. Must be unique, non-empty str.
        status: initial status, ``"queued"`` or ``"running"`` (default).
        summary: extra fields to put in the first summary.json (optional).

    Raises:
        ValueError / TypeError for bad arguments, FileExistsError when the run exists,
        OSError when the runs directory cannot be written.
    """

    def __init__(
        self,
        runs_dir: str | os.PathLike | None,
        run_id: str,
        config: Mapping[str, Any],
        columns: Iterable[str] | None = None,
        status: str = "running",
        summary: Mapping[str, Any] | None = None,
    ) -> None:
        root = resolve_runs_dir(runs_dir)
        self.run_id = check_run_id(run_id)
        self.path = run_path(root, run_id)
        if not isinstance(config, Mapping):
            raise TypeError(f"config must be a dict, got {type(config).__name__}")
        if status not in ("queued", "running"):
            raise ValueError(f"status {status!r} is not allowed for a new run; allowed: queued, running")
        cols = list(METRIC_COLUMNS if columns is None else columns)
        if not cols:
            raise ValueError("columns must name at least one column")
        for c in cols:
            if not isinstance(c, str) or not c or c != c.strip() or any(ch in c for ch in ",\r\n\"'"):
                raise ValueError(f"columns: {c!r} is not a usable column name (non-empty text, no commas, quotes or line breaks)")
        if len(set(cols)) != len(cols):
            raise ValueError(f"columns: duplicate names in {cols}")
        self.columns: list[str] = cols
        self._column_set = frozenset(cols)
        self._lock = threading.RLock()
        config_text = dumps(dict(config), "config", indent=2) + "\n"

        pid = os.getpid()
        now = now_iso()
        first: dict[str, Any] = {
            "run_id": run_id,
            "status": status,
            "pid": pid,
            "pid_start": process_start(pid),
            "hostname": hostname(),
            "created": now,
            "started": now if status == "running" else None,
            "ended": None,
            "versions": dict(package_versions()),
        }
        if summary is not None:
            if not isinstance(summary, Mapping):
                raise TypeError(f"summary must be a dict, got {type(summary).__name__}")
            first.update(summary)
        check_status(first.get("status"))
        summary_text = dumps(first, "summary", indent=2) + "\n"
        self._summary: dict[str, Any] = json.loads(summary_text)

        root.mkdir(parents=True, exist_ok=True)
        if self.path.exists() or self.path.is_symlink():
            raise FileExistsError(f"run {run_id} already exists in {root}")
        tmp_dir = Path(tempfile.mkdtemp(prefix=f".new-{run_id}-", dir=root))
        try:
            atomic_write_text(tmp_dir / CONFIG_FILE, config_text)
            atomic_write_text(tmp_dir / SUMMARY_FILE, summary_text)
            header = io.StringIO()
            csv.writer(header, lineterminator="\n").writerow(cols)
            self._append_text(tmp_dir / METRICS_FILE, header.getvalue())
            self._append_text(tmp_dir / EVENTS_FILE, "")
            os.chmod(tmp_dir, 0o755)  # mkdtemp makes it 0700
            if self.path.exists():
                raise FileExistsError(f"run {run_id} already exists in {root}")
            os.rename(tmp_dir, self.path)
        except BaseException:
            shutil.rmtree(tmp_dir, ignore_errors=True)
            raise
        fsync_dir(root)
        self._reserve()

    @classmethod
    def attach(cls, runs_dir: str | os.PathLike | None, run_id: str) -> "RunWriter":
        """Take over writing an existing run folder from the process that created it.

        The app creates a run's folder when the run is queued and a worker process
        (twophase/jobs/worker.py) trains it: the worker attaches. The columns come from
        metrics.csv's header, the summary from summary.json; this process becomes the
        owner (pid, pid_start, hostname), so ``mark_interrupted`` follows it.

        Raises FileNotFoundError when the run does not exist, ValueError when its
        metrics.csv header or summary.json cannot be read.
        """
        self = cls.__new__(cls)
        self.run_id = check_run_id(run_id)
        self.path = run_path(resolve_runs_dir(runs_dir), run_id)
        if not self.path.is_dir():
            raise FileNotFoundError(f"run {run_id} does not exist in {self.path.parent}")
        try:  # the header line only; never through a link, a FIFO or a device
            head = read_bounded(self.path / METRICS_FILE, MAX_METRICS_BYTES).split(b"\n", 1)[0]
        except UnreadableFile as exc:
            raise ValueError(f"run {run_id}: metrics.csv cannot be read: {exc}") from None
        cols = next(csv.reader([head.decode("utf-8", "replace")]), [])
        if not cols or len(set(cols)) != len(cols):
            raise ValueError(f"run {run_id}: metrics.csv has no usable header")
        summary, problem = read_json_object(self.path / SUMMARY_FILE)
        if summary is None or problem:
            raise ValueError(f"run {run_id}: summary.json cannot be read ({problem or 'missing'})")
        self.columns = cols
        self._column_set = frozenset(cols)
        self._lock = threading.RLock()
        self._summary = summary
        pid = os.getpid()
        self.update_summary(pid=pid, pid_start=process_start(pid), hostname=hostname())
        self._reserve()
        return self

    # -- a reserve for the last summary on a full disk

    def _reserve(self) -> None:
        """Hold RESERVE_BYTES of disk in the run folder (RESERVE_FILE) while the run is open: when
        the disk fills up, releasing it lets the final summary (`failed`, with the reason) be
        written. Without room for it now, the run goes on without one."""
        try:
            with open(self.path / RESERVE_FILE, "wb") as fh:
                fh.write(bytes(RESERVE_BYTES))
                fh.flush()
                os.fsync(fh.fileno())
        except OSError:
            self._release_reserve()

    def _release_reserve(self) -> bool:
        """Give the reserve back to the disk; True when there was one."""
        try:
            os.unlink(self.path / RESERVE_FILE)
            return True
        except OSError:
            return False

    # -- files

    @staticmethod
    def _append_text(path: Path, text: str) -> None:
        """Append ``text`` at the end of the file, then fsync it.

        When the file does not end with a line break (an earlier write was cut short,
        say by a full disk), that partial tail is cut off first, so it can never merge
        with the new row into a plausible but false one. A write that fails (a full disk)
        is taken back, so the file keeps ending with a whole row.
        """
        data = text.encode("utf-8")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            end = os.lseek(fd, 0, os.SEEK_END)
            if end and os.pread(fd, 1, end - 1) != b"\n":
                keep = os.pread(fd, end, 0).rfind(b"\n") + 1  # 0 when no full line at all
                os.ftruncate(fd, keep)
                end = keep
            written = 0
            try:
                while written < len(data):
                    written += os.pwrite(fd, data[written:], end + written)
                os.fsync(fd)
            except OSError:  # a full disk: take back what part of the row got written (needs no space)
                try:
                    os.ftruncate(fd, end)
                except OSError:
                    pass  # the next append or the reader drops the partial line
                raise
        finally:
            os.close(fd)

    def append(self, record: Mapping[str, Any]) -> None:
        """Append one row to metrics.csv, then flush and fsync it.

        Args:
            record: column name -> value. Keys must be among ``self.columns`` (ValueError
                names the others); missing columns and None are written as empty cells;
                non-finite floats too (so a NaN never looks like a result). Values are
                str, int, float, bool or numpy/torch scalars; floats are written with
                Python's shortest exact repr, so reading them back gives the same float.
        """
        if not isinstance(record, Mapping):
            raise TypeError(f"record must be a dict, got {type(record).__name__}")
        unknown = [k for k in record if k not in self._column_set]
        if unknown:
            raise ValueError(f"record has columns not in metrics.csv: {unknown}; allowed: {self.columns}")
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow([csv_cell(record.get(c)) for c in self.columns])
        with self._lock:
            self._append_text(self.path / METRICS_FILE, buf.getvalue())

    def event(self, event: Mapping[str, Any]) -> None:
        """Append ``event`` (a JSON-able dict; non-finite floats become null) as one line
        of events.jsonl, flushed and fsynced."""
        if not isinstance(event, Mapping):
            raise TypeError(f"event must be a dict, got {type(event).__name__}")
        line = dumps(dict(event), "event") + "\n"
        with self._lock:
            self._append_text(self.path / EVENTS_FILE, line)

    def rewind(self, rows: int, events: int) -> list[dict]:
        """Keep the first `rows` rows of metrics.csv and the first `events` lines of events.jsonl,
        dropping what was written after them (each file rewritten atomically); returns the kept
        events. A resumed run rewinds to its checkpoint, then writes those epochs again.

        Raises ValueError when a file holds fewer whole rows or events than asked to keep."""
        with self._lock:
            kept_lines = {}
            for name, keep, skip, limit in ((METRICS_FILE, rows, 1, MAX_METRICS_BYTES),
                                            (EVENTS_FILE, events, 0, MAX_EVENTS_BYTES)):
                try:  # whole lines (a cut last one is dropped); never through a link, bounded
                    lines = read_bounded(self.path / name, limit).split(b"\n")[:-1]
                except UnreadableFile as exc:
                    raise ValueError(f"run {self.run_id}: {name} cannot be read: {exc}") from None
                if len(lines) < keep + skip:
                    raise ValueError(f"run {self.run_id}: {name} holds {len(lines) - skip} whole lines, "
                                     f"fewer than the checkpoint's {keep}")
                kept_lines[name] = lines[:keep + skip]
            for name, lines in kept_lines.items():  # both files checked first: a refusal changes neither
                atomic_write_bytes(self.path / name, b"".join(line + b"\n" for line in lines))
            kept = []
            for line in kept_lines[EVENTS_FILE]:
                value, problem = parse_json(line.decode("utf-8", "replace"), EVENTS_FILE)
                if problem is None:  # a line the readers also skip otherwise
                    kept.append(value)
            return kept

    @property
    def summary(self) -> dict[str, Any]:
        """A copy of the current summary (what summary.json holds)."""
        with self._lock:
            return json.loads(json.dumps(self._summary))

    @property
    def status(self) -> str:
        """The current status in the summary."""
        with self._lock:
            return self._summary.get("status")

    def write_summary(self, summary: Mapping[str, Any]) -> dict[str, Any]:
        """Replace summary.json atomically (temp file, fsync, rename) and return what was written.

        Args:
            summary: the new summary (JSON-able dict; non-finite floats become null).
                The owner fields (run_id, pid, pid_start, hostname, created, versions)
                are kept from the current summary when ``summary`` lacks them, since
                ``mark_interrupted`` and ``delete_run`` need them. ``status``, when
                given, must be one of ``STATUSES``. Moving to ``running`` sets
                ``started`` and moving to a final status sets ``ended`` (UTC, ISO)
                unless given.
        """
        if not isinstance(summary, Mapping):
            raise TypeError(f"summary must be a dict, got {type(summary).__name__}")
        with self._lock:
            new = dict(summary)
            for key in OWNER_KEYS:
                if key not in new and key in self._summary:
                    new[key] = self._summary[key]
            return self._write(new)

    def update_summary(self, **fields: Any) -> dict[str, Any]:
        """Merge ``fields`` into the current summary and write it atomically.

        Same rules as ``write_summary``; returns the summary written. Example:
        ``w.update_summary(status="completed", arms={...})``.
        """
        with self._lock:
            new = dict(self._summary)
            new.update(fields)
            return self._write(new)

    def _write(self, new: dict[str, Any]) -> dict[str, Any]:
        if "status" in new:
            check_status(new["status"])
            status = new["status"]
            if status == "running" and not new.get("started"):
                new["started"] = now_iso()
            if status in FINAL_STATUSES and not new.get("ended"):
                new["ended"] = now_iso()
        text = dumps(new, "summary", indent=2) + "\n"
        try:
            atomic_write_text(self.path / SUMMARY_FILE, text)
        except OSError as exc:  # a full disk: spend the reserve on this summary, once
            if exc.errno != errno.ENOSPC or not self._release_reserve():
                raise
            atomic_write_text(self.path / SUMMARY_FILE, text)
        if new.get("status") in FINAL_STATUSES:
            self._release_reserve()  # the run is closed: the space goes back
        self._summary = json.loads(text)
        return json.loads(text)

    def __repr__(self) -> str:
        return f"RunWriter({str(self.path)!r})"
