"""The arms of one run advanced epoch by epoch: the trunk once for its riders, then every branch.

    trainer = Trainer(config, setup, log)    # setup: twophase.training.setup.prepare(config)
    trainer.start()                          # epoch 0, the same for every arm
    for epoch in range(1, config.epochs + 1):
        trainer.train_epoch(epoch, should_stop)

Nothing here writes files: every Record and Event goes to `log` (an object with record(Record),
event(Event) and switched(), called when an arm left the trunk); twophase/training/run.py's log
writes the run folder, MemoryLog keeps them in lists (tests, benchmarks).
"""

from __future__ import annotations

import math
from typing import Callable

from twophase.optim import SwitchRule
from twophase.schema import Event, EventKind, Phase, Record, Status
from twophase.training.arm import Arm
from twophase.training.branch import Branch
from twophase.probe import hessian_extremes
from twophase.training.full_pass import PROBE_ITERS, PROBE_SAMPLE, measure
from twophase.training.setup import RunSetup
from twophase.training.strategies import parse_arm
from twophase.training.trunk import Trunk

__all__ = ["Trainer", "MemoryLog", "overall_status"]


def _log_rate(history, passes: float) -> float:
    """How fast an arm's log loss fell per data pass over its last `passes` passes (history:
    (epoch, data_passes, seconds, train_loss) per record); -inf when it did not fall."""
    epoch, now_passes, _, now = history[-1]
    then = next(((p, loss) for _, p, _, loss in reversed(history) if p <= now_passes - passes), history[0][1:4:2])
    span = now_passes - then[0]
    if span <= 0 or not (then[1] > 0 and now > 0 and math.isfinite(then[1]) and math.isfinite(now)):
        return -math.inf
    return math.log(then[1] / now) / span


def overall_status(arm_statuses: list[str]) -> str:
    for status in (Status.FAILED, Status.STOPPED, Status.DIVERGED):
        if status in arm_statuses:
            return status.value
    return Status.COMPLETED.value


class MemoryLog:
    """A log that keeps the records and events in lists."""

    def __init__(self):
        self.records: list[Record] = []
        self.events: list[Event] = []

    def record(self, record: Record) -> None:
        self.records.append(record)

    def event(self, event: Event) -> None:
        self.events.append(event)

    def switched(self) -> None:
        pass


class Trainer:
    """The arms of `config` on `setup`, and the trunks their Adam phases ride: one for all of them
    (share_trunk), or one per arm (each computing its own Adam prefix, as separate runs would).
    With share_trunk, arms of one strategy and precision that switch at the same epoch also share
    their branch."""

    def __init__(self, config, setup: RunSetup, log, share_trunk: bool = True):
        self.config, self.setup, self.log, self.share = config, setup, log, share_trunk
        self.arms: list[Arm] = []
        self.trunks: list[Trunk] = []
        self.branches: list[Branch] = []
        for name in config.arms:
            spec = parse_arm(name)
            rule = SwitchRule(**spec.rule_options(config)) if spec.kind.switches else None
            arm = Arm(spec=spec, rule=rule, reads=spec.reads(config), records_probe=config.hessian_probe,
                      phase=spec.kind.first)
            if spec.kind.first == Phase.ADAM:
                if not self.trunks or not share_trunk:
                    self.trunks.append(Trunk(setup.initial, config, setup))
                self.trunks[-1].riders.append(arm)
            else:  # CG from the start: a branch at epoch 0
                self._board(arm, setup.initial, epoch=0)
            self.arms.append(arm)

    @property
    def running(self) -> bool:
        return any(a.running for a in self.arms)

    def start(self) -> None:
        """Epoch 0: the initial model measured once, the same record for every arm."""
        setup = self.setup
        figures = measure(setup.initial, setup.loss_fn, setup.data, chunk=setup.chunk, dist=setup.dist,
                          probe=setup.probe_for())
        for arm in self.arms:
            self.log.record(arm.record(Phase.INIT, figures))

    def train_epoch(self, epoch: int, should_stop: Callable[[], bool] = lambda: False,
                    progress: Callable[[Arm, float], None] | None = None) -> None:
        """Epoch `epoch` of every running arm. progress(arm, epochs done, fractional) is called
        between mini-batches and CG iterations. Raises StopRequested."""
        progress = progress or (lambda arm, done: None)
        for trunk in self.trunks:
            riders = [a for a in trunk.riders if a.running]
            if riders:
                self._trunk_epoch(trunk, riders, epoch, should_stop, progress)
        for branch in list(self.branches):
            riders = [a for a in branch.riders if a.running and a.epoch == epoch - 1]
            if not riders:
                continue  # not started yet (a kept trial is ahead), or every rider ended
            done = branch.train_epoch(should_stop, lambda f: [progress(a, epoch - 1 + f) for a in riders])
            figures = branch.measure(probe=self._monitor_probe_due(epoch))
            for arm in riders:
                arm.charge(done)
                arm.epoch = epoch
                record = arm.record(branch.phase, figures)
                self.log.record(record)
                for event in self._decide(arm, record)[0]:
                    self.log.event(event)

    def _monitor_probe_due(self, epoch: int) -> bool:
        """The monitoring probe (hessian_probe) runs every probe_every epochs and at the last one
        (and, on the trunk, at every switch)."""
        config = self.config
        return config.hessian_probe and (epoch % config.probe_every == 0 or epoch == config.epochs)

    def _board(self, arm: Arm, model, epoch: int) -> None:
        """Put `arm` on the branch that starts from `model` at `epoch` with its strategy and
        precision, creating it unless another arm switching now made it (sharing on)."""
        branch = next((b for b in self.branches if self.share and not b.trial and b.source is model
                       and b.start_epoch == epoch and b.strategy.name == arm.spec.strategy
                       and b.precision == arm.spec.precision), None)
        if branch is None:
            branch = Branch(model, arm.spec.kind, self.config, self.setup, arm.spec.precision, epoch)
            self.branches.append(branch)
        branch.riders.append(arm)
        arm.branch = branch

    def _trunk_epoch(self, trunk: Trunk, riders: list[Arm], epoch: int, should_stop, progress) -> None:
        setup = self.setup
        done = trunk.train_epoch(should_stop, lambda f: [progress(a, epoch - 1 + f) for a in riders])
        for_rule = any(a.rule is not None and a.rule.probe_due(epoch) for a in riders)
        probe = for_rule or self._monitor_probe_due(epoch)
        figures = measure(trunk.model, setup.loss_fn, setup.data, chunk=setup.chunk, dist=setup.dist,
                          probe=setup.probe_for(force=True) if probe else None)
        outcomes = []
        for arm in riders:
            arm.charge(done, trunk=True)
            arm.epoch = epoch
            record = arm.record(Phase.ADAM, figures, done.batch_norm_mean)
            outcomes.append((arm, record, *self._decide(arm, record, figures.curvature)))
        if self.config.hessian_probe and figures.hess_min is None and any(fires for *_, fires in outcomes):
            # the monitoring probe at a switch: the curvature where the branches start
            px, py, seed = setup.probe_for()
            hess_min, hess_max, seconds = hessian_extremes(trunk.model, setup.loss_fn, px, py, seed=seed,
                                                           sample_size=PROBE_SAMPLE, iters=PROBE_ITERS)
            for arm, record, _, _ in outcomes:
                record.hess_min, record.hess_max = hess_min, hess_max
                arm.probe_seconds += seconds
        switched = False
        for arm, record, events, fires in outcomes:
            self.log.record(record)
            for event in events:
                self.log.event(event)
            if fires:
                if arm.running:  # a switch at the last epoch needs no branch
                    self._board(arm, trunk.model, epoch)
            elif arm.running and arm.rule is not None and arm.rule.trial_due:
                fires = self._trial(arm, trunk, record, should_stop)
            if fires or not arm.running:
                trunk.riders.remove(arm)
            switched = switched or fires
        if switched:
            self.log.switched()

    def _decide(self, arm: Arm, record: Record, curvature: float | None = None) -> tuple[list[Event], bool]:
        """After an arm's record: divergence, the switch rule, completion. Returns the events to
        log and whether the arm switches now."""
        if arm.has_diverged(record):
            arm.status = Status.DIVERGED
            return [Event(arm.name, EventKind.DIVERGED, arm.epoch, record.train_loss)], False
        events = arm.rule_fires(record, curvature)
        if events:
            arm.phase = arm.spec.kind.second
        if arm.epoch >= self.config.epochs:
            arm.status = Status.COMPLETED
        return events, bool(events)

    def _trial(self, arm: Arm, trunk: Trunk, record: Record, should_stop) -> bool:
        """The "trial" rule's test at the end of this epoch: CG from the trunk's weights for
        rule.trial_passes data passes (whole epochs, within the run's budget). Kept when its loss
        fell faster per pass (in log loss) than the arm's over its last trial_passes passes: the
        arm then leaves the trunk with the trial as its branch and the trial's epochs as its next
        records. Dropped otherwise: the arm stays on the trunk and is charged the trial's cost."""
        rule, config = arm.rule, self.config
        left = config.epochs - arm.epoch
        if left <= 0:
            return False
        branch = Branch(trunk.model, arm.spec.kind, config, self.setup, arm.spec.precision, arm.epoch, trial=True)
        trial, passes = [], 0.0  # (EpochCost, Measurement) per trial epoch
        while len(trial) < left and passes < rule.trial_passes:
            spent = branch.train_epoch(should_stop)
            passes += sum(spent.fractions)
            trial.append((spent, branch.measure(probe=self._monitor_probe_due(arm.epoch + len(trial) + 1))))
        end = trial[-1][1].train_loss
        trunk_rate = _log_rate(arm.history, rule.trial_passes)
        trial_rate = math.log(record.train_loss / end) / passes \
            if end > 0 and math.isfinite(end) and record.train_loss > 0 and passes > 0 else -math.inf
        kept = trial_rate > trunk_rate
        ratio = trial_rate / trunk_rate if trunk_rate > 0 and math.isfinite(trial_rate) else None
        self.log.event(Event(arm.name, EventKind.TRIAL, arm.epoch, ratio, kept=kept))
        if not kept:
            rule.reject_trial()
            for spent, _ in trial:
                arm.charge(spent)
            return False
        rule.accept_trial()
        for event in arm.switch_events(record):
            self.log.event(event)
        arm.phase = arm.spec.kind.second
        branch.riders.append(arm)
        arm.branch = branch
        self.branches.append(branch)
        for spent, figures in trial:
            arm.charge(spent)
            arm.epoch += 1
            trial_record = arm.record(branch.phase, figures)
            self.log.record(trial_record)
            for event in self._decide(arm, trial_record)[0]:
                self.log.event(event)
            if not arm.running:
                break
        return True

    # ------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict:
        """Every arm, trunk and branch after a whole epoch, as copies (twophase/training/checkpoint.py
        saves it; load_state_dict on a Trainer made from the same config and setup continues it)."""
        index = {id(a): i for i, a in enumerate(self.arms)}
        return {"arms": [a.state_dict() for a in self.arms],
                "trunks": [dict(t.state_dict(), riders=[index[id(a)] for a in t.riders]) for t in self.trunks],
                "branches": [dict(b.state_dict(), riders=[index[id(a)] for a in b.riders]) for b in self.branches]}

    def load_state_dict(self, state: dict) -> None:
        names = [a["name"] for a in state["arms"]]
        if names != [a.name for a in self.arms]:
            raise ValueError(f"the checkpoint's arms {names} are not this run's {[a.name for a in self.arms]}")
        for arm, arm_state in zip(self.arms, state["arms"]):
            arm.load_state_dict(arm_state)
            arm.branch = None
        if len(state["trunks"]) != len(self.trunks):
            raise ValueError(f"the checkpoint has {len(state['trunks'])} trunks, this run {len(self.trunks)}")
        for trunk, trunk_state in zip(self.trunks, state["trunks"]):
            trunk.load_state_dict(trunk_state)
            trunk.riders = [self.arms[i] for i in trunk_state["riders"]]
        self.branches = []
        for branch_state in state["branches"]:
            riders = [self.arms[i] for i in branch_state["riders"]]
            kind = riders[0].spec.kind
            if kind.name != branch_state["strategy"]:
                raise ValueError(f"checkpoint branch {branch_state['strategy']!r} is ridden by a {kind.name!r} arm")
            branch = Branch(self.setup.initial, kind, self.config, self.setup, branch_state["precision"],
                            int(branch_state["start_epoch"]), trial=bool(branch_state["trial"]))
            branch.load_state_dict(branch_state)
            branch.source = None  # no later arm can share it: its switch epoch is past
            branch.riders = riders
            for arm in riders:
                arm.branch = branch
            self.branches.append(branch)

    def end(self, status: str) -> None:
        """Arms still running take the run's end: completed, stopped or failed."""
        for arm in self.arms:
            if arm.running:
                arm.status = Status(status) if status in (Status.COMPLETED, Status.STOPPED) else Status.FAILED
