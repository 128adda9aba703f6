"""What every benchmark shares: sizes, the machine record, interleaved timing, targets, reports.

A benchmark builds a `Report` (title, size, the machine, paragraphs, tables, figures) and
calls `Report.write(out_dir)`, which writes

    <out_dir>/<name>.md          the section that `python -m benchmarks` copies into README.md
    <out_dir>/<name>[_<t>].csv   each table, with the machine in every row
    <out_dir>/<name>.json        the machine, the size, the targets and the tables
    <out_dir>/<name>[_<f>].png   each figure (plotly + kaleido, drawn by Debian's chromium)

Timing on a shared machine: the variants being compared run in turn inside one loop
(A, B, B, A, A, B, ...), each repetition from the same starting state, and the medians of
the per-repetition ratios are reported.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import pandas as pd

RESULTS_DIR = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent
SIZES = ("tiny", "small", "full", "issue")
SIZE_HELP = ("tiny: seconds (the smoke test); small: about a minute; full: what `make bench` runs "
             "(sized for a shared 2-core machine); issue: the sizes the issue asks for (hours on 2 cores)")
DEFAULT_THREADS = 1
DETAIL_START = "<!-- detail {csv} -->"
DETAIL_END = "<!-- /detail -->"


# ----------------------------------------------------------------- arguments
def parser(description: str) -> argparse.ArgumentParser:
    """The command line every benchmark accepts: --size, --out, --threads."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--size", choices=SIZES, default="full", help=SIZE_HELP)
    p.add_argument("--out", default=str(RESULTS_DIR), help="folder for the .md/.csv/.json/.png results "
                                                           f"(default: {RESULTS_DIR})")
    p.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                   help="torch threads (default 1: the machine is shared and 2 cores are "
                        "oversubscribed by other work; the roofline benchmark measures 1 against 2)")
    p.add_argument("--no-png", action="store_true", help="do not draw the PNG figures")
    return p


def set_threads(threads: int) -> int:
    """Set torch's intra-op threads (0 = leave torch's default); return the count in force."""
    import torch

    if threads < 0:
        raise ValueError(f"threads must be >= 0, got {threads}")
    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def data_root() -> str:
    """The dataset folder: $TWOPHASE_DATA, else twophase's default (./data)."""
    from twophase import data

    return data.default_root()


# ----------------------------------------------------------------- machine
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_info() -> dict:
    """Cores, CPU, torch version and threads, load average: recorded with every result."""
    import torch

    try:
        load = os.getloadavg()[0]
    except OSError:
        load = math.nan
    return {
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_avg_1min": round(load, 2),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def machine_line(info: Mapping) -> str:
    return (f"Machine: {info['cores']} cores ({info['cpu']}), torch {info['torch']}, "
            f"{info['threads']} torch thread(s), load average {info['load_avg_1min']} when it started "
            f"(shared machine), {info['date']}.")


# ----------------------------------------------------------------- timing
def interleaved(variants: Mapping[str, Callable[[], float | None]], reps: int, warmup: int = 1,
                setup: Callable[[str], None] | None = None) -> dict[str, list[float]]:
    """Run each variant `warmup + reps` times, in turn, and return its timings (warmups dropped).

    variants: name -> function; if it returns a float, that is its own measured seconds (to leave
        out untimed set-up inside it); anything else and the whole call is timed.
    setup(name): called before each run, untimed (restores the starting state).
    The order alternates between repetitions (A B, then B A) so a drift of the machine's load
    hits every variant alike.
    """
    names = list(variants)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(warmup + reps):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            if setup is not None:
                setup(name)
            t0 = time.perf_counter()
            own = variants[name]()
            dt = float(own) if isinstance(own, float) else time.perf_counter() - t0
            if r >= warmup:
                times[name].append(dt)
    return times


def median(values: Sequence[float]) -> float:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.median(vals) if vals else math.nan


def ratio_of(times: Mapping[str, list[float]], num: str, den: str) -> float:
    """Median of the per-repetition ratios num/den (each pair measured back to back)."""
    return median([a / b for a, b in zip(times[num], times[den]) if b > 0])


def ratio_spread(times: Mapping[str, list[float]], num: str, den: str) -> tuple[float, float]:
    """The first and third quartiles of the per-repetition ratios num/den (the spread around ratio_of)."""
    vals = sorted(a / b for a, b in zip(times[num], times[den]) if b > 0 and math.isfinite(a / b))
    if len(vals) < 2:
        return (vals[0], vals[0]) if vals else (math.nan, math.nan)
    q1, _, q3 = statistics.quantiles(vals, n=4, method="inclusive")
    return q1, q3


# ----------------------------------------------------------------- targets
@dataclass
class Target:
    """A target of the issue and the value measured for it."""

    name: str
    measured: float
    target: float
    higher_is_better: bool
    unit: str = ""
    fmt: str = ".3g"
    note: str = ""

    @property
    def met(self) -> bool:
        if self.measured is None or not math.isfinite(self.measured):
            return False
        return self.measured >= self.target if self.higher_is_better else self.measured <= self.target

    def text(self) -> str:
        op = ">=" if self.higher_is_better else "<="
        measured = "n/a" if self.measured is None or not math.isfinite(self.measured) \
            else format(self.measured, self.fmt)
        target = format(self.target, self.fmt)
        verdict = (f"met: measured {measured}{self.unit} (target {op} {target}{self.unit})" if self.met
                   else f"**target missed: measured {measured}{self.unit}** (target {op} {target}{self.unit})")
        return f"{self.name}: {verdict}" + (f". {self.note}" if self.note else "")

    def to_dict(self) -> dict:
        return {"name": self.name, "measured": self.measured, "target": self.target,
                "higher_is_better": self.higher_is_better, "met": self.met, "unit": self.unit,
                "note": self.note}


# ----------------------------------------------------------------- markdown
def fmt_value(value, spec: str = ".4g") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return format(value, spec)
    return str(value)


def markdown_table(df: pd.DataFrame, formats: Mapping[str, str] | None = None) -> str:
    """A GitHub markdown table of `df` (numbers with `formats[column]`, default 4 significant digits)."""
    formats = formats or {}
    cols = list(df.columns)
    lines = ["| " + " | ".join(str(c) for c in cols) + " |",
             "|" + "|".join("---" for _ in cols) + "|"]
    for _, row in df.iterrows():
        cells = []
        for c in cols:
            v = row[c]
            if hasattr(v, "item") and not isinstance(v, str):
                try:
                    v = v.item()
                except (ValueError, AttributeError):
                    pass
            cells.append(fmt_value(v, formats.get(c, ".4g")).replace("|", "/"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------- figures
def save_png(fig, path: Path, width: int = 1000, height: int = 500) -> str | None:
    """Write a plotly figure as PNG with kaleido (Debian's chromium draws it).

    The legend moves to the right of the plot (a static image cannot hide traces).
    Returns None when written, else the reason it was not (kaleido or chromium missing, ...).
    """
    try:
        import kaleido  # noqa: F401
    except ImportError:
        return "kaleido is not installed (pip install kaleido; it draws with the system's chromium)"
    import plotly.graph_objects as go

    fig = go.Figure(fig)
    fig.update_layout(legend=dict(orientation="v", x=1.02, xanchor="left", y=1.0, yanchor="top"),
                      margin=dict(r=230))
    for attempt in range(3):  # on a loaded machine kaleido's page is sometimes not ready in time ("kaleido_scopes")
        try:
            fig.write_image(str(path), width=width, height=height)
            break
        except Exception as exc:  # kaleido raises several kinds when chromium is missing or fails
            if attempt == 2:
                return f"kaleido could not draw it: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    if not path.exists() or path.stat().st_size == 0:
        return "kaleido wrote nothing"
    return None


# ----------------------------------------------------------------- report
@dataclass
class Report:
    """One benchmark's results: text, tables, figures, targets; written by `write`."""

    name: str
    title: str
    size: str
    machine: dict = field(default_factory=machine_info)
    blocks: list = field(default_factory=list)  # ("text", str) | ("table", key) | ("figure", key)
    tables: dict = field(default_factory=dict)  # key -> (DataFrame, formats)
    figures: dict = field(default_factory=dict)  # key -> (plotly figure, caption)
    targets: list = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)
    no_png: bool = False

    def text(self, s: str) -> None:
        self.blocks.append(("text", s.strip()))

    def table(self, key: str, df: pd.DataFrame, formats: Mapping[str, str] | None = None,
              caption: str = "", detail: bool = False) -> None:
        """Add a table. detail=True: long per-run tables; the README shows a link to its CSV instead."""
        self.tables[key] = (df.reset_index(drop=True), dict(formats or {}))
        if caption:
            self.text(caption)
        self.blocks.append(("detail" if detail else "table", key))

    def figure(self, key: str, fig, caption: str) -> None:
        self.figures[key] = (fig, caption)
        self.blocks.append(("figure", key))

    def target(self, t: Target) -> Target:
        self.targets.append(t)
        return t

    def _file(self, key: str, ext: str) -> str:
        return f"{self.name}.{ext}" if key in ("", "main") else f"{self.name}_{key}.{ext}"

    def write(self, out_dir: str | os.PathLike) -> Path:
        """Write the .md, .csv, .json and .png files into out_dir; return the .md path."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        seconds = time.perf_counter() - self.started
        png_notes: dict[str, str | None] = {}
        for key, (fig, _caption) in self.figures.items():
            path = out / self._file(key, "png")
            if path.exists():
                path.unlink()
            png_notes[key] = "not drawn (--no-png)" if self.no_png else save_png(fig, path)
        lines = [f"### {self.title}", "",
                 f"`python -m benchmarks.{self.name} --size {self.size}` · {machine_line(self.machine)} "
                 f"Took {seconds:.0f} s.", ""]
        if self.targets:
            lines += ["Targets:", ""] + [f"- {t.text()}" for t in self.targets] + [""]
        for kind, value in self.blocks:
            if kind == "text":
                lines += [value, ""]
            elif kind in ("table", "detail"):
                df, formats = self.tables[value]
                table = markdown_table(df, formats)
                if kind == "detail":  # `python -m benchmarks` puts a link to the CSV in the README instead
                    table = f"{DETAIL_START.format(csv=self._file(value, 'csv'))}\n{table}\n{DETAIL_END}"
                lines += [table, ""]
            else:
                _fig, caption = self.figures[value]
                note = png_notes.get(value)
                if note is None:
                    lines += [f"![{caption}]({self._file(value, 'png')})", ""]
                else:
                    lines += [f"({caption}: figure skipped: {note})", ""]
        md = out / f"{self.name}.md"
        md.write_text("\n".join(lines).rstrip() + "\n")
        machine_cols = {f"machine_{k}": v for k, v in self.machine.items() if k in ("cores", "torch", "threads")}
        for key, (df, _formats) in self.tables.items():
            frame = df.copy()
            for k, v in machine_cols.items():
                frame[k] = v
            frame.to_csv(out / self._file(key, "csv"), index=False)
        blob = {"name": self.name, "title": self.title, "size": self.size, "machine": self.machine,
                "seconds": round(seconds, 2), "targets": [t.to_dict() for t in self.targets],
                "meta": self.meta,
                "tables": {k: json.loads(df.to_json(orient="records")) for k, (df, _f) in self.tables.items()},
                "figures": {k: (png_notes.get(k) or self._file(k, "png")) for k in self.figures}}
        (out / f"{self.name}.json").write_text(json.dumps(blob, indent=1, default=str) + "\n")
        return md


def run_main(main: Callable[[argparse.Namespace], Report], description: str,
             argv: Sequence[str] | None = None, parse: Callable | None = None) -> int:
    """Parse the common arguments (or the benchmark's own, with `parse`), run `main(args)`, write its
    report, print where."""
    import torch

    args = parse(argv) if parse is not None else parser(description).parse_args(argv)
    previous = torch.get_num_threads()
    set_threads(args.threads)
    try:
        report = main(args)
        report.no_png = args.no_png
        md = report.write(args.out)
    finally:
        torch.set_num_threads(previous)  # callers in the same process (the smoke test) keep theirs
    print(md.read_text())
    print(f"wrote {md}", file=sys.stderr)
    return 0


# ----------------------------------------------------------------- engine runs
def run_comparison(config, runs_dir: str | os.PathLike, progress: str = "") -> tuple[pd.DataFrame, list, dict]:
    """Run `config` with twophase.training.run.run_experiment; return (metrics, events, summary).

    The run is written under runs_dir (a temporary folder, normally) like any other run.
    progress: when given, a line per epoch record goes to stderr, starting with it.
    """
    from twophase.training.run import run_experiment

    records: list[dict] = []
    events: list[dict] = []
    started = time.perf_counter()

    def on_record(record: dict) -> None:
        records.append(record)
        if progress:
            print(f"  {progress}: {record.get('arm')} epoch {record.get('epoch')} loss "
                  f"{record.get('train_loss', float('nan')):.4g} ({time.perf_counter() - started:.0f} s)",
                  file=sys.stderr, flush=True)

    summary = run_experiment(config, str(runs_dir), on_record=on_record, on_event=events.append)
    if summary["status"] == "failed":
        raise RuntimeError(f"run failed: {summary.get('error')}")
    return pd.DataFrame(records), events, summary


def cost_to_reach(part: pd.DataFrame, target_loss: float) -> tuple[float, float, float]:
    """(epoch, data passes, seconds) of the first epoch of `part` (one arm's records) whose
    training loss is at or below target_loss; NaNs when never reached."""
    part = part[part["epoch"] > 0].sort_values("epoch")
    hit = part[part["train_loss"] <= target_loss]
    if hit.empty or not math.isfinite(target_loss):
        return math.nan, math.nan, math.nan
    row = hit.iloc[0]
    return float(row["epoch"]), float(row["data_passes"]), float(row["seconds"])
