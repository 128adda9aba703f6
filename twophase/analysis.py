"""Comparing arms at equal cost: the numbers behind every "two-phase / Adam" ratio.

An arm's curve is a sequence of points (cost, value) in the order they were recorded, cost
being the epoch, the cumulative data passes or the wall time. Comparing two arms at equal cost
means taking, for each, the value it had reached within the same budget:

    value_within(points, budget)    the value of the last point whose cost is <= budget
    ratio_at_equal_cost(a, b)       a's value / b's value within the smaller of their total costs
    ratios_to_baseline(rows, base)  that ratio at equal epochs, equal data passes and equal time

Used by the engine's summary (twophase/training/summary.py), the CLI, the pages and the benchmarks.
Pure Python; NaN and infinities are never a value.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

__all__ = ["COST_AXES", "value_within", "ratio_at_equal_cost", "ratios_to_baseline"]

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
    import pandas as pd

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
