//! The outputs of `llfc_report`: the JSON report and the printed table.

use std::fmt::Write as _;
use std::path::Path;

use llfc::metrics::{CosineVariant, SampleStats};
use serde_json::{json, Value};

use super::attribution;
use super::{KindReport, LayerReport};

pub(crate) fn variant_name(v: CosineVariant) -> &'static str {
    match v {
        CosineVariant::Absolute => "absolute",
        _ => "signed",
    }
}

pub(crate) fn stats_json(s: &SampleStats) -> Value {
    json!({ "mean": s.mean, "std": s.std, "count": s.count, "skipped": s.skipped })
}

pub(crate) fn kind_json(k: &KindReport) -> Value {
    let rows: Vec<Value> = k
        .rows
        .iter()
        .map(|r| {
            json!({
                "alpha": r.alpha,
                "distance": stats_json(&r.distance),
                "coef": stats_json(&r.scale.coef),
                "c": stats_json(&r.scale.c),
                "matrix_coef": r.scale.matrix_coef,
                "matrix_c": r.scale.matrix_c,
            })
        })
        .collect();
    json!({ "baseline": stats_json(&k.baseline), "alphas": rows })
}

pub(crate) fn report_json(
    path: &Path,
    variant: CosineVariant,
    alphas: &[f64],
    reports: &[LayerReport],
) -> Value {
    let layers: Vec<Value> = reports
        .iter()
        .map(|r| {
            let weak = r.weak.as_ref().map(|w| {
                w.iter()
                    .map(|w| {
                        json!({
                            "alpha": w.alpha,
                            "relative": w.relative,
                            "vanilla": w.vanilla,
                            "cosine": stats_json(&w.cosine),
                        })
                    })
                    .collect::<Vec<_>>()
            });
            let comm = r.commutativity.as_ref().map(|(param, c)| {
                json!({
                    "weight": param,
                    "relative": c.relative,
                    "vanilla": c.vanilla,
                    "baseline": c.baseline,
                    "residual_norm": c.residual_norm,
                })
            });
            json!({
                "name": r.name,
                "shape": r.shape,
                "post": kind_json(&r.post),
                "pre": r.pre.as_ref().map(kind_json),
                "weak_additivity": weak,
                "commutativity": comm,
                "conv": attribution::conv_json(&r.attribution),
                "attribution": attribution::attribution_json(&r.attribution),
            })
        })
        .collect();
    json!({
        "features": path.display().to_string(),
        "variant": variant_name(variant),
        "alphas": alphas,
        "layers": layers,
    })
}

/// A number for the table: 4 significant digits, `-` when undefined.
pub(crate) fn num(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.4e}"))
}

pub(crate) fn table(
    path: &Path,
    variant: CosineVariant,
    alphas: &[f64],
    reports: &[LayerReport],
) -> String {
    let d = match variant {
        CosineVariant::Absolute => "1-|cos|",
        _ => "1-cos",
    };
    let w = reports
        .iter()
        .map(|r| r.name.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let alpha_list: Vec<String> = alphas.iter().map(f64::to_string).collect();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "LLFC of `{}`: {} layers, alpha = {} (theta(alpha) = alpha A + (1 - alpha) B)",
        path.display(),
        reports.len(),
        alpha_list.join(", ")
    );
    let _ = writeln!(
        s,
        "{:<w$}  {:<4}  {:>6}  {:>11}  {:>10}  {:>11}  {:>10}  {:>11}  {:>11}  {:>7}",
        "layer",
        "feat",
        "alpha",
        format!("E[{d}_a]"),
        "std",
        format!("E[{d}_AB]"),
        "std",
        "c (matrix)",
        "c (mean)",
        "skipped"
    );
    for r in reports {
        let kinds = std::iter::once(("post", &r.post)).chain(r.pre.as_ref().map(|p| ("pre", p)));
        for (kind, k) in kinds {
            for row in &k.rows {
                let _ = writeln!(
                    s,
                    "{:<w$}  {:<4}  {:>6}  {:>11}  {:>10}  {:>11}  {:>10}  {:>11}  {:>11}  {:>7}",
                    r.name,
                    kind,
                    row.alpha,
                    num(row.distance.mean),
                    num(row.distance.std),
                    num(k.baseline.mean),
                    num(k.baseline.std),
                    num(row.scale.matrix_c),
                    num(row.scale.c.mean),
                    row.distance.skipped.max(k.baseline.skipped)
                );
            }
        }
    }
    if reports.iter().any(|r| r.weak.is_some()) {
        let _ = writeln!(s, "\nweak additivity of ReLU (from pre-activations)");
        let _ = writeln!(
            s,
            "{:<w$}  {:>6}  {:>11}  {:>11}  {:>11}",
            "layer", "alpha", "relative", "vanilla", "E[1-cos]"
        );
        for r in reports {
            for wa in r.weak.iter().flatten() {
                let _ = writeln!(
                    s,
                    "{:<w$}  {:>6}  {:>11}  {:>11}  {:>11}",
                    r.name,
                    wa.alpha,
                    num(wa.relative),
                    num(wa.vanilla),
                    num(wa.cosine.mean)
                );
            }
        }
    }
    if reports.iter().any(|r| r.commutativity.is_some()) {
        let _ = writeln!(
            s,
            "\ncommutativity (W_A H_A + W_B H_B vs W_A H_B + W_B H_A)"
        );
        let _ = writeln!(
            s,
            "{:<w$}  {:>11}  {:>11}  {:>11}  weight",
            "layer", "relative", "vanilla", "baseline"
        );
        for r in reports {
            if let Some((param, c)) = &r.commutativity {
                let _ = writeln!(
                    s,
                    "{:<w$}  {:>11}  {:>11}  {:>11}  {param}",
                    r.name,
                    num(c.relative),
                    num(c.vanilla),
                    num(c.baseline)
                );
            }
        }
    }
    let rows: Vec<(&str, &attribution::Extra)> = reports
        .iter()
        .map(|r| (r.name.as_str(), &r.attribution))
        .collect();
    s + &attribution::table(&rows, w)
}
