"""Curvature on the app's default run: does the switch come where negative curvature disappears?

Runs the default RunConfig (both arms) with the Hessian probe on, then writes
assets/curvature_default_run.png (the project's own plots.grad_norm_and_curvature_figure) and
benchmarks/results/curvature.md with the per-epoch ratios around the switch. `--size long`: the
same on 1,000 epochs (the probe every 10 epochs), where the surface turns nearly convex long after
the gradient-norm peak: the run is copied into the package (twophase/data_files/curvature_runs/,
the Learn page draws it) and benchmarks/results/curvature_long.md lists the trunk's probes.
Usage: python -m benchmarks.curvature [--size small|full|long]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import shutil

from benchmarks import common
from twophase import analysis, plots, runs
from twophase.config import RunConfig
from twophase.training.run import run_experiment

ROOT = Path(__file__).resolve().parent.parent
PNG = ROOT / "assets" / "curvature_default_run.png"
RESULTS = Path(__file__).resolve().parent / "results"


def ship_run(source: Path, shipped_dir: Path) -> Path:
    """Copy run folder `source` into `shipped_dir` (replacing any run there) as the package ships it:
    config, summary and events as written, metrics.csv with its numbers to 6 significant digits
    (a figure's precision, half the size), no checkpoint files."""
    import pandas as pd

    if shipped_dir.exists():
        shutil.rmtree(shipped_dir)
    target = shipped_dir / source.name
    target.mkdir(parents=True)
    for name in ("config.json", "summary.json", "events.jsonl"):
        shutil.copyfile(source / name, target / name)
    pd.read_csv(source / "metrics.csv").to_csv(target / "metrics.csv", index=False, float_format="%.6g")
    return target


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["small", "full", "long"], default="full")
    parser.add_argument("--png", default=None, help="where to draw the figure (default: assets/curvature_default_"
                        "run.png; with --size long no PNG unless given)")
    args = parser.parse_args(argv)
    long = args.size == "long"
    png = Path(args.png) if args.png else (None if long else PNG)
    config = RunConfig(hessian_probe=True, probe_every=1, threads=1)
    if args.size == "small":
        config = config.replace(subset=256, val_subset=256, epochs=3)
    if long:
        config = config.replace(epochs=1000, probe_every=10)
    runs_dir = tempfile.mkdtemp(prefix="twophase-curvature-")
    summary = run_experiment(config, runs_dir)
    run = runs.load_run(runs_dir, summary["run_id"])
    df, events = run.metrics, run.events

    if long:  # the Learn page draws it live from the shipped copy; a PNG only when asked for
        ship_run(run.path, runs.CURVATURE_RUNS_DIR)
        print(f"curvature: shipped the run to {runs.CURVATURE_RUNS_DIR / run.run_id}")
    if png is not None:
        fig = plots.grad_norm_and_curvature_figure(df, events, log_x=long, ratio_range=(-0.3, 0.05) if long else None)
        png.parent.mkdir(parents=True, exist_ok=True)
        problem = common.save_png(fig, png, width=1050, height=650)
        if problem:
            print(f"curvature: the figure was not drawn: {problem}", file=sys.stderr)
    switch = analysis.switch_epoch(df, events)

    tp = df[df["arm"] == "two-phase"].copy()
    tp["ratio"] = tp["hess_min"] / tp["hess_max"]
    tp = tp[tp["ratio"].notna()]
    negative = tp[(tp["epoch"] > 0) & (tp["ratio"] < 0)]["epoch"].tolist()
    if long:  # the Adam arm: the trunk's surface, epoch by epoch of the whole run
        adam = df[df["arm"] == "adam"].copy()
        adam["ratio"] = adam["hess_min"] / adam["hess_max"]
        adam = adam[adam["ratio"].notna()]
        keep = [0, switch or 0, 10, 30, 100, 200, 300, 400, 600, 800, 1000]
        lines = [f"### Curvature over a long run (`python -m benchmarks.curvature --size long`)", "",
                 f"Config: {config.model}, {config.subset} MNIST images, {config.epochs} epochs, the probe every "
                 f"{config.probe_every} epochs (Lanczos, 20 steps, on 512 training images). The paper's rule switched "
                 f"after epoch {switch}. The Adam arm (the trunk) at chosen epochs:", "",
                 "| epoch | train loss | grad norm | hess_min | hess_max | hess_min / hess_max |",
                 "|---|---|---|---|---|---|"]
        for _, r in adam[adam["epoch"].isin(keep)].iterrows():
            lines.append(f"| {int(r.epoch)} | {r.train_loss:.3g} | {r.grad_norm:.3g} | {r.hess_min:.3g} | "
                         f"{r.hess_max:.3g} | {r.ratio:.2g} |")
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "curvature_long.md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
        return {"switch": switch, "negative_epochs": negative}
    lines = [f"### Curvature on the default run (`python -m benchmarks.curvature --size {args.size}`)", "",
             f"Config: {config.model}, {config.subset} MNIST images, {config.epochs} epochs, tolerance "
             f"{config.tolerance}; switch after epoch {switch}. Epochs of the two-phase arm with "
             f"hess_min < 0: {negative if negative else 'none'}.", "",
             "| epoch | phase | grad norm | hess_min | hess_max | ratio |", "|---|---|---|---|---|---|"]
    for _, r in tp[tp["epoch"] <= (switch or 0) + 5].iterrows():
        lines.append(f"| {int(r.epoch)} | {r.phase} | {r.grad_norm:.3g} | {r.hess_min:.3g} | {r.hess_max:.3g} | "
                     f"{r.ratio:.3g} |")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "curvature.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return {"switch": switch, "negative_epochs": negative}


if __name__ == "__main__":
    main()
