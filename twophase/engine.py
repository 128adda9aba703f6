"""One training arm: one optimizer strategy on one model, advanced one epoch at a time.

An arm is created from a RunConfig, a dataset held in memory and the initial
model. `Arm.run_epoch()` does the arm's work for one epoch, measures the
quantities the paper measured, and returns one record (a dict with the
columns of DESIGN.md section 5). Several arms of one run are driven in turn by
`twophase.experiment`.

Cost accounting (DESIGN.md section 3, "Fair comparison"):
- data_passes: a forward and backward pass over the training set counts 1, a
  forward-only pass 1/3. Only the passes an arm's algorithm needs are counted:
  the mini-batches, the CG line-search evaluations, and the full gradient norm
  where the switch rule reads it. The monitoring passes that only draw the
  charts (train/val loss and accuracy, the Adam arm's gradient norm) are not.
- loss_evals: evaluations of the loss over the full training set by the
  algorithm (line searches), or mini-batch steps in the Adam phase.
- seconds: wall time of the counted work.

Several processes (torchrun): an arm given `dist` (a twophase.distributed.Dist)
holds its process's shard of the data; whole-set sums are all-reduced and the
mini-batch steps go through DistributedDataParallel, so every process computes
the records of one process (see twophase/distributed.py). With dist=None the
code below runs exactly as in a single process.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from twophase import losses
from twophase import models as models_mod
from twophase.distributed import no_tf32
from twophase.optim import NonlinearCG, SwitchRule, TwoPhase
from twophase.probe import hessian_extremes

FULL_PASS_CHUNK = 4096  # samples per chunk in full-dataset passes (bounds memory)
DIVERGENCE_FACTOR = 1000.0  # an arm whose training loss exceeds this x its initial loss has diverged


def apply_runtime_layout(model_name: str, model: torch.nn.Module, data, arms=()):
    """(model, data) in the memory layout model `model_name` trains fastest in (models.runtime):
    channels_last weights and images for the CNNs, unchanged otherwise. The same numbers are
    computed either way; `data` is copied, never changed (a caller may hold it).

    arms: the run's arms. With "adam-lbfgs" the layout stays contiguous for every arm (the
    arms of a run always share one layout): torch.optim.LBFGS flattens gradients with
    .view(-1), which channels_last tensors do not allow."""
    if (not models_mod.runtime(model_name)["channels_last"] or data.train_x.dim() != 4
            or "adam-lbfgs" in arms):
        return model, data
    model = model.to(memory_format=torch.channels_last)
    data = copy.copy(data)
    data.train_x = data.train_x.contiguous(memory_format=torch.channels_last)
    data.val_x = data.val_x.contiguous(memory_format=torch.channels_last)
    return model, data


@dataclass
class FullPass:
    """What a closure evaluation with backward over the whole training set leaves behind:
    its mean loss (float64 sum) and the number of correct rows at the parameters `params`
    (a flat copy); the gradients stay in the parameters' .grad."""

    params: torch.Tensor
    loss: torch.Tensor
    correct: torch.Tensor


def flat_copy(params) -> torch.Tensor:
    """The parameters' values as one flat tensor (a copy; reshape works for channels_last too)."""
    return torch.cat([p.detach().reshape(-1) for p in params]) if params else torch.zeros(0)


_MODE_DEPENDENT = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.modules.dropout._DropoutNd,
                   torch.nn.modules.instancenorm._InstanceNorm)


def mode_free(model: torch.nn.Module) -> bool:
    """True when the model computes the same in train() and eval() mode, so a training-mode pass
    can stand in for an evaluation pass: every module is torch.nn's or twophase's own (a module
    of other code may read self.training) and none has dropout or batch statistics."""
    return all(type(m).__module__.startswith(("torch.nn.", "twophase.")) and not isinstance(m, _MODE_DEPENDENT)
               for m in model.modules())


class StopRequested(Exception):
    """Raised inside an arm when the run's stop flag is set; the arm ends as `stopped`."""


@dataclass
class PassCounter:
    """Cumulative cost of one arm's algorithm."""

    data_passes: float = 0.0
    loss_evals: int = 0
    seconds: float = 0.0


def full_batch_closure(model, loss_fn, x, y, counter: PassCounter, chunk: int = FULL_PASS_CHUNK, dist=None):
    """A closure for CG / L-BFGS: the mean loss over the whole training set.

    `closure(backward=True)` zeroes the gradients, accumulates the gradient of
    the mean loss chunk by chunk, and returns the loss. `closure(backward=False)`
    only evaluates the loss under no_grad (a line search that needs values).
    Each call is charged to `counter`: 1 data pass with backward, 1/3 without.
    dist: None, or the twophase.distributed.Dist of a multi-process run, (x, y)
    being this process's shard: the loss and gradient are then all-reduced, so
    every process gets those of the whole training set.

    After an evaluation with backward in a single process, `closure.last` is a FullPass (loss,
    correct rows, the evaluated parameters; the gradient is in .grad), which the epoch's
    record reuses when the parameters are still exactly those; otherwise it is None.
    """
    n = x.shape[0] if dist is None else dist.sum_int(x.shape[0])
    params = [p for p in model.parameters() if p.requires_grad]
    keep_last = dist is None and mode_free(model)

    def closure(backward: bool = True):
        counter.loss_evals += 1
        counter.data_passes += 1.0 if backward else 1.0 / 3.0
        total = torch.zeros((), dtype=torch.float64, device=x.device)
        if backward:
            closure.last = None
            correct = torch.zeros((), dtype=torch.int64, device=x.device)
            for p in params:
                p.grad = None
            for start in range(0, x.shape[0], chunk):
                xb, yb = x[start:start + chunk], y[start:start + chunk]
                out = model(xb)
                loss = loss_fn(out, yb) * (xb.shape[0] / n)
                loss.backward()
                total += loss.detach().double()
                if keep_last:
                    correct += (out.detach().argmax(dim=1) == yb).sum()
            if dist is not None:
                dist.sum_grads(params)
            if keep_last:
                closure.last = FullPass(flat_copy(params), total.clone(), correct)
        else:
            with torch.no_grad():
                for start in range(0, x.shape[0], chunk):
                    xb, yb = x[start:start + chunk], y[start:start + chunk]
                    total += loss_fn(model(xb), yb).double() * (xb.shape[0] / n)
        if dist is not None:
            dist.sum_(total)
        return total.to(torch.float32) if x.dtype != torch.float64 else total

    closure.last = None
    return closure


def evaluate(model, loss_fn, x, y, with_grad: bool, chunk: int = FULL_PASS_CHUNK, dist=None):
    """Mean loss, accuracy and (optionally) the norm of the gradient of the mean
    loss over (x, y). Leaves the parameters' .grad fields zeroed when with_grad.
    dist: None, or the Dist of a multi-process run, (x, y) being this process's
    shard: the figures are then those of the whole set, on every process."""
    n = x.shape[0] if dist is None else dist.sum_int(x.shape[0])
    params = [p for p in model.parameters() if p.requires_grad]
    total_loss, correct = 0.0, 0.0
    switch_mode = not mode_free(model)  # eval()/train() walk every module: skipped where they change nothing
    if switch_mode:
        model.eval()
    if with_grad:
        grads = [torch.zeros_like(p) for p in params]
        for start in range(0, x.shape[0], chunk):
            xb, yb = x[start:start + chunk], y[start:start + chunk]
            out = model(xb)
            loss = loss_fn(out, yb) * (xb.shape[0] / n)
            chunk_grads = torch.autograd.grad(loss, params, allow_unused=True)
            for g, cg in zip(grads, chunk_grads):
                if cg is not None:
                    g.add_(cg)
            total_loss += float(loss.detach())
            correct += int((out.detach().argmax(dim=1) == yb).sum())
        if dist is not None:
            total_loss, correct = dist.sum_floats(total_loss, correct)
            if grads:
                flat = dist.sum_(torch.cat([g.reshape(-1) for g in grads]))
                grads = list(torch.split(flat, [g.numel() for g in grads]))
        grad_norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))) \
            if grads else 0.0
    else:
        grad_norm = None
        with torch.inference_mode():
            for start in range(0, x.shape[0], chunk):
                xb, yb = x[start:start + chunk], y[start:start + chunk]
                out = model(xb)
                total_loss += float(loss_fn(out, yb)) * (xb.shape[0] / n)
                correct += int((out.argmax(dim=1) == yb).sum())
        if dist is not None:
            total_loss, correct = dist.sum_floats(total_loss, correct)
    if switch_mode:
        model.train()
    return total_loss, correct / n, grad_norm


@dataclass
class Arm:
    """One optimizer strategy trained on its own copy of the initial model.

    name: "two-phase", "adam", "adam-lbfgs" or "cg".
    """

    name: str
    model: torch.nn.Module
    config: object  # RunConfig
    data: object  # twophase.data.Dataset
    loss_fn: Callable
    phase: str = "adam"
    status: str = "running"  # running, completed, diverged, stopped
    epoch: int = 0
    counter: PassCounter = field(default_factory=PassCounter)
    grad_norm_max: float = 0.0
    optimizer: object = None
    second_order: object = None  # L-BFGS of the adam-lbfgs arm
    rule: SwitchRule | None = None
    generator: torch.Generator | None = None
    last_cg_status: str = ""
    initial_loss: float = math.nan
    probe_seconds: float = 0.0  # time spent in the Hessian probe (recorded, never charged)
    dist: object = None  # twophase.distributed.Dist of a multi-process run (data = this process's shard)
    ddp: torch.nn.Module | None = None  # DistributedDataParallel around model, for the mini-batch steps
    probe_sample: tuple | None = None  # (x, y) the Hessian probe uses instead of data's training set
    chunk: int = FULL_PASS_CHUNK  # samples per chunk of a full-set pass (models.runtime)
    last_full_pass: FullPass | None = None  # the epoch's last closure evaluation (CG / L-BFGS epochs)
    record_reused_pass: bool = False  # the last record took its training figures from that evaluation

    # ------------------------------------------------------------ creation
    @classmethod
    def create(cls, name: str, initial_model: torch.nn.Module, config, data, loss_fn, dist=None,
               probe_sample=None) -> "Arm":
        """A new arm on a copy of initial_model. dist: None, or the Dist of a multi-process
        run (data then holds this process's shard). probe_sample: (x, y), the Hessian
        probe's fixed sample when data is a shard (see twophase.probe.sample_indices)."""
        model = copy.deepcopy(initial_model)
        arm = cls(name=name, model=model, config=config, data=data, loss_fn=loss_fn, dist=dist,
                  probe_sample=probe_sample, chunk=models_mod.runtime(config.model)["full_pass_chunk"])
        arm.generator = torch.Generator(device="cpu")
        arm.generator.manual_seed(int(config.seed) + 1)  # same batch order in every arm's Adam phase
        params = list(model.parameters())
        adam_args = dict(lr=config.lr, betas=(config.beta1, config.beta2), eps=config.eps,
                         weight_decay=config.weight_decay)
        cg_args = dict(beta=config.cg_beta, line_search=config.line_search, c2=config.cg_c2,
                       max_ls=config.cg_max_ls,
                       dtype=torch.float64 if config.cg_dtype == "float64" else None)
        rule_args = dict(tolerance=config.tolerance, min_epochs=config.min_epochs, patience=config.patience,
                         smoothing=config.smoothing, switch_epoch=config.switch_epoch)
        if name == "two-phase":
            arm.optimizer = TwoPhase(params, cg=cg_args, rule=rule_args, **adam_args)
            arm.rule = arm.optimizer.rule
        elif name == "adam":
            arm.optimizer = torch.optim.Adam(params, **adam_args)
        elif name == "adam-lbfgs":
            arm.optimizer = torch.optim.Adam(params, **adam_args)
            arm.rule = SwitchRule(**rule_args)
        elif name == "cg":
            arm.optimizer = NonlinearCG(params, **cg_args)
            arm.phase = "cg"
        else:  # validated earlier; kept for direct callers
            raise ValueError(f"unknown arm {name!r}")
        if dist is not None and name != "cg":
            arm.ddp = dist.wrap(model)  # same order on every process: DDP's creation is a collective
        return arm

    # ---------------------------------------------------------------- work
    def initial_record(self) -> dict:
        """Epoch 0: the untrained model, identical for every arm of a run."""
        record = self._record(phase="init", batch_norm_mean=None, needs_full_norm=False)
        self.initial_loss = record["train_loss"]
        return record

    def has_diverged(self, record: dict) -> bool:
        """Non-finite loss or gradient norm, or a training loss above
        DIVERGENCE_FACTOR x the initial one (Adam's bounded steps rarely overflow outright)."""
        if not all(math.isfinite(record[k]) for k in ("train_loss", "grad_norm")):
            return True
        return math.isfinite(self.initial_loss) and record["train_loss"] > DIVERGENCE_FACTOR * self.initial_loss

    def run_epoch(self, should_stop: Callable[[], bool], on_batch: Callable[[float], None] | None = None) -> dict:
        """Advance one epoch and return its record. Raises StopRequested when asked to stop."""
        self.epoch += 1
        phase = self.phase
        self.last_full_pass = None
        start = time.perf_counter()
        batch_norm_mean = None
        if phase == "adam":
            batch_norm_mean = self._adam_epoch(should_stop, on_batch)
        elif self.name == "adam-lbfgs":
            self._lbfgs_epoch(should_stop, on_batch)
        else:
            self._cg_epoch(should_stop, on_batch)
        self.counter.seconds += time.perf_counter() - start
        # The switch rule reads the full-set gradient norm: that pass is the algorithm's cost.
        # A fixed split (switch_epoch) never reads the norm, so it is not charged then.
        needs_full_norm = (phase == "adam" and self.rule is not None and self.config.grad_norm_mode == "full"
                           and self.config.switch_epoch is None)
        return self._record(phase=phase, batch_norm_mean=batch_norm_mean, needs_full_norm=needs_full_norm)

    def _adam_epoch(self, should_stop, on_batch) -> float:
        x, y = self.data.train_x, self.data.train_y
        n, bs = x.shape[0], self.config.batch_size
        if self.dist is not None:
            n = self.dist.sum_int(n)  # the permutation is over the whole training set
        order = torch.randperm(n, generator=self.generator).to(x.device)
        num_batches = math.ceil(n / bs)
        norms = []
        track_norms = self.config.grad_norm_mode == "batch-mean"
        params = [p for p in self.model.parameters() if p.requires_grad]
        for i in range(num_batches):
            if should_stop():
                raise StopRequested
            idx = order[i * bs:(i + 1) * bs]
            self.optimizer.zero_grad(set_to_none=True)
            if self.dist is None:
                xb, yb = x[idx], y[idx]
                loss = self.loss_fn(self.model(xb), yb)
            else:  # this process's share; DDP averages the gradients in backward()
                loss = self.dist.batch_loss(self.ddp, self.loss_fn, x, y, idx)
            loss.backward()
            if track_norms:
                grads = [p.grad for p in params if p.grad is not None]
                norms.append(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))))
            self.optimizer.step()
            self.counter.loss_evals += 1
            self.counter.data_passes += idx.shape[0] / n
            if on_batch is not None:
                on_batch((i + 1) / num_batches)
        if self.dist is not None:  # the last mini-batch's loss over all processes
            loss = self.dist.sum_(loss.detach().clone())
        if not torch.isfinite(loss.detach()):
            return float("nan")
        return float(torch.stack(norms).mean()) if norms else None

    def _cg_epoch(self, should_stop, on_batch):
        closure = full_batch_closure(self.model, self.loss_fn, self.data.train_x, self.data.train_y, self.counter,
                                     chunk=self.chunk, dist=self.dist)
        iters = self.config.cg_iters_per_epoch
        for i in range(iters):
            if should_stop():
                raise StopRequested
            with no_tf32():  # TF32 rounding breaks line searches (no effect on CPU)
                self.optimizer.step(closure)
            self.last_full_pass = getattr(closure, "last", None)  # a wrapped closure has none
            info = getattr(self.optimizer, "last_step", None)
            self.last_cg_status = getattr(info, "status", "") if info is not None else ""
            if on_batch is not None:
                on_batch((i + 1) / iters)

    def _lbfgs_epoch(self, should_stop, on_batch):
        closure = full_batch_closure(self.model, self.loss_fn, self.data.train_x, self.data.train_y, self.counter,
                                     chunk=self.chunk, dist=self.dist)
        if should_stop():
            raise StopRequested
        # One L-BFGS call runs cg_iters_per_epoch iterations (it re-evaluates at its start).
        with no_tf32():
            self.second_order.step(closure)
        self.last_full_pass = getattr(closure, "last", None)
        if on_batch is not None:
            on_batch(1.0)

    def _reused_full_pass(self):
        """(loss, accuracy, gradient norm) over the training set from the epoch's last closure
        evaluation, when the parameters are still the ones it evaluated (a CG step accepted
        its last trial point); None otherwise. Saves the record a full forward and backward pass."""
        last, self.last_full_pass = self.last_full_pass, None
        if last is None:
            return None
        params = [p for p in self.model.parameters() if p.requires_grad]
        # bit for bit the evaluated point (however the parameters were written; NaN never matches)
        if not torch.equal(flat_copy(params), last.params):
            return None
        grads = [p.grad for p in params if p.grad is not None]
        norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))) \
            if grads else 0.0
        return float(last.loss), int(last.correct) / self.data.train_x.shape[0], norm

    def _record(self, phase: str, batch_norm_mean, needs_full_norm: bool) -> dict:
        t0 = time.perf_counter()
        reused = self._reused_full_pass()
        self.record_reused_pass = reused is not None
        if reused is not None:
            train_loss, train_acc, full_norm = reused
        else:
            train_loss, train_acc, full_norm = evaluate(self.model, self.loss_fn, self.data.train_x,
                                                        self.data.train_y, with_grad=True, chunk=self.chunk,
                                                        dist=self.dist)
        if needs_full_norm:
            self.counter.seconds += time.perf_counter() - t0
            self.counter.data_passes += 1.0
        val_loss, val_acc, _ = evaluate(self.model, self.loss_fn, self.data.val_x, self.data.val_y,
                                        with_grad=False, chunk=self.chunk, dist=self.dist)
        if self.config.grad_norm_mode == "batch-mean" and phase == "adam" and batch_norm_mean is not None:
            grad_norm = batch_norm_mean
        else:
            grad_norm = full_norm
        if phase != "init" and math.isfinite(grad_norm):
            self.grad_norm_max = max(self.grad_norm_max, grad_norm)
        curvature = {}
        if self.config.hessian_probe:  # monitoring only: its cost is not charged to the arm
            px, py = self.probe_sample or (self.data.train_x, self.data.train_y)
            hess_min, hess_max, probe_seconds = hessian_extremes(self.model, self.loss_fn, px, py,
                                                                 seed=self.config.seed)
            curvature = {"hess_min": hess_min, "hess_max": hess_max}
            self.probe_seconds += probe_seconds
        return {
            "arm": self.name,
            "epoch": self.epoch,
            "phase": phase,
            "train_loss": train_loss,
            "train_acc": train_acc,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "grad_norm": grad_norm,
            "grad_norm_max": self.grad_norm_max if phase != "init" else grad_norm,
            "data_passes": self.counter.data_passes,
            "loss_evals": self.counter.loss_evals,
            "seconds": self.counter.seconds,
            **curvature,
        }

    def end_of_epoch(self, record: dict) -> list[dict]:
        """Feed the switch rule; change phase; return the events of this epoch (peak, switch)."""
        events = []
        if self.rule is None or record["phase"] != "adam":
            return events
        if self.name == "two-phase":
            switched = self.optimizer.epoch_end(record["grad_norm"])
        else:
            switched = self.rule.update(record["grad_norm"])
        if switched:
            # The detected peak is the largest norm seen before the switch.
            events.append({"arm": self.name, "kind": "peak", "epoch": self.rule.peak_epoch,
                           "value": self.rule.peak_value})
            events.append({"arm": self.name, "kind": "switch", "epoch": self.epoch,
                           "value": record["grad_norm"], "threshold": self.rule.threshold})
            self.phase = "cg" if self.name == "two-phase" else "lbfgs"
            if self.name == "adam-lbfgs":
                self.second_order = torch.optim.LBFGS(
                    [p for p in self.model.parameters() if p.requires_grad], lr=1.0,
                    max_iter=self.config.cg_iters_per_epoch,
                    max_eval=self.config.cg_iters_per_epoch * self.config.cg_max_ls,
                    history_size=10, line_search_fn="strong_wolfe")
        return events


def make_loss(name: str):
    return losses.get(name)
