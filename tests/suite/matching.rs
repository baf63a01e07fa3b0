//! Weight matching and activation matching through the public API: planted permutations are
//! recovered for every builtin spec, trained pairs reach a fixed point, a fixed-order run equals
//! a plain reference implementation written here, and results do not depend on threads.

use std::collections::BTreeMap;

use llfc::assignment::linear_sum_assignment;
use llfc::matching::activation::{
    activation_matching, activation_matching_from_features, ActivationMatchingOptions,
    ActivationStats, Statistic,
};
use llfc::matching::weight::{
    single_step_gain, weight_matching, weight_matching_controlled, weight_matching_with_progress,
    MatchingEvent, WeightMatchingOptions,
};
use llfc::mlp::{self, SgdConfig};
use llfc::spec::{Shortcut, VggConfig};
use llfc::{apply_permutations, Error, Params, Permutation, PermutationSpec};
use ndarray::{Array1, Array2, ArrayD, Axis, IxDyn};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

type Perms = BTreeMap<String, Permutation>;

/// Parameter names and shapes.
type Shapes = Vec<(String, Vec<usize>)>;

fn gaussian(rng: &mut ChaCha8Rng) -> f64 {
    // Box–Muller; u1 in (0, 1] keeps the logarithm finite.
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Random parameters of the shapes `spec` needs, given each tensor's shape.
fn random_params(shapes: &[(String, Vec<usize>)], seed: u64) -> Params<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    shapes
        .iter()
        .map(|(n, s)| {
            (
                n.clone(),
                ArrayD::from_shape_fn(IxDyn(s), |_| gaussian(&mut rng)),
            )
        })
        .collect()
}

fn resnet20_shapes(w: usize, shortcut: Shortcut) -> Vec<(String, Vec<usize>)> {
    let mut v = vec![("conv1.weight".to_string(), vec![w, 3, 3, 3])];
    let bn = |v: &mut Vec<(String, Vec<usize>)>, p: &str, c: usize| {
        for f in ["weight", "bias", "running_mean", "running_var"] {
            v.push((format!("{p}.{f}"), vec![c]));
        }
    };
    bn(&mut v, "bn1", w);
    let mut cin = w;
    for s in 1..=3 {
        let c = w << (s - 1);
        for b in 0..3 {
            let pre = format!("layer{s}.{b}");
            v.push((format!("{pre}.conv1.weight"), vec![c, cin, 3, 3]));
            bn(&mut v, &format!("{pre}.bn1"), c);
            v.push((format!("{pre}.conv2.weight"), vec![c, c, 3, 3]));
            bn(&mut v, &format!("{pre}.bn2"), c);
            if cin != c && shortcut == Shortcut::Conv1x1 {
                v.push((format!("{pre}.shortcut.0.weight"), vec![c, cin, 1, 1]));
                bn(&mut v, &format!("{pre}.shortcut.1"), c);
            }
            cin = c;
        }
    }
    v.push(("linear.weight".into(), vec![10, 4 * w]));
    v.push(("linear.bias".into(), vec![10]));
    v
}

fn vgg_shapes(widths: &[usize], num_linear: usize) -> Vec<(String, Vec<usize>)> {
    let num_conv = widths.len() - num_linear;
    let mut v = Vec::new();
    let mut cin = 3;
    for (i, &c) in widths[..num_conv].iter().enumerate() {
        v.push((format!("conv{i}.weight"), vec![c, cin, 3, 3]));
        for f in ["weight", "bias", "running_mean", "running_var"] {
            v.push((format!("bn{i}.{f}"), vec![c]));
        }
        cin = c;
    }
    for (j, &c) in widths[num_conv..].iter().enumerate() {
        v.push((format!("fc{j}.weight"), vec![c, cin]));
        v.push((format!("fc{j}.bias"), vec![c]));
        cin = c;
    }
    v
}

fn mlp_shapes(widths: &[usize]) -> Vec<(String, Vec<usize>)> {
    (0..widths.len() - 1)
        .flat_map(|i| {
            [
                (format!("layers.{i}.weight"), vec![widths[i + 1], widths[i]]),
                (format!("layers.{i}.bias"), vec![widths[i + 1]]),
            ]
        })
        .collect()
}

fn random_perms(spec: &PermutationSpec, p: &Params<f64>, seed: u64) -> Perms {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    spec.perm_sizes(p)
        .unwrap()
        .into_iter()
        .map(|(k, n)| (k, Permutation::random(n, &mut rng)))
        .collect()
}

fn inverse(perms: &Perms) -> Perms {
    perms
        .iter()
        .map(|(k, p)| (k.clone(), p.inverse()))
        .collect()
}

/// B = A with the planted permutations *undone*, so that matching B onto A must return exactly
/// the planted permutations (A's unit i ↔ B's unit p[i]).
fn planted_case(spec: &PermutationSpec, a: &Params<f64>, seed: u64) -> (Params<f64>, Perms) {
    let planted = random_perms(spec, a, seed);
    let b = apply_permutations(spec, &inverse(&planted), a).unwrap();
    (b, planted)
}

#[test]
fn weight_matching_recovers_planted_permutations_for_every_builtin_spec() {
    let cases: Vec<(&str, PermutationSpec, Shapes)> = vec![
        (
            "mlp",
            PermutationSpec::mlp(4),
            mlp_shapes(&[20, 32, 24, 16, 5]),
        ),
        (
            "vgg",
            PermutationSpec::vgg(&VggConfig {
                num_conv: 4,
                num_linear: 2,
                batch_norm: true,
                conv_bias: false,
            }),
            vgg_shapes(&[8, 12, 16, 16, 20, 10], 2),
        ),
        (
            "resnet20-conv",
            PermutationSpec::resnet20(Shortcut::Conv1x1),
            resnet20_shapes(8, Shortcut::Conv1x1),
        ),
        (
            "resnet20-pad",
            PermutationSpec::resnet20(Shortcut::Padding),
            resnet20_shapes(8, Shortcut::Padding),
        ),
    ];
    for (label, spec, shapes) in cases {
        for seed in 0..3 {
            let a = random_params(&shapes, 100 + seed);
            let (b, planted) = planted_case(&spec, &a, seed);
            let m = weight_matching(
                &spec,
                &a,
                &b,
                &WeightMatchingOptions {
                    seed,
                    ..Default::default()
                },
            )
            .unwrap();
            assert_eq!(m.perms, planted, "{label} seed {seed}");
            assert!(m.converged);
            // ⟨θ_A, π(θ_B)⟩ = ⟨θ_A, θ_A⟩: the same products summed in another order.
            let aa = a.inner(&a).unwrap();
            assert!(
                (m.objective - aa).abs() <= 1e-12 * aa,
                "{label}: {} vs {aa}",
                m.objective
            );
            assert!(m.initial_objective < m.objective);
        }
    }
}

/// Features of a random MLP and of its permuted copy: activation matching finds the planted
/// permutation from every statistic.
#[test]
fn activation_matching_recovers_planted_permutations() {
    let spec = PermutationSpec::mlp(3);
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let a: Params<f64> = mlp::init(&[10, 40, 30, 4], &mut rng).unwrap();
    let (b, planted) = planted_case(&spec, &a, 9);
    let x = Array2::from_shape_fn((500, 10), |_| gaussian(&mut rng));
    let (fa, fb) = (
        mlp::forward_features(&a, &x).unwrap(),
        mlp::forward_features(&b, &x).unwrap(),
    );
    for statistic in [
        Statistic::InnerProduct,
        Statistic::Covariance,
        Statistic::Correlation,
    ] {
        let mut stats = BTreeMap::new();
        for layer in 0..2 {
            let mut st = ActivationStats::new(fa.post[layer].ncols(), fb.post[layer].ncols());
            // Streamed in uneven batches.
            for (ca, cb) in fa.post[layer]
                .axis_chunks_iter(Axis(0), 77)
                .zip(fb.post[layer].axis_chunks_iter(Axis(0), 77))
            {
                st.update(ca, cb).unwrap();
            }
            assert_eq!(st.count(), 500);
            stats.insert(format!("P_{layer}"), st);
        }
        let opts = ActivationMatchingOptions {
            statistic,
            ..Default::default()
        };
        assert_eq!(
            activation_matching(&stats, &opts).unwrap(),
            planted,
            "{statistic:?}"
        );
    }
    // The whole-array convenience agrees.
    let feats = |f: &mlp::Features<f64>| -> BTreeMap<String, ArrayD<f64>> {
        (0..2)
            .map(|l| (format!("P_{l}"), f.post[l].clone().into_dyn()))
            .collect()
    };
    let m = activation_matching_from_features(
        &feats(&fa),
        &feats(&fb),
        &ActivationMatchingOptions::default(),
    )
    .unwrap();
    assert_eq!(m, planted);
}

/// Streaming statistics equal a direct two-pass computation (centred products) on the whole
/// matrix. Entries are O(1) with 1 000 samples; the one-pass Chan update differs from the
/// two-pass formula by rounding only, ≲ 1e-13 · N in absolute terms; we allow 1e-10.
#[test]
fn activation_statistics_match_two_pass_formulas() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let a = Array2::from_shape_fn((1000, 6), |(_, j)| gaussian(&mut rng) + j as f64);
    let b = Array2::from_shape_fn((1000, 5), |(_, j)| {
        gaussian(&mut rng) * (j as f64 + 0.5) - 3.0
    });
    let mut st = ActivationStats::new(6, 5);
    let mut other = ActivationStats::new(6, 5);
    st.update(
        a.slice(ndarray::s![..300, ..]),
        b.slice(ndarray::s![..300, ..]),
    )
    .unwrap();
    other
        .update(
            a.slice(ndarray::s![300.., ..]),
            b.slice(ndarray::s![300.., ..]),
        )
        .unwrap();
    st.merge(&other).unwrap();
    let n = 1000.0;
    let (ma, mb): (Array1<f64>, Array1<f64>) =
        (a.mean_axis(Axis(0)).unwrap(), b.mean_axis(Axis(0)).unwrap());
    let (ca, cb) = (&a - &ma, &b - &mb);
    let cov = ca.t().dot(&cb) / n;
    let inner = a.t().dot(&b) / n;
    let (sa, sb) = (
        ca.mapv(|v| v * v).sum_axis(Axis(0)).mapv(f64::sqrt),
        cb.mapv(|v| v * v).sum_axis(Axis(0)).mapv(f64::sqrt),
    );
    let corr = Array2::from_shape_fn((6, 5), |(i, j)| {
        ca.column(i).dot(&cb.column(j)) / (sa[i] * sb[j])
    });
    for (stat, expected) in [
        (Statistic::Covariance, cov),
        (Statistic::InnerProduct, inner),
        (Statistic::Correlation, corr),
    ] {
        let got = st.statistic(stat).unwrap();
        let err = (&got - &expected)
            .mapv(f64::abs)
            .fold(0.0f64, |m, &v| m.max(v));
        assert!(err < 1e-10, "{stat:?}: {err}");
    }
}

#[test]
fn correlation_of_a_constant_unit_is_zero() {
    let a = ndarray::array![[1.0, 5.0], [2.0, 5.0], [4.0, 5.0]];
    let b = ndarray::array![[0.0, 1.0], [1.0, 3.0], [0.5, 2.0]];
    let mut st = ActivationStats::new(2, 2);
    st.update(a.view(), b.view()).unwrap();
    let c = st.statistic(Statistic::Correlation).unwrap();
    assert_eq!(c.row(1).to_vec(), vec![0.0, 0.0]);
    assert!(c[[0, 0]] > 0.0);
}

#[test]
fn conv_feature_maps_are_viewed_as_samples_by_channels() {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let fa = ArrayD::from_shape_fn(IxDyn(&[3, 4, 5, 5]), |_| gaussian(&mut rng));
    let p = Permutation::new(vec![2, 0, 3, 1]).unwrap();
    let fb = llfc::permute_axis(&fa, 1, &p.inverse()).unwrap();
    let mut st = ActivationStats::new(4, 4);
    st.update_dyn(fa.view(), fb.view()).unwrap();
    assert_eq!(st.count(), 75);
    let m = activation_matching(
        &BTreeMap::from([("P".to_string(), st)]),
        &ActivationMatchingOptions::default(),
    )
    .unwrap();
    assert_eq!(m["P"], p);
}

#[test]
fn activation_bad_input_is_an_error() {
    let mut st = ActivationStats::new(3, 3);
    let z = Array2::<f64>::zeros((0, 3));
    assert!(matches!(
        st.update(z.view(), z.view()),
        Err(Error::EmptyInput { .. })
    ));
    let a = Array2::<f64>::zeros((4, 3));
    let b = Array2::<f64>::zeros((4, 2));
    assert!(matches!(
        st.update(a.view(), b.view()),
        Err(Error::ShapeMismatch { .. })
    ));
    let b5 = Array2::<f64>::zeros((5, 3));
    assert!(matches!(
        st.update(a.view(), b5.view()),
        Err(Error::ShapeMismatch { .. })
    ));
    let mut nan = Array2::<f64>::zeros((4, 3));
    nan[[1, 1]] = f64::NAN;
    assert!(matches!(
        st.update(a.view(), nan.view()),
        Err(Error::NonFinite { .. })
    ));
    assert!(matches!(
        st.statistic(Statistic::Correlation),
        Err(Error::EmptyInput { .. })
    ));
    let rect = BTreeMap::from([("P".to_string(), {
        let mut s = ActivationStats::new(3, 2);
        s.update(a.view(), b.view()).unwrap();
        s
    })]);
    assert!(matches!(
        activation_matching(&rect, &ActivationMatchingOptions::default()),
        Err(Error::ShapeMismatch { .. })
    ));
    // Rank 3 is token features [N, T, d] (accepted); rank 5 has no reading.
    let x = ndarray::ArrayD::<f64>::zeros(ndarray::IxDyn(&[1, 1, 1, 1, 1]));
    assert!(matches!(
        st.update_dyn(x.view(), x.view()),
        Err(Error::InvalidArgument { .. })
    ));
}

#[test]
fn weight_matching_bad_input_is_an_error() {
    let spec = PermutationSpec::mlp(3);
    let shapes = mlp_shapes(&[4, 6, 6, 2]);
    let a = random_params(&shapes, 1);
    let b = random_params(&shapes, 2);
    let opts = WeightMatchingOptions::default();
    // A spec that does not fit.
    assert!(matches!(
        weight_matching(&PermutationSpec::mlp(4), &a, &b, &opts),
        Err(Error::MissingParam { .. })
    ));
    // B of another width.
    let wide = random_params(&mlp_shapes(&[4, 7, 6, 2]), 3);
    assert!(weight_matching(&spec, &a, &wide, &opts).is_err());
    // NaN weights.
    let mut nan = b.clone();
    nan.insert(
        "layers.1.weight",
        ArrayD::from_elem(IxDyn(&[6, 6]), f64::NAN),
    );
    assert!(matches!(
        weight_matching(&spec, &a, &nan, &opts),
        Err(Error::NonFinite { .. })
    ));
    // Bad options.
    let bad_order = WeightMatchingOptions {
        order: Some(vec!["P_0".into()]),
        ..Default::default()
    };
    assert!(matches!(
        weight_matching(&spec, &a, &b, &bad_order),
        Err(Error::InvalidArgument { name: "order", .. })
    ));
    let bad_init = WeightMatchingOptions {
        init: Some(BTreeMap::from([("P_0".into(), Permutation::identity(6))])),
        ..Default::default()
    };
    assert!(matches!(
        weight_matching(&spec, &a, &b, &bad_init),
        Err(Error::InvalidArgument { name: "init", .. })
    ));
}

// ------------------------- trained pairs -------------------------

/// Three Gaussian blobs in 8 dimensions, 600 samples.
fn blobs(seed: u64) -> (Array2<f64>, Vec<usize>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let centres = Array2::from_shape_fn((3, 8), |_| 2.0 * gaussian(&mut rng));
    let labels: Vec<usize> = (0..600).map(|i| i % 3).collect();
    let x = Array2::from_shape_fn((600, 8), |(i, j)| {
        centres[[labels[i], j]] + gaussian(&mut rng)
    });
    (x, labels)
}

fn trained_pair() -> (Params<f64>, Params<f64>, Array2<f64>) {
    let (x, y) = blobs(0);
    let config = SgdConfig {
        epochs: 8,
        learning_rate: 0.05,
        ..Default::default()
    };
    let widths = [8, 32, 32, 3];
    let train = |seed: u64| {
        let init = mlp::init(&widths, &mut ChaCha8Rng::seed_from_u64(seed)).unwrap();
        mlp::train(&init, &x, &y, &config, seed).unwrap().params()
    };
    (train(1), train(2), x)
}

/// Straightforward Git Re-Basin loop for an MLP, written with explicit formulas:
/// `S_ℓ = W_A^ℓ (W_B^ℓ P_{ℓ−1}ᵀ)ᵀ + b_A^ℓ b_B^ℓᵀ + W_A^{ℓ+1ᵀ} (P_{ℓ+1} W_B^{ℓ+1})`, cold LAPs, no
/// caching, no parallelism.
fn reference_mlp_matching(
    a: &Params<f64>,
    b: &Params<f64>,
    layers: usize,
    order: &[usize],
) -> (Vec<Vec<usize>>, usize) {
    let w = |p: &Params<f64>, l: usize| -> Array2<f64> {
        p[&*format!("layers.{l}.weight")]
            .clone()
            .into_dimensionality()
            .unwrap()
    };
    let bias = |p: &Params<f64>, l: usize| -> Array1<f64> {
        p[&*format!("layers.{l}.bias")]
            .clone()
            .into_dimensionality()
            .unwrap()
    };
    let mut perms: Vec<Vec<usize>> = (0..layers - 1)
        .map(|l| (0..w(a, l).nrows()).collect())
        .collect();
    let mut sweeps = 0;
    for _ in 0..100 {
        sweeps += 1;
        let mut progress = false;
        for &l in order {
            let wb = w(b, l);
            let wb_in = if l == 0 {
                wb
            } else {
                wb.select(Axis(1), &perms[l - 1])
            };
            let mut s = w(a, l).dot(&wb_in.t());
            let (ba, bb) = (bias(a, l), bias(b, l));
            s += &ba
                .view()
                .insert_axis(Axis(1))
                .dot(&bb.view().insert_axis(Axis(0)));
            let wn = w(b, l + 1);
            let wn_out = if l + 2 < layers {
                wn.select(Axis(0), &perms[l + 1])
            } else {
                wn
            };
            s += &w(a, l + 1).t().dot(&wn_out);
            let sol = linear_sum_assignment(s.view(), true).unwrap();
            let old: f64 = perms[l].iter().enumerate().map(|(i, &j)| s[[i, j]]).sum();
            let new: f64 = sol
                .col_ind
                .iter()
                .enumerate()
                .map(|(i, &j)| s[[i, j]])
                .sum();
            if new > old + 1e-12 {
                progress = true;
                perms[l] = sol.col_ind;
            }
        }
        if !progress {
            break;
        }
    }
    (perms, sweeps)
}

#[test]
fn trained_pair_fixed_point_function_and_reference() {
    let (a, b, x) = trained_pair();
    let spec = PermutationSpec::mlp(3);
    let opts = WeightMatchingOptions {
        order: Some(vec!["P_1".into(), "P_0".into()]),
        ..Default::default()
    };
    let mut events = Vec::new();
    let m = weight_matching_with_progress(&spec, &a, &b, &opts, |e| {
        if let MatchingEvent::Sweep { objective, .. } = e {
            events.push(*objective);
        }
    })
    .unwrap();
    assert_eq!(events, m.history);
    assert!(m.converged);
    // Independently trained nets are far from aligned: matching moves units and takes sweeps.
    assert!(m.sweeps >= 2, "sweeps {}", m.sweeps);
    assert!(m.perms.values().all(|p| p.num_moved() > p.len() / 2));
    assert!(m.objective > m.initial_objective);
    let identity = a.inner(&b).unwrap();
    assert!((m.initial_objective - identity).abs() <= 1e-12 * identity.abs());
    assert!(m.objective >= identity);
    // History is non-decreasing (each step can only raise the objective).
    assert!(m
        .history
        .windows(2)
        .all(|w| w[1] >= w[0] - 1e-9 * w[0].abs()));
    // Fixed point: re-solving any single LAP gives no gain beyond the tolerance.
    for name in spec.perm_names() {
        let gain = single_step_gain(&spec, &a, &b, &m.perms, &name).unwrap();
        assert!(gain <= 1e-12, "{name}: {gain}");
    }
    // The permuted B computes the same logits as B (f64; reordering only: 1e-12 relative).
    let bp = apply_permutations(&spec, &m.perms, &b).unwrap();
    let (y0, y1) = (
        mlp::forward(&b, &x).unwrap(),
        mlp::forward(&bp, &x).unwrap(),
    );
    let scale = y0.iter().fold(0.0f64, |s, v| s.max(v.abs()));
    assert!(y0
        .iter()
        .zip(&y1)
        .all(|(u, v)| (u - v).abs() <= 1e-12 * scale));
    // Same permutations as the plain reference with the same fixed order.
    let (reference, ref_sweeps) = reference_mlp_matching(&a, &b, 3, &[1, 0]);
    for (l, r) in reference.iter().enumerate() {
        assert_eq!(m.perms[&format!("P_{l}")].as_slice(), r.as_slice(), "P_{l}");
    }
    assert_eq!(m.sweeps, ref_sweeps);
}

#[test]
fn results_are_deterministic_and_thread_count_independent() {
    let (a, b, _) = trained_pair();
    let spec = PermutationSpec::mlp(3);
    let opts = WeightMatchingOptions {
        seed: 17,
        ..Default::default()
    };
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| weight_matching(&spec, &a, &b, &opts).unwrap())
    };
    let one = run(1);
    assert_eq!(one, run(3));
    assert_eq!(one, weight_matching(&spec, &a, &b, &opts).unwrap());
    // Warm starts change only the speed.
    let cold = weight_matching(
        &spec,
        &a,
        &b,
        &WeightMatchingOptions {
            warm_start: false,
            ..opts.clone()
        },
    )
    .unwrap();
    assert_eq!(cold.perms, one.perms);
}

/// A callback that breaks at the `Sweep` event of sweep `k` gives exactly the result of
/// `max_iter = k + 1`, marked not converged; breaking after the first step stops within sweep 0.
#[test]
fn weight_matching_can_be_stopped_between_steps() -> llfc::Result<()> {
    let spec = PermutationSpec::mlp(4);
    let a = random_params(&mlp_shapes(&[6, 20, 20, 20, 3]), 11);
    let b = random_params(&mlp_shapes(&[6, 20, 20, 20, 3]), 12);
    let full = weight_matching(&spec, &a, &b, &WeightMatchingOptions::default())?;
    assert!(
        full.sweeps >= 2,
        "the planted-free pair needs several sweeps"
    );
    let one = WeightMatchingOptions {
        max_iter: 1,
        ..WeightMatchingOptions::default()
    };
    let expected = weight_matching(&spec, &a, &b, &one)?;
    let stopped = weight_matching_controlled(
        &spec,
        &a,
        &b,
        &WeightMatchingOptions::default(),
        |e| match e {
            MatchingEvent::Sweep { .. } => std::ops::ControlFlow::Break(()),
            MatchingEvent::Update { .. } => std::ops::ControlFlow::Continue(()),
        },
    )?;
    assert_eq!(stopped, expected);
    assert!(!stopped.converged && stopped.sweeps == 1);
    let mut steps = 0;
    let first =
        weight_matching_controlled(&spec, &a, &b, &WeightMatchingOptions::default(), |_| {
            steps += 1;
            std::ops::ControlFlow::Break(())
        })?;
    assert_eq!((steps, first.sweeps, first.history.len()), (1, 1, 1));
    assert!(!first.converged);
    Ok(())
}
