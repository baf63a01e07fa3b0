//! Permutation specs: which axes of which parameters each hidden-unit permutation acts on.
//!
//! A [`PermutationSpec`] lists, for every permutable parameter, one optional permutation name
//! per tensor axis (Ainsworth et al. 2023, *Git Re-Basin*, §3 "permutation specs"). For a
//! two-layer MLP with hidden permutation `P_0`:
//!
//! | parameter | axes |
//! |---|---|
//! | `layers.0.weight` `[h, in]` | `[P_0, –]` |
//! | `layers.0.bias` `[h]` | `[P_0]` |
//! | `layers.1.weight` `[out, h]` | `[–, P_0]` |
//! | `layers.1.bias` `[out]` | `[–]` |
//!
//! Builders cover MLPs ([`PermutationSpec::mlp`], [`PermutationSpec::mlp_with_names`]),
//! VGG-style CNNs with BatchNorm ([`PermutationSpec::vgg`]), general chains of linear/conv
//! layers with norms ([`PermutationSpec::chain`]) and CIFAR ResNets such as ResNet-20
//! ([`PermutationSpec::resnet20`]), where all blocks of a stage share the residual-stream
//! permutation. Always [`validate`](PermutationSpec::validate) a spec against the parameters:
//! a spec that does not fit the model is an error, never a silent no-op — including a spec
//! that is not a plausible symmetry (a permutation produced but never consumed, or one name on
//! two axes of a tensor without a `recurrent` declaration).
//!
//! Checkpoints of torchvision's VGGs and ResNets and of the LLFC paper's code have named
//! builtins ([`Builtin`], [`vgg`], [`resnet`]); an axis that packs several units per
//! permutation entry (a flattened conv map) is listed through a view ([`Unflatten`]); and
//! [`check_invariance`] runs any forward pass to check that a spec is a symmetry of the model.
//!
//! Beyond plain axes, a spec may hold **segmented axes** ([`AxisSpec::Segments`]: fused `qkv`,
//! `gate_up`), **layouts** ([`Layout::InOut`]: `[in, out]` weights such as GPT-2's `Conv1D`,
//! embedding tables) and **declarations** of structured permutations ([`PermDecl`]): attention
//! heads `(j, i) ↦ (σ(j), τ_j(i))` ([`Heads`], [`WithinHead`]) with the q/k permutation
//! ([`PermRole::QueryKey`]) tied to the v/o one by [`PermDecl::same_heads_as`], and
//! [`Embed`]dings of one permutation in another (option-A ResNets:
//! [`PermutationSpec::resnet_cifar_option_a`]). Transformer builtins in Hugging Face names:
//! [`PermutationSpec::gpt2`], [`PermutationSpec::bert_encoder`], [`PermutationSpec::llama`].
//! Matching solves every structured step exactly ([`crate::matching::structured`]).

mod chain;
mod concrete;
mod resnet_option_a;
mod structured;
mod symmetry;
mod transformer;

#[cfg(feature = "serde")]
mod json;

use std::collections::BTreeMap;

pub use chain::{ChainLayer, LayerKind, NormKind, Shortcut, VggConfig};
pub use resnet_option_a::BatchNormParams;
pub(crate) use structured::Coordinate;
pub use structured::{
    AxisSpec, Embed, Heads, Layout, PermDecl, PermRole, PermUse, Segment, WithinHead,
};
pub use transformer::TransformerConfig;

use crate::error::{Error, Result};
use crate::float::Float;
use crate::params::Params;
use crate::permutation::Permutation;

pub mod builtin;
pub mod check;
pub mod resnet;
pub mod unflatten;
pub mod vgg;
pub use builtin::Builtin;
pub use check::{check_invariance, InvarianceReport};
pub use resnet::{Block, ResNetDepth, ResNetLayout, ResNetNaming};
pub(crate) use unflatten::reshape;
pub use unflatten::Unflatten;
pub use vgg::{VggDepth, VggLayout};

/// For each parameter name, one optional permutation name per axis; optionally views of
/// parameters ([`Unflatten`]), segmented axes, parameter layouts and declarations of
/// structured permutations ([`AxisSpec`], [`Layout`], [`PermDecl`]).
///
/// With the `serde` feature the spec (de)serialises as a JSON object
/// `{"layers.0.weight": ["P_0", null], …}`, so Python users can write specs by hand; a
/// parameter listed through a view is an object `{"axes": […], "unflatten": {…}}` (see
/// [`Unflatten`]); specs with structured parts use the extended form
/// `{"params": {…}, "perms": {…}}` (see the README).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PermutationSpec {
    axes: BTreeMap<String, Vec<Option<String>>>,
    /// Parameters whose axes are listed for a view of the tensor (see [`Unflatten`]).
    unflatten: BTreeMap<String, Unflatten>,
    /// Segmented axes: parameter → axis → segments (the axis reads `None` in `axes`).
    segments: BTreeMap<String, BTreeMap<usize, Vec<Segment>>>,
    /// Non-default layouts.
    layouts: BTreeMap<String, Layout>,
    /// Non-plain permutation declarations.
    decls: BTreeMap<String, PermDecl>,
}

/// What [`PermutationSpec::validate`] found about a parameter set that fits the spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validation {
    /// Size of every permutation of the spec, by name.
    pub perm_sizes: BTreeMap<String, usize>,
    /// Parameters present in the set but not mentioned by the spec (e.g. BatchNorm's
    /// `num_batches_tracked`); they are copied through unchanged by permutation.
    pub unmentioned: Vec<String>,
}

impl PermutationSpec {
    /// An empty spec.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Set the axes of `param` (one entry per tensor axis; `None` = not permuted), replacing any
    /// previous entry.
    pub fn insert<S: AsRef<str>>(&mut self, param: impl Into<String>, axes: &[Option<S>]) {
        let axes = axes
            .iter()
            .map(|a| a.as_ref().map(|s| s.as_ref().to_string()))
            .collect();
        let param = param.into();
        self.unflatten.remove(&param);
        self.segments.remove(&param);
        self.axes.insert(param, axes);
    }

    /// Builder form of [`PermutationSpec::insert`].
    #[must_use]
    pub fn with<S: AsRef<str>>(mut self, param: impl Into<String>, axes: &[Option<S>]) -> Self {
        self.insert(param, axes);
        self
    }

    /// The axes of `param`, if the spec mentions it.
    #[must_use]
    pub fn axes(&self, param: &str) -> Option<&[Option<String>]> {
        self.axes.get(param).map(Vec::as_slice)
    }

    /// `(parameter, axes)` pairs in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[Option<String>])> {
        self.axes.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    /// Number of parameters mentioned.
    #[must_use]
    pub fn len(&self) -> usize {
        self.axes.len()
    }

    /// Whether the spec mentions no parameter.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.axes.is_empty()
    }

    /// The inverse map: permutation name → every whole `(parameter, axis)` it acts on, both in
    /// name order. Segments of segmented axes are not listed; see
    /// [`PermutationSpec::perm_uses`].
    #[must_use]
    pub fn perm_to_axes(&self) -> BTreeMap<String, Vec<(String, usize)>> {
        let mut map: BTreeMap<String, Vec<(String, usize)>> = BTreeMap::new();
        for (param, axes) in &self.axes {
            for (axis, perm) in axes.iter().enumerate() {
                if let Some(perm) = perm {
                    map.entry(perm.clone())
                        .or_default()
                        .push((param.clone(), axis));
                }
            }
        }
        map
    }

    /// Names of all permutations, sorted.
    #[must_use]
    pub fn perm_names(&self) -> Vec<String> {
        self.perm_uses().into_keys().collect()
    }

    /// Check that `params` fits the spec.
    ///
    /// Every parameter the spec names must exist, with exactly as many axes as the spec lists;
    /// all axes (and segments) governed by one permutation must have the same size. Parameters
    /// the spec does not mention are allowed and reported in [`Validation::unmentioned`]. For a
    /// parameter listed through a view ([`Unflatten`]), ranks and sizes are those of the view.
    ///
    /// Then the spec must be a plausible symmetry : every
    /// permutation is produced (on a tensor's output axis: axis 0, the last axis of
    /// [`Layout::InOut`] tensors, every vector) *and* consumed (on another axis), except
    /// query/key permutations, which only the attention scores consume; no permutation acts on
    /// two axes of one tensor unless declared recurrent; heads, ties and embeddings are
    /// declared consistently.
    ///
    /// # Errors
    /// - [`Error::MissingParam`]: a parameter named in the spec is absent;
    /// - [`Error::InvalidSpec`]: a view does not divide its axis (see [`Unflatten::view_shape`]);
    /// - [`Error::AxisOutOfRange`]: the spec permutes an axis beyond the tensor's rank;
    /// - [`Error::RankMismatch`]: the spec lists a different number of axes than the rank;
    /// - [`Error::SegmentMismatch`]: the segments of an axis do not add up to its size;
    /// - [`Error::InconsistentPermutationSize`]: two axes of one permutation differ in size;
    /// - [`Error::UnbalancedPermutation`], [`Error::RepeatedPermutation`],
    ///   [`Error::Structure`], [`Error::PermutationName`]: the symmetry rules above.
    pub fn validate<F: Float>(&self, params: &Params<F>) -> Result<Validation> {
        let perm_sizes = self.fitted_sizes(params)?;
        self.check_rules(params, &perm_sizes)?;
        Ok(Validation {
            perm_sizes,
            unmentioned: params
                .names()
                .filter(|n| !self.axes.contains_key(*n))
                .map(str::to_string)
                .collect(),
        })
    }

    /// The shape part of [`PermutationSpec::validate`] (without the symmetry rules): the size
    /// of every permutation when `params` fits the spec. Used where a spec that is not a
    /// symmetry must still be applied, as [`check_invariance`] does to name what breaks.
    pub(crate) fn fitted_sizes<F: Float>(
        &self,
        params: &Params<F>,
    ) -> Result<BTreeMap<String, usize>> {
        let mut sizes: BTreeMap<String, (usize, String, usize)> = BTreeMap::new();
        for (param, axes) in &self.axes {
            let tensor = params.get(param).ok_or_else(|| Error::MissingParam {
                param: param.clone(),
                context: "the parameters (it is named in the permutation spec)".into(),
            })?;
            let shape = self.spec_shape(param, tensor.shape())?;
            let rank = shape.len();
            if let Some(axis) =
                (rank..axes.len()).find(|&k| axes[k].is_some() || self.segments(param, k).is_some())
            {
                return Err(Error::AxisOutOfRange {
                    what: param.clone(),
                    axis,
                    rank,
                });
            }
            if axes.len() != rank {
                return Err(Error::RankMismatch {
                    param: param.clone(),
                    spec_rank: axes.len(),
                    rank,
                });
            }
            let mut uses: Vec<(&String, usize, usize)> = Vec::new();
            for (axis, perm) in axes.iter().enumerate() {
                let len = shape[axis];
                if let Some(segs) = self.segments(param, axis) {
                    let total: usize = segs.iter().map(|s| s.size).sum();
                    if total != len {
                        return Err(Error::SegmentMismatch {
                            param: param.clone(),
                            axis,
                            segments_len: total,
                            axis_len: len,
                        });
                    }
                    uses.extend(
                        segs.iter()
                            .filter_map(|s| Some((s.perm.as_ref()?, axis, s.size))),
                    );
                } else if let Some(perm) = perm {
                    uses.push((perm, axis, len));
                }
            }
            for (perm, axis, n) in uses {
                match sizes.get(perm) {
                    None => {
                        sizes.insert(perm.clone(), (n, param.clone(), axis));
                    }
                    Some((m, first_param, first_axis)) if *m != n => {
                        return Err(Error::InconsistentPermutationSize {
                            perm: perm.clone(),
                            first_param: first_param.clone(),
                            first_axis: *first_axis,
                            first_len: *m,
                            second_param: param.clone(),
                            second_axis: axis,
                            second_len: n,
                        });
                    }
                    Some(_) => {}
                }
            }
        }
        Ok(sizes.into_iter().map(|(k, (n, _, _))| (k, n)).collect())
    }

    /// Size of every permutation, after validating `params` against the spec.
    ///
    /// # Errors
    /// As [`PermutationSpec::validate`].
    pub fn perm_sizes<F: Float>(&self, params: &Params<F>) -> Result<BTreeMap<String, usize>> {
        Ok(self.validate(params)?.perm_sizes)
    }

    /// The identity permutation for every permutation of the spec, sized from `params`.
    ///
    /// # Errors
    /// As [`PermutationSpec::validate`].
    pub fn identity_perms<F: Float>(
        &self,
        params: &Params<F>,
    ) -> Result<BTreeMap<String, Permutation>> {
        Ok(self
            .perm_sizes(params)?
            .into_iter()
            .map(|(k, n)| (k, Permutation::identity(n)))
            .collect())
    }

    /// Parse a spec from JSON: `{"param": ["perm" or null, …], …}`.
    ///
    /// # Errors
    /// [`Error::InvalidSpec`] with serde's message if the text is not such an object, or if a
    /// key is written twice in any of its objects — a parameter, a permutation of the extended
    /// form, a declaration's field (JSON readers would silently keep the last).
    #[cfg(feature = "serde")]
    pub fn from_json(text: &str) -> Result<Self> {
        let spec: Self = serde_json::from_str(text).map_err(|e| Error::InvalidSpec {
            reason: crate::error::clip(&e.to_string(), 200),
        })?;
        // A key written twice in any object (a parameter, a permutation, a declaration's
        // field) would be silently dropped by the reader: refuse it.
        if let Some(key) = crate::json_keys::duplicate_key_anywhere(text) {
            return Err(Error::InvalidSpec {
                reason: format!("the key `{}` is listed twice", crate::error::clip(key, 200)),
            });
        }
        Ok(spec)
    }

    /// Serialise as pretty-printed JSON (the format [`PermutationSpec::from_json`] reads).
    #[cfg(feature = "serde")]
    #[must_use]
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(&json::to_value(self)).expect("a JSON value always serialises")
    }
}
