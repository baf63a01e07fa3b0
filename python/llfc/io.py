"""Read and write checkpoints (``.npz`` / ``.safetensors``, chosen by extension), dtypes kept.

Pure Rust readers and writers (the crate's ``llfc::io``): no pickle is ever loaded. float16,
float32 and float64 tensors come back in their stored dtype; bfloat16 (which NumPy lacks) comes
back as float32 (exact) and is written back as float32; integer and boolean tensors (e.g.
``num_batches_tracked``) are kept as they are. Malformed or missing files raise ``OSError``.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Mapping, Union

import numpy as np

from . import _llfc

__all__ = ["load", "save"]

PathLike = Union[str, "os.PathLike[str]"]


def load(path: PathLike) -> Dict[str, np.ndarray]:
    """Load every tensor of a checkpoint: float tensors first (in file order), then the others."""
    floats, others = _llfc.load(os.fspath(path))
    out: Dict[str, np.ndarray] = {}
    for name, arr, dtype in floats:
        out[name] = arr.astype(np.float32 if dtype == "bfloat16" else np.dtype(dtype), copy=False)
    for name, dtype, shape, data in others:
        out[name] = np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape).copy()
    return out


def save(path: PathLike, params: Mapping[str, Any]) -> None:
    """Write a checkpoint atomically; each tensor keeps its dtype (float16/32/64, integers, bool)."""
    floats, others = [], []
    for name, value in params.items():
        a = np.asarray(value)
        if a.dtype.kind == "f" and a.dtype.itemsize in (2, 4, 8):
            floats.append((name, a.astype(np.float64), a.dtype.name))
        elif a.dtype.kind in "biu":
            le = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
            others.append((name, a.dtype.name if a.dtype.kind != "b" else "bool", list(a.shape), le.tobytes()))
        else:
            raise TypeError(f"tensor {name!r}: dtype {a.dtype} cannot be stored (float, integer or bool only)")
    _llfc.save(os.fspath(path), floats, others)
