//! LLFC at one layer (`E[1 − cos_α]`, baseline, scale) and the report over a whole MLP.

use ndarray::{Array2, ArrayBase, ArrayView2, Axis, Data, Ix2, RemoveAxis};

use super::cosine::{cosine_distances_unchecked, cosine_from_sums};
use super::residuals::weak_additivity_unchecked;
use super::scaled::{common, contiguous, exponent, lane_sums, ldexp, max_abs_lanes, pow2};
use super::{
    check_alpha, check_features, check_same, commutativity, par_join, par_map, Commutativity,
    CosineVariant, SampleStats, WeakAdditivity,
};
use crate::error::{Error, Result};
use crate::float::Float;
use crate::mlp::{self, FeatureKind};
use crate::params::Params;

/// The least-squares scale between the features of the interpolated network and the
/// interpolated features (LLFC's `c`), per sample and over the whole array.
///
/// With `f_α = f(θ(α); x)` and `f_int = α f(θ_A; x) + (1 − α) f(θ_B; x)`, the best `coef` in
/// `f_α ≈ coef · f_int` (least squares) is `coef = ⟨f_α, f_int⟩ / ‖f_int‖²`, and LLFC's
/// `c · f_α = f_int` gives `c = 1 / coef`. Direction: if the interpolated network's features are
/// *half* the interpolated features (`f_α = ½ f_int`), then `coef = ½` and `c = 2`.
#[derive(Clone, Debug, PartialEq)]
pub struct Scale {
    /// Per sample, `coef_i = ⟨f_α,i, f_int,i⟩ / ‖f_int,i‖²`; skipped where `‖f_int,i‖ = 0`.
    pub coef: SampleStats,
    /// Per sample, `c_i = 1 / coef_i`; skipped where `coef_i` is skipped or zero.
    pub c: SampleStats,
    /// Over the whole array, `coef = Σ_i ⟨f_α,i, f_int,i⟩ / Σ_i ‖f_int,i‖²`; `None` if
    /// `f_int = 0`.
    pub matrix_coef: Option<f64>,
    /// `1 / matrix_coef`; `None` if `matrix_coef` is `None` or zero.
    pub matrix_c: Option<f64>,
}

/// LLFC measurements at one layer and one α (see [`llfc_layer`]).
#[derive(Clone, Debug, PartialEq)]
pub struct LlfcLayer {
    /// The interpolation coefficient α (`θ(α) = α θ_A + (1 − α) θ_B`).
    pub alpha: f64,
    /// Per sample `1 − cos⟨f(θ(α); x), α f(θ_A; x) + (1 − α) f(θ_B; x)⟩` (or `1 − |cos|`); its
    /// mean is the paper's `E[1 − cos_α]`.
    pub distance: SampleStats,
    /// Per sample `1 − cos⟨f(θ_A; x), f(θ_B; x)⟩` (same variant): the baseline that
    /// `E[1 − cos_α]` is compared with.
    pub baseline: SampleStats,
    /// The scale `coef` and `c = 1/coef`.
    pub scale: Scale,
}

/// Per-sample sums of `f_α` and `f_int = α f_a + (1 − α) f_b` formed in f64 (so α = 1 gives
/// `f_int = f_a` exactly), each side divided first by a power of two near its largest
/// magnitude (see [`scaled`](super::scaled)).
#[derive(Clone, Copy, Debug)]
struct InterpolationSums {
    /// `⟨f_α', f_int'⟩` of the scaled vectors.
    dot: f64,
    /// `‖f_α'‖²`.
    n_alpha: f64,
    /// `‖f_int'‖²`.
    n_int: f64,
    /// `f_α' = f_α · 2^−e_alpha`.
    e_alpha: i32,
    /// `f_int' = f_int · 2^−e_int`.
    e_int: i32,
}

impl InterpolationSums {
    /// `coef = ⟨f_α, f_int⟩ / ‖f_int‖²` (undone scales), `None` if `f_int = 0`.
    fn coef(&self) -> Option<f64> {
        (self.n_int > 0.0).then(|| ldexp(self.dot / self.n_int, self.e_alpha - self.e_int))
    }
}

fn interpolation_sums<F, S1, S2, S3, D>(
    f_alpha: &ArrayBase<S1, D>,
    f_a: &ArrayBase<S2, D>,
    f_b: &ArrayBase<S3, D>,
    alpha: f64,
) -> Vec<InterpolationSums>
where
    F: Float,
    S1: Data<Elem = F>,
    S2: Data<Elem = F>,
    S3: Data<Elem = F>,
    D: RemoveAxis,
{
    let beta = 1.0 - alpha;
    f_alpha
        .axis_iter(Axis(0))
        .zip(f_a.axis_iter(Axis(0)))
        .zip(f_b.axis_iter(Axis(0)))
        .map(|((r, ra), rb)| {
            let (r, ra, rb) = (contiguous(&r), contiguous(&ra), contiguous(&rb));
            let n = r.len();
            let (r, ra, rb) = (&r[..n], &ra[..n], &rb[..n]);
            let e_alpha = exponent(max_abs_lanes(r));
            // |α x + β y| ≤ (|α| + |β|) max(|x|, |y|).
            let bound = (alpha.abs() + beta.abs()) * max_abs_lanes(ra).max(max_abs_lanes(rb));
            let e_int = exponent(bound);
            let (s_alpha, s_int) = (pow2(-e_alpha), pow2(-e_int));
            let [dot, n_alpha, n_int] = lane_sums(n, |k| {
                let v = r[k].as_f64() * s_alpha;
                let int = alpha * (ra[k].as_f64() * s_int) + beta * (rb[k].as_f64() * s_int);
                [v * int, v * v, int * int]
            });
            InterpolationSums {
                dot,
                n_alpha,
                n_int,
                e_alpha,
                e_int,
            }
        })
        .collect()
}

/// [`Scale`] from per-sample sums: per sample, and over the whole matrix with every sample's
/// sums brought to a common scale.
fn scale_from_sums(sums: &[InterpolationSums]) -> Scale {
    let coef: Vec<Option<f64>> = sums.iter().map(InterpolationSums::coef).collect();
    let c = coef
        .iter()
        .map(|k| k.filter(|&k| k != 0.0).map(|k| 1.0 / k))
        .collect();
    let (dot, e_dot) = common(sums.iter().map(|s| (s.dot, s.e_alpha + s.e_int)), 1);
    let (n_int, e_n) = common(sums.iter().map(|s| (s.n_int, s.e_int)), 2);
    let matrix_coef = (n_int > 0.0).then(|| ldexp(dot / n_int, e_dot - 2 * e_n));
    Scale {
        coef: SampleStats::from_values(coef),
        c: SampleStats::from_values(c),
        matrix_coef,
        matrix_c: matrix_coef.filter(|&k| k != 0.0).map(|k| 1.0 / k),
    }
}

/// Validate the three feature arrays and α.
fn check_triple<F, S1, S2, S3, D>(
    f_alpha: &ArrayBase<S1, D>,
    f_a: &ArrayBase<S2, D>,
    f_b: &ArrayBase<S3, D>,
    alpha: f64,
) -> Result<()>
where
    F: Float,
    S1: Data<Elem = F>,
    S2: Data<Elem = F>,
    S3: Data<Elem = F>,
    D: RemoveAxis,
{
    check_alpha(alpha)?;
    check_features(f_a, "features of A")?;
    check_same(f_a, f_b, "features of B", "features of A")?;
    check_same(f_a, f_alpha, "features of θ(α)", "features of A")
}

/// The least-squares scale between `f_α = f(θ(α); x)` and `f_int = α f_a + (1 − α) f_b`
/// (all `[samples, …]`, flattened per sample):
///
/// ```text
/// coef_i = ⟨f_α,i, f_int,i⟩ / ‖f_int,i‖²,   c_i = 1 / coef_i          (per sample)
/// coef   = ⟨f_α, f_int⟩_F / ‖f_int‖²_F,   c   = 1 / coef            (whole array)
/// ```
///
/// LLFC (Zhou et al. 2023, Def. 2) asks for `c > 0` with `c f_α = f_int`; if `f_α = ½ f_int`,
/// then `coef = ½` and `c = 2`. `f_int` is formed and every sum accumulated in f64. Costs
/// `O(len)`.
///
/// # Errors
/// [`Error::InvalidArgument`] if `alpha` is not finite; otherwise as [`llfc_layer`].
///
/// # Examples
/// ```
/// use ndarray::array;
/// let (f_a, f_b) = (array![[2.0, 0.0]], array![[0.0, 2.0]]);
/// let f_alpha = array![[0.5, 0.5]]; // half of 0.5 f_a + 0.5 f_b = [1, 1]
/// let s = llfc::metrics::interpolation_scale(&f_alpha, &f_a, &f_b, 0.5)?;
/// assert_eq!((s.matrix_coef, s.matrix_c), (Some(0.5), Some(2.0)));
/// assert_eq!(s.c.mean, Some(2.0));
/// # Ok::<(), llfc::Error>(())
/// ```
pub fn interpolation_scale<F, S1, S2, S3, D>(
    f_alpha: &ArrayBase<S1, D>,
    f_a: &ArrayBase<S2, D>,
    f_b: &ArrayBase<S3, D>,
    alpha: f64,
) -> Result<Scale>
where
    F: Float,
    S1: Data<Elem = F>,
    S2: Data<Elem = F>,
    S3: Data<Elem = F>,
    D: RemoveAxis,
{
    check_triple(f_alpha, f_a, f_b, alpha)?;
    Ok(scale_from_sums(&interpolation_sums(
        f_alpha, f_a, f_b, alpha,
    )))
}

/// LLFC at one layer and one α, from features `f_alpha = f(θ(α); x)`, `f_a = f(θ_A; x)`,
/// `f_b = f(θ_B; x)` of the same samples (`[samples, …]`, equal shapes, flattened per sample):
///
/// ```text
/// distance_i = 1 − cos⟨f_α,i, α f_a,i + (1 − α) f_b,i⟩     (mean: the paper's E[1 − cos_α])
/// baseline_i = 1 − cos⟨f_a,i, f_b,i⟩                        (mean: E[1 − cos_{A,B}])
/// ```
///
/// (`1 − |cos|` with [`CosineVariant::Absolute`]), plus the [`Scale`] `coef`, `c = 1/coef`
/// of [`interpolation_scale`]. The convention is `θ(α) = α θ_A + (1 − α) θ_B` (α = 1 is A).
/// Samples with a zero vector on either side of a cosine are skipped and counted. Sums are in
/// f64. LLFC holds at the layer when the mean distance is near 0, far below the baseline (Zhou et
/// al. 2023, *Going Beyond Linear Mode Connectivity: The Layerwise Linear Feature
/// Connectivity*). Costs `O(len)`.
///
/// # Errors
/// [`Error::InvalidArgument`] if `alpha` is not finite or the arrays are 0-dimensional;
/// [`Error::ShapeMismatch`] if `f_b` or `f_alpha` differs in shape from `f_a`;
/// [`Error::EmptyInput`] if there is no sample or no feature; [`Error::NonFinite`] for a NaN or
/// ±∞ feature.
///
/// # Examples
/// ```
/// use llfc::metrics::{llfc_layer, CosineVariant};
/// use ndarray::array;
/// let f_a = array![[1.0, 0.0], [0.0, 3.0]];
/// let f_b = array![[0.0, 1.0], [0.0, 1.0]];
/// // θ(½)'s features: three times the interpolated ones in sample 0, orthogonal in sample 1.
/// let f_mid = array![[1.5, 1.5], [1.0, 0.0]];
/// let l = llfc_layer(&f_mid, &f_a, &f_b, 0.5, CosineVariant::Signed)?;
/// assert_eq!(l.distance.values[1], Some(1.0));
/// assert!(l.distance.values[0].unwrap().abs() < 1e-15);
/// assert_eq!(l.baseline.values, [Some(1.0), Some(0.0)]);
/// assert_eq!(l.scale.coef.values[0], Some(3.0));
/// # Ok::<(), llfc::Error>(())
/// ```
pub fn llfc_layer<F, S1, S2, S3, D>(
    f_alpha: &ArrayBase<S1, D>,
    f_a: &ArrayBase<S2, D>,
    f_b: &ArrayBase<S3, D>,
    alpha: f64,
    variant: CosineVariant,
) -> Result<LlfcLayer>
where
    F: Float,
    S1: Data<Elem = F>,
    S2: Data<Elem = F>,
    S3: Data<Elem = F>,
    D: RemoveAxis,
{
    check_triple(f_alpha, f_a, f_b, alpha)?;
    let sums = interpolation_sums(f_alpha, f_a, f_b, alpha);
    let baseline = cosine_distances_unchecked(f_a, f_b, variant);
    Ok(layer_from_sums(alpha, variant, &sums, baseline))
}

/// [`llfc_layer`] from the interpolation sums of checked features, with the baseline
/// `1 − cos⟨f_a, f_b⟩` given (it does not depend on α).
fn layer_from_sums(
    alpha: f64,
    variant: CosineVariant,
    sums: &[InterpolationSums],
    baseline: SampleStats,
) -> LlfcLayer {
    let distance = SampleStats::from_values(
        sums.iter()
            .map(|s| cosine_from_sums(s.dot, s.n_alpha, s.n_int).map(|c| variant.distance(c)))
            .collect(),
    );
    LlfcLayer {
        alpha,
        distance,
        baseline,
        scale: scale_from_sums(sums),
    }
}

/// Every LLFC measurement of two reference MLPs, for every layer and every α (see
/// [`llfc_report_mlp`]). Indexing: `pre[k][ℓ]` is layer ℓ at `alphas[k]`.
#[derive(Clone, Debug, PartialEq)]
pub struct LlfcReport {
    /// The interpolation coefficients, in the order given.
    pub alphas: Vec<f64>,
    /// The cosine distance used.
    pub variant: CosineVariant,
    /// Layer widths `[in, h₁, …, out]` (so `L = widths.len() − 1` layers).
    pub widths: Vec<usize>,
    /// `pre[k][ℓ]`: LLFC of the pre-activations `z_ℓ` at `alphas[k]`, `ℓ = 0, …, L − 1`.
    pub pre: Vec<Vec<LlfcLayer>>,
    /// `post[k][ℓ]`: LLFC of the post-activations `h_ℓ` at `alphas[k]`; for `ℓ = L − 1` these
    /// are the logits (equal to `pre[k][L − 1]`).
    pub post: Vec<Vec<LlfcLayer>>,
    /// `weak_additivity[k][ℓ]`: ReLU weak additivity of A's and B's pre-activations `z_ℓ` at
    /// `alphas[k]`, for the hidden layers `ℓ = 0, …, L − 2`.
    pub weak_additivity: Vec<Vec<WeakAdditivity>>,
    /// `commutativity[ℓ]`: commutativity of layer ℓ's weights with its inputs (`X` for ℓ = 0,
    /// where `H_A = H_B` and the residual is exactly 0; `h_{ℓ−1}` of A and B otherwise),
    /// `ℓ = 0, …, L − 1`. Independent of α.
    pub commutativity: Vec<Commutativity>,
}

impl LlfcReport {
    /// Number of layers `L`.
    #[must_use]
    pub fn num_layers(&self) -> usize {
        self.widths.len().saturating_sub(1)
    }

    /// The measurements of `layer` (pre- or post-activation) at `alphas[alpha_index]`, or `None`
    /// if an index is out of range.
    #[must_use]
    pub fn layer(&self, alpha_index: usize, layer: usize, kind: FeatureKind) -> Option<&LlfcLayer> {
        let rows = match kind {
            FeatureKind::Pre => &self.pre,
            FeatureKind::Post => &self.post,
        };
        rows.get(alpha_index)?.get(layer)
    }
}

/// Layer ℓ's weight `[out, in]` as a matrix view (already validated by `mlp::widths`).
fn weight_view<F: Float>(params: &Params<F>, layer: usize) -> Result<ArrayView2<'_, F>> {
    let name = mlp::weight_name(layer);
    let w = params.require(&name)?;
    w.view()
        .into_dimensionality::<Ix2>()
        .map_err(|_| Error::RankMismatch {
            param: name,
            spec_rank: 2,
            rank: w.ndim(),
        })
}

/// One α's row of the report: `(pre, post, weak additivity)`.
type AlphaRow = (Vec<LlfcLayer>, Vec<LlfcLayer>, Vec<WeakAdditivity>);

/// The LLFC report of two reference ReLU MLPs ([`mlp`]) θ_A = `a` and θ_B = `b` on
/// the inputs `x` (`[samples, in]`), for every α of `alphas` and every layer.
///
/// For each α it forms `θ(α) = α θ_A + (1 − α) θ_B` with [`Params::interpolate`] (so α = 1 is
/// exactly A and α = 0 exactly B), runs [`mlp::forward_features`] on θ_A, θ_B and θ(α), and
/// records for every layer ℓ:
/// - [`llfc_layer`] on the pre-activations `z_ℓ` and on the post-activations `h_ℓ` (the last
///   layer's post-activation is the logits): `E[1 − cos_α]`, the baseline `E[1 − cos_{A,B}]`
///   and the scale `c`;
/// - [`weak_additivity`](super::weak_additivity) of A's and B's pre-activations at α (hidden layers);
/// - once per layer, [`commutativity`] of `W_A^ℓ`, `W_B^ℓ` with the previous layer's
///   post-activations of A and B.
///
/// With the `rayon` feature the α values and the layers are processed in parallel; every
/// number is computed by the same sequential code either way, so the report is identical with
/// or without parallelism and for any number of threads. Costs `(2 + |alphas|)` forward passes
/// (`2 N P` flops each), `L` commutativity products and `O(N Σ_ℓ out_ℓ)` per α for the metrics.
///
/// # Errors
/// [`Error::EmptyInput`] if `alphas` is empty; [`Error::InvalidArgument`] if an α is not
/// finite; what [`Params::check_compatible`] and [`mlp::widths`] report for `a` and `b`
/// (including [`Error::NonFinite`] for a NaN weight); what [`mlp::forward_features`] reports
/// for `x` ([`Error::ShapeMismatch`], [`Error::NonFinite`]); [`Error::EmptyInput`] if `x` has no
/// rows. When several computations fail, the error of the first α (then of the first layer)
/// is returned, deterministically.
///
/// # Examples
/// ```
/// use llfc::metrics::{llfc_report_mlp, CosineVariant};
/// use llfc::mlp::{self, FeatureKind};
/// use rand::SeedableRng;
/// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
/// let a = mlp::init::<f32, _>(&[3, 8, 8, 2], &mut rng)?;
/// let b = mlp::init::<f32, _>(&[3, 8, 8, 2], &mut rng)?;
/// let x = ndarray::Array2::from_shape_fn((16, 3), |(i, j)| ((i * 3 + j) as f32).sin());
/// let report = llfc_report_mlp(&a, &b, &x, &[0.0, 0.5, 1.0], CosineVariant::Signed)?;
/// assert_eq!((report.num_layers(), report.pre.len()), (3, 3));
/// let logits_at_a = report.layer(2, 2, FeatureKind::Post).unwrap();
/// assert_eq!(logits_at_a.distance.mean, Some(0.0)); // θ(1) = θ_A exactly
/// assert_eq!(report.commutativity[0].relative, Some(0.0)); // both layers see the same X
/// # Ok::<(), llfc::Error>(())
/// ```
pub fn llfc_report_mlp<F: Float, S: Data<Elem = F>>(
    a: &Params<F>,
    b: &Params<F>,
    x: &ArrayBase<S, Ix2>,
    alphas: &[f64],
    variant: CosineVariant,
) -> Result<LlfcReport> {
    Ok(llfc_report_mlp_with(a, b, x, alphas, variant, |_| Ok(()))?.0)
}

/// [`llfc_report_mlp`], also returning `at_alpha(features of θ(α))` for every α in grid order
/// (e.g. the loss of θ(α)'s logits, without a second forward pass). An error of `at_alpha`
/// counts as one of its α, after that α's metrics.
pub(crate) fn llfc_report_mlp_with<F, S, T>(
    a: &Params<F>,
    b: &Params<F>,
    x: &ArrayBase<S, Ix2>,
    alphas: &[f64],
    variant: CosineVariant,
    at_alpha: impl Fn(&mlp::Features<F>) -> Result<T> + Sync + Send,
) -> Result<(LlfcReport, Vec<T>)>
where
    F: Float,
    S: Data<Elem = F>,
    T: Send,
{
    if alphas.is_empty() {
        return Err(Error::EmptyInput {
            what: "list of interpolation coefficients alphas".into(),
        });
    }
    for &alpha in alphas {
        check_alpha(alpha)?;
    }
    a.check_compatible(b)?;
    let widths = mlp::widths(a)?;
    mlp::widths(b)?;
    if x.nrows() == 0 {
        return Err(Error::EmptyInput {
            what: "input x (no samples)".into(),
        });
    }
    let x = x.view();
    let num_layers = widths.len() - 1;
    let layers: Vec<usize> = (0..num_layers).collect();

    let (fa, fb) = par_join(
        || mlp::forward_features(a, &x),
        || mlp::forward_features(b, &x),
    );
    let (fa, fb) = (fa?, fb?);

    // A's and B's features, and their baselines, are the same at every α: checked and
    // measured once per layer.
    let baselines = par_map(&layers, |&l| -> Result<_> {
        let baseline = |f_a: &Array2<F>, f_b: &Array2<F>| -> Result<SampleStats> {
            check_features(f_a, "features of A")?;
            check_same(f_a, f_b, "features of B", "features of A")?;
            Ok(cosine_distances_unchecked(f_a, f_b, variant))
        };
        Ok((
            baseline(&fa.pre[l], &fb.pre[l])?,
            baseline(&fa.post[l], &fb.post[l])?,
        ))
    })
    .into_iter()
    .collect::<Result<Vec<_>>>()?;
    let rows: Vec<Result<(AlphaRow, T)>> = par_map(alphas, |&alpha| {
        let theta = a.interpolate(b, alpha)?;
        let f = mlp::forward_features(&theta, &x)?;
        let per_layer = par_map(&layers, |&l| {
            let layer =
                |f_alpha: &Array2<F>, f_a: &Array2<F>, f_b: &Array2<F>, baseline: &SampleStats| {
                    check_same(f_a, f_alpha, "features of θ(α)", "features of A")?;
                    let sums = interpolation_sums(f_alpha, f_a, f_b, alpha);
                    Ok::<_, Error>(layer_from_sums(alpha, variant, &sums, baseline.clone()))
                };
            let (base_pre, base_post) = &baselines[l];
            let pre = layer(&f.pre[l], &fa.pre[l], &fb.pre[l], base_pre)?;
            let post = layer(&f.post[l], &fa.post[l], &fb.post[l], base_post)?;
            let weak = if l + 1 < num_layers {
                // α and A's and B's pre-activations were checked above.
                Some(weak_additivity_unchecked(&fa.pre[l], &fb.pre[l], alpha))
            } else {
                None
            };
            Ok((pre, post, weak))
        });
        let mut row: AlphaRow = (Vec::new(), Vec::new(), Vec::new());
        for item in per_layer {
            let (pre, post, weak) = item?;
            row.0.push(pre);
            row.1.push(post);
            row.2.extend(weak);
        }
        Ok((row, at_alpha(&f)?))
    });
    let mut report = LlfcReport {
        alphas: alphas.to_vec(),
        variant,
        widths,
        pre: Vec::with_capacity(alphas.len()),
        post: Vec::with_capacity(alphas.len()),
        weak_additivity: Vec::with_capacity(alphas.len()),
        commutativity: Vec::with_capacity(num_layers),
    };
    let mut extra = Vec::with_capacity(alphas.len());
    for row in rows {
        let ((pre, post, weak), value) = row?;
        report.pre.push(pre);
        report.post.push(post);
        report.weak_additivity.push(weak);
        extra.push(value);
    }
    report.commutativity = par_map(&layers, |&l| {
        let (h_a, h_b) = if l == 0 {
            (x, x)
        } else {
            (fa.post[l - 1].view(), fb.post[l - 1].view())
        };
        commutativity(weight_view(a, l)?, weight_view(b, l)?, h_a, h_b)
    })
    .into_iter()
    .collect::<Result<Vec<_>>>()?;
    Ok((report, extra))
}
