//! Unflattened axes: a spec may view one axis of a parameter as several, as PyTorch's
//! `W.unflatten(axis, (-1, *inner))` does, so that a permutation can act on blocks of
//! consecutive entries.
//!
//! The case it exists for is torchvision's VGG: the last conv's `C` channels are average-pooled
//! to `7 × 7` and flattened, so `classifier.0.weight` is `[4096, C·49]` and column `c·49 + k`
//! belongs to channel `c`. Permuting the channels by `p` permutes the columns in blocks of 49:
//! column `c·49 + k` of the permuted weight is column `p[c]·49 + k` of the original. Viewing the
//! weight as `[4096, C, 7, 7]` makes that an ordinary permutation of axis 1:
//!
//! ```
//! use llfc::spec::Unflatten;
//! use llfc::PermutationSpec;
//! let spec = PermutationSpec::new()
//!     .with("features.0.weight", &[Some("P_last"), None, None, None])
//!     .with("features.0.bias", &[Some("P_last")])
//!     .with_unflattened(
//!         "classifier.0.weight",
//!         Unflatten { axis: 1, inner: vec![7, 7] },
//!         &[Some("P_fc"), Some("P_last"), None, None],
//!     );
//! assert_eq!(spec.unflatten("classifier.0.weight").unwrap().inner, vec![7, 7]);
//! ```
//!
//! The axes the spec lists for such a parameter are those of the view (here four). Validation,
//! [`apply_permutations`](crate::apply_permutations) and weight matching all work on the view;
//! the tensors themselves keep their stored shape. In JSON the parameter's entry becomes an
//! object: `{"axes": ["P_fc", "P_last", null, null], "unflatten": {"axis": 1, "inner": [7, 7]}}`
//! (every other entry stays a plain list, so older specs read as before).

use std::borrow::Cow;

use ndarray::{ArrayD, IxDyn};

use super::PermutationSpec;
use crate::error::{Error, Result};
use crate::float::Float;
use crate::params::Params;

/// View axis `axis` of a parameter of shape `[…, n, …]` as `[…, n / Π inner, inner…, …]`
/// (row-major, like PyTorch's `unflatten(axis, (-1, *inner))`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(deny_unknown_fields)
)]
pub struct Unflatten {
    /// The stored axis that is split.
    pub axis: usize,
    /// The trailing sizes it is split into (the leading size is inferred); their product must
    /// divide the axis's length.
    pub inner: Vec<usize>,
}

impl Unflatten {
    /// The viewed shape of `param`, stored with shape `shape`.
    ///
    /// # Errors
    /// [`Error::AxisOutOfRange`] if `axis` is not an axis of `shape`; [`Error::InvalidSpec`] if
    /// `inner` is empty, holds a zero, or its product does not divide the axis's length.
    pub fn view_shape(&self, param: &str, shape: &[usize]) -> Result<Vec<usize>> {
        let len = *shape.get(self.axis).ok_or_else(|| Error::AxisOutOfRange {
            what: param.to_string(),
            axis: self.axis,
            rank: shape.len(),
        })?;
        let block: usize = self.inner.iter().product();
        if self.inner.is_empty() || block == 0 || len % block != 0 {
            return Err(Error::InvalidSpec {
                reason: format!(
                    "`{param}`: axis {} of length {len} cannot be unflattened into [-1, {}]",
                    self.axis,
                    self.inner
                        .iter()
                        .map(usize::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        let mut view = shape[..self.axis].to_vec();
        view.push(len / block);
        view.extend(&self.inner);
        view.extend(&shape[self.axis + 1..]);
        Ok(view)
    }
}

impl PermutationSpec {
    /// Set the axes of `param` as seen through `unflatten` (one entry per axis of the view),
    /// replacing any previous entry. See the [module docs](self::Unflatten).
    pub fn insert_unflattened<S: AsRef<str>>(
        &mut self,
        param: impl Into<String>,
        unflatten: Unflatten,
        axes: &[Option<S>],
    ) {
        let param = param.into();
        self.insert(param.clone(), axes);
        self.unflatten.insert(param, unflatten);
    }

    /// Builder form of [`PermutationSpec::insert_unflattened`].
    #[must_use]
    pub fn with_unflattened<S: AsRef<str>>(
        mut self,
        param: impl Into<String>,
        unflatten: Unflatten,
        axes: &[Option<S>],
    ) -> Self {
        self.insert_unflattened(param, unflatten, axes);
        self
    }

    /// How `param` is viewed, if the spec unflattens one of its axes.
    #[must_use]
    pub fn unflatten(&self, param: &str) -> Option<&Unflatten> {
        self.unflatten.get(param)
    }

    /// The shape the spec's axes of `param` refer to: the stored shape, or its view.
    pub(crate) fn spec_shape<'s>(
        &self,
        param: &str,
        shape: &'s [usize],
    ) -> Result<Cow<'s, [usize]>> {
        match self.unflatten.get(param) {
            None => Ok(Cow::Borrowed(shape)),
            Some(u) => Ok(Cow::Owned(u.view_shape(param, shape)?)),
        }
    }

    /// The parameters with every unflattened parameter reshaped to its view, and the spec
    /// without views that describes them (both borrowed when the spec has no view).
    ///
    /// # Errors
    /// As [`Unflatten::view_shape`]; [`Error::MissingParam`] for an unflattened parameter that
    /// is absent.
    pub(crate) fn viewed<'a, F: Float>(
        &'a self,
        params: &'a Params<F>,
    ) -> Result<(Cow<'a, Self>, Cow<'a, Params<F>>)> {
        if self.unflatten.is_empty() {
            return Ok((Cow::Borrowed(self), Cow::Borrowed(params)));
        }
        let mut out = params.clone();
        for (param, u) in &self.unflatten {
            let t = params.require(param)?;
            let view = u.view_shape(param, t.shape())?;
            out.insert(param.clone(), reshape(t, &view));
        }
        let mut plain = self.clone();
        plain.unflatten.clear();
        Ok((Cow::Owned(plain), Cow::Owned(out)))
    }
}

/// `t` reshaped (row-major) to `shape`, which has as many elements.
pub(crate) fn reshape<F: Clone>(t: &ArrayD<F>, shape: &[usize]) -> ArrayD<F> {
    let data: Vec<F> = t.iter().cloned().collect();
    ArrayD::from_shape_vec(IxDyn(shape), data).expect("a view keeps the number of elements")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_shape_splits_the_axis() {
        let u = Unflatten {
            axis: 1,
            inner: vec![7, 7],
        };
        assert_eq!(u.view_shape("w", &[8, 98]).unwrap(), vec![8, 2, 7, 7]);
        assert!(matches!(
            u.view_shape("w", &[8, 50]),
            Err(Error::InvalidSpec { .. })
        ));
        assert!(matches!(
            u.view_shape("w", &[8]),
            Err(Error::AxisOutOfRange { axis: 1, .. })
        ));
        let empty = Unflatten {
            axis: 0,
            inner: vec![],
        };
        assert!(empty.view_shape("w", &[4]).is_err());
    }
}
