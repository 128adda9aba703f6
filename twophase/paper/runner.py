"""Running a reproduction: the cells of a plan that are not done yet, one after another."""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable

from twophase import runs
from twophase.paper.plan import Plan, cell_states, check_datasets


# --------------------------------------------------------------------------- running


def _fmt(value, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(value, spec)


def resumable(runs_dir: str, state) -> tuple | None:
    """(config, checkpoint info) when the cell's latest run can be resumed (stopped, interrupted or
    failed, with a checkpoint); None: start the cell afresh."""
    if state.run_id is None or state.run_status not in ("stopped", "interrupted", "failed"):
        return None
    if runs.checkpoint_info(runs.run_path(runs_dir, state.run_id)) is None:
        return None
    from twophase.training.checkpoint import ResumeError, resume_config

    try:
        return resume_config(runs_dir, state.run_id)
    except ResumeError:  # damaged, or a config this version refuses: a fresh run instead
        return None


def start_cells(jobs, runs_dir: str, states) -> tuple[list[str], list[str]]:
    """Queue the cells of `states` that are not done on `jobs` (a JobManager): a stopped, interrupted
    or failed cell with a checkpoint is resumed, any other is started afresh. Returns (started run
    ids, resumed run ids)."""
    started, resumed = [], []
    for state in states:
        if state.status != "todo":
            continue
        if resumable(runs_dir, state) is not None:
            resumed.append(jobs.resume(state.run_id))
        else:
            started.append(jobs.submit(state.cell.config))
    return started, resumed


def stop_cells(jobs, states) -> tuple[list[str], list[str]]:
    """Stop the queued and running cells of `states`. Returns (run ids asked to stop, run ids that
    run in another process, such as a `python -m twophase reproduce` command, which this one
    cannot stop)."""
    stopped, elsewhere = [], []
    for state in states:
        if state.status == "active":
            (stopped if jobs.stop(state.run_id) else elsewhere).append(state.run_id)
    return stopped, elsewhere


def run_plan(plan: Plan, runs_dir=None, on_line: Callable[[str], None] | None = print,
             should_stop: Callable[[], bool] = lambda: False, check_data: bool = True) -> dict:
    """Run the cells of `plan` that are not done yet, one after another, in this thread.

    runs_dir: the runs directory (None: runs.default_runs_dir()). on_line: called with
    each progress line (None: silent). should_stop: polled between mini-batches; when it
    turns True the current cell ends `stopped` and no further cell starts. check_data:
    first make sure every dataset's files are present (fails before any training).

    Returns {"ran": [run ids], "done": cells done, "total": cells, "left": [cell keys not done],
    "skipped_active": [cell keys running in another process], "stopped": bool}.
    """
    runs_dir = str(runs_dir or runs.default_runs_dir())
    say = on_line or (lambda line: None)
    runs.mark_interrupted(runs_dir)
    if check_data:
        check_datasets(plan.datasets, plan.cells[0].config.data_root if plan.cells else None)
    states = cell_states(plan, runs_dir)
    total = len(states)
    todo = [s for s in states if s.status == "todo"]
    active = [s for s in states if s.status == "active"]
    say(f"reproduction {plan.id} ({plan.describe()}): {total} cell(s), "
        f"{total - len(todo) - len(active)} done, {len(active)} running elsewhere, {len(todo)} to run "
        f"-> {runs_dir}")
    for s in active:
        say(f"  {s.cell.key}: run {s.run_id} is {s.run_status} in another process; not started again")
    ran, stopped = [], False
    started = time.time()
    for number, state in enumerate(todo, 1):
        if should_stop():
            stopped = True
            break
        cell = state.cell
        now = cell_states(dataclasses.replace(plan, cells=[cell]), runs_dir)[0]
        if now.status != "todo":  # another process (the app, a second command) took it meanwhile
            say(f"[{number}/{len(todo)}] {cell.key}: run {now.run_id} is {now.run_status} elsewhere; skipped")
            continue
        config, run_id, resume = cell.config, runs.new_run_id(), False
        earlier = resumable(runs_dir, now)
        if earlier is not None:  # an interrupted or stopped cell goes on from its checkpoint
            config, run_id, resume = earlier[0], now.run_id, True
            say(f"[{number}/{len(todo)}] {cell.label} -> resuming run {run_id} after epoch {earlier[1]['epoch']}")
        else:
            say(f"[{number}/{len(todo)}] {cell.label} -> run {run_id}")
        every = max(1, config.epochs // 10)

        def on_record(record, config=config, every=every):
            epoch = record["epoch"]
            if epoch == 0 or (epoch % every and epoch != config.epochs):
                return
            say(f"    {record['arm']:>9} epoch {epoch:>4}/{config.epochs} {record['phase']:<4} "
                f"train loss {_fmt(record['train_loss'], '.4e')}  acc {_fmt(record['train_acc'], '.3f')}  "
                f"val acc {_fmt(record['val_acc'], '.3f')}  passes {_fmt(record['data_passes'], '.1f')}  "
                f"{_fmt(record['seconds'], '.0f')}s")

        def on_event(event):
            if event["kind"] == "switch":
                say(f"    {event['arm']:>9} switched to CG after epoch {event['epoch']}")
            elif event["kind"] == "diverged":
                say(f"    {event['arm']:>9} diverged at epoch {event['epoch']}")

        from twophase.training.run import run_experiment  # torch is imported only when training

        summary = run_experiment(config, runs_dir, run_id, should_stop=should_stop, on_record=on_record,
                                 on_event=on_event, resume=resume)
        ran.append(run_id)
        arms = summary.get("arms") or {}
        finals = "  ".join(f"{a}: train loss {_fmt((arms[a] or {}).get('train_loss'), '.4e')}" for a in arms)
        say(f"    -> {summary['status']} in {summary.get('duration_s', 0):.0f}s"
            + (f" ({summary['error']})" if summary.get("error") else "") + (f"; {finals}" if finals else ""))
        if summary["status"] == "stopped":
            stopped = True
            break
    after = cell_states(plan, runs_dir)
    left = [s.cell.key for s in after if s.status != "done"]
    say(f"reproduction {plan.id}: {total - len(left)} of {total} cell(s) done"
        + (f" after {time.time() - started:.0f}s" if ran else "")
        + (f"; {len(left)} left: run the same command again to resume" if left else ""))
    return {"ran": ran, "done": total - len(left), "total": total, "left": left,
            "skipped_active": [s.cell.key for s in active], "stopped": stopped}
