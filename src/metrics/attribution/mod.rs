//! LLFC error attribution: where, and why, the interpolated network leaves the linear path.
//!
//! The LLFC paper (Zhou et al. 2023, Thm. 1) shows that weak additivity of ReLU and
//! commutativity together imply LLFC, and measures each property on its own. This module
//! measures **how much of the LLFC deviation each failure causes, layer by layer**, through an
//! exact identity.
//!
//! # The identity
//! A chain of dense layers `ℓ = 0, …, L − 1` (numbered like the parameters `layers.{ℓ}` of
//! [`mlp`](crate::mlp); rows are samples): `Z^ℓ = H^{ℓ−1} W^ℓᵀ + b^ℓ`, `H^ℓ = σ_ℓ(Z^ℓ)` with
//! `σ_ℓ` ReLU or the identity ([`Activation`]), `H^{−1} = X`. For `θ(α) = α θ_A + (1 − α) θ_B`
//! (α = 1 is A; write `β = 1 − α`), the linear targets and the deviations are
//!
//! ```text
//! Z_lin^ℓ = α Z_A^ℓ + β Z_B^ℓ,   H_lin^ℓ = α H_A^ℓ + β H_B^ℓ
//! ΔZ^ℓ = Z_α^ℓ − Z_lin^ℓ,        ΔH^ℓ = H_α^ℓ − H_lin^ℓ        (LLFC holds exactly iff they are 0)
//! ```
//!
//! and, exactly (the biases cancel),
//!
//! ```text
//! ΔZ^ℓ = ΔH^{ℓ−1} W_αᵀ  −  α β C^ℓ,          C^ℓ = (H_A^{ℓ−1} − H_B^{ℓ−1}) (W_A^ℓ − W_B^ℓ)ᵀ
//! ΔH^ℓ = S^ℓ ⊙ ΔZ^ℓ     +  E^ℓ,              E^ℓ = σ(Z_lin^ℓ) − α σ(Z_A^ℓ) − β σ(Z_B^ℓ)
//! ```
//!
//! with `W_α = α W_A^ℓ + β W_B^ℓ`, `ΔH^{−1} = 0` and `S^ℓ` the elementwise *secant slope* of σ
//! between `Z_lin^ℓ` and `Z_α^ℓ`: `(σ(Z_α) − σ(Z_lin)) / (Z_α − Z_lin)`, in `[0, 1]` for ReLU,
//! and where the two are equal `σ′` (1 if positive, 0 if ≤ 0); `S = 1`, `E = 0` for the
//! identity. `C^ℓ` is the commutativity residual `Rᵀ` of
//! [`commutativity_residual`](super::commutativity_residual) (`[samples, out]` layout).
//!
//! **Sign convention.** The *commutativity source* of layer ℓ is the term that enters the
//! identity, `K^ℓ = −α(1 − α) C^ℓ` (with its minus sign); the *weak-additivity source* is `E^ℓ`.
//! Every contribution, inner product and share reported here is that of `K^ℓ` and `E^ℓ` as
//! written, so contributions add up to the deviation with `+` signs.
//!
//! **Transport.** Every step is linear in the sources once `S` is fixed (it is: it comes from
//! the actual forward passes), so the deviation at any layer is an exact sum of transported
//! contributions, one per source:
//!
//! ```text
//! ΔZ^m = Σ_{k ≤ m} T_{k→m}(K^k) + Σ_{k < m} T'_{k→m}(E^k),    ΔH^m = S^m ⊙ ΔZ^m + E^m
//! T: c ↦ (S^{j} ⊙ c) W_α^{j+1 ᵀ} from layer j to j + 1
//! ```
//!
//! `K^0 = 0`: both models read the same input (the paper's `C^1 = 0` with layers numbered from
//! 1). The share of source `s` in a deviation `Δ` is `⟨c_s, Δ⟩ / ‖Δ‖²`: shares sum to 1, and a
//! negative share is a source that cancels part of the others.
//!
//! **By hand, two layers** (ReLU after layer 0, none after layer 1, the logits): layer 0 reads
//! `X` in both models, so `Z_α^0 = X W_α^0ᵀ + b_α^0 = Z_lin^0`, `ΔZ^0 = 0` and
//! `ΔH^0 = σ(Z_lin^0) − α σ(Z_A^0) − β σ(Z_B^0) = E^0`. Then with `H_α^0 = H_lin^0 + E^0`,
//!
//! ```text
//! Z_α^1 − Z_lin^1 = (H_lin^0 + E^0) W_αᵀ − α H_A W_Aᵀ − β H_B W_Bᵀ            (b_α cancels)
//!   H_lin^0 W_αᵀ   = α² H_A W_Aᵀ + αβ (H_A W_Bᵀ + H_B W_Aᵀ) + β² H_B W_Bᵀ
//!   ⇒ ΔZ^1 = E^0 W_αᵀ + (α² − α) H_A W_Aᵀ + (β² − β) H_B W_Bᵀ + αβ (H_A W_Bᵀ + H_B W_Aᵀ)
//!          = E^0 W_αᵀ − αβ (H_A − H_B)(W_A − W_B)ᵀ = T_{0→1}(E^0) + K^1,
//! ```
//!
//! since `α² − α = β² − β = −αβ` (here `H = H^0`, `W = W^1`). The logits' deviation is the
//! ReLU non-additivity of layer 0 carried through `W_α^1`, plus the commutativity failure of
//! layer 1; the test suite checks this two-term formula against the implementation.
//!
//! # What is computed
//! - [`attribution_dense`] / [`attribution_mlp`]: for a dense chain, every layer and α,
//!   `‖ΔZ^ℓ‖ / ‖Z_lin^ℓ‖`, `‖ΔH^ℓ‖ / ‖H_lin^ℓ‖` and each source's transported contribution
//!   (norm, inner product with the deviation, share) — [`Attribution`].
//! - [`local_split_dense`] / [`local_split_conv`]: from the features of one layer alone (its
//!   inputs under A, B, θ(α) and its weights), `ΔZ^ℓ = ΔH^{ℓ−1} W_αᵀ + K^ℓ` split into the
//!   *propagated* deviation and the layer's *own* commutativity term; for convolutions
//!   `W_α` products become `conv(W_α, ·)` and `K^ℓ = −αβ conv(W_A − W_B, H_A − H_B)`.
//! - [`local_split_activation`]: from pre-activations alone, `ΔH^ℓ = S^ℓ ⊙ ΔZ^ℓ + E^ℓ`.
//!
//! # Numerics and memory
//! Everything is computed in f64 (f32 inputs are converted exactly), so the identity closes to
//! rounding: every result carries `closure = ‖Σ_s c_s − Δ‖ / ‖Δ‖` with `Δ` computed directly
//! (`Z_α − Z_lin` from the interpolated network's own forward pass), about `1e-15` per layer.
//! The sums are scale-safe like the rest of [`metrics`](crate::metrics): the inputs (with the
//! biases, with which every `Z^ℓ`, `H^ℓ` is positively homogeneous) are divided by a power of
//! two near their largest magnitude before any product, so inputs of 1e±300 give the shares,
//! ratios and closures of unscaled ones (bit for bit for a power-of-two scale) and norms scaled
//! back exactly; an inner product `⟨c, Δ⟩` beyond f64's range is reported as ±∞, its share
//! is still finite.
//! Samples are processed in fixed blocks ([`AttributionOptions::chunk_size`] rows, in parallel
//! with `rayon`); a block holds its three forward passes and all its sources at once (one GEMM
//! transports all of them), and only f64 sums leave it, added in block order — so no
//! `[N, d]` array is ever kept per source or layer (memory `O(chunk · width · (L + #ReLU))` per
//! worker — 256 rows at width 2048 with 8 sources is ≈ 100 MB — plus the weights of A, B,
//! `A − B` and every θ(α) in f64) and the results do not depend on the number of threads.
//! Measured: 128-2048-2048-10 (f32 in, one α) peaks at 347 MB resident with 2,000 samples and
//! 375 MB with 8,000, i.e. flat in `N`. A dense chain costs, per α, three forward passes plus one product per
//! layer for `C^ℓ` and the transport of `k` sources through each layer (`2 N k in out` flops).

mod chain;
mod local;

pub use chain::{attribution_dense, attribution_mlp};
pub use local::{local_split_activation, local_split_conv, local_split_dense, ConvLayer};

use ndarray::{ArrayView1, ArrayView2};

use crate::error::{Error, Result};
use crate::float::Float;
use crate::metrics::check_same;
use crate::metrics::scaled::ldexp;

/// The activation after a dense layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Activation {
    /// `σ(z) = max(z, 0)`: the layer has a weak-additivity source `E^ℓ`.
    Relu,
    /// No activation (e.g. the logits): `H^ℓ = Z^ℓ`, no weak-additivity source.
    Identity,
}

/// One dense layer of a chain: weight `[out, in]` (PyTorch layout) and optional bias `[out]`.
#[derive(Clone, Copy, Debug)]
pub struct DenseLayer<'a, F> {
    /// The weight `W` (`[out, in]`).
    pub weight: ArrayView2<'a, F>,
    /// The bias `b` (`[out]`), if the layer has one (both models must agree).
    pub bias: Option<ArrayView1<'a, F>>,
}

/// Options of [`attribution_dense`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttributionOptions {
    /// Samples per block (default 256; must be ≥ 1). Results do not depend on it beyond the
    /// order of f64 additions; memory per worker grows linearly with it.
    pub chunk_size: usize,
}

impl Default for AttributionOptions {
    fn default() -> Self {
        Self { chunk_size: 256 }
    }
}

/// A source of LLFC deviation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// `K^ℓ = −α(1 − α) C^ℓ`, the commutativity failure of layer `layer` (zero for layer 0).
    Commutativity {
        /// The layer ℓ.
        layer: usize,
    },
    /// `E^ℓ = σ(Z_lin^ℓ) − α σ(Z_A^ℓ) − (1 − α) σ(Z_B^ℓ)`, the weak-additivity failure of the
    /// ReLU after layer `layer`.
    WeakAdditivity {
        /// The layer ℓ.
        layer: usize,
    },
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Commutativity { layer } => write!(f, "C{layer}"),
            Self::WeakAdditivity { layer } => write!(f, "E{layer}"),
        }
    }
}

/// One part `c` of a deviation `Δ`, summed over all samples (f64).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Part {
    /// `‖c‖_F`.
    pub norm: f64,
    /// `⟨c, Δ⟩_F`.
    pub inner: f64,
    /// `⟨c, Δ⟩ / ‖Δ‖²` (the parts' shares sum to 1); `None` if `Δ = 0`.
    pub share: Option<f64>,
}

/// One source's transported contribution to a deviation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Contribution {
    /// The source.
    pub source: Source,
    /// Its contribution `c_s = T(source)` at this layer.
    pub part: Part,
}

/// A deviation `Δ` (of the pre- or post-activations of one layer at one α) and its sources.
#[derive(Clone, Debug, PartialEq)]
pub struct Deviation {
    /// `‖Δ‖_F`, `Δ = Z_α − Z_lin` (or `H_α − H_lin`) computed directly.
    pub norm: f64,
    /// `‖Z_lin‖_F` (or `‖H_lin‖_F`), the linear target.
    pub reference_norm: f64,
    /// `‖Δ‖ / ‖Z_lin‖` (or `/ ‖H_lin‖`); `None` if the target is 0.
    pub relative: Option<f64>,
    /// `‖Σ_s c_s − Δ‖ / ‖Δ‖`: how exactly the contributions add up (rounding only);
    /// `None` if `Δ = 0`. Where `Δ` is itself only the rounding of its direct computation
    /// (`relative` ≈ 1e-16, e.g. layer 0, whose exact deviation is 0) the closure is ≈ 1 and
    /// the shares mean nothing: that deviation is zero.
    pub closure: Option<f64>,
    /// One entry per source up to this layer, in the order of [`Attribution::sources`].
    pub contributions: Vec<Contribution>,
}

impl Deviation {
    /// The contribution of `source`, if it reaches this layer.
    #[must_use]
    pub fn contribution(&self, source: Source) -> Option<&Part> {
        self.contributions
            .iter()
            .find(|c| c.source == source)
            .map(|c| &c.part)
    }
}

/// The attribution of one layer at one α.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerAttribution {
    /// The layer ℓ.
    pub layer: usize,
    /// The interpolation coefficient α.
    pub alpha: f64,
    /// `ΔZ^ℓ`, the deviation of the pre-activations: contributions of `K^k` (`k ≤ ℓ`) and
    /// `E^k` (`k < ℓ`).
    pub pre: Deviation,
    /// `ΔH^ℓ`, the deviation of the post-activations: also `E^ℓ` if the layer has a ReLU
    /// (equal to `pre` for an identity activation).
    pub post: Deviation,
}

/// The attribution of a dense chain (see [`attribution_dense`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Attribution {
    /// The α values, in the order given.
    pub alphas: Vec<f64>,
    /// Every source of the chain in order of appearance: `K^0, E^0, K^1, E^1, …` (`E^ℓ` only
    /// for ReLU layers).
    pub sources: Vec<Source>,
    /// `layers[i][ℓ]`: layer ℓ at `alphas[i]`.
    pub layers: Vec<Vec<LayerAttribution>>,
    /// Number of samples.
    pub samples: usize,
}

/// The split of one layer's pre-activation deviation from its features alone (see
/// [`local_split_dense`]), or of its post-activation deviation ([`local_split_activation`]).
#[derive(Clone, Debug, PartialEq)]
pub struct LocalSplit {
    /// The interpolation coefficient α.
    pub alpha: f64,
    /// `‖Δ‖_F`, computed directly.
    pub norm: f64,
    /// `‖Z_lin‖_F` (or `‖H_lin‖_F`).
    pub reference_norm: f64,
    /// `‖Δ‖ / ‖reference‖`; `None` if the reference is 0.
    pub relative: Option<f64>,
    /// `‖propagated + own − Δ‖ / ‖Δ‖` (rounding only); `None` if `Δ = 0`. ≈ 1 where `Δ` is
    /// only rounding (`relative` ≈ 1e-16, e.g. the first layer, which reads the same input in
    /// A, B and θ(α)): that deviation is zero and its shares mean nothing.
    pub closure: Option<f64>,
    /// What arrives from below: `ΔH^{ℓ−1} W_αᵀ` (dense), `conv(W_α, ΔH^{ℓ−1})` (conv), or
    /// `S^ℓ ⊙ ΔZ^ℓ` (activation).
    pub propagated: Part,
    /// The layer's own source: `K^ℓ = −α(1 − α) C^ℓ`, or `E^ℓ` for an activation.
    pub own: Part,
}

/// Check the biases of both models: both absent, or both `[out]` and finite.
pub(crate) fn check_biases<F: Float>(
    a: Option<ArrayView1<'_, F>>,
    b: Option<ArrayView1<'_, F>>,
    out: usize,
    what: &str,
) -> Result<()> {
    match (a, b) {
        (Some(a), Some(b)) => {
            check_same(
                &ndarray::Array1::<F>::zeros(out),
                &a,
                &format!("bias of A in {what}"),
                "[out]",
            )?;
            check_same(&a, &b, &format!("bias of B in {what}"), "A's bias")
        }
        (None, None) => Ok(()),
        _ => Err(Error::InvalidArgument {
            name: "bias",
            reason: format!("{what} has a bias in one model only"),
        }),
    }
}

/// Running f64 sums of one deviation: `‖Δ‖²`, `‖reference‖²`, `‖Σ c − Δ‖²` and per part
/// `(‖c‖², ⟨c, Δ⟩)`.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Sums {
    pub(crate) delta: f64,
    pub(crate) reference: f64,
    pub(crate) closure: f64,
    pub(crate) parts: Vec<(f64, f64)>,
    /// The sums are of values divided by `2^exp` (scale safety): norms are multiplied back by
    /// `2^exp` and inner products by `2^(2 exp)`; shares and ratios need no correction.
    pub(crate) exp: i32,
}

impl Sums {
    /// Add another block's sums (same parts).
    pub(crate) fn add(&mut self, other: &Self) {
        self.delta += other.delta;
        self.reference += other.reference;
        self.closure += other.closure;
        if self.parts.is_empty() {
            self.parts = vec![(0.0, 0.0); other.parts.len()];
        }
        for (p, q) in self.parts.iter_mut().zip(&other.parts) {
            p.0 += q.0;
            p.1 += q.1;
        }
    }

    /// The part `i` as a [`Part`].
    pub(crate) fn part(&self, i: usize) -> Part {
        let (sq, inner) = self.parts[i];
        Part {
            norm: ldexp(sq.sqrt(), self.exp),
            inner: ldexp(inner, 2 * self.exp),
            share: (self.delta > 0.0).then(|| inner / self.delta),
        }
    }

    /// `(norm, reference_norm, relative, closure)`.
    pub(crate) fn totals(&self) -> (f64, f64, Option<f64>, Option<f64>) {
        let (n, r) = (self.delta.sqrt(), self.reference.sqrt());
        (
            ldexp(n, self.exp),
            ldexp(r, self.exp),
            (r > 0.0).then(|| n / r),
            (n > 0.0).then(|| self.closure.sqrt() / n),
        )
    }

    /// The deviation, labelling part `i` with `sources[i]`.
    pub(crate) fn deviation(&self, sources: &[Source]) -> Deviation {
        let (norm, reference_norm, relative, closure) = self.totals();
        Deviation {
            norm,
            reference_norm,
            relative,
            closure,
            contributions: sources
                .iter()
                .enumerate()
                .map(|(i, &source)| Contribution {
                    source,
                    part: self.part(i),
                })
                .collect(),
        }
    }

    /// The local split of parts `[propagated, own]`.
    pub(crate) fn local_split(&self, alpha: f64) -> LocalSplit {
        let (norm, reference_norm, relative, closure) = self.totals();
        LocalSplit {
            alpha,
            norm,
            reference_norm,
            relative,
            closure,
            propagated: self.part(0),
            own: self.part(1),
        }
    }
}

/// The exponent `e` of a power-of-two scale for all of `arrays` (`max |v| · 2^−e ∈ [1, 2)`):
/// dividing every array of a linear (or positively homogeneous) computation by `2^e` keeps its
/// f64 sums of squares and products in range whatever the magnitude of the inputs.
pub(crate) fn scale_exponent<'a, F: Float + 'a>(arrays: impl IntoIterator<Item = &'a F>) -> i32 {
    crate::metrics::scaled::exponent(crate::float::max_abs(arrays))
}

/// Sums of a deviation `delta` (`[n, d]`, row-major logical order), its `reference` and the
/// parts stacked as consecutive `[n, d]` blocks of `parts` (`[k·n, d]`).
pub(crate) fn block_sums(
    parts: ndarray::ArrayView2<'_, f64>,
    delta: ndarray::ArrayView2<'_, f64>,
    reference: ndarray::ArrayView2<'_, f64>,
) -> Sums {
    let n = delta.nrows();
    let k = parts.nrows().checked_div(n).unwrap_or(0);
    let mut sums = Sums {
        parts: vec![(0.0, 0.0); k],
        ..Sums::default()
    };
    let mut total = delta.to_owned();
    total.fill(0.0);
    for (b, p) in sums.parts.iter_mut().enumerate() {
        let block = parts.slice(ndarray::s![b * n..(b + 1) * n, ..]);
        ndarray::Zip::from(&block)
            .and(&delta)
            .and(&mut total)
            .for_each(|&c, &d, t| {
                p.0 += c * c;
                p.1 += c * d;
                *t += c;
            });
    }
    ndarray::Zip::from(&total)
        .and(&delta)
        .and(&reference)
        .for_each(|&t, &d, &r| {
            sums.delta += d * d;
            sums.reference += r * r;
            sums.closure += (t - d) * (t - d);
        });
    sums
}
