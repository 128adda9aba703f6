"""Learn: the convexity transition on toy losses, with twophase's own optimizers.

Four sections: one parameter (loss, non-convex stretches, gradient norm against
loss), two parameters (contour, non-convex shading, the paths of Adam, CG and
two-phase, a step slider under the map that walks along them in the browser), what it all means, and the curvature of a real
network over a long run (the run shipped in twophase/data_files/curvature_runs/, made by
benchmarks/curvature.py). The numbers
come from twophase/teaching/, which runs NonlinearCG, TwoPhase and SwitchRule on the
toy losses; this file only lays them out. It runs on its own too
(`streamlit run pages/learn.py`), as the tests do.
"""

from __future__ import annotations

import math

import pandas as pd
import streamlit as st

from twophase import analysis, plots, runs, teaching
from twophase.plots import arm_label


# ------------------------------------------------------------------ cached computations
@st.cache_data(show_spinner=False, max_entries=64)
def one_parameter_figure(units: int, seed: int, start: float):
    return teaching.toy1d_figure(units, seed, start)


@st.cache_data(show_spinner=False, max_entries=64)
def one_parameter_facts(units: int, seed: int, start: float) -> dict:
    inputs, targets = teaching.toy1d_data(units, seed)
    path = teaching.toy1d_descent_path(start, inputs, targets)
    k = path["peak"]
    return {
        "intervals": teaching.nonconvex_intervals(inputs, targets),
        "minima": teaching.toy1d_minima(inputs, targets),
        "peak_p": float(path["p"][k]),
        "peak_curvature": float(path["curvature"][k]),
        "peak_at_start": k == 0,
        "end_p": float(path["p"][-1]),
    }


MAP_PIXELS = 301  # grid points per axis of the map's picture (its contour lines and shading)


@st.cache_data(show_spinner=False, max_entries=32)
def surface_grid(name: str, c: float) -> dict:
    return teaching.surface_grid(name, c, n=MAP_PIXELS)


@st.cache_data(show_spinner=False, max_entries=64)
def run_arms(name: str, start: tuple, c: float, steps: int, lr: float, tolerance: float,
             line_search: str, min_epochs: int, patience: int) -> dict:
    return teaching.trajectories(name, start, c=c, steps=steps, lr=lr, tolerance=tolerance,
                             line_search=line_search, min_epochs=min_epochs, patience=patience)


@st.cache_data(show_spinner=False, max_entries=64)
def convex_step(name: str, start: tuple, c: float, steps: int, lr: float) -> int | None:
    """The first step at which Adam's path from `start` is in the convex region (None: never)."""
    adam = run_arms(name, start, c, steps, lr, 0.9, "strong-wolfe", 0, 1)["adam"]
    return teaching.first_convex_step(name, adam, c)


# ------------------------------------------------------------------ helpers
def _snap(value: float, lo: float, hi: float, step: float) -> float:
    """`value` clipped to [lo, hi] and rounded to the slider's step."""
    value = min(max(value, lo), hi)
    return round(round((value - lo) / step) * step + lo, 6)


START_STEP = 0.05


def _start_keys(name: str) -> tuple[str, str]:
    return f"learn_start_w1_{name}", f"learn_start_w2_{name}"


def _pick_start(name: str) -> None:
    """on_select of the contour chart: a clicked lattice point becomes the start."""
    event = st.session_state.get("learn_surface_chart")
    points = (event or {}).get("selection", {}).get("points", []) if isinstance(event, dict) else \
        getattr(getattr(event, "selection", None), "points", []) or []
    for point in points:
        x, y = point.get("x"), point.get("y")
        if x is None or y is None:
            continue
        (a0, a1), (b0, b1) = teaching.SURFACES[name].box
        k1, k2 = _start_keys(name)
        st.session_state[k1] = _snap(float(x), a0, a1, START_STEP)
        st.session_state[k2] = _snap(float(y), b0, b1, START_STEP)
        break


def _fmt(value: float) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.3g}"


# ------------------------------------------------------------------ page
try:  # in the app (the repository root on sys.path); `streamlit run pages/learn.py` has only pages/ there
    from pages.shared import common
except ModuleNotFoundError:
    common = None
if common is not None:
    common.through_the_app("learn")  # a first visit to /learn on a fresh server: through app.py's navigation
if __name__ == "__main__":  # run on its own (streamlit run pages/learn.py, AppTest); app.py sets it otherwise
    st.set_page_config(page_title="Learn · twophase", page_icon="📉", layout="wide")

st.title("Learn: from non-convex to convex")
st.markdown(
    "Two-phase training rests on one claim: **far from a minimum the loss surface is non-convex, "
    "near it convex, and the peak of the gradient norm marks the border.** This page shows the claim "
    "on losses small enough to draw. Every number below comes from twophase's own optimizers "
    "(`NonlinearCG`, `TwoPhase`, `SwitchRule`) running on these toys."
)

# ================================================================== 1. one parameter
st.header("1 · One weight")
controls, _ = st.columns([3, 1])
with controls:
    c1, c2, c3 = st.columns(3)
    units = c1.slider("Number of tanh units K", 1, 50, 10, key="learn_units",
                      help="K units share the one weight p; unit k sees a fixed input x_k in [0.5, 2].")
    seed = c2.slider("Seed of the targets", 0, 20, 0, key="learn_seed",
                     help="The targets t_k are drawn uniformly from (0, 1) with this seed.")
    start_p = c3.slider("Start of the walk, p₀", -3.0, 3.0, -2.5, 0.05, key="learn_start_p",
                        help="Where the downhill walk of the right-hand panel starts.")

fig_col, text_col = st.columns([3, 1])
with fig_col:
    st.plotly_chart(one_parameter_figure(units, seed, start_p), width="stretch", key="learn_fig_1d")
with text_col:
    facts = one_parameter_facts(units, seed, start_p)
    st.markdown(
        "The model: K units, all with the **same weight p**, unit k outputs tanh(p·x_k) and should "
        "output t_k. The loss is the mean squared error, a function of p alone.\n\n"
        "**Convex** means curving upwards: the second derivative L″(p) is positive, every chord lies "
        "above the curve, and the slope grows steadily towards the bottom. The shaded stretches have "
        "L″ < 0: there the units saturate, the curve flattens out and bends downwards."
    )
    if facts["peak_at_start"]:
        st.info("This walk starts inside the convex basin: the gradient norm only falls. "
                "Move p₀ further out to see it rise first.")
    else:
        st.markdown(
            f"Walking downhill from p₀ = {start_p:g}, the gradient norm **rises** while L″ < 0 and "
            f"**falls** once L″ > 0. Its peak (p ≈ {facts['peak_p']:.2f}) is the inflection point, "
            "exactly where the shading ends: in one dimension the peak of the norm *is* the border "
            "between the non-convex and the convex region."
        )

# ================================================================== 2. two parameters
st.header("2 · Two weights: Adam, CG and two-phase")
@st.fragment
def two_weights_section() -> None:
    """Section 2 as a fragment: its sliders rerun this section alone, not the whole page. The walk
    along the paths needs no rerun at all: the map's own slider moves it in the browser."""
    surface_names = list(teaching.SURFACES)
    name = st.radio("Loss surface", surface_names, horizontal=True, key="learn_surface",
                    format_func=lambda n: teaching.SURFACES[n].label)
    surf = teaching.SURFACES[name]
    st.caption(surf.description)

    (a0, a1), (b0, b1) = surf.box
    k1, k2 = _start_keys(name)
    for key, value in ((k1, surf.start[0]), (k2, surf.start[1])):
        st.session_state.setdefault(key, value)

    # the map on the left; beside it everything that moves it, then the curves (at 1280x720 the map
    # starts in the first screen, next to the sliders, as in TensorFlow Playground)
    left, right = st.columns([1.1, 1])
    with right:
        row = st.columns(2)
        if name == "tanh-family":
            c_value = row[0].slider("C", teaching.C_RANGE[0], teaching.C_RANGE[1], 0.50, 0.01, key="learn_c",
                                    help="y = tanh(h) + C·tanh(−2h). Above 0.5 the activation dips at h = 0 "
                                         "and extra local minima appear.")
        else:
            c_value = 0.5  # the valley has no C
        tolerance = row[1].slider("Switch tolerance", 0.50, 1.00, 0.90, 0.01, key="learn_tolerance",
                                  help="Two-phase switches to CG at the first step whose gradient norm is at or "
                                       "below tolerance × the largest norm so far (0.9 = the paper's rule).")
        row = st.columns(2)
        start_w1 = row[0].slider(f"Start {surf.w1_label}", a0, a1, step=START_STEP, key=k1)
        start_w2 = row[1].slider(f"Start {surf.w2_label}", b0, b1, step=START_STEP, key=k2)
        with st.expander("More settings: steps, Adam's learning rate, line search, switch options"):
            m = st.columns(2)
            steps = m[0].slider("Steps (epochs of the toy)", 10, 300, 100, 10, key="learn_steps")
            lr = m[1].select_slider("Adam learning rate", [0.005, 0.01, 0.02, 0.05, 0.1, 0.2], value=surf.lr,
                                    key="learn_lr")
            m = st.columns(3)
            line_search = m[0].selectbox("CG line search", ["strong-wolfe", "golden"], key="learn_ls")
            min_epochs = m[1].number_input("Minimum Adam steps", 0, 200, 0, key="learn_min_epochs")
            patience = m[2].number_input("Patience", 1, 20, 1, key="learn_patience")

        start = (float(start_w1), float(start_w2))
        grid = surface_grid(name, float(c_value))
        trajs = run_arms(name, start, float(c_value), int(steps), float(lr), float(tolerance), line_search,
                         int(min_epochs), int(patience))
        two = trajs["two-phase"]

        x_axis = st.radio("x-axis", ["step", "evals"], horizontal=True, key="learn_x",
                          format_func=lambda v: {"step": "steps", "evals": "loss evaluations (cost)"}[v])
        st.plotly_chart(teaching.trajectory_curves_figure(trajs, x=x_axis), width="stretch",
                        key="learn_curves_chart")
    with left:
        st.plotly_chart(
            teaching.surface_figure(name, grid, trajs, start=start, pick_grid=41, walk=True),
            width="stretch", key="learn_surface_chart", on_select=lambda: _pick_start(name),
            selection_mode="points",
        )
        st.caption("Shaded: the Hessian is not positive definite there (not convex). Drag the step slider "
                   "under the map, or press ▶, to walk along the paths (it moves in your browser at once; hover "
                   "over an arm's dot for its phase, loss and cost at that step). Click anywhere on the map to "
                   "start from that point, or use the sliders.")

    rows = []
    for arm, tr in trajs.items():
        k = tr.steps
        rows.append({
            "arm": arm_label(arm),
            f"phase after step {k}": tr.phase[k] if k > 0 else "start",
            "loss": _fmt(float(tr.loss[k])),
            "gradient norm": _fmt(float(tr.grad_norm[k])),
            "loss evaluations": int(tr.evals[k]),
            "last CG status": tr.status[k] or "–",
        })
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")

    if two.switch_index is not None:
        s, p = two.switch_index, two.peak_index
        eig_min, _ = teaching.hessian_eigenvalues(name, two.points[s], float(c_value))
        where = ("**not convex** there (smallest Hessian eigenvalue "
                 f"{eig_min:.3g}): the rule fired while the path was still in the non-convex region"
                 if eig_min <= 0 else
                 f"**convex** there (smallest Hessian eigenvalue {eig_min:.3g} > 0)")
        st.markdown(
            f"**Two-phase** saw its largest gradient norm ({_fmt(two.grad_norm[p])}) after step {p}. After step "
            f"{s} the norm was {_fmt(two.grad_norm[s])}, at or below {tolerance:g} × that peak, so from there on "
            f"it runs CG (the star marks the switch). The surface is {where}."
        )
        if eig_min <= 0:  # the headline's claim does not hold here: say why, with this path's numbers
            adam = trajs["adam"]
            k = convex_step(name, start, float(c_value), int(steps), float(lr))
            reached = (f"Adam's path (the same start, no switch) reaches the convex region after step {k}, where "
                       f"its norm is {adam.grad_norm[k] / max(adam.grad_norm[: k + 1].max(), 1e-300):.2f} × its "
                       "largest so far: a rule that waited for convexity would need a tolerance about that low"
                       if k is not None else
                       f"Adam's path (the same start, no switch) does not reach the convex region within {steps} "
                       "steps")
            st.info(
                "Why before the convex region: the rule watches the gradient norm, and the norm peaks where the "
                "curvature *along the path* stops being strongly negative, which comes before the Hessian is "
                f"positive in every direction. {reached}. Real networks do the same: on the app's default run the "
                "paper's rule fires at epoch 3, where the probe measures hess_min / hess_max of about -0.08; it "
                "is about -2e-5 only by epoch 300 (section 4). This is why a late switch can pay off where the "
                "paper's early one does not (README, 'When does switching pay off?')."
            )
    else:
        st.markdown(f"**Two-phase** did not switch within {steps} steps: its gradient norm never fell to "
                    f"{tolerance:g} × its running maximum, so it ran Adam all the way.")


two_weights_section()


# ================================================================== 3. explanations
st.header("3 · What the pictures say")
e1, e2 = st.columns(2)
with e1:
    st.subheader("Convexity")
    st.markdown(
        "A loss is convex in a region when it curves upwards in every direction there: the Hessian "
        "(the matrix of second derivatives) is positive definite, its eigenvalues are all positive. "
        "With one weight that is just L″ > 0. Near any strict minimum the loss is convex; far away, "
        "where units saturate or weights fight each other, it usually is not (the shaded areas)."
    )
    st.subheader("Why CG is fast in a convex region")
    st.markdown(
        "Conjugate gradient picks each new direction so that it does not undo the progress of the "
        "previous ones, and a line search walks to the lowest point along it. On a convex quadratic "
        "bowl with n weights this reaches the bottom in at most n steps; near a minimum a smooth loss "
        "looks like such a bowl, so CG converges superlinearly there, a few steps where Adam needs "
        "hundreds of small ones."
    )
    st.subheader("Why CG can stall outside one")
    st.markdown(
        "CG's reasoning assumes positive curvature. Where the surface bends downwards the line search "
        "can run along a flat, saturated stretch, or end up in whichever basin the first directions "
        "point at, and the conjugacy of the directions means nothing. Watch the CG-only path from a start "
        "in the shaded region, and raise C towards 0.6: sometimes it lands in a local minimum, "
        "sometimes it fails its line searches, sometimes it does fine."
    )
with e2:
    st.subheader("Why Adam handles the start")
    st.markdown(
        "Adam takes steps of about the learning rate per weight whatever the curvature: it neither "
        "needs nor trusts a model of the surface, so negative curvature and flat plateaus do not stop "
        "it, and on real networks its mini-batch steps are cheap. The price is the end game: "
        "near the minimum it keeps taking small, fixed-size steps and crawls."
    )
    st.subheader("What the tolerance does")
    st.markdown(
        "The rule watches the gradient norm after every epoch and remembers its largest value. On a "
        "downhill path the norm grows while the surface is non-convex and shrinks once it is convex "
        "(section 1), so the first epoch whose norm is at or below tolerance × that maximum is taken "
        "as \"past the peak, now convex\", and CG takes over for good. A tolerance near 1 switches at "
        "the first dip, which noise can cause; a smaller one waits for a clear fall. *Minimum Adam "
        "steps* and *patience* guard against an early switch in other ways."
    )
    st.subheader("Honest caveats")
    st.markdown(
        "On a two-weight toy CG's line searches are cheap and there is no noise, so CG alone often does "
        "as well as two-phase: count the loss evaluations, not just the steps. Here one toy epoch is one "
        "step, so the rule often fires after a few steps. The method is meant for large networks, where "
        "Adam's mini-batch epochs are cheap and the question of *when* the surface turns convex is "
        "answered by measurement: for real runs, an optional probe estimates the Hessian's extreme "
        "eigenvalues epoch by epoch."
    )

st.header("4 · On a real network: the peak comes early, the convex region late")


@st.cache_resource(show_spinner=False)
def long_run_figure_and_facts():
    """The shipped long run with the probe (twophase/data_files/curvature_runs/): its figure and its
    milestones, once per server (the files never change)."""
    run = runs.curvature_run()
    if run is None:
        return None, None
    fig = plots.grad_norm_and_curvature_figure(run.metrics, run.events, log_x=True, ratio_range=(-0.3, 0.05),
                                               tolerance=(run.config or {}).get("tolerance"))
    return fig, analysis.curvature_milestones(run.metrics, run.events)


def _e(value: float) -> str:
    """A ratio in words: -0.081, -2.1e-05."""
    return f"{value:.2g}" if abs(value) >= 1e-3 else f"{value:.1e}"


long_fig, m = long_run_figure_and_facts()
if m is None:
    st.info("The long run with the curvature probe is not installed with this copy of twophase "
            "(`python -m benchmarks.curvature --size long` makes it again).")
else:
    passed = (f"Adam passes that loss at epoch {m['trunk_passes_epoch']} and ends at {m['trunk_loss']:.3g} "
              f"(CG's is {m['branch_loss'] / m['trunk_loss']:.2f}x that)" if m["trunk_passes_epoch"]
              else f"Adam ends at {m['trunk_loss']:.3g}")
    st.markdown(
        f"The same probe on a real run: the app's mlp on 2,048 MNIST images for {m['epochs']:,} epochs, the "
        "Hessian's smallest and largest eigenvalues estimated every 10 epochs (Lanczos on 512 training images; "
        "`python -m benchmarks.curvature --size long`). The gradient norm peaks at epoch "
        f"{m['peak_epoch']} and the paper's rule switches at epoch {m['switch_epoch']}, but the surface there "
        f"is clearly not convex: hess_min / hess_max is {_e(m['at_switch'][1])} along Adam's path. Along "
        f"that path it comes closest to convex at epoch {m['closest'][0]} ({_e(m['closest'][1])}). From epoch "
        f"{m['late_from']} on, {m['late_probes'] - m['late_dips']} of its {m['late_probes']} probes lie between -0.1 "
        f"and 0 and {m['late_dips']} dip below -0.1 (lowest {_e(m['late_low'][1])} at epoch {m['late_low'][0]}): "
        "Adam's steps do not settle, and the probe sees a 512-image sample. That is why a switch at epoch "
        f"{m['switch_epoch']} makes CG trail Adam per data pass, while a switch at 30-60% of such a run "
        "usually puts it slightly ahead (README, \"When does switching pay off?\").")
    st.markdown(
        f"The two-phase arm, CG from epoch {m['switch_epoch']}, reaches its last loss "
        f"({m['branch_loss']:.3g}) at epoch {m['branch_best_epoch']} and stays there; {passed}. Its own "
        f"probes read {_e(m['branch_end'][1])} at the end: nearly convex, yet hess_min is still below 0 and "
        "the loss is above Adam's, so this is a stall, not a minimum (README, \"When does switching pay "
        "off?\": float32 CG stalls on mlp, and a branch in float64 usually goes further).")
    st.plotly_chart(long_fig, key="learn_long_run")
