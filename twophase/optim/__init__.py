"""Optimizers of two-phase training, usable in any PyTorch training loop.

    NonlinearCG          nonlinear conjugate gradient (PR+, FR, HZ) with a strong Wolfe or a
                         golden-section line search; a torch.optim.Optimizer used like LBFGS
    StepInfo             what one NonlinearCG step did (status, step size, evaluations, ...)
    SwitchRule           the paper's switch test on the epoch-wise gradient norm (pure Python)
    TwoPhase             Adam, then NonlinearCG once the rule fires; a torch.optim.Optimizer
    full_gradient_norm   norm of the gradient of the mean loss over a whole dataset
"""

from twophase.optim.cg import BETAS, LINE_SEARCHES, STATUSES, NonlinearCG, StepInfo
from twophase.optim.grad_norm import full_gradient_norm
from twophase.optim.line_search import LineSearchResult, golden_section, strong_wolfe
from twophase.optim.switch import SwitchRule
from twophase.optim.two_phase import PHASES, TwoPhase

__all__ = [
    "NonlinearCG",
    "StepInfo",
    "SwitchRule",
    "TwoPhase",
    "full_gradient_norm",
    "LineSearchResult",
    "strong_wolfe",
    "golden_section",
    "BETAS",
    "LINE_SEARCHES",
    "STATUSES",
    "PHASES",
]
