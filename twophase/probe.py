"""Convexity probe: the extreme eigenvalues of the Hessian of a training loss.

The two-phase method assumes that the loss surface is non-convex far from a
minimum and convex near it. This module measures that directly instead of
taking the gradient norm's word for it: it estimates the smallest and the
largest eigenvalue of the Hessian of the loss at the current weights. A
negative smallest eigenvalue means there is a direction of negative curvature
(the surface is not convex there); a smallest eigenvalue that is positive, or
tiny compared with the largest, means the surface is (nearly) convex.

Method: Lanczos iteration with full re-orthogonalisation on Hessian-vector
products. A Hessian-vector product costs about two backward passes (autograd
double backward); the Hessian itself is never formed. After ``iters`` steps
the extreme eigenvalues of the small tridiagonal matrix (the Ritz values)
approximate the extreme eigenvalues of the Hessian; extreme eigenvalues are
the ones Lanczos finds first.

Public functions:

    lanczos_extremes(matvec, dim, iters=20, seed=0, dtype=torch.float64, device="cpu")
        -> (lambda_min, lambda_max)
        For any symmetric linear map given as a function of a flat vector.

    hessian_extremes_flat(loss_of_vector, w, iters=20, seed=0)
        -> (lambda_min, lambda_max, cost_seconds)
        Hessian of a scalar function of one flat tensor (tests, toys).

    hessian_extremes(model, loss_fn, x, y, sample_size=512, iters=20, seed=0)
        -> (lambda_min, lambda_max, cost_seconds)
        Hessian of loss_fn(model(x_s), y_s) with respect to all trainable
        parameters of any nn.Module, over a fixed, seeded sample (x_s, y_s) of
        the training set (the same sample for the same seed, so that epochs
        are comparable).

This module never imports streamlit and never changes a model's weights or
the ``.grad`` of its parameters.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import torch
from torch import nn

__all__ = ["lanczos_extremes", "hessian_extremes_flat", "hessian_extremes", "sample_indices"]


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value}")
    return value


def lanczos_extremes(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    dim: int,
    iters: int = 20,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
    history: list | None = None,
) -> tuple[float, float]:
    """Smallest and largest eigenvalue of a symmetric linear map, by Lanczos.

    Arguments:
        matvec: function taking a flat vector of length ``dim`` (dtype ``dtype``,
            on ``device``) and returning the product of the symmetric matrix
            with it, same shape. It is called at most ``iters`` times.
        dim: length of the vectors (number of parameters).
        iters: number of Lanczos steps (Krylov dimension); at most ``dim`` are
            taken. More steps, better interior convergence; the extremes
            usually converge within 10-30 steps.
        seed: seed of the random start vector (same seed, same estimate).
        dtype: floating dtype of the Lanczos vectors.
        device: where the Lanczos vectors live.
        history: when a list, (lambda_min, lambda_max) after each step is appended
            to it (the convergence; benchmarks/probe.py reads it).

    No stopping test: the smallest Ritz value can stay put for several steps and
    then move (measured on the mlp: -8e-5 after 10 steps, -0.005 after 12, -0.021
    after 20 and 40), so a test on successive changes would stop early and report
    a convex surface. Returns (lambda_min, lambda_max) as Python floats; (nan, nan)
    if a product was not finite.
    """
    dim = _check_int("dim", dim, 1)
    iters = _check_int("iters", iters, 1)
    steps = min(iters, dim)
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    q = torch.randn(dim, generator=gen, dtype=torch.float64).to(dtype=dtype, device=device)
    q = q / torch.linalg.vector_norm(q)
    basis = [q]
    alphas: list[float] = []
    betas: list[float] = []
    for j in range(steps):
        w = matvec(basis[j])
        if w.shape != (dim,):
            raise ValueError(f"matvec returned shape {tuple(w.shape)}, expected ({dim},)")
        w = w.to(dtype=dtype)
        if not bool(torch.isfinite(w).all()):
            return math.nan, math.nan
        alpha = float(torch.dot(basis[j], w))
        alphas.append(alpha)
        if history is not None:
            history.append(_ritz_extremes(alphas, betas))
        if j == steps - 1:
            break
        # Full re-orthogonalisation (twice, "twice is enough") against all previous vectors.
        Q = torch.stack(basis)
        for _ in range(2):
            w = w - Q.T @ (Q @ w)
        beta = float(torch.linalg.vector_norm(w))
        scale = max(abs(a) for a in alphas) + (betas[-1] if betas else 0.0)
        if beta <= 1e-12 * max(scale, 1e-300):
            break  # the Krylov space is invariant: the Ritz values are exact eigenvalues
        betas.append(beta)
        basis.append(w / beta)
    return _ritz_extremes(alphas, betas)


def _ritz_extremes(alphas: list[float], betas: list[float]) -> tuple[float, float]:
    """The extreme eigenvalues of the tridiagonal matrix of the Lanczos steps so far."""
    k = len(alphas)
    T = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if k > 1:
        off = torch.tensor(betas[: k - 1], dtype=torch.float64)
        T = T + torch.diag(off, 1) + torch.diag(off, -1)
    ritz = torch.linalg.eigvalsh(T)
    return float(ritz[0]), float(ritz[-1])


def hessian_extremes_flat(
    loss_of_vector: Callable[[torch.Tensor], torch.Tensor],
    w: torch.Tensor,
    iters: int = 20,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Extreme Hessian eigenvalues of a scalar function of one flat tensor.

    Arguments:
        loss_of_vector: function of a 1-D tensor returning a scalar tensor,
            twice differentiable by autograd (e.g. ``lambda w: 0.5 * w @ A @ w``).
        w: the 1-D floating tensor at which the Hessian is taken (not modified).
        iters: number of Lanczos steps (see :func:`lanczos_extremes`).
        seed: seed of the Lanczos start vector.

    Returns (lambda_min, lambda_max, cost_seconds).
    """
    if not isinstance(w, torch.Tensor) or w.dim() != 1 or not w.is_floating_point():
        raise TypeError("w must be a 1-D floating torch tensor")
    start = time.perf_counter()
    with torch.enable_grad():
        point = w.detach().clone().requires_grad_(True)
        loss = loss_of_vector(point)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise ValueError("loss_of_vector must return a scalar tensor")
        if not bool(torch.isfinite(loss)):
            return math.nan, math.nan, time.perf_counter() - start
        (grad,) = torch.autograd.grad(loss.reshape(()), point, create_graph=True)

        def matvec(v: torch.Tensor) -> torch.Tensor:
            (hv,) = torch.autograd.grad(grad, point, grad_outputs=v.to(point.dtype), retain_graph=True,
                                        allow_unused=True)
            return torch.zeros_like(point) if hv is None else hv.detach()

        lmin, lmax = lanczos_extremes(matvec, point.numel(), iters=iters, seed=seed,
                                      dtype=point.dtype, device=point.device)
    return lmin, lmax, time.perf_counter() - start


def sample_indices(n: int, sample_size: int, seed: int = 0) -> torch.Tensor:
    """The fixed, seeded sample of the training set the probe uses.

    Arguments:
        n: number of training samples.
        sample_size: how many to take (all ``n`` if ``sample_size >= n``).
        seed: seed of the draw (same seed, same sample, every epoch).

    Returns a sorted int64 tensor of indices (CPU).
    """
    n = _check_int("n", n, 1)
    sample_size = _check_int("sample_size", sample_size, 1)
    if sample_size >= n:
        return torch.arange(n)
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randperm(n, generator=gen)[:sample_size].sort().values


def hessian_extremes(
    model: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    sample_size: int = 512,
    iters: int = 20,
    seed: int = 0,
    history: list | None = None,
) -> tuple[float, float, float]:
    """Estimated smallest and largest Hessian eigenvalue of the training loss of `model`.

    Arguments:
        model: any ``nn.Module``; the Hessian is taken with respect to all of its
            parameters with ``requires_grad`` (shared parameters counted once).
            It is evaluated in eval mode (dropout off, batch-norm running
            statistics used and not updated) so that every Hessian-vector product
            sees the same function; its training mode is restored afterwards.
        loss_fn: ``loss_fn(model(x_sample), y_sample)`` -> scalar mean loss (as in
            ``twophase.losses.get``).
        x, y: the whole training set (inputs, targets); first dimension = samples.
        sample_size: size of the fixed sample of (x, y) the loss is taken over
            (all samples if larger than the set). 512 by default.
        iters: number of Lanczos steps (= Hessian-vector products), 20 by default.
        seed: seed of both the sample and the Lanczos start vector; keep it fixed
            across epochs so that successive estimates are comparable.
        history: when a list, the extremes after each Lanczos step are appended
            (see :func:`lanczos_extremes`).

    Returns (lambda_min, lambda_max, cost_seconds): Python floats; the two
    eigenvalues are nan if the loss or a Hessian-vector product is not finite.
    cost_seconds is the wall time of the whole probe (forward pass included).
    The weights and the ``.grad`` of the parameters are left as they were.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError("x and y must be torch tensors")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y hold different numbers of samples: {x.shape[0]} and {y.shape[0]}")
    sample_size = _check_int("sample_size", sample_size, 1)
    iters = _check_int("iters", iters, 1)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters")
    start = time.perf_counter()
    idx = sample_indices(int(x.shape[0]), sample_size, seed).to(x.device)
    xs, ys = x.index_select(0, idx), y.index_select(0, idx.to(y.device))
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            loss = loss_fn(model(xs), ys)
            if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                raise ValueError("loss_fn must return a scalar tensor")
            if not bool(torch.isfinite(loss)):
                return math.nan, math.nan, time.perf_counter() - start
            grads = torch.autograd.grad(loss.reshape(()), params, create_graph=True, allow_unused=True)
            # Parameters the loss does not depend on have a zero gradient and a zero Hessian block.
            live = [(p, g) for p, g in zip(params, grads) if g is not None and g.requires_grad]
            sizes = [p.numel() for p in params]
            dim = sum(sizes)
            dtype = params[0].dtype
            device = params[0].device

            def matvec(v: torch.Tensor) -> torch.Tensor:
                parts = list(torch.split(v, sizes))
                pieces = dict(zip((id(p) for p in params), parts))
                if not live:
                    return torch.zeros_like(v)
                hv = torch.autograd.grad(
                    [g for _, g in live], [p for p, _ in live],
                    grad_outputs=[pieces[id(p)].view_as(p).to(p.dtype) for p, _ in live],
                    retain_graph=True, allow_unused=True,
                )
                out = {id(p): h for (p, _), h in zip(live, hv)}
                flat = []
                for p in params:
                    h = out.get(id(p))
                    if h is None:
                        flat.append(torch.zeros(p.numel(), dtype=v.dtype, device=v.device))
                    else:
                        flat.append(h.reshape(-1).to(v.dtype))
                return torch.cat(flat).detach()

            lmin, lmax = lanczos_extremes(matvec, dim, iters=iters, seed=seed, dtype=dtype, device=device,
                                          history=history)
    finally:
        model.train(was_training)
    return lmin, lmax, time.perf_counter() - start
