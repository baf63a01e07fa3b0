#!/usr/bin/env python3
"""Export a model's parameters to `.safetensors` in the names `align` and `llfc_report` read.

    # PyTorch (optional): a state_dict saved with torch.save, or a whole pickled module
    python3 export_state_dict.py model.pt model.safetensors
    # NumPy only: an .npz of named arrays (e.g. numpy.savez("a.npz", **params))
    python3 export_state_dict.py params.npz model.safetensors
    # rename the linear layers of any MLP to layers.{i}.weight / layers.{i}.bias (spec `mlp`)
    python3 export_state_dict.py model.pt model.safetensors --mlp-names

Tensors keep their names, order, shapes (PyTorch layout: linear [out, in], conv
[out, in, kh, kw]) and dtypes (float16/32/64; integer buffers such as BatchNorm's
`num_batches_tracked` are kept, and `align` copies them through). bfloat16 tensors, which NumPy
cannot hold, are widened to float32 (exactly). With `--mlp-names` every 2-D `*.weight` in order
becomes `layers.{i}.weight` and its `*.bias` `layers.{i}.bias` (e.g. an `nn.Sequential`'s
`0.weight`, `2.weight`, ... or `fc1.weight`, `fc2.weight`, ...); a model with any other tensor
(a conv, a norm layer) is refused rather than cut down. The renaming is written beside the
output as `OUTPUT.names.json` ({new name: original name}); `--restore-names MAP` applies such
a map back, e.g. to the aligned B that `align` wrote, so that it loads into the original module:

    python3 export_state_dict.py b_wm.safetensors b_wm_torch.safetensors \
        --restore-names b.safetensors.names.json

Inside Python, call `state_dict_to_numpy(model.state_dict())` and
`llfc_files.save_safetensors(path, arrays)` directly.
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from llfc_files import (  # noqa: E402
    load_name_map,
    load_params,
    name_map_path,
    restore_names,
    save_name_map,
    save_safetensors,
)

try:  # PyTorch is optional: only needed to read .pt/.pth files.
    import torch
except ImportError:  # pragma: no cover - depends on the environment
    torch = None


def state_dict_to_numpy(state_dict):
    """An ordered dict name -> NumPy array from a PyTorch `state_dict` (or any mapping of
    tensors or arrays). bfloat16 is widened to float32."""
    out = {}
    for name, t in state_dict.items():
        if torch is not None and isinstance(t, torch.Tensor):
            t = t.detach().cpu()
            if t.dtype == torch.bfloat16:
                t = t.float()
            t = t.numpy()
        out[name] = np.asarray(t)
    return out


def mlp_names(arrays):
    """Rename the linear layers of an MLP to `layers.{i}.weight` / `layers.{i}.bias`.

    Returns `(renamed, mapping)` with `mapping = {new name: original name}`. Raises
    `ValueError` if the model holds anything but linear weights and biases (then it is not an
    MLP, and renaming would silently drop tensors)."""
    out, mapping = {}, {}
    weights = [k for k, v in arrays.items() if k.endswith("weight") and v.ndim == 2]
    if not weights:
        raise ValueError("--mlp-names: no 2-D `*.weight` tensor")
    for i, w in enumerate(weights):
        out[f"layers.{i}.weight"] = arrays[w]
        mapping[f"layers.{i}.weight"] = w
        bias = w[: -len("weight")] + "bias"
        if bias in arrays:
            out[f"layers.{i}.bias"] = arrays[bias]
            mapping[f"layers.{i}.bias"] = bias
    others = [f"{k} {list(v.shape)}" for k, v in arrays.items() if k not in mapping.values()]
    if others:
        raise ValueError(
            "--mlp-names: not an MLP of linear layers; these tensors would be dropped: "
            + ", ".join(others)
            + " (export without --mlp-names and align with a JSON spec, or the builtin vgg/resnet20)"
        )
    return out, mapping


def load_any(path):
    """Parameters from `.npz`/`.safetensors` (NumPy) or `.pt`/`.pth` (PyTorch)."""
    if path.endswith((".npz", ".safetensors")):
        return load_params(path)
    if torch is None:
        raise SystemExit(
            f"export_state_dict: error: reading {path} needs PyTorch (`pip install torch`), "
            "or save the state_dict as .npz: numpy.savez('a.npz', **{k: v.numpy() for k, v in sd.items()})"
        )
    obj = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    elif isinstance(obj, dict) and "state_dict" in obj:
        obj = obj["state_dict"]
    return state_dict_to_numpy(obj)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input", help=".pt/.pth (PyTorch), .npz or .safetensors")
    parser.add_argument("output", help="the .safetensors file to write")
    parser.add_argument("--mlp-names", action="store_true", help="rename linear layers to layers.{i}.*")
    parser.add_argument("--restore-names", metavar="MAP", help="rename back with a .names.json map")
    args = parser.parse_args(argv)
    if args.mlp_names and args.restore_names:
        parser.error("--mlp-names and --restore-names go one way each")
    try:
        arrays = state_dict_to_numpy(load_any(args.input))
        mapping = None
        if args.mlp_names:
            arrays, mapping = mlp_names(arrays)
        if args.restore_names:
            arrays = restore_names(arrays, load_name_map(args.restore_names))
    except (ValueError, OSError) as e:
        raise SystemExit(f"export_state_dict: error: {e}")
    save_safetensors(args.output, arrays)
    for name, a in arrays.items():
        print(f"{name}: {a.dtype} {list(a.shape)}")
    print(f"wrote {args.output} ({len(arrays)} tensors)")
    if mapping is not None:
        save_name_map(name_map_path(args.output), mapping)
        print(f"wrote {name_map_path(args.output)} (new name -> original name; --restore-names applies it back)")


if __name__ == "__main__":
    main()
