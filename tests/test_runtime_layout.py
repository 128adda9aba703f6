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
from twophase import losses
from twophase.training import full_pass as fp
from twophase.training.setup import apply_runtime_layout, setup_for
from twophase.training.trainer import MemoryLog, Trainer


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
    plain_setup = setup_for(cfg, data, copy.deepcopy(initial), layout=False)
    fast_setup = setup_for(cfg, data, copy.deepcopy(initial))
    assert fast_setup.data.train_x.is_contiguous(memory_format=torch.channels_last)
    assert fast_setup.chunk == 512 and plain_setup.chunk == 512
    plain, fast = MemoryLog(), MemoryLog()
    trainers = Trainer(cfg, plain_setup, plain), Trainer(cfg, fast_setup, fast)
    # Two Adam epochs; one CG epoch (its line search turns rounding differences of 1e-6 into
    # steps that differ by 1e-3 after a second iteration, as a changed summation order does too).
    for epoch in range(1, 3 if arm_name == "adam" else 2):
        for trainer in trainers:
            trainer.train_epoch(epoch)
        a, b = plain.records[-1], fast.records[-1]
        for key in ("train_loss", "val_loss", "grad_norm"):
            assert getattr(b, key) == pytest.approx(getattr(a, key), rel=1e-3), key
    models_ = [t.arms[0].branch.model if t.arms[0].branch else t.trunks[0].model for t in trainers]
    for p, q in zip(models_[0].parameters(), models_[1].parameters()):
        torch.testing.assert_close(q.contiguous(), p.contiguous(), rtol=1e-3, atol=1e-5)  # Adam normalises tiny gradients: rounding shows


def test_full_pass_chunk_does_not_change_loss_or_gradient_norm():
    torch.set_num_threads(1)
    data = fake_data(n=100)
    model = models.build("cnn-small", data.input_shape, data.num_classes, seed=2)
    loss_fn = losses.get("mse")
    figures = []
    for chunk in (4096, 32):
        result = fp.full_pass(model, loss_fn, data.train_x, data.train_y, chunk=chunk, grad=True)
        figures.append((result.loss, result.accuracy, fp.grad_norm(fp.trainable(model))))
    for a, b in zip(*figures):
        assert b == pytest.approx(a, rel=1e-5)


def test_a_run_with_the_lbfgs_arm_keeps_contiguous_memory_and_completes(data_root, tmp_path):
    from twophase import runs
    from twophase.training.run import run_experiment

    data = fake_data()
    model = models.build("cnn-small", data.input_shape, data.num_classes, seed=0)
    same_model, same_data = apply_runtime_layout("cnn-small", model, data, arms=["two-phase", "adam-lbfgs"])
    assert same_model is model and same_data is data
    cfg = RunConfig(model="cnn-small", data_root=data_root, subset=64, val_subset=64, epochs=3, batch_size=32,
                    switch_epoch=1, threads=1, arms=["two-phase", "adam", "adam-lbfgs", "cg"])
    summary = run_experiment(cfg, str(tmp_path), "20260101-000000-c1c1c1")
    assert summary["status"] == "completed", summary.get("error")
    assert runs.load_run(str(tmp_path), "20260101-000000-c1c1c1").metrics["epoch"].max() == 3
