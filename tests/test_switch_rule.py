"""SwitchRule: the paper's Algorithm 1 and its options, on hand-written norm sequences."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from twophase.errors import ConfigError
from twophase.optim import SwitchRule

ROOT = Path(__file__).resolve().parent.parent


def switch_epoch_of(rule: SwitchRule, norms) -> int | None:
    """Feed the norms; check True comes at most once; return the epoch it came (or None)."""
    fired = [epoch for epoch, norm in enumerate(norms, start=1) if rule.update(norm)]
    assert len(fired) <= 1
    assert rule.epoch == len(norms)
    return fired[0] if fired else None


@pytest.mark.parametrize(
    "options, norms, expected",
    [
        # the paper's rule: rise to 3.0 at epoch 3, threshold 2.7; 2.8 is above, 2.6 below
        ({}, [1.0, 2.0, 3.0, 2.8, 2.6, 2.0], 5),
        # falling from the start fires at epoch 2 (the early switch seen on small problems)
        ({}, [5.0, 4.4, 4.0], 2),
        # "at or below": exactly tolerance x max fires
        ({}, [1.0, 0.9], 2),
        # never: the norm keeps rising, or stays within 10% of its maximum
        ({}, [1.0, 2.0, 3.0, 4.0, 5.0, 4.6, 4.55, 5.1, 4.7], None),
        ({}, [], None),
        # tolerance 1: the running maximum includes the current epoch, so it fires at once
        ({"tolerance": 1.0}, [1.0, 2.0], 1),
        ({"tolerance": 0.5}, [2.0, 1.5, 1.1, 1.0, 0.5], 4),
        # min_epochs: no switch before the end of epoch 3 even though epoch 2 is below
        ({"min_epochs": 3}, [5.0, 4.0, 3.0, 2.0], 3),
        ({"min_epochs": 3}, [5.0, 4.0, 4.9, 5.0], None),
        # patience 2: two consecutive epochs at or below (max 3 -> threshold 2.7)
        ({"patience": 2}, [1.0, 3.0, 2.5, 2.9, 2.6, 2.5], 6),
        ({"patience": 3}, [1.0, 3.0, 2.5, 2.9, 2.6, 2.5], None),
        # smoothing 0.5: values 2, 3, 3, 2.5; max 3 -> threshold 2.7 -> epoch 4
        ({"smoothing": 0.5}, [2.0, 4.0, 3.0, 2.0], 4),
        # ...where the raw norms fire at epoch 3 (3.0 <= 0.9 x 4.0)
        ({}, [2.0, 4.0, 3.0, 2.0], 3),
        # a fixed split ignores the norms
        ({"switch_epoch": 3}, [1.0, 2.0, 3.0, 4.0, 5.0], 3),
        ({"switch_epoch": 1}, [1.0, 0.5], 1),
        ({"switch_epoch": 10}, [5.0, 1.0, 0.1], None),
    ],
)
def test_switch_epoch_for_each_option(options, norms, expected):
    assert switch_epoch_of(SwitchRule(**options), norms) == expected


def test_attributes_follow_the_paper():
    rule = SwitchRule()
    assert (rule.epoch, rule.max_norm, rule.peak_epoch, rule.peak_value) == (0, 0.0, None, None)
    assert rule.threshold == 0.0 and not rule.switched and rule.switch_epoch is None
    expected = [  # norm, max, peak epoch, fired
        (1.0, 1.0, 1, False),
        (2.0, 2.0, 2, False),
        (3.0, 3.0, 3, False),
        (2.8, 3.0, 3, False),
        (2.6, 3.0, 3, True),
    ]
    for epoch, (norm, max_norm, peak_epoch, fired) in enumerate(expected, start=1):
        assert rule.update(norm) is fired
        assert rule.epoch == epoch
        assert rule.last_norm == norm
        assert rule.max_norm == max_norm
        assert rule.peak_epoch == peak_epoch
        assert rule.peak_value == max_norm
        assert rule.threshold == pytest.approx(0.9 * max_norm)
    assert rule.switched and rule.switch_epoch == 5
    # afterwards: False for ever, epochs still counted, the peak and threshold frozen
    for norm in (10.0, 0.1, 2.0):
        assert rule.update(norm) is False
    assert rule.epoch == 8
    assert rule.switch_epoch == 5
    assert rule.max_norm == 3.0 and rule.peak_epoch == 3
    assert rule.threshold == pytest.approx(2.7)


def test_fixed_split_still_tracks_the_peak():
    rule = SwitchRule(switch_epoch=4)
    for norm in (1.0, 3.0, 2.0):
        assert not rule.update(norm)
    assert rule.update(2.5)
    assert rule.peak_epoch == 2 and rule.peak_value == 3.0
    assert rule.switch_epoch == 4 and rule.fixed_switch_epoch == 4


def test_smoothing_values():
    rule = SwitchRule(smoothing=0.5)
    for norm, value in ((2.0, 2.0), (4.0, 3.0), (3.0, 3.0), (2.0, 2.5)):
        rule.update(norm)
        assert rule.value == pytest.approx(value)
        assert rule.last_norm == norm


@pytest.mark.parametrize(
    "options, field",
    [
        ({"tolerance": 0.0}, "tolerance"),
        ({"tolerance": 1.5}, "tolerance"),
        ({"tolerance": float("nan")}, "tolerance"),
        ({"tolerance": "0.9"}, "tolerance"),
        ({"min_epochs": -1}, "min_epochs"),
        ({"min_epochs": 2.5}, "min_epochs"),
        ({"patience": 0}, "patience"),
        ({"patience": True}, "patience"),
        ({"smoothing": 1.0}, "smoothing"),
        ({"smoothing": -0.1}, "smoothing"),
        ({"switch_epoch": 0}, "switch_epoch"),
        ({"switch_epoch": 3.0}, "switch_epoch"),
    ],
)
def test_invalid_options_name_the_field(options, field):
    with pytest.raises(ConfigError) as caught:
        SwitchRule(**options)
    assert field in caught.value.errors
    assert field in str(caught.value)


def test_several_invalid_options_are_reported_together():
    with pytest.raises(ConfigError) as caught:
        SwitchRule(tolerance=2.0, patience=0)
    assert set(caught.value.errors) == {"tolerance", "patience"}


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0, "1.0", None, [1.0]])
def test_update_refuses_bad_norms_without_advancing(bad):
    rule = SwitchRule()
    rule.update(1.0)
    with pytest.raises(ValueError, match="grad_norm"):
        rule.update(bad)
    assert rule.epoch == 1


def test_update_accepts_number_like_values():
    import numpy
    rule = SwitchRule()
    assert not rule.update(numpy.float32(2.0))
    assert rule.update(1)  # an int: 1 <= 0.9 x 2
    assert isinstance(rule.max_norm, float)


@pytest.mark.parametrize("cut", [0, 2, 4, 6])
def test_state_dict_round_trip(cut):
    norms = [1.0, 3.0, 2.5, 2.9, 2.6, 2.5, 2.0]
    options = {"patience": 2, "smoothing": 0.2, "min_epochs": 1}
    straight = SwitchRule(**options)
    expected = [straight.update(norm) for norm in norms]

    first = SwitchRule(**options)
    results = [first.update(norm) for norm in norms[:cut]]
    saved = json.loads(json.dumps(first.state_dict()))  # plain JSON
    second = SwitchRule()  # defaults; the state brings the options
    second.load_state_dict(saved)
    results += [second.update(norm) for norm in norms[cut:]]
    assert results == expected
    assert second.state_dict() == straight.state_dict()


def test_load_state_dict_validates():
    rule = SwitchRule()
    state = rule.state_dict()
    state["tolerance"] = 3.0
    with pytest.raises(ConfigError):
        rule.load_state_dict(state)
    with pytest.raises(ValueError, match="missing"):
        rule.load_state_dict({"tolerance": 0.9})


def test_switch_module_does_not_import_torch():
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('switch', r'{ROOT / 'twophase/optim/switch.py'}')\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "rule = module.SwitchRule()\n"
        "assert [rule.update(v) for v in (1.0, 2.0, 1.7)] == [False, False, True]\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_repr_lists_options():
    assert "tolerance=0.9" in repr(SwitchRule())
    assert not math.isnan(SwitchRule().threshold)


def test_config_error_keeps_its_fields_through_pickle():
    import pickle

    with pytest.raises(ConfigError) as caught:
        SwitchRule(tolerance=0.0, patience=0)
    copy = pickle.loads(pickle.dumps(caught.value))
    assert copy.errors == caught.value.errors
    assert str(copy) == str(caught.value)
    assert str(ConfigError("bad value", field="lr")) == "lr: bad value"


# ----------------------------------------------------------------------------- signals beyond the paper


def test_plateau_fires_when_the_loss_falls_less_than_threshold_per_epoch_over_the_window():
    rule = SwitchRule(signal="plateau", window=3, threshold=0.01)
    losses = [1.0, 0.5, 0.25, 0.2, 0.199, 0.198, 0.197]
    fired = [e for e, loss in enumerate(losses, start=1) if rule.update(1.0, loss=loss)]
    # epoch 7: (0.2 - 0.197) / (3 * 0.2) = 0.005 < 0.01; epoch 6: (0.25 - 0.198) / 0.75 = 0.069
    assert fired == [7] and rule.switch_epoch == 7 and rule.reads == "loss"


def test_plateau_needs_a_full_window_and_obeys_patience_and_min_epochs():
    flat = [1.0] * 6
    rule = SwitchRule(signal="plateau", window=3)
    assert [e for e, v in enumerate(flat, 1) if rule.update(1.0, loss=v)] == [4]
    rule = SwitchRule(signal="plateau", window=2, patience=2, min_epochs=5)
    assert [e for e, v in enumerate(flat, 1) if rule.update(1.0, loss=v)] == [5]


def test_curvature_fires_on_the_first_probe_epoch_at_or_above_minus_epsilon():
    rule = SwitchRule(signal="curvature", epsilon=1e-3, probe_every=2)
    assert [rule.probe_due(e) for e in (1, 2, 3, 4)] == [False, True, False, True]
    assert not rule.update(1.0, curvature=-0.08)   # epoch 1
    assert not rule.update(1.0)                    # epoch 2: no probe this epoch, nothing counted
    assert not rule.update(1.0, curvature=-0.002)  # epoch 3
    assert rule.update(1.0, curvature=-2e-5)       # epoch 4
    assert rule.switch_epoch == 4 and rule.last_curvature == -2e-5 and rule.reads == "curvature"
    assert not rule.probe_due(6)  # switched: no more probes


def test_trial_is_due_every_trial_every_epochs_and_the_engine_decides():
    rule = SwitchRule(signal="trial", trial_every=3, min_epochs=4)
    due = []
    for epoch in range(1, 10):
        assert not rule.update(1.0)
        due.append(rule.trial_due)
        if epoch == 6:
            rule.reject_trial()
    assert [e for e, d in enumerate(due, 1) if d] == [6, 9]
    rule.accept_trial()
    assert rule.switched and rule.switch_epoch == 9 and rule.trials == 2 and not rule.trial_due


def test_signal_options_are_checked_and_survive_state_dict():
    for bad in (dict(signal="loss"), dict(window=0), dict(threshold=-1), dict(epsilon=float("nan")),
                dict(probe_every=0), dict(trial_passes=0)):
        with pytest.raises(ConfigError) as info:
            SwitchRule(**bad)
        assert set(info.value.errors) == set(bad)
    rule = SwitchRule(signal="plateau", window=2)
    for loss in (1.0, 0.9, 0.85):
        rule.update(1.0, loss=loss)
    again = SwitchRule()
    again.load_state_dict(json.loads(json.dumps(rule.state_dict())))
    assert again.state_dict() == rule.state_dict() and again.signal == "plateau" and again.losses == [1.0, 0.9, 0.85]
    old = SwitchRule().state_dict()  # a state saved before the signals existed still loads
    for key in ("signal", "window", "plateau_threshold", "epsilon", "probe_every", "trial_every", "trial_passes",
                "losses", "last_curvature", "signal_below", "trials"):
        old.pop(key)
    SwitchRule().load_state_dict(old)


def test_a_huge_norm_is_a_value_error_not_an_overflow():
    with pytest.raises(ValueError, match="finite number"):
        SwitchRule().update(10 ** 400)
