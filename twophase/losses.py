"""Loss functions and accuracy.

Every loss takes ``logits`` of shape (batch, num_classes) and integer class labels ``targets`` of
shape (batch,) and returns the MEAN loss over the batch as a 0-dimensional tensor, so a loss over
several chunks is the size-weighted average of the chunk losses.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from twophase.errors import ConfigError

__all__ = ["names", "get", "mse", "cross_entropy", "accuracy"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _check(logits: torch.Tensor, targets: torch.Tensor) -> None:
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape (batch, num_classes), got {tuple(logits.shape)}")
    if targets.dim() != 1 or targets.shape[0] != logits.shape[0]:
        raise ValueError(
            f"targets must have shape (batch,) matching logits {tuple(logits.shape)}, got {tuple(targets.shape)}"
        )
    if logits.shape[0] == 0:
        raise ValueError("empty batch: logits has no rows")


def mse(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The paper's mean squared error between the softmax output and the one-hot target.

    ``mean over samples i and classes c of (softmax(logits)[i, c] - onehot(targets)[i, c])**2``,
    i.e. the squared error summed over classes divided by (batch * num_classes).

    Arguments:
        logits: raw model outputs, shape (batch, num_classes).
        targets: integer class labels in [0, num_classes), shape (batch,).
    """
    _check(logits, targets)
    probs = logits.softmax(dim=1)
    onehot = F.one_hot(targets.long(), num_classes=logits.shape[1]).to(probs.dtype)
    return (probs - onehot).pow(2).mean()


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of softmax(logits) against the integer labels.

    Arguments:
        logits: raw model outputs, shape (batch, num_classes).
        targets: integer class labels in [0, num_classes), shape (batch,).
    """
    _check(logits, targets)
    return F.cross_entropy(logits, targets.long())


_LOSSES: dict[str, LossFn] = {"mse": mse, "cross-entropy": cross_entropy}


def names() -> list[str]:
    """Names accepted by :func:`get`: ["mse", "cross-entropy"]."""
    return list(_LOSSES)


def get(name: str) -> LossFn:
    """Return the loss function called ``name`` (one of :func:`names`).

    The function maps (logits, integer targets) to the mean loss. Raises ConfigError (field
    "loss") for an unknown name.
    """
    if name not in _LOSSES:
        raise ConfigError({"loss": f"unknown loss {name!r}; choose one of: {', '.join(_LOSSES)}"})
    return _LOSSES[name]


@torch.no_grad()
def accuracy(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Fraction (0..1, a python float) of rows whose largest logit is at the target class.

    The same for every loss: argmax of the logits equals argmax of the softmax.

    Arguments:
        logits: model outputs, shape (batch, num_classes).
        targets: integer class labels, shape (batch,).
    """
    _check(logits, targets)
    return (logits.argmax(dim=1) == targets).float().mean().item()
