//! The scores of every pairwise swap of one round, row by row from contiguous memory.
//!
//! [`SwapState::scan_delta`] scores the swap of `i < j` in `O(1)`, but reads the scan and the
//! moments at `q(i)`, `q(j)` and down columns: for all `d²/2` pairs of a 512-unit layer that
//! is ~60 scattered reads per pair, and it dominated the round. [`RowLayout`] holds copies of
//! those matrices gathered (`m[:, q]`, `m[q, :]`) and transposed so that, for a fixed `i`,
//! every quantity indexed by `j` lies in one contiguous row. [`RowLayout::deltas`] then
//! evaluates exactly the same operations in the same order as `scan_delta` (so the same
//! result, bit for bit) in a loop over `j` that the compiler can vectorise.
//!
//! The transposes of the moments do not depend on `P_ℓ`, so they are made once per layer
//! visit ([`Transposes`]); each round only gathers rows and columns, which reads and writes
//! memory in order.

use ndarray::{Array1, Array2, ArrayBase, Data, Ix2, Zip};

use super::super::transposed;
use super::{products, Moments, SwapState};

/// `m[:, q]` (`m[i, q(j)]` at `[i, j]`), in standard layout.
fn columns<S: Data<Elem = f64>>(m: &ArrayBase<S, Ix2>, q: &[usize]) -> Array2<f64> {
    let m = m.as_standard_layout();
    let c = m.ncols();
    let src = m.as_slice().expect("standard layout");
    let mut out = Vec::with_capacity(m.nrows() * q.len());
    for row in src.chunks_exact(c.max(1)).take(m.nrows()) {
        out.extend(q.iter().map(|&k| row[k]));
    }
    Array2::from_shape_vec((m.nrows(), q.len()), out).expect("sizes agree")
}

/// `m[q, :]` (`m[q(i), j]` at `[i, j]`), in standard layout.
fn rows(m: &Array2<f64>, q: &[usize]) -> Array2<f64> {
    let c = m.ncols();
    let mut out = Vec::with_capacity(q.len() * c);
    for &k in q {
        out.extend_from_slice(row_from(m, k, 0));
    }
    Array2::from_shape_vec((q.len(), c), out).expect("sizes agree")
}

/// `a − b`, element by element, in standard layout.
fn minus(a: &Array2<f64>, b: &Array2<f64>) -> Array2<f64> {
    Zip::from(a).and(b).map_collect(|&x, &y| x - y)
}

/// Row `r` of `m` (standard layout) from column `from` on.
fn row_from<S: Data<Elem = f64>>(m: &ArrayBase<S, Ix2>, r: usize, from: usize) -> &[f64] {
    let n = m.ncols();
    &m.as_slice().expect("standard layout")[r * n + from..(r + 1) * n]
}

/// `m[k, q(k)]` for every `k`.
fn matched(m: &Array2<f64>, q: &[usize]) -> Array1<f64> {
    q.iter().enumerate().map(|(k, &qk)| m[[k, qk]]).collect()
}

/// `m[q(k), k]` for every `k`.
fn matched_rows(m: &Array2<f64>, q: &[usize]) -> Array1<f64> {
    q.iter().enumerate().map(|(k, &qk)| m[[qk, k]]).collect()
}

/// The transposes of one moment triple (`abᵀ` is [`Moments::ab_t`]).
struct MomentTransposes {
    aa: Array2<f64>,
    bb: Array2<f64>,
}

impl MomentTransposes {
    fn new(m: &Moments) -> Self {
        Self {
            aa: transposed(m.aa.view()),
            bb: transposed(m.bb.view()),
        }
    }
}

/// What stays fixed during one layer visit: the transposes of the feature moments `C`, the
/// weight moments `Z` and of `S_ℓ`.
pub(in super::super) struct Transposes {
    c: MomentTransposes,
    z: MomentTransposes,
    s: Option<Array2<f64>>,
}

impl Transposes {
    /// The transposes of `state`'s fixed matrices.
    pub(super) fn new(state: &SwapState<'_>) -> Self {
        Self {
            c: MomentTransposes::new(state.c),
            z: MomentTransposes::new(state.z),
            s: state.s.map(|s| transposed(s.view())),
        }
    }
}

/// One moment triple `(aa, ab, bb)` and its Gram matrix `g = gram(m, q)`, laid out for rows,
/// with the scan's `x = aa − ab[:, q]` and `y = bb[:, q] − abᵀ` it determines.
struct MomentRows<'a> {
    /// `aa[i, j]`.
    aa: &'a Array2<f64>,
    /// `aa[j, i]` at `[i, j]`.
    aa_t: &'a Array2<f64>,
    /// `aa[k, k]`.
    aa_d: Array1<f64>,
    /// `ab[i, q(j)]` at `[i, j]`.
    ab_q: Array2<f64>,
    /// `ab[j, x]` at `[x, j]`.
    ab_t: &'a Array2<f64>,
    /// `ab[k, q(k)]`.
    ab_d: Array1<f64>,
    /// `bb[x, q(j)]` at `[x, j]`.
    bb_q: Array2<f64>,
    /// `bb[q(j), x]` at `[x, j]`.
    bb_r: Array2<f64>,
    /// `bb[q(k), q(k)]`.
    bb_d: Array1<f64>,
    /// `g[i, j]`.
    g: &'a Array2<f64>,
    /// `g[j, i]` at `[i, j]`.
    g_t: Array2<f64>,
    /// `g[k, k]`.
    g_d: Array1<f64>,
    /// `x[a, k] = aa[a, k] − ab[a, q(k)]`, as it is and transposed.
    x: Array2<f64>,
    x_t: Array2<f64>,
    /// `y[b, k] = bb[b, q(k)] − ab[k, b]`, as it is and gathered: `y[q(j), k]` at `[k, j]`.
    y: Array2<f64>,
    y_r: Array2<f64>,
    /// `y` again in column-major layout, the layout in which the products have always been
    /// made from it (the GEMM's and the row dot products' rounding depends on the layout).
    y_f: Array2<f64>,
}

impl<'a> MomentRows<'a> {
    fn new(m: &'a Moments, t: &'a MomentTransposes, g: &'a Array2<f64>, q: &[usize]) -> Self {
        let ab_q = columns(&m.ab, q);
        let bb_q = columns(&m.bb, q);
        // bb[q(j), x] = bbᵀ[x, q(j)].
        let bb_r = columns(&t.bb, q);
        // bb_r[q(k), j] = bb[q(j), q(k)], ab_t[q(i), j] = ab[j, q(i)].
        let bb_rr = rows(&bb_r, q);
        let x = minus(&m.aa, &ab_q);
        // x[j, i] = aa[j, i] − ab[j, q(i)].
        let x_t = minus(&t.aa, &rows(&m.ab_t, q));
        // g[j, i] = aa[j, i] − ab[j, q(i)] − ab[i, q(j)] + bb[q(j), q(i)], in gram's order.
        let g_t = Zip::from(&x_t)
            .and(&ab_q)
            .and(&bb_rr)
            .map_collect(|&x, &ab, &bb| x - ab + bb);
        // y[q(j), k] = bb[q(j), q(k)] − ab[k, q(j)].
        let y_r = minus(&bb_rr, &ab_q);
        Self {
            aa: &m.aa,
            aa_t: &t.aa,
            aa_d: m.aa.diag().to_owned(),
            ab_d: matched(&m.ab, q),
            ab_t: &m.ab_t,
            bb_d: q.iter().map(|&k| m.bb[[k, k]]).collect(),
            bb_r,
            g,
            g_t,
            g_d: g.diag().to_owned(),
            y: minus(&bb_q, &m.ab_t),
            // yᵀ[k, b] = bbᵀ[q(k), b] − ab[k, b], viewed as y.
            y_f: minus(&rows(&t.bb, q), &m.ab).reversed_axes(),
            x,
            x_t,
            y_r,
            ab_q,
            bb_q,
        }
    }
}

/// Everything [`RowLayout::deltas`] reads, for one round at the permutation `q`.
pub(super) struct RowLayout<'a> {
    q: &'a [usize],
    c: MomentRows<'a>,
    z: MomentRows<'a>,
    /// `S[i, q(j)]` at `[i, j]`, `S[j, x]` at `[x, j]` and `S[k, q(k)]` (`None` for ℓ = 0).
    s: Option<(Array2<f64>, &'a Array2<f64>, Array1<f64>)>,
    /// The diagonals `x[k, k]`, `ẋ[k, k]` and the matched `y[q(k), k]`, `ẏ[q(k), k]`.
    x_d: Array1<f64>,
    xd_d: Array1<f64>,
    y_d: Array1<f64>,
    yd_d: Array1<f64>,
    /// The scan's `W` gathered (`W[i, q(j)]` at `[i, j]`), transposed and matched.
    w_q: Array2<f64>,
    w_t: Array2<f64>,
    w_d: Array1<f64>,
}

impl<'a> RowLayout<'a> {
    /// The layout of `state`'s round, with the products of the scan (`W`) made here.
    pub(super) fn new(state: &'a SwapState<'a>, t: &'a Transposes) -> Self {
        let q = &state.q[..];
        let c = MomentRows::new(state.c, &t.c, &state.g, q);
        let z = MomentRows::new(state.z, &t.z, &state.n, q);
        let w = products(&c.x, &c.y_f, &z.x, &z.y_f);
        Self {
            q,
            s: state.s.map(|s| {
                (
                    columns(s, q),
                    t.s.as_ref().expect("S_ℓ and its transpose"),
                    matched(s, q),
                )
            }),
            x_d: c.x.diag().to_owned(),
            xd_d: z.x.diag().to_owned(),
            y_d: matched_rows(&c.y, q),
            yd_d: matched_rows(&z.y, q),
            w_q: columns(&w, q),
            w_t: transposed(w.view()),
            w_d: matched(&w, q),
            c,
            z,
        }
    }

    /// The scan `(x, y, ẋ, ẏ)` this layout holds (for tests).
    #[cfg(test)]
    pub(super) fn xy(&self) -> [&Array2<f64>; 4] {
        [&self.c.x, &self.c.y, &self.z.x, &self.z.y]
    }

    /// `out[j − i − 1]` = the exact change of `J` when `i` and `j` swap, for `j = i + 1 … d − 1`:
    /// [`SwapState::scan_delta`]'s operations in its order, so the same values.
    #[allow(
        clippy::similar_names,
        clippy::too_many_lines,
        clippy::many_single_char_names
    )]
    pub(super) fn deltas(&'a self, i: usize, out: &mut [f64]) {
        let qi = self.q[i];
        let row = |m: &'a Array2<f64>, r: usize| row_from(m, r, i + 1);
        let tail = |v: &'a Array1<f64>| &v.as_slice().expect("contiguous")[i + 1..];
        // Linear term: −2 (S[i, q(j)] + S[j, q(i)] − S[i, q(i)] − S[j, q(j)]).
        match &self.s {
            Some((s_q, s_t, s_d)) => {
                let (sq, st, sd, sii) = (row(s_q, i), row(s_t, qi), tail(s_d), s_d[i]);
                for (k, o) in out.iter_mut().enumerate() {
                    *o = -2.0 * (sq[k] + st[k] - sii - sd[k]);
                }
            }
            None => out.fill(0.0),
        }
        // Rows: Σ_{k ∉ {i, j}} of rows i, j of G ⊙ N before and after the swap, from the scan.
        {
            let (c, z) = (&self.c, &self.z);
            let (x, xd, xt, xdt) = (row(&c.x, i), row(&z.x, i), row(&c.x_t, i), row(&z.x_t, i));
            let (yi, ydi, yr, ydr) = (row(&c.y, qi), row(&z.y, qi), row(&c.y_r, i), row(&z.y_r, i));
            let (xj, xdj, yj, ydj) = (
                tail(&self.x_d),
                tail(&self.xd_d),
                tail(&self.y_d),
                tail(&self.yd_d),
            );
            let (wq, wt, wd) = (row(&self.w_q, i), row(&self.w_t, qi), tail(&self.w_d));
            let (xii, xdii, yii, ydii, wii) = (
                self.x_d[i],
                self.xd_d[i],
                self.y_d[i],
                self.yd_d[i],
                self.w_d[i],
            );
            let h_ii = (xii + yii) * (xdii + ydii);
            for (k, o) in out.iter_mut().enumerate() {
                // row(i, q(j)), row(i, q(i)), row(j, q(i)), row(j, q(j)).
                let r1 =
                    wq[k] - (xii + yr[k]) * (xdii + ydr[k]) - (x[k] + yj[k]) * (xd[k] + ydj[k]);
                let r2 = wii - h_ii - (x[k] + yi[k]) * (xd[k] + ydi[k]);
                let r3 =
                    wt[k] - (xt[k] + yii) * (xdt[k] + ydii) - (xj[k] + yi[k]) * (xdj[k] + ydi[k]);
                let r4 = wd[k]
                    - (xt[k] + yr[k]) * (xdt[k] + ydr[k])
                    - (xj[k] + yj[k]) * (xdj[k] + ydj[k]);
                let rows = r1 - r2 + r3 - r4;
                *o += 2.0 * rows;
            }
        }
        // The {i, j}² block of ⟨G, N⟩: entries (i, i), (i, j), (j, i), (j, j) after the swap.
        let (c, z) = (&self.c, &self.z);
        let (caa, zaa) = (row(c.aa, i), row(z.aa, i));
        let (caat, zaat) = (row(c.aa_t, i), row(z.aa_t, i));
        let (cad, zad) = (tail(&c.aa_d), tail(&z.aa_d));
        let (cabq, zabq) = (row(&c.ab_q, i), row(&z.ab_q, i));
        let (cabt, zabt) = (row(c.ab_t, qi), row(z.ab_t, qi));
        let (cabd, zabd) = (tail(&c.ab_d), tail(&z.ab_d));
        let (cbbq, zbbq) = (row(&c.bb_q, qi), row(&z.bb_q, qi));
        let (cbbr, zbbr) = (row(&c.bb_r, qi), row(&z.bb_r, qi));
        let (cbbd, zbbd) = (tail(&c.bb_d), tail(&z.bb_d));
        let (g, n, gt, nt, gd, nd) = (
            row(c.g, i),
            row(z.g, i),
            row(&c.g_t, i),
            row(&z.g_t, i),
            tail(&c.g_d),
            tail(&z.g_d),
        );
        let (c_aii, c_abi, c_bbi, g_ii) = (c.aa_d[i], c.ab_d[i], c.bb_d[i], c.g_d[i]);
        let (z_aii, z_abi, z_bbi, n_ii) = (z.aa_d[i], z.ab_d[i], z.bb_d[i], z.g_d[i]);
        for (k, o) in out.iter_mut().enumerate() {
            let mut d = 0.0;
            let (ec, ez) = (
                c_aii - cabq[k] - cabq[k] + cbbd[k],
                z_aii - zabq[k] - zabq[k] + zbbd[k],
            );
            d += ec * ez - g_ii * n_ii;
            let (ec, ez) = (
                caa[k] - c_abi - cabd[k] + cbbr[k],
                zaa[k] - z_abi - zabd[k] + zbbr[k],
            );
            d += ec * ez - g[k] * n[k];
            let (ec, ez) = (
                caat[k] - cabd[k] - c_abi + cbbq[k],
                zaat[k] - zabd[k] - z_abi + zbbq[k],
            );
            d += ec * ez - gt[k] * nt[k];
            let (ec, ez) = (
                cad[k] - cabt[k] - cabt[k] + c_bbi,
                zad[k] - zabt[k] - zabt[k] + z_bbi,
            );
            d += ec * ez - gd[k] * nd[k];
            *o += d;
        }
    }
}
