"""RunConfig: one validate() for every field; exact dict round trip; unknown keys refused."""

import math

import pytest

from twophase.config import RunConfig
from twophase.errors import ConfigError


def test_defaults_validate_and_round_trip():
    cfg = RunConfig()
    cfg.validate()
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    custom = RunConfig(model="vit-mlp", arms=["adam", "cg"], switch_epoch=3, model_sizes={"embed_dim": 32},
                       subset=None, tolerance=0.8)
    assert RunConfig.from_dict(custom.to_dict()) == custom


def test_unknown_keys_are_errors():
    with pytest.raises(ConfigError) as info:
        RunConfig.from_dict({"model": "mlp", "learning_rate": 0.1})
    assert "learning_rate" in info.value.errors


@pytest.mark.parametrize("field, value, needle", [
    ("tolerance", 0.0, "(0, 1]"), ("tolerance", 1.01, "(0, 1]"), ("tolerance", math.nan, "finite"),
    ("epochs", 0, "from 1"), ("epochs", -5, "from 1"), ("epochs", 2.5, "whole number"),
    ("batch_size", "512", "whole number"), ("lr", -1e-3, "(0"), ("lr", math.inf, "finite"),
    ("model", "resnet", "vit-mlp"), ("dataset", "imagenet", "mnist"), ("loss", "hinge", "mse"),
    ("arms", [], "at least one"), ("arms", ["adam", "sgd"], "sgd"), ("cg_beta", "dy", "pr+"),
    ("line_search", "armijo", "golden"), ("cg_dtype", "float16", "float64"), ("device", "tpu", "cuda"),
    ("subset", 10**6, "60000"), ("subset", 0, "from 1"), ("switch_epoch", 500, "at most epochs"),
    ("patience", 0, "from 1"), ("smoothing", 1.0, "[0, 1)"), ("model_sizes", {"depth2": 3}, "allowed sizes"),
])
def test_each_bad_field_is_named_with_its_allowed_values(field, value, needle):
    with pytest.raises(ConfigError) as info:
        RunConfig(**{field: value}).validate()
    assert field in info.value.errors
    assert needle in info.value.errors[field]
    assert field in str(info.value)


def test_all_bad_fields_are_reported_at_once():
    with pytest.raises(ConfigError) as info:
        RunConfig(tolerance=2, epochs=0, model="x").validate()
    assert {"tolerance", "epochs", "model"} <= set(info.value.errors)


def test_model_that_cannot_be_built_is_refused():
    with pytest.raises(ConfigError) as info:
        RunConfig(model="vit-mlp", model_sizes={"embed_dim": 30, "heads": 4}).validate()
    assert "model_sizes" in info.value.errors


def test_a_config_written_before_a_rename_still_reads():
    from twophase.config import RunConfig

    old = RunConfig().to_dict()
    old["cg_iters_per_epoch"] = old.pop("full_batch_iters")
    old["cg_iters_per_epoch"] = 3
    assert RunConfig.from_dict(old).full_batch_iters == 3


def test_threads_auto_takes_the_free_cores_and_leaves_one_for_the_page_in_the_app(monkeypatch, tmp_path):
    import pytest

    from twophase import settings
    from twophase.config import RunConfig
    from twophase.errors import ConfigError

    assert RunConfig().threads == "auto"
    RunConfig(threads="auto").validate()
    RunConfig(threads=3).validate()
    with pytest.raises(ConfigError) as info:
        RunConfig(threads="fast").validate()
    assert "'auto'" in info.value.errors["threads"]
    monkeypatch.setattr(settings.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    # the run queue at this instant (/proc/loadavg's fourth field counts the looking process too),
    # not the 1-minute load average, which lags and counts this process's own recent work
    loadavg = tmp_path / "loadavg"
    monkeypatch.setattr(settings, "LOADAVG", str(loadavg))
    monkeypatch.setattr(settings.os, "getloadavg", lambda: (1.9, 1.9, 1.9))  # a busy minute just ended
    loadavg.write_text("1.90 1.90 1.90 1/120 4242\n")  # only this process runs now
    assert settings.threads_for("auto") == (2, "auto: 2 of 2 cores (free cores, 0 busy now)")  # the CLI
    assert settings.threads_for("auto", for_app=True)[0] == 1  # the app: one left for the page
    loadavg.write_text("0.10 0.10 0.10 2/120 4242\n")  # one other task runs now
    assert settings.threads_for("auto")[0] == 1  # a busy core is not taken
    loadavg.write_text("0.10 0.10 0.10 5/120 4242\n")
    assert settings.threads_for("auto")[0] == 1  # never fewer than one
    loadavg.unlink()  # no /proc: the load average
    assert settings.threads_for("auto")[0] == 1
    monkeypatch.setattr(settings.os, "getloadavg", lambda: (0.1, 0.0, 0.0))
    assert settings.threads_for("auto")[0] == 2
    assert settings.threads_for(4) == (4, "4 (set)")
