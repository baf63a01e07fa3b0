//! `linear_sum_assignment` and warm-startable `solve_assignment`.

use llfc::assignment::{self, Assignment, Candidates, LapOptions, Presolve, Solver, Ties};
use numpy::{IntoPyArray, PyArray1};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::convert::{indices, Array2F};
use crate::errors::{bad_choice, ToPy};
use crate::with_floats;

/// The solution of a linear assignment problem, with its dual potentials (reusable as a warm
/// start).
#[pyclass(name = "Assignment", module = "llfc", frozen)]
pub struct PyAssignment {
    inner: Assignment,
}

#[pymethods]
impl PyAssignment {
    /// Row indices of the assigned pairs (int64, increasing).
    #[getter]
    fn row_ind<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<i64>> {
        indices(py, &self.inner.row_ind)
    }

    /// Column indices of the assigned pairs (int64).
    #[getter]
    fn col_ind<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<i64>> {
        indices(py, &self.inner.col_ind)
    }

    /// The total cost of the assignment, summed in float64 from the original entries.
    #[getter]
    fn total(&self) -> f64 {
        self.inner.total
    }

    /// Row potentials `u` (None from the Kuhn–Munkres solver).
    #[getter]
    fn u<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyArray1<f64>>> {
        self.inner
            .duals
            .as_ref()
            .map(|d| d.u.clone().into_pyarray(py))
    }

    /// Column potentials `v` (None from the Kuhn–Munkres solver).
    #[getter]
    fn v<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyArray1<f64>>> {
        self.inner
            .duals
            .as_ref()
            .map(|d| d.v.clone().into_pyarray(py))
    }

    /// Shape `(rows, cols)` of the cost matrix.
    #[getter]
    fn shape(&self) -> (usize, usize) {
        self.inner.shape
    }

    fn __repr__(&self) -> String {
        format!(
            "Assignment(shape={:?}, pairs={}, total={})",
            self.inner.shape,
            self.inner.row_ind.len(),
            self.inner.total
        )
    }
}

pub fn solver(name: &str) -> PyResult<Solver> {
    match name {
        "native" => Ok(Solver::Native),
        "kuhn-munkres" | "kuhn_munkres" => Ok(Solver::KuhnMunkres),
        _ => Err(bad_choice("solver", name, &["native", "kuhn-munkres"])),
    }
}

fn ties(name: &str) -> PyResult<Ties> {
    match name {
        "scipy" => Ok(Ties::Scipy),
        "any" => Ok(Ties::Any),
        _ => Err(bad_choice("ties", name, &["scipy", "any"])),
    }
}

/// `auto|always|never` as one of `modes` (in that order), or a ValueError naming `what`.
fn mode<T: Copy>(what: &str, name: &str, modes: [T; 3]) -> PyResult<T> {
    match name {
        "auto" => Ok(modes[0]),
        "always" => Ok(modes[1]),
        "never" => Ok(modes[2]),
        _ => Err(bad_choice(what, name, &["auto", "always", "never"])),
    }
}

/// Solve the assignment problem on a float32/float64 matrix (any memory order), GIL released.
#[pyfunction]
#[pyo3(signature = (
    cost,
    maximize = false,
    solver = "native",
    ties = "scipy",
    warm_start = None,
    presolve = "auto",
    candidates = "auto"
))]
#[allow(clippy::too_many_arguments)]
fn solve_assignment(
    py: Python<'_>,
    cost: Array2F<'_>,
    maximize: bool,
    solver: &str,
    ties: &str,
    warm_start: Option<PyRef<'_, PyAssignment>>,
    presolve: &str,
    candidates: &str,
) -> PyResult<PyAssignment> {
    let options = LapOptions {
        solver: self::solver(solver)?,
        ties: self::ties(ties)?,
        presolve: mode(
            "presolve",
            presolve,
            [Presolve::Auto, Presolve::Always, Presolve::Never],
        )?,
        candidates: mode(
            "candidates",
            candidates,
            [Candidates::Auto, Candidates::Always, Candidates::Never],
        )?,
    };
    if warm_start.is_some() && options.solver != Solver::Native {
        return Err(PyValueError::new_err(
            "warm starts need the native solver (solver=\"native\")",
        ));
    }
    let previous: Option<&Assignment> = warm_start.as_ref().map(|p| &p.inner);
    let inner =
        with_floats!(cost => py.detach(|| solve(cost, maximize, &options, previous))).py()?;
    Ok(PyAssignment { inner })
}

fn solve<F: llfc::Float>(
    c: ndarray::ArrayView2<'_, F>,
    maximize: bool,
    options: &LapOptions,
    previous: Option<&Assignment>,
) -> llfc::Result<Assignment> {
    match previous {
        Some(p) => assignment::solve_warm_with(c, maximize, p, options.ties),
        None => assignment::solve_with(c, maximize, options),
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyAssignment>()?;
    m.add_function(wrap_pyfunction!(solve_assignment, m)?)?;
    Ok(())
}
