//! Weight matching, activation matching, commutativity matching and `apply_permutations`.

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use llfc::matching::activation::{self, ActivationMatchingOptions, ActivationStats, Statistic};
use llfc::matching::commutativity::{
    self, CommutativityMatchingOptions, CommutativityStart, CommutativityStats,
};
use llfc::matching::weight::{self, MatchingEvent, WeightMatchingOptions};
use llfc::{Float, Params, Permutation, PermutationSpec};
use numpy::{IntoPyArray, PyArray2, PyReadonlyArray1};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::convert::{params, params_to_py, perms, perms_to_py, Array2F, ArrayDF};
use crate::errors::{bad_choice, ToPy};
use crate::spec::PySpec;
use crate::{with_floats, with_pair, with_params};

fn statistic(name: &str) -> PyResult<Statistic> {
    match name {
        "correlation" => Ok(Statistic::Correlation),
        "covariance" => Ok(Statistic::Covariance),
        "inner-product" | "inner_product" => Ok(Statistic::InnerProduct),
        _ => Err(bad_choice(
            "statistic",
            name,
            &["correlation", "covariance", "inner-product"],
        )),
    }
}

type Items<'py> = Vec<(String, ArrayDF<'py>)>;
type PermArgs<'py> = BTreeMap<String, PyReadonlyArray1<'py, i64>>;

/// The event as the dict handed to the Python `progress` callable.
fn event_dict<'py>(py: Python<'py>, e: &MatchingEvent<'_>) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    match e {
        MatchingEvent::Update {
            sweep,
            perm,
            before,
            after,
        } => {
            d.set_item("event", "step")?;
            d.set_item("sweep", sweep)?;
            d.set_item("perm", perm)?;
            d.set_item("before", before)?;
            d.set_item("after", after)?;
        }
        MatchingEvent::Sweep {
            sweep,
            objective,
            progress,
        } => {
            d.set_item("event", "sweep")?;
            d.set_item("sweep", sweep)?;
            d.set_item("objective", objective)?;
            d.set_item("progress", progress)?;
        }
    }
    Ok(d)
}

/// Weight matching with the GIL released; between steps the GIL is taken back briefly to check
/// for signals (Ctrl-C) and to call `progress`; an exception from either stops the run and is
/// raised.
#[pyfunction]
#[pyo3(signature = (spec, params_a, params_b, seed = 0, max_iter = 100, order = None, init = None, tolerance = 1e-12, solver = "native", warm_start = true, progress = None))]
#[allow(clippy::too_many_arguments)]
fn weight_matching<'py>(
    py: Python<'py>,
    spec: &PySpec,
    params_a: Items<'_>,
    params_b: Items<'_>,
    seed: u64,
    max_iter: usize,
    order: Option<Vec<String>>,
    init: Option<PermArgs<'_>>,
    tolerance: f64,
    solver: &str,
    warm_start: bool,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let options = WeightMatchingOptions {
        max_iter,
        seed,
        order,
        init: init.map(perms).transpose()?,
        tolerance,
        solver: crate::assignment::solver(solver)?,
        warm_start,
    };
    let spec = &spec.inner;
    let mut raised: Option<PyErr> = None;
    let result = with_pair!(params(params_a)?, params(params_b)?, |a, b| {
        py.detach(|| {
            weight::weight_matching_controlled(spec, &a, &b, &options, |e| {
                Python::attach(|py| {
                    let called = py.check_signals().and_then(|()| match &progress {
                        Some(cb) => cb.call1(py, (event_dict(py, e)?,)).map(|_| ()),
                        None => Ok(()),
                    });
                    match called {
                        Ok(()) => ControlFlow::Continue(()),
                        Err(err) => {
                            raised = Some(err);
                            ControlFlow::Break(())
                        }
                    }
                })
            })
        })
    });
    if let Some(err) = raised {
        return Err(err);
    }
    let m = result.py()?;
    let d = PyDict::new(py);
    d.set_item("perms", perms_to_py(py, &m.perms)?)?;
    d.set_item("objective", m.objective)?;
    d.set_item("initial_objective", m.initial_objective)?;
    d.set_item("sweeps", m.sweeps)?;
    d.set_item("converged", m.converged)?;
    d.set_item("history", m.history)?;
    Ok(d)
}

/// `apply_permutations(spec, perms, params)`: new arrays, in the order of `params`.
#[pyfunction]
fn apply_permutations<'py>(
    py: Python<'py>,
    spec: &PySpec,
    perms: PermArgs<'_>,
    params: Items<'_>,
) -> PyResult<Bound<'py, PyList>> {
    let perms = self::perms(perms)?;
    let spec: &PermutationSpec = &spec.inner;
    with_params!(self::params(params)?, |p| {
        let out = py
            .detach(|| llfc::apply_permutations(spec, &perms, &p))
            .py()?;
        params_to_py(py, out)
    })
}

/// Streaming cross statistics of two layers' features.
#[pyclass(name = "ActivationStats", module = "llfc")]
pub struct PyActivationStats {
    inner: ActivationStats,
}

#[pymethods]
impl PyActivationStats {
    #[new]
    fn new(d_a: usize, d_b: usize) -> Self {
        Self {
            inner: ActivationStats::new(d_a, d_b),
        }
    }

    /// Add a batch: `[N, d]`, `[N, c, h, w]` (channels are the units) or `[N, t, d]` (tokens
    /// are samples: viewed as `[N·t, d]`).
    fn update(&mut self, py: Python<'_>, a: ArrayDF<'_>, b: ArrayDF<'_>) -> PyResult<()> {
        let inner = &mut self.inner;
        with_floats!(a, b => {
            let (a, b) = (tokens_as_samples(a), tokens_as_samples(b));
            py.detach(|| inner.update_dyn(a.view(), b.view()))
        })
        .py()
    }

    fn merge(&mut self, other: PyRef<'_, Self>) -> PyResult<()> {
        let other = other.inner.clone();
        self.inner.merge(&other).py()
    }

    #[pyo3(signature = (statistic = "correlation"))]
    fn statistic<'py>(
        &self,
        py: Python<'py>,
        statistic: &str,
    ) -> PyResult<Bound<'py, PyArray2<f64>>> {
        let s = self::statistic(statistic)?;
        let inner = &self.inner;
        Ok(py.detach(|| inner.statistic(s)).py()?.into_pyarray(py))
    }

    #[getter]
    fn count(&self) -> u64 {
        self.inner.count()
    }

    #[getter]
    fn dims(&self) -> (usize, usize) {
        self.inner.dims()
    }

    fn __repr__(&self) -> String {
        let (a, b) = self.inner.dims();
        format!(
            "ActivationStats(d_a={a}, d_b={b}, count={})",
            self.inner.count()
        )
    }
}

/// A rank-3 `[N, t, d]` array as `[N·t, d]` (borrowed when it is contiguous); other ranks as
/// they are.
fn tokens_as_samples<F: Float>(
    x: ndarray::ArrayViewD<'_, F>,
) -> ndarray::CowArray<'_, F, ndarray::IxDyn> {
    if x.ndim() != 3 {
        return x.into();
    }
    let s = x.shape().to_vec();
    let shape = ndarray::IxDyn(&[s[0] * s[1], s[2]]);
    match x.clone().into_shape_with_order(shape.clone()) {
        Ok(v) => v.into(),
        Err(_) => x
            .as_standard_layout()
            .into_owned()
            .into_shape_with_order(shape)
            .expect("a standard-layout array reshapes")
            .into(),
    }
}

/// Activation matching: one LAP per layer (in parallel), GIL released.
#[pyfunction]
#[pyo3(signature = (stats, statistic = "correlation", solver = "native"))]
fn activation_matching<'py>(
    py: Python<'py>,
    stats: BTreeMap<String, PyRef<'_, PyActivationStats>>,
    statistic: &str,
    solver: &str,
) -> PyResult<Bound<'py, PyDict>> {
    let options = ActivationMatchingOptions {
        statistic: self::statistic(statistic)?,
        solver: crate::assignment::solver(solver)?,
    };
    let stats: BTreeMap<String, ActivationStats> = stats
        .into_iter()
        .map(|(k, v)| (k, v.inner.clone()))
        .collect();
    let perms = py
        .detach(|| activation::activation_matching(&stats, &options))
        .py()?;
    perms_to_py(py, &perms)
}

fn start(name: &str) -> PyResult<CommutativityStart> {
    match name {
        "identity" => Ok(CommutativityStart::Identity),
        "weight" => Ok(CommutativityStart::WeightMatching),
        "activation" => Ok(CommutativityStart::ActivationMatching),
        _ => Err(bad_choice(
            "start",
            name,
            &["identity", "weight", "activation"],
        )),
    }
}

fn comm_stats<F: Float>(
    a: &Params<F>,
    b: &Params<F>,
    x: ndarray::ArrayView2<'_, F>,
) -> llfc::Result<Vec<CommutativityStats>> {
    commutativity::mlp_commutativity_stats(a, b, x)
}

/// Commutativity matching of an MLP pair on inputs `x` (GIL released).
#[pyfunction]
#[pyo3(signature = (params_a, params_b, x, start = "identity", statistic = "correlation", max_iter = 100, seed = 0, tolerance = 1e-4))]
#[allow(clippy::too_many_arguments)]
fn commutativity_matching<'py>(
    py: Python<'py>,
    params_a: Items<'_>,
    params_b: Items<'_>,
    x: Array2F<'_>,
    start: &str,
    statistic: &str,
    max_iter: usize,
    seed: u64,
    tolerance: f64,
) -> PyResult<Bound<'py, PyDict>> {
    let options = CommutativityMatchingOptions {
        start: self::start(start)?,
        statistic: self::statistic(statistic)?,
        max_iter,
        seed,
        tolerance,
        ..CommutativityMatchingOptions::default()
    };
    let m = with_pair!(params(params_a)?, params(params_b)?, |a, b| {
        let x: ndarray::Array2<_> = crate::convert::owned(&x);
        py.detach(|| {
            let stats = comm_stats(&a, &b, x.view())?;
            commutativity::commutativity_matching(&a, &b, &stats, &options)
        })
    })
    .py()?;
    let d = PyDict::new(py);
    d.set_item("perms", perms_to_py(py, &m.perms)?)?;
    d.set_item("objective", m.objective)?;
    d.set_item("initial_objective", m.initial_objective)?;
    d.set_item("layer_objectives", m.layer_objectives)?;
    d.set_item("sweeps", m.sweeps)?;
    d.set_item("converged", m.converged)?;
    Ok(d)
}

/// The commutativity objective `Σ_ℓ J_ℓ` of (A, π(B)) on inputs `x`.
#[pyfunction]
fn commutativity_objective<'py>(
    py: Python<'py>,
    params_a: Items<'_>,
    params_b: Items<'_>,
    x: Array2F<'_>,
    perms: PermArgs<'_>,
) -> PyResult<Bound<'py, PyDict>> {
    let perms: BTreeMap<String, Permutation> = self::perms(perms)?;
    let o = with_pair!(params(params_a)?, params(params_b)?, |a, b| {
        let x: ndarray::Array2<_> = crate::convert::owned(&x);
        py.detach(|| {
            let stats = comm_stats(&a, &b, x.view())?;
            commutativity::commutativity_objective(&a, &b, &stats, &perms)
        })
    })
    .py()?;
    let d = PyDict::new(py);
    d.set_item("total", o.total)?;
    d.set_item("layers", o.layers)?;
    Ok(d)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyActivationStats>()?;
    m.add_function(wrap_pyfunction!(weight_matching, m)?)?;
    m.add_function(wrap_pyfunction!(apply_permutations, m)?)?;
    m.add_function(wrap_pyfunction!(activation_matching, m)?)?;
    m.add_function(wrap_pyfunction!(commutativity_matching, m)?)?;
    m.add_function(wrap_pyfunction!(commutativity_objective, m)?)?;
    Ok(())
}
