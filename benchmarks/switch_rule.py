"""Switch-rule variants: switch epoch, final training loss and cost of each.

Variants: the paper's literal rule (tolerance 0.9, patience 1, no smoothing, no minimum),
tolerances 0.8 to 0.97, patience 2 and 3, smoothing 0.5 and 0.8, minimum Adam epochs, a
combination, and the paper's fixed split (Adam for 30% of the epochs).

How it is run: each (setting, seed) is one engine run (`run_experiment`) whose arms are the
Adam-only arm and one two-phase arm per variant, each variant written as an arm spec
("two-phase@tolerance=0.9:patience=2", "two-phase@30%", ...; twophase/training/strategies.py)
on a run whose own rule is the paper's, so every option a spec does not set is the paper's.
Before its switch every two-phase arm is Adam on the same batches from the same weights, so
all of them ride the run's one Adam trunk (the Adam-only arm is the trunk itself) and each
leaves with a copy of the trunk's model where its own rule fires, then trains CG to the last
epoch: the records are those of separate runs, cost accounting included (each arm is charged
the trunk's epochs as if it had trained them alone). Variants whose options coincide at a
size (the two minimum-epoch variants on a few epochs) are one arm. The "check" table compares,
for the first seed of every setting with `engine_check`, the sweep run against a separate
two-arm run (two-phase with the literal rule, Adam only) and every variant's switch epoch
against its `SwitchRule` replayed on the Adam arm's gradient norms.
"""

from __future__ import annotations

import math
import sys
import tempfile
import time

import pandas as pd

from benchmarks import common
from benchmarks.optimizers import SETTINGS, Setting


REACH = "passes to reach Adam's loss"
LITERAL = "paper: tolerance 0.9"
FIXED = "fixed split 30%"
# the run's own switch rule: the paper's (SwitchRule's defaults); an arm spec changes only what it names
BASE_RULE = dict(tolerance=0.9, min_epochs=0, patience=1, smoothing=0.0, switch_epoch=None)


def variants(epochs: int) -> dict[str, dict]:
    """name -> SwitchRule options, for runs of `epochs` epochs."""
    from twophase.training.strategies import fraction_epoch

    out = {LITERAL: dict(tolerance=0.9)}
    for tol in (0.8, 0.85, 0.95, 0.97):
        out[f"tolerance {tol}"] = dict(tolerance=tol)
    out["patience 2"] = dict(tolerance=0.9, patience=2)
    out["patience 3"] = dict(tolerance=0.9, patience=3)
    out["smoothing 0.5"] = dict(tolerance=0.9, smoothing=0.5)
    out["smoothing 0.8"] = dict(tolerance=0.9, smoothing=0.8)
    for pct in (10, 25):
        minimum = max(1, round(pct / 100 * epochs))
        out[f"min Adam epochs {pct}% of the epochs"] = dict(tolerance=0.9, min_epochs=minimum)
    out["smoothing 0.5 + patience 2"] = dict(tolerance=0.9, smoothing=0.5, patience=2)
    out[FIXED] = dict(switch_epoch=fraction_epoch(0.3, epochs))  # the engine's epoch of "two-phase@30%"
    return out


def arm_specs(epochs: int) -> dict[str, str]:
    """name -> the variant's arm spec in its canonical spelling (variants with equal options: equal specs)."""
    from twophase.training.strategies import parse_arm

    out = {}
    for name, options in variants(epochs).items():
        text = "two-phase@30%" if name == FIXED else "two-phase@" + ":".join(f"{k}={v}" for k, v in options.items())
        out[name] = parse_arm(text).name
    return out


def default_variant() -> str | None:
    """The variant whose options are RunConfig's (the app's) default switch rule, if one is."""
    from twophase.config import RunConfig

    d = RunConfig()
    defaults = dict(tolerance=d.tolerance, patience=d.patience, smoothing=d.smoothing, min_epochs=d.min_epochs,
                    switch_epoch=d.switch_epoch)
    base = dict(tolerance=0.9, patience=1, smoothing=0.0, min_epochs=0, switch_epoch=None)
    for name, options in variants(40).items():
        if "switch_epoch" not in options and "min_epochs" not in options and {**base, **options} == defaults:
            return name
    return None


def default_rule_text(rank_df: pd.DataFrame) -> str:
    """Where the app's default rule stands in the ranking, in one sentence."""
    current = default_variant()
    names = list(rank_df["variant"])
    if current is None or current not in names or not names:
        return "The app's default rule (RunConfig) is not one of the variants above."
    row = rank_df.iloc[names.index(current)]
    best = rank_df.iloc[0]
    loss_col, cost_col = rank_df.columns[2], rank_df.columns[3]
    return (f"The app's default rule (RunConfig: {current}) ranks {names.index(current) + 1} of {len(names)} here: "
            f"median final loss / Adam's {row[loss_col]:.3g} and cost to reach Adam's loss {row[cost_col]:.3g}, "
            f"against {best[loss_col]:.3g} and {best[cost_col]:.3g} for the first, {best['variant']}.")


def switch_epoch_of(options: dict, norms: list[float]) -> int | None:
    from twophase.optim import SwitchRule

    rule = SwitchRule(**options)
    for norm in norms:
        if rule.update(norm):
            return rule.switch_epoch
    return None


def _peak_epoch(options, norms, s):
    from twophase.optim import SwitchRule

    rule = SwitchRule(**options)
    for norm in norms:
        rule.update(norm)
        if s is not None and rule.epoch >= s:
            break
    return rule.peak_epoch


def engine_run(cfg, runs_dir, label: str = ""):
    """One run_experiment of `cfg`: (metrics, events, summary); a progress line per epoch on stderr."""
    from twophase.training.run import run_experiment

    records, events = [], []
    started = time.perf_counter()

    def on_record(row: dict) -> None:
        records.append(row)
        if label and row.get("arm") == "adam":
            print(f"  {label}: epoch {row.get('epoch')} ({time.perf_counter() - started:.0f} s)",
                  file=sys.stderr, flush=True)

    summary = run_experiment(cfg, str(runs_dir), on_record=on_record, on_event=events.append)
    if summary["status"] == "failed":
        raise RuntimeError(f"run failed: {summary.get('error')}")
    return pd.DataFrame(records), events, summary


def run_seed(setting: Setting, seed: int, threads: int, runs_dir):
    """One engine run: the Adam arm and one two-phase arm per variant. Returns
    (rows, metrics, events, summary, the RunConfig, variant -> arm spec)."""
    from twophase.config import RunConfig

    epochs = int(setting.fields.get("epochs", RunConfig().epochs))
    specs = arm_specs(epochs)
    arms = ["adam"] + list(dict.fromkeys(specs.values()))
    cfg = RunConfig(**setting.fields, seed=seed, threads=threads, arms=arms, tag="benchmark", **BASE_RULE)
    cfg.validate()
    metrics, events, summary = engine_run(cfg, runs_dir, f"{setting.label} seed {seed}")
    metrics = metrics.sort_values(["arm", "epoch"], kind="stable")
    adam = metrics[metrics["arm"] == "adam"]
    norms = [float(v) for v in adam[adam["epoch"] > 0]["grad_norm"]]
    adam_last = adam.iloc[-1]
    adam_final, adam_passes = float(adam_last["train_loss"]), float(adam_last["data_passes"])
    vs = variants(cfg.epochs)
    rows = []
    for name, spec in specs.items():
        part = metrics[metrics["arm"] == spec]
        last = part.iloc[-1]
        arm = summary["arms"][spec]
        s = arm.get("switch_epoch")  # summary.json's arm entry: the rule's switch_epoch, peak_epoch, ...
        peak = arm.get("peak_epoch") if s is not None else _peak_epoch(vs[name], norms, None)
        _, passes, _seconds = common.cost_to_reach(part, adam_final)
        rows.append({"setting": setting.label, "seed": seed, "variant": name, "arm": spec,
                     "switch epoch": s, "peak epoch": peak,
                     "final train loss": float(last["train_loss"]), "val acc": float(last["val_acc"]),
                     "diverged": arm["status"] == "diverged",
                     "data passes": float(last["data_passes"]), "seconds": float(last["seconds"]),
                     "Adam final loss": adam_final, "loss / Adam": float(last["train_loss"]) / adam_final,
                     "passes to reach Adam's loss": passes,
                     "passes to reach / Adam's passes": passes / adam_passes if math.isfinite(passes) else math.inf,
                     "options": ", ".join(f"{k}={v}" for k, v in vs[name].items())})
    rows.append({"setting": setting.label, "seed": seed, "variant": "Adam only (reference)", "arm": "adam",
                 "switch epoch": None, "peak epoch": None, "final train loss": adam_final,
                 "val acc": float(adam_last["val_acc"]), "diverged": summary["arms"]["adam"]["status"] == "diverged",
                 "data passes": adam_passes, "seconds": float(adam_last["seconds"]),
                 "Adam final loss": adam_final, "loss / Adam": 1.0, "passes to reach Adam's loss": adam_passes,
                 "passes to reach / Adam's passes": 1.0, "options": "-"})
    return rows, metrics, events, summary, cfg, specs


def check_against_engine(cfg, metrics, summary, specs, runs_dir) -> dict:
    """The sweep run against a separate two-arm run_experiment (two-phase with the literal rule,
    Adam only), and every variant's switch epoch against its SwitchRule replayed on Adam's norms."""
    real, real_events, _ = engine_run(cfg.replace(arms=["two-phase", "adam"]), runs_dir)
    literal = specs[LITERAL]
    s = summary["arms"][literal].get("switch_epoch")
    real_switch = next((e["epoch"] for e in real_events if e["kind"] == "switch" and e["arm"] == "two-phase"), None)

    def final(frame, arm):
        return float(frame[frame["arm"] == arm].sort_values("epoch")["train_loss"].iloc[-1])

    ours_tp, ours_ad = final(metrics, literal), final(metrics, "adam")
    tp, ad = final(real, "two-phase"), final(real, "adam")
    adam = metrics[(metrics["arm"] == "adam") & (metrics["epoch"] > 0)].sort_values("epoch")
    norms = [float(v) for v in adam["grad_norm"]]
    replayed = all(switch_epoch_of(options, norms) == summary["arms"][specs[name]].get("switch_epoch")
                   for name, options in variants(cfg.epochs).items())
    rel = lambda a, b: abs(a - b) / max(abs(b), 1e-30)  # noqa: E731
    return {"setting": cfg.model, "seed": cfg.seed, "literal switch epoch (sweep run)": s,
            "literal switch epoch (two-arm run)": real_switch,
            "two-phase final loss (sweep run)": ours_tp, "two-phase final loss (two-arm run)": tp,
            "Adam final loss (sweep run)": ours_ad, "Adam final loss (two-arm run)": ad,
            "max relative difference": max(rel(ours_tp, tp), rel(ours_ad, ad)),
            "switch epochs = rule on Adam's norms": replayed,
            "identical": s == real_switch and rel(ours_tp, tp) < 1e-5 and rel(ours_ad, ad) < 1e-5 and replayed}


def main(args) -> common.Report:
    from twophase import plots

    report = common.Report("switch_rule", "Switch-rule variants", args.size)
    settings = SETTINGS[args.size]
    rows, checks, figs = [], [], []
    with tempfile.TemporaryDirectory(prefix="twophase-bench-") as runs_dir:
        for setting in settings:
            for i, seed in enumerate(setting.seeds):
                t0 = time.perf_counter()
                r, metrics, events, summary, cfg, specs = run_seed(setting, seed, args.threads, runs_dir)
                rows += r
                if i == 0 and setting.engine_check:
                    checks.append(check_against_engine(cfg, metrics, summary, specs, runs_dir))
                if i == 0:  # the figure: Adam and the literal rule's arm, drawn as the app draws a run
                    literal = specs[LITERAL]
                    shown = metrics[metrics["arm"].isin(["adam", literal])].copy()
                    shown["arm"] = shown["arm"].replace({literal: "two-phase"})
                    shown_events = [dict(e, arm="two-phase") for e in events if e.get("arm") == literal]
                    figs.append((setting, seed, shown.reset_index(drop=True), shown_events))
                print(f"switch_rule: {setting.label} seed {seed} in {time.perf_counter() - t0:.0f} s", flush=True)
    df = pd.DataFrame(rows)

    summary = []
    for (setting, variant), part in df.groupby(["setting", "variant"], sort=False):
        summary.append({"setting": setting, "variant": variant, "seeds": len(part),
                        "switch epochs": ", ".join("-" if pd.isna(s) else str(int(s)) for s in part["switch epoch"]),
                        "final train loss (median)": part["final train loss"].median(),
                        "loss / Adam (median)": part["loss / Adam"].median(),
                        "val acc (median)": part["val acc"].median(),
                        "data passes (median)": part["data passes"].median(),
                        "passes to reach Adam's loss / Adam's (median)": part["passes to reach / Adam's passes"].median(),
                        "reached Adam's loss": f"{int(part[REACH].notna().sum())}/{len(part)}"})
    sdf = pd.DataFrame(summary)

    variants_only = df[df["variant"] != "Adam only (reference)"]
    ranking = variants_only.groupby("variant", sort=False).agg(
        loss=("loss / Adam", "median"), cost=("passes to reach / Adam's passes", "median"),
        runs=("loss / Adam", "size")).sort_values(["loss", "cost"])
    rank_df = pd.DataFrame({"variant": ranking.index, "runs": ranking["runs"].values,
                            "median final loss / Adam's (same epochs)": ranking["loss"].values,
                            "median passes to reach Adam's final loss / Adam's passes": ranking["cost"].values})
    report.meta["ranking"] = rank_df.to_dict(orient="records")

    literal = df[df["variant"] == LITERAL]
    early = literal[literal["switch epoch"].notna() & (literal["switch epoch"] <= 3)]
    report.text("What was run: " + "; ".join(f"{s.label} (seeds {', '.join(map(str, s.seeds))})" for s in settings)
                + f"; {args.threads} torch thread(s). Same data, model and Adam settings as the optimizers benchmark. "
                "One engine run per setting and seed: the Adam arm and one two-phase arm per variant (its arm spec "
                "in the 'arm' column of the per-run table) on one shared Adam trunk, each branching to CG where "
                "its rule fires; data passes and seconds are each arm's own (the trunk's epochs charged to every "
                "arm that rode them, as if it had trained them alone).")
    report.text(f"The paper's literal rule switched at epoch 3 or earlier in {len(early)} of {len(literal)} runs "
                f"(switch epochs: {', '.join('-' if pd.isna(s) else str(int(s)) for s in literal['switch epoch'])}; "
                "'-' = never). 'loss / Adam' below 1: the variant ended with a lower training loss than Adam only "
                "after the same number of epochs.")
    report.table("summary", sdf, {"final train loss (median)": ".4g", "loss / Adam (median)": ".3g",
                                  "val acc (median)": ".3f", "data passes (median)": ".1f",
                                  "passes to reach Adam's loss / Adam's (median)": ".3g"})
    report.text("Variants ranked by the median, over every setting and seed, of their final training loss relative "
                "to Adam only after the same epochs; the last column is the cost side: data passes the variant "
                "needed to reach Adam's final loss over the passes Adam needed (above 1: Adam got there cheaper; "
                "inf: never reached).")
    report.table("ranking", rank_df, {"median final loss / Adam's (same epochs)": ".3g",
                                      "median passes to reach Adam's final loss / Adam's passes": ".3g"})
    report.text(default_rule_text(rank_df))
    cdf = pd.DataFrame(checks)
    if len(cdf):
        report.text("Check (first seed of each setting): the sweep run's literal-rule arm and Adam arm against a "
                    "separate `run_experiment` with just those two arms (identical: same switch epoch, final "
                    "losses within 1e-5 relative), and every variant's switch epoch against its `SwitchRule` "
                    "replayed on the Adam arm's gradient norms:")
        report.table("check", cdf, {c: ".6g" for c in cdf.columns if "loss" in c} | {"max relative difference": ".2g"})
    else:
        report.text("The check of the sweep run against a separate two-arm `run_experiment` is in the `full` "
                    "size's section (not run at this size).")
    for setting, seed, metrics, events in figs:
        key = "grad_" + "".join(c if c.isalnum() else "_" for c in setting.label.split(",")[0].split(":")[0]).strip("_")
        fig = plots.grad_norm_figure(metrics, events, x="epoch", tolerance=0.9)
        fig.update_layout(title=f"Gradient norm and the literal rule: {setting.label}, seed {seed}")
        report.figure(key, fig, f"gradient norm with the literal rule's switch, {setting.label}")
    report.table("runs", df, {"final train loss": ".4g", "val acc": ".3f", "data passes": ".1f", "seconds": ".1f",
                              "Adam final loss": ".4g", "loss / Adam": ".3g", "passes to reach Adam's loss": ".1f",
                              "passes to reach / Adam's passes": ".3g"},
                 caption="Every variant of every seed:", detail=True)
    return report


if __name__ == "__main__":
    raise SystemExit(common.run_main(main, __doc__.splitlines()[0]))
