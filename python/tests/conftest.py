"""Shared model builders for the llfc pytest suite (PyTorch layouts and names)."""

import numpy as np


def mlp_shapes(widths):
    out = []
    for i in range(len(widths) - 1):
        out.append((f"layers.{i}.weight", (widths[i + 1], widths[i])))
        out.append((f"layers.{i}.bias", (widths[i + 1],)))
    return out


def bn(prefix, c):
    return [(f"{prefix}.{f}", (c,)) for f in ("weight", "bias", "running_mean", "running_var")]


def vgg_shapes(widths, num_linear):
    num_conv = len(widths) - num_linear
    out, cin = [], 3
    for i, c in enumerate(widths[:num_conv]):
        out.append((f"conv{i}.weight", (c, cin, 3, 3)))
        out += bn(f"bn{i}", c)
        cin = c
    for j, c in enumerate(widths[num_conv:]):
        out.append((f"fc{j}.weight", (c, cin)))
        out.append((f"fc{j}.bias", (c,)))
        cin = c
    return out


def resnet20_shapes(w):
    out = [("conv1.weight", (w, 3, 3, 3))] + bn("bn1", w)
    cin = w
    for s in (1, 2, 3):
        c = w << (s - 1)
        for b in range(3):
            pre = f"layer{s}.{b}"
            out.append((f"{pre}.conv1.weight", (c, cin, 3, 3)))
            out += bn(f"{pre}.bn1", c)
            out.append((f"{pre}.conv2.weight", (c, c, 3, 3)))
            out += bn(f"{pre}.bn2", c)
            if cin != c:
                out.append((f"{pre}.shortcut.0.weight", (c, cin, 1, 1)))
                out += bn(f"{pre}.shortcut.1", c)
            cin = c
    out.append(("linear.weight", (10, 4 * w)))
    out.append(("linear.bias", (10,)))
    return out


def random_params(shapes, seed, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(dtype) for k, s in shapes}


def mlp_forward(params, x):
    """The reference ReLU MLP (``layers.{i}``), written independently of llfc."""
    n = len([k for k in params if k.endswith(".weight")])
    h = x
    for i in range(n):
        h = h @ params[f"layers.{i}.weight"].T + params[f"layers.{i}.bias"]
        if i + 1 < n:
            h = np.maximum(h, 0.0)
    return h


def planted(spec, a, seed):
    """B = A with random permutations undone: matching B onto A must return them."""
    rng = np.random.default_rng(seed)
    perms = {k: rng.permutation(n) for k, n in spec.perm_sizes(a).items()}
    inverse = {k: np.argsort(p) for k, p in perms.items()}
    return __import__("llfc").apply_permutations(spec, inverse, a), perms
