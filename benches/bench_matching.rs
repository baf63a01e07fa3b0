//! Time weight matching or activation matching on files written by another program, and print
//! one JSON line (the driver of `benches/compare_matching.py`, documented in `BENCHMARKS.md`).
//!
//! ```text
//! cargo run --release -p llfc-bench --bin bench_matching -- weight --a A.npz --b B.npz \
//!     [--precision f64|f32] [--order natural|seeded|P_0,P_1,...] [--seed S] [--max-iter N] [--perms]
//! cargo run --release -p llfc-bench --bin bench_matching -- activation --features F.npz \
//!     [--precision f64|f32] [--statistic correlation|covariance|inner-product] [--batch ROWS] [--perms]
//! cargo run --release -p llfc-bench --bin bench_matching -- activation --synthetic --width D --layers L \
//!     --samples N [--batch ROWS] [--seed S] [--precision f32|f64] [--perms]
//! ```
//!
//! - `weight`: A and B are MLP checkpoints (`.npz` or `.safetensors`) with PyTorch names
//!   `layers.{i}.weight` (`[out, in]`) and `layers.{i}.bias`, stored as float32 or float64 and read
//!   in `--precision` (default f64). The spec is `PermutationSpec::mlp(L)`; `--order natural`
//!   (default) visits `P_0, P_1, …` in every sweep, `--order seeded` draws the order from `--seed`,
//!   and a comma-separated list gives any fixed order.
//! - `activation --features F.npz`: the archive holds `a.P_{k}` and `b.P_{k}` (`[N, d_k]`, rows
//!   are samples, the same inputs for A and B) for every permuted layer `P_k`. The statistics are
//!   accumulated with `ActivationStats::update` over `--batch` rows at a time (default all).
//! - `activation --synthetic`: no file; for each of `--layers` layers of `--width` units, features
//!   are generated `--batch` rows at a time (default 1000) inside the driver and streamed into
//!   the statistics, so the memory used does not grow with `--samples`: A's features are
//!   `relu(z)` with `z` uniform on `[−1, 1]`, B's are `relu(½ z[:, σ_k] + ½ e)` with a seeded
//!   hidden permutation `σ_k` and fresh noise `e`. Generation time is excluded from `seconds`.
//!
//! Output (one line): `method`, `precision`, `objective_before` and `objective_after`
//! (weight: `⟨θ_A, π(θ_B)⟩` in f64; activation: `Σ_k Σ_i C_k[i, p_k(i)]` of the chosen statistic,
//! at the identity and at the result), `sweeps` and `converged` (weight), `samples` (activation),
//! `seconds` (wall time of the matching only: no file reading, no data generation),
//! `cpu_seconds` (user + system CPU time of the same part, all threads, from `/proc/self/stat`;
//! with `--synthetic` it includes the feature generation), `perm_hash` (64-bit
//! FNV-1a of every index, as little-endian u64, of the permutations in name order, in hex) and,
//! with `--perms`, the permutations themselves.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Instant;

use llfc::matching::activation::{
    activation_matching, ActivationMatchingOptions, ActivationStats, Statistic,
};
use llfc::matching::weight::{weight_matching, WeightMatchingOptions};
use llfc::{io, mlp, Float, Params, Permutation, PermutationSpec};
use ndarray::{s, Array2, ArrayD, Ix2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const USAGE: &str = "usage:
  bench_matching weight --a A.npz --b B.npz [--precision f64|f32] [--order natural|seeded|P_0,P_1,...]
                        [--seed S] [--max-iter N] [--perms]
  bench_matching activation --features F.npz [--precision f64|f32]
                        [--statistic correlation|covariance|inner-product] [--batch ROWS] [--perms]
  bench_matching activation --synthetic --width D --layers L --samples N [--batch ROWS] [--seed S]
                        [--precision f32|f64] [--perms]";

/// Parsed command line.
#[derive(Default)]
struct Args {
    method: String,
    flags: BTreeMap<String, String>,
    switches: Vec<String>,
}

impl Args {
    fn parse() -> Result<Self, String> {
        let mut it = std::env::args().skip(1);
        let mut args = Self {
            method: it.next().ok_or("missing method (weight or activation)")?,
            ..Self::default()
        };
        if args.method == "--help" || args.method == "-h" {
            return Err(String::new());
        }
        while let Some(a) = it.next() {
            match a.as_str() {
                "--perms" | "--synthetic" | "--cold" => args.switches.push(a),
                "--help" | "-h" => return Err(String::new()),
                flag if flag.starts_with("--") => {
                    let v = it.next().ok_or(format!("{flag} needs a value"))?;
                    args.flags.insert(flag[2..].to_string(), v);
                }
                other => return Err(format!("unexpected argument `{other}`")),
            }
        }
        Ok(args)
    }

    fn get(&self, k: &str) -> Option<&str> {
        self.flags.get(k).map(String::as_str)
    }

    fn need(&self, k: &str) -> Result<&str, String> {
        self.get(k).ok_or(format!("missing --{k}"))
    }

    fn num<T: std::str::FromStr>(&self, k: &str, default: Option<T>) -> Result<T, String> {
        match (self.get(k), default) {
            (Some(v), _) => v.parse().map_err(|_| format!("bad --{k} `{v}`")),
            (None, Some(d)) => Ok(d),
            (None, None) => Err(format!("missing --{k}")),
        }
    }

    fn has(&self, k: &str) -> bool {
        self.switches.iter().any(|s| s == k)
    }
}

fn main() -> ExitCode {
    let args = match Args::parse() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("error: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let precision = args.get("precision").unwrap_or(match args.method.as_str() {
        "activation" if args.has("--synthetic") => "f32",
        _ => "f64",
    });
    let out = match (args.method.as_str(), precision) {
        ("weight", "f64") => run_weight::<f64>(&args),
        ("weight", "f32") => run_weight::<f32>(&args),
        ("activation", "f64") => run_activation::<f64>(&args),
        ("activation", "f32") => run_activation::<f32>(&args),
        (m, p) => Err(format!("unknown method `{m}` or precision `{p}`")),
    };
    match out {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_weight<F: Float>(args: &Args) -> Result<String, String> {
    let a: Params<F> = io::read_params(args.need("a")?).map_err(|e| e.to_string())?;
    let b: Params<F> = io::read_params(args.need("b")?).map_err(|e| e.to_string())?;
    let layers = mlp::num_layers(&a).map_err(|e| e.to_string())?;
    let spec = PermutationSpec::mlp(layers);
    let order = match args.get("order").unwrap_or("natural") {
        "natural" => Some(spec.perm_names()),
        "seeded" => None,
        list => Some(list.split(',').map(str::to_string).collect()),
    };
    let options = WeightMatchingOptions {
        max_iter: args.num("max-iter", Some(100))?,
        seed: args.num("seed", Some(0))?,
        order,
        warm_start: !args.has("--cold"),
        ..WeightMatchingOptions::default()
    };
    let (t0, c0) = (Instant::now(), cpu_seconds());
    let m = weight_matching(&spec, &a, &b, &options).map_err(|e| e.to_string())?;
    let seconds = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - c0;
    let mut line = format!(
        "{{\"method\":\"weight\",\"precision\":\"{}\",\"layers\":{layers},\"objective_before\":{:e},\
         \"objective_after\":{:e},\"sweeps\":{},\"converged\":{},\"seconds\":{seconds:.6},\"cpu_seconds\":{cpu:.2}",
        F::DTYPE,
        m.initial_objective,
        m.objective,
        m.sweeps,
        m.converged
    );
    finish(&mut line, &m.perms, args.has("--perms"));
    Ok(line)
}

fn run_activation<F: Float>(args: &Args) -> Result<String, String> {
    let statistic = match args.get("statistic").unwrap_or("correlation") {
        "correlation" => Statistic::Correlation,
        "covariance" => Statistic::Covariance,
        "inner-product" => Statistic::InnerProduct,
        other => return Err(format!("unknown statistic `{other}`")),
    };
    let (stats, samples, update_seconds, update_cpu) = if args.has("--synthetic") {
        synthetic_stats::<F>(args)?
    } else {
        file_stats::<F>(args)?
    };
    let c0 = cpu_seconds();
    let t0 = Instant::now();
    let options = ActivationMatchingOptions {
        statistic,
        ..ActivationMatchingOptions::default()
    };
    let perms = activation_matching(&stats, &options).map_err(|e| e.to_string())?;
    let seconds = update_seconds + t0.elapsed().as_secs_f64();
    let cpu = update_cpu + cpu_seconds() - c0;
    let (mut before, mut after) = (0.0, 0.0);
    for (name, st) in &stats {
        let c = st.statistic(statistic).map_err(|e| e.to_string())?;
        before += (0..c.nrows()).map(|i| c[[i, i]]).sum::<f64>();
        after += perms[name]
            .as_slice()
            .iter()
            .enumerate()
            .map(|(i, &j)| c[[i, j]])
            .sum::<f64>();
    }
    let mut line = format!(
        "{{\"method\":\"activation\",\"precision\":\"{}\",\"layers\":{},\"samples\":{samples},\
         \"objective_before\":{before:e},\"objective_after\":{after:e},\"seconds\":{seconds:.6},\
         \"update_seconds\":{update_seconds:.6},\"cpu_seconds\":{cpu:.2}",
        F::DTYPE,
        stats.len()
    );
    finish(&mut line, &perms, args.has("--perms"));
    Ok(line)
}

/// The statistics of each layer, the sample count, and the wall and CPU seconds of the updates.
type Gathered = (BTreeMap<String, ActivationStats>, usize, f64, f64);

/// Statistics of the features in `--features` (keys `a.P_k`, `b.P_k`).
fn file_stats<F: Float>(args: &Args) -> Result<Gathered, String> {
    let arrays: BTreeMap<String, ArrayD<F>> =
        io::read_npz_arrays(args.need("features")?).map_err(|e| e.to_string())?;
    let mut pairs = BTreeMap::new();
    for (key, arr) in &arrays {
        let (who, name) = key
            .split_once('.')
            .ok_or(format!("feature key `{key}` is not `a.NAME` or `b.NAME`"))?;
        let arr = arr
            .view()
            .into_dimensionality::<Ix2>()
            .map_err(|_| format!("feature `{key}` is not [samples, units]"))?;
        let slot = pairs.entry(name.to_string()).or_insert((None, None));
        match who {
            "a" => slot.0 = Some(arr),
            "b" => slot.1 = Some(arr),
            _ => return Err(format!("feature key `{key}` is not `a.NAME` or `b.NAME`")),
        }
    }
    let mut stats = BTreeMap::new();
    let mut samples = 0;
    let (t0, c0) = (Instant::now(), cpu_seconds());
    for (name, pair) in pairs {
        let (Some(fa), Some(fb)) = pair else {
            return Err(format!("layer `{name}` needs both a.{name} and b.{name}"));
        };
        samples = fa.nrows();
        let batch = args.num("batch", Some(samples.max(1)))?.max(1);
        let mut st = ActivationStats::new(fa.ncols(), fb.ncols());
        let mut start = 0;
        while start < samples {
            let end = (start + batch).min(samples);
            st.update(fa.slice(s![start..end, ..]), fb.slice(s![start..end, ..]))
                .map_err(|e| e.to_string())?;
            start = end;
        }
        stats.insert(name, st);
    }
    Ok((
        stats,
        samples,
        t0.elapsed().as_secs_f64(),
        cpu_seconds() - c0,
    ))
}

/// Statistics of synthetic features streamed `--batch` rows at a time (see the module docs).
/// The CPU seconds returned include the generation of the features (interleaved with the
/// updates); the wall seconds do not.
fn synthetic_stats<F: Float>(args: &Args) -> Result<Gathered, String> {
    let width: usize = args.num("width", None)?;
    let layers: usize = args.num("layers", None)?;
    let samples: usize = args.num("samples", None)?;
    let batch: usize = args.num::<usize>("batch", Some(1000))?.max(1);
    let seed: u64 = args.num("seed", Some(0))?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let hidden: Vec<Permutation> = (0..layers)
        .map(|_| Permutation::random(width, &mut rng))
        .collect();
    let mut stats: Vec<ActivationStats> = (0..layers)
        .map(|_| ActivationStats::new(width, width))
        .collect();
    let mut a = Array2::<F>::zeros((batch, width));
    let mut b = Array2::<F>::zeros((batch, width));
    let mut spent = 0.0;
    let mut done = 0;
    let c0 = cpu_seconds();
    while done < samples {
        let rows = batch.min(samples - done);
        for (k, st) in stats.iter_mut().enumerate() {
            let sigma = hidden[k].as_slice();
            for r in 0..rows {
                for j in 0..width {
                    a[[r, j]] = F::from_f64(2.0 * rng.random::<f64>() - 1.0);
                }
                for j in 0..width {
                    let z = a[[r, sigma[j]]].as_f64();
                    let e = 2.0 * rng.random::<f64>() - 1.0;
                    b[[r, j]] = F::from_f64((0.5 * z + 0.5 * e).max(0.0));
                }
                a.row_mut(r)
                    .mapv_inplace(|v| if v > F::zero() { v } else { F::zero() });
            }
            let t0 = Instant::now();
            st.update(a.slice(s![..rows, ..]), b.slice(s![..rows, ..]))
                .map_err(|e| e.to_string())?;
            spent += t0.elapsed().as_secs_f64();
        }
        done += rows;
    }
    let stats = stats
        .into_iter()
        .enumerate()
        .map(|(k, st)| (format!("P_{k}"), st))
        .collect();
    Ok((stats, samples, spent, cpu_seconds() - c0))
}

/// CPU time (user + system, all threads) of this process so far, from `/proc/self/stat`
/// (Linux, 100 ticks a second); 0 where unavailable.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |k: usize| {
        fields
            .get(k)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (tick(11) + tick(12)) / 100.0
}

/// Append `perm_hash` (and the permutations with `--perms`) and close the JSON object.
fn finish(line: &mut String, perms: &BTreeMap<String, Permutation>, with_perms: bool) {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in perms.values() {
        for &i in p.as_slice() {
            for byte in (i as u64).to_le_bytes() {
                h ^= u64::from(byte);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
    }
    let _ = write!(line, ",\"perm_hash\":\"{h:016x}\"");
    if with_perms {
        line.push_str(",\"perms\":{");
        for (k, (name, p)) in perms.iter().enumerate() {
            let sep = if k == 0 { "" } else { "," };
            let list: Vec<String> = p.as_slice().iter().map(usize::to_string).collect();
            let _ = write!(line, "{sep}\"{name}\":[{}]", list.join(","));
        }
        line.push('}');
    }
    line.push('}');
}
