"""Figure builders (twophase.plots) and the paper's table (twophase.paper) on small frames."""

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from twophase import analysis, paper, plots


def make_metrics(diverge_adam_at=None):
    """Two arms, 6 epochs plus the initial record; the two-phase arm peaks at 2 and switches at 4."""
    rows = []
    norms = [1.0, 2.0, 3.0, 2.9, 2.5, 1.0, 0.5]
    for arm in ("two-phase", "adam"):
        running = 0.0
        for epoch, gn in enumerate(norms):
            if epoch == 0:
                phase = "init"
            elif arm == "two-phase" and epoch > 4:
                phase = "cg"
            else:
                phase = "adam"
            if epoch > 0:
                running = max(running, gn)
            loss = 1.0 / (epoch + 1) if arm == "adam" else 0.5 / (epoch + 1) ** 2
            if diverge_adam_at is not None and arm == "adam" and epoch >= diverge_adam_at:
                loss, gn = float("inf"), float("nan")
            rows.append(dict(arm=arm, epoch=epoch, phase=phase, train_loss=loss, train_acc=min(1, 0.1 * epoch + 0.3),
                             val_loss=loss * 1.5, val_acc=0.1 * epoch + 0.2, grad_norm=gn,
                             grad_norm_max=running if epoch else gn, data_passes=epoch * (2.0 if phase == "cg" else 1.0),
                             loss_evals=epoch * 4, seconds=epoch * 0.5))
    return pd.DataFrame(rows)


EVENTS = [
    {"arm": "two-phase", "kind": "peak", "epoch": 2, "value": 3.0},
    {"arm": "two-phase", "kind": "switch", "epoch": 4, "value": 2.5, "threshold": 2.7},
]


def traces(fig, role=None, arm=None):
    out = []
    for t in fig.data:
        meta = t.meta or {}
        if (role is None or meta.get("role") == role) and (arm is None or meta.get("arm") == arm):
            out.append(t)
    return out


def vlines(fig):
    return [s for s in fig.layout.shapes if s.type == "line" and s.x0 == s.x1]


def test_grad_norm_figure_has_both_arms_rule_lines_peak_and_switch():
    fig = plots.grad_norm_figure(make_metrics(), EVENTS, x="epoch", tolerance=0.9)
    assert isinstance(fig, go.Figure)
    lines = traces(fig, "grad_norm")
    assert {t.meta["arm"] for t in lines} == {"two-phase", "adam"}
    for t in lines:
        assert t.line.color == plots.ARM_COLORS[t.meta["arm"]]
    # running max and threshold only for the switching arm, up to the switch, without epoch 0
    (rmax,) = traces(fig, "running_max")
    (thr,) = traces(fig, "threshold")
    assert rmax.meta["arm"] == thr.meta["arm"] == "two-phase"
    assert list(rmax.x) == [1, 2, 3, 4]
    assert list(rmax.y) == [2.0, 3.0, 3.0, 3.0]
    assert np.allclose(thr.y, [1.8, 2.7, 2.7, 2.7])
    # defect 5: from the switch to the last epoch both are held, faint, so they are more than a
    # short segment under the curve and the star
    last = float(make_metrics()["epoch"].max())
    (held_max,) = traces(fig, "running_max_held")
    (held_thr,) = traces(fig, "threshold_held")
    assert list(held_max.x) == list(held_thr.x) == [4.0, last] and last > 4
    assert list(held_max.y) == [3.0, 3.0] and np.allclose(held_thr.y, [2.7, 2.7])
    assert "watches no more" in held_thr.hovertext and held_max.showlegend is False
    # the peak is named for what the rule used, and its hover says so
    (pk,) = traces(fig, "peak")
    assert pk.name.startswith("largest norm before the switch") and "Not necessarily the curve's highest" in pk.hovertext
    assert (pk.x[0], pk.y[0]) == (2.0, 3.0)
    (sw,) = traces(fig, "switch")
    assert (sw.x[0], sw.y[0]) == (4.0, 2.5)
    # the switch epoch as a vertical line, labelled with its value
    (line,) = vlines(fig)
    assert line.x0 == 4.0
    assert any("epoch 4" in (a.text or "") for a in fig.layout.annotations)


def test_a_switch_label_near_the_last_epoch_sits_left_of_its_line():
    # Plotly widens the x axis to fit an annotation: a label right of a switch at the last epoch
    # stretched a 10-epoch chart to about 19 epochs, half of it empty
    early = plots.grad_norm_figure(make_metrics(), [{**EVENTS[1], "epoch": 1}])
    late = plots.grad_norm_figure(make_metrics(), [{**EVENTS[1], "epoch": 6}])
    (a,) = [a for a in early.layout.annotations if "switch" in (a.text or "")]
    (b,) = [a for a in late.layout.annotations if "switch" in (a.text or "")]
    assert a.x == 1 and a.xanchor == "left"
    assert b.x == 6 and b.xanchor == "right"


def test_switch_line_follows_the_cost_axis():
    m = make_metrics()
    fig = plots.grad_norm_figure(m, EVENTS, x="data_passes", tolerance=0.9)
    expected = float(m[(m.arm == "two-phase") & (m.epoch == 4)]["data_passes"].iloc[0])
    assert vlines(fig)[0].x0 == expected
    assert fig.layout.xaxis.title.text == plots.X_AXES["data_passes"]
    fig = plots.grad_norm_figure(m, EVENTS, x="seconds")
    assert vlines(fig)[0].x0 == 2.0
    assert traces(fig, "grad_norm")[0].x[-1] == 3.0


def test_switch_and_peak_found_without_events_from_phases():
    m = make_metrics()
    assert analysis.switch_epoch(m, [], "two-phase") == 4
    assert analysis.switch_epoch(m, [], "adam") is None
    assert analysis.peak(m, [], "two-phase") == (2, 3.0)  # largest Adam-phase norm
    # the event wins; without a value, the norm of that epoch is read from the metrics
    assert analysis.peak(m, [{"arm": "two-phase", "kind": "peak", "epoch": 3}], "two-phase") == (3, 2.9)
    # the initial record (phase "init") never counts as the peak
    m0 = m.copy()
    m0.loc[m0.epoch == 0, "grad_norm"] = 10.0
    assert analysis.peak(m0, [], "two-phase") == (2, 3.0)
    # the threshold comes from the switch event when the tolerance is not given
    fig = plots.grad_norm_figure(m, EVENTS)
    (thr,) = traces(fig, "threshold")
    assert np.isclose(thr.y[-1], 2.7)
    assert traces(plots.grad_norm_figure(m, EVENTS, show_threshold=False), "threshold") == []


def test_no_switch_no_switch_marks():
    m = make_metrics()
    m.loc[m.arm == "two-phase", "phase"] = m.loc[m.arm == "two-phase", "phase"].replace("cg", "adam")
    fig = plots.grad_norm_figure(m, [], tolerance=0.9)
    assert traces(fig, "switch") == []
    assert vlines(fig) == []
    assert len(traces(fig, "threshold")) == 1


def test_loss_figure_log_scale_train_and_val_same_colour():
    fig = plots.loss_figure(make_metrics(), EVENTS)
    assert fig.layout.yaxis.type == "log"
    roles = {(t.meta["arm"], t.meta["role"]) for t in fig.data if t.meta}
    assert roles == {(a, r) for a in ("two-phase", "adam") for r in ("train_loss", "val_loss")}
    for t in fig.data:
        assert t.line.color == plots.ARM_COLORS[t.meta["arm"]]
        assert t.line.dash == ("solid" if t.meta["role"] == "train_loss" else "dash")
    assert plots.loss_figure(make_metrics(), EVENTS, log_y=False).layout.yaxis.type != "log"
    assert vlines(fig)[0].x0 == 4.0
    assert not fig.layout.annotations  # the line is labelled on the gradient-norm chart only


def test_accuracy_figure():
    fig = plots.accuracy_figure(make_metrics(), EVENTS, x="epoch")
    assert {t.meta["role"] for t in fig.data} == {"train_acc", "val_acc"}
    assert len(fig.data) == 4


def test_grad_norm_vs_loss_has_reversed_log_loss_axis_and_switch_point():
    fig = plots.grad_norm_vs_loss_figure(make_metrics(), EVENTS)
    assert fig.layout.xaxis.autorange == "reversed"
    assert fig.layout.xaxis.type == "log"
    (sw,) = traces(fig, "switch")
    assert sw.x[0] == pytest.approx(0.5 / 25)
    assert sw.y[0] == 2.5


def test_diverged_arm_drawn_up_to_divergence_with_marker():
    m = make_metrics(diverge_adam_at=5)
    events = EVENTS + [{"arm": "adam", "kind": "diverged", "epoch": 5, "value": float("inf")}]
    fig = plots.loss_figure(m, events)
    (adam_train,) = traces(fig, "train_loss", "adam")
    assert list(adam_train.x) == [0, 1, 2, 3, 4, 5]  # rows after the divergence epoch are cut
    assert math.isnan(adam_train.y[-1])  # the infinite loss is not drawn
    (marker,) = traces(fig, "diverged", "adam")
    assert marker.x[0] == 4  # at the last finite point
    fig = plots.grad_norm_figure(m, events)
    assert traces(fig, "diverged", "adam")
    table = analysis.final_table(m, events)
    row = table[table.arm == "adam"].iloc[0]
    assert row["status"] == "diverged"
    assert row["train_loss"] == pytest.approx(1 / 5)  # last finite epoch's figure
    fig.to_json()  # serialisable: no inf left


def test_final_table_and_ratio():
    m = make_metrics()
    table = analysis.final_table(m, EVENTS, {"two-phase": "completed", "adam": "completed"})
    assert list(table["arm"]) == ["two-phase", "adam"]
    two = table.iloc[0]
    assert two["switch_epoch"] == 4 and two["peak_epoch"] == 2 and two["epochs"] == 6
    assert two["status"] == "completed"
    assert table.iloc[1]["switch_epoch"] is None or pd.isna(table.iloc[1]["switch_epoch"])
    assert analysis.loss_ratio(m, EVENTS) == pytest.approx((0.5 / 49) / (1 / 7))
    assert analysis.loss_ratio(m[m.arm == "adam"], EVENTS) is None


def test_compare_overlay_colours_dashes_smoothing_references():
    m = make_metrics()
    curves = [("run A", "two-phase", m[m.arm == "two-phase"]), ("run A", "adam", m[m.arm == "adam"]),
              ("run B", "adam", m[m.arm == "adam"])]
    fig = plots.compare_figure(curves, y="train_loss", x="data_passes", log_y=True, smoothing=0.5,
                               references=[("paper adam", "adam", 0.01), ("paper two-phase", "two-phase", 0.0105)])
    lines = [t for t in fig.data if t.meta["role"] != "reference" and not t.meta.get("raw")]
    assert len(lines) == 3
    # smoothed, each curve keeps its raw values faint behind it (as TensorBoard draws them)
    raws = {(t.meta["run"], t.meta["arm"]): t for t in fig.data if t.meta.get("raw")}
    assert set(raws) == set((t.meta["run"], t.meta["arm"]) for t in lines)
    assert all(t.opacity < 0.5 and t.showlegend is False and t.hoverinfo == "skip" for t in raws.values())
    assert list(raws["run B", "adam"].y) == list(m[m.arm == "adam"]["train_loss"])
    run_b = next(t for t in lines if t.meta["run"] == "run B")
    assert raws["run B", "adam"].line.dash == run_b.line.dash and raws["run B", "adam"].line.color == run_b.line.color
    by = {(t.meta["run"], t.meta["arm"]): t for t in lines}
    assert by["run A", "two-phase"].line.color == plots.ARM_COLORS["two-phase"]
    assert by["run A", "adam"].line.color == by["run B", "adam"].line.color == plots.ARM_COLORS["adam"]
    assert by["run A", "adam"].line.dash == by["run A", "two-phase"].line.dash != by["run B", "adam"].line.dash
    raw = m[m.arm == "adam"]["train_loss"].to_numpy()
    smoothed = by["run A", "adam"].y
    assert smoothed[0] == pytest.approx(raw[0])
    assert raw[1] < smoothed[1] < raw[0]  # smoothed toward the past
    # the method is drawn last (on top), but listed first in the legend
    assert lines[-1].meta["arm"] == "two-phase"
    assert by["run A", "two-phase"].legendrank < by["run A", "adam"].legendrank
    assert fig.layout.yaxis.type == "log"
    assert any(s.y0 == s.y1 == 0.01 for s in fig.layout.shapes)
    # defect 15: two close references once printed their labels over each other beside the lines;
    # the labels are legend entries now
    assert not [a for a in fig.layout.annotations if "paper" in (a.text or "")]
    refs = {t.name: t for t in fig.data if t.meta["role"] == "reference"}
    assert set(refs) == {"paper adam: 0.01", "paper two-phase: 0.0105"}
    assert refs["paper adam: 0.01"].line.dash == "dot" and refs["paper adam: 0.01"].line.color == plots.ARM_COLORS["adam"]
    with pytest.raises(ValueError, match="smoothing"):
        plots.compare_figure(curves, smoothing=1.0)


def test_smooth():
    s = pd.Series([1.0, np.nan, 3.0])
    assert analysis.smooth(s, 0).equals(s)
    out = analysis.smooth(s, 0.5)
    assert math.isnan(out[1]) and out[0] == 1.0 and 1.0 < out[2] < 3.0


def test_bad_axis_and_empty_input():
    with pytest.raises(ValueError, match="x must be one of"):
        plots.grad_norm_figure(make_metrics(), x="minutes")
    for build in (plots.grad_norm_figure, plots.loss_figure, plots.accuracy_figure, plots.grad_norm_vs_loss_figure):
        fig = build(pd.DataFrame(), [])
        assert len(fig.data) == 0
    assert analysis.final_table(None).empty


def test_arm_colours_stable():
    assert plots.arm_color("two-phase") != plots.arm_color("adam")
    assert plots.arm_color("something-else") == plots.arm_color("something-else")


def test_paper_table():
    t = paper.table()
    assert len(t) == 30
    rows = paper.figures_for("vit-mlp", "mnist")
    assert set(rows["algorithm"]) == {"adam", "two-phase"}
    assert paper.final_loss("vit-mlp", "mnist", "two-phase") == 0.0001
    assert paper.final_loss("vit-mlp", "cifar10", "adam") == 0.0091
    assert paper.figures_for("mlp", "mnist").empty
    assert paper.final_loss("mlp", "mnist", "adam") is None
    with pytest.raises(ValueError, match="column"):
        paper.final_loss("vit-mlp", "mnist", "adam", column="loss")
    # two-phase is lower or equal in training loss in every cell, as the paper reports
    wide = t.pivot_table(index=["dataset", "model"], columns="algorithm", values="train_loss")
    assert (wide["two-phase"] <= wide["adam"]).all()


def test_curvature_figure_plots_the_eigenvalue_ratio_with_the_switch():
    import pandas as pd
    from twophase import plots

    df = pd.DataFrame({
        "arm": ["two-phase"] * 4 + ["adam"] * 4, "epoch": [0, 1, 2, 3] * 2,
        "phase": ["init", "adam", "adam", "cg", "init", "adam", "adam", "adam"],
        "hess_min": [-2.0, -1.0, 0.5, 1.0, -2.0, -1.0, -0.5, 0.1], "hess_max": [4.0] * 8,
    })
    events = [{"arm": "two-phase", "kind": "switch", "epoch": 2, "value": 1.0, "threshold": 1.1}]
    assert plots.has_curvature(df) and not plots.has_curvature(df.drop(columns=["hess_min"]))
    fig = plots.curvature_figure(df, events)
    ratios = {t.meta["arm"]: list(t.y) for t in fig.data}
    assert ratios["two-phase"] == [-0.5, -0.25, 0.125, 0.25]
    assert any(shape.x0 == 2.0 for shape in fig.layout.shapes)  # the switch line
    assert len(plots.curvature_figure(df.drop(columns=["hess_min", "hess_max"])).data) == 0


def probed_run(epochs: int = 20):
    """A probed two-arm run: the two-phase arm switches after epoch 2 and stalls at loss 0.3 from
    epoch 8; Adam's ratio is -0.5 at the start, closest to 0 at epoch 10, with two late dips."""
    rows = []
    adam_ratio = {0: -0.5, 2: -0.2, 4: -0.1, 6: -0.01, 8: -0.02, 10: -1e-5, 12: -0.003, 14: -0.4, 16: -0.05,
                  18: -2.5, 20: -0.001}
    for arm in ("two-phase", "adam"):
        for e in range(epochs + 1):
            phase = "init" if e == 0 else ("cg" if arm == "two-phase" and e > 2 else "adam")
            loss = max(0.3, 1.0 / (e + 1)) if arm == "two-phase" and e > 2 else 1.0 / (e + 1)
            ratio = adam_ratio.get(e) if (arm == "adam" or e <= 2) else (-1e-6 if e % 2 == 0 else None)
            rows.append(dict(arm=arm, epoch=e, phase=phase, train_loss=loss, grad_norm=1.0 / (e + 1),
                             grad_norm_max=1.0, data_passes=float(e), seconds=0.1 * e,
                             hess_min=None if ratio is None else ratio * 2.0, hess_max=None if ratio is None else 2.0))
    events = [{"arm": "two-phase", "kind": "peak", "epoch": 1, "value": 0.5},
              {"arm": "two-phase", "kind": "switch", "epoch": 2, "value": 0.33, "threshold": 0.45}]
    return pd.DataFrame(rows), events


def test_curvature_milestones_read_the_convexity_transition_from_the_probes():
    df, events = probed_run()
    m = analysis.curvature_milestones(df, events)
    assert (m["epochs"], m["peak_epoch"], m["switch_epoch"]) == (20, 1, 2)
    assert m["at_switch"] == (2, -0.2)  # Adam's probe at the switch: still non-convex
    assert m["closest"] == (10, -1e-5)  # nearest to convex after the switch
    assert m["late_from"] == 12 and m["late_probes"] == 5 and m["late_dips"] == 2 and m["late_low"] == (18, -2.5)
    assert m["branch_loss"] == 0.3 and m["branch_best_epoch"] == 3  # 1/(e+1) <= 0.3 from epoch 3: stalled there
    assert m["trunk_passes_epoch"] == 3 and m["trunk_loss"] == pytest.approx(1 / 21)
    assert m["branch_end"] == (20, -1e-6)
    assert analysis.curvature_milestones(df.drop(columns=["hess_min", "hess_max"]), events) is None
    assert analysis.curvature_milestones(df[df["arm"] == "adam"], []) is None  # no switch


def test_grad_norm_and_curvature_figure_shares_the_epoch_axis_and_counts_probes_off_its_range():
    df, events = probed_run()
    fig = plots.grad_norm_and_curvature_figure(df, events, log_x=True, ratio_range=(-0.3, 0.05))
    norms = [t for t in fig.data if (t.meta or {}).get("role") == "grad_norm"]
    ratios = {t.meta["arm"]: t for t in fig.data if (t.meta or {}).get("role") == "curvature"}
    assert {t.meta["arm"] for t in norms} == {"two-phase", "adam"} and set(ratios) == {"two-phase", "adam"}
    assert all(t.yaxis == "y2" for t in ratios.values()) and all(t.yaxis in (None, "y") for t in norms)
    assert min(ratios["adam"].x) == 2  # log epoch axis: epoch 0 left out
    assert fig.layout.xaxis2.type == "log" and fig.layout.yaxis.type == "log"
    assert fig.layout.yaxis.exponentformat == "power"
    # Adam's probes at 14 (-0.4) and 18 (-2.5) lie below -0.3: said in the panel's title, not hidden
    assert "2 probes off this range" in fig.layout.annotations[1].text
    assert any(s.x0 == 2 for s in fig.layout.shapes if s.type == "line" and s.line.dash == "dash")
    plain = plots.grad_norm_and_curvature_figure(df, events)
    assert min(plain.data[0].x) == 0 and "off this range" not in plain.layout.annotations[1].text


def test_points_get_markers_in_short_runs_and_plain_lines_in_long_ones():
    def long_metrics(epochs):
        return pd.DataFrame([dict(arm=arm, epoch=e, phase="adam" if e else "init", train_loss=1.0 / (e + 1),
                                  train_acc=0.5, val_loss=1.0, val_acc=0.5, grad_norm=1.0 + 0.01 * e,
                                  grad_norm_max=1.0, data_passes=float(e), loss_evals=e, seconds=0.1 * e)
                             for arm in ("two-phase", "adam") for e in range(epochs + 1)])

    for epochs, mode in ((plots.MARKER_LIMIT - 1, "lines+markers"), (plots.MARKER_LIMIT + 40, "lines")):
        df = long_metrics(epochs)
        for fig in (plots.grad_norm_figure(df, []), plots.grad_norm_vs_loss_figure(df, [])):
            lines = [t for t in fig.data if (t.meta or {}).get("role") == "grad_norm"]
            assert len(lines) == 2 and {t.mode for t in lines} == {mode}, (epochs, [t.mode for t in lines])


def test_hovering_a_chart_shows_every_arm_at_that_x():
    # the Train page's time-series charts and Compare's overlay: one hover label per x with every
    # curve's value (Plotly's "x unified"); the raw curves behind a smoothed one stay out of it
    m = make_metrics()
    figures = [plots.grad_norm_figure(m, EVENTS, smoothing=0.5), plots.loss_figure(m, EVENTS, smoothing=0.5),
               plots.accuracy_figure(m, EVENTS),
               plots.compare_figure([("run A", "adam", m[m.arm == "adam"])], smoothing=0.5)]
    for fig in figures:
        assert fig.layout.hovermode == "x unified", fig.layout.title.text
        arms = {t.meta["arm"] for t in fig.data if (t.meta or {}).get("arm") and t.hoverinfo != "skip"}
        assert arms, fig.layout.title.text
        assert all(t.hoverinfo == "skip" for t in fig.data if (t.meta or {}).get("raw"))
    assert {t.meta["arm"] for t in traces(figures[1], role="train_loss") if t.hoverinfo != "skip"} == {"two-phase", "adam"}
