"""Several seeds: one run folder per seed in one group, the median with a min-max band, and how
many seeds agree (twophase/seeds.py, the JobManager, the CLI and the Train page)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from twophase import plots, runs, seeds
from twophase.config import RunConfig, seed_configs
from twophase.errors import ConfigError
from twophase.jobs.manager import JobManager

from conftest import ROOT


def frame(arm_losses: dict, passes_per_epoch: dict | None = None) -> pd.DataFrame:
    rows = []
    for arm, losses in arm_losses.items():
        for epoch, loss in enumerate(losses):
            rows.append({"arm": arm, "epoch": epoch, "train_loss": loss, "val_acc": 0.5,
                         "data_passes": epoch * (passes_per_epoch or {}).get(arm, 1)})
    return pd.DataFrame(rows)


def test_band_is_the_median_and_range_over_the_seeds_at_each_epoch_and_within_each_budget():
    frames = [frame({"adam": [4, 3, 2]}), frame({"adam": [6, 5, 1]}), frame({"adam": [5, 1, float("nan")]})]
    b = seeds.band(frames, "adam", "train_loss", "epoch")
    assert b["epoch"].tolist() == [0, 1, 2]
    assert b["median"].tolist() == [5, 3, 1.5] and b["low"].tolist() == [4, 1, 1] and b["high"].tolist() == [6, 5, 2]
    assert b["seeds"].tolist() == [3, 3, 2]  # the NaN of the third seed is left out, not a value
    # a cost axis: each seed read at its last point within the budget, never beyond what it reached
    cost = seeds.band([frame({"cg": [4, 3, 2]}, {"cg": 2}), frame({"cg": [6, 5]}, {"cg": 2})], "cg", "train_loss",
                      "data_passes", points=5)
    assert cost["data_passes"].tolist() == [0, 1, 2, 3, 4]
    assert cost["median"].tolist() == [5, 5, 4, 3, 2] and cost["seeds"].tolist() == [2, 2, 2, 1, 1]
    assert seeds.band(frames, "cg").empty


def test_seed_table_counts_the_seeds_where_an_arm_is_ahead_of_adam():
    frames = [frame({"adam": [1, 0.5], "two-phase": [1, 0.25]}), frame({"adam": [1, 0.5], "two-phase": [1, 1.0]}),
              frame({"adam": [1, 0.5], "two-phase": [1, 0.4]})]
    table = seeds.seed_table(frames).set_index("arm")
    row = table.loc["two-phase"]
    assert row["seeds"] == 3 and row["ahead"] == 2 and row["compared"] == 3
    assert row["ratio at equal passes (median)"] == pytest.approx(0.8)
    assert row["train loss (min)"] == 0.25 and row["train loss (max)"] == 1.0
    assert seeds.headline(table.reset_index(), {"two-phase": "two-phase"}) == [
        "two-phase: ahead of Adam at equal data passes in 2 of 3 seeds (median ratio 0.8)"]


def test_band_figure_draws_a_shaded_range_and_a_median_line_per_arm():
    frames = [frame({"adam": [4, 3, 2], "two-phase": [4, 2, 1]}), frame({"adam": [6, 5, 1], "two-phase": [6, 4, 3]})]
    fig = plots.seed_band_figure(frames, "train_loss", "epoch", log_y=True)
    roles = [(t.meta["role"], t.meta["arm"]) for t in fig.data]
    assert roles == [("band_high", "adam"), ("band_low", "adam"), ("band_median", "adam"),
                     ("band_high", "two-phase"), ("band_low", "two-phase"), ("band_median", "two-phase")]
    low = fig.data[1]
    assert low.fill == "tonexty" and list(fig.data[0].y) == [6, 5, 2] and list(low.y) == [4, 3, 1]
    assert "median of 2 seeds" in fig.data[2].name and fig.layout.yaxis.type == "log"


def test_seeds_expand_into_one_config_per_seed_and_bad_values_name_the_field():
    cfg = RunConfig(seed=7, seeds=3)
    members = seed_configs(cfg, group="20261202-000000-abcdef")
    assert [m.seed for m in members] == [7, 8, 9] and {m.group for m in members} == {"20261202-000000-abcdef"}
    assert seed_configs(RunConfig(), "x") == [RunConfig()]
    for bad in (0, 101, 2.5, "3"):
        with pytest.raises(ConfigError) as err:
            RunConfig(seeds=bad).validate()
        assert "seeds" in err.value.errors and "1 to 100" in err.value.errors["seeds"]


def test_the_app_queues_one_run_per_seed_in_one_group(runs_dir, data_root):
    jobs = JobManager(str(runs_dir), mode="thread")
    cfg = RunConfig(model="mlp", subset=128, val_subset=100, epochs=2, batch_size=64, arms=["adam", "two-phase@1"],
                    seed=3, seeds=2, threads=1, data_root=data_root)
    first = jobs.submit(cfg)
    group = jobs.group(first)
    assert group[0] == first and len(group) == 2
    for run_id in group:
        assert jobs.wait(run_id, 120) == "completed"
    configs = [runs.load_run(runs_dir, r).config for r in group]
    assert [c["seed"] for c in configs] == [3, 4] and {c["group"] for c in configs} == {first}
    assert jobs.group(group[1]) == group
    frames = [runs.load_run(runs_dir, r).metrics for r in group]
    assert not frames[0]["train_loss"].equals(frames[1]["train_loss"])  # different seeds, different runs
    table = seeds.seed_table(frames).set_index("arm")
    assert table.loc["two-phase@1", "compared"] == 2


def test_cli_seeds_runs_each_seed_and_prints_the_band_table(runs_dir, data_root):
    done = subprocess.run(
        [sys.executable, "-m", "twophase", "run", "--model", "mlp", "--subset", "128", "--val-subset", "100",
         "--epochs", "2", "--batch-size", "64", "--arms", "adam,two-phase@1", "--seeds", "2", "--threads", "1",
         "--data-dir", data_root, "--runs-dir", str(runs_dir), "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "seed 1 of 2" in done.stdout and "seed 2 of 2" in done.stdout
    assert "over 2 seeds" in done.stdout and "two-phase (switch at 1): ahead of Adam at equal data passes in" in done.stdout
    listed = runs.list_runs(str(runs_dir))
    assert len(listed) == 2 and len({i.config["group"] for i in listed}) == 1
    last = json.loads(done.stdout.strip().splitlines()[-1])
    assert [s["status"] for s in last["runs"]] == ["completed", "completed"]
    assert np.isfinite(last["seeds"][0]["train loss (median)"])


def test_the_train_page_runs_two_seeds_and_draws_their_band(runs_dir):
    from test_app_pages import new_app, plotly_specs, set_tiny, wait_final

    at = new_app()
    set_tiny(at, arms=["adam", "two-phase"], epochs=2)
    at.text_input(key="cfg_seeds").set_value("2")
    at.button(key="start").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    first = at.query_params["run"]
    assert wait_final(at) == "completed"
    deadline = time.time() + 120
    while any(i.status != "completed" for i in runs.list_runs(str(runs_dir))) or len(runs.list_runs(str(runs_dir))) < 2:
        assert time.time() < deadline
        time.sleep(0.5)
    at.run()
    listed = runs.list_runs(str(runs_dir))
    assert sorted(i.config["seed"] for i in listed) == [0, 1] and {i.config["group"] for i in listed} == {first}
    assert any(h.value == "2 seeds" for h in at.subheader)
    bands = [s for s in plotly_specs(at) if "over seeds" in s["layout"]["title"]["text"]]
    assert len(bands) == 2
    roles = [t["meta"]["role"] for t in bands[0]["data"]]
    assert roles.count("band_low") == 2 and roles.count("band_median") == 2
    assert any("ahead of Adam at equal data passes in" in m.value and "of 2 seeds" in m.value for m in at.markdown)


def test_compare_draws_the_seeds_of_a_group_as_one_band_and_the_other_runs_as_lines(finished_runs):
    # the Compare page groups several-seed runs: median and min-max band per group, the seeds' table
    # and headline; toggled off, every seed is a line of its own again
    import shutil

    from test_app_pages import new_app, plotly_specs

    (src,) = [p for p in finished_runs.iterdir()]
    members = []
    for seed, scale in ((0, 1.0), (1, 1.5), (2, 0.5)):
        run_id = f"20200101-00000{seed}-abc00{seed}"
        shutil.copytree(src, finished_runs / run_id)
        cfg = json.loads((finished_runs / run_id / "config.json").read_text())
        cfg.update(seed=seed, group="20200101-000000-abc000", name="three seeds")
        (finished_runs / run_id / "config.json").write_text(json.dumps(cfg))
        metrics = pd.read_csv(finished_runs / run_id / "metrics.csv")
        metrics["train_loss"] = metrics["train_loss"] * scale
        metrics.to_csv(finished_runs / run_id / "metrics.csv", index=False)
        members.append(run_id)
    at = new_app()
    at.switch_page("pages/compare.py").run()
    at.multiselect(key="cmp_runs").set_value([src.name, *members]).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.toggle(key="cmp_seed_bands").value is True
    specs = plotly_specs(at)
    overlay = [s for s in specs if "over seeds" not in s["layout"]["title"]["text"]]
    bands = [s for s in specs if "over seeds" in s["layout"]["title"]["text"]]
    assert len(bands) == 1 and len(overlay) == 1
    assert len(overlay[0]["data"]) == 2  # the ungrouped run's two arms, no seed among them
    medians = [t for t in bands[0]["data"] if t["meta"]["role"] == "band_median"]
    lows = [t for t in bands[0]["data"] if t["meta"]["role"] == "band_low"]
    assert {t["meta"]["arm"] for t in medians} == {"adam", "two-phase"}
    base = runs.load_run(str(finished_runs), src.name).metrics
    adam = base[base["arm"] == "adam"].sort_values("epoch")["train_loss"].to_numpy()
    (adam_median,) = [t for t in medians if t["meta"]["arm"] == "adam"]
    (adam_low,) = [t for t in lows if t["meta"]["arm"] == "adam"]
    assert np.allclose(plotly_values(adam_median["y"]), adam) and np.allclose(plotly_values(adam_low["y"]), 0.5 * adam)
    table = [df.value for df in at.dataframe if "train loss (median)" in df.value.columns]
    assert len(table) == 1 and set(table[0]["seeds"]) == {3}
    assert any("of 3 seeds" in c.value for c in at.caption)
    at.toggle(key="cmp_seed_bands").set_value(False).run()
    specs = plotly_specs(at)
    assert len(specs) == 1 and len(specs[0]["data"]) == 2 * 4


def plotly_values(y) -> np.ndarray:
    """A trace's y as numbers (plotly may encode arrays as {"dtype", "bdata"})."""
    if isinstance(y, dict) and "bdata" in y:
        import base64

        return np.frombuffer(base64.b64decode(y["bdata"]), dtype=np.dtype(y["dtype"]))
    return np.asarray(y, dtype=float)
