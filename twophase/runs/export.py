"""Exporting runs: one run's metrics as CSV, Parquet or JSON; several run folders as a zip."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from twophase.runs.files import atomic_write_bytes, dumps, jsonable
from twophase.runs.ids import run_path
from twophase.runs.reader import load_run

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

#: Formats of ``export_run`` / ``export_bytes``.
EXPORT_FORMATS: tuple[str, ...] = ("csv", "parquet", "json")


def _records(df: "pd.DataFrame") -> list[dict]:
    """DataFrame rows as dicts of Python values, with None for empty cells and NaN."""
    rows = df.astype(object).where(df.notna(), None).to_dict(orient="records")
    return [jsonable(row, "metrics") for row in rows]


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
    return (dumps(doc, "export", indent=2) + "\n").encode("utf-8")


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
    atomic_write_bytes(target, data)
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
