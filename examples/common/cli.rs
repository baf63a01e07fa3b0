//! Pieces shared by the command-line examples (`align`, `llfc_report`): a one-line error type,
//! the exit report, and the checks and temporary names behind their atomic outputs.
// Each example uses a subset of these helpers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use llfc::Error;

/// A one-line error of a CLI: either the library's or one of its own.
#[derive(Debug)]
pub enum CliError {
    /// An error from `llfc`.
    Lib(Error),
    /// A usage or file error of the CLI itself.
    Usage(String),
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Lib(e) => write!(f, "{e}"),
            Self::Usage(s) => f.write_str(s),
        }
    }
}

impl From<Error> for CliError {
    fn from(e: Error) -> Self {
        Self::Lib(e)
    }
}

/// Result of a CLI step.
pub type Result<T, E = CliError> = std::result::Result<T, E>;

/// A usage error.
pub fn usage<T>(msg: impl Into<String>) -> Result<T> {
    Err(CliError::Usage(msg.into()))
}

/// The exit status of `result`; an error is printed as one line `NAME: error: …` on stderr.
pub fn exit(name: &str, result: Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = e.to_string().replace(['\n', '\r'], " ");
            eprintln!("{name}: error: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// Fail before any work if the directory of an output does not exist.
pub fn check_writable_dir(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if dir.is_dir() {
        Ok(())
    } else {
        usage(format!(
            "cannot write `{}`: directory `{}` does not exist",
            path.display(),
            dir.display()
        ))
    }
}

/// The temporary sibling an output is written to before it is renamed over `path`.
pub fn temp_sibling(path: &Path) -> PathBuf {
    let name = path.file_name().and_then(|s| s.to_str()).unwrap_or("out");
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// The error of a failed write of `path`.
pub fn write_error(path: &Path, e: &std::io::Error) -> CliError {
    CliError::Usage(format!("cannot write `{}`: {e}", path.display()))
}
