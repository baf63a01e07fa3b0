//! The one place where `llfc::Error` becomes a Python exception.
//!
//! Files (`Error::Io`, `Error::Format`) raise `OSError`; everything else is bad input and raises
//! `ValueError` with the crate's message. Linear-assignment errors carry SciPy's message
//! substrings ("contains invalid numeric entries", "cost matrix is infeasible") so that code
//! written against `scipy.optimize.linear_sum_assignment` keeps matching them.

use llfc::Error;
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::PyErr;

/// Convert a crate error into the Python exception documented above.
pub fn to_py(e: Error) -> PyErr {
    match &e {
        Error::Io { .. } | Error::Format { .. } => PyOSError::new_err(e.to_string()),
        Error::Infeasible => PyValueError::new_err(format!("cost matrix is infeasible ({e})")),
        Error::NonFinite { what } if what.starts_with("cost matrix") => {
            PyValueError::new_err(format!("matrix contains invalid numeric entries ({e})"))
        }
        _ => PyValueError::new_err(e.to_string()),
    }
}

/// `?`-friendly conversion of crate results.
pub trait ToPy<T> {
    /// The value, or the Python exception of [`to_py`].
    fn py(self) -> pyo3::PyResult<T>;
}

impl<T> ToPy<T> for llfc::Result<T> {
    fn py(self) -> pyo3::PyResult<T> {
        self.map_err(to_py)
    }
}

/// `ValueError` for an argument outside its documented values (string options).
pub fn bad_choice(name: &str, value: &str, allowed: &[&str]) -> PyErr {
    PyValueError::new_err(format!(
        "invalid {name} {value:?}: expected one of {}",
        allowed
            .iter()
            .map(|a| format!("{a:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    ))
}
