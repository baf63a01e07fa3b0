//! Criterion group `matching`: weight matching (one sweep, and to convergence) and activation
//! matching (one layer's statistics update, and the full matching of four layers) on seeded
//! random MLPs `784 → 4 × width → 10`, width ∈ {512, 1024, 2048}, in f64.
//!
//! - Weights: Gaussian with standard deviation `1/√fan_in` (biases too), B independent of A.
//! - Features: post-ReLU features of the two random MLPs on the same N = 10 000 Gaussian inputs.
//! - Weight matching visits `P_0, P_1, P_2, P_3` in this fixed order. Convergence at width 2048
//!   takes ~20 sweeps (several seconds a run), so `weight_converge` stops at width 1024; the
//!   comparison script `benches/compare_matching.py` times width 2048 to convergence.
//!
//! Run with `cargo bench --bench matching` (a few minutes on 2 cores).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode};
use llfc::matching::activation::{activation_matching, ActivationMatchingOptions, ActivationStats};
use llfc::matching::weight::{weight_matching, WeightMatchingOptions};
use llfc::{mlp, Params, PermutationSpec};
use ndarray::{Array1, Array2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const WIDTHS: [usize; 3] = [512, 1024, 2048];
const SAMPLES: usize = 10_000;
const HIDDEN: usize = 4;

fn gaussian(rng: &mut ChaCha8Rng) -> f64 {
    // Box–Muller; `1 − u` keeps the logarithm finite.
    let (u, v): (f64, f64) = (rng.random(), rng.random());
    (-2.0 * (1.0 - u).ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

/// A random MLP `784 → HIDDEN × width → 10` with Gaussian weights of std `1/√fan_in`.
fn random_mlp(width: usize, seed: u64) -> Params<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut dims = vec![784];
    dims.extend([width; HIDDEN]);
    dims.push(10);
    let mut p = Params::new();
    for (l, pair) in dims.windows(2).enumerate() {
        #[allow(clippy::cast_precision_loss)]
        let std = 1.0 / (pair[0] as f64).sqrt();
        let w = Array2::from_shape_simple_fn((pair[1], pair[0]), || gaussian(&mut rng) * std);
        let b = Array1::from_shape_simple_fn(pair[1], || gaussian(&mut rng) * std);
        p.insert(mlp::weight_name(l), w.into_dyn());
        p.insert(mlp::bias_name(l), b.into_dyn());
    }
    p
}

/// Post-ReLU features of every hidden layer of A and B on the same Gaussian inputs.
fn features(a: &Params<f64>, b: &Params<f64>) -> Vec<(Array2<f64>, Array2<f64>)> {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let x = Array2::from_shape_simple_fn((SAMPLES, 784), || gaussian(&mut rng));
    let fa = mlp::forward_features(a, &x).expect("valid MLP");
    let fb = mlp::forward_features(b, &x).expect("valid MLP");
    fa.post
        .into_iter()
        .zip(fb.post)
        .take(HIDDEN)
        .collect::<Vec<_>>()
}

fn options(max_iter: usize) -> WeightMatchingOptions {
    WeightMatchingOptions {
        max_iter,
        order: Some(PermutationSpec::mlp(HIDDEN + 1).perm_names()),
        ..WeightMatchingOptions::default()
    }
}

fn bench_matching(c: &mut Criterion) {
    let spec = PermutationSpec::mlp(HIDDEN + 1);
    let mut group = c.benchmark_group("matching");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for width in WIDTHS {
        let a = random_mlp(width, 1);
        let b = random_mlp(width, 2);
        group.bench_with_input(
            BenchmarkId::new("weight_sweep", width),
            &width,
            |bench, _| {
                bench.iter(|| black_box(weight_matching(&spec, &a, &b, &options(1)).unwrap()));
            },
        );
        if width <= 1024 {
            group.bench_with_input(
                BenchmarkId::new("weight_converge", width),
                &width,
                |bench, _| {
                    bench
                        .iter(|| black_box(weight_matching(&spec, &a, &b, &options(100)).unwrap()));
                },
            );
        }
        let feats = features(&a, &b);
        group.bench_with_input(
            BenchmarkId::new("stats_update", width),
            &width,
            |bench, _| {
                let (fa, fb) = &feats[0];
                bench.iter(|| {
                    let mut st = ActivationStats::new(width, width);
                    st.update(fa.view(), fb.view()).unwrap();
                    black_box(st)
                });
            },
        );
        group.bench_with_input(
            BenchmarkId::new("activation_full", width),
            &width,
            |bench, _| {
                bench.iter(|| {
                    let mut stats = BTreeMap::new();
                    for (k, (fa, fb)) in feats.iter().enumerate() {
                        let mut st = ActivationStats::new(width, width);
                        st.update(fa.view(), fb.view()).unwrap();
                        stats.insert(format!("P_{k}"), st);
                    }
                    black_box(
                        activation_matching(&stats, &ActivationMatchingOptions::default()).unwrap(),
                    )
                });
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench_matching);
criterion_main!(benches);
