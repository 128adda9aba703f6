"""Plotly figures built from a run's metrics (pure functions; no streamlit).

Every function takes the per-epoch metrics as a pandas DataFrame with the
columns of twophase/schema.py (arm, epoch, phase, train_loss, train_acc,
val_loss, val_acc, grad_norm, grad_norm_max, data_passes, loss_evals, seconds)
and, where it matters, the run's events: a list of dicts
``{"arm", "kind": "peak"|"switch"|"diverged", "epoch", "value", "threshold"}``.
Missing columns or an empty frame give an empty (but valid) figure.

The same arm has the same colour in every figure (ARM_COLORS). The x-axis of
the per-epoch figures is one of X_AXES: "epoch", "data_passes" (cumulative
cost: a forward+backward pass over the training set counts 1, a forward-only
pass 1/3) or "seconds" (wall time).
"""

from __future__ import annotations

import math
from typing import Sequence

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import sample_colorscale

from twophase.analysis import _arm_frame, _arms, _clean, _first_event, _value_at, peak, smooth, switch_epoch
from twophase.training.strategies import arm_label as strategy_label
from twophase.training.strategies import parse_arm

ARM_COLORS = {
    "two-phase": "#d62728",   # red: the method
    "adam": "#1f77b4",        # blue: the baseline
    "adam-lbfgs": "#2ca02c",  # green
    "cg": "#9467bd",          # purple
}
_EXTRA_COLORS = ("#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")

# Branches with their own switch ("two-phase@300", "two-phase@30%") run from dark red (early
# switches) to gold (late ones), so a sweep reads as a gradient; see branch_color.
BRANCH_SCALE = [[0.0, "#7f0000"], [0.45, "#e6550d"], [1.0, "#c7a000"]]

X_AXES = {
    "epoch": "epoch",
    "data_passes": "data passes (cost)",
    "seconds": "wall time (s)",
}

METRIC_LABELS = {
    "train_loss": "training loss",
    "val_loss": "validation loss",
    "train_acc": "training accuracy",
    "val_acc": "validation accuracy",
    "grad_norm": "gradient norm",
    "grad_norm_max": "running max of the gradient norm",
    "data_passes": "data passes",
    "loss_evals": "loss evaluations",
    "seconds": "wall time (s)",
}



_DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")


# ----------------------------------------------------------------- helpers
def switches(arm: str) -> bool:
    """True for an arm whose optimizer follows a switch rule (it has a peak, a threshold, a switch)."""
    try:
        return parse_arm(arm).kind.switches
    except ValueError:
        return False


def branch_color(arm: str) -> str | None:
    """The colour of an arm with a switch of its own on BRANCH_SCALE: by its switch epoch (log scale,
    1 to 1000), by its percentage of the epochs, or a stable pick for other options; None for an
    arm spec without "@"."""
    try:
        spec = parse_arm(arm)
    except ValueError:
        return None
    if not (spec.rule or spec.paper or spec.precision or spec.signal):
        return None
    rule = dict(spec.rule)
    if "switch_epoch" in rule:
        t = math.log10(max(1, rule["switch_epoch"])) / 3.0
    elif "switch_fraction" in rule:
        t = rule["switch_fraction"]
    else:
        t = (sum(map(ord, spec.name)) % 97) / 96
    return sample_colorscale(BRANCH_SCALE, [min(1.0, max(0.0, t))], colortype="rgb")[0]


def arm_color(arm: str) -> str:
    """The colour of `arm`: a fixed one for the strategies, branch_color for branches with a switch
    of their own, a stable pick otherwise."""
    if arm in ARM_COLORS:
        return ARM_COLORS[arm]
    color = branch_color(arm)
    if color is not None:
        return color
    return _EXTRA_COLORS[sum(map(ord, str(arm))) % len(_EXTRA_COLORS)]


def text(value) -> str:
    """`value` as plain text in a Plotly label: the tags Plotly would render (<b>, <br>, links) are
    escaped, so a run's or an arm's name from a file is shown as written."""
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def arm_label(arm: str, switched_at: int | None = None) -> str:
    """Human name of `arm` for legends and tables ("Adam", "two-phase (switch at 300)"), as plain text."""
    return text(strategy_label(str(arm), switched_at))


def _check_x(x: str) -> None:
    if x not in X_AXES:
        raise ValueError(f"x must be one of {', '.join(X_AXES)}; got {x!r}")


def _draw_order(fig: go.Figure) -> None:
    """Draw the baseline arms first, so the method's curve stays visible where the
    arms coincide (before the switch), while the legend still lists arms in ARM_COLORS order."""
    order = list(ARM_COLORS)

    def rank(trace) -> int:
        arm = (trace.meta or {}).get("arm") if isinstance(trace.meta, dict) else None
        return order.index(arm) if arm in order else len(order)

    for i, trace in enumerate(fig.data):
        trace.legendrank = 100 * (rank(trace) + 1) + i
    fig.data = tuple(sorted(fig.data, key=rank, reverse=True))


def _base_layout(fig: go.Figure, title: str, x: str, y_title: str) -> go.Figure:
    _draw_order(fig)
    fig.update_layout(
        title=dict(text=title, x=0.0, xanchor="left"),
        xaxis_title=X_AXES.get(x, x),
        yaxis_title=y_title,
        # below the plotting area: the legend never covers a curve, the toolbar never covers the legend
        legend=dict(orientation="h", yanchor="top", y=-0.2, xanchor="left", x=0.0),
        margin=dict(l=60, r=20, t=50, b=40),
        height=480,
        hovermode="x unified",
        template="plotly_white",
    )
    return fig


def keep_view(fig: go.Figure, key: str) -> go.Figure:
    """Keep the user's zoom, pan and hidden legend entries when the figure is drawn again with new
    data (Plotly's uirevision): the same `key` (e.g. the run and the chart) keeps them."""
    fig.update_layout(uirevision=key)
    return fig


def _add_line(fig: go.Figure, x, y, smoothing: float, name: str, line: dict, mode: str, meta: dict, **extra) -> None:
    """A curve; with smoothing > 0 an exponential moving average of it, the raw curve faint behind
    (as TensorBoard draws it)."""
    if smoothing:
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name=f"{name} (raw)", line=dict(line, width=1),
                                 opacity=0.25, showlegend=False, hoverinfo="skip",
                                 legendgroup=extra.get("legendgroup"), meta={**meta, "raw": True}))
        y = smooth(y, smoothing)
        mode = "lines"
    fig.add_trace(go.Scatter(x=x, y=y, mode=mode, name=name, line=line, meta=meta, **extra))


def _add_switch_lines(fig: go.Figure, df: pd.DataFrame, events, x: str, label: bool = True) -> None:
    """A vertical line at each switching arm's switch epoch, labelled with its value. The label
    sits on the side of the line with more room: Plotly widens the axis to fit a label, so one
    right of a switch near the last epoch would leave half the chart empty."""
    xs = pd.to_numeric(df[x], errors="coerce") if x in df.columns else pd.Series(dtype=float)
    middle = (float(xs.min()) + float(xs.max())) / 2 if xs.notna().any() else None
    for arm in _arms(df):
        ep = switch_epoch(df, events, arm)
        if ep is None:
            continue
        part = df[df["arm"] == arm]
        xv = float(ep) if x == "epoch" else _value_at(part, ep, x)
        if xv is None:
            continue
        note = {}
        if label:
            side = "top left" if middle is not None and xv > middle else "top right"
            note = dict(annotation_text=f"switch ({arm_label(arm)}): epoch {ep}", annotation_position=side,
                        annotation_font_color=arm_color(arm))
        fig.add_vline(x=xv, line_dash="dash", line_color=arm_color(arm), line_width=1.5, **note)


MARKER_LIMIT = 60  # points per line up to which each point gets a marker


def line_mode(points: int) -> str:
    """Plotly's trace mode for a line of `points` points: markers on each point for short
    runs, a plain line beyond MARKER_LIMIT points. Each marker is an SVG element the browser
    redraws with the chart; for hundreds of epochs they cost more CPU than training a small
    model and are too dense to read anyway (benchmarks/app.py)."""
    return "lines+markers" if points <= MARKER_LIMIT else "lines"


def _add_divergence_markers(fig: go.Figure, df: pd.DataFrame, events, x: str, y: str) -> None:
    """An x marker at the last finite point of each diverged arm."""
    for arm in _arms(df):
        ev = _first_event(events, "diverged", arm)
        if ev is None:
            continue
        part = _arm_frame(df, arm, events)
        if y not in part.columns or x not in part.columns:
            continue
        finite = part.dropna(subset=[x, y])
        if finite.empty:
            continue
        last = finite.iloc[-1]
        fig.add_trace(go.Scatter(
            x=[last[x]], y=[last[y]], mode="markers+text",
            name=f"diverged ({arm_label(arm)})",
            marker=dict(symbol="x", size=14, color=arm_color(arm), line=dict(width=2)),
            text=["diverged"], textposition="top center", showlegend=True,
            meta={"role": "diverged", "arm": arm},
        ))


# ------------------------------------------------------------------ figures
def _add_switch_marker(fig: go.Figure, part: pd.DataFrame, sw: int, x: str, arm: str, name: str, **extra) -> None:
    """The open diamond on an arm's gradient-norm curve at its switch epoch (role "switch")."""
    sx = float(sw) if x == "epoch" else _value_at(part, sw, x)
    sy = _value_at(part, sw, "grad_norm")
    if sx is not None and sy is not None:
        fig.add_trace(go.Scatter(
            x=[sx], y=[sy], mode="markers", name=name,
            marker=dict(symbol="diamond", size=12, color="white", line=dict(color=arm_color(arm), width=2)),
            legendgroup=arm, meta={"role": "switch", "arm": arm, "epoch": sw}, **extra))


def grad_norm_figure(metrics: pd.DataFrame | None, events=None, x: str = "epoch",
                     tolerance: float | None = None, log_y: bool = False,
                     arms: Sequence[str] | None = None, show_threshold: bool = True,
                     smoothing: float = 0.0) -> go.Figure:
    """Gradient norm per epoch for every arm, with the switch rule drawn in.

    metrics: per-epoch records (see module doc). events: the run's events.
    x: one of X_AXES. tolerance: the switch tolerance; the threshold line is
    tolerance x running max (taken from a switch event's threshold when
    tolerance is None; no threshold line when neither is known).
    log_y: logarithmic gradient-norm axis. arms: restrict to these arms.
    show_threshold: draw the threshold line (off for a run with a fixed
    switch epoch, where the threshold decides nothing). An arm that switched
    at a fixed epoch (its switch event has no threshold) gets neither the
    threshold nor the reference marker. smoothing: see _add_line.

    Traces carry meta={"role": ..., "arm": ...}; roles: "grad_norm",
    "running_max", "threshold" (up to the switch), "running_max_held", "threshold_held" (their
    last values held faintly from the switch to the last epoch), "peak", "switch", "diverged".
    """
    _check_x(x)
    df = _clean(metrics)
    fig = go.Figure()
    for arm in _arms(df, arms):
        part = _arm_frame(df, arm, events)
        if "grad_norm" not in part.columns or x not in part.columns:
            continue
        color = arm_color(arm)
        _add_line(fig, part[x], part["grad_norm"], smoothing, arm_label(arm), dict(color=color, width=2),
                  line_mode(len(part)), {"role": "grad_norm", "arm": arm}, marker=dict(size=4), legendgroup=arm)
        if not switches(arm):
            continue
        sw = switch_epoch(df, events, arm)
        event = _first_event(events, "switch", arm)
        if event is not None and event.get("threshold") is None:
            # a fixed switch epoch: no norm decided it, so neither a threshold nor a reference is drawn
            _add_switch_marker(fig, part, sw, x, arm, f"switch ({arm_label(arm)}): epoch {sw}, fixed",
                               hovertext=f"fixed switch after epoch {sw}", hoverinfo="text")
            continue
        upto = part if sw is None else part[part["epoch"] <= sw]
        if "phase" in upto.columns:  # the switch rule starts counting at epoch 1
            upto = upto[upto["phase"] != "init"]
        if "grad_norm_max" in upto.columns and upto["grad_norm_max"].notna().any():
            running_max = upto["grad_norm_max"]
        else:
            running_max = upto["grad_norm"].cummax()
        fig.add_trace(go.Scatter(
            x=upto[x], y=running_max, mode="lines", name=f"running max ({arm_label(arm)})", line_shape="hv",
            line=dict(color=color, width=2.5, dash="dot"), legendgroup=arm,
            meta={"role": "running_max", "arm": arm},
        ))
        tol = tolerance if show_threshold else None
        if tol is None and show_threshold:
            ev = _first_event(events, "switch", arm)
            if ev is not None and ev.get("threshold") is not None:
                m = _value_at(part, ev.get("epoch"), "grad_norm_max")
                if m:
                    tol = float(ev["threshold"]) / m
        if tol is not None:
            fig.add_trace(go.Scatter(
                x=upto[x], y=running_max * float(tol), mode="lines",
                name=f"threshold {float(tol):.4g} x max ({arm_label(arm)})", line_shape="hv",
                line=dict(color="#555", width=2, dash="dash"), opacity=0.9, legendgroup=arm,
                meta={"role": "threshold", "arm": arm},
            ))
        # After the switch the rule watches no more: its last running max and threshold are held as
        # faint lines to the end, so that a switch after a few epochs still shows what it compared
        # (drawn only up to the switch, they were short segments under the curve and the star).
        last_x = part[x].max() if len(part) else None
        if sw is not None and len(upto) and last_x is not None and float(last_x) > float(upto[x].iloc[-1]):
            held = [("running_max_held", float(running_max.iloc[-1]), dict(color=color, width=1.5, dash="dot"),
                     "running max held after the switch")]
            if tol is not None:
                held.append(("threshold_held", float(running_max.iloc[-1]) * float(tol),
                             dict(color="#555", width=1.5, dash="dash"), "threshold at the switch, held"))
            for role, level, line, words in held:
                fig.add_trace(go.Scatter(
                    x=[float(upto[x].iloc[-1]), float(last_x)], y=[level, level], mode="lines", line=line,
                    opacity=0.45, showlegend=False, legendgroup=arm, meta={"role": role, "arm": arm},
                    hovertext=f"{words} ({arm_label(arm)}): {level:.4g}; the rule watches no more", hoverinfo="text"))
        pk = peak(df, events, arm)
        if pk is not None:
            px_ = float(pk[0]) if x == "epoch" else _value_at(part, pk[0], x)
            py_ = pk[1] if not math.isnan(pk[1]) else _value_at(part, pk[0], "grad_norm")
            if px_ is not None and py_ is not None:
                fig.add_trace(go.Scatter(
                    x=[px_], y=[py_], mode="markers",
                    name=f"largest norm before the switch ({arm_label(arm)}): epoch {pk[0]}",
                    marker=dict(symbol="star", size=15, color=color, line=dict(color="black", width=1)),
                    legendgroup=arm, meta={"role": "peak", "arm": arm, "epoch": pk[0]}, hoverinfo="text",
                    hovertext=(f"the largest gradient norm the rule had seen when it fired (epoch {pk[0]}): it "
                               f"switched once a norm fell to tolerance x this value. Not necessarily the "
                               f"curve's highest point: a later one (in the CG phase) is not watched."),
                ))
        if sw is not None:
            _add_switch_marker(fig, part, sw, x, arm, f"switch ({arm_label(arm)}): epoch {sw}")
    shown = df[df["arm"].isin(_arms(df, arms))] if len(df) else df
    _add_switch_lines(fig, shown, events, x)
    _add_divergence_markers(fig, shown, events, x, "grad_norm")
    _base_layout(fig, "Gradient norm", x, "gradient norm")
    fig.update_xaxes(rangemode="tozero")
    if log_y:
        fig.update_yaxes(type="log")
    else:
        fig.update_yaxes(rangemode="tozero")
    return fig


def _add_train_val_traces(fig: go.Figure, df: pd.DataFrame, events, x: str, arms, columns,
                          smoothing: float = 0.0) -> None:
    """One line per arm and column: train_* solid and wider, val_* dashed; columns without values skipped."""
    for arm in _arms(df, arms):
        part = _arm_frame(df, arm, events)
        if x not in part.columns:
            continue
        for col in columns:
            if col not in part.columns or not part[col].notna().any():
                continue
            what = "train" if col.startswith("train") else "val"
            _add_line(fig, part[x], part[col], smoothing, f"{arm_label(arm)} {what}",
                      dict(color=arm_color(arm), width=2 if what == "train" else 1.5,
                           dash="solid" if what == "train" else "dash"), "lines", {"role": col, "arm": arm},
                      legendgroup=arm)


def loss_figure(metrics: pd.DataFrame | None, events=None, x: str = "epoch", log_y: bool = True,
                validation: bool = True, arms: Sequence[str] | None = None, smoothing: float = 0.0) -> go.Figure:
    """Training loss (solid) and validation loss (dashed) per arm.

    log_y: logarithmic loss axis (the default). validation: also draw val_loss.
    """
    _check_x(x)
    df = _clean(metrics)
    fig = go.Figure()
    _add_train_val_traces(fig, df, events, x, arms, ("train_loss", "val_loss") if validation else ("train_loss",),
                          smoothing)
    shown = df[df["arm"].isin(_arms(df, arms))] if len(df) else df
    _add_switch_lines(fig, shown, events, x, label=False)
    _add_divergence_markers(fig, shown, events, x, "train_loss")
    _base_layout(fig, "Loss", x, "loss (log scale)" if log_y else "loss")
    fig.update_xaxes(rangemode="tozero")
    if log_y:
        fig.update_yaxes(type="log")
    return fig


def accuracy_figure(metrics: pd.DataFrame | None, events=None, x: str = "epoch",
                    arms: Sequence[str] | None = None, smoothing: float = 0.0) -> go.Figure:
    """Training accuracy (solid) and validation accuracy (dashed) per arm, 0..1."""
    _check_x(x)
    df = _clean(metrics)
    fig = go.Figure()
    _add_train_val_traces(fig, df, events, x, arms, ("train_acc", "val_acc"), smoothing)
    shown = df[df["arm"].isin(_arms(df, arms))] if len(df) else df
    _add_switch_lines(fig, shown, events, x, label=False)
    _base_layout(fig, "Accuracy", x, "accuracy")
    fig.update_xaxes(rangemode="tozero")
    fig.update_yaxes(rangemode="tozero")
    return fig


def has_curvature(metrics: pd.DataFrame | None) -> bool:
    """True when the run recorded the Hessian probe (hess_min, hess_max columns with values)."""
    return metrics is not None and {"hess_min", "hess_max"} <= set(metrics.columns) \
        and bool(metrics["hess_max"].notna().any())


def curvature_figure(metrics: pd.DataFrame | None, events=None, x: str = "epoch",
                     arms: Sequence[str] | None = None) -> go.Figure:
    """The Hessian probe's ratio hess_min / hess_max per epoch, one line per arm.

    Below zero the loss surface has negative curvature at the current weights (non-convex);
    at or above zero it is locally convex. The switch epoch is marked, so one sees whether the
    switch happened where the negative curvature disappeared.
    """
    _check_x(x)
    df = _clean(metrics)
    fig = go.Figure()
    if has_curvature(df):
        for arm in _arms(df, arms):
            part = _arm_frame(df, arm, events)
            if x not in part.columns:
                continue
            part = part[part["hess_min"].notna() & part["hess_max"].notna()]  # probed epochs only (probe_every)
            ratio = part["hess_min"] / part["hess_max"].where(part["hess_max"].abs() > 0)
            fig.add_trace(go.Scatter(
                x=part[x], y=ratio, mode=line_mode(len(part)), name=arm_label(arm),
                line=dict(color=arm_color(arm), width=2), marker=dict(size=4),
                legendgroup=arm, meta={"role": "curvature", "arm": arm},
            ))
        fig.add_hline(y=0.0, line_color="#444", line_width=1,
                      annotation_text="convex above, non-convex below", annotation_position="bottom right")
        shown = df[df["arm"].isin(_arms(df, arms))]
        _add_switch_lines(fig, shown, events, x, label=True)
    _base_layout(fig, "Curvature: smallest / largest Hessian eigenvalue", x, "hess_min / hess_max")
    return fig


def grad_norm_vs_loss_figure(metrics: pd.DataFrame | None, events=None,
                             arms: Sequence[str] | None = None) -> go.Figure:
    """Gradient norm against training loss (the paper's figure 5).

    The loss axis is logarithmic and reversed, so training runs left to right
    (loss falls to the right). The switch point is marked on switching arms.
    """
    df = _clean(metrics)
    fig = go.Figure()
    for arm in _arms(df, arms):
        part = _arm_frame(df, arm, events)
        if "train_loss" not in part.columns or "grad_norm" not in part.columns:
            continue
        part = part[part["train_loss"] > 0]
        fig.add_trace(go.Scatter(
            x=part["train_loss"], y=part["grad_norm"], mode=line_mode(len(part)), name=arm_label(arm),
            line=dict(color=arm_color(arm), width=2), marker=dict(size=4),
            customdata=part["epoch"] if "epoch" in part.columns else None,
            hovertemplate="loss %{x:.4g}<br>grad norm %{y:.4g}<br>epoch %{customdata}<extra></extra>",
            legendgroup=arm, meta={"role": "grad_norm", "arm": arm},
        ))
        sw = switch_epoch(df, events, arm) if switches(arm) else None
        if sw is not None:
            sx, sy = _value_at(part, sw, "train_loss"), _value_at(part, sw, "grad_norm")
            if sx is not None and sy is not None:
                fig.add_trace(go.Scatter(
                    x=[sx], y=[sy], mode="markers+text", name=f"switch ({arm_label(arm)}): epoch {sw}",
                    text=[f"switch, epoch {sw}"], textposition="top center",
                    marker=dict(symbol="diamond", size=12, color="white", line=dict(color=arm_color(arm), width=2)),
                    legendgroup=arm, meta={"role": "switch", "arm": arm, "epoch": sw},
                ))
    _base_layout(fig, "Gradient norm against loss", "epoch", "gradient norm")
    fig.update_layout(hovermode="closest")
    fig.update_xaxes(title_text="training loss (log scale, reversed)", type="log", autorange="reversed")
    return fig


def compare_figure(curves: Sequence[tuple[str, str, pd.DataFrame]], y: str = "train_loss",
                   x: str = "epoch", log_y: bool = False, smoothing: float = 0.0,
                   references: Sequence[tuple[str, str, float]] = ()) -> go.Figure:
    """Overlay of several runs' arms.

    curves: (label of the run, arm, that arm's metrics rows) per curve; the
    colour follows the arm, the dash the run (same run, same dash).
    y: the metric column to draw. x: one of X_AXES. log_y: logarithmic y axis.
    smoothing: exponential moving average weight in [0, 1) (0 = raw; else the raw curve faint behind).
    references: (label, arm, value) horizontal reference lines, e.g. the
    paper's published final losses.
    """
    _check_x(x)
    if not 0 <= smoothing < 1:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing!r}")
    fig = go.Figure()
    run_dash: dict[str, str] = {}
    for label, arm, frame in curves:
        df = _clean(frame)
        if y not in df.columns or x not in df.columns or df.empty:
            continue
        df = df.sort_values(x)
        dash = run_dash.setdefault(label, _DASHES[len(run_dash) % len(_DASHES)])
        _add_line(fig, df[x], df[y], smoothing, name=f"{text(label)} · {arm_label(arm)}", mode="lines",
                  line=dict(color=arm_color(arm), dash=dash, width=2), meta={"role": y, "arm": arm, "run": label})
    for label, arm, value in references:
        if value is None or not math.isfinite(float(value)) or (log_y and float(value) <= 0):
            continue
        # the line itself, and its label in the legend: labels written beside the lines overprinted
        # each other wherever two references were close
        fig.add_hline(y=float(value), line_dash="dot", line_color=arm_color(arm), line_width=1)
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=f"{text(label)}: {float(value):g}",
                                 line=dict(color=arm_color(arm), dash="dot", width=1),
                                 meta={"role": "reference", "arm": arm, "value": float(value)}))
    _base_layout(fig, METRIC_LABELS.get(y, y).capitalize(), x, METRIC_LABELS.get(y, y))
    if log_y:
        fig.update_yaxes(type="log")
    return fig


def _fill(color: str, alpha: float = 0.18) -> str:
    """`color` (#rrggbb or rgb(...)) as an rgba fill."""
    if color.startswith("#") and len(color) == 7:
        r, g, b = (int(color[i:i + 2], 16) for i in (1, 3, 5))
    elif color.startswith("rgb("):
        r, g, b = (int(float(v)) for v in color[4:-1].split(","))
    else:
        return color
    return f"rgba({r},{g},{b},{alpha})"


def seed_band_figure(frames: Sequence[pd.DataFrame], y: str = "train_loss", x: str = "epoch",
                     log_y: bool = False, arms: Sequence[str] | None = None) -> go.Figure:
    """Several seeds of one run (twophase/seeds.py): per arm the median over the seeds as a line
    and the range between the lowest and the highest seed as a shaded band.

    frames: one metrics frame per seed. arms: the arms to draw (default: every arm found)."""
    from twophase import seeds as seeds_mod

    _check_x(x)
    fig = go.Figure()
    found = list(dict.fromkeys(a for f in frames if f is not None and "arm" in getattr(f, "columns", [])
                               for a in f["arm"].dropna().astype(str)))
    for arm in (arms if arms is not None else found):
        b = seeds_mod.band(frames, arm, y, x)
        if b.empty:
            continue
        color, name = arm_color(arm), arm_label(arm)
        fig.add_trace(go.Scatter(x=b[x], y=b["high"], mode="lines", line=dict(width=0, color=color),
                                 showlegend=False, hoverinfo="skip", legendgroup=arm,
                                 meta={"role": "band_high", "arm": arm}))
        fig.add_trace(go.Scatter(x=b[x], y=b["low"], mode="lines", line=dict(width=0, color=color),
                                 fill="tonexty", fillcolor=_fill(color), name=f"{name}: min-max over seeds",
                                 hoverinfo="skip", legendgroup=arm, meta={"role": "band_low", "arm": arm}))
        fig.add_trace(go.Scatter(x=b[x], y=b["median"], mode="lines", line=dict(color=color, width=2),
                                 name=f"{name}: median of {int(b['seeds'].max())} seeds", legendgroup=arm,
                                 customdata=b["seeds"], hovertemplate="%{y:.4g} (median of %{customdata} seeds)",
                                 meta={"role": "band_median", "arm": arm}))
    label = METRIC_LABELS.get(y, y)
    _base_layout(fig, f"{label.capitalize()}: median and range over seeds", x, label)
    if log_y:
        fig.update_yaxes(type="log")
    return fig


def switch_study_figure(points: pd.DataFrame) -> go.Figure:
    """Two-phase / Adam training loss at equal data passes against the switch epoch, one line per
    model and image count (benchmarks/switch_sweep.py: the median over seeds of each fixed switch
    point; columns model, images, switch epoch, ratio at equal passes). Both axes log; the dotted
    line at 1 is Adam: below it two-phase reached a lower loss for the same work."""
    fig = go.Figure()
    for (model, images), part in points.groupby(["model", "images"], sort=False):
        part = part.sort_values("switch epoch")
        fig.add_trace(go.Scatter(x=list(part["switch epoch"]), y=list(part["ratio at equal passes"]),
                                 mode="lines+markers", name=text(f"{model}, {images} images"),
                                 hovertemplate=text(f"{model}, {images} images") + "<br>switch after epoch %{x}"
                                 "<br>two-phase / Adam %{y:.3g}<extra></extra>"))
    if len(points):  # Adam's level, named in the legend (a label on the line sat on the curves near 1)
        lo, hi = float(points["switch epoch"].min()), float(points["switch epoch"].max())
        fig.add_trace(go.Scatter(x=[lo, hi], y=[1.0, 1.0], mode="lines", name="Adam (ratio 1)",
                                 line=dict(color="black", dash="dot", width=1.5), hoverinfo="skip"))
    fig.update_layout(title="Two-phase / Adam training loss at equal data passes, by switch epoch",
                      xaxis_title="switch epoch (log scale)", yaxis_title="ratio (below 1: two-phase ahead)",
                      template="plotly_white", height=520, margin=dict(l=60, r=20, t=50, b=40),
                      # below the plot: at the right the longest name was cut at 1280 px
                      legend=dict(orientation="h", yanchor="top", y=-0.22, xanchor="left", x=0.0))
    fig.update_xaxes(type="log", tickvals=[3, 10, 30, 100, 300, 1000], ticktext=["3", "10", "30", "100", "300", "1000"])
    fig.update_yaxes(type="log", exponentformat="power")  # 10⁻⁴, not "100µ"
    return fig


def grad_norm_and_curvature_figure(metrics: pd.DataFrame | None, events=None, log_x: bool = False,
                                   ratio_range: tuple[float, float] | None = None,
                                   tolerance: float | None = None) -> go.Figure:
    """The gradient norm (top, log scale) over the Hessian probe's hess_min / hess_max (bottom) on
    one shared epoch axis, every arm in both, the switch epoch as a dashed line through both: does
    the rule switch where the negative curvature has gone?

    log_x: a logarithmic epoch axis (epoch 0 is then left out), for a long run whose switch comes
    in its first few epochs. ratio_range: the bottom panel's y range; probes outside it are counted
    in the panel's title (they are not hidden silently; hovering shows every value). tolerance:
    as in grad_norm_figure.
    """
    from plotly.subplots import make_subplots

    df = _clean(metrics)
    if log_x and "epoch" in df.columns:
        df = df[df["epoch"] > 0]
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.1,
                        subplot_titles=("Gradient norm", "hess_min / hess_max (below 0: non-convex)"))
    for trace in grad_norm_figure(df, events, tolerance=tolerance).data:
        fig.add_trace(trace, row=1, col=1)
    ratio = curvature_figure(df, events)
    for trace in ratio.data:
        trace.showlegend = False  # the top panel's legend names the arms
        fig.add_trace(trace, row=2, col=1)
    sw = switch_epoch(df, events)
    if sw is not None and (not log_x or sw > 0):
        for row in (1, 2):
            fig.add_vline(x=sw, line_dash="dash", line_width=1, line_color=arm_color("two-phase"), row=row, col=1)
    fig.add_hline(y=0.0, line_color="#444", line_width=1, row=2, col=1)
    _draw_order(fig)
    fig.update_yaxes(type="log", exponentformat="power", title_text="gradient norm", row=1, col=1)
    fig.update_yaxes(title_text="hess_min / hess_max", row=2, col=1)
    fig.update_xaxes(title_text="epoch" + (" (log scale)" if log_x else ""), row=2, col=1)
    if log_x:
        fig.update_xaxes(type="log", tickvals=[1, 3, 10, 30, 100, 300, 1000],
                         ticktext=["1", "3", "10", "30", "100", "300", "1000"])
    if ratio_range is not None:
        lo, hi = float(ratio_range[0]), float(ratio_range[1])
        fig.update_yaxes(range=[lo, hi], row=2, col=1)
        outside = sum(int(((pd.Series(t.y, dtype=float) < lo) | (pd.Series(t.y, dtype=float) > hi)).sum())
                      for t in ratio.data)
        if outside:  # said in the panel's title: a note under the axis collided with its title
            fig.layout.annotations[1].text += f"; {outside} probe{'s' if outside != 1 else ''} off this range"
    fig.update_layout(template="plotly_white", height=640, hovermode="x unified",
                      margin=dict(l=70, r=20, t=40, b=40),
                      legend=dict(orientation="h", yanchor="top", y=-0.18, xanchor="left", x=0.0))
    return fig
