//! # llfc — linear connectivity of neural networks
//!
//! `llfc` studies and exploits the *linear connectivity* of trained neural networks, as pure
//! functions over [`ndarray`] weight and feature tensors:
//!
//! - [`Permutation`]s of hidden units, applied to whole models through a [`PermutationSpec`]
//!   (which axes of which parameters each permutation acts on: MLPs, VGG-style CNNs, ResNet-20
//!   with shared residual permutations, BatchNorm vectors), validated against the model;
//! - [`Params`], an ordered `state_dict` with interpolation, permutation, inner products and
//!   distances;
//! - linear assignment ([`assignment`]) on floating-point costs, with exact warm starts;
//! - weight matching and activation matching ([`matching`], Git Re-Basin), which permute B
//!   towards A;
//! - the LLFC measurements ([`metrics`]): per-layer cosine distances to the interpolated
//!   features, the A-vs-B baseline, the scale factor, weak additivity of ReLU and
//!   commutativity residuals; loss/error curves and barriers along `θ(α)` ([`lmc`]);
//! - interpolation repair ([`repair`]): REPAIR's renormalisation of θ(α)'s units, folded
//!   into the producing layers, and the BatchNorm running-statistics reset;
//! - reading and writing `.npz` / `.safetensors` checkpoints (`io`, feature `io`);
//! - a reference ReLU MLP ([`mlp`]) with per-layer features and seeded SGD training, and the
//!   bundled digits data ([`data`]);
//! - with the `linalg` feature: principal angles between weight and feature subspaces
//!   (`analysis::subspace`) and CCA alignment (`matching::cca`), on LAPACK.
//!
//! ## Conventions
//! - Tensors use the PyTorch layout: a linear weight is `[out, in]`, a conv weight
//!   `[out, in, kh, kw]`, a bias or norm vector `[out]`. Features are `[samples, units]`.
//! - A permutation `p` maps model A's unit `i` to model B's unit `p[i]`; permuting B applies
//!   `W ← W[p, :]`, `b ← b[p]` to the producing layer and `W_next ← W_next[:, p]` to the consuming
//!   one. Matching always permutes **B towards A**.
//! - Interpolation is `θ(α) = α θ_A + (1 − α) θ_B`, so `α = 1` is A (as in the LLFC paper).
//!
//! ## Quick start
//! ```
//! use llfc::{apply_permutations, mlp, Params, Permutation, PermutationSpec};
//! use rand::SeedableRng;
//! use std::collections::BTreeMap;
//!
//! let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
//! // A 4-16-16-3 ReLU MLP with PyTorch names `layers.{i}.weight` / `layers.{i}.bias`.
//! let params: Params<f64> = mlp::init(&[4, 16, 16, 3], &mut rng)?;
//! let spec = PermutationSpec::mlp(3);
//! spec.validate(&params)?;
//! // Permute both hidden layers at random: the network computes the same function.
//! let perms: BTreeMap<String, Permutation> = spec
//!     .perm_sizes(&params)?
//!     .into_iter()
//!     .map(|(name, n)| (name, Permutation::random(n, &mut rng)))
//!     .collect();
//! let permuted = apply_permutations(&spec, &perms, &params)?;
//! let x = ndarray::Array2::from_shape_fn((5, 4), |(i, j)| (i as f64 - j as f64) / 3.0);
//! let (y0, y1) = (mlp::forward(&params, &x)?, mlp::forward(&permuted, &x)?);
//! assert!(y0.iter().zip(&y1).all(|(a, b)| (a - b).abs() < 1e-12));
//!
//! // Matching permutes B towards A, so aligning `permuted` (B) to `params` (A) recovers the
//! // *inverses* of the planted permutations: B's unit p[i] is A's unit i.
//! let options = llfc::matching::weight::WeightMatchingOptions::default();
//! let m = llfc::matching::weight::weight_matching(&spec, &params, &permuted, &options)?;
//! assert!(perms.iter().all(|(name, p)| m.perms[name] == p.inverse()));
//! # Ok::<(), llfc::Error>(())
//! ```
//!
//! ## Cargo features
//! - `rayon` (default): parallelism across layers and parameters; without it everything runs
//!   sequentially with identical results.
//! - `io` (default): `.npz` and `.safetensors` reading and writing, pure Rust.
//! - `serde`: JSON (de)serialisation of [`PermutationSpec`] and [`Permutation`].
//! - `blas`: passes through `ndarray/blas`; the user links a BLAS implementation of their choice,
//!   and the matching modules' products go through it. Without it they run on the pure-Rust
//!   `gemm` crate, which picks AVX-512, AVX2 or NEON kernels at run time.
//! - `linalg`: principal angles (`analysis::subspace`) and CCA alignment (`matching::cca`) on
//!   LAPACK through `ndarray-linalg`, which needs a LAPACK backend. The crate never picks one:
//!   `linalg-openblas-system` adds ndarray-linalg's `openblas-system` backend (the system
//!   OpenBLAS, `apt-get install libopenblas-dev liblapack-dev`); with `linalg` alone, add
//!   `ndarray-linalg = { version = "0.18", features = ["<backend>"] }` (e.g. `netlib-system`,
//!   `intel-mkl-system`) to your own `Cargo.toml`, and Cargo links that one.
//!
//! ## Papers
//! - Zhou, Yang, Yang, Yan, Hu. *Going Beyond Linear Mode Connectivity: The Layerwise Linear
//!   Feature Connectivity.* NeurIPS 2023.
//! - Ainsworth, Hayase, Srinivasa. *Git Re-Basin: Merging Models modulo Permutation
//!   Symmetries.* ICLR 2023.
//! - Frankle, Dziugaite, Roy, Carbin. *Linear Mode Connectivity and the Lottery Ticket
//!   Hypothesis.* ICML 2020.
//! - Jordan, Sedghi, Saukh, Entezari, Neyshabur. *REPAIR: REnormalizing Permuted Activations
//!   for Interpolation Repair.* ICLR 2023.
//! - Entezari, Sedghi, Saukh, Neyshabur. *The Role of Permutation Invariance in Linear Mode
//!   Connectivity of Neural Networks.* ICLR 2022.
//! - Horoi, Camacho, Belilovsky, Wolf. *Harmony in Diversity: Merging Neural Networks with
//!   Canonical Correlation Analysis.* ICML 2024 (feature `linalg`).
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "linalg")]
pub mod analysis;
pub mod assignment;
pub mod data;
pub mod error;
pub mod float;
#[cfg(feature = "io")]
pub mod io;
#[cfg(any(feature = "io", feature = "serde"))]
mod json_keys;
#[cfg(feature = "linalg")]
mod linalg;
pub mod lmc;
pub mod matching;
mod matmul;
pub mod metrics;
pub mod mlp;
pub mod params;
pub mod permutation;
pub mod repair;
pub mod spec;

pub use error::{Error, Result};
pub use float::Float;
pub use params::{apply_permutations, Params};
pub use permutation::{permute_axis, Permutation};
pub use spec::PermutationSpec;

/// The most used items, for `use llfc::prelude::*`.
pub mod prelude {
    pub use crate::error::{Error, Result};
    pub use crate::float::Float;
    pub use crate::params::{apply_permutations, Params};
    pub use crate::permutation::{permute_axis, Permutation};
    pub use crate::spec::PermutationSpec;
}
