"""Compare: overlay finished runs (and arms), side by side with the paper's published figures."""

from __future__ import annotations


import pandas as pd
import streamlit as st

from pages.shared import common

from twophase import analysis, paper, plots, runs, seeds

jobs = common.jobs("compare")
FINAL = frozenset(runs.FINAL_STATUSES)
METRICS = ["train_loss", "val_loss", "train_acc", "val_acc", "grad_norm"]


def run_label(info) -> str:
    cfg = info.config or {}
    name = f" “{cfg['name']}”" if cfg.get("name") else ""
    if cfg.get("group"):
        name += f" · seed {cfg.get('seed', '?')}"
    return (f"{info.run_id}{name} · {cfg.get('model', '?')} on {cfg.get('dataset', '?')} · "
            f"tol {cfg.get('tolerance', '?')} · {info.status}")


def short_label(run) -> str:
    cfg = run.config if isinstance(run.config, dict) else {}
    name = cfg.get("name")  # a damaged config may hold anything there
    return name if isinstance(name, str) and name else run.run_id[9:]  # HHMMSS-xxxxxx tells runs apart


NOT_SETTINGS = ("name", "group", "tag", "data_root")  # names and places, not what was trained


def legend_labels(chosen: list, most: int = 3) -> dict[str, str]:
    """run id -> its name (or id) with the settings in which it differs from the other runs chosen
    (up to `most`), so that legends tell runs apart by what they are, not by a dash style."""
    differing = [k for k in config_differences(chosen).index if k not in NOT_SETTINGS]
    labels = {}
    for run in chosen:
        cfg = run.config if isinstance(run.config, dict) else {}
        parts = [f"{k} {cfg.get(k)}" for k in differing[:most]] + (["..."] if len(differing) > most else [])
        labels[run.run_id] = short_label(run) + (f" ({', '.join(parts)})" if parts else "")
    return labels


def config_differences(chosen: list) -> pd.DataFrame:
    """Config fields whose values differ between `chosen` (one column per run)."""
    configs = {short_label(r): (r.config or {}) for r in chosen}
    keys = sorted(set().union(*[c.keys() for c in configs.values()]))
    rows = {}
    for key in keys:
        values = [repr(c.get(key)) for c in configs.values()]
        if len(set(values)) > 1:
            rows[key] = [("" if c.get(key) is None else str(c.get(key))) for c in configs.values()]
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(configs))


st.title("Compare runs")
try:
    infos = [i for i in runs.list_runs(jobs.runs_dir) if i.status in FINAL and i.config]
except OSError as err:  # the runs folder is a file, or cannot be read
    st.error(f"The runs folder cannot be read: {err}")
    st.stop()
if not infos:
    st.info("No finished runs yet. Start one on the Train page; it appears here once it has ended.")
    st.stop()

by_id = {i.run_id: i for i in infos}
selected = st.multiselect("Runs", list(by_id), default=list(by_id)[:1], format_func=lambda r: run_label(by_id[r]),
                          key="cmp_runs", help="Finished runs (completed, stopped, diverged, failed, interrupted).")
if not selected:
    st.info("Pick one or more runs.")
    st.stop()

chosen = []
for run_id in selected:
    try:
        chosen.append(runs.load_run(jobs.runs_dir, run_id))
    except (FileNotFoundError, ValueError) as err:
        st.warning(f"Run {run_id} cannot be read: {err}")
for run in chosen:
    for warning in run.warnings:
        st.warning(f"Run {run.run_id}: {warning}")

all_arms = [a for a in plots.ARM_COLORS
            if any(isinstance((r.config or {}).get("arms"), list) and a in r.config["arms"] for r in chosen)]
c1, c2, c3 = st.columns([2, 2, 3])
arms = c1.multiselect("Arms", all_arms, default=all_arms, format_func=plots.arm_label, key="cmp_arms")
metric = c2.selectbox("Metric", METRICS, format_func=lambda m: plots.METRIC_LABELS[m], key="cmp_metric")
x_axis = c3.radio("x-axis", list(plots.X_AXES), format_func=plots.X_AXES.get, horizontal=True, key="cmp_x")
c4, c5, c6 = st.columns([2, 2, 3])
log_y = c4.toggle("Log-scale y", value=metric.endswith("loss") or metric == "grad_norm", key="cmp_log_y")
show_paper = c5.toggle("Paper's final values", value=False, key="cmp_paper",
                       help="Dotted lines at the final figures of the paper's Table 1 (same model and dataset).",
                       disabled=metric not in ("train_loss", "val_loss", "train_acc", "val_acc"))
smoothing = c6.slider("Smoothing", min_value=0.0, max_value=0.95, value=0.0, step=0.05, key="cmp_smoothing",
                      help="Exponential moving average for noisy curves (0 = raw).")

groups = seeds.groups_of(chosen)
as_bands = bool(groups) and st.toggle(
    "Seeds as bands", value=True, key="cmp_seed_bands",
    help="Runs of one several-seed submission drawn as their median with the min-max range over the seeds "
         "(one chart per group) instead of one line per seed.")
banded = {r.run_id for members in groups.values() for r in members} if as_bands else set()

curves, references = [], []
legends = legend_labels(chosen) if len(chosen) > 1 else {r.run_id: short_label(r) for r in chosen}
for run in chosen:
    label = legends[run.run_id]
    metrics = run.metrics
    for arm in arms:
        part = metrics[metrics["arm"] == arm] if len(metrics) else metrics
        if len(part) and run.run_id not in banded:
            curves.append((label, arm, part))
    if show_paper:
        cfg = run.config or {}
        published_rows = paper.figures_for(cfg.get("model", ""), cfg.get("dataset", ""))
        for _, row in published_rows.iterrows():  # the paper has losses and accuracies, no gradient norms
            if row["algorithm"] in arms and metric in published_rows.columns:
                references.append((f"paper {row['model']}/{row['dataset']} {row['algorithm']}", row["algorithm"],
                                   row[metric]))
references = list(dict.fromkeys(references))
if curves or not banded:
    st.plotly_chart(plots.compare_figure(curves, y=metric, x=x_axis, log_y=log_y, smoothing=smoothing,
                                         references=references), key="cmp_chart")
for group, members in groups.items() if as_bands else ():
    first = members[0]
    name = (first.config or {}).get("name") or group
    st.markdown(f"**{name}**: {len(members)} seeds "
                f"({', '.join(str((r.config or {}).get('seed', '?')) for r in members)})")
    frames = [r.metrics for r in members]
    fig = plots.seed_band_figure(frames, metric, x_axis, log_y=log_y, arms=arms)
    st.plotly_chart(fig, key=f"cmp_band_{group}")
    table = seeds.seed_table(frames)
    table = table[table["arm"].isin(arms)]
    for line in seeds.headline(table, {a: plots.arm_label(a) for a in table["arm"]}):
        st.caption(line)
    st.dataframe(table, hide_index=True, key=f"cmp_band_table_{group}")
for run in chosen:
    if plots.has_curvature(run.metrics):
        st.plotly_chart(plots.curvature_figure(run.metrics, run.events, x=x_axis, arms=arms),
                        key=f"cmp_curvature_{run.run_id}")

st.subheader("Final figures")
tables = []
for run in chosen:
    summary_arms = (run.summary or {}).get("arms")
    arm_status = {a: v.get("status", "") for a, v in (summary_arms if isinstance(summary_arms, dict) else {}).items()
                  if isinstance(v, dict)}
    table = analysis.final_table(run.metrics, run.events, arm_status)
    table = table[table["arm"].isin(arms)]
    table.insert(0, "run", short_label(run))
    tables.append(table)
if tables:
    final = pd.concat(tables, ignore_index=True)
    first = ["run", "arm", "status", "switch_epoch", "peak_epoch"]  # the switch in view, not cut off at the right
    final = final[first + [c for c in final.columns if c not in first]]
    st.dataframe(final, hide_index=True, column_config=common.NUMBER_COLUMNS)

if len(chosen) > 1:
    st.subheader("Settings that differ")
    diff = config_differences(chosen)
    if diff.empty:
        st.caption("The selected runs have the same settings.")
    else:
        st.dataframe(diff)

pairs = sorted({(str((r.config or {}).get("model", "")), str((r.config or {}).get("dataset", ""))) for r in chosen})
published = pd.concat([paper.figures_for(m, d) for m, d in pairs], ignore_index=True) if pairs else pd.DataFrame()
st.subheader("The paper's figures")
if published.empty:
    st.caption("The paper (Table 1) has no figures for these models and datasets.")
else:
    st.caption("Hrycej et al. 2025, Table 1: after 1000 epochs (700 for vit-mlp) on the full training set, "
               "MSE loss. Set beside the runs above with the same model and dataset.")
    st.dataframe(published, hide_index=True)

st.subheader("Download")
selection = runs.runs_frame(chosen, arms)  # each row with its run and settings
if len(selection):
    d1, d2, d3 = st.columns(3)
    d1.download_button("Metrics (CSV)", runs.frame_bytes(selection, "csv"), "twophase-metrics.csv",
                       "text/csv", key="dl_csv", icon=":material/download:")
    d2.download_button("Metrics (Parquet)", runs.frame_bytes(selection, "parquet"), "twophase-metrics.parquet",
                       "application/vnd.apache.parquet", key="dl_parquet", icon=":material/download:")
    d3.download_button("Run folders (zip)", runs.zip_runs(jobs.runs_dir, [r.run_id for r in chosen]),
                       "twophase-runs.zip", "application/zip", key="dl_zip", icon=":material/folder_zip:")
