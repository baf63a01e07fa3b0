//! Commutativity matching: permutations of an MLP's hidden units that directly minimise the
//! commutativity residuals of Zhou et al. 2023 (*Going Beyond Linear Mode Connectivity*, §5,
//! where finding such a permutation is left as future work), by coordinate descent over the
//! layers in the style of Git Re-Basin's weight matching (Ainsworth et al. 2023, Alg. 1).
//!
//! # Objective
//! An MLP has linear layers `ℓ = 0, …, L − 1` with weights `W^ℓ` (`[d_ℓ, d_{ℓ−1}]`, PyTorch
//! layout) and hidden permutations `P_0, …, P_{L−2}`; the input is not permuted
//! (`P_{−1} = I`) and neither is the output (`P_{L−1} = I`). `H^{ℓ−1}` is the input of layer
//! `ℓ` (the post-activation of hidden layer `ℓ − 1`; `H^{−1} = X`, the data). In the paper's
//! notation (`H` is `units × samples`) the objective is
//!
//! ```text
//! J(π) = (1/N) Σ_ℓ ‖(W_A^ℓ − P_ℓ W_B^ℓ P_{ℓ−1}ᵀ)(H_A^{ℓ−1} − P_{ℓ−1} H_B^{ℓ−1})‖²_F ,
//! ```
//!
//! the summed squared commutativity residuals of the aligned pair (A, π(B)), per sample (the
//! `1/N` changes no minimiser; biases cancel in the residual). With our row-sample layout
//! (`H` is `[N, units]`, so B's permuted features are `H_B Pᵀ`), each term is the transpose's
//! norm `‖(H_A − H_B P_{ℓ−1}ᵀ)(W_A − P_ℓ W_B P_{ℓ−1}ᵀ)ᵀ‖²_F` — the matrix that
//! [`commutativity_residual`](crate::metrics::commutativity_residual) returns for the
//! permuted B.
//!
//! **The first term vanishes.** `H_A^{−1} = H_B^{−1} = X` and `P_{−1} = I`, so
//! `D^0 = X − X = 0` and the `ℓ = 0` term is exactly 0 whatever `P_0`: `P_0` enters `J` only
//! through the `ℓ = 1` term (as the input permutation of `W^1` and of `H^0`). The other terms
//! are non-negative and all vanish when B is a permuted copy of A at the planted permutation.
//!
//! # Second moments only
//! Write `Q = P_{ℓ−1}`, `D = H_A − H_B Qᵀ` (`[N, d]`) and `M = W_A − P W_B Qᵀ` (`P = P_ℓ`).
//! Then `‖D Mᵀ‖² = tr(M G Mᵀ)` with the `d × d` Gram matrix
//!
//! ```text
//! G = Dᵀ D / N = C_AA − C_AB Qᵀ − Q C_BA + Q C_BB Qᵀ ,
//! G[i, j] = C_AA[i, j] − C_AB[i, q(j)] − C_AB[j, q(i)] + C_BB[q(i), q(j)] ,
//! ```
//!
//! where `C_AB = E[h_A h_Bᵀ]` etc. are the raw second moments of the layer's features (the
//! paper's `D Dᵀ`). [`CommutativityStats`] streams them (f64, Chan et al.'s update, through
//! [`ActivationStats`](super::activation::ActivationStats)); memory is `O(d²)` per layer, whatever `N`.
//!
//! # Coordinate descent
//! Visit the hidden permutations in a seeded order; for `P_ℓ` with the others fixed:
//!
//! - **Term ℓ is linear in `P_ℓ`.** `tr(M G Mᵀ) = tr(W_A G W_Aᵀ) + tr(W̃ G W̃ᵀ) − 2⟨P_ℓ, S_ℓ⟩`
//!   with `W̃ = W_B^ℓ Qᵀ` (`W_B^ℓ[:, q]`), because `tr(P W̃ G W̃ᵀ Pᵀ) = tr(W̃ G W̃ᵀ)`, and
//!
//!   `S_ℓ = W_A^ℓ G_ℓ Q W_B^ℓᵀ = W_A^ℓ G_ℓ W̃ᵀ`  (`[d_ℓ, d_ℓ]`),
//!
//!   the issue's `X Yᵀ` with `X = W_A D`, `Y = W_B P_{ℓ−1}ᵀ D` (paper layout). `S_0 = 0`.
//! - **Term ℓ + 1 is quadratic in `P_ℓ`.** With `Q = P_ℓ`, `U = W_A^{ℓ+1}`,
//!   `V = P_{ℓ+1} W_B^{ℓ+1}`, `M = U − V Qᵀ`, `G = G_{ℓ+1}(Q)` and `N_M = Mᵀ M`, its gradient
//!   with respect to `Q` (as a matrix) is
//!
//!   `∇_Q tr(M G Mᵀ) = −2 [G Mᵀ V + N_M (C_AB − Q C_BB)]`
//!
//!   (from `dM = −V dQᵀ` and `dG = −C_AB dQᵀ − dQ C_BA + dQ C_BB Qᵀ + Q C_BB dQᵀ`, with the
//!   moments of hidden layer ℓ). A Frank–Wolfe step minimises the linearisation of `J` at the
//!   current `P_ℓ` over the Birkhoff polytope, whose minimiser is a vertex — a permutation: the
//!   LAP `max_P ⟨P, S_ℓ + T_ℓ⟩` with `T_ℓ = G Mᵀ V + N_M (C_AB − Q C_BB)`. Its solution is
//!   **accepted only if `J` decreases** (by more than `tolerance · J`).
//! - **Backtracking** (optional, [`CommutativityMatchingOptions::max_backtracks`], off by
//!   default). A full vertex often moves every unit and overshoots. When it is rejected,
//!   damped vertices `max_P ⟨P, S_ℓ + T_ℓ + λ P_ℓ^{cur}⟩` are tried with growing `λ` (a bonus
//!   for keeping each current match, so fewer units move) until one is accepted or nothing
//!   moves. Then the exact minimiser of term ℓ alone (`max_P ⟨P, S_ℓ⟩`, `ℓ > 0`) is tried.
//! - **Bound candidates** ([`StepKind::FeatureBound`], [`StepKind::WeightBound`]), tried
//!   after the Frank–Wolfe candidates and before the swaps, each from the state the previous
//!   one left. Write `E_ℓ = W_A^ℓ − P_ℓ W_B^ℓ P_{ℓ−1}ᵀ` and `D_ℓ = H_A^ℓ − P_ℓ H_B^ℓ` (paper
//!   layout), so `J_{ℓ+1} = ‖E_{ℓ+1} D_ℓ‖² ≤ ‖E_{ℓ+1}‖² ‖D_ℓ‖²` (the Frobenius norm is
//!   submultiplicative). Each factor alone is minimised exactly by a LAP in `P_ℓ`: not a local
//!   model of `J` but a factor of an upper bound, so these moves can jump out of the basins
//!   where the linearisation and the swaps stall:
//!   - the **feature factor**: `‖D_ℓ‖²/N = tr C_AA + tr C_BB − 2⟨P_ℓ, C_AB⟩` is minimised by
//!     `max_P ⟨P, C_AB⟩` (activation matching with the inner-product statistic, on the moments
//!     already held). It depends on layer ℓ's moments only, so it is solved once per layer;
//!     where `D_ℓ` can vanish (B a permuted copy of A) it makes `J_{ℓ+1} = 0` whatever the
//!     other permutations; since `J_0 = 0`, the first hidden layer's move then lowers `J`
//!     unless `J_1` is already 0, and the deeper layers' moves follow;
//!   - the **weight factors**, with the feature factors frozen at the current `P_ℓ`: minimise
//!     `‖D_{ℓ−1}‖² ‖E_ℓ‖² + ‖D_ℓ‖² ‖E_{ℓ+1}‖²`, i.e. `max_P ⟨P, ‖D_{ℓ−1}‖² W_A^ℓ W̃ᵀ +
//!     ‖D_ℓ‖² UᵀV⟩` (Git Re-Basin's weight-matching step for `P_ℓ`, each layer weighted by
//!     the feature error it multiplies; `‖D‖²/N = tr G`; for ℓ = 0, `D_{−1} = 0` and only
//!     `E_1` counts).
//!
//!   Like every candidate they are kept only if the exact `J` decreases, so they cannot undo
//!   the monotone descent. On planted problems the descent from the identity now reaches
//!   `J = 0` (up to the matches of units that are dead on every sample, which `J` cannot
//!   see); without them it stopped in a local minimum on most seeds.
//! - **Exact pairwise swaps** (2-opt, [`CommutativityMatchingOptions::max_swap_rounds`]). The
//!   linearisation alone stalls quickly: on trained digits MLPs every vertex it proposes raises
//!   `J`, because the quadratic part dominates. So each layer visit ends with rounds of swaps
//!   of two units' matches, every swap scored **exactly**: with `N = Mᵀ M = gram(Z, q)` for the
//!   weight moments `Z = (UᵀU, UᵀV, VᵀV)` of layer ℓ + 1, `J_{ℓ+1} = ⟨G, N⟩`, and the change of
//!   `⟨G, N⟩` under a swap of `i` and `j` involves only rows and columns `i`, `j`; summing it
//!   for all pairs takes two `d × d × d` products (`X Ẏᵀ`, `Ẋ Yᵀ` with
//!   `x_a[k] = C_AA[a, k] − C_AB[a, q(k)]`, `y_b[k] = C_BB[b, q(k)] − C_AB[k, b]`, and the dotted
//!   ones from `Z`) plus `O(1)` per pair; column `k` of `X`, `Y` depends on `q(k)` alone, so
//!   after a round that moved `m ≤ d/4` units the next round updates the products by one of
//!   inner size `4m` instead. A round applies the improving swaps of distinct units best
//!   first, each re-scored exactly after the previous ones; the rounds end when one finds
//!   none or its candidate is not accepted (it lowers `J` by less than `tolerance · J`).
//!
//! Only terms ℓ and ℓ + 1 change with `P_ℓ`, so every candidate is scored exactly in `O(d²)`:
//! `J_ℓ = tr(W_A G_ℓ W_Aᵀ) + tr(W̃ G_ℓ W̃ᵀ) − 2 Σ_i S_ℓ[i, q(i)]` and `J_{ℓ+1} = ⟨G, N⟩`, with
//! the products cached per layer visit, and kept only if `J` falls by more than
//! `tolerance · J`. `J` therefore never increases. A sweep visits every hidden permutation
//! once; the descent stops after a sweep without an accepted step (converged) or after
//! `max_iter` sweeps. Exact minimisation is a quadratic assignment problem (NP-hard): the
//! result is a local minimum for these moves, and the start matters ([`CommutativityStart`]).
//!
//! Cost: per layer visit at most four `d × d × d` products for the cache (`UᵀV` when `P_{ℓ+1}`
//! changed, `S_ℓ` and the weight bound's `W_A W̃ᵀ` when `P_{ℓ−1}` changed; `UᵀU` and
//! `VᵀV = W_Bᵀ W_B` depend on no permutation and are computed once per layer), two for the
//! Frank–Wolfe coefficient and two for the first swap round (a later round costs `O(d²)` plus a
//! `d × d × 4m` update when it follows a round that moved `m ≤ d/4` units; the Gram matrices
//! `G`, `N` it ends with, updated swap by swap, are the next round's, and its candidate's
//! `J_{ℓ+1} = ⟨G, N⟩` is read from them), in f64 (the weights are converted), plus the LAPs
//! (the feature bound's once per layer). Products run in fixed row blocks and the swap scores
//! are computed alike on any number of threads, so the result does not depend on the thread
//! count.

mod layer;
mod objective;
mod stats;
mod swaps;

use std::collections::BTreeMap;

use ndarray::Array2;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::activation::{activation_matching, ActivationMatchingOptions, Statistic};
use super::weight::{weight_matching, WeightMatchingOptions};
use super::{lap_max, par_gemm_abt_into, LapWarm};
use crate::assignment::Solver;
use crate::error::{Error, Result};
use crate::float::Float;
use crate::params::Params;
use crate::permutation::Permutation;
use crate::spec::PermutationSpec;
#[cfg(doc)]
use crate::{apply_permutations, mlp};
use layer::{CachedLayer, LayerCache};
pub use objective::{commutativity_objective, CommutativityObjective};
use objective::{
    fill_rows, gram, gram_column, gram_inner, gram_into, matmul, transpose_into, transposed,
    GramRow, Problem,
};
pub(crate) use stats::mlp_hidden_stats;
use stats::Moments;
pub use stats::{mlp_commutativity_stats, CommutativityStats};

/// Where the descent of [`commutativity_matching`] starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum CommutativityStart {
    /// All permutations the identity (B as trained).
    #[default]
    Identity,
    /// Git Re-Basin weight matching ([`weight_matching`] with the options' seed and solver).
    WeightMatching,
    /// Git Re-Basin activation matching on the statistics' cross moments
    /// ([`activation_matching`] with [`CommutativityMatchingOptions::statistic`]).
    ActivationMatching,
}

/// Options of [`commutativity_matching`], with documented defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct CommutativityMatchingOptions {
    /// Starting permutations. Default [`CommutativityStart::Identity`].
    pub start: CommutativityStart,
    /// Statistic of the activation-matching start. Default [`Statistic::Correlation`].
    pub statistic: Statistic,
    /// Maximum number of sweeps. Default 100.
    pub max_iter: usize,
    /// A step is accepted only if `J_new < J − tolerance · J` (relative; `≥ 0`). Default
    /// `1e-4`: `J` is a mean over the samples of the statistics, and gains below 0.01 % of it
    /// are far below its sampling error (on the digits MLPs `J` differs by 1–2 % between the
    /// training and the test inputs), so the swap rounds of a visit, and the sweeps, stop
    /// there instead of chasing them (on the digits MLPs of `llfc_digits` the descents take
    /// 3–4 sweeps instead of 4–9 and about half the swap rounds, and end at a `J` between 3.7 %
    /// lower and 1.5 % higher than with `1e-12`: another local minimum). A step to
    /// `J = 0` always counts, so planted permutations are still recovered exactly. Use
    /// `1e-12` to descend until no step improves `J` beyond rounding.
    pub tolerance: f64,
    /// Seed of the order in which each sweep visits the hidden layers (and of the weight
    /// matching start). Default 0.
    pub seed: u64,
    /// A fixed visiting order of the hidden layers `0..L−1` (each exactly once), used in every
    /// sweep instead of seeded orders. Default `None`.
    pub order: Option<Vec<usize>>,
    /// Linear assignment solver. Default [`Solver::default`].
    pub solver: Solver,
    /// Damped candidates tried after a rejected Frank–Wolfe vertex, with
    /// `λ_k = g · 2^{k−2}`, `k = 0, 1, …` (`g = mean_i (max_j C[i, j] − C[i, p(i)])`, the mean
    /// per-unit gap of the linearisation `C = S_ℓ + T_ℓ` at the current `p`), until one is
    /// accepted or moves nothing. Default 0 (off: on the digits MLPs, with the swap rounds,
    /// they changed no result and cost a quarter of the time); 8 is a sensible value.
    pub max_backtracks: usize,
    /// Rounds of exact pairwise swaps ([`StepKind::Swaps`]) after the Frank–Wolfe and bound
    /// candidates of each layer, until a round finds no improving swap or its candidate is not
    /// accepted. The first round of a visit costs two `d × d × d` products, a later one an
    /// update of them, plus `O(d²)` scoring. Default 50; 0 gives the LAP candidates alone.
    pub max_swap_rounds: usize,
}

impl Default for CommutativityMatchingOptions {
    fn default() -> Self {
        Self {
            start: CommutativityStart::default(),
            statistic: Statistic::default(),
            max_iter: 100,
            tolerance: 1e-4,
            seed: 0,
            order: None,
            solver: Solver::default(),
            max_backtracks: 0,
            max_swap_rounds: 50,
        }
    }
}

/// Which candidate a step of the descent scored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StepKind {
    /// The Frank–Wolfe vertex: LAP of `S_ℓ + T_ℓ` (terms ℓ and ℓ + 1 linearised).
    FrankWolfe,
    /// A damped Frank–Wolfe vertex, tried when the full one is rejected: LAP of
    /// `S_ℓ + T_ℓ + λ P_ℓ` (a bonus `λ` for keeping each current match), which moves fewer
    /// units the larger `λ` (a backtracking line search over permutations).
    Damped,
    /// The exact minimiser of term ℓ alone: LAP of `S_ℓ` (tried when the Frank–Wolfe vertex
    /// is rejected).
    LayerTerm,
    /// The minimiser of the feature factor `‖D_ℓ‖² = ‖H_A^ℓ − P_ℓ H_B^ℓ‖²` of the bound
    /// `J_{ℓ+1} ≤ ‖E_{ℓ+1}‖² ‖D_ℓ‖²`: LAP of the cross moment `C_AB` of hidden layer ℓ
    /// (activation matching with the inner-product statistic).
    FeatureBound,
    /// The minimiser of the weight factors of the bounds with the feature factors frozen:
    /// LAP of `‖D_{ℓ−1}‖² W_A^ℓ W̃ᵀ + ‖D_ℓ‖² UᵀV` (weight matching of `P_ℓ`'s two layers,
    /// weighted by what each error multiplies).
    WeightBound,
    /// A round of exact pairwise swaps (2-opt): every transposition of two units' matches is
    /// scored exactly, and the improving ones of distinct units are applied best first.
    Swaps,
}

/// One scored candidate of the descent (accepted or rejected).
#[derive(Clone, Debug, PartialEq)]
pub struct CommutativityStep {
    /// Sweep index, from 0.
    pub sweep: usize,
    /// Hidden layer ℓ whose permutation `P_ℓ` was updated.
    pub layer: usize,
    /// Which candidate.
    pub kind: StepKind,
    /// The damping `λ` of a [`StepKind::Damped`] candidate (0 otherwise).
    pub damping: f64,
    /// Units whose match the candidate changes (0: the candidate is the current permutation).
    pub moved: usize,
    /// `J` before the step.
    pub before: f64,
    /// `J` at the candidate.
    pub candidate: f64,
    /// Whether the candidate was accepted; `J` after the step is `candidate` if so, else
    /// `before`.
    pub accepted: bool,
}

impl CommutativityStep {
    /// `J` after the step.
    #[must_use]
    pub fn after(&self) -> f64 {
        if self.accepted {
            self.candidate
        } else {
            self.before
        }
    }
}

/// Result of [`commutativity_matching`].
#[derive(Clone, Debug, PartialEq)]
pub struct CommutativityMatching {
    /// `P_0 … P_{L−2}` keyed like [`PermutationSpec::mlp`] (`"P_ℓ"`): A's unit `i` ↔ B's unit
    /// `p[i]`. Apply them with [`apply_permutations`].
    pub perms: BTreeMap<String, Permutation>,
    /// `J` at the returned permutations.
    pub objective: f64,
    /// `J` at the start.
    pub initial_objective: f64,
    /// The terms `J_ℓ`, `ℓ = 0 … L − 1`, at the returned permutations (`J_0 = 0`).
    pub layer_objectives: Vec<f64>,
    /// Every scored candidate, in order.
    pub history: Vec<CommutativityStep>,
    /// Number of sweeps run.
    pub sweeps: usize,
    /// Whether the last sweep accepted no step (false if `max_iter` stopped the loop).
    pub converged: bool,
}

/// The starting permutations as index vectors `P_0 … P_{L−2}`.
fn start_perms<F: Float>(
    a: &Params<F>,
    b: &Params<F>,
    stats: &[CommutativityStats],
    options: &CommutativityMatchingOptions,
) -> Result<Vec<Vec<usize>>> {
    let layers = stats.len() + 1;
    let map = match options.start {
        CommutativityStart::Identity => {
            return Ok(stats.iter().map(|s| (0..s.units()).collect()).collect())
        }
        CommutativityStart::WeightMatching => {
            let wm = WeightMatchingOptions {
                seed: options.seed,
                solver: options.solver,
                ..WeightMatchingOptions::default()
            };
            weight_matching(&PermutationSpec::mlp(layers), a, b, &wm)?.perms
        }
        CommutativityStart::ActivationMatching => {
            let cross = stats
                .iter()
                .enumerate()
                .map(|(l, s)| (format!("P_{l}"), s.cross().clone()))
                .collect();
            let am = ActivationMatchingOptions {
                statistic: options.statistic,
                solver: options.solver,
            };
            activation_matching(&cross, &am)?
        }
    };
    Ok((0..stats.len())
        .map(|l| map[&format!("P_{l}")].as_slice().to_vec())
        .collect())
}

/// Check the tolerance and the visiting order.
fn check_options(options: &CommutativityMatchingOptions, hidden: usize) -> Result<()> {
    if !(options.tolerance >= 0.0 && options.tolerance.is_finite()) {
        return Err(Error::InvalidArgument {
            name: "tolerance",
            reason: format!("must be finite and ≥ 0, got {}", options.tolerance),
        });
    }
    if let Some(order) = &options.order {
        let mut sorted = order.clone();
        sorted.sort_unstable();
        if sorted != (0..hidden).collect::<Vec<_>>() {
            return Err(Error::InvalidArgument {
                name: "order",
                reason: format!("must list the hidden layers 0..{hidden} once each, got {order:?}"),
            });
        }
    }
    Ok(())
}

/// Commutativity matching of B onto A: coordinate descent on `J(π)` (see the
/// [module docs](self)) from the start chosen in `options`, using the second moments `stats`
/// of every hidden layer's features (e.g. from [`mlp_commutativity_stats`]). `a` and `b` are
/// MLPs named like [`mlp`] (`layers.{ℓ}.weight`, `layers.{ℓ}.bias`).
///
/// `J` never increases along the descent: every candidate is scored exactly and kept only if
/// it lowers `J` (see [`CommutativityMatching::history`]).
///
/// # Errors
/// What [`mlp::widths`] reports for either model (malformed MLP, NaN/±∞ weights);
/// [`Error::ShapeMismatch`] if A and B differ in widths or `stats` does not hold one entry
/// per hidden layer with its width (a wrong number of layers); [`Error::EmptyInput`] if a
/// layer's statistics saw no sample or the MLP has no hidden layer;
/// [`Error::InvalidArgument`] for a bad `tolerance` or `order`; what the start's matching
/// reports.
///
/// # Examples
/// ```
/// use llfc::matching::commutativity::{
///     commutativity_matching, mlp_commutativity_stats, CommutativityMatchingOptions,
/// };
/// use llfc::{apply_permutations, mlp, Permutation, PermutationSpec};
/// use rand::SeedableRng;
/// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
/// let a = mlp::init::<f64, _>(&[4, 8, 8, 3], &mut rng)?;
/// let spec = PermutationSpec::mlp(3);
/// let planted = spec.perm_sizes(&a)?.into_iter()
///     .map(|(k, n)| (k, Permutation::random(n, &mut rng))).collect();
/// let b = apply_permutations(&spec, &planted, &a)?;
/// let x = ndarray::Array2::from_shape_fn((50, 4), |(i, j)| ((i * 7 + j * 3) % 11) as f64 - 5.0);
/// let stats = mlp_commutativity_stats(&a, &b, x.view())?;
/// let m = commutativity_matching(&a, &b, &stats, &CommutativityMatchingOptions::default())?;
/// assert!(m.objective <= m.initial_objective);
/// assert!(m.history.iter().all(|s| s.after() <= s.before));
/// # Ok::<(), llfc::Error>(())
/// ```
pub fn commutativity_matching<F: Float>(
    a: &Params<F>,
    b: &Params<F>,
    stats: &[CommutativityStats],
    options: &CommutativityMatchingOptions,
) -> Result<CommutativityMatching> {
    let problem = Problem::new(a, b, stats)?;
    let hidden = stats.len();
    if hidden == 0 {
        return Err(Error::EmptyInput {
            what: "hidden layers of the MLP (commutativity matching needs at least one)".into(),
        });
    }
    check_options(options, hidden)?;
    let mut perms = start_perms(a, b, stats, options)?;
    let mut terms: Vec<f64> = (0..problem.layers())
        .map(|l| problem.term(&perms, l))
        .collect();
    let initial_objective: f64 = terms.iter().sum();
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    // The last LAP of `S_ℓ` per layer, to warm-start the next (after `P_{ℓ−1}` changed).
    let mut term_warm: Vec<Option<LapWarm>> = vec![None; hidden];
    let mut bound_laps: Vec<BoundLaps> = (0..hidden).map(|_| BoundLaps::default()).collect();
    let mut caches: Vec<Option<CachedLayer<'_>>> = (0..hidden).map(|_| None).collect();
    // Per layer: what its last visit's swap rounds left, and the `P_{ℓ+1}` it was made at.
    let mut carry: Vec<Option<(Option<Vec<usize>>, swaps::Carried)>> =
        (0..hidden).map(|_| None).collect();
    let (mut history, mut sweeps, mut converged) = (Vec::new(), 0, false);
    while sweeps < options.max_iter {
        let order = options.order.clone().unwrap_or_else(|| {
            let mut o: Vec<usize> = (0..hidden).collect();
            o.shuffle(&mut rng);
            o
        });
        let mut accepted_any = false;
        for l in order {
            let CachedLayer {
                cache, layer_term, ..
            } = CachedLayer::get(&mut caches[l], &problem, &perms, l);
            let cache = &*cache;
            let coef = cache.frank_wolfe(&perms[l]);
            let mut candidates = Vec::new();
            // Solved cold: the linearisation changes too much between visits for the last
            // solution's duals to help (on llfc_digits' wide net, warm starts made these LAPs
            // slower: all its matching LAPs took 0.76 s warm, 0.61 s cold).
            let (vertex, _) = lap_max(coef.view(), options.solver, None)?;
            candidates.push((StepKind::FrankWolfe, 0.0, Some(vertex)));
            let gap = mean_gap(&coef, &perms[l]);
            for k in 0..options.max_backtracks {
                #[allow(clippy::cast_possible_wrap, clippy::cast_possible_truncation)]
                let damping = gap * 2f64.powi(k as i32 - 2);
                candidates.push((StepKind::Damped, damping, None));
            }
            if l > 0 {
                candidates.push((StepKind::LayerTerm, 0.0, None));
            }
            let mut damped_done = false;
            for (kind, damping, vertex) in candidates {
                if kind == StepKind::Damped && damped_done {
                    continue;
                }
                let cand = match (kind, vertex) {
                    (_, Some(v)) => v,
                    (StepKind::LayerTerm, None) => {
                        if layer_term.is_none() {
                            let s = cache.s.as_ref().expect("ℓ > 0 has a layer term");
                            let (p, sol) =
                                lap_max(s.view(), options.solver, term_warm[l].as_ref())?;
                            term_warm[l] = Some(sol);
                            *layer_term = Some(p);
                        }
                        layer_term.clone().expect("solved above")
                    }
                    _ => {
                        let mut c = coef.clone();
                        for (i, &j) in perms[l].iter().enumerate() {
                            c[[i, j]] += damping;
                        }
                        lap_max(c.view(), options.solver, None)?.0
                    }
                };
                let step = try_step(cache, &mut perms, &mut terms, l, cand.into_vec(), options);
                let (accepted, moved) = (step.accepted, step.moved);
                history.push(CommutativityStep {
                    sweep: sweeps,
                    kind,
                    damping,
                    ..step
                });
                if accepted {
                    accepted_any = true;
                    break;
                }
                damped_done |= kind == StepKind::Damped && moved == 0;
            }
            let state = (&mut perms[..], &mut terms[..]);
            for step in bound_steps(cache, state, l, options, &mut bound_laps[l])? {
                accepted_any |= step.accepted;
                history.push(CommutativityStep {
                    sweep: sweeps,
                    ..step
                });
            }
            let carried = match carry[l].take() {
                Some((after, c)) if after.as_deref() == perms.get(l + 1).map(Vec::as_slice) => {
                    Some(c)
                }
                _ => None,
            };
            let mut visit = swaps::Visit::new(cache, carried);
            for _ in 0..options.max_swap_rounds {
                let Some((cand, next)) = swaps::swap_round(&mut visit, &perms[l]) else {
                    break;
                };
                let score = |c: &[usize]| (cache.own_term(c), next);
                let step = step_to(&mut perms, &mut terms, l, cand, score, options);
                let accepted = step.accepted;
                history.push(CommutativityStep {
                    sweep: sweeps,
                    kind: StepKind::Swaps,
                    ..step
                });
                if !accepted {
                    break;
                }
                accepted_any = true;
            }
            carry[l] = visit.finish().map(|c| (perms.get(l + 1).cloned(), c));
        }
        sweeps += 1;
        if !accepted_any {
            converged = true;
            break;
        }
    }
    let objective = terms.iter().sum();
    Ok(CommutativityMatching {
        perms: perms
            .into_iter()
            .enumerate()
            .map(|(l, p)| (format!("P_{l}"), Permutation::new(p).expect("from LAPs")))
            .collect(),
        objective,
        initial_objective,
        layer_objectives: terms,
        history,
        sweeps,
        converged,
    })
}

/// `mean_i (max_j C[i, j] − C[i, p(i)])`: how far the current permutation is from the
/// linearisation's optimum per unit, the scale of the damping.
fn mean_gap(coef: &Array2<f64>, p: &[usize]) -> f64 {
    let total: f64 = coef
        .rows()
        .into_iter()
        .zip(p)
        .map(|(row, &j)| row.iter().copied().fold(f64::NEG_INFINITY, f64::max) - row[j])
        .sum();
    #[allow(clippy::cast_precision_loss)]
    let n = p.len().max(1) as f64;
    total / n
}

/// What the bound candidates of one layer keep across sweeps.
#[derive(Default)]
struct BoundLaps {
    /// The feature-bound permutation (it depends on the layer's moments only: solved once).
    features: Option<Vec<usize>>,
    /// The last weight-bound LAP, to warm-start the next.
    weights: Option<LapWarm>,
}

/// The bound candidates of `P_l` ([`StepKind::FeatureBound`], then
/// [`StepKind::WeightBound`]), each scored exactly from the state the previous one left and
/// kept only if `J` decreases; returns their steps (sweep 0, set by the caller).
fn bound_steps(
    cache: &LayerCache<'_>,
    (perms, terms): (&mut [Vec<usize>], &mut [f64]),
    l: usize,
    options: &CommutativityMatchingOptions,
    laps: &mut BoundLaps,
) -> Result<[CommutativityStep; 2]> {
    let features = match laps.features.take() {
        Some(p) => p,
        None => lap_max(cache.c.ab.view(), options.solver, None)?
            .0
            .into_vec(),
    };
    laps.features = Some(features.clone());
    let first = CommutativityStep {
        kind: StepKind::FeatureBound,
        ..try_step(cache, perms, terms, l, features, options)
    };
    let coef = cache.weight_bound(&perms[l]);
    let (vertex, sol) = lap_max(coef.view(), options.solver, laps.weights.as_ref())?;
    laps.weights = Some(sol);
    let second = CommutativityStep {
        kind: StepKind::WeightBound,
        ..try_step(cache, perms, terms, l, vertex.into_vec(), options)
    };
    Ok([first, second])
}

/// Score `P_l ← cand` exactly (terms `l` and `l + 1`) and keep it if `J` decreases enough.
/// Returns the step with `sweep` 0 and kind [`StepKind::FrankWolfe`] (set by the caller).
fn try_step(
    cache: &LayerCache<'_>,
    perms: &mut [Vec<usize>],
    terms: &mut [f64],
    l: usize,
    cand: Vec<usize>,
    options: &CommutativityMatchingOptions,
) -> CommutativityStep {
    step_to(perms, terms, l, cand, |c| cache.terms(c), options)
}

/// [`try_step`] with the candidate's terms `(J_l, J_{l+1})` from `score` (called only if the
/// candidate moves a unit).
fn step_to(
    perms: &mut [Vec<usize>],
    terms: &mut [f64],
    l: usize,
    cand: Vec<usize>,
    score: impl FnOnce(&[usize]) -> (f64, f64),
    options: &CommutativityMatchingOptions,
) -> CommutativityStep {
    let before: f64 = terms.iter().sum();
    let moved = cand.iter().zip(&perms[l]).filter(|(x, y)| x != y).count();
    let mut step = CommutativityStep {
        sweep: 0,
        layer: l,
        kind: StepKind::FrankWolfe,
        damping: 0.0,
        moved,
        before,
        candidate: before,
        accepted: false,
    };
    if moved == 0 {
        return step;
    }
    let mut new_terms = terms.to_vec();
    (new_terms[l], new_terms[l + 1]) = score(&cand);
    step.candidate = new_terms.iter().sum();
    if step.candidate < before - options.tolerance * before.abs() {
        terms.copy_from_slice(&new_terms);
        perms[l] = cand;
        step.accepted = true;
    }
    step
}
