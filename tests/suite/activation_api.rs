//! The one-call activation matching of the reference MLP (`mlp_activation_stats`,
//! `mlp_activation_matching`) against the hand-built feature maps it replaces, and token
//! features `[N, T, d]` read as `[N·T, d]`.

use std::collections::BTreeMap;

use llfc::matching::activation::{
    activation_matching_from_features, mlp_activation_matching, mlp_activation_stats,
    ActivationMatchingOptions, ActivationStats, Statistic,
};
use llfc::mlp::{self, FeatureKind};
use llfc::{apply_permutations, Error, Permutation, PermutationSpec};
use ndarray::{Array2, Array3, ArrayD};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn inputs(rows: usize, cols: usize, seed: u64) -> Array2<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Array2::from_shape_fn((rows, cols), |_| rng.random_range(-2.0..2.0))
}

/// The statistics of every hidden layer equal those of the features built by hand (one batch:
/// exactly; 2,500 rows streamed in blocks of 1024: to 1e-12 relative, Chan's merge versus one
/// pass), and the one-call matching equals matching the hand-built feature maps.
#[test]
fn mlp_activation_matching_equals_hand_built_features() -> llfc::Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let widths = [5, 12, 9, 3];
    let (a, b) = (
        mlp::init::<f64, _>(&widths, &mut rng)?,
        mlp::init::<f64, _>(&widths, &mut rng)?,
    );
    for rows in [50, 2500] {
        let x = inputs(rows, 5, rows as u64);
        let stats = mlp_activation_stats(&a, &b, x.view())?;
        assert_eq!(stats.keys().collect::<Vec<_>>(), ["P_0", "P_1"]);
        let (fa, fb) = (
            mlp::forward_features(&a, &x)?,
            mlp::forward_features(&b, &x)?,
        );
        let (mut feats_a, mut feats_b) = (BTreeMap::new(), BTreeMap::new());
        for l in 0..2 {
            let (ha, hb) = (
                fa.get(l, FeatureKind::Post).unwrap(),
                fb.get(l, FeatureKind::Post).unwrap(),
            );
            let mut direct = ActivationStats::new(widths[l + 1], widths[l + 1]);
            direct.update(ha.view(), hb.view())?;
            for statistic in [Statistic::InnerProduct, Statistic::Correlation] {
                let (got, want) = (
                    stats[&format!("P_{l}")].statistic(statistic)?,
                    direct.statistic(statistic)?,
                );
                for (g, w) in got.iter().zip(&want) {
                    let tol = if rows <= 1024 {
                        0.0
                    } else {
                        1e-12 * w.abs().max(1.0)
                    };
                    assert!((g - w).abs() <= tol, "{rows} rows, layer {l}: {g} vs {w}");
                }
            }
            feats_a.insert(format!("P_{l}"), ha.clone().into_dyn());
            feats_b.insert(format!("P_{l}"), hb.clone().into_dyn());
        }
        let options = ActivationMatchingOptions::default();
        let one_call = mlp_activation_matching(&a, &b, x.view(), &options)?;
        let by_hand = activation_matching_from_features(&feats_a, &feats_b, &options)?;
        assert_eq!(one_call, by_hand);
    }
    // Errors: no rows, different widths.
    let x0 = Array2::<f64>::zeros((0, 5));
    assert!(matches!(
        mlp_activation_stats(&a, &b, x0.view()),
        Err(Error::EmptyInput { .. })
    ));
    let c = mlp::init::<f64, _>(&[5, 12, 8, 3], &mut rng)?;
    assert!(matches!(
        mlp_activation_matching(&a, &c, inputs(4, 5, 0).view(), &Default::default()),
        Err(Error::ShapeMismatch { .. })
    ));
    Ok(())
}

/// A permuted copy is matched back: the recovered permutation of every layer is the inverse of
/// the planted one (B is matched towards A), and π(B) computes A's function.
#[test]
fn mlp_activation_matching_recovers_planted_permutations() -> llfc::Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let a = mlp::init::<f64, _>(&[6, 10, 10, 4], &mut rng)?;
    let spec = PermutationSpec::mlp(3);
    let planted: BTreeMap<String, Permutation> = spec
        .perm_sizes(&a)?
        .into_iter()
        .map(|(k, n)| (k, Permutation::random(n, &mut rng)))
        .collect();
    let b = apply_permutations(&spec, &planted, &a)?;
    let x = inputs(400, 6, 1);
    let perms = mlp_activation_matching(&a, &b, x.view(), &Default::default())?;
    // Units that are dead on every input (all-zero features) tie with each other and may be
    // matched in any order; every live unit is matched back to its planted place.
    let fa = mlp::forward_features(&a, &x)?;
    for (l, (name, p)) in planted.iter().enumerate() {
        let post = fa.get(l, FeatureKind::Post).unwrap();
        let inverse = p.inverse();
        for (i, column) in post.columns().into_iter().enumerate() {
            if column.iter().any(|&v| v != 0.0) {
                assert_eq!(
                    perms[name].as_slice()[i],
                    inverse.as_slice()[i],
                    "{name} unit {i}"
                );
            }
        }
    }
    // And π(B) computes A's function on the inputs.
    let aligned = apply_permutations(&spec, &perms, &b)?;
    let (ya, yb) = (mlp::forward(&a, &x)?, mlp::forward(&aligned, &x)?);
    assert!(ya.iter().zip(&yb).all(|(u, v)| (u - v).abs() < 1e-12));
    Ok(())
}

/// Token features `[N, T, d]` are `[N·T, d]`: the statistics and the matching equal those of
/// the reshaped 2-D arrays, and the units are the last axis (T ≠ d here).
#[test]
fn token_features_are_samples_times_tokens() -> llfc::Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let (n, t, d) = (7, 3, 5);
    let a3 = Array3::from_shape_fn((n, t, d), |_| rng.random_range(-1.0..1.0));
    let b3 = Array3::from_shape_fn((n, t, d), |_| rng.random_range(-1.0..1.0));
    let flat =
        |x: &Array3<f64>| Array2::from_shape_vec((n * t, d), x.iter().copied().collect()).unwrap();
    let (a2, b2) = (flat(&a3), flat(&b3));
    let mut s3 = ActivationStats::new(d, d);
    s3.update_dyn(a3.view().into_dyn(), b3.view().into_dyn())?;
    let mut s2 = ActivationStats::new(d, d);
    s2.update(a2.view(), b2.view())?;
    assert_eq!(s3.count(), (n * t) as u64);
    assert_eq!(
        s3.statistic(Statistic::Correlation)?,
        s2.statistic(Statistic::Correlation)?
    );
    let map = |x: ArrayD<f64>| BTreeMap::from([("P".to_string(), x)]);
    let options = ActivationMatchingOptions::default();
    assert_eq!(
        activation_matching_from_features(&map(a3.into_dyn()), &map(b3.into_dyn()), &options)?,
        activation_matching_from_features(&map(a2.into_dyn()), &map(b2.into_dyn()), &options)?,
    );
    // Rank 5 is still refused, with the accepted layouts named.
    let five = ArrayD::<f64>::zeros(vec![2, 2, 2, 2, 2]);
    let err = s2.update_dyn(five.view(), five.view()).unwrap_err();
    assert!(
        err.to_string().contains("3 [samples, tokens, units]"),
        "{err}"
    );
    Ok(())
}
