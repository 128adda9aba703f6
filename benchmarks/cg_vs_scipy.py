"""NonlinearCG against scipy.optimize.minimize(method="CG") on classic smooth test functions.

float64 throughout. Every problem has minimum value 0, so "the same tolerance" is the same for
both: the number of loss evaluations until the first evaluated point with f(x) <= TOL
(counted identically on both sides, by the function itself). SciPy's CG is run with
gtol=1e-30 so its own stopping test never ends it before that; it counts as a failure if it
stops (precision loss) or uses more than the budget before reaching TOL. Our optimizer is
stepped until TOL, "converged" twice in a row, or the budget.

An evaluation of SciPy's CG (jac=True) computes the value and the gradient. Ours with the
strong Wolfe search also always computes both; the golden search computes values only during
the search (one gradient per iteration), so the table also gives the evaluations that ran a
gradient. Target: for the default (PR+, strong Wolfe), no more evaluations than SciPy on the
median problem (median over problems of ours / SciPy's; a failure counts as infinitely many).
"""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import torch

from benchmarks import common

TOL = 1e-10
TARGET = 1.0
BUDGETS = {"tiny": 2000, "small": 20000, "full": 20000, "issue": 20000}
DEFAULT_VARIANT = ("pr+", "strong-wolfe")


class Reached(Exception):
    pass


# ------------------------------------------------------------------ problems (Moré, Garbow, Hillstrom 1981)
def rosenbrock(x):
    return (100 * (x[1::2] - x[0::2] ** 2) ** 2 + (1 - x[0::2]) ** 2).sum()


def beale(x):
    a, b = x[0], x[1]
    return (1.5 - a + a * b) ** 2 + (2.25 - a + a * b ** 2) ** 2 + (2.625 - a + a * b ** 3) ** 2


def powell_singular(x):
    x1, x2, x3, x4 = x[0::4], x[1::4], x[2::4], x[3::4]
    return ((x1 + 10 * x2) ** 2 + 5 * (x3 - x4) ** 2 + (x2 - 2 * x3) ** 4 + 10 * (x1 - x4) ** 4).sum()


def wood(x):
    a, b, c, d = x[0], x[1], x[2], x[3]
    return (100 * (b - a ** 2) ** 2 + (1 - a) ** 2 + 90 * (d - c ** 2) ** 2 + (1 - c) ** 2
            + 10.1 * ((b - 1) ** 2 + (d - 1) ** 2) + 19.8 * (b - 1) * (d - 1))


def helical_valley(x):
    a, b, c = x[0], x[1], x[2]
    theta = torch.atan2(b, a) / (2 * math.pi)
    return 100 * ((c - 10 * theta) ** 2 + (torch.sqrt(a ** 2 + b ** 2) - 1) ** 2) + c ** 2


def dixon_price(x):
    i = torch.arange(2, x.numel() + 1, dtype=x.dtype)
    return (x[0] - 1) ** 2 + (i * (2 * x[1:] ** 2 - x[:-1]) ** 2).sum()


_QUAD_EIGS = torch.logspace(0, 4, 100, dtype=torch.float64)  # condition number 1e4


def quadratic(x):
    return 0.5 * (_QUAD_EIGS * x ** 2).sum()


def problems(size: str):
    """name -> (function of a float64 tensor, starting point)."""
    out = {
        "rosenbrock-2": (rosenbrock, [-1.2, 1.0]),
        "beale-2": (beale, [1.0, 1.0]),
        "wood-4": (wood, [-3.0, -1.0, -3.0, -1.0]),
    }
    if size != "tiny":
        out.update({
            "helical-valley-3": (helical_valley, [-1.0, 0.0, 0.0]),
            "powell-singular-4": (powell_singular, [3.0, -1.0, 0.0, 1.0]),
            "dixon-price-10": (dixon_price, [1.0] * 10),
            "ext-powell-40": (powell_singular, [3.0, -1.0, 0.0, 1.0] * 10),
            "quadratic-100 (cond 1e4)": (quadratic, [1.0] * 100),
            "ext-rosenbrock-100": (rosenbrock, [-1.2, 1.0] * 50),
        })
    return {k: (f, torch.tensor(x0, dtype=torch.float64)) for k, (f, x0) in out.items()}


# ------------------------------------------------------------------ runners
def run_scipy(f, x0, budget):
    from scipy.optimize import minimize

    count = {"evals": 0, "grads": 0, "reached": None}

    def fun(xn):
        x = torch.tensor(xn, dtype=torch.float64, requires_grad=True)
        value = f(x)
        (g,) = torch.autograd.grad(value, x)
        count["evals"] += 1
        count["grads"] += 1
        v = float(value.detach())
        if v <= TOL and count["reached"] is None:
            count["reached"] = (count["evals"], count["grads"])
            raise Reached
        if count["evals"] >= budget:
            raise Reached
        return v, g.numpy().copy()

    message = ""
    try:
        res = minimize(fun, x0.numpy().copy(), jac=True, method="CG",
                       options={"gtol": 1e-30, "maxiter": budget, "norm": np.inf})
        message = str(res.message)
    except Reached:
        message = "reached" if count["reached"] else "budget"
    return count, message


def run_ours(f, x0, budget, beta, line_search):
    from twophase.optim import NonlinearCG

    x = x0.clone().requires_grad_(True)
    opt = NonlinearCG([x], beta=beta, line_search=line_search)
    count = {"evals": 0, "grads": 0, "reached": None}

    def closure(backward: bool = True):
        count["evals"] += 1
        if backward:
            count["grads"] += 1
            x.grad = None
            value = f(x)
            value.backward()
        else:
            with torch.no_grad():
                value = f(x)
        if float(value.detach()) <= TOL and count["reached"] is None:
            count["reached"] = (count["evals"], count["grads"])
        return value

    converged = 0
    message = "budget"
    while count["evals"] < budget and count["reached"] is None:
        opt.step(closure)
        status = opt.last_step.status
        converged = converged + 1 if status == "converged" else 0
        if converged >= 2:
            message = "converged above the tolerance"
            break
    if count["reached"]:
        message = "reached"
    return count, message


def main(args) -> common.Report:
    from twophase.optim import BETAS, LINE_SEARCHES

    report = common.Report("cg_vs_scipy", "CG against SciPy on classic test functions", args.size)
    budget = BUDGETS[args.size]
    rows = []
    variants = [(b, ls) for ls in LINE_SEARCHES for b in BETAS]
    for name, (f, x0) in problems(args.size).items():
        t0 = time.perf_counter()
        count, message = run_scipy(f, x0, budget)
        base = count["reached"][0] if count["reached"] else math.inf
        row = {"problem": name, "n": x0.numel(), "scipy CG": base if math.isfinite(base) else "failed"}
        detail = {"problem": name, "solver": "scipy CG", "evals": base, "grad evals": base,
                  "result": message}
        rows_detail = [detail]
        for beta, ls in variants:
            c, msg = run_ours(f, x0, budget, beta, ls)
            ev = c["reached"][0] if c["reached"] else math.inf
            row[f"{beta} {ls}"] = ev if math.isfinite(ev) else "failed"
            rows_detail.append({"problem": name, "solver": f"NonlinearCG {beta} {ls}", "evals": ev,
                                "grad evals": c["reached"][1] if c["reached"] else math.inf, "result": msg})
        rows.append(row)
        report.meta.setdefault("detail", []).extend(rows_detail)
        print(f"cg_vs_scipy: {name} in {time.perf_counter() - t0:.1f} s", flush=True)

    df = pd.DataFrame(rows)
    detail = pd.DataFrame(report.meta.pop("detail"))

    def ratios(col):
        out = []
        for r in rows:
            ours, theirs = r[col], r["scipy CG"]
            ours = math.inf if ours == "failed" else ours
            theirs = math.inf if theirs == "failed" else theirs
            out.append(1.0 if math.isinf(ours) and math.isinf(theirs) else ours / theirs)
        return out

    def cost_ratios(solver):
        # data-pass cost: an evaluation with gradient counts 1, a value-only one 1/3
        out = []
        for name in df["problem"]:
            part = detail[detail["problem"] == name].set_index("solver")
            ours, theirs = part.loc[solver], part.loc["scipy CG"]
            c_ours = ours["grad evals"] + (ours["evals"] - ours["grad evals"]) / 3
            c_theirs = theirs["grad evals"] + (theirs["evals"] - theirs["grad evals"]) / 3
            out.append(1.0 if math.isinf(c_ours) and math.isinf(c_theirs) else c_ours / c_theirs)
        return out

    summary = []
    for beta, ls in variants:
        col = f"{beta} {ls}"
        r = ratios(col)
        summary.append({"NonlinearCG": col, "median evals ours / SciPy": float(np.median(r)),
                        "median cost ours / SciPy (value-only eval = 1/3)":
                            float(np.median(cost_ratios(f"NonlinearCG {col}"))),
                        "problems solved": sum(v != "failed" for v in df[col]),
                        "SciPy solved": sum(v != "failed" for v in df["scipy CG"]),
                        "problems": len(rows),
                        "fewer or equal evals than SciPy on": sum(x <= 1 for x in r)})
    sdf = pd.DataFrame(summary)
    default = f"{DEFAULT_VARIANT[0]} {DEFAULT_VARIANT[1]}"
    measured = float(sdf.loc[sdf["NonlinearCG"] == default, "median evals ours / SciPy"].iloc[0])
    report.target(common.Target(f"median over problems of evaluations ours / SciPy, default ({default})",
                                measured, TARGET, higher_is_better=False))
    report.text(f"Loss evaluations until the first point with f <= {TOL:g} (float64; every problem's minimum "
                f"is 0; budget {budget} evaluations; 'failed' = not reached). SciPy: "
                "`minimize(method='CG', jac=True)`, each evaluation with a gradient. Ours: "
                "`NonlinearCG` with its defaults (c1 1e-4, c2 0.2, golden ls_tol 1e-4, max_ls 25).")
    report.table("main", df)
    report.text("Summary per variant (a failure counts as infinitely many evaluations; both failing counts 1):")
    report.table("summary", sdf, {"median evals ours / SciPy": ".3g",
                                  "median cost ours / SciPy (value-only eval = 1/3)": ".3g"})
    report.text("Evaluations that ran a gradient (the golden search evaluates values only while it searches):")
    report.table("detail", detail, detail=True)
    return report


if __name__ == "__main__":
    raise SystemExit(common.run_main(main, __doc__.splitlines()[0]))
