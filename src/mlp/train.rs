//! Seeded minibatch SGD with momentum for the reference MLP.

use ndarray::{Array, Array1, Array2, ArrayBase, Axis, Data, Dimension, Ix2, Zip};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{
    bias_name, check_input, layer_views, loss, loss_and_grads, weight_name, Eval, LayerRef,
};
use crate::error::{Error, Result};
use crate::float::Float;
use crate::params::Params;
use crate::permutation::Permutation;

/// Hyper-parameters of minibatch SGD with momentum, in PyTorch's `torch.optim.SGD` convention.
///
/// One step on a minibatch with mean-loss gradient `g`:
/// ```text
/// g ← g + λ θ                  (weight decay λ, applied to weights and biases)
/// v ← μ v + g                  (momentum μ; v starts at 0)
/// θ ← θ − η v                  (or θ ← θ − η (g + μ v) with Nesterov)
/// ```
/// An epoch visits every sample once, in an order drawn from the caller's RNG, in batches of
/// `batch_size` (the last one may be smaller; it is kept, like PyTorch's `drop_last = false`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdConfig {
    /// Learning rate `η > 0`. Default `0.05`.
    pub learning_rate: f64,
    /// Momentum `μ ∈ [0, 1)`. Default `0.9`.
    pub momentum: f64,
    /// L2 weight decay `λ ≥ 0`. Default `0`.
    pub weight_decay: f64,
    /// Nesterov momentum (needs `μ > 0`). Default `false`.
    pub nesterov: bool,
    /// Minibatch size, `≥ 1`. Default `64`.
    pub batch_size: usize,
    /// Number of epochs run by [`train`] and [`TrainState::fit`]. Default `20`.
    pub epochs: usize,
}

impl Default for SgdConfig {
    fn default() -> Self {
        Self {
            learning_rate: 0.05,
            momentum: 0.9,
            weight_decay: 0.0,
            nesterov: false,
            batch_size: 64,
            epochs: 20,
        }
    }
}

impl SgdConfig {
    /// Check every field against its documented domain.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the first field out of its domain.
    pub fn validate(&self) -> Result<()> {
        let bad = |name, reason: &str| {
            Err(Error::InvalidArgument {
                name,
                reason: reason.into(),
            })
        };
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return bad("learning_rate", "must be finite and positive");
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return bad("momentum", "must lie in [0, 1)");
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad("weight_decay", "must be finite and non-negative");
        }
        if self.nesterov && self.momentum == 0.0 {
            return bad("nesterov", "Nesterov momentum needs momentum > 0");
        }
        if self.batch_size == 0 {
            return bad("batch_size", "must be at least 1");
        }
        Ok(())
    }
}

/// The complete state of an SGD run: parameters, momentum buffers and the number of epochs
/// done. `Clone` it to *spawn* children that continue from the same point with different data
/// orders (Frankle et al. 2020); store [`params`](Self::params) and
/// [`velocity`](Self::velocity) and rebuild with [`from_parts`](Self::from_parts) to resume
/// later. Given the same RNG state, a resumed run is bit-identical to an uninterrupted one.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainState<F> {
    weights: Vec<Array2<F>>,
    biases: Vec<Array1<F>>,
    velocity_w: Vec<Array2<F>>,
    velocity_b: Vec<Array1<F>>,
    epoch: usize,
}

impl<F: Float> TrainState<F> {
    /// Start training from `params` with zero momentum at epoch 0.
    ///
    /// # Errors
    /// As [`super::widths`].
    pub fn new(params: &Params<F>) -> Result<Self> {
        let layers = layer_views(params)?;
        let weights: Vec<Array2<F>> = layers.iter().map(|(w, _)| w.to_owned()).collect();
        let biases: Vec<Array1<F>> = layers.iter().map(|(_, b)| b.to_owned()).collect();
        Ok(Self {
            velocity_w: weights.iter().map(|w| Array2::zeros(w.raw_dim())).collect(),
            velocity_b: biases.iter().map(|b| Array1::zeros(b.raw_dim())).collect(),
            weights,
            biases,
            epoch: 0,
        })
    }

    /// Resume from saved parameters, momentum buffers `velocity` (same names and shapes as
    /// `params`) and the number of epochs already done.
    ///
    /// # Errors
    /// As [`super::widths`] for `params` and for `velocity`; as [`Params::check_compatible`]
    /// if their names or shapes differ.
    pub fn from_parts(params: &Params<F>, velocity: &Params<F>, epoch: usize) -> Result<Self> {
        let mut state = Self::new(params)?;
        params.check_compatible(velocity)?;
        let v = Self::new(velocity)?;
        state.velocity_w = v.weights;
        state.velocity_b = v.biases;
        state.epoch = epoch;
        Ok(state)
    }

    /// Number of epochs completed.
    #[must_use]
    pub fn epoch(&self) -> usize {
        self.epoch
    }

    /// The current parameters, named `layers.{ℓ}.weight` / `layers.{ℓ}.bias`.
    #[must_use]
    pub fn params(&self) -> Params<F> {
        to_params(&self.weights, &self.biases)
    }

    /// The current parameters, consuming the state (no copy).
    #[must_use]
    pub fn into_params(self) -> Params<F> {
        let mut out = Params::new();
        for (k, (w, b)) in self.weights.into_iter().zip(self.biases).enumerate() {
            out.insert(weight_name(k), w.into_dyn());
            out.insert(bias_name(k), b.into_dyn());
        }
        out
    }

    /// The current momentum buffers `v`, with the parameters' names and shapes.
    #[must_use]
    pub fn velocity(&self) -> Params<F> {
        to_params(&self.velocity_w, &self.velocity_b)
    }

    /// Loss and accuracy of the current parameters on `(x, labels)`.
    ///
    /// # Errors
    /// As [`super::evaluate`].
    pub fn evaluate<S: Data<Elem = F>>(
        &self,
        x: &ArrayBase<S, Ix2>,
        labels: &[usize],
    ) -> Result<Eval> {
        super::evaluate(&self.params(), x, labels)
    }

    fn views(&self) -> Vec<LayerRef<'_, F>> {
        self.weights
            .iter()
            .zip(&self.biases)
            .map(|(w, b)| (w.view(), b.view()))
            .collect()
    }

    /// One epoch of minibatch SGD (see [`SgdConfig`]): draws the sample order as
    /// `Permutation::random(N, rng)` (Fisher–Yates), then steps through consecutive batches.
    /// Returns the epoch's mean training loss, each batch's loss being taken before its update.
    /// Costs about `6 N P` flops for `P` weights. Deterministic given the RNG state.
    ///
    /// # Errors
    /// [`SgdConfig::validate`]'s errors; [`Error::ShapeMismatch`] / [`Error::NonFinite`] for
    /// `x` as in [`super::forward`]; [`cross_entropy`](super::cross_entropy)'s errors for the
    /// labels (checked before any update); [`Error::NonFinite`] if training diverges (the
    /// state is then left as it was at the failing step).
    pub fn train_epoch<S, R>(
        &mut self,
        x: &ArrayBase<S, Ix2>,
        labels: &[usize],
        config: &SgdConfig,
        rng: &mut R,
    ) -> Result<f64>
    where
        S: Data<Elem = F>,
        R: Rng + ?Sized,
    {
        config.validate()?;
        check_input(x, self.weights[0].ncols())?;
        let classes = self.weights.last().expect("at least one layer").nrows();
        loss::check_labels(x.nrows(), classes, labels)?;
        let order = Permutation::random(x.nrows(), rng);
        let mut total = 0.0;
        for (step, batch) in order.as_slice().chunks(config.batch_size).enumerate() {
            let xb = x.select(Axis(0), batch);
            let yb: Vec<usize> = batch.iter().map(|&i| labels[i]).collect();
            let (loss, grads) = loss_and_grads(&self.views(), &xb, &yb).map_err(|e| match e {
                Error::NonFinite { .. } => Error::NonFinite {
                    what: format!(
                        "logits at epoch {}, step {step}: training diverged (lower the learning rate)",
                        self.epoch + 1
                    ),
                },
                other => other,
            })?;
            #[allow(clippy::cast_precision_loss)]
            {
                total += loss * batch.len() as f64;
            }
            for (k, (gw, gb)) in grads.iter().enumerate() {
                sgd_update(&mut self.weights[k], &mut self.velocity_w[k], gw, config);
                sgd_update(&mut self.biases[k], &mut self.velocity_b[k], gb, config);
            }
        }
        self.epoch += 1;
        #[allow(clippy::cast_precision_loss)]
        Ok(total / x.nrows() as f64)
    }

    /// Run `config.epochs` epochs of [`train_epoch`](Self::train_epoch), calling
    /// `on_epoch(&state, mean_loss)` after each (for progress display or per-epoch evaluation).
    /// Returns the mean training loss of every epoch.
    ///
    /// # Errors
    /// As [`train_epoch`](Self::train_epoch).
    pub fn fit<S, R>(
        &mut self,
        x: &ArrayBase<S, Ix2>,
        labels: &[usize],
        config: &SgdConfig,
        rng: &mut R,
        mut on_epoch: impl FnMut(&Self, f64),
    ) -> Result<Vec<f64>>
    where
        S: Data<Elem = F>,
        R: Rng + ?Sized,
    {
        config.validate()?;
        let mut history = Vec::with_capacity(config.epochs);
        for _ in 0..config.epochs {
            let loss = self.train_epoch(x, labels, config, rng)?;
            on_epoch(self, loss);
            history.push(loss);
        }
        Ok(history)
    }
}

/// `θ ← θ − η v` with `v ← μ v + g + λ θ` (or the Nesterov variant), entrywise in `F`.
fn sgd_update<F: Float, D: Dimension>(
    theta: &mut Array<F, D>,
    velocity: &mut Array<F, D>,
    grad: &Array<F, D>,
    config: &SgdConfig,
) {
    let lr = F::from_f64(config.learning_rate);
    let mu = F::from_f64(config.momentum);
    let wd = F::from_f64(config.weight_decay);
    let decay = config.weight_decay != 0.0;
    Zip::from(theta)
        .and(velocity)
        .and(grad)
        .for_each(|t, v, &g| {
            let g = if decay { g + wd * *t } else { g };
            *v = mu * *v + g;
            let d = if config.nesterov { g + mu * *v } else { *v };
            *t = *t - lr * d;
        });
}

fn to_params<F: Float>(weights: &[Array2<F>], biases: &[Array1<F>]) -> Params<F> {
    let mut out = Params::new();
    for (k, (w, b)) in weights.iter().zip(biases).enumerate() {
        out.insert(weight_name(k), w.clone().into_dyn());
        out.insert(bias_name(k), b.clone().into_dyn());
    }
    out
}

/// Train an MLP from `params` for `config.epochs` epochs of SGD with momentum, the data order
/// drawn from `ChaCha8Rng::seed_from_u64(seed)`. Returns the final [`TrainState`] (its
/// [`params`](TrainState::params), momentum and epoch count), which can be cloned and
/// continued to spawn children. Bit-identical results for the same inputs and seed.
///
/// # Errors
/// As [`TrainState::new`] and [`TrainState::train_epoch`].
pub fn train<F: Float, S: Data<Elem = F>>(
    params: &Params<F>,
    x: &ArrayBase<S, Ix2>,
    labels: &[usize],
    config: &SgdConfig,
    seed: u64,
) -> Result<TrainState<F>> {
    let mut state = TrainState::new(params)?;
    state.fit(
        x,
        labels,
        config,
        &mut ChaCha8Rng::seed_from_u64(seed),
        |_, _| {},
    )?;
    Ok(state)
}
