//! `llfc_report`: the LLFC metrics of features exported from any framework.
//!
//! ```sh
//! cargo run --release --example llfc_report -- features.npz --json report.json
//! cargo run --release --example llfc_report -- features.npz --alphas 0.25,0.5,0.75 \
//!     --variant absolute --a model_a.safetensors --b model_b.safetensors --json report.json
//! ```
//!
//! Reads one `.npz` of per-layer features of two networks A and B and of their interpolations
//! `θ(α) = α θ_A + (1 − α) θ_B` (α = 1 is A), computed on the same samples, prints the LLFC
//! table (Zhou et al. 2023, *Going Beyond Linear Mode Connectivity: The Layerwise Linear
//! Feature Connectivity*) and writes it as JSON with `--json PATH`.
//!
//! # The features file
//! Arrays `[samples, …]` (rows are samples; each sample is flattened, so conv maps
//! `[samples, channels, h, w]` are fine), float16/32/64 (read exactly, computed in f64), stored
//! by `numpy.savez` or `numpy.savez_compressed` under these keys, `{layer}` being any name
//! (a PyTorch module name such as `layers.0` or `features.3`, `/` allowed):
//!
//! | key | array | needed for |
//! | --- | --- | --- |
//! | `A/{layer}`, `B/{layer}` | features of A and B (post-activations, or whatever is analysed) | every layer reported |
//! | `alpha={α}/{layer}` | features of θ(α); `{α}` a decimal number (`alpha=0.5/fc1`) | every reported layer and α |
//! | `pre/A/{layer}`, `pre/B/{layer}` | pre-activations of a layer followed by a ReLU | weak additivity (optional) |
//! | `pre/alpha={α}/{layer}` | pre-activations of θ(α) | LLFC of the pre-activations (optional) |
//! | `in/A/{layer}`, `in/B/{layer}` | `[samples, in]` (`[samples, …]` is flattened per sample for a linear layer; `[samples, in, h, w]` for a conv layer): what the layer reads (the previous layer's post-activations, or X) | commutativity (optional, with `--a`, `--b`) |
//! | `in/alpha={α}/{layer}` | what the layer reads in θ(α) | the attribution of `ΔZ` (optional, with `--a`, `--b`; one per reported α) |
//!
//! Layers are reported in the order in which their `A/{layer}` arrays appear in the file
//! (`numpy.savez` keeps the keyword order). The α values are read from the keys as decimal
//! numbers; `--alphas` values are matched to them by value (`0.5` matches `alpha=0.50`), and by
//! default every α of the file is reported, in increasing order. A layer with any
//! `pre/alpha=…` array needs one for every reported α. Any other key is an error.
//!
//! # Commutativity
//! With `--a A --b B` (checkpoints, `.safetensors` or `.npz`), every reported layer that has
//! `in/A/{layer}` and `in/B/{layer}` gets the commutativity residual of its weight, by default
//! the parameter `{layer}.weight` (`[out, in]`, PyTorch layout); `--weight LAYER=PARAM`
//! (repeatable) names another one. Biases are not involved. A weight `[out, in/groups, kh, kw]`
//! is a `Conv2d` (PyTorch's cross-correlation, inputs `[samples, in, h, w]`):
//! `R = conv(W_A − W_B, H_A − H_B)`, with the layer's geometry given by
//! `--conv LAYER=stride:S,padding:P,dilation:D,groups:G` (repeatable; any subset of the keys in
//! any order, each value `N` or `HxW`; defaults stride 1, padding 0, dilation 1, groups 1, as in
//! `nn.Conv2d`).
//!
//! # Attribution
//! Where the LLFC deviation of a layer comes from (`llfc::metrics::attribution`; α = 1 is A):
//! - with the checkpoints and `in/alpha={α}/{layer}` for every reported α (dense or conv), the
//!   deviation of the pre-activations `ΔZ = Z_α − Z_lin` (`Z_lin = α Z_A + (1 − α) Z_B`) splits
//!   exactly into what the layer's input brings, `ΔH_in W_αᵀ` (`conv(W_α, ΔH_in)`), and the
//!   layer's own commutativity source `−α(1 − α)(H_A − H_B)(W_A − W_B)ᵀ`; the table gives
//!   `‖ΔZ‖ / ‖Z_lin‖`, each part's share of `‖ΔZ‖²` (`⟨part, ΔZ⟩ / ‖ΔZ‖²`, the two add up to
//!   1), `‖own‖ / ‖ΔZ‖` and the closure `‖propagated + own − ΔZ‖ / ‖ΔZ‖` (rounding). The bias
//!   `{stem}.bias` of a weight `{stem}.weight` enters `‖Z_lin‖` when both checkpoints have it.
//! - with `pre/A/{layer}`, `pre/B/{layer}` and `pre/alpha={α}/{layer}` for every reported α, the
//!   ReLU's post-activation deviation `ΔH = S ⊙ ΔZ + E` splits into the propagated `S ⊙ ΔZ`
//!   (`S` the secant slope of ReLU between `Z_lin` and `Z_α`) and the weak-additivity source
//!   `E = σ(Z_lin) − α σ(Z_A) − (1 − α) σ(Z_B)`.
//!
//! # Output
//! The table on stdout; with `--json PATH`, per layer: for the features (`post`) and, when
//! given, the pre-activations (`pre`), the baseline `E[1 − cos_{A,B}]` (mean, std, count,
//! skipped) and per α the distance `E[1 − cos_α]`, the per-sample `coef` and `c = 1/coef` and
//! their whole-matrix values; the weak-additivity residuals per α; the commutativity residuals;
//! `conv`, a conv layer's geometry (`stride`, `padding`, `dilation` as `[h, w]`, `groups`), and
//! `attribution`: `pre` and `activation`, per α the split (`alpha`, `norm`, `reference_norm`,
//! `relative`, `closure`, and `propagated` / `own` with `norm`, `inner`, `share`).
//! Numbers are written at full precision (shortest round-trip decimal); undefined values are
//! `null`.
//!
//! Errors print one line on stderr and exit with status 1; nothing is written then (the JSON
//! goes to a temporary sibling file and is renamed into place only when everything succeeded).
//! Before any work, a `--json` that is the same file as an input (the features, `--a`, `--b`;
//! same path after resolving links, or same device and inode) is refused, and inputs must be
//! regular files. `--help` prints the options and exits with status 0.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[path = "report/attribution.rs"]
mod attribution;
#[path = "report/features.rs"]
mod features;
#[path = "report/output.rs"]
mod output;

use features::{read_features, select_alphas, select_layers, Features, Kind, Who};
use output::{report_json, table};
#[path = "common/cli.rs"]
mod cli;

use clap::{Parser, ValueEnum};
use cli::{check_outputs, usage, CliError, Named, Result};
use llfc::io::{read_checkpoint, Checkpoint, OutputSet};
use llfc::metrics::{
    cosine_distances, llfc_layer, weak_additivity, Commutativity, CosineVariant, LlfcLayer,
    SampleStats, WeakAdditivity,
};
use ndarray::ArrayD;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum VariantArg {
    /// `1 − cos` (the LLFC paper's definition).
    Signed,
    /// `1 − |cos|` (what the paper's official code computes).
    Absolute,
}

/// LLFC metrics (E[1 − cos_α], baseline, scale c, weak additivity, commutativity) of per-layer
/// features exported from any framework. See the source's header (or the README) for the
/// `.npz` layout: keys `A/{layer}`, `B/{layer}`, `alpha={α}/{layer}`, optional `pre/…` and
/// `in/…`.
#[derive(Parser, Debug)]
#[command(name = "llfc_report", version)]
struct Args {
    /// Features `.npz` (keys `A/{layer}`, `B/{layer}`, `alpha={α}/{layer}`, optional `pre/…`,
    /// `in/…`).
    features: PathBuf,
    /// Comma-separated α values to report (default: every α in the file, increasing).
    #[arg(long, value_delimiter = ',')]
    alphas: Option<Vec<String>>,
    /// Comma-separated layers to report (default: every layer, in file order).
    #[arg(long, value_delimiter = ',')]
    layers: Option<Vec<String>>,
    /// Cosine distance.
    #[arg(long, value_enum, default_value = "signed")]
    variant: VariantArg,
    /// Where to write the report as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Checkpoint of A (.safetensors or .npz), for the commutativity residuals.
    #[arg(long)]
    a: Option<PathBuf>,
    /// Checkpoint of B (.safetensors or .npz), for the commutativity residuals.
    #[arg(long)]
    b: Option<PathBuf>,
    /// `LAYER=PARAM`: the weight of LAYER in the checkpoints (default `{LAYER}.weight`).
    #[arg(long = "weight", value_name = "LAYER=PARAM")]
    weights: Vec<String>,
    /// `LAYER=stride:S,padding:P,dilation:D,groups:G`: the geometry of a conv layer (values `N`
    /// or `HxW`; defaults 1, 0, 1, 1).
    #[arg(long = "conv", value_name = "LAYER=GEOMETRY")]
    conv: Vec<String>,
}

fn main() -> ExitCode {
    match cli::parse_args::<Args>("llfc_report") {
        Ok(args) => cli::exit("llfc_report", run(&args)),
        Err(code) => code,
    }
}

/// Prefix a library error with where it happened.
fn context<T>(r: llfc::Result<T>, at: impl FnOnce() -> String) -> Result<T> {
    r.map_err(|e| CliError::Usage(format!("{}: {e}", at())))
}

/// LLFC of one kind of features at one layer: the baseline and one row per α.
struct KindReport {
    baseline: SampleStats,
    rows: Vec<LlfcLayer>,
}

/// Everything reported for one layer.
struct LayerReport {
    name: String,
    shape: Vec<usize>,
    post: KindReport,
    pre: Option<KindReport>,
    weak: Option<Vec<WeakAdditivity>>,
    commutativity: Option<(String, Commutativity)>,
    attribution: attribution::Extra,
}

fn llfc_kind(
    f: &Features,
    kind: Kind,
    layer: &str,
    alphas: &[usize],
    variant: CosineVariant,
    path: &Path,
) -> Result<KindReport> {
    let fa = f.require(kind, Who::A, layer, path)?;
    let fb = f.require(kind, Who::B, layer, path)?;
    let (key_a, key_b) = (f.key(kind, Who::A, layer), f.key(kind, Who::B, layer));
    let at = || format!("arrays `{key_a}`, `{key_b}`");
    let baseline = context(cosine_distances(fa, fb, variant), at)?;
    let mut rows = Vec::with_capacity(alphas.len());
    for &i in alphas {
        let f_alpha = f.require(kind, Who::Alpha(i), layer, path)?;
        let alpha = f.alphas[i].0;
        rows.push(context(
            llfc_layer(f_alpha, fa, fb, alpha, variant),
            || {
                let key = f.key(kind, Who::Alpha(i), layer);
                format!("arrays `{key}`, `{key_a}`, `{key_b}` (α = {alpha})")
            },
        )?);
    }
    Ok(KindReport { baseline, rows })
}

/// Parse the `--weight LAYER=PARAM` flags.
fn weight_names(flags: &[String], layers: &[String]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for flag in flags {
        let Some((layer, param)) = flag
            .split_once('=')
            .filter(|(l, p)| !l.is_empty() && !p.is_empty())
        else {
            return usage(format!("--weight `{flag}`: expected LAYER=PARAM"));
        };
        if !layers.iter().any(|l| l == layer) {
            return usage(format!(
                "--weight `{flag}`: `{layer}` is not a reported layer ({})",
                layers.join(", ")
            ));
        }
        if out.insert(layer.to_string(), param.to_string()).is_some() {
            return usage(format!("--weight: layer `{layer}` is given twice"));
        }
    }
    Ok(out)
}

/// The parameter `param` of a checkpoint, or a clear error.
fn checkpoint_param<'a>(
    c: &'a Checkpoint,
    file: &Path,
    param: &str,
    layer: &str,
) -> Result<&'a ArrayD<f64>> {
    c.params.get(param).ok_or_else(|| {
        CliError::Usage(format!(
            "checkpoint `{}` has no float parameter `{param}` for layer `{layer}` (name it with --weight {layer}=PARAM)",
            file.display()
        ))
    })
}

fn run(args: &Args) -> Result<()> {
    let path = &args.features;
    let mut inputs: Vec<Named<'_>> = vec![("features", path)];
    for (flag, p) in [("--a", &args.a), ("--b", &args.b)] {
        if let Some(p) = p {
            inputs.push((flag, p));
        }
    }
    let outputs: Vec<Named<'_>> = args.json.iter().map(|j| ("--json", j.as_path())).collect();
    check_outputs(&inputs, &outputs)?;
    let variant = match args.variant {
        VariantArg::Signed => CosineVariant::Signed,
        VariantArg::Absolute => CosineVariant::Absolute,
    };
    let checkpoints = match (&args.a, &args.b) {
        (Some(a), Some(b)) => Some((a, b)),
        (None, None) => None,
        _ => return usage("--a and --b go together (the two checkpoints for commutativity)"),
    };
    if checkpoints.is_none() && !args.weights.is_empty() {
        return usage("--weight needs the checkpoints --a and --b");
    }
    let f = read_features(path)?;
    let alphas = select_alphas(&f, args.alphas.as_deref(), path)?;
    let layers = select_layers(&f, args.layers.as_deref(), path)?;
    let weights = weight_names(&args.weights, &layers)?;
    let conv = attribution::conv_geometries(&args.conv, &layers)?;
    if checkpoints.is_none() && !conv.is_empty() {
        return usage("--conv needs the checkpoints --a and --b");
    }
    let ckpts = match checkpoints {
        Some((a, b)) => Some((read_checkpoint(a)?, read_checkpoint(b)?)),
        None => None,
    };

    let mut reports = Vec::with_capacity(layers.len());
    for layer in &layers {
        let post = llfc_kind(&f, Kind::Post, layer, &alphas, variant, path)?;
        let has_pre_alpha =
            (0..f.alphas.len()).any(|i| f.get(Kind::Pre, Who::Alpha(i), layer).is_some());
        let pre = if has_pre_alpha {
            Some(llfc_kind(&f, Kind::Pre, layer, &alphas, variant, path)?)
        } else {
            None
        };
        let weak = match (
            f.get(Kind::Pre, Who::A, layer),
            f.get(Kind::Pre, Who::B, layer),
        ) {
            (Some(za), Some(zb)) => Some(
                alphas
                    .iter()
                    .map(|&i| {
                        context(weak_additivity(za, zb, f.alphas[i].0), || {
                            format!("arrays `pre/A/{layer}`, `pre/B/{layer}`")
                        })
                    })
                    .collect::<Result<Vec<_>>>()?,
            ),
            (None, None) => None,
            (Some(_), None) => return Err(f.require(Kind::Pre, Who::B, layer, path).unwrap_err()),
            (None, Some(_)) => return Err(f.require(Kind::Pre, Who::A, layer, path).unwrap_err()),
        };
        for who in [Who::A, Who::B] {
            if let Some(z) = f.get(Kind::Pre, who, layer)
                && !z.iter().any(|&v| v < 0.0)
            {
                eprintln!(
                        "llfc_report: warning: `{}` has no negative entry: these look like post-ReLU values, not pre-activations (a forward hook on the module before an in-place ReLU records its output after the ReLU unless it stores `output.clone()`); weak additivity of `{layer}` is then 0 by construction",
                        f.key(Kind::Pre, who, layer)
                    );
            }
        }
        let inputs = match (
            f.get(Kind::In, Who::A, layer),
            f.get(Kind::In, Who::B, layer),
        ) {
            (Some(ha), Some(hb)) => Some((ha, hb)),
            (None, None) => None,
            (Some(_), None) => return Err(f.require(Kind::In, Who::B, layer, path).unwrap_err()),
            (None, Some(_)) => return Err(f.require(Kind::In, Who::A, layer, path).unwrap_err()),
        };
        let mut extra = attribution::Extra::default();
        let commutativity = match (&ckpts, inputs) {
            (Some((ca, cb)), Some((ha, hb))) => {
                let param = weights
                    .get(layer)
                    .cloned()
                    .unwrap_or_else(|| format!("{layer}.weight"));
                let (pa, pb) = checkpoints.expect("checkpoints were read");
                let w = attribution::LayerWeights::read([(ca, pa), (cb, pb)], &param, layer)?;
                let geometry = conv.get(layer);
                let c = attribution::layer_commutativity(&w, [ha, hb], geometry, layer)?;
                extra =
                    attribution::layer_splits(&f, layer, &alphas, &w, [ha, hb], geometry, path)?;
                Some((param, c))
            }
            (None, _) => None,
            (Some(_), None) => {
                if conv.contains_key(layer) {
                    return usage(format!(
                        "--conv {layer}=…: features file `{}` has no `in/A/{layer}`, `in/B/{layer}` (the inputs of the layer)",
                        path.display()
                    ));
                }
                if weights.contains_key(layer) {
                    return usage(format!(
                        "--weight {layer}=…: features file `{}` has no `in/A/{layer}`, `in/B/{layer}` (the inputs of the layer)",
                        path.display()
                    ));
                }
                None
            }
        };
        extra.activation = attribution::activation_splits(&f, layer, &alphas)?;
        reports.push(LayerReport {
            name: layer.clone(),
            shape: f.require(Kind::Post, Who::A, layer, path)?.shape().to_vec(),
            post,
            pre,
            weak,
            commutativity,
            attribution: extra,
        });
    }
    if ckpts.is_some() && reports.iter().all(|r| r.commutativity.is_none()) {
        return usage(format!(
            "--a/--b given, but features file `{}` has no `in/A/{{layer}}`, `in/B/{{layer}}` arrays (the layers' inputs) for the reported layers",
            path.display()
        ));
    }

    let alpha_values: Vec<f64> = alphas.iter().map(|&i| f.alphas[i].0).collect();
    if let Some(json_path) = &args.json {
        let doc = report_json(path, variant, &alpha_values, &reports);
        let text = serde_json::to_string_pretty(&doc)
            .map_err(|e| CliError::Usage(format!("cannot encode the JSON report: {e}")))?;
        let mut staged = OutputSet::new();
        staged.stage_bytes(json_path, (text + "\n").as_bytes())?;
        staged.commit()?;
    }
    print!("{}", table(path, variant, &alpha_values, &reports));
    if let Some(json_path) = &args.json {
        println!("JSON report: {}", json_path.display());
    }
    Ok(())
}
