//! Builtin specs by name, for checkpoints saved by popular model definitions, with the
//! parameter names exactly as those checkpoints store them.
//!
//! | name | model definition | parameters |
//! |---|---|---|
//! | `torchvision-vgg11`, `-vgg13`, `-vgg16`, `-vgg19` | `torchvision.models.vgg{11,13,16,19}` | `features.{N}` convs, `classifier.0/3/6`; `classifier.0` sees the last conv in 7×7 blocks |
//! | `torchvision-vgg11-bn`, … `-vgg19-bn` | `torchvision.models.vgg{…}_bn` | as above, BatchNorm at `features.{N+1}` |
//! | `torchvision-resnet18`, `-resnet34`, `-resnet50` | `torchvision.models.resnet{18,34,50}` | `conv1`, `bn1`, `layer{s}.{b}.conv{k}/bn{k}`, `downsample.0/1`, `fc` |
//! | `llfc-vgg11` … `llfc-vgg19-bn` | LLFC code, `src/model/cifar_vgg.py` | as torchvision, global average pooling: `classifier.0` is `[4096, 512]` |
//! | `cifar-resnet18`, `-resnet34`, `-resnet50` | LLFC code, `src/model/cifar_resnet.py` | `conv1` (3×3), `bn1`, `layer{s}.{b}.…`, `shortcut.0/1`, `linear` |
//!
//! Widths are free: a builtin fits the model at any width (e.g. a narrow VGG-16 for tests). See
//! [`vgg`](crate::spec::vgg) and [`resnet`](crate::spec::resnet) for the permutations.

use std::fmt;
use std::str::FromStr;

use super::{PermutationSpec, ResNetDepth, ResNetLayout, ResNetNaming, VggDepth, VggLayout};
use crate::error::{Error, Result};
use crate::float::Float;
use crate::params::Params;

/// A builtin spec; its [`name`](Builtin::name) is what `align --spec` accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Builtin {
    /// torchvision's `vgg{11,13,16,19}` (`batch_norm = false`) or `vgg{…}_bn`.
    TorchvisionVgg {
        /// Depth.
        depth: VggDepth,
        /// Whether it is the `_bn` variant.
        batch_norm: bool,
    },
    /// torchvision's `resnet18/34/50`.
    TorchvisionResNet(ResNetDepth),
    /// The LLFC paper's CIFAR VGGs (global average pooling).
    LlfcVgg {
        /// Depth.
        depth: VggDepth,
        /// Whether it is the `_bn` variant.
        batch_norm: bool,
    },
    /// The LLFC paper's CIFAR ResNet-18/34/50 (four stages, conv shortcuts, `linear` head).
    CifarResNet(ResNetDepth),
}

const VGG_DEPTHS: [VggDepth; 4] = [
    VggDepth::Vgg11,
    VggDepth::Vgg13,
    VggDepth::Vgg16,
    VggDepth::Vgg19,
];
const RESNET_DEPTHS: [ResNetDepth; 3] = [
    ResNetDepth::ResNet18,
    ResNetDepth::ResNet34,
    ResNetDepth::ResNet50,
];

impl Builtin {
    /// Every builtin, in the order of the table in the [module docs](self).
    #[must_use]
    pub fn all() -> Vec<Self> {
        let vggs = |make: fn(VggDepth, bool) -> Self| {
            [false, true]
                .into_iter()
                .flat_map(move |bn| VGG_DEPTHS.into_iter().map(move |d| make(d, bn)))
        };
        let mut all: Vec<Self> =
            vggs(|depth, batch_norm| Self::TorchvisionVgg { depth, batch_norm }).collect();
        all.extend(RESNET_DEPTHS.map(Self::TorchvisionResNet));
        all.extend(vggs(|depth, batch_norm| Self::LlfcVgg {
            depth,
            batch_norm,
        }));
        all.extend(RESNET_DEPTHS.map(Self::CifarResNet));
        all
    }

    /// The name, e.g. `torchvision-vgg16-bn`, `cifar-resnet18`.
    #[must_use]
    pub fn name(&self) -> String {
        let bn = |b: bool| if b { "-bn" } else { "" };
        match *self {
            Self::TorchvisionVgg { depth, batch_norm } => {
                format!("torchvision-vgg{}{}", depth.number(), bn(batch_norm))
            }
            Self::TorchvisionResNet(d) => format!("torchvision-resnet{}", d.number()),
            Self::LlfcVgg { depth, batch_norm } => {
                format!("llfc-vgg{}{}", depth.number(), bn(batch_norm))
            }
            Self::CifarResNet(d) => format!("cifar-resnet{}", d.number()),
        }
    }

    /// The spec, independent of widths.
    #[must_use]
    pub fn spec(&self) -> PermutationSpec {
        match *self {
            Self::TorchvisionVgg { depth, batch_norm } => {
                PermutationSpec::vgg_layout(&VggLayout::torchvision(depth, batch_norm))
            }
            Self::LlfcVgg { depth, batch_norm } => {
                PermutationSpec::vgg_layout(&VggLayout::llfc(depth, batch_norm))
            }
            Self::TorchvisionResNet(d) => PermutationSpec::resnet_layout(&ResNetLayout::standard(
                d,
                ResNetNaming::Torchvision,
            )),
            Self::CifarResNet(d) => {
                PermutationSpec::resnet_layout(&ResNetLayout::standard(d, ResNetNaming::Cifar))
            }
        }
    }

    /// The spec, checked against a checkpoint: it must [validate](PermutationSpec::validate),
    /// and every parameter the spec leaves unmentioned must be a BatchNorm
    /// `num_batches_tracked` counter (anything else means the checkpoint is another model, whose
    /// extra tensors would silently be left unpermuted).
    ///
    /// # Errors
    /// Everything [`PermutationSpec::validate`] reports; [`Error::InvalidSpec`] naming the
    /// parameters the builtin does not know.
    pub fn spec_for<F: Float>(&self, params: &Params<F>) -> Result<PermutationSpec> {
        let spec = self.spec();
        let validation = spec.validate(params)?;
        let unknown: Vec<&str> = validation
            .unmentioned
            .iter()
            .map(String::as_str)
            .filter(|n| !n.ends_with("num_batches_tracked"))
            .collect();
        if !unknown.is_empty() {
            return Err(Error::InvalidSpec {
                reason: format!(
                    "builtin spec `{}` does not know the parameters {} of this checkpoint (is it another model?)",
                    self.name(),
                    unknown.join(", ")
                ),
            });
        }
        Ok(spec)
    }
}

impl fmt::Display for Builtin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl FromStr for Builtin {
    type Err = Error;

    /// Parse a name of [`Builtin::all`]; `_` may stand for `-` (`torchvision-vgg16_bn`).
    fn from_str(name: &str) -> Result<Self> {
        let wanted = name.replace('_', "-");
        Self::all()
            .into_iter()
            .find(|b| b.name() == wanted)
            .ok_or_else(|| Error::InvalidSpec {
                reason: format!(
                    "unknown builtin spec `{name}` (builtins: {})",
                    Self::all()
                        .iter()
                        .map(Self::name)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        let all = Builtin::all();
        assert_eq!(all.len(), 22);
        for b in &all {
            assert_eq!(b.name().parse::<Builtin>().unwrap(), *b);
        }
        let names: std::collections::BTreeSet<String> = all.iter().map(Builtin::name).collect();
        assert_eq!(names.len(), all.len());
        assert_eq!(
            "torchvision-vgg16_bn".parse::<Builtin>().unwrap(),
            Builtin::TorchvisionVgg {
                depth: VggDepth::Vgg16,
                batch_norm: true
            }
        );
        assert!("torchvision-vgg17".parse::<Builtin>().is_err());
    }
}
