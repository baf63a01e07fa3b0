//! `.npy` arrays and `.npz` archives.
//!
//! Writing goes through `ndarray-npy` (`NpzWriter`, `WriteNpyExt`). Reading takes the raw zip
//! entries (`zip`), checks the `.npy` prefix and header size itself, lets `ndarray-npy` parse
//! the header dictionary, checks the shape against the bytes actually present and only then
//! decodes — so a forged header cannot make the reader allocate, recurse or panic.

use std::collections::{BTreeMap, HashSet};
use std::io::{Cursor, Read, Seek, Write};
use std::path::Path;

use ndarray::{ArrayBase, ArrayD, Data, Dimension, IxDyn, ShapeBuilder};
use ndarray_npy::npy::header::Header;
use ndarray_npy::{NpzWriter, WriteNpyError, WriteNpyExt, WriteNpzError};
use zip::result::ZipError;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, ZipArchive};

use super::files::Sticky;
use super::{
    checked_sizes, decode, format_error, io_error, read_file, to_f32, to_f64, write_atomically,
    Dtype, Parsed, RawDtype, RawTensor, MEMORY_PATH,
};
use crate::error::{Error, Result};
use crate::float::Float;
use crate::params::Params;

/// The `.npy` magic string.
const MAGIC: &[u8; 6] = b"\x93NUMPY";
/// Longest `.npy` header dictionary accepted (NumPy's own default limit is 10 000 bytes; the
/// headers of plain float arrays are well under 1 KiB).
const MAX_HEADER_LEN: usize = 1 << 16;
/// Deepest bracket nesting accepted in a header (a plain array header has depth 2).
const MAX_NESTING: usize = 8;

/// Read a `.npz` archive (as written by `numpy.savez` or [`write_npz`]) into a parameter set,
/// in archive order. Entry names lose one `.npy` suffix, as in NumPy.
///
/// # Errors
/// [`Error::Io`] naming the path if the file cannot be read; [`Error::Format`] naming the path
/// and the entry if the archive is malformed, uses a compression method other than none
/// (`numpy.savez`) or deflate (`numpy.savez_compressed`), an entry is not a valid `.npy` array,
/// holds a non-float dtype, or two entries share a name.
pub fn read_npz<F: Float>(path: impl AsRef<Path>) -> Result<Params<F>> {
    let path = path.as_ref();
    parse_npz(&read_file(path)?, path, false).map(|p| p.params)
}

/// Read a `.npz` archive of named arrays (e.g. features per layer) into a map sorted by name.
///
/// # Errors
/// As [`read_npz`].
pub fn read_npz_arrays<F: Float>(path: impl AsRef<Path>) -> Result<BTreeMap<String, ArrayD<F>>> {
    Ok(read_npz(path)?.into_iter().collect())
}

/// Write a parameter set as an uncompressed `.npz` archive (readable by `numpy.load`), in the
/// precision of `F` and in the order of `params`. Atomic: on error no file is left behind.
///
/// # Errors
/// [`Error::Io`] naming the path if it cannot be written.
pub fn write_npz<F: Float>(path: impl AsRef<Path>, params: &Params<F>) -> Result<()> {
    write_npz_arrays(path, params.iter())
}

/// Write named arrays of any dimension and layout (e.g. `&BTreeMap<String, ArrayD<F>>`, or
/// `[("a", &x), ("b", &y)]`) as an uncompressed `.npz` archive, in iteration order.
/// Atomic: on error no file is left behind.
///
/// # Errors
/// [`Error::InvalidArgument`] if a name repeats; [`Error::Io`] naming the path if it cannot be
/// written.
///
/// # Examples
/// ```
/// use llfc::io::{read_npz_arrays, write_npz_arrays};
/// use ndarray::{arr1, Array2};
/// let path = std::env::temp_dir().join(format!("llfc-feats-{}.npz", std::process::id()));
/// let h = Array2::<f32>::from_shape_fn((3, 2), |(i, j)| (i * 2 + j) as f32);
/// let t = arr1(&[0.0f32, 1.0]);
/// write_npz_arrays(&path, [("layer1", &h.view().into_dyn()), ("labels", &t.view().into_dyn())])?;
/// let back = read_npz_arrays::<f32>(&path)?;
/// assert_eq!(back["layer1"], h.into_dyn());
/// # std::fs::remove_file(&path).unwrap();
/// # Ok::<(), llfc::Error>(())
/// ```
pub fn write_npz_arrays<'a, F, K, S, D, I>(path: impl AsRef<Path>, arrays: I) -> Result<()>
where
    F: Float,
    K: AsRef<str>,
    S: Data<Elem = F> + 'a,
    D: Dimension + 'a,
    I: IntoIterator<Item = (K, &'a ArrayBase<S, D>)>,
{
    let path = path.as_ref();
    let dtype = Dtype::of::<F>()?;
    write_atomically(path, |file| {
        write_npz_to(file, arrays, |_| dtype, &[], path).map(|_| ())
    })
}

/// Read a single `.npy` array (any dimension, C or Fortran order, either endianness).
///
/// # Errors
/// [`Error::Io`] naming the path if it cannot be read; [`Error::Format`] naming the path if it
/// is not a valid `.npy` file or holds a non-float dtype.
pub fn read_npy<F: Float>(path: impl AsRef<Path>) -> Result<ArrayD<F>> {
    let path = path.as_ref();
    parse_npy(&read_file(path)?)
        .map(|(a, _)| a)
        .map_err(|reason| format_error(path, None, reason))
}

/// Read a single `.npy` array as [`read_npy`] does, with the dtype it is stored with (so that a
/// tool can read `float32` data exactly as f64 and still know it was single precision).
///
/// # Errors
/// As [`read_npy`].
///
/// # Examples
/// ```
/// use llfc::io::{read_npy_with_dtype, write_npy, Dtype};
/// let path = std::env::temp_dir().join(format!("llfc-dtype-{}.npy", std::process::id()));
/// write_npy(&path, &ndarray::arr1(&[0.1f32]))?;
/// let (x, dtype) = read_npy_with_dtype::<f64>(&path)?;
/// assert_eq!((x[0], dtype), (f64::from(0.1f32), Dtype::F32));
/// # std::fs::remove_file(&path).unwrap();
/// # Ok::<(), llfc::Error>(())
/// ```
pub fn read_npy_with_dtype<F: Float>(path: impl AsRef<Path>) -> Result<(ArrayD<F>, Dtype)> {
    let path = path.as_ref();
    parse_npy(&read_file(path)?).map_err(|reason| format_error(path, None, reason))
}

/// Parse a single `.npy` array from memory. Errors name [`MEMORY_PATH`].
///
/// # Errors
/// [`Error::Format`] as for [`read_npy`].
pub fn array_from_npy_bytes<F: Float>(bytes: &[u8]) -> Result<ArrayD<F>> {
    parse_npy(bytes)
        .map(|(a, _)| a)
        .map_err(|reason| format_error(Path::new(MEMORY_PATH), None, reason))
}

/// Write a single array as a `.npy` file in the precision of `F`. Atomic: on error no file is
/// left behind.
///
/// # Errors
/// [`Error::Io`] naming the path if it cannot be written.
///
/// # Examples
/// ```
/// use llfc::io::{read_npy, write_npy};
/// let x = ndarray::arr2(&[[1.0f64, 2.0], [3.0, 4.0]]);
/// let path = std::env::temp_dir().join(format!("llfc-x-{}.npy", std::process::id()));
/// write_npy(&path, &x.t())?; // any layout; stored as a Fortran-order array
/// assert_eq!(read_npy::<f64>(&path)?, x.t().into_dyn());
/// # std::fs::remove_file(&path).unwrap();
/// # Ok::<(), llfc::Error>(())
/// ```
pub fn write_npy<F, S, D>(path: impl AsRef<Path>, array: &ArrayBase<S, D>) -> Result<()>
where
    F: Float,
    S: Data<Elem = F>,
    D: Dimension,
{
    let path = path.as_ref();
    write_atomically(path, |file| write_npy_to(file, array, path))
}

/// Serialise a single array to the bytes of a `.npy` file.
///
/// # Errors
/// [`Error::InvalidArgument`] if `F` is neither f32 nor f64.
pub fn array_to_npy_bytes<F, S, D>(array: &ArrayBase<S, D>) -> Result<Vec<u8>>
where
    F: Float,
    S: Data<Elem = F>,
    D: Dimension,
{
    let mut out = Vec::new();
    write_npy_to(&mut out, array, Path::new(MEMORY_PATH))?;
    Ok(out)
}

// ---------------------------------------------------------------------------------------------

/// Map a writer error to [`Error::Io`] for `path`, keeping the OS error where there is one.
fn npy_write_error(path: &Path, e: WriteNpyError) -> Error {
    match e {
        WriteNpyError::Io(source) => io_error(path, source),
        other => io_error(path, std::io::Error::other(other.to_string())),
    }
}

fn npz_write_error(path: &Path, e: WriteNpzError) -> Error {
    match e {
        WriteNpzError::Zip(ZipError::Io(source)) => io_error(path, source),
        WriteNpzError::Npy(e) => npy_write_error(path, e),
        other => io_error(path, std::io::Error::other(other.to_string())),
    }
}

fn write_npy_to<F, S, D, W>(writer: W, array: &ArrayBase<S, D>, path: &Path) -> Result<()>
where
    F: Float,
    S: Data<Elem = F>,
    D: Dimension,
    W: Write,
{
    let result = match Dtype::of::<F>()? {
        Dtype::F64 => array.mapv(to_f64).write_npy(writer),
        _ => array.mapv(to_f32).write_npy(writer),
    };
    result.map_err(|e| npy_write_error(path, e))
}

/// Write named arrays as an uncompressed `.npz` archive to `writer`, each as float64 if
/// `dtype_of(name)` is `F64` and as float32 otherwise, then the raw tensors; returns the
/// writer.
pub(super) fn write_npz_to<'a, F, K, S, D, I, W>(
    writer: W,
    arrays: I,
    dtype_of: impl Fn(&str) -> Dtype,
    raw: &[(String, RawTensor)],
    path: &Path,
) -> Result<W>
where
    F: Float,
    K: AsRef<str>,
    S: Data<Elem = F> + 'a,
    D: Dimension + 'a,
    I: IntoIterator<Item = (K, &'a ArrayBase<S, D>)>,
    W: Write + Seek,
{
    // Through a sticky writer: after an I/O error the zip writer sees only successes, so that
    // neither it nor its `Drop` (which would print "ZipWriter drop failed") reports a second
    // error; the first one is returned below.
    let mut npz = NpzWriter::new(Sticky::new(writer));
    let mut seen = HashSet::new();
    for (name, array) in arrays {
        let name = name.as_ref();
        if !seen.insert(name.to_string()) {
            return Err(Error::InvalidArgument {
                name: "arrays",
                reason: format!("the name `{name}` appears twice"),
            });
        }
        let stored = match dtype_of(name) {
            Dtype::F64 => Dtype::F64,
            _ => Dtype::F32,
        };
        // Zip64 entries are only needed past 4 GiB; a fixed date keeps the output reproducible.
        let nbytes = (array.len() as u64).saturating_mul(stored.size() as u64);
        let options = SimpleFileOptions::default()
            .compression_method(CompressionMethod::Stored)
            .last_modified_time(DateTime::default())
            .large_file(nbytes.saturating_add(1 << 16) >= zip::ZIP64_BYTES_THR);
        let result = match stored {
            Dtype::F64 => npz.add_array_with_options(name, &array.mapv(to_f64), options),
            _ => npz.add_array_with_options(name, &array.mapv(to_f32), options),
        };
        result.map_err(|e| npz_write_error(path, e))?;
    }
    for (name, tensor) in raw {
        if !seen.insert(name.clone()) {
            return Err(Error::InvalidArgument {
                name: "arrays",
                reason: format!("the name `{name}` appears twice"),
            });
        }
        tensor.check(name)?;
        let options = SimpleFileOptions::default()
            .compression_method(CompressionMethod::Stored)
            .last_modified_time(DateTime::default())
            .large_file(tensor.data.len() as u64 + (1 << 16) >= zip::ZIP64_BYTES_THR);
        add_raw(&mut npz, name, tensor, options).map_err(|e| npz_write_error(path, e))?;
    }
    npz.finish()
        .map_err(|e| npz_write_error(path, e))?
        .finish()
        .map_err(|e| io_error(path, e))
}

/// Little-endian elements of `N` bytes.
fn le_elements<T, const N: usize>(data: &[u8], from: fn([u8; N]) -> T) -> Vec<T> {
    data.chunks_exact(N)
        .map(|c| from(c.try_into().unwrap_or([0; N])))
        .collect()
}

/// Add a raw tensor (checked) to an archive as the matching NumPy dtype.
fn add_raw<W: Write + Seek>(
    npz: &mut NpzWriter<W>,
    name: &str,
    tensor: &RawTensor,
    options: SimpleFileOptions,
) -> std::result::Result<(), WriteNpzError> {
    fn add<W: Write + Seek, T: ndarray_npy::WritableElement>(
        npz: &mut NpzWriter<W>,
        name: &str,
        shape: &[usize],
        values: Vec<T>,
        options: SimpleFileOptions,
    ) -> std::result::Result<(), WriteNpzError> {
        // The length was checked against the shape.
        match ArrayD::from_shape_vec(IxDyn(shape), values) {
            Ok(array) => npz.add_array_with_options(name, &array, options),
            Err(e) => Err(WriteNpzError::Zip(ZipError::Io(std::io::Error::other(e)))),
        }
    }
    let (shape, data) = (&tensor.shape[..], &tensor.data[..]);
    // Every fixed-width integer type: decode little-endian elements, then add the array.
    macro_rules! le {
        ($t:ty) => {
            add(
                npz,
                name,
                shape,
                le_elements(data, <$t>::from_le_bytes),
                options,
            )
        };
    }
    match tensor.dtype {
        RawDtype::Bool => add(
            npz,
            name,
            shape,
            data.iter().map(|&b| b != 0).collect(),
            options,
        ),
        RawDtype::U8 => add(npz, name, shape, data.to_vec(), options),
        RawDtype::I8 => le!(i8),
        RawDtype::U16 => le!(u16),
        RawDtype::I16 => le!(i16),
        RawDtype::U32 => le!(u32),
        RawDtype::I32 => le!(i32),
        RawDtype::U64 => le!(u64),
        RawDtype::I64 => le!(i64),
    }
}

/// Deflate's largest expansion (a run of one byte costs at least ~1/1032 of its length).
const MAX_DEFLATE_RATIO: u64 = 1032;

/// Parse a `.npz` archive held in memory, with the stored dtype of each array; errors name
/// `path`.
/// With `keep_raw`, integer and boolean arrays are returned as raw tensors instead of refused.
pub(super) fn parse_npz<F: Float>(bytes: &[u8], path: &Path, keep_raw: bool) -> Result<Parsed<F>> {
    let mut zip = ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| format_error(path, None, format!("not a valid .npz (zip) archive: {e}")))?;
    check_unique_names(bytes, &zip, path)?;
    let mut out = Parsed::default();
    for index in 0..zip.len() {
        let raw_name = zip.name_for_index(index).unwrap_or_default().to_string();
        let key = raw_name
            .strip_suffix(".npy")
            .unwrap_or(&raw_name)
            .to_string();
        let err = |reason: String| format_error(path, Some(&key), reason);
        let (method, stored_size) = {
            let raw = zip
                .by_index_raw(index)
                .map_err(|e| err(format!("unreadable archive entry: {e}")))?;
            (raw.compression(), raw.compressed_size())
        };
        if stored_size > bytes.len() as u64 {
            return Err(err(format!(
                "the entry claims {stored_size} stored bytes, more than the archive's {}",
                bytes.len()
            )));
        }
        if !matches!(
            method,
            CompressionMethod::Stored | CompressionMethod::Deflated
        ) {
            return Err(err(format!(
                "the entry uses the compression method {method}; only stored entries \
                 (numpy.savez) and deflated ones (numpy.savez_compressed) are supported"
            )));
        }
        let entry = zip
            .by_index(index)
            .map_err(|e| err(format!("unreadable archive entry: {e}")))?;
        if entry.is_dir() {
            return Err(err("the entry is a directory, not an array".into()));
        }
        // The claimed size bounds what is read, and it must be one the stored bytes can
        // produce (deflate expands at most ~1032×), so a forged header cannot make the reader
        // allocate without limit.
        let claimed = entry.size();
        if claimed
            > stored_size
                .saturating_mul(MAX_DEFLATE_RATIO)
                .saturating_add(1024)
        {
            return Err(err(format!(
                "the entry claims {claimed} bytes from {stored_size} stored bytes"
            )));
        }
        let capacity = usize::try_from(claimed).unwrap_or(usize::MAX);
        let mut data = Vec::with_capacity(capacity.min(bytes.len().saturating_mul(4)));
        entry
            .take(claimed.saturating_add(1))
            .read_to_end(&mut data)
            .map_err(|e| err(format!("cannot read the entry: {e}")))?;
        if data.len() as u64 != claimed {
            return Err(err(format!(
                "the entry holds {} bytes, not the {claimed} its header claims",
                data.len()
            )));
        }
        let entry = parse_npy_entry(&data, keep_raw).map_err(err)?;
        if out.contains(&key) {
            return Err(err("two entries have this name".into()));
        }
        match entry {
            Entry::Float(array, dtype) => {
                out.dtypes.insert(key.clone(), dtype);
                out.params.insert(key, array);
            }
            Entry::Raw(raw) => out.others.push((key, raw)),
        }
    }
    Ok(out)
}

/// Signature of a central directory file header.
const CENTRAL_HEADER: u32 = 0x0201_4b50;
/// Bytes of a central directory file header before its name.
const CENTRAL_HEADER_LEN: usize = 46;

/// Refuse an archive whose central directory lists two entries with the same name: the `zip`
/// crate keeps only one of them (the last), so a second copy would silently replace the first.
/// The central directory is walked here, from where the `zip` crate found it.
fn check_unique_names(bytes: &[u8], zip: &ZipArchive<Cursor<&[u8]>>, path: &Path) -> Result<()> {
    let u16_at = |at: usize| -> Option<usize> {
        bytes
            .get(at..at.checked_add(2)?)
            .map(|b| usize::from(u16::from_le_bytes([b[0], b[1]])))
    };
    let mut at = usize::try_from(zip.central_directory_start()).unwrap_or(usize::MAX);
    let mut names: HashSet<&[u8]> = HashSet::new();
    let mut count = 0usize;
    while let Some(&[a, b, c, d]) = at.checked_add(4).and_then(|end| bytes.get(at..end)) {
        if u32::from_le_bytes([a, b, c, d]) != CENTRAL_HEADER {
            break;
        }
        let lengths = (u16_at(at + 28), u16_at(at + 30), u16_at(at + 32));
        let (Some(name_len), Some(extra_len), Some(comment_len)) = lengths else {
            break;
        };
        let start = at + CENTRAL_HEADER_LEN;
        let Some(name) = bytes.get(start..start + name_len) else {
            break;
        };
        if !names.insert(name) {
            let name = String::from_utf8_lossy(name);
            let key = name.strip_suffix(".npy").unwrap_or(&name);
            return Err(format_error(
                path,
                Some(key),
                "two entries have this name (the archive holds two arrays under one key)",
            ));
        }
        count += 1;
        at = start + name_len + extra_len + comment_len;
    }
    // Also catches names that differ as bytes but not once decoded (the zip crate's map).
    if count != zip.len() {
        return Err(format_error(
            path,
            None,
            format!(
                "the central directory lists {count} entries where {} distinct names were read",
                zip.len()
            ),
        ));
    }
    Ok(())
}

/// A decoded `.npy` array.
enum Entry<F> {
    Float(ArrayD<F>, Dtype),
    Raw(RawTensor),
}

/// Parse a float `.npy` file held in memory, with its stored dtype; the error is a reason,
/// for the caller to locate.
fn parse_npy<F: Float>(data: &[u8]) -> std::result::Result<(ArrayD<F>, Dtype), String> {
    match parse_npy_entry(data, false)? {
        Entry::Float(array, dtype) => Ok((array, dtype)),
        Entry::Raw(raw) => Err(format!("dtype {:?} is not a float type", raw.dtype)),
    }
}

/// Parse a `.npy` file held in memory; with `keep_raw`, integer and boolean arrays come back
/// as raw tensors instead of errors.
fn parse_npy_entry<F: Float>(data: &[u8], keep_raw: bool) -> std::result::Result<Entry<F>, String> {
    if data.len() < MAGIC.len() + 2 || &data[..MAGIC.len()] != MAGIC {
        return Err("not a .npy array (missing the \\x93NUMPY magic string)".into());
    }
    let (major, minor) = (data[6], data[7]);
    let len_bytes = match (major, minor) {
        (1, 0) => 2,
        (2 | 3, 0) => 4,
        _ => return Err(format!("unsupported .npy format version {major}.{minor}")),
    };
    let prefix = MAGIC.len() + 2 + len_bytes;
    let header_len = match data.get(MAGIC.len() + 2..prefix) {
        Some(&[a, b]) => usize::from(u16::from_le_bytes([a, b])),
        Some(&[a, b, c, d]) => {
            usize::try_from(u32::from_le_bytes([a, b, c, d])).unwrap_or(usize::MAX)
        }
        _ => return Err("truncated .npy header".into()),
    };
    if header_len > MAX_HEADER_LEN {
        return Err(format!(
            "the .npy header claims {header_len} bytes (more than the {MAX_HEADER_LEN} accepted)"
        ));
    }
    let header_end = prefix + header_len;
    let Some(header_text) = data.get(prefix..header_end) else {
        return Err(format!(
            "truncated .npy header: it claims {header_len} bytes, {} are present",
            data.len() - prefix
        ));
    };
    // The header is a Python literal parsed recursively: bound its nesting first.
    let mut depth = 0usize;
    for &c in header_text {
        match c {
            b'(' | b'[' | b'{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err("the .npy header is nested too deeply".into());
                }
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    let header = Header::from_reader(&mut &data[..header_end])
        .map_err(|e| format!("invalid .npy header: {e}"))?;
    let descr = header.type_descriptor.as_string().ok_or_else(|| {
        format!(
            "unsupported dtype {} (structured arrays are not supported)",
            header.type_descriptor
        )
    })?;
    let kind = match parse_descr(descr) {
        Ok((stored, big_endian)) => Ok((stored, big_endian)),
        Err(reason) => match RawDtype::from_npy_descr(descr) {
            Some(raw) if keep_raw => Err(raw),
            _ => return Err(reason),
        },
    };
    let size = match kind {
        Ok((stored, _)) => stored.size(),
        Err((raw, _)) => raw.size(),
    };
    let body = &data[header_end..];
    let (n, nbytes) = checked_sizes(&header.shape, size)
        .ok_or_else(|| format!("the shape {:?} overflows", header.shape))?;
    if body.len() != nbytes {
        let what = if body.len() < nbytes {
            "truncated data"
        } else {
            "unexpected trailing bytes"
        };
        return Err(format!(
            "{what}: shape {:?} of dtype `{descr}` needs {nbytes} bytes, found {}",
            header.shape,
            body.len()
        ));
    }
    let shape = IxDyn(&header.shape);
    let fortran = header.layout.is_fortran();
    match kind {
        Ok((stored, big_endian)) => {
            let values = decode(body, stored, big_endian);
            let array = if fortran {
                ArrayD::from_shape_vec(shape.f(), values)
                    .map_err(|e| e.to_string())?
                    .as_standard_layout()
                    .into_owned()
            } else {
                ArrayD::from_shape_vec(shape, values).map_err(|e| e.to_string())?
            };
            Ok(Entry::Float(array, stored))
        }
        Err((dtype, big_endian)) => {
            // Row-major order of the element indices (a permutation of 0..n if Fortran).
            let order: Vec<usize> = if fortran {
                ArrayD::from_shape_vec(shape.f(), (0..n).collect())
                    .map_err(|e| e.to_string())?
                    .iter()
                    .copied()
                    .collect()
            } else {
                (0..n).collect()
            };
            let mut data = Vec::with_capacity(nbytes);
            for i in order {
                let element = &body[i * size..(i + 1) * size];
                if big_endian {
                    data.extend(element.iter().rev());
                } else {
                    data.extend(element);
                }
            }
            Ok(Entry::Raw(RawTensor {
                dtype,
                shape: header.shape.clone(),
                data,
            }))
        }
    }
}

/// The stored type and byte order of a NumPy dtype string; other dtypes are refused with a
/// reason naming them.
fn parse_descr(descr: &str) -> std::result::Result<(Dtype, bool), String> {
    let (order, code) = descr.split_at(descr.char_indices().nth(1).map_or(0, |(i, _)| i));
    let stored = match code {
        "f2" => Some(Dtype::F16),
        "f4" => Some(Dtype::F32),
        "f8" => Some(Dtype::F64),
        _ => None,
    };
    match (order, stored) {
        ("<", Some(s)) => Ok((s, false)),
        (">", Some(s)) => Ok((s, true)),
        _ => {
            let kind = match code.chars().next() {
                Some('i' | 'u') => "an integer dtype",
                Some('b' | '?') => "a boolean dtype",
                Some('c') => "a complex dtype",
                Some('f') => "an unsupported float width",
                Some('U' | 'S' | 'a') => "a string dtype",
                Some('O') => "an object (pickled) dtype",
                Some('M' | 'm') => "a datetime dtype",
                _ => "an unsupported dtype",
            };
            Err(format!(
                "dtype `{descr}` is {kind}; only float16, float32 and float64 arrays \
                 can be read as floats"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy_with_header(dict: &str, body: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend([1, 0]);
        let header = format!("{dict}\n");
        out.extend(u16::try_from(header.len()).unwrap().to_le_bytes());
        out.extend(header.as_bytes());
        out.extend(body);
        out
    }

    #[test]
    fn descr_classification() {
        assert_eq!(parse_descr("<f4"), Ok((Dtype::F32, false)));
        assert_eq!(parse_descr(">f8"), Ok((Dtype::F64, true)));
        assert_eq!(parse_descr("<f2"), Ok((Dtype::F16, false)));
        assert!(parse_descr("<i8").unwrap_err().contains("integer"));
        assert!(parse_descr("<c16").unwrap_err().contains("complex"));
        assert!(parse_descr("|b1").is_err());
        assert!(parse_descr("").is_err());
        assert!(parse_descr("é").is_err());
    }

    #[test]
    fn forged_headers_fail_without_allocating() {
        let huge = npy_with_header(
            "{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000,), }",
            &[0; 8],
        );
        assert!(parse_npy::<f64>(&huge)
            .unwrap_err()
            .contains("truncated data"));
        let overflow = npy_with_header(
            "{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296, 4294967296), }",
            &[],
        );
        assert!(parse_npy::<f64>(&overflow)
            .unwrap_err()
            .contains("overflows"));
        let nested = npy_with_header(&format!("{}{}", "[".repeat(5000), "]".repeat(5000)), &[]);
        assert!(parse_npy::<f64>(&nested).unwrap_err().contains("nested"));
        let mut long = MAGIC.to_vec();
        long.extend([2, 0]);
        long.extend(u32::MAX.to_le_bytes());
        assert!(parse_npy::<f64>(&long).unwrap_err().contains("claims"));
    }

    #[test]
    fn raw_integers_are_reordered_and_made_little_endian() {
        // Column-major data of [[1, 2, 3], [4, 5, 6]] stored as big-endian int32.
        let body: Vec<u8> = [1i32, 4, 2, 5, 3, 6]
            .iter()
            .flat_map(|x| x.to_be_bytes())
            .collect();
        let npy = npy_with_header(
            "{'descr': '>i4', 'fortran_order': True, 'shape': (2, 3), }",
            &body,
        );
        assert!(parse_npy::<f32>(&npy).unwrap_err().contains("integer"));
        let Ok(Entry::<f32>::Raw(raw)) = parse_npy_entry(&npy, true) else {
            panic!("expected a raw tensor");
        };
        assert_eq!(raw.dtype, RawDtype::I32);
        assert_eq!(raw.shape, [2, 3]);
        let values: Vec<i32> = le_elements(&raw.data, i32::from_le_bytes);
        assert_eq!(values, [1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn fortran_and_big_endian_values_land_in_place() {
        // Column-major data of [[1, 2, 3], [4, 5, 6]] stored big-endian.
        let body: Vec<u8> = [1.0f32, 4.0, 2.0, 5.0, 3.0, 6.0]
            .iter()
            .flat_map(|x| x.to_be_bytes())
            .collect();
        let npy = npy_with_header(
            "{'descr': '>f4', 'fortran_order': True, 'shape': (2, 3), }",
            &body,
        );
        let (a, dtype) = parse_npy::<f32>(&npy).unwrap();
        assert_eq!(dtype, Dtype::F32);
        assert_eq!(
            a,
            ndarray::arr2(&[[1.0f32, 2.0, 3.0], [4.0, 5.0, 6.0]]).into_dyn()
        );
        assert!(a.is_standard_layout());
    }

    /// A writer of a full disk: accepts `room` bytes, then fails every call (and counts them).
    #[derive(Debug)]
    struct FullDisk {
        inner: Cursor<Vec<u8>>,
        room: usize,
        failed_calls: usize,
    }

    impl Write for FullDisk {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.inner.get_ref().len() + buf.len() > self.room {
                self.failed_calls += 1;
                return Err(std::io::Error::other("no space left on device"));
            }
            self.inner.write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Seek for FullDisk {
        fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
            self.inner.seek(to)
        }
    }

    #[test]
    fn a_full_disk_is_one_error_and_the_zip_writer_sees_no_second_one() {
        let params: Params<f64> = [("w", ndarray::Array1::<f64>::zeros(500).into_dyn())]
            .into_iter()
            .collect();
        let mut disk = FullDisk {
            inner: Cursor::new(Vec::new()),
            room: 1000,
            failed_calls: 0,
        };
        let path = Path::new("full.npz");
        let e = write_npz_to(&mut disk, params.iter(), |_| Dtype::F64, &[], path).unwrap_err();
        assert!(e.to_string().contains("no space left"), "{e}");
        // The first failure only: the zip writer (and its `Drop`, which prints "ZipWriter drop
        // failed" on an error) never reached the disk again.
        assert_eq!(disk.failed_calls, 1);
    }
}
