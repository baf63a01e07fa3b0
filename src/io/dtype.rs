//! Element types: the float [`Dtype`]s tensors are stored with, the [`RawDtype`]s of tensors
//! kept as bytes, and the conversions between stored bytes and `F`.

use std::any::{Any, TypeId};

use half::{bf16, f16};

use crate::error::{Error, Result};
use crate::float::Float;

/// The floating-point element type a tensor is stored with in a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Dtype {
    /// IEEE half precision (`float16`, safetensors `F16`).
    F16,
    /// bfloat16 (safetensors `BF16`; NumPy has no such dtype).
    BF16,
    /// IEEE single precision (`float32`, `F32`).
    F32,
    /// IEEE double precision (`float64`, `F64`).
    F64,
}

impl Dtype {
    /// Bytes per element.
    #[must_use]
    pub fn size(self) -> usize {
        match self {
            Self::F16 | Self::BF16 => 2,
            Self::F32 => 4,
            Self::F64 => 8,
        }
    }

    /// The dtype that holds elements of type `F` (f32 → `F32`, f64 → `F64`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for any other type.
    pub fn of<F: Float>() -> Result<Self> {
        if TypeId::of::<F>() == TypeId::of::<f32>() {
            Ok(Self::F32)
        } else if TypeId::of::<F>() == TypeId::of::<f64>() {
            Ok(Self::F64)
        } else {
            Err(Error::InvalidArgument {
                name: "F",
                reason: format!(
                    "cannot write elements of type `{}`: only f32 and f64 are supported",
                    std::any::type_name::<F>()
                ),
            })
        }
    }

    /// Round an f64 to the nearest value of this dtype, returned as an f64.
    #[must_use]
    #[allow(clippy::cast_possible_truncation)]
    pub fn round(self, x: f64) -> f64 {
        match self {
            Self::F16 => f16::from_f64(x).to_f64(),
            Self::BF16 => bf16::from_f64(x).to_f64(),
            Self::F32 => f64::from(x as f32),
            Self::F64 => x,
        }
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::F16 => "float16",
            Self::BF16 => "bfloat16",
            Self::F32 => "float32",
            Self::F64 => "float64",
        })
    }
}

/// Number of elements of `shape`, and its size in bytes for elements of `size` bytes, if
/// neither overflows.
pub(super) fn checked_sizes(shape: &[usize], size: usize) -> Option<(usize, usize)> {
    let n = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))?;
    let bytes = n.checked_mul(size)?;
    (bytes <= isize::MAX as usize).then_some((n, bytes))
}

/// The element type of a tensor that is not floating point (kept as raw bytes by
/// [`read_checkpoint`](super::read_checkpoint)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RawDtype {
    /// Booleans, one byte each (0 or 1).
    Bool,
    /// `uint8`.
    U8,
    /// `int8`.
    I8,
    /// `uint16`.
    U16,
    /// `int16`.
    I16,
    /// `uint32`.
    U32,
    /// `int32`.
    I32,
    /// `uint64`.
    U64,
    /// `int64` (e.g. PyTorch's `num_batches_tracked`).
    I64,
}

impl RawDtype {
    /// Bytes per element.
    #[must_use]
    pub fn size(self) -> usize {
        match self {
            Self::Bool | Self::U8 | Self::I8 => 1,
            Self::U16 | Self::I16 => 2,
            Self::U32 | Self::I32 => 4,
            Self::U64 | Self::I64 => 8,
        }
    }

    /// The type from a NumPy dtype string (`"<i8"`, `"|b1"`, ...), with whether it is
    /// big-endian.
    /// The NumPy dtype string of the type, little-endian (`'|b1'`, `'<i8'`, …).
    pub(super) fn npy_descr(self) -> &'static str {
        match self {
            Self::Bool => "|b1",
            Self::U8 => "|u1",
            Self::I8 => "|i1",
            Self::U16 => "<u2",
            Self::I16 => "<i2",
            Self::U32 => "<u4",
            Self::I32 => "<i4",
            Self::U64 => "<u8",
            Self::I64 => "<i8",
        }
    }

    pub(super) fn from_npy_descr(descr: &str) -> Option<(Self, bool)> {
        let (order, code) = (descr.get(..1)?, descr.get(1..)?);
        let dtype = match code {
            "b1" => Self::Bool,
            "u1" => Self::U8,
            "i1" => Self::I8,
            "u2" => Self::U16,
            "i2" => Self::I16,
            "u4" => Self::U32,
            "i4" => Self::I32,
            "u8" => Self::U64,
            "i8" => Self::I64,
            _ => return None,
        };
        match (order, dtype.size()) {
            ("|" | "<" | ">", 1) | ("<", _) => Some((dtype, false)),
            (">", _) => Some((dtype, true)),
            _ => None,
        }
    }
}

/// A tensor that is not floating point, kept exactly as stored: element bytes in row-major
/// order, little-endian.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawTensor {
    /// The element type.
    pub dtype: RawDtype,
    /// The shape.
    pub shape: Vec<usize>,
    /// `shape.iter().product::<usize>() * dtype.size()` bytes.
    pub data: Vec<u8>,
}

impl RawTensor {
    /// Check that `data` has the length `shape` and `dtype` call for.
    pub(super) fn check(&self, name: &str) -> Result<()> {
        match checked_sizes(&self.shape, self.dtype.size()) {
            Some((_, n)) if n == self.data.len() => Ok(()),
            _ => Err(Error::InvalidArgument {
                name: "checkpoint",
                reason: format!(
                    "raw tensor `{name}` of shape {:?} and dtype {:?} has {} bytes",
                    self.shape,
                    self.dtype,
                    self.data.len()
                ),
            }),
        }
    }
}

/// Decode `bytes` (a whole number of elements, checked by the caller) into `F`s.
pub(super) fn decode<F: Float>(bytes: &[u8], stored: Dtype, big_endian: bool) -> Vec<F> {
    match stored {
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| {
                let b = [c[0], c[1]];
                let h = if big_endian {
                    f16::from_be_bytes(b)
                } else {
                    f16::from_le_bytes(b)
                };
                F::from_f64(h.to_f64())
            })
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| {
                let b = [c[0], c[1]];
                let h = if big_endian {
                    bf16::from_be_bytes(b)
                } else {
                    bf16::from_le_bytes(b)
                };
                F::from_f64(h.to_f64())
            })
            .collect(),
        Dtype::F32 => convert_vec(
            bytes
                .chunks_exact(4)
                .map(|c| {
                    let b = [c[0], c[1], c[2], c[3]];
                    if big_endian {
                        f32::from_be_bytes(b)
                    } else {
                        f32::from_le_bytes(b)
                    }
                })
                .collect(),
        ),
        Dtype::F64 => convert_vec(
            bytes
                .chunks_exact(8)
                .map(|c| {
                    let b = [c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]];
                    if big_endian {
                        f64::from_be_bytes(b)
                    } else {
                        f64::from_le_bytes(b)
                    }
                })
                .collect(),
        ),
    }
}

/// Bytes read per step by [`read_decoded`] (a multiple of every element size).
const READ_CHUNK: usize = 1 << 20;

/// Read `nbytes` bytes (a whole number of `stored` elements, checked by the caller) from `r`
/// and decode them into `F`s a chunk at a time: memory is the result and one chunk. With
/// `exact` the result is allocated at once (the caller has checked that the source holds
/// `nbytes`); otherwise it grows as data arrives, so that a forged size costs no more memory
/// than the data actually present.
///
/// # Errors
/// What the reader reports; `UnexpectedEof` if it ends early; `OutOfMemory` if the result
/// cannot be allocated.
pub(super) fn read_decoded<F: Float, R: std::io::Read>(
    r: &mut R,
    nbytes: usize,
    stored: Dtype,
    big_endian: bool,
    exact: bool,
) -> std::io::Result<Vec<F>> {
    let mut out = Vec::new();
    read_decoded_into(r, nbytes, stored, big_endian, exact, &mut out)?;
    Ok(out)
}

/// [`read_decoded`] into `out` (cleared first): a caller that reads many blocks of one size
/// passes the same vector each time, and its allocation is reused (no fresh pages to fault in
/// per block).
///
/// # Errors
/// As [`read_decoded`].
pub(super) fn read_decoded_into<F: Float, R: std::io::Read>(
    r: &mut R,
    nbytes: usize,
    stored: Dtype,
    big_endian: bool,
    exact: bool,
    out: &mut Vec<F>,
) -> std::io::Result<()> {
    out.clear();
    if exact {
        out.try_reserve_exact(nbytes / stored.size()).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::OutOfMemory,
                format!("cannot allocate an array of {nbytes} bytes"),
            )
        })?;
    }
    let mut buf = vec![0u8; READ_CHUNK.min(nbytes)];
    let mut left = nbytes;
    while left > 0 {
        let len = left.min(buf.len());
        r.read_exact(&mut buf[..len])?;
        out.extend(decode::<F>(&buf[..len], stored, big_endian));
        left -= len;
    }
    Ok(())
}

/// Bytes encoded per write by [`write_encoded`].
const WRITE_CHUNK: usize = 1 << 16;

/// Write `values` to `w` as little-endian `stored` elements, encoded [`WRITE_CHUNK`] bytes at a
/// time (the reverse of [`read_decoded`]): memory is one chunk, whatever the number of values.
///
/// # Errors
/// What the writer reports.
pub(super) fn write_encoded<'a, F: Float, W: std::io::Write>(
    w: &mut W,
    values: impl IntoIterator<Item = &'a F>,
    stored: Dtype,
) -> std::io::Result<()> {
    let mut chunk: Vec<u8> = Vec::with_capacity(WRITE_CHUNK + 8);
    for &x in values {
        match stored {
            Dtype::F64 => chunk.extend(to_f64(x).to_le_bytes()),
            Dtype::F32 => chunk.extend(to_f32(x).to_le_bytes()),
            Dtype::F16 => chunk.extend(f16::from_f64(x.as_f64()).to_le_bytes()),
            Dtype::BF16 => chunk.extend(bf16::from_f64(x.as_f64()).to_le_bytes()),
        }
        if chunk.len() >= WRITE_CHUNK {
            w.write_all(&chunk)?;
            chunk.clear();
        }
    }
    w.write_all(&chunk)
}

/// Convert a vector of one float type to another: moved unchanged (bit-exact, NaN payloads
/// included) when the types are the same, otherwise converted through f64.
pub(super) fn convert_vec<T: Float, F: Float>(v: Vec<T>) -> Vec<F> {
    let mut slot = Some(v);
    if let Some(same) = (&mut slot as &mut dyn Any).downcast_mut::<Option<Vec<F>>>() {
        return same.take().unwrap_or_default();
    }
    slot.map(|v| v.into_iter().map(|x| F::from_f64(x.as_f64())).collect())
        .unwrap_or_default()
}

/// `x` as an f32: the value itself (bit-exact) when `F` is f32, rounded otherwise.
#[allow(clippy::cast_possible_truncation)]
fn to_f32<F: Float>(x: F) -> f32 {
    match (&x as &dyn Any).downcast_ref::<f32>() {
        Some(&v) => v,
        None => x.as_f64() as f32,
    }
}

/// `x` as an f64 (bit-exact when `F` is f64).
fn to_f64<F: Float>(x: F) -> f64 {
    match (&x as &dyn Any).downcast_ref::<f64>() {
        Some(&v) => v,
        None => x.as_f64(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn convert_vec_is_bit_exact_for_the_same_type() {
        let snan = f32::from_bits(0x7f80_0001);
        let v: Vec<f32> = convert_vec(vec![snan, -0.0, 1.0e-45]);
        assert_eq!(v[0].to_bits(), 0x7f80_0001);
        assert_eq!(v[1].to_bits(), (-0.0f32).to_bits());
        let w: Vec<f64> = convert_vec(vec![1.5f32, -0.0]);
        assert_eq!(w[0], 1.5);
        assert!(w[1].is_sign_negative());
        assert_eq!(to_f32(snan).to_bits(), 0x7f80_0001);
        assert_eq!(
            to_f64(f64::from_bits(0x7ff0_0000_0000_0001)).to_bits(),
            0x7ff0_0000_0000_0001
        );
    }

    #[test]
    fn decode_reads_both_endiannesses() {
        let le: Vec<u8> = [1.5f64, -2.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let be: Vec<u8> = [1.5f64, -2.0]
            .iter()
            .flat_map(|x| x.to_be_bytes())
            .collect();
        assert_eq!(decode::<f64>(&le, Dtype::F64, false), vec![1.5, -2.0]);
        assert_eq!(decode::<f64>(&be, Dtype::F64, true), vec![1.5, -2.0]);
        let h: Vec<u8> = f16::from_f32(0.5).to_be_bytes().to_vec();
        assert_eq!(decode::<f32>(&h, Dtype::F16, true), vec![0.5]);
    }
}
