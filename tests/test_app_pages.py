"""Every page of the Streamlit app, driven in-process with streamlit.testing.v1.AppTest."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from twophase import runs

from conftest import ROOT, tiny_settings

APP = str(ROOT / "app.py")
TIMEOUT = 60  # seconds per script run (the first one imports torch and builds models)


def new_app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def status_of(at: AppTest) -> str | None:
    """The stable status word of the run shown on the Train page."""
    for md in at.markdown:
        if "tp-status-" in md.value:
            return md.value.split("tp-status-")[1].split('"')[0]
    return None


def plotly_specs(at: AppTest) -> list[dict]:
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def chart(at: AppTest, title: str) -> dict:
    for spec in plotly_specs(at):
        if spec["layout"].get("title", {}).get("text") == title:
            return spec
    raise AssertionError(f"no chart titled {title!r}")


def values(array) -> list:
    """A plotly JSON array: a plain list, or plotly's typed-array form {"dtype", "bdata"}."""
    if isinstance(array, dict) and "bdata" in array:
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=np.dtype(array["dtype"])).tolist()
    return list(array)


def table_with(at: AppTest, *columns: str):
    """The first dataframe shown whose columns include `columns`."""
    for df in at.dataframe:
        value = df.value
        if all(c in value.columns for c in columns):
            return value
    raise AssertionError(f"no table with columns {columns}")


def set_tiny(at: AppTest, **extra) -> None:
    """Fill the Train page's widgets with the tiny run."""
    s = dict(tiny_settings(), **extra)
    at.selectbox(key="cfg_dataset").set_value(s["dataset"])
    at.selectbox(key="cfg_model").set_value(s["model"])
    at.text_input(key="cfg_subset").set_value(str(s["subset"]))
    at.text_input(key="cfg_val_subset").set_value(str(s["val_subset"]))
    at.text_input(key="cfg_epochs").set_value(str(s["epochs"]))
    at.text_input(key="cfg_batch_size").set_value(str(s["batch_size"]))
    if "switch_epoch" in s:
        at.text_input(key="cfg_switch_epoch").set_value(str(s["switch_epoch"]))
    for arm in ("two-phase", "adam", "adam-lbfgs", "cg"):
        at.checkbox(key=f"cfg_arm_{arm}").set_value(arm in s["arms"])


def wait_final(at: AppTest, timeout: float = 120) -> str:
    deadline = time.time() + timeout
    while True:
        status = status_of(at)
        if status in runs.FINAL_STATUSES:
            return status
        assert time.time() < deadline, f"run still {status} after {timeout} s"
        time.sleep(0.5)
        at.run()
        assert not at.exception, [e.value for e in at.exception]


def test_train_page_loads_with_the_config_defaults(runs_dir):
    from twophase.config import RunConfig

    at = new_app()
    d = RunConfig()
    assert at.title[0].value.startswith("Two-phase training")
    assert at.slider(key="cfg_tolerance").value == pytest.approx(d.tolerance)
    assert at.text_input(key="cfg_epochs").value == str(d.epochs)
    assert at.text_input(key="cfg_batch_size").value == str(d.batch_size)
    assert at.selectbox(key="cfg_model").value == d.model
    assert at.selectbox(key="cfg_dataset").value == d.dataset
    assert [a for a in ("two-phase", "adam", "adam-lbfgs", "cg") if at.checkbox(key=f"cfg_arm_{a}").value] == d.arms
    # the model's parameter count is under the box, for the chosen dataset (not in the list's labels,
    # which must not change with the dataset: Streamlit would lose the choice)
    assert any(c.value.endswith(" parameters on mnist") for c in at.sidebar.caption), [c.value for c in at.sidebar.caption]
    assert at.selectbox(key="cfg_model").format_func(d.model) == d.model
    assert at.button(key="start")
    assert status_of(at) is None  # nothing followed yet


def test_extra_switch_points_train_branches_from_the_same_trunk(runs_dir):
    at = new_app()
    set_tiny(at, arms=["adam"], epochs=4)
    at.text_input(key="cfg_switch_points").set_value("1, 50%, paper")
    at.button(key="start").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    run_id = at.query_params["run"]
    assert wait_final(at) == "completed"
    run = runs.load_run(runs_dir, run_id)
    assert run.config["arms"] == ["adam", "two-phase@1", "two-phase@50%", "two-phase@paper"]
    assert run.summary["arms"]["two-phase@50%"]["switch_epoch"] == 2
    grad = chart(at, "Gradient norm")
    names = [t["name"] for t in grad["data"] if (t.get("meta") or {}).get("role") == "grad_norm"]
    assert "two-phase (switch at 1)" in names and "two-phase (switch at 50%)" in names
    ratios = table_with(at, "label", "epoch ratio")
    assert len(ratios) == 3
    # a bad point is refused up front, naming the field
    at.text_input(key="cfg_switch_points").set_value("3, soon")
    at.button(key="start").click().run()
    assert any("Extra switch points" in e.value for e in at.error)
    assert at.query_params["run"] == run_id


def test_paper_rule_button_puts_the_switch_rule_back_in_one_click(runs_dir):
    from twophase.config import PAPER_RULE, RunConfig

    d = RunConfig()  # the default is the paper's rule (chosen from the switch_rule benchmark)
    assert {k: getattr(d, k) for k in PAPER_RULE} == PAPER_RULE
    at = new_app()
    at.slider(key="cfg_tolerance").set_value(0.7)
    at.text_input(key="cfg_min_epochs").set_value("3")
    at.text_input(key="cfg_patience").set_value("2")
    at.slider(key="cfg_smoothing").set_value(0.5)
    at.text_input(key="cfg_switch_epoch").set_value("4")
    at.run()
    assert at.slider(key="cfg_tolerance").value == pytest.approx(0.7)
    at.button(key="cfg_paper_rule").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.slider(key="cfg_tolerance").value == pytest.approx(0.9)
    assert at.text_input(key="cfg_min_epochs").value == "0"
    assert at.text_input(key="cfg_patience").value == "1"
    assert at.slider(key="cfg_smoothing").value == pytest.approx(0.0)
    assert at.text_input(key="cfg_switch_epoch").value == ""


def test_train_page_runs_a_tiny_config_to_completed_with_charts(runs_dir):
    at = new_app()
    set_tiny(at, switch_epoch=2)
    at.button(key="start").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    run_id = at.query_params["run"]
    assert runs.is_valid_run_id(run_id)
    assert status_of(at) in ("queued", "running", "completed")
    assert wait_final(at) == "completed"

    titles = {spec["layout"]["title"]["text"] for spec in plotly_specs(at)}
    assert titles == {"Gradient norm", "Loss", "Accuracy", "Gradient norm against loss"}
    grad = chart(at, "Gradient norm")
    roles = [(t.get("meta") or {}).get("role") for t in grad["data"]]
    assert roles.count("grad_norm") == 2
    # a fixed switch: the marker says so; no threshold and no reference norm, since no norm decided it
    assert "switch" in roles and "peak" not in roles and "threshold" not in roles
    assert any("fixed" in (t.get("name") or "") for t in grad["data"] if (t.get("meta") or {}).get("role") == "switch")
    assert any(s.get("x0") == 2 and s.get("x0") == s.get("x1") for s in grad["layout"].get("shapes", []))
    assert chart(at, "Loss")["layout"]["yaxis"]["type"] == "log"
    assert chart(at, "Gradient norm against loss")["layout"]["xaxis"]["autorange"] == "reversed"
    # the final table per arm and the ratio two-phase / Adam at equal epochs, passes and time
    final = table_with(at, "arm", "switch_epoch")
    assert list(final["arm"]) == ["two-phase", "adam"]
    assert list(final["name"]) == ["two-phase (switched at 2)", "Adam"]
    assert list(final["epochs"]) == [3, 3]
    ratios = table_with(at, "label", "epoch ratio", "data_passes ratio", "seconds ratio")
    assert list(ratios["label"]) == ["two-phase (switched at 2)"] and list(ratios["epoch at"]) == [3]
    metrics = runs.load_run(runs_dir, run_id).metrics.set_index(["arm", "epoch"])
    assert ratios["epoch ratio"][0] == pytest.approx(metrics.loc[("two-phase", 3), "train_loss"]
                                                     / metrics.loc[("adam", 3), "train_loss"])
    # the run is on disk, completed
    assert runs.load_run(runs_dir, run_id).status == "completed"

    # the x-axis switch redraws on the cost axis
    at.radio(key="x_axis").set_value("data_passes").run()
    assert chart(at, "Gradient norm")["layout"]["xaxis"]["title"]["text"] == "data passes (cost)"

    # a fresh session with ?run=<id> re-attaches (a browser refresh)
    again = AppTest.from_file(APP, default_timeout=TIMEOUT)
    again.query_params["run"] = run_id
    again.run()
    assert not again.exception
    assert status_of(again) == "completed"
    assert len(plotly_specs(again)) == 4


def test_stop_button_stops_a_running_run(runs_dir):
    at = new_app()
    set_tiny(at, epochs=500, subset=2048, batch_size=32)
    at.button(key="start").click().run()
    deadline = time.time() + 60
    while status_of(at) != "running":
        assert time.time() < deadline, status_of(at)
        time.sleep(0.3)
        at.run()
    at.button(key="stop").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert wait_final(at, timeout=60) == "stopped"
    run = runs.load_run(runs_dir, at.query_params["run"])
    assert run.status == "stopped"
    assert run.metrics["epoch"].max() < 500


def test_diverged_arm_is_shown_as_diverged_with_its_curve_up_to_then(runs_dir, data_root):
    from twophase.config import RunConfig
    from twophase.training.run import run_experiment

    # An absurd learning rate blows Adam up; the CG-only arm ignores lr and finishes.
    cfg = RunConfig(**dict(tiny_settings(), arms=["adam", "cg"], lr=10.0, loss="cross-entropy", batch_size=16,
                           model_sizes={"depth": 4, "width": 128}))
    summary = run_experiment(cfg, str(runs_dir))
    if summary["arms"]["adam"]["status"] != "diverged":
        pytest.fail(f"the set-up should make Adam diverge; got {summary['arms']['adam']}")
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["run"] = summary["run_id"]
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert status_of(at) == "diverged"
    final = table_with(at, "arm", "status")
    assert dict(zip(final["arm"], final["status"])) == {"adam": "diverged", "cg": "completed"}
    loss = chart(at, "Loss")
    marks = [t for t in loss["data"] if (t.get("meta") or {}).get("role") == "diverged"]
    assert [m["meta"]["arm"] for m in marks] == ["adam"]
    diverged_at = next(e["epoch"] for e in runs.load_run(runs_dir, summary["run_id"]).events
                       if e["kind"] == "diverged")
    (adam_train,) = [t for t in loss["data"] if t.get("meta") == {"role": "train_loss", "arm": "adam"}]
    assert max(values(adam_train["x"])) == diverged_at  # the curve stops at the divergence epoch
    assert any("epoch" in p.text and "diverged" in p.text for p in at.get("progress"))


def test_bad_value_shows_the_error_next_to_start_and_starts_nothing(runs_dir):
    at = new_app()
    set_tiny(at)
    at.text_input(key="cfg_subset").set_value("10000000")  # larger than MNIST's training set
    at.button(key="start").click().run()
    assert not at.exception
    messages = " ".join(e.value for e in at.error)
    assert "Nothing was started" in messages and "Training samples" in messages and "subset" in messages
    assert "run" not in at.query_params
    assert runs.list_runs(runs_dir) == []
    assert status_of(at) is None

    # no arm at all is refused too
    set_tiny(at, arms=[])
    at.button(key="start").click().run()
    assert "Arms" in " ".join(e.value for e in at.error)
    assert runs.list_runs(runs_dir) == []


def test_missing_dataset_is_refused_up_front_with_the_loaders_message(runs_dir, tmp_path):
    at = new_app()
    set_tiny(at, dataset="cifar10", subset=64, val_subset=64, epochs=1)
    at.run()
    at.button(key="start").click().run()
    assert not at.exception
    messages = " ".join(e.value for e in at.error)
    assert "cifar" in messages.lower() and "Traceback" not in messages
    assert "run" not in at.query_params and runs.list_runs(runs_dir) == []  # nothing started, nothing left


def test_unknown_run_in_the_address_is_reported(runs_dir):
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["run"] = "../../etc"
    at.run()
    assert not at.exception
    assert any("not a valid run id" in w.value for w in at.warning)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["run"] = "20200101-000000-abcdef"
    at.run()
    assert not at.exception
    assert any("20200101-000000-abcdef" in w.value for w in at.warning)


def test_compare_page_without_runs(runs_dir):
    at = new_app()
    at.switch_page("pages/compare.py").run()
    assert not at.exception
    assert at.title[0].value == "Compare runs"
    assert "No finished runs" in at.info[0].value


def test_compare_page_overlays_a_finished_run(finished_runs):
    at = new_app()
    at.switch_page("pages/compare.py").run()
    assert not at.exception, [e.value for e in at.exception]
    (run_id,) = at.multiselect(key="cmp_runs").value
    specs = plotly_specs(at)
    assert len(specs) == 1
    names = [t["name"] for t in specs[0]["data"]]
    assert len(names) == 2 and any("two-phase" in n for n in names) and any("Adam" in n for n in names)
    assert specs[0]["layout"]["yaxis"]["type"] == "log"
    final = table_with(at, "run", "arm")
    assert set(final["arm"]) == {"two-phase", "adam"}
    # only the Adam arm, smoothed, on the wall-time axis
    at.multiselect(key="cmp_arms").set_value(["adam"])
    at.slider(key="cmp_smoothing").set_value(0.5)
    at.radio(key="cmp_x").set_value("seconds").run()
    assert not at.exception
    spec = plotly_specs(at)[0]
    lines = [t for t in spec["data"] if not t["meta"].get("raw")]  # smoothed: the raw curve faint behind
    assert len(lines) == 1 and len(spec["data"]) == 2 and spec["layout"]["xaxis"]["title"]["text"] == "wall time (s)"
    downloads = at.get("download_button")
    assert len(downloads) == 3


def test_compare_page_shows_config_differences_and_paper_figures(finished_runs):
    # a second run: the same one renamed, claimed as vit-mlp so the paper's row applies
    (src,) = [p for p in finished_runs.iterdir()]
    other = finished_runs / "20200101-000000-abcdef"
    import shutil

    shutil.copytree(src, other)
    cfg = json.loads((other / "config.json").read_text())
    cfg.update(name="other", model="vit-mlp", lr=0.01)
    (other / "config.json").write_text(json.dumps(cfg))
    at = new_app()
    at.switch_page("pages/compare.py").run()
    at.multiselect(key="cmp_runs").set_value([src.name, other.name]).run()
    assert not at.exception, [e.value for e in at.exception]
    (diff,) = [df.value for df in at.dataframe if set(df.value.columns) == {"tiny", "other"}]
    assert set(diff.index) == {"lr", "model", "name"}
    # defect 15: the legend names each run by its name and the settings it differs in (not a run-id
    # fragment told apart by its dash); the switch epoch is among the first columns, not cut off
    names = {t["name"] for t in plotly_specs(at)[0]["data"]}
    base_lr = json.loads((src / "config.json").read_text())["lr"]
    assert f"other (lr 0.01, model vit-mlp) · Adam" in names and f"tiny (lr {base_lr}, model mlp) · Adam" in names
    final = table_with(at, "run", "arm")
    assert list(final.columns[:4]) == ["run", "arm", "status", "switch_epoch"]
    published = table_with(at, "algorithm")
    assert set(published["model"]) == {"vit-mlp"} and set(published["dataset"]) == {"mnist"}
    at.toggle(key="cmp_paper").set_value(True).run()
    spec = plotly_specs(at)[0]
    assert any(s.get("y0") == 0.0008 for s in spec["layout"].get("shapes", []))
    # defect: with the paper's lines on, a metric the paper has no figure for (the gradient norm)
    # once filled the page with KeyError: 'grad_norm'; now it simply draws no paper line
    at.selectbox(key="cmp_metric").set_value("grad_norm").run()
    assert not at.exception, [e.value for e in at.exception]
    assert not plotly_specs(at)[0]["layout"].get("shapes")


def test_compare_downloads_carry_each_runs_settings(finished_runs):
    import io

    import pandas as pd

    (src,) = [p for p in finished_runs.iterdir()]
    run = runs.load_run(str(finished_runs), src.name)
    both = runs.runs_frame([run, run], arms=["adam"])  # what the Compare page's CSV and Parquet hold
    assert set(both["arm"]) == {"adam"} and len(both) == 2 * len(run.metrics[run.metrics["arm"] == "adam"])
    back = pd.read_csv(io.BytesIO(runs.frame_bytes(both, "csv")))
    assert {"run_id", "config_model", "config_seed", "config_arms"} <= set(back.columns)
    assert set(back["config_model"]) == {"mlp"} and set(back["run_id"]) == {src.name}
    assert pd.read_parquet(io.BytesIO(runs.frame_bytes(both, "parquet")))["config_name"].iloc[0] == "tiny"


def test_runs_page_lists_opens_and_deletes(finished_runs):
    at = new_app()
    at.switch_page("pages/runs.py").run()
    assert not at.exception, [e.value for e in at.exception]
    table = table_with(at, "run", "status")
    assert len(table) == 1
    row = table.iloc[0]
    assert row["status"] == "completed" and row["model"] == "mlp" and row["switch epoch"] == 2
    run_id = row["run"]
    # open: the Train page with ?run=<id>
    at.button(key="runs_open").click().run()
    assert not at.exception
    assert at.query_params.get("run") == run_id
    assert status_of(at) == "completed"
    # delete needs the confirmation
    at.switch_page("pages/runs.py").run()
    assert at.button(key="runs_delete").disabled
    at.checkbox(key="runs_confirm_delete").check().run()
    at.button(key="runs_delete").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert runs.list_runs(finished_runs) == []
    assert "No runs yet" in at.info[0].value


def test_runs_page_without_runs(runs_dir):
    at = new_app()
    at.switch_page("pages/runs.py").run()
    assert not at.exception
    assert "No runs yet" in at.info[0].value


def test_a_preset_fills_the_form_in_one_click_and_trains_what_it_says(runs_dir):
    from twophase.config import PRESETS

    at = new_app()
    at.selectbox(key="cfg_preset").set_value("early-vs-late")
    at.button(key="cfg_load_preset").click().run()
    assert not at.exception and not at.warning, [w.value for w in at.warning]
    fields = PRESETS["early-vs-late"]["fields"]
    assert at.text_input(key="cfg_epochs").value == str(fields["epochs"])
    assert at.text_input(key="cfg_subset").value == str(fields["subset"])
    assert not at.checkbox(key="cfg_arm_two-phase").value and at.checkbox(key="cfg_arm_adam").value
    assert at.text_input(key="cfg_switch_points").value == "paper, 60%"
    # the form gives exactly the preset's arms (a short run here: the preset itself takes a minute)
    at.text_input(key="cfg_epochs").set_value("4")
    at.button(key="start").click().run()
    run = runs.load_run(runs_dir, at.query_params["run"])
    assert run.config["arms"] == fields["arms"]
    at.session_state["jobs"].stop(run.run_id)
