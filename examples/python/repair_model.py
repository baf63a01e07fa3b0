#!/usr/bin/env python3
"""REPAIR and BatchNorm reset of a model through files: Python measures, `llfc` computes.

REPAIR (Jordan et al., ICLR 2023) rescales every repaired unit of theta(alpha) =
alpha A + (1 - alpha) B (alpha = 1 is A) to the mean mu_alpha = alpha mu_A + (1 - alpha) mu_B and
std sigma_alpha = alpha sigma_A + (1 - alpha) sigma_B, folded into the layer producing it
(W <- s W, b <- s (b - mu~) + mu_alpha, s = sigma_alpha / sigma~), layer by layer from the input:
each layer is measured on the network whose earlier layers are already repaired. This script
does the measuring (a forward pass over your data, per-unit mean and variance accumulated in
float64) and calls the `repair` example of the crate for everything else, one layer at a time:

    cargo build --release --example repair          # once; the binary this script calls

NumPy only (no torch): a ReLU MLP named `layers.{i}.weight` / `layers.{i}.bias` (what
`export_state_dict.py --mlp-names` writes) and inputs X (`[samples, in]` `.npy`):

    python3 repair_model.py --a a.safetensors --b b_aligned.safetensors --x x_train.npy \
        --alpha 0.5 --out repaired.safetensors

PyTorch (any model; conv maps give per-channel statistics), from your own code:

    from repair_model import repair_torch, reset_bn_torch
    # BatchNorm networks: reset theta(alpha)'s running statistics first (eval mode, layer by
    # layer), then optionally REPAIR the BN outputs (folded into each BN's weight and bias).
    reset_bn_torch(model, "theta.safetensors", loader, ["bn1", "layer1.0.bn1", ...],
                   out="theta_reset.safetensors")
    # Without BatchNorm: REPAIR the outputs of the linear/conv modules (they need a bias).
    repair_torch(model, "a.safetensors", "b_aligned.safetensors", 0.5, loader,
                 ["features.0", "features.3", "classifier.0"], out="repaired.safetensors")

`model` is an instance of the architecture (its weights are overwritten from the files);
`loader` yields input batches (or (input, label) pairs); the names are module names. The
statistics files this script writes hold `{name}/mean`, `{name}/var` (population variance) and
`{name}/count` per module (see `examples/repair.rs`).
"""

import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from llfc_files import load_params, save_npz  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_BIN = os.path.join(ROOT, "target", "release", "examples", "repair")


class UnitStats:
    """Per-unit count, mean and sum of squared deviations in float64, merged batch by batch
    (Chan et al.): `[N, units]` batches, or `[N, C, H, W]` maps (statistics per channel)."""

    def __init__(self):
        self.n, self.mean, self.m2 = 0, None, None

    def update(self, batch):
        x = np.asarray(batch, dtype=np.float64)
        if x.ndim == 4:
            x = x.transpose(0, 2, 3, 1).reshape(-1, x.shape[1])
        elif x.ndim != 2:
            raise ValueError(f"features must be [N, units] or [N, C, H, W], got {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("non-finite features")
        nb, mean = x.shape[0], x.mean(axis=0)
        m2 = ((x - mean) ** 2).sum(axis=0)
        if self.n == 0:
            self.n, self.mean, self.m2 = nb, mean, m2
            return
        n = self.n + nb
        delta = mean - self.mean
        self.m2 = self.m2 + m2 + delta**2 * self.n * nb / n
        self.mean = self.mean + delta * nb / n
        self.n = n

    def arrays(self, name):
        return {f"{name}/mean": self.mean, f"{name}/var": self.m2 / self.n,
                f"{name}/count": np.array([float(self.n)])}


def save_stats(path, stats):
    """Write {name: UnitStats} as a statistics file."""
    arrays = {}
    for name, st in stats.items():
        arrays.update(st.arrays(name))
    save_npz(path, arrays)


def call(binary, *args):
    """Run the `repair` example; its one-line error becomes a SystemExit."""
    if not os.path.exists(binary):
        raise SystemExit(f"repair_model: error: {binary} not found: run "
                         "`cargo build --release --example repair` first (or pass --repair-bin)")
    done = subprocess.run([binary, *map(str, args)], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stderr.strip() or f"repair_model: error: {binary} failed")
    return done.stdout


def repair_files(measure, a, b, alpha, layers, out, binary=DEFAULT_BIN, verbose=True):
    """REPAIR through files. `measure(checkpoint_path, names) -> {name: UnitStats}` is the
    forward pass (unit statistics of the modules' outputs); `layers` are module names, or
    (name, weight, bias) triples, in order from the input. Writes `out`."""
    layers = [(l, f"{l}.weight", f"{l}.bias") if isinstance(l, str) else tuple(l) for l in layers]
    names = [l[0] for l in layers]
    ext = os.path.splitext(out)[1]
    with tempfile.TemporaryDirectory() as tmp:
        stats_a, stats_b = os.path.join(tmp, "a.npz"), os.path.join(tmp, "b.npz")
        save_stats(stats_a, measure(a, names))
        save_stats(stats_b, measure(b, names))
        theta = os.path.join(tmp, "theta0" + ext)
        call(binary, "interpolate", "--a", a, "--b", b, "--alpha", alpha, "-o", theta)
        for k, (name, weight, bias) in enumerate(layers, start=1):
            stats = os.path.join(tmp, "theta.npz")
            save_stats(stats, measure(theta, [name]))
            repaired = os.path.join(tmp, f"theta{k}{ext}")  # never write over an input
            log = call(binary, "fold", "--theta", theta, "--alpha", alpha, "--stats-a", stats_a,
                       "--stats-b", stats_b, "--stats", stats,
                       "--layer", f"{name}={weight},{bias}", "-o", repaired)
            theta = repaired
            if verbose:
                print(log.splitlines()[0])
        os.replace(theta, out)


def reset_bn_files(measure_inputs, theta, bns, out, binary=DEFAULT_BIN, population=False):
    """BatchNorm reset through files: `measure_inputs(checkpoint_path, names)` returns the
    statistics of the BN modules' inputs with the network in eval mode; BNs are reset in the
    order given, each measured with the earlier ones already reset. Writes `out`."""
    ext = os.path.splitext(out)[1]
    with tempfile.TemporaryDirectory() as tmp:
        current = os.path.join(tmp, "theta0" + ext)
        # A copy of theta in the format of `out` (alpha = 1 reproduces theta exactly).
        call(binary, "interpolate", "--a", theta, "--b", theta, "--alpha", 1.0, "-o", current)
        for k, name in enumerate(bns, start=1):
            stats = os.path.join(tmp, "stats.npz")
            save_stats(stats, measure_inputs(current, [name]))
            extra = ["--population"] if population else []
            reset = os.path.join(tmp, f"theta{k}{ext}")  # never write over an input
            call(binary, "reset-bn", "--theta", current, "--stats", stats, "--bn", name, *extra,
                 "-o", reset)
            current = reset
        os.replace(current, out)


# ---- NumPy: the reference ReLU MLP (`layers.{i}.*`), pre-activations repaired ----

def mlp_measure(x):
    """Measurement of an MLP checkpoint's pre-activations `layers.{i}` on inputs x."""
    def measure(path, names):
        params = load_params(path)
        h, out, i = x, {}, 0
        while f"layers.{i}.weight" in params:
            w, b = params[f"layers.{i}.weight"], params[f"layers.{i}.bias"]
            z = h.astype(w.dtype) @ w.T + b
            if f"layers.{i}" in names:
                out[f"layers.{i}"] = UnitStats()
                out[f"layers.{i}"].update(z)
            h, i = np.maximum(z, 0), i + 1
        missing = [n for n in names if n not in out]
        if missing:
            raise SystemExit(f"repair_model: error: {path} has no layer {missing}")
        return out
    return measure


# ---- PyTorch: forward hooks on named modules ----

def torch_measure(model, loader, inputs=False):
    """Measurement through a PyTorch model: loads the checkpoint into `model`, runs it in eval
    mode over `loader` and accumulates the statistics of the named modules' outputs (or, with
    `inputs=True`, of their inputs: what a BatchNorm normalises)."""
    import torch

    def measure(path, names):
        state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in load_params(path).items()}
        model.load_state_dict(state)
        model.eval()
        stats, hooks = {n: UnitStats() for n in names}, []
        modules = dict(model.named_modules())
        for n in names:
            if inputs:
                hook = lambda m, i, n=n: stats[n].update(i[0].detach().double().cpu().numpy())
                hooks.append(modules[n].register_forward_pre_hook(hook))
            else:
                hook = lambda m, i, o, n=n: stats[n].update(o.detach().double().cpu().numpy())
                hooks.append(modules[n].register_forward_hook(hook))
        device = next(model.parameters()).device
        try:
            with torch.no_grad():
                for batch in loader:
                    x = batch[0] if isinstance(batch, (tuple, list)) else batch
                    model(x.to(device))
        finally:
            for h in hooks:
                h.remove()
        return stats
    return measure


def repair_torch(model, a, b, alpha, loader, layers, out, binary=DEFAULT_BIN):
    """REPAIR of theta(alpha) between the checkpoints `a` and `b` (B aligned to A) for the
    outputs of the named modules; writes `out`."""
    repair_files(torch_measure(model, loader), a, b, alpha, layers, out, binary)


def reset_bn_torch(model, theta, loader, bns, out, binary=DEFAULT_BIN, population=False):
    """BatchNorm reset of the checkpoint `theta` for the named BN modules; writes `out`."""
    reset_bn_files(torch_measure(model, loader, inputs=True), theta, bns, out, binary, population)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", required=True, help="checkpoint of A (.npz or .safetensors)")
    parser.add_argument("--b", required=True, help="checkpoint of B aligned to A")
    parser.add_argument("--x", required=True, help="inputs, [samples, in] .npy (training data)")
    parser.add_argument("--alpha", type=float, required=True, help="alpha = 1 is A")
    parser.add_argument("--out", required=True, help="repaired checkpoint")
    parser.add_argument("--repair-bin", default=DEFAULT_BIN, help="the `repair` example binary")
    args = parser.parse_args(argv)
    x = np.load(args.x)
    params = load_params(args.a)
    depth = sum(1 for k in params if k.startswith("layers.") and k.endswith(".weight"))
    if depth < 2:
        raise SystemExit("repair_model: error: expected an MLP `layers.{i}.*` with a hidden layer")
    hidden = [f"layers.{i}" for i in range(depth - 1)]
    repair_files(mlp_measure(x), args.a, args.b, args.alpha, hidden, args.out, args.repair_bin)
    print(f"wrote {args.out}: {len(hidden)} layers repaired at alpha = {args.alpha}")


if __name__ == "__main__":
    main()
