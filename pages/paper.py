"""Paper: the published Table 1 beside our reproductions of it, and a one-click small reproduction.

A reproduction is a set of ordinary runs tagged `reproduce:<id>` (made by
`python -m twophase reproduce` or by the button here). This page rebuilds its
plan from the runs on disk, shows the table in the paper's layout with the
published figure beside ours, says whether two-phase beats Adam here as it did
there (at equal epochs, data passes and wall time), and draws the loss against
the cost for every cell. While cells are queued or running it refreshes itself.
"""

from __future__ import annotations

import streamlit as st

from pages.shared import common

from twophase import paper, plots

jobs = common.jobs("paper")
REFRESH_SECONDS = 2.0
FIGURES = ["train_loss", "train_acc", "val_loss", "val_acc"]
LOSS_FORMAT = st.column_config.NumberColumn(format="%.4g")
ACC_FORMAT = st.column_config.NumberColumn(format="%.3f")


def table1_view(table):
    """Table 1 with readable headers: ours and the paper's figure side by side."""
    view = table.copy()
    view["algorithm"] = view["algorithm"].map(lambda a: paper.ALGORITHM_LABELS.get(a, a))
    renames = {"paper_epochs": "paper epochs"}
    for key in FIGURES:
        words = key.replace("_", " ").replace("acc", "accuracy")
        renames[key] = words
        renames[f"paper_{key}"] = f"paper: {words}"
    return view.rename(columns=renames)


def comparison_view(compare):
    """The direction table: ratio and verdict at equal epochs, data passes and wall time."""
    view = compare[["dataset", "model", "method", "seeds", "paper_ratio", "paper_winner", "epochs_ratio",
                    "epochs_winner", "agrees", "passes_budget", "passes_winner", "seconds_budget",
                    "seconds_winner", "val_winner", "paper_val_winner"]].copy()
    view["method"] = view["method"].map(lambda a: paper.ALGORITHM_LABELS.get(a, a))
    return view.rename(columns={
        "paper_ratio": "paper: two-phase / Adam", "paper_winner": "paper: lower",
        "epochs_ratio": "here: two-phase / Adam", "epochs_winner": "here: lower (equal epochs)",
        "agrees": "same as paper", "passes_budget": "data passes", "passes_winner": "lower at equal passes",
        "seconds_budget": "wall time (s)", "seconds_winner": "lower at equal time",
        "val_winner": "here: lower val loss", "paper_val_winner": "paper: lower val loss"})


def cell_figure(plan, results, dataset: str, model: str, x: str, show_paper: bool):
    """Training loss of every arm of one (dataset, model) cell against `x`; with show_paper,
    the paper's final training losses as dotted lines."""
    curves = []
    for seed in plan.seeds:
        for variant in paper.VARIANTS:
            result = results.get(paper.Cell(model, dataset, seed, variant, None).key)
            if result is None or result.run is None or result.run.metrics.empty:
                continue
            metrics = result.run.metrics
            label = ("adaptive rule" if variant == "adaptive" else "fixed split") + \
                    (f", seed {seed}" if len(plan.seeds) > 1 else "")
            for arm in ("two-phase", "adam"):
                rows = metrics[metrics["arm"] == arm]
                if not rows.empty:
                    curves.append((label, arm, rows))
    references = []
    for arm in ("two-phase", "adam") if show_paper else ():
        value = paper.final_loss(model, dataset, arm)
        if value is not None:
            references.append(("paper", arm, value))
    fig = plots.compare_figure(curves, y="train_loss", x=x, log_y=True, references=references)
    fig.update_layout(title=dict(text=f"{model} on {dataset}"), height=340)
    return fig, bool(curves)


def start_section() -> None:
    with st.container(border=True):
        st.subheader("Run a small reproduction")
        c1, c2 = st.columns([3, 2])
        model = c1.selectbox("Model", paper.PAPER_MODELS, key="paper_model")
        adaptive = c2.toggle("Also the adaptive switch rule", value=False, key="paper_adaptive",
                             help="A third arm: two-phase switching by the paper's rule (tolerance 0.9) instead "
                                  "of after 30% of the epochs; one more run.")
        plan = paper.make_plan([model], ["mnist"], scale="small", adaptive=adaptive)
        states = paper.cell_states(plan, jobs.runs_dir)
        todo = [s for s in states if s.status == "todo"]
        to_resume = sum(paper.resumable(jobs.runs_dir, s) is not None for s in todo)
        counts = {k: sum(s.status == k for s in states) for k in ("done", "active")}
        minutes = paper.small_run_minutes(model)
        cost = (f"About {minutes * len(todo)} minutes on 2 CPU cores ({minutes} per run, measured here)"
                if minutes and todo else "")
        st.caption(f"MNIST, {plan.describe()}. {cost + '. ' if cost else ''}"
                   f"{len(states)} run(s): {counts['done']} done, {counts['active']} queued or running, "
                   f"{len(todo) - to_resume} to run, {to_resume} stopped or interrupted (they go on from their "
                   f"checkpoints). The command line does the same: "
                   f"`python -m twophase reproduce --scale small --models {model}"
                   f"{' --adaptive' if adaptive else ''}`.")
        verb = "Continue" if to_resume else "Start"
        if st.button(f"{verb} the small reproduction of {model}", key="paper_start", type="primary",
                     disabled=not todo, icon=":material/play_arrow:"):
            paper.start_cells(jobs, jobs.runs_dir, todo)
            st.session_state["paper_repro"] = plan.id
            st.rerun()


def measured_section() -> None:
    """What stands beside Table 1 whatever ran here: our small and long reproductions, shipped."""
    st.subheader("Measured here, beside the paper")
    st.caption("Our small reproduction (1,024 training images, 60 epochs, 42 for vit-mlp, seed 0), measured on "
               "a shared 2-core machine and shipped with the app; the paper's figures are after 1000 epochs on "
               "the full data. At this budget Adam is lower in all five cells.")
    view = paper.measured_small()
    st.dataframe(table1_view(view), hide_index=True, key="paper_measured",
                 column_config={c: (ACC_FORMAT if "accuracy" in c else LOSS_FORMAT)
                                for c in table1_view(view).columns if "loss" in c or "accuracy" in c})
    long = paper.measured_long()
    if len(long):
        st.caption("Our long reproduction: the paper's budgets (1000 epochs, 700 for vit-mlp) and its 30% split on "
                   "1,024 training images (`python -m benchmarks.long_reproduction`; README, \"Reproducing the "
                   "paper\"), the mean over the seeds done. The ratios are two-phase's final training loss over "
                   "Adam's at equal epochs (the paper's basis), and at equal data passes and wall time (median over "
                   "seeds; below 1 two-phase is lower); hours: one cell's wall time here. Models not listed have "
                   "not finished here yet.")
        long_view = table1_view(long).rename(columns={
            "ratio_epochs": "two-phase / Adam, equal epochs", "ratio_passes": "equal passes",
            "ratio_time": "equal time", "hours": "hours per cell"})
        first = ["dataset", "model", "algorithm", "seeds", "epochs", "two-phase / Adam, equal epochs", "equal passes",
                 "equal time", "hours per cell"]  # the ratios in view, the figures after them
        long_view = long_view[[c for c in first if c in long_view] + [c for c in long_view if c not in first]]
        ratio = st.column_config.NumberColumn(format="%.3g")
        st.dataframe(long_view, hide_index=True, key="paper_measured_long",
                     column_config={**{c: (ACC_FORMAT if "accuracy" in c else LOSS_FORMAT)
                                       for c in long_view.columns if "loss" in c or "accuracy" in c},
                                    "two-phase / Adam, equal epochs": ratio, "equal passes": ratio,
                                    "equal time": ratio,
                                    "hours per cell": st.column_config.NumberColumn(format="%.1f")})
        long_sweep_table()


def long_sweep_table() -> None:
    """The long reproduction's branches from each cell's Adam trunk: early, the paper's split, late."""
    sweep = paper.measured_long_sweep()
    if not len(sweep):
        return
    st.caption("The same cells' switch sweep: from each cell's Adam trunk, CG branches switched after epoch 3, "
               "at 10%, 30% (the paper's split, the row above) and 60% of the budget and by the paper's rule, "
               "each branch's final training loss over Adam's at equal epochs, data passes and wall time (median "
               "over seeds; below 1 the branch is lower). Early switches lose per pass on every model; whether a "
               "late one pays off depends on the model.")
    view = sweep.rename(columns={"switch_epoch": "switch epoch", "ratio_passes": "branch / Adam, equal passes",
                                 "ratio_epochs": "equal epochs", "ratio_time": "equal time",
                                 "wins_passes": "lower per pass (seeds)"})
    # the ratios in view at 1280 px; every cell is on MNIST (dataset left out)
    view = view[["model", "branch", "switch epoch", "branch / Adam, equal passes", "lower per pass (seeds)",
                 "equal epochs", "equal time", "seeds"]]
    ratio = st.column_config.NumberColumn(format="%.3g")
    st.dataframe(view, hide_index=True, key="paper_measured_long_sweep",
                 column_config={"branch / Adam, equal passes": ratio, "equal epochs": ratio, "equal time": ratio,
                                "switch epoch": st.column_config.NumberColumn(format="%d")})


def switch_study_section() -> None:
    """Where switching to CG paid off here: the study from one Adam trunk per cell, shipped."""
    study = paper.switch_study()
    if not study:
        return
    st.subheader("When does switching pay off? Measured here")
    rules = study["rules"]
    overall = rules[rules["model"] == "all"]
    cells = int(overall["cells"].max()) if len(overall) else 0
    st.caption(f"{cells} cells (model, MNIST training images, seed), 1000 epochs (700 for vit-mlp), strong-Wolfe "
               "CG: one Adam trunk per cell and CG branches cloned from it at several switch epochs and by several "
               "rules (`python -m benchmarks.switch_sweep --size issue`; README, \"When does switching pay off?\"). "
               "The ratio is the branch's training loss over Adam's at equal data passes: below 1, switching paid "
               "off for the same work. Early switches, where the paper's rule fires, trail Adam on most models; "
               "late ones often win: by a little on mlp, by orders of magnitude on vit-mlp and vgg5-max-relu, "
               "where CG drives the loss to about 1e-12; on vit-nomlp-wkewq-wvwo no switch wins.")
    st.plotly_chart(plots.switch_study_figure(study["points"]), key="paper_switch_study")
    ratio = st.column_config.NumberColumn(format="%.3g")
    sweep = study["sweep"]
    st.dataframe(sweep, hide_index=True, key="paper_switch_sweep",
                 column_config={c: ratio for c in sweep.columns if c.startswith("switch")})
    st.caption("Each rule is charged for what it reads (the paper's rule a full-set gradient per epoch, the "
               "plateau rule a forward pass, the curvature rule its probes, the trial rule its CG passes). "
               "No rule wins on every model, so the app's default stays the paper's rule; the others are arm "
               "specs (`two-phase@plateau`, `two-phase@60%`, ...) and the Train page's \"Early vs late switch\" "
               "preset.")
    model = st.selectbox("Rules on", ["all"] + [m for m in rules["model"].unique() if m != "all"],
                         key="paper_rules_model", help="All cells together, or one model's cells.")
    st.dataframe(rules[rules["model"] == model].drop(columns=["model"]), hide_index=True, key="paper_switch_rules",
                 column_config={"median ratio at equal passes": ratio, "median ratio at equal time": ratio,
                                "median switch epoch": st.column_config.NumberColumn(format="%.0f")})


def show_reproduction(reproduction_id: str, was_active: bool) -> None:
    try:
        plan = paper.plan_from_runs(jobs.runs_dir, reproduction_id)
    except ValueError as err:
        st.warning(str(err))
        return
    results = paper.collect(plan, jobs.runs_dir, include_active=True)
    states = [r.state for r in results.values()]
    active = [s for s in states if s.status == "active"]
    done = sum(s.status == "done" for s in states)
    st.caption(f"{plan.describe()[0].upper()}{plan.describe()[1:]}. The paper: full datasets, 1000 epochs "
               f"(700 for vit-mlp). {done} of {len(states)} run(s) done.")
    st.progress(done / len(states) if states else 0.0, text=f"{done} of {len(states)} runs done")
    if active:
        if st.button("Stop the reproduction", key="paper_stop", icon=":material/stop:",
                     help="Stops the running cell and the queued ones; Continue above resumes them later "
                          "from their checkpoints."):
            _, elsewhere = paper.stop_cells(jobs, active)
            if elsewhere:
                st.warning(f"{len(elsewhere)} run(s) train in another process (a `python -m twophase reproduce` "
                           "command?): stop them there with Ctrl-C.")
    halted = [s for s in states if s.status == "todo" and s.run_status in ("stopped", "interrupted", "failed")]
    todo = [s for s in states if s.status == "todo"]
    if todo and not active:
        what = (f"{len(halted)} run(s) {' or '.join(sorted({s.run_status for s in halted}))}, "
                "resumed from their checkpoints where they have one" if halted else "")
        st.caption(f"{len(todo)} run(s) not done{': ' + what if what else ''}.")
        if st.button(f"Continue the reproduction ({len(todo)} run(s) left)", key="paper_continue",
                     icon=":material/play_arrow:"):
            paper.start_cells(jobs, jobs.runs_dir, todo)
            st.rerun()
    for state in active:
        snap = jobs.snapshot(state.run_id)
        if snap is not None and snap.progress:
            share = sum(snap.progress.values()) / len(snap.progress)
            st.progress(share, text=f"{state.cell.key}: {snap.status} ({share:.0%})")
        else:
            st.caption(f"{state.cell.key}: {state.run_status}")

    table = paper.table1(plan, results=results)
    compare = paper.comparison(plan, results=results)
    st.subheader("Final figures at equal epochs, beside the paper's Table 1")
    column_config = {}
    for key in FIGURES:
        words = key.replace("_", " ").replace("acc", "accuracy")
        fmt = ACC_FORMAT if key.endswith("acc") else LOSS_FORMAT
        column_config[words] = fmt
        column_config[f"paper: {words}"] = fmt
    st.dataframe(table1_view(table), hide_index=True, column_config=column_config, key="paper_table1")
    st.subheader("Does two-phase beat Adam here, as it did there?")
    st.caption("Ratio of the final training losses two-phase / Adam (below 1: two-phase lower; within "
               f"{paper.TIE_TOLERANCE:.0%}: a tie). The paper compares at equal epochs only; here also at "
               "equal data passes (a forward and backward pass over the training set counts 1, a forward pass "
               "1/3) and equal wall time: each arm's loss at its last epoch within the smaller of the two totals.")
    st.dataframe(comparison_view(compare), hide_index=True, key="paper_comparison",
                 column_config={"paper: two-phase / Adam": st.column_config.NumberColumn(format="%.2f"),
                                "here: two-phase / Adam": st.column_config.NumberColumn(format="%.2f"),
                                "data passes": st.column_config.NumberColumn(format="%.0f"),
                                "wall time (s)": st.column_config.NumberColumn(format="%.0f")})
    if paper.SCALES[plan.scale].sweep:
        sweep = paper.sweep_table(plan, results=results)
        st.subheader("Switch sweep: every branch from each cell's Adam trunk")
        st.caption("Each two-phase branch's training loss over Adam's (below 1: lower than Adam's) at equal "
                   "epochs, data passes and wall time, with the switch epoch and how long the cell took here.")
        st.dataframe(sweep.drop(columns=["arm"]), hide_index=True, key="paper_sweep",
                     column_config={"label": st.column_config.TextColumn("branch"),
                                    "epoch ratio": st.column_config.NumberColumn("equal epochs", format="%.3g"),
                                    "data_passes ratio": st.column_config.NumberColumn("equal passes", format="%.3g"),
                                    "seconds ratio": st.column_config.NumberColumn("equal time", format="%.3g"),
                                    "cell hours": st.column_config.NumberColumn("cell (h)", format="%.2f")})
    d1, d2, d3 = st.columns(3)
    d1.download_button("Table 1 (CSV)", table.to_csv(index=False).encode(), f"reproduce-{plan.id}-table1.csv",
                       mime="text/csv", key="paper_dl_table")
    d2.download_button("Comparison (CSV)", compare.to_csv(index=False).encode(),
                       f"reproduce-{plan.id}-comparison.csv", mime="text/csv", key="paper_dl_compare")
    d3.download_button("Both (Markdown)", paper.markdown(plan, table, compare).encode(),
                       f"reproduce-{plan.id}.md", mime="text/markdown", key="paper_dl_md")

    st.subheader("Loss against cost, per cell")
    c1, c2 = st.columns([3, 2])
    x = c1.radio("x-axis", ["data_passes", "seconds", "epoch"], format_func=plots.X_AXES.get, horizontal=True,
                 key="paper_x", help="The paper's curves are per epoch; one CG epoch costs several data passes.")
    show_paper = c2.toggle("The paper's final losses", value=False, key="paper_lines",
                           help="Dotted lines at the paper's final training losses (after 1000 epochs on the "
                                "full data; far below a small reproduction's, which then look flat).")
    cells = [(d, m) for d in plan.datasets for m in plan.models]
    columns = st.columns(2)
    for i, (dataset, model) in enumerate(cells):
        fig, has_data = cell_figure(plan, results, dataset, model, x, show_paper)
        with columns[i % 2]:
            if has_data:
                st.plotly_chart(fig, key=f"paper_fig_{dataset}_{model}")
            else:
                st.caption(f"{model} on {dataset}: no run yet.")
    if was_active and not active:
        st.rerun()  # the last cell ended: redraw the page without the timer


st.title("The paper")
st.markdown(
    "Hrycej, Bermeitinger, Pavone, Wiegand, Handschuh: *A Convexity-dependent Two-Phase Training Algorithm "
    "for Deep Neural Networks* (arXiv 2510.25366, KDIR 2025). Their Table 1: after 1000 epochs (700 for "
    "vit-mlp) with MSE loss, two-phase (Adam for 30% of the epochs, then conjugate gradient) reached a lower "
    "or equal training loss than Adam alone in all 15 cells; validation figures were mixed. A reproduction "
    "runs the same protocol here at a budget this machine allows and sets our figures beside theirs, "
    "counting the cost as well as the epochs.")
with st.expander("The published Table 1"):
    st.dataframe(paper.table(), hide_index=True, key="paper_published")

start_section()

ids = paper.reproduction_ids(jobs.runs_dir)
if not ids:
    st.info("No reproduction yet. Start a small one above, or run "
            "`python -m twophase reproduce --scale small`.")
    measured_section()
    switch_study_section()
    st.stop()
if st.session_state.get("paper_repro") not in ids:
    st.session_state["paper_repro"] = ids[0]
reproduction_id = st.selectbox("Reproduction", ids, key="paper_repro",
                               help="Each reproduction is named by its settings: scale, epochs (e), training "
                                    "images (n) and validation images (v).")
plan_now = paper.plan_from_runs(jobs.runs_dir, reproduction_id)
active_now = any(s.status == "active" for s in paper.cell_states(plan_now, jobs.runs_dir))
st.fragment(run_every=REFRESH_SECONDS if active_now else None)(show_reproduction)(reproduction_id, active_now)
with st.expander("Measured here, beside the paper: our shipped small and long reproductions"):
    measured_section()
switch_study_section()
