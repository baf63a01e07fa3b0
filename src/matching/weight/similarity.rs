//! The similarity matrices of weight matching and the objective: the terms `A_w · B̃_wᵀ` of
//! every permutation with their cached products and low-rank refreshes, their sum `S_p`, and the
//! cheap evaluation of `⟨θ_A, π(θ_B)⟩` (see the [parent module](super) for the loop).
//!
//! Memory: a term borrows its matrices from the models wherever a view is enough (axis 0 of a
//! row-major tensor is a reshape, axis 1 of a matrix a transpose), so weight matching holds no
//! copy of A or B for an MLP or a transformer; only conv axes other than the first are copied,
//! once. What a term owns is its cached product (`n × n` in `F`).

use std::collections::BTreeMap;

use ndarray::{Array2, ArrayView2, ArrayViewD, Axis, CowArray, Ix2, ShapeBuilder};

use super::super::par_gemm_abt_into;
use crate::error::Result;
use crate::float::Float;
use crate::params::Params;
use crate::permutation::Permutation;
use crate::spec::{PermUse, PermutationSpec};

/// The permutations on one axis with their offsets (one at 0 for a plain axis, one per
/// permuted segment of a segmented axis).
pub(super) type OnAxis = Vec<(String, usize)>;

/// One term `(w, k)` of a permutation's similarity matrix, `A_w · B̃_wᵀ`, with its cached
/// product.
///
/// `B̃_w` is `b_mat` (W_B moved and reshaped once, unpermuted) with its columns gathered through
/// a column map `src` that composes the permutations of the other axes; when only some columns
/// of the map changed since the cached product, the product is updated by the low-rank
/// correction `A_w[:, C] · (B_w[:, src'(C)] − B_w[:, src(C)])ᵀ` over the changed columns `C`.
pub(super) struct Term<'a, F> {
    /// `W_A` with axis `k` first, reshaped to `[n, r]` (a view of A where one is enough).
    a_mat: CowArray<'a, F, Ix2>,
    /// `W_B` with axis `k` first, reshaped to `[n, r]`, before any permutation (a view of B
    /// where one is enough).
    b_mat: CowArray<'a, F, Ix2>,
    /// The permuted axes other than `k`: (the permutations on the axis with their offsets —
    /// one at offset 0 for a plain axis, one per permuted segment of a segmented one — stride
    /// in the flattened rest index, axis length).
    others: Vec<(OnAxis, usize, usize)>,
    /// The column map and the product `A_w · B̃_wᵀ` (in `F`) last computed.
    pub(super) cache: Option<(Vec<usize>, Array2<F>)>,
}

impl<'a, F: Float> Term<'a, F> {
    /// The term of `param`'s axis `axis`, or of the rows `offset .. offset + len` of that axis
    /// (a segment).
    pub(super) fn new(
        spec: &PermutationSpec,
        a: &'a Params<F>,
        b: &'a Params<F>,
        use_: &PermUse,
    ) -> Self {
        let (param, axis) = (use_.param.as_str(), use_.axis);
        let wa = a[param].view();
        let shape = wa.shape();
        let axes = spec.axes(param).unwrap_or(&[]);
        // The rest index runs over the other axes in increasing order, row-major.
        let mut others = Vec::new();
        let mut stride = 1;
        for k in (0..shape.len()).rev().filter(|&k| k != axis) {
            let on_axis: Vec<(String, usize)> = match spec.segments(param, k) {
                Some(segs) => {
                    let mut offset = 0;
                    let mut v = Vec::new();
                    for seg in segs {
                        if let Some(p) = &seg.perm {
                            v.push((p.clone(), offset));
                        }
                        offset += seg.size;
                    }
                    v
                }
                None => axes
                    .get(k)
                    .cloned()
                    .flatten()
                    .map(|p| (p, 0))
                    .into_iter()
                    .collect(),
            };
            if !on_axis.is_empty() {
                others.push((on_axis, stride, shape[k]));
            }
            stride *= shape[k];
        }
        Self {
            a_mat: axis_first(wa, axis, use_.segment),
            b_mat: axis_first(b[param].view(), axis, use_.segment),
            others,
            cache: None,
        }
    }

    /// Whether the term's column map involves any of `names`.
    pub(super) fn depends_on(&self, names: &[&str]) -> bool {
        self.others
            .iter()
            .any(|(on_axis, _, _)| on_axis.iter().any(|(p, _)| names.contains(&p.as_str())))
    }

    /// `src[c]`: the column of `b_mat` that column `c` of `B̃_w` holds at `perms`
    /// (`B̃[…, x, …] = B[…, p[x], …]` on every other permuted axis).
    pub(super) fn column_map(&self, perms: &BTreeMap<String, Permutation>) -> Vec<usize> {
        let mut src: Vec<usize> = (0..self.b_mat.ncols()).collect();
        for (on_axis, stride, len) in &self.others {
            let mut p: Vec<usize> = (0..*len).collect();
            for (name, offset) in on_axis {
                for (x, &y) in perms[name].as_slice().iter().enumerate() {
                    p[offset + x] = offset + y;
                }
            }
            for (c, s) in src.iter_mut().enumerate() {
                let x = (c / stride) % len;
                *s = *s - x * stride + p[x] * stride;
            }
        }
        src
    }

    /// Bring the cached product up to date with `perms`; returns whether it changed.
    pub(super) fn refresh(&mut self, perms: &BTreeMap<String, Permutation>) -> bool {
        let src = self.column_map(perms);
        let (n, r) = self.b_mat.dim();
        match &mut self.cache {
            Some((old, _)) if *old == src => false,
            Some((old, t)) => {
                let changed: Vec<usize> = (0..r).filter(|&c| old[c] != src[c]).collect();
                if 2 * changed.len() <= r {
                    let a_c = gather_columns(self.a_mat.view(), &changed);
                    let d = column_differences(self.b_mat.view(), &changed, &src, old);
                    par_gemm_abt_into(a_c.view(), d.view(), F::one(), t);
                } else {
                    let b_t = gather_columns(self.b_mat.view(), &src);
                    par_gemm_abt_into(self.a_mat.view(), b_t.view(), F::zero(), t);
                }
                *old = src;
                true
            }
            None => {
                let b_t = gather_columns(self.b_mat.view(), &src);
                let mut t = Array2::<F>::zeros((n, n));
                par_gemm_abt_into(self.a_mat.view(), b_t.view(), F::zero(), &mut t);
                self.cache = Some((src, t));
                true
            }
        }
    }

    /// `⟨W_A, π(W_B)⟩ = Σ_i Σ_c A[i, c] · B[p(i), src(c)]` in f64, with `p` the permutation of
    /// this term's own axis (identity if `None`). `O(n r)`, no allocation but the column map.
    /// Rows (columns, for a transposed view) run in parallel; their sums are added in order,
    /// whatever the threads.
    pub(super) fn inner(
        &self,
        p: Option<&Permutation>,
        perms: &BTreeMap<String, Permutation>,
    ) -> f64 {
        let src = self.column_map(perms);
        let pi = |i: usize| p.map_or(i, |p| p.as_slice()[i]);
        let sums: Vec<f64> = if column_major(&self.a_mat.view()) {
            // A transposed view: walk the contiguous columns.
            let (a, b) = (&self.a_mat, &self.b_mat);
            par_map(a.ncols(), |c| {
                let (ac, bc) = (a.column(c), b.column(src[c]));
                ac.iter()
                    .enumerate()
                    .map(|(i, &x)| x.as_f64() * bc[pi(i)].as_f64())
                    .sum::<f64>()
            })
        } else {
            par_map(self.a_mat.nrows(), |i| {
                let b_row = self.b_mat.row(pi(i));
                self.a_mat
                    .row(i)
                    .iter()
                    .zip(&src)
                    .map(|(&x, &c)| x.as_f64() * b_row[c].as_f64())
                    .sum::<f64>()
            })
        };
        sums.iter().sum()
    }

    /// Whether the term's `A_w` is stored row-major (rows contiguous), the layout in which
    /// [`Term::inner`] reads fastest.
    pub(super) fn row_major(&self) -> bool {
        !column_major(&self.a_mat.view())
    }
}

/// `f(0), …, f(n − 1)`, in parallel with the `rayon` feature.
fn par_map(n: usize, f: impl Fn(usize) -> f64 + Sync + Send) -> Vec<f64> {
    #[cfg(feature = "rayon")]
    {
        use rayon::prelude::*;
        (0..n).into_par_iter().map(f).collect()
    }
    #[cfg(not(feature = "rayon"))]
    (0..n).map(f).collect()
}

/// Whether `m` is a column-major (transposed) matrix: columns contiguous, rows not.
fn column_major<F>(m: &ArrayView2<'_, F>) -> bool {
    !m.is_standard_layout() && m.t().is_standard_layout()
}

/// `W` with `axis` first, reshaped to `[n, −1]`, restricted to the rows of `segment`
/// `(offset, len)`: a view of `W` when one is enough (axis 0 of a row-major tensor; axis 1 of a
/// matrix, transposed), else a row-major copy ([`flatten_axis_first`]).
fn axis_first<F: Float>(
    w: ArrayViewD<'_, F>,
    axis: usize,
    segment: Option<(usize, usize)>,
) -> CowArray<'_, F, Ix2> {
    fn rows<F>(m: ArrayView2<'_, F>, segment: Option<(usize, usize)>) -> ArrayView2<'_, F> {
        match segment {
            Some((offset, len)) => m.slice_move(ndarray::s![offset..offset + len, ..]),
            None => m,
        }
    }
    let shape = w.shape().to_vec();
    let n = shape[axis];
    let rest: usize = shape
        .iter()
        .enumerate()
        .filter(|&(k, _)| k != axis)
        .map(|(_, &s)| s)
        .product();
    let view = if axis == 0 && w.is_standard_layout() {
        w.clone().into_shape_with_order((n, rest)).ok()
    } else if axis == 1 && w.ndim() == 2 {
        w.clone()
            .into_dimensionality::<Ix2>()
            .ok()
            .map(ArrayView2::reversed_axes)
    } else {
        None
    };
    match view {
        Some(v) => CowArray::from(rows(v, segment)),
        None => {
            let owned = flatten_axis_first(&w, axis);
            match segment {
                Some(_) => CowArray::from(rows(owned.view(), segment).to_owned()),
                None => CowArray::from(owned),
            }
        }
    }
}

/// `out[:, c] = m[:, src[c]]`, in `m`'s memory order (row-major, or column-major for a
/// transposed view), so that both sides are read and written contiguously.
fn gather_columns<F: Float>(m: ArrayView2<'_, F>, src: &[usize]) -> Array2<F> {
    if column_major(&m) {
        let mut out = Array2::<F>::zeros((m.nrows(), src.len()).f());
        for (mut o, &c) in out.columns_mut().into_iter().zip(src) {
            o.assign(&m.column(c));
        }
        return out;
    }
    let mut out = Array2::<F>::zeros((m.nrows(), src.len()));
    for (mut o, row) in out.rows_mut().into_iter().zip(m.rows()) {
        for (o, &c) in o.iter_mut().zip(src) {
            *o = row[c];
        }
    }
    out
}

/// `d[:, k] = m[:, new[c]] − m[:, old[c]]` for the `k`-th changed column `c`, in `m`'s memory
/// order (see [`gather_columns`]).
fn column_differences<F: Float>(
    m: ArrayView2<'_, F>,
    changed: &[usize],
    new: &[usize],
    old: &[usize],
) -> Array2<F> {
    if column_major(&m) {
        let mut d = Array2::<F>::zeros((m.nrows(), changed.len()).f());
        for (mut o, &c) in d.columns_mut().into_iter().zip(changed) {
            ndarray::Zip::from(&mut o)
                .and(m.column(new[c]))
                .and(m.column(old[c]))
                .for_each(|o, &x, &y| *o = x - y);
        }
        return d;
    }
    let mut d = Array2::<F>::zeros((m.nrows(), changed.len()));
    for (mut d_row, b_row) in d.rows_mut().into_iter().zip(m.rows()) {
        for (v, &c) in d_row.iter_mut().zip(changed) {
            *v = b_row[new[c]] - b_row[old[c]];
        }
    }
    d
}

/// `S_p = Σ_terms A_w · B̃_wᵀ` from the terms' cached products, summed in f64 in the terms'
/// fixed order, into `s` (reused between sweeps): one pass over `s`, rows in parallel.
pub(super) fn sum_terms_into<F: Float>(terms: &[Term<'_, F>], list: &[usize], s: &mut Array2<f64>) {
    fn row_slice<F: Float>(p: &Array2<F>, i: usize) -> &[F] {
        p.row(i)
            .to_slice()
            .expect("row of a standard-layout matrix")
    }
    let prods: Vec<&Array2<F>> = list
        .iter()
        .map(|&t| &terms[t].cache.as_ref().expect("refreshed before use").1)
        .collect();
    let Some((first, rest)) = prods.split_first() else {
        return; // a permutation always has at least one term
    };
    let row = |(i, mut out): (usize, ndarray::ArrayViewMut1<'_, f64>)| {
        let out = out.as_slice_mut().expect("row of a standard-layout matrix");
        for (o, &x) in out.iter_mut().zip(row_slice(first, i)) {
            *o = x.as_f64();
        }
        for p in rest {
            for (o, &x) in out.iter_mut().zip(row_slice(p, i)) {
                *o += x.as_f64();
            }
        }
    };
    #[cfg(feature = "rayon")]
    {
        use rayon::prelude::*;
        s.axis_iter_mut(Axis(0))
            .into_par_iter()
            .enumerate()
            .for_each(row);
    }
    #[cfg(not(feature = "rayon"))]
    s.axis_iter_mut(Axis(0)).enumerate().for_each(row);
}

/// How to evaluate `⟨θ_A, π(θ_B)⟩` cheaply: every parameter with a permuted axis through one of
/// its terms (no permuted copy of B), the others once.
pub(super) struct Objective<F> {
    /// Per permuted parameter: its terms (index, name of the permutation on the term's axis).
    permuted: Vec<Vec<(usize, String)>>,
    /// Permuted parameters without a whole-axis term (only segments are permuted): `(name,
    /// W_A, W_B)`, evaluated by permuting `W_B` directly.
    direct: Vec<(String, ndarray::ArrayD<F>, ndarray::ArrayD<F>)>,
    /// `Σ ⟨W_A, W_B⟩` over the parameters no permutation touches.
    constant: f64,
}

impl<F: Float> Objective<F> {
    pub(super) fn new(
        a: &Params<F>,
        b: &Params<F>,
        of_param: BTreeMap<String, Vec<(usize, String)>>,
    ) -> Result<Self> {
        let mut constant = Params::new();
        let mut constant_b = Params::new();
        for (name, t) in a.iter() {
            if !of_param.contains_key(name) {
                constant.insert(name, t.clone());
                constant_b.insert(name, b.require(name)?.clone());
            }
        }
        let mut permuted = Vec::new();
        let mut direct = Vec::new();
        for (name, list) in of_param {
            if list.is_empty() {
                let (ta, tb) = (a[name.as_str()].clone(), b[name.as_str()].clone());
                direct.push((name, ta, tb));
            } else {
                permuted.push(list);
            }
        }
        Ok(Self {
            permuted,
            direct,
            constant: constant.inner(&constant_b)?,
        })
    }

    /// `⟨W_A, π(W_B)⟩` of the parameters in [`Objective::direct`], in f64.
    fn direct_value(&self, spec: &PermutationSpec, perms: &BTreeMap<String, Permutation>) -> f64 {
        let mut total = 0.0;
        for (name, ta, tb) in &self.direct {
            let mut t = tb.clone();
            for axis in 0..t.ndim() {
                let len = t.shape()[axis];
                if let Some(v) = spec.axis_permutation(name, axis, len, perms) {
                    let p = Permutation::new(v).expect("validated permutations");
                    t = crate::permutation::permute_axis(&t, axis, &p).expect("validated sizes");
                }
            }
            total += ndarray::Zip::from(ta)
                .and(&t)
                .fold(0.0, |acc, &x, &y| acc + x.as_f64() * y.as_f64());
        }
        total
    }

    /// `constant + Σ_w ⟨W_A, π(W_B)⟩`. In f64 precision a parameter with an up-to-date cached
    /// product `T` (the usual case after a sweep) costs `O(n)`: `⟨W_A, π(W_B)⟩ = Σ_i T[i, p(i)]`
    /// (a sum of f64 dot products); otherwise, and always for f32 (whose products are not f64
    /// accumulations), the `O(n r)` sum of [`Term::inner`].
    pub(super) fn value(
        &self,
        spec: &PermutationSpec,
        terms: &[Term<'_, F>],
        perms: &BTreeMap<String, Permutation>,
    ) -> f64 {
        let f64_products = F::epsilon().as_f64() <= f64::EPSILON;
        let param = |list: &Vec<(usize, String)>| -> f64 {
            let current = list.iter().find_map(|(t, perm)| {
                let (src, prod) = terms[*t].cache.as_ref()?;
                (f64_products && *src == terms[*t].column_map(perms)).then_some((prod, perm))
            });
            match current {
                Some((prod, perm)) => perms[perm]
                    .as_slice()
                    .iter()
                    .enumerate()
                    .map(|(i, &j)| prod[[i, j]].as_f64())
                    .sum(),
                None => {
                    // A row-major term reads fastest (a transposed view walks columns).
                    let (t, perm) = list
                        .iter()
                        .find(|(t, _)| terms[*t].row_major())
                        .unwrap_or(&list[0]);
                    terms[*t].inner(Some(&perms[perm]), perms)
                }
            }
        };
        self.constant
            + self.permuted.iter().map(param).sum::<f64>()
            + self.direct_value(spec, perms)
    }
}

/// `Σ_i S[i, p(i)]`.
pub(crate) fn linear_objective(s: &Array2<f64>, p: &Permutation) -> f64 {
    p.as_slice()
        .iter()
        .enumerate()
        .map(|(i, &j)| s[[i, j]])
        .sum()
}

/// Move `axis` first and reshape to `[n, −1]` (row-major copy).
///
/// Viewing `w` as `[pre, n, post]` (the axes before and after `axis` flattened), the result is
/// `out[i, a·post + k] = w[a, i, k]`: runs of `post` contiguous entries copied in tiles of
/// `32 × 32` runs, so that both sides stay in cache (a plain strided iteration over a
/// transposed `2048 × 2048` view costs a cache miss per entry).
pub(crate) fn flatten_axis_first<F: Float>(
    w: &ndarray::ArrayViewD<'_, F>,
    axis: usize,
) -> Array2<F> {
    const TILE: usize = 32;
    let shape = w.shape();
    let n = shape[axis];
    let pre: usize = shape[..axis].iter().product();
    let post: usize = shape[axis + 1..].iter().product();
    let standard = w.as_standard_layout();
    let src = standard.as_slice().expect("standard layout");
    let mut out = Array2::<F>::zeros((n, pre * post));
    let dst = out.as_slice_mut().expect("freshly allocated");
    for a0 in (0..pre).step_by(TILE) {
        for i0 in (0..n).step_by(TILE) {
            for a in a0..(a0 + TILE).min(pre) {
                for i in i0..(i0 + TILE).min(n) {
                    let from = (a * n + i) * post;
                    let to = (i * pre + a) * post;
                    dst[to..to + post].copy_from_slice(&src[from..from + post]);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{axis_first, column_differences, flatten_axis_first, gather_columns};
    use ndarray::{Array2, ArrayD, Dimension, IxDyn};

    #[test]
    fn views_equal_the_copies_and_gathers_follow_their_layout() {
        let w = ArrayD::from_shape_fn(IxDyn(&[6, 9]), |ix| (ix[0] * 31 + ix[1] * 7) as f64 - 20.0);
        for axis in 0..2 {
            for segment in [None, Some((2, 3))] {
                let view = axis_first(w.view(), axis, segment);
                assert!(view.is_view(), "axis {axis} of a matrix is a view");
                let mut copy = flatten_axis_first(&w.view(), axis);
                if let Some((o, l)) = segment {
                    copy = copy.slice(ndarray::s![o..o + l, ..]).to_owned();
                }
                assert_eq!(view, copy);
                // Gathers and differences of the (possibly transposed) view equal those of the
                // row-major copy.
                let cols = view.ncols();
                let src: Vec<usize> = (0..cols).rev().collect();
                let old: Vec<usize> = (0..cols).map(|c| (c * 5 + 1) % cols).collect();
                let changed: Vec<usize> = (0..cols).step_by(2).collect();
                let g: Array2<f64> = gather_columns(view.view(), &src);
                assert_eq!(g, gather_columns(copy.view(), &src));
                assert_eq!(
                    column_differences(view.view(), &changed, &src, &old),
                    column_differences(copy.view(), &changed, &src, &old)
                );
            }
        }
        // A conv weight's axis 1 is not a view: copied.
        let conv = ArrayD::from_shape_fn(IxDyn(&[4, 3, 2, 2]), |ix| ix[0] as f64 + ix[1] as f64);
        assert!(!axis_first(conv.view(), 1, None).is_view());
        assert!(axis_first(conv.view(), 0, None).is_view());
    }

    #[test]
    fn flatten_axis_first_equals_a_permuted_iteration() {
        // Shapes with axes shorter and longer than the 32-run tiles, conv-like and linear.
        for shape in [
            vec![70, 45],
            vec![3, 40, 5, 2],
            vec![33, 1, 65],
            vec![0, 4],
            vec![5],
        ] {
            let w = ArrayD::from_shape_fn(IxDyn(&shape), |ix| {
                ix.as_array_view()
                    .iter()
                    .fold(0.0, |acc, &k| acc * 97.0 + k as f64)
            });
            for axis in 0..shape.len() {
                let mut order = vec![axis];
                order.extend((0..shape.len()).filter(|&k| k != axis));
                let want: Vec<f64> = w.view().permuted_axes(order).iter().copied().collect();
                let got = flatten_axis_first(&w.view(), axis);
                assert_eq!(got.nrows(), shape[axis]);
                assert_eq!(
                    got.iter().copied().collect::<Vec<_>>(),
                    want,
                    "{shape:?} axis {axis}"
                );
                // A transposed (non-standard) input gives the same result.
                let t = w.t().to_owned();
                let back = t.t();
                assert_eq!(flatten_axis_first(&back, axis), got);
            }
        }
    }
}
