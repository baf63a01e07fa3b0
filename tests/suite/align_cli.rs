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
