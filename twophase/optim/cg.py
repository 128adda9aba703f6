"""Nonlinear conjugate gradient as a ``torch.optim.Optimizer``.

One call of ``step(closure)`` is one CG iteration over all parameters of all groups, seen as one
flat vector (as torch/optim/lbfgs.py does):

    g      = gradient at the current point x
    beta   = "pr+" max(0, g.(g - g_prev) / |g_prev|^2)        (Polak-Ribiere+, default)
             "fr"  |g|^2 / |g_prev|^2                         (Fletcher-Reeves)
             "hz"  Hager-Zhang, with their lower bound eta_k
    d      = -g + beta * d_prev, or -g on a restart
    t      = line search along d ("strong-wolfe" or "golden")
    x      = x + t * d

Restarts (d = -g): the first step; PR+ beta clipped at 0; Powell's test
|g.g_prev| >= 0.2 |g|^2; a direction that is not a descent direction; the step after a failed
line search or a non-finite start; parameters changed by someone else since the last step.

Safety: a trial point with a NaN or infinite loss counts as a step that is too long; the
parameters are never left at such a point. If the line search finds no finite decrease, the
parameters are put back exactly (bit for bit) where the step started and the step reports it.
If the closure raises during the line search (any exception, KeyboardInterrupt included), the
parameters are put back the same way and the exception propagates; the optimizer's state is
as before the step.
"""

from __future__ import annotations

import inspect
import math
import types
from dataclasses import asdict, dataclass

import torch
from torch.optim import Optimizer

from twophase.errors import ConfigError
from twophase.optim.line_search import golden_section, strong_wolfe

__all__ = ["NonlinearCG", "StepInfo", "BETAS", "LINE_SEARCHES", "STATUSES", "OPTION_NAMES"]

BETAS = ("pr+", "fr", "hz")
LINE_SEARCHES = ("strong-wolfe", "golden")
STATUSES = ("ok", "restarted", "line_search_failed", "non_finite", "converged")

# Powell's restart test: restart when |g_k . g_{k-1}| >= POWELL * |g_k|^2.
POWELL = 0.2
# Hager-Zhang's constant in the lower bound eta_k = -1 / (|d| * min(HZ_ETA, |g_prev|)).
HZ_ETA = 0.01

# Option names stored in every parameter group; CG has one line search over all parameters,
# so all groups must agree on them.
OPTION_NAMES = ("beta", "line_search", "c1", "c2", "ls_tol", "max_ls", "init_step", "grad_tol",
                "dtype", "reuse_grad")


@dataclass
class StepInfo:
    """What one ``NonlinearCG.step`` did.

    Attributes:
        status: "ok" (a CG step), "restarted" (a steepest-descent step because of a restart,
            see ``restart_reason``), "line_search_failed" (no point met the search's test;
            the parameters moved to the best finite decrease seen, or stayed put if there was
            none), "non_finite" (the loss or gradient at the start was NaN/inf, or every trial
            was non-finite and no decrease was found; the parameters did not move),
            "converged" (nothing moved, no closure call if the last step's gradient is
            reused: the gradient norm is at or below ``grad_tol``, or the two previous steps,
            from this very point, found no lower loss; the second of them searched along -g,
            so the loss cannot be lowered at its precision).
        step_size: the accepted step t along the direction (0.0 if the parameters did not move).
        beta: the beta used for the direction (0.0 for steepest descent).
        loss_before: loss at the start of the step.
        loss_after: loss at the point where the step left the parameters.
        loss_evals: closure calls in this step (forward passes, with or without backward).
        grad_evals: closure calls in this step that also ran backward.
        grad_norm: Euclidean norm of the gradient at the start of the step.
        restart_reason: why the direction was reset to -g ("beta clipped", "powell",
            "not descent", "line search failed", "non-finite", "beta undefined",
            "parameters changed"), or None.
        non_finite_evals: trial points of the line search whose loss was NaN or infinite.
    """

    status: str
    step_size: float
    beta: float
    loss_before: float
    loss_after: float
    loss_evals: int
    grad_evals: int
    grad_norm: float = math.nan
    restart_reason: str | None = None
    non_finite_evals: int = 0

    def to_dict(self) -> dict:
        """The fields as a plain dict (for logs and records)."""
        return asdict(self)


_ACCEPTS_BACKWARD: dict = {}  # code object -> answer, for plain functions (their parameters are their code's)


def _accepts_backward(closure) -> bool:
    """True if ``closure`` can be called as ``closure(backward=False)`` (remembered per code object of a
    plain function: inspect.signature costs about 0.1 ms, a tenth of a small model's CG step)."""
    plain = (isinstance(closure, types.FunctionType) and not hasattr(closure, "__wrapped__")
             and not hasattr(closure, "__signature__"))
    if plain and closure.__code__ in _ACCEPTS_BACKWARD:
        return _ACCEPTS_BACKWARD[closure.__code__]
    answer = _signature_accepts_backward(closure)
    if plain:
        _ACCEPTS_BACKWARD[closure.__code__] = answer
    return answer


def _signature_accepts_backward(closure) -> bool:
    try:
        signature = inspect.signature(closure)
    except (TypeError, ValueError):
        return False
    for parameter in signature.parameters.values():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            return True
        if parameter.name == "backward" and parameter.kind in (
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            inspect.Parameter.KEYWORD_ONLY,
        ):
            return True
    return False


def _detached(loss) -> torch.Tensor:
    """The closure's loss as a detached tensor (a closure may also return a Python number)."""
    return loss.detach() if torch.is_tensor(loss) else torch.as_tensor(loss)


def _flat_view(tensor: torch.Tensor) -> torch.Tensor:
    if torch.is_complex(tensor):
        tensor = torch.view_as_real(tensor)
    return tensor.reshape(-1)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_options(beta, line_search, c1, c2, ls_tol, max_ls, init_step, grad_tol, dtype,
                   reuse_grad) -> None:
    errors = {}
    if beta not in BETAS:
        errors["beta"] = f"must be one of {', '.join(repr(b) for b in BETAS)}; got {beta!r}"
    if line_search not in LINE_SEARCHES:
        errors["line_search"] = (
            f"must be one of {', '.join(repr(s) for s in LINE_SEARCHES)}; got {line_search!r}"
        )
    if not (_is_number(c1) and 0 < c1 < 1):
        errors["c1"] = f"must be a number in (0, 1), typically 1e-4; got {c1!r}"
    if not (_is_number(c2) and 0 < c2 < 1):
        errors["c2"] = f"must be a number in (c1, 1), typically 0.1 to 0.4; got {c2!r}"
    elif "c1" not in errors and not c2 > c1:
        errors["c2"] = f"must be larger than c1={c1!r}; got {c2!r}"
    if not (_is_number(ls_tol) and 0 < ls_tol < 1):
        errors["ls_tol"] = f"must be a number in (0, 1), e.g. 1e-4; got {ls_tol!r}"
    if not (isinstance(max_ls, int) and not isinstance(max_ls, bool) and max_ls >= 1):
        errors["max_ls"] = f"must be an integer >= 1; got {max_ls!r}"
    if init_step is not None and not (
        _is_number(init_step) and init_step > 0 and math.isfinite(init_step)
    ):
        errors["init_step"] = f"must be None or a positive finite number; got {init_step!r}"
    if not (_is_number(grad_tol) and grad_tol >= 0 and math.isfinite(grad_tol)):
        errors["grad_tol"] = f"must be a finite number >= 0; got {grad_tol!r}"
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        errors["dtype"] = (
            f"must be None or a floating-point torch dtype such as torch.float64; got {dtype!r}"
        )
    if not isinstance(reuse_grad, bool):
        errors["reuse_grad"] = f"must be True or False; got {reuse_grad!r}"
    if errors:
        raise ConfigError(errors)


class NonlinearCG(Optimizer):
    """Nonlinear conjugate gradient with a line search, for full-batch losses.

    Use it like ``torch.optim.LBFGS``: ``loss = opt.step(closure)``. The closure zeroes the
    gradients, computes the loss over the whole training set, calls ``backward()`` and returns
    the loss. It may also accept a keyword ``backward``: ``closure(backward=False)`` must then
    only compute the loss (the optimizer calls it under ``torch.no_grad()``), which the golden
    line search uses to save the backward passes. A closure without that keyword still works.

    Args:
        params: the parameters (an iterable of tensors or of parameter-group dicts). All
            groups form one vector: one beta and one line search for all of them. Groups may not
            set the CG options below to different values.
        beta: "pr+" (Polak-Ribiere, clipped at 0; default), "fr" (Fletcher-Reeves) or "hz"
            (Hager-Zhang).
        line_search: "strong-wolfe" (values and gradients; default) or "golden" (bracketing then
            golden-section search on loss values only, as in the source paper).
        c1: sufficient-decrease constant of the strong Wolfe search, in (0, 1). Default 1e-4.
        c2: curvature constant of the strong Wolfe search, in (c1, 1); 0.1 to 0.4 suits CG.
            Default 0.2.
        ls_tol: relative tolerance of the golden search: it stops when the bracket is narrower
            than ls_tol times the step. Default 1e-4.
        max_ls: the most loss evaluations one line search may use. Default 25.
        init_step: first trial step of the first line search (and after a search that found
            no decrease), as a multiple of the direction. None (default) uses
            min(1, 1 / |g|_1), as LBFGS does. Later searches start from the previous step
            scaled by the ratio of directional derivatives (Nocedal & Wright, eq. 3.60).
        grad_tol: "zero" gradient norm: a step whose starting gradient has a Euclidean norm at
            or below this value does nothing and reports "converged". Default 1e-10.
        dtype: floating dtype of CG's own arithmetic (directions, gradients, dot products and
            trial points), e.g. torch.float64 for float32 models. None (default) uses the
            parameters' dtype.
        reuse_grad: when True (default) and the parameters have not changed since the last
            step, reuse the loss and gradient the strong Wolfe search computed at the accepted
            point instead of calling the closure again. Set False if the closure's data change
            between steps.

    After each step, ``last_step`` is a ``StepInfo`` saying what happened.
    """

    def __init__(
        self,
        params,
        beta: str = "pr+",
        line_search: str = "strong-wolfe",
        c1: float = 1e-4,
        c2: float = 0.2,
        ls_tol: float = 1e-4,
        max_ls: int = 25,
        init_step: float | None = None,
        grad_tol: float = 1e-10,
        dtype: torch.dtype | None = None,
        reuse_grad: bool = True,
    ):
        _check_options(beta, line_search, c1, c2, ls_tol, max_ls, init_step, grad_tol, dtype,
                       reuse_grad)
        defaults = dict(beta=beta, line_search=line_search, c1=c1, c2=c2, ls_tol=ls_tol,
                        max_ls=max_ls, init_step=init_step, grad_tol=grad_tol, dtype=dtype,
                        reuse_grad=reuse_grad)
        super().__init__(params, defaults)
        self.last_step: StepInfo | None = None

    # ------------------------------------------------------------------ parameter handling

    def add_param_group(self, param_group: dict) -> None:
        """Add a group; its CG options, if given, must equal the optimizer's."""
        differing = {
            name: f"cannot differ between parameter groups (NonlinearCG uses one line search "
                  f"over all parameters); the optimizer has {self.defaults[name]!r}, the group "
                  f"{param_group[name]!r}"
            for name in OPTION_NAMES
            if name in param_group and param_group[name] != self.defaults[name]
        }
        if differing:
            raise ConfigError(differing)
        super().add_param_group(param_group)
        devices = {p.device for p in self._params()}
        if len(devices) > 1:
            self.param_groups.pop()
            raise ValueError(
                "NonlinearCG needs all parameters on one device (it works on one flat vector); "
                f"got parameters on {sorted(str(d) for d in devices)}"
            )

    def _params(self) -> list[torch.Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    def _work_dtype(self, params) -> torch.dtype:
        dtype = self.param_groups[0]["dtype"]
        if dtype is not None:
            return dtype
        result = None
        for p in params:
            real = p.dtype.to_real()
            result = real if result is None else torch.promote_types(result, real)
        if result is None or not result.is_floating_point:
            raise TypeError(f"NonlinearCG needs floating-point parameters; got dtype {result}")
        return result

    def _gather_flat_params(self, params, dtype) -> torch.Tensor:
        return torch.cat([_flat_view(p.detach()).to(dtype) for p in params])

    def _gather_flat_grad(self, params, dtype) -> torch.Tensor:
        views = []
        for p in params:
            if p.grad is None:
                # no gradient (not used by the loss, or frozen): treated as a zero gradient
                views.append(torch.zeros(_flat_view(p.detach()).numel(), dtype=dtype,
                                         device=p.device))
            elif p.grad.is_sparse:
                raise TypeError(
                    "NonlinearCG does not support sparse gradients; use dense parameters "
                    "(e.g. nn.Embedding(..., sparse=False))"
                )
            else:
                views.append(_flat_view(p.grad).to(dtype))
        return torch.cat(views)

    def _set_flat_params(self, params, flat: torch.Tensor) -> None:
        offset = 0
        for p in params:
            target = torch.view_as_real(p) if torch.is_complex(p) else p
            numel = target.numel()
            target.copy_(flat[offset:offset + numel].view_as(target))
            offset += numel

    # ------------------------------------------------------------------ the step

    @torch.no_grad()
    def step(self, closure):
        """Make one CG iteration and return the loss at the starting point.

        Args:
            closure: re-evaluates the model on the full training set and returns the loss;
                called with gradients enabled it must zero the gradients and call
                ``backward()``. If it accepts a keyword ``backward``, ``closure(backward=False)``
                must only compute the loss.
        """
        if closure is None:
            raise RuntimeError(
                "NonlinearCG.step needs a closure that re-evaluates the full-batch loss "
                "(zero_grad, forward, backward, return loss): the line search evaluates the "
                "loss at several points along the search direction"
            )
        group = self.param_groups[0]
        params = self._params()
        dtype = self._work_dtype(params)
        values_only = _accepts_backward(closure)
        state = self.state[params[0]]
        state.setdefault("n_iter", 0)
        state.setdefault("func_evals", 0)
        state.setdefault("grad_evals", 0)
        counts = {"loss": 0, "grad": 0}

        def loss_and_grad():
            with torch.enable_grad():
                loss = closure()
            counts["loss"] += 1
            counts["grad"] += 1
            return loss, self._gather_flat_grad(params, dtype)

        def loss_only():
            if values_only:
                loss = closure(backward=False)
            else:
                with torch.enable_grad():
                    loss = closure()
                counts["grad"] += 1
            counts["loss"] += 1
            return loss

        # loss and gradient at the starting point
        x0 = self._gather_flat_params(params, dtype)
        restart = state.get("restart")
        cached_x = state.get("x")
        if cached_x is not None and (cached_x.shape != x0.shape or cached_x.dtype != x0.dtype):
            # parameters were added or the working dtype changed: start afresh
            for key in ("x", "loss", "grad", "d", "prev_grad", "prev_step", "prev_gtd"):
                state.pop(key, None)
            cached_x, restart = None, None
        if cached_x is not None and not torch.equal(cached_x, x0):
            restart = "parameters changed"
            state["stalls"] = 0
        if (group["reuse_grad"] and restart != "parameters changed" and cached_x is not None
                and state.get("grad") is not None):
            loss, g = state["loss"], state["grad"]
        else:
            loss, g = loss_and_grad()
        loss = _detached(loss)
        loss0 = float(loss)
        grad_norm = float(g.norm())

        def finish(info: StepInfo, x_end, loss_end, grad_end):
            state["x"] = x_end
            state["loss"] = loss_end
            state["grad"] = grad_end
            state["n_iter"] += 1
            state["func_evals"] += counts["loss"]
            state["grad_evals"] += counts["grad"]
            info.loss_evals = counts["loss"]
            info.grad_evals = counts["grad"]
            self.last_step = info
            return loss

        if not (math.isfinite(loss0) and math.isfinite(grad_norm)):
            state["restart"] = "non-finite"
            info = StepInfo("non_finite", 0.0, 0.0, loss0, loss0, 0, 0, grad_norm, restart)
            return finish(info, x0, loss, None)
        if grad_norm <= group["grad_tol"] or state.get("stalls", 0) >= 2:
            # a zero gradient, or two searches from this very point (the second along -g) found
            # no lower loss: converged as far as the precision of the loss allows
            info = StepInfo("converged", 0.0, 0.0, loss0, loss0, 0, 0, grad_norm, None)
            return finish(info, x0, loss, g)

        # search direction
        d_prev, g_prev = state.get("d"), state.get("prev_grad")
        beta = 0.0
        if d_prev is None:
            restart = None  # the first step is steepest descent by definition
        elif restart is None:
            beta, restart = self._beta(group["beta"], g, g_prev, d_prev)
        if d_prev is None or restart is not None:
            beta = 0.0
            d = g.neg()
        else:
            d = g.neg().add_(d_prev, alpha=beta)
            if not float(g.dot(d)) < 0:
                restart, beta, d = "not descent", 0.0, g.neg()
        gtd0 = float(g.dot(d))
        if not gtd0 < 0:  # |g|^2 underflowed: a gradient this small is zero in this dtype
            info = StepInfo("converged", 0.0, 0.0, loss0, loss0, 0, 0, grad_norm, None)
            return finish(info, x0, loss, g)

        # first trial step
        t = None
        prev_step, prev_gtd = state.get("prev_step"), state.get("prev_gtd")
        if prev_step is not None and prev_gtd is not None:
            t = prev_step * prev_gtd / gtd0  # Nocedal & Wright (3.60)
        if t is None or not (t > 0 and math.isfinite(t)):
            if group["init_step"] is not None:
                t = float(group["init_step"])
            else:
                t = min(1.0, 1.0 / float(g.abs().sum()))

        # line search; `at` is the step the parameters are currently set to
        at = [0.0]
        trial_losses = {}
        # x0 holds the parameters exactly when the working dtype represents every parameter's
        # dtype; otherwise (e.g. dtype=float32 for float64 parameters) keep their own copy, so
        # that going back to the start is always bit for bit
        originals = None if all(torch.promote_types(p.dtype.to_real(), dtype) == dtype
                                for p in params) else [p.detach().clone() for p in params]

        def restore_start():
            if originals is None:
                self._set_flat_params(params, x0)
            else:
                for p, original in zip(params, originals):
                    p.copy_(original)
            at[0] = 0.0

        def move_to(step_size):
            if step_size != at[0]:
                if step_size == 0.0:
                    restore_start()
                    return
                at[0] = math.nan  # unknown until the copy is complete
                self._set_flat_params(params, x0.add(d, alpha=step_size))
                at[0] = step_size

        try:
            if group["line_search"] == "strong-wolfe":
                def evaluate(step_size):
                    move_to(step_size)
                    trial_loss, trial_grad = loss_and_grad()
                    trial_losses[step_size] = trial_loss = _detached(trial_loss)
                    return float(trial_loss), trial_grad, float(trial_grad.dot(d))

                result = strong_wolfe(evaluate, loss0, gtd0, t, c1=group["c1"], c2=group["c2"],
                                      max_evals=group["max_ls"])
            else:
                def evaluate(step_size):
                    move_to(step_size)
                    trial_losses[step_size] = trial_loss = _detached(loss_only())
                    return float(trial_loss)

                result = golden_section(evaluate, loss0, gtd0, t, tol=group["ls_tol"],
                                        max_evals=group["max_ls"])
        except BaseException:
            # the closure (or anything else) raised mid-search, KeyboardInterrupt included: put
            # the parameters back where the step started, as for a failed search, and re-raise;
            # the optimizer's state is untouched, so the step can simply be retried
            restore_start()
            raise

        # leave the parameters at the accepted point, or exactly where they started
        move_to(result.step)
        state["d"] = d
        state["prev_grad"] = g
        if result.step > 0:
            status = ("restarted" if restart else "ok") if result.success else "line_search_failed"
            state["prev_step"], state["prev_gtd"] = result.step, gtd0
            state["restart"] = None if result.success else "line search failed"
            state["stalls"] = 0
            info = StepInfo(status, result.step, beta, loss0, result.loss, 0, 0, grad_norm,
                            restart, result.non_finite)
            x_end = self._gather_flat_params(params, dtype)
            return finish(info, x_end, trial_losses[result.step], result.grad)
        status = "non_finite" if result.non_finite else "line_search_failed"
        state["prev_step"], state["prev_gtd"] = None, None
        state["restart"] = "line search failed"
        state["stalls"] = state.get("stalls", 0) + 1
        info = StepInfo(status, 0.0, beta, loss0, loss0, 0, 0, grad_norm, restart,
                        result.non_finite)
        return finish(info, x0, loss, g)

    @staticmethod
    def _beta(kind: str, g, g_prev, d_prev) -> tuple[float, str | None]:
        """Beta for the new direction, or (0, reason) when the direction must be restarted."""
        gg = float(g.dot(g))
        gg_prev = float(g_prev.dot(g_prev))
        if not gg_prev > 0:
            return 0.0, "beta undefined"
        if abs(float(g.dot(g_prev))) >= POWELL * gg:
            return 0.0, "powell"
        if kind == "fr":
            return gg / gg_prev, None
        y = g - g_prev
        if kind == "pr+":
            beta = float(g.dot(y)) / gg_prev
            if beta <= 0:
                return 0.0, "beta clipped"
            return beta, None
        # Hager-Zhang (2005), eq. (1.5), with the lower bound eta_k of their eq. (2.3)
        dy = float(d_prev.dot(y))
        if not dy > 0:
            return 0.0, "beta undefined"
        yy = float(y.dot(y))
        beta = (float(y.dot(g)) - 2.0 * yy * float(d_prev.dot(g)) / dy) / dy
        eta = -1.0 / (float(d_prev.norm()) * min(HZ_ETA, math.sqrt(gg_prev)))
        return max(beta, eta), None

    # ------------------------------------------------------------------ saving and loading

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a state saved by ``state_dict()``; the next step is then identical.

        ``Optimizer.load_state_dict`` casts floating-point state to the dtype of the parameter
        it is attached to; CG may keep its vectors in another dtype (``dtype=torch.float64``),
        so the saved tensors are put back exactly as they were.
        """
        saved_state = state_dict["state"]
        first_id = state_dict["param_groups"][0]["params"][0] if state_dict["param_groups"] \
            and state_dict["param_groups"][0]["params"] else None
        super().load_state_dict(state_dict)
        params = self._params()
        if first_id is not None and first_id in saved_state:
            device = params[0].device
            self.state[params[0]] = {
                key: value.detach().to(device=device, copy=True) if torch.is_tensor(value) else value
                for key, value in saved_state[first_id].items()
            }
