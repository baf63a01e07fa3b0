//! Regression tests of issue 10 through the library: scale-safe metrics (item 7), f32 weights
//! and features whose products overflow f32 (item 8), the builtin MLP spec of a checkpoint
//! (item 9) and non-converged weight matching (item 10).

use std::collections::BTreeMap;

use llfc::matching::activation::{activation_matching_from_features, ActivationMatchingOptions};
use llfc::matching::weight::{weight_matching, WeightMatchingOptions};
use llfc::metrics::{
    commutativity, cosine_distances, llfc_layer, normalised_distance, relative_distance,
    weak_additivity, CosineVariant,
};
use llfc::{apply_permutations, mlp, Params, Permutation, PermutationSpec};
use ndarray::{Array1, Array2, ArrayD};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn random(rows: usize, cols: usize, rng: &mut ChaCha8Rng) -> Array2<f64> {
    // Magnitudes in [0.1, 1] with random signs: every value stays a normal f64 at 1e-300.
    Array2::from_shape_simple_fn((rows, cols), || {
        let m = rng.random_range(0.1..1.0);
        if rng.random::<bool>() {
            m
        } else {
            -m
        }
    })
}

/// `|a − b| ≤ tol` for two optional values that must both be defined.
fn close(a: Option<f64>, b: Option<f64>, tol: f64, what: &str) {
    let (a, b) = (a.expect(what), b.expect(what));
    assert!((a - b).abs() <= tol * (1.0 + b.abs()), "{what}: {a} vs {b}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Item 7: every scale-free metric of `s x`, `s y` equals that of `x`, `y`, for
    /// `|s| = 10^k`, `k ∈ [−300, 300]`. Tolerance 1e-12 relative: scaling rounds every entry by
    /// at most ε = 2^-53 relative, and the metrics are sums of ≤ 24 such terms of O(1).
    #[test]
    fn metrics_do_not_depend_on_the_scale(
        seed in any::<u64>(),
        k in -300.0f64..300.0,
        negative in any::<bool>(),
        alpha in 0.0f64..1.0,
    ) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let s = if negative { -(10f64.powf(k)) } else { 10f64.powf(k) };
        let (x, y, z) = (random(5, 4, &mut rng), random(5, 4, &mut rng), random(5, 4, &mut rng));
        let (xs, ys, zs) = (&x * s, &y * s, &z * s);
        for v in [CosineVariant::Signed, CosineVariant::Absolute] {
            let (d, ds) = (cosine_distances(&x, &y, v).unwrap(), cosine_distances(&xs, &ys, v).unwrap());
            prop_assert_eq!(ds.skipped, 0);
            for (a, b) in d.values.iter().zip(&ds.values) {
                close(*b, *a, 1e-12, "1 - cos");
            }
            let (l, ls) = (llfc_layer(&z, &x, &y, alpha, v).unwrap(), llfc_layer(&zs, &xs, &ys, alpha, v).unwrap());
            prop_assert_eq!(ls.distance.skipped, 0);
            close(ls.distance.mean, l.distance.mean, 1e-12, "E[1 - cos_alpha]");
            close(ls.scale.matrix_coef, l.scale.matrix_coef, 1e-12, "matrix coef");
            // c_i = ⟨z_α, z_lin⟩ / ‖z_lin‖² per sample is a ratio: rounding errors of ~1e-15
            // relative to the O(1) terms become ~1e-15 c_i² in c_i when ‖z_lin‖ is small (c_i
            // large), so each c_i is held to 1e-12 (1 + c_i²) and the mean to 1e-12 (1 + c_max²).
            let mut c_max = 0.0f64;
            for (a, b) in ls.scale.c.values.iter().zip(&l.scale.c.values) {
                let (a, b) = (a.unwrap(), b.unwrap());
                c_max = c_max.max(b.abs());
                prop_assert!((a - b).abs() <= 1e-12 * (1.0 + b * b), "c_i: {} vs {}", a, b);
            }
            let (a, b) = (ls.scale.c.mean.unwrap(), l.scale.c.mean.unwrap());
            prop_assert!((a - b).abs() <= 1e-12 * (1.0 + c_max * c_max), "mean c: {} vs {}", a, b);
        }
        close(normalised_distance(&xs, &ys).unwrap(), normalised_distance(&x, &y).unwrap(), 1e-12, "vanilla");
        close(relative_distance(&xs, &ys).unwrap(), relative_distance(&x, &y).unwrap(), 1e-12, "relative");
        // ReLU is positively homogeneous only: weak additivity is invariant under |s|.
        let (xp, yp) = (&x * s.abs(), &y * s.abs());
        let (w, ws) = (weak_additivity(&x, &y, alpha).unwrap(), weak_additivity(&xp, &yp, alpha).unwrap());
        close(ws.relative, w.relative, 1e-12, "weak additivity");
        close(ws.vanilla, w.vanilla, 1e-12, "weak additivity vanilla");
        prop_assert_eq!(ws.cosine.skipped, w.cosine.skipped);
        // Commutativity: weights scaled by s, inputs by 1/s (both extreme), products O(1).
        let (wa, wb) = (random(3, 4, &mut rng), random(3, 4, &mut rng));
        let c = commutativity(wa.view(), wb.view(), x.view(), y.view()).unwrap();
        let (was, wbs) = (&wa * s, &wb * s);
        let (xi, yi) = (&x / s, &y / s);
        let cs = commutativity(was.view(), wbs.view(), xi.view(), yi.view()).unwrap();
        close(cs.relative, c.relative, 1e-12, "commutativity");
        close(cs.vanilla, c.vanilla, 1e-12, "commutativity vanilla");
        close(cs.baseline, c.baseline, 1e-12, "commutativity baseline");
        let cs2 = commutativity(was.view(), wbs.view(), x.view(), y.view()).unwrap();
        close(Some(cs2.residual_norm / s.abs()), Some(c.residual_norm), 1e-12, "residual norm");
    }
}

/// Item 7, the issue's own numbers: features of 1e200 and 1e-170 (whose squares overflow and
/// underflow f64) give the metrics of the unscaled features, every sample counted.
#[test]
fn extreme_feature_scales_of_the_issue() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let (x, y) = (random(6, 10, &mut rng), random(6, 10, &mut rng));
    let base = cosine_distances(&x, &y, CosineVariant::Signed).unwrap();
    for s in [1e200, 1e-170, f64::MAX / 2.0, 1e-300] {
        let d = cosine_distances(&(&x * s), &(&y * s), CosineVariant::Signed).unwrap();
        assert_eq!((d.count, d.skipped), (6, 0), "{s}");
        close(d.mean, base.mean, 1e-12, "mean");
    }
}

/// A planted pair: B is A with random hidden permutations, everything scaled by `scale`.
fn planted(scale: f32, seed: u64) -> (PermutationSpec, Params<f32>, Params<f32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let a: Params<f32> = mlp::init(&[6, 16, 16, 4], &mut rng).unwrap();
    let a = a.map(|_, t| t * scale);
    let spec = PermutationSpec::mlp(3);
    let perms: BTreeMap<String, Permutation> = spec
        .perm_sizes(&a)
        .unwrap()
        .into_iter()
        .map(|(k, n)| (k, Permutation::random(n, &mut rng)))
        .collect();
    let b = apply_permutations(&spec, &perms, &a).unwrap();
    (spec, a, b)
}

/// Item 8: f32 weights of ~1e20 (products ~1e40 overflow f32) are matched like f64 ones.
#[test]
fn huge_f32_weights_match_like_f64() {
    let options = WeightMatchingOptions::default();
    for scale in [1e20f32, 3e30, 1e38] {
        let (spec, a, b) = planted(scale, 11);
        let m = weight_matching(&spec, &a, &b, &options).unwrap();
        let m64 = weight_matching(&spec, &a.cast::<f64>(), &b.cast::<f64>(), &options).unwrap();
        assert_eq!(m.perms, m64.perms, "{scale}");
        assert!(m.objective.is_finite());
        assert_eq!(apply_permutations(&spec, &m.perms, &b).unwrap(), a);
    }
    // f64 weights whose products overflow even f64: a precise error, never NaN costs.
    let (spec, a, b) = planted(1.0, 11);
    let (a, b) = (
        a.cast::<f64>().map(|_, t| t * 1e160),
        b.cast::<f64>().map(|_, t| t * 1e160),
    );
    let e = weight_matching(&spec, &a, &b, &options).unwrap_err();
    assert!(e.to_string().contains("overflow"), "{e}");
}

/// Item 8 for activation statistics: f32 features of ~1e20.
#[test]
fn huge_f32_features_match_like_f64() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let h = Array2::from_shape_simple_fn((50, 8), || rng.random_range(-1.0f32..1.0));
    let p = Permutation::random(8, &mut rng);
    let hb = Array2::from_shape_fn((50, 8), |(i, j)| h[[i, p.as_slice()[j]]]);
    let feats = |m: &Array2<f32>, s: f32| -> BTreeMap<String, ArrayD<f32>> {
        BTreeMap::from([("P_0".to_string(), m.mapv(|v| v * s).into_dyn())])
    };
    let options = ActivationMatchingOptions::default();
    let small =
        activation_matching_from_features(&feats(&h, 1.0), &feats(&hb, 1.0), &options).unwrap();
    let huge =
        activation_matching_from_features(&feats(&h, 1e20), &feats(&hb, 1e20), &options).unwrap();
    assert_eq!(huge, small);
    // Matching permutes B towards A: B's unit p[i] is A's unit i... and back.
    let q = &small["P_0"];
    for i in 0..8 {
        assert_eq!(p.as_slice()[q.as_slice()[i]], i);
    }
}

fn linear(p: &mut Params<f32>, name: &str, out: usize, inp: usize) {
    p.insert(
        format!("{name}.weight"),
        Array2::<f32>::ones((out, inp)).into_dyn(),
    );
    p.insert(format!("{name}.bias"), Array1::<f32>::ones(out).into_dyn());
}

/// Item 9: `layers.0, layers.2, layers.4` (nn.Sequential) chain; a gap whose widths do not
/// chain, a non-matrix weight and a single layer fail naming what is wrong.
#[test]
fn mlp_spec_accounts_for_every_layer() {
    let mut seq = Params::<f32>::new();
    linear(&mut seq, "layers.0", 16, 6);
    linear(&mut seq, "layers.2", 16, 16);
    linear(&mut seq, "layers.4", 4, 16);
    let spec = PermutationSpec::mlp_from_params(&seq).unwrap();
    let v = spec.validate(&seq).unwrap();
    assert!(v.unmentioned.is_empty(), "{:?}", v.unmentioned);
    assert_eq!(spec.perm_names(), ["P_0", "P_1"]);
    assert_eq!(
        spec.axes("layers.2.weight").unwrap(),
        [Some("P_1".to_string()), Some("P_0".to_string())]
    );
    // The issue's checkpoint: layers 0, 1, 3 where layer 3 does not follow layer 1.
    let mut gap = Params::<f32>::new();
    linear(&mut gap, "layers.0", 16, 6);
    linear(&mut gap, "layers.1", 8, 16);
    linear(&mut gap, "layers.3", 4, 12);
    let e = PermutationSpec::mlp_from_params(&gap)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("layers.3.weight") && e.contains("layers.1.weight"),
        "{e}"
    );
    // Layers 0, 1, 3 that do chain are all taken (three layers, two permutations).
    let mut chained = Params::<f32>::new();
    linear(&mut chained, "layers.0", 16, 6);
    linear(&mut chained, "layers.1", 8, 16);
    linear(&mut chained, "layers.3", 4, 8);
    assert_eq!(
        PermutationSpec::mlp_from_params(&chained)
            .unwrap()
            .perm_names(),
        ["P_0", "P_1"]
    );
    let mut norm = seq.clone();
    norm.insert("layers.1.weight", Array1::<f32>::ones(16).into_dyn());
    let e = PermutationSpec::mlp_from_params(&norm)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("layers.1.weight") && e.contains("JSON spec"),
        "{e}"
    );
    let mut one = Params::<f32>::new();
    linear(&mut one, "layers.0", 4, 6);
    linear(&mut one, "fc.1", 4, 6);
    let e = PermutationSpec::mlp_from_params(&one)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("only `layers.0.weight`") && e.contains("JSON spec"),
        "{e}"
    );
}

/// Item 10: with one permutation on both axes of a tensor, coordinate ascent can oscillate:
/// a run stopped by `max_iter` returns the best iterate seen, marked as not converged.
#[test]
fn non_converged_matching_returns_the_best_iterate() {
    // Declared recurrent: the symmetry rules of `validate` refuse it otherwise.
    let spec = PermutationSpec::new()
        .with("w", &[Some("P"), Some("P")])
        .with_decl("P", llfc::spec::PermDecl::recurrent());
    let mut oscillating = 0;
    for seed in 0..40 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let n = 12;
        let mut a = Params::<f64>::new();
        a.insert("w", random(n, n, &mut rng).into_dyn());
        let mut b = Params::<f64>::new();
        b.insert("w", random(n, n, &mut rng).into_dyn());
        let options = WeightMatchingOptions {
            max_iter: 6,
            seed,
            ..Default::default()
        };
        let m = weight_matching(&spec, &a, &b, &options).unwrap();
        // The objective reported is the one of the permutations returned (recomputed here).
        let back = apply_permutations(&spec, &m.perms, &b).unwrap();
        let direct = a.inner(&back).unwrap();
        assert!((direct - m.objective).abs() < 1e-9, "seed {seed}");
        if m.converged {
            assert_eq!(Some(&m.objective), m.history.last());
            continue;
        }
        let best = m
            .history
            .iter()
            .copied()
            .fold(m.initial_objective, f64::max);
        assert_eq!(m.objective, best, "seed {seed}: {:?}", m.history);
        if best > *m.history.last().unwrap() {
            oscillating += 1;
        }
    }
    // The case of the issue occurs (the last iterate is worse than an earlier one).
    assert!(oscillating > 0, "no oscillating case among the seeds");
}
