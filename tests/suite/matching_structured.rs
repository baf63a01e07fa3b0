//! Matching with structured permutations: the exact head step and the atom step of embedded
//! permutations against brute force over every structured permutation, and planted recovery
//! through weight and activation matching.

use std::collections::BTreeMap;

use llfc::matching::activation::{ActivationMatchingOptions, ActivationStats, Statistic};
use llfc::matching::structured::{activation_matching_structured, best_head_permutations};
use llfc::matching::weight::{single_step_gain, weight_matching, WeightMatchingOptions};
use llfc::spec::{PermDecl, WithinHead};
use llfc::{apply_permutations, Permutation, PermutationSpec};
use ndarray::{Array2, ArrayView2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::spec_structured::{embedded_chain, fused_attention, fused_spec};

/// Every permutation of `0..n` (lexicographic).
fn all_perms(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![vec![]];
    }
    let mut out = Vec::new();
    for first in 0..n {
        for rest in all_perms(n - 1) {
            let mut p = vec![first];
            p.extend(rest.into_iter().map(|x| if x >= first { x + 1 } else { x }));
            out.push(p);
        }
    }
    out
}

/// σ of `p` if it maps each of `h` heads onto one head (and keeps units in order when
/// `fixed`), written independently of the library.
fn sigma_of(p: &[usize], h: usize, fixed: bool) -> Option<Vec<usize>> {
    let d = p.len() / h;
    let mut sigma = Vec::new();
    for j in 0..h {
        let k = p[j * d] / d;
        for i in 0..d {
            if p[j * d + i] / d != k || (fixed && p[j * d + i] != k * d + i) {
                return None;
            }
        }
        sigma.push(k);
    }
    Some(sigma)
}

fn value(s: &ArrayView2<'_, f64>, p: &[usize]) -> f64 {
    p.iter().enumerate().map(|(i, &j)| s[[i, j]]).sum()
}

#[test]
fn head_step_equals_brute_force_h3_d2() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let modes = [
        vec![WithinHead::Free, WithinHead::Free],
        vec![WithinHead::Fixed, WithinHead::Free],
        vec![WithinHead::Free],
        vec![WithinHead::Fixed],
    ];
    let everything = all_perms(6);
    for trial in 0..40 {
        let within = &modes[trial % modes.len()];
        let s: Vec<Array2<f64>> = within
            .iter()
            .map(|_| Array2::from_shape_fn((6, 6), |_| rng.random_range(-1.0..1.0)))
            .collect();
        let views: Vec<ArrayView2<'_, f64>> = s.iter().map(|m| m.view()).collect();
        // Brute force: for every σ, each member's best structured permutation with that σ.
        let mut brute = f64::NEG_INFINITY;
        for sigma in all_perms(3) {
            let mut total = 0.0;
            for (m, w) in within.iter().enumerate() {
                let best = everything
                    .iter()
                    .filter(|p| sigma_of(p, 3, *w == WithinHead::Fixed).as_ref() == Some(&sigma))
                    .map(|p| value(&views[m], p))
                    .fold(f64::NEG_INFINITY, f64::max);
                total += best;
            }
            brute = brute.max(total);
        }
        let (perms, best) = best_head_permutations(&views, 3, within, Default::default()).unwrap();
        assert!(
            (best - brute).abs() <= 1e-12,
            "trial {trial}: {best} vs {brute}"
        );
        // The returned permutations attain it, with one σ and the declared freedom.
        let attained: f64 = perms
            .iter()
            .zip(&views)
            .map(|(p, s)| value(s, p.as_slice()))
            .sum();
        assert!((attained - best).abs() <= 1e-12);
        let sigmas: Vec<_> = perms
            .iter()
            .zip(within)
            .map(|(p, w)| sigma_of(p.as_slice(), 3, *w == WithinHead::Fixed).unwrap())
            .collect();
        assert!(sigmas.windows(2).all(|w| w[0] == w[1]));
    }
}

/// Statistics of random features (`d` units), with B's the same features plus noise.
fn stats_for(d: usize, rng: &mut ChaCha8Rng) -> ActivationStats {
    let a = Array2::from_shape_fn((40, d), |_| rng.random_range(-1.0..1.0));
    let b = Array2::from_shape_fn((40, d), |_| rng.random_range(-1.0..1.0));
    let mut st = ActivationStats::new(d, d);
    st.update(a.view(), b.view()).unwrap();
    st
}

#[test]
fn embedded_activation_step_equals_brute_force() {
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    // P_a (4) ⊂ P_b (6) at offset 1, and P_c (8) ⊃ P_b at offset 1.
    let (spec, _) = embedded_chain(&mut rng);
    let spec = spec
        .with("c.weight", &[Some("P_c"), None])
        .with("c_next.weight", &[None, Some("P_c")])
        .with_decl("P_c", PermDecl::embedding("P_b", 1));
    let opts = ActivationMatchingOptions {
        statistic: Statistic::Covariance,
        ..Default::default()
    };
    for _ in 0..5 {
        let stats: BTreeMap<String, ActivationStats> = [("P_a", 4), ("P_b", 6), ("P_c", 8)]
            .into_iter()
            .map(|(k, d)| (k.to_string(), stats_for(d, &mut rng)))
            .collect();
        let c: BTreeMap<&str, Array2<f64>> = stats
            .iter()
            .map(|(k, st)| (k.as_str(), st.statistic(Statistic::Covariance).unwrap()))
            .collect();
        let got = activation_matching_structured(&spec, &stats, &opts).unwrap();
        spec.check_structure(&got).unwrap();
        let objective = |a: &[usize], b: &[usize], c_: &[usize]| {
            value(&c["P_a"].view(), a) + value(&c["P_b"].view(), b) + value(&c["P_c"].view(), c_)
        };
        // Brute force over every structured triple: a ∈ S_4, b's free pair, c's free pair.
        let mut brute = f64::NEG_INFINITY;
        for a in all_perms(4) {
            for fb in all_perms(2) {
                for fc in all_perms(2) {
                    let ends = |f: &[usize], n: usize| [[0, n - 1][f[0]], [0, n - 1][f[1]]];
                    let mut b = vec![0; 6];
                    let eb = ends(&fb, 6);
                    (b[0], b[5]) = (eb[0], eb[1]);
                    for x in 0..4 {
                        b[1 + x] = 1 + a[x];
                    }
                    let mut cc = vec![0; 8];
                    let ec = ends(&fc, 8);
                    (cc[0], cc[7]) = (ec[0], ec[1]);
                    for x in 0..6 {
                        cc[1 + x] = 1 + b[x];
                    }
                    brute = brute.max(objective(&a, &b, &cc));
                }
            }
        }
        let best = objective(
            got["P_a"].as_slice(),
            got["P_b"].as_slice(),
            got["P_c"].as_slice(),
        );
        assert!((best - brute).abs() <= 1e-12, "{best} vs {brute}");
    }
}

#[test]
fn weight_matching_recovers_planted_head_permutations() {
    for (seed, within) in [(13, WithinHead::Free), (14, WithinHead::Fixed)] {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let d = 12;
        let a = fused_attention(d, 8, &mut rng);
        let spec = fused_spec(d, 3, within);
        let planted = spec.random_perms(&a, &mut rng).unwrap();
        let b = apply_permutations(&spec, &planted, &a).unwrap();
        let m = weight_matching(&spec, &a, &b, &WeightMatchingOptions::default()).unwrap();
        spec.check_structure(&m.perms).unwrap();
        let back = apply_permutations(&spec, &m.perms, &b).unwrap();
        assert_eq!(back, a, "{within:?}");
        assert!((m.objective - a.norm_sq()).abs() <= 1e-9 * a.norm_sq());
        for name in spec.perm_names() {
            let gain = single_step_gain(&spec, &a, &b, &m.perms, &name).unwrap();
            assert!(gain.abs() <= 1e-9, "{name}: {gain}");
        }
    }
}

#[test]
fn activation_matching_recovers_planted_head_permutations() {
    let mut rng = ChaCha8Rng::seed_from_u64(15);
    let spec = fused_spec(12, 3, WithinHead::Free);
    let sizes = [("P_qk", 12), ("P_vo", 12), ("P_res", 8)];
    let features: BTreeMap<&str, Array2<f64>> = sizes
        .iter()
        .map(|&(k, d)| {
            (
                k,
                Array2::from_shape_fn((200, d), |_| rng.random_range(-1.0..1.0)),
            )
        })
        .collect();
    let a = fused_attention(12, 8, &mut rng);
    let planted = spec.random_perms(&a, &mut rng).unwrap();
    // B's unit planted[i] is A's unit i: B[:, planted[i]] = A[:, i].
    let stats: BTreeMap<String, ActivationStats> = sizes
        .iter()
        .map(|&(k, d)| {
            let fa = &features[k];
            let p = planted[k].as_slice();
            let mut fb = Array2::zeros((200, d));
            for (i, &pi) in p.iter().enumerate() {
                fb.column_mut(pi).assign(&fa.column(i));
            }
            let mut st = ActivationStats::new(d, d);
            st.update(fa.view(), fb.view()).unwrap();
            (k.to_string(), st)
        })
        .collect();
    let got = activation_matching_structured(&spec, &stats, &Default::default()).unwrap();
    for (k, p) in &planted {
        assert_eq!(got[k].as_slice(), p.as_slice(), "{k}");
    }
    let _: Permutation = got["P_qk"].clone();
}

#[test]
fn weight_matching_on_embedded_permutations_recovers_them() {
    let mut rng = ChaCha8Rng::seed_from_u64(16);
    let (spec, a) = embedded_chain(&mut rng);
    let planted = spec.random_perms(&a, &mut rng).unwrap();
    let b = apply_permutations(&spec, &planted, &a).unwrap();
    let m = weight_matching(&spec, &a, &b, &WeightMatchingOptions::default()).unwrap();
    assert_eq!(apply_permutations(&spec, &m.perms, &b).unwrap(), a);
    let _ = PermutationSpec::new();
}

#[test]
fn token_features_are_samples_by_units() {
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    let fa = ndarray::Array3::from_shape_fn((3, 5, 4), |_| rng.random_range(-1.0..1.0));
    let fb = ndarray::Array3::from_shape_fn((3, 5, 4), |_| rng.random_range(-1.0..1.0));
    let mut tokens = ActivationStats::new(4, 4);
    tokens
        .update_dyn(fa.view().into_dyn(), fb.view().into_dyn())
        .unwrap();
    // The same rows, flattened by hand: row n·T + t is token t of sample n.
    let flat =
        |f: &ndarray::Array3<f64>| Array2::from_shape_fn((15, 4), |(r, u)| f[[r / 5, r % 5, u]]);
    let mut rows = ActivationStats::new(4, 4);
    rows.update(flat(&fa).view(), flat(&fb).view()).unwrap();
    assert_eq!(tokens.count(), 15);
    let (x, y) = (
        tokens.statistic(Statistic::Correlation).unwrap(),
        rows.statistic(Statistic::Correlation).unwrap(),
    );
    assert!(x.iter().zip(&y).all(|(a, b)| (a - b).abs() <= 1e-14));
}
