"""``llfc.linear_sum_assignment`` against ``scipy.optimize.linear_sum_assignment``.

Totals: SciPy and llfc both return optima, computed in f64 by different paths, so totals agree to
rounding, ~1e-15 relative per term; we allow 1e-12 relative (the smallest gap between a
suboptimal and an optimal total in these families is orders of magnitude larger, ≥ 1 for the
integer families). Assignments: equal to SciPy's exactly wherever the optimum is unique (random
continuous costs) *and* on tie-heavy integer matrices, where ``ties="scipy"`` must pick SciPy's
optimum among many.
"""

import zlib

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment as scipy_lsa

import llfc


def relu_stats(rng, n, m, samples=400):
    x = rng.standard_normal((samples, 16))
    a = np.maximum(x @ rng.standard_normal((16, n)) + 0.3 * rng.standard_normal(n), 0)
    b = np.maximum(x @ rng.standard_normal((16, m)) + 0.3 * rng.standard_normal(m), 0)
    return a.T @ b / samples


def family(name, rng, shape):
    n, m = shape
    if name == "random":
        return rng.random(shape)
    if name == "integer-ties":
        return rng.integers(0, 6, shape).astype(np.float64)
    if name == "scaled-up":
        return rng.random(shape) * 1e12
    if name == "scaled-down":
        return rng.random(shape) * 1e-12
    if name == "relu-stats":
        return relu_stats(rng, n, m)
    if name == "forbidden":
        c = rng.random(shape)
        c[rng.random(shape) < 0.3] = np.inf
        return c
    raise ValueError(name)


FAMILIES = ["random", "integer-ties", "scaled-up", "scaled-down", "relu-stats", "forbidden"]
SHAPES = [(7, 7), (60, 60), (40, 70), (70, 40), (150, 150), (130, 170), (170, 130)]


def feasible(c, maximize):
    try:
        scipy_lsa(c, maximize=maximize)
        return True
    except ValueError:
        return False


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("maximize", [False, True])
def test_matches_scipy(name, shape, maximize):
    rng = np.random.default_rng(zlib.crc32(repr((name, shape, maximize)).encode()))
    c = family(name, rng, shape)
    if maximize and name == "forbidden":
        c = np.where(np.isinf(c), -np.inf, c)
    if not feasible(c, maximize):
        with pytest.raises(ValueError, match="cost matrix is infeasible"):
            llfc.linear_sum_assignment(c, maximize=maximize)
        return
    r0, c0 = scipy_lsa(c, maximize=maximize)
    total = c[r0, c0].sum()
    for dtype in (np.float64, np.float32):
        x = c.astype(dtype)
        ref = scipy_lsa(x, maximize=maximize) if dtype == np.float32 else (r0, c0)
        ref_total = x[ref].astype(np.float64).sum()
        for order in ("C", "F"):
            y = np.asarray(x, order=order)
            r, k = llfc.linear_sum_assignment(y, maximize=maximize)
            assert r.dtype == np.int64 and k.dtype == np.int64
            assert np.all(np.diff(r) > 0)
            assert len(r) == min(shape)
            assert len(np.unique(k)) == len(k)
            got = x[r, k].astype(np.float64).sum()
            assert got == pytest.approx(ref_total, rel=1e-12, abs=1e-300)
            if name != "relu-stats" or dtype == np.float64:
                # Unique optimum, or SciPy's choice among ties: the very same pairs.
                assert np.array_equal(r, ref[0]) and np.array_equal(k, ref[1]), (name, dtype, order)
    assert np.isfinite(total)


def test_infinities_and_errors_like_scipy():
    c = np.array([[1.0, np.inf], [np.inf, 2.0]])
    assert [list(x) for x in llfc.linear_sum_assignment(c)] == [[0, 1], [0, 1]]
    with pytest.raises(ValueError, match="contains invalid numeric entries"):
        llfc.linear_sum_assignment(np.array([[1.0, np.nan], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="contains invalid numeric entries"):
        llfc.linear_sum_assignment(np.array([[1.0, np.inf], [0.0, 1.0]]), maximize=True)
    with pytest.raises(ValueError, match="cost matrix is infeasible"):
        llfc.linear_sum_assignment(np.array([[np.inf, np.inf], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="expected a matrix"):
        llfc.linear_sum_assignment(np.zeros((2, 2, 2)))
    with pytest.raises(TypeError):
        llfc.linear_sum_assignment(np.array([["a", "b"]]))
    with pytest.raises(ValueError, match="invalid solver"):
        llfc.linear_sum_assignment(np.eye(2), solver="auction")


def test_non_contiguous_views_and_input_untouched():
    rng = np.random.default_rng(1)
    big = rng.random((90, 120))
    keep = big.copy()
    view = big[::3, 1::2]  # strided, neither C nor F contiguous
    assert not view.flags.c_contiguous and not view.flags.f_contiguous
    r, k = llfc.linear_sum_assignment(view)
    r2, k2 = scipy_lsa(np.ascontiguousarray(view))
    assert np.array_equal(r, r2) and np.array_equal(k, k2)
    r, k = llfc.linear_sum_assignment(big[::-1])  # negative strides
    r2, k2 = scipy_lsa(big[::-1].copy())
    assert np.array_equal(k, k2)
    assert np.array_equal(big, keep)


def test_solvers_and_warm_starts():
    rng = np.random.default_rng(2)
    s = rng.random((200, 200))
    first = llfc.solve_assignment(s, maximize=True)
    assert first.u is not None and first.total == pytest.approx(s[first.row_ind, first.col_ind].sum())
    # Duality: Σu + Σv equals the optimum.
    assert first.u.sum() + first.v.sum() == pytest.approx(first.total, rel=1e-12)
    s2 = s + 1e-3 * rng.random((200, 200))
    warm = llfc.solve_assignment(s2, maximize=True, warm_start=first)
    cold = scipy_lsa(s2, maximize=True)
    assert np.array_equal(warm.col_ind, cold[1])
    r, k = llfc.linear_sum_assignment(s2, maximize=True, warm_start=first)
    assert np.array_equal(k, cold[1])
    ints = rng.integers(0, 50, (60, 60)).astype(float)
    km = llfc.solve_assignment(ints, solver="kuhn-munkres")
    r0, c0 = scipy_lsa(ints)
    assert km.total == ints[r0, c0].sum() and km.u is None
    with pytest.raises(ValueError, match="warm starts need the native solver"):
        llfc.solve_assignment(s2, solver="kuhn-munkres", warm_start=first)
    with pytest.raises(ValueError, match="shape mismatch"):
        llfc.solve_assignment(s2[:10, :10], warm_start=first)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_presolves_never_change_the_optimum(dtype):
    # Both exact presolves forced on ("always") and off ("never") on matrices far below their
    # automatic sizes: the same optimum as SciPy's, the same assignment (unique optimum of
    # continuous costs), for a uniform and an activation-statistics matrix, min and max.
    rng = np.random.default_rng(31)
    for cost in (rng.random((300, 300)), relu_stats(rng, 300, 300)):
        cost = cost.astype(dtype)
        for maximize in (False, True):
            r0, c0 = scipy_lsa(cost.astype(np.float64), maximize=maximize)
            want = cost.astype(np.float64)[r0, c0].sum()
            for presolve in ("auto", "always", "never"):
                for candidates in ("auto", "always", "never"):
                    sol = llfc.solve_assignment(
                        cost, maximize, presolve=presolve, candidates=candidates
                    )
                    assert sol.total == pytest.approx(want, rel=1e-12), (presolve, candidates)
                    assert np.array_equal(sol.col_ind, c0), (presolve, candidates)
            r, c = llfc.linear_sum_assignment(cost, maximize, presolve="never", candidates="always")
            assert np.array_equal(c, c0)
    with pytest.raises(ValueError, match="presolve"):
        llfc.solve_assignment(np.eye(3), presolve="sometimes")
    with pytest.raises(ValueError, match="candidates"):
        llfc.linear_sum_assignment(np.eye(3), candidates="yes")


def test_constant_matrices_give_scipys_identity_at_every_size():
    for shape in [(8, 8), (300, 300), (200, 260), (260, 200)]:
        r, k = llfc.linear_sum_assignment(np.ones(shape))
        n = min(shape)
        assert np.array_equal(r, np.arange(n)) and np.array_equal(k, np.arange(n))
