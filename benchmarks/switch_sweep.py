"""Where switching to CG pays off: one Adam trunk per cell, CG branches at many switch points and by every rule.

A cell is (model, training images, seed). Each cell is ONE engine run: the Adam-only arm is the
trunk; every other arm is a two-phase branch cloned from it where its switch happens:

    fixed points   two-phase@3, @10%, @30%, @60% (float32 CG)
    float64        two-phase@10%:float64, @30%:float64, @60%:float64 (model and data promoted
                   to float64 at the switch; the trunk stays float32) -- mlp and cnn-small only
    rules          two-phase@paper (the paper's gradient-norm rule), @plateau (training loss
                   falls less than 0.1% per epoch over 100 epochs), @curvature (Hessian probe every
                   25 epochs finds hess_min / hess_max >= -1e-3), @trial (every 50 epochs, CG for
                   40 data passes; kept when it beats Adam per pass)

float64 cells (the issue size, vit-nomlp-wkewq-wvwo, 3 seeds): a trunk of their own with the 30% and
60% branches in float32 and in float64 beside each other, for the float64 comparison on the one
configuration of the issue whose sweep cells have no float64 branches (a ViT: its branches cost more
than mlp's and cnn-small's). They are kept apart from the sweep's cells (column "cell") and enter
only the float64 table.

Each arm's training loss is compared with Adam's at the smaller of their total data passes (the
cost axis; twophase/analysis.py): below 1, two-phase reached a lower loss for the same work.
Everything a rule reads is charged to its arm (twophase/training/cost.py).

    python -m benchmarks.switch_sweep --size issue   # the study (hours on 2 cores; cells resume)
    python -m benchmarks.switch_sweep --size issue --report-only   # tables from the runs on disk

Runs are kept in --runs-dir (default runs/switch-sweep/<size> for the full and issue sizes, not in
git; a temporary folder for tiny and small): a cell whose run completed
is not run again and an interrupted one goes on from its checkpoint, so the command resumes where
it stopped. A cell already in the results folder's switch_sweep_arms.csv (committed) is not trained
again either, so another machine with an empty runs folder carries the study on. The tables, the figure and a thinned
copy of every curve (every 20th epoch) are written to the results folder.
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from benchmarks import common

EPOCHS = 1000
FIXED = ["two-phase@3", "two-phase@10%", "two-phase@30%", "two-phase@60%"]
FLOAT64 = ["two-phase@10%:float64", "two-phase@30%:float64", "two-phase@60%:float64"]
RULES = ["two-phase@paper", "two-phase@plateau", "two-phase@curvature", "two-phase@trial"]
RULE_NAMES = {"two-phase@paper": "paper's rule (gradient norm)", "two-phase@plateau": "loss plateau",
              "two-phase@curvature": "curvature (probe)", "two-phase@trial": "CG trial",
              "two-phase@30%": "fixed 30% split", "two-phase@60%": "fixed 60% split"}
WITH_FLOAT64 = ("mlp", "cnn-small")
# The float64 cells: float32 and float64 CG branches side by side from a trunk of their own.
FLOAT64_ARMS = ["adam", "two-phase@30%", "two-phase@30%:float64", "two-phase@60%", "two-phase@60%:float64"]
SWEEP, FLOAT64_CELL = "sweep", "float64"  # the kinds of cell (column "cell" of the arm rows)
# The study's cells, cheapest first and seed 0 of every model before any second seed, so that a
# study cut short has the most models. vit-mlp gets the paper's 700 epochs.
STUDY = ([("mlp", n, s) for s in (0, 1, 2) for n in (1024, 2048, 4096)] + [("cnn-small", 1024, s) for s in (0, 1, 2)]
         + [(m, 1024, s) for s in (0, 1, 2) for m in ("vit-nomlp-wkewq-wvwo", "vit-nomlp-wkewq", "vit-nomlp",
                                                         "vit-mlp", "vgg5-max-relu")])
SIZES = {
    "tiny": dict(cells=[("mlp", 256, 0)], epochs=30, float64_cells=[("mlp", 256, 0)]),
    "small": dict(cells=[("mlp", 1024, 0)], epochs=200),
    "full": dict(cells=[("mlp", 1024, 0), ("mlp", 2048, 0)], epochs=EPOCHS),
    "issue": dict(cells=STUDY, epochs=EPOCHS,
                  float64_cells=[("vit-nomlp-wkewq-wvwo", 1024, s) for s in (0, 1, 2)]),
}
TAG = "switch-sweep"
DEFAULT_RUNS = common.ROOT / "runs" / "switch-sweep"
SHIPPED = common.ROOT / "twophase" / "data_files"  # the study's tables as the Paper page shows them


def epochs_for(model: str, epochs: int) -> int:
    return round(epochs * 0.7) if model == "vit-mlp" and epochs == EPOCHS else epochs


def arms_for(model: str, kind: str = SWEEP) -> list[str]:
    if kind == FLOAT64_CELL:
        return list(FLOAT64_ARMS)
    return ["adam"] + FIXED + (FLOAT64 if model in WITH_FLOAT64 else []) + RULES


def cell_name(model: str, subset: int, seed: int, epochs: int, kind: str = SWEEP) -> str:
    return f"{model}-n{subset}-s{seed}-e{epochs}" + ("" if kind == SWEEP else f"-{kind}")


def kind_of(name: str | None) -> str:
    """The kind of cell a run's name says (cell_name's suffix)."""
    return FLOAT64_CELL if str(name or "").endswith(f"-{FLOAT64_CELL}") else SWEEP


def config_for(model: str, subset: int, seed: int, epochs: int, threads: int, kind: str = SWEEP):
    from twophase.config import RunConfig

    return RunConfig(model=model, dataset="mnist", data_root=common.data_root(), subset=subset, val_subset=1000,
                     epochs=epochs_for(model, epochs), seed=seed, threads=threads, arms=arms_for(model, kind),
                     name=cell_name(model, subset, seed, epochs_for(model, epochs), kind), tag=TAG).validate()


def finished_cells(runs_dir: Path, claimed: bool = False) -> dict:
    """name -> run id of the completed runs of this study in runs_dir (claimed: also the runs another
    process is training now, so that two processes sharing the folder never train one cell twice)."""
    from twophase import runs

    done = {}
    for info in runs.list_runs(str(runs_dir)) if runs_dir.exists() else []:
        cfg = info.config if isinstance(info.config, dict) else {}
        live = info.status in runs.ACTIVE_STATUSES and runs.owner_alive(info.summary)
        if cfg.get("tag") == TAG and (info.status == "completed" or (claimed and live)):
            done[cfg.get("name")] = info.run_id
    return done


def resumable_cells(runs_dir: Path) -> dict:
    """name -> run id of this study's runs that were stopped, interrupted or failed with a checkpoint
    (the newest per cell): they are resumed instead of started again."""
    from twophase import runs

    runs.mark_interrupted(str(runs_dir))  # a run left "running" by a dead process
    found = {}
    for info in sorted(runs.list_runs(str(runs_dir)), key=lambda i: i.run_id):
        cfg = info.config if isinstance(info.config, dict) else {}
        if (cfg.get("tag") == TAG and info.status in ("stopped", "interrupted", "failed")
                and runs.checkpoint_info(runs.run_path(str(runs_dir), info.run_id)) is not None):
            found[cfg.get("name")] = info.run_id
    return found


def recorded_cells(out_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The arm rows and thinned curves of the cells already in the results folder (committed to git),
    so that a study carried on by another machine, whose runs/ folder is empty, keeps them and does
    not train them again."""
    arms, curves = Path(out_dir) / "switch_sweep_arms.csv", Path(out_dir) / "switch_sweep_curves.csv"
    if not arms.exists():
        return pd.DataFrame(), pd.DataFrame()
    rows = pd.read_csv(arms)
    if "cell" not in rows:  # recorded before the float64 cells: all of them sweep cells
        rows.insert(0, "cell", SWEEP)
    rows = rows.rename(columns={"machine_cpu": "cpu"}).drop(columns=[c for c in rows if c.startswith("machine_")])
    if "cpu" not in rows:  # recorded before the CPU was kept per cell: all of them on one machine
        rows["cpu"] = _report_cpu(Path(out_dir) / "switch_sweep.json")
    rows["run"] = None
    curves = pd.read_csv(curves) if curves.exists() else pd.DataFrame()
    if len(curves) and "cell" not in curves:
        curves["cell"] = SWEEP
    return rows, curves


def _report_cpu(report_json: Path) -> str | None:
    import json

    try:
        return json.loads(report_json.read_text())["machine"]["cpu"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


CELL_COLUMNS = ["cell", "model", "images", "seed"]


def _key(kind, model, subset, seed) -> tuple:
    return str(kind), str(model), int(subset), int(seed)


def _keys(frame: pd.DataFrame) -> list[tuple]:
    return [_key(*k) for k in frame[CELL_COLUMNS].itertuples(index=False)] if len(frame) else []


def run_cells(cells, epochs: int, runs_dir: Path, threads: int, recorded: set = frozenset()) -> None:
    """Train the cells, (kind, model, images, seed) each, that are neither recorded nor finished."""
    from twophase.training.checkpoint import resume_config
    from twophase.training.run import run_experiment

    runs_dir.mkdir(parents=True, exist_ok=True)
    for kind, model, subset, seed in cells:
        cfg = config_for(model, subset, seed, epochs, threads, kind)
        if _key(kind, model, subset, seed) in recorded:
            print(f"switch_sweep: {cfg.name} is in the results folder already", file=sys.stderr, flush=True)
            continue
        if cfg.name in finished_cells(runs_dir, claimed=True):
            print(f"switch_sweep: {cfg.name} done or being trained by another process", file=sys.stderr, flush=True)
            continue
        started = time.perf_counter()
        last = [0.0]

        def on_record(row, name=cfg.name):
            if row["arm"] == "adam" and row["epoch"] % 100 == 0 and time.perf_counter() - last[0] > 1:
                last[0] = time.perf_counter()
                print(f"  {name}: trunk epoch {row['epoch']} ({time.perf_counter() - started:.0f} s)",
                      file=sys.stderr, flush=True)

        earlier = resumable_cells(runs_dir).get(cfg.name)
        if earlier is not None:  # an interrupted cell goes on from its checkpoint
            print(f"switch_sweep: {cfg.name}: resuming run {earlier}", file=sys.stderr, flush=True)
            cfg = resume_config(str(runs_dir), earlier)[0]
        summary = run_experiment(cfg, str(runs_dir), earlier, on_record=on_record, resume=earlier is not None)
        print(f"switch_sweep: {cfg.name} {summary['status']} in {time.perf_counter() - started:.0f} s",
              file=sys.stderr, flush=True)


# ------------------------------------------------------------------ tables
def arm_rows(runs_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per arm of every finished cell (switch epoch, ratios to Adam, wall time), and the
    thinned curves."""
    from twophase import analysis, runs

    rows, curves = [], []
    for name, run_id in sorted(finished_cells(runs_dir).items()):
        run = runs.load_run(str(runs_dir), run_id)
        m = run.metrics.sort_values(["arm", "epoch"])
        adam = m[m["arm"] == "adam"].to_dict("records")
        cfg = run.config
        kind = kind_of(cfg.get("name"))
        for arm, part in m.groupby("arm", sort=False):
            figures = run.summary["arms"].get(arm, {})
            ratios = analysis.ratios_to_baseline(part.to_dict("records"), adam) if arm != "adam" else {}
            switch = figures.get("switch_epoch")
            after = part[part["epoch"] > (switch or 0)]
            rows.append({
                "cell": kind, "model": cfg["model"], "images": cfg["subset"], "seed": cfg["seed"],
                "epochs": cfg["epochs"], "arm": arm, "switch epoch": switch,
                "ratio at equal passes": (ratios.get("data_passes") or {}).get("ratio"),
                "ratio at equal epochs": (ratios.get("epoch") or {}).get("ratio"),
                "ratio at equal time": (ratios.get("seconds") or {}).get("ratio"),
                "at passes": (ratios.get("data_passes") or {}).get("at"),
                "final train loss": figures.get("train_loss"), "final val acc": figures.get("val_acc"),
                "data passes": figures.get("data_passes"), "seconds": figures.get("seconds"),
                "branch seconds": float(after["seconds"].max() - part[part["epoch"] == (switch or 0)]["seconds"].max())
                if switch and len(after) else None,
                "cpu": common.machine_info()["cpu"], "run": run_id,
            })
            thin = part[(part["epoch"] % 20 == 0) | (part["epoch"] == part["epoch"].max())]
            curves.append(thin[["arm", "epoch", "train_loss", "data_passes", "seconds"]].assign(
                cell=kind, model=cfg["model"], images=cfg["subset"], seed=cfg["seed"]))
    return pd.DataFrame(rows), (pd.concat(curves) if curves else pd.DataFrame())


def merge_recorded(rows, curves, old_rows, old_curves):
    """The cells on disk, and the recorded ones not on disk (a cell on disk wins: it is newer)."""
    if not len(old_rows):
        return _in_order(rows), curves
    here = set(_keys(rows))
    keep = [k not in here for k in _keys(old_rows)]
    rows = pd.concat([old_rows[keep], rows], ignore_index=True) if len(rows) else old_rows[keep]
    if len(old_curves):
        keep = [k not in here for k in _keys(old_curves)]
        curves = pd.concat([old_curves[keep], curves], ignore_index=True) if len(curves) else old_curves[keep]
    return _in_order(rows), curves


def _in_order(rows: pd.DataFrame) -> pd.DataFrame:
    """The sweep's cells first, then the float64 cells, each by model, images and seed (arms as trained)."""
    if not len(rows):
        return rows
    return rows.sort_values(CELL_COLUMNS, key=lambda col: col != SWEEP if col.name == "cell" else col,
                            kind="stable", ignore_index=True)


def _wins(values) -> str:
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return f"{sum(v < 1 for v in vals)}/{len(vals)}" if vals else "-"


def sweep_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per model and image count: the median ratio at equal passes of each fixed switch point."""
    out = []
    for (model, images), part in rows.groupby(["model", "images"], sort=False):
        row = {"model": model, "images": images, "seeds": part["seed"].nunique()}
        for arm in FIXED:
            sel = part[part["arm"] == arm]
            label = arm.split("@")[1]
            row[f"switch {label}"] = common.median(sel["ratio at equal passes"])
            row[f"wins {label}"] = _wins(sel["ratio at equal passes"])
        out.append(row)
    return pd.DataFrame(out)


def rules_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per rule: where it switched and how it did per pass, over every cell (and per model)."""
    out = []
    arms = RULES + ["two-phase@30%", "two-phase@60%"]
    for model, part in [("all", rows)] + list(rows.groupby("model", sort=False)):
        for arm in arms:
            sel = part[part["arm"] == arm]
            if sel.empty:
                continue
            switched = sel["switch epoch"].dropna()
            out.append({"model": model, "rule": RULE_NAMES.get(arm, arm), "cells": len(sel),
                        "switched in": f"{len(switched)}/{len(sel)}",
                        "median switch epoch": common.median(switched) if len(switched) else math.nan,
                        "per-pass wins": _wins(sel["ratio at equal passes"]),
                        "median ratio at equal passes": common.median(sel["ratio at equal passes"]),
                        "median ratio at equal time": common.median(sel["ratio at equal time"])})
    return pd.DataFrame(out)


def sweep_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The sweep's cells only (the float64 cells enter the float64 table alone)."""
    return rows[rows["cell"] == SWEEP] if len(rows) else rows


def float64_table(rows: pd.DataFrame) -> pd.DataFrame:
    """float64 branches against the float32 ones from the same trunk and switch epoch."""
    out = []
    for (kind, model, images, seed), part in rows.groupby(CELL_COLUMNS, sort=False):
        by_arm = part.set_index("arm")
        for arm64 in FLOAT64:
            arm32 = arm64.replace(":float64", "")
            if arm64 not in by_arm.index or arm32 not in by_arm.index:
                continue
            a, b = by_arm.loc[arm32], by_arm.loc[arm64]
            out.append({"cell": kind, "model": model, "images": images, "seed": seed, "switch": arm32.split("@")[1],
                        "float32 / Adam": a["ratio at equal passes"], "float64 / Adam": b["ratio at equal passes"],
                        "float64 / float32 final loss": (b["final train loss"] / a["final train loss"])
                        if a["final train loss"] else math.nan,
                        "float64 / float32 branch time": (b["branch seconds"] / a["branch seconds"])
                        if a["branch seconds"] else math.nan})
    return pd.DataFrame(out)


BAND = 0.01  # float64 and float32 within 1% of each other count as the same


def float64_summary(pairs: pd.DataFrame) -> pd.DataFrame:
    """Per model: how many float64 / float32 pairs, in how many float64 ended more than 1% lower or
    higher, and which did better per pass against Adam (float64 / Adam over float32 / Adam, 1% band)."""
    out = []
    for model, part in pairs.groupby("model", sort=False):
        final = part["float64 / float32 final loss"]
        per_pass = part["float64 / Adam"] / part["float32 / Adam"]
        out.append({"model": model, "pairs": len(part),
                    "float64 final loss lower": int((final < 1 - BAND).sum()),
                    "float64 final loss higher": int((final > 1 + BAND).sum()),
                    "per pass against Adam: same": int(((per_pass - 1).abs() <= BAND).sum()),
                    "float64 better": int((per_pass < 1 - BAND).sum()),
                    "float64 worse": int((per_pass > 1 + BAND).sum()),
                    "median float64 / float32 final loss": common.median(final),
                    "median float64 / float32 branch time": common.median(part["float64 / float32 branch time"]),
                    "range of branch time": f"{part['float64 / float32 branch time'].min():.2g}-"
                                            f"{part['float64 / float32 branch time'].max():.2g}"})
    return pd.DataFrame(out)


def study_points(rows: pd.DataFrame) -> pd.DataFrame:
    """The median over seeds of each fixed switch point's ratio at equal passes, per model and image count."""
    fixed = rows[rows["arm"].isin(FIXED)]
    return (fixed.groupby(["model", "images", "switch epoch"], sort=False)["ratio at equal passes"].median()
            .reset_index())


def ratio_figure(rows: pd.DataFrame):
    """The per-pass ratio against the switch epoch, one line per model and image count (median over seeds)."""
    from twophase import plots

    return plots.switch_study_figure(study_points(rows))


def write_shipped(rows: pd.DataFrame) -> None:
    """The copies the app's Paper page shows (twophase/data_files/switch_study_*.csv)."""
    rows = sweep_rows(rows)
    for name, frame in (("sweep", sweep_table(rows)), ("rules", rules_table(rows)), ("points", study_points(rows))):
        frame.to_csv(SHIPPED / f"switch_study_{name}.csv", index=False, float_format="%.6g")


def main(args) -> common.Report:
    setting = dict(SIZES[args.size])
    # (kind, model, images, seed): the sweep's cells, then the float64 cells
    cells = [(SWEEP, *c) for c in setting["cells"]] + [(FLOAT64_CELL, *c) for c in setting.get("float64_cells", [])]
    models = getattr(args, "models", None)
    if models:  # a second process on the other core takes these models (cells are never trained twice)
        wanted = [m.strip() for m in models.split(",")]
        cells = sorted((c for c in cells if c[1] in wanted), key=lambda c: (c[0] != SWEEP, c[3], wanted.index(c[1])))
    runs_dir = getattr(args, "runs_dir", None)
    if runs_dir is None:  # the long sizes resume from runs kept in the repository's runs/ folder
        runs_dir = DEFAULT_RUNS / args.size if args.size in ("full", "issue") else \
            Path(tempfile.mkdtemp(prefix="switch-sweep-"))
    runs_dir = Path(runs_dir)
    old_rows, old_curves = recorded_cells(Path(args.out))
    if not getattr(args, "report_only", False):
        run_cells(cells, setting["epochs"], runs_dir, args.threads, set(_keys(old_rows)))
    all_rows, curves = arm_rows(runs_dir)
    all_rows, curves = merge_recorded(all_rows, curves, old_rows, old_curves)
    rows = sweep_rows(all_rows)
    report = common.Report("switch_sweep", "Where switching to CG pays off: switch points and rules from one trunk",
                           args.size)
    finished = rows[["model", "images", "seed"]].drop_duplicates() if len(rows) else rows
    report.text(f"{len(finished)} of {len(setting['cells'])} planned cells finished (model, MNIST training images, seed; "
                f"{setting['epochs']} epochs, 700 for vit-mlp; batch 512, MSE, strong Wolfe CG). Each cell is one run: "
                "an Adam trunk and every branch cloned from it at its switch. Ratio: the arm's training loss over "
                "Adam's at the smaller of their total data passes; below 1, switching paid off for the same work.")
    if len(rows) == 0:
        return report
    cpus = rows.drop_duplicates(["model", "images", "seed"])["cpu"].fillna("unknown CPU").value_counts()
    if len(cpus) > 1:  # a study carried on by another machine: wall-time ratios stay within a cell
        report.text("Cells by machine: " + ", ".join(f"{n} on {cpu}" for cpu, n in cpus.items())
                    + ". Ratios at equal time compare arms of one cell, trained on one machine.")
    report.table("sweep", sweep_table(rows), {c: ".3g" for c in sweep_table(rows).columns if c.startswith("switch")},
                 caption="Fixed switch points: median ratio at equal data passes over seeds, and how many seeds "
                         "two-phase was ahead (wins).")
    report.table("rules", rules_table(rows), {"median ratio at equal passes": ".3g", "median ratio at equal time": ".3g",
                                              "median switch epoch": ".0f"},
                 caption="Switch rules against the fixed 30% / 60% splits. Each rule is charged for what it reads: "
                         "the paper's rule one full-set gradient per Adam epoch, the plateau rule a forward pass, "
                         "the curvature rule its probes, the trial rule every trial's CG passes.")
    f64 = float64_table(all_rows)
    if len(f64):
        planned64 = setting.get("float64_cells", [])
        done64 = all_rows[all_rows["cell"] == FLOAT64_CELL][["model", "images", "seed"]].drop_duplicates()
        report.table("float64", f64, {c: ".3g" for c in f64.columns if "/" in c},
                     caption="CG in float64 (model and data promoted at the switch) against float32 CG from the same "
                             "trunk and epoch: ratios to Adam at equal passes, final losses, and the wall time of the "
                             "branch after the switch. Cell \"sweep\": the float64 branches of the sweep's cells "
                             f"(mlp and cnn-small); cell \"float64\": {len(done64)} of {len(planned64)} cells of their "
                             "own (a trunk with the 30% and 60% branches in both precisions), for the models whose "
                             "sweep cells have none.")
        report.table("float64_summary", float64_summary(f64), {c: ".3g" for c in ("median float64 / float32 final loss",
                                                                                  "median float64 / float32 branch time")},
                     caption="float64 against float32 CG per model: pairs; in how many float64's final loss was more "
                             "than 1% lower or higher; per pass against Adam (float64 / Adam over float32 / Adam), "
                             "within 1% (same), below (float64 better) or above (worse); the branch's wall time.")
    report.figure("ratio", ratio_figure(rows), "Two-phase / Adam at equal data passes against the switch epoch")
    report.table("arms", all_rows.drop(columns=["run"]), {"ratio at equal passes": ".3g", "ratio at equal epochs": ".3g",
                                                       "ratio at equal time": ".3g"}, detail=True,
                 caption="Every arm of every cell:")
    if len(curves):  # every 20th epoch of every arm, beside the report (not in its JSON)
        Path(args.out).mkdir(parents=True, exist_ok=True)
        curves.to_csv(Path(args.out) / "switch_sweep_curves.csv", index=False, float_format="%.6g")
    if args.size == "issue" and Path(args.out).resolve() == (common.RESULTS_DIR / "issue").resolve():
        write_shipped(rows)
    report.meta["runs_dir"] = str(runs_dir)
    return report


def parse(argv=None):
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--runs-dir", default=None, help=f"where the cells' runs are kept (default {DEFAULT_RUNS}/<size>)")
    p.add_argument("--report-only", action="store_true", help="no training: tables from the runs on disk")
    p.add_argument("--models", default=None, metavar="A,B",
                   help="train only these models' cells, seed by seed in this order (e.g. a second process "
                        "on the other core); the report still covers every finished cell")
    return p.parse_args(argv)


if __name__ == "__main__":
    import torch

    args = parse()
    if args.size == "issue" and args.out == str(common.RESULTS_DIR):
        args.out = str(common.RESULTS_DIR / "issue")
    common.set_threads(args.threads)
    report = main(args)
    report.no_png = args.no_png
    md = report.write(args.out)
    print(md.read_text())
    print(f"wrote {md}", file=sys.stderr)
    torch.set_num_threads(torch.get_num_threads())
