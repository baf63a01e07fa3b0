//! Reference ReLU multilayer perceptron over [`Params`], with per-layer features, softmax
//! cross-entropy, exact gradients and seeded minibatch SGD.
//!
//! The network is PyTorch's `nn.Sequential` of `nn.Linear` layers named `layers.{ℓ}` with a
//! ReLU between consecutive layers and none after the last. Its parameters are
//! `layers.{ℓ}.weight` `[out, in]` and `layers.{ℓ}.bias` `[out]` for `ℓ = 0, …, L − 1`, in that
//! order (the `state_dict` order), which is exactly what [`PermutationSpec::mlp`] permutes.
//! For an input batch `X` (`[samples, in]`, rows are samples):
//!
//! ```text
//! h₋₁ = X
//! z_ℓ = h_{ℓ−1} W_ℓᵀ + b_ℓ                       (pre-activation, [samples, units])
//! h_ℓ = relu(z_ℓ) = max(z_ℓ, 0)   for ℓ < L − 1   (post-activation)
//! h_{L−1} = z_{L−1}                               (the logits: no ReLU after the last layer)
//! ```
//!
//! It is the model the examples and tests train to get real modes for linear mode connectivity
//! and LLFC (Zhou et al. 2023, *Going Beyond Linear Mode Connectivity: The Layerwise Linear
//! Feature Connectivity*; Frankle et al. 2020 for spawning; Ainsworth et al. 2023 for the
//! permutation symmetry).
//!
//! **Complexity.** With `P = Σ_ℓ out_ℓ · in_ℓ` weights, a forward pass on `N` samples costs
//! `2 N P` flops and a gradient about `6 N P` (ndarray's `dot`, i.e. `matrixmultiply`, in the
//! precision `F`); memory is `O(N Σ_ℓ out_ℓ)` for the features kept.
//!
//! # Examples
//! Train a small network, then *spawn* two children from it that differ only in data order:
//! ```
//! use llfc::mlp::{self, SgdConfig, TrainState};
//! use ndarray::Array2;
//! use rand::SeedableRng;
//! use rand_chacha::ChaCha8Rng;
//!
//! // Two classes: the sign of x₀·x₁ (XOR-like), on a grid.
//! let x = Array2::from_shape_fn((64, 2), |(i, j)| {
//!     let v = if j == 0 { i % 8 } else { i / 8 };
//!     v as f32 / 3.5 - 1.0
//! });
//! let labels: Vec<usize> = x.rows().into_iter().map(|r| usize::from(r[0] * r[1] > 0.0)).collect();
//! let params = mlp::init::<f32, _>(&[2, 16, 2], &mut ChaCha8Rng::seed_from_u64(0))?;
//! let config = SgdConfig { epochs: 5, batch_size: 16, ..SgdConfig::default() };
//! let parent = mlp::train(&params, &x, &labels, &config, 1)?; // 5 epochs, data-order seed 1
//! let (mut a, mut b) = (parent.clone(), parent); // same params and momentum
//! a.fit(&x, &labels, &config, &mut ChaCha8Rng::seed_from_u64(2), |_, _| {})?;
//! b.fit(&x, &labels, &config, &mut ChaCha8Rng::seed_from_u64(3), |_, _| {})?;
//! assert_eq!(a.epoch(), 10);
//! let mid = a.params().interpolate(&b.params(), 0.5)?;
//! let eval = mlp::evaluate(&mid, &x, &labels)?;
//! assert!(eval.loss.is_finite() && (0.0..=1.0).contains(&eval.accuracy));
//! # Ok::<(), llfc::Error>(())
//! ```
//!
//! [`PermutationSpec::mlp`]: crate::PermutationSpec::mlp

mod loss;
mod repair;
mod train;

pub use loss::{accuracy, cross_entropy, evaluate, Eval};
pub use repair::{pre_activation_stats, repair, repair_layers, repair_report};
pub use train::{train, SgdConfig, TrainState};

use ndarray::{Array1, Array2, ArrayBase, ArrayView1, ArrayView2, Axis, Data, Ix1, Ix2, Zip};
use rand::Rng;

use crate::error::{Error, Result};
use crate::float::{all_finite, Float};
use crate::params::Params;

/// A borrowed layer: weight `[out, in]` and bias `[out]`.
type LayerRef<'a, F> = (ArrayView2<'a, F>, ArrayView1<'a, F>);

/// An owned layer gradient: `(∇W [out, in], ∇b [out])`.
type LayerGrad<F> = (Array2<F>, Array1<F>);

/// Name of layer `ℓ`'s weight, `layers.{ℓ}.weight` (PyTorch `nn.Sequential` naming).
#[must_use]
pub fn weight_name(layer: usize) -> String {
    format!("layers.{layer}.weight")
}

/// Name of layer `ℓ`'s bias, `layers.{ℓ}.bias`.
#[must_use]
pub fn bias_name(layer: usize) -> String {
    format!("layers.{layer}.bias")
}

/// A new MLP with layer widths `widths = [in, h₁, …, out]` (so `widths.len() − 1` linear
/// layers), initialised like PyTorch's `nn.Linear`: every weight and bias entry of layer `ℓ` is
/// drawn from `U(−1/√in_ℓ, 1/√in_ℓ)` (Kaiming-uniform with `a = √5`).
///
/// Values are drawn in f64 (weights row-major, then the bias, layer by layer) and rounded to
/// `F`, so `init::<f32>` equals `init::<f64>` cast to f32 for the same RNG state.
///
/// # Errors
/// [`Error::InvalidArgument`] if fewer than two widths are given or a width is zero.
///
/// # Examples
/// ```
/// use rand::SeedableRng;
/// let params = llfc::mlp::init::<f64, _>(&[4, 8, 3], &mut rand_chacha::ChaCha8Rng::seed_from_u64(0))?;
/// let names: Vec<&str> = params.names().collect();
/// assert_eq!(names, ["layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias"]);
/// assert_eq!(params["layers.1.weight"].shape(), &[3, 8]);
/// assert_eq!(llfc::mlp::widths(&params)?, [4, 8, 3]);
/// # Ok::<(), llfc::Error>(())
/// ```
pub fn init<F: Float, R: Rng + ?Sized>(widths: &[usize], rng: &mut R) -> Result<Params<F>> {
    if widths.len() < 2 {
        return Err(Error::InvalidArgument {
            name: "widths",
            reason: format!("need at least an input and an output width, got {widths:?}"),
        });
    }
    if widths.contains(&0) {
        return Err(Error::InvalidArgument {
            name: "widths",
            reason: format!("widths must be positive, got {widths:?}"),
        });
    }
    let mut params = Params::new();
    for (layer, pair) in widths.windows(2).enumerate() {
        let (fan_in, fan_out) = (pair[0], pair[1]);
        #[allow(clippy::cast_precision_loss)]
        let bound = 1.0 / (fan_in as f64).sqrt();
        let mut draw = || F::from_f64((2.0 * rng.random::<f64>() - 1.0) * bound);
        let w = Array2::from_shape_simple_fn((fan_out, fan_in), &mut draw);
        let b = Array1::from_shape_simple_fn(fan_out, &mut draw);
        params.insert(weight_name(layer), w.into_dyn());
        params.insert(bias_name(layer), b.into_dyn());
    }
    Ok(params)
}

/// Parse `layers.{ℓ}.weight` / `layers.{ℓ}.bias` into `(ℓ, is_weight)`.
fn parse_name(name: &str) -> Option<(usize, bool)> {
    let (index, kind) = name.strip_prefix("layers.")?.split_once('.')?;
    let canonical = !index.is_empty()
        && index.bytes().all(|c| c.is_ascii_digit())
        && (index == "0" || !index.starts_with('0'));
    let layer = if canonical {
        index.parse().ok()?
    } else {
        None?
    };
    match kind {
        "weight" => Some((layer, true)),
        "bias" => Some((layer, false)),
        _ => None,
    }
}

/// Validate the architecture and borrow every layer as `(W [out, in], b [out])`.
fn layer_views<F: Float>(params: &Params<F>) -> Result<Vec<LayerRef<'_, F>>> {
    if params.is_empty() {
        return Err(Error::EmptyInput {
            what: "MLP parameters".into(),
        });
    }
    let mut num_layers = 0;
    for name in params.names() {
        let (layer, _) = parse_name(name).ok_or_else(|| Error::UnexpectedParam {
            param: name.to_string(),
            context: "an MLP (only `layers.{i}.weight` and `layers.{i}.bias` are allowed)".into(),
        })?;
        num_layers = num_layers.max(layer + 1);
    }
    let mut layers: Vec<LayerRef<'_, F>> = Vec::new();
    for layer in 0..num_layers {
        let (wn, bn) = (weight_name(layer), bias_name(layer));
        let context = "the MLP parameters (layers are numbered 0, 1, …, L−1 without gaps)";
        let missing = |param: &str| Error::MissingParam {
            param: param.to_string(),
            context: context.into(),
        };
        let w = params.get(&wn).ok_or_else(|| missing(&wn))?;
        let b = params.get(&bn).ok_or_else(|| missing(&bn))?;
        let rank = |param: &str, want: usize, got: usize| Error::RankMismatch {
            param: param.to_string(),
            spec_rank: want,
            rank: got,
        };
        let w = w
            .view()
            .into_dimensionality::<Ix2>()
            .map_err(|_| rank(&wn, 2, w.ndim()))?;
        let b = b
            .view()
            .into_dimensionality::<Ix1>()
            .map_err(|_| rank(&bn, 1, b.ndim()))?;
        if let Some((prev, _)) = layers.last()
            && w.ncols() != prev.nrows()
        {
            return Err(Error::ShapeMismatch {
                what: format!(
                    "parameter `{wn}` (its input width must equal layer {}'s output width)",
                    layer - 1
                ),
                expected: vec![w.nrows(), prev.nrows()],
                found: w.shape().to_vec(),
            });
        }
        if b.len() != w.nrows() {
            return Err(Error::ShapeMismatch {
                what: format!("parameter `{bn}` (one bias per output unit of `{wn}`)"),
                expected: vec![w.nrows()],
                found: vec![b.len()],
            });
        }
        if w.is_empty() {
            return Err(Error::EmptyInput {
                what: format!("parameter `{wn}` (a layer of zero width)"),
            });
        }
        for (name, finite) in [
            (&wn, w.iter().all(|v| v.is_finite())),
            (&bn, b.iter().all(|v| v.is_finite())),
        ] {
            if !finite {
                return Err(Error::NonFinite {
                    what: format!("parameter `{name}`"),
                });
            }
        }
        layers.push((w, b));
    }
    Ok(layers)
}

/// The layer widths `[in, h₁, …, out]` of an MLP, inferred from its parameters and validated.
///
/// # Errors
/// - [`Error::EmptyInput`]: no parameters, or a layer of zero width;
/// - [`Error::UnexpectedParam`]: a name other than `layers.{ℓ}.weight` / `layers.{ℓ}.bias`;
/// - [`Error::MissingParam`]: a gap in the numbering (e.g. `layers.1.*` absent while
///   `layers.2.*` exists) or a weight without its bias;
/// - [`Error::RankMismatch`]: a weight that is not a matrix or a bias that is not a vector;
/// - [`Error::ShapeMismatch`]: consecutive layers do not chain (`in_{ℓ} ≠ out_{ℓ−1}`) or a bias
///   length differs from its weight's rows;
/// - [`Error::NonFinite`]: a NaN or infinite weight or bias (the error names the parameter).
pub fn widths<F: Float>(params: &Params<F>) -> Result<Vec<usize>> {
    let layers = layer_views(params)?;
    Ok(std::iter::once(layers[0].0.ncols())
        .chain(layers.iter().map(|(w, _)| w.nrows()))
        .collect())
}

/// The number of linear layers `L` of an MLP (so `L − 1` hidden layers), validated as in
/// [`widths`].
///
/// # Errors
/// As [`widths`].
pub fn num_layers<F: Float>(params: &Params<F>) -> Result<usize> {
    Ok(layer_views(params)?.len())
}

/// Check an input batch: `in_width` columns, finite entries.
fn check_input<F: Float, S: Data<Elem = F>>(x: &ArrayBase<S, Ix2>, in_width: usize) -> Result<()> {
    if x.ncols() != in_width {
        return Err(Error::ShapeMismatch {
            what: "input x (its columns must equal the first layer's input width)".into(),
            expected: vec![x.nrows(), in_width],
            found: x.shape().to_vec(),
        });
    }
    if !all_finite(x) {
        return Err(Error::NonFinite {
            what: "input x".into(),
        });
    }
    Ok(())
}

/// `z = h Wᵀ + b` (bias broadcast over rows).
fn affine<F: Float, S: Data<Elem = F>>(
    h: &ArrayBase<S, Ix2>,
    (w, b): &LayerRef<'_, F>,
) -> Array2<F> {
    let mut z = h.dot(&w.t());
    z.zip_mut_with(b, |zi, &bi| *zi = *zi + bi);
    z
}

/// `relu(z) = max(z, 0)`, in place (`−0` and negatives become `+0`).
fn relu_inplace<F: Float>(z: &mut Array2<F>) {
    z.mapv_inplace(|v| if v > F::zero() { v } else { F::zero() });
}

/// Logits `z_{L−1}` of the MLP on the batch `x` (`[samples, in]` → `[samples, out]`); see the
/// [module documentation](self) for the formula. Costs `2 N P` flops.
///
/// # Errors
/// Everything [`widths`] reports; [`Error::ShapeMismatch`] if `x` does not have `in` columns;
/// [`Error::NonFinite`] if `x` has a NaN or infinite entry.
pub fn forward<F: Float, S: Data<Elem = F>>(
    params: &Params<F>,
    x: &ArrayBase<S, Ix2>,
) -> Result<Array2<F>> {
    let layers = layer_views(params)?;
    check_input(x, layers[0].0.ncols())?;
    let mut h = affine(x, &layers[0]);
    for layer in &layers[1..] {
        relu_inplace(&mut h);
        h = affine(&h, layer);
    }
    Ok(h)
}

/// Every layer's features on a batch, as returned by [`forward_features`].
#[derive(Clone, Debug, PartialEq)]
pub struct Features<F> {
    /// `pre[ℓ] = z_ℓ = h_{ℓ−1} W_ℓᵀ + b_ℓ`, `[samples, out_ℓ]`, for `ℓ = 0, …, L − 1`.
    pub pre: Vec<Array2<F>>,
    /// `post[ℓ] = h_ℓ = relu(z_ℓ)` for hidden layers `ℓ < L − 1`; `post[L − 1] = z_{L−1}`, the
    /// logits (equal to `pre[L − 1]`: no ReLU after the last layer).
    pub post: Vec<Array2<F>>,
}

/// Which of a layer's features: before or after the activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FeatureKind {
    /// The pre-activation `z_ℓ`.
    Pre,
    /// The post-activation `h_ℓ` (for the last layer, the logits).
    Post,
}

impl<F: Float> Features<F> {
    /// Number of layers `L`.
    #[must_use]
    pub fn num_layers(&self) -> usize {
        self.pre.len()
    }

    /// The logits `z_{L−1}` (`[samples, out]`).
    ///
    /// # Panics
    /// If the features are empty (never the case for values from [`forward_features`]).
    #[must_use]
    pub fn logits(&self) -> &Array2<F> {
        self.pre.last().expect("an MLP has at least one layer")
    }

    /// Layer `layer`'s features of the given kind, or `None` if `layer ≥ L`.
    #[must_use]
    pub fn get(&self, layer: usize, kind: FeatureKind) -> Option<&Array2<F>> {
        match kind {
            FeatureKind::Pre => self.pre.get(layer),
            FeatureKind::Post => self.post.get(layer),
        }
    }
}

/// Every layer's pre-activation `z_ℓ` and post-activation `h_ℓ` on the batch `x`, each
/// `[samples, units]` (see [`Features`]; the last post-activation is the logits, not
/// ReLU'd). These are the features `f_ℓ(θ; x)` of the LLFC metrics. Costs `2 N P` flops and
/// `2 N Σ_ℓ out_ℓ` stored values.
///
/// # Errors
/// As [`forward`].
pub fn forward_features<F: Float, S: Data<Elem = F>>(
    params: &Params<F>,
    x: &ArrayBase<S, Ix2>,
) -> Result<Features<F>> {
    let layers = layer_views(params)?;
    check_input(x, layers[0].0.ncols())?;
    let (mut pre, mut post) = (Vec::with_capacity(layers.len()), Vec::new());
    let mut z = affine(x, &layers[0]);
    for layer in &layers[1..] {
        let mut h = z.clone();
        relu_inplace(&mut h);
        let next = affine(&h, layer);
        pre.push(std::mem::replace(&mut z, next));
        post.push(h);
    }
    post.push(z.clone());
    pre.push(z);
    Ok(Features { pre, post })
}

/// Mean cross-entropy and its gradient for validated layers (shared with training).
///
/// Forward keeps only the hidden post-activations `h_ℓ`; backward is
/// `δ_{L−1} = (softmax(z_{L−1}) − onehot(y)) / N`, `∇W_ℓ = δ_ℓᵀ h_{ℓ−1}`, `∇b_ℓ = Σ_rows δ_ℓ`,
/// `δ_{ℓ−1} = (δ_ℓ W_ℓ) ⊙ 1[h_{ℓ−1} > 0]` (ReLU′(0) = 0, as in PyTorch).
fn loss_and_grads<F: Float, S: Data<Elem = F>>(
    layers: &[LayerRef<'_, F>],
    x: &ArrayBase<S, Ix2>,
    labels: &[usize],
) -> Result<(f64, Vec<LayerGrad<F>>)> {
    let mut hidden: Vec<Array2<F>> = Vec::with_capacity(layers.len() - 1);
    let mut logits = affine(x, &layers[0]);
    for layer in &layers[1..] {
        relu_inplace(&mut logits);
        hidden.push(logits);
        logits = affine(hidden.last().expect("just pushed"), layer);
    }
    let (loss, mut delta) = loss::cross_entropy_grad(&logits, labels)?;
    let mut grads = Vec::with_capacity(layers.len());
    for (k, (w, _)) in layers.iter().enumerate().rev() {
        let input = if k == 0 {
            x.view()
        } else {
            hidden[k - 1].view()
        };
        grads.push((delta.t().dot(&input), delta.sum_axis(Axis(0))));
        if k > 0 {
            let mut back = delta.dot(w);
            Zip::from(&mut back).and(&input).for_each(|d, &h| {
                if h <= F::zero() {
                    *d = F::zero();
                }
            });
            delta = back;
        }
    }
    grads.reverse();
    Ok((loss, grads))
}

/// The mean softmax cross-entropy `ℓ(θ) = (1/N) Σ_i [logsumexp(z_i) − z_{i, y_i}]` of the MLP on
/// `(x, labels)` and its gradient `∇_θ ℓ` by backpropagation, as parameters with the same names
/// and shapes as `params`. The loss is accumulated in f64; products run in `F`. ReLU′(0) is
/// taken as 0, as in PyTorch. Costs about `6 N P` flops.
///
/// # Errors
/// As [`forward`], plus what [`cross_entropy`] reports for the labels.
pub fn gradients<F: Float, S: Data<Elem = F>>(
    params: &Params<F>,
    x: &ArrayBase<S, Ix2>,
    labels: &[usize],
) -> Result<(f64, Params<F>)> {
    let layers = layer_views(params)?;
    check_input(x, layers[0].0.ncols())?;
    let (loss, grads) = loss_and_grads(&layers, x, labels)?;
    let mut out = Params::new();
    for (layer, (gw, gb)) in grads.into_iter().enumerate() {
        out.insert(weight_name(layer), gw.into_dyn());
        out.insert(bias_name(layer), gb.into_dyn());
    }
    Ok((loss, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn parse_name_accepts_only_canonical_names() {
        assert_eq!(parse_name("layers.0.weight"), Some((0, true)));
        assert_eq!(parse_name("layers.12.bias"), Some((12, false)));
        for bad in [
            "layers.01.weight",
            "layers..weight",
            "layers.1.running_mean",
            "layers.-1.bias",
            "fc.weight",
            "layers.1",
        ] {
            assert_eq!(parse_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn features_agree_with_forward_and_gradients() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let params = init::<f64, _>(&[3, 6, 5, 4], &mut rng).unwrap();
        let x = Array2::from_shape_fn((7, 3), |(i, j)| (i * 3 + j) as f64 / 5.0 - 2.0);
        let feats = forward_features(&params, &x).unwrap();
        assert_eq!(feats.num_layers(), 3);
        assert_eq!(feats.logits(), &forward(&params, &x).unwrap());
        assert_eq!(feats.get(2, FeatureKind::Post), Some(feats.logits()));
        assert!(feats.get(3, FeatureKind::Pre).is_none());
        for l in 0..2 {
            assert_eq!(feats.post[l], feats.pre[l].mapv(|v| v.max(0.0)));
            assert_eq!(feats.pre[l].dim(), (7, [6, 5][l]));
        }
        // f32 gradients agree with f64 ones to f32 accuracy.
        let labels = [0, 1, 2, 3, 0, 1, 2];
        let (l64, g64) = gradients(&params, &x, &labels).unwrap();
        let (l32, g32) = gradients(&params.cast::<f32>(), &x.mapv(|v| v as f32), &labels).unwrap();
        assert!((l64 - l32).abs() < 1e-5);
        assert!(g64.distance(&g32.cast()).unwrap() < 1e-5);
    }
}
