//! `align --spec` with the structured builtins: a planted GPT-2 permutation (heads, fused
//! `[in, out]` c_attn) and a planted option-A ResNet permutation are undone through files.
#![cfg(all(feature = "io", feature = "serde"))]

use llfc::spec::BatchNormParams;
use llfc::{apply_permutations, io, PermutationSpec};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::align_cli::{run, s};
use super::spec_transformer::{config, gpt2_shape, params_for};

#[test]
fn align_undoes_a_planted_gpt2_permutation() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(41);
    let spec = PermutationSpec::gpt2(&config());
    let a = params_for(&spec, gpt2_shape, &mut rng);
    let planted = spec.random_perms(&a, &mut rng).unwrap();
    let b = apply_permutations(&spec, &planted, &a).unwrap();
    let (pa, pb, out) = (
        dir.path().join("a.safetensors"),
        dir.path().join("b.safetensors"),
        dir.path().join("out.safetensors"),
    );
    io::write_params(&pa, &a).unwrap();
    io::write_params(&pb, &b).unwrap();
    let args = [
        "--a",
        s(&pa),
        "--b",
        s(&pb),
        "--spec",
        "gpt2",
        "-o",
        s(&out),
        "--quiet",
    ];
    let (ok, _, stderr) = run(&args);
    assert!(!ok && stderr.contains("--heads"), "{stderr}");
    let mut with_heads = args.to_vec();
    with_heads.extend(["--heads", "2"]);
    let (ok, _, stderr) = run(&with_heads);
    assert!(ok, "{stderr}");
    let back: llfc::Params<f64> = io::read_params(&out).unwrap();
    assert_eq!(back, a);
}

#[test]
fn align_undoes_a_planted_option_a_permutation() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let spec = PermutationSpec::resnet_cifar_option_a(&[2, 2, 2], 4, BatchNormParams::None);
    let a = params_for(
        &spec,
        |name| match name {
            "conv1.weight" => vec![4, 3, 3, 3],
            "linear.weight" => vec![3, 16],
            "linear.bias" => vec![3],
            _ => {
                let s: usize = name[5..6].parse().unwrap();
                let c = 4 << (s - 1);
                let cin = if name.contains(".0.conv1") && s > 1 {
                    c / 2
                } else {
                    c
                };
                let cin = if name.contains("conv2") { c } else { cin };
                vec![c, cin, 3, 3]
            }
        },
        &mut rng,
    );
    let planted = spec.random_perms(&a, &mut rng).unwrap();
    let b = apply_permutations(&spec, &planted, &a).unwrap();
    let (pa, pb, out) = (
        dir.path().join("a.npz"),
        dir.path().join("b.npz"),
        dir.path().join("out.npz"),
    );
    io::write_params(&pa, &a).unwrap();
    io::write_params(&pb, &b).unwrap();
    let (ok, stdout, stderr) = run(&[
        "--a",
        s(&pa),
        "--b",
        s(&pb),
        "--spec",
        "resnet-option-a",
        "-o",
        s(&out),
        "--quiet",
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("permutations"), "{stdout}");
    let back: llfc::Params<f64> = io::read_params(&out).unwrap();
    assert_eq!(back, a);
}
