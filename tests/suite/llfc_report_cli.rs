//! End-to-end tests of `examples/llfc_report.rs`, the command-line LLFC report of features
//! exported from any framework: the JSON it writes equals the library's `metrics` functions
//! computed directly (and `llfc_report_mlp` on the same MLP), and every bad input gives a
//! one-line error, a non-zero exit and no output file. A last test runs the NumPy export scripts
//! of `examples/python/` end to end when `python3` with NumPy is available (skipped otherwise).
#![cfg(feature = "io")]

use std::path::{Path, PathBuf};
use std::process::Command;

use llfc::metrics::{
    commutativity, cosine_distances, llfc_layer, llfc_report_mlp, weak_additivity, Commutativity,
    CosineVariant, LlfcLayer, SampleStats, WeakAdditivity,
};
use llfc::mlp::{self, FeatureKind};
use llfc::{io, Params};
use ndarray::{Array2, ArrayD, Ix2, IxDyn};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

/// The `llfc_report` example binary, built by `cargo test` next to this test's own executable.
fn report_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir
        .join("examples")
        .join(format!("llfc_report{}", std::env::consts::EXE_SUFFIX));
    assert!(bin.exists(), "build the example first: {}", bin.display());
    bin
}

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(report_bin()).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Tolerance `|json − lib| ≤ abs + rel · max(|json|, |lib|)`.
#[derive(Clone, Copy)]
struct Tol {
    abs: f64,
    rel: f64,
}

/// The JSON holds every number at full precision (shortest round-trip decimal); serde_json's
/// default float parser may still land an ulp away from the exact value, hence 4 ulps.
const ULPS: Tol = Tol {
    abs: 0.0,
    rel: 4.0 * f64::EPSILON,
};

fn check_num(json: &Value, lib: Option<f64>, tol: Tol, what: &str) {
    let got = if json.is_null() {
        None
    } else {
        Some(json.as_f64().unwrap_or_else(|| panic!("{what}: {json}")))
    };
    match (got, lib) {
        (None, None) => {}
        (Some(x), Some(y)) => assert!(
            (x - y).abs() <= tol.abs + tol.rel * x.abs().max(y.abs()),
            "{what}: JSON {x:e}, library {y:e}"
        ),
        _ => panic!("{what}: JSON {got:?}, library {lib:?}"),
    }
}

fn check_stats(json: &Value, lib: &SampleStats, tol: Tol, what: &str) {
    check_num(&json["mean"], lib.mean, tol, &format!("{what}.mean"));
    check_num(&json["std"], lib.std, tol, &format!("{what}.std"));
    assert_eq!(
        json["count"].as_u64(),
        Some(lib.count as u64),
        "{what}.count"
    );
    assert_eq!(
        json["skipped"].as_u64(),
        Some(lib.skipped as u64),
        "{what}.skipped"
    );
}

/// A `post` or `pre` object against one [`LlfcLayer`] per α.
fn check_kind(json: &Value, rows: &[LlfcLayer], tol: Tol, what: &str) {
    check_stats(
        &json["baseline"],
        &rows[0].baseline,
        tol,
        &format!("{what}.baseline"),
    );
    let got = json["alphas"].as_array().unwrap();
    assert_eq!(got.len(), rows.len(), "{what}: number of α");
    for (j, lib) in got.iter().zip(rows) {
        let what = format!("{what}[α={}]", lib.alpha);
        assert_eq!(j["alpha"].as_f64(), Some(lib.alpha), "{what}");
        check_stats(
            &j["distance"],
            &lib.distance,
            tol,
            &format!("{what}.distance"),
        );
        check_stats(&j["coef"], &lib.scale.coef, tol, &format!("{what}.coef"));
        check_stats(&j["c"], &lib.scale.c, tol, &format!("{what}.c"));
        check_num(&j["matrix_coef"], lib.scale.matrix_coef, tol, &what);
        check_num(&j["matrix_c"], lib.scale.matrix_c, tol, &what);
    }
}

fn check_weak(json: &Value, lib: &[WeakAdditivity], tol: Tol, what: &str) {
    let got = json.as_array().unwrap_or_else(|| panic!("{what}: {json}"));
    assert_eq!(got.len(), lib.len(), "{what}");
    for (j, w) in got.iter().zip(lib) {
        assert_eq!(j["alpha"].as_f64(), Some(w.alpha), "{what}");
        check_num(&j["relative"], w.relative, tol, what);
        check_num(&j["vanilla"], w.vanilla, tol, what);
        check_stats(&j["cosine"], &w.cosine, tol, what);
    }
}

fn check_comm(json: &Value, lib: &Commutativity, tol: Tol, what: &str) {
    check_num(&json["relative"], lib.relative, tol, what);
    check_num(&json["vanilla"], lib.vanilla, tol, what);
    check_num(&json["baseline"], lib.baseline, tol, what);
    check_num(&json["residual_norm"], Some(lib.residual_norm), tol, what);
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Named arrays in file order.
type Arrays = Vec<(String, ArrayD<f64>)>;

const LABELS: [&str; 3] = ["0.25", "0.5", "0.75"];
const ALPHAS: [f64; 3] = [0.25, 0.5, 0.75];

/// Two MLPs, inputs, and a features file in `llfc_report`'s layout: every MLP layer
/// `layers.{i}` (post-activations, hidden pre-activations with θ(α)'s, inputs), plus a
/// conv-shaped layer `conv` `[samples, 2, 3, 3]` with a zero sample in A (skipped).
struct Fixture {
    a: Params<f64>,
    b: Params<f64>,
    x: Array2<f64>,
    arrays: Arrays,
}

fn fixture(seed: u64) -> Fixture {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let widths = [5, 12, 10, 4];
    let a: Params<f64> = mlp::init(&widths, &mut rng).unwrap();
    let b: Params<f64> = mlp::init(&widths, &mut rng).unwrap();
    let x = Array2::from_shape_fn((40, 5), |_| rng.random_range(-2.0..2.0));
    let (fa, fb) = (
        mlp::forward_features(&a, &x).unwrap(),
        mlp::forward_features(&b, &x).unwrap(),
    );
    let ft: Vec<_> = ALPHAS
        .iter()
        .map(|&al| mlp::forward_features(&a.interpolate(&b, al).unwrap(), &x).unwrap())
        .collect();
    let layers = fa.num_layers();
    let mut arrays: Arrays = Vec::new();
    let mut push = |k: String, v: &Array2<f64>| arrays.push((k, v.clone().into_dyn()));
    for l in 0..layers {
        push(format!("A/layers.{l}"), &fa.post[l]);
        push(format!("B/layers.{l}"), &fb.post[l]);
    }
    for (t, label) in ft.iter().zip(LABELS) {
        for l in 0..layers {
            push(format!("alpha={label}/layers.{l}"), &t.post[l]);
        }
    }
    for l in 0..layers - 1 {
        push(format!("pre/A/layers.{l}"), &fa.pre[l]);
        push(format!("pre/B/layers.{l}"), &fb.pre[l]);
        for (t, label) in ft.iter().zip(LABELS) {
            push(format!("pre/alpha={label}/layers.{l}"), &t.pre[l]);
        }
    }
    for l in 0..layers {
        let (ha, hb) = if l == 0 {
            (&x, &x)
        } else {
            (&fa.post[l - 1], &fb.post[l - 1])
        };
        push(format!("in/A/layers.{l}"), ha);
        push(format!("in/B/layers.{l}"), hb);
    }
    let conv = |rng: &mut ChaCha8Rng| {
        ArrayD::from_shape_fn(IxDyn(&[40, 2, 3, 3]), |_| rng.random_range(-1.0..1.0))
    };
    let mut conv_a = conv(&mut rng);
    conv_a.index_axis_mut(ndarray::Axis(0), 0).fill(0.0);
    arrays.push(("A/conv".into(), conv_a));
    arrays.push(("B/conv".into(), conv(&mut rng)));
    for label in LABELS {
        arrays.push((format!("alpha={label}/conv"), conv(&mut rng)));
    }
    Fixture { a, b, x, arrays }
}

impl Fixture {
    fn get(&self, key: &str) -> &ArrayD<f64> {
        &self.arrays.iter().find(|(k, _)| k == key).unwrap().1
    }

    fn write(&self, dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
        let (f, a, b) = (
            dir.join("features.npz"),
            dir.join("a.safetensors"),
            dir.join("b.safetensors"),
        );
        io::write_npz_arrays(&f, self.arrays.iter().map(|(k, v)| (k, v))).unwrap();
        io::write_params(&a, &self.a).unwrap();
        io::write_params(&b, &self.b).unwrap();
        (f, a, b)
    }

    /// The library's LLFC rows of one layer and kind ("" or "pre/") at the given α labels.
    fn llfc(&self, prefix: &str, layer: &str, labels: &[&str], v: CosineVariant) -> Vec<LlfcLayer> {
        labels
            .iter()
            .map(|label| {
                llfc_layer(
                    self.get(&format!("{prefix}alpha={label}/{layer}")),
                    self.get(&format!("{prefix}A/{layer}")),
                    self.get(&format!("{prefix}B/{layer}")),
                    label.parse().unwrap(),
                    v,
                )
                .unwrap()
            })
            .collect()
    }
}

fn layer_json<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == name)
        .unwrap_or_else(|| panic!("no layer {name}"))
}

#[test]
fn json_report_equals_the_library_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let fx = fixture(11);
    let (features, pa, pb) = fx.write(dir.path());
    let json = dir.path().join("report.json");
    let (ok, stdout, stderr) = run(&[
        s(&features),
        "--a",
        s(&pa),
        "--b",
        s(&pb),
        "--json",
        s(&json),
    ]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("weak additivity") && stdout.contains("commutativity"),
        "{stdout}"
    );
    let report = read_json(&json);
    assert_eq!(report["variant"], "signed");
    assert_eq!(report["alphas"], serde_json::json!(ALPHAS));
    let names: Vec<&str> = report["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["layers.0", "layers.1", "layers.2", "conv"],
        "file order"
    );

    // Directly from the metrics functions, on the very arrays of the file.
    let v = CosineVariant::Signed;
    for l in 0..3 {
        let name = format!("layers.{l}");
        let j = layer_json(&report, &name);
        assert_eq!(
            j["shape"],
            serde_json::json!(fx.get(&format!("A/{name}")).shape())
        );
        check_kind(&j["post"], &fx.llfc("", &name, &LABELS, v), ULPS, &name);
        let h = |who: &str| {
            fx.get(&format!("in/{who}/{name}"))
                .view()
                .into_dimensionality::<Ix2>()
                .unwrap()
        };
        fn weight(p: &Params<f64>, l: usize) -> ndarray::ArrayView2<'_, f64> {
            p[mlp::weight_name(l).as_str()]
                .view()
                .into_dimensionality::<Ix2>()
                .unwrap()
        }
        let comm = commutativity(weight(&fx.a, l), weight(&fx.b, l), h("A"), h("B")).unwrap();
        check_comm(&j["commutativity"], &comm, ULPS, &name);
        assert_eq!(j["commutativity"]["weight"], mlp::weight_name(l));
        if l < 2 {
            check_kind(&j["pre"], &fx.llfc("pre/", &name, &LABELS, v), ULPS, &name);
            let (za, zb) = (
                fx.get(&format!("pre/A/{name}")),
                fx.get(&format!("pre/B/{name}")),
            );
            let weak: Vec<_> = ALPHAS
                .iter()
                .map(|&al| weak_additivity(za, zb, al).unwrap())
                .collect();
            check_weak(&j["weak_additivity"], &weak, ULPS, &name);
        } else {
            assert!(j["pre"].is_null() && j["weak_additivity"].is_null(), "{j}");
        }
    }
    let conv = layer_json(&report, "conv");
    check_kind(
        &conv["post"],
        &fx.llfc("", "conv", &LABELS, v),
        ULPS,
        "conv",
    );
    assert_eq!(conv["post"]["baseline"]["skipped"], 1, "A's zero sample");
    assert!(conv["commutativity"].is_null() && conv["pre"].is_null());

    // And the same numbers as the library's MLP convenience on the same models and inputs.
    let lib = llfc_report_mlp(&fx.a, &fx.b, &fx.x, &ALPHAS, v).unwrap();
    for l in 0..3 {
        let j = layer_json(&report, &format!("layers.{l}"));
        let post: Vec<_> = (0..3)
            .map(|i| lib.layer(i, l, FeatureKind::Post).unwrap().clone())
            .collect();
        check_kind(&j["post"], &post, ULPS, "llfc_report_mlp post");
        check_comm(
            &j["commutativity"],
            &lib.commutativity[l],
            ULPS,
            "llfc_report_mlp comm",
        );
        if l < 2 {
            let pre: Vec<_> = (0..3)
                .map(|i| lib.layer(i, l, FeatureKind::Pre).unwrap().clone())
                .collect();
            check_kind(&j["pre"], &pre, ULPS, "llfc_report_mlp pre");
            let weak: Vec<_> = (0..3).map(|i| lib.weak_additivity[i][l].clone()).collect();
            check_weak(&j["weak_additivity"], &weak, ULPS, "llfc_report_mlp weak");
        }
    }
    let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(leftovers, 4, "the inputs and the report, no temporary file");
}

#[test]
fn selection_variant_and_f32_features() {
    let dir = tempfile::tempdir().unwrap();
    let fx = fixture(12);
    // The same features stored as float32: read exactly, so the report equals the library on
    // the f32 arrays.
    let f32_arrays: Vec<(String, ArrayD<f32>)> = fx
        .arrays
        .iter()
        .map(|(k, v)| (k.clone(), v.mapv(|x| x as f32)))
        .collect();
    let features = dir.path().join("f32.npz");
    io::write_npz_arrays(&features, f32_arrays.iter().map(|(k, v)| (k, v))).unwrap();
    let json = dir.path().join("r.json");
    let (ok, stdout, stderr) = run(&[
        s(&features),
        "--variant",
        "absolute",
        "--alphas",
        "0.75,0.250",
        "--layers",
        "conv,layers.1",
        "--json",
        s(&json),
    ]);
    assert!(ok, "{stderr}");
    assert!(
        !stdout.contains("commutativity"),
        "no checkpoints: {stdout}"
    );
    let report = read_json(&json);
    assert_eq!(report["variant"], "absolute");
    assert_eq!(
        report["alphas"],
        serde_json::json!([0.75, 0.25]),
        "--alphas order"
    );
    let names: Vec<&str> = report["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["conv", "layers.1"], "--layers order");
    let get = |key: &str| &f32_arrays.iter().find(|(k, _)| k == key).unwrap().1;
    for (layer, prefixes) in [("conv", &[""][..]), ("layers.1", &["", "pre/"][..])] {
        let j = layer_json(&report, layer);
        for prefix in prefixes {
            let rows: Vec<_> = [("0.75", 0.75), ("0.25", 0.25)]
                .iter()
                .map(|(label, al)| {
                    llfc_layer(
                        get(&format!("{prefix}alpha={label}/{layer}")),
                        get(&format!("{prefix}A/{layer}")),
                        get(&format!("{prefix}B/{layer}")),
                        *al,
                        CosineVariant::Absolute,
                    )
                    .unwrap()
                })
                .collect();
            let kind = if prefix.is_empty() { "post" } else { "pre" };
            check_kind(&j[kind], &rows, ULPS, &format!("{layer} {kind}"));
        }
        assert!(j["commutativity"].is_null());
    }
    // Baseline of the conv layer through cosine_distances directly.
    let base = cosine_distances(get("A/conv"), get("B/conv"), CosineVariant::Absolute).unwrap();
    check_stats(
        &layer_json(&report, "conv")["post"]["baseline"],
        &base,
        ULPS,
        "conv baseline",
    );
    // Without --json only the table is printed.
    let (ok, stdout, stderr) = run(&[s(&features), "--alphas", "0.5"]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("layers.2") && stdout.contains("conv"),
        "{stdout}"
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
}

/// Every bad input: non-zero exit, one line on stderr, no output written.
#[test]
fn bad_inputs_fail_cleanly_without_output() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let fx = fixture(13);
    let (good, pa, pb) = fx.write(d);
    let variant = |name: &str, edit: &dyn Fn(&mut Arrays)| -> PathBuf {
        let mut arrays = fx.arrays.clone();
        edit(&mut arrays);
        let path = d.join(name);
        io::write_npz_arrays(&path, arrays.iter().map(|(k, v)| (k, v))).unwrap();
        path
    };
    let remove = |key: &'static str| move |a: &mut Arrays| a.retain(|(k, _)| k != key);
    let no_b = variant("no_b.npz", &remove("B/layers.1"));
    let no_alpha = variant("no_alpha.npz", &remove("alpha=0.5/layers.2"));
    let no_pre_alpha = variant("no_pre_alpha.npz", &remove("pre/alpha=0.75/layers.0"));
    let no_in_b = variant("no_in_b.npz", &remove("in/B/layers.1"));
    let orphan = variant("orphan.npz", &|a| {
        a.push(("alpha=0.5/ghost".into(), ArrayD::zeros(IxDyn(&[40, 3]))));
    });
    let unknown = variant("unknown.npz", &|a| {
        a.push(("labels".into(), ArrayD::zeros(IxDyn(&[40]))));
    });
    let bad_alpha = variant("bad_alpha.npz", &|a| {
        a.push((
            "alpha=half/layers.0".into(),
            ArrayD::zeros(IxDyn(&[40, 12])),
        ));
    });
    let two_spellings = variant("spellings.npz", &|a| {
        for (k, _) in a.iter_mut() {
            if k == "alpha=0.5/layers.2" {
                *k = "alpha=0.50/layers.2".into();
            }
        }
    });
    let shape = variant("shape.npz", &|a| {
        for (k, v) in a.iter_mut() {
            if k == "alpha=0.5/layers.1" {
                *v = ArrayD::zeros(IxDyn(&[40, 11]));
            }
        }
    });
    let nan = variant("nan.npz", &|a| {
        for (k, v) in a.iter_mut() {
            if k == "B/conv" {
                v[[3, 1, 2, 0]] = f64::NAN;
            }
        }
    });
    // An integer array under a features key (written through a checkpoint's raw tensors).
    let ints = d.join("ints.npz");
    let mut ckpt = io::Checkpoint::with_dtype(fx.arrays.iter().cloned().collect(), io::Dtype::F64);
    ckpt.params.remove("A/layers.0");
    ckpt.others.push((
        "A/layers.0".into(),
        io::RawTensor {
            dtype: io::RawDtype::I64,
            shape: vec![2],
            data: [1i64, 2].iter().flat_map(|v| v.to_le_bytes()).collect(),
        },
    ));
    io::write_checkpoint(&ints, &ckpt).unwrap();
    let corrupt = d.join("corrupt.npz");
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(&corrupt, &bytes[..bytes.len() / 2]).unwrap();
    let inputs = std::fs::read_dir(d).unwrap().count();

    let out = d.join("out.json");
    let missing_dir = d.join("missing-dir").join("out.json");
    let nope = d.join("nope.npz");
    let (g, a, b, o) = (s(&good), s(&pa), s(&pb), s(&out));
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec![s(&no_b), "--json", o], "B/layers.1"),
        (vec![g, "--alphas", "0.3", "--json", o], "0.3"),
        (vec![g, "--alphas", "0.5,0.5", "--json", o], "twice"),
        (vec![g, "--alphas", "x", "--json", o], "`x`"),
        (vec![g, "--layers", "fc9", "--json", o], "fc9"),
        (vec![s(&no_alpha), "--json", o], "alpha=0.5/layers.2"),
        (
            vec![s(&no_pre_alpha), "--json", o],
            "pre/alpha=0.75/layers.0",
        ),
        (
            vec![s(&no_in_b), "--a", a, "--b", b, "--json", o],
            "in/B/layers.1",
        ),
        (vec![s(&orphan), "--json", o], "ghost"),
        (vec![s(&unknown), "--json", o], "labels"),
        (vec![s(&bad_alpha), "--json", o], "alpha=half"),
        (vec![s(&two_spellings), "--json", o], "alpha=0.50"),
        (vec![s(&shape), "--json", o], "shape mismatch"),
        (vec![s(&nan), "--json", o], "B/conv"),
        (vec![s(&ints), "--json", o], "A/layers.0"),
        (vec![s(&corrupt), "--json", o], "corrupt.npz"),
        (vec![s(&nope), "--json", o], "nope.npz"),
        (vec![g, "--a", a, "--json", o], "--a and --b"),
        (vec![g, "--weight", "layers.1=x", "--json", o], "--weight"),
        (
            vec![g, "--a", a, "--b", b, "--weight", "layers.1", "--json", o],
            "LAYER=PARAM",
        ),
        (
            vec![g, "--a", a, "--b", b, "--weight", "fc=w", "--json", o],
            "`fc`",
        ),
        (
            vec![
                g,
                "--a",
                a,
                "--b",
                b,
                "--weight",
                "layers.1=nope.weight",
                "--json",
                o,
            ],
            "nope.weight",
        ),
        (
            vec![
                g,
                "--a",
                a,
                "--b",
                b,
                "--weight",
                "layers.1=layers.0.bias",
                "--json",
                o,
            ],
            "[out, in]",
        ),
        (
            vec![
                g,
                "--a",
                a,
                "--b",
                b,
                "--weight",
                "layers.1=layers.0.weight",
                "--json",
                o,
            ],
            "layers.1",
        ),
        (
            vec![g, "--a", a, "--b", s(&corrupt), "--json", o],
            "corrupt.npz",
        ),
        (vec![g, "--json", s(&missing_dir)], "missing-dir"),
    ];
    for (args, needle) in cases {
        let (ok, stdout, stderr) = run(&args);
        assert!(!ok, "{args:?} should fail: {stdout}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: {stderr}");
        assert!(
            lines[0].starts_with("llfc_report: error: "),
            "{args:?}: {stderr}"
        );
        assert!(lines[0].contains(needle), "{args:?}: {stderr}");
        assert!(!out.exists(), "{args:?} left output");
        assert_eq!(
            std::fs::read_dir(d).unwrap().count(),
            inputs,
            "{args:?} left a file"
        );
    }
}

/// Whether `python3` with NumPy can run here.
fn python_with_numpy() -> bool {
    Command::new("python3")
        .args(["-c", "import numpy"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn python(args: &[&str]) {
    let out = Command::new("python3")
        .args(args)
        .env("PYTHONDONTWRITEBYTECODE", "1") // nothing written into examples/python
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python3 {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `export_state_dict.py` → `export_features.py` → `llfc_report`, against the library's
/// `llfc_report_mlp` on the same models (NumPy's products differ from ndarray's in rounding, so
/// to `1e-9` absolute plus relative).
#[test]
fn python_export_then_report_agrees_with_the_library() {
    if !python_with_numpy() {
        eprintln!("note: python3 with numpy not found; skipping the Python end-to-end test");
        return;
    }
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/python");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let fx = fixture(14);
    // NumPy-only path of the state-dict export: an .npz of arrays → safetensors.
    io::write_params(d.join("a_raw.npz"), &fx.a).unwrap();
    io::write_params(d.join("b_raw.npz"), &fx.b).unwrap();
    for m in ["a", "b"] {
        python(&[
            s(&scripts.join("export_state_dict.py")),
            s(&d.join(format!("{m}_raw.npz"))),
            s(&d.join(format!("{m}.safetensors"))),
        ]);
    }
    let (pa, pb) = (d.join("a.safetensors"), d.join("b.safetensors"));
    assert_eq!(
        io::read_params::<f64>(&pa).unwrap(),
        fx.a,
        "names, order and values kept"
    );
    assert_eq!(io::read_params::<f64>(&pb).unwrap(), fx.b);
    io::write_npy(d.join("x.npy"), &fx.x).unwrap();
    let (features, fa, fb) = (d.join("f.npz"), d.join("fa.npz"), d.join("fb.npz"));
    python(&[
        s(&scripts.join("export_features.py")),
        "--a",
        s(&pa),
        "--b",
        s(&pb),
        "--x",
        s(&d.join("x.npy")),
        "--alphas",
        "0.25,0.5,0.75",
        "--out",
        s(&features),
        "--perm-features-a",
        s(&fa),
        "--perm-features-b",
        s(&fb),
    ]);
    let json = d.join("r.json");
    let (ok, _, stderr) = run(&[
        s(&features),
        "--a",
        s(&pa),
        "--b",
        s(&pb),
        "--json",
        s(&json),
    ]);
    assert!(ok, "{stderr}");
    let report = read_json(&json);
    let tol = Tol {
        abs: 1e-9,
        rel: 1e-9,
    };
    let lib = llfc_report_mlp(&fx.a, &fx.b, &fx.x, &ALPHAS, CosineVariant::Signed).unwrap();
    let layers = report["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3);
    for (l, j) in layers.iter().enumerate() {
        assert_eq!(j["name"], format!("layers.{l}"));
        let post: Vec<_> = (0..3)
            .map(|i| lib.layer(i, l, FeatureKind::Post).unwrap().clone())
            .collect();
        check_kind(&j["post"], &post, tol, "post");
        check_comm(
            &j["commutativity"],
            &lib.commutativity[l],
            tol,
            "commutativity",
        );
        if l < 2 {
            let pre: Vec<_> = (0..3)
                .map(|i| lib.layer(i, l, FeatureKind::Pre).unwrap().clone())
                .collect();
            check_kind(&j["pre"], &pre, tol, "pre");
            let weak: Vec<_> = (0..3).map(|i| lib.weak_additivity[i][l].clone()).collect();
            check_weak(&j["weak_additivity"], &weak, tol, "weak additivity");
        }
    }
    // The per-permutation files for `align --method activation`: P_i = post-activation i.
    for (path, params) in [(&fa, &fx.a), (&fb, &fx.b)] {
        let f = mlp::forward_features(params, &fx.x).unwrap();
        let got = io::read_npz_arrays::<f64>(path).unwrap();
        assert_eq!(got.keys().collect::<Vec<_>>(), ["P_0", "P_1"]);
        for (l, want) in f.post[..2].iter().enumerate() {
            let diff = (&got[&format!("P_{l}")] - &want.view().into_dyn())
                .iter()
                .fold(0.0f64, |m, v| m.max(v.abs()));
            assert!(diff < 1e-12, "P_{l}: {diff:e}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Issue 10: the JSON output never aliases an input, every failure leaves every file as it was,
// non-regular and duplicate-keyed inputs are refused, features of any scale are measured.
// ---------------------------------------------------------------------------------------------

use super::cli_support::{assert_failures_touch_nothing, run_example, strings};

/// Items 1, 4, 6 and the per-CLI guarantee: aliasing `--json` (same path, symbolic or hard
/// link, a checkpoint given to `--a`/`--b`), non-regular inputs, duplicate keys and the other
/// bad inputs fail in one line, exit status 1, and change no file (bytes, mtime) of the
/// directory, an existing report included.
#[test]
fn failures_touch_no_file_and_json_never_aliases_an_input() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let fx = fixture(17);
    let (features, pa, pb) = fx.write(d);
    let report = d.join("report.json");
    std::fs::write(&report, "{}\n").unwrap(); // an existing output: must survive failures
    let link = d.join("link.npz");
    std::os::unix::fs::symlink(&features, &link).unwrap();
    let hard = d.join("hard.safetensors");
    std::fs::hard_link(&pb, &hard).unwrap();
    let zero = d.join("zero.npz");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let sub = d.join("sub.npz");
    std::fs::create_dir(&sub).unwrap();
    // `A/layers.0` twice: the zip crate kept the second copy (every sample was skipped).
    let dup = d.join("dup.npz");
    let mut arrays: Arrays = fx.arrays.clone();
    let b0 = fx.get("B/layers.0").clone();
    arrays.retain(|(k, _)| k != "B/layers.0");
    arrays.push(("A/layers.X".into(), ArrayD::zeros(IxDyn(b0.shape()))));
    io::write_npz_arrays(&dup, arrays.iter().map(|(k, v)| (k, v))).unwrap();
    let mut bytes = std::fs::read(&dup).unwrap();
    let (from, to) = (b"A/layers.X.npy", b"A/layers.0.npy");
    for i in 0..bytes.len() - from.len() {
        if &bytes[i..i + from.len()] == from {
            bytes[i..i + from.len()].copy_from_slice(to);
        }
    }
    std::fs::write(&dup, bytes).unwrap();
    let f = s(&features);
    let ab = ["--a", s(&pa), "--b", s(&pb)];
    let with = |first: &[&str], rest: &[&str]| {
        let mut v = strings(first);
        v.extend(strings(rest));
        v
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (strings(&[f, "--json", f]), "same file as input"),
        (strings(&[f, "--json", s(&link)]), "same file as input"),
        (strings(&[s(&link), "--json", f]), "same file as input"),
        (with(&[f, "--json", s(&pa)], &ab), "same file as input"),
        (with(&[f, "--json", s(&hard)], &ab), "same file as input"),
        (strings(&[f, "--json", s(&sub)]), "is a directory"),
        (
            strings(&[f, "--json", s(&d.join("no").join("r.json"))]),
            "does not exist",
        ),
        (
            strings(&["/dev/zero", "--json", s(&report)]),
            "not a regular file",
        ),
        (
            strings(&[s(&zero), "--json", s(&report)]),
            "not a regular file",
        ),
        (
            strings(&[s(&sub), "--json", s(&report)]),
            "not a regular file",
        ),
        (strings(&[s(&dup), "--json", s(&report)]), "two entries"),
        (
            with(
                &[f, "--json", s(&report), "--a", s(&zero)],
                &["--b", s(&pb)],
            ),
            "not a regular file",
        ),
        (
            strings(&[f, "--json", s(&report), "--alphas", "0.3"]),
            "0.3",
        ),
        (strings(&[f, "--json", s(&report), "--bogus"]), "--bogus"),
        (strings(&[]), "FEATURES"),
    ];
    assert_failures_touch_nothing("llfc_report", d, &cases);
    let run = run_example("llfc_report", &[f, "--json", s(&report)]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(read_json(&report)["layers"].is_array());
}

/// Item 7: features scaled by 1e200 and 1e-170 (squares out of f64's range) give the report of
/// the unscaled features: no `null`, nothing skipped but the fixture's zero sample.
#[test]
fn features_of_extreme_scale_give_the_same_report() {
    let dir = tempfile::tempdir().unwrap();
    let fx = fixture(19);
    let base = dir.path().join("base.npz");
    io::write_npz_arrays(&base, fx.arrays.iter().map(|(k, v)| (k, v))).unwrap();
    let reference = {
        let out = dir.path().join("base.json");
        assert_eq!(
            run_example("llfc_report", &[s(&base), "--json", s(&out)]).code,
            Some(0)
        );
        read_json(&out)
    };
    for scale in [1e200, 1e-170] {
        let path = dir.path().join("scaled.npz");
        let scaled: Arrays = fx
            .arrays
            .iter()
            .map(|(k, v)| (k.clone(), v * scale))
            .collect();
        io::write_npz_arrays(&path, scaled.iter().map(|(k, v)| (k, v))).unwrap();
        let out = dir.path().join("scaled.json");
        let run = run_example("llfc_report", &[s(&path), "--json", s(&out)]);
        assert_eq!(run.code, Some(0), "{}", run.stderr);
        let json = read_json(&out);
        for (layer, ref_layer) in json["layers"]
            .as_array()
            .unwrap()
            .iter()
            .zip(reference["layers"].as_array().unwrap())
        {
            for (row, ref_row) in layer["post"]["alphas"]
                .as_array()
                .unwrap()
                .iter()
                .zip(ref_layer["post"]["alphas"].as_array().unwrap())
            {
                for key in ["mean", "skipped", "count"] {
                    let (v, r) = (&row["distance"][key], &ref_row["distance"][key]);
                    let (v, r) = (v.as_f64().unwrap(), r.as_f64().unwrap());
                    // 1 − cos of O(1) features in ≤ 18 terms: 1e-12 relative.
                    assert!(
                        (v - r).abs() <= 1e-12 * (1.0 + r.abs()),
                        "{scale}: {key} {v} vs {r}"
                    );
                }
                let (c, rc) = (
                    row["matrix_c"].as_f64().unwrap(),
                    ref_row["matrix_c"].as_f64().unwrap(),
                );
                assert!((c - rc).abs() <= 1e-12 * rc.abs(), "{scale}: c {c} vs {rc}");
            }
        }
    }
}

/// Pre-activations without a negative entry (post-ReLU values recorded by a hook before an
/// in-place ReLU) give a warning on stderr naming the array; real pre-activations give none.
#[test]
fn post_relu_values_in_pre_arrays_are_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let mut fx = fixture(21);
    let (f, _, _) = fx.write(dir.path());
    let (ok, _, err) = run(&[s(&f), "--layers", "layers.0"]);
    assert!(ok, "{err}");
    assert!(!err.contains("warning"), "{err}");
    // Replace pre/A/layers.0 by its ReLU, as the broken hook recorded it.
    for (k, v) in &mut fx.arrays {
        if k == "pre/A/layers.0" {
            v.mapv_inplace(|z| z.max(0.0));
        }
    }
    let (f, _, _) = fx.write(dir.path());
    let (ok, _, err) = run(&[s(&f), "--layers", "layers.0"]);
    assert!(ok, "{err}");
    assert!(
        err.contains("warning") && err.contains("`pre/A/layers.0` has no negative entry"),
        "{err}"
    );
    assert!(!err.contains("pre/B/layers.0"), "{err}");
}
