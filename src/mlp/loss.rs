//! Softmax cross-entropy, accuracy and evaluation of an MLP.

use ndarray::{Array2, ArrayBase, ArrayView1, Data, Ix2};

use super::forward;
use crate::error::{Error, Result};
use crate::float::{all_finite, Float};
use crate::params::Params;

/// Check `N` labels for `C` classes: `N, C ≥ 1`, `labels.len() = N`, every label `< C`.
pub(super) fn check_labels(n: usize, classes: usize, labels: &[usize]) -> Result<()> {
    if labels.len() != n {
        return Err(Error::ShapeMismatch {
            what: "labels (one per row of the logits)".into(),
            expected: vec![n],
            found: vec![labels.len()],
        });
    }
    if n == 0 || classes == 0 {
        return Err(Error::EmptyInput {
            what: format!("logits of shape [{n}, {classes}]"),
        });
    }
    if let Some((i, &y)) = labels.iter().enumerate().find(|&(_, &y)| y >= classes) {
        return Err(Error::InvalidArgument {
            name: "labels",
            reason: format!("label {y} of sample {i} is outside 0..{classes}"),
        });
    }
    Ok(())
}

/// Check logits (`[N, C]`, finite) against labels as in [`check_labels`].
fn check<F: Float, S: Data<Elem = F>>(logits: &ArrayBase<S, Ix2>, labels: &[usize]) -> Result<()> {
    let (n, classes) = logits.dim();
    check_labels(n, classes, labels)?;
    if !all_finite(logits) {
        return Err(Error::NonFinite {
            what: "logits".into(),
        });
    }
    Ok(())
}

/// `(max_j z_j, ln Σ_j exp(z_j − max))` of one row, in f64.
fn log_sum_exp<F: Float>(row: ArrayView1<'_, F>) -> (f64, f64) {
    let max = row.iter().fold(f64::NEG_INFINITY, |m, v| m.max(v.as_f64()));
    let sum: f64 = row.iter().map(|v| (v.as_f64() - max).exp()).sum();
    (max, sum.ln())
}

/// Mean softmax cross-entropy `(1/N) Σ_i [logsumexp(z_i) − z_{i, y_i}]` of logits `[N, C]`
/// against integer labels, the loss of PyTorch's `F.cross_entropy`. Evaluated stably as
/// `logsumexp(z) = m + ln Σ_j exp(z_j − m)` with `m = max_j z_j`, in f64, so huge logits give no
/// overflow. Costs `O(N C)`.
///
/// # Errors
/// [`Error::ShapeMismatch`] if `labels.len() ≠ N`; [`Error::EmptyInput`] if `N = 0` or `C = 0`;
/// [`Error::InvalidArgument`] for a label `≥ C`; [`Error::NonFinite`] for a NaN/infinite logit.
///
/// # Examples
/// ```
/// use ndarray::array;
/// // Uniform logits: the loss is ln C whatever the labels.
/// let loss = llfc::mlp::cross_entropy(&array![[2.0, 2.0, 2.0], [0.0, 0.0, 0.0]], &[0, 2])?;
/// assert!((loss - 3f64.ln()).abs() < 1e-15);
/// # Ok::<(), llfc::Error>(())
/// ```
pub fn cross_entropy<F: Float, S: Data<Elem = F>>(
    logits: &ArrayBase<S, Ix2>,
    labels: &[usize],
) -> Result<f64> {
    check(logits, labels)?;
    let total: f64 = logits
        .rows()
        .into_iter()
        .zip(labels)
        .map(|(row, &y)| {
            let (max, lse) = log_sum_exp(row);
            (max - row[y].as_f64()) + lse
        })
        .sum();
    #[allow(clippy::cast_precision_loss)]
    Ok(total / labels.len() as f64)
}

/// The mean cross-entropy and its gradient with respect to the logits,
/// `(softmax(z_i) − onehot(y_i)) / N`, rounded to `F`.
pub(super) fn cross_entropy_grad<F: Float>(
    logits: &Array2<F>,
    labels: &[usize],
) -> Result<(f64, Array2<F>)> {
    check(logits, labels)?;
    #[allow(clippy::cast_precision_loss)]
    let inv_n = 1.0 / labels.len() as f64;
    let mut grad = Array2::zeros(logits.raw_dim());
    let mut total = 0.0;
    for ((row, mut g), &y) in logits.rows().into_iter().zip(grad.rows_mut()).zip(labels) {
        let (max, lse) = log_sum_exp(row);
        let shift = max + lse;
        total += shift - row[y].as_f64();
        for (j, (gj, zj)) in g.iter_mut().zip(row).enumerate() {
            let p = (zj.as_f64() - shift).exp();
            *gj = F::from_f64((p - f64::from(u8::from(j == y))) * inv_n);
        }
    }
    Ok((total * inv_n, grad))
}

/// Fraction of rows whose arg-max logit (the first one on ties, like `torch.argmax`) equals
/// the label, in `[0, 1]`. Costs `O(N C)`.
///
/// # Errors
/// As [`cross_entropy`].
///
/// # Examples
/// ```
/// use ndarray::array;
/// let acc = llfc::mlp::accuracy(&array![[0.1f32, 0.9], [2.0, -1.0], [0.0, 0.0]], &[1, 1, 0])?;
/// assert_eq!(acc, 2.0 / 3.0);
/// # Ok::<(), llfc::Error>(())
/// ```
pub fn accuracy<F: Float, S: Data<Elem = F>>(
    logits: &ArrayBase<S, Ix2>,
    labels: &[usize],
) -> Result<f64> {
    check(logits, labels)?;
    let correct = logits
        .rows()
        .into_iter()
        .zip(labels)
        .filter(|&(ref row, &y)| {
            let best = row
                .iter()
                .enumerate()
                .fold(0, |best, (j, &v)| if v > row[best] { j } else { best });
            best == y
        })
        .count();
    #[allow(clippy::cast_precision_loss)]
    Ok(correct as f64 / labels.len() as f64)
}

/// Loss and accuracy of a model on a dataset, as returned by [`evaluate`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Eval {
    /// Mean softmax cross-entropy (see [`cross_entropy`]).
    pub loss: f64,
    /// Fraction of correctly classified samples (see [`accuracy`]).
    pub accuracy: f64,
}

impl Eval {
    /// The classification error `1 − accuracy`.
    #[must_use]
    pub fn error(&self) -> f64 {
        1.0 - self.accuracy
    }
}

/// Loss and accuracy of the MLP `params` on `(x, labels)`: one [`forward`] pass (`2 N P`
/// flops, logits kept in memory), then [`cross_entropy`] and [`accuracy`]. This is the quantity
/// plotted along interpolation paths `θ(α)` for linear mode connectivity.
///
/// # Errors
/// As [`forward`] and [`cross_entropy`].
pub fn evaluate<F: Float, S: Data<Elem = F>>(
    params: &Params<F>,
    x: &ArrayBase<S, Ix2>,
    labels: &[usize],
) -> Result<Eval> {
    let logits = forward(params, x)?;
    Ok(Eval {
        loss: cross_entropy(&logits, labels)?,
        accuracy: accuracy(&logits, labels)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn grad_rows_sum_to_zero_and_match_softmax() {
        let z = array![[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]];
        let (loss, g) = cross_entropy_grad(&z, &[2, 0]).unwrap();
        assert!((loss - cross_entropy(&z, &[2, 0]).unwrap()).abs() < 1e-15);
        let e: f64 = [1.0f64, 2.0, 3.0].iter().map(|v| v.exp()).sum();
        assert!((g[[0, 0]] - 1f64.exp() / e / 2.0).abs() < 1e-15);
        assert!((g[[1, 0]] - (1.0 / 3.0 - 1.0) / 2.0).abs() < 1e-15);
        for row in g.rows() {
            assert!(row.sum().abs() < 1e-15);
        }
    }

    #[test]
    fn argmax_takes_first_on_ties() {
        let z = array![[1.0, 1.0], [0.0, 0.0]];
        assert_eq!(accuracy(&z, &[0, 1]).unwrap(), 0.5);
    }
}
