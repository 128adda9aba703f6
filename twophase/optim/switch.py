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
"""

from __future__ import annotations

import math
import numbers

from twophase.errors import ConfigError

__all__ = ["SwitchRule", "OPTION_NAMES"]

# The constructor's options, in order.
OPTION_NAMES = ("tolerance", "min_epochs", "patience", "smoothing", "switch_epoch")


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


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
    ):
        self._set_options(tolerance, min_epochs, patience, smoothing, switch_epoch)
        self.epoch = 0
        self.last_norm: float | None = None
        self.value: float | None = None
        self.max_norm = 0.0
        self.peak_epoch: int | None = None
        self.peak_value: float | None = None
        self.below = 0
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

    @property
    def threshold(self) -> float:
        """``tolerance * max_norm``: the value at or below which an epoch counts as "below"."""
        return self.tolerance * self.max_norm

    def update(self, grad_norm: float) -> bool:
        """Record one epoch's gradient norm; True exactly on the epoch the switch happens.

        Args:
            grad_norm: the epoch-wise gradient norm, a finite number >= 0.

        Raises:
            ValueError: if ``grad_norm`` is not a finite non-negative number.
        """
        if isinstance(grad_norm, (str, bytes, bool)):
            raise ValueError(f"grad_norm must be a finite number >= 0; got {grad_norm!r}")
        try:
            norm = float(grad_norm)
        except (TypeError, ValueError):
            raise ValueError(f"grad_norm must be a finite number >= 0; got {grad_norm!r}") from None
        if not (math.isfinite(norm) and norm >= 0):
            raise ValueError(f"grad_norm must be a finite number >= 0; got {norm!r}")

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
        else:
            fire = self.below >= self.patience and self.epoch >= self.min_epochs
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
        """Restore options and progress saved by ``state_dict()``."""
        missing = [key for key in self.state_dict() if key not in state]
        if missing:
            raise ValueError(f"SwitchRule state is missing {', '.join(missing)}")
        self._set_options(state["tolerance"], state["min_epochs"], state["patience"],
                          state["smoothing"], state["switch_epoch_option"])
        self.epoch = int(state["epoch"])
        self.last_norm = state["last_norm"]
        self.value = state["value"]
        self.max_norm = float(state["max_norm"])
        self.peak_epoch = state["peak_epoch"]
        self.peak_value = state["peak_value"]
        self.below = int(state["below"])
        self.switched = bool(state["switched"])
        self.switch_epoch = state["switch_epoch"]

    def __repr__(self) -> str:
        options = (f"tolerance={self.tolerance}, min_epochs={self.min_epochs}, "
                   f"patience={self.patience}, smoothing={self.smoothing}, "
                   f"switch_epoch={self.fixed_switch_epoch}")
        return f"SwitchRule({options})"
