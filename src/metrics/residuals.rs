//! Weak additivity of ReLU and commutativity: the two properties that the LLFC paper shows
//! imply LLFC (Zhou et al. 2023, Thm. 1 and §5).

use ndarray::{Array2, ArrayBase, ArrayView2, Axis, Data, RemoveAxis, Zip};

use super::cosine::cosine_from_sums;
use super::scaled::{common, contiguous, exponent, lane_sums, ldexp, max_abs, max_abs_lanes, pow2};
use super::{
    check_alpha, check_features, check_same, distance_sums, relative_from_sums, vanilla_from_sums,
    CosineVariant, SampleStats,
};
use crate::error::{Error, Result};
use crate::float::Float;

/// Weak-additivity residuals of ReLU at one α (see [`weak_additivity`]).
#[derive(Clone, Debug, PartialEq)]
pub struct WeakAdditivity {
    /// The interpolation coefficient α.
    pub alpha: f64,
    /// `‖left − right‖_F / ‖right‖_F`; `None` if `right = 0`.
    pub relative: Option<f64>,
    /// The vanilla distance `‖left − right‖² / (‖left‖ ‖right‖)`; `None` if either is 0.
    pub vanilla: Option<f64>,
    /// Per sample `1 − cos⟨left_i, right_i⟩` (zero vectors skipped and counted). Both sides are
    /// non-negative, so `cos ≥ 0` and the signed and absolute variants coincide.
    pub cosine: SampleStats,
}

/// Weak additivity of ReLU `σ(z) = max(z, 0)` on the pre-activations `z_a = Z_A`, `z_b = Z_B`
/// of the same samples at one layer (`[samples, …]`, equal shapes):
///
/// ```text
/// left  = σ(α Z_A + (1 − α) Z_B)
/// right = α σ(Z_A) + (1 − α) σ(Z_B)
/// relative = ‖left − right‖_F / ‖right‖_F
/// vanilla  = ‖left − right‖²_F / (‖left‖_F ‖right‖_F)
/// cosine_i = 1 − cos⟨left_i, right_i⟩     (per sample, flattened)
/// ```
///
/// For α ∈ [0, 1] ReLU is linear on each orthant, so all residuals are exactly 0 when `Z_A` and
/// `Z_B` have the same sign pattern (Zhou et al. 2023, Def. 3, weak additivity for ReLU).
/// `left` and `right` are formed element by element in f64 and never stored; every α is
/// accepted (α outside [0, 1] extrapolates). Costs `O(len)`.
///
/// # Errors
/// [`Error::InvalidArgument`] if `alpha` is not finite or the arrays are 0-dimensional;
/// [`Error::ShapeMismatch`] if the shapes differ; [`Error::EmptyInput`] for empty arrays;
/// [`Error::NonFinite`] for a NaN or ±∞ entry.
///
/// # Examples
/// ```
/// use ndarray::array;
/// let z_a = array![[1.0, -2.0], [3.0, 1.0]];
/// let z_b = array![[-1.0, -1.0], [1.0, 5.0]]; // sample 1 has z_a's sign pattern
/// let w = llfc::metrics::weak_additivity(&z_a, &z_b, 0.5)?;
/// // sample 0: left = σ([0, −1.5]) = [0, 0], right = [0.5, 0] → skipped (left is zero)
/// assert_eq!(w.cosine.values, [None, Some(0.0)]);
/// // ‖left − right‖ = 0.5, ‖right‖ = ‖[0.5, 0, 2, 3]‖
/// assert_eq!(w.relative, Some(0.5 / (0.25f64 + 4.0 + 9.0).sqrt()));
/// # Ok::<(), llfc::Error>(())
/// ```
pub fn weak_additivity<F: Float, S1: Data<Elem = F>, S2: Data<Elem = F>, D: RemoveAxis>(
    z_a: &ArrayBase<S1, D>,
    z_b: &ArrayBase<S2, D>,
    alpha: f64,
) -> Result<WeakAdditivity> {
    check_alpha(alpha)?;
    check_features(z_a, "pre-activations Z_A")?;
    check_same(z_a, z_b, "pre-activations Z_B", "pre-activations Z_A")?;
    Ok(weak_additivity_unchecked(z_a, z_b, alpha))
}

/// [`weak_additivity`] of inputs already checked (finite α, `z_a` and `z_b` finite, non-empty,
/// of one shape).
pub(super) fn weak_additivity_unchecked<F, S1, S2, D>(
    z_a: &ArrayBase<S1, D>,
    z_b: &ArrayBase<S2, D>,
    alpha: f64,
) -> WeakAdditivity
where
    F: Float,
    S1: Data<Elem = F>,
    S2: Data<Elem = F>,
    D: RemoveAxis,
{
    let beta = 1.0 - alpha;
    // Per sample: both sides of the sample divided by one power of two near the largest
    // magnitude they can reach (ReLU is positively homogeneous, so left and right scale alike);
    // the whole-matrix sums are brought to a common scale afterwards.
    let mut sums: Vec<(f64, f64, f64, i32)> = Vec::with_capacity(z_a.len_of(Axis(0)));
    let values = z_a
        .axis_iter(Axis(0))
        .zip(z_b.axis_iter(Axis(0)))
        .map(|(ra, rb)| {
            let (ra, rb) = (contiguous(&ra), contiguous(&rb));
            let n = ra.len();
            let (ra, rb) = (&ra[..n], &rb[..n]);
            let bound = (alpha.abs() + beta.abs()) * max_abs_lanes(ra).max(max_abs_lanes(rb));
            let e = exponent(bound);
            let s = pow2(-e);
            let [diff, dot, sl, sr] = lane_sums(n, |k| {
                let (x, y) = (ra[k].as_f64() * s, rb[k].as_f64() * s);
                let left = (alpha * x + beta * y).max(0.0);
                let right = alpha * x.max(0.0) + beta * y.max(0.0);
                [
                    (left - right) * (left - right),
                    left * right,
                    left * left,
                    right * right,
                ]
            });
            sums.push((diff, sl, sr, e));
            cosine_from_sums(dot, sl, sr).map(|c| CosineVariant::Signed.distance(c))
        })
        .collect();
    let (diff, _) = common(sums.iter().map(|t| (t.0, t.3)), 2);
    let (nl, _) = common(sums.iter().map(|t| (t.1, t.3)), 2);
    let (nr, _) = common(sums.iter().map(|t| (t.2, t.3)), 2);
    WeakAdditivity {
        alpha,
        relative: relative_from_sums(diff, nr),
        vanilla: vanilla_from_sums(diff, nl, nr),
        cosine: SampleStats::from_values(values),
    }
}

/// Commutativity residuals of one layer (see [`commutativity`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Commutativity {
    /// `‖R‖_F / ‖W_A H_A + W_B H_B‖_F`; `None` if the denominator is 0.
    pub relative: Option<f64>,
    /// The vanilla distance between `W_A H_A + W_B H_B` and `W_A H_B + W_B H_A`,
    /// `‖R‖²_F / (‖W_A H_A + W_B H_B‖_F ‖W_A H_B + W_B H_A‖_F)`; `None` if a norm is 0.
    pub vanilla: Option<f64>,
    /// The baseline vanilla distance between `W_A H_A` and `W_B H_B`; `None` if a norm is 0.
    pub baseline: Option<f64>,
    /// `‖R‖_F = ‖(W_A − W_B)(H_A − H_B)‖_F`.
    pub residual_norm: f64,
}

/// Check `W_A`, `W_B` (`[out, in]`) and `H_A`, `H_B` (`[samples, in]`).
fn check_layer<F: Float>(
    w_a: &ArrayView2<'_, F>,
    w_b: &ArrayView2<'_, F>,
    h_a: &ArrayView2<'_, F>,
    h_b: &ArrayView2<'_, F>,
) -> Result<()> {
    check_features(w_a, "weight W_A")?;
    check_same(w_a, w_b, "weight W_B", "weight W_A")?;
    if h_a.ncols() != w_a.ncols() {
        return Err(Error::ShapeMismatch {
            what: "inputs H_A ([samples, in], in = the weights' columns)".into(),
            expected: vec![h_a.nrows(), w_a.ncols()],
            found: h_a.shape().to_vec(),
        });
    }
    check_features(h_a, "inputs H_A")?;
    check_same(h_a, h_b, "inputs H_B", "inputs H_A")
}

/// The commutativity residual of one layer, in the `[samples, out]` layout:
///
/// ```text
/// Rᵀ = (H_A − H_B)(W_A − W_B)ᵀ = H_A W_Aᵀ + H_B W_Bᵀ − H_B W_Aᵀ − H_A W_Bᵀ
/// ```
///
/// With weights `[out, in]` (PyTorch) and inputs `H` as `[samples, in]` (rows are samples),
/// this is the transpose of the paper's `R = W_A H_A + W_B H_B − W_A H_B − W_B H_A =
/// (W_A − W_B)(H_A − H_B)` with `H` as `[in, samples]` (Zhou et al. 2023, Def. 4). Computed
/// through the factorisation, in the input precision `F` (one `[samples, in] × [in, out]`
/// product, `2 N·in·out` flops), so it is exactly zero when `W_A = W_B` or `H_A = H_B`.
/// Biases are not involved (they cancel in `R`).
///
/// # Errors
/// [`Error::ShapeMismatch`] if `W_B`'s shape differs from `W_A`'s, `H_A` does not have `in`
/// columns, or `H_B`'s shape differs from `H_A`'s; [`Error::EmptyInput`] for an empty array;
/// [`Error::NonFinite`] for a NaN or ±∞ entry.
///
/// # Examples
/// ```
/// use ndarray::array;
/// let (w_a, w_b) = (array![[1.0, 2.0]], array![[0.0, 1.0]]); // one output, two inputs
/// let (h_a, h_b) = (array![[1.0, 1.0]], array![[0.0, 3.0]]); // one sample
/// let r = llfc::metrics::commutativity_residual(w_a.view(), w_b.view(), h_a.view(), h_b.view())?;
/// // (H_A − H_B)(W_A − W_B)ᵀ = [1, −2] · [1, 1]ᵀ
/// assert_eq!(r, array![[-1.0]]);
/// # Ok::<(), llfc::Error>(())
/// ```
pub fn commutativity_residual<F: Float>(
    w_a: ArrayView2<'_, F>,
    w_b: ArrayView2<'_, F>,
    h_a: ArrayView2<'_, F>,
    h_b: ArrayView2<'_, F>,
) -> Result<Array2<F>> {
    check_layer(&w_a, &w_b, &h_a, &h_b)?;
    Ok(residual(w_a, w_b, h_a, h_b))
}

/// `(H_A − H_B)(W_A − W_B)ᵀ` of validated inputs.
fn residual<F: Float>(
    w_a: ArrayView2<'_, F>,
    w_b: ArrayView2<'_, F>,
    h_a: ArrayView2<'_, F>,
    h_b: ArrayView2<'_, F>,
) -> Array2<F> {
    (&h_a - &h_b).dot(&(&w_a - &w_b).t())
}

/// Commutativity residuals of one linear layer with weights `w_a = W_A`, `w_b = W_B`
/// (`[out, in]`, PyTorch layout) and inputs `h_a = H_A`, `h_b = H_B` (`[samples, in]`: the
/// previous layer's post-activations of A and B on the same samples):
///
/// ```text
/// S = W_A H_A + W_B H_B,   X = W_A H_B + W_B H_A,   R = S − X = (W_A − W_B)(H_A − H_B)
/// relative = ‖R‖_F / ‖S‖_F
/// vanilla  = ‖S − X‖²_F / (‖S‖_F ‖X‖_F) = ‖R‖²_F / (‖S‖_F ‖X‖_F)
/// baseline = ‖W_A H_A − W_B H_B‖²_F / (‖W_A H_A‖_F ‖W_B H_B‖_F)
/// ```
///
/// The paper writes `W H` with `H` as `[in, samples]` (Zhou et al. 2023, Def. 4); with rows as
/// samples every product here is its transpose `H Wᵀ` (`[samples, out]`), which leaves the
/// Frobenius norms unchanged. As in the paper, the sums use `W H` only: **biases are not
/// included** (they cancel in `R` but would shift `S`, `X` and the baseline). `R` is computed
/// through the factorisation ([`commutativity_residual`]), so `relative` and `vanilla` are
/// exactly 0 when `W_A = W_B` or `H_A = H_B`, free of the cancellation of `S − X`. Products run
/// in `F` (five `[N, in] × [in, out]` GEMMs), norms are accumulated in f64.
///
/// # Errors
/// As [`commutativity_residual`].
///
/// # Examples
/// ```
/// use ndarray::array;
/// let w = array![[1.0, -1.0], [0.5, 2.0]];
/// let (h_a, h_b) = (array![[1.0, 0.0], [2.0, 1.0]], array![[0.0, 1.0], [1.0, 1.0]]);
/// // Same weights: the layer commutes exactly.
/// let c = llfc::metrics::commutativity(w.view(), w.view(), h_a.view(), h_b.view())?;
/// assert_eq!((c.relative, c.vanilla, c.residual_norm), (Some(0.0), Some(0.0), 0.0));
/// # Ok::<(), llfc::Error>(())
/// ```
pub fn commutativity<F: Float>(
    w_a: ArrayView2<'_, F>,
    w_b: ArrayView2<'_, F>,
    h_a: ArrayView2<'_, F>,
    h_b: ArrayView2<'_, F>,
) -> Result<Commutativity> {
    check_layer(&w_a, &w_b, &h_a, &h_b)?;
    // Weights and inputs divided by powers of two near their largest magnitudes, so that the
    // products in `F` neither overflow nor underflow; the ratios do not depend on them and the
    // residual norm is scaled back.
    let limit = exponent(F::max_value().as_f64()) - 1; // 2^±limit is a normal `F`
    let e_w = exponent(max_abs(w_a).max(max_abs(w_b))).clamp(-limit, limit);
    let e_h = exponent(max_abs(h_a).max(max_abs(h_b))).clamp(-limit, limit);
    let (s_w, s_h) = (F::from_f64(pow2(-e_w)), F::from_f64(pow2(-e_h)));
    let scale = |m: ArrayView2<'_, F>, s: F| m.mapv(|v| v * s);
    let (w_a, w_b) = (scale(w_a, s_w), scale(w_b, s_w));
    let (h_a, h_b) = (scale(h_a, s_h), scale(h_b, s_h));
    let (w_a, w_b, h_a, h_b) = (w_a.view(), w_b.view(), h_a.view(), h_b.view());
    let p_aa = h_a.dot(&w_a.t());
    let p_bb = h_b.dot(&w_b.t());
    let p_ab = h_b.dot(&w_a.t());
    let p_ba = h_a.dot(&w_b.t());
    let r = residual(w_a, w_b, h_a, h_b);
    let residual_sq = r.iter().map(|v| v.as_f64() * v.as_f64()).sum::<f64>();
    let (mut ns, mut nx) = (0.0, 0.0);
    Zip::from(&p_aa)
        .and(&p_bb)
        .and(&p_ab)
        .and(&p_ba)
        .for_each(|&aa, &bb, &ab, &ba| {
            let s = aa.as_f64() + bb.as_f64();
            let x = ab.as_f64() + ba.as_f64();
            ns += s * s;
            nx += x * x;
        });
    let (base_diff, base_a, base_b) = distance_sums(&p_aa, &p_bb);
    Ok(Commutativity {
        relative: relative_from_sums(residual_sq, ns),
        vanilla: vanilla_from_sums(residual_sq, ns, nx),
        baseline: vanilla_from_sums(base_diff, base_a, base_b),
        residual_norm: ldexp(residual_sq.sqrt(), e_w + e_h),
    })
}
