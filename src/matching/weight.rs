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

use std::collections::BTreeMap;

use ndarray::{Array2, Axis};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::{lap_max, par_gemm_abt, LapWarm};
use crate::assignment::Solver;
use crate::error::{Error, Result};
use crate::float::Float;
use crate::params::{apply_permutations, Params};
use crate::permutation::{permute_axis, Permutation};
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
    /// `p[i]`. Apply them with [`apply_permutations`].
    pub perms: BTreeMap<String, Permutation>,
    /// `⟨θ_A, π(θ_B)⟩` over all parameters at the returned permutations (f64 accumulation).
    pub objective: f64,
    /// `⟨θ_A, π₀(θ_B)⟩` at the initial permutations (identities unless given).
    pub initial_objective: f64,
    /// Number of sweeps run.
    pub sweeps: usize,
    /// `⟨θ_A, π(θ_B)⟩` after each sweep.
    pub history: Vec<f64>,
    /// Whether the last sweep made no progress (false if `max_iter` stopped the loop).
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

/// One term `(w, k)` of a permutation's similarity matrix.
struct Term<F> {
    param: String,
    axis: usize,
    /// `W_A` with axis `k` first, reshaped to `[n, −1]`.
    a_mat: Array2<F>,
}

/// [`weight_matching`] with a callback receiving a [`MatchingEvent`] after every step and every
/// sweep (e.g. to drive a progress bar).
///
/// # Errors
/// As [`weight_matching`].
pub fn weight_matching_with_progress<F: Float>(
    spec: &PermutationSpec,
    a: &Params<F>,
    b: &Params<F>,
    options: &WeightMatchingOptions,
    mut progress: impl FnMut(&MatchingEvent<'_>),
) -> Result<WeightMatching> {
    let sizes = spec.perm_sizes(a)?;
    let sizes_b = spec.perm_sizes(b)?;
    check_inputs(spec, a, b, &sizes, &sizes_b, options)?;
    let names: Vec<String> = sizes.keys().cloned().collect();
    let mut perms = match &options.init {
        Some(init) => init.clone(),
        None => spec.identity_perms(a)?,
    };

    // A's side of every term never changes: move/reshape it once.
    let inverse = spec.perm_to_axes();
    let mut terms: BTreeMap<&str, Vec<Term<F>>> = BTreeMap::new();
    for name in &names {
        let list = inverse[name]
            .iter()
            .map(|(param, axis)| Term {
                param: param.clone(),
                axis: *axis,
                a_mat: flatten_axis_first(&a[param.as_str()].view(), *axis),
            })
            .collect();
        terms.insert(name.as_str(), list);
    }
    // Permutations each similarity matrix depends on (other axes of its terms' parameters).
    let deps: BTreeMap<&str, Vec<String>> = names
        .iter()
        .map(|name| {
            let mut d: Vec<String> = terms[name.as_str()]
                .iter()
                .flat_map(|t| other_perms(spec, &t.param, t.axis))
                .collect();
            d.sort();
            d.dedup();
            (name.as_str(), d)
        })
        .collect();

    let mut version: BTreeMap<&str, u64> = names.iter().map(|n| (n.as_str(), 0)).collect();
    let mut cache: BTreeMap<&str, (Vec<u64>, Array2<f64>)> = BTreeMap::new();
    let mut warm: BTreeMap<&str, LapWarm> = BTreeMap::new();
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let initial_objective = full_objective(spec, &perms, a, b)?;
    let mut history = Vec::new();
    let mut converged = false;
    let mut sweeps = 0;

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
        for &name in &order {
            let key: Vec<u64> = deps[name].iter().map(|d| version[d.as_str()]).collect();
            let fresh = cache.get(name).is_some_and(|(k, _)| *k == key);
            if !fresh {
                let s = similarity(spec, &terms[name], &perms, b, sizes[name])?;
                cache.insert(name, (key, s));
            }
            let s = &cache[name].1;
            let old = &perms[name];
            let before = linear_objective(s, old);
            let prior = if options.warm_start {
                warm.get(name)
            } else {
                None
            };
            let (new, state) = lap_max(s.view(), options.solver, prior)?;
            let after = linear_objective(s, &new);
            warm.insert(name, state);
            progress(&MatchingEvent::Update {
                sweep: sweeps,
                perm: name,
                before,
                after,
            });
            if after > before + options.tolerance {
                any_progress = true;
                perms.insert(name.to_string(), new);
                *version.get_mut(name).expect("every name has a version") += 1;
            }
        }
        let objective = full_objective(spec, &perms, a, b)?;
        history.push(objective);
        progress(&MatchingEvent::Sweep {
            sweep: sweeps,
            objective,
            progress: any_progress,
        });
        sweeps += 1;
        if !any_progress {
            converged = true;
            break;
        }
    }
    Ok(WeightMatching {
        objective: history.last().copied().unwrap_or(initial_objective),
        perms,
        initial_objective,
        sweeps,
        history,
        converged,
    })
}

/// `⟨θ_A, π(θ_B)⟩` over all parameters, in f64.
fn full_objective<F: Float>(
    spec: &PermutationSpec,
    perms: &BTreeMap<String, Permutation>,
    a: &Params<F>,
    b: &Params<F>,
) -> Result<f64> {
    a.inner(&apply_permutations(spec, perms, b)?)
}

/// `Σ_i S[i, p(i)]`.
pub(crate) fn linear_objective(s: &Array2<f64>, p: &Permutation) -> f64 {
    p.as_slice()
        .iter()
        .enumerate()
        .map(|(i, &j)| s[[i, j]])
        .sum()
}

/// Names of the permutations on the axes of `param` other than `axis`.
fn other_perms(spec: &PermutationSpec, param: &str, axis: usize) -> Vec<String> {
    spec.axes(param)
        .unwrap_or(&[])
        .iter()
        .enumerate()
        .filter(|&(k, _)| k != axis)
        .filter_map(|(_, p)| p.clone())
        .collect()
}

/// `S_p = Σ_terms A_w · B̃_wᵀ`, summed in the terms' fixed order.
fn similarity<F: Float>(
    spec: &PermutationSpec,
    terms: &[Term<F>],
    perms: &BTreeMap<String, Permutation>,
    b: &Params<F>,
    n: usize,
) -> Result<Array2<f64>> {
    let mut s = Array2::<f64>::zeros((n, n));
    for t in terms {
        let mut w = b[t.param.as_str()].clone();
        let axes = spec.axes(&t.param).unwrap_or(&[]);
        for (k, perm) in axes.iter().enumerate() {
            if let (true, Some(perm)) = (k != t.axis, perm) {
                w = permute_axis(&w, k, &perms[perm])?;
            }
        }
        let b_mat = flatten_axis_first(&w.view(), t.axis);
        s += &par_gemm_abt(t.a_mat.view(), b_mat.view());
    }
    Ok(s)
}

/// Move `axis` first and reshape to `[n, −1]` (row-major copy).
pub(crate) fn flatten_axis_first<F: Float>(
    w: &ndarray::ArrayViewD<'_, F>,
    axis: usize,
) -> Array2<F> {
    let n = w.len_of(Axis(axis));
    let rest = w.len().checked_div(n).unwrap_or(0);
    let mut order: Vec<usize> = vec![axis];
    order.extend((0..w.ndim()).filter(|&k| k != axis));
    let moved = w.view().permuted_axes(order);
    let data: Vec<F> = moved.iter().copied().collect();
    Array2::from_shape_vec((n, rest), data).expect("length n·rest by construction")
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
            if t.iter().any(|x| !x.is_finite()) {
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

/// Re-solve one permutation's LAP at the given permutations and report the gain it would
/// bring: `max_q Σ_i S_p[i, q(i)] − Σ_i S_p[i, p(i)]` (≥ 0). Zero for every permutation means
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
    let sizes = spec.perm_sizes(a)?;
    let n = *sizes.get(perm).ok_or_else(|| Error::PermutationName {
        perm: perm.to_string(),
        problem: "is not a permutation of the spec".into(),
    })?;
    check_inputs(
        spec,
        a,
        b,
        &sizes,
        &spec.perm_sizes(b)?,
        &WeightMatchingOptions::default(),
    )?;
    let terms: Vec<Term<F>> = spec.perm_to_axes()[perm]
        .iter()
        .map(|(param, axis)| Term {
            param: param.clone(),
            axis: *axis,
            a_mat: flatten_axis_first(&a[param.as_str()].view(), *axis),
        })
        .collect();
    let s = similarity(spec, &terms, perms, b, n)?;
    let (best, _) = lap_max(s.view(), Solver::default(), None)?;
    Ok(linear_objective(&s, &best) - linear_objective(&s, &perms[perm]))
}
