"""Two-phase against Adam only, Adam then L-BFGS, and CG only, per unit of cost; golden vs strong Wolfe.

For every setting and seed, one run of the engine (`run_experiment`) trains the four arms from
the same initial weights with the default strong Wolfe line search, and a second run trains
the CG-using arms again with the golden-section search (the paper's). Reported per arm:
final training loss, validation accuracy, the switch epoch, and the data passes and wall time
(the engine's counted work) each arm needed to reach the Adam-only arm's final training loss
of the same seed, or "not reached". A data pass: forward and backward over the training set
counts 1, a forward-only pass 1/3 (twophase/training/cost.py).

Golden vs strong Wolfe: the better one is the one with the lower training loss at the same
cost (data passes), read where both curves have data, over every setting and seed.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from benchmarks import common

ALL_ARMS = ["two-phase", "adam", "adam-lbfgs", "cg"]
REACHED = "reached Adam's final loss"


@dataclass
class Setting:
    """One configuration of the comparison.

    label: its name in the tables. fields: RunConfig fields (the rest are RunConfig's defaults).
    seeds: seeds to run. golden_arms: arms rerun with the golden line search.
    """

    label: str
    fields: dict
    seeds: list
    golden_arms: list = field(default_factory=lambda: ["two-phase", "cg"])  # [] = no golden rerun
    engine_check: bool = True  # switch_rule: check its branch method against a real run_experiment


APP = dict(model="mlp", subset=2048, val_subset=2000, epochs=40)  # RunConfig's defaults (the app's)
SETTINGS = {
    "tiny": [Setting("mlp, 256 samples, 4 epochs", dict(model="mlp", subset=256, val_subset=256, epochs=4), [0])],
    "small": [Setting("app default: mlp, 2048 samples, 40 epochs", APP, [0])],
    "full": [
        Setting("app default: mlp, 2048 samples, 40 epochs", APP, [0, 1, 2]),
        Setting("cnn-small, 512 samples, 8 epochs", dict(model="cnn-small", subset=512, val_subset=500, epochs=8),
                [0], ["two-phase"]),
        Setting("vit-mlp, 512 samples, 5 epochs", dict(model="vit-mlp", subset=512, val_subset=500, epochs=5),
                [0], []),
    ],
    # The models on 10k MNIST, 3 seeds. Epochs are what fits one ~2 h session on this 2-core
    # machine (an Adam epoch of vgg5 on 10k images with its record takes ~27 s here); the app
    # default and the golden-vs-strong-Wolfe comparison are in the `full` size, and switch_rule's
    # check of its method against run_experiment runs there too.
    "issue": [
        Setting("vit-mlp, 10000 samples, 8 epochs", dict(model="vit-mlp", subset=10000, val_subset=2000,
                                                         epochs=8), [0, 1, 2], [], engine_check=False),
        Setting("vgg5-max-relu, 10000 samples, 5 epochs", dict(model="vgg5-max-relu", subset=10000,
                                                               val_subset=2000, epochs=5), [0, 1, 2], [],
                engine_check=False),
    ],
}


def loss_at_cost(part: pd.DataFrame, passes: float) -> float:
    """Training loss of one arm at `passes` data passes: the last epoch at or before it."""
    part = part.sort_values("data_passes")
    before = part[part["data_passes"] <= passes + 1e-9]
    return float(before["train_loss"].iloc[-1]) if len(before) else math.nan


def run_setting(setting: Setting, threads: int, runs_dir: str):
    """All runs of one setting: returns (per-seed arm rows, line-search rows, metrics of seed 0)."""
    from twophase.config import RunConfig

    arm_rows, ls_rows, curves = [], [], None
    for seed in setting.seeds:
        base = RunConfig(**setting.fields, seed=seed, threads=threads, arms=list(ALL_ARMS),
                         line_search="strong-wolfe", tag="benchmark")
        t0 = time.perf_counter()
        wolfe, wolfe_events, _ = common.run_comparison(base, runs_dir, progress=f"{setting.label} seed {seed}")
        if setting.golden_arms:
            golden, golden_events, _ = common.run_comparison(
                base.replace(arms=list(setting.golden_arms), line_search="golden"), runs_dir)
        else:
            golden, golden_events = pd.DataFrame(columns=wolfe.columns), []
        print(f"optimizers: {setting.label} seed {seed} in {time.perf_counter() - t0:.0f} s", flush=True)
        adam = wolfe[wolfe["arm"] == "adam"].sort_values("epoch")
        target = float(adam["train_loss"].iloc[-1])
        for ls, metrics, events in (("strong-wolfe", wolfe, wolfe_events), ("golden", golden, golden_events)):
            for arm in metrics["arm"].unique():
                if ls == "golden" and arm not in setting.golden_arms:
                    continue
                part = metrics[metrics["arm"] == arm].sort_values("epoch")
                last = part.iloc[-1]
                switch = [e["epoch"] for e in events if e.get("kind") == "switch" and e.get("arm") == arm]
                diverged = any(e.get("kind") == "diverged" and e.get("arm") == arm for e in events)
                epoch, passes, seconds = common.cost_to_reach(part, target)
                arm_rows.append({"setting": setting.label, "seed": seed, "line search": ls, "arm": arm,
                                 "epochs": int(last["epoch"]), "final train loss": float(last["train_loss"]),
                                 "val acc": float(last["val_acc"]),
                                 "switch epoch": switch[0] if switch else None, "diverged": diverged,
                                 "data passes": float(last["data_passes"]), "seconds": float(last["seconds"]),
                                 "Adam final loss": target, "epoch reaching Adam's loss": epoch,
                                 "passes to reach": passes, "seconds to reach": seconds})
        for arm in setting.golden_arms:
            w = wolfe[wolfe["arm"] == arm]
            g = golden[golden["arm"] == arm]
            common_cost = min(float(w["data_passes"].max()), float(g["data_passes"].max()))
            lw, lg = loss_at_cost(w, common_cost), loss_at_cost(g, common_cost)
            ls_rows.append({"setting": setting.label, "seed": seed, "arm": arm,
                            "final loss strong-wolfe": float(w.sort_values("epoch")["train_loss"].iloc[-1]),
                            "final loss golden": float(g.sort_values("epoch")["train_loss"].iloc[-1]),
                            "passes strong-wolfe": float(w["data_passes"].max()),
                            "passes golden": float(g["data_passes"].max()),
                            "seconds strong-wolfe": float(w["seconds"].max()),
                            "seconds golden": float(g["seconds"].max()),
                            "at equal passes": common_cost,
                            "loss strong-wolfe @": lw, "loss golden @": lg,
                            "better at equal cost": "strong-wolfe" if lw < lg else ("golden" if lg < lw else "tie")})
        if curves is None:
            g = golden.copy()
            g["arm"] = g["arm"] + " (golden)"
            events = list(wolfe_events) + [dict(e, arm=e["arm"] + " (golden)") for e in golden_events]
            curves = (pd.concat([wolfe, g], ignore_index=True), events)
    return arm_rows, ls_rows, curves


def _summarise(df: pd.DataFrame) -> pd.DataFrame:
    """Median over seeds per (setting, line search, arm)."""
    rows = []
    for (setting, ls, arm), part in df.groupby(["setting", "line search", "arm"], sort=False):
        reached = part["passes to reach"].notna()
        n = len(part)
        switches = [int(s) for s in part["switch epoch"] if s is not None and not pd.isna(s)]
        rows.append({
            "setting": setting, "line search": ls, "arm": arm, "seeds": n,
            "final train loss (median)": part["final train loss"].median(),
            "final train loss (min-max)": f"{part['final train loss'].min():.3g}-{part['final train loss'].max():.3g}",
            "val acc (median)": part["val acc"].median(),
            "switch epoch(s)": ", ".join(map(str, switches)) if switches else "-",
            "data passes": part["data passes"].median(), "seconds": part["seconds"].median(),
            REACHED: f"{int(reached.sum())}/{n}",
            "passes to reach (median of reached)": part.loc[reached, "passes to reach"].median()
            if reached.any() else "not reached",
            "seconds to reach (median of reached)": part.loc[reached, "seconds to reach"].median()
            if reached.any() else "not reached",
        })
    return pd.DataFrame(rows)


def main(args) -> common.Report:
    from twophase import plots

    report = common.Report("optimizers", "Optimizers per unit of cost", args.size)
    settings = SETTINGS[args.size]
    all_rows, ls_rows, figures = [], [], []
    with tempfile.TemporaryDirectory(prefix="twophase-bench-") as runs_dir:
        for setting in settings:
            rows, lrows, curves = run_setting(setting, args.threads, runs_dir)
            all_rows += rows
            ls_rows += lrows
            figures.append((setting, curves))
    df = pd.DataFrame(all_rows)
    ldf = pd.DataFrame(ls_rows)
    summary = _summarise(df)

    report.text("What was run: " + "; ".join(
        f"{s.label} (seeds {', '.join(map(str, s.seeds))}; golden rerun of {', '.join(s.golden_arms) or 'no arm'})"
        for s in settings) + ". MNIST, MSE loss, batch 512, lr 1e-3, the paper's switch rule (tolerance 0.9), "
        "one CG iteration per epoch, validation on the official test split (subset). Wall time is the "
        f"engine's counted work with {args.threads} torch thread(s).")
    if args.size != "issue":
        report.text("Sizes are reduced from the issue's (vit-mlp and vgg5-max-relu on 10k MNIST, 3 seeds), which "
                    "take hours on this 2-core machine; `--size issue` runs those (its section is below).")
    else:
        report.text("The app default configuration (3 seeds) and the golden-vs-strong-Wolfe comparison are in "
                    "the `full` size's section; this one adds the issue's two larger configurations. Their epoch "
                    "budgets are small (what fits ~2 h of this machine), so these are early-training results.")
    formats = {"final train loss (median)": ".4g", "val acc (median)": ".3f", "data passes": ".1f",
               "seconds": ".1f", "passes to reach (median of reached)": ".1f",
               "seconds to reach (median of reached)": ".1f"}
    report.table("summary", summary, formats,
                 caption="Median over seeds. 'reached': epochs whose training loss is at or below the Adam-only "
                         "arm's final training loss of the same seed.")
    # plain statements of who won, as measured: per epoch and per unit of cost
    for setting in settings:
        part = summary[(summary["setting"] == setting.label) & (summary["line search"] == "strong-wolfe")]
        by_arm = part.set_index("arm")
        if "two-phase" not in by_arm.index or "adam" not in by_arm.index:
            continue
        tp, ad = by_arm.loc["two-phase"], by_arm.loc["adam"]
        a, b = tp["final train loss (median)"], ad["final train loss (median)"]
        verdict = "lower than" if a < b else ("equal to" if a == b else "higher than")
        reach = tp["passes to reach (median of reached)"]
        reach_text = (f"it reached Adam's final loss after {reach:.1f} data passes (median; "
                      f"{tp[REACHED]} seeds) where Adam needed {ad['data passes']:.1f}"
                      if not isinstance(reach, str) else "it never reached Adam's final loss")
        per_cost = ("fewer" if not isinstance(reach, str) and reach < ad["data passes"] else "more")
        report.text(f"{setting.label}: after the same {setting.fields['epochs']} epochs, two-phase's final training "
                    f"loss {a:.4g} is {verdict} Adam only's {b:.4g} (median over seeds), using {tp['data passes']:.1f} "
                    f"data passes against Adam's {ad['data passes']:.1f}; {reach_text}: per unit of cost two-phase "
                    f"needed {per_cost} passes than Adam at this budget.")
    for setting, (metrics, events) in figures:
        key = "loss_" + "".join(c if c.isalnum() else "_" for c in setting.label.split(",")[0].split(":")[0]).strip("_")
        fig = plots.loss_figure(metrics, events, x="data_passes", log_y=True, validation=False)
        fig.update_layout(title=f"Training loss against cost: {setting.label}, seed {setting.seeds[0]}")
        report.figure(key, fig, f"training loss against data passes, {setting.label}")

    if len(ldf):
        ls_summary = []
        for (setting, arm), part in ldf.groupby(["setting", "arm"], sort=False):
            ls_summary.append({"setting": setting, "arm": arm, "seeds": len(part),
                               "final loss strong-wolfe (median)": part["final loss strong-wolfe"].median(),
                               "final loss golden (median)": part["final loss golden"].median(),
                               "passes strong-wolfe": part["passes strong-wolfe"].median(),
                               "passes golden": part["passes golden"].median(),
                               "seconds strong-wolfe": part["seconds strong-wolfe"].median(),
                               "seconds golden": part["seconds golden"].median(),
                               "strong-wolfe better at equal cost": f"{(part['better at equal cost'] == 'strong-wolfe').sum()}/{len(part)}"})
        lsum = pd.DataFrame(ls_summary)
        wins = (ldf["better at equal cost"] == "strong-wolfe").sum()
        losses_ = (ldf["better at equal cost"] == "golden").sum()
        better = "strong-wolfe" if wins > losses_ else ("golden" if losses_ > wins else "neither (tie)")
        report.meta["line_search_better"] = better
        report.text(f"Line search, golden (the paper's) vs strong Wolfe (c2 0.2): over {len(ldf)} comparisons "
                    f"(setting x seed x arm), strong Wolfe had the lower training loss at equal data passes "
                    f"{wins} times, golden {losses_} times. Better: **{better}** "
                    f"(RunConfig's default is `line_search=\"strong-wolfe\"`).")
        report.table("line_search", lsum, {c: ".4g" for c in lsum.columns if "loss" in c} |
                     {c: ".1f" for c in lsum.columns if c.startswith(("passes", "seconds"))})
    else:
        report.text("No golden-section reruns at this size: the line-search comparison is in the `full` "
                    "size's section.")
    report.table("runs", df, {"final train loss": ".4g", "val acc": ".3f", "data passes": ".1f", "seconds": ".1f",
                              "Adam final loss": ".4g", "passes to reach": ".1f", "seconds to reach": ".1f"},
                 caption="Every arm of every run:", detail=True)
    report.meta["settings"] = [{"label": s.label, "fields": s.fields, "seeds": s.seeds} for s in settings]
    return report


if __name__ == "__main__":
    raise SystemExit(common.run_main(main, __doc__.splitlines()[0]))
