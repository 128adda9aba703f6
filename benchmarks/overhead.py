"""Overhead of the engine: one engine epoch against a minimal hand-written PyTorch loop.

Both sides do the same arithmetic on the same model, data, batch size and starting state:

Adam phase: what a training epoch of the engine (twophase.training.trainer.Trainer) does for an
arm riding the Adam trunk: `Trunk.train_epoch` (a seeded permutation, mini-batch Adam steps) and
then the epoch's record figures, `full_pass.measure` on the trunk's model (loss, accuracy and
gradient norm over the whole training set with backward, loss and accuracy over the validation
set), against a plain loop doing exactly those passes with `torch.optim.Adam`.

CG phase: the engine's CG epoch, a `Branch` (strategy STRATEGIES["cg"]: one `NonlinearCG`
iteration with the full-batch closure) then `Branch.measure()` (the record), against a plain
loop that makes the same number of full-batch evaluations with and without backward that the
engine's step reported (set the parameters along a direction, forward, backward, gather the
flat gradient, one dot product), then the same record passes. When the engine's record took
its training figures from the step's last evaluation (`Measurement.reused`: the accepted point
was the last one evaluated), the loop does the same. Every repetition's branch is restored
from the same saved model state and NonlinearCG state (`branch.optimizer.load_state_dict`), so
every engine repetition makes the same line search.

Both sides train on the run set up by `twophase.training.setup.prepare` (the engine's own
set-up: data, initial model, runtime layout, full-pass chunk), on the CPU.

Each repetition starts from the same weights; engine and loop alternate; the ratio is the
median of the per-repetition ratios. Target: at most 1.05.
"""

from __future__ import annotations

import copy
import math
import time

import pandas as pd
import torch

from benchmarks import common

TARGET = 1.05

# (model, training samples, validation samples, repetitions)
SIZES = {
    "tiny": [("mlp", 256, 256, 2)],
    "small": [("mlp", 2048, 1000, 5), ("cnn-small", 512, 500, 3)],
    "full": [("mlp", 2048, 1000, 31), ("cnn-small", 1024, 1000, 11), ("vit-mlp", 1024, 1000, 11)],
    "issue": [("mlp", 2048, 2000, 31), ("vit-mlp", 10000, 2000, 5), ("vgg5-max-relu", 10000, 2000, 5)],
}
BATCH = 512
ADAM_WARM_EPOCHS = 2  # Adam epochs before the CG phase starts (a realistic starting point)
CG_WARM_STEPS = 2  # CG steps before the measured one (so it has a previous direction)


def _record_passes(model, loss_fn, x, y, vx, vy, chunk):
    """The hand-written record: full-set loss, accuracy and gradient norm; validation loss and accuracy."""
    n = x.shape[0]
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = None
    total, correct = 0.0, 0
    for s in range(0, n, chunk):
        xb, yb = x[s:s + chunk], y[s:s + chunk]
        out = model(xb)
        loss = loss_fn(out, yb) * (xb.shape[0] / n)
        loss.backward()
        total += float(loss.detach())
        correct += int((out.argmax(1) == yb).sum())
    norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params
                                                         if p.grad is not None])))
    for p in params:
        p.grad = None
    return (total, correct / n, norm) + _validation_pass(model, loss_fn, vx, vy, chunk)


def _validation_pass(model, loss_fn, vx, vy, chunk):
    """The hand-written record's validation loss and accuracy."""
    vtotal, vcorrect = 0.0, 0
    with torch.inference_mode():
        for s in range(0, vx.shape[0], chunk):
            out = model(vx[s:s + chunk])
            vtotal += float(loss_fn(out, vy[s:s + chunk])) * (out.shape[0] / vx.shape[0])
            vcorrect += int((out.argmax(1) == vy[s:s + chunk]).sum())
    return vtotal, vcorrect / vx.shape[0]


def hand_adam_epoch(model, opt, gen, loss_fn, data, batch, chunk):
    x, y = data.train_x, data.train_y
    n = x.shape[0]
    order = torch.randperm(n, generator=gen)
    for s in range(0, n, batch):
        idx = order[s:s + batch]
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x[idx]), y[idx]).backward()
        opt.step()
    return _record_passes(model, loss_fn, x, y, data.val_x, data.val_y, chunk)


def _set_params(params, vec) -> None:
    """Write a flat vector into the parameters in place (keeps their memory layout, e.g. channels_last;
    torch.nn.utils.vector_to_parameters would replace them with contiguous tensors)."""
    offset = 0
    for p in params:
        p.copy_(vec[offset:offset + p.numel()].view_as(p))
        offset += p.numel()


def hand_cg_epoch(model, loss_fn, data, grad_evals, value_evals, direction, chunk, reuse_last):
    """The arithmetic of one CG iteration with this many evaluations, then the record.

    reuse_last: the engine's record took the training loss, accuracy and gradient norm from the
    line search's last evaluation (it ended where it evaluated last); the loop then ends at its
    last evaluation with backward and does the same."""
    x, y = data.train_x, data.train_y
    n = x.shape[0]
    params = [p for p in model.parameters() if p.requires_grad]
    x0 = torch.cat([p.detach().reshape(-1) for p in params])  # reshape: channels_last weights cannot .view(-1)
    step = 1e-6
    total, correct = 0.0, 0
    with torch.no_grad():
        for i in range(value_evals):  # evaluations without backward first, the gradients last
            _set_params(params, x0 + (i + 1) * step * direction)
            total = 0.0
            for s in range(0, n, chunk):
                xb, yb = x[s:s + chunk], y[s:s + chunk]
                total += float(loss_fn(model(xb), yb)) * (xb.shape[0] / n)
        for i in range(grad_evals):
            _set_params(params, x0 + (value_evals + i + 1) * step * direction)
            total, correct = 0.0, 0
            with torch.enable_grad():
                for p in params:
                    p.grad = None
                for s in range(0, n, chunk):
                    xb, yb = x[s:s + chunk], y[s:s + chunk]
                    out = model(xb)
                    loss = loss_fn(out, yb) * (xb.shape[0] / n)
                    loss.backward()
                    if reuse_last:
                        total += float(loss.detach())
                        correct += int((out.detach().argmax(1) == yb).sum())
            flat = torch.cat([p.grad.reshape(-1) for p in params])
            float(flat.dot(direction))
    if reuse_last and grad_evals:
        norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params])))
        return (total, correct / n, norm) + _validation_pass(model, loss_fn, data.val_x, data.val_y, chunk)
    with torch.no_grad():
        _set_params(params, x0 + step * direction)
    return _record_passes(model, loss_fn, x, y, data.val_x, data.val_y, chunk)


def measure_model(model_name, subset, val_subset, reps, seed=0):
    from twophase import models as models_mod
    from twophase.config import RunConfig
    from twophase.training.branch import Branch
    from twophase.training.cost import Cost
    from twophase.training.full_pass import measure
    from twophase.training.setup import prepare
    from twophase.training.strategies import STRATEGIES
    from twophase.training.trunk import Trunk

    # threads: the benchmark's (prepare sets torch's threads from the config)
    cfg = RunConfig(model=model_name, subset=subset, val_subset=val_subset, batch_size=BATCH, seed=seed,
                    arms=["two-phase"], device="cpu", threads=torch.get_num_threads())
    cfg.validate()
    # data, initial model, layout and full-pass chunk exactly as a run gets them; the hand loop uses the same
    setup = prepare(cfg)
    data, initial, loss_fn, chunk = setup.data, setup.initial, setup.loss_fn, setup.chunk
    never = lambda: False  # noqa: E731
    rows = []

    # ---------------- Adam phase: both from the initial weights and a fresh Adam every repetition
    state = {}

    def setup_adam(name):
        if name == "engine":
            state["trunk"] = Trunk(initial, cfg, setup)
        else:
            model = copy.deepcopy(initial)
            state["hand"] = (model, torch.optim.Adam(model.parameters(), lr=cfg.lr),
                             torch.Generator().manual_seed(seed + 1))

    def engine_adam():
        trunk = state["trunk"]
        trunk.train_epoch(never)
        measure(trunk.model, loss_fn, data, chunk=chunk, dist=setup.dist, probe=setup.probe_for())

    def hand_adam():
        model, opt, gen = state["hand"]
        hand_adam_epoch(model, opt, gen, loss_fn, data, BATCH, chunk)

    times = common.interleaved({"engine": engine_adam, "hand": hand_adam}, reps=reps, setup=setup_adam)
    rows.append(_row(model_name, "Adam epoch", subset, times, reps, "mini-batch Adam + record passes"))

    # ---------------- CG phase: from a model trained a little, with a saved CG state
    trunk = Trunk(initial, cfg, setup)
    for _ in range(ADAM_WARM_EPOCHS):
        trunk.train_epoch(never)
    prefix = Branch(trunk.model, STRATEGIES["cg"], cfg, setup, Cost())
    for _ in range(CG_WARM_STEPS):
        prefix.train_epoch(never)
        prefix.measure()
    model_state = copy.deepcopy(prefix.model.state_dict())
    cg_state = copy.deepcopy(prefix.optimizer.state_dict())
    grad = cg_state["state"][0].get("grad") if cg_state["state"] else None
    direction = (-grad if grad is not None else torch.ones(models_mod.count_parameters(initial))).float()
    direction = direction / max(float(direction.norm()), 1e-12)
    counts = {}

    def setup_cg(name):
        if name == "engine":
            branch = Branch(initial, STRATEGIES["cg"], cfg, setup, Cost())
            branch.model.load_state_dict(model_state)
            branch.optimizer.load_state_dict(copy.deepcopy(cg_state))
            state["branch"] = branch
        else:
            model = copy.deepcopy(initial)
            model.load_state_dict(model_state)
            state["hand"] = model

    def engine_cg():
        branch = state["branch"]
        branch.train_epoch(never)
        m = branch.measure()
        info = branch.optimizer.last_step
        counts.setdefault("grad", info.grad_evals)
        counts.setdefault("value", info.loss_evals - info.grad_evals)
        counts.setdefault("status", info.status)
        counts.setdefault("reused", m.reused)

    def hand_cg():
        hand_cg_epoch(state["hand"], loss_fn, data, counts.get("grad", 1), counts.get("value", 0),
                      direction, chunk, counts.get("reused", False))

    # the engine runs first in the warm-up repetition, so the loop knows the evaluation counts
    times = common.interleaved({"engine": engine_cg, "hand": hand_cg}, reps=reps, setup=setup_cg)
    rows.append(_row(model_name, "CG epoch", subset, times, reps,
                     f"1 CG iteration ({counts.get('grad')} evaluations with backward, "
                     f"{counts.get('value')} without; step {counts.get('status')}) + record passes"
                     + (" (training figures from the last evaluation)" if counts.get("reused") else "")))
    return rows


def _row(model, phase, subset, times, reps, work):
    ratio = common.ratio_of(times, "engine", "hand")
    q1, q3 = common.ratio_spread(times, "engine", "hand")
    return {"model": model, "phase": phase, "train samples": subset, "batch": BATCH, "work": work,
            "engine s (median)": common.median(times["engine"]), "hand loop s (median)": common.median(times["hand"]),
            "ratio engine/loop": ratio, "ratio, quartiles": f"{q1:.3f}-{q3:.3f}",
            "ratio of the medians": common.median(times["engine"]) / common.median(times["hand"]),
            "repetitions": reps, "target": f"<= {TARGET}",
            "met": bool(ratio <= TARGET) if math.isfinite(ratio) else False}


def main(args) -> common.Report:
    report = common.Report("overhead", "Overhead: engine epoch against a hand-written loop", args.size)
    rows = []
    for model, subset, val_subset, reps in SIZES[args.size]:
        t0 = time.perf_counter()
        rows.extend(measure_model(model, subset, val_subset, reps))
        print(f"overhead: {model} done in {time.perf_counter() - t0:.0f} s", flush=True)
    df = pd.DataFrame(rows)
    for r in rows:
        report.target(common.Target(f"{r['model']} {r['phase']} time ratio engine / hand-written loop",
                                    r["ratio engine/loop"], TARGET, higher_is_better=False))
    report.text("Same model, data, batch size (512) and starting state on both sides; they alternate within "
                "one loop and the ratio is the median of the per-repetition ratios. MNIST subsets, "
                "MSE loss (the app's defaults).")
    report.table("main", df, {"engine s (median)": ".3f", "hand loop s (median)": ".3f",
                              "ratio engine/loop": ".3f", "ratio of the medians": ".3f"})
    report.text("'ratio engine/loop' (the one held against the target) is the median of the per-repetition ratios, "
                "'quartiles' their first and third quartiles (the spread); the ratio of the two medians is shown "
                "beside it as a check of the noise. The mlp CG epoch (about 12 ms) was profiled: pyinstrument puts "
                "all but a few percent of the engine's time in the same forward and backward passes as the loop's, "
                "and the engine's own bookkeeping (a flat copy of the parameters per evaluation to reuse the "
                "record, two equality checks) about 0.1 ms an evaluation (5.51 against 5.41 ms); flushing denormals "
                "changed nothing. The rest of the gap was not found.")
    report.meta["sizes"] = SIZES[args.size]
    return report


if __name__ == "__main__":
    raise SystemExit(common.run_main(main, __doc__.splitlines()[0]))
