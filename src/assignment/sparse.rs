//! The sparse candidate presolve: solve the assignment problem on the `k` most promising
//! entries of every row, then let the exact warm start check the result on the full matrix.
//!
//! 1. **Column reduction values** `v⁰_j = min_i c_ij` (one pass; rows in parallel chunks whose
//!    boundaries depend on the shape only, merged in order, so the result does not depend on the
//!    thread count). The presolve stops here when fewer than a tenth of the rows own a column
//!    minimum (dominant rows, left to the ε-scaling auction of the dense solver).
//! 2. **Candidates** (`candidates.rs`): for every row `i`, the `k` finite entries with the
//!    smallest `c_ij − v⁰_j` (a threshold from block minima, then a partial selection; rows in
//!    parallel), and for every column in fewer than `k / 2` row lists, the `k` entries with the
//!    smallest `c_ij − v⁰_j − u⁰_i` (column blocks in parallel). The column reduction removes
//!    the column means — activation statistics have strong ones — so that the candidates are
//!    the entries an optimal assignment is likely to use; on uniform random costs the optimum
//!    uses only entries of rank `O(log n)` within their rows.
//! 3. **Sparse solve** on those adjacency lists (Jonker and Volgenant's sparse form): the
//!    augmenting row reduction (square problems start from `v = v⁰`, rectangular ones from
//!    `v = 0`), then shortest augmenting paths by Dijkstra's algorithm with a binary heap over
//!    the candidate edges (Crouse's rectangular form; unmatched columns keep `v = 0`). Each step
//!    costs `O(k log n)` instead of a row scan of `n` entries. The search gives up (`None`) when
//!    the candidate graph has no complete matching or when its work exceeds a budget of a few
//!    dense passes.
//!
//! The result — column potentials `v` and a complete matching — is *not* trusted: the caller
//! passes it to the exact warm start of `native.rs`, which sets `u_i = min_j fl(c_ij − v_j)` over
//! the **full** row (a row-parallel `O(r c)` pass: the duality certificate `c_ij − u_i − v_j ≥ 0`
//! for every entry) and keeps a row's pair only where it attains that minimum exactly. Rows whose
//! candidates missed a better entry, or whose pair is off by a rounding, are re-augmented on the
//! dense matrix. So the result is exactly as optimal as a cold solve; the presolve only decides
//! how much work is left.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::candidates::{candidates, Graph};
use super::kernels::{column_minima, lowered};
use super::native::{Costs, NONE};
use crate::float::Float;

/// Candidates per row of [`super::Candidates::Auto`] and [`super::Candidates::Always`].
pub(super) const K: usize = 16;

/// The presolve is skipped when fewer than `rows / DOMINANT_SHARE` rows own a column minimum.
const DOMINANT_SHARE: usize = 10;

/// Bids of the sparse augmenting row reduction, per row.
const ARR_BIDS_PER_ROW: usize = 64;

/// The sparse solve gives up after `r · c / BUDGET_SHARE` relaxations (a relaxation costs
/// about a heap operation, i.e. some dozen dense entries, so the budget is a few dense passes).
/// The families of `BENCHMARKS.md` use at most a fifth of it (activation statistics at
/// `n = 4096`).
const BUDGET_SHARE: usize = 2;

/// Column potentials and a complete matching of the candidate graph (internal frame).
pub(super) struct Presolved {
    pub v: Vec<f64>,
    pub col4row: Vec<usize>,
}

/// Solve the candidate graph of `c` with `k` candidates per row; `None` when it has no complete
/// matching, when a column has no finite entry, or when the search exceeds its budget.
pub(super) fn presolve<T: Float, const NEG: bool>(c: Costs<'_, T>, k: usize) -> Option<Presolved> {
    let (nr, nc) = (c.nr, c.nc);
    let k = k.clamp(1, nc.max(1));
    let (v0, arg) = column_minima::<T, NEG>(c);
    if v0.iter().any(|x| x.is_infinite()) {
        return None;
    }
    // A few dominant rows owning (nearly) every column minimum — activation statistics of
    // biased units — make the candidate lists of all rows crowd into the same columns; the
    // ε-scaling auction of the dense solver handles those matrices.
    let mut owner = vec![false; nr];
    arg.iter().for_each(|&i| owner[i] = true);
    if owner.iter().filter(|&&o| o).count() * DOMINANT_SHARE < nr {
        return None;
    }
    stat_phase!("sparse-candidates");
    let g = candidates::<T, NEG>(c, &v0, k);
    stat_phase!("sparse-solve");
    let mut s = Sparse {
        u: vec![0.0; nr],
        v: if nr == nc { v0 } else { vec![0.0; nc] },
        col4row: vec![NONE; nr],
        row4col: vec![NONE; nc],
    };
    let free = s.row_reduction(&g)?;
    let mut budget = (nr * nc / BUDGET_SHARE).max(1 << 16);
    let mut sap = HeapSap::new(nc);
    for r in free {
        sap.augment(&g, &mut s, r, &mut budget)?;
    }
    Some(Presolved {
        v: s.v,
        col4row: s.col4row,
    })
}

/// Potentials and partial matching of the sparse solve (same invariants as `native::State`,
/// on the candidate edges only).
struct Sparse {
    u: Vec<f64>,
    v: Vec<f64>,
    col4row: Vec<usize>,
    row4col: Vec<usize>,
}

impl Sparse {
    /// JV's augmenting row reduction on the candidate lists (an auction with zero increment,
    /// at most [`ARR_BIDS_PER_ROW`] bids per row, stopped when a pass frees as many rows as it
    /// matched). Sets `u` of matched rows; returns the free rows, or `None` for a row without
    /// candidates.
    fn row_reduction(&mut self, g: &Graph) -> Option<Vec<usize>> {
        let n = self.u.len();
        let mut free: Vec<usize> = (0..n).collect();
        let mut bids = 0usize;
        while !free.is_empty() && bids < ARR_BIDS_PER_ROW * n {
            let before = free.len();
            let mut next = Vec::new();
            let mut q = 0;
            while q < free.len() {
                let i = free[q];
                q += 1;
                bids += 1;
                let (mut v1, mut j1, mut x1) = (f64::INFINITY, NONE, 0.0);
                let (mut v2, mut j2) = (f64::INFINITY, NONE);
                for (j, x) in g.row(i) {
                    let r = x - self.v[j];
                    if r < v1 {
                        (v2, j2, v1, j1, x1) = (v1, j1, r, j, x);
                    } else if r < v2 {
                        (v2, j2) = (r, j);
                    }
                }
                if j1 == NONE {
                    return None;
                }
                let (mut j, mut lowers) = (j1, false);
                if v2.is_finite() {
                    let nv = lowered(x1, self.v[j1], v2);
                    if nv < self.v[j1] {
                        self.v[j1] = nv;
                        lowers = true;
                    } else if self.row4col[j1] != NONE && v2 == v1 {
                        j = j2;
                    }
                }
                let i0 = self.row4col[j];
                if i0 != NONE {
                    self.col4row[i0] = NONE;
                    if lowers {
                        // The displaced row bids next, at once (JV's rule).
                        q -= 1;
                        free[q] = i0;
                    } else {
                        next.push(i0);
                    }
                }
                self.col4row[i] = j;
                self.row4col[j] = i;
                if bids >= ARR_BIDS_PER_ROW * n {
                    next.extend_from_slice(&free[q..]);
                    break;
                }
            }
            free = next;
            if free.len() >= before {
                break;
            }
        }
        for i in 0..n {
            let j = self.col4row[i];
            self.u[i] = if j == NONE {
                0.0
            } else {
                g.row(i).find(|&(q, _)| q == j).map_or(0.0, |(_, x)| x) - self.v[j]
            };
        }
        Some(free)
    }
}

/// A heap entry: tentative distance, whether the column is matched (unmatched first among
/// equal distances, SciPy's rule), the column.
#[derive(Clone, Copy, PartialEq)]
struct Item(f64, bool, usize);

impl Eq for Item {}

impl Ord for Item {
    fn cmp(&self, o: &Self) -> Ordering {
        // Reversed: `BinaryHeap` is a max-heap.
        o.0.total_cmp(&self.0)
            .then(o.1.cmp(&self.1))
            .then(o.2.cmp(&self.2))
    }
}

impl PartialOrd for Item {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

/// Scratch space of the heap-based shortest augmenting path search.
struct HeapSap {
    dist: Vec<f64>,
    pred: Vec<usize>,
    scanned: Vec<bool>,
    touched: Vec<usize>,
    heap: BinaryHeap<Item>,
    /// Scanned columns with their row (at scan time) and distance.
    sc: Vec<(usize, usize, f64)>,
}

impl HeapSap {
    fn new(nc: usize) -> Self {
        Self {
            dist: vec![f64::INFINITY; nc],
            pred: vec![NONE; nc],
            scanned: vec![false; nc],
            touched: Vec::new(),
            heap: BinaryHeap::new(),
            sc: Vec::new(),
        }
    }

    /// Augment along a shortest path of candidate edges from the free row `r0` (Crouse 2016,
    /// with Dijkstra's heap); `None` when no unmatched column is reachable or the budget is
    /// spent.
    fn augment(&mut self, g: &Graph, s: &mut Sparse, r0: usize, budget: &mut usize) -> Option<()> {
        for &j in &self.touched {
            self.dist[j] = f64::INFINITY;
            self.scanned[j] = false;
        }
        self.touched.clear();
        self.heap.clear();
        self.sc.clear();
        let (mut i, mut mu) = (r0, 0.0);
        let sink = loop {
            let h = mu - s.u[i];
            for (j, x) in g.row(i) {
                if self.scanned[j] {
                    continue;
                }
                let d = (x - s.v[j]) + h;
                if d < self.dist[j] {
                    if self.dist[j] == f64::INFINITY {
                        self.touched.push(j);
                    }
                    self.dist[j] = d;
                    self.pred[j] = i;
                    self.heap.push(Item(d, s.row4col[j] != NONE, j));
                }
            }
            *budget = budget.checked_sub(g.start[i + 1] - g.start[i] + 1)?;
            let j = loop {
                let Item(d, _, j) = self.heap.pop()?;
                if !self.scanned[j] && d == self.dist[j] {
                    break j;
                }
            };
            mu = self.dist[j];
            if s.row4col[j] == NONE {
                break j;
            }
            self.scanned[j] = true;
            self.sc.push((j, s.row4col[j], mu));
            i = s.row4col[j];
        };
        let mut j = sink;
        loop {
            let i = self.pred[j];
            s.row4col[j] = i;
            let prev = std::mem::replace(&mut s.col4row[i], j);
            if i == r0 {
                break;
            }
            j = prev;
        }
        s.u[r0] += mu;
        for &(j, i, dj) in &self.sc {
            let delta = mu - dj;
            s.u[i] += delta;
            s.v[j] -= delta;
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assignment::native::{self, Start};
    use rand::{Rng, SeedableRng};

    fn uniform(n: usize, m: usize, seed: u64) -> Vec<f64> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n * m).map(|_| rng.random::<f64>()).collect()
    }

    fn total(data: &[f64], nc: usize, col4row: &[usize]) -> f64 {
        col4row
            .iter()
            .enumerate()
            .map(|(i, &j)| data[i * nc + j])
            .sum()
    }

    /// The presolve followed by the exact warm start, as `prepare.rs` runs them; also whether
    /// the candidate optimum was already optimal on the full matrix.
    fn solve(data: &[f64], nr: usize, nc: usize, k: usize) -> (Option<f64>, native::Solution) {
        let c = Costs { data, nr, nc };
        let pre = presolve::<f64, false>(c, k);
        let sparse_total = pre.as_ref().map(|p| total(data, nc, &p.col4row));
        let start = match &pre {
            Some(p) => Start::Warm {
                v: &p.v,
                col4row: Some(&p.col4row),
            },
            None => Start::Cold,
        };
        (sparse_total, native::solve::<f64, false>(c, start).unwrap())
    }

    #[test]
    fn uniform_costs_need_no_repair() {
        // On uniform costs the optimum uses only small entries: 16 candidates per row hold it.
        let (n, k) = (400, 16);
        let data = uniform(n, n, 1);
        let (sparse, sol) = solve(&data, n, n, k);
        let cold = native::solve::<f64, false>(
            Costs {
                data: &data,
                nr: n,
                nc: n,
            },
            Start::Cold,
        )
        .unwrap();
        let want = total(&data, n, &cold.col4row);
        assert!((sparse.unwrap() - want).abs() <= 1e-12 * n as f64);
        assert!((total(&data, n, &sol.col4row) - want).abs() <= 1e-12 * n as f64);
    }

    #[test]
    fn short_candidate_lists_miss_the_optimum_and_the_certificate_repairs_it() {
        // With two or three candidates per row (and column) the candidate optimum is often
        // worse than the true one: the certificate check must find the violations and the
        // dense phase must repair them. Count that this really happened.
        let mut repaired = 0;
        for seed in 0..20u64 {
            let (nr, nc) = if seed % 3 == 0 { (60, 90) } else { (80, 80) };
            let data = uniform(nr, nc, seed);
            let k = 2 + (seed % 2) as usize;
            let (sparse, sol) = solve(&data, nr, nc, k);
            let cold = native::solve::<f64, false>(
                Costs {
                    data: &data,
                    nr,
                    nc,
                },
                Start::Cold,
            )
            .unwrap();
            let want = total(&data, nc, &cold.col4row);
            let got = total(&data, nc, &sol.col4row);
            assert!((got - want).abs() <= 1e-12 * nr as f64, "seed {seed}");
            if sparse.is_some_and(|s| s > want + 1e-9) {
                repaired += 1;
            }
            // The dual certificate of the final solution holds on every entry.
            for i in 0..nr {
                for j in 0..nc {
                    assert!(data[i * nc + j] - sol.u[i] - sol.v[j] >= -1e-12);
                }
            }
        }
        assert!(repaired >= 5, "only {repaired} repaired");
    }

    #[test]
    fn graphs_without_a_complete_matching_give_up() {
        let n = 50;
        let pre = |data: &[f64]| presolve::<f64, false>(Costs { data, nr: n, nc: n }, 4);
        // Rows 0–2 have finite entries in columns 0 and 1 only: no complete matching exists,
        // in the candidate graph or at all (random entries spread the column minima over
        // many rows, so the dominance test does not stop the presolve first).
        let mut data = uniform(n, n, 4);
        for (q, x) in data.iter_mut().enumerate() {
            if (q / n < 3) != (q % n < 2) {
                *x = f64::INFINITY;
            }
        }
        assert!(pre(&data).is_none());
        // A few rows owning every column minimum (here row 0 of a constant matrix, the first
        // to attain each): skipped before the candidate pass.
        assert!(pre(&vec![1.0; n * n]).is_none());
    }

    #[test]
    fn column_minima_match_a_serial_pass() {
        use crate::assignment::kernels::column_minima;
        let (nr, nc) = (300, 257);
        let data: Vec<f64> = uniform(nr, nc, 9)
            .iter()
            .map(|x| (x * 8.0).floor())
            .collect();
        let (m, arg) = column_minima::<f64, true>(Costs {
            data: &data,
            nr,
            nc,
        });
        for j in 0..nc {
            let col = (0..nr).map(|i| -data[i * nc + j]);
            let best = col.clone().fold(f64::INFINITY, f64::min);
            assert_eq!(m[j], best);
            assert_eq!(arg[j], col.clone().position(|x| x == best).unwrap());
        }
    }

    /// The minimum of `Σ_i c[i, σ(i)]` over all permutations (`n ≤ 7`).
    fn brute_force(data: &[f64], n: usize) -> f64 {
        fn rec(k: usize, cols: &mut [usize], data: &[f64], n: usize, acc: f64) -> f64 {
            if k == n {
                return acc;
            }
            (k..n)
                .map(|q| {
                    cols.swap(k, q);
                    let r = rec(k + 1, cols, data, n, acc + data[k * n + cols[k]]);
                    cols.swap(k, q);
                    r
                })
                .fold(f64::INFINITY, f64::min)
        }
        rec(0, &mut (0..n).collect::<Vec<_>>(), data, n, 0.0)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]
        /// One or two candidates per row: the candidate optimum is often wrong or missing, and
        /// the certificate check with the dense repair (or the cold fallback) must still reach
        /// the brute-force optimum, on ties and floats alike.
        #[test]
        fn short_lists_still_reach_the_optimum(
            seed in 0u64..1_000_000, n in 2usize..7, k in 1usize..3, ints: bool,
        ) {
            let data: Vec<f64> = uniform(n, n, seed)
                .into_iter()
                .map(|x| if ints { (x * 4.0).floor() } else { x })
                .collect();
            let (_, sol) = solve(&data, n, n, k);
            // Entries in [0, 1): two optimal sums in another order differ by ulps at most.
            let (got, want) = (total(&data, n, &sol.col4row), brute_force(&data, n));
            proptest::prop_assert!((got - want).abs() <= 1e-12, "{} vs {}", got, want);
        }
    }
}
