//! The scores of every pairwise swap of one round, row by row from contiguous memory.
//!
//! [`SwapState::scan_delta`] scores the swap of `i < j` in `O(1)`, but reads the scan and the
//! moments at `q(i)`, `q(j)` and down columns: for all `d²/2` pairs of a 512-unit layer that
//! is ~60 scattered reads per pair. [`RowLayout::deltas`] evaluates exactly the same
//! operations in the same order as `scan_delta` (so the same result, bit for bit) for a whole
//! row of pairs `(i, j > i)`: every quantity indexed by `j` is read from a contiguous row of a
//! matrix or of its transpose (the moments' transposes are fixed, [`Moments`]), or gathered
//! once per row from one row at the indices `q(j)` (`m[r, q(j)]`, a row that stays in cache)
//! into a short buffer, and the loops over `j` can be vectorised.
//!
//! A round materialises only the products' operands `x`, `yᵀ`, `ẋ`, `ẏᵀ`, the scan `W` and
//! `Wᵀ`, in buffers reused by every round of a layer visit ([`RoundBuffers`]), each filled row
//! by row in parallel (element-wise, so independent of the thread count). Nothing of size
//! `d × d` is allocated per round.

use ndarray::{Array1, Array2, ArrayView2, Zip};

use super::super::{fill_rows, par_gemm_abt_into, transpose_into};
use super::{Moments, SwapState};

/// Row `r` of `m` (standard layout) from column `from` on.
fn row_from(m: &Array2<f64>, r: usize, from: usize) -> &[f64] {
    let n = m.ncols();
    &m.as_slice().expect("standard layout")[r * n + from..(r + 1) * n]
}

/// `m[k, q(k)]` for every `k`.
fn matched(m: &Array2<f64>, q: &[usize]) -> Array1<f64> {
    q.iter().enumerate().map(|(k, &qk)| m[[k, qk]]).collect()
}

/// The buffers of one round (`d × d` each), reused across the rounds of a layer visit.
pub(in super::super) struct RoundBuffers {
    /// `x = aa − ab[:, q]` of the feature (`c`) and weight (`z`) moments.
    cx: Array2<f64>,
    zx: Array2<f64>,
    /// `yᵀ[k, b] = bbᵀ[q(k), b] − ab[k, b]` (so `y` is its transposed view).
    cy_t: Array2<f64>,
    zy_t: Array2<f64>,
    /// The scan `W`, the second product, and `Wᵀ`.
    w: Array2<f64>,
    w2: Array2<f64>,
    w_t: Array2<f64>,
    /// The permutation the buffers were filled at (`None`: not filled yet).
    q: Option<Vec<usize>>,
}

impl RoundBuffers {
    /// Buffers for a layer of `d` units.
    pub(in super::super) fn new(d: usize) -> Self {
        let z = || Array2::zeros((d, d));
        Self {
            cx: z(),
            zx: z(),
            cy_t: z(),
            zy_t: z(),
            w: z(),
            w2: z(),
            w_t: z(),
            q: None,
        }
    }

    /// Fill the buffers at `q` for the moments `c`, `z`: from scratch the first time, or by
    /// updating the previous round's where few units changed their match (see
    /// [`update_scan`]).
    fn fill(&mut self, c: &Moments, z: &Moments, q: &[usize]) {
        let d = q.len();
        let changed: Option<Vec<usize>> = self
            .q
            .as_ref()
            .map(|prev| (0..d).filter(|&k| prev[k] != q[k]).collect());
        match changed {
            Some(k) if 4 * k.len() <= d => update_scan(self, c, z, q, &k),
            _ => {
                fill_xy(c, q, &mut self.cx, &mut self.cy_t);
                fill_xy(z, q, &mut self.zx, &mut self.zy_t);
                let operands = (self.cx.view(), self.cy_t.t(), self.zx.view(), self.zy_t.t());
                products(operands, &mut self.w, &mut self.w2);
            }
        }
        transpose_into(self.w.view(), &mut self.w_t);
        self.q = Some(q.to_vec());
    }
}

/// Column `k` of `x = aa − ab[:, q]` at `q` into `out`.
fn x_column(m: &Moments, q: &[usize], k: usize, out: &mut [f64]) {
    let (aa_col, qk) = (row_from(&m.aa_t, k, 0), q[k]);
    let ab_col = row_from(&m.ab_t, qk, 0);
    for ((o, &a), &b) in out.iter_mut().zip(aa_col).zip(ab_col) {
        *o = a - b;
    }
}

/// Row `k` of `yᵀ = bbᵀ[q, :] − ab` (column `k` of `y`) at `q` into `out`.
fn y_column(m: &Moments, q: &[usize], k: usize, out: &mut [f64]) {
    let (bb, ab) = (row_from(&m.bb_t, q[k], 0), row_from(&m.ab, k, 0));
    for ((o, &b), &a) in out.iter_mut().zip(bb).zip(ab) {
        *o = b - a;
    }
}

/// Update the scan from the previous round's permutation to `q`, where only the units in
/// `changed` have a new match. Column `k` of `x`, `y`, `ẋ`, `ẏ` depends on `q(k)` alone, so
/// `W = X Ẏᵀ + Ẋ Yᵀ + t₁ 1ᵀ + 1 t₄ᵀ` changes by
/// `Σ_{k ∈ changed} (x'_k ẏ'_kᵀ − x_k ẏ_kᵀ + ẋ'_k y'_kᵀ − ẋ_k y_kᵀ)` (one product of inner
/// size `4 |changed|` instead of two of inner size `d`) and
/// `t₁[a] = ⟨x_a, ẋ_a⟩`, `t₄[b] = ⟨y_b, ẏ_b⟩` by the same columns' terms. Equal to the product
/// from scratch up to rounding; the scan only ranks the swaps a round proposes, and every
/// swap and every round is then scored exactly.
fn update_scan(b: &mut RoundBuffers, c: &Moments, z: &Moments, q: &[usize], changed: &[usize]) {
    let (d, m) = (q.len(), changed.len());
    // Columns of the left (x', x, ẋ', ẋ) and right (ẏ', −ẏ, y', −y) factors of the update.
    let mut left = Array2::zeros((4 * m, d));
    let mut right = Array2::zeros((4 * m, d));
    let (mut dt1, mut dt4) = (vec![0.0; d], vec![0.0; d]);
    let mut col = vec![0.0; d];
    for (j, &k) in changed.iter().enumerate() {
        let old = |buf: &Array2<f64>| buf.column(k).to_vec();
        let (cx_old, zx_old) = (old(&b.cx), old(&b.zx));
        let (cy_old, zy_old) = (
            row_from(&b.cy_t, k, 0).to_vec(),
            row_from(&b.zy_t, k, 0).to_vec(),
        );
        x_column(c, q, k, &mut col);
        b.cx.column_mut(k)
            .assign(&ndarray::ArrayView1::from(&col[..]));
        let cx_new = col.clone();
        x_column(z, q, k, &mut col);
        b.zx.column_mut(k)
            .assign(&ndarray::ArrayView1::from(&col[..]));
        let zx_new = col.clone();
        let cy_row = &mut b.cy_t.row_mut(k);
        y_column(c, q, k, cy_row.as_slice_mut().expect("standard layout"));
        let zy_row = &mut b.zy_t.row_mut(k);
        y_column(z, q, k, zy_row.as_slice_mut().expect("standard layout"));
        let (cy_new, zy_new) = (row_from(&b.cy_t, k, 0), row_from(&b.zy_t, k, 0));
        let rows = [
            (&cx_new[..], zy_new, 1.0),
            (&cx_old[..], &zy_old[..], -1.0),
            (&zx_new[..], cy_new, 1.0),
            (&zx_old[..], &cy_old[..], -1.0),
        ];
        for (r, (l, rr, sign)) in rows.into_iter().enumerate() {
            left.row_mut(4 * j + r)
                .assign(&ndarray::ArrayView1::from(l));
            let mut out = right.row_mut(4 * j + r);
            for (o, &v) in out.iter_mut().zip(rr) {
                *o = sign * v;
            }
        }
        for a in 0..d {
            dt1[a] += cx_new[a] * zx_new[a] - cx_old[a] * zx_old[a];
            dt4[a] += cy_new[a] * zy_new[a] - cy_old[a] * zy_old[a];
        }
    }
    // W += leftᵀ right (as `L Rᵀ` with L = leftᵀ, R = rightᵀ, both [d, 4m]).
    par_gemm_abt_into(left.t(), right.t(), 1.0, &mut b.w);
    fill_rows(&mut b.w, |a, row| {
        for (o, &t4) in row.iter_mut().zip(&dt4) {
            *o += dt1[a] + t4;
        }
    });
}

/// `x ← aa − ab[:, q]` and `yᵀ ← bbᵀ[q, :] − ab` of one moment triple.
fn fill_xy(m: &Moments, q: &[usize], x: &mut Array2<f64>, y_t: &mut Array2<f64>) {
    fill_rows(x, |a, out| {
        let (aa, ab) = (row_from(&m.aa, a, 0), row_from(&m.ab, a, 0));
        for ((o, &qk), &v) in out.iter_mut().zip(q).zip(aa) {
            *o = v - ab[qk];
        }
    });
    fill_rows(y_t, |k, out| {
        let (bb, ab) = (row_from(&m.bb_t, q[k], 0), row_from(&m.ab, k, 0));
        for ((o, &b), &a) in out.iter_mut().zip(bb).zip(ab) {
            *o = b - a;
        }
    });
}

/// `⟨p_a, r_a⟩` for every row `a` (ndarray's `dot`, whose rounding depends on the rows'
/// layout: the scan always takes `y` column-major).
pub(super) fn row_dots(p: ArrayView2<'_, f64>, r: ArrayView2<'_, f64>) -> Array1<f64> {
    p.rows()
        .into_iter()
        .zip(r.rows())
        .map(|(a, b)| a.dot(&b))
        .collect()
}

/// `W[a, x] = (X Ẏᵀ + Ẋ Yᵀ)[a, x] + ⟨x_a, ẋ_a⟩ + ⟨y_x, ẏ_x⟩` into `w` (`w2` is scratch):
/// the products in fixed row blocks, then the sums in this order, element by element.
fn products(
    (x, y, xd, yd): (
        ArrayView2<'_, f64>,
        ArrayView2<'_, f64>,
        ArrayView2<'_, f64>,
        ArrayView2<'_, f64>,
    ),
    w: &mut Array2<f64>,
    w2: &mut Array2<f64>,
) {
    let (t1, t4) = (row_dots(x, xd), row_dots(y, yd));
    par_gemm_abt_into(x, yd, 0.0, w);
    par_gemm_abt_into(xd, y, 0.0, w2);
    Zip::from(w.rows_mut())
        .and(w2.rows())
        .and(&t1)
        .for_each(|mut w, w2, &t1| {
            Zip::from(&mut w)
                .and(&w2)
                .and(&t4)
                .for_each(|w, &w2, &t4| *w = ((*w + w2) + t1) + t4);
        });
}

/// One moment triple's per-round diagonals: `aa[k, k]`, `ab[k, q(k)]`, `bb[q(k), q(k)]` and
/// the Gram matrix's `g[k, k]`.
struct Diagonals {
    aa: Array1<f64>,
    ab: Array1<f64>,
    bb: Array1<f64>,
    g: Array1<f64>,
}

impl Diagonals {
    fn new(m: &Moments, g: &Array2<f64>, q: &[usize]) -> Self {
        Self {
            aa: m.aa.diag().to_owned(),
            ab: matched(&m.ab, q),
            bb: q.iter().map(|&k| m.bb[[k, k]]).collect(),
            g: g.diag().to_owned(),
        }
    }
}

/// One moment triple of a round: the moments (with their transposes), the Gram matrix
/// `g = gram(m, q)`, the scan's `x` and `yᵀ`, and the diagonals.
struct MomentRows<'a> {
    m: &'a Moments,
    g: &'a Array2<f64>,
    x: &'a Array2<f64>,
    /// `yᵀ` (read by the tests only: the rows read `y` through its parts).
    #[cfg_attr(not(test), allow(dead_code))]
    y: &'a Array2<f64>,
    diag: Diagonals,
    /// `x[k, k]` and the matched `y[q(k), k]`.
    x_d: Array1<f64>,
    y_d: Array1<f64>,
}

impl<'a> MomentRows<'a> {
    fn new(
        m: &'a Moments,
        g: &'a Array2<f64>,
        x: &'a Array2<f64>,
        y_t: &'a Array2<f64>,
        q: &[usize],
    ) -> Self {
        Self {
            m,
            g,
            x,
            y: y_t,
            diag: Diagonals::new(m, g, q),
            x_d: x.diag().to_owned(),
            // y[q(k), k] = yᵀ[k, q(k)].
            y_d: matched(y_t, q),
        }
    }
}

/// Per-row gathers `m[r, q(j)]`, `j > i`, of one moment triple: `ab[i, q(j)]`,
/// `bb[q(i), q(j)]`, `bbᵀ[q(i), q(j)]`.
struct Gathered {
    ab: Vec<f64>,
    bb: Vec<f64>,
    bb_t: Vec<f64>,
}

impl Gathered {
    fn new(m: &Moments, i: usize, qi: usize, qs: &[usize]) -> Self {
        Self {
            ab: gather(&m.ab, i, qs),
            bb: gather(&m.bb, qi, qs),
            bb_t: gather(&m.bb_t, qi, qs),
        }
    }
}

/// `m[r, q]` for the indices `q`.
fn gather(m: &Array2<f64>, r: usize, q: &[usize]) -> Vec<f64> {
    let row = row_from(m, r, 0);
    q.iter().map(|&k| row[k]).collect()
}

/// Everything [`RowLayout::deltas`] reads, for one round at the permutation `q`.
pub(super) struct RowLayout<'a> {
    q: &'a [usize],
    c: MomentRows<'a>,
    z: MomentRows<'a>,
    /// `S`, `Sᵀ` and `S[k, q(k)]` (`None` for ℓ = 0).
    s: Option<(&'a Array2<f64>, &'a Array2<f64>, Array1<f64>)>,
    /// The scan's `W`, `Wᵀ` and `W[k, q(k)]`.
    w: &'a Array2<f64>,
    w_t: &'a Array2<f64>,
    w_d: Array1<f64>,
}

impl<'a> RowLayout<'a> {
    /// The layout of `state`'s round (`s_t = Sᵀ` when `S` exists), with the products of the
    /// scan (`W`) made here into `buffers`.
    pub(super) fn new(
        state: &'a SwapState<'a>,
        s_t: Option<&'a Array2<f64>>,
        buffers: &'a mut RoundBuffers,
    ) -> Self {
        let q = &state.q[..];
        buffers.fill(state.c, state.z, q);
        let b = &*buffers;
        Self {
            q,
            c: MomentRows::new(state.c, &state.g, &b.cx, &b.cy_t, q),
            z: MomentRows::new(state.z, &state.n, &b.zx, &b.zy_t, q),
            s: state
                .s
                .map(|s| (s, s_t.expect("S_ℓ and its transpose"), matched(s, q))),
            w: &b.w,
            w_t: &b.w_t,
            w_d: matched(&b.w, q),
        }
    }

    /// The scan `(x, y, ẋ, ẏ)` this layout holds (for tests).
    #[cfg(test)]
    pub(super) fn xy(&self) -> [ArrayView2<'_, f64>; 4] {
        [self.c.x.view(), self.c.y.t(), self.z.x.view(), self.z.y.t()]
    }

    /// `out[j − i − 1]` = the exact change of `J` when `i` and `j` swap, for `j = i + 1 … d − 1`:
    /// [`SwapState::scan_delta`]'s operations in its order, so the same values.
    #[allow(
        clippy::similar_names,
        clippy::too_many_lines,
        clippy::many_single_char_names
    )]
    pub(super) fn deltas(&'a self, i: usize, out: &mut [f64]) {
        let q = self.q;
        let qi = q[i];
        let qs = &q[i + 1..];
        let row = |m: &'a Array2<f64>, r: usize| row_from(m, r, i + 1);
        let tail = |v: &'a Array1<f64>| &v.as_slice().expect("contiguous")[i + 1..];
        // Linear term: −2 (S[i, q(j)] + S[j, q(i)] − S[i, q(i)] − S[j, q(j)]).
        match &self.s {
            Some((s, s_t, s_d)) => {
                let (sq, st, sd, sii) = (gather(s, i, qs), row(s_t, qi), tail(s_d), s_d[i]);
                for (k, o) in out.iter_mut().enumerate() {
                    *o = -2.0 * (sq[k] + st[k] - sii - sd[k]);
                }
            }
            None => out.fill(0.0),
        }
        let (c, z) = (&self.c, &self.z);
        let (gc, gz) = (Gathered::new(c.m, i, qi, qs), Gathered::new(z.m, i, qi, qs));
        // x[j, i] = aa[j, i] − ab[j, q(i)], from the transposes' rows.
        let x_col = |m: &MomentRows<'a>| -> Vec<f64> {
            let (aat, abt) = (row(&m.m.aa_t, i), row(&m.m.ab_t, qi));
            aat.iter().zip(abt).map(|(a, b)| a - b).collect()
        };
        let (xt, xdt) = (x_col(c), x_col(z));
        // Rows: Σ_{k ∉ {i, j}} of rows i, j of G ⊙ N before and after the swap, from the scan.
        {
            let (x, xd) = (row(c.x, i), row(z.x, i));
            let (cabt, zabt) = (row(&c.m.ab_t, qi), row(&z.m.ab_t, qi));
            let (xj, xdj, yj, ydj) = (tail(&c.x_d), tail(&z.x_d), tail(&c.y_d), tail(&z.y_d));
            let (wq, wt, wd) = (gather(self.w, i, qs), row(self.w_t, qi), tail(&self.w_d));
            let (xii, xdii, yii, ydii, wii) = (c.x_d[i], z.x_d[i], c.y_d[i], z.y_d[i], self.w_d[i]);
            let h_ii = (xii + yii) * (xdii + ydii);
            for (k, o) in out.iter_mut().enumerate() {
                // y[q(i), j] = bb[q(i), q(j)] − ab[j, q(i)], y[q(j), i] = bb[q(j), q(i)] − ab[i, q(j)].
                let (yi, ydi) = (gc.bb[k] - cabt[k], gz.bb[k] - zabt[k]);
                let (yr, ydr) = (gc.bb_t[k] - gc.ab[k], gz.bb_t[k] - gz.ab[k]);
                // row(i, q(j)), row(i, q(i)), row(j, q(i)), row(j, q(j)).
                let r1 = wq[k] - (xii + yr) * (xdii + ydr) - (x[k] + yj[k]) * (xd[k] + ydj[k]);
                let r2 = wii - h_ii - (x[k] + yi) * (xd[k] + ydi);
                let r3 = wt[k] - (xt[k] + yii) * (xdt[k] + ydii) - (xj[k] + yi) * (xdj[k] + ydi);
                let r4 =
                    wd[k] - (xt[k] + yr) * (xdt[k] + ydr) - (xj[k] + yj[k]) * (xdj[k] + ydj[k]);
                let rows = r1 - r2 + r3 - r4;
                *o += 2.0 * rows;
            }
        }
        // The {i, j}² block of ⟨G, N⟩: entries (i, i), (i, j), (j, i), (j, j) after the swap.
        let (caa, zaa) = (row(&c.m.aa, i), row(&z.m.aa, i));
        let (caat, zaat) = (row(&c.m.aa_t, i), row(&z.m.aa_t, i));
        let (cad, zad) = (tail(&c.diag.aa), tail(&z.diag.aa));
        let (cabt, zabt) = (row(&c.m.ab_t, qi), row(&z.m.ab_t, qi));
        let (cabd, zabd) = (tail(&c.diag.ab), tail(&z.diag.ab));
        let (cbbd, zbbd) = (tail(&c.diag.bb), tail(&z.diag.bb));
        let (g, n, gd, nd) = (row(c.g, i), row(z.g, i), tail(&c.diag.g), tail(&z.diag.g));
        let (c_aii, c_abi, c_bbi, g_ii) = (c.diag.aa[i], c.diag.ab[i], c.diag.bb[i], c.diag.g[i]);
        let (z_aii, z_abi, z_bbi, n_ii) = (z.diag.aa[i], z.diag.ab[i], z.diag.bb[i], z.diag.g[i]);
        for (k, o) in out.iter_mut().enumerate() {
            let (cabq, zabq, cbbq, zbbq) = (gc.ab[k], gz.ab[k], gc.bb[k], gz.bb[k]);
            let (cbbr, zbbr) = (gc.bb_t[k], gz.bb_t[k]);
            // g[j, i] and n[j, i] in gram's order.
            let (gt, nt) = (xt[k] - cabq + cbbr, xdt[k] - zabq + zbbr);
            let mut d = 0.0;
            let (ec, ez) = (c_aii - cabq - cabq + cbbd[k], z_aii - zabq - zabq + zbbd[k]);
            d += ec * ez - g_ii * n_ii;
            let (ec, ez) = (
                caa[k] - c_abi - cabd[k] + cbbr,
                zaa[k] - z_abi - zabd[k] + zbbr,
            );
            d += ec * ez - g[k] * n[k];
            let (ec, ez) = (
                caat[k] - cabd[k] - c_abi + cbbq,
                zaat[k] - zabd[k] - z_abi + zbbq,
            );
            d += ec * ez - gt * nt;
            let (ec, ez) = (
                cad[k] - cabt[k] - cabt[k] + c_bbi,
                zad[k] - zabt[k] - zabt[k] + z_bbi,
            );
            d += ec * ez - gd[k] * nd[k];
            *o += d;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::CommutativityStats;
    use super::*;
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn moments(rng: &mut ChaCha8Rng, d: usize) -> Moments {
        let mut rand = |r: usize| Array2::from_shape_fn((r, d), |_| rng.random_range(-1.0..1.0));
        let mut st = CommutativityStats::new(d);
        st.update(rand(3 * d).view(), rand(3 * d).view()).unwrap();
        st.moments().unwrap()
    }

    /// A round after a few swaps updates the scan instead of recomputing it: the operands equal
    /// the ones made from scratch bit for bit, and `W` equals the fresh products to rounding.
    #[test]
    fn updated_scan_equals_the_scan_from_scratch() {
        let mut rng = ChaCha8Rng::seed_from_u64(21);
        let d = 40;
        let (c, z) = (moments(&mut rng, d), moments(&mut rng, d));
        let mut q: Vec<usize> = (0..d).collect();
        q.shuffle(&mut rng);
        let mut updated = RoundBuffers::new(d);
        updated.fill(&c, &z, &q);
        for round in 0..6 {
            // 1 to 5 disjoint swaps (at most d / 4 units change): the update path.
            let mut units: Vec<usize> = (0..d).collect();
            units.shuffle(&mut rng);
            for pair in units.chunks(2).take(1 + round % 5) {
                q.swap(pair[0], pair[1]);
            }
            updated.fill(&c, &z, &q);
            let mut fresh = RoundBuffers::new(d);
            fresh.fill(&c, &z, &q);
            for (u, f) in [
                (&updated.cx, &fresh.cx),
                (&updated.zx, &fresh.zx),
                (&updated.cy_t, &fresh.cy_t),
                (&updated.zy_t, &fresh.zy_t),
            ] {
                assert!(u.iter().zip(f).all(|(a, b)| a.to_bits() == b.to_bits()));
            }
            // Entries are sums of d products of values below ~3 in magnitude; six rounds of
            // updates add a few roundings of that size each.
            let scale = fresh.w.iter().fold(1.0_f64, |m, v| m.max(v.abs()));
            for (u, f) in updated.w.iter().zip(&fresh.w) {
                assert!((u - f).abs() <= 1e-12 * scale, "round {round}: {u} vs {f}");
            }
            assert_eq!(updated.w_t, updated.w.t().to_owned());
        }
    }
}
