//! Transformer specs in Hugging Face's parameter names: GPT-2, BERT-style encoders, LLaMA.
//!
//! The symmetries (Verma & Elbayad 2024; Imfeld et al. 2024, *Transformer Fusion with Optimal
//! Transport*):
//! - one **residual-stream** permutation `P_res` shared by the embeddings, every block's
//!   input projections (consumed) and output projections (produced) and every norm (LayerNorm
//!   and RMSNorm are equivariant under a permutation of their units);
//! - per attention layer, a **q/k** permutation (role query/key: consumed by the attention
//!   scores) and a **v/o** permutation, both head-structured with the same head permutation σ;
//!   with rotary embeddings the q/k permutation moves whole heads only;
//! - per MLP, one permutation of its hidden units (shared by `gate` and `up` in a gated MLP).
//!
//! Names, per layer `i`: `P_res`, `P_h{i}.qk`, `P_h{i}.vo`, `P_h{i}.mlp`.

use super::{AxisSpec, Layout, NormKind, PermDecl, PermutationSpec, Segment, WithinHead};

/// Shape of a transformer for the builders of this module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransformerConfig {
    /// Number of blocks.
    pub layers: usize,
    /// Number of attention heads.
    pub heads: usize,
    /// Model width `d` (needed where q, k and v are fused into one tensor).
    pub d_model: usize,
    /// Whether the checkpoint stores the (tied) output projection `lm_head.weight`.
    /// Hugging Face's safetensors files usually omit tied weights.
    pub lm_head: bool,
}

fn res() -> AxisSpec {
    AxisSpec::perm("P_res")
}

fn p(name: String) -> AxisSpec {
    AxisSpec::Perm(name)
}

impl PermutationSpec {
    fn attention_decls(&mut self, i: usize, heads: usize, qk_within: WithinHead) {
        self.declare(
            format!("P_h{i}.qk"),
            PermDecl::heads(heads, qk_within)
                .query_key()
                .tied_to(format!("P_h{i}.vo")),
        );
        self.declare(
            format!("P_h{i}.vo"),
            PermDecl::heads(heads, WithinHead::Free),
        );
    }

    fn insert_vector(&mut self, name: String, perm: AxisSpec) {
        self.insert_axes(name, vec![perm]);
    }

    /// Hugging Face GPT-2 (`GPT2LMHeadModel`), pre-LN: `transformer.wte` `[vocab, d]`,
    /// `transformer.wpe` `[positions, d]`, per block `transformer.h.{i}.ln_1`,
    /// `attn.c_attn` (fused q, k, v, `Conv1D` weight `[d, 3d]` in `[in, out]` layout),
    /// `attn.c_proj` `[d, d]`, `ln_2`, `mlp.c_fc` `[d, 4d]`, `mlp.c_proj` `[4d, d]` (all
    /// `Conv1D`, `[in, out]`), then `transformer.ln_f` and, if
    /// [`TransformerConfig::lm_head`], the tied `lm_head.weight` `[vocab, d]`. The
    /// attention buffers `attn.bias`/`attn.masked_bias` of older checkpoints stay unmentioned.
    #[must_use]
    pub fn gpt2(config: &TransformerConfig) -> Self {
        let mut spec = Self::new();
        let d = config.d_model;
        for emb in ["transformer.wte.weight", "transformer.wpe.weight"] {
            spec.insert_axes(emb, vec![AxisSpec::Fixed, res()]);
            spec.set_layout(emb, Layout::InOut);
        }
        for i in 0..config.layers {
            let pre = format!("transformer.h.{i}");
            let (qk, vo, mlp) = (
                format!("P_h{i}.qk"),
                format!("P_h{i}.vo"),
                format!("P_h{i}.mlp"),
            );
            let qkv = AxisSpec::Segments(vec![
                Segment::new(&qk, d),
                Segment::new(&qk, d),
                Segment::new(&vo, d),
            ]);
            for ln in ["ln_1", "ln_2"] {
                spec.insert_norm(NormKind::LayerNorm, &format!("{pre}.{ln}"), Some("P_res"));
            }
            let conv1d = |spec: &mut Self, name: &str, inp: AxisSpec, out: AxisSpec| {
                let w = format!("{pre}.{name}.weight");
                spec.insert_axes(w.clone(), vec![inp, out.clone()]);
                spec.set_layout(w, Layout::InOut);
                spec.insert_vector(format!("{pre}.{name}.bias"), out);
            };
            conv1d(&mut spec, "attn.c_attn", res(), qkv);
            conv1d(&mut spec, "attn.c_proj", p(vo), res());
            conv1d(&mut spec, "mlp.c_fc", res(), p(mlp.clone()));
            conv1d(&mut spec, "mlp.c_proj", p(mlp), res());
            spec.attention_decls(i, config.heads, WithinHead::Free);
        }
        spec.insert_norm(NormKind::LayerNorm, "transformer.ln_f", Some("P_res"));
        if config.lm_head {
            spec.insert_axes("lm_head.weight", vec![AxisSpec::Fixed, res()]);
        }
        spec
    }

    /// A Hugging Face BERT encoder (`BertModel` under `prefix`, usually `"bert"`), post-LN with
    /// separate `query`/`key`/`value`: `{prefix}.embeddings.{word,position,token_type}_embeddings`
    /// `[n, d]`, `{prefix}.embeddings.LayerNorm`, per layer
    /// `{prefix}.encoder.layer.{i}.attention.self.{query,key,value}` `[d, d]`,
    /// `attention.output.dense` `[d, d]`, `attention.output.LayerNorm`,
    /// `intermediate.dense` `[f, d]`, `output.dense` `[d, f]`, `output.LayerNorm` (PyTorch
    /// `[out, in]` linear weights, all with biases). A head (pooler, classifier) reads the
    /// residual stream: add it with [`PermutationSpec::insert`] consuming `P_res`.
    #[must_use]
    pub fn bert_encoder(config: &TransformerConfig, prefix: &str) -> Self {
        let mut spec = Self::new();
        for emb in ["word", "position", "token_type"] {
            let name = format!("{prefix}.embeddings.{emb}_embeddings.weight");
            spec.insert_axes(name.clone(), vec![AxisSpec::Fixed, res()]);
            spec.set_layout(name, Layout::InOut);
        }
        spec.insert_norm(
            NormKind::LayerNorm,
            &format!("{prefix}.embeddings.LayerNorm"),
            Some("P_res"),
        );
        for i in 0..config.layers {
            let pre = format!("{prefix}.encoder.layer.{i}");
            let (qk, vo, mlp) = (
                format!("P_h{i}.qk"),
                format!("P_h{i}.vo"),
                format!("P_h{i}.mlp"),
            );
            let linear = |spec: &mut Self, name: &str, out: AxisSpec, inp: AxisSpec| {
                spec.insert_axes(format!("{pre}.{name}.weight"), vec![out.clone(), inp]);
                spec.insert_vector(format!("{pre}.{name}.bias"), out);
            };
            linear(&mut spec, "attention.self.query", p(qk.clone()), res());
            linear(&mut spec, "attention.self.key", p(qk), res());
            linear(&mut spec, "attention.self.value", p(vo.clone()), res());
            linear(&mut spec, "attention.output.dense", res(), p(vo));
            linear(&mut spec, "intermediate.dense", p(mlp.clone()), res());
            linear(&mut spec, "output.dense", res(), p(mlp));
            for ln in ["attention.output.LayerNorm", "output.LayerNorm"] {
                spec.insert_norm(NormKind::LayerNorm, &format!("{pre}.{ln}"), Some("P_res"));
            }
            spec.attention_decls(i, config.heads, WithinHead::Free);
        }
        spec
    }

    /// Hugging Face LLaMA (`LlamaForCausalLM`), pre-norm with RMSNorm, rotary embeddings and a
    /// gated MLP: `model.embed_tokens` `[vocab, d]`, per layer `model.layers.{i}.input_layernorm`,
    /// `self_attn.{q,k,v,o}_proj` (no biases), `post_attention_layernorm`,
    /// `mlp.{gate,up,down}_proj`, then `model.norm` and, if [`TransformerConfig::lm_head`],
    /// `lm_head.weight`. Rotary embeddings give every pair of q/k dimensions its own
    /// frequency, so the q/k permutation moves whole heads only ([`WithinHead::Fixed`]);
    /// `gate_proj` and `up_proj` share the MLP permutation. Multi-head attention only (as many
    /// key/value heads as query heads).
    #[must_use]
    pub fn llama(config: &TransformerConfig) -> Self {
        let mut spec = Self::new();
        spec.insert_axes("model.embed_tokens.weight", vec![AxisSpec::Fixed, res()]);
        spec.set_layout("model.embed_tokens.weight", Layout::InOut);
        for i in 0..config.layers {
            let pre = format!("model.layers.{i}");
            let (qk, vo, mlp) = (
                format!("P_h{i}.qk"),
                format!("P_h{i}.vo"),
                format!("P_h{i}.mlp"),
            );
            let mut linear = |name: &str, out: AxisSpec, inp: AxisSpec| {
                spec.insert_axes(format!("{pre}.{name}.weight"), vec![out, inp]);
            };
            linear("self_attn.q_proj", p(qk.clone()), res());
            linear("self_attn.k_proj", p(qk), res());
            linear("self_attn.v_proj", p(vo.clone()), res());
            linear("self_attn.o_proj", res(), p(vo));
            linear("mlp.gate_proj", p(mlp.clone()), res());
            linear("mlp.up_proj", p(mlp.clone()), res());
            linear("mlp.down_proj", res(), p(mlp));
            for norm in ["input_layernorm", "post_attention_layernorm"] {
                spec.insert_vector(format!("{pre}.{norm}.weight"), res());
            }
            spec.attention_decls(i, config.heads, WithinHead::Fixed);
        }
        spec.insert_vector("model.norm.weight".into(), res());
        if config.lm_head {
            spec.insert_axes("lm_head.weight", vec![AxisSpec::Fixed, res()]);
        }
        spec
    }
}
