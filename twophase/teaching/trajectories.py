"""twophase's optimizers on the toy surfaces: Adam, CG and two-phase from one start point.

From a start point, three arms, all run by twophase's own optimizers on one float64
tensor of two parameters; one "epoch" of a toy is one optimizer step on the full loss:

    "adam"       TwoPhase with a rule that never fires within the run (pure Adam, the very
                 same steps as the two-phase arm before its switch)
    "cg"         NonlinearCG from the start
    "two-phase"  TwoPhase with SwitchRule(tolerance): Adam until the gradient norm after a
                 step is at or below tolerance x its running maximum, then NonlinearCG.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from twophase.optim import NonlinearCG, SwitchRule, TwoPhase
from twophase.teaching.surfaces import _check_c, _surface, surface_value_and_grad

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


def first_convex_step(name: str, traj: "Trajectory", c: float = 0.5) -> int | None:
    """The first point k of `traj` (after k steps) where the surface is convex (the smallest Hessian
    eigenvalue is positive); None when the path never gets there."""
    from twophase.teaching.surfaces import hessian_eigenvalues

    for k, point in enumerate(traj.points):
        if hessian_eigenvalues(name, point, c)[0] > 0:
            return k
    return None
