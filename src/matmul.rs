//! Dense matrix products of the matching modules.
//!
//! `out ← β·out + L R` runs on the pure-Rust [`gemm`](https://docs.rs/gemm) crate for f32 and
//! f64: it picks its micro-kernel at run time (AVX-512, AVX2/FMA, NEON, scalar), and on an
//! AVX-512 machine it is about twice as fast per core as ndarray's default `matrixmultiply`
//! (73 against 40 GFLOP/s for a 2048³ f64 product on one core of the development machine; see
//! `BENCHMARKS.md`). With the `blas` feature the product goes through ndarray's
//! `general_mat_mul`, i.e. the BLAS the user links.
//!
//! The product is single-threaded: callers split their work into fixed blocks and run the blocks
//! in parallel, so every entry is computed by the same arithmetic whatever the thread count.

use ndarray::{ArrayView2, ArrayViewMut2};

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
    let (ls, rs) = (l.strides(), r.strides());
    let os = [out.strides()[0], out.strides()[1]];
    let read_dst = beta != F::zero();
    // SAFETY: `gemm` reads `l` at `ptr + i·ls[0] + p·ls[1]` for `i < m`, `p < k`, `r` alike for
    // `p < k`, `j < n`, and reads (when `read_dst`) and writes `out` for `i < m`, `j < n`. Each
    // pointer and its strides come from a live ndarray view of exactly those dimensions (ndarray's
    // `as_ptr` is the element at index `[0, 0]`, negative strides included), so every access is in
    // bounds. `out` is a unique mutable borrow, so it aliases neither `l` nor `r`. `F` is f32 or
    // f64 here (checked above), the element types `gemm` dispatches on.
    #[allow(unsafe_code)]
    unsafe {
        ::gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            os[1],
            os[0],
            read_dst,
            l.as_ptr(),
            ls[1],
            ls[0],
            r.as_ptr(),
            rs[1],
            rs[0],
            beta,
            F::one(),
            false,
            false,
            false,
            ::gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::mat_mul_into;
    use ndarray::{s, Array2};

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
            // An output written through a negatively strided view.
            let mut out = Array2::<f64>::zeros((m, n));
            mat_mul_into(l.view(), r.view(), 0.0, out.slice_mut(s![..;-1, ..]));
            let flipped = out.slice(s![..;-1, ..]);
            assert!(flipped
                .iter()
                .zip(&want)
                .all(|(a, b)| (a - b).abs() <= 1e-10));
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
