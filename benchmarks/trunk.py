"""The shared Adam trunk: wall time of runs whose arms ride one trunk against the same work unshared.

Every arm that starts with Adam trains the same model from the same weights on the same batches
until its switch, so a run computes that Adam prefix once (twophase/training/trunk.py) and each
arm leaves with a copy of the trunk's model where its rule fires. Measured here, each pair of
variants interleaved in one loop (A B, then B A; `common.interleaved`), every run a real
`run_experiment` writing its run folder:

(a) the app's default run (RunConfig(): mlp, 2048 MNIST images, 40 epochs, arms two-phase and
    adam, the paper's rule) with `share_trunk=True` against `share_trunk=False` (each arm its
    own trunk: the per-arm engine's cost);
(b) a 1000-epoch mlp run (2048 images) with arms adam and two-phase@300, shared against unshared;
(c) a 5-point switch sweep, arms adam + two-phase@{3, 100, 300, 600, 900} over 1000 epochs, as
    one run against 5 separate runs (each adam + one of the branches, as one would run them
    without arm specs).

Next to each measured ratio: the ratio expected from measured per-epoch costs,

    expected = (R_s*o + T_s*a + C*c + N_s*w) / (R_u*o + T_u*a + C*c + N_u*w)

with T the trunk epochs each side computes (a trunk epoch: one `Trunk.train_epoch` and its
record passes), C the CG epochs (the same on both sides), N the records written after epoch 0
(one per arm and epoch), R the runs (1, or 5 separate runs), and a, c, w, o read from the
shared run of the same repetition: a = mean wall time of a trunk epoch, c = of a CG epoch (one
branch epoch and its record passes), w = median time to write one record (metrics.csv is
fsynced row by row), o = the rest of the run (set-up, epoch 0, the summary). They come from the
timestamps of the records as they are made: the trunk's riders record right after its epoch,
one after another, then each branch right after its own epoch. Counting epochs alone the
ratio would be (T_s + C) / (T_u + C); for (b) that is (E + (E - S)) / (E + S + (E - S)) =
(2E - S) / (2E).
The records must not change: each pair's final losses are compared (the 'same records' column).
"""

from __future__ import annotations

import math
import sys
import tempfile
import time

import pandas as pd

from benchmarks import common

TARGET = 1.05  # measured / expected time ratio: the shared trunk saves (at least) what the epoch costs predict
FULL_EPOCHS = 1000
FULL_SWITCH = 300
FULL_SWEEP = (3, 100, 300, 600, 900)

# app: RunConfig fields for (a) (the rest RunConfig's defaults); long: for (b) and (c);
# epochs of (b) and (c), whose switch points are FULL_SWITCH and FULL_SWEEP scaled to them; reps
SIZES = {
    "tiny": dict(app=dict(subset=256, val_subset=256, epochs=20), app_reps=2,
                 long=dict(model="mlp", subset=256, val_subset=256), epochs=40, long_reps=2, sweep_reps=1),
    "small": dict(app=dict(), app_reps=3, long=dict(model="mlp", subset=512, val_subset=500), epochs=200,
                  long_reps=2, sweep_reps=2),
    # about 10 minutes here: (b) ~45 s + ~52 s per repetition, (c) ~100 s + ~210 s
    "full": dict(app=dict(), app_reps=5, long=dict(model="mlp", subset=2048), epochs=FULL_EPOCHS, long_reps=2,
                 sweep_reps=1),
}
SIZES["issue"] = SIZES["full"]


def scaled(point: int, epochs: int) -> int:
    """A switch epoch of the 1000-epoch plan at `epochs` epochs (at least 1)."""
    return max(1, min(epochs, round(point * epochs / FULL_EPOCHS)))


# ------------------------------------------------------------------ one run
def timed_run(config, runs_dir: str, share_trunk: bool = True) -> dict:
    """One run_experiment: its wall time, the summary, and (time, arm, epoch, phase) of every record."""
    from twophase.training.run import run_experiment

    stamps = []

    def on_record(row: dict) -> None:
        stamps.append((time.perf_counter(), row["arm"], int(row["epoch"]), row["phase"]))

    t0 = time.perf_counter()
    summary = run_experiment(config, runs_dir, on_record=on_record, share_trunk=share_trunk)
    wall = time.perf_counter() - t0
    if summary["status"] not in ("completed", "diverged"):  # a diverged arm stops alike on both sides
        raise RuntimeError(f"run {summary['run_id']} ended {summary['status']}: {summary.get('error')}")
    return {"wall": wall, "start": t0, "summary": summary, "stamps": stamps, "shared": share_trunk}


def epoch_costs(run: dict) -> dict:
    """From a run's record timestamps: w, the cost of writing one record; a, of a trunk epoch;
    c, of a CG epoch (each without its records' writes); o, the rest of the run.

    Within an epoch the trunk's riders record first, one right after another (right after the
    trunk's epoch and its record passes), then each branch right after its own epoch and record.
    w is the median gap between two riders' records of one epoch (the arm's bookkeeping, the row
    and its fsync: twophase/runs/writer.py); the run's wall time is o + T*a + C*c + N*w exactly, with N
    the records after epoch 0."""
    by_epoch: dict[int, list] = {}
    for stamp in run["stamps"]:
        by_epoch.setdefault(stamp[2], []).append(stamp)
    epochs = sorted(e for e in by_epoch if e > 0)
    gaps = [b[0] - a[0] for e in epochs for a, b in zip(by_epoch[e], by_epoch[e][1:]) if a[3] == b[3] == "adam"]
    w = common.median(gaps) if gaps else 0.0
    trunk_s = cg_s = 0.0
    trunk_n = cg_n = records = 0
    previous = by_epoch[0][-1][0]  # set-up, epoch 0 and its records count to the rest
    for epoch in epochs:
        rows = by_epoch[epoch]
        riders = [s for s in rows if s[3] == "adam"]
        if riders:  # the trunk's epoch (shared: one trunk, its riders record one after another)
            trunk_s += riders[-1][0] - previous - len(riders) * w
            trunk_n += 1
            previous = riders[-1][0]
        for s in rows:
            if s[3] != "adam":
                cg_s += s[0] - previous - w
                cg_n += 1
                previous = s[0]
        records += len(rows)
    other = run["wall"] - trunk_s - cg_s - records * w
    return {"a": trunk_s / trunk_n if trunk_n else math.nan, "c": cg_s / cg_n if cg_n else math.nan,
            "w": w, "o": other, "trunk_epochs": trunk_n, "cg_epochs": cg_n, "records": records}


def records_after_start(summary: dict) -> int:
    """Records a run wrote after epoch 0: one per arm and epoch."""
    return sum(a["epochs"] for a in summary["arms"].values())


def trunk_epochs(summary: dict, shared: bool) -> int:
    """Trunk epochs a run computed: the longest ride when shared, every arm's own when not."""
    rides = [a.get("shared_epochs") or 0 for a in summary["arms"].values()]
    return max(rides) if shared else sum(rides)


def cg_epochs(summary: dict) -> int:
    return sum(a["epochs"] - (a.get("shared_epochs") or 0) for a in summary["arms"].values())


def final_losses(summaries: list[dict]) -> dict:
    """arm -> final training loss over one side's runs (an arm in several runs: each value once)."""
    out: dict[str, set] = {}
    for s in summaries:
        for name, arm in s["arms"].items():
            out.setdefault(name, set()).add(arm.get("train_loss"))
    return out


def same_records(a: list[dict], b: list[dict]) -> bool:
    """The two sides' arms ended with the same training losses (bit for bit)."""
    fa, fb = final_losses(a), final_losses(b)
    return fa.keys() == fb.keys() and all(len(fa[k] | fb[k]) == 1 for k in fa)


# ------------------------------------------------------------------ one comparison
def compare(label: str, config, shared_plan, unshared_plan, reps: int, warmup: int, runs_dir: str) -> dict:
    """Interleave the two plans (each a list of (config, share_trunk) runs made one after another);
    return the table row: measured and expected ratios and the per-epoch costs."""
    results: dict[str, list] = {"shared": [], "unshared": []}

    def variant(name, plan):
        def run():
            runs = [timed_run(cfg, runs_dir, share) for cfg, share in plan]
            results[name].append(runs)
            total = sum(r["wall"] for r in runs)
            print(f"trunk: {label}: {name} {total:.1f} s", file=sys.stderr, flush=True)
            return float(total)
        return run

    times = common.interleaved({"shared": variant("shared", shared_plan),
                                "unshared": variant("unshared", unshared_plan)}, reps=reps, warmup=warmup)
    results = {k: v[warmup:] for k, v in results.items()}
    expected, naive, costs = [], [], []
    for shared_runs, unshared_runs in zip(results["shared"], results["unshared"]):
        (run,) = shared_runs
        cost = epoch_costs(run)
        t_s = sum(trunk_epochs(r["summary"], r["shared"]) for r in shared_runs)
        t_u = sum(trunk_epochs(r["summary"], r["shared"]) for r in unshared_runs)
        cg = sum(cg_epochs(r["summary"]) for r in shared_runs)
        n_s = sum(records_after_start(r["summary"]) for r in shared_runs)
        n_u = sum(records_after_start(r["summary"]) for r in unshared_runs)
        r_s, r_u = len(shared_runs), len(unshared_runs)
        branches = cg * cost["c"] if cg else 0.0  # the same CG epochs on both sides
        expected.append((r_s * cost["o"] + t_s * cost["a"] + branches + n_s * cost["w"])
                        / (r_u * cost["o"] + t_u * cost["a"] + branches + n_u * cost["w"]))
        naive.append((t_s + cg) / (t_u + cg))
        # what a trunk epoch of the unshared side cost if everything else cost what it did in the shared run
        wall_u = sum(r["wall"] for r in unshared_runs)
        implied = (wall_u - r_u * cost["o"] - branches - n_u * cost["w"]) / t_u
        costs.append(dict(cost, t_s=t_s, t_u=t_u, cg=cg, r_s=r_s, r_u=r_u, n_s=n_s, n_u=n_u, implied=implied))
    same = all(same_records([r["summary"] for r in s], [r["summary"] for r in u])
               for s, u in zip(results["shared"], results["unshared"]))
    c0 = costs[0]
    measured = common.ratio_of(times, "shared", "unshared")
    exp = common.median(expected)
    return {"comparison": label, "arms": ", ".join(config.arms), "epochs": config.epochs,
            "train samples": config.subset,
            "runs shared / unshared": f"{c0['r_s']} / {c0['r_u']}",
            "trunk epochs shared / unshared": f"{c0['t_s']} / {c0['t_u']}", "CG epochs": c0["cg"],
            "records shared / unshared": f"{c0['n_s']} / {c0['n_u']}",
            "shared s (median)": common.median(times["shared"]),
            "unshared s (median)": common.median(times["unshared"]),
            "measured ratio": measured, "expected ratio": exp, "measured / expected": measured / exp,
            "epochs-computed ratio": common.median(naive),
            "trunk epoch s (a)": common.median([c["a"] for c in costs]),
            "CG epoch s (c)": common.median([c["c"] for c in costs]),
            "record ms (w)": 1e3 * common.median([c["w"] for c in costs]),
            "rest of a run s (o)": common.median([c["o"] for c in costs]),
            "unshared trunk epoch s (implied)": common.median([c["implied"] for c in costs]),
            "same records": same, "repetitions": len(times["shared"])}


# ------------------------------------------------------------------ main
def main(args) -> common.Report:
    from twophase.config import RunConfig

    size = SIZES[args.size]
    report = common.Report("trunk", "Shared Adam trunk: wall time against the same arms unshared", args.size)
    threads = args.threads
    epochs = size["epochs"]
    switch = scaled(FULL_SWITCH, epochs)
    points = list(dict.fromkeys(scaled(p, epochs) for p in FULL_SWEEP))
    rows = []
    with tempfile.TemporaryDirectory(prefix="twophase-bench-") as runs_dir:
        # (a) the app's default run
        app = RunConfig(**size["app"], threads=threads, tag="benchmark")
        app.validate()
        rows.append(compare("(a) the app's default run", app, [(app, True)], [(app, False)],
                            reps=size["app_reps"], warmup=1, runs_dir=runs_dir))
        # (b) a long run with a fixed switch
        long = RunConfig(**size["long"], epochs=epochs, arms=["adam", f"two-phase@{switch}"], threads=threads,
                         tag="benchmark")
        long.validate()
        rows.append(compare(f"(b) {epochs} epochs, switch at {switch}", long, [(long, True)], [(long, False)],
                            reps=size["long_reps"], warmup=0, runs_dir=runs_dir))
        # (c) a switch sweep: one run against one run per branch
        sweep = RunConfig(**size["long"], epochs=epochs, arms=["adam"] + [f"two-phase@{p}" for p in points],
                          threads=threads, tag="benchmark")
        sweep.validate()
        separate = [(sweep.replace(arms=["adam", f"two-phase@{p}"]), True) for p in points]
        rows.append(compare(f"(c) {len(points)}-point switch sweep over {epochs} epochs", sweep, [(sweep, True)],
                            separate, reps=size["sweep_reps"], warmup=0, runs_dir=runs_dir))
    df = pd.DataFrame(rows)
    for r in rows:
        report.target(common.Target(f"{r['comparison']}: measured / expected time ratio shared / unshared",
                                    r["measured / expected"], TARGET, higher_is_better=False, fmt=".3f",
                                    note=f"measured {r['measured ratio']:.3f}, expected {r['expected ratio']:.3f} "
                                         f"from the per-epoch costs ({r['epochs-computed ratio']:.3f} counting "
                                         "epochs alone)"))
    report.text(f"Every run is a real `run_experiment` (its run folder written to a temporary folder), MNIST, "
                f"the app's settings otherwise; {threads} torch thread(s). Shared: every arm that starts with Adam "
                "rides one trunk until its switch; unshared: `share_trunk=False` (each arm its own trunk) for (a) "
                f"and (b), and for (c) one run per branch (adam + two-phase@S, S in {', '.join(map(str, points))}), "
                "the Adam arm computed in each. The two sides of a comparison alternate within one loop; 'measured "
                "ratio' is the median of the per-repetition ratios of shared to unshared wall time.")
    report.text("Expected ratio = (R_s·o + T_s·a + C·c + N_s·w) / (R_u·o + T_u·a + C·c + N_u·w): T = trunk "
                "epochs computed (a trunk epoch: mini-batch Adam over the training set and the record's full-set "
                "passes), C = CG epochs (one CG iteration and its record passes; the same on both sides), N = "
                "records written after epoch 0 (one per arm and epoch: more in (c)'s separate runs, whose Adam arm "
                "is recorded in each), R = runs; a, c = mean wall time of a trunk epoch and of a CG epoch, w = "
                "median time to write one record (fsynced), o = the rest of a run (set-up, epoch 0, the summary), "
                "all read from the record timestamps of the shared run of the same repetition (its wall time is "
                "o + T_s·a + C·c + N_s·w exactly). 'epochs-computed ratio' = (T_s + C) / "
                "(T_u + C) counts epochs alone (for (b): (2E − S) / (2E)); it is off where a trunk epoch costs "
                "more or less than a CG epoch, and it leaves out a run's fixed costs. 'same records': both sides ended every arm "
                "with the same training loss, bit for bit.")
    report.table("main", df, {"shared s (median)": ".2f", "unshared s (median)": ".2f", "measured ratio": ".3f",
                              "expected ratio": ".3f", "measured / expected": ".3f", "epochs-computed ratio": ".3f",
                              "trunk epoch s (a)": ".4f", "CG epoch s (c)": ".4f", "record ms (w)": ".2f",
                              "rest of a run s (o)": ".3f", "unshared trunk epoch s (implied)": ".4f"})
    report.text("'unshared trunk epoch s (implied)': what one trunk epoch of the unshared side cost if its CG "
                "epochs, records and fixed costs cost what they did in the shared run: (unshared wall time − "
                "R_u·o − C·c − N_u·w) / T_u. Next to a (the shared run's trunk epoch) it shows where a "
                "'measured / expected' away from 1 comes from: a trunk epoch did not cost the same on both sides "
                "(the machine is shared; the runs also differ in how many models take turns in the caches, "
                "which this benchmark does not separate).")
    report.meta["switch"] = switch
    report.meta["sweep_points"] = points
    report.meta["sizes"] = {k: v for k, v in size.items()}
    return report


if __name__ == "__main__":
    raise SystemExit(common.run_main(main, __doc__.splitlines()[0]))
