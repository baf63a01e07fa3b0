#!/usr/bin/env python3
"""Peak memory of `align` (weight and activation matching): the memory regression check.

For a width W the script writes two seeded random MLPs 784 -> 4 x W -> 10 (float64, the
generator of `compare_matching.py`) as `.npz` (or `.safetensors` with `--format safetensors`)
and, for activation matching, the post-ReLU features of the four hidden layers of both on the
same N Gaussian inputs (one features `.npz` per model, keys `P_0 .. P_3`, `[N, W]`). It then runs
the release `align` under `/usr/bin/time -v` and reads its peak resident set size.

The bound checked (issue 17, target 5): peak RSS <= 2 x (the two checkpoint files) + the
similarity buffers + 64 MiB (the process's code, allocator slack and small buffers), where the
similarity buffers are what the algorithm must hold, at W units per permutation and 8 bytes per
entry:
- weight matching: per permutation its f64 similarity matrix S_p, per term (the parameter
  axes a permutation touches: two weight matrices per hidden layer) its cached product, and one
  W x W working copy of the LAP: (4 + 8 + 1) W^2 x 8 bytes for this MLP;
- activation matching: per layer the cross moment and the statistic (2 W^2 x 8 bytes), with the
  blocks being read (three blocks of 2048 samples per model: the one being added, one queued,
  one being read) and one LAP working copy.
The features files are read as they are used, never whole; they do not enter the bound.

Exits non-zero if a run exceeds its bound. Run from the repository root:

    cargo build --release --features serde --example align
    python3 benches/memory_align.py --width 2048              # both methods, ~1 min
    python3 benches/memory_align.py --width 4096 --skip-activation
    python3 benches/memory_align.py --gpt2 --max-iter 100   # GPT-2-small-shaped weight matching

With `--gpt2` the models are two random GPT-2-small-shaped checkpoints (Hugging Face names,
12 blocks, d = 768, 12 heads, MLP 3072, vocabulary `--vocab`, float64) matched by weight
matching with the `gpt2` spec (one residual permutation of 768, per block a head-structured
q/k and v/o permutation and an MLP permutation of 3072); the bound then counts the similarity
buffers of the residual and MLP permutations.
With `--perf`, each run is sampled by `perf record` and the share of samples in the LAP solver
(`llfc::assignment`) is printed.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_matching import HIDDEN, INPUT, hidden_features, random_mlp  # noqa: E402

BINARY = Path("target/release/examples/align")
MIB = 1 << 20


def write_safetensors(path: Path, params: dict[str, np.ndarray]) -> None:
    """A minimal safetensors writer (float64 tensors), so that the script needs numpy only."""
    import json

    header, offset, blobs = {}, 0, []
    for name, t in params.items():
        data = np.ascontiguousarray(t, dtype="<f8").tobytes()
        header[name] = {"dtype": "F64", "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for b in blobs:
            f.write(b)


def random_gpt2(seed: int, vocab: int, d: int = 768, layers: int = 12,
                positions: int = 1024) -> dict[str, np.ndarray]:
    """A random GPT-2-shaped state dict (Hugging Face names, Conv1D `[in, out]` weights)."""
    rng = np.random.default_rng(seed)
    g = lambda *shape: rng.standard_normal(shape) * 0.02  # noqa: E731
    p = {"transformer.wte.weight": g(vocab, d), "transformer.wpe.weight": g(positions, d)}
    for i in range(layers):
        h = f"transformer.h.{i}"
        for ln in ("ln_1", "ln_2"):
            p[f"{h}.{ln}.weight"] = 1.0 + g(d)
            p[f"{h}.{ln}.bias"] = g(d)
        for name, (fan_in, fan_out) in (("attn.c_attn", (d, 3 * d)), ("attn.c_proj", (d, d)),
                                        ("mlp.c_fc", (d, 4 * d)), ("mlp.c_proj", (4 * d, d))):
            p[f"{h}.{name}.weight"] = g(fan_in, fan_out)
            p[f"{h}.{name}.bias"] = g(fan_out)
    p["transformer.ln_f.weight"] = 1.0 + g(d)
    p["transformer.ln_f.bias"] = g(d)
    return p


PERF = False


def peak(cmd: list[str]) -> tuple[float, float, str]:
    """(peak RSS in MiB, wall seconds, stdout) of a command; its CPU time (user + system) is
    appended to stdout as a `cpu: S s` line."""
    t0 = time.perf_counter()
    if PERF:
        cmd = ["perf", "record", "-q", "-F", "49", "-o", "/tmp/llfc-memory-perf.data", "--"] + cmd
    proc = subprocess.run(["/usr/bin/time", "-v"] + cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"command failed: {' '.join(cmd)}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    cpu = sum(float(re.search(rf"{k} time \(seconds\): ([0-9.]+)", proc.stderr).group(1))
              for k in ("User", "System"))
    if PERF:
        report = subprocess.run(["perf", "report", "-i", "/tmp/llfc-memory-perf.data", "--stdio",
                                 "--sort", "sym", "--percent-limit", "0"],
                                capture_output=True, text=True).stdout
        share = sum(float(m.group(1)) for m in
                    re.finditer(r"^\s+([0-9.]+)%.*llfc::assignment", report, re.M))
        print(f"  LAP share of the samples (llfc::assignment): {share:.1f} %", file=sys.stderr)
        # perf's own memory is not the command's: measure the peak without it.
        print("  (peak RSS under perf includes perf; rerun without --perf for memory)",
              file=sys.stderr)
    return rss / 1024, wall, proc.stdout + f"cpu: {cpu:.2f} s\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--width", type=int, default=2048)
    ap.add_argument("--samples", type=int, default=10_000, help="activation samples N")
    ap.add_argument("--format", choices=["npz", "safetensors"], default="npz")
    ap.add_argument("--skip-weight", action="store_true")
    ap.add_argument("--skip-activation", action="store_true")
    ap.add_argument("--max-iter", type=int, default=100, help="weight-matching sweeps")
    ap.add_argument("--binary", type=Path, default=BINARY)
    ap.add_argument("--gpt2", action="store_true", help="GPT-2-small-shaped weight matching")
    ap.add_argument("--vocab", type=int, default=50257, help="GPT-2 vocabulary (with --gpt2)")
    ap.add_argument("--perf", action="store_true", help="report the LAP share (perf record)")
    opts = ap.parse_args()
    global PERF
    PERF = opts.perf
    w = opts.width
    print(f"load average at the start: {os.getloadavg()}", file=sys.stderr)
    failed = False
    with tempfile.TemporaryDirectory(prefix="llfc-memory-") as tmp:
        tmp = Path(tmp)
        if opts.gpt2:
            a, b = random_gpt2(1, opts.vocab), random_gpt2(2, opts.vocab)
        else:
            a, b = random_mlp(w, 2 * w + 1), random_mlp(w, 2 * w + 2)
        pa, pb = tmp / f"a.{opts.format}", tmp / f"b.{opts.format}"
        for path, params in ((pa, a), (pb, b)):
            if opts.format == "npz":
                np.savez(path, **params)
            else:
                write_safetensors(path, params)
        inputs = (pa.stat().st_size + pb.stat().st_size) / MIB
        rows = []
        spec = ["--spec", "gpt2", "--heads", "12"] if opts.gpt2 else ["--spec", "mlp"]
        common = [str(opts.binary), "--a", str(pa), "--b", str(pb), "--quiet",
                  "--output", str(tmp / f"out.{opts.format}")] + spec
        if opts.gpt2:
            # Residual: S and one LAP copy (768^2) plus a product per term (4 per block, the
            # embeddings, ln terms are vectors); per block the MLP's S, LAP copy and 2 products
            # (3072^2), the heads' S and products (768^2, 6 terms).
            d, f = 768, 3072
            buffers = (2 * d * d + (4 * 12 + 2) * d * d + 12 * (4 * f * f + 8 * d * d)) * 8 / MIB
            rss, wall, out = peak(common + ["--fixed-order", "--max-iter", str(opts.max_iter)])
            rows.append(("weight, gpt2", rss, wall, buffers, out))
            opts.skip_weight = opts.skip_activation = True
        if not opts.skip_weight:
            buffers = (HIDDEN + 2 * HIDDEN + 1) * w * w * 8 / MIB
            rss, wall, out = peak(common + ["--fixed-order", "--max-iter", str(opts.max_iter)])
            rows.append(("weight", rss, wall, buffers, out))
        if not opts.skip_activation:
            x = np.random.default_rng(3 * w).standard_normal((opts.samples, INPUT))
            fa, fb = tmp / "features_a.npz", tmp / "features_b.npz"
            np.savez(fa, **{f"P_{k}": f for k, f in enumerate(hidden_features(a, x))})
            np.savez(fb, **{f"P_{k}": f for k, f in enumerate(hidden_features(b, x))})
            del x
            buffers = (2 * HIDDEN * w * w + w * w + 6 * 2048 * w) * 8 / MIB
            rss, wall, out = peak(common + ["--method", "activation", "--features-a", str(fa),
                                            "--features-b", str(fb)])
            rows.append((f"activation, N = {opts.samples}", rss, wall, buffers, out))
    print(f"load average at the end: {os.getloadavg()}", file=sys.stderr)
    shape = "GPT-2 small" if opts.gpt2 else f"MLP 784 -> 4 x {w} -> 10"
    print(f"{shape}, two {opts.format} checkpoints of {inputs / 2:.0f} MiB each")
    print("| method | sweeps | wall (s) | CPU (s) | peak RSS (MiB) | "
          "bound: 2 x inputs + buffers + 64 MiB | peak / inputs |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for name, rss, wall, buffers, out in rows:
        bound = 2 * inputs + buffers + 64
        ok = rss <= bound
        failed |= not ok
        sweeps = re.search(r"^sweeps: (.*)$", out, re.M)
        cpu = re.search(r"^cpu: ([0-9.]+) s$", out, re.M).group(1)
        print(f"| {name} | {sweeps.group(1) if sweeps else '-'} | {wall:.2f} | {cpu} | {rss:.0f} "
              f"| {bound:.0f} ({'ok' if ok else 'EXCEEDED'}) | {rss / inputs:.2f} |")
    if failed:
        raise SystemExit("peak memory above the bound")


if __name__ == "__main__":
    main()
