"""The command line: `python -m twophase run|list|show|export ...`.

Every RunConfig field has a flag (`--field-name`, plus a few short aliases).
Bad flags exit with code 2 and a message naming the flag and its allowed
values; no traceback for a user mistake.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import signal
import sys
import threading

from twophase import store
from twophase.config import RunConfig
from twophase.errors import ConfigError, TwophaseError

# Flags that read better than the field name (field -> extra spellings).
ALIASES = {
    "data_root": ["--data-dir"],
    "cg_dtype": ["--dtype"],
    "cg_beta": ["--beta"],
    "tolerance": ["--tol"],
}
NONE_WORDS = ("none", "all", "")


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _optional_int(text: str):
    if text.strip().lower() in NONE_WORDS:
        return None
    return _int(text)


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}")


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}")


def _bool(text: str) -> bool:
    t = text.strip().lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"must be true or false, got {text!r}")


def _list(text: str) -> list:
    return [part.strip() for part in text.split(",") if part.strip()]


def _sizes(text: str) -> dict:
    out = {}
    for part in _list(text):
        key, sep, value = part.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"expected key=N pairs like embed=64,heads=4, got {part!r}")
        out[key.strip()] = _int(value)
    return out


def _converter(f: dataclasses.Field):
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    if f.name in ("subset", "val_subset", "switch_epoch"):
        return _optional_int, "N|none", default
    if f.name == "arms":
        return _list, "A,B", default
    if f.name == "model_sizes":
        return _sizes, "key=N,...", default
    if isinstance(default, bool):
        return _bool, "true|false", default
    if isinstance(default, int):
        return _int, "N", default
    if isinstance(default, float):
        return _float, "X", default
    return str, "TEXT", default


def _allowed_text(name: str) -> str:
    from twophase import config as cfg
    from twophase import data, models

    choices = {
        "model": list(models.names()), "dataset": list(data.names()), "loss": cfg.LOSSES, "arms": cfg.ARMS,
        "cg_beta": cfg.CG_BETAS, "line_search": cfg.LINE_SEARCHES, "cg_dtype": cfg.CG_DTYPES,
        "grad_norm_mode": cfg.GRAD_NORM_MODES, "device": cfg.DEVICES,
    }
    if name in choices:
        return "one of: " + ", ".join(choices[name])
    return ""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m twophase",
                                     description="Two-phase training (Adam, then conjugate gradient) against Adam.")
    parser.add_argument("--runs-dir", default=None, help="runs directory (default: $TWOPHASE_RUNS or ./runs)")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="train the arms of one config and write a run directory")
    defaults = RunConfig()
    for f in dataclasses.fields(RunConfig):
        conv, metavar, default = _converter(f)
        shown = ",".join(default) if isinstance(default, list) else default
        help_text = f"default: {shown!r}. {_allowed_text(f.name)}".strip()
        run.add_argument(flag(f.name), *ALIASES.get(f.name, []), dest=f.name, type=conv, metavar=metavar,
                         default=argparse.SUPPRESS, help=help_text)
    run.add_argument("--config", help="a JSON file with config fields (flags override it)")
    run.add_argument("--runs-dir", dest="runs_dir_run", default=None, help="runs directory")
    run.add_argument("--json", action="store_true", help="print the summary as JSON on the last line")
    run.add_argument("--quiet", action="store_true", help="no progress lines")
    del defaults

    lst = sub.add_parser("list", help="list the runs on disk")
    lst.add_argument("--runs-dir", dest="runs_dir_run", default=None)
    lst.add_argument("--json", action="store_true")

    show = sub.add_parser("show", help="final figures of one run, arms side by side")
    show.add_argument("run_id")
    show.add_argument("--runs-dir", dest="runs_dir_run", default=None)
    show.add_argument("--json", action="store_true")

    export = sub.add_parser("export", help="write a run's metrics as csv, parquet or json")
    export.add_argument("run_id")
    export.add_argument("--format", choices=["csv", "parquet", "json"], default="csv")
    export.add_argument("--output", "-o", default=None, help="file to write (default: <run_id>.<format>)")
    export.add_argument("--runs-dir", dest="runs_dir_run", default=None)

    return parser


def _runs_dir(args) -> str:
    return getattr(args, "runs_dir_run", None) or args.runs_dir or store.default_runs_dir()


def _fmt(value, spec=".4g") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(value, spec) if isinstance(value, (int, float)) else str(value)


def progress_line(record: dict, epochs: int) -> str:
    return (f"[{record['arm']:>10}] epoch {record['epoch']:>4}/{epochs} {record['phase']:<5} "
            f"loss {_fmt(record['train_loss'], '.4e')}  acc {_fmt(record['train_acc'], '.3f')}  "
            f"val_acc {_fmt(record['val_acc'], '.3f')}  |g| {_fmt(record['grad_norm'], '.3e')} "
            f"(max {_fmt(record['grad_norm_max'], '.3e')})  passes {_fmt(record['data_passes'], '.1f')}  "
            f"{_fmt(record['seconds'], '.1f')}s")


def event_line(event: dict) -> str:
    if event["kind"] == "switch":
        return (f"[{event['arm']:>10}] >>> switch to the second phase after epoch {event['epoch']}: "
                f"|g| {event['value']:.3e} <= threshold {event['threshold']:.3e}")
    if event["kind"] == "peak":
        return f"[{event['arm']:>10}]     gradient-norm peak at epoch {event['epoch']}: {event['value']:.3e}"
    return f"[{event['arm']:>10}] !!! {event['kind']} at epoch {event['epoch']}"


def config_from_args(args) -> RunConfig:
    values = {}
    if getattr(args, "config", None):
        try:
            with open(args.config) as fh:
                values.update(json.load(fh))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError({"config": f"could not read {args.config}: {exc}"})
    for f in dataclasses.fields(RunConfig):
        if hasattr(args, f.name):
            values[f.name] = getattr(args, f.name)
    return RunConfig.from_dict(values)


def cmd_run(args) -> int:
    config = config_from_args(args)
    runs_dir = _runs_dir(args)
    stop = threading.Event()

    def on_sigint(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print("\nstopping after the current mini-batch (Ctrl-C again to abort)...", file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGINT, on_sigint) if threading.current_thread() is threading.main_thread() else None
    from twophase.experiment import run_experiment

    out = sys.stdout

    def on_record(record):
        if not args.quiet:
            print(progress_line(record, config.epochs), file=out, flush=True)

    def on_event(event):
        if not args.quiet:
            print(event_line(event), file=out, flush=True)

    run_id = store.new_run_id()
    if not args.quiet:
        print(f"run {run_id}: {config.model} on {config.dataset}, arms {', '.join(config.arms)}, "
              f"{config.epochs} epochs -> {os.path.join(runs_dir, run_id)}", flush=True)
    try:
        summary = run_experiment(config, runs_dir, run_id, should_stop=stop.is_set, on_record=on_record,
                                 on_event=on_event)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    if not args.quiet:
        print(summary_table(summary), flush=True)
    if args.json:
        print(json.dumps(summary, default=str), flush=True)
    return 0 if summary["status"] in ("completed", "stopped", "diverged") else 1


def summary_table(summary: dict) -> str:
    lines = [f"status: {summary['status']}" + (f" ({summary['error']})" if summary.get("error") else "")]
    arms = summary.get("arms") or {}
    if not arms:
        return lines[0]
    keys = ["status", "epochs", "train_loss", "train_acc", "val_loss", "val_acc", "switch_epoch", "peak_epoch",
            "data_passes", "seconds"]
    names = list(arms)
    width = max(12, *(len(n) + 2 for n in names))
    lines.append(f"{'':<14}" + "".join(f"{n:>{width}}" for n in names))
    for key in keys:
        cells = []
        for n in names:
            v = arms[n].get(key)
            cells.append(_fmt(v, ".4e" if key in ("train_loss", "val_loss") else ".4g"))
        lines.append(f"{key:<14}" + "".join(f"{c:>{width}}" for c in cells))
    a, b = arms.get("two-phase", {}), arms.get("adam", {})
    if a.get("train_loss") and b.get("train_loss"):
        lines.append(f"train loss two-phase / adam: {a['train_loss'] / b['train_loss']:.3g}")
    return "\n".join(lines)


def cmd_list(args) -> int:
    runs_dir = _runs_dir(args)
    store.mark_interrupted(runs_dir)
    runs = store.list_runs(runs_dir)
    if args.json:
        print(json.dumps([{"run_id": r.run_id, "status": r.status, "damaged": r.damaged} for r in runs]))
        return 0
    if not runs:
        print(f"no runs in {runs_dir}")
    for r in runs:
        cfg = r.config or {}
        if r.damaged:
            print(f"{r.run_id}  DAMAGED: {r.damaged}")
        else:
            print(f"{r.run_id}  {r.status:<11} {cfg.get('model', '?'):<22} {cfg.get('dataset', '?'):<9} "
                  f"tol {cfg.get('tolerance', '?')}  arms {','.join(cfg.get('arms', []))}")
    return 0


def cmd_show(args) -> int:
    run = store.load_run(_runs_dir(args), args.run_id)
    if args.json:
        print(json.dumps(run.summary, default=str))
    else:
        print(summary_table(run.summary or {"status": "unknown"}))
    return 0


def cmd_export(args) -> int:
    dest = args.output or f"{args.run_id}.{args.format}"
    store.export_run(_runs_dir(args), args.run_id, args.format, dest)
    print(dest)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 with argparse's message on a malformed flag
    try:
        return {"run": cmd_run, "list": cmd_list, "show": cmd_show, "export": cmd_export}[args.command](args)
    except ConfigError as exc:
        for field_name, message in exc.errors.items():
            name = flag(field_name) if field_name in {f.name for f in dataclasses.fields(RunConfig)} else field_name
            print(f"error: {name}: {message}", file=sys.stderr)
        return 2
    except (TwophaseError, ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
