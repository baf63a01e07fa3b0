//! CIFAR ResNets with option-A (zero-padding) shortcuts, with their residual-stream symmetry.
//!
//! He et al. 2016 (§4.2, option A) — and the LLFC paper's ResNet-20 — change the width between
//! stages with the parameter-free shortcut
//! `F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4))`: stage `s`'s `c`
//! channels sit at offset `planes / 4` of stage `s + 1`'s `planes = 2 c`, between zero
//! channels. Permuting stage `s`'s residual stream by `P_res{s}` therefore permutes stage
//! `s + 1`'s embedded channels by the same permutation (shifted), while stage `s + 1`'s
//! remaining channels — zero on the shortcut — may be permuted freely among themselves. The
//! spec says exactly that with an [`Embed`](super::Embed) declaration:
//! `P_res{s+1}` embeds `P_res{s}` at offset `planes / 4`. Weight and activation matching
//! solve it exactly, atom by atom (see [`crate::matching::structured`]).

use super::{NormKind, PermDecl, PermutationSpec};

/// Which BatchNorm tensors an option-A ResNet's checkpoint holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BatchNormParams {
    /// `weight`, `bias`, `running_mean`, `running_var` (`affine=True`,
    /// `track_running_stats=True`, PyTorch's default). The default.
    #[default]
    Full,
    /// `running_mean`, `running_var` only (`affine=False`).
    RunningStatsOnly,
    /// None at all (`affine=False, track_running_stats=False`: batch statistics at every
    /// forward), as in the LLFC paper's ResNet-20 variant.
    None,
}

impl PermutationSpec {
    /// A CIFAR ResNet (ResNet-6n+2: 20, 32, 44, 56 for `n = 3, 5, 7, 9` blocks per stage) with
    /// option-A shortcuts and base width `width` (16 in He et al.), in the naming of
    /// [`PermutationSpec::resnet_cifar`] (`conv1`, `bn1`, `layer{s}.{b}.conv1/bn1/conv2/bn2`,
    /// `linear`; no shortcut parameters).
    ///
    /// Permutations: `P_res{s}` is stage `s`'s residual stream (stem, every block's `conv2`
    /// output and `conv1` input, the head), and `P_res{s+1}` embeds `P_res{s}` at offset
    /// `width · 2^s / 4` (the zero padding puts stage `s`'s channels there); every block has its inner permutation
    /// `P_layer{s}.{b}.inner`. Compared with [`Shortcut::Padding`](super::Shortcut::Padding),
    /// which leaves the residual streams unpermuted, this keeps the whole symmetry.
    ///
    /// # Examples
    /// ```
    /// use llfc::spec::BatchNormParams;
    /// let spec = llfc::PermutationSpec::resnet_cifar_option_a(&[3, 3, 3], 16, BatchNormParams::Full);
    /// let e = spec.decl("P_res2").unwrap().embeds.as_ref().unwrap();
    /// assert_eq!((e.perm.as_str(), e.offset), ("P_res1", 8));
    /// ```
    #[must_use]
    pub fn resnet_cifar_option_a(
        blocks_per_stage: &[usize],
        width: usize,
        bn: BatchNormParams,
    ) -> Self {
        let mut spec = Self::new();
        let res = |s: usize| Some(format!("P_res{s}"));
        let conv = |out: Option<String>, inp: Option<String>| [out, inp, None, None];
        let norm = |spec: &mut Self, prefix: &str, perm: Option<&str>| match bn {
            BatchNormParams::Full => spec.insert_norm(NormKind::BatchNorm, prefix, perm),
            BatchNormParams::RunningStatsOnly => {
                for f in ["running_mean", "running_var"] {
                    spec.insert(format!("{prefix}.{f}"), &[perm]);
                }
            }
            BatchNormParams::None => {}
        };
        spec.insert("conv1.weight", &conv(res(1), None));
        norm(&mut spec, "bn1", res(1).as_deref());
        for (si, &blocks) in blocks_per_stage.iter().enumerate() {
            let s = si + 1;
            if s > 1 {
                let planes = width << si;
                spec.declare(
                    format!("P_res{s}"),
                    PermDecl::embedding(format!("P_res{}", s - 1), planes / 4),
                );
            }
            for b in 0..blocks {
                let pre = format!("layer{s}.{b}");
                let inner = Some(format!("P_{pre}.inner"));
                let input = if b == 0 && s > 1 { res(s - 1) } else { res(s) };
                spec.insert(format!("{pre}.conv1.weight"), &conv(inner.clone(), input));
                norm(&mut spec, &format!("{pre}.bn1"), inner.as_deref());
                spec.insert(format!("{pre}.conv2.weight"), &conv(res(s), inner));
                norm(&mut spec, &format!("{pre}.bn2"), res(s).as_deref());
            }
        }
        spec.insert("linear.weight", &[None, res(blocks_per_stage.len())]);
        spec.insert("linear.bias", &[None::<String>]);
        spec
    }

    /// The option-A ResNet-20 (three stages of three blocks, base width `width`); see
    /// [`PermutationSpec::resnet_cifar_option_a`].
    #[must_use]
    pub fn resnet20_option_a(width: usize, bn: BatchNormParams) -> Self {
        Self::resnet_cifar_option_a(&[3, 3, 3], width, bn)
    }
}
