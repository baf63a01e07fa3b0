//! Integration tests of linear-mode-connectivity curves and barriers through the public API.
//!
//! Tolerances: barriers are differences of O(1) values on grids of ≤ 101 points; each excess
//! `v(α) − (α v(1) + (1 − α) v(0))` carries a few ulps of rounding, so `TOL = 1e-12` bounds it
//! with a wide margin. Values that are exact in binary floating point use `assert_eq!`.

use approx::assert_abs_diff_eq;
use llfc::lmc::{
    barrier, curve, mlp_curve, mlp_curve_and_report, uniform_grid, Barrier, BarrierKind, Curve,
};
use llfc::metrics::{llfc_report_mlp, CosineVariant};
use llfc::{mlp, Error, Params};
use ndarray::Array2;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

type TestResult = Result<(), Error>;

const TOL: f64 = 1e-12;

#[test]
fn uniform_grid_is_exact_at_the_endpoints() -> TestResult {
    assert_eq!(uniform_grid(2)?, [0.0, 1.0]);
    assert_eq!(uniform_grid(3)?, [0.0, 0.5, 1.0]);
    let g = uniform_grid(101)?;
    assert_eq!((g[0], g[50], g[100]), (0.0, 0.5, 1.0));
    assert!(g.windows(2).all(|w| w[0] < w[1]));
    for n in [0, 1] {
        assert!(matches!(
            uniform_grid(n),
            Err(Error::InvalidArgument { name: "n", .. })
        ));
    }
    Ok(())
}

#[test]
fn linear_curve_has_no_barrier() -> TestResult {
    let alphas = uniform_grid(21)?;
    let (v0, v1) = (0.7, 2.3);
    let line: Vec<f64> = alphas.iter().map(|a| v1 * a + v0 * (1.0 - a)).collect();
    let b = barrier(&alphas, &line, BarrierKind::Interpolated)?;
    assert_abs_diff_eq!(b.height, 0.0, epsilon = TOL);
    // Midpoint variant: the largest value (v(1) = 2.3) minus the mean (1.5).
    let m = barrier(&alphas, &line, BarrierKind::Midpoint)?;
    assert_abs_diff_eq!(m.height, 0.8, epsilon = TOL);
    assert_eq!((m.alpha, m.index), (1.0, 20));
    Ok(())
}

#[test]
fn bump_barrier_is_its_height_at_the_arg_max() -> TestResult {
    // v = line + bump; the bump peaks at α = 0.3 with height 0.9.
    let alphas = uniform_grid(11)?;
    let bump = [0.0, 0.2, 0.5, 0.9, 0.6, 0.3, 0.1, 0.0, 0.0, 0.0, 0.0];
    let v: Vec<f64> = alphas
        .iter()
        .zip(bump)
        .map(|(a, h)| 1.0 + 2.0 * a + h)
        .collect();
    let b = barrier(&alphas, &v, BarrierKind::Interpolated)?;
    assert_abs_diff_eq!(b.height, 0.9, epsilon = TOL);
    assert_eq!((b.alpha, b.index), (alphas[3], 3));
    // Midpoint: max v − ½ (1 + 3) = v(1) − 2 = 1 here (the slope dominates the bump).
    let m = barrier(&alphas, &v, BarrierKind::Midpoint)?;
    assert_abs_diff_eq!(m.height, 1.0, epsilon = TOL);
    // Flat endpoints: both variants agree.
    let flat: Vec<f64> = bump.iter().map(|h| 0.5 + h).collect();
    let m = barrier(&alphas, &flat, BarrierKind::Midpoint)?;
    assert_abs_diff_eq!(m.height, 0.9, epsilon = TOL);
    assert_eq!(m.index, 3);
    Ok(())
}

#[test]
fn unsorted_grid_and_ties() -> TestResult {
    let alphas = [0.5, 1.0, 0.25, 0.0, 0.75];
    let v = [3.0, 1.0, 3.0, 1.0, 2.0];
    let b = barrier(&alphas, &v, BarrierKind::Interpolated)?;
    // Ties at α = 0.5 and α = 0.25 (both excess 2): the first in grid order wins.
    assert_eq!(
        b,
        Barrier {
            height: 2.0,
            alpha: 0.5,
            index: 0
        }
    );
    Ok(())
}

#[test]
fn barrier_grid_validation() {
    let kind = BarrierKind::Interpolated;
    let invalid = |r: Result<Barrier, Error>| matches!(r, Err(Error::InvalidArgument { .. }));
    assert!(invalid(barrier(&[0.0, 0.5], &[1.0, 2.0], kind)), "no α = 1");
    assert!(invalid(barrier(&[0.5, 1.0], &[1.0, 2.0], kind)), "no α = 0");
    assert!(invalid(barrier(
        &[0.0, 1e-17, 1.0 - 1e-16],
        &[1.0, 2.0, 1.0],
        kind
    )));
    assert!(
        invalid(barrier(&[0.0, 0.5, 0.5, 1.0], &[1.0; 4], kind)),
        "repeated α"
    );
    assert!(invalid(barrier(&[0.0, f64::NAN, 1.0], &[1.0; 3], kind)));
    assert!(invalid(barrier(
        &[0.0, f64::INFINITY, 1.0],
        &[1.0; 3],
        kind
    )));
    assert!(matches!(
        barrier(
            &[0.0, 0.5, 1.0],
            &[1.0, f64::NAN, 1.0],
            BarrierKind::Midpoint
        ),
        Err(Error::NonFinite { .. })
    ));
    assert!(matches!(
        barrier(&[0.0, 1.0], &[1.0, 2.0, 3.0], kind),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        barrier(&[], &[], kind),
        Err(Error::EmptyInput { .. })
    ));
}

#[test]
fn generic_curve_keeps_grid_order_and_reports_the_first_error() -> TestResult {
    let alphas = [1.0, 0.0, 0.5, 0.25];
    let c = curve(&alphas, |a| Ok((a * a, 1.0 - a)))?;
    assert_eq!(c.alphas, alphas);
    assert_eq!(c.loss, [1.0, 0.0, 0.25, 0.0625]);
    assert_eq!(c.error, [0.0, 1.0, 0.5, 0.75]);
    assert_eq!((c.len(), c.is_empty()), (4, false));
    // Failures at α = 0.5 and 0.25: the error of the first in grid order (0.5) is returned,
    // whatever the thread count.
    let failing = |a: f64| {
        if (0.2..0.6).contains(&a) {
            Err(Error::InvalidArgument {
                name: "alpha",
                reason: format!("{a}"),
            })
        } else {
            Ok((a, a))
        }
    };
    for threads in [1, 3] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        match pool.install(|| curve(&alphas, failing)) {
            Err(Error::InvalidArgument { reason, .. }) => assert_eq!(reason, "0.5"),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(matches!(
        curve(&alphas, |a| Ok((1.0 / (a - 0.5), 0.0))),
        Err(Error::NonFinite { .. })
    ));
    assert!(matches!(
        curve(&[0.0, f64::NAN], |a| Ok((a, a))),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        curve(&[], |a| Ok((a, a))),
        Err(Error::EmptyInput { .. })
    ));
    Ok(())
}

/// Two random 2-16-16-2 MLPs and a labelled XOR-like set.
fn setup() -> (Params<f64>, Params<f64>, Array2<f64>, Vec<usize>) {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let a = mlp::init(&[2, 16, 16, 2], &mut rng).unwrap();
    let b = mlp::init(&[2, 16, 16, 2], &mut rng).unwrap();
    let x = Array2::from_shape_simple_fn((40, 2), || rng.random::<f64>() * 2.0 - 1.0);
    let labels = x
        .rows()
        .into_iter()
        .map(|r| usize::from(r[0] * r[1] > 0.0))
        .collect();
    (a, b, x, labels)
}

#[test]
fn mlp_curve_endpoints_are_the_models() -> TestResult {
    let (a, b, x, labels) = setup();
    let grid = uniform_grid(9)?;
    let c = mlp_curve(&a, &b, &x, &labels, &grid)?;
    let (ea, eb) = (
        mlp::evaluate(&a, &x, &labels)?,
        mlp::evaluate(&b, &x, &labels)?,
    );
    assert_eq!((c.loss[8], c.error[8]), (ea.loss, 1.0 - ea.accuracy));
    assert_eq!((c.loss[0], c.error[0]), (eb.loss, 1.0 - eb.accuracy));
    let mid = mlp::evaluate(&a.interpolate(&b, 0.5)?, &x, &labels)?;
    assert_eq!(c.loss[4], mid.loss);
    for kind in [BarrierKind::Interpolated, BarrierKind::Midpoint] {
        assert!(c.loss_barrier(kind)?.height >= 0.0);
        assert!(c.error_barrier(kind)?.height >= 0.0);
    }
    // The same model on both ends: a flat curve without barrier.
    let flat = mlp_curve(&a, &a, &x, &labels, &grid)?;
    let b = flat.loss_barrier(BarrierKind::Interpolated)?;
    assert_abs_diff_eq!(b.height, 0.0, epsilon = TOL);
    Ok(())
}

#[test]
fn mlp_curve_is_identical_for_any_thread_count() -> TestResult {
    let (a, b, x, labels) = setup();
    let grid = uniform_grid(17)?;
    let run = |threads: usize| -> Result<Curve, Error> {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| mlp_curve(&a, &b, &x, &labels, &grid))
    };
    let one = run(1)?;
    assert_eq!(one, run(3)?);
    let (a32, b32, x32) = (a.cast::<f32>(), b.cast::<f32>(), x.mapv(|v| v as f32));
    let c32 = mlp_curve(&a32, &b32, &x32, &labels, &grid)?;
    for (l32, l64) in c32.loss.iter().zip(&one.loss) {
        assert_abs_diff_eq!(*l32, *l64, epsilon = 1e-5);
    }
    Ok(())
}

#[test]
fn mlp_curve_bad_inputs() {
    let (a, b, x, labels) = setup();
    assert!(matches!(
        mlp_curve(&a, &b, &x, &labels, &[0.0, f64::NAN]),
        Err(Error::InvalidArgument { name: "alphas", .. })
    ));
    assert!(matches!(
        mlp_curve(&a, &b, &x, &labels, &[]),
        Err(Error::EmptyInput { .. })
    ));
    assert!(matches!(
        mlp_curve(&a, &b, &x, &labels[1..], &[0.5]),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        mlp_curve(&a, &b, &Array2::<f64>::zeros((3, 5)), &[0, 1, 0], &[0.5]),
        Err(Error::ShapeMismatch { .. })
    ));
    let mut x_nan = x.clone();
    x_nan[[3, 1]] = f64::NAN;
    assert!(matches!(
        mlp_curve(&a, &b, &x_nan, &labels, &[0.5]),
        Err(Error::NonFinite { .. })
    ));
    let mut other = b.clone();
    other.remove("layers.0.bias");
    assert!(matches!(
        mlp_curve(&a, &other, &x, &labels, &[0.5]),
        Err(Error::MissingParam { .. } | Error::UnexpectedParam { .. })
    ));
}

/// One forward pass per α for both: the curve and the report equal, bit for bit, those of
/// `mlp_curve` and `llfc_report_mlp` called separately (in f64 and f32, on 1 and 3 threads),
/// and bad input gets the errors the separate calls give.
#[test]
fn curve_and_report_equal_the_separate_calls() -> TestResult {
    let (a, b, x, labels) = setup();
    let grid = [0.0, 0.1, 0.5, 0.9, 1.0];
    let variant = CosineVariant::Signed;
    let separate = (
        mlp_curve(&a, &b, &x, &labels, &grid)?,
        llfc_report_mlp(&a, &b, &x, &grid, variant)?,
    );
    for threads in [1, 3] {
        let together = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| mlp_curve_and_report(&a, &b, &x, &labels, &grid, variant))?;
        assert_eq!(together, separate);
    }
    let (a32, b32, x32) = (a.cast::<f32>(), b.cast::<f32>(), x.mapv(|v| v as f32));
    let absolute = CosineVariant::Absolute;
    assert_eq!(
        mlp_curve_and_report(&a32, &b32, &x32, &labels, &grid, absolute)?,
        (
            mlp_curve(&a32, &b32, &x32, &labels, &grid)?,
            llfc_report_mlp(&a32, &b32, &x32, &grid, absolute)?
        )
    );
    let both = |x: &Array2<f64>, labels: &[usize], grid: &[f64]| {
        mlp_curve_and_report(&a, &b, x, labels, grid, variant)
    };
    assert!(matches!(
        both(&x, &labels, &[0.0, f64::NAN]),
        Err(Error::InvalidArgument { name: "alphas", .. })
    ));
    assert!(matches!(
        both(&x, &labels, &[]),
        Err(Error::EmptyInput { .. })
    ));
    assert!(matches!(
        both(&x, &labels[1..], &[0.5]),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        both(&x, &[0, 7].repeat(20), &[0.5]),
        Err(Error::InvalidArgument { .. })
    ));
    let mut x_nan = x.clone();
    x_nan[[3, 1]] = f64::NAN;
    assert!(matches!(
        both(&x_nan, &labels, &[0.5]),
        Err(Error::NonFinite { .. })
    ));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// The interpolated barrier is non-negative and unchanged by adding an affine function of α;
    /// the midpoint barrier is non-negative.
    #[test]
    fn barrier_invariances(
        values in prop::collection::vec(-5.0f64..5.0, 11),
        slope in -3.0f64..3.0,
        offset in -3.0f64..3.0,
    ) {
        let alphas = uniform_grid(11).unwrap();
        let b = barrier(&alphas, &values, BarrierKind::Interpolated).unwrap();
        prop_assert!(b.height >= 0.0);
        let shifted: Vec<f64> = values.iter().zip(&alphas).map(|(v, a)| v + slope * a + offset).collect();
        let s = barrier(&alphas, &shifted, BarrierKind::Interpolated).unwrap();
        prop_assert!((s.height - b.height).abs() < 1e-12);
        let m = barrier(&alphas, &values, BarrierKind::Midpoint).unwrap();
        prop_assert!(m.height >= 0.0);
    }
}
