//! Solve one linear assignment problem stored in a `.npy` file and print the result as JSON.
//!
//! ```text
//! cargo run --release --example lap -- COST.npy [--maximize] [--solver native|kuhn-munkres]
//!     [--presolve auto|always|never]
//! ```
//!
//! `COST.npy` holds a 2-D `f64` or `f32` array (C or Fortran order). The output is one line,
//! `{"total": …, "assignment": [col of row 0, …], "seconds": …}`, where `total` is printed with
//! round-trip precision, an unassigned row (more rows than columns) is `null`, and `seconds`
//! times the solve alone (not reading the file). Errors (missing file, not 2-D, NaN, infeasible,
//! bad arguments) go to stderr with a non-zero exit status. `--presolve` chooses the native
//! solver's f32 presolve ([`llfc::assignment::Presolve`], default `auto`).
//! `benches/compare_lap.py` drives it.

use std::process::ExitCode;
use std::time::Instant;

use llfc::assignment::{solve_with, Assignment, LapOptions, Presolve, Solver};
use ndarray::Array2;
use ndarray_npy::ReadNpyExt;

const USAGE: &str =
    "usage: lap COST.npy [--maximize] [--solver native|kuhn-munkres] [--presolve auto|always|never]";

struct Args {
    path: String,
    maximize: bool,
    solver: Solver,
    presolve: Presolve,
}

fn parse_args() -> Result<Args, String> {
    let (mut path, mut maximize, mut solver) = (None, false, Solver::Native);
    let mut presolve = Presolve::Auto;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--maximize" => maximize = true,
            "--solver" => {
                solver = match it.next().as_deref() {
                    Some("native") => Solver::Native,
                    Some("kuhn-munkres") => Solver::KuhnMunkres,
                    other => return Err(format!("unknown solver {other:?}\n{USAGE}")),
                }
            }
            "--presolve" => {
                presolve = match it.next().as_deref() {
                    Some("auto") => Presolve::Auto,
                    Some("always") => Presolve::Always,
                    Some("never") => Presolve::Never,
                    other => return Err(format!("unknown presolve {other:?}\n{USAGE}")),
                }
            }
            "-h" | "--help" => return Err(USAGE.into()),
            _ if a.starts_with("--") => return Err(format!("unknown option {a}\n{USAGE}")),
            _ if path.is_none() => path = Some(a),
            _ => return Err(format!("unexpected argument {a}\n{USAGE}")),
        }
    }
    Ok(Args {
        path: path.ok_or_else(|| USAGE.to_string())?,
        maximize,
        solver,
        presolve,
    })
}

/// Time the solve of an already loaded matrix.
fn timed<F: llfc::Float>(cost: &Array2<F>, args: &Args) -> llfc::Result<(Assignment, f64)> {
    let options = LapOptions {
        solver: args.solver,
        presolve: args.presolve,
        ..LapOptions::default()
    };
    let t0 = Instant::now();
    let a = solve_with(cost.view(), args.maximize, &options)?;
    Ok((a, t0.elapsed().as_secs_f64()))
}

fn run() -> Result<String, String> {
    let args = parse_args()?;
    let open =
        || std::fs::File::open(&args.path).map_err(|e| format!("cannot open {}: {e}", args.path));
    // Try f64 first, then f32; report the f64 error if neither matches.
    let result = match Array2::<f64>::read_npy(open()?) {
        Ok(c) => timed(&c, &args),
        Err(e64) => match Array2::<f32>::read_npy(open()?) {
            Ok(c) => timed(&c, &args),
            Err(_) => {
                return Err(format!(
                    "{}: not a 2-D f64 or f32 .npy array: {e64}",
                    args.path
                ))
            }
        },
    };
    let (a, seconds) = result.map_err(|e| format!("{}: {e}", args.path))?;
    let cols: Vec<String> = a
        .row_to_col()
        .iter()
        .map(|c| c.map_or_else(|| "null".to_string(), |c| c.to_string()))
        .collect();
    // `{:?}` prints the shortest representation that round-trips (full precision).
    let total = if a.total.is_finite() {
        format!("{:?}", a.total)
    } else {
        "null".into()
    };
    Ok(format!(
        "{{\"total\": {total}, \"assignment\": [{}], \"seconds\": {seconds:?}}}",
        cols.join(", ")
    ))
}

fn main() -> ExitCode {
    match run() {
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
