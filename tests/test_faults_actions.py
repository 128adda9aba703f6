"""Fault class 3, stop and double actions: Stop pressed twice, Start pressed twice quickly (one
run, not two), stopping a queued run, deleting a running run (refused).

Already covered elsewhere: JobManager.stop twice on a running run and stopping a queued run
through the API (tests/test_jobs.py::test_second_run_queues_until_the_first_ends_and_stopping_a_queued_run),
JobManager.delete refused while running (test_jobs.py::test_deleting_a_running_run_is_refused),
runs.delete_run refused while the owner is alive (tests/test_runs.py::test_delete_refused_while_running_then_allowed),
one Stop in the app (tests/test_app_pages.py::test_stop_button_stops_a_running_run).
This module drives the same actions through the app's buttons, twice where a user would.
"""

from __future__ import annotations

import time

import pytest

from twophase import runs

from test_app_pages import new_app, set_tiny, wait_final

LONG = dict(epochs=500, subset=2048, batch_size=32)  # minutes of training: stopped long before the end


def wait_until(predicate, timeout=60.0, what="condition"):
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def start_long_run(at) -> str:
    set_tiny(at, **LONG)
    at.text_input(key="cfg_threads").set_value("1")
    at.button(key="start").click().run()
    assert not at.exception and not at.error, ([e.value for e in at.exception], [e.value for e in at.error])
    return at.query_params["run"]


def stop_all(jobs) -> None:
    for run_id in jobs.active():
        jobs.stop(run_id)
    for run_id in [s.run_id for s in jobs.list()]:
        jobs.wait(run_id, 60)


def test_stop_pressed_twice_stops_the_run_once(runs_dir):
    at = new_app()
    jobs = at.session_state["jobs"]
    run_id = start_long_run(at)
    try:
        wait_until(lambda: jobs.status(run_id) == "running", what="the run to start")
        at.run()
        at.button(key="stop").click().run()
        assert not at.exception, [e.value for e in at.exception]
        stop_buttons = [b for b in at.button if b.key == "stop"]
        if stop_buttons:  # still stopping: press again
            stop_buttons[0].click().run()
            assert not at.exception, [e.value for e in at.exception]
        assert wait_final(at, timeout=60) == "stopped"
        assert [b for b in at.button if b.key == "stop"] == []  # no Stop on a finished run
    finally:
        stop_all(jobs)
    # the API agrees: a stop after the end, or of an unknown id, does nothing and says so
    assert jobs.stop(run_id) is False and jobs.status(run_id) == "stopped"
    assert jobs.stop("20200101-000000-abcdef") is False
    [info] = runs.list_runs(runs_dir)
    assert info.run_id == run_id and info.status == "stopped" and info.damaged is None
    assert runs.load_run(runs_dir, run_id).summary["status"] == "stopped"


def test_start_pressed_twice_quickly_starts_one_run(runs_dir):
    at = new_app()
    jobs = at.session_state["jobs"]
    try:
        first = start_long_run(at)
        # the second press reaches the server before the first run has ended
        at.button(key="start").click().run()
        assert not at.exception and not at.error, [e.value for e in at.error]
        assert at.query_params["run"] == first
        assert any("already started" in i.value for i in at.info), [i.value for i in at.info]
        assert [i.run_id for i in runs.list_runs(runs_dir)] == [first]
        assert len(jobs.list()) == 1

        # a changed setting is a new run (queued behind the first)
        at.text_input(key="cfg_seed").set_value("7")
        at.button(key="start").click().run()
        assert not at.exception and not at.error
        second = at.query_params["run"]
        assert second != first and jobs.status(second) in ("queued", "running")
        assert {i.run_id for i in runs.list_runs(runs_dir)} == {first, second}

        # once the run it follows has ended, Start with the same settings starts a new one
        jobs.stop(first)
        jobs.stop(second)
        jobs.wait(first, 60), jobs.wait(second, 60)
        at.button(key="start").click().run()
        assert not at.exception
        third = at.query_params["run"]
        assert third not in (first, second) and len(runs.list_runs(runs_dir)) == 3
    finally:
        stop_all(jobs)


def test_stopping_a_queued_run_on_the_runs_page_ends_it_without_training(runs_dir, data_root):
    from twophase.config import RunConfig

    at = new_app()
    jobs = at.session_state["jobs"]
    try:
        running = jobs.submit(RunConfig(model="mlp", data_root=data_root, val_subset=256, threads=1, **LONG))
        queued = jobs.submit(RunConfig(model="mlp", data_root=data_root, subset=256, val_subset=256, epochs=2,
                                       threads=1))
        wait_until(lambda: jobs.status(running) == "running", what="the first run to start")
        assert jobs.status(queued) == "queued"
        at.switch_page("pages/runs.py").run()
        at.selectbox(key="runs_selected").set_value(queued).run()
        assert not at.exception
        at.button(key="runs_stop").click().run()
        assert not at.exception, [e.value for e in at.exception]
        assert jobs.wait(queued, 5) == "stopped"  # at once: it has nothing to finish
        assert jobs.status(running) == "running"  # the other run is not disturbed
        run = runs.load_run(runs_dir, queued)
        assert run.summary["status"] == "stopped" and len(run.metrics) == 0 and run.warnings == []
        # pressing Stop again on the stopped run: the button is gone, Delete is offered instead
        at.switch_page("pages/runs.py").run()
        at.selectbox(key="runs_selected").set_value(queued).run()
        assert [b for b in at.button if b.key == "runs_stop"] == []
        assert at.button(key="runs_delete").disabled  # until confirmed
    finally:
        stop_all(jobs)


def test_deleting_a_running_run_is_refused_on_every_path(runs_dir, data_root):
    from twophase.config import RunConfig

    at = new_app()
    jobs = at.session_state["jobs"]
    try:
        run_id = jobs.submit(RunConfig(model="mlp", data_root=data_root, val_subset=256, threads=1, **LONG))
        wait_until(lambda: jobs.status(run_id) == "running", what="the run to start")
        at.switch_page("pages/runs.py").run()
        at.selectbox(key="runs_selected").set_value(run_id).run()
        assert not at.exception
        keys = [b.key for b in at.button]
        assert "runs_delete" not in keys and "runs_stop" in keys  # the page offers Stop, not Delete
        with pytest.raises(RuntimeError, match="stop it"):
            jobs.delete(run_id)
        with pytest.raises(RuntimeError, match="stop it"):
            runs.delete_run(runs_dir, run_id)  # another process of the same server, or the CLI
        assert runs.load_run(runs_dir, run_id).summary["status"] == "running"
        jobs.stop(run_id)
        assert jobs.wait(run_id, 30) == "stopped"
        # stopped: now it can go, through the page's confirmed Delete
        at.switch_page("pages/runs.py").run()
        at.selectbox(key="runs_selected").set_value(run_id).run()
        at.checkbox(key="runs_confirm_delete").check().run()
        at.button(key="runs_delete").click().run()
        assert not at.exception, [e.value for e in at.exception]
        assert runs.list_runs(runs_dir) == []
    finally:
        stop_all(jobs)
