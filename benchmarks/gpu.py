"""The GPU check: the engine on one large GPU (and NCCL across two when there are two), in one command.

    python -m benchmarks.gpu                 # on a machine with a CUDA GPU: about 5 minutes on one H200
    python -m benchmarks.gpu --size tiny     # the same steps at a tiny size, on the CPU (the smoke test)

Steps, each timed and each recorded with what it found (results/gpu.md, .json, .csv):

1. The app's default run (mlp, 2,048 MNIST images, 40 epochs, the paper's rule) on the GPU.
2. vit-mlp on all of MNIST (60,000 training images) for a few epochs, with CG branches from the
   same Adam trunk (the paper's rule, and switches at 1/3 and 2/3 of the epochs) and one float64 branch.
3. TF32: the matmul and cuDNN TF32 switches during CG are off (twophase/distributed.py no_tf32)
   and back on after, checked on the device.
4. Two processes (torchrun, NCCL) when two or more GPUs are present, on a fixed split; skipped
   (and said so) with one GPU.

Without a GPU at the full size it writes a result that says so and exits 0, so `make bench` stays
green; the README's GPU part reads results/gpu.md and states whether it has run on a GPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import pandas as pd

from benchmarks import common

SIZES = {
    "tiny": dict(default=dict(subset=256, val_subset=256, epochs=4), vit=dict(subset=256, val_subset=256, epochs=3),
                 device="cpu"),
    "small": dict(default=dict(), vit=dict(subset=10_000, val_subset=2_000, epochs=3), device="cuda"),
    "full": dict(default=dict(), vit=dict(subset=None, val_subset=None, epochs=6), device="cuda"),
    "issue": dict(default=dict(), vit=dict(subset=None, val_subset=None, epochs=6), device="cuda"),
}


def _run(config, runs_dir) -> tuple[dict, float]:
    from twophase.training.run import run_experiment

    t0 = time.perf_counter()
    summary = run_experiment(config, runs_dir)
    return summary, time.perf_counter() - t0


def _arm_rows(step: str, summary: dict, wall: float) -> list[dict]:
    rows = []
    for arm, figures in summary["arms"].items():
        ratio = (figures.get("vs_adam") or {}).get("data_passes") or {}
        rows.append({"step": step, "arm": figures.get("label") or arm, "status": figures.get("status"),
                     "epochs": figures.get("epochs"), "switch epoch": figures.get("switch_epoch"),
                     "train loss": figures.get("train_loss"), "val acc": figures.get("val_acc"),
                     "data passes": figures.get("data_passes"), "arm seconds": figures.get("seconds"),
                     "ratio to Adam at equal passes": ratio.get("ratio"), "run wall s": wall,
                     "device": summary.get("device") if "device" in summary else None})
    return rows


def tf32_check(device: str) -> dict:
    """The TF32 switches inside the CG block (no_tf32) and after it."""
    import torch

    from twophase.distributed import no_tf32

    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        with no_tf32():
            inside = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        after = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
    return {"device": device, "tf32 inside CG": inside, "tf32 after CG": after,
            "ok": inside == (False, False) and after == (True, True)}


def two_process_check(size: dict, runs_dir: str) -> dict:
    """torchrun with 2 processes (NCCL) on a fixed split, when 2 GPUs are present."""
    import torch

    from twophase import runs
    from twophase.jobs import launcher

    if not torch.cuda.is_available() or torch.cuda.device_count() < 2:
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return {"skipped": f"{count} GPU(s): two processes need two"}
    run_id = runs.new_run_id()
    args = ["run", "--subset", "4096", "--epochs", "4", "--switch-epoch", "2", "--device", "cuda",
            "--runs-dir", runs_dir, "--run-id", run_id, "--quiet", "--data-dir", common.data_root()]
    t0 = time.perf_counter()
    proc = subprocess.run(launcher.torchrun_command(2, args), capture_output=True, text=True, timeout=300)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"failed": (proc.stdout + proc.stderr)[-2000:], "wall s": wall}
    summary = runs.load_run(runs_dir, run_id).summary
    return {"status": summary["status"], "processes": summary.get("processes"), "backend": summary.get("backend"),
            "wall s": wall}


def main(args) -> common.Report:
    import torch

    from twophase.config import RunConfig

    size = SIZES[args.size]
    device = size["device"]
    report = common.Report("gpu", "GPU: the engine on a CUDA device", args.size)
    report.meta["cuda"] = torch.cuda.is_available()
    report.meta["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] \
        if torch.cuda.is_available() else []
    if device == "cuda" and not torch.cuda.is_available():
        report.text("**Not run on a GPU**: this machine has no CUDA device (`torch.cuda.is_available()` is False). "
                    "Run `python -m benchmarks.gpu` where there is one; `--size tiny` runs the same steps on the CPU.")
        report.table("main", pd.DataFrame([{"step": "all", "result": "skipped: no CUDA device"}]))
        return report
    rows = []
    with tempfile.TemporaryDirectory() as runs_dir:
        base = dict(threads=0, device=device, data_root=common.data_root())
        summary, wall = _run(RunConfig(**base, **size["default"]).validate(), runs_dir)
        rows += _arm_rows("default run", summary, wall)
        epochs = size["vit"]["epochs"]
        arms = ["adam", "two-phase@paper", f"two-phase@{max(1, epochs // 3)}", f"two-phase@{max(1, 2 * epochs // 3)}",
                f"two-phase@{max(1, epochs // 3)}:float64"]
        vit = RunConfig(**base, model="vit-mlp", arms=list(dict.fromkeys(arms)), **size["vit"]).validate()
        summary, wall = _run(vit, runs_dir)
        rows += _arm_rows("vit-mlp, CG branches", summary, wall)
        checks = {"tf32": tf32_check(device), "two processes": two_process_check(size, runs_dir)}
    report.text(f"Device: {device}" + (f" ({', '.join(report.meta['gpus'])})" if report.meta["gpus"] else "")
                + ". Each row is one arm of one run; 'run wall s' is the whole run (data loading, monitoring "
                "passes and writing included).")
    report.table("main", pd.DataFrame(rows), {"train loss": ".4g", "val acc": ".3f", "data passes": ".1f",
                                              "arm seconds": ".1f", "ratio to Adam at equal passes": ".3g",
                                              "run wall s": ".1f"})
    report.text("Checks: " + json.dumps(checks, default=str))
    report.meta["checks"] = checks
    return report


if __name__ == "__main__":
    os.environ.setdefault("TWOPHASE_DIST_TIMEOUT", "120")
    raise SystemExit(common.run_main(main, __doc__.splitlines()[0]))
