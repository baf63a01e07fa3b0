//! Principal angles between subspaces, of weights and of features (feature `linalg`).
//!
//! The principal angles `0 ≤ θ_1 ≤ … ≤ θ_r ≤ π/2` between the column spaces of `A` (`[n, p]`)
//! and `B` (`[n, q]`) are computed as `scipy.linalg.subspace_angles` does (Björck & Golub
//! 1973; Knyazev & Argentati 2002):
//!
//! 1. orthonormal bases `Q_A`, `Q_B` of the column spaces, from thin SVDs (numerical rank with
//!    SciPy's tolerance `max(n, p) · ε · σ_max`), so `r = min(rank A, rank B)`;
//! 2. the cosines: the singular values `σ_1 ≥ … ≥ σ_r` of `Q_Aᵀ Q_B`, `cos θ_i = σ_i`;
//! 3. the sines: the singular values of `Q_B − Q_A (Q_Aᵀ Q_B)` (or of
//!    `Q_A − Q_B (Q_Aᵀ Q_B)ᵀ` if `rank A < rank B`), the components of the smaller basis
//!    orthogonal to the larger subspace;
//! 4. `θ_i = arcsin(sin θ_i)` where `cos² θ_i ≥ ½` (θ ≤ π/4) and `arccos(σ_i)` otherwise.
//!
//! Step 4 matters for nearly shared directions: `arccos` of a cosine within rounding of 1
//! resolves angles only down to about `√ε ≈ 1e-8` (`arccos(1 − 1e-16) ≈ 1.5e-8`), while the
//! sine is computed to full relative accuracy. Unlike SciPy 1.17, which pairs the mask
//! `σ² ≥ ½` of the *descending* cosines with the angles in *descending* order (so that, e.g.,
//! the angles 1e-9 and 1.5 come back as 0 and 1.5), the choice is made per angle.
//!
//! The angles are returned in **ascending** order, `θ_1` the smallest (SciPy returns them
//! descending: `subspace_angles(A, B)[::-1]`).
//!
//! On top of it:
//! - [`weight_subspace_angles`]: per layer, the angles between the top-`k` left singular
//!   subspaces (output space) and between the top-`k` right singular subspaces (input space) of
//!   `W_A` and `W_B`, conv weights `[out, in, kh, kw]` reshaped to `[out, in·kh·kw]` — the
//!   analysis of Zhou et al. 2023 (*Going Beyond Linear Mode Connectivity: The Layerwise Linear
//!   Feature Connectivity*), comparing aligned or spawned endpoints;
//! - [`feature_subspace_angles`]: the angles between the top-`k` principal directions (in unit
//!   space) of the centred features of A and of B at one layer, i.e. how much of the features'
//!   variance lives in a shared subspace once the units are aligned.

use ndarray::{s, Array1, Array2, ArrayView2, ArrayViewD, Axis};

use crate::error::{Error, Result};
use crate::float::{all_finite, Float};
use crate::linalg::{numerical_rank, orth, singular_values, thin_svd, to_f64};
use crate::matching::activation::as_samples_by_units;
use crate::params::Params;

/// The principal angles (radians, ascending) between the column spaces of `a` (`[n, p]`) and
/// `b` (`[n, q]`); there are `min(rank a, rank b)` of them (none if either is zero). See the
/// [module docs](self) for the algorithm. Costs `O(n (p² + q²))`.
///
/// # Errors
/// [`Error::ShapeMismatch`] if the row counts differ; [`Error::EmptyInput`] if there are no
/// rows; [`Error::NonFinite`] for NaN/±∞; [`Error::LinearAlgebra`] if an SVD fails.
///
/// # Examples
/// ```
/// use ndarray::array;
/// // The x-axis and the line at 30° in the x-y plane, in R³.
/// let a = array![[1.0], [0.0], [0.0]];
/// let (c, s) = (30f64.to_radians().cos(), 30f64.to_radians().sin());
/// let b = array![[2.0 * c], [2.0 * s], [0.0]];
/// let theta = llfc::analysis::subspace::principal_angles(a.view(), b.view())?;
/// assert!((theta[0] - 30f64.to_radians()).abs() < 1e-15);
/// # Ok::<(), llfc::Error>(())
/// ```
pub fn principal_angles<F: Float>(
    a: ArrayView2<'_, F>,
    b: ArrayView2<'_, F>,
) -> Result<Array1<f64>> {
    if a.nrows() != b.nrows() {
        return Err(Error::ShapeMismatch {
            what: "principal angles: the two bases need the same number of rows".into(),
            expected: vec![a.nrows(), b.ncols()],
            found: vec![b.nrows(), b.ncols()],
        });
    }
    if a.nrows() == 0 {
        return Err(Error::EmptyInput {
            what: "principal angles of subspaces of R⁰".into(),
        });
    }
    for (who, x) in [("A", &a), ("B", &b)] {
        if !all_finite(x) {
            return Err(Error::NonFinite {
                what: format!("basis of subspace {who}"),
            });
        }
    }
    let qa = orth(&to_f64(&a), "the basis of subspace A")?;
    let qb = orth(&to_f64(&b), "the basis of subspace B")?;
    angles_of_orthonormal(&qa, &qb)
}

/// Principal angles (ascending) between the spans of two matrices with orthonormal columns.
fn angles_of_orthonormal(qa: &Array2<f64>, qb: &Array2<f64>) -> Result<Array1<f64>> {
    let r = qa.ncols().min(qb.ncols());
    if r == 0 {
        return Ok(Array1::zeros(0));
    }
    let c = qa.t().dot(qb);
    let cosines = singular_values(&c, "Q_Aᵀ Q_B")?;
    let residual = if qa.ncols() >= qb.ncols() {
        qb - &qa.dot(&c)
    } else {
        qa - &qb.dot(&c.t())
    };
    // Sines descending: the j-th smallest angle has the (r − 1 − j)-th sine.
    let sines = singular_values(&residual, "the orthogonal residual of the bases")?;
    Ok(Array1::from_shape_fn(r, |j| {
        let cos = cosines[j];
        if cos * cos >= 0.5 {
            sines[r - 1 - j].clamp(0.0, 1.0).asin()
        } else {
            cos.clamp(0.0, 1.0).acos()
        }
    }))
}

/// The top-`k` right singular vectors `[d, k]` of `x` (`[m, d]`), checking that `x` has rank
/// at least `k`; also returns all singular values.
fn top_right_vectors(
    x: &Array2<f64>,
    k: usize,
    what: &str,
) -> Result<(Array2<f64>, Array2<f64>, Array1<f64>)> {
    let (u, sv, vt) = thin_svd(x, what)?;
    let rank = numerical_rank(&sv, x.dim());
    if rank < k {
        return Err(Error::RankDeficient {
            what: what.to_string(),
            rank,
            required: k,
        });
    }
    let left = u.slice(s![.., ..k]).to_owned();
    let right = vt.slice(s![..k, ..]).t().to_owned();
    Ok((left, right, sv))
}

/// Check `1 ≤ k ≤ limit`.
fn check_k(k: usize, limit: usize, what: &str) -> Result<()> {
    if k == 0 || k > limit {
        return Err(Error::InvalidArgument {
            name: "k",
            reason: format!("must be in 1..={limit} for {what}, got {k}"),
        });
    }
    Ok(())
}

/// The principal angles between the top-`k` singular subspaces of one layer's weights in
/// models A and B, from [`weight_subspace_angles`].
#[derive(Clone, Debug, PartialEq)]
pub struct LayerSubspaceAngles {
    /// The weight's name.
    pub name: String,
    /// Angles (ascending, `k` of them) between the spans of the top-`k` left singular vectors
    /// (the output space, `R^out`).
    pub left: Array1<f64>,
    /// Angles (ascending, `k`) between the spans of the top-`k` right singular vectors (the
    /// input space, `R^{in·kh·kw}`).
    pub right: Array1<f64>,
    /// All singular values of A's reshaped weight, descending (`σ_k − σ_{k+1}` is the gap that
    /// makes the top-`k` subspace well defined).
    pub singular_a: Array1<f64>,
    /// All singular values of B's reshaped weight, descending.
    pub singular_b: Array1<f64>,
}

impl LayerSubspaceAngles {
    /// The mean of the left angles (radians).
    #[must_use]
    pub fn mean_left(&self) -> f64 {
        self.left.mean().unwrap_or(f64::NAN)
    }

    /// The mean of the right angles (radians).
    #[must_use]
    pub fn mean_right(&self) -> f64 {
        self.right.mean().unwrap_or(f64::NAN)
    }
}

/// Per weight named in `layers`: the principal angles between the top-`k` left singular
/// subspaces of `W_A` and `W_B` and between their top-`k` right singular subspaces. A weight of
/// rank ≥ 2 is read as `[out, rest]` (a conv weight `[out, in, kh, kw]` as
/// `[out, in·kh·kw]`); with `W = U Σ Vᵀ`, the subspaces are `span U[:, :k]` and
/// `span V[:, :k]`. Layers are independent (run in parallel with the `rayon` feature).
///
/// Compare B **after** alignment (or a spawned B): the left space of layer ℓ is indexed by its
/// output units, which a permutation of B reorders.
///
/// # Errors
/// [`Error::MissingParam`] if a name is absent from A or B; [`Error::RankMismatch`] for a
/// tensor of rank below 2; [`Error::ShapeMismatch`] if A's and B's shapes differ;
/// [`Error::InvalidArgument`] unless `1 ≤ k ≤ min(out, rest)`; [`Error::RankDeficient`] if a
/// weight has numerical rank below `k` (its top-`k` subspace is not defined);
/// [`Error::NonFinite`]; [`Error::EmptyInput`] if `layers` is empty.
pub fn weight_subspace_angles<F: Float, S: AsRef<str> + Sync>(
    params_a: &Params<F>,
    params_b: &Params<F>,
    layers: &[S],
    k: usize,
) -> Result<Vec<LayerSubspaceAngles>> {
    if layers.is_empty() {
        return Err(Error::EmptyInput {
            what: "the list of layers".into(),
        });
    }
    let one = |name: &S| -> Result<LayerSubspaceAngles> {
        let name = name.as_ref();
        let (wa, wb) = (params_a.require(name)?, params_b.require(name)?);
        if wa.ndim() < 2 {
            return Err(Error::RankMismatch {
                param: name.to_string(),
                spec_rank: 2,
                rank: wa.ndim(),
            });
        }
        if wa.shape() != wb.shape() {
            return Err(Error::ShapeMismatch {
                what: format!("weight `{name}` of model B versus model A"),
                expected: wa.shape().to_vec(),
                found: wb.shape().to_vec(),
            });
        }
        let out = wa.shape()[0];
        let rest = wa.len() / out.max(1);
        check_k(
            k,
            out.min(rest),
            &format!("weight `{name}` of shape {:?}", wa.shape()),
        )?;
        let matrix = |w: &ndarray::ArrayD<F>, who: &str| -> Result<Array2<f64>> {
            if !all_finite(w) {
                return Err(Error::NonFinite {
                    what: format!("weight `{name}` of model {who}"),
                });
            }
            let flat: Vec<f64> = w.iter().map(|v| v.as_f64()).collect();
            Ok(Array2::from_shape_vec((out, rest), flat).expect("sizes agree"))
        };
        let (ua, va, singular_a) =
            top_right_vectors(&matrix(wa, "A")?, k, &format!("weight `{name}` of model A"))?;
        let (ub, vb, singular_b) =
            top_right_vectors(&matrix(wb, "B")?, k, &format!("weight `{name}` of model B"))?;
        Ok(LayerSubspaceAngles {
            name: name.to_string(),
            left: angles_of_orthonormal(&ua, &ub)?,
            right: angles_of_orthonormal(&va, &vb)?,
            singular_a,
            singular_b,
        })
    };
    #[cfg(feature = "rayon")]
    {
        use rayon::prelude::*;
        layers.par_iter().map(one).collect()
    }
    #[cfg(not(feature = "rayon"))]
    {
        layers.iter().map(one).collect()
    }
}

/// The principal angles (ascending, `k` of them) between the top-`k` principal directions of
/// the features of A and of B at one layer: with `H̄ = H − 1 μᵀ` the column-centred features
/// (`[samples, units]`, or conv maps `[samples, c, h, w]` viewed as `[samples·h·w, c]`) and
/// `H̄ = U Σ Vᵀ`, the subspaces are `span V_A[:, :k]` and `span V_B[:, :k]` in `R^units`
/// (the top-`k` eigenvectors of the covariances, from an SVD of the data for accuracy).
///
/// The units must be aligned for the angles to mean anything: compare A with B after
/// matching (or a spawned B). The two feature sets need the same width, not the same samples.
///
/// # Errors
/// [`Error::ShapeMismatch`] if the widths differ; [`Error::InvalidArgument`] for ranks other
/// than 2 and 4 or unless `1 ≤ k ≤ units`; [`Error::EmptyInput`] without samples;
/// [`Error::NonFinite`]; [`Error::RankDeficient`] if a centred feature matrix has rank below
/// `k` (e.g. fewer than `k + 1` samples, or fewer than `k` units that vary).
pub fn feature_subspace_angles<F: Float>(
    features_a: ArrayViewD<'_, F>,
    features_b: ArrayViewD<'_, F>,
    k: usize,
) -> Result<Array1<f64>> {
    let (ha, hb) = (
        as_samples_by_units(features_a)?.into_owned(),
        as_samples_by_units(features_b)?.into_owned(),
    );
    if ha.ncols() != hb.ncols() {
        return Err(Error::ShapeMismatch {
            what: "features of model B versus model A (units)".into(),
            expected: vec![hb.nrows(), ha.ncols()],
            found: vec![hb.nrows(), hb.ncols()],
        });
    }
    check_k(k, ha.ncols(), "features")?;
    let directions = |h: &Array2<F>, who: &str| -> Result<Array2<f64>> {
        if h.nrows() == 0 {
            return Err(Error::EmptyInput {
                what: format!("features of model {who}"),
            });
        }
        if !all_finite(h) {
            return Err(Error::NonFinite {
                what: format!("features of model {who}"),
            });
        }
        let mut x = to_f64(h);
        let mean = x.mean_axis(Axis(0)).expect("rows > 0");
        x -= &mean.insert_axis(Axis(0));
        Ok(top_right_vectors(&x, k, &format!("centred features of model {who}"))?.1)
    };
    angles_of_orthonormal(&directions(&ha, "A")?, &directions(&hb, "B")?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn the_formula_is_chosen_per_angle() {
        // Angles 1e-9 and 1.5 between 2-D subspaces of R⁴ (SciPy 1.17 returns [1.5, 0.0]).
        let (t1, t2) = (1e-9f64, 1.5f64);
        let a = array![[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0]];
        let b = array![
            [t1.cos(), 0.0],
            [0.0, t2.cos()],
            [t1.sin(), 0.0],
            [0.0, t2.sin()]
        ];
        let theta = principal_angles(a.view(), b.view()).unwrap();
        assert!((theta[0] - t1).abs() < 1e-15, "{}", theta[0]); // arccos would give 0
        assert!((theta[1] - t2).abs() < 1e-14, "{}", theta[1]);
    }
}
