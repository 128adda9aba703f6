"""Keeping a runs folder honest: runs whose process died, leftovers of crashes, deletion.

mark_interrupted    runs left running or queued by a dead owner become interrupted
mark_ended          a run whose writer died is ended by another process (a surviving rank, the app)
clean_leftovers     hidden folders of a creation or deletion cut short
delete_run          remove a run folder (refused while its owner is alive)
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Iterable

from twophase.runs.files import atomic_write_text, dumps, fsync_dir, now_iso, read_json_object
from twophase.runs.ids import SUMMARY_FILE, is_valid_run_id, resolve_runs_dir, run_path
from twophase.runs.owner import hostname, owner_alive, process_start
from twophase.runs.ids import METRICS_FILE
from twophase.runs.reader import _figures_from_metrics, _read_metrics, list_runs
from twophase.schema import ACTIVE_STATUSES


def mark_interrupted(
    runs_dir: str | os.PathLike | None = None,
    live_run_ids: Iterable[str] | None = None,
) -> list[str]:
    """Mark runs left ``running`` or ``queued`` by a dead owner as ``interrupted``.

    Call it at startup (the app, the CLI, the JobManager). A run counts as orphaned when
    ``owner_alive(summary)`` is False: its owner pid is gone, is a zombie, was reused by
    a process with another start time, or was on another host. Its summary gets
    ``status="interrupted"``, ``ended`` (now, UTC), ``interrupted_reason``, and any arm
    in ``summary["arms"]`` still ``running``/``queued`` becomes ``interrupted`` too, with its
    epochs and last figures from metrics.csv where the summary is older. The metrics stay as
    they are and remain readable. Runs with a damaged summary are left
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
    root = resolve_runs_dir(runs_dir)
    live = None if live_run_ids is None else set(live_run_ids)
    clean_leftovers(root)
    me = os.getpid()
    my_start = process_start(me)
    changed = []
    try:
        infos = list_runs(root, raw=True)
    except OSError:  # not a folder, or unreadable: nothing to mark; the listing reports it
        return changed
    for info in infos:
        summary = info.summary
        if summary is None or info.status not in ACTIVE_STATUSES:
            continue
        alive = owner_alive(summary)
        ours = (
            summary.get("pid") == me
            and summary.get("hostname") == hostname()
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
        new["ended"] = now_iso()
        new["interrupted_reason"] = reason
        arms = new.get("arms")
        if isinstance(arms, dict):
            new["arms"] = {
                k: ({**v, "status": "interrupted"} if isinstance(v, dict) and v.get("status") in ACTIVE_STATUSES else v)
                for k, v in arms.items()
            }
        try:  # the per-arm figures as metrics.csv has them (the summary dates from its last write)
            new = _figures_from_metrics(new, _read_metrics(info.path / METRICS_FILE, []))
            atomic_write_text(info.path / SUMMARY_FILE, dumps(new, "summary", indent=2) + "\n")
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
    root = resolve_runs_dir(runs_dir)
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
        summary, _ = read_json_object(path / SUMMARY_FILE)
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
    fsync_dir(path.parent)


def mark_ended(runs_dir, run_id: str, status: str, error: str | None, extra: dict | None = None) -> bool:
    """Write `status` and `error` into the summary of a run still `queued`/`running` on disk.

    For a run whose writer is gone: rank 0 died (a surviving rank reports it, with its own copy
    of the summary as `extra`), or the launched processes ended without writing their end (the
    app reports it). Returns True when the summary was changed; False when the run is missing,
    already ended or unreadable.
    """
    try:
        path = run_path(runs_dir, run_id)
    except (TypeError, ValueError):
        return False
    summary, problem = read_json_object(path / SUMMARY_FILE)
    if summary is None or problem or summary.get("status") not in ACTIVE_STATUSES:
        return False
    new = {**summary, **(extra or {}), "status": status, "error": error, "ended": now_iso()}
    arms = new.get("arms")
    if isinstance(arms, dict):
        new["arms"] = {k: ({**v, "status": status} if isinstance(v, dict) and v.get("status") in
                           ACTIVE_STATUSES else v) for k, v in arms.items()}
    try:
        atomic_write_text(path / SUMMARY_FILE, dumps(new, "summary", indent=2) + "\n")
    except (OSError, TypeError, ValueError):
        return False
    return True
