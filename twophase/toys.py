"""Toy losses for teaching the convexity transition, and the trajectories of twophase's optimizers on them.

Everything here is a pure function of its arguments (numbers, strings, tuples), so the
Learn page can cache the results. No streamlit.

One parameter (the source paper's first toy)
--------------------------------------------
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

Two parameters
--------------
"tanh-family": the paper's two-layer tanh family y = tanh(h) + C tanh(-2h), read as a
    network with one hidden pre-activation h = w1 * x + w2 (w1 = input weight, w2 =
    bias: the two trainable weights), two hidden tanh units with fixed input gains 1
    and -2 and fixed output weights 1 and C. It is fitted by mean squared error to the
    outputs of the same network at the teacher weights (w1, w2) = (1, 0.5) on 21 inputs
    evenly spaced in [-2, 2], so the global minimum is (1, 0.5) with loss 0 for every C.
    For C <= 0.5 the activation tanh(h) + C tanh(-2h) is monotone and the teacher is the
    only minimum in view; above 0.5 its slope at h = 0 is 1 - 2C < 0, the activation gets
    a dip, and extra local minima appear (two near C = 0.55, three near C = 0.6).
"valley": a Rosenbrock-like valley L(a, b) = (1 - a)^2 + 10 (b - a^2)^2, minimum (1, 1).
    Its Hessian is positive definite exactly below the curve b = a^2 + 1/20; above it the
    surface is not convex.

Trajectories
------------
From a start point, three arms, all run by twophase's own optimizers on one float64
tensor of two parameters; one "epoch" of a toy is one optimizer step on the full loss:

    "adam"       TwoPhase with a rule that never fires within the run (pure Adam, the very
                 same steps as the two-phase arm before its switch)
    "cg"         NonlinearCG from the start
    "two-phase"  TwoPhase with SwitchRule(tolerance): Adam until the gradient norm after a
                 step is at or below tolerance x its running maximum, then NonlinearCG.

Figures (plotly): toy1d_figure, surface_figure, trajectory_curves_figure.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from twophase.optim import NonlinearCG, SwitchRule, TwoPhase
from twophase.plots import arm_color, arm_label

__all__ = [
    "UNIT_INPUT_RANGE", "toy1d_data", "toy1d_loss", "toy1d_grad", "toy1d_curvature",
    "nonconvex_intervals", "toy1d_minima", "toy1d_descent_path", "toy1d_figure",
    "SURFACES", "C_RANGE", "Surface", "surface_loss", "surface_value_and_grad", "surface_hessian",
    "hessian_eigenvalues", "surface_grid", "local_minima",
    "Trajectory", "ARMS", "trajectories", "surface_figure", "trajectory_curves_figure",
]

# ============================================================================ one parameter

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
        "Loss L(p); shaded where L'' < 0", "Gradient norm against loss, downhill from the start"))
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
                      legend=dict(orientation="h", yanchor="top", y=-0.18, x=0.0))
    return fig


# ============================================================================ two parameters

C_RANGE = (0.40, 0.60)
TANH_TEACHER = (1.0, 0.5)
TANH_INPUTS = 21
VALLEY_STEEPNESS = 10.0


@dataclass(frozen=True)
class Surface:
    """A two-parameter toy loss (see the module docstring)."""

    name: str
    label: str
    w1_label: str
    w2_label: str
    box: tuple[tuple[float, float], tuple[float, float]]   # ((w1 min, w1 max), (w2 min, w2 max))
    start: tuple[float, float]                               # suggested start point
    minimum: tuple[float, float]                             # the global minimum
    lr: float                                                # suggested Adam learning rate
    description: str = field(default="", compare=False)


SURFACES = {
    "tanh-family": Surface(
        name="tanh-family",
        label="two-layer tanh net: y = tanh(h) + C·tanh(−2h), h = w1·x + w2",
        w1_label="w1 (input weight)", w2_label="w2 (bias)",
        box=((-1.5, 2.5), (-1.5, 2.5)), start=(-1.0, 2.0), minimum=TANH_TEACHER, lr=0.05,
        description=(
            "One hidden pre-activation h = w1·x + w2 feeds two tanh units with fixed gains 1 and −2, "
            "mixed by fixed output weights 1 and C. The net is fitted by mean squared error to its own "
            "outputs at the teacher weights (w1, w2) = (1, 0.5) on 21 inputs in [−2, 2], so (1, 0.5) is the "
            "global minimum for every C. Above C = 0.5 the activation gets a dip at h = 0 and extra local "
            "minima appear."),
    ),
    "valley": Surface(
        name="valley",
        label="Rosenbrock-like valley: (1 − a)² + 10·(b − a²)²",
        w1_label="a", w2_label="b",
        box=((-2.0, 2.0), (-1.0, 3.0)), start=(-1.5, 2.8), minimum=(1.0, 1.0), lr=0.05,
        description=(
            "A curved, narrow valley with its minimum at (1, 1). The Hessian is positive definite below "
            "the curve b = a² + 0.05 and indefinite above it."),
    ),
}


def _surface(name: str) -> Surface:
    if name not in SURFACES:
        raise ValueError(f"surface must be one of {', '.join(SURFACES)}; got {name!r}")
    return SURFACES[name]


def _check_c(c) -> float:
    if isinstance(c, bool) or not isinstance(c, (int, float, np.floating)) or not math.isfinite(c):
        raise ValueError(f"c must be a finite number (the slider offers {C_RANGE[0]} to {C_RANGE[1]}); got {c!r}")
    return float(c)


def _tanh_activation(h: torch.Tensor, c: float) -> torch.Tensor:
    # tanh(h) + c * tanh(-2h), with tanh odd
    return torch.tanh(h) - c * torch.tanh(2.0 * h)


def surface_loss(name: str, w: torch.Tensor, c: float = 0.5) -> torch.Tensor:
    """The loss of surface `name` at `w`.

    Arguments:
        name: "tanh-family" or "valley".
        w: tensor of shape (..., 2): the two weights (w1, w2) = (a, b) for the valley.
        c: the constant C of the tanh family (ignored by the valley).

    Returns a tensor of shape w.shape[:-1] (differentiable by autograd).
    """
    _surface(name)
    c = _check_c(c)
    if not isinstance(w, torch.Tensor) or w.shape[-1:] != (2,):
        raise ValueError("w must be a torch tensor whose last dimension has size 2")
    w1, w2 = w[..., 0], w[..., 1]
    if name == "valley":
        return (1.0 - w1) ** 2 + VALLEY_STEEPNESS * (w2 - w1 ** 2) ** 2
    x_np, target_np = _tanh_data_np(c)
    x = torch.as_tensor(x_np, dtype=w.dtype, device=w.device)
    target = torch.as_tensor(target_np, dtype=w.dtype, device=w.device)
    out = _tanh_activation(w1[..., None] * x + w2[..., None], c)
    return (out - target).square().mean(dim=-1)


def surface_value_and_grad(name: str, w, c: float = 0.5) -> tuple[float, np.ndarray]:
    """Loss and its analytic gradient at one point, in numpy float64 (fast path for the optimizers).

    Arguments:
        name: "tanh-family" or "valley".
        w: the point (w1, w2), any sequence of two numbers.
        c: C of the tanh family.

    Returns (loss, gradient as an array of shape (2,)); equal to surface_loss and its autograd
    gradient (tests check it), without autograd's overhead on two numbers.
    """
    _surface(name)
    c = _check_c(c)
    w1, w2 = (float(v) for v in np.asarray(w, dtype=np.float64).reshape(2))
    if name == "valley":
        k = VALLEY_STEEPNESS
        r = w2 - w1 * w1
        loss = (1.0 - w1) ** 2 + k * r * r
        return loss, np.array([-2.0 * (1.0 - w1) - 4.0 * k * w1 * r, 2.0 * k * r])
    x, target = _tanh_data_np(c)
    h = w1 * x + w2
    t1, t2 = np.tanh(h), np.tanh(2.0 * h)
    r = t1 - c * t2 - target
    dh = (2.0 / x.size) * r * ((1.0 - t1 * t1) - 2.0 * c * (1.0 - t2 * t2))
    return float(np.mean(r * r)), np.array([float(dh @ x), float(dh.sum())])


@functools.lru_cache(maxsize=64)
def _tanh_data_np(c: float) -> tuple[np.ndarray, np.ndarray]:
    x = np.linspace(-2.0, 2.0, TANH_INPUTS)
    h = TANH_TEACHER[0] * x + TANH_TEACHER[1]
    target = np.tanh(h) - c * np.tanh(2.0 * h)
    return x, target


def surface_hessian(name: str, w1, w2, c: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Loss and analytic Hessian entries at points (w1, w2), in numpy float64.

    Arguments:
        name: "tanh-family" or "valley".
        w1, w2: arrays of the same shape (or numbers): the points.
        c: C of the tanh family.

    Returns (loss, h11, h12, h22), arrays of that shape (tests check them against autograd).
    """
    _surface(name)
    c = _check_c(c)
    w1 = np.asarray(w1, dtype=np.float64)
    w2 = np.asarray(w2, dtype=np.float64)
    if name == "valley":
        k = VALLEY_STEEPNESS
        r = w2 - w1 * w1
        loss = (1.0 - w1) ** 2 + k * r * r
        return loss, 2.0 + k * (12.0 * w1 * w1 - 4.0 * w2), -4.0 * k * w1 + 0.0 * w2, 2.0 * k + 0.0 * (w1 + w2)
    x, target = _tanh_data_np(c)
    h = w1[..., None] * x + w2[..., None]
    t1, t2 = np.tanh(h), np.tanh(2.0 * h)
    s1, s2 = 1.0 - t1 * t1, 1.0 - t2 * t2
    r = t1 - c * t2 - target
    d1 = s1 - 2.0 * c * s2                           # g'(h)
    d2 = -2.0 * s1 * t1 + 8.0 * c * s2 * t2          # g''(h)
    q = (2.0 / x.size) * (d1 * d1 + r * d2)          # d2L/dh_i^2 (the h_i are independent)
    return (r * r).mean(axis=-1), (q * x * x).sum(axis=-1), (q * x).sum(axis=-1), q.sum(axis=-1)


def hessian_eigenvalues(name: str, w, c: float = 0.5) -> tuple[float, float]:
    """(smallest, largest) eigenvalue of the 2x2 Hessian of surface `name` at the point w = (w1, w2)."""
    w1, w2 = (float(v) for v in np.asarray(w, dtype=np.float64).reshape(2))
    _, haa, hab, hbb = surface_hessian(name, w1, w2, c)
    mean = 0.5 * (float(haa) + float(hbb))
    radius = math.hypot(0.5 * (float(haa) - float(hbb)), float(hab))
    return mean - radius, mean + radius


def surface_grid(name: str, c: float = 0.5, n: int = 121) -> dict:
    """Loss and Hessian eigen-signs on an n x n grid over the surface's box.

    Arguments:
        name: the surface ("tanh-family" or "valley").
        c: C of the tanh family.
        n: points per axis (10 to 400).

    Returns a dict: "w1", "w2" (1-D arrays of length n), and (n, n) arrays indexed
    [i2, i1] (rows = w2, as plotly's z): "loss", "eig_min", "eig_max" (the eigenvalues of
    the 2x2 Hessian), "nonconvex" (bool: the Hessian is not positive definite, eig_min <= 0).
    """
    surf = _surface(name)
    if isinstance(n, bool) or not isinstance(n, int) or not 10 <= n <= 400:
        raise ValueError(f"n must be an integer from 10 to 400; got {n!r}")
    (a0, a1), (b0, b1) = surf.box
    w1 = np.linspace(a0, a1, n)
    w2 = np.linspace(b0, b1, n)
    W1, W2 = np.meshgrid(w1, w2)            # W1[i2, i1] = w1[i1]
    loss, haa, hab, hbb = surface_hessian(name, W1, W2, c)
    mean = 0.5 * (haa + hbb)
    radius = np.sqrt((0.5 * (haa - hbb)) ** 2 + hab ** 2)
    eig_min, eig_max = mean - radius, mean + radius
    return {"w1": w1, "w2": w2, "loss": loss, "eig_min": eig_min, "eig_max": eig_max,
            "nonconvex": eig_min <= 0}


def local_minima(name: str, c: float = 0.5, n: int = 161) -> list[tuple[float, float, float]]:
    """Grid points lower than their 8 neighbours (rough local minima), as (w1, w2, loss)."""
    g = surface_grid(name, c, n)
    L = g["loss"]
    inner = L[1:-1, 1:-1]
    is_min = np.ones_like(inner, dtype=bool)
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            if di or dj:
                is_min &= inner < L[1 + di:L.shape[0] - 1 + di, 1 + dj:L.shape[1] - 1 + dj]
    return [(float(g["w1"][j + 1]), float(g["w2"][i + 1]), float(inner[i, j]))
            for i, j in np.argwhere(is_min)]


# ============================================================================ trajectories

ARMS = ("adam", "cg", "two-phase")


@dataclass(frozen=True)
class Trajectory:
    """The path of one arm on a two-parameter toy (index k = after k steps; 0 = the start).

    Attributes:
        arm: "adam", "cg" or "two-phase".
        points: (steps + 1, 2) array of weights.
        loss: (steps + 1,) loss at each point.
        grad_norm: (steps + 1,) Euclidean norm of the gradient at each point.
        phase: per point, the phase of the step that led to it ("start", "adam", "cg").
        evals: (steps + 1,) cumulative loss evaluations (an Adam step costs 1; a CG step
            what its line search used).
        status: per point, the NonlinearCG status of the step that led to it ("" otherwise).
        threshold: (steps + 1,) tolerance x running maximum of the gradient norm as the
            switch rule saw it (NaN for arms without a rule; frozen after the switch).
        switch_index: k such that steps k+1, k+2, ... are CG steps (the rule fired right
            after step k); None if there was no switch.
        peak_index: the point with the largest gradient norm the rule saw, or None.
    """

    arm: str
    points: np.ndarray
    loss: np.ndarray
    grad_norm: np.ndarray
    phase: tuple
    evals: np.ndarray
    status: tuple
    threshold: np.ndarray
    switch_index: int | None
    peak_index: int | None

    @property
    def steps(self) -> int:
        return len(self.points) - 1


def _run_arm(arm: str, name: str, start, c: float, steps: int, lr: float, rule_options: dict,
             line_search: str) -> Trajectory:
    w = torch.tensor(start, dtype=torch.float64).requires_grad_(True)

    def closure(backward: bool = True):
        # the loss of the toy and its gradient, written into w.grad as backward() would
        loss, grad = surface_value_and_grad(name, w.detach().numpy(), c)
        if backward:
            w.grad = torch.from_numpy(grad)
        return torch.tensor(loss, dtype=torch.float64)

    cg_options = {"line_search": line_search, "dtype": torch.float64}
    if arm == "cg":
        opt = NonlinearCG([w], **cg_options)
    else:
        # "adam": a fixed switch after the last step, i.e. never within the run
        rule = SwitchRule(**rule_options) if arm == "two-phase" else SwitchRule(switch_epoch=steps + 1)
        opt = TwoPhase([w], lr=lr, cg=cg_options, rule=rule)

    loss0, g0 = surface_value_and_grad(name, start, c)
    gn0 = float(np.linalg.norm(g0))
    points, losses, norms = [w.detach().numpy().copy()], [loss0], [gn0]
    phases, statuses, evals, thresholds = ["start"], [""], [0], [math.nan]
    for _ in range(steps):
        if arm == "cg" or opt.phase == "cg":
            opt.step(closure)
            info = opt.last_step
            phases.append("cg")
            statuses.append(info.status)
            evals.append(evals[-1] + int(info.loss_evals))
        else:
            closure()
            opt.step()
            phases.append("adam")
            statuses.append("")
            evals.append(evals[-1] + 1)
        loss, grad = surface_value_and_grad(name, w.detach().numpy(), c)
        gn = float(np.linalg.norm(grad))
        if not (math.isfinite(loss) and math.isfinite(gn)):
            raise FloatingPointError(f"{arm} reached a non-finite loss on {name}; lower the learning rate")
        if arm == "two-phase":
            opt.epoch_end(gn)
            thresholds.append(opt.rule.threshold)
        else:
            thresholds.append(math.nan)
        points.append(w.detach().numpy().copy())
        losses.append(loss)
        norms.append(gn)
    switch_index = peak_index = None
    if arm == "two-phase":
        switch_index = opt.switch_epoch
        peak_index = opt.peak_epoch
    return Trajectory(
        arm=arm, points=np.array(points), loss=np.array(losses), grad_norm=np.array(norms),
        phase=tuple(phases), evals=np.array(evals), status=tuple(statuses),
        threshold=np.array(thresholds), switch_index=switch_index, peak_index=peak_index,
    )


def trajectories(name: str, start: tuple[float, float], c: float = 0.5, steps: int = 100,
                 lr: float = 0.05, tolerance: float = 0.9, line_search: str = "strong-wolfe",
                 min_epochs: int = 0, patience: int = 1) -> dict[str, Trajectory]:
    """Run the three arms from `start` on surface `name`.

    Arguments:
        name: "tanh-family" or "valley".
        start: (w1, w2) start point.
        c: C of the tanh family (ignored by the valley).
        steps: optimizer steps per arm (= epochs of a toy), 1 to 2000.
        lr: Adam's learning rate (Adam arm and the two-phase arm's first phase), > 0.
        tolerance: the switch rule's tolerance in (0, 1]: switch when the gradient norm is
            at or below tolerance x its running maximum (0.9 = the paper's value).
        line_search: NonlinearCG's line search, "strong-wolfe" or "golden".
        min_epochs, patience: the switch rule's options (see SwitchRule): no switch before
            this step; this many steps in a row below the threshold. 0 and 1 = the paper's rule.

    Returns a dict arm -> Trajectory, in the order of ARMS. Invalid rule or optimizer
    options raise twophase.errors.ConfigError (a ValueError) naming the field.
    """
    _surface(name)
    c = _check_c(c)
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 2000:
        raise ValueError(f"steps must be an integer from 1 to 2000; got {steps!r}")
    try:
        if len(start) != 2:
            raise ValueError
        start = (float(start[0]), float(start[1]))
        if not all(math.isfinite(v) for v in start):
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(f"start must be a pair of finite numbers (w1, w2); got {start!r}") from None
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a positive finite number; got {lr!r}")
    rule_options = {"tolerance": tolerance, "min_epochs": min_epochs, "patience": patience}
    SwitchRule(**rule_options)  # validates (ConfigError names the field)
    return {arm: _run_arm(arm, name, start, c, steps, float(lr), rule_options, line_search) for arm in ARMS}


# ============================================================================ 2-D figures

SHADE_COLORSCALE = [[0.0, "rgba(255,127,14,0)"], [1.0, "rgba(255,127,14,0.20)"]]
_ARM_DASH = {"adam": "solid", "cg": "dot", "two-phase": "solid"}


def _log_loss(loss: np.ndarray) -> np.ndarray:
    return np.log10(np.maximum(loss, 0.0) + 1e-4)


def surface_figure(name: str, grid: dict, trajs: dict[str, Trajectory] | None = None,
                   step: int | None = None, start: tuple[float, float] | None = None,
                   pick_grid: int = 0) -> go.Figure:
    """Contour plot of a two-parameter loss with the non-convex region shaded and the arms' paths.

    Arguments:
        name: the surface (for labels and its minimum).
        grid: the result of surface_grid.
        trajs: arm -> Trajectory (from `trajectories`), or None for the surface alone.
        step: draw the paths up to this step and mark where each arm is then (None: all).
        start: the start point to mark (defaults to the trajectories' first point).
        pick_grid: if > 0, add an invisible pick_grid x pick_grid lattice of points that a
            click can select (the page uses it to move the start point); 0 = none.
    """
    surf = _surface(name)
    fig = go.Figure()
    fig.add_trace(go.Heatmap(
        x=grid["w1"], y=grid["w2"], z=grid["nonconvex"].astype(float), zmin=0, zmax=1,
        colorscale=SHADE_COLORSCALE, showscale=False, hoverinfo="skip", name="not convex",
    ))
    fig.add_trace(go.Contour(
        x=grid["w1"], y=grid["w2"], z=_log_loss(grid["loss"]), ncontours=28,
        contours=dict(coloring="lines"), line=dict(width=1), colorscale="Viridis",
        colorbar=dict(title=dict(text="log10 loss", side="right"), thickness=12, len=0.8),
        customdata=grid["eig_min"],
        hovertemplate=(f"{surf.w1_label}=%{{x:.3f}}<br>{surf.w2_label}=%{{y:.3f}}"
                       "<br>log10 loss=%{z:.2f}<br>smallest Hessian eigenvalue=%{customdata:.3g}<extra></extra>"),
        name="loss",
    ))
    # legend entry for the shading
    fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name="Hessian not positive definite",
                             marker=dict(symbol="square", size=14, color="rgba(255,127,14,0.35)")))
    fig.add_trace(go.Scatter(
        x=[surf.minimum[0]], y=[surf.minimum[1]], mode="markers", name="global minimum",
        marker=dict(symbol="x", size=12, color="#2ca02c", line=dict(width=1)),
        hovertemplate="global minimum<extra></extra>",
    ))
    if trajs:
        for arm, tr in trajs.items():
            k = tr.steps if step is None else max(0, min(int(step), tr.steps))
            pts = tr.points[: k + 1]
            fig.add_trace(go.Scatter(
                x=pts[:, 0], y=pts[:, 1], mode="lines+markers", name=arm_label(arm),
                line=dict(color=arm_color(arm), width=2.5, dash=_ARM_DASH.get(arm, "solid")),
                marker=dict(size=4), legendgroup=arm,
                customdata=np.stack([np.arange(k + 1), tr.loss[: k + 1]], axis=-1),
                hovertemplate=(f"{arm_label(arm)}<br>step %{{customdata[0]}}<br>loss %{{customdata[1]:.3g}}"
                               "<extra></extra>"),
            ))
            fig.add_trace(go.Scatter(
                x=[pts[-1, 0]], y=[pts[-1, 1]], mode="markers", showlegend=False, legendgroup=arm,
                marker=dict(size=13, color=arm_color(arm), line=dict(color="white", width=2)),
                hovertemplate=f"{arm_label(arm)} at step {k}<extra></extra>",
            ))
            if tr.switch_index is not None:
                s = tr.switch_index
                reached = k >= s
                fig.add_trace(go.Scatter(
                    x=[tr.points[s, 0]], y=[tr.points[s, 1]], mode="markers+text",
                    name=f"switch to CG (after step {s})", legendgroup=arm,
                    text=["switch"], textposition="top right",
                    marker=dict(symbol="star", size=18, color=arm_color(arm) if reached else "white",
                                line=dict(color=arm_color(arm), width=2)),
                    hovertemplate=f"switch to CG after step {s}<extra></extra>",
                ))
        if start is None:
            start = tuple(next(iter(trajs.values())).points[0])
    if start is not None:
        fig.add_trace(go.Scatter(
            x=[start[0]], y=[start[1]], mode="markers", name="start",
            marker=dict(symbol="circle-open", size=14, color="black", line=dict(width=2)),
            hovertemplate="start<extra></extra>",
        ))
    if pick_grid and pick_grid > 1:
        (a0, a1), (b0, b1) = surf.box
        A, B = np.meshgrid(np.linspace(a0, a1, pick_grid), np.linspace(b0, b1, pick_grid))
        fig.add_trace(go.Scatter(
            x=A.ravel(), y=B.ravel(), mode="markers", name="click to start here", showlegend=False,
            marker=dict(size=10, color="rgba(0,0,0,0)"),
            hovertemplate="click: start at (%{x:.2f}, %{y:.2f})<extra></extra>",
        ))
    (a0, a1), (b0, b1) = surf.box
    fig.update_xaxes(title_text=surf.w1_label, range=[a0, a1], constrain="domain")
    fig.update_yaxes(title_text=surf.w2_label, range=[b0, b1])
    fig.update_layout(height=560, margin=dict(l=60, r=20, t=30, b=50),
                      legend=dict(orientation="h", yanchor="top", y=-0.12, x=0.0),
                      clickmode="event+select", dragmode="pan")
    return fig


def trajectory_curves_figure(trajs: dict[str, Trajectory], step: int | None = None,
                             x: str = "step") -> go.Figure:
    """Loss (log scale) and gradient norm of each arm against the step, sharing the x-axis.

    Arguments:
        trajs: arm -> Trajectory.
        step: the current step of the walk (a vertical line), or None.
        x: "step" (one optimizer step = one toy epoch) or "evals" (cumulative loss
            evaluations: what each step cost).
    """
    if x not in ("step", "evals"):
        raise ValueError(f"x must be 'step' or 'evals'; got {x!r}")
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=("Loss", "Gradient norm (two-phase: with its threshold)"))
    for arm, tr in trajs.items():
        xs = np.arange(tr.steps + 1) if x == "step" else tr.evals
        color = arm_color(arm)
        dash = _ARM_DASH.get(arm, "solid")
        fig.add_trace(go.Scatter(x=xs, y=np.maximum(tr.loss, 1e-16), mode="lines", name=arm_label(arm),
                                 line=dict(color=color, dash=dash), legendgroup=arm), row=1, col=1)
        fig.add_trace(go.Scatter(x=xs, y=tr.grad_norm, mode="lines", name=arm_label(arm), showlegend=False,
                                 line=dict(color=color, dash=dash), legendgroup=arm), row=2, col=1)
        if tr.switch_index is not None or arm == "two-phase":
            fig.add_trace(go.Scatter(
                x=xs, y=tr.threshold, mode="lines", name="tolerance × running max", legendgroup=arm,
                line=dict(color=color, width=1, dash="dash"),
            ), row=2, col=1)
        if tr.peak_index is not None:
            p = tr.peak_index
            fig.add_trace(go.Scatter(x=[xs[p]], y=[tr.grad_norm[p]], mode="markers", name="peak of the norm",
                                     marker=dict(symbol="triangle-up", size=11, color=color),
                                     legendgroup=arm), row=2, col=1)
        if tr.switch_index is not None:
            fig.add_vline(x=float(xs[tr.switch_index]), line=dict(color=color, dash="dot", width=1.5),
                          annotation_text="switch", annotation_position="top")
    if step is not None:
        ref = next(iter(trajs.values()))
        k = max(0, min(int(step), ref.steps))
        if x == "step":
            fig.add_vline(x=k, line=dict(color="#555555", width=1))
    fig.update_yaxes(type="log", title_text="loss (below 1e-16 drawn at 1e-16)", exponentformat="power",
                     row=1, col=1)
    fig.update_yaxes(type="log", title_text="gradient norm", exponentformat="power", row=2, col=1)
    fig.update_xaxes(title_text="step (= epoch of the toy)" if x == "step" else "loss evaluations (cost)",
                     row=2, col=1)
    fig.update_layout(height=520, margin=dict(l=60, r=20, t=40, b=50),
                      legend=dict(orientation="h", yanchor="top", y=-0.12, x=0.0))
    return fig
