"""Fault class 8, untrusted input: run ids from the address bar or any API are checked against
the id pattern (no path traversal); nothing typed in the browser becomes a file path outside
the runs folder; every torch.load in the code uses weights_only=True; XSRF protection stays on.

Already covered elsewhere: every store function refuses bad ids
(tests/test_runs.py::test_bad_run_ids_rejected_everywhere, test_non_str_run_id_is_type_error),
the Train page ignores "../../etc" in ?run= (tests/test_app_pages.py::test_unknown_run_in_the_address_is_reported),
`show ../../etc` exits 2 (tests/test_cli.py::test_show_rejects_a_path_as_run_id).
"""

from __future__ import annotations

import ast
import os
import tomllib
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from twophase import runs
from twophase.cli import main
from twophase.jobs import JobManager

from conftest import ROOT
from test_app_pages import APP, TIMEOUT, set_tiny, status_of

HOSTILE_IDS = [
    "../../etc/passwd", "/etc", "..", ".", "", " ", "20260101-000000-abcdef/../../x", "..%2f..%2fetc",
    "20260101-000000-abcdef\n", "20260101-000000-ABCDEF", "20260101-000000-abcdeg", "２０２６0101-000000-abcdef",
    "20260101-000000-abcdef ", "~root", "20260101-000000-abcde", "20260101-000000-abcdef0", "\x00",
    "20260101-000000-abcdef\x00.json", "C:\\Windows", "\\\\server\\share",
]


def snapshot_tree(path: Path) -> dict:
    """Every file and folder under `path` with its size and modification time."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            st = full.lstat()
            out[str(full.relative_to(path))] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.mark.parametrize("bad", HOSTILE_IDS, ids=[repr(b) for b in HOSTILE_IDS])
def test_run_ids_are_checked_against_the_pattern_on_every_api(tmp_path, bad):
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    (tmp_path / "secret").write_text("keep")
    before = snapshot_tree(tmp_path)
    assert not runs.is_valid_run_id(bad)
    with pytest.raises(ValueError):
        runs.check_run_id(bad)
    jobs = JobManager(str(runs_dir))
    assert jobs.snapshot(bad) is None and jobs.status(bad) is None and jobs.stop(bad) is False
    with pytest.raises(ValueError):
        jobs.delete(bad)
    for call in (lambda: runs.load_run(runs_dir, bad), lambda: runs.delete_run(runs_dir, bad),
                 lambda: runs.export_bytes(runs_dir, bad, "json"), lambda: runs.zip_runs(runs_dir, [bad])):
        with pytest.raises(ValueError):
            call()
    assert snapshot_tree(tmp_path) == before  # nothing read-modified, created or removed anywhere


def test_run_ids_from_the_address_bar_are_ignored_on_every_page(runs_dir, tmp_path, capsys):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "summary.json").write_text('{"status": "completed"}')
    before = snapshot_tree(tmp_path)
    for bad in ("../victim", "../../etc/passwd", "20260101-000000-abcdef/../../victim", "%2e%2e%2fvictim"):
        at = AppTest.from_file(APP, default_timeout=TIMEOUT)
        at.query_params["run"] = bad
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        assert any("not a valid run id" in w.value for w in at.warning), bad
        # nothing was read from that path: no run followed, only the landing page's shipped example drawn
        assert status_of(at) is None
        assert {c.key for c in at.get("plotly_chart")} <= {"landing_grad_norm", "landing_loss"}
        assert any("An example: the default run" in md.value for md in at.markdown)
        for page in ("pages/runs.py", "pages/compare.py"):  # the other pages take no id from the address
            at.switch_page(page).run()
            assert not at.exception
    for bad in ("../victim", "/etc"):
        assert main(["show", bad, "--runs-dir", str(runs_dir)]) == 2
        assert main(["export", bad, "--runs-dir", str(runs_dir), "-o", str(tmp_path / "out.json")]) == 2
        assert "run_id" in capsys.readouterr().err
    assert snapshot_tree(tmp_path) == before  # nothing created, changed or removed, in or out of runs/


def test_nothing_typed_in_the_browser_becomes_a_path_outside_the_runs_folder(runs_dir, tmp_path):
    # The free text of the Train page is the run name and the extra switch points (parsed into arm
    # specs or refused); the run folder is named by its id.
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    from pages.shared import common

    widget_keys = {w.key for w in at.text_input}
    number_boxes = {f"cfg_{f.name}" for f in common.FORM if f.kind in ("int", "float")}
    # no data folder, runs folder or file name is asked for; the number boxes are parsed as numbers
    assert widget_keys - number_boxes == {"cfg_name", "cfg_switch_points"}
    at.text_input(key="cfg_switch_points").input("../../etc/passwd")
    at.text_input(key="cfg_subset").input("../../etc")
    at.button(key="start").click().run()
    assert any("Extra switch points" in e.value and "Training samples" in e.value for e in at.error)
    assert "run" not in at.query_params
    at.text_input(key="cfg_switch_points").input("")
    set_tiny(at, epochs=1)
    at.text_input(key="cfg_threads").set_value("1")
    hostile = "../../../" + str(tmp_path / "evil").lstrip("/") + "/\x00<script>alert(1)</script>"
    at.text_input(key="cfg_name").input(hostile)
    outside_before = {p.name for p in tmp_path.iterdir()}
    at.button(key="start").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    run_id = at.query_params["run"]
    jobs = at.session_state["jobs"]
    assert jobs.wait(run_id, 120) == "completed"
    assert [p.name for p in runs_dir.iterdir()] == [run_id]
    assert {p.name for p in tmp_path.iterdir()} == outside_before and not (tmp_path / "evil").exists()
    assert runs.load_run(runs_dir, run_id).config["name"] == hostile  # kept as text, nothing more
    # the Runs page shows it as text (a table cell), the Train page's HTML line does not contain it
    at.switch_page("pages/runs.py").run()
    assert not at.exception
    at.switch_page("pages/train.py").run()
    assert all("<script>" not in md.value for md in at.markdown)


CODE_DIRS = [ROOT / "twophase", ROOT / "pages", ROOT / "benchmarks"]
CODE_FILES = [ROOT / "app.py"] + sorted(p for d in CODE_DIRS if d.is_dir() for p in d.rglob("*.py"))


def test_every_torch_load_in_the_code_uses_weights_only_true_and_nothing_unpickles():
    assert any(p.name == "data.py" for p in CODE_FILES)
    loads, problems = [], []
    for path in CODE_FILES:
        tree = ast.parse(path.read_text(), filename=str(path))
        aliases = {a.asname or a.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                   and node.module in ("torch", "torch.serialization") for a in node.names if a.name == "load"}
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            name = (f"{f.value.id}.{f.attr}" if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name)
                    else f.id if isinstance(f, ast.Name) else "")
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            if name in ("torch.load", "serialization.load") or name in aliases:
                loads.append(where)
                weights_only = [k for k in node.keywords if k.arg == "weights_only"]
                if not (weights_only and isinstance(weights_only[0].value, ast.Constant)
                        and weights_only[0].value.value is True):
                    problems.append(f"{where}: {name} without weights_only=True")
            if name in ("pickle.load", "pickle.loads", "pickle.Unpickler", "dill.load", "joblib.load",
                        "np.load", "numpy.load", "marshal.loads", "shelve.open"):
                if name in ("np.load", "numpy.load") and not any(
                        k.arg == "allow_pickle" and isinstance(k.value, ast.Constant) and k.value.value is True
                        for k in node.keywords):
                    continue  # numpy refuses pickles by default
                problems.append(f"{where}: {name} can run code from a file")
    assert problems == []
    assert loads  # the dataset cache is read with torch.load: the scan does see it


def test_xsrf_protection_stays_on():
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    server = config.get("server", {})
    assert server.get("enableXsrfProtection") is True
    assert server.get("enableCORS", True) is True  # turning CORS off would make Streamlit drop XSRF
    # nothing that starts the app turns it off again
    for name in ("Makefile", "README.md", "app.py", "pyproject.toml"):
        text = (ROOT / name).read_text().lower()
        for off in ("enablexsrfprotection false", "enablexsrfprotection=false", "enablexsrfprotection = false",
                    "enable_xsrf_protection=false", "enablecors false", "enablecors=false"):
            assert off not in text.replace('"', "").replace("--server.", ""), (name, off)
    # and Streamlit itself reads it that way from this folder
    from streamlit import config as st_config

    cwd = os.getcwd()
    try:
        os.chdir(ROOT)
        st_config.get_config_options(force_reparse=True)
        assert st_config.get_option("server.enableXsrfProtection") is True
    finally:
        os.chdir(cwd)
        st_config.get_config_options(force_reparse=True)
