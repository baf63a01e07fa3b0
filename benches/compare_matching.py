#!/usr/bin/env python3
"""Compare llfc's weight matching and activation matching with a NumPy/SciPy implementation.

For each width W the script

1. generates two seeded random MLPs 784 -> 4 x W -> 10 (float64; weights and biases Gaussian
   with standard deviation 1/sqrt(fan_in); B independent of A) and writes them as `.npz` files
   with PyTorch names `layers.{i}.weight` / `layers.{i}.bias`;
2. runs weight matching (Git Re-Basin, Algorithm 1) implemented here in NumPy/SciPy: for each
   permutation P_k in the fixed order P_0, P_1, ..., build
   S_k = W_k^A (W_k^B[:, p_{k-1}])^T + b_k^A (b_k^B)^T + (W_{k+1}^A)^T W_{k+1}^B[p_{k+1}, :],
   solve `scipy.optimize.linear_sum_assignment(S_k, maximize=True)`, keep the new permutation
   if sum_i S_k[i, new(i)] > sum_i S_k[i, old(i)] + 1e-12, stop after a sweep without progress
   or after 100 sweeps; then runs `target/release/bench_matching weight` on the same
   files with the same order;
3. computes the post-ReLU features of both MLPs on the same N Gaussian inputs (float64), writes
   them to a features `.npz` (keys `a.P_k`, `b.P_k`, `[N, W]`), runs activation matching in
   NumPy/SciPy (Pearson correlation of centred features, zero-variance units -> 0, clipped to
   [-1, 1] -- llfc's default `Statistic::Correlation` -- then one LAP per layer) and
   `bench_matching activation` on the same file.

Timings exclude file reading and data generation on both sides (llfc reports its own matching
time); each is given as wall time and as CPU time (user + system, all threads: NumPy's
`time.process_time()`, llfc's `/proc/self/stat`), which is less sensitive to other load on the
machine. Final objectives must agree to 1e-9 relative and the weight-matching permutations
must be identical (activation matching may pair tied units -- dead ReLU units, whose
correlations are all 0 -- differently), otherwise the script exits non-zero. It prints one
markdown table (width, method, NumPy/SciPy seconds, llfc seconds, speed-ups) and, with `--memory`, the peak resident memory (`/usr/bin/time
-v`) of llfc's activation matching streaming N = 10 000 and N = 100 000 synthetic samples of
width 2048 in batches of 1000 (`bench_matching activation --synthetic`).

Run from the repository root (numpy and scipy needed; threadpoolctl optional, to report the
BLAS kernel). Unset the OpenBLAS overrides some machines set for old OpenBLAS builds, in this
command only, so that NumPy runs its best kernel:

    cargo build --release -p llfc-bench --bin bench_matching
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python3 benches/compare_matching.py --memory
    python3 benches/compare_matching.py --widths 512 --samples 2000   # quick check
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

HIDDEN = 4
INPUT = 784
OUTPUT = 10
BINARY = Path("target/release/bench_matching")

# ------------------------------------------------------------------------------------- data


def random_mlp(width: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    dims = [INPUT] + [width] * HIDDEN + [OUTPUT]
    params = {}
    for i, (fan_in, fan_out) in enumerate(zip(dims[:-1], dims[1:])):
        std = 1.0 / np.sqrt(fan_in)
        params[f"layers.{i}.weight"] = rng.standard_normal((fan_out, fan_in)) * std
        params[f"layers.{i}.bias"] = rng.standard_normal(fan_out) * std
    return params


def hidden_features(params: dict[str, np.ndarray], x: np.ndarray) -> list[np.ndarray]:
    feats, h = [], x
    for i in range(HIDDEN):
        h = np.maximum(h @ params[f"layers.{i}.weight"].T + params[f"layers.{i}.bias"], 0.0)
        feats.append(np.ascontiguousarray(h))
    return feats


# ------------------------------------------------------------------------ NumPy/SciPy methods


def weight_matching(a: dict, b: dict, num_layers: int, max_iter: int = 100, tol: float = 1e-12):
    """Git Re-Basin Algorithm 1 for an MLP, fixed order P_0, P_1, ..."""
    w = lambda p, i: p[f"layers.{i}.weight"]  # noqa: E731
    bias = lambda p, i: p[f"layers.{i}.bias"]  # noqa: E731
    num_perms = num_layers - 1
    perms = [np.arange(w(a, k).shape[0]) for k in range(num_perms)]
    sweeps = 0
    for _ in range(max_iter):
        sweeps += 1
        progress = False
        for k in range(num_perms):
            wb = w(b, k) if k == 0 else w(b, k)[:, perms[k - 1]]
            s = w(a, k) @ wb.T
            s += np.outer(bias(a, k), bias(b, k))
            wn = w(b, k + 1) if k + 1 == num_perms else w(b, k + 1)[perms[k + 1], :]
            s += w(a, k + 1).T @ wn
            _, cols = linear_sum_assignment(s, maximize=True)
            rows = np.arange(s.shape[0])
            if s[rows, cols].sum() > s[rows, perms[k]].sum() + tol:
                perms[k] = cols
                progress = True
        if not progress:
            break
    return perms, sweeps


def permuted(b: dict, perms: list[np.ndarray], num_layers: int) -> dict:
    out = {}
    for i in range(num_layers):
        wt, bs = b[f"layers.{i}.weight"], b[f"layers.{i}.bias"]
        if i < num_layers - 1:
            wt, bs = wt[perms[i], :], bs[perms[i]]
        if i > 0:
            wt = wt[:, perms[i - 1]]
        out[f"layers.{i}.weight"], out[f"layers.{i}.bias"] = wt, bs
    return out


def inner(a: dict, b: dict) -> float:
    return float(sum(np.vdot(a[k], b[k]) for k in a))


def correlation(fa: np.ndarray, fb: np.ndarray) -> np.ndarray:
    ca = fa - fa.mean(axis=0)
    cb = fb - fb.mean(axis=0)
    cross = ca.T @ cb
    denom = np.sqrt(np.outer((ca * ca).sum(axis=0), (cb * cb).sum(axis=0)))
    with np.errstate(divide="ignore", invalid="ignore"):
        c = np.where(denom > 0, cross / denom, 0.0)
    return np.clip(c, -1.0, 1.0)


def activation_matching(feats_a: list, feats_b: list):
    perms, before, after = [], 0.0, 0.0
    for fa, fb in zip(feats_a, feats_b):
        c = correlation(fa, fb)
        _, cols = linear_sum_assignment(c, maximize=True)
        perms.append(cols)
        before += float(np.trace(c))
        after += float(c[np.arange(c.shape[0]), cols].sum())
    return perms, before, after


# ---------------------------------------------------------------------------------- drivers


def run_llfc(args: list[str], runs: int) -> dict:
    outs = []
    for _ in range(runs):
        proc = subprocess.run([str(BINARY)] + args, check=True, capture_output=True, text=True)
        outs.append(json.loads(proc.stdout))
    best = dict(outs[0])
    best["seconds"] = statistics.median(o["seconds"] for o in outs)
    best["cpu_seconds"] = statistics.median(o["cpu_seconds"] for o in outs)
    return best


def timed(f, *args):
    """(result, wall seconds, CPU seconds of this process, all threads)."""
    w0, c0 = time.perf_counter(), time.process_time()
    out = f(*args)
    return out, time.perf_counter() - w0, time.process_time() - c0


def check(name: str, np_obj: float, rs_obj: float, np_perms, rs_perms: dict,
          ties_allowed: bool) -> None:
    """Objectives must agree to 1e-9 relative. Permutations must be identical for weight
    matching; for activation matching units whose statistics tie exactly (dead ReLU units have
    an all-zero correlation row) may be paired differently by the two solvers."""
    rel = abs(np_obj - rs_obj) / max(abs(np_obj), 1e-300)
    moved = sum(
        int((np_perms[k] != np.asarray(rs_perms[f"P_{k}"])).sum()) for k in range(len(np_perms))
    )
    print(f"  {name}: objective numpy {np_obj:.15e} llfc {rs_obj:.15e} (rel {rel:.1e}), "
          f"permutations {'identical' if moved == 0 else f'differ on {moved} units'}",
          file=sys.stderr)
    if rel > 1e-9 or (moved and not ties_allowed):
        raise SystemExit(f"{name}: llfc and NumPy/SciPy disagree")


def max_rss_kib(cmd: list[str]) -> tuple[int, dict]:
    proc = subprocess.run(["/usr/bin/time", "-v"] + cmd, check=True, capture_output=True, text=True)
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    return rss, json.loads(proc.stdout)


ALIGN = Path("target/release/examples/align")
FLOORS: list = []  # (width, products wall, products CPU, NumPy end to end wall, GFLOP)


def align_end_to_end(tmp: Path, width: int, pa: Path, pb: Path, runs: int):
    """`align --method activation` on the features files `fa.npz`, `fb.npz` in `tmp` (wall
    time of the whole command, and the matching time it reports: reading both features files,
    statistics, LAPs), against NumPy/SciPy loading the same files and matching. The summed
    correlations of the two matchings must agree to 1e-9 relative (tied dead units may pair
    differently)."""
    fa_path, fb_path = tmp / "fa.npz", tmp / "fb.npz"

    def numpy_side():
        za, zb = np.load(fa_path), np.load(fb_path)
        keys = sorted(za.files)
        return activation_matching([za[k] for k in keys], [zb[k] for k in keys])

    (perms, _, np_obj), t_np, c_np = timed(numpy_side)
    # The floor of any f64 implementation: the cross products `X^T Y` alone (2 N W^2 flops per
    # layer), at NumPy's (OpenBLAS's) rate, features already in memory.
    za, zb = np.load(fa_path), np.load(fb_path)
    feats = [(za[k], zb[k]) for k in sorted(za.files)]
    _, t_prod, c_prod = timed(lambda: [x.T @ y for x, y in feats])
    del feats
    gflops = 2 * sum(1 for _ in za.files) * za[za.files[0]].shape[0] * width**2 / 1e9
    print(f"  floor: NumPy's {gflops:.0f} GFLOP of f64 cross products alone {t_prod:.2f} s "
          f"(CPU {c_prod:.2f} s, {gflops / t_prod:.0f} GFLOP/s): NumPy/SciPy end to end is "
          f"{t_np / t_prod:.2f}x that, the most any f64 implementation at this GEMM rate can "
          f"gain", file=sys.stderr)
    walls, reported, cpus, rss = [], [], [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.run(
            ["/usr/bin/time", "-v", str(ALIGN), "--a", str(pa), "--b", str(pb), "--spec", "mlp",
             "--method", "activation", "--features-a", str(fa_path), "--features-b",
             str(fb_path), "--output", str(tmp / "aligned.npz")],
            check=True, capture_output=True, text=True)
        walls.append(time.perf_counter() - t0)
        reported.append(float(re.search(r"time: ([0-9.]+) s", proc.stdout).group(1)))
        cpus.append(sum(float(re.search(rf"{k} time \(seconds\): ([0-9.]+)", proc.stderr).group(1))
                        for k in ("User", "System")))
        rss.append(int(re.search(r"Maximum resident set size \(kbytes\): (\d+)",
                                 proc.stderr).group(1)) / 1024)
        print("\n".join("    " + line for line in proc.stderr.splitlines()
                        if line.startswith(("P_", "LAP"))), file=sys.stderr)
    rs_perms = json.loads((tmp / "aligned.perms.json").read_text())
    za, zb = np.load(fa_path), np.load(fb_path)
    rs_obj = sum(float(correlation(za[k], zb[k])[np.arange(width), rs_perms[k]].sum())
                 for k in sorted(za.files))
    rel = abs(np_obj - rs_obj) / abs(np_obj)
    print(f"  align activation {width}: numpy {t_np:.2f} s, align matching "
          f"{statistics.median(reported):.2f} s (whole command {statistics.median(walls):.2f} s, "
          f"CPU {statistics.median(cpus):.2f} s, peak RSS {max(rss):.0f} MiB); "
          f"objective rel {rel:.1e}", file=sys.stderr)
    if rel > 1e-9:
        raise SystemExit("align and NumPy/SciPy disagree")
    fa_path.unlink()
    fb_path.unlink()
    FLOORS.append((width, t_prod, c_prod, t_np, gflops))
    return (width, "activation end to end (files read; llfc: `align` matching time, CPU of "
            "the whole command)", t_np, c_np, statistics.median(reported),
            statistics.median(cpus))


def main() -> None:
    global BINARY
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--widths", type=int, nargs="+", default=[512, 1024, 2048])
    ap.add_argument("--samples", type=int, default=10_000, help="activation samples N")
    ap.add_argument("--runs", type=int, default=1, help="llfc runs per case (median)")
    ap.add_argument("--skip-weight", action="store_true")
    ap.add_argument("--skip-activation", action="store_true")
    ap.add_argument("--memory", action="store_true", help="also measure streaming peak memory")
    ap.add_argument("--binary", type=Path, default=None, help="the bench_matching executable")
    ap.add_argument("--align", action="store_true",
                    help="activation matching end to end: `align --method activation` reading "
                         "both features files against NumPy/SciPy loading them (np.load)")
    opts = ap.parse_args()
    BINARY = opts.binary or BINARY
    if not BINARY.exists():
        raise SystemExit(f"{BINARY} missing: cargo build --release -p llfc-bench --bin bench_matching")
    try:
        from threadpoolctl import threadpool_info

        for info in threadpool_info():
            print(f"numpy BLAS: {info.get('internal_api')} {info.get('version')} "
                  f"kernel {info.get('architecture')} threads {info.get('num_threads')}",
                  file=sys.stderr)
    except ImportError:
        print("threadpoolctl not installed: BLAS kernel not reported", file=sys.stderr)
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if var in os.environ:
            print(f"warning: {var}={os.environ[var]} is set (see the docstring)", file=sys.stderr)

    print(f"load average at the start: {os.getloadavg()}", file=sys.stderr)
    rows = []
    layers = HIDDEN + 1
    with tempfile.TemporaryDirectory(prefix="llfc-matching-") as tmp:
        tmp = Path(tmp)
        for width in opts.widths:
            a, b = random_mlp(width, 2 * width + 1), random_mlp(width, 2 * width + 2)
            pa, pb = tmp / f"a{width}.npz", tmp / f"b{width}.npz"
            np.savez(pa, **a)
            np.savez(pb, **b)
            if not opts.skip_weight:
                (perms, sweeps), t_np, c_np = timed(weight_matching, a, b, layers)
                np_obj = inner(a, permuted(b, perms, layers))
                rs = run_llfc(["weight", "--a", str(pa), "--b", str(pb), "--order", "natural",
                               "--perms"], opts.runs)
                print(f"width {width} weight: numpy {t_np:.2f} s ({sweeps} sweeps), llfc "
                      f"{rs['seconds']:.2f} s ({rs['sweeps']} sweeps)", file=sys.stderr)
                check(f"weight {width}", np_obj, rs["objective_after"], perms, rs["perms"], False)
                rows.append((width, f"weight matching to convergence ({sweeps} sweeps)", t_np,
                             c_np, rs["seconds"], rs["cpu_seconds"]))
            if not opts.skip_activation:
                x = np.random.default_rng(3 * width).standard_normal((opts.samples, INPUT))
                fa, fb = hidden_features(a, x), hidden_features(b, x)
                pf = tmp / f"features{width}.npz"
                np.savez(pf, **{f"{who}.P_{k}": f for who, fs in (("a", fa), ("b", fb))
                                for k, f in enumerate(fs)})
                if opts.align:
                    np.savez(tmp / "fa.npz", **{f"P_{k}": f for k, f in enumerate(fa)})
                    np.savez(tmp / "fb.npz", **{f"P_{k}": f for k, f in enumerate(fb)})
                (perms, _, np_after), t_np, c_np = timed(activation_matching, fa, fb)
                del fa, fb
                rs = run_llfc(["activation", "--features", str(pf), "--perms"], opts.runs)
                pf.unlink()
                if opts.align:
                    rows.append(align_end_to_end(tmp, width, pa, pb, opts.runs))
                print(f"width {width} activation: numpy {t_np:.2f} s, llfc "
                      f"{rs['seconds']:.2f} s", file=sys.stderr)
                check(f"activation {width}", np_after, rs["objective_after"], perms, rs["perms"],
                      True)
                rows.append((width, f"activation matching, N = {opts.samples}", t_np, c_np,
                             rs["seconds"], rs["cpu_seconds"]))

    print(f"load average at the end: {os.getloadavg()}", file=sys.stderr)
    print("| width | method | NumPy/SciPy wall (CPU) s | llfc wall (CPU) s | speed-up wall (CPU) |")
    print("| ---: | --- | ---: | ---: | ---: |")
    for width, method, t_np, c_np, t_rs, c_rs in rows:
        print(f"| {width} | {method} | {t_np:.2f} ({c_np:.2f}) | {t_rs:.2f} ({c_rs:.2f}) | "
              f"{t_np / t_rs:.1f}x ({c_np / max(c_rs, 1e-9):.1f}x) |")

    for width, t_prod, c_prod, t_np, gflops in FLOORS:
        print(f"\nFloor at W = {width}: NumPy's {gflops:.0f} GFLOP of f64 cross products alone "
              f"take {t_prod:.2f} s ({c_prod:.2f} s CPU, {gflops / t_prod:.0f} GFLOP/s); the "
              f"end-to-end NumPy/SciPy time is {t_np / t_prod:.2f}x that.")

    if opts.memory:
        print("\n| streamed samples N | peak RSS (MiB) | statistics + LAP wall (s) |")
        print("| ---: | ---: | ---: |")
        for n in (10_000, 100_000):
            rss, out = max_rss_kib([str(BINARY), "activation", "--synthetic", "--width", "2048",
                                    "--layers", str(HIDDEN), "--samples", str(n),
                                    "--batch", "1000", "--precision", "f32"])
            print(f"| {n} | {rss / 1024:.0f} | {out['seconds']:.2f} |")


if __name__ == "__main__":
    main()
