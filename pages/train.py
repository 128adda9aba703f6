"""Train (the landing page): choose a run, press Start, watch two-phase and Adam train live.

The settings sit in the sidebar; every value goes through RunConfig.validate()
before anything starts. The run id goes into the URL (?run=...), so a refresh,
a bookmark or the Runs page's "Open" re-attaches to it. While the run is
active, one fragment re-reads the JobManager's snapshot for the status and
progress bars every two seconds and another redraws the charts every few seconds
(redrawing four Plotly charts is the page's main cost, in the browser and the
server); once the status is final both stop polling.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field

import pandas as pd
import streamlit as st

from twophase import analysis, paper, plots, runs
from twophase import data as data_mod
from twophase import models as models_mod
from twophase.config import (ARM_DESCRIPTIONS, ARMS, CG_BETAS, GRAD_NORM_MODES, LINE_SEARCHES, LOSSES, PAPER_RULE,
                              RunConfig)
from twophase.errors import ConfigError, DatasetUnavailable
from twophase.training.strategies import parse_arm, sweep_arms

FINAL = frozenset(runs.FINAL_STATUSES)
DEFAULTS = RunConfig()  # the defaults live in config.py (chosen by measurement), never here
POLL_SECONDS = 2.0  # status and progress bars, while a run is active
CHART_SECONDS = 5.0  # the charts, while a run is active (benchmarks/app.py measures what drawing them costs)

LABELS = {  # widget label of each RunConfig field, to name it in error messages
    "model": "Model", "dataset": "Dataset", "tolerance": "Switch tolerance", "epochs": "Epochs",
    "batch_size": "Batch size", "lr": "Learning rate", "subset": "Training samples",
    "val_subset": "Validation samples", "loss": "Loss", "seed": "Seed", "arms": "Arms",
    "min_epochs": "Minimum Adam epochs", "patience": "Patience", "smoothing": "Smoothing",
    "switch_epoch": "Fixed switch epoch", "cg_beta": "CG beta", "line_search": "Line search",
    "cg_dtype": "CG in float64", "cg_iters_per_epoch": "CG iterations per epoch",
    "grad_norm_mode": "Gradient norm", "threads": "CPU threads", "hessian_probe": "Measure curvature",
    "processes": "Processes", "name": "Run name", "model_sizes": "Model sizes",
    "switch_points": "Extra switch points",
}

if "jobs" not in st.session_state:
    # Streamlit ran this file without app.py: its legacy pages/ mode, active until the first
    # st.navigation call of the server (a fresh server whose first visit is to this page's URL).
    st.switch_page("app.py")
jobs = st.session_state["jobs"]


# ------------------------------------------------------------------ reading
@dataclass
class RunView:
    """What the page shows of one run, read from the JobManager or from disk."""

    run_id: str
    status: str
    config: dict
    metrics: pd.DataFrame
    events: list = field(default_factory=list)
    progress: dict = field(default_factory=dict)
    error: str | None = None
    summary: dict | None = None
    warnings: list = field(default_factory=list)  # damage found in the run's files (read from disk)

    @property
    def arm_status(self) -> dict:
        arms = (self.summary or {}).get("arms")
        if not isinstance(arms, dict):  # a damaged summary.json: no per-arm status
            return {}
        return {a: v.get("status", "") for a, v in arms.items() if isinstance(v, dict)}


def whole_number(value) -> int:
    """`value` when it is a positive whole number (a config read from disk may be damaged), else 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def arm_names(config: dict, progress: dict) -> list[str]:
    """The arms of a run: config's list of names (text only), else those with progress."""
    arms = config.get("arms")
    if isinstance(arms, list):
        return [a for a in arms if isinstance(a, str)]
    return list(progress)


def read_run(run_id: str) -> RunView | None:
    """The run's current state: the in-process job's snapshot, else the files on disk."""
    snap = jobs.snapshot(run_id)
    if snap is not None:
        return RunView(run_id, snap.status, snap.config, pd.DataFrame(snap.records), snap.events,
                       snap.progress, snap.error, snap.summary)
    try:
        run = runs.load_run(jobs.runs_dir, run_id)
    except (FileNotFoundError, ValueError, TypeError):
        return None
    config = run.config or {}
    progress = {}
    epochs = whole_number(config.get("epochs"))
    if len(run.metrics) and "arm" in run.metrics.columns and epochs:
        for arm, part in run.metrics.groupby("arm"):
            progress[arm] = min(1.0, float(part["epoch"].max()) / epochs)
    return RunView(run_id, run.status, config, run.metrics, run.events, progress,
                   (run.summary or {}).get("error"), run.summary, run.warnings)


@st.cache_data(show_spinner=False)
def parameter_count(model: str, dataset: str) -> int | None:
    """Trainable parameters of `model` built for `dataset`'s input shape (None if it does not build)."""
    try:
        info = data_mod.info(dataset)
        return models_mod.count_parameters(models_mod.build(model, info["input_shape"], info["num_classes"]))
    except Exception:
        return None


def config_from(values: dict) -> RunConfig:
    """The RunConfig of the sidebar's values; the extra switch points become two-phase branches."""
    values = dict(values)
    points = [p for p in str(values.pop("switch_points", "") or "").replace(";", ",").split(",") if p.strip()]
    if points:
        try:
            branches = sweep_arms(points)
        except ValueError as exc:
            raise ConfigError({"switch_points": f"{exc}; write epochs (300), percentages (30%) or 'paper', "
                                                "separated by commas"}) from None
        values["arms"] = list(values["arms"]) + [b for b in branches if b not in values["arms"]]
    return RunConfig(**values)


def describe_config_error(err: ConfigError) -> str:
    lines = [f"- **{LABELS.get(name, name)}** (`{name}`): {msg}" for name, msg in err.errors.items()]
    return "Nothing was started. Please fix:\n" + "\n".join(lines)


def status_badge(status: str) -> str:
    return f'<span class="tp-status tp-status-{status}">{status}</span>'


# ----------------------------------------------------------------- settings
def use_paper_rule() -> None:
    """The 'Use the paper's rule' button: the switch-rule widgets back to the paper's rule."""
    st.session_state.update(cfg_tolerance=PAPER_RULE["tolerance"], cfg_min_epochs=PAPER_RULE["min_epochs"],
                            cfg_patience=PAPER_RULE["patience"], cfg_smoothing=PAPER_RULE["smoothing"],
                            cfg_switch_epoch=PAPER_RULE["switch_epoch"])


def settings() -> dict:
    """Draw the settings widgets in the sidebar; return the RunConfig fields they give."""
    d = DEFAULTS
    with st.sidebar:
        st.subheader("Run settings")
        datasets = data_mod.names()
        dataset = st.selectbox("Dataset", datasets, index=datasets.index(d.dataset) if d.dataset in datasets else 0,
                               key="cfg_dataset")
        models = models_mod.names()
        names = list(models)

        def model_label(name: str) -> str:
            n = parameter_count(name, dataset)
            return f"{name} · {n:,} parameters" if n else name

        model = st.selectbox("Model", names, index=names.index(d.model) if d.model in names else 0,
                             format_func=model_label, key="cfg_model")
        st.caption(models.get(model, ""))
        tolerance = st.slider("Switch tolerance", min_value=0.05, max_value=1.0, value=float(d.tolerance),
                              step=0.01, key="cfg_tolerance",
                              help="Switch to CG at the first epoch whose gradient norm is at most "
                                   "tolerance x the largest norm seen so far (the paper: 0.9).")
        c1, c2 = st.columns(2)
        epochs = c1.number_input("Epochs", min_value=1, value=int(d.epochs), step=1, key="cfg_epochs")
        batch_size = c2.number_input("Batch size", min_value=1, value=int(d.batch_size), step=32,
                                     key="cfg_batch_size", help="Adam's mini-batch (the paper: 512).")
        lr = c1.number_input("Learning rate", min_value=0.0, value=float(d.lr), step=1e-4, format="%g",
                             key="cfg_lr", help="Adam's step size (also in the two-phase arm's Adam phase).")
        seed = c2.number_input("Seed", min_value=0, value=int(d.seed), step=1, key="cfg_seed")
        subset = st.number_input("Training samples", min_value=1, value=d.subset, step=256, key="cfg_subset",
                                 placeholder="all", help="A class-balanced subset of the training set; "
                                                         "empty means the whole set.")
        loss = st.selectbox("Loss", LOSSES, index=LOSSES.index(d.loss), key="cfg_loss",
                            help="mse: mean squared error of the softmax against one-hot labels (the paper's).")
        st.markdown("**Arms** (trained from the same initial weights)")
        arms = [a for a in ARMS if st.checkbox(plots.arm_label(a), value=a in d.arms, key=f"cfg_arm_{a}",
                                               help=ARM_DESCRIPTIONS.get(a))]
        switch_points = st.text_input(
            "Extra switch points", value="", key="cfg_switch_points", placeholder="e.g. 3, 100, 30%",
            help="One more two-phase branch per point, all from the same Adam trunk (its Adam epochs are "
                 "computed once): an epoch (300), a percentage of the epochs (30%) or 'paper' (the paper's "
                 "rule). Compare where switching pays off in one run.")
        with st.expander("Advanced: switch rule and CG"):
            st.caption("The paper's rule is the default: tolerance 0.9, no minimum, patience 1, no smoothing, "
                       "no fixed switch epoch.")
            st.button("Use the paper's rule", key="cfg_paper_rule", on_click=use_paper_rule,
                      help="Set the tolerance and the rule's settings below back to the paper's literal rule.")
            min_epochs = st.number_input("Minimum Adam epochs", min_value=0, value=int(d.min_epochs), step=1,
                                         key="cfg_min_epochs")
            patience = st.number_input("Patience", min_value=1, value=int(d.patience), step=1, key="cfg_patience",
                                       help="Epochs in a row below the threshold before switching.")
            smoothing = st.slider("Smoothing", min_value=0.0, max_value=0.95, value=float(d.smoothing), step=0.05,
                                  key="cfg_smoothing", help="Exponential smoothing of the gradient norm "
                                                            "before the rule reads it (0 = none).")
            switch_epoch = st.number_input("Fixed switch epoch", min_value=1, value=d.switch_epoch, step=1,
                                           placeholder="none: use the rule", key="cfg_switch_epoch",
                                           help="Switch after this epoch whatever the norm does (the "
                                                "paper's experiments used 30% of the epochs).")
            cg_beta = st.selectbox("CG beta", CG_BETAS, index=CG_BETAS.index(d.cg_beta), key="cfg_cg_beta",
                                   help="pr+: Polak-Ribiere clipped at 0; fr: Fletcher-Reeves; hz: Hager-Zhang.")
            line_search = st.selectbox("Line search", LINE_SEARCHES, index=LINE_SEARCHES.index(d.line_search),
                                       key="cfg_line_search",
                                       help="golden: the paper's golden-section search (forward passes only).")
            cg_float64 = st.checkbox("CG in float64", value=d.cg_dtype == "float64", key="cfg_cg_float64")
            cg_iters = st.number_input("CG iterations per epoch", min_value=1, value=int(d.cg_iters_per_epoch),
                                       step=1, key="cfg_cg_iters")
            grad_norm_mode = st.selectbox("Gradient norm", GRAD_NORM_MODES,
                                          index=GRAD_NORM_MODES.index(d.grad_norm_mode), key="cfg_grad_norm_mode",
                                          help="full: the gradient over the whole training set at the end of "
                                               "the epoch; batch-mean: the mean of the mini-batch norms.")
            val_subset = st.number_input("Validation samples", min_value=1, value=d.val_subset, step=500,
                                         placeholder="all", key="cfg_val_subset")
            threads = st.number_input("CPU threads", min_value=0, value=int(d.threads), step=1, key="cfg_threads",
                                      help="PyTorch threads for the run (0: PyTorch's default).")
            hessian_probe = st.checkbox("Measure curvature (Hessian probe)", value=d.hessian_probe,
                                        key="cfg_hessian_probe",
                                        help="Each epoch, estimate the smallest and largest Hessian eigenvalues "
                                             "(Lanczos on 512 training images): is the surface convex yet? "
                                             "Costs time; not charged to any arm.")
            processes = st.number_input("Processes", min_value=1, value=int(d.processes), step=1,
                                        key="cfg_processes",
                                        help="Data-parallel processes on this machine (torchrun); 1 trains in "
                                             "the server itself.")
            name = st.text_input("Run name", value=d.name, key="cfg_name", placeholder="optional")
    return dict(switch_points=switch_points, model=model, dataset=dataset, tolerance=float(tolerance), epochs=int(epochs),
                batch_size=int(batch_size), lr=float(lr), seed=int(seed),
                subset=None if subset is None else int(subset),
                val_subset=None if val_subset is None else int(val_subset), loss=loss, arms=arms,
                min_epochs=int(min_epochs), patience=int(patience), smoothing=float(smoothing),
                switch_epoch=None if switch_epoch is None else int(switch_epoch), cg_beta=cg_beta,
                line_search=line_search, cg_dtype="float64" if cg_float64 else "float32",
                cg_iters_per_epoch=int(cg_iters), grad_norm_mode=grad_norm_mode, threads=int(threads), name=name,
                hessian_probe=bool(hessian_probe), processes=int(processes))


# ----------------------------------------------------------------- the run
def show_status(run_id: str, was_live: bool) -> None:
    """Status line, Stop button and the arms' progress bars (a fragment: every POLL_SECONDS while live)."""
    view = read_run(run_id)
    if view is None:
        st.warning(f"Run {run_id} is not in {jobs.runs_dir}.")
        return
    cfg = view.config or {}
    status = view.status
    head, stop_col = st.columns([5, 1])
    model, dataset, tolerance = (html.escape(str(cfg.get(k, "?"))) for k in ("model", "dataset", "tolerance"))
    head.markdown(f'Status: {status_badge(status)} &nbsp; run <code>{run_id}</code> · {model} '
                  f'on {dataset} · tolerance {tolerance}',  # escaped: config.json is a file anyone may edit
                  unsafe_allow_html=True)
    if status not in FINAL and jobs.snapshot(run_id) is not None:
        if stop_col.button("Stop", key="stop", icon=":material/stop_circle:"):
            jobs.stop(run_id)
            st.toast("Stopping: the run ends after the current mini-batch or CG iteration.")
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


def chart_figures(view: RunView, x: str, log_y: bool) -> dict:
    """The run's figures, built again only when something they show has changed (a slow model logs
    an epoch every few minutes; building four figures takes about 0.2 s of the server's CPU)."""
    key = (view.run_id, view.status, len(view.metrics), len(view.events), x, log_y)
    cached = st.session_state.get("_chart_figures")
    if cached is not None and cached[0] == key:
        return cached[1]
    cfg, metrics = view.config or {}, view.metrics
    rule = cfg.get("switch_epoch") is None  # a fixed switch epoch makes the threshold irrelevant
    figures = {
        "grad_norm": plots.grad_norm_figure(metrics, view.events, x=x,
                                            tolerance=cfg.get("tolerance") if rule else None, show_threshold=rule),
        "loss": plots.loss_figure(metrics, view.events, x=x, log_y=log_y),
        "accuracy": plots.accuracy_figure(metrics, view.events, x=x),
        "grad_vs_loss": plots.grad_norm_vs_loss_figure(metrics, view.events),
    }
    if plots.has_curvature(metrics):
        figures["curvature"] = plots.curvature_figure(metrics, view.events, x=x)
    st.session_state["_chart_figures"] = (key, figures)
    return figures


def show_charts(run_id: str, was_live: bool, x: str, log_y: bool) -> None:
    """The four charts (a fragment: every CHART_SECONDS while live; drawing them is the page's main cost)."""
    view = read_run(run_id)
    if view is None:
        return
    metrics = view.metrics
    if len(metrics) == 0:
        st.info("Loading the data and building the model…" if view.status in ("queued", "running")
                else "No epochs logged.")
        return
    if was_live:
        st.caption(f"While the run trains the charts are redrawn every {CHART_SECONDS:g} s and the progress "
                   f"every {POLL_SECONDS:g} s: redrawing takes CPU that training shares.")
    figures = chart_figures(view, x, log_y)
    r1 = st.columns(2)
    r1[0].plotly_chart(figures["grad_norm"], key="chart_grad_norm")
    r1[1].plotly_chart(figures["loss"], key="chart_loss")
    r2 = st.columns(2)
    r2[0].plotly_chart(figures["accuracy"], key="chart_accuracy")
    r2[1].plotly_chart(figures["grad_vs_loss"], key="chart_grad_vs_loss")
    if "curvature" in figures:  # the Hessian probe was on: curvature under the gradient norm
        r3 = st.columns(2)
        r3[0].plotly_chart(figures["curvature"], key="chart_curvature")
        r3[1].caption("Smallest over largest Hessian eigenvalue (Lanczos on a fixed sample of 512 "
                      "training images). Below zero the surface still curves down somewhere: non-convex. "
                      "Compare where it crosses zero with the switch line.")


def arm_labels(view: RunView) -> dict:
    """Each arm's legend name; branches with a rule say where it fired ("switched at 3")."""
    switched = {e.get("arm"): e.get("epoch") for e in view.events if e.get("kind") == "switch"}
    names = list(pd.unique(view.metrics["arm"])) if len(view.metrics) and "arm" in view.metrics.columns else []
    return {a: plots.arm_label(a, switched.get(a)) for a in names}


def final_section(view: RunView) -> None:
    st.subheader("Final figures")
    labels = arm_labels(view)
    table = plots.final_table(view.metrics, view.events, view.arm_status)
    table.insert(1, "name", [labels.get(a, a) for a in table["arm"]])
    ratios = analysis.ratio_table(view.metrics, labels=labels)
    if len(ratios):
        st.markdown("**Training loss against Adam's** (below 1: lower than Adam's). Each arm is compared with "
                    "Adam at the same epoch, after the same number of data passes, and after the same wall "
                    "time: the last point both reached.")
        st.dataframe(
            ratios.drop(columns=["arm"]), hide_index=True,
            column_config={
                "label": st.column_config.TextColumn("arm"),
                "epoch ratio": st.column_config.NumberColumn("at equal epochs", format="%.3g"),
                "epoch at": st.column_config.NumberColumn("epoch", format="%d"),
                "data_passes ratio": st.column_config.NumberColumn("at equal data passes", format="%.3g"),
                "data_passes at": st.column_config.NumberColumn("passes", format="%.1f"),
                "seconds ratio": st.column_config.NumberColumn("at equal time", format="%.3g"),
                "seconds at": st.column_config.NumberColumn("seconds", format="%.1f"),
            })
    st.dataframe(
        table, hide_index=True,
        column_config={
            "arm": None,
            "train_loss": st.column_config.NumberColumn("train loss", format="%.4g"),
            "val_loss": st.column_config.NumberColumn("val loss", format="%.4g"),
            "train_acc": st.column_config.NumberColumn("train acc", format="%.3f"),
            "val_acc": st.column_config.NumberColumn("val acc", format="%.3f"),
            "grad_norm": st.column_config.NumberColumn("grad norm", format="%.3g"),
            "data_passes": st.column_config.NumberColumn("data passes", format="%.1f"),
            "seconds": st.column_config.NumberColumn("seconds", format="%.1f"),
            "peak_epoch": st.column_config.NumberColumn("peak epoch", format="%d"),
            "switch_epoch": st.column_config.NumberColumn("switch epoch", format="%d"),
        })
    cfg = view.config or {}
    published = paper.figures_for(cfg.get("model", ""), cfg.get("dataset", ""))
    if not published.empty:
        with st.expander(f"The paper's figures for {cfg['model']} on {cfg['dataset']} (Table 1)"):
            st.caption("After 1000 epochs (700 for vit-mlp) on the full training set, MSE loss.")
            st.dataframe(published, hide_index=True)


# --------------------------------------------------------------------- page
st.title("Two-phase training, live")
st.caption("Adam while the loss surface is non-convex; conjugate gradient once the gradient norm has peaked "
           "and fallen below tolerance x its maximum. Both arms start from the same initial weights.")

values = settings()

run_id = st.query_params.get("run")
if run_id is not None and not runs.is_valid_run_id(run_id):
    st.warning(f"Ignoring the run id {run_id!r} in the address: it is not a valid run id.")
    run_id = None

start_col, message_col = st.columns([1, 5], vertical_alignment="center")
if start_col.button("Start", type="primary", key="start", icon=":material/play_arrow:"):
    try:
        config = config_from(values)
        config.validate()
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
        message_col.error(describe_config_error(err), icon=":material/error:")
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

if run_id is not None:
    xc, yc = st.columns([3, 1], vertical_alignment="bottom")
    x_axis = xc.radio("x-axis", list(plots.X_AXES), format_func=plots.X_AXES.get, horizontal=True, key="x_axis",
                      help="Cost axes: a CG epoch costs several loss evaluations; compare per data pass or per second.")
    log_y = yc.toggle("Log-scale loss", value=True, key="log_y")
    first = read_run(run_id)
    live = first is not None and first.status in runs.ACTIVE_STATUSES  # not "damaged": nothing to follow
    st.fragment(run_every=POLL_SECONDS if live else None)(show_status)(run_id, live)
    st.fragment(run_every=CHART_SECONDS if live else None)(show_charts)(run_id, live, x_axis, log_y)
    if first is not None and first.status in FINAL and len(first.metrics):
        final_section(first)
