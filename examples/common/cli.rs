//! Pieces shared by the command-line examples (`align`, `llfc_report`, `lap`, `repair`): a one-line error
//! type, argument parsing with one-line errors, the exit report, and the checks that keep every
//! output apart from every input before any work is done.
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

/// Longest error line printed (a safety net: messages quote at most ~200 characters of a file).
const MAX_LINE: usize = 2000;

/// `text` on one line: control characters escaped, at most `max` characters (then `…`).
pub fn one_line(text: &str, max: usize) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    for c in chars.by_ref().take(max) {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

/// The exit status of `result`; an error is printed as one line `NAME: error: …` on stderr.
pub fn exit(name: &str, result: Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(name, &e.to_string()),
    }
}

/// Print `NAME: error: MSG` on one line and return the failure status (1).
fn fail(name: &str, msg: &str) -> ExitCode {
    eprintln!("{name}: error: {}", one_line(msg, MAX_LINE));
    ExitCode::FAILURE
}

/// Parse the command line: `--help` and `--version` print and exit 0; any other problem is one
/// line on stderr and exit status 1 (clap's own report spans several lines).
pub fn parse_args<T: clap::Parser>(name: &str) -> std::result::Result<T, ExitCode> {
    T::try_parse().map_err(|e| {
        use clap::error::ErrorKind;
        if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
            // clap would print the whole help: say what is missing instead.
            return fail(
                name,
                &format!("a subcommand is required (see `{name} --help`)"),
            );
        }
        // The message proper: the lines before clap's usage and tip, joined.
        let text = e.to_string();
        let lines: Vec<&str> = text
            .lines()
            .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let msg = lines.join(" ");
        let msg = msg.strip_prefix("error: ").unwrap_or(&msg);
        fail(name, &format!("{msg} (see `{name} --help`)"))
    })
}

/// Where a file comes from on the command line, for messages: `(flag, path)`.
pub type Named<'a> = (&'a str, &'a Path);

/// What identifies a file: its canonical path (for a file yet to be written, the canonical
/// directory joined with the name) and, where it exists, its device and inode.
#[derive(Debug, PartialEq, Eq)]
struct FileId {
    canonical: Option<PathBuf>,
    node: Option<(u64, u64)>,
}

impl FileId {
    fn of(path: &Path) -> Self {
        let canonical = std::fs::canonicalize(path).ok().or_else(|| {
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            Some(std::fs::canonicalize(dir).ok()?.join(path.file_name()?))
        });
        Self {
            canonical,
            node: std::fs::metadata(path).ok().and_then(|m| node(&m)),
        }
    }

    /// Whether both name the same file, by canonical path or by device and inode (hard links).
    fn same(&self, other: &Self) -> bool {
        (self.canonical.is_some() && self.canonical == other.canonical)
            || (self.node.is_some() && self.node == other.node)
    }
}

#[cfg(unix)]
fn node(m: &std::fs::Metadata) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    Some((m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn node(_: &std::fs::Metadata) -> Option<(u64, u64)> {
    None // canonical paths only
}

/// Check, before any work, that every output can be written and is none of the inputs and no
/// other output: same canonical path, or same device and inode (symbolic and hard links are
/// caught), is refused. An output must be in an existing directory and, if it exists, be a
/// regular file (not a directory or device).
pub fn check_outputs(inputs: &[Named<'_>], outputs: &[Named<'_>]) -> Result<()> {
    let ins: Vec<FileId> = inputs.iter().map(|(_, p)| FileId::of(p)).collect();
    let mut outs: Vec<FileId> = Vec::with_capacity(outputs.len());
    for &(flag, path) in outputs {
        check_writable(flag, path)?;
        let id = FileId::of(path);
        for (&(in_flag, in_path), other) in inputs.iter().zip(&ins) {
            if id.same(other) {
                return usage(format!(
                    "output `{}` ({flag}) is the same file as input `{}` ({in_flag}): refusing to overwrite an input",
                    path.display(),
                    in_path.display()
                ));
            }
        }
        for (&(o_flag, o_path), other) in outputs.iter().zip(&outs) {
            if id.same(other) {
                return usage(format!(
                    "outputs `{}` ({o_flag}) and `{}` ({flag}) are the same file",
                    o_path.display(),
                    path.display()
                ));
            }
        }
        outs.push(id);
    }
    Ok(())
}

/// An output must name a file in an existing directory, and be a regular file if it exists.
fn check_writable(flag: &str, path: &Path) -> Result<()> {
    if path.file_name().is_none() {
        return usage(format!("{flag} `{}` does not name a file", path.display()));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return usage(format!(
            "cannot write `{}` ({flag}): directory `{}` does not exist",
            path.display(),
            dir.display()
        ));
    }
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => usage(format!(
            "cannot write `{}` ({flag}): it is a directory",
            path.display()
        )),
        Ok(m) if !m.is_file() => usage(format!(
            "cannot write `{}` ({flag}): it exists and is not a regular file",
            path.display()
        )),
        _ => Ok(()),
    }
}
