//! End-to-end tests of `examples/repair.rs`: the file workflow that `repair_model.py` drives
//! (statistics written per layer, `interpolate`, then `fold` layer by layer) gives the same
//! checkpoint as `mlp::repair`; `reset-bn` equals `set_running_stats`; bad files give a
//! one-line error and no output; every failure (aliased outputs, non-regular inputs, bad
//! arguments) leaves every file as it was.
#![cfg(feature = "io")]

use std::path::Path;

use super::cli_support::{
    assert_failures_touch_nothing, assert_succeeds_and_writes, run_example, s, strings, Traps,
};

use llfc::repair::{set_running_stats, BatchNormLayer, RunningVariance, UnitStats};
use llfc::{io, mlp, Params};
use ndarray::{Array1, Array2, ArrayD};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// `(success, stderr)` of `repair args`.
fn run(args: &[&str]) -> (bool, String) {
    let out = run_example("repair", args);
    (out.code == Some(0), out.stderr)
}

/// `repair fold` of one layer with the statistics files of `dir` (`sa.npz`, `sb.npz`, `st.npz`).
fn fold(dir: &Path, theta: &Path, alpha: &str, layer: &str, out: &Path) -> (bool, String) {
    let stats = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let (sa, sb, st) = (stats("sa.npz"), stats("sb.npz"), stats("st.npz"));
    run(&[
        "fold",
        "--theta",
        s(theta),
        "--alpha",
        alpha,
        "--stats-a",
        &sa,
        "--stats-b",
        &sb,
        "--stats",
        &st,
        "--layer",
        layer,
        "-o",
        s(out),
    ])
}

/// A statistics file as `repair_model.py` writes it: `{name}/mean`, `/var`, `/count`.
fn write_stats(path: &Path, stats: &[(String, UnitStats)]) {
    let mut arrays: Vec<(String, ArrayD<f64>)> = Vec::new();
    for (name, st) in stats {
        arrays.push((format!("{name}/mean"), st.mean().to_owned().into_dyn()));
        arrays.push((format!("{name}/var"), st.variance().into_dyn()));
        arrays.push((
            format!("{name}/count"),
            Array1::from_elem(1, st.count() as f64).into_dyn(),
        ));
    }
    io::write_npz_arrays(path, arrays.iter().map(|(k, v)| (k.as_str(), v))).unwrap();
}

fn mlp_stats(p: &Params<f64>, x: &Array2<f64>, names: &[&str]) -> Vec<(String, UnitStats)> {
    let stats = mlp::pre_activation_stats(p, x, names).unwrap();
    names.iter().map(|n| n.to_string()).zip(stats).collect()
}

#[test]
fn the_file_workflow_equals_mlp_repair() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(41);
    let a = mlp::init::<f64, _>(&[4, 9, 7, 3], &mut rng).unwrap();
    let b = mlp::init::<f64, _>(&[4, 9, 7, 3], &mut rng).unwrap();
    let x = Array2::from_shape_simple_fn((60, 4), || 2.0 * rng.random::<f64>() - 1.0);
    let alpha = "0.3";
    let path = |name: &str| dir.path().join(name);
    io::write_params(path("a.safetensors"), &a).unwrap();
    io::write_params(path("b.npz"), &b).unwrap();
    let hidden = ["layers.0", "layers.1"];
    write_stats(&path("sa.npz"), &mlp_stats(&a, &x, &hidden));
    write_stats(&path("sb.npz"), &mlp_stats(&b, &x, &hidden));
    let theta = path("theta.safetensors");
    let (ok, err) = run(&[
        "interpolate",
        "--a",
        s(&path("a.safetensors")),
        "--b",
        s(&path("b.npz")),
        "--alpha",
        alpha,
        "-o",
        s(&theta),
    ]);
    assert!(ok, "{err}");
    let mut theta = theta;
    for (k, name) in hidden.into_iter().enumerate() {
        let current: Params<f64> = io::read_params(&theta).unwrap();
        write_stats(&path("st.npz"), &mlp_stats(&current, &x, &[name]));
        let repaired = path(&format!("theta{k}.safetensors")); // an output is never an input
        let (ok, err) = fold(dir.path(), &theta, alpha, name, &repaired);
        assert!(ok, "{err}");
        theta = repaired;
    }
    let got: Params<f64> = io::read_params(&theta).unwrap();
    let want = mlp::repair(&a, &b, 0.3, &x).unwrap();
    // Same f64 computation; the statistics pass through files exactly (the variance is
    // recomputed from m2 / n · n, rounding ~1e-16).
    assert!(got.distance(&want).unwrap() < 1e-12 * want.norm_sq().sqrt());

    // Errors: a layer missing from the statistics, a missing bias; nothing is written.
    let out = path("bad.safetensors");
    for (layer, needle) in [
        ("layers.2", "layers.2/mean"),
        ("layers.1=layers.1.weight,nobias", "nobias"),
    ] {
        let (ok, err) = fold(dir.path(), &theta, alpha, layer, &out);
        assert!(
            !ok && err.starts_with("repair: error:") && err.contains(needle),
            "{err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1);
        assert!(!out.exists());
    }
}

/// `repair reset-bn` of `bn` (without `-o`).
fn reset_bn_args<'a>(theta: &'a Path, stats: &'a Path, bn: &'a str) -> Vec<&'a str> {
    vec![
        "reset-bn",
        "--theta",
        s(theta),
        "--stats",
        s(stats),
        "--bn",
        bn,
    ]
}

#[test]
fn reset_bn_equals_set_running_stats() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Params::<f32>::new();
    p.insert("bn.weight", Array1::from_elem(3, 1.0f32).into_dyn());
    p.insert("bn.bias", Array1::zeros(3).into_dyn());
    p.insert("bn.running_mean", Array1::zeros(3).into_dyn());
    p.insert("bn.running_var", Array1::ones(3).into_dyn());
    let theta = dir.path().join("theta.safetensors");
    io::write_params(&theta, &p).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(43);
    let maps = ndarray::Array4::from_shape_simple_fn((4, 3, 5, 5), || rng.random::<f64>() * 3.0);
    let st = UnitStats::from_features(maps.view().into_dyn()).unwrap();
    let stats = dir.path().join("stats.npz");
    write_stats(&stats, &[("bn".to_string(), st.clone())]);
    for (flag, variance) in [
        (None, RunningVariance::Unbiased),
        (Some("--population"), RunningVariance::Population),
    ] {
        let out = dir.path().join("reset.safetensors");
        let bn_out = s(&out).to_string();
        let mut args = reset_bn_args(&theta, &stats, "bn");
        args.extend(["-o", bn_out.as_str()]);
        args.extend(flag);
        let (ok, err) = run(&args);
        assert!(ok, "{err}");
        let got: Params<f32> = io::read_params(&out).unwrap();
        let want = set_running_stats(&p, &BatchNormLayer::module("bn"), &st, variance).unwrap();
        // The CLI rebuilds the statistics from (count, mean, population variance): the
        // unbiased variance may differ in the last f64 bit, then both are rounded to f32.
        assert!(got.distance(&want).unwrap() < 1e-6 * want.norm_sq().sqrt());
    }
    // A BN without running statistics: a one-line error.
    let bad_out = dir.path().join("x.safetensors");
    let mut args = reset_bn_args(&theta, &stats, "bn2");
    args.extend(["-o", s(&bad_out)]);
    let (ok, err) = run(&args);
    assert!(!ok && err.contains("bn2"), "{err}");
}

/// The guarantees of README's "What the tools guarantee", for every subcommand: an output that
/// is an input (same path, `./` spelling, a symbolic or a hard link), a directory, in a missing
/// directory or of an unknown format is refused before anything is read; `/dev/zero` and links
/// to it are refused as inputs; bad arguments are one line. Each failure leaves every file of
/// the directory (inputs and an existing output) unchanged in bytes and modification time, with
/// no temporary file left.
#[test]
fn failures_touch_no_file_and_outputs_never_alias_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut rng = ChaCha8Rng::seed_from_u64(47);
    let a = mlp::init::<f32, _>(&[4, 6, 3], &mut rng).unwrap();
    let b = mlp::init::<f32, _>(&[4, 6, 3], &mut rng).unwrap();
    let (pa, pb) = (d.join("a.safetensors"), d.join("b.npz"));
    io::write_params(&pa, &a).unwrap();
    io::write_params(&pb, &b).unwrap();
    let x = Array2::from_shape_simple_fn((20, 4), || 2.0 * rng.random::<f64>() - 1.0);
    let stats = |p: &Params<f32>| mlp_stats(&p.cast::<f64>(), &x, &["layers.0"]);
    let (sa, sb, st) = (d.join("sa.npz"), d.join("sb.npz"), d.join("st.npz"));
    write_stats(&sa, &stats(&a));
    write_stats(&sb, &stats(&b));
    write_stats(&st, &stats(&a.interpolate(&b, 0.5).unwrap()));
    let out = d.join("out.safetensors");
    io::write_params(&out, &b).unwrap(); // an existing output: must survive failures
    let traps = Traps::new(
        d,
        (&pa, "link.safetensors"),
        (&st, "hard.npz"),
        "outdir.safetensors",
    );
    let (link_a, hard_st, outdir, zero) = (traps.link, traps.hard, traps.outdir, traps.zero);
    let dotted = d.join(".").join("b.npz");
    let missing_dir = d.join("no").join("x.safetensors");
    let long_layer = "x".repeat(5000) + "=";

    let interpolate = |a: &Path, b: &Path, o: &Path| {
        strings(&[
            "interpolate",
            "--a",
            s(a),
            "--b",
            s(b),
            "--alpha",
            "0.5",
            "-o",
            s(o),
        ])
    };
    let fold = |theta: &Path, stats: &Path, layer: &str, o: &Path| {
        let mut v = strings(&["fold", "--theta", s(theta), "--alpha", "0.5"]);
        v.extend(strings(&["--stats-a", s(&sa), "--stats-b", s(&sb)]));
        v.extend(strings(&[
            "--stats",
            s(stats),
            "--layer",
            layer,
            "-o",
            s(o),
        ]));
        v
    };
    let reset = |theta: &Path, stats: &Path, o: &Path| {
        let mut v = strings(&reset_bn_args(theta, stats, "bn"));
        v.extend(strings(&["-o", s(o)]));
        v
    };
    let same = "same file as input";
    let cases: Vec<(Vec<String>, &str)> = vec![
        (interpolate(&pa, &pb, &pa), same),
        (interpolate(&pa, &pb, &pb), same),
        (interpolate(&pa, &pb, &dotted), same),
        (interpolate(&pa, &pb, &link_a), same),
        (interpolate(&link_a, &pb, &pa), same),
        (interpolate(&pa, &pb, &outdir), "is a directory"),
        (interpolate(&pa, &pb, &missing_dir), "does not exist"),
        (interpolate(&pa, &pb, &d.join("out.txt")), "out.txt"),
        (interpolate(&zero, &pb, &out), "not a regular file"),
        (interpolate(&pa, Path::new("/dev/zero"), &out), "/dev/zero"),
        (
            interpolate(&pa, &d.join("missing.npz"), &out),
            "missing.npz",
        ),
        (fold(&pa, &st, "layers.0", &pa), same),
        (fold(&pa, &st, "layers.0", &sa), same),
        (fold(&pa, &st, "layers.0", &hard_st), same),
        (fold(&pa, &zero, "layers.0", &out), "not a regular file"),
        (fold(&pa, &st, "layers.1", &out), "layers.1/mean"),
        (
            fold(&pa, &st, &long_layer, &out),
            "expected NAME or NAME=WEIGHT,BIAS",
        ),
        (reset(&pa, &st, &st), same),
        (reset(&pa, &hard_st, &st), same),
        (reset(&pa, &st, &out), "bn"),
        (reset(&pa, &zero, &out), "not a regular file"),
        (strings(&["fold", "--theta", s(&pa)]), "--alpha"),
        (strings(&["interpolate", "--bogus"]), "--bogus"),
        (strings(&["frobnicate"]), "frobnicate"),
        (strings(&[]), "a subcommand is required"),
    ];
    assert_failures_touch_nothing("repair", d, &cases);
    // The error quoting a 5000-character `--layer` is short (~200 characters of it).
    let long = run_example(
        "repair",
        &fold(&pa, &st, &long_layer, &out)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(long.stderr.len() < 400, "{} bytes", long.stderr.len());

    // The same commands with a distinct output succeed (the cases failed for their own reason)
    // and leave the inputs unchanged.
    for args in [
        interpolate(&pa, &pb, &out),
        fold(&pa, &st, "layers.0", &out),
    ] {
        assert_succeeds_and_writes("repair", d, &args);
        assert_eq!(io::read_params::<f32>(&pa).unwrap(), a);
        assert_eq!(io::read_params::<f32>(&pb).unwrap(), b);
    }
}

/// `--help` and `--version` exit 0, for the tool and each subcommand.
#[test]
fn help_exits_zero() {
    for args in [
        &["--help"][..],
        &["-h"],
        &["--version"],
        &["interpolate", "--help"],
        &["fold", "--help"],
        &["reset-bn", "-h"],
    ] {
        let run = run_example("repair", args);
        assert_eq!(run.code, Some(0), "repair {args:?}: {}", run.stderr);
        assert!(!run.stdout.is_empty());
    }
}
