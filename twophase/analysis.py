"""Comparing arms at equal cost: the numbers behind every "two-phase / Adam" ratio.

An arm's curve is a sequence of points (cost, value) in the order they were recorded, cost
being the epoch, the cumulative data passes or the wall time. Comparing two arms at equal cost
means taking, for each, the value it had reached within the same budget:

    value_within(points, budget)    the value of the last point whose cost is <= budget
    ratio_at_equal_cost(a, b)       a's value / b's value within the smaller of their total costs
    ratios_to_baseline(rows, base)  that ratio at equal epochs, equal data passes and equal time

The second half works on a run's metrics as a pandas DataFrame (twophase/schema.py's columns) and
its events: where each arm peaked and switched, its final figures, the smoothing of a curve.
twophase/plots.py draws from these.

Used by the engine's summary (twophase/training/run.py), the CLI, the pages, the paper's report and
the benchmarks. NaN and infinities are never a value.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from twophase.schema import Phase
from twophase.training.strategies import STRATEGY_NAMES, parse_arm

__all__ = ["COST_AXES", "value_within", "ratio_at_equal_cost", "ratios_to_baseline", "ratio_table", "switch_epoch",
           "peak", "final_table", "loss_ratio", "smooth"]

# Phases that are not a "second phase": the Adam phase, the initial record (epoch 0) and none.
_NON_SWITCH_PHASES = (Phase.ADAM.value, Phase.INIT.value, "")


def _switches(arm: str) -> bool:
    try:
        return parse_arm(arm).kind.switches
    except ValueError:
        return False

#: The axes arms are compared on: field of a record -> how the README and pages name it.
COST_AXES = {"epoch": "equal epochs", "data_passes": "equal data passes", "seconds": "equal wall time"}
_SLACK = 1e-9  # relative: a budget read back from a file equals the cost it came from


def _finite(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def value_within(points: Iterable[tuple[float, float]], budget: float) -> float | None:
    """The value of the last point (in recorded order) whose cost is at most `budget`, skipping
    points whose value is not finite; None when no point fits the budget."""
    best = None
    limit = budget * (1 + _SLACK) + _SLACK
    for cost, value in points:
        cost, value = _finite(cost), _finite(value)
        if cost is None or cost > limit:
            continue
        if value is not None:
            best = value
    return best


def ratio_at_equal_cost(a: Sequence[tuple[float, float]], b: Sequence[tuple[float, float]]) -> dict | None:
    """{"at": budget, "value": a's, "baseline": b's, "ratio": a / b} at the smaller of the two
    curves' total costs; None when either curve is empty or b's value is 0 or missing."""
    costs_a = [c for c, _ in a if _finite(c) is not None]
    costs_b = [c for c, _ in b if _finite(c) is not None]
    if not costs_a or not costs_b:
        return None
    budget = min(max(costs_a), max(costs_b))
    va, vb = value_within(a, budget), value_within(b, budget)
    if va is None or vb is None or vb == 0:
        return None
    return {"at": budget, "value": va, "baseline": vb, "ratio": va / vb}


def ratios_to_baseline(rows: Iterable[Mapping], baseline: Iterable[Mapping], column: str = "train_loss",
                       axes: Sequence[str] = tuple(COST_AXES)) -> dict:
    """Per cost axis, ratio_at_equal_cost of `column` between an arm's records and the
    baseline's (records as dicts with the axis fields; epoch 0 included)."""
    rows, baseline = list(rows), list(baseline)
    out = {}
    for axis in axes:
        ratio = ratio_at_equal_cost([(r.get(axis), r.get(column)) for r in rows],
                                    [(r.get(axis), r.get(column)) for r in baseline])
        if ratio is not None:
            out[axis] = ratio
    return out


def ratio_table(metrics, baseline: str = "adam", column: str = "train_loss", labels=None):
    """A pandas DataFrame, one row per arm other than `baseline` found in `metrics` (a run's
    metrics frame): the ratio of its `column` to the baseline's at equal epochs, equal data passes
    and equal wall time, and where each was taken. labels: arm -> display name (optional).
    Empty when the baseline is not in the run."""
    columns = ["arm", "label"] + [f"{axis} {what}" for axis in COST_AXES for what in ("ratio", "at")]
    if metrics is None or len(metrics) == 0 or "arm" not in metrics.columns:
        return pd.DataFrame(columns=columns)
    frame = metrics.sort_values(["arm", "epoch"], kind="stable") if "epoch" in metrics.columns else metrics
    base = frame[frame["arm"] == baseline].to_dict("records")
    rows = []
    if not base:
        return pd.DataFrame(columns=columns)
    for arm in pd.unique(frame["arm"]):
        if arm == baseline:
            continue
        ratios = ratios_to_baseline(frame[frame["arm"] == arm].to_dict("records"), base, column)
        row = {"arm": arm, "label": (labels or {}).get(arm, arm)}
        for axis in COST_AXES:
            r = ratios.get(axis) or {}
            row[f"{axis} ratio"], row[f"{axis} at"] = r.get("ratio"), r.get("at")
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)


# ------------------------------------------------------------------ a run's metrics frame
def _clean(metrics: pd.DataFrame | None) -> pd.DataFrame:
    """A copy with numeric columns as floats and +-inf turned into NaN."""
    if metrics is None or len(metrics) == 0:
        return pd.DataFrame(columns=["arm", "epoch"])
    df = metrics.copy()
    for col in df.columns:
        if col in ("arm", "phase"):  # text; an empty cell is "", never "nan"
            df[col] = df[col].where(df[col].notna(), "").astype(str)
            continue
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
        df[col] = df[col].replace([np.inf, -np.inf], np.nan)
    if "epoch" in df.columns:
        df = df.sort_values(["arm", "epoch"], kind="stable")
    return df


def _arms(df: pd.DataFrame, arms: Sequence[str] | None = None) -> list[str]:
    """Arms present in `df`, known arms first in a fixed order, optionally filtered."""
    present = [a for a in pd.unique(df["arm"])] if "arm" in df.columns and len(df) else []
    order = [a for a in STRATEGY_NAMES if a in present] + [a for a in present if a not in STRATEGY_NAMES]
    if arms is not None:
        order = [a for a in order if a in arms]
    return order


def _events(events: Iterable[Mapping] | None, kind: str, arm: str | None = None) -> list[Mapping]:
    out = []
    for ev in events or ():
        if not isinstance(ev, Mapping) or ev.get("kind") != kind:
            continue
        if arm is not None and ev.get("arm") != arm:
            continue
        out.append(ev)
    return out


def _first_event(events, kind: str, arm: str) -> Mapping | None:
    found = _events(events, kind, arm)
    return found[0] if found else None


def _arm_frame(df: pd.DataFrame, arm: str, events=None) -> pd.DataFrame:
    """The rows of one arm, cut after its divergence epoch if it diverged."""
    part = df[df["arm"] == arm]
    div = _first_event(events, "diverged", arm)
    if div is not None and div.get("epoch") is not None and "epoch" in part.columns:
        part = part[part["epoch"] <= float(div["epoch"])]
    return part


def _value_at(part: pd.DataFrame, epoch, column: str):
    """Value of `column` in the row of `epoch` (None when absent or not finite)."""
    if column not in part.columns or "epoch" not in part.columns or epoch is None:
        return None
    rows = part[part["epoch"] == float(epoch)]
    if rows.empty:
        return None
    v = rows[column].iloc[-1]
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def switch_epoch(metrics: pd.DataFrame | None, events=None, arm: str = "two-phase") -> int | None:
    """The epoch at which `arm` switched from Adam to its second phase.

    Taken from the "switch" event; without one, the last epoch whose phase is
    "adam" before the first epoch of another phase. None if it never switched.
    """
    ev = _first_event(events, "switch", arm)
    if ev is not None and ev.get("epoch") is not None:
        return int(ev["epoch"])
    df = _clean(metrics)
    if "phase" not in df.columns or arm not in set(df.get("arm", ())):
        return None
    part = df[df["arm"] == arm]
    later = part[~part["phase"].isin(_NON_SWITCH_PHASES)]
    if later.empty or not _switches(arm):
        return None
    first_other = later["epoch"].min()
    before = part[(part["epoch"] < first_other) & (part["phase"] == "adam")]
    return int(before["epoch"].max()) if not before.empty else None


def peak(metrics: pd.DataFrame | None, events=None, arm: str = "two-phase") -> tuple[int, float] | None:
    """(epoch, gradient norm) of `arm`'s detected peak.

    From the "peak" event if there is one; otherwise the largest gradient norm
    among the arm's Adam epochs (up to the switch). None without data.
    """
    ev = _first_event(events, "peak", arm)
    if ev is not None and ev.get("epoch") is not None:
        value = ev.get("value")
        if value is None:
            df = _clean(metrics)
            value = _value_at(df[df["arm"] == arm] if "arm" in df.columns else df, ev["epoch"], "grad_norm")
        return int(ev["epoch"]), (float(value) if value is not None else float("nan"))
    df = _clean(metrics)
    if "grad_norm" not in df.columns or not len(df):
        return None
    part = df[df["arm"] == arm]
    if "phase" in part.columns:
        part = part[part["phase"] == "adam"]
    part = part.dropna(subset=["grad_norm"])
    if part.empty:
        return None
    row = part.loc[part["grad_norm"].idxmax()]
    return int(row["epoch"]), float(row["grad_norm"])


def curvature_ratios(metrics: pd.DataFrame | None, arm: str) -> pd.DataFrame:
    """`arm`'s probed epochs: columns epoch and ratio (hess_min / hess_max); empty without probe
    columns."""
    df = _clean(metrics)
    if not {"hess_min", "hess_max", "epoch"} <= set(df.columns):
        return pd.DataFrame(columns=["epoch", "ratio"])
    part = df[(df["arm"] == arm) & df["hess_min"].notna() & df["hess_max"].notna() & (df["hess_max"].abs() > 0)]
    return pd.DataFrame({"epoch": part["epoch"].astype(int),
                         "ratio": part["hess_min"] / part["hess_max"]}).reset_index(drop=True)


def curvature_milestones(metrics: pd.DataFrame | None, events=None, trunk: str = "adam",
                         switching: str = "two-phase", late_from: float = 0.6) -> dict | None:
    """What a probed run says about the convexity transition, in numbers (the Learn page's words).

    trunk: the arm that stays with Adam; switching: the arm whose rule fired. Keys: epochs,
    peak_epoch, switch_epoch; at_switch (epoch, ratio): the trunk's last probe at or before the
    switch; closest (epoch, ratio): the trunk's probe nearest to convex after the switch;
    late_from (the first epoch of the late part, late_from x epochs), late_probes, late_dips (its
    trunk probes below -0.1), late_low (epoch, ratio): the lowest of them; trunk_loss,
    branch_loss: final training losses; branch_best_epoch: the first epoch at which the switching
    arm reached its final loss (where it stalled); trunk_passes_epoch: the first epoch at which the
    trunk's loss was below that (None: never); branch_end (epoch, ratio): its last probe.
    None without a switch or probes on both arms.
    """
    df = _clean(metrics)
    sw = switch_epoch(df, events, switching)
    a, b = curvature_ratios(df, trunk), curvature_ratios(df, switching)
    if sw is None or a.empty or b.empty:
        return None
    pk = peak(df, events, switching)
    epochs = int(df["epoch"].max())
    before, after = a[a["epoch"] <= sw], a[a["epoch"] > sw]
    if before.empty or after.empty:
        return None
    late_start = int(math.ceil(late_from * epochs))
    late = a[a["epoch"] >= late_start]
    closest = after.loc[after["ratio"].idxmax()]
    low = late.loc[late["ratio"].idxmin()] if not late.empty else None
    losses = {arm: df[df["arm"] == arm].dropna(subset=["train_loss"]).sort_values("epoch") for arm in (trunk, switching)}
    branch = losses[switching]
    final = float(branch["train_loss"].iloc[-1])
    passed = losses[trunk][losses[trunk]["train_loss"] < final]
    return {
        "epochs": epochs, "peak_epoch": pk[0] if pk else None, "switch_epoch": sw,
        "at_switch": (int(before["epoch"].iloc[-1]), float(before["ratio"].iloc[-1])),
        "closest": (int(closest["epoch"]), float(closest["ratio"])),
        "late_from": late_start, "late_probes": int(len(late)), "late_dips": int((late["ratio"] < -0.1).sum()),
        "late_low": (int(low["epoch"]), float(low["ratio"])) if low is not None else None,
        "trunk_loss": float(losses[trunk]["train_loss"].iloc[-1]), "branch_loss": final,
        "branch_best_epoch": int(branch[branch["train_loss"] <= final]["epoch"].iloc[0]),
        "trunk_passes_epoch": int(passed["epoch"].iloc[0]) if not passed.empty else None,
        "branch_end": (int(b["epoch"].iloc[-1]), float(b["ratio"].iloc[-1])),
    }


def smooth(values: pd.Series, weight: float) -> pd.Series:
    """Exponential moving average with `weight` in [0, 1): 0 = unchanged.

    NaNs are skipped (they stay NaN and do not reset the average).
    """
    if not 0 <= weight < 1:
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight!r}")
    s = pd.to_numeric(values, errors="coerce").astype(float).replace([np.inf, -np.inf], np.nan)
    if weight == 0 or s.empty:
        return s
    return s.ewm(alpha=1 - weight, adjust=True, ignore_na=True).mean().where(s.notna())


def final_table(metrics: pd.DataFrame | None, events=None,
                arm_status: Mapping[str, str] | None = None) -> pd.DataFrame:
    """One row per arm with its last epoch's figures.

    Columns: arm, status (from arm_status, else "diverged" when a diverged
    event exists, else ""), epochs, phase, train_loss, train_acc, val_loss,
    val_acc, grad_norm, data_passes, seconds, peak_epoch, switch_epoch.
    For a diverged arm the figures are those of its last finite epoch.
    """
    df = _clean(metrics)
    rows = []
    for arm in _arms(df):
        part = _arm_frame(df, arm, events)
        status = (arm_status or {}).get(arm) or ("diverged" if _first_event(events, "diverged", arm) else "")
        finite = part.dropna(subset=[c for c in ("train_loss",) if c in part.columns])
        last = finite.iloc[-1] if not finite.empty else (part.iloc[-1] if not part.empty else None)
        row = {"arm": arm, "status": status,
               "epochs": int(part["epoch"].max()) if "epoch" in part.columns and part["epoch"].notna().any() else 0}
        for col in ("phase", "train_loss", "train_acc", "val_loss", "val_acc", "grad_norm",
                    "data_passes", "seconds"):
            row[col] = last[col] if last is not None and col in last.index else None
        pk = peak(df, events, arm) if _switches(arm) else None
        row["peak_epoch"] = pk[0] if pk else None
        row["switch_epoch"] = switch_epoch(df, events, arm) if _switches(arm) else None
        rows.append(row)
    return pd.DataFrame(rows, columns=["arm", "status", "epochs", "phase", "train_loss", "train_acc",
                                       "val_loss", "val_acc", "grad_norm", "data_passes", "seconds",
                                       "peak_epoch", "switch_epoch"])


def loss_ratio(metrics: pd.DataFrame | None, events=None, numerator: str = "two-phase",
               denominator: str = "adam", column: str = "train_loss") -> float | None:
    """Final `column` of `numerator` arm divided by that of `denominator` (None if unknown)."""
    table = final_table(metrics, events)
    if table.empty or column not in table.columns:
        return None
    vals = dict(zip(table["arm"], table[column]))
    a, b = vals.get(numerator), vals.get(denominator)
    try:
        a, b = float(a), float(b)
    except (TypeError, ValueError):
        return None
    if not (math.isfinite(a) and math.isfinite(b)) or b == 0:
        return None
    return a / b
