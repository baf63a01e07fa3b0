//! Hardening of the readers (issue 10): forged sizes, duplicate names, deep nesting and
//! non-regular files through the public API, as regression tests and as proptests over
//! arbitrary and mutated bytes. The suite runs in the test profile, where arithmetic overflow
//! checks are on, so an unchecked size computation would panic here.
//!
//! "Bounded memory" is checked where it can be: every archive or file below claims sizes of up
//! to 2^64 − 1 bytes, so an allocation of a claimed size would abort the test process.
#![cfg(feature = "io")]

use std::path::Path;

use llfc::io::{self, FileFormat};
use llfc::{Error, Params};
use ndarray::arr1;
use proptest::prelude::*;

/// One entry of a hand-built stored zip archive.
struct ZipEntry<'a> {
    name: &'a str,
    data: &'a [u8],
    /// Zip64 sizes written in place of the true ones: (uncompressed, compressed).
    zip64: Option<(u64, u64)>,
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = flate2::Crc::new();
    crc.update(data);
    crc.sum()
}

/// A stored (uncompressed) zip archive written byte by byte, so that names may repeat and
/// sizes may lie, which no zip writer allows.
fn zip_bytes(entries: &[ZipEntry<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for e in entries {
        let offset = out.len() as u32;
        let len = e.data.len() as u32;
        let (extra, small) = match e.zip64 {
            Some((u, c)) => {
                let mut x = vec![1, 0, 16, 0];
                x.extend(u.to_le_bytes());
                x.extend(c.to_le_bytes());
                (x, u32::MAX)
            }
            None => (Vec::new(), len),
        };
        let header = |sig: u32, central: bool| {
            let mut h = sig.to_le_bytes().to_vec();
            if central {
                h.extend(45u16.to_le_bytes()); // made by
            }
            h.extend(45u16.to_le_bytes()); // needed
            h.extend([0, 0, 0, 0]); // flags, method (stored)
            h.extend([0, 0, 0x21, 0]); // time, date
            h.extend(crc32(e.data).to_le_bytes());
            h.extend(small.to_le_bytes());
            h.extend(small.to_le_bytes());
            h.extend((e.name.len() as u16).to_le_bytes());
            h.extend((extra.len() as u16).to_le_bytes());
            if central {
                h.extend([0; 6]); // comment length, disk, internal attributes
                h.extend([0; 4]); // external attributes
                h.extend(offset.to_le_bytes());
            }
            h.extend(e.name.as_bytes());
            h.extend(&extra);
            h
        };
        out.extend(header(0x0403_4b50, false));
        out.extend(e.data);
        central.extend(header(0x0201_4b50, true));
    }
    let (cd_offset, cd_len) = (out.len() as u32, central.len() as u32);
    out.extend(central);
    out.extend(0x0605_4b50u32.to_le_bytes());
    out.extend([0, 0, 0, 0]);
    out.extend((entries.len() as u16).to_le_bytes());
    out.extend((entries.len() as u16).to_le_bytes());
    out.extend(cd_len.to_le_bytes());
    out.extend(cd_offset.to_le_bytes());
    out.extend([0, 0]);
    out
}

fn npy(values: &[f64]) -> Vec<u8> {
    io::array_to_npy_bytes(&arr1(values)).unwrap()
}

fn npz_from(bytes: &[u8]) -> llfc::Result<Params<f64>> {
    io::params_from_bytes(bytes, FileFormat::Npz)
}

#[test]
fn hand_built_archives_are_read_when_valid() {
    let (x, y) = (npy(&[1.0, 2.0]), npy(&[3.0]));
    let entry = |name, data| ZipEntry {
        name,
        data,
        zip64: None,
    };
    let p = npz_from(&zip_bytes(&[entry("a.npy", &x), entry("b.npy", &y)])).unwrap();
    assert_eq!(p.names().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(p["b"], arr1(&[3.0]).into_dyn());
    // True sizes in zip64 fields are fine too.
    let n = x.len() as u64;
    let z = ZipEntry {
        name: "a.npy",
        data: &x,
        zip64: Some((n, n)),
    };
    assert_eq!(
        npz_from(&zip_bytes(&[z])).unwrap()["a"],
        arr1(&[1.0, 2.0]).into_dyn()
    );
}

/// Item 6: the `zip` crate keeps the last of two entries with one name; the reader refuses.
#[test]
fn duplicate_entry_names_are_refused() {
    let (first, second) = (npy(&[1.0, 2.0]), npy(&[9.0, 9.0]));
    let dup = zip_bytes(&[
        ZipEntry {
            name: "layers.0.weight.npy",
            data: &first,
            zip64: None,
        },
        ZipEntry {
            name: "layers.0.weight.npy",
            data: &second,
            zip64: None,
        },
    ]);
    let e = npz_from(&dup).unwrap_err();
    assert!(
        matches!(&e, Error::Format { key: Some(k), reason, .. } if k == "layers.0.weight" && reason.contains("two entries")),
        "{e}"
    );
    // The same through the file readers (parameters, checkpoints, feature arrays).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dup.npz");
    std::fs::write(&path, &dup).unwrap();
    assert!(io::read_npz::<f32>(&path).is_err());
    assert!(io::read_checkpoint(&path).is_err());
    assert!(io::read_npz_arrays::<f64>(&path).is_err());
}

/// Item 5: a zip64 entry claiming 2^64 − 1 bytes (whose `claimed + 1` overflowed).
#[test]
fn forged_zip64_sizes_are_refused_without_overflow() {
    let x = npy(&[1.0]);
    for sizes in [
        (u64::MAX, u64::MAX),
        (u64::MAX, x.len() as u64),
        (x.len() as u64, u64::MAX),
        (u64::MAX - 1, 1 << 62),
        (1 << 40, x.len() as u64),
    ] {
        let bytes = zip_bytes(&[ZipEntry {
            name: "a.npy",
            data: &x,
            zip64: Some(sizes),
        }]);
        let e = npz_from(&bytes).unwrap_err();
        assert!(matches!(e, Error::Format { .. }), "{sizes:?}: {e}");
    }
}

/// Item 6 for safetensors and JSON specs: JSON readers keep the last of two equal keys.
#[test]
fn duplicate_tensor_and_spec_names_are_refused() {
    let header = r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header.as_bytes());
    bytes.extend([0u8; 8]);
    let e = io::params_from_bytes::<f32>(&bytes, FileFormat::Safetensors).unwrap_err();
    assert!(e.to_string().contains("two tensors"), "{e}");
    #[cfg(feature = "serde")]
    {
        let spec = r#"{"layers.0.weight": ["P", null], "layers.0.weight": [null, "P"]}"#;
        let e = llfc::PermutationSpec::from_json(spec).unwrap_err();
        assert!(e.to_string().contains("listed twice"), "{e}");
        let escaped = r#"{"w": ["P"], "\u0077": ["Q"]}"#;
        assert!(llfc::PermutationSpec::from_json(escaped).is_err());
        // The extended form: a parameter repeated inside `params` (plainly or escaped), a
        // permutation repeated inside `perms`.
        for spec in [
            r#"{"params": {"w": ["P"], "v": ["P"], "w": [null]}}"#,
            r#"{"params": {"w": ["P"], "\u0077": [null]}, "perms": {}}"#,
            r#"{"params": {"w": ["P", "P"]}, "perms": {"P": {"recurrent": true}, "P": {}}}"#,
        ] {
            let e = llfc::PermutationSpec::from_json(spec).unwrap_err();
            assert!(e.to_string().contains("listed twice"), "{spec}: {e}");
        }
    }
}

/// Item 4: only regular files are read (a device, a FIFO, a directory, links to them).
#[cfg(unix)]
#[test]
fn non_regular_files_are_refused_without_reading() {
    let dir = tempfile::tempdir().unwrap();
    let zero = dir.path().join("zero.npz");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let fifo = dir.path().join("fifo.safetensors");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let subdir = dir.path().join("sub.npz");
    std::fs::create_dir(&subdir).unwrap();
    for path in [Path::new("/dev/zero"), &zero, &fifo, &subdir] {
        // A FIFO with no writer would block an `open`, /dev/zero would fill memory.
        for e in [
            io::read_npz::<f32>(path).unwrap_err(),
            io::read_safetensors::<f32>(path).unwrap_err(),
            io::read_npy::<f64>(path).unwrap_err(),
            io::read_regular_file(path).unwrap_err(),
        ] {
            assert!(
                matches!(&e, Error::Io { .. }) && e.to_string().contains("not a regular file"),
                "{}: {e}",
                path.display()
            );
        }
        if path.extension().is_some() {
            assert!(io::read_checkpoint(path).is_err());
            assert!(io::read_params::<f64>(path).is_err());
        }
    }
    // A symbolic link to a regular file is read.
    let real = dir.path().join("real.npz");
    let p: Params<f64> = [("w", arr1(&[1.0]).into_dyn())].into_iter().collect();
    io::write_params(&real, &p).unwrap();
    let link = dir.path().join("link.npz");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    assert_eq!(io::read_params::<f64>(&link).unwrap(), p);
}

/// Item 11: a 30 000-deep header and a 60 000-character entry name give one short line.
#[test]
fn errors_quote_at_most_a_few_hundred_characters() {
    let mut deep = b"\x93NUMPY\x02\x00".to_vec();
    let header = "[".repeat(30_000);
    deep.extend((header.len() as u32).to_le_bytes());
    deep.extend(header.as_bytes());
    let long_name = format!("{}.npy", "n".repeat(60_000));
    let garbage = b"\x93NUMPY\x01\x00\x10\x00{'descr': 'zz'}\n".to_vec();
    let long = zip_bytes(&[ZipEntry {
        name: &long_name,
        data: &garbage,
        zip64: None,
    }]);
    let wordy_header = format!(
        "{{'descr': '<f8', 'fortran_order': False, 'shape': (1,), 'x': '{}'}}",
        "y".repeat(5000)
    );
    let mut wordy = b"\x93NUMPY\x01\x00".to_vec();
    wordy.extend((wordy_header.len() as u16).to_le_bytes());
    wordy.extend(wordy_header.as_bytes());
    let errors = [
        io::array_from_npy_bytes::<f64>(&deep).unwrap_err(),
        npz_from(&long).unwrap_err(),
        io::array_from_npy_bytes::<f64>(&wordy).unwrap_err(),
    ];
    for e in errors {
        let text = e.to_string();
        assert!(
            text.len() < 1000,
            "{} characters: {}",
            text.len(),
            &text[..300]
        );
        assert!(!text.contains('\n'), "{text}");
    }
}

/// Item 13: the temporary sibling's name is short, so a 255-byte name (the usual limit)
/// can be written.
#[test]
fn the_longest_legal_file_names_can_be_written() {
    let dir = tempfile::tempdir().unwrap();
    let p: Params<f32> = [("w", arr1(&[1.0f32, -2.0]).into_dyn())]
        .into_iter()
        .collect();
    for ext in ["npz", "safetensors"] {
        let name = format!("{}.{ext}", "m".repeat(254 - ext.len()));
        assert_eq!(name.len(), 255);
        let path = dir.path().join(&name);
        io::write_params(&path, &p).unwrap();
        assert_eq!(io::read_params::<f32>(&path).unwrap(), p);
    }
    let npy_name = format!("{}.npy", "x".repeat(251));
    io::write_npy(dir.path().join(npy_name), &arr1(&[1.0f64])).unwrap();
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
}

/// `OutputSet`: nothing under the final names before the commit, nothing left on error.
#[test]
fn output_sets_commit_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.json"), dir.path().join("b.json"));
    std::fs::write(&a, "old").unwrap();
    let mut set = io::OutputSet::new();
    set.stage_bytes(&a, b"new").unwrap();
    // Staging into a missing directory fails; the set is dropped uncommitted.
    assert!(set
        .stage_bytes(dir.path().join("missing").join("c"), b"")
        .is_err());
    drop(set);
    assert_eq!(std::fs::read_to_string(&a).unwrap(), "old");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    let mut set = io::OutputSet::new();
    set.stage_bytes(&a, b"new a").unwrap();
    set.stage_bytes(&b, b"new b").unwrap();
    assert!(set.stage_bytes(&b, b"again").is_err()); // staged twice
    set.commit().unwrap();
    assert_eq!(std::fs::read_to_string(&a).unwrap(), "new a");
    assert_eq!(std::fs::read_to_string(&b).unwrap(), "new b");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
}

/// An arbitrary `.npy` header dictionary: forged shapes, random dtypes, nesting.
fn npy_with(header: &str, body: &[u8]) -> Vec<u8> {
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len().min(65535) as u16).to_le_bytes());
    out.extend(header.as_bytes());
    out.extend(body);
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// `.npz`: arbitrary names (repeating), forged zip64 sizes, mutated bytes.
    #[test]
    fn archives_with_forged_sizes_and_names_never_panic(
        names in prop::collection::vec(prop::sample::select(vec!["a.npy", "b.npy", "a", "b/c.npy", ""]), 1..5),
        sizes in prop::collection::vec(prop::option::of((any::<u64>(), any::<u64>())), 5),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
    ) {
        let data: Vec<Vec<u8>> = (0..names.len()).map(|i| npy(&vec![i as f64; i + 1])).collect();
        let entries: Vec<ZipEntry<'_>> = names
            .iter()
            .zip(&data)
            .zip(&sizes)
            .map(|((name, data), zip64)| ZipEntry { name, data, zip64: *zip64 })
            .collect();
        let mut bytes = zip_bytes(&entries);
        let unique = names.iter().map(|n| n.strip_suffix(".npy").unwrap_or(n)).collect::<std::collections::HashSet<_>>().len();
        if edits.is_empty() && unique < names.len() {
            prop_assert!(npz_from(&bytes).is_err(), "duplicate names accepted: {:?}", names);
        }
        for (at, byte) in &edits {
            let i = at.index(bytes.len());
            bytes[i] = *byte;
        }
        let _ = npz_from(&bytes);
        let _ = io::params_from_bytes::<f32>(&bytes, FileFormat::Npz);
    }

    /// `.npy`: forged shapes (any dimensions, overflowing products), arbitrary dtypes and
    /// nesting depths, with a few data bytes.
    #[test]
    fn npy_headers_with_forged_shapes_never_panic(
        dims in prop::collection::vec(any::<u64>(), 0..5),
        descr in prop::sample::select(vec!["<f8", "<f4", ">f2", "<i8", "|b1", "<c16", "O", "<U3", "zz"]),
        depth in 0usize..3000,
        fortran in any::<bool>(),
        body_len in 0usize..64,
    ) {
        let shape: Vec<String> = dims.iter().map(|d| format!("{d}, ")).collect();
        let header = format!(
            "{{'descr': '{descr}', 'fortran_order': {}, 'shape': ({}), 'x': {}{}}}",
            if fortran { "True" } else { "False" },
            shape.concat(),
            "[".repeat(depth),
            "]".repeat(depth),
        );
        let bytes = npy_with(&header, &vec![0u8; body_len]);
        for result in [
            io::array_from_npy_bytes::<f64>(&bytes).map(|_| ()),
            io::array_from_npy_bytes::<f32>(&bytes).map(|_| ()),
        ] {
            if let Err(e) = result {
                let text = e.to_string();
                prop_assert!(text.len() < 1000 && !text.contains('\n'), "{}", text);
            }
        }
    }

    /// `.safetensors`: forged offsets and shapes, repeated names, nested metadata.
    #[test]
    fn safetensors_headers_with_forged_sizes_never_panic(
        tensors in prop::collection::vec(
            (prop::sample::select(vec!["w", "b", "w"]), prop::collection::vec(any::<u64>(), 0..3), any::<u64>(), any::<u64>()),
            0..4,
        ),
        depth in 0usize..200,
        data_len in 0usize..64,
    ) {
        let entries: Vec<String> = tensors
            .iter()
            .map(|(name, shape, start, end)| {
                format!(r#""{name}":{{"dtype":"F32","shape":{shape:?},"data_offsets":[{start},{end}]}}"#)
            })
            .collect();
        let header = format!(
            r#"{{"__metadata__":{{"x":"{}{}"}}{}{}}}"#,
            "[".repeat(depth),
            "]".repeat(depth),
            if entries.is_empty() { "" } else { "," },
            entries.join(",")
        );
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend(header.as_bytes());
        bytes.extend(vec![0u8; data_len]);
        let result = io::params_from_bytes::<f64>(&bytes, FileFormat::Safetensors);
        let mut names: Vec<&str> = tensors.iter().map(|t| t.0).collect();
        names.sort_unstable();
        names.dedup();
        if names.len() < tensors.len() {
            prop_assert!(result.is_err(), "duplicate tensor names accepted");
        }
    }

    /// JSON specs: arbitrary text, repeated parameters and deep nesting.
    #[cfg(feature = "serde")]
    #[test]
    fn json_specs_never_panic(
        params in prop::collection::vec(prop::sample::select(vec!["a", "b", "a"]), 0..4),
        depth in 0usize..5000,
        noise in prop::collection::vec(any::<u8>(), 0..40),
    ) {
        let entries: Vec<String> = params.iter().map(|p| format!(r#""{p}": ["P", null]"#)).collect();
        let text = format!("{{{}}}", entries.join(","));
        let mut sorted = params.clone();
        sorted.sort_unstable();
        sorted.dedup();
        prop_assert_eq!(llfc::PermutationSpec::from_json(&text).is_ok(), sorted.len() == params.len());
        let nested = format!(r#"{{"a": {}{}}}"#, "[".repeat(depth), "]".repeat(depth));
        prop_assert!(llfc::PermutationSpec::from_json(&nested).is_err());
        let _ = llfc::PermutationSpec::from_json(&String::from_utf8_lossy(&noise));
    }
}
