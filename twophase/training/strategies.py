"""The arms a run can train: strategies, and the arm names that choose one and its switch.

A strategy says how an arm trains: which phase it starts in, whether and into which second
phase it switches, and how that second phase's optimizer is built and stepped. Adding a strategy
means adding one entry to STRATEGIES (and, for a new second phase, one optimizer factory here).

An arm of a run is named by an arm spec, plain text that is also its id in metrics.csv:

    adam                  the baseline, Adam for every epoch (the trunk itself)
    two-phase             Adam, then CG when the run's switch rule fires (RunConfig's rule fields)
    adam-lbfgs            Adam, then L-BFGS at the run's switch rule
    cg                    CG from the first epoch (a branch at epoch 0)
    two-phase@300         ... switched at a fixed epoch (300)
    two-phase@30%         ... switched after 30% of the epochs
    two-phase@paper       ... switched by the paper's literal rule (tolerance 0.9), whatever the run's rule
    two-phase@tolerance=0.8:patience=3      the run's rule with these options changed
    two-phase@300:float64                   the branch's model and data in float64 after the switch
    two-phase@plateau     ... switched when the training loss stops falling (window=100, threshold=0.001)
    two-phase@curvature   ... switched when the Hessian probe finds the surface (nearly) convex
    two-phase@trial       ... switched when a CG trial beats Adam per data pass (trial_every, trial_passes)

After "@" come parts separated by ":": a whole number (fixed switch epoch), a percentage, "paper",
a signal of twophase/optim/switch.py (plateau, curvature, trial), "float64"/"float32" (the second
phase's precision) and option=value pairs (the switch rule's options: see RULE_OPTIONS). `parse_arm` reads a spec and `ArmSpec.name` writes it back in one
canonical spelling, so two spellings of the same arm are the same arm.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Callable

from twophase.schema import Phase

__all__ = ["Strategy", "STRATEGIES", "STRATEGY_NAMES", "ArmSpec", "parse_arm", "arm_label", "RULE_OPTIONS",
           "PRECISIONS", "PAPER_RULE", "sweep_arms"]

# The paper's literal switch rule: switch at the first epoch whose gradient norm is at most
# 0.9 x the running maximum (RunConfig's defaults; chosen from benchmarks/switch_rule.py's tables).
PAPER_RULE = dict(tolerance=0.9, min_epochs=0, patience=1, smoothing=0.0, switch_epoch=None)
#: Options of an arm's switch rule that an arm spec may set (twophase/optim/switch.py's, plus
#: switch_fraction: a fixed switch after this fraction of the epochs).
RULE_OPTIONS = ("tolerance", "min_epochs", "patience", "smoothing", "switch_epoch", "switch_fraction",
                "window", "threshold", "epsilon", "probe_every", "trial_every", "trial_passes")
SIGNALS = ("plateau", "curvature", "trial")  # beyond the paper's gradient norm (twophase/optim/switch.py)
SIGNAL_LABELS = {"plateau": "loss plateau", "curvature": "curvature", "trial": "CG trial"}
PRECISIONS = ("float32", "float64")
_INT_OPTIONS = ("min_epochs", "patience", "switch_epoch", "window", "probe_every", "trial_every")


def _cg(params, config):
    import torch

    from twophase.optim import NonlinearCG

    return NonlinearCG(params, beta=config.cg_beta, line_search=config.line_search, c2=config.cg_c2,
                       max_ls=config.cg_max_ls,
                       dtype=torch.float64 if config.cg_dtype == "float64" else None)


def _lbfgs(params, config):
    import torch

    # one step() runs full_batch_iters L-BFGS iterations (it re-evaluates at its start)
    return torch.optim.LBFGS(params, lr=1.0, max_iter=config.full_batch_iters,
                             max_eval=config.full_batch_iters * config.cg_max_ls,
                             history_size=10, line_search_fn="strong_wolfe")


@dataclass(frozen=True)
class Strategy:
    """How one kind of arm trains.

    name: the first part of an arm spec. label, description: for legends and help texts.
    first: the phase it starts in (adam: it rides the run's Adam trunk; cg: a branch at epoch 0).
    second: the phase it switches to (None: it never switches).
    make_optimizer(params, config): the optimizer of its full-batch phase (CG or L-BFGS).
    steps_per_epoch(config): optimizer.step(closure) calls per epoch of that phase.
    """

    name: str
    label: str
    description: str
    first: Phase
    second: Phase | None = None
    make_optimizer: Callable | None = None
    steps_per_epoch: Callable = field(default=lambda config: 1)

    @property
    def switches(self) -> bool:
        """True when the arm starts with Adam and leaves it when its switch rule fires."""
        return self.second is not None

    @property
    def full_batch(self) -> Phase | None:
        """The phase it trains on the whole training set (its branch's phase), or None."""
        return self.second if self.first is Phase.ADAM else self.first


STRATEGIES: dict[str, Strategy] = {s.name: s for s in (
    Strategy("two-phase", "two-phase", "Adam until the gradient norm has peaked, then nonlinear CG (the method)",
             first=Phase.ADAM, second=Phase.CG, make_optimizer=_cg,
             steps_per_epoch=lambda config: config.full_batch_iters),
    Strategy("adam", "Adam", "Adam for every epoch (the baseline)", first=Phase.ADAM),
    Strategy("adam-lbfgs", "Adam, then L-BFGS", "Adam, then torch.optim.LBFGS (strong Wolfe) at the same "
             "switch rule", first=Phase.ADAM, second=Phase.LBFGS, make_optimizer=_lbfgs),
    Strategy("cg", "CG only", "nonlinear CG from the first epoch", first=Phase.CG, make_optimizer=_cg,
             steps_per_epoch=lambda config: config.full_batch_iters),
)}
STRATEGY_NAMES: tuple[str, ...] = tuple(STRATEGIES)


@dataclass(frozen=True)
class ArmSpec:
    """One arm of a run, as its spec says.

    strategy: a key of STRATEGIES. rule: switch-rule options that differ from the run's rule
    (empty: the run's rule). paper: the paper's literal rule instead of the run's.
    precision: the branch's dtype after the switch ("float64": model and data promoted), or None
    for the run's (float32).
    """

    strategy: str
    rule: tuple = ()  # sorted (option, value) pairs
    paper: bool = False
    precision: str | None = None
    signal: str | None = None  # one of SIGNALS, or None for the gradient norm

    @property
    def name(self) -> str:
        """The canonical arm spec (the arm's id in metrics.csv)."""
        rule = dict(self.rule)
        parts = []
        if "switch_epoch" in rule:
            parts.append(str(rule.pop("switch_epoch")))
        elif "switch_fraction" in rule:
            parts.append(f"{_number(rule.pop('switch_fraction') * 100)}%")
        if self.paper:
            parts.append("paper")
        if self.signal:
            parts.append(self.signal)
        parts += [f"{k}={_number(v)}" for k, v in sorted(rule.items())]
        if self.precision:
            parts.append(self.precision)
        return self.strategy + ("@" + ":".join(parts) if parts else "")

    @property
    def kind(self) -> Strategy:
        return STRATEGIES[self.strategy]

    def rule_options(self, config) -> dict:
        """The SwitchRule options of this arm in a run of `config` (fraction turned into an epoch)."""
        base = dict(PAPER_RULE) if self.paper else {k: getattr(config, k) for k in PAPER_RULE}
        extra = dict(self.rule)
        if "switch_epoch" in extra or "switch_fraction" in extra:
            base["switch_epoch"] = None
        fraction = extra.pop("switch_fraction", None)
        base.update(extra)
        if fraction is not None:
            base["switch_epoch"] = fraction_epoch(fraction, config.epochs)
        if self.signal:
            base["signal"] = self.signal
        return base

    def reads(self, config) -> str | None:
        """What its switch rule reads each Adam epoch, and is charged for (twophase/training/arm.py):
        "grad-norm" (the full-set gradient), "loss" (the full-set training loss), "curvature" (the
        Hessian probe on probe epochs), "trial" (CG trials), or None (a fixed split, the mini-batch
        norms of grad_norm_mode "batch-mean", or no rule)."""
        if not self.kind.switches:
            return None
        options = self.rule_options(config)
        if options["switch_epoch"] is not None:
            return None
        signal = options.get("signal") or "grad-norm"
        if signal == "grad-norm":
            return "grad-norm" if config.grad_norm_mode == "full" else None
        return {"plateau": "loss", "curvature": "curvature", "trial": "trial"}[signal]


def fraction_epoch(fraction: float, epochs: int) -> int:
    """The switch epoch of a fixed split after `fraction` of `epochs` (at least 1)."""
    return max(1, min(epochs, int(math.floor(fraction * epochs + 0.5))))


def _number(value) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value) if isinstance(value, float) else str(value)


_PERCENT = re.compile(r"([0-9]+(?:\.[0-9]*)?)%")


def parse_arm(text) -> ArmSpec:
    """The ArmSpec of an arm spec's text; ValueError says what is wrong and what is allowed."""
    if not isinstance(text, str):
        raise ValueError(f"an arm is text like 'two-phase' or 'two-phase@300', got {text!r}; allowed: "
                         f"{', '.join(STRATEGIES)}, optionally followed by @<switch>")
    strategy, at, rest = text.strip().partition("@")
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown arm {text!r}; allowed: {', '.join(STRATEGIES)}, optionally followed by "
                         "@<switch> (e.g. two-phase@300, two-phase@30%, two-phase@paper)")
    kind = STRATEGIES[strategy]
    if at and not rest:
        raise ValueError(f"arm {text!r}: nothing after '@'")
    rule: dict = {}
    paper, precision, signal = False, None, None
    for part in rest.split(":") if rest else ():
        part = part.strip()
        percent = _PERCENT.fullmatch(part)
        if part.isdigit():
            _set(rule, "switch_epoch", int(part), text)
        elif percent:
            _set(rule, "switch_fraction", float(percent.group(1)) / 100, text)
        elif part == "paper":
            paper = True
        elif part in SIGNALS:
            if signal is not None:
                raise ValueError(f"arm {text!r}: give one signal of {', '.join(SIGNALS)}")
            signal = part
        elif part in PRECISIONS:
            if precision is not None:
                raise ValueError(f"arm {text!r}: the precision is given twice")
            precision = part
        elif "=" in part:
            key, _, value = part.partition("=")
            key = key.strip()
            if key not in RULE_OPTIONS:
                raise ValueError(f"arm {text!r}: unknown option {key!r}; allowed: {', '.join(RULE_OPTIONS)}")
            _set(rule, key, _option_value(key, value.strip(), text), text)
        else:
            raise ValueError(f"arm {text!r}: cannot read {part!r}; after '@' come a switch epoch (300), a "
                             f"percentage of the epochs (30%), 'paper', a signal ({', '.join(SIGNALS)}), a "
                             f"precision ({', '.join(PRECISIONS)}) or option=value with an option of: "
                             f"{', '.join(RULE_OPTIONS)}")
    if paper and signal:
        raise ValueError(f"arm {text!r}: 'paper' is the gradient-norm rule; it takes no {signal} signal")
    if (rule or paper or signal) and not kind.switches:
        raise ValueError(f"arm {text!r}: {strategy} never switches, so it takes no switch rule")
    if precision and kind.full_batch is None:
        raise ValueError(f"arm {text!r}: {strategy} has no full-batch phase whose precision could be set")
    if "switch_epoch" in rule and "switch_fraction" in rule:
        raise ValueError(f"arm {text!r}: give a switch epoch or a percentage, not both")
    if precision == "float32":
        precision = None  # the default
    fraction = rule.get("switch_fraction")
    if fraction is not None and not 0 < fraction <= 1:
        raise ValueError(f"arm {text!r}: the percentage must be above 0% and at most 100%")
    if rule.get("switch_epoch") is not None and rule["switch_epoch"] < 1:
        raise ValueError(f"arm {text!r}: the switch epoch must be at least 1")
    if signal and ("switch_epoch" in rule or "switch_fraction" in rule):
        raise ValueError(f"arm {text!r}: a fixed switch takes no {signal} signal")
    try:  # the rule's own checks (ranges), so that a bad option is refused before any training
        from twophase.optim import SwitchRule

        options = {k: v for k, v in rule.items() if k != "switch_fraction"}
        SwitchRule(**options, **({"signal": signal} if signal else {}))
    except Exception as exc:  # ConfigError: name the option
        errors = getattr(exc, "errors", None)
        detail = "; ".join(f"{k} {v}" for k, v in errors.items()) if errors else str(exc)
        raise ValueError(f"arm {text!r}: {detail}") from None
    return ArmSpec(strategy, tuple(sorted(rule.items())), paper, precision, signal)


def _set(rule: dict, key: str, value, text: str) -> None:
    if key in rule:
        raise ValueError(f"arm {text!r}: {key} is given twice")
    rule[key] = value


def _option_value(key: str, value: str, text: str):
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"arm {text!r}: {key} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"arm {text!r}: {key} must be a finite number, got {value!r}")
    if key in _INT_OPTIONS:
        if not number.is_integer():
            raise ValueError(f"arm {text!r}: {key} must be a whole number, got {value!r}")
        return int(number)
    if key == "switch_fraction":
        return number
    return number


def sweep_arms(points, strategy: str = "two-phase") -> list[str]:
    """Arm specs for a switch sweep: one `strategy` branch per point (an epoch like 300, a
    percentage like "30%", or "paper")."""
    out = []
    for point in points:
        text = str(point).strip()
        if text:
            out.append(parse_arm(f"{strategy}@{text}").name)
    return out


def arm_label(arm: str, switched_at: int | None = None) -> str:
    """A legend's name for an arm spec: "Adam", "two-phase (switch at 300)", "two-phase (paper's rule)";
    with switched_at, the epoch its rule fired is added ("..., switched at 3")."""
    try:
        spec = parse_arm(arm)
    except ValueError:
        return str(arm)
    kind = spec.kind
    rule = dict(spec.rule)
    details = []
    if "switch_epoch" in rule:
        details.append(f"switch at {rule.pop('switch_epoch')}")
    elif "switch_fraction" in rule:
        details.append(f"switch at {_number(rule.pop('switch_fraction') * 100)}%")
    if spec.paper:
        details.append("paper's rule")
    if spec.signal:
        details.append(SIGNAL_LABELS[spec.signal])
    details += [f"{k.replace('_', ' ')} {_number(v)}" for k, v in sorted(rule.items())]
    if spec.precision:
        details.append(spec.precision)
    if switched_at is not None and not any(d.startswith("switch at") for d in details):
        details.append(f"switched at {switched_at}")
    return kind.label + (f" ({', '.join(details)})" if details else "")
