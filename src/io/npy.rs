//! Single `.npy` arrays: the header (checked before anything is allocated), the body (decoded
//! a chunk at a time, straight into the array) and the writer.
//!
//! Reading checks the `.npy` prefix and header size, parses the header dictionary
//! ([`super::npy_header`]), checks the shape against the bytes the container says are present
//! and only then decodes — so a forged header cannot make the reader allocate, recurse or panic.
//! The body is read from any [`Read`]er (a file, a zip entry, a slice) without a buffer of the
//! whole entry. Writing streams the elements a chunk at a time (no converted copy of the array).

use std::io::{Cursor, Read, Write};
use std::path::Path;

use ndarray::{ArrayBase, ArrayD, Data, Dimension, IxDyn, ShapeBuilder};

use super::files::open_bounded;
use super::npy_header::{Header, MAGIC};
use super::{
    checked_sizes, format_error, io_error, read_decoded, write_atomically, write_encoded, Dtype,
    RawDtype, RawTensor, MEMORY_PATH,
};
use crate::error::Result;
use crate::float::Float;

/// Longest `.npy` header dictionary accepted (NumPy's own default limit is 10 000 bytes; the
/// headers of plain float arrays are well under 1 KiB).
const MAX_HEADER_LEN: usize = 1 << 16;
/// Deepest bracket nesting accepted in a header (a plain array header has depth 2).
const MAX_NESTING: usize = 8;

/// Read a single `.npy` array (any dimension, C or Fortran order, either endianness).
///
/// # Errors
/// [`Error::Io`](crate::Error::Io) naming the path if it cannot be read;
/// [`Error::Format`](crate::Error::Format) naming the path if it is not a valid `.npy` file or
/// holds a non-float dtype.
pub fn read_npy<F: Float>(path: impl AsRef<Path>) -> Result<ArrayD<F>> {
    read_npy_file(path.as_ref()).map(|(a, _)| a)
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
    read_npy_file(path.as_ref())
}

/// Parse a single `.npy` array from memory. Errors name [`MEMORY_PATH`].
///
/// # Errors
/// [`Error::Format`](crate::Error::Format) as for [`read_npy`].
pub fn array_from_npy_bytes<F: Float>(bytes: &[u8]) -> Result<ArrayD<F>> {
    parse_npy(bytes)
        .map(|(a, _)| a)
        .map_err(|reason| format_error(Path::new(MEMORY_PATH), None, reason))
}

/// Write a single array as a `.npy` file in the precision of `F`. Atomic: on error no file is
/// left behind.
///
/// # Errors
/// [`Error::Io`](crate::Error::Io) naming the path if it cannot be written.
///
/// # Examples
/// ```
/// use llfc::io::{read_npy, write_npy};
/// let x = ndarray::arr2(&[[1.0f64, 2.0], [3.0, 4.0]]);
/// let path = std::env::temp_dir().join(format!("llfc-x-{}.npy", std::process::id()));
/// write_npy(&path, &x.t())?; // any layout; stored in C order
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
/// [`Error::InvalidArgument`](crate::Error::InvalidArgument) if `F` is neither f32 nor f64.
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

pub(super) fn write_npy_to<F, S, D, W>(
    mut writer: W,
    array: &ArrayBase<S, D>,
    path: &Path,
) -> Result<()>
where
    F: Float,
    S: Data<Elem = F>,
    D: Dimension,
    W: Write,
{
    let stored = Dtype::of::<F>()?;
    write_npy_stream(&mut writer, array, stored).map_err(|e| io_error(path, e))
}

/// Write `array` as a `.npy` file to `w`: C order, little-endian, float64 if `stored` is `F64`
/// and float32 otherwise, encoded a chunk at a time ([`write_encoded`]).
pub(super) fn write_npy_stream<F, S, D, W>(
    w: &mut W,
    array: &ArrayBase<S, D>,
    stored: Dtype,
) -> std::io::Result<()>
where
    F: Float,
    S: Data<Elem = F>,
    D: Dimension,
    W: Write,
{
    let (stored, descr) = match stored {
        Dtype::F64 => (Dtype::F64, "<f8"),
        _ => (Dtype::F32, "<f4"),
    };
    let header = Header {
        descr: descr.into(),
        fortran_order: false,
        shape: array.shape().to_vec(),
    };
    w.write_all(&header.to_bytes())?;
    write_encoded(w, array, stored)
}

/// Write a raw (integer or boolean) tensor as a `.npy` file to `w`, little-endian in C order
/// (booleans as 0 or 1).
pub(super) fn write_raw_npy<W: Write>(w: &mut W, tensor: &RawTensor) -> std::io::Result<()> {
    let header = Header {
        descr: tensor.dtype.npy_descr().into(),
        fortran_order: false,
        shape: tensor.shape.clone(),
    };
    w.write_all(&header.to_bytes())?;
    if tensor.dtype == RawDtype::Bool {
        let bits: Vec<u8> = tensor.data.iter().map(|&b| u8::from(b != 0)).collect();
        w.write_all(&bits)
    } else {
        w.write_all(&tensor.data)
    }
}

/// A decoded `.npy` array.
pub(super) enum Entry<F> {
    /// A float array and its stored dtype.
    Float(ArrayD<F>, Dtype),
    /// An integer or boolean array (only with `keep_raw`).
    Raw(RawTensor),
}

/// What a `.npy` header says, checked.
pub(super) struct NpyHeader {
    /// The stored float type and byte order, or the raw (integer, boolean) type and byte order.
    kind: std::result::Result<(Dtype, bool), (RawDtype, bool)>,
    shape: Vec<usize>,
    fortran: bool,
    descr: String,
    /// Elements and bytes of the body.
    n: usize,
    nbytes: usize,
    /// Bytes of the prefix and header dictionary (where the body starts).
    pub(super) len: usize,
}

impl NpyHeader {
    /// That the container holds exactly the body's bytes after the header, or the reason not.
    pub(super) fn check_body(&self, body_len: u64) -> std::result::Result<(), String> {
        let (shape, descr, nbytes) = (&self.shape, &self.descr, self.nbytes);
        if body_len == nbytes as u64 {
            return Ok(());
        }
        let what = if body_len < nbytes as u64 {
            "truncated data"
        } else {
            "unexpected trailing bytes"
        };
        Err(format!(
            "{what}: shape {shape:?} of dtype `{descr}` needs {nbytes} bytes, found {body_len}"
        ))
    }

    /// The array's shape.
    pub(super) fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The stored float type and byte order of a row-major float array, `None` for a
    /// Fortran-ordered or non-float one (whose rows are not contiguous, or not floats).
    pub(super) fn row_major_float(&self) -> Option<(Dtype, bool)> {
        self.kind.ok().filter(|_| !self.fortran)
    }
}

/// Read and check a `.npy` prefix and header from `r`, leaving `r` at the start of the body;
/// with `keep_raw`, integer and boolean dtypes are accepted. The error is a reason, for the
/// caller to locate.
pub(super) fn read_npy_header<R: Read>(
    r: &mut R,
    keep_raw: bool,
) -> std::result::Result<NpyHeader, String> {
    let mut prefix = Vec::with_capacity(12);
    r.by_ref()
        .take(MAGIC.len() as u64 + 2)
        .read_to_end(&mut prefix)
        .map_err(|e| format!("cannot read the .npy header: {e}"))?;
    if prefix.len() < MAGIC.len() + 2 || &prefix[..MAGIC.len()] != MAGIC {
        return Err("not a .npy array (missing the \\x93NUMPY magic string)".into());
    }
    let (major, minor) = (prefix[6], prefix[7]);
    let len_bytes: usize = match (major, minor) {
        (1, 0) => 2,
        (2 | 3, 0) => 4,
        _ => return Err(format!("unsupported .npy format version {major}.{minor}")),
    };
    r.by_ref()
        .take(len_bytes as u64)
        .read_to_end(&mut prefix)
        .map_err(|e| format!("cannot read the .npy header: {e}"))?;
    let header_len = match prefix.get(MAGIC.len() + 2..) {
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
    let prefix_len = prefix.len();
    r.by_ref()
        .take(header_len as u64)
        .read_to_end(&mut prefix)
        .map_err(|e| format!("cannot read the .npy header: {e}"))?;
    if prefix.len() - prefix_len != header_len {
        return Err(format!(
            "truncated .npy header: it claims {header_len} bytes, {} are present",
            prefix.len() - prefix_len
        ));
    }
    // A plain array's header nests two deep: refuse deeper ones with a clear reason (the parser
    // itself never recurses).
    let mut depth = 0usize;
    for &c in &prefix[prefix_len..] {
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
    let Header {
        descr,
        fortran_order,
        shape,
    } = Header::parse(&prefix[prefix_len..])?;
    let kind = match parse_descr(&descr) {
        Ok((stored, big_endian)) => Ok((stored, big_endian)),
        Err(reason) => match RawDtype::from_npy_descr(&descr) {
            Some(raw) if keep_raw => Err(raw),
            _ => return Err(reason),
        },
    };
    let size = match kind {
        Ok((stored, _)) => stored.size(),
        Err((raw, _)) => raw.size(),
    };
    let (n, nbytes) =
        checked_sizes(&shape, size).ok_or_else(|| format!("the shape {shape:?} overflows"))?;
    Ok(NpyHeader {
        kind,
        fortran: fortran_order,
        shape,
        descr,
        n,
        nbytes,
        len: prefix.len(),
    })
}

/// Read the body of a `.npy` array whose container holds `body_len` bytes after the header,
/// decoding a chunk at a time straight into the array. `exact`: the container has been checked
/// to hold `body_len` bytes (a stored zip entry, a file, a slice), so the array is allocated at
/// once; otherwise (a deflated entry) it grows as data arrives. The error is a reason.
pub(super) fn read_npy_body<F: Float, R: Read>(
    r: &mut R,
    header: &NpyHeader,
    body_len: u64,
    exact: bool,
) -> std::result::Result<Entry<F>, String> {
    header.check_body(body_len)?;
    let NpyHeader {
        kind,
        shape,
        fortran,
        n,
        nbytes,
        ..
    } = header;
    let dim = IxDyn(shape);
    let unreadable = |e: std::io::Error| format!("cannot read the array data: {e}");
    match *kind {
        Ok((stored, big_endian)) => {
            let values = read_decoded(r, *nbytes, stored, big_endian, exact).map_err(unreadable)?;
            let array = if *fortran {
                ArrayD::from_shape_vec(dim.f(), values)
                    .map_err(|e| e.to_string())?
                    .as_standard_layout()
                    .into_owned()
            } else {
                ArrayD::from_shape_vec(dim, values).map_err(|e| e.to_string())?
            };
            Ok(Entry::Float(array, stored))
        }
        Err((dtype, big_endian)) => {
            let mut body = Vec::new();
            r.by_ref()
                .take(*nbytes as u64)
                .read_to_end(&mut body)
                .map_err(unreadable)?;
            if body.len() != *nbytes {
                return Err(format!(
                    "truncated data: {nbytes} bytes expected, {} read",
                    body.len()
                ));
            }
            let size = dtype.size();
            // Row-major order of the element indices (a permutation of 0..n if Fortran).
            let order: Vec<usize> = if *fortran {
                ArrayD::from_shape_vec(dim.f(), (0..*n).collect())
                    .map_err(|e| e.to_string())?
                    .iter()
                    .copied()
                    .collect()
            } else {
                (0..*n).collect()
            };
            let mut data = Vec::with_capacity(*nbytes);
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
                shape: shape.clone(),
                data,
            }))
        }
    }
}

/// Parse a `.npy` file of `len` bytes from `r`; with `keep_raw`, integer and boolean arrays
/// come back as raw tensors instead of errors.
fn read_npy_from<F: Float, R: Read>(
    r: &mut R,
    len: u64,
    keep_raw: bool,
) -> std::result::Result<Entry<F>, String> {
    let header = read_npy_header(r, keep_raw)?;
    let body_len = len.saturating_sub(header.len as u64);
    read_npy_body(r, &header, body_len, true)
}

/// Parse a float `.npy` file held in memory, with its stored dtype; the error is a reason,
/// for the caller to locate.
fn parse_npy<F: Float>(data: &[u8]) -> std::result::Result<(ArrayD<F>, Dtype), String> {
    float_entry(parse_npy_entry(data, false)?)
}

/// The float array of an entry, or the reason it is not one.
fn float_entry<F>(entry: Entry<F>) -> std::result::Result<(ArrayD<F>, Dtype), String> {
    match entry {
        Entry::Float(array, dtype) => Ok((array, dtype)),
        Entry::Raw(raw) => Err(format!("dtype {:?} is not a float type", raw.dtype)),
    }
}

/// Parse a `.npy` file held in memory; with `keep_raw`, integer and boolean arrays come back
/// as raw tensors instead of errors.
fn parse_npy_entry<F: Float>(data: &[u8], keep_raw: bool) -> std::result::Result<Entry<F>, String> {
    read_npy_from(&mut Cursor::new(data), data.len() as u64, keep_raw)
}

/// Read a float `.npy` file from disk, without a buffer of the whole file.
fn read_npy_file<F: Float>(path: &Path) -> Result<(ArrayD<F>, Dtype)> {
    let (mut file, len) = open_bounded(path)?;
    read_npy_from(&mut file, len, false)
        .and_then(float_entry)
        .map_err(|reason| format_error(path, None, reason))
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
        let values: Vec<i32> = raw
            .data
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
            .collect();
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
}
