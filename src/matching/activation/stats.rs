//! Streaming cross statistics of two layers' features ([`ActivationStats`]) and the
//! similarity read from them ([`Statistic`]); the formulas are in the [module docs](super).

use std::any::Any;

use ndarray::{Array1, Array2, ArrayView2, ArrayViewD, Axis, CowArray, Ix2};

use super::super::{par_gemm_abt_into, products_may_overflow};
use crate::error::{Error, Result};
use crate::float::Float;
use crate::metrics::par_join;

/// Which similarity of unit pairs activation matching maximises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Statistic {
    /// `E[a bᵀ]`.
    InnerProduct,
    /// `E[(a − μ_a)(b − μ_b)ᵀ]` (divided by `n`).
    Covariance,
    /// Pearson correlation; zero-variance units get 0.
    #[default]
    Correlation,
}

/// Streaming cross statistics of two layers' features (A's `d_a` units, B's `d_b` units).
///
/// Memory is `O(d_a · d_b)` whatever the number of samples.
///
/// # Examples
/// ```
/// use llfc::matching::activation::{ActivationStats, Statistic};
/// use ndarray::array;
/// let a = array![[1.0, 0.0], [2.0, 1.0], [3.0, 0.0]];
/// let b = array![[0.0, 2.0], [1.0, 4.0], [0.0, 6.0]]; // b = a with units swapped, scaled
/// let mut st = ActivationStats::new(2, 2);
/// st.update(a.view(), b.view())?;
/// let c = st.statistic(Statistic::Correlation)?;
/// assert!((c[[0, 1]] - 1.0).abs() < 1e-12 && (c[[1, 0]] - 1.0).abs() < 1e-12);
/// # Ok::<(), llfc::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct ActivationStats {
    n: u64,
    mean_a: Array1<f64>,
    mean_b: Array1<f64>,
    m_a: Array1<f64>,
    m_b: Array1<f64>,
    m_ab: Array2<f64>,
}

/// Rows per product chunk: f32 inputs are multiplied in f32 over at most this many samples
/// before the partial sums join the f64 accumulators.
const CHUNK_ROWS: usize = 1024;

impl ActivationStats {
    /// Empty statistics for `d_a` units of A and `d_b` units of B.
    #[must_use]
    pub fn new(d_a: usize, d_b: usize) -> Self {
        Self {
            n: 0,
            mean_a: Array1::zeros(d_a),
            mean_b: Array1::zeros(d_b),
            m_a: Array1::zeros(d_a),
            m_b: Array1::zeros(d_b),
            m_ab: Array2::zeros((d_a, d_b)),
        }
    }

    /// Number of samples seen.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.n
    }

    /// `(d_a, d_b)`.
    #[must_use]
    pub fn dims(&self) -> (usize, usize) {
        self.m_ab.dim()
    }

    /// Add a batch of features `[batch, d_a]` and `[batch, d_b]` (the same inputs, row by row).
    ///
    /// The batch is centred on its own mean and merged with Chan et al.'s update
    /// `M ← M + M_batch + (μ − μ_batch)(ν − ν_batch)ᵀ · n n_b / (n + n_b)`: the rank-one term is
    /// added to `M` first, then the cross moment of the centred batch, computed in `F` over
    /// chunks of at most 1024 rows, is accumulated into `M` (f64) in place.
    /// Complexity `O(batch · d_a · d_b)`; no `d_a × d_b` temporary for f64 features.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if the widths differ from [`ActivationStats::dims`] or the batch
    /// sizes differ; [`Error::EmptyInput`] for an empty batch; [`Error::NonFinite`] for NaN/±∞.
    /// On error the statistics are unchanged.
    pub fn update<F: Float>(&mut self, a: ArrayView2<'_, F>, b: ArrayView2<'_, F>) -> Result<()> {
        let (d_a, d_b) = self.dims();
        if a.ncols() != d_a || b.ncols() != d_b || a.nrows() != b.nrows() {
            return Err(Error::ShapeMismatch {
                what: "activation batch (A, B) versus statistics widths".into(),
                expected: vec![a.nrows(), d_a, a.nrows(), d_b],
                found: vec![a.nrows(), a.ncols(), b.nrows(), b.ncols()],
            });
        }
        if a.nrows() == 0 {
            return Err(Error::EmptyInput {
                what: "activation batch".into(),
            });
        }
        let (scan_a, scan_b) = par_join(|| BatchScan::of(&a), || BatchScan::of(&b));
        for (who, scan, x) in [("A", &scan_a, &a), ("B", &scan_b, &b)] {
            if !scan.all_finite(x) {
                return Err(Error::NonFinite {
                    what: format!("activation batch of model {who}"),
                });
            }
        }
        let nb = a.nrows();
        // Centred values are at most twice the largest magnitude: if their chunk products
        // could overflow `F` (f32 features beyond ~1e17), accumulate in f64.
        let (max_a, max_b) = (2.0 * scan_a.max_abs, 2.0 * scan_b.max_abs);
        if products_may_overflow::<F>(max_a, max_b, nb.min(CHUNK_ROWS), 1) {
            if products_may_overflow::<f64>(max_a, max_b, nb, 1) {
                return Err(Error::InvalidArgument {
                    name: "features",
                    reason: format!(
                        "activations up to {:e} (A) and {:e} (B) make their cross moments \
                         overflow even in f64",
                        max_a / 2.0,
                        max_b / 2.0
                    ),
                });
            }
            return self.update(a.mapv(|v| v.as_f64()).view(), b.mapv(|v| v.as_f64()).view());
        }
        #[allow(clippy::cast_precision_loss)]
        let (n1, n2) = (self.n as f64, nb as f64);
        let (mu_a, mu_b) = (scan_a.sums / n2, scan_b.sums / n2);
        // Chan et al.'s merge: δ = μ_batch − μ, weight n n_b / (n + n_b) (0 for the first batch).
        let (da, db) = (&mu_a - &self.mean_a, &mu_b - &self.mean_b);
        let w = n1 * n2 / (n1 + n2);
        if self.n > 0 {
            add_scaled_outer(&mut self.m_ab, &da, &db, w);
        }
        let (fa, fb): (Array1<F>, Array1<F>) = (mu_a.mapv(F::from_f64), mu_b.mapv(F::from_f64));
        let (mut sq_a, mut sq_b) = (Array1::<f64>::zeros(d_a), Array1::<f64>::zeros(d_b));
        // Chunks of the centred batch: memory O(CHUNK_ROWS · d) whatever the batch size, and
        // the buffers are reused from chunk to chunk. The product reads `caᵀ` as a strided view
        // (GEMM packing absorbs the transpose; no transposed copy).
        let rows = nb.min(CHUNK_ROWS);
        let mut ca = Array2::<F>::zeros((rows, d_a));
        let mut cb = Array2::<F>::zeros((rows, d_b));
        let mut prod: Option<Array2<F>> = None; // f32 input only
        let mut start = 0;
        while start < nb {
            let end = (start + CHUNK_ROWS).min(nb);
            let len = end - start;
            let rows = ndarray::s![start..end, ..];
            par_join(
                || center_into(&a.slice(rows), &fa, &mut sq_a, &mut ca),
                || center_into(&b.slice(rows), &fb, &mut sq_b, &mut cb),
            );
            let (ca_t, cb_t) = (
                ca.slice(ndarray::s![..len, ..]).reversed_axes(),
                cb.slice(ndarray::s![..len, ..]).reversed_axes(),
            );
            // f64 features accumulate straight into the f64 moment (`β = 1`); f32 products
            // are computed in f32 per chunk and added in f64.
            if let Some(acc) = (&mut self.m_ab as &mut dyn Any).downcast_mut::<Array2<F>>() {
                par_gemm_abt_into(ca_t, cb_t, F::one(), acc);
            } else {
                let prod = prod.get_or_insert_with(|| Array2::zeros((d_a, d_b)));
                par_gemm_abt_into(ca_t, cb_t, F::zero(), prod);
                let add = |m: &mut f64, p: &F| *m += p.as_f64();
                let zip = ndarray::Zip::from(&mut self.m_ab).and(&*prod);
                #[cfg(feature = "rayon")]
                zip.par_for_each(add);
                #[cfg(not(feature = "rayon"))]
                zip.for_each(add);
            }
            start = end;
        }
        self.merge_vectors(nb as u64, (da, db), (&sq_a, &sq_b), w);
        Ok(())
    }

    /// The per-unit part of Chan et al.'s merge with `n_other` samples whose means are
    /// `μ + δ` and whose centred squares are `sq`, `w = n n_other / (n + n_other)`:
    /// `m ← m + sq + w δ²`, `μ ← μ + δ · n_other / (n + n_other)`, `n ← n + n_other`.
    fn merge_vectors(
        &mut self,
        n_other: u64,
        (da, db): (Array1<f64>, Array1<f64>),
        (sq_a, sq_b): (&Array1<f64>, &Array1<f64>),
        w: f64,
    ) {
        #[allow(clippy::cast_precision_loss)]
        let (n2, n) = (n_other as f64, (self.n + n_other) as f64);
        self.m_a = &self.m_a + sq_a + &(da.mapv(|x| x * x) * w);
        self.m_b = &self.m_b + sq_b + &(db.mapv(|x| x * x) * w);
        self.mean_a = &self.mean_a + &(da * (n2 / n));
        self.mean_b = &self.mean_b + &(db * (n2 / n));
        self.n += n_other;
    }

    /// Add features of any rank: 2-D `[batch, units]`; 3-D token features `[batch, tokens, d]`
    /// viewed as `[batch·tokens, d]` (every token a sample); 4-D conv maps `[batch, c, h, w]`
    /// viewed as `[batch·h·w, c]` (every position a sample).
    ///
    /// # Errors
    /// As [`ActivationStats::update`]; [`Error::InvalidArgument`] for ranks other than 2, 3
    /// and 4.
    pub fn update_dyn<F: Float>(
        &mut self,
        a: ArrayViewD<'_, F>,
        b: ArrayViewD<'_, F>,
    ) -> Result<()> {
        let (a2, b2) = (as_samples_by_units(a)?, as_samples_by_units(b)?);
        self.update(a2.view(), b2.view())
    }

    /// Merge statistics gathered separately (e.g. in parallel) on other samples.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if the widths differ.
    pub fn merge(&mut self, other: &Self) -> Result<()> {
        if self.dims() != other.dims() {
            let (x, y) = (self.dims(), other.dims());
            return Err(Error::ShapeMismatch {
                what: "merged activation statistics".into(),
                expected: vec![x.0, x.1],
                found: vec![y.0, y.1],
            });
        }
        if other.n == 0 {
            return Ok(());
        }
        if self.n == 0 {
            *self = other.clone();
            return Ok(());
        }
        #[allow(clippy::cast_precision_loss)]
        let (n1, n2) = (self.n as f64, other.n as f64);
        let n = n1 + n2;
        let da = &other.mean_a - &self.mean_a;
        let db = &other.mean_b - &self.mean_b;
        let w = n1 * n2 / n;
        // In place: `M ← M + M_other + w · da dbᵀ` (same order of additions as the formula).
        for ((mut m, o), &x) in self
            .m_ab
            .rows_mut()
            .into_iter()
            .zip(other.m_ab.rows())
            .zip(&da)
        {
            ndarray::Zip::from(&mut m)
                .and(&o)
                .and(&db)
                .for_each(|m, &o, &y| *m = *m + o + x * y * w);
        }
        self.merge_vectors(other.n, (da, db), (&other.m_a, &other.m_b), w);
        Ok(())
    }

    /// The `[d_a, d_b]` similarity matrix of `statistic` (see the
    /// [module docs](crate::matching::activation)).
    ///
    /// # Errors
    /// [`Error::EmptyInput`] if no sample was seen.
    pub fn statistic(&self, statistic: Statistic) -> Result<Array2<f64>> {
        if self.n == 0 {
            return Err(Error::EmptyInput {
                what: "activation statistics (no batch was added)".into(),
            });
        }
        #[allow(clippy::cast_precision_loss)]
        let n = self.n as f64;
        Ok(match statistic {
            Statistic::Covariance => &self.m_ab / n,
            Statistic::InnerProduct => {
                let outer = self
                    .mean_a
                    .view()
                    .insert_axis(Axis(1))
                    .dot(&self.mean_b.view().insert_axis(Axis(0)));
                &self.m_ab / n + outer
            }
            Statistic::Correlation => {
                let mut c = self.m_ab.clone();
                for ((i, j), v) in c.indexed_iter_mut() {
                    let d = (self.m_a[i] * self.m_b[j]).sqrt();
                    *v = if d > 0.0 {
                        (*v / d).clamp(-1.0, 1.0)
                    } else {
                        0.0
                    };
                }
                c
            }
        })
    }
}

/// What one pass over a batch `[rows, d]` learns: the column sums (f64, rows in order) and
/// the largest magnitude.
struct BatchScan {
    sums: Array1<f64>,
    max_abs: f64,
}

impl BatchScan {
    fn of<F: Float>(x: &ArrayView2<'_, F>) -> Self {
        let d = x.ncols();
        let (mut sums, mut maxs) = (vec![0.0f64; d], vec![0.0f64; d]);
        // Per-column maxima and sums (element-wise: the loop vectorises; no reduction
        // across iterations).
        let add = |s: &mut f64, m: &mut f64, v: F| {
            let v = v.as_f64();
            *s += v;
            let a = v.abs();
            *m = if a > *m { a } else { *m };
        };
        for row in x.rows() {
            match row.as_slice() {
                Some(r) => {
                    for ((s, m), &v) in sums.iter_mut().zip(maxs.iter_mut()).zip(r) {
                        add(s, m, v);
                    }
                }
                None => {
                    for ((s, m), &v) in sums.iter_mut().zip(maxs.iter_mut()).zip(row) {
                        add(s, m, v);
                    }
                }
            }
        }
        Self {
            sums: Array1::from(sums),
            max_abs: maxs.into_iter().fold(0.0, f64::max),
        }
    }

    /// Whether every value of `x` (the batch scanned) is finite. NaN makes its column sum NaN
    /// and ±∞ makes the largest magnitude infinite, so finite sums and maximum prove it; only
    /// when they are not (a NaN/∞, or sums overflowing on finite values) is `x` looked at again.
    fn all_finite<F: Float>(&self, x: &ArrayView2<'_, F>) -> bool {
        (self.max_abs.is_finite() && self.sums.iter().all(|s| s.is_finite()))
            || crate::float::all_finite(x)
    }
}

/// `m ← m + w · x yᵀ` (rows in parallel with the `rayon` feature; every entry by the same
/// arithmetic whatever the thread count).
fn add_scaled_outer(m: &mut Array2<f64>, x: &Array1<f64>, y: &Array1<f64>, w: f64) {
    let row = |mut r: ndarray::ArrayViewMut1<'_, f64>, &xi: &f64| {
        r.zip_mut_with(y, |v, &yj| *v += xi * yj * w);
    };
    let zip = ndarray::Zip::from(m.rows_mut()).and(x);
    #[cfg(feature = "rayon")]
    zip.par_for_each(row);
    #[cfg(not(feature = "rayon"))]
    zip.for_each(row);
}

/// `out[..rows, :] = x − mean` (rows are samples) in `F`; adds the column sums of squares of
/// the result to `sq` (rows in order).
fn center_into<F: Float>(
    x: &ArrayView2<'_, F>,
    mean: &Array1<F>,
    sq: &mut Array1<f64>,
    out: &mut Array2<F>,
) {
    for (mut o, row) in out.rows_mut().into_iter().zip(x.rows()) {
        ndarray::Zip::from(&mut o)
            .and(&row)
            .and(mean)
            .for_each(|o, &v, &mu| *o = v - mu);
        sq.zip_mut_with(&o, |s, &v| *s += v.as_f64() * v.as_f64());
    }
}

/// The number of units of a 2-D `[n, d]`, 3-D `[n, t, d]` or 4-D `[n, c, h, w]` feature array
/// (0 for other ranks, which [`as_samples_by_units`] refuses).
pub(crate) fn units_of(shape: &[usize]) -> usize {
    match shape.len() {
        2 | 4 => shape[1],
        3 => shape[2],
        _ => 0,
    }
}

/// View a 2-D `[n, d]`, 3-D `[n, t, d]` or 4-D `[n, c, h, w]` feature array as
/// `[samples, units]`: `[n, d]` (borrowed, no copy), `[n·t, d]`, `[n·h·w, c]` (gathered).
pub(crate) fn as_samples_by_units<F: Float>(x: ArrayViewD<'_, F>) -> Result<CowArray<'_, F, Ix2>> {
    match x.ndim() {
        2 => Ok(x.into_dimensionality::<Ix2>().expect("rank checked").into()),
        3 => {
            let s = x.shape();
            let (rows, d) = (s[0] * s[1], s[2]);
            let data: Vec<F> = x.iter().copied().collect();
            Ok(Array2::from_shape_vec((rows, d), data)
                .expect("sizes agree")
                .into())
        }
        4 => {
            let s = x.shape();
            let (n, c, h, w) = (s[0], s[1], s[2], s[3]);
            let nhwc = x.permuted_axes(vec![0, 2, 3, 1]);
            let data: Vec<F> = nhwc.iter().copied().collect();
            Ok(Array2::from_shape_vec((n * h * w, c), data)
                .expect("sizes agree")
                .into())
        }
        r => Err(Error::InvalidArgument {
            name: "features",
            reason: format!(
                "expected rank 2 [samples, units], 3 [samples, tokens, units] or 4 [samples, c, h, w], got rank {r}"
            ),
        }),
    }
}
