//! The structured parts of a permutation spec: segmented axes, parameter layouts and
//! permutation declarations (attention heads, head ties, embeddings of one permutation in
//! another).
//!
//! - **Segmented axes** ([`AxisSpec::Segments`]): one axis made of consecutive segments, each
//!   with its own permutation (or none). A fused attention projection `qkv` with output axis
//!   `[3·d]` is `[q: P_qk, k: P_qk, v: P_vo]`; a fused gated MLP `gate_up` `[2·f]` is
//!   `[P_ff, P_ff]`. A permutation on a segment acts on that segment only (shifted to its
//!   offset), so the same permutation may label several segments of one axis.
//! - **Layouts** ([`Layout`]): which axis of a tensor holds the units it *produces*. PyTorch's
//!   linear and conv weights are `[out, in, …]` ([`Layout::OutIn`], the default); Hugging Face
//!   GPT-2's `Conv1D` and every embedding table store `[in, out]` ([`Layout::InOut`]: the last
//!   axis is produced). Vectors (biases, norms, running statistics) are always produced.
//! - **Heads** ([`Heads`]): a permutation of an axis of size `h · d_head` restricted to
//!   `unit (j, i) ↦ (σ(j), τ_j(i))` — a permutation σ of the `h` heads composed with one
//!   permutation τ_j of the units inside each head ([`WithinHead::Free`]), or heads only
//!   (`τ_j = id`, [`WithinHead::Fixed`], as rotary embeddings require for q/k). Within one
//!   attention layer the q/k permutation ([`PermRole::QueryKey`]: consumed by the attention
//!   scores, not by a parameter) and the v/o permutation are tied by
//!   [`PermDecl::same_heads_as`]: both use the same σ, a head moves as a whole (Verma & Elbayad
//!   2024; Imfeld et al. 2024).
//! - **Embeddings** ([`Embed`]): permutation `Q` of size `n` embeds permutation `P` of size
//!   `m` at offset `o`: `Q(o + x) = o + P(x)` for `x < m`, and `Q` permutes the other `n − m`
//!   positions freely among themselves. This is the residual stream of a ResNet with option-A
//!   (zero-padding) shortcuts: stage `s + 1`'s channels `o … o + m` *are* stage `s`'s.

use std::collections::BTreeMap;

use super::PermutationSpec;
use crate::permutation::Permutation;

/// How one axis of a parameter is permuted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AxisSpec {
    /// Not permuted.
    Fixed,
    /// Permuted as a whole by the named permutation.
    Perm(String),
    /// Consecutive segments, each permuted by its own permutation (or not at all).
    Segments(Vec<Segment>),
}

impl AxisSpec {
    /// A whole-axis permutation called `name`.
    #[must_use]
    pub fn perm(name: impl Into<String>) -> Self {
        Self::Perm(name.into())
    }
}

/// One segment of a segmented axis: `size` consecutive units permuted by `perm`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// The permutation of the segment's units, or `None` to leave them in place.
    pub perm: Option<String>,
    /// Number of units in the segment.
    pub size: usize,
}

impl Segment {
    /// A segment of `size` units permuted by `perm`.
    #[must_use]
    pub fn new(perm: impl Into<String>, size: usize) -> Self {
        Self {
            perm: Some(perm.into()),
            size,
        }
    }

    /// A segment of `size` units left in place.
    #[must_use]
    pub fn fixed(size: usize) -> Self {
        Self { perm: None, size }
    }
}

/// Which axis of a tensor holds the units it produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Layout {
    /// `[out, in, …]`: axis 0 is produced (PyTorch linear and conv weights). The default.
    #[default]
    OutIn,
    /// `[…, in, out]`: the last axis is produced (Hugging Face `Conv1D`; embedding tables
    /// `[vocab, d]`, whose rows are looked up and whose columns are the produced units).
    InOut,
}

/// Whether the units inside each head may be permuted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum WithinHead {
    /// `τ_j` is any permutation of the head's units. The default.
    #[default]
    Free,
    /// `τ_j = id`: whole heads move, their units stay in order (q/k with rotary embeddings,
    /// where every pair of dimensions has its own rotation frequency).
    Fixed,
}

/// A head-structured permutation: `count` heads of equal size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heads {
    /// Number of heads `h` (the axis size must be a multiple of it).
    pub count: usize,
    /// Whether units move inside their head.
    pub within_head: WithinHead,
}

/// What consumes a permutation's units.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PermRole {
    /// Units produced by some parameters and consumed by others. The default.
    #[default]
    Hidden,
    /// Query/key units: produced by the q and k projections and consumed by their dot
    /// product (the attention scores), never by a parameter.
    QueryKey,
}

/// `Q(offset + x) = offset + P(x)` for the embedded permutation `P`, and `Q` permutes its other
/// positions freely among themselves (option-A residual streams).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Embed {
    /// The embedded permutation `P`.
    pub perm: String,
    /// Where its units sit in this permutation's axis.
    pub offset: usize,
}

/// The declaration of a permutation's structure (a plain permutation needs none).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct PermDecl {
    /// Head structure, if any.
    pub heads: Option<Heads>,
    /// Another head-structured permutation that uses the same head permutation σ.
    pub same_heads_as: Option<String>,
    /// What consumes the units.
    pub role: PermRole,
    /// Whether the permutation may act on two axes of one tensor (a recurrent weight
    /// `W_hh` `[h, h]`, permuted as `P W Pᵀ`).
    pub recurrent: bool,
    /// An embedded permutation (option-A residual streams).
    pub embeds: Option<Embed>,
}

impl PermDecl {
    /// `count` heads with the given freedom inside each head.
    #[must_use]
    pub fn heads(count: usize, within_head: WithinHead) -> Self {
        Self {
            heads: Some(Heads { count, within_head }),
            ..Self::default()
        }
    }

    /// The same declaration, tied to `other`'s head permutation.
    #[must_use]
    pub fn tied_to(mut self, other: impl Into<String>) -> Self {
        self.same_heads_as = Some(other.into());
        self
    }

    /// The same declaration, with role [`PermRole::QueryKey`].
    #[must_use]
    pub fn query_key(mut self) -> Self {
        self.role = PermRole::QueryKey;
        self
    }

    /// A recurrent permutation (allowed on two axes of one tensor).
    #[must_use]
    pub fn recurrent() -> Self {
        Self {
            recurrent: true,
            ..Self::default()
        }
    }

    /// A permutation embedding `perm` at `offset`.
    #[must_use]
    pub fn embedding(perm: impl Into<String>, offset: usize) -> Self {
        Self {
            embeds: Some(Embed {
                perm: perm.into(),
                offset,
            }),
            ..Self::default()
        }
    }

    /// Whether the declaration says nothing beyond a plain permutation.
    #[must_use]
    pub fn is_plain(&self) -> bool {
        *self == Self::default()
    }
}

/// One place a permutation acts on: an axis of a parameter, or a segment of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PermUse {
    /// Parameter name.
    pub param: String,
    /// Axis of the parameter.
    pub axis: usize,
    /// `(offset, size)` of the segment, or `None` for the whole axis.
    pub segment: Option<(usize, usize)>,
}

/// A unit of the coordinate ascent: the permutations one exact step updates together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Coordinate {
    /// A free permutation ("atom") of some positions of one or more permutations: the
    /// positions in each member's index space, in the atom's order. A plain permutation is an
    /// atom of a single member over all its positions.
    Atom {
        /// The permutation that owns the atom (its free part).
        owner: String,
        /// `(member, positions)`.
        members: Vec<(String, Vec<usize>)>,
    },
    /// Head-structured permutations sharing one head permutation σ.
    Heads {
        /// The members, in name order.
        members: Vec<String>,
        /// Number of heads.
        count: usize,
    },
}

impl Coordinate {
    /// Names of the permutations the step may change.
    pub(crate) fn members(&self) -> Vec<&str> {
        match self {
            Self::Atom { members, .. } => members.iter().map(|(m, _)| m.as_str()).collect(),
            Self::Heads { members, .. } => members.iter().map(String::as_str).collect(),
        }
    }

    /// Whether this is a plain permutation (one member, every position, no structure).
    pub(crate) fn is_plain(&self, size: usize) -> bool {
        matches!(self, Self::Atom { members, .. }
            if members.len() == 1 && members[0].1.len() == size
                && members[0].1.iter().enumerate().all(|(i, &x)| i == x))
    }
}

impl PermutationSpec {
    /// Set the axes of `param` with the full axis language (segments included), replacing any
    /// previous entry (and view). The layout and the permutation declarations are kept.
    pub fn insert_axes(&mut self, param: impl Into<String>, axes: Vec<AxisSpec>) {
        let param = param.into();
        let mut plain = Vec::with_capacity(axes.len());
        let mut segs = BTreeMap::new();
        for (k, a) in axes.into_iter().enumerate() {
            plain.push(match a {
                AxisSpec::Fixed => None,
                AxisSpec::Perm(p) => Some(p),
                AxisSpec::Segments(s) => {
                    segs.insert(k, s);
                    None
                }
            });
        }
        self.unflatten.remove(&param);
        if segs.is_empty() {
            self.segments.remove(&param);
        } else {
            self.segments.insert(param.clone(), segs);
        }
        self.axes.insert(param, plain);
    }

    /// Builder form of [`PermutationSpec::insert_axes`].
    #[must_use]
    pub fn with_axes(mut self, param: impl Into<String>, axes: Vec<AxisSpec>) -> Self {
        self.insert_axes(param, axes);
        self
    }

    /// The full axis description of `param`, if the spec mentions it.
    #[must_use]
    pub fn axis_specs(&self, param: &str) -> Option<Vec<AxisSpec>> {
        let axes = self.axes.get(param)?;
        Some(
            axes.iter()
                .enumerate()
                .map(|(k, a)| match (a, self.segments(param, k)) {
                    (_, Some(s)) => AxisSpec::Segments(s.to_vec()),
                    (Some(p), None) => AxisSpec::Perm(p.clone()),
                    (None, None) => AxisSpec::Fixed,
                })
                .collect(),
        )
    }

    /// The segments of axis `axis` of `param`, if that axis is segmented. (A segmented axis
    /// reads `None` in [`PermutationSpec::axes`].)
    #[must_use]
    pub fn segments(&self, param: &str, axis: usize) -> Option<&[Segment]> {
        self.segments.get(param)?.get(&axis).map(Vec::as_slice)
    }

    /// Declare the layout of `param` (default [`Layout::OutIn`]).
    pub fn set_layout(&mut self, param: impl Into<String>, layout: Layout) {
        let param = param.into();
        if layout == Layout::OutIn {
            self.layouts.remove(&param);
        } else {
            self.layouts.insert(param, layout);
        }
    }

    /// Builder form of [`PermutationSpec::set_layout`].
    #[must_use]
    pub fn with_layout(mut self, param: impl Into<String>, layout: Layout) -> Self {
        self.set_layout(param, layout);
        self
    }

    /// The layout of `param`.
    #[must_use]
    pub fn layout(&self, param: &str) -> Layout {
        self.layouts.get(param).copied().unwrap_or_default()
    }

    /// Declare the structure of permutation `perm` (replacing any previous declaration).
    pub fn declare(&mut self, perm: impl Into<String>, decl: PermDecl) {
        let perm = perm.into();
        if decl.is_plain() {
            self.decls.remove(&perm);
        } else {
            self.decls.insert(perm, decl);
        }
    }

    /// Builder form of [`PermutationSpec::declare`].
    #[must_use]
    pub fn with_decl(mut self, perm: impl Into<String>, decl: PermDecl) -> Self {
        self.declare(perm, decl);
        self
    }

    /// The declaration of `perm`, if it has one.
    #[must_use]
    pub fn decl(&self, perm: &str) -> Option<&PermDecl> {
        self.decls.get(perm)
    }

    /// Every declaration, by permutation name.
    pub fn decls(&self) -> impl Iterator<Item = (&str, &PermDecl)> {
        self.decls.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Whether the spec uses only plain whole-axis permutations in the PyTorch layout (the
    /// original spec format).
    #[must_use]
    pub fn is_plain(&self) -> bool {
        self.segments.is_empty() && self.layouts.is_empty() && self.decls.is_empty()
    }

    /// The axis that holds the units `param` (of rank `rank`) produces.
    #[must_use]
    pub fn output_axis(&self, param: &str, rank: usize) -> usize {
        match self.layout(param) {
            Layout::OutIn => 0,
            Layout::InOut => rank.saturating_sub(1),
        }
    }

    /// Every place each permutation acts on (whole axes and segments), by name.
    #[must_use]
    pub fn perm_uses(&self) -> BTreeMap<String, Vec<PermUse>> {
        let mut map: BTreeMap<String, Vec<PermUse>> = BTreeMap::new();
        for (param, axes) in &self.axes {
            for (axis, perm) in axes.iter().enumerate() {
                if let Some(segs) = self.segments(param, axis) {
                    let mut offset = 0;
                    for s in segs {
                        if let Some(p) = &s.perm {
                            map.entry(p.clone()).or_default().push(PermUse {
                                param: param.clone(),
                                axis,
                                segment: Some((offset, s.size)),
                            });
                        }
                        offset += s.size;
                    }
                } else if let Some(p) = perm {
                    map.entry(p.clone()).or_default().push(PermUse {
                        param: param.clone(),
                        axis,
                        segment: None,
                    });
                }
            }
        }
        map
    }

    /// The permutation of the whole axis `axis` (of length `len`) of `param` at `perms`, as
    /// `v` with `W ← W[v]` along the axis; `None` if the axis is not permuted.
    ///
    /// # Panics
    /// If `perms` lacks a permutation of the axis (validated callers never do that).
    #[must_use]
    pub(crate) fn axis_permutation(
        &self,
        param: &str,
        axis: usize,
        len: usize,
        perms: &BTreeMap<String, Permutation>,
    ) -> Option<Vec<usize>> {
        if let Some(segs) = self.segments(param, axis) {
            if segs.iter().all(|s| s.perm.is_none()) {
                return None;
            }
            let mut v: Vec<usize> = (0..len).collect();
            let mut offset = 0;
            for s in segs {
                if let Some(p) = &s.perm {
                    for (x, &y) in perms[p].as_slice().iter().enumerate() {
                        v[offset + x] = offset + y;
                    }
                }
                offset += s.size;
            }
            return Some(v);
        }
        let p = self.axes.get(param)?.get(axis)?.as_ref()?;
        Some(perms[p].as_slice().to_vec())
    }

    /// The atoms of permutation `perm` (of the validated `sizes`): `(owner, positions in
    /// perm's index space)` — its own free part and, through [`Embed`], those of the
    /// permutations it embeds.
    pub(crate) fn atoms(
        &self,
        perm: &str,
        sizes: &BTreeMap<String, usize>,
    ) -> Vec<(String, Vec<usize>)> {
        let n = sizes[perm];
        match self.decl(perm).and_then(|d| d.embeds.as_ref()) {
            None => vec![(perm.to_string(), (0..n).collect())],
            Some(Embed {
                perm: inner,
                offset,
            }) => {
                let m = sizes[inner.as_str()];
                let mut out: Vec<(String, Vec<usize>)> = self
                    .atoms(inner, sizes)
                    .into_iter()
                    .map(|(o, pos)| (o, pos.into_iter().map(|x| x + offset).collect()))
                    .collect();
                let own: Vec<usize> = (0..n)
                    .filter(|x| !(*offset..offset + m).contains(x))
                    .collect();
                out.push((perm.to_string(), own));
                out
            }
        }
    }

    /// The coordinates of the coordinate ascent, keyed by every permutation name: the
    /// coordinate that the step for that name solves (shared by a head group's members).
    pub(crate) fn coordinates(
        &self,
        sizes: &BTreeMap<String, usize>,
    ) -> BTreeMap<String, std::sync::Arc<Coordinate>> {
        let mut out = BTreeMap::new();
        let mut by_owner: BTreeMap<String, Vec<(String, Vec<usize>)>> = BTreeMap::new();
        for perm in sizes.keys() {
            if self.decl(perm).is_some_and(|d| d.heads.is_some()) {
                continue;
            }
            for (owner, pos) in self.atoms(perm, sizes) {
                by_owner.entry(owner).or_default().push((perm.clone(), pos));
            }
        }
        for (owner, mut members) in by_owner {
            // The owner first: its free part is what the step is named after.
            members.sort_by_key(|(m, _)| m != &owner);
            let c = std::sync::Arc::new(Coordinate::Atom {
                owner: owner.clone(),
                members,
            });
            out.insert(owner, c);
        }
        for group in self.head_groups(sizes) {
            let count = self
                .decl(&group[0])
                .and_then(|d| d.heads)
                .map_or(1, |h| h.count);
            let c = std::sync::Arc::new(Coordinate::Heads {
                members: group.clone(),
                count,
            });
            for m in group {
                out.insert(m, c.clone());
            }
        }
        out
    }

    /// Head-structured permutations grouped by [`PermDecl::same_heads_as`] (connected
    /// components), each sorted, groups in order of their first name.
    pub(crate) fn head_groups(&self, sizes: &BTreeMap<String, usize>) -> Vec<Vec<String>> {
        let heads: Vec<&String> = sizes
            .keys()
            .filter(|p| self.decl(p).is_some_and(|d| d.heads.is_some()))
            .collect();
        let mut group: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, p) in heads.iter().enumerate() {
            group.insert(p.as_str(), i);
        }
        // Union by relabelling (small sets): merge the tie's two groups.
        for p in &heads {
            if let Some(q) = self.decl(p).and_then(|d| d.same_heads_as.as_deref())
                && let (Some(&gp), Some(&gq)) = (group.get(p.as_str()), group.get(q))
            {
                for g in group.values_mut() {
                    if *g == gq {
                        *g = gp;
                    }
                }
            }
        }
        let mut out: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        for (p, g) in group {
            out.entry(g).or_default().push(p.to_string());
        }
        let mut groups: Vec<Vec<String>> = out.into_values().collect();
        groups.sort();
        groups
    }
}
