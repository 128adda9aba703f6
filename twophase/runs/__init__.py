"""Runs on disk: one folder per run.

    <runs_dir>/<run_id>/config.json    the validated config, exactly as RunConfig.to_dict() gave it
    <runs_dir>/<run_id>/metrics.csv    one row per arm per epoch (twophase/schema.py), appended and fsynced
    <runs_dir>/<run_id>/events.jsonl   one JSON object per line: peak, switch, trial, diverged
    <runs_dir>/<run_id>/summary.json   status, owner process, times, versions, per-arm figures (atomic)
    <runs_dir>/<run_id>/checkpoint.pt, checkpoint.json   the state to resume from (twophase/training/checkpoint.py)

    ids.py          run ids, run_path, the default runs folder
    files.py        strict JSON, metrics.csv cells, atomic writes with fsync
    owner.py        which process owns a run and whether it still runs
    writer.py       RunWriter: create a run folder, append records and events, rewrite the summary
    reader.py       list_runs, load_run, checkpoint_info: tolerant readers that say what was damaged
    maintenance.py  mark_interrupted, mark_ended, clean_leftovers, delete_run
    export.py       export_bytes, export_run (csv, parquet, json), zip_runs
    example.py      example_run, curvature_run: runs shipped in twophase/data_files/ (the default
                    run; 1,000 epochs with the Hessian probe)

Pure stdlib plus pandas (imported lazily, only by the readers) and pyarrow for parquet export.
Never imports streamlit or torch.
"""

from twophase.runs.example import CURVATURE_RUNS_DIR, EXAMPLE_RUNS_DIR, curvature_run, example_run, shipped_run
from twophase.runs.export import EXPORT_FORMATS, export_bytes, export_run, frame_bytes, runs_frame, zip_runs
from twophase.runs.ids import (CHECKPOINT_FILE, CHECKPOINT_INFO_FILE, CONFIG_FILE, EVENTS_FILE, METRICS_FILE, RUN_ID_PATTERN, SUMMARY_FILE, check_run_id,
                               default_runs_dir, is_valid_run_id, new_run_id, run_path)
from twophase.runs.maintenance import clean_leftovers, delete_run, mark_ended, mark_interrupted
from twophase.runs.owner import owner_alive
from twophase.runs.reader import Run, RunInfo, checkpoint_info, list_runs, load_run
from twophase.runs.writer import RunWriter, package_versions
from twophase.schema import ACTIVE_STATUSES, FINAL_STATUSES, METRIC_COLUMNS, PROBE_COLUMNS, STATUSES, STRING_COLUMNS

__all__ = ["RunWriter", "Run", "example_run", "EXAMPLE_RUNS_DIR", "curvature_run", "CURVATURE_RUNS_DIR", "shipped_run", "RunInfo", "list_runs", "load_run", "checkpoint_info", "mark_interrupted", "mark_ended",
           "clean_leftovers", "delete_run", "export_bytes", "export_run", "frame_bytes", "runs_frame", "zip_runs", "new_run_id",
           "is_valid_run_id", "check_run_id", "run_path", "default_runs_dir", "owner_alive", "package_versions",
           "RUN_ID_PATTERN", "EXPORT_FORMATS", "CHECKPOINT_FILE", "CHECKPOINT_INFO_FILE", "CONFIG_FILE", "METRICS_FILE", "EVENTS_FILE", "SUMMARY_FILE",
           "METRIC_COLUMNS", "PROBE_COLUMNS", "STRING_COLUMNS", "STATUSES", "ACTIVE_STATUSES", "FINAL_STATUSES"]
