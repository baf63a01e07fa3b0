//! Permutations of hidden units and their application to tensors.
//!
//! Convention (binding across the crate, see the crate docs): a permutation `p` of a hidden
//! layer maps model A's unit `i` to model B's unit `p[i]`. Permuting B along an axis selects
//! `x ← x[p, …]` on that axis, i.e. `P x` with the permutation matrix `P[i, p[i]] = 1`.
//! Entezari et al. (2022) and Ainsworth et al. (2023, *Git Re-Basin*) show that such
//! permutations leave a network's function unchanged while moving it in weight space.

use ndarray::{Array, ArrayBase, Axis, Data, RemoveAxis};
use rand::Rng;

use crate::error::{Error, Result};

/// A validated bijection of `0..n`.
///
/// Invalid states are unrepresentable: every constructor checks that the entries are a
/// permutation of `0..n`.
///
/// # Examples
/// ```
/// use llfc::Permutation;
/// let p = Permutation::new(vec![2, 0, 1])?;
/// assert_eq!(p.inverse().as_slice(), &[1, 2, 0]);
/// assert!(p.compose(&p.inverse())?.is_identity());
/// assert!(Permutation::new(vec![0, 0, 1]).is_err());
/// # Ok::<(), llfc::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(try_from = "Vec<usize>", into = "Vec<usize>")
)]
pub struct Permutation(Vec<usize>);

impl Permutation {
    /// Validate `map` as a permutation of `0..map.len()`.
    ///
    /// Complexity `O(n)`.
    ///
    /// # Errors
    /// [`Error::PermutationOutOfRange`] if an entry is `>= n`, [`Error::PermutationDuplicate`]
    /// if a value appears twice.
    pub fn new(map: Vec<usize>) -> Result<Self> {
        let n = map.len();
        let mut seen = vec![usize::MAX; n];
        for (index, &value) in map.iter().enumerate() {
            if value >= n {
                return Err(Error::PermutationOutOfRange {
                    index,
                    value,
                    len: n,
                });
            }
            if seen[value] != usize::MAX {
                return Err(Error::PermutationDuplicate {
                    value,
                    first: seen[value],
                    second: index,
                });
            }
            seen[value] = index;
        }
        Ok(Self(map))
    }

    /// The identity permutation of `0..n`.
    #[must_use]
    pub fn identity(n: usize) -> Self {
        Self((0..n).collect())
    }

    /// A uniformly random permutation of `0..n` (Fisher–Yates), drawn from `rng`.
    ///
    /// Deterministic for a seeded `rng`.
    pub fn random<R: Rng + ?Sized>(n: usize, rng: &mut R) -> Self {
        let mut map: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = rng.random_range(0..=i);
            map.swap(i, j);
        }
        Self(map)
    }

    /// The inverse permutation `q` with `q[p[i]] = i`.
    #[must_use]
    pub fn inverse(&self) -> Self {
        let mut inv = vec![0; self.0.len()];
        for (i, &pi) in self.0.iter().enumerate() {
            inv[pi] = i;
        }
        Self(inv)
    }

    /// Function composition `r = self ∘ other`, i.e. `r[i] = self[other[i]]`.
    ///
    /// Permuting an axis by `self` and then by `other` equals permuting it once by
    /// `self.compose(other)`:
    /// `permute_axis(permute_axis(x, k, p), k, q) == permute_axis(x, k, p.compose(q))`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if the lengths differ.
    pub fn compose(&self, other: &Self) -> Result<Self> {
        if self.len() != other.len() {
            return Err(Error::ShapeMismatch {
                what: "permutation composition".into(),
                expected: vec![self.len()],
                found: vec![other.len()],
            });
        }
        Ok(Self(other.0.iter().map(|&j| self.0[j]).collect()))
    }

    /// The entries `p[0], …, p[n−1]`.
    #[must_use]
    pub fn as_slice(&self) -> &[usize] {
        &self.0
    }

    /// Consume into the underlying vector.
    #[must_use]
    pub fn into_vec(self) -> Vec<usize> {
        self.0
    }

    /// Number of elements `n`.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether `n == 0`.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `p[i] = i` for all `i`.
    #[must_use]
    pub fn is_identity(&self) -> bool {
        self.0.iter().enumerate().all(|(i, &p)| i == p)
    }

    /// Number of positions with `p[i] ≠ i`.
    #[must_use]
    pub fn num_moved(&self) -> usize {
        self.0.iter().enumerate().filter(|&(i, &p)| i != p).count()
    }
}

impl TryFrom<Vec<usize>> for Permutation {
    type Error = Error;
    fn try_from(map: Vec<usize>) -> Result<Self> {
        Self::new(map)
    }
}

impl From<Permutation> for Vec<usize> {
    fn from(p: Permutation) -> Self {
        p.0
    }
}

impl std::ops::Index<usize> for Permutation {
    type Output = usize;
    fn index(&self, i: usize) -> &usize {
        &self.0[i]
    }
}

/// Permute `array` along `axis`: `out[…, i, …] = array[…, p[i], …]`.
///
/// For a weight `W` (`[out, in]`) this is `P W` on axis 0 and `W Pᵀ` on axis 1, with
/// `P[i, p[i]] = 1`. The input is not modified; a new array is returned. Complexity
/// `O(array.len())`.
///
/// # Errors
/// [`Error::AxisOutOfRange`] if `axis >= array.ndim()`; [`Error::ShapeMismatch`] if
/// `p.len()` differs from the axis length.
///
/// # Examples
/// ```
/// use ndarray::array;
/// use llfc::{permute_axis, Permutation};
/// let w = array![[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]];
/// let p = Permutation::new(vec![2, 0, 1])?;
/// assert_eq!(permute_axis(&w, 0, &p)?, array![[5.0, 6.0], [1.0, 2.0], [3.0, 4.0]]);
/// # Ok::<(), llfc::Error>(())
/// ```
pub fn permute_axis<A, S, D>(
    array: &ArrayBase<S, D>,
    axis: usize,
    p: &Permutation,
) -> Result<Array<A, D>>
where
    A: Clone,
    S: Data<Elem = A>,
    D: RemoveAxis,
{
    if axis >= array.ndim() {
        return Err(Error::AxisOutOfRange {
            what: "permute_axis input".into(),
            axis,
            rank: array.ndim(),
        });
    }
    let n = array.len_of(Axis(axis));
    if n != p.len() {
        return Err(Error::ShapeMismatch {
            what: format!("permute_axis: axis {axis} versus permutation length"),
            expected: vec![n],
            found: vec![p.len()],
        });
    }
    Ok(array.select(Axis(axis), p.as_slice()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;
    use rand::SeedableRng;

    #[test]
    fn new_rejects_bad_maps() {
        assert!(matches!(
            Permutation::new(vec![0, 3, 1]),
            Err(Error::PermutationOutOfRange {
                index: 1,
                value: 3,
                len: 3
            })
        ));
        assert!(matches!(
            Permutation::new(vec![1, 0, 1]),
            Err(Error::PermutationDuplicate {
                value: 1,
                first: 0,
                second: 2
            })
        ));
        assert!(Permutation::new(vec![]).unwrap().is_empty());
    }

    #[test]
    fn random_is_seeded_and_valid() {
        let mut r1 = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut r2 = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let p = Permutation::random(50, &mut r1);
        assert_eq!(p, Permutation::random(50, &mut r2));
        assert!(Permutation::new(p.clone().into_vec()).is_ok());
        assert!(!p.is_identity());
    }

    #[test]
    fn permute_axis_errors() {
        let w = array![[1.0, 2.0], [3.0, 4.0]];
        let p = Permutation::identity(3);
        assert!(matches!(
            permute_axis(&w, 0, &p),
            Err(Error::ShapeMismatch { .. })
        ));
        assert!(matches!(
            permute_axis(&w, 2, &Permutation::identity(2)),
            Err(Error::AxisOutOfRange {
                axis: 2,
                rank: 2,
                ..
            })
        ));
    }

    #[test]
    fn permute_axis_one_is_w_pt() {
        let w = array![[1.0, 2.0, 3.0]];
        let p = Permutation::new(vec![1, 2, 0]).unwrap();
        assert_eq!(permute_axis(&w, 1, &p).unwrap(), array![[2.0, 3.0, 1.0]]);
    }
}
