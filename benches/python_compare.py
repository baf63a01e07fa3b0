#!/usr/bin/env python3
"""Benchmark the `llfc` Python package against SciPy, `lap` and `lapx`, all called from Python.

Two parts, each timed side by side in one run (ratios within the run are what to compare: the
machine is shared and noisy):

1. `llfc.linear_sum_assignment` (the SciPy drop-in: conversion and SciPy's tie rule included)
   against `scipy.optimize.linear_sum_assignment`, `lap.lapjv` and `lapx`'s double-precision
   solvers, on the cost families of `benches/compare_lap.py` (same seeded matrices; `lap` and
   `lapx` run in worker subprocesses there, since both install a module named `lap`).
2. `llfc.weight_matching` against the NumPy/SciPy Git Re-Basin loop of
   `benches/compare_matching.py` on the 784 -> 4 x W -> 10 MLP (same seeded models, same fixed
   order), checking the objectives agree to 1e-9 relative and the permutations are identical.

Run from the repository root inside a venv where `pip install ./python numpy scipy` was done.
One command per table of BENCHMARKS.md ("From Python"); `--table` picks the sizes, families and
runs of that table (explicit `--sizes`, `--families`, `--widths`, `--runs` override them):

    python benches/python_compare.py --table lap        # LAP, n = 1024 2048, all families, median of 3
    python benches/python_compare.py --table lap-4096   # LAP, n = 4096, all families, one run each
    python benches/python_compare.py --table matching   # weight matching, W = 1024 2048
    python benches/python_compare.py --sizes 512 --widths 256  # quick check of both parts

Every table is measured in one run, so its ratios compare solvers under the same load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment as scipy_lsa

import llfc

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare_lap  # noqa: E402  (the matrices and the lap/lapx workers)
import compare_matching  # noqa: E402  (the MLPs and the NumPy/SciPy Git Re-Basin loop)


def median_time(f, runs):
    times, out = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        out = f()
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times)


def lap_part(sizes, families, runs, seed):
    lap_site, lapx_site = compare_lap.ensure_site("lap"), compare_lap.ensure_site("lapx")
    workers = [("lap.lapjv", lap_site, "lapjv")] + [
        (f"lapx.{s}", lapx_site, s) for s in ("lapjv", "lapjvx", "lapjvc", "lapjvs")
    ]
    cols = ["scipy"] + [w[0] for w in workers] + ["llfc"]
    print("| family | n | " + " | ".join(cols) + " | llfc / fastest Python |")
    print("|" + "---|" * (len(cols) + 3))
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        for family in families:
            for n in sizes:
                c, maximize = compare_lap.make_matrix(family, n, seed + n)
                path = Path(tmp) / f"{family}_{n}.npy"
                np.save(path, c)
                res = {}
                (r, k), t = median_time(lambda: scipy_lsa(c, maximize=maximize), runs)
                res["scipy"] = (float(c[r, k].sum()), t)
                for name, site, solver in workers:
                    o = compare_lap.run_worker(site, solver, path, maximize, runs)
                    res[name] = (o["total"], o["seconds"])
                (r, k), t = median_time(lambda: llfc.linear_sum_assignment(c, maximize=maximize), runs)
                res["llfc"] = (float(c[r, k].sum()), t)
                ref = res["scipy"][0]
                for name, (total, _) in res.items():
                    if abs(total - ref) > 1e-9 * max(1.0, abs(ref)):
                        failures.append(f"{family} n={n} {name}: {total!r} != {ref!r}")
                fastest = min(res[c_][1] for c_ in cols[:-1])
                cells = [f"{res[c_][1]:.4f}" for c_ in cols]
                print(f"| {family} | {n} | " + " | ".join(cells) + f" | {res['llfc'][1] / fastest:.2f} |", flush=True)
    return failures


def matching_part(widths, runs):
    print("\n| W | NumPy/SciPy s | llfc s | speed-up | sweeps | objective |")
    print("|---|---|---|---|---|---|")
    failures = []
    layers = compare_matching.HIDDEN + 1
    spec = llfc.PermutationSpec.mlp(layers)
    for w in widths:
        a, b = compare_matching.random_mlp(w, 1), compare_matching.random_mlp(w, 2)
        (perms, sweeps), t_np = median_time(lambda: compare_matching.weight_matching(a, b, layers), 1)
        obj_np = compare_matching.inner(a, compare_matching.permuted(b, perms, layers))
        m, t_rs = median_time(lambda: llfc.weight_matching(spec, a, b, fixed_order=True), runs)
        if abs(m.objective - obj_np) > 1e-9 * abs(obj_np):
            failures.append(f"W={w}: objective {m.objective!r} != {obj_np!r}")
        if any(not np.array_equal(m.perms[f"P_{k}"], perms[k]) for k in range(layers - 1)):
            failures.append(f"W={w}: permutations differ")
        print(f"| {w} | {t_np:.2f} | {t_rs:.2f} | {t_np / t_rs:.1f}x | {sweeps} / {m.sweeps} | {m.objective:.6f} |", flush=True)
    return failures


# The tables of BENCHMARKS.md: sizes, widths and runs per solver (the LAP families are all four).
TABLES = {
    "lap": {"sizes": [1024, 2048], "widths": [], "runs": 3},
    "lap-4096": {"sizes": [4096], "widths": [], "runs": 1},
    "matching": {"sizes": [], "widths": [1024, 2048], "runs": 3},
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--table", choices=sorted(TABLES), help="one table of BENCHMARKS.md (see above)")
    ap.add_argument("--sizes", type=int, nargs="*", help="LAP sizes n (default 1024 2048 4096; empty: no LAP part)")
    ap.add_argument("--families", nargs="+", default=list(compare_lap.FAMILIES), choices=compare_lap.FAMILIES)
    ap.add_argument("--widths", type=int, nargs="*", help="MLP widths W (default 1024; empty: no matching part)")
    ap.add_argument("--runs", type=int, help="runs per solver, median (default 3; the NumPy loop runs once)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    preset = TABLES.get(args.table, {"sizes": [1024, 2048, 4096], "widths": [1024], "runs": 3})
    for k, v in preset.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    print(f"python {' '.join(sys.argv)}  (llfc {llfc.__version__}, numpy {np.__version__}, "
          f"scipy {__import__('scipy').__version__}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f})", flush=True)
    failures = []
    if args.sizes:
        failures += lap_part(args.sizes, args.families, args.runs, args.seed)
    if args.widths:
        failures += matching_part(args.widths, args.runs)
    if failures:
        print("\nMISMATCHES:\n" + "\n".join(failures))
        sys.exit(1)
    print("\nAll totals and objectives agree with SciPy / NumPy to 1e-9 relative.")


if __name__ == "__main__":
    main()
