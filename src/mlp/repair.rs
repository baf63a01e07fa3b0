//! REPAIR of the reference MLP (Jordan et al. 2023): the hidden pre-activations of
//! θ(α) renormalised to the interpolated statistics of A and B.

use ndarray::{ArrayBase, Data, Ix2};

use super::{affine, check_input, layer_views, relu_inplace};
use crate::error::{Error, Result};
use crate::float::Float;
use crate::params::Params;
use crate::repair::{self, RepairLayer, RepairOptions, Repaired, UnitStats};

/// Feature key of layer ℓ's pre-activation `z_ℓ`: `layers.{ℓ}`, the module name.
fn feature_name(layer: usize) -> String {
    format!("layers.{layer}")
}

/// The hidden layers of an MLP with `num_layers` linear layers as REPAIR layers: for
/// `ℓ = 0, …, L − 2`, the pre-activation `z_ℓ` (feature `layers.{ℓ}`) produced by
/// `layers.{ℓ}.weight` and `layers.{ℓ}.bias`. The logits are not repaired.
#[must_use]
pub fn repair_layers(num_layers: usize) -> Vec<RepairLayer> {
    (0..num_layers.saturating_sub(1))
        .map(|l| RepairLayer::module(&feature_name(l)))
        .collect()
}

/// The [`UnitStats`] of the pre-activations `z_ℓ` of the MLP `params` on the inputs `x`, for
/// the features `layers.{ℓ}` asked, in that order. The forward pass stops at the deepest layer
/// asked. This is the measurement [`repair`](fn@repair) and [`repair_report`] give to
/// [`repair::repair`](crate::repair::repair).
///
/// # Errors
/// What [`forward`](super::forward) reports for `params` and `x`; [`Error::InvalidArgument`]
/// for a feature that is not `layers.{ℓ}` with `ℓ < L`.
pub fn pre_activation_stats<F: Float, S: Data<Elem = F>>(
    params: &Params<F>,
    x: &ArrayBase<S, Ix2>,
    features: &[&str],
) -> Result<Vec<UnitStats>> {
    let layers = layer_views(params)?;
    check_input(x, layers[0].0.ncols())?;
    let wanted = features
        .iter()
        .map(|f| {
            f.strip_prefix("layers.")
                .and_then(|i| i.parse::<usize>().ok())
                .filter(|&l| l < layers.len() && feature_name(l) == *f)
                .ok_or_else(|| Error::InvalidArgument {
                    name: "features",
                    reason: format!(
                        "`{f}` is not a layer of this {}-layer MLP (`layers.0` … `layers.{}`)",
                        layers.len(),
                        layers.len() - 1
                    ),
                })
        })
        .collect::<Result<Vec<usize>>>()?;
    let deepest = wanted.iter().copied().max().unwrap_or(0);
    let mut stats: Vec<Option<UnitStats>> = vec![None; layers.len()];
    let mut z = affine(x, &layers[0]);
    for l in 0..=deepest {
        if wanted.contains(&l) {
            stats[l] = Some(UnitStats::from_features(z.view().into_dyn())?);
        }
        if l < deepest {
            relu_inplace(&mut z);
            z = affine(&z, &layers[l + 1]);
        }
    }
    Ok(wanted
        .iter()
        .map(|&l| stats[l].clone().expect("measured above"))
        .collect())
}

/// REPAIR of the interpolated MLP `θ(α) = α a + (1 − α) b_aligned` on the inputs `x` (the
/// training inputs, as in the paper), with the default [`RepairOptions`]: every hidden layer's
/// pre-activations get the mean `μ_α = α μ_A + (1 − α) μ_B` and the standard deviation
/// `σ_α = α σ_A + (1 − α) σ_B` of A's and B's on `x`, layer by layer from the input, folded
/// into `layers.{ℓ}.weight` and `layers.{ℓ}.bias` (see [`crate::repair`]). `b_aligned` should
/// be B already permuted onto A (matching first): REPAIR corrects statistics unit by unit.
///
/// α = 1 returns `a` and α = 0 returns `b_aligned` exactly. Units constant on `x` are shifted
/// but not rescaled; [`repair_report`] lists them. Costs two forward passes on `x` (A and B)
/// and one per hidden layer, each stopping at that layer.
///
/// # Errors
/// [`Error::InvalidArgument`] / [`Error::NonFinite`] if α is not a number in `[0, 1]`; what
/// [`Params::check_compatible`] and [`widths`](super::widths) report for `a`, `b_aligned`
/// (including NaN weights); what [`forward`](super::forward) reports for `x` (shape, NaN);
/// [`Error::EmptyInput`] for an MLP without hidden layer or `x` without rows.
///
/// # Examples
/// ```
/// use llfc::mlp;
/// use rand::SeedableRng;
/// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
/// let a = mlp::init::<f64, _>(&[3, 16, 2], &mut rng)?;
/// let b = mlp::init::<f64, _>(&[3, 16, 2], &mut rng)?;
/// let x = ndarray::Array2::from_shape_fn((50, 3), |(i, j)| ((i * 3 + j) as f64).sin());
/// let mid = mlp::repair(&a, &b, 0.5, &x)?;
/// assert_eq!(mlp::repair(&a, &b, 1.0, &x)?, a);
/// assert_eq!(mid.len(), a.len());
/// # Ok::<(), llfc::Error>(())
/// ```
pub fn repair<F: Float, S: Data<Elem = F>>(
    a: &Params<F>,
    b_aligned: &Params<F>,
    alpha: f64,
    x: &ArrayBase<S, Ix2>,
) -> Result<Params<F>> {
    Ok(repair_report(a, b_aligned, alpha, x, &RepairOptions::default())?.params)
}

/// [`repair`](fn@repair) with options, returning the per-layer report (measured and target statistics,
/// scales, zero-variance units) with the parameters.
///
/// # Errors
/// As [`repair`](fn@repair).
pub fn repair_report<F: Float, S: Data<Elem = F>>(
    a: &Params<F>,
    b_aligned: &Params<F>,
    alpha: f64,
    x: &ArrayBase<S, Ix2>,
    options: &RepairOptions,
) -> Result<Repaired<F>> {
    let num_layers = super::num_layers(a)?;
    super::num_layers(b_aligned)?;
    if num_layers < 2 {
        return Err(Error::EmptyInput {
            what: "hidden layers of the MLP (REPAIR corrects hidden units; this MLP has none)"
                .into(),
        });
    }
    if x.nrows() == 0 {
        return Err(Error::EmptyInput {
            what: "input x (no samples)".into(),
        });
    }
    let x = x.view();
    repair::repair(
        a,
        b_aligned,
        alpha,
        &repair_layers(num_layers),
        |p: &Params<F>, f: &[&str]| pre_activation_stats(p, &x, f),
        options,
    )
}
