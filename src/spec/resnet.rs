//! ResNet specs with BasicBlocks or Bottlenecks and 1×1-conv shortcuts (He et al. 2016), in
//! the naming of torchvision's `resnet18/34/50` and of the CIFAR ResNets of the LLFC paper's code
//! (`src/model/cifar_resnet.py`, after kuangliu's `pytorch-cifar`).
//!
//! | part | torchvision | CIFAR (LLFC code) |
//! |---|---|---|
//! | stem | `conv1` 7×7/2, `bn1`, max-pool | `conv1` 3×3, `bn1` |
//! | block `b` of stage `s` | `layer{s}.{b}.conv1/bn1/conv2/bn2` (`conv3/bn3` in Bottlenecks) | same |
//! | shortcut | `layer{s}.{b}.downsample.0` (1×1 conv), `.downsample.1` (BatchNorm) | `layer{s}.{b}.shortcut.0`, `.shortcut.1` |
//! | head | `fc` | `linear` |
//!
//! Permutations (Git Re-Basin's ResNet spec): a residual stream is shared by every tensor that
//! writes to or reads from it. It starts at the stem (`P_res1`, or `P_res0` when `layer1.0`
//! already has a conv shortcut, as in ResNet-50) and a new one, `P_res{s}`, starts at every
//! block of stage `s` with a conv shortcut; it is the output of that shortcut, of every
//! block's last conv and BatchNorm, the input of every block's `conv1` and shortcut, and the
//! input of the head. Inside a block, `P_layer{s}.{b}.inner` (BasicBlock) or
//! `P_layer{s}.{b}.inner1`, `.inner2` (Bottleneck) are free. BatchNorm's `num_batches_tracked`
//! is not permuted (it is a scalar).

use super::{NormKind, PermutationSpec};
use crate::error::{Error, Result};
use crate::float::Float;
use crate::params::Params;

/// The residual block of a [`ResNetLayout`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Block {
    /// Two 3×3 convs (`conv1`, `conv2`), each followed by BatchNorm.
    Basic,
    /// 1×1, 3×3, 1×1 convs (`conv1`, `conv2`, `conv3`), each followed by BatchNorm.
    Bottleneck,
}

/// The parameter names of a ResNet family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResNetNaming {
    /// torchvision: shortcuts `downsample.0/1`, head `fc`.
    Torchvision,
    /// CIFAR ResNets of the LLFC paper's code and `pytorch-cifar`: shortcuts `shortcut.0/1`,
    /// head `linear`.
    Cifar,
}

impl ResNetNaming {
    fn shortcut(self) -> &'static str {
        match self {
            Self::Torchvision => "downsample",
            Self::Cifar => "shortcut",
        }
    }

    fn head(self) -> &'static str {
        match self {
            Self::Torchvision => "fc",
            Self::Cifar => "linear",
        }
    }
}

/// The standard depths with four stages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResNetDepth {
    /// ResNet-18: BasicBlocks `[2, 2, 2, 2]`.
    ResNet18,
    /// ResNet-34: BasicBlocks `[3, 4, 6, 3]`.
    ResNet34,
    /// ResNet-50: Bottlenecks `[3, 4, 6, 3]`.
    ResNet50,
}

impl ResNetDepth {
    /// The number in the model's name (18, 34, 50).
    #[must_use]
    pub fn number(self) -> usize {
        match self {
            Self::ResNet18 => 18,
            Self::ResNet34 => 34,
            Self::ResNet50 => 50,
        }
    }
}

/// Where the parameters of a ResNet sit; see the [module docs](self). Widths are not part of
/// the layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResNetLayout {
    /// Number of blocks in each stage (stages are numbered from 1).
    pub blocks: Vec<usize>,
    /// The block type.
    pub block: Block,
    /// The parameter names.
    pub naming: ResNetNaming,
    /// `(stage, block)` of every block with a 1×1-conv + BatchNorm shortcut.
    pub shortcuts: Vec<(usize, usize)>,
}

impl ResNetLayout {
    /// A standard depth: a conv shortcut in the first block of every stage after the first,
    /// and of the first stage too for Bottlenecks (whose output is 4× wider than the stem).
    #[must_use]
    pub fn standard(depth: ResNetDepth, naming: ResNetNaming) -> Self {
        let (blocks, block) = match depth {
            ResNetDepth::ResNet18 => (vec![2, 2, 2, 2], Block::Basic),
            ResNetDepth::ResNet34 => (vec![3, 4, 6, 3], Block::Basic),
            ResNetDepth::ResNet50 => (vec![3, 4, 6, 3], Block::Bottleneck),
        };
        let first = usize::from(block == Block::Basic) + 1;
        Self {
            shortcuts: (first..=blocks.len()).map(|s| (s, 0)).collect(),
            blocks,
            block,
            naming,
        }
    }

    /// The layout read off a checkpoint: stages `s = 1, 2, …` while `layer{s}.0.conv1.weight`
    /// exists, blocks while `layer{s}.{b}.conv1.weight` exists, Bottlenecks if
    /// `layer1.0.conv3.weight` exists, and a conv shortcut wherever its weight exists.
    ///
    /// # Errors
    /// [`Error::InvalidSpec`] if there is no `layer1.0.conv1.weight`.
    pub fn from_params<F: Float>(params: &Params<F>, naming: ResNetNaming) -> Result<Self> {
        let has = |b: usize, s: usize| params.contains(&format!("layer{s}.{b}.conv1.weight"));
        let blocks: Vec<usize> = (1..)
            .map(|s| (0..).take_while(|&b| has(b, s)).count())
            .take_while(|&n| n > 0)
            .collect();
        if blocks.is_empty() {
            return Err(Error::InvalidSpec {
                reason: "a ResNet needs parameters `layer1.0.conv1.weight`, …".into(),
            });
        }
        let shortcuts = blocks
            .iter()
            .enumerate()
            .flat_map(|(si, &n)| (0..n).map(move |b| (si + 1, b)))
            .filter(|(s, b)| {
                params.contains(&format!("layer{s}.{b}.{}.0.weight", naming.shortcut()))
            })
            .collect();
        let block = if params.contains("layer1.0.conv3.weight") {
            Block::Bottleneck
        } else {
            Block::Basic
        };
        Ok(Self {
            blocks,
            block,
            naming,
            shortcuts,
        })
    }
}

/// The axes of a conv weight `[out, in, kh, kw]`.
fn conv<'a>(out: &'a str, inp: Option<&'a str>) -> [Option<&'a str>; 4] {
    [Some(out), inp, None, None]
}

impl PermutationSpec {
    /// The spec of a ResNet; see [`ResNetLayout`] and the [module docs](crate::spec::resnet)
    /// for names and permutations.
    ///
    /// # Examples
    /// ```
    /// use llfc::spec::{ResNetDepth, ResNetLayout, ResNetNaming};
    /// let layout = ResNetLayout::standard(ResNetDepth::ResNet50, ResNetNaming::Torchvision);
    /// let spec = llfc::PermutationSpec::resnet_layout(&layout);
    /// let axes = spec.axes("layer1.0.downsample.0.weight").unwrap();
    /// assert_eq!(axes[0].as_deref(), Some("P_res1"));
    /// assert_eq!(axes[1].as_deref(), Some("P_res0")); // the stem's stream
    /// assert_eq!(spec.axes("fc.weight").unwrap()[1].as_deref(), Some("P_res4"));
    /// ```
    #[must_use]
    pub fn resnet_layout(layout: &ResNetLayout) -> Self {
        let mut spec = Self::new();
        let stem = if layout.shortcuts.contains(&(1, 0)) {
            "P_res0".to_string()
        } else {
            "P_res1".to_string()
        };
        spec.insert("conv1.weight", &conv(&stem, None));
        spec.insert_norm(NormKind::BatchNorm, "bn1", Some(&stem));
        let mut cur = stem;
        for (si, &n) in layout.blocks.iter().enumerate() {
            let s = si + 1;
            for b in 0..n {
                let pre = format!("layer{s}.{b}");
                let input = cur.clone();
                if layout.shortcuts.contains(&(s, b)) {
                    cur = format!("P_res{s}");
                    let sc = layout.naming.shortcut();
                    spec.insert(format!("{pre}.{sc}.0.weight"), &conv(&cur, Some(&input)));
                    spec.insert_norm(NormKind::BatchNorm, &format!("{pre}.{sc}.1"), Some(&cur));
                }
                let inner: Vec<String> = match layout.block {
                    Block::Basic => vec![format!("P_{pre}.inner")],
                    Block::Bottleneck => vec![format!("P_{pre}.inner1"), format!("P_{pre}.inner2")],
                };
                let mut prev = input;
                for (k, out) in inner.iter().chain(std::iter::once(&cur)).enumerate() {
                    spec.insert(
                        format!("{pre}.conv{}.weight", k + 1),
                        &conv(out, Some(&prev)),
                    );
                    spec.insert_norm(
                        NormKind::BatchNorm,
                        &format!("{pre}.bn{}", k + 1),
                        Some(out),
                    );
                    prev.clone_from(out);
                }
            }
        }
        let head = layout.naming.head();
        spec.insert(format!("{head}.weight"), &[None, Some(cur)]);
        spec.insert(format!("{head}.bias"), &[None::<String>]);
        spec
    }
}
