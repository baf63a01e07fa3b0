//! Scale-safe sums of squares and products.
//!
//! Features of magnitude 1e200 square to infinity and features of 1e-170 square to zero in
//! f64. As BLAS `nrm2` does, every vector is divided by a power of two close to its largest
//! magnitude before anything is squared or multiplied: the division is exact, the sums stay
//! near 1, and quantities that do not depend on the scale (cosines, normalised distances) come
//! out the same for `x` and for `s x`, for every finite `s ≠ 0` (bit for bit when `s` is a power
//! of two). Sums that are combined across vectors with different scales carry the exponent of
//! their scale and are brought to a common one with [`ldexp`].
//!
//! The per-vector sums run over [`LANES`] interleaved partial sums ([`lane_sums`]): a fixed
//! order of additions (so a result depends on the values alone, never on the memory layout or
//! the number of threads) that the compiler turns into vector instructions, where one running
//! sum would wait for every addition in turn.

use std::borrow::Cow;

use ndarray::{ArrayBase, Data, Dimension};

pub(super) use crate::float::max_abs;
use crate::float::Float;

/// Interleaved partial sums of [`lane_sums`] (one AVX-512 register of f64).
const LANES: usize = 8;

/// The elements of `a` in logical (row-major) order as a slice: borrowed when `a` is in
/// standard layout, else copied.
pub(super) fn contiguous<F: Float, S: Data<Elem = F>, D: Dimension>(
    a: &ArrayBase<S, D>,
) -> Cow<'_, [F]> {
    a.as_slice()
        .map_or_else(|| Cow::Owned(a.iter().copied().collect()), Cow::Borrowed)
}

/// `Σ_k term(k)` of every component of `term`'s `M` values, `k = 0, …, n − 1`: element `k` is
/// added to partial sum `k mod LANES` (in increasing `k`), and the partial sums are then added
/// pairwise, `((s₀ + s₁) + (s₂ + s₃)) + ((s₄ + s₅) + (s₆ + s₇))`. A fixed order, as accurate as
/// one running sum or better (each partial sum has `n / 8` terms).
pub(super) fn lane_sums<const M: usize>(n: usize, term: impl Fn(usize) -> [f64; M]) -> [f64; M] {
    let mut lanes = [[0.0f64; LANES]; M];
    let full = n - n % LANES;
    for base in (0..full).step_by(LANES) {
        for lane in 0..LANES {
            let t = term(base + lane);
            for (sums, v) in lanes.iter_mut().zip(t) {
                sums[lane] += v;
            }
        }
    }
    for k in full..n {
        let t = term(k);
        for (sums, v) in lanes.iter_mut().zip(t) {
            sums[k - full] += v;
        }
    }
    lanes.map(|s| ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7])))
}

/// `max_k |x_k|` in f64 (0 for an empty slice; NaN entries are ignored, as by
/// [`max_abs`]): the same value as [`max_abs`], the maximum being exact in any order, over
/// [`LANES`] partial maxima so that the loop vectorises.
pub(super) fn max_abs_lanes<F: Float>(x: &[F]) -> f64 {
    let mut lanes = [0.0f64; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (m, v) in lanes.iter_mut().zip(chunk) {
            // `m.max(a)` for every `a` (a NaN `a` keeps `m`), written as a comparison that
            // compiles to vector maxima.
            let a = v.as_f64().abs();
            *m = if a > *m { a } else { *m };
        }
    }
    let tail = chunks
        .remainder()
        .iter()
        .fold(0.0f64, |m, v| m.max(v.as_f64().abs()));
    lanes.iter().fold(tail, |m, &v| m.max(v))
}

/// Smallest and largest exponent used for a scale: `2^e` is a normal f64 for both signs.
const MAX_EXP: i32 = 1022;

/// The exponent `e` of a scale for values of largest magnitude `max`: `max · 2^−e ∈ [1, 2)`
/// up to rounding, clamped to `±1022` (subnormal or infinite `max`); 0 for `max = 0` or NaN.
pub(super) fn exponent(max: f64) -> i32 {
    if max.is_nan() || max == 0.0 {
        return 0;
    }
    if max.is_infinite() {
        return MAX_EXP;
    }
    // |log2| ≤ 1075 for a positive finite f64: the cast is exact.
    #[allow(clippy::cast_possible_truncation)]
    let e = max.log2().floor() as i32;
    e.clamp(-MAX_EXP, MAX_EXP)
}

/// `2^e` exactly, for `|e| ≤ 1022`.
pub(super) fn pow2(e: i32) -> f64 {
    let e = e.clamp(-MAX_EXP, MAX_EXP);
    // 1023 + e ∈ [1, 2045]: the biased exponent of a normal number.
    #[allow(clippy::cast_sign_loss)]
    f64::from_bits(((1023 + e) as u64) << 52)
}

/// `x · 2^e` for any `e`, in exact steps (rounded at most once, where the result is subnormal,
/// or saturating to 0 or ±∞ where it is out of range).
pub(super) fn ldexp(mut x: f64, mut e: i32) -> f64 {
    while e > MAX_EXP {
        x *= pow2(MAX_EXP);
        e -= MAX_EXP;
    }
    while e < -MAX_EXP {
        // Stop early at 0 (also keeps the loop short for huge |e|).
        if x == 0.0 {
            return x;
        }
        x *= pow2(-MAX_EXP);
        e += MAX_EXP;
    }
    x * pow2(e)
}

/// `(sums, exponents)` brought to the largest exponent: `Σ_i ldexp(s_i, k (e_i − E))` with
/// `E = max e_i`, and `E` (`k` = 1 for products of one scaled factor, 2 for squares or
/// products of two equally scaled factors).
pub(super) fn common(terms: impl IntoIterator<Item = (f64, i32)> + Clone, k: i32) -> (f64, i32) {
    let top = terms.clone().into_iter().map(|(_, e)| e).max().unwrap_or(0);
    let sum = terms
        .into_iter()
        .map(|(s, e)| ldexp(s, k * (e - top)))
        .sum();
    (sum, top)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_are_exact_powers_of_two() {
        for x in [
            1.0,
            1.5,
            3.0,
            1e-300,
            5e-324,
            1e300,
            f64::MAX,
            f64::MIN_POSITIVE,
        ] {
            let e = exponent(x);
            let y = x * pow2(-e);
            assert!(y > 2f64.powi(-60) && y < 4.0, "{x}: {y}");
            assert_eq!(ldexp(y, e), x, "{x}");
        }
        assert_eq!(ldexp(1.0, -1074), 5e-324);
        assert_eq!(ldexp(1.0, 1023), 2f64.powi(1023));
        assert_eq!(ldexp(3.0, -5000), 0.0);
        assert_eq!(ldexp(1.0, 5000), f64::INFINITY);
        assert_eq!(exponent(0.0), 0);
    }

    /// The documented order, written out independently: element k into partial sum k mod 8,
    /// then the partial sums pairwise.
    fn reference(values: &[f64]) -> f64 {
        let mut s = [0.0; 8];
        for (k, v) in values.iter().enumerate() {
            s[k % 8] += v;
        }
        ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]))
    }

    #[test]
    fn lane_sums_follow_the_documented_order() {
        // Values of many magnitudes, so that a different order would round differently.
        let values: Vec<f64> = (0..45)
            .map(|k| ((k * 37 % 11) as f64 - 5.0) * 10f64.powi(k % 7 - 3) + 1.0 / (k + 3) as f64)
            .collect();
        for n in 0..values.len() {
            let v = &values[..n];
            let [plain, squared] = lane_sums(n, |k| [v[k], v[k] * v[k]]);
            let sq: Vec<f64> = v.iter().map(|x| x * x).collect();
            assert_eq!(plain.to_bits(), reference(v).to_bits(), "n = {n}");
            assert_eq!(squared.to_bits(), reference(&sq).to_bits(), "n = {n}");
            // And the sum itself: exact to a few roundings of the largest partial sums.
            let exact: f64 = v.iter().sum();
            assert!((plain - exact).abs() <= 1e-12 * v.iter().map(|x| x.abs()).sum::<f64>());
        }
        // Integers sum exactly in any order.
        let ints: Vec<f64> = (0..1001).map(|k| f64::from(k % 17) - 8.0).collect();
        let [total] = lane_sums(ints.len(), |k| [ints[k]]);
        assert_eq!(total, ints.iter().sum::<f64>());
    }

    #[test]
    fn max_abs_lanes_equals_max_abs() {
        let specials = [
            0.0,
            -0.0,
            f64::NAN,
            -3.5,
            2.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e-310,
        ];
        for n in 0..30 {
            for shift in 0..specials.len() {
                let v: Vec<f64> = (0..n)
                    .map(|k| specials[(k * 5 + shift) % specials.len()] * (k as f64 + 1.0))
                    .collect();
                assert_eq!(max_abs_lanes(&v).to_bits(), max_abs(&v).to_bits(), "{v:?}");
                let f: Vec<f32> = v.iter().map(|&x| x as f32).collect();
                assert_eq!(max_abs_lanes(&f).to_bits(), max_abs(&f).to_bits(), "{f:?}");
            }
        }
        assert_eq!(max_abs_lanes::<f64>(&[]), 0.0);
        assert_eq!(max_abs_lanes(&[f64::NAN; 9]), 0.0);
    }
}
