//! Integration tests of `llfc::io`: bit-exact round trips, Python-written fixtures, and
//! fuzz-style robustness (random bytes, truncations, corruptions never panic).
#![cfg(feature = "io")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use llfc::io::{self, FileFormat};
use llfc::{Error, Float, Params};
use ndarray::{arr0, arr1, arr2, Array, ArrayD, IxDyn};
use proptest::prelude::*;

const FORMATS: [FileFormat; 2] = [FileFormat::Npz, FileFormat::Safetensors];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Bit patterns of a float as u64 (exact comparison, NaN payloads and signed zeros included).
trait Bits: Float {
    fn bits(self) -> u64;
}
impl Bits for f32 {
    fn bits(self) -> u64 {
        u64::from(self.to_bits())
    }
}
impl Bits for f64 {
    fn bits(self) -> u64 {
        self.to_bits()
    }
}

/// Same names in the same order, same shapes, same bits.
fn assert_bit_identical<F: Bits>(a: &Params<F>, b: &Params<F>) {
    let names_a: Vec<_> = a.names().collect();
    let names_b: Vec<_> = b.names().collect();
    assert_eq!(names_a, names_b);
    for (name, ta) in a.iter() {
        let tb = &b[name];
        assert_eq!(ta.shape(), tb.shape(), "shape of {name}");
        let bits_a: Vec<u64> = ta.iter().map(|x| x.bits()).collect();
        let bits_b: Vec<u64> = tb.iter().map(|x| x.bits()).collect();
        assert_eq!(bits_a, bits_b, "bits of {name}");
    }
}

/// Tricky values: signed zeros, subnormals, extremes, infinities, a non-dyadic value.
fn special_values<F: Float>() -> Vec<F> {
    vec![
        F::zero(),
        -F::zero(),
        F::min_positive_value() / F::from_f64(1024.0), // subnormal
        -F::min_positive_value(),
        F::max_value(),
        F::min_value(),
        F::infinity(),
        F::neg_infinity(),
        F::epsilon(),
        F::from_f64(1.0 / 3.0),
        F::from_f64(-1.0e30),
        F::from_f64(6.02e23),
    ]
}

/// Parameters of ranks 0, 1, 2 and 4, empty tensors included, in a deliberately unsorted order.
fn sample_params<F: Float>() -> Params<F> {
    let special = special_values::<F>();
    let n = special.len();
    let mut p = Params::new();
    p.insert("z.scalar", arr0(F::from_f64(-2.5)).into_dyn());
    p.insert(
        "layers.1.weight",
        Array::from_shape_vec((3, 4), special.clone())
            .unwrap()
            .into_dyn(),
    );
    p.insert("a.bias", arr1(&special).into_dyn());
    p.insert(
        "conv.weight",
        Array::from_shape_fn((2, 3, 2, 2), |(a, b, c, d)| {
            F::from_f64((a * 12 + b * 4 + c * 2 + d) as f64 / 7.0 - 1.0)
        })
        .into_dyn(),
    );
    p.insert("empty", ArrayD::<F>::zeros(IxDyn(&[0])));
    p.insert("empty.2d", ArrayD::<F>::zeros(IxDyn(&[3, 0])));
    p.insert(
        "m",
        Array::from_shape_vec((n, 1), special).unwrap().into_dyn(),
    );
    p
}

fn roundtrip_in_memory<F: Bits>() {
    let params = sample_params::<F>();
    for format in FORMATS {
        let bytes = io::params_to_bytes(&params, format).unwrap();
        let back: Params<F> = io::params_from_bytes(&bytes, format).unwrap();
        assert_bit_identical(&params, &back);
    }
}

#[test]
fn roundtrips_are_bit_exact_in_memory() {
    roundtrip_in_memory::<f32>();
    roundtrip_in_memory::<f64>();
}

#[test]
fn roundtrips_are_bit_exact_through_files_and_keep_the_order() {
    let dir = tempfile::tempdir().unwrap();
    let p32 = sample_params::<f32>();
    let p64 = sample_params::<f64>();
    for ext in ["npz", "safetensors", "NPZ"] {
        let path = dir.path().join(format!("model.{ext}"));
        io::write_params(&path, &p32).unwrap();
        assert_bit_identical(&p32, &io::read_params(&path).unwrap());
        io::write_params(&path, &p64).unwrap(); // overwrites
        assert_bit_identical(&p64, &io::read_params(&path).unwrap());
    }
    // The explicit variants agree with the dispatching ones.
    let path = dir.path().join("x.safetensors");
    io::write_safetensors(&path, &p32).unwrap();
    assert_bit_identical(&p32, &io::read_safetensors(&path).unwrap());
    let path = dir.path().join("x.npz");
    io::write_npz(&path, &p64).unwrap();
    assert_bit_identical(&p64, &io::read_npz(&path).unwrap());
    // No temporary files are left behind.
    let mut files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "model.NPZ",
            "model.npz",
            "model.safetensors",
            "x.npz",
            "x.safetensors"
        ]
    );
}

#[test]
fn nan_payloads_survive_same_precision_roundtrips() {
    let mut p = Params::<f32>::new();
    p.insert(
        "nan",
        arr1(&[f32::from_bits(0x7fc0_1234), f32::from_bits(0xffc0_0001)]).into_dyn(),
    );
    let mut q = Params::<f64>::new();
    q.insert(
        "nan",
        arr1(&[f64::from_bits(0x7ff8_0000_dead_beef)]).into_dyn(),
    );
    for format in FORMATS {
        let b = io::params_to_bytes(&p, format).unwrap();
        assert_bit_identical(&p, &io::params_from_bytes(&b, format).unwrap());
        let b = io::params_to_bytes(&q, format).unwrap();
        assert_bit_identical(&q, &io::params_from_bytes(&b, format).unwrap());
    }
}

#[test]
fn many_tensors_keep_their_order() {
    // Names whose order is neither sorted nor reverse-sorted.
    let params: Params<f32> = (0..200)
        .map(|i| {
            let k = (i * 73) % 200;
            (
                format!("block.{k}.w"),
                arr1(&[k as f32, -(k as f32)]).into_dyn(),
            )
        })
        .collect();
    for format in FORMATS {
        let bytes = io::params_to_bytes(&params, format).unwrap();
        assert_bit_identical(&params, &io::params_from_bytes(&bytes, format).unwrap());
    }
    let empty = Params::<f64>::new();
    for format in FORMATS {
        let bytes = io::params_to_bytes(&empty, format).unwrap();
        assert!(io::params_from_bytes::<f64>(&bytes, format)
            .unwrap()
            .is_empty());
    }
}

#[test]
fn precision_changes_on_read() {
    let p64 = sample_params::<f64>();
    let p32 = sample_params::<f32>();
    for format in FORMATS {
        // f32 → f64 is exact.
        let wide: Params<f64> =
            io::params_from_bytes(&io::params_to_bytes(&p32, format).unwrap(), format).unwrap();
        assert_bit_identical(&p32.cast::<f64>(), &wide);
        // f64 → f32 rounds to nearest, like `Params::cast`.
        let narrow: Params<f32> =
            io::params_from_bytes(&io::params_to_bytes(&p64, format).unwrap(), format).unwrap();
        assert_bit_identical(&p64.cast::<f32>(), &narrow);
    }
}

/// A `.safetensors` file with one tensor of the given dtype and raw little-endian bytes,
/// written by the `safetensors` crate itself.
fn safetensors_with(
    name: &str,
    dtype: safetensors::Dtype,
    shape: &[usize],
    data: &[u8],
) -> Vec<u8> {
    let view = safetensors::tensor::TensorView::new(dtype, shape.to_vec(), data).unwrap();
    safetensors::serialize([(name, view)], None).unwrap()
}

/// The bytes of a version-1 `.npy` file with the given dtype string, order and raw data.
fn npy_bytes(descr: &str, fortran: bool, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let shape_text = match shape {
        [d] => format!("({d},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let dict = format!(
        "{{'descr': '{descr}', 'fortran_order': {}, 'shape': {shape_text}, }}",
        if fortran { "True" } else { "False" }
    );
    let mut header = dict.into_bytes();
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(b' ');
    }
    header.push(b'\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend(u16::try_from(header.len()).unwrap().to_le_bytes());
    out.extend(header);
    out.extend(data);
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn random_params_roundtrip_bit_exact(
        tensors in prop::collection::vec(
            (prop::collection::vec(0usize..4, 0..4), prop::collection::vec(any::<u32>(), 0..64)),
            0..6,
        ),
    ) {
        let mut params = Params::<f32>::new();
        for (i, (shape, bits)) in tensors.iter().enumerate() {
            let n: usize = shape.iter().product();
            let values: Vec<f32> = (0..n).map(|j| f32::from_bits(bits.get(j).copied().unwrap_or(j as u32))).collect();
            params.insert(format!("t{}", 97 * i % 13), ArrayD::from_shape_vec(IxDyn(shape), values).unwrap());
        }
        for format in FORMATS {
            let bytes = io::params_to_bytes(&params, format).unwrap();
            assert_bit_identical(&params, &io::params_from_bytes(&bytes, format).unwrap());
        }
    }

    #[test]
    fn f16_and_bf16_upcast_exactly(bits in prop::collection::vec(any::<u16>(), 0..40)) {
        let bytes: Vec<u8> = bits.iter().flat_map(|b| b.to_le_bytes()).collect();
        let shape = [bits.len()];
        let h = safetensors_with("h", safetensors::Dtype::F16, &shape, &bytes);
        let b = safetensors_with("b", safetensors::Dtype::BF16, &shape, &bytes);
        let h32: Params<f32> = io::params_from_bytes(&h, FileFormat::Safetensors).unwrap();
        let h64: Params<f64> = io::params_from_bytes(&h, FileFormat::Safetensors).unwrap();
        let b32: Params<f32> = io::params_from_bytes(&b, FileFormat::Safetensors).unwrap();
        let b64: Params<f64> = io::params_from_bytes(&b, FileFormat::Safetensors).unwrap();
        let npy = io::array_from_npy_bytes::<f32>(&npy_bytes("<f2", false, &shape, &bytes)).unwrap();
        for (j, &x) in bits.iter().enumerate() {
            let (hf, bf) = (f16::from_bits(x), bf16::from_bits(x));
            if hf.is_nan() {
                prop_assert!(h32["h"][j].is_nan() && h64["h"][j].is_nan() && npy[j].is_nan());
            } else {
                prop_assert_eq!(h32["h"][j].to_bits(), hf.to_f32().to_bits());
                prop_assert_eq!(h64["h"][j].to_bits(), hf.to_f64().to_bits());
                prop_assert_eq!(npy[j].to_bits(), hf.to_f32().to_bits());
            }
            if bf.is_nan() {
                prop_assert!(b32["b"][j].is_nan() && b64["b"][j].is_nan());
            } else {
                prop_assert_eq!(b32["b"][j].to_bits(), bf.to_f32().to_bits());
                prop_assert_eq!(b64["b"][j].to_bits(), bf.to_f64().to_bits());
            }
        }
    }

    #[test]
    fn random_bytes_are_refused(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        for format in FORMATS {
            prop_assert!(io::params_from_bytes::<f32>(&bytes, format).is_err());
        }
        prop_assert!(io::array_from_npy_bytes::<f64>(&bytes).is_err());
    }

    #[test]
    fn random_bytes_after_a_valid_prefix_are_refused(
        tail in prop::collection::vec(any::<u8>(), 0..300),
        cut in 0usize..2000,
    ) {
        // Plausible starts make the parsers go further than random bytes would.
        for format in FORMATS {
            let valid = io::params_to_bytes(&sample_params::<f32>(), format).unwrap();
            let mut bytes = valid[..cut.min(valid.len() - 1)].to_vec();
            bytes.extend(&tail);
            if bytes != valid {
                let _ = io::params_from_bytes::<f32>(&bytes, format); // must not panic
            }
        }
        let mut npy = b"\x93NUMPY\x01\x00".to_vec();
        npy.extend(&tail);
        let _ = io::array_from_npy_bytes::<f32>(&npy);
    }

    #[test]
    fn truncations_are_refused(cut in 0.0f64..1.0) {
        for format in FORMATS {
            let valid = io::params_to_bytes(&sample_params::<f64>(), format).unwrap();
            let len = (cut * valid.len() as f64) as usize; // < valid.len()
            let result = io::params_from_bytes::<f64>(&valid[..len], format);
            prop_assert!(matches!(result, Err(Error::Format { .. })), "{:?} cut at {}", format, len);
        }
        let npy = io::array_to_npy_bytes(&sample_params::<f32>()["conv.weight"]).unwrap();
        let len = (cut * npy.len() as f64) as usize;
        prop_assert!(io::array_from_npy_bytes::<f32>(&npy[..len]).is_err());
    }

    #[test]
    fn single_byte_corruptions_never_panic(position in 0.0f64..1.0, byte in any::<u8>()) {
        for format in FORMATS {
            let mut bytes = io::params_to_bytes(&sample_params::<f32>(), format).unwrap();
            let i = (position * bytes.len() as f64) as usize;
            bytes[i] = byte;
            // Ok (e.g. a changed data byte) or Err, but no panic.
            if let Err(e) = io::params_from_bytes::<f32>(&bytes, format) {
                prop_assert!(matches!(e, Error::Format { .. }), "{e}");
            }
        }
        let mut npy = io::array_to_npy_bytes(&sample_params::<f64>()["conv.weight"]).unwrap();
        let i = (position * npy.len() as f64) as usize;
        npy[i] = byte;
        let _ = io::array_from_npy_bytes::<f64>(&npy);
    }

    #[test]
    fn header_corruptions_never_panic(
        edits in prop::collection::vec((0usize..400, any::<u8>()), 1..8),
    ) {
        // Concentrate the damage on the headers (safetensors JSON, zip local headers, .npy dict).
        for format in FORMATS {
            let mut bytes = io::params_to_bytes(&sample_params::<f32>(), format).unwrap();
            for &(i, b) in &edits {
                let i = i % bytes.len();
                bytes[i] = b;
            }
            let _ = io::params_from_bytes::<f32>(&bytes, format);
        }
        let mut npy = io::array_to_npy_bytes(&arr2(&[[1.0f32, 2.0], [3.0, 4.0]])).unwrap();
        for &(i, b) in &edits {
            let i = i % 128;
            npy[i] = b;
        }
        let _ = io::array_from_npy_bytes::<f32>(&npy);
    }
}

#[test]
fn forged_safetensors_headers_are_refused_without_panicking() {
    let file = |header: &str, data_len: usize| {
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend(header.as_bytes());
        out.extend(std::iter::repeat_n(0u8, data_len));
        out
    };
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
    let cases = [
        file(&format!("{{{}}}", entries.join(",")), 0),
        file(
            r#"{"w":{"dtype":"F32","shape":[18446744073709551615,2],"data_offsets":[0,8]}}"#,
            8,
        ),
        file(
            r#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
            8,
        ),
        file(
            r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#,
            8,
        ),
        file(
            r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,-8]}}"#,
            8,
        ),
        file(r#"{"w":{"dtype":"F32","shape":[2]}}"#, 8),
        file(
            r#"{"w":{"dtype":"F99","shape":[2],"data_offsets":[0,8]}}"#,
            8,
        ),
        file(
            r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
            9,
        ),
        file(
            r#"{"__metadata__":{"a":1},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
            8,
        ),
        file(&format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)), 0),
        file("[]", 0),
        u64::MAX.to_le_bytes().to_vec(),
    ];
    for bytes in &cases {
        let e = io::params_from_bytes::<f32>(bytes, FileFormat::Safetensors).unwrap_err();
        assert!(matches!(e, Error::Format { .. }), "{e}");
    }
    // Offsets beyond the data name the tensor.
    let e = io::params_from_bytes::<f32>(&cases[0], FileFormat::Safetensors).unwrap_err();
    assert!(
        matches!(e, Error::Format { key: Some(ref k), .. } if k.starts_with('t')),
        "{e}"
    );
}

#[test]
fn forged_npy_headers_are_refused_without_allocating() {
    let cases = [
        npy_bytes("<f8", false, &[1 << 40], &[0; 8]),
        npy_bytes("<f8", false, &[1 << 40, 1 << 40, 1 << 40], &[]),
        npy_bytes("<f8", false, &[usize::MAX, 0], &[]),
        npy_bytes("<f8", false, &[2], &[0; 24]),
        npy_bytes("<f4", false, &[3], &[0; 11]),
        npy_bytes("|O", false, &[1], &[0; 8]),
        npy_bytes("<U3", false, &[1], &[0; 12]),
        b"\x93NUMPY\x09\x00\x10\x00{}".to_vec(),
        b"\x93NUMPY\x02\x00\xff\xff\xff\xff{".to_vec(),
        b"\x93NUMPY\x01\x00\x05\x00{}}}\n".to_vec(),
        {
            let mut b = b"\x93NUMPY\x01\x00".to_vec();
            let h = format!("{}\n", "(".repeat(4000));
            b.extend(u16::try_from(h.len()).unwrap().to_le_bytes());
            b.extend(h.as_bytes());
            b
        },
    ];
    for bytes in &cases {
        let e = io::array_from_npy_bytes::<f64>(bytes).unwrap_err();
        assert!(matches!(e, Error::Format { .. }), "{e}");
    }
    // A zero-size array with a huge axis is valid and needs no data.
    let a = io::array_from_npy_bytes::<f64>(&npy_bytes("<f8", false, &[0, 1 << 40], &[])).unwrap();
    assert_eq!(a.shape(), &[0, 1 << 40]);
}

#[test]
fn npy_reads_fortran_order_and_big_endian() {
    // [[1, 2, 3], [4, 5, 6]] in column-major order, big-endian float64.
    let data: Vec<u8> = [1.0f64, 4.0, 2.0, 5.0, 3.0, 6.0]
        .iter()
        .flat_map(|x| x.to_be_bytes())
        .collect();
    let a = io::array_from_npy_bytes::<f64>(&npy_bytes(">f8", true, &[2, 3], &data)).unwrap();
    assert_eq!(a, arr2(&[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]).into_dyn());
    assert!(a.is_standard_layout());
}

#[test]
fn npy_file_roundtrip_any_layout() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.npy");
    let x = Array::from_shape_fn((3, 4, 2), |(i, j, k)| (i * 8 + j * 2 + k) as f32 - 0.5);
    let permuted = x.view().permuted_axes([2, 0, 1]); // neither C nor Fortran contiguous
    io::write_npy(&path, &permuted).unwrap();
    assert_eq!(io::read_npy::<f32>(&path).unwrap(), permuted.into_dyn());
    io::write_npy(&path, &x.t()).unwrap();
    assert_eq!(
        io::read_npy::<f64>(&path).unwrap(),
        x.t().mapv(f64::from).into_dyn()
    );
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes, io::array_to_npy_bytes(&x.t()).unwrap());
}

#[test]
fn npz_arrays_roundtrip_as_a_sorted_map() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("features.npz");
    let mut feats = BTreeMap::new();
    feats.insert(
        "layer2".to_string(),
        ArrayD::from_elem(IxDyn(&[5, 3]), 0.25f64),
    );
    feats.insert(
        "layer1".to_string(),
        ArrayD::from_elem(IxDyn(&[5, 4]), -1.0f64),
    );
    io::write_npz_arrays(&path, &feats).unwrap();
    assert_eq!(io::read_npz_arrays::<f64>(&path).unwrap(), feats);
    // Duplicate names are refused and nothing is written.
    let a = arr1(&[1.0f32]);
    let path2 = dir.path().join("dup.npz");
    let e = io::write_npz_arrays(&path2, [("a", &a), ("a", &a)]).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    assert!(!path2.exists());
}

#[test]
fn wrong_dtypes_name_the_key() {
    let ints: Vec<u8> = [3i64, -1].iter().flat_map(|x| x.to_le_bytes()).collect();
    for (dtype, data) in [
        (safetensors::Dtype::I64, ints.clone()),
        (safetensors::Dtype::BOOL, vec![1, 0]),
        (safetensors::Dtype::F8_E4M3, vec![1, 0]),
        (safetensors::Dtype::C64, ints.clone()),
    ] {
        let shape = [data.len() / (dtype.bitsize() / 8)];
        let bytes = safetensors_with("odd", dtype, &shape, &data);
        let e = io::params_from_bytes::<f32>(&bytes, FileFormat::Safetensors).unwrap_err();
        match &e {
            Error::Format {
                key: Some(k),
                reason,
                ..
            } => {
                assert_eq!(k, "odd");
                assert!(reason.contains(&dtype.to_string()), "{e}");
            }
            _ => panic!("unexpected error {e}"),
        }
    }
    for descr in ["<i8", "<c16", "|b1", "<u2", "<f16"] {
        let e = io::array_from_npy_bytes::<f64>(&npy_bytes(descr, false, &[0], &[])).unwrap_err();
        assert!(e.to_string().contains(descr), "{e}");
    }
}

#[test]
fn python_files_with_wrong_dtypes_are_refused() {
    let e = io::read_params::<f32>(fixture("python_bad_dtypes.safetensors")).unwrap_err();
    match &e {
        Error::Format {
            path,
            key: Some(k),
            reason,
        } => {
            assert!(path.ends_with("python_bad_dtypes.safetensors"));
            assert_eq!(k, "counts");
            assert!(reason.contains("I64"), "{e}");
            // The way out is named: read_checkpoint keeps integer tensors.
            assert!(reason.contains("read_checkpoint"), "{e}");
        }
        _ => panic!("unexpected error {e}"),
    }
    let e = io::read_params::<f64>(fixture("python_bad_dtypes.npz")).unwrap_err();
    match &e {
        Error::Format {
            path,
            key: Some(k),
            reason,
        } => {
            assert!(path.ends_with("python_bad_dtypes.npz"));
            assert_eq!(k, "counts");
            assert!(reason.contains("<i8") && reason.contains("integer"), "{e}");
            assert!(reason.contains("read_checkpoint"), "{e}");
        }
        _ => panic!("unexpected error {e}"),
    }
}

/// `numpy.savez_compressed` (deflated entries) is read exactly; forged headers — an
/// unsupported compression method, an uncompressed size that disagrees with the data, or one
/// the stored bytes cannot produce — are errors naming the entry, never a panic.
#[test]
fn compressed_npz_from_numpy() {
    let path = fixture("python_compressed.npz");
    let p = io::read_npz::<f32>(&path).unwrap();
    assert_eq!(p.names().collect::<Vec<_>>(), vec!["w"]);
    assert_eq!(p["w"], formula(&[2, 2], 0));
    let bytes = std::fs::read(&path).unwrap();
    // Offsets of the zip headers: local file header (method at +8, uncompressed size at +22)
    // and central directory header (method at +10, uncompressed size at +24).
    let find = |sig: &[u8]| bytes.windows(4).position(|w| w == sig).unwrap();
    let (local, central) = (find(b"PK\x03\x04"), find(b"PK\x01\x02"));
    assert_eq!(
        u16::from_le_bytes([bytes[local + 8], bytes[local + 9]]),
        8,
        "deflated"
    );
    let dir = tempfile::tempdir().unwrap();
    let forged = |name: &str, patch: &dyn Fn(&mut Vec<u8>)| {
        let mut b = bytes.clone();
        patch(&mut b);
        let out = dir.path().join(name);
        std::fs::write(&out, b).unwrap();
        io::read_npz::<f32>(&out).unwrap_err()
    };
    let put_u16 =
        |b: &mut Vec<u8>, at: usize, v: u16| b[at..at + 2].copy_from_slice(&v.to_le_bytes());
    let put_u32 =
        |b: &mut Vec<u8>, at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_le_bytes());
    // Method 12 (bzip2) in both headers.
    let e = forged("bzip2.npz", &|b| {
        put_u16(b, local + 8, 12);
        put_u16(b, central + 10, 12);
    });
    assert!(
        matches!(&e, Error::Format { key: Some(k), .. } if k == "w"),
        "{e}"
    );
    assert!(e.to_string().contains("compression method"), "{e}");
    // A claimed size smaller than the data: the reader stops, it does not truncate silently.
    let size = u32::from_le_bytes(bytes[central + 24..central + 28].try_into().unwrap());
    for (name, claimed) in [("short.npz", size - 1), ("huge.npz", u32::MAX)] {
        let e = forged(name, &|b| {
            put_u32(b, local + 22, claimed);
            put_u32(b, central + 24, claimed);
        });
        assert!(
            matches!(&e, Error::Format { key: Some(k), .. } if k == "w"),
            "{name}: {e}"
        );
    }
}

#[test]
fn missing_files_and_unknown_extensions() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["absent.npz", "absent.safetensors", "absent.npy"] {
        let path = dir.path().join(name);
        let e = if name.ends_with("npy") {
            io::read_npy::<f32>(&path).unwrap_err()
        } else {
            io::read_params::<f32>(&path).unwrap_err()
        };
        match &e {
            Error::Io { path: p, source } => {
                assert_eq!(p, &path);
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            }
            _ => panic!("unexpected error {e}"),
        }
        assert!(e.to_string().contains(name), "{e}");
    }
    for name in ["model.pt", "model", "model.npy"] {
        let e = io::read_params::<f32>(dir.path().join(name)).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
        let e = io::write_params(dir.path().join(name), &sample_params::<f32>()).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn unwritable_outputs_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let params = sample_params::<f32>();
    // Into a directory that does not exist.
    for name in ["model.npz", "model.safetensors"] {
        let path = dir.path().join("no/such/dir").join(name);
        let e = io::write_params(&path, &params).unwrap_err();
        assert!(matches!(&e, Error::Io { path: p, .. } if p == &path), "{e}");
    }
    let e = io::write_npy(dir.path().join("no/x.npy"), &arr1(&[1.0f32])).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e}");
    // Over an existing directory: the rename fails, the temporary file is removed.
    for name in ["taken.npz", "taken.safetensors"] {
        let path = dir.path().join(name);
        std::fs::create_dir(&path).unwrap();
        let e = io::write_params(&path, &params).unwrap_err();
        assert!(matches!(&e, Error::Io { path: p, .. } if p == &path), "{e}");
        std::fs::remove_dir(&path).unwrap();
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    // A name that safetensors reserves.
    let mut bad = Params::<f32>::new();
    bad.insert("__metadata__", arr1(&[1.0f32]).into_dyn());
    let path = dir.path().join("bad.safetensors");
    assert!(matches!(
        io::write_params(&path, &bad),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(!path.exists());
}

#[test]
fn a_failed_write_leaves_the_previous_file_intact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keep.safetensors");
    let good = sample_params::<f64>();
    io::write_params(&path, &good).unwrap();
    let mut bad = Params::<f64>::new();
    bad.insert("__metadata__", arr1(&[1.0]).into_dyn());
    assert!(io::write_params(&path, &bad).is_err());
    assert_bit_identical(&good, &io::read_params(&path).unwrap());
}

// ---------------------------------------------------------------------------------------------
// Files written by Python (tests/fixtures/make_fixtures.py).
// ---------------------------------------------------------------------------------------------

/// Expected tensors: name → (dtype, shape, bits), from `python_state.json`.
fn expected(section: &str) -> BTreeMap<String, (String, Vec<usize>, Vec<u64>)> {
    let text = std::fs::read_to_string(fixture("python_state.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json[section]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, t)| {
            let dtype = t["dtype"].as_str().unwrap().to_string();
            let shape = t["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            let bits = t["bits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| u64::from_str_radix(b.as_str().unwrap(), 16).unwrap())
                .collect();
            (name.clone(), (dtype, shape, bits))
        })
        .collect()
}

fn expected_order(key: &str) -> Vec<String> {
    let text = std::fs::read_to_string(fixture("python_state.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// The value of a stored element (given its dtype and bits) as an f64, exactly.
fn stored_value(dtype: &str, bits: u64) -> f64 {
    match dtype {
        "float64" => f64::from_bits(bits),
        "float32" => f64::from(f32::from_bits(bits as u32)),
        "float16" => f16::from_bits(bits as u16).to_f64(),
        "bfloat16" => bf16::from_bits(bits as u16).to_f64(),
        other => panic!("unexpected dtype {other}"),
    }
}

/// Compare what was read against the expected bits: exactly as f64, and as f32 up to the
/// rounding of float64 values.
fn check_against_expected(read64: &Params<f64>, read32: &Params<f32>, section: &str) {
    for (name, (dtype, shape, bits)) in expected(section) {
        let t64 = read64
            .get(&name)
            .unwrap_or_else(|| panic!("missing {name}"));
        let t32 = &read32[name.as_str()];
        assert_eq!(t64.shape(), shape.as_slice(), "{name}");
        assert_eq!(t32.shape(), shape.as_slice(), "{name}");
        for ((&x64, &x32), &b) in t64.iter().zip(t32.iter()).zip(&bits) {
            let v = stored_value(&dtype, b);
            assert_eq!(x64.to_bits(), v.to_bits(), "{name}");
            assert_eq!(x32.to_bits(), (v as f32).to_bits(), "{name}");
        }
    }
}

/// The MLP formula of `make_fixtures.py`, recomputed independently.
fn formula(shape: &[usize], offset: usize) -> ArrayD<f32> {
    let n: usize = shape.iter().product();
    let v = (0..n)
        .map(|i| (((37 * (i + offset)) % 101) as f64 - 50.0) / 7.0)
        .map(|x| x as f32)
        .collect();
    ArrayD::from_shape_vec(IxDyn(shape), v).unwrap()
}

#[test]
fn reads_safetensors_written_by_python() {
    let path = fixture("python_state.safetensors");
    let read64: Params<f64> = io::read_params(&path).unwrap();
    let read32: Params<f32> = io::read_safetensors(&path).unwrap();
    check_against_expected(&read64, &read32, "tensors");
    assert_eq!(
        read64.names().collect::<Vec<_>>(),
        expected_order("safetensors_order")
    );
    assert_eq!(read32["layers.0.weight"], formula(&[4, 3], 0));
    assert_eq!(read32["layers.0.bias"], formula(&[4], 100));
    assert_eq!(read32["layers.1.weight"], formula(&[2, 4], 200));
    assert_eq!(read32["layers.1.bias"], formula(&[2], 300));
    assert_eq!(read64["scale"][2], 5e-324);
    assert!(read64["scale"][1] == 0.0 && read64["scale"][1].is_sign_negative());
    assert_eq!(read32["scale"][2], 0.0); // the f64 subnormal rounds to zero in f32
    assert_eq!(read64["half"][[1, 0]], 65504.0);
    assert_eq!(read64["half"][[1, 1]], 2f64.powi(-24));

    let path = fixture("python_bf16.safetensors");
    let b64: Params<f64> = io::read_params(&path).unwrap();
    let b32: Params<f32> = io::read_params(&path).unwrap();
    check_against_expected(&b64, &b32, "bf16");
    assert_eq!(b64["brain"][1], -3.140625);
}

#[test]
fn reads_npz_written_by_python() {
    let path = fixture("python_state.npz");
    let read64: Params<f64> = io::read_params(&path).unwrap();
    let read32: Params<f32> = io::read_npz(&path).unwrap();
    check_against_expected(&read64, &read32, "tensors");
    assert_eq!(
        read64.names().collect::<Vec<_>>(),
        expected_order("npz_order")
    );
    // Stored in Fortran order by NumPy: the values must still be in their places.
    assert_eq!(read32["layers.0.weight"], formula(&[4, 3], 0));
    // Stored big-endian.
    assert_eq!(read64["scale"][0], 1.0 / 3.0);
    // Our own writer's output of the same parameters reads back identically.
    for format in FORMATS {
        let bytes = io::params_to_bytes(&read64, format).unwrap();
        assert_bit_identical(&read64, &io::params_from_bytes(&bytes, format).unwrap());
    }
}

#[test]
fn checkpoints_keep_each_tensor_dtype() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = io::read_checkpoint(fixture("python_state.safetensors")).unwrap();
    let mut expected_dtypes: BTreeMap<String, io::Dtype> = [
        ("scale", io::Dtype::F64),
        ("half", io::Dtype::F16),
        ("layers.0.weight", io::Dtype::F32),
        ("layers.0.bias", io::Dtype::F32),
        ("layers.1.weight", io::Dtype::F32),
        ("layers.1.bias", io::Dtype::F32),
    ]
    .into_iter()
    .map(|(k, d)| (k.to_string(), d))
    .collect();
    assert_eq!(ckpt.dtypes, expected_dtypes);
    assert_bit_identical(
        &ckpt.params,
        &io::read_params::<f64>(fixture("python_state.safetensors")).unwrap(),
    );
    // The npz fixture holds the same arrays with the same dtypes.
    assert_eq!(
        io::read_checkpoint(fixture("python_state.npz"))
            .unwrap()
            .dtypes,
        expected_dtypes
    );

    // Written back to safetensors: same dtypes, same values (modified values are rounded).
    let path = dir.path().join("ckpt.safetensors");
    io::write_checkpoint(&path, &ckpt).unwrap();
    let back = io::read_checkpoint(&path).unwrap();
    assert_eq!(back.dtypes, ckpt.dtypes);
    assert_bit_identical(&ckpt.params, &back.params);
    let scaled = io::Checkpoint {
        params: ckpt.params.map(|_, t| t / 3.0),
        ..ckpt.clone()
    };
    io::write_checkpoint(&path, &scaled).unwrap();
    let back = io::read_checkpoint(&path).unwrap();
    for (name, t) in scaled.params.iter() {
        let dtype = scaled.dtype(name);
        let rounded = t.mapv(|x| dtype.round(x));
        assert_eq!(back.params[name], rounded, "{name}");
    }

    // bfloat16 survives a safetensors round trip too.
    let bf = io::read_checkpoint(fixture("python_bf16.safetensors")).unwrap();
    assert_eq!(bf.dtype("brain"), io::Dtype::BF16);
    io::write_checkpoint(&path, &bf).unwrap();
    assert_eq!(io::read_checkpoint(&path).unwrap(), bf);

    // In npz, float16 and bfloat16 tensors become float32 (values unchanged).
    let path = dir.path().join("ckpt.npz");
    io::write_checkpoint(&path, &ckpt).unwrap();
    let back = io::read_checkpoint(&path).unwrap();
    expected_dtypes.insert("half".into(), io::Dtype::F32);
    assert_eq!(back.dtypes, expected_dtypes);
    assert_bit_identical(&ckpt.params, &back.params);
    // A tensor without a recorded dtype is written as float64.
    let mut extra = ckpt.clone();
    extra.params.insert("new", arr1(&[0.1f64]).into_dyn());
    io::write_checkpoint(&path, &extra).unwrap();
    assert_eq!(
        io::read_checkpoint(&path).unwrap().dtype("new"),
        io::Dtype::F64
    );
    assert!(io::write_checkpoint(dir.path().join("x.pt"), &ckpt).is_err());
}

#[test]
fn checkpoints_keep_integer_and_boolean_tensors() {
    // Python-written int64 tensor: refused by `read_params`, kept by `read_checkpoint`.
    let ckpt = io::read_checkpoint(fixture("python_bad_dtypes.safetensors")).unwrap();
    assert!(ckpt.params.is_empty());
    assert_eq!(ckpt.others.len(), 1);
    let (name, counts) = &ckpt.others[0];
    assert_eq!(name, "counts");
    assert_eq!(counts.dtype, io::RawDtype::I64);
    assert_eq!(counts.shape, [2]);
    let values: Vec<i64> = counts
        .data
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(values, [3, -1]);
    // A complex array is still refused, naming it.
    let e = io::read_checkpoint(fixture("python_bad_dtypes.npz")).unwrap_err();
    assert!(
        matches!(&e, Error::Format { key: Some(k), .. } if k == "phase"),
        "{e}"
    );

    // A BatchNorm-like checkpoint round-trips through both formats, raw tensors unchanged.
    let mut ckpt = io::Checkpoint::with_dtype(sample_params::<f64>(), io::Dtype::F32);
    ckpt.params = ckpt.params.map(|_, t| t.mapv(|x| io::Dtype::F32.round(x)));
    ckpt.others = vec![
        (
            "bn.num_batches_tracked".to_string(),
            io::RawTensor {
                dtype: io::RawDtype::I64,
                shape: vec![],
                data: 1234i64.to_le_bytes().to_vec(),
            },
        ),
        (
            "mask".to_string(),
            io::RawTensor {
                dtype: io::RawDtype::Bool,
                shape: vec![2, 2],
                data: vec![1, 0, 0, 1],
            },
        ),
        (
            "ids".to_string(),
            io::RawTensor {
                dtype: io::RawDtype::U16,
                shape: vec![3],
                data: vec![1, 0, 255, 255, 0, 1],
            },
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for name in ["bn.npz", "bn.safetensors"] {
        let path = dir.path().join(name);
        io::write_checkpoint(&path, &ckpt).unwrap();
        let back = io::read_checkpoint(&path).unwrap();
        assert_eq!(back.dtypes, ckpt.dtypes, "{name}");
        assert_eq!(back.others, ckpt.others, "{name}");
        assert_bit_identical(&ckpt.params, &back.params);
        // The strict readers refuse the integer tensor, naming it.
        let e = io::read_params::<f32>(&path).unwrap_err();
        assert!(
            matches!(&e, Error::Format { key: Some(k), .. } if k == "bn.num_batches_tracked"),
            "{e}"
        );
    }
    // Inconsistent raw tensors and duplicate names are refused; nothing is written.
    let mut bad = ckpt.clone();
    bad.others[0].1.data.pop();
    let mut dup = ckpt.clone();
    dup.others[1].0 = "bn.num_batches_tracked".into();
    let mut clash = ckpt.clone();
    clash.others[1].0 = "conv.weight".into();
    for c in [&bad, &dup, &clash] {
        for name in ["x.npz", "x.safetensors"] {
            let path = dir.path().join(name);
            let e = io::write_checkpoint(&path, c).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
            assert!(!path.exists());
        }
    }
}

/// `NpzReader` blocks, put back together, are the arrays `read_npz_arrays` reads (C and
/// Fortran order, 2-D and 4-D), with the last block shorter; a missing name and zero rows are
/// errors.
#[test]
fn npz_reader_blocks_concatenate_to_the_whole_arrays() -> llfc::Result<()> {
    use llfc::io::{read_npz_arrays, write_npz_arrays, NpzReader};
    use ndarray::{concatenate, Array2, Array4, Axis};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("features.npz");
    let h = Array2::<f64>::from_shape_fn((7, 3), |(i, j)| (10 * i + j) as f64 - 0.5);
    let conv = Array4::<f64>::from_shape_fn((5, 2, 3, 2), |(n, c, y, x)| {
        (n * 1000 + c * 100 + y * 10 + x) as f64
    });
    let fortran = h.t().to_owned(); // written as a Fortran-order array
    write_npz_arrays(
        &path,
        [
            ("h", &h.view().into_dyn()),
            ("conv", &conv.view().into_dyn()),
            ("f", &fortran.t().into_dyn()),
        ],
    )?;
    let whole = read_npz_arrays::<f64>(&path)?;
    let mut npz = NpzReader::open(&path)?;
    assert_eq!(npz.names(), ["h", "conv", "f"]);
    for name in ["h", "conv", "f"] {
        let mut blocks = npz.blocks::<f64>(name, 2)?;
        assert_eq!(blocks.shape(), whole[name].shape());
        let mut parts: Vec<ArrayD<f64>> = Vec::new();
        while let Some(b) = blocks.next_block()? {
            parts.push(b);
        }
        let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
        assert_eq!(concatenate(Axis(0), &views).unwrap(), whole[name], "{name}");
        if name != "f" {
            let rows: Vec<usize> = parts.iter().map(|p| p.shape()[0]).collect();
            assert!(rows[..rows.len() - 1].iter().all(|&r| r == 2), "{rows:?}");
        }
    }
    assert!(matches!(
        npz.blocks::<f64>("missing", 2),
        Err(llfc::Error::MissingParam { .. })
    ));
    assert!(npz.blocks::<f64>("h", 0).is_err());
    Ok(())
}
