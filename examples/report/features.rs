//! The features file of `llfc_report`: its keys (`A/…`, `B/…`, `alpha=…/…`, `pre/…`, `in/…`),
//! reading it, and selecting α values and layers.

use std::collections::HashMap;
use std::path::Path;

use llfc::io::read_npz;
use ndarray::ArrayD;

use crate::cli::{one_line, usage, CliError, Result};

/// The namespace of a key: features, pre-activations or a linear layer's inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Post,
    Pre,
    In,
}

impl Kind {
    pub(crate) fn prefix(self) -> &'static str {
        match self {
            Self::Post => "",
            Self::Pre => "pre/",
            Self::In => "in/",
        }
    }
}

/// Whose features: A, B, or θ(α) (index into [`Features::alphas`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Who {
    A,
    B,
    Alpha(usize),
}

/// The parsed features file.
pub(crate) struct Features {
    /// Layers in order of their `A/{layer}` arrays.
    pub(crate) layers: Vec<String>,
    /// The α values of the file with the label each is written with, in file order.
    pub(crate) alphas: Vec<(f64, String)>,
    arrays: HashMap<(Kind, Who, String), ArrayD<f64>>,
}

impl Features {
    pub(crate) fn get(&self, kind: Kind, who: Who, layer: &str) -> Option<&ArrayD<f64>> {
        self.arrays.get(&(kind, who, layer.to_string()))
    }

    pub(crate) fn key(&self, kind: Kind, who: Who, layer: &str) -> String {
        let who = match who {
            Who::A => "A".to_string(),
            Who::B => "B".to_string(),
            Who::Alpha(i) => format!("alpha={}", self.alphas[i].1),
        };
        format!("{}{who}/{layer}", kind.prefix())
    }

    pub(crate) fn require(
        &self,
        kind: Kind,
        who: Who,
        layer: &str,
        path: &Path,
    ) -> Result<&ArrayD<f64>> {
        self.get(kind, who, layer).ok_or_else(|| {
            CliError::Usage(format!(
                "features file `{}` has no array `{}`",
                path.display(),
                self.key(kind, who, layer)
            ))
        })
    }
}

/// Parse an α label as a finite decimal number.
pub(crate) fn parse_alpha(label: &str) -> Option<f64> {
    label
        .parse::<f64>()
        .ok()
        .filter(|a| a.is_finite())
        .map(|a| a + 0.0) // −0 → +0
}

/// Split a key into namespace, owner and layer.
pub(crate) fn parse_key(key: &str) -> Option<(Kind, &str, &str)> {
    let (kind, rest) = if let Some(r) = key.strip_prefix("pre/") {
        (Kind::Pre, r)
    } else if let Some(r) = key.strip_prefix("in/") {
        (Kind::In, r)
    } else {
        (Kind::Post, key)
    };
    let (who, layer) = rest.split_once('/')?;
    (!layer.is_empty()).then_some((kind, who, layer))
}

pub(crate) fn read_features(path: &Path) -> Result<Features> {
    let params = read_npz::<f64>(path)?;
    let mut f = Features {
        layers: Vec::new(),
        alphas: Vec::new(),
        arrays: HashMap::new(),
    };
    let expected = "expected `A/{layer}`, `B/{layer}`, `alpha={α}/{layer}`, `pre/A/{layer}`, `pre/B/{layer}`, `pre/alpha={α}/{layer}`, `in/A/{layer}` or `in/B/{layer}`";
    for (key, array) in params {
        let bad = |why: &str| {
            let hint = if why.contains("unrecognised") {
                format!(" ({expected})")
            } else {
                String::new()
            };
            usage(format!(
                "features file `{}`: array `{}` {why}{hint}",
                path.display(),
                one_line(&key, 200)
            ))
        };
        let Some((kind, who, layer)) = parse_key(&key) else {
            return bad("has an unrecognised name");
        };
        let who = match who {
            "A" => Who::A,
            "B" => Who::B,
            _ => {
                let Some(label) = who.strip_prefix("alpha=") else {
                    return bad("has an unrecognised name");
                };
                let Some(alpha) = parse_alpha(label) else {
                    return bad("has an α that is not a finite decimal number");
                };
                let index = if let Some(i) = f.alphas.iter().position(|(v, _)| *v == alpha) {
                    if f.alphas[i].1 != label {
                        return bad(&format!(
                            "writes α = {alpha} as `{label}`, another array as `{}`: use one spelling",
                            f.alphas[i].1
                        ));
                    }
                    i
                } else {
                    f.alphas.push((alpha, label.to_string()));
                    f.alphas.len() - 1
                };
                Who::Alpha(index)
            }
        };
        if kind == Kind::Post && who == Who::A {
            f.layers.push(layer.to_string());
        }
        f.arrays.insert((kind, who, layer.to_string()), array);
    }
    // Every array must belong to a layer that has A's features.
    let mut orphans: Vec<String> = f
        .arrays
        .keys()
        .filter(|(_, _, layer)| !f.layers.contains(layer))
        .map(|(kind, who, layer)| f.key(*kind, *who, layer))
        .collect();
    orphans.sort();
    if let Some(key) = orphans.first() {
        let layer = parse_key(key).map_or("", |(_, _, l)| l);
        return usage(format!(
            "features file `{}` has `{key}` but no `A/{layer}` (every layer needs A's and B's features)",
            path.display()
        ));
    }
    if f.layers.is_empty() {
        return usage(format!(
            "features file `{}` has no `A/{{layer}}` array",
            path.display()
        ));
    }
    Ok(f)
}

/// The α indices to report, in report order.
pub(crate) fn select_alphas(
    f: &Features,
    wanted: Option<&[String]>,
    path: &Path,
) -> Result<Vec<usize>> {
    let have = || {
        let mut v: Vec<&str> = f.alphas.iter().map(|(_, l)| l.as_str()).collect();
        v.sort_by(|x, y| parse_alpha(x).partial_cmp(&parse_alpha(y)).expect("finite"));
        v.join(", ")
    };
    let Some(wanted) = wanted else {
        if f.alphas.is_empty() {
            return usage(format!(
                "features file `{}` has no `alpha={{α}}/{{layer}}` array",
                path.display()
            ));
        }
        let mut idx: Vec<usize> = (0..f.alphas.len()).collect();
        idx.sort_by(|&i, &j| f.alphas[i].0.partial_cmp(&f.alphas[j].0).expect("finite"));
        return Ok(idx);
    };
    let mut out: Vec<usize> = Vec::with_capacity(wanted.len());
    for label in wanted {
        let Some(alpha) = parse_alpha(label.trim()) else {
            return usage(format!(
                "--alphas: `{label}` is not a finite decimal number"
            ));
        };
        let Some(i) = f.alphas.iter().position(|(v, _)| *v == alpha) else {
            return usage(format!(
                "features file `{}` has no features for α = {label} (no `alpha={label}/…` arrays; the file has α = {})",
                path.display(),
                have()
            ));
        };
        if out.contains(&i) {
            return usage(format!("--alphas: α = {label} is given twice"));
        }
        out.push(i);
    }
    if out.is_empty() {
        return usage("--alphas: no value given");
    }
    Ok(out)
}

/// The layers to report, in report order.
pub(crate) fn select_layers(
    f: &Features,
    wanted: Option<&[String]>,
    path: &Path,
) -> Result<Vec<String>> {
    let Some(wanted) = wanted else {
        return Ok(f.layers.clone());
    };
    let mut out: Vec<String> = Vec::with_capacity(wanted.len());
    for layer in wanted {
        if !f.layers.contains(layer) {
            return usage(format!(
                "features file `{}` has no layer `{layer}` (no `A/{layer}` array; layers: {})",
                path.display(),
                f.layers.join(", ")
            ));
        }
        if out.contains(layer) {
            return usage(format!("--layers: `{layer}` is given twice"));
        }
        out.push(layer.clone());
    }
    if out.is_empty() {
        return usage("--layers: no layer given");
    }
    Ok(out)
}
