//! BatchNorm reset: recompute the running statistics of an (interpolated) network from its own
//! activations, layer by layer.

use std::collections::BTreeSet;

use ndarray::ArrayD;

use super::driver::measure_checked;
use super::stats::UnitStats;
use crate::error::{Error, Result};
use crate::float::Float;
use crate::params::Params;

/// One BatchNorm layer: the feature key of its **input** (what the caller's measurement
/// returns for it) and the names of its running statistics.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BatchNormLayer {
    /// The feature key of the BN's input (e.g. a PyTorch module name, measured with a
    /// forward pre-hook).
    pub input: String,
    /// `running_mean`, `[channels]`.
    pub running_mean: String,
    /// `running_var`, `[channels]`.
    pub running_var: String,
}

impl BatchNormLayer {
    /// The PyTorch BatchNorm module `name`: feature `name` (its input), buffers
    /// `name.running_mean` and `name.running_var`.
    #[must_use]
    pub fn module(name: &str) -> Self {
        Self {
            input: name.to_string(),
            running_mean: format!("{name}.running_mean"),
            running_var: format!("{name}.running_var"),
        }
    }
}

/// Which variance goes into `running_var`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RunningVariance {
    /// `Σ (x − μ)² / (n − 1)`: PyTorch's convention (BatchNorm always stores the unbiased
    /// batch variance in `running_var`, while it normalises training batches with the biased
    /// one). The default.
    #[default]
    Unbiased,
    /// `Σ (x − μ)² / n`, the population variance: then the eval-mode BN normalises the data to
    /// exactly zero mean and variance `var / (var + eps)` per channel.
    Population,
}

/// A copy of `params` with the running statistics of `layer` set from `stats`, the statistics
/// of the BN's input: `running_mean ← μ`, `running_var ←` the variance chosen by `variance`.
/// Values are computed in f64 and rounded to `F`.
///
/// # Errors
/// [`Error::MissingParam`] if a buffer is absent; [`Error::ShapeMismatch`] if a buffer is not
/// a vector of `stats.units()` entries; [`Error::EmptyInput`] for statistics without samples;
/// [`Error::InvalidArgument`] for an unbiased variance of a single sample.
pub fn set_running_stats<F: Float>(
    params: &Params<F>,
    layer: &BatchNormLayer,
    stats: &UnitStats,
    variance: RunningVariance,
) -> Result<Params<F>> {
    if stats.count() == 0 {
        return Err(Error::EmptyInput {
            what: format!("statistics of the input of `{}` (no sample)", layer.input),
        });
    }
    for name in [&layer.running_mean, &layer.running_var] {
        let t = params.require(name)?;
        if t.shape() != [stats.units()] {
            return Err(Error::ShapeMismatch {
                what: format!("BatchNorm buffer `{name}` versus its input's channels"),
                expected: vec![stats.units()],
                found: t.shape().to_vec(),
            });
        }
    }
    let var = match variance {
        RunningVariance::Unbiased => stats.unbiased_variance()?,
        RunningVariance::Population => stats.variance(),
    };
    let to_f = |v: ndarray::Array1<f64>| -> ArrayD<F> { v.mapv(F::from_f64).into_dyn() };
    let mut out = params.clone();
    out.insert(&layer.running_mean, to_f(stats.mean().to_owned()));
    out.insert(&layer.running_var, to_f(var));
    Ok(out)
}

/// Reset the BatchNorm running statistics of `params` (typically θ(α), whose interpolated
/// running statistics describe neither A's nor B's activations — nor its own).
///
/// **Definition.** For each BN of `layers`, **in the order given** (from the input up),
/// `measure(params, [input])` returns the statistics of that BN's input on the data with the
/// network **in eval mode** (every BN normalising with its running statistics) and every
/// earlier BN already reset; the BN gets `running_mean = μ` (the population mean over samples
/// and positions) and `running_var` = the population variance `Σ (x − μ)² / n` times
/// `n / (n − 1)` by default ([`RunningVariance::Unbiased`], PyTorch's convention), or without
/// that factor ([`RunningVariance::Population`]). After the reset, every BN of the eval-mode
/// network sees data whose per-channel mean is its `running_mean`: it normalises exactly the
/// activations it is given.
///
/// **Relation to PyTorch's reset** (`bn.reset_running_stats(); bn.momentum = None`, a pass in
/// `train()` mode, then `eval()`, as Git Re-Basin and REPAIR's code do): PyTorch stores the
/// *average over batches* of each batch's mean and unbiased variance, and during that pass
/// every BN normalises with the *batch's* statistics, so later BNs see activations normalised
/// slightly differently from the eval-mode network they will run in. With the whole data as
/// one batch, the first BN's statistics are identical to this definition's (default
/// variance); later BNs differ by `O(1/n)` (biased versus unbiased normalisation of earlier
/// BNs, and `eps`). With minibatches of `m` samples PyTorch's variance omits the
/// between-batch spread of the means (relative `O(1/m)`) and depends on batch size and order;
/// this definition does not.
///
/// `num_batches_tracked` (an integer buffer, not in [`Params`]) is left as it is. Costs one
/// call of `measure` per layer.
///
/// # Errors
/// [`Error::EmptyInput`] for no layers; [`Error::InvalidArgument`] if a BN or buffer is
/// listed twice; [`Error::MissingParam`] for a missing buffer (before anything is measured);
/// [`Error::ShapeMismatch`] if `measure` returns the wrong number of statistics or widths that
/// disagree with the buffers; the first error of `measure`.
///
/// # Examples
/// ```
/// use llfc::repair::{reset_batchnorm, BatchNormLayer, RunningVariance, UnitStats};
/// use llfc::Params;
/// use ndarray::{arr1, array};
/// // A "network" whose BN input is the data itself: x ∈ {1, 3} (one channel).
/// let mut p = Params::<f64>::new();
/// p.insert("bn.running_mean", arr1(&[0.0]).into_dyn());
/// p.insert("bn.running_var", arr1(&[1.0]).into_dyn());
/// let x = array![[1.0], [3.0]].into_dyn();
/// let measure = |_: &Params<f64>, _: &[&str]| Ok(vec![UnitStats::from_features(x.view())?]);
/// let reset = reset_batchnorm(&p, &[BatchNormLayer::module("bn")], measure, RunningVariance::Unbiased)?;
/// assert_eq!((reset["bn.running_mean"][0], reset["bn.running_var"][0]), (2.0, 2.0));
/// # Ok::<(), llfc::Error>(())
/// ```
pub fn reset_batchnorm<F, M>(
    params: &Params<F>,
    layers: &[BatchNormLayer],
    mut measure: M,
    variance: RunningVariance,
) -> Result<Params<F>>
where
    F: Float,
    M: FnMut(&Params<F>, &[&str]) -> Result<Vec<UnitStats>>,
{
    if layers.is_empty() {
        return Err(Error::EmptyInput {
            what: "list of BatchNorm layers to reset".into(),
        });
    }
    let (mut inputs, mut names) = (BTreeSet::new(), BTreeSet::new());
    for l in layers {
        let fresh = inputs.insert(l.input.as_str())
            && names.insert(l.running_mean.as_str())
            && names.insert(l.running_var.as_str());
        if !fresh {
            return Err(Error::InvalidArgument {
                name: "layers",
                reason: format!(
                    "BatchNorm `{}` or one of its buffers is listed twice",
                    l.input
                ),
            });
        }
        params.require(&l.running_mean)?;
        params.require(&l.running_var)?;
    }
    let mut out = params.clone();
    for layer in layers {
        let stats = measure_checked(&mut measure, &out, &[layer.input.as_str()])?
            .pop()
            .expect("one statistic was checked to be there");
        out = set_running_stats(&out, layer, &stats, variance)?;
    }
    Ok(out)
}
