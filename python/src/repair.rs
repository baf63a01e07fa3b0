//! REPAIR and the BatchNorm reset (`llfc::repair`, `llfc::mlp::repair_report`).
//!
//! The drivers take the caller's measurement as a Python callable
//! `measure(items, features) -> list[UnitStats]` (the Python layer turns `items` into a dict and
//! arrays into `UnitStats`); it is called with the GIL, the crate's loop runs without it.

use llfc::repair::{
    BatchNormLayer, Correction, RepairLayer, RepairOptions, Repaired, RunningVariance, Target,
    UnitStats,
};
use llfc::{Float, Params};
use ndarray::Array1;
use numpy::{IntoPyArray, PyArray1, PyReadonlyArray1};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::callback::Raised;
use crate::convert::{owned, params, params_to_py, Array2F, ArrayDF};
use crate::errors::{bad_choice, ToPy};
use crate::{with_floats, with_pair, with_params};

type Items<'py> = Vec<(String, ArrayDF<'py>)>;

/// Per-unit count, mean and variance of features, streamed and mergeable (f64).
#[pyclass(name = "UnitStats", module = "llfc")]
#[derive(Clone)]
pub struct PyUnitStats {
    inner: UnitStats,
}

#[pymethods]
impl PyUnitStats {
    /// Empty statistics of `units` units.
    #[new]
    fn new(units: usize) -> Self {
        Self {
            inner: UnitStats::new(units),
        }
    }

    /// The statistics of one batch `[samples, units]` or `[samples, channels, h, w]`.
    #[staticmethod]
    fn from_features(py: Python<'_>, features: ArrayDF<'_>) -> PyResult<Self> {
        let inner = with_floats!(features => py.detach(|| UnitStats::from_features(features)));
        Ok(Self { inner: inner.py()? })
    }

    /// Statistics given by `count`, per-unit `mean` and population `variance`.
    #[staticmethod]
    fn from_moments(
        count: u64,
        mean: PyReadonlyArray1<'_, f64>,
        variance: PyReadonlyArray1<'_, f64>,
    ) -> PyResult<Self> {
        let variance = variance.as_array().to_owned();
        let inner = UnitStats::from_moments(count, mean.as_array().to_owned(), &variance).py()?;
        Ok(Self { inner })
    }

    /// Add a batch (same layouts as `from_features`).
    fn update(&mut self, py: Python<'_>, features: ArrayDF<'_>) -> PyResult<()> {
        let inner = &mut self.inner;
        with_floats!(features => py.detach(|| inner.update(features))).py()
    }

    /// Merge statistics gathered on other samples.
    fn merge(&mut self, other: PyRef<'_, Self>) -> PyResult<()> {
        let other = other.inner.clone();
        self.inner.merge(&other).py()
    }

    /// Number of samples seen (for conv maps, samples · h · w).
    #[getter]
    fn count(&self) -> u64 {
        self.inner.count()
    }

    /// Number of units (channels).
    #[getter]
    fn units(&self) -> usize {
        self.inner.units()
    }

    /// Per-unit mean.
    #[getter]
    fn mean<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f64>> {
        self.inner.mean().to_owned().into_pyarray(py)
    }

    /// Per-unit population variance `Σ (x − μ)² / n`.
    #[getter]
    fn variance<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f64>> {
        self.inner.variance().into_pyarray(py)
    }

    /// Per-unit population standard deviation.
    #[getter]
    fn std<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f64>> {
        self.inner.std().into_pyarray(py)
    }

    /// Per-unit unbiased variance `Σ (x − μ)² / (n − 1)` (PyTorch's `running_var`).
    fn unbiased_variance<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray1<f64>>> {
        Ok(self.inner.unbiased_variance().py()?.into_pyarray(py))
    }

    fn __repr__(&self) -> String {
        format!(
            "UnitStats(units={}, count={})",
            self.inner.units(),
            self.inner.count()
        )
    }
}

/// `layers` as given by the Python layer: `(feature, weight, bias)` triples.
fn repair_layers(layers: Vec<(String, String, String)>) -> Vec<RepairLayer> {
    layers
        .into_iter()
        .map(|(f, w, b)| RepairLayer::new(f, w, b))
        .collect()
}

/// The caller's `measure` as the crate's measurement closure of `Params<F>`.
fn measure_with<'a, F: Float + numpy::Element>(
    measure: &'a Py<PyAny>,
    raised: &'a mut Raised,
) -> impl FnMut(&Params<F>, &[&str]) -> llfc::Result<Vec<UnitStats>> + 'a {
    move |p: &Params<F>, features: &[&str]| {
        raised.call("measure", |py| {
            let items = params_to_py(py, p.clone())?;
            let out = measure.call1(py, (items, features.to_vec()))?;
            let stats: Vec<PyRef<'_, PyUnitStats>> = out.extract(py)?;
            Ok(stats.iter().map(|s| s.inner.clone()).collect())
        })
    }
}

fn options(zero_std_tolerance: f64) -> RepairOptions {
    RepairOptions { zero_std_tolerance }
}

/// The report of a repair as a dict: `items` (the repaired parameters) and `layers`.
fn repaired_dict<'py, F: Float + numpy::Element>(
    py: Python<'py>,
    r: Repaired<F>,
) -> PyResult<Bound<'py, PyDict>> {
    let layers = r
        .layers
        .into_iter()
        .map(|l| {
            let d = PyDict::new(py);
            d.set_item("feature", l.layer.feature)?;
            d.set_item("weight", l.layer.weight)?;
            d.set_item("bias", l.layer.bias)?;
            d.set_item("measured", PyUnitStats { inner: l.measured })?;
            d.set_item("target_mean", l.target.mean.into_pyarray(py))?;
            d.set_item("target_std", l.target.std.into_pyarray(py))?;
            d.set_item("scale", l.correction.scale.into_pyarray(py))?;
            d.set_item("shift", l.correction.shift.into_pyarray(py))?;
            d.set_item("zero_variance", l.correction.zero_variance)?;
            Ok(d)
        })
        .collect::<PyResult<Vec<_>>>()?;
    let d = PyDict::new(py);
    d.set_item("items", params_to_py(py, r.params)?)?;
    d.set_item("layers", layers)?;
    Ok(d)
}

/// REPAIR of `θ(α) = α A + (1 − α) B` with the caller's measurement (`llfc::repair::repair`).
#[pyfunction]
#[pyo3(signature = (params_a, params_b, alpha, layers, measure, zero_std_tolerance = 1e-9))]
fn repair<'py>(
    py: Python<'py>,
    params_a: Items<'_>,
    params_b: Items<'_>,
    alpha: f64,
    layers: Vec<(String, String, String)>,
    measure: Py<PyAny>,
    zero_std_tolerance: f64,
) -> PyResult<Bound<'py, PyDict>> {
    let layers = repair_layers(layers);
    let mut raised = Raised::default();
    with_pair!(params(params_a)?, params(params_b)?, |a, b| {
        let m = measure_with(&measure, &mut raised);
        let opts = options(zero_std_tolerance);
        let r = py.detach(|| llfc::repair::repair(&a, &b, alpha, &layers, m, &opts));
        repaired_dict(py, raised.finish(r)?)
    })
}

/// The layer-by-layer part of REPAIR towards given targets `(mean, std)` per layer.
#[pyfunction]
#[pyo3(signature = (theta, layers, targets, measure, zero_std_tolerance = 1e-9))]
fn repair_towards<'py>(
    py: Python<'py>,
    theta: Items<'_>,
    layers: Vec<(String, String, String)>,
    targets: Vec<(PyReadonlyArray1<'_, f64>, PyReadonlyArray1<'_, f64>)>,
    measure: Py<PyAny>,
    zero_std_tolerance: f64,
) -> PyResult<Bound<'py, PyDict>> {
    let layers = repair_layers(layers);
    let targets: Vec<Target> = targets
        .iter()
        .map(|(m, s)| Target {
            mean: m.as_array().to_owned(),
            std: s.as_array().to_owned(),
        })
        .collect();
    let mut raised = Raised::default();
    with_params!(params(theta)?, |t| {
        let m = measure_with(&measure, &mut raised);
        let opts = options(zero_std_tolerance);
        let r = py.detach(|| llfc::repair::repair_towards(&t, &layers, &targets, m, &opts));
        repaired_dict(py, raised.finish(r)?)
    })
}

/// The BatchNorm reset (`llfc::repair::reset_batchnorm`); `layers` are `(input, running_mean,
/// running_var)` triples.
#[pyfunction]
#[pyo3(signature = (params, layers, measure, variance = "unbiased"))]
fn reset_batchnorm<'py>(
    py: Python<'py>,
    params: Items<'_>,
    layers: Vec<(String, String, String)>,
    measure: Py<PyAny>,
    variance: &str,
) -> PyResult<Bound<'py, pyo3::types::PyList>> {
    let variance = match variance {
        "unbiased" => RunningVariance::Unbiased,
        "population" => RunningVariance::Population,
        _ => {
            return Err(bad_choice(
                "variance",
                variance,
                &["unbiased", "population"],
            ))
        }
    };
    let layers: Vec<BatchNormLayer> = layers
        .into_iter()
        .map(|(input, running_mean, running_var)| BatchNormLayer {
            input,
            running_mean,
            running_var,
        })
        .collect();
    let mut raised = Raised::default();
    with_params!(self::params(params)?, |p| {
        let m = measure_with(&measure, &mut raised);
        let r = py.detach(|| llfc::repair::reset_batchnorm(&p, &layers, m, variance));
        params_to_py(py, raised.finish(r)?)
    })
}

/// Fold `z ← scale ⊙ z + shift` into the layer `weight`, `bias`.
#[pyfunction]
fn fold_correction<'py>(
    py: Python<'py>,
    params: Items<'_>,
    weight: &str,
    bias: &str,
    scale: PyReadonlyArray1<'_, f64>,
    shift: PyReadonlyArray1<'_, f64>,
) -> PyResult<Bound<'py, pyo3::types::PyList>> {
    let (scale, shift): (Array1<f64>, Array1<f64>) =
        (scale.as_array().to_owned(), shift.as_array().to_owned());
    if scale.len() != shift.len() {
        return Err(pyo3::exceptions::PyValueError::new_err(format!(
            "scale ({}) and shift ({}) must have one entry per unit",
            scale.len(),
            shift.len()
        )));
    }
    let c = Correction {
        scale,
        shift,
        zero_variance: Vec::new(),
    };
    with_params!(self::params(params)?, |p| {
        params_to_py(
            py,
            llfc::repair::fold_correction(&p, weight, bias, &c).py()?,
        )
    })
}

/// REPAIR of the reference MLP on inputs `x` (`llfc::mlp::repair_report`), GIL released.
#[pyfunction]
#[pyo3(signature = (params_a, params_b, alpha, x, zero_std_tolerance = 1e-9))]
fn mlp_repair<'py>(
    py: Python<'py>,
    params_a: Items<'_>,
    params_b: Items<'_>,
    alpha: f64,
    x: Array2F<'_>,
    zero_std_tolerance: f64,
) -> PyResult<Bound<'py, PyDict>> {
    let opts = options(zero_std_tolerance);
    with_pair!(params(params_a)?, params(params_b)?, |a, b| {
        let x: ndarray::Array2<_> = owned(&x);
        let r = py.detach(|| llfc::mlp::repair_report(&a, &b, alpha, &x, &opts));
        repaired_dict(py, r.py()?)
    })
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyUnitStats>()?;
    m.add_function(wrap_pyfunction!(repair, m)?)?;
    m.add_function(wrap_pyfunction!(repair_towards, m)?)?;
    m.add_function(wrap_pyfunction!(reset_batchnorm, m)?)?;
    m.add_function(wrap_pyfunction!(fold_correction, m)?)?;
    m.add_function(wrap_pyfunction!(mlp_repair, m)?)?;
    Ok(())
}
