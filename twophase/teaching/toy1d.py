"""The one-parameter toy (the source paper's first): K tanh units sharing one weight, and its figure.

Everything here is a pure function of its arguments (numbers, strings, tuples), so the
Learn page can cache the results. No streamlit.

K tanh units share one weight p. Unit k sees a fixed input x_k and should output a
target t_k drawn at random from (0, 1); the loss is the mean squared error

    L(p) = 1/K * sum_k (tanh(p * x_k) - t_k)^2.

The inputs are fixed and evenly spread over [0.5, 2] (midpoints of K equal cells, so
one unit gets x = 1.25); the seed only draws the targets. The derivatives are analytic
(u_k = tanh(p x_k), s_k = 1 - u_k^2):

    L'(p)  = 2/K * sum_k x_k s_k (u_k - t_k)
    L''(p) = 2/K * sum_k x_k^2 s_k (s_k - 2 u_k (u_k - t_k)).

Far from the minimum the units saturate, the loss flattens out and L'' < 0
(non-convex); near the minimum L'' > 0 (convex). On a path that walks downhill, |L'|
grows while L'' < 0 and shrinks once L'' > 0: in one dimension the peak of the gradient
norm is exactly the inflection point, the border between the two regions.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

UNIT_INPUT_RANGE = (0.5, 2.0)
MAX_UNITS = 1000


def _check_units(units) -> int:
    if isinstance(units, bool) or not isinstance(units, (int, np.integer)) or not 1 <= units <= MAX_UNITS:
        raise ValueError(f"units must be an integer from 1 to {MAX_UNITS}; got {units!r}")
    return int(units)


def toy1d_data(units: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and targets of the one-parameter toy.

    Arguments:
        units: number K of tanh units (1 to 1000).
        seed: seed of the random targets.

    Returns (inputs, targets): two float64 arrays of length K. The inputs are the
    midpoints of K equal cells of [0.5, 2] (fixed); the targets are uniform in (0, 1).
    """
    k = _check_units(units)
    lo, hi = UNIT_INPUT_RANGE
    inputs = lo + (hi - lo) * (np.arange(k) + 0.5) / k
    rng = np.random.default_rng(int(seed))
    targets = rng.uniform(0.0, 1.0, size=k)
    return inputs.astype(np.float64), targets.astype(np.float64)


def _toy1d_parts(p, inputs, targets):
    p = np.asarray(p, dtype=np.float64)
    x = np.asarray(inputs, dtype=np.float64)
    t = np.asarray(targets, dtype=np.float64)
    if x.ndim != 1 or x.shape != t.shape or x.size == 0:
        raise ValueError("inputs and targets must be 1-D arrays of the same non-zero length")
    u = np.tanh(p[..., None] * x)
    return p, x, t, u, 1.0 - u * u


def toy1d_loss(p, inputs, targets) -> np.ndarray:
    """L(p) = mean_k (tanh(p x_k) - t_k)^2, for a number or an array of p (same shape out)."""
    _, _, t, u, _ = _toy1d_parts(p, inputs, targets)
    return ((u - t) ** 2).mean(axis=-1)


def toy1d_grad(p, inputs, targets) -> np.ndarray:
    """L'(p), analytic (same shape as p)."""
    _, x, t, u, s = _toy1d_parts(p, inputs, targets)
    return (2.0 * x * s * (u - t)).mean(axis=-1)


def toy1d_curvature(p, inputs, targets) -> np.ndarray:
    """L''(p), analytic (same shape as p); negative = non-convex there."""
    _, x, t, u, s = _toy1d_parts(p, inputs, targets)
    return (2.0 * x * x * s * (s - 2.0 * u * (u - t))).mean(axis=-1)


def _bisect(fn, lo: float, hi: float, iters: int = 60) -> float:
    """A root of fn in [lo, hi] where fn changes sign (bisection)."""
    flo = fn(lo)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        fmid = fn(mid)
        if (fmid < 0) == (flo < 0):
            lo, flo = mid, fmid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def nonconvex_intervals(inputs, targets, p_min: float = -3.0, p_max: float = 3.0,
                        points: int = 2001) -> list[tuple[float, float]]:
    """The stretches of [p_min, p_max] where L''(p) < 0, as (start, end) pairs.

    Arguments:
        inputs, targets: the toy's data (see toy1d_data).
        p_min, p_max: the range looked at (an interval touching an end is cut there).
        points: grid size used to find sign changes; each border is then refined by
            bisection on the analytic L'' to about 1e-12.
    """
    if not p_max > p_min:
        raise ValueError(f"p_max must be larger than p_min; got {p_min} and {p_max}")
    grid = np.linspace(p_min, p_max, int(points))
    neg = toy1d_curvature(grid, inputs, targets) < 0

    def curv(q):
        return float(toy1d_curvature(q, inputs, targets))

    out = []
    start = p_min if neg[0] else None
    for i in range(1, len(grid)):
        if neg[i] and not neg[i - 1]:
            start = _bisect(curv, grid[i - 1], grid[i])
        elif not neg[i] and neg[i - 1]:
            out.append((float(start), _bisect(curv, grid[i - 1], grid[i])))
            start = None
    if start is not None:
        out.append((float(start), float(p_max)))
    return out


def toy1d_minima(inputs, targets, p_min: float = -3.0, p_max: float = 3.0,
                 points: int = 2001) -> list[float]:
    """Local minima of L in (p_min, p_max) (where L' goes from - to +), refined by bisection."""
    grid = np.linspace(p_min, p_max, int(points))
    d = toy1d_grad(grid, inputs, targets)

    def grad(q):
        return float(toy1d_grad(q, inputs, targets))

    return [_bisect(grad, grid[i - 1], grid[i]) for i in range(1, len(grid)) if d[i - 1] < 0 <= d[i]]


def toy1d_descent_path(start: float, inputs, targets, p_min: float = -3.0, p_max: float = 3.0,
                       points: int = 2001) -> dict:
    """The path that walks downhill along p from `start` to the first local minimum (or a range end).

    Arguments:
        start: starting value of p.
        inputs, targets: the toy's data.
        p_min, p_max: the range; the walk stops at its ends.
        points: grid size over [p_min, p_max] (the path uses the grid points it crosses).

    Returns a dict of float64 arrays "p", "loss", "grad_norm" (|L'|), "curvature" (L'')
    in walking order, and "peak" (index of the largest gradient norm on the path).
    """
    if not p_min <= start <= p_max:
        raise ValueError(f"start must lie in [{p_min}, {p_max}]; got {start}")
    grid = np.linspace(p_min, p_max, int(points))
    direction = -1.0 if float(toy1d_grad(start, inputs, targets)) > 0 else 1.0
    ahead = grid[grid > start] if direction > 0 else grid[grid < start][::-1]
    path = np.concatenate([[start], ahead])
    d = toy1d_grad(path, inputs, targets)
    # keep walking while the slope still points the same way (downhill)
    downhill = (-direction * d) > 0
    stop = len(path) if downhill.all() else int(np.argmin(downhill))
    path = path[: max(stop, 1)]
    gn = np.abs(toy1d_grad(path, inputs, targets))
    return {
        "p": path,
        "loss": toy1d_loss(path, inputs, targets),
        "grad_norm": gn,
        "curvature": toy1d_curvature(path, inputs, targets),
        "peak": int(np.argmax(gn)),
    }


NONCONVEX_FILL = "rgba(255, 127, 14, 0.18)"   # light orange: not convex
CONVEX_COLOR = "#1f77b4"
NONCONVEX_COLOR = "#ff7f0e"


def toy1d_figure(units: int, seed: int = 0, start: float = -2.0, p_min: float = -3.0,
                 p_max: float = 3.0) -> go.Figure:
    """Two panels: the loss against p with the non-convex stretches shaded, and the gradient
    norm against the loss along the downhill path from `start`.

    Arguments:
        units: number of tanh units K.
        seed: seed of the targets.
        start: where the downhill walk of the right panel starts.
        p_min, p_max: range of p shown.
    """
    inputs, targets = toy1d_data(units, seed)
    grid = np.linspace(p_min, p_max, 801)
    loss = toy1d_loss(grid, inputs, targets)
    curv = toy1d_curvature(grid, inputs, targets)
    intervals = nonconvex_intervals(inputs, targets, p_min, p_max)
    minima = toy1d_minima(inputs, targets, p_min, p_max)
    path = toy1d_descent_path(start, inputs, targets, p_min, p_max)

    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12, subplot_titles=(
        "Loss L(p), shaded where L'' < 0", "|L'(p)| against L(p), walking downhill"))
    fig.add_trace(go.Scatter(
        x=grid, y=loss, mode="lines", name="loss L(p)", line=dict(color="#333333", width=2),
        customdata=curv, hovertemplate="p=%{x:.3f}<br>L=%{y:.4f}<br>L''=%{customdata:.3f}<extra></extra>",
    ), row=1, col=1)
    # shaded after the first trace: plotly drops shapes aimed at a subplot that is still empty
    for lo, hi in intervals:
        fig.add_vrect(x0=lo, x1=hi, fillcolor=NONCONVEX_FILL, line_width=0, layer="below", row=1, col=1)
    # borders of the non-convex stretches inside the range: the inflection points
    borders = sorted({b for iv in intervals for b in iv if p_min < b < p_max})
    if borders:
        fig.add_trace(go.Scatter(
            x=borders, y=toy1d_loss(np.array(borders), inputs, targets), mode="markers",
            name="inflection (L'' = 0)", marker=dict(symbol="diamond", size=9, color=NONCONVEX_COLOR),
            hovertemplate="inflection p=%{x:.3f}<extra></extra>",
        ), row=1, col=1)
    if minima:
        fig.add_trace(go.Scatter(
            x=minima, y=toy1d_loss(np.array(minima), inputs, targets), mode="markers", name="minimum",
            marker=dict(symbol="x", size=11, color="#2ca02c"),
            hovertemplate="minimum p=%{x:.3f}<extra></extra>",
        ), row=1, col=1)
    fig.add_trace(go.Scatter(
        x=[start], y=[float(toy1d_loss(start, inputs, targets))], mode="markers", name="start",
        marker=dict(symbol="circle-open", size=12, color="#000000", line=dict(width=2)),
        hovertemplate="start p=%{x:.3f}<extra></extra>",
    ), row=1, col=1)

    # right: |L'| against L along the walk, coloured by the sign of L''
    nonconvex = path["curvature"] < 0
    for flag, color, label in ((True, NONCONVEX_COLOR, "path, not convex"), (False, CONVEX_COLOR, "path, convex")):
        y = np.where(nonconvex == flag, path["grad_norm"], np.nan)
        # join the two colours at the border
        edges = np.flatnonzero(np.diff(nonconvex.astype(int)))
        for e in edges:
            y[e] = path["grad_norm"][e]
            y[e + 1] = path["grad_norm"][e + 1]
        fig.add_trace(go.Scatter(
            x=path["loss"], y=y, mode="lines", name=label, line=dict(color=color, width=3),
            customdata=path["p"], hovertemplate="p=%{customdata:.3f}<br>L=%{x:.4f}<br>|L'|=%{y:.4f}<extra></extra>",
        ), row=1, col=2)
    k = path["peak"]
    fig.add_trace(go.Scatter(
        x=[path["loss"][k]], y=[path["grad_norm"][k]], mode="markers+text", name="peak of |L'|",
        text=["peak"], textposition="top center", marker=dict(symbol="star", size=14, color="#d62728"),
        hovertemplate="peak at p=%{customdata:.3f}<extra></extra>", customdata=[path["p"][k]],
    ), row=1, col=2)
    fig.update_xaxes(title_text="weight p", row=1, col=1)
    fig.update_yaxes(title_text="loss", row=1, col=1)
    fig.update_xaxes(title_text="loss (falls to the right, as training goes)", autorange="reversed", row=1, col=2)
    fig.update_yaxes(title_text="gradient norm |L'(p)|", rangemode="tozero", row=1, col=2)
    fig.update_layout(height=420, margin=dict(l=60, r=20, t=60, b=50),
                      legend=dict(orientation="h", yanchor="top", y=-0.3, x=0.0))
    return fig
