//! `align`'s specs: the builtins shaped after the checkpoint, or a JSON spec file.

use llfc::io::{read_regular_file, Checkpoint};
use llfc::spec::{BatchNormParams, Builtin, Shortcut, TransformerConfig, VggConfig};
use llfc::PermutationSpec;

use crate::cli::CliError;

/// A builtin spec shaped after the checkpoint, or a JSON spec file.
pub(crate) fn load_spec(name: &str, a: &Checkpoint) -> Result<PermutationSpec, CliError> {
    let has = |k: &str| a.params.contains(k);
    let count = |f: &dyn Fn(usize) -> String| (0..).take_while(|&i| has(&f(i))).count();
    match name {
        "mlp" => Ok(PermutationSpec::mlp_from_params(&a.params)?),
        "vgg" => {
            let num_conv = count(&|i| format!("conv{i}.weight"));
            let num_linear = count(&|j| format!("fc{j}.weight"));
            if num_conv == 0 || num_linear == 0 {
                return Err(CliError::Usage(
                    "spec `vgg` expects parameters `conv0.weight`, … and `fc0.weight`, …".into(),
                ));
            }
            Ok(PermutationSpec::vgg(&VggConfig {
                num_conv,
                num_linear,
                batch_norm: has("bn0.weight"),
                conv_bias: has("conv0.bias"),
            }))
        }
        "resnet20" => {
            let blocks: Vec<usize> = (1..=3)
                .map(|s| count(&|b| format!("layer{s}.{b}.conv1.weight")))
                .collect();
            if blocks.contains(&0) {
                return Err(CliError::Usage(
                    "spec `resnet20` expects parameters `layer{1,2,3}.{b}.conv1.weight`, …".into(),
                ));
            }
            let shortcut = if has("layer2.0.shortcut.0.weight") {
                Shortcut::Conv1x1
            } else {
                Shortcut::Padding
            };
            Ok(PermutationSpec::resnet_cifar(&blocks, shortcut))
        }
        name if name.parse::<Builtin>().is_ok() => {
            let builtin: Builtin = name.parse()?;
            Ok(builtin.spec_for(&a.params)?)
        }
        path => {
            let bytes = read_regular_file(path).map_err(|e| CliError::Usage(format!("unknown spec `{path}`: not a builtin (mlp, vgg, resnet20, resnet-option-a, gpt2, bert, llama, {}) and not a readable JSON file ({e})", Builtin::all().iter().map(Builtin::name).collect::<Vec<_>>().join(", "))))?;
            let text = String::from_utf8(bytes).map_err(|e| {
                CliError::Usage(format!("spec file `{path}` is not UTF-8 text: {e}"))
            })?;
            Ok(PermutationSpec::from_json(&text)?)
        }
    }
}

/// The builtins with structured permutations (option-A ResNets, transformers), shaped after the
/// checkpoint; `None` for any other name.
pub(crate) fn structured_builtin(
    name: &str,
    a: &Checkpoint,
    heads: Option<usize>,
) -> Result<Option<PermutationSpec>, CliError> {
    let has = |k: &str| a.params.contains(k);
    let count = |f: &dyn Fn(usize) -> String| (0..).take_while(|&i| has(&f(i))).count();
    let width = |k: &str, axis: usize| a.params.get(k).and_then(|t| t.shape().get(axis).copied());
    let transformer = |layers: usize,
                       d_model: Option<usize>|
     -> Result<TransformerConfig, CliError> {
        let heads = heads.ok_or_else(|| {
            CliError::Usage(format!(
                "spec `{name}` needs --heads (the number of attention heads)"
            ))
        })?;
        match d_model {
            Some(d_model) if layers > 0 => Ok(TransformerConfig {
                layers,
                heads,
                d_model,
                lm_head: has("lm_head.weight"),
            }),
            _ => Err(CliError::Usage(format!(
                "spec `{name}` does not fit the checkpoint (see the README's table of builtin names)"
            ))),
        }
    };
    Ok(Some(match name {
        "resnet-option-a" => {
            let blocks: Vec<usize> = (1..=3)
                .map(|s| count(&|b| format!("layer{s}.{b}.conv1.weight")))
                .collect();
            let Some(w) = width("conv1.weight", 0).filter(|_| !blocks.contains(&0)) else {
                return Err(CliError::Usage(
                    "spec `resnet-option-a` expects `conv1.weight` and `layer{1,2,3}.{b}.conv1.weight`, …".into(),
                ));
            };
            let bn = if has("bn1.weight") {
                BatchNormParams::Full
            } else if has("bn1.running_mean") {
                BatchNormParams::RunningStatsOnly
            } else {
                BatchNormParams::None
            };
            PermutationSpec::resnet_cifar_option_a(&blocks, w, bn)
        }
        "gpt2" => {
            let layers = count(&|i| format!("transformer.h.{i}.attn.c_attn.weight"));
            PermutationSpec::gpt2(&transformer(layers, width("transformer.wte.weight", 1))?)
        }
        "llama" => {
            let layers = count(&|i| format!("model.layers.{i}.self_attn.q_proj.weight"));
            PermutationSpec::llama(&transformer(layers, width("model.embed_tokens.weight", 1))?)
        }
        "bert" => {
            let layers = count(&|i| format!("bert.encoder.layer.{i}.attention.self.query.weight"));
            let d = width("bert.embeddings.word_embeddings.weight", 1);
            let mut spec = PermutationSpec::bert_encoder(&transformer(layers, d)?, "bert");
            if has("bert.pooler.dense.weight") {
                // The pooler reads the residual stream; its output stays in place.
                spec.insert("bert.pooler.dense.weight", &[None, Some("P_res")]);
                spec.insert("bert.pooler.dense.bias", &[None::<&str>]);
            }
            spec
        }
        _ => return Ok(None),
    }))
}
