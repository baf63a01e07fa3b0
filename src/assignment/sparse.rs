//! The sparse candidate presolve: solve the assignment problem on the `k` most promising
//! entries of every row, then let the exact warm start check the result on the full matrix.
//!
//! 1. **Column reduction values** `v⁰_j = min_i c_ij` (one pass; rows in parallel chunks whose
//!    boundaries depend on the shape only, merged in order, so the result does not depend on the
//!    thread count). The presolve stops here when fewer than a tenth of the rows own a column
//!    minimum (dominant rows, left to the ε-scaling auction of the dense solver).
//! 2. **Candidates**: for every row `i`, the `k` finite entries with the smallest `c_ij − v⁰_j`
//!    (a threshold from block minima, then a partial selection; rows in parallel), and for every
//!    column in fewer than `k / 2` row lists, the `k` entries with the smallest
//!    `c_ij − v⁰_j − u⁰_i` (column blocks in parallel). The
//!    column reduction removes the column means — activation statistics have strong ones — so
//!    that the candidates are the entries an optimal assignment is likely to use; on uniform
//!    random costs the optimum uses only entries of rank `O(log n)` within their rows.
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

use super::kernels::{column_minima, ld, lowered, map_rows};
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

/// The candidate graph in compressed rows: row `i`'s candidates are `col[start[i]..start[i + 1]]`
/// (increasing) with their costs.
struct Graph {
    start: Vec<usize>,
    col: Vec<usize>,
    cost: Vec<f64>,
}

impl Graph {
    #[inline]
    fn row(&self, i: usize) -> impl Iterator<Item = (usize, f64)> + '_ {
        let r = self.start[i]..self.start[i + 1];
        self.col[r.clone()]
            .iter()
            .copied()
            .zip(self.cost[r].iter().copied())
    }
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

/// Columns per task of the column pass.
const COL_BLOCK: usize = 64;

/// The candidate graph: per row, the `k` finite entries with the smallest `c_ij − v0_j`; per
/// column that is in fewer than `k / 2` row lists, the `k` finite entries with the smallest
/// `c_ij − v0_j − u0_i`, where `u0_i = min_l (c_il − v0_l)` (row lists alone often leave some
/// columns in none or few, and the graph without a complete matching).
fn candidates<T: Float, const NEG: bool>(c: Costs<'_, T>, v0: &[f64], k: usize) -> Graph {
    let (nr, nc) = (c.nr, c.nc);
    // Row pass: (u0_i, the row's k columns).
    let rows = map_rows(nr, nc, |i| {
        let keys: Vec<f64> = c
            .row(i)
            .iter()
            .zip(v0)
            .map(|(&x, &vj)| ld::<T, NEG>(x) - vj)
            .collect();
        let u0 = keys
            .iter()
            .fold(f64::INFINITY, |a, &x| if x < a { x } else { a });
        (u0, smallest(&keys, k, i))
    });
    let u0: Vec<f64> = rows.iter().map(|r| r.0).collect();
    stat_phase!("sparse-colpass");
    // Column pass, COL_BLOCK columns per task.
    let kc = k.min(nr);
    // Columns in fewer than `kc / 2` row lists: the ones that may leave the graph without a
    // complete matching (on uniform costs about 2 % of them, on activation statistics more).
    let mut lists: Vec<Vec<usize>> = rows.into_iter().map(|r| r.1).collect();
    let mut count = vec![0usize; nc];
    lists.iter().flatten().for_each(|&j| count[j] += 1);
    let mut needed: Vec<usize> = (0..nc).filter(|&j| count[j] * 2 < kc).collect();
    if needed.len() * 4 > nc {
        // Many: read all columns, in contiguous row segments (cheaper than gathering).
        needed = (0..nc).collect();
    }
    let cols = map_rows(needed.len().div_ceil(COL_BLOCK), nr * COL_BLOCK, |b| {
        let js = &needed[b * COL_BLOCK..((b + 1) * COL_BLOCK).min(needed.len())];
        let w = js.len();
        let vs: Vec<f64> = js.iter().map(|&j| v0[j]).collect();
        let contiguous = js[w - 1] - js[0] == w - 1;
        // The block's keys of row i, `(c_ij − v0_j) − u0_i`, into `xs`.
        let keys = |i: usize, xs: &mut [f64]| {
            let row = c.row(i);
            if contiguous {
                for ((x, &y), &vj) in xs.iter_mut().zip(&row[js[0]..js[0] + w]).zip(&vs) {
                    *x = (ld::<T, NEG>(y) - vj) - u0[i];
                }
            } else {
                for ((x, &j), &vj) in xs.iter_mut().zip(js).zip(&vs) {
                    *x = (ld::<T, NEG>(row[j]) - vj) - u0[i];
                }
            }
        };
        let mut xs = vec![0.0; w];
        // As in `smallest`: per column, the largest of the minima over kc groups of rows
        // bounds its kc-th smallest key; then collect the keys below that bound.
        let height = nr / kc;
        let mut tau = vec![f64::NEG_INFINITY; w];
        let mut gmin = vec![f64::INFINITY; w];
        for g in 0..kc {
            let end = if g + 1 == kc { nr } else { (g + 1) * height };
            gmin.fill(f64::INFINITY);
            for i in g * height..end {
                keys(i, &mut xs);
                for (m, &x) in gmin.iter_mut().zip(&xs) {
                    *m = if x < *m { x } else { *m };
                }
            }
            for (t, &m) in tau.iter_mut().zip(&gmin) {
                *t = if m > *t { m } else { *t };
            }
        }
        let mut found: Vec<Vec<(f64, usize)>> = vec![Vec::new(); w];
        for i in 0..nr {
            keys(i, &mut xs);
            for ((f, &t), &x) in found.iter_mut().zip(&tau).zip(&xs) {
                if x <= t && x < f64::INFINITY {
                    f.push((x, i));
                }
            }
        }
        found
            .into_iter()
            .zip(js)
            .map(|(f, &j)| select(f, kc, j))
            .collect::<Vec<_>>()
    });
    stat_phase!("sparse-graph");
    for (&j, picked) in needed.iter().zip(cols.into_iter().flatten()) {
        for i in picked {
            lists[i].push(j);
        }
    }
    let mut g = Graph {
        start: Vec::with_capacity(nr + 1),
        col: Vec::new(),
        cost: Vec::new(),
    };
    g.start.push(0);
    for (i, mut l) in lists.into_iter().enumerate() {
        l.sort_unstable();
        l.dedup();
        let row = c.row(i);
        g.cost.extend(l.iter().map(|&j| ld::<T, NEG>(row[j])));
        g.col.extend(l);
        g.start.push(g.col.len());
    }
    g
}

/// The positions of the `k` smallest finite keys (fewer when fewer are finite), smallest key
/// first, equal keys in the order of [`select`] with `salt`.
fn smallest(keys: &[f64], k: usize, salt: usize) -> Vec<usize> {
    let m = keys.len();
    let k = k.min(m);
    if k == 0 {
        return Vec::new();
    }
    // The largest of the minima of k disjoint blocks bounds the k-th smallest key.
    let width = m / k;
    let mut tau = f64::NEG_INFINITY;
    for b in 0..k {
        let end = if b + 1 == k { m } else { (b + 1) * width };
        let bmin = keys[b * width..end]
            .iter()
            .fold(f64::INFINITY, |a, &x| if x < a { x } else { a });
        tau = if bmin > tau { bmin } else { tau };
    }
    let buf: Vec<(f64, usize)> = keys
        .iter()
        .enumerate()
        .filter(|&(_, &x)| x <= tau && x < f64::INFINITY)
        .map(|(j, &x)| (x, j))
        .collect();
    select(buf, k, salt)
}

/// The positions of the `k` smallest of `(key, position)` pairs, smallest first; equal keys are
/// ordered by a hash of the position salted with the row or column (`salt`), so that on tied
/// matrices (small integers) the rows do not all pick the same first columns.
fn select(mut buf: Vec<(f64, usize)>, k: usize, salt: usize) -> Vec<usize> {
    let h = |p: usize| ((p ^ salt.rotate_left(29)) as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let order = |a: &(f64, usize), b: &(f64, usize)| a.0.total_cmp(&b.0).then(h(a.1).cmp(&h(b.1)));
    if buf.len() > k {
        buf.select_nth_unstable_by(k - 1, order);
        buf.truncate(k);
    }
    buf.sort_unstable_by(order);
    buf.into_iter().map(|(_, j)| j).collect()
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
    fn smallest_keeps_the_k_smallest_finite_keys_in_order() {
        let keys = [3.0, f64::INFINITY, 1.0, 1.5, 0.5, 7.0, -2.0, 1.25];
        assert_eq!(smallest(&keys, 3, 0), vec![6, 4, 2]);
        assert_eq!(smallest(&keys, 5, 7), vec![6, 4, 2, 7, 3]);
        assert_eq!(smallest(&keys, 20, 1), vec![6, 4, 2, 7, 3, 0, 5]);
        assert!(smallest(&[f64::INFINITY; 4], 2, 0).is_empty());
        // Against a full sort on random keys with many ties: the same keys (the k smallest,
        // in order), distinct positions; ties are broken differently for different salts.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut differs = false;
        for _ in 0..50 {
            let keys: Vec<f64> = (0..97)
                .map(|_| f64::from(rng.random_range(0..20u8)))
                .collect();
            let k = rng.random_range(1..40usize);
            let mut sorted = keys.clone();
            sorted.sort_by(f64::total_cmp);
            let got = smallest(&keys, k, 5);
            let got_keys: Vec<f64> = got.iter().map(|&p| keys[p]).collect();
            assert_eq!(got_keys, sorted[..k]);
            let mut pos = got.clone();
            pos.sort_unstable();
            pos.dedup();
            assert_eq!(pos.len(), k);
            differs |= smallest(&keys, k, 6) != got;
        }
        assert!(differs);
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
}
