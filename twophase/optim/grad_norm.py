"""The epoch-wise gradient norm: the norm of the full-dataset gradient, computed in chunks."""

from __future__ import annotations

import math

import torch

__all__ = ["full_gradient_norm"]


def _count(targets) -> int:
    if torch.is_tensor(targets):
        if targets.dim() == 0:
            raise ValueError("full_gradient_norm: each chunk's targets need a batch dimension")
        return int(targets.shape[0])
    return len(targets)


def full_gradient_norm(model: torch.nn.Module, loss_fn, batches) -> float:
    """Euclidean norm of the gradient of the mean loss over all samples of ``batches``.

    Args:
        model: the network; called as ``model(x)`` in whatever mode it is in (call
            ``model.eval()`` first if dropout or batch-norm statistics should not apply).
        loss_fn: ``loss_fn(output, y)`` returning the MEAN loss over the chunk.
        batches: an iterable of ``(x, y)`` chunks covering the dataset; chunk sizes may differ
            (each chunk's mean is weighted by its number of samples, so the result equals the
            norm of the gradient of the mean loss over all samples).

    Only parameters with ``requires_grad`` count. Their ``.grad`` attributes are left exactly as
    they were found (the same tensors, with the same values, or None), so an optimizer's
    gradients and state are not touched. Returns a Python float.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("full_gradient_norm: the model has no parameters that require grad")
    saved = [p.grad for p in params]
    try:
        for p in params:
            p.grad = None
        total = 0
        with torch.enable_grad():
            for x, y in batches:
                count = _count(y)
                if count == 0:
                    continue
                loss = loss_fn(model(x), y)
                # sum of the per-sample losses of this chunk; divided by the total below
                (loss * count).backward()
                total += count
        if total == 0:
            raise ValueError("full_gradient_norm: batches is empty (no samples)")
        square_sum = 0.0
        for p in params:
            if p.grad is not None:
                grad = p.grad.detach()
                if grad.is_complex():
                    grad = torch.view_as_real(grad)
                square_sum += float(grad.double().pow(2).sum())
        return math.sqrt(square_sum) / total
    finally:
        for p, grad in zip(params, saved):
            p.grad = grad
