"""Hostile testing, round 2: defects M6, L13, M1, L1 and L7 (one section each).

M6   NonlinearCG: a closure that raises during the line search (either search, any exception,
     KeyboardInterrupt too) leaves the parameters exactly where the step started.
L13  TwoPhase.load_state_dict / SwitchRule.load_state_dict refuse a rule state that cannot be
     (NaN maximum, negative epoch, switch_epoch without a switch, unknown signal, ...), naming
     the bad key, and change nothing.
M1   A huge model size is refused at once (no divisor search up to n, no model built), naming
     model_sizes and the size.
L1   Every size of every model, at huge, negative, zero, bool, float and text values, is a
     ConfigError naming model_sizes and the size (never a TypeError from torch).
L7   min_epochs beyond epochs and a NUL character in data_root are refused by RunConfig.
"""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from twophase import models
from twophase.config import RunConfig
from twophase.errors import ConfigError
from twophase.optim import NonlinearCG, SwitchRule, TwoPhase


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors (conftest.py)


def refused(**fields) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        RunConfig(**fields).validate()
    return info.value


# ============================================================================ M6

class Boom(RuntimeError):
    pass


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    """The raw bits of a float tensor (so -0.0 != 0.0 and NaN payloads count)."""
    ints = {torch.float64: torch.int64, torch.float32: torch.int32, torch.float16: torch.int16}
    return tensor.detach().clone().view(ints[tensor.dtype])


def _problem(param_dtype):
    """Two parameter tensors (one with a -0.0) and a convex quartic loss on them."""
    generator = torch.Generator().manual_seed(3)
    a = torch.randn(5, generator=generator).to(param_dtype)
    a[2] = -0.0
    b = torch.randn(3, 2, generator=generator).to(param_dtype)
    return [torch.nn.Parameter(a), torch.nn.Parameter(b)]


def _closure(opt, params, fail_on=None, error=None, values_only=False):
    """The loss; raises `error` on call number `fail_on` of the current step (calls[0] counts)."""
    calls = [0]

    def loss_of():
        return sum(((p - 0.3) ** 2).sum() + 0.1 * (p ** 4).sum() for p in params)

    def check():
        calls[0] += 1
        if calls[0] == fail_on:
            raise error

    if values_only:
        def closure(backward=True):
            check()
            if not backward:
                return loss_of()
            opt.zero_grad()
            loss = loss_of()
            loss.backward()
            return loss
    else:
        def closure():
            check()
            opt.zero_grad()
            loss = loss_of()
            loss.backward()
            return loss
    return closure, calls


# strong Wolfe with a first step of 10 is far too long: the search zooms, so a step has at least 3
# closure calls; golden section always evaluates at least two trial points
M6_CASES = [
    pytest.param(line_search, fail_on, param_dtype, cg_dtype, values_only,
                 id=f"{line_search}-call{fail_on}-{str(param_dtype)[6:]}-cg{str(cg_dtype)[6:]}"
                    f"{'-values' if values_only else ''}")
    for line_search in ("strong-wolfe", "golden")
    for fail_on in (2, 3)
    for param_dtype, cg_dtype, values_only in (
        (torch.float32, None, False), (torch.float32, torch.float64, True), (torch.float64, torch.float32, False),
    )
]


@pytest.mark.parametrize("line_search, fail_on, param_dtype, cg_dtype, values_only", M6_CASES)
def test_m6_closure_raising_in_the_line_search_restores_parameters_exactly(line_search, fail_on, param_dtype,
                                                                            cg_dtype, values_only):
    params = _problem(param_dtype)
    before = [_bits(p) for p in params]
    opt = NonlinearCG(params, line_search=line_search, init_step=10.0, dtype=cg_dtype)
    error = Boom("the data loader died")
    closure, calls = _closure(opt, params, fail_on=fail_on, error=error, values_only=values_only)
    with pytest.raises(Boom) as info:
        opt.step(closure)
    assert info.value is error and calls[0] == fail_on  # the very exception, raised in the search
    assert all(torch.equal(_bits(p), bits) for p, bits in zip(params, before))
    assert opt.last_step is None

    # the step can be retried (the closure's count is past fail_on) and does exactly what an
    # uninterrupted first step does
    opt.step(closure)
    twin_params = _problem(param_dtype)
    twin = NonlinearCG(twin_params, line_search=line_search, init_step=10.0, dtype=cg_dtype)
    twin.step(_closure(twin, twin_params, values_only=values_only)[0])
    assert all(torch.equal(_bits(p), _bits(q)) for p, q in zip(params, twin_params))
    assert opt.last_step == twin.last_step


@pytest.mark.parametrize("line_search", ["strong-wolfe", "golden"])
@pytest.mark.parametrize("fail_on", [2, 3])
def test_m6_keyboard_interrupt_in_the_line_search_restores_parameters_and_propagates(line_search, fail_on):
    params = _problem(torch.float32)
    opt = NonlinearCG(params, line_search=line_search, init_step=10.0)
    # a first, complete step: the next one reuses its gradient, so its first call is a trial point
    opt.step(_closure(opt, params)[0])
    before = [_bits(p) for p in params]
    # strong Wolfe reuses the accepted point's gradient (no call at the start); golden does not
    target = fail_on - 1 if line_search == "strong-wolfe" else fail_on
    closure, calls = _closure(opt, params, fail_on=target, error=KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        opt.step(closure)
    assert calls[0] == target
    assert all(torch.equal(_bits(p), bits) for p, bits in zip(params, before))


def test_m6_an_exception_at_the_starting_point_also_leaves_the_parameters_alone():
    params = _problem(torch.float32)
    before = [_bits(p) for p in params]
    opt = NonlinearCG(params)
    closure, _ = _closure(opt, params, fail_on=1, error=Boom("first call"))
    with pytest.raises(Boom):
        opt.step(closure)
    assert all(torch.equal(_bits(p), bits) for p, bits in zip(params, before))


# ============================================================================ L13

def _two_phase():
    generator = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(4, generator=generator))]
    opt = TwoPhase(params, lr=0.01)
    for norm in (1.0, 2.0, 1.9):
        params[0].grad = torch.ones(4)
        opt.step()
        opt.epoch_end(norm)
    return params, opt


@pytest.mark.parametrize("key, value", [("max_norm", math.nan), ("epoch", -5)])
def test_l13_two_phase_refuses_a_rule_state_that_never_fires_and_changes_nothing(key, value):
    params, opt = _two_phase()
    saved = opt.state_dict()
    bad = copy.deepcopy(saved)
    bad["two_phase"]["rule"][key] = value
    bad["param_groups"][0]["lr"] = 0.5  # would show if Adam's part had been loaded
    rule_before = opt.rule.state_dict()
    with pytest.raises(ValueError, match=key):
        opt.load_state_dict(bad)
    assert opt.rule.state_dict() == rule_before and opt.param_groups[0]["lr"] == 0.01
    opt.load_state_dict(saved)  # the good state still loads


def test_l13_two_phase_refuses_a_phase_that_disagrees_with_the_rule():
    _, opt = _two_phase()
    bad = opt.state_dict()
    bad["two_phase"]["phase"] = "cg"  # the rule has not switched
    with pytest.raises(ValueError, match="phase"):
        opt.load_state_dict(bad)
    assert opt.phase == "adam"


def _rule_states():
    """Genuine states: before any epoch, mid-way, after each kind of switch."""
    fresh = SwitchRule()
    mid = SwitchRule(patience=3, smoothing=0.5, min_epochs=2)
    for norm in (1.0, 3.0, 2.0):
        mid.update(norm)
    paper = SwitchRule()
    for norm in (1.0, 3.0, 2.0, 1.0, 0.5):
        paper.update(norm)
    fixed = SwitchRule(switch_epoch=2)
    for norm in (1.0, 1.0, 1.0):
        fixed.update(norm)
    plateau = SwitchRule(signal="plateau", window=2, threshold=0.5)
    for loss in (1.0, 0.99, 0.98, 0.97):
        plateau.update(1.0, loss=loss)
    curvature = SwitchRule(signal="curvature", probe_every=2)
    curvature.update(1.0)
    curvature.update(1.0, curvature=math.nan)
    curvature.update(1.0)
    curvature.update(1.0, curvature=0.1)
    trial = SwitchRule(signal="trial", trial_every=2)
    for _ in range(4):
        trial.update(2.0)
        if trial.trial_due and trial.trials == 0:
            trial.reject_trial()
        elif trial.trial_due:
            trial.accept_trial()
    assert paper.switched and fixed.switched and plateau.switched and curvature.switched and trial.switched
    return [fresh, mid, paper, fixed, plateau, curvature, trial]


def test_l13_genuine_states_still_load_through_json_and_old_states_too():
    for rule in _rule_states():
        again = SwitchRule()
        again.load_state_dict(json.loads(json.dumps(rule.state_dict())))
        assert again.state_dict() == rule.state_dict() or math.isnan(rule.last_curvature or 0.0)
        old = rule.state_dict()
        if rule.signal == "grad-norm":  # saved before the signals existed
            for key in ("signal", "window", "plateau_threshold", "epsilon", "probe_every", "trial_every",
                        "trial_passes", "losses", "last_curvature", "signal_below", "trials"):
                old.pop(key)
            SwitchRule().load_state_dict(old)


BAD_RULE_STATES = [
    ("max_norm", math.nan), ("max_norm", math.inf), ("max_norm", -1.0), ("max_norm", "2"), ("max_norm", None),
    ("max_norm", 10**400), ("max_norm", True),
    ("epoch", -5), ("epoch", 2.5), ("epoch", True), ("epoch", "3"), ("epoch", None),
    ("below", -1), ("below", 1.5), ("signal_below", -1), ("trials", -2), ("trials", 0.5),
    ("last_norm", -1.0), ("last_norm", math.nan), ("last_norm", "x"),
    ("value", math.inf), ("value", -2.0), ("peak_value", math.nan), ("peak_epoch", -1), ("peak_epoch", 99),
    ("peak_epoch", 1.0),
    ("switched", "yes"), ("switched", 1), ("switched", None),
    ("switch_epoch", -3), ("switch_epoch", 2.0), ("switch_epoch", 99),
    ("signal", "bogus"), ("signal", None), ("window", 0), ("window", 2.0), ("plateau_threshold", -1.0),
    ("plateau_threshold", math.nan), ("epsilon", math.inf), ("probe_every", 0), ("trial_every", -1),
    ("trial_passes", 0), ("losses", "abc"), ("losses", [1.0, "x"]), ("losses", None), ("losses", [True]),
    ("last_curvature", "flat"), ("tolerance", math.nan), ("tolerance", 3.0), ("min_epochs", -1),
    ("min_epochs", math.nan), ("patience", 0), ("smoothing", 1.0), ("switch_epoch_option", 0),
    ("switch_epoch_option", -5),
]


@pytest.mark.parametrize("key, value", BAD_RULE_STATES, ids=[f"{k}={v!r:.12}" for k, v in BAD_RULE_STATES])
def test_l13_switch_rule_refuses_a_bad_state_naming_the_key_and_changes_nothing(key, value):
    source = _rule_states()[1]  # mid-way: 3 epochs, not switched
    state = source.state_dict()
    state[key] = value
    rule = SwitchRule(tolerance=0.5)
    before = rule.state_dict()
    with pytest.raises(ValueError) as info:
        rule.load_state_dict(state)
    assert key in str(info.value)
    assert rule.state_dict() == before


@pytest.mark.parametrize("changes, key", [
    ({"switched": True, "switch_epoch": None}, "switch_epoch"),  # switched, but at no epoch
    ({"switched": False, "switch_epoch": 2}, "switch_epoch"),  # an epoch, but no switch
    ({"epoch": 0}, "epoch"),  # progress recorded at epoch 0
    ({"below": 4}, "below"),  # more epochs below than epochs
    ({"peak_epoch": None, "peak_value": None}, "peak"),  # a tested value without a peak
    ({"max_norm": 7.0}, "max_norm"),  # the maximum is not the peak's value
    ({"signal": "plateau", "window": 1, "losses": [1.0, 0.9, 0.8]}, "losses"),  # longer than window + 1
])
def test_l13_switch_rule_refuses_an_inconsistent_state(changes, key):
    state = {**_rule_states()[1].state_dict(), **changes}
    with pytest.raises(ValueError, match=key):
        SwitchRule().load_state_dict(state)


def test_l13_switch_rule_refuses_a_state_that_is_not_a_mapping():
    with pytest.raises(ValueError, match="mapping"):
        SwitchRule().load_state_dict([("epoch", 1)])


# ============================================================================ M1

@pytest.mark.timeout(10)
@pytest.mark.parametrize("model, sizes, culprit", [
    ("vit-mlp", {"embed_dim": 99999999999999999999}, "embed_dim"),
    ("vit-mlp", {"embed_dim": 20000001}, "embed_dim"),
    ("vit-nomlp", {"embed_dim": 20000001, "heads": 1}, "embed_dim"),
    ("vit-nomlp-wkewq", {"embed_dim": 10**40 + 1}, "embed_dim"),
    ("vit-mlp", {"depth": 10**20}, "depth"),
    ("vit-mlp", {"depth": 20000001}, "depth"),
    ("vit-nomlp-wkewq-wvwo", {"depth": 10**7, "embed_dim": 1}, "depth"),
    ("mlp", {"depth": 10**7, "width": 1}, "depth"),
    ("mlp", {"depth": 10**30}, "depth"),
    ("vit-mlp", {"mlp_dim": 10**25}, "mlp_dim"),
    ("vgg5-max-relu", {"hidden": 10**9}, "hidden"),
])
def test_m1_huge_sizes_are_refused_at_once_naming_model_sizes_and_the_size(model, sizes, culprit):
    error = refused(model=model, model_sizes=sizes)
    assert set(error.errors) == {"model_sizes"}
    message = error.errors["model_sizes"]
    assert culprit in message and str(sizes[culprit]) in message


@pytest.mark.timeout(10)
def test_m1_many_huge_sizes_in_a_row_finish():
    for e in (20000001, 20000003, 99999989, 199999999, 10**12 + 39):
        assert "model_sizes" in refused(model="vit-mlp", model_sizes={"embed_dim": e}).errors
    with pytest.raises(ConfigError) as info:
        models.check("vit-mlp", (1, 28, 28), 10, embed_dim=99999999999999999999)
    assert "embed_dim" in str(info.value)


def test_m1_the_limit_itself_is_accepted_and_divisors_are_still_listed():
    RunConfig(model="mlp", model_sizes={"width": 1000, "depth": 100}).validate()
    error = refused(model="vit-mlp", model_sizes={"embed_dim": 30, "heads": 4})
    assert "1, 2, 3, 5, 6, 10, 15, 30" in error.errors["model_sizes"]
    assert models._divisors(1) == [1] and models._divisors(36) == [1, 2, 3, 4, 6, 9, 12, 18, 36]
    assert models._divisors(49) == [1, 7, 49] and models._divisors(97) == [1, 97]
    # the largest model allowed is accepted, one unit more is refused
    per_width = (784 + 1) + 10  # mlp, depth 1, MNIST: 785 w + w * 10 + 10 parameters
    widest = (models.MAX_PARAMETERS - 10) // per_width
    RunConfig(model="mlp", model_sizes={"width": widest}).validate()
    assert "model_sizes" in refused(model="mlp", model_sizes={"width": widest + 1}).errors


@pytest.mark.parametrize("name", list(models.names()))
@pytest.mark.parametrize("shape, classes", [((1, 28, 28), 10), ((3, 32, 32), 100), ((2, 12, 20), 3)])
def test_m1_the_parameter_count_without_building_matches_the_built_model(name, shape, classes):
    variants = [{}]
    if name.startswith("vit-"):
        variants += [{"depth": 2, "embed_dim": 12, "pool": "mean", "patch": 2},
                     {"depth": 1, "embed_dim": 6, "patch": 4, "heads": 1 if name.endswith("wvwo") else 2}]
        if name == "vit-mlp":
            variants.append({"mlp_dim": 7})
    elif name == "mlp":
        variants += [{"depth": 0}, {"depth": 3, "width": 5}]
    elif name == "vgg5-max-relu":
        variants += [{"widths": (3, 4, 5), "hidden": 6}]
    else:
        variants += [{"widths": [3, 7]}]
    for sizes in variants:
        if name.startswith("vit-") and "patch" in sizes and (shape[1] % sizes["patch"] or shape[2] % sizes["patch"]):
            continue
        full = models.check(name, shape, classes, **sizes)
        model = models._construct_on_meta(name, shape, classes, full)
        assert models.parameter_count(name, shape, classes, full) == models.count_parameters(model), sizes


# ============================================================================ L1

BAD_SIZE_VALUES = [10**30, -10**30, 10**5000, -10**5000, -1, 0, True, False, 2.0, 64.0, "8", math.nan, math.inf]


def _l1_cases():
    cases = []
    for name in models.names():
        for size, default in models.defaults(name).items():
            for value in BAD_SIZE_VALUES:
                if name == "mlp" and size == "depth" and value in (0, False) and not isinstance(value, bool):
                    continue  # no hidden layer: logistic regression
                if isinstance(default, tuple):
                    for position in range(len(default)):
                        bad = list(default)
                        bad[position] = value
                        cases.append((name, size, tuple(bad)))
                    cases.append((name, size, value))
                else:
                    cases.append((name, size, value))
    return cases


L1_CASES = _l1_cases()


def _short(value) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**40:
        return f"{'-' if value < 0 else ''}int_of_{value.bit_length()}_bits"  # repr() refuses > 4300 digits
    if isinstance(value, tuple):
        return "(" + ",".join(_short(v) for v in value) + ")"
    return repr(value)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("name, size, value", L1_CASES,
                         ids=[f"{n}-{s}={_short(v)}" for n, s, v in L1_CASES])
def test_l1_every_bad_size_of_every_model_is_a_config_error_naming_it(name, size, value):
    error = refused(model=name, model_sizes={size: value})
    assert set(error.errors) == {"model_sizes"}
    assert size in error.errors["model_sizes"]
    with pytest.raises(ConfigError) as info:  # the models API itself, too
        models.build(name, (1, 28, 28), 10, **{size: value})
    assert size in str(info.value)


def test_l1_width_ten_to_the_thirty_from_the_command_line_form():
    error = refused(model="mlp", model_sizes={"width": 10**30})
    assert "width" in error.errors["model_sizes"] and str(10**30) in error.errors["model_sizes"]


# ============================================================================ L7

def test_l7_min_epochs_beyond_epochs_is_refused_like_switch_epoch():
    RunConfig(epochs=10, min_epochs=10).validate()
    error = refused(epochs=1, min_epochs=50)
    assert set(error.errors) == {"min_epochs"} and "at most epochs (1)" in error.errors["min_epochs"]
    error = refused(epochs=10, arms=["two-phase@min_epochs=11", "adam"])
    assert set(error.errors) == {"arms"} and "min_epochs" in error.errors["arms"]
    RunConfig(epochs=10, arms=["two-phase@min_epochs=10", "adam"]).validate()


def test_l7_nul_in_data_root_is_refused_but_harmless_in_name_and_tag():
    error = refused(data_root="/data\x00/mnist")
    assert set(error.errors) == {"data_root"} and "NUL" in error.errors["data_root"]
    RunConfig(name="a\x00b", tag="t\x00").validate()


def test_l7_integers_too_long_to_print_are_config_errors():
    for field in ("epochs", "seed", "lr", "subset", "switch_epoch", "min_epochs"):
        error = refused(**{field: 10**5000})
        assert field in error.errors
    assert "model_sizes" in refused(model_sizes=[10**5000]).errors
    assert "model_sizes" in refused(model_sizes={10**5000: 1}).errors
    assert "model" in refused(model=10**5000).errors
    rule = SwitchRule()
    with pytest.raises(ValueError, match="epoch"):
        rule.load_state_dict({**rule.state_dict(), "epoch": -10**5000})
