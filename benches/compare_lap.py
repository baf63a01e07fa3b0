#!/usr/bin/env python3
"""Compare llfc's linear assignment solver with SciPy, `lap` and `lapx`.

The script writes the benchmark matrices (seeded, the same families as the criterion group
`assignment`) to `.npy` files in a temporary directory, then times on each of them

* SciPy's `scipy.optimize.linear_sum_assignment` (in this process),
* `lap.lapjv` from the `lap` package and the double-precision solvers of `lapx`
  (`lapjv`, `lapjvx`, `lapjvc`, `lapjvs` with `prefer_float32=False`). Both packages install a
  module called `lap`, so each runs in its own worker subprocess with its own `PYTHONPATH`
  (`pip install --target DIR lap` / `lapx`; the script does that itself on first use),
* this crate through `target/release/examples/lap` (native and, at small sizes, the
  `pathfinding` Kuhn–Munkres backend), using the solve-only time the binary reports.

Each time is the median of several runs, every solver's total is checked against SciPy's to
1e-9 relative, and one markdown table with the ratio (llfc native / fastest Python solver)
is printed. Run from the repository root:

    cargo build --release --example lap
    python3 benches/compare_lap.py                  # n = 1024, 2048, 4096
    python3 benches/compare_lap.py --sizes 256 512  # quicker

Requirements: numpy and scipy in the running interpreter; network access to PyPI the first time
(for the `lap` and `lapx` worker directories, cached in ~/.cache/llfc-compare).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CACHE = Path(os.environ.get("LLFC_COMPARE_CACHE", Path.home() / ".cache" / "llfc-compare"))
FAMILIES = (
    "uniform", "gaussian_product", "activation_stats", "activation_stats_biased", "mlp_hidden_stats",
)
PY_SOLVERS = ("lap.lapjv", "lapx.lapjv", "lapx.lapjvx", "lapx.lapjvc", "lapx.lapjvs")
# The Kuhn–Munkres backend is O(n^3) with a large constant: only run it up to this size.
KM_MAX_N = 1024
ACTIVATION_SAMPLES = 10_000
RANK = 64
# The harder activation variant: MNIST-sized inputs and biased units (see make_matrix).
BIASED_D_IN = 784
BIASED_BIAS_STD = 0.5
# E[h_A h_B^T] of the last hidden layer of two random biased MLPs 784 -> 4 x n (see make_matrix).
MLP_DEPTH = 4
MLP_BIAS_STD = 0.1

# ----------------------------------------------------------------------------------- matrices


def make_matrix(family: str, n: int, seed: int) -> tuple[np.ndarray, bool]:
    """Return (matrix, maximize) for one benchmark family (seeded, float64, C order)."""
    rng = np.random.default_rng(seed)
    if family == "uniform":
        return rng.random((n, n)), False
    if family == "gaussian_product":
        a = rng.standard_normal((n, RANK))
        b = rng.standard_normal((n, RANK))
        return np.ascontiguousarray(-(a @ b.T)), False
    if family == "activation_stats":
        # E[a b^T] of the post-ReLU features of two independent random layers (d_in = 64)
        # evaluated on the same 10 000 Gaussian inputs; activation matching maximises it.
        x = rng.standard_normal((ACTIVATION_SAMPLES, RANK))
        w1 = rng.standard_normal((n, RANK)) / np.sqrt(RANK)
        w2 = rng.standard_normal((n, RANK)) / np.sqrt(RANK)
        a = np.maximum(x @ w1.T, 0.0)
        b = np.maximum(x @ w2.T, 0.0)
        return np.ascontiguousarray(a.T @ b / ACTIVATION_SAMPLES), True
    if family == "activation_stats_biased":
        # The same statistic for layers with biases b ~ N(0, 0.5^2) on d_in = 784 inputs
        # (W ~ N(0, 1/784), unit-variance pre-activations). The biases make some units active
        # far more often than others, so a few rows dominate every column of E[a b^T]: SciPy
        # needs ~3 s at n = 2048 here instead of ~0.4-0.7 s without biases (d_in alone, 64 vs
        # 256 vs 784 vs 2048, changes little) -- the difficulty quoted in issue 3.
        d = BIASED_D_IN
        x = rng.standard_normal((ACTIVATION_SAMPLES, d))
        w1 = rng.standard_normal((n, d)) / np.sqrt(d)
        w2 = rng.standard_normal((n, d)) / np.sqrt(d)
        b1 = BIASED_BIAS_STD * rng.standard_normal(n)
        b2 = BIASED_BIAS_STD * rng.standard_normal(n)
        a = np.maximum(x @ w1.T + b1, 0.0)
        b = np.maximum(x @ w2.T + b2, 0.0)
        return np.ascontiguousarray(a.T @ b / ACTIVATION_SAMPLES), True
    if family == "mlp_hidden_stats":
        # What activation matching solves for the last hidden layer of two independently
        # initialised MLPs 784 -> n -> n -> n -> n (He-normal weights N(0, 2/d_in), biases
        # N(0, 0.1^2), ReLU) on 10 000 shared Gaussian inputs: E[h_A h_B^T], maximised. Deep
        # ReLU features are non-negative with strongly unequal means, so this is a dominant-rows
        # matrix like activation_stats_biased (issue 17's "E[h_A h_B^T] of random biased MLPs").
        x = rng.standard_normal((ACTIVATION_SAMPLES, BIASED_D_IN))
        hs = []
        for _ in range(2):
            h, d = x, BIASED_D_IN
            for _ in range(MLP_DEPTH):
                w = rng.standard_normal((n, d)) * np.sqrt(2.0 / d)
                b = MLP_BIAS_STD * rng.standard_normal(n)
                h, d = np.maximum(h @ w.T + b, 0.0), n
            hs.append(h)
        return np.ascontiguousarray(hs[0].T @ hs[1] / ACTIVATION_SAMPLES), True
    raise ValueError(family)


# ------------------------------------------------------------------------------ python workers

WORKER = r"""
import json, sys, time, statistics
import numpy as np
import lap
path, maximize, solver, runs = sys.argv[1], sys.argv[2] == "1", sys.argv[3], int(sys.argv[4])
c = np.load(path)
cost = -c if maximize else c
cost = np.ascontiguousarray(cost, dtype=np.float64)
times = []
for _ in range(runs):
    t0 = time.perf_counter()
    if solver == "lapjv":
        out = lap.lapjv(cost)
        cols = out[1]
    elif solver == "lapjvx":
        _, _, cols = lap.lapjvx(cost)
    elif solver == "lapjvc":
        _, _, cols = lap.lapjvc(cost)
    elif solver == "lapjvs":
        _, _, cols = lap.lapjvs(cost, prefer_float32=False)
    else:
        raise SystemExit("unknown solver " + solver)
    times.append(time.perf_counter() - t0)
total = float(c[np.arange(c.shape[0]), np.asarray(cols)].sum())
print(json.dumps({"total": total, "seconds": statistics.median(times)}))
"""


def ensure_site(package: str) -> Path:
    site = CACHE / package
    if not (site / "lap").exists():
        print(f"installing {package} into {site} ...", file=sys.stderr)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--target", str(site), package],
            check=True,
        )
    return site


def run_worker(site: Path, solver: str, path: Path, maximize: bool, runs: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(site))
    out = subprocess.run(
        [sys.executable, "-c", WORKER, str(path), "1" if maximize else "0", solver, str(runs)],
        env=env, check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout)


def run_scipy(c: np.ndarray, maximize: bool, runs: int) -> dict:
    from scipy.optimize import linear_sum_assignment

    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        rows, cols = linear_sum_assignment(c, maximize=maximize)
        times.append(time.perf_counter() - t0)
    return {"total": float(c[rows, cols].sum()), "seconds": statistics.median(times)}


def run_llfc(binary: Path, path: Path, maximize: bool, solver: str, runs: int) -> dict:
    times, total = [], None
    for _ in range(runs):
        args = [str(binary), str(path), "--solver", solver] + (["--maximize"] if maximize else [])
        out = json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout)
        times.append(out["seconds"])
        total = out["total"]
    return {"total": total, "seconds": statistics.median(times)}


# ------------------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    ap.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    ap.add_argument("--runs", type=int, default=5, help="runs per solver (median reported)")
    ap.add_argument("--slow-runs", type=int, default=1,
                    help="runs when SciPy's first run took longer than --slow-seconds")
    ap.add_argument("--slow-seconds", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--binary", type=Path, default=Path("target/release/examples/lap"))
    ap.add_argument("--no-rust", action="store_true", help="time the Python solvers only")
    ap.add_argument("--km-max-n", type=int, default=KM_MAX_N)
    ap.add_argument("--py-solvers", nargs="+", default=list(PY_SOLVERS), choices=PY_SOLVERS,
                    help="the lap/lapx solvers to time (SciPy always runs: it is the reference)")
    args = ap.parse_args()

    lap_site, lapx_site = ensure_site("lap"), ensure_site("lapx")
    py_solvers = [("lap.lapjv", lap_site, "lapjv")] + [
        (f"lapx.{s}", lapx_site, s) for s in ("lapjv", "lapjvx", "lapjvc", "lapjvs")
    ]
    py_solvers = [p for p in py_solvers if p[0] in args.py_solvers]
    columns = ["scipy"] + [name for name, _, _ in py_solvers]
    if not args.no_rust:
        columns += ["llfc kuhn-munkres", "llfc native"]

    rows_out, failures = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for family in args.families:
            for n in args.sizes:
                c, maximize = make_matrix(family, n, args.seed + n)
                path = Path(tmp) / f"{family}_{n}.npy"
                np.save(path, c)
                res = {"scipy": run_scipy(c, maximize, 1)}
                runs = args.slow_runs if res["scipy"]["seconds"] > args.slow_seconds else args.runs
                if runs > 1:
                    res["scipy"] = run_scipy(c, maximize, runs)
                for name, site, solver in py_solvers:
                    res[name] = run_worker(site, solver, path, maximize, runs)
                if not args.no_rust:
                    if n <= args.km_max_n:
                        res["llfc kuhn-munkres"] = run_llfc(args.binary, path, maximize,
                                                            "kuhn-munkres", 1)
                    res["llfc native"] = run_llfc(args.binary, path, maximize, "native", runs)
                ref = res["scipy"]["total"]
                for name, r in res.items():
                    tol = 1e-9 * max(1.0, abs(ref))
                    # The Kuhn–Munkres backend quantises costs: it is exact only to its bound.
                    if name != "llfc kuhn-munkres" and abs(r["total"] - ref) > tol:
                        failures.append(f"{family} n={n} {name}: total {r['total']!r} != {ref!r}")
                rows_out.append((family, n, runs, res))
                print(f"{family} n={n}: " + ", ".join(
                    f"{k} {v['seconds']:.4f}s" for k, v in res.items()), file=sys.stderr)

    header = ["family", "n", "runs"] + columns
    if not args.no_rust:
        header.append("native / fastest Python")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for family, n, runs, res in rows_out:
        cells = [family, str(n), str(runs)]
        for col in columns:
            cells.append(f"{res[col]['seconds']:.4f}" if col in res else "—")
        if not args.no_rust:
            fastest = min(res[c]["seconds"] for c in columns[: 1 + len(py_solvers)])
            cells.append(f"{res['llfc native']['seconds'] / fastest:.2f}")
        print("| " + " | ".join(cells) + " |")
    if failures:
        print("\nTOTAL MISMATCHES:\n" + "\n".join(failures))
        sys.exit(1)
    print("\nAll totals agree with SciPy to 1e-9 relative.")


if __name__ == "__main__":
    main()
