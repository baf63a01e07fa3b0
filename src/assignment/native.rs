//! The native solver: Jonker–Volgenant initialisation followed by Dijkstra-like shortest
//! augmenting paths on reduced costs (Crouse 2016, in `sap.rs`), over a dense row-major matrix
//! with `rows <= cols` whose entries are finite or `+∞` (a forbidden edge). When those paths
//! are long, an ε-scaling auction (`auction.rs`) replaces them and its potentials go through
//! the exact warm start.
//!
//! Invariants, maintained *exactly* in floating point by construction (not up to a tolerance):
//! for every matched row `i` (column `σ(i)`) and every column `k`,
//! `fl(c_ik − v_k) ≥ u_i = fl(c_iσ(i) − v_σ(i))`; every unmatched column has `v_j = 0` when
//! `rows < cols` (the complementary slackness condition of the rectangular dual, whose column
//! potentials must be `≤ 0`). `fl` is monotone, so lowering a column potential never breaks
//! the inequality of another row. The shortest-path phase starts from these invariants, so its
//! result is optimal up to the rounding of the path lengths themselves (as in SciPy).

use super::kernels::{column_minima, ld, lowered, map_rows, two_smallest};
use super::sap::Sap;
use crate::error::{Error, Result};
use crate::float::Float;

/// Cap on augmenting-row-reduction bids, per row (see `augmenting_row_reduction`).
const ARR_MAX_BIDS_PER_ROW: usize = 64;

/// Minimal fraction of the free rows that two windows of `nr` bids must resolve.
const ARR_MIN_PROGRESS: f64 = 0.005;

/// A warm start runs the augmenting row reduction when more than `nr / WARM_ARR_MIN_FREE` rows
/// are left free.
const WARM_ARR_MIN_FREE: usize = 50;

/// A cold square solve switches to the ε-scaling auction when the shortest paths still to do
/// are expected to scan more than `AUCTION_MIN_WORK · nr` rows ...
const AUCTION_MIN_WORK: usize = 64;

/// ... judged after this many augmentations.
const AUCTION_PROBE: usize = 8;

/// Marker for "no row" / "no column".
pub(super) const NONE: usize = usize::MAX;

/// A borrowed dense row-major matrix with `nr <= nc`; entries are read as `±x` (`NEG`).
#[derive(Clone, Copy)]
pub(super) struct Costs<'a, T> {
    pub data: &'a [T],
    pub nr: usize,
    pub nc: usize,
}

impl<T: Float> Costs<'_, T> {
    #[inline(always)]
    pub(super) fn row(&self, i: usize) -> &[T] {
        &self.data[i * self.nc..(i + 1) * self.nc]
    }
}

/// How to initialise the duals and the partial matching.
pub(super) enum Start<'a> {
    /// Column reduction with reduction transfer (square only), then augmenting row reduction.
    Cold,
    /// Previous column potentials (in the internal, minimising frame) and optionally the
    /// previous row → column map, used to seed the partial matching where it is still tight.
    Warm {
        v: &'a [f64],
        col4row: Option<&'a [usize]>,
    },
}

/// The optimal matching and its dual certificate (internal frame).
pub(super) struct Solution {
    pub col4row: Vec<usize>,
    pub u: Vec<f64>,
    pub v: Vec<f64>,
}

/// Solve the LAP `min Σ_i c[i, σ(i)]` over injections `σ` (`nr <= nc`).
///
/// # Errors
/// [`Error::Infeasible`] when no assignment avoids the `+∞` entries.
pub(super) fn solve<T: Float, const NEG: bool>(
    c: Costs<'_, T>,
    start: Start<'_>,
) -> Result<Solution> {
    let (nr, nc) = (c.nr, c.nc);
    debug_assert!(nr <= nc && c.data.len() == nr * nc);
    let mut st = State {
        u: vec![0.0; nr],
        v: vec![0.0; nc],
        col4row: vec![NONE; nr],
        row4col: vec![NONE; nc],
    };
    if nr == 0 {
        return Ok(st.into_solution());
    }
    stat_phase!("init");
    let (free, square_cold) = match start {
        Start::Cold => (st.cold::<T, NEG>(c)?, nr == nc),
        Start::Warm { v, col4row } => (st.warm_start::<T, NEG>(c, v, col4row)?, false),
    };
    stat_phase!("sap");
    stat!(s => s.free_after_init += free.len());
    st.augment_all::<T, NEG>(c, free, square_cold)?;
    #[cfg(feature = "lap-stats")]
    super::stats::report(nr);
    Ok(st.into_solution())
}

/// Potentials and partial matching (internal, minimising frame).
pub(super) struct State {
    pub(super) u: Vec<f64>,
    pub(super) v: Vec<f64>,
    pub(super) col4row: Vec<usize>,
    pub(super) row4col: Vec<usize>,
}

impl State {
    fn into_solution(self) -> Solution {
        Solution {
            col4row: self.col4row,
            u: self.u,
            v: self.v,
        }
    }

    /// The cold start: JV column reduction (square problems; dropped when it leaves more than
    /// 90 % of the rows free) and the augmenting row reduction. Returns the free rows.
    fn cold<T: Float, const NEG: bool>(&mut self, c: Costs<'_, T>) -> Result<Vec<usize>> {
        let (st, nr) = (self, c.nr);
        let square = nr == c.nc;
        let mut free = if square {
            st.column_reduction::<T, NEG>(c)?
        } else {
            (0..nr).collect()
        };
        if free.len() * 10 > nr * 9 {
            // A few rows own (nearly) all column minima — e.g. activation statistics
            // with biased units, where some rows dominate every column. The reduced
            // potentials then mislead the search (measured: ~1.5× more shortest-path
            // steps than from zero), so start the row reduction from scratch.
            st.v.fill(0.0);
            st.col4row.fill(NONE);
            st.row4col.fill(NONE);
            free = (0..nr).collect();
        }
        stat_phase!("arr");
        if !free.is_empty() {
            free = st.augmenting_row_reduction::<T, NEG>(c, free, square)?;
        }
        st.set_row_potentials::<T, NEG>(c);
        Ok(free)
    }

    /// Shortest augmenting paths from the `free` rows. With `may_auction` (a cold square
    /// start), the ε-scaling auction replaces them when the paths are long: after
    /// [`AUCTION_PROBE`] augmentations, as soon as the remaining rows times the mean length of
    /// the last [`AUCTION_PROBE`] searches exceed `AUCTION_MIN_WORK · nr` row scans (the auction needs 30–70 bids
    /// per row on the matrices of `BENCHMARKS.md`; each is a row scan). Its ε-optimal
    /// potentials and matching then go through the exact warm start, and the paths after it
    /// are short. Returns whether the auction ran.
    fn augment_all<T: Float, const NEG: bool>(
        &mut self,
        c: Costs<'_, T>,
        free: Vec<usize>,
        may_auction: bool,
    ) -> Result<bool> {
        let mut sap = Sap::new(c.nc, &self.row4col);
        // Lengths of the last AUCTION_PROBE searches (they grow as the matching fills up).
        let mut recent = [0usize; AUCTION_PROBE];
        let mut may_auction = may_auction;
        for (k, &r) in free.iter().enumerate() {
            recent[k % AUCTION_PROBE] = sap.augment::<T, NEG>(c, self, r)?;
            let left = free.len() - k - 1;
            if may_auction
                && k + 1 >= AUCTION_PROBE
                && left.saturating_mul(recent.iter().sum())
                    > AUCTION_MIN_WORK * c.nr * AUCTION_PROBE
            {
                stat_phase!("auction");
                let Some(a) = super::auction::auction::<T, NEG>(c, &self.v) else {
                    may_auction = false;
                    continue;
                };
                stat_phase!("warm");
                let rest = self.warm_start::<T, NEG>(c, &a.v, Some(&a.col4row))?;
                stat_phase!("sap-after-auction");
                let mut sap = Sap::new(c.nc, &self.row4col);
                for r in rest {
                    sap.augment::<T, NEG>(c, self, r)?;
                }
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// JV column reduction with reduction transfer (square problems). Returns the free rows.
    fn column_reduction<T: Float, const NEG: bool>(
        &mut self,
        c: Costs<'_, T>,
    ) -> Result<Vec<usize>> {
        let n = c.nc;
        // Column minima v_j = min_i c_ij and their first rows y_j (row-parallel chunks merged
        // in order: the same bits for any thread count).
        let (v, y) = column_minima::<T, NEG>(c);
        self.v = v;
        self.row4col = y;
        let (v, y) = (&self.v, &mut self.row4col);
        if v.iter().any(|x| x.is_infinite()) {
            return Err(Error::Infeasible); // a column of forbidden entries only
        }
        // Each row keeps the last column it minimises; it is "unique" if it minimises only one.
        let mut count = vec![0u32; n];
        for j in (0..n).rev() {
            let i = y[j];
            count[i] += 1;
            if self.col4row[i] == NONE {
                self.col4row[i] = j;
            } else {
                y[j] = NONE;
            }
        }
        let mut free = Vec::new();
        for (i, &cnt) in count.iter().enumerate() {
            let j = self.col4row[i];
            if j == NONE {
                free.push(i);
            } else if cnt == 1 {
                // Reduction transfer: lower v_j so that row i's second-best column ties with j.
                let row = c.row(i);
                let (v1, j1, v2, _) = two_smallest::<T, NEG>(row, &self.v);
                let min = if j1 == j { v2 } else { v1 };
                if min.is_finite() {
                    self.v[j] = lowered(ld::<T, NEG>(row[j]), self.v[j], min);
                }
            }
        }
        Ok(free)
    }

    /// JV augmenting row reduction: every free row bids for its best column, lowering that
    /// column's potential until its second-best column ties (an auction with zero increment),
    /// and the row it displaces bids next. Returns the rows still free.
    ///
    /// Bids cost a row pass each, like a shortest-path step, and on matrices with many near-ties
    /// the auction degenerates into long price wars; so the number of bids is capped at
    /// [`ARR_MAX_BIDS_PER_ROW`]` · nr`, and the phase also stops when, over the last two windows
    /// of `nr` bids, fewer than [`ARR_MIN_PROGRESS`] of the free rows were resolved. With
    /// `bail_out` it also stops after the first window when more than half of the rows are
    /// still free: the price war of dominant rows, which the ε-scaling auction then resolves
    /// (the matrices of `BENCHMARKS.md` leave 10–35 % free there, or more than 90 %).
    fn augmenting_row_reduction<T: Float, const NEG: bool>(
        &mut self,
        c: Costs<'_, T>,
        mut free: Vec<usize>,
        bail_out: bool,
    ) -> Result<Vec<usize>> {
        let n = c.nr;
        let max_bids = ARR_MAX_BIDS_PER_ROW * n;
        let mut bids = 0usize;
        let mut history = [free.len(); 2]; // free rows one and two windows ago
        loop {
            let n_free = free.len();
            let (mut current, mut new_free) = (0, 0);
            let mut stop = false;
            while current < n_free {
                bids += 1;
                stat!(s => s.bids += 1);
                let i = free[current];
                current += 1;
                let (v1, j1, v2, j2) = two_smallest::<T, NEG>(c.row(i), &self.v);
                if v1 == f64::INFINITY {
                    return Err(Error::Infeasible); // a row of forbidden entries only
                }
                let (mut j, mut i0, mut lowers) = (j1, self.row4col[j1], false);
                if v2.is_finite() {
                    let new_v = lowered(ld::<T, NEG>(c.row(i)[j1]), self.v[j1], v2);
                    if new_v < self.v[j1] {
                        self.v[j1] = new_v;
                        lowers = true;
                    } else if i0 != NONE && v2 == v1 {
                        j = j2;
                        i0 = self.row4col[j2];
                    }
                }
                if i0 != NONE {
                    self.col4row[i0] = NONE;
                    if lowers {
                        current -= 1;
                        free[current] = i0;
                    } else {
                        free[new_free] = i0;
                        new_free += 1;
                    }
                }
                self.col4row[i] = j;
                self.row4col[j] = i;
                if bids.is_multiple_of(n) {
                    let f_now = n_free - current + new_free;
                    #[allow(clippy::cast_precision_loss)]
                    let slow = ((history[1] - f_now.min(history[1])) as f64)
                        < ARR_MIN_PROGRESS * history[1] as f64;
                    history = [f_now, history[0]];
                    stat!(s => s.arr_windows.push(f_now));
                    if slow || bids >= max_bids || (bail_out && bids == n && f_now * 2 > n) {
                        stop = true;
                        break;
                    }
                }
            }
            // Rows not yet processed in this pass stay free, with the displaced ones.
            free.copy_within(current..n_free, new_free);
            free.truncate(new_free + n_free - current);
            if stop || free.is_empty() || free.len() == n_free {
                return Ok(free);
            }
        }
    }

    /// The warm start from column potentials `v` (and a previous matching): [`Self::warm`],
    /// then the augmenting row reduction when many rows are left free. Returns the free rows.
    fn warm_start<T: Float, const NEG: bool>(
        &mut self,
        c: Costs<'_, T>,
        v: &[f64],
        col4row: Option<&[usize]>,
    ) -> Result<Vec<usize>> {
        let free = self.warm::<T, NEG>(c, v, col4row)?;
        stat_phase!("warm-arr");
        // A changed matrix can leave many rows untight (weight matching's later sweeps
        // leave 12–35 % of 2048 rows free); bids resolve most of them for a row pass each,
        // where a shortest-path search would take many (measured: −23 % LAP time there).
        if free.len() * WARM_ARR_MIN_FREE > c.nr {
            let free = self.augmenting_row_reduction::<T, NEG>(c, free, false)?;
            self.set_row_potentials::<T, NEG>(c);
            Ok(free)
        } else {
            Ok(free)
        }
    }

    /// `u_i = fl(c_iσ(i) − v_σ(i))` for matched rows, `0` for free ones.
    fn set_row_potentials<T: Float, const NEG: bool>(&mut self, c: Costs<'_, T>) {
        for i in 0..c.nr {
            let j = self.col4row[i];
            self.u[i] = if j == NONE {
                0.0
            } else {
                ld::<T, NEG>(c.row(i)[j]) - self.v[j]
            };
        }
    }

    /// Warm start from column potentials: `u_i = min_k fl(c_ik − v_k)`; keep the previous
    /// column of row `i` (else its arg-min) as matched when it attains that minimum exactly and
    /// no earlier row took it. For `nr < nc` the potentials are shifted to `max v = 0` and every
    /// column left unmatched is reset to `0` (repeating while that unmatches rows).
    fn warm<T: Float, const NEG: bool>(
        &mut self,
        c: Costs<'_, T>,
        v0: &[f64],
        prev: Option<&[usize]>,
    ) -> Result<Vec<usize>> {
        self.v.copy_from_slice(v0);
        if c.nr < c.nc {
            let top = self.v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            self.v.iter_mut().for_each(|x| *x -= top);
        }
        for round in 0.. {
            self.col4row.fill(NONE);
            self.row4col.fill(NONE);
            // Per row, independently (in parallel with `rayon`): the minimal reduced cost, its
            // first column, and whether the previous column attains it exactly.
            let v = &self.v;
            let scan = |i: usize| {
                let row = c.row(i);
                let (best, arg, _, _) = two_smallest::<T, NEG>(row, v);
                let p = prev.map_or(NONE, |p| p[i]);
                let keep = p < c.nc && ld::<T, NEG>(row[p]) - v[p] == best;
                (best, arg, if keep { p } else { NONE })
            };
            let rows = map_rows(c.nr, c.nc, scan);
            for (i, (best, arg, p)) in rows.into_iter().enumerate() {
                if best == f64::INFINITY {
                    return Err(Error::Infeasible);
                }
                self.u[i] = best;
                let j = if p != NONE && self.row4col[p] == NONE {
                    p
                } else {
                    arg
                };
                if self.row4col[j] == NONE {
                    self.row4col[j] = i;
                    self.col4row[i] = j;
                }
            }
            if c.nr == c.nc {
                break;
            }
            let mut changed = false;
            for j in 0..c.nc {
                if self.row4col[j] == NONE && self.v[j] != 0.0 {
                    // After a few rounds give up the matching: all v = 0 is always consistent.
                    self.v[j] = 0.0;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
            if round >= 3 {
                self.v.fill(0.0);
            }
        }
        Ok((0..c.nr).filter(|&i| self.col4row[i] == NONE).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn random(n: usize, m: usize, seed: u64, ints: bool) -> Vec<f64> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n * m)
            .map(|_| {
                if ints {
                    f64::from(rng.random_range(0..5u8))
                } else {
                    rng.random::<f64>() * 10.0 - 3.0
                }
            })
            .collect()
    }

    /// The exact invariant the shortest-path phase relies on, after the JV initialisation.
    #[test]
    fn initialisation_is_exactly_tight_and_feasible() {
        for seed in 0..40 {
            let (n, m) = if seed % 2 == 0 { (37, 37) } else { (30, 45) };
            let data = random(n, m, seed, seed % 4 < 2);
            let c = Costs {
                data: &data,
                nr: n,
                nc: m,
            };
            let mut st = State {
                u: vec![0.0; n],
                v: vec![0.0; m],
                col4row: vec![NONE; n],
                row4col: vec![NONE; m],
            };
            let mut free = if n == m {
                st.column_reduction::<f64, false>(c).unwrap()
            } else {
                (0..n).collect()
            };
            free = st
                .augmenting_row_reduction::<f64, false>(c, free, false)
                .unwrap();
            st.set_row_potentials::<f64, false>(c);
            for i in 0..n {
                let j = st.col4row[i];
                if j == NONE {
                    assert!(free.contains(&i));
                    continue;
                }
                assert_eq!(st.row4col[j], i);
                assert_eq!(st.u[i], data[i * m + j] - st.v[j]);
                for k in 0..m {
                    assert!(
                        data[i * m + k] - st.v[k] >= st.u[i],
                        "seed {seed} row {i} col {k}"
                    );
                }
            }
            for j in 0..m {
                if n < m && st.row4col[j] == NONE {
                    assert_eq!(st.v[j], 0.0, "unmatched columns keep v = 0");
                }
            }
        }
    }

    fn state(n: usize, m: usize) -> State {
        State {
            u: vec![0.0; n],
            v: vec![0.0; m],
            col4row: vec![NONE; n],
            row4col: vec![NONE; m],
        }
    }

    /// The minimum of `Σ_i c[i, σ(i)]` over all permutations (brute force, `n ≤ 8`).
    fn brute_force(data: &[f64], n: usize) -> f64 {
        fn rec(k: usize, cols: &mut [usize], data: &[f64], n: usize, acc: f64) -> f64 {
            if k == n {
                return acc;
            }
            let mut best = f64::INFINITY;
            for q in k..n {
                cols.swap(k, q);
                best = best.min(rec(k + 1, cols, data, n, acc + data[k * n + cols[k]]));
                cols.swap(k, q);
            }
            best
        }
        rec(0, &mut (0..n).collect::<Vec<_>>(), data, n, 0.0)
    }

    /// The auction path of `cold` forced on any square matrix: auction from zero potentials,
    /// exact warm start, shortest augmenting paths.
    fn solve_via_auction(data: &[f64], n: usize) -> Result<Solution> {
        let c = Costs { data, nr: n, nc: n };
        let mut st = state(n, n);
        let free = match super::super::auction::auction::<f64, false>(c, &st.v) {
            Some(a) => st.warm_start::<f64, false>(c, &a.v, Some(&a.col4row))?,
            None => st.cold::<f64, false>(c)?,
        };
        let mut sap = Sap::new(n, &st.row4col);
        for r in free {
            sap.augment::<f64, false>(c, &mut st, r)?;
        }
        Ok(st.into_solution())
    }

    #[test]
    fn long_paths_switch_to_the_auction_on_dominant_rows_only() {
        // (total, whether the auction ran) of a cold solve, maximising when `neg`.
        fn run<const NEG: bool>(data: &[f64], n: usize, may_auction: bool) -> (f64, bool) {
            let c = Costs { data, nr: n, nc: n };
            let mut st = state(n, n);
            let free = st.cold::<f64, NEG>(c).unwrap();
            let ran = st.augment_all::<f64, NEG>(c, free, may_auction).unwrap();
            let total = (0..n).map(|i| data[i * n + st.col4row[i]]).sum();
            (total, ran)
        }
        for seed in 0..3 {
            for n in [300usize, 600] {
                // Rank one, m_i w_j (to be maximised): the optimum sorts both sides, and
                // every augmenting path from the row reduction's start is long.
                // (`random` draws from [-3, 7); the factors are made positive.)
                let mw: Vec<f64> = random(2, n, seed + 100, false)
                    .iter()
                    .map(|x| 0.1 + (x + 3.0) / 10.0)
                    .collect();
                let data: Vec<f64> = (0..n * n).map(|k| mw[k / n] * mw[n + k % n]).collect();
                let (total, ran) = run::<true>(&data, n, true);
                assert!(ran, "rank one, seed {seed}, n {n}");
                let (want, _) = run::<true>(&data, n, false);
                assert!(
                    (total - want).abs() <= 1e-12 * want.abs(),
                    "{total} vs {want}"
                );
                let uniform = random(n, n, seed, false);
                assert!(
                    !run::<false>(&uniform, n, true).1,
                    "uniform, seed {seed}, n {n}"
                );
                // Small integers: many free rows after the row reduction, but paths of one
                // step (free columns at distance 0) — no auction.
                let ints = random(n, n, seed, true);
                assert!(
                    !run::<false>(&ints, n, true).1,
                    "integers, seed {seed}, n {n}"
                );
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]
        /// Whatever the auction leaves, the warm start and the paths after it reach the
        /// optimum: brute force on small matrices with ties, negative entries and forbidden
        /// (`+∞`) pairs, with the exact tightness and feasibility of the returned duals.
        #[test]
        fn the_auction_path_is_exact(seed in 0u64..1_000_000, n in 1usize..8, kind in 0u8..4) {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let data: Vec<f64> = match kind {
                0 => random(n, n, seed, true),
                1 => random(n, n, seed, false),
                2 => super::super::auction::tests::dominant(n, seed).iter().map(|x| -x).collect(),
                _ => (0..n * n)
                    .map(|k| if k % n != k / n && rng.random::<u8>() % 3 == 0 {
                        f64::INFINITY
                    } else {
                        f64::from(rng.random_range(0..4u8))
                    })
                    .collect(),
            };
            let sol = solve_via_auction(&data, n).unwrap();
            let total: f64 = (0..n).map(|i| data[i * n + sol.col4row[i]]).sum();
            proptest::prop_assert_eq!(total, brute_force(&data, n));
            for i in 0..n {
                let j = sol.col4row[i];
                proptest::prop_assert!((data[i * n + j] - sol.u[i] - sol.v[j]).abs() <= 1e-12);
                for k in 0..n {
                    proptest::prop_assert!(data[i * n + k] - sol.u[i] - sol.v[k] >= -1e-12);
                }
            }
        }
    }
}
