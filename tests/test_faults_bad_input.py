"""Fault class 1, bad input: every config field at and beyond its limits, through the Python
API, the command line and the app. A bad value is refused with a message naming the field
(or flag, or widget) and what it allows; nothing is written or started.

Already covered elsewhere (not repeated here): one refusal per field with its allowed values
(tests/test_config.py::test_each_bad_field_is_named_with_its_allowed_values), all bad fields at
once, unknown keys, a model that cannot be built (test_config.py); malformed flags
(tests/test_cli.py::test_malformed_and_unknown_values_exit_2_naming_the_flag,
test_bad_tolerance_exits_2_naming_the_flag); a too-large subset and no arm in the app
(tests/test_app_pages.py::test_bad_value_shows_the_error_next_to_start_and_starts_nothing).
This module adds the boundaries (the limit itself accepted, one step beyond refused), wrong
types, the CLI's config file, more app widgets, and a property test over random configs.
"""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from twophase import runs
from twophase.cli import main
from twophase.config import ARMS, LIMITS, RunConfig, field_names
from twophase.errors import ConfigError

from test_app_pages import new_app, set_tiny, status_of


def refused(**fields) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        RunConfig(**fields).validate()
    return info.value


# ---------------------------------------------------------------------------------- the API

# (field, value at the limit: accepted, value just beyond: refused)
INT_BOUNDARIES = [(name, lo, lo - 1) for name, (lo, hi) in LIMITS.items()] + \
                 [(name, hi, hi + 1) for name, (lo, hi) in LIMITS.items()]
REAL_BOUNDARIES = [
    ("lr", 10.0, 10.000001), ("lr", 1e-12, 0.0), ("lr", 1e-12, -1e-3),
    ("tolerance", 1.0, 1.0 + 1e-9), ("tolerance", 1e-9, 0.0), ("tolerance", 0.5, -0.5),
    ("beta1", 0.0, -1e-9), ("beta1", 0.999999, 1.0), ("beta2", 0.0, 1.0),
    ("eps", 1.0, 1.5), ("eps", 1e-30, 0.0), ("weight_decay", 0.0, -1e-9), ("weight_decay", 10.0, 10.5),
    ("smoothing", 0.0, -0.1), ("smoothing", 0.95, 1.0), ("cg_c2", 0.9999, 1.0), ("cg_c2", 2e-4, 1e-4),
]


@pytest.mark.parametrize("field, at_limit, beyond", INT_BOUNDARIES + REAL_BOUNDARIES,
                         ids=[f"{b[0]}={b[2]!r}" for b in INT_BOUNDARIES + REAL_BOUNDARIES])
def test_api_each_limit_is_accepted_and_one_step_beyond_is_refused(field, at_limit, beyond):
    # epochs is the upper bound of min_epochs/switch_epoch, subset the lower bound of processes
    extra = {"processes": {"subset": 2048}, "min_epochs": {"epochs": 100000}}.get(field, {})
    RunConfig(**{field: at_limit}, **extra).validate()
    error = refused(**{field: beyond}, **extra)
    assert set(error.errors) == {field}
    assert f"got {beyond}" in error.errors[field]


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, "0.9", None, True, [0.9], {"x": 1}])
@pytest.mark.parametrize("field", ["lr", "tolerance", "beta1", "eps", "smoothing", "cg_c2", "weight_decay"])
def test_api_real_fields_refuse_nan_infinity_and_wrong_types(field, value):
    error = refused(**{field: value})
    assert set(error.errors) == {field} and "finite number" in error.errors[field]


@pytest.mark.parametrize("value", [2.0, 2.5, "3", None, True, math.nan, [3]])
@pytest.mark.parametrize("field", sorted(LIMITS) + ["seed"])
def test_api_whole_number_fields_refuse_fractions_text_none_and_booleans(field, value):
    error = refused(**{field: value})
    assert field in error.errors and "whole number" in error.errors[field]


@pytest.mark.parametrize("field", ["model", "dataset", "loss", "cg_beta", "line_search", "cg_dtype",
                                   "grad_norm_mode", "device"])
@pytest.mark.parametrize("value", ["", " ", "MLP", None, 3, ["mlp"]])  # names are case-sensitive
def test_api_names_refuse_empty_unknown_and_wrong_types(field, value):
    error = refused(**{field: value})
    assert field in error.errors and "allowed:" in error.errors[field]


@pytest.mark.parametrize("arms, needle", [
    ([], "at least one"), ("two-phase", "at least one"), (None, "at least one"), (["adam", "adam"], "once"),
    (["adam", "sgd"], "'sgd'"), ([""], "allowed"), ([None], "allowed"), ([["adam"]], "allowed"),
])
def test_api_arms_refuse_empty_duplicates_unknown_and_wrong_types(arms, needle):
    error = refused(arms=arms)
    assert set(error.errors) == {"arms"} and needle in error.errors["arms"]


@pytest.mark.parametrize("dataset, field, size", [
    ("mnist", "subset", 60000), ("mnist", "val_subset", 10000),
    ("cifar10", "subset", 50000), ("cifar100", "val_subset", 10000),
])
def test_api_subset_up_to_the_dataset_size_is_accepted_and_larger_is_refused(dataset, field, size):
    model = "mlp"
    RunConfig(dataset=dataset, model=model, **{field: size}).validate()  # no data files needed to validate
    error = refused(dataset=dataset, model=model, **{field: size + 1})
    assert set(error.errors) == {field}
    assert f"larger than the {dataset}" in error.errors[field] and str(size) in error.errors[field]


def test_api_embedding_not_divisible_by_heads_names_the_divisors():
    RunConfig(model="vit-mlp", model_sizes={"embed_dim": 32, "heads": 4}).validate()
    error = refused(model="vit-mlp", model_sizes={"embed_dim": 30, "heads": 4})
    assert set(error.errors) == {"model_sizes"}
    assert "not divisible by heads 4" in error.errors["model_sizes"] and "1, 2, 3, 5, 6, 10, 15, 30" in \
        error.errors["model_sizes"]


@pytest.mark.parametrize("sizes, needle", [
    ({"width": 0}, "width"), ({"width": -3}, "width"), ({"width": "64"}, "width"), ({"width": 2.5}, "width"),
    ({"width": None}, "width"), ({"width": math.nan}, "width"), ({"height": 3}, "allowed sizes"),
])
def test_api_model_sizes_refuse_non_positive_wrong_types_and_unknown_names(sizes, needle):
    error = refused(model="mlp", model_sizes=sizes)
    assert set(error.errors) == {"model_sizes"} and needle in error.errors["model_sizes"]


def test_api_switch_epoch_beyond_the_epochs_and_more_processes_than_samples_are_refused():
    RunConfig(epochs=10, switch_epoch=10).validate()
    assert "at most epochs (10)" in refused(epochs=10, switch_epoch=11).errors["switch_epoch"]
    RunConfig(subset=4, processes=4).validate()
    assert "at least processes" in refused(subset=3, processes=4).errors["processes"]


def test_api_text_fields_accept_empty_and_refuse_overlong_or_non_text():
    RunConfig(name="", tag="", data_root="").validate()
    RunConfig(name="x" * 200).validate()
    assert "200" in refused(name="x" * 201).errors["name"]
    for field in ("name", "tag", "data_root"):
        assert "text" in refused(**{field: 5}).errors[field]
    assert "true or false" in refused(hessian_probe="yes").errors["hessian_probe"]


def test_api_job_manager_refuses_a_bad_config_before_writing_anything(tmp_path):
    from twophase.jobs import JobManager

    jobs = JobManager(str(tmp_path))
    for bad in (dict(epochs=0), dict(tolerance=math.nan), dict(model="vit-mlp", model_sizes={"embed_dim": 30})):
        with pytest.raises(ConfigError):
            jobs.submit(RunConfig(**bad))
    assert jobs.list() == [] and runs.list_runs(tmp_path) == []


def test_api_integer_too_large_for_a_float_is_a_config_error():
    assert "lr" in refused(lr=10**400).errors


def test_api_model_size_name_that_is_not_text_is_a_config_error():
    assert "model_sizes" in refused(model_sizes={1: 2}).errors


def test_api_from_dict_with_unknown_keys_of_mixed_types_is_a_config_error():
    with pytest.raises(ConfigError):
        RunConfig.from_dict({1: 2, "learning_rate": 3})


def test_api_model_too_large_to_fit_in_memory_is_refused():
    assert "model_sizes" in refused(model="mlp", model_sizes={"width": 10**7}).errors


# ------------------------------------------------------------------ property: never another error

SIZE_NAMES = ["width", "depth", "heads", "embed_dim", "mlp_dim", "patch", "pool", "widths", "hidden"]
ANY_VALUE = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-10, max_value=10**6), st.integers(),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6),
    st.sampled_from(["mlp", "vit-mlp", "mnist", "cifar10", "mse", "pr+", "golden", "float64", "full", "cpu"]),
    st.lists(st.sampled_from(list(ARMS) + ["sgd", ""]), max_size=5),
)
SIZES = st.dictionaries(st.sampled_from(SIZE_NAMES), st.one_of(st.integers(-2, 300), st.floats(), st.text(max_size=3),
                                                                st.none(), st.lists(st.integers(1, 8), max_size=4)),
                        max_size=4)
CONFIGS = st.fixed_dictionaries({}, optional={**{name: ANY_VALUE for name in field_names()}, "model_sizes": SIZES})


def validate_or_config_error(values: dict) -> None:
    try:
        RunConfig.from_dict(values)
    except ConfigError as exc:
        assert exc.errors and all(isinstance(k, str) and isinstance(v, str) for k, v in exc.errors.items())


@settings(max_examples=250, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(CONFIGS)
def test_property_random_configs_are_accepted_or_refused_with_config_error(values):
    validate_or_config_error(values)


@settings(max_examples=100, deadline=None, derandomize=True, database=None, phases=[Phase.generate],
          suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(
    CONFIGS,
    st.fixed_dictionaries({"lr": st.integers(min_value=2**1024, max_value=2**1100)}),
    st.fixed_dictionaries({"model_sizes": st.dictionaries(st.integers(), st.integers(), min_size=1, max_size=2)}),
    st.dictionaries(st.one_of(st.integers(), st.text(max_size=4)), ANY_VALUE, min_size=2, max_size=4),
))
def test_property_including_huge_integers_and_non_text_keys(values):
    validate_or_config_error(values)


# ---------------------------------------------------------------------------------- the CLI

@pytest.mark.parametrize("args, flag, needle", [
    (["--tolerance", "0"], "--tolerance", "(0, 1]"), (["--tolerance", "1.0000001"], "--tolerance", "(0, 1]"),
    (["--epochs", "0"], "--epochs", "from 1"), (["--epochs", "100001"], "--epochs", "100000"),
    (["--lr", "inf"], "--lr", "finite"), (["--lr", "1e400"], "--lr", "finite"), (["--lr", "0"], "--lr", "(0"),
    (["--subset", "60001"], "--subset", "60000"), (["--subset", "-5"], "--subset", "from 1"),
    (["--val-subset", "0"], "--val-subset", "from 1"), (["--arms", ""], "--arms", "at least one"),
    (["--arms", "adam,adam"], "--arms", "once"), (["--seed", "-1"], "--seed", "from 0"),
    (["--epochs", "10", "--switch-epoch", "11"], "--switch-epoch", "at most epochs"),
    (["--model", "vit-mlp", "--model-sizes", "embed_dim=30,heads=4"], "--model-sizes", "divisible"),
    (["--model-sizes", "width=-1"], "--model-sizes", "width"), (["--dataset", ""], "--dataset", "mnist"),
    (["--name", "x" * 201], "--name", "200"), (["--threads", "-1"], "--threads", "from 0"),
    (["--cg-c2", "1"], "--cg-c2", "(0.0001, 1)"),
])
def test_cli_values_at_and_beyond_the_limits_exit_2_naming_the_flag(tmp_path, capsys, args, flag, needle):
    assert main(["run", *args, "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"error: {flag}:" in err and needle in err and "Traceback" not in err
    assert runs.list_runs(tmp_path) == []


def test_cli_config_file_with_bad_values_unknown_keys_or_invalid_json_exits_2(tmp_path, capsys):
    cases = {"bad.json": json.dumps({"tolerance": 2, "epochs": 0}), "unknown.json": json.dumps({"learning_rate": 1}),
             "broken.json": "{\"epochs\": ", "missing.json": None}
    for name, text in cases.items():
        path = tmp_path / name
        if text is not None:
            path.write_text(text)
        assert main(["run", "--config", str(path), "--runs-dir", str(tmp_path / "runs")]) == 2, name
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "Traceback" not in err, (name, err)
    err_bad = {"bad.json": ("--tolerance", "--epochs"), "unknown.json": ("learning_rate",)}
    for name, needles in err_bad.items():
        main(["run", "--config", str(tmp_path / name), "--runs-dir", str(tmp_path / "runs")])
        err = capsys.readouterr().err
        assert all(n in err for n in needles), err
    assert runs.list_runs(tmp_path / "runs") == []


def test_cli_config_file_that_is_not_a_json_object_exits_2(tmp_path, capsys):
    path = tmp_path / "list.json"
    path.write_text("[1, 2]")
    assert main(["run", "--config", str(path), "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "config" in err and "Traceback" not in err


# ----------------------------------------------------------------------------------- the app

def test_ui_values_beyond_the_limits_are_named_next_to_start_and_nothing_starts(runs_dir):
    at = new_app()
    set_tiny(at)
    at.text_input(key="cfg_lr").set_value("0.0")
    at.text_input(key="cfg_epochs").set_value("200000")
    at.text_input(key="cfg_batch_size").set_value("2000000")
    at.text_input(key="cfg_switch_epoch").set_value("300000")
    at.text_input(key="cfg_val_subset").set_value("10001")
    at.text_input(key="cfg_threads").set_value("5000")
    at.text_input(key="cfg_name").input("n" * 250)
    at.button(key="start").click().run()
    assert not at.exception, [e.value for e in at.exception]
    (message,) = [e.value for e in at.error]
    assert message.startswith("Nothing was started")
    # the boxes take what is typed: every value beyond RunConfig's limits is named, with the limits
    for label, field in [("Learning rate", "lr"), ("Epochs", "epochs"), ("Batch size", "batch_size"),
                         ("Fixed switch epoch", "switch_epoch"), ("Validation samples", "val_subset"),
                         ("CPU threads", "threads"), ("Run name", "name")]:
        assert f"**{label}** (`{field}`)" in message, (label, message)
    assert "from 1 to 100000, got 200000" in message and "from 0 to 1024, got 5000" in message, message
    assert "run" not in at.query_params and status_of(at) is None
    assert runs.list_runs(runs_dir) == []

    # fixed values start a run at once: a refusal leaves nothing behind that blocks the next Start
    set_tiny(at)
    at.text_input(key="cfg_lr").set_value("0.001")
    at.text_input(key="cfg_switch_epoch").set_value("")
    at.text_input(key="cfg_threads").set_value("1")
    at.text_input(key="cfg_name").input("ok")
    at.text_input(key="cfg_val_subset").set_value("256")
    at.button(key="start").click().run()
    assert not at.error, [e.value for e in at.error]
    run_id = at.query_params["run"]
    st_jobs = at.session_state["jobs"]
    assert st_jobs.wait(run_id, 120) == "completed"
