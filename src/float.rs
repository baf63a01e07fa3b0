//! The crate's floating-point scalar trait.

use std::fmt::{Debug, Display};
use std::iter::Sum;

use ndarray::{ArrayBase, Data, Dimension};

/// Floating-point scalars supported by `llfc`: implemented for [`f32`] and [`f64`].
///
/// Tensor functions are generic over `F: Float`. Matrix products run in `F` (so f32 models stay
/// fast), while scalar reductions of metrics and streaming statistics accumulate in `f64`, which
/// is why the trait offers lossless conversion [`Float::as_f64`] and rounding [`Float::from_f64`].
pub trait Float:
    num_traits::Float
    + ndarray::LinalgScalar
    + ndarray::ScalarOperand
    + Sum
    + Default
    + Debug
    + Display
    + Send
    + Sync
    + 'static
{
    /// Name of the type as NumPy spells its dtype (`"float32"`, `"float64"`).
    const DTYPE: &'static str;
    /// Convert from `f64`, rounding to nearest.
    fn from_f64(x: f64) -> Self;
    /// Convert to `f64` (exact for both f32 and f64).
    fn as_f64(self) -> f64;
}

impl Float for f32 {
    const DTYPE: &'static str = "float32";
    #[inline]
    #[allow(clippy::cast_possible_truncation)]
    fn from_f64(x: f64) -> Self {
        x as f32
    }
    #[inline]
    fn as_f64(self) -> f64 {
        f64::from(self)
    }
}

impl Float for f64 {
    const DTYPE: &'static str = "float64";
    #[inline]
    fn from_f64(x: f64) -> Self {
        x
    }
    #[inline]
    fn as_f64(self) -> f64 {
        self
    }
}

/// Whether every entry of `x` is finite: through a slice when `x` is in standard layout, without
/// early exit, so that the loop vectorises (element by element otherwise).
pub(crate) fn all_finite<F: Float, S: Data<Elem = F>, D: Dimension>(x: &ArrayBase<S, D>) -> bool {
    match x.as_slice() {
        Some(values) => values.iter().fold(true, |ok, v| ok & v.is_finite()),
        None => x.iter().all(|v| v.is_finite()),
    }
}

/// The largest magnitude of `values`, in f64 (0 for none).
pub(crate) fn max_abs<'a, F: Float + 'a>(values: impl IntoIterator<Item = &'a F>) -> f64 {
    values
        .into_iter()
        .fold(0.0, |m: f64, v| m.max(v.as_f64().abs()))
}

#[cfg(test)]
mod tests {
    use super::Float;

    #[test]
    fn f32_roundtrip_is_exact_through_f64() {
        for x in [0.0f32, -0.0, 1.5, f32::MIN_POSITIVE, f32::MAX, -3.25e-7] {
            assert_eq!(<f32 as Float>::from_f64(x.as_f64()).to_bits(), x.to_bits());
        }
        assert_eq!(<f32 as Float>::DTYPE, "float32");
        assert_eq!(<f64 as Float>::DTYPE, "float64");
    }
}
