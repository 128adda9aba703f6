"""The Learn page's figures of the toy surfaces: the surface with the arms' paths, and their curves."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from twophase.plots import arm_color, arm_label
from twophase.teaching.surfaces import _surface
from twophase.teaching.trajectories import Trajectory

SHADE_COLORSCALE = [[0.0, "rgba(255,127,14,0)"], [1.0, "rgba(255,127,14,0.20)"]]
_ARM_DASH = {"adam": "solid", "cg": "dot", "two-phase": "solid"}


def _log_loss(loss: np.ndarray) -> np.ndarray:
    return np.log10(np.maximum(loss, 0.0) + 1e-4)


def surface_figure(name: str, grid: dict, trajs: dict[str, Trajectory] | None = None,
                   step: int | None = None, start: tuple[float, float] | None = None,
                   pick_grid: int = 0) -> go.Figure:
    """Contour plot of a two-parameter loss with the non-convex region shaded and the arms' paths.

    Arguments:
        name: the surface (for labels and its minimum).
        grid: the result of surface_grid.
        trajs: arm -> Trajectory (from `trajectories`), or None for the surface alone.
        step: draw the paths up to this step and mark where each arm is then (None: all).
        start: the start point to mark (defaults to the trajectories' first point).
        pick_grid: if > 0, add an invisible pick_grid x pick_grid lattice of points that a
            click can select (the page uses it to move the start point); 0 = none.
    """
    surf = _surface(name)
    fig = go.Figure()
    fig.add_trace(go.Heatmap(
        x=grid["w1"], y=grid["w2"], z=grid["nonconvex"].astype(float), zmin=0, zmax=1,
        colorscale=SHADE_COLORSCALE, showscale=False, hoverinfo="skip", name="not convex",
    ))
    fig.add_trace(go.Contour(
        x=grid["w1"], y=grid["w2"], z=_log_loss(grid["loss"]), ncontours=28,
        contours=dict(coloring="lines"), line=dict(width=1), colorscale="Viridis",
        colorbar=dict(title=dict(text="log10 loss", side="right"), thickness=12, len=0.8),
        customdata=grid["eig_min"],
        hovertemplate=(f"{surf.w1_label}=%{{x:.3f}}<br>{surf.w2_label}=%{{y:.3f}}"
                       "<br>log10 loss=%{z:.2f}<br>smallest Hessian eigenvalue=%{customdata:.3g}<extra></extra>"),
        name="loss",
    ))
    # legend entry for the shading
    fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name="Hessian not positive definite",
                             marker=dict(symbol="square", size=14, color="rgba(255,127,14,0.35)")))
    fig.add_trace(go.Scatter(
        x=[surf.minimum[0]], y=[surf.minimum[1]], mode="markers", name="global minimum",
        marker=dict(symbol="x", size=12, color="#2ca02c", line=dict(width=1)),
        hovertemplate="global minimum<extra></extra>",
    ))
    if trajs:
        for arm, tr in trajs.items():
            k = tr.steps if step is None else max(0, min(int(step), tr.steps))
            pts = tr.points[: k + 1]
            fig.add_trace(go.Scatter(
                x=pts[:, 0], y=pts[:, 1], mode="lines+markers", name=arm_label(arm),
                line=dict(color=arm_color(arm), width=2.5, dash=_ARM_DASH.get(arm, "solid")),
                marker=dict(size=4), legendgroup=arm,
                customdata=np.stack([np.arange(k + 1), tr.loss[: k + 1]], axis=-1),
                hovertemplate=(f"{arm_label(arm)}<br>step %{{customdata[0]}}<br>loss %{{customdata[1]:.3g}}"
                               "<extra></extra>"),
            ))
            fig.add_trace(go.Scatter(
                x=[pts[-1, 0]], y=[pts[-1, 1]], mode="markers", showlegend=False, legendgroup=arm,
                marker=dict(size=13, color=arm_color(arm), line=dict(color="white", width=2)),
                hovertemplate=f"{arm_label(arm)} at step {k}<extra></extra>",
            ))
            if tr.switch_index is not None:
                s = tr.switch_index
                reached = k >= s
                fig.add_trace(go.Scatter(
                    x=[tr.points[s, 0]], y=[tr.points[s, 1]], mode="markers+text",
                    name=f"switch to CG (after step {s})", legendgroup=arm,
                    text=["switch"], textposition="top right",
                    marker=dict(symbol="star", size=18, color=arm_color(arm) if reached else "white",
                                line=dict(color=arm_color(arm), width=2)),
                    hovertemplate=f"switch to CG after step {s}<extra></extra>",
                ))
        if start is None:
            start = tuple(next(iter(trajs.values())).points[0])
    if start is not None:
        fig.add_trace(go.Scatter(
            x=[start[0]], y=[start[1]], mode="markers", name="start",
            marker=dict(symbol="circle-open", size=14, color="black", line=dict(width=2)),
            hovertemplate="start<extra></extra>",
        ))
    if pick_grid and pick_grid > 1:
        (a0, a1), (b0, b1) = surf.box
        A, B = np.meshgrid(np.linspace(a0, a1, pick_grid), np.linspace(b0, b1, pick_grid))
        fig.add_trace(go.Scatter(
            x=A.ravel(), y=B.ravel(), mode="markers", name="click to start here", showlegend=False,
            marker=dict(size=10, color="rgba(0,0,0,0)"),
            hovertemplate="click: start at (%{x:.2f}, %{y:.2f})<extra></extra>",
        ))
    (a0, a1), (b0, b1) = surf.box
    if trajs:  # a path that leaves the surface's box stays in view (it used to run off the plot),
        # up to half the box's size on each side; beyond that the map would be mostly empty, and a
        # note says where the path went
        pts = np.concatenate([tr.points for tr in trajs.values()])
        pts = pts[np.isfinite(pts).all(axis=1)]
        if len(pts):
            wa, wb = a1 - a0, b1 - b0
            lo, hi = pts.min(axis=0), pts.max(axis=0)
            a0, a1 = max(a0 - wa / 2, min(a0, lo[0] - 0.03 * wa)), min(a1 + wa / 2, max(a1, hi[0] + 0.03 * wa))
            b0, b1 = max(b0 - wb / 2, min(b0, lo[1] - 0.03 * wb)), min(b1 + wb / 2, max(b1, hi[1] + 0.03 * wb))
            if lo[0] < a0 or hi[0] > a1 or lo[1] < b0 or hi[1] > b1:
                fig.add_annotation(
                    x=0.01, y=0.99, xref="paper", yref="paper", xanchor="left", yanchor="top", showarrow=False,
                    text=(f"a path leaves the map: it reaches {surf.w1_label} from {lo[0]:.3g} to {hi[0]:.3g}, "
                          f"{surf.w2_label} from {lo[1]:.3g} to {hi[1]:.3g}"),
                    bgcolor="rgba(255,255,255,0.8)", font=dict(size=11), name="off the map")
    fig.update_xaxes(title_text=surf.w1_label, range=[a0, a1], constrain="domain")
    fig.update_yaxes(title_text=surf.w2_label, range=[b0, b1])
    fig.update_layout(height=560, margin=dict(l=60, r=20, t=30, b=50),
                      legend=dict(orientation="h", yanchor="top", y=-0.12, x=0.0),
                      clickmode="event+select", dragmode="pan")
    return fig


def trajectory_curves_figure(trajs: dict[str, Trajectory], step: int | None = None,
                             x: str = "step") -> go.Figure:
    """Loss (log scale) and gradient norm of each arm against the step, sharing the x-axis.

    Arguments:
        trajs: arm -> Trajectory.
        step: the current step of the walk (a vertical line), or None.
        x: "step" (one optimizer step = one toy epoch) or "evals" (cumulative loss
            evaluations: what each step cost).
    """
    if x not in ("step", "evals"):
        raise ValueError(f"x must be 'step' or 'evals'; got {x!r}")
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=("Loss", "Gradient norm (two-phase: with its threshold)"))
    for arm, tr in trajs.items():
        xs = np.arange(tr.steps + 1) if x == "step" else tr.evals
        color = arm_color(arm)
        dash = _ARM_DASH.get(arm, "solid")
        fig.add_trace(go.Scatter(x=xs, y=np.maximum(tr.loss, 1e-16), mode="lines", name=arm_label(arm),
                                 line=dict(color=color, dash=dash), legendgroup=arm), row=1, col=1)
        fig.add_trace(go.Scatter(x=xs, y=tr.grad_norm, mode="lines", name=arm_label(arm), showlegend=False,
                                 line=dict(color=color, dash=dash), legendgroup=arm), row=2, col=1)
        if tr.switch_index is not None or arm == "two-phase":
            fig.add_trace(go.Scatter(
                x=xs, y=tr.threshold, mode="lines", name="tolerance × running max", legendgroup=arm,
                line=dict(color=color, width=1, dash="dash"),
            ), row=2, col=1)
        if tr.peak_index is not None:
            p = tr.peak_index
            fig.add_trace(go.Scatter(x=[xs[p]], y=[tr.grad_norm[p]], mode="markers", name="peak of the norm",
                                     marker=dict(symbol="triangle-up", size=11, color=color),
                                     legendgroup=arm), row=2, col=1)
        if tr.switch_index is not None:
            # labelled at the bottom: at the top the label sat on the "Loss" subplot title
            fig.add_vline(x=float(xs[tr.switch_index]), line=dict(color=color, dash="dot", width=1.5),
                          annotation_text="switch", annotation_position="bottom right")
    if step is not None:
        ref = next(iter(trajs.values()))
        k = max(0, min(int(step), ref.steps))
        if x == "step":
            fig.add_vline(x=k, line=dict(color="#555555", width=1))
    fig.update_yaxes(type="log", title_text="loss (below 1e-16 drawn at 1e-16)", exponentformat="power",
                     row=1, col=1)
    fig.update_yaxes(type="log", title_text="gradient norm", exponentformat="power", row=2, col=1)
    fig.update_xaxes(title_text="step (= epoch of the toy)" if x == "step" else "loss evaluations (cost)",
                     row=2, col=1)
    fig.update_layout(height=520, margin=dict(l=60, r=20, t=40, b=50),
                      legend=dict(orientation="h", yanchor="top", y=-0.12, x=0.0))
    return fig
