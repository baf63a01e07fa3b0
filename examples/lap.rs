//! Solve one linear assignment problem stored in a `.npy` file and print the result as JSON.
//!
//! ```text
//! cargo run --release --example lap -- COST.npy [--maximize] [--solver native|kuhn-munkres]
//!     [--presolve auto|always|never] [--candidates auto|always|never]
//! ```
//!
//! `COST.npy` holds a 2-D `f64` or `f32` (or `f16`) array (C or Fortran order, either
//! endianness), read by the crate's hardened reader ([`llfc::io::read_npy_with_dtype`]: a
//! forged header or a non-regular file is an error, never a large allocation); `f32` and `f16`
//! data are solved in `f32`. The output is one line,
//! `{"total": …, "assignment": [col of row 0, …], "seconds": …}`, where `total` is printed with
//! round-trip precision (`0` for an empty matrix, never `-0.0`), an unassigned row (more rows
//! than columns) is `null`, and `seconds` times the solve alone (not reading the file). Errors
//! (missing file, not 2-D, NaN, infeasible, bad arguments) are one line `lap: error: …` on
//! stderr with exit status 1; `--help` prints the usage and exits with status 0.
//! `--presolve` chooses the native solver's f32 presolve ([`llfc::assignment::Presolve`],
//! default `auto`); `--candidates` its sparse candidate presolve
//! ([`llfc::assignment::Candidates`], default `auto`).
//! `benches/compare_lap.py` drives it.

use std::process::ExitCode;
use std::time::Instant;

#[path = "common/cli.rs"]
mod cli;

use cli::{usage, CliError};
use llfc::assignment::{solve_with, Assignment, Candidates, LapOptions, Presolve, Solver};
use llfc::io::{read_npy_with_dtype, Dtype};
use ndarray::{Array2, ArrayD, Ix2};

const USAGE: &str =
    "usage: lap COST.npy [--maximize] [--solver native|kuhn-munkres] [--presolve auto|always|never] [--candidates auto|always|never]";

struct Args {
    path: String,
    maximize: bool,
    solver: Solver,
    presolve: Presolve,
    candidates: Candidates,
}

/// The arguments, or `None` for `--help` (usage printed).
fn parse_args() -> cli::Result<Option<Args>> {
    let (mut path, mut maximize, mut solver) = (None, false, Solver::Native);
    let mut presolve = Presolve::Auto;
    let mut candidates = Candidates::Auto;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--maximize" => maximize = true,
            "--solver" => {
                solver = match it.next().as_deref() {
                    Some("native") => Solver::Native,
                    Some("kuhn-munkres") => Solver::KuhnMunkres,
                    other => return usage(bad_value("--solver", other)),
                }
            }
            "--presolve" => {
                let modes = [Presolve::Auto, Presolve::Always, Presolve::Never];
                presolve = mode(it.next(), modes, "--presolve")?;
            }
            "--candidates" => {
                let modes = [Candidates::Auto, Candidates::Always, Candidates::Never];
                candidates = mode(it.next(), modes, "--candidates")?;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            _ if a.starts_with('-') => return usage(format!("unknown option {a} ({USAGE})")),
            _ if path.is_none() => path = Some(a),
            _ => return usage(format!("unexpected argument {a} ({USAGE})")),
        }
    }
    let Some(path) = path else {
        return usage(USAGE);
    };
    Ok(Some(Args {
        path,
        maximize,
        solver,
        presolve,
        candidates,
    }))
}

/// One of `auto|always|never` (`modes` in that order), or a usage error naming option `what`.
fn mode<T: Copy>(arg: Option<String>, modes: [T; 3], what: &str) -> cli::Result<T> {
    match arg.as_deref() {
        Some("auto") => Ok(modes[0]),
        Some("always") => Ok(modes[1]),
        Some("never") => Ok(modes[2]),
        other => usage(bad_value(what, other)),
    }
}

/// The usage error of option `option` given `value` (`None`: no value after it).
fn bad_value(option: &str, value: Option<&str>) -> String {
    match value {
        Some(v) => format!("unknown value `{v}` for {option} ({USAGE})"),
        None => format!("{option} needs a value ({USAGE})"),
    }
}

/// Time the solve of an already loaded matrix.
fn timed<F: llfc::Float>(cost: &Array2<F>, args: &Args) -> llfc::Result<(Assignment, f64)> {
    let options = LapOptions {
        solver: args.solver,
        presolve: args.presolve,
        candidates: args.candidates,
        ..LapOptions::default()
    };
    let t0 = Instant::now();
    let a = solve_with(cost.view(), args.maximize, &options)?;
    Ok((a, t0.elapsed().as_secs_f64()))
}

/// A 2-D cost matrix, or a one-line error naming the file.
fn matrix<F: llfc::Float>(a: ArrayD<F>, path: &str) -> cli::Result<Array2<F>> {
    let shape = a.shape().to_vec();
    a.into_dimensionality::<Ix2>().map_err(|_| {
        CliError::Usage(format!(
            "{path}: the cost must be a 2-D array, found shape {shape:?}"
        ))
    })
}

/// The output line, or `None` after `--help`.
fn run() -> cli::Result<Option<String>> {
    let Some(args) = parse_args()? else {
        return Ok(None);
    };
    // f64 reading is exact for every stored float type; narrower data is solved in f32.
    let (cost, dtype) = read_npy_with_dtype::<f64>(&args.path)?;
    let cost = matrix(cost, &args.path)?;
    let result = if matches!(dtype, Dtype::F64) {
        timed(&cost, &args)
    } else {
        timed(&cost.mapv(|x| x as f32), &args)
    };
    let (a, seconds) = result.map_err(|e| CliError::Usage(format!("{}: {e}", args.path)))?;
    let cols: Vec<String> = a
        .row_to_col()
        .iter()
        .map(|c| c.map_or_else(|| "null".to_string(), |c| c.to_string()))
        .collect();
    // `{:?}` prints the shortest representation that round-trips (full precision); `+ 0.0`
    // turns the −0 of an empty sum into 0.
    let total = if a.total.is_finite() {
        format!("{:?}", a.total + 0.0)
    } else {
        "null".into()
    };
    Ok(Some(format!(
        "{{\"total\": {total}, \"assignment\": [{}], \"seconds\": {seconds:?}}}",
        cols.join(", ")
    )))
}

fn main() -> ExitCode {
    let result = run().map(|line| {
        if let Some(line) = line {
            println!("{line}");
        }
    });
    cli::exit("lap", result)
}
