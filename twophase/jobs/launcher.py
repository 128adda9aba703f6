"""Starting and ending the processes that train: worker processes, and torchrun for several processes.

    start_worker()     `python -m twophase.jobs.worker`, waiting for its start line
    SPARE              the one started worker kept waiting per server process (warm start)
    torchrun_command   the launch of a run trained by N processes on this machine
    terminate          end a launched torchrun and its processes (SIGINT, SIGTERM, SIGKILL)
    children           the processes a process started (Linux /proc)

Every process started here runs in its own session, so a Ctrl-C in the server's terminal
reaches the server only; a worker learns of the server's end from its stdin.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading

__all__ = ["start_worker", "SpareWorker", "SPARE", "torchrun_command", "terminate", "children"]


def start_worker() -> subprocess.Popen:
    """Start `python -m twophase.jobs.worker`: it imports torch and the engine, then waits for a run.

    Its stdout is the live feed (text lines), its stderr goes to a temporary file (`proc.log`,
    read when it fails; close it with `close_worker`).
    """
    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (package_parent, os.environ.get("PYTHONPATH"))
                                                        if p))
    log = tempfile.TemporaryFile()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "twophase.jobs.worker"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=log, env=env, text=True, bufsize=1,
                                start_new_session=True)
    except BaseException:
        log.close()
        raise
    proc.log = log
    return proc


def close_worker(proc: subprocess.Popen) -> None:
    """Close what the server holds of an ended worker: its pipes and its stderr file."""
    for stream in (proc.stdin, proc.stdout, getattr(proc, "log", None)):
        if stream is not None:
            with contextlib.suppress(OSError, ValueError):
                stream.close()


class SpareWorker:
    """One started worker kept waiting, so the next run starts training at once. One per server
    process, whatever the number of JobManagers (a worker is told its runs folder with its run)."""

    def __init__(self):
        self.proc: subprocess.Popen | None = None
        self._lock = threading.Lock()

    def warm(self) -> None:
        """Make sure a worker is started and waiting."""
        with self._lock:
            if self.proc is None or self.proc.poll() is not None:
                if self.proc is not None:
                    close_worker(self.proc)
                self.proc = start_worker()

    def take(self) -> subprocess.Popen:
        """The waiting worker if there is one (and alive), else a newly started one."""
        with self._lock:
            proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            if proc is not None:
                close_worker(proc)
            proc = start_worker()
        return proc


SPARE = SpareWorker()  # process-wide by design (see SpareWorker)


def torchrun_command(processes: int, cli_args: list[str]) -> list[str]:
    """The command that runs `python -m twophase <cli_args>` as `processes` processes on this machine.

    torchrun's --standalone rendezvous picks a free port, so several runs may train side by side.
    """
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={int(processes)}",
            "-m", "twophase", *cli_args]


def children(pid: int) -> list[int]:
    """Process ids whose parent is `pid` (Linux /proc; empty elsewhere)."""
    out = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return out
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read().decode("ascii", "replace")
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            out.append(int(name))
    return out


def terminate(proc: subprocess.Popen, grace_s: float = 40.0, term_s: float = 10.0) -> str:
    """End a launched torchrun and its processes; return how ("exited", "interrupted", "terminated", "killed").

    First SIGINT (torchrun passes it on; each process stops after its current mini-batch or CG
    iteration and writes `stopped`), waiting up to grace_s; then SIGTERM; then SIGKILL for
    torchrun and the processes it started.
    """
    if proc.poll() is not None:
        return "exited"
    for sig, wait_s, how in ((signal.SIGINT, grace_s, "interrupted"), (signal.SIGTERM, term_s, "terminated")):
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            return "exited"
        try:
            proc.wait(wait_s)
            return how
        except subprocess.TimeoutExpired:
            pass
    workers = children(proc.pid)
    for pid in [proc.pid, *workers]:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)
    return "killed"
