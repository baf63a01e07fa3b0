#!/usr/bin/env python3
"""Per-layer features of two ReLU MLPs and of their interpolations, for `llfc_report` and
`align --method activation`, computed with NumPy alone.

    python3 export_features.py --a a.safetensors --b b.safetensors --x x.npy \
        --alphas 0.25,0.5,0.75 --out features.npz \
        --perm-features-a feats_a.npz --perm-features-b feats_b.npz

The checkpoints (`.npz` or `.safetensors`) hold an MLP in PyTorch's `nn.Sequential` naming,
`layers.{i}.weight` `[out, in]` and `layers.{i}.bias` `[out]`, i = 0 .. L-1, with a ReLU
between consecutive layers and none after the last (what `export_state_dict.py --mlp-names`
writes). X is a `[samples, in]` `.npy`. For theta(alpha) = alpha theta_A + (1 - alpha) theta_B
(alpha = 1 is A), with h_{-1} = X, z_i = h_{i-1} W_i^T + b_i, h_i = relu(z_i) (h_{L-1} = z_{L-1},
the logits), `--out` gets, for every layer i (layer name `layers.{i}`):

    A/layers.{i}, B/layers.{i}, alpha={a}/layers.{i}     post-activations h_i (logits for the last)
    pre/A/layers.{i}, pre/B/layers.{i}, pre/alpha={a}/layers.{i}
                                                         pre-activations z_i, hidden layers only
    in/A/layers.{i}, in/B/layers.{i}                     the layer's input h_{i-1} (X for i = 0)

with `{a}` each `--alphas` value exactly as written. `--perm-features-a/-b` get one array per
hidden layer, `P_{i}` = h_i of A (resp. B): the features `align --spec mlp --method activation`
matches. Arrays are written in the precision of A's weights (`--dtype` to override).
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from llfc_files import llfc_feature_arrays, load_params, save_npz  # noqa: E402


def mlp_layers(params, path):
    """[(W, b), ...] of an MLP checkpoint named layers.{i}.weight / layers.{i}.bias."""
    layers = []
    while f"layers.{len(layers)}.weight" in params:
        i = len(layers)
        w = params[f"layers.{i}.weight"]
        b = params.get(f"layers.{i}.bias", np.zeros(w.shape[0], dtype=w.dtype))
        if w.ndim != 2 or b.shape != (w.shape[0],):
            raise SystemExit(f"export_features: error: {path}: layers.{i} has weight {w.shape}, bias {b.shape}")
        layers.append((w, b))
    if not layers:
        raise SystemExit(f"export_features: error: {path}: no `layers.0.weight`")
    return layers


def forward_features(layers, x):
    """(pre, post): lists of z_i and h_i, as in `llfc::mlp::forward_features`."""
    pre, post, h = [], [], x
    for i, (w, b) in enumerate(layers):
        z = h @ w.T + b
        h = np.maximum(z, 0) if i + 1 < len(layers) else z
        pre.append(z)
        post.append(h)
    return pre, post


def interpolate(la, lb, alpha):
    """theta(alpha) = alpha theta_A + (1 - alpha) theta_B, layer by layer."""
    return [(alpha * wa + (1 - alpha) * wb, alpha * ba + (1 - alpha) * bb) for (wa, ba), (wb, bb) in zip(la, lb)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", required=True, help="checkpoint of A (.npz or .safetensors)")
    parser.add_argument("--b", required=True, help="checkpoint of B (.npz or .safetensors)")
    parser.add_argument("--x", required=True, help="inputs, [samples, in] .npy")
    parser.add_argument("--alphas", default="0.25,0.5,0.75", help="comma-separated alpha values")
    parser.add_argument("--out", required=True, help="features .npz for llfc_report")
    parser.add_argument("--perm-features-a", help="features .npz of A for align --method activation")
    parser.add_argument("--perm-features-b", help="features .npz of B for align --method activation")
    parser.add_argument("--dtype", choices=["float32", "float64"], help="dtype of the computation")
    args = parser.parse_args(argv)

    la, lb = mlp_layers(load_params(args.a), args.a), mlp_layers(load_params(args.b), args.b)
    if [w.shape for w, _ in la] != [w.shape for w, _ in lb]:
        raise SystemExit("export_features: error: A and B have different layer shapes")
    dtype = np.dtype(args.dtype or la[0][0].dtype)
    la = [(w.astype(dtype), b.astype(dtype)) for w, b in la]
    lb = [(w.astype(dtype), b.astype(dtype)) for w, b in lb]
    x = np.load(args.x).astype(dtype)
    if x.ndim != 2 or x.shape[1] != la[0][0].shape[1]:
        raise SystemExit(f"export_features: error: X has shape {x.shape}, the MLP reads {la[0][0].shape[1]} inputs")
    labels = [s.strip() for s in args.alphas.split(",") if s.strip()]
    for s in labels:
        float(s)

    names = [f"layers.{i}" for i in range(len(la))]
    hidden = names[:-1]
    pre_a, post_a = forward_features(la, x)
    pre_b, post_b = forward_features(lb, x)
    feats_alpha, pre_alpha = {}, {}
    for label in labels:
        # alpha in the computation's precision, as in a framework.
        pre_t, post_t = forward_features(interpolate(la, lb, dtype.type(float(label))), x)
        feats_alpha[label] = dict(zip(names, post_t))
        pre_alpha[label] = dict(zip(hidden, pre_t[:-1]))
    arrays = llfc_feature_arrays(
        dict(zip(names, post_a)),
        dict(zip(names, post_b)),
        feats_alpha,
        pre=(dict(zip(hidden, pre_a[:-1])), dict(zip(hidden, pre_b[:-1])), pre_alpha),
        inputs=(dict(zip(names, [x] + post_a[:-1])), dict(zip(names, [x] + post_b[:-1]))),
    )
    save_npz(args.out, arrays)
    print(f"wrote {args.out}: {len(names)} layers, alpha = {', '.join(labels)}, {x.shape[0]} samples")
    for path, post in [(args.perm_features_a, post_a), (args.perm_features_b, post_b)]:
        if path:
            save_npz(path, {f"P_{i}": h for i, h in enumerate(post[:-1])})
            print(f"wrote {path}: P_0 .. P_{len(post) - 2}")


if __name__ == "__main__":
    main()
