"""Runs: every run on disk; open one (on the Train page), stop a running one, delete a finished one."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from pages.shared import common

from twophase import plots, runs

jobs = common.jobs()
FINAL = frozenset(runs.FINAL_STATUSES)
REFRESH_SECONDS = 2.0


def runs_table(infos, live: dict) -> pd.DataFrame:
    """One row per run: status, what it trains, the switch and the final losses."""
    rows = []
    for info in infos:
        cfg, summary = info.config or {}, info.summary or {}
        arms = summary.get("arms") if isinstance(summary.get("arms"), dict) else {}
        status = live.get(info.run_id, info.status)
        two = arms.get("two-phase") or {}
        rows.append({
            "run": info.run_id,
            "status": status,
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


def listing() -> tuple[list, dict]:
    try:
        infos = runs.list_runs(jobs.runs_dir)
    except OSError as err:  # the runs folder is a file, or cannot be read
        st.error(f"The runs folder cannot be read: {err}")
        st.stop()
    live = {s.run_id: s.status for s in jobs.list()}
    return infos, live


def show_table(was_active: bool) -> None:
    infos, live = listing()
    if not infos:
        st.info("No runs yet. Start one on the Train page.")
        return
    st.dataframe(
        runs_table(infos, live), hide_index=True,
        column_config={
            "two-phase loss": st.column_config.NumberColumn(format="%.4g"),
            "Adam loss": st.column_config.NumberColumn(format="%.4g"),
            "duration (s)": st.column_config.NumberColumn(format="%.0f"),
        })
    active = any(live.get(i.run_id, i.status) not in FINAL for i in infos)
    if was_active and not active:
        st.rerun()  # the last active run ended: redraw the page without the timer


st.title("Runs")
st.caption(f"Runs folder: `{jobs.runs_dir}`")
infos, live = listing()
active = any(live.get(i.run_id, i.status) not in FINAL for i in infos)
st.fragment(run_every=REFRESH_SECONDS if active else None)(show_table)(active)
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
c1, c2, c3 = st.columns([1, 1, 3], vertical_alignment="center")
if c1.button("Open", key="runs_open", icon=":material/open_in_new:", disabled=bool(by_id[run_id].damaged)):
    st.switch_page("pages/train.py", query_params={"run": run_id})
if status in runs.ACTIVE_STATUSES:  # a damaged run (no readable status) can be deleted
    if c2.button("Stop", key="runs_stop", icon=":material/stop_circle:", disabled=not held,
                 help=None if held else "This run belongs to another process (e.g. the command line)."):
        jobs.stop(run_id)
        st.toast(f"Stopping run {run_id}.")
else:
    confirm = c3.checkbox(f"Yes, delete run {run_id} and its files", key="runs_confirm_delete")
    if c2.button("Delete", key="runs_delete", icon=":material/delete:", disabled=not confirm):
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
