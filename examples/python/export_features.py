#!/usr/bin/env python3
"""Per-layer features of two ReLU MLPs and of their interpolations, for `llfc_report` and
`align --method activation`, computed with NumPy alone.

    python3 export_features.py --a a.safetensors --b b.safetensors --x x.npy \
        --alphas 0.25,0.5,0.75 --out features.npz \
        --perm-features-a feats_a.npz --perm-features-b feats_b.npz

The checkpoints (`.npz` or `.safetensors`) hold an MLP in PyTorch's `nn.Sequential` naming,
`layers.{k}.weight` `[out, in]` and `layers.{k}.bias` `[out]`, with a ReLU between consecutive
linear layers and none after the last: either `k = 0 .. L-1` (what `export_state_dict.py
--mlp-names` writes) or the indices of an `nn.Sequential(Linear, ReLU, Linear, ...)`,
`k = 0, 2, 4, ...` (any increasing indices; layer names keep them). Any other tensor is an
error. X is a `[samples, in]` `.npy`. For theta(alpha) = alpha theta_A + (1 - alpha) theta_B
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
import re
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from llfc_files import llfc_feature_arrays, load_params, save_npz  # noqa: E402


def mlp_layers(params, path):
    """(names, [(W, b), ...]) of an MLP checkpoint named layers.{k}.weight / layers.{k}.bias,
    k increasing (0, 1, 2, ... or an nn.Sequential's 0, 2, 4, ...)."""
    pattern = re.compile(r"layers\.(\d+)\.(weight|bias)")
    indices, others = set(), []
    for name in params:
        m = pattern.fullmatch(name)
        if m:
            indices.add(int(m.group(1)))
        else:
            others.append(name)
    if others:
        raise SystemExit(
            f"export_features: error: {path}: not an MLP named layers.{{k}}.weight/bias; "
            f"unexpected tensors: {', '.join(others)}"
        )
    if not indices:
        raise SystemExit(f"export_features: error: {path}: no `layers.{{k}}.weight`")
    names, layers = [], []
    for k in sorted(indices):
        if f"layers.{k}.weight" not in params:
            raise SystemExit(f"export_features: error: {path}: `layers.{k}.bias` without `layers.{k}.weight`")
        w = params[f"layers.{k}.weight"]
        b = params.get(f"layers.{k}.bias", np.zeros(w.shape[0], dtype=w.dtype))
        if w.ndim != 2 or b.shape != (w.shape[0],):
            raise SystemExit(f"export_features: error: {path}: layers.{k} has weight {w.shape}, bias {b.shape}")
        if layers and layers[-1][0].shape[0] != w.shape[1]:
            raise SystemExit(
                f"export_features: error: {path}: layers.{k}.weight reads {w.shape[1]} inputs, "
                f"but {names[-1]} has {layers[-1][0].shape[0]} outputs"
            )
        names.append(f"layers.{k}")
        layers.append((w, b))
    return names, layers


def load(path):
    """Parameters of a checkpoint, or a one-line error."""
    try:
        return load_params(path)
    except (ValueError, OSError) as e:
        raise SystemExit(f"export_features: error: {e}")


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
    parser.add_argument("--out", help="features .npz for llfc_report")
    parser.add_argument("--perm-features-a", help="features .npz of A for align --method activation")
    parser.add_argument("--perm-features-b", help="features .npz of B for align --method activation")
    parser.add_argument("--dtype", choices=["float32", "float64"], help="dtype of the computation")
    args = parser.parse_args(argv)
    if not (args.out or args.perm_features_a or args.perm_features_b):
        parser.error("nothing to write: give --out and/or --perm-features-a/--perm-features-b")

    (names, la), (names_b, lb) = mlp_layers(load(args.a), args.a), mlp_layers(load(args.b), args.b)
    if names != names_b or [w.shape for w, _ in la] != [w.shape for w, _ in lb]:
        raise SystemExit("export_features: error: A and B have different layers or layer shapes")
    dtype = np.dtype(args.dtype or la[0][0].dtype)
    la = [(w.astype(dtype), b.astype(dtype)) for w, b in la]
    lb = [(w.astype(dtype), b.astype(dtype)) for w, b in lb]
    try:
        x = np.load(args.x).astype(dtype)
    except (ValueError, OSError) as e:
        raise SystemExit(f"export_features: error: {args.x}: {e}")
    if x.ndim != 2 or x.shape[1] != la[0][0].shape[1]:
        raise SystemExit(f"export_features: error: X has shape {x.shape}, the MLP reads {la[0][0].shape[1]} inputs")
    labels = [s.strip() for s in args.alphas.split(",") if s.strip()]
    for s in labels:
        float(s)

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
    if args.out:
        save_npz(args.out, arrays)
        print(f"wrote {args.out}: {len(names)} layers, alpha = {', '.join(labels)}, {x.shape[0]} samples")
    for path, post in [(args.perm_features_a, post_a), (args.perm_features_b, post_b)]:
        if path:
            save_npz(path, {f"P_{i}": h for i, h in enumerate(post[:-1])})
            print(f"wrote {path}: P_0 .. P_{len(post) - 2}")


if __name__ == "__main__":
    main()
