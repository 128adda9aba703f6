"""Measured comparisons of the twophase engine, each runnable alone.

    python -m benchmarks                       # all of them at --size full, then README.md's section
    python -m benchmarks.overhead --size small # one of them (sizes: tiny, small, full, issue)

Modules (each writes benchmarks/results/<name>.md, .csv and, where it draws one, .png):

    overhead     one engine epoch (Adam phase, CG phase) against a minimal hand-written loop
    cg_vs_scipy  NonlinearCG (each beta, each line search) against scipy.optimize CG
    optimizers   two-phase, Adam, Adam then L-BFGS and CG only, per unit of cost; golden vs strong Wolfe
    roofline     achieved training FLOP/s against torch.mm's peak, and the speed-ups tried
    switch_rule  switch epoch, final loss and cost of the switch-rule variants
    trunk        the wall time the shared Adam trunk saves (one run against one run per branch)
    switch_sweep where switching to CG pays off: switch points, rules and float64 CG from one trunk
    presets      the Train page's presets: how long each takes and what it shows, over seeds
    probe        the curvature probe's share of a run's time at each probe_every, and its Lanczos steps
    gpu          the engine on a CUDA GPU (default run, vit-mlp with CG branches, TF32, NCCL); says
                 so when no GPU is there
    trunk        wall time saved by the shared Adam trunk (two-arm runs, a switch sweep), against the expected
    app          training throughput with the Train page open in chromium against the CLI
    long_reproduction  the paper's budgets on 1,024 MNIST images beside its Table 1, with a switch sweep
                 per cell (hours per cell here: run on its own, not by `python -m benchmarks`; cells
                 are recorded in results/long/ and carried on by the next machine)

Every result carries the machine it was measured on (cores, torch version, threads) and
states each target next to the measured value, including misses.
"""

BENCHMARKS = ("overhead", "cg_vs_scipy", "optimizers", "roofline", "switch_rule", "trunk", "switch_sweep", "presets",
              "probe", "app", "gpu")
