"""The paper reproduction: `python -m twophase reproduce`, resume, the tables, and the Paper page."""

from __future__ import annotations

import json
import csv
import math
import shutil
from contextlib import redirect_stdout
from io import StringIO

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from twophase import paper, runs
from twophase.cli import main

from conftest import ROOT

MODELS = ["vit-nomlp-wkewq-wvwo", "vit-nomlp-wkewq"]  # the two cheapest of the paper's models
TINY = ["--subset", "64", "--val-subset", "64", "--epochs", "3", "--threads", "1"]
REFERENCE = ROOT / "twophase" / "data_files" / "paper_table1.csv"  # the paper's Table 1 as shipped
FIGURES = ("train_loss", "train_acc", "val_loss", "val_acc")


def tiny_plan(models=MODELS, adaptive=True, data_root="") -> paper.Plan:
    return paper.make_plan(models, ["mnist"], scale="small", epochs=3, subset=64, val_subset=64,
                               adaptive=adaptive, data_root=data_root, threads=1)


@pytest.fixture(scope="module")
def tiny_reproduction(tmp_path_factory, data_root):
    """A tiny reproduction (two models, 64 images, 3 epochs, with the adaptive arm) run by the command
    (`python -m twophase reproduce ...` through cli.main, in this process)."""
    base = tmp_path_factory.mktemp("reproduce")
    runs_path, out = base / "runs", base / "out"
    printed = StringIO()
    with redirect_stdout(printed):  # the command in-process: a subprocess would re-import torch (slow on 2 cores)
        code = main(["reproduce", "--models", ",".join(MODELS), *TINY, "--adaptive", "--data-dir", data_root,
                     "--runs-dir", str(runs_path), "--out", str(out)])
    assert code == 0, printed.getvalue()
    return {"runs": runs_path, "out": out, "stdout": printed.getvalue()}


def test_command_runs_every_cell_as_a_tagged_run_and_fills_the_table(tiny_reproduction):
    plan = tiny_plan()
    infos = runs.list_runs(str(tiny_reproduction["runs"]))
    assert len(infos) == len(plan.cells) == 4
    assert {i.config["tag"] for i in infos} == {"reproduce:small-e3-n64-v64"}
    assert all(i.status == "completed" for i in infos)
    fixed = [i.config for i in infos if i.config["arms"] == ["two-phase", "adam"]]
    adaptive = [i.config for i in infos if i.config["arms"] == ["two-phase"]]
    assert len(fixed) == len(adaptive) == 2
    # The protocol: MSE, batch 512, switch after round(0.3 * 3) = 1 epoch; the adaptive arm has no fixed epoch.
    assert all(c["loss"] == "mse" and c["batch_size"] == 512 and c["switch_epoch"] == 1 for c in fixed)
    assert all(c["switch_epoch"] is None and c["tolerance"] == 0.9 for c in adaptive)
    out = tiny_reproduction["out"]
    table = pd.read_csv(out / "table1.csv")
    assert len(table) == 2 * 3  # two models x (Adam, two-phase, two-phase adaptive)
    assert table[list(FIGURES)].notna().all().all(), table
    assert (table["seeds"] == "1/1").all()
    compare = pd.read_csv(out / "comparison.csv")
    assert len(compare) == 2 * 2
    for column in ("epochs_ratio", "epochs_winner", "agrees", "passes_budget", "passes_winner",
                   "seconds_budget", "seconds_winner"):
        assert compare[column].notna().all(), column
    # Equal data passes: the budget is the smaller total, i.e. Adam's 3 passes (two-phase's CG costs more).
    assert (compare[compare["method"] == "two-phase"]["passes_budget"] == 3.0).all()
    md = (out / "table1.md").read_text()
    assert "small-e3-n64-v64" in md and "vit-nomlp-wkewq-wvwo" in md and "equal data passes" in md
    assert "4 of 4 cell(s) done" in tiny_reproduction["stdout"]


def test_published_numbers_are_the_reference_files(tiny_reproduction):
    with open(REFERENCE, newline="") as fh:
        reference = {(r["model"], r["dataset"], r["algorithm"]): r for r in csv.DictReader(fh)}
    table = pd.read_csv(tiny_reproduction["out"] / "table1.csv")
    checked = 0
    for _, row in table.iterrows():
        ref = reference.get((row["model"], row["dataset"], row["algorithm"]))
        if row["algorithm"] == "two-phase-adaptive":  # the paper has no adaptive column
            assert ref is None and all(math.isnan(row[f"paper_{k}"]) for k in FIGURES)
            continue
        assert ref is not None, row
        for key in FIGURES:
            assert row[f"paper_{key}"] == pytest.approx(float(ref[key]), abs=1e-12), (row["model"], key)
            checked += 1
        assert row["paper_epochs"] == 1000
    assert checked == 2 * 2 * 4
    compare = pd.read_csv(tiny_reproduction["out"] / "comparison.csv")
    for _, row in compare.iterrows():
        tp = float(reference[(row["model"], "mnist", "two-phase")]["train_loss"])
        adam = float(reference[(row["model"], "mnist", "adam")]["train_loss"])
        assert row["paper_ratio"] == pytest.approx(tp / adam)
        assert row["paper_winner"] == "two-phase"  # both models: lower in the paper


def test_interrupted_reproduction_resumes_with_the_remaining_cells_only(tmp_path, data_root):
    runs_path = tmp_path / "runs"
    plan = tiny_plan(adaptive=False, data_root=data_root)
    first, second = plan.cells
    lines = []

    def stop_in_second_cell():  # Ctrl-C once the second cell has started: it ends `stopped`
        return any(line.startswith("[2/2]") for line in lines)

    outcome = paper.run_plan(plan, runs_path, on_line=lines.append, should_stop=stop_in_second_cell)
    assert outcome["stopped"] and outcome["left"] == [second.key] and len(outcome["ran"]) == 2
    states = {s.cell.key: s for s in paper.cell_states(plan, runs_path)}
    assert states[first.key].status == "done" and states[second.key].status == "todo"
    assert states[second.key].run_status == "stopped"
    first_run, second_run = states[first.key].run_id, states[second.key].run_id
    assert runs.checkpoint_info(runs.run_path(runs_path, second_run)) is not None  # a Stop keeps one
    before = {i.run_id for i in runs.list_runs(str(runs_path))}

    printed = StringIO()
    with redirect_stdout(printed):
        assert main(["reproduce", "--models", ",".join(MODELS), *TINY, "--runs-dir", str(runs_path),
                     "--data-dir", data_root, "--out", str(tmp_path / "out")]) == 0
    assert f"resuming run {second_run} after epoch" in printed.getvalue()
    after = {i.run_id: i for i in runs.list_runs(str(runs_path))}
    assert set(after) == before  # the stopped cell went on in its own run; no cell was started afresh
    states = {s.cell.key: s for s in paper.cell_states(plan, runs_path)}
    assert all(s.status == "done" for s in states.values())
    assert states[first.key].run_id == first_run  # the finished cell was not run again
    assert states[second.key].run_id == second_run and after[second_run].summary["resumed"][0]["was"] == "stopped"

    for name in (runs.CHECKPOINT_FILE, runs.CHECKPOINT_INFO_FILE):
        assert not (runs.run_path(runs_path, second_run) / name).exists()  # completed: removed
    table = pd.read_csv(tmp_path / "out" / "table1.csv")
    assert table[list(FIGURES)].notna().all().all()

    # A third call finds nothing to do.
    assert main(["reproduce", "--models", ",".join(MODELS), *TINY, "--runs-dir", str(runs_path), "--data-dir", data_root,
                 "--out", str(tmp_path / "out"), "--quiet"]) == 0
    assert len(runs.list_runs(str(runs_path))) == len(after)


def test_bad_arguments_name_the_flag(tmp_path, capsys):
    assert main(["reproduce", "--models", "vit-mlp,nope", "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--models" in err and "nope" in err and "vgg5-max-relu" in err
    assert main(["reproduce", "--seeds", "1,1", "--runs-dir", str(tmp_path)]) == 2
    assert "--seeds" in capsys.readouterr().err
    assert main(["reproduce", "--subset", "70000", "--runs-dir", str(tmp_path)]) == 2
    assert "--subset" in capsys.readouterr().err
    # CIFAR without its files: refused before any training, saying where the files go.
    assert main(["reproduce", "--datasets", "cifar10", "--models", MODELS[0], *TINY,
                 "--data-dir", str(tmp_path / "no-data"), "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "CIFAR-10" in err and "cifar-10-batches-py" in err
    assert runs.list_runs(str(tmp_path)) == []


def test_scales_follow_the_papers_budgets():
    paper_plan = paper.make_plan(scale="paper")
    by_model = {c.model: c.config for c in paper_plan.cells}
    assert list(by_model) == list(paper.PAPER_MODELS) and len(by_model) == 5
    assert by_model["vit-mlp"].epochs == 700 and by_model["vit-mlp"].switch_epoch == 210
    assert by_model["vgg5-max-relu"].epochs == 1000 and by_model["vgg5-max-relu"].switch_epoch == 300
    assert all(c.subset is None and c.val_subset is None for c in by_model.values())
    small = paper.make_plan(scale="small")
    assert small.id == f"small-e{paper.SCALES['small'].epochs}-n{paper.SCALES['small'].subset}" \
                       f"-v{paper.SCALES['small'].val_subset}"


class RecordingJobs:
    """Stands in for the app's JobManager: records what the page submits, trains nothing."""

    def __init__(self, runs_dir):
        self.runs_dir = str(runs_dir)
        self.submitted = []

    def submit(self, config):
        config.validate()
        self.submitted.append(config)
        return runs.new_run_id()

    def snapshot(self, run_id):
        return None


def table_with(at: AppTest, column: str) -> pd.DataFrame:
    """The first table shown that has `column`."""
    for df in at.dataframe:
        if column in df.value.columns:
            return df.value
    raise AssertionError(f"no table with a {column!r} column")


def new_page(jobs) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / "paper.py"), default_timeout=60)
    at.session_state["jobs"] = jobs
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_paper_page_renders_the_reproduction_table(tiny_reproduction, tmp_path):
    runs_path = tmp_path / "runs"
    shutil.copytree(tiny_reproduction["runs"], runs_path)
    at = new_page(RecordingJobs(runs_path))
    assert at.selectbox(key="paper_repro").value == "small-e3-n64-v64"
    shown = table_with(at, "paper: train loss")
    written = pd.read_csv(tiny_reproduction["out"] / "table1.csv")
    assert len(shown) == len(written) == 6
    labels = {v: k for k, v in paper.ALGORITHM_LABELS.items()}
    shown = shown.assign(algorithm=shown["algorithm"].map(labels)).set_index(["model", "algorithm"])
    written = written.set_index(["model", "algorithm"])
    assert sorted(shown.index) == sorted(written.index)
    for key in written.index:
        for ours, page_column in (("train_loss", "train loss"), ("val_acc", "val accuracy"),
                                  ("paper_train_loss", "paper: train loss")):
            a, b = shown.loc[key, page_column], written.loc[key, ours]
            assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b), (key, ours)
    assert len(table_with(at, "same as paper")) == 4
    cells = [c for c in at.get("plotly_chart") if c.key.startswith("paper_fig_")]
    assert len(cells) == 2  # one loss-against-cost chart per cell (model)


def test_paper_page_starts_a_small_reproduction_with_one_click(tmp_path):
    jobs = RecordingJobs(tmp_path)
    at = new_page(jobs)
    assert at.info and "No reproduction yet" in at.info[0].value
    at.selectbox(key="paper_model").set_value("vit-mlp").run()
    at.button(key="paper_start").click().run()
    assert not at.exception, [e.value for e in at.exception]
    [config] = jobs.submitted
    small = paper.SCALES["small"]
    assert config.model == "vit-mlp" and config.dataset == "mnist" and config.tag.startswith("reproduce:small-")
    assert config.epochs == round(0.7 * small.epochs) and config.switch_epoch == round(0.3 * config.epochs)
    assert config.subset == small.subset and config.arms == ["two-phase", "adam"]


def test_the_long_scale_trains_a_switch_sweep_from_each_cells_trunk(data_root, tmp_path):
    plan = paper.make_plan(["mlp"], scale="long", epochs=10, subset=128, val_subset=100, data_root=data_root,
                           threads=1)
    [cell] = plan.cells
    assert cell.config.arms == ["two-phase", "adam", "two-phase@3", "two-phase@10%", "two-phase@60%",
                                "two-phase@paper"]
    assert cell.config.switch_epoch == 3 and cell.config.line_search == "golden"
    outcome = paper.run_plan(plan, tmp_path, on_line=None)
    assert outcome["done"] == outcome["total"] == 1
    paths = paper.write_outputs(plan, tmp_path, tmp_path / "out")
    sweep = pd.read_csv(paths["sweep"])
    assert set(sweep["arm"]) == {"two-phase", "two-phase@3", "two-phase@10%", "two-phase@60%", "two-phase@paper"}
    assert sweep.set_index("arm").loc["two-phase@60%", "switch epoch"] == 6
    assert "Switch sweep from each cell's Adam trunk" in open(paths["markdown"]).read()
    # run again: the cell is done, nothing is trained
    assert paper.run_plan(plan, tmp_path, on_line=None)["ran"] == []


def test_paper_page_on_a_fresh_runs_folder_shows_the_shipped_small_reproduction_and_its_cost(tmp_path):
    # defect: with a fresh runs folder nothing stood beside Table 1, and the caption said "about 15
    # minutes" for every model while the README measured 7 minutes per ViT run and 29 per vgg5 run
    at = new_page(RecordingJobs(tmp_path))
    shown = table_with(at, "paper: train loss")
    assert len(shown) == 10 and set(shown["model"]) == set(paper.PAPER_MODELS)
    row = shown[(shown["model"] == "vgg5-max-relu") & (shown["algorithm"] == "Adam")].iloc[0]
    assert row["train loss"] == pytest.approx(0.00062) and row["paper: train loss"] == pytest.approx(0.0001)
    at.selectbox(key="paper_model").set_value("vgg5-max-relu").run()
    assert any("About 29 minutes" in c.value and "29 per run" in c.value for c in at.caption)
    at.selectbox(key="paper_model").set_value("vit-mlp").run()
    assert any("About 7 minutes" in c.value for c in at.caption)
    at.toggle(key="paper_adaptive").set_value(True).run()  # a second run: the adaptive rule
    assert any("About 14 minutes" in c.value for c in at.caption)


def test_paper_page_shows_the_shipped_long_reproduction_beside_table1(tmp_path, monkeypatch):
    # the long reproduction (the paper's budgets on 1,024 images) stands beside Table 1, with its
    # ratios at equal epochs, passes and time, whether or not a reproduction ran here
    from twophase.paper import published

    shipped = tmp_path / "measured_long.csv"
    pd.DataFrame([
        dict(dataset="mnist", model="vit-nomlp-wkewq-wvwo", algorithm="adam", seeds=2, epochs=1000, train_loss=0.004,
             train_acc=0.98, val_loss=0.05, val_acc=0.7, ratio_epochs=None, ratio_passes=None, ratio_time=None,
             hours=0.9),
        dict(dataset="mnist", model="vit-nomlp-wkewq-wvwo", algorithm="two-phase", seeds=2, epochs=1000,
             train_loss=0.006, train_acc=0.96, val_loss=0.06, val_acc=0.69, ratio_epochs=1.5, ratio_passes=2.25,
             ratio_time=1.75, hours=0.9),
    ]).to_csv(shipped, index=False)
    monkeypatch.setattr(published, "MEASURED_LONG_PATH", shipped)
    at = new_page(RecordingJobs(tmp_path))
    shown = table_with(at, "equal passes")
    assert list(shown["model"]) == ["vit-nomlp-wkewq-wvwo"] * 2 and list(shown["seeds"]) == [2, 2]
    two = shown[shown["algorithm"] == paper.ALGORITHM_LABELS["two-phase"]].iloc[0]
    assert two["equal passes"] == 2.25 and two["two-phase / Adam, equal epochs"] == 1.5
    assert two["paper: train loss"] == pytest.approx(0.0006)  # the paper's figure beside ours
    # and the same cells' switch sweep (deliverable 3): early and late branches, per pass as measured
    sweep = table_with(at, "lower per pass (seeds)")
    shipped_sweep = paper.measured_long_sweep()
    assert list(sweep["branch"]) == list(shipped_sweep["branch"])
    assert list(sweep["branch / Adam, equal passes"]) == pytest.approx(list(shipped_sweep["ratio_passes"]))
    assert {"switch after epoch 3", "switch at 60%", "switch by the paper's rule"} <= set(sweep["branch"])
    monkeypatch.setattr(published, "MEASURED_LONG_PATH", tmp_path / "none.csv")
    assert all("equal passes" not in df.value.columns for df in new_page(RecordingJobs(tmp_path)).dataframe)


def test_the_long_sweep_copy_gives_each_branch_its_medians_over_seeds():
    from benchmarks.long_reproduction import measured_sweep_copy

    rows = pd.DataFrame([dict(dataset="mnist", model="m", seed=seed, arm=arm, **{"switch epoch": epoch},
                              **{"ratio at equal epochs": r * 0.5, "ratio at equal passes": r, "ratio at equal time": r * 2})
                         for seed, r in ((0, 0.9), (1, 1.2), (2, 0.8))
                         for arm, epoch in (("adam", None), ("two-phase@3", 3), ("two-phase@60%", 600))])
    rows.loc[(rows["arm"] == "two-phase@3"), "ratio at equal passes"] = [20.0, 30.0, 10.0]
    out = measured_sweep_copy(rows)
    assert list(out["branch"]) == ["switch after epoch 3", "switch at 60%"]  # no Adam row, BRANCHES' order
    late = out[out["branch"] == "switch at 60%"].iloc[0]
    assert (late["seeds"], late["switch_epoch"], late["wins_passes"]) == (3, 600, "2/3")
    assert late["ratio_passes"] == pytest.approx(0.9) and late["ratio_time"] == pytest.approx(1.8)
    early = out[out["branch"] == "switch after epoch 3"].iloc[0]
    assert early["ratio_passes"] == 20.0 and early["wins_passes"] == "0/3"


def test_paper_page_shows_where_switching_paid_off_from_the_shipped_study(tmp_path):
    # issue 17: the switch study's tables stand on the Paper page (and in the README), from the
    # copies benchmarks/switch_sweep.py writes into twophase/data_files/
    study = paper.switch_study()
    assert set(study) == {"sweep", "rules", "points"}
    at = new_page(RecordingJobs(tmp_path))
    rules = table_with(at, "per-pass wins")
    shipped = study["rules"][study["rules"]["model"] == "all"]
    assert list(rules["rule"]) == list(shipped["rule"]) and "paper's rule (gradient norm)" in set(rules["rule"])
    assert list(rules["per-pass wins"]) == list(shipped["per-pass wins"])
    sweep = table_with(at, "switch 60%")
    assert set(sweep["model"]) >= {"mlp", "vit-nomlp-wkewq-wvwo"}
    [figure] = [json.loads(c.proto.spec) for c in at.get("plotly_chart")
                if "switch epoch" in json.loads(c.proto.spec)["layout"]["title"]["text"]]
    lines = [t for t in figure["data"] if t["name"] != "Adam (ratio 1)"]
    assert len(lines) == len(study["points"].groupby(["model", "images"]))
    # Adam's level is a legend entry, the legend below the plot, ratios written as powers of ten
    assert [t["y"] for t in figure["data"] if t["name"] == "Adam (ratio 1)"] == [[1.0, 1.0]]
    assert figure["layout"]["legend"]["y"] < 0 and figure["layout"]["yaxis"]["exponentformat"] == "power"
    at.selectbox(key="paper_rules_model").set_value("mlp").run()
    mlp = table_with(at, "per-pass wins")
    assert list(mlp["cells"]) == list(study["rules"][study["rules"]["model"] == "mlp"]["cells"])


def test_paper_page_stops_a_reproduction_and_continues_it_from_the_checkpoint(data_root, tmp_path):
    # defect: the Paper page had no Stop button, and a stopped cell silently became "1 to run" (started
    # again from scratch)
    from twophase.jobs import JobManager

    plan = paper.make_plan(["vit-nomlp-wkewq-wvwo"], ["mnist"], scale="small", epochs=3000, subset=64,
                           val_subset=64, adaptive=False, data_root=data_root, threads=1)
    jobs = JobManager(str(tmp_path), mode="thread")
    started, resumed = paper.start_cells(jobs, jobs.runs_dir, paper.cell_states(plan, jobs.runs_dir))
    [run_id] = started
    assert resumed == []
    wait_for(lambda: len(jobs.snapshot(run_id).records) >= 4)
    at = new_page(jobs)
    assert at.selectbox(key="paper_repro").value == plan.id
    at.button(key="paper_stop").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert jobs.wait(run_id, 120) == "stopped"
    kept = len(runs.load_run(str(tmp_path), run_id).metrics)
    at = new_page(jobs)
    assert any("1 run(s) not done: 1 run(s) stopped" in c.value for c in at.caption)
    at.button(key="paper_continue").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert jobs.status(run_id) in ("queued", "running")  # the same run goes on: nothing new was started
    wait_for(lambda: len(jobs.snapshot(run_id).records) > kept + 2)
    assert jobs.stop(run_id) and jobs.wait(run_id, 120) == "stopped"
    assert [i.run_id for i in runs.list_runs(str(tmp_path))] == [run_id]
    again = runs.load_run(str(tmp_path), run_id)
    assert len(again.metrics) > kept and again.summary["resumed"]
    assert not again.metrics.duplicated(["arm", "epoch"]).any()


def wait_for(condition, timeout: float = 120.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
