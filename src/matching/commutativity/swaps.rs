//! Exact pairwise-swap (2-opt) rounds for one hidden permutation `P_ℓ` of commutativity
//! matching: every transposition of two of A's units' matches is scored exactly, all at once,
//! from two `d × d × d` products (updated, not recomputed, after a round that moved few units:
//! [`rows`]).
//!
//! With `q = P_ℓ` the part of `J` that depends on `q` is
//! `−2 Σ_i S_ℓ[i, q(i)] + ⟨G, N⟩`, where `G = G_{ℓ+1}(q)` is the Gram matrix of the features'
//! moments `C` and `N = Mᵀ M` that of the weight moments `Z = (UᵀU, UᵀV, VᵀV)`
//! (`U = W_A^{ℓ+1}`, `V = P_{ℓ+1} W_B^{ℓ+1}`): both are [`gram`] matrices,
//! `G[a, b] = C_AA[a, b] − C_AB[a, q(b)] − C_AB[b, q(a)] + C_BB[q(a), q(b)]`.
//! Row `a` of `G` when `a` is given B's unit `x` is `x_a + y_x` with
//! `x_a[k] = C_AA[a, k] − C_AB[a, q(k)]` and `y_x[k] = C_BB[x, q(k)] − C_AB[k, x]`, and likewise
//! `ẋ_a + ẏ_x` for `N`. So `W[a, x] = Σ_k (x_a + y_x)(ẋ_a + ẏ_x)[k] = ‖…‖ terms + (X Ẏᵀ)[a, x]
//! + (Ẋ Yᵀ)[a, x]`, and the change of `⟨G, N⟩` when `a = i` and `j` swap their matches is
//! `2 [W[i, q(j)] − W[i, q(i)] + W[j, q(i)] − W[j, q(j)]]` minus the entries `k ∈ {i, j}`
//! counted there, plus the change of the `2 × 2` block `{i, j}²`: `O(1)` per pair.

use ndarray::Array2;
#[cfg(test)]
use ndarray::Axis;

mod rows;

use super::layer::LayerCache;
use super::{gram_column, gram_into, transposed, GramRow, Moments};
use rows::{RoundBuffers, RowLayout};

/// `G[a, b]` with `a`, `b` matched to B's units `qa`, `qb`.
#[inline]
fn entry(m: &Moments, a: usize, b: usize, qa: usize, qb: usize) -> f64 {
    m.aa[[a, b]] - m.ab[[a, qb]] - m.ab[[b, qa]] + m.bb[[qa, qb]]
}

/// The scan of one round: `x`, `y`, `ẋ`, `ẏ` and `W` of the module docs.
#[cfg(test)]
struct Scan {
    x: Array2<f64>,
    y: Array2<f64>,
    xd: Array2<f64>,
    yd: Array2<f64>,
    w: Array2<f64>,
}

/// The state of one swap round of hidden layer `l`.
struct SwapState<'a> {
    c: &'a Moments,
    z: &'a Moments,
    s: Option<&'a Array2<f64>>,
    g: Array2<f64>,
    n: Array2<f64>,
    q: Vec<usize>,
}

impl<'a> SwapState<'a> {
    /// The state at `q`, its Gram matrices written into `g` and `n` (`d × d`).
    fn new(
        cache: &'a LayerCache<'a>,
        q: &[usize],
        (mut g, mut n): (Array2<f64>, Array2<f64>),
    ) -> Self {
        gram_into(cache.c, q, &mut g);
        gram_into(&cache.z, q, &mut n);
        Self {
            g,
            n,
            c: cache.c,
            z: &cache.z,
            s: cache.s.as_ref(),
            q: q.to_vec(),
        }
    }

    /// Change of the linear term `−2 Σ_i S[i, q(i)]` when `i` and `j` swap.
    fn linear_delta(&self, i: usize, j: usize) -> f64 {
        let (qi, qj) = (self.q[i], self.q[j]);
        self.s.as_ref().map_or(0.0, |s| {
            -2.0 * (s[[i, qj]] + s[[j, qi]] - s[[i, qi]] - s[[j, qj]])
        })
    }

    /// Change of the `{i, j}²` block of `⟨G, N⟩` when `i` and `j` swap.
    fn block_delta(&self, i: usize, j: usize) -> f64 {
        let (qi, qj) = (self.q[i], self.q[j]);
        let mut d = 0.0;
        for (a, qa) in [(i, qj), (j, qi)] {
            for (b, qb) in [(i, qj), (j, qi)] {
                d += entry(self.c, a, b, qa, qb) * entry(self.z, a, b, qa, qb)
                    - self.g[[a, b]] * self.n[[a, b]];
            }
        }
        d
    }

    /// Exact change of `J` when `i` and `j` swap, in `O(d)`.
    fn delta(&self, i: usize, j: usize) -> f64 {
        let (qi, qj) = (self.q[i], self.q[j]);
        let mut rows = 0.0;
        for (k, &qk) in self.q.iter().enumerate() {
            if k == i || k == j {
                continue;
            }
            rows += entry(self.c, i, k, qj, qk) * entry(self.z, i, k, qj, qk)
                + entry(self.c, j, k, qi, qk) * entry(self.z, j, k, qi, qk)
                - self.g[[i, k]] * self.n[[i, k]]
                - self.g[[j, k]] * self.n[[j, k]];
        }
        self.linear_delta(i, j) + 2.0 * rows + self.block_delta(i, j)
    }

    /// The scan of the module docs, straight from the formulas (the reference that
    /// [`RowLayout`] lays out differently, with the same values).
    #[cfg(test)]
    fn scan(&self) -> Scan {
        let q = &self.q;
        // x_a[k] = M_aa[a, k] − M_ab[a, q(k)],  y_x[k] = M_bb[x, q(k)] − M_ab[k, x].
        let xs = |m: &Moments| &m.aa - &m.ab.select(Axis(1), q);
        let ys = |m: &Moments| &m.bb.select(Axis(1), q) - &m.ab.t();
        let (x, y, xd, yd) = (xs(self.c), ys(self.c), xs(self.z), ys(self.z));
        let w = products(&x, &y, &xd, &yd);
        Scan { x, y, xd, yd, w }
    }

    /// The exact change of `J` when `i < j` swap, in `O(1)` from `scan`: the formula that
    /// [`RowLayout::deltas`] evaluates for a whole row of pairs, with the same operations in
    /// the same order (so the same values) from contiguous copies.
    #[cfg(test)]
    fn scan_delta(&self, scan: &Scan, i: usize, j: usize) -> f64 {
        let (qi, qj) = (self.q[i], self.q[j]);
        // Row `a` matched to B's unit `b`, summed over k ∉ {i, j}.
        let row = |a: usize, b: usize| {
            let h =
                |k: usize| (scan.x[[a, k]] + scan.y[[b, k]]) * (scan.xd[[a, k]] + scan.yd[[b, k]]);
            scan.w[[a, b]] - h(i) - h(j)
        };
        let rows = row(i, qj) - row(i, qi) + row(j, qi) - row(j, qj);
        self.linear_delta(i, j) + 2.0 * rows + self.block_delta(i, j)
    }

    /// Every swap `(ΔJ, i, j)`, `i < j`, with `ΔJ < 0`, scored in parallel over `i` (each
    /// value is computed alike whatever the thread count).
    fn improving(
        &self,
        s_t: Option<&Array2<f64>>,
        buffers: &mut RoundBuffers,
    ) -> Vec<(f64, usize, usize)> {
        let rows = RowLayout::new(self, s_t, buffers);
        let d = self.q.len();
        let row = |i: usize| -> Vec<(f64, usize, usize)> {
            let mut deltas = vec![0.0; d - i - 1];
            rows.deltas(i, &mut deltas);
            deltas
                .into_iter()
                .zip(i + 1..)
                .filter_map(|(v, j)| (v < 0.0).then_some((v, i, j)))
                .collect()
        };
        #[cfg(feature = "rayon")]
        {
            use rayon::prelude::*;
            (0..d).into_par_iter().flat_map_iter(row).collect()
        }
        #[cfg(not(feature = "rayon"))]
        {
            (0..d).flat_map(row).collect()
        }
    }

    /// Swap the matches of `i` and `j` and update rows and columns `i`, `j` of `G` and `N`,
    /// every entry by [`gram`](super::gram)'s operations in its order, so that `G` and `N`
    /// stay equal to the Gram matrices made from scratch at the new `q`, bit for bit (the next
    /// round starts from them).
    fn apply(&mut self, i: usize, j: usize) {
        self.q.swap(i, j);
        let mut column = vec![0.0; self.q.len()];
        for a in [i, j] {
            for (m, x) in [(self.c, &mut self.g), (self.z, &mut self.n)] {
                let row = x.row_mut(a).into_slice().expect("standard layout");
                GramRow::new(m, &self.q, a).fill(row);
                gram_column(m, &self.q, a, &mut column);
                x.column_mut(a)
                    .assign(&ndarray::ArrayView1::from(&column[..]));
            }
        }
    }

    /// `J_{ℓ+1} = ⟨G, N⟩` at the state's `q`, summed in row order: the value
    /// [`gram_inner`](super::gram_inner) computes from scratch, bit for bit, in `O(d²)` reads
    /// of the matrices the state holds.
    fn next_term(&self) -> f64 {
        self.g.iter().zip(&self.n).map(|(a, b)| a * b).sum()
    }
}

/// The Gram matrices `G`, `N` of a round and the permutation they were made at.
struct Grams {
    g: Array2<f64>,
    n: Array2<f64>,
    q: Vec<usize>,
}

/// The swap rounds of one layer visit (the other permutations fixed): the cache, `S_ℓᵀ` and
/// the buffers every round reuses, made at the first round. The Gram matrices a round leaves
/// (updated swap by swap) are those of its candidate, so the next round, which starts from the
/// accepted candidate, takes them as they are.
pub(super) struct Visit<'a> {
    cache: &'a LayerCache<'a>,
    s_t: Option<Array2<f64>>,
    buffers: Option<(RoundBuffers, Grams)>,
}

/// What the swap rounds of a visit leave for the next visit of the same layer: the scan and
/// the Gram matrices, with the permutation they were made at. They depend on the layer's
/// feature moments (fixed), on the weight moments `Z` of layer ℓ + 1 (so on `P_{ℓ+1}`, which
/// the caller checks) and on `P_ℓ`, which the buffers track themselves: the next visit updates
/// the scan if few units moved in between, and takes the Gram matrices as they are if none did.
pub(super) struct Carried(RoundBuffers, Grams);

impl<'a> Visit<'a> {
    /// The visit of `cache`'s layer (nothing is computed before the first round), resuming
    /// from what the previous visit left, if it was made with the same weight moments `Z`.
    pub(super) fn new(cache: &'a LayerCache<'a>, carried: Option<Carried>) -> Self {
        Self {
            cache,
            s_t: None,
            buffers: carried.map(|Carried(b, g)| (b, g)),
        }
    }

    /// What this visit leaves for the next one (`None` if no round ran).
    pub(super) fn finish(self) -> Option<Carried> {
        self.buffers.map(|(b, g)| Carried(b, g))
    }
}

/// One round of swaps of `P_l`: score every pair, then apply, best first, the improving swaps
/// of distinct units, each re-scored exactly after the previous ones. Returns the candidate
/// and its `J_{ℓ+1}` (exactly what [`LayerCache::terms`] computes for it), or `None` if no
/// swap improves `J`.
pub(super) fn swap_round(visit: &mut Visit<'_>, q: &[usize]) -> Option<(Vec<usize>, f64)> {
    let d = q.len();
    let cache = visit.cache;
    if visit.s_t.is_none() {
        visit.s_t = cache.s.as_ref().map(|s| transposed(s.view()));
    }
    let (mut buffers, grams) = visit.buffers.take().unwrap_or_else(|| {
        let z = || Array2::zeros((d, d));
        let grams = Grams {
            g: z(),
            n: z(),
            q: Vec::new(),
        };
        (RoundBuffers::new(d), grams)
    });
    let mut state = if grams.q == q {
        SwapState {
            g: grams.g,
            n: grams.n,
            c: cache.c,
            z: &cache.z,
            s: cache.s.as_ref(),
            q: grams.q,
        }
    } else {
        SwapState::new(cache, q, (grams.g, grams.n))
    };
    let mut improving = state.improving(visit.s_t.as_ref(), &mut buffers);
    improving.sort_by(|a, b| a.0.total_cmp(&b.0).then((a.1, a.2).cmp(&(b.1, b.2))));
    let mut used = vec![false; state.q.len()];
    let mut swapped = false;
    for (_, i, j) in improving {
        if used[i] || used[j] || state.delta(i, j) >= 0.0 {
            continue;
        }
        state.apply(i, j);
        used[i] = true;
        used[j] = true;
        swapped = true;
    }
    let next_term = swapped.then(|| state.next_term());
    let SwapState { g, n, q, .. } = state;
    visit.buffers = Some((buffers, Grams { g, n, q: q.clone() }));
    next_term.map(|t| (q, t))
}

/// `W[a, x] = Σ_k (x_a + y_x)(ẋ_a + ẏ_x)[k] = (X Ẏᵀ + Ẋ Yᵀ)[a, x] + ⟨x_a, ẋ_a⟩ + ⟨y_x, ẏ_x⟩`,
/// straight from the formula (the reference of the round's fused products).
#[cfg(test)]
fn products(x: &Array2<f64>, y: &Array2<f64>, xd: &Array2<f64>, yd: &Array2<f64>) -> Array2<f64> {
    let (t1, t4) = (
        rows::row_dots(x.view(), xd.view()),
        rows::row_dots(y.view(), yd.view()),
    );
    let matmul = |l: &Array2<f64>, r: ndarray::ArrayView2<'_, f64>| {
        let mut out = Array2::zeros((l.nrows(), r.ncols()));
        super::par_gemm_abt_into(l.view(), r.t(), 0.0, &mut out);
        out
    };
    let mut w = matmul(x, yd.t());
    w += &matmul(xd, y.t());
    w += &t1.view().insert_axis(Axis(1));
    w += &t4.view().insert_axis(Axis(0));
    w
}

#[cfg(test)]
mod tests {
    use super::super::{gram, CommutativityStats, Problem};
    use super::*;
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// The rounds of a visit carry `G`, `N` from one round to the next and score their
    /// candidates from them: after every round they equal the Gram matrices made from scratch
    /// at the candidate, and the returned `J_{ℓ+1}` equals [`LayerCache::terms`]' from-scratch
    /// value, bit for bit (the same operations in the same order).
    #[test]
    fn carried_grams_equal_the_grams_from_scratch() {
        let mut rng = ChaCha8Rng::seed_from_u64(17);
        let widths = [5, 24, 20, 3];
        let mut rand =
            |r: usize, c: usize| Array2::from_shape_fn((r, c), |_| rng.random_range(-1.0..1.0_f64));
        let wa: Vec<_> = (0..3).map(|l| rand(widths[l + 1], widths[l])).collect();
        let wb: Vec<_> = (0..3).map(|l| rand(widths[l + 1], widths[l])).collect();
        let moments = (1..3)
            .map(|l| {
                let mut st = CommutativityStats::new(widths[l]);
                let (ha, hb) = (rand(60, widths[l]), rand(60, widths[l]));
                st.update(ha.mapv(f64::abs).view(), hb.mapv(f64::abs).view())
                    .unwrap();
                st.moments().unwrap()
            })
            .collect();
        let problem = Problem::from_parts(wa, wb, moments);
        let mut perms: Vec<Vec<usize>> = widths[1..3].iter().map(|&d| (0..d).collect()).collect();
        for p in &mut perms {
            p.shuffle(&mut rng);
        }
        let mut rounds = 0;
        for l in 0..2 {
            let cache = LayerCache::new(&problem, &perms, l);
            let mut visit = Visit::new(&cache, None);
            let mut q = perms[l].clone();
            while let Some((cand, next)) = swap_round(&mut visit, &q) {
                rounds += 1;
                assert_eq!(next.to_bits(), cache.terms(&cand).1.to_bits());
                let (_, grams) = visit.buffers.as_ref().unwrap();
                assert_eq!(grams.q, cand);
                for (carried, c) in [(&grams.g, cache.c), (&grams.n, &cache.z)] {
                    let fresh = gram(c, &cand);
                    assert!(carried
                        .iter()
                        .zip(&fresh)
                        .all(|(a, b)| a.to_bits() == b.to_bits()));
                }
                let before = cache.terms(&q);
                let after = cache.terms(&cand);
                assert!(after.0 + after.1 < before.0 + before.1);
                q = cand;
            }
        }
        assert!(
            rounds >= 2,
            "the test needs rounds that follow rounds ({rounds})"
        );
        // A later visit of the layer (same weight moments) resumes from what the last one
        // left, after a few units moved in between (the update path) or none (the Gram
        // matrices as they are): its rounds propose what a fresh visit proposes.
        let l = 0;
        let cache = LayerCache::new(&problem, &perms, l);
        let mut q = perms[l].clone();
        let mut visit = Visit::new(&cache, None);
        while let Some((cand, _)) = swap_round(&mut visit, &q) {
            q = cand;
        }
        let mut carried = visit.finish();
        let mut compared = 0;
        for moved in [0, 2, 4, 6] {
            for k in 0..moved / 2 {
                q.swap(2 * k, 2 * k + 5);
            }
            let mut resumed = Visit::new(&cache, carried.take());
            let mut fresh = Visit::new(&cache, None);
            let (r, f) = (swap_round(&mut resumed, &q), swap_round(&mut fresh, &q));
            assert_eq!(
                r.as_ref().map(|x| &x.0),
                f.as_ref().map(|x| &x.0),
                "{moved}"
            );
            if let (Some((_, tr)), Some((_, tf))) = (&r, &f) {
                assert_eq!(tr.to_bits(), tf.to_bits());
                compared += 1;
            }
            carried = resumed.finish();
        }
        assert!(compared >= 2, "{compared} resumed rounds proposed a swap");
    }

    #[test]
    fn swap_deltas_are_exact() {
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        let mut rand =
            |r: usize, c: usize| Array2::from_shape_fn((r, c), |_| rng.random_range(-1.0..1.0));
        let widths = [3, 6, 5, 2];
        let wa: Vec<_> = (0..3).map(|l| rand(widths[l + 1], widths[l])).collect();
        let wb: Vec<_> = (0..3).map(|l| rand(widths[l + 1], widths[l])).collect();
        let moments = (1..3)
            .map(|l| {
                let mut st = CommutativityStats::new(widths[l]);
                st.update(rand(30, widths[l]).view(), rand(30, widths[l]).view())
                    .unwrap();
                st.moments().unwrap()
            })
            .collect();
        let problem = Problem::from_parts(wa, wb, moments);
        // The row-wise Gram matrix and the fused ⟨G, N⟩ equal the element formula, bit for bit.
        let q = [2, 0, 5, 1, 4, 3];
        let (c, z) = (&problem.moments[0], &problem.moments[0]);
        let slow = Array2::from_shape_fn((6, 6), |(i, j)| entry(c, i, j, q[i], q[j]));
        let fast = gram(c, &q);
        assert!(fast
            .iter()
            .zip(&slow)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
        let inner: f64 = slow.iter().zip(&gram(z, &q)).map(|(a, b)| a * b).sum();
        assert_eq!(
            super::super::gram_inner(c, z, &q).to_bits(),
            inner.to_bits()
        );
        let perms = vec![vec![2, 0, 5, 1, 4, 3], vec![1, 4, 0, 3, 2]];
        let total = |p: &[Vec<usize>]| (0..3).map(|l| problem.term(p, l)).sum::<f64>();
        for l in 0..2 {
            let cache = LayerCache::new(&problem, &perms, l);
            let d = perms[l].len();
            let zeros = || Array2::zeros((d, d));
            let state = SwapState::new(&cache, &perms[l], (zeros(), zeros()));
            let scan = state.scan();
            let s_t = cache.s.as_ref().map(|s| transposed(s.view()));
            let mut buffers = RoundBuffers::new(d);
            let rows = RowLayout::new(&state, s_t.as_ref(), &mut buffers);
            let [x, y, xd, yd] = rows.xy();
            for (fast, slow) in [(x, &scan.x), (y, &scan.y), (xd, &scan.xd), (yd, &scan.yd)] {
                assert!(fast
                    .iter()
                    .zip(slow)
                    .all(|(a, b)| a.to_bits() == b.to_bits()));
            }
            for i in 0..d {
                let mut row = vec![f64::NAN; d - i - 1];
                rows.deltas(i, &mut row);
                for j in i + 1..d {
                    // Same operations in the same order: the same bits.
                    let fast = state.scan_delta(&scan, i, j);
                    assert_eq!(row[j - i - 1].to_bits(), fast.to_bits(), "{l} {i} {j}");
                    let mut p = perms.clone();
                    p[l].swap(i, j);
                    let exact = total(&p) - total(&perms);
                    let tol = 1e-9 * exact.abs().max(1.0);
                    assert!((state.delta(i, j) - exact).abs() < tol, "{l} {i} {j}");
                    assert!((fast - exact).abs() < tol, "{l} {i} {j}: {fast} vs {exact}");
                }
            }
        }
    }
}
