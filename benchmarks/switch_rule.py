"""Switch-rule variants: switch epoch, final training loss and cost of each.

Variants: the paper's literal rule (tolerance 0.9, patience 1, no smoothing, no minimum),
tolerances 0.8 to 0.97, patience 2 and 3, smoothing 0.5 and 0.8, minimum Adam epochs, a
combination, and the paper's fixed split (Adam for 30% of the epochs).

How it is run, exactly and cheaply: before its switch, a two-phase arm is Adam on the same
batches from the same weights whatever its rule, so one two-phase arm is trained with the
engine (`Arm.run_epoch`) for every epoch without switching, and its state is saved after
every epoch. Each variant's `SwitchRule` reads that arm's gradient norms and gives its switch
epoch; for every distinct switch epoch, a two-phase arm is restored from the saved state,
switched to CG, and trained to the last epoch with the engine. The result is the run the
engine would make with that rule (same records, same cost accounting); a real
`run_experiment` with the literal rule and an Adam-only arm checks this for the first seed of
every setting (the "check" table). The Adam-only reference is the unswitched arm itself (the
same trajectory); its cost is 1 data pass per epoch.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import sys
import tempfile
import time

import pandas as pd
import torch

from benchmarks import common
from benchmarks.optimizers import SETTINGS, Setting


REACH = "passes to reach Adam's loss"


def variants(epochs: int) -> dict[str, dict]:
    """name -> SwitchRule options, for runs of `epochs` epochs."""
    out = {"paper: tolerance 0.9": dict(tolerance=0.9)}
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
    out["fixed split 30%"] = dict(switch_epoch=max(1, round(0.3 * epochs)))
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


def _snapshot(arm) -> dict:
    return {"model": copy.deepcopy(arm.model.state_dict()), "optimizer": copy.deepcopy(arm.optimizer.state_dict()),
            "generator": arm.generator.get_state(), "counter": dataclasses.replace(arm.counter),
            "epoch": arm.epoch, "grad_norm_max": arm.grad_norm_max, "initial_loss": arm.initial_loss}


def _restore(arm, snap: dict) -> None:
    arm.model.load_state_dict(snap["model"])
    arm.optimizer.load_state_dict(copy.deepcopy(snap["optimizer"]))
    arm.generator.set_state(snap["generator"])
    arm.counter = dataclasses.replace(snap["counter"])
    arm.epoch = snap["epoch"]
    arm.grad_norm_max = snap["grad_norm_max"]
    arm.initial_loss = snap["initial_loss"]


def run_seed(setting: Setting, seed: int, threads: int):
    """The unswitched arm, then one CG continuation per distinct switch epoch. Returns
    (rows, records of the unswitched arm, records per switch epoch, variants)."""
    from twophase import data as data_mod
    from twophase import models as models_mod
    from twophase.config import RunConfig
    from twophase.engine import Arm, make_loss

    cfg = RunConfig(**setting.fields, seed=seed, threads=threads, arms=["two-phase"])
    cfg.validate()
    data = data_mod.load(cfg.dataset, root=common.data_root(), subset=cfg.subset, val_subset=cfg.val_subset,
                         seed=seed)
    initial = models_mod.build(cfg.model, data.input_shape, data.num_classes, seed=seed)
    loss_fn = make_loss(cfg.loss)
    never = lambda: False  # noqa: E731

    prefix = Arm.create("two-phase", initial, cfg, data, loss_fn)
    records = [prefix.initial_record()]
    snaps = {0: _snapshot(prefix)}
    started = time.perf_counter()
    for _ in range(cfg.epochs):
        records.append(prefix.run_epoch(never))
        snaps[prefix.epoch] = _snapshot(prefix)
        print(f"  {setting.label} seed {seed}: Adam epoch {prefix.epoch} ({time.perf_counter() - started:.0f} s)",
              file=sys.stderr, flush=True)
    norms = [r["grad_norm"] for r in records[1:]]
    vs = variants(cfg.epochs)
    switch = {name: switch_epoch_of(opts, norms) for name, opts in vs.items()}

    branches: dict[int, list[dict]] = {}
    for s in sorted({e for e in switch.values() if e is not None and e < cfg.epochs}):
        arm = Arm.create("two-phase", initial, cfg, data, loss_fn)
        _restore(arm, snaps[s])
        arm.optimizer.phase = arm.phase = "cg"
        out = []
        while arm.epoch < cfg.epochs:
            rec = arm.run_epoch(never)
            out.append(rec)
            print(f"  {setting.label} seed {seed}: switch at {s}, CG epoch {arm.epoch} "
                  f"({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
            if arm.has_diverged(rec):
                rec["diverged"] = True
                break
        branches[s] = records[:s + 1] + out
    for name, s in switch.items():
        if s is None or s >= cfg.epochs:
            branches.setdefault(-1 if s is None else s, records)

    adam_final = records[-1]["train_loss"]
    rows = []
    for name, s in switch.items():
        recs = branches[-1 if s is None else s]
        last = recs[-1]
        part = pd.DataFrame(recs[1:])
        _, passes, seconds = common.cost_to_reach(part, adam_final)
        rows.append({"setting": setting.label, "seed": seed, "variant": name,
                     "switch epoch": s, "peak epoch": _peak_epoch(vs[name], norms, s),
                     "final train loss": last["train_loss"], "val acc": last["val_acc"],
                     "diverged": bool(last.get("diverged", False)),
                     "data passes": last["data_passes"], "seconds": last["seconds"],
                     "Adam final loss": adam_final, "loss / Adam": last["train_loss"] / adam_final,
                     "passes to reach Adam's loss": passes,
                     "passes to reach / Adam's passes": passes / cfg.epochs if math.isfinite(passes) else math.inf,
                     "options": ", ".join(f"{k}={v}" for k, v in vs[name].items())})
    rows.append({"setting": setting.label, "seed": seed, "variant": "Adam only (reference)", "switch epoch": None,
                 "peak epoch": None, "final train loss": adam_final, "val acc": records[-1]["val_acc"],
                 "diverged": False, "data passes": float(cfg.epochs), "seconds": math.nan,
                 "Adam final loss": adam_final, "loss / Adam": 1.0, "passes to reach Adam's loss": float(cfg.epochs),
                 "passes to reach / Adam's passes": 1.0, "options": "-"})
    return rows, records, branches, switch, cfg


def _peak_epoch(options, norms, s):
    from twophase.optim import SwitchRule

    rule = SwitchRule(**options)
    for norm in norms:
        rule.update(norm)
        if s is not None and rule.epoch >= s:
            break
    return rule.peak_epoch


def check_against_engine(cfg, branches, switch, records, runs_dir) -> dict:
    """A real run_experiment with the literal rule and Adam only, against the branch results."""
    real_cfg = cfg.replace(arms=["two-phase", "adam"], tolerance=0.9, patience=1, smoothing=0.0, min_epochs=0,
                           switch_epoch=None)
    metrics, events, _ = common.run_comparison(real_cfg, runs_dir)
    s = switch["paper: tolerance 0.9"]
    real_switch = next((e["epoch"] for e in events if e["kind"] == "switch" and e["arm"] == "two-phase"), None)
    tp = metrics[metrics["arm"] == "two-phase"].sort_values("epoch")["train_loss"].iloc[-1]
    ad = metrics[metrics["arm"] == "adam"].sort_values("epoch")["train_loss"].iloc[-1]
    ours_tp = branches[-1 if s is None else s][-1]["train_loss"]
    ours_ad = records[-1]["train_loss"]
    rel = lambda a, b: abs(a - b) / max(abs(b), 1e-30)  # noqa: E731
    return {"setting": cfg.model, "seed": cfg.seed, "literal switch epoch (here)": s,
            "literal switch epoch (run_experiment)": real_switch,
            "two-phase final loss (here)": ours_tp, "two-phase final loss (run_experiment)": float(tp),
            "Adam final loss (here)": ours_ad, "Adam final loss (run_experiment)": float(ad),
            "max relative difference": max(rel(ours_tp, tp), rel(ours_ad, ad)),
            "identical": s == real_switch and rel(ours_tp, tp) < 1e-5 and rel(ours_ad, ad) < 1e-5}


def main(args) -> common.Report:
    from twophase import plots

    report = common.Report("switch_rule", "Switch-rule variants", args.size)
    settings = SETTINGS[args.size]
    rows, checks, figs = [], [], []
    with tempfile.TemporaryDirectory(prefix="twophase-bench-") as runs_dir:
        for setting in settings:
            for i, seed in enumerate(setting.seeds):
                t0 = time.perf_counter()
                r, records, branches, switch, cfg = run_seed(setting, seed, args.threads)
                rows += r
                if i == 0 and setting.engine_check:
                    checks.append(check_against_engine(cfg, branches, switch, records, runs_dir))
                if i == 0:
                    s = switch["paper: tolerance 0.9"]
                    lit = pd.DataFrame(branches[-1 if s is None else s])
                    lit["arm"] = "two-phase"
                    ad = pd.DataFrame(records)
                    ad["arm"] = "adam"
                    events = []
                    if s is not None and s < cfg.epochs:
                        pk = _peak_epoch({"tolerance": 0.9}, [x["grad_norm"] for x in records[1:]], s)
                        events = [{"arm": "two-phase", "kind": "peak", "epoch": pk,
                                   "value": records[pk]["grad_norm"]},
                                  {"arm": "two-phase", "kind": "switch", "epoch": s,
                                   "value": records[s]["grad_norm"]}]
                    figs.append((setting, seed, pd.concat([ad, lit], ignore_index=True), events))
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

    literal = df[df["variant"] == "paper: tolerance 0.9"]
    early = literal[literal["switch epoch"].notna() & (literal["switch epoch"] <= 3)]
    report.text("What was run: " + "; ".join(f"{s.label} (seeds {', '.join(map(str, s.seeds))})" for s in settings)
                + f"; {args.threads} torch thread(s). Same data, model and Adam settings as the optimizers benchmark.")
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
        report.text("Check of the method: the literal rule run for real with `run_experiment` (first seed of each "
                    "setting):")
        report.table("check", cdf, {c: ".6g" for c in cdf.columns if "loss" in c} | {"max relative difference": ".2g"})
    else:
        report.text("The check of this method against a real `run_experiment` is in the `full` size's section "
                    "(it would double this size's cost).")
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
