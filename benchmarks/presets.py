"""The Train page's presets, measured: how long each takes here and what it shows, over seeds.

Each preset (twophase/config.py's PRESETS) is run as the app runs it (run_experiment, one torch
thread) for each seed; the table gives its wall time, the switch epoch of every branch and each
branch's training loss against Adam's at equal epochs, data passes and wall time.

    python -m benchmarks.presets --size full     # 3 seeds of every preset
"""

from __future__ import annotations

import tempfile
import time

import pandas as pd

from benchmarks import common

SIZES = {"tiny": dict(seeds=[0], epochs=20, subset=256), "small": dict(seeds=[0], epochs=None, subset=None),
         "full": dict(seeds=[0, 1, 2], epochs=None, subset=None), "issue": dict(seeds=[0, 1, 2], epochs=None, subset=None)}


def preset_config(name: str, seed: int, threads: int, epochs: int | None = None, subset: int | None = None):
    from twophase.config import PRESETS, RunConfig

    fields = dict(PRESETS[name]["fields"])
    if epochs is not None:  # the tiny size only: a smoke test of the code, not of the preset
        fields["epochs"] = epochs
    if subset is not None:
        fields["subset"] = subset
    return RunConfig(**fields, seed=seed, threads=threads, data_root=common.data_root()).validate()


def main(args) -> common.Report:
    from twophase.config import PRESETS
    from twophase.training.run import run_experiment

    size = SIZES[args.size]
    rows = []
    with tempfile.TemporaryDirectory() as runs_dir:
        for name in PRESETS:
            for seed in size["seeds"]:
                cfg = preset_config(name, seed, args.threads, size["epochs"], size["subset"])
                t0 = time.perf_counter()
                summary = run_experiment(cfg, runs_dir)
                wall = time.perf_counter() - t0
                for arm, figures in summary["arms"].items():
                    if arm == "adam":
                        continue
                    ratios = figures.get("vs_adam") or {}
                    rows.append({"preset": name, "seed": seed, "run s": wall, "arm": figures.get("label", arm),
                                 "switch epoch": figures.get("switch_epoch"),
                                 "ratio at equal epochs": (ratios.get("epoch") or {}).get("ratio"),
                                 "ratio at equal passes": (ratios.get("data_passes") or {}).get("ratio"),
                                 "ratio at equal time": (ratios.get("seconds") or {}).get("ratio")})
                print(f"presets: {name} seed {seed}: {wall:.0f} s", flush=True)
    df = pd.DataFrame(rows)
    report = common.Report("presets", "The Train page's presets: time and what they show", args.size)
    report.text("Each preset as the app runs it, per seed. Ratio: the branch's training loss over Adam's (below 1: "
                "lower than Adam's) at the same epoch, after the same data passes and after the same wall time.")
    report.table("main", df, {"run s": ".0f", "ratio at equal epochs": ".3g", "ratio at equal passes": ".3g",
                              "ratio at equal time": ".3g"})
    return report


if __name__ == "__main__":
    raise SystemExit(common.run_main(main, __doc__.splitlines()[0]))
