//! LLFC error attribution (`llfc::metrics::attribution`) and the commutativity of convolutional
//! layers, through the public API.
//!
//! Independent references written here: the interpolated forward pass and the secant-linearised
//! recursion, one source at a time on the full batch with ndarray's `dot` (the library works on
//! blocks of samples, stacks every source in one GEMM and accumulates sums only); a 1-2-1 net
//! whose contributions are computed by hand; and every convolution as an explicit
//! `[out·oh·ow, in·h·w]` matrix built from PyTorch's definition (the library uses im2col).
//!
//! Tolerances. Everything is f64 with O(1) entries and at most 120 terms per product, so any
//! two orders of summation differ by ≤ ~1e-14 of the feature scale `‖Z_lin‖`. Norms and inner
//! products of contributions are compared with `1e-12 · ‖Z_lin‖` (times `‖Δ‖ + ‖c‖` for inner
//! products); the identity's closure `‖Σ c − Δ‖ / ‖Δ‖` with `1e-12` (the requirement)
//! wherever `‖Δ‖ / ‖Z_lin‖ > 1e-6` — below that, `Δ` is dominated by the rounding of its direct
//! computation (e.g. layer 0, whose exact deviation is 0).

use llfc::matching::weight::{weight_matching, WeightMatchingOptions};
use llfc::metrics::attribution::{
    attribution_dense, attribution_mlp, local_split_activation, local_split_conv,
    local_split_dense, Activation, AttributionOptions, ConvLayer, DenseLayer, Deviation, Source,
};
use llfc::metrics::{conv2d, conv_commutativity, ConvGeometry};
use llfc::mlp::{self, FeatureKind};
use llfc::{apply_permutations, Error, Params, Permutation, PermutationSpec};
use ndarray::{Array1, Array2, Array4, ArrayView2, Ix1, Ix2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

type TestResult = Result<(), Error>;

fn random(shape: (usize, usize), seed: u64) -> Array2<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Array2::from_shape_simple_fn(shape, || rng.random::<f64>() * 2.0 - 1.0)
}

fn relu(z: &Array2<f64>) -> Array2<f64> {
    z.mapv(|v| v.max(0.0))
}

fn norm(a: &Array2<f64>) -> f64 {
    a.iter().map(|v| v * v).sum::<f64>().sqrt()
}

fn inner(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// A dense layer as owned `(W, b)`.
type Layer = (Array2<f64>, Array1<f64>);

fn views(layers: &[Layer]) -> Vec<DenseLayer<'_, f64>> {
    layers
        .iter()
        .map(|(w, b)| DenseLayer {
            weight: w.view(),
            bias: Some(b.view()),
        })
        .collect()
}

fn mlp_layers(p: &Params<f64>) -> Vec<Layer> {
    (0..mlp::num_layers(p).unwrap())
        .map(|l| {
            let w = p[&mlp::weight_name(l)].clone().into_dimensionality::<Ix2>();
            let b = p[&mlp::bias_name(l)].clone().into_dimensionality::<Ix1>();
            (w.unwrap(), b.unwrap())
        })
        .collect()
}

/// The brute-force attribution of one α: for each layer, the direct `(ΔZ, Z_lin)`,
/// `(ΔH, H_lin)` and every source's contribution to both, each source transported alone.
struct Brute {
    pre: Vec<BruteDeviation>,
    post: Vec<BruteDeviation>,
}

/// `(Δ, reference, [(source, contribution)])` of one layer.
type BruteDeviation = (Array2<f64>, Array2<f64>, Vec<(Source, Array2<f64>)>);

fn secant(zl: f64, za: f64) -> f64 {
    if za == zl {
        f64::from(u8::from(zl > 0.0))
    } else {
        (za.max(0.0) - zl.max(0.0)) / (za - zl)
    }
}

fn brute(a: &[Layer], b: &[Layer], relus: &[bool], x: &Array2<f64>, alpha: f64) -> Brute {
    let beta = 1.0 - alpha;
    let theta: Vec<Layer> = a
        .iter()
        .zip(b)
        .map(|((wa, ba), (wb, bb))| (wa * alpha + wb * beta, ba * alpha + bb * beta))
        .collect();
    let run = |net: &[Layer]| {
        let (mut z, mut h) = (Vec::new(), Vec::new());
        let mut input = x.clone();
        for (l, (w, bias)) in net.iter().enumerate() {
            let zl = input.dot(&w.t()) + bias;
            input = if relus[l] { relu(&zl) } else { zl.clone() };
            z.push(zl);
            h.push(input.clone());
        }
        (z, h)
    };
    let ((za, ha), (zb, hb), (zt, ht)) = (run(a), run(b), run(&theta));
    let n = a.len();
    let z_lin: Vec<Array2<f64>> = (0..n).map(|l| &za[l] * alpha + &zb[l] * beta).collect();
    let h_lin: Vec<Array2<f64>> = (0..n).map(|l| &ha[l] * alpha + &hb[l] * beta).collect();
    let slope: Vec<Array2<f64>> = (0..n)
        .map(|l| {
            if relus[l] {
                ndarray::Zip::from(&z_lin[l])
                    .and(&zt[l])
                    .map_collect(|&p, &q| secant(p, q))
            } else {
                Array2::ones(zt[l].dim())
            }
        })
        .collect();
    let mut out = Brute {
        pre: Vec::new(),
        post: Vec::new(),
    };
    for l in 0..n {
        out.pre
            .push((&zt[l] - &z_lin[l], z_lin[l].clone(), Vec::new()));
        out.post
            .push((&ht[l] - &h_lin[l], h_lin[l].clone(), Vec::new()));
    }
    for k in 0..n {
        // K^k: enters ΔZ^k.
        let (in_a, in_b) = if k == 0 {
            (x.clone(), x.clone())
        } else {
            (ha[k - 1].clone(), hb[k - 1].clone())
        };
        let c = (&in_a - &in_b).dot(&(&a[k].0 - &b[k].0).t()) * (-alpha * beta);
        let mut sources = vec![(Source::Commutativity { layer: k }, c, true)];
        if relus[k] {
            let e = relu(&z_lin[k]) - &relu(&za[k]) * alpha - &relu(&zb[k]) * beta;
            sources.push((Source::WeakAdditivity { layer: k }, e, false));
        }
        for (source, c, at_pre) in sources {
            let mut c = c;
            if at_pre {
                out.pre[k].2.push((source, c.clone()));
                c = &c * &slope[k];
            }
            out.post[k].2.push((source, c.clone()));
            for m in k + 1..n {
                c = c.dot(&theta[m].0.t());
                out.pre[m].2.push((source, c.clone()));
                c = &c * &slope[m];
                out.post[m].2.push((source, c.clone()));
            }
        }
    }
    out
}

/// Compare the library's deviation with the brute force's.
fn compare(got: &Deviation, (delta, reference, parts): &BruteDeviation, what: &str) {
    let (nd, nr) = (norm(delta), norm(reference));
    let tol = 1e-12 * nr.max(1.0);
    assert!(
        (got.norm - nd).abs() <= tol,
        "{what}: ‖Δ‖ {} vs {nd}",
        got.norm
    );
    assert!((got.reference_norm - nr).abs() <= tol, "{what}: reference");
    assert_eq!(got.contributions.len(), parts.len(), "{what}: sources");
    let mut sum = Array2::<f64>::zeros(delta.dim());
    for (source, c) in parts {
        let part = got.contribution(*source).expect("source reported");
        assert!((part.norm - norm(c)).abs() <= tol, "{what}: ‖{source}‖");
        let want = inner(c, delta);
        assert!(
            (part.inner - want).abs() <= tol * (nd + norm(c)),
            "{what}: ⟨{source}, Δ⟩ {} vs {want}",
            part.inner
        );
        sum += c;
    }
    if nd > 1e-6 * nr {
        // The identity, in the test's own arithmetic, and the library's closure and shares.
        assert!(norm(&(&sum - delta)) <= 1e-12 * nd, "{what}: Σ c ≠ Δ");
        assert!(
            got.closure.unwrap() <= 1e-12,
            "{what}: closure {:?}",
            got.closure
        );
        let shares: f64 = got
            .contributions
            .iter()
            .map(|c| c.part.share.unwrap())
            .sum();
        assert!(
            (shares - 1.0).abs() <= 1e-12,
            "{what}: shares sum to {shares}"
        );
    }
}

#[test]
fn contributions_match_the_brute_force_recursion_and_add_up_to_the_deviation() -> TestResult {
    let alphas = [0.25, 0.5, 0.7, 1.2];
    for (case, widths) in [
        vec![5, 7, 3],
        vec![4, 16, 16, 16, 5],
        vec![6, 32, 2],
        vec![3, 8, 8, 8, 8, 8, 4],
    ]
    .into_iter()
    .enumerate()
    {
        let seed = 10 * case as u64;
        let a = mlp::init::<f64, _>(&widths, &mut ChaCha8Rng::seed_from_u64(seed))?;
        let b = mlp::init::<f64, _>(&widths, &mut ChaCha8Rng::seed_from_u64(seed + 1))?;
        let x = random((37, widths[0]), seed + 2) * 2.0;
        let att = attribution_mlp(&a, &b, &x, &alphas)?;
        let layers = widths.len() - 1;
        let relus: Vec<bool> = (0..layers).map(|l| l + 1 < layers).collect();
        assert_eq!(att.samples, 37);
        assert_eq!(att.sources.len(), 2 * layers - 1);
        for (i, &alpha) in alphas.iter().enumerate() {
            let want = brute(&mlp_layers(&a), &mlp_layers(&b), &relus, &x, alpha);
            for l in 0..layers {
                let got = &att.layers[i][l];
                assert_eq!((got.layer, got.alpha), (l, alpha));
                let what = format!("{widths:?} α = {alpha} layer {l}");
                compare(&got.pre, &want.pre[l], &format!("{what} pre"));
                compare(&got.post, &want.post[l], &format!("{what} post"));
            }
            // The logits really deviate (the test is not vacuous).
            assert!(att.layers[i][layers - 1].pre.relative.unwrap() > 1e-3 || layers == 1);
        }
    }
    Ok(())
}

#[test]
fn general_chains_with_and_without_biases_match_the_brute_force() -> TestResult {
    // ReLU at the end too, an identity in the middle; no biases in the second chain.
    let widths = [4, 9, 6, 5];
    let acts = [Activation::Relu, Activation::Identity, Activation::Relu];
    let relus = [true, false, true];
    let layers = |seed: u64| -> Vec<Layer> {
        widths
            .windows(2)
            .enumerate()
            .map(|(l, p)| {
                let s = seed + l as u64;
                (
                    random((p[1], p[0]), s),
                    random((1, p[1]), s + 50).row(0).to_owned(),
                )
            })
            .collect()
    };
    let (a, b) = (layers(1), layers(2));
    let x = random((23, 4), 3);
    let opts = AttributionOptions { chunk_size: 5 };
    let att = attribution_dense(&views(&a), &views(&b), &acts, &x, &[0.4], &opts)?;
    assert_eq!(
        att.sources,
        [
            Source::Commutativity { layer: 0 },
            Source::WeakAdditivity { layer: 0 },
            Source::Commutativity { layer: 1 },
            Source::Commutativity { layer: 2 },
            Source::WeakAdditivity { layer: 2 },
        ]
    );
    let want = brute(&a, &b, &relus, &x, 0.4);
    for l in 0..3 {
        compare(&att.layers[0][l].pre, &want.pre[l], "pre");
        compare(&att.layers[0][l].post, &want.post[l], "post");
    }
    // Without biases: the brute force with zero biases.
    let strip = |n: &[Layer]| -> Vec<Layer> {
        n.iter()
            .map(|(w, b)| (w.clone(), Array1::zeros(b.len())))
            .collect()
    };
    let att = attribution_dense(&no_bias(&a), &no_bias(&b), &acts, &x, &[0.4], &opts)?;
    let want = brute(&strip(&a), &strip(&b), &relus, &x, 0.4);
    for l in 0..3 {
        compare(&att.layers[0][l].pre, &want.pre[l], "pre, no bias");
    }
    Ok(())
}

#[test]
fn a_tiny_net_has_the_contributions_computed_by_hand() -> TestResult {
    // 1-2-1, no biases, α = ¼ (every number below is a binary fraction, so exact):
    // Z_A⁰ = [1, −1], Z_B⁰ = [−1, 1] → H_A⁰ = [1, 0], H_B⁰ = [0, 1];
    // Z_lin⁰ = Z_α⁰ = [−½, ½] (ΔZ⁰ = 0), H_α⁰ = [0, ½], H_lin⁰ = [¼, ¾], E⁰ = [−¼, −¼].
    // W_α¹ = ¼ [1, 1] + ¾ [2, −1] = [7/4, −½]: T(E⁰) = −7/16 + 1/8 = −5/16;
    // K¹ = −(3/16) (H_A⁰ − H_B⁰)(W_A¹ − W_B¹)ᵀ = −(3/16)([1, −1]·[−1, 2]) = 9/16;
    // ΔZ¹ = 1/4 (= Z_α¹ − Z_lin¹ = −¼ − (−½)); shares (−5/16)(¼)/(1/16) = −5/4 and 9/4.
    let a = [
        (ndarray::arr2(&[[1.0], [-1.0]]), Array1::zeros(2)),
        (ndarray::arr2(&[[1.0, 1.0]]), Array1::zeros(1)),
    ];
    let b = [
        (ndarray::arr2(&[[-1.0], [1.0]]), Array1::zeros(2)),
        (ndarray::arr2(&[[2.0, -1.0]]), Array1::zeros(1)),
    ];
    let acts = [Activation::Relu, Activation::Identity];
    let x = ndarray::arr2(&[[1.0]]);
    let att = attribution_dense(
        &views(&a),
        &views(&b),
        &acts,
        &x,
        &[0.25],
        &Default::default(),
    )?;
    let (hidden, logits) = (&att.layers[0][0], &att.layers[0][1]);
    assert_eq!((hidden.pre.norm, hidden.pre.closure), (0.0, None));
    let e0 = Source::WeakAdditivity { layer: 0 };
    let k1 = Source::Commutativity { layer: 1 };
    let k0 = Source::Commutativity { layer: 0 };
    assert_eq!(hidden.post.norm, 0.125f64.sqrt());
    assert_eq!(hidden.post.contribution(e0).unwrap().share, Some(1.0));
    assert_eq!(hidden.post.contribution(k0).unwrap().norm, 0.0);
    assert_eq!((logits.pre.norm, logits.pre.reference_norm), (0.25, 0.5));
    assert_eq!(logits.pre.relative, Some(0.5));
    let (pe, pk) = (
        logits.pre.contribution(e0).unwrap(),
        logits.pre.contribution(k1).unwrap(),
    );
    assert_eq!(
        (pe.norm, pe.inner, pe.share),
        (5.0 / 16.0, -5.0 / 64.0, Some(-1.25))
    );
    assert_eq!(
        (pk.norm, pk.inner, pk.share),
        (9.0 / 16.0, 9.0 / 64.0, Some(2.25))
    );
    assert_eq!(logits.pre.closure, Some(0.0));
    assert_eq!(logits.post, logits.pre);
    Ok(())
}

#[test]
fn deviations_vanish_where_the_theory_says_so() -> TestResult {
    let widths = [5, 12, 12, 4];
    let a = mlp::init::<f64, _>(&widths, &mut ChaCha8Rng::seed_from_u64(1))?;
    let b = mlp::init::<f64, _>(&widths, &mut ChaCha8Rng::seed_from_u64(2))?;
    let x = random((30, 5), 3);
    // α ∈ {0, 1}: θ(α) is an endpoint exactly, every source and deviation is exactly 0.
    let att = attribution_mlp(&a, &b, &x, &[0.0, 1.0, 0.5])?;
    for row in &att.layers[..2] {
        for layer in row {
            for d in [&layer.pre, &layer.post] {
                assert_eq!((d.norm, d.relative, d.closure), (0.0, Some(0.0), None));
                assert!(d.contributions.iter().all(|c| c.part.norm == 0.0));
            }
        }
    }
    // K⁰ = 0: both models read the same input, at every layer and α.
    for row in &att.layers {
        for layer in row {
            let k0 = layer
                .pre
                .contribution(Source::Commutativity { layer: 0 })
                .unwrap();
            assert_eq!((k0.norm, k0.inner), (0.0, 0.0));
        }
    }
    // B a permuted copy of A, undone by weight matching: no commutativity source at all, and
    // every deviation is rounding (θ(α) = αθ_A + (1−α)θ_A is θ_A up to one rounding).
    let spec = PermutationSpec::mlp(3);
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let perms = spec
        .perm_sizes(&a)?
        .into_iter()
        .map(|(name, n)| (name, Permutation::random(n, &mut rng)))
        .collect();
    let permuted = apply_permutations(&spec, &perms, &a)?;
    let matching = weight_matching(&spec, &a, &permuted, &WeightMatchingOptions::default())?;
    let matched = apply_permutations(&spec, &matching.perms, &permuted)?;
    let att = attribution_mlp(&a, &matched, &x, &[0.3, 0.5])?;
    for row in &att.layers {
        for layer in row {
            for d in [&layer.pre, &layer.post] {
                assert!(d.relative.unwrap() < 1e-14, "{:?}", d.relative);
                for c in &d.contributions {
                    if matches!(c.source, Source::Commutativity { .. }) {
                        assert_eq!(c.part.norm, 0.0);
                    } else {
                        assert!(c.part.norm <= 1e-14 * d.reference_norm);
                    }
                }
            }
        }
    }
    // The unmatched permuted copy is a different network on the path: it does deviate.
    let att = attribution_mlp(&a, &permuted, &x, &[0.5])?;
    assert!(att.layers[0][2].pre.relative.unwrap() > 1e-2);
    // No ReLU: no weak-additivity source, and the commutativity sources alone add up.
    let chain = mlp_layers(&a);
    let other = mlp_layers(&b);
    let acts = [Activation::Identity; 3];
    let att = attribution_dense(
        &views(&chain),
        &views(&other),
        &acts,
        &x,
        &[0.5],
        &Default::default(),
    )?;
    assert!(att
        .sources
        .iter()
        .all(|s| matches!(s, Source::Commutativity { .. })));
    let want = brute(&chain, &other, &[false; 3], &x, 0.5);
    for l in 0..3 {
        compare(&att.layers[0][l].pre, &want.pre[l], "linear net");
        assert_eq!(att.layers[0][l].post, att.layers[0][l].pre);
    }
    Ok(())
}

#[test]
fn results_do_not_depend_on_blocks_threads_or_precision() -> TestResult {
    let widths = [6, 20, 20, 3];
    let a = mlp::init::<f32, _>(&widths, &mut ChaCha8Rng::seed_from_u64(5))?;
    let b = mlp::init::<f32, _>(&widths, &mut ChaCha8Rng::seed_from_u64(6))?;
    let x = random((50, 6), 7).mapv(|v| v as f32);
    let alphas = [0.3, 0.6];
    let base = attribution_mlp(&a, &b, &x, &alphas)?;
    // f32 in: converted exactly, so the f64 computation on the cast parameters is identical.
    let wide = attribution_mlp(
        &a.cast::<f64>(),
        &b.cast::<f64>(),
        &x.mapv(f64::from),
        &alphas,
    )?;
    assert_eq!(base, wide);
    // The thread count changes nothing (same blocks, sums added in block order).
    for threads in [1, 3] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let again = pool.install(|| attribution_mlp(&a, &b, &x, &alphas))?;
        assert_eq!(base, again, "{threads} threads");
    }
    // Other block sizes only reorder f64 additions.
    let (la, lb) = (mlp_layers(&a.cast()), mlp_layers(&b.cast()));
    let acts = [Activation::Relu, Activation::Relu, Activation::Identity];
    for chunk_size in [1, 7, 1000] {
        let opts = AttributionOptions { chunk_size };
        let other = attribution_dense(
            &views(&la),
            &views(&lb),
            &acts,
            &x.mapv(f64::from),
            &alphas,
            &opts,
        )?;
        for (r0, r1) in base
            .layers
            .iter()
            .flatten()
            .zip(other.layers.iter().flatten())
        {
            assert!((r0.pre.norm - r1.pre.norm).abs() <= 1e-12 * r0.pre.reference_norm);
            for (c0, c1) in r0.post.contributions.iter().zip(&r1.post.contributions) {
                assert!(
                    (c0.part.inner - c1.part.inner).abs() <= 1e-12 * r0.post.reference_norm.powi(2)
                );
            }
        }
    }
    Ok(())
}

#[test]
fn local_splits_agree_with_the_chain() -> TestResult {
    let widths = [5, 16, 16, 3];
    let a = mlp::init::<f64, _>(&widths, &mut ChaCha8Rng::seed_from_u64(8))?;
    let b = mlp::init::<f64, _>(&widths, &mut ChaCha8Rng::seed_from_u64(9))?;
    let x = random((300, 5), 10);
    let alpha = 0.35;
    let att = attribution_mlp(&a, &b, &x, &[alpha])?;
    let theta = a.interpolate(&b, alpha)?;
    let (fa, fb, ft) = (
        mlp::forward_features(&a, &x)?,
        mlp::forward_features(&b, &x)?,
        mlp::forward_features(&theta, &x)?,
    );
    let (la, lb) = (mlp_layers(&a), mlp_layers(&b));
    for l in 0..3 {
        fn input<'f>(
            x: &'f Array2<f64>,
            f: &'f mlp::Features<f64>,
            l: usize,
        ) -> ArrayView2<'f, f64> {
            if l == 0 {
                x.view()
            } else {
                f.get(l - 1, FeatureKind::Post).unwrap().view()
            }
        }
        fn v(n: &[Layer], l: usize) -> DenseLayer<'_, f64> {
            DenseLayer {
                weight: n[l].0.view(),
                bias: Some(n[l].1.view()),
            }
        }
        let split = local_split_dense(
            v(&la, l),
            v(&lb, l),
            input(&x, &fa, l),
            input(&x, &fb, l),
            input(&x, &ft, l),
            alpha,
        )?;
        let chain = &att.layers[0][l].pre;
        let own = chain
            .contribution(Source::Commutativity { layer: l })
            .unwrap();
        let tol = 1e-12 * chain.reference_norm;
        assert!((split.norm - chain.norm).abs() <= tol);
        assert!((split.reference_norm - chain.reference_norm).abs() <= tol);
        assert!((split.own.norm - own.norm).abs() <= tol);
        assert!((split.own.inner - own.inner).abs() <= tol * (chain.norm + own.norm));
        let propagated: f64 = chain
            .contributions
            .iter()
            .filter(|c| c.source != Source::Commutativity { layer: l })
            .map(|c| c.part.inner)
            .sum();
        assert!((split.propagated.inner - propagated).abs() <= tol * chain.norm * 4.0);
        if l > 0 {
            assert!(split.closure.unwrap() <= 1e-12);
        }
        if l < 2 {
            // The activation's split from the pre-activations alone.
            let pre = |f: &mlp::Features<f64>| f.get(l, FeatureKind::Pre).unwrap().clone();
            let act = local_split_activation(&pre(&fa), &pre(&fb), &pre(&ft), alpha)?;
            let post = &att.layers[0][l].post;
            let e = post
                .contribution(Source::WeakAdditivity { layer: l })
                .unwrap();
            assert!((act.norm - post.norm).abs() <= tol);
            assert!((act.own.norm - e.norm).abs() <= tol);
            assert!((act.own.inner - e.inner).abs() <= tol * (post.norm + e.norm));
            assert!(act.closure.unwrap() <= 1e-12);
        }
    }
    Ok(())
}

fn shape<T: std::fmt::Debug>(r: Result<T, Error>) {
    assert!(matches!(r, Err(Error::ShapeMismatch { .. })), "{r:?}");
}

fn invalid<T: std::fmt::Debug>(r: Result<T, Error>) {
    assert!(matches!(r, Err(Error::InvalidArgument { .. })), "{r:?}");
}

fn empty<T: std::fmt::Debug>(r: Result<T, Error>) {
    assert!(matches!(r, Err(Error::EmptyInput { .. })), "{r:?}");
}

fn no_bias(n: &[Layer]) -> Vec<DenseLayer<'_, f64>> {
    n.iter()
        .map(|(w, _)| DenseLayer {
            weight: w.view(),
            bias: None,
        })
        .collect()
}

#[test]
fn bad_inputs_are_errors() {
    let w = random((3, 4), 1);
    let w2 = random((3, 5), 2);
    let bias = Array1::<f64>::zeros(3);
    let x = random((6, 4), 3);
    fn l(w: &Array2<f64>) -> DenseLayer<'_, f64> {
        DenseLayer {
            weight: w.view(),
            bias: None,
        }
    }
    let acts = [Activation::Identity];
    let opts = AttributionOptions::default();
    let run =
        |a: &[DenseLayer<'_, f64>],
         b: &[DenseLayer<'_, f64>],
         acts: &[Activation],
         x: &Array2<f64>,
         alphas: &[f64],
         opts: &AttributionOptions| { attribution_dense(a, b, acts, x, alphas, opts) };
    shape(run(&[l(&w)], &[l(&w2)], &acts, &x, &[0.5], &opts)); // B's weight
    shape(run(&[l(&w)], &[], &acts, &x, &[0.5], &opts)); // a missing layer
    shape(run(&[l(&w)], &[l(&w)], &[], &x, &[0.5], &opts)); // activations
    shape(run(&[l(&w2)], &[l(&w2)], &acts, &x, &[0.5], &opts)); // x's columns
    let w_next = random((2, 4), 4); // does not chain after 3 outputs
    shape(run(
        &[l(&w), l(&w_next)],
        &[l(&w), l(&w_next)],
        &[Activation::Relu; 2],
        &x,
        &[0.5],
        &opts,
    ));
    let with_bias = DenseLayer {
        weight: w.view(),
        bias: Some(bias.view()),
    };
    invalid(run(&[with_bias], &[l(&w)], &acts, &x, &[0.5], &opts));
    let short = Array1::<f64>::zeros(2);
    let bad_bias = DenseLayer {
        weight: w.view(),
        bias: Some(short.view()),
    };
    shape(run(&[bad_bias], &[bad_bias], &acts, &x, &[0.5], &opts));
    empty(run(&[], &[], &[], &x, &[0.5], &opts));
    empty(run(&[l(&w)], &[l(&w)], &acts, &x, &[], &opts));
    empty(run(
        &[l(&w)],
        &[l(&w)],
        &acts,
        &Array2::zeros((0, 4)),
        &[0.5],
        &opts,
    ));
    invalid(run(&[l(&w)], &[l(&w)], &acts, &x, &[f64::NAN], &opts));
    invalid(run(
        &[l(&w)],
        &[l(&w)],
        &acts,
        &x,
        &[0.5],
        &AttributionOptions { chunk_size: 0 },
    ));
    let mut nan = x.clone();
    nan[[1, 1]] = f64::INFINITY;
    assert!(matches!(
        run(&[l(&w)], &[l(&w)], &acts, &nan, &[0.5], &opts),
        Err(Error::NonFinite { .. })
    ));
    // MLPs of different widths, and a missing layer in an MLP.
    let a = mlp::init::<f64, _>(&[4, 3, 2], &mut ChaCha8Rng::seed_from_u64(0)).unwrap();
    let b = mlp::init::<f64, _>(&[4, 5, 2], &mut ChaCha8Rng::seed_from_u64(0)).unwrap();
    shape(attribution_mlp(&a, &b, &x, &[0.5]));
    let mut gap = a.clone();
    gap.remove("layers.0.bias");
    assert!(matches!(
        attribution_mlp(&a, &gap, &x, &[0.5]),
        Err(Error::MissingParam { .. })
    ));
    // Local splits.
    shape(local_split_dense(
        l(&w),
        l(&w),
        x.view(),
        x.view(),
        random((5, 4), 9).view(),
        0.5,
    ));
    shape(local_split_dense(
        l(&w),
        l(&w2),
        x.view(),
        x.view(),
        x.view(),
        0.5,
    ));
    invalid(local_split_dense(
        l(&w),
        l(&w),
        x.view(),
        x.view(),
        x.view(),
        f64::INFINITY,
    ));
    shape(local_split_activation(&x, &x, &w, 0.5));
}

// ---------------------------------------------------------------------------------------------
// Convolutions

/// The convolution as an explicit `[out·oh·ow, in·h·w]` matrix, straight from PyTorch's
/// definition: `y[o, p, q] = Σ_{c ∈ group(o), i, j} W[o, c − c₀, i, j] · x[c, p s + i d − pad, q s + j d − pad]`.
fn conv_matrix(w: &Array4<f64>, input: [usize; 3], g: &ConvGeometry) -> (Array2<f64>, [usize; 3]) {
    let (out, in_g, kh, kw) = w.dim();
    let [c_in, h, wd] = input;
    let oh = (h + 2 * g.padding[0] - g.dilation[0] * (kh - 1) - 1) / g.stride[0] + 1;
    let ow = (wd + 2 * g.padding[1] - g.dilation[1] * (kw - 1) - 1) / g.stride[1] + 1;
    let og = out / g.groups;
    let mut m = Array2::zeros((out * oh * ow, c_in * h * wd));
    for o in 0..out {
        let c0 = (o / og) * in_g;
        for p in 0..oh {
            for q in 0..ow {
                for c in 0..in_g {
                    for i in 0..kh {
                        for j in 0..kw {
                            let y =
                                (p * g.stride[0] + i * g.dilation[0]) as i64 - g.padding[0] as i64;
                            let x =
                                (q * g.stride[1] + j * g.dilation[1]) as i64 - g.padding[1] as i64;
                            if y >= 0 && x >= 0 && (y as usize) < h && (x as usize) < wd {
                                let col = ((c0 + c) * h + y as usize) * wd + x as usize;
                                m[[(o * oh + p) * ow + q, col]] += w[[o, c, i, j]];
                            }
                        }
                    }
                }
            }
        }
    }
    (m, [out, oh, ow])
}

fn random4(shape: (usize, usize, usize, usize), seed: u64) -> Array4<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Array4::from_shape_simple_fn(shape, || rng.random::<f64>() * 2.0 - 1.0)
}

/// `[samples, c, h, w]` → `[samples, c·h·w]`.
fn flat(x: &Array4<f64>) -> Array2<f64> {
    let n = x.shape()[0];
    x.to_owned()
        .into_shape_with_order((n, x.len() / n))
        .unwrap()
}

/// `(geometry, weight shape, input [c, h, w])`.
type ConvCase = (ConvGeometry, (usize, usize, usize, usize), [usize; 3]);

fn geometries() -> Vec<ConvCase> {
    let g = |stride, padding, dilation, groups| ConvGeometry {
        stride,
        padding,
        dilation,
        groups,
    };
    vec![
        (ConvGeometry::default(), (4, 3, 3, 3), [3, 6, 6]),
        (g([2, 2], [1, 1], [1, 1], 1), (5, 2, 3, 3), [2, 7, 6]),
        (g([1, 2], [2, 0], [2, 1], 2), (4, 2, 3, 2), [4, 6, 5]),
        (g([1, 1], [1, 1], [1, 1], 3), (6, 1, 3, 3), [3, 5, 5]), // depthwise-like
        (g([3, 1], [0, 2], [1, 3], 1), (3, 2, 2, 3), [2, 8, 4]),
    ]
}

#[test]
fn conv_commutativity_matches_the_unfolded_matrix_computation() -> TestResult {
    for (case, (geometry, wshape, [c, h, w])) in geometries().into_iter().enumerate() {
        let s = 100 * case as u64;
        let (w_a, w_b) = (random4(wshape, s), random4(wshape, s + 1));
        let (h_a, h_b) = (random4((5, c, h, w), s + 2), random4((5, c, h, w), s + 3));
        let (m_a, _) = conv_matrix(&w_a, [c, h, w], &geometry);
        let (m_b, out_shape) = conv_matrix(&w_b, [c, h, w], &geometry);
        // conv2d itself.
        let y = conv2d(w_a.view(), h_a.view(), &geometry)?;
        assert_eq!(&y.shape()[1..], &out_shape);
        let want = flat(&h_a).dot(&m_a.t());
        assert!(
            norm(&(flat(&y) - &want)) <= 1e-12 * norm(&want),
            "case {case}"
        );
        // The residuals, as the dense layer that the convolution is.
        let got = conv_commutativity(w_a.view(), w_b.view(), h_a.view(), h_b.view(), &geometry)?;
        let dense = llfc::metrics::commutativity(
            m_a.view(),
            m_b.view(),
            flat(&h_a).view(),
            flat(&h_b).view(),
        )?;
        let close =
            |x: Option<f64>, y: Option<f64>| (x.unwrap() - y.unwrap()).abs() <= 1e-12 * y.unwrap();
        assert!(close(got.relative, dense.relative), "case {case}");
        assert!(close(got.vanilla, dense.vanilla), "case {case}");
        assert!(close(got.baseline, dense.baseline), "case {case}");
        assert!((got.residual_norm - dense.residual_norm).abs() <= 1e-12 * dense.residual_norm);
        // And the residual by its definition: S − X with four explicit products.
        let (fa, fb) = (flat(&h_a), flat(&h_b));
        let r = fa.dot(&m_a.t()) + fb.dot(&m_b.t()) - fb.dot(&m_a.t()) - fa.dot(&m_b.t());
        assert!((got.residual_norm - norm(&r)).abs() <= 1e-10 * norm(&r));
        // Same weights commute exactly.
        let same = conv_commutativity(w_a.view(), w_a.view(), h_a.view(), h_b.view(), &geometry)?;
        assert_eq!(same.residual_norm, 0.0);
        // The local split of the conv layer is that of the dense layer.
        let h_alpha = random4((5, c, h, w), s + 4);
        let bias = random((1, wshape.0), s + 5).row(0).to_owned();
        let dense_bias = Array1::from_iter(
            bias.iter()
                .flat_map(|&b| std::iter::repeat_n(b, out_shape[1] * out_shape[2])),
        );
        let split = local_split_conv(
            ConvLayer {
                weight: w_a.view(),
                bias: Some(bias.view()),
            },
            ConvLayer {
                weight: w_b.view(),
                bias: Some(bias.view()),
            },
            h_a.view(),
            h_b.view(),
            h_alpha.view(),
            0.3,
            &geometry,
        )?;
        let want = local_split_dense(
            DenseLayer {
                weight: m_a.view(),
                bias: Some(dense_bias.view()),
            },
            DenseLayer {
                weight: m_b.view(),
                bias: Some(dense_bias.view()),
            },
            fa.view(),
            fb.view(),
            flat(&h_alpha).view(),
            0.3,
        )?;
        let tol = 1e-12 * want.reference_norm;
        for (x, y) in [
            (split.norm, want.norm),
            (split.reference_norm, want.reference_norm),
            (split.own.norm, want.own.norm),
            (split.propagated.norm, want.propagated.norm),
        ] {
            assert!((x - y).abs() <= tol, "case {case}: {x} vs {y}");
        }
        assert!((split.own.inner - want.own.inner).abs() <= tol * want.norm * 2.0);
        assert!(split.closure.unwrap() <= 1e-12);
        assert!(
            ((split.own.share.unwrap() + split.propagated.share.unwrap()) - 1.0).abs() <= 1e-12
        );
    }
    Ok(())
}

#[test]
fn bad_convolutions_are_errors() {
    let w = random4((4, 2, 3, 3), 1);
    let h = random4((2, 4, 5, 5), 2);
    let g = |groups, stride, padding| ConvGeometry {
        groups,
        stride,
        padding,
        ..ConvGeometry::default()
    };
    let comm = |h_a: &Array4<f64>, h_b: &Array4<f64>, geometry| {
        conv_commutativity(w.view(), w.view(), h_a.view(), h_b.view(), &geometry)
    };
    // 4 input channels need groups = 2 for a [4, 2, 3, 3] weight.
    shape(comm(&h, &h, g(1, [1, 1], [0, 0])));
    assert!(comm(&h, &h, g(2, [1, 1], [0, 0])).is_ok());
    invalid(comm(&h, &h, g(0, [1, 1], [0, 0])));
    invalid(comm(&h, &h, g(2, [0, 1], [0, 0])));
    // A 3×3 kernel does not fit a 2×2 input without padding, and does with it.
    let small = random4((1, 4, 2, 2), 3);
    invalid(comm(&small, &small, g(2, [1, 1], [0, 0])));
    assert!(comm(&small, &small, g(2, [1, 1], [1, 1])).is_ok());
    let other = random4((2, 4, 5, 6), 4);
    shape(comm(&h, &other, g(2, [1, 1], [0, 0])));
    let mut nan = h.clone();
    nan[[0, 0, 0, 0]] = f64::NAN;
    assert!(matches!(
        conv2d(w.view(), nan.view(), &g(2, [1, 1], [0, 0])),
        Err(Error::NonFinite { .. })
    ));
    let layer = ConvLayer {
        weight: w.view(),
        bias: None,
    };
    let geometry = g(2, [1, 1], [0, 0]);
    shape(local_split_conv(
        layer,
        layer,
        h.view(),
        h.view(),
        other.view(),
        0.5,
        &geometry,
    ));
}
