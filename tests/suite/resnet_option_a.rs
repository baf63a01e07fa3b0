//! Option-A (zero-padding) CIFAR ResNets: the builtin spec is an exact symmetry of a reference
//! forward written here (three BatchNorm variants), and weight matching recovers a planted
//! permutation of every residual stream, which the inner-permutations-only spec cannot.

use llfc::matching::weight::{weight_matching, WeightMatchingOptions};
use llfc::spec::{BatchNormParams, Shortcut};
use llfc::{apply_permutations, Params, PermutationSpec};
use ndarray::{s, Array2, Array4, Axis};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::spec::{conv2d, global_avg_pool, linear, max_abs_diff, random_tensor, relu4, t1, t4};

fn add_bn(p: &mut Params<f64>, prefix: &str, c: usize, bn: BatchNormParams, rng: &mut ChaCha8Rng) {
    if bn == BatchNormParams::Full {
        p.insert(format!("{prefix}.weight"), random_tensor(&[c], rng));
        p.insert(format!("{prefix}.bias"), random_tensor(&[c], rng));
    }
    if bn != BatchNormParams::None {
        p.insert(format!("{prefix}.running_mean"), random_tensor(&[c], rng));
        let var = random_tensor(&[c], rng).mapv(|v| 0.5 + v.abs());
        p.insert(format!("{prefix}.running_var"), var);
    }
}

/// ResNet-6n+2 parameters with base width `w` (stages w, 2w, 4w), no shortcut parameters.
fn params(w: usize, blocks: usize, bn: BatchNormParams, rng: &mut ChaCha8Rng) -> Params<f64> {
    let mut p = Params::new();
    p.insert("conv1.weight", random_tensor(&[w, 3, 3, 3], rng));
    add_bn(&mut p, "bn1", w, bn, rng);
    let mut cin = w;
    for s in 1..=3 {
        let c = w << (s - 1);
        for b in 0..blocks {
            let pre = format!("layer{s}.{b}");
            p.insert(
                format!("{pre}.conv1.weight"),
                random_tensor(&[c, cin, 3, 3], rng),
            );
            add_bn(&mut p, &format!("{pre}.bn1"), c, bn, rng);
            p.insert(
                format!("{pre}.conv2.weight"),
                random_tensor(&[c, c, 3, 3], rng),
            );
            add_bn(&mut p, &format!("{pre}.bn2"), c, bn, rng);
            cin = c;
        }
    }
    p.insert("linear.weight", random_tensor(&[3, 4 * w], rng));
    p.insert("linear.bias", random_tensor(&[3], rng));
    p
}

/// BatchNorm in evaluation mode (running statistics, affine if present), or with the batch's
/// own statistics when the checkpoint has none.
fn batch_norm(x: &Array4<f64>, p: &Params<f64>, prefix: &str) -> Array4<f64> {
    let c = x.dim().1;
    let (mean, var) = if p.contains(&format!("{prefix}.running_mean")) {
        (
            t1(p, &format!("{prefix}.running_mean")),
            t1(p, &format!("{prefix}.running_var")),
        )
    } else {
        let m = x
            .mean_axis(Axis(0))
            .unwrap()
            .mean_axis(Axis(1))
            .unwrap()
            .mean_axis(Axis(1))
            .unwrap();
        let v = (0..c)
            .map(|k| {
                x.index_axis(Axis(1), k)
                    .mapv(|t| (t - m[k]).powi(2))
                    .mean()
                    .unwrap()
            })
            .collect();
        (m, v)
    };
    let affine = p.contains(&format!("{prefix}.weight"));
    let mut y = x.clone();
    for (k, mut plane) in y.axis_iter_mut(Axis(1)).enumerate() {
        let (g, b) = if affine {
            (
                t1(p, &format!("{prefix}.weight"))[k],
                t1(p, &format!("{prefix}.bias"))[k],
            )
        } else {
            (1.0, 0.0)
        };
        let scale = g / (var[k] + 1e-5).sqrt();
        plane.mapv_inplace(|t| (t - mean[k]) * scale + b);
    }
    y
}

fn forward(p: &Params<f64>, x: &Array4<f64>, blocks: usize) -> Array2<f64> {
    let mut h = relu4(batch_norm(
        &conv2d(x, &t4(p, "conv1.weight"), 1, 1),
        p,
        "bn1",
    ));
    for s in 1..=3 {
        for b in 0..blocks {
            let pre = format!("layer{s}.{b}");
            let stride = if s > 1 && b == 0 { 2 } else { 1 };
            let y = conv2d(&h, &t4(p, &format!("{pre}.conv1.weight")), stride, 1);
            let y = relu4(batch_norm(&y, p, &format!("{pre}.bn1")));
            let y = conv2d(&y, &t4(p, &format!("{pre}.conv2.weight")), 1, 1);
            let y = batch_norm(&y, p, &format!("{pre}.bn2"));
            let short = if stride == 1 {
                h.clone()
            } else {
                // F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4))
                let sub = h.slice(s![.., .., ..;2, ..;2]).to_owned();
                let (n, c, hh, ww) = sub.dim();
                let planes = 2 * c;
                let mut out = Array4::zeros((n, planes, hh, ww));
                out.slice_mut(s![.., planes / 4..planes / 4 + c, .., ..])
                    .assign(&sub);
                out
            };
            h = relu4(y + short);
        }
    }
    linear(&global_avg_pool(&h), p, "linear")
}

#[test]
fn option_a_spec_is_an_exact_symmetry() {
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let x = Array4::from_shape_fn((2, 3, 8, 8), |(a, b, c, d)| {
        ((a + 2 * b + 3 * c + 5 * d) as f64 * 0.37).sin()
    });
    for bn in [
        BatchNormParams::Full,
        BatchNormParams::RunningStatsOnly,
        BatchNormParams::None,
    ] {
        let p = params(4, 2, bn, &mut rng);
        let spec = PermutationSpec::resnet_cifar_option_a(&[2, 2, 2], 4, bn);
        let v = spec.validate(&p).unwrap();
        assert!(v.unmentioned.is_empty(), "{:?}", v.unmentioned);
        let perms = spec.random_perms(&p, &mut rng).unwrap();
        // Every residual stream really moves (the planted test below relies on it).
        assert!(perms["P_res3"]
            .as_slice()
            .iter()
            .enumerate()
            .any(|(i, &j)| i != j));
        let q = apply_permutations(&spec, &perms, &p).unwrap();
        let (y, z) = (forward(&p, &x, 2), forward(&q, &x, 2));
        let scale = y.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(max_abs_diff(&y, &z) <= 1e-10 * scale.max(1.0), "{bn:?}");
        // A residual permutation that moves a padded channel into the embedded block is not
        // a symmetry: the check must see it.
        let mut broken = perms.clone();
        let n = broken["P_res2"].len();
        let mut v: Vec<usize> = (0..n).collect();
        v.swap(0, n / 2);
        broken.insert("P_res2".into(), llfc::Permutation::new(v).unwrap());
        assert!(apply_permutations(&spec, &broken, &p).is_err());
    }
}

#[test]
fn planted_option_a_resnet20_is_recovered_where_inner_only_cannot() {
    let mut rng = ChaCha8Rng::seed_from_u64(22);
    let bn = BatchNormParams::Full;
    let a = params(4, 3, bn, &mut rng);
    let spec = PermutationSpec::resnet20_option_a(4, bn);
    let planted = spec.random_perms(&a, &mut rng).unwrap();
    let b = apply_permutations(&spec, &planted, &a).unwrap();
    let m = weight_matching(&spec, &a, &b, &WeightMatchingOptions::default()).unwrap();
    assert_eq!(apply_permutations(&spec, &m.perms, &b).unwrap(), a);
    // The inner permutations only (today's option-A spec) leave the residual streams where
    // the planted permutation put them: B stays far from A.
    let inner = PermutationSpec::resnet20(Shortcut::Padding);
    let mi = weight_matching(&inner, &a, &b, &WeightMatchingOptions::default()).unwrap();
    let back = apply_permutations(&inner, &mi.perms, &b).unwrap();
    let (d, norm) = (a.distance(&back).unwrap(), a.norm_sq().sqrt());
    assert!(d > 0.5 * norm, "inner-only distance {d} vs |A| {norm}");
    assert!(mi.objective < m.objective - 0.1 * a.norm_sq());
}
