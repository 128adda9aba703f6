"""A CG or L-BFGS epoch's record reuses the line search's last full-set evaluation.

When the accepted CG step is the last point the closure evaluated with backward, the record
takes the training loss, accuracy and gradient norm from that evaluation instead of a second
forward and backward pass. It must give the numbers a fresh evaluation gives, and it must
not reuse anything once the parameters have moved (golden section, L-BFGS), in a model that
computes differently in train mode, or in the Adam phase.
"""

import pytest
import torch
from torch import nn

from twophase import engine, models
from twophase.config import RunConfig
from twophase.data import Dataset
from twophase.engine import Arm, evaluate, make_loss

from conftest import random_dataset


def fake_data(n=300, shape=(1, 8, 8), classes=10, seed=0) -> Dataset:
    return random_dataset(n, shape, classes, seed, val=n // 3)


def make_arm(name="cg", model_name="mlp", line_search="strong-wolfe", model=None, loss="mse", **fields):
    data = fake_data()
    cfg = RunConfig(model=model_name, subset=300, val_subset=100, epochs=4, batch_size=64, seed=0, arms=[name],
                    line_search=line_search, loss=loss, **fields)
    initial = model if model is not None else models.build(model_name, data.input_shape, data.num_classes, seed=0)
    arm = Arm.create(name, initial, cfg, data, make_loss(cfg.loss))
    arm.chunk = 128  # several chunks per full pass
    return arm


@pytest.fixture
def count_evaluations(monkeypatch):
    """Counts the record's full-set passes with backward (engine.evaluate with with_grad=True)."""
    calls = []
    real = engine.evaluate

    def counting(model, loss_fn, x, y, with_grad, **kw):
        if with_grad:
            calls.append(x.shape[0])
        return real(model, loss_fn, x, y, with_grad, **kw)

    monkeypatch.setattr(engine, "evaluate", counting)
    return calls


def fresh(arm):
    """The record's training figures computed from scratch at the arm's parameters."""
    return evaluate(arm.model, arm.loss_fn, arm.data.train_x, arm.data.train_y, with_grad=True, chunk=arm.chunk)


@pytest.mark.parametrize("loss", ["mse", "cross-entropy"])
def test_cg_record_reuses_the_last_evaluation_and_matches_a_fresh_one(count_evaluations, loss):
    arm = make_arm(loss=loss)
    arm.initial_record()
    reused_epochs = 0
    for _ in range(4):
        before = len(count_evaluations)
        record = arm.run_epoch(lambda: False)
        reused_epochs += len(count_evaluations) == before
        loss_, acc, norm = fresh(arm)
        assert record["train_loss"] == pytest.approx(loss_, rel=1e-6)
        assert record["train_acc"] == pytest.approx(acc, abs=1e-9)
        assert record["grad_norm"] == pytest.approx(norm, rel=1e-5)
        assert arm.optimizer.last_step.status in ("ok", "restarted")
    # strong Wolfe accepts its last trial point on this smooth problem: every epoch reuses it
    assert reused_epochs == 4


def test_reuse_changes_no_figure_of_a_run():
    """Two arms from the same start, one with the reuse switched off: same records, epoch by
    epoch, up to float rounding (the trajectory itself never depends on the record)."""
    with_reuse, without = make_arm(), make_arm()
    without._reused_full_pass = lambda: None  # this arm always evaluates afresh
    for _ in range(3):
        a = with_reuse.run_epoch(lambda: False)
        b = without.run_epoch(lambda: False)
        for key in ("train_loss", "train_acc", "grad_norm", "val_loss", "val_acc", "data_passes", "loss_evals"):
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-9), key


def test_golden_section_moves_after_its_last_gradient_so_the_record_evaluates(count_evaluations):
    arm = make_arm(line_search="golden")
    arm.run_epoch(lambda: False)
    assert count_evaluations == [300]
    record = arm.run_epoch(lambda: False)
    loss_, acc, norm = fresh(arm)
    assert record["train_loss"] == pytest.approx(loss_, rel=1e-6)
    assert record["grad_norm"] == pytest.approx(norm, rel=1e-5)


def test_lbfgs_epoch_records_at_its_new_point(count_evaluations):
    arm = make_arm("adam-lbfgs", switch_epoch=1)
    arm.end_of_epoch(arm.run_epoch(lambda: False))  # one Adam epoch, then the engine's switch
    assert arm.phase == "lbfgs"
    count_evaluations.clear()
    record = arm.run_epoch(lambda: False)
    # torch's L-BFGS restores the parameters after each trial and then steps: its last trial
    # may or may not be bit for bit where it ends; either way the record is of the new point
    assert len(count_evaluations) <= 1
    loss_, _, norm = fresh(arm)
    assert record["train_loss"] == pytest.approx(loss_, rel=1e-6)
    assert record["grad_norm"] == pytest.approx(norm, rel=1e-5)


def test_adam_epoch_never_reuses(count_evaluations):
    arm = make_arm("two-phase")
    arm.run_epoch(lambda: False)
    assert count_evaluations == [300]


def test_a_model_with_dropout_is_always_evaluated_in_eval_mode(count_evaluations):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Dropout(0.5), nn.ReLU(), nn.Linear(32, 10))
    torch.manual_seed(0)
    arm = make_arm(model=model)
    assert not engine.mode_free(arm.model)
    record = arm.run_epoch(lambda: False)
    assert count_evaluations == [300]
    loss_, _, _ = fresh(arm)  # eval mode: no dropout
    assert record["train_loss"] == pytest.approx(loss_, rel=1e-6)


@pytest.mark.parametrize("write", ["in place", "through .data", "NaN through .data"])
def test_writing_the_parameters_invalidates_the_last_evaluation(count_evaluations, write):
    arm = make_arm()
    arm.run_epoch(lambda: False)
    # an epoch whose step ends where it evaluated last, then a write to the parameters in place
    arm.epoch += 1
    arm.last_full_pass = None
    closure = engine.full_batch_closure(arm.model, arm.loss_fn, arm.data.train_x, arm.data.train_y,
                                        engine.PassCounter(), chunk=arm.chunk)
    closure()
    arm.last_full_pass = closure.last
    assert arm.last_full_pass is not None
    first = next(arm.model.parameters())
    if write == "in place":
        with torch.no_grad():
            first.mul_(0.5)
    elif write == "through .data":  # bypasses autograd's version counter
        first.data.view(-1)[0] += 1.0
    else:
        first.data.view(-1)[0] = float("nan")
    before = len(count_evaluations)
    record = arm._record(phase="cg", batch_norm_mean=None, needs_full_norm=False)
    assert len(count_evaluations) == before + 1 and not arm.record_reused_pass
    loss_, _, norm = fresh(arm)
    assert record["train_loss"] == pytest.approx(loss_, rel=1e-6, nan_ok=True)
    assert record["grad_norm"] == pytest.approx(norm, rel=1e-5, nan_ok=True)


class Jitter(nn.Module):
    """A module of the user's own that reads self.training (adds noise while training)."""

    def forward(self, x):
        return x + 0.1 * torch.randn_like(x) if self.training else x


def test_a_model_with_modules_of_other_code_is_evaluated_in_eval_mode(count_evaluations):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), Jitter(), nn.ReLU(), nn.Linear(32, 10))
    torch.manual_seed(0)
    arm = make_arm(model=model)
    assert not engine.mode_free(arm.model) and engine.mode_free(models.build("vit-mlp", (1, 8, 8), 10))
    record = arm.run_epoch(lambda: False)
    assert count_evaluations == [300] and not arm.record_reused_pass
    loss_, _, _ = fresh(arm)  # eval mode: no jitter
    assert record["train_loss"] == pytest.approx(loss_, rel=1e-6)
    assert arm.model.training  # left in training mode for the next epoch
