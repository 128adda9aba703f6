"""Round-2 defects of the run folder, the readers and the CLI's files (issue: reliability, round 2).

Each test names its defect: M2 export onto a special file, M3 one bad metrics line, M5 file
descriptors of worker processes, M7 a dead process's run read as running, L2 a deeply nested
summary, L3/L4 --config and run files read without bounds, L11 a stale summary after kill -9,
L14 a metrics.csv linked outside the run folder, L15 arm names as Plotly rich text.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from twophase import plots, runs
from twophase.cli import main
from twophase.runs import RunWriter

ROOT = Path(__file__).resolve().parent.parent
CONFIG = {"model": "mlp", "arms": ["two-phase", "adam"], "epochs": 3}


def run_with_rows(tmp_path, rows=3, run_id="20260101-000000-00a001", status="completed") -> Path:
    w = RunWriter(str(tmp_path), run_id, CONFIG)
    for epoch in range(rows):
        w.append({"arm": "adam", "epoch": epoch, "phase": "adam", "train_loss": 1.0 / (epoch + 1)})
    w.update_summary(status=status, arms={"adam": {"status": status, "epochs": rows - 1}})
    return w.path


# ----------------------------------------------------------------------------- M2
def test_m2_export_refuses_a_special_file_and_writes_to_standard_output_with_dash(tmp_path, capsys):
    run_with_rows(tmp_path)
    fifo = tmp_path / "a-fifo"
    os.mkfifo(fifo)
    assert main(["export", "20260101-000000-00a001", "--runs-dir", str(tmp_path), "-o", str(fifo)]) == 2
    assert "not a regular file" in capsys.readouterr().err and fifo.exists() and not fifo.is_file()
    assert main(["export", "20260101-000000-00a001", "--runs-dir", str(tmp_path), "-o", "/dev/stdout"]) == 2
    assert "- for standard output" in capsys.readouterr().err
    proc = subprocess.run([sys.executable, "-m", "twophase", "export", "20260101-000000-00a001", "--runs-dir",
                           str(tmp_path), "-o", "-"], capture_output=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0 and proc.stdout.decode().startswith("arm,epoch,phase")


# ----------------------------------------------------------------------------- M3
@pytest.mark.parametrize("bad", ["adam,\r1,adam,0.5", "adam,9,adam," + "9" * (130 * 1024)])
def test_m3_one_bad_metrics_line_drops_only_that_line_and_is_flagged(tmp_path, bad):
    path = run_with_rows(tmp_path, rows=4)
    lines = (path / "metrics.csv").read_text().split("\n")
    lines.insert(3, bad)  # between good rows
    (path / "metrics.csv").write_text("\n".join(lines), newline="")
    run = runs.load_run(str(tmp_path), "20260101-000000-00a001")
    assert list(run.metrics["epoch"]) == [0, 1, 2, 3]  # every good row, before and after it
    assert any("line 4 is damaged" in w for w in run.warnings), run.warnings
    assert not any("no header line" in w for w in run.warnings)
    [info] = runs.list_runs(str(tmp_path))
    assert info.damaged and "line 4" in info.damaged


# ----------------------------------------------------------------------------- M7, L11
def dead_owner(path: Path, epochs_in_summary: int) -> None:
    summary = json.loads((path / "summary.json").read_text())
    summary.update(status="running", pid=2 ** 22 + 7, pid_start=1,
                   arms={"adam": {"status": "running", "epochs": epochs_in_summary, "train_loss": 1.0}})
    (path / "summary.json").write_text(json.dumps(summary))


def test_m7_l11_a_run_whose_process_died_reads_as_interrupted_with_the_figures_of_its_metrics(tmp_path, capsys):
    path = run_with_rows(tmp_path, rows=6)
    dead_owner(path, epochs_in_summary=2)  # killed: its summary dates from epoch 2, metrics go to 5
    run = runs.load_run(str(tmp_path), "20260101-000000-00a001")
    assert run.status == "interrupted" and "no longer running" in run.summary["interrupted_reason"]
    arm = run.summary["arms"]["adam"]
    assert arm["status"] == "interrupted" and arm["epochs"] == 5 and arm["train_loss"] == pytest.approx(1 / 6)
    assert arm["figures_from"] == "metrics.csv"
    assert main(["show", "20260101-000000-00a001", "--runs-dir", str(tmp_path)]) == 0
    assert "interrupted" in capsys.readouterr().out
    runs.delete_run(str(tmp_path), "20260101-000000-00a001")  # a dead run can be cleaned up
    assert runs.list_runs(str(tmp_path)) == []


# ----------------------------------------------------------------------------- L2, L4, L14
def test_l2_a_deeply_nested_summary_is_damage_not_a_recursion_error(tmp_path, capsys):
    path = run_with_rows(tmp_path)
    (path / "summary.json").write_text("[" * 200_000 + "]" * 200_000)
    run = runs.load_run(str(tmp_path), "20260101-000000-00a001")
    assert run.summary is None and any("nested too deeply" in w for w in run.warnings)
    assert runs.list_runs(str(tmp_path))[0].status == "damaged"
    assert main(["show", "20260101-000000-00a001", "--runs-dir", str(tmp_path)]) == 0
    assert "Traceback" not in capsys.readouterr().err


def test_l4_l14_run_files_that_are_links_or_devices_are_not_followed(tmp_path):
    path = run_with_rows(tmp_path)
    (path / "summary.json").unlink()
    (path / "summary.json").symlink_to("/dev/zero")
    (path / "metrics.csv").unlink()
    secret = tmp_path / "outside.csv"
    secret.write_text("arm,epoch\nsecret,1\n")
    (path / "metrics.csv").symlink_to(secret)
    run = runs.load_run(str(tmp_path), "20260101-000000-00a001")
    assert run.summary is None and len(run.metrics) == 0
    assert any("symbolic link" in w for w in run.warnings)
    assert b"secret" not in runs.export_bytes(str(tmp_path), "20260101-000000-00a001", "csv")
    assert "symbolic link" in runs.list_runs(str(tmp_path))[0].damaged


def test_l3_l4_config_files_are_read_with_bounds_and_named(tmp_path, capsys):
    for content, needle in ((None, "not a regular file"), ("[" * 100_000, "nested too deeply"),
                            (b"\xff\xfe", "could not read"), ('{"epochs": ' + "9" * 5000 + "}", "not valid JSON")):
        if content is None:
            path = "/dev/zero"
        else:
            path = tmp_path / "config.json"
            path.write_bytes(content if isinstance(content, bytes) else content.encode())
        assert main(["run", "--config", str(path), "--runs-dir", str(tmp_path / "runs"), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert "--config" in err and needle in err and str(path) in err, err
    assert not (tmp_path / "runs").exists()


# ----------------------------------------------------------------------------- L15
def test_l15_arm_and_run_names_are_text_in_legends():
    import pandas as pd

    assert plots.arm_label("<b>x</b>") == "&lt;b&gt;x&lt;/b&gt;"
    frame = pd.DataFrame({"arm": ["<b>x</b>"], "epoch": [1], "train_loss": [0.5], "data_passes": [1.0]})
    fig = plots.compare_figure([("<i>run</i>", "<b>x</b>", frame)])
    assert "<" not in fig.data[0].name and "&lt;i&gt;run" in fig.data[0].name


# ----------------------------------------------------------------------------- M5
def test_m5_finished_workers_leave_no_file_descriptors_behind(tmp_path, data_root):
    from twophase.config import RunConfig
    from twophase.jobs import JobManager

    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    jobs = JobManager(str(tmp_path), mode="process")
    config = RunConfig(model="mlp", subset=64, val_subset=64, epochs=1, batch_size=32, data_root=data_root,
                       threads=1, arms=["adam"])
    jobs.wait(jobs.submit(config), 120)  # the first run opens what stays open (imports, caches)
    baseline = open_fds()
    for _ in range(4):
        assert jobs.wait(jobs.submit(config), 120) == "completed"
    assert open_fds() <= baseline  # before the fix: 3 more per run (two pipes and the worker's log)


# ----------------------------------------------------------------------------- found after the round-2 fixes
def test_l11_the_listing_and_mark_interrupted_take_a_dead_runs_figures_from_its_metrics(tmp_path):
    # the Runs page and `list` read list_runs: after kill -9 they showed the summary's epoch 2 and
    # loss 1.0 while metrics.csv held epoch 5; mark_interrupted then wrote those stale figures down
    path = run_with_rows(tmp_path, rows=6)
    dead_owner(path, epochs_in_summary=2)
    [info] = runs.list_runs(str(tmp_path))
    assert info.status == "interrupted"
    assert info.summary["arms"]["adam"]["epochs"] == 5 and info.summary["arms"]["adam"]["train_loss"] == pytest.approx(1 / 6)
    assert runs.mark_interrupted(str(tmp_path)) == ["20260101-000000-00a001"]
    on_disk = json.loads((path / "summary.json").read_text())
    assert on_disk["status"] == "interrupted" and on_disk["arms"]["adam"]["epochs"] == 5
    assert on_disk["arms"]["adam"]["figures_from"] == "metrics.csv"


def test_l4_l14_events_jsonl_is_read_bounded_and_never_through_a_link(tmp_path, capsys):
    path = run_with_rows(tmp_path)
    secret = tmp_path / "outside.jsonl"
    secret.write_text('{"arm": "adam", "kind": "secret", "epoch": 1}\n')
    (path / "events.jsonl").unlink(missing_ok=True)
    (path / "events.jsonl").symlink_to(secret)
    run = runs.load_run(str(tmp_path), "20260101-000000-00a001")
    assert run.events == [] and any("events.jsonl" in w and "symbolic link" in w for w in run.warnings)
    assert main(["export", "20260101-000000-00a001", "--runs-dir", str(tmp_path), "--format", "json",
                 "-o", str(tmp_path / "out.json")]) == 0
    assert "secret" not in (tmp_path / "out.json").read_text()
    (path / "events.jsonl").unlink()
    (path / "events.jsonl").symlink_to("/dev/zero")  # unbounded before: grew without end
    assert runs.load_run(str(tmp_path), "20260101-000000-00a001").events == []


def test_l4_a_fifo_in_place_of_a_run_file_is_refused_and_never_blocks_the_listing(tmp_path):
    import threading

    path = run_with_rows(tmp_path)
    for name in ("metrics.csv", "events.jsonl"):
        (path / name).unlink(missing_ok=True)
        os.mkfifo(path / name)  # opening a FIFO for reading blocks until a writer comes
    result = {}
    reader = threading.Thread(target=lambda: result.update(
        infos=runs.list_runs(str(tmp_path)), run=runs.load_run(str(tmp_path), "20260101-000000-00a001")),
        daemon=True)
    reader.start()
    reader.join(30)
    assert not reader.is_alive(), "list_runs / load_run blocked on a FIFO"
    [info] = result["infos"]
    assert "metrics.csv cannot be read: it is not a regular file" in info.damaged
    assert any("events.jsonl cannot be read: it is not a regular file" in w for w in result["run"].warnings)


@pytest.mark.parametrize("depth", [900, 5_000])
def test_l2_json_nested_deeper_than_the_limit_is_refused_so_no_export_meets_a_recursion_error(tmp_path, capsys, depth):
    # 900 levels parsed (under the parser's recursion limit) and then broke `export --format json`
    # with a RecursionError reported as a bug (exit 1)
    path = run_with_rows(tmp_path)
    summary = json.loads((path / "summary.json").read_text())
    (path / "summary.json").write_text(json.dumps(summary)[:-1] + ', "deep": ' + "[" * depth + "]" * depth + "}")
    with open(path / "events.jsonl", "a") as fh:
        fh.write('{"arm": "adam", "kind": "peak", "epoch": 1, "x": ' + "[" * depth + "]" * depth + "}\n")
    run = runs.load_run(str(tmp_path), "20260101-000000-00a001")
    assert run.summary is None and any("summary.json is nested too deeply" in w for w in run.warnings)
    assert run.events == [] and any("events.jsonl line 1 is nested too deeply" in w for w in run.warnings)
    code = main(["export", "20260101-000000-00a001", "--runs-dir", str(tmp_path), "--format", "json",
                 "-o", str(tmp_path / "out.json")])
    err = capsys.readouterr().err
    assert code == 0 and "RecursionError" not in err and "bug" not in err
    assert json.loads((tmp_path / "out.json").read_text())


def test_l6_a_read_only_output_and_a_closed_pipe_are_reported_as_what_they_are(tmp_path, capsys):
    # every OSError read "runs folder ...", and a read-only -o target was named by its hidden temp file
    run_with_rows(tmp_path)
    for target in ("/sys/m.csv", "/proc/m.csv"):  # folders nobody may create files in, not even root
        code = main(["export", "20260101-000000-00a001", "--runs-dir", str(tmp_path), "-o", target])
        err = capsys.readouterr().err
        assert code == 2 and f"--output: {target} cannot be written" in err and ".tmp" not in err, err
        assert "runs folder" not in err
    # `export -o - | head`: the reader closes the pipe long before the 1 MB are written
    path = tmp_path / "20260101-000000-00a001"
    header = (path / "metrics.csv").read_text().splitlines()[0].split(",")
    with open(path / "metrics.csv", "a") as fh:
        for epoch in range(3, 20_000):
            fh.write(",".join({"arm": "adam", "epoch": str(epoch), "phase": "adam"}.get(c, "0.5") for c in header) + "\n")
    command = f"{sys.executable} -m twophase export 20260101-000000-00a001 --runs-dir {tmp_path} -o - | head -n 1"
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)  # pipefail: the exit status is twophase's, not head's
    assert proc.returncode == 0 and len(proc.stdout.splitlines()) == 1
    assert "Traceback" not in proc.stderr and "bug" not in proc.stderr and "Errno" not in proc.stderr, proc.stderr
