//! Transformer builtins (GPT-2, BERT encoder, LLaMA, Hugging Face names): reference forwards
//! written here in plain ndarray show that each spec is an exact symmetry (≤ 1e-10 in f64)
//! under random structured permutations, that a plain permutation across heads (accepted by
//! names and shapes) changes the function, and that weight matching recovers planted
//! permutations.

use llfc::matching::weight::{weight_matching, WeightMatchingOptions};
use llfc::spec::{AxisSpec, Segment, TransformerConfig};
use llfc::{apply_permutations, Params, PermutationSpec};
use ndarray::{s, Array1, Array2, Axis};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::spec::random_tensor;

const D: usize = 8;
const HEADS: usize = 2;
const FF: usize = 16;
const VOCAB: usize = 11;
const LAYERS: usize = 2;
const TOKENS: [usize; 5] = [3, 1, 4, 1, 5];

pub(crate) fn config() -> TransformerConfig {
    TransformerConfig {
        layers: LAYERS,
        heads: HEADS,
        d_model: D,
        lm_head: true,
    }
}

fn m2(p: &Params<f64>, name: &str) -> Array2<f64> {
    p[name].clone().into_dimensionality().unwrap()
}
fn v1(p: &Params<f64>, name: &str) -> Array1<f64> {
    p[name].clone().into_dimensionality().unwrap()
}

/// `x Wᵀ + b` for a PyTorch linear `[out, in]` (bias optional).
fn linear(x: &Array2<f64>, p: &Params<f64>, pre: &str) -> Array2<f64> {
    let y = x.dot(&m2(p, &format!("{pre}.weight")).t());
    match p.get(&format!("{pre}.bias")) {
        Some(_) => y + v1(p, &format!("{pre}.bias")),
        None => y,
    }
}

/// `x W + b` for a Hugging Face `Conv1D` `[in, out]`.
fn conv1d(x: &Array2<f64>, p: &Params<f64>, pre: &str) -> Array2<f64> {
    x.dot(&m2(p, &format!("{pre}.weight"))) + v1(p, &format!("{pre}.bias"))
}

fn layer_norm(x: &Array2<f64>, p: &Params<f64>, pre: &str) -> Array2<f64> {
    let (w, b) = (
        v1(p, &format!("{pre}.weight")),
        v1(p, &format!("{pre}.bias")),
    );
    let mut y = x.clone();
    for mut row in y.rows_mut() {
        let mu = row.mean().unwrap();
        let var = row.mapv(|t| (t - mu).powi(2)).mean().unwrap();
        row.mapv_inplace(|t| (t - mu) / (var + 1e-5).sqrt());
    }
    y * w + b
}

fn rms_norm(x: &Array2<f64>, p: &Params<f64>, pre: &str) -> Array2<f64> {
    let w = v1(p, &format!("{pre}.weight"));
    let mut y = x.clone();
    for mut row in y.rows_mut() {
        let r = (row.mapv(|t| t * t).mean().unwrap() + 1e-6).sqrt();
        row.mapv_inplace(|t| t / r);
    }
    y * w
}

fn gelu(x: Array2<f64>) -> Array2<f64> {
    x.mapv(|t| {
        0.5 * t * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (t + 0.044715 * t.powi(3))).tanh())
    })
}

/// Rotary embedding of one head `[T, dh]` (Hugging Face's rotate_half pairing: `i` with
/// `i + dh/2`, frequency `10000^(−2i/dh)`).
fn rotary(x: &Array2<f64>) -> Array2<f64> {
    let dh = x.ncols();
    let half = dh / 2;
    Array2::from_shape_fn(x.dim(), |(t, i)| {
        let k = i % half;
        let angle = t as f64 * 10000f64.powf(-2.0 * k as f64 / dh as f64);
        let (c, s) = (angle.cos(), angle.sin());
        if i < half {
            x[[t, i]] * c - x[[t, i + half]] * s
        } else {
            x[[t, i]] * c + x[[t, i - half]] * s
        }
    })
}

/// Multi-head attention of `[T, d]` queries, keys, values.
fn attention(
    q: &Array2<f64>,
    k: &Array2<f64>,
    v: &Array2<f64>,
    causal: bool,
    rope: bool,
) -> Array2<f64> {
    let (t, d) = q.dim();
    let dh = d / HEADS;
    let mut out = Array2::zeros((t, d));
    for h in 0..HEADS {
        let cols = s![.., h * dh..(h + 1) * dh];
        let (mut qh, mut kh) = (q.slice(cols).to_owned(), k.slice(cols).to_owned());
        if rope {
            (qh, kh) = (rotary(&qh), rotary(&kh));
        }
        let mut scores = qh.dot(&kh.t()) / (dh as f64).sqrt();
        for ((i, j), x) in scores.indexed_iter_mut() {
            if causal && j > i {
                *x = f64::NEG_INFINITY;
            }
        }
        for mut row in scores.rows_mut() {
            let m = row.fold(f64::NEG_INFINITY, |a, &b| a.max(b));
            row.mapv_inplace(|x| (x - m).exp());
            let z = row.sum();
            row /= z;
        }
        out.slice_mut(cols).assign(&scores.dot(&v.slice(cols)));
    }
    out
}

fn rows(table: &Array2<f64>, idx: &[usize]) -> Array2<f64> {
    table.select(Axis(0), idx)
}

fn gpt2_forward(p: &Params<f64>) -> Array2<f64> {
    let pos: Vec<usize> = (0..TOKENS.len()).collect();
    let mut h = rows(&m2(p, "transformer.wte.weight"), &TOKENS)
        + rows(&m2(p, "transformer.wpe.weight"), &pos);
    for i in 0..LAYERS {
        let pre = format!("transformer.h.{i}");
        let a = layer_norm(&h, p, &format!("{pre}.ln_1"));
        let qkv = conv1d(&a, p, &format!("{pre}.attn.c_attn"));
        let (q, k, v) = (
            qkv.slice(s![.., ..D]),
            qkv.slice(s![.., D..2 * D]),
            qkv.slice(s![.., 2 * D..]),
        );
        let att = attention(&q.to_owned(), &k.to_owned(), &v.to_owned(), true, false);
        h = h + conv1d(&att, p, &format!("{pre}.attn.c_proj"));
        let m = layer_norm(&h, p, &format!("{pre}.ln_2"));
        let f = gelu(conv1d(&m, p, &format!("{pre}.mlp.c_fc")));
        h = h + conv1d(&f, p, &format!("{pre}.mlp.c_proj"));
    }
    let h = layer_norm(&h, p, "transformer.ln_f");
    h.dot(&m2(p, "lm_head.weight").t())
}

fn bert_forward(p: &Params<f64>) -> Array2<f64> {
    let pos: Vec<usize> = (0..TOKENS.len()).collect();
    let e = "bert.embeddings";
    let emb = rows(&m2(p, &format!("{e}.word_embeddings.weight")), &TOKENS)
        + rows(&m2(p, &format!("{e}.position_embeddings.weight")), &pos)
        + rows(
            &m2(p, &format!("{e}.token_type_embeddings.weight")),
            &[0; 5],
        );
    let mut h = layer_norm(&emb, p, &format!("{e}.LayerNorm"));
    for i in 0..LAYERS {
        let pre = format!("bert.encoder.layer.{i}");
        let (q, k, v) = (
            linear(&h, p, &format!("{pre}.attention.self.query")),
            linear(&h, p, &format!("{pre}.attention.self.key")),
            linear(&h, p, &format!("{pre}.attention.self.value")),
        );
        let att = linear(
            &attention(&q, &k, &v, false, false),
            p,
            &format!("{pre}.attention.output.dense"),
        );
        h = layer_norm(&(h + att), p, &format!("{pre}.attention.output.LayerNorm"));
        let f = gelu(linear(&h, p, &format!("{pre}.intermediate.dense")));
        let o = linear(&f, p, &format!("{pre}.output.dense"));
        h = layer_norm(&(h + o), p, &format!("{pre}.output.LayerNorm"));
    }
    linear(&h, p, "classifier")
}

fn llama_forward(p: &Params<f64>) -> Array2<f64> {
    let mut h = rows(&m2(p, "model.embed_tokens.weight"), &TOKENS);
    for i in 0..LAYERS {
        let pre = format!("model.layers.{i}");
        let a = rms_norm(&h, p, &format!("{pre}.input_layernorm"));
        let (q, k, v) = (
            linear(&a, p, &format!("{pre}.self_attn.q_proj")),
            linear(&a, p, &format!("{pre}.self_attn.k_proj")),
            linear(&a, p, &format!("{pre}.self_attn.v_proj")),
        );
        h = h + linear(
            &attention(&q, &k, &v, true, true),
            p,
            &format!("{pre}.self_attn.o_proj"),
        );
        let m = rms_norm(&h, p, &format!("{pre}.post_attention_layernorm"));
        let gate = linear(&m, p, &format!("{pre}.mlp.gate_proj")).mapv(|t| t / (1.0 + (-t).exp()));
        let up = linear(&m, p, &format!("{pre}.mlp.up_proj"));
        h = h + linear(&(gate * up), p, &format!("{pre}.mlp.down_proj"));
    }
    rms_norm(&h, p, "model.norm").dot(&m2(p, "lm_head.weight").t())
}

/// Random parameters of every tensor the spec names, shaped by `shape(name)`.
pub(crate) fn params_for(
    spec: &PermutationSpec,
    shape: impl Fn(&str) -> Vec<usize>,
    rng: &mut ChaCha8Rng,
) -> Params<f64> {
    let mut p = Params::new();
    for (name, _) in spec.iter() {
        let mut t = random_tensor(&shape(name), rng);
        if name.contains("norm") || name.contains("ln_") || name.contains("LayerNorm") {
            t.mapv_inplace(|x| 1.0 + 0.3 * x); // norm scales near 1
        }
        p.insert(name, t);
    }
    p
}

pub(crate) fn gpt2_shape(name: &str) -> Vec<usize> {
    let last = |s: &str| name.ends_with(s);
    match () {
        _ if last("wte.weight") || last("lm_head.weight") => vec![VOCAB, D],
        _ if last("wpe.weight") => vec![TOKENS.len(), D],
        _ if last("c_attn.weight") => vec![D, 3 * D],
        _ if last("c_attn.bias") => vec![3 * D],
        _ if last("c_fc.weight") => vec![D, FF],
        _ if last("c_fc.bias") => vec![FF],
        _ if last("mlp.c_proj.weight") => vec![FF, D],
        _ if last("attn.c_proj.weight") => vec![D, D],
        _ => vec![D],
    }
}

fn bert_shape(name: &str) -> Vec<usize> {
    let last = |s: &str| name.ends_with(s);
    match () {
        _ if last("word_embeddings.weight") => vec![VOCAB, D],
        _ if last("position_embeddings.weight") => vec![TOKENS.len(), D],
        _ if last("token_type_embeddings.weight") => vec![2, D],
        _ if last("classifier.weight") => vec![3, D],
        _ if last("classifier.bias") => vec![3],
        _ if last("intermediate.dense.weight") => vec![FF, D],
        _ if last("intermediate.dense.bias") => vec![FF],
        _ if last("output.dense.weight") && !name.contains("attention") => vec![D, FF],
        _ if last(".weight") && !name.contains("LayerNorm") => vec![D, D],
        _ => vec![D],
    }
}

fn llama_shape(name: &str) -> Vec<usize> {
    let last = |s: &str| name.ends_with(s);
    match () {
        _ if last("embed_tokens.weight") || last("lm_head.weight") => vec![VOCAB, D],
        _ if last("gate_proj.weight") || last("up_proj.weight") => vec![FF, D],
        _ if last("down_proj.weight") => vec![D, FF],
        _ if last("proj.weight") => vec![D, D],
        _ => vec![D],
    }
}

type Forward = fn(&Params<f64>) -> Array2<f64>;

/// Name, spec, parameter shapes and reference forward of every transformer builtin.
type Builtin = (
    &'static str,
    PermutationSpec,
    fn(&str) -> Vec<usize>,
    Forward,
);

fn builtins() -> Vec<Builtin> {
    let bert = PermutationSpec::bert_encoder(&config(), "bert")
        .with("classifier.weight", &[None, Some("P_res")])
        .with("classifier.bias", &[None::<&str>]);
    vec![
        (
            "gpt2",
            PermutationSpec::gpt2(&config()),
            gpt2_shape,
            gpt2_forward,
        ),
        ("bert", bert, bert_shape, bert_forward),
        (
            "llama",
            PermutationSpec::llama(&config()),
            llama_shape,
            llama_forward,
        ),
    ]
}

fn max_diff(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    a.iter().zip(b).fold(0.0, |m, (x, y)| m.max((x - y).abs()))
}

#[test]
fn every_transformer_builtin_is_an_exact_symmetry() {
    let mut rng = ChaCha8Rng::seed_from_u64(31);
    for (name, spec, shape, forward) in builtins() {
        let p = params_for(&spec, shape, &mut rng);
        let v = spec.validate(&p).unwrap();
        assert!(v.unmentioned.is_empty(), "{name}");
        let y = forward(&p);
        let scale = y.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        for _ in 0..3 {
            let perms = spec.random_perms(&p, &mut rng).unwrap();
            let q = apply_permutations(&spec, &perms, &p).unwrap();
            let diff = max_diff(&y, &forward(&q));
            assert!(diff <= 1e-10 * scale, "{name}: {diff}");
        }
    }
}

/// The failing spec: one plain permutation of the attention dimensions across all
/// heads (q, k, v produce it, o consumes it). Names and shapes accept it; the function
/// changes.
#[test]
fn a_plain_permutation_across_heads_changes_the_function() {
    let mut rng = ChaCha8Rng::seed_from_u64(32);
    for (name, spec, shape, forward) in builtins() {
        let p = params_for(&spec, shape, &mut rng);
        // q, k, v produce `P_h{i}.attn` (also on GPT-2's fused segments), o consumes it.
        let attn = |n: &str| n.replace(".qk", ".attn").replace(".vo", ".attn");
        let mut plain = PermutationSpec::new();
        for (param, _) in spec.iter() {
            let axes: Vec<AxisSpec> = spec
                .axis_specs(param)
                .unwrap()
                .into_iter()
                .map(|a| match a {
                    AxisSpec::Perm(n) => AxisSpec::Perm(attn(&n)),
                    AxisSpec::Segments(segs) => AxisSpec::Segments(
                        segs.into_iter()
                            .map(|s| Segment {
                                perm: s.perm.as_deref().map(attn),
                                size: s.size,
                            })
                            .collect(),
                    ),
                    AxisSpec::Fixed => AxisSpec::Fixed,
                })
                .collect();
            plain.insert_axes(param, axes);
            plain.set_layout(param, spec.layout(param));
        }
        plain.validate(&p).unwrap();
        let perms = plain.random_perms(&p, &mut rng).unwrap();
        let q = apply_permutations(&plain, &perms, &p).unwrap();
        let diff = max_diff(&forward(&p), &forward(&q));
        assert!(
            diff > 1e-3,
            "{name}: a cross-head permutation kept the function ({diff})"
        );
    }
}

#[test]
fn weight_matching_recovers_planted_transformer_permutations() {
    let mut rng = ChaCha8Rng::seed_from_u64(33);
    for (name, spec, shape, _) in builtins() {
        let a = params_for(&spec, shape, &mut rng);
        let planted = spec.random_perms(&a, &mut rng).unwrap();
        let b = apply_permutations(&spec, &planted, &a).unwrap();
        let m = weight_matching(&spec, &a, &b, &WeightMatchingOptions::default()).unwrap();
        assert_eq!(
            apply_permutations(&spec, &m.perms, &b).unwrap(),
            a,
            "{name}"
        );
    }
}
