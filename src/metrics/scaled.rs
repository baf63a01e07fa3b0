//! Scale-safe sums of squares and products.
//!
//! Features of magnitude 1e200 square to infinity and features of 1e-170 square to zero in
//! f64. As BLAS `nrm2` does, every vector is divided by a power of two close to its largest
//! magnitude before anything is squared or multiplied: the division is exact, the sums stay
//! near 1, and quantities that do not depend on the scale (cosines, normalised distances) come
//! out the same for `x` and for `s x`, for every finite `s ≠ 0` (bit for bit when `s` is a power
//! of two). Sums that are combined across vectors with different scales carry the exponent of
//! their scale and are brought to a common one with [`ldexp`].

pub(super) use crate::float::max_abs;

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
}
