"""Tests of twophase.runs: runs on disk (real files in tmp_path, real subprocesses)."""

from __future__ import annotations

import io
import json
import math
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from twophase import runs
from twophase.runs import files as run_files
from twophase.runs import (
    METRIC_COLUMNS,
    PROBE_COLUMNS,
    RunWriter,
    delete_run,
    export_bytes,
    export_run,
    is_valid_run_id,
    list_runs,
    load_run,
    mark_interrupted,
    new_run_id,
    zip_runs,
)

REPO = Path(__file__).resolve().parents[1]

CONFIG = {"model": "mlp", "dataset": "mnist", "epochs": 3, "tolerance": 0.9, "seed": 7, "arms": ["two-phase", "adam"]}


def kill(proc) -> None:
    """SIGKILL a child process and wait for it."""
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


def reap(proc) -> None:
    """Make sure a child process is gone (a failed test must not leave it running)."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()

def record(arm: str, epoch: int, **extra) -> dict:
    r = {
        "arm": arm,
        "epoch": epoch,
        "phase": "adam",
        "train_loss": 1.0 / (epoch + 1),
        "train_acc": 0.1 * epoch,
        "val_loss": 0.3 + 1e-17 * epoch,
        "val_acc": 0.123456789012345678,
        "grad_norm": 2.5 * epoch,
        "grad_norm_max": 2.5 * epoch,
        "data_passes": epoch + 1 / 3,
        "loss_evals": 10 * epoch,
        "seconds": 0.01 * epoch,
    }
    r.update(extra)
    return r


def make_run(runs_dir: Path, rows: int = 3, **kwargs) -> RunWriter:
    w = RunWriter(runs_dir, new_run_id(), CONFIG, **kwargs)
    for e in range(1, rows + 1):
        w.append(record("two-phase", e))
    return w


def run_python(code: str) -> subprocess.Popen:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


# --------------------------------------------------------------------------- ids and paths


def test_default_runs_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("TWOPHASE_RUNS", str(tmp_path / "elsewhere"))
    assert runs.default_runs_dir() == (tmp_path / "elsewhere").resolve()
    monkeypatch.delenv("TWOPHASE_RUNS")
    monkeypatch.chdir(tmp_path)
    d = runs.default_runs_dir()
    assert d.is_absolute() and d == (tmp_path / "runs").resolve()


def test_columns():
    assert METRIC_COLUMNS == [
        "arm", "epoch", "phase", "train_loss", "train_acc", "val_loss", "val_acc",
        "grad_norm", "grad_norm_max", "data_passes", "loss_evals", "seconds",
    ]
    assert PROBE_COLUMNS == ["hess_min", "hess_max"]


def test_new_run_id_format_and_uniqueness():
    ids = {new_run_id() for _ in range(200)}
    assert len(ids) == 200
    for rid in ids:
        assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{6}", rid)
        assert is_valid_run_id(rid)


@pytest.mark.parametrize(
    "bad",
    ["../x", "/etc", "..", ".", "", "20260101-000000-zzzzzz", "20260101-000000-ABCDEF",
     "20260101-000000-abcdef/..", "../20260101-000000-abcdef", "20260101-000000-abcdef\n",
     "20260101-000000-abcde", "2026010１-000000-abcdef", "20260101-000000-abcdef.json"],
)
def test_bad_run_ids_rejected_everywhere(tmp_path, bad):
    runs_path = tmp_path / "runs"
    runs_path.mkdir()
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("keep")
    assert not is_valid_run_id(bad)
    calls = [
        lambda: runs.check_run_id(bad),
        lambda: RunWriter(runs_path, bad, CONFIG),
        lambda: load_run(runs_path, bad),
        lambda: delete_run(runs_path, bad),
        lambda: export_bytes(runs_path, bad, "csv"),
        lambda: export_run(runs_path, bad, "csv", tmp_path),
        lambda: zip_runs(runs_path, [bad]),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="run_id") as info:
            call()
        assert runs.RUN_ID_PATTERN in str(info.value)
    assert (victim / "keep.txt").read_text() == "keep"
    assert os.listdir(runs_path) == []


def test_non_str_run_id_is_type_error(tmp_path):
    with pytest.raises(TypeError, match="run_id"):
        load_run(tmp_path, 123)
    assert not is_valid_run_id(None)


# --------------------------------------------------------------------------- writing and reading


def test_round_trip(tmp_path):
    runs_path = tmp_path / "runs"  # created on demand
    w = RunWriter(runs_path, new_run_id(), CONFIG, columns=METRIC_COLUMNS + PROBE_COLUMNS)
    written = []
    for e in range(1, 4):
        for arm in ("two-phase", "adam"):
            r = record(arm, e, phase="cg" if e == 3 and arm == "two-phase" else "adam", hess_min=-0.5 * e)
            w.append(r)
            written.append(r)
    w.append({"arm": "adam", "epoch": 4, "phase": "adam", "train_loss": float("nan"),
              "val_loss": float("inf"), "grad_norm": None})
    w.event({"arm": "two-phase", "kind": "peak", "epoch": 2, "value": 5.0})
    w.event({"arm": "two-phase", "kind": "switch", "epoch": 3, "value": 4.0, "threshold": 4.5})
    w.event({"arm": "adam", "kind": "diverged", "epoch": 4, "value": float("nan")})
    w.update_summary(status="completed", arms={"adam": {"status": "diverged", "final_loss": float("inf")}})

    run = load_run(runs_path, w.run_id)
    assert run.warnings == []
    assert run.config == CONFIG
    assert run.status == "completed"
    s = run.summary
    assert s["run_id"] == w.run_id and s["pid"] == os.getpid()
    assert s["hostname"] and s["started"] and s["ended"] and s["created"]
    assert s["ended"].endswith("+00:00")
    assert set(s["versions"]) == {"python", "torch", "twophase", "numpy"}
    assert s["versions"]["python"] == sys.version.split()[0]
    assert s["arms"]["adam"] == {"status": "diverged", "final_loss": None}  # inf -> null

    df = run.metrics
    assert list(df.columns) == METRIC_COLUMNS + PROBE_COLUMNS
    assert len(df) == 7
    for c in df.columns:
        if c in ("arm", "phase"):
            continue
        assert pd.api.types.is_numeric_dtype(df[c]), c
    # floats come back bit-exact
    for i, r in enumerate(written):
        for k, v in r.items():
            got = df.iloc[i][k]
            assert got == v, (k, got, v)
    assert df["hess_max"].isna().all()
    last = df.iloc[-1]
    assert last["arm"] == "adam" and last["epoch"] == 4
    assert math.isnan(last["train_loss"]) and math.isnan(last["val_loss"]) and math.isnan(last["grad_norm"])
    # non-finite values are empty cells in the file, never the text nan/inf
    text = (w.path / "metrics.csv").read_text()
    assert "nan" not in text.lower() and "inf" not in text.lower()
    assert text.splitlines()[-1].startswith("adam,4,adam,,")

    assert [e["kind"] for e in run.events] == ["peak", "switch", "diverged"]
    assert run.events[2]["value"] is None
    # every JSON file is strict JSON
    for name in ("config.json", "summary.json"):
        json.loads((w.path / name).read_text(), parse_constant=lambda c: pytest.fail(f"{name} has {c}"))

    infos = list_runs(runs_path)
    assert [i.run_id for i in infos] == [w.run_id]
    assert infos[0].status == "completed" and infos[0].damaged is None and infos[0].config == CONFIG


def test_empty_run_has_header_and_typed_frame(tmp_path):
    w = RunWriter(tmp_path, new_run_id(), CONFIG, status="queued")
    assert w.summary["status"] == "queued" and w.summary["started"] is None
    run = load_run(tmp_path, w.run_id)
    assert run.warnings == [] and len(run.metrics) == 0
    assert list(run.metrics.columns) == METRIC_COLUMNS
    assert run.events == []
    w.update_summary(status="running")
    assert w.summary["started"] is not None and w.summary["ended"] is None


def test_writer_rejects_bad_input(tmp_path):
    w = RunWriter(tmp_path, new_run_id(), CONFIG)
    with pytest.raises(ValueError, match="bogus"):
        w.append({"arm": "adam", "bogus": 1})
    with pytest.raises(TypeError):
        w.append([1, 2])
    with pytest.raises(ValueError, match="status"):
        w.update_summary(status="done")
    with pytest.raises(ValueError, match="status"):
        RunWriter(tmp_path, new_run_id(), CONFIG, status="completed")
    with pytest.raises(ValueError, match="columns"):
        RunWriter(tmp_path, new_run_id(), CONFIG, columns=["arm", "arm"])
    with pytest.raises(FileExistsError):
        RunWriter(tmp_path, w.run_id, CONFIG)
    with pytest.raises(TypeError, match="config"):
        RunWriter(tmp_path, new_run_id(), {"x": object()})
    # nothing half-made is left behind by the failed creations
    assert sorted(os.listdir(tmp_path)) == [w.run_id]
    assert load_run(tmp_path, w.run_id).summary["status"] == "running"


def test_write_summary_keeps_owner_fields(tmp_path):
    w = make_run(tmp_path)
    w.write_summary({"status": "stopped", "note": "by user"})
    s = json.loads((w.path / "summary.json").read_text())
    assert s["status"] == "stopped" and s["note"] == "by user" and s["ended"]
    assert s["pid"] == os.getpid() and s["run_id"] == w.run_id and "versions" in s


def test_concurrent_writes_and_reads(tmp_path):
    w = RunWriter(tmp_path, new_run_id(), CONFIG)
    errors = []
    stop = threading.Event()

    def writer(arm):
        try:
            for e in range(1, 61):
                w.append(record(arm, e))
                if e % 10 == 0:
                    w.update_summary(**{f"progress_{arm}": e})
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def reader():
        while not stop.is_set():
            run = load_run(tmp_path, w.run_id)
            if run.warnings or run.metrics.isna().any().any() or run.summary is None:
                errors.append(AssertionError(f"inconsistent read: {run.warnings}"))
                return

    threads = [threading.Thread(target=writer, args=(a,)) for a in ("two-phase", "adam")]
    r = threading.Thread(target=reader)
    r.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    r.join()
    assert errors == []
    run = load_run(tmp_path, w.run_id)
    assert len(run.metrics) == 120
    assert run.summary["progress_two-phase"] == 60 and run.summary["progress_adam"] == 60


# --------------------------------------------------------------------------- atomic summary


def test_summary_crash_between_temp_write_and_rename(tmp_path, monkeypatch):
    w = make_run(tmp_path)
    w.update_summary(status="running", epoch=3)
    before = (w.path / "summary.json").read_text()

    def crash(src, dst):
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(run_files.os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        w.update_summary(status="completed", epoch=4)
    monkeypatch.undo()

    after = (w.path / "summary.json").read_text()
    assert after == before
    assert json.loads(after)["epoch"] == 3
    assert w.summary["epoch"] == 3  # the in-memory copy follows the file
    assert [p for p in os.listdir(w.path) if p.endswith(".tmp")] == []  # temp removed
    info = list_runs(tmp_path)[0]
    assert info.damaged is None and info.status == "running"


def test_summary_survives_sigkill_during_writes(tmp_path):
    """A real process killed while rewriting summary.json in a loop leaves valid JSON."""
    proc = run_python(
        f"""
        import sys
        from twophase.runs import RunWriter
        w = RunWriter({str(tmp_path)!r}, "20260101-000000-abcdef", {{"k": 1}})
        print("ready", flush=True)
        i = 0
        while True:
            i += 1
            w.update_summary(counter=i, payload="x" * 20000)
        """
    )
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        time.sleep(0.3)
        kill(proc)
    finally:
        reap(proc)
    run = load_run(tmp_path, "20260101-000000-abcdef")
    assert run.summary is not None and run.summary["counter"] >= 1
    assert run.summary["payload"] == "x" * 20000
    assert list_runs(tmp_path)[0].damaged is None


# --------------------------------------------------------------------------- damaged files


def test_truncated_metrics_csv(tmp_path):
    w = make_run(tmp_path, rows=4)
    w.update_summary(status="interrupted")
    p = w.path / "metrics.csv"
    data = p.read_bytes()
    p.write_bytes(data[: len(data) - 12])  # cut the last row in the middle

    info = list_runs(tmp_path)[0]
    assert info.damaged and "partial line" in info.damaged
    assert info.status == "interrupted"

    run = load_run(tmp_path, w.run_id)
    assert len(run.metrics) == 3
    assert list(run.metrics["epoch"]) == [1, 2, 3]
    assert any("partial line" in m for m in run.warnings)
    assert pd.api.types.is_numeric_dtype(run.metrics["train_loss"])


def test_row_being_written_in_a_live_run_is_left_out_without_calling_it_damage(tmp_path):
    w = make_run(tmp_path, rows=4)  # status running, owner alive: a reader may catch a row mid-write
    p = w.path / "metrics.csv"
    p.write_bytes(p.read_bytes()[:-12])
    assert list_runs(tmp_path)[0].damaged is None
    run = load_run(tmp_path, w.run_id)
    assert list(run.metrics["epoch"]) == [1, 2, 3] and run.warnings == []


def test_metrics_row_with_wrong_field_count_is_skipped(tmp_path):
    w = make_run(tmp_path, rows=2)
    with open(w.path / "metrics.csv", "a") as f:
        f.write("adam,3\n")
    w.append(record("adam", 4))
    run = load_run(tmp_path, w.run_id)
    assert list(run.metrics["epoch"]) == [1, 2, 4]
    assert any("line 4" in m for m in run.warnings)


def test_invalid_summary_json(tmp_path):
    good = make_run(tmp_path)
    bad = make_run(tmp_path)
    (bad.path / "summary.json").write_text('{"status": "runn')
    infos = {i.run_id: i for i in list_runs(tmp_path)}
    assert infos[good.run_id].damaged is None
    assert infos[bad.run_id].status == "damaged"
    assert "summary.json is not valid JSON" in infos[bad.run_id].damaged
    assert infos[bad.run_id].config == CONFIG
    run = load_run(tmp_path, bad.run_id)
    assert run.summary is None and run.status == "damaged" and len(run.metrics) == 3
    assert any("summary.json" in m for m in run.warnings)
    # other damage: unknown status, config not an object, missing files
    (good.path / "summary.json").write_text('{"status": "exploded"}')
    (good.path / "config.json").write_text("[1, 2]")
    (good.path / "metrics.csv").unlink()
    info = {i.run_id: i for i in list_runs(tmp_path)}[good.run_id]
    assert info.status == "damaged"
    for part in ("unknown status", "config.json does not hold a JSON object", "metrics.csv is missing"):
        assert part in info.damaged
    assert mark_interrupted(tmp_path) == []  # damaged summaries are left alone
    delete_run(tmp_path, bad.run_id)  # and can be deleted
    assert not bad.path.exists()


def test_stray_entries_never_crash_the_listing(tmp_path):
    w = make_run(tmp_path)
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "not-a-run").mkdir()
    (tmp_path / ".new-20260101-000000-abcdef-xyz").mkdir()  # a creation cut short
    (tmp_path / "20250101-000000-aaaaaa").write_text("a file named like a run")
    empty = tmp_path / "20250101-000000-bbbbbb"
    empty.mkdir()
    (tmp_path / "20250101-000000-cccccc").symlink_to(tmp_path / "missing-target")
    (tmp_path / "20250101-000000-dddddd").mkdir()
    (tmp_path / "20250101-000000-dddddd" / "summary.json").write_bytes(b"\xff\xfe\x00garbage")
    infos = {i.run_id: i for i in list_runs(tmp_path)}
    assert set(infos) == {w.run_id, "20250101-000000-aaaaaa", "20250101-000000-bbbbbb",
                          "20250101-000000-cccccc", "20250101-000000-dddddd"}
    assert infos[w.run_id].damaged is None
    for rid in ("20250101-000000-aaaaaa", "20250101-000000-bbbbbb", "20250101-000000-cccccc",
                "20250101-000000-dddddd"):
        assert infos[rid].damaged and infos[rid].status == "damaged", rid
    assert "summary.json is missing" in infos["20250101-000000-bbbbbb"].damaged
    assert list_runs(tmp_path / "does-not-exist") == []
    with pytest.raises(NotADirectoryError):
        list_runs(tmp_path / "notes.txt")


def test_list_runs_newest_first(tmp_path):
    ids = ["20240101-000000-000001", "20260101-000000-000000", "20250101-000000-ffffff"]
    for rid in ids:
        RunWriter(tmp_path, rid, CONFIG)
    assert [i.run_id for i in list_runs(tmp_path)] == sorted(ids, reverse=True)
    # same second: the one created later comes first
    a = RunWriter(tmp_path, "20270101-000000-ffffff", CONFIG)
    time.sleep(0.002)
    b = RunWriter(tmp_path, "20270101-000000-000000", CONFIG)
    assert [i.run_id for i in list_runs(tmp_path)][:2] == [b.run_id, a.run_id]


def test_partial_events_line(tmp_path):
    w = make_run(tmp_path)
    w.event({"kind": "peak", "epoch": 1, "value": 2.0})
    with open(w.path / "events.jsonl", "a") as f:
        f.write('{"kind": "swi')
    run = load_run(tmp_path, w.run_id)
    assert run.events == [{"kind": "peak", "epoch": 1, "value": 2.0}]
    assert any("events.jsonl" in m for m in run.warnings)


def test_load_missing_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="20260101-000000-abcdef"):
        load_run(tmp_path, "20260101-000000-abcdef")


# --------------------------------------------------------------------------- dead owners


def test_mark_interrupted_after_sigkill(tmp_path):
    """A real subprocess writes a running run, is SIGKILLed; the run becomes interrupted."""
    proc = run_python(
        f"""
        import time
        from twophase.runs import RunWriter, new_run_id
        w = RunWriter({str(tmp_path)!r}, new_run_id(), {{"model": "mlp"}})
        w.update_summary(arms={{"two-phase": {{"status": "running"}}, "adam": {{"status": "completed"}}}})
        for epoch in (1, 2, 3):
            w.append({{"arm": "two-phase", "epoch": epoch, "phase": "adam", "train_loss": 1.0 / epoch}})
        print(w.run_id, flush=True)
        time.sleep(60)
        """
    )
    try:
        run_id = proc.stdout.readline().strip()
        assert is_valid_run_id(run_id), proc.stderr.read()
        # while the owner lives, nothing is marked and deletion is refused
        assert mark_interrupted(tmp_path) == []
        assert list_runs(tmp_path)[0].status == "running"
        with pytest.raises(RuntimeError, match="stop it"):
            delete_run(tmp_path, run_id)
        kill(proc)
    finally:
        reap(proc)
    assert proc.returncode == -signal.SIGKILL

    # a reader sees at once that its process is gone; the file itself changes when it is marked
    seen = list_runs(tmp_path)[0]
    assert seen.status == "interrupted" and "no longer running" in seen.summary["interrupted_reason"]
    assert load_run(tmp_path, run_id).status == "interrupted"
    assert list_runs(tmp_path, raw=True)[0].status == "running"
    assert mark_interrupted(tmp_path) == [run_id]
    assert mark_interrupted(tmp_path) == []  # only once
    info = list_runs(tmp_path)[0]
    assert info.run_id == run_id and info.status == "interrupted" and info.damaged is None
    assert info.summary["ended"] and "no longer running" in info.summary["interrupted_reason"]
    # the dead arm's figures come from metrics.csv (its summary never had them), the others stay
    tp = info.summary["arms"]["two-phase"]
    assert tp["status"] == "interrupted" and tp["epochs"] == 3 and tp["figures_from"] == "metrics.csv"
    assert tp["train_loss"] == pytest.approx(1 / 3)
    assert info.summary["arms"]["adam"] == {"status": "completed"}
    run = load_run(tmp_path, run_id)
    assert run.warnings == []
    assert list(run.metrics["epoch"]) == [1, 2, 3]
    assert list(run.metrics["train_loss"]) == [1.0, 0.5, 1.0 / 3]
    delete_run(tmp_path, run_id)  # allowed now
    assert list_runs(tmp_path) == []


def test_mark_interrupted_pid_reuse_and_other_host(tmp_path):
    live = make_run(tmp_path)  # owned by this process: left alone
    reused = make_run(tmp_path)
    reused.update_summary(pid_start=(reused.summary["pid_start"] or 0) + 12345)  # same pid, other start
    foreign = make_run(tmp_path)
    foreign.update_summary(hostname="some-other-host")
    queued = RunWriter(tmp_path, new_run_id(), CONFIG, status="queued")
    queued.update_summary(pid=2**22 + 12345, pid_start=None)  # beyond pid_max: no such process
    done = make_run(tmp_path)
    done.update_summary(status="completed", pid=2**22 + 12345)
    changed = mark_interrupted(tmp_path)
    assert sorted(changed) == sorted([reused.run_id, foreign.run_id, queued.run_id])
    status = {i.run_id: i.status for i in list_runs(tmp_path)}
    assert status[live.run_id] == "running"
    assert status[done.run_id] == "completed"
    assert all(status[r] == "interrupted" for r in changed)


def test_mark_interrupted_with_live_run_ids(tmp_path):
    a = make_run(tmp_path)
    b = make_run(tmp_path)
    assert mark_interrupted(tmp_path, live_run_ids={a.run_id}) == [b.run_id]
    assert {i.run_id: i.status for i in list_runs(tmp_path)} == {a.run_id: "running", b.run_id: "interrupted"}


def test_delete_refused_while_running_then_allowed(tmp_path):
    w = make_run(tmp_path)
    with pytest.raises(RuntimeError, match=w.run_id):
        delete_run(tmp_path, w.run_id)
    q = RunWriter(tmp_path, new_run_id(), CONFIG, status="queued")
    with pytest.raises(RuntimeError, match="queued"):
        delete_run(tmp_path, q.run_id)
    assert w.path.is_dir() and q.path.is_dir()
    w.update_summary(status="stopped")
    delete_run(tmp_path, w.run_id)
    assert not w.path.exists()
    assert [i.run_id for i in list_runs(tmp_path)] == [q.run_id]
    assert [p for p in os.listdir(tmp_path) if p.startswith(".")] == []
    with pytest.raises(FileNotFoundError):
        delete_run(tmp_path, w.run_id)


def test_delete_symlinked_run_removes_only_the_link(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("keep")
    runs_path = tmp_path / "runs"
    runs_path.mkdir()
    (runs_path / "20260101-000000-abcdef").symlink_to(outside, target_is_directory=True)
    delete_run(runs_path, "20260101-000000-abcdef")
    assert (outside / "precious.txt").read_text() == "keep"
    assert os.listdir(runs_path) == []


# --------------------------------------------------------------------------- export


def test_export_all_formats(tmp_path):
    w = make_run(tmp_path / "runs", rows=3)
    w.append({"arm": "adam", "epoch": 1, "phase": "adam", "train_loss": float("nan")})
    w.event({"kind": "peak", "epoch": 2, "value": 3.0})
    w.update_summary(status="completed")
    out = tmp_path / "out"
    out.mkdir()
    original = load_run(tmp_path / "runs", w.run_id).metrics

    p = export_run(tmp_path / "runs", w.run_id, "csv", out)
    assert p == (out / f"{w.run_id}.csv").resolve()
    df = pd.read_csv(p)
    assert list(df.columns) == METRIC_COLUMNS and len(df) == 4
    assert df["train_loss"].tolist()[:3] == original["train_loss"].tolist()[:3]
    assert math.isnan(df["train_loss"].iloc[3])

    p = export_run(tmp_path / "runs", w.run_id, "parquet", out / "m.parquet")
    df = pd.read_parquet(p)
    assert list(df.columns) == METRIC_COLUMNS and len(df) == 4
    assert df["epoch"].tolist() == [1, 2, 3, 1]
    assert df["arm"].tolist() == ["two-phase"] * 3 + ["adam"]
    assert df["train_loss"].tolist()[:3] == original["train_loss"].tolist()[:3]

    p = export_run(tmp_path / "runs", w.run_id, "json", out / "run.json")
    doc = json.loads(p.read_text(), parse_constant=lambda c: pytest.fail(f"export has {c}"))
    assert doc["run_id"] == w.run_id and doc["config"] == CONFIG
    assert doc["summary"]["status"] == "completed"
    assert doc["events"] == [{"kind": "peak", "epoch": 2, "value": 3.0}]
    assert len(doc["metrics"]) == 4
    assert doc["metrics"][0]["epoch"] == 1 and doc["metrics"][0]["arm"] == "two-phase"
    assert doc["metrics"][3]["train_loss"] is None and doc["metrics"][3]["val_acc"] is None

    assert export_bytes(tmp_path / "runs", w.run_id, "csv") == (out / f"{w.run_id}.csv").read_bytes()
    with pytest.raises(ValueError, match="fmt.*csv, parquet, json"):
        export_bytes(tmp_path / "runs", w.run_id, "xlsx")
    with pytest.raises(FileNotFoundError):
        export_run(tmp_path / "runs", w.run_id, "csv", tmp_path / "no" / "such" / "x.csv")


def test_zip_runs(tmp_path):
    a = make_run(tmp_path)
    b = make_run(tmp_path)
    b.event({"kind": "peak", "epoch": 1, "value": 1.0})
    (a.path / ".summary.json.leftover.tmp").write_text("{")  # temp files stay out
    data = zip_runs(tmp_path, [a.run_id, b.run_id, a.run_id])
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = sorted(zf.namelist())
        files = ["config.json", "events.jsonl", "metrics.csv", "summary.json"]
        assert names == sorted(f"{r}/{f}" for r in (a.run_id, b.run_id) for f in files)
        assert zf.read(f"{a.run_id}/metrics.csv") == (a.path / "metrics.csv").read_bytes()
        assert json.loads(zf.read(f"{b.run_id}/summary.json"))["run_id"] == b.run_id
    with pytest.raises(ValueError, match="run_ids"):
        zip_runs(tmp_path, [])
    with pytest.raises(FileNotFoundError):
        zip_runs(tmp_path, ["20260101-000000-abcdef"])


def test_append_after_a_cut_short_write_drops_the_partial_tail(tmp_path):
    """A row cut short (full disk, crash) must not merge with the next row into a false one."""
    w = make_run(tmp_path, rows=2)
    with open(w.path / "metrics.csv", "a") as f:
        f.write("ada")  # no comma: merged with the next row it would look like a valid row
    with open(w.path / "events.jsonl", "a") as f:
        f.write('{"kind": "pe')
    w.append(record("adam", 3))
    w.event({"kind": "switch", "epoch": 3})
    run = load_run(tmp_path, w.run_id)
    assert run.warnings == []
    assert run.metrics["arm"].tolist() == ["two-phase", "two-phase", "adam"]
    assert run.events == [{"kind": "switch", "epoch": 3}]
    assert list_runs(tmp_path)[0].damaged is None


def test_clean_leftovers(tmp_path):
    w = make_run(tmp_path)
    old_new = tmp_path / ".new-20260101-000000-abcdef-k3j2"
    fresh_new = tmp_path / ".new-20260101-000000-abcdef-zz99"
    deleting = tmp_path / ".deleting-20250101-000000-abcdef-0a0b0c0d"
    other = tmp_path / ".hidden-keep"
    for d in (old_new, fresh_new, deleting, other):
        d.mkdir()
        (d / "f").write_text("x")
    past = time.time() - 3600
    os.utime(old_new, (past, past))
    assert sorted(runs.clean_leftovers(tmp_path)) == sorted([old_new.name, deleting.name])
    assert fresh_new.exists() and other.exists() and w.path.exists()
    mark_interrupted(tmp_path)  # runs it too, and keeps what is not a leftover
    assert fresh_new.exists() and other.exists() and w.path.exists()


def test_unwritable_runs_dir_raises_oserror(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(OSError):
        RunWriter(blocker / "runs", new_run_id(), CONFIG)
    assert blocker.read_text() == "not a folder"
