#!/usr/bin/env bash
# Rayon scaling of llfc's matching (BENCHMARKS.md, "Rayon scaling on 16 cores").
# Needs python3 with NumPy and a release build: cargo build --release -p llfc-bench --bin bench_matching
# (or BENCH_MATCHING=path/to/bench_matching). Weight matching on seeded Gaussian MLPs
# 784-2048x4-10 in f64 (fixed order P_0..P_3); activation matching on synthetic streamed
# features, width 2048, 4 layers, N = 10 000, f64; RAYON_NUM_THREADS = 1, 2, 4, 8, 16.
set -u
B=${BENCH_MATCHING:-target/release/bench_matching}
nproc; lscpu | grep -E "Model name|Thread|Socket|NUMA node\(s\)"
python3 - <<'PY'
import numpy as np
w = [784, 2048, 2048, 2048, 2048, 10]
for seed, name in [(0, "A"), (1, "B")]:
    rng = np.random.default_rng(seed)
    d = {}
    for i in range(5):
        d[f"layers.{i}.weight"] = rng.standard_normal((w[i + 1], w[i])) / np.sqrt(w[i])
        d[f"layers.{i}.bias"] = rng.standard_normal(w[i + 1]) / np.sqrt(w[i])
    np.savez(f"/tmp/{name}.npz", **d)
print("weights written")
PY
for t in 1 2 4 8 16; do
  echo "weight threads=$t $(RAYON_NUM_THREADS=$t timeout 120 $B weight --a /tmp/A.npz --b /tmp/B.npz)"
done
for t in 1 2 4 8 16; do
  echo "activation threads=$t $(RAYON_NUM_THREADS=$t timeout 100 $B activation --synthetic --width 2048 --layers 4 --samples 10000 --precision f64)"
done
