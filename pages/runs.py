"""Runs: every run on disk; open one (on the Train page), stop a running one, resume a stopped one, delete a finished one."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from pages.shared import common

from twophase import plots, runs

jobs = common.jobs("runs")
FINAL = frozenset(runs.FINAL_STATUSES)
REFRESH_SECONDS = 2.0


def progress_of(info, live_progress: dict) -> float | None:
    """Epochs done over epochs planned, 0..1 (the live job's progress while this server trains it)."""
    if info.run_id in live_progress and live_progress[info.run_id]:
        return min(1.0, max(live_progress[info.run_id].values()))
    cfg, summary = info.config or {}, info.summary or {}
    arms = summary.get("arms") if isinstance(summary.get("arms"), dict) else {}
    epochs = cfg.get("epochs")
    done = [a.get("epochs") for a in arms.values() if isinstance(a, dict) and isinstance(a.get("epochs"), int)]
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs <= 0 or not done:
        return None
    return min(1.0, max(done) / epochs)


def matches(info, text: str) -> bool:
    """Whether `text` (any case) is in the run's id, name, tag, model, dataset or arms."""
    if not text:
        return True
    cfg = info.config or {}
    haystack = " ".join(str(v) for v in (info.run_id, cfg.get("name"), cfg.get("tag"), cfg.get("model"),
                                         cfg.get("dataset"), cfg.get("arms"))).lower()
    return text.lower() in haystack


def runs_table(infos, live: dict, live_progress: dict | None = None) -> pd.DataFrame:
    """One row per run: status, progress, what it trains, the switch and the final losses."""
    rows = []
    for info in infos:
        cfg, summary = info.config or {}, info.summary or {}
        arms = summary.get("arms") if isinstance(summary.get("arms"), dict) else {}
        status = live.get(info.run_id, info.status)
        two = arms.get("two-phase") or {}
        rows.append({
            "run": info.run_id,
            "status": status,
            "progress": progress_of(info, live_progress or {}),
            "name": str(cfg.get("name") or ""),
            "model": cfg.get("model"),
            "dataset": cfg.get("dataset"),
            "tolerance": cfg.get("tolerance"),
            "arms": ", ".join(map(str, cfg.get("arms"))) if isinstance(cfg.get("arms"), list) else "",
            "epochs": cfg.get("epochs"),
            "switch epoch": two.get("switch_epoch") if isinstance(two, dict) else None,
            "two-phase loss": two.get("train_loss") if isinstance(two, dict) else None,
            "Adam loss": (arms.get("adam") or {}).get("train_loss") if isinstance(arms.get("adam"), dict) else None,
            "started": summary.get("started") or summary.get("created"),
            "duration (s)": summary.get("duration_s"),
            "problem": info.damaged or "",
        })
    return pd.DataFrame(rows)


def listing() -> tuple[list, dict, dict]:
    """The runs on disk (filtered by the search and status boxes), the live jobs' statuses and progress."""
    try:
        infos = runs.list_runs(jobs.runs_dir)
    except OSError as err:  # the runs folder is a file, or cannot be read
        st.error(f"The runs folder cannot be read: {err}")
        st.stop()
    snaps = jobs.list()
    live = {s.run_id: s.status for s in snaps}
    text = st.session_state.get("runs_search", "")
    statuses = st.session_state.get("runs_statuses") or []
    infos = [i for i in infos if matches(i, text) and (not statuses or live.get(i.run_id, i.status) in statuses)]
    return infos, live, {s.run_id: s.progress for s in snaps}


def show_table(was_active: bool, shown: tuple) -> None:
    infos, live, progress = listing()
    if not infos:
        st.info("No runs match." if st.session_state.get("runs_search") or st.session_state.get("runs_statuses")
                else "No runs yet. Start one on the Train page.")
        return
    st.dataframe(
        runs_table(infos, live, progress), hide_index=True,
        column_config={
            "progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0, format="percent"),
            "two-phase loss": st.column_config.NumberColumn(format="%.4g"),
            "Adam loss": st.column_config.NumberColumn(format="%.4g"),
            "duration (s)": st.column_config.NumberColumn(format="%.0f"),
        })
    now = tuple((i.run_id, live.get(i.run_id, i.status)) for i in infos)
    if now != shown:
        st.rerun()  # a status changed: redraw the whole page, so the selector below says the same


st.title("Runs")
st.caption(f"Runs folder: `{jobs.runs_dir}`")
f1, f2 = st.columns([3, 2])
f1.text_input("Search", key="runs_search", placeholder="name, tag, model, dataset, arm or run id")
f2.multiselect("Status", list(runs.STATUSES) + ["damaged"], key="runs_statuses", placeholder="any status")
infos, live, _ = listing()
active = any(live.get(i.run_id, i.status) not in FINAL for i in infos)
shown = tuple((i.run_id, live.get(i.run_id, i.status)) for i in infos)
st.fragment(run_every=REFRESH_SECONDS if active else None)(show_table)(active, shown)
if not infos:
    st.stop()

by_id = {i.run_id: i for i in infos}


def label(run_id: str) -> str:
    info = by_id[run_id]
    cfg = info.config or {}
    name = f" “{cfg['name']}”" if cfg.get("name") else ""
    return f"{run_id}{name} · {cfg.get('model', '?')} on {cfg.get('dataset', '?')} · {live.get(run_id, info.status)}"


st.subheader("Selected run")
run_id = st.selectbox("Run", list(by_id), format_func=label, key="runs_selected")
status = live.get(run_id, by_id[run_id].status)
if by_id[run_id].damaged:
    st.warning(f"This run's files are damaged: {by_id[run_id].damaged}")
held = jobs.snapshot(run_id) is not None
c1, c2, c3, c4 = st.columns([1, 1, 1, 3], vertical_alignment="center")
if c1.button("Open", key="runs_open", icon=":material/open_in_new:", disabled=bool(by_id[run_id].damaged)):
    st.switch_page("pages/train.py", query_params={"run": run_id})
resumable = common.resumable_from(run_id, status)
if resumable is not None and common.resume_button(c2, run_id, status, key="runs_resume"):
    st.rerun()
if resumable is not None:
    epochs = (by_id[run_id].config or {}).get("epochs", "?")
    st.caption(f"Resumable: its checkpoint holds every arm after epoch {resumable['epoch']} of {epochs}.")
if status in runs.ACTIVE_STATUSES:  # a damaged run (no readable status) can be deleted
    if c3.button("Stop", key="runs_stop", icon=":material/stop_circle:", disabled=not held,
                 help=None if held else "This run belongs to another process (e.g. the command line)."):
        jobs.stop(run_id)
        st.toast(f"Stopping run {run_id}.")
else:
    confirm = c4.checkbox(f"Yes, delete run {run_id} and its files", key="runs_confirm_delete")
    if c3.button("Delete", key="runs_delete", icon=":material/delete:", disabled=not confirm):
        try:
            jobs.delete(run_id)
        except (RuntimeError, OSError, ValueError) as err:
            st.error(f"Not deleted: {err}")
        else:
            st.session_state.pop("runs_confirm_delete", None)
            st.toast(f"Deleted run {run_id}.")
            st.rerun()
if run_id in by_id and by_id[run_id].summary and (by_id[run_id].summary or {}).get("error"):
    st.error(by_id[run_id].summary["error"])
arms_summary = (by_id[run_id].summary or {}).get("arms")
if isinstance(arms_summary, dict) and arms_summary:
    table = pd.DataFrame([{"arm": plots.arm_label(a), **{k: v for k, v in s.items() if not isinstance(v, (dict, list))}}
                          for a, s in arms_summary.items() if isinstance(s, dict)])
    st.dataframe(table, hide_index=True)
