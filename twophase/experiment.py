"""A comparison run: several arms from the same initial weights, written to disk.

`run_experiment(config, runs_dir, run_id, ...)` validates the config, loads the
data, builds the initial model once, copies it into every arm, and advances the
arms epoch by epoch in turn (interleaved, so a live view shows them growing
together). Every record is appended to metrics.csv as it is made; events go to
events.jsonl; summary.json is rewritten atomically at the start, at every
switch and at the end. Whatever happens (completion, divergence of an arm, a
stop, an error), what was logged stays on disk and the summary says which.

Several processes (torchrun, see twophase/distributed.py): each calls
run_experiment with its `dist`; they share one run id, hold one shard of the
data each, agree on stops, and rank 0 alone writes the run folder.
"""

from __future__ import annotations

import math
import platform
import time
import traceback
from datetime import datetime, timezone
from typing import Callable

import torch

from twophase import data as data_mod
from twophase import distributed
from twophase import models as models_mod
from twophase import store
from twophase.config import RunConfig
from twophase.engine import Arm, StopRequested, apply_runtime_layout, make_loss
from twophase.errors import TwophaseError
from twophase.probe import sample_indices

DEFAULT_THREADS = torch.get_num_threads()  # torch's default for this process, read once at import
FINAL_STATUSES = ("completed", "stopped", "diverged", "failed", "interrupted")


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise TwophaseError("device: 'cuda' was asked for but no CUDA device is available; use 'auto' or 'cpu'")
    return name


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def arm_summary(arm: Arm, last: dict | None) -> dict:
    out = {"status": arm.status, "epochs": arm.epoch, "phase": arm.phase}
    if last is not None:
        for key in ("train_loss", "train_acc", "val_loss", "val_acc", "grad_norm", "data_passes",
                    "loss_evals", "seconds"):
            value = last.get(key)
            out[key] = value if isinstance(value, (int, float)) and math.isfinite(value) else None
    if arm.probe_seconds:
        out["probe_seconds"] = round(arm.probe_seconds, 3)
    if arm.rule is not None:
        out["switch_epoch"] = arm.rule.switch_epoch
        out["peak_epoch"] = arm.rule.peak_epoch if arm.rule.switched else None
        out["peak_grad_norm"] = arm.rule.peak_value if arm.rule.switched else None
        out["threshold"] = arm.rule.threshold if arm.rule.switched else None
    return out


def metric_columns(config: RunConfig) -> list[str]:
    """The metrics.csv columns of a run: the Hessian probe adds hess_min and hess_max."""
    return store.METRIC_COLUMNS + (store.OPTIONAL_COLUMNS if config.hessian_probe else [])


def overall_status(arm_statuses: list[str]) -> str:
    for status in ("failed", "stopped", "diverged"):
        if status in arm_statuses:
            return status
    return "completed"


def run_experiment(
    config: RunConfig,
    runs_dir: str | None = None,
    run_id: str | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    on_record: Callable[[dict], None] | None = None,
    on_event: Callable[[dict], None] | None = None,
    on_progress: Callable[[str, float], None] | None = None,
    on_status: Callable[[str], None] | None = None,
    writer: "store.RunWriter | None" = None,
    dist: "distributed.Dist | None" = None,
    full_pass_chunk: int | None = None,
) -> dict:
    """Train every arm of `config`, write the run, and return its summary dict.

    runs_dir, run_id: where to write (defaults: store.default_runs_dir(), a new id).
    should_stop: polled between mini-batches and CG iterations.
    on_record(record), on_event(event): called from this thread for every record / event.
    on_progress(arm, fraction): fraction of the arm's epochs done, 0..1.
    on_status(status): "running" when training starts (after data and model are ready).
    writer: an already created RunWriter (the JobManager makes one when the job is queued).
    dist: None (one process), or this process's twophase.distributed.Dist when the run is
        trained by several processes; every process calls run_experiment with the same config.
    """
    config.validate()
    runs_dir = runs_dir or store.default_runs_dir()
    if dist is not None:
        run_id = dist.broadcast_object(run_id or store.new_run_id())  # rank 0's id everywhere
        should_stop = dist.agreed_stop(should_stop)
        if not dist.is_main:
            writer = distributed.NullWriter(run_id)
    if writer is None:
        run_id = run_id or store.new_run_id()
        writer = store.RunWriter(runs_dir, run_id, config.to_dict(), columns=metric_columns(config),
                                 status="running")
    run_id = writer.run_id
    started = time.time()
    arms: list[Arm] = []
    last: dict[str, dict] = {}
    events: list[dict] = []
    error = None
    peer_lost = False

    def emit_event(event: dict):
        events.append(event)
        writer.event(event)
        if on_event is not None:
            on_event(event)

    def summary(status: str) -> dict:
        return {
            "status": status,
            "run_id": run_id,
            "model": config.model,
            "dataset": config.dataset,
            "arms": {arm.name: arm_summary(arm, last.get(arm.name)) for arm in arms},
            "events": events,
            "error": error,
            "started": datetime.fromtimestamp(started, timezone.utc).isoformat(timespec="seconds"),
            "ended": _now() if status in FINAL_STATUSES else None,
            "duration_s": round(time.time() - started, 3),
        }

    try:
        # threads 0 means torch's own default, restored even after a run that asked for fewer.
        torch.set_num_threads(config.threads or DEFAULT_THREADS)
        device = resolve_device(config.device) if dist is None else dist.device
        torch.manual_seed(config.seed)
        if dist is not None and dist.local_rank != 0:
            dist.barrier()  # the first process of each machine loads first: it may build the dataset cache
        data = data_mod.load(config.dataset, root=config.data_root or None, subset=config.subset,
                             val_subset=config.val_subset, seed=config.seed, device=device)
        if dist is not None and dist.local_rank == 0:
            dist.barrier()
        train_samples, val_samples = int(data.train_x.shape[0]), int(data.val_x.shape[0])
        probe_sample = None
        if dist is not None:
            if config.hessian_probe:  # the probe's fixed sample of the whole set, before sharding
                idx = sample_indices(train_samples, 512, config.seed).to(data.train_x.device)
                probe_sample = (data.train_x[idx], data.train_y[idx])
            data = distributed.shard_dataset(data, dist)
        initial = models_mod.build(config.model, data.input_shape, data.num_classes, seed=config.seed,
                                   **config.model_sizes).to(device)
        initial, data = apply_runtime_layout(config.model, initial, data, config.arms)
        loss_fn = make_loss(config.loss)
        arms = [Arm.create(name, initial, config, data, loss_fn, dist=dist, probe_sample=probe_sample)
                for name in config.arms]
        for arm in arms:
            arm.chunk = full_pass_chunk or arm.chunk
        extra = {"processes": dist.world, "backend": dist.backend} if dist is not None else {}
        writer.update_summary(status="running", device=device, arm_names=[a.name for a in arms],
                              parameters=models_mod.count_parameters(initial),
                              train_samples=train_samples, val_samples=val_samples,
                              torch_threads=torch.get_num_threads(), platform=platform.platform(), **extra)
        if on_status is not None:
            on_status("running")

        for arm in arms:
            record = arm.initial_record()
            last[arm.name] = record
            writer.append(record)
            if on_record is not None:
                on_record(record)

        for epoch in range(1, config.epochs + 1):
            active = [a for a in arms if a.status == "running"]
            if not active:
                break
            for arm in active:
                def on_batch(fraction, arm=arm, epoch=epoch):
                    if on_progress is not None:
                        on_progress(arm.name, (epoch - 1 + fraction) / config.epochs)
                try:
                    record = arm.run_epoch(should_stop, on_batch)
                except StopRequested:
                    for a in arms:
                        if a.status == "running":
                            a.status = "stopped"
                    raise
                last[arm.name] = record
                writer.append(record)
                if on_record is not None:
                    on_record(record)
                if arm.has_diverged(record):
                    arm.status = "diverged"
                    emit_event({"arm": arm.name, "kind": "diverged", "epoch": arm.epoch,
                                "value": record["train_loss"]})
                    continue
                switch_events = arm.end_of_epoch(record)
                for event in switch_events:
                    emit_event(event)
                if switch_events:
                    writer.update_summary(**summary("running"))
                if arm.epoch >= config.epochs:
                    arm.status = "completed"
            if on_progress is not None:
                for arm in arms:
                    on_progress(arm.name, arm.epoch / config.epochs)
        for arm in arms:
            if arm.status == "running":
                arm.status = "completed"
        status = overall_status([a.status for a in arms])
    except StopRequested:
        status = "stopped"
    except TwophaseError as exc:  # a user-facing problem (missing dataset, no CUDA ...)
        status, error = "failed", str(exc)
    except Exception as exc:  # a bug or a machine problem: keep the traceback in the summary
        status = "failed"
        error = f"{type(exc).__name__}: {exc}" if dist is None else distributed.describe_failure(exc, dist)
        peer_lost = dist is not None and distributed.is_collective_failure(exc)
        writer_trace = traceback.format_exc()
        try:
            writer.update_summary(traceback=writer_trace)
        except Exception:
            pass
    for arm in arms:
        if status == "failed" and arm.status == "running":
            arm.status = "failed"
    final = summary(status)
    if status == "failed" and dist is not None and not dist.is_main and peer_lost:
        # rank 0 may be the process that died: say so where its run folder is visible
        distributed.mark_ended(runs_dir, run_id, "failed", error, extra=final)
    try:
        writer.update_summary(**final)
    except Exception as exc:  # disk trouble at the very end: report it, don't hide it
        final["status"] = "failed"
        final["error"] = f"could not write summary.json: {exc}"
    if on_status is not None:
        on_status(final["status"])
    return final
