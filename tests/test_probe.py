"""The convexity probe: extreme Hessian eigenvalues by Lanczos on Hessian-vector products."""

import math

import pytest
import torch
from torch import nn

from twophase import losses
from twophase.probe import hessian_extremes, hessian_extremes_flat, lanczos_extremes, sample_indices


def _matrix_with_spectrum(eigenvalues: torch.Tensor, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    n = eigenvalues.numel()
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    return q @ torch.diag(eigenvalues) @ q.T


@pytest.mark.parametrize("dim,iters", [(60, 20), (300, 25)])
def test_quadratic_with_known_hessian_indefinite(dim, iters):
    gen = torch.Generator().manual_seed(dim)
    interior = torch.empty(dim - 2, dtype=torch.float64).uniform_(-1.0, 4.0, generator=gen)
    eigenvalues = torch.cat([torch.tensor([-3.0, 7.0], dtype=torch.float64), interior])
    A = _matrix_with_spectrum(eigenvalues, seed=1)
    b = torch.randn(dim, generator=gen, dtype=torch.float64)
    w = torch.randn(dim, generator=gen, dtype=torch.float64)
    lmin, lmax, seconds = hessian_extremes_flat(lambda v: 0.5 * v @ A @ v - b @ v, w, iters=iters)
    assert lmin == pytest.approx(-3.0, rel=1e-3)
    assert lmax == pytest.approx(7.0, rel=1e-3)
    assert seconds >= 0.0


def test_quadratic_positive_definite_and_small():
    # a positive definite Hessian: both extremes positive; with dim <= iters Lanczos is exact
    eigenvalues = torch.tensor([0.5, 1.0, 2.0, 3.0, 10.0, 40.0], dtype=torch.float64)
    A = _matrix_with_spectrum(eigenvalues, seed=3)
    lmin, lmax, _ = hessian_extremes_flat(lambda v: 0.5 * v @ A @ v, torch.zeros(6, dtype=torch.float64))
    assert lmin == pytest.approx(0.5, rel=1e-9)
    assert lmax == pytest.approx(40.0, rel=1e-9)


def test_non_quadratic_function_uses_the_hessian_at_the_point():
    # f(w) = sum w_i^4 / 12 has Hessian diag(w_i^2)
    w = torch.tensor([0.5, -2.0, 1.0, 3.0], dtype=torch.float64)
    lmin, lmax, _ = hessian_extremes_flat(lambda v: (v**4).sum() / 12.0, w)
    assert lmin == pytest.approx(0.25, rel=1e-9)
    assert lmax == pytest.approx(9.0, rel=1e-9)


def test_lanczos_extremes_on_a_plain_matrix_and_bad_arguments():
    eigenvalues = torch.linspace(-2.0, 5.0, 40, dtype=torch.float64)
    A = _matrix_with_spectrum(eigenvalues, seed=0)
    lmin, lmax = lanczos_extremes(lambda v: A @ v, 40, iters=40)
    assert (lmin, lmax) == (pytest.approx(-2.0, rel=1e-9), pytest.approx(5.0, rel=1e-9))
    with pytest.raises(ValueError, match="iters"):
        lanczos_extremes(lambda v: A @ v, 40, iters=0)
    with pytest.raises(ValueError, match="shape"):
        lanczos_extremes(lambda v: v[:3], 40)
    nan_min, nan_max = lanczos_extremes(lambda v: v * float("nan"), 5)
    assert math.isnan(nan_min) and math.isnan(nan_max)


def test_lanczos_history_holds_the_extremes_after_every_step():
    eigenvalues = torch.linspace(-2.0, 5.0, 40, dtype=torch.float64)
    A = _matrix_with_spectrum(eigenvalues, seed=0)
    history = []
    assert lanczos_extremes(lambda v: A @ v, 40, iters=12, history=history) == history[-1]
    assert len(history) == 12
    lows, highs = [h[0] for h in history], [h[1] for h in history]
    # Ritz values interlace: the extremes only move outwards, towards -2 and 5
    assert all(b <= a + 1e-12 for a, b in zip(lows, lows[1:])) and all(b >= a - 1e-12 for a, b in zip(highs, highs[1:]))
    assert lows[0] == highs[0]  # one step: one Ritz value
    assert lanczos_extremes(lambda v: A @ v, 40, iters=12) == history[-1]  # watching changes nothing


def _small_net(dtype=torch.float32) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).to(dtype)


def test_small_network_returns_finite_values_and_leaves_the_model_alone():
    model = _small_net()
    x = torch.randn(200, 4, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 3, (200,), generator=torch.Generator().manual_seed(2))
    before = [p.detach().clone() for p in model.parameters()]
    model[0].weight.grad = torch.full_like(model[0].weight, 0.5)
    lmin, lmax, seconds = hessian_extremes(model, losses.get("mse"), x, y, sample_size=64, iters=10, seed=0)
    assert all(math.isfinite(v) for v in (lmin, lmax, seconds))
    assert lmin <= lmax and seconds > 0
    for p, q in zip(model.parameters(), before):
        assert torch.equal(p.detach(), q)
    assert torch.equal(model[0].weight.grad, torch.full_like(model[0].weight, 0.5))
    assert model[2].weight.grad is None
    assert model.training  # training mode restored
    again = hessian_extremes(model, losses.get("mse"), x, y, sample_size=64, iters=10, seed=0)
    assert again[:2] == (lmin, lmax)


def test_small_network_matches_the_full_hessian():
    # float64 and as many Lanczos steps as parameters: the estimate must equal the exact extremes
    model = _small_net(torch.float64)
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(100, 4, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (100,), generator=gen)
    loss_fn = losses.get("cross-entropy")
    params = list(model.parameters())
    idx = sample_indices(100, 50, seed=0)
    # the full Hessian, row by row, by plain double backward
    grads = torch.autograd.grad(loss_fn(model(x[idx]), y[idx]), params, create_graph=True)
    g = torch.cat([t.reshape(-1) for t in grads])
    H = torch.stack([
        torch.cat([r.reshape(-1) for r in torch.autograd.grad(g[i], params, retain_graph=True)])
        for i in range(g.numel())
    ])
    exact = torch.linalg.eigvalsh(0.5 * (H + H.T))
    lmin, lmax, _ = hessian_extremes(model, loss_fn, x, y, sample_size=50, iters=g.numel(), seed=0)
    assert lmin == pytest.approx(float(exact[0]), rel=1e-6, abs=1e-9)
    assert lmax == pytest.approx(float(exact[-1]), rel=1e-6)
    assert lmin < 0 < lmax  # a tanh network at random weights is not convex


def test_dropout_is_off_during_the_probe():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 2))
    x, y = torch.randn(80, 5), torch.randint(0, 2, (80,))
    a = hessian_extremes(model, losses.get("cross-entropy"), x, y, sample_size=40, iters=8)
    b = hessian_extremes(model, losses.get("cross-entropy"), x, y, sample_size=40, iters=8)
    assert a[:2] == b[:2]
    assert model.training


def test_sample_is_fixed_by_the_seed():
    a = sample_indices(1000, 100, seed=3)
    assert torch.equal(a, sample_indices(1000, 100, seed=3))
    assert not torch.equal(a, sample_indices(1000, 100, seed=4))
    assert a.numel() == 100 == a.unique().numel() and torch.all(a[1:] > a[:-1])
    assert torch.equal(sample_indices(10, 512), torch.arange(10))


def test_bad_arguments():
    model = _small_net()
    x, y = torch.randn(10, 4), torch.randint(0, 3, (10,))
    with pytest.raises(TypeError, match="nn.Module"):
        hessian_extremes(lambda v: v, losses.get("mse"), x, y)
    with pytest.raises(ValueError, match="samples"):
        hessian_extremes(model, losses.get("mse"), x, y[:5])
    with pytest.raises(ValueError, match="sample_size"):
        hessian_extremes(model, losses.get("mse"), x, y, sample_size=0)
    with pytest.raises(ValueError, match="trainable"):
        frozen = _small_net().requires_grad_(False)
        hessian_extremes(frozen, losses.get("mse"), x, y)
    with pytest.raises(TypeError, match="1-D"):
        hessian_extremes_flat(lambda v: v.sum(), torch.zeros(2, 2))
