"""What the pages share: the app's JobManager, the guard against Streamlit's legacy pages/ mode,
column formats, and the run-settings form generated from RunConfig's fields.

This folder is a subfolder of pages/, which Streamlit never takes for a page. The engine lives in
twophase/; this module only turns it into widgets.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from twophase import data as data_mod
from twophase import models as models_mod
from twophase import plots
from twophase.config import (ARM_DESCRIPTIONS, ARMS, CG_BETAS, CG_DTYPES, GRAD_NORM_MODES, LIMITS, LINE_SEARCHES,
                              LOSSES, PAPER_RULE, PRESETS, RunConfig)
from twophase.errors import ConfigError
from twophase.jobs import JobManager

__all__ = ["job_manager", "jobs", "NUMBER_COLUMNS", "RATIO_COLUMNS", "settings_to_url", "settings_from_url", "settings_form", "fill_form", "form_config", "LABELS",
           "describe_config_error", "use_paper_rule", "resumable_from", "resume_button"]


# ------------------------------------------------------------------ the JobManager
@st.cache_resource(show_spinner=False)
def job_manager(runs_dir: str, mode: str) -> JobManager:
    """The one JobManager of this server process for `runs_dir` (kept across sessions and reruns).
    mode "process": runs train in worker processes, one started now so the first run starts at once."""
    return JobManager(runs_dir=runs_dir, mode=mode, warm=True)


def jobs(url_path: str | None = None) -> JobManager:
    """The app's JobManager (app.py puts it in the session). A page run without app.py is
    Streamlit's legacy pages/ mode, active until the server's first st.navigation call (a fresh
    server whose first visit is to a page's URL): go through app.py first, which comes back to the
    page at `url_path` with the same query parameters (None: the default page, Train)."""
    if "jobs" not in st.session_state:
        _through_app_to(url_path)
    return st.session_state["jobs"]


AFTER_APP_KEY = "_page_after_app"  # the page to show once app.py has set up the navigation


def _through_app_to(url_path: str | None) -> None:
    """Run app.py, then come back to the page at `url_path` with this URL's query parameters."""
    st.session_state[AFTER_APP_KEY] = {"url_path": url_path, "query_params": st.query_params.to_dict()}
    st.switch_page("app.py")


def through_the_app(url_path: str) -> None:
    """For a page that needs no JobManager (Learn, at `url_path`): a first visit to its URL on a
    fresh server runs it in Streamlit's legacy pages/ mode, whose sidebar lists the files of
    pages/; go through app.py, which then comes back to this page. A page run on its own
    (`streamlit run pages/learn.py`, AppTest) stays as it is."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    if "jobs" not in st.session_state and ctx is not None and Path(ctx.main_script_path).name == "app.py":
        _through_app_to(url_path)


def resumable_from(run_id: str, status: str) -> dict | None:
    """The checkpoint a stopped, interrupted or failed run can resume from (None: it cannot)."""
    from twophase import runs
    from twophase.training.checkpoint import RESUMABLE

    if status not in RESUMABLE:
        return None
    try:
        return runs.checkpoint_info(runs.run_path(jobs().runs_dir, run_id))
    except ValueError:  # not a run id
        return None


def resume_button(where, run_id: str, status: str, key: str) -> bool:
    """A Resume button in `where` for a run that has a checkpoint; on a press, queue the resume
    (the reason shown when it is refused). Returns True when the run was queued."""
    from twophase.errors import DatasetUnavailable
    from twophase.training.checkpoint import ResumeError

    info = resumable_from(run_id, status)
    if info is None:
        return False
    if not where.button("Resume", key=key, icon=":material/play_circle:",
                        help=f"Continue from the checkpoint after epoch {info['epoch']} (saved "
                             f"{str(info.get('saved', '?'))[:19].replace('T', ' ')}): the epochs logged after it are "
                             "trained again, the rest kept."):
        return False
    try:
        jobs().resume(run_id)
    except (ResumeError, DatasetUnavailable) as err:
        st.error(f"Not resumed: {err}", icon=":material/error:")
        return False
    except OSError as err:  # the runs folder cannot be read or written
        st.error(f"Not resumed: {err.strerror or err}", icon=":material/folder_off:")
        return False
    st.toast(f"Resuming run {run_id} after epoch {info['epoch']}.")
    return True


# ------------------------------------------------------------------ tables
NUMBER_COLUMNS = {
    "train_loss": st.column_config.NumberColumn("train loss", format="%.4g"),
    "val_loss": st.column_config.NumberColumn("val loss", format="%.4g"),
    "train_acc": st.column_config.NumberColumn("train acc", format="%.3f"),
    "val_acc": st.column_config.NumberColumn("val acc", format="%.3f"),
    "grad_norm": st.column_config.NumberColumn("grad norm", format="%.3g"),
    "data_passes": st.column_config.NumberColumn("data passes", format="%.1f"),
    "seconds": st.column_config.NumberColumn("seconds", format="%.1f"),
    "peak_epoch": st.column_config.NumberColumn("peak epoch", format="%d"),
    "switch_epoch": st.column_config.NumberColumn("switch epoch", format="%d"),
}
#: The columns of twophase.analysis.ratio_table (each arm against Adam at equal cost).
RATIO_COLUMNS = {
    "arm": None,
    "label": st.column_config.TextColumn("arm"),
    "epoch ratio": st.column_config.NumberColumn("at equal epochs", format="%.3g"),
    "epoch at": st.column_config.NumberColumn("epoch", format="%d"),
    "data_passes ratio": st.column_config.NumberColumn("at equal data passes", format="%.3g"),
    "data_passes at": st.column_config.NumberColumn("passes", format="%.1f"),
    "seconds ratio": st.column_config.NumberColumn("at equal time", format="%.3g"),
    "seconds at": st.column_config.NumberColumn("seconds", format="%.1f"),
}


# ------------------------------------------------------------------ the settings form
@dataclass(frozen=True)
class Field:
    """How one RunConfig field is asked for. kind: "choice", "int", "float", "slider", "bool", "text".
    advanced: under "Advanced: switch rule and CG". choices: for kind "choice" (from RunConfig's
    owners). step, lo, hi: widget bounds (ints default to config.LIMITS; validation has the last word)."""

    name: str
    label: str
    kind: str
    help: str = ""
    advanced: bool = False
    choices: tuple = ()
    step: float | None = None
    lo: float | None = None
    hi: float | None = None
    optional: bool = False
    placeholder: str | None = None


FORM = [
    Field("dataset", "Dataset", "choice", choices=tuple(data_mod.names())),
    Field("model", "Model", "choice", choices=tuple(models_mod.names())),
    Field("tolerance", "Switch tolerance", "slider", lo=0.05, hi=1.0, step=0.01,
          help="Switch to CG at the first epoch whose gradient norm is at most tolerance x the largest norm "
               "seen so far (the paper: 0.9)."),
    Field("epochs", "Epochs", "int"),
    Field("batch_size", "Batch size", "int", step=32, help="Adam's mini-batch (the paper: 512)."),
    Field("lr", "Learning rate", "float", lo=0.0, step=1e-4,
          help="Adam's step size (also in the two-phase arm's Adam phase)."),
    Field("seed", "Seed", "int", lo=0),
    Field("seeds", "Seeds", "int", lo=1,
          help="Train the whole run once per seed (seed, seed + 1, ...), one after another: the page then adds "
               "the median over the seeds with a min-max band, and in how many seeds each arm beat Adam."),
    Field("subset", "Training samples", "int", step=256, optional=True, placeholder="all",
          help="A class-balanced subset of the training set; empty means the whole set."),
    Field("loss", "Loss", "choice", choices=LOSSES,
          help="mse: mean squared error of the softmax against one-hot labels (the paper's)."),
    Field("min_epochs", "Minimum Adam epochs", "int", advanced=True),
    Field("patience", "Patience", "int", advanced=True, help="Epochs in a row below the threshold before switching."),
    Field("smoothing", "Smoothing", "slider", advanced=True, lo=0.0, hi=0.95, step=0.05,
          help="Exponential smoothing of the gradient norm before the rule reads it (0 = none)."),
    Field("switch_epoch", "Fixed switch epoch", "int", advanced=True, optional=True, placeholder="none: use the rule",
          help="Switch after this epoch whatever the norm does (the paper's experiments used 30% of the epochs)."),
    Field("cg_beta", "CG beta", "choice", advanced=True, choices=CG_BETAS,
          help="pr+: Polak-Ribiere clipped at 0; fr: Fletcher-Reeves; hz: Hager-Zhang."),
    Field("line_search", "Line search", "choice", advanced=True, choices=LINE_SEARCHES,
          help="golden: the paper's golden-section search (forward passes only)."),
    Field("cg_dtype", "CG vectors' precision", "choice", advanced=True, choices=CG_DTYPES,
          help="float64 keeps CG's own vectors in double precision; the loss is still evaluated in float32. "
               "For CG on a float64 model and data, add a branch such as two-phase@30%:float64."),
    Field("full_batch_iters", "Full-batch iterations per epoch", "int", advanced=True,
          help="CG (or L-BFGS) iterations over the whole training set that make one epoch of the second phase."),
    Field("grad_norm_mode", "Gradient norm", "choice", advanced=True, choices=GRAD_NORM_MODES,
          help="full: the gradient over the whole training set at the end of the epoch; batch-mean: the mean "
               "of the mini-batch norms."),
    Field("val_subset", "Validation samples", "int", advanced=True, step=500, optional=True, placeholder="all"),
    Field("threads", "CPU threads", "int", advanced=True, optional=True, placeholder="auto",
          help="PyTorch threads for the run. Empty: auto, the cores free when it starts, one left for this "
               "page on a small machine. 0: PyTorch's default."),
    Field("hessian_probe", "Measure curvature (Hessian probe)", "bool", advanced=True,
          help="Estimate the smallest and largest Hessian eigenvalues (Lanczos on 512 training images): is the "
               "surface convex yet? At epoch 0, every 'Probe every' epochs, at each switch and at the last "
               "epoch. Costs time; not charged to any arm."),
    Field("probe_every", "Probe every (epochs)", "int", advanced=True,
          help="Epochs between two curvature probes (the probe costs several training epochs' time)."),
    Field("processes", "Processes", "int", advanced=True,
          help="Data-parallel processes on this machine (torchrun). 1 trains in one worker process."),
    Field("checkpoint_every", "Checkpoint every (epochs)", "int", advanced=True,
          help="Epochs between two saves of the state a run resumes from after a crash (a Stop always saves "
               "the last whole epoch). 0: only on Stop."),
    Field("name", "Run name", "text", advanced=True, placeholder="optional"),
]
FIELDS = {f.name: f for f in FORM}
assert set(FIELDS) <= {f.name for f in dataclasses.fields(RunConfig)}
#: Widget label of each RunConfig field (and the form's own inputs), to name it in error messages.
LABELS = {**{f.name: f.label for f in FORM}, "arms": "Arms", "switch_points": "Extra switch points",
          "model_sizes": "Model sizes", "data_root": "Data folder", "device": "Device", "tag": "Tag",
          "group": "Group"}


@st.cache_data(show_spinner=False)
def parameter_count(model: str, dataset: str) -> int | None:
    """Trainable parameters of `model` built for `dataset`'s input shape (None if it does not build)."""
    try:
        info = data_mod.info(dataset)
        return models_mod.count_parameters(models_mod.build(model, info["input_shape"], info["num_classes"]))
    except Exception:  # a model that does not build here has no count to show; the form still works
        return None


@st.cache_data(show_spinner=False, ttl=60)
def dataset_missing(name: str, root: str) -> bool:
    """Whether dataset `name`'s files are not in the data folder (checked once a minute)."""
    try:
        data_mod.require(name, root or None)
    except Exception:  # DatasetUnavailable, or files that cannot be read: not usable here
        return True
    return False


def _key(name: str) -> str:
    return f"cfg_{name}"


def _set_this_run(key: str) -> bool:
    """Whether `key` was written through st.session_state since this script run began (fill_form,
    use_paper_rule). Only then is a widget made without its `value`: Streamlit sends that value with
    the widget and warns when a default is passed as well. Every other time the widget is made with
    its current value as its default, so that what the browser shows never falls back to another one
    (a widget made without `value` defaults to its minimum or first option: a box emptied, or a
    widget the browser had not yet drawn when the user changed another one, would show that)."""
    try:
        from streamlit.runtime.state import get_session_state

        return get_session_state().is_new_state_value(key)
    except Exception:  # another Streamlit: the safe side is the one that never warns
        return key in st.session_state


def _current(key: str, default, param: str = "value", to=lambda v: v) -> dict:
    """The keyword (`value=`, `index=`) that makes a widget start at its current value."""
    if _set_this_run(key):
        return {}
    return {param: to(st.session_state.get(key, default))}


def number_text(value) -> str:
    """A number as the form's text boxes show it ("" for None: the field's "all" or "auto")."""
    if value is None or value == "auto":
        return ""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, float):
        short = format(value, "g")
        return short if float(short) == value else repr(value)
    return str(value)


def parse_number(f: Field, text):
    """The value typed into a number field: int or float, None when empty; text that is no number
    is returned as it is, for RunConfig's validation to name the field and the allowed values."""
    if not isinstance(text, str):
        return text
    t = text.strip()
    if not t:
        return None
    try:
        return int(t) if f.kind == "int" else float(t)
    except ValueError:
        pass
    try:
        number = float(t)
    except ValueError:
        return t  # "abc", "auto": RunConfig says what it allows
    return int(number) if f.kind == "int" and number.is_integer() else number


def _widget(f: Field, default, where, values: dict):
    key = _key(f.name)
    kw = dict(key=key, help=f.help or None)
    if f.kind == "choice":
        choices = list(f.choices)
        fmt = {}
        if f.name == "dataset":
            def fmt_dataset(name: str) -> str:
                return f"{name} (not installed: Start says where its files go)" \
                    if dataset_missing(name, data_mod.default_root()) else name
            fmt = dict(format_func=fmt_dataset)
        index = _current(key, default, "index", lambda v: choices.index(v) if v in choices else 0)
        return where.selectbox(f.label, choices, **index, **fmt, **kw)
    if f.kind == "slider":
        args = dict(min_value=float(f.lo), max_value=float(f.hi), step=float(f.step))
        return where.slider(f.label, **args, **_current(key, float(default), to=float), **kw)
    if f.kind == "bool":
        return where.checkbox(f.label, **_current(key, bool(default), to=bool), **kw)
    if f.kind == "text":
        return where.text_input(f.label, placeholder=f.placeholder, **_current(key, default, to=str), **kw)
    # "int", "float": a text box, so that what is typed (0, "abc", nothing) reaches RunConfig's
    # validation as typed, instead of a number box clamping it or falling back to its default
    text = where.text_input(f.label, placeholder=f.placeholder or ("required" if not f.optional else None),
                            **_current(key, number_text(default), to=str), **kw)
    return parse_number(f, text)


def _store(f: Field, value) -> None:
    """Set the widget of field `f` to `value` (as its widget holds it: text for numbers)."""
    st.session_state[_key(f.name)] = number_text(value) if f.kind in ("int", "float") else value


def use_paper_rule() -> None:
    """The 'Use the paper's rule' button: the switch-rule widgets back to the paper's rule."""
    for name, value in PAPER_RULE.items():
        _store(FIELDS[name], value)


def fill_form(config: dict) -> None:
    """Set the form's widgets to `config`'s values (a run's config.json: re-run with these settings;
    the settings of a shared link). Fields the form does not show, or values it cannot show, are left
    as they are."""
    for f in FORM:
        if f.name in config and _shows(f, config[f.name]):
            _store(f, None if config[f.name] == "auto" else config[f.name])
    arms = config.get("arms") if isinstance(config.get("arms"), list) else None
    if arms is not None:
        for name in ARMS:
            st.session_state[f"cfg_arm_{name}"] = name in arms
        st.session_state["cfg_switch_points"] = ", ".join(a.split("@", 1)[1] for a in arms
                                                        if isinstance(a, str) and a.startswith("two-phase@"))
    if isinstance(config.get("switch_points"), str):
        st.session_state["cfg_switch_points"] = config["switch_points"][:500]


def _shows(f: Field, value) -> bool:
    """Whether the widget of `f` can show `value` (a value from a file or a link may be anything)."""
    if f.kind == "choice":
        return value in f.choices
    if f.kind == "bool":
        return isinstance(value, bool)
    if f.kind == "text":
        return isinstance(value, str) and len(value) <= 200
    if value is None or value == "auto":
        return f.optional
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return False
    lo, hi = LIMITS.get(f.name, (f.lo, f.hi))
    return (lo is None or value >= lo) and (hi is None or value <= hi) and (f.kind != "int" or float(value).is_integer())


URL_KEY = "cfg"  # the query parameter holding the form's settings that differ from the defaults


def settings_to_url(values: dict) -> None:
    """Put the form's settings that differ from RunConfig's defaults in the address (?cfg=...), so
    that a link reproduces them (the run id, when one is shown, stays beside it)."""
    import json

    defaults = RunConfig()
    diff = {}
    for name, value in values.items():
        if name == "threads" and value is None:  # the empty box means auto
            value = "auto"
        f = FIELDS.get(name)
        if name == "switch_points":
            if str(value or "").strip():
                diff[name] = str(value)
        elif f is not None and f.kind in ("int", "float") and value != "auto" and not _shows(f, value):
            continue  # what a box holds that is not a valid setting stays out of the link
        elif value != getattr(defaults, name, None):
            diff[name] = value
    text = json.dumps(diff, separators=(",", ":"), sort_keys=True) if diff else ""
    if text and st.query_params.get(URL_KEY) != text:
        st.query_params[URL_KEY] = text
    elif not text and URL_KEY in st.query_params:
        del st.query_params[URL_KEY]


def settings_from_url() -> None:
    """The first time a session shows the form: fill it from the address's settings (?cfg=...)."""
    import json

    if st.session_state.get("_cfg_from_url") or URL_KEY not in st.query_params:
        st.session_state["_cfg_from_url"] = True
        return
    st.session_state["_cfg_from_url"] = True
    try:
        given = json.loads(st.query_params[URL_KEY])
    except ValueError:
        given = None
    if not isinstance(given, dict):
        st.warning("The settings in this link could not be read; the defaults are shown.")
        return
    fill_form(given)


def use_preset() -> None:
    """The 'Load preset' button: the form set to the chosen preset (RunConfig's defaults elsewhere)."""
    name = st.session_state.get("cfg_preset", "default")
    fill_form(RunConfig(**PRESETS[name]["fields"]).to_dict())


def settings_form(defaults: RunConfig | None = None) -> dict:
    """Draw the run settings in the sidebar (one widget per RunConfig field the app shows); return
    their values: RunConfig fields plus "switch_points" (see form_config)."""
    d = defaults or RunConfig()
    values: dict = {}
    with st.sidebar:
        st.subheader("Run settings")
        # the button under the list, full width: beside it, a quarter of the sidebar cut "Load" to "L…"
        st.selectbox("Preset", list(PRESETS), format_func=lambda n: PRESETS[n]["label"], key="cfg_preset",
                     help="Settings one click away, each named for what it shows (README, 'When does "
                          "switching pay off?').")
        st.button("Load this preset", key="cfg_load_preset", on_click=use_preset, width="stretch",
                  help="Set the form below to this preset.")
        basic = [f for f in FORM if not f.advanced]
        for f in basic:
            if f.name == "epochs":
                c1, c2 = st.columns(2)
                values["epochs"] = _widget(f, getattr(d, f.name), c1, values)
                continue
            if f.name == "batch_size":
                values[f.name] = _widget(f, getattr(d, f.name), c2, values)
                continue
            if f.name == "lr":
                c3, c4 = st.columns(2)
                values[f.name] = _widget(f, getattr(d, f.name), c3, values)
                continue
            if f.name == "seed":
                values[f.name] = _widget(f, getattr(d, f.name), c4, values)
                continue
            values[f.name] = _widget(f, getattr(d, f.name), st, values)
            if f.name == "model":  # (the count is not in the list's labels: a label that changes with
                # the dataset makes Streamlit lose the choice, back to the list's first model)
                n = parameter_count(values["model"], values.get("dataset", "mnist"))
                count = f" · {n:,} parameters on {values.get('dataset', 'mnist')}" if n else ""
                st.caption(models_mod.names().get(values["model"], "").rstrip(".") + count)
        st.markdown("**Arms** (trained from the same initial weights)")
        values["arms"] = [a for a in ARMS if st.checkbox(plots.arm_label(a), key=f"cfg_arm_{a}",
                                                         **_current(f"cfg_arm_{a}", a in d.arms, to=bool),
                                                         help=ARM_DESCRIPTIONS.get(a))]
        values["switch_points"] = st.text_input(
            LABELS["switch_points"], key="cfg_switch_points", **_current("cfg_switch_points", "", to=str),
            placeholder="e.g. 3, 100, 30%",
            help="One more two-phase branch per point, all from the same Adam trunk (its Adam epochs are "
                 "computed once): an epoch (300), a percentage of the epochs (30%) or 'paper' (the paper's "
                 "rule). Compare where switching pays off in one run.")
        with st.expander("Advanced: switch rule and CG"):
            st.caption("The paper's rule is the default: tolerance 0.9, no minimum, patience 1, no smoothing, "
                       "no fixed switch epoch.")
            st.button("Use the paper's rule", key="cfg_paper_rule", on_click=use_paper_rule,
                      help="Set the tolerance and the rule's settings below back to the paper's literal rule.")
            for f in FORM:
                if f.advanced:
                    values[f.name] = _widget(f, getattr(d, f.name), st, values)
    return values


def form_config(values: dict) -> RunConfig:
    """The RunConfig of the form's values (validated); the extra switch points become two-phase
    branches. Raises ConfigError naming every bad field at once."""
    from twophase.training.strategies import sweep_arms

    values = dict(values)
    errors = {}
    points = [p for p in str(values.pop("switch_points", "") or "").replace(";", ",").split(",") if p.strip()]
    if points:
        try:
            branches = sweep_arms(points)
        except ValueError as exc:
            errors["switch_points"] = f"{exc}; write epochs (300), percentages (30%) or 'paper', separated by commas"
        else:
            values["arms"] = list(values["arms"]) + [b for b in branches if b not in values["arms"]]
    if values.get("threads") is None:  # the empty CPU threads box
        values["threads"] = "auto"
    try:
        config = RunConfig(**values).validate()
    except ConfigError as err:  # a required number box left empty: say so, not "got None"
        errors.update({name: msg.replace("got None", "but the box is empty")
                       if name in FIELDS and values.get(name) is None else msg
                       for name, msg in err.errors.items()})
    if errors:
        raise ConfigError(errors)
    return config


def describe_config_error(err: ConfigError) -> str:
    lines = [f"- **{LABELS.get(name, name)}** (`{name}`): {msg}" for name, msg in err.errors.items()]
    return "Nothing was started. Please fix:\n" + "\n".join(lines)
