//! Per-sample cosine distances and their summary statistics.

use ndarray::{ArrayBase, Axis, Data, RemoveAxis, Zip};

use super::scaled::{exponent, max_abs, pow2};
use super::{check_features, check_same};
use crate::error::Result;
use crate::float::Float;

/// Which cosine distance of two sample vectors `u`, `v`, with `cos = ⟨u, v⟩ / (‖u‖ ‖v‖)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum CosineVariant {
    /// `1 − cos ∈ [0, 2]`: 0 for positively proportional vectors, 1 for orthogonal ones, 2 for
    /// opposite ones. The LLFC paper's definition.
    #[default]
    Signed,
    /// `1 − |cos| ∈ [0, 1]`: also 0 for negatively proportional vectors. What the LLFC paper's
    /// official code computes. Always `≤` the [`Signed`](Self::Signed) value.
    Absolute,
}

impl CosineVariant {
    /// The distance `1 − cos` or `1 − |cos|` of a cosine `cos ∈ [−1, 1]`.
    ///
    /// # Examples
    /// ```
    /// use llfc::metrics::CosineVariant;
    /// assert_eq!(CosineVariant::Signed.distance(-1.0), 2.0);
    /// assert_eq!(CosineVariant::Absolute.distance(-1.0), 0.0);
    /// ```
    #[must_use]
    pub fn distance(self, cos: f64) -> f64 {
        match self {
            Self::Signed => 1.0 - cos,
            Self::Absolute => 1.0 - cos.abs(),
        }
    }
}

/// Per-sample values of a metric and their mean and standard deviation over the samples that
/// have one.
///
/// The standard deviation is the **population** one (divisor `n`, NumPy's default `ddof = 0`):
/// `std = √((1/n) Σ_i (v_i − mean)²)` over the `n =` [`count`](Self::count) defined values,
/// computed in two passes in f64 in sample order.
#[derive(Clone, Debug, PartialEq)]
pub struct SampleStats {
    /// One entry per sample, in input order; `None` for a skipped sample (a zero-norm vector,
    /// or whatever the producing function documents).
    pub values: Vec<Option<f64>>,
    /// Number of samples with a value.
    pub count: usize,
    /// Number of skipped samples (`values.len() − count`).
    pub skipped: usize,
    /// Mean of the defined values; `None` if every sample was skipped.
    pub mean: Option<f64>,
    /// Population standard deviation of the defined values; `None` if every sample was skipped.
    pub std: Option<f64>,
}

impl SampleStats {
    /// Summarise per-sample values (`None` = skipped).
    ///
    /// # Examples
    /// ```
    /// use llfc::metrics::SampleStats;
    /// let s = SampleStats::from_values(vec![Some(1.0), None, Some(3.0)]);
    /// assert_eq!((s.count, s.skipped, s.mean, s.std), (2, 1, Some(2.0), Some(1.0)));
    /// ```
    #[must_use]
    pub fn from_values(values: Vec<Option<f64>>) -> Self {
        let defined = || values.iter().filter_map(|v| *v);
        let count = defined().count();
        let skipped = values.len() - count;
        let (mean, std) = if count == 0 {
            (None, None)
        } else {
            #[allow(clippy::cast_precision_loss)]
            let n = count as f64;
            let mean = defined().sum::<f64>() / n;
            let var = defined().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
            (Some(mean), Some(var.sqrt()))
        };
        Self {
            values,
            count,
            skipped,
            mean,
            std,
        }
    }

    /// The mean, or NaN if every sample was skipped (for tables and plots; [`mean`](Self::mean)
    /// keeps the distinction as `None`).
    ///
    /// # Examples
    /// ```
    /// use llfc::metrics::SampleStats;
    /// assert_eq!(SampleStats::from_values(vec![Some(1.0), Some(3.0)]).mean_or_nan(), 2.0);
    /// assert!(SampleStats::from_values(vec![None]).mean_or_nan().is_nan());
    /// ```
    #[must_use]
    pub fn mean_or_nan(&self) -> f64 {
        self.mean.unwrap_or(f64::NAN)
    }

    /// The standard deviation, or NaN if every sample was skipped.
    #[must_use]
    pub fn std_or_nan(&self) -> f64 {
        self.std.unwrap_or(f64::NAN)
    }
}

/// `mean ± std (n = count)`, with ` , k skipped` when samples were skipped, or
/// `no sample (k skipped)`; the precision of the formatter applies to mean and std
/// (`{:.4}` → `0.0123 ± 0.0040 (n = 449)`).
impl std::fmt::Display for SampleStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (Some(mean), Some(std)) = (self.mean, self.std) else {
            return write!(f, "no sample ({} skipped)", self.skipped);
        };
        match f.precision() {
            Some(p) => write!(f, "{mean:.p$} ± {std:.p$}")?,
            None => write!(f, "{mean} ± {std}")?,
        }
        write!(f, " (n = {}", self.count)?;
        if self.skipped > 0 {
            write!(f, ", {} skipped", self.skipped)?;
        }
        write!(f, ")")
    }
}

/// `cos = dot / (‖u‖ ‖v‖)` from `dot = ⟨u, v⟩`, `nu = ‖u‖²`, `nv = ‖v‖²`, clamped to `[−1, 1]`;
/// `None` if a norm is zero. `√(nu·nv)` is used when the product is a normal number (then
/// `cos(u, u) = 1` exactly), `√nu·√nv` when it would overflow or underflow.
pub(super) fn cosine_from_sums(dot: f64, nu: f64, nv: f64) -> Option<f64> {
    if nu <= 0.0 || nv <= 0.0 {
        return None;
    }
    let prod = nu * nv;
    let denom = if prod.is_normal() {
        prod.sqrt()
    } else {
        nu.sqrt() * nv.sqrt()
    };
    Some((dot / denom).clamp(-1.0, 1.0))
}

/// Per-sample `(⟨u, v⟩, ‖u‖², ‖v‖²)` of two validated arrays of equal shape, in f64, each
/// vector divided first by a power of two near its largest magnitude (the cosine does not
/// depend on it; see [`scaled`](super::scaled)).
fn per_sample_sums<F: Float, S1: Data<Elem = F>, S2: Data<Elem = F>, D: RemoveAxis>(
    a: &ArrayBase<S1, D>,
    b: &ArrayBase<S2, D>,
) -> Vec<(f64, f64, f64)> {
    a.axis_iter(Axis(0))
        .zip(b.axis_iter(Axis(0)))
        .map(|(ra, rb)| {
            let sa = pow2(-exponent(max_abs(&ra)));
            let sb = pow2(-exponent(max_abs(&rb)));
            let (mut dot, mut na, mut nb) = (0.0, 0.0, 0.0);
            Zip::from(&ra).and(&rb).for_each(|&x, &y| {
                let (x, y) = (x.as_f64() * sa, y.as_f64() * sb);
                dot += x * y;
                na += x * x;
                nb += y * y;
            });
            (dot, na, nb)
        })
        .collect()
}

/// Cosine distances of validated arrays (no checks).
pub(super) fn cosine_distances_unchecked<
    F: Float,
    S1: Data<Elem = F>,
    S2: Data<Elem = F>,
    D: RemoveAxis,
>(
    a: &ArrayBase<S1, D>,
    b: &ArrayBase<S2, D>,
    variant: CosineVariant,
) -> SampleStats {
    SampleStats::from_values(
        per_sample_sums(a, b)
            .into_iter()
            .map(|(dot, na, nb)| cosine_from_sums(dot, na, nb).map(|c| variant.distance(c)))
            .collect(),
    )
}

/// Per-sample cosine distances between two `[samples, …]` arrays of equal shape, every sample
/// flattened into a vector:
///
/// ```text
/// d_i = 1 − cos⟨a_i, b_i⟩          (CosineVariant::Signed)
/// d_i = 1 − |cos⟨a_i, b_i⟩|        (CosineVariant::Absolute)
/// cos⟨u, v⟩ = ⟨u, v⟩ / (‖u‖ ‖v‖)
/// ```
///
/// with their mean and population standard deviation ([`SampleStats`]). A sample with
/// `‖a_i‖ = 0` or `‖b_i‖ = 0` has no cosine: it is skipped (`None`) and counted in
/// [`SampleStats::skipped`]. Sums are accumulated in f64, each vector first divided by a power
/// of two near its largest magnitude (as BLAS `nrm2` scales), so features of any finite
/// magnitude work (1e-300 or 1e300 alike: `d(s a, s b) = d(a, b)` for every finite `s ≠ 0`);
/// the cosine is clamped to `[−1, 1]`, so `d(u, s u) = 0` up to rounding for `s > 0` and
/// `d(u, u) = 0` exactly.
/// Accepts any dimension (`Array2`, `ArrayD`, owned or views). Costs `O(len)`.
///
/// This is the LLFC paper's baseline `1 − cos⟨f(θ_A; x), f(θ_B; x)⟩` when given the features
/// of two networks (Zhou et al. 2023).
///
/// # Errors
/// [`Error::ShapeMismatch`](crate::Error::ShapeMismatch) if the shapes differ;
/// [`Error::EmptyInput`](crate::Error::EmptyInput) if there is no sample or no feature;
/// [`Error::NonFinite`](crate::Error::NonFinite) for a NaN or ±∞ entry;
/// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for 0-dimensional arrays.
///
/// # Examples
/// ```
/// use llfc::metrics::{cosine_distances, CosineVariant};
/// use ndarray::array;
/// let a = array![[1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [2.0, 0.0]];
/// let b = array![[0.0, 1.0], [2.0, 2.0], [1.0, 0.0], [-1.0, 0.0]];
/// let d = cosine_distances(&a, &b, CosineVariant::Signed)?;
/// // orthogonal, proportional, skipped (zero vector), opposite
/// assert_eq!(d.values, [Some(1.0), Some(0.0), None, Some(2.0)]);
/// assert_eq!((d.count, d.skipped, d.mean), (3, 1, Some(1.0)));
/// let abs = cosine_distances(&a, &b, CosineVariant::Absolute)?;
/// assert_eq!(abs.values[3], Some(0.0));
/// # Ok::<(), llfc::Error>(())
/// ```
pub fn cosine_distances<F: Float, S1: Data<Elem = F>, S2: Data<Elem = F>, D: RemoveAxis>(
    a: &ArrayBase<S1, D>,
    b: &ArrayBase<S2, D>,
    variant: CosineVariant,
) -> Result<SampleStats> {
    check_features(a, "features a")?;
    check_same(a, b, "features b", "features a")?;
    Ok(cosine_distances_unchecked(a, b, variant))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_of_a_vector_with_itself_is_exactly_one() {
        for nu in [1e-300, 1e-10, 0.3, 7.0, 1e200, f64::MAX] {
            assert_eq!(cosine_from_sums(nu, nu, nu), Some(1.0), "{nu}");
        }
        assert_eq!(cosine_from_sums(0.0, 0.0, 1.0), None);
        assert_eq!(cosine_from_sums(1.0 + 1e-15, 1.0, 1.0), Some(1.0));
    }

    #[test]
    fn empty_summary_has_no_mean() {
        let s = SampleStats::from_values(vec![None, None]);
        assert_eq!((s.count, s.skipped, s.mean, s.std), (0, 2, None, None));
        assert!(s.mean_or_nan().is_nan() && s.std_or_nan().is_nan());
        assert_eq!(s.to_string(), "no sample (2 skipped)");
    }

    #[test]
    fn display_shows_mean_std_and_counts() {
        // Values 1 and 3: mean 2, population std 1.
        let s = SampleStats::from_values(vec![Some(1.0), None, Some(3.0)]);
        assert_eq!(format!("{s:.3}"), "2.000 ± 1.000 (n = 2, 1 skipped)");
        let t = SampleStats::from_values(vec![Some(0.5)]);
        assert_eq!(t.to_string(), "0.5 ± 0 (n = 1)");
        assert_eq!((t.mean_or_nan(), t.std_or_nan()), (0.5, 0.0));
    }
}
