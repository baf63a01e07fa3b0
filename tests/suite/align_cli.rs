//! End-to-end tests of `examples/align.rs`, the command-line front end of weight and activation
//! matching: planted permutations are recovered from files, the CLI agrees with the library,
//! and every bad input gives a one-line error, a non-zero exit and no output file.
#![cfg(all(feature = "io", feature = "serde"))]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use llfc::matching::weight::{weight_matching, WeightMatchingOptions};
use llfc::spec::Shortcut;
use llfc::{apply_permutations, io, mlp, Params, Permutation, PermutationSpec};
use ndarray::{ArrayD, IxDyn};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The `align` example binary, built by `cargo test` next to this test's own executable.
fn align_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir
        .join("examples")
        .join(format!("align{}", std::env::consts::EXE_SUFFIX));
    assert!(bin.exists(), "build the example first: {}", bin.display());
    bin
}

pub(crate) fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(align_bin()).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

pub(crate) fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn read_perms(path: &Path) -> BTreeMap<String, Permutation> {
    let text = std::fs::read_to_string(path).unwrap();
    let raw: BTreeMap<String, Vec<usize>> = serde_json::from_str(&text).unwrap();
    raw.into_iter()
        .map(|(k, v)| (k, Permutation::new(v).unwrap()))
        .collect()
}

fn resnet20_params(w: usize, rng: &mut ChaCha8Rng) -> Params<f32> {
    let mut shapes: Vec<(String, Vec<usize>)> = vec![("conv1.weight".into(), vec![w, 3, 3, 3])];
    let bn = |v: &mut Vec<(String, Vec<usize>)>, p: &str, c: usize| {
        for f in ["weight", "bias", "running_mean", "running_var"] {
            v.push((format!("{p}.{f}"), vec![c]));
        }
    };
    bn(&mut shapes, "bn1", w);
    let mut cin = w;
    for s in 1..=3 {
        let c = w << (s - 1);
        for b in 0..3 {
            let pre = format!("layer{s}.{b}");
            shapes.push((format!("{pre}.conv1.weight"), vec![c, cin, 3, 3]));
            bn(&mut shapes, &format!("{pre}.bn1"), c);
            shapes.push((format!("{pre}.conv2.weight"), vec![c, c, 3, 3]));
            bn(&mut shapes, &format!("{pre}.bn2"), c);
            if cin != c {
                shapes.push((format!("{pre}.shortcut.0.weight"), vec![c, cin, 1, 1]));
                bn(&mut shapes, &format!("{pre}.shortcut.1"), c);
            }
            cin = c;
        }
    }
    shapes.push(("linear.weight".into(), vec![10, 4 * w]));
    shapes.push(("linear.bias".into(), vec![10]));
    shapes
        .into_iter()
        .map(|(n, sh)| {
            (
                n,
                ArrayD::from_shape_fn(IxDyn(&sh), |_| rng.random_range(-1.0f32..1.0)),
            )
        })
        .collect()
}

#[test]
fn planted_resnet20_permutation_is_recovered_through_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let a = resnet20_params(4, &mut rng);
    let spec = PermutationSpec::resnet20(Shortcut::Conv1x1);
    let planted: BTreeMap<String, Permutation> = spec
        .perm_sizes(&a)
        .unwrap()
        .into_iter()
        .map(|(k, n)| (k, Permutation::random(n, &mut rng)))
        .collect();
    let inverse: BTreeMap<_, _> = planted
        .iter()
        .map(|(k, p)| (k.clone(), p.inverse()))
        .collect();
    let b = apply_permutations(&spec, &inverse, &a).unwrap();
    let (pa, pb) = (
        dir.path().join("a.safetensors"),
        dir.path().join("b.safetensors"),
    );
    io::write_params(&pa, &a).unwrap();
    // B as PyTorch saves it: f32 tensors plus an int64 `num_batches_tracked` per BatchNorm.
    let mut ckpt_b = io::Checkpoint::with_dtype(b.cast::<f64>(), io::Dtype::F32);
    let tracked = io::RawTensor {
        dtype: io::RawDtype::I64,
        shape: vec![],
        data: 391i64.to_le_bytes().to_vec(),
    };
    ckpt_b
        .others
        .push(("bn1.num_batches_tracked".into(), tracked.clone()));
    ckpt_b
        .others
        .push(("layer3.2.bn2.num_batches_tracked".into(), tracked));
    io::write_checkpoint(&pb, &ckpt_b).unwrap();
    let out = dir.path().join("b_aligned.safetensors");
    let (ok, stdout, stderr) = run(&[
        "--a",
        s(&pa),
        "--b",
        s(&pb),
        "--spec",
        "resnet20",
        "--output",
        s(&out),
        "--quiet",
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("objective"), "{stdout}");
    assert_eq!(
        read_perms(&dir.path().join("b_aligned.perms.json")),
        planted
    );
    assert!(
        stdout.contains("bn1.num_batches_tracked"),
        "pass-through is listed: {stdout}"
    );
    let aligned = io::read_checkpoint(&out).unwrap();
    assert_eq!(
        aligned.params.cast::<f32>(),
        a,
        "the aligned B is A exactly"
    );
    assert!(
        aligned
            .params
            .names()
            .all(|k| aligned.dtype(k) == io::Dtype::F32),
        "B's precision is kept"
    );
    assert_eq!(
        aligned.others, ckpt_b.others,
        "integer tensors are copied through unchanged"
    );
}

#[test]
fn mlp_pair_gives_the_same_permutations_as_the_library() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let a: Params<f64> = mlp::init(&[6, 24, 24, 3], &mut rng).unwrap();
    let b: Params<f64> = mlp::init(&[6, 24, 24, 3], &mut rng).unwrap();
    let (pa, pb) = (dir.path().join("a.npz"), dir.path().join("b.npz"));
    io::write_params(&pa, &a).unwrap();
    io::write_params(&pb, &b).unwrap();
    let (out, perms) = (dir.path().join("out.npz"), dir.path().join("p.json"));
    let (ok, stdout, stderr) = run(&[
        "--a",
        s(&pa),
        "--b",
        s(&pb),
        "--spec",
        "mlp",
        "--seed",
        "7",
        "-o",
        s(&out),
        "--perms",
        s(&perms),
    ]);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("sweep"),
        "progress goes to stderr: {stderr}"
    );
    let spec = PermutationSpec::mlp(3);
    let lib = weight_matching(
        &spec,
        &a,
        &b,
        &WeightMatchingOptions {
            seed: 7,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(read_perms(&perms), lib.perms);
    assert!(
        stdout.contains(&format!("sweeps: {}", lib.sweeps)),
        "{stdout}"
    );
    let written: Params<f64> = io::read_params(&out).unwrap();
    assert_eq!(written, apply_permutations(&spec, &lib.perms, &b).unwrap());

    // Activation matching from feature files keyed by permutation name.
    let x = ndarray::Array2::from_shape_fn((300, 6), |_| rng.random_range(-2.0..2.0));
    let feats = |p: &Params<f64>| -> BTreeMap<String, ArrayD<f64>> {
        let f = mlp::forward_features(p, &x).unwrap();
        (0..2)
            .map(|l| (format!("P_{l}"), f.post[l].clone().into_dyn()))
            .collect()
    };
    let (fa, fb) = (dir.path().join("fa.npz"), dir.path().join("fb.npz"));
    io::write_npz_arrays(&fa, feats(&a).iter()).unwrap();
    io::write_npz_arrays(&fb, feats(&b).iter()).unwrap();
    let out2 = dir.path().join("act.npz");
    let (ok, _, stderr) = run(&[
        "--a",
        s(&pa),
        "--b",
        s(&pb),
        "--spec",
        "mlp",
        "--method",
        "activation",
        "--features-a",
        s(&fa),
        "--features-b",
        s(&fb),
        "-o",
        s(&out2),
    ]);
    assert!(ok, "{stderr}");
    let perms_act = read_perms(&dir.path().join("act.perms.json"));
    let lib_act = llfc::matching::activation::activation_matching_from_features(
        &feats(&a),
        &feats(&b),
        &Default::default(),
    )
    .unwrap();
    assert_eq!(perms_act, lib_act);
}

/// Every bad input: non-zero exit, one line on stderr, no output written.
#[test]
fn bad_inputs_fail_cleanly_without_output() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let a: Params<f32> = mlp::init(&[4, 8, 3], &mut rng).unwrap();
    let wide: Params<f32> = mlp::init(&[4, 9, 3], &mut rng).unwrap();
    let (pa, pw) = (
        dir.path().join("a.safetensors"),
        dir.path().join("wide.safetensors"),
    );
    io::write_params(&pa, &a).unwrap();
    io::write_params(&pw, &wide).unwrap();
    let corrupt = dir.path().join("corrupt.safetensors");
    let mut bytes = std::fs::read(&pa).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&corrupt, bytes).unwrap();
    let bad_json = dir.path().join("spec.json");
    std::fs::write(
        &bad_json,
        r#"{"layers.0.weight": ["P", null], "nope.weight": [null, "P"]}"#,
    )
    .unwrap();
    let out = dir.path().join("out.safetensors");
    let unwritable = dir.path().join("missing-dir").join("out.safetensors");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "--a",
                s(&pa),
                "--b",
                s(&pa),
                "--spec",
                "transformer",
                "-o",
                s(&out),
            ],
            "unknown spec",
        ),
        (
            vec!["--a", s(&pa), "--b", s(&pw), "--spec", "mlp", "-o", s(&out)],
            "layers.",
        ),
        (
            vec![
                "--a",
                s(&pa),
                "--b",
                s(&pa),
                "--spec",
                s(&bad_json),
                "-o",
                s(&out),
            ],
            "nope.weight",
        ),
        (
            vec![
                "--a",
                s(&pa),
                "--b",
                s(&corrupt),
                "--spec",
                "mlp",
                "-o",
                s(&out),
            ],
            "corrupt.safetensors",
        ),
        (
            vec![
                "--a",
                s(&pa),
                "--b",
                s(&pa),
                "--spec",
                "mlp",
                "--method",
                "activation",
                "-o",
                s(&out),
            ],
            "features",
        ),
        (
            vec![
                "--a",
                s(&pa),
                "--b",
                s(&pa),
                "--spec",
                "mlp",
                "-o",
                s(&unwritable),
            ],
            "missing-dir",
        ),
    ];
    for (args, needle) in cases {
        let (ok, _, stderr) = run(&args);
        assert!(!ok, "{args:?} should fail");
        // Progress lines may precede it; the error itself is one line, the last one.
        let errors: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("align: error:"))
            .collect();
        assert_eq!(errors.len(), 1, "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().last(), Some(errors[0]));
        assert!(errors[0].contains(needle), "{args:?}: {stderr}");
        assert!(
            !out.exists() && !dir.path().join("out.perms.json").exists(),
            "{args:?} left output"
        );
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 4, "only the inputs remain: {leftovers:?}");
}

// ---------------------------------------------------------------------------------------------
// Issue 10: outputs never alias inputs, all-or-nothing outputs, the builtin MLP spec of a
// checkpoint, non-convergence, long names, a full disk, --help.
// ---------------------------------------------------------------------------------------------

use super::cli_support::{
    assert_failures_touch_nothing, assert_succeeds_and_writes, run_example, strings, Snapshot,
    Traps,
};

/// Item 1, item 2 and the per-CLI guarantee: every failing command (aliasing outputs, an output
/// that is a directory, bad inputs of every kind) fails in one line with exit status 1 and
/// leaves every file of the directory (inputs and an existing output) unchanged in bytes and
/// modification time, with no temporary file left.
#[test]
fn failures_touch_no_file_and_outputs_never_alias_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let a: Params<f32> = mlp::init(&[4, 8, 3], &mut rng).unwrap();
    let b: Params<f32> = mlp::init(&[4, 8, 3], &mut rng).unwrap();
    let (pa, pb) = (d.join("a.safetensors"), d.join("b.npz"));
    io::write_params(&pa, &a).unwrap();
    io::write_params(&pb, &b).unwrap();
    let spec = d.join("spec.json");
    std::fs::write(&spec, PermutationSpec::mlp(2).to_json()).unwrap();
    let out = d.join("out.safetensors");
    io::write_params(&out, &b).unwrap(); // an existing output: must survive failures
    let traps = Traps::new(d, (&pa, "link.safetensors"), (&pb, "hard.npz"), "outdir");
    let (link_a, hard_b, outdir, zero) = (traps.link, traps.hard, traps.outdir, traps.zero);
    // An npz holding `layers.0.weight` twice (names patched to equal length).
    let dup = d.join("dup.npz");
    let mut two: Params<f32> = Params::new();
    two.insert("layers.0.weight", a["layers.0.weight"].clone());
    two.insert("layers.9.weight", a["layers.0.weight"].mapv(|v| v + 1.0));
    let mut bytes = io::params_to_bytes(&two, io::FileFormat::Npz).unwrap();
    let (from, to) = (b"layers.9.weight", b"layers.0.weight");
    for i in 0..bytes.len() - from.len() {
        if &bytes[i..i + from.len()] == from {
            bytes[i..i + from.len()].copy_from_slice(to);
        }
    }
    std::fs::write(&dup, bytes).unwrap();
    let dotted = d.join(".").join("a.safetensors");
    let base = |extra: &[&str]| -> Vec<String> {
        let mut v = strings(&["--a", s(&pa), "--b", s(&pb), "--spec", "mlp"]);
        v.extend(strings(extra));
        v
    };
    let (o, pm) = ("-o", "--perms");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (base(&[o, s(&pa)]), "same file as input"),
        (base(&[o, s(&pb)]), "same file as input"),
        (base(&[o, s(&out), pm, s(&pa)]), "same file as input"),
        (base(&[o, s(&dotted)]), "same file as input"),
        (base(&[o, s(&link_a)]), "same file as input"),
        (base(&[o, s(&out), pm, s(&hard_b)]), "same file as input"),
        (base(&[o, s(&out), "--json", s(&pb)]), "same file as input"),
        (base(&[o, s(&out), pm, s(&out)]), "are the same file"),
        (base(&[o, s(&out), "--json", s(&out)]), "are the same file"),
        (
            strings(&[
                "--a",
                s(&pa),
                "--b",
                s(&pb),
                "--spec",
                s(&spec),
                o,
                s(&out),
                pm,
                s(&spec),
            ]),
            "same file as input",
        ),
        // Item 2: `--perms DIR` used to replace `out` first and leave a temporary file.
        (base(&[o, s(&out), pm, s(&outdir)]), "is a directory"),
        (base(&[o, s(&outdir)]), "npz"),
        (
            base(&[o, s(&out), "--json", s(&d.join("no").join("x.json"))]),
            "does not exist",
        ),
        (base(&[o, s(&d.join("out.txt"))]), "out.txt"),
        (
            strings(&["--a", s(&zero), "--b", s(&pb), "--spec", "mlp", o, s(&out)]),
            "not a regular file",
        ),
        (
            strings(&["--a", s(&pa), "--b", s(&dup), "--spec", "mlp", o, s(&out)]),
            "two entries",
        ),
        (
            strings(&[
                "--a",
                s(&pa),
                "--b",
                s(&pb),
                "--spec",
                "/dev/zero",
                o,
                s(&out),
            ]),
            "not a regular file",
        ),
        (
            strings(&[
                "--a",
                s(&pa),
                "--b",
                s(&pb),
                "--spec",
                s(&outdir),
                o,
                s(&out),
            ]),
            "not a regular file",
        ),
        (base(&[o, s(&out), "--bogus"]), "--bogus"),
        (strings(&["--a", s(&pa)]), "--b"),
    ];
    assert_failures_touch_nothing("align", d, &cases);
    // The same command with distinct outputs succeeds (the cases failed for their own reason).
    assert_succeeds_and_writes("align", d, &base(&[o, s(&out), "-q"]));
    assert_eq!(io::read_params::<f32>(&pa).unwrap(), a);
    assert_eq!(io::read_params::<f32>(&pb).unwrap(), b);
}

/// Item 14 for `align` and `llfc_report`: `--help` and `--version` exit 0.
#[test]
fn help_exits_zero() {
    for name in ["align", "llfc_report"] {
        for flag in ["--help", "-h", "--version"] {
            let run = run_example(name, &[flag]);
            assert_eq!(run.code, Some(0), "{name} {flag}: {}", run.stderr);
            assert!(!run.stdout.is_empty());
        }
    }
}

/// Item 9: a `nn.Sequential` checkpoint (`layers.0`, `layers.2`, `layers.4`) is aligned as a
/// 3-layer MLP like the library does; the issue's `layers.0, 1, 3` checkpoint whose widths do
/// not chain fails naming the layer that does not fit.
#[test]
fn builtin_mlp_spec_takes_every_layer() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let rename = |p: Params<f32>, idx: [usize; 3]| -> Params<f32> {
        p.into_iter()
            .map(|(k, v)| {
                let i: usize = k.split('.').nth(1).unwrap().parse().unwrap();
                (
                    k.replacen(&format!("layers.{i}."), &format!("layers.{}.", idx[i]), 1),
                    v,
                )
            })
            .collect()
    };
    let a = rename(mlp::init(&[5, 12, 12, 3], &mut rng).unwrap(), [0, 2, 4]);
    let b = rename(mlp::init(&[5, 12, 12, 3], &mut rng).unwrap(), [0, 2, 4]);
    let (pa, pb, out) = (d.join("a.npz"), d.join("b.npz"), d.join("out.npz"));
    io::write_params(&pa, &a).unwrap();
    io::write_params(&pb, &b).unwrap();
    let run = run_example(
        "align",
        &[
            "--a",
            s(&pa),
            "--b",
            s(&pb),
            "--spec",
            "mlp",
            "-o",
            s(&out),
            "-q",
        ],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stdout.contains("(2 permutations)"), "{}", run.stdout);
    assert!(!run.stdout.contains("copied unchanged"), "{}", run.stdout);
    let spec = PermutationSpec::mlp_from_params(&a).unwrap();
    let m = weight_matching(&spec, &a, &b, &WeightMatchingOptions::default()).unwrap();
    assert_eq!(read_perms(&d.join("out.perms.json")), m.perms);
    // Layers 0, 1, 3 with 3's input not 1's output.
    let mut gap = rename(mlp::init(&[5, 12, 7, 3], &mut rng).unwrap(), [0, 1, 3]);
    gap.insert("layers.3.weight", ArrayD::zeros(IxDyn(&[3, 9])));
    let pg = d.join("gap.npz");
    io::write_params(&pg, &gap).unwrap();
    let run = run_example(
        "align",
        &[
            "--a",
            s(&pg),
            "--b",
            s(&pg),
            "--spec",
            "mlp",
            "-o",
            s(&d.join("g.npz")),
        ],
    );
    run.assert_fails_with("`layers.3.weight`", "gap");
    assert!(run.stderr.contains("layers.1.weight"), "{}", run.stderr);
}

/// Item 10: a run stopped by `--max-iter` says so on stderr, on stdout and in `--json`.
#[test]
fn non_converged_matching_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let w = |rng: &mut ChaCha8Rng| {
        ArrayD::from_shape_fn(IxDyn(&[10, 10]), |_| rng.random_range(-1.0..1.0))
    };
    let a: Params<f64> = [("w", w(&mut rng))].into_iter().collect();
    let b: Params<f64> = [("w", w(&mut rng))].into_iter().collect();
    let (pa, pb, spec) = (
        d.join("a.safetensors"),
        d.join("b.safetensors"),
        d.join("s.json"),
    );
    io::write_params(&pa, &a).unwrap();
    io::write_params(&pb, &b).unwrap();
    std::fs::write(
        &spec,
        r#"{"params": {"w": ["P", "P"]}, "perms": {"P": {"recurrent": true}}}"#,
    )
    .unwrap();
    let (summary, o) = (d.join("summary.json"), d.join("o.safetensors"));
    let args = |max_iter: &'static str| {
        vec![
            "--a",
            s(&pa),
            "--b",
            s(&pb),
            "--spec",
            s(&spec),
            "--max-iter",
            max_iter,
            "-o",
            s(&o),
            "--json",
            s(&summary),
        ]
    };
    let run = run_example("align", &args("1"));
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("warning: weight matching did not converge"),
        "{}",
        run.stderr
    );
    assert!(run.stdout.contains("did not converge"), "{}", run.stdout);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    assert_eq!(json["converged"], serde_json::Value::Bool(false));
    assert_eq!(json["sweeps"], 1);
    // The library gives the same best iterate.
    let spec_lib = PermutationSpec::from_json(
        r#"{"params": {"w": ["P", "P"]}, "perms": {"P": {"recurrent": true}}}"#,
    )
    .unwrap();
    let options = WeightMatchingOptions {
        max_iter: 1,
        ..Default::default()
    };
    let m = weight_matching(&spec_lib, &a, &b, &options).unwrap();
    assert!(!m.converged);
    assert_eq!(json["objective_after"].as_f64(), Some(m.objective));
    // Enough sweeps: converged, no warning.
    let run = run_example("align", &args("200"));
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    if json["converged"] == serde_json::Value::Bool(true) {
        assert!(!run.stderr.contains("warning"), "{}", run.stderr);
    }
}

/// Item 13: output names of 255 bytes (the usual limit) work: temporary names are short.
#[test]
fn longest_legal_output_names_work() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let a: Params<f32> = mlp::init(&[4, 6, 2], &mut rng).unwrap();
    let pa = d.join("a.safetensors");
    io::write_params(&pa, &a).unwrap();
    let out = d.join(format!(
        "{}.safetensors",
        "o".repeat(255 - ".safetensors".len())
    ));
    let perms = d.join(format!("{}.json", "p".repeat(250)));
    let summary = d.join(format!("{}.json", "s".repeat(250)));
    let run = run_example(
        "align",
        &[
            "--a",
            s(&pa),
            "--b",
            s(&pa),
            "--spec",
            "mlp",
            "-o",
            s(&out),
            "--perms",
            s(&perms),
            "--json",
            s(&summary),
            "-q",
        ],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(io::read_params::<f32>(&out).unwrap(), a);
    assert!(perms.exists() && summary.exists());
    assert_eq!(
        std::fs::read_dir(d).unwrap().count(),
        4,
        "no temporary file left"
    );
}

/// Item 12: a write that hits the file-size limit (a full disk, for the tool) prints the tool's
/// one line only, not the zip writer's "drop failed", and leaves nothing behind.
#[test]
fn a_failed_write_prints_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let a: Params<f32> = mlp::init(&[16, 96, 16], &mut rng).unwrap();
    let pa = d.join("a.safetensors");
    io::write_params(&pa, &a).unwrap();
    let before = Snapshot::of(d);
    for out in ["out.npz", "out.safetensors"] {
        let out = d.join(out);
        // SIGXFSZ ignored (inherited through exec): writes past the limit fail with EFBIG.
        let status = Command::new("sh")
            .arg("-c")
            .arg("trap '' XFSZ; ulimit -f 4; exec \"$0\" \"$@\"")
            .arg(super::cli_support::example_bin("align"))
            .args([
                "--a",
                s(&pa),
                "--b",
                s(&pa),
                "--spec",
                "mlp",
                "-q",
                "-o",
                s(&out),
            ])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&status.stderr);
        assert_eq!(status.status.code(), Some(1), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(!stderr.contains("ZipWriter"), "{stderr}");
        assert!(stderr.starts_with("align: error: "), "{stderr}");
        assert!(stderr.contains("File too large"), "{stderr}");
        assert!(Snapshot::of(d) == before, "{stderr}");
    }
}
