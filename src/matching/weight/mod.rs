//! Weight matching (Ainsworth et al. 2023, *Git Re-Basin*, Algorithm 1).
//!
//! Find permutations `π` of B's hidden units that maximise the inner product
//! `⟨θ_A, π(θ_B)⟩ = Σ_w ⟨W_A, π(W_B)⟩` over all parameters, by coordinate ascent: with every
//! permutation but `p` fixed, the objective is linear in `p`,
//!
//! `⟨θ_A, π(θ_B)⟩ = Σ_i S_p[i, p(i)] + const`,  `S_p = Σ_{(w, k) ∈ p} A_w · B̃_wᵀ`,
//!
//! where `A_w` is `W_A` with axis `k` moved first and reshaped to `[n, −1]`, and `B̃_w` is `W_B`
//! with every *other* axis permuted by its current permutation, moved and reshaped alike. Each
//! step solves the linear assignment problem `max_p Σ_i S_p[i, p(i)]`.
//!
//! A sweep visits every permutation once, in an order drawn from the seed (or a fixed order).
//! A step makes *progress* when `Σ_i S_p[i, p_new(i)] > Σ_i S_p[i, p_old(i)] + tolerance`
//! (absolute, default `1e-12`, Git Re-Basin's rule); the loop stops after a sweep without
//! progress or after `max_iter` sweeps.
//!
//! Speed: the products of a permutation's terms run as fixed-size row blocks in parallel (rayon),
//! so results do not depend on the thread count; `S_p` is cached and reused while none of the
//! permutations it depends on changed (the last sweep then costs no product at all); each LAP is
//! warm-started from the previous sweep's dual potentials for the same permutation.

mod similarity;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;

use ndarray::Array2;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

pub(crate) use self::similarity::linear_objective;
use self::similarity::{sum_terms_into, Objective, Term};
use super::{lap_max, max_abs, products_may_overflow, LapWarm};
use crate::assignment::Solver;
use crate::error::{Error, Result};
use crate::float::{all_finite, Float};
use crate::params::Params;
use crate::permutation::Permutation;
use crate::spec::PermutationSpec;

/// Options of [`weight_matching`], with documented defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightMatchingOptions {
    /// Maximum number of sweeps over all permutations. Default 100 (Git Re-Basin's).
    pub max_iter: usize,
    /// Seed of the order in which each sweep visits the permutations. Default 0.
    pub seed: u64,
    /// A fixed visiting order (every permutation of the spec exactly once) used in every
    /// sweep instead of seeded random orders. Default `None`.
    pub order: Option<Vec<String>>,
    /// Initial permutations (every permutation of the spec). Default `None` = identities.
    pub init: Option<BTreeMap<String, Permutation>>,
    /// Minimum absolute gain of a step's linear objective that counts as progress.
    /// Default `1e-12`.
    pub tolerance: f64,
    /// Linear assignment solver. Default [`Solver::default`].
    pub solver: Solver,
    /// Warm-start each LAP from the previous sweep's dual potentials. Default `true`; results
    /// are identical up to ties among optimal assignments.
    pub warm_start: bool,
}

impl Default for WeightMatchingOptions {
    fn default() -> Self {
        Self {
            max_iter: 100,
            seed: 0,
            order: None,
            init: None,
            tolerance: 1e-12,
            solver: Solver::default(),
            warm_start: true,
        }
    }
}

/// What happened during [`weight_matching_with_progress`], reported to the callback.
#[derive(Clone, Debug, PartialEq)]
pub enum MatchingEvent<'a> {
    /// Permutation `perm` was re-solved in sweep `sweep` (0-based).
    Update {
        /// Sweep index, from 0.
        sweep: usize,
        /// Permutation name.
        perm: &'a str,
        /// Linear objective `Σ_i S_p[i, p(i)]` before the step.
        before: f64,
        /// Linear objective after the step (`≥ before` up to rounding).
        after: f64,
    },
    /// Sweep `sweep` finished.
    Sweep {
        /// Sweep index, from 0.
        sweep: usize,
        /// Full objective `⟨θ_A, π(θ_B)⟩` after the sweep.
        objective: f64,
        /// Whether some step of the sweep made progress.
        progress: bool,
    },
}

/// Result of [`weight_matching`].
#[derive(Clone, Debug, PartialEq)]
pub struct WeightMatching {
    /// The permutation of B's units for every permutation of the spec: A's unit `i` ↔ B's unit
    /// `p[i]`. Apply them with [`apply_permutations`](crate::apply_permutations).
    pub perms: BTreeMap<String, Permutation>,
    /// `⟨θ_A, π(θ_B)⟩` over all parameters at the returned permutations (f64 accumulation).
    pub objective: f64,
    /// `⟨θ_A, π₀(θ_B)⟩` at the initial permutations (identities unless given).
    pub initial_objective: f64,
    /// Number of sweeps run.
    pub sweeps: usize,
    /// `⟨θ_A, π(θ_B)⟩` after each sweep.
    pub history: Vec<f64>,
    /// Whether the last sweep made no progress. `false` if `max_iter` stopped the loop: then
    /// `perms` and `objective` are the **best** iterate seen (largest objective after a sweep,
    /// or the initial permutations), not necessarily the last, which may oscillate (a spec with
    /// one permutation on two axes of a tensor, say).
    pub converged: bool,
}

/// Weight matching of `b` onto `a` (Git Re-Basin, Algorithm 1); see the [module docs](self).
///
/// # Errors
/// Everything [`PermutationSpec::validate`] reports for either model; [`Error::ShapeMismatch`]
/// if A and B disagree on a parameter of the spec; [`Error::NonFinite`] if a parameter of the
/// spec holds NaN or ±∞; [`Error::InvalidArgument`] for a bad `order`, `init` or `tolerance`.
///
/// # Examples
/// ```
/// use llfc::matching::weight::{weight_matching, WeightMatchingOptions};
/// use llfc::{apply_permutations, mlp, Permutation, PermutationSpec};
/// use rand::SeedableRng;
/// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
/// let a = mlp::init::<f64, _>(&[5, 12, 12, 3], &mut rng)?;
/// let spec = PermutationSpec::mlp(3);
/// // B is a permuted copy of A: weight matching finds the permutation back.
/// let planted = spec.perm_sizes(&a)?.into_iter()
///     .map(|(k, n)| (k, Permutation::random(n, &mut rng))).collect();
/// let b = apply_permutations(&spec, &planted, &a)?;
/// let m = weight_matching(&spec, &a, &b, &WeightMatchingOptions::default())?;
/// let back = apply_permutations(&spec, &m.perms, &b)?;
/// assert_eq!(back, a);
/// # Ok::<(), llfc::Error>(())
/// ```
pub fn weight_matching<F: Float>(
    spec: &PermutationSpec,
    a: &Params<F>,
    b: &Params<F>,
    options: &WeightMatchingOptions,
) -> Result<WeightMatching> {
    weight_matching_with_progress(spec, a, b, options, |_| {})
}

/// As [`weight_matching`].
pub fn weight_matching_with_progress<F: Float>(
    spec: &PermutationSpec,
    a: &Params<F>,
    b: &Params<F>,
    options: &WeightMatchingOptions,
    mut progress: impl FnMut(&MatchingEvent<'_>),
) -> Result<WeightMatching> {
    weight_matching_controlled(spec, a, b, options, |e| {
        progress(e);
        ControlFlow::Continue(())
    })
}

/// [`weight_matching_with_progress`] whose callback may stop the run: returning
/// [`ControlFlow::Break`] after an event ends the loop there, and the permutations reached so far
/// are returned with `converged: false` (e.g. to honour Ctrl-C from a Python caller, or a time
/// budget). A sweep cut short counts in `sweeps` and ends `history` with the objective reached.
/// Stopping at the `Sweep` event of sweep `k` gives the result of `max_iter = k + 1`.
///
/// # Errors
/// As [`weight_matching`].
pub fn weight_matching_controlled<F: Float>(
    spec: &PermutationSpec,
    a: &Params<F>,
    b: &Params<F>,
    options: &WeightMatchingOptions,
    mut control: impl FnMut(&MatchingEvent<'_>) -> ControlFlow<()>,
) -> Result<WeightMatching> {
    // Unflattened parameters are matched as their views (see `spec::Unflatten`).
    let ((plain, a), (_, b)) = (spec.viewed(a)?, spec.viewed(b)?);
    let (spec, a, b) = (plain.as_ref(), a.as_ref(), b.as_ref());
    let sizes = spec.perm_sizes(a)?;
    let sizes_b = spec.perm_sizes(b)?;
    check_inputs(spec, a, b, &sizes, &sizes_b, options)?;
    if let Some(wide) = overflow_guard(spec, a, b)? {
        // Products of these weights overflow `F` (f32 beyond ~1e19): match in f64.
        return weight_matching_controlled(spec, &wide.0, &wide.1, options, control);
    }
    let names: Vec<String> = sizes.keys().cloned().collect();
    let mut perms = match &options.init {
        Some(init) => init.clone(),
        None => spec.identity_perms(a)?,
    };

    // Every term `(w, k)` of every permutation, moved and reshaped once; `by_perm[p]` lists the
    // indices of `p`'s terms in the spec's order.
    let inverse = spec.perm_uses();
    let mut terms: Vec<Term<'_, F>> = Vec::new();
    let mut by_perm: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    // Each permuted parameter's whole-axis terms and the permutations on their axes.
    let mut of_param: BTreeMap<String, Vec<(usize, String)>> = BTreeMap::new();
    for name in &names {
        let list = inverse[name]
            .iter()
            .map(|u| {
                terms.push(Term::new(spec, a, b, u));
                let entry = of_param.entry(u.param.clone()).or_default();
                if u.segment.is_none() {
                    entry.push((terms.len() - 1, name.clone()));
                }
                terms.len() - 1
            })
            .collect();
        by_perm.insert(name.as_str(), list);
    }
    let objective = Objective::new(a, b, of_param)?;
    // The exact step of every permutation (shared by the members of a structured one).
    let coords = spec.coordinates(&sizes);

    let mut cache: BTreeMap<&str, Array2<f64>> = BTreeMap::new();
    let mut warm: BTreeMap<&str, LapWarm> = BTreeMap::new();
    let mut solved: BTreeSet<&str> = BTreeSet::new();
    let mut ahead_changed: BTreeSet<&str> = BTreeSet::new();
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let initial_objective = objective.value(spec, &terms, &perms);
    let mut history = Vec::new();
    let mut converged = false;
    let mut stopped = false;
    let mut sweeps = 0;

    // The best iterate seen, returned if the loop stops without converging.
    let mut best = (initial_objective, perms.clone());

    while sweeps < options.max_iter {
        let order: Vec<&str> = match &options.order {
            Some(o) => o.iter().map(String::as_str).collect(),
            None => {
                let mut o: Vec<&str> = names.iter().map(String::as_str).collect();
                o.shuffle(&mut rng);
                o
            }
        };
        let mut any_progress = false;
        let mut visited = BTreeSet::new();
        for (pos, &name) in order.iter().enumerate() {
            let coord = &coords[name];
            if !coord.is_plain(sizes[name]) {
                // Structured: one exact step for every member (once per sweep).
                if !visited.insert(std::sync::Arc::as_ptr(coord)) {
                    continue;
                }
                for m in coord.members() {
                    let m = names.iter().find(|x| *x == m).expect("member of the spec");
                    let mut changed = ahead_changed.remove(m.as_str());
                    for &t in &by_perm[m.as_str()] {
                        changed |= terms[t].refresh(&perms);
                    }
                    if changed || !cache.contains_key(m.as_str()) {
                        let s = cache
                            .entry(m.as_str())
                            .or_insert_with(|| Array2::zeros((sizes[m], sizes[m])));
                        sum_terms_into(&terms, &by_perm[m.as_str()], s);
                    }
                }
                let step = super::structured::solve_coordinate(
                    spec,
                    coord,
                    &cache,
                    &perms,
                    options.solver,
                )?;
                let flow = control(&MatchingEvent::Update {
                    sweep: sweeps,
                    perm: name,
                    before: step.before,
                    after: step.after,
                });
                if step.after > step.before + options.tolerance {
                    any_progress = true;
                    perms.extend(step.perms);
                }
                if flow.is_break() {
                    stopped = true;
                    break;
                }
                continue;
            }
            // A term refreshed ahead of time (below) may have changed `S_p` already.
            let mut changed = ahead_changed.remove(name);
            for &t in &by_perm[name] {
                changed |= terms[t].refresh(&perms);
            }
            if changed || !cache.contains_key(name) {
                let s = cache
                    .entry(name)
                    .or_insert_with(|| Array2::zeros((sizes[name], sizes[name])));
                sum_terms_into(&terms, &by_perm[name], s);
                solved.remove(name);
            }
            let s = &cache[name];
            let old = &perms[name];
            let before = linear_objective(s, old);
            // Unchanged `S_p` since its last LAP: the current permutation is that LAP's optimum
            // (or was kept because the optimum gained nothing), so a re-solve cannot progress.
            let (new, after) = if solved.contains(name) {
                (old.clone(), before)
            } else {
                let prior = if options.warm_start {
                    warm.get(name)
                } else {
                    None
                };
                // While the LAP runs, refresh the terms of the next permutation that do not
                // depend on this one (their column maps involve other permutations only):
                // same arithmetic whatever the timing, so results stay thread-independent.
                let next = order.get(pos + 1).copied().filter(|&x| x != name);
                let ahead: Vec<usize> = next.map_or_else(Vec::new, |x| {
                    by_perm[x]
                        .iter()
                        .copied()
                        .filter(|&t| !terms[t].depends_on(&[name]))
                        .collect()
                });
                let (lap, refreshed) = join(
                    || lap_max(s.view(), options.solver, prior),
                    || {
                        let mut any = false;
                        for &t in &ahead {
                            any |= terms[t].refresh(&perms);
                        }
                        any
                    },
                );
                if let (true, Some(x)) = (refreshed, next) {
                    ahead_changed.insert(x);
                }
                let (new, state) = lap?;
                warm.insert(name, state);
                solved.insert(name);
                let after = linear_objective(s, &new);
                (new, after)
            };
            let flow = control(&MatchingEvent::Update {
                sweep: sweeps,
                perm: name,
                before,
                after,
            });
            if after > before + options.tolerance {
                any_progress = true;
                perms.insert(name.to_string(), new);
            }
            if flow.is_break() {
                stopped = true;
                break;
            }
        }
        if stopped {
            let value = objective.value(spec, &terms, &perms);
            history.push(value);
            if value >= best.0 {
                best = (value, perms.clone());
            }
            sweeps += 1;
            break;
        }
        let value = objective.value(spec, &terms, &perms);
        history.push(value);
        let flow = control(&MatchingEvent::Sweep {
            sweep: sweeps,
            objective: value,
            progress: any_progress,
        });
        sweeps += 1;
        if !any_progress {
            converged = true;
            break;
        }
        if value >= best.0 {
            best = (value, perms.clone());
        }
        if flow.is_break() {
            break;
        }
    }
    let (objective, perms) = if converged {
        (history.last().copied().unwrap_or(initial_objective), perms)
    } else {
        best
    };
    Ok(WeightMatching {
        objective,
        perms,
        initial_objective,
        sweeps,
        history,
        converged,
    })
}

/// `Some((a, b))` in f64 if the products `A_w · B̃_wᵀ` (and their sums) could overflow `F`,
/// `None` if `F` holds them.
///
/// # Errors
/// [`Error::InvalidArgument`] if they overflow even f64.
#[allow(clippy::type_complexity)]
fn overflow_guard<F: Float>(
    spec: &PermutationSpec,
    a: &Params<F>,
    b: &Params<F>,
) -> Result<Option<(Params<f64>, Params<f64>)>> {
    let (mut max_a, mut max_b, mut inner, mut terms) = (0.0f64, 0.0f64, 0, 0);
    for list in spec.perm_to_axes().values() {
        terms = terms.max(list.len());
        for (param, axis) in list {
            let shape = a[param.as_str()].shape();
            inner = inner.max(shape.iter().product::<usize>() / shape[*axis].max(1));
            max_a = max_a.max(max_abs(a[param.as_str()].iter()));
            max_b = max_b.max(max_abs(b[param.as_str()].iter()));
        }
    }
    if !products_may_overflow::<F>(max_a, max_b, inner, terms) {
        return Ok(None);
    }
    if products_may_overflow::<f64>(max_a, max_b, inner, terms) {
        return Err(Error::InvalidArgument {
            name: "params",
            reason: format!(
                "weights up to {max_a:e} (A) and {max_b:e} (B) make the similarity products \
                 overflow even in f64"
            ),
        });
    }
    Ok(Some((a.cast::<f64>(), b.cast::<f64>())))
}

/// Run `a` and `b`, in parallel with the `rayon` feature.
fn join<A: Send, B: Send>(a: impl FnOnce() -> A + Send, b: impl FnOnce() -> B + Send) -> (A, B) {
    #[cfg(feature = "rayon")]
    return rayon::join(a, b);
    #[cfg(not(feature = "rayon"))]
    (a(), b())
}

fn check_inputs<F: Float>(
    spec: &PermutationSpec,
    a: &Params<F>,
    b: &Params<F>,
    sizes: &BTreeMap<String, usize>,
    sizes_b: &BTreeMap<String, usize>,
    options: &WeightMatchingOptions,
) -> Result<()> {
    for (param, _) in spec.iter() {
        let (ta, tb) = (&a[param], &b[param]);
        if ta.shape() != tb.shape() {
            return Err(Error::ShapeMismatch {
                what: format!("parameter `{param}` of A versus B"),
                expected: ta.shape().to_vec(),
                found: tb.shape().to_vec(),
            });
        }
        for (who, t) in [("A", ta), ("B", tb)] {
            if !all_finite(t) {
                return Err(Error::NonFinite {
                    what: format!("parameter `{param}` of model {who}"),
                });
            }
        }
    }
    debug_assert_eq!(sizes, sizes_b);
    if !(options.tolerance >= 0.0 && options.tolerance.is_finite()) {
        return Err(Error::InvalidArgument {
            name: "tolerance",
            reason: format!("must be finite and non-negative, got {}", options.tolerance),
        });
    }
    if let Some(order) = &options.order {
        let mut sorted = order.clone();
        sorted.sort();
        if sorted != sizes.keys().cloned().collect::<Vec<_>>() {
            return Err(Error::InvalidArgument {
                name: "order",
                reason: format!(
                    "must list every permutation of the spec exactly once: {:?}",
                    sizes.keys().collect::<Vec<_>>()
                ),
            });
        }
    }
    if let Some(init) = &options.init {
        let ok = init.len() == sizes.len()
            && sizes
                .iter()
                .all(|(k, &n)| init.get(k).is_some_and(|p| p.len() == n));
        if !ok {
            return Err(Error::InvalidArgument {
                name: "init",
                reason: "must give every permutation of the spec, with the size of its axes".into(),
            });
        }
    }
    Ok(())
}

/// Re-solve one permutation's exact step at the given permutations and report the gain it
/// would bring: `max_q Σ_i S_p[i, q(i)] − Σ_i S_p[i, p(i)]` (≥ 0), the maximum over the
/// permutations of `perm`'s structure (for a structured permutation: over its coordinate —
/// the tied heads or the atom — summed over the members). Zero for every permutation means
/// the permutations are a fixed point of weight matching.
///
/// # Errors
/// As [`weight_matching`]; [`Error::PermutationName`] if `perm` is not in the spec.
pub fn single_step_gain<F: Float>(
    spec: &PermutationSpec,
    a: &Params<F>,
    b: &Params<F>,
    perms: &BTreeMap<String, Permutation>,
    perm: &str,
) -> Result<f64> {
    let ((plain, a), (_, b)) = (spec.viewed(a)?, spec.viewed(b)?);
    let (spec, a, b) = (plain.as_ref(), a.as_ref(), b.as_ref());
    let sizes = spec.perm_sizes(a)?;
    if !sizes.contains_key(perm) {
        return Err(Error::PermutationName {
            perm: perm.to_string(),
            problem: "is not a permutation of the spec".into(),
        });
    }
    check_inputs(
        spec,
        a,
        b,
        &sizes,
        &spec.perm_sizes(b)?,
        &WeightMatchingOptions::default(),
    )?;
    let coord = &spec.coordinates(&sizes)[perm];
    let uses = spec.perm_uses();
    let mut s_by: BTreeMap<&str, Array2<f64>> = BTreeMap::new();
    for m in coord.members() {
        let mut terms: Vec<Term<'_, F>> =
            uses[m].iter().map(|u| Term::new(spec, a, b, u)).collect();
        for t in &mut terms {
            t.refresh(perms);
        }
        let mut s = Array2::zeros((sizes[m], sizes[m]));
        sum_terms_into(&terms, &(0..terms.len()).collect::<Vec<_>>(), &mut s);
        s_by.insert(m, s);
    }
    let step = super::structured::solve_coordinate(spec, coord, &s_by, perms, Solver::default())?;
    Ok(step.after - step.before)
}
