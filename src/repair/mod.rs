//! Interpolation repair: REPAIR and the BatchNorm reset (Jordan, Sedghi, Saukh, Entezari,
//! Neyshabur, *REPAIR: REnormalizing Permuted Activations for Interpolation Repair*, ICLR
//! 2023).
//!
//! Interpolating two aligned networks shrinks the variance of their hidden units ("variance
//! collapse"): the interpolated network θ(α) = α θ_A + (1 − α) θ_B has features much smaller
//! than the interpolation of A's and B's features — the LLFC scale `c > 1` of
//! [`metrics::interpolation_scale`](crate::metrics::interpolation_scale) seen from the other
//! side — and a loss barrier that matching alone does not remove.
//!
//! **REPAIR.** For a set of units (e.g. each hidden layer's pre-activations), with population
//! mean and standard deviation `μ_A, σ_A` in A, `μ_B, σ_B` in the aligned B and `μ̃, σ̃` in
//! θ(α), every unit of θ(α) is rescaled to the interpolated statistics
//!
//! ```text
//! z ← (z − μ̃) σ_α / σ̃ + μ_α,     μ_α = α μ_A + (1 − α) μ_B,   σ_α = α σ_A + (1 − α) σ_B
//! ```
//!
//! (α = 1 is A). For units produced by a linear or conv layer (or the affine part of a norm
//! layer) this folds exactly into the layer: `W ← s W`, `b ← s (b − μ̃) + μ_α`, `s = σ_α / σ̃`
//! ([`fold_correction`]), so the repaired model is an ordinary checkpoint of the same
//! architecture. Layers are corrected from the input up, each measured on the network whose
//! earlier layers are already repaired ([`repair`]). A unit with `σ̃ = 0` is shifted but not
//! rescaled, and reported. A layer without a bias is an error (it cannot absorb the shift).
//!
//! **BatchNorm reset** ([`reset_batchnorm`]). θ(α)'s interpolated running statistics describe
//! none of the three networks; they are recomputed from θ(α)'s own BN inputs, layer by layer
//! in eval mode (what Git Re-Basin and `rebasin` call resetting or recalculating the BN
//! statistics; REPAIR's RESET). **Barriers and LLFC of BatchNorm networks must be measured
//! after a reset**: without it the interpolated network normalises with wrong statistics and
//! every barrier and cosine reflects that, not the geometry of the weights.
//!
//! **conv → BN → ReLU.** In eval mode BN computes
//! `y = (x − running_mean) / √(running_var + eps) · weight + bias`, an affine map per channel;
//! the units that reach the ReLU are BN's outputs and the layer producing them is the BN's
//! affine part. So REPAIR of such a block is [`RepairLayer::module`]`("bn")` (fold into
//! `bn.weight`, `bn.bias`; the conv usually has no bias), after the reset.
//!
//! Both drivers take the caller's forward pass as a closure
//! `measure(params, features) -> Vec<UnitStats>` (a PyTorch model driven from Python through
//! files, see `examples/python/repair_model.py`, or [`mlp::repair`](crate::mlp::repair) for the
//! reference MLP): the crate does not become a deep-learning framework.

mod batchnorm;
mod driver;
mod fold;
mod stats;

pub use batchnorm::{reset_batchnorm, set_running_stats, BatchNormLayer, RunningVariance};
pub use driver::{repair, repair_towards, LayerRepair, RepairLayer, RepairOptions, Repaired};
pub use fold::{fold_correction, Correction, Target};
pub use stats::UnitStats;
