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
        }
    }
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

/// `W[a, x] = (X Ẏᵀ + Ẋ Yᵀ)[a, x] + ⟨x_a, ẋ_a⟩ + ⟨y_x, ẏ_x⟩` into `w` (`w2` is scratch):
/// the products in fixed row blocks, then the sums in this order, element by element.
fn products(
    (x, y, xd, yd): (ArrayView2<'_, f64>, ArrayView2<'_, f64>, ArrayView2<'_, f64>, ArrayView2<'_, f64>),
    w: &mut Array2<f64>,
    w2: &mut Array2<f64>,
) {
    let dot = |p: ArrayView2<'_, f64>, r: ArrayView2<'_, f64>| -> Array1<f64> {
        p.rows()
            .into_iter()
            .zip(r.rows())
            .map(|(a, b)| a.dot(&b))
            .collect()
    };
    let (t1, t4) = (dot(x, xd), dot(y, yd));
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
        let b = buffers;
        fill_xy(state.c, q, &mut b.cx, &mut b.cy_t);
        fill_xy(state.z, q, &mut b.zx, &mut b.zy_t);
        let operands = (b.cx.view(), b.cy_t.t(), b.zx.view(), b.zy_t.t());
        products(operands, &mut b.w, &mut b.w2);
        transpose_into(b.w.view(), &mut b.w_t);
        let b = &*b;
        Self {
            q,
            c: MomentRows::new(state.c, &state.g, &b.cx, &b.cy_t, q),
            z: MomentRows::new(state.z, &state.n, &b.zx, &b.zy_t, q),
            s: state.s.map(|s| {
                (
                    s,
                    s_t.expect("S_ℓ and its transpose"),
                    matched(s, q),
                )
            }),
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
        let (gc, gz) = (
            Gathered::new(c.m, i, qi, qs),
            Gathered::new(z.m, i, qi, qs),
        );
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
            let (xii, xdii, yii, ydii, wii) =
                (c.x_d[i], z.x_d[i], c.y_d[i], z.y_d[i], self.w_d[i]);
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
            let (ec, ez) = (
                c_aii - cabq - cabq + cbbd[k],
                z_aii - zabq - zabq + zbbd[k],
            );
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
