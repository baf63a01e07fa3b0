//! Commutativity matching in `llfc_digits`: align the independent B to A by minimising the
//! commutativity residuals directly (`llfc::matching::commutativity`, the LLFC paper's open
//! direction, Zhou et al. 2023 §5), from each start, and compare with naive, weight-matched
//! and activation-matched pairs on `J`, the per-layer residuals, LLFC and the barriers.

use std::sync::Mutex;
use std::time::Instant;

use llfc::data::Dataset;
use llfc::matching::commutativity::{
    commutativity_matching, mlp_commutativity_stats, CommutativityMatchingOptions,
    CommutativityStart,
};
use llfc::metrics::commutativity_residual;
use llfc::{apply_permutations, mlp, Params, PermutationSpec, Result};
use rayon::prelude::*;

use crate::experiment::{measure, Method, Observer, Outcome, PairResult, Setup, Stage};
use crate::table::layer_name;

/// The α of the LLFC and weak-additivity columns.
const MID: f64 = 0.5;

/// One aligned version of B and its measurements.
pub struct Row {
    /// Method label.
    pub label: &'static str,
    /// `J` (per sample) on the training inputs, where the matchings are computed.
    pub j_train: f64,
    /// `J` (per sample) on the test inputs.
    pub j_test: f64,
    /// For commutativity matching: `J` at the start (train), sweeps and accepted/scored steps.
    pub descent: Option<(f64, usize, usize, usize)>,
    /// The LMC curve and LLFC report of (A, π(B)) on the test set.
    pub pair: PairResult,
}

/// The starts of commutativity matching, with their labels.
const STARTS: [(CommutativityStart, &str); 3] = [
    (CommutativityStart::Identity, "comm. from identity"),
    (CommutativityStart::WeightMatching, "comm. from weight"),
    (CommutativityStart::ActivationMatching, "comm. from activ."),
];

/// The weight matrix of layer `l` of an MLP.
fn weight(p: &Params<f32>, l: usize) -> Result<ndarray::ArrayView2<'_, f32>> {
    Ok(p.require(&mlp::weight_name(l))?
        .view()
        .into_dimensionality::<ndarray::Ix2>()
        .expect("an MLP's weights are matrices"))
}

/// `J` of the pair (A, `b`) on inputs `x` (B already aligned: identity permutations), straight
/// from the residual matrices: `J = Σ_ℓ ‖(H_A^{ℓ−1} − H_B^{ℓ−1})(W_A^ℓ − W_B^ℓ)ᵀ‖²_F / N`
/// (one forward pass per model and one `[N, d] × [d, d_out]` product per layer, in f32, summed
/// in f64) — the value `commutativity_objective` computes from second moments (`3 N d²` flops
/// per layer), equal up to f32 rounding of the products (≈ 1e-6 relative).
fn objective(a: &Params<f32>, b: &Params<f32>, x: &ndarray::Array2<f32>) -> Result<f64> {
    let (fa, fb) = (mlp::forward_features(a, x)?, mlp::forward_features(b, x)?);
    let mut total = 0.0;
    for l in 1..fa.pre.len() {
        let (ha, hb) = (fa.post[l - 1].view(), fb.post[l - 1].view());
        let r = commutativity_residual(weight(a, l)?, weight(b, l)?, ha, hb)?;
        total += r.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>();
    }
    #[allow(clippy::cast_precision_loss)]
    Ok(total / x.nrows() as f64)
}

/// Align the independent B to A by commutativity matching from every start (statistics of
/// the training inputs) and measure everything next to the naive, weight- and
/// activation-matched pairs of `outcome`. The starts run in parallel (each descent is
/// deterministic and independent of the thread count).
///
/// # Errors
/// What the matchings and measurements report.
pub fn compare(
    setup: &Setup,
    data: &Dataset<f32>,
    alphas: &[f64],
    outcome: &Outcome,
    observer: &mut (impl Observer + Send),
) -> Result<Vec<Row>> {
    observer.stage(Stage::CommutativityMatching);
    let spec = PermutationSpec::mlp(setup.num_layers());
    let a = &outcome.a;
    let b = &outcome.pair(Method::Naive).second;
    let classic = [
        Method::Naive,
        Method::WeightMatched,
        Method::ActivationMatched,
    ];
    let mut rows = classic
        .into_par_iter()
        .map(|method| {
            let pair = outcome.pair(method).clone();
            Ok(Row {
                label: method.label(),
                j_train: objective(a, &pair.second, &data.x_train)?,
                j_test: objective(a, &pair.second, &data.x_test)?,
                descent: None,
                pair,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let stats = mlp_commutativity_stats(a, b, data.x_train.view())?;
    // The three descents run in parallel; each reports when it is done (wall time: the others
    // run at the same time).
    let observer = Mutex::new(observer);
    let descents = STARTS
        .into_par_iter()
        .map(|(start, label)| {
            let clock = Instant::now();
            let options = CommutativityMatchingOptions {
                start,
                ..CommutativityMatchingOptions::default()
            };
            let m = commutativity_matching(a, b, &stats, &options)?;
            observer
                .lock()
                .expect("no observer panicked")
                .step(&format!(
                    "{label}: {} sweeps in {:.2} s",
                    m.sweeps,
                    clock.elapsed().as_secs_f64()
                ));
            let aligned = apply_permutations(&spec, &m.perms, b)?;
            let accepted = m.history.iter().filter(|s| s.accepted).count();
            Ok(Row {
                label,
                j_train: m.objective,
                j_test: objective(a, &aligned, &data.x_test)?,
                descent: Some((m.initial_objective, m.sweeps, accepted, m.history.len())),
                // The tables read these pairs' LLFC at α = ½ only: the report is measured there
                // (the same values as on the whole grid), the LMC curve on every α.
                pair: measure(Method::Naive, a, &aligned, data, alphas, &[MID])?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    rows.extend(descents);
    Ok(rows)
}

/// Print the comparison: one summary table and per-layer tables.
pub fn print(setup: &Setup, rows: &[Row]) {
    let layers = setup.num_layers();
    println!("Commutativity matching (B onto A; J = Σ_ℓ ‖(H_A − H̃_B)(W_A − W̃_B)ᵀ‖² / N):");
    println!(
        "  {:<20} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8}  descent: J start → sweeps, accepted/steps",
        "pair", "J train", "J test", "loss b.", "error b.", "loss ½", "error ½", "LLFC ½"
    );
    for row in rows {
        let logits = row.pair.llfc(MID, layers - 1).0;
        let mid = row.pair.curve.len() / 2;
        let descent = row.descent.map_or(String::new(), |(j0, sw, acc, steps)| {
            format!("  {j0:.1} → {sw} sweeps, {acc}/{steps}")
        });
        println!(
            "  {:<20} {:>9.2} {:>9.2} {:>8.4} {:>6.2} % {:>8.4} {:>6.2} % {:>8.4}{descent}",
            row.label,
            row.j_train,
            row.j_test,
            row.pair.loss_barrier(),
            100.0 * row.pair.error_barrier(),
            row.pair.curve.loss[mid],
            100.0 * row.pair.curve.error[mid],
            logits,
        );
    }
    println!(
        "  (test set: loss/error barriers, loss and error at α = ½, LLFC ½ = E[1 − cos_½] of the logits)\n"
    );
    let table =
        |title: &str, range: std::ops::Range<usize>, value: &dyn Fn(&PairResult, usize) -> f64| {
            println!("{title}");
            let header: String = range
                .clone()
                .map(|l| format!(" {:>8}", layer_name(l, layers)))
                .collect();
            println!("  {:<20}{header}", "pair");
            for row in rows {
                let values: String = range
                    .clone()
                    .map(|l| format!(" {:>8.4}", value(&row.pair, l)))
                    .collect();
                println!("  {:<20}{values}", row.label);
            }
        };
    table(
        "Commutativity ‖R‖ / ‖W_A H_A + W_B H_B‖ on the test set, per layer (by its output):",
        1..layers,
        &PairResult::commutativity,
    );
    table(
        "Weak additivity at α = ½ on the test set, per hidden layer:",
        0..layers - 1,
        &|p, l| p.weak_additivity(MID, l),
    );
    table(
        "LLFC E[1 − cos_½] on the test set, per layer:",
        0..layers,
        &|p, l| p.llfc(MID, l).0,
    );
    println!();
}
