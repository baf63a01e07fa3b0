//! Commutativity matching (`llfc::matching::commutativity`) through the public API: monotone
//! descent, the closed-form objective against the residual matrices of raw features, planted
//! permutations, determinism and thread-count independence, bad input.

use std::collections::BTreeMap;

use llfc::matching::commutativity::{
    commutativity_matching, commutativity_objective, mlp_commutativity_stats,
    CommutativityMatching, CommutativityMatchingOptions, CommutativityStart, CommutativityStats,
};
use llfc::metrics::commutativity_residual;
use llfc::{apply_permutations, mlp, Error, Float, Params, Permutation, PermutationSpec, Result};
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const STARTS: [CommutativityStart; 3] = [
    CommutativityStart::Identity,
    CommutativityStart::WeightMatching,
    CommutativityStart::ActivationMatching,
];

/// Two independently initialised MLPs of `widths` and `n` random inputs.
fn pair<F: Float>(widths: &[usize], n: usize, seed: u64) -> (Params<F>, Params<F>, Array2<F>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let a = mlp::init(widths, &mut rng).unwrap();
    let b = mlp::init(widths, &mut rng).unwrap();
    let x = Array2::from_shape_fn((n, widths[0]), |_| F::from_f64(rng.random_range(-1.0..1.0)));
    (a, b, x)
}

/// Random permutations `P_0 … P_{L−2}` of the MLP `params`.
fn random_perms(params: &Params<f64>, rng: &mut ChaCha8Rng) -> BTreeMap<String, Permutation> {
    let layers = mlp::num_layers(params).unwrap();
    PermutationSpec::mlp(layers)
        .perm_sizes(params)
        .unwrap()
        .into_iter()
        .map(|(k, n)| (k, Permutation::random(n, rng)))
        .collect()
}

/// `J(π)` from raw features, through the residual matrices:
/// `(1/N) Σ_{ℓ ≥ 1} ‖(H_A − H̃_B)(W_A − W̃_B)ᵀ‖²_F` with B permuted by `perms` and `H` the
/// inputs of layer ℓ; the ℓ = 0 term (input X shared) is returned too and must be 0.
fn objective_from_features(
    a: &Params<f64>,
    b: &Params<f64>,
    x: &Array2<f64>,
    perms: &BTreeMap<String, Permutation>,
) -> Result<Vec<f64>> {
    let layers = mlp::num_layers(a)?;
    let b = apply_permutations(&PermutationSpec::mlp(layers), perms, b)?;
    let (fa, fb) = (mlp::forward_features(a, x)?, mlp::forward_features(&b, x)?);
    let n = x.nrows() as f64;
    (0..layers)
        .map(|l| {
            let name = mlp::weight_name(l);
            let (wa, wb) = (a.require(&name)?, b.require(&name)?);
            let wa = wa.view().into_dimensionality().unwrap();
            let wb = wb.view().into_dimensionality().unwrap();
            let (ha, hb) = if l == 0 {
                (x.view(), x.view())
            } else {
                (fa.post[l - 1].view(), fb.post[l - 1].view())
            };
            let r = commutativity_residual(wa, wb, ha, hb)?;
            Ok(r.iter().map(|v| v * v).sum::<f64>() / n)
        })
        .collect()
}

fn options(start: CommutativityStart) -> CommutativityMatchingOptions {
    CommutativityMatchingOptions {
        start,
        ..CommutativityMatchingOptions::default()
    }
}

/// Every step keeps or lowers `J`, steps chain, and the totals agree with the history.
fn assert_monotone(m: &CommutativityMatching) {
    let mut current = m.initial_objective;
    for step in &m.history {
        assert_eq!(step.before, current, "{step:?}");
        assert!(step.after() <= step.before, "J increased: {step:?}");
        if step.accepted {
            assert!(step.candidate < step.before, "{step:?}");
        }
        current = step.after();
    }
    assert_eq!(current, m.objective);
    assert!(m.objective <= m.initial_objective);
}

#[test]
fn j_never_increases_along_the_descent() -> Result<()> {
    for seed in 0..4 {
        let (a, b, x) = pair::<f64>(&[6, 16, 12, 16, 4], 200, seed);
        let stats = mlp_commutativity_stats(&a, &b, x.view())?;
        for start in STARTS {
            let m = commutativity_matching(&a, &b, &stats, &options(start))?;
            assert_monotone(&m);
            assert!(!m.history.is_empty());
            if start == CommutativityStart::Identity {
                assert!(
                    m.history.iter().any(|s| s.accepted),
                    "seed {seed}: no progress"
                );
                assert!(m.objective < m.initial_objective);
            }
            assert!(m.converged, "seed {seed}, {start:?}: {} sweeps", m.sweeps);
            assert!(m.layer_objectives[0] == 0.0);
        }
    }
    Ok(())
}

#[test]
fn closed_form_objective_matches_the_residual_matrices() -> Result<()> {
    // Relative tolerance 1e-9: the closed form expands ‖D Mᵀ‖² into second moments in f64,
    // whose rounding (≈ 1e-16 of ‖C‖ ‖M‖²) is far below it at these sizes.
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for seed in 0..3 {
        let (a, b, x) = pair::<f64>(&[5, 10, 9, 3], 300, seed);
        let stats = mlp_commutativity_stats(&a, &b, x.view())?;
        for _ in 0..3 {
            let perms = random_perms(&a, &mut rng);
            let closed = commutativity_objective(&a, &b, &stats, &perms)?;
            let direct = objective_from_features(&a, &b, &x, &perms)?;
            assert_eq!(direct[0], 0.0, "the input layer's residual vanishes");
            assert_eq!(closed.layers[0], 0.0);
            for (c, d) in closed.layers.iter().zip(&direct) {
                assert!((c - d).abs() <= 1e-9 * d.abs().max(1e-12), "{c} vs {d}");
            }
            let total: f64 = direct.iter().sum();
            assert!((closed.total - total).abs() <= 1e-9 * total);
        }
        // The descent's own bookkeeping agrees with the independent evaluation.
        let m = commutativity_matching(&a, &b, &stats, &options(CommutativityStart::Identity))?;
        let check = commutativity_objective(&a, &b, &stats, &m.perms)?;
        assert!((check.total - m.objective).abs() <= 1e-9 * m.objective.max(1e-12));
    }
    Ok(())
}

#[test]
fn closed_form_objective_in_f32_matches_f64() -> Result<()> {
    // f32 features are accumulated in f64: the objective agrees with the f64 pipeline to the
    // f32 rounding of the features (relative 1e-4).
    let (a, b, x) = pair::<f64>(&[5, 10, 9, 3], 300, 4);
    let (a32, b32, x32) = (a.cast::<f32>(), b.cast::<f32>(), x.mapv(|v| v as f32));
    let perms = random_perms(&a, &mut ChaCha8Rng::seed_from_u64(2));
    let j64 = commutativity_objective(&a, &b, &mlp_commutativity_stats(&a, &b, x.view())?, &perms)?;
    let s32 = mlp_commutativity_stats(&a32, &b32, x32.view())?;
    let j32 = commutativity_objective(&a32, &b32, &s32, &perms)?;
    assert!((j32.total - j64.total).abs() <= 1e-4 * j64.total);
    Ok(())
}

/// The most hidden units of one layer of `a` whose post-activation is 0 on every row of `x`.
fn most_dead_units(a: &Params<f64>, x: &Array2<f64>) -> Result<usize> {
    let f = mlp::forward_features(a, x)?;
    let hidden = &f.post[..f.post.len() - 1];
    Ok(hidden
        .iter()
        .map(|h| {
            h.columns()
                .into_iter()
                .filter(|c| c.iter().all(|&v| v == 0.0))
                .count()
        })
        .max()
        .unwrap_or(0))
}

#[test]
fn a_planted_permutation_is_recovered() -> Result<()> {
    // B is a permuted copy of A, so H_B = H_A P_ℓᵀ exactly at every hidden layer and J = 0 at
    // the planted permutation. From every start, including the identity (where the feature-bound
    // candidate jumps to it layer by layer), the descent must reach it. A unit that is dead on
    // every sample (post-activation 0) is invisible to J once its neighbours are matched, so
    // where a layer of A has two, recovery means that π(B) computes A's features exactly, unit
    // by unit; otherwise the permutation is unique, and recovery means π(B) = A.
    let shapes: [&[usize]; 4] = [
        &[6, 16, 12, 4],
        &[4, 8, 8, 3],
        &[8, 32, 32, 5],
        &[6, 16, 12, 16, 4],
    ];
    let mut exact = 0;
    for widths in shapes {
        let spec = PermutationSpec::mlp(widths.len() - 1);
        for seed in 0..10 {
            let (a, _, x) = pair::<f64>(widths, 200, seed);
            let mut rng = ChaCha8Rng::seed_from_u64(100 + seed);
            let b = apply_permutations(&spec, &random_perms(&a, &mut rng), &a)?;
            let stats = mlp_commutativity_stats(&a, &b, x.view())?;
            let scale = commutativity_objective(&a, &b, &stats, &identities(&a))?.total;
            assert!(scale > 1e-3);
            let identifiable = most_dead_units(&a, &x)? < 2;
            let fa = mlp::forward_features(&a, &x)?;
            for start in STARTS {
                let m = commutativity_matching(&a, &b, &stats, &options(start))?;
                assert_monotone(&m);
                let at = format!("{widths:?}, seed {seed}, {start:?}: J = {}", m.objective);
                assert!(m.objective.abs() <= 1e-12 * scale, "{at}");
                let back = apply_permutations(&spec, &m.perms, &b)?;
                let fb = mlp::forward_features(&back, &x)?;
                for (ha, hb) in fa.post.iter().zip(&fb.post) {
                    let err = (ha - hb).iter().fold(0.0, |e: f64, v| e.max(v.abs()));
                    assert!(err <= 1e-12, "{at}: features differ by {err}");
                }
                if identifiable {
                    assert_eq!(back, a, "{at}");
                    exact += usize::from(start == CommutativityStart::Identity);
                }
                if identifiable && start != CommutativityStart::Identity {
                    // Weight and activation matching already find it: a fixed point. (With
                    // two dead units J is flat across their matches, and a move that lowers it
                    // by rounding, ≈ 1e-18, may be taken.)
                    assert!(m.history.iter().all(|s| !s.accepted), "{at}");
                }
            }
        }
    }
    // The exact check must not be vacuous.
    assert!(
        exact >= 15,
        "{exact} of 40 pairs with a unique planted permutation"
    );
    Ok(())
}

fn identities(a: &Params<f64>) -> BTreeMap<String, Permutation> {
    PermutationSpec::mlp(mlp::num_layers(a).unwrap())
        .identity_perms(a)
        .unwrap()
}

#[test]
fn deterministic_for_a_seed() -> Result<()> {
    let (a, b, x) = pair::<f32>(&[6, 24, 24, 24, 4], 256, 7);
    let stats = mlp_commutativity_stats(&a, &b, x.view())?;
    for start in STARTS {
        let opts = CommutativityMatchingOptions {
            seed: 9,
            ..options(start)
        };
        let first = commutativity_matching(&a, &b, &stats, &opts)?;
        assert_eq!(first, commutativity_matching(&a, &b, &stats, &opts)?);
        // A fixed order is honoured and deterministic too.
        let fixed = CommutativityMatchingOptions {
            order: Some(vec![2, 0, 1]),
            ..opts
        };
        let m = commutativity_matching(&a, &b, &stats, &fixed)?;
        assert_eq!(m.history.first().map(|s| s.layer), Some(2));
        assert_eq!(m, commutativity_matching(&a, &b, &stats, &fixed)?);
    }
    Ok(())
}

#[test]
fn independent_of_the_thread_count() -> Result<()> {
    // Widths above the parallel products' block size (64 rows), so the blocks really split.
    let (a, b, x) = pair::<f32>(&[8, 160, 144, 5], 600, 3);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| -> Result<_> {
            let stats = mlp_commutativity_stats(&a, &b, x.view())?;
            STARTS
                .iter()
                .map(|&s| commutativity_matching(&a, &b, &stats, &options(s)))
                .collect::<Result<Vec<_>>>()
        })
    };
    assert_eq!(run(1)?, run(3)?);
    Ok(())
}

#[test]
fn bad_input_is_an_error() -> Result<()> {
    let (a, b, x) = pair::<f64>(&[5, 8, 7, 3], 50, 1);
    let stats = mlp_commutativity_stats(&a, &b, x.view())?;
    let opts = CommutativityMatchingOptions::default();
    // Shape mismatch: B has other widths.
    let (c, _, _) = pair::<f64>(&[5, 8, 6, 3], 50, 1);
    assert!(matches!(
        commutativity_matching(&a, &c, &stats, &opts),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        mlp_commutativity_stats(&a, &c, x.view()),
        Err(Error::ShapeMismatch { .. })
    ));
    // Wrong number of layers: one statistics entry too few, one too many, a wrong width.
    for bad in [
        stats[..1].to_vec(),
        [stats.clone(), vec![stats[0].clone()]].concat(),
        vec![stats[1].clone(), stats[0].clone()],
    ] {
        assert!(matches!(
            commutativity_matching(&a, &b, &bad, &opts),
            Err(Error::ShapeMismatch { .. })
        ));
    }
    // NaN in a weight and in the features.
    let mut nan = b.clone();
    nan.insert("layers.1.weight", {
        let mut w = b.require("layers.1.weight")?.clone();
        w[[0, 0]] = f64::NAN;
        w
    });
    assert!(matches!(
        commutativity_matching(&a, &nan, &stats, &opts),
        Err(Error::NonFinite { .. })
    ));
    let mut st = CommutativityStats::new(2);
    let h = ndarray::array![[1.0, f64::NAN]];
    assert!(matches!(
        st.update(h.view(), h.view()),
        Err(Error::NonFinite { .. })
    ));
    // Statistics that saw no sample.
    let empty = vec![CommutativityStats::new(8), CommutativityStats::new(7)];
    assert!(matches!(
        commutativity_matching(&a, &b, &empty, &opts),
        Err(Error::EmptyInput { .. })
    ));
    // No hidden layer.
    let (d, e, y) = pair::<f64>(&[5, 3], 10, 1);
    assert!(mlp_commutativity_stats(&d, &e, y.view())?.is_empty());
    assert!(matches!(
        commutativity_matching(&d, &e, &[], &opts),
        Err(Error::EmptyInput { .. })
    ));
    // Bad options.
    for bad in [
        CommutativityMatchingOptions {
            tolerance: f64::NAN,
            ..opts.clone()
        },
        CommutativityMatchingOptions {
            order: Some(vec![0, 0]),
            ..opts.clone()
        },
    ] {
        assert!(matches!(
            commutativity_matching(&a, &b, &stats, &bad),
            Err(Error::InvalidArgument { .. })
        ));
    }
    // Missing permutation in the objective.
    assert!(commutativity_objective(&a, &b, &stats, &BTreeMap::new()).is_err());
    Ok(())
}
