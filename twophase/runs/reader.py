"""Reading runs back: list_runs (one entry per run folder) and load_run (one run, typed).

Reading never raises on damaged content: ``list_runs`` reports damage in ``RunInfo.damaged``
and ``load_run`` in ``Run.warnings``, and whatever can be read is read.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twophase.runs.files import (MAX_EVENTS_BYTES, MAX_METRICS_BYTES, UnreadableFile, parse_json, read_bounded,
                                 read_json_object)
from twophase.runs.owner import owner_alive
from twophase.runs.ids import (CHECKPOINT_FILE, CHECKPOINT_INFO_FILE, CONFIG_FILE, EVENTS_FILE, METRICS_FILE, SUMMARY_FILE, is_valid_run_id,
                               resolve_runs_dir, run_path)
from twophase.schema import (ACTIVE_STATUSES, ARM_SUMMARY_FIGURES, KEY_COLUMNS, METRIC_COLUMNS, PROBE_COLUMNS,
                             STATUSES, STRING_COLUMNS, finite_or_none)

#: A metrics.csv field longer than this is damage (the writer's longest is an arm spec).
MAX_FIELD_CHARS = 128 * 1024
#: What a reader says of a run left running or queued by a process that no longer runs.
ORPHANED = "its process ({pid} on {host}) is no longer running; what it logged is kept (seen by a reader)"

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


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
    """Health check of metrics.csv (header, last byte, no damaged line); None when fine. Read
    through read_bounded: a link, a FIFO or a device is refused, never opened (a FIFO would block)."""
    if os.path.islink(path):
        return "metrics.csv is a symbolic link; it is not followed"
    try:
        data = read_bounded(path, MAX_METRICS_BYTES)
    except FileNotFoundError:
        return "metrics.csv is missing"
    except UnreadableFile as exc:
        return f"metrics.csv cannot be read: {str(exc).replace(os.fspath(path), 'it')}"
    except OSError as exc:
        return f"metrics.csv cannot be read ({exc.__class__.__name__}: {exc})"
    head = data[:65536].split(b"\n", 1)[0] + (b"\n" if b"\n" in data[:65536] else b"")
    if not head.strip() or not head.endswith(b"\n"):
        return "metrics.csv has no header line"
    try:
        header = next(csv.reader([head.decode("utf-8", "replace")]))
    except (csv.Error, StopIteration):
        header = []
    missing = [c for c in KEY_COLUMNS if c not in header]
    if missing:
        return f"metrics.csv has no {' or '.join(missing)} column in its header line"
    if not data.endswith(b"\n"):
        return PARTIAL_METRICS + " (the last row was cut off; it is left out when loading)"
    for number, line in enumerate(data.split(b"\n"), start=1):  # a bare CR, an overlong field
        if b"\r" in line.rstrip(b"\r") or len(line) > MAX_FIELD_CHARS:
            return f"metrics.csv line {number} is damaged; it is left out when loading"
    return None


def _sort_key(info_or_pair: tuple[str, dict | None]) -> tuple[str, str, str]:
    run_id, summary = info_or_pair
    created = ""
    if isinstance(summary, dict):
        c = summary.get("created") or summary.get("started")
        created = c if isinstance(c, str) else ""
    return run_id[:15], created, run_id


def list_runs(runs_dir: str | os.PathLike | None = None, raw: bool = False) -> list[RunInfo]:
    """All runs under ``runs_dir`` (None: ``default_runs_dir()``), newest first.

    Entries whose name is not a run id (stray files, hidden temp folders, other
    folders) are ignored. A folder named like a run but damaged (missing or invalid
    config.json / summary.json, unknown status, a metrics.csv without header or with a
    cut-off last line, not a folder at all) is listed with ``damaged`` saying what is
    wrong; this never raises for the content of the runs. A run left running or queued by a
    process that no longer runs is listed as ``interrupted`` (``raw``: as its summary.json says,
    for mark_interrupted). Returns [] when ``runs_dir``
    does not exist; raises NotADirectoryError when it is a file.
    """
    root = resolve_runs_dir(runs_dir)
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
            config, p = read_json_object(path / CONFIG_FILE)
            if p:
                problems.append(p)
            summary, p = read_json_object(path / SUMMARY_FILE)
            if not raw:  # a run whose process died reads as interrupted (raw: as its file says)
                seen = summary
                summary = orphan_view(summary)
                if summary is not seen:  # and its figures come from metrics.csv, which is newer
                    summary = _figures_from_metrics(summary, _read_metrics(path / METRICS_FILE, []))
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
        text = read_bounded(path, MAX_METRICS_BYTES).decode("utf-8", errors="replace")
    except FileNotFoundError:
        warnings.append("metrics.csv is missing")
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in METRIC_COLUMNS})
    except (OSError, UnreadableFile) as exc:
        warnings.append(f"metrics.csv cannot be read ({exc.__class__.__name__}: {exc})")
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in METRIC_COLUMNS})
    partial = bool(text) and not text.endswith("\n")
    rows = _csv_lines(text, warnings)
    if partial and rows:
        rows.pop()
        warnings.append(PARTIAL_METRICS + " (a row cut off by a crash); it was left out")
    if not rows or rows[0][0] != 1 or not any(cell.strip() for cell in rows[0][1]):
        warnings.append("metrics.csv has no header line")
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in METRIC_COLUMNS})
    header = rows[0][1]
    keys = [header.index(c) for c in KEY_COLUMNS if c in header]
    body = []
    for number, row in rows[1:]:
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
        if bad and name not in METRIC_COLUMNS and name not in PROBE_COLUMNS and bad == int(raw.notna().sum()):
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


def _csv_lines(text: str, warnings: list[str]) -> list[tuple[int, list[str]]]:
    """(line number, cells) of every line of metrics.csv that parses; a damaged line (a bare
    carriage return inside a field, a field over MAX_FIELD_CHARS, a broken quote) is left out and
    named, never the lines around it."""
    out = []
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for number, line in enumerate(lines, start=1):
        problem = None
        if "\r" in line.rstrip("\r"):
            problem = "a carriage return inside a field"
        elif len(line) > MAX_FIELD_CHARS:
            problem = f"more than {MAX_FIELD_CHARS} characters"
        else:
            try:
                cells = next(csv.reader([line.rstrip("\r")]), [])
            except csv.Error as exc:
                problem = str(exc)
        if problem:
            warnings.append(f"metrics.csv line {number} is damaged ({problem}); it was left out")
            continue
        out.append((number, cells))
    return out


def _placed(column: str, cell: str) -> bool:
    """Whether a key cell of metrics.csv is usable: a non-empty arm, a finite number as epoch."""
    if column == "arm":
        return bool(cell.strip())
    try:
        return math.isfinite(float(cell))
    except ValueError:
        return False


def _read_events(path: Path, warnings: list[str]) -> list[dict]:
    try:  # bounded, never through a link or from a FIFO or device (files.read_bounded)
        lines = read_bounded(path, MAX_EVENTS_BYTES).decode("utf-8", errors="replace").split("\n")
    except FileNotFoundError:
        return []
    except UnreadableFile as exc:
        warnings.append(f"events.jsonl cannot be read: {str(exc).replace(os.fspath(path), 'it')}")
        return []
    except OSError as exc:
        warnings.append(f"events.jsonl cannot be read ({exc.__class__.__name__}: {exc})")
        return []
    events = []
    last = len(lines) - 1
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        value, problem = parse_json(line, "events.jsonl")
        if problem:
            if "nested" in problem:
                warnings.append(f"events.jsonl line {number} is nested too deeply; it was left out")
            elif number - 1 == last:
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
    config, p = read_json_object(path / CONFIG_FILE)
    if p:
        warnings.append(p)
    summary, p = read_json_object(path / SUMMARY_FILE)
    if p:
        warnings.append(p)
    metrics = _read_metrics(path / METRICS_FILE, warnings)
    events = _read_events(path / EVENTS_FILE, warnings)
    if isinstance(summary, dict) and summary.get("status") in ACTIVE_STATUSES:
        # A reader can catch a row that a live writer is appending (a write that crosses a page
        # boundary becomes visible in two steps): the cut row is left out, and it is no damage.
        warnings = [w for w in warnings if not w.startswith(PARTIAL_METRICS)]
    summary = orphan_view(summary)
    if isinstance(summary, dict) and summary.get("status") == "interrupted":
        summary = _figures_from_metrics(summary, metrics)
    return Run(run_id, config, metrics, events, summary, warnings, path)


def orphan_view(summary: dict | None) -> dict | None:
    """A summary left running or queued by a process that no longer runs, as a reader shows it:
    `interrupted`, with the reason (a copy; the file is changed by mark_interrupted)."""
    if not isinstance(summary, dict) or summary.get("status") not in ACTIVE_STATUSES or owner_alive(summary):
        return summary
    reason = ORPHANED.format(pid=summary.get("pid"), host=summary.get("hostname"))
    arms = summary.get("arms")
    if isinstance(arms, dict):
        arms = {k: ({**v, "status": "interrupted"} if isinstance(v, dict) and v.get("status") in ACTIVE_STATUSES
                    else v) for k, v in arms.items()}
    return {**summary, "status": "interrupted", "interrupted_reason": reason, "arms": arms}


def _figures_from_metrics(summary: dict, metrics) -> dict:
    """An interrupted run's per-arm epochs and last figures from metrics.csv where the summary is
    older (it is written at the start, at switches and at the end; a killed run has more rows)."""
    arms = summary.get("arms")
    if not isinstance(arms, dict) or not len(metrics) or "arm" not in metrics.columns:
        return summary
    out = {}
    for arm, figures in arms.items():
        part = metrics[metrics["arm"] == arm]
        if not isinstance(figures, dict) or part.empty or "epoch" not in part.columns:
            out[arm] = figures
            continue
        last = part.sort_values("epoch").iloc[-1]
        epochs = finite_or_none(last["epoch"])
        if epochs is None or (isinstance(figures.get("epochs"), int) and figures["epochs"] >= epochs):
            out[arm] = figures
            continue
        fresh = {k: finite_or_none(last[k]) for k in ARM_SUMMARY_FIGURES if k in last.index}
        out[arm] = {**figures, **fresh, "epochs": int(epochs), "figures_from": "metrics.csv"}
    return {**summary, "arms": out}


def checkpoint_info(path) -> dict | None:
    """A run folder's checkpoint.json: the epoch it resumes after, the metrics rows and events it
    keeps, when it was saved, each arm's epoch and status (twophase/training/checkpoint.py).
    None when there is no checkpoint or it cannot be read."""
    info, problem = read_json_object(Path(path) / CHECKPOINT_INFO_FILE)
    if info is None or problem or not os.path.exists(Path(path) / CHECKPOINT_FILE):
        return None
    if not all(isinstance(info.get(k), int) and not isinstance(info.get(k), bool) and info[k] >= 0
               for k in ("epoch", "rows", "events")):
        return None
    return info
