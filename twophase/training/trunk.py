"""The Adam trunk: one mini-batch Adam run shared by every arm that starts with Adam.

The two-phase arm, the Adam-only arm and Adam->L-BFGS all train the same model from the same
weights with the same batch order until their switch: the trunk computes that once. The arms
riding it (its riders) each get its records, charged as if they had trained it alone; an arm
whose switch rule fires leaves with a copy of the trunk's model (twophase/training/branch.py).
The Adam-only arm is the trunk itself. With sharing off, each arm gets a trunk of its own.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import torch

from twophase.training.cost import EpochCost

__all__ = ["Trunk", "TrunkEpoch", "StopRequested"]


class StopRequested(Exception):
    """Raised between mini-batches or CG iterations when the run's stop flag is set."""


@dataclass
class TrunkEpoch(EpochCost):
    """One Adam epoch's cost (each mini-batch's share of the training set, in order) and
    batch_norm_mean: with grad_norm_mode "batch-mean", the mean of the mini-batch gradient norms
    (NaN when the last mini-batch's loss was not finite); None otherwise."""

    batch_norm_mean: float | None = None


class Trunk:
    """Adam on its own copy of the initial model (config: the RunConfig; setup: a RunSetup)."""

    def __init__(self, initial: torch.nn.Module, config, setup):
        self.config, self.setup = config, setup
        self.model = copy.deepcopy(initial)
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(int(config.seed) + 1)  # the batch order of every Adam phase
        self.optimizer = torch.optim.Adam(list(self.model.parameters()), lr=config.lr,
                                          betas=(config.beta1, config.beta2), eps=config.eps,
                                          weight_decay=config.weight_decay)
        dist = setup.dist
        self.ddp = dist.wrap(self.model) if dist is not None else None  # a collective: same order everywhere
        self.epoch = 0
        self.riders: list = []  # the arms (twophase.training.arm.Arm) on the trunk now

    def train_epoch(self, should_stop, on_step=None) -> TrunkEpoch:
        """One epoch of mini-batch Adam in the seeded batch order. Raises StopRequested."""
        config, data, dist = self.config, self.setup.data, self.setup.dist
        start = time.perf_counter()
        x, y = data.train_x, data.train_y
        n, bs = x.shape[0], config.batch_size
        if dist is not None:
            n = dist.sum_int(n)  # the permutation is over the whole training set
        order = torch.randperm(n, generator=self.generator).to(x.device)
        num_batches = math.ceil(n / bs)
        out = TrunkEpoch()
        norms = []
        track_norms = config.grad_norm_mode == "batch-mean"
        params = [p for p in self.model.parameters() if p.requires_grad]
        loss_fn = self.setup.loss_fn
        for i in range(num_batches):
            if should_stop():
                raise StopRequested
            idx = order[i * bs:(i + 1) * bs]
            self.optimizer.zero_grad(set_to_none=True)
            if dist is None:
                loss = loss_fn(self.model(x[idx]), y[idx])
            else:  # this process's share; DDP averages the gradients in backward()
                loss = dist.batch_loss(self.ddp, loss_fn, x, y, idx)
            loss.backward()
            if track_norms:
                grads = [p.grad for p in params if p.grad is not None]
                norms.append(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))))
            self.optimizer.step()
            out.charge(idx.shape[0] / n)
            if on_step is not None:
                on_step((i + 1) / num_batches)
        if dist is not None:  # the last mini-batch's loss over all processes
            loss = dist.sum_(loss.detach().clone())
        if not torch.isfinite(loss.detach()):
            out.batch_norm_mean = float("nan") if track_norms else None
        elif norms:
            out.batch_norm_mean = float(torch.stack(norms).mean())
        self.epoch += 1
        out.seconds = time.perf_counter() - start
        return out

    def state_dict(self) -> dict:
        """The model, Adam's state, the batch-order generator and the epoch, as copies (a
        checkpoint, twophase/training/checkpoint.py)."""
        return {"model": _copied(self.model.state_dict()), "optimizer": copy.deepcopy(self.optimizer.state_dict()),
                "generator": self.generator.get_state(), "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.epoch = int(state["epoch"])


def _copied(state: dict) -> dict:
    """A module's state_dict with every tensor copied (a later step does not change it)."""
    return {k: v.detach().clone() if isinstance(v, torch.Tensor) else copy.deepcopy(v) for k, v in state.items()}
