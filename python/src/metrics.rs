//! LLFC metrics and LMC barriers.

use llfc::lmc::{self, BarrierKind};
use llfc::metrics::{self, CosineVariant, SampleStats};
use numpy::IntoPyArray;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::convert::{Array2F, ArrayDF};
use crate::errors::{bad_choice, ToPy};
use crate::with_floats;

fn variant(name: &str) -> PyResult<CosineVariant> {
    match name {
        "signed" => Ok(CosineVariant::Signed),
        "absolute" => Ok(CosineVariant::Absolute),
        _ => Err(bad_choice("variant", name, &["signed", "absolute"])),
    }
}

/// `SampleStats` as a dict: `values` (NaN for a skipped sample), `count`, `skipped`, `mean`,
/// `std`.
fn stats_dict<'py>(py: Python<'py>, s: SampleStats) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    let values: Vec<f64> = s.values.iter().map(|v| v.unwrap_or(f64::NAN)).collect();
    d.set_item("values", values.into_pyarray(py))?;
    d.set_item("count", s.count)?;
    d.set_item("skipped", s.skipped)?;
    d.set_item("mean", s.mean)?;
    d.set_item("std", s.std)?;
    Ok(d)
}

#[pyfunction]
#[pyo3(signature = (a, b, variant = "signed"))]
fn cosine_distances<'py>(
    py: Python<'py>,
    a: ArrayDF<'_>,
    b: ArrayDF<'_>,
    variant: &str,
) -> PyResult<Bound<'py, PyDict>> {
    let v = self::variant(variant)?;
    let s = with_floats!(a, b => py.detach(|| metrics::cosine_distances(&a, &b, v))).py()?;
    stats_dict(py, s)
}

#[pyfunction]
#[pyo3(signature = (f_alpha, f_a, f_b, alpha, variant = "signed"))]
fn llfc_layer<'py>(
    py: Python<'py>,
    f_alpha: ArrayDF<'_>,
    f_a: ArrayDF<'_>,
    f_b: ArrayDF<'_>,
    alpha: f64,
    variant: &str,
) -> PyResult<Bound<'py, PyDict>> {
    let v = self::variant(variant)?;
    let l = with_floats!(f_alpha, f_a, f_b => py.detach(|| {
        metrics::llfc_layer(&f_alpha, &f_a, &f_b, alpha, v)
    }))
    .py()?;
    let d = PyDict::new(py);
    d.set_item("alpha", l.alpha)?;
    d.set_item("distance", stats_dict(py, l.distance)?)?;
    d.set_item("baseline", stats_dict(py, l.baseline)?)?;
    d.set_item("coef", stats_dict(py, l.scale.coef)?)?;
    d.set_item("c", stats_dict(py, l.scale.c)?)?;
    d.set_item("matrix_coef", l.scale.matrix_coef)?;
    d.set_item("matrix_c", l.scale.matrix_c)?;
    Ok(d)
}

#[pyfunction]
fn weak_additivity<'py>(
    py: Python<'py>,
    z_a: ArrayDF<'_>,
    z_b: ArrayDF<'_>,
    alpha: f64,
) -> PyResult<Bound<'py, PyDict>> {
    let w =
        with_floats!(z_a, z_b => py.detach(|| metrics::weak_additivity(&z_a, &z_b, alpha))).py()?;
    let d = PyDict::new(py);
    d.set_item("alpha", w.alpha)?;
    d.set_item("relative", w.relative)?;
    d.set_item("vanilla", w.vanilla)?;
    d.set_item("cosine", stats_dict(py, w.cosine)?)?;
    Ok(d)
}

/// `R = (H_A − H_B)(W_A − W_B)ᵀ` (`[samples, out]`) in the inputs' precision.
#[pyfunction]
fn commutativity_residual<'py>(
    py: Python<'py>,
    w_a: Array2F<'_>,
    w_b: Array2F<'_>,
    h_a: Array2F<'_>,
    h_b: Array2F<'_>,
) -> PyResult<Bound<'py, PyAny>> {
    Ok(with_floats!(w_a, w_b, h_a, h_b => {
        let r = py.detach(|| metrics::commutativity_residual(w_a, w_b, h_a, h_b));
        r.py()?.into_pyarray(py).into_any()
    }))
}

/// The commutativity residual's norms (relative, vanilla, baseline).
#[pyfunction]
fn commutativity<'py>(
    py: Python<'py>,
    w_a: Array2F<'_>,
    w_b: Array2F<'_>,
    h_a: Array2F<'_>,
    h_b: Array2F<'_>,
) -> PyResult<Bound<'py, PyDict>> {
    let c = with_floats!(w_a, w_b, h_a, h_b => {
        py.detach(|| metrics::commutativity(w_a, w_b, h_a, h_b))
    })
    .py()?;
    commutativity_dict(py, &c)
}

/// A `Commutativity` as a dict (dense and conv layers).
pub fn commutativity_dict<'py>(
    py: Python<'py>,
    c: &metrics::Commutativity,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("relative", c.relative)?;
    d.set_item("vanilla", c.vanilla)?;
    d.set_item("baseline", c.baseline)?;
    d.set_item("residual_norm", c.residual_norm)?;
    Ok(d)
}

/// The barrier of a curve `values` over `alphas` (`(height, alpha, index)`).
#[pyfunction]
#[pyo3(signature = (alphas, values, kind = "interpolated"))]
fn barrier(alphas: Vec<f64>, values: Vec<f64>, kind: &str) -> PyResult<(f64, f64, usize)> {
    let kind = match kind {
        "interpolated" => BarrierKind::Interpolated,
        "midpoint" => BarrierKind::Midpoint,
        _ => return Err(bad_choice("kind", kind, &["interpolated", "midpoint"])),
    };
    let b = lmc::barrier(&alphas, &values, kind).py()?;
    Ok((b.height, b.alpha, b.index))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(cosine_distances, m)?)?;
    m.add_function(wrap_pyfunction!(llfc_layer, m)?)?;
    m.add_function(wrap_pyfunction!(weak_additivity, m)?)?;
    m.add_function(wrap_pyfunction!(commutativity_residual, m)?)?;
    m.add_function(wrap_pyfunction!(commutativity, m)?)?;
    m.add_function(wrap_pyfunction!(barrier, m)?)?;
    Ok(())
}
