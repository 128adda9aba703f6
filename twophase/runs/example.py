"""Runs shipped with the package, each kept as its run folder (without checkpoint files).

example_run: the app's default run (mlp, 2,048 MNIST images, 40 epochs, the paper's rule), so
that a fresh install has something to show before its first run ends. Made again by
`python -m twophase run --runs-dir DIR --name "example: the default run"`, then copying
DIR/<run id>/ to twophase/data_files/example_runs/.

curvature_run: the default run's config on 1,000 epochs with the Hessian probe every 10 epochs
(the Learn page's section 4: the gradient-norm peak comes early, the nearly convex region late).
Made again by `python -m benchmarks.curvature --size long`, which writes it to
twophase/data_files/curvature_runs/.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from twophase.runs.ids import is_valid_run_id
from twophase.runs.reader import Run, load_run

EXAMPLE_RUNS_DIR = Path(__file__).resolve().parent.parent / "data_files" / "example_runs"
CURVATURE_RUNS_DIR = Path(__file__).resolve().parent.parent / "data_files" / "curvature_runs"


@lru_cache(maxsize=1)
def example_run() -> Run | None:
    """The shipped example run (None when the package was installed without it). Read once per
    process: the files ship with the package and never change; callers must not modify it."""
    return shipped_run(EXAMPLE_RUNS_DIR)


@lru_cache(maxsize=1)
def curvature_run() -> Run | None:
    """The shipped long run with the Hessian probe (None when the package was installed without
    it). Read once per process; callers must not modify it."""
    return shipped_run(CURVATURE_RUNS_DIR)


def shipped_run(folder: Path) -> Run | None:
    """The newest completed run in `folder` (None when there is none or it cannot be read)."""
    try:
        ids = sorted(p.name for p in Path(folder).iterdir() if is_valid_run_id(p.name))
    except OSError:
        return None
    if not ids:
        return None
    try:
        run = load_run(folder, ids[-1])
    except (OSError, ValueError, TypeError):
        return None
    return run if run.status == "completed" and len(run.metrics) else None
