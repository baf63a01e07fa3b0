//! Dense matrix products of the matching modules.
//!
//! `out ← β·out + L R` runs on the pure-Rust kernels of the [`gemm`](https://docs.rs/gemm)
//! family for f32 and f64 (`gemm-f32`, `gemm-f64`, called directly so that builds skip the
//! complex-number kernels llfc never uses). They pick their micro-kernel at run time (AVX-512,
//! AVX2/FMA, NEON, scalar), and on an AVX-512 machine they are about twice as fast per core as
//! ndarray's default `matrixmultiply` (73 against 40 GFLOP/s for a 2048³ f64 product on one
//! core of the development machine; see `BENCHMARKS.md`). With the `blas` feature the product goes through ndarray's
//! `general_mat_mul`, i.e. the BLAS the user links.
//!
//! The product is single-threaded: callers split their work into fixed blocks and run the blocks
//! in parallel, so every entry is computed by the same arithmetic whatever the thread count.

use ndarray::{ArrayView2, ArrayViewMut2, Axis};

use crate::float::Float;

/// `out ← β·out + L R` for `L: [m, k]`, `R: [k, n]`, `out: [m, n]`, any strides, computed in `F`.
/// With `β = 0` the previous contents of `out` are not read (NaN there does not propagate).
///
/// # Panics
/// If the shapes do not agree (a programming error inside the crate).
pub(crate) fn mat_mul_into<F: Float>(
    l: ArrayView2<'_, F>,
    r: ArrayView2<'_, F>,
    beta: F,
    mut out: ArrayViewMut2<'_, F>,
) {
    let (m, k) = l.dim();
    let n = r.ncols();
    assert_eq!(r.nrows(), k, "inner dimensions of a product");
    assert_eq!(out.dim(), (m, n), "shape of a product's output");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if beta == F::zero() {
            out.fill(F::zero());
        } else {
            out.mapv_inplace(|v| v * beta);
        }
        return;
    }
    if cfg!(feature = "blas") || !matches!(F::DTYPE, "float32" | "float64") {
        ndarray::linalg::general_mat_mul(F::one(), &l, &r, beta, &mut out);
        return;
    }
    // The micro-kernels prefer a column-major destination: transpose the problem
    // (outᵀ = Rᵀ Lᵀ) when `out` is row-major, then make every stride the kernels walk
    // non-negative by reversing axes in pairs (reversing `out`'s rows reverses `L`'s rows, and so
    // on), which leaves the product unchanged.
    let (mut l, mut r, mut out) = if out.strides()[1].abs() < out.strides()[0].abs() {
        (r.reversed_axes(), l.reversed_axes(), out.reversed_axes())
    } else {
        (l, r, out)
    };
    if out.strides()[0] < 0 {
        out.invert_axis(Axis(0));
        l.invert_axis(Axis(0));
    }
    if out.strides()[1] < 0 {
        out.invert_axis(Axis(1));
        r.invert_axis(Axis(1));
    }
    if l.strides()[1] < 0 {
        l.invert_axis(Axis(1));
        r.invert_axis(Axis(0));
    }
    let (m, n) = out.dim();
    let (ls, rs, os) = (l.strides(), r.strides(), out.strides());
    let (ls, rs, os) = ([ls[0], ls[1]], [rs[0], rs[1]], [os[0], os[1]]);
    let read_dst = beta != F::zero();
    let (dst, lhs, rhs) = (out.as_mut_ptr(), l.as_ptr(), r.as_ptr());
    let parallelism = gemm_common::Parallelism::None;
    // SAFETY: the kernels read `lhs` at `ptr + i·ls[0] + p·ls[1]` for `i < m`, `p < k`, `rhs`
    // alike for `p < k`, `j < n`, and read (when `read_dst`) and write `dst` for `i < m`,
    // `j < n`. Each pointer and its strides come from a live ndarray view of exactly those
    // dimensions (`as_ptr` is the element at index `[0, 0]`), so every access is in bounds. `out`
    // is a unique mutable borrow, so it aliases neither `l` nor `r`. The casts are identities:
    // `F::DTYPE` names the element type, checked by each arm.
    #[allow(unsafe_code)]
    unsafe {
        match F::DTYPE {
            "float64" => gemm_f64::gemm::f64::get_gemm_fn()(
                m,
                n,
                k,
                dst.cast::<f64>(),
                os[1],
                os[0],
                read_dst,
                lhs.cast::<f64>(),
                ls[1],
                ls[0],
                rhs.cast::<f64>(),
                rs[1],
                rs[0],
                beta.as_f64(),
                1.0,
                false,
                false,
                false,
                parallelism,
            ),
            _ => gemm_f32::gemm::f32::get_gemm_fn()(
                m,
                n,
                k,
                dst.cast::<f32>(),
                os[1],
                os[0],
                read_dst,
                lhs.cast::<f32>(),
                ls[1],
                ls[0],
                rhs.cast::<f32>(),
                rs[1],
                rs[0],
                beta.as_f64() as f32,
                1.0,
                false,
                false,
                false,
                parallelism,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::mat_mul_into;
    use ndarray::{s, Array2, Axis, ShapeBuilder};

    /// Naive triple loop in f64, the independent reference.
    fn naive(l: &Array2<f64>, r: &Array2<f64>) -> Array2<f64> {
        let (m, k) = l.dim();
        Array2::from_shape_fn((m, r.ncols()), |(i, j)| {
            (0..k).map(|p| l[[i, p]] * r[[p, j]]).sum()
        })
    }

    fn filled(m: usize, n: usize, seed: usize) -> Array2<f64> {
        Array2::from_shape_fn((m, n), |(i, j)| {
            (((i * 31 + j * 17 + seed * 7) % 23) as f64 - 11.0) / 7.0
        })
    }

    #[test]
    fn products_match_a_naive_loop_for_every_layout() {
        // Entries are small integers over 7, so every product sum is exact to ~1e-13: the
        // tolerance 1e-10 only absorbs summation order.
        for &(m, k, n) in &[(1, 1, 1), (7, 5, 3), (65, 33, 70), (130, 9, 200), (3, 0, 4)] {
            let l = filled(m, k, 1);
            let r = filled(k, n, 2);
            let want = naive(&l, &r);
            // Row-major, transposed (column-major) and negatively strided operands.
            let lt = l.t().to_owned();
            let rt = r.t().to_owned();
            let l_rev = l.slice(s![.., ..;-1]).to_owned();
            let l_views = [l.view(), lt.t(), l_rev.slice(s![.., ..;-1])];
            for lv in &l_views {
                for rv in [r.view(), rt.t()] {
                    let mut out = Array2::from_elem((m, n), f64::NAN);
                    mat_mul_into(lv.view(), rv, 0.0, out.view_mut());
                    assert!(out.iter().zip(&want).all(|(a, b)| (a - b).abs() <= 1e-10));
                    // β = 2: out ← 2·out + L R.
                    let mut acc = Array2::from_elem((m, n), 1.5);
                    mat_mul_into(lv.view(), rv, 2.0, acc.view_mut());
                    assert!(acc
                        .iter()
                        .zip(&want)
                        .all(|(a, b)| (a - (3.0 + b)).abs() <= 1e-10));
                }
            }
            // Outputs of every layout: row-major, column-major, and negatively strided rows,
            // columns or both (the kernels are handed the transposed or reversed problem).
            for (flip_rows, flip_cols, fortran) in [
                (false, false, true),
                (true, false, false),
                (false, true, false),
                (true, true, true),
            ] {
                let mut out = if fortran {
                    Array2::<f64>::zeros((m, n).f())
                } else {
                    Array2::<f64>::zeros((m, n))
                };
                let mut view = out.view_mut();
                if flip_rows {
                    view.invert_axis(Axis(0));
                }
                if flip_cols {
                    view.invert_axis(Axis(1));
                }
                let r_rev = r.slice(s![..;-1, ..]).to_owned();
                mat_mul_into(
                    l_rev.slice(s![.., ..;-1]),
                    r_rev.slice(s![..;-1, ..]),
                    0.0,
                    view,
                );
                let mut got = out.view();
                if flip_rows {
                    got.invert_axis(Axis(0));
                }
                if flip_cols {
                    got.invert_axis(Axis(1));
                }
                assert!(got.iter().zip(&want).all(|(a, b)| (a - b).abs() <= 1e-10));
            }
        }
    }

    #[test]
    fn f32_products_match_the_f64_reference() {
        let (l, r) = (filled(40, 300, 3), filled(300, 50, 4));
        let want = naive(&l, &r);
        let mut out = Array2::<f32>::zeros((40, 50));
        mat_mul_into(
            l.mapv(|v| v as f32).view(),
            r.mapv(|v| v as f32).view(),
            0.0,
            out.view_mut(),
        );
        // f32 products of 300 terms of magnitude ≤ 2.3: error ≤ 300 · 2⁻²⁴ · Σ|terms| ≈ 1e-2
        // in the worst case; 1e-3 relative to the largest entry is ample in practice.
        let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(out
            .iter()
            .zip(&want)
            .all(|(a, b)| (f64::from(*a) - b).abs() <= 1e-3 * scale));
    }
}
