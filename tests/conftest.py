"""Shared fixtures.

- TWOPHASE_DATA points at one data folder for the whole session (unless the
  environment already sets it), so MNIST is copied and decoded once;
  `data_dir` (Path) and `data_root` (str) name it.
- `runs_dir`: an empty runs folder for one test, exported as TWOPHASE_RUNS.
- `tiny_config`: a RunConfig that trains in a few seconds on 2 cores.
- `finished_runs`: a runs folder holding one completed tiny run (made once per
  session, copied into the test's `runs_dir`).
- `served_app`: `streamlit run app.py` on a free localhost port, with the
  test's runs folder and the session's data folder; yields its URL.
- `random_dataset()`: a twophase Dataset of seeded random images and labels (no files).
- `one_torch_thread`: torch at one intra-op thread for the test (tiny tensors).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def random_dataset(n: int, shape=(1, 16, 16), classes: int = 10, seed: int = 0, val: int | None = None):
    """A twophase Dataset of n seeded random images (and `val`, default n // 2, validation ones)."""
    import torch

    from twophase.data import Dataset

    g = torch.Generator().manual_seed(seed)
    val = n // 2 if val is None else val
    return Dataset(train_x=torch.randn(n, *shape, generator=g), train_y=torch.randint(0, classes, (n,), generator=g),
                   val_x=torch.randn(val, *shape, generator=g), val_y=torch.randint(0, classes, (val,), generator=g),
                   num_classes=classes, input_shape=shape, class_names=[str(i) for i in range(classes)],
                   name="fake")


@pytest.fixture(scope="session", autouse=True)
def data_dir(tmp_path_factory) -> Path:
    """The session's dataset folder (TWOPHASE_DATA); created empty unless already set."""
    preset = os.environ.get("TWOPHASE_DATA")
    if preset:
        yield Path(preset)
        return
    path = tmp_path_factory.mktemp("data")
    os.environ["TWOPHASE_DATA"] = str(path)
    try:
        yield path
    finally:
        os.environ.pop("TWOPHASE_DATA", None)


@pytest.fixture(scope="session")
def data_root(data_dir) -> str:
    """The session's dataset folder as a str (for RunConfig.data_root and --data-dir)."""
    return str(data_dir)


@pytest.fixture
def runs_dir(tmp_path, monkeypatch) -> Path:
    """An empty runs folder for this test, exported as TWOPHASE_RUNS."""
    path = tmp_path / "runs"
    path.mkdir()
    monkeypatch.setenv("TWOPHASE_RUNS", str(path))
    return path


def tiny_settings() -> dict:
    """RunConfig fields of a run that trains in seconds: a small MLP on 256 MNIST images."""
    return dict(model="mlp", dataset="mnist", subset=256, val_subset=500, epochs=3, batch_size=64,
                arms=["two-phase", "adam"], seed=0)


@pytest.fixture
def one_torch_thread():
    """Tiny tensors: one intra-op thread is far faster than several on a busy 2-core machine."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def tiny_config():
    from twophase.config import RunConfig

    return RunConfig(**tiny_settings())


@pytest.fixture(scope="session")
def _finished_runs_template(tmp_path_factory, data_dir) -> Path:
    """A runs folder with one completed tiny run (switch fixed at epoch 2), made once."""
    from twophase.config import RunConfig
    from twophase.training.run import run_experiment

    path = tmp_path_factory.mktemp("finished-runs")
    summary = run_experiment(RunConfig(**tiny_settings(), switch_epoch=2, name="tiny"), str(path))
    assert summary["status"] == "completed", summary
    return path


@pytest.fixture
def finished_runs(runs_dir, _finished_runs_template) -> Path:
    """`runs_dir` holding a copy of the completed tiny run."""
    for child in _finished_runs_template.iterdir():
        shutil.copytree(child, runs_dir / child.name)
    return runs_dir


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served_app(runs_dir, data_dir, tmp_path):
    """`streamlit run app.py` in headless mode on a free port; yields the base URL."""
    port = free_port()
    env = dict(os.environ, TWOPHASE_RUNS=str(runs_dir), TWOPHASE_DATA=str(data_dir),
               STREAMLIT_BROWSER_GATHER_USAGE_STATS="false")
    log = open(tmp_path / "streamlit.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--server.fileWatcherType", "none",
         "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with {proc.returncode}: {(tmp_path / 'streamlit.log').read_text()}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError("streamlit did not answer /_stcore/health within 60 s")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()
