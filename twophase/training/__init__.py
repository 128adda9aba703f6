"""Training: how a run's arms are trained from one initial model.

    strategies.py   the arms a run can train (Adam, two-phase, Adam->L-BFGS, CG) and arm specs
                    such as "two-phase@300" that choose one and its switch
    setup.py        prepare(): threads, device, data, the initial model, the loss
    full_pass.py    passes over the whole training set: the CG closure, the record's figures
    trunk.py        the Adam trunk every arm that starts with Adam rides until its switch
    branch.py       an arm's own model after its switch, trained by CG or L-BFGS
    arm.py          one arm's rule, status, cost and records
    cost.py         data passes, loss evaluations, seconds: what each arm is charged
    run.py          run_experiment(): the epoch loop, the run folder, the summary

Data flows one way: RunConfig -> prepare() -> trunk and branches -> Records -> the run folder
(twophase/runs/) -> the pages and the CLI.
"""

__all__ = ["run_experiment", "STRATEGIES", "parse_arm", "arm_label", "sweep_arms"]


def __getattr__(name):  # lazy: twophase.config imports the strategies, the run loop imports the config
    if name == "run_experiment":
        from twophase.training.run import run_experiment

        return run_experiment
    if name in ("STRATEGIES", "parse_arm", "arm_label", "sweep_arms"):
        from twophase.training import strategies

        return getattr(strategies, name)
    raise AttributeError(f"module 'twophase.training' has no attribute {name!r}")
