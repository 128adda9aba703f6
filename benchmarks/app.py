"""The app's cost: training throughput with the Train page open in a browser against the CLI.

`streamlit run app.py` is served on a free localhost port; Debian's chromium (driven by
Playwright, headless) opens the Train page, enters the run's settings, presses Start and stays
on the page while it trains (the page redraws the progress every 2 s, and the four charts of a
run under 200 records, as this one, at its first epoch and then every 2 s: pages/train.py's
POLL_SECONDS, LOOK_SECONDS and FAST_CHART_SECONDS) until the status says completed. The same config runs from the command line
(`python -m twophase run`). The two alternate (CLI, app, app, CLI, ...).

Throughput: training samples processed per second of the arms' counted work (sum over arms of
data passes x training samples, over the sum of their seconds), read from each run's
summary. Target: app / CLI at least 0.95. If the page cannot be driven (no chromium, no
Playwright, the page's widgets changed, a timeout), the result is a clear
'skipped: reason' line instead.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pandas as pd

from benchmarks import common

TARGET = 0.95
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]

# RunConfig fields of the run (the rest: RunConfig's defaults, which the page starts with) and repetitions
SIZES = {
    "tiny": (dict(model="mlp", subset=256, val_subset=500, epochs=3), 1),
    "small": (dict(model="mlp", subset=2048, val_subset=2000, epochs=5), 1),
    "full": (dict(model="mlp", subset=2048, val_subset=2000, epochs=40), 3),  # the app's default run
    "issue": (dict(model="mlp", subset=2048, val_subset=2000, epochs=40), 3),
}
# Train page widget label of each field we set
LABELS = {"subset": "Training samples", "epochs": "Epochs", "val_subset": "Validation samples",
          "threads": "CPU threads"}


SETTLE_S = 6.0  # pause before each measured run: the app starts its next worker after a run (imports ~3 s)


def cpu_by_process() -> dict:
    """CPU seconds used so far by each Streamlit server and chromium process, as
    {(pid, "server" | "browser"): seconds} (Linux /proc; {} elsewhere)."""
    out = {}
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
        tick = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, AttributeError):
        return {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                stat = fh.read()
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        comm = stat.split("(", 1)[1].rsplit(")", 1)[0]
        fields = stat.rsplit(")", 1)[1].split()
        used = (int(fields[11]) + int(fields[12])) / tick
        if "streamlit" in cmd and "app.py" in cmd:
            out[(int(pid), "server")] = used
        elif "chrom" in comm or "chrom" in cmd:
            out[(int(pid), "browser")] = used
    return out


def cpu_used(before: dict, after: dict) -> dict:
    """{"server": s, "browser": s}: CPU seconds used between two cpu_by_process() readings by the
    processes alive at the second one (a process that started in between counts in full; one that
    ended in between is not seen, so the figures are lower bounds and never negative)."""
    used = {"server": 0.0, "browser": 0.0}
    for (pid, kind), seconds in after.items():
        used[kind] += max(0.0, seconds - before.get((pid, kind), 0.0))
    return used


class Skip(Exception):
    """The page could not be driven; the message says why."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def throughput(summary: dict, n: int) -> tuple[float, float]:
    """(samples per counted second, run duration s) from a run's summary; n: training samples."""
    arms = (summary.get("arms") or {}).values()
    passes = sum((a.get("data_passes") or 0.0) for a in arms)
    seconds = sum((a.get("seconds") or 0.0) for a in arms)
    if not seconds or summary.get("status") != "completed":
        raise RuntimeError(f"the run did not complete with measured seconds: status {summary.get('status')}")
    return passes * n / seconds, float(summary.get("duration_s") or float("nan"))


def run_cli(fields: dict, threads: int, runs_dir: str, timeout: float) -> dict:
    cmd = [sys.executable, "-m", "twophase", "run", "--runs-dir", runs_dir, "--json", "--quiet",
           "--threads", str(threads)]
    for k, v in fields.items():
        cmd += ["--" + k.replace("_", "-"), str(v)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=common.ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"CLI run failed ({proc.returncode}): {proc.stderr.strip()[-300:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


class ServedApp:
    """`streamlit run app.py` on a free port (a context manager); .url when it answers."""

    def __init__(self, runs_dir: str, log_path: Path):
        self.runs_dir, self.log_path = runs_dir, log_path
        self.proc = None

    def __enter__(self):
        port = free_port()
        env = dict(os.environ, TWOPHASE_RUNS=self.runs_dir, TWOPHASE_DATA=common.data_root(),
                   STREAMLIT_BROWSER_GATHER_USAGE_STATS="false")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
             "--server.port", str(port), "--server.address", "127.0.0.1", "--server.fileWatcherType", "none",
             "--browser.gatherUsageStats", "false"],
            cwd=common.ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 90
        while True:
            if self.proc.poll() is not None:
                raise Skip(f"streamlit exited with {self.proc.returncode}: "
                           f"{self.log_path.read_text()[-300:].strip()}")
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            if time.time() > deadline:
                raise Skip("streamlit did not answer /_stcore/health within 90 s")
            time.sleep(0.3)

    def __exit__(self, *exc):
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()
        return False


def _fill_number(page, label: str, value) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Enter")
    page.wait_for_timeout(300)


def run_in_app(browser, url: str, fields: dict, threads: int, runs_dir: str, timeout_s: float,
               close_after_start: bool = False, settle_s: float = SETTLE_S) -> tuple[dict, int, dict]:
    """Drive the Train page through one run; return (the run's summary, messages the page sent
    to the server while the run trained, CPU seconds the server and the browser used from the
    press of Start until the run ended).

    close_after_start: close the page as soon as the run has started and wait for the run on
    disk (the server's cost without a page watching).
    """
    from twophase import runs

    page = browser.new_page(viewport={"width": 1600, "height": 1300})
    page.set_default_timeout(30_000)
    sent = []
    page.on("websocket", lambda ws: ws.on("framesent", lambda _f: sent.append(time.time())))
    try:
        page.goto(url)
        page.get_by_text("Run settings").wait_for()
        if fields.get("model", "mlp") != "mlp":
            page.locator('[data-testid="stSelectbox"]').filter(has_text="Model").click()
            page.get_by_role("option", name=re.compile("^" + re.escape(fields["model"]))).click()
            page.wait_for_timeout(300)
        for key in ("subset", "epochs"):
            if key in fields:
                _fill_number(page, LABELS[key], fields[key])
        page.get_by_text("Advanced: switch rule and CG").click()
        if "val_subset" in fields:
            _fill_number(page, LABELS["val_subset"], fields["val_subset"])
        _fill_number(page, LABELS["threads"], threads)
        page.wait_for_timeout(settle_s * 1000)
        cpu0 = cpu_by_process()
        page.get_by_role("button", name=re.compile("Start")).click()
        page.wait_for_function("window.location.search.includes('run=')", timeout=30_000)
        run_id = page.url.split("run=")[1].split("&")[0]
        started = time.time()
        if not close_after_start:
            page.locator(".tp-status-completed").wait_for(timeout=timeout_s * 1000)
        reruns = len([t for t in sent if t >= started])
    finally:
        page.close()
    deadline = time.time() + timeout_s
    while True:
        run = runs.load_run(runs_dir, run_id)
        if run.status in runs.FINAL_STATUSES:
            break
        if time.time() > deadline:
            raise Skip(f"run {run_id} did not finish within {timeout_s:.0f} s")
        time.sleep(0.5)
    cpu1 = cpu_by_process()
    used = cpu_used(cpu0, cpu1) if cpu0 and cpu1 else {}
    cfg = run.config or {}
    wrong = {k: (cfg.get(k), v) for k, v in dict(fields, threads=threads).items() if cfg.get(k) != v}
    if wrong:
        raise Skip(f"the page started a run with other settings than asked: {wrong}")
    return run.summary, reruns, used


def main(args) -> common.Report:
    report = common.Report("app", "App: throughput with the Train page open", args.size)
    fields, reps = SIZES[args.size]
    settle_s = 0.0 if args.size == "tiny" else SETTLE_S
    variants = ("cli", "app") if args.size == "tiny" else ("cli", "app", "app, page closed")
    report.text(f"Run: {', '.join(f'{k}={v}' for k, v in fields.items())}, arms two-phase and Adam (RunConfig's "
                f"defaults otherwise), {args.threads} torch thread(s) in both the CLI and the app; "
                f"{reps} repetition(s) of each of: {', '.join(variants)}, in alternating order; chromium renders "
                "on the same 2 cores. 'app, page closed': started from the page, which is then closed (the server "
                "process's own cost, without a page polling it).")
    rows, skip = [], None
    with tempfile.TemporaryDirectory(prefix="twophase-bench-app-") as tmp:
        tmp = Path(tmp)
        app_runs, cli_runs = str(tmp / "app-runs"), str(tmp / "cli-runs")
        timeout_s = 1800.0
        try:
            if not os.path.exists(CHROMIUM):
                raise Skip(f"{CHROMIUM} is missing (make browser installs Debian's chromium)")
            try:
                from playwright.sync_api import Error as PlaywrightError
                from playwright.sync_api import sync_playwright
            except ImportError as exc:
                raise Skip(f"Playwright is not installed: {exc}")
            try:
                with ServedApp(app_runs, tmp / "streamlit.log") as served, sync_playwright() as p:
                    browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
                    try:
                        for r in range(reps):
                            order = variants if r % 2 == 0 else variants[::-1]
                            result = {}
                            for which in order:
                                t0 = time.perf_counter()
                                if which == "cli":
                                    time.sleep(settle_s)
                                    result["cli"] = (run_cli(fields, args.threads, cli_runs, timeout=3600), None, {})
                                else:
                                    try:
                                        result[which] = run_in_app(browser, served.url, fields, args.threads,
                                                                   app_runs, timeout_s,
                                                                   close_after_start=which != "app",
                                                                   settle_s=settle_s)
                                    except PlaywrightError as exc:
                                        raise Skip(f"the Train page could not be driven: "
                                                   f"{str(exc).splitlines()[0][:300]}")
                                print(f"app: {which} run in {time.perf_counter() - t0:.0f} s", flush=True)
                            (cli_sum, _, _), (app_sum, reruns, used) = result["cli"], result["app"]
                            cli_tp, cli_dur = throughput(cli_sum, fields["subset"])
                            app_tp, app_dur = throughput(app_sum, fields["subset"])
                            row = {"repetition": r + 1, "order": " then ".join(order),
                                   "CLI samples/s": cli_tp, "app samples/s": app_tp, "app / CLI": app_tp / cli_tp}
                            if "app, page closed" in result:
                                closed_tp, closed_dur = throughput(result["app, page closed"][0], fields["subset"])
                                row.update({"page closed samples/s": closed_tp, "page closed / CLI": closed_tp / cli_tp})
                            else:
                                closed_dur = None
                            row.update({"CLI run s": cli_dur, "app run s": app_dur, "page closed run s": closed_dur,
                                        "page messages to the server during the run": reruns,
                                        "server CPU s (page open)": used.get("server", math.nan),
                                        "browser CPU s (page open)": used.get("browser", math.nan)})
                            rows.append(row)
                            print(f"app: repetition {r + 1}: app/CLI {app_tp / cli_tp:.3f}", flush=True)
                    finally:
                        browser.close()
            except PlaywrightError as exc:
                raise Skip(f"chromium could not be driven: {str(exc).splitlines()[0][:300]}")
        except Skip as exc:
            skip = str(exc)
    if skip is not None:
        report.text(f"skipped: {skip}")
        report.meta["skipped"] = skip
        report.target(common.Target("throughput app / CLI", float("nan"), TARGET, higher_is_better=True,
                                    note=f"not measured (skipped: {skip})"))
        return report
    df = pd.DataFrame(rows)
    ratio = common.median(df["app / CLI"].tolist())
    report.target(common.Target("training throughput, Train page open / CLI (median of repetitions)", ratio,
                                TARGET, higher_is_better=True))
    report.table("main", df, {"CLI samples/s": ".0f", "app samples/s": ".0f", "app / CLI": ".3f",
                              "page closed samples/s": ".0f", "page closed / CLI": ".3f",
                              "CLI run s": ".1f", "app run s": ".1f", "page closed run s": ".1f",
                              "server CPU s (page open)": ".1f", "browser CPU s (page open)": ".1f"})
    report.text("'run s' is the whole run (data loading, monitoring passes, writing) as its summary gives it; "
                "samples/s counts the arms' own work only. Runs train in a worker process (the app's "
                "JobManager mode \"process\"), so the server's Python never holds up training; the CPU "
                "columns are what the Streamlit server and chromium used from the press of Start until the run "
                "ended: the page's cost, on the same 2 cores as the training. The page redraws its progress "
                "every 2 s and, for a run this short, its charts at the first epoch and then every 2 s.")
    report.text("Tried for the 0.95 target, measured here with this benchmark: Streamlit's full garbage "
                "collection after every script run off (.streamlit/config.toml, runner.postScriptGC; py-spy found "
                "it was over half of the server's CPU, which fell from 3.5-4.4 to 0.5-0.6 CPU-s a run); the "
                "charts of a short run redrawn every 2 s instead of every 1 s (0.87 to 0.92 of the CLI); the "
                "page looking every 0.25 s only until the first epoch (a look every 0.25 s throughout cost the "
                "browser more). What is left is chromium's: about 2.3 s of its main thread per run (a CDP profile "
                "spread over Plotly, React and layout, no single hot spot), on the two cores the run trains on; "
                "with the page closed the app runs at the CLI's speed.")
    return report


if __name__ == "__main__":
    raise SystemExit(common.run_main(main, __doc__.splitlines()[0]))
