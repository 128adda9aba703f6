"""TwoPhase (Adam, then NonlinearCG) on a small regression problem, and full_gradient_norm."""

from __future__ import annotations

import io

import pytest
import torch

from twophase.errors import ConfigError
from twophase.optim import NonlinearCG, SwitchRule, TwoPhase, full_gradient_norm

mse = torch.nn.functional.mse_loss
SAMPLES, BATCH, CG_STEPS_PER_EPOCH = 256, 32, 3


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors (conftest.py)


def make_problem(seed: int = 0, dtype=torch.float32):
    """Regression of a smooth function of 4 inputs by a 4-16-1 tanh network."""
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(SAMPLES, 4, generator=generator, dtype=dtype)
    weights = torch.randn(4, 1, generator=generator, dtype=dtype)
    targets = torch.sin(inputs @ weights) + 0.3 * inputs[:, :1] ** 2
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    return model.to(dtype), inputs, targets


def chunks(inputs, targets, size=100):
    return [(inputs[i:i + size], targets[i:i + size]) for i in range(0, len(inputs), size)]


def full_loss(model, inputs, targets) -> float:
    with torch.no_grad():
        return float(mse(model(inputs), targets))


def train(model, opt, inputs, targets, first_epoch, last_epoch, snapshots=None):
    """Epochs first_epoch..last_epoch: Adam over shuffled mini-batches (a fixed order per epoch)
    or CG steps on the full batch, then the full gradient norm goes to epoch_end.
    Returns per-epoch (phase, loss, cg infos); stores torch.save bytes in `snapshots`."""

    def closure(backward=True):
        loss = mse(model(inputs), targets)
        if backward:
            opt.zero_grad()
            loss.backward()
        return loss

    history = []
    for epoch in range(first_epoch, last_epoch + 1):
        phase = opt.phase
        infos = []
        if phase == "adam":
            order = torch.randperm(SAMPLES, generator=torch.Generator().manual_seed(100 + epoch))
            for start in range(0, SAMPLES, BATCH):
                index = order[start:start + BATCH]
                opt.zero_grad()
                mse(model(inputs[index]), targets[index]).backward()
                opt.step()
        else:
            for _ in range(CG_STEPS_PER_EPOCH):
                opt.step(closure)
                infos.append(opt.last_step)
        opt.epoch_end(full_gradient_norm(model, mse, chunks(inputs, targets)))
        history.append((phase, full_loss(model, inputs, targets), infos))
        if snapshots is not None:
            buffer = io.BytesIO()
            torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
            snapshots[epoch] = buffer.getvalue()
    return history


def test_switches_and_the_loss_keeps_falling_after_the_switch():
    model, inputs, targets = make_problem()
    opt = TwoPhase(model.parameters(), lr=1e-2)
    assert opt.phase == "adam" and opt.switch_epoch is None and opt.last_step is None
    history = train(model, opt, inputs, targets, 1, 14)
    switch = opt.switch_epoch
    assert switch is not None and switch < 14
    assert opt.phase == "cg"
    assert opt.peak_epoch is not None and opt.peak_epoch <= switch
    assert opt.peak_grad_norm == opt.rule.peak_value > 0
    assert [phase for phase, _, _ in history] == ["adam"] * switch + ["cg"] * (14 - switch)

    losses = [loss for _, loss, _ in history]
    loss_at_switch = losses[switch - 1]
    after = losses[switch:]
    for previous, current in zip([loss_at_switch] + after, after):
        assert current < previous
    assert after[-1] < 0.25 * loss_at_switch
    for _, _, infos in history[switch:]:
        for info in infos:
            assert info.status in ("ok", "restarted")
            assert info.loss_after < info.loss_before


@pytest.mark.parametrize("cut", [1, 5], ids=["in-adam-phase", "in-cg-phase"])
def test_save_and_load_mid_run_continues_bit_identically(cut):
    last = 8
    model, inputs, targets = make_problem()
    options = dict(lr=1e-2, cg={"dtype": torch.float64, "beta": "pr+"}, rule={"tolerance": 0.9})
    opt = TwoPhase(model.parameters(), **options)
    snapshots = {}
    straight = train(model, opt, inputs, targets, 1, last, snapshots)
    assert opt.switch_epoch is not None and 1 < opt.switch_epoch < 5  # both cuts are meaningful

    saved = torch.load(io.BytesIO(snapshots[cut]), weights_only=True)
    model2, _, _ = make_problem(seed=7)  # other weights and a default optimizer, then loaded
    model2.load_state_dict(saved["model"])
    opt2 = TwoPhase(model2.parameters())
    opt2.load_state_dict(saved["opt"])
    assert opt2.phase == ("adam" if cut < opt.switch_epoch else "cg")
    resumed = train(model2, opt2, inputs, targets, cut + 1, last)

    assert [(p, loss) for p, loss, _ in resumed] == [(p, loss) for p, loss, _ in straight[cut:]]
    assert [infos for _, _, infos in resumed] == [infos for _, _, infos in straight[cut:]]
    for p, q in zip(model.parameters(), model2.parameters()):
        assert torch.equal(p, q)
    assert opt2.switch_epoch == opt.switch_epoch
    assert opt2.rule.state_dict() == opt.rule.state_dict()
    assert opt2.param_groups[0]["lr"] == 1e-2


def test_adam_phase_is_torch_adam():
    model, inputs, targets = make_problem()
    model2, _, _ = make_problem()
    opt = TwoPhase(model.parameters(), lr=3e-3, betas=(0.8, 0.99), eps=1e-7, weight_decay=1e-3)
    reference = torch.optim.Adam(model2.parameters(), lr=3e-3, betas=(0.8, 0.99), eps=1e-7,
                                 weight_decay=1e-3)
    for net, optimizer in ((model, opt), (model2, reference)):
        for _ in range(5):
            optimizer.zero_grad()
            mse(net(inputs), targets).backward()
            optimizer.step()
    for p, q in zip(model.parameters(), model2.parameters()):
        assert torch.equal(p, q)


def test_cg_phase_needs_a_closure():
    model, inputs, targets = make_problem()
    opt = TwoPhase(model.parameters(), rule={"switch_epoch": 1})
    assert opt.epoch_end(1.0) is True
    assert opt.phase == "cg" and opt.switch_epoch == 1
    mse(model(inputs), targets).backward()
    with pytest.raises(RuntimeError, match="closure"):
        opt.step()
    assert opt.epoch_end(0.5) is False  # one-way


def test_parameters_from_a_generator_are_listed_once():
    model, _, _ = make_problem()
    params = list(model.parameters())
    opt = TwoPhase(p for p in model.parameters())
    listed = [p for group in opt.param_groups for p in group["params"]]
    assert len(listed) == len(params) and all(a is b for a, b in zip(listed, params))
    assert opt.adam.param_groups is opt.param_groups
    assert [p for g in opt.cg.param_groups for p in g["params"]] == listed
    assert isinstance(opt.cg, NonlinearCG)


def test_learning_rate_scheduler_reaches_adam():
    model, inputs, targets = make_problem()
    opt = TwoPhase(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    opt.zero_grad()
    mse(model(inputs), targets).backward()
    opt.step()
    scheduler.step()
    assert opt.adam.param_groups[0]["lr"] == pytest.approx(0.05)


def test_parameter_groups():
    model, inputs, targets = make_problem()
    first, second = model[0], model[2]
    opt = TwoPhase([{"params": first.parameters(), "lr": 1e-3},
                    {"params": second.parameters()}], lr=1e-2, rule={"switch_epoch": 1})
    assert [g["lr"] for g in opt.adam.param_groups] == [1e-3, 1e-2]
    opt.epoch_end(1.0)

    def closure():
        opt.zero_grad()
        loss = mse(model(inputs), targets)
        loss.backward()
        return loss

    before = float(closure().detach())
    opt.step(closure)
    assert opt.last_step.loss_after < before


def test_rule_given_as_instance_or_dict():
    params = list(make_problem()[0].parameters())
    rule = SwitchRule(tolerance=0.5, patience=2)
    assert TwoPhase(params, rule=rule).rule is rule
    from_dict = TwoPhase(params, rule={"tolerance": 0.5, "min_epochs": 3}).rule
    assert (from_dict.tolerance, from_dict.min_epochs) == (0.5, 3)
    assert TwoPhase(params).rule.tolerance == 0.9


@pytest.mark.parametrize(
    "options, field",
    [
        (dict(lr=-1.0), "lr"),
        (dict(betas=(0.9, 1.0)), "betas"),
        (dict(eps=-1e-8), "eps"),
        (dict(weight_decay=-0.1), "weight_decay"),
        (dict(rule={"tolerance": 1.5}), "rule.tolerance"),
        (dict(rule={"tolerence": 0.9}), "rule"),
        (dict(cg={"beta": "xx"}), "cg.beta"),
        (dict(cg={"c3": 0.1}), "cg"),
    ],
)
def test_invalid_options_name_the_field(options, field):
    params = list(make_problem()[0].parameters())
    with pytest.raises(ConfigError) as caught:
        TwoPhase(params, **options)
    assert field in caught.value.errors


def test_load_state_dict_refuses_a_plain_adam_state():
    params = list(make_problem()[0].parameters())
    adam_state = torch.optim.Adam(params).state_dict()
    with pytest.raises(ValueError, match="two_phase"):
        TwoPhase(params).load_state_dict(adam_state)


# ---------------------------------------------------------------------------- full_gradient_norm

def test_full_gradient_norm_matches_the_gradient_of_the_mean_loss():
    model, inputs, targets = make_problem(dtype=torch.float64)
    params = list(model.parameters())
    direct = torch.autograd.grad(mse(model(inputs), targets), params)
    expected = float(torch.sqrt(sum((g ** 2).sum() for g in direct)))
    # unequal chunk sizes (100, 100, 56) are weighted by their sample counts
    assert full_gradient_norm(model, mse, chunks(inputs, targets, 100)) == pytest.approx(expected, rel=1e-12)
    assert full_gradient_norm(model, mse, chunks(inputs, targets, 7)) == pytest.approx(expected, rel=1e-12)
    assert full_gradient_norm(model, mse, iter([(inputs, targets)])) == pytest.approx(expected, rel=1e-12)


def test_full_gradient_norm_leaves_gradients_as_found():
    model, inputs, targets = make_problem()
    weight, bias = model[0].weight, model[0].bias
    existing = torch.full_like(weight, 3.0)
    weight.grad = existing
    bias.grad = None
    frozen = model[2].bias
    frozen.requires_grad_(False)
    value = full_gradient_norm(model, mse, chunks(inputs, targets))
    assert value > 0
    assert weight.grad is existing and torch.equal(existing, torch.full_like(weight, 3.0))
    assert bias.grad is None
    assert model[2].weight.grad is None and frozen.grad is None


def test_full_gradient_norm_refuses_empty_data():
    model, _, _ = make_problem()
    with pytest.raises(ValueError, match="empty"):
        full_gradient_norm(model, mse, [])
