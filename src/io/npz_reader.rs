//! Reading large `.npz` arrays a block of rows at a time ([`NpzReader`], [`RowBlocks`]), with
//! the checks of [`read_npz`](super::read_npz).

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn};
use zip::result::ZipError;
use zip::ZipArchive;

use super::files::{open_bounded, Bounded};
use super::npy::{read_npy_body, Entry};
use super::npz::{check_unique_names, end_of_entry, open_entry, OpenedEntry};
use super::{format_error, read_decoded_into, Dtype};
use crate::error::{Error, Result};
use crate::float::Float;

/// An open `.npz` archive whose arrays are read one at a time and in blocks of rows (samples),
/// never whole: what a caller streaming large feature files uses (activation matching reads
/// the features of A and B side by side, a block of samples at a time).
///
/// Opening checks the archive as [`read_npz`](super::read_npz) does (a regular file, read no further than its
/// size when opened; no two entries of one name); each array is checked when it is opened
/// ([`NpzReader::blocks`]) and as it is read (sizes, CRC).
///
/// # Examples
/// ```
/// use llfc::io::{write_npz_arrays, NpzReader};
/// let path = std::env::temp_dir().join(format!("llfc-blocks-{}.npz", std::process::id()));
/// let h = ndarray::Array2::<f64>::from_shape_fn((5, 3), |(i, j)| (3 * i + j) as f64);
/// write_npz_arrays(&path, [("P_0", &h)])?;
/// let mut npz = NpzReader::open(&path)?;
/// assert_eq!(npz.names(), ["P_0"]);
/// let mut blocks = npz.blocks::<f64>("P_0", 2)?;
/// assert_eq!(blocks.shape(), [5, 3]);
/// let mut rows = Vec::new();
/// while let Some(block) = blocks.next_block()? {
///     rows.push(block.shape()[0]);
/// }
/// assert_eq!(rows, [2, 2, 1]);
/// # std::fs::remove_file(&path).unwrap();
/// # Ok::<(), llfc::Error>(())
/// ```
pub struct NpzReader {
    zip: ZipArchive<Bounded<BufReader<File>>>,
    len: u64,
    path: PathBuf,
}

impl std::fmt::Debug for NpzReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NpzReader")
            .field("path", &self.path)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl NpzReader {
    /// Open an archive and check its directory.
    ///
    /// # Errors
    /// [`Error::Io`] naming the path if it cannot be opened or is not a regular file;
    /// [`Error::Format`] if it is not a zip archive or two entries share a name.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let (mut file, len) = open_bounded(path)?;
        let invalid =
            |e: ZipError| format_error(path, None, format!("not a valid .npz (zip) archive: {e}"));
        let (directory_start, count) = {
            let zip = ZipArchive::new(&mut file).map_err(invalid)?;
            (zip.central_directory_start(), zip.len())
        };
        check_unique_names(&mut file, directory_start, len, count, path)?;
        let zip = ZipArchive::new(file).map_err(invalid)?;
        Ok(Self {
            zip,
            len,
            path: path.to_path_buf(),
        })
    }

    /// The names of the arrays (entry names without their `.npy` suffix), in archive order.
    #[must_use]
    pub fn names(&self) -> Vec<String> {
        (0..self.zip.len())
            .filter_map(|i| self.zip.name_for_index(i))
            .map(|n| n.strip_suffix(".npy").unwrap_or(n).to_string())
            .collect()
    }

    /// Start reading array `name` in blocks of at most `rows` entries of its first axis
    /// (samples), converted to `F` ([`RowBlocks::next_block`]). A Fortran-ordered array comes
    /// as one block (its rows are not contiguous in the file).
    ///
    /// # Errors
    /// [`Error::MissingParam`] if the archive has no such array; [`Error::InvalidArgument`] if
    /// `rows` is 0; [`Error::Format`] as for [`read_npz`](super::read_npz) (a malformed entry or header, a
    /// non-float dtype, a size that does not match the shape).
    pub fn blocks<F: Float>(&mut self, name: &str, rows: usize) -> Result<RowBlocks<'_, F>> {
        if rows == 0 {
            return Err(Error::InvalidArgument {
                name: "rows",
                reason: "blocks need at least one row".into(),
            });
        }
        let path = self.path.as_path();
        let index = self
            .zip
            .index_for_name(&format!("{name}.npy"))
            .or_else(|| self.zip.index_for_name(name))
            .ok_or_else(|| Error::MissingParam {
                param: name.to_string(),
                context: format!("the archive `{}`", path.display()),
            })?;
        let err = |reason: String| format_error(path, Some(name), reason);
        let OpenedEntry {
            mut entry,
            header,
            body_len,
            exact,
        } = open_entry(&mut self.zip, index, self.len, false).map_err(&err)?;
        header.check_body(body_len).map_err(&err)?;
        let shape = header.shape().to_vec();
        let layout = header.row_major_float().filter(|_| !shape.is_empty());
        let whole = match layout {
            Some(_) => None,
            None => match read_npy_body(&mut entry, &header, body_len, exact).map_err(&err)? {
                Entry::Float(array, _) => Some(array),
                Entry::Raw(_) => return Err(err("not a float array".into())),
            },
        };
        Ok(RowBlocks {
            entry,
            layout,
            rows_left: if whole.is_some() {
                0
            } else {
                shape.first().copied().unwrap_or(0)
            },
            rows,
            whole,
            shape,
            name: name.to_string(),
            path: self.path.clone(),
        })
    }
}

/// The blocks of rows of one array of an [`NpzReader`], read in order.
pub struct RowBlocks<'a, F> {
    entry: zip::read::ZipFile<'a, Bounded<BufReader<File>>>,
    layout: Option<(Dtype, bool)>,
    rows_left: usize,
    rows: usize,
    whole: Option<ArrayD<F>>,
    shape: Vec<usize>,
    name: String,
    path: PathBuf,
}

impl<F> std::fmt::Debug for RowBlocks<'_, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowBlocks")
            .field("name", &self.name)
            .field("shape", &self.shape)
            .field("rows_left", &self.rows_left)
            .finish_non_exhaustive()
    }
}

impl<F: Float> RowBlocks<'_, F> {
    /// The shape of the whole array.
    #[must_use]
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The next block: rows `k·rows .. min((k + 1)·rows, n)` of the array (all its other axes),
    /// or `None` after the last one.
    ///
    /// # Errors
    /// [`Error::Format`] naming the file and the array if the entry is shorter than its header
    /// says, longer, or fails its CRC check.
    pub fn next_block(&mut self) -> Result<Option<ArrayD<F>>> {
        self.next_block_reusing(None)
    }

    /// [`RowBlocks::next_block`], reusing the memory of `spare` (a block the caller is done
    /// with, of this or any other array) for the new block: a loop that hands each finished
    /// block back reads the whole array with two or three allocations instead of one per
    /// block.
    ///
    /// # Errors
    /// As [`RowBlocks::next_block`].
    pub fn next_block_reusing(&mut self, spare: Option<ArrayD<F>>) -> Result<Option<ArrayD<F>>> {
        if let Some(whole) = self.whole.take() {
            self.finish()?;
            return Ok(Some(whole));
        }
        let Some((stored, big_endian)) = self.layout.filter(|_| self.rows_left > 0) else {
            return Ok(None);
        };
        let take = self.rows.min(self.rows_left);
        let row: usize = self.shape[1..].iter().product();
        let nbytes = take * row * stored.size();
        let mut values = spare.map_or_else(Vec::new, |a| a.into_raw_vec_and_offset().0);
        read_decoded_into(
            &mut self.entry,
            nbytes,
            stored,
            big_endian,
            true,
            &mut values,
        )
        .map_err(|e| self.error(format!("cannot read the array data: {e}")))?;
        let mut shape = self.shape.clone();
        shape[0] = take;
        let block =
            ArrayD::from_shape_vec(IxDyn(&shape), values).map_err(|e| self.error(e.to_string()))?;
        self.rows_left -= take;
        if self.rows_left == 0 {
            self.finish()?;
        }
        Ok(Some(block))
    }

    fn error(&self, reason: String) -> Error {
        format_error(&self.path, Some(&self.name), reason)
    }

    /// The entry must end after the array (this read also makes the zip reader check the CRC).
    fn finish(&mut self) -> Result<()> {
        end_of_entry(&mut self.entry).map_err(|reason| self.error(reason))
    }
}
