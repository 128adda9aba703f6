"""The figures the method's authors published (their Table 1), as data.

Source: Hrycej et al., "A Convexity-dependent Two-Phase Training Algorithm for
Deep Neural Networks" (arXiv 2510.25366), Table 1: final training and
validation loss (MSE) and accuracy of Adam alone and of the two-phase method,
for five models on MNIST, CIFAR-10 and CIFAR-100, after 1000 epochs (700 for
vit-mlp). The file ships inside the package (twophase/data_files/) so the
engine, the CLI and the app read the same numbers.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pandas as pd

TABLE_PATH = Path(__file__).resolve().parent.parent / "data_files" / "paper_table1.csv"
# Our small reproduction (python -m twophase reproduce --scale small, seed 0), measured on a shared
# 2-core machine and shipped so that a fresh install has something beside Table 1 (README,
# "Reproducing the paper"); `minutes` is each run's wall time there (rough: the machine was shared).
MEASURED_SMALL_PATH = TABLE_PATH.parent / "measured_small.csv"
# Our long reproduction (the paper's epoch budgets on 1,024 images; python -m benchmarks.long_reproduction
# writes it from the rows recorded in benchmarks/results/long/): per model and algorithm the mean over
# the seeds done, two-phase / Adam at equal epochs, data passes and wall time, and hours per cell.
MEASURED_LONG_PATH = TABLE_PATH.parent / "measured_long.csv"
MEASURED_LONG_SWEEP_PATH = TABLE_PATH.parent / "measured_long_sweep.csv"
COLUMNS = ["dataset", "model", "algorithm", "train_loss", "train_acc", "val_loss", "val_acc",
           "overdetermination_q"]
# The paper's budgets (epochs): Adam alone, and the two-phase split Adam + CG.
BUDGETS = {
    "default": {"adam": 1000, "two-phase": (300, 700)},
    "vit-mlp": {"adam": 700, "two-phase": (210, 490)},
}


@lru_cache(maxsize=1)
def _table() -> pd.DataFrame:
    df = pd.read_csv(TABLE_PATH)
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{TABLE_PATH} lacks column(s) {', '.join(missing)}")
    return df[COLUMNS]


def table() -> pd.DataFrame:
    """The whole published table (a copy): one row per dataset, model and algorithm."""
    return _table().copy()


@lru_cache(maxsize=1)
def _measured_small() -> pd.DataFrame:
    return pd.read_csv(MEASURED_SMALL_PATH)


def measured_small() -> pd.DataFrame:
    """Our shipped small reproduction beside the paper: one row per model and algorithm with our
    figures and the paper's (columns paper_train_loss, ...)."""
    ours = _measured_small().drop(columns=["minutes"])
    theirs = _table().drop(columns=["overdetermination_q"]).rename(
        columns={c: f"paper_{c}" for c in ("train_loss", "train_acc", "val_loss", "val_acc")})
    return ours.merge(theirs, on=["dataset", "model", "algorithm"], how="left")


def measured_long() -> pd.DataFrame:
    """Our shipped long reproduction beside the paper (as measured_small, with the columns seeds,
    ratio_epochs, ratio_passes, ratio_time and hours); empty when none is shipped."""
    if not MEASURED_LONG_PATH.exists():
        return pd.DataFrame()
    ours = pd.read_csv(MEASURED_LONG_PATH)
    theirs = _table().drop(columns=["overdetermination_q"]).rename(
        columns={c: f"paper_{c}" for c in ("train_loss", "train_acc", "val_loss", "val_acc")})
    return ours.merge(theirs, on=["dataset", "model", "algorithm"], how="left")


def measured_long_sweep() -> pd.DataFrame:
    """The shipped long reproduction's switch sweep: per model and branch (switch after epoch 3, at
    10%, 30%, 60%, by the paper's rule) columns dataset, model, branch, seeds, switch_epoch
    (median), ratio_epochs, ratio_passes, ratio_time (the branch's training loss over Adam's at
    equal epochs, data passes and wall time, median over seeds) and wins_passes ("wins/seeds");
    empty when none is shipped."""
    return pd.read_csv(MEASURED_LONG_SWEEP_PATH) if MEASURED_LONG_SWEEP_PATH.exists() else pd.DataFrame()


def switch_study() -> dict[str, pd.DataFrame]:
    """Where switching to CG paid off here (python -m benchmarks.switch_sweep --size issue writes the
    copies): "sweep" (per model and image count, the median ratio to Adam at equal data passes of each
    fixed switch point, and the seeds ahead), "rules" (per rule, over all cells and per model), "points"
    (the figure's data). Empty when not shipped."""
    out = {}
    for name in ("sweep", "rules", "points"):
        path = TABLE_PATH.parent / f"switch_study_{name}.csv"
        if path.exists():
            out[name] = pd.read_csv(path)
    return out if len(out) == 3 else {}


def small_run_minutes(model: str) -> int | None:
    """Minutes one small-scale run of `model` took on the 2-core machine that measured
    measured_small.csv (None for a model it did not run)."""
    rows = _measured_small()[_measured_small()["model"] == model]
    return int(rows["minutes"].max()) if len(rows) else None


def figures_for(model: str, dataset: str) -> pd.DataFrame:
    """The published rows for `model` on `dataset` ("adam" and "two-phase").

    model: a name from twophase.models.names(); dataset: one from
    twophase.data.names(). An empty frame when the paper has no such cell
    (for example the "mlp" model or Fashion-MNIST).
    """
    df = _table()
    return df[(df["model"] == model) & (df["dataset"] == dataset)].reset_index(drop=True).copy()


def final_loss(model: str, dataset: str, algorithm: str, column: str = "train_loss") -> float | None:
    """One published number, e.g. final_loss("vit-mlp", "mnist", "two-phase") -> 0.0001.

    algorithm: "adam" or "two-phase". column: train_loss, train_acc, val_loss
    or val_acc. None when the paper has no such cell.
    """
    if column not in COLUMNS[3:7]:
        raise ValueError(f"column must be one of {', '.join(COLUMNS[3:7])}; got {column!r}")
    rows = figures_for(model, dataset)
    rows = rows[rows["algorithm"] == algorithm]
    return None if rows.empty else float(rows[column].iloc[0])
