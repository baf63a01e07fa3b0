"""LLFC error attribution and the conv metrics against a NumPy implementation of the identity
``ΔZ^ℓ = ΔH^{ℓ−1} W_αᵀ − α(1−α)(H_A − H_B)(W_A − W_B)ᵀ``, ``ΔH^ℓ = S^ℓ ⊙ ΔZ^ℓ + E^ℓ`` written
here: the contributions of all sources add up to the deviation computed directly, and llfc's
norms, inner products and shares equal NumPy's."""

import numpy as np
import pytest

import llfc
import numpy_nets as nets
from conftest import mlp_shapes, random_params


def relu(z):
    return np.maximum(z, 0.0)


def secant(z_lin, z):
    """Secant slope of ReLU between ``z_lin`` and ``z`` (its derivative where they are equal)."""
    same = z == z_lin
    d = np.where(same, 1.0, z - z_lin)
    return np.where(same, (z_lin > 0).astype(float), (relu(z) - relu(z_lin)) / d)


def numpy_attribution(wa, ba, wb, bb, acts, x, alpha):
    """Per layer: (ΔZ, Z_lin, ΔH, H_lin, {source: pre contribution}, {source: post contribution})."""
    beta = 1 - alpha
    wl = [alpha * p + beta * q for p, q in zip(wa, wb)]
    bl = [None if p is None else alpha * p + beta * q for p, q in zip(ba, bb)]

    def fwd(ws, bs):
        zs, hs, h = [], [], x
        for w, b, act in zip(ws, bs, acts):
            z = h @ w.T + (0 if b is None else b)
            h = relu(z) if act == "relu" else z
            zs.append(z)
            hs.append(h)
        return zs, hs

    (za, ha), (zb, hb), (zt, ht) = fwd(wa, ba), fwd(wb, bb), fwd(wl, bl)
    out, carried, prev_a, prev_b = [], {}, x, x
    for l, act in enumerate(acts):
        pre = {s: c @ wl[l].T for s, c in carried.items()}
        pre[f"C{l}"] = -alpha * beta * (prev_a - prev_b) @ (wa[l] - wb[l]).T
        z_lin = alpha * za[l] + beta * zb[l]
        if act == "relu":
            s = secant(z_lin, zt[l])
            post = {k: s * c for k, c in pre.items()}
            post[f"E{l}"] = relu(z_lin) - alpha * relu(za[l]) - beta * relu(zb[l])
        else:
            post = dict(pre)
        h_lin = alpha * ha[l] + beta * hb[l]
        out.append((zt[l] - z_lin, z_lin, ht[l] - h_lin, h_lin, pre, post))
        carried, prev_a, prev_b = post, ha[l], hb[l]
    return out


def check_deviation(dev, delta, reference, parts):
    # The identity: the contributions add up to the deviation computed directly.
    total = sum(parts.values())
    scale = max(np.linalg.norm(delta), 1e-300)
    assert np.linalg.norm(total - delta) <= 1e-10 * max(scale, np.linalg.norm(reference) * 1e-6)
    assert dev.norm == pytest.approx(np.linalg.norm(delta), rel=1e-10, abs=1e-13)
    assert dev.reference_norm == pytest.approx(np.linalg.norm(reference), rel=1e-12)
    assert set(dev.contributions) == set(parts)
    nd2 = np.sum(delta * delta)
    for k, c in parts.items():
        got = dev.contributions[k]
        assert got.norm == pytest.approx(np.linalg.norm(c), rel=1e-10, abs=1e-12), k
        assert got.inner == pytest.approx(np.sum(c * delta), rel=1e-9, abs=1e-12), k
        if nd2 > 1e-20:
            assert got.share == pytest.approx(np.sum(c * delta) / nd2, rel=1e-8, abs=1e-10), k
    if nd2 > 1e-20:
        assert sum(p.share for p in dev.contributions.values()) == pytest.approx(1.0, abs=1e-10)
        assert dev.closure < 1e-12


def mlp_layers(p):
    n = len([k for k in p if k.endswith(".weight")])
    return [p[f"layers.{i}.weight"] for i in range(n)], [p[f"layers.{i}.bias"] for i in range(n)]


def test_attribution_mlp_equals_the_numpy_identity():
    shapes = mlp_shapes([5, 12, 10, 8, 3])
    a, b = random_params(shapes, 1), random_params(shapes, 2)
    x = np.random.default_rng(3).standard_normal((70, 5))
    alphas = [0.25, 0.5]
    att = llfc.attribution_mlp(a, b, x, alphas)
    assert att.alphas == alphas and att.samples == 70
    assert att.sources == ["C0", "E0", "C1", "E1", "C2", "E2", "C3"]
    (wa, ba), (wb, bb) = mlp_layers(a), mlp_layers(b)
    acts = ["relu"] * 3 + ["identity"]
    for i, alpha in enumerate(alphas):
        ref = numpy_attribution(wa, ba, wb, bb, acts, x, alpha)
        for l, (dz, zl, dh, hl, pre, post) in enumerate(ref):
            la = att.layers[i][l]
            assert (la.layer, la.alpha) == (l, alpha)
            if l > 0:  # layer 0's exact deviation is 0 (only rounding): nothing to attribute
                check_deviation(la.pre, dz, zl, pre)
                check_deviation(la.post, dh, hl, post)
    # The logits at α = ½ are far from linear here, and both kinds of source contribute.
    logits = att.layers[1][3].pre
    assert logits.relative > 1e-2
    assert abs(logits.contributions["E0"].share) > 1e-3 and abs(logits.contributions["C3"].share) > 1e-3


def test_attribution_dense_without_biases_and_float32():
    rng = np.random.default_rng(4)
    wa = [rng.standard_normal((9, 4)), rng.standard_normal((2, 9))]
    wb = [rng.standard_normal((9, 4)), rng.standard_normal((2, 9))]
    x = rng.standard_normal((40, 4))
    att = llfc.attribution_dense(wa, wb, ["relu", "identity"], x, [0.3], chunk_size=7)
    (dz, zl, _, _, pre, _) = numpy_attribution(wa, [None, None], wb, [None, None], ["relu", "identity"], x, 0.3)[1]
    check_deviation(att.layers[0][1].pre, dz, zl, pre)
    # The by-hand two-layer formula: ΔZ¹ = E⁰ W_αᵀ + K¹ (llfc's module docs).
    assert set(att.layers[0][1].pre.contributions) == {"C0", "E0", "C1"}
    # Block size only changes the order of additions.
    other = llfc.attribution_dense(wa, wb, ["relu", "identity"], x, [0.3])
    assert other.layers[0][1].pre.norm == pytest.approx(att.layers[0][1].pre.norm, rel=1e-12)
    # float32 inputs are converted exactly to float64 inside: same as the rounded f64 values.
    w32a, w32b, x32 = [w.astype(np.float32) for w in wa], [w.astype(np.float32) for w in wb], x.astype(np.float32)
    f32 = llfc.attribution_dense(w32a, w32b, ["relu", "identity"], x32, [0.3])
    f64 = llfc.attribution_dense([w.astype(np.float64) for w in w32a], [w.astype(np.float64) for w in w32b],
                                 ["relu", "identity"], x32.astype(np.float64), [0.3])
    assert f32.layers[0][1].pre.norm == pytest.approx(f64.layers[0][1].pre.norm, rel=1e-12)
    # Mixed bias/no bias between models, wrong activation, wrong shapes.
    with pytest.raises(ValueError, match="bias"):
        llfc.attribution_dense([(wa[0], np.zeros(9)), wa[1]], wb, ["relu", "identity"], x, [0.3])
    with pytest.raises(ValueError, match="invalid activation"):
        llfc.attribution_dense(wa, wb, ["tanh", "identity"], x, [0.3])
    with pytest.raises(ValueError, match="shape mismatch"):
        llfc.attribution_dense(wa, wb, ["relu", "identity"], x[:, :3], [0.3])
    with pytest.raises(ValueError, match="chunk"):
        llfc.attribution_dense(wa, wb, ["relu", "identity"], x, [0.3], chunk_size=0)


def test_local_split_dense_and_activation():
    rng = np.random.default_rng(5)
    wa, wb = rng.standard_normal((6, 5)), rng.standard_normal((6, 5))
    ba, bb = rng.standard_normal(6), rng.standard_normal(6)
    ha, hb, hal = (rng.standard_normal((30, 5)) for _ in range(3))
    alpha, beta = 0.4, 0.6
    s = llfc.local_split_dense((wa, ba), (wb, bb), ha, hb, hal, alpha)
    wl = alpha * wa + beta * wb
    delta = hal @ wl.T - alpha * ha @ wa.T - beta * hb @ wb.T
    propagated = (hal - alpha * ha - beta * hb) @ wl.T
    own = -alpha * beta * (ha - hb) @ (wa - wb).T
    np.testing.assert_allclose(propagated + own, delta, rtol=0, atol=1e-12)
    z_lin = alpha * (ha @ wa.T + ba) + beta * (hb @ wb.T + bb)
    assert s.norm == pytest.approx(np.linalg.norm(delta), rel=1e-12)
    assert s.reference_norm == pytest.approx(np.linalg.norm(z_lin), rel=1e-12)
    for part, c in ((s.propagated, propagated), (s.own, own)):
        assert part.norm == pytest.approx(np.linalg.norm(c), rel=1e-12)
        assert part.share == pytest.approx(np.sum(c * delta) / np.sum(delta * delta), rel=1e-10)
    assert s.closure < 1e-13
    # Activation: ΔH = S ⊙ ΔZ + E.
    za, zb, zal = (rng.standard_normal((20, 7)) for _ in range(3))
    a = llfc.local_split_activation(za, zb, zal, alpha)
    zl = alpha * za + beta * zb
    hl = alpha * relu(za) + beta * relu(zb)
    dh = relu(zal) - hl
    prop, e = secant(zl, zal) * (zal - zl), relu(zl) - hl
    np.testing.assert_allclose(prop + e, dh, rtol=0, atol=1e-14)
    assert a.norm == pytest.approx(np.linalg.norm(dh), rel=1e-12)
    assert a.own.norm == pytest.approx(np.linalg.norm(e), rel=1e-12)
    assert a.propagated.inner == pytest.approx(np.sum(prop * dh), rel=1e-12)
    with pytest.raises(ValueError, match="shape mismatch"):
        llfc.local_split_activation(za, zb, zal[:, :3], alpha)
    with pytest.raises(ValueError, match="alpha|non-finite"):
        llfc.local_split_dense(wa, wb, ha, hb, hal, float("nan"))


GEOMETRIES = [dict(), dict(stride=2, padding=1), dict(padding=(1, 0), dilation=2), dict(groups=2, stride=(1, 2))]


@pytest.mark.parametrize("g", GEOMETRIES, ids=str)
def test_conv2d_and_conv_commutativity_equal_numpy(g):
    rng = np.random.default_rng(6)
    groups = g.get("groups", 1)
    wa, wb = rng.standard_normal((4, 4 // groups, 3, 3)), rng.standard_normal((4, 4 // groups, 3, 3))
    ha, hb = rng.standard_normal((3, 4, 7, 6)), rng.standard_normal((3, 4, 7, 6))
    y = llfc.conv2d(wa, ha, **g)
    np.testing.assert_allclose(y, nets.conv2d(ha, wa, **g), rtol=1e-12, atol=1e-12)
    assert y.dtype == np.float64
    c = llfc.conv_commutativity(wa, wb, ha, hb, **g)
    conv = lambda w, h: nets.conv2d(h, w, **g)  # noqa: E731
    s = conv(wa, ha) + conv(wb, hb)
    x = conv(wa, hb) + conv(wb, ha)
    r = s - x
    assert c.residual_norm == pytest.approx(np.linalg.norm(r), rel=1e-11)
    assert c.relative == pytest.approx(np.linalg.norm(r) / np.linalg.norm(s), rel=1e-11)
    assert c.vanilla == pytest.approx(np.sum(r * r) / (np.linalg.norm(s) * np.linalg.norm(x)), rel=1e-10)
    aa, bb = conv(wa, ha), conv(wb, hb)
    assert c.baseline == pytest.approx(np.sum((aa - bb) ** 2) / (np.linalg.norm(aa) * np.linalg.norm(bb)), rel=1e-10)


def test_local_split_conv_equals_numpy():
    rng = np.random.default_rng(7)
    g = dict(stride=2, padding=1)
    wa, wb = rng.standard_normal((5, 3, 3, 3)), rng.standard_normal((5, 3, 3, 3))
    ba, bb = rng.standard_normal(5), rng.standard_normal(5)
    ha, hb, hal = (rng.standard_normal((4, 3, 6, 6)) for _ in range(3))
    alpha, beta = 0.7, 0.3
    s = llfc.local_split_conv((wa, ba), (wb, bb), ha, hb, hal, alpha, **g)
    conv = lambda w, h: nets.conv2d(h, w, **g)  # noqa: E731
    wl = alpha * wa + beta * wb
    delta = conv(wl, hal) - alpha * conv(wa, ha) - beta * conv(wb, hb)
    prop = conv(wl, hal - alpha * ha - beta * hb)
    own = -alpha * beta * conv(wa - wb, ha - hb)
    np.testing.assert_allclose(prop + own, delta, rtol=0, atol=1e-12)
    z_lin = alpha * conv(wa, ha) + beta * conv(wb, hb) + (alpha * ba + beta * bb)[:, None, None]
    assert s.norm == pytest.approx(np.linalg.norm(delta), rel=1e-11)
    assert s.reference_norm == pytest.approx(np.linalg.norm(z_lin), rel=1e-11)
    assert s.propagated.inner == pytest.approx(np.sum(prop * delta), rel=1e-10)
    assert s.own.share == pytest.approx(np.sum(own * delta) / np.sum(delta * delta), rel=1e-10)
    with pytest.raises(ValueError, match="shape mismatch|groups|channels"):
        llfc.local_split_conv(wa, wb[:, :2], ha, hb, hal, alpha)
    with pytest.raises(ValueError, match="stride"):
        llfc.local_split_conv(wa, wb, ha, hb, hal, alpha, stride=0)
    with pytest.raises(ValueError, match="pair"):
        llfc.conv2d(wa, ha, stride=(1, 2, 3))
