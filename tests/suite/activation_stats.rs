//! Streaming activation statistics (`ActivationStats::update`) over many batches against a
//! direct two-pass computation on all the samples at once: batch sizes that cross the
//! 1024-row product chunks, features far from zero (a mean of 1e3 over a unit spread), f32 and
//! f64, strided views; and a failed update leaves the statistics unchanged.

use llfc::matching::activation::{ActivationStats, Statistic};
use llfc::Error;
use ndarray::{s, Array1, Array2, Axis};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// `[rows, cols]` with column `j` = 1000 + j + a uniform spread in [−(j + 1), j + 1]: large
/// means, small variances (where a naive `E[ab] − E[a]E[b]` loses ~6 digits).
fn offset_features(rows: usize, cols: usize, seed: u64) -> Array2<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Array2::from_shape_fn((rows, cols), |(_, j)| {
        let spread = j as f64 + 1.0;
        1000.0 + j as f64 + rng.random_range(-spread..spread)
    })
}

/// Covariance `[d_a, d_b]` and correlation of two sample matrices, by two passes in f64.
fn two_pass(a: &Array2<f64>, b: &Array2<f64>) -> (Array2<f64>, Array2<f64>) {
    let n = a.nrows() as f64;
    let (ma, mb): (Array1<f64>, Array1<f64>) =
        (a.mean_axis(Axis(0)).unwrap(), b.mean_axis(Axis(0)).unwrap());
    let (ca, cb) = (a - &ma, b - &mb);
    let cov = ca.t().dot(&cb) / n;
    let (sa, sb) = (
        ca.mapv(|v| v * v).sum_axis(Axis(0)).mapv(f64::sqrt),
        cb.mapv(|v| v * v).sum_axis(Axis(0)).mapv(f64::sqrt),
    );
    let corr = Array2::from_shape_fn(cov.dim(), |(i, j)| {
        ca.column(i).dot(&cb.column(j)) / (sa[i] * sb[j])
    });
    (cov, corr)
}

fn max_abs_diff(x: &Array2<f64>, y: &Array2<f64>) -> f64 {
    (x - y).mapv(f64::abs).fold(0.0f64, |m, &v| m.max(v))
}

const BATCHES: [usize; 5] = [1, 7, 1500, 300, 1025];

/// f64: covariances within 1e-10 of the two-pass values (entries up to ~50; each batch's
/// products round at ~1e-16 relative, the merges add a few more roundings of the same size),
/// correlations within 1e-12.
#[test]
fn many_f64_batches_equal_the_two_pass_statistics() {
    let total: usize = BATCHES.iter().sum();
    let a = offset_features(total, 6, 1);
    // B reads a strided view: every other column of a wider matrix.
    let wide = offset_features(total, 10, 2);
    let b = wide.slice(s![.., ..;2]).to_owned();
    let mut st = ActivationStats::new(6, 5);
    let mut start = 0;
    for len in BATCHES {
        let rows = s![start..start + len, ..];
        st.update(a.slice(rows), wide.slice(s![start..start + len, ..;2]))
            .unwrap();
        start += len;
    }
    assert_eq!(st.count(), total as u64);
    let (cov, corr) = two_pass(&a, &b);
    let got_cov = st.statistic(Statistic::Covariance).unwrap();
    let got_corr = st.statistic(Statistic::Correlation).unwrap();
    assert!(
        max_abs_diff(&got_cov, &cov) < 1e-10,
        "{}",
        max_abs_diff(&got_cov, &cov)
    );
    assert!(
        max_abs_diff(&got_corr, &corr) < 1e-12,
        "{}",
        max_abs_diff(&got_corr, &corr)
    );
}

/// f32 features: the products of each 1024-row chunk are computed in f32 (relative rounding
/// ~6e-8 per term, ~1e-5 of the largest product after 1024 terms in the worst case), the rest
/// in f64; the reference is the two-pass formula on the same f32 values widened to f64.
/// Correlations within 1e-4.
#[test]
fn many_f32_batches_equal_the_two_pass_statistics() {
    let total: usize = BATCHES.iter().sum();
    let a = offset_features(total, 4, 3).mapv(|v| (v - 1000.0) as f32);
    let b = offset_features(total, 3, 4).mapv(|v| (v - 1000.0) as f32);
    let mut st = ActivationStats::new(4, 3);
    let mut start = 0;
    for len in BATCHES {
        let rows = s![start..start + len, ..];
        st.update(a.slice(rows), b.slice(rows)).unwrap();
        start += len;
    }
    let (_, corr) = two_pass(&a.mapv(f64::from), &b.mapv(f64::from));
    let got = st.statistic(Statistic::Correlation).unwrap();
    assert!(
        max_abs_diff(&got, &corr) < 1e-4,
        "{}",
        max_abs_diff(&got, &corr)
    );
}

/// NaN, ±∞, and finite values whose products overflow even f64 are refused, and the
/// statistics gathered before are left exactly as they were.
#[test]
fn a_refused_batch_leaves_the_statistics_unchanged() {
    let a = offset_features(50, 3, 5);
    let b = offset_features(50, 3, 6);
    let mut st = ActivationStats::new(3, 3);
    st.update(a.slice(s![..20, ..]), b.slice(s![..20, ..]))
        .unwrap();
    let before = st.clone();
    for (bad, expect_non_finite) in [
        (f64::NAN, true),
        (f64::INFINITY, true),
        (-f64::INFINITY, true),
        (1e307, false),
    ] {
        let mut x = b.slice(s![20.., ..]).to_owned();
        x[[7, 1]] = bad;
        if !expect_non_finite {
            x.fill(bad); // column sums overflow to +inf on finite values
        }
        let err = st.update(a.slice(s![20.., ..]), x.view()).unwrap_err();
        if expect_non_finite {
            assert!(matches!(err, Error::NonFinite { .. }), "{bad}: {err}");
        } else {
            assert!(matches!(err, Error::InvalidArgument { .. }), "{bad}: {err}");
        }
        assert_eq!(st, before, "{bad}");
    }
}
