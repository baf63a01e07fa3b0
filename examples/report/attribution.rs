//! The LLFC error attribution and the convolutional layers of `llfc_report` (a module of the
//! example, included with `#[path]`; see the example's header for the keys and flags).
//!
//! - Commutativity of a layer whose weight is `[out, in]` (dense) or `[out, in/groups, kh, kw]`
//!   (a `Conv2d`, geometry from `--conv LAYER=stride:S,padding:P,dilation:D,groups:G`).
//! - The local split of the pre-activation deviation `ΔZ = Z_α − Z_lin` of such a layer, from its
//!   inputs `in/A`, `in/B`, `in/alpha={α}` and both checkpoints' weights:
//!   propagated `ΔH_in W_αᵀ` (or `conv(W_α, ΔH_in)`) vs its own commutativity source
//!   `−α(1 − α)(H_A − H_B)(W_A − W_B)ᵀ` (`llfc::metrics::attribution`).
//! - The split of a ReLU's post-activation deviation `ΔH = S ⊙ ΔZ + E` from `pre/A`, `pre/B`,
//!   `pre/alpha={α}` (propagated vs its own weak-additivity source `E`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use llfc::io::Checkpoint;
use llfc::metrics::attribution::{
    local_split_activation, local_split_conv, local_split_dense, ConvLayer, DenseLayer, LocalSplit,
    Part,
};
use llfc::metrics::{commutativity, conv_commutativity, Commutativity, ConvGeometry};
use ndarray::{ArrayD, ArrayView1, ArrayView2, ArrayView4, Ix1, Ix2, Ix4};
use serde_json::{json, Value};

use super::features::{Features, Kind, Who};
use super::output::num;
use super::{checkpoint_param, context};
use crate::cli::{usage, CliError, Result};

/// Parse one geometry, `stride:2,padding:1x0,dilation:1,groups:4` (any subset, any order; a
/// value is `N` or `HxW`).
fn parse_geometry(text: &str) -> std::result::Result<ConvGeometry, String> {
    let mut g = ConvGeometry::default();
    let mut seen = Vec::new();
    for item in text.split(',') {
        let Some((key, value)) = item.split_once(':') else {
            return Err(format!("`{item}` is not KEY:VALUE"));
        };
        if seen.contains(&key) {
            return Err(format!("`{key}` is given twice"));
        }
        seen.push(key);
        let number = |v: &str| {
            v.trim()
                .parse::<usize>()
                .map_err(|_| format!("`{item}`: `{v}` is not a non-negative integer"))
        };
        let pair = || -> std::result::Result<[usize; 2], String> {
            match value.split_once('x') {
                Some((h, w)) => Ok([number(h)?, number(w)?]),
                None => {
                    let v = number(value)?;
                    Ok([v, v])
                }
            }
        };
        match key.trim() {
            "stride" => g.stride = pair()?,
            "padding" => g.padding = pair()?,
            "dilation" => g.dilation = pair()?,
            "groups" => g.groups = number(value)?,
            other => {
                return Err(format!(
                    "unknown key `{other}` (expected stride, padding, dilation, groups)"
                ))
            }
        }
    }
    if g.groups == 0 || g.stride.contains(&0) || g.dilation.contains(&0) {
        return Err("stride, dilation and groups must be at least 1".into());
    }
    Ok(g)
}

/// Parse the `--conv LAYER=GEOMETRY` flags.
pub fn conv_geometries(
    flags: &[String],
    layers: &[String],
) -> Result<BTreeMap<String, ConvGeometry>> {
    let mut out = BTreeMap::new();
    for flag in flags {
        let Some((layer, spec)) = flag
            .rsplit_once('=')
            .filter(|(l, s)| !l.is_empty() && !s.is_empty())
        else {
            return usage(format!(
                "--conv `{flag}`: expected LAYER=stride:S,padding:P,dilation:D,groups:G"
            ));
        };
        if !layers.iter().any(|l| l == layer) {
            return usage(format!(
                "--conv `{flag}`: `{layer}` is not a reported layer ({})",
                layers.join(", ")
            ));
        }
        let geometry =
            parse_geometry(spec).map_err(|e| CliError::Usage(format!("--conv `{flag}`: {e}")))?;
        if out.insert(layer.to_string(), geometry).is_some() {
            return usage(format!("--conv: layer `{layer}` is given twice"));
        }
    }
    Ok(out)
}

/// A 2-D view of a weight or input array, or a clear error.
pub fn matrix<'a>(a: &'a ArrayD<f64>, what: &str, layout: &str) -> Result<ArrayView2<'a, f64>> {
    a.view().into_dimensionality::<Ix2>().map_err(|_| {
        CliError::Usage(format!(
            "{what} has shape {:?}; a dense layer needs a {layout} matrix",
            a.shape()
        ))
    })
}

/// A `[samples, …]` input as the `[samples, in]` matrix a dense layer reads: flattened per
/// sample, row-major (`torch.flatten(x, 1)`), so a conv map feeding a linear layer works.
fn input_matrix<'a>(a: &'a ArrayD<f64>, what: &str) -> Result<ArrayView2<'a, f64>> {
    if a.ndim() < 2 {
        return matrix(a, what, "[samples, in]");
    }
    let (n, rest) = (a.shape()[0], a.shape()[1..].iter().product::<usize>());
    a.view().into_shape_with_order((n, rest)).map_err(|_| {
        CliError::Usage(format!(
            "{what} has shape {:?} in a memory layout that cannot be flattened per sample",
            a.shape()
        ))
    })
}

/// A 4-D view of a conv weight or input, or a clear error.
fn tensor4<'a>(a: &'a ArrayD<f64>, what: &str, layout: &str) -> Result<ArrayView4<'a, f64>> {
    a.view().into_dimensionality::<Ix4>().map_err(|_| {
        CliError::Usage(format!(
            "{what} has shape {:?}; a conv layer needs a {layout} array",
            a.shape()
        ))
    })
}

/// One layer's weights (and biases, when both checkpoints have them) in A and B.
pub struct LayerWeights<'a> {
    param: String,
    w: [&'a ArrayD<f64>; 2],
    bias: Option<[ArrayView1<'a, f64>; 2]>,
}

impl<'a> LayerWeights<'a> {
    /// The weight `param` of `layer` in both checkpoints, and the sibling `….bias` when
    /// `param` ends in `.weight` and both checkpoints have a `[out]` bias of that name.
    pub fn read(
        ckpts: [(&'a Checkpoint, &std::path::Path); 2],
        param: &str,
        layer: &str,
    ) -> Result<Self> {
        let wa = checkpoint_param(ckpts[0].0, ckpts[0].1, param, layer)?;
        let wb = checkpoint_param(ckpts[1].0, ckpts[1].1, param, layer)?;
        let bias = param.strip_suffix(".weight").and_then(|stem| {
            let name = format!("{stem}.bias");
            let get = |c: &'a Checkpoint| {
                c.params
                    .get(&name)
                    .and_then(|b| b.view().into_dimensionality::<Ix1>().ok())
                    .filter(|b| b.len() == wa.shape()[0])
            };
            Some([get(ckpts[0].0)?, get(ckpts[1].0)?])
        });
        Ok(Self {
            param: param.to_string(),
            w: [wa, wb],
            bias,
        })
    }

    fn is_conv(&self) -> bool {
        self.w[0].ndim() == 4
    }

    fn what(&self) -> String {
        format!("weight `{}`", self.param)
    }

    fn dense(&self, i: usize) -> Result<DenseLayer<'a, f64>> {
        Ok(DenseLayer {
            weight: matrix(self.w[i], &self.what(), "[out, in]")?,
            bias: self.bias.map(|b| b[i]),
        })
    }

    fn conv(&self, i: usize) -> Result<ConvLayer<'a, f64>> {
        Ok(ConvLayer {
            weight: tensor4(self.w[i], &self.what(), "[out, in/groups, kh, kw]")?,
            bias: self.bias.map(|b| b[i]),
        })
    }
}

/// The commutativity residuals of a dense or conv layer (by the weight's rank).
pub fn layer_commutativity(
    w: &LayerWeights<'_>,
    inputs: [&ArrayD<f64>; 2],
    geometry: Option<&ConvGeometry>,
    layer: &str,
) -> Result<Commutativity> {
    let at = || {
        format!(
            "commutativity of layer `{layer}` (weight `{}`, arrays `in/A/{layer}`, `in/B/{layer}`)",
            w.param
        )
    };
    if w.is_conv() {
        let (ha, hb) = conv_inputs(inputs, layer)?;
        let (a, b) = (w.conv(0)?, w.conv(1)?);
        let g = geometry.copied().unwrap_or_default();
        context(conv_commutativity(a.weight, b.weight, ha, hb, &g), at)
    } else {
        if geometry.is_some() {
            return usage(format!(
                "--conv {layer}=…: weight `{}` has shape {:?}, not a conv weight [out, in/groups, kh, kw]",
                w.param,
                w.w[0].shape()
            ));
        }
        let ha = input_matrix(inputs[0], &format!("array `in/A/{layer}`"))?;
        let hb = input_matrix(inputs[1], &format!("array `in/B/{layer}`"))?;
        context(
            commutativity(w.dense(0)?.weight, w.dense(1)?.weight, ha, hb),
            at,
        )
    }
}

fn conv_inputs<'a>(
    inputs: [&'a ArrayD<f64>; 2],
    layer: &str,
) -> Result<(ArrayView4<'a, f64>, ArrayView4<'a, f64>)> {
    let layout = "[samples, in, h, w]";
    Ok((
        tensor4(inputs[0], &format!("array `in/A/{layer}`"), layout)?,
        tensor4(inputs[1], &format!("array `in/B/{layer}`"), layout)?,
    ))
}

/// What the attribution adds to one layer's report.
#[derive(Default)]
pub struct Extra {
    /// The conv geometry, for conv layers with checkpoints and inputs.
    pub conv: Option<ConvGeometry>,
    /// The local split of `ΔZ` per reported α (with `in/alpha={α}/{layer}` and checkpoints).
    pub splits: Vec<LocalSplit>,
    /// The split of `ΔH = S ⊙ ΔZ + E` per reported α (with `pre/…` of A, B and every α).
    pub activation: Vec<LocalSplit>,
}

/// The local splits of `ΔZ` of a layer whose inputs of θ(α) are in the file.
pub fn layer_splits(
    f: &Features,
    layer: &str,
    alphas: &[usize],
    w: &LayerWeights<'_>,
    inputs: [&ArrayD<f64>; 2],
    geometry: Option<&ConvGeometry>,
    path: &std::path::Path,
) -> Result<Extra> {
    let mut extra = Extra {
        conv: w.is_conv().then(|| geometry.copied().unwrap_or_default()),
        ..Extra::default()
    };
    if !(0..f.alphas.len()).any(|i| f.get(Kind::In, Who::Alpha(i), layer).is_some()) {
        return Ok(extra);
    }
    for &i in alphas {
        let h_alpha = f.require(Kind::In, Who::Alpha(i), layer, path)?;
        let alpha = f.alphas[i].0;
        let key = f.key(Kind::In, Who::Alpha(i), layer);
        let at = || {
            format!(
                "attribution of layer `{layer}` (weight `{}`, arrays `in/A/{layer}`, `in/B/{layer}`, `{key}`)",
                w.param
            )
        };
        let split = if let Some(g) = extra.conv {
            let (ha, hb) = conv_inputs(inputs, layer)?;
            let hal = tensor4(h_alpha, &format!("array `{key}`"), "[samples, in, h, w]")?;
            context(
                local_split_conv(w.conv(0)?, w.conv(1)?, ha, hb, hal, alpha, &g),
                at,
            )?
        } else {
            let m = |a, k: &str| input_matrix(a, &format!("array `{k}`"));
            let (ha, hb) = (
                m(inputs[0], &format!("in/A/{layer}"))?,
                m(inputs[1], &format!("in/B/{layer}"))?,
            );
            let hal = m(h_alpha, &key)?;
            context(
                local_split_dense(w.dense(0)?, w.dense(1)?, ha, hb, hal, alpha),
                at,
            )?
        };
        extra.splits.push(split);
    }
    Ok(extra)
}

/// The splits of `ΔH = S ⊙ ΔZ + E` of a layer with pre-activations of A, B and every α.
pub fn activation_splits(f: &Features, layer: &str, alphas: &[usize]) -> Result<Vec<LocalSplit>> {
    let (Some(za), Some(zb)) = (
        f.get(Kind::Pre, Who::A, layer),
        f.get(Kind::Pre, Who::B, layer),
    ) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for &i in alphas {
        let Some(z) = f.get(Kind::Pre, Who::Alpha(i), layer) else {
            return Ok(Vec::new());
        };
        let alpha = f.alphas[i].0;
        out.push(context(local_split_activation(za, zb, z, alpha), || {
            format!(
                "activation split of layer `{layer}` (arrays `pre/A/{layer}`, `pre/B/{layer}`, `{}`)",
                f.key(Kind::Pre, Who::Alpha(i), layer)
            )
        })?);
    }
    Ok(out)
}

fn part_json(p: &Part) -> Value {
    json!({ "norm": p.norm, "inner": p.inner, "share": p.share })
}

fn split_json(s: &LocalSplit) -> Value {
    json!({
        "alpha": s.alpha,
        "norm": s.norm,
        "reference_norm": s.reference_norm,
        "relative": s.relative,
        "closure": s.closure,
        "propagated": part_json(&s.propagated),
        "own": part_json(&s.own),
    })
}

/// The `conv` value of a layer's JSON (`null` for dense layers).
pub fn conv_json(extra: &Extra) -> Value {
    extra.conv.map_or(Value::Null, |g| {
        json!({ "stride": g.stride, "padding": g.padding, "dilation": g.dilation, "groups": g.groups })
    })
}

/// The `attribution` value of a layer's JSON (`null` when nothing was computed).
pub fn attribution_json(extra: &Extra) -> Value {
    if extra.splits.is_empty() && extra.activation.is_empty() {
        return Value::Null;
    }
    let list =
        |v: &[LocalSplit]| (!v.is_empty()).then(|| v.iter().map(split_json).collect::<Vec<_>>());
    json!({ "pre": list(&extra.splits), "activation": list(&extra.activation) })
}

/// The attribution tables (empty when no layer has any).
pub fn table(rows: &[(&str, &Extra)], w: usize) -> String {
    let mut s = String::new();
    let mut section = |title: &str, pick: &dyn Fn(&Extra) -> &[LocalSplit], own: &str| {
        if rows.iter().all(|(_, e)| pick(e).is_empty()) {
            return;
        }
        let _ = writeln!(s, "\n{title}");
        let _ = writeln!(
            s,
            "{:<w$}  {:>6}  {:>11}  {:>11}  {:>11}  {:>11}  {:>9}",
            "layer", "alpha", "relative", "propagated", own, "|own|/|dev|", "closure"
        );
        for (name, e) in rows {
            for sp in pick(e) {
                let _ = writeln!(
                    s,
                    "{:<w$}  {:>6}  {:>11}  {:>11}  {:>11}  {:>11}  {:>9}",
                    name,
                    sp.alpha,
                    num(sp.relative),
                    num(sp.propagated.share),
                    num(sp.own.share),
                    num((sp.norm > 0.0).then(|| sp.own.norm / sp.norm)),
                    sp.closure
                        .map_or_else(|| "-".into(), |c| format!("{c:.1e}"))
                );
            }
        }
    };
    section(
        "LLFC error attribution of the pre-activations (dZ = Z_alpha - Z_lin = propagated dH_in W_alpha^T + own -alpha(1-alpha)(H_A - H_B)(W_A - W_B)^T; shares of |dZ|^2)",
        &|e| &e.splits,
        "own comm.",
    );
    section(
        "LLFC error attribution of the ReLU (dH = S * dZ + E; propagated = S * dZ, own = weak-additivity source E; shares of |dH|^2)",
        &|e| &e.activation,
        "own E",
    );
    s
}
