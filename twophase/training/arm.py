"""One arm of a run: its strategy, switch rule, status, cost and records.

An arm starting with Adam rides the run's trunk (twophase/training/trunk.py) until its switch
rule fires; then it owns a branch (twophase/training/branch.py). CG-only owns a branch from
epoch 0. The arm's phase lives here and nowhere else: "adam" while it rides the trunk, its
strategy's full-batch phase once it has a branch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from twophase.optim import SwitchRule
from twophase.schema import Event, EventKind, Phase, Record, Status
from twophase.training.branch import Branch
from twophase.training.cost import Cost
from twophase.training.strategies import ArmSpec

__all__ = ["Arm", "DIVERGENCE_FACTOR"]

DIVERGENCE_FACTOR = 1000.0  # an arm whose training loss exceeds this x its initial loss has diverged


@dataclass
class Arm:
    """spec: what the arm is (its name is spec.name). rule: its SwitchRule (None: it never
    switches). reads: what the rule reads each Adam epoch, charged to the arm as the algorithm's
    cost (ArmSpec.reads): "grad-norm" one full pass with backward; "loss" one forward pass (1/3);
    "curvature" the Hessian probe's work on the epochs it runs; "trial" the CG trials (charged by
    the trainer). records_probe: the run monitors the Hessian (hess_min, hess_max in every record).

    epoch: the last epoch recorded. shared_epochs: epochs 1..shared_epochs were the trunk's.
    history: (epoch, data_passes, seconds, train_loss) per record, for the summary's ratios.
    """

    spec: ArmSpec
    rule: SwitchRule | None
    reads: str | None = None
    records_probe: bool = False
    phase: Phase = Phase.ADAM
    status: Status = Status.RUNNING
    epoch: int = 0
    cost: Cost = field(default_factory=Cost)
    grad_norm_max: float = 0.0
    initial_loss: float = math.nan
    probe_seconds: float = 0.0
    shared_epochs: int = 0
    branch: Branch | None = None
    last: Record | None = None
    history: list = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def running(self) -> bool:
        return self.status == Status.RUNNING

    # ------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict:
        """Everything the arm has counted and decided, as plain data (its branch is the trainer's)."""
        return {"name": self.name, "status": str(self.status), "phase": str(self.phase), "epoch": self.epoch,
                "cost": [self.cost.data_passes, self.cost.loss_evals, self.cost.seconds],
                "grad_norm_max": self.grad_norm_max, "initial_loss": self.initial_loss,
                "probe_seconds": self.probe_seconds, "shared_epochs": self.shared_epochs,
                "last": self.last.to_row() if self.last is not None else None,
                "history": [list(h) for h in self.history],
                "rule": self.rule.state_dict() if self.rule is not None else None}

    def load_state_dict(self, state: dict) -> None:
        if state["name"] != self.name:
            raise ValueError(f"checkpoint arm {state['name']!r} is not arm {self.name!r}")
        self.status, self.phase, self.epoch = Status(state["status"]), Phase(state["phase"]), int(state["epoch"])
        passes, evals, seconds = state["cost"]
        self.cost = Cost(float(passes), int(evals), float(seconds))
        self.grad_norm_max, self.initial_loss = float(state["grad_norm_max"]), float(state["initial_loss"])
        self.probe_seconds, self.shared_epochs = float(state["probe_seconds"]), int(state["shared_epochs"])
        self.last = Record.from_row(state["last"]) if state["last"] is not None else None
        self.history = [tuple(h) for h in state["history"]]
        if self.rule is not None:
            self.rule.load_state_dict(state["rule"])

    # ------------------------------------------------------------------ cost
    def charge(self, epoch, trunk: bool = False) -> None:
        """Charge one epoch of the trunk or its branch (an EpochCost) as if it had trained it alone."""
        self.cost.add(epoch)
        if trunk:
            self.shared_epochs += 1

    # --------------------------------------------------------------- records
    def record(self, phase: Phase, m, batch_norm_mean: float | None = None) -> Record:
        """This arm's record of the epoch just done, from the figures `m` (a Measurement)."""
        if phase == Phase.ADAM and self.reads == "grad-norm":  # the rule's full-set pass: the algorithm's cost
            self.cost.seconds += m.grad_seconds
            self.cost.data_passes += 1.0
        elif phase == Phase.ADAM and self.reads == "loss":  # a forward pass would do: 1/3 of the pass's time
            self.cost.seconds += m.grad_seconds / 3.0
            self.cost.data_passes += 1.0 / 3.0
        elif phase == Phase.ADAM and self.reads == "curvature" and self.rule.probe_due(self.epoch):
            self.cost.seconds += m.probe_seconds
            self.cost.data_passes += m.probe_passes
        if self.records_probe:
            self.probe_seconds += m.probe_seconds
        grad_norm = m.grad_norm
        if batch_norm_mean is not None and phase == Phase.ADAM:
            grad_norm = batch_norm_mean
        if phase == Phase.INIT:
            self.initial_loss = m.train_loss
        elif math.isfinite(grad_norm):
            self.grad_norm_max = max(self.grad_norm_max, grad_norm)
        record = Record(arm=self.name, epoch=self.epoch, phase=phase.value, train_loss=m.train_loss,
                        train_acc=m.train_acc, val_loss=m.val_loss, val_acc=m.val_acc, grad_norm=grad_norm,
                        grad_norm_max=grad_norm if phase == Phase.INIT else self.grad_norm_max,
                        data_passes=self.cost.data_passes, loss_evals=self.cost.loss_evals,
                        seconds=self.cost.seconds, hess_min=m.hess_min if self.records_probe else None,
                        hess_max=m.hess_max if self.records_probe else None)
        self.last = record
        self.history.append((record.epoch, record.data_passes, record.seconds, record.train_loss))
        return record

    def has_diverged(self, record: Record) -> bool:
        """Non-finite loss or gradient norm, or a training loss above DIVERGENCE_FACTOR x the
        initial one (Adam's bounded steps rarely overflow outright)."""
        if not (math.isfinite(record.train_loss) and math.isfinite(record.grad_norm)):
            return True
        return math.isfinite(self.initial_loss) and record.train_loss > DIVERGENCE_FACTOR * self.initial_loss

    def rule_fires(self, record: Record, curvature: float | None = None) -> list[Event]:
        """Feed the epoch to the switch rule (gradient norm, training loss, the probe's curvature
        on its epochs); the peak and switch events when it fires."""
        if self.rule is None or record.phase != Phase.ADAM:
            return []
        reads_curvature = self.reads == "curvature" and self.rule.probe_due(self.epoch)
        if not self.rule.update(record.grad_norm, loss=record.train_loss,
                                curvature=curvature if reads_curvature else None):
            return []
        return self.switch_events(record)

    def switch_events(self, record: Record) -> list[Event]:
        rule = self.rule
        threshold = rule.threshold if self.reads == "grad-norm" or (rule.signal == "grad-norm"
                                                                    and rule.fixed_switch_epoch is None) else None
        return [Event(self.name, EventKind.PEAK, rule.peak_epoch, rule.peak_value),
                Event(self.name, EventKind.SWITCH, self.epoch, record.grad_norm, threshold)]
