"""Checkpoints: a stopped, interrupted or failed run continues where it was.

    <run folder>/checkpoint.pt     the trainer's state after a whole epoch (torch.save, tensors
                                   and plain data only: read back with weights_only=True)
    <run folder>/checkpoint.json   what it holds: the epoch, the metrics rows and events written
                                   by then, when it was saved (read without torch by the pages)

The trainer's state (Trainer.state_dict: every arm's counts and switch rule, every trunk's and
branch's model and optimizer, the trunk's batch-order generator) is copied in memory after every
epoch, written every `checkpoint_every` epochs and again when the run is stopped or fails, so a
Stop keeps every whole epoch and a kill loses at most checkpoint_every epochs of work. A run that
completed or diverged has its checkpoint removed (there is nothing left to train).

Resuming (resume_config checks that a run can be, then run_experiment(resume=True)) rewinds
metrics.csv and events.jsonl to the checkpoint, reloads the state and trains on in the same
files: the rows equal those of a run never interrupted (bit for bit on CPU at the same thread
count, except the seconds). Multi-process runs write no checkpoint yet.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import torch

from twophase import runs
from twophase.config import RunConfig
from twophase.errors import ConfigError, TwophaseError
from twophase.runs.files import atomic_write_bytes, atomic_write_text, now_iso, read_bounded
from twophase.runs.reader import checkpoint_info

__all__ = ["Checkpointer", "ResumeError", "resume_config", "load_state", "checkpoint_info", "RESUMABLE", "FORMAT"]

FORMAT = 1
RESUMABLE = ("stopped", "interrupted", "failed")
MAX_CHECKPOINT_BYTES = 4 << 30  # a checkpoint larger than this is refused (not a twophase checkpoint)


class ResumeError(TwophaseError):
    """This run cannot be resumed; the message says why and what to do instead."""


class Checkpointer:
    """Keeps the trainer's state after each epoch and writes it to the run folder.

    trainer, log: the run's Trainer and RunLog (log.rows: metrics rows written, log.events).
    path: the run folder (None: keep nothing, e.g. a multi-process run or a benchmark).
    every: write every `every` epochs (0: only when the run ends)."""

    def __init__(self, trainer, log, path: Path | None, every: int):
        self.trainer, self.log, self.path, self.every = trainer, log, path, int(every)
        self.state: dict | None = None
        self.saved = True

    def epoch_done(self, epoch: int) -> None:
        """Epoch `epoch` is whole for every arm: copy the state; write it when it is due."""
        if self.path is None:
            return
        self.state = {"format": FORMAT, "epoch": epoch, "rows": self.log.rows, "events": len(self.log.events),
                      "trainer": self.trainer.state_dict(), "rng": torch.get_rng_state()}
        self.saved = False
        if self.every and epoch % self.every == 0:
            self.save()

    def save(self) -> None:
        """Write the last whole epoch's state (nothing when it is on disk already)."""
        if self.path is None or self.state is None or self.saved:
            return
        buffer = io.BytesIO()
        torch.save(self.state, buffer)
        atomic_write_bytes(self.path / runs.CHECKPOINT_FILE, buffer.getvalue())
        arms = {a["name"]: {"epoch": a["epoch"], "status": a["status"]} for a in self.state["trainer"]["arms"]}
        info = {"format": FORMAT, "epoch": self.state["epoch"], "rows": self.state["rows"],
                "events": self.state["events"], "saved": now_iso(), "bytes": buffer.tell(), "arms": arms}
        atomic_write_text(self.path / runs.CHECKPOINT_INFO_FILE, json.dumps(info, indent=2) + "\n")
        self.saved = True


    def discard(self) -> None:
        """Remove the run's checkpoint (the run completed or diverged: there is nothing to resume)."""
        self.state = None
        if self.path is not None:
            for name in (runs.CHECKPOINT_INFO_FILE, runs.CHECKPOINT_FILE):
                try:
                    os.unlink(self.path / name)
                except FileNotFoundError:
                    pass


def load_state(path: Path, device: str = "cpu") -> dict:
    """The state in a run folder's checkpoint.pt (ResumeError when it is missing or unreadable)."""
    file = Path(path) / runs.CHECKPOINT_FILE
    try:
        data = read_bounded(file, MAX_CHECKPOINT_BYTES)
    except FileNotFoundError:
        raise ResumeError(f"{file} is missing") from None
    except (OSError, ValueError) as exc:
        raise ResumeError(f"{file} cannot be read: {exc}") from None
    try:
        state = torch.load(io.BytesIO(data), map_location=device, weights_only=True)
    except Exception as exc:  # a damaged or foreign file: say so, never unpickle code
        raise ResumeError(f"{file} is not a readable twophase checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ResumeError(f"{file} is not a twophase checkpoint of format {FORMAT}")
    return state


def resume_config(runs_dir, run_id: str) -> tuple[RunConfig, dict]:
    """The config of run `run_id` and its checkpoint.json, when the run can be resumed now.

    Raises ResumeError saying why not: no such run, still running, completed or diverged (nothing
    left to train), no checkpoint (a run of an older version, or one stopped before epoch 0 was
    measured) or a damaged one, a multi-process run, or a config this version no longer accepts."""
    try:
        runs.mark_interrupted(runs_dir)  # a run left "running" by a dead process is interrupted
        run = runs.load_run(runs_dir, run_id)
    except (FileNotFoundError, ValueError, TypeError) as exc:
        raise ResumeError(f"run {run_id!r}: {exc}") from None
    status = run.status
    if status not in RESUMABLE:
        why = {"completed": "it completed every epoch", "diverged": "its arms ended (one diverged, the others completed)",
               "running": "it is running now", "queued": "it is queued now"}.get(status, f"its status is {status}")
        raise ResumeError(f"run {run_id} cannot be resumed: {why}; only a run that is "
                          f"{', '.join(RESUMABLE[:-1])} or {RESUMABLE[-1]} can be")
    if not isinstance(run.config, dict):
        raise ResumeError(f"run {run_id} cannot be resumed: its config.json cannot be read")
    try:
        config = RunConfig.from_dict(run.config)
    except ConfigError as exc:
        raise ResumeError(f"run {run_id} cannot be resumed: its config is not valid in this version ({exc})") from None
    if config.processes > 1:
        raise ResumeError(f"run {run_id} cannot be resumed: it trained in {config.processes} processes, and "
                          "multi-process runs keep no checkpoint yet; start it again instead")
    info = checkpoint_info(run.path)
    if info is None:
        raise ResumeError(f"run {run_id} cannot be resumed: it has no checkpoint (it ended before its first "
                          "epoch was measured, or an older version wrote it); start it again instead")
    arms = info.get("arms") if isinstance(info.get("arms"), dict) else {}
    if arms and not any(isinstance(a, dict) and a.get("status") == "running" for a in arms.values()):
        raise ResumeError(f"run {run_id} cannot be resumed: every arm had ended at its checkpoint "
                          f"(epoch {info.get('epoch')})")
    try:
        state = load_state(run.path)  # read now, so a damaged file is refused before anything changes
    except ResumeError as exc:
        raise ResumeError(f"run {run_id} cannot be resumed: {exc}; start it again instead") from None
    if (state.get("epoch"), state.get("rows"), state.get("events")) != (info["epoch"], info["rows"], info["events"]):
        raise ResumeError(f"run {run_id} cannot be resumed: its checkpoint.pt and checkpoint.json disagree "
                          "(one of them was replaced); start it again instead")
    return config, info
