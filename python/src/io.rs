//! `.npz` / `.safetensors` checkpoints with their dtypes.

use std::path::PathBuf;

use llfc::io::{self, Checkpoint, Dtype, RawDtype, RawTensor};
use llfc::Params;
use numpy::{IntoPyArray, PyReadonlyArrayDyn};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use crate::errors::{bad_choice, ToPy};

const RAW: [(&str, RawDtype); 9] = [
    ("bool", RawDtype::Bool),
    ("uint8", RawDtype::U8),
    ("int8", RawDtype::I8),
    ("uint16", RawDtype::U16),
    ("int16", RawDtype::I16),
    ("uint32", RawDtype::U32),
    ("int32", RawDtype::I32),
    ("uint64", RawDtype::U64),
    ("int64", RawDtype::I64),
];

fn dtype_name(d: Dtype) -> &'static str {
    match d {
        Dtype::F16 => "float16",
        Dtype::BF16 => "bfloat16",
        Dtype::F32 => "float32",
        _ => "float64",
    }
}

/// Read a checkpoint: a list of `(name, float64 array, stored dtype)` for the float tensors,
/// then `(name, raw dtype, shape, bytes)` for the others (the Python layer casts and views).
#[pyfunction]
fn load<'py>(py: Python<'py>, path: PathBuf) -> PyResult<(Bound<'py, PyList>, Bound<'py, PyList>)> {
    let ckpt = py.detach(|| io::read_checkpoint(&path)).py()?;
    let floats = PyList::empty(py);
    for (name, t) in ckpt.params.iter() {
        floats.append((
            name,
            t.clone().into_pyarray(py),
            dtype_name(ckpt.dtype(name)),
        ))?;
    }
    let others = PyList::empty(py);
    for (name, raw) in &ckpt.others {
        let dtype = RAW
            .iter()
            .find(|(_, d)| *d == raw.dtype)
            .map_or("unknown", |(n, _)| n);
        others.append((name, dtype, raw.shape.clone(), PyBytes::new(py, &raw.data)))?;
    }
    Ok((floats, others))
}

/// Write a checkpoint from float tensors (as float64 values with their dtype to store) and raw
/// tensors (little-endian bytes).
#[pyfunction]
fn save(
    py: Python<'_>,
    path: PathBuf,
    floats: Vec<(String, PyReadonlyArrayDyn<'_, f64>, String)>,
    others: Vec<(String, String, Vec<usize>, Vec<u8>)>,
) -> PyResult<()> {
    let mut ckpt = Checkpoint {
        params: Params::new(),
        ..Checkpoint::default()
    };
    for (name, arr, dtype) in floats {
        let d = match dtype.as_str() {
            "float16" => Dtype::F16,
            "bfloat16" => Dtype::BF16,
            "float32" => Dtype::F32,
            "float64" => Dtype::F64,
            other => {
                return Err(bad_choice(
                    "float dtype",
                    other,
                    &["float16", "float32", "float64"],
                ))
            }
        };
        if ckpt.params.contains(&name) {
            return Err(PyValueError::new_err(format!(
                "tensor `{name}` given twice"
            )));
        }
        ckpt.dtypes.insert(name.clone(), d);
        ckpt.params.insert(name, arr.as_array().to_owned());
    }
    for (name, dtype, shape, data) in others {
        let d = RAW
            .iter()
            .find(|(n, _)| *n == dtype)
            .map(|(_, d)| *d)
            .ok_or_else(|| {
                PyValueError::new_err(format!(
                    "tensor `{name}`: dtype {dtype} cannot be stored (float, integer or bool only)"
                ))
            })?;
        ckpt.others.push((
            name,
            RawTensor {
                dtype: d,
                shape,
                data,
            },
        ));
    }
    py.detach(|| io::write_checkpoint(&path, &ckpt)).py()
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(load, m)?)?;
    m.add_function(wrap_pyfunction!(save, m)?)?;
    Ok(())
}
