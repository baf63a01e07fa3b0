"""REPAIR, the BatchNorm reset and streaming unit statistics, checked by independent NumPy
forward passes: after REPAIR every repaired unit's mean and std equal the interpolated targets
(to 1e-10), after a reset every BatchNorm normalises exactly the statistics it sees."""

import numpy as np
import pytest

import llfc
import numpy_nets as nets
from conftest import mlp_shapes, random_params


def pre_activations(p, x):
    """The hidden pre-activations ``z_ℓ`` of the reference MLP (``layers.{ℓ}``), in NumPy."""
    n = len([k for k in p if k.endswith(".weight")])
    zs, h = [], x
    for i in range(n):
        z = h @ p[f"layers.{i}.weight"].T + p[f"layers.{i}.bias"]
        zs.append(z)
        h = np.maximum(z, 0.0)
    return zs[:-1]


def stats(z):
    """Per-unit mean and population std over samples (and positions for conv maps)."""
    if z.ndim == 4:
        z = z.transpose(0, 2, 3, 1).reshape(-1, z.shape[1])
    return z.mean(axis=0), z.std(axis=0)


def targets(za, zb, alpha):
    (ma, sa), (mb, sb) = stats(za), stats(zb)
    return alpha * ma + (1 - alpha) * mb, alpha * sa + (1 - alpha) * sb


# ------------------------------------------------------------------------------ UnitStats


def test_unit_stats_stream_merge_and_conv_maps():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((57, 4)) * [1, 10, 0.1, 3] + [5, -2, 0, 1e3]
    st = llfc.UnitStats(4)
    for rows in (slice(0, 5), slice(5, 6), slice(6, 40), slice(40, 57)):
        st.update(x[rows])
    other = llfc.UnitStats.from_features(x[:20].astype(np.float32))
    assert st.count == 57 and st.units == 4
    np.testing.assert_allclose(st.mean, x.mean(0), rtol=1e-13, atol=1e-12)
    np.testing.assert_allclose(st.variance, x.var(0), rtol=1e-11)
    np.testing.assert_allclose(st.std, x.std(0), rtol=1e-11)
    np.testing.assert_allclose(st.unbiased_variance(), x.var(0, ddof=1), rtol=1e-11)
    a, b = llfc.UnitStats.from_features(x[:30]), llfc.UnitStats.from_features(x[30:])
    a.merge(b)
    np.testing.assert_allclose(a.variance, x.var(0), rtol=1e-11)
    np.testing.assert_allclose(other.mean, x[:20].astype(np.float32).astype(np.float64).mean(0), rtol=1e-6)
    # Conv maps: channel statistics over samples and positions (BatchNorm2d's view).
    m = rng.standard_normal((3, 5, 4, 2))
    cs = llfc.UnitStats.from_features(m)
    mu, sd = stats(m)
    assert cs.count == 3 * 4 * 2
    np.testing.assert_allclose(cs.mean, mu, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(cs.std, sd, rtol=1e-12)
    mo = llfc.UnitStats.from_moments(10, np.array([1.0, 2.0]), np.array([4.0, 0.0]))
    np.testing.assert_array_equal(mo.std, [2.0, 0.0])
    assert "units=2" in repr(mo)


def test_unit_stats_bad_input():
    st = llfc.UnitStats(3)
    with pytest.raises(ValueError, match=r"expected \[samples, units\] or \[samples, channels, h, w\]"):
        st.update(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="shape mismatch"):
        st.update(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="non-finite"):
        st.update(np.array([[1.0, np.nan, 0.0]]))
    with pytest.raises(ValueError, match="shape mismatch"):
        st.merge(llfc.UnitStats(2))
    with pytest.raises(ValueError, match="at least 2 samples"):
        llfc.UnitStats.from_features(np.ones((1, 3))).unbiased_variance()
    with pytest.raises(ValueError, match="non-negative"):
        llfc.UnitStats.from_moments(3, np.zeros(2), np.array([1.0, -1.0]))
    assert st.count == 0  # nothing was added by the failed updates


# --------------------------------------------------------------------------------- REPAIR


@pytest.mark.parametrize("alpha", [0.5, 0.3])
def test_mlp_repair_gives_every_hidden_unit_its_target_statistics(alpha):
    shapes = mlp_shapes([6, 20, 16, 3])
    a, b = random_params(shapes, 1), random_params(shapes, 2)
    x = np.random.default_rng(3).standard_normal((200, 6))
    r = llfc.mlp_repair(a, b, alpha, x)
    assert list(r.params) == list(a) and r.zero_variance_units == []
    zr = pre_activations(r.params, x)
    for l, (za, zb, z) in enumerate(zip(pre_activations(a, x), pre_activations(b, x), zr)):
        mu, sd = targets(za, zb, alpha)
        m, s = stats(z)
        np.testing.assert_allclose(m, mu, rtol=0, atol=1e-10 * (1 + np.abs(mu).max()))
        np.testing.assert_allclose(s, sd, rtol=1e-10)
        np.testing.assert_allclose(r.layers[l].target_mean, mu, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(r.layers[l].target_std, sd, rtol=1e-12)
    # The logits are not repaired: only the hidden layers' weights changed.
    assert np.array_equal(r.params["layers.2.weight"], a["layers.2.weight"] * alpha + b["layers.2.weight"] * (1 - alpha))
    # Without REPAIR the interpolated network's units have other statistics (variance collapse).
    theta = {k: alpha * a[k] + (1 - alpha) * b[k] for k in a}
    assert np.abs(stats(pre_activations(theta, x)[1])[1] - targets(*[pre_activations(m, x)[1] for m in (a, b)], alpha)[1]).max() > 1e-2
    # α = 1 is A exactly.
    one = llfc.mlp_repair(a, b, 1.0, x).params
    assert all(np.array_equal(one[k], a[k]) for k in a)


def test_mlp_repair_float32_keeps_dtypes():
    shapes = mlp_shapes([5, 12, 3])
    a, b = random_params(shapes, 4, np.float32), random_params(shapes, 5, np.float32)
    x = np.random.default_rng(6).standard_normal((100, 5)).astype(np.float32)
    r = llfc.mlp_repair(a, b, 0.5, x)
    assert all(v.dtype == np.float32 for v in r.params.values())
    z = pre_activations({k: v.astype(np.float64) for k, v in r.params.items()}, x.astype(np.float64))[0]
    za, zb = (pre_activations({k: v.astype(np.float64) for k, v in m.items()}, x.astype(np.float64))[0] for m in (a, b))
    mu, sd = targets(za, zb, 0.5)
    # float32 weights and inputs: rounding of ~1e-7 relative per product.
    np.testing.assert_allclose(stats(z)[1], sd, rtol=1e-4)
    np.testing.assert_allclose(stats(z)[0], mu, atol=1e-4 * (1 + np.abs(mu).max()))


def mlp_measure(x, calls):
    def measure(p, features):
        calls.append(list(features))
        zs = pre_activations(p, x)
        return [zs[int(f.split(".")[1])] for f in features]  # arrays: converted to UnitStats

    return measure


def test_generic_repair_with_a_python_measure_equals_mlp_repair():
    shapes = mlp_shapes([6, 20, 16, 3])
    a, b = random_params(shapes, 7), random_params(shapes, 8)
    a["step"] = np.array(3, dtype=np.int64)  # integer tensors reach the measure and the result
    b["step"] = np.array(3, dtype=np.int64)
    x = np.random.default_rng(9).standard_normal((150, 6))
    calls = []
    r = llfc.repair(a, b, 0.4, ["layers.0", ("layers.1", "layers.1.weight", "layers.1.bias")], mlp_measure(x, calls))
    assert calls == [["layers.0", "layers.1"], ["layers.0", "layers.1"], ["layers.0"], ["layers.1"]]
    assert list(r.params) == list(a) and r.params["step"] == 3 and r.params["step"].dtype == np.int64
    ref = llfc.mlp_repair({k: v for k, v in a.items() if k != "step"}, {k: v for k, v in b.items() if k != "step"}, 0.4, x)
    for k in ref.params:
        np.testing.assert_allclose(r.params[k], ref.params[k], rtol=1e-12, atol=1e-14)
    assert [l.feature for l in r.layers] == ["layers.0", "layers.1"]
    # The measured statistics of layer 1 are those of θ(α) with layer 0 already repaired.
    half = llfc.fold_correction({k: 0.4 * a[k] + 0.6 * b[k] for k in a}, "layers.0.weight", "layers.0.bias",
                                r.layers[0].scale, r.layers[0].shift)
    np.testing.assert_allclose(r.layers[1].measured.mean, stats(pre_activations(half, x)[1])[0], rtol=1e-12, atol=1e-13)
    # repair_towards with the same targets gives the same network.
    theta = {k: 0.4 * a[k] + 0.6 * b[k] for k in a}
    tw = llfc.repair_towards(theta, ["layers.0", "layers.1"], [(l.target_mean, l.target_std) for l in r.layers], mlp_measure(x, []))
    for k in ref.params:
        np.testing.assert_allclose(tw.params[k], r.params[k], rtol=1e-13, atol=1e-15)


def conv_bn_params(seed):
    b = nets.Builder(seed)
    b.conv("conv0", 5, 3, 3)
    b.bn("bn0", 5)
    b.conv("conv1", 6, 5, 3)
    b.bn("bn1", 6)
    b.linear("fc", 4, 6)
    return b.p


def conv_bn_forward(p, x, upto=None):
    """conv → BN → ReLU twice, global pooling, linear. Returns the BN inputs and outputs."""
    feats = {}
    h = x
    for i in (0, 1):
        z = nets.conv2d(h, p[f"conv{i}.weight"], padding=1, stride=1 + i)
        feats[f"bn{i}.in"] = z
        y = nets.bn(z, p, f"bn{i}")
        feats[f"bn{i}"] = y
        h = nets.relu(y)
    feats["out"] = nets.linear(h.mean(axis=(2, 3)), p, "fc")
    return feats


def test_repair_of_conv_bn_blocks_folds_into_the_batchnorm():
    a, b = conv_bn_params(10), conv_bn_params(11)
    x = np.random.default_rng(12).standard_normal((6, 3, 8, 8))

    def measure(p, features):
        f = conv_bn_forward(p, x)
        return [llfc.UnitStats.from_features(f[k]) for k in features]

    r = llfc.repair(a, b, 0.5, ["bn0", "bn1"], measure)
    fa, fb, fr = conv_bn_forward(a, x), conv_bn_forward(b, x), conv_bn_forward(r.params, x)
    for name in ("bn0", "bn1"):
        mu, sd = targets(fa[name], fb[name], 0.5)
        m, s = stats(fr[name])
        np.testing.assert_allclose(m, mu, rtol=0, atol=1e-10 * (1 + np.abs(mu).max()))
        np.testing.assert_allclose(s, sd, rtol=1e-10)
    # Only the BN affine parameters changed; the conv weights are θ(α)'s.
    for k in a:
        if not k.startswith(("bn0.weight", "bn0.bias", "bn1.weight", "bn1.bias")) and a[k].dtype.kind == "f":
            np.testing.assert_array_equal(r.params[k], 0.5 * a[k] + 0.5 * b[k])
    assert r.params["bn0.num_batches_tracked"] == 7
    # A conv without bias cannot absorb the shift: a clear error naming the bias.
    with pytest.raises(ValueError, match="conv0.bias"):
        llfc.repair(a, b, 0.5, ["conv0"], measure)


def test_fold_correction_is_an_affine_map_of_the_layer_output():
    p = conv_bn_params(13)
    p["conv0.bias"] = np.random.default_rng(14).standard_normal(5)
    x = np.random.default_rng(15).standard_normal((2, 3, 6, 6))
    rng = np.random.default_rng(16)
    scale, shift = rng.random(5) + 0.5, rng.standard_normal(5)
    q = llfc.fold_correction(p, "conv0.weight", "conv0.bias", scale, shift)
    out = lambda p: nets.conv2d(x, p["conv0.weight"], padding=1) + p["conv0.bias"][:, None, None]  # noqa: E731
    np.testing.assert_allclose(out(q), scale[:, None, None] * out(p) + shift[:, None, None], rtol=1e-12, atol=1e-12)
    assert list(q) == list(p) and q["bn0.num_batches_tracked"].dtype == np.int64
    with pytest.raises(ValueError, match="shape mismatch"):
        llfc.fold_correction(p, "conv0.weight", "conv0.bias", np.ones(4), np.zeros(4))
    with pytest.raises(ValueError, match="one entry per unit"):
        llfc.fold_correction(p, "conv0.weight", "conv0.bias", np.ones(5), np.zeros(4))


@pytest.mark.parametrize("variance", ["unbiased", "population"])
def test_reset_batchnorm_makes_every_bn_see_its_running_statistics(variance):
    a, b = conv_bn_params(17), conv_bn_params(18)
    theta = {k: (0.5 * a[k] + 0.5 * b[k]) if a[k].dtype.kind == "f" else a[k] for k in a}
    x = np.random.default_rng(19).standard_normal((5, 3, 8, 8))
    seen = []

    def measure(p, features):
        seen.append((features, p["bn0.running_mean"].copy()))
        f = conv_bn_forward(p, x)
        return [f[k + ".in"] for k in features]

    out = llfc.reset_batchnorm(theta, ["bn0", ("bn1", "bn1.running_mean", "bn1.running_var")], measure, variance=variance)
    f = conv_bn_forward(out, x)
    for name in ("bn0", "bn1"):
        z = f[f"{name}.in"].transpose(0, 2, 3, 1).reshape(-1, f[f"{name}.in"].shape[1])
        np.testing.assert_allclose(out[f"{name}.running_mean"], z.mean(0), rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(out[f"{name}.running_var"], z.var(0, ddof=1 if variance == "unbiased" else 0), rtol=1e-12)
    # bn1 was measured with bn0 already reset (layer by layer, eval mode).
    assert [s[0] for s in seen] == [["bn0"], ["bn1"]]
    np.testing.assert_array_equal(seen[1][1], out["bn0.running_mean"])
    assert not np.allclose(seen[0][1], out["bn0.running_mean"])
    # Everything else is θ's, and θ is untouched.
    assert np.array_equal(out["conv1.weight"], theta["conv1.weight"]) and out["bn1.num_batches_tracked"] == 7
    assert not np.array_equal(theta["bn0.running_mean"], out["bn0.running_mean"])
    with pytest.raises(ValueError, match="invalid variance"):
        llfc.reset_batchnorm(theta, ["bn0"], measure, variance="biased")


def test_repair_bad_input_and_measure_errors():
    shapes = mlp_shapes([4, 8, 2])
    a, b = random_params(shapes, 20), random_params(shapes, 21)
    x = np.random.default_rng(22).standard_normal((30, 4))
    measure = mlp_measure(x, [])
    with pytest.raises(ValueError, match="alpha"):
        llfc.repair(a, b, 1.5, ["layers.0"], measure)
    with pytest.raises(ValueError, match="alpha"):
        llfc.mlp_repair(a, b, float("nan"), x)
    with pytest.raises(ValueError, match="layers.7.weight"):
        llfc.repair(a, b, 0.5, ["layers.7"], measure)
    with pytest.raises(ValueError, match="listed twice"):
        llfc.repair(a, b, 0.5, ["layers.0", "layers.0"], measure)
    with pytest.raises(TypeError, match="string"):
        llfc.repair(a, b, 0.5, "layers.0", measure)
    with pytest.raises(TypeError, match="callable"):
        llfc.repair(a, b, 0.5, ["layers.0"], None)

    def boom(p, features):
        raise RuntimeError("forward failed")

    with pytest.raises(RuntimeError, match="forward failed"):
        llfc.repair(a, b, 0.5, ["layers.0"], boom)
    with pytest.raises(ValueError, match="shape mismatch|statistics returned"):
        llfc.repair(a, b, 0.5, ["layers.0"], lambda p, f: [])
    with pytest.raises(ValueError, match="shape mismatch"):
        llfc.repair(a, b, 0.5, ["layers.0"], lambda p, f: [np.ones((3, 5))])
    with pytest.raises(ValueError, match="shape mismatch|input"):
        llfc.mlp_repair(a, b, 0.5, np.zeros((3, 5)))
    with pytest.raises(ValueError, match="no sample|empty"):
        llfc.mlp_repair(a, b, 0.5, np.zeros((0, 4)))
    c = dict(b)
    c["layers.0.weight"] = np.zeros((9, 4))
    with pytest.raises(ValueError, match="layers.0.weight"):
        llfc.mlp_repair(a, c, 0.5, x)
    # Nothing the caller passed was modified.
    assert np.array_equal(a["layers.0.weight"], random_params(shapes, 20)["layers.0.weight"])
