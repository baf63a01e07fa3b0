//! SciPy's choice among tied optimal assignments ([`Ties::Scipy`](super::Ties::Scipy)).
//!
//! A matrix with several optimal assignments (an all-ones matrix, small integer costs) has no
//! single right answer, but code written against `scipy.optimize.linear_sum_assignment` may rely
//! on the one SciPy returns (SciPy's issue 11602: a constant matrix gives the identity). SciPy's
//! solver (P. M. Larsen's implementation of Crouse 2016) is deterministic: it augments the rows
//! in order from zero potentials on `C − min C`, scans the unvisited columns in an order that
//! starts reversed and changes by swap-removal, and among the columns at the minimal distance
//! takes the *last* unmatched one in that order, else the first one. [`replay`] is that
//! procedure, operation for operation in the same floating-point order, so it returns SciPy's
//! assignment bit for bit (`O(r² c)`, SciPy's speed).
//!
//! Replaying is only needed when another optimum exists. [`is_unique`] decides that from the
//! fast solver's dual certificate: with reduced costs `r_ij = c_ij − u_i − v_j ≥ 0` (zero on the
//! matching `σ`), any injection `τ` has
//!
//! `total(τ) − total(σ) = Σ_i r_{iτ(i)} + Σ_{j unused by τ} (−v_j)`,
//!
//! a sum of non-negative terms. So every `τ ≠ σ` within `δ` of the optimum uses only *δ-tight*
//! edges (`r_ij ≤ δ`) and leaves unused only columns with `−v_j ≤ δ`; `σ Δ τ` is a union of
//! alternating cycles and alternating paths of such edges. With no such cycle or path, `σ` is
//! the only assignment within `δ` of the optimum, and SciPy — whose result is optimal up to the
//! rounding of its path lengths, far below `δ` — must return it too. `δ = 2^-30 · M`, with `M`
//! the largest magnitude among the finite costs and the potentials (SciPy's rounding is a few
//! ulps of `n · M`, i.e. below `2^-30 · M` up to `n ≈ 10^6`).

use super::kernels::ld;
use super::native::{Costs, Solution, NONE};
use crate::error::{Error, Result};
use crate::float::Float;

/// Relative tolerance `δ / M` of [`is_unique`].
const TIGHT_REL: f64 = 1.0 / (1u64 << 30) as f64;

/// More δ-tight non-matching edges than this (per row, plus a constant) means a degenerate
/// matrix: [`is_unique`] answers `false` without building the graph.
const MAX_TIGHT_PER_ROW: usize = 8;

/// Whether `sol` (an optimal solution of the internal minimisation, with its duals) is the only
/// assignment within `δ` of the optimum; see the [module docs](self). `O(r c)` time, `O(r)`
/// memory besides the tight edges (at most `8 r + 64`).
pub(super) fn is_unique<T: Float, const NEG: bool>(c: Costs<'_, T>, sol: &Solution) -> bool {
    let (nr, nc) = (c.nr, c.nc);
    let mut m = 0.0f64;
    for &x in c.data {
        let y = ld::<T, NEG>(x).abs();
        if y.is_finite() {
            m = m.max(y);
        }
    }
    for &x in sol.u.iter().chain(&sol.v) {
        m = m.max(x.abs());
    }
    let delta = TIGHT_REL * m;
    let mut row4col = vec![NONE; nc];
    for (i, &j) in sol.col4row.iter().enumerate() {
        row4col[j] = i;
    }
    // Edges i → k: row i could take the column of row k (δ-tight); `source[i]`: row i could
    // take a free column; `sink[k]`: row k's column could be left free.
    let cap = MAX_TIGHT_PER_ROW * nr + 64;
    let mut edges: Vec<(usize, usize)> = Vec::new();
    let mut source = vec![false; nr];
    for (i, (row, src)) in c.data.chunks_exact(nc).zip(&mut source).enumerate() {
        let ui = sol.u[i];
        for (j, (&x, &vj)) in row.iter().zip(&sol.v).enumerate() {
            if j != sol.col4row[i] && (ld::<T, NEG>(x) - ui) - vj <= delta {
                match row4col[j] {
                    NONE => *src = true,
                    k => edges.push((i, k)),
                }
                if edges.len() > cap {
                    return false;
                }
            }
        }
    }
    let sink: Vec<bool> = if nr < nc {
        sol.col4row.iter().map(|&j| -sol.v[j] <= delta).collect()
    } else {
        vec![false; nr]
    };
    !has_cycle(nr, &edges) && !sink_reaches_source(nr, &edges, &sink, &source)
}

/// Adjacency lists (`start[i]..start[i + 1]` in the returned targets) of a directed graph.
fn adjacency(n: usize, edges: &[(usize, usize)]) -> (Vec<usize>, Vec<usize>) {
    let mut start = vec![0usize; n + 1];
    for &(i, _) in edges {
        start[i + 1] += 1;
    }
    for i in 0..n {
        start[i + 1] += start[i];
    }
    let mut fill = start.clone();
    let mut targets = vec![0usize; edges.len()];
    for &(i, k) in edges {
        targets[fill[i]] = k;
        fill[i] += 1;
    }
    (start, targets)
}

/// Whether the directed graph has a cycle (Kahn's algorithm; a self-loop cannot occur).
fn has_cycle(n: usize, edges: &[(usize, usize)]) -> bool {
    let (start, targets) = adjacency(n, edges);
    let mut indeg = vec![0usize; n];
    for &k in &targets {
        indeg[k] += 1;
    }
    let mut stack: Vec<usize> = (0..n).filter(|&i| indeg[i] == 0).collect();
    let mut removed = 0;
    while let Some(i) = stack.pop() {
        removed += 1;
        for &k in &targets[start[i]..start[i + 1]] {
            indeg[k] -= 1;
            if indeg[k] == 0 {
                stack.push(k);
            }
        }
    }
    removed < n
}

/// Whether a path (possibly empty) leads from a row marked `sink` to a row marked `source`.
fn sink_reaches_source(n: usize, edges: &[(usize, usize)], sink: &[bool], source: &[bool]) -> bool {
    let (start, targets) = adjacency(n, edges);
    let mut seen = sink.to_vec();
    let mut stack: Vec<usize> = (0..n).filter(|&i| sink[i]).collect();
    while let Some(i) = stack.pop() {
        if source[i] {
            return true;
        }
        for &k in &targets[start[i]..start[i + 1]] {
            if !seen[k] {
                seen[k] = true;
                stack.push(k);
            }
        }
    }
    false
}

/// SciPy's solver, replayed operation for operation (see the [module docs](self)): the same
/// assignment as `scipy.optimize.linear_sum_assignment` on the internal matrix (minimisation,
/// `nr <= nc`, entries finite or `+∞`). The duals are returned in the frame of `c` (SciPy's
/// row potentials plus `min C`).
///
/// # Errors
/// [`Error::Infeasible`] when no assignment avoids the `+∞` entries.
pub(super) fn replay<T: Float, const NEG: bool>(c: Costs<'_, T>) -> Result<Solution> {
    let (nr, nc) = (c.nr, c.nc);
    let minval = c
        .data
        .iter()
        .map(|&x| ld::<T, NEG>(x))
        .fold(f64::INFINITY, f64::min);
    let mut u = vec![0.0f64; nr];
    let mut v = vec![0.0f64; nc];
    let mut spc = vec![f64::INFINITY; nc];
    let mut path = vec![NONE; nc];
    let mut col4row = vec![NONE; nr];
    let mut row4col = vec![NONE; nc];
    let mut sr = vec![false; nr];
    let mut sc = vec![false; nc];
    let mut remaining: Vec<usize> = Vec::with_capacity(nc);
    for cur in 0..nr {
        remaining.clear();
        remaining.extend((0..nc).rev());
        sr.fill(false);
        sc.fill(false);
        spc.fill(f64::INFINITY);
        let mut min_val = 0.0f64;
        let mut i = cur;
        let sink = loop {
            let mut index = NONE;
            let mut lowest = f64::INFINITY;
            sr[i] = true;
            let row = &c.data[i * nc..(i + 1) * nc];
            for (it, &j) in remaining.iter().enumerate() {
                let r = ((min_val + (ld::<T, NEG>(row[j]) - minval)) - u[i]) - v[j];
                if r < spc[j] {
                    path[j] = i;
                    spc[j] = r;
                }
                if spc[j] < lowest || (spc[j] == lowest && row4col[j] == NONE) {
                    lowest = spc[j];
                    index = it;
                }
            }
            min_val = lowest;
            if index == NONE || min_val == f64::INFINITY {
                return Err(Error::Infeasible);
            }
            let j = remaining.swap_remove(index);
            sc[j] = true;
            if row4col[j] == NONE {
                break j;
            }
            i = row4col[j];
        };
        u[cur] += min_val;
        for k in 0..nr {
            if sr[k] && k != cur {
                u[k] += min_val - spc[col4row[k]];
            }
        }
        for j in 0..nc {
            if sc[j] {
                v[j] -= min_val - spc[j];
            }
        }
        let mut j = sink;
        loop {
            let i = path[j];
            row4col[j] = i;
            std::mem::swap(&mut col4row[i], &mut j);
            if i == cur {
                break;
            }
        }
    }
    for x in &mut u {
        *x += minval;
    }
    Ok(Solution { col4row, u, v })
}

#[cfg(test)]
mod tests {
    use super::super::native::{self, Start};
    use super::*;

    fn costs(data: &[f64], nr: usize, nc: usize) -> Costs<'_, f64> {
        Costs { data, nr, nc }
    }

    #[test]
    fn constant_matrix_gives_the_identity_and_is_not_unique() {
        let data = vec![1.0; 64];
        let c = costs(&data, 8, 8);
        assert_eq!(
            replay::<f64, false>(c).unwrap().col4row,
            (0..8).collect::<Vec<_>>()
        );
        let fast = native::solve::<f64, false>(c, Start::Cold).unwrap();
        assert!(!is_unique::<f64, false>(c, &fast));
    }

    /// A matrix with a unique optimum (a strictly dominant diagonal) is recognised as such, and
    /// a planted second optimum (two swapped rows of equal cost) is not.
    #[test]
    fn uniqueness_detects_planted_ties() {
        let n = 6;
        let mut data: Vec<f64> = (0..n * n)
            .map(|k| {
                if k / n == k % n {
                    0.0
                } else {
                    1.0 + (k % 7) as f64
                }
            })
            .collect();
        let c = costs(&data, n, n);
        let sol = native::solve::<f64, false>(c, Start::Cold).unwrap();
        assert!(is_unique::<f64, false>(c, &sol));
        // c[0][1] = c[1][0] = 0: swapping rows 0 and 1 is optimal too.
        data[1] = 0.0;
        data[n] = 0.0;
        let c = costs(&data, n, n);
        let sol = native::solve::<f64, false>(c, Start::Cold).unwrap();
        assert!(!is_unique::<f64, false>(c, &sol));
        // Rectangular: row 0 may move to the free column 2 at no cost.
        let data = vec![0.0, 5.0, 0.0, 5.0, 0.0, 9.0];
        let c = costs(&data, 2, 3);
        let sol = native::solve::<f64, false>(c, Start::Cold).unwrap();
        assert!(!is_unique::<f64, false>(c, &sol));
        let data = vec![0.0, 5.0, 1.0, 5.0, 0.0, 9.0];
        let c = costs(&data, 2, 3);
        let sol = native::solve::<f64, false>(c, Start::Cold).unwrap();
        assert!(is_unique::<f64, false>(c, &sol));
    }

    /// The replay is optimal: same total as the native solver on random integer matrices
    /// (many ties), square and rectangular.
    #[test]
    fn replay_is_optimal() {
        let mut state = 12345u64;
        let mut next = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 59) as f64
        };
        for (nr, nc) in [(7, 7), (5, 9), (12, 12), (1, 4)] {
            let data: Vec<f64> = (0..nr * nc).map(|_| next()).collect();
            let c = costs(&data, nr, nc);
            let total = |s: &Solution| -> f64 {
                s.col4row
                    .iter()
                    .enumerate()
                    .map(|(i, &j)| data[i * nc + j])
                    .sum()
            };
            let a = replay::<f64, false>(c).unwrap();
            let b = native::solve::<f64, false>(c, Start::Cold).unwrap();
            assert_eq!(total(&a), total(&b));
        }
    }

    #[test]
    fn replay_reports_infeasible() {
        let inf = f64::INFINITY;
        let data = vec![inf, 1.0, inf, 2.0];
        assert!(matches!(
            replay::<f64, false>(costs(&data, 2, 2)),
            Err(Error::Infeasible)
        ));
    }
}
