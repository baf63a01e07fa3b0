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

#[path = "common/cli.rs"]
mod cli;
#[path = "common/cnn.rs"]
mod cnn;

use clap::{Parser, ValueEnum};
use cli::{check_outputs, CliError, Named};
use llfc::io::{
    read_checkpoint, read_regular_file, write_checkpoint_as, Checkpoint, Dtype, FileFormat,
    NpzReader, OutputSet,
};
use llfc::matching::activation::{
    activation_matching, ActivationMatchingOptions, ActivationStats, Statistic,
};
use llfc::matching::structured::activation_matching_structured;
use llfc::matching::weight::{
    weight_matching_with_progress, MatchingEvent, WeightMatching, WeightMatchingOptions,
};
use llfc::spec::{
    BatchNormParams, Builtin, ResNetLayout, ResNetNaming, Shortcut, TransformerConfig, VggConfig,
    VggLayout,
};
use llfc::{apply_permutations, mlp, Error, Float, Params, Permutation, PermutationSpec};
use ndarray::{Array2, Array4, ArrayD, Ix2, Ix4};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

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

/// Samples per block when the features files are streamed: memory is a few blocks of both
/// models whatever the number of samples.
const FEATURE_BLOCK_ROWS: usize = 2048;

/// One message of the features reader: a block of the same samples of A and B for the current
/// layer, or the end of layer `layer`.
enum FeatureBlock {
    Rows(Box<(ndarray::ArrayD<f64>, ndarray::ArrayD<f64>)>),
    /// The end of a layer, with the seconds the reader spent reading and decoding it.
    End(usize, f64),
}

/// The units of a `[N, d]`, `[N, T, d]` or `[N, c, h, w]` features array (see
/// `ActivationStats::update_dyn`).
fn units(shape: &[usize]) -> usize {
    match shape.len() {
        3 => shape[2],
        _ => shape.get(1).copied().unwrap_or(0),
    }
}

/// Activation matching from two features `.npz` files, streamed: a reader thread reads the
/// arrays of both files side by side, a block of samples at a time, while this thread adds the
/// blocks to each layer's statistics (the products, in parallel); as soon as a layer's
/// statistics are complete its LAP starts on a thread of its own, concurrently with the next
/// layers' products. Memory: the statistics and a few blocks, whatever the number of samples.
/// The blocks are fixed (`FEATURE_BLOCK_ROWS`) and each layer's LAP sees the same statistics
/// whatever the timing: results do not depend on the thread count. Unless `quiet`, where the
/// time goes is reported on stderr (reading per layer, statistics, each LAP).
fn streamed_activation_matching(
    spec: &PermutationSpec,
    path_a: &Path,
    path_b: &Path,
    options: &ActivationMatchingOptions,
    quiet: bool,
) -> Result<BTreeMap<String, Permutation>, CliError> {
    let wanted = spec.perm_names();
    let files = [NpzReader::open(path_a)?, NpzReader::open(path_b)?];
    for (npz, path) in files.iter().zip([path_a, path_b]) {
        let names = npz.names();
        if let Some(k) = wanted.iter().find(|k| !names.contains(k)) {
            return Err(CliError::Usage(format!(
                "features file `{}` has no array for permutation `{k}` (keys must be the spec's permutation names: {wanted:?})",
                path.display()
            )));
        }
    }
    let [mut npz_a, mut npz_b] = files;
    let start = Instant::now();
    let plain = spec.is_plain();
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<FeatureBlock, Error>>(1);
        let wanted_ref = &wanted;
        scope.spawn(move || {
            let mut read = || -> Result<(), Error> {
                for (layer, name) in wanted_ref.iter().enumerate() {
                    let mut reading = 0.0;
                    let t = Instant::now();
                    let mut a = npz_a.blocks::<f64>(name, FEATURE_BLOCK_ROWS)?;
                    let mut b = npz_b.blocks::<f64>(name, FEATURE_BLOCK_ROWS)?;
                    if a.shape().first() != b.shape().first() {
                        return Err(Error::ShapeMismatch {
                            what: format!("samples of the features of `{name}` (A versus B)"),
                            expected: a.shape().to_vec(),
                            found: b.shape().to_vec(),
                        });
                    }
                    reading += t.elapsed().as_secs_f64();
                    loop {
                        let t = Instant::now();
                        let blocks = (a.next_block()?, b.next_block()?);
                        reading += t.elapsed().as_secs_f64();
                        match blocks {
                            (Some(x), Some(y)) => {
                                if tx.send(Ok(FeatureBlock::Rows(Box::new((x, y))))).is_err() {
                                    return Ok(()); // the consumer stopped on an error
                                }
                            }
                            _ => break,
                        }
                    }
                    if tx.send(Ok(FeatureBlock::End(layer, reading))).is_err() {
                        return Ok(());
                    }
                }
                Ok(())
            };
            if let Err(e) = read() {
                let _ = tx.send(Err(e));
            }
        });
        let mut current: Option<ActivationStats> = None;
        let mut stats: BTreeMap<String, ActivationStats> = BTreeMap::new();
        let mut laps = Vec::new();
        let mut products = 0.0;
        for message in rx {
            match message? {
                FeatureBlock::Rows(pair) => {
                    let (x, y) = *pair;
                    let st = current.get_or_insert_with(|| {
                        ActivationStats::new(units(x.shape()), units(y.shape()))
                    });
                    let t = Instant::now();
                    st.update_dyn(x.view(), y.view())?;
                    products += t.elapsed().as_secs_f64();
                }
                FeatureBlock::End(layer, reading) => {
                    if !quiet {
                        eprintln!(
                            "{}: read in {reading:.2} s (reader thread), statistics {products:.2} s, done at {:.2} s",
                            wanted[layer],
                            start.elapsed().as_secs_f64()
                        );
                    }
                    products = 0.0;
                    let name = wanted[layer].clone();
                    let st = current.take().ok_or_else(|| Error::EmptyInput {
                        what: format!("features of `{name}`"),
                    })?;
                    if plain {
                        // This layer's LAP runs while the next layers' products do.
                        let options = *options;
                        laps.push(scope.spawn(move || {
                            let t = Instant::now();
                            let perm = activation_matching(&BTreeMap::from([(name, st)]), &options);
                            if !quiet {
                                eprintln!(
                                    "LAP {layer}: {:.2} s, done at {:.2} s",
                                    t.elapsed().as_secs_f64(),
                                    start.elapsed().as_secs_f64()
                                );
                            }
                            perm
                        }));
                    } else {
                        stats.insert(name, st);
                    }
                }
            }
        }
        let mut perms = BTreeMap::new();
        for lap in laps {
            perms.extend(lap.join().expect("a LAP thread panicked")?);
        }
        if !plain {
            // Heads and embeddings: the exact structured steps on each layer's statistics.
            perms = activation_matching_structured(spec, &stats, options)?;
        }
        Ok(perms)
    })
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

/// Tolerance of the function check: absolute, on outputs computed in f64 (a permutation only
/// reorders the terms of sums, ~1e-16 relative).
const CHECK_TOL: f64 = 1e-8;

/// A reference forward pass `align` can run.
enum Forward {
    /// `llfc::mlp::forward`.
    Mlp,
    /// `cnn::vgg_forward`.
    Vgg(VggLayout),
    /// `cnn::resnet_forward`.
    ResNet(ResNetLayout),
}

impl Forward {
    /// Random inputs for the model: 64 rows for an MLP, two 32×32 images for a CNN.
    fn inputs(&self, params: &Params<f64>, rng: &mut ChaCha8Rng) -> Result<ArrayD<f64>, Error> {
        let mut draw =
            |shape: &[usize]| ArrayD::from_shape_fn(shape, |_| rng.random_range(-2.0..2.0));
        Ok(match self {
            Self::Mlp => draw(&[64, mlp::widths(params)?[0]]),
            Self::Vgg(l) => {
                let first = format!("features.{}.weight", l.convs[0]);
                draw(&[2, params.require(&first)?.shape()[1], 32, 32])
            }
            Self::ResNet(_) => draw(&[2, params.require("conv1.weight")?.shape()[1], 32, 32]),
        })
    }

    fn run(&self, params: &Params<f64>, x: &ArrayD<f64>) -> Result<Array2<f64>, Error> {
        let shape_error = |rank: usize| Error::ShapeMismatch {
            what: "check inputs".into(),
            expected: vec![0; rank],
            found: x.shape().to_vec(),
        };
        match self {
            Self::Mlp => {
                let x = x
                    .view()
                    .into_dimensionality::<Ix2>()
                    .map_err(|_| shape_error(2))?;
                mlp::forward(params, &x)
            }
            Self::Vgg(l) => {
                let x: Array4<f64> = x
                    .clone()
                    .into_dimensionality::<Ix4>()
                    .map_err(|_| shape_error(4))?;
                cnn::vgg_forward(params, l, &x)
            }
            Self::ResNet(l) => {
                let x: Array4<f64> = x
                    .clone()
                    .into_dimensionality::<Ix4>()
                    .map_err(|_| shape_error(4))?;
                cnn::resnet_forward(params, l, &x)
            }
        }
    }
}

/// The reference forward for B's model: the MLP whenever the checkpoint is one, the CNN
/// builtins' forwards with `--check`.
fn reference_forward(
    spec: &str,
    params: &Params<f64>,
    check: bool,
) -> Result<Option<Forward>, CliError> {
    if mlp::widths(params).is_ok() {
        return Ok(Some(Forward::Mlp));
    }
    if !check {
        return Ok(None);
    }
    // A builtin names its family; any other spec (JSON, `resnet20`) is checked with the family
    // its checkpoint's names belong to.
    let has = |k: &str| params.contains(k);
    let forward = match spec.parse::<Builtin>() {
        Ok(Builtin::TorchvisionVgg { .. } | Builtin::LlfcVgg { .. }) => {
            Forward::Vgg(VggLayout::from_params(params)?)
        }
        Ok(Builtin::TorchvisionResNet(_)) => {
            Forward::ResNet(ResNetLayout::from_params(params, ResNetNaming::Torchvision)?)
        }
        Ok(Builtin::CifarResNet(_)) => {
            Forward::ResNet(ResNetLayout::from_params(params, ResNetNaming::Cifar)?)
        }
        _ if has("features.0.weight") && has("classifier.0.weight") => {
            Forward::Vgg(VggLayout::from_params(params)?)
        }
        _ if has("layer1.0.conv1.weight") && (has("fc.weight") || has("linear.weight")) => {
            let naming = if has("fc.weight") {
                ResNetNaming::Torchvision
            } else {
                ResNetNaming::Cifar
            };
            Forward::ResNet(ResNetLayout::from_params(params, naming)?)
        }
        _ => {
            return Err(CliError::Usage(format!(
                "--check: no reference forward for the model of spec `{spec}` (it covers MLPs `layers.{{i}}.*` and the torchvision / LLFC-code VGGs (`features.N`, `classifier.M`) and ResNets (`layer{{s}}.{{b}}.conv{{k}}`, `fc` or `linear`))"
            )))
        }
    };
    Ok(Some(forward))
}

/// Check that the spec is a symmetry of the model and that the aligned B computes what B
/// computes; the summary line, or an error that stops `align` before it writes anything.
fn check_function(
    forward: &Forward,
    spec: &PermutationSpec,
    b: &Params<f64>,
    aligned: &Params<f64>,
    seed: u64,
) -> Result<String, CliError> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let x = forward.inputs(b, &mut rng)?;
    let report = spec.check_invariance(b, |p, x| forward.run(p, x), &x, CHECK_TOL, &mut rng)?;
    if !report.passed() {
        return Err(CliError::Usage(format!(
            "refusing to write: the spec is not a symmetry of the model. {report}"
        )));
    }
    let (y, y_aligned) = (forward.run(b, &x)?, forward.run(aligned, &x)?);
    let diff = (&y - &y_aligned).iter().fold(0.0_f64, |m, d| {
        if d.is_nan() {
            f64::INFINITY
        } else {
            m.max(d.abs())
        }
    });
    if diff > CHECK_TOL {
        return Err(CliError::Usage(format!(
            "refusing to write: the aligned B computes another function (max |Δoutput| = {diff:.3e} > {CHECK_TOL:.0e})"
        )));
    }
    // A model whose outputs do not depend on its input (dead units) passes any spec.
    let first = y.row(0);
    let spread = y
        .rows()
        .into_iter()
        .flat_map(|r| {
            r.iter()
                .zip(first.iter())
                .map(|(a, b)| (a - b).abs())
                .collect::<Vec<_>>()
        })
        .fold(0.0_f64, f64::max);
    let note = if spread <= CHECK_TOL {
        " - INCONCLUSIVE: the outputs do not depend on the inputs"
    } else {
        ""
    };
    Ok(format!(
        "passed (aligned B vs B: max |Δoutput| {diff:.1e}; random permutations through the spec: {:.1e}; {} random inputs, tolerance {CHECK_TOL:.0e}){note}",
        report.max_abs_diff,
        x.shape()[0]
    ))
}

/// A builtin spec shaped after the checkpoint, or a JSON spec file.
fn load_spec(name: &str, a: &Checkpoint) -> Result<PermutationSpec, CliError> {
    let has = |k: &str| a.params.contains(k);
    let count = |f: &dyn Fn(usize) -> String| (0..).take_while(|&i| has(&f(i))).count();
    match name {
        "mlp" => Ok(PermutationSpec::mlp_from_params(&a.params)?),
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
        name if name.parse::<Builtin>().is_ok() => {
            let builtin: Builtin = name.parse()?;
            Ok(builtin.spec_for(&a.params)?)
        }
        path => {
            let bytes = read_regular_file(path).map_err(|e| CliError::Usage(format!("unknown spec `{path}`: not a builtin (mlp, vgg, resnet20, resnet-option-a, gpt2, bert, llama, {}) and not a readable JSON file ({e})", Builtin::all().iter().map(Builtin::name).collect::<Vec<_>>().join(", "))))?;
            let text = String::from_utf8(bytes).map_err(|e| {
                CliError::Usage(format!("spec file `{path}` is not UTF-8 text: {e}"))
            })?;
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
