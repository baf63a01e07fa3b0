//! Reading and writing checkpoints and feature arrays: `.npz`, `.npy` and `.safetensors`.
//!
//! Everything here is pure Rust (the `.npy` format itself, `zip`, `safetensors`, `half`) and sits behind
//! the `io` cargo feature (on by default).
//!
//! # What is read and written
//! - **Parameters** ([`Params`]): [`read_params`] / [`write_params`] choose the format from the
//!   file extension (`.npz` or `.safetensors`, see [`FileFormat`]); [`read_npz`],
//!   [`write_npz`], [`read_safetensors`], [`write_safetensors`] name it explicitly, and
//!   [`params_from_bytes`] / [`params_to_bytes`] work on memory buffers.
//! - **Checkpoints** ([`Checkpoint`]): [`read_checkpoint`] / [`write_checkpoint`] keep every
//!   tensor's stored [`Dtype`], so a modified model is written back in the file's precision.
//! - **Plain named arrays** (feature files): [`read_npz_arrays`] / [`write_npz_arrays`]; large
//!   ones a block of rows at a time with [`NpzReader`].
//! - **A single array**: [`read_npy`] / [`write_npy`] (`.npy`), [`array_from_npy_bytes`] /
//!   [`array_to_npy_bytes`].
//!
//! # Element types
//! Arrays are written in the precision of `F` (`f32` → `float32` / `F32`, `f64` → `float64` /
//! `F64`) and read back bit-exactly (NaN payloads included when the stored type is `F`).
//! On reading, stored `float16`, `bfloat16` (safetensors only), `float32` and `float64` are
//! converted to `F`: every conversion is exact except `float64` read as `f32`, which rounds to
//! nearest (like `Params::cast`); read as `f64` and cast yourself if you need to detect that.
//! Integer, boolean, complex, string and structured arrays are rejected with
//! [`Error::Format`] naming the entry and its dtype: they are never silently converted
//! ([`read_checkpoint`] keeps integer and boolean tensors, such as PyTorch's
//! `num_batches_tracked`, as [`RawTensor`]s).
//! Big-endian `.npy` data (`>f4`, `>f8`, `>f2`) is read correctly, and Fortran-ordered `.npy`
//! arrays are returned with their values in the right places (in standard row-major layout).
//!
//! # Order
//! [`Params`] is ordered. `.npz` keeps it naturally (archive entry order, which is also the
//! order `numpy.savez` writes keyword arguments in). The safetensors format sorts its data by
//! dtype then name (every writer does, PyTorch's included), so [`write_safetensors`] records
//! the order in the header's `__metadata__` under the key [`SAFETENSORS_ORDER_KEY`] (a JSON
//! list of names) and [`read_safetensors`] restores it. Files without that key (written by
//! Python, say) are read in data-offset order, i.e. the writer's dtype-then-name order; a
//! PyTorch `state_dict` order cannot be recovered from such files.
//!
//! # Errors and robustness
//! Every error names the file ([`Error::Io`] for operating-system errors, [`Error::Format`]
//! for malformed content, with the entry name where there is one); in-memory readers name
//! [`MEMORY_PATH`] instead. Errors are one line and quote at most ~200 characters of what the
//! file contains (longer names and headers are clipped, control characters escaped).
//! Readers never panic on malformed input and never allocate more than the input justifies:
//! `.npy` headers are checked (length, nesting, shape against the bytes actually present) before
//! any array is allocated, every size read from a file is checked arithmetic, zip entries must
//! fit in the archive, and safetensors data offsets are checked against the file size before
//! the `safetensors` crate sees them.
//!
//! # Files: what is refused and what is never modified
//! - Only **regular files** are read (after resolving symbolic links): a directory, FIFO,
//!   device (`/dev/zero`) or socket is an [`Error::Io`], and no more than the size the file had
//!   when opened is ever read ([`read_regular_file`]).
//! - An `.npz` whose central directory lists **two entries with the same name** is refused
//!   (the `zip` crate would silently keep the last one).
//! - Writers are **atomic**: they write a temporary sibling `.llfc-<hash>.tmp` (a short name,
//!   so any legal target name works) in the target's directory, sync it and rename it over the
//!   target, so an error never leaves a partial or modified file behind (a symbolic link at the
//!   target is replaced, not followed; a process killed mid-write can leave the temporary
//!   file). [`OutputSet`] commits several outputs together: all are written first, then renamed;
//!   on any error every temporary is removed and no existing file is touched.
//! - A failing `.npz` write (a full disk, say) returns one [`Error::Io`] and prints nothing.
//!
//! # Limitations
//! `.npz` archives are read whether stored (`numpy.savez`) or deflated
//! (`numpy.savez_compressed`, decoded in pure Rust); other zip compression methods are rejected
//! with a clear [`Error::Format`]. Archives are always written uncompressed. Files are read
//! as they are parsed, entry by entry and tensor by tensor, straight into the arrays (no buffer
//! of the whole file, no memory mapping): reading a checkpoint costs its arrays' memory and
//! one 1 MiB chunk.
//!
//! # Examples
//! ```
//! use llfc::{io, Params};
//! use ndarray::{arr1, arr2};
//!
//! let mut params = Params::<f32>::new();
//! params.insert("layers.0.weight", arr2(&[[1.0, -2.0], [0.5, 3.0]]).into_dyn());
//! params.insert("layers.0.bias", arr1(&[0.25, -0.0]).into_dyn());
//! let dir = std::env::temp_dir().join(format!("llfc-io-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! for file in ["model.safetensors", "model.npz"] {
//!     let path = dir.join(file);
//!     io::write_params(&path, &params)?;
//!     let back: Params<f32> = io::read_params(&path)?;
//!     assert_eq!(back, params); // same names, same order, same values
//!     let wide: Params<f64> = io::read_params(&path)?; // f32 → f64 is exact
//!     assert_eq!(wide["layers.0.weight"][[1, 0]], 0.5);
//! }
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # Ok::<(), llfc::Error>(())
//! ```

mod checkpoint;
mod dtype;
mod files;
mod npy;
mod npy_header;
mod npz;
mod npz_reader;
mod safetensors;

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{clip, Error, Result};
use crate::float::Float;
use crate::params::Params;

pub use self::checkpoint::{
    checkpoint_to_bytes, read_checkpoint, write_checkpoint, write_checkpoint_as, Checkpoint,
};
use self::dtype::{checked_sizes, read_decoded, read_decoded_into, write_encoded};
pub use self::dtype::{Dtype, RawDtype, RawTensor};
use self::files::write_atomically;
pub use self::files::{read_regular_file, OutputSet};
pub use self::npy::{
    array_from_npy_bytes, array_to_npy_bytes, read_npy, read_npy_with_dtype, write_npy,
};
pub use self::npz::{read_npz, read_npz_arrays, write_npz, write_npz_arrays};
pub use self::npz_reader::{NpzReader, RowBlocks};
pub use self::safetensors::{read_safetensors, write_safetensors, SAFETENSORS_ORDER_KEY};

/// The pseudo-path that errors from the in-memory readers and writers name
/// ([`params_from_bytes`], [`array_from_npy_bytes`], ...).
pub const MEMORY_PATH: &str = "<memory>";

/// A checkpoint file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FileFormat {
    /// A NumPy `.npz` archive (zip of `.npy` arrays, as `numpy.savez` or
    /// `numpy.savez_compressed` write; written uncompressed).
    Npz,
    /// A `.safetensors` file (Hugging Face format).
    Safetensors,
}

impl FileFormat {
    /// The format a path's extension names: `.npz` or `.safetensors` (case-insensitive).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for any other extension (including `.npy`, which holds a
    /// single array: use [`read_npy`]).
    ///
    /// # Examples
    /// ```
    /// use llfc::io::FileFormat;
    /// assert_eq!(FileFormat::from_path("a/model.safetensors")?, FileFormat::Safetensors);
    /// assert_eq!(FileFormat::from_path("weights.NPZ")?, FileFormat::Npz);
    /// assert!(FileFormat::from_path("weights.pt").is_err());
    /// # Ok::<(), llfc::Error>(())
    /// ```
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("npz") => Ok(Self::Npz),
            Some("safetensors") => Ok(Self::Safetensors),
            Some("npy") => Err(Error::InvalidArgument {
                name: "path",
                reason: format!(
                    "`{}` is a single-array .npy file, not a parameter set: use `io::read_npy`",
                    path.display()
                ),
            }),
            _ => Err(Error::InvalidArgument {
                name: "path",
                reason: format!(
                    "cannot tell the format of `{}`: expected a `.npz` or `.safetensors` extension",
                    path.display()
                ),
            }),
        }
    }

    /// The file extension, without the dot (`"npz"`, `"safetensors"`).
    #[must_use]
    pub fn extension(self) -> &'static str {
        match self {
            Self::Npz => "npz",
            Self::Safetensors => "safetensors",
        }
    }
}

/// Read a parameter set, choosing the format from the extension ([`FileFormat::from_path`]).
///
/// Dtype f16/bf16/f32/f64 tensors are converted to `F` (exactly, except f64 → f32 which rounds
/// to nearest); the order is the file's (see the [module docs](self#order)).
///
/// # Errors
/// [`Error::InvalidArgument`] for an unknown extension; [`Error::Io`] naming the path if the
/// file cannot be read; [`Error::Format`] naming the path (and the entry) if it is truncated,
/// corrupted, or holds a non-float tensor. An integer or boolean tensor (a PyTorch checkpoint
/// with BatchNorm holds `num_batches_tracked`, int64) is refused with a reason that names
/// [`read_checkpoint`], which reads such files: it keeps those tensors apart, as stored.
pub fn read_params<F: Float>(path: impl AsRef<Path>) -> Result<Params<F>> {
    let path = path.as_ref();
    let read = match FileFormat::from_path(path)? {
        FileFormat::Npz => read_npz(path),
        FileFormat::Safetensors => read_safetensors(path),
    };
    read.map_err(|e| match e {
        Error::Format {
            path,
            key,
            reason,
        } if integer_or_bool(&reason) => Error::Format {
            path,
            key,
            reason: format!(
                "{reason}; `read_params` reads float tensors only: use `llfc::io::read_checkpoint`, which keeps integer and boolean tensors (e.g. `num_batches_tracked`) apart"
            ),
        },
        e => e,
    })
}

/// Whether a read error's reason is about an integer or boolean tensor (safetensors `I*`, `U*`,
/// `BOOL`; NumPy integer and boolean dtypes), which [`read_checkpoint`] keeps.
fn integer_or_bool(reason: &str) -> bool {
    ["dtype I", "dtype U", "dtype BOOL"]
        .iter()
        .any(|p| reason.starts_with(p))
        || reason.contains("an integer dtype")
        || reason.contains("a boolean dtype")
}

/// Write a parameter set in the precision of `F`, choosing the format from the extension
/// ([`FileFormat::from_path`]). The write is atomic (temporary file + rename).
///
/// # Errors
/// [`Error::InvalidArgument`] for an unknown extension or a name the format cannot hold;
/// [`Error::Io`] naming the path if the file cannot be written (nothing is left behind).
pub fn write_params<F: Float>(path: impl AsRef<Path>, params: &Params<F>) -> Result<()> {
    let path = path.as_ref();
    match FileFormat::from_path(path)? {
        FileFormat::Npz => write_npz(path, params),
        FileFormat::Safetensors => write_safetensors(path, params),
    }
}

/// Parse a parameter set from the bytes of a file in the given format. Errors name
/// [`MEMORY_PATH`].
///
/// # Errors
/// [`Error::Format`] if the bytes are not a valid file of that format or hold a non-float
/// tensor.
///
/// # Examples
/// ```
/// use llfc::io::{params_from_bytes, params_to_bytes, FileFormat};
/// use llfc::Params;
/// let params: Params<f64> = [("w", ndarray::arr1(&[1.5, -0.0]).into_dyn())].into_iter().collect();
/// let bytes = params_to_bytes(&params, FileFormat::Safetensors)?;
/// assert_eq!(params_from_bytes::<f64>(&bytes, FileFormat::Safetensors)?, params);
/// assert!(params_from_bytes::<f64>(&bytes[..bytes.len() - 1], FileFormat::Safetensors).is_err());
/// # Ok::<(), llfc::Error>(())
/// ```
pub fn params_from_bytes<F: Float>(bytes: &[u8], format: FileFormat) -> Result<Params<F>> {
    let path = Path::new(MEMORY_PATH);
    match format {
        FileFormat::Npz => npz::parse_npz_bytes(bytes, path, false).map(|p| p.params),
        FileFormat::Safetensors => {
            safetensors::parse_safetensors_bytes(bytes, path, false).map(|p| p.params)
        }
    }
}

/// Serialise a parameter set, in the precision of `F`, to the bytes of a file in the given
/// format (what [`write_params`] would write).
///
/// # Errors
/// [`Error::InvalidArgument`] if a name cannot be stored in that format (`__metadata__` in
/// safetensors) or `F` is neither f32 nor f64.
pub fn params_to_bytes<F: Float>(params: &Params<F>, format: FileFormat) -> Result<Vec<u8>> {
    let path = Path::new(MEMORY_PATH);
    let dtype = Dtype::of::<F>()?;
    match format {
        FileFormat::Npz => {
            let cursor = npz::write_npz_to(
                std::io::Cursor::new(Vec::new()),
                params.iter(),
                |_| dtype,
                &[],
                path,
            )?;
            Ok(cursor.into_inner())
        }
        FileFormat::Safetensors => safetensors::serialize_params(params, |_| dtype, &[]),
    }
}

// ---------------------------------------------------------------------------------------------
// Shared internals: errors, element types, conversions, file access.
// ---------------------------------------------------------------------------------------------

/// Most characters of a file's content (a name, a header) that an error quotes.
const QUOTE_CHARS: usize = 200;

/// An [`Error::Format`] for `path` (and `key`): the key is quoted on one line and clipped to
/// [`QUOTE_CHARS`] characters, the reason (which may quote the file too) to twice that.
fn format_error(path: &Path, key: Option<&str>, reason: impl Into<String>) -> Error {
    Error::Format {
        path: path.to_path_buf(),
        key: key.map(|k| clip(k, QUOTE_CHARS)),
        reason: clip(&reason.into(), 2 * QUOTE_CHARS),
    }
}

/// An [`Error::Io`] for `path`.
fn io_error(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What the parsers return: float tensors with their stored dtypes, and (when asked for) the
/// other tensors as raw bytes.
#[derive(Debug)]
struct Parsed<F> {
    params: Params<F>,
    dtypes: BTreeMap<String, Dtype>,
    others: Vec<(String, RawTensor)>,
}

impl<F: Float> Default for Parsed<F> {
    fn default() -> Self {
        Self {
            params: Params::default(),
            dtypes: BTreeMap::new(),
            others: Vec::new(),
        }
    }
}

impl<F: Float> Parsed<F> {
    /// Whether an entry called `name` was already seen.
    fn contains(&self, name: &str) -> bool {
        self.params.contains(name) || self.others.iter().any(|(k, _)| k == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrupted_checkpoints_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut params = Params::<f64>::new();
        params.insert("w", ndarray::arr2(&[[1.0, -2.0], [0.5, 3.0]]).into_dyn());
        let others = vec![(
            "n".to_string(),
            RawTensor {
                dtype: RawDtype::I32,
                shape: vec![2, 1],
                data: vec![1, 0, 0, 0, 2, 0, 0, 0],
            },
        )];
        let path = Path::new(MEMORY_PATH);
        let npz = npz::write_npz_to(
            std::io::Cursor::new(Vec::new()),
            params.iter(),
            |_| Dtype::F16,
            &others,
            path,
        )
        .unwrap()
        .into_inner();
        let st = safetensors::serialize_params(&params, |_| Dtype::BF16, &others).unwrap();
        let parsed = npz::parse_npz_bytes::<f64>(&npz, path, true).unwrap();
        assert_eq!(
            (parsed.params, parsed.others),
            (params.clone(), others.clone())
        );
        let parsed = safetensors::parse_safetensors_bytes::<f64>(&st, path, true).unwrap();
        assert_eq!((parsed.params, parsed.others), (params, others));
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for _ in 0..3000 {
            for (i, base) in [&npz, &st].into_iter().enumerate() {
                let mut bytes = base.clone();
                for _ in 0..rng.random_range(1..4) {
                    let at = rng.random_range(0..bytes.len());
                    bytes[at] = rng.random();
                }
                bytes.truncate(rng.random_range(bytes.len() / 2..=bytes.len()));
                let _ = if i == 0 {
                    npz::parse_npz_bytes::<f32>(&bytes, path, true).map(|_| ())
                } else {
                    safetensors::parse_safetensors_bytes::<f32>(&bytes, path, true).map(|_| ())
                };
            }
        }
    }
}
