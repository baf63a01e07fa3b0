#!/usr/bin/env python3
"""Notebook-style walk-through of `import llfc`: the README's Rust quick start, in Python.

1. Train two small ReLU MLPs (64-128-128-10) on the bundled digits from two seeds, in NumPy.
2. Align B to A with `llfc.weight_matching` (Git Re-Basin) and check the permuted B computes
   the same function.
3. Print the loss/error barrier along θ(α) = α θ_A + (1 − α) θ_B before and after alignment.
4. Print the per-layer LLFC table (1 − cos to the interpolated features, its baseline, the scale
   c) at α = 0.5 with `llfc.llfc_layer`.

Run from the repository root after `pip install ./python`:

    python3 examples/python/align_mlps.py

Seeded; takes a few seconds. PyTorch users would replace the NumPy training by their own and pass
`{k: t.detach().cpu().numpy() for k, t in model.state_dict().items()}` to llfc.
"""

from pathlib import Path

import numpy as np

import llfc

# %% Data: the UCI digits shipped in data/ (65-byte records: 64 pixels 0..16, then the label).
raw = np.frombuffer((Path(__file__).resolve().parents[2] / "data" / "digits.bin").read_bytes(), np.uint8)
raw = raw.reshape(-1, 65)
x_all, y_all = raw[:, :64] / 16.0, raw[:, 64].astype(np.int64)
test = np.arange(len(raw)) % 4 == 3  # the crate's fixed split
x_train, y_train, x_test, y_test = x_all[~test], y_all[~test], x_all[test], y_all[test]
WIDTHS = [64, 128, 128, 10]


# %% A reference MLP in NumPy: PyTorch names and layouts (`layers.{i}.weight` is [out, in]).
def init(seed):
    rng = np.random.default_rng(seed)
    p = {}
    for i, (n_in, n_out) in enumerate(zip(WIDTHS[:-1], WIDTHS[1:])):
        bound = 1 / np.sqrt(n_in)
        p[f"layers.{i}.weight"] = rng.uniform(-bound, bound, (n_out, n_in))
        p[f"layers.{i}.bias"] = rng.uniform(-bound, bound, n_out)
    return p


def forward(p, x):
    """Logits, and per hidden layer the post-ReLU features."""
    feats, h = [], x
    for i in range(len(WIDTHS) - 1):
        h = h @ p[f"layers.{i}.weight"].T + p[f"layers.{i}.bias"]
        if i < len(WIDTHS) - 2:
            h = np.maximum(h, 0)
            feats.append(h)
    return h, feats


def loss_and_error(p, x, y):
    logits, _ = forward(p, x)
    z = logits - logits.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    return float(-logp[np.arange(len(y)), y].mean()), float((logits.argmax(1) != y).mean())


def train(seed, epochs=30, lr=0.1, batch=32):
    p, rng = init(seed), np.random.default_rng(seed + 100)
    n_layers = len(WIDTHS) - 1
    for _ in range(epochs):
        for idx in np.array_split(rng.permutation(len(x_train)), len(x_train) // batch):
            x, y = x_train[idx], y_train[idx]
            hs, h = [x], x
            for i in range(n_layers):
                h = h @ p[f"layers.{i}.weight"].T + p[f"layers.{i}.bias"]
                if i < n_layers - 1:
                    h = np.maximum(h, 0)
                hs.append(h)
            g = np.exp(h - h.max(1, keepdims=True))
            g /= g.sum(1, keepdims=True)
            g[np.arange(len(y)), y] -= 1
            g /= len(y)
            for i in reversed(range(n_layers)):
                w = p[f"layers.{i}.weight"]
                gw, gb = g.T @ hs[i], g.sum(0)
                g = (g @ w) * (hs[i] > 0)
                p[f"layers.{i}.weight"] = w - lr * gw
                p[f"layers.{i}.bias"] = p[f"layers.{i}.bias"] - lr * gb
    return p


# %% Two modes from two seeds.
a, b = train(seed=1), train(seed=2)
print("test loss / error:  A %.4f / %.4f   B %.4f / %.4f" % (*loss_and_error(a, x_test, y_test), *loss_and_error(b, x_test, y_test)))

# %% Weight matching: permute B's hidden units towards A.
spec = llfc.PermutationSpec.mlp(len(WIDTHS) - 1)
spec.validate(a)
m = llfc.weight_matching(spec, a, b, seed=0)
b_aligned = llfc.apply_permutations(spec, m.perms, b)
print(f"weight matching: {m.sweeps} sweeps, <A, pi(B)> {m.initial_objective:.3f} -> {m.objective:.3f}")
same = np.abs(forward(b, x_test)[0] - forward(b_aligned, x_test)[0]).max()
print(f"permuted B computes the same function: max |logit difference| = {same:.1e}")


# %% LMC: loss and error along the linear path, and their barriers.
def interpolate(p, q, alpha):
    return {k: alpha * p[k] + (1 - alpha) * q[k] for k in p}


alphas = np.linspace(0, 1, 11)
for name, other in (("naive", b), ("aligned", b_aligned)):
    curve = np.array([loss_and_error(interpolate(a, other, t), x_test, y_test) for t in alphas])
    lb, eb = llfc.barrier(alphas, curve[:, 0]), llfc.barrier(alphas, curve[:, 1])
    print(f"{name:8s} loss barrier {lb.height:.4f} (alpha={lb.alpha:.1f})   error barrier {eb.height:.4f} (alpha={eb.alpha:.1f})")

# %% LLFC per layer at alpha = 0.5, before and after alignment.
alpha = 0.5
print(f"\nLLFC at alpha = {alpha} (test set, post-ReLU features)")
print("layer | pairing | E[1 - cos_alpha] | baseline E[1 - cos(A, B)] | scale c")
for name, other in (("naive", b), ("aligned", b_aligned)):
    _, fa = forward(a, x_test)
    _, fb = forward(other, x_test)
    _, fm = forward(interpolate(a, other, alpha), x_test)
    for layer, (x_m, x_a, x_b) in enumerate(zip(fm, fa, fb)):
        r = llfc.llfc_layer(x_m, x_a, x_b, alpha)
        print(f"{layer:5d} | {name:7s} | {r.distance.mean:16.4f} | {r.baseline.mean:25.4f} | {r.c.mean:7.3f}")
