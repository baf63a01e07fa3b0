//! REPAIR's per-unit targets and affine corrections, and their exact folding into the layer
//! that produces the units.

use ndarray::{Array1, ArrayD, Axis};

use super::stats::UnitStats;
use crate::error::{Error, Result};
use crate::float::Float;
use crate::params::Params;

/// The statistics REPAIR gives the units of θ(α): `μ_α = α μ_A + (1 − α) μ_B` and
/// `σ_α = α σ_A + (1 − α) σ_B` (α = 1 is A), from A's and B's population statistics.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// `μ_α` per unit.
    pub mean: Array1<f64>,
    /// `σ_α` per unit (population standard deviations interpolated, not variances).
    pub std: Array1<f64>,
}

/// Check that α is a finite number in `[0, 1]`.
pub(crate) fn check_unit_alpha(alpha: f64) -> Result<()> {
    if !alpha.is_finite() {
        return Err(Error::NonFinite {
            what: "interpolation coefficient alpha".into(),
        });
    }
    if !(0.0..=1.0).contains(&alpha) {
        return Err(Error::InvalidArgument {
            name: "alpha",
            reason: format!(
                "REPAIR interpolates statistics, so alpha must lie in [0, 1] (σ_α ≥ 0), got {alpha}"
            ),
        });
    }
    Ok(())
}

impl Target {
    /// `μ_α`, `σ_α` from the statistics of the same units in A (`a`) and in the aligned B
    /// (`b`), computed as `α x + (1 − α) y` in f64 (so α = 1 and α = 0 give A's and B's
    /// statistics exactly).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if `a` and `b` have different numbers of units;
    /// [`Error::EmptyInput`] if either has no sample; [`Error::NonFinite`] /
    /// [`Error::InvalidArgument`] if α is not a finite number in `[0, 1]`.
    pub fn interpolate(a: &UnitStats, b: &UnitStats, alpha: f64) -> Result<Self> {
        check_unit_alpha(alpha)?;
        if a.units() != b.units() {
            return Err(Error::ShapeMismatch {
                what: "unit statistics of B versus A".into(),
                expected: vec![a.units()],
                found: vec![b.units()],
            });
        }
        for (who, st) in [("A", a), ("B", b)] {
            if st.count() == 0 {
                return Err(Error::EmptyInput {
                    what: format!("unit statistics of {who} (no sample)"),
                });
            }
        }
        let beta = 1.0 - alpha;
        let mix = |x: &f64, y: &f64| alpha * x + beta * y;
        let mean = ndarray::Zip::from(&a.mean())
            .and(&b.mean())
            .map_collect(mix);
        let std = ndarray::Zip::from(&a.std()).and(&b.std()).map_collect(mix);
        Ok(Self { mean, std })
    }

    /// Number of units.
    #[must_use]
    pub fn units(&self) -> usize {
        self.mean.len()
    }
}

/// The affine map `z ← scale ⊙ z + shift` that gives every unit its target statistics.
#[derive(Clone, Debug, PartialEq)]
pub struct Correction {
    /// `s = σ_α / σ̃` per unit (1 for a zero-variance unit).
    pub scale: Array1<f64>,
    /// `t = μ_α − s μ̃` per unit, so that `s z + t = s (z − μ̃) + μ_α`.
    pub shift: Array1<f64>,
    /// Units whose measured standard deviation is zero (see [`Correction::new`]): left
    /// unscaled, only shifted to `μ_α`.
    pub zero_variance: Vec<usize>,
}

impl Correction {
    /// REPAIR's correction of units measured with mean `μ̃` and population standard deviation
    /// `σ̃` (`measured`) towards `target`:
    ///
    /// ```text
    /// z ← (z − μ̃) σ_α / σ̃ + μ_α,   i.e.   s = σ_α / σ̃,   t = μ_α − s μ̃.
    /// ```
    ///
    /// A unit with `σ̃ ≤ zero_std_tolerance · |μ̃|` (in particular `σ̃ = 0`: it is constant on
    /// the data) cannot be rescaled: it gets `s = 1`, `t = μ_α − μ̃` (its mean still becomes
    /// `μ_α`) and is listed in [`Correction::zero_variance`]. The tolerance absorbs the rounding
    /// of a constant unit's mean (relative `~1e-16`); a real unit varies by far more.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if the numbers of units differ; [`Error::EmptyInput`] if
    /// `measured` has no sample; [`Error::InvalidArgument`] if the tolerance is negative or not
    /// finite.
    pub fn new(measured: &UnitStats, target: &Target, zero_std_tolerance: f64) -> Result<Self> {
        if !(zero_std_tolerance.is_finite() && zero_std_tolerance >= 0.0) {
            return Err(Error::InvalidArgument {
                name: "zero_std_tolerance",
                reason: format!("must be finite and non-negative, got {zero_std_tolerance}"),
            });
        }
        if measured.units() != target.units() {
            return Err(Error::ShapeMismatch {
                what: "measured unit statistics versus REPAIR targets".into(),
                expected: vec![target.units()],
                found: vec![measured.units()],
            });
        }
        if measured.count() == 0 {
            return Err(Error::EmptyInput {
                what: "measured unit statistics (no sample)".into(),
            });
        }
        let sigma = measured.std();
        let units = target.units();
        let (mut scale, mut shift) = (Array1::ones(units), Array1::zeros(units));
        let mut zero_variance = Vec::new();
        for k in 0..units {
            let (mu, sd) = (measured.mean()[k], sigma[k]);
            if sd <= zero_std_tolerance * mu.abs() {
                zero_variance.push(k);
                shift[k] = target.mean[k] - mu;
            } else {
                scale[k] = target.std[k] / sd;
                shift[k] = target.mean[k] - scale[k] * mu;
            }
        }
        Ok(Self {
            scale,
            shift,
            zero_variance,
        })
    }

    /// Number of units.
    #[must_use]
    pub fn units(&self) -> usize {
        self.scale.len()
    }
}

/// The error for a producing layer without its bias.
pub(crate) fn missing_bias(weight: &str, bias: &str) -> Error {
    Error::MissingParam {
        param: bias.to_string(),
        context: format!(
            "the parameters: REPAIR folds its shift into the bias of the layer producing the \
             units (`{weight}`), and a layer without a bias cannot absorb it; repair the \
             BatchNorm after it instead, or give the layer a (zero) bias"
        ),
    }
}

/// Fold the correction of the units produced by a layer into its parameters: with weight
/// `W` (`[out, …]`: a linear `[out, in]`, a conv `[out, in, kh, kw]`, or a norm layer's
/// `[out]`) and bias `b` (`[out]`),
///
/// ```text
/// W[k, …] ← s_k W[k, …],     b_k ← s_k b_k + t_k = s_k (b_k − μ̃_k) + μ_α,k
/// ```
///
/// so the layer's output `W x + b` (a linear or conv layer) or `W ⊙ x̂ + b` (the affine part
/// of a BatchNorm or LayerNorm) becomes `s ⊙ (W x + b) + t` exactly. The arithmetic is in f64,
/// rounded once to `F`. Returns new parameters; `params` is not modified.
///
/// **Bias required.** A layer without a bias cannot absorb the shift `t`, and adding one would
/// change the architecture (PyTorch's strict `load_state_dict` would reject the checkpoint), so
/// a missing bias is an error: repair the BatchNorm that follows a bias-free conv instead (its
/// `weight`/`bias` are the producing affine layer of the units that reach the ReLU), or give the
/// layer a zero bias (`bias=True`) before training or repairing.
///
/// # Errors
/// [`Error::MissingParam`] if `weight` or `bias` is absent (the message says why the bias is
/// needed); [`Error::RankMismatch`] if the bias is not a vector; [`Error::ShapeMismatch`] if
/// the weight's axis 0, the bias and the correction have different lengths.
pub fn fold_correction<F: Float>(
    params: &Params<F>,
    weight: &str,
    bias: &str,
    correction: &Correction,
) -> Result<Params<F>> {
    let w = params.require(weight)?;
    let b = params.get(bias).ok_or_else(|| missing_bias(weight, bias))?;
    if b.ndim() != 1 {
        return Err(Error::RankMismatch {
            param: bias.to_string(),
            spec_rank: 1,
            rank: b.ndim(),
        });
    }
    let units = correction.units();
    if w.ndim() == 0 || w.shape()[0] != units || b.len() != units {
        return Err(Error::ShapeMismatch {
            what: format!("`{weight}` (axis 0) and `{bias}` versus the corrected units"),
            expected: vec![units, units],
            found: vec![w.shape().first().copied().unwrap_or(0), b.len()],
        });
    }
    let mut w_new: ArrayD<F> = w.clone();
    for (mut row, &s) in w_new.axis_iter_mut(Axis(0)).zip(&correction.scale) {
        row.mapv_inplace(|v| F::from_f64(s * v.as_f64()));
    }
    let b_new: ArrayD<F> = ndarray::Zip::from(b)
        .and(correction.scale.view().into_dyn())
        .and(correction.shift.view().into_dyn())
        .map_collect(|&v, &s, &t| F::from_f64(s * v.as_f64() + t));
    let mut out = params.clone();
    out.insert(weight, w_new);
    out.insert(bias, b_new);
    Ok(out)
}
