//! `.npz` archives: the zip container of `.npy` arrays.
//!
//! Writing streams each array into a stored zip entry ([`super::npy`]). Reading walks the archive with `zip` from
//! any seekable reader (a file, or a slice in memory) and reads each entry's `.npy` array
//! straight from the entry into the array ([`super::npy`]): no buffer of the whole file or of a
//! whole entry is ever held. Every size the archive claims is checked against the archive's
//! length before anything is allocated, and two entries of the same name are refused.

use std::collections::{BTreeMap, HashSet};
use std::io::{Cursor, Read, Seek, SeekFrom, Write};
use std::path::Path;

use ndarray::{ArrayBase, ArrayD, Data, Dimension};
use zip::result::ZipError;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, ZipArchive, ZipWriter};

use super::files::{open_bounded, Sticky};
use super::npy::{
    read_npy_body, read_npy_header, write_npy_stream, write_raw_npy, Entry, NpyHeader,
};
use super::{format_error, io_error, write_atomically, Dtype, Parsed, RawTensor};
use crate::error::{Error, Result};
use crate::float::Float;
use crate::params::Params;

/// Read a `.npz` archive (as written by `numpy.savez` or [`write_npz`]) into a parameter set,
/// in archive order. Entry names lose one `.npy` suffix, as in NumPy.
///
/// # Errors
/// [`Error::Io`] naming the path if the file cannot be read; [`Error::Format`] naming the path
/// and the entry if the archive is malformed, uses a compression method other than none
/// (`numpy.savez`) or deflate (`numpy.savez_compressed`), an entry is not a valid `.npy` array,
/// holds a non-float dtype, or two entries share a name.
pub fn read_npz<F: Float>(path: impl AsRef<Path>) -> Result<Params<F>> {
    read_npz_file(path.as_ref(), false).map(|p| p.params)
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

// ---------------------------------------------------------------------------------------------

/// Map a zip writer error to [`Error::Io`] for `path`, keeping the OS error where there is one.
fn zip_write_error(path: &Path, e: ZipError) -> Error {
    match e {
        ZipError::Io(source) => io_error(path, source),
        other => io_error(path, std::io::Error::other(other.to_string())),
    }
}

/// The options of every entry written: stored (as `numpy.savez`), a fixed date (reproducible
/// output), zip64 only where an entry of `nbytes` may pass 4 GiB.
fn entry_options(nbytes: u64) -> SimpleFileOptions {
    SimpleFileOptions::default()
        .compression_method(CompressionMethod::Stored)
        .last_modified_time(DateTime::default())
        .large_file(nbytes.saturating_add(1 << 16) >= zip::ZIP64_BYTES_THR)
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
    let mut zip = ZipWriter::new(Sticky::new(writer));
    let mut seen = HashSet::new();
    let mut start = |zip: &mut ZipWriter<_>, name: &str, nbytes: u64| {
        if !seen.insert(name.to_string()) {
            return Err(Error::InvalidArgument {
                name: "arrays",
                reason: format!("the name `{name}` appears twice"),
            });
        }
        // NumPy's names: one `.npy` suffix added (and removed again when reading).
        zip.start_file(format!("{name}.npy"), entry_options(nbytes))
            .map_err(|e| zip_write_error(path, e))
    };
    for (name, array) in arrays {
        let name = name.as_ref();
        let stored = match dtype_of(name) {
            Dtype::F64 => Dtype::F64,
            _ => Dtype::F32,
        };
        start(
            &mut zip,
            name,
            (array.len() as u64).saturating_mul(stored.size() as u64),
        )?;
        write_npy_stream(&mut zip, array, stored).map_err(|e| io_error(path, e))?;
    }
    for (name, tensor) in raw {
        tensor.check(name)?;
        start(&mut zip, name, tensor.data.len() as u64)?;
        write_raw_npy(&mut zip, tensor).map_err(|e| io_error(path, e))?;
    }
    zip.finish()
        .map_err(|e| zip_write_error(path, e))?
        .finish()
        .map_err(|e| io_error(path, e))
}

/// Deflate's largest expansion (a run of one byte costs at least ~1/1032 of its length).
const MAX_DEFLATE_RATIO: u64 = 1032;

/// Read a `.npz` file from disk, entry by entry (no buffer of the whole file).
pub(super) fn read_npz_file<F: Float>(path: &Path, keep_raw: bool) -> Result<Parsed<F>> {
    let (file, len) = open_bounded(path)?;
    parse_npz(file, len, path, keep_raw)
}

/// Parse a `.npz` archive of `len` bytes from `reader`, with the stored dtype of each array;
/// errors name `path`. With `keep_raw`, integer and boolean arrays are returned as raw tensors
/// instead of refused.
pub(super) fn parse_npz<F: Float, R: Read + Seek>(
    mut reader: R,
    len: u64,
    path: &Path,
    keep_raw: bool,
) -> Result<Parsed<F>> {
    let invalid =
        |e: ZipError| format_error(path, None, format!("not a valid .npz (zip) archive: {e}"));
    let (directory_start, count) = {
        let zip = ZipArchive::new(&mut reader).map_err(invalid)?;
        (zip.central_directory_start(), zip.len())
    };
    check_unique_names(&mut reader, directory_start, len, count, path)?;
    let mut zip = ZipArchive::new(&mut reader).map_err(invalid)?;
    let mut out = Parsed::default();
    for index in 0..zip.len() {
        let raw_name = zip.name_for_index(index).unwrap_or_default().to_string();
        let key = raw_name
            .strip_suffix(".npy")
            .unwrap_or(&raw_name)
            .to_string();
        let err = |reason: String| format_error(path, Some(&key), reason);
        let mut opened = open_entry(&mut zip, index, len, keep_raw).map_err(&err)?;
        let value = read_npy_body(
            &mut opened.entry,
            &opened.header,
            opened.body_len,
            opened.exact,
        )
        .map_err(&err)?;
        end_of_entry(&mut opened.entry).map_err(&err)?;
        if out.contains(&key) {
            return Err(err("two entries have this name".into()));
        }
        match value {
            Entry::Float(array, dtype) => {
                out.dtypes.insert(key.clone(), dtype);
                out.params.insert(key, array);
            }
            Entry::Raw(raw) => out.others.push((key, raw)),
        }
    }
    Ok(out)
}

/// An archive entry opened at the start of its `.npy` body.
pub(super) struct OpenedEntry<'a, R: Read + Seek> {
    pub(super) entry: zip::read::ZipFile<'a, R>,
    pub(super) header: NpyHeader,
    /// Bytes of the body the entry claims.
    pub(super) body_len: u64,
    /// Whether the entry is stored and holds its claimed bytes within the archive (so the array
    /// is allocated at once; a deflated one grows as it decompresses).
    pub(super) exact: bool,
}

/// Open entry `index` of an archive of `len` bytes, check what it claims (stored size within
/// the archive, compression stored or deflate, a decompressed size the stored bytes can give)
/// and read its `.npy` header. The error is a reason, for the caller to locate.
pub(super) fn open_entry<R: Read + Seek>(
    zip: &mut ZipArchive<R>,
    index: usize,
    len: u64,
    keep_raw: bool,
) -> std::result::Result<OpenedEntry<'_, R>, String> {
    let (method, stored_size) = {
        let raw = zip
            .by_index_raw(index)
            .map_err(|e| format!("unreadable archive entry: {e}"))?;
        (raw.compression(), raw.compressed_size())
    };
    if stored_size > len {
        return Err(format!(
            "the entry claims {stored_size} stored bytes, more than the archive's {len}"
        ));
    }
    if !matches!(
        method,
        CompressionMethod::Stored | CompressionMethod::Deflated
    ) {
        return Err(format!(
            "the entry uses the compression method {method}; only stored entries \
             (numpy.savez) and deflated ones (numpy.savez_compressed) are supported"
        ));
    }
    let mut entry = zip
        .by_index(index)
        .map_err(|e| format!("unreadable archive entry: {e}"))?;
    if entry.is_dir() {
        return Err("the entry is a directory, not an array".into());
    }
    // The claimed size bounds what is read, and it must be one the stored bytes can
    // decompress to (deflate expands at most ~1032-fold).
    let claimed = entry.size();
    if claimed
        > stored_size
            .saturating_mul(MAX_DEFLATE_RATIO)
            .saturating_add(1024)
    {
        return Err(format!(
            "the entry claims {claimed} bytes from {stored_size} stored bytes"
        ));
    }
    let header = read_npy_header(&mut entry, keep_raw)?;
    let body_len = claimed
        .checked_sub(header.len as u64)
        .ok_or_else(|| format!("the entry claims {claimed} bytes, fewer than its .npy header"))?;
    Ok(OpenedEntry {
        entry,
        header,
        body_len,
        exact: method == CompressionMethod::Stored && claimed <= stored_size,
    })
}

/// That an entry ends where its array does (this read also makes the zip reader check the
/// CRC), or the reason not.
pub(super) fn end_of_entry<R: Read>(entry: &mut R) -> std::result::Result<(), String> {
    let mut extra = [0u8; 1];
    match entry.read(&mut extra) {
        Ok(0) => Ok(()),
        Ok(_) => Err("the entry holds more bytes than its header claims".into()),
        Err(e) => Err(format!("cannot read the entry: {e}")),
    }
}

/// Parse a `.npz` archive held in memory (see [`parse_npz`]).
pub(super) fn parse_npz_bytes<F: Float>(
    bytes: &[u8],
    path: &Path,
    keep_raw: bool,
) -> Result<Parsed<F>> {
    parse_npz(Cursor::new(bytes), bytes.len() as u64, path, keep_raw)
}

/// Signature of a central directory file header.
const CENTRAL_HEADER: u32 = 0x0201_4b50;
/// Bytes of a central directory file header before its name.
const CENTRAL_HEADER_LEN: usize = 46;

/// Refuse an archive whose central directory lists two entries with the same name: the `zip`
/// crate keeps only one of them (the last), so a second copy would silently replace the first.
/// The central directory (from `start`, where the `zip` crate found it, to the end of the
/// archive's `len` bytes) is read and walked here; `count` is the number of distinct names the
/// `zip` crate read.
pub(super) fn check_unique_names<R: Read + Seek>(
    reader: &mut R,
    start: u64,
    len: u64,
    count: usize,
    path: &Path,
) -> Result<()> {
    let mut bytes = Vec::new();
    if start < len {
        reader
            .seek(SeekFrom::Start(start))
            .map_err(|e| io_error(path, e))?;
        reader
            .take(len - start)
            .read_to_end(&mut bytes)
            .map_err(|e| io_error(path, e))?;
    }
    let u16_at = |at: usize| -> Option<usize> {
        bytes
            .get(at..at.checked_add(2)?)
            .map(|b| usize::from(u16::from_le_bytes([b[0], b[1]])))
    };
    let mut at = 0usize;
    let mut names: HashSet<&[u8]> = HashSet::new();
    let mut listed = 0usize;
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
        listed += 1;
        at = start + name_len + extra_len + comment_len;
    }
    // Also catches names that differ as bytes but not once decoded (the zip crate's map).
    if listed != count {
        return Err(format_error(
            path,
            None,
            format!(
                "the central directory lists {listed} entries where {count} distinct names were read"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
