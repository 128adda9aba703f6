"""What an arm's algorithm has cost so far: the x-axes of a fair comparison.

data_passes: a forward and backward pass over the training set counts 1, a forward-only pass
    1/3. Counted: the mini-batches, the CG / L-BFGS closure's evaluations, and what the arm's
    switch rule reads (the full-set gradient norm, the loss, the probe, CG trials). Not counted:
    the passes that only draw the charts (the records' training and validation figures, the
    monitoring Hessian probe).
loss_evals: mini-batch steps in the Adam phase, closure evaluations in a full-batch phase.
seconds: wall time of the counted work.

The trunk and a branch compute an epoch once for every arm riding them; each rider is charged
the epoch as if it had trained it alone (`Cost.add`), increment by increment, so every arm's
count is the same float it would be had it trained alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class EpochCost:
    """The cost of one epoch of a trunk or a branch: each mini-batch's or evaluation's share of
    a data pass, in order, the loss evaluations, the wall time."""

    fractions: list = field(default_factory=list)
    loss_evals: int = 0
    seconds: float = 0.0

    def charge(self, fraction: float) -> None:
        """One loss evaluation costing `fraction` of a data pass (1 with backward, 1/3 without)."""
        self.fractions.append(fraction)
        self.loss_evals += 1


@dataclass
class Cost:
    """An arm's cumulative cost."""

    data_passes: float = 0.0
    loss_evals: int = 0
    seconds: float = 0.0

    def charge(self, fraction: float) -> None:
        self.data_passes += fraction
        self.loss_evals += 1

    def add(self, epoch: EpochCost) -> None:
        for fraction in epoch.fractions:
            self.data_passes += fraction
        self.loss_evals += epoch.loss_evals
        self.seconds += epoch.seconds
