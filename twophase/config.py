"""RunConfig: the one description of a run, validated in one place.

The UI, the CLI, the tests and `from_dict()` all build a RunConfig and call
`validate()`, which raises one `ConfigError` listing every bad field with the
values it allows. The validated config is saved with the run (config.json).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from twophase.errors import ConfigError
from twophase.training.strategies import PAPER_RULE, STRATEGIES, parse_arm

ARMS = tuple(STRATEGIES)  # the strategies; an arm spec may add a switch, e.g. "two-phase@300"
ARM_DESCRIPTIONS = {name: s.description for name, s in STRATEGIES.items()}
MAX_ARMS = 16
#: Fields renamed since runs were first written (old name -> new name); from_dict reads both.
RENAMED = {"cg_iters_per_epoch": "full_batch_iters"}

# Settings one click away on the Train page (pages/shared/common.py), each named for what it shows;
# chosen by measurement (benchmarks/presets.py, README "When does switching pay off?").
PRESETS = {
    "default": dict(label="The default run (the paper's rule, 40 epochs: it switches early)", fields={}),
    "early-vs-late": dict(
        label="Early vs late switch: the paper's rule and a switch at 60%, 1,000 epochs (about a minute)",
        fields=dict(model="mlp", subset=1024, epochs=1000, arms=["adam", "two-phase@paper", "two-phase@60%"])),
}
LOSSES = ("mse", "cross-entropy")
CG_BETAS = ("pr+", "fr", "hz")
LINE_SEARCHES = ("strong-wolfe", "golden")
CG_DTYPES = ("float32", "float64")
GRAD_NORM_MODES = ("full", "batch-mean")
DEVICES = ("auto", "cpu", "cuda")


LIMITS = {
    "epochs": (1, 100_000),
    "batch_size": (1, 1_000_000),
    "full_batch_iters": (1, 10_000),
    "cg_max_ls": (2, 1_000),
    "min_epochs": (0, 100_000),
    "patience": (1, 100_000),
    "threads": (0, 1_024),
    "processes": (1, 1_024),
    "probe_every": (1, 100_000),
    "checkpoint_every": (0, 100_000),
    "seeds": (1, 100),
}


@dataclass
class RunConfig:
    """Everything that defines one comparison run. Plain data: JSON in, JSON out.

    model, model_sizes: a name from `twophase.models.names()` and optional size
        overrides (`twophase.models.defaults(model)` lists them: depth, heads,
        embed_dim, mlp_dim, patch, pool for the ViTs; widths, hidden; width).
    dataset, data_root: a name from `twophase.data.names()`; the folder holding
        torchvision's layout ("" means `twophase.data.default_root()`).
    subset, val_subset: number of training / validation samples (None: all).
    loss: "mse" (the paper's) or "cross-entropy".
    arms: the arms trained from the same initial weights, as arm specs
        (twophase/training/strategies.py): a strategy ("two-phase", "adam", "adam-lbfgs",
        "cg"), optionally with its own switch: "two-phase@300" (fixed epoch), "two-phase@30%"
        (fraction of the epochs), "two-phase@paper", "two-phase@tolerance=0.8:patience=3",
        "two-phase@300:float64" (the branch in float64). Every arm that starts with Adam rides
        one Adam trunk until its switch.
    epochs: epochs per arm. batch_size: Adam's mini-batch size (the paper's 512).
    lr, beta1, beta2, eps, weight_decay: Adam's settings (also the Adam phase).
    tolerance, min_epochs, patience, smoothing, switch_epoch: the switch rule
        (defaults: the paper's rule; switch_epoch fixes the split instead).
    cg_beta, line_search, cg_dtype, full_batch_iters, cg_max_ls, cg_c2:
        the full-batch phase (CG, or L-BFGS for adam-lbfgs); one epoch of it is full_batch_iters
        iterations over the full training set.
    grad_norm_mode: "full" (gradient of the loss over the whole training set at
        the end of the epoch) or "batch-mean" (mean of the mini-batch norms).
    hessian_probe, probe_every: also estimate the Hessian's extreme eigenvalues (monitoring, never
        charged) at epoch 0, every probe_every epochs, at every switch and at the last epoch. The
        default 20: 9.5% of a 1,000-epoch run's time against 25% at 10 (benchmarks/results/probe.md;
        on the 40-epoch default run the probes at epoch 0, the switch and the end cost 5-20%).
    seed, device, threads: reproducibility and hardware (threads: "auto", a number, or 0 = torch's default;
        results are bit for bit the same only at the same thread count).
    processes: number of data-parallel processes (torch.distributed); 1 trains in
        one process. The app launches torchrun with this many processes on its
        machine; under torchrun it is the total number of processes, all machines
        together. Each process holds 1/processes of the data (see twophase/distributed.py).
    checkpoint_every: write the state to resume from every this many epochs (0: only when the
        run is stopped or fails; a Stop always keeps the last whole epoch, a kill loses the epochs
        since the last one written). See twophase/training/checkpoint.py.
    seeds: train the whole run once per seed (seed, seed + 1, ..., seed + seeds - 1): one run
        folder per seed, all with the same `group` (see seed_configs); the pages and the CLI
        then show the median with a min-max band over the seeds.
    name, tag: free text to find the run again; tag groups runs (e.g. a reproduction).
    group: the id shared by the runs of one several-seed submission (set by seed_configs; the
        first run's id).
    """

    model: str = "mlp"
    model_sizes: dict = field(default_factory=dict)
    dataset: str = "mnist"
    data_root: str = ""
    subset: int | None = 2048
    val_subset: int | None = 2000
    loss: str = "mse"
    arms: list = field(default_factory=lambda: ["two-phase", "adam"])
    epochs: int = 40
    batch_size: int = 512
    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    tolerance: float = 0.9
    min_epochs: int = 0
    patience: int = 1
    smoothing: float = 0.0
    switch_epoch: int | None = None
    cg_beta: str = "pr+"
    line_search: str = "strong-wolfe"
    cg_dtype: str = "float32"
    full_batch_iters: int = 1
    cg_max_ls: int = 25
    cg_c2: float = 0.2
    grad_norm_mode: str = "full"
    hessian_probe: bool = False
    probe_every: int = 20
    seed: int = 0
    seeds: int = 1
    device: str = "auto"
    # "auto" by default: the number of free cores when the run starts (twophase/settings.py
    # threads_for), one left for the page in the app on a small machine; a fixed guess was wrong on
    # someone's machine either way (benchmarks/results/roofline.md). 0 = torch's default.
    threads: int | str = "auto"
    processes: int = 1
    checkpoint_every: int = 10
    name: str = ""
    tag: str = ""
    group: str = ""

    # ------------------------------------------------------------------ I/O
    def to_dict(self) -> dict:
        """A JSON-ready dict; `RunConfig.from_dict(c.to_dict()) == c`."""
        d = dataclasses.asdict(self)
        d["arms"] = list(self.arms)
        d["model_sizes"] = dict(self.model_sizes)
        return d

    @classmethod
    def from_dict(cls, d: dict, validate: bool = True) -> "RunConfig":
        """Build from a dict. Unknown keys are errors, never silently dropped."""
        if not isinstance(d, dict):
            raise ConfigError({"config": f"must be a mapping of field names to values, got {type(d).__name__}"})
        d = {RENAMED.get(k, k) if isinstance(k, str) else k: v for k, v in d.items()}  # runs of older versions
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known, key=lambda k: (type(k).__name__, str(k)[:200] if isinstance(k, str) else ""))
        if unknown:
            def name(k) -> str:  # repr() refuses ints of more than 4300 digits
                if isinstance(k, str):
                    return k
                if isinstance(k, int) and not isinstance(k, bool) and k.bit_length() > 14000:
                    return f"<an integer of {k.bit_length()} bits>"
                return repr(k)[:200]

            raise ConfigError({name(k): f"unknown field; allowed fields: {', '.join(sorted(known))}" for k in unknown})
        cfg = cls(**d)
        if validate:
            cfg.validate()
        return cfg

    def replace(self, **changes) -> "RunConfig":
        return dataclasses.replace(self, **changes)

    # ---------------------------------------------------------- validation
    def validate(self) -> "RunConfig":
        """Check every field; raise one ConfigError naming each bad one. Returns self, its arm
        specs written in their canonical spelling ("two-phase@30.0%" -> "two-phase@30%")."""
        from twophase import data as data_mod
        from twophase import models as models_mod

        errors: dict[str, str] = {}

        def shown(value):  # repr() for messages; an int over 4300 digits is described instead
            try:
                return repr(value)
            except ValueError:
                if isinstance(value, int):
                    return f"an integer of {value.bit_length()} bits"
                return f"a {type(value).__name__} holding an integer too long to print"

        def choice(name, allowed):
            value = getattr(self, name)
            if not isinstance(value, str) or value not in allowed:
                errors[name] = f"got {shown(value)}; allowed: {', '.join(allowed)}"
                return False
            return True

        def integer(name, lo, hi, optional=False):
            value = getattr(self, name)
            if value is None and optional:
                return True
            if isinstance(value, bool) or not isinstance(value, int):
                errors[name] = f"must be a whole number from {lo} to {hi}{' or empty' if optional else ''}, got {shown(value)}"
                return False
            if not lo <= value <= hi:
                errors[name] = f"must be from {lo} to {hi}, got {shown(value)}"
                return False
            return True

        def real(name, lo, hi, lo_open=False, hi_open=False):
            value = getattr(self, name)
            try:  # an int beyond float range is as bad as inf
                finite = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))
            except OverflowError:
                finite = False
            if not finite:
                errors[name] = f"must be a finite number in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}, got {shown(value)}"
                return False
            ok = (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
            if not ok:
                errors[name] = f"must be in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}, got {value}"
                return False
            return True

        model_ok = choice("model", tuple(models_mod.names()))
        dataset_ok = choice("dataset", tuple(data_mod.names()))
        choice("loss", LOSSES)
        choice("cg_beta", CG_BETAS)
        choice("line_search", LINE_SEARCHES)
        choice("cg_dtype", CG_DTYPES)
        choice("grad_norm_mode", GRAD_NORM_MODES)
        choice("device", DEVICES)

        specs = []
        if not isinstance(self.arms, (list, tuple)) or not self.arms:
            errors["arms"] = f"choose at least one of: {', '.join(ARMS)}"
        elif len(self.arms) > MAX_ARMS:
            errors["arms"] = f"at most {MAX_ARMS} arms, got {len(self.arms)}"
        else:
            problems = []
            for arm in self.arms:
                try:
                    specs.append(parse_arm(arm))
                except ValueError as exc:
                    problems.append(str(exc))
            if problems:
                errors["arms"] = "; ".join(problems)
            elif len({s.name for s in specs}) != len(specs):
                errors["arms"] = "each arm may appear once"
            else:
                self.arms = [s.name for s in specs]  # one spelling per arm (the id in metrics.csv)

        for name, (lo, hi) in LIMITS.items():
            if name == "threads" and self.threads == "auto":
                continue
            if name == "threads" and isinstance(self.threads, str):
                errors[name] = f"must be 'auto' or a whole number from {lo} to {hi}, got {self.threads!r}"
                continue
            integer(name, lo, hi)
        integer("seed", 0, 2**63 - 1)
        if "seed" not in errors and "seeds" not in errors and self.seed + self.seeds - 1 > 2**63 - 1:
            errors["seeds"] = f"seed + seeds - 1 must be at most {2**63 - 1}, got seed {self.seed} and seeds {self.seeds}"
        integer("switch_epoch", 1, 100_000, optional=True)
        if "switch_epoch" not in errors and "epochs" not in errors and self.switch_epoch is not None \
                and self.switch_epoch > self.epochs:
            errors["switch_epoch"] = f"must be at most epochs ({self.epochs}), got {self.switch_epoch}"
        if "min_epochs" not in errors and "epochs" not in errors and self.min_epochs > self.epochs:
            # the rule cannot switch before the end of epoch min_epochs: it would never switch
            errors["min_epochs"] = f"must be at most epochs ({self.epochs}), got {self.min_epochs}"
        if "arms" not in errors and "epochs" not in errors:
            late = [s.name for s in specs if (dict(s.rule).get("switch_epoch") or 0) > self.epochs]
            never = [s.name for s in specs if (dict(s.rule).get("min_epochs") or 0) > self.epochs]
            problems = []
            if late:
                problems.append(f"{', '.join(late)}: the switch epoch must be at most epochs ({self.epochs})")
            if never:
                problems.append(f"{', '.join(never)}: min_epochs must be at most epochs ({self.epochs})")
            if problems:
                errors["arms"] = "; ".join(problems)

        real("lr", 0, 10, lo_open=True)
        real("beta1", 0, 1, hi_open=True)
        real("beta2", 0, 1, hi_open=True)
        real("eps", 0, 1, lo_open=True)
        real("weight_decay", 0, 10)
        real("tolerance", 0, 1, lo_open=True)
        real("smoothing", 0, 1, hi_open=True)
        real("cg_c2", 1e-4, 1, lo_open=True, hi_open=True)

        if not isinstance(self.hessian_probe, bool):
            errors["hessian_probe"] = f"must be true or false, got {self.hessian_probe!r}"
        for name in ("data_root", "name", "tag", "group"):
            if not isinstance(getattr(self, name), str):
                errors[name] = f"must be text, got {shown(getattr(self, name))}"
        if isinstance(self.data_root, str) and "\x00" in self.data_root:
            # no file system takes it: refused here rather than when the data is first read
            errors["data_root"] = "must not contain a NUL character (\\x00); it cannot be part of a folder name"
        if isinstance(self.name, str) and len(self.name) > 200:
            errors["name"] = "must be at most 200 characters"

        # Subsets need the dataset's real size.
        sizes = data_mod.info(self.dataset) if dataset_ok else None
        for name, key in (("subset", "train_size"), ("val_subset", "val_size")):
            if integer(name, 1, 10**9, optional=True) and sizes and getattr(self, name) is not None:
                if getattr(self, name) > sizes[key]:
                    errors[name] = (f"{getattr(self, name)} is larger than the {self.dataset} "
                                    f"{'training' if name == 'subset' else 'validation'} set ({sizes[key]} samples)")

        if "processes" not in errors and "subset" not in errors and isinstance(self.subset, int) \
                and not isinstance(self.processes, bool) and self.subset < self.processes:
            errors["processes"] = (f"each process needs at least one training sample: subset ({self.subset}) "
                                   f"must be at least processes ({self.processes})")

        # Model sizes: the model must build on the data's shape (models.check names each bad size).
        if not isinstance(self.model_sizes, dict):
            errors["model_sizes"] = f"must be a mapping like {{'embed_dim': 64}}, got {shown(self.model_sizes)}"
        elif any(not isinstance(k, str) for k in self.model_sizes):
            bad = ", ".join(shown(k) for k in self.model_sizes if not isinstance(k, str))
            errors["model_sizes"] = f"size names must be text like 'embed_dim', got {bad}"
        elif model_ok and dataset_ok:
            try:
                models_mod.check(self.model, sizes["input_shape"], sizes["num_classes"], **self.model_sizes)
            except ConfigError as e:
                errors["model_sizes"] = "; ".join(v if k == "model_sizes" else f"{k}: {v}" for k, v in e.errors.items())

        if errors:
            raise ConfigError(errors)
        return self


def field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(RunConfig)]


def field_default(name: str) -> Any:
    return RunConfig().__getattribute__(name)


def seed_configs(config: RunConfig, group: str) -> list[RunConfig]:
    """The runs of `config`: one per seed (seed, seed + 1, ...), each with `group` set (one run,
    unchanged, when config.seeds is 1)."""
    if config.seeds == 1:
        return [config]
    return [config.replace(seed=config.seed + i, group=group) for i in range(config.seeds)]
