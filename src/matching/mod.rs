//! Permutation matching of model B onto model A (Ainsworth et al. 2023, *Git Re-Basin*).
//!
//! - [`weight`]: weight matching, coordinate ascent on `⟨θ_A, π(θ_B)⟩` over a
//!   [`PermutationSpec`](crate::PermutationSpec);
//! - [`activation`]: activation matching from streaming feature statistics;
//! - `cca` (feature `linalg`): CCA alignment (Horoi et al. 2024), invertible linear maps
//!   instead of permutations;
//! - [`structured`]: the exact steps for head-structured and embedded permutations.
//!
//! Both return permutations keyed by the spec's permutation names, to be applied to B with
//! [`apply_permutations`](crate::apply_permutations).

pub mod activation;
#[cfg(feature = "linalg")]
pub mod cca;
pub mod commutativity;
pub mod structured;
pub mod weight;

use ndarray::{Array2, ArrayView2, ArrayViewMut2, Axis};

use crate::assignment::{linear_sum_assignment_warm, solve_with, Assignment, LapOptions, Solver};
use crate::error::{Error, Result};
pub(crate) use crate::float::max_abs;
use crate::float::Float;
use crate::matmul::mat_mul_into;
use crate::permutation::Permutation;

/// A previous LAP solution used to warm-start the next one.
pub(crate) type LapWarm = Assignment;

/// Solve `max_p Σ_i S[i, p(i)]` on a square similarity matrix, warm-started when possible.
pub(crate) fn lap_max(
    s: ArrayView2<'_, f64>,
    solver: Solver,
    prior: Option<&LapWarm>,
) -> Result<(Permutation, LapWarm)> {
    let sol = match (solver, prior) {
        (Solver::Native, Some(prev)) if prev.duals.is_some() => {
            linear_sum_assignment_warm(s, true, prev)?
        }
        _ => solve_with(
            s,
            true,
            &LapOptions {
                solver,
                ..LapOptions::default()
            },
        )?,
    };
    let perm = sol.permutation().ok_or_else(|| Error::InvalidArgument {
        name: "similarity",
        reason: "matching needs a square similarity matrix".into(),
    })?;
    Ok((perm, sol))
}

/// Rows per block of the parallel products with `n` output rows: about `n / 8` (at least 64,
/// a multiple of 8), so that the right-hand side is packed only ~8 times per product while two
/// to eight threads stay busy. It depends on `n` only, never on the thread count, so every entry
/// is computed by the same arithmetic whatever the number of threads.
fn block_rows(n: usize) -> usize {
    n.div_ceil(8).next_multiple_of(8).max(64)
}

/// `out ← β·out + X Yᵀ` for `X: [n, k]`, `Y: [m, k]`, `out: [n, m]`, multiplied in `F` with
/// the crate's GEMM (`crate::matmul`) straight into `out` (no temporary, no copy of `Y`): fixed
/// blocks of [`block_rows`] rows of `X` and `out` run in parallel with the `rayon` feature.
pub(crate) fn par_gemm_abt_into<F: Float>(
    x: ArrayView2<'_, F>,
    y: ArrayView2<'_, F>,
    beta: F,
    out: &mut Array2<F>,
) {
    par_gemm_rows(x, y.t(), beta, out);
}

/// `out ← β·out + L R` over fixed row blocks of `L` and `out`.
fn par_gemm_rows<F: Float>(
    l: ArrayView2<'_, F>,
    r: ArrayView2<'_, F>,
    beta: F,
    out: &mut Array2<F>,
) {
    debug_assert_eq!(out.dim(), (l.nrows(), r.ncols()));
    debug_assert_eq!(l.ncols(), r.nrows());
    let block = |(o, ls): (ArrayViewMut2<'_, F>, ArrayView2<'_, F>)| {
        mat_mul_into(ls, r, beta, o);
    };
    let rows = block_rows(l.nrows());
    let pairs = out
        .axis_chunks_iter_mut(Axis(0), rows)
        .zip(l.axis_chunks_iter(Axis(0), rows));
    #[cfg(feature = "rayon")]
    {
        use rayon::prelude::*;
        let v: Vec<_> = pairs.collect();
        v.into_par_iter().for_each(block);
    }
    #[cfg(not(feature = "rayon"))]
    pairs.for_each(block);
}

/// Whether sums of `terms` products of `inner` pairwise products of values bounded by `max_a`
/// and `max_b` in magnitude can overflow `F` (with a factor 4 of headroom for the differences
/// and partial sums the matching loops form). Such inputs are computed in f64 instead, or
/// refused when even f64 overflows: a finite model never yields a NaN cost.
pub(crate) fn products_may_overflow<F: Float>(
    max_a: f64,
    max_b: f64,
    inner: usize,
    terms: usize,
) -> bool {
    #[allow(clippy::cast_precision_loss)]
    let bound = max_a * max_b * (inner.max(1) as f64) * (terms.max(1) as f64) * 4.0;
    // NaN never arises from finite inputs; counted as overflow all the same.
    bound.is_nan() || bound >= F::max_value().as_f64()
}
