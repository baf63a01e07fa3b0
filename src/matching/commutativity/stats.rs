//! Streaming second moments of the hidden features of two MLPs, the only data commutativity
//! matching needs (f64, Chan et al.'s update through [`ActivationStats`]).

use ndarray::{Array2, ArrayView2, Axis};

use crate::error::{Error, Result};
use crate::float::Float;
use crate::matching::activation::{ActivationStats, Statistic};
use crate::mlp;
use crate::params::Params;

/// Streaming raw second moments of one hidden layer's features in A and B (same samples):
/// `Σ h_A h_Aᵀ`, `Σ h_A h_Bᵀ`, `Σ h_B h_Bᵀ`, from which [`commutativity_matching`](super::commutativity_matching) takes the
/// means `C_AA`, `C_AB`, `C_BB` (see the [module docs](super)).
///
/// Three [`ActivationStats`] (f64, Chan et al.'s pairwise update, mergeable); memory `O(d²)`.
#[derive(Clone, Debug, PartialEq)]
pub struct CommutativityStats {
    aa: ActivationStats,
    ab: ActivationStats,
    bb: ActivationStats,
}

impl CommutativityStats {
    /// Empty statistics of a layer of `units` units (in both models).
    #[must_use]
    pub fn new(units: usize) -> Self {
        Self {
            aa: ActivationStats::new(units, units),
            ab: ActivationStats::new(units, units),
            bb: ActivationStats::new(units, units),
        }
    }

    /// Number of units `d`.
    #[must_use]
    pub fn units(&self) -> usize {
        self.ab.dims().0
    }

    /// Number of samples seen.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.ab.count()
    }

    /// The cross statistics of A and B (what activation matching uses).
    #[must_use]
    pub fn cross(&self) -> &ActivationStats {
        &self.ab
    }

    /// Add a batch of features `h_a`, `h_b` (`[batch, d]`, rows are the same samples).
    /// Costs three `batch × d × d` products.
    ///
    /// # Errors
    /// As [`ActivationStats::update`]: [`Error::ShapeMismatch`], [`Error::EmptyInput`],
    /// [`Error::NonFinite`].
    pub fn update<F: Float>(
        &mut self,
        h_a: ArrayView2<'_, F>,
        h_b: ArrayView2<'_, F>,
    ) -> Result<()> {
        self.ab.update(h_a, h_b)?;
        self.aa.update(h_a, h_a)?;
        self.bb.update(h_b, h_b)
    }

    /// Merge statistics gathered on other samples.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if the widths differ.
    pub fn merge(&mut self, other: &Self) -> Result<()> {
        self.ab.merge(&other.ab)?;
        self.aa.merge(&other.aa)?;
        self.bb.merge(&other.bb)
    }

    /// The means `(C_AA, C_AB, C_BB)` = `E[h_A h_Aᵀ]`, `E[h_A h_Bᵀ]`, `E[h_B h_Bᵀ]`.
    pub(super) fn moments(&self) -> Result<Moments> {
        let m = |s: &ActivationStats| s.statistic(Statistic::InnerProduct);
        Ok(Moments::new(m(&self.aa)?, m(&self.ab)?, m(&self.bb)?))
    }
}

/// [`CommutativityStats`] of every hidden layer of two MLPs (`layers.{ℓ}.weight` /
/// `layers.{ℓ}.bias`, see [`mlp`]) on the inputs `x` (`[N, in]`), streamed over row blocks
/// of at most 1024 samples. Element ℓ holds the post-activations of hidden layer ℓ.
///
/// # Errors
/// What [`mlp::forward_features`] reports (a malformed MLP, a bad input);
/// [`Error::ShapeMismatch`] if A and B have different widths; [`Error::EmptyInput`] if `x`
/// has no rows.
pub fn mlp_commutativity_stats<F: Float>(
    a: &Params<F>,
    b: &Params<F>,
    x: ArrayView2<'_, F>,
) -> Result<Vec<CommutativityStats>> {
    mlp_hidden_stats(
        a,
        b,
        x,
        "inputs x of the commutativity statistics",
        CommutativityStats::new,
        |st, ha, hb| st.update(ha, hb),
    )
}

/// Per-hidden-layer statistics of two MLPs of equal widths on the inputs `x` (`[N, in]`),
/// streamed over row blocks of at most 1024 samples: `new(d)` makes hidden layer ℓ's statistic
/// (`d` its width) and `update(stat, H_A^ℓ, H_B^ℓ)` adds one block's post-activations.
///
/// # Errors
/// What [`mlp::forward_features`] or `update` report; [`Error::ShapeMismatch`] if A and B have
/// different widths; [`Error::EmptyInput`] (about `what`) if `x` has no rows.
pub(crate) fn mlp_hidden_stats<F: Float, S>(
    a: &Params<F>,
    b: &Params<F>,
    x: ArrayView2<'_, F>,
    what: &str,
    new: impl Fn(usize) -> S,
    mut update: impl FnMut(&mut S, ArrayView2<'_, F>, ArrayView2<'_, F>) -> Result<()>,
) -> Result<Vec<S>> {
    let widths = same_widths(a, b)?;
    if x.nrows() == 0 {
        return Err(Error::EmptyInput { what: what.into() });
    }
    let hidden = &widths[1..widths.len() - 1];
    let mut stats: Vec<S> = hidden.iter().map(|&d| new(d)).collect();
    for chunk in x.axis_chunks_iter(Axis(0), 1024) {
        let (fa, fb) = (
            mlp::forward_features(a, &chunk)?,
            mlp::forward_features(b, &chunk)?,
        );
        for (l, st) in stats.iter_mut().enumerate() {
            update(st, fa.post[l].view(), fb.post[l].view())?;
        }
    }
    Ok(stats)
}

/// Raw second moments of one layer, in standard layout.
pub(super) struct Moments {
    pub(super) aa: Array2<f64>,
    pub(super) ab: Array2<f64>,
    pub(super) bb: Array2<f64>,
    /// `abᵀ`: its rows are the columns of `ab`, so that rows of [`gram`](super::gram) read
    /// contiguous memory.
    pub(super) ab_t: Array2<f64>,
    /// `aaᵀ` and `bbᵀ`, for the same reason (the swap scores read columns of both).
    pub(super) aa_t: Array2<f64>,
    pub(super) bb_t: Array2<f64>,
}

impl Moments {
    /// The moments `(aa, ab, bb)`, stored in standard layout, with their transposes.
    pub(super) fn new(aa: Array2<f64>, ab: Array2<f64>, bb: Array2<f64>) -> Self {
        let standard = |m: Array2<f64>| {
            if m.is_standard_layout() {
                m
            } else {
                m.as_standard_layout().into_owned()
            }
        };
        let (aa, ab, bb) = (standard(aa), standard(ab), standard(bb));
        Self {
            aa_t: super::transposed(aa.view()),
            ab_t: super::transposed(ab.view()),
            bb_t: super::transposed(bb.view()),
            aa,
            ab,
            bb,
        }
    }
}

/// Widths of two MLPs, which must agree.
pub(super) fn same_widths<F: Float>(a: &Params<F>, b: &Params<F>) -> Result<Vec<usize>> {
    let (wa, wb) = (mlp::widths(a)?, mlp::widths(b)?);
    if wa != wb {
        return Err(Error::ShapeMismatch {
            what: "MLP widths of B versus A".into(),
            expected: wa,
            found: wb,
        });
    }
    Ok(wa)
}
