"""Curvature on the app's default run: does the switch come where negative curvature disappears?

Runs the default RunConfig (both arms) with the Hessian probe on, then writes
assets/curvature_default_run.png (the project's own plots.curvature_figure and
grad_norm_figure) and benchmarks/results/curvature.md with the per-epoch ratios
around the switch. Usage: python -m benchmarks.curvature [--size small|full]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from plotly.subplots import make_subplots

from twophase import analysis, plots, runs
from twophase.config import RunConfig
from twophase.training.run import run_experiment

ROOT = Path(__file__).resolve().parent.parent
PNG = ROOT / "assets" / "curvature_default_run.png"
RESULTS = Path(__file__).resolve().parent / "results"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["small", "full"], default="full")
    parser.add_argument("--png", default=str(PNG))
    args = parser.parse_args(argv)
    config = RunConfig(hessian_probe=True, threads=1)
    if args.size == "small":
        config = config.replace(subset=256, val_subset=256, epochs=3)
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
    fig.update_layout(template="plotly_white", width=900, height=650, margin=dict(l=60, r=20, t=60, b=40),
                      legend=dict(orientation="h", y=1.08, x=1, xanchor="right"))
    fig.update_xaxes(title_text="epoch", row=2, col=1)
    Path(args.png).parent.mkdir(parents=True, exist_ok=True)
    fig.write_image(args.png)

    tp = df[df["arm"] == "two-phase"].copy()
    tp["ratio"] = tp["hess_min"] / tp["hess_max"]
    negative = tp[(tp["epoch"] > 0) & (tp["ratio"] < 0)]["epoch"].tolist()
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
