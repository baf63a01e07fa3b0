//! The objective of commutativity matching, `J(π) = Σ_ℓ J_ℓ`, from the weights and the second
//! moments of the hidden features (see the [parent module](super) for the derivation): the
//! validated problem, the Gram matrices `G = gram(C, q)` every term and every candidate score
//! is built from, and [`commutativity_objective`], which evaluates `J` directly.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use ndarray::{Array2, ArrayView2, Ix2};

use super::stats::{same_widths, Moments};
use super::CommutativityStats;
use crate::error::{Error, Result};
use crate::float::Float;
use crate::matching::par_gemm_abt_into;
use crate::params::Params;
use crate::permutation::{permute_axis, Permutation};
use crate::spec::PermutationSpec;
use crate::{apply_permutations, mlp};

/// `J` and its terms, as returned by [`commutativity_objective`].
#[derive(Clone, Debug, PartialEq)]
pub struct CommutativityObjective {
    /// `J = Σ_ℓ J_ℓ`.
    pub total: f64,
    /// `J_ℓ = tr(M_ℓ G_ℓ M_ℓᵀ)`, `ℓ = 0 … L − 1`.
    pub layers: Vec<f64>,
}

/// The validated problem: f64 weights of every layer and the moments of every hidden layer.
pub(super) struct Problem {
    pub(super) wa: Vec<Array2<f64>>,
    pub(super) wb: Vec<Array2<f64>>,
    pub(super) moments: Vec<Moments>,
    /// Per layer, once asked for: the weight moments that no permutation changes.
    weight_grams: Vec<OnceLock<WeightGrams>>,
}

/// The parts of a layer's weight moments `Z = (UᵀU, UᵀV, VᵀV)` (`U = W_A`, `V = P W_B`) that
/// do not depend on the layer's output permutation `P`: `UᵀU` and `VᵀV = W_Bᵀ Pᵀ P W_B =
/// W_Bᵀ W_B` (computed once, at `P = I`), each with its transpose.
pub(super) struct WeightGrams {
    pub(super) uu: Array2<f64>,
    pub(super) uu_t: Array2<f64>,
    pub(super) vv: Array2<f64>,
    pub(super) vv_t: Array2<f64>,
}

impl Problem {
    /// The problem of these weights and hidden-layer moments (not validated: for tests).
    pub(super) fn from_parts(
        wa: Vec<Array2<f64>>,
        wb: Vec<Array2<f64>>,
        moments: Vec<Moments>,
    ) -> Self {
        let weight_grams = wa.iter().map(|_| OnceLock::new()).collect();
        Self {
            wa,
            wb,
            moments,
            weight_grams,
        }
    }

    /// [`WeightGrams`] of layer `l`, computed at the first call.
    pub(super) fn weight_grams(&self, l: usize) -> &WeightGrams {
        self.weight_grams[l].get_or_init(|| {
            let (u, w) = (&self.wa[l], &self.wb[l]);
            let (uu, vv) = (matmul(u.t(), u.view()), matmul(w.t(), w.view()));
            WeightGrams {
                uu_t: transposed(uu.view()),
                vv_t: transposed(vv.view()),
                uu,
                vv,
            }
        })
    }

    /// Validate the MLPs and the statistics (one per hidden layer, matching widths, non-empty).
    pub(super) fn new<F: Float>(
        a: &Params<F>,
        b: &Params<F>,
        stats: &[CommutativityStats],
    ) -> Result<Self> {
        let widths = same_widths(a, b)?;
        let layers = widths.len() - 1;
        let hidden = &widths[1..layers];
        let found: Vec<usize> = stats.iter().map(CommutativityStats::units).collect();
        if found != hidden {
            return Err(Error::ShapeMismatch {
                what: "commutativity statistics (units of every hidden layer, in order)".into(),
                expected: hidden.to_vec(),
                found,
            });
        }
        let weight = |p: &Params<F>, l: usize| -> Result<Array2<f64>> {
            let w = p.require(&mlp::weight_name(l))?.view();
            let w = w
                .into_dimensionality::<Ix2>()
                .expect("validated by mlp::widths");
            Ok(w.mapv(Float::as_f64))
        };
        Ok(Self::from_parts(
            (0..layers).map(|l| weight(a, l)).collect::<Result<_>>()?,
            (0..layers).map(|l| weight(b, l)).collect::<Result<_>>()?,
            stats
                .iter()
                .map(CommutativityStats::moments)
                .collect::<Result<_>>()?,
        ))
    }

    /// Number of linear layers `L`.
    pub(super) fn layers(&self) -> usize {
        self.wa.len()
    }

    /// The output permutation of layer `l` (identity for the last layer).
    pub(super) fn out_perm<'a>(
        &self,
        perms: &'a [Vec<usize>],
        l: usize,
        id: &'a [usize],
    ) -> &'a [usize] {
        if l + 1 < self.layers() {
            &perms[l]
        } else {
            id
        }
    }

    /// Term `J_l = tr(M G Mᵀ)` at `perms` (0 for `l = 0`).
    pub(super) fn term(&self, perms: &[Vec<usize>], l: usize) -> f64 {
        if l == 0 {
            return 0.0;
        }
        let q = &perms[l - 1];
        let id: Vec<usize> = (0..self.wa[l].nrows()).collect();
        let p = self.out_perm(perms, l, &id);
        let (wa, wb) = (&self.wa[l], &self.wb[l]);
        let m = Array2::from_shape_fn(wa.dim(), |(r, c)| wa[[r, c]] - wb[[p[r], q[c]]]);
        let g = gram(&self.moments[l - 1], q);
        trace_mgmt(&m, &g)
    }
}

/// Row `i` of [`gram`]: `G[i, j] = C_AA[i, j] − C_AB[i, q(j)] − C_AB[j, q(i)] + C_BB[q(i), q(j)]`,
/// from four contiguous rows (`C_AB[j, q(i)]` is row `q(i)` of `C_ABᵀ`).
pub(super) struct GramRow<'a> {
    aa: &'a [f64],
    ab: &'a [f64],
    ab_t: &'a [f64],
    bb: &'a [f64],
    q: &'a [usize],
}

impl<'a> GramRow<'a> {
    pub(super) fn new(m: &'a Moments, q: &'a [usize], i: usize) -> Self {
        let row = |x: &'a Array2<f64>, r: usize| {
            let n = x.ncols();
            &x.as_slice().expect("standard layout")[r * n..(r + 1) * n]
        };
        Self {
            aa: row(&m.aa, i),
            ab: row(&m.ab, i),
            ab_t: row(&m.ab_t, q[i]),
            bb: row(&m.bb, q[i]),
            q,
        }
    }

    /// The whole row into `out` (length `d`): for every `j`, `C_AA[i, j] − C_AB[i, q(j)]`, then
    /// `− C_AB[j, q(i)]`, then `+ C_BB[q(i), q(j)]`, in this order (the order of the swaps'
    /// single entries), with the entries at `q(j)` gathered first so that the arithmetic runs
    /// on contiguous slices.
    pub(super) fn fill(&self, out: &mut [f64]) {
        for (o, &qj) in out.iter_mut().zip(self.q) {
            *o = self.ab[qj];
        }
        for ((o, &a), &t) in out.iter_mut().zip(self.aa).zip(self.ab_t) {
            *o = a - *o - t;
        }
        for (o, &qj) in out.iter_mut().zip(self.q) {
            *o += self.bb[qj];
        }
    }
}

/// Column `j` of [`gram`] into `out`: `G[i, j]` for every `i` by the operations of
/// [`GramRow::fill`] in its order (so the same values), from rows of the transposes and
/// gathers along rows.
pub(super) fn gram_column(m: &Moments, q: &[usize], j: usize, out: &mut [f64]) {
    fn row(x: &Array2<f64>, r: usize) -> &[f64] {
        let n = x.ncols();
        &x.as_slice().expect("standard layout")[r * n..(r + 1) * n]
    }
    let (aa, ab_col, ab_row, bb) = (
        row(&m.aa_t, j),
        row(&m.ab_t, q[j]),
        row(&m.ab, j),
        row(&m.bb_t, q[j]),
    );
    for (((o, &a), &b), &qi) in out.iter_mut().zip(aa).zip(ab_col).zip(q) {
        *o = (a - b) - ab_row[qi] + bb[qi];
    }
}

/// `G = C_AA − C_AB Qᵀ − Q C_BA + Q C_BB Qᵀ`, element by element (exactly symmetric).
pub(super) fn gram(m: &Moments, q: &[usize]) -> Array2<f64> {
    let d = q.len();
    let mut out = Array2::zeros((d, d));
    gram_into(m, q, &mut out);
    out
}

/// [`gram`] written into `out` (`d × d`, standard layout), rows in parallel: every entry is
/// computed by the same operations ([`GramRow::fill`]), whatever the thread count.
pub(super) fn gram_into(m: &Moments, q: &[usize], out: &mut Array2<f64>) {
    fill_rows(out, |i, row| GramRow::new(m, q, i).fill(row));
}

/// `f(r, row)` for every row `r` of `m` (standard layout), in parallel with the `rayon`
/// feature. For element-wise fills only: each row is written by one call, so the result does
/// not depend on the thread count.
pub(super) fn fill_rows(m: &mut Array2<f64>, f: impl Fn(usize, &mut [f64]) + Sync) {
    let c = m.ncols().max(1);
    let s = m.as_slice_mut().expect("standard layout");
    #[cfg(feature = "rayon")]
    {
        use rayon::prelude::*;
        s.par_chunks_mut(c)
            .enumerate()
            .for_each(|(r, row)| f(r, row));
    }
    #[cfg(not(feature = "rayon"))]
    s.chunks_mut(c).enumerate().for_each(|(r, row)| f(r, row));
}

/// `⟨gram(c, q), gram(z, q)⟩`, summed in row order (the same sum as forming both matrices
/// first): the products row by row in parallel, then one sum in order, so the result does
/// not depend on the thread count.
pub(super) fn gram_inner(c: &Moments, z: &Moments, q: &[usize]) -> f64 {
    let d = q.len();
    let row = |i: usize| -> Vec<f64> {
        let (mut gc, mut gz) = (vec![0.0; d], vec![0.0; d]);
        GramRow::new(c, q, i).fill(&mut gc);
        GramRow::new(z, q, i).fill(&mut gz);
        for (x, y) in gc.iter_mut().zip(&gz) {
            *x *= y;
        }
        gc
    };
    #[cfg(feature = "rayon")]
    let rows: Vec<Vec<f64>> = {
        use rayon::prelude::*;
        (0..d).into_par_iter().map(row).collect()
    };
    #[cfg(not(feature = "rayon"))]
    let rows: Vec<Vec<f64>> = (0..d).map(row).collect();
    rows.iter().flatten().sum()
}

/// `m` transposed, in standard layout, in 32 × 32 tiles (reads and writes stay in cache).
pub(super) fn transposed(m: ArrayView2<'_, f64>) -> Array2<f64> {
    let mut out = Array2::zeros((m.ncols(), m.nrows()));
    transpose_into(m, &mut out);
    out
}

/// `out ← mᵀ` (`out` in standard layout, of `m`'s shape reversed), in 32 × 32 tiles.
pub(super) fn transpose_into(m: ArrayView2<'_, f64>, out: &mut Array2<f64>) {
    const TILE: usize = 32;
    let m = m.as_standard_layout();
    let (r, c) = m.dim();
    debug_assert_eq!(out.dim(), (c, r));
    let src = m.as_slice().expect("standard layout");
    let out = out.as_slice_mut().expect("standard layout");
    for i0 in (0..r).step_by(TILE) {
        for j0 in (0..c).step_by(TILE) {
            for i in i0..(i0 + TILE).min(r) {
                let row = &src[i * c..(i + 1) * c];
                for j in j0..(j0 + TILE).min(c) {
                    out[j * r + i] = row[j];
                }
            }
        }
    }
}

/// `tr(M G Mᵀ) = Σ_{ij} (M G)_{ij} M_{ij}`, summed in f64 in row order.
fn trace_mgmt(m: &Array2<f64>, g: &Array2<f64>) -> f64 {
    let mg = matmul(m.view(), g.view());
    mg.iter().zip(m).map(|(x, y)| x * y).sum()
}

/// `X Y` in f64 over fixed row blocks (thread-count independent).
pub(super) fn matmul(x: ArrayView2<'_, f64>, y: ArrayView2<'_, f64>) -> Array2<f64> {
    let mut out = Array2::zeros((x.nrows(), y.ncols()));
    par_gemm_abt_into(x, y.t(), 0.0, &mut out);
    out
}
/// `J(π)` and its terms evaluated directly: B is permuted by `perms` (keys `P_0 … P_{L−2}`,
/// as [`PermutationSpec::mlp`]) with [`apply_permutations`], the moments of B's features are
/// permuted alike (`C_AB ← C_AB Qᵀ`, `C_BB ← Q C_BB Qᵀ`), and every layer's
/// `J_ℓ = tr((W_A − W̃_B) G (W_A − W̃_B)ᵀ)`, `G = C_AA − C_AB − C_ABᵀ + C_BB`, is summed in f64
/// (`J_0 = 0`). This is the per-sample squared Frobenius norm of the commutativity residuals
/// (Zhou et al. 2023, Def. 4) of (A, π(B)), computed from second moments only.
///
/// # Errors
/// As [`commutativity_matching`](super::commutativity_matching) for the models and statistics; what [`apply_permutations`]
/// reports for missing or mis-sized permutations.
pub fn commutativity_objective<F: Float>(
    a: &Params<F>,
    b: &Params<F>,
    stats: &[CommutativityStats],
    perms: &BTreeMap<String, Permutation>,
) -> Result<CommutativityObjective> {
    let layers = stats.len() + 1;
    let b_perm = apply_permutations(&PermutationSpec::mlp(layers), perms, b)?;
    let problem = Problem::new(a, &b_perm, stats)?;
    let mut out = vec![0.0];
    for l in 1..layers {
        let q = perms
            .get(&format!("P_{}", l - 1))
            .expect("apply_permutations checked every permutation");
        let mom = &problem.moments[l - 1];
        let ab = permute_axis(&mom.ab, 1, q)?;
        let bb = permute_axis(&permute_axis(&mom.bb, 0, q)?, 1, q)?;
        let g = &mom.aa - &ab - ab.t() + &bb;
        let m = &problem.wa[l] - &problem.wb[l];
        out.push(trace_mgmt(&m, &g));
    }
    Ok(CommutativityObjective {
        total: out.iter().sum(),
        layers: out,
    })
}
