"""Small NumPy-only readers and writers for the files the `llfc` command-line tools read.

Used by `export_state_dict.py` and `export_features.py`; import it from your own scripts too:

    import sys; sys.path.insert(0, "examples/python")
    from llfc_files import save_safetensors, load_params, save_npz, llfc_feature_arrays

Nothing here needs PyTorch or the `safetensors` package: the safetensors format is an 8-byte
little-endian header length, a JSON header (name -> dtype, shape, data offsets) and the raw
little-endian data. Every writer is atomic (a temporary file in the target directory, renamed
into place), so a failed export never leaves a half-written file.
"""

import json
import os
import struct
import tempfile

import numpy as np

# safetensors dtype codes of the NumPy dtypes that can be stored (bfloat16 has no NumPy type).
_CODES = {
    "float16": "F16",
    "float32": "F32",
    "float64": "F64",
    "int8": "I8",
    "int16": "I16",
    "int32": "I32",
    "int64": "I64",
    "uint8": "U8",
    "uint16": "U16",
    "uint32": "U32",
    "uint64": "U64",
    "bool": "BOOL",
}
_DTYPES = {code: np.dtype(name) for name, code in _CODES.items()}

# The metadata key under which `llfc` records the tensor order (see `llfc::io`).
ORDER_KEY = "llfc.order"


def _umask():
    """The process umask (read by setting it and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _atomic_write(path, write):
    """Call `write(file)` on a temporary file next to `path`, then rename it to `path`.

    The file gets the permissions of a normally created file (0666 minus the umask), not the
    0600 of the temporary file."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_safetensors(path, arrays):
    """Write an ordered dict name -> NumPy array as `.safetensors` (order kept, also recorded
    under the `llfc.order` metadata key, with `"format": "pt"`)."""
    header, blobs, offset = {}, [], 0
    for name, array in arrays.items():
        a = np.asarray(array)
        code = _CODES.get(a.dtype.name)
        if code is None:
            raise ValueError(f"tensor {name!r}: dtype {a.dtype} cannot be stored in safetensors")
        data = np.ascontiguousarray(a.astype(a.dtype.newbyteorder("<"), copy=False)).tobytes()
        header[name] = {"dtype": code, "shape": list(a.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header["__metadata__"] = {"format": "pt", ORDER_KEY: json.dumps(list(arrays))}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # data aligned to 8 bytes, as the reference writer does

    def write(f):
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)

    _atomic_write(path, write)


def load_safetensors(path):
    """Read a `.safetensors` file into a dict name -> NumPy array, in the model's order: the
    order recorded under the `llfc.order` metadata key (what `save_safetensors` and `align`
    write) when it lists exactly the file's tensors, else the order of the data."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    metadata = header.pop("__metadata__", None) or {}
    data = raw[8 + n :]
    names = sorted(header, key=lambda k: header[k]["data_offsets"][0])
    try:
        recorded = json.loads(metadata.get(ORDER_KEY, "null"))
    except ValueError:
        recorded = None
    if isinstance(recorded, list) and sorted(recorded) == sorted(header):
        names = recorded
    out = {}
    for name, info in ((k, header[k]) for k in names):
        if info["dtype"] not in _DTYPES:
            raise ValueError(f"{path}: tensor {name!r} has dtype {info['dtype']}, which NumPy cannot hold")
        start, end = info["data_offsets"]
        dtype = _DTYPES[info["dtype"]].newbyteorder("<")
        out[name] = np.frombuffer(data[start:end], dtype=dtype).reshape(info["shape"]).astype(dtype.newbyteorder("="))
    return out


def load_params(path):
    """Read a checkpoint, `.npz` or `.safetensors`, into a dict name -> NumPy array."""
    if path.endswith(".safetensors"):
        return load_safetensors(path)
    if path.endswith(".npz"):
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    if path.endswith((".pt", ".pth", ".bin")):
        raise ValueError(
            f"{path}: a PyTorch file; convert it first with "
            f"`python3 export_state_dict.py {path} model.safetensors` (needs torch)"
        )
    raise ValueError(f"{path}: expected a .npz or .safetensors file")


def name_map_path(path):
    """Where the name map of a renamed export `path` is written: `path + ".names.json"`."""
    return path + ".names.json"


def save_name_map(path, mapping):
    """Write `{new name: original name}` as JSON (atomically) beside an exported file."""
    text = json.dumps(mapping, indent=1).encode() + b"\n"
    _atomic_write(path, lambda f: f.write(text))


def load_name_map(path):
    """Read a `{new name: original name}` JSON map written by `save_name_map`."""
    with open(path, encoding="utf-8") as f:
        mapping = json.load(f)
    if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
        raise ValueError(f"{path}: expected a JSON object of names")
    return mapping


def restore_names(arrays, mapping):
    """Rename `arrays` back to the original names of `mapping` (`{new: original}`), keeping
    the order. Every tensor must be in the map, so that nothing is silently left renamed."""
    missing = [k for k in arrays if k not in mapping]
    if missing:
        raise ValueError(f"tensors not in the name map: {', '.join(missing)}")
    return {mapping[k]: v for k, v in arrays.items()}


def save_npz(path, arrays):
    """Write an ordered dict name -> array with `numpy.savez` (uncompressed, order kept)."""
    _atomic_write(path, lambda f: np.savez(f, **arrays))


def llfc_feature_arrays(feats_a, feats_b, feats_alpha, pre=None, inputs=None):
    """The arrays of an `llfc_report` features file, as an ordered dict.

    - `feats_a`, `feats_b`: dict layer -> `[samples, ...]` features of A and B (layer order is
      the report order);
    - `feats_alpha`: dict alpha label (a decimal string such as "0.5") -> dict layer -> features
      of theta(alpha) = alpha theta_A + (1 - alpha) theta_B;
    - `pre`: optional `(pre_a, pre_b, pre_alpha)` of the same form, pre-activations of the layers
      followed by a ReLU (weak additivity; `pre_alpha` may be `{}`);
    - `inputs`: optional `(in_a, in_b)`, dict layer -> `[samples, in]` inputs of each linear layer
      (commutativity).
    """
    out = {}
    for layer in feats_a:
        out[f"A/{layer}"] = feats_a[layer]
        out[f"B/{layer}"] = feats_b[layer]
    for label, feats in feats_alpha.items():
        float(label)  # must be a decimal number
        for layer, f in feats.items():
            out[f"alpha={label}/{layer}"] = f
    if pre is not None:
        pre_a, pre_b, pre_alpha = pre
        for layer in pre_a:
            out[f"pre/A/{layer}"] = pre_a[layer]
            out[f"pre/B/{layer}"] = pre_b[layer]
        for label, feats in pre_alpha.items():
            for layer, f in feats.items():
                out[f"pre/alpha={label}/{layer}"] = f
    if inputs is not None:
        in_a, in_b = inputs
        for layer in in_a:
            out[f"in/A/{layer}"] = in_a[layer]
            out[f"in/B/{layer}"] = in_b[layer]
    return out
