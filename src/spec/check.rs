//! The functional check that a spec is a symmetry of a model: permute the parameters by random
//! permutations through the spec and compare the outputs of any forward pass the caller supplies
//! (Entezari et al. 2022; Ainsworth et al. 2023: a permutation spec is only correct if the
//! permuted network computes the same function).
//!
//! Names and shapes alone cannot tell a valid spec from a wrong one (a permutation across
//! attention heads, a permutation produced but never consumed with a square weight); running the
//! model can. When the joint check fails, every permutation is tried alone (the others left at
//! the identity) to name the ones that break the function.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use ndarray::{Array, Dimension, Zip};
use rand::Rng;

use super::PermutationSpec;
use crate::error::{Error, Result};
use crate::float::{all_finite, Float};
use crate::params::{apply_fitted, Params};
use crate::permutation::Permutation;

/// The outcome of [`check_invariance`].
#[derive(Clone, Debug, PartialEq)]
pub struct InvarianceReport {
    /// `max |f(π(θ); x) − f(θ; x)|` over all outputs, with every permutation applied at once
    /// (f64; `+∞` if an output of the permuted model is not finite).
    pub max_abs_diff: f64,
    /// `max |f(θ; x)|`, the scale of the outputs.
    pub max_abs_output: f64,
    /// The absolute tolerance the check used.
    pub tol: f64,
    /// The random permutations applied (a plain one is never the identity unless its size
    /// is 1; see [`check_invariance`]).
    pub perms: BTreeMap<String, Permutation>,
    /// Only when the joint check failed: for each permutation applied alone, its
    /// `max |Δoutput|`.
    pub per_perm: BTreeMap<String, f64>,
}

impl InvarianceReport {
    /// Whether the outputs agreed within the tolerance.
    #[must_use]
    pub fn passed(&self) -> bool {
        self.max_abs_diff <= self.tol
    }

    /// The permutations that change the output on their own (empty if the check passed).
    #[must_use]
    pub fn broken(&self) -> Vec<&str> {
        self.per_perm
            .iter()
            .filter(|&(_, &d)| d.is_nan() || d > self.tol)
            .map(|(k, _)| k.as_str())
            .collect()
    }

    /// `Ok(self)` if the check passed.
    ///
    /// # Errors
    /// [`Error::NotInvariant`] with the largest difference and the breaking permutations.
    pub fn into_result(self) -> Result<Self> {
        if self.passed() {
            Ok(self)
        } else {
            Err(Error::NotInvariant {
                max_abs_diff: self.max_abs_diff,
                tol: self.tol,
                broken: self.broken().into_iter().map(str::to_string).collect(),
            })
        }
    }
}

impl fmt::Display for InvarianceReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.passed() { "passed" } else { "FAILED" };
        write!(
            f,
            "symmetry check {verdict}: max |Δoutput| = {:.3e} (outputs up to {:.3e}, tolerance {:.1e}, {} permutations)",
            self.max_abs_diff,
            self.max_abs_output,
            self.tol,
            self.perms.len()
        )?;
        for (k, d) in &self.per_perm {
            let mark = if *d <= self.tol { "ok" } else { "BREAKS" };
            write!(f, "\n  {k} alone: max |Δoutput| = {d:.3e} {mark}")?;
        }
        Ok(())
    }
}

/// A random permutation of `n` units that is not the identity when `n ≥ 2`.
fn random_non_identity<R: Rng + ?Sized>(n: usize, rng: &mut R) -> Permutation {
    let p = Permutation::random(n, rng);
    if n < 2 || p != Permutation::identity(n) {
        return p;
    }
    let mut map: Vec<usize> = (0..n).collect();
    let i = rng.random_range(0..n - 1);
    map.swap(i, i + 1);
    Permutation::new(map).expect("a transposition is a permutation")
}

/// The permutations tied to each permutation through the exact steps of weight matching
/// (shared heads, embeddings), transitively: each name maps to its group (itself included).
fn tied_groups(
    spec: &PermutationSpec,
    sizes: &BTreeMap<String, usize>,
) -> BTreeMap<String, BTreeSet<String>> {
    let mut groups: BTreeMap<String, BTreeSet<String>> = sizes
        .keys()
        .map(|k| (k.clone(), BTreeSet::from([k.clone()])))
        .collect();
    for coord in spec.coordinates(sizes).values() {
        let members = coord.members();
        let mut union: BTreeSet<String> = BTreeSet::new();
        for m in &members {
            union.extend(groups[*m].iter().cloned());
        }
        for m in union.clone() {
            groups.insert(m, union.clone());
        }
    }
    groups
}

/// Random permutations with the spec's declared structure ([`PermutationSpec::random_perms`]).
/// A permutation that is tied to none (a plain one) is drawn again by `random_non_identity`;
/// for the structured ones the whole draw is repeated (at most 16 times) until none of them of
/// two or more units is the identity.
fn draw<F: Float, R: Rng + ?Sized>(
    spec: &PermutationSpec,
    params: &Params<F>,
    sizes: &BTreeMap<String, usize>,
    groups: &BTreeMap<String, BTreeSet<String>>,
    rng: &mut R,
) -> Result<BTreeMap<String, Permutation>> {
    let plain = |k: &str| groups[k].len() == 1 && spec.decl(k).is_none();
    // Plain permutations first, in name order (the same draws as for a spec without
    // structure).
    let mut perms: BTreeMap<String, Permutation> = sizes
        .iter()
        .filter(|(k, _)| plain(k))
        .map(|(k, &n)| (k.clone(), random_non_identity(n, rng)))
        .collect();
    if perms.len() < sizes.len() {
        let mut structured = spec.random_perms(params, rng)?;
        for _ in 1..16 {
            let identity = structured
                .iter()
                .any(|(k, p)| !plain(k) && p.len() >= 2 && *p == Permutation::identity(p.len()));
            if !identity {
                break;
            }
            structured = spec.random_perms(params, rng)?;
        }
        for (k, p) in structured {
            perms.entry(k).or_insert(p);
        }
    }
    Ok(perms)
}

/// Check that `spec` is a symmetry of the model computed by `forward`: draw a random
/// permutation for every permutation of the spec (with its declared structure:
/// [`PermutationSpec::random_perms`]), compute `f(π(θ); x)` and compare it with
/// `f(θ; x)` elementwise. Passes when `max |Δ| ≤ tol` (absolute, in f64). If it fails, each
/// permutation is applied alone as well and its `max |Δ|` reported in
/// [`InvarianceReport::per_perm`] (together with the permutations tied to it: shared heads,
/// embeddings), so the report names the permutations that break the model.
///
/// `forward` is the caller's model (any closure: a reference forward, a call into another
/// runtime); it gets the parameters and `inputs` and returns the outputs. Costs `2 + k` forward
/// passes when the check fails for a spec of `k` permutations, 2 when it passes.
///
/// # Errors
/// What [`PermutationSpec::validate`] reports about shapes (the symmetry rules are not
/// applied: a spec that breaks them is checked and the breaking permutations named);
/// [`Error::InvalidArgument`] for a negative
/// or non-finite `tol`; [`Error::NonFinite`] if the unpermuted model's output is not finite;
/// [`Error::ShapeMismatch`] if the permuted model's output has another shape; any error of
/// `forward`. A failed check is not an error: see [`InvarianceReport::into_result`].
///
/// # Examples
/// ```
/// use llfc::spec::check_invariance;
/// use llfc::{mlp, PermutationSpec};
/// use ndarray::Array2;
/// use rand::SeedableRng;
/// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
/// let params = mlp::init::<f64, _>(&[4, 8, 8, 3], &mut rng)?;
/// let x = Array2::from_shape_fn((5, 4), |(i, j)| (i as f64 - j as f64) / 3.0);
/// let forward = |p: &llfc::Params<f64>, x: &Array2<f64>| mlp::forward(p, x);
/// let good = check_invariance(&PermutationSpec::mlp(3), &params, forward, &x, 1e-12, &mut rng)?;
/// assert!(good.passed());
/// // `P_0` produced by layer 0 but never consumed by layer 1: the check names it.
/// let bad = PermutationSpec::mlp(3).with("layers.1.weight", &[Some("P_1"), None]);
/// let report = check_invariance(&bad, &params, forward, &x, 1e-12, &mut rng)?;
/// assert!(!report.passed());
/// assert_eq!(report.broken(), vec!["P_0"]);
/// # Ok::<(), llfc::Error>(())
/// ```
pub fn check_invariance<F, I, D, R>(
    spec: &PermutationSpec,
    params: &Params<F>,
    mut forward: impl FnMut(&Params<F>, &I) -> Result<Array<F, D>>,
    inputs: &I,
    tol: f64,
    rng: &mut R,
) -> Result<InvarianceReport>
where
    F: Float,
    I: ?Sized,
    D: Dimension,
    R: Rng + ?Sized,
{
    if !(tol.is_finite() && tol >= 0.0) {
        return Err(Error::InvalidArgument {
            name: "tol",
            reason: format!("must be finite and non-negative, got {tol}"),
        });
    }
    let sizes = spec.fitted_sizes(params)?;
    let reference = forward(params, inputs)?;
    if !all_finite(&reference) {
        return Err(Error::NonFinite {
            what: "the output of the unpermuted model".into(),
        });
    }
    let max_abs_output = reference
        .iter()
        .fold(0.0_f64, |m, v| m.max(v.as_f64().abs()));
    let groups = tied_groups(spec, &sizes);
    let perms = draw(spec, params, &sizes, &groups, rng)?;
    let mut diff = |perms: &BTreeMap<String, Permutation>| -> Result<f64> {
        let out = forward(&apply_fitted(spec, perms, params, &sizes)?, inputs)?;
        if out.shape() != reference.shape() {
            return Err(Error::ShapeMismatch {
                what: "output of the permuted model".into(),
                expected: reference.shape().to_vec(),
                found: out.shape().to_vec(),
            });
        }
        let mut max = 0.0_f64;
        Zip::from(&out).and(&reference).for_each(|&o, &r| {
            let d = (o.as_f64() - r.as_f64()).abs();
            max = if d.is_nan() {
                f64::INFINITY
            } else {
                max.max(d)
            };
        });
        Ok(max)
    };
    let max_abs_diff = diff(&perms)?;
    let mut per_perm = BTreeMap::new();
    if max_abs_diff > tol {
        for (name, p) in &perms {
            let mut alone: BTreeMap<String, Permutation> = sizes
                .iter()
                .map(|(k, &n)| (k.clone(), Permutation::identity(n)))
                .collect();
            // A structured permutation goes with those tied to it (heads, embeddings).
            for m in &groups[name] {
                alone.insert(m.clone(), perms[m].clone());
            }
            alone.insert(name.clone(), p.clone());
            per_perm.insert(name.clone(), diff(&alone)?);
        }
    }
    Ok(InvarianceReport {
        max_abs_diff,
        max_abs_output,
        tol,
        perms,
        per_perm,
    })
}

impl PermutationSpec {
    /// [`check_invariance`] of this spec.
    ///
    /// # Errors
    /// As [`check_invariance`].
    pub fn check_invariance<F, I, D, R>(
        &self,
        params: &Params<F>,
        forward: impl FnMut(&Params<F>, &I) -> Result<Array<F, D>>,
        inputs: &I,
        tol: f64,
        rng: &mut R,
    ) -> Result<InvarianceReport>
    where
        F: Float,
        I: ?Sized,
        D: Dimension,
        R: Rng + ?Sized,
    {
        check_invariance(self, params, forward, inputs, tol, rng)
    }
}
