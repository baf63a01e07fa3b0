//! Linear mode connectivity: loss and error along the linear path between two networks, and
//! the barriers on it.
//!
//! Along `θ(α) = α θ_A + (1 − α) θ_B` (α = 1 is A, as in the LLFC paper) a [`Curve`] holds the
//! loss and the error (`1 − accuracy`) on a grid of α. The **barrier** of a quantity `v` is the
//! largest excess over the straight line between the endpoints (Frankle, Dziugaite, Roy, Carbin,
//! *Linear Mode Connectivity and the Lottery Ticket Hypothesis*, ICML 2020; Entezari et al.,
//! ICLR 2022):
//!
//! ```text
//! B_v = max_α [ v(α) − (α v(1) + (1 − α) v(0)) ]            (BarrierKind::Interpolated)
//! ```
//!
//! and Git Re-Basin's variant measures it against the mean of the endpoints (Ainsworth,
//! Hayase, Srinivasa, *Git Re-Basin: Merging Models modulo Permutation Symmetries*, ICLR 2023):
//!
//! ```text
//! B_v = max_α v(α) − ½ (v(0) + v(1))                         (BarrierKind::Midpoint)
//! ```
//!
//! Two networks are *linearly mode connected* when the loss (or error) barrier is close to 0.
//! LLFC (Zhou et al. 2023, *Going Beyond Linear Mode Connectivity: The Layerwise Linear Feature
//! Connectivity*) is the layerwise, feature-level strengthening of it; see
//! [`metrics`](crate::metrics).
//!
//! The maxima run over the grid only, which must contain both endpoints `α = 0` and `α = 1`.
//! Points of a curve are evaluated in parallel with the `rayon` feature, each by the same
//! sequential code, so curves do not depend on the number of threads.

use crate::error::{Error, Result};
use crate::float::Float;
#[cfg(doc)]
use crate::metrics::llfc_report_mlp;
use crate::metrics::{llfc_report_mlp_with, par_map, CosineVariant, LlfcReport};
use crate::mlp;
use crate::params::Params;
use ndarray::{ArrayBase, Data, Ix2};

/// Loss and error along `θ(α)` on a grid of α (see [`curve`] and [`mlp_curve`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Curve {
    /// The grid, in the order given.
    pub alphas: Vec<f64>,
    /// `loss[k]`: the loss of `θ(alphas[k])`.
    pub loss: Vec<f64>,
    /// `error[k]`: the error (`1 − accuracy` for classifiers) of `θ(alphas[k])`.
    pub error: Vec<f64>,
}

/// Which barrier (see the [module documentation](self)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum BarrierKind {
    /// `max_α [v(α) − (α v(1) + (1 − α) v(0))]`: the excess over the linear interpolation of the
    /// endpoint values (Frankle et al. 2020). Always `≥ 0` (the endpoints contribute 0).
    #[default]
    Interpolated,
    /// `max_α v(α) − ½ (v(0) + v(1))`: the excess over the endpoints' mean (Ainsworth et al.
    /// 2023). Also `≥ 0` (the larger endpoint is at least the mean).
    Midpoint,
}

/// A barrier's height and where it is reached.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Barrier {
    /// The barrier `B_v`.
    pub height: f64,
    /// The α of the grid at which the maximum is reached (the first one in grid order on
    /// ties).
    pub alpha: f64,
    /// Index of that α in the grid.
    pub index: usize,
}

impl Curve {
    /// Number of grid points.
    #[must_use]
    pub fn len(&self) -> usize {
        self.alphas.len()
    }

    /// Whether the curve has no point.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.alphas.is_empty()
    }

    /// The barrier of the loss ([`barrier`] of `self.loss`).
    ///
    /// # Errors
    /// As [`barrier`].
    pub fn loss_barrier(&self, kind: BarrierKind) -> Result<Barrier> {
        barrier(&self.alphas, &self.loss, kind)
    }

    /// The barrier of the error ([`barrier`] of `self.error`).
    ///
    /// # Errors
    /// As [`barrier`].
    pub fn error_barrier(&self, kind: BarrierKind) -> Result<Barrier> {
        barrier(&self.alphas, &self.error, kind)
    }
}

/// `n ≥ 2` equally spaced points `α_k = k / (n − 1)`, `k = 0, …, n − 1`, from exactly 0 to
/// exactly 1.
///
/// # Errors
/// [`Error::InvalidArgument`] if `n < 2`.
///
/// # Examples
/// ```
/// assert_eq!(llfc::lmc::uniform_grid(5)?, [0.0, 0.25, 0.5, 0.75, 1.0]);
/// # Ok::<(), llfc::Error>(())
/// ```
pub fn uniform_grid(n: usize) -> Result<Vec<f64>> {
    if n < 2 {
        return Err(Error::InvalidArgument {
            name: "n",
            reason: format!("a grid from 0 to 1 needs at least 2 points, got {n}"),
        });
    }
    #[allow(clippy::cast_precision_loss)]
    let last = (n - 1) as f64;
    #[allow(clippy::cast_precision_loss)]
    Ok((0..n).map(|k| k as f64 / last).collect())
}

/// Check a list of α: non-empty and finite.
fn check_alphas(alphas: &[f64]) -> Result<()> {
    if alphas.is_empty() {
        return Err(Error::EmptyInput {
            what: "grid of interpolation coefficients alphas".into(),
        });
    }
    if let Some(a) = alphas.iter().find(|a| !a.is_finite()) {
        return Err(Error::InvalidArgument {
            name: "alphas",
            reason: format!("every interpolation coefficient must be finite, got {a}"),
        });
    }
    Ok(())
}

/// Evaluate `eval(α) = (loss, error)` at every α of the grid: the curve `v(α)` of any model and
/// any loss. Points are computed in parallel with the `rayon` feature, results kept in grid
/// order.
///
/// # Errors
/// [`Error::EmptyInput`] for an empty grid; [`Error::InvalidArgument`] for a non-finite α;
/// the first error `eval` returns, in grid order; [`Error::NonFinite`] if it returns a NaN or
/// infinite value.
///
/// # Examples
/// ```
/// let c = llfc::lmc::curve(&[0.0, 0.5, 1.0], |a| Ok((1.0 + a * (1.0 - a), 0.0)))?;
/// assert_eq!(c.loss, [1.0, 1.25, 1.0]);
/// let b = c.loss_barrier(llfc::lmc::BarrierKind::Interpolated)?;
/// assert_eq!((b.height, b.alpha), (0.25, 0.5));
/// # Ok::<(), llfc::Error>(())
/// ```
pub fn curve<E>(alphas: &[f64], eval: E) -> Result<Curve>
where
    E: Fn(f64) -> Result<(f64, f64)> + Sync + Send,
{
    check_alphas(alphas)?;
    from_points(alphas, par_map(alphas, |&a| eval(a)))
}

/// The curve of `points[k] = (loss, error)` at `alphas[k]`: the first error in grid order, or
/// [`Error::NonFinite`] for a NaN or infinite value.
fn from_points(
    alphas: &[f64],
    points: impl IntoIterator<Item = Result<(f64, f64)>>,
) -> Result<Curve> {
    let (mut loss, mut error) = (Vec::with_capacity(alphas.len()), Vec::new());
    for (point, &alpha) in points.into_iter().zip(alphas) {
        let (l, e) = point?;
        if !l.is_finite() || !e.is_finite() {
            return Err(Error::NonFinite {
                what: format!("curve value (loss {l}, error {e}) at alpha = {alpha}"),
            });
        }
        loss.push(l);
        error.push(e);
    }
    Ok(Curve {
        alphas: alphas.to_vec(),
        loss,
        error,
    })
}

/// The curve of two reference MLPs ([`mlp`]) θ_A = `a`, θ_B = `b` on the labelled
/// data `(x, labels)`: at each α, `θ(α) = α θ_A + (1 − α) θ_B` ([`Params::interpolate`], so the
/// endpoints are exact) is evaluated with [`mlp::evaluate`]; the loss is the mean softmax
/// cross-entropy and the error `1 − accuracy`. Costs one forward pass (`2 N P` flops) per α.
///
/// # Errors
/// As [`curve`]; what [`Params::check_compatible`] reports for `a`, `b`; what [`mlp::evaluate`]
/// reports (architecture, input shape, NaN, labels).
///
/// # Examples
/// ```
/// use rand::SeedableRng;
/// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
/// let a = llfc::mlp::init::<f64, _>(&[2, 8, 2], &mut rng)?;
/// let b = llfc::mlp::init::<f64, _>(&[2, 8, 2], &mut rng)?;
/// let x = ndarray::array![[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]];
/// let grid = llfc::lmc::uniform_grid(11)?;
/// let c = llfc::lmc::mlp_curve(&a, &b, &x, &[0, 1, 1], &grid)?;
/// assert_eq!(c.loss[10], llfc::mlp::evaluate(&a, &x, &[0, 1, 1])?.loss); // α = 1 is A
/// assert!(c.loss_barrier(Default::default())?.height >= 0.0);
/// # Ok::<(), llfc::Error>(())
/// ```
pub fn mlp_curve<F: Float, S: Data<Elem = F>>(
    a: &Params<F>,
    b: &Params<F>,
    x: &ArrayBase<S, Ix2>,
    labels: &[usize],
    alphas: &[f64],
) -> Result<Curve> {
    check_alphas(alphas)?;
    a.check_compatible(b)?;
    let x = x.view();
    curve(alphas, |alpha| {
        let eval = mlp::evaluate(&a.interpolate(b, alpha)?, &x, labels)?;
        Ok((eval.loss, 1.0 - eval.accuracy))
    })
}

/// [`mlp_curve`] and [`llfc_report_mlp`] of the same pair on the same inputs `x` and grid, from
/// one forward pass of `θ(α)` per α instead of two: the curve's loss and error are read from
/// the logits of the features the report measures. Both results are exactly (bit for bit)
/// those of the two functions called separately.
///
/// # Errors
/// What [`mlp_curve`] and [`llfc_report_mlp`] report; when both would fail, the first α's
/// error (the report's before the curve's for one α).
///
/// # Examples
/// ```
/// use llfc::metrics::{llfc_report_mlp, CosineVariant};
/// use rand::SeedableRng;
/// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
/// let a = llfc::mlp::init::<f64, _>(&[2, 8, 2], &mut rng)?;
/// let b = llfc::mlp::init::<f64, _>(&[2, 8, 2], &mut rng)?;
/// let x = ndarray::array![[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]];
/// let (grid, labels) = (llfc::lmc::uniform_grid(5)?, [0, 1, 1]);
/// let signed = CosineVariant::Signed;
/// let (curve, report) = llfc::lmc::mlp_curve_and_report(&a, &b, &x, &labels, &grid, signed)?;
/// assert_eq!(curve, llfc::lmc::mlp_curve(&a, &b, &x, &labels, &grid)?);
/// assert_eq!(report, llfc_report_mlp(&a, &b, &x, &grid, signed)?);
/// # Ok::<(), llfc::Error>(())
/// ```
pub fn mlp_curve_and_report<F: Float, S: Data<Elem = F>>(
    a: &Params<F>,
    b: &Params<F>,
    x: &ArrayBase<S, Ix2>,
    labels: &[usize],
    alphas: &[f64],
    variant: CosineVariant,
) -> Result<(Curve, LlfcReport)> {
    check_alphas(alphas)?;
    let (report, points) = llfc_report_mlp_with(a, b, x, alphas, variant, |f| {
        let logits = f.post.last().expect("an MLP has at least one layer");
        Ok((
            mlp::cross_entropy(logits, labels)?,
            1.0 - mlp::accuracy(logits, labels)?,
        ))
    })?;
    let curve = from_points(alphas, points.into_iter().map(Ok))?;
    Ok((curve, report))
}

/// Index of the exact value `target` in `alphas`.
fn position(alphas: &[f64], target: f64) -> Result<usize> {
    #[allow(clippy::float_cmp)]
    alphas
        .iter()
        .position(|&a| a == target)
        .ok_or_else(|| Error::InvalidArgument {
            name: "alphas",
            reason: format!("a barrier needs the endpoint alpha = {target} in the grid"),
        })
}

/// The barrier of the values `values[k] = v(alphas[k])` on a grid:
///
/// ```text
/// Interpolated:  max_k [ v(α_k) − (α_k v(1) + (1 − α_k) v(0)) ]
/// Midpoint:      max_k v(α_k) − ½ (v(0) + v(1))
/// ```
///
/// with the α reaching it (first in grid order on ties). The grid need not be sorted or
/// uniform, but must contain `0.0` and `1.0` exactly and no α twice. Costs `O(n log n)`.
///
/// # Errors
/// [`Error::EmptyInput`] for an empty grid; [`Error::ShapeMismatch`] if `values` and `alphas`
/// differ in length; [`Error::InvalidArgument`] for a non-finite α, a repeated α, or a grid
/// without 0 or 1; [`Error::NonFinite`] for a NaN or infinite value.
///
/// # Examples
/// ```
/// use llfc::lmc::{barrier, BarrierKind};
/// let alphas = [0.0, 0.5, 1.0];
/// let loss = [1.0, 2.5, 2.0];
/// // Interpolated: 2.5 − (0.5·2 + 0.5·1) = 1; midpoint: 2.5 − 1.5 = 1 as well here.
/// assert_eq!(barrier(&alphas, &loss, BarrierKind::Interpolated)?.height, 1.0);
/// // A monotone curve has no interpolated barrier, but a midpoint one:
/// let b = barrier(&alphas, &[1.0, 1.5, 2.0], BarrierKind::Midpoint)?;
/// assert_eq!((b.height, b.alpha), (0.5, 1.0));
/// # Ok::<(), llfc::Error>(())
/// ```
pub fn barrier(alphas: &[f64], values: &[f64], kind: BarrierKind) -> Result<Barrier> {
    check_alphas(alphas)?;
    if values.len() != alphas.len() {
        return Err(Error::ShapeMismatch {
            what: "curve values (one per alpha)".into(),
            expected: vec![alphas.len()],
            found: vec![values.len()],
        });
    }
    if let Some(k) = values.iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFinite {
            what: format!("curve value at alpha = {}", alphas[k]),
        });
    }
    let mut sorted = alphas.to_vec();
    sorted.sort_by(f64::total_cmp);
    #[allow(clippy::float_cmp)]
    if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
        return Err(Error::InvalidArgument {
            name: "alphas",
            reason: format!("alpha = {} appears more than once in the grid", w[0]),
        });
    }
    let (v0, v1) = (
        values[position(alphas, 0.0)?],
        values[position(alphas, 1.0)?],
    );
    let excess = |k: usize| match kind {
        BarrierKind::Interpolated => values[k] - (alphas[k] * v1 + (1.0 - alphas[k]) * v0),
        BarrierKind::Midpoint => values[k] - 0.5 * (v0 + v1),
    };
    let mut best = Barrier {
        height: excess(0),
        alpha: alphas[0],
        index: 0,
    };
    for (k, &alpha) in alphas.iter().enumerate().skip(1) {
        let height = excess(k);
        if height > best.height {
            best = Barrier {
                height,
                alpha,
                index: k,
            };
        }
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_endpoints_are_exact() {
        for n in 2..50 {
            let g = uniform_grid(n).unwrap();
            assert_eq!((g[0], g[n - 1], g.len()), (0.0, 1.0, n));
        }
    }

    #[test]
    fn endpoints_contribute_zero_to_the_interpolated_barrier() {
        let b = barrier(&[1.0, 0.0], &[3.0, -7.0], BarrierKind::Interpolated).unwrap();
        assert_eq!((b.height, b.index), (0.0, 0));
    }
}
