"""Curvature on the app's default run: does the switch come where negative curvature disappears?

Runs the default RunConfig (both arms) with the Hessian probe on, then writes
assets/curvature_default_run.png (the project's own plots.curvature_figure and
grad_norm_figure) and benchmarks/results/curvature.md with the per-epoch ratios
around the switch. `--size long`: the same on 1,000 epochs (the probe every 10 epochs), where
the surface turns nearly convex long after the gradient-norm peak (assets/curvature_long_run.png,
benchmarks/results/curvature_long.md; the Learn page shows it).
Usage: python -m benchmarks.curvature [--size small|full|long]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from plotly.subplots import make_subplots

from benchmarks import common
from twophase import analysis, plots, runs
from twophase.config import RunConfig
from twophase.training.run import run_experiment

ROOT = Path(__file__).resolve().parent.parent
PNG = ROOT / "assets" / "curvature_default_run.png"
RESULTS = Path(__file__).resolve().parent / "results"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["small", "full", "long"], default="full")
    parser.add_argument("--png", default=None)
    args = parser.parse_args(argv)
    long = args.size == "long"
    png = Path(args.png or (ROOT / "assets" / "curvature_long_run.png" if long else PNG))
    config = RunConfig(hessian_probe=True, probe_every=1, threads=1)
    if args.size == "small":
        config = config.replace(subset=256, val_subset=256, epochs=3)
    if long:
        config = config.replace(epochs=1000, probe_every=10)
    runs_dir = tempfile.mkdtemp(prefix="twophase-curvature-")
    summary = run_experiment(config, runs_dir)
    run = runs.load_run(runs_dir, summary["run_id"])
    df, events = run.metrics, run.events

    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.12,
                        subplot_titles=("gradient norm", "hess_min / hess_max (below 0: non-convex)"))
    for trace in plots.grad_norm_figure(df, events).data:
        fig.add_trace(trace, row=1, col=1)
    for trace in plots.curvature_figure(df, events).data:
        trace.showlegend = False
        fig.add_trace(trace, row=2, col=1)
    switch = analysis.switch_epoch(df, events)
    if switch is not None:
        for row in (1, 2):
            fig.add_vline(x=switch, line_dash="dash", line_color=plots.arm_color("two-phase"), row=row, col=1)
    fig.add_hline(y=0.0, line_color="#444", line_width=1, row=2, col=1)
    fig.update_yaxes(type="log", row=1, col=1)
    if long:
        fig.update_xaxes(type="log", row=1, col=1)
        fig.update_xaxes(type="log", row=2, col=1)
        # the ratio's scale: the early, clearly non-convex epochs and the late, nearly convex ones
        # (a stalled float32 CG branch reaches far below; those points leave the plotted range)
        fig.update_yaxes(range=[-0.3, 0.05], row=2, col=1)
        fig.update_layout(legend=dict(orientation="v", x=1.02, xanchor="left", y=1.0), width=1050,
                          margin=dict(r=230))
    fig.update_layout(template="plotly_white", width=900, height=650, margin=dict(l=60, r=20, t=60, b=40),
                      legend=dict(orientation="h", y=1.08, x=1, xanchor="right"))
    fig.update_xaxes(title_text="epoch", row=2, col=1)
    png.parent.mkdir(parents=True, exist_ok=True)
    problem = common.save_png(fig, png, width=fig.layout.width or 900, height=fig.layout.height or 650)
    if problem:
        print(f"curvature: the figure was not drawn: {problem}", file=sys.stderr)

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
