//! The spec language beyond plain axes: symmetry rules of `validate` (produced/consumed,
//! repeated permutations), layouts, segmented axes, head-structured permutations and their
//! ties, embeddings; their JSON form (round trips, old specs unchanged) and
//! `apply_permutations` on all of it, checked against index-by-index permutations written here.

use std::collections::BTreeMap;

use llfc::spec::{AxisSpec, Layout, PermDecl, Segment, WithinHead};
use llfc::{apply_permutations, Error, Params, Permutation, PermutationSpec};
use rand::SeedableRng;

pub(crate) use super::spec::random_tensor;
use rand_chacha::ChaCha8Rng;

type Perms = BTreeMap<String, Permutation>;

/// `layers.{i}.weight`/`bias` of an MLP with the given widths.
fn mlp_params(widths: &[usize], rng: &mut ChaCha8Rng) -> Params<f64> {
    let mut p = Params::new();
    for (i, w) in widths.windows(2).enumerate() {
        p.insert(
            format!("layers.{i}.weight"),
            random_tensor(&[w[1], w[0]], rng),
        );
        p.insert(format!("layers.{i}.bias"), random_tensor(&[w[1]], rng));
    }
    p
}

fn perm(name: &str) -> AxisSpec {
    AxisSpec::perm(name)
}

#[test]
fn produced_but_never_consumed_is_rejected() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let p = mlp_params(&[3, 5, 4, 2], &mut rng);
    // The issue's mistake: layer 1 no longer consumes P_0.
    let spec = PermutationSpec::mlp(3).with("layers.1.weight", &[Some("P_1"), None]);
    match spec.validate(&p) {
        Err(Error::UnbalancedPermutation { perm, problem, .. }) => {
            assert_eq!(perm, "P_0");
            assert!(problem.contains("never consumed"), "{problem}");
        }
        other => panic!("expected UnbalancedPermutation, got {other:?}"),
    }
    // And applying it is refused too (it would change the function).
    let perms = Perms::from([
        ("P_0".into(), Permutation::identity(5)),
        ("P_1".into(), Permutation::identity(4)),
    ]);
    assert!(apply_permutations(&spec, &perms, &p).is_err());
}

#[test]
fn consumed_but_never_produced_is_rejected() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let p = mlp_params(&[3, 5, 2], &mut rng);
    let spec = PermutationSpec::mlp(2)
        .with("layers.0.weight", &[None::<&str>, None])
        .with("layers.0.bias", &[None::<&str>]);
    match spec.validate(&p) {
        Err(Error::UnbalancedPermutation {
            perm,
            problem,
            param,
            axis,
        }) => {
            assert_eq!(
                (perm.as_str(), param.as_str(), axis),
                ("P_0", "layers.1.weight", 1)
            );
            assert!(problem.contains("never produced"), "{problem}");
        }
        other => panic!("expected UnbalancedPermutation, got {other:?}"),
    }
    // Produced only by a vector (a bias) still counts as produced: consumed → valid.
    let spec = PermutationSpec::mlp(2).with("layers.0.weight", &[None::<&str>, None]);
    spec.validate(&p).unwrap();
}

#[test]
fn one_name_on_two_axes_needs_a_recurrent_declaration() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut p = mlp_params(&[3, 4, 2], &mut rng);
    p.insert("rnn.weight_hh", random_tensor(&[4, 4], &mut rng));
    let spec = PermutationSpec::mlp(2).with("rnn.weight_hh", &[Some("P_0"), Some("P_0")]);
    match spec.validate(&p) {
        Err(Error::RepeatedPermutation {
            perm,
            param,
            first_axis,
            second_axis,
        }) => {
            assert_eq!((perm.as_str(), param.as_str()), ("P_0", "rnn.weight_hh"));
            assert_eq!((first_axis, second_axis), (0, 1));
        }
        other => panic!("expected RepeatedPermutation, got {other:?}"),
    }
    let spec = spec.with_decl("P_0", PermDecl::recurrent());
    spec.validate(&p).unwrap();
    // P W Pᵀ: entry (i, j) of the result is W[p(i), p(j)].
    let q = Permutation::new(vec![2, 0, 3, 1]).unwrap();
    let out = apply_permutations(&spec, &Perms::from([("P_0".into(), q.clone())]), &p).unwrap();
    let (w, v) = (&p["rnn.weight_hh"], &out["rnn.weight_hh"]);
    for i in 0..4 {
        for j in 0..4 {
            assert_eq!(v[[i, j]], w[[q.as_slice()[i], q.as_slice()[j]]]);
        }
    }
}

#[test]
fn in_out_layout_moves_the_produced_axis() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let mut p = mlp_params(&[3, 5, 2], &mut rng);
    // Layer 1 stored [in, out] (Hugging Face Conv1D): its axis 0 consumes P_0.
    let w1 = p["layers.1.weight"].t().to_owned();
    p.insert("layers.1.weight", w1);
    let plain = PermutationSpec::mlp(2).with("layers.1.weight", &[Some("P_0"), None]);
    // Without the layout, axis 0 reads as produced: P_0 is never consumed.
    assert!(matches!(
        plain.validate(&p),
        Err(Error::UnbalancedPermutation { .. })
    ));
    let spec = plain.with_layout("layers.1.weight", Layout::InOut);
    spec.validate(&p).unwrap();
    assert_eq!(spec.output_axis("layers.1.weight", 2), 1);
    // And an embedding table [vocab, d] is [in, out] too: its columns are produced.
    let mut q = p.clone();
    q.insert("wte.weight", random_tensor(&[7, 3], &mut rng));
    q.insert("layers.1.weight", random_tensor(&[2, 5], &mut rng));
    let with_emb = PermutationSpec::mlp(2)
        .with("layers.0.weight", &[Some("P_0"), Some("P_in")])
        .with("wte.weight", &[None, Some("P_in")]);
    assert!(matches!(
        with_emb.validate(&q),
        Err(Error::UnbalancedPermutation { .. })
    ));
    let with_emb = with_emb.with_layout("wte.weight", Layout::InOut);
    with_emb.validate(&q).unwrap();
}

/// A fused attention projection `[3·d, d_in]` (q, k, v segments) and the output projection.
pub(crate) fn fused_attention(d: usize, d_in: usize, rng: &mut ChaCha8Rng) -> Params<f64> {
    let mut p = Params::new();
    p.insert("in.weight", random_tensor(&[d_in, 3], rng));
    p.insert("qkv.weight", random_tensor(&[3 * d, d_in], rng));
    p.insert("qkv.bias", random_tensor(&[3 * d], rng));
    p.insert("out.weight", random_tensor(&[d_in, d], rng));
    p.insert("head.weight", random_tensor(&[2, d_in], rng));
    p
}

pub(crate) fn fused_spec(d: usize, heads: usize, within_qk: WithinHead) -> PermutationSpec {
    let qkv = AxisSpec::Segments(vec![
        Segment::new("P_qk", d),
        Segment::new("P_qk", d),
        Segment::new("P_vo", d),
    ]);
    PermutationSpec::new()
        .with_axes("in.weight", vec![perm("P_res"), AxisSpec::Fixed])
        .with_axes("qkv.weight", vec![qkv.clone(), perm("P_res")])
        .with_axes("qkv.bias", vec![qkv])
        .with_axes("out.weight", vec![perm("P_res"), perm("P_vo")])
        .with_axes("head.weight", vec![AxisSpec::Fixed, perm("P_res")])
        .with_decl(
            "P_qk",
            PermDecl::heads(heads, within_qk)
                .query_key()
                .tied_to("P_vo"),
        )
        .with_decl("P_vo", PermDecl::heads(heads, WithinHead::Free))
}

#[test]
fn segmented_axes_permute_each_segment() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let (d, d_in) = (6, 4);
    let p = fused_attention(d, d_in, &mut rng);
    let spec = fused_spec(d, 3, WithinHead::Free);
    let v = spec.validate(&p).unwrap();
    assert_eq!(v.perm_sizes["P_qk"], d);
    assert_eq!(spec.perm_names(), vec!["P_qk", "P_res", "P_vo"]);
    assert_eq!(
        spec.axes("qkv.weight").unwrap(),
        &[None, Some("P_res".to_string())]
    );
    assert_eq!(spec.segments("qkv.weight", 0).unwrap().len(), 3);
    let perms = spec.random_perms(&p, &mut rng).unwrap();
    let out = apply_permutations(&spec, &perms, &p).unwrap();
    let (qk, vo, res) = (
        perms["P_qk"].as_slice(),
        perms["P_vo"].as_slice(),
        perms["P_res"].as_slice(),
    );
    let row = |r: usize| match r / d {
        0 => qk[r],
        1 => d + qk[r - d],
        _ => 2 * d + vo[r - 2 * d],
    };
    for r in 0..3 * d {
        assert_eq!(out["qkv.bias"][[r]], p["qkv.bias"][[row(r)]]);
        for c in 0..d_in {
            assert_eq!(out["qkv.weight"][[r, c]], p["qkv.weight"][[row(r), res[c]]]);
        }
    }
    // The segments must add up to the axis.
    let mut short = p.clone();
    short.insert("qkv.bias", random_tensor(&[3 * d - 1], &mut rng));
    assert!(matches!(
        spec.validate(&short),
        Err(Error::SegmentMismatch {
            axis: 0,
            segments_len: 18,
            axis_len: 17,
            ..
        })
    ));
}

#[test]
fn head_structure_is_enforced_on_permutations() {
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let d = 6;
    let p = fused_attention(d, 4, &mut rng);
    let spec = fused_spec(d, 3, WithinHead::Fixed);
    let perms = spec.random_perms(&p, &mut rng).unwrap();
    spec.check_structure(&perms).unwrap();
    // q/k heads-only: whole heads in order.
    let qk = perms["P_qk"].as_slice().to_vec();
    for j in 0..3 {
        let k = qk[2 * j] / 2;
        assert_eq!((qk[2 * j], qk[2 * j + 1]), (2 * k, 2 * k + 1));
    }
    // Apply with P_qk and P_vo set (identity for the rest).
    let with = |qk: &[usize], vo: &[usize]| {
        let mut perms = spec.identity_perms(&p).unwrap();
        perms.insert("P_qk".into(), Permutation::new(qk.to_vec()).unwrap());
        perms.insert("P_vo".into(), Permutation::new(vo.to_vec()).unwrap());
        apply_permutations(&spec, &perms, &p)
    };
    let structure = |r: llfc::Result<Params<f64>>| matches!(r, Err(Error::Structure { .. }));
    let id = [0, 1, 2, 3, 4, 5];
    // A permutation across heads (the issue's failing spec) is refused.
    assert!(structure(with(&[1, 2, 0, 3, 4, 5], &id)));
    // Units swapped inside a head: fine for v/o (free), not for q/k (fixed).
    with(&id, &[1, 0, 2, 3, 4, 5]).unwrap();
    assert!(structure(with(&[1, 0, 2, 3, 4, 5], &[1, 0, 2, 3, 4, 5])));
    // q/k and v/o must move heads alike.
    assert!(structure(with(&id, &[2, 3, 0, 1, 4, 5])));
    with(&[2, 3, 0, 1, 4, 5], &[2, 3, 0, 1, 4, 5]).unwrap();
}

#[test]
fn broken_head_declarations_are_rejected() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let d = 6;
    let p = fused_attention(d, 4, &mut rng);
    let structure = |spec: PermutationSpec| match spec.validate(&p) {
        Err(Error::Structure { reason, .. }) => reason,
        other => panic!("expected Error::Structure, got {other:?}"),
    };
    let base = fused_spec(d, 3, WithinHead::Free);
    // Heads that do not divide the axis.
    let r = structure(fused_spec(d, 4, WithinHead::Free));
    assert!(r.contains("do not divide"), "{r}");
    // No tie between q/k and v/o.
    let r = structure(
        base.clone()
            .with_decl("P_qk", PermDecl::heads(3, WithinHead::Free).query_key()),
    );
    assert!(r.contains("head group"), "{r}");
    // A tie to a permutation with another number of heads.
    let r = structure(
        base.clone()
            .with_decl("P_vo", PermDecl::heads(2, WithinHead::Free)),
    );
    assert!(r.contains("another number of heads"), "{r}");
    // A query/key permutation without heads.
    let r = structure(
        base.clone()
            .with_decl("P_qk", PermDecl::default().query_key()),
    );
    assert!(r.contains("must declare its heads"), "{r}");
    // Declared but unused.
    assert!(matches!(
        base.clone()
            .with_decl("P_nope", PermDecl::recurrent())
            .validate(&p),
        Err(Error::PermutationName { .. })
    ));
    // Without the query/key role: no valid head group, and (one head, where groups are not
    // required) P_qk is produced but never consumed.
    let r = structure(
        base.clone()
            .with_decl("P_qk", PermDecl::heads(3, WithinHead::Free).tied_to("P_vo")),
    );
    assert!(r.contains("head group"), "{r}");
    let plain_qk = fused_spec(d, 1, WithinHead::Free)
        .with_decl("P_qk", PermDecl::heads(1, WithinHead::Free).tied_to("P_vo"));
    assert!(matches!(
        plain_qk.validate(&p),
        Err(Error::UnbalancedPermutation { .. })
    ));
    // A query/key permutation consumed by a parameter.
    let mut q = p.clone();
    q.insert("bad.weight", random_tensor(&[2, d], &mut rng));
    let consumed = base.with("bad.weight", &[None, Some("P_qk")]);
    match consumed.validate(&q) {
        Err(Error::UnbalancedPermutation { problem, .. }) => {
            assert!(problem.contains("query/key"), "{problem}");
        }
        other => panic!("expected UnbalancedPermutation, got {other:?}"),
    }
}

/// Option-A-like streams: `P_b` (size 6) embeds `P_a` (size 4) at offset 1.
pub(crate) fn embedded_chain(rng: &mut ChaCha8Rng) -> (PermutationSpec, Params<f64>) {
    let mut p = Params::new();
    p.insert("a.weight", random_tensor(&[4, 3], rng));
    p.insert("a_next.weight", random_tensor(&[2, 4], rng));
    p.insert("b.weight", random_tensor(&[6, 3], rng));
    p.insert("b_next.weight", random_tensor(&[2, 6], rng));
    let spec = PermutationSpec::new()
        .with("a.weight", &[Some("P_a"), None])
        .with("a_next.weight", &[None, Some("P_a")])
        .with("b.weight", &[Some("P_b"), None])
        .with("b_next.weight", &[None, Some("P_b")])
        .with_decl("P_b", PermDecl::embedding("P_a", 1));
    (spec, p)
}

#[test]
fn embeddings_tie_the_embedded_block() {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let (spec, p) = embedded_chain(&mut rng);
    spec.validate(&p).unwrap();
    for _ in 0..20 {
        let perms = spec.random_perms(&p, &mut rng).unwrap();
        let (a, b) = (perms["P_a"].as_slice(), perms["P_b"].as_slice());
        for x in 0..4 {
            assert_eq!(b[1 + x], 1 + a[x]);
        }
        assert!([0, 5].contains(&b[0]) && [0, 5].contains(&b[5]));
    }
    let mut perms = spec.identity_perms(&p).unwrap();
    perms.insert("P_a".into(), Permutation::new(vec![1, 0, 2, 3]).unwrap());
    assert!(matches!(
        apply_permutations(&spec, &perms, &p),
        Err(Error::Structure { .. })
    ));
    // A tensor with both streams would be quadratic in P_a: refused.
    let mut q = p.clone();
    q.insert("mix.weight", random_tensor(&[6, 4], &mut rng));
    let mixed = spec.clone().with("mix.weight", &[Some("P_b"), Some("P_a")]);
    assert!(matches!(
        mixed.validate(&q),
        Err(Error::RepeatedPermutation { .. })
    ));
    // Cycles and oversize embeddings.
    let cyc = spec.clone().with_decl("P_a", PermDecl::embedding("P_b", 0));
    assert!(matches!(cyc.validate(&p), Err(Error::Structure { .. })));
    let big = spec.with_decl("P_b", PermDecl::embedding("P_a", 3));
    assert!(matches!(big.validate(&p), Err(Error::Structure { .. })));
}

#[cfg(feature = "serde")]
mod json {
    use super::*;

    #[test]
    fn plain_specs_keep_the_original_json_form() {
        let hand =
            r#"{"fc1.weight": ["P_0", null], "fc1.bias": ["P_0"], "fc2.weight": [null, "P_0"]}"#;
        let spec = PermutationSpec::from_json(hand).unwrap();
        let written: serde_json::Value = serde_json::from_str(&spec.to_json()).unwrap();
        let original: serde_json::Value = serde_json::from_str(hand).unwrap();
        assert_eq!(written, original);
        assert!(spec.is_plain());
        // A parameter literally called "params" is still a plain entry.
        let odd =
            PermutationSpec::from_json(r#"{"params": ["P", null], "x": [null, "P"]}"#).unwrap();
        assert_eq!(odd.axes("params").unwrap(), &[Some("P".to_string()), None]);
    }

    #[test]
    fn every_structured_feature_round_trips() {
        let specs = [
            fused_spec(6, 3, WithinHead::Fixed).with_layout("qkv.weight", Layout::InOut),
            fused_spec(8, 2, WithinHead::Free),
            embedded_chain(&mut ChaCha8Rng::seed_from_u64(9)).0,
            PermutationSpec::mlp(2)
                .with("rnn.weight_hh", &[Some("P_0"), Some("P_0")])
                .with_decl("P_0", PermDecl::recurrent()),
            PermutationSpec::new().with_axes(
                "w",
                vec![AxisSpec::Segments(vec![
                    Segment::fixed(2),
                    Segment::new("P", 3),
                ])],
            ),
        ];
        for spec in specs {
            let text = spec.to_json();
            assert_eq!(PermutationSpec::from_json(&text).unwrap(), spec, "{text}");
        }
    }

    #[test]
    fn the_documented_extended_form_reads() {
        let text = r#"{
          "params": {
            "attn.c_attn.weight": {"layout": "in_out", "axes": ["P_res",
               [{"perm": "P_qk", "size": 4}, {"perm": "P_qk", "size": 4}, {"perm": "P_vo", "size": 4}]]},
            "attn.c_proj.weight": {"layout": "in_out", "axes": ["P_vo", "P_res"]},
            "fc.weight": [null, "P_res"]
          },
          "perms": {
            "P_qk": {"heads": 2, "within_head": "fixed", "role": "query_key", "same_heads_as": "P_vo"},
            "P_vo": {"heads": 2}
          }
        }"#;
        let spec = PermutationSpec::from_json(text).unwrap();
        assert_eq!(spec.layout("attn.c_attn.weight"), Layout::InOut);
        assert_eq!(spec.layout("fc.weight"), Layout::OutIn);
        let d = spec.decl("P_qk").unwrap();
        assert_eq!(d.heads.unwrap().count, 2);
        assert_eq!(d.heads.unwrap().within_head, WithinHead::Fixed);
        assert_eq!(d.same_heads_as.as_deref(), Some("P_vo"));
        assert_eq!(
            spec.segments("attn.c_attn.weight", 1).unwrap()[2],
            Segment::new("P_vo", 4)
        );
        for bad in [
            r#"{"params": {"w": ["P"]}, "typo": {}}"#,
            r#"{"params": {"w": {"axes": ["P"], "layuot": "in_out"}}}"#,
            r#"{"params": {"w": {"axes": ["P"], "layout": "sideways"}}}"#,
            r#"{"params": {"w": [[{"perm": "P"}]]}}"#,
            r#"{"params": {"w": ["P"]}, "perms": {"P": {"heads": 2, "within_head": "loose"}}}"#,
            r#"{"params": {"w": ["P"]}, "perms": {"P": {"embeds": "Q"}}}"#,
            r#"{"params": {"w": ["P"]}, "perms": {"P": {"hedas": 2}}}"#,
            r#"{"w": [3]}"#,
        ] {
            assert!(
                matches!(
                    PermutationSpec::from_json(bad),
                    Err(Error::InvalidSpec { .. })
                ),
                "{bad}"
            );
        }
    }
}
