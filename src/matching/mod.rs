//! Permutation matching of model B onto model A (Ainsworth et al. 2023, *Git Re-Basin*).
//!
//! - [`weight`]: weight matching, coordinate ascent on `⟨θ_A, π(θ_B)⟩` over a
//!   [`PermutationSpec`](crate::PermutationSpec);
//! - [`activation`]: activation matching from streaming feature statistics.
//!
//! Both return permutations keyed by the spec's permutation names, to be applied to B with
//! [`apply_permutations`](crate::apply_permutations).

pub mod activation;
pub mod weight;

use ndarray::{Array2, ArrayView2};

use crate::assignment::{linear_sum_assignment_warm, solve_with, Assignment, LapOptions, Solver};
use crate::error::{Error, Result};
use crate::float::Float;
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
        _ => solve_with(s, true, &LapOptions { solver })?,
    };
    let perm = sol.permutation().ok_or_else(|| Error::InvalidArgument {
        name: "similarity",
        reason: "matching needs a square similarity matrix".into(),
    })?;
    Ok((perm, sol))
}

/// Rows per block of the parallel products. Fixed (not derived from the thread count) so that
/// every entry is computed by the same arithmetic whatever the number of threads.
const BLOCK_ROWS: usize = 128;

/// `X Yᵀ` for `X: [n, k]`, `Y: [m, k]`, multiplied in `F`, returned in f64; row blocks of `X`
/// run in parallel with the `rayon` feature.
pub(crate) fn par_gemm_abt<F: Float>(x: ArrayView2<'_, F>, y: ArrayView2<'_, F>) -> Array2<f64> {
    let n = x.nrows();
    let mut out = Array2::<f64>::zeros((n, y.nrows()));
    let yt = y.t();
    let block = |(mut o, xs): (ndarray::ArrayViewMut2<'_, f64>, ArrayView2<'_, F>)| {
        let prod = xs.dot(&yt);
        ndarray::Zip::from(&mut o)
            .and(&prod)
            .for_each(|o, &p| *o = p.as_f64());
    };
    let pairs = out
        .axis_chunks_iter_mut(ndarray::Axis(0), BLOCK_ROWS)
        .zip(x.axis_chunks_iter(ndarray::Axis(0), BLOCK_ROWS));
    #[cfg(feature = "rayon")]
    {
        use rayon::prelude::*;
        let v: Vec<_> = pairs.collect();
        v.into_par_iter().for_each(block);
    }
    #[cfg(not(feature = "rayon"))]
    pairs.for_each(block);
    out
}

/// `Xᵀ Y` for `X: [k, n]`, `Y: [k, m]` (samples in rows), multiplied in `F`, returned in f64.
pub(crate) fn par_gemm_atb<F: Float>(x: ArrayView2<'_, F>, y: ArrayView2<'_, F>) -> Array2<f64> {
    let xt = x.t().as_standard_layout().into_owned();
    let yt = y.t().as_standard_layout().into_owned();
    par_gemm_abt(xt.view(), yt.view())
}
