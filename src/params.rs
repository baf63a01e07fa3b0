//! Parameter sets (`state_dict`s) and the operations between them.
//!
//! [`Params<F>`] is an ordered map from parameter name to [`ArrayD<F>`], in the order a
//! PyTorch `state_dict` lists them. Operations return new values and never modify their inputs.

use std::collections::BTreeMap;

use indexmap::IndexMap;
use ndarray::{ArrayD, Zip};

use crate::error::{Error, Result};
use crate::float::{all_finite, Float};
use crate::permutation::{permute_axis, Permutation};
use crate::spec::PermutationSpec;

/// An ordered map `name → tensor`, like a PyTorch `state_dict`.
///
/// Insertion order is preserved (it is the order files are written in).
///
/// # Examples
/// ```
/// use llfc::Params;
/// use ndarray::{arr1, arr2};
/// let mut a = Params::<f64>::new();
/// a.insert("fc.weight", arr2(&[[1.0, 2.0]]).into_dyn());
/// a.insert("fc.bias", arr1(&[0.5]).into_dyn());
/// let b = a.map(|_, t| t * 3.0);
/// let mid = a.interpolate(&b, 0.5)?; // 0.5·a + 0.5·b = 2·a
/// assert_eq!(mid["fc.weight"], arr2(&[[2.0, 4.0]]).into_dyn());
/// assert_eq!(a.distance(&b)?, (4.0f64 * (1.0 + 4.0 + 0.25)).sqrt());
/// # Ok::<(), llfc::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Params<F> {
    tensors: IndexMap<String, ArrayD<F>>,
}

impl<F: Float> Params<F> {
    /// An empty parameter set.
    #[must_use]
    pub fn new() -> Self {
        Self {
            tensors: IndexMap::new(),
        }
    }

    /// Insert (or replace, keeping its position) the tensor `name`; returns the previous one.
    pub fn insert(&mut self, name: impl Into<String>, tensor: ArrayD<F>) -> Option<ArrayD<F>> {
        self.tensors.insert(name.into(), tensor)
    }

    /// Remove `name`, keeping the order of the others.
    pub fn remove(&mut self, name: &str) -> Option<ArrayD<F>> {
        self.tensors.shift_remove(name)
    }

    /// The tensor called `name`, if present.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&ArrayD<F>> {
        self.tensors.get(name)
    }

    /// The tensor called `name`.
    ///
    /// # Errors
    /// [`Error::MissingParam`] if absent.
    pub fn require(&self, name: &str) -> Result<&ArrayD<F>> {
        self.get(name).ok_or_else(|| Error::MissingParam {
            param: name.to_string(),
            context: "the parameters".into(),
        })
    }

    /// Whether a tensor called `name` is present.
    #[must_use]
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Number of tensors.
    #[must_use]
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether there are no tensors.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Total number of scalar entries over all tensors.
    #[must_use]
    pub fn num_elements(&self) -> usize {
        self.tensors.values().map(ArrayD::len).sum()
    }

    /// Names in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// `(name, tensor)` pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &ArrayD<F>)> {
        self.tensors.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// A new parameter set with `f(name, tensor)` applied to every tensor.
    #[must_use]
    pub fn map(&self, mut f: impl FnMut(&str, &ArrayD<F>) -> ArrayD<F>) -> Self {
        self.iter().map(|(k, v)| (k.to_string(), f(k, v))).collect()
    }

    /// Convert every tensor to another float type (f32 ↔ f64, rounding to nearest).
    #[must_use]
    pub fn cast<G: Float>(&self) -> Params<G> {
        self.iter()
            .map(|(k, v)| (k.to_string(), v.mapv(|x| G::from_f64(x.as_f64()))))
            .collect()
    }

    /// Check that every entry is finite.
    ///
    /// # Errors
    /// [`Error::NonFinite`] naming the first tensor with a NaN or infinity.
    pub fn check_finite(&self) -> Result<()> {
        for (name, t) in self.iter() {
            if !all_finite(t) {
                return Err(Error::NonFinite {
                    what: format!("parameter `{name}`"),
                });
            }
        }
        Ok(())
    }

    /// Check that `other` has exactly the same names (in any order) and shapes.
    ///
    /// # Errors
    /// [`Error::MissingParam`], [`Error::UnexpectedParam`] or [`Error::ShapeMismatch`] for the
    /// first difference found.
    pub fn check_compatible(&self, other: &Self) -> Result<()> {
        for (name, t) in self.iter() {
            let o = other.get(name).ok_or_else(|| Error::MissingParam {
                param: name.to_string(),
                context: "the second parameter set".into(),
            })?;
            if o.shape() != t.shape() {
                return Err(Error::ShapeMismatch {
                    what: format!("parameter `{name}`"),
                    expected: t.shape().to_vec(),
                    found: o.shape().to_vec(),
                });
            }
        }
        if let Some(extra) = other.names().find(|n| !self.contains(n)) {
            return Err(Error::UnexpectedParam {
                param: extra.to_string(),
                context: "the first parameter set".into(),
            });
        }
        Ok(())
    }

    /// Linear interpolation `θ(α) = α·self + (1 − α)·other` (α = 1 gives `self`), evaluated
    /// entrywise in `F` as `α a + (1 − α) b`, so that α = 1 and α = 0 reproduce the endpoints
    /// exactly. The order of `self` is kept.
    ///
    /// # Errors
    /// As [`Params::check_compatible`]; [`Error::NonFinite`] if `alpha` is not finite.
    pub fn interpolate(&self, other: &Self, alpha: f64) -> Result<Self> {
        if !alpha.is_finite() {
            return Err(Error::NonFinite {
                what: "interpolation coefficient alpha".into(),
            });
        }
        self.check_compatible(other)?;
        let a = F::from_f64(alpha);
        let b = F::from_f64(1.0 - alpha);
        Ok(self
            .iter()
            .map(|(name, ta)| {
                let tb = &other.tensors[name];
                let t = Zip::from(ta).and(tb).map_collect(|&x, &y| a * x + b * y);
                (name.to_string(), t)
            })
            .collect())
    }

    /// Inner product `⟨self, other⟩ = Σ_names Σ_entries a·b`, accumulated in f64.
    ///
    /// # Errors
    /// As [`Params::check_compatible`].
    pub fn inner(&self, other: &Self) -> Result<f64> {
        self.sum_pairs(other, |x, y| x * y)
    }

    /// `Σ_names Σ_entries f(a, b)` over matching entries (converted to f64), after checking
    /// that the two sets are compatible.
    fn sum_pairs(&self, other: &Self, f: impl Fn(f64, f64) -> f64) -> Result<f64> {
        self.check_compatible(other)?;
        let mut total = 0.0;
        for (name, ta) in self.iter() {
            Zip::from(ta)
                .and(&other.tensors[name])
                .for_each(|&x, &y| total += f(x.as_f64(), y.as_f64()));
        }
        Ok(total)
    }

    /// Squared Euclidean norm `‖θ‖² = Σ θ²`, accumulated in f64.
    #[must_use]
    pub fn norm_sq(&self) -> f64 {
        self.tensors
            .values()
            .flat_map(|t| t.iter())
            .map(|x| x.as_f64() * x.as_f64())
            .sum()
    }

    /// Euclidean distance `‖self − other‖₂` over all entries, accumulated in f64.
    ///
    /// # Errors
    /// As [`Params::check_compatible`].
    pub fn distance(&self, other: &Self) -> Result<f64> {
        Ok(self.sum_pairs(other, |x, y| (x - y) * (x - y))?.sqrt())
    }
}

impl<F> std::ops::Index<&str> for Params<F> {
    type Output = ArrayD<F>;
    /// # Panics
    /// If `name` is absent (use [`Params::get`] or [`Params::require`] to handle that).
    fn index(&self, name: &str) -> &ArrayD<F> {
        match self.tensors.get(name) {
            Some(t) => t,
            None => panic!("no parameter named `{name}`"),
        }
    }
}

impl<F, S: Into<String>> FromIterator<(S, ArrayD<F>)> for Params<F> {
    fn from_iter<I: IntoIterator<Item = (S, ArrayD<F>)>>(iter: I) -> Self {
        Self {
            tensors: iter.into_iter().map(|(k, v)| (k.into(), v)).collect(),
        }
    }
}

impl<F> IntoIterator for Params<F> {
    type Item = (String, ArrayD<F>);
    type IntoIter = indexmap::map::IntoIter<String, ArrayD<F>>;
    fn into_iter(self) -> Self::IntoIter {
        self.tensors.into_iter()
    }
}

/// Apply named permutations to a parameter set through a spec: for every parameter the spec
/// mentions and every axis `k` governed by permutation `p`, `W ← permute_axis(W, k, p)`
/// (`P W` on an output axis, `W Pᵀ` on an input axis); a segmented axis is permuted segment
/// by segment (each permutation shifted to its segment's offset); a parameter the spec lists
/// through a view ([`Unflatten`](crate::spec::Unflatten)) is permuted as that view and keeps
/// its stored shape. Parameters the spec does not mention are copied unchanged. Returns new
/// parameters; `params` is not modified.
///
/// Structured permutations must have their declared structure (whole heads, shared head
/// permutations, embeddings): see [`PermutationSpec::check_structure`];
/// [`PermutationSpec::random_perms`] draws such permutations.
///
/// `perms` must contain every permutation of the spec (use `Permutation::identity` for the ones
/// to leave alone); extra names are an error, so typos do not pass silently.
///
/// # Errors
/// Everything [`PermutationSpec::validate`] reports; [`Error::PermutationName`] for a missing or
/// unknown permutation name; [`Error::PermutationLength`] if a permutation's length differs from
/// the axis it acts on; [`Error::Structure`] if a permutation breaks its declaration.
pub fn apply_permutations<F: Float>(
    spec: &PermutationSpec,
    perms: &BTreeMap<String, Permutation>,
    params: &Params<F>,
) -> Result<Params<F>> {
    let sizes = spec.perm_sizes(params)?;
    apply_fitted(spec, perms, params, &sizes)
}

/// [`apply_permutations`] given the permutation sizes of a spec that fits `params`
/// ([`PermutationSpec::validate`] without its symmetry rules: the function check applies
/// specs that break them, to name what breaks).
pub(crate) fn apply_fitted<F: Float>(
    spec: &PermutationSpec,
    perms: &BTreeMap<String, Permutation>,
    params: &Params<F>,
    sizes: &BTreeMap<String, usize>,
) -> Result<Params<F>> {
    for (name, &n) in sizes {
        let p = perms.get(name).ok_or_else(|| Error::PermutationName {
            perm: name.clone(),
            problem: "is required by the spec but was not supplied".into(),
        })?;
        if p.len() != n {
            let first = &spec.perm_uses()[name][0];
            let (param, axis) = (first.param.clone(), first.axis);
            return Err(Error::PermutationLength {
                perm: name.clone(),
                param,
                axis,
                perm_len: p.len(),
                axis_len: n,
            });
        }
    }
    if let Some(extra) = perms.keys().find(|k| !sizes.contains_key(*k)) {
        return Err(Error::PermutationName {
            perm: extra.clone(),
            problem: "is not a permutation of the spec".into(),
        });
    }
    spec.check_structure(perms)?;
    let mut out = Params::new();
    for (name, tensor) in params.iter() {
        let mut t = tensor.clone();
        if let Some(axes) = spec.axes(name) {
            // An unflattened parameter is permuted as its view, then given its shape back.
            let view = spec.spec_shape(name, tensor.shape())?;
            if view.as_ref() != tensor.shape() {
                t = crate::spec::reshape(&t, &view);
            }
            for axis in 0..axes.len() {
                let len = t.shape()[axis];
                if let Some(v) = spec.axis_permutation(name, axis, len, perms) {
                    t = permute_axis(&t, axis, &Permutation::new(v)?)?;
                }
            }
            if t.shape() != tensor.shape() {
                t = crate::spec::reshape(&t, tensor.shape());
            }
        }
        out.insert(name, t);
    }
    Ok(out)
}
