//! Integration tests of the LLFC metrics through the public API: closed forms, invariances
//! (proptest), the MLP report, determinism under parallelism, and every input error.
//!
//! Tolerances: values that are exact in binary floating point (orthogonal unit vectors,
//! halvings, identical arrays, sign-consistent ReLU) are compared with `assert_eq!`. Otherwise
//! `TOL = 1e-12` in f64: inputs are O(1) with at most a few hundred terms per sum, so the
//! rounding error of a dot product or norm is below `n ε ≈ 1e-13`; f32 features are compared
//! with f64 ones at `1e-5` (`n ε_f32` for n ≤ 100 terms).

use approx::assert_abs_diff_eq;
use llfc::metrics::{
    commutativity, commutativity_residual, cosine_distances, interpolation_scale, llfc_layer,
    llfc_report_mlp, normalised_distance, relative_distance, weak_additivity, CosineVariant,
    SampleStats,
};
use llfc::mlp::{self, FeatureKind};
use llfc::{Error, Params};
use ndarray::{arr2, Array, Array2, Array4, ArrayD, Axis, IxDyn};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

type TestResult = Result<(), Error>;

const TOL: f64 = 1e-12;

fn random_matrix(rows: usize, cols: usize, seed: u64) -> Array2<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Array2::from_shape_simple_fn((rows, cols), || rng.random::<f64>() * 2.0 - 1.0)
}

fn mean(s: &SampleStats) -> f64 {
    s.mean.expect("at least one sample")
}

#[test]
fn orthogonal_vectors_are_at_distance_one_and_scaled_copies_at_zero() -> TestResult {
    let a = arr2(&[[1.0, 0.0, 0.0], [0.0, 2.0, -1.0], [3.0, -1.0, 2.0]]);
    let b = arr2(&[[0.0, 5.0, 0.0], [0.0, 1.0, 2.0], [6.0, -2.0, 4.0]]);
    for variant in [CosineVariant::Signed, CosineVariant::Absolute] {
        let d = cosine_distances(&a, &b, variant)?;
        assert_eq!(d.values[..2], [Some(1.0), Some(1.0)]);
        assert_abs_diff_eq!(d.values[2].unwrap(), 0.0, epsilon = TOL);
        assert_eq!((d.count, d.skipped), (3, 0));
        assert_abs_diff_eq!(mean(&d), 2.0 / 3.0, epsilon = TOL);
        // Population standard deviation of {1, 1, 0}: √(2/9).
        assert_abs_diff_eq!(d.std.unwrap(), (2.0f64 / 9.0).sqrt(), epsilon = TOL);
    }
    // Opposite vectors: 2 signed, 0 absolute.
    let d = cosine_distances(&a, &(-&a), CosineVariant::Signed)?;
    assert!(d.values.iter().all(|v| (v.unwrap() - 2.0).abs() < TOL));
    let d = cosine_distances(&a, &(-&a), CosineVariant::Absolute)?;
    assert!(d.values.iter().all(|v| v.unwrap().abs() < TOL));
    // A vector with itself: exactly 0.
    let d = cosine_distances(&b, &b, CosineVariant::Signed)?;
    assert_eq!(d.mean, Some(0.0));
    Ok(())
}

#[test]
fn zero_norm_samples_are_skipped_and_counted() -> TestResult {
    let a = arr2(&[[0.0, 0.0], [1.0, 0.0], [0.0, 0.0], [1.0, 1.0]]);
    let b = arr2(&[[1.0, 0.0], [0.0, 0.0], [0.0, 0.0], [1.0, 1.0]]);
    let d = cosine_distances(&a, &b, CosineVariant::Signed)?;
    assert_eq!(d.values, [None, None, None, Some(0.0)]);
    assert_eq!(
        (d.count, d.skipped, d.mean, d.std),
        (1, 3, Some(0.0), Some(0.0))
    );
    let all_zero = Array2::<f64>::zeros((3, 2));
    let d = cosine_distances(&all_zero, &all_zero, CosineVariant::Signed)?;
    assert_eq!((d.count, d.skipped, d.mean, d.std), (0, 3, None, None));
    // In LLFC, a sample whose interpolated feature is zero has no cosine and no scale.
    let l = llfc_layer(&a, &a, &(-&a), 0.5, CosineVariant::Signed)?;
    assert_eq!((l.distance.skipped, l.scale.coef.skipped), (4, 4));
    assert_eq!((l.scale.matrix_coef, l.scale.matrix_c), (None, None));
    Ok(())
}

#[test]
fn conv_feature_maps_are_flattened_per_sample() -> TestResult {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let a = Array4::from_shape_simple_fn((5, 3, 2, 2), || rng.random::<f64>() - 0.5);
    let b = Array4::from_shape_simple_fn((5, 3, 2, 2), || rng.random::<f64>() - 0.5);
    let flat = |x: &Array4<f64>| x.to_shape((5, 12)).unwrap().to_owned();
    let d4 = cosine_distances(
        &a.view().into_dyn(),
        &b.view().into_dyn(),
        CosineVariant::Signed,
    )?;
    let d2 = cosine_distances(&flat(&a), &flat(&b), CosineVariant::Signed)?;
    assert_eq!(d4, d2); // same values, same summation order
                        // A transposed (non-contiguous) view is read in logical order.
    let at = a.t().to_owned();
    let bt = b.t().to_owned();
    let dt = cosine_distances(&at.t(), &bt.t(), CosineVariant::Signed)?;
    assert_eq!(dt, d2);
    // f32 features agree with f64 ones to f32 accuracy.
    let d32 = cosine_distances(
        &a.mapv(|v| v as f32),
        &b.mapv(|v| v as f32),
        CosineVariant::Signed,
    )?;
    for (x, y) in d32.values.iter().zip(&d2.values) {
        assert_abs_diff_eq!(x.unwrap(), y.unwrap(), epsilon = 1e-5);
    }
    Ok(())
}

#[test]
fn scale_is_two_when_the_interpolation_is_twice_the_feature() -> TestResult {
    // f_int = α f_A + (1 − α) f_B; the interpolated network's feature is half of it, so
    // c · f(θ(α)) = f_int holds with c = 2 (coef = ½).
    let f_a = random_matrix(6, 4, 2);
    let f_b = random_matrix(6, 4, 3);
    for alpha in [0.0, 0.25, 0.5, 1.0] {
        let f_int = &f_a * alpha + &f_b * (1.0 - alpha);
        let half = &f_int * 0.5;
        let s = interpolation_scale(&half, &f_a, &f_b, alpha)?;
        assert_abs_diff_eq!(s.matrix_coef.unwrap(), 0.5, epsilon = TOL);
        assert_abs_diff_eq!(s.matrix_c.unwrap(), 2.0, epsilon = TOL);
        assert_abs_diff_eq!(mean(&s.coef), 0.5, epsilon = TOL);
        assert_abs_diff_eq!(mean(&s.c), 2.0, epsilon = TOL);
        assert!(s.c.std.unwrap() < TOL);
        let l = llfc_layer(&half, &f_a, &f_b, alpha, CosineVariant::Signed)?;
        assert_abs_diff_eq!(mean(&l.distance), 0.0, epsilon = TOL);
        assert_eq!(l.scale, s);
        assert_eq!(l.alpha, alpha);
    }
    // The other direction: a feature twice the interpolation has coef 2, c = ½.
    let s = interpolation_scale(&(&f_a * 2.0), &f_a, &f_b, 1.0)?;
    assert_eq!((s.matrix_coef, s.matrix_c), (Some(2.0), Some(0.5)));
    Ok(())
}

#[test]
fn identical_models_have_zero_residuals() -> TestResult {
    let f = random_matrix(7, 5, 4);
    for alpha in [0.0, 0.3, 1.0] {
        let l = llfc_layer(&f, &f, &f, alpha, CosineVariant::Signed)?;
        assert_abs_diff_eq!(mean(&l.distance), 0.0, epsilon = TOL);
        assert_eq!(l.baseline.mean, Some(0.0));
        let w = weak_additivity(&f, &f, alpha)?;
        assert_eq!(
            (w.relative, w.vanilla, w.cosine.mean),
            (Some(0.0), Some(0.0), Some(0.0))
        );
    }
    let w = random_matrix(3, 5, 5);
    let c = commutativity(w.view(), w.view(), f.view(), f.view())?;
    assert_eq!(
        (c.relative, c.vanilla, c.baseline),
        (Some(0.0), Some(0.0), Some(0.0))
    );
    assert_eq!(c.residual_norm, 0.0);
    Ok(())
}

#[test]
fn commutativity_residual_factorises() -> TestResult {
    let (w_a, w_b) = (random_matrix(4, 6, 6), random_matrix(4, 6, 7));
    let (h_a, h_b) = (random_matrix(9, 6, 8), random_matrix(9, 6, 9));
    // The paper's four-term sum with H as [in, samples]: W_A H_A + W_B H_B − W_A H_B − W_B H_A.
    let (ha, hb) = (h_a.t(), h_b.t());
    let four = w_a.dot(&ha) + w_b.dot(&hb) - w_a.dot(&hb) - w_b.dot(&ha);
    let r = commutativity_residual(w_a.view(), w_b.view(), h_a.view(), h_b.view())?;
    assert_eq!(r.dim(), (9, 4)); // [samples, out]: the transpose of the paper's R
    for (x, y) in r.iter().zip(four.t().iter()) {
        assert_abs_diff_eq!(*x, *y, epsilon = TOL);
    }
    let c = commutativity(w_a.view(), w_b.view(), h_a.view(), h_b.view())?;
    let s = w_a.dot(&ha) + w_b.dot(&hb);
    let x = w_a.dot(&hb) + w_b.dot(&ha);
    let norm = |m: &Array2<f64>| m.iter().map(|v| v * v).sum::<f64>().sqrt();
    assert_abs_diff_eq!(c.residual_norm, norm(&four), epsilon = TOL);
    assert_abs_diff_eq!(c.relative.unwrap(), norm(&four) / norm(&s), epsilon = TOL);
    assert_abs_diff_eq!(
        c.vanilla.unwrap(),
        normalised_distance(&s, &x)?.unwrap(),
        epsilon = TOL
    );
    let base = normalised_distance(&w_a.dot(&ha), &w_b.dot(&hb))?.unwrap();
    assert_abs_diff_eq!(c.baseline.unwrap(), base, epsilon = TOL);
    // f32 weights and inputs: products in f32, close to the f64 result.
    let f = |m: &Array2<f64>| m.mapv(|v| v as f32);
    let c32 = commutativity(
        f(&w_a).view(),
        f(&w_b).view(),
        f(&h_a).view(),
        f(&h_b).view(),
    )?;
    assert_abs_diff_eq!(c32.relative.unwrap(), c.relative.unwrap(), epsilon = 1e-5);
    Ok(())
}

#[test]
fn weak_additivity_closed_form() -> TestResult {
    // left = σ(½ Z_A + ½ Z_B), right = ½ σ(Z_A) + ½ σ(Z_B).
    let z_a = arr2(&[[2.0, -2.0], [1.0, 1.0]]);
    let z_b = arr2(&[[-2.0, 4.0], [3.0, 1.0]]);
    let w = weak_additivity(&z_a, &z_b, 0.5)?;
    // left = [[0, 1], [2, 1]], right = [[1, 2], [2, 1]]: ‖left − right‖² = 2, ‖right‖² = 10,
    // ‖left‖² = 6.
    assert_abs_diff_eq!(w.relative.unwrap(), (2.0f64 / 10.0).sqrt(), epsilon = TOL);
    assert_abs_diff_eq!(
        w.vanilla.unwrap(),
        2.0 / (6.0f64 * 10.0).sqrt(),
        epsilon = TOL
    );
    assert_abs_diff_eq!(
        w.cosine.values[0].unwrap(),
        1.0 - 2.0 / 5.0f64.sqrt(),
        epsilon = TOL
    );
    assert_eq!(w.cosine.values[1], Some(0.0));
    assert_eq!(w.alpha, 0.5);
    // A dead layer: right = 0, no normalised residual.
    let dead = weak_additivity(&(-&z_a.mapv(f64::abs)), &(-&z_b.mapv(f64::abs)), 0.5)?;
    assert_eq!(
        (dead.relative, dead.vanilla, dead.cosine.skipped),
        (None, None, 2)
    );
    Ok(())
}

#[test]
fn shared_distances() -> TestResult {
    let x = arr2(&[[1.0, 2.0], [2.0, 0.0]]);
    assert_eq!(normalised_distance(&x, &x)?, Some(0.0));
    // ‖x − (−x)‖² / ‖x‖² = 4.
    assert_abs_diff_eq!(
        normalised_distance(&x, &(-&x))?.unwrap(),
        4.0,
        epsilon = TOL
    );
    assert_abs_diff_eq!(
        relative_distance(&(&x * 3.0), &x)?.unwrap(),
        2.0,
        epsilon = TOL
    );
    assert_eq!(relative_distance(&x, &Array2::zeros((2, 2)))?, None);
    Ok(())
}

fn assert_err<T: std::fmt::Debug>(r: Result<T, Error>, check: impl Fn(&Error) -> bool) {
    match r {
        Err(e) => assert!(check(&e), "unexpected error {e:?}"),
        Ok(v) => panic!("expected an error, got {v:?}"),
    }
}

#[test]
fn bad_inputs_are_errors() {
    let a = random_matrix(3, 2, 10);
    let b = random_matrix(3, 3, 11);
    let mut nan = a.clone();
    nan[[1, 1]] = f64::NAN;
    let mut inf = a.clone();
    inf[[0, 0]] = f64::INFINITY;
    let empty = Array2::<f64>::zeros((0, 2));
    let no_features = Array2::<f64>::zeros((3, 0));
    let shape = |e: &Error| matches!(e, Error::ShapeMismatch { .. });
    let non_finite = |e: &Error| matches!(e, Error::NonFinite { .. });
    let is_empty = |e: &Error| matches!(e, Error::EmptyInput { .. });
    let invalid = |e: &Error| matches!(e, Error::InvalidArgument { name: "alpha", .. });
    let sv = CosineVariant::Signed;

    assert_err(cosine_distances(&a, &b, sv), shape);
    assert_err(cosine_distances(&a, &nan, sv), non_finite);
    assert_err(cosine_distances(&inf, &a, sv), non_finite);
    assert_err(cosine_distances(&empty, &empty, sv), is_empty);
    assert_err(cosine_distances(&no_features, &no_features, sv), is_empty);
    let scalar = ArrayD::<f64>::zeros(IxDyn(&[]));
    assert_err(cosine_distances(&scalar, &scalar, sv), |e| {
        matches!(e, Error::InvalidArgument { .. })
    });

    assert_err(llfc_layer(&a, &a, &b, 0.5, sv), shape);
    assert_err(llfc_layer(&b, &a, &a, 0.5, sv), shape);
    assert_err(llfc_layer(&nan, &a, &a, 0.5, sv), non_finite);
    assert_err(llfc_layer(&a, &a, &a, f64::NAN, sv), invalid);
    assert_err(llfc_layer(&a, &a, &a, f64::INFINITY, sv), invalid);
    assert_err(llfc_layer(&empty, &empty, &empty, 0.5, sv), is_empty);
    assert_err(interpolation_scale(&a, &a, &a, f64::NEG_INFINITY), invalid);

    assert_err(weak_additivity(&a, &b, 0.5), shape);
    assert_err(weak_additivity(&a, &nan, 0.5), non_finite);
    assert_err(weak_additivity(&a, &a, f64::NAN), invalid);
    assert_err(weak_additivity(&empty, &empty, 0.5), is_empty);

    let w = random_matrix(4, 2, 12);
    let w_wide = random_matrix(4, 3, 13);
    assert_err(
        commutativity(w.view(), w_wide.view(), a.view(), a.view()),
        shape,
    );
    assert_err(
        commutativity(w_wide.view(), w_wide.view(), a.view(), a.view()),
        shape,
    );
    assert_err(
        commutativity(w.view(), w.view(), a.view(), a.slice(ndarray::s![..2, ..])),
        shape,
    );
    assert_err(
        commutativity(w.view(), w.view(), a.view(), nan.view()),
        non_finite,
    );
    let mut w_nan = w.clone();
    w_nan[[0, 0]] = f64::NAN;
    assert_err(
        commutativity_residual(w.view(), w_nan.view(), a.view(), a.view()),
        non_finite,
    );
    assert_err(
        commutativity(w.view(), w.view(), empty.view(), empty.view()),
        is_empty,
    );

    assert_err(normalised_distance(&a, &b), shape);
    assert_err(relative_distance(&nan, &a), non_finite);
}

/// Two random MLPs 4-12-10-3 and 20 inputs.
fn two_mlps() -> (Params<f64>, Params<f64>, Array2<f64>) {
    let mut rng = ChaCha8Rng::seed_from_u64(20);
    let a = mlp::init(&[4, 12, 10, 3], &mut rng).unwrap();
    let b = mlp::init(&[4, 12, 10, 3], &mut rng).unwrap();
    let x = Array::from_shape_simple_fn((20, 4), || rng.random::<f64>() * 4.0 - 2.0);
    (a, b, x)
}

#[test]
fn mlp_report_endpoints_and_baseline() -> TestResult {
    let (a, b, x) = two_mlps();
    let alphas = [1.0, 0.5, 0.0];
    let report = llfc_report_mlp(&a, &b, &x, &alphas, CosineVariant::Signed)?;
    let (fa, fb) = (
        mlp::forward_features(&a, &x)?,
        mlp::forward_features(&b, &x)?,
    );
    assert_eq!(report.widths, [4, 12, 10, 3]);
    assert_eq!(report.num_layers(), 3);
    assert_eq!(report.alphas, alphas);
    assert_eq!((report.pre.len(), report.post.len()), (3, 3));
    for l in 0..3 {
        for kind in [FeatureKind::Pre, FeatureKind::Post] {
            for k in [0, 2] {
                // θ(1) = θ_A and θ(0) = θ_B exactly, so their features are the interpolation.
                let m = report.layer(k, l, kind).unwrap();
                assert_eq!(m.distance.mean, Some(0.0), "α = {}, layer {l}", alphas[k]);
                assert_eq!(m.scale.matrix_coef, Some(1.0));
            }
            let (f_a, f_b) = (fa.get(l, kind).unwrap(), fb.get(l, kind).unwrap());
            let direct = cosine_distances(f_a, f_b, CosineVariant::Signed)?;
            for k in 0..3 {
                assert_eq!(report.layer(k, l, kind).unwrap().baseline, direct);
            }
            // The middle entry is llfc_layer on θ(½)'s features.
            let mid = mlp::forward_features(&a.interpolate(&b, 0.5)?, &x)?;
            let direct = llfc_layer(
                mid.get(l, kind).unwrap(),
                f_a,
                f_b,
                0.5,
                CosineVariant::Signed,
            )?;
            assert_eq!(report.layer(1, l, kind).unwrap(), &direct);
        }
    }
    assert_eq!(report.post[1][2], report.pre[1][2]); // logits
    assert!(report.layer(3, 0, FeatureKind::Pre).is_none());
    assert!(report.layer(0, 3, FeatureKind::Post).is_none());
    // Weak additivity for the two hidden layers, commutativity for every layer.
    for (k, &alpha) in alphas.iter().enumerate() {
        assert_eq!(report.weak_additivity[k].len(), 2);
        for l in 0..2 {
            let w = weak_additivity(&fa.pre[l], &fb.pre[l], alpha)?;
            assert_eq!(report.weak_additivity[k][l], w);
        }
    }
    assert_eq!(report.commutativity.len(), 3);
    assert_eq!(report.commutativity[0].residual_norm, 0.0);
    let w = |p: &Params<f64>| p["layers.2.weight"].clone().into_dimensionality().unwrap();
    let (w_a, w_b): (Array2<f64>, Array2<f64>) = (w(&a), w(&b));
    let c = commutativity(w_a.view(), w_b.view(), fa.post[1].view(), fb.post[1].view())?;
    assert_eq!(report.commutativity[2], c);
    // An independent random pair is far from LLFC at the logits.
    assert!(mean(&report.post[1][2].distance) > 1e-3);
    Ok(())
}

#[test]
fn mlp_report_is_identical_for_any_thread_count() -> TestResult {
    let (a, b, x) = two_mlps();
    let alphas: Vec<f64> = (0..=8).map(|k| f64::from(k) / 8.0).collect();
    let run = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| llfc_report_mlp(&a, &b, &x, &alphas, CosineVariant::Absolute))
    };
    let one = run(1)?;
    assert_eq!(one, run(3)?);
    assert_eq!(
        one,
        llfc_report_mlp(&a, &b, &x, &alphas, CosineVariant::Absolute)?
    );
    // f32 models.
    let (a32, b32, x32) = (a.cast::<f32>(), b.cast::<f32>(), x.mapv(|v| v as f32));
    let r32 = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| llfc_report_mlp(&a32, &b32, &x32, &alphas, CosineVariant::Signed))
    };
    assert_eq!(r32(1)?, r32(3)?);
    Ok(())
}

#[test]
fn mlp_report_bad_inputs() {
    let (a, b, x) = two_mlps();
    let sv = CosineVariant::Signed;
    assert_err(llfc_report_mlp(&a, &b, &x, &[], sv), |e| {
        matches!(e, Error::EmptyInput { .. })
    });
    assert_err(llfc_report_mlp(&a, &b, &x, &[0.5, f64::NAN], sv), |e| {
        matches!(e, Error::InvalidArgument { name: "alpha", .. })
    });
    let x_bad = Array2::<f64>::zeros((5, 3));
    assert_err(llfc_report_mlp(&a, &b, &x_bad, &[0.5], sv), |e| {
        matches!(e, Error::ShapeMismatch { .. })
    });
    let mut x_nan = x.clone();
    x_nan[[0, 0]] = f64::NAN;
    assert_err(llfc_report_mlp(&a, &b, &x_nan, &[0.5], sv), |e| {
        matches!(e, Error::NonFinite { .. })
    });
    let x_empty = x.slice_axis(Axis(0), (0..0).into()).to_owned();
    assert_err(llfc_report_mlp(&a, &b, &x_empty, &[0.5], sv), |e| {
        matches!(e, Error::EmptyInput { .. })
    });
    let mut other = b.clone();
    other.remove("layers.2.bias");
    assert_err(llfc_report_mlp(&a, &other, &x, &[0.5], sv), |e| {
        matches!(
            e,
            Error::UnexpectedParam { .. } | Error::MissingParam { .. }
        )
    });
    let mut b_nan = b.clone();
    b_nan.insert(
        "layers.0.bias",
        ndarray::Array1::from_elem(12, f64::NAN).into_dyn(),
    );
    assert_err(llfc_report_mlp(&a, &b_nan, &x, &[0.5], sv), |e| {
        matches!(e, Error::NonFinite { .. })
    });
}

/// A `[rows, cols]` matrix strategy with entries in [−1, 1], plus positive per-row scales.
fn matrix(rows: usize, cols: usize) -> impl Strategy<Value = Array2<f64>> {
    prop::collection::vec(-1.0f64..1.0, rows * cols)
        .prop_map(move |v| Array2::from_shape_vec((rows, cols), v).unwrap())
}

fn scales(rows: usize) -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec(0.01f64..100.0, rows)
}

fn scale_rows(m: &Array2<f64>, s: &[f64]) -> Array2<f64> {
    let mut out = m.clone();
    for (mut row, &k) in out.rows_mut().into_iter().zip(s) {
        row *= k;
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn cosine_metrics_are_invariant_to_positive_per_sample_scaling(
        a in matrix(6, 5), b in matrix(6, 5), sa in scales(6), sb in scales(6),
        alpha in 0.0f64..1.0,
    ) {
        for variant in [CosineVariant::Signed, CosineVariant::Absolute] {
            let d0 = cosine_distances(&a, &b, variant).unwrap();
            let d1 = cosine_distances(&scale_rows(&a, &sa), &scale_rows(&b, &sb), variant).unwrap();
            prop_assert_eq!(d0.skipped, d1.skipped);
            for (x, y) in d0.values.iter().zip(&d1.values) {
                prop_assert!((x.unwrap() - y.unwrap()).abs() < 1e-10);
            }
            // LLFC: scaling f(θ(α)) and both endpoint features by the same per-sample factor.
            let f_mid = &a * 0.3 - &b;
            let l0 = llfc_layer(&f_mid, &a, &b, alpha, variant).unwrap();
            let l1 = llfc_layer(
                &scale_rows(&f_mid, &sb), &scale_rows(&a, &sa), &scale_rows(&b, &sa), alpha, variant,
            ).unwrap();
            // f(θ(α)) is scaled by sb, f_int by sa: the cosine is unchanged.
            for (x, y) in l0.distance.values.iter().zip(&l1.distance.values) {
                prop_assert!((x.unwrap() - y.unwrap()).abs() < 1e-10);
            }
        }
    }

    #[test]
    fn absolute_cosine_distance_is_at_most_signed(a in matrix(5, 4), b in matrix(5, 4)) {
        let s = cosine_distances(&a, &b, CosineVariant::Signed).unwrap();
        let u = cosine_distances(&a, &b, CosineVariant::Absolute).unwrap();
        for (x, y) in u.values.iter().zip(&s.values) {
            let (x, y) = (x.unwrap(), y.unwrap());
            prop_assert!(x <= y && (0.0..=1.0).contains(&x) && (0.0..=2.0).contains(&y));
        }
    }

    #[test]
    fn commutativity_residual_vanishes_with_shared_weights_or_inputs(
        w_a in matrix(3, 4), w_b in matrix(3, 4), h_a in matrix(5, 4), h_b in matrix(5, 4),
    ) {
        for (wa, wb, ha, hb) in [(&w_a, &w_a, &h_a, &h_b), (&w_a, &w_b, &h_a, &h_a)] {
            let c = commutativity(wa.view(), wb.view(), ha.view(), hb.view()).unwrap();
            prop_assert_eq!(c.residual_norm, 0.0);
            prop_assert_eq!(c.relative, Some(0.0));
            prop_assert_eq!(c.vanilla, Some(0.0));
        }
    }

    #[test]
    fn weak_additivity_is_exact_on_a_sign_pattern(
        signs in prop::collection::vec(any::<bool>(), 20),
        ma in prop::collection::vec(0.0f64..3.0, 20),
        mb in prop::collection::vec(0.0f64..3.0, 20),
        alpha in 0.0f64..=1.0,
    ) {
        // Z_A and Z_B share the sign pattern; entry 0 is positive so that right ≠ 0.
        let z = |m: &[f64]| Array2::from_shape_fn((4, 5), |(i, j)| {
            let k = i * 5 + j;
            if k == 0 || signs[k] { m[k] + 0.1 } else { -m[k] }
        });
        let w = weak_additivity(&z(&ma), &z(&mb), alpha).unwrap();
        prop_assert_eq!(w.relative, Some(0.0));
        prop_assert_eq!(w.vanilla, Some(0.0));
        prop_assert!(w.cosine.values.iter().flatten().all(|&v| v == 0.0));
    }
}

/// `values` spread over every other column of a wider array: a view with the same values and
/// a column stride of 2 (not contiguous).
fn strided(values: &Array2<f32>) -> Array2<f32> {
    let (n, d) = values.dim();
    let mut wide = Array2::from_elem((n, 2 * d), f32::NAN);
    wide.slice_mut(ndarray::s![.., ..;2]).assign(values);
    wide
}

/// The per-sample sums read each row in logical order whatever the layout: strided and
/// reversed views give the values of their standard-layout copies, bit for bit (the structs'
/// `PartialEq` compares every f64 exactly), and a NaN in a strided view is still refused.
#[test]
fn strided_features_give_the_values_of_contiguous_ones() -> TestResult {
    // 21 units: not a multiple of the 8 partial sums, so the tails are exercised too.
    let mut rng = ChaCha8Rng::seed_from_u64(41);
    let mut draw = || Array2::from_shape_simple_fn((37, 21), || rng.random::<f32>() * 4.0 - 2.0);
    let (f_alpha, f_a, f_b) = (draw(), draw(), draw());
    let (w_alpha, w_a, w_b) = (strided(&f_alpha), strided(&f_a), strided(&f_b));
    let cols = ndarray::s![.., ..;2];
    let (v_alpha, v_a, v_b) = (w_alpha.slice(cols), w_a.slice(cols), w_b.slice(cols));
    assert!(v_a.as_slice().is_none(), "the view must not be contiguous");
    for alpha in [0.0, 0.3, 0.5, 1.0] {
        assert_eq!(
            llfc_layer(&v_alpha, &v_a, &v_b, alpha, CosineVariant::Signed)?,
            llfc_layer(&f_alpha, &f_a, &f_b, alpha, CosineVariant::Signed)?
        );
        assert_eq!(
            interpolation_scale(&v_alpha, &v_a, &v_b, alpha)?,
            interpolation_scale(&f_alpha, &f_a, &f_b, alpha)?
        );
        assert_eq!(
            weak_additivity(&v_a, &v_b, alpha)?,
            weak_additivity(&f_a, &f_b, alpha)?
        );
        // Reversed rows: the samples in the other order, as views and as copies.
        let rev = ndarray::s![..;-1, ..];
        let (r_a, r_b) = (f_a.slice(rev), f_b.slice(rev));
        assert_eq!(
            weak_additivity(&r_a, &r_b, alpha)?,
            weak_additivity(&r_a.to_owned(), &r_b.to_owned(), alpha)?
        );
    }
    let mut bad = w_b.clone();
    bad[[5, 6]] = f32::INFINITY; // column 3 of the strided view
    assert!(matches!(
        weak_additivity(&v_a, &bad.slice(cols), 0.5),
        Err(Error::NonFinite { .. })
    ));
    Ok(())
}
