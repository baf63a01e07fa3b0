//! The LLFC paper's qualitative findings, held on real data (the bundled UCI digits).
//!
//! Zhou et al. 2023 (*Going Beyond Linear Mode Connectivity: The Layerwise Linear Feature
//! Connectivity*) find that pairs of networks that are linearly mode connected — spawned pairs
//! (Frankle et al. 2020) and pairs aligned by permutation (Git Re-Basin) — are also LLFC at every
//! layer, and that weak additivity and commutativity, which imply LLFC, improve after
//! alignment. This test runs the `llfc_digits` pipeline (the same code, included below) on a
//! small, quick setup and checks each finding.
//!
//! The setup is fixed (seed 0). While it was chosen, seeds 0–19 were all checked; the margins
//! seen over them are stated next to every assertion.

#[allow(dead_code)]
#[path = "../../examples/llfc_digits/experiment.rs"]
mod experiment;

use std::sync::OnceLock;

use experiment::{run, Method, Outcome, Setup};
use llfc::mlp::SgdConfig;

/// 64-256-256-10, 10 epochs of SGD with momentum, C spawned after 2 epochs. Width matters:
/// at 64 or 128 units the matched pairs' logits are sometimes only at a quarter of their
/// baseline (see the README), at 256 they are below a sixth for every seed tried.
fn setup() -> Setup {
    Setup {
        widths: vec![64, 256, 256, 10],
        sgd: SgdConfig {
            learning_rate: 0.05,
            momentum: 0.9,
            batch_size: 32,
            epochs: 10,
            ..SgdConfig::default()
        },
        spawn_epoch: 2,
        seed: 0,
    }
}

/// The α where LLFC and weak additivity are checked (the middle of the path, where they are
/// worst).
const MID: f64 = 0.5;

/// The experiment, run once and shared by every test.
fn outcome() -> &'static Outcome {
    static OUTCOME: OnceLock<Outcome> = OnceLock::new();
    OUTCOME.get_or_init(|| {
        let data = llfc::data::digits();
        let alphas = llfc::lmc::uniform_grid(21).expect("21 ≥ 2");
        run(&setup(), &data, &alphas, &mut ()).expect("the experiment runs")
    })
}

/// The matched pairs, by weights and by activations.
const MATCHED: [Method; 2] = [Method::WeightMatched, Method::ActivationMatched];

#[test]
fn the_endpoints_are_trained() {
    for acc in outcome().accuracy {
        assert!(acc > 0.9, "test accuracy {acc}"); // seeds 0–19: 92.9 % or more
    }
}

#[test]
fn the_naive_pair_has_a_clear_loss_barrier() {
    // Seeds 0–19: 0.35 to 0.49.
    let barrier = outcome().pair(Method::Naive).loss_barrier();
    assert!(barrier > 0.2, "naive loss barrier {barrier}");
}

#[test]
fn matching_cuts_the_loss_barrier_at_least_threefold() {
    // Seeds 0–19: at least 13× (often down to exactly 0).
    let naive = outcome().pair(Method::Naive).loss_barrier();
    for method in MATCHED {
        let matched = outcome().pair(method).loss_barrier();
        assert!(
            3.0 * matched <= naive,
            "{}: loss barrier {matched} vs naive {naive}",
            method.label()
        );
    }
}

#[test]
fn spawned_and_matched_pairs_are_llfc_at_every_layer() {
    // E[1 − cos_½] / E[1 − cos_{A,B}], worst layer (always the logits), seeds 0–19:
    // weight-matched ≤ 0.115, activation-matched ≤ 0.163, spawned ≤ 0.029.
    let outcome = outcome();
    for method in [
        Method::WeightMatched,
        Method::ActivationMatched,
        Method::Spawned,
    ] {
        let pair = outcome.pair(method);
        for layer in 0..setup().num_layers() {
            let (distance, baseline) = pair.llfc(MID, layer);
            assert!(
                distance <= baseline / 5.0,
                "{}, layer {layer}: E[1 − cos_½] = {distance}, baseline {baseline}",
                method.label()
            );
        }
    }
}

#[test]
fn the_naive_pair_is_several_times_further_from_llfc_than_the_matched_one() {
    // Hidden layers of the naive pair also sit below their (large) baseline, so the absolute
    // level is what discriminates. Seeds 0–19: at least 4.8× at every layer.
    let (naive, matched) = (
        outcome().pair(Method::Naive),
        outcome().pair(Method::WeightMatched),
    );
    for layer in 0..setup().num_layers() {
        let (n, m) = (naive.llfc(MID, layer).0, matched.llfc(MID, layer).0);
        assert!(
            n >= 3.0 * m,
            "layer {layer}: naive E[1 − cos_½] = {n}, weight-matched {m}"
        );
    }
}

#[test]
fn matching_lowers_weak_additivity_residuals() {
    // Matched / naive at α = ¼, ½, ¾, seeds 0–19: at most 0.47 (weights), 0.36 (activations).
    let naive = outcome().pair(Method::Naive);
    for method in MATCHED {
        let pair = outcome().pair(method);
        for layer in 0..setup().num_layers() - 1 {
            for alpha in [0.25, MID, 0.75] {
                let (m, n) = (
                    pair.weak_additivity(alpha, layer),
                    naive.weak_additivity(alpha, layer),
                );
                assert!(
                    m < n,
                    "{}, layer {layer}, α {alpha}: {m} vs naive {n}",
                    method.label()
                );
            }
        }
    }
}

#[test]
fn matching_lowers_commutativity_residuals() {
    // Layer 0 sees the same input X in A and B (residual exactly 0), so layers 1… are checked.
    // Matched / naive, seeds 0–19: at most 0.31 (weights), 0.34 (activations).
    let naive = outcome().pair(Method::Naive);
    for method in MATCHED {
        let pair = outcome().pair(method);
        for layer in 1..setup().num_layers() {
            let (m, n) = (pair.commutativity(layer), naive.commutativity(layer));
            assert!(m < n, "{}, layer {layer}: {m} vs naive {n}", method.label());
        }
    }
}
