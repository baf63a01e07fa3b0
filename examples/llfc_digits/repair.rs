//! REPAIR rows of `llfc_digits` (Jordan et al. 2023, *REPAIR*): the naive, weight-matched and
//! activation-matched pairs with θ(α)'s hidden pre-activations renormalised to
//! `μ_α = α μ_A + (1 − α) μ_B`, `σ_α = α σ_A + (1 − α) σ_B` (statistics on the training
//! inputs, layer by layer, folded into the weights), before and after: LMC barriers on the test
//! set, and LLFC's `E[1 − cos_½]` and scale `c` of every layer's output.

use llfc::lmc::{self, BarrierKind};
use llfc::metrics::{llfc_layer, CosineVariant};
use llfc::mlp::{self, FeatureKind};
use llfc::repair::{repair_towards, RepairOptions, Target};
use llfc::{Params, Result};
use rayon::prelude::*;

use crate::experiment::{Method, Outcome, Real, Setup};
use crate::table::layer_name;
use llfc::data::Dataset;

/// The α of the LLFC columns.
const MID: f64 = 0.5;

/// LLFC of one layer's output at α = ½: `E[1 − cos_½]` and the scale `c = 1 / coef`.
#[derive(Clone, Copy, Debug)]
pub struct LayerLlfc {
    /// `E[1 − cos_½]`.
    pub distance: f64,
    /// LLFC's `c` over the whole test set (`f_int ≈ c · f(θ(½))`).
    pub c: f64,
}

/// One pair before and after REPAIR.
#[derive(Clone, Debug)]
pub struct RepairRow {
    /// The pair.
    pub method: Method,
    /// `(before, after)` interpolated test-loss barrier.
    pub loss_barrier: (f64, f64),
    /// `(before, after)` interpolated test-error barrier.
    pub error_barrier: (f64, f64),
    /// Per layer, `(before, after)`.
    pub llfc: Vec<(LayerLlfc, LayerLlfc)>,
}

/// REPAIR'd θ(α) for every α of `alphas`: A's and B's statistics once, then each α in parallel
/// (the endpoints as they are).
fn repaired_path(
    a: &Params<Real>,
    b: &Params<Real>,
    x: &ndarray::Array2<Real>,
    alphas: &[f64],
) -> Result<Vec<Params<Real>>> {
    let layers = mlp::repair_layers(mlp::num_layers(a)?);
    let features: Vec<&str> = layers.iter().map(|l| l.feature.as_str()).collect();
    let stats_a = mlp::pre_activation_stats(a, x, &features)?;
    let stats_b = mlp::pre_activation_stats(b, x, &features)?;
    alphas
        .par_iter()
        .map(|&alpha| {
            // θ(0) = B and θ(1) = A exactly: their statistics are the targets already, so
            // REPAIR would fold the identity (scale 1, shift 0) into them.
            if alpha == 0.0 || alpha == 1.0 {
                return a.interpolate(b, alpha);
            }
            let targets = stats_a
                .iter()
                .zip(&stats_b)
                .map(|(sa, sb)| Target::interpolate(sa, sb, alpha))
                .collect::<Result<Vec<_>>>()?;
            let measure = |p: &Params<Real>, f: &[&str]| mlp::pre_activation_stats(p, x, f);
            let theta = a.interpolate(b, alpha)?;
            let options = RepairOptions::default();
            Ok(repair_towards(&theta, &layers, &targets, measure, &options)?.params)
        })
        .collect()
}

/// LLFC at ½ of every layer's output of `theta` against A and B on the test inputs.
fn llfc_at_mid(
    theta: &Params<Real>,
    a: &Params<Real>,
    b: &Params<Real>,
    x: &ndarray::Array2<Real>,
) -> Result<Vec<LayerLlfc>> {
    let (f, fa, fb) = (
        mlp::forward_features(theta, x)?,
        mlp::forward_features(a, x)?,
        mlp::forward_features(b, x)?,
    );
    (0..f.num_layers())
        .map(|l| {
            let get = |g: &mlp::Features<Real>| g.get(l, FeatureKind::Post).expect("layer").clone();
            let m = llfc_layer(&get(&f), &get(&fa), &get(&fb), MID, CosineVariant::Signed)?;
            Ok(LayerLlfc {
                distance: m.distance.mean.unwrap_or(f64::NAN),
                c: m.scale.matrix_c.unwrap_or(f64::NAN),
            })
        })
        .collect()
}

/// The REPAIR rows of the naive, weight-matched and activation-matched pairs of `outcome`, on
/// its α grid (which holds ½).
///
/// # Errors
/// What [`repair_towards`], [`lmc::curve`] and [`llfc_layer`] report.
pub fn compare(data: &Dataset<Real>, alphas: &[f64], outcome: &Outcome) -> Result<Vec<RepairRow>> {
    let mid = alphas
        .iter()
        .position(|&a| (a - MID).abs() < 1e-12)
        .expect("the grid holds ½");
    let a = &outcome.a;
    [
        Method::Naive,
        Method::WeightMatched,
        Method::ActivationMatched,
    ]
    .into_par_iter()
    .map(|method| {
        let pair = outcome.pair(method);
        let b = &pair.second;
        let path = repaired_path(a, b, &data.x_train, alphas)?;
        let curve = lmc::curve(alphas, |alpha| {
            let k = alphas.iter().position(|&v| v == alpha).expect("grid α");
            let eval = mlp::evaluate(&path[k], &data.x_test, &data.y_test)?;
            Ok((eval.loss, 1.0 - eval.accuracy))
        })?;
        let kind = BarrierKind::Interpolated;
        let theta = a.interpolate(b, MID)?;
        let before = llfc_at_mid(&theta, a, b, &data.x_test)?;
        let after = llfc_at_mid(&path[mid], a, b, &data.x_test)?;
        Ok(RepairRow {
            method,
            loss_barrier: (pair.loss_barrier(), curve.loss_barrier(kind)?.height),
            error_barrier: (pair.error_barrier(), curve.error_barrier(kind)?.height),
            llfc: before.into_iter().zip(after).collect(),
        })
    })
    .collect()
}

/// Print the REPAIR tables of one architecture.
pub fn print(setup: &Setup, rows: &[RepairRow]) {
    println!(
        "REPAIR (Jordan et al. 2023): θ(α)'s hidden pre-activations renormalised to α·A + (1 − α)·B's\n\
         mean and std on the training inputs, layer by layer, folded into the weights (test set):"
    );
    println!(
        "  {:<28} {:^19}   {:^21}",
        "pair (before → after)", "loss barrier", "error barrier"
    );
    for row in rows {
        println!(
            "  {:<28} {:>8.4} → {:>8.4}   {:>7.2} % → {:>7.2} %",
            format!("{} + REPAIR", row.method.label()),
            row.loss_barrier.0,
            row.loss_barrier.1,
            100.0 * row.error_barrier.0,
            100.0 * row.error_barrier.1,
        );
    }
    println!("  LLFC at α = 0.5, before → after REPAIR: E[1 − cos_½] and the scale c (f_int ≈ c·f(θ(½))):");
    println!(
        "  {:<8} {:<28} {:^21}   {:^17}",
        "layer", "pair", "E[1 − cos_½]", "c"
    );
    let layers = setup.num_layers();
    for l in 0..layers {
        for (k, row) in rows.iter().enumerate() {
            let name = if k == 0 {
                layer_name(l, layers)
            } else {
                String::new()
            };
            let (before, after) = row.llfc[l];
            println!(
                "  {name:<8} {:<28} {:>9.4} → {:>9.4}   {:>7.3} → {:>7.3}",
                format!("{} + REPAIR", row.method.label()),
                before.distance,
                after.distance,
                before.c,
                after.c,
            );
        }
    }
    println!();
}
