"""Devices and several processes: one run trained by N processes with torch.distributed.

A run launched by PyTorch's own launcher,

    torchrun --nproc-per-node=N -m twophase run ...

has WORLD_SIZE=N in its environment; `init_from_env` then joins the process group
(gloo on CPU, NCCL on CUDA) and returns a `Dist` that the engine takes as `dist`.
Without a launcher (WORLD_SIZE unset or 1) it returns None and the engine runs
exactly as a single process.

How the work is split, so that N processes compute what one process computes
(up to the rounding of sums taken in another order):
- Process r holds the shard x[r::N] of the training set and of the validation
  set (`shard_dataset`).
- Adam phase: every process draws the same seeded permutation of all N_total
  samples; global mini-batch positions g with g % N == r are process r's (local
  index g // N). Its loss is scaled by n_local * N / B_global, so that the
  average DistributedDataParallel takes of the gradients is the gradient of the
  mean loss over the whole mini-batch (`Dist.batch_loss`).
- Whole-set quantities (the epoch gradient norm, the CG closure's loss and
  gradient, every loss of a line search, the monitoring loss and accuracy) are
  sums over the shards, all-reduced (`Dist.sum_`, `Dist.sum_grads`). Every
  process thus sees the same numbers and takes exactly the same CG step.
- A stop asked of any process is agreed by all between mini-batches and CG
  iterations (`Dist.agreed_stop`); rank 0 alone writes the run folder, the
  other ranks get a `NullWriter`.

A dead peer makes the next collective fail (gloo: at once; at the latest after
the process-group timeout, TWOPHASE_DIST_TIMEOUT seconds, default 600), so a
crash ends the run `failed` instead of hanging.

The app launches such runs through twophase/jobs/launcher.py (torchrun_command, terminate).
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import os
from dataclasses import dataclass

import torch

from twophase import settings
from twophase.errors import TwophaseError



# --------------------------------------------------------------------------- launch detection


def world_size_from_env() -> int:
    """WORLD_SIZE set by torchrun (1 when unset or unreadable)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def launched() -> bool:
    """True when this process is one of several started by torchrun (WORLD_SIZE > 1)."""
    return world_size_from_env() > 1


def timeout_seconds() -> float:
    """The collectives' timeout: TWOPHASE_DIST_TIMEOUT seconds, default 600 (twophase/settings.py)."""
    return settings.dist_timeout()


# --------------------------------------------------------------------------- the process group


@dataclass
class Dist:
    """This process's place in a multi-process run.

    rank: 0 .. world-1 (rank 0 writes the run folder). world: number of processes.
    local_rank: index of the process on its machine (its GPU on CUDA).
    device: where this process's data and model live ("cpu" or "cuda:<local_rank>").
    backend: "gloo" or "nccl".
    """

    rank: int
    world: int
    local_rank: int
    device: str
    backend: str

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that writes the run folder and prints."""
        return self.rank == 0

    # -- collectives (every rank must call them in the same order)

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """All-reduce `tensor` in place (sum over the processes) and return it."""
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
        return tensor

    def sum_int(self, value: int) -> int:
        """The sum of the integer `value` over the processes (e.g. a global sample count)."""
        t = torch.tensor([int(value)], dtype=torch.int64, device=self.device)
        return int(self.sum_(t).item())

    def sum_floats(self, *values: float) -> list[float]:
        """The sums over the processes of a few Python numbers, in float64."""
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.device)
        return [float(v) for v in self.sum_(t).tolist()]

    def sum_grads(self, params: list[torch.Tensor]) -> None:
        """All-reduce the `.grad` of `params` (sum over the processes) in one flat buffer.

        A missing .grad counts as zeros (a process whose shard had no sample) and is
        filled in, so every process ends with the same gradient tensors.
        """
        if not params:
            return
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                          for p in params])
        self.sum_(flat)
        offset = 0
        for p in params:
            n = p.numel()
            p.grad = flat[offset:offset + n].view_as(p).clone()
            offset += n

    def any(self, flag: bool) -> bool:
        """True on every process when `flag` is True on at least one."""
        t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=self.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item())

    def broadcast_object(self, obj):
        """Rank 0's `obj` on every process (a small picklable value, e.g. the run id)."""
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        """Wait until every process got here."""
        if self.backend == "nccl":
            torch.distributed.barrier(device_ids=[self.local_rank])
        else:
            torch.distributed.barrier()

    def agreed_stop(self, should_stop):
        """A `should_stop` that is True on every process as soon as it is True on one.

        The engine polls it at the same places on every process (before each
        mini-batch and each CG iteration), so all stop at the same point.
        """
        return lambda: self.any(bool(should_stop()))

    # -- the data split

    def shard(self, tensor: torch.Tensor) -> torch.Tensor:
        """This process's rows tensor[rank::world] (a contiguous copy)."""
        return tensor[self.rank::self.world].contiguous()

    def batch_loss(self, model, loss_fn, x, y, global_idx: torch.Tensor) -> torch.Tensor:
        """This process's share of the loss of one global mini-batch.

        model: the DistributedDataParallel wrapper (its backward averages the
            gradients over the processes).
        loss_fn: loss_fn(output, y) -> MEAN loss over the rows given.
        x, y: this process's shard (rows g // world of the global rows g % world == rank).
        global_idx: the mini-batch as indices into the whole training set.

        Returns mean_local * n_local * world / B, whose DDP-averaged gradient is the
        gradient of the mean loss over all B samples of the mini-batch. A process
        holding none of the batch's samples runs one sample with weight 0, since
        DDP needs a backward on every process.
        """
        mine = global_idx[global_idx % self.world == self.rank] // self.world
        if mine.numel() == 0:
            return loss_fn(model(x[:1]), y[:1]) * 0.0
        loss = loss_fn(model(x[mine]), y[mine])
        return loss * (mine.numel() * self.world / global_idx.numel())

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """`model` wrapped in DistributedDataParallel (for the mini-batch steps)."""
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.local_rank] if self.device.startswith("cuda") else None
        return DistributedDataParallel(model, device_ids=device_ids)


def init_from_env(device: str) -> Dist | None:
    """Join the process group torchrun set up, or return None for a single process.

    device: the config's device ("auto", "cpu" or "cuda"); CUDA processes use the
    GPU numbered LOCAL_RANK. Backend: NCCL on CUDA, gloo on CPU. Raises
    TwophaseError when CUDA is asked for but this process has no GPU.
    """
    world = world_size_from_env()
    if world <= 1:
        return None
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise TwophaseError("device: 'cuda' was asked for but no CUDA device is available; use 'auto' or 'cpu'")
        if local_rank >= torch.cuda.device_count():
            raise TwophaseError(f"process {rank} (local rank {local_rank}) has no GPU: this machine has "
                                f"{torch.cuda.device_count()}; start at most that many processes per machine")
        torch.cuda.set_device(local_rank)
        device, backend = f"cuda:{local_rank}", "nccl"
    else:
        device, backend = "cpu", "gloo"
    if not torch.distributed.is_initialized():
        kwargs = {"device_id": torch.device(device)} if backend == "nccl" else {}
        torch.distributed.init_process_group(
            backend=backend, timeout=datetime.timedelta(seconds=timeout_seconds()), **kwargs)
    return Dist(rank=torch.distributed.get_rank(), world=torch.distributed.get_world_size(),
                local_rank=local_rank, device=device, backend=backend)


def close(dist: Dist | None) -> None:
    """Leave the process group (after a run that ended without a collective failing)."""
    if dist is not None and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def is_collective_failure(exc: BaseException) -> bool:
    """True for the errors torch.distributed raises when a peer died or did not answer."""
    dist_error = getattr(torch.distributed, "DistError", None)
    if dist_error is not None and isinstance(exc, dist_error):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(
        s in text for s in ("Connection closed by peer", "Connection reset by peer", "Timed out", "NCCL"))


def describe_failure(exc: BaseException, dist: Dist) -> str:
    """The summary's error for an exception in a multi-process run."""
    text = f"{type(exc).__name__}: {exc}"
    if is_collective_failure(exc):
        return (f"another process of this {dist.world}-process run ended or stopped answering "
                f"(seen by rank {dist.rank}); the torchrun output names the process and its error. {text}")
    return f"rank {dist.rank}: {text}"


def shard_dataset(data, dist: Dist):
    """A copy of `data` (twophase.data.Dataset) holding this process's shard of both sets.

    Raises TwophaseError when the training set has fewer samples than processes.
    """
    n = int(data.train_x.shape[0])
    if n < dist.world:
        raise TwophaseError(f"subset: {n} training samples cannot be split over {dist.world} processes; "
                            f"use at least {dist.world}")
    out = copy.copy(data)
    out.train_x, out.train_y = dist.shard(data.train_x), dist.shard(data.train_y)
    out.val_x, out.val_y = dist.shard(data.val_x), dist.shard(data.val_y)
    return out


# --------------------------------------------------------------------------- device precision


@contextlib.contextmanager
def no_tf32():
    """TF32 off for CUDA matmuls and cuDNN inside the block (restored after).

    CG's line searches compare losses that differ in the 4th or 5th digit; TF32's
    10-bit mantissa makes such comparisons noise. No effect on CPU.
    """
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul
        torch.backends.cudnn.allow_tf32 = cudnn


# --------------------------------------------------------------------------- the run folder


class NullWriter:
    """Stands in for runs.RunWriter on ranks other than 0: same methods, writes nothing."""

    def __init__(self, run_id: str):
        self.run_id = run_id
        self._summary: dict = {}

    def append(self, record) -> None:
        pass

    def event(self, event) -> None:
        pass

    def update_summary(self, **fields) -> dict:
        self._summary.update(fields)
        return dict(self._summary)

    def write_summary(self, summary) -> dict:
        self._summary = dict(summary)
        return dict(self._summary)

    @property
    def summary(self) -> dict:
        return dict(self._summary)

    @property
    def status(self):
        return self._summary.get("status")
