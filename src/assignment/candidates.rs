//! The candidate graph of the sparse presolve (`sparse.rs`): for every row, the `k` entries with
//! the smallest `c_ij − v⁰_j` (`v⁰` the column minima), and for the columns that few rows picked,
//! the `k` entries with the smallest `c_ij − v⁰_j − u⁰_i`; stored in compressed rows.
//!
//! Selection without sorting a row: the largest of the minima of `k` disjoint blocks of keys is
//! at least the `k`-th smallest key, so one vectorisable pass finds that bound, a second collects
//! the few keys below it, and a partial selection keeps `k` of them. Equal keys are ordered by a
//! hash of their position salted with the row (column), so that on tied matrices the rows do not
//! all pick the same columns. Rows, and blocks of columns, are independent tasks (in parallel with
//! `rayon`), so the graph does not depend on the thread count.

use super::kernels::{ld, map_rows};
use super::native::Costs;
use crate::float::Float;

/// The candidate graph in compressed rows: row `i`'s candidates are `col[start[i]..start[i + 1]]`
/// (increasing) with their costs.
pub(super) struct Graph {
    pub(super) start: Vec<usize>,
    col: Vec<usize>,
    cost: Vec<f64>,
}

impl Graph {
    #[inline]
    pub(super) fn row(&self, i: usize) -> impl Iterator<Item = (usize, f64)> + '_ {
        let r = self.start[i]..self.start[i + 1];
        self.col[r.clone()]
            .iter()
            .copied()
            .zip(self.cost[r].iter().copied())
    }
}

/// Columns per task of the column pass.
const COL_BLOCK: usize = 64;

/// The candidate graph: per row, the `k` finite entries with the smallest `c_ij − v0_j`; per
/// column that is in fewer than `k / 2` row lists, the `k` finite entries with the smallest
/// `c_ij − v0_j − u0_i`, where `u0_i = min_l (c_il − v0_l)` (row lists alone often leave some
/// columns in none or few, and the graph without a complete matching).
pub(super) fn candidates<T: Float, const NEG: bool>(
    c: Costs<'_, T>,
    v0: &[f64],
    k: usize,
) -> Graph {
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

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

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
}
