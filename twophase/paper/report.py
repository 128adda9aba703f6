"""A reproduction's results beside the paper's: Table 1, the comparison, the files written."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from twophase import runs
from twophase.analysis import ratio_table, value_within
from twophase.paper import published as paper_figures
from twophase.paper.plan import (ALGORITHM_LABELS, ALGORITHMS, SCALES, TIE_TOLERANCE, Cell, CellState, Plan, cell_states,
                                 epochs_for)


# --------------------------------------------------------------------------- results


@dataclass
class CellResult:
    """A cell's state and, when a run exists, the run read back (metrics, events, summary)."""

    state: CellState
    run: runs.Run | None = None

    @property
    def cell(self) -> Cell:
        return self.state.cell


def collect(plan: Plan, runs_dir=None, include_active: bool = False) -> dict[str, CellResult]:
    """Read the runs of `plan`'s cells: cell key -> CellResult.

    Done cells are loaded; active ones too when include_active (for a live view); the
    others have run None.
    """
    runs_dir = str(runs_dir or runs.default_runs_dir())
    out = {}
    for state in cell_states(plan, runs_dir):
        run = None
        wanted = state.status == "done" or (include_active and state.status == "active")
        if wanted and state.run_id:
            try:
                run = runs.load_run(runs_dir, state.run_id)
            except (FileNotFoundError, ValueError):
                run = None
        out[state.cell.key] = CellResult(state, run)
    return out


def _arm_rows(run: runs.Run | None, arm: str) -> pd.DataFrame:
    if run is None or run.metrics is None or run.metrics.empty or "arm" not in run.metrics.columns:
        return pd.DataFrame()
    rows = run.metrics[run.metrics["arm"] == arm].sort_values("epoch", kind="stable")
    return rows.reset_index(drop=True)


def _finite(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def final_figures(rows: pd.DataFrame) -> dict:
    """The last epoch's figures of one arm (for a diverged arm: its last finite epoch).

    Keys: epochs, train_loss, train_acc, val_loss, val_acc, data_passes, seconds
    (None where unknown)."""
    keys = ("train_loss", "train_acc", "val_loss", "val_acc", "data_passes", "seconds")
    if rows.empty:
        return {"epochs": None, **{k: None for k in keys}}
    finite = rows[pd.to_numeric(rows["train_loss"], errors="coerce").map(lambda v: _finite(v) is not None)]
    last = finite.iloc[-1] if not finite.empty else rows.iloc[-1]
    return {"epochs": int(rows["epoch"].max()), **{k: _finite(last.get(k)) for k in keys}}


def value_at_cost(rows: pd.DataFrame, cost: str, budget: float, column: str = "train_loss") -> float | None:
    """`column` of the last record whose cumulative `cost` ("data_passes" or "seconds") is at most
    `budget` (records with a non-finite value are skipped): twophase/analysis.py's value_within."""
    if rows.empty or cost not in rows.columns or column not in rows.columns:
        return None
    return value_within(zip(rows[cost], rows[column]), budget)


def winner(two_phase: float | None, adam: float | None, tolerance: float = TIE_TOLERANCE) -> str | None:
    """Which arm has the lower loss: "two-phase", "adam" or "tie" (within `tolerance`
    relative difference); None when either is unknown."""
    if two_phase is None or adam is None:
        return None
    if abs(two_phase - adam) <= tolerance * max(abs(two_phase), abs(adam)):
        return "tie"
    return "two-phase" if two_phase < adam else "adam"


def _arms_of(results: dict[str, CellResult], plan: Plan, dataset: str, model: str, seed: int,
             algorithm: str) -> pd.DataFrame:
    variant = "adaptive" if algorithm == "two-phase-adaptive" else "fixed"
    result = results.get(Cell(model, dataset, seed, variant, None).key)
    if result is None or result.state.status != "done":
        return pd.DataFrame()
    return _arm_rows(result.run, "adam" if algorithm == "adam" else "two-phase")


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _algorithms(plan: Plan) -> list[str]:
    return list(ALGORITHMS if plan.adaptive else ALGORITHMS[:2])


def table1(plan: Plan, runs_dir=None, results: dict[str, CellResult] | None = None) -> pd.DataFrame:
    """Our final figures in the layout of the paper's Table 1, the published figure beside each.

    One row per dataset, model and algorithm ("adam", "two-phase", and
    "two-phase-adaptive" when the plan has it). Columns: dataset, model, algorithm,
    seeds (runs that count / planned), epochs (ours) and paper_epochs, then for each
    of train_loss, train_acc, val_loss, val_acc our figure (mean over the seeds done)
    and paper_<figure> (NaN where the paper has no such cell).
    """
    results = results if results is not None else collect(plan, runs_dir)
    rows = []
    for dataset in plan.datasets:
        for model in plan.models:
            published = paper_figures.figures_for(model, dataset)
            budget = paper_figures.BUDGETS.get(model, paper_figures.BUDGETS["default"])
            for algorithm in _algorithms(plan):
                finals = [final_figures(_arms_of(results, plan, dataset, model, s, algorithm)) for s in plan.seeds]
                finals = [f for f in finals if f["epochs"] is not None]
                ref = published[published["algorithm"] == ("adam" if algorithm == "adam" else "two-phase")]
                row = {"dataset": dataset, "model": model, "algorithm": algorithm,
                       "seeds": f"{len(finals)}/{len(plan.seeds)}",
                       "epochs": epochs_for(model, plan.epochs),
                       "paper_epochs": budget["adam"] if algorithm != "two-phase-adaptive" and not ref.empty else None}
                for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
                    row[key] = _mean([f[key] for f in finals])
                    row[f"paper_{key}"] = (float(ref[key].iloc[0])
                                           if algorithm != "two-phase-adaptive" and not ref.empty else None)
                rows.append(row)
    columns = ["dataset", "model", "algorithm", "seeds", "epochs", "paper_epochs"]
    for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
        columns += [key, f"paper_{key}"]
    return pd.DataFrame(rows, columns=columns)


def comparison(plan: Plan, runs_dir=None, results: dict[str, CellResult] | None = None) -> pd.DataFrame:
    """Does two-phase beat Adam here as it did in the paper? At equal epochs, data passes, wall time.

    One row per dataset, model and method ("two-phase", and "two-phase-adaptive" when
    planned), always against the fixed-split run's Adam arm of the same seed. Columns:

    - seeds: seeds with both arms done / planned.
    - paper_ratio, paper_winner: the paper's final training loss two-phase / Adam and
      which is lower ("tie": equal at the paper's 4 decimals).
    - epochs_method_loss, epochs_adam_loss, epochs_ratio, epochs_winner, epochs_wins:
      final training losses at the full budget (the paper's basis), their ratio, the lower
      one (within TIE_TOLERANCE a "tie"), and in how many seeds two-phase was lower.
    - agrees: "yes" / "no" when our winner at equal epochs is / is not the paper's,
      "n/a" without a paper figure or where the paper shows a tie and we do not.
    - val_ratio, val_winner, paper_val_winner: the same for the final validation loss.
    - passes_budget, passes_method_loss, passes_adam_loss, passes_winner, passes_wins:
      both arms' training loss at the last epoch within the smaller of the two arms'
      total data passes.
    - seconds_budget, seconds_method_loss, seconds_adam_loss, seconds_winner, seconds_wins:
      the same in wall time.
    Losses and budgets are means over the seeds. The adaptive method and its Adam
    baseline come from two runs, so their wall times were measured at different moments.
    """
    results = results if results is not None else collect(plan, runs_dir)
    rows = []
    for dataset in plan.datasets:
        for model in plan.models:
            for method in _algorithms(plan)[1:]:
                per_seed = []
                for seed in plan.seeds:
                    m_rows = _arms_of(results, plan, dataset, model, seed, method)
                    a_rows = _arms_of(results, plan, dataset, model, seed, "adam")
                    if m_rows.empty or a_rows.empty:
                        continue
                    fm, fa = final_figures(m_rows), final_figures(a_rows)
                    entry = {"epochs": (fm["train_loss"], fa["train_loss"]),
                             "val": (fm["val_loss"], fa["val_loss"])}
                    for cost in ("data_passes", "seconds"):
                        ends = [fm[cost], fa[cost]]
                        if None in ends:
                            entry[cost] = (None, None, None)
                            continue
                        budget = min(ends)
                        entry[cost] = (budget, value_at_cost(m_rows, cost, budget), value_at_cost(a_rows, cost, budget))
                    per_seed.append(entry)
                p_tp = paper_figures.final_loss(model, dataset, "two-phase")
                p_adam = paper_figures.final_loss(model, dataset, "adam")
                p_val_tp = paper_figures.final_loss(model, dataset, "two-phase", "val_loss")
                p_val_adam = paper_figures.final_loss(model, dataset, "adam", "val_loss")
                row = {"dataset": dataset, "model": model, "method": method,
                       "seeds": f"{len(per_seed)}/{len(plan.seeds)}",
                       "paper_ratio": p_tp / p_adam if p_tp is not None and p_adam else None,
                       "paper_winner": winner(p_tp, p_adam, tolerance=0.0)}

                def wins(pairs):
                    pairs = [p for p in pairs if None not in p]
                    return f"{sum(winner(a, b) == 'two-phase' for a, b in pairs)}/{len(pairs)}" if pairs else None

                m_loss = _mean([e["epochs"][0] for e in per_seed])
                a_loss = _mean([e["epochs"][1] for e in per_seed])
                row.update(epochs_method_loss=m_loss, epochs_adam_loss=a_loss,
                           epochs_ratio=m_loss / a_loss if m_loss is not None and a_loss else None,
                           epochs_winner=winner(m_loss, a_loss),
                           epochs_wins=wins([e["epochs"] for e in per_seed]))
                ours, theirs = row["epochs_winner"], row["paper_winner"]
                if ours is None or theirs is None or (theirs == "tie" and ours != "tie"):
                    row["agrees"] = "n/a"
                else:
                    row["agrees"] = "yes" if ours == theirs else "no"
                vm = _mean([e["val"][0] for e in per_seed])
                va = _mean([e["val"][1] for e in per_seed])
                row.update(val_ratio=vm / va if vm is not None and va else None, val_winner=winner(vm, va),
                           paper_val_winner=winner(p_val_tp, p_val_adam, tolerance=0.0))
                for cost, prefix in (("data_passes", "passes"), ("seconds", "seconds")):
                    triples = [e[cost] for e in per_seed if e[cost][0] is not None]
                    mb = _mean([t[1] for t in triples])
                    ab = _mean([t[2] for t in triples])
                    row.update({f"{prefix}_budget": _mean([t[0] for t in triples]),
                                f"{prefix}_method_loss": mb, f"{prefix}_adam_loss": ab,
                                f"{prefix}_winner": winner(mb, ab),
                                f"{prefix}_wins": wins([(t[1], t[2]) for t in triples])})
                rows.append(row)
    columns = ["dataset", "model", "method", "seeds", "paper_ratio", "paper_winner",
               "epochs_method_loss", "epochs_adam_loss", "epochs_ratio", "epochs_winner", "epochs_wins", "agrees",
               "val_ratio", "val_winner", "paper_val_winner"]
    for prefix in ("passes", "seconds"):
        columns += [f"{prefix}_budget", f"{prefix}_method_loss", f"{prefix}_adam_loss", f"{prefix}_winner",
                    f"{prefix}_wins"]
    return pd.DataFrame(rows, columns=columns)


def status_table(plan: Plan, runs_dir=None, results: dict[str, CellResult] | None = None) -> pd.DataFrame:
    """One row per cell: key, model, dataset, seed, variant, status (done/active/todo),
    run id, run status, and the run's duration in seconds (when known)."""
    results = results if results is not None else collect(plan, runs_dir)
    rows = []
    for key, r in results.items():
        summary = (r.run.summary if r.run is not None else None) or {}
        rows.append({"cell": key, "model": r.cell.model, "dataset": r.cell.dataset, "seed": r.cell.seed,
                     "variant": r.cell.variant, "status": r.state.status, "run": r.state.run_id,
                     "run status": r.state.run_status, "duration (s)": _finite(summary.get("duration_s"))})
    return pd.DataFrame(rows, columns=["cell", "model", "dataset", "seed", "variant", "status", "run",
                                       "run status", "duration (s)"])


# --------------------------------------------------------------------------- writing


def _num(value, spec: str = ".3g") -> str:
    v = _finite(value)
    return "–" if v is None else format(v, spec)


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def sweep_table(plan: Plan, runs_dir=None, results: dict[str, CellResult] | None = None) -> pd.DataFrame:
    """For a plan with a switch sweep (the long scale): every two-phase branch of every finished
    cell against the cell's Adam arm, from the same trunk: its switch epoch and its training loss
    over Adam's at equal epochs, data passes and wall time, and the cell's duration."""
    results = results if results is not None else collect(plan, runs_dir)
    rows = []
    for result in results.values():
        run = result.run
        if run is None or result.cell.variant != "fixed":
            continue
        arms = (run.summary or {}).get("arms") or {}
        ratios = ratio_table(run.metrics)
        for _, r in ratios.iterrows():
            figures = arms.get(r["arm"]) or {}
            rows.append({"dataset": result.cell.dataset, "model": result.cell.model, "seed": result.cell.seed,
                         "arm": r["arm"], "label": figures.get("label") or r["arm"],
                         "switch epoch": figures.get("switch_epoch"),
                         **{c: r[c] for c in ratios.columns if c.endswith(" ratio")},
                         "cell hours": (run.summary or {}).get("duration_s", math.nan) / 3600})
    return pd.DataFrame(rows, columns=["dataset", "model", "seed", "arm", "label", "switch epoch", "epoch ratio",
                                       "data_passes ratio", "seconds ratio", "cell hours"])


def markdown(plan: Plan, table: pd.DataFrame, compare: pd.DataFrame, sweep: pd.DataFrame | None = None) -> str:
    """The two tables as Markdown (README-ready), with what each column means."""
    out = [f"### Reproduction `{plan.id}`", "",
           f"{plan.describe()[0].upper()}{plan.describe()[1:]}. The paper: full datasets, 1000 epochs "
           "(700 for vit-mlp), Adam for the first 30%. Numbers in brackets are the paper's (its Table 1).", ""]
    header = ["dataset", "model", "algorithm", "seeds", "epochs", "train loss", "train acc", "val loss", "val acc"]
    rows = []
    for _, r in table.iterrows():
        def both(key, fmt):
            paper_value = r[f"paper_{key}"]
            ours = fmt(r[key])
            return ours if _finite(paper_value) is None else f"{ours} ({fmt(paper_value)})"
        epochs = str(r["epochs"]) + (f" ({int(r['paper_epochs'])})" if _finite(r["paper_epochs"]) else "")
        rows.append([r["dataset"], r["model"], ALGORITHM_LABELS.get(r["algorithm"], r["algorithm"]), r["seeds"],
                     epochs, both("train_loss", _num), both("train_acc", lambda v: _num(v, ".3f")),
                     both("val_loss", _num), both("val_acc", lambda v: _num(v, ".3f"))])
    out += ["Final figures at equal epochs (the paper's Table 1 layout):", "", _md_table(header, rows), ""]

    def verdict(w, wins=None):
        if w is None:
            return "–"
        text = {"two-phase": "two-phase", "adam": "Adam", "tie": "tie"}[w]
        return f"{text} ({wins})" if wins and wins.split("/")[1] != "1" else text

    header = ["dataset", "model", "method", "paper: two-phase / Adam", "here, equal epochs", "same as paper",
              "equal data passes", "equal wall time"]
    rows = []
    for _, r in compare.iterrows():
        paper_cell = "–" if _finite(r["paper_ratio"]) is None else \
            f"{_num(r['paper_ratio'], '.2f')} → {verdict(r['paper_winner'])}"
        epochs_cell = "–" if _finite(r["epochs_ratio"]) is None else \
            f"{_num(r['epochs_ratio'], '.2f')} → {verdict(r['epochs_winner'], r['epochs_wins'])}"
        cost_cells = []
        for prefix, unit in (("passes", " passes"), ("seconds", " s")):
            m, a = _finite(r[f"{prefix}_method_loss"]), _finite(r[f"{prefix}_adam_loss"])
            if m is None or a is None:
                cost_cells.append("–")
                continue
            ratio = _num(m / a, ".2f") if a else "–"
            cost_cells.append(f"{ratio} → {verdict(r[f'{prefix}_winner'], r[f'{prefix}_wins'])}"
                              f" at {_num(r[f'{prefix}_budget'], '.0f')}{unit}")
        rows.append([r["dataset"], r["model"], ALGORITHM_LABELS.get(r["method"], r["method"]), paper_cell,
                     epochs_cell, r["agrees"], *cost_cells])
    out += ["Does two-phase beat Adam? Final training loss two-phase / Adam (below 1: two-phase lower; "
            f"within {TIE_TOLERANCE:.0%}: tie). Equal data passes / wall time: both arms' training loss at the "
            "last epoch within the smaller of the two arms' totals (a forward and backward pass over the training "
            "set counts 1, a forward pass 1/3).", "", _md_table(header, rows), ""]
    if sweep is not None and len(sweep):
        header = ["dataset", "model", "seed", "branch", "switch epoch", "/ Adam, equal epochs", "equal passes",
                  "equal time", "cell (h)"]
        rows = [[r["dataset"], r["model"], str(r["seed"]), r["label"], _num(r["switch epoch"], ".0f"),
                 _num(r["epoch ratio"]), _num(r["data_passes ratio"]), _num(r["seconds ratio"]),
                 _num(r["cell hours"], ".2f")] for _, r in sweep.iterrows()]
        out += ["Switch sweep from each cell's Adam trunk: every two-phase branch's training loss over Adam's "
                "(below 1: lower than Adam's).", "", _md_table(header, rows), ""]
    return "\n".join(out)


def write_outputs(plan: Plan, runs_dir=None, out_dir=None) -> dict[str, str]:
    """Write table1.csv, comparison.csv, cells.csv and table1.md into `out_dir`
    (default: <runs_dir>/reproductions/<id>, beside the runs it summarises); return {kind: path}."""
    results = collect(plan, runs_dir)
    table = table1(plan, results=results)
    compare = comparison(plan, results=results)
    cells = status_table(plan, results=results)
    sweep = sweep_table(plan, results=results) if SCALES[plan.scale].sweep else None
    out = Path(out_dir) if out_dir else Path(runs.default_runs_dir() if runs_dir is None else runs_dir) / "reproductions" / plan.id
    out.mkdir(parents=True, exist_ok=True)
    paths = {"table1": out / "table1.csv", "comparison": out / "comparison.csv", "cells": out / "cells.csv",
             "markdown": out / "table1.md"}
    table.to_csv(paths["table1"], index=False)
    compare.to_csv(paths["comparison"], index=False)
    cells.to_csv(paths["cells"], index=False)
    if sweep is not None:
        paths["sweep"] = out / "sweep.csv"
        sweep.to_csv(paths["sweep"], index=False)
    text = markdown(plan, table, compare, sweep) + "\n"
    tmp = paths["markdown"].with_suffix(".md.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, paths["markdown"])
    return {k: str(v) for k, v in paths.items()}
