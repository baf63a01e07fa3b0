//! Measurements of layerwise linear feature connectivity (LLFC), as pure functions over feature
//! and weight arrays — usable on features exported from any framework.
//!
//! From Zhou, Yang, Yang, Yan, Hu, *Going Beyond Linear Mode Connectivity: The Layerwise Linear
//! Feature Connectivity* (NeurIPS 2023). Two networks θ_A, θ_B are *LLFC* at layer ℓ when the
//! features of their interpolation `θ(α) = α θ_A + (1 − α) θ_B` (α = 1 is A) are, up to a scale,
//! the interpolation of their features:
//!
//! ```text
//! ∀α ∈ [0, 1]  ∃c > 0:   c · f_ℓ(θ(α); x) = α f_ℓ(θ_A; x) + (1 − α) f_ℓ(θ_B; x) =: f_int(x).
//! ```
//!
//! The paper traces LLFC to two properties, also measured here:
//! *weak additivity* of ReLU (`σ(α Z_A + (1−α) Z_B) ≈ α σ(Z_A) + (1−α) σ(Z_B)` on the
//! pre-activations) and *commutativity* (`W_A H_A + W_B H_B ≈ W_A H_B + W_B H_A`).
//!
//! | function | measures |
//! | --- | --- |
//! | [`cosine_distances`] | per-sample `1 − cos` (or `1 − |cos|`) between two feature arrays |
//! | [`llfc_layer`] | `E[1 − cos_α]`, the A-vs-B baseline and the scale `c` at one layer and α |
//! | [`interpolation_scale`] | the least-squares `coef` and `c = 1/coef` alone |
//! | [`llfc_report_mlp`] | all of the above for every layer of the reference [`mlp`](crate::mlp) and a list of α |
//! | [`weak_additivity`] | ReLU weak-additivity residuals from pre-activations |
//! | [`commutativity`], [`commutativity_residual`] | commutativity residuals from weights and inputs |
//! | [`normalised_distance`], [`relative_distance`] | the shared normalised distances |
//! | [`conv_commutativity`], [`conv2d`] | commutativity residuals of convolutional layers |
//! | [`attribution`] | LLFC error attribution: how much of the deviation each layer's commutativity and ReLU non-additivity cause |
//!
//! # Conventions
//! - Feature arrays are `[samples, …]` (PyTorch layout: `[samples, units]` or
//!   `[samples, channels, h, w]`); every sample is flattened (row-major) into one vector.
//! - Products (the matrix products of [`commutativity`]) run in the input precision `F`; every
//!   reduction — dot products, norms, cosines, means — is accumulated in `f64`, sample by sample
//!   in index order, so results never depend on the number of threads.
//! - A sample whose vector has zero norm on either side has no cosine: it is *skipped and
//!   counted* ([`SampleStats::skipped`]). A normalised quantity whose denominator is zero is
//!   `None`.
//! - Inputs are validated: equal shapes, at least one sample and one feature, finite entries,
//!   finite α. Violations are [`Error`]s ([`Error::ShapeMismatch`], [`Error::EmptyInput`],
//!   [`Error::NonFinite`], [`Error::InvalidArgument`]); nothing panics.

pub mod attribution;
mod conv;
mod cosine;
mod llfc;
mod residuals;
mod scaled;

pub use conv::{conv2d, conv_commutativity, ConvGeometry};
pub use cosine::{cosine_distances, CosineVariant, SampleStats};
pub(crate) use llfc::llfc_report_mlp_with;
pub use llfc::{interpolation_scale, llfc_layer, llfc_report_mlp, LlfcLayer, LlfcReport, Scale};
pub use residuals::{
    commutativity, commutativity_residual, weak_additivity, Commutativity, WeakAdditivity,
};

use ndarray::{ArrayBase, Data, Dimension, Zip};

use crate::error::{Error, Result};
use crate::float::{all_finite, Float};

/// Check that `alpha` is finite.
fn check_alpha(alpha: f64) -> Result<()> {
    if alpha.is_finite() {
        Ok(())
    } else {
        Err(Error::InvalidArgument {
            name: "alpha",
            reason: format!("the interpolation coefficient must be finite, got {alpha}"),
        })
    }
}

/// Check a `[samples, …]` feature array on its own: rank ≥ 1, at least one sample and one
/// value per sample, finite entries.
fn check_features<F: Float, S: Data<Elem = F>, D: Dimension>(
    x: &ArrayBase<S, D>,
    what: &str,
) -> Result<()> {
    if x.ndim() == 0 {
        return Err(Error::InvalidArgument {
            name: "features",
            reason: format!("{what} is a scalar; expected a [samples, …] array"),
        });
    }
    if x.is_empty() {
        return Err(Error::EmptyInput {
            what: format!("{what} of shape {:?}", x.shape()),
        });
    }
    if !all_finite(x) {
        return Err(Error::NonFinite {
            what: what.to_string(),
        });
    }
    Ok(())
}

/// Check that `found` has the shape of `reference` (named `ref_what`), then check `found` alone.
fn check_same<F: Float, S1: Data<Elem = F>, S2: Data<Elem = F>, D: Dimension>(
    reference: &ArrayBase<S1, D>,
    found: &ArrayBase<S2, D>,
    what: &str,
    ref_what: &str,
) -> Result<()> {
    if reference.shape() != found.shape() {
        return Err(Error::ShapeMismatch {
            what: format!("{what} (must have the shape of {ref_what})"),
            expected: reference.shape().to_vec(),
            found: found.shape().to_vec(),
        });
    }
    check_features(found, what)
}

/// `(‖x − y‖², ‖x‖², ‖y‖²)` over two arrays of equal shape, in f64, in logical order, all
/// three of `x` and `y` divided first by one power of two near their largest magnitude (the
/// ratios of these sums do not depend on it; see [`scaled`]).
fn distance_sums<F: Float, S1: Data<Elem = F>, S2: Data<Elem = F>, D: Dimension>(
    x: &ArrayBase<S1, D>,
    y: &ArrayBase<S2, D>,
) -> (f64, f64, f64) {
    let s = scaled::pow2(-scaled::exponent(
        scaled::max_abs(x).max(scaled::max_abs(y)),
    ));
    let (mut d, mut nx, mut ny) = (0.0, 0.0, 0.0);
    Zip::from(x).and(y).for_each(|&a, &b| {
        let (a, b) = (a.as_f64() * s, b.as_f64() * s);
        d += (a - b) * (a - b);
        nx += a * a;
        ny += b * b;
    });
    (d, nx, ny)
}

/// `‖x − y‖² / (‖x‖ ‖y‖)` from the sums, `None` when a norm is zero.
fn vanilla_from_sums(diff_sq: f64, nx_sq: f64, ny_sq: f64) -> Option<f64> {
    (nx_sq > 0.0 && ny_sq > 0.0).then(|| diff_sq / (nx_sq.sqrt() * ny_sq.sqrt()))
}

/// `‖x − y‖ / ‖y‖` from the sums, `None` when `‖y‖ = 0`.
fn relative_from_sums(diff_sq: f64, ny_sq: f64) -> Option<f64> {
    (ny_sq > 0.0).then(|| diff_sq.sqrt() / ny_sq.sqrt())
}

/// The "vanilla" normalised distance of the LLFC paper, `‖x − y‖² / (‖x‖ ‖y‖)`, over whole
/// arrays (Frobenius norms), accumulated in f64. It is scale-invariant (`d(s x, s y) = d(x, y)`
/// for `s ≠ 0`), symmetric, 0 iff `x = y`, and equals `2 (1 − cos)` when `‖x‖ = ‖y‖`.
///
/// Returns `None` when `x` or `y` is all zeros (the distance is undefined). Costs `O(len)`.
///
/// # Errors
/// [`Error::ShapeMismatch`] if the shapes differ; [`Error::EmptyInput`] for empty arrays;
/// [`Error::NonFinite`] for NaN or ±∞ entries; [`Error::InvalidArgument`] for 0-dimensional
/// arrays.
///
/// # Examples
/// ```
/// use ndarray::array;
/// let x = array![[3.0, 0.0], [0.0, 4.0]];
/// let y = array![[3.0, 0.0], [0.0, -4.0]];
/// // ‖x − y‖² = 64, ‖x‖ = ‖y‖ = 5.
/// let d = llfc::metrics::normalised_distance(&x, &y)?;
/// assert_eq!(d, Some(64.0 / 25.0));
/// assert_eq!(llfc::metrics::normalised_distance(&x, &(&x * 0.0))?, None);
/// # Ok::<(), llfc::Error>(())
/// ```
pub fn normalised_distance<F: Float, S1: Data<Elem = F>, S2: Data<Elem = F>, D: Dimension>(
    x: &ArrayBase<S1, D>,
    y: &ArrayBase<S2, D>,
) -> Result<Option<f64>> {
    check_features(x, "x")?;
    check_same(x, y, "y", "x")?;
    let (d, nx, ny) = distance_sums(x, y);
    Ok(vanilla_from_sums(d, nx, ny))
}

/// The relative distance `‖x − reference‖ / ‖reference‖` over whole arrays (Frobenius norms),
/// accumulated in f64; `None` when `reference` is all zeros. Costs `O(len)`.
///
/// # Errors
/// As [`normalised_distance`].
///
/// # Examples
/// ```
/// use ndarray::array;
/// let r = llfc::metrics::relative_distance(&array![3.0f32, 4.0], &array![0.0f32, 5.0])?;
/// assert_eq!(r, Some((9.0f64 + 1.0).sqrt() / 5.0));
/// # Ok::<(), llfc::Error>(())
/// ```
pub fn relative_distance<F: Float, S1: Data<Elem = F>, S2: Data<Elem = F>, D: Dimension>(
    x: &ArrayBase<S1, D>,
    reference: &ArrayBase<S2, D>,
) -> Result<Option<f64>> {
    check_features(reference, "reference")?;
    check_same(reference, x, "x", "reference")?;
    let (d, _, nr) = distance_sums(x, reference);
    Ok(relative_from_sums(d, nr))
}

/// `items.iter().map(f)` in order, over rayon's pool with the `rayon` feature. Each item is
/// computed by the same sequential code whatever the number of threads, so the results are
/// identical with and without parallelism.
pub(crate) fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync + Send) -> Vec<R> {
    #[cfg(feature = "rayon")]
    {
        use rayon::prelude::*;
        items.par_iter().map(f).collect()
    }
    #[cfg(not(feature = "rayon"))]
    {
        items.iter().map(f).collect()
    }
}

/// `(f(), g())`, run in parallel with the `rayon` feature.
pub(crate) fn par_join<A: Send, B: Send>(
    f: impl FnOnce() -> A + Send,
    g: impl FnOnce() -> B + Send,
) -> (A, B) {
    #[cfg(feature = "rayon")]
    {
        rayon::join(f, g)
    }
    #[cfg(not(feature = "rayon"))]
    {
        (f(), g())
    }
}
