//! Views (`spec::Unflatten`) together with the structured spec language (segments, head
//! declarations, layouts): validation on the view, the symmetry rules on the view's axes, one
//! JSON form for both, `apply_permutations` and `check_invariance` checked against a forward
//! pass written here.
#![cfg(feature = "serde")]

use llfc::spec::{check_invariance, Layout, Unflatten};
use llfc::{apply_permutations, Error, Params, PermutationSpec};
use ndarray::{Array1, ArrayD, IxDyn};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::spec::random_tensor;

const C: usize = 4; // units per segment
const K: usize = 3; // entries per unit in the flattened axis

/// `a.weight` `[2C, 3]` produces `P` (rows 0..C) and `Q` (rows C..2C); `b.weight` stores
/// `[5, 2C·K]`, viewed as `[5, 2C, K]`, and consumes them blockwise.
const SPEC: &str = r#"{
  "params": {
    "a.weight": [[{"perm": "P", "size": 4}, {"perm": "Q", "size": 4}], null],
    "b.weight": {"axes": [null, [{"perm": "P", "size": 4}, {"perm": "Q", "size": 4}], null],
                 "unflatten": {"axis": 1, "inner": [3]}}
  }
}"#;

fn params(rng: &mut ChaCha8Rng) -> Params<f64> {
    let mut p = Params::new();
    p.insert("a.weight", random_tensor(&[2 * C, 3], rng));
    p.insert("b.weight", random_tensor(&[5, 2 * C * K], rng));
    p
}

/// `y = Σ_{u,t} B[:, u·K + t] · relu(A x)[u] · v[t]`, written index by index: invariant under
/// any permutation of the units `u` applied to the rows of `A` and the column blocks of `B`.
fn forward(p: &Params<f64>, x: &Array1<f64>) -> llfc::Result<ArrayD<f64>> {
    let (a, b) = (&p["a.weight"], &p["b.weight"]);
    let v = [0.5, -1.25, 2.0];
    let mut y = ArrayD::zeros(IxDyn(&[5]));
    for u in 0..2 * C {
        let h: f64 = (0..3).map(|j| a[[u, j]] * x[j]).sum::<f64>().max(0.0);
        for (t, vt) in v.iter().enumerate() {
            for o in 0..5 {
                y[[o]] += b[[o, u * K + t]] * h * vt;
            }
        }
    }
    Ok(y)
}

#[test]
fn segments_through_a_view_validate_apply_and_pass_the_function_check() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let p = params(&mut rng);
    let spec = PermutationSpec::from_json(SPEC).unwrap();
    assert!(spec.unflatten("b.weight").is_some());
    assert_eq!(spec.segments("b.weight", 1).unwrap().len(), 2);
    let v = spec.validate(&p).unwrap();
    assert_eq!(v.perm_sizes["P"], C);
    assert_eq!(v.perm_sizes["Q"], C);

    let perms = spec.random_perms(&p, &mut rng).unwrap();
    let out = apply_permutations(&spec, &perms, &p).unwrap();
    assert_eq!(out["b.weight"].shape(), &[5, 2 * C * K]);
    // Index by index: row i of segment s comes from row p_s[i]; the column block of unit
    // (s, i) from that of unit (s, p_s[i]).
    for (s, name) in ["P", "Q"].iter().enumerate() {
        let q = perms[*name].as_slice();
        for i in 0..C {
            for j in 0..3 {
                assert_eq!(
                    out["a.weight"][[s * C + i, j]],
                    p["a.weight"][[s * C + q[i], j]]
                );
            }
            for o in 0..5 {
                for t in 0..K {
                    assert_eq!(
                        out["b.weight"][[o, (s * C + i) * K + t]],
                        p["b.weight"][[o, (s * C + q[i]) * K + t]]
                    );
                }
            }
        }
    }
    // The function check draws permutations through the segmented view and passes: the
    // forward above is invariant up to rounding of a different summation order (1e-12).
    let x = Array1::from(vec![0.3, -0.7, 1.1]);
    let report = check_invariance(&spec, &p, forward, &x, 1e-12, &mut rng).unwrap();
    assert!(report.passed(), "{report}");
    spec.check_structure(&report.perms).unwrap();
}

#[test]
fn views_and_structure_round_trip_through_one_json_form() {
    let spec = PermutationSpec::from_json(SPEC).unwrap();
    let text = spec.to_json();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        v["params"]["b.weight"]["unflatten"],
        serde_json::json!({"axis": 1, "inner": [3]})
    );
    assert_eq!(PermutationSpec::from_json(&text).unwrap(), spec);
    // A view with a layout, and a plain spec with a view, stay in their forms.
    let with_layout = PermutationSpec::new()
        .with_unflattened(
            "w",
            Unflatten {
                axis: 0,
                inner: vec![2],
            },
            &[Some("P"), None, Some("R")],
        )
        .with_layout("w", Layout::InOut);
    let text = with_layout.to_json();
    assert!(
        text.contains("\"in_out\"") && text.contains("\"unflatten\""),
        "{text}"
    );
    assert_eq!(PermutationSpec::from_json(&text).unwrap(), with_layout);
    let plain = PermutationSpec::new().with_unflattened(
        "w",
        Unflatten {
            axis: 1,
            inner: vec![7, 7],
        },
        &[Some("P"), Some("R"), None, None],
    );
    let v: serde_json::Value = serde_json::from_str(&plain.to_json()).unwrap();
    assert!(
        v.get("params").is_none(),
        "a spec with views only stays plain"
    );
    assert_eq!(PermutationSpec::from_json(&plain.to_json()).unwrap(), plain);
    // Bad views are errors in both forms.
    for bad in [
        r#"{"w": {"axes": ["P"], "unflatten": {"axis": 0}}}"#,
        r#"{"params": {"w": {"axes": ["P"], "unflatten": {"axis": 0, "inner": [2], "x": 1}}}}"#,
    ] {
        assert!(
            matches!(
                PermutationSpec::from_json(bad),
                Err(Error::InvalidSpec { .. })
            ),
            "{bad}"
        );
    }
}

#[test]
fn symmetry_rules_count_the_axes_of_the_view() {
    // `v` stores [2·3] and is viewed as [2, 3]; it consumes `P` (size 3) on the view's axis 1,
    // which `w` produces. Counted on the stored vector, `P` would be produced twice and never
    // consumed.
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut p = Params::new();
    p.insert("w", random_tensor(&[3, 4], &mut rng));
    p.insert("v", random_tensor(&[6], &mut rng));
    let spec = PermutationSpec::new()
        .with("w", &[Some("P"), None])
        .with_unflattened(
            "v",
            Unflatten {
                axis: 0,
                inner: vec![3],
            },
            &[None, Some("P")],
        );
    assert_eq!(spec.validate(&p).unwrap().perm_sizes["P"], 3);
    // Without the consumer the rule fires.
    let lone = PermutationSpec::new().with("w", &[Some("P"), None]);
    assert!(matches!(
        lone.validate(&p),
        Err(Error::UnbalancedPermutation { .. })
    ));
    // `insert` drops the view and the segments of a parameter.
    let mut s = PermutationSpec::from_json(SPEC).unwrap();
    s.insert("b.weight", &[None::<&str>, None]);
    assert!(s.unflatten("b.weight").is_none());
    assert!(s.segments("b.weight", 1).is_none());
}
