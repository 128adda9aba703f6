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

from twophase import models
from twophase.config import RunConfig
from twophase.data import Dataset
from twophase.training import full_pass as fp
from twophase.training.setup import setup_for
from twophase.training.trainer import MemoryLog, Trainer

from conftest import random_dataset


def fake_data(n=300, shape=(1, 8, 8), classes=10, seed=0) -> Dataset:
    return random_dataset(n, shape, classes, seed, val=n // 3)


class OneArm:
    """One arm trained by the engine (Trainer) on data of the test's own, chunks of 128."""

    def __init__(self, name="cg", model_name="mlp", line_search="strong-wolfe", model=None, loss="mse", **fields):
        data = fake_data()
        cfg = RunConfig(model=model_name, subset=300, val_subset=100, epochs=4, batch_size=64, seed=0,
                        arms=[name], line_search=line_search, loss=loss, **fields).validate()
        initial = model if model is not None else models.build(model_name, data.input_shape, data.num_classes,
                                                               seed=0)
        self.setup = setup_for(cfg, data, initial, full_pass_chunk=128)
        self.log = MemoryLog()
        self.trainer = Trainer(cfg, self.setup, self.log)
        self.arm = self.trainer.arms[0]
        self.epoch = 0

    @property
    def model(self):
        return self.arm.branch.model if self.arm.branch is not None else self.trainer.trunks[0].model

    def run_epoch(self):
        self.epoch += 1
        self.trainer.train_epoch(self.epoch)
        return self.log.records[-1]

    def fresh(self):
        """The record's training figures computed from scratch at the arm's parameters."""
        data = self.setup.data
        result = fp.full_pass(self.model, self.setup.loss_fn, data.train_x, data.train_y, chunk=128, grad=True,
                              eval_mode=True)
        return result.loss, result.accuracy, fp.grad_norm(fp.trainable(self.model))


@pytest.fixture
def count_evaluations(monkeypatch):
    """Counts the record's own full-set passes with backward (the training pass of measure())."""
    calls = []
    real = fp.full_pass

    def counting(model, loss_fn, x, y, grad=False, eval_mode=False, **kw):
        if grad and eval_mode:  # the closure's passes run in training mode
            calls.append(x.shape[0])
        return real(model, loss_fn, x, y, grad=grad, eval_mode=eval_mode, **kw)

    monkeypatch.setattr(fp, "full_pass", counting)
    return calls


@pytest.mark.parametrize("loss", ["mse", "cross-entropy"])
def test_cg_record_reuses_the_last_evaluation_and_matches_a_fresh_one(count_evaluations, loss):
    arm = OneArm(loss=loss)
    arm.trainer.start()
    reused_epochs = 0
    for _ in range(4):
        before = len(count_evaluations)
        record = arm.run_epoch()
        reused_epochs += len(count_evaluations) == before
        loss_, acc, norm = arm.fresh()
        assert record.train_loss == pytest.approx(loss_, rel=1e-6)
        assert record.train_acc == pytest.approx(acc, abs=1e-9)
        assert record.grad_norm == pytest.approx(norm, rel=1e-5)
        assert arm.arm.branch.optimizer.last_step.status in ("ok", "restarted")
    # strong Wolfe accepts its last trial point on this smooth problem: every epoch reuses it
    assert reused_epochs == 4


def test_reuse_changes_no_figure_of_a_run():
    """Two arms from the same start, one with the reuse switched off: same records, epoch by
    epoch, up to float rounding (the trajectory itself never depends on the record)."""
    with_reuse, without = OneArm(), OneArm()
    real_measure = without.arm.branch.measure

    def fresh_measure(**kwargs):  # this arm always evaluates afresh
        without.arm.branch.last_pass = None
        return real_measure(**kwargs)

    without.arm.branch.measure = fresh_measure
    for _ in range(3):
        a = with_reuse.run_epoch()
        b = without.run_epoch()
        for key in ("train_loss", "train_acc", "grad_norm", "val_loss", "val_acc", "data_passes", "loss_evals"):
            assert getattr(a, key) == pytest.approx(getattr(b, key), rel=1e-6, abs=1e-9), key


def test_golden_section_moves_after_its_last_gradient_so_the_record_evaluates(count_evaluations):
    arm = OneArm(line_search="golden")
    arm.run_epoch()
    assert count_evaluations == [300]
    record = arm.run_epoch()
    loss_, acc, norm = arm.fresh()
    assert record.train_loss == pytest.approx(loss_, rel=1e-6)
    assert record.grad_norm == pytest.approx(norm, rel=1e-5)


def test_lbfgs_epoch_records_at_its_new_point(count_evaluations):
    arm = OneArm("adam-lbfgs", switch_epoch=1)
    arm.run_epoch()  # one Adam epoch, then the engine's switch
    assert arm.arm.phase == "lbfgs"
    count_evaluations.clear()
    record = arm.run_epoch()
    # torch's L-BFGS restores the parameters after each trial and then steps: its last trial
    # may or may not be bit for bit where it ends; either way the record is of the new point
    assert len(count_evaluations) <= 1 and record.phase == "lbfgs"
    loss_, _, norm = arm.fresh()
    assert record.train_loss == pytest.approx(loss_, rel=1e-6)
    assert record.grad_norm == pytest.approx(norm, rel=1e-5)


def test_adam_epoch_never_reuses(count_evaluations):
    arm = OneArm("two-phase")
    arm.run_epoch()
    assert count_evaluations == [300]


def test_a_model_with_dropout_is_always_evaluated_in_eval_mode(count_evaluations):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Dropout(0.5), nn.ReLU(), nn.Linear(32, 10))
    torch.manual_seed(0)
    arm = OneArm(model=model)
    assert not fp.mode_free(arm.model)
    record = arm.run_epoch()
    assert count_evaluations == [300]
    loss_, _, _ = arm.fresh()  # eval mode: no dropout
    assert record.train_loss == pytest.approx(loss_, rel=1e-6)


@pytest.mark.parametrize("write", ["in place", "through .data", "NaN through .data"])
def test_writing_the_parameters_invalidates_the_last_evaluation(count_evaluations, write):
    arm = OneArm()
    arm.run_epoch()
    branch = arm.arm.branch
    # the step ended where it evaluated last, then a write to the parameters in place
    closure = fp.make_closure(branch.model, arm.setup.loss_fn, branch.data.train_x, branch.data.train_y,
                              arm.arm.cost, chunk=128)
    closure()
    assert closure.last is not None
    first = next(branch.model.parameters())
    if write == "in place":
        with torch.no_grad():
            first.mul_(0.5)
    elif write == "through .data":  # bypasses autograd's version counter
        first.data.view(-1)[0] += 1.0
    else:
        first.data.view(-1)[0] = float("nan")
    branch.last_pass = closure.last
    before = len(count_evaluations)
    figures = branch.measure()
    assert len(count_evaluations) == before + 1 and not figures.reused
    loss_, _, norm = arm.fresh()
    assert figures.train_loss == pytest.approx(loss_, rel=1e-6, nan_ok=True)
    assert figures.grad_norm == pytest.approx(norm, rel=1e-5, nan_ok=True)


class Jitter(nn.Module):
    """A module of the user's own that reads self.training (adds noise while training)."""

    def forward(self, x):
        return x + 0.1 * torch.randn_like(x) if self.training else x


def test_a_model_with_modules_of_other_code_is_evaluated_in_eval_mode(count_evaluations):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), Jitter(), nn.ReLU(), nn.Linear(32, 10))
    torch.manual_seed(0)
    arm = OneArm(model=model)
    assert not fp.mode_free(arm.model) and fp.mode_free(models.build("vit-mlp", (1, 8, 8), 10))
    record = arm.run_epoch()
    assert count_evaluations == [300]
    loss_, _, _ = arm.fresh()  # eval mode: no jitter
    assert record.train_loss == pytest.approx(loss_, rel=1e-6)
    assert arm.model.training  # left in training mode for the next epoch
