//! Streaming, mergeable per-unit mean and variance of features, accumulated in f64.

use ndarray::{Array1, ArrayView1, ArrayViewD, Axis, Ix2};

use crate::error::{Error, Result};
use crate::float::Float;

/// Per-unit count, mean and sum of squared deviations of features, accumulated in f64.
///
/// A feature batch is `[samples, units]` or a conv map `[samples, channels, h, w]`; for the
/// latter, every spatial position is a sample of its channel (the batch is viewed as
/// `[samples·h·w, channels]`, as BatchNorm2d does). Each batch is reduced with two passes
/// (mean, then `m = Σ (x − mean)²`) and batches are combined with Chan et al.'s update
///
/// ```text
/// n = n₁ + n₂,   δ = mean₂ − mean₁,   mean = mean₁ + δ n₂ / n,   m = m₁ + m₂ + δ² n₁ n₂ / n
/// ```
///
/// so statistics gathered on different batches, threads or machines merge exactly as if the
/// samples had been seen together (up to rounding). Memory is `O(units)`.
///
/// # Examples
/// ```
/// use llfc::repair::UnitStats;
/// use ndarray::array;
/// let mut st = UnitStats::new(2);
/// st.update(array![[1.0f32, 10.0], [3.0, 10.0]].view().into_dyn())?;
/// st.update(array![[5.0f32, 10.0]].view().into_dyn())?;
/// assert_eq!(st.count(), 3);
/// assert_eq!(st.mean().to_vec(), [3.0, 10.0]);
/// assert_eq!(st.variance().to_vec(), [8.0 / 3.0, 0.0]); // population variance
/// assert_eq!(st.unbiased_variance()?.to_vec(), [4.0, 0.0]);
/// # Ok::<(), llfc::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct UnitStats {
    n: u64,
    mean: Array1<f64>,
    m2: Array1<f64>,
}

impl UnitStats {
    /// Empty statistics of `units` units.
    #[must_use]
    pub fn new(units: usize) -> Self {
        Self {
            n: 0,
            mean: Array1::zeros(units),
            m2: Array1::zeros(units),
        }
    }

    /// The statistics of one batch of features (see [`UnitStats::update`]).
    ///
    /// # Errors
    /// As [`UnitStats::update`].
    pub fn from_features<F: Float>(features: ArrayViewD<'_, F>) -> Result<Self> {
        let units = features.shape().get(1).copied().unwrap_or(0);
        let mut st = Self::new(units);
        st.update(features)?;
        Ok(st)
    }

    /// Statistics given by their moments: `count` samples with per-unit `mean` and
    /// *population* variance `variance` (`Σ (x − mean)² / count`), e.g. read from a file
    /// written by another framework.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if `mean` and `variance` differ in length;
    /// [`Error::EmptyInput`] if `count` is 0; [`Error::NonFinite`] for a NaN or infinite entry;
    /// [`Error::InvalidArgument`] for a negative variance.
    pub fn from_moments(count: u64, mean: Array1<f64>, variance: &Array1<f64>) -> Result<Self> {
        if mean.len() != variance.len() {
            return Err(Error::ShapeMismatch {
                what: "unit statistics (variance versus mean)".into(),
                expected: vec![mean.len()],
                found: vec![variance.len()],
            });
        }
        if count == 0 {
            return Err(Error::EmptyInput {
                what: "unit statistics with a count of 0".into(),
            });
        }
        if mean.iter().chain(variance).any(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                what: "unit statistics (mean or variance)".into(),
            });
        }
        if let Some(v) = variance.iter().find(|&&v| v < 0.0) {
            return Err(Error::InvalidArgument {
                name: "variance",
                reason: format!("a variance must be non-negative, got {v}"),
            });
        }
        #[allow(clippy::cast_precision_loss)]
        let m2 = variance * count as f64;
        Ok(Self { n: count, mean, m2 })
    }

    /// Number of samples seen (for conv maps, `samples · h · w`).
    #[must_use]
    pub fn count(&self) -> u64 {
        self.n
    }

    /// Number of units (channels).
    #[must_use]
    pub fn units(&self) -> usize {
        self.mean.len()
    }

    /// Per-unit mean `μ` (zeros before any sample).
    #[must_use]
    pub fn mean(&self) -> ArrayView1<'_, f64> {
        self.mean.view()
    }

    /// Per-unit population variance `Σ (x − μ)² / n` (zeros before any sample).
    #[must_use]
    pub fn variance(&self) -> Array1<f64> {
        #[allow(clippy::cast_precision_loss)]
        let n = self.n.max(1) as f64;
        self.m2.mapv(|m| m / n)
    }

    /// Per-unit population standard deviation `σ = √(Σ (x − μ)² / n)`.
    #[must_use]
    pub fn std(&self) -> Array1<f64> {
        self.variance().mapv(f64::sqrt)
    }

    /// Per-unit unbiased variance `Σ (x − μ)² / (n − 1)` (what PyTorch's BatchNorm stores as
    /// `running_var`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] with fewer than two samples.
    pub fn unbiased_variance(&self) -> Result<Array1<f64>> {
        if self.n < 2 {
            return Err(Error::InvalidArgument {
                name: "unit statistics",
                reason: format!(
                    "an unbiased variance needs at least 2 samples, got {}",
                    self.n
                ),
            });
        }
        #[allow(clippy::cast_precision_loss)]
        let d = (self.n - 1) as f64;
        Ok(self.m2.mapv(|m| m / d))
    }

    /// Add a batch of features: `[samples, units]` or `[samples, channels, h, w]` (channel
    /// statistics over samples and positions). Costs `O(len)`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a rank other than 2 or 4; [`Error::ShapeMismatch`] if
    /// axis 1 differs from [`UnitStats::units`]; [`Error::EmptyInput`] for a batch without
    /// samples (or with empty maps); [`Error::NonFinite`] for a NaN or infinite feature.
    pub fn update<F: Float>(&mut self, batch: ArrayViewD<'_, F>) -> Result<()> {
        let shape = batch.shape().to_vec();
        if shape.len() != 2 && shape.len() != 4 {
            return Err(Error::InvalidArgument {
                name: "features",
                reason: format!(
                    "expected [samples, units] or [samples, channels, h, w], got shape {shape:?}"
                ),
            });
        }
        if shape[1] != self.units() {
            let mut expected = shape.clone();
            expected[1] = self.units();
            return Err(Error::ShapeMismatch {
                what: "feature batch (axis 1 is the units)".into(),
                expected,
                found: shape,
            });
        }
        let per_unit = batch.len() / shape[1].max(1);
        if batch.is_empty() || per_unit == 0 {
            return Err(Error::EmptyInput {
                what: format!("feature batch of shape {shape:?}"),
            });
        }
        let units = self.units();
        // Pass 1: sums (and the finiteness check); pass 2: squared deviations. Each sample is
        // `[units]` (rank 2, read as a row) or `[channels, h, w]` (one plane per channel).
        // Rank 2 is read through a two-dimensional view: its rows iterate as slices, where
        // `IxDyn` rows would go through the generic (slow) iterator; same values, same order.
        let rows = batch.view().into_dimensionality::<Ix2>().ok();
        let mut sum = vec![0.0f64; units];
        if let Some(rows) = &rows {
            for sample in rows.rows() {
                zip_row(&mut sum, sample, |s, v, _| *s += v);
            }
        }
        for sample in batch.outer_iter().filter(|_| rows.is_none()) {
            for (s, plane) in sum.iter_mut().zip(sample.axis_iter(Axis(0))) {
                for &v in &plane {
                    *s += v.as_f64();
                }
            }
        }
        if sum.iter().any(|s| !s.is_finite()) {
            return Err(Error::NonFinite {
                what: "feature batch".into(),
            });
        }
        #[allow(clippy::cast_precision_loss)]
        let nb = per_unit as f64;
        let mean: Array1<f64> = sum.iter().map(|s| s / nb).collect();
        let mut m2 = Array1::<f64>::zeros(units);
        if let Some(rows) = &rows {
            let mean = mean.as_slice().expect("a new array is contiguous");
            let m2 = m2.as_slice_mut().expect("a new array is contiguous");
            for sample in rows.rows() {
                zip_row(m2, sample, |m, v, k| {
                    let d = v - mean[k];
                    *m += d * d;
                });
            }
        }
        for sample in batch.outer_iter().filter(|_| rows.is_none()) {
            for ((m, &mu), plane) in m2.iter_mut().zip(&mean).zip(sample.axis_iter(Axis(0))) {
                for &v in &plane {
                    let d = v.as_f64() - mu;
                    *m += d * d;
                }
            }
        }
        let other = Self {
            n: per_unit as u64,
            mean,
            m2,
        };
        self.merge(&other)
    }

    /// Merge statistics gathered on other samples (Chan et al.'s update above).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if the numbers of units differ.
    pub fn merge(&mut self, other: &Self) -> Result<()> {
        if self.units() != other.units() {
            return Err(Error::ShapeMismatch {
                what: "merged unit statistics".into(),
                expected: vec![self.units()],
                found: vec![other.units()],
            });
        }
        if other.n == 0 {
            return Ok(());
        }
        if self.n == 0 {
            *self = other.clone();
            return Ok(());
        }
        #[allow(clippy::cast_precision_loss)]
        let (n1, n2) = (self.n as f64, other.n as f64);
        let n = n1 + n2;
        for (((mu, m), &mu2), &m2) in self
            .mean
            .iter_mut()
            .zip(self.m2.iter_mut())
            .zip(&other.mean)
            .zip(&other.m2)
        {
            let delta = mu2 - *mu;
            *m += m2 + delta * delta * n1 * n2 / n;
            *mu += delta * n2 / n;
        }
        self.n += other.n;
        Ok(())
    }
}

/// `f(acc[k], row[k] as f64, k)` for every unit `k` in order, through a slice when the row is
/// contiguous (so that the loop vectorises); the same operations in the same order either way.
fn zip_row<F: Float>(
    acc: &mut [f64],
    row: ArrayView1<'_, F>,
    mut f: impl FnMut(&mut f64, f64, usize),
) {
    match row.as_slice() {
        Some(xs) => acc
            .iter_mut()
            .zip(xs)
            .enumerate()
            .for_each(|(k, (a, &v))| f(a, v.as_f64(), k)),
        None => acc
            .iter_mut()
            .zip(&row)
            .enumerate()
            .for_each(|(k, (a, &v))| f(a, v.as_f64(), k)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array2, Array4};

    #[test]
    fn merging_batches_equals_one_pass() {
        let x = Array2::from_shape_fn((37, 3), |(i, j)| ((i * 7 + j * 3) as f64).sin() * 5.0 + 2.0);
        let all = UnitStats::from_features(x.view().into_dyn()).unwrap();
        let mut parts = UnitStats::new(3);
        for rows in [0..5, 5..6, 6..30, 30..37] {
            parts
                .update(x.slice(ndarray::s![rows, ..]).into_dyn())
                .unwrap();
        }
        assert_eq!(parts.count(), 37);
        for k in 0..3 {
            let col = x.column(k);
            let mu = col.sum() / 37.0;
            let var = col.iter().map(|v| (v - mu) * (v - mu)).sum::<f64>() / 37.0;
            assert!((all.mean()[k] - mu).abs() < 1e-13 && (parts.mean()[k] - mu).abs() < 1e-13);
            assert!((all.variance()[k] - var).abs() < 1e-12);
            assert!((parts.variance()[k] - var).abs() < 1e-12);
        }
    }

    #[test]
    fn conv_maps_are_channel_statistics() {
        let x = Array4::from_shape_fn((2, 3, 2, 2), |(n, c, h, w)| (n + 10 * c + h * w) as f32);
        let st = UnitStats::from_features(x.view().into_dyn()).unwrap();
        assert_eq!((st.count(), st.units()), (8, 3));
        // Channel c holds 10c + {0, 0, 0, 1} (n = 0) and 10c + {1, 1, 1, 2} (n = 1): mean
        // 10c + 0.75, population variance (3·0.75² + 4·0.25² + 1.25²) / 8 = 0.4375.
        for c in 0..3 {
            assert!((st.mean()[c] - (10.0 * c as f64 + 0.75)).abs() < 1e-12);
            assert!((st.variance()[c] - 0.4375).abs() < 1e-12);
        }
        assert!(UnitStats::from_features(
            ndarray::Array3::<f32>::zeros((2, 2, 2)).view().into_dyn()
        )
        .is_err());
        let mut nan = x.clone();
        nan[[1, 2, 0, 1]] = f32::NAN;
        assert!(matches!(
            UnitStats::from_features(nan.view().into_dyn()),
            Err(Error::NonFinite { .. })
        ));
    }
}
