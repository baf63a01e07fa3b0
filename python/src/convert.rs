//! NumPy ↔ `ndarray` conversions shared by the bindings.
//!
//! The Python layer (`llfc/__init__.py`) has already coerced every array to float32 or float64
//! (parameter sets to one dtype); arrays are read through views with their own strides (any
//! memory order, no copy), and results are returned as new NumPy arrays.

use std::collections::BTreeMap;

use llfc::{Params, Permutation};
use ndarray::ArrayD;
use numpy::{IntoPyArray, PyArray1, PyReadonlyArray, PyReadonlyArray1};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::errors::ToPy;

/// A float32 or float64 NumPy array of dimensionality `D`, read in place (any strides).
pub enum FloatArray<'py, D: ndarray::Dimension> {
    /// float64.
    F64(PyReadonlyArray<'py, f64, D>),
    /// float32.
    F32(PyReadonlyArray<'py, f32, D>),
}

impl<'a, 'py, D: ndarray::Dimension + 'a> FromPyObject<'a, 'py> for FloatArray<'py, D> {
    type Error = PyErr;

    fn extract(obj: pyo3::Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        if let Ok(a) = obj.extract::<PyReadonlyArray<'py, f64, D>>() {
            return Ok(Self::F64(a));
        }
        obj.extract::<PyReadonlyArray<'py, f32, D>>()
            .map(Self::F32)
            .map_err(|e| {
                let rank = D::NDIM.map_or_else(|| "an".to_string(), |n| format!("a {n}-D"));
                pyo3::exceptions::PyTypeError::new_err(format!(
                    "expected {rank} float32 or float64 NumPy array ({e})"
                ))
            })
    }
}

/// A 2-D float32 or float64 array.
pub type Array2F<'py> = FloatArray<'py, ndarray::Ix2>;

/// A 4-D float32 or float64 array (conv weights and feature maps).
pub type Array4F<'py> = FloatArray<'py, ndarray::Ix4>;

/// A float32 or float64 array of any rank.
pub type ArrayDF<'py> = FloatArray<'py, ndarray::IxDyn>;

/// The error for arrays of different float dtypes passed together.
pub fn mixed() -> PyErr {
    PyValueError::new_err("the arrays must all have the same dtype (float32 or float64)")
}

/// Run `$body` with every `$x` (a [`FloatArray`], of any dimensionality) rebound to its
/// `ndarray` view, once for float64 and once for float32 (`$body` is generic code over the
/// element type); arrays of different dtypes return [`mixed`]'s `ValueError` from the enclosing
/// function. The one place where the bindings dispatch on the dtype of arrays.
#[macro_export]
macro_rules! with_floats {
    ($($x:ident),+ => $body:expr) => {{
        #[allow(unreachable_patterns)]
        let out = match ($($x,)+) {
            ($($crate::convert::FloatArray::F64($x),)+) => {
                $(let $x = $x.as_array();)+
                $body
            }
            ($($crate::convert::FloatArray::F32($x),)+) => {
                $(let $x = $x.as_array();)+
                $body
            }
            _ => return Err($crate::convert::mixed()),
        };
        out
    }};
}

/// A float array copied into the precision `F` (exact when the dtypes agree).
pub fn owned<F: llfc::Float, D: ndarray::Dimension>(a: &FloatArray<'_, D>) -> ndarray::Array<F, D> {
    match a {
        FloatArray::F64(x) => x.as_array().mapv(F::from_f64),
        FloatArray::F32(x) => x.as_array().mapv(|v| F::from_f64(f64::from(v))),
    }
}

/// A parameter set in the precision the caller's arrays have.
pub enum AnyParams {
    /// float32 tensors.
    F32(Params<f32>),
    /// float64 tensors.
    F64(Params<f64>),
}

/// A parameter set from a list of `(name, array)` pairs of one float dtype (order kept).
pub fn params(items: Vec<(String, ArrayDF<'_>)>) -> PyResult<AnyParams> {
    let (mut p32, mut p64) = (Params::<f32>::new(), Params::<f64>::new());
    for (name, arr) in items {
        if p32.contains(&name) || p64.contains(&name) {
            return Err(PyValueError::new_err(format!(
                "parameter `{name}` given twice"
            )));
        }
        match arr {
            ArrayDF::F32(a) => {
                p32.insert(name, a.as_array().to_owned());
            }
            ArrayDF::F64(a) => {
                p64.insert(name, a.as_array().to_owned());
            }
        }
    }
    match (p32.is_empty(), p64.is_empty()) {
        (_, true) => Ok(AnyParams::F32(p32)),
        (true, false) => Ok(AnyParams::F64(p64)),
        (false, false) => Err(PyValueError::new_err(
            "a parameter set mixes float32 and float64 tensors",
        )),
    }
}

/// Two parameter sets of the same precision (a float32 set meeting a float64 one is widened).
pub fn pair(a: AnyParams, b: AnyParams) -> (AnyParams, AnyParams) {
    match (a, b) {
        (AnyParams::F32(a), AnyParams::F64(b)) => (AnyParams::F64(a.cast()), AnyParams::F64(b)),
        (AnyParams::F64(a), AnyParams::F32(b)) => (AnyParams::F64(a), AnyParams::F64(b.cast())),
        other => other,
    }
}

/// A parameter set as a list of `(name, array)` pairs, in its order.
pub fn params_to_py<'py, F: llfc::Float + numpy::Element>(
    py: Python<'py>,
    p: Params<F>,
) -> PyResult<Bound<'py, PyList>> {
    let items: Vec<(String, Bound<'py, numpy::PyArrayDyn<F>>)> = p
        .into_iter()
        .map(|(k, v): (String, ArrayD<F>)| (k, v.into_pyarray(py)))
        .collect();
    PyList::new(py, items)
}

/// Permutations from a mapping of names to integer arrays (validated bijections).
pub fn perms(
    items: BTreeMap<String, PyReadonlyArray1<'_, i64>>,
) -> PyResult<BTreeMap<String, Permutation>> {
    items
        .into_iter()
        .map(|(k, v)| {
            let map = v
                .as_array()
                .iter()
                .map(|&x| {
                    usize::try_from(x).map_err(|_| {
                        PyValueError::new_err(format!(
                            "invalid permutation `{k}`: negative entry {x}"
                        ))
                    })
                })
                .collect::<PyResult<Vec<usize>>>()?;
            let p = Permutation::new(map).py().map_err(|e| {
                PyValueError::new_err(format!("permutation `{k}`: {}", e.value(v.py())))
            })?;
            Ok((k, p))
        })
        .collect()
}

/// An index vector as an int64 NumPy array.
pub fn indices<'py>(py: Python<'py>, v: &[usize]) -> Bound<'py, PyArray1<i64>> {
    v.iter()
        .map(|&x| i64::try_from(x).expect("indices fit in i64"))
        .collect::<Vec<i64>>()
        .into_pyarray(py)
}

/// Permutations as a dict of int64 arrays.
pub fn perms_to_py<'py>(
    py: Python<'py>,
    perms: &BTreeMap<String, Permutation>,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (k, p) in perms {
        d.set_item(k, indices(py, p.as_slice()))?;
    }
    Ok(d)
}

/// Run `$body` with `$p` bound to the `Params<F>` of either precision.
#[macro_export]
macro_rules! with_params {
    ($p:expr, |$x:ident| $body:expr) => {
        match $p {
            $crate::convert::AnyParams::F32($x) => $body,
            $crate::convert::AnyParams::F64($x) => $body,
        }
    };
}

/// Run `$body` with `$a`, `$b` bound to two `Params<F>` of the same precision.
#[macro_export]
macro_rules! with_pair {
    ($a:expr, $b:expr, |$x:ident, $y:ident| $body:expr) => {
        match $crate::convert::pair($a, $b) {
            ($crate::convert::AnyParams::F32($x), $crate::convert::AnyParams::F32($y)) => $body,
            ($crate::convert::AnyParams::F64($x), $crate::convert::AnyParams::F64($y)) => $body,
            _ => unreachable!("pair() returns one precision"),
        }
    };
}
