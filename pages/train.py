"""Train (the landing page): choose a run, press Start, watch two-phase and Adam train live.

The settings sit in the sidebar; every value goes through RunConfig.validate()
before anything starts. The run id goes into the URL (?run=...), so a refresh,
a bookmark or the Runs page's "Open" re-attaches to it. While the run is
active, one fragment re-reads the JobManager's snapshot for the status and
progress bars every two seconds and another redraws the charts: a short run's
every FAST_CHART_SECONDS, a long run's every CHART_SECONDS (redrawing four Plotly charts is
the page's main cost, in the browser and the server). Until a run's first epoch
is logged the charts' fragment looks every LOOK_SECONDS, so the first chart
comes at once; once the status is final both stop polling.
"""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd
import streamlit as st

from pages.shared import common
from twophase import analysis, paper, plots, runs, seeds
from twophase.errors import ConfigError, DatasetUnavailable
from twophase.jobs import RunView

FINAL = frozenset(runs.FINAL_STATUSES)
POLL_SECONDS = 2.0  # status and progress bars, while a run is active
CHART_SECONDS = 5.0  # the charts, while a run is active (benchmarks/app.py measures what drawing them costs)
# ... while it has logged fewer than FAST_CHART_RECORDS records (the default run: its first epochs are
# drawn at once, LOOK_SECONDS below; every 1 s instead, the app trained at 0.87 of the CLI's speed
# here, at 2 s 0.92: chromium's redraws share the 2 cores, benchmarks/app.py)
FAST_CHART_SECONDS = 2.0
FAST_CHART_RECORDS = 200
# Until a run has logged its first epoch, the page looks for it every LOOK_SECONDS and draws the
# charts at once (the default run trains for a few seconds only); a look that finds nothing sends
# one line of text, so the look costs nearly nothing, unlike a redraw of the charts.
LOOK_SECONDS = 0.25
KEEP_VIEW_JS = (Path(__file__).resolve().parent.parent / "assets" / "keep_view.js").read_text(encoding="utf-8")

jobs = common.jobs()


def whole_number(value) -> int:
    """`value` when it is a positive whole number (a config read from disk may be damaged), else 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def arm_names(config: dict, progress: dict) -> list[str]:
    """The arms of a run: config's list of names (text only), else those with progress."""
    arms = config.get("arms")
    if isinstance(arms, list):
        return [a for a in arms if isinstance(a, str)]
    return list(progress)


def rule_text(cfg: dict) -> str:
    """What decides the two-phase arm's switch, in words."""
    if cfg.get("switch_epoch") is not None:
        return f"fixed switch after epoch {cfg['switch_epoch']}"
    branches = [a for a in cfg.get("arms") or [] if isinstance(a, str) and "@" in a]
    text = f"tolerance {cfg.get('tolerance', '?')}"
    return text + (f" · {len(branches)} branch{'es' if len(branches) != 1 else ''} with switches of their own"
                   if branches else "")


def rising_losses(metrics: pd.DataFrame) -> list[tuple[str, float, float]]:
    """(arm, loss at epoch 0, loss at epoch 3) for arms whose training loss rose over their first
    three epochs: a learning rate too high, most likely."""
    out = []
    if not len(metrics) or not {"arm", "epoch", "train_loss"} <= set(metrics.columns):
        return out
    for arm, part in metrics.groupby("arm", sort=False):
        rows = part.set_index("epoch")["train_loss"]
        if 0 in rows.index and 3 in rows.index and rows[3] > rows[0] * 1.05:
            out.append((arm, float(rows[0]), float(rows[3])))
    return out


def status_badge(status: str) -> str:
    return f'<span class="tp-status tp-status-{status}">{status}</span>'


# ----------------------------------------------------------------- the run
def show_status(run_id: str, was_live: bool) -> None:
    """Status line, Stop button and the arms' progress bars (a fragment: every POLL_SECONDS while live)."""
    view = jobs.get_run(run_id)
    if view is None:
        st.warning(f"Run {run_id} is not in {jobs.runs_dir}.")
        return
    cfg = view.config or {}
    status = view.status
    head, stop_col = st.columns([5, 1])
    model, dataset = (html.escape(str(cfg.get(k, "?"))) for k in ("model", "dataset"))
    head.markdown(f'Status: {status_badge(status)} &nbsp; run <code>{run_id}</code> · {model} '
                  f'on {dataset} · {html.escape(rule_text(cfg))}',  # escaped: config.json is a file anyone may edit
                  unsafe_allow_html=True)
    if status not in FINAL and view.live:
        if stop_col.button("Stop", key="stop", icon=":material/stop_circle:"):
            group = jobs.group(run_id)
            for member in group:  # a several-seed run: the seeds after this one too
                jobs.stop(member)
            st.toast("Stopping: the run ends after the current mini-batch or CG iteration"
                     + ("; the other seeds of its group too." if len(group) > 1 else "."))
    else:
        if common.resume_button(stop_col, run_id, status, key="resume"):
            st.rerun()  # the run is queued again: follow it live
        if isinstance(view.config, dict) and view.config:
            stop_col.button("Re-run", key="rerun_settings", icon=":material/replay:", on_click=common.fill_form,
                            args=(view.config,), help="Fill the settings with this run's, to start it again or change it.")
    if status == "queued":
        others = [r for r in jobs.active() if r != run_id and jobs.status(r) == "running"]
        st.info("Waiting for a training slot: one run trains at a time on this machine"
                + (f", and run `{others[0]}` is training now" if others else "")
                + ". This one starts when it ends.", icon=":material/hourglass_top:")
    for arm, start, later in rising_losses(view.metrics):
        st.warning(f"The training loss of {plots.arm_label(arm)} rose over its first epochs ({start:.3g} at "
                   f"epoch 0, {later:.3g} at epoch 3): the learning rate may be too high for this model.",
                   icon=":material/trending_up:")
    if view.warnings:
        st.warning("Some of this run's files are damaged; what could be read is shown: " + "; ".join(view.warnings),
                   icon=":material/warning:")
    if view.error:
        st.error(view.error)

    epochs = whole_number(cfg.get("epochs"))
    metrics = view.metrics
    arms = arm_names(cfg, view.progress)
    if arms:
        per_row = min(len(arms), 3)
        bars = [col for start in range(0, len(arms), per_row) for col in st.columns(per_row)][:len(arms)]
        for col, arm in zip(bars, arms):
            part = metrics[metrics["arm"] == arm] if len(metrics) and "arm" in metrics.columns else metrics
            done = int(part["epoch"].max()) if len(part) else 0
            arm_state = view.arm_status.get(arm) or (
                "diverged" if any(e.get("kind") == "diverged" and e.get("arm") == arm for e in view.events) else "")
            fraction = float(view.progress.get(arm, 0.0) or 0.0)
            if status == "completed" or arm_state == "completed":
                fraction = 1.0
            phase = part["phase"].iloc[-1] if len(part) and "phase" in part.columns else ""
            text = f"{plots.arm_label(arm)}: epoch {done}/{epochs}" + (f" · {phase}" if phase and phase != "init" else "")
            if arm_state in ("diverged", "failed", "stopped"):
                text += f" · {arm_state}"
            col.progress(min(1.0, max(0.0, fraction)), text=text)
    if was_live and status not in runs.ACTIVE_STATUSES:
        st.rerun()  # a full rerun re-creates the fragments without run_every: polling stops


def chart_figures(view: RunView, x: str, log_y: bool, smoothing: float = 0.0) -> dict:
    """The run's figures, built again only when something they show has changed (a slow model logs
    an epoch every few minutes; building four figures takes about 0.2 s of the server's CPU)."""
    key = (view.run_id, view.status, len(view.metrics), len(view.events), x, log_y, smoothing)
    cached = st.session_state.get("_chart_figures")
    if cached is not None and cached[0] == key:
        return cached[1]
    cfg, metrics = view.config or {}, view.metrics
    rule = cfg.get("switch_epoch") is None  # a fixed switch epoch makes the threshold irrelevant
    figures = {
        "grad_norm": plots.grad_norm_figure(metrics, view.events, x=x, tolerance=cfg.get("tolerance") if rule else None,
                                            show_threshold=rule, smoothing=smoothing),
        "loss": plots.loss_figure(metrics, view.events, x=x, log_y=log_y, smoothing=smoothing),
        "accuracy": plots.accuracy_figure(metrics, view.events, x=x, smoothing=smoothing),
        "grad_vs_loss": plots.grad_norm_vs_loss_figure(metrics, view.events),
    }
    if plots.has_curvature(metrics):
        figures["curvature"] = plots.curvature_figure(metrics, view.events, x=x)
    for name, fig in figures.items():  # zoom, pan and legend choices survive every redraw of this chart
        plots.keep_view(fig, f"{view.run_id}:{name}:{x}")
    st.session_state["_chart_figures"] = (key, figures)
    return figures


def show_charts(run_id: str, was_live: bool, x: str, log_y: bool, smoothing: float, wide: bool,
                every: float, waiting: bool = False) -> None:
    """The charts (a fragment: every `every` seconds while live; drawing them is the page's main
    cost). waiting: the run had no epoch yet; this fragment then looks every LOOK_SECONDS, and the
    first epoch reruns the whole page, which draws the charts and sets the redraw timer."""
    view = jobs.get_run(run_id)
    if view is None:
        return
    metrics = view.metrics
    if (was_live and view.status in FINAL) or (waiting and len(metrics)):
        st.rerun()  # the run ended (the status line too, at once, without timers), or its first epoch came
    if len(metrics) == 0:
        st.info("Loading the data and building the model…" if view.status == "running" else
                "Waiting for its turn (see above)." if view.status == "queued" else "No epochs logged.")
        return
    if was_live:
        st.caption(f"While the run trains the charts are redrawn every {every:g} s and the progress every "
                   f"{POLL_SECONDS:g} s (redrawing takes CPU that training shares). A zoom or pan stays across "
                   "redraws (double-click a chart to reset it); **Pause charts** stops the redraws, to hover "
                   "undisturbed.")
    figures = chart_figures(view, x, log_y, smoothing)
    order = ["grad_norm", "loss", "accuracy", "grad_vs_loss"] + (["curvature"] if "curvature" in figures else [])
    columns = 1 if wide else 2
    for start in range(0, len(order), columns):
        row = st.columns(columns)
        for col, name in zip(row, order[start:start + columns]):
            col.plotly_chart(figures[name], key=f"chart_{name}")
    if "curvature" in figures:
        st.caption("Curvature: smallest over largest Hessian eigenvalue (Lanczos on a fixed sample of 512 "
                   "training images). Below zero the surface still curves down somewhere: non-convex. Compare "
                   "where it crosses zero with the switch line.")


def show_seeds(run_id: str, members: list[str], was_live: bool, x: str, log_y: bool) -> None:
    """A several-seed run: each seed's status, the median and min-max band over the seeds, and how
    many seeds agree (a fragment: every CHART_SECONDS while a seed is queued or running)."""
    views = [v for v in (jobs.get_run(r) for r in members) if v is not None]
    if not views:
        return
    st.subheader(f"{len(members)} seeds")
    parts = []
    for v in views:
        cfg = v.config or {}
        done = int(v.metrics["epoch"].max()) if len(v.metrics) and "epoch" in v.metrics.columns else 0
        parts.append(f"seed {cfg.get('seed', '?')}: {v.status}" + (f" (epoch {done}/{cfg.get('epochs', '?')})"
                                                                   if v.status == "running" else ""))
    head, stop_col = st.columns([5, 1])
    head.caption(" · ".join(parts) + ". Each seed is a run of its own (listed on the Runs page); a band "
                 "spans the lowest and highest seed, the line is the median.")
    active = [v.run_id for v in views if v.status in runs.ACTIVE_STATUSES and v.live]
    if active and stop_col.button("Stop all seeds", key="stop_seeds", icon=":material/stop_circle:"):
        for member in active:
            jobs.stop(member)
        st.toast(f"Stopping {len(active)} seed(s).")
    frames = [v.metrics for v in views if len(v.metrics)]
    if not frames:
        return
    left, right = st.columns(2)
    key = f"{run_id}:seeds"
    left.plotly_chart(plots.keep_view(plots.seed_band_figure(frames, "train_loss", x, log_y=log_y), key + ":loss"),
                      key="chart_seeds_loss")
    right.plotly_chart(plots.keep_view(plots.seed_band_figure(frames, "val_acc", x), key + ":acc"),
                       key="chart_seeds_acc")
    table = seeds.seed_table(frames)
    names = {a: plots.arm_label(a) for a in table["arm"]}
    for line in seeds.headline(table, names):
        st.markdown(f"- {line}")
    table.insert(1, "name", [names[a] for a in table["arm"]])
    st.dataframe(table, hide_index=True, column_config={"arm": None, **common.NUMBER_COLUMNS})
    if was_live and not any(v.status in runs.ACTIVE_STATUSES for v in views):
        st.rerun()  # every seed has ended: redraw once without polling


def arm_labels(view: RunView) -> dict:
    """Each arm's legend name; branches with a rule say where it fired ("switched at 3")."""
    switched = {e.get("arm"): e.get("epoch") for e in view.events if e.get("kind") == "switch"}
    names = list(pd.unique(view.metrics["arm"])) if len(view.metrics) and "arm" in view.metrics.columns else []
    return {a: plots.arm_label(a, switched.get(a)) for a in names}


def final_section(view: RunView) -> None:
    st.subheader("Final figures")
    labels = arm_labels(view)
    table = analysis.final_table(view.metrics, view.events, view.arm_status)
    table.insert(1, "name", [labels.get(a, a) for a in table["arm"]])
    ratios = analysis.ratio_table(view.metrics, labels=labels)
    if len(ratios):
        st.markdown("**Training loss against Adam's** (below 1: lower than Adam's). Each arm is compared with "
                    "Adam at the same epoch, after the same number of data passes, and after the same wall "
                    "time: the last point both reached.")
        st.dataframe(ratios.drop(columns=["arm"]), hide_index=True, column_config=common.RATIO_COLUMNS)
    st.dataframe(table, hide_index=True, column_config={"arm": None, **common.NUMBER_COLUMNS})
    cfg = view.config or {}
    published = paper.figures_for(cfg.get("model", ""), cfg.get("dataset", ""))
    if not published.empty:
        with st.expander(f"The paper's figures for {cfg['model']} on {cfg['dataset']} (Table 1)"):
            st.caption("After 1000 epochs (700 for vit-mlp) on the full training set, MSE loss.")
            st.dataframe(published, hide_index=True)


def landing() -> None:
    """Before a run is chosen: what pressing Start does, and the last finished run, drawn."""
    st.markdown(
        "**What happens when you press Start.** The server trains, from the same initial weights and with "
        "the same mini-batches: *Adam* alone, and *two-phase*, which is the same Adam run until the gradient "
        "norm has peaked and fallen below tolerance x its maximum, then conjugate gradient on the whole "
        "training set. Watch the gradient norm (with the rule's threshold and the switch), the loss and the "
        "accuracy grow live; switch the x-axis to **data passes** to compare the arms per unit of work. "
        "The default run switches early (the paper's rule fires at epoch 2-3 here); the preset "
        "**Early vs late switch** in the sidebar shows the late regime, where switching pays off.")
    try:
        done = [i for i in runs.list_runs(jobs.runs_dir) if i.status == "completed"]
    except OSError:
        done = []
    last = jobs.get_run(done[0].run_id) if done else None
    if last is not None and len(last.metrics):
        name = html.escape(str((last.config or {}).get("name") or last.run_id))
        st.markdown(f"**The last finished run** ({name}; open it from the Runs page):")
    else:
        example = runs.example_run()
        if example is None:
            st.caption("No finished run yet: the charts of your first run appear here afterwards.")
            return
        last = RunView.from_run(example)
        summary = example.summary or {}
        switch = analysis.switch_epoch(example.metrics, example.events)
        st.markdown("**An example: the default run**, trained once from the command line "
                    f"({str(summary.get('started', ''))[:10]}, CPU, {summary.get('torch_threads', '?')} thread) and "
                    "shipped with the app. It shows the early regime"
                    + (f": the paper's rule switches at epoch {switch}" if switch is not None else "")
                    + ". Press Start to train it here; your last finished run then takes its place.")
    figures = chart_figures(last, "epoch", True)
    c1, c2 = st.columns(2)
    c1.plotly_chart(figures["grad_norm"], key="landing_grad_norm")
    c2.plotly_chart(figures["loss"], key="landing_loss")


# --------------------------------------------------------------------- page
# zoom and pan survive live redraws (assets/keep_view.js says why Plotly's uirevision alone does not)
st.html(f"<script>{KEEP_VIEW_JS}</script>", unsafe_allow_javascript=True, width="content")
st.title("Two-phase training, live")
st.caption("Adam while the loss surface is non-convex; conjugate gradient once the gradient norm has peaked "
           "and fallen below tolerance x its maximum. Both arms start from the same initial weights.")

common.settings_from_url()  # a shared link's settings fill the form (once per session)
values = common.settings_form()
common.settings_to_url(values)  # ... and the address carries the form's settings, to share

run_id = st.query_params.get("run")
if run_id is not None and not runs.is_valid_run_id(run_id):
    st.warning(f"Ignoring the run id {run_id!r} in the address: it is not a valid run id.")
    run_id = None

start_col, message_col = st.columns([1, 5], vertical_alignment="center")
if start_col.button("Start", type="primary", key="start", icon=":material/play_arrow:"):
    try:
        config = common.form_config(values)
        # A second press (a double click, an impatient user) while the run it started is still
        # queued or running, with the same settings, follows that run instead of starting a copy.
        started = st.session_state.get("started_run")
        if started and started[1] == config.to_dict() and jobs.status(started[0]) not in FINAL | {None}:
            new_id = started[0]
            message_col.info(f"This run is already started (run `{new_id}`); Start again once it has ended, "
                             "or change a setting to start another run.", icon=":material/info:")
        else:
            new_id = jobs.submit(config)
            st.session_state["started_run"] = (new_id, config.to_dict())
    except ConfigError as err:
        message_col.error(common.describe_config_error(err), icon=":material/error:")
    except DatasetUnavailable as err:
        message_col.error(str(err), icon=":material/folder_off:")
    except OSError as err:  # the runs folder cannot be written: nothing was created
        message_col.error(f"Nothing was started: the runs folder {jobs.runs_dir} cannot be written "
                          f"({err.strerror or err}). Set TWOPHASE_RUNS to a writable folder and restart the app.",
                          icon=":material/folder_off:")
    else:
        st.query_params["run"] = new_id
        run_id = new_id
elif run_id is None:
    message_col.caption("Press Start to train the arms chosen in the sidebar.")
    landing()

if run_id is not None:
    # one row that wraps: each control as wide as its label (in fixed columns of a ninth of the page the
    # toggles read "Log-scal…" and "Pau…")
    controls = st.container(horizontal=True, vertical_alignment="bottom", gap="medium")
    x_axis = controls.radio(
        "x-axis", list(plots.X_AXES), format_func=plots.X_AXES.get, horizontal=True, key="x_axis",
        help="Cost axes: a CG epoch costs several loss evaluations; compare per data pass or per second.")
    smoothing = controls.slider(
        "Smoothing", min_value=0.0, max_value=0.95, value=0.0, step=0.05, key="smoothing", width=200,
        help="Exponential moving average of the curves, the raw curve faint behind (0 = raw).")
    log_y = controls.toggle("Log-scale loss", value=True, key="log_y")
    wide = controls.toggle("Wide", value=False, key="wide_charts", help="One chart per row, the page's full width.")
    paused = controls.toggle("Pause charts", value=False, key="pause_charts",
                             help="Stop redrawing the charts (training and the progress bars go on), to zoom, pan "
                                  "and hover undisturbed; turn it off to catch up.")
    first = jobs.get_run(run_id)
    live = first is not None and first.status in runs.ACTIVE_STATUSES  # not "damaged": nothing to follow
    # a short run is redrawn every FAST_CHART_SECONDS, so it is seen growing; a long one every CHART_SECONDS;
    # before the first epoch the page looks every LOOK_SECONDS (show_charts reruns the page then)
    every = FAST_CHART_SECONDS if first is not None and len(first.metrics) < FAST_CHART_RECORDS else CHART_SECONDS
    waiting = live and len(first.metrics) == 0
    st.fragment(run_every=POLL_SECONDS if live else None)(show_status)(run_id, live)
    st.fragment(run_every=(LOOK_SECONDS if waiting else every) if live and not paused else None)(show_charts)(
        run_id, live, x=x_axis, log_y=log_y, smoothing=smoothing, wide=wide, every=every, waiting=waiting)
    members = jobs.group(run_id) if first is not None else []
    if len(members) > 1:
        group_live = any(v is not None and v.status in runs.ACTIVE_STATUSES for v in map(jobs.get_run, members))
        st.fragment(run_every=CHART_SECONDS if group_live and not paused else None)(show_seeds)(
            run_id, members, group_live, x=x_axis, log_y=log_y)
    if first is not None and first.status in FINAL and len(first.metrics):
        final_section(first)
