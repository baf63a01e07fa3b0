//! Activation matching (Ainsworth et al. 2023, *Git Re-Basin*, §3.1) from streaming statistics.
//!
//! For each permuted layer, features `H_A`, `H_B` (`[N, d]`, rows are samples) of the same
//! inputs are reduced batch by batch to O(d²) statistics, accumulated in f64 with Chan et al.'s
//! pairwise update (numerically stable, mergeable across threads or machines):
//!
//! - `n`, the means `μ_a`, `μ_b`,
//! - the centred cross moment `M_ab = Σ (a − μ_a)(b − μ_b)ᵀ` and the centred squares
//!   `m_a = Σ (a − μ_a)²`, `m_b = Σ (b − μ_b)²`.
//!
//! From them, a [`Statistic`]:
//! - [`Statistic::InnerProduct`]: `E[a bᵀ] = M_ab / n + μ_a μ_bᵀ` (Git Re-Basin's MLP choice);
//! - [`Statistic::Covariance`]: `M_ab / n` (population covariance);
//! - [`Statistic::Correlation`]: `M_ab / √(m_a m_bᵀ)`, with 0 wherever a unit has zero
//!   variance (Git Re-Basin's CNN choice and REPAIR's).
//!
//! The permutation of a layer maximises `Σ_i C[i, p(i)]` (a LAP): B's unit `p[i]` is matched to
//! A's unit `i`. Layers are independent and solved in parallel.
//!
//! Conv feature maps `[N, c, h, w]` are viewed as `[N·h·w, c]` (every spatial position is a
//! sample of the channel), as in Git Re-Basin; token features `[N, T, d]` (transformers) as
//! `[N·T, d]` (every token is a sample of the unit).
//!
//! For the reference MLP ([`crate::mlp`]), [`mlp_activation_stats`] gathers the statistics of
//! every hidden layer and [`mlp_activation_matching`] does the whole matching in one call.

use std::collections::BTreeMap;

use ndarray::{ArrayView2, ArrayViewD};

use super::lap_max;
use crate::assignment::Solver;
use crate::error::{Error, Result};
use crate::float::Float;
use crate::permutation::Permutation;

mod stats;

#[cfg(feature = "linalg")]
pub(crate) use stats::as_samples_by_units;
pub(crate) use stats::units_of;
pub use stats::{ActivationStats, Statistic};

/// Options of [`activation_matching`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ActivationMatchingOptions {
    /// Similarity to maximise. Default [`Statistic::Correlation`].
    pub statistic: Statistic,
    /// Linear assignment solver. Default [`Solver::default`].
    pub solver: Solver,
}

/// The number of units of square statistics (`d_a = d_b`), else [`Error::ShapeMismatch`].
pub(crate) fn square_units(name: &str, st: &ActivationStats) -> Result<usize> {
    let (d_a, d_b) = st.dims();
    if d_a != d_b {
        return Err(Error::ShapeMismatch {
            what: format!("activation statistics of `{name}` (A units versus B units)"),
            expected: vec![d_a],
            found: vec![d_b],
        });
    }
    Ok(d_a)
}

/// Activation matching: one permutation per layer maximising `Σ_i C[i, p(i)]`, with `C` the
/// chosen statistic of that layer's [`ActivationStats`]. Keys are the permutation names (e.g.
/// the spec's `P_0`, `P_1`, …); layers are solved in parallel.
///
/// # Errors
/// [`Error::ShapeMismatch`] if a layer's statistics are not square (`d_a ≠ d_b`);
/// [`Error::EmptyInput`] if a layer saw no sample.
pub fn activation_matching(
    stats: &BTreeMap<String, ActivationStats>,
    options: &ActivationMatchingOptions,
) -> Result<BTreeMap<String, Permutation>> {
    let solve = |(name, st): (&String, &ActivationStats)| -> Result<(String, Permutation)> {
        square_units(name, st)?;
        let c = st.statistic(options.statistic)?;
        Ok((name.clone(), lap_max(c.view(), options.solver, None)?.0))
    };
    #[cfg(feature = "rayon")]
    {
        use rayon::prelude::*;
        let items: Vec<(&String, &ActivationStats)> = stats.iter().collect();
        items.into_par_iter().map(solve).collect()
    }
    #[cfg(not(feature = "rayon"))]
    {
        stats.iter().map(solve).collect()
    }
}

/// Activation matching from whole feature arrays: `features_a[name]` and `features_b[name]`
/// are the features of permutation `name`'s units (`[N, d]`, `[N, T, d]` or `[N, c, h, w]`,
/// see [`ActivationStats::update_dyn`]).
///
/// # Errors
/// [`Error::MissingParam`] if a name of A is missing in B (or vice versa); as
/// [`ActivationStats::update_dyn`] and [`activation_matching`].
pub fn activation_matching_from_features<F: Float>(
    features_a: &BTreeMap<String, ndarray::ArrayD<F>>,
    features_b: &BTreeMap<String, ndarray::ArrayD<F>>,
    options: &ActivationMatchingOptions,
) -> Result<BTreeMap<String, Permutation>> {
    activation_matching(
        &activation_stats_from_features(features_a, features_b)?,
        options,
    )
}

/// The [`ActivationStats`] of every layer from whole feature arrays: `features_a[name]` and
/// `features_b[name]` (`[N, d]`, `[N, T, d]` or `[N, c, h, w]`, see
/// [`ActivationStats::update_dyn`]), keyed by `name` — what [`activation_matching_from_features`]
/// matches, for callers that solve the LAPs themselves (e.g. structured steps).
///
/// # Errors
/// [`Error::MissingParam`] if a name of A is missing in B (or vice versa); as
/// [`ActivationStats::update_dyn`].
pub fn activation_stats_from_features<F: Float>(
    features_a: &BTreeMap<String, ndarray::ArrayD<F>>,
    features_b: &BTreeMap<String, ndarray::ArrayD<F>>,
) -> Result<BTreeMap<String, ActivationStats>> {
    stats_per_layer(features_a, features_b, |d_a, d_b, a, b| {
        let mut st = ActivationStats::new(d_a, d_b);
        st.update_dyn(a, b)?;
        Ok(st)
    })
}

/// Statistics of every layer from whole feature arrays: `build(d_a, d_b, a, b)` for the features
/// `a = features_a[name]`, `b = features_b[name]` (`d` their units: axis 2 of `[N, T, d]`
/// token features, else axis 1), keyed by `name`.
///
/// # Errors
/// [`Error::MissingParam`] if a name of one side is missing on the other; what `build` reports.
pub(crate) fn stats_per_layer<F: Float, S>(
    features_a: &BTreeMap<String, ndarray::ArrayD<F>>,
    features_b: &BTreeMap<String, ndarray::ArrayD<F>>,
    mut build: impl FnMut(usize, usize, ArrayViewD<'_, F>, ArrayViewD<'_, F>) -> Result<S>,
) -> Result<BTreeMap<String, S>> {
    if let Some(k) = features_b.keys().find(|k| !features_a.contains_key(*k)) {
        return Err(Error::MissingParam {
            param: k.clone(),
            context: "the features of model A".into(),
        });
    }
    let mut stats = BTreeMap::new();
    for (name, fa) in features_a {
        let fb = features_b.get(name).ok_or_else(|| Error::MissingParam {
            param: name.clone(),
            context: "the features of model B".into(),
        })?;
        let st = build(
            units_of(fa.shape()),
            units_of(fb.shape()),
            fa.view(),
            fb.view(),
        )?;
        stats.insert(name.clone(), st);
    }
    Ok(stats)
}

/// [`ActivationStats`] of every hidden layer's post-activations of two MLPs (named like
/// [`mlp`](crate::mlp): `layers.{ℓ}.weight` / `layers.{ℓ}.bias`) on the inputs `x`
/// (`[N, in]`), streamed over row blocks of at most 1024 samples, keyed `P_0 … P_{L−2}` like
/// [`PermutationSpec::mlp`](crate::PermutationSpec::mlp)'s permutations of those units.
///
/// # Errors
/// What [`mlp::forward_features`](crate::mlp::forward_features) reports (a malformed MLP, a
/// bad input); [`Error::ShapeMismatch`] if A and B have different widths;
/// [`Error::EmptyInput`] if `x` has no rows.
pub fn mlp_activation_stats<F: Float>(
    a: &crate::Params<F>,
    b: &crate::Params<F>,
    x: ArrayView2<'_, F>,
) -> Result<BTreeMap<String, ActivationStats>> {
    let stats = super::commutativity::mlp_hidden_stats(
        a,
        b,
        x,
        "inputs x of the activation statistics",
        |d| ActivationStats::new(d, d),
        |st, ha, hb| st.update(ha, hb),
    )?;
    Ok(stats
        .into_iter()
        .enumerate()
        .map(|(l, st)| (format!("P_{l}"), st))
        .collect())
}

/// Activation matching of two MLPs in one call: [`mlp_activation_stats`] on `x`, then
/// [`activation_matching`]. Apply the result to B with
/// [`apply_permutations`](crate::apply_permutations) and
/// [`PermutationSpec::mlp`](crate::PermutationSpec::mlp).
///
/// # Errors
/// As [`mlp_activation_stats`] and [`activation_matching`].
///
/// # Examples
/// ```
/// use llfc::matching::activation::{mlp_activation_matching, ActivationMatchingOptions};
/// use llfc::{apply_permutations, mlp, Permutation, PermutationSpec};
/// use rand::SeedableRng;
/// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
/// let a = mlp::init::<f64, _>(&[4, 8, 8, 3], &mut rng)?;
/// let spec = PermutationSpec::mlp(3);
/// let planted = spec.perm_sizes(&a)?.into_iter()
///     .map(|(k, n)| (k, Permutation::random(n, &mut rng))).collect();
/// let b = apply_permutations(&spec, &planted, &a)?; // B: a permuted copy of A
/// let x = ndarray::Array2::from_shape_fn((64, 4), |(i, j)| ((i * 7 + j * 3) % 11) as f64 - 5.0);
/// let perms = mlp_activation_matching(&a, &b, x.view(), &ActivationMatchingOptions::default())?;
/// let aligned = apply_permutations(&spec, &perms, &b)?;
/// let (ya, yb) = (mlp::forward(&aligned, &x)?, mlp::forward(&b, &x)?);
/// assert!(ya.iter().zip(&yb).all(|(u, v)| (u - v).abs() < 1e-12)); // the same function
/// # Ok::<(), llfc::Error>(())
/// ```
pub fn mlp_activation_matching<F: Float>(
    a: &crate::Params<F>,
    b: &crate::Params<F>,
    x: ArrayView2<'_, F>,
    options: &ActivationMatchingOptions,
) -> Result<BTreeMap<String, Permutation>> {
    activation_matching(&mlp_activation_stats(a, b, x)?, options)
}
