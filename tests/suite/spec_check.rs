//! `check_invariance`: a correct spec passes with any forward the caller supplies, the two JSON
//! mistakes found with real PyTorch models fail and are named, and bad arguments are errors.

use llfc::spec::{check_invariance, InvarianceReport};
use llfc::{mlp, Error, Params, Permutation, PermutationSpec};
use ndarray::{Array1, Array2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn setup(seed: u64) -> (Params<f64>, Array2<f64>, ChaCha8Rng) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let params = mlp::init::<f64, _>(&[6, 10, 10, 10, 3], &mut rng).unwrap();
    let x = Array2::from_shape_fn((16, 6), |_| rng.random_range(-2.0..2.0));
    (params, x, rng)
}

fn forward(p: &Params<f64>, x: &Array2<f64>) -> llfc::Result<Array2<f64>> {
    mlp::forward(p, x)
}

#[test]
fn a_correct_spec_passes_and_every_permutation_moves_units() {
    let (params, x, mut rng) = setup(1);
    let report = check_invariance(
        &PermutationSpec::mlp(4),
        &params,
        forward,
        &x,
        1e-12,
        &mut rng,
    )
    .unwrap();
    assert!(report.passed(), "{report}");
    assert!(report.per_perm.is_empty());
    assert_eq!(report.perms.len(), 3);
    assert!(report
        .perms
        .values()
        .all(|p| *p != Permutation::identity(10)));
    // Logits of a random MLP are O(1), so a max difference within 1e-12 is a real agreement.
    assert!(report.max_abs_output > 0.1);
    assert!(report.max_abs_diff <= 1e-12);
    assert!(report.to_string().contains("passed"));
}

#[test]
fn produced_but_never_consumed_is_caught_and_named() {
    let (params, x, mut rng) = setup(2);
    // `"layers.2.weight": ["P_2", null]`: P_1 (from layers.1) is never consumed.
    let spec = PermutationSpec::mlp(4).with("layers.2.weight", &[Some("P_2"), None]);
    let report = check_invariance(&spec, &params, forward, &x, 1e-12, &mut rng).unwrap();
    assert!(!report.passed());
    assert_eq!(report.broken(), vec!["P_1"]);
    // The per-permutation differences were measured independently: the others are exact.
    assert!(report.per_perm["P_0"] <= 1e-12 && report.per_perm["P_2"] <= 1e-12);
    assert!(report.to_string().contains("P_1 alone"));
    match report.into_result() {
        Err(Error::NotInvariant {
            max_abs_diff,
            tol,
            broken,
        }) => {
            assert!(max_abs_diff > 1e-3);
            assert_eq!(tol, 1e-12);
            assert_eq!(broken, ["P_1"]);
        }
        other => panic!("expected NotInvariant, got {other:?}"),
    }
}

#[test]
fn one_permutation_on_both_axes_of_a_feed_forward_weight_is_caught() {
    let (params, x, mut rng) = setup(3);
    // `["P_1", "P_1"]` on layers.1: its input is P_0's units, not P_1's.
    let spec = PermutationSpec::mlp(4).with("layers.1.weight", &[Some("P_1"), Some("P_1")]);
    let report = check_invariance(&spec, &params, forward, &x, 1e-12, &mut rng).unwrap();
    assert!(!report.passed());
    let broken = report.broken();
    assert!(
        broken.contains(&"P_0") && broken.contains(&"P_1"),
        "{report}"
    );
}

#[test]
fn f32_models_pass_at_f32_tolerance() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let params = mlp::init::<f32, _>(&[5, 8, 4], &mut rng).unwrap();
    let x = Array2::from_shape_fn((8, 5), |_| rng.random_range(-1.0f32..1.0));
    let report = PermutationSpec::mlp(2)
        .check_invariance(&params, mlp::forward, &x, 1e-5, &mut rng)
        .unwrap();
    // A permutation reorders the terms of each dot product: f32 rounding, ~1e-7 relative.
    assert!(report.passed(), "{report}");
}

#[test]
fn deterministic_for_a_seed() {
    let (params, x, _) = setup(5);
    let spec = PermutationSpec::mlp(4).with("layers.2.weight", &[Some("P_2"), None]);
    let run = |seed| -> InvarianceReport {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        check_invariance(&spec, &params, forward, &x, 1e-12, &mut rng).unwrap()
    };
    assert_eq!(run(9), run(9));
}

#[test]
fn bad_arguments_are_errors_and_inputs_unchanged() {
    let (params, x, mut rng) = setup(6);
    let before = params.clone();
    let spec = PermutationSpec::mlp(4);
    for tol in [f64::NAN, -1.0, f64::INFINITY] {
        assert!(matches!(
            check_invariance(&spec, &params, forward, &x, tol, &mut rng),
            Err(Error::InvalidArgument { name: "tol", .. })
        ));
    }
    // A forward whose output shape depends on the parameters' order is reported, not compared.
    let mut calls = 0;
    let shape_changing = |p: &Params<f64>, x: &Array2<f64>| {
        calls += 1;
        let y = mlp::forward(p, x)?;
        Ok(if calls == 1 { y } else { y.t().to_owned() })
    };
    assert!(matches!(
        check_invariance(&spec, &params, shape_changing, &x, 1e-12, &mut rng),
        Err(Error::ShapeMismatch { .. })
    ));
    let nan = |_: &Params<f64>, _: &Array2<f64>| Ok(Array1::from_elem(3, f64::NAN));
    assert!(matches!(
        check_invariance(&spec, &params, nan, &x, 1e-12, &mut rng),
        Err(Error::NonFinite { .. })
    ));
    // Errors of the forward pass through; a spec that does not fit is a validation error.
    let failing = |_: &Params<f64>, _: &Array2<f64>| -> llfc::Result<Array1<f64>> {
        Err(Error::EmptyInput {
            what: "test".into(),
        })
    };
    assert!(matches!(
        check_invariance(&spec, &params, failing, &x, 1e-12, &mut rng),
        Err(Error::EmptyInput { .. })
    ));
    assert!(matches!(
        check_invariance(
            &PermutationSpec::mlp(5),
            &params,
            forward,
            &x,
            1e-12,
            &mut rng
        ),
        Err(Error::MissingParam { .. })
    ));
    assert_eq!(params, before);
}
