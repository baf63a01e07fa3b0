//! Specs of sequential networks: chains of linear/conv layers with norms
//! ([`PermutationSpec::chain`]), MLPs ([`PermutationSpec::mlp`],
//! [`PermutationSpec::mlp_with_names`], [`PermutationSpec::mlp_from_params`]), VGG-style CNNs
//! ([`PermutationSpec::vgg`]) and CIFAR ResNets with 1×1-conv shortcuts
//! ([`PermutationSpec::resnet20`], [`PermutationSpec::resnet_cifar`]).

use super::PermutationSpec;
use crate::error::{Error, Result};
use crate::float::Float;
use crate::params::Params;

/// The kind of a producing layer in a [`ChainLayer`], which fixes its weight's rank.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerKind {
    /// A linear layer, weight `[out, in]`.
    Linear,
    /// A 2-D convolution, weight `[out, in, kh, kw]`.
    Conv2d,
}

/// The normalisation that follows a layer in a [`ChainLayer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormKind {
    /// BatchNorm: `{prefix}.weight`, `.bias`, `.running_mean`, `.running_var` (all `[out]`).
    /// `.num_batches_tracked` is a scalar and stays unmentioned.
    BatchNorm,
    /// LayerNorm over the unit axis: `{prefix}.weight`, `.bias` (both `[out]`).
    LayerNorm,
}

/// One producing layer of a sequential network for [`PermutationSpec::chain`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainLayer {
    /// Layer kind.
    pub kind: LayerKind,
    /// Name of the weight parameter.
    pub weight: String,
    /// Name of the bias parameter, if the layer has one.
    pub bias: Option<String>,
    /// Normalisation after the layer: its kind and name prefix.
    pub norm: Option<(NormKind, String)>,
}

/// Shape of a VGG-style CNN for [`PermutationSpec::vgg`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VggConfig {
    /// Number of 3×3 conv layers (`conv{i}`, `i = 0..num_conv`). Default 13 (VGG-16).
    pub num_conv: usize,
    /// Number of linear layers after the convs (`fc{j}`). Default 3.
    pub num_linear: usize,
    /// Whether each conv is followed by BatchNorm `bn{i}`. Default true.
    pub batch_norm: bool,
    /// Whether the convs have a bias `conv{i}.bias`. Default false (the BatchNorm shift
    /// replaces it).
    pub conv_bias: bool,
}

impl Default for VggConfig {
    fn default() -> Self {
        Self {
            num_conv: 13,
            num_linear: 3,
            batch_norm: true,
            conv_bias: false,
        }
    }
}

/// Shortcut type of a CIFAR ResNet's stage transitions (He et al. 2016, §4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Shortcut {
    /// Option B: a 1×1 conv `shortcut.0` followed by BatchNorm `shortcut.1` where the width or
    /// stride changes. Each stage has its own residual-stream permutation.
    #[default]
    Conv1x1,
    /// Option A: parameter-free subsampling and zero-padding of channels. The padding embeds
    /// stage `s`'s channels at fixed positions of stage `s+1`'s, which ties the residual streams
    /// of all stages through a fixed map that no per-axis permutation preserves, so the residual
    /// streams are left unpermuted and only the block-inner permutations are used.
    Padding,
}

impl PermutationSpec {
    /// A sequential network: layer `i`'s output units carry permutation `P_{i}` for every layer
    /// but the last (whose outputs are the logits), and layer `i + 1` consumes `P_{i}` on its
    /// input axis. Norm vectors after layer `i` are permuted by `P_{i}`; a norm after the last
    /// layer is left unpermuted.
    ///
    /// A linear layer that follows convs must consume exactly the channels (global pooling or
    /// 1×1 spatial size); a flattened `C·h·w` input axis is not a single permutable axis.
    #[must_use]
    pub fn chain(layers: &[ChainLayer]) -> Self {
        let mut spec = Self::new();
        let last = layers.len().saturating_sub(1);
        let perm = |i: usize| (i < last).then(|| format!("P_{i}"));
        for (i, layer) in layers.iter().enumerate() {
            let out = perm(i);
            let inp = if i == 0 { None } else { perm(i - 1) };
            let mut w = vec![out.clone(), inp];
            if layer.kind == LayerKind::Conv2d {
                w.extend([None, None]);
            }
            spec.axes.insert(layer.weight.clone(), w);
            if let Some(b) = &layer.bias {
                spec.axes.insert(b.clone(), vec![out.clone()]);
            }
            if let Some((kind, prefix)) = &layer.norm {
                spec.insert_norm(*kind, prefix, out.as_deref());
            }
        }
        spec
    }

    pub(super) fn insert_norm(&mut self, kind: NormKind, prefix: &str, perm: Option<&str>) {
        let fields: &[&str] = match kind {
            NormKind::BatchNorm => &["weight", "bias", "running_mean", "running_var"],
            NormKind::LayerNorm => &["weight", "bias"],
        };
        for f in fields {
            self.insert(format!("{prefix}.{f}"), &[perm]);
        }
    }

    /// An MLP of `num_layers` linear layers named `layers.{i}.weight` (`[out, in]`) and
    /// `layers.{i}.bias` (`[out]`), with hidden permutations `P_0 … P_{L−2}` (see
    /// [`PermutationSpec::chain`]). This is the layout of [`crate::mlp`].
    ///
    /// # Examples
    /// ```
    /// let spec = llfc::PermutationSpec::mlp(3);
    /// assert_eq!(spec.perm_names(), vec!["P_0", "P_1"]);
    /// assert_eq!(spec.axes("layers.1.weight").unwrap(), &[Some("P_1".to_string()), Some("P_0".to_string())]);
    /// ```
    #[must_use]
    pub fn mlp(num_layers: usize) -> Self {
        let names: Vec<(String, Option<String>)> = (0..num_layers)
            .map(|i| {
                (
                    format!("layers.{i}.weight"),
                    Some(format!("layers.{i}.bias")),
                )
            })
            .collect();
        Self::mlp_with_names(&names)
    }

    /// An MLP over the user's own parameter names: one `(weight, optional bias)` pair per linear
    /// layer, in forward order, e.g. `[("fc1.weight", Some("fc1.bias")), ("fc2.weight", None)]`.
    #[must_use]
    pub fn mlp_with_names<S: AsRef<str>>(layers: &[(S, Option<S>)]) -> Self {
        let chain: Vec<ChainLayer> = layers
            .iter()
            .map(|(w, b)| ChainLayer {
                kind: LayerKind::Linear,
                weight: w.as_ref().to_string(),
                bias: b.as_ref().map(|b| b.as_ref().to_string()),
                norm: None,
            })
            .collect();
        Self::chain(&chain)
    }

    /// A VGG-style CNN: convs `conv{i}` (weight `[out, in, 3, 3]`, bias if
    /// [`VggConfig::conv_bias`]) each followed by BatchNorm `bn{i}` if
    /// [`VggConfig::batch_norm`], then linear layers `fc{j}` (weight and bias). Pooling and
    /// activations have no parameters. Permutations `P_0 …` follow [`PermutationSpec::chain`]:
    /// conv `i` produces `P_{i}`, linear `j` produces `P_{num_conv + j}`, the last is unpermuted.
    #[must_use]
    pub fn vgg(config: &VggConfig) -> Self {
        let mut layers: Vec<ChainLayer> = (0..config.num_conv)
            .map(|i| ChainLayer {
                kind: LayerKind::Conv2d,
                weight: format!("conv{i}.weight"),
                bias: config.conv_bias.then(|| format!("conv{i}.bias")),
                norm: config
                    .batch_norm
                    .then(|| (NormKind::BatchNorm, format!("bn{i}"))),
            })
            .collect();
        layers.extend((0..config.num_linear).map(|j| ChainLayer {
            kind: LayerKind::Linear,
            weight: format!("fc{j}.weight"),
            bias: Some(format!("fc{j}.bias")),
            norm: None,
        }));
        Self::chain(&layers)
    }

    /// ResNet-20 for CIFAR (He et al. 2016): three stages of three basic blocks. See
    /// [`PermutationSpec::resnet_cifar`] for the names and permutations.
    #[must_use]
    pub fn resnet20(shortcut: Shortcut) -> Self {
        Self::resnet_cifar(&[3, 3, 3], shortcut)
    }

    /// A CIFAR-style ResNet (ResNet-6n+2) with BatchNorm, in the PyTorch naming of the common
    /// `resnet_cifar` implementations:
    ///
    /// - stem: `conv1.weight` `[w, 3, 3, 3]`, `bn1.*`;
    /// - block `b` of stage `s` (`s = 1, 2, 3`): `layer{s}.{b}.conv1.weight`, `layer{s}.{b}.bn1.*`,
    ///   `layer{s}.{b}.conv2.weight`, `layer{s}.{b}.bn2.*`, and, for the first block of stages 2
    ///   and 3 with [`Shortcut::Conv1x1`], `layer{s}.0.shortcut.0.weight` `[out, in, 1, 1]` and
    ///   `layer{s}.0.shortcut.1.*` (BatchNorm);
    /// - head: `linear.weight` `[classes, 4w]`, `linear.bias`.
    ///
    /// Permutations: with [`Shortcut::Conv1x1`], `P_res{s}` is the residual stream of stage `s`,
    /// shared by the stem (for `s = 1`), every block's `conv2`/`bn2` output, every block's
    /// `conv1` input, the shortcut, and the head; every block has its own inner permutation
    /// `P_layer{s}.{b}.inner` (`conv1`/`bn1` output, `conv2` input). With [`Shortcut::Padding`]
    /// only the inner permutations exist (see its docs).
    #[must_use]
    pub fn resnet_cifar(blocks_per_stage: &[usize], shortcut: Shortcut) -> Self {
        let mut spec = Self::new();
        let res = |s: usize| (shortcut == Shortcut::Conv1x1).then(|| format!("P_res{s}"));
        let conv = |out: Option<String>, inp: Option<String>| vec![out, inp, None, None];
        spec.axes.insert("conv1.weight".into(), conv(res(1), None));
        spec.insert_norm(NormKind::BatchNorm, "bn1", res(1).as_deref());
        for (si, &blocks) in blocks_per_stage.iter().enumerate() {
            let s = si + 1;
            for b in 0..blocks {
                let pre = format!("layer{s}.{b}");
                let inner = Some(format!("P_{pre}.inner"));
                let input = if b == 0 && s > 1 { res(s - 1) } else { res(s) };
                spec.axes.insert(
                    format!("{pre}.conv1.weight"),
                    conv(inner.clone(), input.clone()),
                );
                spec.insert_norm(NormKind::BatchNorm, &format!("{pre}.bn1"), inner.as_deref());
                spec.axes
                    .insert(format!("{pre}.conv2.weight"), conv(res(s), inner));
                spec.insert_norm(
                    NormKind::BatchNorm,
                    &format!("{pre}.bn2"),
                    res(s).as_deref(),
                );
                if b == 0 && s > 1 && shortcut == Shortcut::Conv1x1 {
                    spec.axes
                        .insert(format!("{pre}.shortcut.0.weight"), conv(res(s), input));
                    spec.insert_norm(
                        NormKind::BatchNorm,
                        &format!("{pre}.shortcut.1"),
                        res(s).as_deref(),
                    );
                }
            }
        }
        let last = res(blocks_per_stage.len());
        spec.axes.insert("linear.weight".into(), vec![None, last]);
        spec.axes.insert("linear.bias".into(), vec![None]);
        spec
    }

    /// The MLP spec of a checkpoint whose linear layers are named `layers.{i}.weight`
    /// (`[out, in]`, optional `layers.{i}.bias`), as PyTorch names the modules of an
    /// `nn.Sequential`: **every** such weight is taken, in increasing `i`, gaps allowed
    /// (`nn.Sequential(Linear, ReLU, Linear, ReLU, Linear)` saves `layers.0`, `layers.2`,
    /// `layers.4`), provided the widths chain (each layer's `in` is the previous one's `out`).
    /// The result is [`PermutationSpec::mlp_with_names`] over those layers: hidden permutations
    /// `P_0, P_1, …` in layer order, biases included where present.
    ///
    /// # Errors
    /// [`Error::InvalidSpec`] saying what is missing or which layer does not fit (and what to do
    /// instead) if fewer than two `layers.{i}.weight` exist, one is not a matrix, or the widths
    /// do not chain. Never a silently shorter MLP.
    ///
    /// # Examples
    /// ```
    /// use llfc::{Params, PermutationSpec};
    /// use ndarray::{Array1, Array2};
    /// let mut p = Params::<f32>::new();
    /// for (i, (o, n)) in [(0, (8, 4)), (2, (8, 8)), (4, (3, 8))] {
    ///     p.insert(format!("layers.{i}.weight"), Array2::zeros((o, n)).into_dyn());
    ///     p.insert(format!("layers.{i}.bias"), Array1::zeros(o).into_dyn());
    /// }
    /// let spec = PermutationSpec::mlp_from_params(&p)?;
    /// assert_eq!(spec.perm_names(), ["P_0", "P_1"]);
    /// assert_eq!(spec.axes("layers.4.weight").unwrap(), [None, Some("P_1".to_string())]);
    /// p.insert("layers.5.weight", Array2::zeros((3, 7)).into_dyn()); // 7 ≠ 3
    /// assert!(PermutationSpec::mlp_from_params(&p).unwrap_err().to_string().contains("layers.5.weight"));
    /// # Ok::<(), llfc::Error>(())
    /// ```
    pub fn mlp_from_params<F: Float>(params: &Params<F>) -> Result<Self> {
        let mut layers: Vec<(usize, &str)> = params
            .names()
            .filter_map(|k| {
                let i = k.strip_prefix("layers.")?.strip_suffix(".weight")?;
                let n: usize = i.parse().ok()?;
                (n.to_string() == i).then_some((n, k))
            })
            .collect();
        layers.sort_unstable();
        let advice = "name the linear layers `layers.{i}.weight` ([out, in]) and \
                      `layers.{i}.bias`, or pass a JSON spec file";
        if layers.len() < 2 {
            let found = layers
                .first()
                .map_or_else(|| "none".to_string(), |(_, k)| format!("only `{k}`"));
            return Err(Error::InvalidSpec {
                reason: format!(
                    "the `mlp` spec needs at least two linear layers `layers.{{i}}.weight`, \
                     found {found}: {advice}"
                ),
            });
        }
        let mut prev: Option<(&str, usize)> = None;
        for &(_, name) in &layers {
            let shape = params[name].shape();
            let &[out, inp] = shape else {
                return Err(Error::InvalidSpec {
                    reason: format!(
                        "`{name}` has shape {shape:?}, not [out, in]: the `mlp` spec takes every \
                         `layers.{{i}}.weight` as a linear layer; for other layers (norms, convs) \
                         pass a JSON spec file"
                    ),
                });
            };
            if let Some((p, p_out)) = prev
                && inp != p_out
            {
                return Err(Error::InvalidSpec {
                    reason: format!(
                        "`{name}` ([{out}, {inp}]) does not follow `{p}` ({p_out} outputs): \
                             the `mlp` spec chains every `layers.{{i}}.weight` in index order; \
                             for another architecture pass a JSON spec file"
                    ),
                });
            }
            prev = Some((name, out));
        }
        let names: Vec<(String, Option<String>)> = layers
            .iter()
            .map(|&(_, w)| {
                let bias = format!("{}.bias", w.strip_suffix(".weight").unwrap_or(w));
                let bias = params.contains(&bias).then_some(bias);
                (w.to_string(), bias)
            })
            .collect();
        Ok(Self::mlp_with_names(&names))
    }
}
