"""Fault class 6, damaged files: a truncated metrics.csv, an invalid summary.json, files whose
JSON has the wrong types, a metrics.csv with a foreign header, stray files in the runs folder.
Each is listed as damaged (saying what is wrong) or shown with what could be read, on every
page and in the CLI; never a crash.

Already covered elsewhere, at the store level: truncated metrics.csv, a row with the wrong
field count, invalid or non-object JSON, unknown status, missing files, a partial events line,
stray entries (tests/test_runs.py::test_truncated_metrics_csv, test_metrics_row_with_wrong_field_count_is_skipped,
test_invalid_summary_json, test_partial_events_line, test_stray_entries_never_crash_the_listing).
This module checks the same damage where the user meets it: the app's pages and the CLI.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from twophase import runs
from twophase.cli import main
from twophase.jobs import JobManager

from test_app_pages import APP, TIMEOUT, status_of, table_with


def copy_run(finished_runs: Path, run_id: str) -> Path:
    """A copy of the session's completed tiny run (the newest id: copies get older ids) under a new id."""
    src = finished_runs / max(p.name for p in finished_runs.iterdir() if runs.is_valid_run_id(p.name))
    assert run_id < src.name
    dst = finished_runs / run_id
    shutil.copytree(src, dst)
    return dst


def edit_json(path: Path, **changes) -> None:
    value = json.loads(path.read_text())
    value.update(changes)
    path.write_text(json.dumps(value))


def train_page(run_id: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["run"] = run_id
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def runs_page_rows(at: AppTest) -> dict:
    at.switch_page("pages/runs.py").run()
    assert not at.exception, [e.value for e in at.exception]
    table = table_with(at, "run", "status", "problem")
    return {r["run"]: r for r in table.to_dict("records")}


def select_on_runs_page(at: AppTest, run_id: str) -> None:
    at.switch_page("pages/runs.py").run()
    at.selectbox(key="runs_selected").set_value(run_id).run()
    assert not at.exception, [e.value for e in at.exception]


def test_truncated_metrics_csv_is_flagged_and_shown_without_the_cut_row(finished_runs):
    folder = copy_run(finished_runs, "20260101-000000-00ba01")
    data = (folder / "metrics.csv").read_bytes()
    (folder / "metrics.csv").write_bytes(data[:-20])  # the last row cut in the middle
    at = train_page(folder.name)
    assert status_of(at) == "completed"
    assert any("partial line" in w.value for w in at.warning), [w.value for w in at.warning]
    assert at.get("plotly_chart")  # the rows that could be read are drawn
    rows = runs_page_rows(at)
    assert "partial line" in rows[folder.name]["problem"]
    select_on_runs_page(at, folder.name)
    assert any("damaged" in w.value for w in at.warning)
    at.switch_page("pages/compare.py").run()
    at.multiselect(key="cmp_runs").set_value([folder.name]).run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("partial line" in w.value for w in at.warning)


def test_invalid_summary_json_is_listed_damaged_and_can_be_deleted(finished_runs):
    folder = copy_run(finished_runs, "20260101-000000-00ba02")
    (folder / "summary.json").write_text('{"status": "compl')
    at = train_page(folder.name)
    assert status_of(at) == "damaged"
    assert any("summary.json is not valid JSON" in w.value for w in at.warning)
    rows = runs_page_rows(at)
    assert rows[folder.name]["status"] == "damaged"
    assert "summary.json is not valid JSON" in rows[folder.name]["problem"]
    select_on_runs_page(at, folder.name)
    assert at.button(key="runs_open").disabled  # nothing sensible to open
    at.checkbox(key="runs_confirm_delete").check().run()
    at.button(key="runs_delete").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not folder.exists()
    at.switch_page("pages/compare.py").run()  # the healthy run is still compared
    assert not at.exception and len(at.multiselect(key="cmp_runs").value) == 1


def test_stray_entries_in_the_runs_folder_never_break_a_page_or_the_cli(finished_runs, capsys):
    (finished_runs / "notes.txt").write_text("hello")
    (finished_runs / "not-a-run").mkdir()
    (finished_runs / ".new-20260101-000000-abcdef-x1").mkdir()  # a creation cut short
    (finished_runs / "20250101-000000-aaaaaa").write_text("a file named like a run")
    (finished_runs / "20250101-000000-bbbbbb").mkdir()  # an empty folder named like a run
    (finished_runs / "20250101-000000-cccccc").symlink_to(finished_runs / "missing-target")
    (finished_runs / "20250101-000000-dddddd").symlink_to(finished_runs / "20250101-000000-dddddd")  # a loop
    JobManager(str(finished_runs))  # startup
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    rows = runs_page_rows(at)
    strays = ["20250101-000000-aaaaaa", "20250101-000000-bbbbbb", "20250101-000000-cccccc", "20250101-000000-dddddd"]
    assert set(rows) == {*strays, *[n for n in rows if n not in strays]} and len(rows) == 5
    for name in strays:
        assert rows[name]["status"] == "damaged" and rows[name]["problem"], name
    for name in strays:  # selecting each one is harmless too
        select_on_runs_page(at, name)
    at.switch_page("pages/compare.py").run()
    assert not at.exception and len(at.multiselect(key="cmp_runs").options) == 1
    assert main(["list", "--runs-dir", str(finished_runs)]) == 0
    out = capsys.readouterr().out
    assert all(f"{name}  DAMAGED" in out for name in strays)
    assert (finished_runs / "notes.txt").read_text() == "hello" and (finished_runs / "not-a-run").is_dir()


def test_metrics_csv_with_a_foreign_header_is_flagged_and_shown_empty(finished_runs):
    folder = copy_run(finished_runs, "20260101-000000-00ba03")
    (folder / "metrics.csv").write_text("foo,bar\n1,2\n")
    [info] = [i for i in runs.list_runs(finished_runs) if i.run_id == folder.name]
    assert "no arm or epoch column" in info.damaged
    at = train_page(folder.name)
    assert any("no column(s) arm, epoch" in w.value for w in at.warning), [w.value for w in at.warning]
    at.switch_page("pages/compare.py").run()
    at.multiselect(key="cmp_runs").set_value([folder.name]).run()
    assert not at.exception, [e.value for e in at.exception]
    # rows that name no arm or no numeric epoch are left out, the others kept
    (folder / "metrics.csv").write_text(",".join(runs.METRIC_COLUMNS) + "\n" + "adam,x,adam,1,1,1,1,1,1,1,1,1\n"
                                        ",2,adam,1,1,1,1,1,1,1,1,1\n" "adam,3,adam,1,1,1,1,1,1,1,1,1\n")
    run = runs.load_run(finished_runs, folder.name)
    assert run.metrics["epoch"].tolist() == [3]
    assert sum("no valid arm or epoch" in w for w in run.warnings) == 2
    train_page(folder.name)


@pytest.mark.parametrize("damage", [
    ("summary.json", {"arms": "x", "events": 5, "error": 7, "duration_s": "long", "started": 3}),
    ("summary.json", {"arms": {"adam": 5, "two-phase": {"train_loss": "abc", "switch_epoch": "x"}}}),
    ("config.json", {"arms": "adam", "epochs": "abc", "tolerance": "x", "model": 5, "name": 7}),
    ("config.json", {"arms": [1, None], "epochs": -3}),
    ("config.json", {"model": "<img src=x onerror=alert(1)>", "dataset": "<b>bold</b>"}),
    ("events.jsonl", '{"kind": "switch", "arm": "two-phase", "epoch": "x", "value": "y"}\n[1]\ngarbage\n'
                     '{"kind": 5}\n{"kind": "peak", "arm": "two-phase", "epoch": 1, "value": true}\n'),
], ids=["summary-types", "summary-arm-types", "config-types", "config-arms", "config-html", "events-types"])
def test_json_files_with_wrong_field_types_never_crash_a_page(finished_runs, damage):
    name, change = damage
    folder = copy_run(finished_runs, "20260101-000000-00ba04")
    if isinstance(change, dict):
        edit_json(folder / name, **change)
    else:
        (folder / name).write_text(change)
    at = train_page(folder.name)
    heading = " ".join(md.value for md in at.markdown if "tp-status-" in md.value)
    assert "<img" not in heading and "<b>" not in heading  # text from files is escaped in the HTML line
    if name == "events.jsonl":
        assert any("events.jsonl line" in w.value for w in at.warning)
    runs_page_rows(at)
    select_on_runs_page(at, folder.name)
    at.switch_page("pages/compare.py").run()
    assert not at.exception, [e.value for e in at.exception]
    comparable = [i.run_id for i in runs.list_runs(finished_runs) if i.status in runs.FINAL_STATUSES and i.config]
    if folder.name in comparable:  # overlay it with the healthy run
        at.multiselect(key="cmp_runs").set_value(comparable).run()
        assert not at.exception, [e.value for e in at.exception]


@pytest.mark.parametrize("file, change, command", [
    ("config.json", {"arms": [1, None]}, "list"),
    ("summary.json", {"arms": "x"}, "show"),
    ("summary.json", {"arms": {"adam": 5}}, "show"),
], ids=["list-config-arms", "show-summary-arms", "show-summary-arm"])
def test_cli_list_and_show_survive_json_files_with_wrong_field_types(finished_runs, capsys, file, change, command):
    folder = copy_run(finished_runs, "20260101-000000-00ba05")
    edit_json(folder / file, **change)
    args = [command] + ([folder.name] if command == "show" else []) + ["--runs-dir", str(finished_runs)]
    assert main(args) in (0, 2)
    assert "Traceback" not in capsys.readouterr().err
