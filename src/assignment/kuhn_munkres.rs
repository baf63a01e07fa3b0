//! The [`Solver::KuhnMunkres`](super::Solver::KuhnMunkres) backend: `pathfinding`'s Hungarian
//! algorithm on costs quantised to `i64` (see the variant's docs for the error bound).

use pathfinding::matrix::Matrix;

use super::native::Costs;
use crate::error::{Error, Result};
use crate::float::Float;

/// Quantisation of a finite cost range to integers `0..=k` with a power-of-two step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Quantizer {
    /// Smallest finite cost.
    pub min: f64,
    /// Step `s` (a power of two, at least the smallest positive subnormal).
    pub step: f64,
    /// Largest admissible integer `K`.
    pub k: i64,
}

impl Quantizer {
    /// The quantiser for finite costs in `[min, max]` and an `n × m` (`n <= m`) problem:
    /// `K = ⌊2^60 / (n (n + 1))⌋`, `s = 2^⌈log2((max − min) / K)⌉` (`s = 1` when `max = min`).
    pub(super) fn new(min: f64, max: f64, n: usize) -> Self {
        let n = n as f64;
        #[allow(clippy::cast_possible_truncation)]
        let k = (2f64.powi(60) / (n * (n + 1.0))).floor().max(1.0) as i64;
        // Half-range first: max − min may overflow for extreme finite costs.
        let half = 0.5 * max - 0.5 * min;
        let step = if half > 0.0 {
            #[allow(clippy::cast_possible_truncation)]
            let e = (2.0 * (half / k as f64)).log2().ceil() as i32;
            let mut s = 2f64.powi(e.clamp(-1074, 1023));
            // Guard log2 rounding: make sure the range fits in K steps.
            while (max / s - min / s) > k as f64 {
                s *= 2.0;
            }
            s.max(f64::from_bits(1))
        } else {
            1.0
        };
        Self { min, step, k }
    }

    /// `round((x − min) / s)`, computed as `x/s − min/s` (exact scalings by a power of two).
    pub(super) fn quantize(&self, x: f64) -> i64 {
        #[allow(clippy::cast_possible_truncation)]
        let q = (x / self.step - self.min / self.step).round() as i64;
        q.clamp(0, self.k)
    }
}

/// Solve the internal problem (`nr <= nc`, minimise, `+∞` forbidden) with
/// `pathfinding::kuhn_munkres::kuhn_munkres_min`; returns the row → column map.
///
/// # Errors
/// [`Error::Infeasible`] if the optimum of the quantised problem uses a forbidden entry (the
/// penalty exceeds the cost of any finite assignment, so then none exists).
pub(super) fn solve<T: Float, const NEG: bool>(c: Costs<'_, T>) -> Result<Vec<usize>> {
    let ld = |x: T| if NEG { -x.as_f64() } else { x.as_f64() };
    let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
    for &x in c.data {
        let y = ld(x);
        if y.is_finite() {
            min = min.min(y);
            max = max.max(y);
        }
    }
    if min > max {
        return Err(Error::Infeasible); // every entry is forbidden
    }
    let qz = Quantizer::new(min, max, c.nr);
    let penalty = (qz.k + 1) * (i64::try_from(c.nr).unwrap_or(i64::MAX) + 1);
    let data: Vec<i64> = c
        .data
        .iter()
        .map(|&x| {
            let y = ld(x);
            if y.is_finite() {
                qz.quantize(y)
            } else {
                penalty
            }
        })
        .collect();
    let weights = Matrix::from_vec(c.nr, c.nc, data).expect("nr · nc entries");
    let (_, col4row) = pathfinding::kuhn_munkres::kuhn_munkres_min(&weights);
    if col4row
        .iter()
        .enumerate()
        .any(|(i, &j)| !ld(c.data[i * c.nc + j]).is_finite())
    {
        return Err(Error::Infeasible);
    }
    Ok(col4row)
}

#[cfg(test)]
mod tests {
    use super::Quantizer;

    #[test]
    fn integers_quantise_exactly() {
        let q = Quantizer::new(-7.0, 93.0, 10);
        assert!(q.step <= 1.0);
        for x in [-7.0, 0.0, 5.0, 93.0] {
            #[allow(clippy::cast_precision_loss)]
            let back = q.quantize(x) as f64 * q.step + q.min;
            assert_eq!(back, x);
        }
    }

    #[test]
    fn extreme_ranges_do_not_overflow() {
        let q = Quantizer::new(-1.7e308, 1.7e308, 100);
        assert!(q.step.is_finite() && q.step > 0.0);
        assert_eq!(q.quantize(-1.7e308), 0);
        assert!(q.quantize(1.7e308) <= q.k);
        let t = Quantizer::new(1e-310, 3e-310, 5);
        assert!(t.step > 0.0);
        assert!(t.quantize(3e-310) > t.quantize(1e-310));
        let same = Quantizer::new(4.0, 4.0, 3);
        assert_eq!(same.quantize(4.0), 0);
    }
}
