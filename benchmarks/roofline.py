"""Roofline: the engine's training FLOP/s against the torch.mm peak of this machine, and speed-ups.

1. Peak: float32 `torch.mm` of square matrices (several sizes, best median), per thread count.
2. FLOPs per sample of each model, counted by `torch.utils.flop_counter.FlopCounterMode` on a
   batch of 512: forward, and forward + backward (matmuls and convolutions only; element-wise
   work is not counted, so the fraction is a lower bound of the machine's real use).
3. Achieved: the engine's mini-batch Adam epoch (`Trunk.train_epoch` of the Adam trunk, batch
   512, on the run `twophase.training.setup.prepare` sets up) in samples/s,
   times the training FLOPs per sample; fraction of the peak at the same thread count.
   Target: at least 40% of the measured matmul peak for vit-mlp and vgg5-max-relu.
4. Speed-ups, interleaved (speed-up = time without the change / time with it); the two the
   engine applies to the CNNs (channels_last memory, pooling before the ReLU) and the one it
   applies to the ViTs (the last layer computes only the class token's row) are measured
   against the engine without them, the others against the engine as it is:
   evaluation passes under torch.inference_mode instead of no_grad (the CG line search's
   value-only passes), chunk sizes of the full-set gradient pass, 1 vs 2 threads, channels_last
   memory for the CNNs, PyTorch's fused scaled_dot_product_attention in the ViT, and
   torch.compile (in a child process with a time limit, so a slow or failing compile falls back
   cleanly to a 'skipped' line). Per-batch host synchronisation: the engine's Adam loop has none
   (no .item() or float() per batch; see overhead).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
import time

import pandas as pd
import torch

from benchmarks import common

TARGET = 0.40
BATCH = 512
TARGET_MODELS = ("vit-mlp", "vgg5-max-relu")
HELPS = 1.05  # a speed-up counts as measurable at or above this median ratio (at or below 1/HELPS: hurts)

SIZES = {
    # models with their training samples; repetitions; mm sizes; thread counts; compile time limit (s)
    "tiny": dict(models=[("mlp", 512)], reps=2, mm=[256], threads=[1, 2], compile_limit=0,
                 chunks=[256, 4096], extra=False),
    "small": dict(models=[("mlp", 2048), ("vit-mlp", 1024)], reps=3, mm=[512, 1024], threads=[1, 2],
                  compile_limit=0, chunks=[512, 1024, 4096], extra=True),
    "full": dict(models=[("mlp", 2048), ("cnn-small", 1024), ("vit-mlp", 1024), ("vgg5-max-relu", 1024)],
                 reps=3, mm=[512, 1024, 2048], threads=[1, 2], compile_limit=300, compile_models=["vit-mlp"],
                 chunks=[256, 512, 1024, 4096], extra=True),
    "issue": dict(models=[("mlp", 2048), ("cnn-small", 2048), ("vit-mlp", 4096), ("vgg5-max-relu", 4096)],
                  reps=5, mm=[512, 1024, 2048], threads=[1, 2], compile_limit=600,
                  compile_models=["mlp", "vit-mlp", "vgg5-max-relu"],
                  chunks=[256, 512, 1024, 2048, 4096], extra=True),
}


# ------------------------------------------------------------------ peak
def mm_peak(size: int, reps: int) -> float:
    """Median GFLOP/s of float32 torch.mm of two size x size matrices at the current threads."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=g)
    b = torch.randn(size, size, generator=g)
    out = torch.empty(size, size)
    torch.mm(a, b, out=out)
    inner = max(1, int(2e8 // (2 * size ** 3)))  # about 0.2 GFLOP per timing at least
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(inner):
            torch.mm(a, b, out=out)
        times.append((time.perf_counter() - t0) / inner)
    return 2 * size ** 3 / common.median(times) / 1e9


# ------------------------------------------------------------------ flops
def flops_per_sample(model: torch.nn.Module, input_shape, num_classes: int, batch: int = BATCH) -> tuple[float, float]:
    """(forward, forward + backward) FLOPs per sample, counted by FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    from twophase import losses

    x = torch.randn(batch, *input_shape)
    y = torch.randint(0, num_classes, (batch,))
    loss_fn = losses.get("mse")
    with FlopCounterMode(display=False) as fwd:
        with torch.no_grad():
            model(x)
    with FlopCounterMode(display=False) as both:
        loss_fn(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    return fwd.get_total_flops() / batch, both.get_total_flops() / batch


# ------------------------------------------------------------------ engine pieces
def make_trunk(model_name: str, subset: int, seed: int = 0):
    """(the Adam trunk of a run of `model_name` on `subset` MNIST images, its RunSetup), set up by
    the engine's own prepare(): data, initial model, runtime layout and full-pass chunk as a run has them."""
    from twophase.config import RunConfig
    from twophase.training.setup import prepare
    from twophase.training.trunk import Trunk

    # on the CPU (the peak is torch.mm's on the CPU); threads: the caller's (prepare sets them from the config)
    cfg = RunConfig(model=model_name, subset=subset, val_subset=500, batch_size=BATCH, seed=seed, arms=["adam"],
                    device="cpu", threads=torch.get_num_threads())
    cfg.validate()
    setup = prepare(cfg)
    return Trunk(setup.initial, cfg, setup), setup


def adam_epoch(trunk) -> None:
    """One epoch of the engine's mini-batch Adam (no record)."""
    trunk.train_epoch(lambda: False)


def speedup_row(what, model, times, base="as is", variant="with"):
    ratio = common.ratio_of(times, base, variant)
    verdict = "helps" if ratio >= HELPS else ("hurts" if ratio <= 1 / HELPS else "no measurable change")
    return {"change": what, "model": model, "time without s": common.median(times[base]),
            "time with s": common.median(times[variant]), "speed-up (median of ratios)": ratio,
            "verdict": verdict}


def attention_sdpa_forward(self, x, queries=None):
    """SelfAttention.forward with torch's fused scaled_dot_product_attention (same arithmetic).
    The projections are twophase/models.py's (SelfAttention.project); only the attention differs."""
    b, n, d = x.shape
    m = n if queries is None else queries
    q, k, v = self.project(x, queries)
    mixed = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    mixed = mixed.transpose(1, 2).reshape(b, m, d)
    return self.output(mixed) if self.output is not None else mixed


def vit_every_token_forward(self, x):
    """VisionTransformer.forward as the paper writes it: every layer computes every token, and
    the head reads the class token (the engine's model skips the last layer's other rows)."""
    t = self.patch_embed(x).flatten(2).transpose(1, 2)
    if self.cls_token is not None:
        t = torch.cat([self.cls_token.expand(t.shape[0], -1, -1), t], dim=1)
    t = t + self.pos_embed
    for block in self.blocks:
        t = block(t)
    t = self.norm(t)
    return self.head(t[:, 0] if self.cls_token is not None else t.mean(dim=1))


COMPILE_SCRIPT = textwrap.dedent("""
    import json, sys, time, torch
    torch.set_num_threads({threads})
    sys.path.insert(0, {root!r})
    from benchmarks.roofline import make_trunk, adam_epoch
    from benchmarks import common
    trunk, setup = make_trunk({model!r}, {subset})
    eager = trunk.model
    t0 = time.perf_counter()
    compiled = torch.compile(eager)  # the same parameters: the trunk's Adam steps them
    trunk.model = compiled
    adam_epoch(trunk)  # compiles forward and backward
    compile_s = time.perf_counter() - t0
    def run_eager():
        trunk.model = eager; adam_epoch(trunk)
    def run_compiled():
        trunk.model = compiled; adam_epoch(trunk)
    times = common.interleaved({{"as is": run_eager, "with": run_compiled}}, reps={reps})
    print("RESULT " + json.dumps({{"times": times, "compile_s": compile_s}}))
""")


def try_compile(model: str, subset: int, reps: int, threads: int, limit: float) -> dict:
    """torch.compile of the model in the engine's Adam epoch, in a child process with a time limit."""
    script = COMPILE_SCRIPT.format(threads=threads, root=str(common.ROOT), model=model, subset=subset, reps=reps)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=limit,
                              env=dict(os.environ, TORCHINDUCTOR_COMPILE_THREADS="1"))
    except subprocess.TimeoutExpired:
        return {"skipped": f"compile + measurement did not finish within {limit:.0f} s (fell back to eager)"}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            out = json.loads(line[len("RESULT "):])
            out["wall_s"] = time.perf_counter() - t0
            return out
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
    return {"skipped": f"torch.compile failed (fell back to eager): {tail[0][:200]}"}


# ------------------------------------------------------------------ main
def main(args) -> common.Report:
    from twophase import models as models_mod
    from twophase.training.full_pass import full_pass
    from twophase.training.setup import setup_for
    from twophase.training.trunk import Trunk

    size = SIZES[args.size]
    report = common.Report("roofline", "Roofline: training FLOP/s against the matmul peak", args.size)
    base_threads = torch.get_num_threads()
    reps = size["reps"]

    # 1. peak per thread count
    peaks, peak_rows = {}, []
    for t in size["threads"]:
        torch.set_num_threads(t)
        best = 0.0
        for n in size["mm"]:
            g = mm_peak(n, reps + 2)
            peak_rows.append({"threads": t, "matrix size": n, "GFLOP/s": g})
            best = max(best, g)
        peaks[t] = best
    torch.set_num_threads(base_threads)

    # 2. + 3. FLOPs and achieved throughput per model and thread count (threads interleaved)
    rows, speed_rows, trunks, auto_rows = [], [], {}, []
    for model_name, subset in size["models"]:
        trunk, setup = make_trunk(model_name, subset)
        trunks[model_name] = (trunk, setup)
        data = setup.data
        fwd, train = flops_per_sample(models_mod.build(model_name, data.input_shape, data.num_classes),
                                      data.input_shape, data.num_classes)

        def at(t):
            def run():
                torch.set_num_threads(t)
                t0 = time.perf_counter()
                adam_epoch(trunk)
                return time.perf_counter() - t0
            return run

        from twophase import settings

        auto, why = settings.threads_for("auto")  # what a CLI run with the default threads would take now
        variants = {f"{t} threads": at(t) for t in size["threads"]}
        if len(size["threads"]) > 1:
            variants["auto"] = at(auto)
        times = common.interleaved(variants, reps=reps)
        torch.set_num_threads(base_threads)
        if "auto" in times:
            seconds = {t: common.median(times[f"{t} threads"]) for t in size["threads"]}
            best = min(seconds, key=seconds.get)
            auto_rows.append({"model": model_name, "auto chose": auto, "why": why,
                              **{f"epoch s, {t} thread(s)": v for t, v in seconds.items()},
                              "epoch s, auto": common.median(times["auto"]), "fastest count": best,
                              "auto / fastest": common.median(times["auto"]) / seconds[best]})
        for t in size["threads"]:
            sec = common.median(times[f"{t} threads"])
            sps = subset / sec
            achieved = sps * train / 1e9
            rows.append({"model": model_name, "parameters": models_mod.count_parameters(setup.initial),
                         "threads": t, "forward MFLOP/sample": fwd / 1e6, "train MFLOP/sample": train / 1e6,
                         "train/forward": train / fwd if fwd else math.nan,
                         "samples/s": sps, "achieved GFLOP/s": achieved, "mm peak GFLOP/s": peaks[t],
                         "fraction of peak": achieved / peaks[t]})
        if len(size["threads"]) > 1:
            t1, t2 = size["threads"][:2]
            speed_rows.append(speedup_row(f"threads {t2} instead of {t1} (training epoch)", model_name,
                                          {"as is": times[f"{t1} threads"], "with": times[f"{t2} threads"]}))
        print(f"roofline: {model_name} measured", flush=True)

    df = pd.DataFrame(rows)
    for _, r in df[df["model"].isin(TARGET_MODELS)].iterrows():
        report.target(common.Target(f"{r['model']} training at batch 512, {r['threads']} thread(s): fraction of "
                                    "the torch.mm peak", r["fraction of peak"], TARGET, higher_is_better=True,
                                    fmt=".1%"))

    # 4. speed-ups
    for model_name, (trunk, setup) in trunks.items():
        cfg, data, loss_fn = setup.config, setup.data, setup.loss_fn
        x, y = data.train_x, data.train_y
        chunk = setup.chunk  # the engine's chunk for this model (models.runtime)
        # (a) value-only full passes (the CG line search): the same loop under no_grad (as the
        # closure does now) and under inference_mode
        def value_pass(context):
            def run():
                with context():
                    total = torch.zeros((), dtype=torch.float64)
                    for s in range(0, x.shape[0], chunk):
                        xb, yb = x[s:s + chunk], y[s:s + chunk]
                        total += loss_fn(trunk.model(xb), yb).double() * (xb.shape[0] / x.shape[0])
                total.item()  # returns None: the whole call is timed
            return run

        times = common.interleaved({"as is": value_pass(torch.no_grad), "with": value_pass(torch.inference_mode)},
                                   reps=reps + 2)
        speed_rows.append(speedup_row("torch.inference_mode instead of no_grad for the value-only full pass "
                                      "(the CG closure's closure(backward=False), the line search)", model_name,
                                      times))
        # (b) chunk sizes of the full gradient pass (full_pass with grad, as the record's measure does)
        chunks = sorted(set(size["chunks"]) | {chunk})
        variants = {f"chunk {c}": (lambda c=c: full_pass(trunk.model, loss_fn, x, y, chunk=c, grad=True,
                                                         eval_mode=True))
                    for c in chunks}
        times = common.interleaved(variants, reps=reps)
        base = f"chunk {chunk}"
        for c in chunks:
            if c != chunk:
                speed_rows.append(speedup_row(f"full gradient pass in chunks of {c} instead of the engine's {chunk} "
                                              f"({x.shape[0]} samples)", model_name,
                                              {"as is": times[base], "with": times[f"chunk {c}"]}))
        if not size["extra"]:
            continue
        # (c) the CNNs: channels_last memory (applied), and pooling before the ReLU (applied),
        # each against the engine without it
        if model_name in ("vgg5-max-relu", "cnn-small"):
            import copy

            # a trunk of its own on the same run set-up (its own copy of the model and its own Adam)
            plain_model = copy.deepcopy(trunk.model).to(memory_format=torch.contiguous_format)
            plain_data = copy.copy(data)
            plain_data.train_x = data.train_x.contiguous()
            plain_data.val_x = data.val_x.contiguous()
            plain_setup = setup_for(cfg, plain_data, plain_model, layout=False)  # the layout left out
            plain_trunk = Trunk(plain_model, cfg, plain_setup)
            times = common.interleaved({"as is": lambda: adam_epoch(plain_trunk), "with": lambda: adam_epoch(trunk)},
                                       reps=reps)
            speed_rows.append(speedup_row("channels_last memory (model and images) instead of contiguous, "
                                          "training epoch [applied: models.runtime]", model_name, times))
            relu_first = copy.deepcopy(trunk.model)
            stack = relu_first.features
            for i in range(0, len(stack), 3):  # conv, pool, ReLU -> conv, ReLU, pool (the textbook order)
                stack[i + 1], stack[i + 2] = stack[i + 2], stack[i + 1]
            relu_trunk = Trunk(relu_first, cfg, setup)
            times = common.interleaved({"as is": lambda: adam_epoch(relu_trunk), "with": lambda: adam_epoch(trunk)},
                                       reps=reps)
            speed_rows.append(speedup_row("max pooling before the ReLU instead of after it (the same function), "
                                          "training epoch [applied: models.conv_relu_pool_stack]", model_name, times))
        # (d) the ViT: the class token alone in the last layer (applied), against every token;
        # fused attention
        if model_name.startswith("vit"):
            from twophase.models import SelfAttention, VisionTransformer

            applied_forward = VisionTransformer.forward

            def every_token():
                VisionTransformer.forward = vit_every_token_forward
                try:
                    adam_epoch(trunk)
                finally:
                    VisionTransformer.forward = applied_forward

            times = common.interleaved({"as is": every_token, "with": lambda: adam_epoch(trunk)}, reps=reps)
            speed_rows.append(speedup_row("last layer computes only the class token's row (the head reads only "
                                          "it; the same function) instead of every token, training epoch "
                                          "[applied: models.VisionTransformer]", model_name, times))

            original = SelfAttention.forward

            def with_sdpa():
                SelfAttention.forward = attention_sdpa_forward
                try:
                    adam_epoch(trunk)
                finally:
                    SelfAttention.forward = original

            times = common.interleaved({"as is": lambda: adam_epoch(trunk), "with": with_sdpa}, reps=reps)
            speed_rows.append(speedup_row("F.scaled_dot_product_attention in SelfAttention, training epoch",
                                          model_name, times))
        print(f"roofline: {model_name} speed-ups measured", flush=True)

    # (e) torch.compile, in a child process with a time limit
    compile_notes = []
    if size["compile_limit"]:
        for model_name in size["compile_models"]:
            subset = dict(size["models"]).get(model_name)
            if subset is None:
                continue
            out = try_compile(model_name, subset, reps, base_threads, size["compile_limit"])
            if "skipped" in out:
                compile_notes.append(f"torch.compile, {model_name}: skipped: {out['skipped']}")
                speed_rows.append({"change": "torch.compile (inductor), training epoch", "model": model_name,
                                   "time without s": math.nan, "time with s": math.nan,
                                   "speed-up (median of ratios)": math.nan, "verdict": "skipped: " + out["skipped"]})
            else:
                row = speedup_row(f"torch.compile (inductor), training epoch; compiling took "
                                  f"{out['compile_s']:.0f} s", model_name, out["times"])
                speed_rows.append(row)
    else:
        compile_notes.append(f"torch.compile: not tried at size {args.size} (compiling takes minutes here)")

    report.text(f"Batch {BATCH}, float32, MNIST subsets (samples per model in the table's throughput). "
                "FLOPs are FlopCounterMode's (matrix products and convolutions). The peak is the best median "
                "of float32 torch.mm over the sizes below, measured in the same run; threads interleaved.")
    report.table("main", df, {"forward MFLOP/sample": ".3g", "train MFLOP/sample": ".3g", "train/forward": ".2f",
                              "samples/s": ".0f", "achieved GFLOP/s": ".2f", "mm peak GFLOP/s": ".1f",
                              "fraction of peak": ".1%"})
    report.table("peak", pd.DataFrame(peak_rows), {"GFLOP/s": ".1f"}, caption="torch.mm peak:")
    sdf = pd.DataFrame(speed_rows)
    report.table("speedups", sdf, {"time without s": ".3f", "time with s": ".3f", "speed-up (median of ratios)": ".3f"},
                 caption=f"Speed-ups tried (speed-up = time without the change / time with it, median of interleaved "
                         f"repetitions; 'helps' at >= {HELPS}, 'hurts' at <= {1 / HELPS:.3f}). Rows marked [applied] are "
                         "in the engine now and compare it against the engine without that change; the others "
                         "compare a change against the engine as it is. Per-batch host synchronisation: none in "
                         "the engine's Adam loop, nothing to remove.")
    if auto_rows:
        report.table("threads", pd.DataFrame(auto_rows), {c: ".3f" for c in ("epoch s, 1 thread(s)",
                     "epoch s, 2 thread(s)", "epoch s, auto", "auto / fastest")},
                     caption="threads='auto' (the default) against fixed counts: what settings.threads_for('auto') "
                             "chose at the start of each model's measurement (the cores free by a 30-ms look at the run "
                             "queue, settings.busy_cores), its Adam epoch time interleaved with 1 and 2 threads, and its time over the "
                             "fastest fixed count's (1.000: auto chose the fastest).")
    for note in compile_notes:
        report.text(note)
    report.meta["peaks"] = peaks
    return report


if __name__ == "__main__":
    raise SystemExit(common.run_main(main, __doc__.splitlines()[0]))
