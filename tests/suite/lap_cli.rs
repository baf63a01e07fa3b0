//! End-to-end tests of `examples/lap.rs`: the JSON line agrees with a brute-force optimum,
//! `--help` exits 0, an empty matrix totals 0, and every bad input (forged `.npy` headers,
//! deep nesting, non-regular files, bad options) is one short line on stderr, exit status 1,
//! with the input untouched.
#![cfg(feature = "io")]

use llfc::io;
use ndarray::{arr2, Array2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

use super::cli_support::{assert_failures_touch_nothing, run_example, s, strings};

fn lap(args: &[&str]) -> super::cli_support::Run {
    run_example("lap", args)
}

/// Minimum of `Σ_i c[i, σ(i)]` over all injections, by enumeration (rows ≤ cols ≤ 6).
fn brute_force(c: &Array2<f64>) -> f64 {
    fn go(c: &Array2<f64>, row: usize, used: &mut Vec<bool>) -> f64 {
        if row == c.nrows() {
            return 0.0;
        }
        let mut best = f64::INFINITY;
        for j in 0..c.ncols() {
            if !used[j] {
                used[j] = true;
                best = best.min(c[[row, j]] + go(c, row + 1, used));
                used[j] = false;
            }
        }
        best
    }
    go(c, 0, &mut vec![false; c.ncols()])
}

#[test]
fn solves_f64_and_f32_files_like_brute_force() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for (rows, cols) in [(4, 4), (3, 5), (6, 6)] {
        let c = Array2::from_shape_simple_fn((rows, cols), || rng.random_range(-5.0..5.0));
        let c32 = c.mapv(|v| f64::from(v as f32));
        for (name, f32_file) in [("c64.npy", false), ("c32.npy", true)] {
            let path = dir.path().join(name);
            if f32_file {
                io::write_npy(&path, &c32.mapv(|v| v as f32)).unwrap();
            } else {
                io::write_npy(&path, &c).unwrap();
            }
            let run = lap(&[s(&path)]);
            assert_eq!(run.code, Some(0), "{}", run.stderr);
            let out: Value = serde_json::from_str(run.stdout.trim()).unwrap();
            let expected = brute_force(if f32_file { &c32 } else { &c });
            let total = out["total"].as_f64().unwrap();
            // Sums of ≤ 6 values of magnitude ≤ 5, in two orders: 1e-12 absolute.
            assert!((total - expected).abs() < 1e-12, "{total} vs {expected}");
            let cols_of: Vec<usize> = out["assignment"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect();
            let used: f64 = cols_of
                .iter()
                .enumerate()
                .map(|(i, &j)| if f32_file { c32[[i, j]] } else { c[[i, j]] })
                .sum();
            assert!((used - expected).abs() < 1e-12);
        }
    }
}

/// Item 14: `--help` exits 0; an empty matrix totals 0, not −0.
#[test]
fn help_exits_zero_and_an_empty_matrix_totals_zero() {
    let run = lap(&["--help"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stdout.contains("usage: lap"), "{}", run.stdout);
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.npy");
    io::write_npy(&empty, &Array2::<f64>::zeros((0, 0))).unwrap();
    for flag in [None, Some("--maximize")] {
        let mut args = vec![s(&empty)];
        args.extend(flag);
        let run = lap(&args);
        assert_eq!(run.code, Some(0), "{}", run.stderr);
        assert!(!run.stdout.contains("-0"), "{}", run.stdout);
        let out: Value = serde_json::from_str(run.stdout.trim()).unwrap();
        assert_eq!(out["total"].as_f64(), Some(0.0));
        assert_eq!(out["assignment"], Value::Array(vec![]));
    }
}

/// The bytes of a `.npy` file with a given header and body.
fn npy(header: &str, body: &[u8]) -> Vec<u8> {
    let mut out = b"\x93NUMPY\x02\x00".to_vec();
    out.extend((header.len() as u32).to_le_bytes());
    out.extend(header.as_bytes());
    out.extend(body);
    out
}

/// Items 3, 4, 11: forged sizes, deep headers and non-regular files fail in one short line,
/// without allocating what the header claims, and no input changes on any error path.
#[test]
fn bad_inputs_fail_in_one_line_and_touch_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let write = |name: &str, bytes: &[u8]| {
        let p = d.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    // 131072 × 131072 f64 (128 GiB) declared, 16 bytes present: the SIGABRT.
    let forged = write(
        "forged.npy",
        &npy(
            "{'descr': '<f8', 'fortran_order': False, 'shape': (131072, 131072), }\n",
            &[0; 16],
        ),
    );
    let deep = write("deep.npy", &npy(&"[".repeat(30_000), &[]));
    let deeper = write("deeper.npy", &npy(&"(".repeat(2_000_000), &[]));
    let wordy = write(
        "wordy.npy",
        &npy(
            &format!("{{'descr': '{}', 'shape': (1,)}}\n", "x".repeat(60_000)),
            &[],
        ),
    );
    let one_d = d.join("one_d.npy");
    io::write_npy(&one_d, &ndarray::arr1(&[1.0f64, 2.0])).unwrap();
    let nan = d.join("nan.npy");
    io::write_npy(&nan, &arr2(&[[1.0, f64::NAN], [0.0, 1.0]])).unwrap();
    let ints = write(
        "ints.npy",
        &npy(
            "{'descr': '<i8', 'fortran_order': False, 'shape': (1, 1), }\n",
            &[0; 8],
        ),
    );
    let good = d.join("good.npy");
    io::write_npy(&good, &arr2(&[[1.0, 2.0], [3.0, 0.0]])).unwrap();
    let zero_link = d.join("zero.npy");
    std::os::unix::fs::symlink("/dev/zero", &zero_link).unwrap();
    let sub = d.join("sub.npy");
    std::fs::create_dir(&sub).unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (strings(&[s(&forged)]), "truncated data"),
        (strings(&[s(&deep)]), "nested too deeply"),
        // A 2 MB header is refused for its length; the message names the file.
        (strings(&[s(&deeper)]), "deeper.npy"),
        (strings(&[s(&wordy)]), "wordy.npy"),
        (strings(&[s(&one_d)]), "2-D"),
        (strings(&[s(&nan)]), "nan.npy"),
        (strings(&[s(&ints)]), "integer"),
        (strings(&["/dev/zero"]), "not a regular file"),
        (strings(&[s(&zero_link)]), "not a regular file"),
        (strings(&[s(&sub)]), "not a regular file"),
        (strings(&[s(&d.join("missing.npy"))]), "missing.npy"),
        // Bad values are quoted as given (not as a Rust `Some("…")`), a missing one is named.
        (
            strings(&[s(&good), "--solver", "magic"]),
            "unknown value `magic` for --solver",
        ),
        (
            strings(&[s(&good), "--presolve"]),
            "--presolve needs a value",
        ),
        (
            strings(&[s(&good), "--candidates", "bogus"]),
            "unknown value `bogus` for --candidates",
        ),
        (strings(&[s(&good), "--bogus"]), "unknown option"),
        (strings(&[s(&good), s(&good)]), "unexpected argument"),
        (strings(&[]), "usage"),
    ];
    assert_failures_touch_nothing("lap", d, &cases);
    let run = lap(&[s(&good)]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
}
