"""Everything a run needs before its first epoch: threads, device, data, the initial model, the loss.

`prepare(config, dist)` is the one way a run is set up; the engine (twophase/training/run.py)
and the benchmarks call it, so a benchmark measures what a run does. Several processes: each
calls it with its Dist and gets its shard of the data (twophase/distributed.py).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from twophase import data as data_mod
from twophase import distributed, losses, settings
from twophase import models as models_mod
from twophase.errors import TwophaseError
from twophase.probe import sample_indices
from twophase.schema import Phase
from twophase.training.full_pass import FULL_PASS_CHUNK, PROBE_SAMPLE
from twophase.training.strategies import parse_arm

__all__ = ["RunSetup", "prepare", "setup_for", "resolve_device", "apply_runtime_layout", "DEFAULT_THREADS", "PROBE_SAMPLE"]

DEFAULT_THREADS = torch.get_num_threads()  # torch's default for this process, read once at import


def resolve_device(name: str) -> str:
    """"auto" -> "cuda" when a GPU is there, else "cpu"; "cuda" without a GPU is a TwophaseError."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise TwophaseError("device: 'cuda' was asked for but no CUDA device is available; use 'auto' or 'cpu'")
    return name


def apply_runtime_layout(model_name: str, model: torch.nn.Module, data, arms=()):
    """(model, data) in the memory layout model `model_name` trains fastest in (models.runtime):
    channels_last weights and images for the CNNs, unchanged otherwise. The same numbers are
    computed either way; `data` is copied, never changed (a caller may hold it).

    arms: the run's arm specs. With an L-BFGS arm the layout stays contiguous for every arm (the
    arms of a run always share one layout): torch.optim.LBFGS flattens gradients with .view(-1),
    which channels_last tensors do not allow."""
    lbfgs = any(parse_arm(a).kind.full_batch == Phase.LBFGS for a in arms)
    if not models_mod.runtime(model_name)["channels_last"] or data.train_x.dim() != 4 or lbfgs:
        return model, data
    model = model.to(memory_format=torch.channels_last)
    data = copy.copy(data)
    data.train_x = data.train_x.contiguous(memory_format=torch.channels_last)
    data.val_x = data.val_x.contiguous(memory_format=torch.channels_last)
    return model, data


@dataclass
class RunSetup:
    """A prepared run. data: the (this process's) dataset in the runtime layout. initial: the
    initial model every arm starts from. chunk: samples per chunk of a full-set pass.
    probe_sample: the Hessian probe's fixed sample when the data is a shard (else None: the probe
    draws its sample from the training set itself). train_samples, val_samples: whole-set sizes."""

    config: object
    dist: object
    device: str
    data: object
    initial: torch.nn.Module
    loss_fn: object
    chunk: int
    train_samples: int
    val_samples: int
    probe_sample: tuple | None = None
    threads_choice: str = ""  # how the torch thread count was chosen (settings.threads_for)
    _promoted: dict = field(default_factory=dict)

    def data_as(self, dtype: torch.dtype | None):
        """The dataset with its images in `dtype` (None: as loaded), promoted once and kept."""
        if dtype is None or dtype == self.data.train_x.dtype:
            return self.data
        if dtype not in self._promoted:
            promoted = copy.copy(self.data)
            promoted.train_x = self.data.train_x.to(dtype)
            promoted.val_x = self.data.val_x.to(dtype)
            self._promoted[dtype] = promoted
        return self._promoted[dtype]

    def probe_for(self, dtype: torch.dtype | None = None, force: bool = False):
        """(x, y, seed) for the Hessian probe of a model in `dtype`, or None when the probe is off
        (force: also when it is off, for a switch rule that reads the curvature)."""
        if not (self.config.hessian_probe or force):
            return None
        if self.probe_sample is not None:
            x, y = self.probe_sample
            x = x if dtype is None else x.to(dtype)
        else:
            data = self.data_as(dtype)
            x, y = data.train_x, data.train_y
        return x, y, self.config.seed


def prepare(config, dist=None, full_pass_chunk: int | None = None, for_app: bool = False) -> RunSetup:
    """Set threads and seeds, load the data, build the initial model (config: a validated RunConfig).

    dist: None, or this process's Dist. full_pass_chunk: the full-set passes' chunk size instead
    of the model's (models.runtime); it changes only the summation order of those sums.
    Raises TwophaseError (DatasetUnavailable, a missing GPU) for problems the user can fix.
    """
    # threads 0 means torch's own default, restored even after a run that asked for fewer; "auto" the
    # free cores (settings.threads_for; for_app: the app's worker, which leaves one for the page)
    threads, why = settings.threads_for(config.threads, for_app)
    if dist is not None and config.threads == "auto":  # several processes share the cores
        threads = max(1, threads // dist.world)
    torch.set_num_threads(threads or DEFAULT_THREADS)
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
            idx = sample_indices(train_samples, PROBE_SAMPLE, config.seed).to(data.train_x.device)
            probe_sample = (data.train_x[idx], data.train_y[idx])
        data = distributed.shard_dataset(data, dist)
    initial = models_mod.build(config.model, data.input_shape, data.num_classes, seed=config.seed,
                               **config.model_sizes).to(device)
    setup = setup_for(config, data, initial, dist=dist, full_pass_chunk=full_pass_chunk, device=device,
                      train_samples=train_samples, val_samples=val_samples, probe_sample=probe_sample)
    setup.threads_choice = why
    return setup


def setup_for(config, data, initial, dist=None, full_pass_chunk: int | None = None, layout: bool = True,
              device: str | None = None, train_samples: int | None = None, val_samples: int | None = None,
              probe_sample=None) -> RunSetup:
    """A RunSetup for a dataset and an initial model already in hand (prepare's last step; tests
    and benchmarks that train on data of their own). layout: apply the model's runtime layout
    (apply_runtime_layout); neither `data` nor `initial` is changed."""
    if layout:
        initial, data = apply_runtime_layout(config.model, initial, data, config.arms)
    chunk = full_pass_chunk or models_mod.runtime(config.model).get("full_pass_chunk", FULL_PASS_CHUNK)
    return RunSetup(config=config, dist=dist, device=device or str(data.train_x.device), data=data,
                    initial=initial, loss_fn=losses.get(config.loss), chunk=chunk,
                    train_samples=int(data.train_x.shape[0]) if train_samples is None else train_samples,
                    val_samples=int(data.val_x.shape[0]) if val_samples is None else val_samples,
                    probe_sample=probe_sample)
