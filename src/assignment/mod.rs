//! Linear assignment on dense floating-point cost matrices.
//!
//! Given a cost matrix `C` with `r` rows and `c` columns, find an injection `σ` of the rows
//! into the columns (when `r <= c`; otherwise of the columns into the rows) that minimises — or,
//! with `maximize = true`, maximises —
//!
//! ```text
//! total(σ) = Σ_i C[i, σ(i)]
//! ```
//!
//! with the same contract as SciPy's `scipy.optimize.linear_sum_assignment`: rectangular
//! matrices are allowed (every row is assigned when `r <= c`, every column when `r > c`); NaN is
//! rejected; `+∞` (when minimising) or `−∞` (when maximising) marks a forbidden pair, allowed as
//! long as a complete assignment of finite total exists; the opposite infinity is rejected;
//! an empty matrix gives an empty assignment.
//!
//! Every weight-matching sweep and every activation-matching layer of this crate solves such a
//! problem (maximising a similarity), so the solver is the crate's hot spot.
//!
//! ## Solvers ([`Solver`])
//! - [`Solver::Native`] (default): shortest augmenting paths with Dijkstra-like column scans on
//!   reduced costs `c_ij − u_i − v_j`, the algorithm of Jonker and Volgenant (1987) in the
//!   rectangular form of Crouse (2016) that SciPy uses. It is initialised by JV's column
//!   reduction with reduction transfer (square problems) and by JV's augmenting row reduction,
//!   an auction with zero increment whose number of bids is capped (at `64 · rows`, and stopped
//!   earlier when it stalls) because on matrices full of near-ties — activation statistics —
//!   it degenerates into long price wars. Column reduction is skipped when it leaves more than
//!   90 % of the rows free (a few dominant rows own every column minimum), and the row
//!   reduction gives up after `rows` bids when more than half of the rows are still free.
//!   When the augmenting paths of a cold square solve then turn out long (the remaining rows
//!   times the recent path length exceed `64 · rows` row scans — rows and columns with
//!   strongly unequal means, as in activation statistics of biased or deep ReLU units, whose
//!   rank-one part makes every augmentation shift a long chain), an ε-scaling auction
//!   (Bertsekas 1988) takes over: its positive increments end the price wars of the row
//!   reduction, and its ε-optimal potentials and matching warm-start the exact phase (see
//!   "Warm start"), after which hardly any row needs a shortest path (10–20× fewer row scans
//!   on those matrices at `n = 2048` and 4096). The scans keep the
//!   unvisited columns in a compact, increasing list, relax a whole row branch-free (so that it vectorises), prefer an
//!   unmatched column among those at the minimal distance (SciPy's tie rule), and allocate
//!   nothing. Complexity `O(r² c)` in the worst case, `O(r + c)` memory besides the matrix.
//!   The matrix is read in place (no copy) when it is in standard (row-major) layout with
//!   `r <= c`, for `f32` as well as `f64` entries (f32 values are widened exactly; the
//!   arithmetic is f64).
//!
//!   Large square matrices (from [`Candidates::AUTO_MIN_ENTRIES`] entries) are first solved on
//!   a sparse set of candidate entries (see "Sparse candidate presolve" below). Where that
//!   does not apply, large f64 matrices (from [`Presolve::AUTO_MIN_ENTRIES`] entries) are first
//!   solved in an f32 rounding, whose potentials and matching warm-start the exact solve
//!   ([`Presolve`]): the scans then stream half the bytes, and the exact pass after them is
//!   short. Either way the result is as exact as without the presolve.
//! - [`Solver::KuhnMunkres`]: the Hungarian algorithm of the `pathfinding` crate on costs
//!   quantised to integers (see [`Solver::KuhnMunkres`] for its error bound). `O(n³)` with a
//!   large constant; meant as an independent cross-check.
//!
//! ## Sparse candidate presolve ([`Candidates`])
//! The optimum of most large problems uses few entries of each row: on uniform random costs
//! only entries of rank `O(log n)` within their row, and on similarity matrices mostly entries
//! that are large relative to their row's and column's. So the solver first works on a *core*
//! (Volgenant 1996) of candidate entries, as Jonker and Volgenant's sparse form does on
//! adjacency lists:
//! 1. column minima `v⁰_j = min_i c_ij` and row minima `u⁰_i = min_j (c_ij − v⁰_j)`;
//! 2. for every row the [`Candidates::K`] finite entries with the smallest `c_ij − v⁰_j`, and
//!    for every column in fewer than `K / 2` of those row lists (all columns when such columns
//!    are more than a quarter) the `K` with the smallest `c_ij − v⁰_j − u⁰_i` (removing the
//!    row and column means first keeps activation statistics, whose means dominate, from
//!    crowding all rows into the same columns; the column lists give unpopular columns
//!    candidates too). Equal keys are ordered by a hash of the position, so that on tied
//!    matrices the rows do not all pick the same columns;
//! 3. the assignment problem on that graph: augmenting row reduction, then shortest augmenting
//!    paths by Dijkstra's algorithm with a binary heap — `O(K log n)` per step instead of a
//!    dense row scan of `n` entries;
//! 4. the **duality certificate on the full matrix**: the exact warm start (below) sets
//!    `u_i = min_j fl(c_ij − v_j)` over every entry, which makes `c_ij − u_i − v_j ≥ 0` hold
//!    everywhere, and keeps a row's candidate pair only where it attains that minimum exactly.
//!    Rows whose candidate lists missed a better entry are re-augmented on the dense matrix.
//!
//! If the certificate holds on every row, the candidate solution was optimal and nothing is
//! left to do; otherwise only the violating rows are solved again, exactly. So the result is
//! exactly as optimal as a cold solve. When the candidate graph has no complete matching
//! (ties, forbidden entries), when a few rows own nearly every column minimum (dominant rows:
//! the ε-scaling auction's territory), or when the heap search exceeds a budget of about one
//! dense pass of relaxations, the solver continues as without the presolve. Every pass over the
//! matrix (minima, candidates, certificate) runs over independent rows or column blocks in
//! parallel with `rayon`, merged in an order that depends on the shape only, so the result is
//! bit-identical for any thread count.
//!
//! ## Warm start
//! [`linear_sum_assignment_warm`] re-solves a slightly changed matrix from the dual potentials
//! (and matching) of a previous [`Assignment`]: the row potentials are recomputed as
//! `u_i = min_j (c_ij − v_j)`, the pairs of the previous matching that are still *exactly*
//! tight are kept, and only the remaining rows are augmented (by the augmenting row reduction
//! first when more than 2 % of the rows are left, then by shortest augmenting paths). The result
//! is exactly as optimal as a cold solve; only the work changes.
//!
//! ## References
//! - R. Jonker and A. Volgenant. *A shortest augmenting path algorithm for dense and sparse
//!   linear assignment problems.* Computing 38, 325–340 (1987).
//! - A. Volgenant. *Linear and semi-assignment problems: a core oriented approach.* Computers &
//!   Operations Research 23(10), 917–932 (1996).
//! - D. P. Bertsekas. *The auction algorithm: a distributed relaxation method for the
//!   assignment problem.* Annals of Operations Research 14, 105–123 (1988).
//! - D. F. Crouse. *On implementing 2D rectangular assignment algorithms.* IEEE Transactions on
//!   Aerospace and Electronic Systems 52(4), 1679–1696 (2016).
//! - H. W. Kuhn. *The Hungarian method for the assignment problem.* Naval Research Logistics
//!   Quarterly 2, 83–97 (1955); J. Munkres, *Algorithms for the assignment and transportation
//!   problems*, J. SIAM 5, 32–38 (1957).

// Update the `lap-stats` counters (nothing without that feature).
macro_rules! stat {
    ($s:ident => $($body:tt)*) => {
        #[cfg(feature = "lap-stats")]
        super::stats::with(|$s| { $($body)* });
    };
}
// Start a `lap-stats` phase clock (nothing without that feature).
macro_rules! stat_phase {
    ($name:expr) => {
        #[cfg(feature = "lap-stats")]
        super::stats::phase($name);
    };
}

mod auction;
mod candidates;
mod kernels;
mod kuhn_munkres;
mod native;
mod prepare;
mod sap;
mod scipy_ties;
mod sparse;
#[cfg(feature = "lap-stats")]
mod stats;

use ndarray::ArrayView2;

use crate::error::{Error, Result};
use crate::float::Float;
use crate::permutation::Permutation;

use prepare::Prepared;

/// The solution of a linear assignment problem.
///
/// Pairs are listed SciPy-style: `row_ind` is increasing and `col_ind[k]` is the column of row
/// `row_ind[k]`; there are `min(rows, cols)` pairs. When `rows <= cols`, `row_ind = 0..rows`
/// and `col_ind` is the row → column map.
///
/// The dual potentials certify optimality (linear programming duality). When minimising:
/// `u_i + v_j ≤ C[i, j]` for every finite entry, with equality on every assigned pair, and
/// `v_j ≤ 0` (`u_i ≤ 0`) for the columns (rows) of a rectangular problem that may stay unassigned,
/// with `v_j = 0` (`u_i = 0`) on those that do. When maximising, all inequalities flip
/// (`u_i + v_j ≥ C[i, j]`, `v_j ≥ 0`). Hence `Σ u + Σ v = total`. These hold up to the
/// rounding of the shortest-path phase (a few ulps of `n · max |C|`; the tests check them with
/// a tolerance of `1e-10 · max |C|` at `n = 1000`).
#[derive(Clone, Debug, PartialEq)]
pub struct Assignment {
    /// Row indices of the assigned pairs, increasing.
    pub row_ind: Vec<usize>,
    /// Column indices of the assigned pairs: `col_ind[k]` is the column of row `row_ind[k]`.
    pub col_ind: Vec<usize>,
    /// `Σ_k C[row_ind[k], col_ind[k]]`, summed in f64 from the original entries (never a sum of
    /// dual potentials).
    pub total: f64,
    /// The dual potentials; `None` from [`Solver::KuhnMunkres`], which does not expose them.
    pub duals: Option<Duals>,
    /// Shape `(rows, cols)` of the cost matrix.
    pub shape: (usize, usize),
}

/// Dual potentials of a linear assignment problem (see [`Assignment`] for their meaning).
#[derive(Clone, Debug, PartialEq)]
pub struct Duals {
    /// Row potentials `u`, one per row.
    pub u: Vec<f64>,
    /// Column potentials `v`, one per column.
    pub v: Vec<f64>,
}

impl Assignment {
    /// The assignment as a [`Permutation`] `p` with `p[i] = σ(i)`, when the matrix is square.
    #[must_use]
    pub fn permutation(&self) -> Option<Permutation> {
        if self.shape.0 != self.shape.1 {
            return None;
        }
        Permutation::new(self.col_ind.clone()).ok()
    }

    /// The column assigned to row `i`, if any (`None` also when `i` is out of range).
    ///
    /// Complexity `O(1)` when `rows <= cols`, `O(log rows)` otherwise.
    #[must_use]
    pub fn col_of_row(&self, i: usize) -> Option<usize> {
        if self.shape.0 <= self.shape.1 {
            self.col_ind.get(i).copied()
        } else {
            self.row_ind.binary_search(&i).ok().map(|k| self.col_ind[k])
        }
    }

    /// The row → column map: entry `i` is [`Self::col_of_row`]`(i)`.
    #[must_use]
    pub fn row_to_col(&self) -> Vec<Option<usize>> {
        let mut out = vec![None; self.shape.0];
        for (&r, &c) in self.row_ind.iter().zip(&self.col_ind) {
            out[r] = Some(c);
        }
        out
    }
}

/// Which algorithm solves the problem.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Solver {
    /// Jonker–Volgenant / Crouse shortest augmenting paths in f64 (exact up to the rounding of
    /// the path lengths, like SciPy). The default.
    #[default]
    Native,
    /// `pathfinding::kuhn_munkres` on integer costs. Finite costs are quantised as
    /// `q_ij = round((c_ij − c_min) / s)` with a power-of-two step `s ≥ (c_max − c_min) / K`,
    /// `K = ⌊2^60 / (n (n + 1))⌋` for the `n × m` (`n <= m`) oriented problem, and forbidden
    /// entries get the penalty `(n + 1) (K + 1)`. Each entry moves by at most `s / 2`, so the
    /// returned total exceeds the optimum by at most `n · s` (minimising; maximising: falls short
    /// by at most `n · s`). Costs that are integers (or multiples of a power of two) with a range
    /// of at most `K` are represented exactly (`s ≤ 1` is then a power of two dividing them) and
    /// the result is optimal. The total is recomputed from the original costs. `O(n² m)`.
    KuhnMunkres,
}

/// Whether the native solver first solves an f32 rounding of an f64 matrix (cold solves only).
///
/// The rounded problem is solved cold, and its dual potentials and matching warm-start the
/// exact f64 solve ([`linear_sum_assignment_warm`]'s procedure), which restores exact
/// feasibility and tightness, so the result is exactly as optimal as without the presolve; only
/// the time changes. On large matrices the scans are limited by the memory traffic of the
/// matrix rows, which the f32 copy halves, while the exact pass after it is short: at
/// `n = 4096` on this crate's development machine the presolve takes 20.7 s down to 14.4 s on
/// the hardest family of `BENCHMARKS.md` (`activation_stats_biased`) and is neutral on the
/// others; at `n = 2048` it gains nothing (the f64 rows still come from the cache) and costs up
/// to 40 % on the easy families. It needs an extra `4 · rows · cols` bytes.
///
/// # Examples
/// ```
/// use ndarray::Array2;
/// use llfc::assignment::{solve_with, LapOptions, Presolve};
/// // Small integers plus differences of 1e-9 that f32 rounds away: the presolve sees ties
/// // only, the exact phase still finds the optimum.
/// let c = Array2::from_shape_fn((60, 60), |(i, j)| {
///     ((i * 7 + j * 13) % 5) as f64 + 1e-9 * ((i * 31 + j * 17) % 11) as f64
/// });
/// let with = |presolve| LapOptions { presolve, ..LapOptions::default() };
/// let exact = solve_with(c.view(), false, &with(Presolve::Never))?;
/// let presolved = solve_with(c.view(), false, &with(Presolve::Always))?;
/// assert!((exact.total - presolved.total).abs() < 1e-12);
/// # Ok::<(), llfc::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Presolve {
    /// Presolve when the matrix has at least [`Presolve::AUTO_MIN_ENTRIES`] entries (the default).
    #[default]
    Auto,
    /// Presolve whenever the matrix is f64 (mainly for tests).
    Always,
    /// Never presolve.
    Never,
}

impl Presolve {
    /// Size from which [`Presolve::Auto`] presolves: `2^23` entries (64 MiB of f64, e.g.
    /// `2897 × 2897`).
    pub const AUTO_MIN_ENTRIES: usize = 1 << 23;

    /// Whether a matrix of `entries` entries is presolved.
    fn wanted(self, entries: usize) -> bool {
        match self {
            Self::Auto => entries >= Self::AUTO_MIN_ENTRIES,
            Self::Always => true,
            Self::Never => false,
        }
    }
}

/// Whether the native solver first solves the problem on a sparse set of candidate entries
/// (cold solves only; see "Sparse candidate presolve" in the [module docs](self)).
///
/// Every row keeps its [`Candidates::K`] entries with the smallest `c_ij − min_l c_lj`; the
/// assignment problem on those candidates is solved with heap-based shortest paths, and its
/// column potentials and matching warm-start the exact dense solve, whose first pass checks the
/// duality certificate `c_ij − u_i − v_j ≥ 0` on every entry and re-augments the rows where it
/// fails. The result is exactly as optimal as without it; only the time changes. When the
/// candidates admit no complete matching (ties, forbidden entries) or their search grows too
/// long, the solver continues as without the presolve.
///
/// # Examples
/// ```
/// use ndarray::Array2;
/// use llfc::assignment::{solve_with, Candidates, LapOptions};
/// // Small integers with many tied optima: the candidate optimum is checked against every
/// // entry, and the total is the exact optimum either way.
/// let c = Array2::from_shape_fn((50, 50), |(i, j)| ((i * 7 + j * 3) % 11) as f64);
/// let with = |candidates| LapOptions { candidates, ..LapOptions::default() };
/// let exact = solve_with(c.view(), false, &with(Candidates::Never))?;
/// let sparse = solve_with(c.view(), false, &with(Candidates::Always))?;
/// assert_eq!(exact.total, sparse.total);
/// # Ok::<(), llfc::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Candidates {
    /// Presolve square matrices with at least [`Candidates::AUTO_MIN_ENTRIES`] entries (the
    /// default).
    #[default]
    Auto,
    /// Presolve every matrix (mainly for tests).
    Always,
    /// Never presolve.
    Never,
}

impl Candidates {
    /// Candidates per row.
    pub const K: usize = sparse::K;

    /// Size from which [`Candidates::Auto`] presolves: `2^22` entries (`2048 × 2048`). At
    /// `n = 2048` and 4096 it takes 0.3–0.5× the time of the dense solve on the uniform,
    /// Gaussian-product and activation-statistics families of `BENCHMARKS.md`; at `n = 1024`
    /// its fixed passes cost more than the dense solve saves on the easy families.
    pub const AUTO_MIN_ENTRIES: usize = 1 << 22;

    /// Whether a `rows × cols` problem (internal orientation, `rows <= cols`) is presolved.
    fn wanted(self, rows: usize, cols: usize) -> bool {
        match self {
            Self::Auto => rows == cols && rows * cols >= Self::AUTO_MIN_ENTRIES,
            Self::Always => true,
            Self::Never => false,
        }
    }
}

/// Which of several optimal assignments the native solver returns.
///
/// Only matrices with ties among optimal assignments (a constant matrix, small integer costs)
/// are concerned; every choice is exactly as optimal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Ties {
    /// Whichever optimum the solver reaches first (the default, fastest).
    #[default]
    Any,
    /// The assignment `scipy.optimize.linear_sum_assignment` returns (for example the identity
    /// on a constant matrix, SciPy's issue 11602), for code that relies on it. Small matrices
    /// (up to [`Ties::REPLAY_MAX_ENTRIES`] entries) replay SciPy's algorithm directly; larger
    /// ones are solved as usual, then the dual certificate decides in `O(r c)` whether the
    /// optimum is unique up to `2^-30` of the largest cost or potential, in which case SciPy
    /// returns it too; only otherwise is SciPy's algorithm replayed (`O(r² c)`, SciPy's speed).
    /// Continuous-valued matrices are almost never degenerate, so they keep the native speed.
    Scipy,
}

impl Ties {
    /// Size up to which [`Ties::Scipy`] replays SciPy's algorithm without a native solve first.
    pub const REPLAY_MAX_ENTRIES: usize = 1 << 14;
}

/// Options of [`solve_with`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LapOptions {
    /// The algorithm (default [`Solver::Native`]).
    pub solver: Solver,
    /// The f32 presolve of the native solver (default [`Presolve::Auto`]).
    pub presolve: Presolve,
    /// The sparse candidate presolve of the native solver (default [`Candidates::Auto`]); when
    /// it runs, it replaces the f32 presolve.
    pub candidates: Candidates,
    /// The choice among tied optima (native solver only; default [`Ties::Any`]).
    pub ties: Ties,
}

/// Solve the linear assignment problem `min (or max) Σ_i C[i, σ(i)]` with the default
/// [`Solver::Native`].
///
/// Accepts `f64` and `f32` matrices (`cost.view()`), square or rectangular. See the
/// [module docs](self) for the contract and [`Assignment`] for the output.
///
/// Complexity `O(r² c)` time in the worst case for `r <= c` (typically far less), `O(r + c)`
/// extra memory when the matrix is row-major with `r <= c`, `O(r c)` otherwise (a transposed or
/// rescaled copy).
///
/// # Errors
/// - [`Error::NonFinite`] if an entry is NaN, or `−∞` when minimising (`+∞` when maximising).
/// - [`Error::Infeasible`] if every complete assignment uses a forbidden (`+∞` when minimising,
///   `−∞` when maximising) entry.
///
/// # Examples
/// ```
/// use ndarray::array;
/// use llfc::assignment::linear_sum_assignment;
/// let cost = array![[4.0, 1.0, 3.0], [2.0, 0.0, 5.0], [3.0, 2.0, 2.0]];
/// let a = linear_sum_assignment(cost.view(), false)?;
/// assert_eq!(a.col_ind, vec![1, 0, 2]);
/// assert_eq!(a.total, 5.0);
/// assert_eq!(a.permutation().unwrap().as_slice(), &[1, 0, 2]);
/// // Maximising; a forbidden pair; f32 input.
/// let sim = array![[1.0f32, f32::NEG_INFINITY], [3.0, 2.0]];
/// assert_eq!(linear_sum_assignment(sim.view(), true)?.col_ind, vec![0, 1]);
/// # Ok::<(), llfc::Error>(())
/// ```
pub fn linear_sum_assignment<F: Float>(
    cost: ArrayView2<'_, F>,
    maximize: bool,
) -> Result<Assignment> {
    solve_with(cost, maximize, &LapOptions::default())
}

/// [`linear_sum_assignment`] with a choice of [`Solver`].
///
/// # Errors
/// As [`linear_sum_assignment`].
///
/// # Examples
/// ```
/// use ndarray::array;
/// use llfc::assignment::{solve_with, LapOptions, Solver};
/// let cost = array![[4.0, 1.0, 3.0], [2.0, 0.0, 5.0], [3.0, 2.0, 2.0]];
/// let opts = LapOptions { solver: Solver::KuhnMunkres, ..LapOptions::default() };
/// assert_eq!(solve_with(cost.view(), false, &opts)?.total, 5.0);
/// # Ok::<(), llfc::Error>(())
/// ```
pub fn solve_with<F: Float>(
    cost: ArrayView2<'_, F>,
    maximize: bool,
    options: &LapOptions,
) -> Result<Assignment> {
    let prep = Prepared::new(cost, maximize)?;
    match options.solver {
        Solver::Native => prep.solve_native(None, options),
        Solver::KuhnMunkres => prep.solve_kuhn_munkres(),
    }
}

/// Warm-started [`linear_sum_assignment`] (native solver): re-solve a matrix close to the one
/// that produced `previous`, reusing its dual potentials and matching.
///
/// Let `v` be the potentials of the side that is assigned completely on the other side (the
/// columns when `rows <= cols`). The solver sets `u_i = min_j fl(c_ij − v_j)` (one pass over the
/// matrix), keeps row `i`'s previous pair — else its arg-min — if it attains that minimum exactly
/// and its column is still untaken, and augments the other rows only (JV's augmenting row
/// reduction first when more than 2 % of the rows are left, then shortest augmenting paths).
/// The reduced costs of this start are non-negative and its pairs tight *exactly* in floating
/// point, so the result is optimal for `cost` whatever `previous` was (a stale or unrelated
/// warm start only costs time). When the matrix changed a little, few rows need augmenting.
///
/// # Errors
/// As [`linear_sum_assignment`]; also [`Error::ShapeMismatch`] if `previous.shape` differs from
/// `cost`'s, [`Error::InvalidArgument`] if `previous.duals` is `None`, and [`Error::NonFinite`] if
/// a potential is not finite.
///
/// # Examples
/// ```
/// use ndarray::array;
/// use llfc::assignment::{linear_sum_assignment, linear_sum_assignment_warm};
/// let s1 = array![[0.9, 0.1, 0.2], [0.3, 0.8, 0.1], [0.2, 0.3, 0.7]];
/// let a1 = linear_sum_assignment(s1.view(), true)?;
/// let s2 = &s1 + &array![[0.0, 0.05, 0.0], [0.0, 0.0, 0.02], [0.01, 0.0, 0.0]];
/// let a2 = linear_sum_assignment_warm(s2.view(), true, &a1)?;
/// assert_eq!(a2.total, linear_sum_assignment(s2.view(), true)?.total);
/// # Ok::<(), llfc::Error>(())
/// ```
pub fn linear_sum_assignment_warm<F: Float>(
    cost: ArrayView2<'_, F>,
    maximize: bool,
    previous: &Assignment,
) -> Result<Assignment> {
    solve_warm_with(cost, maximize, previous, Ties::Any)
}

/// [`linear_sum_assignment_warm`] with a choice among tied optima ([`Ties`]).
///
/// # Errors
/// As [`linear_sum_assignment_warm`].
pub fn solve_warm_with<F: Float>(
    cost: ArrayView2<'_, F>,
    maximize: bool,
    previous: &Assignment,
    ties: Ties,
) -> Result<Assignment> {
    let shape = (cost.nrows(), cost.ncols());
    if previous.shape != shape {
        return Err(Error::ShapeMismatch {
            what: "warm start: previous assignment versus cost matrix".into(),
            expected: vec![shape.0, shape.1],
            found: vec![previous.shape.0, previous.shape.1],
        });
    }
    let duals = previous.duals.as_ref().ok_or(Error::InvalidArgument {
        name: "previous",
        reason: "the warm start needs dual potentials (the Kuhn–Munkres backend gives none)".into(),
    })?;
    if duals.u.len() != shape.0 || duals.v.len() != shape.1 {
        return Err(Error::ShapeMismatch {
            what: "warm start: dual potentials (rows + cols)".into(),
            expected: vec![shape.0, shape.1],
            found: vec![duals.u.len(), duals.v.len()],
        });
    }
    if duals.u.iter().chain(&duals.v).any(|x| !x.is_finite()) {
        return Err(Error::NonFinite {
            what: "warm start dual potentials".into(),
        });
    }
    let prep = Prepared::new(cost, maximize)?;
    let options = LapOptions {
        presolve: Presolve::Never,
        candidates: Candidates::Never,
        ties,
        ..LapOptions::default()
    };
    prep.solve_native(Some(previous), &options)
}
