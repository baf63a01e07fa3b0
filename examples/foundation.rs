//! The crate's building blocks on a synthetic problem, in a couple of seconds:
//! train two MLPs from different seeds, check that permuting hidden units does not change a
//! network's function, and evaluate the straight line between the two networks.
//!
//! Run with `cargo run --release --example foundation`.

use std::collections::BTreeMap;
use std::time::Instant;

use llfc::mlp::{self, SgdConfig};
use llfc::{apply_permutations, Permutation, PermutationSpec};
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const DIM: usize = 8;
const CLASSES: usize = 4;
const BLOBS: usize = 12;

/// A standard normal draw (Box–Muller).
fn gauss(rng: &mut impl Rng) -> f64 {
    let (u, v): (f64, f64) = (rng.random(), rng.random());
    (-2.0 * (1.0 - u).ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

/// `n` samples from 12 unit-variance Gaussian blobs in 8-D whose centres are fixed (seed 0);
/// blob `k` belongs to class `k mod 4`, so no class is linearly separable.
fn blobs(n: usize, seed: u64) -> (Array2<f64>, Vec<usize>) {
    let mut centres = ChaCha8Rng::seed_from_u64(0);
    let centres = Array2::from_shape_simple_fn((BLOBS, DIM), || 1.5 * gauss(&mut centres));
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let blob: Vec<usize> = (0..n).map(|_| rng.random_range(0..BLOBS)).collect();
    let x = Array2::from_shape_fn((n, DIM), |(i, j)| centres[[blob[i], j]] + gauss(&mut rng));
    (x, blob.iter().map(|k| k % CLASSES).collect())
}

fn main() -> Result<(), llfc::Error> {
    let (x_train, y_train) = blobs(2000, 1);
    let (x_test, y_test) = blobs(1000, 2);
    println!("data: {BLOBS} Gaussian blobs in {DIM}-D, {CLASSES} classes, 2000 train / 1000 test samples");

    // Two independently trained modes: different initialisation and data-order seeds.
    let widths = [DIM, 128, 128, CLASSES];
    let config = SgdConfig {
        epochs: 20,
        ..SgdConfig::default()
    };
    let mut models = Vec::new();
    for (name, seed) in [("A", 1), ("B", 2)] {
        let start = Instant::now();
        let init = mlp::init::<f64, _>(&widths, &mut ChaCha8Rng::seed_from_u64(seed))?;
        let params = mlp::train(&init, &x_train, &y_train, &config, seed)?.params();
        let eval = mlp::evaluate(&params, &x_test, &y_test)?;
        println!(
            "model {name}: {widths:?}, {} epochs in {:.2} s → test loss {:.4}, accuracy {:.1}%",
            config.epochs,
            start.elapsed().as_secs_f64(),
            eval.loss,
            100.0 * eval.accuracy
        );
        models.push(params);
    }
    let (a, b) = (&models[0], &models[1]);

    // The permutation spec of this MLP, validated against the parameters.
    let spec = PermutationSpec::mlp(widths.len() - 1);
    let sizes = spec.perm_sizes(b)?;
    println!("permutation spec: {sizes:?}");

    // Permuting B's hidden units gives a different point in weight space but the same function.
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let perms: BTreeMap<String, Permutation> = sizes
        .into_iter()
        .map(|(name, n)| (name, Permutation::random(n, &mut rng)))
        .collect();
    let b_perm = apply_permutations(&spec, &perms, b)?;
    let (logits, logits_perm) = (mlp::forward(b, &x_test)?, mlp::forward(&b_perm, &x_test)?);
    let max_diff = logits
        .iter()
        .zip(&logits_perm)
        .fold(0.0f64, |m, (u, v)| m.max((u - v).abs()));
    println!(
        "random permutation of B: ‖B − π(B)‖ = {:.3}, max |logit difference| = {max_diff:.2e}",
        b.distance(&b_perm)?
    );

    // The straight line θ(α) = α·A + (1 − α)·B between the two modes (α = 1 is A).
    println!("interpolation θ(α) = α·A + (1 − α)·B on the test set:");
    println!("   α     loss   accuracy");
    for alpha in [0.0, 0.25, 0.5, 0.75, 1.0] {
        let eval = mlp::evaluate(&a.interpolate(b, alpha)?, &x_test, &y_test)?;
        println!(
            "  {alpha:.2}  {:7.4}   {:5.1}%",
            eval.loss,
            100.0 * eval.accuracy
        );
    }
    println!("L2 distance ‖A − B‖ = {:.3}", a.distance(b)?);
    Ok(())
}
