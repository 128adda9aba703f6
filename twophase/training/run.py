"""A comparison run: one Adam trunk, branches where the arms switch, every record written to disk.

    run_experiment(config, runs_dir, run_id, ...) -> the summary (a dict, as in summary.json)

Each epoch the trunk trains once and every arm riding it gets its record; an arm whose switch
rule fires leaves with a copy of the trunk's model; then every branch trains its epoch. Every
record is appended to metrics.csv as it is made, events to events.jsonl, and summary.json is
rewritten atomically at the start, at every switch and at the end. Whatever happens (completion,
an arm diverging, a stop, an error), what was logged stays on disk and the summary says which.

Several processes (torchrun, twophase/distributed.py): each calls run_experiment with its
`dist`; they share one run id, hold one shard of the data each, take every decision on the same
all-reduced numbers (so every rank branches at the same epoch), and rank 0 alone writes.
"""

from __future__ import annotations

import logging
import platform
import time
import traceback
from datetime import datetime, timezone
from typing import Callable

import torch

from twophase import distributed
from twophase import models as models_mod
from twophase import runs
from twophase.analysis import ratios_to_baseline
from twophase.config import RunConfig
from twophase.errors import TwophaseError
from twophase.schema import FINAL_STATUSES, ArmSummary, Event, Phase, Record, RunSummary, Status, metric_columns
from twophase.training.arm import Arm
from twophase.training.checkpoint import RESUMABLE, Checkpointer, ResumeError, load_state
from twophase.training.setup import prepare
from twophase.training.strategies import arm_label
from twophase.training.trainer import Trainer, overall_status
from twophase.training.trunk import StopRequested

__all__ = ["run_experiment", "arm_summaries"]

logger = logging.getLogger(__name__)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class RunLog:
    """Where a run's records, events and summary go: the run folder and the caller's callbacks."""

    def __init__(self, config: RunConfig, writer, on_record=None, on_event=None, on_status=None):
        self.config, self.writer = config, writer
        self.on_record, self.on_event, self.on_status = on_record, on_event, on_status
        self.events: list[dict] = []
        self.rows = 0  # metrics rows written (a checkpoint keeps the count; a resume rewinds to it)
        self.started = time.time()
        self.first_started: str | None = None  # a resumed run's first start
        self.earlier_s = 0.0  # a resumed run's duration before this start
        self.error: str | None = None
        self.arms: list[Arm] = []  # the trainer's, once it exists
        self.device: str | None = None

    def record(self, record: Record) -> None:
        row = record.to_row()
        self.writer.append(row)
        self.rows += 1
        if self.on_record is not None:
            self.on_record(row)

    def event(self, event: Event) -> None:
        d = event.to_dict()
        self.events.append(d)
        self.writer.event(d)
        if self.on_event is not None:
            self.on_event(d)

    def switched(self) -> None:
        """An arm left the trunk: its switch goes into summary.json at once."""
        self.writer.update_summary(**self.summary(Status.RUNNING))

    def status(self, status: str) -> None:
        if self.on_status is not None:
            self.on_status(status)

    def summary(self, status: str) -> dict:
        return RunSummary(
            status=str(status), run_id=self.writer.run_id, model=self.config.model, dataset=self.config.dataset,
            device=self.device, arms=arm_summaries(self.arms), events=list(self.events), error=self.error,
            started=self.first_started or datetime.fromtimestamp(self.started, timezone.utc).isoformat(timespec="seconds"),
            ended=_now() if status in FINAL_STATUSES else None,
            duration_s=round(self.earlier_s + time.time() - self.started, 3)).to_dict()


def continue_from_checkpoint(trainer: Trainer, log: RunLog, writer, state: dict, earlier: dict) -> int:
    """Load a checkpoint's `state` into `trainer`, rewind the run's files to it; returns its epoch.
    earlier: the run's summary before this start."""
    try:
        trainer.load_state_dict(state["trainer"])
        torch.set_rng_state(state["rng"])
        log.events = writer.rewind(state["rows"], state["events"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:  # a checkpoint that does not fit this run
        raise ResumeError(f"the checkpoint does not fit run {writer.run_id} ({type(exc).__name__}: {exc}); "
                          "its files are as they were") from None
    log.rows = state["rows"]
    log.first_started = earlier.get("started") if isinstance(earlier.get("started"), str) else None
    duration = earlier.get("duration_s")
    log.earlier_s = float(duration) if isinstance(duration, (int, float)) and duration >= 0 else 0.0
    resumed = earlier.get("resumed") if isinstance(earlier.get("resumed"), list) else []
    writer.update_summary(status="running", error=None, ended=None,
                          resumed=resumed + [{"epoch": state["epoch"], "at": _now(), "was": earlier.get("status")}])
    return int(state["epoch"])


def arm_summaries(arms: list[Arm]) -> dict[str, ArmSummary]:
    """summary.json's "arms": each arm's status, last figures, switch and ratios to Adam."""
    adam = next((a for a in arms if a.name == "adam"), None)
    out = {}
    for arm in arms:
        rule = arm.rule
        switch = None
        if rule is not None:
            fired = rule.switched
            switch = {"switch_epoch": rule.switch_epoch, "peak_epoch": rule.peak_epoch if fired else None,
                      "peak_grad_norm": rule.peak_value if fired else None,
                      "threshold": rule.threshold if fired else None}
            if rule.signal != "grad-norm":
                switch.update(signal=rule.signal, reads=arm.reads)
            if rule.signal == "trial":
                switch["trials"] = rule.trials
        vs_adam = None
        if adam is not None and arm is not adam and arm.history and adam.history:
            keys = ("epoch", "data_passes", "seconds", "train_loss")
            vs_adam = ratios_to_baseline([dict(zip(keys, h)) for h in arm.history],
                                         [dict(zip(keys, h)) for h in adam.history])
        out[arm.name] = ArmSummary(
            # the phase of its last recorded epoch, as in metrics.csv: an arm whose rule fired at its
            # last epoch trained that epoch with Adam (arm.phase, already "cg", is what a resume runs next)
            status=arm.status, epochs=arm.epoch, phase=arm.last.phase if arm.last is not None else arm.phase,
            label=arm_label(arm.name, rule.switch_epoch if rule is not None else None),
            figures=arm.last.to_row() if arm.last is not None else None, switch=switch,
            shared_epochs=arm.shared_epochs if arm.spec.kind.first == Phase.ADAM else 0,
            probe_seconds=arm.probe_seconds, vs_adam=vs_adam)
    return out


def run_experiment(
    config: RunConfig,
    runs_dir: str | None = None,
    run_id: str | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    on_record: Callable[[dict], None] | None = None,
    on_event: Callable[[dict], None] | None = None,
    on_progress: Callable[[str, float], None] | None = None,
    on_status: Callable[[str], None] | None = None,
    writer: "runs.RunWriter | None" = None,
    dist: "distributed.Dist | None" = None,
    full_pass_chunk: int | None = None,
    share_trunk: bool = True,
    for_app: bool = False,
    resume: bool = False,
) -> dict:
    """Train every arm of `config`, write the run, and return its summary dict.

    runs_dir, run_id: where to write (defaults: runs.default_runs_dir(), a new id).
    should_stop: polled between mini-batches and CG iterations.
    on_record(row), on_event(event): called from this thread for every record / event (dicts).
    on_progress(arm, fraction): fraction of the arm's epochs done, 0..1.
    on_status(status): "running" when training starts (after data and model are ready), then the final status.
    writer: an already created RunWriter (the JobManager makes one when the job is queued).
    dist: None (one process), or this process's Dist when several processes train the run.
    full_pass_chunk: the chunk size of full-set passes instead of the model's (summation order only).
    share_trunk: False gives every arm its own Adam trunk (same records, the Adam prefix
        computed once per arm; for benchmarks and the equivalence tests).
    for_app: the run trains for the app (its threads "auto" leave a core for the page).
    resume: continue run `run_id` from its checkpoint (twophase/training/checkpoint.py:
        resume_config checks first that it can be); its files are rewound to the checkpoint.
    """
    config.validate()
    runs_dir = runs_dir or runs.default_runs_dir()
    if dist is not None:
        should_stop = dist.agreed_stop(should_stop)
    writer = open_writer(config, runs_dir, run_id, writer, dist, resume)
    log = RunLog(config, writer, on_record, on_event, on_status)
    trainer = checkpoints = state = None
    aborted = False
    if resume:
        before = writer.summary  # the stopped, interrupted or failed run's summary
        try:
            state = load_state(writer.path)
        except ResumeError as exc:  # its files are untouched; say why in the summary
            final = writer.update_summary(status=Status.FAILED.value, error=f"cannot resume: {exc}")
            log.status(final["status"])
            return final

    def progress(arm: Arm, epochs_done: float) -> None:
        if on_progress is not None:
            on_progress(arm.name, epochs_done / config.epochs)

    try:
        setup = prepare(config, dist, full_pass_chunk, for_app=for_app)
        trainer = Trainer(config, setup, log, share_trunk)
        log.arms, log.device = trainer.arms, setup.device
        describe_setup(writer, trainer, setup, share_trunk, dist)
        checkpoints = Checkpointer(trainer, log, writer.path if dist is None else None, config.checkpoint_every)
        first = continue_from_checkpoint(trainer, log, writer, state, before) + 1 if resume else 1
        log.status("running")
        if not resume:
            trainer.start()
            checkpoints.epoch_done(0)
        for epoch in range(first, config.epochs + 1):
            if not trainer.running:
                break
            trainer.train_epoch(epoch, should_stop, progress)
            checkpoints.epoch_done(epoch)
            for arm in trainer.arms:
                progress(arm, arm.epoch)
        trainer.end(Status.COMPLETED)
        status = overall_status([a.status for a in trainer.arms])
    except StopRequested:
        status = Status.STOPPED.value
    except KeyboardInterrupt:  # a second Ctrl-C: stop now, write the end, then let the caller exit
        status, log.error = Status.STOPPED.value, "aborted (a second Ctrl-C) during an epoch; every epoch before it is kept"
        aborted = True
    except TwophaseError as exc:  # a user-facing problem (missing dataset, no CUDA ...)
        status, log.error = Status.FAILED.value, str(exc)
    except Exception as exc:  # a bug or a machine problem: keep the traceback in the summary
        status = Status.FAILED.value
        record_failure(exc, log, writer, trainer, dist, runs_dir)
    if trainer is not None:
        trainer.end(status)
    final = write_end(log, writer, checkpoints, status)
    if aborted:
        raise KeyboardInterrupt
    return final


def open_writer(config: RunConfig, runs_dir: str, run_id: str | None, writer, dist, resume: bool):
    """The run's writer: the one given, a new run folder, the existing one to resume (attached), or a
    NullWriter on ranks other than 0 of a multi-process run (rank 0's run id everywhere)."""
    if dist is not None:
        run_id = dist.broadcast_object(run_id or runs.new_run_id())
        if not dist.is_main:
            return distributed.NullWriter(run_id)
    if resume and (dist is not None or not run_id and writer is None):
        raise ValueError("resume needs the run_id of a one-process run")
    if writer is not None:
        return writer
    if resume:
        return runs.RunWriter.attach(runs_dir, run_id)
    return runs.RunWriter(runs_dir, run_id or runs.new_run_id(), config.to_dict(),
                          columns=metric_columns(config.hessian_probe), status="running")


def describe_setup(writer, trainer: Trainer, setup, share_trunk: bool, dist) -> None:
    """Write what the run trains on into its summary, as training starts."""
    writer.update_summary(
        status="running", device=setup.device, arm_names=[a.name for a in trainer.arms],
        parameters=models_mod.count_parameters(setup.initial), train_samples=setup.train_samples,
        val_samples=setup.val_samples, torch_threads=torch.get_num_threads(), threads_choice=setup.threads_choice,
        platform=platform.platform(),
        shared_trunk=share_trunk, **({"processes": dist.world, "backend": dist.backend} if dist else {}))


def record_failure(exc: Exception, log: RunLog, writer, trainer, dist, runs_dir: str) -> None:
    """A bug or a machine problem ended the run: its reason in log.error, the traceback in the summary."""
    status = Status.FAILED.value
    log.error = f"{type(exc).__name__}: {exc}" if dist is None else distributed.describe_failure(exc, dist)
    if dist is not None and not dist.is_main and distributed.is_collective_failure(exc):
        # rank 0 may be the process that died: say so where its run folder is visible
        if trainer is not None:
            trainer.end(status)
        runs.mark_ended(runs_dir, writer.run_id, "failed", log.error, extra=log.summary(status))
    try:
        writer.update_summary(traceback=traceback.format_exc())
    except Exception as write_error:  # the disk may be the problem; the error itself is reported below
        logger.warning("run %s: could not save the traceback in summary.json: %s", writer.run_id, write_error)


def write_end(log: RunLog, writer, checkpoints: Checkpointer | None, status: str) -> dict:
    """The checkpoint kept (stopped, failed) or removed (completed, diverged), then the final summary
    written; returns it (status failed when summary.json could not be written)."""
    if checkpoints is not None:
        try:
            if status in RESUMABLE:
                checkpoints.save()  # the last whole epoch, to resume from
            else:
                checkpoints.discard()  # completed or diverged: nothing left to train
        except Exception as exc:  # disk trouble: the run's records are kept; say it cannot resume
            logger.warning("run %s: could not write its checkpoint: %s", writer.run_id, exc)
            log.error = (log.error + "; " if log.error else "") + f"its checkpoint could not be written ({exc})"
    final = log.summary(status)
    try:
        final = writer.update_summary(**final)  # with what it holds besides (owner, device, resumed ...)
    except Exception as exc:  # disk trouble at the very end: report it, don't hide it
        final["status"] = Status.FAILED.value
        final["error"] = f"could not write summary.json: {exc}"
    log.status(final["status"])
    return final
