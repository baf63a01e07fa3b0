//! The native solver: Jonker–Volgenant initialisation followed by Dijkstra-like shortest
//! augmenting paths on reduced costs (Crouse 2016), over a dense row-major matrix with
//! `rows <= cols` whose entries are finite or `+∞` (a forbidden edge).
//!
//! Invariants, maintained *exactly* in floating point by construction (not up to a tolerance):
//! for every matched row `i` (column `σ(i)`) and every column `k`,
//! `fl(c_ik − v_k) ≥ u_i = fl(c_iσ(i) − v_σ(i))`; every unmatched column has `v_j = 0` when
//! `rows < cols` (the complementary slackness condition of the rectangular dual, whose column
//! potentials must be `≤ 0`). `fl` is monotone, so lowering a column potential never breaks
//! the inequality of another row. The shortest-path phase starts from these invariants, so its
//! result is optimal up to the rounding of the path lengths themselves (as in SciPy).

use crate::error::{Error, Result};
use crate::float::Float;

/// Cap on augmenting-row-reduction bids, per row (see `augmenting_row_reduction`).
const ARR_MAX_BIDS_PER_ROW: usize = 16;

/// Minimal fraction of the free rows that two windows of `nr` bids must resolve.
const ARR_MIN_PROGRESS: f64 = 0.03;

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
    fn row(&self, i: usize) -> &[T] {
        &self.data[i * self.nc..(i + 1) * self.nc]
    }
}

/// Read an entry as f64, negated when the problem is a maximisation.
#[inline(always)]
fn ld<T: Float, const NEG: bool>(x: T) -> f64 {
    let y = x.as_f64();
    if NEG {
        -y
    } else {
        y
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
    let free = match start {
        Start::Cold => {
            let mut free = if nr == nc {
                st.column_reduction::<T, NEG>(c)?
            } else {
                (0..nr).collect()
            };
            if !free.is_empty() {
                free = st.augmenting_row_reduction::<T, NEG>(c, free)?;
            }
            st.set_row_potentials::<T, NEG>(c);
            free
        }
        Start::Warm { v, col4row } => st.warm::<T, NEG>(c, v, col4row)?,
    };
    let mut sap = Sap::new(nc, &st.row4col);
    for r in free {
        sap.augment::<T, NEG>(c, &mut st, r)?;
    }
    Ok(st.into_solution())
}

struct State {
    u: Vec<f64>,
    v: Vec<f64>,
    col4row: Vec<usize>,
    row4col: Vec<usize>,
}

impl State {
    fn into_solution(self) -> Solution {
        Solution {
            col4row: self.col4row,
            u: self.u,
            v: self.v,
        }
    }

    /// JV column reduction with reduction transfer (square problems). Returns the free rows.
    fn column_reduction<T: Float, const NEG: bool>(
        &mut self,
        c: Costs<'_, T>,
    ) -> Result<Vec<usize>> {
        let n = c.nc;
        let v = &mut self.v;
        v.fill(f64::INFINITY);
        let y = &mut self.row4col;
        // Row-wise pass (cache friendly): v_j = min_i c_ij, y_j = first arg-min.
        for i in 0..n {
            for (j, &x) in c.row(i).iter().enumerate() {
                let x = ld::<T, NEG>(x);
                if x < v[j] {
                    v[j] = x;
                    y[j] = i;
                }
            }
        }
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
    /// of `nr` bids, fewer than [`ARR_MIN_PROGRESS`] of the free rows were resolved.
    fn augmenting_row_reduction<T: Float, const NEG: bool>(
        &mut self,
        c: Costs<'_, T>,
        mut free: Vec<usize>,
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
                if bids % n == 0 {
                    let f_now = n_free - current + new_free;
                    #[allow(clippy::cast_precision_loss)]
                    let slow = ((history[1] - f_now.min(history[1])) as f64)
                        < ARR_MIN_PROGRESS * history[1] as f64;
                    history = [f_now, history[0]];
                    if slow || bids >= max_bids {
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
            for i in 0..c.nr {
                let row = c.row(i);
                let (best, arg, _, _) = two_smallest::<T, NEG>(row, &self.v);
                if best == f64::INFINITY {
                    return Err(Error::Infeasible);
                }
                self.u[i] = best;
                let p = prev.map_or(NONE, |p| p[i]);
                let j = if p < c.nc
                    && ld::<T, NEG>(row[p]) - self.v[p] == best
                    && self.row4col[p] == NONE
                {
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

/// The new potential `v'` of column `j` so that row `i` with entry `x = c_ij` sees
/// `fl(x − v') ≤ target` exactly (but as close to `target` as rounding allows) — the row's
/// second-best reduced cost. Never raises `v` above `v_old`.
fn lowered(x: f64, v_old: f64, target: f64) -> f64 {
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
fn two_smallest<T: Float, const NEG: bool>(row: &[T], v: &[f64]) -> (f64, usize, f64, usize) {
    const W: usize = 2 * LANES; // more independent chains: the min/max pair is latency-bound
    let m = row.len();
    let v = &v[..m];
    let split = m - m % W;
    let mut lo = [f64::INFINITY; W];
    let mut hi = [f64::INFINITY; W];
    for (rc, vc) in row[..split].chunks_exact(W).zip(v[..split].chunks_exact(W)) {
        for l in 0..W {
            let x = ld::<T, NEG>(rc[l]) - vc[l];
            let up = if x < lo[l] { lo[l] } else { x };
            lo[l] = if x < lo[l] { x } else { lo[l] };
            hi[l] = if up < hi[l] { up } else { hi[l] };
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
    // Chunked search for the first column at v1: a branch-free test per chunk.
    let mut j1 = 0;
    let mut k0 = 0;
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

/// Scratch space of the shortest augmenting path search, allocated once per solve.
///
/// Unvisited ("todo") columns are kept in a compact list in increasing column order, with
/// their potentials and tentative distances stored alongside, so that the scan of a row reads
/// contiguous arrays and the row itself in increasing order. A visited column is killed in
/// place (`vt = −∞`, `dt = +∞`: it can neither improve nor be selected again) and the list is
/// compacted when more than a quarter of it is dead. Predecessors are not stored during the scans
/// (that would make them branchy): the predecessor of a column on the final path is recovered
/// as the first scanned row whose relaxation reproduces the column's distance bit for bit.
struct Sap {
    todo: Vec<usize>,
    vt: Vec<f64>,
    dt: Vec<f64>,
    /// Unmatched columns.
    free_cols: Vec<usize>,
    /// Position of each live column in the todo list (valid once compacted).
    pos: Vec<usize>,
    /// Scanned rows in order, with their offsets `h = d_i − u_i`.
    sr: Vec<(usize, f64)>,
    /// Visited columns with the row matched to them (at visit time) and their distances.
    sc: Vec<(usize, usize, f64)>,
}

impl Sap {
    fn new(nc: usize, row4col: &[usize]) -> Self {
        Self {
            free_cols: (0..nc).filter(|&j| row4col[j] == NONE).collect(),
            pos: vec![0; nc],
            todo: Vec::with_capacity(nc),
            vt: Vec::with_capacity(nc),
            dt: vec![0.0; nc],
            sr: Vec::with_capacity(nc),
            sc: Vec::with_capacity(nc),
        }
    }

    /// Augment the matching along a shortest path from the free row `r0` (Crouse 2016).
    fn augment<T: Float, const NEG: bool>(
        &mut self,
        c: Costs<'_, T>,
        st: &mut State,
        r0: usize,
    ) -> Result<()> {
        let nc = c.nc;
        self.todo.clear();
        self.todo.extend(0..nc);
        self.vt.clear();
        self.vt.extend_from_slice(&st.v);
        self.dt[..nc].fill(f64::INFINITY);
        self.sc.clear();
        self.sr.clear();
        let mut m = nc; // positions in use
        let mut live = nc;
        let mut contiguous = true;
        let mut i = r0;
        let mut mu = 0.0;
        let sink = loop {
            let h = mu - st.u[i];
            self.sr.push((i, h));
            let row = c.row(i);
            let (vt, dt) = (&self.vt[..m], &mut self.dt[..m]);
            let best = if contiguous {
                scan_contiguous::<T, NEG>(&row[..m], vt, dt, h)
            } else {
                scan_indexed::<T, NEG>(row, &self.todo[..m], vt, dt, h)
            };
            if best == f64::INFINITY {
                return Err(Error::Infeasible);
            }
            // Prefer an unmatched column among those at the minimal distance (SciPy's rule; it
            // keeps all-equal matrices linear per augmentation). When unmatched columns are few,
            // check them directly; otherwise look for ties around the first minimum.
            let free_hit = if self.free_cols.len() * 4 <= m {
                let dt = &self.dt;
                let pos = &self.pos;
                self.free_cols
                    .iter()
                    .position(|&j| dt[if contiguous { j } else { pos[j] }] == best)
            } else {
                let k = first_at(&self.dt[..m], best);
                let dt = &self.dt[..m];
                (k..m)
                    .find(|&q| dt[q] == best && st.row4col[self.todo[q]] == NONE)
                    .and_then(|q| self.free_cols.iter().position(|&j| j == self.todo[q]))
            };
            if let Some(t) = free_hit {
                mu = best;
                break self.free_cols.swap_remove(t);
            }
            let k = first_at(&self.dt[..m], best);
            let j = self.todo[k];
            debug_assert!(st.row4col[j] != NONE);
            mu = best;
            // Visit column j: record its distance, kill its slot, continue from its row.
            self.sc.push((j, st.row4col[j], best));
            self.vt[k] = f64::NEG_INFINITY;
            self.dt[k] = f64::INFINITY;
            live -= 1;
            i = st.row4col[j];
            if live * 4 < m * 3 && m > 32 {
                let mut w = 0;
                for q in 0..m {
                    if self.vt[q] != f64::NEG_INFINITY {
                        self.pos[self.todo[q]] = w;
                        self.todo[w] = self.todo[q];
                        self.vt[w] = self.vt[q];
                        self.dt[w] = self.dt[q];
                        w += 1;
                    }
                }
                m = w;
                contiguous = false;
            }
        };
        // Flip the path (before the dual update: predecessors are recomputed from st.v).
        let mut j = sink;
        let mut dj = mu;
        loop {
            let i = self.predecessor::<T, NEG>(c, &st.v, j, dj);
            st.row4col[j] = i;
            let prev = std::mem::replace(&mut st.col4row[i], j);
            if i == r0 {
                break;
            }
            j = prev;
            dj = self
                .sc
                .iter()
                .find(|&&(q, _, _)| q == j)
                .map_or(mu, |&(_, _, d)| d);
        }
        // Dual update: u_r0 += mu; for visited columns j (reached at d_j) and their rows:
        // u_i += mu − d_j, v_j −= mu − d_j. Keeps reduced costs ≥ 0 and the path tight.
        st.u[r0] += mu;
        for &(j, i, dj) in &self.sc {
            let delta = mu - dj;
            st.u[i] += delta;
            st.v[j] -= delta;
        }
        Ok(())
    }

    /// The first scanned row whose relaxation of column `j` gives exactly `dj`.
    #[inline(never)]
    fn predecessor<T: Float, const NEG: bool>(
        &self,
        c: Costs<'_, T>,
        v: &[f64],
        j: usize,
        dj: f64,
    ) -> usize {
        let mut first_min = (f64::INFINITY, NONE);
        for &(i, h) in &self.sr {
            let r = (ld::<T, NEG>(c.row(i)[j]) - v[j]) + h;
            if r == dj {
                return i;
            }
            if r < first_min.0 {
                first_min = (r, i);
            }
        }
        // Unreachable in exact replay; fall back to the best relaxation.
        first_min.1
    }
}

/// Width of the unrolled scans (independent min chains; SSE2 handles them two at a time).
const LANES: usize = 4;

/// Relax all todo positions from a row (contiguous case: position = column),
/// `dt_k ← min(dt_k, fl(c_ik − vt_k) + h)`, and return the smallest `dt_k`. Branch-free so that
/// it vectorises.
// Not inlined: inside `augment` LLVM loses the no-alias facts and stops vectorising it.
#[inline(never)]
fn scan_contiguous<T: Float, const NEG: bool>(
    row: &[T],
    vt: &[f64],
    dt: &mut [f64],
    h: f64,
) -> f64 {
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
fn scan_indexed<T: Float, const NEG: bool>(
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

/// The first position `k` with `dt_k == best` (`0` if none).
#[inline]
fn first_at(dt: &[f64], best: f64) -> usize {
    for (c, ch) in dt.chunks(LANES).enumerate() {
        // Branch-free test of a whole chunk, then the exact position inside it.
        if ch.iter().fold(false, |a, &d| a | (d == best)) {
            return c * LANES + ch.iter().position(|&d| d == best).unwrap_or(0);
        }
    }
    0
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
            free = st.augmenting_row_reduction::<f64, false>(c, free).unwrap();
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
    fn two_smallest_and_first_at_match_naive() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        for len in [1usize, 2, 3, 5, 8, 13, 64] {
            for _ in 0..200 {
                let row: Vec<f64> = (0..len)
                    .map(|_| f64::from(rng.random_range(0..4u8)))
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
                assert_eq!(first_at(&red, v1), j1);
            }
        }
    }
}
