//! Analyses of pairs of models that need a LAPACK backend (feature `linalg`).
//!
//! - [`subspace`]: principal angles between subspaces (as `scipy.linalg.subspace_angles`),
//!   between the top singular subspaces of two models' weights and between the principal
//!   subspaces of their features (Zhou et al. 2023, *Going Beyond Linear Mode Connectivity:
//!   The Layerwise Linear Feature Connectivity*).

pub mod subspace;
