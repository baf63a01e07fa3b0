//! `align`'s function check: it refuses to write a B whose spec breaks the model (MLPs by
//! default, the CNN builtins with `--check`), names the breaking permutation, and accepts the
//! builtins by name on checkpoints with no other input.
#![cfg(all(feature = "io", feature = "serde"))]

use std::path::{Path, PathBuf};
use std::process::Command;

use llfc::spec::{Builtin, ResNetDepth, VggDepth};
use llfc::{apply_permutations, io, mlp, Params};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::spec_builtins::{builtin_params, random_perms};

fn align(args: &[&str]) -> (bool, String, String) {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(format!("align{}", std::env::consts::EXE_SUFFIX));
    let out = Command::new(bin).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `align --a A --b B --spec SPEC -o OUT EXTRA…`.
fn align_files(
    a: &Path,
    b: &Path,
    spec: &str,
    out: &Path,
    extra: &[&str],
) -> (bool, String, String) {
    let mut args = vec!["--a", s(a), "--b", s(b), "--spec", spec, "-o", s(out)];
    args.extend(extra);
    align(&args)
}

/// A and B (a planted permuted copy of A) written as `.npz` in `dir`.
fn write_pair(
    dir: &Path,
    a: &Params<f64>,
    spec: &llfc::PermutationSpec,
    seed: u64,
) -> (PathBuf, PathBuf) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let planted = random_perms(spec, a, &mut rng);
    let b = apply_permutations(spec, &planted, a).unwrap();
    let (pa, pb) = (dir.join("a.npz"), dir.join("b.npz"));
    io::write_npz(&pa, a).unwrap();
    io::write_npz(&pb, &b).unwrap();
    (pa, pb)
}

#[test]
fn a_json_spec_that_breaks_an_mlp_is_refused_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let a = mlp::init::<f64, _>(&[4, 6, 6, 3], &mut rng).unwrap();
    let (pa, pb) = write_pair(dir.path(), &a, &llfc::PermutationSpec::mlp(3), 2);
    let out = dir.path().join("out.npz");
    // P_0 is produced by layers.0 but layers.1 does not consume it.
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"layers.0.weight": ["P_0", null], "layers.0.bias": ["P_0"],
            "layers.1.weight": ["P_1", null], "layers.1.bias": ["P_1"],
            "layers.2.weight": [null, "P_1"]}"#,
    )
    .unwrap();
    let (ok, _, stderr) = align_files(&pa, &pb, s(&bad), &out, &["-q"]);
    assert!(!ok);
    // Since the symmetry rules of `validate` (spec-lang), such a spec is refused before any
    // matching, naming the permutation.
    assert!(
        stderr.contains("`P_0` is produced but never consumed"),
        "{stderr}"
    );
    assert!(!out.exists());
    // The correct spec passes and says so.
    let good = dir.path().join("good.json");
    std::fs::write(&good, llfc::PermutationSpec::mlp(3).to_json()).unwrap();
    let (ok, stdout, stderr) = align_files(&pa, &pb, s(&good), &out, &["-q"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("function check: passed"), "{stdout}");
    // The planted permutation is undone: the aligned B is A.
    let written = io::read_npz::<f64>(&out).unwrap();
    assert_eq!(written, a);
}

#[test]
fn builtins_align_by_name_and_check_their_function() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for (i, b) in [
        Builtin::TorchvisionVgg {
            depth: VggDepth::Vgg11,
            batch_norm: true,
        },
        Builtin::CifarResNet(ResNetDepth::ResNet18),
    ]
    .into_iter()
    .enumerate()
    {
        let a = builtin_params(b, &mut rng);
        let (pa, pb) = write_pair(dir.path(), &a, &b.spec(), 4 + i as u64);
        let out = dir.path().join("out.npz");
        let name = b.name();
        let (ok, stdout, stderr) = align_files(&pa, &pb, &name, &out, &["-q"]);
        assert!(ok, "{name}: {stderr}");
        assert!(stdout.contains("function check: skipped"), "{stdout}");
        let (ok, stdout, stderr) = align_files(&pa, &pb, &name, &out, &["-q", "--check"]);
        assert!(ok, "{name}: {stderr}");
        assert!(
            stdout.contains("function check: passed") && !stdout.contains("INCONCLUSIVE"),
            "{name}: {stdout}"
        );
        assert_eq!(io::read_npz::<f64>(&out).unwrap(), a, "{name}");
    }
}

#[test]
fn check_without_a_reference_forward_and_unknown_names_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let b = Builtin::LlfcVgg {
        depth: VggDepth::Vgg11,
        batch_norm: true,
    };
    let a = builtin_params(b, &mut rng);
    let (pa, pb) = write_pair(dir.path(), &a, &b.spec(), 6);
    let out = dir.path().join("out.npz");
    // A JSON spec of a model of a builtin family is checked with that family's forward: the
    // builtin's own spec passes; one BatchNorm statistic left unpermuted is refused, by name.
    let json = dir.path().join("spec.json");
    std::fs::write(&json, b.spec().to_json()).unwrap();
    let (ok, stdout, stderr) = align_files(&pa, &pb, s(&json), &out, &["-q", "--check"]);
    assert!(
        ok && stdout.contains("function check: passed"),
        "{stdout} {stderr}"
    );
    std::fs::remove_file(&out).unwrap();
    let bad = b.spec().with("features.1.running_var", &[None::<&str>]);
    std::fs::write(&json, bad.to_json()).unwrap();
    let (ok, stdout, stderr) = align_files(&pa, &pb, s(&json), &out, &["-q", "--check"]);
    assert!(
        !ok && stderr.contains("P_features.0 alone"),
        "{stdout} {stderr}"
    );
    assert!(!out.exists());
    // A model outside those families has no reference forward: --check says so.
    let mut other = Params::new();
    other.insert("conv0.weight", a["features.0.weight"].clone());
    other.insert(
        "fc0.weight",
        ndarray::ArrayD::zeros(ndarray::IxDyn(&[5, a["features.0.weight"].shape()[0]])),
    );
    let (po, pj) = (dir.path().join("o.npz"), dir.path().join("o.json"));
    io::write_npz(&po, &other).unwrap();
    let spec = llfc::PermutationSpec::new()
        .with("conv0.weight", &[Some("P"), None, None, None])
        .with("fc0.weight", &[None, Some("P")]);
    std::fs::write(&pj, spec.to_json()).unwrap();
    let (ok, _, stderr) = align_files(&po, &po, s(&pj), &out, &["--check"]);
    assert!(!ok && stderr.contains("no reference forward"), "{stderr}");
    let (ok, _, stderr) = align_files(&pa, &pb, "torchvision-vgg17", &out, &[]);
    assert!(!ok && stderr.contains("torchvision-vgg16-bn"), "{stderr}");
    // The checkpoint is an LLFC VGG: torchvision's name refuses it.
    let (ok, _, stderr) = align_files(&pa, &pb, "torchvision-vgg11-bn", &out, &[]);
    assert!(!ok && stderr.contains("unflattened"), "{stderr}");
    assert!(!out.exists());
}
