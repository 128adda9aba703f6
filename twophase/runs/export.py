"""Exporting runs: one run's metrics as CSV, Parquet or JSON; several run folders as a zip."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from twophase.runs.files import atomic_write_bytes, dumps, jsonable
from twophase.runs.ids import CHECKPOINT_FILE, CHECKPOINT_INFO_FILE, run_path
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
    if fmt in ("csv", "parquet"):
        return frame_bytes(run.metrics, fmt)
    doc = {
        "run_id": run.run_id,
        "config": run.config,
        "summary": run.summary,
        "events": run.events,
        "metrics": _records(run.metrics),
        "warnings": run.warnings,
    }
    return (dumps(doc, "export", indent=2) + "\n").encode("utf-8")


#: The config fields beside each row of a multi-run table (what each curve is).
RUN_COLUMNS = ("name", "model", "dataset", "subset", "epochs", "seed", "lr", "tolerance", "switch_epoch", "arms")


def runs_frame(runs: Iterable, arms: Iterable[str] | None = None) -> "pd.DataFrame":
    """The metrics of several runs (twophase.runs.Run) in one table: each row with its run_id and
    the run's settings (config_<field> for RUN_COLUMNS); arms: keep only these arms."""
    import pandas as pd

    keep = None if arms is None else set(arms)
    frames = []
    for run in runs:
        metrics = run.metrics
        if keep is not None and len(metrics) and "arm" in metrics.columns:
            metrics = metrics[metrics["arm"].isin(keep)]
        cfg = run.config or {}
        frames.append(metrics.assign(run_id=run.run_id, **{f"config_{k}": str(cfg.get(k)) for k in RUN_COLUMNS}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def frame_bytes(df: "pd.DataFrame", fmt: str) -> bytes:
    """A metrics table (one run's, or several runs' side by side) as CSV or Parquet bytes."""
    if fmt == "csv":
        return df.to_csv(index=False, lineterminator="\n").encode("utf-8")
    if fmt != "parquet":
        raise ValueError(f"fmt {fmt!r} is not a table format; allowed: csv, parquet")
    try:
        import pyarrow  # noqa: F401
    except ImportError as exc:  # pragma: no cover - pyarrow is in requirements.txt
        raise RuntimeError("parquet export needs pyarrow: pip install pyarrow") from exc
    buf = io.BytesIO()
    df = df.copy()
    for c in df.columns:
        if df[c].dtype == object:
            df[c] = df[c].astype("string")
    df.to_parquet(buf, index=False, engine="pyarrow")
    return buf.getvalue()


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


def zip_runs(runs_dir: str | os.PathLike | None, run_ids: Iterable[str], checkpoints: bool = False) -> bytes:
    """A zip archive (bytes) holding the folders of the given runs.

    Each file is stored as ``<run_id>/<file name>``; hidden temp files and symlinks are
    left out, and so are the checkpoints (checkpoint.pt, checkpoint.json: megabytes of state
    to resume from, not results) unless ``checkpoints`` is true. Every id is checked first (ValueError/TypeError for an invalid one,
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
                    if not checkpoints and dirpath == str(path) and name in (CHECKPOINT_FILE, CHECKPOINT_INFO_FILE):
                        continue
                    rel = full.relative_to(path).as_posix()
                    zf.write(full, f"{run_id}/{rel}")
    return buf.getvalue()
