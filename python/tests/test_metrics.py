"""Metrics and activation statistics against NumPy implementations written here.

Tolerance 1e-12 (absolute, on O(1) quantities): llfc accumulates in f64 in its own order, so
the two computations differ by a few ulps of the sums involved (~1e-15 at these sizes).
"""

import numpy as np
import pytest

import llfc
from conftest import mlp_shapes, random_params

TOL = 1e-12


def cos_dist(x, y):
    x, y = x.reshape(len(x), -1), y.reshape(len(y), -1)
    nx, ny = np.linalg.norm(x, axis=1), np.linalg.norm(y, axis=1)
    out = np.full(len(x), np.nan)
    ok = (nx > 0) & (ny > 0)
    out[ok] = 1 - (x[ok] * y[ok]).sum(1) / (nx[ok] * ny[ok])
    return out


def check_stats(s, values):
    defined = values[~np.isnan(values)]
    np.testing.assert_allclose(s.values, values, atol=TOL, rtol=0)
    assert s.count == len(defined) and s.skipped == len(values) - len(defined)
    assert s.mean == pytest.approx(defined.mean(), abs=TOL)
    assert s.std == pytest.approx(defined.std(), abs=TOL)


@pytest.fixture
def feats():
    rng = np.random.default_rng(0)
    a, b, x = rng.standard_normal((3, 40, 6, 5))
    a[3] = 0.0  # a zero sample is skipped
    return a, b, x


def test_cosine_distances(feats):
    a, b, _ = feats
    check_stats(llfc.cosine_distances(a, b), cos_dist(a, b))
    s = llfc.cosine_distances(a, b, "absolute")
    ref = cos_dist(a, b)
    np.testing.assert_allclose(s.values, 1 - np.abs(1 - ref), atol=TOL)
    f32 = llfc.cosine_distances(a.astype(np.float32), b.astype(np.float32))
    np.testing.assert_allclose(f32.values, ref, atol=1e-5)  # float32 inputs


def test_llfc_layer(feats):
    a, b, x = feats
    alpha = 0.3
    f_int = alpha * a + (1 - alpha) * b
    r = llfc.llfc_layer(x, a, b, alpha)
    check_stats(r.distance, cos_dist(x, f_int))
    check_stats(r.baseline, cos_dist(a, b))
    xf, ff = x.reshape(40, -1), f_int.reshape(40, -1)
    coef = (xf * ff).sum(1) / (ff * ff).sum(1)
    check_stats(r.coef, coef)
    check_stats(r.c, 1 / coef)
    assert r.matrix_coef == pytest.approx((xf * ff).sum() / (ff * ff).sum(), abs=TOL)
    assert r.matrix_c == pytest.approx(1 / r.matrix_coef, abs=TOL)
    assert r.alpha == alpha


def test_weak_additivity(feats):
    za, zb, _ = feats
    alpha = 0.6
    left = np.maximum(alpha * za + (1 - alpha) * zb, 0)
    right = alpha * np.maximum(za, 0) + (1 - alpha) * np.maximum(zb, 0)
    w = llfc.weak_additivity(za, zb, alpha)
    d = np.linalg.norm(left - right)
    assert w.relative == pytest.approx(d / np.linalg.norm(right), abs=TOL)
    assert w.vanilla == pytest.approx(d**2 / (np.linalg.norm(left) * np.linalg.norm(right)), abs=TOL)
    check_stats(w.cosine, cos_dist(left, right))


def test_commutativity():
    rng = np.random.default_rng(1)
    wa, wb = rng.standard_normal((2, 7, 9))
    ha, hb = rng.standard_normal((2, 30, 9))
    r = llfc.commutativity_residual(wa, wb, ha, hb)
    ref = (ha - hb) @ (wa - wb).T
    np.testing.assert_allclose(r, ref, atol=TOL, rtol=0)
    # R = W_A H_A + W_B H_B − W_A H_B − W_B H_A (sample-major layout).
    x = ha @ wa.T + hb @ wb.T
    y = hb @ wa.T + ha @ wb.T
    np.testing.assert_allclose(r, x - y, atol=1e-12)
    c = llfc.commutativity(wa, wb, ha, hb)
    n = np.linalg.norm
    assert c.residual_norm == pytest.approx(n(ref), abs=TOL)
    assert c.relative == pytest.approx(n(ref) / n(x), abs=TOL)
    assert c.vanilla == pytest.approx(n(ref) ** 2 / (n(x) * n(y)), abs=TOL)
    p, q = ha @ wa.T, hb @ wb.T
    assert c.baseline == pytest.approx(n(p - q) ** 2 / (n(p) * n(q)), abs=TOL)
    with pytest.raises(ValueError, match="shape mismatch"):
        llfc.commutativity_residual(wa, wb, ha[:, :4], hb)


def test_barrier():
    alphas = np.linspace(0, 1, 11)
    v = 1 + np.sin(np.pi * alphas) + 0.5 * alphas
    excess = v - (alphas * v[-1] + (1 - alphas) * v[0])
    b = llfc.barrier(alphas, v)
    assert b.height == pytest.approx(excess.max(), abs=TOL) and b.index == int(excess.argmax())
    assert b.alpha == alphas[b.index]
    m = llfc.barrier(alphas, v, "midpoint")
    assert m.height == pytest.approx(v.max() - (v[0] + v[-1]) / 2, abs=TOL)
    with pytest.raises(ValueError):
        llfc.barrier([0.0, 0.5], [1.0])


def test_metric_bad_input():
    with pytest.raises(ValueError, match="shape mismatch"):
        llfc.cosine_distances(np.ones((3, 2)), np.ones((4, 2)))
    with pytest.raises(ValueError, match="non-finite"):
        llfc.cosine_distances(np.array([[np.nan, 1.0]]), np.ones((1, 2)))
    with pytest.raises(TypeError):
        llfc.cosine_distances(np.array([["a"]]), np.array([["b"]]))
    with pytest.raises(ValueError, match="invalid variant"):
        llfc.cosine_distances(np.ones((1, 2)), np.ones((1, 2)), "cosine")


def corr(a, b):
    ca = (a - a.mean(0)) / a.std(0)
    cb = (b - b.mean(0)) / b.std(0)
    return ca.T @ cb / len(a)


def test_activation_stats_ranks_merge_and_statistics():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((64, 5))
    b = a @ rng.standard_normal((5, 4)) + 0.1 * rng.standard_normal((64, 4))
    st = llfc.ActivationStats(5, 4)
    st.update(a[:20], b[:20])
    other = llfc.ActivationStats(5, 4)
    other.update(a[20:], b[20:])
    st.merge(other)
    assert st.count == 64 and st.dims == (5, 4)
    np.testing.assert_allclose(st.statistic("correlation"), corr(a, b), atol=TOL)
    cov = (a - a.mean(0)).T @ (b - b.mean(0)) / 64
    np.testing.assert_allclose(st.statistic("covariance"), cov, atol=TOL)
    np.testing.assert_allclose(st.statistic("inner-product"), a.T @ b / 64, atol=TOL)
    # Rank 4 [N, c, h, w]: channels are units, N·h·w samples.
    x4, y4 = rng.standard_normal((2, 6, 3, 4, 4))
    s4 = llfc.ActivationStats(3, 3)
    s4.update(x4, y4)
    flat = lambda t: t.transpose(0, 2, 3, 1).reshape(-1, 3)  # noqa: E731
    np.testing.assert_allclose(s4.statistic(), corr(flat(x4), flat(y4)), atol=TOL)
    # Rank 3 [N, t, d]: tokens are samples.
    x3, y3 = rng.standard_normal((2, 6, 7, 3))
    s3 = llfc.ActivationStats(3, 3)
    s3.update(x3, y3[:, ::-1])  # a non-contiguous view too
    np.testing.assert_allclose(s3.statistic(), corr(x3.reshape(-1, 3), y3[:, ::-1].reshape(-1, 3)), atol=TOL)
    with pytest.raises(ValueError, match="shape mismatch"):
        st.update(a[:, :3], b)
    with pytest.raises(ValueError, match="no batch"):
        llfc.ActivationStats(2, 2).statistic()
    with pytest.raises(ValueError, match="same dtype"):
        st.update(a.astype(np.float32), b)


def test_activation_matching_recovers_a_planted_permutation():
    rng = np.random.default_rng(3)
    h = np.maximum(rng.standard_normal((500, 40)), 0)
    p = rng.permutation(40)
    st = llfc.ActivationStats(40, 40)
    st.update(h, h[:, np.argsort(p)])  # B's unit p[i] is A's unit i
    for s in ("correlation", "covariance", "inner-product"):
        got = llfc.activation_matching({"P_0": st}, s)
        assert np.array_equal(got["P_0"], p)


def mlp_hidden(params, x, n):
    hs, h = [], x
    for i in range(n - 1):
        h = np.maximum(h @ params[f"layers.{i}.weight"].T + params[f"layers.{i}.bias"], 0)
        hs.append(h)
    return hs


def test_commutativity_matching_and_objective():
    shapes = mlp_shapes([6, 16, 16, 16, 3])
    a, b = random_params(shapes, 4), random_params(shapes, 5)
    x = np.random.default_rng(6).standard_normal((300, 6))
    spec = llfc.PermutationSpec.mlp(4)
    ident = {k: np.arange(n) for k, n in spec.perm_sizes(a).items()}
    total, layers = llfc.commutativity_objective(a, b, x, ident)
    ha, hb = mlp_hidden(a, x, 4), mlp_hidden(b, x, 4)
    ref = [0.0] + [
        float(np.sum(((ha[l - 1] - hb[l - 1]) @ (a[f"layers.{l}.weight"] - b[f"layers.{l}.weight"]).T) ** 2)) / len(x)
        for l in range(1, 4)
    ]
    # From second moments (differences of means of products): 1e-10 relative.
    np.testing.assert_allclose(layers, ref, rtol=1e-10, atol=1e-10)
    assert total == pytest.approx(sum(ref), rel=1e-10)
    m = llfc.commutativity_matching(a, b, x, start="weight")
    assert m.objective <= m.initial_objective
    t2, _ = llfc.commutativity_objective(a, b, x, m.perms)
    assert t2 == pytest.approx(m.objective, rel=1e-9)
    with pytest.raises(ValueError, match="invalid start"):
        llfc.commutativity_matching(a, b, x, start="random")
