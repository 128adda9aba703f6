"""Every benchmark at its tiny size, so none of them can rot. The figures are not asserted;
the structure of what they write is: the .md section (machine line, targets stated as met or
missed), the .csv tables (with the machine in every row), the .json record."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from benchmarks import __main__ as bench_main
from benchmarks import (app, cg_vs_scipy, common, gpu, long_reproduction, optimizers, overhead, presets, probe,
                        roofline, switch_rule, switch_sweep, trunk)


def run(module, tmp_path: Path, *extra: str, size: str = "tiny") -> tuple[str, dict]:
    threads = torch.get_num_threads()
    code = common.run_main(module.main, "smoke", ["--size", size, "--out", str(tmp_path), *extra],
                           parse=getattr(module, "parse", None))
    assert code == 0
    assert torch.get_num_threads() == threads  # the benchmark gives the caller its threads back
    name = module.__name__.split(".")[-1]
    md = (tmp_path / f"{name}.md").read_text()
    blob = json.loads((tmp_path / f"{name}.json").read_text())
    assert md.startswith("### ")
    assert f"--size {size}" in md and "Machine: " in md and "torch thread(s)" in md
    assert {"cores", "torch", "threads", "cpu", "load_avg_1min"} <= set(blob["machine"])
    assert blob["machine"]["torch"] == torch.__version__
    for t in blob["targets"]:
        assert set(t) >= {"name", "measured", "target", "met"}
        line = [x for x in md.splitlines() if x.startswith(f"- {t['name']}:")]
        assert len(line) == 1
        assert ("met: measured" in line[0]) == t["met"]
        assert ("target missed: measured" in line[0]) == (not t["met"])
    for key in blob["tables"]:
        csv = tmp_path / (f"{name}.csv" if key == "main" else f"{name}_{key}.csv")
        frame = pd.read_csv(csv)
        assert {"machine_cores", "machine_torch", "machine_threads"} <= set(frame.columns)
        assert len(frame) == len(blob["tables"][key])
    return md, blob


def test_overhead(tmp_path):
    md, blob = run(overhead, tmp_path, "--no-png")
    table = pd.DataFrame(blob["tables"]["main"])
    assert list(table["phase"]) == ["Adam epoch", "CG epoch"]
    assert (table["engine s (median)"] > 0).all() and (table["hand loop s (median)"] > 0).all()
    assert len(blob["targets"]) == 2 and all(t["target"] == overhead.TARGET for t in blob["targets"])


@pytest.fixture(scope="module")
def scipy_results(tmp_path_factory):
    """cg_vs_scipy at its tiny size, once: (results folder, md text, json blob)."""
    out = tmp_path_factory.mktemp("results")
    md, blob = run(cg_vs_scipy, out, "--no-png")
    return out, md, blob


def test_cg_vs_scipy(scipy_results):
    _out, md, blob = scipy_results
    main = pd.DataFrame(blob["tables"]["main"])
    assert set(main["problem"]) == set(cg_vs_scipy.problems("tiny"))
    assert {"scipy CG", "pr+ strong-wolfe", "hz golden"} <= set(main.columns)
    summary = pd.DataFrame(blob["tables"]["summary"])
    assert len(summary) == 6  # 3 betas x 2 line searches
    assert blob["targets"][0]["target"] == 1.0


def test_cg_vs_scipy_counts_reach_the_tolerance():
    f, x0 = cg_vs_scipy.problems("tiny")["rosenbrock-2"]
    count, message = cg_vs_scipy.run_ours(f, x0, 2000, "pr+", "strong-wolfe")
    assert message == "reached" and 0 < count["reached"][0] <= count["evals"]
    count, message = cg_vs_scipy.run_scipy(f, x0, 2000)
    assert message == "reached" and count["reached"][0] == count["evals"]


def test_optimizers(tmp_path):
    md, blob = run(optimizers, tmp_path)
    runs = pd.DataFrame(blob["tables"]["runs"])
    strong = runs[runs["line search"] == "strong-wolfe"]
    assert set(strong["arm"]) == {"two-phase", "adam", "adam-lbfgs", "cg"}
    assert set(runs[runs["line search"] == "golden"]["arm"]) == {"two-phase", "cg"}
    # the Adam arm reaches its own final loss, at its own final cost
    adam = strong[strong["arm"] == "adam"].iloc[0]
    assert adam["passes to reach"] <= adam["data passes"]
    assert blob["meta"]["line_search_better"] in ("strong-wolfe", "golden", "neither (tie)")
    # the figure is drawn (kaleido + chromium) or the section says why not
    (png,) = [v for v in blob["figures"].values()]
    assert (tmp_path / png).exists() and f"]({png})" in md if png.endswith(".png") else "figure skipped:" in md


def test_roofline(tmp_path):
    md, blob = run(roofline, tmp_path, "--no-png")
    main = pd.DataFrame(blob["tables"]["main"])
    assert list(main["model"]) == ["mlp", "mlp"] and list(main["threads"]) == [1, 2]
    row = main.iloc[0]
    assert row["train MFLOP/sample"] > row["forward MFLOP/sample"] > 0
    assert 0 < row["fraction of peak"] == pytest.approx(row["achieved GFLOP/s"] / row["mm peak GFLOP/s"])
    speed = pd.DataFrame(blob["tables"]["speedups"])
    assert speed["verdict"].isin(["helps", "hurts", "no measurable change"]).all()
    (auto,) = blob["tables"]["threads"]  # the default threads='auto' against 1 and 2, in the same run
    assert auto["auto chose"] >= 1 and auto["why"].startswith("auto: ") and auto["fastest count"] in (1, 2)
    assert auto["auto / fastest"] > 0


def test_roofline_flops_of_a_linear_layer():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    fwd, train = roofline.flops_per_sample(model, (1, 28, 28), 10, batch=8)
    assert fwd == 2 * 784 * 10
    assert train == 2 * fwd  # the weight gradient; no gradient for the input


def test_switch_rule(tmp_path):
    md, blob = run(switch_rule, tmp_path, "--no-png")
    runs = pd.DataFrame(blob["tables"]["runs"])
    assert set(switch_rule.variants(4)) | {"Adam only (reference)"} == set(runs["variant"])
    fixed = runs[runs["variant"] == "fixed split 30%"].iloc[0]
    assert fixed["switch epoch"] == 1  # round(0.3 * 4 epochs)
    check = pd.DataFrame(blob["tables"]["check"])
    assert bool(check["identical"].all())  # the branching method gives what run_experiment gives


def test_switch_epochs_follow_the_rule():
    norms = [1.0, 2.0, 1.9, 1.7, 1.5]
    assert switch_rule.switch_epoch_of({"tolerance": 0.9}, norms) == 4
    assert switch_rule.switch_epoch_of({"tolerance": 0.97}, norms) == 3
    assert switch_rule.switch_epoch_of({"switch_epoch": 2}, norms) == 2
    assert switch_rule.switch_epoch_of({"tolerance": 0.5}, norms) is None


def test_switch_sweep(tmp_path):
    md, blob = run(switch_sweep, tmp_path, "--no-png")
    arms = pd.DataFrame(blob["tables"]["arms"])
    sweep_cell = arms[arms["cell"] == "sweep"]
    assert set(sweep_cell["arm"]) == set(switch_sweep.arms_for("mlp"))
    # the float64 cell: a trunk of its own with the 30% and 60% branches in both precisions
    float64_cell = arms[arms["cell"] == "float64"]
    assert set(float64_cell["arm"]) == set(switch_sweep.FLOAT64_ARMS)
    pairs = pd.DataFrame(blob["tables"]["float64"])
    assert sorted(pairs[pairs["cell"] == "float64"]["switch"]) == ["30%", "60%"]
    assert sorted(pairs[pairs["cell"] == "sweep"]["switch"]) == ["10%", "30%", "60%"]
    summary = pd.DataFrame(blob["tables"]["float64_summary"]).set_index("model")
    assert summary.loc["mlp", "pairs"] == 5
    assert (summary.loc["mlp", "per pass against Adam: same"] + summary.loc["mlp", "float64 better"]
            + summary.loc["mlp", "float64 worse"]) == 5
    # it enters only the float64 tables: the sweep and the rules count the one sweep cell
    assert "1 of 1 planned cells finished" in md
    assert set(pd.DataFrame(blob["tables"]["rules"])["cells"]) == {1}
    by_arm = sweep_cell.set_index("arm")
    assert by_arm.loc["two-phase@30%", "switch epoch"] == 9 and by_arm.loc["two-phase@3", "switch epoch"] == 3
    # the 30% branch and its float64 twin start from the same trunk epoch
    assert by_arm.loc["two-phase@30%:float64", "switch epoch"] == 9
    rules = pd.DataFrame(blob["tables"]["rules"])
    assert {"paper's rule (gradient norm)", "loss plateau", "curvature (probe)", "CG trial"} <= set(rules["rule"])
    assert "fixed 30% split" in set(rules["rule"])
    curves = pd.read_csv(tmp_path / "switch_sweep_curves.csv")
    assert len(curves)
    # Another machine carries the study on with an empty runs folder: the cell recorded in the results
    # folder is kept, not trained again, and the tables come out the same.
    empty = tmp_path / "fresh-runs"
    md2, blob2 = run(switch_sweep, tmp_path, "--no-png", "--runs-dir", str(empty))
    assert not any(empty.iterdir())
    again = pd.DataFrame(blob2["tables"]["arms"])
    pd.testing.assert_frame_equal(again.drop(columns=["cpu"]), arms.drop(columns=["cpu"]), check_dtype=False)
    assert blob2["tables"]["rules"] == blob["tables"]["rules"]
    assert len(pd.read_csv(tmp_path / "switch_sweep_curves.csv")) == len(curves)


def test_long_reproduction(tmp_path):
    md, blob = run(long_reproduction, tmp_path, "--no-png")
    arms = pd.DataFrame(blob["tables"]["arms"])
    assert set(arms["arm"]) == {"adam", "two-phase", "two-phase@3", "two-phase@10%", "two-phase@60%",
                                "two-phase@paper"}
    by_arm = arms.set_index("arm")
    assert by_arm.loc["two-phase", "switch epoch"] == 2 and by_arm.loc["two-phase@3", "switch epoch"] == 3  # 30% of 6
    table = pd.DataFrame(blob["tables"]["table1"])
    assert list(table["algorithm"]) == ["adam", "two-phase"]
    assert table.loc[1, "paper_train_loss"] == 0.0006  # vit-nomlp-wkewq-wvwo on MNIST, the paper's Table 1
    assert table.loc[0, "train_loss"] == pytest.approx(by_arm.loc["adam", "train_loss"])
    compare = pd.DataFrame(blob["tables"]["comparison"])
    assert compare.loc[0, "equal passes"] == pytest.approx(by_arm.loc["two-phase", "ratio at equal passes"])
    # a machine with an empty runs folder carries the reproduction on: the recorded cell is kept
    empty = tmp_path / "fresh-runs"
    empty.mkdir()
    md2, blob2 = run(long_reproduction, tmp_path, "--no-png", "--runs-dir", str(empty))
    assert not any(empty.iterdir())
    again = pd.DataFrame(blob2["tables"]["arms"])
    pd.testing.assert_frame_equal(again.drop(columns=["cpu"]), arms.drop(columns=["cpu"]), check_dtype=False)
    assert blob2["tables"]["comparison"] == blob["tables"]["comparison"]


def test_gpu_script_runs_its_steps_on_the_cpu_at_tiny_size(tmp_path):
    md, blob = run(gpu, tmp_path, "--no-png")
    table = pd.DataFrame(blob["tables"]["main"])
    assert {"default run", "vit-mlp, CG branches"} == set(table["step"])
    assert set(table["device"]) == {"cpu"}
    assert blob["meta"]["checks"]["tf32"]["ok"] is True
    assert "skipped" in blob["meta"]["checks"]["two processes"] or "status" in blob["meta"]["checks"]["two processes"]


def test_gpu_script_without_a_gpu_says_it_has_not_run(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the full-size run is a real one")
    md, blob = run(gpu, tmp_path, "--no-png", size="full")
    assert "Not run on a GPU" in md


def test_presets(tmp_path):
    from twophase.config import PRESETS

    md, blob = run(presets, tmp_path, "--no-png")
    table = pd.DataFrame(blob["tables"]["main"])
    assert set(table["preset"]) == set(PRESETS)
    late = table[table["arm"].str.contains("60%")]
    assert (late["switch epoch"] == 12).all()  # 60% of the tiny size's 20 epochs


def test_trunk(tmp_path):
    md, blob = run(trunk, tmp_path, "--no-png")
    main = pd.DataFrame(blob["tables"]["main"])
    assert len(main) == 3 and len(blob["targets"]) == 3
    assert bool(main["same records"].all())  # sharing the trunk changes no record
    assert (main["shared s (median)"] > 0).all() and (main["unshared s (median)"] > 0).all()
    # the switch sweep computes the Adam epochs once instead of once per branch
    sweep = main.iloc[2]
    assert sweep["runs shared / unshared"] == "1 / 5"
    assert sweep["trunk epochs shared / unshared"] == f"{sweep['epochs']} / {5 * sweep['epochs']}"
    assert 0 < sweep["expected ratio"] < 1 and 0 < sweep["epochs-computed ratio"] < 1


def test_app_says_skipped_when_the_page_cannot_be_driven(tmp_path, monkeypatch):
    monkeypatch.setattr(app, "CHROMIUM", str(tmp_path / "no-chromium"))
    md, blob = run(app, tmp_path, "--no-png")
    assert "skipped: " in md and "no-chromium is missing" in md
    assert blob["targets"][0]["met"] is False and "target missed: measured n/a" in md


@pytest.mark.browser
@pytest.mark.slow
def test_app_drives_the_train_page(tmp_path):
    md, blob = run(app, tmp_path, "--no-png")
    assert "skipped" not in md, md
    row = blob["tables"]["main"][0]
    assert row["app samples/s"] > 0 and row["CLI samples/s"] > 0
    assert math.isclose(row["app / CLI"], row["app samples/s"] / row["CLI samples/s"], rel_tol=1e-6)


def test_readme_section_is_replaced_between_the_markers_only():
    text = "# t\n\nbefore\n<!-- bench:start -->\nold\n<!-- bench:end -->\nafter\n"
    out = bench_main.replace_section(text, "new body")
    assert out == "# t\n\nbefore\n<!-- bench:start -->\nnew body\n<!-- bench:end -->\nafter\n"
    for bad in ("no markers", "<!-- bench:end --> x <!-- bench:start -->",
                "<!-- bench:start --><!-- bench:start --><!-- bench:end -->"):
        with pytest.raises(ValueError):
            bench_main.replace_section(bad, "x")


def test_the_section_gathers_the_results_and_the_targets(scipy_results, tmp_path):
    out, _md, blob = scipy_results
    (out / "broken.md").write_text("never read")
    body = bench_main.section(["cg_vs_scipy", "overhead"], out, tmp_path / "README.md", "tiny",
                              {"cg_vs_scipy": "ok in 1 s", "overhead": "failed after 2 s: boom"}, 60.0)
    assert body.startswith("Written by `python -m benchmarks` (`make bench`: `--size full`); the last call (`--size tiny`) ran all")
    assert "| cg_vs_scipy | median over problems" in body and "### CG against SciPy" in body
    assert "| overhead | - | failed after 2 s: boom | - |" in body


def test_an_unknown_benchmark_is_refused(capsys):
    with pytest.raises(SystemExit):
        bench_main.main(["--only", "nonsense", "--no-readme"])
    assert "unknown benchmark(s) nonsense" in capsys.readouterr().err


@pytest.mark.slow
def test_python_m_benchmarks_rewrites_the_section(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\nkeep me\n\n<!-- bench:start -->\nold\n<!-- bench:end -->\n\nkeep me too\n")
    out = tmp_path / "results"
    code = bench_main.main(["--size", "tiny", "--only", "cg_vs_scipy", "--out", str(out), "--readme", str(readme),
                            "--no-png"])
    assert code == 0
    text = readme.read_text()
    assert text.startswith("# x\n\nkeep me\n\n<!-- bench:start -->\n")
    assert text.endswith("<!-- bench:end -->\n\nkeep me too\n")
    assert "\nold\n" not in text
    assert "| cg_vs_scipy | median over problems" in text
    assert "### CG against SciPy" in text and "Machine: " in text


def test_issue_size_results_get_a_part_of_their_own(scipy_results, tmp_path):
    out, _md, _blob = scipy_results
    base = tmp_path / "results"
    (base / "issue").mkdir(parents=True)
    for f in out.iterdir():
        (base / f.name).write_bytes(f.read_bytes())
        (base / "issue" / f.name).write_bytes(f.read_bytes())
    body = bench_main.section(["cg_vs_scipy"], base, tmp_path / "README.md", "issue",
                              {"cg_vs_scipy": "ok in 1 s"}, 60.0, ["cg_vs_scipy"])
    full_at, issue_at = body.index("### CG against SciPy"), body.index("### Issue sizes")
    assert full_at < issue_at < body.index("#### CG against SciPy") and "(issue size)" in body
    assert "| cg_vs_scipy (issue size) | median over problems" in body
    assert "the last call (`--size issue`) ran cg_vs_scipy (issue size)" in body
    assert "](results/issue/" in body  # links point into the issue folder


def test_no_run_rewrites_the_readme_from_the_results_on_disk(scipy_results, tmp_path):
    out, _md, _blob = scipy_results
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- bench:start -->\nold\n<!-- bench:end -->\n")
    assert bench_main.main(["--no-run", "--out", str(out), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "ran none (it rewrote this section from the results on disk)" in text
    assert "### CG against SciPy" in text and "Issue sizes" not in text


def test_app_cpu_accounting_counts_new_processes_and_never_goes_negative():
    before = {(1, "server"): 2.0, (2, "browser"): 5.0, (3, "browser"): 9.0}
    after = {(1, "server"): 3.5, (2, "browser"): 6.0, (4, "browser"): 0.7}  # 3 ended, 4 started
    used = app.cpu_used(before, after)
    assert used["server"] == pytest.approx(1.5) and used["browser"] == pytest.approx(1.7)
    assert all(v >= 0 for v in app.cpu_used(after, before).values())


def test_probe_cost_and_lanczos_steps(tmp_path):
    md, blob = run(probe, tmp_path, "--no-png")
    cost = pd.DataFrame(blob["tables"]["main"])
    assert list(cost["probe_every"]) == [1, 5]
    assert (cost["run s with"] > 0).all() and (cost["probe share"] < 1).all()
    # probing every epoch costs more than every 5th (7 probes against 3 on 6 epochs)
    assert cost["run s with"].iloc[0] > cost["run s with"].iloc[1]
    steps = pd.DataFrame(blob["tables"]["steps"])
    assert set(steps["steps"]) == {5, 10, 20} and set(steps["epoch"]) == {0, 2}
    # hess_max converges from below: more steps never lower it
    for _, part in steps.groupby("epoch"):
        assert part.sort_values("steps")["hess_max"].is_monotonic_increasing


def test_curvature_ships_a_run_the_package_reads_back(data_root, tmp_path):
    # benchmarks/curvature.py --size long copies its run into twophase/data_files/curvature_runs/;
    # here the same copy into a folder of the test's, from a 3-epoch probed run
    from benchmarks import curvature
    from twophase import runs
    from twophase.config import RunConfig
    from twophase.training.run import run_experiment

    config = RunConfig(data_root=data_root, subset=256, val_subset=256, epochs=3, hessian_probe=True,
                       probe_every=1, threads=1, switch_epoch=1)
    summary = run_experiment(config, str(tmp_path / "runs"))
    source = runs.load_run(str(tmp_path / "runs"), summary["run_id"])
    stale = tmp_path / "shipped" / "20200101-000000-aaaaaa"
    stale.mkdir(parents=True)  # a run shipped before is replaced, not kept beside
    target = curvature.ship_run(source.path, tmp_path / "shipped")
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "events.jsonl", "metrics.csv", "summary.json"]
    assert not stale.exists()
    shipped = runs.shipped_run(tmp_path / "shipped")
    assert shipped is not None and shipped.run_id == source.run_id and shipped.events == source.events
    a, b = source.metrics, shipped.metrics
    assert list(a["arm"]) == list(b["arm"]) and list(a["phase"]) == list(b["phase"])
    for column in ("train_loss", "grad_norm", "hess_min", "hess_max"):
        assert b[column].to_numpy() == pytest.approx(a[column].to_numpy(), rel=1e-5)
