//! Criterion benchmarks of `llfc::assignment` (group `assignment`, plus `assignment_warm`).
//!
//! Five seeded families of `n × n` matrices, built outside the timed closures:
//! - `uniform`: costs uniform in `[0, 1)`, minimised;
//! - `gaussian_product`: `−(A Bᵀ)` with `A`, `B` standard Gaussian `n × 64` (like the
//!   similarity matrices of weight matching), minimised;
//! - `activation_stats`: `E[a bᵀ]` over 10 000 shared Gaussian inputs `x ∈ R^64` of the
//!   post-ReLU features `a = relu(W₁ x)`, `b = relu(W₂ x)` of two independent random layers
//!   (`W ~ N(0, 1/64)`, `n × 64`), maximised — the statistic activation matching solves, full
//!   of near-ties and much harder;
//! - `activation_stats_biased`: the same statistic for layers with biases `N(0, 0.5²)` on
//!   `d_in = 784` inputs (`W ~ N(0, 1/784)`): a few rows dominate every column, the hardest
//!   family of issue 3 before the ε-scaling auction (now ~1 s per solve at `n = 4096`);
//! - `mlp_hidden_stats`: `E[h_A h_Bᵀ]` of the last hidden layer of two random MLPs
//!   `784 → n → n → n → n` (He-normal weights, biases `N(0, 0.1²)`, ReLU) on 10 000 shared
//!   Gaussian inputs, maximised — what activation matching solves on deep layers (issue 17);
//!   up to `n = 1024` here (generating the features costs more than solving).
//!
//! `assignment_warm` re-solves an activation-statistics matrix after a small perturbation
//! (Gaussian noise of 1e-3 times the entries' standard deviation), cold versus warm-started from
//! the solution of the unperturbed matrix.
//!
//! Run with `cargo bench --bench assignment` (a few minutes; n = 4096 dominates). Filter with
//! e.g. `cargo bench --bench assignment -- 'assignment/uniform'`.
//! `benches/compare_lap.py` compares the same families against SciPy, lap and lapx.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use llfc::assignment::{linear_sum_assignment, linear_sum_assignment_warm};
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::hint::black_box;

const SIZES: [usize; 6] = [128, 256, 512, 1024, 2048, 4096];
const RANK: usize = 64;
const SAMPLES: usize = 10_000;
const BIASED_D_IN: usize = 784;
const BIASED_BIAS_STD: f64 = 0.5;
const MLP_DEPTH: usize = 4;
const MLP_BIAS_STD: f64 = 0.1;

/// Standard normal draws by the Box–Muller transform.
fn gaussian(rng: &mut ChaCha8Rng, shape: (usize, usize)) -> Array2<f64> {
    let mut spare: Option<f64> = None;
    Array2::from_shape_simple_fn(shape, || {
        if let Some(z) = spare.take() {
            return z;
        }
        let u1 = 1.0 - rng.random::<f64>(); // (0, 1]
        let u2 = rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt();
        let t = std::f64::consts::TAU * u2;
        spare = Some(r * t.sin());
        r * t.cos()
    })
}

/// `(matrix, maximize)` of one family.
fn family(name: &str, n: usize, seed: u64) -> (Array2<f64>, bool) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    match name {
        "uniform" => (
            Array2::from_shape_simple_fn((n, n), || rng.random::<f64>()),
            false,
        ),
        "gaussian_product" => {
            let a = gaussian(&mut rng, (n, RANK));
            let b = gaussian(&mut rng, (n, RANK));
            (-a.dot(&b.t()), false)
        }
        "activation_stats" | "activation_stats_biased" => {
            let (d, bias) = if name == "activation_stats" {
                (RANK, 0.0)
            } else {
                (BIASED_D_IN, BIASED_BIAS_STD)
            };
            let x = gaussian(&mut rng, (SAMPLES, d));
            #[allow(clippy::cast_precision_loss)]
            let s = 1.0 / (d as f64).sqrt();
            let w1 = gaussian(&mut rng, (n, d)) * s;
            let w2 = gaussian(&mut rng, (n, d)) * s;
            let b1 = gaussian(&mut rng, (1, n)) * bias;
            let b2 = gaussian(&mut rng, (1, n)) * bias;
            let a = (x.dot(&w1.t()) + &b1).mapv(|z| z.max(0.0));
            let b = (x.dot(&w2.t()) + &b2).mapv(|z| z.max(0.0));
            #[allow(clippy::cast_precision_loss)]
            let stats = a.t().dot(&b) / SAMPLES as f64;
            (stats, true)
        }
        "mlp_hidden_stats" => {
            let x = gaussian(&mut rng, (SAMPLES, BIASED_D_IN));
            let mut hidden = || {
                let (mut h, mut d) = (x.clone(), BIASED_D_IN);
                for _ in 0..MLP_DEPTH {
                    #[allow(clippy::cast_precision_loss)]
                    let w = gaussian(&mut rng, (n, d)) * (2.0 / d as f64).sqrt();
                    let b = gaussian(&mut rng, (1, n)) * MLP_BIAS_STD;
                    (h, d) = ((h.dot(&w.t()) + &b).mapv(|z| z.max(0.0)), n);
                }
                h
            };
            let (a, b) = (hidden(), hidden());
            #[allow(clippy::cast_precision_loss)]
            let stats = a.t().dot(&b) / SAMPLES as f64;
            (stats, true)
        }
        _ => unreachable!("unknown family {name}"),
    }
}

fn bench_cold(c: &mut Criterion) {
    let mut group = c.benchmark_group("assignment");
    group.sample_size(10);
    for name in [
        "uniform",
        "gaussian_product",
        "activation_stats",
        "activation_stats_biased",
        "mlp_hidden_stats",
    ] {
        for n in SIZES {
            if name == "mlp_hidden_stats" && n > 1024 {
                continue;
            }
            let (cost, maximize) = family(name, n, n as u64);
            let secs = if n >= 2048 { 20 } else { 5 };
            group.measurement_time(Duration::from_secs(secs));
            group.warm_up_time(Duration::from_millis(if n >= 2048 { 1 } else { 500 }));
            group.bench_with_input(BenchmarkId::new(name, n), &cost, |bch, cost| {
                bch.iter(|| linear_sum_assignment(black_box(cost.view()), maximize).unwrap());
            });
        }
    }
    group.finish();
}

fn bench_warm(c: &mut Criterion) {
    let mut group = c.benchmark_group("assignment_warm");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    for n in [512, 1024, 2048] {
        let (s, maximize) = family("activation_stats", n, n as u64);
        #[allow(clippy::cast_precision_loss)]
        let std = {
            let mean = s.mean().unwrap_or(0.0);
            (s.mapv(|x| (x - mean) * (x - mean)).sum() / s.len() as f64).sqrt()
        };
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let s2 = &s + &(gaussian(&mut rng, (n, n)) * (1e-3 * std));
        let previous = linear_sum_assignment(s.view(), maximize).unwrap();
        group.bench_with_input(BenchmarkId::new("cold", n), &s2, |bch, s2| {
            bch.iter(|| linear_sum_assignment(black_box(s2.view()), maximize).unwrap());
        });
        group.bench_with_input(BenchmarkId::new("warm", n), &s2, |bch, s2| {
            bch.iter(|| {
                linear_sum_assignment_warm(black_box(s2.view()), maximize, &previous).unwrap()
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench_cold, bench_warm);
criterion_main!(benches);
