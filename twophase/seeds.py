"""Several seeds of one run: the median with a min-max band, and how many seeds agree.

A run with `seeds: N` is N run folders of one `group` (twophase/config.py seed_configs), each an
ordinary run. Given their metrics frames (one per seed, any order):

    band(frames, arm, y, x)      per x: median, low (min), high (max) of y over the seeds, and
                                 how many seeds it is taken over
    seed_table(frames)           per arm: final training loss (median, min, max), final
                                 validation accuracy (median), ratio to Adam at equal data passes
                                 (median) and in how many seeds the arm was ahead of Adam
    headline(table)              that last column in words, one line per arm
    groups_of(runs)              the several-seed groups among loaded runs (Compare draws them as bands)

On the epoch axis every seed is read at the same epochs; on a cost axis (data passes, seconds)
each seed's curve is read at the last point within each budget of a common grid (as
analysis.value_within does), so no value is invented between records. A seed still training
counts where it has reached; a diverged seed's non-finite values are left out. No streamlit.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from twophase import analysis

__all__ = ["band", "seed_table", "headline", "groups_of", "BAND_POINTS"]

BAND_POINTS = 200  # grid points of a band on a cost axis


def _curve(frame: pd.DataFrame, arm: str, x: str, y: str) -> pd.DataFrame:
    """One seed's (x, y) points of `arm`, finite, in x order."""
    if frame is None or len(frame) == 0 or not {"arm", x, y} <= set(frame.columns):
        return pd.DataFrame(columns=[x, y])
    part = frame[frame["arm"] == arm][[x, y]].apply(pd.to_numeric, errors="coerce")
    part = part.replace([np.inf, -np.inf], np.nan).dropna()
    return part.sort_values(x, kind="stable")


def band(frames: Sequence[pd.DataFrame], arm: str, y: str = "train_loss", x: str = "epoch",
         points: int = BAND_POINTS) -> pd.DataFrame:
    """Columns x, median, low, high, seeds: the median and range of `y` of `arm` over the seeds'
    frames at each x (epochs; or a grid of `points` budgets on a cost axis). Empty when no seed
    has the arm."""
    columns = [x, "median", "low", "high", "seeds"]
    curves = [c for c in (_curve(f, arm, x, y) for f in frames) if len(c)]
    if not curves:
        return pd.DataFrame(columns=columns)
    if x == "epoch":
        both = pd.concat([c.assign(seed=i) for i, c in enumerate(curves)])
        grouped = both.groupby(x)[y]
        out = pd.DataFrame({"median": grouped.median(), "low": grouped.min(), "high": grouped.max(),
                            "seeds": grouped.count()}).reset_index()
        return out[columns]
    top = max(float(c[x].max()) for c in curves)
    low = min(float(c[x].min()) for c in curves)
    grid = np.linspace(low, top, max(2, points))
    table = np.full((len(curves), len(grid)), np.nan)
    for i, c in enumerate(curves):
        xs, ys = c[x].to_numpy(float), c[y].to_numpy(float)
        at = np.searchsorted(xs, grid * (1 + 1e-9) + 1e-12, side="right") - 1  # last point within budget
        inside = (at >= 0) & (grid <= xs[-1] * (1 + 1e-9) + 1e-12)  # not beyond what this seed reached
        table[i, inside] = ys[at[inside]]
    counts = np.sum(~np.isnan(table), axis=0)
    keep = counts > 0
    with np.errstate(all="ignore"):
        out = pd.DataFrame({x: grid[keep], "median": np.nanmedian(table[:, keep], axis=0),
                            "low": np.nanmin(table[:, keep], axis=0), "high": np.nanmax(table[:, keep], axis=0),
                            "seeds": counts[keep]})
    return out[columns]


def seed_table(frames: Sequence[pd.DataFrame], baseline: str = "adam") -> pd.DataFrame:
    """One row per arm found in any seed's frame: seeds, final train loss (median, min, max),
    final val acc (median), ratio to `baseline` at equal data passes (median over the seeds that
    have both) and `ahead` (seeds where that ratio is below 1) of `compared` seeds."""
    columns = ["arm", "seeds", "train loss (median)", "train loss (min)", "train loss (max)",
               "val acc (median)", "ratio at equal passes (median)", "ahead", "compared"]
    arms = list(dict.fromkeys(a for f in frames if f is not None and "arm" in getattr(f, "columns", [])
                              for a in f["arm"].dropna().astype(str)))
    rows = []
    for arm in arms:
        finals, accs, ratios = [], [], []
        for f in frames:
            part = _curve(f, arm, "epoch", "train_loss")
            if not len(part):
                continue
            finals.append(float(part["train_loss"].iloc[-1]))
            acc = _curve(f, arm, "epoch", "val_acc")
            if len(acc):
                accs.append(float(acc["val_acc"].iloc[-1]))
            if arm != baseline:
                mine = _curve(f, arm, "data_passes", "train_loss")
                base = _curve(f, baseline, "data_passes", "train_loss")
                r = analysis.ratio_at_equal_cost(list(mine.itertuples(index=False, name=None)),
                                                 list(base.itertuples(index=False, name=None)))
                if r is not None:
                    ratios.append(r["ratio"])
        if not finals:
            continue
        rows.append({"arm": arm, "seeds": len(finals), "train loss (median)": float(np.median(finals)),
                     "train loss (min)": min(finals), "train loss (max)": max(finals),
                     "val acc (median)": float(np.median(accs)) if accs else None,
                     "ratio at equal passes (median)": float(np.median(ratios)) if ratios else None,
                     "ahead": sum(r < 1 for r in ratios) if arm != baseline else None,
                     "compared": len(ratios) if arm != baseline else None})
    return pd.DataFrame(rows, columns=columns)


def headline(table: pd.DataFrame, labels: dict | None = None, baseline: str = "Adam") -> list[str]:
    """Per arm compared with the baseline: 'two-phase: ahead of Adam at equal data passes in 2 of 3
    seeds (median ratio 0.981)'."""
    lines = []
    for row in table.to_dict("records"):
        compared = row.get("compared")
        if compared is None or pd.isna(compared) or not compared:
            continue
        name = (labels or {}).get(row["arm"], row["arm"])
        lines.append(f"{name}: ahead of {baseline} at equal data passes in {int(row['ahead'])} of "
                     f"{int(row['compared'])} seeds (median ratio {row['ratio at equal passes (median)']:.3g})")
    return lines


def groups_of(loaded: Sequence, least: int = 2) -> dict[str, list]:
    """group id -> the runs of `loaded` (objects with a .config dict, e.g. runs.load_run's) in that
    several-seed group, in seed order; only groups with at least `least` of their runs in `loaded`."""
    found: dict[str, list] = {}
    for run in loaded:
        cfg = run.config if isinstance(getattr(run, "config", None), dict) else {}
        group = cfg.get("group")
        if isinstance(group, str) and group:
            found.setdefault(group, []).append(run)

    def seed_of(run):
        seed = run.config.get("seed")
        return seed if isinstance(seed, int) and not isinstance(seed, bool) else 0

    return {g: sorted(members, key=seed_of) for g, members in found.items() if len(members) >= least}
