//! Integration tests of the reference MLP through the public API: closed forms, gradient check,
//! training, determinism, resuming, errors, and the permutation invariance of the network.

use std::collections::BTreeMap;

use approx::{assert_abs_diff_eq, assert_relative_eq};
use llfc::mlp::{self, SgdConfig, TrainState};
use llfc::{apply_permutations, Error, Float, Params, Permutation, PermutationSpec};
use ndarray::{arr1, arr2, Array2};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

type TestResult = Result<(), Error>;

/// XOR-like data: four Gaussian blobs (σ = 0.3) at (±1, ±1); label 1 iff the signs differ.
fn xor_blobs<F: Float>(n: usize, seed: u64) -> (Array2<F>, Vec<usize>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut gauss = || {
        let (u, v): (f64, f64) = (rng.random(), rng.random());
        (-2.0 * (1.0 - u).ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    };
    let mut labels = Vec::with_capacity(n);
    let x = Array2::from_shape_fn((n, 2), |(i, j)| {
        let (sx, sy) = ((i % 2) as f64 * 2.0 - 1.0, ((i / 2) % 2) as f64 * 2.0 - 1.0);
        if j == 0 {
            labels.push(usize::from(sx != sy));
        }
        F::from_f64([sx, sy][j] + 0.3 * gauss())
    });
    (x, labels)
}

/// A 2-2-1 network small enough to evaluate by hand.
fn tiny<F: Float>() -> Params<F> {
    let f = |v: f64| F::from_f64(v);
    let mut p = Params::new();
    p.insert(
        "layers.0.weight",
        arr2(&[[f(1.0), f(-1.0)], [f(2.0), f(0.5)]]).into_dyn(),
    );
    p.insert("layers.0.bias", arr1(&[f(0.0), f(-1.0)]).into_dyn());
    p.insert("layers.1.weight", arr2(&[[f(1.0), f(-2.0)]]).into_dyn());
    p.insert("layers.1.bias", arr1(&[f(0.5)]).into_dyn());
    p
}

fn check_tiny<F: Float>() -> TestResult {
    let p = tiny::<F>();
    let x = arr2(&[[1.0, 2.0], [3.0, -1.0]]).mapv(F::from_f64);
    // z₀ = x W₀ᵀ + b₀ = [[-1, 2], [4, 4.5]]; h₀ = relu(z₀) = [[0, 2], [4, 4.5]];
    // z₁ = h₀ W₁ᵀ + b₁ = [[0 − 4 + 0.5], [4 − 9 + 0.5]]. All exact in binary floating point.
    let feats = mlp::forward_features(&p, &x)?;
    assert_eq!(
        feats.pre[0],
        arr2(&[[-1.0, 2.0], [4.0, 4.5]]).mapv(F::from_f64)
    );
    assert_eq!(
        feats.post[0],
        arr2(&[[0.0, 2.0], [4.0, 4.5]]).mapv(F::from_f64)
    );
    let logits = arr2(&[[-3.5], [-4.5]]).mapv(F::from_f64);
    assert_eq!(feats.pre[1], logits);
    assert_eq!(feats.post[1], logits, "no ReLU after the last layer");
    assert_eq!(mlp::forward(&p, &x)?, logits);
    assert_eq!(mlp::widths(&p)?, [2, 2, 1]);
    assert_eq!(mlp::num_layers(&p)?, 2);
    Ok(())
}

#[test]
fn forward_matches_hand_computation() -> TestResult {
    check_tiny::<f32>()?;
    check_tiny::<f64>()
}

#[test]
fn cross_entropy_closed_forms() -> TestResult {
    // Uniform logits: ln C.
    let z = Array2::<f64>::from_elem((4, 7), 3.25);
    assert_relative_eq!(
        mlp::cross_entropy(&z, &[0, 6, 3, 3])?,
        7f64.ln(),
        max_relative = 1e-15
    );
    // Two classes with margin d: ln(1 + e^{−d}).
    let z = arr2(&[[1.5, 0.5], [0.0, -2.0]]);
    let expected = 0.5 * ((1.0 + (-1.0f64).exp()).ln() + (1.0 + (-2.0f64).exp()).ln());
    assert_relative_eq!(
        mlp::cross_entropy(&z, &[0, 0])?,
        expected,
        max_relative = 1e-15
    );
    // Huge logits: stable, no overflow. Right with margin 1000 → 0; wrong → 1000.
    let z = arr2(&[[1000.0, 0.0], [1e300, -1e300]]);
    assert_eq!(mlp::cross_entropy(&z, &[0, 0])?, 0.0);
    assert_relative_eq!(
        mlp::cross_entropy(&z, &[1, 0])?,
        500.0,
        max_relative = 1e-15
    );
    let z32 = arr2(&[[3e38f32, -3e38], [0.0, 0.0]]);
    let loss = mlp::cross_entropy(&z32, &[1, 0])?;
    assert!(loss.is_finite());
    assert_relative_eq!(loss, (6e38 + 2f64.ln()) / 2.0, max_relative = 1e-7);
    // Accuracy.
    let z = arr2(&[[0.1f32, 0.9, 0.0], [2.0, -1.0, 1.0], [0.0, 0.0, 5.0]]);
    assert_eq!(mlp::accuracy(&z, &[1, 1, 2])?, 2.0 / 3.0);
    Ok(())
}

#[test]
fn gradients_match_central_differences() -> TestResult {
    // Central differences with step h have truncation error ~h²|ℓ'''|/6 ≈ 1e-13 and round-off
    // ~ε|ℓ|/h ≈ 1e-10 (ε = 2.2e-16, |ℓ| ≈ 1), so 1e-7 absolute + 1e-6 relative is a wide
    // margin. No pre-activation lies within h of a ReLU kink for this seed (the test would fail
    // loudly otherwise).
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let params = mlp::init::<f64, _>(&[3, 5, 4, 3], &mut rng)?;
    let x = Array2::from_shape_fn((7, 3), |_| rng.random_range(-2.0..2.0));
    let labels = [0, 1, 2, 2, 1, 0, 1];
    let (loss, grads) = mlp::gradients(&params, &x, &labels)?;
    assert_abs_diff_eq!(
        loss,
        mlp::evaluate(&params, &x, &labels)?.loss,
        epsilon = 1e-15
    );
    let h = 1e-6;
    for (name, tensor) in params.iter() {
        for (idx, _) in tensor.indexed_iter() {
            let shifted = |delta: f64| {
                params.map(|n, t| {
                    let mut t = t.clone();
                    if n == name {
                        t[&idx] += delta;
                    }
                    t
                })
            };
            let plus = mlp::evaluate(&shifted(h), &x, &labels)?.loss;
            let minus = mlp::evaluate(&shifted(-h), &x, &labels)?.loss;
            let fd = (plus - minus) / (2.0 * h);
            let g = grads[name][&idx];
            assert_relative_eq!(g, fd, epsilon = 1e-7, max_relative = 1e-6);
        }
    }
    Ok(())
}

fn train_xor<F: Float>() -> TestResult {
    let (x, labels) = xor_blobs::<F>(400, 1);
    let (x_test, labels_test) = xor_blobs::<F>(400, 2);
    let params = mlp::init::<F, _>(&[2, 32, 32, 2], &mut ChaCha8Rng::seed_from_u64(0))?;
    let before = mlp::evaluate(&params, &x, &labels)?;
    let config = SgdConfig {
        epochs: 30,
        batch_size: 32,
        ..SgdConfig::default()
    };
    let mut epochs_seen = Vec::new();
    let mut state = TrainState::new(&params)?;
    let history = state.fit(
        &x,
        &labels,
        &config,
        &mut ChaCha8Rng::seed_from_u64(5),
        |s, _| {
            epochs_seen.push(s.epoch());
        },
    )?;
    assert_eq!(epochs_seen, (1..=30).collect::<Vec<_>>());
    assert_eq!(history.len(), 30);
    let after = state.evaluate(&x_test, &labels_test)?;
    assert!(before.loss > 0.5, "{before:?}");
    assert!(after.loss < 0.25 * before.loss, "{before:?} → {after:?}");
    assert!(after.accuracy > 0.95, "{after:?}");
    assert!(history[29] < history[0]);
    Ok(())
}

#[test]
fn training_solves_xor_blobs_f32_and_f64() -> TestResult {
    train_xor::<f32>()?;
    train_xor::<f64>()
}

fn bits<F: Float>(p: &Params<F>) -> Vec<u64> {
    p.iter()
        .flat_map(|(_, t)| t.iter().map(|v| v.as_f64().to_bits()).collect::<Vec<_>>())
        .collect()
}

#[test]
fn training_is_deterministic_and_resumable() -> TestResult {
    let (x, labels) = xor_blobs::<f32>(200, 3);
    let params = mlp::init::<f32, _>(&[2, 16, 16, 2], &mut ChaCha8Rng::seed_from_u64(0))?;
    let config = |epochs| SgdConfig {
        epochs,
        batch_size: 16,
        nesterov: true,
        weight_decay: 1e-4,
        ..SgdConfig::default()
    };
    let a = mlp::train(&params, &x, &labels, &config(5), 7)?;
    let b = mlp::train(&params, &x, &labels, &config(5), 7)?;
    let c = mlp::train(&params, &x, &labels, &config(5), 8)?;
    assert_eq!(bits(&a.params()), bits(&b.params()));
    assert_ne!(bits(&a.params()), bits(&c.params()));
    assert_eq!(a.epoch(), 5);
    assert_eq!(a.clone().into_params(), a.params());

    // Interrupt after 2 epochs; continue a clone, and a state rebuilt from its parts, with the
    // same RNG: both are bit-identical to the uninterrupted run.
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut part = TrainState::new(&params)?;
    part.fit(&x, &labels, &config(2), &mut rng, |_, _| {})?;
    let mut rebuilt = TrainState::from_parts(&part.params(), &part.velocity(), part.epoch())?;
    assert_eq!(rebuilt, part);
    let mut rng2 = rng.clone();
    let mut clone = part.clone();
    clone.fit(&x, &labels, &config(3), &mut rng, |_, _| {})?;
    rebuilt.fit(&x, &labels, &config(3), &mut rng2, |_, _| {})?;
    assert_eq!(bits(&clone.params()), bits(&a.params()));
    assert_eq!(bits(&clone.velocity()), bits(&a.velocity()));
    assert_eq!(clone, rebuilt);

    // Spawning: children with different data orders diverge.
    let mut child = part.clone();
    child.fit(
        &x,
        &labels,
        &config(3),
        &mut ChaCha8Rng::seed_from_u64(99),
        |_, _| {},
    )?;
    assert!(child.params().distance(&a.params())? > 0.0);
    Ok(())
}

#[test]
fn init_follows_pytorch_bounds_and_precision_independence() -> TestResult {
    let p64 = mlp::init::<f64, _>(&[9, 16, 4], &mut ChaCha8Rng::seed_from_u64(4))?;
    let p32 = mlp::init::<f32, _>(&[9, 16, 4], &mut ChaCha8Rng::seed_from_u64(4))?;
    assert_eq!(p32, p64.cast::<f32>());
    for (name, bound) in [("layers.0", 1.0 / 3.0), ("layers.1", 0.25)] {
        for kind in ["weight", "bias"] {
            let t = &p64[format!("{name}.{kind}").as_str()];
            assert!(t.iter().all(|v| v.abs() < bound));
            assert!(t.iter().any(|v| v.abs() > 0.5 * bound));
        }
    }
    assert!(matches!(
        mlp::init::<f64, _>(&[3], &mut ChaCha8Rng::seed_from_u64(0)),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        mlp::init::<f64, _>(&[3, 0, 2], &mut ChaCha8Rng::seed_from_u64(0)),
        Err(Error::InvalidArgument { .. })
    ));
    Ok(())
}

#[test]
fn bad_inputs_are_errors_not_panics() -> TestResult {
    let p = tiny::<f64>();
    let x = arr2(&[[1.0, 2.0]]);
    let err = |r: Result<Array2<f64>, Error>| r.unwrap_err();
    assert!(matches!(
        err(mlp::forward(&p, &arr2(&[[1.0, 2.0, 3.0]]))),
        Error::ShapeMismatch { .. }
    ));
    assert!(matches!(
        err(mlp::forward(&p, &arr2(&[[1.0, f64::NAN]]))),
        Error::NonFinite { .. }
    ));
    assert!(matches!(
        mlp::evaluate(&p, &x, &[1]),
        Err(Error::InvalidArgument { name: "labels", .. })
    ));
    assert!(matches!(
        mlp::evaluate(&p, &x, &[0, 0]),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        mlp::cross_entropy(&arr2(&[[f64::INFINITY, 0.0]]), &[0]),
        Err(Error::NonFinite { .. })
    ));
    assert!(matches!(
        mlp::accuracy(&Array2::<f32>::zeros((0, 3)), &[]),
        Err(Error::EmptyInput { .. })
    ));

    let with = |f: &dyn Fn(&mut Params<f64>)| {
        let mut q = tiny::<f64>();
        f(&mut q);
        mlp::forward(&q, &x).unwrap_err()
    };
    // A gap in the numbering: layers.2 present but layers.1 missing.
    let e = with(&|q| {
        let w = q.remove("layers.1.weight").unwrap();
        let b = q.remove("layers.1.bias").unwrap();
        q.insert("layers.2.weight", w);
        q.insert("layers.2.bias", b);
    });
    assert!(
        matches!(&e, Error::MissingParam { param, .. } if param == "layers.1.weight"),
        "{e}"
    );
    let e = with(&|q| {
        q.remove("layers.0.bias");
    });
    assert!(
        matches!(&e, Error::MissingParam { param, .. } if param == "layers.0.bias"),
        "{e}"
    );
    let e = with(&|q| {
        q.insert("layers.1.weight", Array2::zeros((1, 3)).into_dyn());
    });
    assert!(
        matches!(&e, Error::ShapeMismatch { what, .. } if what.contains("layers.1.weight")),
        "{e}"
    );
    let e = with(&|q| {
        q.insert("layers.0.bias", arr1(&[0.0; 3]).into_dyn());
    });
    assert!(
        matches!(&e, Error::ShapeMismatch { what, .. } if what.contains("layers.0.bias")),
        "{e}"
    );
    let e = with(&|q| {
        q.insert("layers.0.weight", ndarray::ArrayD::zeros(vec![2, 2, 1]));
    });
    assert!(
        matches!(&e, Error::RankMismatch { param, .. } if param == "layers.0.weight"),
        "{e}"
    );
    let e = with(&|q| {
        q.insert("fc.weight", Array2::zeros((1, 1)).into_dyn());
    });
    assert!(
        matches!(&e, Error::UnexpectedParam { param, .. } if param == "fc.weight"),
        "{e}"
    );
    let e = with(&|q| {
        q.insert("layers.1.bias", arr1(&[f64::NAN]).into_dyn());
    });
    assert!(
        matches!(&e, Error::NonFinite { what } if what.contains("layers.1.bias")),
        "{e}"
    );
    assert!(matches!(
        mlp::widths(&Params::<f32>::new()),
        Err(Error::EmptyInput { .. })
    ));

    // Training: bad configs, labels and divergence.
    let mut state = TrainState::new(&p)?;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    for bad in [
        SgdConfig {
            learning_rate: 0.0,
            ..SgdConfig::default()
        },
        SgdConfig {
            momentum: 1.0,
            ..SgdConfig::default()
        },
        SgdConfig {
            weight_decay: f64::NAN,
            ..SgdConfig::default()
        },
        SgdConfig {
            batch_size: 0,
            ..SgdConfig::default()
        },
        SgdConfig {
            momentum: 0.0,
            nesterov: true,
            ..SgdConfig::default()
        },
    ] {
        assert!(
            matches!(bad.validate(), Err(Error::InvalidArgument { .. })),
            "{bad:?}"
        );
        assert!(state.train_epoch(&x, &[0], &bad, &mut rng).is_err());
    }
    let cfg = SgdConfig::default();
    assert!(matches!(
        state.train_epoch(&x, &[1], &cfg, &mut rng),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        state.train_epoch(&arr2(&[[1.0]]), &[0], &cfg, &mut rng),
        Err(Error::ShapeMismatch { .. })
    ));
    assert_eq!(state.epoch(), 0, "failed epochs do not count");
    let huge = SgdConfig {
        learning_rate: 1e200,
        ..SgdConfig::default()
    };
    let (xs, ys) = xor_blobs::<f64>(64, 0);
    let mut state = TrainState::new(&mlp::init(&[2, 8, 2], &mut rng)?)?;
    let diverged = (0..20).find_map(|_| state.train_epoch(&xs, &ys, &huge, &mut rng).err());
    assert!(
        matches!(diverged, Some(Error::NonFinite { .. })),
        "{diverged:?}"
    );
    let v = Params::<f64>::new();
    assert!(TrainState::from_parts(&p, &v, 0).is_err());
    Ok(())
}

/// A random MLP, its spec, random hidden permutations and a batch of inputs.
fn permuted_setup(
    widths: &[usize],
    seed: u64,
) -> (
    Params<f64>,
    PermutationSpec,
    BTreeMap<String, Permutation>,
    Array2<f64>,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let params = mlp::init::<f64, _>(widths, &mut rng).unwrap();
    let spec = PermutationSpec::mlp(widths.len() - 1);
    let perms = spec
        .perm_sizes(&params)
        .unwrap()
        .into_iter()
        .map(|(name, n)| (name, Permutation::random(n, &mut rng)))
        .collect();
    let x = Array2::from_shape_fn((9, widths[0]), |_| rng.random_range(-3.0..3.0));
    (params, spec, perms, x)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Permuting hidden units leaves the function unchanged. In f64 the only change is the
    /// summation order inside each dot product (≤ 16 terms of magnitude ≲ 3): differences are a
    /// few ulp, so |Δ| ≤ 1e-12 · max(1, |y|) holds with a margin of ~1000. In f32, reordering a
    /// sum of n terms moves it by ~ε₃₂ · √n · Σ|terms| per layer (ε₃₂ = 1.2e-7, n ≤ 16, ≤ 4
    /// layers, |terms| ≲ 3): ≲ 1e-5 · max(1, |y|), about 5× that estimate.
    #[test]
    fn permuted_mlp_computes_the_same_function(
        widths in prop::collection::vec(1usize..=16, 3..=5),
        seed in any::<u64>(),
    ) {
        let (params, spec, perms, x) = permuted_setup(&widths, seed);
        spec.validate(&params).unwrap();
        let permuted = apply_permutations(&spec, &perms, &params).unwrap();
        let y = mlp::forward(&params, &x).unwrap();
        let y_perm = mlp::forward(&permuted, &x).unwrap();
        for (a, b) in y.iter().zip(&y_perm) {
            prop_assert!((a - b).abs() <= 1e-12 * a.abs().max(1.0), "{a} vs {b}");
        }
        // Hidden features are permuted copies: W' = W[p, :] gives h'[:, j] = h[:, p[j]]; the
        // first layer's pre-activations are computed identically, hence bit-equal.
        let (f, fp) = (mlp::forward_features(&params, &x).unwrap(), mlp::forward_features(&permuted, &x).unwrap());
        let p0 = perms["P_0"].as_slice();
        for (j, &pj) in p0.iter().enumerate() {
            prop_assert_eq!(fp.pre[0].column(j), f.pre[0].column(pj));
        }
        // The same in f32.
        let (p32, perm32) = (params.cast::<f32>(), permuted.cast::<f32>());
        let x32 = x.mapv(|v| v as f32);
        let (y32, y32p) = (mlp::forward(&p32, &x32).unwrap(), mlp::forward(&perm32, &x32).unwrap());
        for (a, b) in y32.iter().zip(&y32p) {
            prop_assert!((a - b).abs() <= 1e-5 * a.abs().max(1.0), "{a} vs {b}");
        }
        // The inverse permutations restore the parameters bit for bit (pure data movement).
        let inverse: BTreeMap<String, Permutation> =
            perms.iter().map(|(k, p)| (k.clone(), p.inverse())).collect();
        let back = apply_permutations(&spec, &inverse, &permuted).unwrap();
        prop_assert_eq!(bits(&back), bits(&params));
        prop_assert_eq!(back.names().collect::<Vec<_>>(), params.names().collect::<Vec<_>>());
    }
}
