//! Concrete permutations of a structured spec: checking that given permutations have the
//! declared structure, and drawing random ones that do.

use std::collections::{BTreeMap, BTreeSet};

use rand::Rng;

use super::structured::Coordinate;
use super::{Embed, PermutationSpec, WithinHead};
use crate::error::{Error, Result};
use crate::float::Float;
use crate::params::Params;
use crate::permutation::Permutation;

impl PermutationSpec {
    /// Check that every permutation of `perms` has the structure its declaration requires:
    /// heads map to whole heads (in order inside each head for [`WithinHead::Fixed`]), tied
    /// permutations share σ, embedding permutations restrict to the embedded one.
    ///
    /// # Errors
    /// [`Error::Structure`] naming the first permutation that breaks its declaration.
    pub fn check_structure(&self, perms: &BTreeMap<String, Permutation>) -> Result<()> {
        let mut sigmas: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (name, decl) in &self.decls {
            let Some(p) = perms.get(name) else { continue };
            let p = p.as_slice();
            let bad = |reason: String| Error::Structure {
                perm: name.clone(),
                reason,
            };
            if let Some(h) = decl.heads {
                let (sigma, fixed_ok) = head_sigma(p, h.count).ok_or_else(|| {
                    bad(format!(
                        "does not map whole heads to heads ({} heads)",
                        h.count
                    ))
                })?;
                if h.within_head == WithinHead::Fixed && !fixed_ok {
                    return Err(bad(
                        "moves units inside a head, but within_head is fixed".into()
                    ));
                }
                sigmas.insert(name, sigma);
            }
            if let Some(Embed {
                perm: inner,
                offset,
            }) = &decl.embeds
                && let Some(q) = perms.get(inner)
            {
                let ok = q
                    .as_slice()
                    .iter()
                    .enumerate()
                    .all(|(x, &y)| p.get(offset + x) == Some(&(offset + y)));
                if !ok {
                    return Err(bad(format!(
                        "does not equal `{inner}` shifted by {offset} on the embedded units"
                    )));
                }
            }
        }
        for (name, decl) in &self.decls {
            if let (Some(other), Some(s)) = (&decl.same_heads_as, sigmas.get(name.as_str()))
                && sigmas.get(other.as_str()).is_some_and(|t| t != s)
            {
                return Err(Error::Structure {
                    perm: name.clone(),
                    reason: format!("moves heads differently from `{other}` (same_heads_as)"),
                });
            }
        }
        Ok(())
    }

    /// Random permutations of every permutation of the spec, sized from `params`, with the
    /// declared structure (uniform over the structured permutations: heads, within-head
    /// freedom, ties and embeddings respected).
    ///
    /// # Errors
    /// As [`PermutationSpec::validate`].
    pub fn random_perms<F: Float, R: Rng + ?Sized>(
        &self,
        params: &Params<F>,
        rng: &mut R,
    ) -> Result<BTreeMap<String, Permutation>> {
        let sizes = self.perm_sizes(params)?;
        let mut perms: BTreeMap<String, Vec<usize>> = sizes
            .iter()
            .map(|(k, &n)| (k.clone(), (0..n).collect()))
            .collect();
        let coords = self.coordinates(&sizes);
        let mut done = BTreeSet::new();
        for c in coords.values() {
            if !done.insert(std::sync::Arc::as_ptr(c)) {
                continue;
            }
            match &**c {
                Coordinate::Atom { members, .. } => {
                    let k = members[0].1.len();
                    let a = Permutation::random(k, rng);
                    for (m, pos) in members {
                        let v = perms.get_mut(m).expect("member of the spec");
                        for (i, &x) in pos.iter().enumerate() {
                            v[x] = pos[a.as_slice()[i]];
                        }
                    }
                }
                Coordinate::Heads { members, count } => {
                    let sigma = Permutation::random(*count, rng);
                    for m in members {
                        let n = sizes[m];
                        let d = n / count;
                        let fixed = self
                            .decl(m)
                            .and_then(|x| x.heads)
                            .is_some_and(|h| h.within_head == WithinHead::Fixed);
                        let v = perms.get_mut(m).expect("member of the spec");
                        for j in 0..*count {
                            let tau = if fixed {
                                Permutation::identity(d)
                            } else {
                                Permutation::random(d, rng)
                            };
                            for i in 0..d {
                                v[j * d + i] = sigma.as_slice()[j] * d + tau.as_slice()[i];
                            }
                        }
                    }
                }
            }
        }
        perms
            .into_iter()
            .map(|(k, v)| Ok((k, Permutation::new(v)?)))
            .collect()
    }
}

/// The head permutation σ of `p` over `count` equal heads, if `p` maps every head onto one
/// head, with whether it keeps the units of every head in order.
fn head_sigma(p: &[usize], count: usize) -> Option<(Vec<usize>, bool)> {
    if count == 0 || !p.len().is_multiple_of(count) {
        return None;
    }
    let d = p.len() / count;
    let mut sigma = Vec::with_capacity(count);
    let mut in_order = true;
    for j in 0..count {
        let k = p[j * d] / d;
        for i in 0..d {
            let y = p[j * d + i];
            if y / d != k {
                return None;
            }
            in_order &= y % d == i;
        }
        sigma.push(k);
    }
    Some((sigma, in_order))
}
