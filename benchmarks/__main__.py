"""Run every benchmark, then rewrite README.md's benchmark section (between its markers only).

    python -m benchmarks                      # all, --size full (what `make bench` runs)
    python -m benchmarks --size small --only overhead,cg_vs_scipy --no-readme
    python -m benchmarks --size issue --only optimizers,switch_rule   # hours: results/issue/
    python -m benchmarks --no-run             # rewrite the README from the results on disk

`--size issue` writes into the results folder's `issue/` subfolder, and the README shows
those results in a part of their own after the `full` ones, so neither overwrites the other.

Each benchmark runs in its own process (`python -m benchmarks.<name>`), so one that fails
leaves the others' results, and the section says which failed and why.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import BENCHMARKS, common

START = "<!-- bench:start -->"
END = "<!-- bench:end -->"


def replace_section(text: str, body: str) -> str:
    """`text` with everything between the START and END markers replaced by `body`.

    Raises ValueError unless each marker occurs exactly once, START before END.
    """
    if text.count(START) != 1 or text.count(END) != 1:
        raise ValueError(f"README must contain {START} and {END} exactly once each")
    head, rest = text.split(START, 1)
    old, tail = rest.split(END, 1)
    if END in head:
        raise ValueError(f"{END} comes before {START}")
    return head + START + "\n" + body.strip() + "\n" + END + tail


def _link_prefix(out_dir: Path, readme: Path) -> str:
    rel = os.path.relpath(out_dir.resolve(), readme.resolve().parent)
    return "" if rel == "." else rel.replace(os.sep, "/") + "/"


ISSUE_SUBDIR = "issue"


def _demoted(text: str, suffix: str) -> str:
    """A benchmark's section one heading level down, its title followed by `suffix`."""
    text = re.sub(r"^### (.*)$", lambda m: f"#### {m.group(1)}{suffix}", text, count=1, flags=re.M)
    return text


def section(names: list[str], out_dir: Path, readme: Path, size: str, outcomes: dict, seconds: float,
            issue_names: list[str] = ()) -> str:
    """The README section from the benchmarks' .md and .json results in out_dir, then those of
    `issue_names` in out_dir/issue (the `--size issue` runs) in a part of their own."""
    rows, parts, machine, total_s = [], [], None, 0.0
    for name, folder, suffix in ([(n, out_dir, "") for n in names]
                                 + [(n, out_dir / ISSUE_SUBDIR, " (issue size)") for n in issue_names]):
        prefix = _link_prefix(folder, readme)
        # this call's outcomes belong to the folder it wrote into
        outcome = outcomes.get(name, "") if (folder is out_dir) != (size == "issue") else ""
        md, js = folder / f"{name}.md", folder / f"{name}.json"
        if outcome.startswith("failed") or not md.exists():
            parts.append(f"### {name}{suffix}\n\n{outcome or 'no result'}")
            rows.append(f"| {name}{suffix} | - | {outcome or 'no result'} | - |")
            continue
        text = md.read_text()
        if suffix:
            text = _demoted(text, suffix)
        # figure links are relative to the results folder; the README sits elsewhere
        text = re.sub(r"\]\(([^)/:]+\.png)\)", lambda m: f"]({prefix}{m.group(1)})", text)
        # long per-run tables stay in the results folder; the README links them
        text = re.sub(r"<!-- detail (\S+) -->\n.*?<!-- /detail -->",
                      lambda m: f"(Table: [{m.group(1)}]({prefix}{m.group(1)}); also in "
                                f"[{name}.md]({prefix}{name}.md).)", text, flags=re.S)
        total_s += float(json.loads(js.read_text()).get("seconds", 0)) if js.exists() else 0.0
        parts.append(text.strip())
        blob = json.loads(js.read_text()) if js.exists() else {}
        machine = machine or blob.get("machine")
        for t in blob.get("targets", []):
            measured = t.get("measured")
            shown = "n/a" if measured is None or (isinstance(measured, float) and measured != measured) \
                else common.fmt_value(float(measured), ".3g")
            op = ">=" if t.get("higher_is_better") else "<="
            rows.append(f"| {name}{suffix} | {t['name']} {op} {common.fmt_value(float(t['target']), '.3g')} | {shown} | "
                        f"{'met' if t.get('met') else '**missed**'} |")
    if issue_names:
        first_issue = len(names)
        parts.insert(first_issue, "### Issue sizes\n\nThe same benchmarks at the sizes the issue asks for "
                                  "(`python -m benchmarks --size issue --only optimizers,switch_rule`, results in "
                                  f"[{ISSUE_SUBDIR}/]({_link_prefix(out_dir / ISSUE_SUBDIR, readme)})).")
    ran = [n for n in names if n in outcomes] if size != "issue" else \
        [f"{n} (issue size)" for n in issue_names if n in outcomes]
    ran_text = ("none (it rewrote this section from the results on disk)" if not ran
                else "all of them" if size != "issue" and len(ran) == len(names) else ", ".join(ran))
    head = [f"Written by `python -m benchmarks` (`make bench`: `--size full`); the last call (`--size {size}`) ran "
            f"{ran_text} in {seconds / 60:.1f} min; the "
            f"benchmarks below took {total_s / 60:.1f} min in all. Each section's first line gives its own "
            "command, size, machine and date. " + (common.machine_line(machine) if machine else ""),
            "",
            "Sizes: `full` is what fits a shared 2-core machine in about 20 minutes; each benchmark's section "
            "says exactly what ran. The issue's larger optimizer and switch-rule configurations (vit-mlp and "
            "vgg5-max-relu on 10k MNIST, 3 seeds) are `--size issue` (`make bench-issue`, about 2 h here)"
            + (", in the part \"Issue sizes\" at the end" if issue_names else "") + ". Results are as measured, "
            "including where two-phase loses to Adam and where a target is missed.",
            "",
            "| benchmark | target | measured | |",
            "|---|---|---|---|",
            *rows,
            ""]
    return "\n".join(head) + "\n" + "\n\n".join(parts) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Run the benchmarks and rewrite README.md's benchmark section.")
    p.add_argument("--size", choices=common.SIZES, default="full", help=common.SIZE_HELP)
    p.add_argument("--only", default="", help=f"comma-separated subset of: {', '.join(BENCHMARKS)}")
    p.add_argument("--out", default=str(common.RESULTS_DIR),
                   help=f"results folder (--size issue writes into its {ISSUE_SUBDIR}/ subfolder)")
    p.add_argument("--readme", default=str(common.ROOT / "README.md"), help="README to update between its markers")
    p.add_argument("--no-readme", action="store_true", help="leave the README alone")
    p.add_argument("--threads", type=int, default=common.DEFAULT_THREADS)
    p.add_argument("--no-png", action="store_true")
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds one benchmark may run (default 3600, 6 h with --size issue)")
    p.add_argument("--no-run", action="store_true", help="run nothing; rewrite the README from the results on disk")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        p.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    if args.timeout is None:
        args.timeout = 6 * 3600.0 if args.size == "issue" else 3600.0
    base = Path(args.out)
    out = base / ISSUE_SUBDIR if args.size == "issue" else base
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    outcomes = {}
    for name in ([] if args.no_run else names):
        cmd = [sys.executable, "-m", f"benchmarks.{name}", "--size", args.size, "--out", str(out),
               "--threads", str(args.threads)] + (["--no-png"] if args.no_png else [])
        print(f"== {name} ({' '.join(cmd[1:])})", flush=True)
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=common.ROOT, capture_output=True, text=True, timeout=args.timeout)
            ok = proc.returncode == 0
            log = proc.stdout + proc.stderr
        except subprocess.TimeoutExpired as exc:
            ok, log = False, f"timed out after {args.timeout:.0f} s\n{exc.stdout or ''}"
        log_path = out / f"{name}.log"
        dt = time.perf_counter() - t0
        if ok:
            outcomes[name] = f"ok in {dt:.0f} s"
            if log_path.exists():
                log_path.unlink()
        else:
            log_path.write_text(log if isinstance(log, str) else log.decode(errors="replace"))
            last = [line for line in str(log).strip().splitlines() if line.strip()][-1:] or ["no output"]
            outcomes[name] = f"failed after {dt:.0f} s: {last[0][:300]} (log: {out / (name + '.log')})"
        print(f"   {outcomes[name]}", flush=True)
    total = time.perf_counter() - started
    if not args.no_readme:
        readme = Path(args.readme)
        # every benchmark with results in the folder (one rerun alone keeps the others' sections);
        # each section's first line says its own command, size and date
        ran_here = [] if args.no_run else names
        shown = [n for n in BENCHMARKS if (n in ran_here and args.size != "issue") or (base / f"{n}.md").exists()]
        issue = [n for n in BENCHMARKS if (n in ran_here and args.size == "issue")
                 or (base / ISSUE_SUBDIR / f"{n}.md").exists()]
        body = section(shown, base, readme, args.size, outcomes, total, issue)
        readme.write_text(replace_section(readme.read_text(), body))
        print(f"rewrote the benchmark section of {readme}", flush=True)
    return 0 if all(v.startswith("ok") for v in outcomes.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
