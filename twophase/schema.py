"""The names of everything a run records: statuses, phases, metrics columns, records, events.

This module is the one place where column and key names live. The engine makes `Record`s and
`Event`s; twophase/runs (the run folder), twophase/jobs, the CLI, twophase/plots.py and the pages
read them back by these names. A run folder written by an older version stays readable: readers
take what they know and ignore the rest (`Record.from_row`, `Event.from_dict`).

    Status   queued, running, completed, stopped, diverged, failed, interrupted
    Phase    init (epoch 0, before any update), adam, cg, lbfgs
    Record   one row of metrics.csv: one arm after one epoch
    Event    one line of events.jsonl: a peak, a switch, a divergence
    ArmSummary, RunSummary   summary.json: the run's status and each arm's last figures

Statuses and phases are `StrEnum`s: each member is its own text ("adam" == Phase.ADAM), so
plain strings read from a file compare equal to them and JSON writes them as text.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, fields
from enum import StrEnum
from typing import Any, Mapping

__all__ = [
    "Status", "Phase", "EventKind", "STATUSES", "ACTIVE_STATUSES", "FINAL_STATUSES", "PHASES",
    "METRIC_COLUMNS", "PROBE_COLUMNS", "STRING_COLUMNS", "KEY_COLUMNS", "metric_columns",
    "Record", "Event", "ArmSummary", "RunSummary", "ARM_SUMMARY_FIGURES", "finite_or_none",
]


class Status(StrEnum):
    """Where a run, or one arm of it, stands."""

    QUEUED = "queued"            # written, waiting for a training slot
    RUNNING = "running"
    COMPLETED = "completed"      # every epoch done
    STOPPED = "stopped"          # asked to stop (Stop, Ctrl-C)
    DIVERGED = "diverged"        # a non-finite or exploding loss ended the arm
    FAILED = "failed"            # an error ended it; the summary says which
    INTERRUPTED = "interrupted"  # its process died (a crash, a killed server)


STATUSES: tuple[str, ...] = tuple(s.value for s in Status)
#: Statuses of a run that still has an owner process working on it.
ACTIVE_STATUSES: frozenset[str] = frozenset({Status.QUEUED.value, Status.RUNNING.value})
#: Statuses after which nothing more is written.
FINAL_STATUSES: frozenset[str] = frozenset(STATUSES) - ACTIVE_STATUSES


class Phase(StrEnum):
    """What produced an epoch's record."""

    INIT = "init"    # epoch 0: the untrained model, the same for every arm
    ADAM = "adam"    # mini-batch Adam
    CG = "cg"        # nonlinear conjugate gradient over the whole training set
    LBFGS = "lbfgs"  # torch.optim.LBFGS over the whole training set


PHASES: tuple[str, ...] = tuple(p.value for p in Phase)


class EventKind(StrEnum):
    PEAK = "peak"          # the largest gradient norm the rule saw before it fired
    SWITCH = "switch"      # the arm left Adam for its second phase after this epoch
    DIVERGED = "diverged"  # the arm's loss became non-finite or exploded
    TRIAL = "trial"        # a CG trial of the "trial" switch rule (value: its rate over Adam's; kept or not)


#: Columns of metrics.csv, in order.
METRIC_COLUMNS: list[str] = ["arm", "epoch", "phase", "train_loss", "train_acc", "val_loss", "val_acc",
                             "grad_norm", "grad_norm_max", "data_passes", "loss_evals", "seconds"]
#: Columns a run with the Hessian probe adds (extreme eigenvalues of the Hessian).
PROBE_COLUMNS: list[str] = ["hess_min", "hess_max"]
#: Columns that hold text; every other column is a number.
STRING_COLUMNS: frozenset[str] = frozenset({"arm", "phase"})
#: Columns that place a row (which arm, which epoch); a row without them is left out on reading.
KEY_COLUMNS: tuple[str, ...] = ("arm", "epoch")


def metric_columns(hessian_probe: bool) -> list[str]:
    """The metrics.csv columns of a run (with the probe's two when it is on)."""
    return METRIC_COLUMNS + (PROBE_COLUMNS if hessian_probe else [])


def finite_or_none(value: Any) -> float | int | None:
    """`value` when it is a finite number (bools excluded), else None."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass
class Record:
    """One row of metrics.csv: arm `arm` after epoch `epoch`.

    train_loss, train_acc: over the whole training set at the end of the epoch.
    val_loss, val_acc: over the validation set. grad_norm: the epoch-wise gradient norm (the
    full-set gradient, or the mean of the mini-batch norms with grad_norm_mode "batch-mean").
    grad_norm_max: its running maximum over the arm's epochs 1..epoch (epoch 0: its own value).
    data_passes, loss_evals, seconds: the arm's cumulative cost (twophase/training/cost.py).
    hess_min, hess_max: extreme Hessian eigenvalues, when the probe is on.
    """

    arm: str
    epoch: int
    phase: str
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    grad_norm: float
    grad_norm_max: float
    data_passes: float
    loss_evals: int
    seconds: float
    hess_min: float | None = None
    hess_max: float | None = None

    def to_row(self) -> dict:
        """The record as plain values (text, int, float, None), probe columns only when set."""
        row = asdict(self)
        row["phase"] = str(self.phase)
        if self.hess_min is None and self.hess_max is None:
            del row["hess_min"], row["hess_max"]
        return row

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "Record":
        """A Record from a dict of columns (a metrics.csv row as numbers or as text, a worker's
        message); unknown keys are ignored, missing or unreadable numbers are NaN (-1 for the
        whole-number columns)."""
        values = {}
        for f in fields(cls):
            value = row.get(f.name)
            if isinstance(value, str) and f.name not in STRING_COLUMNS:  # csv.DictReader's text
                try:
                    value = float(value) if value.strip() else None
                except ValueError:
                    value = None
                if isinstance(value, float) and value.is_integer() and f.name in ("epoch", "loss_evals"):
                    value = int(value)
            if f.name in STRING_COLUMNS:
                values[f.name] = "" if value is None else str(value)
            elif f.name in ("epoch", "loss_evals"):
                values[f.name] = int(value) if finite_or_none(value) is not None else -1
            elif f.name in PROBE_COLUMNS:
                values[f.name] = finite_or_none(value)
            else:
                number = finite_or_none(value)
                values[f.name] = math.nan if number is None else float(number)
        return cls(**values)


@dataclass
class Event:
    """One line of events.jsonl. value: the gradient norm (peak, switch) or the training loss
    (diverged) at `epoch`; threshold: the rule's threshold when it fired (switch only)."""

    arm: str
    kind: str
    epoch: int
    value: float | None = None
    threshold: float | None = None
    kept: bool | None = None  # trial events: whether the trial's branch was kept

    def to_dict(self) -> dict:
        out = {"arm": self.arm, "kind": str(self.kind), "epoch": self.epoch, "value": self.value}
        if self.threshold is not None or self.kind == EventKind.SWITCH:
            out["threshold"] = self.threshold
        if self.kept is not None:
            out["kept"] = self.kept
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Event":
        epoch = finite_or_none(d.get("epoch"))
        return cls(arm=str(d.get("arm", "")), kind=str(d.get("kind", "")),
                   epoch=int(epoch) if epoch is not None else -1,
                   value=finite_or_none(d.get("value")), threshold=finite_or_none(d.get("threshold")),
                   kept=d.get("kept") if isinstance(d.get("kept"), bool) else None)


#: The figures of an arm's last record that its summary repeats (summary.json "arms").
ARM_SUMMARY_FIGURES: tuple[str, ...] = ("train_loss", "train_acc", "val_loss", "val_acc", "grad_norm",
                                        "data_passes", "loss_evals", "seconds")


@dataclass
class ArmSummary:
    """One arm in summary.json's "arms": its status and last figures.

    epochs: the last epoch recorded. phase: the phase of that epoch (metrics.csv's last row). label: its name in legends.
    figures: ARM_SUMMARY_FIGURES of its last record (None where not finite).
    switch: for an arm with a switch rule, switch_epoch, peak_epoch, peak_grad_norm, threshold
        (the last three None until it switched). shared_epochs: epochs 1..shared_epochs were the
        Adam trunk's (computed once for every arm riding it). vs_adam: its training loss over
        Adam's at equal epochs, data passes and wall time (twophase/analysis.py).
    """

    status: str
    epochs: int
    phase: str
    label: str = ""
    figures: dict | None = None
    switch: dict | None = None
    shared_epochs: int | None = None
    probe_seconds: float | None = None
    vs_adam: dict | None = None

    def to_dict(self) -> dict:
        out = {"status": str(self.status), "epochs": self.epochs, "phase": str(self.phase)}
        for key in ARM_SUMMARY_FIGURES if self.figures is not None else ():
            out[key] = finite_or_none(self.figures.get(key))
        if self.probe_seconds:
            out["probe_seconds"] = round(self.probe_seconds, 3)
        if self.switch is not None:
            out.update(self.switch)
        out["label"] = self.label
        if self.shared_epochs is not None:
            out["shared_epochs"] = self.shared_epochs
        if self.vs_adam:
            out["vs_adam"] = self.vs_adam
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ArmSummary":
        """An ArmSummary from summary.json's entry for one arm (an older or damaged file: missing
        or mistyped values become None or defaults, unknown keys are ignored)."""
        d = d if isinstance(d, Mapping) else {}
        epochs = finite_or_none(d.get("epochs"))
        figures = {k: finite_or_none(d.get(k)) for k in ARM_SUMMARY_FIGURES} if any(
            k in d for k in ARM_SUMMARY_FIGURES) else None
        switch = {k: d.get(k) for k in SWITCH_KEYS if k in d} or None
        shared = finite_or_none(d.get("shared_epochs"))
        return cls(status=str(d.get("status", "")), epochs=int(epochs) if epochs is not None else 0,
                   phase=str(d.get("phase", "")), label=d.get("label") if isinstance(d.get("label"), str) else "",
                   figures=figures, switch=switch, shared_epochs=int(shared) if shared is not None else None,
                   probe_seconds=finite_or_none(d.get("probe_seconds")),
                   vs_adam=d.get("vs_adam") if isinstance(d.get("vs_adam"), dict) else None)


#: An arm's switch keys in summary.json (arms with a switch rule).
SWITCH_KEYS: tuple[str, ...] = ("switch_epoch", "peak_epoch", "peak_grad_norm", "threshold", "signal", "reads",
                                "trials")


@dataclass
class RunSummary:
    """summary.json: where a run stands and each arm's last figures.

    status: a Status. arms: arm name -> ArmSummary. events: every Event so far (as dicts).
    error: why it failed or stopped early (None when it did not). started, ended: UTC, ISO.
    extra: everything else the file holds (the owner's pid, versions, the device, parameters,
    threads_choice ...), kept as read so that a rewrite loses nothing.
    """

    status: str
    run_id: str = ""
    model: str = ""
    dataset: str = ""
    device: str | None = None
    arms: dict[str, ArmSummary] | None = None
    events: list[dict] | None = None
    error: str | None = None
    started: str | None = None
    ended: str | None = None
    duration_s: float | None = None
    extra: dict | None = None

    KNOWN = ("status", "run_id", "model", "dataset", "device", "arms", "events", "error", "started", "ended",
             "duration_s")

    def to_dict(self) -> dict:
        out = dict(self.extra or {})
        out.update(status=str(self.status), run_id=self.run_id, model=self.model, dataset=self.dataset,
                   device=self.device, arms={name: a.to_dict() for name, a in (self.arms or {}).items()},
                   events=list(self.events or []), error=self.error, started=self.started, ended=self.ended,
                   duration_s=self.duration_s)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "RunSummary":
        """A RunSummary from summary.json as read (an older or damaged file: what cannot be read
        becomes a default; an unknown status stays as written, see twophase/runs/reader.py)."""
        d = d if isinstance(d, Mapping) else {}
        arms = d.get("arms") if isinstance(d.get("arms"), Mapping) else {}
        events = d.get("events") if isinstance(d.get("events"), list) else []

        def text(key):
            v = d.get(key)
            return v if isinstance(v, str) else None

        return cls(status=str(d.get("status", "unknown")), run_id=text("run_id") or "", model=text("model") or "",
                   dataset=text("dataset") or "", device=text("device"),
                   arms={str(k): ArmSummary.from_dict(v) for k, v in arms.items() if isinstance(v, Mapping)},
                   events=[e for e in events if isinstance(e, dict)], error=text("error"), started=text("started"),
                   ended=text("ended"), duration_s=finite_or_none(d.get("duration_s")),
                   extra={k: v for k, v in d.items() if k not in cls.KNOWN})
