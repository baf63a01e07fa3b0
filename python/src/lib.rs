//! Python bindings of `llfc` (the extension module `llfc._llfc`).
//!
//! Thin by design, like huggingface/safetensors' bindings: every function converts NumPy
//! arrays to `ndarray` views (no copy where the crate can read the layout), releases the GIL
//! around the crate's computation, and converts the result back; Rust errors become Python
//! exceptions in one place ([`errors`]). The public Python API (argument coercion, result
//! dataclasses, docs) lives in `python/llfc/__init__.py`. One file per area:
//! [`assignment`], [`spec`], [`matching`], [`metrics`], [`attribution`], [`repair`], [`io`];
//! [`callback`] calls Python functions (forward passes, measurements) from crate code that runs
//! without the GIL.

mod assignment;
mod attribution;
mod callback;
mod convert;
mod errors;
mod io;
mod matching;
mod metrics;
mod repair;
mod spec;

use pyo3::prelude::*;

/// The native part of the `llfc` Python package.
#[pymodule]
fn _llfc(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    assignment::register(m)?;
    spec::register(m)?;
    matching::register(m)?;
    metrics::register(m)?;
    io::register(m)?;
    repair::register(m)?;
    attribution::register(m)?;
    Ok(())
}
