"""When to switch from Adam to conjugate gradient: the source paper's Algorithm 1, plus options.

Pure Python (no torch). Call ``update(grad_norm)`` once at the end of every epoch with that
epoch's gradient norm; it returns True exactly once, on the epoch the switch happens.

The paper's rule (the defaults here)::

    max_norm = max(max_norm, grad_norm)       # the running maximum includes this epoch
    switch when grad_norm <= tolerance * max_norm

With tolerance 0.9 it fires at the first epoch whose norm is at least 10% below the largest
seen so far. Options beside the paper's exact rule:

    smoothing     test an exponential moving average of the norms instead of the raw norms:
                  value = smoothing * previous value + (1 - smoothing) * grad_norm
                  (the first value is the first norm; 0 = off)
    patience      switch only after this many consecutive epochs at or below the threshold
    min_epochs    never switch before the end of this epoch (earlier epochs still count for
                  the maximum and for patience)
    switch_epoch  a fixed split: switch at the end of this epoch whatever the norms are (the
                  paper's experiments used Adam for 30% of the epochs); the norms are still
                  tracked for display

Signals beyond the paper's (``signal``; the paper's is "grad-norm"). Each reads something the
caller passes to ``update`` and charges nothing itself: the engine charges the passes it reads.

    "plateau"     the training loss has stopped falling: its relative fall per epoch over the
                  last ``window`` epochs, (L[e - window] - L[e]) / (window * L[e - window]), is
                  below ``threshold`` (``update(norm, loss=...)``)
    "curvature"   the loss surface looks convex: the Hessian probe's smallest over largest
                  eigenvalue is at least ``-epsilon`` (``update(norm, curvature=...)``, given on
                  the epochs the probe ran; the engine probes every ``probe_every`` epochs)
    "trial"       measured progress: every ``trial_every`` epochs (from ``min_epochs`` on) the
                  engine runs CG from the current weights for ``trial_passes`` data passes and
                  keeps it when its loss fell faster per pass than Adam's over its last
                  ``trial_passes`` passes (``trial_due``, then ``accept_trial`` or nothing)

Patience and min_epochs apply to every signal; tolerance and smoothing to the gradient norm.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping

from twophase.errors import ConfigError

__all__ = ["SwitchRule", "OPTION_NAMES", "SIGNALS", "SIGNAL_DEFAULTS"]

# The constructor's options, in order.
OPTION_NAMES = ("tolerance", "min_epochs", "patience", "smoothing", "switch_epoch", "signal", "window",
                "threshold", "epsilon", "probe_every", "trial_every", "trial_passes")
SIGNALS = ("grad-norm", "plateau", "curvature", "trial")
#: Defaults of the signals' options (chosen from the late-regime study, README "When does switching pay off?").
SIGNAL_DEFAULTS = dict(window=100, threshold=1e-3, epsilon=1e-3, probe_every=25, trial_every=50, trial_passes=40.0)


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _as_float(value) -> float | None:
    """``float(value)`` for a real number (not a bool) that fits in a float, else None."""
    if not _is_real(value):
        return None
    try:
        return float(value)
    except OverflowError:
        return None


def _shown(value) -> str:
    try:
        return repr(value)[:80]
    except ValueError:  # an int too long for repr()
        if isinstance(value, int):
            return f"an integer of {value.bit_length()} bits"
        return f"a {type(value).__name__} holding an integer too long to print"


def _check_progress(state: dict, errors: dict, window: int | None) -> dict:
    """The progress part of a SwitchRule state as attributes, after checking it; adds to
    ``errors`` (key -> message) what is wrong."""
    out: dict = {}

    def integer(key, optional=False, low=0):
        value = state[key]
        if value is None and optional:
            return None
        if not (_is_int(value) and value >= low):
            errors[key] = f"must be an integer >= {low}{' or None' if optional else ''}; got {_shown(value)}"
            return None
        return int(value)

    def number(key, optional=False, finite=True, non_negative=True):
        value = state[key]
        if value is None and optional:
            return None
        number = _as_float(value)
        if number is None or (finite and not math.isfinite(number)) or (non_negative and not number >= 0):
            what = "a finite number >= 0" if finite and non_negative else "a number"
            errors[key] = f"must be {what}{' or None' if optional else ''}; got {_shown(value)}"
            return None
        return number

    out["epoch"] = epoch = integer("epoch")
    out["signal_below"] = integer("signal_below")
    out["trials"] = integer("trials")
    out["below"] = integer("below")
    out["last_norm"] = number("last_norm", optional=True)
    out["value"] = number("value", optional=True)
    out["max_norm"] = number("max_norm")
    out["peak_epoch"] = integer("peak_epoch", optional=True, low=1)
    out["peak_value"] = number("peak_value", optional=True)
    out["last_curvature"] = number("last_curvature", optional=True, finite=False, non_negative=False)
    switched = state["switched"]
    if not isinstance(switched, bool):
        errors["switched"] = f"must be true or false; got {_shown(switched)}"
    out["switched"] = switched
    out["switch_epoch"] = switch_epoch = integer("switch_epoch", optional=True)

    losses = state["losses"]
    if not isinstance(losses, (list, tuple)) or any(_as_float(v) is None for v in losses):
        errors["losses"] = f"must be a list of numbers (training losses); got {_shown(losses)}"
    elif window is not None and len(losses) > window + 1:
        errors["losses"] = f"holds at most window + 1 = {window + 1} losses; got {len(losses)}"
    else:
        out["losses"] = [float(v) for v in losses]

    # consistency, where the parts themselves are fine
    if epoch is not None:
        for key in ("below", "signal_below", "peak_epoch", "switch_epoch"):
            if out.get(key) is not None and key not in errors and out[key] > epoch:
                errors[key] = f"cannot exceed epoch ({epoch}); got {out[key]}"
        if epoch == 0 and "last_norm" not in errors and out["last_norm"] is not None:
            errors["epoch"] = "is 0 but a last norm is recorded (an update would have counted an epoch)"
        if epoch > 0 and "last_norm" not in errors and out["last_norm"] is None:
            errors["last_norm"] = f"is missing although {epoch} epochs were recorded"
    if "switched" not in errors and "switch_epoch" not in errors:
        if switched and switch_epoch is None:
            errors["switch_epoch"] = "must be the epoch of the switch when switched is true; got None"
        elif not switched and switch_epoch is not None:
            errors["switch_epoch"] = f"must be None when switched is false; got {switch_epoch}"
    peak = [key for key in ("value", "peak_epoch", "peak_value") if key not in errors]
    if len(peak) == 3:
        known = [out[key] is not None for key in peak]
        if any(known) and not all(known):
            errors["peak_epoch"] = ("value, peak_epoch and peak_value are recorded together (the first update "
                                    f"sets all three); got {', '.join(f'{k}={out[k]!r}' for k in peak)}")
        elif "max_norm" not in errors and out["max_norm"] != (out["peak_value"] if all(known) else 0.0):
            errors["max_norm"] = (f"must equal peak_value ({out['peak_value']!r}), or 0.0 before any update; "
                                  f"got {out['max_norm']!r}")
    return out


class SwitchRule:
    """The epoch-wise switch test of two-phase training.

    Args:
        tolerance: switch when the (smoothed) norm is at or below ``tolerance`` times the
            running maximum; in (0, 1]. 0.9 (default) is the paper's value; 1 switches at once.
        min_epochs: the switch cannot happen before the end of this epoch (an integer >= 0;
            default 0 = no minimum).
        patience: number of consecutive epochs at or below the threshold needed to switch (an
            integer >= 1; default 1 = the paper's rule).
        smoothing: weight of the past in an exponential moving average of the norm, in [0, 1);
            default 0 = no smoothing.
        switch_epoch: None (default) for the norm-based rule, or an integer >= 1: switch at the
            end of that epoch regardless of the norms (a fixed split); the other options are
            then not used for the decision.

    Attributes (read-only):
        epoch: number of ``update`` calls so far (the first call is epoch 1).
        last_norm: the raw norm passed to the last ``update`` (None before any).
        value: the value tested at the last update (the smoothed norm; the raw norm without
            smoothing; None before any).
        max_norm: running maximum of the tested values (0.0 before any update).
        peak_epoch, peak_value: the epoch at which the maximum was reached and its value
            (None before any update).
        threshold: ``tolerance * max_norm``.
        below: consecutive epochs, up to the last one, at or below their threshold.
        switched: True once the switch has happened.
        switch_epoch: the epoch at whose end the switch happened (None before).
        fixed_switch_epoch: the ``switch_epoch`` option.

    After the switch the rule is finished: ``update`` counts epochs and returns False, and the
    maximum, peak and threshold stay as they were when it fired.
    """

    def __init__(
        self,
        tolerance: float = 0.9,
        min_epochs: int = 0,
        patience: int = 1,
        smoothing: float = 0.0,
        switch_epoch: int | None = None,
        signal: str = "grad-norm",
        window: int = SIGNAL_DEFAULTS["window"],
        threshold: float = SIGNAL_DEFAULTS["threshold"],
        epsilon: float = SIGNAL_DEFAULTS["epsilon"],
        probe_every: int = SIGNAL_DEFAULTS["probe_every"],
        trial_every: int = SIGNAL_DEFAULTS["trial_every"],
        trial_passes: float = SIGNAL_DEFAULTS["trial_passes"],
    ):
        self._set_options(tolerance, min_epochs, patience, smoothing, switch_epoch)
        self._set_signal(signal, window, threshold, epsilon, probe_every, trial_every, trial_passes)
        self.losses: list[float] = []  # the training losses seen (plateau: the last window + 1)
        self.last_curvature: float | None = None
        self.trials = 0
        self.epoch = 0
        self.last_norm: float | None = None
        self.value: float | None = None
        self.max_norm = 0.0
        self.peak_epoch: int | None = None
        self.peak_value: float | None = None
        self.below = 0
        self.signal_below = 0  # consecutive epochs the plateau / curvature test was met
        self.switched = False
        self.switch_epoch: int | None = None

    def _set_options(self, tolerance, min_epochs, patience, smoothing, switch_epoch) -> None:
        errors = {}
        if not (_is_real(tolerance) and 0 < tolerance <= 1):
            errors["tolerance"] = (
                f"must be a number in (0, 1] (the paper uses 0.9); got {tolerance!r}"
            )
        if not (_is_int(min_epochs) and min_epochs >= 0):
            errors["min_epochs"] = f"must be an integer >= 0; got {min_epochs!r}"
        if not (_is_int(patience) and patience >= 1):
            errors["patience"] = f"must be an integer >= 1 (1 = the paper's rule); got {patience!r}"
        if not (_is_real(smoothing) and 0 <= smoothing < 1):
            errors["smoothing"] = (
                f"must be a number in [0, 1) (weight of the past; 0 = off); got {smoothing!r}"
            )
        if switch_epoch is not None and not (_is_int(switch_epoch) and switch_epoch >= 1):
            errors["switch_epoch"] = (
                f"must be None (switch on the norm) or an integer >= 1; got {switch_epoch!r}"
            )
        if errors:
            raise ConfigError(errors)
        self.tolerance = float(tolerance)
        self.min_epochs = int(min_epochs)
        self.patience = int(patience)
        self.smoothing = float(smoothing)
        self.fixed_switch_epoch = None if switch_epoch is None else int(switch_epoch)

    def _set_signal(self, signal, window, threshold, epsilon, probe_every, trial_every, trial_passes) -> None:
        errors = {}
        if signal not in SIGNALS:
            errors["signal"] = f"must be one of {', '.join(SIGNALS)}; got {signal!r}"
        if not (_is_int(window) and window >= 1):
            errors["window"] = f"must be an integer >= 1 (epochs); got {window!r}"
        if not (_is_real(threshold) and math.isfinite(threshold) and threshold >= 0):
            errors["threshold"] = f"must be a number >= 0 (relative fall of the loss per epoch); got {threshold!r}"
        if not (_is_real(epsilon) and math.isfinite(epsilon) and epsilon >= 0):
            errors["epsilon"] = f"must be a number >= 0; got {epsilon!r}"
        for name, value in (("probe_every", probe_every), ("trial_every", trial_every)):
            if not (_is_int(value) and value >= 1):
                errors[name] = f"must be an integer >= 1 (epochs); got {value!r}"
        if not (_is_real(trial_passes) and math.isfinite(trial_passes) and trial_passes > 0):
            errors["trial_passes"] = f"must be a number > 0 (data passes); got {trial_passes!r}"
        if errors:
            raise ConfigError(errors)
        self.signal = signal
        self.window, self.plateau_threshold = int(window), float(threshold)
        self.epsilon, self.probe_every = float(epsilon), int(probe_every)
        self.trial_every, self.trial_passes = int(trial_every), float(trial_passes)

    @property
    def reads(self) -> str | None:
        """What the engine must measure for this rule each Adam epoch: "grad-norm" (the full-set
        gradient norm), "loss" (the full-set training loss), "curvature" (the Hessian probe, on
        probe epochs), "trial" (CG trials), or None for a fixed split."""
        if self.fixed_switch_epoch is not None:
            return None
        return {"grad-norm": "grad-norm", "plateau": "loss", "curvature": "curvature", "trial": "trial"}[self.signal]

    def probe_due(self, epoch: int) -> bool:
        """The curvature signal reads the probe at the end of this epoch."""
        return self.reads == "curvature" and not self.switched and epoch % self.probe_every == 0

    @property
    def trial_due(self) -> bool:
        """The trial signal wants a CG trial now (after the last update)."""
        return (self.reads == "trial" and not self.switched and self.epoch >= max(1, self.min_epochs)
                and self.epoch % self.trial_every == 0)

    def accept_trial(self) -> None:
        """The engine kept the trial: the switch happens at the end of the current epoch."""
        self.trials += 1
        self.switched, self.switch_epoch = True, self.epoch

    def reject_trial(self) -> None:
        self.trials += 1

    def _plateau(self) -> bool:
        if len(self.losses) <= self.window:
            return False
        then, now = self.losses[-self.window - 1], self.losses[-1]
        if not (math.isfinite(then) and math.isfinite(now)) or then <= 0:
            return False
        return (then - now) / (self.window * then) < self.plateau_threshold

    @property
    def threshold(self) -> float:
        """``tolerance * max_norm``: the value at or below which an epoch counts as "below"."""
        return self.tolerance * self.max_norm

    def update(self, grad_norm: float, loss: float | None = None, curvature: float | None = None) -> bool:
        """Record one epoch; True exactly on the epoch the switch happens.

        Args:
            grad_norm: the epoch-wise gradient norm, a finite number >= 0.
            loss: the epoch's training loss (read by the "plateau" signal).
            curvature: hess_min / hess_max when the probe ran this epoch (the "curvature" signal).

        Raises:
            ValueError: if ``grad_norm`` is not a finite non-negative number.
        """
        if isinstance(grad_norm, (str, bytes, bool)):
            raise ValueError(f"grad_norm must be a finite number >= 0; got {grad_norm!r}")
        try:
            norm = float(grad_norm)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"grad_norm must be a finite number >= 0; got {grad_norm!r}") from None
        if not (math.isfinite(norm) and norm >= 0):
            raise ValueError(f"grad_norm must be a finite number >= 0; got {norm!r}")
        if self.signal == "plateau" and loss is not None:
            self.losses = (self.losses + [float(loss)])[-(self.window + 1):]
        if curvature is not None:
            self.last_curvature = float(curvature)

        self.epoch += 1
        self.last_norm = norm
        if self.switched:
            return False

        if self.value is None or self.smoothing == 0:
            self.value = norm
        else:
            self.value = self.smoothing * self.value + (1.0 - self.smoothing) * norm
        if self.peak_epoch is None or self.value > self.max_norm:
            self.max_norm = self.value
            self.peak_epoch = self.epoch
            self.peak_value = self.value
        self.below = self.below + 1 if self.value <= self.threshold else 0

        if self.fixed_switch_epoch is not None:
            fire = self.epoch >= self.fixed_switch_epoch
        elif self.signal == "grad-norm":
            fire = self.below >= self.patience and self.epoch >= self.min_epochs
        else:
            if self.signal == "plateau":
                met = self._plateau()
            elif self.signal == "curvature":
                met = curvature is not None and math.isfinite(curvature) and curvature >= -self.epsilon
            else:  # trial: decided by the engine (trial_due, accept_trial)
                met = False
            if self.signal != "curvature" or curvature is not None:  # curvature counts probe epochs only
                self.signal_below = self.signal_below + 1 if met else 0
            fire = self.signal_below >= self.patience and self.epoch >= self.min_epochs
        if fire:
            self.switched = True
            self.switch_epoch = self.epoch
        return fire

    def state_dict(self) -> dict:
        """Options and progress as a plain dict (JSON-serialisable)."""
        return {
            "tolerance": self.tolerance,
            "min_epochs": self.min_epochs,
            "patience": self.patience,
            "smoothing": self.smoothing,
            "switch_epoch_option": self.fixed_switch_epoch,
            "signal": self.signal,
            "window": self.window,
            "plateau_threshold": self.plateau_threshold,
            "epsilon": self.epsilon,
            "probe_every": self.probe_every,
            "trial_every": self.trial_every,
            "trial_passes": self.trial_passes,
            "losses": list(self.losses),
            "last_curvature": self.last_curvature,
            "signal_below": self.signal_below,
            "trials": self.trials,
            "epoch": self.epoch,
            "last_norm": self.last_norm,
            "value": self.value,
            "max_norm": self.max_norm,
            "peak_epoch": self.peak_epoch,
            "peak_value": self.peak_value,
            "below": self.below,
            "switched": self.switched,
            "switch_epoch": self.switch_epoch,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore options and progress saved by ``state_dict()``.

        The state is checked before anything changes: options as the constructor checks them,
        progress as ``update`` could have left it (finite numbers >= 0, integer epochs >= 0 and
        at most ``epoch``, ``switch_epoch`` set exactly when ``switched``, ...). A state saved
        before the signal options existed loads with their defaults.

        Raises:
            ValueError: a ``ConfigError`` naming each bad key (a ``ValueError`` saying what is
                missing when keys are absent).
        """
        if not isinstance(state, Mapping):
            raise ValueError(f"SwitchRule state must be a mapping from state_dict(); got {type(state).__name__}")
        defaults = dict(signal="grad-norm", window=SIGNAL_DEFAULTS["window"],
                        plateau_threshold=SIGNAL_DEFAULTS["threshold"], epsilon=SIGNAL_DEFAULTS["epsilon"],
                        probe_every=SIGNAL_DEFAULTS["probe_every"], trial_every=SIGNAL_DEFAULTS["trial_every"],
                        trial_passes=SIGNAL_DEFAULTS["trial_passes"], losses=[], last_curvature=None,
                        signal_below=0, trials=0)
        state = {**defaults, **state}  # a state saved before the signals existed
        missing = [key for key in self.state_dict() if key not in state]
        if missing:
            raise ValueError(f"SwitchRule state is missing {', '.join(missing)}")

        # the options, checked on a scratch rule; their errors are named by the state's keys
        options = SwitchRule.__new__(SwitchRule)
        errors: dict[str, str] = {}
        state_key = {"switch_epoch": "switch_epoch_option", "threshold": "plateau_threshold"}
        try:
            options._set_options(state["tolerance"], state["min_epochs"], state["patience"],
                                 state["smoothing"], state["switch_epoch_option"])
        except ConfigError as error:
            errors.update({state_key.get(k, k): v for k, v in error.errors.items()})
        try:
            options._set_signal(state["signal"], state["window"], state["plateau_threshold"], state["epsilon"],
                                state["probe_every"], state["trial_every"], state["trial_passes"])
        except ConfigError as error:
            errors.update({state_key.get(k, k): v for k, v in error.errors.items()})
        progress = _check_progress(state, errors, window=getattr(options, "window", None))
        if errors:
            raise ConfigError({key: f"bad SwitchRule state: {message}" for key, message in errors.items()})

        for name in ("tolerance", "min_epochs", "patience", "smoothing", "fixed_switch_epoch", "signal", "window",
                     "plateau_threshold", "epsilon", "probe_every", "trial_every", "trial_passes"):
            setattr(self, name, getattr(options, name))
        for name, value in progress.items():
            setattr(self, name, value)

    def __repr__(self) -> str:
        options = (f"tolerance={self.tolerance}, min_epochs={self.min_epochs}, "
                   f"patience={self.patience}, smoothing={self.smoothing}, "
                   f"switch_epoch={self.fixed_switch_epoch}")
        if self.signal != "grad-norm":
            options += f", signal={self.signal!r}"
        return f"SwitchRule({options})"
