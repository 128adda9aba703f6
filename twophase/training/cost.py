"""What an arm's algorithm has cost so far: the x-axes of a fair comparison.

data_passes: a forward and backward pass over the training set counts 1, a forward-only pass
    1/3. Counted: the mini-batches, the CG / L-BFGS closure's evaluations, and the full-set
    gradient norm where the arm's switch rule reads it. Not counted: the passes that only draw
    the charts (the records' training and validation figures, the Hessian probe).
loss_evals: mini-batch steps in the Adam phase, closure evaluations in a full-batch phase.
seconds: wall time of the counted work.

An arm that rides the Adam trunk is charged the trunk's epochs as if it had trained them alone
(the trunk computes them once for all its riders).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Cost:
    data_passes: float = 0.0
    loss_evals: int = 0
    seconds: float = 0.0
