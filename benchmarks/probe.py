"""The curvature probe's cost at its interval, and how many Lanczos steps it needs.

1. Cost: a run with the Hessian probe on (monitoring: at epoch 0, every probe_every epochs, at each
   switch and at the last epoch) against the same run without it, for several probe_every; the
   probe's share is the extra wall time over the run's time with it. Two runs: the app's default
   (mlp, 2,048 images, 40 epochs) and the 'early vs late switch' preset (1,000 epochs).
2. Steps: on the default run's Adam trunk at a few epochs, the probe's extremes after 5-30 Lanczos
   steps against 60 steps (the reference), as the error of hess_min / hess_max. The probe takes 20.

    python -m benchmarks.probe --size full
"""

from __future__ import annotations

import tempfile
import time

import pandas as pd

from benchmarks import common

TARGET = 0.10  # the probe's share of the default run's time at the default interval (at most)
SIZES = {
    # runs: (label, config fields or "preset", probe_every values, repetitions)
    "tiny": dict(runs=[("default run", dict(subset=256, val_subset=256, epochs=6), [1, 5], 1)],
                 epochs=[0, 2], steps=[5, 10, 20], reference=30),
    "small": dict(runs=[("default run", {}, [1, 10, 40], 1)], epochs=[0, 10, 40], steps=[5, 10, 15, 20],
                  reference=40),
    "full": dict(runs=[("default run", {}, [1, 10, 20, 40], 3),
                       ("early vs late switch (1,000 epochs)", "preset", [10, 20, 50, 100], 2)],
                 epochs=[0, 3, 10, 40], steps=[5, 10, 12, 15, 20, 30], reference=60),
}
SIZES["issue"] = SIZES["full"]


def base_config(fields, threads: int):
    from twophase.config import PRESETS, RunConfig

    if fields == "preset":
        fields = dict(PRESETS["early-vs-late"]["fields"])
    return RunConfig(**fields, threads=threads, data_root=common.data_root()).validate()


def timed_run(cfg, runs_dir) -> float:
    from twophase.training.run import run_experiment

    t0 = time.perf_counter()
    summary = run_experiment(cfg, runs_dir)
    assert summary["status"] == "completed", summary.get("error")
    return time.perf_counter() - t0


def cost_rows(size: dict, threads: int) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as runs_dir:
        for label, fields, intervals, reps in size["runs"]:
            cfg = base_config(fields, threads)
            variants = {"off": lambda: timed_run(cfg, runs_dir)}
            for every in intervals:
                probed = cfg.replace(hessian_probe=True, probe_every=every)
                variants[f"every {every}"] = lambda probed=probed: timed_run(probed, runs_dir)
            timed_run(cfg, runs_dir)  # warm-up: the data set's cache, the first allocations
            times = common.interleaved(variants, reps=reps, warmup=0)
            off = common.median(times["off"])
            for every in intervals:
                on = common.median(times[f"every {every}"])
                rows.append({"run": label, "epochs": cfg.epochs, "probe_every": every,
                             "default interval": every == cfg.probe_every, "run s without": off, "run s with": on,
                             "probe share": (on - off) / on})
            print(f"probe: {label} measured", flush=True)
    return rows


def step_rows(size: dict) -> list[dict]:
    """The extremes after each Lanczos step at chosen epochs of the default run's Adam trunk."""
    from benchmarks.roofline import adam_epoch, make_trunk
    from twophase.config import RunConfig
    from twophase.probe import hessian_extremes

    cfg = RunConfig()
    trunk, setup = make_trunk(cfg.model, cfg.subset, seed=cfg.seed)
    rows = []
    for epoch in range(max(size["epochs"]) + 1):
        if epoch in size["epochs"]:
            history: list = []
            hessian_extremes(trunk.model, setup.loss_fn, setup.data.train_x, setup.data.train_y,
                             iters=size["reference"], seed=cfg.seed, history=history)
            ref_min, ref_max = history[-1]
            for k in size["steps"]:
                lo, hi = history[k - 1]
                rows.append({"epoch": epoch, "steps": k, "hess_min": lo, "hess_max": hi,
                             f"hess_min after {size['reference']}": ref_min, "ratio": lo / hi,
                             "reference ratio": ref_min / ref_max,
                             "ratio error / reference": abs(lo / hi - ref_min / ref_max) / abs(ref_min / ref_max),
                             "hess_max error": abs(hi - ref_max) / abs(ref_max)})
        adam_epoch(trunk)
    return rows


def main(args) -> common.Report:
    size = SIZES[args.size]
    report = common.Report("probe", "The curvature probe: cost at its interval, Lanczos steps", args.size)
    cost = pd.DataFrame(cost_rows(size, args.threads))
    from twophase.config import RunConfig

    every = RunConfig().probe_every
    default = cost[(cost["run"] == "default run") & (cost["probe_every"] == every)]
    if len(default):
        report.target(common.Target("the probe's share of the default run's wall time at the default interval "
                                    f"(probe_every={every})", float(default["probe share"].iloc[0]), TARGET,
                                    higher_is_better=False, fmt=".1%"))
    report.text("The probe runs at epoch 0, every probe_every epochs, at each switch (on the trunk, where the "
                "branches start) and at the last epoch: 20 Lanczos steps, each a Hessian-vector product on 512 "
                "training images (two passes over them), plus one gradient with its graph. Share: (time with "
                "the probe - time without) / time with it, medians of interleaved repetitions.")
    report.table("main", cost, {"run s without": ".2f", "run s with": ".2f", "probe share": ".1%"},
                 caption="The probe's share of a run's wall time:")
    steps = pd.DataFrame(step_rows(size))
    report.table("steps", steps, {"hess_min": ".3g", "hess_max": ".4g", f"hess_min after {size['reference']}": ".3g",
                                  "ratio": ".3g", "reference ratio": ".3g", "ratio error / reference": ".1%",
                                  "hess_max error": ".1e"},
                 caption=f"Lanczos steps: the extremes after k steps against {size['reference']} steps, on the "
                         "default run's Adam trunk. hess_max settles within about 10 steps; hess_min can stay put "
                         "for several steps and then move, so the probe keeps a fixed 20 steps and no stopping "
                         "test.")
    return report


if __name__ == "__main__":
    import sys

    sys.exit(common.run_main(main, __doc__.splitlines()[0]))
