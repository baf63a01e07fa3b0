//! Exact coordinate steps for structured permutations (head-structured permutations and their
//! ties, embedded permutations), shared by weight and activation matching.
//!
//! Both matchings maximise `Σ_m Σ_i S_m[i, m(i)]` over the permutations `m` that one step
//! updates together, each with its similarity matrix `S_m` (weight matching: `S_p` of Git
//! Re-Basin's Algorithm 1 with the other permutations fixed; activation matching: the unit
//! statistic). Two structures keep that step an exact linear assignment problem:
//!
//! - **Heads.** Permutations of `h` heads of `d` units, `(j, i) ↦ (σ(j), τ_{m,j}(i))`, with one
//!   σ shared by the tied members (q/k and v/o). For fixed σ the members and heads separate,
//!   so `max = max_σ Σ_j score[j, σ(j)]` with
//!   `score[j, k] = Σ_m max_τ Σ_i S_m[j d + i, k d + τ(i)]` — the optimum of the `d × d` inner
//!   LAP of the block (its trace for heads-only members, `τ = id`). One `h × h` LAP over the
//!   scores then gives σ, and the inner optima of the chosen pairs give the τ's: together the
//!   optimal structured permutations (Verma & Elbayad 2024; Imfeld et al. 2024). Cost:
//!   `h²` LAPs of size `d` per member plus one of size `h`, instead of one of size `h d`.
//! - **Embeddings (atoms).** A permutation that embeds another (option-A residual streams)
//!   is made of independent free parts ("atoms"), each acting on known positions of every
//!   permutation that contains it. With the other atoms fixed, an atom `a` contributes
//!   `Σ_i S_atom[i, a(i)]` with `S_atom = Σ_m S_m[pos_m, pos_m]`: one LAP, exact.

use std::borrow::Borrow;
use std::collections::BTreeMap;

use ndarray::{Array2, ArrayView2};

use super::activation::{square_units, ActivationMatchingOptions, ActivationStats};
use super::lap_max;
use super::weight::linear_objective;
use crate::assignment::Solver;
use crate::error::{Error, Result};
use crate::permutation::Permutation;
use crate::spec::{Coordinate, PermutationSpec, WithinHead};

/// The result of one exact coordinate step.
pub(crate) struct Step {
    /// The new permutation of every member.
    pub(crate) perms: Vec<(String, Permutation)>,
    /// `Σ_m Σ_i S_m[i, m(i)]` at the old permutations.
    pub(crate) before: f64,
    /// The same at the new ones (the step's optimum).
    pub(crate) after: f64,
}

/// The best head-structured permutations of tied members: `s[m]` is member `m`'s `[n, n]`
/// similarity (`n = heads · d`), `within[m]` its freedom inside heads. Returns one permutation
/// per member, all with the same head permutation σ, maximising `Σ_m Σ_i s[m][i, p_m(i)]`,
/// and that maximum. Exact (see the [module docs](self)); `O(m h² d³ + h³)`.
///
/// # Errors
/// [`Error::InvalidArgument`] if the members are not square of one size divisible by
/// `heads`, or `within` has another length; as the LAP solver (NaN similarities).
///
/// # Examples
/// ```
/// use llfc::matching::structured::best_head_permutations;
/// use llfc::spec::WithinHead;
/// use ndarray::Array2;
/// // Two heads of two units; the best plain permutation would split the heads.
/// let s = Array2::from_shape_vec((4, 4), vec![
///     0., 0., 5., 0.,
///     0., 0., 0., 1.,
///     1., 0., 0., 0.,
///     0., 1., 0., 0.]).unwrap();
/// let (p, best) = best_head_permutations(&[s.view()], 2, &[WithinHead::Free], Default::default())?;
/// assert_eq!(p[0].as_slice(), &[2, 3, 0, 1]);
/// assert_eq!(best, 8.0);
/// # Ok::<(), llfc::Error>(())
/// ```
pub fn best_head_permutations(
    s: &[ArrayView2<'_, f64>],
    heads: usize,
    within: &[WithinHead],
    solver: Solver,
) -> Result<(Vec<Permutation>, f64)> {
    let n = s.first().map_or(0, |m| m.nrows());
    let ok = within.len() == s.len()
        && heads > 0
        && n.is_multiple_of(heads)
        && s.iter().all(|m| m.dim() == (n, n));
    if !ok {
        return Err(Error::InvalidArgument {
            name: "similarity",
            reason: format!(
                "head matching needs square members of one size divisible by {heads} heads and \
                 one within-head mode per member"
            ),
        });
    }
    let d = n / heads;
    // Every (member, j, k): the inner optimum and its τ (None: identity).
    let pair = |(m, j, k): (usize, usize, usize)| -> Result<(f64, Option<Permutation>)> {
        let block = s[m].slice(ndarray::s![j * d..(j + 1) * d, k * d..(k + 1) * d]);
        match within[m] {
            WithinHead::Fixed => Ok(((0..d).map(|i| block[[i, i]]).sum(), None)),
            WithinHead::Free => {
                let (tau, _) = lap_max(block, solver, None)?;
                let v = (0..d).map(|i| block[[i, tau.as_slice()[i]]]).sum();
                Ok((v, Some(tau)))
            }
        }
    };
    let jobs: Vec<(usize, usize, usize)> = (0..s.len())
        .flat_map(|m| (0..heads).flat_map(move |j| (0..heads).map(move |k| (m, j, k))))
        .collect();
    #[cfg(feature = "rayon")]
    let inner: Vec<(f64, Option<Permutation>)> = {
        use rayon::prelude::*;
        jobs.into_par_iter().map(pair).collect::<Result<_>>()?
    };
    #[cfg(not(feature = "rayon"))]
    let inner: Vec<(f64, Option<Permutation>)> =
        jobs.into_iter().map(pair).collect::<Result<_>>()?;
    let at = |m: usize, j: usize, k: usize| &inner[(m * heads + j) * heads + k];
    let mut score = Array2::<f64>::zeros((heads, heads));
    for ((j, k), v) in score.indexed_iter_mut() {
        *v = (0..s.len()).map(|m| at(m, j, k).0).sum();
    }
    let (sigma, _) = lap_max(score.view(), solver, None)?;
    let mut best = 0.0;
    let mut perms = Vec::with_capacity(s.len());
    for (m, sm) in s.iter().enumerate() {
        let mut v = vec![0; n];
        for j in 0..heads {
            let k = sigma.as_slice()[j];
            let tau = at(m, j, k).1.as_ref();
            for (i, x) in v[j * d..(j + 1) * d].iter_mut().enumerate() {
                *x = k * d + tau.map_or(i, |t| t.as_slice()[i]);
            }
        }
        let p = Permutation::new(v)?;
        best += (0..n).map(|i| sm[[i, p.as_slice()[i]]]).sum::<f64>();
        perms.push(p);
    }
    Ok((perms, best))
}

/// Solve the coordinate `coord` exactly, given the similarity matrix of each of its members
/// (`s[m]`, `[n_m, n_m]`) and the current permutations.
pub(crate) fn solve_coordinate<K: Borrow<str> + Ord>(
    spec: &PermutationSpec,
    coord: &Coordinate,
    s: &BTreeMap<K, Array2<f64>>,
    perms: &BTreeMap<String, Permutation>,
    solver: Solver,
) -> Result<Step> {
    let before: f64 = coord
        .members()
        .iter()
        .map(|m| linear_objective(&s[*m], &perms[*m]))
        .sum();
    match coord {
        Coordinate::Heads { members, count } => {
            let views: Vec<ArrayView2<'_, f64>> =
                members.iter().map(|m| s[m.as_str()].view()).collect();
            let within: Vec<WithinHead> = members
                .iter()
                .map(|m| {
                    spec.decl(m)
                        .and_then(|d| d.heads)
                        .map_or(WithinHead::Free, |h| h.within_head)
                })
                .collect();
            let (new, after) = best_head_permutations(&views, *count, &within, solver)?;
            Ok(Step {
                perms: members.iter().cloned().zip(new).collect(),
                before,
                after,
            })
        }
        Coordinate::Atom { members, .. } => {
            let k = members[0].1.len();
            if k == 0 {
                return Ok(Step {
                    perms: Vec::new(),
                    before,
                    after: before,
                });
            }
            let mut s_atom = Array2::<f64>::zeros((k, k));
            for (m, pos) in members {
                let sm = &s[m.as_str()];
                for (i, &x) in pos.iter().enumerate() {
                    for (j, &y) in pos.iter().enumerate() {
                        s_atom[[i, j]] += sm[[x, y]];
                    }
                }
            }
            let (a, _) = lap_max(s_atom.view(), solver, None)?;
            let mut out = Vec::with_capacity(members.len());
            let mut after = 0.0;
            for (m, pos) in members {
                let mut v = perms[m].as_slice().to_vec();
                for (i, &x) in pos.iter().enumerate() {
                    v[x] = pos[a.as_slice()[i]];
                }
                let p = Permutation::new(v)?;
                after += linear_objective(&s[m.as_str()], &p);
                out.push((m.clone(), p));
            }
            Ok(Step {
                perms: out,
                before,
                after,
            })
        }
    }
}

/// Activation matching through a spec with structured permutations: like
/// [`activation_matching`](super::activation::activation_matching), but every head-structured
/// group and every embedded permutation is solved by its exact step (see the
/// [module docs](self)) on the statistics of its members, so the result has the declared
/// structure. The statistics of different steps do not interact, so one pass over the steps
/// gives the exact maximum of `Σ_p Σ_i C_p[i, p(i)]` over all structured permutations.
///
/// `stats` holds the statistics of every permutation of the spec, keyed by name (for a q/k
/// permutation: of the q and k features, e.g. both added to one [`ActivationStats`]; token
/// features `[N, T, d]` as `[N·T, d]`).
///
/// # Errors
/// [`Error::PermutationName`] if a permutation of the spec has no statistics or a name is not
/// in the spec; [`Error::ShapeMismatch`] for non-square statistics; as
/// [`ActivationStats::statistic`] and the LAP solver.
pub fn activation_matching_structured(
    spec: &PermutationSpec,
    stats: &BTreeMap<String, ActivationStats>,
    options: &ActivationMatchingOptions,
) -> Result<BTreeMap<String, Permutation>> {
    let names = spec.perm_names();
    if let Some(extra) = stats.keys().find(|k| !names.contains(k)) {
        return Err(Error::PermutationName {
            perm: extra.clone(),
            problem: "has statistics but is not a permutation of the spec".into(),
        });
    }
    let mut sizes = BTreeMap::new();
    let mut c = BTreeMap::new();
    for name in &names {
        let st = stats.get(name).ok_or_else(|| Error::PermutationName {
            perm: name.clone(),
            problem: "is a permutation of the spec without activation statistics".into(),
        })?;
        sizes.insert(name.clone(), square_units(name, st)?);
        c.insert(name.clone(), st.statistic(options.statistic)?);
    }
    spec.check_declarations(&sizes)?;
    let mut perms: BTreeMap<String, Permutation> = sizes
        .iter()
        .map(|(k, &n)| (k.clone(), Permutation::identity(n)))
        .collect();
    let coords = spec.coordinates(&sizes);
    let mut seen = std::collections::BTreeSet::new();
    for coord in coords.values() {
        if seen.insert(std::sync::Arc::as_ptr(coord)) {
            let step = solve_coordinate(spec, coord, &c, &perms, options.solver)?;
            perms.extend(step.perms);
        }
    }
    Ok(perms)
}
