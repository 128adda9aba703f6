"""The command line: `python -m twophase run|resume|list|show|export|reproduce ...`.

Every RunConfig field has a flag (`--field-name`, plus a few short aliases).
Bad flags exit with code 2 and a message naming the flag and its allowed
values; no traceback for a user mistake.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import signal
import sys
import threading
from pathlib import Path

from twophase import runs
from twophase.config import RunConfig
from twophase.errors import ConfigError, TwophaseError
from twophase.schema import RunSummary

# Flags that read better than the field name (field -> extra spellings).
ALIASES = {
    "data_root": ["--data-dir"],
    "cg_dtype": ["--dtype"],
    "cg_beta": ["--beta"],
    "tolerance": ["--tol"],
    "full_batch_iters": ["--cg-iters-per-epoch"],  # its name before it also counted L-BFGS iterations
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


def _threads(text: str):
    return "auto" if text.strip().lower() == "auto" else _int(text)


def _converter(f: dataclasses.Field):
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    if f.name == "threads":
        return _threads, "auto|N", default
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
    for f in dataclasses.fields(RunConfig):
        conv, metavar, default = _converter(f)
        shown = ",".join(default) if isinstance(default, list) else default
        help_text = f"default: {shown!r}. {_allowed_text(f.name)}".strip()
        run.add_argument(flag(f.name), *ALIASES.get(f.name, []), dest=f.name, type=conv, metavar=metavar,
                         default=argparse.SUPPRESS, help=help_text)
    run.add_argument("--switch-sweep", type=_list, default=None, metavar="S,S",
                     help="add one two-phase branch per switch point, all from the same Adam trunk: epochs "
                          "(300), percentages of the epochs (30%%) or 'paper' (the paper's rule); e.g. "
                          "--switch-sweep 3,100,300,600. Without --arms the run's arms are Adam and these branches.")
    run.add_argument("--config", help="a JSON file with config fields (flags override it)")
    run.add_argument("--runs-dir", dest="runs_dir_run", default=None, help="runs directory")
    run.add_argument("--json", action="store_true", help="print the summary as JSON on the last line")
    run.add_argument("--quiet", action="store_true", help="no progress lines")
    run.add_argument("--run-id", default=None, metavar="YYYYmmdd-HHMMSS-xxxxxx",
                     help="id of the new run folder (default: a fresh one); it must not exist yet")

    res = sub.add_parser("resume", help="continue a stopped, interrupted or failed run from its checkpoint",
                         description="The run's metrics.csv and events.jsonl are rewound to its last checkpoint "
                                     "(every --checkpoint-every epochs, and whenever a run is stopped) and it "
                                     "trains on in the same folder with the same config.")
    res.add_argument("run_id")
    res.add_argument("--runs-dir", dest="runs_dir_run", default=None)
    res.add_argument("--json", action="store_true", help="print the summary as JSON on the last line")
    res.add_argument("--quiet", action="store_true", help="no progress lines")

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

    rep = sub.add_parser(
        "reproduce", help="run the paper's Table 1 protocol at a chosen scale and set the results beside it",
        description="Each cell (model x dataset x seed) is an ordinary run tagged reproduce:<id>; cells already "
                    "done are not run again (run the same command to resume). Protocol: MSE loss, batch 512, "
                    "Adam over the whole budget against two-phase with Adam for the first 30% of the epochs "
                    "then CG (golden-section line search). Writes table1.csv, comparison.csv, cells.csv and "
                    "table1.md.")
    rep.add_argument("--models", type=_list, default=None, metavar="A,B",
                     help="models (default: the paper's five: vit-mlp, vit-nomlp, vit-nomlp-wkewq, "
                          "vit-nomlp-wkewq-wvwo, vgg5-max-relu)")
    rep.add_argument("--datasets", type=_list, default=None, metavar="A,B",
                     help="datasets (default: mnist; cifar10 and cifar100 need their files in the data folder)")
    rep.add_argument("--scale", choices=["paper", "long", "small"], default="small",
                     help="paper: the full datasets, 1000 epochs (700 for vit-mlp), a GPU job; long: the paper's "
                          "budgets on 1024 training / 1000 validation images with a switch sweep (3, 10%%, 30%%, "
                          "60%%, the paper's rule) from each cell's trunk, hours per model on 2 CPU cores; small "
                          "(default): 1024 / 1000 images, 60 epochs (42 for vit-mlp), about 15 minutes per model")
    rep.add_argument("--epochs", type=_int, default=None, metavar="N",
                     help="base budget instead of the scale's (vit-mlp gets 70%% of it, as in the paper)")
    rep.add_argument("--subset", type=_optional_int, default=argparse.SUPPRESS, metavar="N|all",
                     help="training images instead of the scale's (all: the whole training split)")
    rep.add_argument("--val-subset", type=_optional_int, default=argparse.SUPPRESS, metavar="N|all",
                     help="validation images instead of the scale's (all: the whole test split)")
    rep.add_argument("--seeds", type=lambda t: [_int(x) for x in _list(t)], default=[0], metavar="S,S",
                     help="initial-weight seeds, one cell each (default: 0)")
    rep.add_argument("--adaptive", action="store_true",
                     help="also run the adaptive switch rule (tolerance 0.9) as a third arm")
    rep.add_argument("--out", default=None, metavar="DIR",
                     help="folder for table1.csv, comparison.csv, cells.csv, table1.md (default: <runs dir>/reproductions/<id>)")
    rep.add_argument("--data-dir", default="", metavar="DIR", help="dataset folder (default: $TWOPHASE_DATA or ./data)")
    rep.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    rep.add_argument("--threads", type=_int, default=0, metavar="N", help="torch threads (0: torch's default)")
    rep.add_argument("--plan", action="store_true", help="only print the cells and whether they are done")
    rep.add_argument("--runs-dir", dest="runs_dir_run", default=None, metavar="DIR", help="runs directory")
    rep.add_argument("--quiet", action="store_true", help="no progress lines")

    return parser


def _runs_dir(args) -> str:
    return getattr(args, "runs_dir_run", None) or args.runs_dir or runs.default_runs_dir()


def _fmt(value, spec=".4g") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(value, spec) if isinstance(value, (int, float)) else str(value)


def progress_line(record: dict, epochs: int) -> str:
    return (f"[{record['arm']:>12}] epoch {record['epoch']:>4}/{epochs} {record['phase']:<5} "
            f"loss {_fmt(record['train_loss'], '.4e')}  acc {_fmt(record['train_acc'], '.3f')}  "
            f"val_acc {_fmt(record['val_acc'], '.3f')}  |g| {_fmt(record['grad_norm'], '.3e')} "
            f"(max {_fmt(record['grad_norm_max'], '.3e')})  passes {_fmt(record['data_passes'], '.1f')}  "
            f"{_fmt(record['seconds'], '.1f')}s")


def event_line(event: dict) -> str:
    if event["kind"] == "switch":
        threshold = event.get("threshold")
        why = f": |g| {_fmt(event.get('value'), '.3e')} <= threshold {_fmt(threshold, '.3e')}" \
            if threshold is not None else " (fixed switch epoch)"
        return f"[{event['arm']:>12}] >>> switch to the second phase after epoch {event['epoch']}{why}"
    if event["kind"] == "peak":
        return f"[{event['arm']:>12}]     gradient-norm peak at epoch {event['epoch']}: {_fmt(event.get('value'), '.3e')}"
    return f"[{event['arm']:>12}] !!! {event['kind']} at epoch {event['epoch']}"


def config_from_args(args) -> RunConfig:
    values = {}
    if getattr(args, "config", None):
        from twophase.runs.files import MAX_JSON_BYTES, UnreadableFile, parse_json, read_bounded

        try:
            text = read_bounded(args.config, MAX_JSON_BYTES).decode("utf-8")
        except (OSError, UnreadableFile, UnicodeDecodeError) as exc:
            raise ConfigError({"--config": f"could not read {args.config}: {exc}"}) from None
        loaded, problem = parse_json(text, args.config)
        if problem:
            raise ConfigError({"--config": problem})
        if not isinstance(loaded, dict):
            raise ConfigError({"--config": f"{args.config} must hold a JSON object of config fields, "
                                           f"got {type(loaded).__name__}"})
        values.update(loaded)
    for f in dataclasses.fields(RunConfig):
        if hasattr(args, f.name):
            values[f.name] = getattr(args, f.name)
    sweep = getattr(args, "switch_sweep", None)
    if sweep:
        from twophase.training.strategies import sweep_arms

        try:
            branches = sweep_arms(sweep)
        except ValueError as exc:
            raise ConfigError({"--switch-sweep": str(exc)}) from None
        base = values.get("arms") if hasattr(args, "arms") or "arms" in values else ["adam"]
        values["arms"] = list(base) + [b for b in branches if b not in base]
    return RunConfig.from_dict(values)


def _run_id(args, runs_dir) -> str:
    """The --run-id given (checked: well formed, not taken) or a new id."""
    if args.run_id is None:
        return runs.new_run_id()
    try:
        run_id = runs.check_run_id(args.run_id)
    except (TypeError, ValueError) as exc:
        raise ConfigError({"--run-id": str(exc)})
    if runs.run_path(runs_dir, run_id).exists():
        raise ConfigError({"--run-id": f"run {run_id} already exists in {runs_dir}; choose another id"})
    return run_id


def _processes(config: RunConfig, world: int) -> RunConfig:
    """The config with `processes` = the number of processes torchrun started (WORLD_SIZE)."""
    if world > 1:
        if config.processes not in (1, world):
            raise ConfigError({"processes": f"is {config.processes}, but torchrun started {world} processes; "
                                            f"leave it out or make it {world}"})
        return config.replace(processes=world)
    if config.processes > 1:
        raise ConfigError({"processes": f"{config.processes} processes need PyTorch's launcher: "
                                        f"torchrun --nproc-per-node={config.processes} -m twophase run ... "
                                        "(the app launches it for you)"})
    return config


@contextlib.contextmanager
def stop_on_signals(message: str | None):
    """A stop flag for a run in this process: the first Ctrl-C or SIGTERM sets it (the run ends
    `stopped` after the current mini-batch or CG iteration, everything logged kept); a second one
    aborts at once (KeyboardInterrupt: the run still ends `stopped`, the CLI exits 130). message:
    what to print on the first signal (None: nothing, e.g. on ranks other than 0)."""
    stop = threading.Event()

    def on_signal(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        if message:
            print(f"\n{message} (Ctrl-C again to abort)...", file=sys.stderr, flush=True)

    previous = {}
    if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def cmd_run(args) -> int:
    from twophase import data as data_mod
    from twophase import distributed

    config = _processes(config_from_args(args), distributed.world_size_from_env())
    runs_dir = _runs_dir(args)
    run_id = _run_id(args, runs_dir)
    data_mod.require(config.dataset, config.data_root or None)  # a missing dataset: refused, nothing written
    if config.seeds > 1 and config.processes > 1:
        raise ConfigError({"seeds": "several seeds train one after another in one process; under torchrun "
                                    "start one run per seed (--seed N) instead"})
    if config.seeds > 1:
        return _train_seeds(config, runs_dir, run_id, args)
    dist = distributed.init_from_env(config.device)  # None for one process
    quiet = args.quiet or not (dist is None or dist.is_main)  # under torchrun, rank 0 speaks for all
    if not quiet:
        where = f", {dist.world} processes ({dist.backend})" if dist is not None else ""
        print(f"run {run_id}: {config.model} on {config.dataset}, arms {', '.join(config.arms)}, "
              f"{config.epochs} epochs{where} -> {os.path.join(runs_dir, run_id)}", flush=True)
    return _train(config, runs_dir, run_id, args, dist=dist, quiet=quiet)[0]


def _train_seeds(config: RunConfig, runs_dir: str, first_id: str, args) -> int:
    """config.seeds runs, one per seed, in one group named by the first run's id; then the
    median and range over the seeds. A Ctrl-C stops the current seed and the ones after it."""
    from twophase import seeds
    from twophase.config import seed_configs
    from twophase.training.strategies import arm_label

    members = seed_configs(config, group=first_id)
    ids = [first_id] + [runs.new_run_id() for _ in members[1:]]
    summaries, code = [], 0
    for number, (member, run_id) in enumerate(zip(members, ids), 1):
        if not args.quiet:
            print(f"seed {number} of {len(members)} (seed {member.seed}): run {run_id}: {member.model} on "
                  f"{member.dataset}, arms {', '.join(member.arms)}, {member.epochs} epochs "
                  f"-> {os.path.join(runs_dir, run_id)}", flush=True)
        done, summary = _train(member, runs_dir, run_id, args, dist=None, quiet=args.quiet, print_json=False)
        code, summaries = max(code, done), summaries + [summary]
        if summary["status"] == "stopped":
            break
    frames = [runs.load_run(runs_dir, run_id).metrics for run_id in ids[:len(summaries)]]
    table = seeds.seed_table(frames)
    labels = {arm: arm_label(arm) for arm in table["arm"]}
    if not args.quiet:
        print(f"over {len(summaries)} seeds ({members[0].seed}-{members[len(summaries) - 1].seed}), group {first_id}:")
        print(f"  {'arm':<28}{'train loss: median':>20}{'min':>12}{'max':>12}{'val acc':>9}")
        for row in table.to_dict("records"):
            print(f"  {labels[row['arm']]:<28}{_fmt(row['train loss (median)'], '.4e'):>20}"
                  f"{_fmt(row['train loss (min)'], '.4e'):>12}{_fmt(row['train loss (max)'], '.4e'):>12}"
                  f"{_fmt(row['val acc (median)'], '.3f'):>9}")
        for line in seeds.headline(table, labels):
            print(f"  {line}")
    if args.json:
        records = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
                   for row in table.to_dict("records")]
        print(json.dumps({"group": first_id, "runs": summaries, "seeds": records}, default=str), flush=True)
    return code


def cmd_resume(args) -> int:
    from twophase import data as data_mod
    from twophase.training.checkpoint import resume_config

    runs_dir = _runs_dir(args)
    config, info = resume_config(runs_dir, args.run_id)  # ResumeError (exit 2) says why it cannot be
    data_mod.require(config.dataset, config.data_root or None)
    if not args.quiet:
        print(f"run {args.run_id}: resuming {config.model} on {config.dataset} after epoch {info['epoch']} "
              f"of {config.epochs} -> {os.path.join(runs_dir, args.run_id)}", flush=True)
    return _train(config, runs_dir, args.run_id, args, dist=None, quiet=args.quiet, resume=True)[0]


def _train(config: RunConfig, runs_dir: str, run_id: str, args, dist, quiet: bool, resume: bool = False,
           print_json: bool = True) -> tuple[int, dict]:
    """Train run `run_id` with progress lines (unless quiet) and a stop on Ctrl-C; print its table.
    Returns the exit code and the run's summary."""
    from twophase import distributed
    from twophase.training.run import run_experiment

    main_rank = dist is None or dist.is_main
    out = sys.stdout

    def on_record(record):
        if not quiet:
            print(progress_line(record, config.epochs), file=out, flush=True)

    def on_event(event):
        if not quiet:
            print(event_line(event), file=out, flush=True)

    with stop_on_signals("stopping after the current mini-batch" if main_rank else None) as stop:
        summary = run_experiment(config, runs_dir, run_id, should_stop=stop.is_set, on_record=on_record,
                                 on_event=on_event, dist=dist, resume=resume)
    if summary["status"] != "failed":
        distributed.close(dist)
    else:  # the reason belongs on stderr, also with --quiet (it is in summary.json too)
        print(f"error: run {run_id} failed: {summary.get('error')}", file=sys.stderr, flush=True)
    if not quiet:
        print(summary_table(summary), flush=True)
    if args.json and main_rank and print_json:
        print(json.dumps(summary, default=str), flush=True)
    if summary["status"] == "stopped" and not quiet and dist is None:
        print(f"resume it with: python -m twophase resume {run_id}", flush=True)
    return (0 if summary["status"] in ("completed", "stopped", "diverged") else 1), summary


SUMMARY_COLUMNS = (("status", "status", "s"), ("epochs", "epochs", "d"), ("switch_epoch", "switch", "d"),
                   ("train_loss", "train loss", ".4e"), ("val_loss", "val loss", ".4e"), ("train_acc", "train acc", ".3f"),
                   ("val_acc", "val acc", ".3f"), ("data_passes", "passes", ".1f"), ("seconds", "seconds", ".1f"))
RATIO_AXES = (("epoch", lambda at: f"epoch {at:g}"), ("data_passes", lambda at: f"{at:.1f} data passes"),
              ("seconds", lambda at: f"{at:.2g} s" if at < 1 else f"{at:.1f} s"))  # a tiny run's 0.04 s, not "0.0 s"


def summary_table(summary: dict) -> str:
    """One line per arm, then each arm's training loss against Adam's at equal epochs, data
    passes and wall time. Tolerates a summary.json with the wrong types (shows what it can)."""
    from twophase.training.strategies import arm_label

    read = RunSummary.from_dict(summary)
    lines = [f"status: {read.status}" + (f" ({read.error})" if read.error else "")]
    if not read.arms:
        return lines[0]
    arms = {name: arm.to_dict() for name, arm in read.arms.items()}
    labels = {name: arm.label or arm_label(name) for name, arm in read.arms.items()}
    width = max(12, *(len(t) for t in labels.values())) + 2
    cells = {key: [] for key, _, _ in SUMMARY_COLUMNS}
    for name, figures in arms.items():
        for key, _, spec in SUMMARY_COLUMNS:
            v = figures.get(key)
            cells[key].append(str(v) if isinstance(v, str) else _fmt(v, spec if spec != "d" else "g")
                              if isinstance(v, (int, float, type(None))) else str(v))
    widths = {key: max(len(title), *(len(c) for c in cells[key])) + 2 for key, title, _ in SUMMARY_COLUMNS}
    lines.append(f"{'arm':<{width}}" + "".join(f"{title:>{widths[key]}}" for key, title, _ in SUMMARY_COLUMNS))
    for i, name in enumerate(arms):
        lines.append(f"{labels[name]:<{width}}" + "".join(f"{cells[key][i]:>{widths[key]}}"
                                                         for key, _, _ in SUMMARY_COLUMNS))
    compared = [(name, figures["vs_adam"]) for name, figures in arms.items() if isinstance(figures.get("vs_adam"), dict)]
    if compared:
        lines.append("training loss against Adam's (below 1: lower than Adam's):")
    for name, ratios in compared:
        parts = []
        for axis, where in RATIO_AXES:
            r = ratios.get(axis)
            if isinstance(r, dict) and isinstance(r.get("ratio"), (int, float)) and isinstance(r.get("at"), (int, float)):
                parts.append(f"{r['ratio']:.3g} at {where(r['at'])}")
        if parts:
            lines.append(f"  {labels[name]}: " + ", ".join(parts))
    return "\n".join(lines)


def cmd_list(args) -> int:
    runs_dir = _runs_dir(args)
    runs.mark_interrupted(runs_dir)
    found = runs.list_runs(runs_dir)
    if args.json:
        print(json.dumps([{"run_id": r.run_id, "status": r.status, "damaged": r.damaged} for r in found]))
        return 0
    if not found:
        print(f"no runs in {runs_dir}")
    for r in found:
        cfg = r.config if isinstance(r.config, dict) else {}
        if r.damaged:
            print(f"{r.run_id}  DAMAGED: {r.damaged}")
        else:
            arms = cfg.get("arms")
            arms = ",".join(map(str, arms)) if isinstance(arms, list) else str(arms)
            print(f"{r.run_id}  {r.status:<11} {str(cfg.get('model', '?')):<22} {str(cfg.get('dataset', '?')):<9} "
                  f"tol {cfg.get('tolerance', '?')}  arms {arms}")
    return 0


def _run_id_given(args) -> str:
    """The run id of show / export, checked: a malformed id is a user mistake naming run_id."""
    try:
        return runs.check_run_id(args.run_id)
    except (TypeError, ValueError) as exc:
        raise ConfigError({"run_id": str(exc)}) from None


def _load(args) -> "runs.Run":
    run_id = _run_id_given(args)
    try:
        return runs.load_run(_runs_dir(args), run_id)
    except FileNotFoundError:
        raise TwophaseError(f"run {run_id} is not in {_runs_dir(args)} (python -m twophase list shows the runs there)") \
            from None


def cmd_show(args) -> int:
    run = _load(args)
    if args.json:
        print(json.dumps(run.summary, default=str))
    else:
        print(summary_table(run.summary or {"status": "unknown"}))
    return 0


def cmd_export(args) -> int:
    run_id = _load(args).run_id  # a bad or missing run is named before anything is written
    dest = args.output or f"{run_id}.{args.format}"
    if dest == "-":  # standard output, for a pipe
        sys.stdout.buffer.write(runs.export_bytes(_runs_dir(args), run_id, args.format))
        sys.stdout.flush()
        return 0
    target = Path(dest).expanduser()
    if (target.exists() or target.is_symlink()) and not target.is_dir() and not target.is_file() \
            or target.is_symlink():
        raise ConfigError({"--output": f"{dest} is not a regular file (a device, a FIFO or a link); name a "
                                       "file to write, or - for standard output"})
    try:
        runs.export_run(_runs_dir(args), run_id, args.format, dest)
    except FileNotFoundError as exc:
        if not target.parent.is_dir():  # the folder of -o does not exist
            raise ConfigError({"--output": str(exc).removeprefix("dest: ")}) from None
        raise ConfigError({"--output": f"{dest} cannot be written ({exc.strerror or exc})"}) from None
    except OSError as exc:  # a read-only folder, a full disk: name the file asked for, not the temp file
        if exc.filename is None or Path(exc.filename).parent != target.parent:
            raise
        raise ConfigError({"--output": f"{dest} cannot be written ({exc.strerror or exc})"}) from None
    print(dest)
    return 0


def cmd_reproduce(args) -> int:
    from twophase import paper

    extra = {k: getattr(args, k) for k in ("subset", "val_subset") if hasattr(args, k)}
    try:
        plan = paper.make_plan(args.models, args.datasets, scale=args.scale, epochs=args.epochs,
                                   seeds=args.seeds, adaptive=args.adaptive, data_root=args.data_dir,
                                   device=args.device, threads=args.threads, **extra)
    except ConfigError as exc:  # name the flags of this command
        raise ConfigError({flag(k): v for k, v in exc.errors.items()})
    runs_dir = _runs_dir(args)
    if args.plan:
        print(f"reproduction {plan.id} ({plan.describe()}) in {runs_dir}")
        for state in paper.cell_states(plan, runs_dir):
            print(f"  {state.status:<6} {state.cell.label}" + (f"  [run {state.run_id}]" if state.run_id else ""))
        return 0
    with stop_on_signals("stopping after the current mini-batch; the cells done so far are kept") as stop:
        outcome = paper.run_plan(plan, runs_dir, on_line=None if args.quiet else
                                 (lambda line: print(line, flush=True)), should_stop=stop.is_set)
    paths = paper.write_outputs(plan, runs_dir, args.out)
    if not args.quiet:
        print(open(paths["markdown"], encoding="utf-8").read())
    print(f"wrote {', '.join(paths.values())}", flush=True)
    return 0 if not outcome["left"] else 1


def _bug_report(exc: BaseException) -> str:
    """Write the traceback of an unexpected error to a log file; its path (or why there is none)."""
    import tempfile
    import time
    import traceback

    try:
        fd, path = tempfile.mkstemp(prefix=time.strftime("twophase-error-%Y%m%d-%H%M%S-"), suffix=".log")
        with os.fdopen(fd, "w") as fh:
            fh.write(f"python -m twophase {' '.join(sys.argv[1:])}\n\n")
            fh.write("".join(traceback.format_exception(exc)))
        return path
    except OSError as log_error:
        return f"(no log written: {log_error})"


def _os_error(exc: OSError) -> str:
    """A short account of a failed file operation, naming the file."""
    where = exc.filename if exc.filename is not None else None
    what = exc.strerror or str(exc)
    return f"{where}: {what}" if where else what


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 done; 2 something the user can fix: a bad flag or field (the message names it
    and what it allows), a missing dataset or run, a folder or file that cannot be read or written
    (named); 1 a failed run (its reason on stderr) or a bug (a short message and the log file
    holding the traceback)."""
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 with argparse's message on a malformed flag
    try:
        return {"run": cmd_run, "list": cmd_list, "show": cmd_show, "export": cmd_export,
                "reproduce": cmd_reproduce, "resume": cmd_resume}[args.command](args)
    except ConfigError as exc:
        for field_name, message in exc.errors.items():
            name = flag(field_name) if field_name in {f.name for f in dataclasses.fields(RunConfig)} else field_name
            print(f"error: {name}: {message}", file=sys.stderr)
        return 2
    except TwophaseError as exc:  # a dataset that is not installed, no GPU, a run that does not exist
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `python -m twophase show RUN | head`: the reader has what it wanted
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    except OSError as exc:  # a runs folder or file that cannot be read or written, a full disk
        print(f"error: {_os_error(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: say so, keep the traceback
        print(f"error: {type(exc).__name__}: {exc}\nThis is a bug in twophase, not a mistake in the command; "
              f"the traceback is in {_bug_report(exc)}", file=sys.stderr)
        return 1
