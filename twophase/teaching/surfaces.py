"""Two-parameter loss surfaces for the Learn page: their values, gradients, Hessians and minima.

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
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np
import torch

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

    Returns a dict: "w1", "w2" (1-D arrays of length n), "c", and (n, n) arrays indexed
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
    return {"w1": w1, "w2": w2, "c": c, "loss": loss, "eig_min": eig_min, "eig_max": eig_max,
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
