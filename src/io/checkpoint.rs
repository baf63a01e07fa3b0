//! Checkpoints: parameters held at full precision with the dtype of every tensor, written back
//! in the precision they were read with.

use std::collections::BTreeMap;
use std::path::Path;

use super::{npz, safetensors, write_atomically, Dtype, FileFormat, RawTensor};
use crate::error::Result;
use crate::params::Params;

/// A parameter set held at full precision together with the dtype each tensor is stored with,
/// so that a checkpoint can be modified (permuted, interpolated) and written back in the
/// precision of the original file.
///
/// # Examples
/// ```
/// use llfc::io::{read_checkpoint, write_checkpoint, Checkpoint, Dtype};
/// use llfc::Params;
/// let params: Params<f64> = [("w", ndarray::arr1(&[0.1, -2.0]).into_dyn())].into_iter().collect();
/// let path = std::env::temp_dir().join(format!("llfc-ckpt-{}.safetensors", std::process::id()));
/// write_checkpoint(&path, &Checkpoint::with_dtype(params, Dtype::F32))?;
/// let ckpt = read_checkpoint(&path)?;
/// assert_eq!(ckpt.dtype("w"), Dtype::F32);
/// assert_eq!(ckpt.params["w"][0], f64::from(0.1f32)); // rounded to f32 when written
/// // Modify and write back: still float32 in the file.
/// let doubled = Checkpoint { params: ckpt.params.map(|_, t| t * 2.0), ..ckpt.clone() };
/// write_checkpoint(&path, &doubled)?;
/// assert_eq!(read_checkpoint(&path)?.dtypes, ckpt.dtypes);
/// # std::fs::remove_file(&path).unwrap();
/// # Ok::<(), llfc::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Checkpoint {
    /// The tensors, converted exactly to f64, in the file's order.
    pub params: Params<f64>,
    /// The stored dtype of each tensor. A tensor missing here is written as `F64`.
    pub dtypes: BTreeMap<String, Dtype>,
    /// Tensors that are not floating point (integers, booleans), in file order, kept as stored
    /// and written back unchanged after `params`.
    pub others: Vec<(String, RawTensor)>,
}

impl Checkpoint {
    /// A checkpoint whose tensors are all to be stored as `dtype`.
    #[must_use]
    pub fn with_dtype(params: Params<f64>, dtype: Dtype) -> Self {
        let dtypes = params.names().map(|k| (k.to_string(), dtype)).collect();
        Self {
            params,
            dtypes,
            others: Vec::new(),
        }
    }

    /// The dtype `name` is stored with (`F64` if not recorded).
    #[must_use]
    pub fn dtype(&self, name: &str) -> Dtype {
        self.dtypes.get(name).copied().unwrap_or(Dtype::F64)
    }
}

/// Read a checkpoint (`.npz` or `.safetensors`, by extension) at full precision, recording the
/// dtype of every float tensor and keeping integer and boolean tensors (such as PyTorch's
/// `num_batches_tracked`) as raw bytes in [`Checkpoint::others`].
///
/// # Errors
/// As [`read_params`](super::read_params), except that integer and boolean tensors are accepted; complex, 8-bit
/// float, string or object tensors are still an [`Error::Format`](crate::Error::Format).
pub fn read_checkpoint(path: impl AsRef<Path>) -> Result<Checkpoint> {
    let path = path.as_ref();
    let parsed = match FileFormat::from_path(path)? {
        FileFormat::Npz => npz::read_npz_file(path, true)?,
        FileFormat::Safetensors => safetensors::read_safetensors_file(path, true)?,
    };
    Ok(Checkpoint {
        params: parsed.params,
        dtypes: parsed.dtypes,
        others: parsed.others,
    })
}

/// The bytes of the file [`write_checkpoint`] writes for `checkpoint` in `format` (to stage an
/// output with [`OutputSet`](super::OutputSet), say).
///
/// # Errors
/// As [`write_checkpoint`], less the I/O errors.
pub fn checkpoint_to_bytes(checkpoint: &Checkpoint, format: FileFormat) -> Result<Vec<u8>> {
    let params = &checkpoint.params;
    let dtype_of = |name: &str| checkpoint.dtype(name);
    match format {
        FileFormat::Npz => npz::write_npz_to(
            std::io::Cursor::new(Vec::new()),
            params.iter(),
            dtype_of,
            &checkpoint.others,
            Path::new(super::MEMORY_PATH),
        )
        .map(std::io::Cursor::into_inner),
        FileFormat::Safetensors => {
            safetensors::serialize_params(params, dtype_of, &checkpoint.others)
        }
    }
}

/// Write a checkpoint (`.npz` or `.safetensors`, by extension): the float tensors, each in its
/// recorded dtype ([`Checkpoint::dtype`]), then [`Checkpoint::others`] unchanged. Rounding to
/// nearest where a value does not fit (values read from that dtype are written back exactly).
/// NumPy has no bfloat16 and this writer no float16 `.npy` encoder, so in `.npz` files `F16`
/// and `BF16` tensors are stored as float32 (values read from those dtypes exactly).
/// Written a tensor at a time to a temporary sibling, then renamed into place (atomic): on
/// error nothing is left behind.
///
/// # Errors
/// As [`write_params`](super::write_params); [`Error::InvalidArgument`](crate::Error::InvalidArgument) if a name is used twice or a raw tensor's
/// bytes do not match its shape.
pub fn write_checkpoint(path: impl AsRef<Path>, checkpoint: &Checkpoint) -> Result<()> {
    let path = path.as_ref();
    write_checkpoint_as(path, checkpoint, FileFormat::from_path(path)?)
}

/// [`write_checkpoint`] in the given format, whatever the path's extension (e.g. the temporary
/// file of an [`OutputSet`](super::OutputSet) stage).
///
/// # Errors
/// As [`write_checkpoint`].
pub fn write_checkpoint_as(
    path: impl AsRef<Path>,
    checkpoint: &Checkpoint,
    format: FileFormat,
) -> Result<()> {
    let path = path.as_ref();
    let params = &checkpoint.params;
    let dtype_of = |name: &str| checkpoint.dtype(name);
    write_atomically(path, |file| match format {
        FileFormat::Npz => {
            npz::write_npz_to(file, params.iter(), dtype_of, &checkpoint.others, path).map(|_| ())
        }
        FileFormat::Safetensors => {
            safetensors::write_params_to(file, params, dtype_of, &checkpoint.others, path)
        }
    })
}
