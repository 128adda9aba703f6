"""Runs on disk: one folder per run, written by RunWriter and read back by load_run / list_runs.

Every run lives in its own folder ``<runs_dir>/<run_id>/``::

    config.json    the validated config, exactly as ``RunConfig.to_dict()`` gave it
    metrics.csv    one row per arm per epoch, appended, flushed and fsynced row by row
    events.jsonl   one JSON object per line (peak, switch, diverged, ...), appended
    summary.json   status, owner process, times, package versions and whatever the
                   engine adds (per-arm final figures, switch info); written atomically

Rules this module keeps:

* A run id is ``YYYYmmdd-HHMMSS-xxxxxx`` (UTC time plus 6 random lowercase hex digits,
  see ``RUN_ID_PATTERN``). Every function that takes a run id from outside checks it
  against the pattern first, so a value such as ``"../x"`` or ``"/etc"`` can never make
  this module touch anything outside the runs directory.
* A new run folder is prepared under a hidden temporary name and renamed into place, so
  a listing never sees a half-created run.
* ``summary.json`` and ``config.json`` are written atomically (temp file in the same
  folder, fsync, ``os.replace``): after a crash at any moment the file holds either the
  old or the new content, both valid JSON.
* ``metrics.csv`` rows are written whole with one ``write`` call and then fsynced; a
  crash can at worst leave one partial last line, which the readers drop and report.
* Non-finite floats (NaN, +inf, -inf) are written as an EMPTY cell in metrics.csv and as
  JSON ``null`` in the JSON files, so nothing NaN ever looks like a result and every file
  is strict JSON / plain CSV. A diverged arm is told by its status and its ``diverged``
  event, not by a NaN in the table.
* Reading never raises on damaged content: ``list_runs`` reports damage in
  ``RunInfo.damaged`` and ``load_run`` in ``Run.warnings``.

Pure stdlib plus pandas (imported lazily, only by the readers) and pyarrow for parquet
export. Never imports streamlit or torch.
"""

from __future__ import annotations

import csv
import io
import json
import math
import numbers
import os
import re
import secrets
import shutil
import socket
import sys
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from twophase.schema import (ACTIVE_STATUSES, FINAL_STATUSES, KEY_COLUMNS, METRIC_COLUMNS, PROBE_COLUMNS,
                             STATUSES, STRING_COLUMNS)

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "METRIC_COLUMNS",
    "OPTIONAL_COLUMNS",
    "STRING_COLUMNS",
    "STATUSES",
    "ACTIVE_STATUSES",
    "FINAL_STATUSES",
    "RUN_ID_PATTERN",
    "EXPORT_FORMATS",
    "default_runs_dir",
    "new_run_id",
    "is_valid_run_id",
    "check_run_id",
    "run_path",
    "package_versions",
    "owner_alive",
    "RunWriter",
    "RunInfo",
    "Run",
    "list_runs",
    "load_run",
    "mark_interrupted",
    "delete_run",
    "clean_leftovers",
    "export_bytes",
    "export_run",
    "zip_runs",
]

# --------------------------------------------------------------------------- constants

# Column names and statuses live in twophase/schema.py (the one place for them).
OPTIONAL_COLUMNS: list[str] = PROBE_COLUMNS
_KEY_COLUMNS: tuple[str, ...] = KEY_COLUMNS

#: A run id: UTC date, UTC time, 6 random lowercase hex digits. ``[0-9]`` rather than
#: ``\d`` so that no non-ASCII digit passes; used with ``re.fullmatch``.
RUN_ID_PATTERN: str = r"[0-9]{8}-[0-9]{6}-[0-9a-f]{6}"
_RUN_ID_RE = re.compile(RUN_ID_PATTERN)

#: Formats of ``export_run`` / ``export_bytes``.
EXPORT_FORMATS: tuple[str, ...] = ("csv", "parquet", "json")

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.csv"
EVENTS_FILE = "events.jsonl"
SUMMARY_FILE = "summary.json"

# Summary keys that identify the owner of a run; ``write_summary`` keeps them.
_OWNER_KEYS = ("run_id", "pid", "pid_start", "hostname", "created", "versions")


# --------------------------------------------------------------------------- small helpers


def default_runs_dir() -> Path:
    """The runs directory to use when none is given.

    The environment variable ``TWOPHASE_RUNS`` when set and not empty, else ``./runs``;
    returned as an absolute path (relative values are taken from the current directory).
    The folder is not created here.
    """
    value = os.environ.get("TWOPHASE_RUNS", "").strip()
    return Path(value or "runs").expanduser().resolve()


def _runs_dir(runs_dir: str | os.PathLike | None) -> Path:
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
    return isinstance(value, str) and _RUN_ID_RE.fullmatch(value) is not None


def check_run_id(run_id: object) -> str:
    """Return ``run_id`` when it is a valid run id, else raise.

    Raises TypeError when it is not a str and ValueError when it does not match
    ``RUN_ID_PATTERN`` (the message names ``run_id`` and the pattern).
    """
    if not isinstance(run_id, str):
        raise TypeError(f"run_id must be a str like 20260101-120000-0a1b2c, got {type(run_id).__name__}")
    if _RUN_ID_RE.fullmatch(run_id) is None:
        raise ValueError(
            f"run_id {run_id!r} is not a valid run id: expected YYYYmmdd-HHMMSS-xxxxxx "
            f"(digits, then 6 lowercase hex digits; regex {RUN_ID_PATTERN})"
        )
    return run_id


def run_path(runs_dir: str | os.PathLike | None, run_id: str) -> Path:
    """The folder of run ``run_id`` under ``runs_dir`` (checked id; may not exist)."""
    root = _runs_dir(runs_dir)
    path = root / check_run_id(run_id)
    # The pattern already forbids separators and dots; this is a second guard.
    if path.parent != root:  # pragma: no cover - unreachable with a valid id
        raise ValueError(f"run_id {run_id!r} would point outside the runs directory {root}")
    return path


def _now_iso() -> str:
    """Current UTC time, ISO 8601 with microseconds and ``+00:00``."""
    return datetime.now(timezone.utc).isoformat()


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
        except Exception:  # pragma: no cover - twophase always importable here
            pass
    return versions


def _jsonable(value: Any, where: str) -> Any:
    """A copy of ``value`` that ``json.dumps(allow_nan=False)`` accepts.

    Non-finite floats become None; tuples and sets become lists; numpy/torch scalars
    become Python numbers; paths become str. ``where`` names the value in the error
    raised (TypeError) for anything else.
    """
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        f = float(value)
        return f if math.isfinite(f) else None
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{where}: keys must be str, got {k!r} ({type(k).__name__})")
            out[k] = _jsonable(v, f"{where}.{k}")
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(items)]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    item = getattr(value, "item", None)  # numpy / torch scalars
    if callable(item) and getattr(value, "ndim", 1) == 0:
        return _jsonable(item(), where)
    raise TypeError(f"{where}: cannot store {type(value).__name__} {value!r} as JSON")


def _dumps(value: Any, where: str, indent: int | None = None) -> str:
    return json.dumps(_jsonable(value, where), allow_nan=False, indent=indent, ensure_ascii=False)


def _fsync_dir(path: Path) -> None:
    """fsync a directory so a rename in it survives a power cut (best effort)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temp file in the same folder, fsync, replace.

    A crash at any moment leaves ``path`` with either its old or its new content. The
    temp file is named ``.<name>.<random>.tmp`` and removed when the write fails.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)


def _atomic_write_text(path: Path, text: str) -> None:
    """`_atomic_write_bytes` for UTF-8 text (newlines kept as written)."""
    _atomic_write_bytes(path, text.encode("utf-8"))


def _cell(value: Any) -> str:
    """One metrics.csv cell: empty for None and non-finite floats, shortest repr for floats."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        f = float(value)
        return repr(f) if math.isfinite(f) else ""
    item = getattr(value, "item", None)  # numpy / torch scalars
    if callable(item) and getattr(value, "ndim", 1) == 0:
        return _cell(item())
    raise TypeError(f"metrics value {value!r} of type {type(value).__name__} is not a number or a str")


# --------------------------------------------------------------------------- owner processes


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks since boot) from /proc/<pid>/stat, or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode("ascii", "replace")
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may itself hold spaces and ')'.
    rest = data[data.rfind(")") + 2 :].split()
    try:
        return rest[0], int(rest[19])  # field 3 is state, field 22 is starttime
    except (IndexError, ValueError):
        return None


def _process_start(pid: int) -> int | None:
    """Start time of process ``pid`` in clock ticks since boot (None where unknown)."""
    stat = _proc_stat(pid)
    return None if stat is None else stat[1]


def _hostname() -> str:
    return socket.gethostname()


def _pid_alive(pid: int, recorded_start: int | None) -> bool:
    """True when process ``pid`` runs and (where known) started at ``recorded_start``."""
    if pid <= 0:
        return False
    if os.name != "posix":  # pragma: no cover - os.kill(pid, 0) would kill on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    except OSError:  # pragma: no cover
        return False
    stat = _proc_stat(pid)
    if stat is None:  # no /proc: trust os.kill
        return True
    state, start = stat
    if state in ("Z", "X"):  # zombie or dead: it no longer runs
        return False
    if recorded_start is not None and start != recorded_start:
        return False  # the pid was reused by another process
    return True


def owner_alive(summary: Mapping[str, Any] | None) -> bool:
    """Whether the process that owns a run (per its summary) is still running.

    The summary names the owner by ``pid``, ``pid_start`` (its start time from
    /proc/<pid>/stat, which guards against a reused pid) and ``hostname``. A summary
    without a usable pid, or written on another host, counts as not alive: a runs
    directory is meant for one machine, and a container that was recreated gets a new
    host name while its old processes are certainly gone.
    """
    if not isinstance(summary, Mapping):
        return False
    pid = summary.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool):
        return False
    host = summary.get("hostname")
    if host is not None and host != _hostname():
        return False
    start = summary.get("pid_start")
    return _pid_alive(pid, start if isinstance(start, int) and not isinstance(start, bool) else None)


# --------------------------------------------------------------------------- writer


def _check_status(status: object) -> None:
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
            ``METRIC_COLUMNS``; pass ``METRIC_COLUMNS + OPTIONAL_COLUMNS`` for the
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
        root = _runs_dir(runs_dir)
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
        config_text = _dumps(dict(config), "config", indent=2) + "\n"

        pid = os.getpid()
        now = _now_iso()
        first: dict[str, Any] = {
            "run_id": run_id,
            "status": status,
            "pid": pid,
            "pid_start": _process_start(pid),
            "hostname": _hostname(),
            "created": now,
            "started": now if status == "running" else None,
            "ended": None,
            "versions": dict(package_versions()),
        }
        if summary is not None:
            if not isinstance(summary, Mapping):
                raise TypeError(f"summary must be a dict, got {type(summary).__name__}")
            first.update(summary)
        _check_status(first.get("status"))
        summary_text = _dumps(first, "summary", indent=2) + "\n"
        self._summary: dict[str, Any] = json.loads(summary_text)

        root.mkdir(parents=True, exist_ok=True)
        if self.path.exists() or self.path.is_symlink():
            raise FileExistsError(f"run {run_id} already exists in {root}")
        tmp_dir = Path(tempfile.mkdtemp(prefix=f".new-{run_id}-", dir=root))
        try:
            _atomic_write_text(tmp_dir / CONFIG_FILE, config_text)
            _atomic_write_text(tmp_dir / SUMMARY_FILE, summary_text)
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
        _fsync_dir(root)

    @classmethod
    def attach(cls, runs_dir: str | os.PathLike | None, run_id: str) -> "RunWriter":
        """Take over writing an existing run folder from the process that created it.

        The app creates a run's folder when the run is queued and a worker process
        (twophase.worker) trains it: the worker attaches. The columns come from
        metrics.csv's header, the summary from summary.json; this process becomes the
        owner (pid, pid_start, hostname), so ``mark_interrupted`` follows it.

        Raises FileNotFoundError when the run does not exist, ValueError when its
        metrics.csv header or summary.json cannot be read.
        """
        self = cls.__new__(cls)
        self.run_id = check_run_id(run_id)
        self.path = run_path(_runs_dir(runs_dir), run_id)
        if not self.path.is_dir():
            raise FileNotFoundError(f"run {run_id} does not exist in {self.path.parent}")
        with open(self.path / METRICS_FILE, newline="", encoding="utf-8") as fh:
            cols = next(csv.reader(fh), [])
        if not cols or len(set(cols)) != len(cols):
            raise ValueError(f"run {run_id}: metrics.csv has no usable header")
        summary, problem = _read_json_object(self.path / SUMMARY_FILE)
        if summary is None or problem:
            raise ValueError(f"run {run_id}: summary.json cannot be read ({problem or 'missing'})")
        self.columns = cols
        self._column_set = frozenset(cols)
        self._lock = threading.RLock()
        self._summary = summary
        pid = os.getpid()
        self.update_summary(pid=pid, pid_start=_process_start(pid), hostname=_hostname())
        return self

    # -- files

    @staticmethod
    def _append_text(path: Path, text: str) -> None:
        """Append ``text`` with one write call, then flush and fsync.

        When the file does not end with a line break (an earlier write was cut short,
        say by a full disk), that partial tail is cut off first, so it can never merge
        with the new row into a plausible but false one.
        """
        data = text.encode("utf-8")
        with open(path, "a+b") as f:
            end = f.seek(0, os.SEEK_END)
            if end:
                f.seek(end - 1)
                if f.read(1) != b"\n":
                    f.seek(0)
                    keep = f.read().rfind(b"\n") + 1  # 0 when no full line at all
                    f.truncate(keep)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

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
        csv.writer(buf, lineterminator="\n").writerow([_cell(record.get(c)) for c in self.columns])
        with self._lock:
            self._append_text(self.path / METRICS_FILE, buf.getvalue())

    def event(self, event: Mapping[str, Any]) -> None:
        """Append ``event`` (a JSON-able dict; non-finite floats become null) as one line
        of events.jsonl, flushed and fsynced."""
        if not isinstance(event, Mapping):
            raise TypeError(f"event must be a dict, got {type(event).__name__}")
        line = _dumps(dict(event), "event") + "\n"
        with self._lock:
            self._append_text(self.path / EVENTS_FILE, line)

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
            for key in _OWNER_KEYS:
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
            _check_status(new["status"])
            status = new["status"]
            if status == "running" and not new.get("started"):
                new["started"] = _now_iso()
            if status in FINAL_STATUSES and not new.get("ended"):
                new["ended"] = _now_iso()
        text = _dumps(new, "summary", indent=2) + "\n"
        _atomic_write_text(self.path / SUMMARY_FILE, text)
        self._summary = json.loads(text)
        return json.loads(text)

    def __repr__(self) -> str:
        return f"RunWriter({str(self.path)!r})"


# --------------------------------------------------------------------------- readers


@dataclass
class RunInfo:
    """One entry of ``list_runs``.

    Attributes:
        run_id: the run's id (folder name).
        status: the summary's status, or ``"damaged"`` when summary.json is unreadable.
        config: config.json as a dict, or None when missing/unreadable.
        summary: summary.json as a dict, or None when missing/unreadable.
        damaged: None when all is well, else a sentence saying what is wrong.
        path: the run's folder.
    """

    run_id: str
    status: str
    config: dict | None
    summary: dict | None
    damaged: str | None
    path: Path


@dataclass
class Run:
    """A run read back by ``load_run``.

    Attributes:
        run_id: the run's id.
        config: config.json as a dict (None when missing or unreadable; see warnings).
        metrics: metrics.csv as a DataFrame; ``arm`` and ``phase`` are text, every other
            column numeric (empty cells are NaN, ints stay ints where no cell is empty).
        events: events.jsonl as a list of dicts.
        summary: summary.json as a dict (None when missing or unreadable).
        warnings: what was wrong and skipped (a cut-off last line, bad JSON...); empty
            for a healthy run.
        path: the run's folder.
    """

    run_id: str
    config: dict | None
    metrics: "pd.DataFrame"
    events: list[dict]
    summary: dict | None
    warnings: list[str] = field(default_factory=list)
    path: Path | None = None

    @property
    def status(self) -> str:
        """The summary's status, or ``"damaged"`` without a readable summary."""
        s = self.summary.get("status") if isinstance(self.summary, dict) else None
        return s if s in STATUSES else "damaged"


def _read_json_object(path: Path) -> tuple[dict | None, str | None]:
    """(dict, None) for a readable JSON object file, else (None, what is wrong)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, f"{path.name} is missing"
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"{path.name} cannot be read ({exc.__class__.__name__}: {exc})"
    try:
        value = json.loads(text)
    except ValueError as exc:
        return None, f"{path.name} is not valid JSON ({exc})"
    if not isinstance(value, dict):
        return None, f"{path.name} does not hold a JSON object"
    return value, None


def _check_summary(summary: dict | None, problem: str | None) -> tuple[str, str | None]:
    """(status, problem) for a summary just read."""
    if summary is None:
        return "damaged", problem
    status = summary.get("status")
    if status not in STATUSES:
        return "damaged", f"summary.json has an unknown status {status!r}"
    return status, None


PARTIAL_METRICS = "metrics.csv ends with a partial line"


def _check_metrics_file(path: Path) -> str | None:
    """Cheap health check of metrics.csv (header and last byte); None when fine."""
    try:
        with open(path, "rb") as f:
            head = f.readline(65536)
            f.seek(0, os.SEEK_END)
            size = f.tell()
            last = b""
            if size:
                f.seek(size - 1)
                last = f.read(1)
    except FileNotFoundError:
        return "metrics.csv is missing"
    except OSError as exc:
        return f"metrics.csv cannot be read ({exc.__class__.__name__}: {exc})"
    if not head.strip() or not head.endswith(b"\n"):
        return "metrics.csv has no header line"
    try:
        header = next(csv.reader([head.decode("utf-8", "replace")]))
    except (csv.Error, StopIteration):
        header = []
    missing = [c for c in _KEY_COLUMNS if c not in header]
    if missing:
        return f"metrics.csv has no {' or '.join(missing)} column in its header line"
    if last != b"\n":
        return PARTIAL_METRICS + " (the last row was cut off; it is left out when loading)"
    return None


def _sort_key(info_or_pair: tuple[str, dict | None]) -> tuple[str, str, str]:
    run_id, summary = info_or_pair
    created = ""
    if isinstance(summary, dict):
        c = summary.get("created") or summary.get("started")
        created = c if isinstance(c, str) else ""
    return run_id[:15], created, run_id


def list_runs(runs_dir: str | os.PathLike | None = None) -> list[RunInfo]:
    """All runs under ``runs_dir`` (None: ``default_runs_dir()``), newest first.

    Entries whose name is not a run id (stray files, hidden temp folders, other
    folders) are ignored. A folder named like a run but damaged (missing or invalid
    config.json / summary.json, unknown status, a metrics.csv without header or with a
    cut-off last line, not a folder at all) is listed with ``damaged`` saying what is
    wrong; this never raises for the content of the runs. Returns [] when ``runs_dir``
    does not exist; raises NotADirectoryError when it is a file.
    """
    root = _runs_dir(runs_dir)
    if not root.exists():
        return []
    if not root.is_dir():
        raise NotADirectoryError(f"runs directory {root} is not a folder")
    try:
        names = os.listdir(root)
    except OSError as exc:
        raise OSError(f"cannot list the runs directory {root}: {exc}") from exc
    infos: list[RunInfo] = []
    for name in names:
        if not is_valid_run_id(name):
            continue
        path = root / name
        try:
            if not path.is_dir():
                infos.append(RunInfo(name, "damaged", None, None, "not a folder", path))
                continue
            problems: list[str] = []
            config, p = _read_json_object(path / CONFIG_FILE)
            if p:
                problems.append(p)
            summary, p = _read_json_object(path / SUMMARY_FILE)
            status, p = _check_summary(summary, p)
            if p:
                problems.append(p)
            p = _check_metrics_file(path / METRICS_FILE)
            if p and not (p.startswith(PARTIAL_METRICS) and status in ACTIVE_STATUSES):
                problems.append(p)  # a live run's last row may be mid-write: not damage
            if problems and not path.exists():
                continue  # deleted while we looked
            infos.append(RunInfo(name, status, config, summary, "; ".join(problems) or None, path))
        except Exception as exc:  # never let one run break the listing
            infos.append(RunInfo(name, "damaged", None, None, f"cannot be read ({exc.__class__.__name__}: {exc})", path))
    infos.sort(key=lambda i: _sort_key((i.run_id, i.summary)), reverse=True)
    return infos


def _read_metrics(path: Path, warnings: list[str]) -> "pd.DataFrame":
    """metrics.csv as a typed DataFrame; problems are appended to ``warnings``."""
    import pandas as pd

    try:
        with open(path, "r", encoding="utf-8", errors="replace", newline="") as f:
            text = f.read()
    except FileNotFoundError:
        warnings.append("metrics.csv is missing")
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in METRIC_COLUMNS})
    except OSError as exc:
        warnings.append(f"metrics.csv cannot be read ({exc.__class__.__name__}: {exc})")
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in METRIC_COLUMNS})
    partial = bool(text) and not text.endswith("\n")
    try:
        rows = list(csv.reader(io.StringIO(text)))
    except csv.Error as exc:
        warnings.append(f"metrics.csv cannot be parsed ({exc})")
        rows = []
    if partial and rows:
        rows.pop()
        warnings.append(PARTIAL_METRICS + " (a row cut off by a crash); it was left out")
    if not rows or not any(cell.strip() for cell in rows[0]):
        warnings.append("metrics.csv has no header line")
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in METRIC_COLUMNS})
    header = rows[0]
    keys = [header.index(c) for c in _KEY_COLUMNS if c in header]
    body = []
    for number, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != len(header):
            warnings.append(f"metrics.csv line {number} has {len(row)} fields instead of {len(header)}; it was left out")
            continue
        if any(not _placed(header[i], row[i]) for i in keys):
            warnings.append(f"metrics.csv line {number} has no valid arm or epoch; it was left out")
            continue
        body.append(row)
    columns: dict[str, Any] = {}
    for i, name in enumerate(header):
        values = [row[i] if row[i] != "" else None for row in body]
        if name in STRING_COLUMNS:
            columns[name] = pd.Series(values, dtype=object)
            continue
        raw = pd.Series(values, dtype=object)
        if not body:
            columns[name] = pd.Series([], dtype="float64")
            continue
        numeric = pd.to_numeric(raw, errors="coerce")
        bad = int((numeric.isna() & raw.notna()).sum())
        if bad and name not in METRIC_COLUMNS and name not in OPTIONAL_COLUMNS and bad == int(raw.notna().sum()):
            columns[name] = raw  # an extra text column
            continue
        if bad:
            warnings.append(f"metrics.csv column {name!r} has {bad} value(s) that are not numbers; read as empty")
        if numeric.dtype == object:  # all empty
            numeric = numeric.astype("float64")
        columns[name] = numeric
    missing = [c for c in METRIC_COLUMNS if c not in columns]
    if missing:
        warnings.append(f"metrics.csv has no column(s) {', '.join(missing)}; they are shown empty")
        for name in missing:
            columns[name] = pd.Series([None] * len(body), dtype=object if name in STRING_COLUMNS else "float64")
    return pd.DataFrame(columns, columns=list(header) + missing)


def _placed(column: str, cell: str) -> bool:
    """Whether a key cell of metrics.csv is usable: a non-empty arm, a finite number as epoch."""
    if column == "arm":
        return bool(cell.strip())
    try:
        return math.isfinite(float(cell))
    except ValueError:
        return False


def _read_events(path: Path, warnings: list[str]) -> list[dict]:
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as f:
            lines = f.read().split("\n")
    except FileNotFoundError:
        return []
    except OSError as exc:
        warnings.append(f"events.jsonl cannot be read ({exc.__class__.__name__}: {exc})")
        return []
    events = []
    last = len(lines) - 1
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError:
            if number - 1 == last:
                warnings.append("events.jsonl ended with a partial line; it was left out")
            else:
                warnings.append(f"events.jsonl line {number} is not valid JSON; it was left out")
            continue
        if not isinstance(value, dict):
            warnings.append(f"events.jsonl line {number} is not a JSON object; it was left out")
            continue
        problem = _event_problem(value)
        if problem:
            warnings.append(f"events.jsonl line {number}: {problem}; it was left out")
            continue
        events.append(value)
    return events


def _event_problem(event: dict) -> str | None:
    """What is wrong with the types of an event's known fields (None when nothing)."""
    for key in ("arm", "kind"):
        if key in event and not isinstance(event[key], str):
            return f"{key} is not text"
    epoch = event.get("epoch")
    if epoch is not None and (isinstance(epoch, bool) or not isinstance(epoch, int)):
        return "epoch is not a whole number"
    for key in ("value", "threshold"):
        v = event.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            return f"{key} is not a number"
    return None


def load_run(runs_dir: str | os.PathLike | None, run_id: str) -> Run:
    """Read run ``run_id`` from ``runs_dir`` (None: ``default_runs_dir()``).

    Tolerant of damage: a cut-off last line of metrics.csv or events.jsonl is dropped,
    so are metrics rows without an arm or a numeric epoch and events whose fields have
    the wrong type (epoch not a whole number, value not a number...); standard columns
    missing from metrics.csv are added empty; a bad config.json / summary.json gives
    None; each such problem is a sentence in ``Run.warnings``. Raises ValueError/TypeError
    for an invalid run id and FileNotFoundError when the run does not exist.
    """
    path = run_path(runs_dir, run_id)
    if not path.is_dir():
        raise FileNotFoundError(f"run {run_id} not found in {path.parent}")
    warnings: list[str] = []
    config, p = _read_json_object(path / CONFIG_FILE)
    if p:
        warnings.append(p)
    summary, p = _read_json_object(path / SUMMARY_FILE)
    if p:
        warnings.append(p)
    metrics = _read_metrics(path / METRICS_FILE, warnings)
    events = _read_events(path / EVENTS_FILE, warnings)
    if isinstance(summary, dict) and summary.get("status") in ACTIVE_STATUSES:
        # A reader can catch a row that a live writer is appending (a write that crosses a page
        # boundary becomes visible in two steps): the cut row is left out, and it is no damage.
        warnings = [w for w in warnings if not w.startswith(PARTIAL_METRICS)]
    return Run(run_id, config, metrics, events, summary, warnings, path)


# --------------------------------------------------------------------------- maintenance


def mark_interrupted(
    runs_dir: str | os.PathLike | None = None,
    live_run_ids: Iterable[str] | None = None,
) -> list[str]:
    """Mark runs left ``running`` or ``queued`` by a dead owner as ``interrupted``.

    Call it at startup (the app, the CLI, the JobManager). A run counts as orphaned when
    ``owner_alive(summary)`` is False: its owner pid is gone, is a zombie, was reused by
    a process with another start time, or was on another host. Its summary gets
    ``status="interrupted"``, ``ended`` (now, UTC), ``interrupted_reason``, and any arm
    in ``summary["arms"]`` still ``running``/``queued`` becomes ``interrupted`` too. The
    metrics stay as they are and remain readable. Runs with a damaged summary are left
    alone (``list_runs`` reports them). Leftovers of cut-short creations and deletions
    are removed first (``clean_leftovers``), and so are the temp files of an atomic write
    that the dead owner left half done. A runs directory that cannot be listed (a file,
    no permission) changes nothing and raises nothing here; ``list_runs`` reports it.

    Args:
        runs_dir: the runs directory (None: ``default_runs_dir()``).
        live_run_ids: optional ids of the runs this very process is working on. When
            given, a run owned by this process but not in the set is orphaned too (a job
            thread that died without writing its end).

    Returns:
        The ids of the runs changed, newest first.
    """
    root = _runs_dir(runs_dir)
    live = None if live_run_ids is None else set(live_run_ids)
    clean_leftovers(root)
    me = os.getpid()
    my_start = _process_start(me)
    changed = []
    try:
        infos = list_runs(root)
    except OSError:  # not a folder, or unreadable: nothing to mark; the listing reports it
        return changed
    for info in infos:
        summary = info.summary
        if summary is None or info.status not in ACTIVE_STATUSES:
            continue
        alive = owner_alive(summary)
        ours = (
            summary.get("pid") == me
            and summary.get("hostname") == _hostname()
            and summary.get("pid_start") == my_start
        )
        if alive and ours and live is not None and info.run_id not in live:
            alive = False
            reason = "the job of this process that owned it is no longer running"
        else:
            reason = (
                f"its owner process {summary.get('pid')} on host {summary.get('hostname')} "
                "is no longer running"
            )
        if alive:
            continue
        new = dict(summary)
        new["status"] = "interrupted"
        new["ended"] = _now_iso()
        new["interrupted_reason"] = reason
        arms = new.get("arms")
        if isinstance(arms, dict):
            new["arms"] = {
                k: ({**v, "status": "interrupted"} if isinstance(v, dict) and v.get("status") in ACTIVE_STATUSES else v)
                for k, v in arms.items()
            }
        try:
            _atomic_write_text(info.path / SUMMARY_FILE, _dumps(new, "summary", indent=2) + "\n")
        except (OSError, TypeError):
            continue  # read-only folder or odd content: leave it, the listing still works
        _remove_temp_files(info.path)  # a write its dead owner left half done
        changed.append(info.run_id)
    return changed


def _remove_temp_files(path: Path) -> None:
    """Remove the ``.<name>.<random>.tmp`` files of atomic writes cut short in a run folder."""
    try:
        names = os.listdir(path)
    except OSError:
        return
    for name in names:
        if name.startswith(".") and name.endswith(".tmp"):
            try:
                os.unlink(path / name)
            except OSError:
                pass


def clean_leftovers(runs_dir: str | os.PathLike | None = None, min_age_s: float = 600.0) -> list[str]:
    """Remove what a crash can leave in the runs directory besides runs.

    That is hidden ``.deleting-<run_id>-*`` folders (a deletion cut short) and hidden
    ``.new-<run_id>-*`` folders (a run creation cut short) whose last change is at least
    ``min_age_s`` seconds old (so a creation in progress elsewhere is not disturbed).
    Nothing else is touched. Called by ``mark_interrupted``; never raises for the
    content. Returns the names removed.
    """
    root = _runs_dir(runs_dir)
    removed = []
    try:
        names = os.listdir(root)
    except OSError:
        return removed
    now = time.time()
    for name in names:
        kind = "deleting" if name.startswith(".deleting-") else "new" if name.startswith(".new-") else None
        if kind is None or not is_valid_run_id(name.split("-", 1)[1][:22]):
            continue
        path = root / name
        try:
            if path.is_symlink() or not path.is_dir():
                continue
            if kind == "new" and now - path.stat().st_mtime < min_age_s:
                continue
            shutil.rmtree(path)
            removed.append(name)
        except OSError:
            continue
    return removed


def delete_run(runs_dir: str | os.PathLike | None, run_id: str) -> None:
    """Remove the folder of run ``run_id``.

    Refuses (RuntimeError) while the run is ``running`` or ``queued`` and its owner
    process is alive: stop it first. A run with a damaged summary can be deleted.
    Raises ValueError/TypeError for an invalid id and FileNotFoundError when the run
    does not exist. The folder is first renamed to a hidden name, so a listing never
    sees it half deleted; a symlink in place of a run folder is removed as a link only.
    """
    path = run_path(runs_dir, run_id)
    if not (path.exists() or path.is_symlink()):
        raise FileNotFoundError(f"run {run_id} not found in {path.parent}")
    if path.is_dir() and not path.is_symlink():
        summary, _ = _read_json_object(path / SUMMARY_FILE)
        if summary is not None and summary.get("status") in ACTIVE_STATUSES and owner_alive(summary):
            raise RuntimeError(
                f"run {run_id} is {summary['status']} (owner process {summary.get('pid')} is alive); "
                "stop it before deleting it"
            )
    trash = path.parent / f".deleting-{run_id}-{secrets.token_hex(4)}"
    os.rename(path, trash)
    if trash.is_symlink() or not trash.is_dir():
        os.unlink(trash)
    else:
        shutil.rmtree(trash)
    _fsync_dir(path.parent)


# --------------------------------------------------------------------------- export


def _records(df: "pd.DataFrame") -> list[dict]:
    """DataFrame rows as dicts of Python values, with None for empty cells and NaN."""
    rows = df.astype(object).where(df.notna(), None).to_dict(orient="records")
    return [_jsonable(row, "metrics") for row in rows]


def export_bytes(runs_dir: str | os.PathLike | None, run_id: str, fmt: str) -> bytes:
    """The content ``export_run`` would write, as bytes (for a download button).

    Args:
        runs_dir: the runs directory (None: ``default_runs_dir()``).
        run_id: a valid run id of an existing run.
        fmt: ``"csv"`` (metrics.csv, cut-off rows dropped), ``"parquet"`` (the metrics
            table; needs pyarrow) or ``"json"`` (one object with run_id, config, summary,
            events, metrics as a list of rows, warnings; NaN written as null).
    """
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"fmt {fmt!r} is not an export format; allowed: {', '.join(EXPORT_FORMATS)}")
    run = load_run(runs_dir, run_id)
    if fmt == "csv":
        return run.metrics.to_csv(index=False, lineterminator="\n").encode("utf-8")
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError as exc:  # pragma: no cover - pyarrow is in requirements.txt
            raise RuntimeError("parquet export needs pyarrow: pip install pyarrow") from exc
        buf = io.BytesIO()
        df = run.metrics.copy()
        for c in df.columns:
            if df[c].dtype == object:
                df[c] = df[c].astype("string")
        df.to_parquet(buf, index=False, engine="pyarrow")
        return buf.getvalue()
    doc = {
        "run_id": run.run_id,
        "config": run.config,
        "summary": run.summary,
        "events": run.events,
        "metrics": _records(run.metrics),
        "warnings": run.warnings,
    }
    return (_dumps(doc, "export", indent=2) + "\n").encode("utf-8")


def export_run(
    runs_dir: str | os.PathLike | None,
    run_id: str,
    fmt: str,
    dest: str | os.PathLike,
) -> Path:
    """Export run ``run_id`` as ``fmt`` (see ``export_bytes``) to ``dest``.

    Args:
        dest: a file path, or an existing folder in which ``<run_id>.<fmt>`` is written.
            The file is written atomically.

    Returns:
        The path written.
    """
    data = export_bytes(runs_dir, run_id, fmt)
    target = Path(dest).expanduser()
    if target.is_dir():
        target = target / f"{run_id}.{fmt}"
    target = target.resolve()
    if not target.parent.is_dir():
        raise FileNotFoundError(f"dest: folder {target.parent} does not exist")
    _atomic_write_bytes(target, data)
    return target


def zip_runs(runs_dir: str | os.PathLike | None, run_ids: Iterable[str]) -> bytes:
    """A zip archive (bytes) holding the whole folders of the given runs.

    Each file is stored as ``<run_id>/<file name>``; hidden temp files and symlinks are
    left out. Every id is checked first (ValueError/TypeError for an invalid one,
    FileNotFoundError for a missing run); duplicates are stored once. ValueError when
    ``run_ids`` is empty.
    """
    if isinstance(run_ids, str):
        run_ids = [run_ids]
    ids = list(dict.fromkeys(run_ids))
    if not ids:
        raise ValueError("run_ids is empty: name at least one run to zip")
    paths = []
    for run_id in ids:
        path = run_path(runs_dir, run_id)
        if not path.is_dir() or path.is_symlink():
            raise FileNotFoundError(f"run {run_id} not found in {path.parent}")
        paths.append((run_id, path))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for run_id, path in paths:
            for dirpath, dirnames, filenames in os.walk(path, followlinks=False):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for name in sorted(filenames):
                    full = Path(dirpath) / name
                    if name.startswith(".") or full.is_symlink() or not full.is_file():
                        continue
                    rel = full.relative_to(path).as_posix()
                    zf.write(full, f"{run_id}/{rel}")
    return buf.getvalue()
