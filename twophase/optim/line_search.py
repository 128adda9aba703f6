"""Line searches for NonlinearCG.

Both searches look along a fixed direction ``d`` from the current point ``x``, i.e. at the
one-dimensional function ``phi(t) = loss(x + t * d)`` for steps ``t > 0``. They know
``phi(0)`` (``loss0``) and its slope ``phi'(0) = g . d`` (``gtd0``, negative for a descent
direction), and they call an ``evaluate`` function supplied by the optimizer for trial steps.

``strong_wolfe``   values and gradients; stops at a step satisfying the strong Wolfe conditions
                   (sufficient decrease with ``c1``, curvature ``|phi'(t)| <= c2 |phi'(0)|``).
                   Bracketing and zoom follow Nocedal & Wright, Algorithms 3.5 and 3.6, with
                   safeguarded cubic interpolation as in torch/optim/lbfgs.py.
``golden_section`` loss values only (forward passes), as the source paper did: bracket a minimum,
                   then golden-section search until the bracket is ``tol`` times the step wide
                   (Numerical Recipes' mnbrak and golden, simplified).

A trial whose loss (or slope) is NaN or infinite is treated as a step that is too long: it can
end a bracket from above but is never returned. Every search is bounded by ``max_evals`` calls
of ``evaluate``. When no acceptable point is found the best finite point with a decrease is
returned with ``success=False``, or ``step=0.0`` when there is none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, NamedTuple

from torch import Tensor

__all__ = ["LineSearchResult", "strong_wolfe", "golden_section", "cubic_interpolate"]

# Fraction of an interval at which golden-section search places its new point: (3 - sqrt 5) / 2.
GOLDEN = 0.5 * (3.0 - math.sqrt(5.0))
# Factor by which the bracketing phase of the golden search enlarges the step: the golden ratio.
GROW = 0.5 * (1.0 + math.sqrt(5.0))


@dataclass
class LineSearchResult:
    """What a line search found.

    Attributes:
        step: the accepted step ``t``; ``0.0`` means "stay at the starting point".
        loss: ``phi(step)`` (the starting loss when ``step`` is 0).
        grad: flat gradient at the accepted point if the search computed it, else None.
        gtd: slope ``grad . d`` at the accepted point if known, else None.
        loss_evals: number of calls of ``evaluate``.
        success: True if the search met its acceptance test (strong Wolfe conditions; for the
            golden search: a minimum was bracketed). On False the step, if not 0, is the best
            finite point with a decrease that was seen.
        non_finite: number of trial steps whose loss or slope was NaN or infinite.
    """

    step: float
    loss: float
    grad: Tensor | None
    gtd: float | None
    loss_evals: int
    success: bool
    non_finite: int


class _Trial(NamedTuple):
    t: float
    f: float  # math.inf for a non-finite trial
    g: Tensor | None
    gtd: float  # math.nan for a non-finite trial


def cubic_interpolate(x1, f1, g1, x2, f2, g2, bounds=None):
    """Minimiser of the cubic through (x1, f1) and (x2, f2) with slopes g1 and g2.

    Clipped to ``bounds`` (default: the interval between x1 and x2); falls back to the middle
    of the bounds when the cubic has no minimiser or the arithmetic is not finite.
    Ported, like PyTorch's, from torch/optim's polyinterp.lua.
    """
    if bounds is not None:
        xmin_bound, xmax_bound = bounds
    else:
        xmin_bound, xmax_bound = (x1, x2) if x1 <= x2 else (x2, x1)
    if x1 == x2:
        return (xmin_bound + xmax_bound) / 2.0
    d1 = g1 + g2 - 3.0 * (f1 - f2) / (x1 - x2)
    d2_square = d1 * d1 - g1 * g2
    if d2_square >= 0 and math.isfinite(d2_square):
        d2 = math.sqrt(d2_square)
        if x1 <= x2:
            denominator = g2 - g1 + 2.0 * d2
            min_pos = x2 - (x2 - x1) * ((g2 + d2 - d1) / denominator) if denominator else math.nan
        else:
            denominator = g1 - g2 + 2.0 * d2
            min_pos = x1 - (x1 - x2) * ((g1 + d2 - d1) / denominator) if denominator else math.nan
        if math.isfinite(min_pos):
            return min(max(min_pos, xmin_bound), xmax_bound)
    return (xmin_bound + xmax_bound) / 2.0


def strong_wolfe(
    evaluate: Callable[[float], tuple[float, Tensor, float]],
    loss0: float,
    gtd0: float,
    step: float,
    c1: float = 1e-4,
    c2: float = 0.2,
    max_evals: int = 25,
    xtol: float = 1e-12,
) -> LineSearchResult:
    """Find a step satisfying the strong Wolfe conditions.

    Args:
        evaluate: ``evaluate(t) -> (loss, flat_grad, slope)`` at ``x + t * d``; ``slope`` is
            ``flat_grad . d``. NaN or infinite values mean "step too long".
        loss0: the loss at ``t = 0``.
        gtd0: the slope at ``t = 0``; must be negative.
        step: the first trial step (> 0).
        c1: sufficient-decrease constant, ``phi(t) <= loss0 + c1 * t * gtd0``.
        c2: curvature constant, ``|phi'(t)| <= c2 * |gtd0|`` (0.1 to 0.4 suits CG).
        max_evals: the most calls of ``evaluate``.
        xtol: stop when the bracket is narrower than ``xtol`` times its right end.
    """
    if not gtd0 < 0:
        raise ValueError(f"strong_wolfe needs a descent direction (gtd0 < 0), got gtd0={gtd0}")
    if not (step > 0 and math.isfinite(step)):
        raise ValueError(f"strong_wolfe needs a positive finite first step, got {step}")
    evals = 0
    non_finite = 0

    def probe(t: float) -> _Trial:
        nonlocal evals, non_finite
        f, g, gtd = evaluate(t)
        evals += 1
        if not (math.isfinite(f) and math.isfinite(gtd)):
            non_finite += 1
            return _Trial(t, math.inf, None, math.nan)
        return _Trial(t, f, g, gtd)

    def result(point: _Trial, success: bool) -> LineSearchResult:
        if point.t == 0.0:
            return LineSearchResult(0.0, loss0, None, None, evals, False, non_finite)
        return LineSearchResult(point.t, point.f, point.g, point.gtd, evals, success, non_finite)

    def sufficient_decrease(point: _Trial) -> bool:
        return point.f <= loss0 + c1 * point.t * gtd0

    def curvature(point: _Trial) -> bool:
        return abs(point.gtd) <= -c2 * gtd0

    # Phase 1: bracket. Grow the step until it is too long, the loss rises, or the slope turns.
    prev = _Trial(0.0, loss0, None, gtd0)
    t = step
    low = high = None
    while evals < max_evals:
        trial = probe(t)
        if trial.f == math.inf or not sufficient_decrease(trial) or trial.f >= prev.f:
            low, high = prev, trial
            break
        if curvature(trial):
            return result(trial, True)
        if trial.gtd >= 0:
            low, high = trial, prev
            break
        # still going down steeply: extrapolate, at least 10% beyond, at most 10 times further
        t = cubic_interpolate(
            prev.t, prev.f, prev.gtd, trial.t, trial.f, trial.gtd,
            bounds=(trial.t + 0.1 * (trial.t - prev.t), 10.0 * trial.t),
        )
        prev = trial
    if low is None:
        # budget spent while the loss kept falling: the last point is the best seen
        return result(prev, False)

    # Phase 2: zoom. `low` satisfies sufficient decrease and has the lowest loss seen so far;
    # the bracket between `low` and `high` contains a point satisfying the strong Wolfe conditions.
    insufficient_progress = False
    while evals < max_evals:
        lo_t, hi_t = min(low.t, high.t), max(low.t, high.t)
        if hi_t - lo_t <= xtol * hi_t:
            break
        if high.f == math.inf:
            # nothing known beyond a non-finite point: bisect towards the finite end
            t = 0.5 * (low.t + high.t)
        else:
            t = cubic_interpolate(low.t, low.f, low.gtd, high.t, high.f, high.gtd)
            # keep trial points away from the ends of the bracket (as torch's _strong_wolfe)
            margin = 0.1 * (hi_t - lo_t)
            if min(hi_t - t, t - lo_t) < margin:
                if insufficient_progress or t >= hi_t or t <= lo_t:
                    t = hi_t - margin if abs(t - hi_t) < abs(t - lo_t) else lo_t + margin
                    insufficient_progress = False
                else:
                    insufficient_progress = True
            else:
                insufficient_progress = False
        trial = probe(t)
        if trial.f == math.inf or not sufficient_decrease(trial) or trial.f >= low.f:
            high = trial
        else:
            if curvature(trial):
                return result(trial, True)
            if trial.gtd * (high.t - low.t) >= 0:
                high = low
            low = trial
    return result(low, False)


def golden_section(
    evaluate: Callable[[float], float],
    loss0: float,
    gtd0: float,
    step: float,
    tol: float = 1e-4,
    max_evals: int = 25,
) -> LineSearchResult:
    """Bracket a minimum along the line, then narrow it by golden-section search (values only).

    Args:
        evaluate: ``evaluate(t) -> loss`` at ``x + t * d``; NaN or infinite means too long.
        loss0: the loss at ``t = 0``.
        gtd0: the slope at ``t = 0`` (negative). Only used to place the trial points when
            the first step is too long (a quadratic model through loss0, gtd0 and the trial).
        step: the first trial step (> 0).
        tol: relative tolerance: stop when the bracket is narrower than ``tol`` times the
            step (Numerical Recipes: ``|x3 - x0| <= tol * (|x1| + |x2|)``).
        max_evals: the most calls of ``evaluate``. When the budget ends after a minimum was
            bracketed, the best point so far is accepted (success); when it ends before, the
            best decrease seen is returned with ``success=False``.
    """
    if not (step > 0 and math.isfinite(step)):
        raise ValueError(f"golden_section needs a positive finite first step, got {step}")
    evals = 0
    non_finite = 0

    def probe(t: float) -> float:
        nonlocal evals, non_finite
        f = evaluate(t)
        evals += 1
        if not math.isfinite(f):
            non_finite += 1
            return math.inf
        return f

    def result(t: float, f: float, success: bool) -> LineSearchResult:
        if t == 0.0 or not f < loss0:
            return LineSearchResult(0.0, loss0, None, None, evals, False, non_finite)
        return LineSearchResult(t, f, None, None, evals, success, non_finite)

    # Phase 1: a bracket a < b < c with phi(b) below phi(a) and phi(c).
    a, fa = 0.0, loss0
    b, fb = step, probe(step)
    if fb < fa:
        # the first step goes down: enlarge it until the loss rises again
        while True:
            if evals >= max_evals:
                return result(b, fb, False)
            c = b + GROW * (b - a)
            fc = probe(c)
            if fc >= fb:
                break
            a, fa, b, fb = b, fb, c, fc
    else:
        # the first step is too long: shrink it until the loss is below loss0
        c, fc = b, fb
        while True:
            if evals >= max_evals:
                return result(0.0, loss0, False)
            curvature = fc - loss0 - gtd0 * c  # > 0 when fc >= loss0 and gtd0 < 0
            if fc < math.inf and curvature > 0 and gtd0 < 0:
                b = -gtd0 * c * c / (2.0 * curvature)
                b = min(max(b, 0.1 * c), 0.5 * c)
            else:
                b = 0.1 * c if fc == math.inf else 0.5 * c
            fb = probe(b)
            if fb < fa:
                break
            c, fc = b, fb

    # Phase 2: golden-section search on [a, c] around b.
    x0, x3 = a, c
    if evals >= max_evals:
        return result(b, fb, True)
    if c - b > b - a:
        x1, f1 = b, fb
        x2 = b + GOLDEN * (c - b)
        f2 = probe(x2)
    else:
        x2, f2 = b, fb
        x1 = b - GOLDEN * (b - a)
        f1 = probe(x1)
    while x3 - x0 > tol * (abs(x1) + abs(x2)) and evals < max_evals:
        if f2 < f1:
            x0, x1, f1 = x1, x2, f2
            x2 = x1 + GOLDEN * (x3 - x1)
            f2 = probe(x2)
        else:
            x3, x2, f2 = x2, x1, f1
            x1 = x2 - GOLDEN * (x2 - x0)
            f1 = probe(x1)
    if f1 <= f2:
        return result(x1, f1, True)
    return result(x2, f2, True)
