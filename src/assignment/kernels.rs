//! Branch-free row kernels of the native solver: relaxation scans, two-smallest searches and
//! the exact potential update of the row reductions. Written as fixed-width chunks of
//! independent lanes so that LLVM vectorises them for the baseline x86-64 target (SSE2), and
//! kept out of line where inlining made LLVM lose the no-alias facts it needs for that.
//! Also the row-parallel passes (`map_rows`, `map_row_chunks`, `column_minima`): rows or
//! chunks of rows whose boundaries depend on the shape only, so that their results are the same
//! bits for any number of threads.

use super::native::{Costs, NONE};
use crate::float::Float;

/// Read an entry as f64, negated when the problem is a maximisation.
#[inline(always)]
pub(super) fn ld<T: Float, const NEG: bool>(x: T) -> f64 {
    let y = x.as_f64();
    if NEG {
        -y
    } else {
        y
    }
}

/// The new potential `v'` of column `j` so that row `i` with entry `x = c_ij` sees
/// `fl(x − v') ≤ target` exactly (but as close to `target` as rounding allows) — the row's
/// second-best reduced cost. Never raises `v` above `v_old`.
pub(super) fn lowered(x: f64, v_old: f64, target: f64) -> f64 {
    let mut nv = x - target;
    // Rounding may leave fl(x − nv) slightly above target: raise nv by ulps until it is not.
    let mut guard = 0;
    while x - nv > target && guard < 8 {
        nv = next_up(nv);
        guard += 1;
    }
    if x - nv > target || nv > v_old {
        v_old
    } else {
        nv
    }
}

/// The smallest f64 greater than `x` (finite `x`).
fn next_up(x: f64) -> f64 {
    if x == 0.0 {
        return f64::from_bits(1);
    }
    let b = x.to_bits();
    f64::from_bits(if x > 0.0 { b + 1 } else { b - 1 })
}

/// Smallest and second smallest `fl(c_ik − v_k)` over a row (a multiset: equal when the
/// minimum is attained twice), the first column `j1` attaining the smallest and, when the two
/// are equal, another column `j2` attaining it (else `j2` is unspecified).
///
/// One branch-free (vectorisable) pass for the values, then a short search for the columns.
#[inline(never)]
pub(super) fn two_smallest<T: Float, const NEG: bool>(
    row: &[T],
    v: &[f64],
) -> (f64, usize, f64, usize) {
    const W: usize = 2 * LANES; // more independent chains: the min/max pair is latency-bound
    let m = row.len();
    let v = &v[..m];
    let split = m - m % W;
    let mut lo = [f64::INFINITY; W];
    let mut hi = [f64::INFINITY; W];
    // Running minimum after each block of BLOCK entries (non-increasing): the first block
    // where it reaches the final minimum holds the first column attaining it.
    let mut run = [f64::INFINITY; MAX_BLOCKS];
    for (b, (rb, vb)) in row[..split]
        .chunks(BLOCK)
        .zip(v[..split].chunks(BLOCK))
        .enumerate()
    {
        for (rc, vc) in rb.chunks_exact(W).zip(vb.chunks_exact(W)) {
            for l in 0..W {
                let x = ld::<T, NEG>(rc[l]) - vc[l];
                let up = if x < lo[l] { lo[l] } else { x };
                lo[l] = if x < lo[l] { x } else { lo[l] };
                hi[l] = if up < hi[l] { up } else { hi[l] };
            }
        }
        if let Some(r) = run.get_mut(b) {
            *r = fold_min(&lo);
        }
    }
    let (mut v1, mut v2) = (f64::INFINITY, f64::INFINITY);
    let tail = (split..m).map(|k| ld::<T, NEG>(row[k]) - v[k]);
    for x in lo.into_iter().chain(hi).chain(tail) {
        if x < v1 {
            (v1, v2) = (x, v1);
        } else if x < v2 {
            v2 = x;
        }
    }
    let red = |k: usize| ld::<T, NEG>(row[k]) - v[k];
    // Chunked search for the first column at v1: a branch-free test per chunk, starting at
    // the first block whose running minimum is v1 (else at the tail).
    let nb = split.div_ceil(BLOCK);
    let mut j1 = 0;
    let mut k0 = if nb <= MAX_BLOCKS {
        run[..nb]
            .iter()
            .position(|&r| r == v1)
            .map_or(split, |b| b * BLOCK)
    } else {
        0
    };
    while k0 < m {
        let end = (k0 + W).min(m);
        if (k0..end).fold(false, |a, k| a | (red(k) == v1)) {
            j1 = (k0..end).find(|&k| red(k) == v1).unwrap_or(k0);
            break;
        }
        k0 = end;
    }
    let j2 = if v2 == v1 {
        (j1 + 1..m).find(|&k| red(k) == v1).unwrap_or(j1)
    } else {
        NONE
    };
    (v1, j1, v2, j2)
}

/// Rows up to `MAX_BLOCKS · BLOCK` columns locate their minimum from block summaries.
const MAX_BLOCKS: usize = 256;

/// Width of the unrolled scans (independent min chains; SSE2 handles them two at a time).
const LANES: usize = 4;

/// The smallest tentative distance after a scan, the first position holding it, and whether
/// another position holds it too (a tie).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct ScanMin {
    pub best: f64,
    pub first: usize,
    pub tie: bool,
}

/// Block length of the scans: each block's minimum is recorded, so that the first minimum
/// and its ties are found by looking at `m / BLOCK` block minima and one block, not at `dt`.
pub(super) const BLOCK: usize = 64;

/// Locate the first minimum and detect ties from the block minima `bm` of `dt`.
fn locate(dt: &[f64], bm: &[f64]) -> ScanMin {
    let best = fold_min(bm);
    let b = bm.iter().position(|&x| x == best).unwrap_or(0);
    let block = &dt[b * BLOCK..((b + 1) * BLOCK).min(dt.len())];
    let first = b * BLOCK + find_at(block, best).unwrap_or(0);
    let tie = block.iter().filter(|&&d| d == best).count() > 1 || bm[b + 1..].contains(&best);
    ScanMin { best, first, tie }
}

/// Relax all todo positions from a row (contiguous case: position = column),
/// `dt_k ← min(dt_k, fl(c_ik − vt_k) + h)`, and return the smallest `dt_k`, its first position
/// and whether it is tied; `bm` (at least `⌈m / BLOCK⌉` long) receives the block minima.
/// Branch-free inside a block so that it vectorises.
// Not inlined: inside `augment` LLVM loses the no-alias facts and stops vectorising it.
#[inline(never)]
pub(super) fn scan_contiguous<T: Float, const NEG: bool>(
    row: &[T],
    vt: &[f64],
    dt: &mut [f64],
    h: f64,
    bm: &mut [f64],
) -> ScanMin {
    let m = dt.len();
    let nb = m.div_ceil(BLOCK);
    for (((rb, vb), db), out) in row[..m]
        .chunks(BLOCK)
        .zip(vt[..m].chunks(BLOCK))
        .zip(dt.chunks_mut(BLOCK))
        .zip(bm[..nb].iter_mut())
    {
        *out = relax_block::<T, NEG>(rb, vb, db, h);
    }
    locate(dt, &bm[..nb])
}

#[inline(always)]
fn relax_block<T: Float, const NEG: bool>(row: &[T], vt: &[f64], dt: &mut [f64], h: f64) -> f64 {
    let m = dt.len();
    let split = m - m % LANES;
    let mut mins = [f64::INFINITY; LANES];
    for ((rc, vc), dc) in row[..split]
        .chunks_exact(LANES)
        .zip(vt[..split].chunks_exact(LANES))
        .zip(dt[..split].chunks_exact_mut(LANES))
    {
        for l in 0..LANES {
            let r = (ld::<T, NEG>(rc[l]) - vc[l]) + h;
            let d = if r < dc[l] { r } else { dc[l] };
            dc[l] = d;
            mins[l] = if d < mins[l] { d } else { mins[l] };
        }
    }
    let mut best = fold_min(&mins);
    for k in split..m {
        let r = (ld::<T, NEG>(row[k]) - vt[k]) + h;
        dt[k] = if r < dt[k] { r } else { dt[k] };
        best = if dt[k] < best { dt[k] } else { best };
    }
    best
}

/// [`scan_contiguous`] over a compacted todo list (`row` indexed by column).
#[inline(never)]
pub(super) fn scan_indexed<T: Float, const NEG: bool>(
    row: &[T],
    todo: &[usize],
    vt: &[f64],
    dt: &mut [f64],
    h: f64,
    bm: &mut [f64],
) -> ScanMin {
    let m = dt.len();
    let nb = m.div_ceil(BLOCK);
    for (((tb, vb), db), out) in todo[..m]
        .chunks(BLOCK)
        .zip(vt[..m].chunks(BLOCK))
        .zip(dt.chunks_mut(BLOCK))
        .zip(bm[..nb].iter_mut())
    {
        *out = relax_block_indexed::<T, NEG>(row, tb, vb, db, h);
    }
    locate(dt, &bm[..nb])
}

#[inline(always)]
fn relax_block_indexed<T: Float, const NEG: bool>(
    row: &[T],
    todo: &[usize],
    vt: &[f64],
    dt: &mut [f64],
    h: f64,
) -> f64 {
    let m = dt.len();
    let split = m - m % LANES;
    let mut mins = [f64::INFINITY; LANES];
    for ((tc, vc), dc) in todo[..split]
        .chunks_exact(LANES)
        .zip(vt[..split].chunks_exact(LANES))
        .zip(dt[..split].chunks_exact_mut(LANES))
    {
        for l in 0..LANES {
            let r = (ld::<T, NEG>(row[tc[l]]) - vc[l]) + h;
            let d = if r < dc[l] { r } else { dc[l] };
            dc[l] = d;
            mins[l] = if d < mins[l] { d } else { mins[l] };
        }
    }
    let mut best = fold_min(&mins);
    for k in split..m {
        let r = (ld::<T, NEG>(row[todo[k]]) - vt[k]) + h;
        dt[k] = if r < dt[k] { r } else { dt[k] };
        best = if dt[k] < best { dt[k] } else { best };
    }
    best
}

#[inline(always)]
fn fold_min(x: &[f64]) -> f64 {
    x.iter()
        .fold(f64::INFINITY, |a, &b| if b < a { b } else { a })
}

/// The first position `k` with `dt_k == best`, if any.
#[inline]
pub(super) fn find_at(dt: &[f64], best: f64) -> Option<usize> {
    for (c, ch) in dt.chunks(LANES).enumerate() {
        // Branch-free test of a whole chunk, then the exact position inside it.
        if ch.iter().fold(false, |a, &d| a | (d == best)) {
            return Some(c * LANES + ch.iter().position(|&d| d == best).unwrap_or(0));
        }
    }
    None
}

/// Rows per task of the row-parallel passes: at least ~64 Ki entries, so that small problems
/// stay cheap. Depends on the shape only (never on the thread count).
fn rows_per_task(nc: usize) -> usize {
    (1usize << 16).div_ceil(nc.max(1))
}

/// `f(i)` for every row `i < nr` of a matrix with `nc` columns, in row order (in parallel with
/// `rayon`; the rows are independent, so the result does not depend on the thread count).
pub(super) fn map_rows<R: Send>(
    nr: usize,
    nc: usize,
    f: impl Fn(usize) -> R + Sync + Send,
) -> Vec<R> {
    #[cfg(feature = "rayon")]
    {
        use rayon::prelude::*;
        (0..nr)
            .into_par_iter()
            .with_min_len(rows_per_task(nc))
            .map(&f)
            .collect()
    }
    #[cfg(not(feature = "rayon"))]
    {
        let _ = nc;
        (0..nr).map(f).collect()
    }
}

/// `f(rows)` for consecutive chunks of rows whose boundaries depend on `(nr, nc)` only, in
/// chunk order (in parallel with `rayon`): a reduction over the rows that merges the chunks'
/// results in this order gives the same bits whatever the thread count.
pub(super) fn map_row_chunks<R: Send>(
    nr: usize,
    nc: usize,
    f: impl Fn(std::ops::Range<usize>) -> R + Sync + Send,
) -> Vec<R> {
    // At most ~64 chunks: each result may be a column-length vector.
    let per = rows_per_task(nc).max(nr.div_ceil(64)).max(1);
    map_rows(nr.div_ceil(per), 1 << 16, |q| {
        f(q * per..((q + 1) * per).min(nr))
    })
}

/// `min_i c_ij` for every column (`+∞` for a column of forbidden entries only) and the first
/// row attaining it.
pub(super) fn column_minima<T: Float, const NEG: bool>(c: Costs<'_, T>) -> (Vec<f64>, Vec<usize>) {
    let parts = map_row_chunks(c.nr, c.nc, |rows| {
        let mut m = vec![f64::INFINITY; c.nc];
        let mut arg = vec![NONE; c.nc];
        for i in rows {
            for ((mj, aj), &x) in m.iter_mut().zip(&mut arg).zip(c.row(i)) {
                let x = ld::<T, NEG>(x);
                if x < *mj {
                    *mj = x;
                    *aj = i;
                }
            }
        }
        (m, arg)
    });
    // Merge in row order: a later chunk wins only with a strictly smaller value.
    let mut it = parts.into_iter();
    let (mut m, mut arg) = it
        .next()
        .unwrap_or_else(|| (vec![f64::INFINITY; c.nc], vec![NONE; c.nc]));
    for (pm, pa) in it {
        for q in 0..c.nc {
            if pm[q] < m[q] {
                m[q] = pm[q];
                arg[q] = pa[q];
            }
        }
    }
    (m, arg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn lowered_reaches_target_exactly_from_below() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for _ in 0..10_000 {
            let scale = 10f64.powi(rng.random_range(-300..300));
            let x = (rng.random::<f64>() - 0.5) * scale;
            let v_old = x - rng.random::<f64>() * scale;
            let target = (x - v_old) + rng.random::<f64>() * scale;
            let nv = lowered(x, v_old, target);
            assert!(nv <= v_old);
            assert!(x - nv <= target || nv == v_old);
        }
    }

    #[test]
    fn scans_match_naive_relaxation_with_first_minimum_and_ties() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for len in [1usize, 2, 3, 4, 5, 7, 8, 9, 16, 33, 64, 65, 130, 200] {
            for round in 0..300 {
                let ints = round % 2 == 0;
                let val = |rng: &mut rand_chacha::ChaCha8Rng| {
                    if ints {
                        f64::from(rng.random_range(0..4u8))
                    } else {
                        rng.random::<f64>()
                    }
                };
                let nc = len + 3;
                let row: Vec<f64> = (0..nc).map(|_| val(&mut rng)).collect();
                let todo: Vec<usize> = (0..len).map(|k| k + rng.random_range(0..4usize)).collect();
                let vt: Vec<f64> = (0..len).map(|_| val(&mut rng)).collect();
                let dt0: Vec<f64> = (0..len)
                    .map(|_| {
                        if rng.random::<u8>() % 3 == 0 {
                            f64::INFINITY
                        } else {
                            val(&mut rng)
                        }
                    })
                    .collect();
                let h = val(&mut rng) - 1.0;
                for contiguous in [true, false] {
                    let at = |k: usize| if contiguous { row[k] } else { row[todo[k]] };
                    let want: Vec<f64> = (0..len)
                        .map(|k| {
                            let r = (at(k) - vt[k]) + h;
                            if r < dt0[k] {
                                r
                            } else {
                                dt0[k]
                            }
                        })
                        .collect();
                    let mut dt = dt0.clone();
                    let mut bm = vec![0.0; len.div_ceil(BLOCK)];
                    let got = if contiguous {
                        scan_contiguous::<f64, false>(&row[..len], &vt, &mut dt, h, &mut bm)
                    } else {
                        scan_indexed::<f64, false>(&row, &todo, &vt, &mut dt, h, &mut bm)
                    };
                    assert_eq!(dt, want);
                    let best = want.iter().copied().fold(f64::INFINITY, f64::min);
                    let first = want.iter().position(|&d| d == best).unwrap_or(0);
                    let count = want.iter().filter(|&&d| d == best).count();
                    assert_eq!(got.best, best);
                    assert_eq!(got.first, first, "len {len} {want:?}");
                    assert_eq!(got.tie, count > 1, "len {len} {want:?}");
                }
            }
        }
    }

    #[test]
    fn two_smallest_and_find_at_match_naive() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        for len in [1usize, 2, 3, 5, 8, 13, 64, 65, 200, 1000, 16_400, 16_500] {
            for round in 0..if len > 1000 { 20 } else { 200 } {
                // Small integers (many ties) or floats (the minimum anywhere in the row).
                let row: Vec<f64> = (0..len)
                    .map(|_| {
                        if round % 2 == 0 {
                            f64::from(rng.random_range(0..4u8))
                        } else {
                            rng.random::<f64>() * 4.0
                        }
                    })
                    .collect();
                let v: Vec<f64> = (0..len)
                    .map(|_| f64::from(rng.random_range(0..2u8)))
                    .collect();
                let red: Vec<f64> = row.iter().zip(&v).map(|(a, b)| a - b).collect();
                let mut sorted = red.clone();
                sorted.sort_by(f64::total_cmp);
                let (v1, j1, v2, j2) = two_smallest::<f64, false>(&row, &v);
                assert_eq!(v1, sorted[0]);
                assert_eq!(v2, if len > 1 { sorted[1] } else { f64::INFINITY });
                assert_eq!(j1, red.iter().position(|&r| r == v1).unwrap());
                if v1 == v2 {
                    assert!(j2 != j1 && red[j2] == v1);
                }
                assert_eq!(find_at(&red, v1), Some(j1));
                assert_eq!(
                    find_at(&red[j1 + 1..], v1).map(|o| o + j1 + 1),
                    red[j1 + 1..]
                        .iter()
                        .position(|&r| r == v1)
                        .map(|o| o + j1 + 1)
                );
                assert_eq!(find_at(&red, 100.0), None);
            }
        }
    }
}
