"""Passes over a whole dataset: the one loop behind the CG closure, the records and the gradient norm.

`full_pass` evaluates the mean loss (and the number of correct rows) over all of (x, y), in
chunks that bound memory, optionally with the gradient of that mean loss left in the
parameters' .grad. Everything else here is built on it:

    make_closure   the closure CG and L-BFGS call: the training loss (and its gradient), each
                   call charged to the arm's Cost (1 data pass with backward, 1/3 without)
    measure        an epoch's record figures: training loss, accuracy and gradient norm, the
                   validation loss and accuracy, and the Hessian probe when it is on

Several processes (twophase/distributed.py): with `dist`, (x, y) is this process's shard; sums
and gradients are all-reduced, so every process gets the figures of the whole set.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from twophase.probe import hessian_extremes

__all__ = ["FULL_PASS_CHUNK", "PassResult", "LastPass", "full_pass", "make_closure", "Measurement", "measure",
           "trainable", "flat_copy", "mode_free", "grad_norm"]

FULL_PASS_CHUNK = 4096  # samples per chunk (models.runtime may choose another per model)
PROBE_SAMPLE = 512  # training images the Hessian probe evaluates (a fixed, seeded sample)
PROBE_ITERS = 20  # Lanczos steps (Hessian-vector products) per probe

_MODE_DEPENDENT = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.modules.dropout._DropoutNd,
                   torch.nn.modules.instancenorm._InstanceNorm)


def trainable(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.requires_grad]


def flat_copy(params) -> torch.Tensor:
    """The parameters' values as one flat tensor (a copy; reshape works for channels_last too)."""
    return torch.cat([p.detach().reshape(-1) for p in params]) if params else torch.zeros(0)


def mode_free(model: torch.nn.Module) -> bool:
    """True when the model computes the same in train() and eval() mode, so a training-mode pass
    can stand in for an evaluation pass: every module is torch.nn's or twophase's own (a module
    of other code may read self.training) and none has dropout or batch statistics."""
    return all(type(m).__module__.startswith(("torch.nn.", "twophase.")) and not isinstance(m, _MODE_DEPENDENT)
               for m in model.modules())


def grad_norm(params) -> float:
    """Euclidean norm of the parameters' .grad (a missing .grad counts as zeros)."""
    if not params:
        return 0.0
    norms = [torch.linalg.vector_norm(p.grad) if p.grad is not None
             else torch.zeros((), dtype=p.dtype, device=p.device) for p in params]
    return float(torch.linalg.vector_norm(torch.stack(norms)))


@dataclass
class PassResult:
    """What one full pass measured: the mean loss (summed in float64), the correct rows, the set's size."""

    loss: float
    correct: int
    n: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.n


def full_pass(model, loss_fn, x, y, chunk: int = FULL_PASS_CHUNK, grad: bool = False, dist=None,
              eval_mode: bool = False, params=None) -> PassResult:
    """Mean loss and correct rows of `model` over (x, y), chunk by chunk.

    grad: also leave the gradient of the mean loss in the parameters' .grad (set, not added to:
        the old .grad is dropped first). Each chunk's mean loss is weighted by its share of the
        rows, so the result is the mean over all rows whatever the chunking.
    dist: None, or the Dist of a multi-process run ((x, y) being this process's shard).
    eval_mode: evaluate in eval() mode (dropout off, batch-norm statistics frozen) and go back to
        train() after; skipped for models that compute the same in both (mode_free).
    params: trainable(model), when the caller has it (walking the modules again costs about 0.1 ms).
    """
    n = x.shape[0] if dist is None else dist.sum_int(x.shape[0])
    switch_mode = eval_mode and not mode_free(model)  # eval()/train() walk every module
    if switch_mode:
        model.eval()
    total, correct = 0.0, 0
    try:
        if grad:
            params = trainable(model) if params is None else params
            for p in params:
                p.grad = None
            for start in range(0, x.shape[0], chunk):
                xb, yb = x[start:start + chunk], y[start:start + chunk]
                out = model(xb)
                loss = loss_fn(out, yb) * (xb.shape[0] / n)
                loss.backward()
                total += float(loss.detach())
                correct += int((out.detach().argmax(dim=1) == yb).sum())
            if dist is not None:
                dist.sum_grads(params)
        else:
            with torch.no_grad():
                for start in range(0, x.shape[0], chunk):
                    xb, yb = x[start:start + chunk], y[start:start + chunk]
                    out = model(xb)
                    total += float(loss_fn(out, yb)) * (xb.shape[0] / n)
                    correct += int((out.argmax(dim=1) == yb).sum())
    finally:
        if switch_mode:
            model.train()
    if dist is not None:
        total, count = dist.sum_floats(total, correct)
        correct = int(round(count))
    return PassResult(total, correct, n)


@dataclass
class LastPass:
    """The closure's last evaluation with backward: its loss and correct rows at the parameters
    `params` (a flat copy); the gradient is in .grad. An epoch's record reuses it when the
    parameters are still exactly those (a CG step that accepted its last trial point)."""

    params: torch.Tensor
    result: PassResult


def make_closure(model, loss_fn, x, y, cost, chunk: int = FULL_PASS_CHUNK, dist=None):
    """The closure of CG and L-BFGS: the mean training loss over (x, y).

    `closure(backward=True)` leaves the gradient in .grad and returns the loss; with
    backward=False only the loss is evaluated (a line search that needs values). Each call is
    charged to `cost` (cost.charge(fraction): a twophase.training.cost.Cost or EpochCost): 1 data
    pass with backward, 1/3 without.
    In a single process, `closure.last` is then a LastPass (None after any other call).
    The loss comes back in float32 for float32 data (what the optimizers compare), in float64
    for float64 data.
    """
    params = trainable(model)
    keep_last = dist is None and mode_free(model)
    out_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32

    def closure(backward: bool = True):
        cost.charge(1.0 if backward else 1.0 / 3.0)
        closure.last = None
        result = full_pass(model, loss_fn, x, y, chunk=chunk, grad=backward, dist=dist, params=params)
        if backward and keep_last:
            closure.last = LastPass(flat_copy(params), result)
        return torch.tensor(result.loss, dtype=torch.float64, device=x.device).to(out_dtype)

    closure.last = None
    return closure


@dataclass
class Measurement:
    """An epoch's record figures for one model (twophase.schema.Record's, before the arm's own).

    grad_norm: the norm of the full-set training gradient. grad_seconds: the time of the
    training pass that gave it (charged to an arm whose switch rule reads it). reused: the
    training figures came from the closure's last evaluation (no pass was made).
    """

    train_loss: float
    train_acc: float
    grad_norm: float
    val_loss: float
    val_acc: float
    grad_seconds: float = 0.0
    reused: bool = False
    hess_min: float | None = None
    hess_max: float | None = None
    probe_seconds: float = 0.0
    probe_passes: float = 0.0  # the probe's work in data passes (charged to an arm whose rule reads it)

    @property
    def curvature(self) -> float | None:
        """hess_min / hess_max when the probe ran and both are finite (hess_max > 0), else None."""
        if self.hess_min is None or self.hess_max is None:
            return None
        if not (math.isfinite(self.hess_min) and math.isfinite(self.hess_max)) or self.hess_max <= 0:
            return None
        return self.hess_min / self.hess_max


def _reusable(model, last: LastPass | None) -> PassResult | None:
    """`last`'s figures when the parameters are bit for bit the point it evaluated (however they
    were written since; NaN never matches), else None."""
    if last is None:
        return None
    if not torch.equal(flat_copy(trainable(model)), last.params):
        return None
    return last.result


def measure(model, loss_fn, data, chunk: int = FULL_PASS_CHUNK, dist=None, probe=None,
            last: LastPass | None = None) -> Measurement:
    """The record figures of `model` on `data` (a twophase.data.Dataset, this process's shard).

    probe: None, or (x, y, seed): also estimate the Hessian's extreme eigenvalues on that sample
        (monitoring: never charged). last: the closure's last evaluation, reused when it is still
        the current point (saves the training pass).
    """
    params = trainable(model)
    t0 = time.perf_counter()
    result = _reusable(model, last)
    reused = result is not None
    if not reused:
        result = full_pass(model, loss_fn, data.train_x, data.train_y, chunk=chunk, grad=True, dist=dist,
                           eval_mode=True, params=params)
    norm = grad_norm(params)
    grad_seconds = time.perf_counter() - t0
    val = full_pass(model, loss_fn, data.val_x, data.val_y, chunk=chunk, dist=dist, eval_mode=True)
    m = Measurement(result.loss, result.accuracy, norm, val.loss, val.accuracy, grad_seconds, reused)
    if probe is not None:
        px, py, seed = probe
        m.hess_min, m.hess_max, m.probe_seconds = hessian_extremes(model, loss_fn, px, py, seed=seed,
                                                                   sample_size=PROBE_SAMPLE, iters=PROBE_ITERS)
        # one gradient with its graph, then PROBE_ITERS Hessian-vector products (two passes each), on the sample
        m.probe_passes = (1 + 2 * PROBE_ITERS) * min(PROBE_SAMPLE, px.shape[0]) / result.n
    return m
