//! VGG specs in the naming of `torch.nn.Sequential` VGGs: torchvision's `vgg11 … vgg19_bn`
//! (Simonyan & Zisserman 2015) and the CIFAR VGGs of the LLFC paper's code (Zhou et al. 2023).
//!
//! Both store the convolutions as `features.{N}` (3×3 conv with bias, BatchNorm at `N + 1` in
//! the `_bn` variants, ReLU and max-pool in between) and the head as `classifier.0/3/6`
//! (linear, ReLU, dropout, linear, ReLU, dropout, linear). They differ before the head:
//!
//! | family | pooling before `classifier.0` | `classifier.0.weight` |
//! |---|---|---|
//! | torchvision | adaptive average pool to 7×7, flatten | `[4096, 512·7·7]`, viewed as `[4096, 512, 7, 7]` |
//! | LLFC paper | adaptive average pool to 1×1 (global), flatten | `[4096, 512]` |
//!
//! Every conv output and the two hidden linear outputs carry their own permutation, named after
//! the producing layer: `P_features.{N}`, `P_classifier.{M}`. The last conv's permutation acts on
//! `classifier.0`'s input in blocks of 49 consecutive columns for torchvision (through an
//! [`Unflatten`] view), on single columns for the LLFC models.

use super::{NormKind, PermutationSpec, Unflatten};
use crate::error::{Error, Result};
use crate::float::Float;
use crate::params::Params;

/// The depth of a VGG (its configuration letter in Simonyan & Zisserman 2015).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VggDepth {
    /// VGG-11, configuration A: 8 convs.
    Vgg11,
    /// VGG-13, configuration B: 10 convs.
    Vgg13,
    /// VGG-16, configuration D: 13 convs.
    Vgg16,
    /// VGG-19, configuration E: 16 convs.
    Vgg19,
}

impl VggDepth {
    /// Number of convs in each of the five stages (between max-pools).
    #[must_use]
    pub fn convs_per_stage(self) -> [usize; 5] {
        match self {
            Self::Vgg11 => [1, 1, 2, 2, 2],
            Self::Vgg13 => [2, 2, 2, 2, 2],
            Self::Vgg16 => [2, 2, 3, 3, 3],
            Self::Vgg19 => [2, 2, 4, 4, 4],
        }
    }

    /// The number in the model's name (11, 13, 16, 19).
    #[must_use]
    pub fn number(self) -> usize {
        match self {
            Self::Vgg11 => 11,
            Self::Vgg13 => 13,
            Self::Vgg16 => 16,
            Self::Vgg19 => 19,
        }
    }
}

/// Where the parameters of a `features`/`classifier` VGG sit; see the [module docs](self).
/// Widths are not part of the layout: one layout fits every width.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VggLayout {
    /// Index `N` of every conv in `features` (`features.{N}.weight`, `[out, in, kh, kw]`), in
    /// forward order.
    pub convs: Vec<usize>,
    /// Whether BatchNorm `features.{N + 1}` follows each conv.
    pub batch_norm: bool,
    /// Whether the convs have a bias `features.{N}.bias`.
    pub conv_bias: bool,
    /// Index `M` of every linear layer in `classifier` (`classifier.{M}.weight`), in order.
    pub linears: Vec<usize>,
    /// Whether the linear layers have a bias.
    pub linear_bias: bool,
    /// Spatial sizes of the pooled feature map flattened into the first linear layer
    /// (`[7, 7]` for torchvision; empty after global pooling).
    pub flattened: Vec<usize>,
}

impl VggLayout {
    /// Conv indices of `features` for a depth: after each conv come 1 (ReLU) or 2 (BatchNorm,
    /// ReLU) more modules, after each stage a max-pool.
    fn conv_indices(depth: VggDepth, batch_norm: bool) -> Vec<usize> {
        let step = if batch_norm { 3 } else { 2 };
        let mut n = 0;
        let mut convs = Vec::new();
        for count in depth.convs_per_stage() {
            for _ in 0..count {
                convs.push(n);
                n += step;
            }
            n += 1;
        }
        convs
    }

    /// torchvision's `vgg{11,13,16,19}` (`batch_norm = false`) and `vgg{…}_bn`.
    #[must_use]
    pub fn torchvision(depth: VggDepth, batch_norm: bool) -> Self {
        Self {
            convs: Self::conv_indices(depth, batch_norm),
            batch_norm,
            conv_bias: true,
            linears: vec![0, 3, 6],
            linear_bias: true,
            flattened: vec![7, 7],
        }
    }

    /// The LLFC paper's CIFAR VGGs (`src/model/cifar_vgg.py` of its code): as torchvision's,
    /// but with global average pooling, so `classifier.0` is `[4096, 512]`.
    #[must_use]
    pub fn llfc(depth: VggDepth, batch_norm: bool) -> Self {
        Self {
            flattened: Vec::new(),
            ..Self::torchvision(depth, batch_norm)
        }
    }

    /// The layout read off a checkpoint: every rank-4 `features.{N}.weight` is a conv, BatchNorm
    /// if `features.{N + 1}.running_var` exists, every rank-2 `classifier.{M}.weight` a linear
    /// layer; biases from the first conv and linear; the flattened size per channel is
    /// `classifier.0`'s input width over the last conv's channels (`[s, s]` when that is a
    /// square `s²`, so 49 reads as 7×7).
    ///
    /// # Errors
    /// [`Error::InvalidSpec`] if there is no conv or no linear layer, or the first linear
    /// layer's input width is not a multiple of the last conv's channels.
    pub fn from_params<F: Float>(params: &Params<F>) -> Result<Self> {
        let indices = |prefix: &str, rank: usize| -> Vec<usize> {
            let mut v: Vec<usize> = params
                .iter()
                .filter(|(_, t)| t.ndim() == rank)
                .filter_map(|(name, _)| {
                    name.strip_prefix(prefix)?
                        .strip_suffix(".weight")?
                        .parse()
                        .ok()
                })
                .collect();
            v.sort_unstable();
            v
        };
        let convs = indices("features.", 4);
        let linears = indices("classifier.", 2);
        let (Some(&first), Some(&last), Some(&head)) =
            (convs.first(), convs.last(), linears.first())
        else {
            return Err(Error::InvalidSpec {
                reason: "a VGG needs rank-4 `features.{N}.weight` and rank-2 `classifier.{M}.weight` parameters".into(),
            });
        };
        let channels = params[format!("features.{last}.weight").as_str()].shape()[0];
        let width = params[format!("classifier.{head}.weight").as_str()].shape()[1];
        if channels == 0 || !width.is_multiple_of(channels) {
            return Err(Error::InvalidSpec {
                reason: format!(
                    "`classifier.{head}.weight` has {width} inputs, not a multiple of the {channels} channels of `features.{last}`"
                ),
            });
        }
        let block = width / channels;
        let side = (1..=block).find(|s| s * s >= block).unwrap_or(1);
        let flattened = match block {
            1 => Vec::new(),
            _ if side * side == block => vec![side, side],
            _ => vec![block],
        };
        Ok(Self {
            batch_norm: params.contains(&format!("features.{}.running_var", first + 1)),
            conv_bias: params.contains(&format!("features.{first}.bias")),
            linear_bias: params.contains(&format!("classifier.{head}.bias")),
            convs,
            linears,
            flattened,
        })
    }
}

impl PermutationSpec {
    /// The spec of a `features`/`classifier` VGG; see [`VggLayout`] and the
    /// [module docs](crate::spec::vgg) for names and permutations.
    ///
    /// # Examples
    /// ```
    /// use llfc::spec::{VggDepth, VggLayout};
    /// let spec = llfc::PermutationSpec::vgg_layout(&VggLayout::torchvision(VggDepth::Vgg11, true));
    /// // The last conv of vgg11_bn is features.25; classifier.0 sees it in blocks of 7×7.
    /// assert_eq!(spec.axes("classifier.0.weight").unwrap()[1].as_deref(), Some("P_features.25"));
    /// assert_eq!(spec.unflatten("classifier.0.weight").unwrap().inner, vec![7, 7]);
    /// ```
    #[must_use]
    pub fn vgg_layout(layout: &VggLayout) -> Self {
        let mut spec = Self::new();
        let mut prev: Option<String> = None;
        for &n in &layout.convs {
            let out = Some(format!("P_features.{n}"));
            spec.insert(
                format!("features.{n}.weight"),
                &[out.clone(), prev.clone(), None, None],
            );
            if layout.conv_bias {
                spec.insert(format!("features.{n}.bias"), std::slice::from_ref(&out));
            }
            if layout.batch_norm {
                spec.insert_norm(
                    NormKind::BatchNorm,
                    &format!("features.{}", n + 1),
                    out.as_deref(),
                );
            }
            prev = out;
        }
        let last = layout.linears.len().saturating_sub(1);
        for (j, &m) in layout.linears.iter().enumerate() {
            let out = (j < last).then(|| format!("P_classifier.{m}"));
            let weight = format!("classifier.{m}.weight");
            if j == 0 && !layout.flattened.is_empty() {
                let mut axes = vec![out.clone(), prev.clone()];
                axes.extend(layout.flattened.iter().map(|_| None));
                let view = Unflatten {
                    axis: 1,
                    inner: layout.flattened.clone(),
                };
                spec.insert_unflattened(weight, view, &axes);
            } else {
                spec.insert(weight, &[out.clone(), prev.clone()]);
            }
            if layout.linear_bias {
                spec.insert(format!("classifier.{m}.bias"), std::slice::from_ref(&out));
            }
            prev = out;
        }
        spec
    }
}
