//! The local splits of one layer from its features alone: dense and convolutional layers
//! (`ΔZ^ℓ = propagated + K^ℓ`) and the activation (`ΔH^ℓ = S^ℓ ⊙ ΔZ^ℓ + E^ℓ`).

use std::ops::Range;

use ndarray::{
    s, Array, Array1, Array2, Array3, ArrayBase, ArrayView1, ArrayView2, ArrayView4, Axis, Data,
    Dimension, Zip,
};

use super::chain::secant;
use super::{block_sums, check_biases, scale_exponent, DenseLayer, LocalSplit, Sums};
use crate::error::{Error, Result};
use crate::float::Float;
use crate::matmul::mat_mul_into;
use crate::metrics::conv::{check_conv, sample_f64, ConvGeometry, SAMPLE_BLOCK};
use crate::metrics::scaled::pow2;
use crate::metrics::{check_alpha, check_features, check_same, par_map};

/// Rows per block of the dense split.
const ROW_BLOCK: usize = 256;

/// `f` over consecutive ranges of `block` of `0..n` (in parallel with `rayon`), the sums added
/// in range order.
fn reduce_blocks(n: usize, block: usize, f: impl Fn(Range<usize>) -> Sums + Sync + Send) -> Sums {
    let starts: Vec<usize> = (0..n).step_by(block).collect();
    let mut total = Sums::default();
    for s in par_map(&starts, |&r0| f(r0..(r0 + block).min(n))) {
        total.add(&s);
    }
    total
}

/// A bias in f64, zeros if absent.
fn bias_f64<F: Float>(b: Option<ArrayView1<'_, F>>, out: usize) -> Array1<f64> {
    b.map_or_else(|| Array1::zeros(out), |b| b.mapv(Float::as_f64))
}

/// The weights of a local split: `W_A`, `W_B`, `W_α = α W_A + (1 − α) W_B` and `W_A − W_B`, in
/// f64, as matrices of the layer map.
struct SplitWeights {
    a: Array2<f64>,
    b: Array2<f64>,
    alpha_mix: Array2<f64>,
    diff: Array2<f64>,
    alpha: f64,
}

impl SplitWeights {
    fn new(a: Array2<f64>, b: Array2<f64>, alpha: f64) -> Self {
        let alpha_mix = &a * alpha + &b * (1.0 - alpha);
        let diff = &a - &b;
        Self {
            a,
            b,
            alpha_mix,
            diff,
            alpha,
        }
    }

    /// The sums of one block for a layer map `lin(W, H)` linear in both arguments (a matrix
    /// product or a convolution), from the block's inputs `[H_A, H_B, H_α]`:
    /// `ΔZ = lin(W_α, H_α) − α lin(W_A, H_A) − (1 − α) lin(W_B, H_B)`, its parts
    /// `lin(W_α, H_α − H_lin)` and `−α(1 − α) lin(W_A − W_B, H_A − H_B)` (stacked along axis 0
    /// for [`block_sums`]), and the reference `Z_lin = α lin(W_A, H_A) + (1 − α) lin(W_B, H_B)
    /// + b_lin` (`b_lin` broadcast).
    fn block_sums<D: Dimension>(
        &self,
        lin: impl Fn(&Array2<f64>, &Array<f64, D>) -> Array2<f64>,
        [h_a, h_b, h_alpha]: [&Array<f64, D>; 3],
        b_lin: &Array2<f64>,
    ) -> Sums {
        let (alpha, beta) = (self.alpha, 1.0 - self.alpha);
        let (pa, pb) = (lin(&self.a, h_a), lin(&self.b, h_b));
        let delta = lin(&self.alpha_mix, h_alpha) - &pa * alpha - &pb * beta;
        let z_lin = &pa * alpha + &pb * beta + b_lin;
        let propagated = lin(&self.alpha_mix, &(h_alpha - &(h_a * alpha) - &(h_b * beta)));
        let own = lin(&self.diff, &(h_a - h_b)) * (-alpha * beta);
        let parts = ndarray::concatenate![Axis(0), propagated, own];
        block_sums(parts.view(), delta.view(), z_lin.view())
    }
}

/// The local split of one dense layer's pre-activation deviation from its features alone:
///
/// ```text
/// ΔZ^ℓ = H_α W_αᵀ − α H_A W_Aᵀ − (1 − α) H_B W_Bᵀ                     (direct; biases cancel)
///      = (H_α − H_lin) W_αᵀ   +   (−α(1 − α)) (H_A − H_B)(W_A − W_B)ᵀ
///        propagated ΔH^{ℓ−1} W_αᵀ     own commutativity source K^ℓ
/// ```
///
/// `h_a`, `h_b`, `h_alpha` are what the layer reads (`[samples, in]`) in A, B and θ(α) — the
/// previous layer's post-activations, or the input — and `a`, `b` its weights `[out, in]` and
/// optional biases (used only for the reference `‖Z_lin‖`, which is bias-free without them).
/// Computed in f64 in blocks of 256 rows (parallel, thread-count independent); costs five
/// `[N, in] × [in, out]` products.
///
/// # Errors
/// [`Error::ShapeMismatch`] for mismatched weights, biases or inputs (the inputs must have
/// `in` columns and equal shapes); [`Error::EmptyInput`], [`Error::NonFinite`] for empty or
/// non-finite arrays; [`Error::InvalidArgument`] for a non-finite α or a bias in one model
/// only.
///
/// # Examples
/// ```
/// use llfc::metrics::attribution::{local_split_dense, DenseLayer};
/// use ndarray::array;
/// let (w_a, w_b) = (array![[1.0, 2.0]], array![[0.0, 1.0]]);
/// let (h_a, h_b) = (array![[1.0, 1.0]], array![[0.0, 3.0]]);
/// let h_lin = (&h_a + &h_b) * 0.5; // the layer below is exactly LLFC: nothing propagates
/// fn layer(w: &ndarray::Array2<f64>) -> DenseLayer<'_, f64> {
///     DenseLayer { weight: w.view(), bias: None }
/// }
/// let s = local_split_dense(layer(&w_a), layer(&w_b), h_a.view(), h_b.view(), h_lin.view(), 0.5)?;
/// // K = −¼ (H_A − H_B)(W_A − W_B)ᵀ = −¼ · [1, −2]·[1, 1] = ¼
/// assert_eq!((s.propagated.norm, s.own.norm, s.own.share), (0.0, 0.25, Some(1.0)));
/// # Ok::<(), llfc::Error>(())
/// ```
pub fn local_split_dense<F: Float>(
    a: DenseLayer<'_, F>,
    b: DenseLayer<'_, F>,
    h_a: ArrayView2<'_, F>,
    h_b: ArrayView2<'_, F>,
    h_alpha: ArrayView2<'_, F>,
    alpha: f64,
) -> Result<LocalSplit> {
    check_alpha(alpha)?;
    check_features(&a.weight, "weight W_A")?;
    check_same(&a.weight, &b.weight, "weight W_B", "weight W_A")?;
    let (out, inp) = a.weight.dim();
    check_biases(a.bias, b.bias, out, "the layer")?;
    if h_a.ncols() != inp {
        return Err(Error::ShapeMismatch {
            what: "inputs H_A ([samples, in], in = the weights' columns)".into(),
            expected: vec![h_a.nrows(), inp],
            found: h_a.shape().to_vec(),
        });
    }
    check_features(&h_a, "inputs H_A")?;
    check_same(&h_a, &h_b, "inputs H_B", "inputs H_A")?;
    check_same(&h_a, &h_alpha, "inputs H_α", "inputs H_A")?;
    let (wa, wb) = (a.weight.mapv(Float::as_f64), b.weight.mapv(Float::as_f64));
    // Scale-safe: inputs and biases divided by 2^e (exact); ΔZ, Z_lin and both parts are
    // linear in them, so the shares and ratios are unchanged and the norms are scaled back.
    let (e, k, b_lin) = scaled_bias(
        h_a.iter().chain(h_b.iter()).chain(h_alpha.iter()),
        (a.bias, b.bias),
        out,
        alpha,
    );
    let weights = SplitWeights::new(wa, wb, alpha);
    let b_lin = b_lin.insert_axis(Axis(0));
    let product = |w: &Array2<f64>, h: &Array2<f64>| {
        let mut z = Array2::zeros((h.nrows(), out));
        mat_mul_into(h.view(), w.t(), 0.0, z.view_mut());
        z
    };
    let sums = reduce_blocks(h_a.nrows(), ROW_BLOCK, |rows| {
        let f = |h: &ArrayView2<'_, F>| h.slice(s![rows.clone(), ..]).mapv(|v| v.as_f64() * k);
        weights.block_sums(product, [&f(&h_a), &f(&h_b), &f(&h_alpha)], &b_lin)
    });
    Ok(Sums { exp: e, ..sums }.local_split(alpha))
}

/// The scale of a layer's inputs `features` and biases `(A's, B's)`: `(e, 2^−e, b_lin 2^−e)`
/// with `2^e` near their largest magnitude and `b_lin = α b_A + (1 − α) b_B` (`[out]`, zeros
/// without biases).
fn scaled_bias<'a, F: Float + 'a>(
    features: impl Iterator<Item = &'a F>,
    (a, b): (Option<ArrayView1<'a, F>>, Option<ArrayView1<'a, F>>),
    out: usize,
    alpha: f64,
) -> (i32, f64, Array1<f64>) {
    let e = scale_exponent(features.chain(a.into_iter().chain(b).flat_map(|v| v.into_iter())));
    let k = pow2(-e);
    let b_lin = (bias_f64(a, out) * alpha + bias_f64(b, out) * (1.0 - alpha)) * k;
    (e, k, b_lin)
}

/// One convolutional layer: weight `[out, in/groups, kh, kw]` and optional bias `[out]`.
#[derive(Clone, Copy, Debug)]
pub struct ConvLayer<'a, F> {
    /// The weight `W`.
    pub weight: ArrayView4<'a, F>,
    /// The bias `b` (`[out]`), if the layer has one (both models must agree).
    pub bias: Option<ArrayView1<'a, F>>,
}

/// [`local_split_dense`] for a convolutional layer (PyTorch's `nn.Conv2d` with `geometry`;
/// inputs `[samples, in, h, w]`): every product `H Wᵀ` becomes `conv(W, H)`, which is linear
/// in both arguments, so
///
/// ```text
/// ΔZ^ℓ = conv(W_α, H_α) − α conv(W_A, H_A) − (1 − α) conv(W_B, H_B)
///      = conv(W_α, H_α − H_lin)  +  (−α(1 − α)) conv(W_A − W_B, H_A − H_B).
/// ```
///
/// The bias (optional) only enters the reference `‖Z_lin‖`. Computed in f64 by im2col, sample
/// by sample in fixed blocks (parallel, thread-count independent); see
/// [`conv_commutativity`](crate::metrics::conv_commutativity) for the convolution's conventions.
///
/// # Errors
/// As [`local_split_dense`], and [`Error::InvalidArgument`] / [`Error::ShapeMismatch`] for a
/// geometry that does not fit the weights and inputs.
pub fn local_split_conv<F: Float>(
    a: ConvLayer<'_, F>,
    b: ConvLayer<'_, F>,
    h_a: ArrayView4<'_, F>,
    h_b: ArrayView4<'_, F>,
    h_alpha: ArrayView4<'_, F>,
    alpha: f64,
    geometry: &ConvGeometry,
) -> Result<LocalSplit> {
    check_alpha(alpha)?;
    let shape = check_conv(&a.weight, &b.weight, &h_a, &h_b, *geometry)?;
    check_same(&h_a, &h_alpha, "conv inputs H_α", "conv inputs H_A")?;
    let out = a.weight.shape()[0];
    check_biases(a.bias, b.bias, out, "the conv layer")?;
    let weights = SplitWeights::new(
        shape.weight_matrix(&a.weight),
        shape.weight_matrix(&b.weight),
        alpha,
    );
    // Scale-safe as in `local_split_dense`.
    let (e, k, b_lin) = scaled_bias(
        h_a.iter().chain(h_b.iter()).chain(h_alpha.iter()),
        (a.bias, b.bias),
        out,
        alpha,
    );
    let b_lin = b_lin.insert_axis(Axis(1));
    let conv =
        |w: &Array2<f64>, x: &Array3<f64>| shape.apply(&w.view(), &shape.unfold_all(&x.view()));
    let sums = reduce_blocks(h_a.shape()[0], SAMPLE_BLOCK, |samples| {
        let mut total = Sums::default();
        for i in samples {
            let h = |x: &ArrayView4<'_, F>| sample_f64(x, i) * k;
            total.add(&weights.block_sums(conv, [&h(&h_a), &h(&h_b), &h(&h_alpha)], &b_lin));
        }
        total
    });
    Ok(Sums { exp: e, ..sums }.local_split(alpha))
}

/// The local split of a ReLU's post-activation deviation from the pre-activations alone
/// (`z_a = Z_A`, `z_b = Z_B`, `z_alpha = Z_α`, equal shapes `[samples, …]`):
///
/// ```text
/// ΔH = σ(Z_α) − α σ(Z_A) − (1 − α) σ(Z_B)
///    = S ⊙ ΔZ  +  [σ(Z_lin) − α σ(Z_A) − (1 − α) σ(Z_B)]
///      propagated    own weak-additivity source E
/// ```
///
/// with `ΔZ = Z_α − Z_lin` and `S` the secant slope of ReLU between `Z_lin` and `Z_α` (see
/// the [module documentation](super)); the reference is `‖H_lin‖`. Elementwise in f64, `O(len)`,
/// no array allocated.
///
/// # Errors
/// [`Error::ShapeMismatch`], [`Error::EmptyInput`], [`Error::NonFinite`] for mismatched,
/// empty or non-finite arrays; [`Error::InvalidArgument`] for a non-finite α or 0-dimensional
/// arrays.
///
/// # Examples
/// ```
/// use llfc::metrics::attribution::local_split_activation;
/// use ndarray::array;
/// // Same signs in A and B and an exactly linear θ(α): no deviation at all.
/// let (z_a, z_b) = (array![[1.0, -2.0]], array![[3.0, -1.0]]);
/// let s = local_split_activation(&z_a, &z_b, &array![[2.0, -1.5]], 0.5)?;
/// assert_eq!((s.norm, s.own.norm, s.propagated.norm), (0.0, 0.0, 0.0));
/// # Ok::<(), llfc::Error>(())
/// ```
pub fn local_split_activation<F, S1, S2, S3, D>(
    z_a: &ArrayBase<S1, D>,
    z_b: &ArrayBase<S2, D>,
    z_alpha: &ArrayBase<S3, D>,
    alpha: f64,
) -> Result<LocalSplit>
where
    F: Float,
    S1: Data<Elem = F>,
    S2: Data<Elem = F>,
    S3: Data<Elem = F>,
    D: Dimension,
{
    check_alpha(alpha)?;
    if z_a.ndim() == 0 {
        return Err(Error::InvalidArgument {
            name: "features",
            reason: "pre-activations Z_A is a scalar; expected a [samples, …] array".into(),
        });
    }
    check_features(z_a, "pre-activations Z_A")?;
    check_same(z_a, z_b, "pre-activations Z_B", "pre-activations Z_A")?;
    check_same(z_a, z_alpha, "pre-activations Z_α", "pre-activations Z_A")?;
    let beta = 1.0 - alpha;
    let relu = |v: f64| v.max(0.0);
    // Scale-safe: ReLU and the secant slope are positively homogeneous, so dividing every
    // pre-activation by 2^e (exact) scales each term by 2^−e; the norms are scaled back.
    let e = scale_exponent(z_a.iter().chain(z_b.iter()).chain(z_alpha.iter()));
    let k = pow2(-e);
    let mut sums = Sums {
        parts: vec![(0.0, 0.0); 2],
        exp: e,
        ..Sums::default()
    };
    Zip::from(z_a).and(z_b).and(z_alpha).for_each(|&a, &b, &z| {
        let (a, b, z) = (a.as_f64() * k, b.as_f64() * k, z.as_f64() * k);
        let z_lin = alpha * a + beta * b;
        let h_lin = alpha * relu(a) + beta * relu(b);
        let delta = relu(z) - h_lin;
        let propagated = secant(z_lin, z) * (z - z_lin);
        let own = relu(z_lin) - h_lin;
        for (p, c) in sums.parts.iter_mut().zip([propagated, own]) {
            p.0 += c * c;
            p.1 += c * delta;
        }
        sums.delta += delta * delta;
        sums.reference += h_lin * h_lin;
        sums.closure += (propagated + own - delta) * (propagated + own - delta);
    });
    Ok(sums.local_split(alpha))
}
