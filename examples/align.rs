//! `align`: weight or activation matching of two checkpoints from the command line.
//!
//! ```sh
//! cargo run --release --example align -- \
//!     --a model_a.safetensors --b model_b.safetensors --spec mlp \
//!     --output model_b_aligned.safetensors
//! ```
//!
//! Reads two checkpoints (`.safetensors` or `.npz`, PyTorch `state_dict` names), matches B onto
//! A with the chosen method and spec, and writes:
//! - the permuted B, in the format (by extension) and precision of B's file;
//! - the permutations as JSON (`{"P_0": [p[0], p[1], …], …}`: A's unit i ↔ B's unit p[i]);
//! - a summary on stdout (objective before/after, sweeps, time); progress on stderr.
//!
//! Specs: `mlp` (`layers.{i}.weight`, `layers.{i}.bias`), `vgg` (`conv{i}.weight`, optional
//! `conv{i}.bias`, `bn{i}.*`, `fc{j}.*`), `resnet20` (the CIFAR ResNet naming of
//! `PermutationSpec::resnet_cifar`: `conv1`, `bn1`, `layer{s}.{b}.{conv1,bn1,conv2,bn2}`,
//! `layer{s}.0.shortcut.{0,1}`, `linear`; blocks per stage and shortcut type are read off the
//! checkpoint), `resnet-option-a` (the same names without shortcut parameters, residual streams
//! tied through the zero padding; BatchNorm with or without affine parameters and running
//! statistics), `gpt2`, `bert`, `llama` (Hugging Face names, `--heads` required; see the
//! README's table), or a JSON spec file (`{"param": ["perm" or null, …]}` or the extended form
//! with heads, segments and layouts). Parameters the spec does
//! not mention (e.g. `num_batches_tracked`) are copied through unchanged and listed.
//!
//! Activation matching reads two features `.npz` files (`--features-a`, `--features-b`): one
//! array per permutation, keyed by the permutation's name, `[samples, units]` or
//! `[samples, channels, h, w]`, rows of A and B computed on the same inputs.
//!
//! Errors print one line on stderr and exit with status 1; nothing is written then (outputs
//! are written to temporary files and renamed into place only when everything succeeded).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

#[path = "common/cli.rs"]
mod cli;

use clap::{Parser, ValueEnum};
use cli::{check_writable_dir, temp_sibling, write_error, CliError};
use llfc::io::{read_checkpoint, read_npz_arrays, write_checkpoint, Checkpoint, Dtype};
use llfc::matching::activation::{
    activation_matching_from_features, ActivationMatchingOptions, ActivationStats, Statistic,
};
use llfc::matching::structured::activation_matching_structured;
use llfc::matching::weight::{
    weight_matching_with_progress, MatchingEvent, WeightMatching, WeightMatchingOptions,
};
use llfc::spec::{BatchNormParams, Shortcut, TransformerConfig, VggConfig};
use llfc::{apply_permutations, Error, Float, Params, Permutation, PermutationSpec};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Method {
    /// Git Re-Basin weight matching (no data needed).
    Weight,
    /// Activation matching from per-layer features of A and B.
    Activation,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum StatisticArg {
    /// Pearson correlation (zero-variance units count as 0).
    Correlation,
    /// Covariance.
    Covariance,
    /// Raw inner product E[a b^T].
    InnerProduct,
}

/// Align checkpoint B to checkpoint A by permuting B's hidden units (Git Re-Basin).
#[derive(Parser, Debug)]
#[command(name = "align", version)]
struct Args {
    /// Checkpoint of model A (.safetensors or .npz): the reference.
    #[arg(long)]
    a: PathBuf,
    /// Checkpoint of model B (.safetensors or .npz): the model to permute.
    #[arg(long)]
    b: PathBuf,
    /// Permutation spec: `mlp`, `vgg`, `resnet20`, `resnet-option-a`, `gpt2`, `bert`,
    /// `llama`, or the path of a JSON spec file.
    #[arg(long)]
    spec: String,
    /// Number of attention heads (required by the transformer specs `gpt2`, `bert`, `llama`:
    /// checkpoints do not store it).
    #[arg(long)]
    heads: Option<usize>,
    /// Matching method.
    #[arg(long, value_enum, default_value = "weight")]
    method: Method,
    /// Where to write the permuted B (format from the extension; default: B's format, next to B
    /// as `<stem>.aligned.<ext>`).
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Where to write the permutations as JSON (default: `<output stem>.perms.json`).
    #[arg(long)]
    perms: Option<PathBuf>,
    /// Seed of the permutation order in each weight-matching sweep.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Visit the permutations in name order in every sweep instead of a seeded random order.
    #[arg(long)]
    fixed_order: bool,
    /// Maximum number of weight-matching sweeps.
    #[arg(long, default_value_t = 100)]
    max_iter: usize,
    /// Features of A for activation matching (.npz, one array per permutation name).
    #[arg(long)]
    features_a: Option<PathBuf>,
    /// Features of B for activation matching (.npz, one array per permutation name).
    #[arg(long)]
    features_b: Option<PathBuf>,
    /// Statistic maximised by activation matching.
    #[arg(long, value_enum, default_value = "correlation")]
    statistic: StatisticArg,
    /// Print no progress on stderr.
    #[arg(long, short)]
    quiet: bool,
}

fn main() -> ExitCode {
    cli::exit("align", run(&Args::parse()))
}

fn run(args: &Args) -> Result<(), CliError> {
    let a = read_checkpoint(&args.a)?;
    let b = read_checkpoint(&args.b)?;
    let spec = match structured_builtin(&args.spec, &a, args.heads)? {
        Some(spec) => spec,
        None => load_spec(&args.spec, &a)?,
    };
    let validation = spec.validate(&a.params)?;
    spec.validate(&b.params)?;
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| default_output(&args.b));
    let perms_path = args
        .perms
        .clone()
        .unwrap_or_else(|| output.with_extension("perms.json"));
    for path in [&output, &perms_path] {
        check_writable_dir(path)?;
    }
    let start = Instant::now();
    let (perms, before, after, sweeps) = match args.method {
        Method::Weight => {
            let options = WeightMatchingOptions {
                max_iter: args.max_iter,
                seed: args.seed,
                order: args.fixed_order.then(|| spec.perm_names()),
                ..Default::default()
            };
            // f32 checkpoints (or narrower) are matched in f32, exactly representable there:
            // products run at f32 speed. Anything stored in f64 is matched in f64.
            let m = if single_precision(&a) && single_precision(&b) {
                let (a32, b32) = (a.params.cast::<f32>(), b.params.cast::<f32>());
                match_weights(&spec, &a32, &b32, &options, args.quiet)?
            } else {
                match_weights(&spec, &a.params, &b.params, &options, args.quiet)?
            };
            (m.perms, m.initial_objective, m.objective, Some(m.sweeps))
        }
        Method::Activation => {
            let (Some(fa), Some(fb)) = (&args.features_a, &args.features_b) else {
                return Err(CliError::Usage(
                    "--method activation needs --features-a and --features-b".into(),
                ));
            };
            let (fa, fb) = (read_npz_arrays::<f64>(fa)?, read_npz_arrays::<f64>(fb)?);
            let wanted = spec.perm_names();
            let pick = |f: BTreeMap<String, ndarray::ArrayD<f64>>, path: &Path| {
                wanted
                    .iter()
                    .map(|k| {
                        f.get(k).cloned().map(|v| (k.clone(), v)).ok_or_else(|| {
                            CliError::Usage(format!(
                                "features file `{}` has no array for permutation `{k}` (keys must be the spec's permutation names: {wanted:?})",
                                path.display()
                            ))
                        })
                    })
                    .collect::<Result<BTreeMap<_, _>, CliError>>()
            };
            let (fa, fb) = (
                pick(fa, args.features_a.as_deref().unwrap_or(Path::new("")))?,
                pick(fb, args.features_b.as_deref().unwrap_or(Path::new("")))?,
            );
            let statistic = match args.statistic {
                StatisticArg::Correlation => Statistic::Correlation,
                StatisticArg::Covariance => Statistic::Covariance,
                StatisticArg::InnerProduct => Statistic::InnerProduct,
            };
            let options = ActivationMatchingOptions {
                statistic,
                ..Default::default()
            };
            let perms = if spec.is_plain() {
                activation_matching_from_features(&fa, &fb, &options)?
            } else {
                // Heads and embeddings: the exact structured steps on each layer's statistics.
                let mut stats = BTreeMap::new();
                for (k, x) in &fa {
                    let units = |f: &ndarray::ArrayD<f64>| {
                        f.shape()
                            .get(if f.ndim() == 3 { 2 } else { 1 })
                            .copied()
                            .unwrap_or(0)
                    };
                    let mut st = ActivationStats::new(units(x), units(&fb[k]));
                    st.update_dyn(x.view(), fb[k].view())?;
                    stats.insert(k.clone(), st);
                }
                activation_matching_structured(&spec, &stats, &options)?
            };
            let sizes = validation.perm_sizes.clone();
            for (k, p) in &perms {
                if sizes.get(k) != Some(&p.len()) {
                    return Err(CliError::Usage(format!(
                        "features of `{k}` have {} units, but the spec's axes have {}",
                        p.len(),
                        sizes.get(k).copied().unwrap_or(0)
                    )));
                }
            }
            let before = a.params.inner(&b.params)?;
            let after = a
                .params
                .inner(&apply_permutations(&spec, &perms, &b.params)?)?;
            (perms, before, after, None)
        }
    };
    let seconds = start.elapsed().as_secs_f64();
    let permuted = Checkpoint {
        params: apply_permutations(&spec, &perms, &b.params)?,
        ..b.clone()
    };
    // Write both outputs to temporaries first, then rename: never a half-written result.
    let json = perms_json(&perms);
    let perms_tmp = temp_sibling(&perms_path);
    std::fs::write(&perms_tmp, json).map_err(|e| write_error(&perms_path, &e))?;
    if let Err(e) = write_checkpoint(&output, &permuted) {
        let _ = std::fs::remove_file(&perms_tmp);
        return Err(e.into());
    }
    std::fs::rename(&perms_tmp, &perms_path).map_err(|e| write_error(&perms_path, &e))?;

    println!("method: {:?}", args.method);
    println!("spec: {} ({} permutations)", args.spec, perms.len());
    println!("objective <theta_A, pi(theta_B)>: before {before:.10e}, after {after:.10e}");
    if let Some(s) = sweeps {
        println!("sweeps: {s}");
    }
    println!("time: {seconds:.3} s");
    println!("permuted B: {}", output.display());
    println!("permutations: {}", perms_path.display());
    let mut copied: Vec<&str> = validation.unmentioned.iter().map(String::as_str).collect();
    copied.extend(b.others.iter().map(|(k, _)| k.as_str()));
    if !copied.is_empty() {
        println!("copied unchanged (not in the spec): {}", copied.join(", "));
    }
    Ok(())
}

/// Whether every float tensor of the checkpoint is stored in at most 32 bits.
fn single_precision(c: &Checkpoint) -> bool {
    c.params.names().all(|k| c.dtype(k) != Dtype::F64)
}

/// Weight matching with progress on stderr.
fn match_weights<F: Float>(
    spec: &PermutationSpec,
    a: &Params<F>,
    b: &Params<F>,
    options: &WeightMatchingOptions,
    quiet: bool,
) -> Result<WeightMatching, Error> {
    weight_matching_with_progress(spec, a, b, options, |e| {
        if let (
            false,
            MatchingEvent::Sweep {
                sweep,
                objective,
                progress,
            },
        ) = (quiet, e)
        {
            let note = if *progress {
                ""
            } else {
                " (no progress: converged)"
            };
            eprintln!("sweep {:>3}: objective {objective:.10e}{note}", sweep + 1);
        }
    })
}

fn default_output(b: &Path) -> PathBuf {
    let stem = b.file_stem().and_then(|s| s.to_str()).unwrap_or("model");
    let ext = b
        .extension()
        .and_then(|s| s.to_str())
        .unwrap_or("safetensors");
    b.with_file_name(format!("{stem}.aligned.{ext}"))
}

fn perms_json(perms: &BTreeMap<String, Permutation>) -> String {
    let body: Vec<String> = perms
        .iter()
        .map(|(k, p)| {
            let v: Vec<String> = p.as_slice().iter().map(usize::to_string).collect();
            format!("  {k:?}: [{}]", v.join(", "))
        })
        .collect();
    format!("{{\n{}\n}}\n", body.join(",\n"))
}

/// A builtin spec shaped after the checkpoint, or a JSON spec file.
fn load_spec(name: &str, a: &Checkpoint) -> Result<PermutationSpec, CliError> {
    let has = |k: &str| a.params.contains(k);
    let count = |f: &dyn Fn(usize) -> String| (0..).take_while(|&i| has(&f(i))).count();
    match name {
        "mlp" => {
            let layers = count(&|i| format!("layers.{i}.weight"));
            if layers < 2 {
                return Err(CliError::Usage("spec `mlp` expects parameters `layers.0.weight`, `layers.1.weight`, … (at least two layers)".into()));
            }
            Ok(PermutationSpec::mlp(layers))
        }
        "vgg" => {
            let num_conv = count(&|i| format!("conv{i}.weight"));
            let num_linear = count(&|j| format!("fc{j}.weight"));
            if num_conv == 0 || num_linear == 0 {
                return Err(CliError::Usage(
                    "spec `vgg` expects parameters `conv0.weight`, … and `fc0.weight`, …".into(),
                ));
            }
            Ok(PermutationSpec::vgg(&VggConfig {
                num_conv,
                num_linear,
                batch_norm: has("bn0.weight"),
                conv_bias: has("conv0.bias"),
            }))
        }
        "resnet20" => {
            let blocks: Vec<usize> = (1..=3)
                .map(|s| count(&|b| format!("layer{s}.{b}.conv1.weight")))
                .collect();
            if blocks.contains(&0) {
                return Err(CliError::Usage(
                    "spec `resnet20` expects parameters `layer{1,2,3}.{b}.conv1.weight`, …".into(),
                ));
            }
            let shortcut = if has("layer2.0.shortcut.0.weight") {
                Shortcut::Conv1x1
            } else {
                Shortcut::Padding
            };
            Ok(PermutationSpec::resnet_cifar(&blocks, shortcut))
        }
        path => {
            let text = std::fs::read_to_string(path).map_err(|e| CliError::Usage(format!("unknown spec `{path}`: not a builtin (mlp, vgg, resnet20, resnet-option-a, gpt2, bert, llama) and not a readable JSON file ({e})")))?;
            Ok(PermutationSpec::from_json(&text)?)
        }
    }
}

/// The builtins with structured permutations (option-A ResNets, transformers), shaped after the
/// checkpoint; `None` for any other name.
fn structured_builtin(
    name: &str,
    a: &Checkpoint,
    heads: Option<usize>,
) -> Result<Option<PermutationSpec>, CliError> {
    let has = |k: &str| a.params.contains(k);
    let count = |f: &dyn Fn(usize) -> String| (0..).take_while(|&i| has(&f(i))).count();
    let width = |k: &str, axis: usize| a.params.get(k).and_then(|t| t.shape().get(axis).copied());
    let transformer = |layers: usize,
                       d_model: Option<usize>|
     -> Result<TransformerConfig, CliError> {
        let heads = heads.ok_or_else(|| {
            CliError::Usage(format!(
                "spec `{name}` needs --heads (the number of attention heads)"
            ))
        })?;
        match d_model {
            Some(d_model) if layers > 0 => Ok(TransformerConfig {
                layers,
                heads,
                d_model,
                lm_head: has("lm_head.weight"),
            }),
            _ => Err(CliError::Usage(format!(
                "spec `{name}` does not fit the checkpoint (see the README's table of builtin names)"
            ))),
        }
    };
    Ok(Some(match name {
        "resnet-option-a" => {
            let blocks: Vec<usize> = (1..=3)
                .map(|s| count(&|b| format!("layer{s}.{b}.conv1.weight")))
                .collect();
            let Some(w) = width("conv1.weight", 0).filter(|_| !blocks.contains(&0)) else {
                return Err(CliError::Usage(
                    "spec `resnet-option-a` expects `conv1.weight` and `layer{1,2,3}.{b}.conv1.weight`, …".into(),
                ));
            };
            let bn = if has("bn1.weight") {
                BatchNormParams::Full
            } else if has("bn1.running_mean") {
                BatchNormParams::RunningStatsOnly
            } else {
                BatchNormParams::None
            };
            PermutationSpec::resnet_cifar_option_a(&blocks, w, bn)
        }
        "gpt2" => {
            let layers = count(&|i| format!("transformer.h.{i}.attn.c_attn.weight"));
            PermutationSpec::gpt2(&transformer(layers, width("transformer.wte.weight", 1))?)
        }
        "llama" => {
            let layers = count(&|i| format!("model.layers.{i}.self_attn.q_proj.weight"));
            PermutationSpec::llama(&transformer(layers, width("model.embed_tokens.weight", 1))?)
        }
        "bert" => {
            let layers = count(&|i| format!("bert.encoder.layer.{i}.attention.self.query.weight"));
            let d = width("bert.embeddings.word_embeddings.weight", 1);
            let mut spec = PermutationSpec::bert_encoder(&transformer(layers, d)?, "bert");
            if has("bert.pooler.dense.weight") {
                // The pooler reads the residual stream; its output stays in place.
                spec.insert("bert.pooler.dense.weight", &[None, Some("P_res")]);
                spec.insert("bert.pooler.dense.bias", &[None::<&str>]);
            }
            spec
        }
        _ => return Ok(None),
    }))
}
