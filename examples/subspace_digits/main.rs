//! Shared subspaces and CCA alignment on real data (feature `linalg`):
//! `cargo run --release --features linalg-openblas-system --example subspace_digits [-- DIR]`.
//!
//! The pairs of `llfc_digits` (the same pipeline, included from its `experiment.rs`: MLPs
//! 64-128-128-128-10 and 64-512-512-10 on the bundled UCI digits, f32, seed 0) are compared
//! through principal angles (`llfc::analysis::subspace`):
//! - per layer, the angles between the top-`k` left (output) and right (input) singular
//!   subspaces of `W_A` and `W_B`, for the naive pair (A, B), B aligned to A by weight matching,
//!   by activation matching and by CCA, and the spawned pair (A, C);
//! - per layer, the angles between the top-`k` principal subspaces of A's and B's centred
//!   features on the test set (units aligned as in each pair).
//!
//! B is then aligned to A by CCA (Horoi et al. 2024, `llfc::matching::cca`) from the hidden
//! post-activations on the training inputs, and the CCA row joins the LMC barrier and LLFC table
//! of the permutation-aligned pairs, with the change of B's own function that the alignment
//! causes across the ReLUs. An SVG plot of the mean angles per layer goes to
//! `target/subspace_digits/` (or `DIR`).

#[allow(dead_code)]
#[path = "../llfc_digits/experiment.rs"]
mod experiment;
mod plot;

use std::collections::BTreeMap;
use std::error::Error;
use std::path::PathBuf;

use llfc::analysis::subspace::{feature_subspace_angles, weight_subspace_angles};
use llfc::matching::cca::{
    apply_cca, cca_alignment_from_features, mlp_function_change, CcaOptions, FunctionChange,
    Regularization,
};
use llfc::mlp::{self, FeatureKind, SgdConfig};
use llfc::{Params, PermutationSpec};
use ndarray::{Array2, ArrayD};

use experiment::{measure, run, Method, PairResult, Real, Setup};

/// Principal angles between the top-`K` subspaces (the logits layer has 10 units, so `K ≤ 10`).
const K: usize = 8;

/// The α of the LLFC column (the middle of the path).
const MID: f64 = 0.5;

/// The setups of `llfc_digits`: 64-128-128-128-10 for 15 epochs and 64-512-512-10 for 10, SGD
/// with momentum, C spawned after 2 epochs, seed 0.
fn setups() -> Vec<Setup> {
    [
        (vec![64, 128, 128, 128, 10], 15),
        (vec![64, 512, 512, 10], 10),
    ]
    .into_iter()
    .map(|(widths, epochs)| Setup {
        widths,
        sgd: SgdConfig {
            learning_rate: 0.05,
            momentum: 0.9,
            weight_decay: 0.0,
            nesterov: false,
            batch_size: 32,
            epochs,
        },
        spawn_epoch: 2,
        seed: 0,
    })
    .collect()
}

/// The second endpoints compared with A: the four pairs of `llfc_digits` and B aligned by CCA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pair {
    /// A pair of `llfc_digits`.
    Permutation(Method),
    /// B aligned to A by CCA with the given ridge.
    Cca(Ridge),
}

/// The ridges of the CCA rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ridge {
    /// A small relative ridge, `1e-4 · tr(Σ)/d`.
    Small,
    /// The library's default, a tenth of the mean variance, `0.1 · tr(Σ)/d` (marked `*`).
    Relative,
    /// Horoi et al.'s code default, `0.1 I`.
    Paper,
}

impl Ridge {
    /// Every ridge, in table order.
    const ALL: [Self; 3] = [Self::Small, Self::Relative, Self::Paper];

    fn regularization(self) -> Regularization {
        match self {
            Self::Small => Regularization::Relative(1e-4),
            Self::Relative => Regularization::Relative(0.1),
            Self::Paper => Regularization::Absolute(0.1),
        }
    }
}

impl Pair {
    /// Short label for tables and legends.
    pub fn label(self) -> &'static str {
        match self {
            Self::Permutation(m) => m.label(),
            Self::Cca(Ridge::Small) => "CCA, λ = 1e-4·tr Σ/d",
            Self::Cca(Ridge::Relative) => "CCA, λ = 0.1·tr Σ/d *",
            Self::Cca(Ridge::Paper) => "CCA, λ = 0.1",
        }
    }
}

/// The hidden post-activations on `x`, keyed `P_0, P_1, …` like `PermutationSpec::mlp`.
fn hidden_features(
    p: &Params<Real>,
    x: &Array2<Real>,
) -> llfc::Result<BTreeMap<String, ArrayD<Real>>> {
    let f = mlp::forward_features(p, x)?;
    Ok((0..f.num_layers() - 1)
        .map(|l| (format!("P_{l}"), f.post[l].clone().into_dyn()))
        .collect())
}

/// One row of the comparison.
struct Measured {
    pair: Pair,
    second: Params<Real>,
    result: PairResult,
    /// For CCA: how much B's own function changed.
    change: Option<FunctionChange>,
}

/// Mean angles per layer (degrees) of one pair: weights' left and right subspaces, features.
pub struct Angles {
    /// The pair.
    pub pair: Pair,
    /// Per layer, the mean angle between the top-K left singular subspaces.
    pub left: Vec<f64>,
    /// Per layer, right singular subspaces.
    pub right: Vec<f64>,
    /// Per layer, principal subspaces of the post-activations (logits for the last).
    pub features: Vec<f64>,
}

fn angles(
    pair: Pair,
    a: &Params<Real>,
    b: &Params<Real>,
    x: &Array2<Real>,
    layers: usize,
) -> Result<Angles, Box<dyn Error>> {
    let names: Vec<String> = (0..layers).map(mlp::weight_name).collect();
    let weights = weight_subspace_angles(a, b, &names, K)?;
    let (fa, fb) = (mlp::forward_features(a, x)?, mlp::forward_features(b, x)?);
    let mut features = Vec::new();
    for l in 0..layers {
        let (ha, hb) = (
            fa.get(l, FeatureKind::Post).expect("layer"),
            fb.get(l, FeatureKind::Post).expect("layer"),
        );
        let theta = feature_subspace_angles(ha.view().into_dyn(), hb.view().into_dyn(), K)?;
        features.push(theta.mean().unwrap_or(f64::NAN).to_degrees());
    }
    Ok(Angles {
        pair,
        left: weights.iter().map(|w| w.mean_left().to_degrees()).collect(),
        right: weights
            .iter()
            .map(|w| w.mean_right().to_degrees())
            .collect(),
        features,
    })
}

fn layer_name(layer: usize, layers: usize) -> String {
    if layer + 1 == layers {
        "logits".into()
    } else {
        format!("h{}", layer + 1)
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let dir = std::env::args_os()
        .nth(1)
        .map_or_else(|| PathBuf::from("target/subspace_digits"), PathBuf::from);
    let data = llfc::data::digits::<Real>();
    let alphas = llfc::lmc::uniform_grid(21)?;
    for setup in setups() {
        let layers = setup.num_layers();
        let spec = PermutationSpec::mlp(layers);
        let outcome = run(&setup, &data, &alphas, &mut ())?;
        let a = &outcome.a;
        let b = &outcome.pair(Method::Naive).second;
        let mut rows: Vec<Measured> = Method::ALL
            .iter()
            .map(|&m| {
                let result = outcome.pair(m).clone();
                Measured {
                    pair: Pair::Permutation(m),
                    second: result.second.clone(),
                    result,
                    change: None,
                }
            })
            .collect();
        let (ha, hb) = (
            hidden_features(a, &data.x_train)?,
            hidden_features(b, &data.x_train)?,
        );
        for ridge in Ridge::ALL {
            let options = CcaOptions {
                regularization: ridge.regularization(),
            };
            let alignment = cca_alignment_from_features(&ha, &hb, &options)?;
            let aligned = apply_cca(&spec, &alignment, b)?;
            // The method stored in the result is unused: the row is labelled by `pair`.
            let result = measure(Method::Naive, a, &aligned, &data, &alphas, &alphas)?;
            rows.push(Measured {
                pair: Pair::Cca(ridge),
                change: Some(mlp_function_change(b, &aligned, &data.x_test)?),
                second: aligned,
                result,
            });
        }

        println!("━━ MLP {} (seed {}) ━━", setup.name(), setup.seed);
        let acc = outcome.accuracy.map(|v| 100.0 * v);
        println!(
            "test accuracy: A {:.1} %, B {:.1} %, C {:.1} %",
            acc[0], acc[1], acc[2]
        );
        println!(
            "\nLMC and LLFC on the test set (E[1 − cos_α] of the post-activations at α = {MID}):"
        );
        let heads: Vec<String> = (0..layers).map(|l| layer_name(l, layers)).collect();
        print!("  {:<24} {:>8} {:>9}", "pair", "loss b.", "error b.");
        for h in &heads {
            print!(" {h:>8}");
        }
        println!(
            " {:>9} {:>10} {:>10} {:>9}",
            "acc(½)", "Δf(B) rel", "same pred", "acc(B')"
        );
        for row in &rows {
            let r = &row.result;
            print!(
                "  {:<24} {:>8.4} {:>8.2}%",
                row.pair.label(),
                r.loss_barrier(),
                100.0 * r.error_barrier()
            );
            for l in 0..layers {
                print!(" {:>8.4}", r.llfc(MID, l).0);
            }
            let acc = mlp::evaluate(&row.second, &data.x_test, &data.y_test)?.accuracy;
            let mid = r.curve.alphas.iter().position(|&a| (a - MID).abs() < 1e-12);
            let mid = mid.map_or(f64::NAN, |k| 100.0 * (1.0 - r.curve.error[k]));
            print!(" {mid:>8.1}%");
            match row.change {
                Some(c) => print!(
                    " {:>10.4} {:>9.1}%",
                    c.relative_logits,
                    100.0 * c.same_prediction
                ),
                None => print!(" {:>10} {:>10}", "-", "-"),
            }
            println!(" {:>8.1}%", 100.0 * acc);
        }
        print!("  {:<24} {:>8} {:>9}", "baseline E[1 − cos_A,B]", "", "");
        for l in 0..layers {
            print!(" {:>8.4}", rows[0].result.llfc(MID, l).1);
        }
        println!("\n");

        println!("Mean principal angle (degrees) between the top-{K} subspaces of A and the second model:");
        println!("  weights' left (output) | right (input) singular subspaces | features' principal subspaces (test set)");
        print!("  {:<24}", "pair");
        for kind in ["left", "right", "feat"] {
            for h in &heads {
                print!(" {:>11}", format!("{kind} {h}"));
            }
        }
        println!();
        let mut all = Vec::new();
        for row in &rows {
            let ang = angles(row.pair, a, &row.second, &data.x_test, layers)?;
            print!("  {:<24}", row.pair.label());
            for v in ang.left.iter().chain(&ang.right).chain(&ang.features) {
                print!(" {v:>11.2}");
            }
            println!();
            all.push(ang);
        }
        let path = dir.join(format!("angles_{}.svg", setup.name()));
        plot::plot_angles(&setup.name(), &heads, &all, &path)?;
        println!("plot: {}\n", path.display());
    }
    Ok(())
}
