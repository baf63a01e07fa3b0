//! Builtin specs of torchvision's and the LLFC paper's VGGs and ResNets: every builtin is an
//! exact symmetry of a reference forward pass (`examples/common/cnn.rs`, itself checked here
//! against a direct convolution loop), weight matching recovers planted permutations, layouts
//! read off checkpoints equal the named ones, and the `Unflatten` view round-trips through JSON.

use std::collections::BTreeMap;

use llfc::matching::weight::{weight_matching, WeightMatchingOptions};
use llfc::spec::{
    Block, Builtin, ResNetDepth, ResNetLayout, ResNetNaming, Shortcut, VggDepth, VggLayout,
};
use llfc::{apply_permutations, Error, Params, Permutation, PermutationSpec};
use ndarray::{Array1, Array4, ArrayD, IxDyn};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::cnn;

fn random_tensor(shape: &[usize], rng: &mut ChaCha8Rng) -> ArrayD<f64> {
    ArrayD::from_shape_fn(IxDyn(shape), |_| rng.random_range(-1.0..1.0))
}

/// A weight uniform in `±√(6 / fan_in)` (He): activations keep their scale through ReLU
/// layers, so deep narrow nets neither die nor blow up and an absolute tolerance means something.
fn random_weight(shape: &[usize], rng: &mut ChaCha8Rng) -> ArrayD<f64> {
    let fan_in: usize = shape[1..].iter().product();
    random_tensor(shape, rng) * (6.0 / fan_in as f64).sqrt()
}

/// A small bias, uniform in `±0.1`.
fn random_bias(n: usize, rng: &mut ChaCha8Rng) -> ArrayD<f64> {
    random_tensor(&[n], rng) * 0.1
}

/// BatchNorm with scales in 0.5..1.5 and small shifts, so that ReLU keeps units alive through
/// deep narrow nets (a dead net computes a constant and would pass any symmetry check).
fn add_bn(p: &mut Params<f64>, prefix: &str, c: usize, rng: &mut ChaCha8Rng) {
    for (f, scale, offset) in [
        ("weight", 0.5, 1.0),
        ("bias", 0.1, 0.0),
        ("running_mean", 0.1, 0.0),
        ("running_var", 0.5, 1.0),
    ] {
        let t = random_tensor(&[c], rng).mapv(|v| offset + scale * v);
        p.insert(format!("{prefix}.{f}"), t);
    }
    p.insert(
        format!("{prefix}.num_batches_tracked"),
        ArrayD::from_elem(IxDyn(&[]), 7.0),
    );
}

/// Random parameters of a VGG layout: conv `i` has `6 + i % 3` channels, hidden linears 6, 5
/// classes.
fn vgg_params(layout: &VggLayout, rng: &mut ChaCha8Rng) -> Params<f64> {
    let mut p = Params::new();
    let mut cin = 3;
    for (i, &n) in layout.convs.iter().enumerate() {
        let c = 6 + i % 3;
        p.insert(
            format!("features.{n}.weight"),
            random_weight(&[c, cin, 3, 3], rng),
        );
        if layout.conv_bias {
            p.insert(format!("features.{n}.bias"), random_bias(c, rng));
        }
        if layout.batch_norm {
            add_bn(&mut p, &format!("features.{}", n + 1), c, rng);
        }
        cin = c;
    }
    let mut width = cin * layout.flattened.iter().product::<usize>();
    let last = layout.linears.len() - 1;
    for (j, &m) in layout.linears.iter().enumerate() {
        let out = if j == last { 5 } else { 6 };
        p.insert(
            format!("classifier.{m}.weight"),
            random_weight(&[out, width], rng),
        );
        if layout.linear_bias {
            p.insert(format!("classifier.{m}.bias"), random_bias(out, rng));
        }
        width = out;
    }
    p
}

/// Random parameters of a ResNet layout: stem 3 channels, stage `s` planes `s + 2`
/// (Bottlenecks expand them 4×), 5 classes.
fn resnet_params(layout: &ResNetLayout, rng: &mut ChaCha8Rng) -> Params<f64> {
    let (sc, head) = match layout.naming {
        ResNetNaming::Torchvision => ("downsample", "fc"),
        ResNetNaming::Cifar => ("shortcut", "linear"),
    };
    let mut p = Params::new();
    let k = if layout.naming == ResNetNaming::Torchvision {
        7
    } else {
        3
    };
    let mut cin = 3;
    p.insert("conv1.weight", random_weight(&[cin, 3, k, k], rng));
    add_bn(&mut p, "bn1", cin, rng);
    for (si, &blocks) in layout.blocks.iter().enumerate() {
        let s = si + 1;
        let planes = s + 2;
        let (kernels, out): (&[usize], usize) = match layout.block {
            Block::Basic => (&[3, 3], planes),
            Block::Bottleneck => (&[1, 3, 1], 4 * planes),
        };
        for b in 0..blocks {
            let pre = format!("layer{s}.{b}");
            let mut prev = cin;
            for (i, &kk) in kernels.iter().enumerate() {
                let c = if i + 1 == kernels.len() { out } else { planes };
                p.insert(
                    format!("{pre}.conv{}.weight", i + 1),
                    random_weight(&[c, prev, kk, kk], rng),
                );
                add_bn(&mut p, &format!("{pre}.bn{}", i + 1), c, rng);
                prev = c;
            }
            if layout.shortcuts.contains(&(s, b)) {
                p.insert(
                    format!("{pre}.{sc}.0.weight"),
                    random_weight(&[out, cin, 1, 1], rng),
                );
                add_bn(&mut p, &format!("{pre}.{sc}.1"), out, rng);
            }
            cin = out;
        }
    }
    p.insert(format!("{head}.weight"), random_weight(&[5, cin], rng));
    p.insert(format!("{head}.bias"), random_bias(5, rng));
    p
}

/// Random parameters shaped for a builtin.
pub(crate) fn builtin_params(b: Builtin, rng: &mut ChaCha8Rng) -> Params<f64> {
    match b {
        Builtin::TorchvisionVgg { depth, batch_norm } => {
            vgg_params(&VggLayout::torchvision(depth, batch_norm), rng)
        }
        Builtin::LlfcVgg { depth, batch_norm } => {
            vgg_params(&VggLayout::llfc(depth, batch_norm), rng)
        }
        Builtin::TorchvisionResNet(d) => {
            resnet_params(&ResNetLayout::standard(d, ResNetNaming::Torchvision), rng)
        }
        Builtin::CifarResNet(d) => {
            resnet_params(&ResNetLayout::standard(d, ResNetNaming::Cifar), rng)
        }
        _ => unreachable!("every builtin of this suite is covered"),
    }
}

/// The reference forward of a builtin's model.
fn builtin_forward(b: Builtin, p: &Params<f64>, x: &Array4<f64>) -> llfc::Result<ArrayD<f64>> {
    let out = match b {
        Builtin::TorchvisionVgg { depth, batch_norm } => {
            cnn::vgg_forward(p, &VggLayout::torchvision(depth, batch_norm), x)?
        }
        Builtin::LlfcVgg { depth, batch_norm } => {
            cnn::vgg_forward(p, &VggLayout::llfc(depth, batch_norm), x)?
        }
        Builtin::TorchvisionResNet(d) => {
            cnn::resnet_forward(p, &ResNetLayout::standard(d, ResNetNaming::Torchvision), x)?
        }
        Builtin::CifarResNet(d) => {
            cnn::resnet_forward(p, &ResNetLayout::standard(d, ResNetNaming::Cifar), x)?
        }
        _ => unreachable!("every builtin of this suite is covered"),
    };
    Ok(out.into_dyn())
}

fn image(n: usize, side: usize, rng: &mut ChaCha8Rng) -> Array4<f64> {
    Array4::from_shape_fn((n, 3, side, side), |_| rng.random_range(-1.0..1.0))
}

#[test]
fn conv2d_equals_a_direct_loop() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let x = image(2, 7, &mut rng);
    let w = Array4::from_shape_fn((4, 3, 3, 3), |_| rng.random_range(-1.0..1.0));
    let b = Array1::from_shape_fn(4, |_| rng.random_range(-1.0..1.0));
    for (stride, pad) in [(1, 1), (2, 1), (2, 0), (3, 2)] {
        let y = cnn::conv2d(&x, w.view(), Some(b.view()), stride, pad).unwrap();
        let oh = (7 + 2 * pad - 3) / stride + 1;
        assert_eq!(y.shape(), &[2, 4, oh, oh]);
        for ((n, o, i, j), &v) in y.indexed_iter() {
            let mut want = b[o];
            for c in 0..3 {
                for u in 0..3 {
                    for t in 0..3 {
                        let (r, q) = (
                            (i * stride + u) as isize - pad as isize,
                            (j * stride + t) as isize - pad as isize,
                        );
                        if (0..7).contains(&r) && (0..7).contains(&q) {
                            want += w[[o, c, u, t]] * x[[n, c, r as usize, q as usize]];
                        }
                    }
                }
            }
            // Same terms, summed in another order: a few ulps of the magnitude (≤ 28 terms ≤ 1).
            assert!(
                (v - want).abs() < 1e-12,
                "stride {stride} pad {pad}: {v} vs {want}"
            );
        }
    }
}

#[test]
fn pools_follow_pytorch_windows() {
    let x = Array4::from_shape_fn((1, 1, 5, 5), |(_, _, i, j)| (5 * i + j) as f64);
    // adaptive 5 → 3: row windows [0, 2), [1, 4), [3, 5).
    let a = cnn::adaptive_avg_pool(&x, 3, 3);
    let mean = |r: std::ops::Range<usize>, q: std::ops::Range<usize>| {
        let cells: Vec<f64> = r
            .flat_map(|i| q.clone().map(move |j| (5 * i + j) as f64))
            .collect();
        cells.iter().sum::<f64>() / cells.len() as f64
    };
    assert_eq!(a[[0, 0, 0, 0]], mean(0..2, 0..2));
    assert_eq!(a[[0, 0, 1, 2]], mean(1..4, 3..5));
    // adaptive 1 → 7 replicates, as torchvision's VGG on small inputs.
    let one = Array4::from_elem((1, 2, 1, 1), 3.5);
    assert!(cnn::adaptive_avg_pool(&one, 7, 7).iter().all(|&v| v == 3.5));
    // max-pool 3/2/1 on 5×5: corners see the padded window.
    let m = cnn::max_pool(&x, 3, 2, 1);
    assert_eq!(m.shape(), &[1, 1, 3, 3]);
    assert_eq!(m[[0, 0, 0, 0]], 6.0);
    assert_eq!(m[[0, 0, 2, 2]], 24.0);
}

#[test]
fn every_builtin_is_an_exact_symmetry_of_its_reference_forward() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let x = image(2, 32, &mut rng);
    for b in Builtin::all() {
        let p = builtin_params(b, &mut rng);
        let spec = b.spec_for(&p).unwrap_or_else(|e| panic!("{b}: {e}"));
        let report = spec
            .check_invariance(&p, |p, x| builtin_forward(b, p, x), &x, 1e-10, &mut rng)
            .unwrap();
        assert!(report.passed(), "{b}: {report}");
        // The check is not vacuous: every permutation moved units, the outputs depend on the
        // input, and unpermuting the first vector the spec permutes breaks it, by name.
        assert!(report
            .perms
            .values()
            .all(|p| p != &Permutation::identity(p.len())));
        let y = builtin_forward(b, &p, &x).unwrap();
        let spread = (&y.index_axis(ndarray::Axis(0), 0) - &y.index_axis(ndarray::Axis(0), 1))
            .iter()
            .fold(0.0_f64, |m, d| m.max(d.abs()));
        assert!(spread > 1e-3, "{b}: output does not depend on the input");
        let (param, perm) = spec
            .iter()
            .find_map(|(k, axes)| match axes {
                [Some(p)] => Some((k.to_string(), p.clone())),
                _ => None,
            })
            .unwrap();
        let broken = spec.clone().with(param.as_str(), &[None::<&str>]);
        let report = broken
            .check_invariance(&p, |p, x| builtin_forward(b, p, x), &x, 1e-10, &mut rng)
            .unwrap();
        assert_eq!(
            report.broken(),
            vec![perm.as_str()],
            "{b}: {param} unpermuted"
        );
    }
}

#[test]
fn torchvision_vgg_needs_the_blockwise_view() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let b = Builtin::TorchvisionVgg {
        depth: VggDepth::Vgg11,
        batch_norm: false,
    };
    let p = builtin_params(b, &mut rng);
    let x = image(2, 32, &mut rng);
    // Forgetting the flatten: the last conv's permutation is produced but classifier.0 does not
    // consume it. The check fails and names that permutation alone.
    let mut spec = b.spec();
    spec.insert("classifier.0.weight", &[Some("P_classifier.0"), None]);
    let report = spec
        .check_invariance(&p, |p, x| builtin_forward(b, p, x), &x, 1e-10, &mut rng)
        .unwrap();
    assert!(!report.passed());
    assert_eq!(report.broken(), vec!["P_features.18"]);
    assert!(matches!(
        report.into_result(),
        Err(Error::NotInvariant { broken, .. }) if broken == ["P_features.18"]
    ));
    // The view's blocks are consecutive columns: permuting channel c moves columns c·49 .. c·49+48.
    let perms: BTreeMap<String, Permutation> = b
        .spec()
        .perm_sizes(&p)
        .unwrap()
        .into_iter()
        .map(|(k, n)| (k, Permutation::identity(n)))
        .collect();
    let mut swap = perms.clone();
    let n = swap["P_features.18"].len();
    let mut map: Vec<usize> = (0..n).collect();
    map.swap(0, 1);
    swap.insert("P_features.18".into(), Permutation::new(map).unwrap());
    let q = apply_permutations(&b.spec(), &swap, &p).unwrap();
    let (w, wq) = (&p["classifier.0.weight"], &q["classifier.0.weight"]);
    assert_eq!(w.shape(), wq.shape());
    for k in 0..49 {
        assert_eq!(wq[[2, k]], w[[2, 49 + k]]);
        assert_eq!(wq[[2, 49 + k]], w[[2, k]]);
        assert_eq!(wq[[2, 98 + k]], w[[2, 98 + k]]);
    }
}

#[test]
fn resnet_with_a_wrong_shortcut_permutation_fails_the_check() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let b = Builtin::TorchvisionResNet(ResNetDepth::ResNet50);
    let p = builtin_params(b, &mut rng);
    let x = image(2, 32, &mut rng);
    let mut spec = b.spec();
    // The shortcut writes to the residual stream: giving it its own output permutation breaks
    // the sum with the block's conv3.
    spec.insert(
        "layer2.0.downsample.0.weight",
        &[Some("P_sc"), Some("P_res1"), None, None],
    );
    for f in ["weight", "bias", "running_mean", "running_var"] {
        spec.insert(format!("layer2.0.downsample.1.{f}"), &[Some("P_sc")]);
    }
    let report = spec
        .check_invariance(&p, |p, x| builtin_forward(b, p, x), &x, 1e-10, &mut rng)
        .unwrap();
    assert!(!report.passed());
    let broken = report.broken();
    assert!(
        broken.contains(&"P_sc") && broken.contains(&"P_res2"),
        "{report}"
    );
}

/// A uniformly random permutation for every permutation of the spec.
pub(crate) fn random_perms(
    spec: &PermutationSpec,
    p: &Params<f64>,
    rng: &mut ChaCha8Rng,
) -> BTreeMap<String, Permutation> {
    spec.perm_sizes(p)
        .unwrap()
        .into_iter()
        .map(|(k, n)| (k, Permutation::random(n, rng)))
        .collect()
}

/// Weight matching of a planted permuted copy recovers it exactly.
fn planted_recovery(b: Builtin, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let a = builtin_params(b, &mut rng);
    let spec = b.spec_for(&a).unwrap();
    let planted = random_perms(&spec, &a, &mut rng);
    let moved = planted
        .iter()
        .filter(|(_, p)| **p != Permutation::identity(p.len()))
        .count();
    assert!(
        moved * 2 > planted.len(),
        "{b}: the planted permutations move units"
    );
    let pb = apply_permutations(&spec, &planted, &a).unwrap();
    let m = weight_matching(&spec, &a, &pb, &WeightMatchingOptions::default()).unwrap();
    for (k, p) in &planted {
        assert_eq!(m.perms[k], p.inverse(), "{b}: {k}");
    }
    assert_eq!(apply_permutations(&spec, &m.perms, &pb).unwrap(), a);
}

#[test]
fn weight_matching_recovers_planted_permutations_for_every_family() {
    for (i, b) in [
        Builtin::TorchvisionVgg {
            depth: VggDepth::Vgg11,
            batch_norm: true,
        },
        Builtin::TorchvisionVgg {
            depth: VggDepth::Vgg13,
            batch_norm: false,
        },
        Builtin::LlfcVgg {
            depth: VggDepth::Vgg16,
            batch_norm: true,
        },
        Builtin::TorchvisionResNet(ResNetDepth::ResNet18),
        Builtin::TorchvisionResNet(ResNetDepth::ResNet50),
        Builtin::CifarResNet(ResNetDepth::ResNet34),
        Builtin::CifarResNet(ResNetDepth::ResNet50),
    ]
    .into_iter()
    .enumerate()
    {
        planted_recovery(b, 10 + i as u64);
    }
}

#[test]
fn layouts_read_off_checkpoints_equal_the_named_ones() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for depth in [VggDepth::Vgg11, VggDepth::Vgg19] {
        for bn in [false, true] {
            for layout in [
                VggLayout::torchvision(depth, bn),
                VggLayout::llfc(depth, bn),
            ] {
                let p = vgg_params(&layout, &mut rng);
                assert_eq!(VggLayout::from_params(&p).unwrap(), layout);
            }
        }
    }
    for depth in [
        ResNetDepth::ResNet18,
        ResNetDepth::ResNet34,
        ResNetDepth::ResNet50,
    ] {
        for naming in [ResNetNaming::Torchvision, ResNetNaming::Cifar] {
            let layout = ResNetLayout::standard(depth, naming);
            let p = resnet_params(&layout, &mut rng);
            assert_eq!(ResNetLayout::from_params(&p, naming).unwrap(), layout);
        }
    }
    assert!(matches!(
        VggLayout::from_params(&Params::<f64>::new()),
        Err(Error::InvalidSpec { .. })
    ));
    assert!(matches!(
        ResNetLayout::from_params(&Params::<f64>::new(), ResNetNaming::Cifar),
        Err(Error::InvalidSpec { .. })
    ));
}

#[test]
fn vgg16_indices_match_torchvision() {
    // torchvision's vgg16: convs at 0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28;
    // vgg16_bn: 0, 3, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40.
    assert_eq!(
        VggLayout::torchvision(VggDepth::Vgg16, false).convs,
        [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
    );
    assert_eq!(
        VggLayout::torchvision(VggDepth::Vgg16, true).convs,
        [0, 3, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40]
    );
    let spec = Builtin::TorchvisionVgg {
        depth: VggDepth::Vgg16,
        batch_norm: true,
    }
    .spec();
    assert_eq!(
        spec.axes("features.41.running_var").unwrap(),
        &[Some("P_features.40".to_string())]
    );
    assert_eq!(spec.axes("classifier.6.weight").unwrap()[0], None);
}

#[test]
fn cifar_layout_with_three_stages_is_the_resnet20_spec() {
    let layout = ResNetLayout {
        blocks: vec![3, 3, 3],
        block: Block::Basic,
        naming: ResNetNaming::Cifar,
        shortcuts: vec![(2, 0), (3, 0)],
    };
    assert_eq!(
        PermutationSpec::resnet_layout(&layout),
        PermutationSpec::resnet20(Shortcut::Conv1x1)
    );
}

#[test]
fn builtins_refuse_checkpoints_of_other_models() {
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let vgg11 = Builtin::TorchvisionVgg {
        depth: VggDepth::Vgg11,
        batch_norm: false,
    };
    let p = builtin_params(vgg11, &mut rng);
    // vgg13 names convs vgg11 lacks.
    let vgg13 = Builtin::TorchvisionVgg {
        depth: VggDepth::Vgg13,
        batch_norm: false,
    };
    assert!(matches!(
        vgg13.spec_for(&p),
        Err(Error::MissingParam { .. })
    ));
    // An extra tensor the builtin does not know would be left unpermuted: refused, by name.
    let mut extra = p.clone();
    extra.insert("features.30.weight", random_tensor(&[2, 2, 3, 3], &mut rng));
    match vgg11.spec_for(&extra) {
        Err(Error::InvalidSpec { reason }) => assert!(reason.contains("features.30.weight")),
        other => panic!("expected InvalidSpec, got {other:?}"),
    }
    // The LLFC VGG's classifier.0 is [4096, 512]: torchvision's 7×7 view does not divide it.
    let llfc = builtin_params(
        Builtin::LlfcVgg {
            depth: VggDepth::Vgg11,
            batch_norm: false,
        },
        &mut rng,
    );
    assert!(matches!(
        vgg11.spec_for(&llfc),
        Err(Error::InvalidSpec { .. })
    ));
}

#[cfg(feature = "serde")]
#[test]
fn unflatten_round_trips_through_json_and_old_specs_read_unchanged() {
    let spec = Builtin::TorchvisionVgg {
        depth: VggDepth::Vgg11,
        batch_norm: true,
    }
    .spec();
    let json = spec.to_json();
    assert!(json.contains("\"unflatten\""));
    assert_eq!(PermutationSpec::from_json(&json).unwrap(), spec);
    let old = r#"{"layers.0.weight": ["P_0", null], "layers.0.bias": ["P_0"], "layers.1.weight": [null, "P_0"]}"#;
    let parsed = PermutationSpec::from_json(old).unwrap();
    let mut want = PermutationSpec::new();
    want.insert("layers.0.weight", &[Some("P_0"), None]);
    want.insert("layers.0.bias", &[Some("P_0")]);
    want.insert("layers.1.weight", &[None, Some("P_0")]);
    assert_eq!(parsed, want);
    assert!(parsed.unflatten("layers.1.weight").is_none());
    let viewed =
        r#"{"fc.weight": {"axes": [null, "P", null], "unflatten": {"axis": 1, "inner": [4]}}}"#;
    let parsed = PermutationSpec::from_json(viewed).unwrap();
    assert_eq!(
        parsed.unflatten("fc.weight"),
        Some(&llfc::spec::Unflatten {
            axis: 1,
            inner: vec![4]
        })
    );
    assert!(PermutationSpec::from_json(r#"{"fc.weight": {"axes": [null], "view": [1]}}"#).is_err());
}
