//! `Params`: interpolation, inner products and distances against independent computations,
//! and the errors for incompatible parameter sets.

use approx::assert_relative_eq;
use llfc::{Error, Params};
use ndarray::{ArrayD, IxDyn};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn random_params(seed: u64) -> Params<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let shapes: [(&str, &[usize]); 4] = [
        ("conv.weight", &[4, 3, 3, 3]),
        ("bn.weight", &[4]),
        ("fc.weight", &[2, 4]),
        ("scale", &[]),
    ];
    shapes
        .iter()
        .map(|(n, s)| {
            (
                *n,
                ArrayD::from_shape_fn(IxDyn(s), |_| rng.random_range(-2.0..2.0)),
            )
        })
        .collect()
}

/// All entries of `p` flattened in order, as an independent representation.
fn flat(p: &Params<f64>) -> Vec<f64> {
    p.iter()
        .flat_map(|(_, t)| t.iter().copied().collect::<Vec<_>>())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Entrywise definition of θ(α) = α a + (1 − α) b, compared exactly (the same two
    /// multiplications and one addition per entry are performed).
    #[test]
    fn interpolate_matches_definition(s1 in any::<u64>(), s2 in any::<u64>(), alpha in -1.0f64..2.0) {
        let (a, b) = (random_params(s1), random_params(s2));
        let mid = a.interpolate(&b, alpha).unwrap();
        let expected: Vec<f64> = flat(&a).iter().zip(flat(&b)).map(|(x, y)| alpha * x + (1.0 - alpha) * y).collect();
        prop_assert_eq!(flat(&mid), expected);
        prop_assert_eq!(mid.names().collect::<Vec<_>>(), a.names().collect::<Vec<_>>());
    }

    /// ‖a − b‖² = ‖a‖² + ‖b‖² − 2⟨a, b⟩. Entries are O(1) and there are 148 of them, so each side
    /// is O(10²) with rounding error below 1e-12; 1e-9 relative (plus 1e-9 absolute for the
    /// cancellation when a ≈ b) is a safe bound.
    #[test]
    fn distance_inner_identity(s1 in any::<u64>(), s2 in any::<u64>()) {
        let (a, b) = (random_params(s1), random_params(s2));
        let d2 = a.distance(&b).unwrap().powi(2);
        let rhs = a.norm_sq() + b.norm_sq() - 2.0 * a.inner(&b).unwrap();
        prop_assert!((d2 - rhs).abs() <= 1e-9 * d2.max(1.0));
        let direct: f64 = flat(&a).iter().zip(flat(&b)).map(|(x, y)| x * y).sum();
        prop_assert!((a.inner(&b).unwrap() - direct).abs() <= 1e-12 * direct.abs().max(1.0));
    }
}

#[test]
fn interpolation_endpoints_are_exact() {
    let (a, b) = (random_params(1), random_params(2));
    assert_eq!(a.interpolate(&b, 1.0).unwrap(), a);
    assert_eq!(a.interpolate(&b, 0.0).unwrap(), b);
}

#[test]
fn f32_interpolation_and_cast() {
    let a32: Params<f32> = random_params(3).cast();
    let b32: Params<f32> = random_params(4).cast();
    let mid = a32.interpolate(&b32, 0.25).unwrap();
    let mid64 = random_params(3)
        .interpolate(&random_params(4), 0.25)
        .unwrap();
    // The f32 inputs are the f64 ones rounded (relative error 2^-24 ≈ 6e-8); interpolation adds
    // two more roundings, so entries of magnitude ≤ 2 agree within 4 · 2 · 6e-8 < 1e-6.
    for ((_, t32), (_, t64)) in mid.iter().zip(mid64.iter()) {
        for (x, y) in t32.iter().zip(t64) {
            assert_relative_eq!(f64::from(*x), *y, epsilon = 1e-6);
        }
    }
    assert_eq!(
        a32.cast::<f64>().cast::<f32>(),
        a32,
        "f32 → f64 → f32 is exact"
    );
}

#[test]
fn incompatible_sets_are_errors() {
    let a = random_params(1);
    let mut missing = a.clone();
    missing.remove("bn.weight");
    assert!(matches!(
        a.interpolate(&missing, 0.5),
        Err(Error::MissingParam { .. })
    ));
    assert!(matches!(
        missing.inner(&a),
        Err(Error::UnexpectedParam { .. })
    ));
    let mut reshaped = a.clone();
    reshaped.insert("fc.weight", ArrayD::zeros(IxDyn(&[4, 2])));
    match a.distance(&reshaped) {
        Err(Error::ShapeMismatch {
            what,
            expected,
            found,
        }) => {
            assert!(what.contains("fc.weight"));
            assert_eq!((expected, found), (vec![2, 4], vec![4, 2]));
        }
        other => panic!("expected ShapeMismatch, got {other:?}"),
    }
    assert!(matches!(
        a.interpolate(&a, f64::NAN),
        Err(Error::NonFinite { .. })
    ));
}

#[test]
fn check_finite_names_the_tensor() {
    let mut a = random_params(1);
    a.insert("bn.weight", ArrayD::from_elem(IxDyn(&[4]), f64::INFINITY));
    match a.check_finite() {
        Err(Error::NonFinite { what }) => assert!(what.contains("bn.weight")),
        other => panic!("expected NonFinite, got {other:?}"),
    }
    assert!(random_params(2).check_finite().is_ok());
}

#[test]
fn insertion_order_is_kept_and_replacement_keeps_position() {
    let mut a = random_params(1);
    let names: Vec<String> = a.names().map(String::from).collect();
    a.insert("bn.weight", ArrayD::zeros(IxDyn(&[4])));
    assert_eq!(a.names().map(String::from).collect::<Vec<_>>(), names);
    assert_eq!(a.num_elements(), 108 + 4 + 8 + 1);
    assert!(matches!(a.require("nope"), Err(Error::MissingParam { .. })));
}
