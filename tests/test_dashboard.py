"""The dashboard as researchers and teachers use it (AppTest): shared settings, re-run, the charts'
view kept across redraws, legends out of the way, honest status lines and warnings, the landing page.

Each test names the defect of the dashboard issue it covers (numbers as in the issue).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from twophase import analysis, runs
from twophase.runs import RunWriter

from test_app_pages import chart, new_app, plotly_specs, status_of


def test_the_address_carries_the_settings_and_a_link_reproduces_them(runs_dir):
    from streamlit.testing.v1 import AppTest

    at = new_app()
    at.text_input(key="cfg_epochs").set_value("7")
    at.slider(key="cfg_tolerance").set_value(0.8)
    at.text_input(key="cfg_switch_points").set_value("3, 50%")
    at.run()
    shared = json.loads(at.query_params["cfg"])
    assert shared == {"epochs": 7, "switch_points": "3, 50%", "tolerance": 0.8}
    # a new visitor with that link gets the same settings in the form
    other = AppTest.from_file(new_app_path(), default_timeout=60)
    other.query_params["cfg"] = at.query_params["cfg"]
    other.run()
    assert not other.exception
    assert other.text_input(key="cfg_epochs").value == "7"
    assert other.slider(key="cfg_tolerance").value == pytest.approx(0.8)
    assert other.text_input(key="cfg_switch_points").value == "3, 50%"
    # a damaged link falls back to the defaults, saying so
    bad = AppTest.from_file(new_app_path(), default_timeout=60)
    bad.query_params["cfg"] = "{not json"
    bad.run()
    assert not bad.exception and any("could not be read" in w.value for w in bad.warning)


def new_app_path() -> str:
    from test_app_pages import APP

    return APP


def test_12_rerun_fills_the_settings_from_a_finished_run(finished_runs):
    (run_dir,) = list(finished_runs.iterdir())
    at = new_app()
    at.query_params["run"] = run_dir.name
    at.run()
    config = runs.load_run(str(finished_runs), run_dir.name).config
    assert at.text_input(key="cfg_epochs").value == "40"  # the defaults until asked
    at.button(key="rerun_settings").click().run()
    assert not at.exception and not at.warning, [w.value for w in at.warning]
    assert at.text_input(key="cfg_epochs").value == str(config["epochs"])
    assert at.text_input(key="cfg_subset").value == str(config["subset"])
    assert at.text_input(key="cfg_switch_epoch").value == str(config["switch_epoch"])


def test_6_14_charts_keep_their_view_across_redraws_and_legends_sit_below(finished_runs):
    (run_dir,) = list(finished_runs.iterdir())
    at = new_app()
    at.query_params["run"] = run_dir.name
    at.run()
    for spec in plotly_specs(at):
        layout = spec["layout"]
        assert layout["uirevision"].startswith(run_dir.name)  # zoom, pan, hidden entries are kept
        assert layout["legend"]["y"] < 0 and layout["legend"]["yanchor"] == "top"  # below the plotting area
    # the wide layout: one chart per row; smoothing draws the raw curve faint behind
    at.toggle(key="wide_charts").set_value(True)
    at.slider(key="smoothing").set_value(0.6).run()
    loss = chart(at, "Loss")
    raw = [t for t in loss["data"] if (t.get("meta") or {}).get("raw")]
    assert raw and all(t.get("opacity", 1) < 0.5 and t.get("showlegend") is False for t in raw)


def test_13_the_status_line_says_what_decides_the_switch(finished_runs):
    (run_dir,) = list(finished_runs.iterdir())
    at = new_app()
    at.query_params["run"] = run_dir.name
    at.run()
    line = next(md.value for md in at.markdown if "tp-status-" in md.value)
    assert "fixed switch after epoch 2" in line and "tolerance" not in line
    # and the Processes box says where a one-process run trains (it said "in the server itself")
    [box] = [w for w in at.text_input if w.key == "cfg_processes"]
    assert "worker process" in box.help and "server itself" not in box.help


def test_10_a_loss_that_rises_over_the_first_epochs_is_warned_about(runs_dir):
    w = RunWriter(str(runs_dir), "20260101-000000-0000f0", {"model": "mlp", "dataset": "mnist", "epochs": 4,
                                                          "arms": ["adam"], "tolerance": 0.9})
    for epoch, loss in enumerate([0.09, 0.2, 0.5, 0.9, 0.9]):
        w.append({"arm": "adam", "epoch": epoch, "phase": "adam" if epoch else "init", "train_loss": loss})
    w.update_summary(status="completed", arms={"adam": {"status": "completed", "epochs": 4}})
    at = new_app()
    at.query_params["run"] = "20260101-000000-0000f0"
    at.run()
    assert any("rose over its first epochs" in x.value and "learning rate" in x.value for x in at.warning)


def test_2_the_ratio_compares_arms_at_the_same_epoch_after_a_stop():
    # stopped mid-epoch: two-phase reached epoch 5, Adam epoch 4
    rows = [{"arm": a, "epoch": e, "data_passes": float(e), "seconds": float(e), "train_loss": 1.0 / (e + 1)}
            for a, last in (("two-phase", 5), ("adam", 4)) for e in range(last + 1)]
    table = analysis.ratio_table(pd.DataFrame(rows))
    assert list(table["epoch at"]) == [4] and table["epoch ratio"][0] == pytest.approx(1.0)


def test_11_a_queued_run_says_it_waits_for_the_running_one(runs_dir, data_root):
    from twophase.config import RunConfig

    at = new_app()
    jobs = at.session_state["jobs"]
    first = jobs.submit(RunConfig(model="mlp", data_root=data_root, subset=512, val_subset=256, epochs=100000,
                                  batch_size=16, threads=1))
    try:
        second = jobs.submit(RunConfig(model="mlp", data_root=data_root, subset=256, val_subset=256, epochs=2,
                                       threads=1))
        at.query_params["run"] = second
        at.run()
        assert status_of(at) == "queued"
        assert any("Waiting for a training slot" in i.value for i in at.info)
    finally:
        jobs.stop(first)
        jobs.wait(first, 60)


def test_landing_page_says_what_happens_and_draws_the_last_finished_run(finished_runs):
    at = new_app()
    assert any("What happens when you press Start" in md.value for md in at.markdown)
    assert any("last finished run" in md.value for md in at.markdown)
    assert {s["layout"]["title"]["text"] for s in plotly_specs(at)} == {"Gradient norm", "Loss"}


def test_landing_page_on_a_fresh_runs_folder_draws_the_shipped_example_run(runs_dir):
    from twophase.config import RunConfig

    example = runs.example_run()
    assert example is not None and example.status == "completed"
    # the shipped run is the app's default run, and the early regime the caption names
    assert {k: example.config[k] for k in ("model", "dataset", "subset", "epochs", "tolerance", "arms")} == \
        {k: getattr(RunConfig(), k) for k in ("model", "dataset", "subset", "epochs", "tolerance", "arms")}
    switch = [e["epoch"] for e in example.events if e["kind"] == "switch"]
    assert switch and switch[0] <= 6
    at = new_app()
    assert not at.exception
    (md,) = [md.value for md in at.markdown if "An example: the default run" in md.value]
    assert f"switches at epoch {switch[0]}" in md and "early regime" in md
    specs = plotly_specs(at)
    assert {s["layout"]["title"]["text"] for s in specs} == {"Gradient norm", "Loss"}
    grad = next(s for s in specs if s["layout"]["title"]["text"] == "Gradient norm")
    assert {t["meta"]["arm"] for t in grad["data"] if (t.get("meta") or {}).get("role") == "grad_norm"} == \
        {"two-phase", "adam"}
    assert runs.list_runs(runs_dir) == []  # nothing was written to the user's runs folder


def test_16_runs_can_be_found_by_text_and_status_and_show_their_progress(finished_runs):
    (src,) = list(finished_runs.iterdir())
    other = finished_runs / "20200101-000000-abcdef"
    import shutil

    shutil.copytree(src, other)
    cfg = json.loads((other / "config.json").read_text())
    cfg.update(name="the other one", model="cnn-small")
    (other / "config.json").write_text(json.dumps(cfg))
    summary = json.loads((other / "summary.json").read_text())
    summary["status"] = "stopped"
    summary["arms"] = {a: {**v, "epochs": 1, "status": "stopped"} for a, v in summary["arms"].items()}
    (other / "summary.json").write_text(json.dumps(summary))
    at = new_app()
    at.switch_page("pages/runs.py").run()

    def table():
        return next(df.value for df in at.dataframe if "progress" in df.value.columns)

    full = table().set_index("run")
    assert full.loc[src.name, "progress"] == pytest.approx(1.0)
    assert full.loc[other.name, "progress"] == pytest.approx(1 / cfg["epochs"])
    at.text_input(key="runs_search").set_value("CNN").run()
    assert list(table()["run"]) == [other.name]
    at.text_input(key="runs_search").set_value("").run()
    at.multiselect(key="runs_statuses").set_value(["completed"]).run()
    assert list(table()["run"]) == [src.name]
    # the selector below lists what the table lists, with the same status
    assert at.selectbox(key="runs_selected").options == [f"{src.name} “tiny” · mlp on mnist · completed"]


def test_8_numbers_are_taken_as_typed_and_refused_by_name(runs_dir):
    # defect 8: epochs typed as 0, "abc" or nothing silently started a 40-epoch run (a number box
    # clamps, or falls back to its default); an emptied "Training samples" came back as 2048
    at = new_app()
    for typed, said in [("0", "must be from 1 to 100000, got 0"),
                        ("abc", "must be a whole number from 1 to 100000, got 'abc'"),
                        ("", "must be a whole number from 1 to 100000, but the box is empty"),
                        ("2.5", "must be a whole number from 1 to 100000, got 2.5")]:
        at.text_input(key="cfg_epochs").set_value(typed)
        at.button(key="start").click().run()
        assert not at.exception, [e.value for e in at.exception]
        (message,) = [e.value for e in at.error]
        assert f"**Epochs** (`epochs`): {said}" in message, message
        assert at.text_input(key="cfg_epochs").value == typed  # kept as typed, to be fixed
        assert "run" not in at.query_params and runs.list_runs(runs_dir) == []
    at.text_input(key="cfg_epochs").set_value(" 1e1 ")  # what reads as a whole number is one
    at.text_input(key="cfg_lr").set_value("3e-4")
    at.text_input(key="cfg_subset").set_value("")  # the placeholder says: all
    at.run()
    linked = json.loads(at.query_params["cfg"])
    assert (linked["epochs"], linked["lr"], linked["subset"]) == (10, 3e-4, None), linked
    assert at.text_input(key="cfg_subset").value == "" and at.text_input(key="cfg_subset").placeholder == "all"
    # and the settings the form gives are the run's settings (no Start needed: the whole set is large)
    from pages.shared import common

    values = {name: at.session_state[f"cfg_{name}"] for name in ("epochs", "lr", "subset", "val_subset")}
    config = common.form_config({name: common.parse_number(common.FIELDS[name], text) for name, text in values.items()}
                                | {"arms": ["adam"]})
    assert (config.epochs, config.lr, config.subset, config.val_subset) == (10, 3e-4, None, 2000)


def test_9_datasets_that_are_not_installed_say_so_in_the_list(runs_dir):
    at = new_app()
    shown = at.selectbox(key="cfg_dataset").options  # the labels the list shows
    assert shown[0] == "mnist"
    assert any(o.startswith("cifar10 ") and "not installed" in o for o in shown)
    assert any(o.startswith("cifar100 ") and "not installed" in o for o in shown)


@pytest.fixture
def set_twice_warnings(monkeypatch):
    """Streamlit's 'created with a default value but also had its value set via the Session State
    API' warnings, every one of them (Streamlit logs only the first per process, to the log)."""
    from streamlit.elements.lib import policies

    seen = []
    monkeypatch.setattr(policies, "_shown_default_value_warning", False)
    original = policies._LOGGER.warning

    def record(message, *args, **kwargs):
        if "default value but also had its value set" in str(message):
            seen.append(args[0] if args else message)
            monkeypatch.setattr(policies, "_shown_default_value_warning", False)  # see the next one too
            return None
        return original(message, *args, **kwargs)

    monkeypatch.setattr(policies._LOGGER, "warning", record)
    return seen


def test_20_no_widget_gets_a_default_and_a_session_state_value(finished_runs, set_twice_warnings):
    # defect 20: "Use the paper's rule" logged a Streamlit warning with a stack trace (a widget's
    # default set twice); the same came from the Learn page's step slider
    from streamlit.testing.v1 import AppTest

    (run_dir,) = list(finished_runs.iterdir())
    at = new_app()
    at.button(key="cfg_paper_rule").click().run()
    at.selectbox(key="cfg_preset").set_value("early-vs-late").run()
    at.button(key="cfg_load_preset").click().run()
    at.query_params["run"] = run_dir.name
    at.run()
    at.button(key="rerun_settings").click().run()
    assert not at.exception, [e.value for e in at.exception]
    linked = AppTest.from_file(new_app_path(), default_timeout=60)
    linked.query_params["cfg"] = json.dumps({"epochs": 7, "arms": ["adam"], "switch_points": "3"})
    linked.run()
    learn = AppTest.from_file(str(Path(new_app_path()).parent / "pages" / "learn.py"), default_timeout=120)
    learn.run()
    learn.slider(key="learn_steps").set_value(50).run()
    walk = json.loads(learn.get("plotly_chart")[1].proto.spec)["layout"]["sliders"][0]
    assert walk["steps"][walk["active"]]["label"] == "50"  # the map's walk starts at the new last step
    assert not linked.exception and not learn.exception
    # no widget at all: a preset, Re-run and a link write the arm boxes too
    assert set_twice_warnings == []
