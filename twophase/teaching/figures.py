"""The Learn page's figures of the toy surfaces: the surface with the arms' paths, and their curves."""

from __future__ import annotations

import numpy as np
import plotly.colors as pcolors
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from twophase.plots import arm_color, arm_label
from twophase.teaching.surfaces import _surface, surface_hessian
from twophase.teaching.trajectories import Trajectory

SHADE_COLORSCALE = [[0.0, "rgba(255,127,14,0)"], [1.0, "rgba(255,127,14,0.20)"]]
SHADE_RGBA = "rgba(255,127,14,0.35)"  # the legend's swatch of the shading
_SHADE_RGB, _SHADE_ALPHA = np.array([255, 127, 14], dtype=float), 0.20
CONTOUR_LINES = 20
LINE_HALF_WIDTH = 0.8  # pixels of the picture
_ARM_DASH = {"adam": "solid", "cg": "dot", "two-phase": "solid"}


def _log_loss(loss: np.ndarray) -> np.ndarray:
    return np.log10(np.maximum(loss, 0.0) + 1e-4)


def _viridis(t: np.ndarray) -> np.ndarray:
    """RGB (0-255 floats) of Plotly's Viridis at t in [0, 1]."""
    stops = np.array([[int(h[i:i + 2], 16) for i in (1, 3, 5)] for h in pcolors.sequential.Viridis], dtype=float)
    pos = np.linspace(0.0, 1.0, len(stops))
    return np.stack([np.interp(t, pos, stops[:, k]) for k in range(3)], axis=-1)


def _nice_step(span: float, lines: int) -> float:
    """A round step (1, 2, 2.5 or 5 times a power of ten) giving at most about `lines` lines over `span`."""
    raw = max(span, 1e-12) / lines
    power = 10.0 ** np.floor(np.log10(raw))
    return float(next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw))


def surface_image(grid: dict, lines: int = CONTOUR_LINES) -> str:
    """The map's background as a PNG data URI (RGBA, one pixel per grid point, top row = largest
    w2): the non-convex region shaded in SHADE_COLORSCALE's orange, and contour lines of log10 loss
    at a round step (at most about `lines` of them), each in Viridis at its value and about
    2 * LINE_HALF_WIDTH pixels wide; elsewhere transparent, so the plot's background shows as it
    did under the old heatmap and contour traces."""
    import base64
    import io

    from PIL import Image

    z = _log_loss(np.asarray(grid["loss"], dtype=float))
    z = np.where(np.isfinite(z), z, np.nanmax(np.where(np.isfinite(z), z, -np.inf)))
    lo, hi = float(z.min()), float(z.max())
    step = _nice_step(hi - lo, lines)
    # each pixel's distance to the nearest contour value, in pixels (the value's distance over the
    # slope per pixel): lines of even width, anti-aliased, however dense or sparse the levels are
    frac = z / step
    nearest = np.round(frac)
    slope = np.hypot(*np.gradient(frac))
    ink = np.clip(1.0 - np.abs(frac - nearest) / np.maximum(slope, 1e-12) / LINE_HALF_WIDTH, 0.0, 1.0)
    shade = np.asarray(grid["nonconvex"], dtype=bool)[..., None] * _SHADE_ALPHA
    line_rgb = _viridis(((nearest * step - lo) / max(hi - lo, 1e-12)).clip(0, 1))
    alpha = ink + (1 - ink) * shade[..., 0]
    rgb = (ink[..., None] * line_rgb + (1 - ink[..., None]) * shade * _SHADE_RGB) / np.maximum(alpha, 1e-12)[..., None]
    rgba = np.concatenate([rgb, 255 * alpha[..., None]], axis=-1)
    buffer = io.BytesIO()
    Image.fromarray(rgba[::-1].round().astype(np.uint8), "RGBA").save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _walked(tr: Trajectory, k: int, part: str) -> dict:
    """The attributes of one arm's moving trace after step k: "path" (the points up to k), "now"
    (where the arm is, with what it is doing in the hover), "switch" (the star, filled once reached)."""
    k = min(k, tr.steps)
    if part == "path":  # point i is step i: the hover data of every step serves any cut of the path
        return dict(x=tr.points[: k + 1, 0], y=tr.points[: k + 1, 1],
                    customdata=np.stack([np.arange(tr.steps + 1), tr.loss], axis=-1))
    if part == "now":
        cg = tr.status[k] or "–"
        return dict(x=[tr.points[k, 0]], y=[tr.points[k, 1]],
                    text=[f"{arm_label(tr.arm)} at step {k}<br>phase: {tr.phase[k] if k else 'start'}"
                          f"<br>loss {tr.loss[k]:.3g}<br>gradient norm {tr.grad_norm[k]:.3g}"
                          f"<br>loss evaluations {int(tr.evals[k])}<br>last CG status: {cg}"])
    return dict(color=arm_color(tr.arm) if k >= tr.switch_index else "white")


WALK_FRAMES = 101  # animation frames of the walk at most (each carries the paths up to its step)


def walk_steps(last: int, switches=()) -> list[int]:
    """The steps the walk's slider stops at: every step up to WALK_FRAMES, else evenly spaced ones
    with the first, the last and the switch steps (and the step after each) among them."""
    if last + 1 <= WALK_FRAMES:
        return list(range(last + 1))
    keep = set(np.linspace(0, last, WALK_FRAMES - 2 * len(switches)).round().astype(int).tolist())
    keep |= {k for s in switches for k in (s, s + 1) if 0 <= k <= last}
    return sorted(keep)


def _add_walk(fig: go.Figure, moving: list, last: int, shown: int) -> None:
    """Frames and a slider that walk the paths in the browser. Each frame redraws the map (the picture
    and the scatter traces: 0.11-0.15 s a step here); without the redraw a step took 0.04 s, but a
    click on the map after a walk then failed inside Plotly ("reading 'selectAll'") and never
    reached the page, so the start could no longer be picked."""
    switches = sorted({tr.switch_index for _, _, tr, part in moving if part == "switch"})
    steps = walk_steps(last, switches)
    indices = [i for i, *_ in moving]
    frames = []
    for k in steps:
        data = []
        for _, _, tr, part in moving:
            attrs = _walked(tr, k, part)
            if part == "path":  # the base trace's hover data serves every frame (point i is step i)
                attrs = dict(x=attrs["x"].astype(np.float32), y=attrs["y"].astype(np.float32))
            data.append(dict(type="scatter", marker=attrs) if part == "switch" else dict(type="scatter", **attrs))
        frames.append(dict(name=str(k), data=data, traces=indices))
    fig.frames = frames  # plain dicts: plotly validates them once, here (go.Frame objects were validated twice)
    instant = dict(mode="immediate", frame=dict(duration=0, redraw=True), transition=dict(duration=0))
    fig.update_layout(
        sliders=[dict(active=steps.index(min(steps, key=lambda k: abs(k - shown))), x=0.0, len=0.74, y=-0.11,
                      pad=dict(t=0, b=0), currentvalue=dict(prefix="walk along the paths: step ", xanchor="left"),
                      steps=[dict(method="animate", label=str(k), args=[[str(k)], instant]) for k in steps])],
        # play and pause to the right of the rail
        updatemenus=[dict(type="buttons", direction="left", x=1.0, y=-0.15, xanchor="right", yanchor="top",
                          pad=dict(t=0, r=0), showactive=False, buttons=[
                              dict(label="▶", method="animate",
                                   args=[None, dict(mode="immediate", fromcurrent=True,
                                                    frame=dict(duration=60, redraw=True), transition=dict(duration=0))]),
                              dict(label="❚❚", method="animate", args=[[None], instant])])])


def surface_figure(name: str, grid: dict, trajs: dict[str, Trajectory] | None = None,
                   step: int | None = None, start: tuple[float, float] | None = None,
                   pick_grid: int = 0, walk: bool = False) -> go.Figure:
    """Contour plot of a two-parameter loss with the non-convex region shaded and the arms' paths.

    Arguments:
        name: the surface (for labels and its minimum).
        grid: the result of surface_grid.
        trajs: arm -> Trajectory (from `trajectories`), or None for the surface alone.
        step: draw the paths up to this step and mark where each arm is then (None: all).
        start: the start point to mark (defaults to the trajectories' first point).
        pick_grid: if > 0, add an invisible pick_grid x pick_grid lattice of points that a
            click can select (the page uses it to move the start point); 0 = none.
        walk: add a step slider (and a play button) under the map that walks the paths in the
            browser, without a round trip to the server: one animation frame per step
            (WALK_FRAMES at most, evenly spaced, the switch steps among them).
    """
    surf = _surface(name)
    fig = go.Figure()
    z = _log_loss(grid["loss"])
    zmin, zmax = float(np.nanmin(z)), float(np.nanmax(z))
    # the loss's contour lines over the non-convex shading, as one picture under the axes: the browser
    # draws it at once at every step of the walk (a heatmap and a contour trace were recomputed by
    # Plotly at each redraw, about a third of a step's time)
    fig.add_layout_image(
        source=surface_image(grid), xref="x", yref="y", x=float(grid["w1"][0]), y=float(grid["w2"][-1]),
        sizex=float(grid["w1"][-1] - grid["w1"][0]), sizey=float(grid["w2"][-1] - grid["w2"][0]),
        sizing="stretch", layer="below", name="loss and shading")
    # legend entries for the picture: the shading, and the contour lines' colour scale
    fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name="not convex (Hessian not positive definite)",
                             marker=dict(symbol="square", size=14, color=SHADE_RGBA)))
    fig.add_trace(go.Scatter(
        x=[None], y=[None], mode="markers", name="loss", showlegend=False, hoverinfo="skip",
        marker=dict(color=[zmin], cmin=zmin, cmax=zmax, colorscale="Viridis", showscale=True,
                    colorbar=dict(title=dict(text="log10 loss", side="right"), thickness=12, len=0.8))))
    fig.add_trace(go.Scatter(
        x=[surf.minimum[0]], y=[surf.minimum[1]], mode="markers", name="global minimum",
        marker=dict(symbol="x", size=12, color="#2ca02c", line=dict(width=1)),
        hovertemplate="global minimum<extra></extra>",
    ))
    if trajs:
        last = max(tr.steps for tr in trajs.values())
        shown = last if step is None else max(0, min(int(step), last))
        moving = []  # indices of the traces a step of the walk changes, and how to make them
        for arm, tr in trajs.items():
            moving.append((len(fig.data), arm, tr, "path"))
            fig.add_trace(go.Scatter(
                mode="lines+markers", name=arm_label(arm),
                line=dict(color=arm_color(arm), width=2.5, dash=_ARM_DASH.get(arm, "solid")),
                marker=dict(size=4), legendgroup=arm,
                hovertemplate=(f"{arm_label(arm)}<br>step %{{customdata[0]}}<br>loss %{{customdata[1]:.3g}}"
                               "<extra></extra>"), **_walked(tr, shown, "path")))
            moving.append((len(fig.data), arm, tr, "now"))
            fig.add_trace(go.Scatter(
                mode="markers", showlegend=False, legendgroup=arm, hovertemplate="%{text}<extra></extra>",
                marker=dict(size=13, color=arm_color(arm), line=dict(color="white", width=2)),
                **_walked(tr, shown, "now")))
            if tr.switch_index is not None:
                s = tr.switch_index
                moving.append((len(fig.data), arm, tr, "switch"))
                fig.add_trace(go.Scatter(
                    x=[tr.points[s, 0]], y=[tr.points[s, 1]], mode="markers+text",
                    name=f"switch to CG (after step {s})", legendgroup=arm,
                    text=["switch"], textposition="top right",
                    marker=dict(symbol="star", size=18, line=dict(color=arm_color(arm), width=2),
                                **_walked(tr, shown, "switch")),
                    hovertemplate=f"switch to CG after step {s}<extra></extra>",
                ))
        if walk:
            _add_walk(fig, moving, last, shown)
        if start is None:
            start = tuple(next(iter(trajs.values())).points[0])
    if start is not None:
        fig.add_trace(go.Scatter(
            x=[start[0]], y=[start[1]], mode="markers", name="start",
            marker=dict(symbol="circle-open", size=14, color="black", line=dict(width=2)),
            hovertemplate="start<extra></extra>",
        ))
    if pick_grid and pick_grid > 1:  # a lattice to click (and to hover: the loss and curvature there)
        (a0, a1), (b0, b1) = surf.box
        A, B = np.meshgrid(np.linspace(a0, a1, pick_grid), np.linspace(b0, b1, pick_grid))
        loss, haa, hab, hbb = surface_hessian(name, A, B, grid.get("c", 0.5))
        eig_min = 0.5 * (haa + hbb) - np.sqrt((0.5 * (haa - hbb)) ** 2 + hab ** 2)
        fig.add_trace(go.Scatter(
            x=A.ravel(), y=B.ravel(), mode="markers", name="click to start here", showlegend=False,
            marker=dict(size=10, color="rgba(0,0,0,0)"),
            customdata=np.stack([_log_loss(loss).ravel(), eig_min.ravel()], axis=-1).astype(np.float32),
            hovertemplate=(f"{surf.w1_label}=%{{x:.3f}}<br>{surf.w2_label}=%{{y:.3f}}<br>log10 loss=%{{customdata[0]:.2f}}"
                           "<br>smallest Hessian eigenvalue=%{customdata[1]:.3g}<br>click: start here<extra></extra>"),
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
                    # short lines: in one line it ran past the map's right edge at 1280 px
                    text=(f"a path leaves the map: it reaches<br>{surf.w1_label} {lo[0]:.3g} to {hi[0]:.3g},"
                          f"<br>{surf.w2_label} {lo[1]:.3g} to {hi[1]:.3g}"),
                    bgcolor="rgba(255,255,255,0.8)", font=dict(size=11), align="left", name="off the map")
    fig.update_xaxes(title_text=surf.w1_label, range=[a0, a1], constrain="domain")
    fig.update_yaxes(title_text=surf.w2_label, range=[b0, b1])
    walking = bool(walk and trajs)
    legend = (dict(orientation="h", yref="container", yanchor="bottom", y=0.0, x=0.0, font=dict(size=11),
                   itemsizing="constant", tracegroupgap=0) if walking else  # under the slider
              dict(orientation="h", yanchor="top", y=-0.12, x=0.0))
    fig.update_layout(height=780 if walking else 560, margin=dict(l=60, r=20, t=30, b=310 if walking else 50),
                      legend=legend,
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
    # short titles (the threshold is named in the legend): at 1280 px the chart is about 380 px wide
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.12,
                        subplot_titles=("Loss", "Gradient norm"))
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
