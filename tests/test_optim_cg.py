"""NonlinearCG and its line searches: convergence, evaluation counts, safety, state."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import scipy.optimize
import torch

from twophase.errors import ConfigError
from twophase.optim import NonlinearCG, StepInfo, golden_section, strong_wolfe


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors (conftest.py)


# ---------------------------------------------------------------------------- helpers

def make_quadratic(n: int, cond: float = 30.0, seed: int = 1):
    """A symmetric positive definite A with eigenvalues log-spaced in [1, cond], a minimiser."""
    generator = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
    eigenvalues = torch.logspace(0, math.log10(cond), n, dtype=torch.float64)
    a = q @ torch.diag(eigenvalues) @ q.T
    a = 0.5 * (a + a.T)
    minimiser = torch.randn(n, generator=generator, dtype=torch.float64)
    return a, minimiser


def linear_cg_iterations(a, minimiser, tol):
    """Iterations textbook linear CG needs on A x = A x* from 0 to a residual below tol."""
    b = a @ minimiser
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    for k in range(1, 10 * len(b)):
        ap = a @ p
        alpha = (r @ r) / (p @ ap)
        x = x + alpha * p
        r_new = b - a @ x
        if r_new.norm() < tol:
            return k
        p = r_new + (r_new @ r_new) / (r @ r) * p
        r = r_new
    raise AssertionError("linear CG did not converge")


def quadratic_closure(opt, x, a, minimiser):
    """f(x) = 1/2 (x - x*)' A (x - x*): minimum 0 at x*, accurate values near it."""

    def closure(backward=True):
        e = x - minimiser
        loss = 0.5 * e @ (a @ e)
        if backward:
            opt.zero_grad()
            loss.backward()
        return loss

    return closure


def extended_rosenbrock_np(x):
    a, b = x[0::2], x[1::2]
    return float(np.sum(100.0 * (b - a ** 2) ** 2 + (1.0 - a) ** 2))


def extended_rosenbrock_grad_np(x):
    a, b = x[0::2], x[1::2]
    g = np.zeros_like(x)
    g[0::2] = -400.0 * a * (b - a ** 2) - 2.0 * (1.0 - a)
    g[1::2] = 200.0 * (b - a ** 2)
    return g


def extended_rosenbrock(x):
    a, b = x[0::2], x[1::2]
    return torch.sum(100.0 * (b - a ** 2) ** 2 + (1.0 - a) ** 2)


def rosenbrock_start(n):
    x = np.empty(n)
    x[0::2] = -1.2
    x[1::2] = 1.0
    return x


def run_rosenbrock(n, max_steps=2000, **options):
    """Run NonlinearCG to SciPy's default test (max |g| < 1e-5); return x, steps, evals."""
    x = torch.tensor(rosenbrock_start(n), dtype=torch.float64, requires_grad=True)
    opt = NonlinearCG([x], **options)

    def closure(backward=True):
        loss = extended_rosenbrock(x)
        if backward:
            opt.zero_grad()
            loss.backward()
        return loss

    loss_evals = grad_evals = 0
    statuses = []
    for step in range(1, max_steps + 1):
        opt.step(closure)
        info = opt.last_step
        loss_evals += info.loss_evals
        grad_evals += info.grad_evals
        statuses.append(info)
        assert torch.isfinite(x).all()
        if np.abs(extended_rosenbrock_grad_np(x.detach().numpy())).max() < 1e-5:
            break
    return x.detach().numpy(), step, loss_evals, grad_evals, statuses


# ---------------------------------------------------------------------------- quadratics

@pytest.mark.parametrize("n", [10, 40, 100])
@pytest.mark.parametrize("line_search", ["strong-wolfe", "golden"])
def test_quadratic_accurate_line_search_needs_about_n_iterations(line_search, n):
    a, minimiser = make_quadratic(n)
    x = torch.zeros(n, dtype=torch.float64, requires_grad=True)
    if line_search == "strong-wolfe":
        options = dict(c2=1e-3)  # accurate: |g.d| at most 0.1% of the initial slope
    else:
        options = dict(ls_tol=1e-8, max_ls=100)
    opt = NonlinearCG([x], line_search=line_search, grad_tol=1e-9, **options)
    closure = quadratic_closure(opt, x, a, minimiser)
    reference = linear_cg_iterations(a, minimiser, tol=1e-8)
    iterations = None
    for k in range(1, 5 * n + 1):
        opt.step(closure)
        assert opt.last_step.status in ("ok", "restarted", "converged")
        grad_norm = float((a @ (x.detach() - minimiser)).norm())
        if grad_norm < 1e-8:
            iterations = k
            break
    assert iterations is not None, f"gradient norm still {grad_norm:.2e} after {5 * n} steps"
    assert torch.allclose(x.detach(), minimiser, atol=1e-7)
    print(f"\nquadratic n={n} {line_search}: {iterations} CG iterations to |g| < 1e-8, "
          f"linear CG {reference}")
    if line_search == "strong-wolfe":
        # as textbook linear CG on the same system (which needs about n here)
        assert iterations <= reference + 2
        assert iterations <= n + 2
    else:
        # values-only search locates the line minimum to ~sqrt(machine eps): a few more
        assert iterations <= reference + n // 2 + 5


@pytest.mark.parametrize("beta", ["pr+", "fr", "hz"])
@pytest.mark.parametrize("line_search", ["strong-wolfe", "golden"])
def test_quadratic_default_settings_reach_tiny_gradient(beta, line_search):
    n = 30
    a, minimiser = make_quadratic(n, cond=100.0, seed=3)
    x = torch.zeros(n, dtype=torch.float64, requires_grad=True)
    opt = NonlinearCG([x], beta=beta, line_search=line_search, grad_tol=1e-9)
    closure = quadratic_closure(opt, x, a, minimiser)
    for _ in range(10 * n):
        opt.step(closure)
        if opt.last_step.status == "converged":
            break
    assert opt.last_step.status == "converged"
    assert float((a @ (x.detach() - minimiser)).norm()) < 1e-8


# ---------------------------------------------------------------------------- Rosenbrock

@pytest.mark.parametrize("n", [2, 100])
def test_rosenbrock_strong_wolfe_against_scipy(n):
    reference = scipy.optimize.minimize(
        extended_rosenbrock_np, rosenbrock_start(n), jac=extended_rosenbrock_grad_np, method="CG"
    )
    assert reference.success
    x, steps, loss_evals, grad_evals, _ = run_rosenbrock(n)
    print(f"\nextended Rosenbrock n={n}: NonlinearCG(pr+, strong-wolfe) {steps} iterations, "
          f"{loss_evals} loss evaluations ({grad_evals} with gradient); "
          f"scipy CG {reference.nit} iterations, nfev={reference.nfev}, njev={reference.njev}")
    assert np.abs(x - 1.0).max() < 1e-4
    # every evaluation here computes loss and gradient, as each of SciPy's does
    assert grad_evals == loss_evals
    assert loss_evals <= 1.25 * reference.nfev


@pytest.mark.parametrize("n", [2, 100])
def test_rosenbrock_golden_converges(n):
    reference = scipy.optimize.minimize(
        extended_rosenbrock_np, rosenbrock_start(n), jac=extended_rosenbrock_grad_np, method="CG"
    )
    x, steps, loss_evals, grad_evals, _ = run_rosenbrock(n, line_search="golden")
    print(f"\nextended Rosenbrock n={n}: NonlinearCG(pr+, golden) {steps} iterations, "
          f"{loss_evals} loss evaluations of which {grad_evals} with gradient; "
          f"scipy CG nfev={reference.nfev} (each with gradient)")
    assert np.abs(x - 1.0).max() < 1e-4
    # values-only search: one gradient per iteration, no more
    assert grad_evals == steps
    assert grad_evals <= reference.njev


@pytest.mark.parametrize("beta", ["fr", "hz"])
def test_rosenbrock_other_betas_converge(beta):
    x, steps, loss_evals, _, infos = run_rosenbrock(2, beta=beta)
    assert np.abs(x - 1.0).max() < 1e-4
    assert steps < 200


def test_fletcher_reeves_restarts_on_powell_test():
    _, _, _, _, infos = run_rosenbrock(2, beta="fr")
    reasons = {info.restart_reason for info in infos}
    assert "powell" in reasons
    for info in infos:
        if info.restart_reason is not None and info.status != "line_search_failed":
            assert info.status == "restarted"
            assert info.beta == 0.0


def test_loss_never_increases_and_step_returns_loss_before():
    x = torch.tensor(rosenbrock_start(2), dtype=torch.float64, requires_grad=True)
    opt = NonlinearCG([x])

    def closure():
        opt.zero_grad()
        loss = extended_rosenbrock(x)
        loss.backward()
        return loss

    for _ in range(30):
        before = float(extended_rosenbrock(x.detach()))
        returned = opt.step(closure)
        info = opt.last_step
        assert isinstance(info, StepInfo)
        assert float(returned) == pytest.approx(before, rel=1e-15)
        assert info.loss_before == pytest.approx(before, rel=1e-15)
        assert info.loss_after <= info.loss_before
        assert float(extended_rosenbrock(x.detach())) == pytest.approx(info.loss_after, rel=1e-15)


# ---------------------------------------------------------------------------- NaN and failures

def nan_beyond_closure(opt, x, radius=2.0):
    """Convex bowl with minimum at 1; NaN once any coordinate leaves [-radius, radius]."""

    def closure(backward=True):
        if backward:
            opt.zero_grad()
        loss = ((x - 1.0) ** 2).sum() + 0.1 * (x ** 4).sum()
        if x.detach().abs().max() > radius:
            loss = loss * float("nan")
        if backward:
            loss.backward()
        return loss

    return closure


@pytest.mark.parametrize("line_search", ["strong-wolfe", "golden"])
def test_nan_trap_backs_off_and_never_leaves_nan(line_search):
    x = torch.zeros(5, dtype=torch.float64, requires_grad=True)
    # a first trial step of 100 lands far inside the NaN region
    opt = NonlinearCG([x], line_search=line_search, init_step=100.0, grad_tol=1e-8)
    closure = nan_beyond_closure(opt, x)
    infos = []
    for _ in range(50):
        opt.step(closure)
        infos.append(opt.last_step)
        assert torch.isfinite(x).all()
        assert x.detach().abs().max() <= 2.0
        assert math.isfinite(opt.last_step.loss_after)
        if opt.last_step.status == "converged":
            break
    assert infos[0].non_finite_evals >= 1
    assert infos[0].status == "ok"
    assert infos[0].loss_after < infos[0].loss_before
    assert infos[-1].status == "converged"


@pytest.mark.parametrize("line_search", ["strong-wolfe", "golden"])
def test_nan_everywhere_restores_start_exactly(line_search):
    x = torch.tensor([0.3, -0.7, 1.1], dtype=torch.float32, requires_grad=True)
    start = x.detach().clone()
    opt = NonlinearCG([x], line_search=line_search, max_ls=6, dtype=torch.float64)

    def closure(backward=True):
        if backward:
            opt.zero_grad()
        loss = (x ** 2).sum()
        if not torch.equal(x.detach(), start):
            loss = loss + float("inf")
        if backward:
            loss.backward()
        return loss

    opt.step(closure)
    info = opt.last_step
    assert info.status == "non_finite"
    assert info.step_size == 0.0
    assert info.non_finite_evals >= 1
    assert info.loss_after == info.loss_before
    assert torch.equal(x.detach(), start)  # bit for bit
    # the next step restarts (and, here, fails the same way without moving)
    opt.step(closure)
    assert opt.last_step.restart_reason == "line search failed"
    assert opt.last_step.status == "non_finite"
    assert torch.equal(x.detach(), start)
    # two failures from the same point: stalled; later steps cost nothing and say so
    opt.step(closure)
    assert opt.last_step.status == "converged"
    assert opt.last_step.loss_evals == 0
    assert torch.equal(x.detach(), start)


def test_non_finite_start_reports_and_does_not_move():
    x = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    opt = NonlinearCG([x])

    def closure():
        opt.zero_grad()
        loss = (x ** 2).sum() * float("nan")
        loss.backward()
        return loss

    opt.step(closure)
    assert opt.last_step.status == "non_finite"
    assert opt.last_step.loss_evals == 1
    assert torch.equal(x.detach(), torch.tensor([1.0, 2.0], dtype=torch.float64))


def test_failed_line_search_keeps_best_point_and_restarts_next_step():
    n = 20
    a, minimiser = make_quadratic(n, cond=100.0)
    x = torch.zeros(n, dtype=torch.float64, requires_grad=True)
    # one evaluation per search cannot meet a curvature condition of 1e-3
    opt = NonlinearCG([x], c2=1e-3, max_ls=1, init_step=1e-3)
    closure = quadratic_closure(opt, x, a, minimiser)
    opt.step(closure)
    first = opt.last_step
    assert first.status == "line_search_failed"
    assert first.step_size == 1e-3  # the best (only) point, a decrease
    assert first.loss_after < first.loss_before
    opt.step(closure)
    assert opt.last_step.restart_reason == "line search failed"
    assert opt.last_step.beta == 0.0


def test_precision_floor_ends_in_converged_without_wasting_evaluations():
    # minimum value far from 0: near the minimiser, changes of the loss drop below its rounding
    x = torch.tensor([3.0, -2.0], dtype=torch.float64, requires_grad=True)
    opt = NonlinearCG([x], grad_tol=0.0)

    def closure():
        opt.zero_grad()
        loss = 1e3 + ((x - 1.0) ** 2).sum() + (x[0] * x[1] - 1.0) ** 2
        loss.backward()
        return loss

    statuses = []
    for _ in range(60):
        opt.step(closure)
        statuses.append(opt.last_step.status)
        if statuses[-1] == "converged":
            break
    assert statuses[-1] == "converged"
    assert statuses[-3:-1] == ["line_search_failed", "line_search_failed"]
    assert opt.last_step.grad_norm < 1e-5
    opt.step(closure)
    assert opt.last_step.status == "converged" and opt.last_step.loss_evals == 0


def test_converged_when_gradient_is_zero():
    x = torch.ones(3, dtype=torch.float64, requires_grad=True)
    opt = NonlinearCG([x])

    def closure():
        opt.zero_grad()
        loss = ((x - 1.0) ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    assert opt.last_step.status == "converged"
    assert opt.last_step.step_size == 0.0
    assert torch.equal(x.detach(), torch.ones(3, dtype=torch.float64))


# ---------------------------------------------------------------------------- closures, counts

def test_plain_closure_works_with_golden_and_counts_gradients():
    a, minimiser = make_quadratic(8)
    x = torch.zeros(8, dtype=torch.float64, requires_grad=True)
    opt = NonlinearCG([x], line_search="golden")
    calls = {"n": 0}

    def closure():  # no `backward` keyword: every evaluation runs backward
        calls["n"] += 1
        opt.zero_grad()
        e = x - minimiser
        loss = 0.5 * e @ (a @ e)
        loss.backward()
        return loss

    opt.step(closure)
    info = opt.last_step
    assert info.status == "ok"
    assert info.loss_evals == calls["n"]
    assert info.grad_evals == info.loss_evals


def test_values_only_closure_is_called_under_no_grad():
    a, minimiser = make_quadratic(8)
    x = torch.zeros(8, dtype=torch.float64, requires_grad=True)
    opt = NonlinearCG([x], line_search="golden")
    seen = []
    quadratic = quadratic_closure(opt, x, a, minimiser)

    def closure(backward=True):
        seen.append((backward, torch.is_grad_enabled()))
        return quadratic(backward)

    opt.step(closure)
    info = opt.last_step
    assert info.grad_evals == 1  # the gradient at the starting point
    assert info.loss_evals == len(seen) > 2
    assert seen[0] == (True, True)
    assert all(entry == (False, False) for entry in seen[1:])


def test_strong_wolfe_reuses_the_accepted_gradient_unless_parameters_changed():
    a, minimiser = make_quadratic(8)
    x = torch.zeros(8, dtype=torch.float64, requires_grad=True)
    opt = NonlinearCG([x])
    calls = {"n": 0}
    inner = quadratic_closure(opt, x, a, minimiser)

    def closure():
        calls["n"] += 1
        return inner()

    total = 0
    for _ in range(3):
        opt.step(closure)
        total += opt.last_step.loss_evals
    assert total == calls["n"]
    assert opt.state[x]["func_evals"] == calls["n"]
    # the second and later steps start from the cached evaluation
    opt.step(closure)
    assert opt.last_step.loss_evals == calls["n"] - total
    before = calls["n"]
    with torch.no_grad():
        x.add_(0.01)  # someone else moves the parameters
    opt.step(closure)
    assert opt.last_step.restart_reason == "parameters changed"
    assert opt.last_step.loss_evals == calls["n"] - before


def test_closure_required():
    x = torch.zeros(2, requires_grad=True)
    opt = NonlinearCG([x])
    with pytest.raises(RuntimeError, match="closure"):
        opt.step(None)


# ---------------------------------------------------------------------------- params, dtype, state

def test_float64_arithmetic_for_float32_parameters():
    a, minimiser = make_quadratic(10)
    a32, m32 = a.float(), minimiser.float()
    x = torch.zeros(10, dtype=torch.float32, requires_grad=True)
    opt = NonlinearCG([x], dtype=torch.float64, grad_tol=1e-5)
    closure = quadratic_closure(opt, x, a32, m32)
    for _ in range(60):
        opt.step(closure)
        if opt.last_step.status == "converged":
            break
    assert x.dtype == torch.float32
    assert opt.state[x]["d"].dtype == torch.float64
    assert opt.state[x]["prev_grad"].dtype == torch.float64
    assert torch.allclose(x.detach(), m32, atol=1e-4)


def test_several_groups_and_parameters_without_gradient():
    torch.manual_seed(0)
    target = torch.randn(6, dtype=torch.float64)

    def build():
        w1 = torch.zeros(3, dtype=torch.float64, requires_grad=True)
        w2 = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
        frozen = torch.full((4,), 7.0, dtype=torch.float64, requires_grad=True)  # never used
        return w1, w2, frozen

    def loss_of(w1, w2):
        v = torch.cat([w1, w2.sum(0)])
        return ((v - target) ** 2).sum() + (w2 ** 2).sum()

    w1, w2, frozen = build()
    grouped = NonlinearCG([{"params": [w1]}, {"params": [w2, frozen]}])
    v1, v2, frozen2 = build()
    single = NonlinearCG([v1, v2, frozen2])
    for opt, (p, q) in ((grouped, (w1, w2)), (single, (v1, v2))):
        def closure(opt=opt, p=p, q=q):
            opt.zero_grad()
            loss = loss_of(p, q)
            loss.backward()
            return loss
        for _ in range(5):
            opt.step(closure)
    assert frozen.grad is None
    assert torch.equal(frozen.detach(), torch.full((4,), 7.0, dtype=torch.float64))
    # one flat vector either way: the same iterates bit for bit
    assert torch.equal(w1, v1) and torch.equal(w2, v2)
    assert grouped.last_step.loss_after < grouped.last_step.loss_before or \
        grouped.last_step.status == "converged"
    assert grouped.last_step.grad_norm < 1e-6


def test_adding_a_group_after_some_steps_starts_afresh():
    w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    v = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    opt = NonlinearCG([w], grad_tol=1e-7)

    def closure():
        opt.zero_grad()
        loss = ((w - 1.0) ** 2).sum() + ((v + 2.0) ** 2).sum() + (w.sum() * v.sum()) ** 2 * 0.1
        loss.backward()
        return loss

    for _ in range(2):
        opt.step(closure)
    opt.add_param_group({"params": [v]})
    for _ in range(30):
        opt.step(closure)
        if opt.last_step.status == "converged":
            break
    assert opt.last_step.status == "converged"
    assert not torch.equal(v.detach(), torch.zeros(2, dtype=torch.float64))


def test_sparse_gradients_are_refused():
    embedding = torch.nn.Embedding(10, 3, sparse=True)
    opt = NonlinearCG(embedding.parameters())

    def closure():
        opt.zero_grad()
        loss = embedding(torch.tensor([1, 2])).pow(2).sum()
        loss.backward()
        return loss

    with pytest.raises(TypeError, match="sparse"):
        opt.step(closure)


def test_parameters_on_different_devices_are_refused():
    cpu = torch.zeros(2, requires_grad=True)
    meta = torch.zeros(2, device="meta", requires_grad=True)
    with pytest.raises(ValueError, match="one device"):
        NonlinearCG([cpu, meta])
    opt = NonlinearCG([cpu])
    with pytest.raises(ValueError, match="one device"):
        opt.add_param_group({"params": [meta]})
    assert len(opt.param_groups) == 1


@pytest.mark.parametrize(
    "options, field",
    [
        (dict(beta="pr"), "beta"),
        (dict(line_search="wolfe"), "line_search"),
        (dict(c1=0.0), "c1"),
        (dict(c2=1.0), "c2"),
        (dict(c1=0.3, c2=0.2), "c2"),
        (dict(ls_tol=0.0), "ls_tol"),
        (dict(max_ls=0), "max_ls"),
        (dict(max_ls=2.5), "max_ls"),
        (dict(init_step=-1.0), "init_step"),
        (dict(grad_tol=float("nan")), "grad_tol"),
        (dict(dtype=torch.int64), "dtype"),
        (dict(reuse_grad="yes"), "reuse_grad"),
    ],
)
def test_invalid_options_name_the_field(options, field):
    with pytest.raises(ConfigError) as caught:
        NonlinearCG([torch.zeros(2, requires_grad=True)], **options)
    assert field in caught.value.errors
    assert isinstance(caught.value, ValueError)


def test_groups_cannot_set_different_cg_options():
    with pytest.raises(ConfigError) as caught:
        NonlinearCG([{"params": [torch.zeros(2, requires_grad=True)], "c2": 0.3},
                     {"params": [torch.zeros(2, requires_grad=True)]}])
    assert "c2" in caught.value.errors


def _small_net_problem(seed=0):
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(64, 3, generator=generator)
    targets = torch.sin(inputs.sum(1, keepdim=True))
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    return model, inputs, targets


@pytest.mark.parametrize("line_search", ["strong-wolfe", "golden"])
@pytest.mark.parametrize("beta", ["pr+", "hz"])
def test_state_dict_round_trip_gives_identical_next_steps(line_search, beta):
    model, inputs, targets = _small_net_problem()
    options = dict(line_search=line_search, beta=beta, dtype=torch.float64)

    def closure_for(net, opt):
        def closure(backward=True):
            loss = torch.nn.functional.mse_loss(net(inputs), targets)
            if backward:
                opt.zero_grad()
                loss.backward()
            return loss
        return closure

    opt = NonlinearCG(model.parameters(), **options)
    for _ in range(4):
        opt.step(closure_for(model, opt))
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)

    reference = []
    for _ in range(4):
        opt.step(closure_for(model, opt))
        reference.append(opt.last_step)

    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    model2, _, _ = _small_net_problem(seed=5)  # different initial weights, overwritten below
    model2.load_state_dict(saved["model"])
    opt2 = NonlinearCG(model2.parameters())  # default options, overwritten by the state
    opt2.load_state_dict(saved["opt"])
    assert opt2.state[next(model2.parameters())]["d"].dtype == torch.float64
    resumed = []
    for _ in range(4):
        opt2.step(closure_for(model2, opt2))
        resumed.append(opt2.last_step)
    assert resumed == reference
    for p, q in zip(model.parameters(), model2.parameters()):
        assert torch.equal(p, q)


# ---------------------------------------------------------------------------- line searches alone

def test_strong_wolfe_search_meets_both_conditions():
    # phi(t) = (t - 3)^2 + 0.1 t^4 along a 1-D "direction" d = 1
    def evaluate(t):
        value = (t - 3.0) ** 2 + 0.1 * t ** 4
        slope = 2.0 * (t - 3.0) + 0.4 * t ** 3
        return value, torch.tensor([slope]), slope

    loss0, gtd0 = 9.0, -6.0
    for first in (1e-3, 0.5, 50.0):
        result = strong_wolfe(evaluate, loss0, gtd0, first, c1=1e-4, c2=0.1, max_evals=25)
        assert result.success
        assert result.loss <= loss0 + 1e-4 * result.step * gtd0
        assert abs(result.gtd) <= 0.1 * abs(gtd0)
        assert result.loss_evals <= 25


def test_golden_section_search_finds_the_minimum_to_tolerance():
    def evaluate(t):
        return (t - 2.0) ** 2 + 1.0

    for first in (1e-2, 1.0, 40.0):
        result = golden_section(evaluate, 5.0, -4.0, first, tol=1e-6, max_evals=200)
        assert result.success
        assert result.step == pytest.approx(2.0, abs=1e-4)
        assert result.grad is None


def test_line_searches_respect_the_evaluation_budget():
    def slope_down(t):  # unbounded below: the search never brackets
        return -t, torch.tensor([-1.0]), -1.0

    result = strong_wolfe(slope_down, 0.0, -1.0, 1.0, max_evals=7)
    assert result.loss_evals == 7
    assert not result.success and result.step > 0
    result = golden_section(lambda t: -t, 0.0, -1.0, 1.0, max_evals=7)
    assert result.loss_evals == 7
    assert not result.success and result.step > 0


def test_whether_a_closure_takes_backward_is_read_from_its_signature_and_remembered_per_code():
    # NonlinearCG calls closure(backward=False) for value-only evaluations when the closure takes
    # that keyword; the answer is remembered per code object of a plain function (the engine makes
    # a new closure every epoch from the same code), and worked out afresh for anything else
    import functools

    from twophase.optim.cg import _accepts_backward

    def make(with_keyword: bool):
        if with_keyword:
            def closure(backward=True):
                return backward
        else:
            def closure():
                return 0.0
        return closure

    for _ in range(2):  # the second round reads the remembered answers
        assert _accepts_backward(make(True)) and not _accepts_backward(make(False))
    assert _accepts_backward(lambda **kwargs: 0.0) and not _accepts_backward(lambda *args: 0.0)

    def two(a, backward=True):
        return a

    assert _accepts_backward(functools.partial(two, 1))
    assert not _accepts_backward(functools.partial(lambda a: a, 1))

    class Callable:
        def __call__(self, backward=True):
            return 0.0

    assert _accepts_backward(Callable())

    @functools.wraps(make(False))
    def wrapped(*args, **kwargs):  # its signature is the wrapped function's: no backward keyword
        return 0.0

    assert not _accepts_backward(wrapped)
