//! `examples/python/spec_from_module.py` on recorded module graphs of torchvision's and the LLFC
//! paper's models (`examples/python/fixtures/`) produces the builtin specs, up to the names of
//! the permutations: same parameters, same views, and the same sets of `(parameter, axis)` tied
//! by one permutation. Skipped with a note when `python3` is not available.
#![cfg(feature = "serde")]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use llfc::spec::Builtin;
use llfc::PermutationSpec;

/// The spec up to permutation names: each permutation's `(param, axis)` list, and every
/// parameter with its view.
fn structure(spec: &PermutationSpec) -> (BTreeSet<Vec<(String, usize)>>, Vec<String>) {
    let tied = spec.perm_to_axes().into_values().collect();
    let params = spec
        .iter()
        .map(|(p, axes)| format!("{p} rank {} view {:?}", axes.len(), spec.unflatten(p)))
        .collect();
    (tied, params)
}

#[test]
fn generated_specs_equal_the_builtins_up_to_names() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/python");
    if Command::new("python3").arg("--version").output().is_err() {
        eprintln!("python3 not found: skipping the spec generator test");
        return;
    }
    let mut checked = 0;
    for b in Builtin::all() {
        let fixture = root.join("fixtures").join(format!("{}.json", b.name()));
        if !fixture.exists() {
            continue;
        }
        let out = Command::new("python3")
            .arg(root.join("spec_from_module.py"))
            .arg("--graph")
            .arg(&fixture)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{b}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let generated = PermutationSpec::from_json(&String::from_utf8_lossy(&out.stdout)).unwrap();
        assert_eq!(structure(&generated), structure(&b.spec()), "{b}");
        checked += 1;
    }
    assert_eq!(checked, 7, "one fixture per family and variant");
}
