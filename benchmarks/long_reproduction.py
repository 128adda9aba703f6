"""The paper's protocol at its epoch budgets on 1,024 MNIST images (the `long` reproduction), beside Table 1.

A cell is (model, seed): the `long` scale's run of `python -m twophase reproduce --scale long`
(the same config, tag and runs folder, so a cell trained by either command counts for both).
One Adam trunk, 1000 epochs (700 for vit-mlp), and from it two-phase with the paper's 30% split
(golden-section CG, as the paper) and branches switched after epoch 3, at 10%, at 60% and by the
paper's gradient-norm rule.

    python -m benchmarks.long_reproduction                         # every cell not yet recorded (hours each here)
    python -m benchmarks.long_reproduction --models vit-nomlp --seeds 1,2
    python -m benchmarks.long_reproduction --report-only          # the tables from what is recorded

Every finished cell is recorded, one row per arm, in <out>/long_reproduction_arms.csv
(committed): a recorded cell is not trained again, so a machine with an empty runs folder carries
the reproduction on, and an interrupted cell goes on from its checkpoint. From those rows:
Table 1 beside the paper's (means over the seeds), two-phase / Adam at equal epochs (the paper's
basis), equal data passes and equal wall time, the switch sweep, and how long each cell took.
twophase/data_files/measured_long.csv and measured_long_sweep.csv are the copies that the Paper
page shows.
"""

from __future__ import annotations

import math
import sys
import tempfile
from pathlib import Path

import pandas as pd

from benchmarks import common

ALGORITHM_ARMS = {"adam": "adam", "two-phase": "two-phase"}  # Table 1's algorithms: the Adam arm, the 30% split
BRANCHES = {"two-phase@3": "after epoch 3", "two-phase@10%": "at 10%", "two-phase": "at 30% (the paper's split)",
            "two-phase@60%": "at 60%", "two-phase@paper": "by the paper's rule"}
SIZES = {
    "tiny": dict(epochs=6, subset=128, val_subset=100, models=["vit-nomlp-wkewq-wvwo"], seeds=[0]),
    "small": dict(epochs=20, subset=256, val_subset=200, models=["vit-nomlp-wkewq-wvwo"], seeds=[0]),
    "full": dict(epochs=None, subset=None, val_subset=None, models=None, seeds=[0]),
    "issue": dict(epochs=None, subset=None, val_subset=None, models=None, seeds=[0, 1, 2]),
}
MEASURED_LONG = common.ROOT / "twophase" / "data_files" / "measured_long.csv"
MEASURED_LONG_SWEEP = common.ROOT / "twophase" / "data_files" / "measured_long_sweep.csv"


def plan_for(size: str, models=None, seeds=None):
    from twophase import paper

    s = SIZES[size]
    kwargs = {k: s[k] for k in ("subset", "val_subset") if s[k] is not None}
    return paper.make_plan(models=models or s["models"], seeds=seeds or s["seeds"], scale="long",
                           epochs=s["epochs"], data_root=common.data_root(), threads=1, **kwargs)


def _key(model, seed) -> tuple:
    return str(model), int(seed)


def recorded(out_dir: Path, plan_id: str) -> pd.DataFrame:
    """The arm rows already in the results folder for this reproduction (committed to git)."""
    path = Path(out_dir) / "long_reproduction_arms.csv"
    if not path.exists():
        return pd.DataFrame()
    rows = pd.read_csv(path)
    rows = rows.drop(columns=[c for c in rows if c.startswith("machine_")])
    rows["run"] = None
    return rows[rows["reproduction"] == plan_id].reset_index(drop=True)


def arm_rows(plan, runs_dir: str) -> pd.DataFrame:
    """One row per arm of every finished cell of `plan` in runs_dir: final figures, switch epoch,
    the ratio of its training loss to Adam's at equal epochs, data passes and wall time, the cell's hours."""
    from twophase import analysis, paper, runs

    rows = []
    for state in paper.cell_states(plan, runs_dir):
        if state.status != "done":
            continue
        run = runs.load_run(runs_dir, state.run_id)
        m = run.metrics.sort_values(["arm", "epoch"])
        adam = m[m["arm"] == "adam"].to_dict("records")
        summary = run.summary or {}
        for arm, part in m.groupby("arm", sort=False):
            figures = (summary.get("arms") or {}).get(arm, {})
            ratios = analysis.ratios_to_baseline(part.to_dict("records"), adam) if arm != "adam" else {}
            rows.append({
                "reproduction": plan.id, "dataset": state.cell.dataset, "model": state.cell.model,
                "seed": state.cell.seed, "epochs": run.config.get("epochs"), "arm": arm,
                "switch epoch": figures.get("switch_epoch"),
                **{k: figures.get(k) for k in ("train_loss", "train_acc", "val_loss", "val_acc", "data_passes",
                                               "seconds")},
                "ratio at equal epochs": (ratios.get("epoch") or {}).get("ratio"),
                "ratio at equal passes": (ratios.get("data_passes") or {}).get("ratio"),
                "ratio at equal time": (ratios.get("seconds") or {}).get("ratio"),
                "cell hours": (summary.get("duration_s") or math.nan) / 3600,
                "cpu": common.machine_info()["cpu"], "run": state.run_id,
            })
    return pd.DataFrame(rows)


def _mean(values) -> float:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return sum(vals) / len(vals) if vals else math.nan


def _wins(values) -> str:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return f"{sum(v < 1 for v in vals)}/{len(vals)}" if vals else "-"


def table1(rows: pd.DataFrame) -> pd.DataFrame:
    """Table 1's layout: per model and algorithm our final figures (mean over seeds), the paper's beside."""
    from twophase.paper import published

    out = []
    for (dataset, model), cell in rows.groupby(["dataset", "model"], sort=False):
        ref = published.figures_for(model, dataset)
        for algorithm, arm in ALGORITHM_ARMS.items():
            part = cell[cell["arm"] == arm]
            theirs = ref[ref["algorithm"] == algorithm]
            row = {"dataset": dataset, "model": model, "algorithm": algorithm, "seeds": part["seed"].nunique(),
                   "epochs": int(part["epochs"].max())}
            for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
                row[key] = _mean(part[key])
                row[f"paper_{key}"] = float(theirs[key].iloc[0]) if len(theirs) else math.nan
            out.append(row)
    return pd.DataFrame(out)


def comparison(rows: pd.DataFrame) -> pd.DataFrame:
    """Two-phase (the 30% split) over Adam per model: the paper's ratio and ours at equal epochs, data
    passes and wall time (median over seeds, and in how many seeds two-phase was lower), and hours a cell."""
    from twophase.paper import published

    out = []
    for (dataset, model), cell in rows.groupby(["dataset", "model"], sort=False):
        split = cell[cell["arm"] == "two-phase"]
        tp, adam = (published.final_loss(model, dataset, a) for a in ("two-phase", "adam"))
        row = {"dataset": dataset, "model": model, "seeds": split["seed"].nunique(),
               "paper: two-phase / Adam": tp / adam if tp is not None and adam else math.nan}
        for axis in ("epochs", "passes", "time"):
            values = list(split[f"ratio at equal {axis}"])
            row[f"equal {axis}"] = common.median(values)
            row[f"wins at equal {axis}"] = _wins(values)
        row["hours per cell"] = _mean(cell.drop_duplicates("seed")["cell hours"])
        out.append(row)
    return pd.DataFrame(out)


def sweep(rows: pd.DataFrame) -> pd.DataFrame:
    """Every branch from the Adam trunk: its training loss over Adam's at equal data passes, as
    "median over seeds (seeds where the branch is lower / seeds)", and the paper's rule's switch epochs."""
    out = []
    for (dataset, model), cell in rows.groupby(["dataset", "model"], sort=False):
        row = {"dataset": dataset, "model": model, "seeds": cell["seed"].nunique()}
        for arm, label in BRANCHES.items():
            ratios = list(cell[cell["arm"] == arm]["ratio at equal passes"])
            row[f"switch {label}"] = f"{common.median(ratios):.3g} ({_wins(ratios)})" if ratios else "-"
        epochs = sorted({int(e) for e in cell[cell["arm"] == "two-phase@paper"]["switch epoch"].dropna()})
        row["paper's rule switched after epoch"] = ", ".join(map(str, epochs)) or "never"
        out.append(row)
    return pd.DataFrame(out)


def measured_copy(table: pd.DataFrame, compare: pd.DataFrame) -> pd.DataFrame:
    """What the Paper page shows: Table 1's rows with our ratios to Adam beside the two-phase rows."""
    keep = table[["dataset", "model", "algorithm", "seeds", "epochs", "train_loss", "train_acc", "val_loss",
                  "val_acc"]]
    ratios = compare[["dataset", "model", "equal epochs", "equal passes", "equal time", "hours per cell"]].rename(
        columns={"equal epochs": "ratio_epochs", "equal passes": "ratio_passes", "equal time": "ratio_time",
                 "hours per cell": "hours"})
    out = keep.merge(ratios, on=["dataset", "model"], how="left")
    out.loc[out["algorithm"] != "two-phase", ["ratio_epochs", "ratio_passes", "ratio_time"]] = math.nan  # Adam's own row
    return out


def measured_sweep_copy(rows: pd.DataFrame) -> pd.DataFrame:
    """What the Paper page shows of the sweep: per model and branch (in BRANCHES' order), the
    median switch epoch and the median ratios to Adam at equal epochs, passes and time over the
    seeds, with the seeds where the branch was lower per pass."""
    out = []
    for (dataset, model), cell in rows.groupby(["dataset", "model"], sort=False):
        for arm, label in BRANCHES.items():
            part = cell[cell["arm"] == arm]
            if part.empty:
                continue
            row = {"dataset": dataset, "model": model, "branch": f"switch {label}", "seeds": part["seed"].nunique(),
                   "switch_epoch": common.median(list(part["switch epoch"].dropna()))}
            for axis in ("epochs", "passes", "time"):
                row[f"ratio_{axis}"] = common.median(list(part[f"ratio at equal {axis}"].dropna()))
            row["wins_passes"] = _wins(part["ratio at equal passes"])
            out.append(row)
    return pd.DataFrame(out)


def main(args) -> common.Report:
    from twophase import paper, runs

    models = [m.strip() for m in args.models.split(",")] if getattr(args, "models", None) else None
    seeds = [int(s) for s in args.seeds.split(",")] if getattr(args, "seeds", None) else None
    plan = plan_for(args.size, models, seeds)
    runs_dir = getattr(args, "runs_dir", None) or (
        runs.default_runs_dir() if args.size in ("full", "issue") else tempfile.mkdtemp(prefix="long-repro-"))
    runs_dir = str(runs_dir)
    old = recorded(Path(args.out), plan.id)
    done = {_key(m, s) for m, s in old[["model", "seed"]].itertuples(index=False)} if len(old) else set()
    if not getattr(args, "report_only", False):
        todo = [c for c in plan.cells if _key(c.model, c.seed) not in done]
        for cell in plan.cells:
            if _key(cell.model, cell.seed) in done:
                print(f"long_reproduction: {cell.key} is in the results folder already", file=sys.stderr, flush=True)
        if todo:
            import dataclasses

            paper.run_plan(dataclasses.replace(plan, cells=todo), runs_dir,
                           on_line=lambda line: print(line, file=sys.stderr, flush=True))
    whole = plan_for(args.size, None, None)  # every cell of the size: --models and --seeds pick what to train
    new = arm_rows(whole, runs_dir)
    if len(new) and len(old):  # a cell on disk wins over its recorded rows (it is newer)
        here = {_key(m, s) for m, s in new[["model", "seed"]].itertuples(index=False)}
        old = old[[_key(m, s) not in here for m, s in old[["model", "seed"]].itertuples(index=False)]]
    rows = pd.concat([old, new], ignore_index=True) if len(old) and len(new) else (new if len(new) else old)
    report = common.Report("long_reproduction", "The paper's budgets on 1,024 MNIST images, beside its Table 1",
                           args.size)
    planned = len(whole.cells)
    finished = rows[["model", "seed"]].drop_duplicates() if len(rows) else rows
    report.text(f"Reproduction `{whole.id}` ({whole.describe()}; `python -m twophase reproduce --scale long`): "
                f"{len(finished)} of {planned} planned cells finished. Each cell is one run: an Adam trunk, "
                "two-phase with the paper's 30% split (golden-section CG, as the paper) and branches at epoch 3, "
                "10%, 60% and by the paper's rule, all cloned from the trunk. The paper: the full datasets.")
    if len(rows) == 0:
        return report
    rows = rows.sort_values(["model", "seed", "arm"], kind="stable", ignore_index=True)
    table, compare, branches = table1(rows), comparison(rows), sweep(rows)
    cpus = rows.drop_duplicates(["model", "seed"])["cpu"].fillna("unknown CPU").value_counts()
    report.text("Cells by machine: " + ", ".join(f"{n} on {cpu}" for cpu, n in cpus.items())
                + ". Ratios at equal time compare arms of one cell, trained on one machine.")
    report.table("table1", table, {c: ".3g" for c in table.columns if "loss" in c or "acc" in c},
                 caption="Final figures after the whole budget (mean over the seeds), the paper's beside "
                         "(after 1000 epochs on all 60,000 images):")
    report.table("comparison", compare, {c: ".3g" for c in compare.columns if c.startswith(("equal", "paper"))}
                 | {"hours per cell": ".2f"},
                 caption="Two-phase with the 30% split over Adam: final training losses at equal epochs (the "
                         "paper's basis), and the training loss at the smaller of the two arms' data passes and "
                         "wall time (median over seeds; wins: seeds where two-phase is lower).")
    report.table("sweep", branches, {},
                 caption="The switch sweep from the same trunk: each branch's training loss over Adam's at "
                         "equal data passes, median over seeds (in brackets: seeds where the branch is lower); "
                         "below 1 the switch paid off for the same work.")
    report.table("arms", rows.drop(columns=["run"]), {c: ".3g" for c in rows.columns if c.startswith("ratio")}
                 | {"cell hours": ".2f"}, detail=True, caption="Every arm of every cell:")
    if args.size in ("full", "issue") and Path(args.out).resolve() == (common.RESULTS_DIR / "long").resolve():
        measured_copy(table, compare).to_csv(MEASURED_LONG, index=False, float_format="%.6g")
        measured_sweep_copy(rows).to_csv(MEASURED_LONG_SWEEP, index=False, float_format="%.6g")
    report.meta["runs_dir"] = runs_dir
    return report


def parse(argv=None):
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--models", default=None, metavar="A,B", help="these models only (default: the paper's five)")
    p.add_argument("--seeds", default=None, metavar="S,S", help="these seeds only (default: 0, 1, 2 at --size issue)")
    p.add_argument("--runs-dir", default=None, help="where the cells' runs are kept (default: the app's runs folder, "
                                                     "as `python -m twophase reproduce`)")
    p.add_argument("--report-only", action="store_true", help="no training: the tables from the recorded rows and "
                                                              "the runs on disk")
    return p.parse_args(argv)


if __name__ == "__main__":
    args = parse()
    if args.size in ("full", "issue") and args.out == str(common.RESULTS_DIR):
        args.out = str(common.RESULTS_DIR / "long")
    common.set_threads(args.threads)
    report = main(args)
    report.no_png = args.no_png
    md = report.write(args.out)
    # the arm rows are the record a later machine carries on from
    arms = Path(args.out) / "long_reproduction_arms.csv"
    print(md.read_text())
    print(f"wrote {md} and {arms}", file=sys.stderr)
