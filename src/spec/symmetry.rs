//! The rules that make a spec a plausible symmetry, checked by
//! [`PermutationSpec::validate`](super::PermutationSpec::validate) after the shapes.
//!
//! Permuting hidden units leaves the function unchanged only if every permutation applied to
//! the units a layer *produces* is undone where those units are *consumed* (Ainsworth et al.
//! 2023, §2). In a spec:
//!
//! - a use is **produced** if it is on a tensor's output axis — axis 0 of a `[out, in, …]`
//!   weight, the last axis of a [`Layout::InOut`](super::Layout::InOut) weight or embedding
//!   table — or on a vector (bias, norm scale and shift, running statistics);
//! - every other use is **consumed** (the input axis of the next layer, the residual-stream
//!   axis of a classifier or `lm_head`).
//!
//! Rules:
//! 1. every permutation is both produced and consumed — except a
//!    [`PermRole::QueryKey`](super::PermRole::QueryKey) permutation, produced by the q and k
//!    projections and consumed by their dot product only, which must not be consumed by a
//!    parameter;
//! 2. no permutation (nor two permutations tied through an embedding) acts on two different
//!    axes of one tensor, unless declared `recurrent` (`W_hh ← P W_hh Pᵀ`);
//! 3. declarations are consistent: they name permutations the spec uses; heads divide the
//!    axis; `same_heads_as` ties head-structured permutations with the same number of heads,
//!    and a tied group of more than one head holds exactly one query/key permutation and one
//!    other (its value/output) — both must move heads alike; a query/key permutation declares
//!    heads; embeddings fit, form no cycle and involve no heads.
//!
//! These rules reject the two classic mistakes — `["P_1", null]` on a layer whose output
//! nobody consumes with `P_1`, and `["P_1", "P_1"]` on a feed-forward weight — but a plain
//! permutation across attention heads cannot be told from a valid one by names and shapes:
//! declare heads (or use a builtin), and check the function.

use std::collections::{BTreeMap, BTreeSet};

use super::{Embed, PermRole, PermutationSpec};
use crate::error::{Error, Result};
use crate::float::Float;
use crate::params::Params;

impl PermutationSpec {
    /// Check the symmetry rules of [`symmetry`](self) given validated shapes and the sizes of
    /// every permutation.
    pub(super) fn check_rules<F: Float>(
        &self,
        params: &Params<F>,
        sizes: &BTreeMap<String, usize>,
    ) -> Result<()> {
        self.check_declarations(sizes)?;
        let uses = self.perm_uses();
        for (perm, list) in &uses {
            let mut produced = None;
            let mut consumed = None;
            for u in list {
                // The rank the spec's axes refer to: that of the view for an unflattened
                // parameter (validated to equal the number of listed axes).
                let rank = self
                    .spec_shape(&u.param, params[u.param.as_str()].shape())?
                    .len();
                let out = rank == 1 || u.axis == self.output_axis(&u.param, rank);
                let slot = if out { &mut produced } else { &mut consumed };
                slot.get_or_insert((u.param.clone(), u.axis));
            }
            let query_key = self
                .decl(perm)
                .is_some_and(|d| d.role == PermRole::QueryKey);
            let problem = match (&produced, &consumed, query_key) {
                (Some(_), None, false) => Some(("produced but never consumed", &produced)),
                (None, Some(_), _) => Some(("consumed but never produced", &consumed)),
                (_, Some(_), true) => Some((
                    "a query/key permutation consumed by a parameter (only the attention \
                     scores may consume it)",
                    &consumed,
                )),
                _ => None,
            };
            if let Some((problem, Some((param, axis)))) = problem {
                return Err(Error::UnbalancedPermutation {
                    perm: perm.clone(),
                    problem: problem.into(),
                    param: param.clone(),
                    axis: *axis,
                });
            }
        }
        self.check_repeats(sizes)
    }

    /// Rule 2: no atom on two axes of one tensor unless every permutation involved is
    /// recurrent.
    fn check_repeats(&self, sizes: &BTreeMap<String, usize>) -> Result<()> {
        let atoms_of = |p: &str| -> BTreeSet<String> {
            self.atoms(p, sizes).into_iter().map(|(o, _)| o).collect()
        };
        let recurrent = |p: &str| self.decl(p).is_some_and(|d| d.recurrent);
        for (param, axes) in &self.axes {
            // Per axis: the permutations on it (whole or segments).
            let per_axis: Vec<BTreeSet<&str>> = (0..axes.len())
                .map(|k| match self.segments(param, k) {
                    Some(segs) => segs.iter().filter_map(|s| s.perm.as_deref()).collect(),
                    None => axes[k].as_deref().into_iter().collect(),
                })
                .collect();
            for k1 in 0..axes.len() {
                for k2 in k1 + 1..axes.len() {
                    for p1 in &per_axis[k1] {
                        for p2 in &per_axis[k2] {
                            let a1 = atoms_of(p1);
                            let shared = atoms_of(p2).into_iter().find(|a| a1.contains(a));
                            if let Some(atom) = shared
                                && !(recurrent(p1) && recurrent(p2))
                            {
                                return Err(Error::RepeatedPermutation {
                                    perm: atom,
                                    param: param.clone(),
                                    first_axis: k1,
                                    second_axis: k2,
                                });
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Rule 3: declarations name used permutations and fit together.
    pub(crate) fn check_declarations(&self, sizes: &BTreeMap<String, usize>) -> Result<()> {
        let bad = |perm: &str, reason: String| Error::Structure {
            perm: perm.to_string(),
            reason,
        };
        for (name, decl) in &self.decls {
            let n = *sizes.get(name).ok_or_else(|| Error::PermutationName {
                perm: name.clone(),
                problem: "is declared but no parameter uses it".into(),
            })?;
            if let Some(h) = decl.heads
                && (h.count == 0 || !n.is_multiple_of(h.count))
            {
                return Err(bad(
                    name,
                    format!("{} heads do not divide its size {n}", h.count),
                ));
            }
            if decl.role == PermRole::QueryKey && decl.heads.is_none() {
                return Err(bad(
                    name,
                    "a query/key permutation must declare its heads (heads = 1 for a single \
                     head)"
                        .into(),
                ));
            }
            if let Some(other) = &decl.same_heads_as {
                let their = self.decl(other).and_then(|d| d.heads);
                match (decl.heads, their) {
                    (Some(a), Some(b)) if a.count == b.count => {}
                    (None, _) => {
                        return Err(bad(name, "same_heads_as needs heads declared".into()));
                    }
                    _ => {
                        return Err(bad(
                            name,
                            format!("same_heads_as `{other}`, which has no heads or another number of heads"),
                        ));
                    }
                }
            }
            if let Some(Embed {
                perm: inner,
                offset,
            }) = &decl.embeds
            {
                let m = *sizes.get(inner).ok_or_else(|| {
                    bad(name, format!("embeds `{inner}`, which no parameter uses"))
                })?;
                if offset + m > n {
                    return Err(bad(
                        name,
                        format!(
                            "embeds `{inner}` (size {m}) at offset {offset} beyond its size {n}"
                        ),
                    ));
                }
                if decl.heads.is_some() || self.decl(inner).is_some_and(|d| d.heads.is_some()) {
                    return Err(bad(
                        name,
                        "embeddings of head-structured permutations are not supported".into(),
                    ));
                }
                // No cycle: follow the chain; it must end within `decls.len()` steps.
                let mut cur = inner.as_str();
                for _ in 0..=self.decls.len() {
                    match self.decl(cur).and_then(|d| d.embeds.as_ref()) {
                        Some(e) if e.perm == *name => {
                            return Err(bad(name, "embeddings form a cycle".into()));
                        }
                        Some(e) => cur = &e.perm,
                        None => break,
                    }
                }
            }
        }
        for group in self.head_groups(sizes) {
            let count = self
                .decl(&group[0])
                .and_then(|d| d.heads)
                .map_or(1, |h| h.count);
            let qk = group
                .iter()
                .filter(|p| self.decl(p).is_some_and(|d| d.role == PermRole::QueryKey))
                .count();
            if count > 1 && (qk != 1 || group.len() != 2) {
                return Err(bad(
                    &group[0],
                    format!(
                        "{count} heads: a head group must tie exactly one query/key permutation \
                         and one value/output permutation (same_heads_as); found {group:?}"
                    ),
                ));
            }
        }
        Ok(())
    }
}
