"""Fault class 7, concurrency: two browser sessions each starting a run, several clients of one
JobManager submitting at once, runs queueing up to the configured limit and all completing,
and snapshots read while training that are always consistent (no half-written record).

Already covered elsewhere: a second run queues behind the first with max_concurrent=1
(tests/test_jobs.py::test_second_run_queues_until_the_first_ends_and_stopping_a_queued_run);
snapshots are copies (test_jobs.py::test_snapshot_is_a_copy); RunWriter appends and summary
rewrites from two threads while a third reads the files
(tests/test_runs.py::test_concurrent_writes_and_reads).
"""

from __future__ import annotations

import threading
import time

from streamlit.testing.v1 import AppTest

from twophase import runs
from twophase.config import RunConfig
from twophase.jobs import JobManager

from test_app_pages import APP, TIMEOUT, set_tiny, status_of, table_with, wait_final


def tiny(data_root, **changes) -> RunConfig:
    base = dict(model="mlp", data_root=data_root, subset=256, val_subset=256, epochs=3, batch_size=64,
                switch_epoch=2, threads=1)
    base.update(changes)
    return RunConfig(**base)


def test_two_browser_sessions_each_start_a_run_and_both_complete_one_after_the_other(runs_dir):
    sessions = []
    for seed in (1, 2):
        at = AppTest.from_file(APP, default_timeout=TIMEOUT)
        at.run()
        set_tiny(at, epochs=4)
        at.text_input(key="cfg_seed").set_value(str(seed))
        at.text_input(key="cfg_threads").set_value("1")
        sessions.append(at)
    for at in sessions:  # the second presses Start while the first run trains
        at.button(key="start").click().run()
        assert not at.exception and not at.error, [e.value for e in at.error]
    first, second = (at.query_params["run"] for at in sessions)
    assert first != second
    assert sessions[0].session_state["jobs"] is sessions[1].session_state["jobs"]  # one manager per server
    assert status_of(sessions[1]) in ("queued", "running", "completed")
    assert [wait_final(at, timeout=120) for at in sessions] == ["completed", "completed"]

    # each session shows its own run; the runs never overlapped (the default limit is 1)
    assert [at.query_params["run"] for at in sessions] == [first, second]
    a, b = (runs.load_run(runs_dir, r).summary for r in (first, second))
    assert b["started"] >= a["ended"], (a["started"], a["ended"], b["started"])
    sessions[0].switch_page("pages/runs.py").run()
    table = table_with(sessions[0], "run", "status")
    assert dict(zip(table["run"], table["status"])) == {first: "completed", second: "completed"}


def test_runs_queue_up_to_the_limit_and_all_complete(data_root, tmp_path):
    jobs = JobManager(str(tmp_path), max_concurrent=2)
    run_ids, errors = [], []
    lock = threading.Lock()

    def client(seeds):
        try:
            for seed in seeds:
                run_id = jobs.submit(tiny(data_root, seed=seed))
                with lock:
                    run_ids.append(run_id)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    most_running = [0]
    done = threading.Event()

    def watch():
        while not done.is_set():
            running = sum(1 for s in jobs.list() if s.status == "running")
            most_running[0] = max(most_running[0], running)
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    clients = [threading.Thread(target=client, args=(seeds,)) for seeds in ((1, 2, 3), (4, 5))]
    for c in clients:
        c.start()
    for c in clients:
        c.join()
    try:
        assert errors == [] and len(set(run_ids)) == 5
        assert [jobs.wait(r, 120) for r in run_ids] == ["completed"] * 5
    finally:
        done.set()
        watcher.join()
    assert 1 <= most_running[0] <= 2
    infos = runs.list_runs(str(tmp_path))
    assert sorted(i.run_id for i in infos) == sorted(run_ids)
    assert all(i.status == "completed" and i.damaged is None for i in infos)
    assert all(len(runs.load_run(str(tmp_path), r).metrics) == 2 * 4 for r in run_ids)


def test_snapshots_read_while_training_are_consistent(data_root, tmp_path):
    jobs = JobManager(str(tmp_path))
    run_id = jobs.submit(tiny(data_root, epochs=6, switch_epoch=None, tolerance=0.95, subset=512, batch_size=32))
    problems, seen = [], []
    previous = None
    order = ["queued", "running", "completed"]
    while True:
        snap = jobs.snapshot(run_id)
        seen.append(snap.status)
        # every record is whole, and the records are what they were in the last snapshot plus new ones
        for record in snap.records:
            missing = [c for c in runs.METRIC_COLUMNS if c not in record]
            if missing:
                problems.append(f"record without {missing}: {record}")
        if previous is not None and snap.records[:len(previous.records)] != previous.records:
            problems.append("a record changed or disappeared between two snapshots")
        for arm in ("two-phase", "adam"):
            epochs = [r["epoch"] for r in snap.records if r["arm"] == arm]
            if epochs != list(range(len(epochs))):
                problems.append(f"{arm} epochs {epochs}")
            if not 0.0 <= snap.progress[arm] <= 1.0:
                problems.append(f"progress {snap.progress}")
        for event in snap.events:  # an event comes after the record of its epoch
            if event["kind"] == "switch" and not any(r["arm"] == event["arm"] and r["epoch"] == event["epoch"]
                                                     for r in snap.records):
                problems.append(f"event before its record: {event}")
        if order.index(snap.status) < order.index(previous.status if previous else "queued"):
            problems.append(f"status went back from {previous.status} to {snap.status}")
        # the files read at the same moment are whole too
        run = runs.load_run(str(tmp_path), run_id)
        if run.warnings or run.summary is None:
            problems.append(f"disk read while training: {run.warnings}")
        previous = snap
        if snap.finished:
            break
        time.sleep(0.002)
    assert problems == []
    assert "running" in seen and seen[-1] == "completed"
    final = jobs.snapshot(run_id)
    on_disk = runs.load_run(str(tmp_path), run_id).metrics.to_dict("records")
    assert len(final.records) == len(on_disk) == 2 * 7
    for mine, theirs in zip(final.records, on_disk):
        assert mine["arm"] == theirs["arm"] and mine["epoch"] == theirs["epoch"]
        assert mine["train_loss"] == theirs["train_loss"]  # shortest-repr floats read back exactly
