//! LAPACK through `ndarray-linalg` (feature `linalg`), wrapped for the crate: f64 only, errors
//! mapped to [`Error`], and the few decompositions the subspace and CCA modules share.
//!
//! Every decomposition runs in f64 whatever the model's float type: the inputs (weights of a
//! layer, `d × d` covariances) are small next to the products that built them, and principal
//! angles need f64 to be resolved to 1e-10.

use ndarray::{Array1, Array2, ArrayBase, Axis, Data, Ix2};
use ndarray_linalg::{Eigh, JobSvd, SVDDC, UPLO};

use crate::error::{Error, Result};
use crate::float::Float;

/// A copy of `x` in f64 (standard layout, as LAPACK wants it).
pub(crate) fn to_f64<F: Float, S: Data<Elem = F>>(x: &ArrayBase<S, Ix2>) -> Array2<f64> {
    x.mapv(Float::as_f64)
}

/// Map an `ndarray-linalg` error to [`Error::LinearAlgebra`].
fn lapack_error(what: &str, err: &ndarray_linalg::error::LinalgError) -> Error {
    Error::LinearAlgebra {
        what: what.to_string(),
        reason: err.to_string(),
    }
}

/// Thin SVD `x = U diag(s) Vᵀ` of an `m × n` matrix: `U` is `m × r`, `s` (descending) has `r`
/// entries and `Vᵀ` is `r × n`, with `r = min(m, n)` (LAPACK's divide-and-conquer `gesdd`).
pub(crate) fn thin_svd(
    x: &Array2<f64>,
    what: &str,
) -> Result<(Array2<f64>, Array1<f64>, Array2<f64>)> {
    let (u, s, vt) = x.svddc(JobSvd::Some).map_err(|e| lapack_error(what, &e))?;
    match (u, vt) {
        (Some(u), Some(vt)) => Ok((u, s, vt)),
        _ => Err(Error::LinearAlgebra {
            what: what.to_string(),
            reason: "LAPACK returned no singular vectors".into(),
        }),
    }
}

/// Singular values of `x`, descending.
pub(crate) fn singular_values(x: &Array2<f64>, what: &str) -> Result<Array1<f64>> {
    if x.is_empty() {
        return Ok(Array1::zeros(0));
    }
    let (_, s, _) = x.svddc(JobSvd::None).map_err(|e| lapack_error(what, &e))?;
    Ok(s)
}

/// The numerical rank of an `m × n` matrix with singular values `s` (descending): the number
/// of `s_i > max(m, n) · ε · s_0`, SciPy's default tolerance in `orth` and `matrix_rank`.
pub(crate) fn numerical_rank(s: &Array1<f64>, (m, n): (usize, usize)) -> usize {
    let Some(&top) = s.first() else { return 0 };
    #[allow(clippy::cast_precision_loss)]
    let tol = m.max(n) as f64 * f64::EPSILON * top;
    s.iter().take_while(|&&v| v > tol && v > 0.0).count()
}

/// An orthonormal basis `[m, rank]` of the column space of `x`, from its thin SVD (SciPy's
/// `orth`).
pub(crate) fn orth(x: &Array2<f64>, what: &str) -> Result<Array2<f64>> {
    if x.is_empty() {
        return Ok(Array2::zeros((x.nrows(), 0)));
    }
    let (u, s, _) = thin_svd(x, what)?;
    let rank = numerical_rank(&s, x.dim());
    Ok(u.slice_move(ndarray::s![.., ..rank]))
}

/// Eigendecomposition `x = Q diag(λ) Qᵀ` of a symmetric matrix (its lower triangle is read),
/// eigenvalues ascending (LAPACK `syevd`).
pub(crate) fn symmetric_eigen(x: &Array2<f64>, what: &str) -> Result<(Array1<f64>, Array2<f64>)> {
    x.eigh(UPLO::Lower).map_err(|e| lapack_error(what, &e))
}

/// `Q diag(f(λ)) Qᵀ`.
pub(crate) fn spectral_function(
    eigenvalues: &Array1<f64>,
    eigenvectors: &Array2<f64>,
    f: impl Fn(f64) -> f64,
) -> Array2<f64> {
    let scaled = eigenvectors * &eigenvalues.mapv(f).insert_axis(Axis(0));
    scaled.dot(&eigenvectors.t())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn svd_reconstructs_and_rank_counts_nonzero_singular_values() {
        let x = array![[1.0, 2.0], [2.0, 4.0], [0.0, 0.0]]; // rank 1
        let (u, s, vt) = thin_svd(&x, "x").unwrap();
        assert_eq!((u.dim(), s.len(), vt.dim()), ((3, 2), 2, (2, 2)));
        let back = (&u * &s.view().insert_axis(Axis(0))).dot(&vt);
        assert!(back.iter().zip(&x).all(|(a, b)| (a - b).abs() < 1e-14));
        assert_eq!(numerical_rank(&s, x.dim()), 1);
        assert_eq!(orth(&x, "x").unwrap().ncols(), 1);
        assert_eq!(orth(&Array2::zeros((3, 2)), "zero").unwrap().ncols(), 0);
    }

    #[test]
    fn spectral_function_of_the_eigendecomposition_is_the_matrix_function() {
        let x = array![[4.0, 1.0], [1.0, 3.0]];
        let (l, q) = symmetric_eigen(&x, "x").unwrap();
        assert!(l[0] < l[1]);
        let root = spectral_function(&l, &q, f64::sqrt);
        let square = root.dot(&root);
        assert!(square.iter().zip(&x).all(|(a, b)| (a - b).abs() < 1e-13));
    }
}
