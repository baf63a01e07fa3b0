//! The attribution of a dense chain: forward passes of A, B and θ(α) and the transport of
//! every source, block of samples by block of samples.

use ndarray::{s, Array1, Array2, ArrayBase, ArrayView2, Data, Ix1, Ix2, Zip};

use super::{
    block_sums, check_biases, scale_exponent, Activation, Attribution, AttributionOptions,
    DenseLayer, LayerAttribution, Source, Sums,
};
use crate::error::{Error, Result};
use crate::float::Float;
use crate::matmul::mat_mul_into;
use crate::metrics::scaled::pow2;
use crate::metrics::{check_alpha, check_features, check_same, par_map};
use crate::mlp;
use crate::params::Params;

/// A chain's weights and biases in f64 (a missing bias is zero).
struct Net {
    w: Vec<Array2<f64>>,
    b: Vec<Array1<f64>>,
}

impl Net {
    /// The layers in f64, biases multiplied by `k` (a power of two: exact).
    fn new<F: Float>(layers: &[DenseLayer<'_, F>], k: f64) -> Self {
        Self {
            w: layers
                .iter()
                .map(|l| l.weight.mapv(Float::as_f64))
                .collect(),
            b: layers
                .iter()
                .map(|l| {
                    l.bias.map_or_else(
                        || Array1::zeros(l.weight.nrows()),
                        |b| b.mapv(|v| v.as_f64() * k),
                    )
                })
                .collect(),
        }
    }

    /// `α self + (1 − α) other`, formed in f64.
    fn interpolate(&self, other: &Self, alpha: f64) -> Self {
        let beta = 1.0 - alpha;
        Self {
            w: self
                .w
                .iter()
                .zip(&other.w)
                .map(|(a, b)| a * alpha + b * beta)
                .collect(),
            b: self
                .b
                .iter()
                .zip(&other.b)
                .map(|(a, b)| a * alpha + b * beta)
                .collect(),
        }
    }
}

/// `h Wᵀ + b`.
fn affine(h: ArrayView2<'_, f64>, w: &Array2<f64>, b: &Array1<f64>) -> Array2<f64> {
    let mut z = Array2::zeros((h.nrows(), w.nrows()));
    mat_mul_into(h, w.t(), 0.0, z.view_mut());
    z += b;
    z
}

fn relu(v: f64) -> f64 {
    v.max(0.0)
}

/// The secant slope of ReLU between `z_lin` and `z_alpha` (its derivative where they are
/// equal: 1 if positive, 0 if ≤ 0).
#[allow(clippy::float_cmp)]
pub(crate) fn secant(z_lin: f64, z_alpha: f64) -> f64 {
    if z_alpha == z_lin {
        if z_lin > 0.0 {
            1.0
        } else {
            0.0
        }
    } else {
        (relu(z_alpha) - relu(z_lin)) / (z_alpha - z_lin)
    }
}

/// Pre-activations of every layer (and the post-activations of ReLU layers) of one model on
/// one block.
fn forward(net: &Net, x: ArrayView2<'_, f64>, act: &[Activation]) -> Vec<Array2<f64>> {
    let mut z: Vec<Array2<f64>> = Vec::with_capacity(net.w.len());
    for l in 0..net.w.len() {
        let h = if l == 0 {
            x.to_owned()
        } else {
            post(&z[l - 1], act[l - 1])
        };
        z.push(affine(h.view(), &net.w[l], &net.b[l]));
    }
    z
}

fn post(z: &Array2<f64>, act: Activation) -> Array2<f64> {
    match act {
        Activation::Relu => z.mapv(relu),
        Activation::Identity => z.clone(),
    }
}

/// Everything α-independent that a block needs.
struct Chain<'a> {
    a: &'a Net,
    b: &'a Net,
    dw: &'a [Array2<f64>],
    act: &'a [Activation],
}

/// `(pre, post)` sums of every layer for one block of samples `x` and one α.
fn block(
    chain: &Chain<'_>,
    x: ArrayView2<'_, f64>,
    (za, zb): (&[Array2<f64>], &[Array2<f64>]),
    theta: &Net,
    alpha: f64,
) -> Vec<(Sums, Sums)> {
    let (beta, n) = (1.0 - alpha, x.nrows());
    let ab = alpha * beta;
    let mut out = Vec::with_capacity(za.len());
    let mut h_alpha = x.to_owned();
    // Contributions of the sources so far to ΔH^{ℓ−1}, stacked in blocks of n rows.
    let mut stack = Array2::<f64>::zeros((0, x.ncols()));
    for l in 0..za.len() {
        let relu_layer = chain.act[l] == Activation::Relu;
        let (h_a, h_b) = if l == 0 {
            (x.to_owned(), x.to_owned())
        } else {
            (
                post(&za[l - 1], chain.act[l - 1]),
                post(&zb[l - 1], chain.act[l - 1]),
            )
        };
        let z_alpha = affine(h_alpha.view(), &theta.w[l], &theta.b[l]);
        let k = stack.nrows() / n.max(1);
        let width = theta.w[l].nrows();
        let mut next = Array2::zeros(((k + 1 + usize::from(relu_layer)) * n, width));
        // Transport: c ← c W_αᵀ, every source in one product.
        mat_mul_into(
            stack.view(),
            theta.w[l].t(),
            0.0,
            next.slice_mut(s![..k * n, ..]),
        );
        // The commutativity source K^ℓ = −αβ (H_A − H_B)(W_A − W_B)ᵀ.
        let mut own = next.slice_mut(s![k * n..(k + 1) * n, ..]);
        mat_mul_into((&h_a - &h_b).view(), chain.dw[l].t(), 0.0, own.view_mut());
        own.mapv_inplace(|v| -ab * v);
        let z_lin = &za[l] * alpha + &zb[l] * beta;
        let dz = &z_alpha - &z_lin;
        let pre = block_sums(next.slice(s![..(k + 1) * n, ..]), dz.view(), z_lin.view());
        let post_sums = if relu_layer {
            let slope = Zip::from(&z_lin)
                .and(&z_alpha)
                .map_collect(|&l, &a| secant(l, a));
            for i in 0..=k {
                let mut c = next.slice_mut(s![i * n..(i + 1) * n, ..]);
                c *= &slope;
            }
            let h_lin = za[l].mapv(relu) * alpha + zb[l].mapv(relu) * beta;
            let mut e = next.slice_mut(s![(k + 1) * n.., ..]);
            Zip::from(&mut e)
                .and(&z_lin)
                .and(&h_lin)
                .for_each(|e, &zl, &hl| *e = relu(zl) - hl);
            h_alpha = z_alpha.mapv(relu);
            let dh = &h_alpha - &h_lin;
            block_sums(next.view(), dh.view(), h_lin.view())
        } else {
            h_alpha = z_alpha;
            pre.clone()
        };
        out.push((pre, post_sums));
        stack = next;
    }
    out
}

/// Check the chains, the activations, the input and the α values.
fn check_chain<F: Float, S: Data<Elem = F>>(
    a: &[DenseLayer<'_, F>],
    b: &[DenseLayer<'_, F>],
    activations: &[Activation],
    x: &ArrayBase<S, Ix2>,
    alphas: &[f64],
    options: &AttributionOptions,
) -> Result<()> {
    if a.is_empty() {
        return Err(Error::EmptyInput {
            what: "dense chain of A (no layers)".into(),
        });
    }
    for (what, len) in [("layers of B", b.len()), ("activations", activations.len())] {
        if len != a.len() {
            return Err(Error::ShapeMismatch {
                what: format!("number of {what} (one per layer of A)"),
                expected: vec![a.len()],
                found: vec![len],
            });
        }
    }
    for (l, (la, lb)) in a.iter().zip(b).enumerate() {
        let name = |m: &str, p: &str| format!("{p} of layer {l} of {m}");
        check_features(&la.weight, &name("A", "weight"))?;
        check_same(
            &la.weight,
            &lb.weight,
            &name("B", "weight"),
            &name("A", "weight"),
        )?;
        let input = if l == 0 {
            x.ncols()
        } else {
            a[l - 1].weight.nrows()
        };
        if la.weight.ncols() != input {
            return Err(Error::ShapeMismatch {
                what: format!(
                    "weight of layer {l} ([out, in], in = {})",
                    if l == 0 {
                        "the input's columns"
                    } else {
                        "the previous layer's out"
                    }
                ),
                expected: vec![la.weight.nrows(), input],
                found: la.weight.shape().to_vec(),
            });
        }
        check_biases(la.bias, lb.bias, la.weight.nrows(), &format!("layer {l}"))?;
    }
    check_features(x, "input x")?;
    if alphas.is_empty() {
        return Err(Error::EmptyInput {
            what: "list of interpolation coefficients alphas".into(),
        });
    }
    for &alpha in alphas {
        check_alpha(alpha)?;
    }
    if options.chunk_size == 0 {
        return Err(Error::InvalidArgument {
            name: "chunk_size",
            reason: "must be at least 1".into(),
        });
    }
    Ok(())
}

/// The LLFC error attribution of a chain of dense layers (see the [module
/// documentation](super) for the identity): for every α and layer ℓ, the deviations `ΔZ^ℓ`,
/// `ΔH^ℓ` relative to the linear targets, and every source's transported contribution to them
/// — its norm, its inner product with the deviation and its share `⟨c, Δ⟩ / ‖Δ‖²` (shares sum
/// to 1).
///
/// `a` and `b` are the two models' layers (`[out, in]` weights, optional biases, equal shapes,
/// chaining `in_{ℓ+1} = out_ℓ`), `activations[ℓ]` the activation after layer ℓ (shared), `x`
/// the input `[samples, in]`, `alphas` any finite values (`θ(α) = α θ_A + (1 − α) θ_B`; α = 1
/// is A). The interpolated network is formed and run here, in f64. Deterministic and
/// independent of the thread count; memory and cost as in the module documentation.
///
/// # Errors
/// [`Error::EmptyInput`] for no layers, no samples, no α or an empty weight;
/// [`Error::ShapeMismatch`] if B, the activations or a bias do not match A's layers, a weight
/// does not chain, or `x` does not have the first layer's `in` columns;
/// [`Error::InvalidArgument`] for a non-finite α, a bias in one model only or `chunk_size = 0`;
/// [`Error::NonFinite`] for a NaN or ±∞ weight, bias or input.
///
/// # Examples
/// ```
/// use llfc::metrics::attribution::{attribution_dense, Activation, AttributionOptions, DenseLayer, Source};
/// use ndarray::array;
/// let (w_a0, w_b0) = (array![[1.0, -1.0], [0.5, 1.0]], array![[-1.0, 0.5], [1.0, 1.0]]);
/// let (w_a1, w_b1) = (array![[1.0, 2.0]], array![[0.5, -1.0]]);
/// fn layer(w: &ndarray::Array2<f64>) -> DenseLayer<'_, f64> {
///     DenseLayer { weight: w.view(), bias: None }
/// }
/// let x = array![[1.0, 2.0], [-1.0, 0.5], [0.3, -2.0]];
/// let att = attribution_dense(
///     &[layer(&w_a0), layer(&w_a1)],
///     &[layer(&w_b0), layer(&w_b1)],
///     &[Activation::Relu, Activation::Identity],
///     &x,
///     &[0.5],
///     &AttributionOptions::default(),
/// )?;
/// let logits = &att.layers[0][1].pre;
/// // Two sources reach the logits (K^0 = 0 as well): shares add up to 1.
/// let e0 = logits.contribution(Source::WeakAdditivity { layer: 0 }).unwrap().share.unwrap();
/// let k1 = logits.contribution(Source::Commutativity { layer: 1 }).unwrap().share.unwrap();
/// assert!((e0 + k1 - 1.0).abs() < 1e-12);
/// assert!(logits.closure.unwrap() < 1e-14);
/// # Ok::<(), llfc::Error>(())
/// ```
pub fn attribution_dense<F: Float, S: Data<Elem = F>>(
    a: &[DenseLayer<'_, F>],
    b: &[DenseLayer<'_, F>],
    activations: &[Activation],
    x: &ArrayBase<S, Ix2>,
    alphas: &[f64],
    options: &AttributionOptions,
) -> Result<Attribution> {
    check_chain(a, b, activations, x, alphas, options)?;
    // Scale-safe: every Z^ℓ, H^ℓ is positively homogeneous of degree 1 in the input and the
    // biases together (ReLU(c z) = c ReLU(z) for c > 0), so dividing both by 2^e (exact) divides
    // every deviation, target and contribution by 2^e: the shares and ratios are unchanged and
    // the norms are scaled back (`Sums::exp`). Without it inputs of 1e160 overflow the squares.
    let e = scale_exponent(
        x.iter()
            .chain(a.iter().flat_map(|l| l.bias.into_iter().flatten()))
            .chain(b.iter().flat_map(|l| l.bias.into_iter().flatten())),
    );
    let k = pow2(-e);
    let (net_a, net_b) = (Net::new(a, k), Net::new(b, k));
    let dw: Vec<Array2<f64>> = net_a.w.iter().zip(&net_b.w).map(|(a, b)| a - b).collect();
    let thetas: Vec<Net> = alphas
        .iter()
        .map(|&al| net_a.interpolate(&net_b, al))
        .collect();
    let chain = Chain {
        a: &net_a,
        b: &net_b,
        dw: &dw,
        act: activations,
    };
    let mut sources = Vec::new();
    // Sources reaching the pre / post deviation of each layer (a prefix of `sources`).
    let mut reach = Vec::with_capacity(a.len());
    for (l, act) in activations.iter().enumerate() {
        sources.push(Source::Commutativity { layer: l });
        let pre = sources.len();
        if *act == Activation::Relu {
            sources.push(Source::WeakAdditivity { layer: l });
        }
        reach.push((pre, sources.len()));
    }
    let (n, x) = (x.nrows(), x.view());
    let starts: Vec<usize> = (0..n).step_by(options.chunk_size).collect();
    let per_block = par_map(&starts, |&r0| {
        let rows = x.slice(s![r0..(r0 + options.chunk_size).min(n), ..]);
        let xb = rows.mapv(|v| v.as_f64() * k);
        let (za, zb) = (
            forward(chain.a, xb.view(), activations),
            forward(chain.b, xb.view(), activations),
        );
        thetas
            .iter()
            .zip(alphas)
            .map(|(theta, &alpha)| block(&chain, xb.view(), (&za, &zb), theta, alpha))
            .collect::<Vec<_>>()
    });
    let scaled = Sums {
        exp: e,
        ..Sums::default()
    };
    let mut totals = vec![vec![(scaled.clone(), scaled); a.len()]; alphas.len()];
    for blk in &per_block {
        for (tot, got) in totals.iter_mut().zip(blk) {
            for ((tp, tq), (p, q)) in tot.iter_mut().zip(got) {
                tp.add(p);
                tq.add(q);
            }
        }
    }
    let layers = totals
        .iter()
        .zip(alphas)
        .map(|(row, &alpha)| {
            row.iter()
                .enumerate()
                .map(|(l, (pre, post))| LayerAttribution {
                    layer: l,
                    alpha,
                    pre: pre.deviation(&sources[..reach[l].0]),
                    post: post.deviation(&sources[..reach[l].1]),
                })
                .collect()
        })
        .collect();
    Ok(Attribution {
        alphas: alphas.to_vec(),
        sources,
        layers,
        samples: n,
    })
}

/// [`attribution_dense`] for two reference MLPs ([`mlp`](crate::mlp): ReLU after every
/// layer but the last, the logits) on the input `x`, with the default options.
///
/// # Errors
/// What [`mlp::widths`] reports for either model, [`Error::ShapeMismatch`] if their widths
/// differ, and what [`attribution_dense`] reports.
///
/// # Examples
/// ```
/// use rand::SeedableRng;
/// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
/// let a = llfc::mlp::init::<f32, _>(&[3, 8, 8, 2], &mut rng)?;
/// let b = llfc::mlp::init::<f32, _>(&[3, 8, 8, 2], &mut rng)?;
/// let x = ndarray::Array2::from_shape_fn((16, 3), |(i, j)| ((i * 3 + j) as f32).sin());
/// let att = llfc::metrics::attribution::attribution_mlp(&a, &b, &x, &[0.0, 0.5])?;
/// assert_eq!(att.layers[0][2].pre.norm, 0.0); // α = 0 is B: no deviation anywhere
/// assert!(att.layers[1][2].pre.closure.unwrap() < 1e-12);
/// # Ok::<(), llfc::Error>(())
/// ```
pub fn attribution_mlp<F: Float, S: Data<Elem = F>>(
    a: &Params<F>,
    b: &Params<F>,
    x: &ArrayBase<S, Ix2>,
    alphas: &[f64],
) -> Result<Attribution> {
    let (wa, wb) = (mlp::widths(a)?, mlp::widths(b)?);
    if wa != wb {
        return Err(Error::ShapeMismatch {
            what: "layer widths of MLP B (must equal A's)".into(),
            expected: wa,
            found: wb,
        });
    }
    fn layers<'p, F: Float>(p: &'p Params<F>, count: usize) -> Vec<DenseLayer<'p, F>> {
        (0..count)
            .map(|l| DenseLayer {
                weight: p[&mlp::weight_name(l)]
                    .view()
                    .into_dimensionality::<Ix2>()
                    .expect("validated by mlp::widths"),
                bias: Some(
                    p[&mlp::bias_name(l)]
                        .view()
                        .into_dimensionality::<Ix1>()
                        .expect("validated by mlp::widths"),
                ),
            })
            .collect()
    }
    let mut activations = vec![Activation::Relu; wa.len() - 1];
    *activations.last_mut().expect("at least one layer") = Activation::Identity;
    attribution_dense(
        &layers(a, wa.len() - 1),
        &layers(b, wa.len() - 1),
        &activations,
        x,
        alphas,
        &AttributionOptions::default(),
    )
}
