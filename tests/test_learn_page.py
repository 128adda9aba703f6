"""The Learn page on its own, driven in-process with streamlit.testing.v1.AppTest."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np

from streamlit.testing.v1 import AppTest

PAGE = str(Path(__file__).resolve().parents[1] / "pages" / "learn.py")
TIMEOUT = 120  # seconds per script run (the first one imports torch and runs the optimizers)


def load() -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def charts(at: AppTest) -> list[dict]:
    """The plotly figures on the page, in order: one parameter, the contour map, the curves."""
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def values(array) -> np.ndarray:
    """A plotly array from a figure's JSON: a list, or plotly's {"dtype", "bdata"} encoding."""
    if isinstance(array, dict) and "bdata" in array:
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=np.dtype(array["dtype"]))
    return np.asarray(array)


def trace_names(fig: dict) -> list[str]:
    return [t.get("name") for t in fig["data"]]


def test_learn_page_loads_with_its_four_sections():
    at = load()
    headers = [h.value for h in at.header]
    assert len(headers) == 4 and headers[0].startswith("1") and headers[2].startswith("3")
    assert headers[3].startswith("4") and "peak comes early" in headers[3]
    figs = charts(at)
    assert len(figs) == 4
    one, surface, curves, long_run = figs
    assert any(s.get("type") == "rect" for s in one["layout"].get("shapes", []))  # non-convex shading
    assert any(n and n.startswith("not convex") for n in trace_names(surface))
    assert surface["layout"]["images"][0]["source"].startswith("data:image/png;base64,")  # contours and shading
    assert {"Adam", "CG only", "two-phase"} <= set(trace_names(surface))
    assert any(n and n.startswith("switch to CG") for n in trace_names(surface))
    assert len(at.dataframe) == 1 and len(at.dataframe[0].value) == 3
    assert any("Two-phase" in md.value for md in at.markdown)


def test_section_4_draws_the_shipped_long_run_and_says_what_its_probes_measured():
    from twophase import analysis, runs

    run = runs.curvature_run()  # shipped: mlp, 2,048 images, 1,000 epochs, the probe every 10
    assert run is not None and run.config["epochs"] == 1000 and run.config["hessian_probe"]
    m = analysis.curvature_milestones(run.metrics, run.events)
    # what section 4 teaches, as this run measured it: the rule fires in the first epochs, where
    # the surface is clearly non-convex; Adam's path comes within 1e-4 of convex only hundreds of
    # epochs later
    assert m["switch_epoch"] <= 6 and m["at_switch"][1] < -0.01
    assert m["closest"][0] >= 100 and -1e-4 < m["closest"][1] < 0
    at = load()
    fig = charts(at)[3]
    roles = {(t.get("meta") or {}).get("role") for t in fig["data"]}
    assert {"grad_norm", "curvature", "peak", "switch"} <= roles
    assert fig["layout"]["xaxis2"]["type"] == "log"
    # the run's tolerance, not one worked back from its rounded numbers ("0.900001")
    assert f"threshold {run.config['tolerance']:g} x max (two-phase)" in [t.get("name") for t in fig["data"]]
    text = " ".join(md.value for md in at.markdown)
    assert f"switches at epoch {m['switch_epoch']}" in text
    assert f"comes closest to convex at epoch {m['closest'][0]}" in text
    assert f"{m['late_dips']} dip below -0.1" in text
    assert f"at epoch {m['branch_best_epoch']} and stays there" in text


def test_moving_sliders_recomputes_the_figures():
    at = load()
    before = charts(at)

    at.slider(key="learn_units").set_value(3).run()
    assert not at.exception
    after_units = charts(at)
    assert after_units[0] != before[0]
    assert after_units[1] == before[1]  # the other section did not move

    at.slider(key="learn_c").set_value(0.58).run()
    assert not at.exception
    after_c = charts(at)
    assert after_c[1] != after_units[1] and after_c[2] != after_units[2]

    # the walk along the paths is the map's own slider: a frame per step, played in the browser
    walked = after_c
    index = [i for i, t in enumerate(walked[1]["data"]) if t.get("name") == "two-phase"][0]
    frame = [f for f in walked[1]["frames"] if f["name"] == "2"][0]
    path = frame["data"][frame["traces"].index(index)]
    assert len(values(path["x"])) == 3  # the path is drawn up to step 2
    slider = walked[1]["layout"]["sliders"][0]
    assert [s["args"][0] for s in slider["steps"]][:3] == [["0"], ["1"], ["2"]]
    assert slider["steps"][slider["active"]]["label"] == "100"  # it starts at the last step

    at.slider(key="learn_tolerance").set_value(0.6).run()
    assert not at.exception

    at.radio(key="learn_surface").set_value("valley").run()
    assert not at.exception
    valley = charts(at)
    assert valley[1] != walked[1]
    at.slider(key="learn_start_w1_valley").set_value(-1.0).run()
    assert not at.exception
    assert charts(at)[1] != valley[1]

    at.radio(key="learn_x").set_value("evals").run()
    assert not at.exception


def test_a_switch_in_the_non_convex_region_says_why_with_the_paths_own_numbers():
    # defect 18: at the section's defaults the rule fires in the non-convex region on both surfaces,
    # which the headline seems to deny; the page now says why, and where Adam's path turns convex
    from twophase import teaching

    at = load()
    for name in teaching.SURFACES:
        at.radio(key="learn_surface").set_value(name).run()
        assert not at.exception, [e.value for e in at.exception]
        surf = teaching.SURFACES[name]
        trajs = teaching.trajectories(name, surf.start, c=0.5, steps=100, lr=surf.lr, tolerance=0.9)
        two = trajs["two-phase"]
        assert two.switch_index is not None
        assert teaching.hessian_eigenvalues(name, two.points[two.switch_index], 0.5)[0] <= 0  # fired non-convex
        k = teaching.first_convex_step(name, trajs["adam"], 0.5)
        assert k is not None and k > 0
        assert teaching.hessian_eigenvalues(name, trajs["adam"].points[k], 0.5)[0] > 0
        assert all(teaching.hessian_eigenvalues(name, p, 0.5)[0] <= 0 for p in trajs["adam"].points[:k])
        [why] = [i.value for i in at.info if i.value.startswith("Why before the convex region")]
        assert f"reaches the convex region after step {k}" in why and "epoch 3" in why
