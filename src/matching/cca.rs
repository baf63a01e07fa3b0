//! CCA alignment (Horoi, Camacho, Belilovsky, Wolf 2024, *Harmony in Diversity: Merging Neural
//! Networks with Canonical Correlation Analysis*, ICML), feature `linalg`.
//!
//! Instead of a permutation, B's units at a layer are mapped to A's by an invertible linear map
//! built from the canonical directions of the two layers' features `a ∈ R^{d_a}`, `b ∈ R^{d_b}`
//! (features of the same inputs). From the covariances `Σ_AA`, `Σ_BB`, `Σ_AB` (streamed by
//! [`CcaStats`], which reuses [`ActivationStats`]) and the regularised
//! `Σ̃_AA = Σ_AA + λ_A I`, `Σ̃_BB = Σ_BB + λ_B I` (see [`Regularization`]):
//!
//! ```text
//! K = Σ̃_AA^{−1/2} Σ_AB Σ̃_BB^{−1/2} = U diag(ρ) Vᵀ       (whitened cross-covariance, thin SVD)
//! canonical correlations ρ_1 ≥ ρ_2 ≥ …;  directions  W_A = Σ̃_AA^{−1/2} U,  W_B = Σ̃_BB^{−1/2} V
//! T = Σ̃_AA^{1/2} U Vᵀ Σ̃_BB^{−1/2}         (d_a × d_b: maps B's features into A's units)
//! T⁻¹ = Σ̃_BB^{1/2} V Uᵀ Σ̃_AA^{−1/2}        (when d_a = d_b)
//! ```
//!
//! `T` is the paper's map (its code's `y_map`, there in the row convention of features `X_B T`):
//! the canonical variables of A and B agree, `W_Aᵀ a ≈ W_Bᵀ b`, so `a ≈ W_A^{−T} W_Bᵀ b = T b`.
//! If `a = M b` exactly for an invertible `M` (and `λ = 0`), then `K` is orthogonal, every
//! `ρ_i = 1` and `T = M` — whatever basis the SVD picks among the equal correlations, since
//! `U Vᵀ` is the polar factor of `K`.
//!
//! **Applying it** ([`apply_cca`]) to B through a [`PermutationSpec`]: for each of the spec's
//! permutations `ℓ` (a hidden layer's units), every tensor axis the permutation acts on is
//! transformed — axis 0 (the producing layer, weight `W^ℓ` and bias `b^ℓ`) as
//! `W^ℓ ← T_ℓ W^ℓ`, `b^ℓ ← T_ℓ b^ℓ`, and axis 1 (the consuming layer) as
//! `W^{ℓ+1} ← W^{ℓ+1} T_ℓ⁻¹` (conv weights along their channel axes alike). Where no
//! nonlinearity sits between `W^ℓ` and `W^{ℓ+1}` (a linear network, or linear layers in a row)
//! this computes **exactly** the same function as B (up to rounding). Across a ReLU it is an
//! **approximation**: the aligned network computes `W^{ℓ+1} T⁻¹ relu(T z)` where B computed
//! `W^{ℓ+1} relu(z)`, equal only if `T` is a positive scaling of a permutation (which commutes
//! with ReLU). [`mlp_function_change`] measures the change; the paper merges the aligned models
//! anyway and does not need B's function to be kept. Normalisation vectors (BatchNorm or
//! LayerNorm scales and shifts) cannot mix units: fold them into the producing layer first —
//! every 1-D tensor on axis 0 is transformed like a bias.
//!
//! The statistics and transforms of different layers are independent; all of them come from the
//! features of the original A and B, and [`cca_alignment`] solves the layers in parallel.
//! Every decomposition runs in f64 on LAPACK (the backend's own threading may apply).

use std::collections::BTreeMap;

use ndarray::{Array1, Array2, ArrayD, ArrayView2, ArrayViewD, Axis, Data, Ix2};

use super::activation::{as_samples_by_units, stats_per_layer, ActivationStats, Statistic};
use crate::error::{Error, Result};
use crate::float::Float;
use crate::linalg::{spectral_function, symmetric_eigen, thin_svd};
use crate::params::Params;
use crate::spec::PermutationSpec;

/// Streaming covariances of two layers' features for CCA: `Σ_AA`, `Σ_BB` and `Σ_AB`, each an
/// [`ActivationStats`] (f64 accumulators, Chan et al.'s mergeable update). Memory is
/// `O((d_a + d_b)²)` whatever the number of samples.
#[derive(Clone, Debug, PartialEq)]
pub struct CcaStats {
    aa: ActivationStats,
    bb: ActivationStats,
    ab: ActivationStats,
}

impl CcaStats {
    /// Empty statistics for `d_a` units of A and `d_b` units of B.
    #[must_use]
    pub fn new(d_a: usize, d_b: usize) -> Self {
        Self {
            aa: ActivationStats::new(d_a, d_a),
            bb: ActivationStats::new(d_b, d_b),
            ab: ActivationStats::new(d_a, d_b),
        }
    }

    /// Number of samples seen.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.ab.count()
    }

    /// `(d_a, d_b)`.
    #[must_use]
    pub fn dims(&self) -> (usize, usize) {
        self.ab.dims()
    }

    /// Add a batch of features `[batch, d_a]` and `[batch, d_b]` of the same inputs. Costs
    /// `O(batch · (d_a + d_b)²)`.
    ///
    /// # Errors
    /// As [`ActivationStats::update`] (nothing is added on error).
    pub fn update<F: Float>(&mut self, a: ArrayView2<'_, F>, b: ArrayView2<'_, F>) -> Result<()> {
        // The cross statistics validate both batches first; the others then cannot fail.
        self.ab.update(a, b)?;
        self.aa.update(a, a)?;
        self.bb.update(b, b)
    }

    /// Add features of rank 2 (`[batch, units]`) or 4 (conv maps `[batch, c, h, w]`, viewed as
    /// `[batch·h·w, c]`).
    ///
    /// # Errors
    /// As [`ActivationStats::update_dyn`].
    pub fn update_dyn<F: Float>(
        &mut self,
        a: ArrayViewD<'_, F>,
        b: ArrayViewD<'_, F>,
    ) -> Result<()> {
        let (a, b) = (as_samples_by_units(a)?, as_samples_by_units(b)?);
        self.update(a.view(), b.view())
    }

    /// Merge statistics gathered separately on other samples.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if the widths differ.
    pub fn merge(&mut self, other: &Self) -> Result<()> {
        self.ab.merge(&other.ab)?;
        self.aa.merge(&other.aa)?;
        self.bb.merge(&other.bb)
    }

    /// The population covariances `(Σ_AA, Σ_BB, Σ_AB)` (divided by `n`).
    ///
    /// # Errors
    /// [`Error::EmptyInput`] if no sample was seen.
    pub fn covariances(&self) -> Result<(Array2<f64>, Array2<f64>, Array2<f64>)> {
        Ok((
            self.aa.statistic(Statistic::Covariance)?,
            self.bb.statistic(Statistic::Covariance)?,
            self.ab.statistic(Statistic::Covariance)?,
        ))
    }
}

/// The ridge `λ` added to the diagonal of `Σ_AA` and of `Σ_BB` before whitening.
///
/// Features of trained ReLU networks are often rank-deficient (dead units, fewer samples than
/// units, linearly dependent units); without a ridge `Σ^{−1/2}` does not exist. The ridge
/// shrinks the canonical correlations below 1 and keeps `T` and `T⁻¹` bounded:
/// `‖T‖ ≤ √(λ_max(Σ_AA) + λ_A) / √λ_B`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Regularization {
    /// `λ = ε · tr(Σ) / d`, a fraction `ε ≥ 0` of the mean variance of the layer's units, so
    /// that it does not depend on the features' scale.
    Relative(f64),
    /// `λ = γ ≥ 0` in the features' units squared (Horoi et al.'s code adds `γ I`, with
    /// `γ = 0.1` as its default).
    Absolute(f64),
}

impl Default for Regularization {
    /// `Relative(0.1)`: on the digits MLPs of the `subspace_digits` example it does as well as
    /// the paper code's `Absolute(0.1)` (no loss barrier, LLFC distances within a factor 1.6,
    /// B's function changed by the same amount to 4 %), while `Relative(1e-4)` amplifies B's
    /// low-variance directions so much that the aligned B loses its function across the ReLUs
    /// (test accuracy 97.6 % → 9.8 % on the deep net; see the README).
    fn default() -> Self {
        Self::Relative(0.1)
    }
}

impl Regularization {
    /// The ridge for the covariance `sigma`.
    fn ridge(self, sigma: &Array2<f64>) -> Result<f64> {
        let (name, value) = match self {
            Self::Relative(e) => ("regularization (relative)", e),
            Self::Absolute(g) => ("regularization (absolute)", g),
        };
        if !(value.is_finite() && value >= 0.0) {
            return Err(Error::InvalidArgument {
                name: "regularization",
                reason: format!("{name} must be finite and ≥ 0, got {value}"),
            });
        }
        Ok(match self {
            #[allow(clippy::cast_precision_loss)]
            Self::Relative(e) => e * sigma.diag().sum() / sigma.nrows().max(1) as f64,
            Self::Absolute(g) => g,
        })
    }
}

/// Options of [`cca`] and [`cca_alignment`].
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct CcaOptions {
    /// The ridge added before whitening. Default [`Regularization::Relative`]`(0.1)`.
    pub regularization: Regularization,
}

/// The canonical correlation analysis of one layer (see the [module docs](self)).
#[derive(Clone, Debug, PartialEq)]
pub struct Cca {
    /// The canonical correlations `ρ_1 ≥ … ≥ ρ_r` (`r = min(d_a, d_b)`), in `[0, 1]` up to
    /// rounding.
    pub correlations: Array1<f64>,
    /// `W_A = Σ̃_AA^{−1/2} U` (`[d_a, r]`): column `i` projects A's features to canonical
    /// variable `i`.
    pub directions_a: Array2<f64>,
    /// `W_B = Σ̃_BB^{−1/2} V` (`[d_b, r]`).
    pub directions_b: Array2<f64>,
    /// `T = Σ̃_AA^{1/2} U Vᵀ Σ̃_BB^{−1/2}` (`[d_a, d_b]`): B's features mapped into A's units,
    /// `a ≈ T b`.
    pub transform: Array2<f64>,
    /// `T⁻¹ = Σ̃_BB^{1/2} V Uᵀ Σ̃_AA^{−1/2}` when `d_a = d_b`, else `None`.
    pub inverse: Option<Array2<f64>>,
}

/// `(Σ̃^{1/2}, Σ̃^{−1/2})` of `Σ̃ = Σ + λ I`, checking that `Σ̃` is numerically positive
/// definite.
fn sqrt_and_inverse_sqrt(
    sigma: &Array2<f64>,
    regularization: Regularization,
    who: &str,
) -> Result<(Array2<f64>, Array2<f64>)> {
    let lambda = regularization.ridge(sigma)?;
    let mut reg = sigma.clone();
    reg.diag_mut().mapv_inplace(|v| v + lambda);
    let what = format!("the regularised covariance of {who}'s features");
    let (values, vectors) = symmetric_eigen(&reg, &what)?;
    let top = values.iter().fold(0.0f64, |m, &v| m.max(v.abs()));
    #[allow(clippy::cast_precision_loss)]
    let tol = reg.nrows() as f64 * f64::EPSILON * top;
    let rank = values.iter().filter(|&&v| v > tol).count();
    if rank < reg.nrows() || top == 0.0 {
        return Err(Error::RankDeficient {
            what: format!("{what} (raise the regularization)"),
            rank,
            required: reg.nrows(),
        });
    }
    Ok((
        spectral_function(&values, &vectors, f64::sqrt),
        spectral_function(&values, &vectors, |v| 1.0 / v.sqrt()),
    ))
}

/// The CCA of one layer's statistics; see the [module docs](self) for the formulas. Costs
/// `O(d³)` for `d = max(d_a, d_b)`.
///
/// # Errors
/// [`Error::EmptyInput`] if no sample was seen or a width is 0; [`Error::InvalidArgument`] for
/// a negative or non-finite regularisation; [`Error::RankDeficient`] if a regularised
/// covariance is singular (only possible with a zero ridge, or a layer whose units are all
/// constant under [`Regularization::Relative`]); [`Error::LinearAlgebra`] if LAPACK fails.
pub fn cca(stats: &CcaStats, options: &CcaOptions) -> Result<Cca> {
    let (d_a, d_b) = stats.dims();
    if d_a == 0 || d_b == 0 {
        return Err(Error::EmptyInput {
            what: format!("CCA statistics of widths ({d_a}, {d_b})"),
        });
    }
    let (s_aa, s_bb, s_ab) = stats.covariances()?;
    let (root_a, inv_root_a) = sqrt_and_inverse_sqrt(&s_aa, options.regularization, "A")?;
    let (root_b, inv_root_b) = sqrt_and_inverse_sqrt(&s_bb, options.regularization, "B")?;
    let k = inv_root_a.dot(&s_ab).dot(&inv_root_b);
    let (u, correlations, vt) = thin_svd(&k, "the whitened cross-covariance")?;
    let polar = u.dot(&vt);
    let transform = root_a.dot(&polar).dot(&inv_root_b);
    let inverse = (d_a == d_b).then(|| root_b.dot(&polar.t()).dot(&inv_root_a));
    Ok(Cca {
        correlations,
        directions_a: inv_root_a.dot(&u),
        directions_b: inv_root_b.dot(&vt.t()),
        transform,
        inverse,
    })
}

/// [`cca`] of every layer, keyed like the statistics (the spec's permutation names, e.g. `P_0`,
/// `P_1`, …); layers run in parallel with the `rayon` feature.
///
/// # Errors
/// As [`cca`], for the first failing layer in key order.
pub fn cca_alignment(
    stats: &BTreeMap<String, CcaStats>,
    options: &CcaOptions,
) -> Result<BTreeMap<String, Cca>> {
    let one = |(name, st): (&String, &CcaStats)| -> Result<(String, Cca)> {
        Ok((name.clone(), cca(st, options)?))
    };
    #[cfg(feature = "rayon")]
    {
        use rayon::prelude::*;
        let items: Vec<(&String, &CcaStats)> = stats.iter().collect();
        items.into_par_iter().map(one).collect()
    }
    #[cfg(not(feature = "rayon"))]
    {
        stats.iter().map(one).collect()
    }
}

/// [`cca_alignment`] from whole feature arrays: `features_a[name]` and `features_b[name]` are
/// the features (`[N, d]` or `[N, c, h, w]`) of the units of the spec's permutation `name`.
///
/// # Errors
/// [`Error::MissingParam`] if a name of one side is missing on the other; as
/// [`CcaStats::update_dyn`] and [`cca`].
pub fn cca_alignment_from_features<F: Float>(
    features_a: &BTreeMap<String, ArrayD<F>>,
    features_b: &BTreeMap<String, ArrayD<F>>,
    options: &CcaOptions,
) -> Result<BTreeMap<String, Cca>> {
    let stats = stats_per_layer(features_a, features_b, |d_a, d_b, a, b| {
        let mut st = CcaStats::new(d_a, d_b);
        st.update_dyn(a, b)?;
        Ok(st)
    })?;
    cca_alignment(&stats, options)
}

/// `M · X` along `axis` of `x`: `out[…, i, …] = Σ_j M[i, j] x[…, j, …]`, in f64, rounded to
/// `F`.
fn mix_axis<F: Float>(x: &ArrayD<F>, axis: usize, m: &Array2<f64>) -> ArrayD<F> {
    let mut order: Vec<usize> = (0..x.ndim()).collect();
    order.remove(axis);
    order.insert(0, axis);
    let front = x.view().permuted_axes(order.clone());
    let shape = front.shape().to_vec();
    let flat: Vec<f64> = front.iter().map(|v| v.as_f64()).collect();
    let rows = Array2::from_shape_vec((shape[0], flat.len() / shape[0].max(1)), flat)
        .expect("sizes agree");
    let mixed = m.dot(&rows).mapv(F::from_f64);
    let mixed = mixed.into_shape_with_order(shape).expect("sizes agree");
    // Undo the axis move: the axis at position 0 goes back to `axis`.
    let mut back = vec![0; order.len()];
    for (pos, &ax) in order.iter().enumerate() {
        back[ax] = pos;
    }
    mixed.permuted_axes(back).as_standard_layout().into_owned()
}

/// B aligned to A by the CCA maps `alignment` (one per permutation of `spec`): axis 0 of every
/// tensor a permutation acts on is mixed by its `T` (`W^ℓ ← T_ℓ W^ℓ`, `b^ℓ ← T_ℓ b^ℓ`), every
/// other axis by `T⁻¹` from the right (`W^{ℓ+1} ← W^{ℓ+1} T_ℓ⁻¹`). Exact for linear maps
/// between the layers, an approximation across ReLUs (see the [module docs](self)). Tensors
/// the spec does not mention are copied. Computed in f64, rounded to `F`.
///
/// # Errors
/// What [`PermutationSpec::perm_sizes`] reports for a spec that does not fit `params`;
/// [`Error::PermutationName`] for a permutation of the spec without a map, or a map for a name
/// the spec does not have; [`Error::ShapeMismatch`] if a map is not `n × n` for the permuted
/// axis size `n` or has no inverse (`d_a ≠ d_b`); [`Error::NonFinite`] for a NaN/±∞ map.
pub fn apply_cca<F: Float>(
    spec: &PermutationSpec,
    alignment: &BTreeMap<String, Cca>,
    params: &Params<F>,
) -> Result<Params<F>> {
    let sizes = spec.perm_sizes(params)?;
    for (name, &n) in &sizes {
        let map = alignment.get(name).ok_or_else(|| Error::PermutationName {
            perm: name.clone(),
            problem: "is required by the spec but has no CCA map".into(),
        })?;
        let inverse = map.inverse.as_ref().filter(|m| m.dim() == (n, n));
        let Some(inverse) = inverse.filter(|_| map.transform.dim() == (n, n)) else {
            return Err(Error::ShapeMismatch {
                what: format!("CCA map `{name}` (T and T⁻¹ must be square, one row per unit)"),
                expected: vec![n, n],
                found: map.transform.shape().to_vec(),
            });
        };
        if map.transform.iter().chain(inverse).any(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                what: format!("CCA map `{name}`"),
            });
        }
    }
    if let Some(extra) = alignment.keys().find(|k| !sizes.contains_key(*k)) {
        return Err(Error::PermutationName {
            perm: extra.clone(),
            problem: "is not a permutation of the spec".into(),
        });
    }
    // Consumers use `x T⁻¹` along their axis, i.e. `(T⁻¹)ᵀ` mixing that axis.
    let inverse_t: BTreeMap<&str, Array2<f64>> = alignment
        .iter()
        .map(|(k, c)| {
            (
                k.as_str(),
                c.inverse.as_ref().expect("checked").t().to_owned(),
            )
        })
        .collect();
    let mut out = Params::new();
    for (name, tensor) in params.iter() {
        let mut t = tensor.clone();
        for (axis, perm) in spec.axes(name).unwrap_or_default().iter().enumerate() {
            if let Some(perm) = perm {
                let m = if axis == 0 {
                    &alignment[perm].transform
                } else {
                    &inverse_t[perm.as_str()]
                };
                t = mix_axis(&t, axis, m);
            }
        }
        out.insert(name, t);
    }
    Ok(out)
}

/// How much an alignment changed an MLP's function on inputs `x`, from
/// [`mlp_function_change`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FunctionChange {
    /// `‖f(T(B); x) − f(B; x)‖_F / ‖f(B; x)‖_F` over the logits (f64).
    pub relative_logits: f64,
    /// Fraction of the inputs whose predicted class (arg-max logit) is unchanged.
    pub same_prediction: f64,
}

/// The change of an MLP's ([`crate::mlp`]) function from `before` to `after` (e.g. B and its
/// CCA-aligned copy) on the inputs `x` (`[samples, in]`).
///
/// # Errors
/// As [`crate::mlp::forward`] for either model; [`Error::EmptyInput`] without samples.
pub fn mlp_function_change<F: Float, S: Data<Elem = F>>(
    before: &Params<F>,
    after: &Params<F>,
    x: &ndarray::ArrayBase<S, Ix2>,
) -> Result<FunctionChange> {
    if x.nrows() == 0 {
        return Err(Error::EmptyInput {
            what: "input x (no samples)".into(),
        });
    }
    let (y0, y1) = (
        crate::mlp::forward(before, x)?,
        crate::mlp::forward(after, x)?,
    );
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for (a, b) in y0.iter().zip(&y1) {
        let (a, b) = (a.as_f64(), b.as_f64());
        diff += (b - a) * (b - a);
        norm += a * a;
    }
    let argmax = |row: ndarray::ArrayView1<'_, F>| {
        row.iter()
            .enumerate()
            .fold((0, F::neg_infinity()), |(bi, bv), (i, &v)| {
                if v > bv {
                    (i, v)
                } else {
                    (bi, bv)
                }
            })
            .0
    };
    let same = y0
        .axis_iter(Axis(0))
        .zip(y1.axis_iter(Axis(0)))
        .filter(|(r0, r1)| argmax(*r0) == argmax(*r1))
        .count();
    #[allow(clippy::cast_precision_loss)]
    Ok(FunctionChange {
        relative_logits: if norm > 0.0 {
            (diff / norm).sqrt()
        } else {
            diff.sqrt()
        },
        same_prediction: same as f64 / x.nrows() as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn mix_axis_multiplies_along_the_axis() {
        let x = array![[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0], [7.0, 8.0]]].into_dyn();
        let m = array![[0.0, 1.0], [2.0, 0.0]];
        for axis in 0..3 {
            let y = mix_axis(&x, axis, &m);
            for (idx, &v) in y.indexed_iter() {
                let want: f64 = (0..2)
                    .map(|j| {
                        let mut src = idx.clone();
                        src[axis] = j;
                        m[[idx[axis], j]] * x[src]
                    })
                    .sum();
                assert_eq!(v, want, "axis {axis} at {idx:?}");
            }
        }
    }
}
