"""A branch: an arm's own model after its switch, trained by its full-batch optimizer (CG, L-BFGS).

A branch starts from a copy of the trunk's model at the end of the switch epoch (or of the
initial model, for CG from the start) and runs `strategy.steps_per_epoch(config)` optimizer
steps per epoch on the whole training set. With precision "float64" the copy and the data are
promoted to float64 once, at the switch: the trunk stays float32, the branch's loss is evaluated
in double precision (float32 CG stalls where float64 CG goes on; DESIGN notes, twophase/optim/cg.py).
"""

from __future__ import annotations

import copy
import time

import torch

from twophase.distributed import no_tf32
from twophase.training.full_pass import make_closure, measure, trainable
from twophase.training.trunk import StopRequested

__all__ = ["Branch"]


class Branch:
    """model: the branch's own copy (made here). strategy: a twophase.training.strategies.Strategy.
    cost: the arm's Cost (every closure evaluation is charged to it)."""

    def __init__(self, model: torch.nn.Module, strategy, config, setup, cost, precision: str | None = None):
        self.strategy, self.config, self.setup, self.cost = strategy, config, setup, cost
        self.dtype = torch.float64 if precision == "float64" else None
        self.model = copy.deepcopy(model)
        if self.dtype is not None:
            self.model = self.model.to(self.dtype)
        self.data = setup.data_as(self.dtype)
        self.optimizer = strategy.make_optimizer(trainable(self.model), config)
        self.phase = strategy.full_batch
        self.last_pass = None  # the closure's last evaluation with backward (reused by the record)
        self.last_status = ""  # the optimizer's last step status (NonlinearCG's StepInfo)

    def train_epoch(self, should_stop, on_batch=None) -> None:
        """One epoch of the full-batch phase; charges the arm's Cost. Raises StopRequested."""
        start = time.perf_counter()
        self.last_pass = None
        closure = make_closure(self.model, self.setup.loss_fn, self.data.train_x, self.data.train_y, self.cost,
                               chunk=self.setup.chunk, dist=self.setup.dist)
        steps = self.strategy.steps_per_epoch(self.config)
        try:
            for i in range(steps):
                if should_stop():
                    raise StopRequested
                with no_tf32():  # TF32 rounding breaks line searches (no effect on CPU)
                    self.optimizer.step(closure)
                self.last_pass = getattr(closure, "last", None)  # a wrapped closure has none
                info = getattr(self.optimizer, "last_step", None)
                self.last_status = getattr(info, "status", "") if info is not None else ""
                if on_batch is not None:
                    on_batch((i + 1) / steps)
        finally:
            self.cost.seconds += time.perf_counter() - start

    def measure(self):
        """The record figures of the branch's model (reusing the last closure evaluation when the
        parameters are still exactly that point)."""
        last, self.last_pass = self.last_pass, None
        return measure(self.model, self.setup.loss_fn, self.data, chunk=self.setup.chunk, dist=self.setup.dist,
                       probe=self.setup.probe_for(self.dtype), last=last)
