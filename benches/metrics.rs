//! Criterion benchmarks of the LLFC metrics (group `llfc_report`): `llfc_report_mlp` alone,
//! `lmc::mlp_curve` alone, and `lmc::mlp_curve_and_report` (both from one forward pass of θ(α)
//! per α), for two independent seeded f32 MLPs of `llfc_digits`' wide shape 64-512-512-10 on 449
//! seeded inputs, at the 21 α of `uniform_grid(21)`. Inputs and models are built outside the
//! timed closures.
//!
//! Run with `cargo bench -p llfc-bench --bench metrics` (about a minute).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use llfc::lmc::{mlp_curve, mlp_curve_and_report, uniform_grid};
use llfc::metrics::{llfc_report_mlp, CosineVariant};
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const WIDTHS: [usize; 4] = [64, 512, 512, 10];
const SAMPLES: usize = 449;
const ALPHAS: usize = 21;

fn bench_report(c: &mut Criterion) {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let a = llfc::mlp::init::<f32, _>(&WIDTHS, &mut rng).expect("valid widths");
    let b = llfc::mlp::init::<f32, _>(&WIDTHS, &mut rng).expect("valid widths");
    let x = Array2::from_shape_simple_fn((SAMPLES, WIDTHS[0]), || rng.random::<f32>() * 2.0 - 1.0);
    let labels: Vec<usize> = (0..SAMPLES)
        .map(|_| rng.random_range(0..WIDTHS[3]))
        .collect();
    let grid = uniform_grid(ALPHAS).expect("at least two points");
    let signed = CosineVariant::Signed;
    let mut group = c.benchmark_group("llfc_report");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8));
    group.bench_function("report", |bench| {
        bench.iter(|| black_box(llfc_report_mlp(&a, &b, &x, &grid, signed).expect("valid")));
    });
    group.bench_function("curve", |bench| {
        bench.iter(|| black_box(mlp_curve(&a, &b, &x, &labels, &grid).expect("valid")));
    });
    group.bench_function("curve_and_report", |bench| {
        bench.iter(|| {
            black_box(mlp_curve_and_report(&a, &b, &x, &labels, &grid, signed).expect("valid"))
        });
    });
    group.finish();
}

criterion_group!(benches, bench_report);
criterion_main!(benches);
