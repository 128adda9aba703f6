"""The command line, run as a user runs it: `python -m twophase ...` in a subprocess."""

import json
import os
import re
import subprocess
import sys

import pytest

from twophase import runs
from twophase.cli import main


def cli(*args, env_extra=None, timeout=300):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "twophase", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_run_json_prints_a_parsable_summary_and_writes_the_run(data_root, tmp_path):
    out = cli("run", "--model", "mlp", "--dataset", "mnist", "--subset", "256", "--val-subset", "256",
              "--epochs", "3", "--batch-size", "64", "--switch-epoch", "2", "--data-dir", data_root,
              "--runs-dir", str(tmp_path), "--threads", "1", "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["status"] == "completed"
    assert set(summary["arms"]) == {"two-phase", "adam"}
    assert "epoch    3/3" in out.stdout and "switch" in out.stdout
    found = runs.list_runs(str(tmp_path))
    assert [r.run_id for r in found] == [summary["run_id"]]



def test_a_switch_sweep_trains_one_trunk_and_a_branch_per_point(data_root, tmp_path, capsys):
    assert main(["run", "--subset", "256", "--val-subset", "256", "--epochs", "6", "--switch-sweep", "2,50%,paper",
                 "--data-dir", data_root, "--runs-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    [info] = runs.list_runs(str(tmp_path))
    run = runs.load_run(str(tmp_path), info.run_id)
    assert run.config["arms"] == ["adam", "two-phase@2", "two-phase@50%", "two-phase@paper"]
    arms = run.summary["arms"]
    assert [arms[a]["switch_epoch"] for a in run.config["arms"][1:3]] == [2, 3]
    assert all(arms[a]["shared_epochs"] == arms[a]["switch_epoch"] for a in run.config["arms"][1:3])
    for label in ("two-phase (switch at 2): ", "two-phase (switch at 50%): "):
        line = next(l for l in out.splitlines() if l.strip().startswith(label))
        assert "at epoch 6" in line and "data passes" in line and " s" in line
    # an unreadable point names the flag and what it takes
    assert main(["run", "--switch-sweep", "3,later", "--runs-dir", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--switch-sweep" in err and "percentage" in err


def test_list_show_export(data_root, tmp_path, capsys):
    assert main(["run", "--model", "mlp", "--subset", "256", "--val-subset", "256", "--epochs", "2",
                 "--switch-epoch", "1", "--data-dir", data_root, "--runs-dir", str(tmp_path), "--quiet"]) == 0
    [info] = runs.list_runs(str(tmp_path))
    capsys.readouterr()
    assert main(["list", "--runs-dir", str(tmp_path)]) == 0
    assert info.run_id in capsys.readouterr().out
    assert main(["show", info.run_id, "--runs-dir", str(tmp_path)]) == 0
    shown = capsys.readouterr().out
    assert "train loss" in shown and "two-phase (switched at 1)" in shown and "completed" in shown
    assert "two-phase (switched at 1): " in shown and "at epoch 2" in shown and "data passes" in shown
    # a run of a fraction of a second says how long, not "at 0.0 s"
    seconds = float(re.search(r"at ([0-9.e+-]+) s\b", shown).group(1))
    assert seconds > 0 and "at 0.0 s" not in shown
    dest = tmp_path / "out.csv"
    assert main(["export", info.run_id, "--format", "csv", "-o", str(dest), "--runs-dir", str(tmp_path)]) == 0
    assert dest.read_text().startswith("arm,epoch,phase")
    for fmt in ("parquet", "json"):
        assert main(["export", info.run_id, "--format", fmt, "-o", str(tmp_path / f"out.{fmt}"),
                     "--runs-dir", str(tmp_path)]) == 0
        assert (tmp_path / f"out.{fmt}").stat().st_size > 0


def test_bad_tolerance_exits_2_naming_the_flag(tmp_path):
    out = cli("run", "--tolerance", "1.5", "--runs-dir", str(tmp_path))
    assert out.returncode == 2
    assert "--tolerance" in out.stderr and "(0, 1]" in out.stderr
    assert "Traceback" not in out.stderr
    assert runs.list_runs(str(tmp_path)) == []


@pytest.mark.parametrize("args, needle", [
    (["--epochs", "ten"], "--epochs"), (["--model", "resnet"], "--model"), (["--arms", "adam,sgd"], "--arms"),
    (["--subset", "99999999"], "--subset"), (["--lr", "nan"], "--lr"), (["--hessian-probe", "maybe"], "--hessian-probe"),
    (["--model-sizes", "embed_dim"], "--model-sizes"), (["--batch-size", "-1"], "--batch-size"),
])
def test_malformed_and_unknown_values_exit_2_naming_the_flag(tmp_path, capsys, args, needle):
    with pytest.raises(SystemExit) as exit_info:
        code = main(["run", *args, "--runs-dir", str(tmp_path)])
        raise SystemExit(code)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
    assert runs.list_runs(str(tmp_path)) == []


def test_show_rejects_a_path_as_run_id(tmp_path, capsys):
    assert main(["show", "../../etc", "--runs-dir", str(tmp_path)]) == 2
    assert "run_id" in capsys.readouterr().err


def test_a_bug_exits_1_with_a_short_message_and_the_traceback_in_a_log(tmp_path, capsys, monkeypatch):
    from twophase import cli

    def broken(args):
        raise KeyError("an internal key")

    monkeypatch.setattr(cli, "cmd_list", broken)
    assert main(["list", "--runs-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "KeyError" in err and "bug in twophase" in err and "Traceback" not in err
    log = err.rsplit("the traceback is in ", 1)[1].strip()
    text = open(log).read()
    assert "Traceback" in text and "an internal key" in text and "python -m twophase" in text


def test_user_mistakes_exit_2_naming_what_is_wrong(tmp_path, capsys):
    assert main(["show", "not-an-id", "--runs-dir", str(tmp_path)]) == 2
    assert "run_id" in capsys.readouterr().err
    assert main(["show", "20260101-000000-abcdef", "--runs-dir", str(tmp_path)]) == 2
    assert "is not in" in capsys.readouterr().err
    assert main(["export", "20260101-000000-abcdef", "--runs-dir", str(tmp_path), "-o", str(tmp_path / "x.csv")]) == 2
    assert not (tmp_path / "x.csv").exists()


def test_a_missing_dataset_is_refused_before_a_run_folder_is_made(tmp_path, capsys):
    data = tmp_path / "empty-data"
    data.mkdir()
    assert main(["run", "--dataset", "cifar10", "--data-dir", str(data), "--runs-dir", str(tmp_path / "runs"),
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "CIFAR-10" in err or "cifar" in err.lower()
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_failed_run_says_why_on_stderr_even_with_quiet(data_root, tmp_path, capsys, monkeypatch):
    from twophase.training import trainer

    def explode(self, *args, **kwargs):
        raise RuntimeError("the disk said no")

    monkeypatch.setattr(trainer.Trainer, "train_epoch", explode)
    assert main(["run", "--subset", "256", "--val-subset", "256", "--epochs", "1", "--data-dir", data_root,
                 "--runs-dir", str(tmp_path), "--quiet"]) == 1
    captured = capsys.readouterr()
    assert "the disk said no" in captured.err and captured.out == ""
