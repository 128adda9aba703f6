"""Several processes (torchrun, gloo on CPU): same results as one process, crashes, the app's jobs.

The multi-process tests start real `python -m torch.distributed.run --nproc-per-node=2`
subprocesses; the one-process references run in this process.

How two processes are compared with one (`assert_same_run`):
- Exactly: arms, epochs, phases, switch epochs and events, statuses, sample counts, and every
  record of the Adam phase (and epoch 0) to 1e-5 relative: two shards only change the order
  of a few float32 sums there (observed: 1e-7).
- After a CG or L-BFGS step there is no fixed tolerance that is both meaningful and stable. A
  line search finds the minimiser of a float32 loss along a line only to about
  sqrt(float32 eps) = 3e-4, and its accept/reject decisions amplify any change of summation
  order: measured in one process on this test's config, changing only the chunk size of the
  full-set passes moved the gradient norm after CG by 2e-5 (chunks of 100), 1.5e-4 (64) and
  2.9e-2 (151, the shard size), and the two-process run by 3.5e-4 on an AMD EPYC machine and by
  2.9e-2 on an Intel Xeon one. So the test measures that spread itself: it reruns the one-process
  reference with several chunk sizes (`summation_spread`) and requires each second-phase figure
  of the two-process run, counters included, to lie within SPREAD_FACTOR x the largest
  deviation any of those reruns showed (plus 1e-5 relative). A bug in the sharding (a wrong
  scale, a missing all-reduce) shows in the Adam phase, which is held to 1e-5, or as a
  deviation far outside what summation order explains.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest
import torch

from twophase import distributed, runs
from twophase.jobs import launcher
from twophase.cli import main as cli_main
from twophase.config import RunConfig
from twophase.errors import ConfigError
from twophase.training.run import run_experiment
from twophase.jobs import JobManager

FIRST_PHASE = ("init", "adam")
FIRST_PHASE_RTOL = 1e-5
# chunk sizes of the one-process reruns that measure how far summation order alone moves the
# second phase; 151 and 150 are the two shards' sizes of the 301-sample set
SPREAD_CHUNKS = (37, 64, 100, 128, 150, 151, 200, 256)
SPREAD_FACTOR = 2.0
FIGURES = ["train_loss", "val_loss", "grad_norm", "grad_norm_max", "train_acc", "val_acc", "data_passes",
           "loss_evals"]
LAUNCH_TIMEOUT = 240


def settings(data_root, **changes) -> dict:
    base = dict(model="mlp", dataset="mnist", data_root=data_root, subset=301, val_subset=101, epochs=4,
                batch_size=64, switch_epoch=2, seed=3, threads=1)
    base.update(changes)
    return base


def config_args(values: dict) -> list[str]:
    """RunConfig fields as `twophase run` flags."""
    out = []
    for key, value in values.items():
        text = ",".join(value) if isinstance(value, list) else str(value).lower() if isinstance(value, bool) \
            else str(value)
        out += ["--" + key.replace("_", "-"), text]
    return out


def torchrun(cli_args: list[str], processes: int = 2) -> subprocess.Popen:
    """`torchrun --nproc-per-node=processes -m twophase <cli_args>`, its output piped."""
    return subprocess.Popen(launcher.torchrun_command(processes, cli_args), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)


def run_two_processes(values: dict, runs_dir, run_id: str) -> runs.Run:
    proc = torchrun(["run", *config_args(values), "--runs-dir", str(runs_dir), "--run-id", run_id, "--quiet"])
    try:
        output, _ = proc.communicate(timeout=LAUNCH_TIMEOUT)
    finally:
        launcher.terminate(proc, grace_s=5, term_s=5)
    assert proc.returncode == 0, output.decode(errors="replace")[-4000:]
    return runs.load_run(str(runs_dir), run_id)


def run_one_process(values: dict, runs_dir, run_id: str, chunk: int | None = None) -> runs.Run:
    """The run in this process; chunk: the full-set passes' chunk size instead of the model's."""
    threads = torch.get_num_threads()
    try:
        summary = run_experiment(RunConfig(**values), str(runs_dir), run_id, full_pass_chunk=chunk)
    finally:
        torch.set_num_threads(threads)
    assert summary["status"] == "completed", summary
    return runs.load_run(str(runs_dir), run_id)


def summation_spread(values: dict, reference: runs.Run, runs_dir) -> dict[str, float]:
    """Per figure, the largest absolute deviation from `reference` over its second-phase rows
    when one process only changes the chunking (the summation order) of its full-set passes."""
    a = reference.metrics
    second = ~a["phase"].isin(FIRST_PHASE).to_numpy()
    columns = FIGURES + [c for c in ("hess_min", "hess_max") if c in a.columns]
    spread = {column: 0.0 for column in columns}
    for i, chunk in enumerate(SPREAD_CHUNKS):
        b = run_one_process(values, runs_dir, f"20260101-000000-5{i:05x}", chunk=chunk).metrics
        assert b["phase"].tolist() == a["phase"].tolist()
        for column in columns:
            deviation = np.abs(b[column].to_numpy(float)[second] - a[column].to_numpy(float)[second])
            if np.isfinite(deviation).any():  # (epochs without a probe have none)
                spread[column] = max(spread[column], float(np.nanmax(deviation)))
    return spread


def assert_same_run(one: runs.Run, two: runs.Run, spread: dict[str, float] | None = None) -> None:
    """See the module docstring. spread: summation_spread's figures (None: the second phase must
    agree as tightly as the first, e.g. when it runs in float64)."""
    a, b = one.metrics, two.metrics
    assert len(a) == len(b) > 0
    assert a["arm"].tolist() == b["arm"].tolist()
    assert a["epoch"].tolist() == b["epoch"].tolist()
    assert a["phase"].tolist() == b["phase"].tolist()
    first = a["phase"].isin(FIRST_PHASE).to_numpy()
    assert first.any() and (~first).any()
    n_train, n_val = one.summary["train_samples"], one.summary["val_samples"]
    columns = FIGURES + [c for c in ("hess_min", "hess_max") if c in a.columns]
    for column in columns:
        x, y = a[column].to_numpy(float), b[column].to_numpy(float)
        np.testing.assert_allclose(y[first], x[first], rtol=FIRST_PHASE_RTOL, atol=0, err_msg=column, equal_nan=True)
        allowed = FIRST_PHASE_RTOL * np.abs(x[~first])
        if spread is not None and column in spread:
            allowed = allowed + SPREAD_FACTOR * spread[column]
        both_missing = np.isnan(x[~first]) & np.isnan(y[~first])  # e.g. epochs without a probe
        excess = np.where(both_missing, 0.0, np.abs(y[~first] - x[~first]) - allowed)
        assert (excess <= 0).all(), (
            f"{column} after the switch: two processes {y[~first].tolist()}, one process {x[~first].tolist()}; "
            f"allowed deviation {allowed.tolist()} (summation-order spread {spread and spread.get(column)})")
    # accuracies: identical in the first phase
    np.testing.assert_array_equal(b["train_acc"][first], a["train_acc"][first])
    np.testing.assert_array_equal(b["val_acc"][first], a["val_acc"][first])
    assert [(e["arm"], e["kind"], e["epoch"]) for e in one.events] == \
        [(e["arm"], e["kind"], e["epoch"]) for e in two.events]
    for arm, figures in one.summary["arms"].items():
        assert two.summary["arms"][arm].get("switch_epoch") == figures.get("switch_epoch")
        assert two.summary["arms"][arm]["status"] == figures["status"] == "completed"
    assert two.summary["processes"] == 2 and two.summary["backend"] == "gloo"
    assert two.config["processes"] == 2 and one.config["processes"] == 1
    assert (two.summary["train_samples"], two.summary["val_samples"]) == (n_train, n_val)


# ----------------------------------------------------------------------------- 2 processes = 1 process


def test_a_job_with_two_processes_completes_like_one_process_with_a_fixed_switch(data_root, tmp_path):
    # The app's way: JobManager launches torchrun and follows the run folder rank 0 writes.
    # 301 training samples: shards of 151 and 150; the last mini-batch holds 45 (23 + 22).
    values = settings(data_root, arms=["two-phase", "adam"])
    one = run_one_process(values, tmp_path / "one", "20260101-000000-000001")
    jobs = JobManager(str(tmp_path / "two"))
    run_id = jobs.submit(RunConfig(**values, processes=2))
    assert jobs.wait(run_id, LAUNCH_TIMEOUT) == "completed", jobs.snapshot(run_id).error
    two = runs.load_run(str(tmp_path / "two"), run_id)
    assert_same_run(one, two, summation_spread(values, one, tmp_path / "spread"))
    assert one.summary["arms"]["two-phase"]["switch_epoch"] == 2
    assert len(list((tmp_path / "two").iterdir())) == 1  # one run folder, written by rank 0 alone
    snap = jobs.snapshot(run_id)
    assert snap.finished and snap.error is None
    assert len(snap.records) == 2 * (4 + 1)
    assert snap.records == two.metrics.to_dict("records")
    assert snap.progress == {"two-phase": 1.0, "adam": 1.0}
    assert [(e["kind"], e["epoch"]) for e in snap.events] == [("peak", 2), ("switch", 2)]
    assert snap.summary["status"] == "completed"


def test_two_processes_match_one_process_with_the_adaptive_rule_and_every_second_phase(data_root, tmp_path):
    # The paper's rule (tolerance 0.95 here), the L-BFGS and CG-only arms, float64 CG, the Hessian probe.
    values = settings(data_root, arms=["two-phase", "adam-lbfgs", "cg"], switch_epoch=None, tolerance=0.95,
                      lr=3e-3, seed=1, subset=300, cg_dtype="float64", hessian_probe=True, probe_every=1)
    one = run_one_process(values, tmp_path / "one", "20260101-000000-000003")
    two = run_two_processes(values, tmp_path / "two", "20260101-000000-000004")
    switch = one.summary["arms"]["two-phase"]["switch_epoch"]
    assert switch is not None and switch < values["epochs"]  # the rule fired, CG ran
    assert_same_run(one, two, summation_spread(values, one, tmp_path / "spread"))


# ----------------------------------------------------------------------------- a process dies


def _rank_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            env = dict(item.split(b"=", 1) for item in fh.read().split(b"\0") if b"=" in item)
        return int(env[b"RANK"])
    except (OSError, KeyError, ValueError):
        return None


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the worker processes through /proc (Linux)")
def test_a_killed_process_ends_the_run_failed_and_stops_the_other(data_root, tmp_path):
    run_id = "20260101-000000-00dead"
    values = settings(data_root, subset=256, epochs=10000, batch_size=16, switch_epoch=None)
    proc = torchrun(["run", *config_args(values), "--runs-dir", str(tmp_path), "--run-id", run_id, "--quiet"])
    try:
        metrics = tmp_path / run_id / "metrics.csv"
        deadline = time.time() + LAUNCH_TIMEOUT
        while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 4):  # header + 3 records
            assert proc.poll() is None, proc.stdout.read().decode(errors="replace")[-4000:]
            assert time.time() < deadline, "the processes never wrote their first epochs"
            time.sleep(0.1)
        workers = {_rank_of(pid): pid for pid in launcher.children(proc.pid)}
        assert set(workers) == {0, 1}
        os.kill(workers[1], signal.SIGKILL)
        output, _ = proc.communicate(timeout=60)
    finally:
        launcher.terminate(proc, grace_s=5, term_s=5)
    assert proc.returncode != 0
    assert not os.path.exists(f"/proc/{workers[0]}")  # the surviving process ended too
    summary = runs.load_run(str(tmp_path), run_id).summary
    assert summary["status"] == "failed", output.decode(errors="replace")[-4000:]
    assert "another process of this 2-process run ended" in summary["error"]
    assert {arm["status"] for arm in summary["arms"].values()} == {"failed"}


# ----------------------------------------------------------------------------- the app's jobs


def test_stopping_a_job_with_two_processes_ends_it_stopped(data_root, tmp_path):
    jobs = JobManager(str(tmp_path))
    run_id = jobs.submit(RunConfig(**settings(data_root, subset=256, epochs=10000, batch_size=16,
                                              switch_epoch=None, processes=2)))
    deadline = time.time() + LAUNCH_TIMEOUT
    while len(jobs.snapshot(run_id).records) < 3:
        assert not jobs.snapshot(run_id).finished, jobs.snapshot(run_id).error
        assert time.time() < deadline, "the processes never wrote their first epochs"
        time.sleep(0.1)
    assert jobs.status(run_id) == "running"
    assert jobs.stop(run_id)
    assert jobs.wait(run_id, 90) == "stopped"
    run = runs.load_run(str(tmp_path), run_id)
    assert run.summary["status"] == "stopped" and run.summary["error"] is None
    assert len(run.metrics) >= 3
    assert jobs.snapshot(run_id).status == "stopped"


# ----------------------------------------------------------------------------- pieces, in this process


def test_shares_of_a_mini_batch_average_to_its_mean_loss():
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 3)
    x, y = torch.randn(11, 5), torch.randint(0, 3, (11,))
    loss_fn = torch.nn.functional.cross_entropy
    for batch in (torch.tensor([7, 2, 9, 4, 0, 5]), torch.tensor([10]), torch.tensor([3, 6])):
        expected = torch.autograd.grad(loss_fn(model(x[batch]), y[batch]), list(model.parameters()))
        world = 3
        grads = [torch.zeros_like(p) for p in model.parameters()]
        for rank in range(world):
            dist = distributed.Dist(rank=rank, world=world, local_rank=rank, device="cpu", backend="gloo")
            share = dist.batch_loss(model, loss_fn, dist.shard(x), dist.shard(y), batch)
            for g, part in zip(grads, torch.autograd.grad(share, list(model.parameters()))):
                g += part / world  # what DDP's averaging does
        for g, e in zip(grads, expected):
            torch.testing.assert_close(g, e, rtol=1e-6, atol=1e-7)


def test_shards_split_both_sets_and_refuse_more_processes_than_samples():
    from twophase.data import Dataset

    data = Dataset(train_x=torch.arange(5.0).view(5, 1, 1, 1), train_y=torch.arange(5), val_x=torch.zeros(3, 1, 1, 1),
                   val_y=torch.arange(3), num_classes=5, input_shape=(1, 1, 1), class_names=list("abcde"),
                   name="toy")
    dist = distributed.Dist(rank=1, world=2, local_rank=1, device="cpu", backend="gloo")
    shard = distributed.shard_dataset(data, dist)
    assert shard.train_y.tolist() == [1, 3] and shard.val_y.tolist() == [1]
    assert data.train_y.tolist() == [0, 1, 2, 3, 4]  # the original is untouched
    with pytest.raises(Exception, match="cannot be split over 6 processes"):
        distributed.shard_dataset(data, distributed.Dist(rank=0, world=6, local_rank=0, device="cpu",
                                                         backend="gloo"))


def test_one_process_needs_no_process_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not distributed.launched() and distributed.init_from_env("auto") is None
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed.init_from_env("cpu") is None


def test_tf32_is_off_inside_the_cg_block_and_restored_after():
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cudnn.allow_tf32 = True
    try:
        with distributed.no_tf32():
            assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        assert torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_processes_field_is_validated():
    RunConfig(processes=4).validate()
    for value, needle in ((0, "from 1"), (2.0, "whole number"), (True, "whole number")):
        with pytest.raises(ConfigError) as info:
            RunConfig(processes=value).validate()
        assert needle in info.value.errors["processes"]
    with pytest.raises(ConfigError) as info:
        RunConfig(processes=8, subset=5).validate()
    assert "at least one training sample" in info.value.errors["processes"]


def test_cli_run_id_and_processes_errors(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    base = ["run", "--runs-dir", str(tmp_path), "--epochs", "1", "--quiet"]
    assert cli_main(base + ["--run-id", "not-an-id"]) == 2
    assert "--run-id" in capsys.readouterr().err
    (tmp_path / "20260101-000000-0000aa").mkdir()
    assert cli_main(base + ["--run-id", "20260101-000000-0000aa"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert cli_main(base + ["--processes", "2"]) == 2
    err = capsys.readouterr().err
    assert "--processes" in err and "torchrun --nproc-per-node=2 -m twophase run" in err
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert cli_main(base + ["--processes", "3"]) == 2
    assert "torchrun started 2 processes" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [tmp_path / "20260101-000000-0000aa"]  # nothing written


def test_a_surviving_process_can_end_a_run_whose_writer_died(tmp_path):
    writer = runs.RunWriter(str(tmp_path), "20260101-000000-0000bb", {"model": "mlp"})
    writer.update_summary(arms={"adam": {"status": "running"}})
    assert runs.mark_ended(str(tmp_path), "20260101-000000-0000bb", "failed", "rank 0 died",
                                  extra={"arms": {"adam": {"status": "failed", "epochs": 3}}})
    summary = runs.load_run(str(tmp_path), "20260101-000000-0000bb").summary
    assert summary["status"] == "failed" and summary["error"] == "rank 0 died" and summary["ended"]
    assert summary["arms"]["adam"] == {"status": "failed", "epochs": 3}
    assert summary["pid"] == writer.summary["pid"]  # the owner fields stay
    # a run that already ended is left alone
    assert not runs.mark_ended(str(tmp_path), "20260101-000000-0000bb", "stopped", None)
    assert not runs.mark_ended(str(tmp_path), "20260101-000000-0000cc", "failed", "x")
    json.loads((tmp_path / "20260101-000000-0000bb" / "summary.json").read_text())
