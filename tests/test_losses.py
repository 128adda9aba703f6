"""twophase.losses: the paper's MSE on softmax outputs, cross-entropy and accuracy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from twophase import losses
from twophase.errors import ConfigError


def _example(n=6, c=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g, dtype=torch.float64), torch.randint(0, c, (n,), generator=g)


def test_names_and_get():
    assert losses.names() == ["mse", "cross-entropy"]
    assert losses.get("mse") is losses.mse
    assert losses.get("cross-entropy") is losses.cross_entropy
    with pytest.raises(ConfigError) as info:
        losses.get("hinge")
    assert "loss" in info.value.errors and "cross-entropy" in str(info.value)


def test_mse_is_the_mean_over_samples_and_classes_of_softmax_minus_onehot_squared():
    logits, y = _example()
    z = logits.numpy()
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    onehot = np.eye(4)[y.numpy()]
    expected = ((p - onehot) ** 2).sum() / (6 * 4)
    assert losses.mse(logits, y).item() == pytest.approx(expected, rel=1e-12)


def test_mse_of_uniform_prediction():
    # softmax of zeros is 1/C everywhere: per sample (1-1/C)^2 + (C-1)/C^2 = (C-1)/C, mean over C classes
    for c in (2, 10, 100):
        value = losses.mse(torch.zeros(3, c), torch.zeros(3, dtype=torch.long)).item()
        assert value == pytest.approx((c - 1) / c**2, rel=1e-6)


def test_cross_entropy_matches_negative_log_softmax():
    logits, y = _example()
    expected = -torch.log_softmax(logits, dim=1)[torch.arange(6), y].mean()
    torch.testing.assert_close(losses.cross_entropy(logits, y), expected)
    assert losses.cross_entropy(torch.zeros(2, 10), torch.tensor([3, 4])).item() == pytest.approx(math.log(10))


@pytest.mark.parametrize("name", ["mse", "cross-entropy"])
def test_losses_are_means_so_chunks_combine_by_size(name):
    fn = losses.get(name)
    logits, y = _example(n=10, c=5, seed=2)
    full = fn(logits, y)
    combined = (fn(logits[:7], y[:7]) * 7 + fn(logits[7:], y[7:]) * 3) / 10
    torch.testing.assert_close(full, combined)
    assert full.dim() == 0


@pytest.mark.parametrize("name", ["mse", "cross-entropy"])
def test_losses_have_gradients_and_prefer_the_right_class(name):
    fn = losses.get(name)
    logits = torch.zeros(4, 3, requires_grad=True)
    y = torch.tensor([0, 1, 2, 0])
    fn(logits, y).backward()
    assert logits.grad is not None
    # a step against the gradient raises the target logit relative to the others
    assert all(logits.grad[i, y[i]] < 0 for i in range(4))
    good = torch.full((4, 3), -5.0)
    good[torch.arange(4), y] = 5.0
    assert fn(good, y) < fn(torch.zeros(4, 3), y)


def test_accuracy_is_a_fraction():
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [5.0, -1.0], [0.0, 1.0]])
    acc = losses.accuracy(logits, torch.tensor([0, 1, 1, 1]))
    assert isinstance(acc, float) and acc == 0.75
    assert losses.accuracy(logits, torch.tensor([0, 1, 0, 1])) == 1.0


def test_shape_errors():
    with pytest.raises(ValueError):
        losses.mse(torch.zeros(3, 4), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError):
        losses.cross_entropy(torch.zeros(3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError):
        losses.accuracy(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
