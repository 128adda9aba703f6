"""The example run shipped with the package: the app's default run (mlp, 2,048 MNIST images,
40 epochs, the paper's rule), trained once by `python -m twophase run` and kept as its run folder,
so that a fresh install has something to show before its first run ends.

Made again by `python -m twophase run --runs-dir DIR --name "example: the default run"`, then
copying DIR/<run id>/ (without checkpoint files) to twophase/data_files/example_runs/.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from twophase.runs.ids import is_valid_run_id
from twophase.runs.reader import Run, load_run

EXAMPLE_RUNS_DIR = Path(__file__).resolve().parent.parent / "data_files" / "example_runs"


@lru_cache(maxsize=1)
def example_run() -> Run | None:
    """The shipped example run (None when the package was installed without it). Read once per
    process: the files ship with the package and never change; callers must not modify it."""
    try:
        ids = sorted(p.name for p in EXAMPLE_RUNS_DIR.iterdir() if is_valid_run_id(p.name))
    except OSError:
        return None
    if not ids:
        return None
    try:
        run = load_run(EXAMPLE_RUNS_DIR, ids[-1])
    except (OSError, ValueError, TypeError):
        return None
    return run if run.status == "completed" and len(run.metrics) else None
