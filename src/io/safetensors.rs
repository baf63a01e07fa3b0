//! `.safetensors` files, through the `safetensors` crate.
//!
//! Before the crate parses a header, the data offsets of every entry are checked against the
//! size of the data section here: with offsets near `usize::MAX` the crate's own size check can
//! overflow (a panic in debug builds, an out-of-bounds slice in release builds).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::path::Path;

use ::safetensors::tensor::Metadata;
use ::safetensors::{Dtype as StDtype, SafeTensorError, SafeTensors, View};
use half::{bf16, f16};
use ndarray::{ArrayD, IxDyn};

use super::{
    checked_sizes, decode, format_error, read_file, to_f32, to_f64, write_atomically, Dtype,
    Parsed, RawDtype, RawTensor,
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
    let path = path.as_ref();
    parse_safetensors(&read_file(path)?, path, false).map(|p| p.params)
}

/// Write a parameter set as a `.safetensors` file in the precision of `F` (F32 or F64),
/// recording its order under [`SAFETENSORS_ORDER_KEY`] and `"format": "pt"` (the tensors use
/// PyTorch's layout) in `__metadata__`. Readable by Python's `safetensors` (numpy or torch).
/// The whole file is built in memory, then written atomically: on error nothing is left behind.
///
/// # Errors
/// [`Error::InvalidArgument`] if a tensor is named `__metadata__` (reserved by the format);
/// [`Error::Io`] naming the path if it cannot be written.
pub fn write_safetensors<F: Float>(path: impl AsRef<Path>, params: &Params<F>) -> Result<()> {
    let path = path.as_ref();
    let dtype = Dtype::of::<F>()?;
    let bytes = serialize_params(params, |_| dtype, &[])?;
    write_atomically(path, |file| {
        std::io::Write::write_all(file, &bytes).map_err(|e| super::io_error(path, e))
    })
}

/// One tensor ready to serialise: little-endian bytes in row-major order.
struct Encoded {
    dtype: StDtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &Encoded {
    fn dtype(&self) -> StDtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
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
/// (rounding to nearest), followed by the raw tensors.
pub(super) fn serialize_params<F: Float>(
    params: &Params<F>,
    dtype_of: impl Fn(&str) -> Dtype,
    raw: &[(String, RawTensor)],
) -> Result<Vec<u8>> {
    let mut tensors = Vec::with_capacity(params.len() + raw.len());
    for (name, t) in params.iter() {
        reserved_name(name)?;
        let (dtype, data): (StDtype, Vec<u8>) = match dtype_of(name) {
            Dtype::F64 => (
                StDtype::F64,
                t.iter().flat_map(|&x| to_f64(x).to_le_bytes()).collect(),
            ),
            Dtype::F32 => (
                StDtype::F32,
                t.iter().flat_map(|&x| to_f32(x).to_le_bytes()).collect(),
            ),
            Dtype::F16 => (
                StDtype::F16,
                t.iter()
                    .flat_map(|&x| f16::from_f64(x.as_f64()).to_le_bytes())
                    .collect(),
            ),
            Dtype::BF16 => (
                StDtype::BF16,
                t.iter()
                    .flat_map(|&x| bf16::from_f64(x.as_f64()).to_le_bytes())
                    .collect(),
            ),
        };
        let shape = t.shape().to_vec();
        tensors.push((name, Encoded { dtype, shape, data }));
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
        let (dtype, shape, data) = (t.dtype.to_safetensors(), t.shape.clone(), t.data.clone());
        tensors.push((name, Encoded { dtype, shape, data }));
    }
    let names: Vec<&str> = tensors.iter().map(|(k, _)| *k).collect();
    let order = serde_json::to_string(&names).map_err(|e| Error::InvalidArgument {
        name: "params",
        reason: format!("cannot record the tensor order: {e}"),
    })?;
    let metadata = HashMap::from([
        ("format".to_string(), "pt".to_string()),
        (SAFETENSORS_ORDER_KEY.to_string(), order),
    ]);
    ::safetensors::serialize(tensors.iter().map(|(k, v)| (*k, v)), Some(metadata)).map_err(|e| {
        Error::InvalidArgument {
            name: "params",
            reason: format!("cannot serialise to safetensors: {e}"),
        }
    })
}

/// The tensor a `safetensors` error is about, if it names one.
fn error_key(e: &SafeTensorError) -> Option<&str> {
    match e {
        SafeTensorError::InvalidOffset(name) | SafeTensorError::TensorNotFound(name) => Some(name),
        _ => None,
    }
}

/// Check the header's data offsets against the data section before the `safetensors` crate
/// adds them up; returns nothing useful, only errors.
fn precheck(bytes: &[u8], path: &Path) -> Result<()> {
    let err = |key: Option<&str>, reason: String| format_error(path, key, reason);
    let Some(&[a, b, c, d, e, f, g, h]) = bytes.get(..8) else {
        return Err(err(
            None,
            format!("{} bytes is too short for a safetensors file", bytes.len()),
        ));
    };
    let n = u64::from_le_bytes([a, b, c, d, e, f, g, h]);
    let available = bytes.len() as u64 - 8;
    if n > MAX_HEADER_LEN || n > available {
        return Err(err(
            None,
            format!("the header claims {n} bytes but the file holds {available} after the length"),
        ));
    }
    // n ≤ available < bytes.len(), so this fits in usize.
    let data_start = 8 + n as usize;
    let header = std::str::from_utf8(&bytes[8..data_start])
        .map_err(|e| err(None, format!("the header is not UTF-8: {e}")))?;
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
    let data_len = (bytes.len() - data_start) as u64;
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

/// Parse a `.safetensors` file held in memory, with the stored dtype of each tensor; errors
/// name `path`. With `keep_raw`, integer and boolean tensors are returned as raw tensors
/// instead of refused.
pub(super) fn parse_safetensors<F: Float>(
    bytes: &[u8],
    path: &Path,
    keep_raw: bool,
) -> Result<Parsed<F>> {
    precheck(bytes, path)?;
    let (n, metadata) = SafeTensors::read_metadata(bytes)
        .map_err(|e| format_error(path, error_key(&e), e.to_string()))?;
    let data = bytes.get(8 + n..).unwrap_or_default();
    let mut out = Parsed::default();
    for name in tensor_order(&metadata) {
        let err = |reason: String| format_error(path, Some(&name), reason);
        let info = metadata
            .info(&name)
            .ok_or_else(|| err("listed in the header but not found".into()))?;
        let (start, end) = info.data_offsets;
        let raw = data
            .get(start..end)
            .ok_or_else(|| err(format!("data offsets [{start}, {end}] are out of bounds")))?;
        let stored = match info.dtype {
            StDtype::F16 => Dtype::F16,
            StDtype::BF16 => Dtype::BF16,
            StDtype::F32 => Dtype::F32,
            StDtype::F64 => Dtype::F64,
            other => match RawDtype::from_safetensors(other).filter(|_| keep_raw) {
                Some(dtype) => {
                    let tensor = RawTensor {
                        dtype,
                        shape: info.shape.clone(),
                        data: raw.to_vec(),
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
            Some((_, nbytes)) if nbytes == raw.len() => {}
            _ => {
                return Err(err(format!(
                    "shape {:?} of dtype {} does not match its {} bytes",
                    info.shape,
                    info.dtype,
                    raw.len()
                )))
            }
        }
        let array = ArrayD::from_shape_vec(IxDyn(&info.shape), decode(raw, stored, false))
            .map_err(|e| err(e.to_string()))?;
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
        let e = parse_safetensors::<f32>(&bytes, Path::new("x.safetensors"), true).unwrap_err();
        assert!(matches!(e, Error::Format { key: Some(_), .. }), "{e}");
    }

    #[test]
    fn order_metadata_must_match_the_names() {
        let two = r#"{"__metadata__":{"llfc.order":"[\"b\",\"a\"]"},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#;
        let p = parse_safetensors::<f32>(&file(two, 8), Path::new("m"), false)
            .unwrap()
            .params;
        assert_eq!(p.names().collect::<Vec<_>>(), ["b", "a"]);
        let wrong = two.replace(r#"\"b\",\"a\""#, r#"\"b\",\"c\""#);
        let p = parse_safetensors::<f32>(&file(&wrong, 8), Path::new("m"), false)
            .unwrap()
            .params;
        assert_eq!(p.names().collect::<Vec<_>>(), ["a", "b"]);
    }
}
