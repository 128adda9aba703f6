"""The speed-ups the engine applies change how, never what, it computes.

- conv_relu_pool_stack pools before its ReLU: same values and gradients as ReLU-then-pool.
- apply_runtime_layout puts the CNNs (weights and images) in channels_last memory and leaves
  the caller's data alone; training in that layout gives the numbers of the contiguous one.
- The chunk of a full-set pass (models.runtime) does not change the loss or gradient norm.
"""

import copy

import pytest
import torch
from torch import nn

from twophase import models
from twophase.config import RunConfig
from twophase.data import Dataset

from conftest import random_dataset
from twophase.engine import Arm, apply_runtime_layout, evaluate, make_loss


def fake_data(n=96, shape=(1, 16, 16), classes=10, seed=0) -> Dataset:
    return random_dataset(n, shape, classes, seed)


def test_runtime_lists_the_cnns_as_channels_last_with_small_chunks():
    for name in ("vgg5-max-relu", "cnn-small"):
        assert models.runtime(name) == {"channels_last": True, "full_pass_chunk": 512}
    for name in ("mlp", "vit-mlp", "vit-nomlp"):
        assert models.runtime(name) == {"channels_last": False, "full_pass_chunk": 4096}
    with pytest.raises(ValueError, match="vgg5-max-relu"):
        models.runtime("resnet")


def test_pool_then_relu_equals_relu_then_pool_in_values_and_gradients():
    torch.manual_seed(0)
    stack, _ = models.conv_relu_pool_stack(3, (8, 16))
    # the textbook order, built from the same convolutions
    reference = nn.Sequential(stack[0], nn.ReLU(), nn.MaxPool2d(2), stack[3], nn.ReLU(), nn.MaxPool2d(2))
    x = torch.randn(4, 3, 16, 16, requires_grad=True)
    out = stack(x)
    ref = reference(x)
    assert torch.equal(out, ref)
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, [x, *stack.parameters()], g)
    ref_grads = torch.autograd.grad(ref, [x, *reference.parameters()], g)
    for a, b in zip(grads, ref_grads):
        assert torch.equal(a, b)


def test_layout_is_channels_last_for_cnns_and_leaves_the_callers_data_alone():
    data = fake_data()
    model = models.build("cnn-small", data.input_shape, data.num_classes, seed=0)
    out_model, out_data = apply_runtime_layout("cnn-small", model, data)
    assert out_data is not data
    assert data.train_x.is_contiguous()  # the caller's tensors unchanged
    assert out_data.train_x.is_contiguous(memory_format=torch.channels_last)
    assert out_data.val_x.is_contiguous(memory_format=torch.channels_last)
    conv = next(m for m in out_model.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out_data.train_x, data.train_x)
    mlp = models.build("mlp", data.input_shape, data.num_classes, seed=0)
    same_model, same_data = apply_runtime_layout("mlp", mlp, data)
    assert same_model is mlp and same_data is data


@pytest.mark.parametrize("arm_name", ["adam", "cg"])
def test_training_in_channels_last_matches_contiguous(arm_name):
    torch.set_num_threads(1)
    data = fake_data()
    cfg = RunConfig(model="vgg5-max-relu", batch_size=32, seed=1, arms=[arm_name])
    initial = models.build("vgg5-max-relu", data.input_shape, data.num_classes, seed=1)
    plain = Arm.create(arm_name, copy.deepcopy(initial), cfg, data, make_loss("mse"))
    fast_model, fast_data = apply_runtime_layout("vgg5-max-relu", copy.deepcopy(initial), data)
    fast = Arm.create(arm_name, fast_model, cfg, fast_data, make_loss("mse"))
    assert fast.chunk == 512 and plain.chunk == 512
    # Two Adam epochs; one CG epoch (its line search turns rounding differences of 1e-6 into
    # steps that differ by 1e-3 after a second iteration, as a changed summation order does too).
    for _ in range(2 if arm_name == "adam" else 1):
        a = plain.run_epoch(lambda: False)
        b = fast.run_epoch(lambda: False)
        for key in ("train_loss", "val_loss", "grad_norm"):
            assert b[key] == pytest.approx(a[key], rel=1e-3), key
    for p, q in zip(plain.model.parameters(), fast.model.parameters()):
        torch.testing.assert_close(q.contiguous(), p.contiguous(), rtol=1e-3, atol=1e-5)  # Adam normalises tiny gradients: rounding shows


def test_full_pass_chunk_does_not_change_loss_or_gradient_norm():
    torch.set_num_threads(1)
    data = fake_data(n=100)
    model = models.build("cnn-small", data.input_shape, data.num_classes, seed=2)
    loss_fn = make_loss("mse")
    whole = evaluate(model, loss_fn, data.train_x, data.train_y, with_grad=True, chunk=4096)
    pieces = evaluate(model, loss_fn, data.train_x, data.train_y, with_grad=True, chunk=32)
    for a, b in zip(whole, pieces):
        assert b == pytest.approx(a, rel=1e-5)


def test_a_run_with_the_lbfgs_arm_keeps_contiguous_memory_and_completes(data_root, tmp_path):
    from twophase import store
    from twophase.experiment import run_experiment

    data = fake_data()
    model = models.build("cnn-small", data.input_shape, data.num_classes, seed=0)
    same_model, same_data = apply_runtime_layout("cnn-small", model, data, arms=["two-phase", "adam-lbfgs"])
    assert same_model is model and same_data is data
    cfg = RunConfig(model="cnn-small", data_root=data_root, subset=64, val_subset=64, epochs=3, batch_size=32,
                    switch_epoch=1, threads=1, arms=["two-phase", "adam", "adam-lbfgs", "cg"])
    summary = run_experiment(cfg, str(tmp_path), "20260101-000000-c1c1c1")
    assert summary["status"] == "completed", summary.get("error")
    assert store.load_run(str(tmp_path), "20260101-000000-c1c1c1").metrics["epoch"].max() == 3
