//! Permutation specs: validation errors, planted permutations through the VGG and ResNet-20
//! specs, and a functional check with an independent, naive conv-net forward pass written here:
//! a permuted CNN must compute the same function as the original.

use std::collections::BTreeMap;

use llfc::spec::{ChainLayer, LayerKind, NormKind, Shortcut, VggConfig};
use llfc::{apply_permutations, Error, Params, Permutation, PermutationSpec};
use ndarray::{s, Array1, Array2, Array4, ArrayD, Axis, IxDyn};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

type Perms = BTreeMap<String, Permutation>;

pub(crate) fn random_tensor(shape: &[usize], rng: &mut ChaCha8Rng) -> ArrayD<f64> {
    ArrayD::from_shape_fn(IxDyn(shape), |_| rng.random_range(-1.0..1.0))
}

/// BatchNorm parameters with a positive running variance.
fn add_bn(p: &mut Params<f64>, prefix: &str, c: usize, rng: &mut ChaCha8Rng) {
    p.insert(format!("{prefix}.weight"), random_tensor(&[c], rng));
    p.insert(format!("{prefix}.bias"), random_tensor(&[c], rng));
    p.insert(format!("{prefix}.running_mean"), random_tensor(&[c], rng));
    let var = random_tensor(&[c], rng).mapv(|v| 0.5 + v.abs());
    p.insert(format!("{prefix}.running_var"), var);
    p.insert(
        format!("{prefix}.num_batches_tracked"),
        ArrayD::zeros(IxDyn(&[])),
    );
}

/// ResNet-20-shaped parameters (widths w, 2w, 4w) in the naming of `PermutationSpec::resnet20`.
fn resnet20_params(w: usize, shortcut: Shortcut, rng: &mut ChaCha8Rng) -> Params<f64> {
    let mut p = Params::new();
    p.insert("conv1.weight", random_tensor(&[w, 3, 3, 3], rng));
    add_bn(&mut p, "bn1", w, rng);
    let mut cin = w;
    for s in 1..=3 {
        let c = w << (s - 1);
        for b in 0..3 {
            let pre = format!("layer{s}.{b}");
            p.insert(
                format!("{pre}.conv1.weight"),
                random_tensor(&[c, cin, 3, 3], rng),
            );
            add_bn(&mut p, &format!("{pre}.bn1"), c, rng);
            p.insert(
                format!("{pre}.conv2.weight"),
                random_tensor(&[c, c, 3, 3], rng),
            );
            add_bn(&mut p, &format!("{pre}.bn2"), c, rng);
            if cin != c && shortcut == Shortcut::Conv1x1 {
                p.insert(
                    format!("{pre}.shortcut.0.weight"),
                    random_tensor(&[c, cin, 1, 1], rng),
                );
                add_bn(&mut p, &format!("{pre}.shortcut.1"), c, rng);
            }
            cin = c;
        }
    }
    p.insert("linear.weight", random_tensor(&[10, 4 * w], rng));
    p.insert("linear.bias", random_tensor(&[10], rng));
    p
}

fn vgg_params(config: &VggConfig, widths: &[usize], rng: &mut ChaCha8Rng) -> Params<f64> {
    let mut p = Params::new();
    let mut cin = 3;
    for (i, &width) in widths.iter().enumerate().take(config.num_conv) {
        p.insert(
            format!("conv{i}.weight"),
            random_tensor(&[width, cin, 3, 3], rng),
        );
        if config.conv_bias {
            p.insert(format!("conv{i}.bias"), random_tensor(&[width], rng));
        }
        if config.batch_norm {
            add_bn(&mut p, &format!("bn{i}"), width, rng);
        }
        cin = width;
    }
    for j in 0..config.num_linear {
        let out = widths[config.num_conv + j];
        p.insert(format!("fc{j}.weight"), random_tensor(&[out, cin], rng));
        p.insert(format!("fc{j}.bias"), random_tensor(&[out], rng));
        cin = out;
    }
    p
}

fn random_perms(spec: &PermutationSpec, p: &Params<f64>, rng: &mut ChaCha8Rng) -> Perms {
    spec.perm_sizes(p)
        .unwrap()
        .into_iter()
        .map(|(k, n)| (k, Permutation::random(n, rng)))
        .collect()
}

fn inverse(perms: &Perms) -> Perms {
    perms
        .iter()
        .map(|(k, p)| (k.clone(), p.inverse()))
        .collect()
}

// ---------- an independent naive CNN forward pass (NCHW, eval-mode BatchNorm) ----------

pub(crate) fn t4(p: &Params<f64>, name: &str) -> Array4<f64> {
    p[name].clone().into_dimensionality().unwrap()
}
pub(crate) fn t1(p: &Params<f64>, name: &str) -> Array1<f64> {
    p[name].clone().into_dimensionality().unwrap()
}

/// Direct convolution with zero padding `pad` and stride `stride`.
pub(crate) fn conv2d(x: &Array4<f64>, w: &Array4<f64>, stride: usize, pad: usize) -> Array4<f64> {
    let (n, cin, h, wd) = x.dim();
    let (cout, cin2, kh, kw) = w.dim();
    assert_eq!(cin, cin2);
    let ho = (h + 2 * pad - kh) / stride + 1;
    let wo = (wd + 2 * pad - kw) / stride + 1;
    Array4::from_shape_fn((n, cout, ho, wo), |(b, o, i, j)| {
        let mut acc = 0.0;
        for c in 0..cin {
            for u in 0..kh {
                for v in 0..kw {
                    let (y, xx) = (
                        (i * stride + u) as isize - pad as isize,
                        (j * stride + v) as isize - pad as isize,
                    );
                    if y >= 0 && xx >= 0 && (y as usize) < h && (xx as usize) < wd {
                        acc += w[[o, c, u, v]] * x[[b, c, y as usize, xx as usize]];
                    }
                }
            }
        }
        acc
    })
}

fn batch_norm(x: &Array4<f64>, p: &Params<f64>, prefix: &str) -> Array4<f64> {
    let (g, b) = (
        t1(p, &format!("{prefix}.weight")),
        t1(p, &format!("{prefix}.bias")),
    );
    let (m, v) = (
        t1(p, &format!("{prefix}.running_mean")),
        t1(p, &format!("{prefix}.running_var")),
    );
    let mut y = x.clone();
    for (c, mut plane) in y.axis_iter_mut(Axis(1)).enumerate() {
        let scale = g[c] / (v[c] + 1e-5).sqrt();
        plane.mapv_inplace(|t| (t - m[c]) * scale + b[c]);
    }
    y
}

pub(crate) fn relu4(x: Array4<f64>) -> Array4<f64> {
    x.mapv(|t| t.max(0.0))
}

pub(crate) fn linear(x: &Array2<f64>, p: &Params<f64>, prefix: &str) -> Array2<f64> {
    let w: Array2<f64> = p[&*format!("{prefix}.weight")]
        .clone()
        .into_dimensionality()
        .unwrap();
    x.dot(&w.t()) + &t1(p, &format!("{prefix}.bias"))
}

pub(crate) fn global_avg_pool(x: &Array4<f64>) -> Array2<f64> {
    x.mean_axis(Axis(3)).unwrap().mean_axis(Axis(2)).unwrap()
}

fn resnet_forward(p: &Params<f64>, x: &Array4<f64>, shortcut: Shortcut) -> Array2<f64> {
    let mut h = relu4(batch_norm(
        &conv2d(x, &t4(p, "conv1.weight"), 1, 1),
        p,
        "bn1",
    ));
    for s in 1..=3 {
        for b in 0..3 {
            let pre = format!("layer{s}.{b}");
            let stride = if s > 1 && b == 0 { 2 } else { 1 };
            let w1 = t4(p, &format!("{pre}.conv1.weight"));
            let y = relu4(batch_norm(
                &conv2d(&h, &w1, stride, 1),
                p,
                &format!("{pre}.bn1"),
            ));
            let w2 = t4(p, &format!("{pre}.conv2.weight"));
            let y = batch_norm(&conv2d(&y, &w2, 1, 1), p, &format!("{pre}.bn2"));
            let short = if stride == 1 {
                h.clone()
            } else if shortcut == Shortcut::Conv1x1 {
                let ws = t4(p, &format!("{pre}.shortcut.0.weight"));
                batch_norm(&conv2d(&h, &ws, 2, 0), p, &format!("{pre}.shortcut.1"))
            } else {
                // Option A: subsample, then pad channels with c/4 zeros on each side.
                let sub = h.slice(s![.., .., ..;2, ..;2]).to_owned();
                let c = sub.dim().1;
                let mut out = Array4::zeros((sub.dim().0, 2 * c, sub.dim().2, sub.dim().3));
                out.slice_mut(s![.., c / 2..c / 2 + c, .., ..]).assign(&sub);
                out
            };
            h = relu4(y + short);
        }
    }
    linear(&global_avg_pool(&h), p, "linear")
}

fn vgg_forward(p: &Params<f64>, x: &Array4<f64>, config: &VggConfig) -> Array2<f64> {
    let mut h = x.clone();
    for i in 0..config.num_conv {
        h = conv2d(&h, &t4(p, &format!("conv{i}.weight")), 1, 1);
        if config.conv_bias {
            let b = t1(p, &format!("conv{i}.bias"));
            for (c, mut plane) in h.axis_iter_mut(Axis(1)).enumerate() {
                plane += b[c];
            }
        }
        if config.batch_norm {
            h = batch_norm(&h, p, &format!("bn{i}"));
        }
        h = relu4(h);
    }
    let mut z = global_avg_pool(&h);
    for j in 0..config.num_linear {
        z = linear(&z, p, &format!("fc{j}"));
        if j + 1 < config.num_linear {
            z.mapv_inplace(|t| t.max(0.0));
        }
    }
    z
}

pub(crate) fn max_abs_diff(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

// ---------------------------------- tests ----------------------------------

/// Tolerance for comparing two f64 forward passes that differ only in summation order: the
/// logits are O(10) here and every sum has at most a few hundred terms, so reordering changes
/// them by at most ~1e-13; 1e-10 leaves a wide margin while catching any wrong permutation
/// (which changes logits by O(1)).
const FUNCTION_TOL: f64 = 1e-10;

#[test]
fn resnet20_permuted_computes_same_function_and_undoes_exactly() {
    for shortcut in [Shortcut::Conv1x1, Shortcut::Padding] {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let params = resnet20_params(4, shortcut, &mut rng);
        let spec = PermutationSpec::resnet20(shortcut);
        let v = spec.validate(&params).unwrap();
        let expected_perms = if shortcut == Shortcut::Conv1x1 {
            9 + 3
        } else {
            9
        };
        assert_eq!(v.perm_sizes.len(), expected_perms);
        assert!(v
            .unmentioned
            .iter()
            .all(|n| n.ends_with("num_batches_tracked")));
        let perms = random_perms(&spec, &params, &mut rng);
        assert!(perms.values().all(|p| !p.is_identity()));
        let permuted = apply_permutations(&spec, &perms, &params).unwrap();
        assert_ne!(permuted, params);
        let x = Array4::from_shape_fn((2, 3, 8, 8), |_| rng.random_range(-1.0..1.0));
        let (y0, y1) = (
            resnet_forward(&params, &x, shortcut),
            resnet_forward(&permuted, &x, shortcut),
        );
        assert!(
            max_abs_diff(&y0, &y1) < FUNCTION_TOL,
            "{shortcut:?}: {}",
            max_abs_diff(&y0, &y1)
        );
        let back = apply_permutations(&spec, &inverse(&perms), &permuted).unwrap();
        assert_eq!(
            back, params,
            "undoing the planted permutation must be bit-exact"
        );
    }
}

#[test]
fn resnet_spec_shares_residual_permutation_within_a_stage() {
    let spec = PermutationSpec::resnet20(Shortcut::Conv1x1);
    let inv = spec.perm_to_axes();
    let users: Vec<&str> = inv["P_res2"].iter().map(|(p, _)| p.as_str()).collect();
    for b in 0..3 {
        assert!(users.contains(&format!("layer2.{b}.conv2.weight").as_str()));
        assert!(users.contains(&format!("layer2.{b}.bn2.running_var").as_str()));
    }
    // Stage 2's residual stream is consumed by stage 3's first block and its shortcut.
    assert!(inv["P_res2"].contains(&("layer3.0.conv1.weight".into(), 1)));
    assert!(inv["P_res2"].contains(&("layer3.0.shortcut.0.weight".into(), 1)));
    assert_eq!(
        inv["P_res3"]
            .iter()
            .filter(|(p, _)| p == "linear.weight")
            .count(),
        1
    );
    assert_eq!(inv["P_layer1.0.inner"].len(), 1 + 4 + 1);
}

#[test]
fn vgg_permuted_computes_same_function_and_undoes_exactly() {
    let configs = [
        VggConfig {
            num_conv: 4,
            num_linear: 2,
            batch_norm: true,
            conv_bias: false,
        },
        VggConfig {
            num_conv: 3,
            num_linear: 3,
            batch_norm: false,
            conv_bias: true,
        },
    ];
    for config in configs {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let widths = [5, 6, 7, 8, 9, 10];
        let params = vgg_params(&config, &widths, &mut rng);
        let spec = PermutationSpec::vgg(&config);
        assert_eq!(
            spec.perm_names().len(),
            config.num_conv + config.num_linear - 1
        );
        let perms = random_perms(&spec, &params, &mut rng);
        let permuted = apply_permutations(&spec, &perms, &params).unwrap();
        let x = Array4::from_shape_fn((3, 3, 6, 6), |_| rng.random_range(-1.0..1.0));
        let d = max_abs_diff(
            &vgg_forward(&params, &x, &config),
            &vgg_forward(&permuted, &x, &config),
        );
        assert!(d < FUNCTION_TOL, "{config:?}: {d}");
        assert_eq!(
            apply_permutations(&spec, &inverse(&perms), &permuted).unwrap(),
            params
        );
    }
}

#[test]
fn inputs_are_not_modified() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let params = resnet20_params(2, Shortcut::Conv1x1, &mut rng);
    let copy = params.clone();
    let spec = PermutationSpec::resnet20(Shortcut::Conv1x1);
    let perms = random_perms(&spec, &params, &mut rng);
    let perms_copy = perms.clone();
    let _ = apply_permutations(&spec, &perms, &params).unwrap();
    assert_eq!(params, copy);
    assert_eq!(perms, perms_copy);
}

fn small_mlp() -> Params<f64> {
    let mut p = Params::new();
    p.insert("layers.0.weight", ArrayD::zeros(IxDyn(&[5, 3])));
    p.insert("layers.0.bias", ArrayD::zeros(IxDyn(&[5])));
    p.insert("layers.1.weight", ArrayD::zeros(IxDyn(&[2, 5])));
    p.insert("layers.1.bias", ArrayD::zeros(IxDyn(&[2])));
    p
}

#[test]
fn validate_reports_missing_parameter() {
    let mut p = small_mlp();
    p.remove("layers.0.bias");
    match PermutationSpec::mlp(2).validate(&p) {
        Err(Error::MissingParam { param, .. }) => assert_eq!(param, "layers.0.bias"),
        other => panic!("expected MissingParam, got {other:?}"),
    }
}

#[test]
fn validate_reports_axis_beyond_rank() {
    let spec = PermutationSpec::mlp(2).with("layers.0.bias", &[None, Some("P_0")]);
    match spec.validate(&small_mlp()) {
        Err(Error::AxisOutOfRange { what, axis, rank }) => {
            assert_eq!((what.as_str(), axis, rank), ("layers.0.bias", 1, 1));
        }
        other => panic!("expected AxisOutOfRange, got {other:?}"),
    }
}

#[test]
fn validate_reports_rank_mismatch() {
    let spec = PermutationSpec::mlp(2).with("layers.1.weight", &[None::<&str>]);
    assert!(matches!(
        spec.validate(&small_mlp()),
        Err(Error::RankMismatch {
            spec_rank: 1,
            rank: 2,
            ..
        })
    ));
}

#[test]
fn validate_reports_inconsistent_sizes() {
    let mut p = small_mlp();
    p.insert("layers.1.weight", ArrayD::zeros(IxDyn(&[2, 4])));
    match PermutationSpec::mlp(2).validate(&p) {
        Err(Error::InconsistentPermutationSize {
            perm,
            first_len,
            second_len,
            ..
        }) => {
            assert_eq!(perm, "P_0");
            assert_eq!(
                (first_len.min(second_len), first_len.max(second_len)),
                (4, 5)
            );
        }
        other => panic!("expected InconsistentPermutationSize, got {other:?}"),
    }
}

#[test]
fn validate_reports_unmentioned_parameters() {
    let mut p = small_mlp();
    p.insert("extra.scale", ArrayD::zeros(IxDyn(&[1])));
    let v = PermutationSpec::mlp(2).validate(&p).unwrap();
    assert_eq!(v.unmentioned, vec!["extra.scale".to_string()]);
    assert_eq!(v.perm_sizes, BTreeMap::from([("P_0".to_string(), 5)]));
}

#[test]
fn apply_permutations_rejects_bad_permutation_sets() {
    let p = small_mlp();
    let spec = PermutationSpec::mlp(2);
    let none = Perms::new();
    assert!(matches!(
        apply_permutations(&spec, &none, &p),
        Err(Error::PermutationName { .. })
    ));
    let wrong_len = Perms::from([("P_0".to_string(), Permutation::identity(4))]);
    assert!(matches!(
        apply_permutations(&spec, &wrong_len, &p),
        Err(Error::PermutationLength {
            perm_len: 4,
            axis_len: 5,
            ..
        })
    ));
    let mut extra = spec.identity_perms(&p).unwrap();
    extra.insert("P_typo".into(), Permutation::identity(5));
    assert!(matches!(
        apply_permutations(&spec, &extra, &p),
        Err(Error::PermutationName { .. })
    ));
}

#[test]
fn chain_with_layer_norm_and_user_names() {
    let spec = PermutationSpec::chain(&[
        ChainLayer {
            kind: LayerKind::Linear,
            weight: "enc.weight".into(),
            bias: None,
            norm: Some((NormKind::LayerNorm, "ln".into())),
        },
        ChainLayer {
            kind: LayerKind::Linear,
            weight: "head.weight".into(),
            bias: Some("head.bias".into()),
            norm: None,
        },
    ]);
    let p0 = Some("P_0".to_string());
    assert_eq!(spec.axes("ln.weight").unwrap(), std::slice::from_ref(&p0));
    assert_eq!(spec.axes("ln.bias").unwrap(), std::slice::from_ref(&p0));
    assert_eq!(spec.axes("head.weight").unwrap(), &[None, p0]);
    assert_eq!(spec.axes("head.bias").unwrap(), &[None]);
    assert!(spec.axes("ln.running_mean").is_none());

    let named =
        PermutationSpec::mlp_with_names(&[("fc1.weight", Some("fc1.bias")), ("fc2.weight", None)]);
    assert_eq!(named.len(), 3);
    assert_eq!(
        named.perm_to_axes()["P_0"],
        vec![
            ("fc1.bias".to_string(), 0),
            ("fc1.weight".into(), 0),
            ("fc2.weight".into(), 1)
        ]
    );
}

#[cfg(feature = "serde")]
#[test]
fn spec_json_round_trip() {
    for spec in [
        PermutationSpec::mlp(4),
        PermutationSpec::vgg(&VggConfig::default()),
        PermutationSpec::resnet20(Shortcut::Conv1x1),
        PermutationSpec::resnet20(Shortcut::Padding),
    ] {
        assert_eq!(PermutationSpec::from_json(&spec.to_json()).unwrap(), spec);
    }
    let hand = r#"{"fc1.weight": ["P_0", null], "fc1.bias": ["P_0"], "fc2.weight": [null, "P_0"]}"#;
    let spec = PermutationSpec::from_json(hand).unwrap();
    assert_eq!(spec.perm_names(), vec!["P_0"]);
    assert!(matches!(
        PermutationSpec::from_json("[1, 2]"),
        Err(Error::InvalidSpec { .. })
    ));
    assert!(matches!(
        PermutationSpec::from_json(r#"{"w": [3]}"#),
        Err(Error::InvalidSpec { .. })
    ));
}
