//! `repair`: REPAIR and the BatchNorm reset of a checkpoint from statistics files, one step
//! at a time, so that any framework can drive them (Jordan et al. 2023, *REPAIR*).
//!
//! ```sh
//! # θ(α) = α A + (1 − α) B (α = 1 is A), in A's dtypes; integer buffers copied from A
//! cargo run --release --example repair -- interpolate --a a.safetensors --b b.safetensors \
//!     --alpha 0.5 -o theta.safetensors
//! # REPAIR one layer: targets from A's and B's statistics, μ̃, σ̃ from θ's (measured with the
//! # earlier layers already repaired); folded into NAME.weight / NAME.bias
//! cargo run --release --example repair -- fold --theta theta.safetensors --alpha 0.5 \
//!     --stats-a stats_a.npz --stats-b stats_b.npz --stats stats_theta.npz \
//!     --layer features.0 -o theta_1.safetensors
//! # BatchNorm reset of one BN from the statistics of its input (eval mode, earlier BNs reset)
//! cargo run --release --example repair -- reset-bn --theta theta.safetensors \
//!     --stats stats_theta.npz --bn bn1 -o theta_reset.safetensors
//! ```
//!
//! **Statistics files** (`.npz`, written by `examples/python/repair_model.py`): for every
//! feature key `{name}`, `{name}/mean` and `{name}/var` (`[units]`: per-unit mean and
//! *population* variance, over samples and, for conv maps, positions) and `{name}/count` (one
//! number: how many values each unit's statistics summarise). REPAIR's layers are measured at
//! the layer's output (pre-activation); a BN reset reads the BN's *input*.
//!
//! `--layer NAME` folds into `NAME.weight` and `NAME.bias`; `--layer NAME=WEIGHT,BIAS` names
//! them. Several `--layer`s are corrected from the same `--stats`: list several only when none
//! feeds another (layer by layer is the rule: each layer is measured on the network whose
//! earlier layers are already repaired). A layer without bias is an error.
//!
//! The output keeps θ's format (by extension), dtypes and integer buffers.
//!
//! Guarantees (as `align`, `llfc_report`, `lap`; README, "What the tools guarantee"): before
//! anything is read, the output is compared with every input by canonical path and by device
//! and inode (a symbolic or hard link to an input is refused), and must be a regular file in an
//! existing directory; inputs are read by the crate's hardened readers (regular files only,
//! sizes bounded); the output is written to a temporary sibling and renamed only when complete
//! ([`llfc::io::OutputSet`]). Every error is one line `repair: error: …` on stderr, exit status
//! 1, and no file is touched; `--help` and `--version` exit 0.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[path = "common/cli.rs"]
mod cli;

use clap::{Parser, Subcommand};
use cli::{check_outputs, usage, CliError, Named};
use llfc::io::{
    checkpoint_to_bytes, read_checkpoint, read_npz_arrays, Checkpoint, FileFormat, OutputSet,
};
use llfc::repair::{
    fold_correction, set_running_stats, BatchNormLayer, Correction, RepairLayer, RepairOptions,
    RunningVariance, Target, UnitStats,
};

/// REPAIR and BatchNorm reset of checkpoints from per-unit statistics files.
#[derive(Parser, Debug)]
#[command(name = "repair", version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// θ(α) = α A + (1 − α) B, written in A's dtypes (integer buffers copied from A).
    Interpolate {
        /// Checkpoint A (.safetensors or .npz).
        #[arg(long)]
        a: PathBuf,
        /// Checkpoint B, aligned to A.
        #[arg(long)]
        b: PathBuf,
        /// Interpolation coefficient (α = 1 is A).
        #[arg(long)]
        alpha: f64,
        /// Output checkpoint.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// REPAIR of one layer (or of several independent ones): fold the correction.
    Fold {
        /// The current network (θ(α), earlier layers already repaired).
        #[arg(long)]
        theta: PathBuf,
        /// Interpolation coefficient of the targets μ_α, σ_α (α = 1 is A).
        #[arg(long)]
        alpha: f64,
        /// Statistics of A's units.
        #[arg(long)]
        stats_a: PathBuf,
        /// Statistics of the aligned B's units.
        #[arg(long)]
        stats_b: PathBuf,
        /// Statistics of the current network's units.
        #[arg(long)]
        stats: PathBuf,
        /// `NAME` (parameters NAME.weight, NAME.bias) or `NAME=WEIGHT,BIAS`; repeatable.
        #[arg(long = "layer", required = true)]
        layers: Vec<String>,
        /// Output checkpoint.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// BatchNorm reset: running_mean, running_var of BN modules from their input statistics.
    ResetBn {
        /// The current network (earlier BNs already reset).
        #[arg(long)]
        theta: PathBuf,
        /// Statistics of the BN inputs, measured in eval mode.
        #[arg(long)]
        stats: PathBuf,
        /// BN module name (buffers NAME.running_mean, NAME.running_var); repeatable.
        #[arg(long = "bn", required = true)]
        bns: Vec<String>,
        /// Store the population variance instead of PyTorch's unbiased one.
        #[arg(long)]
        population: bool,
        /// Output checkpoint.
        #[arg(short, long)]
        output: PathBuf,
    },
}

fn main() -> ExitCode {
    match cli::parse_args::<Args>("repair") {
        Ok(args) => cli::exit("repair", run(args.command)),
        Err(code) => code,
    }
}

/// Before anything is read: the output's format is known, it is a regular file (or new) in an
/// existing directory, and it is none of the inputs (by canonical path or device and inode).
fn check(inputs: &[Named<'_>], output: &Path) -> Result<FileFormat, CliError> {
    let format = FileFormat::from_path(output)?;
    check_outputs(inputs, &[("--output", output)])?;
    Ok(format)
}

fn run(command: Command) -> Result<(), CliError> {
    match command {
        Command::Interpolate {
            a,
            b,
            alpha,
            output,
        } => {
            let format = check(&[("--a", &a), ("--b", &b)], &output)?;
            let (a, b) = (read_checkpoint(&a)?, read_checkpoint(&b)?);
            let params = a.params.interpolate(&b.params, alpha)?;
            write(&output, format, &Checkpoint { params, ..a }, &[])
        }
        Command::Fold {
            theta,
            alpha,
            stats_a,
            stats_b,
            stats,
            layers,
            output,
        } => {
            let inputs: [Named<'_>; 4] = [
                ("--theta", &theta),
                ("--stats-a", &stats_a),
                ("--stats-b", &stats_b),
                ("--stats", &stats),
            ];
            let format = check(&inputs, &output)?;
            let layers = layers
                .iter()
                .map(|spec| parse_layer(spec))
                .collect::<Result<Vec<_>, _>>()?;
            let mut ckpt = read_checkpoint(&theta)?;
            let (sa, sb, st) = (
                read_stats(&stats_a)?,
                read_stats(&stats_b)?,
                read_stats(&stats)?,
            );
            let tolerance = RepairOptions::default().zero_std_tolerance;
            let mut report = Vec::with_capacity(layers.len());
            for layer in &layers {
                let name = layer.feature.as_str();
                let target = Target::interpolate(&sa.get(name)?, &sb.get(name)?, alpha)?;
                let correction = Correction::new(&st.get(name)?, &target, tolerance)?;
                ckpt.params =
                    fold_correction(&ckpt.params, &layer.weight, &layer.bias, &correction)?;
                let (lo, hi) = correction
                    .scale
                    .iter()
                    .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &s| {
                        (l.min(s), h.max(s))
                    });
                report.push(format!(
                    "{name}: {} units, scale σ_α/σ̃ in [{lo:.4}, {hi:.4}], zero-variance units {:?}",
                    correction.units(),
                    correction.zero_variance
                ));
            }
            write(&output, format, &ckpt, &report)
        }
        Command::ResetBn {
            theta,
            stats,
            bns,
            population,
            output,
        } => {
            let format = check(&[("--theta", &theta), ("--stats", &stats)], &output)?;
            let mut ckpt = read_checkpoint(&theta)?;
            let st = read_stats(&stats)?;
            let variance = if population {
                RunningVariance::Population
            } else {
                RunningVariance::Unbiased
            };
            let mut report = Vec::with_capacity(bns.len());
            for name in &bns {
                let layer = BatchNormLayer::module(name);
                let s = st.get(name)?;
                ckpt.params = set_running_stats(&ckpt.params, &layer, &s, variance)?;
                report.push(format!(
                    "{name}: running statistics of {} channels from {} values each",
                    s.units(),
                    s.count()
                ));
            }
            write(&output, format, &ckpt, &report)
        }
    }
}

/// Most characters of an argument or a file's content quoted in an error.
const QUOTE: usize = 200;

/// `NAME` or `NAME=WEIGHT,BIAS`.
fn parse_layer(spec: &str) -> Result<RepairLayer, CliError> {
    match spec.split_once('=') {
        None if !spec.is_empty() => Ok(RepairLayer::module(spec)),
        Some((name, params)) => match params.split_once(',') {
            Some((w, b)) if !name.is_empty() && !w.is_empty() && !b.is_empty() => {
                Ok(RepairLayer::new(name, w, b))
            }
            _ => usage(format!(
                "--layer `{}`: expected NAME or NAME=WEIGHT,BIAS",
                cli::one_line(spec, QUOTE)
            )),
        },
        None => usage("--layer: empty name"),
    }
}

/// A statistics file: `{name}/mean`, `{name}/var`, `{name}/count`.
struct StatsFile {
    path: PathBuf,
    arrays: std::collections::BTreeMap<String, ndarray::ArrayD<f64>>,
}

fn read_stats(path: &Path) -> Result<StatsFile, CliError> {
    Ok(StatsFile {
        path: path.to_path_buf(),
        arrays: read_npz_arrays::<f64>(path)?,
    })
}

impl StatsFile {
    fn get(&self, name: &str) -> Result<UnitStats, CliError> {
        let array = |what: &str| {
            self.arrays.get(&format!("{name}/{what}")).ok_or_else(|| {
                CliError::Usage(format!(
                    "`{}` has no `{name}/{what}` (statistics of `{name}`)",
                    self.path.display()
                ))
            })
        };
        let (mean, var, count) = (array("mean")?, array("var")?, array("count")?);
        let vector = |a: &ndarray::ArrayD<f64>, what: &str| {
            a.clone()
                .into_dimensionality::<ndarray::Ix1>()
                .map_err(|_| {
                    CliError::Usage(format!(
                        "`{}`: `{name}/{what}` must be a vector, has shape {}",
                        self.path.display(),
                        cli::one_line(&format!("{:?}", a.shape()), QUOTE)
                    ))
                })
        };
        let n = match count.iter().copied().collect::<Vec<_>>()[..] {
            [n] if n >= 1.0 && n.fract() == 0.0 && n < 2f64.powi(53) => n,
            _ => {
                return usage(format!(
                    "`{}`: `{name}/count` must hold one positive integer",
                    self.path.display()
                ))
            }
        };
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let n = n as u64;
        Ok(UnitStats::from_moments(
            n,
            vector(mean, "mean")?,
            &vector(var, "var")?,
        )?)
    }
}

/// Write the output through a temporary sibling renamed into place only when complete (nothing
/// is written on error), then print `report` and where it went.
fn write(
    path: &Path,
    format: FileFormat,
    ckpt: &Checkpoint,
    report: &[String],
) -> Result<(), CliError> {
    let mut staged = OutputSet::new();
    staged.stage_bytes(path, &checkpoint_to_bytes(ckpt, format)?)?;
    staged.commit()?;
    for line in report {
        println!("{line}");
    }
    println!("wrote {}", path.display());
    Ok(())
}
