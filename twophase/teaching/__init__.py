"""Teaching the convexity transition: toy losses, twophase's optimizers on them, their figures.

    toy1d.py         one weight shared by K tanh units (the source paper's first toy), its figure
    surfaces.py      two-parameter surfaces: the paper's tanh family and a Rosenbrock-like valley
    trajectories.py  Adam, CG and two-phase (twophase's own optimizers) from one start point
    figures.py       the surface with the arms' paths, and the loss and gradient-norm curves

Pure functions of numbers, strings and tuples (the Learn page caches them). No streamlit.
"""

from twophase.teaching.figures import SHADE_COLORSCALE, surface_figure, trajectory_curves_figure
from twophase.teaching.surfaces import (C_RANGE, SURFACES, TANH_TEACHER, VALLEY_STEEPNESS, Surface, hessian_eigenvalues, local_minima, surface_grid,
                                        surface_hessian, surface_loss, surface_value_and_grad)
from twophase.teaching.toy1d import (UNIT_INPUT_RANGE, nonconvex_intervals, toy1d_curvature, toy1d_data,
                                     toy1d_descent_path, toy1d_figure, toy1d_grad, toy1d_loss, toy1d_minima)
from twophase.teaching.trajectories import ARMS, Trajectory, first_convex_step, trajectories

__all__ = [
    "UNIT_INPUT_RANGE", "toy1d_data", "toy1d_loss", "toy1d_grad", "toy1d_curvature",
    "nonconvex_intervals", "toy1d_minima", "toy1d_descent_path", "toy1d_figure",
    "SURFACES", "C_RANGE", "TANH_TEACHER", "VALLEY_STEEPNESS", "Surface", "surface_loss", "surface_value_and_grad", "surface_hessian",
    "hessian_eigenvalues", "surface_grid", "local_minima",
    "Trajectory", "ARMS", "trajectories", "first_convex_step", "surface_figure", "trajectory_curves_figure", "SHADE_COLORSCALE",
]
