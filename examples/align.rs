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
//! README's table), a builtin named after the model definition that saved the checkpoint (names
//! exactly as those checkpoints store them, any widths: `torchvision-vgg11` … `torchvision-vgg19`,
//! `torchvision-vgg11-bn` … `torchvision-vgg19-bn`, `torchvision-resnet18/34/50`, the LLFC
//! paper's `llfc-vgg11` … `llfc-vgg19-bn` and `cifar-resnet18/34/50`; see `llfc::spec::Builtin`),
//! or a JSON spec file (`{"param": ["perm" or null, …]}`, or the extended form with heads,
//! segments and layouts). Parameters the spec does not mention (e.g. `num_batches_tracked`) are
//! copied through unchanged and listed.
//!
//! Function check: whenever `align` can run the model, it checks before writing anything that
//! the spec is a symmetry of the model (random permutations through the spec leave the outputs
//! on random inputs unchanged, `llfc::spec::check_invariance`) and that the aligned B computes
//! what B computes, both within 1e-8 (absolute, in f64); otherwise it refuses to write, names
//! the permutations that break the model and exits with status 1. It runs by default for MLPs
//! (`layers.{i}.weight`/`.bias`, whatever the spec: builtin or JSON) through the reference
//! `llfc::mlp::forward`; `--check` extends it to the CNNs of the builtins' families (torchvision
//! and LLFC-code VGGs and ResNets, with a builtin or a JSON spec) through the reference forwards
//! of `examples/common/cnn.rs` (2 random 32×32 images).
//!
//! Activation matching reads two features `.npz` files (`--features-a`, `--features-b`): one
//! array per permutation, keyed by the permutation's name, `[samples, units]` or
//! `[samples, channels, h, w]`, rows of A and B computed on the same inputs.
//!
//! With `--json PATH` a summary is also written as JSON (method, spec, objectives, sweeps,
//! `converged`, time, output paths). Weight matching that stops at `--max-iter` without
//! converging keeps the best iterate it saw, says so on stderr (`warning: … did not converge`)
//! and records `"converged": false`.
//!
//! Errors print one line on stderr and exit with status 1; nothing is written then: every
//! output is written to a temporary sibling first and all are renamed into place only when
//! everything succeeded. Before any work, an output that is the same file as an input or as
//! another output (same path after resolving links, or same device and inode) is refused, and
//! inputs must be regular files. `--help` prints the options and exits with status 0.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

#[path = "align/check.rs"]
mod check;
#[path = "common/cli.rs"]
mod cli;
#[path = "common/cnn.rs"]
mod cnn;
#[path = "align/spec.rs"]
mod spec;
#[path = "align/stream.rs"]
mod stream;

use check::{check_function, reference_forward};
use spec::{load_spec, structured_builtin};
use stream::streamed_activation_matching;

use clap::{Parser, ValueEnum};
use cli::{check_outputs, CliError, Named};
use llfc::io::{read_checkpoint, write_checkpoint_as, Checkpoint, Dtype, FileFormat, OutputSet};
use llfc::matching::activation::{ActivationMatchingOptions, Statistic};
use llfc::matching::weight::{
    weight_matching_with_progress, MatchingEvent, WeightMatching, WeightMatchingOptions,
};
use llfc::spec::Builtin;
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
    /// Permutation spec: `mlp`, `vgg`, `resnet20`, `resnet-option-a`, `gpt2`, `bert`, `llama`;
    /// a builtin: `torchvision-vgg{11,13,16,19}`, `torchvision-vgg{11,13,16,19}-bn`,
    /// `torchvision-resnet{18,34,50}`, `llfc-vgg{11,13,16,19}`, `llfc-vgg{11,13,16,19}-bn`,
    /// `cifar-resnet{18,34,50}`; or the path of a JSON spec file.
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
    /// Where to write a JSON summary (objectives, sweeps, `converged`, time, outputs).
    #[arg(long)]
    json: Option<PathBuf>,
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
    /// Also check the function of CNNs of the builtins' families, with a builtin or a JSON spec
    /// (reference forwards on random images); MLPs are always checked.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    match cli::parse_args::<Args>("align") {
        Ok(args) => cli::exit("align", run(&args)),
        Err(code) => code,
    }
}

/// Whether `--spec` names a builtin rather than a file.
fn is_builtin(spec: &str) -> bool {
    matches!(
        spec,
        "mlp" | "vgg" | "resnet20" | "resnet-option-a" | "gpt2" | "bert" | "llama"
    ) || spec.parse::<Builtin>().is_ok()
}

fn run(args: &Args) -> Result<(), CliError> {
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| default_output(&args.b));
    let perms_path = args
        .perms
        .clone()
        .unwrap_or_else(|| output.with_extension("perms.json"));
    let format = FileFormat::from_path(&output)?;
    // Every output apart from every input, before anything is read or computed.
    let spec_path = Path::new(&args.spec);
    let mut inputs: Vec<Named<'_>> = vec![("--a", &args.a), ("--b", &args.b)];
    if !is_builtin(&args.spec) {
        inputs.push(("--spec", spec_path));
    }
    for (flag, path) in [
        ("--features-a", &args.features_a),
        ("--features-b", &args.features_b),
    ] {
        if let Some(p) = path {
            inputs.push((flag, p));
        }
    }
    let mut outputs: Vec<Named<'_>> = vec![("--output", &output), ("--perms", &perms_path)];
    if let Some(j) = &args.json {
        outputs.push(("--json", j));
    }
    check_outputs(&inputs, &outputs)?;

    let a = read_checkpoint(&args.a)?;
    let b = read_checkpoint(&args.b)?;
    let spec = match structured_builtin(&args.spec, &a, args.heads)? {
        Some(spec) => spec,
        None => load_spec(&args.spec, &a)?,
    };
    let validation = spec.validate(&a.params)?;
    spec.validate(&b.params)?;
    let start = Instant::now();
    // B permuted by the result, computed once (activation matching evaluates its objective on it).
    let mut aligned: Option<Params<f64>> = None;
    let (perms, before, after, sweeps, converged) = match args.method {
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
            if !m.converged {
                eprintln!(
                    "align: warning: weight matching did not converge in {} sweeps (--max-iter); \
                     the best permutations seen are used (objective {:.10e})",
                    m.sweeps, m.objective
                );
            }
            (
                m.perms,
                m.initial_objective,
                m.objective,
                Some(m.sweeps),
                m.converged,
            )
        }
        Method::Activation => {
            let (Some(fa), Some(fb)) = (&args.features_a, &args.features_b) else {
                return Err(CliError::Usage(
                    "--method activation needs --features-a and --features-b".into(),
                ));
            };
            let statistic = match args.statistic {
                StatisticArg::Correlation => Statistic::Correlation,
                StatisticArg::Covariance => Statistic::Covariance,
                StatisticArg::InnerProduct => Statistic::InnerProduct,
            };
            let options = ActivationMatchingOptions {
                statistic,
                ..Default::default()
            };
            let perms = streamed_activation_matching(&spec, fa, fb, &options, args.quiet)?;
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
            let permuted = apply_permutations(&spec, &perms, &b.params)?;
            let after = a.params.inner(&permuted)?;
            aligned = Some(permuted);
            (perms, before, after, None, true)
        }
    };
    let seconds = start.elapsed().as_secs_f64();
    // A is not needed any more; B's tensors are permuted once, its dtypes and others copied.
    drop(a);
    let permuted = Checkpoint {
        params: match aligned {
            Some(p) => p,
            None => apply_permutations(&spec, &perms, &b.params)?,
        },
        dtypes: b.dtypes.clone(),
        others: b.others.clone(),
    };
    // Refuse to write a B that computes another function.
    let check = match reference_forward(&args.spec, &b.params, args.check)? {
        Some(forward) => check_function(&forward, &spec, &b.params, &permuted.params, args.seed)?,
        None => "skipped (no reference forward for this model: MLPs are checked by default, the CNN builtins with --check)".into(),
    };
    // Every output to a temporary first, then all renamed: never a half-written result.
    let mut staged = OutputSet::new();
    // Streamed to the stage's temporary file, a tensor at a time (no copy of the whole output).
    staged.stage(&output, |tmp| write_checkpoint_as(tmp, &permuted, format))?;
    staged.stage_bytes(&perms_path, perms_json(&perms).as_bytes())?;
    if let Some(json_path) = &args.json {
        let summary = serde_json::json!({
            "method": format!("{:?}", args.method).to_lowercase(),
            "spec": args.spec,
            "permutations": perms.len(),
            "objective_before": before,
            "objective_after": after,
            "sweeps": sweeps,
            "converged": converged,
            "seconds": seconds,
            "output": output.display().to_string(),
            "perms": perms_path.display().to_string(),
        });
        staged.stage_bytes(json_path, format!("{summary:#}\n").as_bytes())?;
    }
    staged.commit()?;

    println!("method: {:?}", args.method);
    println!("spec: {} ({} permutations)", args.spec, perms.len());
    println!("objective <theta_A, pi(theta_B)>: before {before:.10e}, after {after:.10e}");
    if let Some(s) = sweeps {
        let note = if converged { "" } else { " (did not converge)" };
        println!("sweeps: {s}{note}");
    }
    println!("time: {seconds:.3} s");
    println!("function check: {check}");
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
