"""A branch: the model of the arms that switched at one epoch, trained by their full-batch optimizer.

A branch starts from a copy of the trunk's model at the end of the switch epoch (or of the
initial model, for CG from the start) and runs `strategy.steps_per_epoch(config)` optimizer
steps per epoch on the whole training set. Arms of the same strategy and precision that switch
at the same epoch ride one branch (their records after the switch are the same; each is charged
the branch's epochs as if it had trained them alone). With precision "float64" the copy and the
data are promoted to float64 once, at the switch: the trunk stays float32 and the branch's loss
is evaluated in double precision (float32 CG stalls where float64 CG goes on: README, "When does
switching pay off?").
"""

from __future__ import annotations

import copy
import time

import torch

from twophase.distributed import no_tf32
from twophase.training.cost import EpochCost
from twophase.training.full_pass import make_closure, measure, trainable
from twophase.training.trunk import StopRequested, _copied

__all__ = ["Branch"]


class Branch:
    """model: the model to start from (copied here; `source` keeps which one). strategy: a
    twophase.training.strategies.Strategy. epoch: the epoch the branch started at (its riders'
    switch epoch). trial: a CG trial of one arm's "trial" rule (never shared). riders: the arms on it."""

    def __init__(self, model: torch.nn.Module, strategy, config, setup, precision: str | None = None,
                 epoch: int = 0, trial: bool = False):
        self.strategy, self.config, self.setup, self.precision, self.start_epoch = \
            strategy, config, setup, precision, epoch
        self.source, self.trial = model, trial
        self.dtype = torch.float64 if precision == "float64" else None
        self.model = copy.deepcopy(model)
        if self.dtype is not None:
            self.model = self.model.to(self.dtype)
        self.data = setup.data_as(self.dtype)
        self.optimizer = strategy.make_optimizer(trainable(self.model), config)
        self.phase = strategy.full_batch
        self.riders: list = []  # the arms (twophase.training.arm.Arm) on this branch
        self.last_pass = None  # the closure's last evaluation with backward (reused by the record)
        self.last_status = ""  # the optimizer's last step status (NonlinearCG's StepInfo)

    def train_epoch(self, should_stop, on_step=None) -> EpochCost:
        """One epoch of the full-batch phase; returns its cost. Raises StopRequested."""
        start = time.perf_counter()
        spent = EpochCost()
        self.last_pass = None
        closure = make_closure(self.model, self.setup.loss_fn, self.data.train_x, self.data.train_y, spent,
                               chunk=self.setup.chunk, dist=self.setup.dist)
        steps = self.strategy.steps_per_epoch(self.config)
        for i in range(steps):
            if should_stop():
                raise StopRequested
            with no_tf32():  # TF32 rounding breaks line searches (no effect on CPU)
                self.optimizer.step(closure)
            self.last_pass = getattr(closure, "last", None)  # a wrapped closure has none
            info = getattr(self.optimizer, "last_step", None)
            self.last_status = getattr(info, "status", "") if info is not None else ""
            if on_step is not None:
                on_step((i + 1) / steps)
        spent.seconds = time.perf_counter() - start
        return spent

    def state_dict(self) -> dict:
        """The model and the optimizer's state as copies, and what the branch is (a checkpoint)."""
        return {"strategy": self.strategy.name, "precision": self.precision, "start_epoch": self.start_epoch,
                "trial": self.trial, "model": _copied(self.model.state_dict()),
                "optimizer": copy.deepcopy(self.optimizer.state_dict())}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])

    def measure(self, probe: bool = False):
        """The record figures of the branch's model (reusing the last closure evaluation when the
        parameters are still exactly that point); probe: with the monitoring Hessian probe."""
        last, self.last_pass = self.last_pass, None
        return measure(self.model, self.setup.loss_fn, self.data, chunk=self.setup.chunk, dist=self.setup.dist,
                       probe=self.setup.probe_for(self.dtype) if probe else None, last=last)
