"""``llfc.io``: checkpoints round-trip with their dtypes; file problems raise OSError."""

import numpy as np
import pytest

import llfc


@pytest.mark.parametrize("ext", ["npz", "safetensors"])
def test_round_trip_keeps_dtypes_and_values(tmp_path, ext):
    rng = np.random.default_rng(0)
    params = {
        "w64": rng.standard_normal((3, 4)),
        "w32": rng.standard_normal((5,)).astype(np.float32),
        "w16": rng.standard_normal((2, 2)).astype(np.float16),
        "steps": np.array(12, dtype=np.int64),
        "mask": np.array([True, False, True]),
        "idx": np.arange(6, dtype=np.int32).reshape(2, 3),
    }
    path = tmp_path / f"model.{ext}"
    llfc.io.save(path, params)
    back = llfc.io.load(path)
    assert set(back) == set(params)
    for k, v in params.items():
        want = v.dtype
        if ext == "npz" and v.dtype == np.float16:
            want = np.dtype(np.float32)  # npz stores float16 as float32 (exactly), see the docs
        assert back[k].dtype == want, k
        assert back[k].shape == v.shape
        np.testing.assert_array_equal(back[k], v.astype(want))


def test_reads_numpy_savez(tmp_path):
    path = tmp_path / "np.npz"
    a = np.random.default_rng(1).standard_normal((4, 3))
    np.savez(path, **{"layers.0.weight": a, "n": np.int64(3)})
    back = llfc.io.load(path)
    np.testing.assert_array_equal(back["layers.0.weight"], a)
    assert back["n"] == 3


def test_file_errors_are_oserrors(tmp_path):
    with pytest.raises(OSError):
        llfc.io.load(tmp_path / "missing.npz")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json")
    with pytest.raises(OSError, match="malformed"):
        llfc.io.load(bad)
    with pytest.raises(ValueError, match="invalid argument"):
        llfc.io.save(tmp_path / "x.pt", {"a": np.ones(2)})  # unknown format: bad input
    with pytest.raises(TypeError):
        llfc.io.save(tmp_path / "x.npz", {"a": np.array(["s"])})
