//! The REPAIR driver: correct the units of θ(α) layer by layer from the input, each layer
//! measured on the network whose earlier layers are already repaired.

use std::collections::BTreeSet;

use super::fold::{check_unit_alpha, fold_correction, missing_bias, Correction, Target};
use super::stats::UnitStats;
use crate::error::{Error, Result};
use crate::float::Float;
use crate::params::Params;

/// One repaired layer: the name under which the caller's measurement function reports its
/// units' features, and the parameters of the layer that produces them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RepairLayer {
    /// The feature key passed to the measurement function (e.g. a PyTorch module name).
    pub feature: String,
    /// The producing layer's weight, `[units, …]` (linear, conv, or a norm layer's scale).
    pub weight: String,
    /// The producing layer's bias, `[units]` (required: see [`fold_correction`]).
    pub bias: String,
}

impl RepairLayer {
    /// A layer with explicit names.
    #[must_use]
    pub fn new(
        feature: impl Into<String>,
        weight: impl Into<String>,
        bias: impl Into<String>,
    ) -> Self {
        Self {
            feature: feature.into(),
            weight: weight.into(),
            bias: bias.into(),
        }
    }

    /// The outputs of the PyTorch module `name`: feature `name`, parameters `name.weight` and
    /// `name.bias` (e.g. `RepairLayer::module("features.0")` for a conv, `("bn1")` for a
    /// BatchNorm's output).
    #[must_use]
    pub fn module(name: &str) -> Self {
        Self::new(name, format!("{name}.weight"), format!("{name}.bias"))
    }
}

/// Options of [`repair`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RepairOptions {
    /// A unit whose measured std is at most this multiple of its mean's magnitude (in
    /// particular exactly 0) counts as constant: it is shifted to `μ_α` but not rescaled, and
    /// reported (see [`Correction::new`]). Default `1e-9`.
    pub zero_std_tolerance: f64,
}

impl Default for RepairOptions {
    fn default() -> Self {
        Self {
            zero_std_tolerance: 1e-9,
        }
    }
}

/// What REPAIR did to one layer.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerRepair {
    /// The layer.
    pub layer: RepairLayer,
    /// `μ̃, σ̃`: its units measured on θ(α) with every earlier layer already repaired.
    pub measured: UnitStats,
    /// `μ_α, σ_α`.
    pub target: Target,
    /// The correction folded into the layer (with the zero-variance units).
    pub correction: Correction,
}

/// The repaired network and what was done, layer by layer.
#[derive(Clone, Debug, PartialEq)]
pub struct Repaired<F> {
    /// The repaired parameters: same names, shapes and order as θ(α).
    pub params: Params<F>,
    /// One entry per layer, in the order repaired.
    pub layers: Vec<LayerRepair>,
}

impl<F> Repaired<F> {
    /// `(feature, unit)` of every unit left unscaled because its measured variance was zero.
    #[must_use]
    pub fn zero_variance_units(&self) -> Vec<(&str, usize)> {
        self.layers
            .iter()
            .flat_map(|l| {
                let name = l.layer.feature.as_str();
                l.correction.zero_variance.iter().map(move |&k| (name, k))
            })
            .collect()
    }
}

/// Check a list of layers against a parameter set: non-empty, no feature or parameter named
/// twice, every parameter present.
fn check_layers<F: Float>(params: &Params<F>, layers: &[RepairLayer]) -> Result<()> {
    if layers.is_empty() {
        return Err(Error::EmptyInput {
            what: "list of layers to repair".into(),
        });
    }
    let (mut features, mut names) = (BTreeSet::new(), BTreeSet::new());
    for l in layers {
        if !features.insert(l.feature.as_str()) {
            return Err(Error::InvalidArgument {
                name: "layers",
                reason: format!("feature `{}` is listed twice", l.feature),
            });
        }
        for p in [&l.weight, &l.bias] {
            if !names.insert(p.as_str()) {
                return Err(Error::InvalidArgument {
                    name: "layers",
                    reason: format!("parameter `{p}` belongs to two repaired layers"),
                });
            }
        }
        params.require(&l.weight)?;
        if !params.contains(&l.bias) {
            return Err(missing_bias(&l.weight, &l.bias));
        }
    }
    Ok(())
}

/// Call the caller's measurement and check that it answered one statistic per feature.
pub(crate) fn measure_checked<F, M>(
    measure: &mut M,
    params: &Params<F>,
    features: &[&str],
) -> Result<Vec<UnitStats>>
where
    M: FnMut(&Params<F>, &[&str]) -> Result<Vec<UnitStats>>,
{
    let stats = measure(params, features)?;
    if stats.len() != features.len() {
        return Err(Error::ShapeMismatch {
            what: format!("statistics returned by the measurement for features {features:?}"),
            expected: vec![features.len()],
            found: vec![stats.len()],
        });
    }
    if let Some(k) = stats.iter().position(|s| s.count() == 0) {
        return Err(Error::EmptyInput {
            what: format!("statistics of feature `{}` (no sample)", features[k]),
        });
    }
    Ok(stats)
}

/// REPAIR (Jordan et al., *REPAIR: REnormalizing Permuted Activations for Interpolation
/// Repair*, ICLR 2023) of `θ(α) = α θ_A + (1 − α) θ_B` for the units of `layers`.
///
/// `measure(params, features)` is the caller's forward pass: it returns, for each feature key
/// asked, the [`UnitStats`] of those units of the network `params` on the data (accumulate
/// batches with [`UnitStats::update`]). It is called once on A and once on B for every layer
/// (targets `μ_α`, `σ_α`, [`Target::interpolate`]), then once per layer on θ(α), **in the order
/// given** (from the input up), each time on the network whose earlier layers are already
/// corrected: correcting layer ℓ changes what layer ℓ + 1 sees. For each layer the measured
/// `μ̃, σ̃` give `s = σ_α / σ̃` and the correction `z ← (z − μ̃) s + μ_α` ([`Correction::new`];
/// zero-variance units shifted only, and reported), folded into the producing layer
/// ([`fold_correction`]: `W ← s W`, `b ← s (b − μ̃) + μ_α`). The result is an ordinary
/// checkpoint of the same architecture. α = 1 (α = 0) returns A (B) exactly if `measure` is
/// deterministic, since then `s = 1` and `t = 0` exactly.
///
/// Costs `2 + |layers|` calls of `measure`.
///
/// # Errors
/// [`Error::NonFinite`] / [`Error::InvalidArgument`] if α is not in `[0, 1]`; what
/// [`Params::check_compatible`] reports for A and B; [`Error::EmptyInput`] for no layers;
/// [`Error::InvalidArgument`] if a feature or parameter is listed twice;
/// [`Error::MissingParam`] for a missing weight or bias (before anything is measured);
/// [`Error::ShapeMismatch`] if `measure` returns the wrong number of statistics, or statistics
/// whose widths disagree between A, B and θ(α) or with the layer's parameters;
/// [`Error::EmptyInput`] for statistics without samples; the first error of `measure`.
pub fn repair<F, M>(
    a: &Params<F>,
    b: &Params<F>,
    alpha: f64,
    layers: &[RepairLayer],
    mut measure: M,
    options: &RepairOptions,
) -> Result<Repaired<F>>
where
    F: Float,
    M: FnMut(&Params<F>, &[&str]) -> Result<Vec<UnitStats>>,
{
    check_unit_alpha(alpha)?;
    a.check_compatible(b)?;
    check_layers(a, layers)?;
    let features: Vec<&str> = layers.iter().map(|l| l.feature.as_str()).collect();
    let stats_a = measure_checked(&mut measure, a, &features)?;
    let stats_b = measure_checked(&mut measure, b, &features)?;
    let targets = stats_a
        .iter()
        .zip(&stats_b)
        .map(|(sa, sb)| Target::interpolate(sa, sb, alpha))
        .collect::<Result<Vec<_>>>()?;
    repair_towards(
        &a.interpolate(b, alpha)?,
        layers,
        &targets,
        measure,
        options,
    )
}

/// The layer-by-layer part of [`repair`] for given targets: starting from `theta`, for each
/// layer in order, measure its units on the current network, correct them towards
/// `targets[i]` and fold the correction. Use it when the targets come from elsewhere (files
/// exported by another framework, or A's and B's statistics computed once for many α).
///
/// # Errors
/// As [`repair`]; [`Error::ShapeMismatch`] if `targets` and `layers` differ in length.
pub fn repair_towards<F, M>(
    theta: &Params<F>,
    layers: &[RepairLayer],
    targets: &[Target],
    mut measure: M,
    options: &RepairOptions,
) -> Result<Repaired<F>>
where
    F: Float,
    M: FnMut(&Params<F>, &[&str]) -> Result<Vec<UnitStats>>,
{
    check_layers(theta, layers)?;
    if targets.len() != layers.len() {
        return Err(Error::ShapeMismatch {
            what: "REPAIR targets (one per layer)".into(),
            expected: vec![layers.len()],
            found: vec![targets.len()],
        });
    }
    let mut params = theta.clone();
    let mut report = Vec::with_capacity(layers.len());
    for (layer, target) in layers.iter().zip(targets) {
        let measured = measure_checked(&mut measure, &params, &[layer.feature.as_str()])?
            .pop()
            .expect("one statistic was checked to be there");
        let correction = Correction::new(&measured, target, options.zero_std_tolerance)?;
        params = fold_correction(&params, &layer.weight, &layer.bias, &correction)?;
        report.push(LayerRepair {
            layer: layer.clone(),
            measured,
            target: target.clone(),
            correction,
        });
    }
    Ok(Repaired {
        params,
        layers: report,
    })
}
