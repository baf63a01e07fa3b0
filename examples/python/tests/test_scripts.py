"""Tests of the NumPy export scripts (NumPy only; PyTorch is not needed):

    python3 -m pytest examples/python/tests
"""

import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = os.path.dirname(HERE)
sys.path.insert(0, SCRIPTS)

import llfc_files  # noqa: E402
from export_state_dict import mlp_names  # noqa: E402


def run(script, *args):
    """Run a script; returns (exit code, stdout, stderr)."""
    p = subprocess.run([sys.executable, os.path.join(SCRIPTS, script), *map(str, args)],
                       capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


def sequential_mlp(rng, widths=(4, 6, 5, 3)):
    """An nn.Sequential(Linear, ReLU, Linear, ReLU, Linear) state_dict: layers.0/2/4."""
    out = {}
    for i in range(len(widths) - 1):
        out[f"layers.{2 * i}.weight"] = rng.standard_normal((widths[i + 1], widths[i])).astype(np.float32)
        out[f"layers.{2 * i}.bias"] = rng.standard_normal(widths[i + 1]).astype(np.float32)
    return out


def test_files_get_normal_permissions(tmp_path):
    path = tmp_path / "a.safetensors"
    llfc_files.save_safetensors(str(path), {"w": np.ones((2, 2), np.float32)})
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~mask
    llfc_files.save_npz(str(tmp_path / "f.npz"), {"x": np.zeros(3)})
    assert stat.S_IMODE(os.stat(tmp_path / "f.npz").st_mode) == 0o666 & ~mask


def test_load_safetensors_keeps_the_recorded_order(tmp_path):
    # Names whose data order (= write order) differs from the sorted order; a header that
    # records the model's order under llfc.order must come back in that order.
    arrays = {"z.weight": np.ones((2, 3), np.float32), "a.bias": np.arange(2, dtype=np.float64),
              "m.count": np.array(7, np.int64)}
    path = str(tmp_path / "m.safetensors")
    llfc_files.save_safetensors(path, arrays)
    back = llfc_files.load_safetensors(path)
    assert list(back) == list(arrays)
    for k in arrays:
        assert back[k].dtype == arrays[k].dtype and np.array_equal(back[k], arrays[k])
    # Rewrite the header so that the data order differs from the recorded order.
    raw = open(path, "rb").read()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    header["__metadata__"][llfc_files.ORDER_KEY] = json.dumps(["m.count", "a.bias", "z.weight"])
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    open(path, "wb").write(len(text).to_bytes(8, "little") + text + raw[8 + n:])
    assert list(llfc_files.load_safetensors(path)) == ["m.count", "a.bias", "z.weight"]
    # A recorded order that does not list exactly the tensors is ignored (data order).
    header["__metadata__"][llfc_files.ORDER_KEY] = json.dumps(["a.bias"])
    text = json.dumps(header).encode()
    open(path, "wb").write(len(text).to_bytes(8, "little") + text + raw[8 + n:])
    assert list(llfc_files.load_safetensors(path)) == list(arrays)


def test_non_contiguous_arrays_are_written_in_logical_order(tmp_path):
    w = np.arange(12, dtype=np.float32).reshape(3, 4)
    p = np.array([2, 0, 3, 1])
    permuted = w[:, p]
    fortran = np.asfortranarray(w)
    path = str(tmp_path / "p.safetensors")
    llfc_files.save_safetensors(path, {"p": permuted, "f": fortran, "t": w.T})
    back = llfc_files.load_safetensors(path)
    assert np.array_equal(back["p"], permuted)
    assert np.array_equal(back["f"], w)
    assert np.array_equal(back["t"], w.T)


def test_mlp_names_round_trip_and_refuse_a_cnn(tmp_path):
    rng = np.random.default_rng(0)
    sd = sequential_mlp(rng)
    renamed, mapping = mlp_names(sd)
    assert list(renamed) == ["layers.0.weight", "layers.0.bias", "layers.1.weight",
                             "layers.1.bias", "layers.2.weight", "layers.2.bias"]
    back = llfc_files.restore_names(renamed, mapping)
    assert list(back) == list(sd) and all(np.array_equal(back[k], sd[k]) for k in sd)
    cnn = {"conv.weight": np.zeros((4, 3, 3, 3), np.float32), "conv.bias": np.zeros(4, np.float32),
           "bn.running_mean": np.zeros(4, np.float32), "fc.weight": np.zeros((2, 4), np.float32),
           "fc.bias": np.zeros(2, np.float32)}
    with pytest.raises(ValueError, match="conv.weight"):
        mlp_names(cnn)
    # Through the script: an error, no output.
    src = tmp_path / "cnn.npz"
    np.savez(src, **cnn)
    code, _, err = run("export_state_dict.py", src, tmp_path / "cnn.safetensors", "--mlp-names")
    assert code != 0 and "conv.weight" in err and "Traceback" not in err
    assert not (tmp_path / "cnn.safetensors").exists()


def test_the_way_back_restores_the_original_names(tmp_path):
    rng = np.random.default_rng(1)
    sd = sequential_mlp(rng)
    src = tmp_path / "b.npz"
    np.savez(src, **sd)
    out = tmp_path / "b.safetensors"
    code, stdout, err = run("export_state_dict.py", src, out, "--mlp-names")
    assert code == 0, err
    names = tmp_path / "b.safetensors.names.json"
    assert json.load(open(names))["layers.1.weight"] == "layers.2.weight"
    # As if `align` had written an aligned B with the mlp names: restore them.
    restored = tmp_path / "b_torch.safetensors"
    code, _, err = run("export_state_dict.py", out, restored, "--restore-names", names)
    assert code == 0, err
    back = llfc_files.load_safetensors(str(restored))
    assert list(back) == list(sd) and all(np.array_equal(back[k], sd[k]) for k in sd)
    # A tensor missing from the map is an error, not a silent partial rename.
    extra = tmp_path / "extra.npz"
    np.savez(extra, **{"layers.0.weight": sd["layers.0.weight"], "other": np.zeros(1)})
    code, _, err = run("export_state_dict.py", extra, tmp_path / "x.safetensors", "--restore-names", names)
    assert code != 0 and "other" in err and "Traceback" not in err


def test_pt_input_without_torch_is_a_clear_error(tmp_path):
    pt = tmp_path / "model.pt"
    pt.write_bytes(b"not really a checkpoint")
    try:
        import torch  # noqa: F401
        has_torch = True
    except ImportError:
        has_torch = False
    if not has_torch:
        code, _, err = run("export_state_dict.py", pt, tmp_path / "m.safetensors")
        assert code != 0 and "PyTorch" in err and "Traceback" not in err
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((2, 4)))
    code, _, err = run("export_features.py", "--a", pt, "--b", pt, "--x", x, "--out", tmp_path / "f.npz")
    assert code != 0 and "export_state_dict.py" in err and "Traceback" not in err


def test_export_features_on_sequential_indices(tmp_path):
    rng = np.random.default_rng(2)
    a, b = sequential_mlp(rng), sequential_mlp(rng)
    np.savez(tmp_path / "a.npz", **a)
    np.savez(tmp_path / "b.npz", **b)
    x = rng.standard_normal((20, 4))
    np.save(tmp_path / "x.npy", x)
    code, _, err = run("export_features.py", "--a", tmp_path / "a.npz", "--b", tmp_path / "b.npz",
                       "--x", tmp_path / "x.npy", "--alphas", "0.5", "--out", tmp_path / "f.npz",
                       "--perm-features-a", tmp_path / "pa.npz")
    assert code == 0, err
    with np.load(tmp_path / "f.npz") as f:
        keys = f.files
        # Three linear layers, named by their Sequential index; A's first hidden features
        # equal relu(X W_0ᵀ + b_0) computed here.
        assert [k for k in keys if k.startswith("A/")] == ["A/layers.0", "A/layers.2", "A/layers.4"]
        h0 = np.maximum(x @ a["layers.0.weight"].T.astype(np.float64) + a["layers.0.bias"], 0)
        assert np.allclose(f["A/layers.0"], h0, rtol=1e-5, atol=1e-5)
        assert "pre/A/layers.2" in keys and "pre/A/layers.4" not in keys
    with np.load(tmp_path / "pa.npz") as p:
        assert p.files == ["P_0", "P_1"] and p["P_0"].shape == (20, 6) and p["P_1"].shape == (20, 5)
    # --out is not required when only the permutation features are wanted.
    code, _, err = run("export_features.py", "--a", tmp_path / "a.npz", "--b", tmp_path / "b.npz",
                       "--x", tmp_path / "x.npy", "--perm-features-b", tmp_path / "pb.npz")
    assert code == 0, err
    assert (tmp_path / "pb.npz").exists() and not (tmp_path / "f2.npz").exists()
    # Nothing to write at all is a usage error.
    code, _, err = run("export_features.py", "--a", tmp_path / "a.npz", "--b", tmp_path / "b.npz",
                       "--x", tmp_path / "x.npy")
    assert code != 0 and "nothing to write" in err
    # A checkpoint that is not an MLP (a BatchNorm vector among the layers) is refused clearly.
    bad = dict(a, **{"layers.1.running_mean": np.zeros(6, np.float32)})
    np.savez(tmp_path / "bad.npz", **bad)
    code, _, err = run("export_features.py", "--a", tmp_path / "bad.npz", "--b", tmp_path / "bad.npz",
                       "--x", tmp_path / "x.npy", "--out", tmp_path / "f3.npz")
    assert code != 0 and "layers.1.running_mean" in err and "Traceback" not in err
    assert not (tmp_path / "f3.npz").exists()
