//! Reference forward passes of the builtin CNNs in plain ndarray code (eval mode: BatchNorm
//! with running statistics, dropout off), for `align --check` and the test suite. A reference
//! to check permutation specs against, not a framework: no autograd, no training, and strides
//! and paddings follow the model definitions the builtins name (torchvision's VGG and ResNet,
//! the LLFC paper's CIFAR VGG and ResNet), since checkpoints do not store them.
// Each user of this file uses a subset of it.
#![allow(dead_code)]

use llfc::spec::{Block, ResNetLayout, ResNetNaming, VggLayout};
use llfc::{Error, Float, Params};
use ndarray::{
    s, Array2, Array4, ArrayView, ArrayView1, ArrayView4, Axis, Dimension, Ix1, Ix2, Ix4,
};

type Result<T> = std::result::Result<T, Error>;

/// BatchNorm's ε (PyTorch's default).
const BN_EPS: f64 = 1e-5;

/// Parameter `name` as an array of rank `D`.
fn view<'a, F: Float, D: Dimension>(p: &'a Params<F>, name: &str) -> Result<ArrayView<'a, F, D>> {
    let t = p.require(name)?;
    t.view()
        .into_dimensionality::<D>()
        .map_err(|_| Error::RankMismatch {
            param: name.into(),
            spec_rank: D::NDIM.unwrap_or(0),
            rank: t.ndim(),
        })
}

fn view4<'a, F: Float>(p: &'a Params<F>, name: &str) -> Result<ArrayView4<'a, F>> {
    view::<F, Ix4>(p, name)
}

fn view1<'a, F: Float>(p: &'a Params<F>, name: &str) -> Result<ArrayView1<'a, F>> {
    view::<F, Ix1>(p, name)
}

fn shape_error(what: &str, expected: &[usize], found: &[usize]) -> Error {
    Error::ShapeMismatch {
        what: what.into(),
        expected: expected.to_vec(),
        found: found.to_vec(),
    }
}

/// 2-D convolution (cross-correlation, as PyTorch), zero padding `pad` on every side:
/// `y[n, o, i, j] = b[o] + Σ_{c, u, v} w[o, c, u, v] · x[n, c, i·stride + u − pad, j·stride + v − pad]`.
/// Computed as one matrix product per sample over the unfolded input (im2col).
///
/// # Errors
/// [`Error::ShapeMismatch`] if the channels disagree or the output would be empty.
pub fn conv2d<F: Float>(
    x: &Array4<F>,
    w: ArrayView4<F>,
    bias: Option<ArrayView1<F>>,
    stride: usize,
    pad: usize,
) -> Result<Array4<F>> {
    let (n, c, h, wd) = x.dim();
    let (o, ci, kh, kw) = w.dim();
    if ci != c || h + 2 * pad < kh || wd + 2 * pad < kw {
        return Err(shape_error("conv2d input", &[n, ci, kh, kw], x.shape()));
    }
    let (oh, ow) = (
        (h + 2 * pad - kh) / stride + 1,
        (wd + 2 * pad - kw) / stride + 1,
    );
    let wm = w
        .as_standard_layout()
        .into_owned()
        .into_shape_with_order((o, c * kh * kw))
        .expect("same number of elements");
    let mut y = Array4::<F>::zeros((n, o, oh, ow));
    let mut cols = Array2::<F>::zeros((c * kh * kw, oh * ow));
    for s in 0..n {
        cols.fill(F::zero());
        for ch in 0..c {
            for u in 0..kh {
                for v in 0..kw {
                    let mut row = cols.row_mut((ch * kh + u) * kw + v);
                    for i in 0..oh {
                        let Some(r) = (i * stride + u).checked_sub(pad).filter(|&r| r < h) else {
                            continue;
                        };
                        for j in 0..ow {
                            if let Some(q) = (j * stride + v).checked_sub(pad).filter(|&q| q < wd) {
                                row[i * ow + j] = x[[s, ch, r, q]];
                            }
                        }
                    }
                }
            }
        }
        let out = wm.dot(&cols);
        y.index_axis_mut(Axis(0), s)
            .assign(&out.into_shape_with_order((o, oh, ow)).expect("o·oh·ow"));
    }
    if let Some(b) = bias {
        for (mut plane, &b) in y.axis_iter_mut(Axis(1)).zip(b.iter()) {
            plane.mapv_inplace(|v| v + b);
        }
    }
    Ok(y)
}

/// BatchNorm in eval mode: `y = (x − running_mean) / √(running_var + ε) · weight + bias` per
/// channel, parameters `{prefix}.weight`, `.bias`, `.running_mean`, `.running_var`.
///
/// # Errors
/// [`Error::MissingParam`] if one is absent.
pub fn batch_norm<F: Float>(x: &Array4<F>, p: &Params<F>, prefix: &str) -> Result<Array4<F>> {
    let get = |f: &str| view1(p, &format!("{prefix}.{f}"));
    let (g, b, m, v) = (
        get("weight")?,
        get("bias")?,
        get("running_mean")?,
        get("running_var")?,
    );
    let mut y = x.clone();
    for (c, mut plane) in y.axis_iter_mut(Axis(1)).enumerate() {
        let scale = g[c] / (v[c] + F::from_f64(BN_EPS)).sqrt();
        plane.mapv_inplace(|t| (t - m[c]) * scale + b[c]);
    }
    Ok(y)
}

/// `max(x, 0)` elementwise.
pub fn relu<F: Float, D: ndarray::Dimension>(x: ndarray::Array<F, D>) -> ndarray::Array<F, D> {
    x.mapv_into(|v| if v > F::zero() { v } else { F::zero() })
}

/// Max-pool with window `k`, stride `stride`, padding `pad` (padded entries never win).
pub fn max_pool<F: Float>(x: &Array4<F>, k: usize, stride: usize, pad: usize) -> Array4<F> {
    let (n, c, h, w) = x.dim();
    let (oh, ow) = (
        (h + 2 * pad - k) / stride + 1,
        (w + 2 * pad - k) / stride + 1,
    );
    Array4::from_shape_fn((n, c, oh, ow), |(s, ch, i, j)| {
        let mut m = F::neg_infinity();
        for u in 0..k {
            for v in 0..k {
                let (r, q) = (i * stride + u, j * stride + v);
                if r >= pad && q >= pad && r - pad < h && q - pad < w {
                    m = m.max(x[[s, ch, r - pad, q - pad]]);
                }
            }
        }
        m
    })
}

/// PyTorch's `adaptive_avg_pool2d` to `oh × ow`: output cell `i` averages input rows
/// `⌊i h / oh⌋ .. ⌈(i + 1) h / oh⌉` (columns alike).
pub fn adaptive_avg_pool<F: Float>(x: &Array4<F>, oh: usize, ow: usize) -> Array4<F> {
    let (n, c, h, w) = x.dim();
    Array4::from_shape_fn((n, c, oh, ow), |(s, ch, i, j)| {
        let (r0, r1) = (i * h / oh, ((i + 1) * h).div_ceil(oh));
        let (q0, q1) = (j * w / ow, ((j + 1) * w).div_ceil(ow));
        let block = x.slice(s![s, ch, r0..r1, q0..q1]);
        block.sum() / F::from_f64(block.len() as f64)
    })
}

/// `x.view(N, −1)`: channels outermost, then rows, then columns, as PyTorch's flatten.
pub fn flatten<F: Float>(x: &Array4<F>) -> Array2<F> {
    let n = x.shape()[0];
    let m = x.len() / n.max(1);
    x.as_standard_layout()
        .into_owned()
        .into_shape_with_order((n, m))
        .expect("same number of elements")
}

/// Linear layer `y = x Wᵀ + b` with `{prefix}.weight` `[out, in]` and optional `{prefix}.bias`.
///
/// # Errors
/// [`Error::MissingParam`] for a missing weight; [`Error::ShapeMismatch`] for a wrong width.
pub fn linear<F: Float>(x: &Array2<F>, p: &Params<F>, prefix: &str) -> Result<Array2<F>> {
    let name = format!("{prefix}.weight");
    let w = p
        .require(&name)?
        .view()
        .into_dimensionality::<Ix2>()
        .map_err(|_| shape_error(&name, &[0, x.ncols()], p[name.as_str()].shape()))?;
    if w.ncols() != x.ncols() {
        return Err(shape_error(&name, &[w.nrows(), x.ncols()], w.shape()));
    }
    let mut y = x.dot(&w.t());
    if p.contains(&format!("{prefix}.bias")) {
        let b = view1(p, &format!("{prefix}.bias"))?;
        for mut row in y.rows_mut() {
            row.zip_mut_with(&b, |v, &b| *v = *v + b);
        }
    }
    Ok(y)
}

fn conv_named<F: Float>(
    x: &Array4<F>,
    p: &Params<F>,
    prefix: &str,
    stride: usize,
) -> Result<Array4<F>> {
    let w = view4(p, &format!("{prefix}.weight"))?;
    let bias_name = format!("{prefix}.bias");
    let bias = if p.contains(&bias_name) {
        Some(view1(p, &bias_name)?)
    } else {
        None
    };
    let pad = w.shape()[2] / 2;
    conv2d(x, w, bias, stride, pad)
}

/// A `features`/`classifier` VGG ([`VggLayout`]): each conv (3×3, padding 1), its BatchNorm
/// and ReLU; a 2×2 max-pool at every gap in the `features` indices and after the last conv;
/// adaptive average pool to [`VggLayout::flattened`] (1×1 when empty), flatten; the linear
/// layers with ReLU between them (dropout is the identity in eval mode). Inputs must be at least
/// 32×32 for the five pools.
///
/// # Errors
/// Missing parameters or inconsistent shapes.
pub fn vgg_forward<F: Float>(
    p: &Params<F>,
    layout: &VggLayout,
    x: &Array4<F>,
) -> Result<Array2<F>> {
    let step = if layout.batch_norm { 3 } else { 2 };
    let mut h = x.clone();
    for (i, &n) in layout.convs.iter().enumerate() {
        h = conv_named(&h, p, &format!("features.{n}"), 1)?;
        if layout.batch_norm {
            h = batch_norm(&h, p, &format!("features.{}", n + 1))?;
        }
        h = relu(h);
        let next = layout.convs.get(i + 1).copied().unwrap_or(n + step + 1);
        for _ in n + step..next {
            h = max_pool(&h, 2, 2, 0);
        }
    }
    let (oh, ow) = match layout.flattened.as_slice() {
        [] => (1, 1),
        [a] => (*a, 1),
        [a, b, ..] => (*a, *b),
    };
    let mut z = flatten(&adaptive_avg_pool(&h, oh, ow));
    let last = layout.linears.len().saturating_sub(1);
    for (j, m) in layout.linears.iter().enumerate() {
        z = linear(&z, p, &format!("classifier.{m}"))?;
        if j < last {
            z = relu(z);
        }
    }
    Ok(z)
}

/// A ResNet ([`ResNetLayout`]): the stem (torchvision: 7×7/2 conv, BatchNorm, ReLU, 3×3/2
/// max-pool; CIFAR: 3×3 conv, BatchNorm, ReLU), the blocks (stride 2 in the first block of every
/// stage after the first: on `conv1` of a BasicBlock, on `conv2` of a Bottleneck, and on the
/// shortcut), global average pooling and the head.
///
/// # Errors
/// Missing parameters or inconsistent shapes.
pub fn resnet_forward<F: Float>(
    p: &Params<F>,
    layout: &ResNetLayout,
    x: &Array4<F>,
) -> Result<Array2<F>> {
    let (sc, head) = match layout.naming {
        ResNetNaming::Torchvision => ("downsample", "fc"),
        ResNetNaming::Cifar => ("shortcut", "linear"),
    };
    let torchvision = layout.naming == ResNetNaming::Torchvision;
    let mut h = conv_named(x, p, "conv1", if torchvision { 2 } else { 1 })?;
    h = relu(batch_norm(&h, p, "bn1")?);
    if torchvision {
        h = max_pool(&h, 3, 2, 1);
    }
    for (si, &blocks) in layout.blocks.iter().enumerate() {
        let s = si + 1;
        for b in 0..blocks {
            let pre = format!("layer{s}.{b}");
            let stride = if b == 0 && s > 1 { 2 } else { 1 };
            let convs = match layout.block {
                Block::Basic => 2,
                Block::Bottleneck => 3,
            };
            let mut y = h.clone();
            for k in 1..=convs {
                let st = match (layout.block, k) {
                    (Block::Basic, 1) | (Block::Bottleneck, 2) => stride,
                    _ => 1,
                };
                y = conv_named(&y, p, &format!("{pre}.conv{k}"), st)?;
                y = batch_norm(&y, p, &format!("{pre}.bn{k}"))?;
                if k < convs {
                    y = relu(y);
                }
            }
            let shortcut = if layout.shortcuts.contains(&(s, b)) {
                let z = conv_named(&h, p, &format!("{pre}.{sc}.0"), stride)?;
                batch_norm(&z, p, &format!("{pre}.{sc}.1"))?
            } else {
                h
            };
            if shortcut.shape() != y.shape() {
                return Err(shape_error(
                    &format!("{pre} residual"),
                    y.shape(),
                    shortcut.shape(),
                ));
            }
            h = relu(y + shortcut);
        }
    }
    let z = flatten(&adaptive_avg_pool(&h, 1, 1));
    linear(&z, p, head)
}
