"""End to end in a real browser: `streamlit run app.py`, Debian's chromium driven by Playwright.

Needs /usr/bin/chromium (`make browser` installs it); Playwright's own browser
download is never used.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from twophase import runs

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]

# The plotly figures drawn in the page, read from the DOM (each graph div carries .data and .layout).
# Titles come back with Streamlit's <b> markup; _fullData holds the decoded point arrays.
FIGURES_JS = """
() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(gd => ({
    title: (gd.layout && gd.layout.title ? (gd.layout.title.text || '') : '').replace(/<[^>]*>/g, ''),
    traces: (gd._fullData || gd.data || []).map(t => ({name: t.name, meta: t.meta || null,
                                                       n: t.x ? t.x.length : null})),
    shapes: ((gd.layout && gd.layout.shapes) || []).map(s => ({x0: s.x0, x1: s.x1})),
}))
"""


@pytest.fixture
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: run `make browser` (apt-get install chromium) first")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def fill_number(page, label: str, value) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Enter")
    page.wait_for_timeout(300)


def test_start_a_tiny_run_and_watch_it_complete(served_app, browser, runs_dir, tmp_path):
    page = browser.new_page(viewport={"width": 1600, "height": 1300})
    page.set_default_timeout(30_000)
    sent = []  # times of the messages the page sends to the server (reruns, widget changes)
    page.on("websocket", lambda ws: ws.on("framesent", lambda _frame: sent.append(time.time())))
    # The server is fresh: its first visit goes to a page URL, not to the app's root. Streamlit then
    # runs the page file alone (its legacy pages/ mode); the page goes through app.py's navigation
    # and comes back to itself.
    page.goto(served_app + "/runs")
    page.get_by_role("heading", name="Runs").wait_for()
    page.get_by_text("No runs yet").wait_for()
    assert page.locator('[data-testid="stException"]').count() == 0
    page.goto(served_app)
    page.get_by_text("Run settings").wait_for()

    # a tiny config: the small MLP on 256 MNIST images, 3 epochs, switch fixed after epoch 2
    page.locator('[data-testid="stSelectbox"]').filter(has_text="Model").click()
    page.get_by_role("option", name=re.compile(r"^mlp")).click()
    page.wait_for_timeout(300)
    fill_number(page, "Training samples", 256)
    fill_number(page, "Epochs", 3)
    fill_number(page, "Batch size", 64)
    page.get_by_text("Advanced: switch rule and CG").click()
    fill_number(page, "Validation samples", 500)
    fill_number(page, "Fixed switch epoch", 2)
    # chromium renders on the same 2 cores: one torch thread avoids oversubscription (10x faster here)
    fill_number(page, "CPU threads", 1)

    page.get_by_role("button", name=re.compile("Start")).click()
    page.locator(".tp-status-completed").wait_for(timeout=180_000)
    assert "run=" in page.url
    run_id = page.url.split("run=")[1].split("&")[0]
    assert runs.load_run(runs_dir, run_id).status == "completed"
    cfg = runs.load_run(runs_dir, run_id).config
    assert (cfg["model"], cfg["subset"], cfg["epochs"], cfg["switch_epoch"], cfg["threads"]) == ("mlp", 256, 3, 2, 1)

    page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length >= 4")
    page.wait_for_timeout(1000)  # the last redraw after the final rerun
    figures = page.evaluate(FIGURES_JS)
    grads = [f for f in figures if f["title"] == "Gradient norm"]
    assert grads, [f["title"] for f in figures]
    grad = grads[-1]  # while Streamlit swaps a redrawn chart in, the old one can still be in the page
    lines = [t for t in grad["traces"] if (t["meta"] or {}).get("role") == "grad_norm"]
    assert {t["meta"]["arm"] for t in lines} == {"two-phase", "adam"}
    assert all(t["n"] == 4 for t in lines)  # epochs 0..3
    switch = [t for t in grad["traces"] if (t["meta"] or {}).get("role") == "switch"]
    assert len(switch) == 1 and switch[0]["meta"]["epoch"] == 2
    assert any(s["x0"] == s["x1"] == 2 for s in grad["shapes"])  # the switch line
    assert page.get_by_text("switch (two-phase): epoch 2").count() >= 1

    # Streamlit scrolls inside its main section: a tall viewport gets the whole page in one shot
    page.set_viewport_size({"width": 1600, "height": 2300})
    page.wait_for_timeout(1500)
    # once the run has ended the page stops polling: no more reruns are requested
    quiet_from = time.time()
    page.wait_for_timeout(3500)
    assert [t for t in sent if t > quiet_from] == []

    page.screenshot(path=str(tmp_path / "train-completed.png"), full_page=True)
    assert (tmp_path / "train-completed.png").stat().st_size > 10_000

    # a refresh re-attaches to the run from the address
    page.reload()
    page.locator(".tp-status-completed").wait_for(timeout=60_000)


@pytest.mark.parametrize("path, heading", [("learn", "Two weights"), ("paper?model=vit-mlp", "The paper"),
                                           ("compare", "Compare runs"), ("runs", "Runs")])
def test_a_first_visit_to_a_page_on_a_fresh_server_shows_it_in_the_apps_navigation(served_app, browser, path,
                                                                                    heading):
    # a fresh server's first visit to a page's URL ran the page in Streamlit's legacy pages/ mode:
    # /learn listed the files of pages/ in its sidebar, and /paper, /compare and /runs went to app.py
    # for the job manager and stayed there, on the Train page at "/"
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(60_000)
    page.goto(served_app + "/" + path)
    page.get_by_role("heading", name=re.compile(heading)).first.wait_for()
    nav = page.locator('[data-testid="stSidebarNav"]')
    nav.get_by_text("Train", exact=True).wait_for()
    links = [t.strip().splitlines()[-1] for t in nav.locator("a").all_inner_texts()]  # after the icon's name
    assert links == ["Train", "Compare", "Runs", "Learn", "Paper"], links
    assert page.url.rstrip("/").endswith("/" + path)  # the same page, its query parameters kept
    assert page.locator("h1", has_text="Two-phase training, live").count() == 0
    assert page.locator('[data-testid="stException"]').count() == 0


# the step in the hover text of each arm's dot on the map ("Adam at step 37 ...")
WALK_STEPS_JS = """() => { const gd = document.querySelector('.st-key-learn_surface_chart .js-plotly-plot');
    if (!gd) return null;
    return gd.data.map(t => /at step (\\d+)/.exec(((t.text || [])[0]) || '')).filter(m => m).map(m => Number(m[1])); }"""


def test_the_learn_page_runs_on_its_own(browser, tmp_path):
    # `streamlit run pages/learn.py` (its docstring's promise): Streamlit then puts pages/ on sys.path,
    # not the repository root, so the page may not need the app's modules (an import of
    # pages.shared once broke it). The console script, not `python -m`, which would add the cwd.
    from conftest import ROOT, free_port

    port = free_port()
    log = open(tmp_path / "learn.log", "w")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "streamlit"), "run", "pages/learn.py",
                             "--server.headless", "true", "--server.port", str(port), "--server.address", "127.0.0.1",
                             "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false"],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(60_000)
        deadline = time.time() + 60
        while True:
            try:
                page.goto(f"http://127.0.0.1:{port}/")
                break
            except Exception:
                assert time.time() < deadline and proc.poll() is None, (tmp_path / "learn.log").read_text()
                time.sleep(0.5)
        page.get_by_role("heading", name=re.compile("Two weights")).wait_for()
        page.locator(".st-key-learn_surface_chart .js-plotly-plot").wait_for()
        assert page.locator('[data-testid="stException"]').count() == 0
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


# where the map's paths start ([w1, w2] of its "start" marker)
START_JS = """() => { const gd = document.querySelector('.st-key-learn_surface_chart .js-plotly-plot');
    const t = gd && gd.data.find(t => t.name === 'start'); return t ? [t.x[0], t.y[0]] : null; }"""


def test_learn_page_at_1280x720_shows_the_map_beside_its_sliders(served_app, browser):
    # defect 18: at 1280x720 the two-weight map sat below its sliders, out of the first screen
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    page.set_default_timeout(60_000)
    page.goto(served_app + "/learn")
    page.get_by_role("heading", name=re.compile("Two weights")).wait_for()
    page.get_by_role("heading", name=re.compile("Two weights")).scroll_into_view_if_needed()
    chart = page.locator(".st-key-learn_surface_chart .js-plotly-plot")
    chart.wait_for()
    page.wait_for_timeout(500)
    heading = page.get_by_role("heading", name=re.compile("Two weights")).bounding_box()
    box = chart.bounding_box()
    slider = page.get_by_text("Switch tolerance", exact=True).last.bounding_box()
    # the map starts in the screen that shows the section's heading, beside the sliders, not under them
    assert box["y"] - heading["y"] < 250, (heading, box)
    assert box["x"] + box["width"] <= slider["x"] + 1 and abs(slider["y"] - box["y"]) < 150, (box, slider)
    assert page.locator('[data-testid="stException"]').count() == 0
    # the walk along the paths is the map's own slider: a click on it moves every arm's dot in the
    # browser, with no message to the server (a step used to rerun the page: 0.4-1.2 s here)
    sent = []
    page.on("websocket", lambda ws: ws.on("framesent", lambda _frame: sent.append(time.time())))
    page.reload()
    chart.wait_for()
    rail = page.locator(".st-key-learn_surface_chart .slider-rail-rect").first
    rail.scroll_into_view_if_needed()
    page.wait_for_timeout(1500)  # the page's own messages after the load are over
    rail_box = rail.bounding_box()
    assert page.evaluate(WALK_STEPS_JS) == [100, 100, 100]  # at the last step
    quiet = len(sent)
    page.mouse.click(rail_box["x"] + rail_box["width"] * 0.3, rail_box["y"] + rail_box["height"] / 2)
    page.wait_for_function(f"(({WALK_STEPS_JS})() || [100])[0] < 100")
    walked = page.evaluate(WALK_STEPS_JS)
    assert 15 <= walked[0] <= 45 and len(set(walked)) == 1, walked  # every arm at the chosen step
    page.wait_for_timeout(500)
    assert len(sent) == quiet  # nothing went to the server
    # a click on the map starts the paths there (section 2 reruns on its own, a fragment)
    before = page.evaluate(START_JS)
    drag = page.locator(".st-key-learn_surface_chart .nsewdrag").first
    drag.scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    area = drag.bounding_box()
    page.mouse.click(area["x"] + area["width"] * 0.3, area["y"] + area["height"] * 0.7)
    page.wait_for_function(f"(() => {{ const s = ({START_JS})(); return s && s[0] !== {before[0]}; }})")
    after = page.evaluate(START_JS)
    assert after != before and page.evaluate(WALK_STEPS_JS) == [100, 100, 100], (before, after)
    assert page.locator('[data-testid="stException"]').count() == 0
