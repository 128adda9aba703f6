"""Which process owns a run, and whether it still runs (Linux /proc; os.kill elsewhere).

A run's summary names its owner by ``pid``, ``pid_start`` (its start time from
/proc/<pid>/stat, which guards against a reused pid) and ``hostname``.
"""

from __future__ import annotations

import os
import socket
from typing import Any, Mapping


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks since boot) from /proc/<pid>/stat, or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode("ascii", "replace")
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may itself hold spaces and ')'.
    rest = data[data.rfind(")") + 2 :].split()
    try:
        return rest[0], int(rest[19])  # field 3 is state, field 22 is starttime
    except (IndexError, ValueError):
        return None


def process_start(pid: int) -> int | None:
    """Start time of process ``pid`` in clock ticks since boot (None where unknown)."""
    stat = proc_stat(pid)
    return None if stat is None else stat[1]


def hostname() -> str:
    return socket.gethostname()


def pid_alive(pid: int, recorded_start: int | None) -> bool:
    """True when process ``pid`` runs and (where known) started at ``recorded_start``."""
    if pid <= 0:
        return False
    if os.name != "posix":  # pragma: no cover - os.kill(pid, 0) would kill on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    except OSError:  # pragma: no cover
        return False
    stat = proc_stat(pid)
    if stat is None:  # no /proc: trust os.kill
        return True
    state, start = stat
    if state in ("Z", "X"):  # zombie or dead: it no longer runs
        return False
    if recorded_start is not None and start != recorded_start:
        return False  # the pid was reused by another process
    return True


def owner_alive(summary: Mapping[str, Any] | None) -> bool:
    """Whether the process that owns a run (per its summary) is still running.

    The summary names the owner by ``pid``, ``pid_start`` (its start time from
    /proc/<pid>/stat, which guards against a reused pid) and ``hostname``. A summary
    without a usable pid, or written on another host, counts as not alive: a runs
    directory is meant for one machine, and a container that was recreated gets a new
    host name while its old processes are certainly gone.
    """
    if not isinstance(summary, Mapping):
        return False
    pid = summary.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool):
        return False
    host = summary.get("hostname")
    if host is not None and host != hostname():
        return False
    start = summary.get("pid_start")
    return pid_alive(pid, start if isinstance(start, int) and not isinstance(start, bool) else None)
