"""Fault class 5, disk trouble: a runs folder that cannot be written, and writes that fail in the
middle of a run (a full disk). The run ends `failed` with the reason shown, or, when not even
its folder can be made, nothing is started and the reason is shown; the app keeps serving.

The tests run as root, for whom chmod does not stop writes, so an unwritable runs folder is a
path under a regular file (mkdir fails with ENOTDIR, as on a read-only or missing mount), or
the runs folder itself being a regular file. A full disk is RunWriter's write raising
OSError(ENOSPC) after some rows; and, in `make soak` (it mounts a 2 MiB tmpfs, so it needs root),
a real one: the run folder holds a reserve (.reserve, 128 KiB) that is given back for the final
summary, and a row the disk cut short is taken back.

Already covered elsewhere: RunWriter refuses a runs folder under a file with OSError and
leaves nothing behind (tests/test_runs.py::test_unwritable_runs_dir_raises_oserror); a row
cut short by a failed write never merges with the next one
(tests/test_runs.py::test_append_after_a_cut_short_write_drops_the_partial_tail).
"""

from __future__ import annotations

import errno
import os

import pytest
from streamlit.testing.v1 import AppTest

from twophase import runs
from twophase.cli import main
from twophase.config import RunConfig
from twophase.jobs import JobManager

from test_app_pages import APP, TIMEOUT, set_tiny, status_of, table_with, wait_final


def tiny(data_root, **changes) -> RunConfig:
    base = dict(model="mlp", data_root=data_root, subset=256, val_subset=256, epochs=3, batch_size=64,
                switch_epoch=2, threads=1)
    base.update(changes)
    return RunConfig(**base)


def full_disk_after(monkeypatch, rows: int, method: str = "append"):
    """Make RunWriter.<method> raise OSError(ENOSPC) after `rows` successful calls."""
    real = getattr(runs.RunWriter, method)
    calls = {"n": 0}

    def failing(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > rows:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path / "metrics.csv"))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(runs.RunWriter, method, failing)
    return calls


def app_on(runs_dir, monkeypatch) -> AppTest:
    monkeypatch.setenv("TWOPHASE_RUNS", str(runs_dir))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_runs_folder_under_a_regular_file_starts_nothing_and_says_why(tmp_path, data_root, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    runs_dir = blocker / "runs"

    # the API: a clear OSError naming the folder; nothing registered; the manager keeps serving
    jobs = JobManager(str(runs_dir))
    with pytest.raises(OSError) as info:
        jobs.submit(tiny(data_root))
    assert info.value.errno == errno.ENOTDIR and str(runs_dir) in str(info.value)
    assert jobs.list() == [] and jobs.active() == []
    assert blocker.read_text() == "not a folder"

    # the app: an error next to Start, no traceback, every page still served
    at = app_on(runs_dir, monkeypatch)
    set_tiny(at)
    at.button(key="start").click().run()
    assert not at.exception, [e.value for e in at.exception]
    (message,) = [e.value for e in at.error]
    assert message.startswith("Nothing was started") and str(runs_dir) in message and "Not a directory" in message
    assert "run" not in at.query_params and status_of(at) is None
    at.switch_page("pages/runs.py").run()
    assert not at.exception and "No runs yet" in at.info[0].value
    at.switch_page("pages/compare.py").run()
    assert not at.exception and "No finished runs" in at.info[0].value


def test_runs_folder_that_is_a_regular_file_keeps_the_app_serving(tmp_path, monkeypatch):
    runs_file = tmp_path / "runs"
    runs_file.write_text("not a folder")
    JobManager(str(runs_file))  # startup (marking interrupted runs) does not fail on it
    at = app_on(runs_file, monkeypatch)
    at.switch_page("pages/runs.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("runs folder cannot be read" in e.value and "not a folder" in e.value for e in at.error)
    at.switch_page("pages/compare.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("runs folder cannot be read" in e.value for e in at.error)
    at.switch_page("pages/train.py").run()
    set_tiny(at)
    at.button(key="start").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(e.value.startswith("Nothing was started") for e in at.error)
    assert runs_file.read_text() == "not a folder"


def test_disk_full_mid_run_ends_the_run_failed_with_the_reason_and_the_app_keeps_serving(runs_dir, data_root,
                                                                                        monkeypatch):
    monkeypatch.setenv("TWOPHASE_JOBS", "thread")  # the fault is injected in this process
    at = app_on(runs_dir, monkeypatch)
    jobs = at.session_state["jobs"]
    assert jobs.mode == "thread"
    calls = full_disk_after(monkeypatch, rows=5)  # the header is written at creation; rows 1-5 fit
    set_tiny(at)
    at.text_input(key="cfg_threads").set_value("1")
    at.button(key="start").click().run()
    run_id = at.query_params["run"]
    assert wait_final(at, timeout=120) == "failed"
    assert calls["n"] == 6
    messages = " ".join(e.value for e in at.error)
    assert "No space left on device" in messages and "Traceback" not in messages

    # what is on disk is true: the 5 rows written, and a summary that says failed and why
    run = runs.load_run(runs_dir, run_id)
    assert run.warnings == [] and len(run.metrics) == 5
    assert run.summary["status"] == "failed" and "No space left on device" in run.summary["error"]
    assert {a["status"] for a in run.summary["arms"].values()} == {"failed"}
    snap = jobs.snapshot(run_id)
    assert snap.status == "failed" and "No space left on device" in snap.error

    # the disk has room again: the same app (same JobManager) trains the next run to the end
    monkeypatch.undo()
    monkeypatch.setenv("TWOPHASE_RUNS", str(runs_dir))
    at.button(key="start").click().run()
    assert not at.exception, [e.value for e in at.exception]
    second = at.query_params["run"]
    assert second != run_id and wait_final(at, timeout=120) == "completed"
    at.switch_page("pages/runs.py").run()
    table = table_with(at, "run", "status")
    assert dict(zip(table["run"], table["status"])) == {run_id: "failed", second: "completed"}


def test_summary_write_failing_at_the_end_ends_the_job_failed_with_the_reason(tmp_path, data_root, monkeypatch):
    real = runs.RunWriter.update_summary

    def failing(self, **fields):
        if fields.get("status") in runs.FINAL_STATUSES:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path / "summary.json"))
        return real(self, **fields)

    monkeypatch.setattr(runs.RunWriter, "update_summary", failing)
    jobs = JobManager(str(tmp_path), mode="thread")  # the fault is injected in this process
    run_id = jobs.submit(tiny(data_root))
    assert jobs.wait(run_id, 120) == "failed"
    snap = jobs.snapshot(run_id)
    assert snap.error.startswith("could not write summary.json") and "No space left on device" in snap.error
    assert len(snap.records) == 8
    run = runs.load_run(str(tmp_path), run_id)
    assert len(run.metrics) == 8 and run.warnings == []  # every epoch is there
    # the stale "running" on disk is this live process's: after a restart it reads `interrupted`
    assert run.summary["status"] == "running"
    monkeypatch.undo()
    assert runs.mark_interrupted(str(tmp_path), live_run_ids=[]) == [run_id]
    assert runs.load_run(str(tmp_path), run_id).summary["status"] == "interrupted"
    # and the manager keeps serving
    assert jobs.wait(jobs.submit(tiny(data_root)), 120) == "completed"


def test_cli_with_an_unwritable_runs_folder_exits_2_without_a_traceback(tmp_path, data_root, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    code_run = main(["run", "--model", "mlp", "--subset", "256", "--val-subset", "256", "--epochs", "1",
                     "--data-dir", data_root, "--runs-dir", str(blocker / "runs"), "--quiet", "--threads", "1"])
    code_list = main(["list", "--runs-dir", str(blocker)])
    assert (code_run, code_list) == (2, 2)
    assert "a-file" in capsys.readouterr().err


def fill(path, leave: int) -> None:
    """Fill the file system of `path` up to `leave` bytes free (a file of zeros named filler)."""
    fd = os.open(path / "filler", os.O_WRONLY | os.O_CREAT)
    written = 0
    try:
        while True:
            written += os.write(fd, bytes(1 << 16))
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    os.ftruncate(fd, max(0, written - leave))
    os.close(fd)


@pytest.mark.slow
def test_a_real_full_disk_ends_the_run_failed_with_whole_rows_and_the_reason(tmp_path, data_root):
    """M4 on a real file system (a 2 MiB tmpfs, so mounting needs root: `make soak` runs it): the
    kernel's ENOSPC mid-run, not a simulated one."""
    import subprocess

    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True, text=True)
    assert mounted.returncode == 0, f"this test mounts a small tmpfs and needs root: {mounted.stderr}"
    try:
        (disk / "runs").mkdir()
        fill(disk, leave=220_000)  # room for the run's start and a few hundred rows, then none
        code = main(["run", "--model", "mlp", "--subset", "256", "--val-subset", "100", "--epochs", "2000",
                     "--batch-size", "256", "--threads", "1", "--checkpoint-every", "0", "--data-dir", data_root,
                     "--runs-dir", str(disk / "runs"), "--quiet"])
        assert code == 1
        (info,) = runs.list_runs(str(disk / "runs"))
        assert info.damaged is None and info.status == "failed"  # on disk too, not left `running`
        assert "No space left on device" in info.summary["error"]
        run = runs.load_run(str(disk / "runs"), info.run_id)
        assert run.warnings == [] and len(run.metrics) > 100  # every whole row kept, no partial one
        assert (disk / "runs" / info.run_id / "metrics.csv").read_bytes().endswith(b"\n")
        assert not (disk / "runs" / info.run_id / ".reserve").exists()  # given back once the run ended
    finally:
        subprocess.run(["umount", str(disk)], check=False)
