//! `.safetensors` files, through the `safetensors` crate.
//!
//! Before the crate parses a header, the data offsets of every entry are checked against the
//! size of the data section here: with offsets near `usize::MAX` the crate's own size check can
//! overflow (a panic in debug builds, an out-of-bounds slice in release builds).

use std::collections::{HashMap, HashSet};
use std::io::{Cursor, Read, Seek, SeekFrom};
use std::path::Path;

use ::safetensors::tensor::{Metadata, TensorInfo};
use ::safetensors::Dtype as StDtype;

use ndarray::{ArrayD, IxDyn};

use super::files::open_bounded;
use super::{
    checked_sizes, format_error, read_decoded, write_atomically, write_encoded, Dtype, Parsed,
    RawDtype, RawTensor,
};
use crate::error::{Error, Result};
use crate::float::Float;
use crate::params::Params;

/// The `__metadata__` key under which [`write_safetensors`] records the order of the tensors
/// (a JSON list of their names), which [`read_safetensors`] restores. A value that is not a
/// list of exactly the file's tensor names is ignored.
pub const SAFETENSORS_ORDER_KEY: &str = "llfc.order";

/// Largest header accepted, as in the `safetensors` crate (100 MB).
const MAX_HEADER_LEN: u64 = 100_000_000;

/// Read a `.safetensors` file into a parameter set.
///
/// F16, BF16, F32 and F64 tensors are converted to `F` (exactly, except F64 → f32 which rounds
/// to nearest). The order is the one recorded under [`SAFETENSORS_ORDER_KEY`] if present, else
/// the data-offset order (for files written by Python's `safetensors`: by dtype, then name).
///
/// # Errors
/// [`Error::Io`] naming the path if the file cannot be read; [`Error::Format`] naming the path
/// (and the tensor, where one is at fault) if the file is truncated or corrupted, or a tensor
/// has a non-float dtype (integers, booleans, complex, 8-bit floats, ...).
pub fn read_safetensors<F: Float>(path: impl AsRef<Path>) -> Result<Params<F>> {
    read_safetensors_file(path.as_ref(), false).map(|p| p.params)
}

/// Write a parameter set as a `.safetensors` file in the precision of `F` (F32 or F64),
/// recording its order under [`SAFETENSORS_ORDER_KEY`] and `"format": "pt"` (the tensors use
/// PyTorch's layout) in `__metadata__`. Readable by Python's `safetensors` (numpy or torch).
/// The file is written a chunk at a time to a temporary sibling, then renamed into place
/// (atomic): on error nothing is left behind.
///
/// # Errors
/// [`Error::InvalidArgument`] if a tensor is named `__metadata__` (reserved by the format);
/// [`Error::Io`] naming the path if it cannot be written.
pub fn write_safetensors<F: Float>(path: impl AsRef<Path>, params: &Params<F>) -> Result<()> {
    let path = path.as_ref();
    let dtype = Dtype::of::<F>()?;
    write_atomically(path, |file| {
        write_params_to(file, params, |_| dtype, &[], path)
    })
}

impl RawDtype {
    fn to_safetensors(self) -> StDtype {
        match self {
            Self::Bool => StDtype::BOOL,
            Self::U8 => StDtype::U8,
            Self::I8 => StDtype::I8,
            Self::U16 => StDtype::U16,
            Self::I16 => StDtype::I16,
            Self::U32 => StDtype::U32,
            Self::I32 => StDtype::I32,
            Self::U64 => StDtype::U64,
            Self::I64 => StDtype::I64,
        }
    }

    fn from_safetensors(dtype: StDtype) -> Option<Self> {
        Some(match dtype {
            StDtype::BOOL => Self::Bool,
            StDtype::U8 => Self::U8,
            StDtype::I8 => Self::I8,
            StDtype::U16 => Self::U16,
            StDtype::I16 => Self::I16,
            StDtype::U32 => Self::U32,
            StDtype::I32 => Self::I32,
            StDtype::U64 => Self::U64,
            StDtype::I64 => Self::I64,
            _ => return None,
        })
    }
}

fn reserved_name(name: &str) -> Result<()> {
    if name == "__metadata__" {
        return Err(Error::InvalidArgument {
            name: "params",
            reason: "a tensor named `__metadata__` cannot be stored in safetensors".into(),
        });
    }
    Ok(())
}

/// The bytes of the `.safetensors` file for `params`, each tensor stored as `dtype_of(name)`
/// (rounding to nearest), followed by the raw tensors (see [`write_params_to`]).
pub(super) fn serialize_params<F: Float>(
    params: &Params<F>,
    dtype_of: impl Fn(&str) -> Dtype,
    raw: &[(String, RawTensor)],
) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    write_params_to(
        &mut out,
        params,
        dtype_of,
        raw,
        Path::new(super::MEMORY_PATH),
    )?;
    Ok(out)
}

/// Where a tensor's data comes from when it is written.
enum Source<'a, F> {
    /// A float tensor, converted to the stored dtype as it is written.
    Float(&'a ndarray::ArrayD<F>, Dtype),
    /// Raw bytes, written as they are.
    Raw(&'a RawTensor),
}

/// Write the `.safetensors` file for `params` (each tensor stored as `dtype_of(name)`, rounding
/// to nearest) and the raw tensors to `w`, a tensor at a time and each in chunks: memory is one
/// chunk whatever the size of the model. The header and the data layout are the `safetensors`
/// crate's (tensors sorted by dtype, then name; header padded to 8 bytes), with the order of
/// `params` recorded under [`SAFETENSORS_ORDER_KEY`] and `"format": "pt"`. I/O errors name
/// `path`.
pub(super) fn write_params_to<F: Float, W: std::io::Write>(
    w: &mut W,
    params: &Params<F>,
    dtype_of: impl Fn(&str) -> Dtype,
    raw: &[(String, RawTensor)],
    path: &Path,
) -> Result<()> {
    let mut tensors: Vec<(&str, StDtype, Vec<usize>, Source<'_, F>)> =
        Vec::with_capacity(params.len() + raw.len());
    for (name, t) in params.iter() {
        reserved_name(name)?;
        let stored = dtype_of(name);
        let dtype = match stored {
            Dtype::F64 => StDtype::F64,
            Dtype::F32 => StDtype::F32,
            Dtype::F16 => StDtype::F16,
            Dtype::BF16 => StDtype::BF16,
        };
        tensors.push((name, dtype, t.shape().to_vec(), Source::Float(t, stored)));
    }
    for (name, t) in raw {
        reserved_name(name)?;
        t.check(name)?;
        if params.contains(name) || raw.iter().filter(|(k, _)| k == name).count() > 1 {
            return Err(Error::InvalidArgument {
                name: "checkpoint",
                reason: format!("the name `{name}` appears twice"),
            });
        }
        tensors.push((
            name,
            t.dtype.to_safetensors(),
            t.shape.clone(),
            Source::Raw(t),
        ));
    }
    let invalid = |e: String| Error::InvalidArgument {
        name: "params",
        reason: format!("cannot serialise to safetensors: {e}"),
    };
    let names: Vec<&str> = tensors.iter().map(|(k, ..)| *k).collect();
    let order = serde_json::to_string(&names).map_err(|e| Error::InvalidArgument {
        name: "params",
        reason: format!("cannot record the tensor order: {e}"),
    })?;
    let metadata = HashMap::from([
        ("format".to_string(), "pt".to_string()),
        (SAFETENSORS_ORDER_KEY.to_string(), order),
    ]);
    // The crate's layout: descending dtype, then name.
    tensors.sort_by(|(ln, ld, ..), (rn, rd, ..)| rd.cmp(ld).then(ln.cmp(rn)));
    let mut infos = Vec::with_capacity(tensors.len());
    let mut offset = 0usize;
    for (name, dtype, shape, _) in &tensors {
        let bytes = checked_sizes(shape, dtype.bitsize() / 8)
            .map(|(_, b)| b)
            .ok_or_else(|| invalid(format!("the shape {shape:?} of `{name}` overflows")))?;
        let info = TensorInfo {
            dtype: *dtype,
            shape: shape.clone(),
            data_offsets: (offset, offset + bytes),
        };
        offset += bytes;
        infos.push(((*name).to_string(), info));
    }
    let metadata = Metadata::new(Some(metadata), infos).map_err(|e| invalid(e.to_string()))?;
    let mut header = serde_json::to_string(&metadata)
        .map_err(|e| invalid(e.to_string()))?
        .into_bytes();
    header.resize(header.len().next_multiple_of(8), b' ');
    if header.len() as u64 > MAX_HEADER_LEN {
        return Err(invalid("the header is too large".into()));
    }
    let io = |e: std::io::Error| super::io_error(path, e);
    w.write_all(&(header.len() as u64).to_le_bytes())
        .map_err(io)?;
    w.write_all(&header).map_err(io)?;
    for (_, _, _, source) in &tensors {
        match source {
            Source::Raw(t) => w.write_all(&t.data).map_err(io)?,
            Source::Float(t, stored) => write_encoded(w, t.iter(), *stored).map_err(io)?,
        }
    }
    Ok(())
}

/// Check the header's data offsets against the data section (`data_len` bytes) before the
/// `safetensors` crate adds them up, and refuse duplicate names.
fn precheck(header: &str, data_len: u64, path: &Path) -> Result<()> {
    let err = |key: Option<&str>, reason: String| format_error(path, key, reason);
    let json: serde_json::Value = serde_json::from_str(header)
        .map_err(|e| err(None, format!("the header is not valid JSON: {e}")))?;
    let object = json
        .as_object()
        .ok_or_else(|| err(None, "the header is not a JSON object".into()))?;
    // JSON readers keep the last of two equal keys: a second tensor of the same name would
    // silently replace the first.
    if let Some(key) = crate::json_keys::duplicate_key(header) {
        return Err(err(Some(key), "two tensors have this name".into()));
    }
    if crate::json_keys::top_level_keys(header).len() != object.len() {
        return Err(err(
            None,
            "two tensor names of the header decode to the same name".into(),
        ));
    }
    for (key, info) in object {
        if key == "__metadata__" {
            continue;
        }
        let offsets = info
            .get("data_offsets")
            .and_then(serde_json::Value::as_array)
            .map(|v| v.iter().map(serde_json::Value::as_u64).collect::<Vec<_>>());
        match offsets.as_deref() {
            Some(&[Some(start), Some(end)]) if start <= end && end <= data_len => {}
            Some(&[Some(start), Some(end)]) => {
                return Err(err(
                    Some(key),
                    format!(
                    "data offsets [{start}, {end}] do not lie in the {data_len}-byte data section"
                ),
                ))
            }
            _ => {
                return Err(err(
                    Some(key),
                    "missing or malformed `data_offsets` (expected two non-negative integers)"
                        .into(),
                ))
            }
        }
    }
    Ok(())
}

/// Read a `.safetensors` file from disk, tensor by tensor, each straight from its offset into
/// its array (no buffer of the whole file).
pub(super) fn read_safetensors_file<F: Float>(path: &Path, keep_raw: bool) -> Result<Parsed<F>> {
    let (file, len) = open_bounded(path)?;
    parse_safetensors(file, len, path, keep_raw)
}

/// Parse a `.safetensors` file held in memory (see [`parse_safetensors`]).
pub(super) fn parse_safetensors_bytes<F: Float>(
    bytes: &[u8],
    path: &Path,
    keep_raw: bool,
) -> Result<Parsed<F>> {
    parse_safetensors(Cursor::new(bytes), bytes.len() as u64, path, keep_raw)
}

/// Parse a `.safetensors` file of `len` bytes from `r`, with the stored dtype of each tensor;
/// errors name `path`. The header is checked ([`precheck`], then the `safetensors` crate's
/// validation: contiguous offsets, sizes matching shapes, the data section exactly covered)
/// before any tensor is allocated. With `keep_raw`, integer and boolean tensors are returned as
/// raw tensors instead of refused.
pub(super) fn parse_safetensors<F: Float, R: Read + Seek>(
    mut r: R,
    len: u64,
    path: &Path,
    keep_raw: bool,
) -> Result<Parsed<F>> {
    let err = |key: Option<&str>, reason: String| format_error(path, key, reason);
    let io = |e: std::io::Error| super::io_error(path, e);
    if len < 8 {
        return Err(err(
            None,
            format!("{len} bytes is too short for a safetensors file"),
        ));
    }
    let mut n = [0u8; 8];
    r.read_exact(&mut n).map_err(io)?;
    let n = u64::from_le_bytes(n);
    let available = len - 8;
    if n > MAX_HEADER_LEN || n > available {
        return Err(err(
            None,
            format!("the header claims {n} bytes but the file holds {available} after the length"),
        ));
    }
    let mut header = Vec::new();
    r.by_ref().take(n).read_to_end(&mut header).map_err(io)?;
    if header.len() as u64 != n {
        return Err(err(None, "the header is truncated".into()));
    }
    let header = std::str::from_utf8(&header)
        .map_err(|e| err(None, format!("the header is not UTF-8: {e}")))?;
    let data_len = available - n;
    precheck(header, data_len, path)?;
    let metadata: Metadata =
        serde_json::from_str(header).map_err(|e| err(None, format!("invalid header: {e}")))?;
    if metadata.data_len() as u64 != data_len {
        return Err(err(
            None,
            format!(
                "the header describes {} bytes of data, the file holds {data_len}",
                metadata.data_len()
            ),
        ));
    }
    let data_start = 8 + n;
    let mut out = Parsed::default();
    for name in tensor_order(&metadata) {
        let err = |reason: String| format_error(path, Some(&name), reason);
        let info = metadata
            .info(&name)
            .ok_or_else(|| err("listed in the header but not found".into()))?;
        let (start, end) = info.data_offsets;
        // Offsets lie in the data section (checked above), so these fit.
        let nbytes = end - start;
        r.seek(SeekFrom::Start(data_start + start as u64))
            .map_err(io)?;
        let stored = match info.dtype {
            StDtype::F16 => Dtype::F16,
            StDtype::BF16 => Dtype::BF16,
            StDtype::F32 => Dtype::F32,
            StDtype::F64 => Dtype::F64,
            other => match RawDtype::from_safetensors(other).filter(|_| keep_raw) {
                Some(dtype) => {
                    let mut data = Vec::new();
                    r.by_ref()
                        .take(nbytes as u64)
                        .read_to_end(&mut data)
                        .map_err(io)?;
                    let tensor = RawTensor {
                        dtype,
                        shape: info.shape.clone(),
                        data,
                    };
                    tensor.check(&name).map_err(|e| err(e.to_string()))?;
                    out.others.push((name, tensor));
                    continue;
                }
                None => {
                    return Err(err(format!(
                        "dtype {other} is not a supported float type; only F16, BF16, F32 and \
                         F64 tensors can be read as floats"
                    )))
                }
            },
        };
        match checked_sizes(&info.shape, stored.size()) {
            Some((_, expected)) if expected == nbytes => {}
            _ => {
                return Err(err(format!(
                    "shape {:?} of dtype {} does not match its {nbytes} bytes",
                    info.shape, info.dtype,
                )))
            }
        }
        let values = read_decoded(&mut r, nbytes, stored, false, true).map_err(io)?;
        let array =
            ArrayD::from_shape_vec(IxDyn(&info.shape), values).map_err(|e| err(e.to_string()))?;
        out.dtypes.insert(name.clone(), stored);
        out.params.insert(name, array);
    }
    Ok(out)
}

/// The recorded order if it is exactly a permutation of the tensor names, else offset order.
fn tensor_order(metadata: &Metadata) -> Vec<String> {
    let by_offset = metadata.offset_keys();
    let recorded = metadata
        .metadata()
        .as_ref()
        .and_then(|m| m.get(SAFETENSORS_ORDER_KEY))
        .and_then(|s| serde_json::from_str::<Vec<String>>(s).ok());
    if let Some(order) = recorded {
        let set: HashSet<&str> = order.iter().map(String::as_str).collect();
        if order.len() == by_offset.len()
            && set.len() == order.len()
            && by_offset.iter().all(|k| set.contains(k.as_str()))
        {
            return order;
        }
    }
    by_offset
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file with a given header and `data_len` zero bytes of data.
    fn file(header: &str, data_len: usize) -> Vec<u8> {
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend(header.as_bytes());
        out.extend(std::iter::repeat_n(0u8, data_len));
        out
    }

    #[test]
    fn offsets_that_overflow_are_refused_before_the_crate_sees_them() {
        // Eight contiguous tensors of 2^61 − 1 bytes: their sizes add up to 2^64 − 8, so the
        // crate's `buffer_end + 8 + header_len` would overflow.
        let size: u64 = (1 << 61) - 1;
        let entries: Vec<String> = (0..8u64)
            .map(|i| {
                format!(
                    "\"t{i}\":{{\"dtype\":\"U8\",\"shape\":[{size}],\"data_offsets\":[{},{}]}}",
                    i * size,
                    (i + 1) * size
                )
            })
            .collect();
        let bytes = file(&format!("{{{}}}", entries.join(",")), 16);
        let e =
            parse_safetensors_bytes::<f32>(&bytes, Path::new("x.safetensors"), true).unwrap_err();
        assert!(matches!(e, Error::Format { key: Some(_), .. }), "{e}");
    }

    #[test]
    fn order_metadata_must_match_the_names() {
        let two = r#"{"__metadata__":{"llfc.order":"[\"b\",\"a\"]"},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#;
        let p = parse_safetensors_bytes::<f32>(&file(two, 8), Path::new("m"), false)
            .unwrap()
            .params;
        assert_eq!(p.names().collect::<Vec<_>>(), ["b", "a"]);
        let wrong = two.replace(r#"\"b\",\"a\""#, r#"\"b\",\"c\""#);
        let p = parse_safetensors_bytes::<f32>(&file(&wrong, 8), Path::new("m"), false)
            .unwrap()
            .params;
        assert_eq!(p.names().collect::<Vec<_>>(), ["a", "b"]);
    }
}
