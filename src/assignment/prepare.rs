//! Input validation, orientation and scaling shared by the solvers, and the mapping of an
//! internal solution back to the caller's matrix.
//!
//! Internally every problem is a *minimisation* over a row-major `nr × nc` matrix with
//! `nr <= nc` whose entries are finite or `+∞` (forbidden): a maximisation reads entries
//! negated (exact), a matrix with more rows than columns is transposed (copied), and a matrix
//! whose largest finite magnitude exceeds `2^960` is multiplied by a power of two `2^−k` (exact
//! except for entries that become subnormal, i.e. below `2^−1022` after scaling, which are
//! irrelevant next to entries above `2^960 · 2^−k`). The headroom keeps the dual potentials and
//! path lengths, which stay within a few multiples of `n · max |c|`, far from overflow.

use ndarray::ArrayView2;

use super::native::{self, Costs, Start, NONE};
use super::{kuhn_munkres, scipy_ties, sparse, Assignment, Duals, LapOptions, Presolve, Ties};
use crate::error::{Error, Result};
use crate::float::Float;

/// Largest finite magnitude solved without rescaling.
const MAX_MAGNITUDE: f64 = 9.124_881_235_244_39e288; // 2^960

/// A validated problem in its internal orientation.
pub(super) struct Prepared<'a, F> {
    cost: ArrayView2<'a, F>,
    maximize: bool,
    transposed: bool,
    /// The internal entries are `original · 2^-scale_exp`.
    scale_exp: i32,
    /// Internal row-major copy, when the input cannot be read in place.
    owned: Option<Vec<f64>>,
    nr: usize,
    nc: usize,
}

impl<'a, F: Float> Prepared<'a, F> {
    /// Validate `cost` and choose its internal representation.
    pub(super) fn new(cost: ArrayView2<'a, F>, maximize: bool) -> Result<Self> {
        let (r, c) = cost.dim();
        let transposed = r > c;
        let (nr, nc) = if transposed { (c, r) } else { (r, c) };
        let mut prep = Self {
            cost,
            maximize,
            transposed,
            scale_exp: 0,
            owned: None,
            nr,
            nc,
        };
        if nr == 0 {
            return Ok(prep);
        }
        // Fast path: one vectorisable pass detects anything unusual (NaN, ±∞, huge).
        let any_unusual = |s: &[F]| s.iter().fold(false, |acc, &x| acc | unusual(x.as_f64()));
        let unusual = match cost.as_slice() {
            #[cfg(feature = "rayon")]
            Some(s) => {
                use rayon::prelude::*;
                s.par_chunks(1 << 16).any(any_unusual)
            }
            #[cfg(not(feature = "rayon"))]
            Some(s) => any_unusual(s),
            None => cost.iter().any(|&x| unusual(x.as_f64())),
        };
        if unusual {
            let forbidden = if maximize {
                f64::NEG_INFINITY
            } else {
                f64::INFINITY
            };
            let mut max_abs = 0.0f64;
            for ((i, j), &x) in cost.indexed_iter() {
                let y = x.as_f64();
                if y.is_nan() {
                    return Err(Error::NonFinite {
                        what: format!("cost matrix: NaN at [{i}, {j}]"),
                    });
                }
                if y.is_infinite() && y != forbidden {
                    return Err(Error::NonFinite {
                        what: format!(
                            "cost matrix: {y} at [{i}, {j}] is invalid when {} (only {forbidden} marks a forbidden pair)",
                            if maximize { "maximising" } else { "minimising" }
                        ),
                    });
                }
                if y.is_finite() {
                    max_abs = max_abs.max(y.abs());
                }
            }
            if max_abs > MAX_MAGNITUDE {
                // Exponent of max_abs minus 960, so that max_abs · 2^-k <= 2^961 > … ≤ 2^961.
                let e = ((max_abs.to_bits() >> 52) & 0x7ff) as i32 - 1023;
                prep.scale_exp = e - 959;
            }
        }
        if transposed || prep.scale_exp != 0 || cost.as_slice().is_none() {
            let factor = pow2(-prep.scale_exp);
            let mut data = Vec::with_capacity(nr * nc);
            if transposed {
                for col in cost.columns() {
                    data.extend(col.iter().map(|&x| x.as_f64() * factor));
                }
            } else {
                for row in cost.rows() {
                    data.extend(row.iter().map(|&x| x.as_f64() * factor));
                }
            }
            prep.owned = Some(data);
        }
        Ok(prep)
    }

    /// Run the native solver (cold, or warm from `previous`, whose shape was checked).
    pub(super) fn solve_native(
        &self,
        previous: Option<&Assignment>,
        options: &LapOptions,
    ) -> Result<Assignment> {
        let ties = options.ties;
        if self.nr == 0 {
            return Ok(self.finish(Vec::new(), Some((vec![0.0; self.nr], vec![0.0; self.nc]))));
        }
        // Warm-start data in the internal frame.
        let warm = previous.map(|p| {
            let d = p.duals.as_ref().expect("checked by the caller");
            let src = if self.transposed { &d.u } else { &d.v };
            let f = pow2(-self.scale_exp) * if self.maximize { -1.0 } else { 1.0 };
            let v: Vec<f64> = src.iter().map(|&x| x * f).collect();
            let mut col4row = vec![NONE; self.nr];
            for (&i, &j) in p.row_ind.iter().zip(&p.col_ind) {
                let (ri, cj) = if self.transposed { (j, i) } else { (i, j) };
                if ri < self.nr && cj < self.nc {
                    col4row[ri] = cj;
                }
            }
            (v, col4row)
        });
        let presolved = if warm.is_some() {
            None
        } else if options.candidates.wanted(self.nr, self.nc) {
            self.presolve_sparse()
                .or_else(|| self.presolve_f32(options.presolve))
        } else {
            self.presolve_f32(options.presolve)
        };
        let start = match (&warm, &presolved) {
            (Some((v, col4row)), _) => Start::Warm {
                v,
                col4row: Some(col4row),
            },
            (None, Some(s)) => Start::Warm {
                v: &s.v,
                col4row: Some(&s.col4row),
            },
            (None, None) => Start::Cold,
        };
        let sol = match (&self.owned, self.maximize) {
            (Some(d), false) => solve_ties::<f64, false>(self.costs(d), start, ties)?,
            (Some(d), true) => solve_ties::<f64, true>(self.costs(d), start, ties)?,
            (None, false) => solve_ties::<F, false>(self.costs(self.slice()), start, ties)?,
            (None, true) => solve_ties::<F, true>(self.costs(self.slice()), start, ties)?,
        };
        let f = pow2(self.scale_exp) * if self.maximize { -1.0 } else { 1.0 };
        let u: Vec<f64> = sol.u.iter().map(|&x| x * f).collect();
        let v: Vec<f64> = sol.v.iter().map(|&x| x * f).collect();
        let duals = if self.transposed { (v, u) } else { (u, v) };
        Ok(self.finish(sol.col4row, Some(duals)))
    }

    /// Cold-solve the internal matrix rounded to f32; its potentials and matching then
    /// warm-start the exact solve. `None` when the matrix is already f32, or when rounding
    /// would turn a finite entry infinite, or when the rounded problem has no finite solution
    /// (the exact solve then starts cold and reports what it finds).
    fn presolve_f32(&self, presolve: Presolve) -> Option<native::Solution> {
        if !presolve.wanted(self.nr * self.nc) || F::DTYPE != f64::DTYPE {
            return None; // f32 input (even when copied to f64 for a transpose) is f32 already
        }
        let data: Vec<f32> = match &self.owned {
            Some(d) => round_f32(d.iter().copied())?,
            None => round_f32(self.slice().iter().map(|&x| x.as_f64()))?,
        };
        let c = self.costs(&data[..]);
        if self.maximize {
            native::solve::<f32, true>(c, Start::Cold).ok()
        } else {
            native::solve::<f32, false>(c, Start::Cold).ok()
        }
    }

    /// Solve the sparse candidate graph (`sparse.rs`); its potentials and matching then
    /// warm-start the exact solve, whose first pass checks the certificate on the full matrix.
    fn presolve_sparse(&self) -> Option<native::Solution> {
        let sol = match (&self.owned, self.maximize) {
            (Some(d), false) => sparse::presolve::<f64, false>(self.costs(d), sparse::K),
            (Some(d), true) => sparse::presolve::<f64, true>(self.costs(d), sparse::K),
            (None, false) => sparse::presolve::<F, false>(self.costs(self.slice()), sparse::K),
            (None, true) => sparse::presolve::<F, true>(self.costs(self.slice()), sparse::K),
        }?;
        Some(native::Solution {
            col4row: sol.col4row,
            u: Vec::new(),
            v: sol.v,
        })
    }

    /// Run the Kuhn–Munkres backend.
    pub(super) fn solve_kuhn_munkres(&self) -> Result<Assignment> {
        if self.nr == 0 {
            return Ok(self.finish(Vec::new(), None));
        }
        let col4row = match (&self.owned, self.maximize) {
            (Some(d), false) => kuhn_munkres::solve::<f64, false>(self.costs(d))?,
            (Some(d), true) => kuhn_munkres::solve::<f64, true>(self.costs(d))?,
            (None, false) => kuhn_munkres::solve::<F, false>(self.costs(self.slice()))?,
            (None, true) => kuhn_munkres::solve::<F, true>(self.costs(self.slice()))?,
        };
        Ok(self.finish(col4row, None))
    }

    fn slice(&self) -> &'a [F] {
        self.cost
            .to_slice()
            .expect("standard layout checked in new")
    }

    fn costs<'b, T>(&self, data: &'b [T]) -> Costs<'b, T> {
        Costs {
            data,
            nr: self.nr,
            nc: self.nc,
        }
    }

    /// Map an internal `col4row` (and duals already in the caller's frame) back.
    fn finish(&self, col4row: Vec<usize>, duals: Option<(Vec<f64>, Vec<f64>)>) -> Assignment {
        let (row_ind, col_ind): (Vec<usize>, Vec<usize>) = if self.transposed {
            let mut pairs: Vec<(usize, usize)> =
                col4row.iter().enumerate().map(|(j, &i)| (i, j)).collect();
            pairs.sort_unstable();
            pairs.into_iter().unzip()
        } else {
            ((0..col4row.len()).collect(), col4row)
        };
        let total = row_ind
            .iter()
            .zip(&col_ind)
            .map(|(&i, &j)| self.cost[[i, j]].as_f64())
            .sum();
        Assignment {
            row_ind,
            col_ind,
            total,
            duals: duals.map(|(u, v)| Duals { u, v }),
            shape: self.cost.dim(),
        }
    }
}

/// The native solve, followed (for [`Ties::Scipy`]) by SciPy's choice among tied optima.
fn solve_ties<T: Float, const NEG: bool>(
    c: Costs<'_, T>,
    start: Start<'_>,
    ties: Ties,
) -> Result<native::Solution> {
    if ties == Ties::Scipy && c.nr * c.nc <= Ties::REPLAY_MAX_ENTRIES {
        return scipy_ties::replay::<T, NEG>(c);
    }
    let sol = native::solve::<T, NEG>(c, start)?;
    if ties == Ties::Scipy && !scipy_ties::is_unique::<T, NEG>(c, &sol) {
        return scipy_ties::replay::<T, NEG>(c);
    }
    Ok(sol)
}

/// The entries rounded to f32, or `None` if a finite entry overflows f32's range.
fn round_f32(entries: impl Iterator<Item = f64>) -> Option<Vec<f32>> {
    let mut overflow = false;
    #[allow(clippy::cast_possible_truncation)] // rounding to f32 is the point
    let data = entries
        .map(|x| {
            let y = x as f32;
            overflow |= y.is_infinite() && x.is_finite();
            y
        })
        .collect();
    (!overflow).then_some(data)
}

/// Whether `y` is NaN, infinite or larger in magnitude than [`MAX_MAGNITUDE`].
#[inline]
#[allow(clippy::neg_cmp_op_on_partial_ord)] // the negation is what catches NaN
fn unusual(y: f64) -> bool {
    !(y.abs() <= MAX_MAGNITUDE)
}

/// `2^e` for `|e| <= 1000` (exact).
fn pow2(e: i32) -> f64 {
    2f64.powi(e)
}
