//! Commutativity of convolutional layers (Zhou et al. 2023 measure it on the convolutions of
//! VGG and ResNet): a convolution is linear in its input and in its weight, so
//!
//! ```text
//! R = conv(W_A, H_A) + conv(W_B, H_B) − conv(W_A, H_B) − conv(W_B, H_A) = conv(W_A − W_B, H_A − H_B)
//! ```
//!
//! The convolution is PyTorch's `nn.Conv2d` without bias (a cross-correlation): weight
//! `[out, in/groups, kh, kw]`, input `[samples, in, h, w]`, output `[samples, out, oh, ow]` with
//! `oh = ⌊(h + 2 p_h − d_h (kh − 1) − 1) / s_h⌋ + 1` (likewise `ow`), zero padding, and output
//! channel `o` of group `g = o / (out/groups)` reading input channels `g·in/groups ..
//! (g+1)·in/groups`. It is computed by im2col in f64: each sample and group is unfolded into a
//! `[in/groups · kh · kw, oh · ow]` matrix and multiplied by the `[out/groups, in/groups · kh ·
//! kw]` weight block, so a residual costs `2 N · out · in/groups · kh · kw · oh · ow` flops per
//! product and `O(in/groups · kh · kw · oh · ow)` memory per worker; samples are processed in
//! fixed blocks (in parallel with `rayon`) and the f64 sums are added in sample order, so the
//! results do not depend on the number of threads.

use ndarray::{s, Array2, Array3, Array4, ArrayView2, ArrayView3, ArrayView4, Axis, Zip};

use super::scaled;
use super::{
    check_features, check_same, par_map, relative_from_sums, vanilla_from_sums, Commutativity,
};
use crate::error::{Error, Result};
use crate::float::Float;
use crate::matmul::mat_mul_into;

/// Stride, zero padding, dilation and groups of a 2-D convolution (PyTorch's `nn.Conv2d`
/// arguments; each pair is `[along h, along w]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ConvGeometry {
    /// Step between output positions (default `[1, 1]`; must be ≥ 1).
    pub stride: [usize; 2],
    /// Zeros added on both sides of the input (default `[0, 0]`).
    pub padding: [usize; 2],
    /// Spacing between kernel taps (default `[1, 1]`; must be ≥ 1).
    pub dilation: [usize; 2],
    /// Number of channel groups (default 1; must divide both channel counts).
    pub groups: usize,
}

impl Default for ConvGeometry {
    fn default() -> Self {
        Self {
            stride: [1, 1],
            padding: [0, 0],
            dilation: [1, 1],
            groups: 1,
        }
    }
}

/// The validated sizes of one convolution.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConvShape {
    pub(crate) geometry: ConvGeometry,
    /// Input channels, height and width.
    pub(crate) input: [usize; 3],
    /// Output channels, height and width.
    pub(crate) output: [usize; 3],
    /// Kernel height and width.
    pub(crate) kernel: [usize; 2],
}

impl ConvShape {
    /// Check `weight` `[out, in/groups, kh, kw]` against an input `[samples, in, h, w]`.
    pub(crate) fn new(weight: &[usize], input: &[usize], geometry: ConvGeometry) -> Result<Self> {
        let g = geometry;
        if g.groups == 0 || g.stride.contains(&0) || g.dilation.contains(&0) {
            return Err(Error::InvalidArgument {
                name: "geometry",
                reason: format!("stride, dilation and groups must be ≥ 1, got {g:?}"),
            });
        }
        let [out, in_g, kh, kw] = [weight[0], weight[1], weight[2], weight[3]];
        let [_, c_in, h, w] = [input[0], input[1], input[2], input[3]];
        if out % g.groups != 0 || c_in % g.groups != 0 || c_in / g.groups != in_g {
            return Err(Error::ShapeMismatch {
                what: format!(
                    "conv weight [out, in/groups, kh, kw] for an input with {c_in} channels and \
                     groups = {} (out and in must be multiples of groups)",
                    g.groups
                ),
                expected: vec![out, c_in / g.groups, kh, kw],
                found: weight.to_vec(),
            });
        }
        let size = |n: usize, k: usize, axis: usize| -> Option<usize> {
            let span = g.dilation[axis].checked_mul(k - 1)?.checked_add(1)?;
            let padded = n.checked_add(g.padding[axis].checked_mul(2)?)?;
            padded.checked_sub(span).map(|r| r / g.stride[axis] + 1)
        };
        match (size(h, kh, 0), size(w, kw, 1)) {
            (Some(oh), Some(ow)) => Ok(Self {
                geometry: g,
                input: [c_in, h, w],
                output: [out, oh, ow],
                kernel: [kh, kw],
            }),
            _ => Err(Error::InvalidArgument {
                name: "geometry",
                reason: format!(
                    "a {kh}×{kw} kernel with {g:?} does not fit a {h}×{w} input (no output position)"
                ),
            }),
        }
    }

    /// Input channels per group.
    fn in_per_group(&self) -> usize {
        self.input[0] / self.geometry.groups
    }

    /// Output channels per group.
    fn out_per_group(&self) -> usize {
        self.output[0] / self.geometry.groups
    }

    /// Rows of one unfolded group, `in/groups · kh · kw`.
    fn patch(&self) -> usize {
        self.in_per_group() * self.kernel[0] * self.kernel[1]
    }

    /// `[out, in, h, w]` → the `[out, in/groups · kh · kw]` matrix of a weight, in f64.
    pub(crate) fn weight_matrix<F: Float>(&self, weight: &ArrayView4<'_, F>) -> Array2<f64> {
        let rows = weight.shape()[0];
        Array2::from_shape_vec(
            (rows, self.patch()),
            weight.iter().map(|v| v.as_f64()).collect(),
        )
        .expect("a weight has out · (in/groups) · kh · kw entries")
    }

    /// im2col of group `group` of one sample `[in, h, w]`: row `(c, i, j)`, column `(y, x)`
    /// holds `input[g·in/groups + c, y·s_h − p_h + i·d_h, x·s_w − p_w + j·d_w]`, 0 outside.
    pub(crate) fn unfold(&self, sample: &ArrayView3<'_, f64>, group: usize) -> Array2<f64> {
        let [_, h, w] = self.input;
        let [_, oh, ow] = self.output;
        let [kh, kw] = self.kernel;
        let g = &self.geometry;
        let mut cols = Array2::zeros((self.patch(), oh * ow));
        let c0 = group * self.in_per_group();
        for c in 0..self.in_per_group() {
            let plane = sample.index_axis(Axis(0), c0 + c);
            for i in 0..kh {
                for j in 0..kw {
                    let mut row = cols.row_mut((c * kh + i) * kw + j);
                    for y in 0..oh {
                        let Some(iy) = (y * g.stride[0] + i * g.dilation[0])
                            .checked_sub(g.padding[0])
                            .filter(|&v| v < h)
                        else {
                            continue;
                        };
                        for x in 0..ow {
                            if let Some(ix) = (x * g.stride[1] + j * g.dilation[1])
                                .checked_sub(g.padding[1])
                                .filter(|&v| v < w)
                            {
                                row[y * ow + x] = plane[[iy, ix]];
                            }
                        }
                    }
                }
            }
        }
        cols
    }

    /// Unfold every group of one sample.
    pub(crate) fn unfold_all(&self, sample: &ArrayView3<'_, f64>) -> Vec<Array2<f64>> {
        (0..self.geometry.groups)
            .map(|g| self.unfold(sample, g))
            .collect()
    }

    /// `conv(W, ·)` of one sample from its unfolded groups: `[out, oh · ow]`, in f64.
    pub(crate) fn apply(&self, weight: &ArrayView2<'_, f64>, cols: &[Array2<f64>]) -> Array2<f64> {
        let [out, oh, ow] = self.output;
        let og = self.out_per_group();
        let mut y = Array2::zeros((out, oh * ow));
        for (g, col) in cols.iter().enumerate() {
            let rows = s![g * og..(g + 1) * og, ..];
            mat_mul_into(weight.slice(rows), col.view(), 0.0, y.slice_mut(rows));
        }
        y
    }
}

/// Check a pair of conv weights and a pair of inputs; returns the validated shape.
pub(crate) fn check_conv<F: Float>(
    w_a: &ArrayView4<'_, F>,
    w_b: &ArrayView4<'_, F>,
    h_a: &ArrayView4<'_, F>,
    h_b: &ArrayView4<'_, F>,
    geometry: ConvGeometry,
) -> Result<ConvShape> {
    check_features(w_a, "conv weight W_A")?;
    check_same(w_a, w_b, "conv weight W_B", "conv weight W_A")?;
    check_features(h_a, "conv inputs H_A")?;
    check_same(h_a, h_b, "conv inputs H_B", "conv inputs H_A")?;
    ConvShape::new(w_a.shape(), h_a.shape(), geometry)
}

/// Samples per block of the parallel loops over samples.
pub(crate) const SAMPLE_BLOCK: usize = 8;

/// `f` over blocks of `SAMPLE_BLOCK` samples (in parallel with `rayon`), its sums added in
/// block order: independent of the number of threads.
pub(crate) fn sum_over_blocks<const K: usize>(
    samples: usize,
    f: impl Fn(usize) -> [f64; K] + Sync + Send,
) -> [f64; K] {
    let blocks: Vec<usize> = (0..samples.div_ceil(SAMPLE_BLOCK)).collect();
    par_map(&blocks, |&b| {
        let mut acc = [0.0; K];
        for i in b * SAMPLE_BLOCK..((b + 1) * SAMPLE_BLOCK).min(samples) {
            for (a, v) in acc.iter_mut().zip(f(i)) {
                *a += v;
            }
        }
        acc
    })
    .into_iter()
    .fold([0.0; K], |mut acc, v| {
        for (a, x) in acc.iter_mut().zip(v) {
            *a += x;
        }
        acc
    })
}

/// Sample `i` of a `[samples, c, h, w]` array, in f64.
pub(crate) fn sample_f64<F: Float>(x: &ArrayView4<'_, F>, i: usize) -> Array3<f64> {
    x.index_axis(Axis(0), i).mapv(Float::as_f64)
}

/// The 2-D convolution (cross-correlation, no bias) `conv(W, H)` of PyTorch's `nn.Conv2d`:
/// weight `[out, in/groups, kh, kw]`, input `[samples, in, h, w]` → `[samples, out, oh, ow]`,
/// computed in f64 by im2col, with `oh = ⌊(h + 2 p_h − d_h (kh − 1) − 1) / s_h⌋ + 1` (likewise
/// `ow`), zero padding, and output channel `o` reading the input channels of its group
/// `o / (out/groups)`.
///
/// # Errors
/// [`Error::ShapeMismatch`] if the weight does not fit the input's channels and `groups`;
/// [`Error::InvalidArgument`] for a zero stride, dilation or groups, or a kernel larger than the
/// padded input; [`Error::EmptyInput`] / [`Error::NonFinite`] for empty or non-finite arrays.
///
/// # Examples
/// ```
/// use llfc::metrics::{conv2d, ConvGeometry};
/// use ndarray::Array4;
/// let w = Array4::from_elem((1, 1, 2, 2), 1.0); // sums of 2×2 windows
/// let x = Array4::from_shape_fn((1, 1, 3, 3), |(_, _, i, j)| (3 * i + j) as f64);
/// let y = conv2d(w.view(), x.view(), &ConvGeometry::default())?;
/// assert_eq!(y.into_raw_vec_and_offset().0, [8.0, 12.0, 20.0, 24.0]);
/// # Ok::<(), llfc::Error>(())
/// ```
pub fn conv2d<F: Float>(
    weight: ArrayView4<'_, F>,
    input: ArrayView4<'_, F>,
    geometry: &ConvGeometry,
) -> Result<Array4<f64>> {
    check_features(&weight, "conv weight")?;
    check_features(&input, "conv input")?;
    let shape = ConvShape::new(weight.shape(), input.shape(), *geometry)?;
    let wm = shape.weight_matrix(&weight);
    let [out, oh, ow] = shape.output;
    let samples: Vec<usize> = (0..input.shape()[0]).collect();
    let maps = par_map(&samples, |&i| {
        shape.apply(&wm.view(), &shape.unfold_all(&sample_f64(&input, i).view()))
    });
    let mut y = Array4::zeros((samples.len(), out, oh, ow));
    for (mut dst, map) in y.outer_iter_mut().zip(maps) {
        dst.assign(&map.into_shape_with_order((out, oh, ow)).expect("oh · ow"));
    }
    Ok(y)
}

/// Commutativity residuals of one convolutional layer: the quantities of
/// [`commutativity`](super::commutativity) with every product `W H` replaced by the
/// convolution `conv(W, H)` (weights `[out, in/groups, kh, kw]`, inputs `[samples, in, h, w]`,
/// equal shapes, `geometry` as in the layer):
///
/// ```text
/// S = conv(W_A, H_A) + conv(W_B, H_B),   X = conv(W_A, H_B) + conv(W_B, H_A)
/// R = S − X = conv(W_A − W_B, H_A − H_B)
/// relative = ‖R‖_F / ‖S‖_F,   vanilla = ‖R‖²_F / (‖S‖_F ‖X‖_F)
/// baseline = ‖conv(W_A, H_A) − conv(W_B, H_B)‖²_F / (‖conv(W_A, H_A)‖_F ‖conv(W_B, H_B)‖_F)
/// ```
///
/// Biases are not included (they cancel in `R`), as for dense layers. `R` is computed through
/// the factorisation, so it is exactly 0 when `W_A = W_B` or `H_A = H_B`. Everything runs in
/// f64 (im2col, five products per sample and group), scale-safe: the weights and the inputs
/// are each divided by a power of two near their largest magnitude first, so the ratios of
/// `s W` and `t H` equal those of `W` and `H` for any finite `s, t ≠ 0` (bit for bit for
/// powers of two) and `‖R‖` is scaled back exactly.
///
/// # Errors
/// [`Error::ShapeMismatch`] if `W_B` differs in shape from `W_A`, `H_B` from `H_A`, or the
/// weight does not fit the inputs' channels and `groups`; [`Error::InvalidArgument`] for an
/// invalid geometry or a kernel larger than the padded input; [`Error::EmptyInput`] /
/// [`Error::NonFinite`] for empty or non-finite arrays.
///
/// # Examples
/// ```
/// use llfc::metrics::{conv_commutativity, ConvGeometry};
/// use ndarray::Array4;
/// let w = Array4::from_shape_fn((2, 1, 3, 3), |(o, _, i, j)| (o + i * j) as f64 - 1.5);
/// let h_a = Array4::from_shape_fn((4, 1, 5, 5), |(n, _, i, j)| ((n + i) * j) as f64 % 3.0);
/// let h_b = h_a.mapv(|v| 1.0 - v);
/// // Same weights: the layer commutes exactly, whatever the inputs.
/// let geometry = ConvGeometry { padding: [1, 1], stride: [2, 2], ..ConvGeometry::default() };
/// let c = conv_commutativity(w.view(), w.view(), h_a.view(), h_b.view(), &geometry)?;
/// assert_eq!((c.relative, c.residual_norm), (Some(0.0), 0.0));
/// # Ok::<(), llfc::Error>(())
/// ```
pub fn conv_commutativity<F: Float>(
    w_a: ArrayView4<'_, F>,
    w_b: ArrayView4<'_, F>,
    h_a: ArrayView4<'_, F>,
    h_b: ArrayView4<'_, F>,
    geometry: &ConvGeometry,
) -> Result<Commutativity> {
    let shape = check_conv(&w_a, &w_b, &h_a, &h_b, *geometry)?;
    // Scale-safe: the weights and the inputs are each divided by a power of two near their
    // largest magnitude (exact), so no product overflows or underflows; every sum below is
    // bilinear squared, so the ratios do not change and ‖R‖ is scaled back by 2^(ew + eh).
    let (ew, eh) = (
        scaled::exponent(scaled::max_abs(w_a.iter().chain(w_b.iter()))),
        scaled::exponent(scaled::max_abs(h_a.iter().chain(h_b.iter()))),
    );
    let (kw, kh) = (scaled::pow2(-ew), scaled::pow2(-eh));
    let (wa, wb) = (
        shape.weight_matrix(&w_a) * kw,
        shape.weight_matrix(&w_b) * kw,
    );
    let dw = &wa - &wb;
    // [‖R‖², ‖S‖², ‖X‖², ‖AA − BB‖², ‖AA‖², ‖BB‖²]
    let sums = sum_over_blocks(h_a.shape()[0], |i| {
        let (sa, sb) = (sample_f64(&h_a, i) * kh, sample_f64(&h_b, i) * kh);
        let ud = shape.unfold_all(&(&sa - &sb).view());
        let r = shape.apply(&dw.view(), &ud);
        let ua = shape.unfold_all(&sa.view());
        let ub = shape.unfold_all(&sb.view());
        let (aa, ba) = (shape.apply(&wa.view(), &ua), shape.apply(&wb.view(), &ua));
        let (ab, bb) = (shape.apply(&wa.view(), &ub), shape.apply(&wb.view(), &ub));
        let mut acc = [0.0; 6];
        acc[0] = r.iter().map(|v| v * v).sum();
        Zip::from(&aa)
            .and(&bb)
            .and(&ab)
            .and(&ba)
            .for_each(|&aa, &bb, &ab, &ba| {
                let (s, x) = (aa + bb, ab + ba);
                acc[1] += s * s;
                acc[2] += x * x;
                acc[3] += (aa - bb) * (aa - bb);
                acc[4] += aa * aa;
                acc[5] += bb * bb;
            });
        acc
    });
    let [r, ns, nx, d, na, nb] = sums;
    Ok(Commutativity {
        relative: relative_from_sums(r, ns),
        vanilla: vanilla_from_sums(r, ns, nx),
        baseline: vanilla_from_sums(d, na, nb),
        residual_norm: scaled::ldexp(r.sqrt(), ew + eh),
    })
}
