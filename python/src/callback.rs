//! Python callables (a model's forward pass, a measurement) called back from crate functions
//! that run with the GIL released.
//!
//! The GIL is taken for each call only; the first exception a callable raises stops the crate
//! function (through a placeholder `llfc::Error`) and is the one raised to the caller.

use pyo3::prelude::*;

/// The exception raised by a callable during one crate call, if any.
#[derive(Default)]
pub struct Raised(Option<PyErr>);

impl Raised {
    /// Call into Python with the GIL; an exception is kept and becomes a crate error that
    /// stops the computation.
    pub fn call<T>(
        &mut self,
        what: &'static str,
        f: impl FnOnce(Python<'_>) -> PyResult<T>,
    ) -> llfc::Result<T> {
        Python::attach(f).map_err(|e| {
            self.0 = Some(e);
            llfc::Error::InvalidArgument {
                name: what,
                reason: "the Python callable raised an exception".into(),
            }
        })
    }

    /// The crate result, or the callable's exception if one was raised.
    pub fn finish<T>(self, result: llfc::Result<T>) -> PyResult<T> {
        match self.0 {
            Some(e) => Err(e),
            None => result.map_err(crate::errors::to_py),
        }
    }
}
