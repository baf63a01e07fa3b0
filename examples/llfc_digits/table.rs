//! The printed tables of `llfc_digits`: one block per architecture, and the legend.

use crate::experiment::{Method, Outcome, PairResult, Setup};

/// The α at which the LLFC table reports `E[1 − cos_α]`.
pub const TABLE_ALPHAS: [f64; 3] = [0.25, 0.5, 0.75];

/// The α of the weak-additivity table.
const MID: f64 = 0.5;

/// Name of layer ℓ's output: `h1 … h{L−1}` for hidden layers, `logits` for the last.
pub fn layer_name(layer: usize, num_layers: usize) -> String {
    if layer + 1 == num_layers {
        "logits".into()
    } else {
        format!("h{}", layer + 1)
    }
}

/// Short column header of a method.
fn column(method: Method) -> &'static str {
    match method {
        Method::Naive => "naive",
        Method::WeightMatched => "weight",
        Method::ActivationMatched => "activation",
        Method::Spawned => "spawned",
    }
}

/// Print the whole block of one architecture.
pub fn print_outcome(setup: &Setup, outcome: &Outcome, grid_points: usize) {
    print_header(setup, outcome);
    print_lmc(outcome, grid_points);
    print_llfc(setup, outcome);
    print_weak_additivity(setup, outcome);
    print_commutativity(setup, outcome);
}

/// Architecture, recipe and endpoint accuracies.
fn print_header(setup: &Setup, outcome: &Outcome) {
    let sgd = &setup.sgd;
    println!("━━ MLP {} ━━", setup.name());
    println!(
        "f32; SGD lr {}, momentum {}, batch {}, {} epochs; C spawned from A after epoch {}; seed {}",
        sgd.learning_rate,
        sgd.momentum,
        sgd.batch_size,
        sgd.epochs,
        setup.spawn_epoch,
        setup.seed
    );
    let [a, b, c] = outcome.accuracy.map(|v| 100.0 * v);
    println!("test accuracy: A {a:.1} %, B {b:.1} %, C {c:.1} %\n");
}

/// Loss and error barriers of every pair.
fn print_lmc(outcome: &Outcome, grid_points: usize) {
    println!("LMC on the test set along θ(α) = α θ_A + (1 − α) θ_B ({grid_points} α):");
    println!(
        "  {:<20} {:>12} {:>14} {:>11} {:>11}",
        "pair", "loss barrier", "error barrier", "loss(½)", "error(½)"
    );
    for pair in &outcome.pairs {
        let mid = pair.curve.len() / 2;
        println!(
            "  {:<20} {:>12.4} {:>12.2} % {:>11.4} {:>9.2} %",
            pair.method.label(),
            pair.loss_barrier(),
            100.0 * pair.error_barrier(),
            pair.curve.loss[mid],
            100.0 * pair.curve.error[mid],
        );
    }
    println!();
}

/// One row of the LLFC table: `E[1 − cos_α]` at [`TABLE_ALPHAS`], the baseline, the ratio at ½.
fn llfc_row(pair: &PairResult, layer: usize) -> String {
    let mut row = String::new();
    for alpha in TABLE_ALPHAS {
        row += &format!(" {:>8.4}", pair.llfc(alpha, layer).0);
    }
    let (mid, baseline) = pair.llfc(MID, layer);
    row + &format!(" {baseline:>9.4} {:>9.3}", mid / baseline)
}

/// `E[1 − cos_α]` per layer and pair, next to the baseline `E[1 − cos_{A,B}]`.
fn print_llfc(setup: &Setup, outcome: &Outcome) {
    println!("LLFC on the test set: E[1 − cos_α] of each layer's output (post-ReLU; logits last):");
    println!(
        "  {:<8} {:<20} {:>8} {:>8} {:>8} {:>9} {:>9}",
        "layer", "pair", "α=0.25", "α=0.5", "α=0.75", "baseline", "½ / base"
    );
    let layers = setup.num_layers();
    for layer in 0..layers {
        for (k, pair) in outcome.pairs.iter().enumerate() {
            let name = if k == 0 {
                layer_name(layer, layers)
            } else {
                String::new()
            };
            let label = pair.method.label();
            println!("  {name:<8} {label:<20}{}", llfc_row(pair, layer));
        }
    }
    println!();
}

/// A table with one row per layer and one column per method (`NaN` where undefined).
fn print_per_layer(
    title: &str,
    outcome: &Outcome,
    rows: &[(String, usize)],
    value: impl Fn(&PairResult, usize) -> f64,
) {
    println!("{title}");
    let mut header = format!("  {:<14}", "layer");
    for method in Method::ALL {
        header += &format!(" {:>10}", column(method));
    }
    println!("{header}");
    for (name, layer) in rows {
        let mut line = format!("  {name:<14}");
        for method in Method::ALL {
            line += &format!(" {:>10.4}", value(outcome.pair(method), *layer));
        }
        println!("{line}");
    }
    println!();
}

/// Weak additivity of ReLU at α = ½ for every hidden layer.
fn print_weak_additivity(setup: &Setup, outcome: &Outcome) {
    let layers = setup.num_layers();
    let rows: Vec<(String, usize)> = (0..layers - 1)
        .map(|l| (layer_name(l, layers), l))
        .collect();
    print_per_layer(
        "Weak additivity at α = 0.5: ‖σ(αZ_A + (1−α)Z_B) − ασ(Z_A) − (1−α)σ(Z_B)‖ / ‖ασ(Z_A) + (1−α)σ(Z_B)‖",
        outcome,
        &rows,
        |pair, l| pair.weak_additivity(MID, l),
    );
}

/// Commutativity of every layer after the first (the first sees the same input X in A and B,
/// so its residual is exactly 0).
fn print_commutativity(setup: &Setup, outcome: &Outcome) {
    let layers = setup.num_layers();
    let rows: Vec<(String, usize)> = (1..layers)
        .map(|l| {
            let from = layer_name(l - 1, layers);
            (format!("{from} → {}", layer_name(l, layers)), l)
        })
        .collect();
    print_per_layer(
        "Commutativity: ‖(W_A − W_B)(H_A − H_B)‖ / ‖W_A H_A + W_B H_B‖ (H = the layer's input)",
        outcome,
        &rows,
        PairResult::commutativity,
    );
}

/// What the numbers mean, in the LLFC paper's terms.
pub fn print_legend() {
    println!(
        "\
How to read the tables (Zhou et al. 2023, Going Beyond Linear Mode Connectivity: LLFC):
- LMC barrier: max over α of v(θ(α)) − [α v(A) + (1 − α) v(B)] for the test loss / error. Two
  networks are linearly mode connected when it is ≈ 0. Independently trained networks (naive)
  are not; permuting B's hidden units onto A (Git Re-Basin weight or activation matching), or
  sharing the first epochs (spawning, Frankle et al. 2020), makes them so.
- LLFC: E[1 − cos_α] compares the features of the interpolated network θ(α) with the
  interpolation of the features, α f(A) + (1 − α) f(B), sample by sample. LLFC holds when it is
  far below the baseline E[1 − cos_{{A,B}}] (how different A's and B's features are at all): the
  column ½ / base. The naive pair's hidden layers can sit below their (large) baseline too;
  its failure shows at the logits (a large fraction of the baseline, or above it) and in the
  absolute level, several times that of the matched pairs at every layer.
- Weak additivity (Def. 3) and commutativity (Def. 4) are the two conditions the paper shows
  to imply LLFC: ReLU acting almost additively on the two networks' pre-activations, and
  W_A H_B + W_B H_A ≈ W_A H_A + W_B H_B. Both residuals drop several-fold after matching,
  and further for the spawned pair."
    );
}
