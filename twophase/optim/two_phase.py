"""Two-phase training as one ``torch.optim.Optimizer``: Adam, then nonlinear CG.

    opt = TwoPhase(model.parameters(), lr=1e-3, cg={"beta": "pr+"}, rule={"tolerance": 0.9})
    for epoch in range(epochs):
        if opt.phase == "adam":
            for x, y in loader:                       # mini-batches
                opt.zero_grad(); loss_fn(model(x), y).backward(); opt.step()
        else:
            opt.step(full_batch_closure)              # one CG iteration on the whole set
        opt.epoch_end(full_gradient_norm(model, loss_fn, chunks))

The switch is one-way and decided by a ``SwitchRule`` once per epoch.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch.optim import Optimizer

from twophase.errors import ConfigError
from twophase.optim.cg import OPTION_NAMES as _CG_OPTIONS
from twophase.optim.cg import NonlinearCG
from twophase.optim.switch import OPTION_NAMES as _RULE_OPTIONS
from twophase.optim.switch import SwitchRule

__all__ = ["TwoPhase", "PHASES"]

PHASES = ("adam", "cg")


def _check_adam_options(lr, betas, eps, weight_decay) -> None:
    errors = {}

    def real(value):
        return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)

    if not (real(lr) and lr >= 0):
        errors["lr"] = f"must be a finite number >= 0; got {lr!r}"
    if not (isinstance(betas, (tuple, list)) and len(betas) == 2
            and all(real(b) and 0 <= b < 1 for b in betas)):
        errors["betas"] = f"must be a pair of numbers in [0, 1), e.g. (0.9, 0.999); got {betas!r}"
    if not (real(eps) and eps >= 0):
        errors["eps"] = f"must be a finite number >= 0; got {eps!r}"
    if not (real(weight_decay) and weight_decay >= 0):
        errors["weight_decay"] = f"must be a finite number >= 0; got {weight_decay!r}"
    if errors:
        raise ConfigError(errors)


def _make_rule(rule) -> SwitchRule:
    if rule is None:
        return SwitchRule()
    if isinstance(rule, SwitchRule):
        return rule
    if isinstance(rule, dict):
        unknown = sorted(set(rule) - set(_RULE_OPTIONS))
        if unknown:
            raise ConfigError({"rule": f"unknown option(s) {', '.join(map(repr, unknown))}; "
                                       f"allowed: {', '.join(_RULE_OPTIONS)}"})
        try:
            return SwitchRule(**rule)
        except ConfigError as error:
            raise ConfigError({f"rule.{k}": v for k, v in error.errors.items()}) from None
    raise TypeError(f"rule must be None, a SwitchRule or a dict of its options; "
                    f"got {type(rule).__name__}")


class TwoPhase(Optimizer):
    """Adam until the epoch-wise gradient norm has peaked, then nonlinear conjugate gradient.

    Args:
        params: the parameters (an iterable of tensors or of parameter-group dicts; a
            generator is fine, it is listed once). Group options are Adam's.
        lr: Adam's learning rate. Default 1e-3.
        betas: Adam's coefficients for the running averages of the gradient and its square.
            Default (0.9, 0.999).
        eps: Adam's term added to the denominator. Default 1e-8.
        weight_decay: Adam's L2 penalty (Adam phase only; CG minimises what the closure returns,
            so add a penalty to that loss if CG should see one). Default 0.
        cg: dict of ``NonlinearCG`` options for the second phase (beta, line_search, c1, c2,
            ls_tol, max_ls, init_step, grad_tol, dtype, reuse_grad), or None for its defaults.
        rule: a ``SwitchRule``, a dict of its options (tolerance, min_epochs, patience,
            smoothing, switch_epoch), or None for the paper's rule (tolerance 0.9).

    Use ``step()`` for every update and ``epoch_end(grad_norm)`` once per epoch. In phase
    "adam", ``step(closure=None)`` is ``torch.optim.Adam.step``; in phase "cg" it is one
    ``NonlinearCG`` iteration and needs a closure that evaluates the full-batch loss.

    Attributes:
        adam: the inner ``torch.optim.Adam`` (shares ``param_groups`` and ``state`` with this
            optimizer, so learning-rate schedulers work on either).
        cg: the inner ``NonlinearCG`` over all parameters (created with the optimizer, used
            after the switch).
        rule: the ``SwitchRule``.
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        cg: dict | None = None,
        rule: SwitchRule | dict | None = None,
    ):
        _check_adam_options(lr, betas, eps, weight_decay)
        if cg is not None and not isinstance(cg, dict):
            raise TypeError(f"cg must be None or a dict of NonlinearCG options; "
                            f"got {type(cg).__name__}")
        cg = dict(cg or {})
        unknown = sorted(set(cg) - set(_CG_OPTIONS))
        if unknown:
            raise ConfigError({"cg": f"unknown option(s) {', '.join(map(repr, unknown))}; "
                                     f"allowed: {', '.join(_CG_OPTIONS)}"})
        self.rule = _make_rule(rule)
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
        # Optimizer.__init__ lists the parameters once (a generator is consumed here)
        super().__init__(params, defaults)
        # Adam works on the very same group dicts: one set of groups, one state
        self.adam = torch.optim.Adam(self.param_groups, **defaults)
        self.param_groups = self.adam.param_groups
        self.state = self.adam.state
        try:
            self.cg = NonlinearCG(self._all_params(), **cg)
        except ConfigError as error:
            raise ConfigError({f"cg.{k}": v for k, v in error.errors.items()}) from None
        self.phase = "adam"

    def _all_params(self) -> list[torch.Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    def add_param_group(self, param_group: dict) -> None:
        """Add a parameter group (Adam options); CG sees its parameters too."""
        if "adam" not in self.__dict__:  # called from Optimizer.__init__
            super().add_param_group(param_group)
            return
        self.adam.add_param_group(param_group)
        self.cg.add_param_group({"params": param_group["params"]})

    # ------------------------------------------------------------------ properties

    @property
    def switch_epoch(self) -> int | None:
        """The epoch at whose end the switch to CG happened, or None."""
        return self.rule.switch_epoch

    @property
    def peak_epoch(self) -> int | None:
        """The epoch with the largest (smoothed) gradient norm so far, or None."""
        return self.rule.peak_epoch

    @property
    def peak_grad_norm(self) -> float | None:
        """The largest (smoothed) gradient norm so far, or None."""
        return self.rule.peak_value

    @property
    def last_step(self):
        """``StepInfo`` of the last CG step (None before the first one)."""
        return self.cg.last_step

    # ------------------------------------------------------------------ stepping

    def step(self, closure=None):
        """One update: an Adam step in phase "adam", one CG iteration in phase "cg".

        Args:
            closure: in phase "adam" optional (as for Adam); in phase "cg" required: it must
                zero the gradients, evaluate the loss on the full training set, call
                ``backward()`` and return the loss (optionally accepting ``backward=False`` for
                a loss-only evaluation, see ``NonlinearCG``).

        Returns:
            The closure's loss (for CG: at the point where the step started), or None.
        """
        if self.phase == "adam":
            return self.adam.step(closure)
        if closure is None:
            raise RuntimeError(
                f"TwoPhase switched to conjugate gradient at the end of epoch {self.switch_epoch}: "
                "step() now needs a closure that zeroes the gradients, evaluates the loss on the "
                "full training set, calls backward() and returns the loss, because CG's line "
                "search re-evaluates the loss at several points along the search direction"
            )
        return self.cg.step(closure)

    def epoch_end(self, grad_norm: float) -> bool:
        """Feed one epoch's gradient norm to the rule; True on the epoch the switch happens.

        Args:
            grad_norm: the epoch-wise gradient norm (e.g. from ``full_gradient_norm``).
        """
        switched = self.rule.update(grad_norm)
        if switched:
            self.phase = "cg"
        return switched

    # ------------------------------------------------------------------ saving and loading

    def state_dict(self) -> dict:
        """Adam's moments and groups, plus the CG state, the rule and the phase."""
        state = self.adam.state_dict()
        state["two_phase"] = {
            "phase": self.phase,
            "rule": self.rule.state_dict(),
            "cg": self.cg.state_dict(),
        }
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore everything saved by ``state_dict()``.

        The rule's state and the phase are checked first (see ``SwitchRule.load_state_dict``):
        a bad one raises ValueError naming the bad key and nothing is loaded.
        """
        extra = state_dict.get("two_phase")
        if not isinstance(extra, dict):
            raise ValueError("not a TwoPhase state dict: it has no 'two_phase' entry")
        if extra.get("phase") not in PHASES:
            raise ValueError(f"TwoPhase state has phase {extra.get('phase')!r}; "
                             f"expected one of {PHASES}")
        if "rule" not in extra:
            raise ValueError("TwoPhase state has no 'rule' entry (the switch rule's state)")
        checked = SwitchRule()
        checked.load_state_dict(extra["rule"])  # raises, naming the bad key, before anything changes
        if (extra["phase"] == "cg") != checked.switched:
            raise ValueError(
                f"TwoPhase state has phase {extra['phase']!r} but its rule has "
                f"{'switched' if checked.switched else 'not switched'} (switched="
                f"{checked.switched}); the phase is 'cg' exactly after the switch")
        self.adam.load_state_dict({"state": state_dict["state"],
                                   "param_groups": state_dict["param_groups"]})
        # Adam.load_state_dict builds new group and state objects: share them again
        self.param_groups = self.adam.param_groups
        self.state = self.adam.state
        self.cg.load_state_dict(extra["cg"])
        self.rule.load_state_dict(extra["rule"])
        self.phase = extra["phase"]
