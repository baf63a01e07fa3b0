//! End-to-end tests of `llfc_report`'s attribution and convolutional layers: the JSON equals
//! the library's `metrics::attribution` and `conv_commutativity` computed directly on the same
//! arrays, and bad flags or missing arrays give a one-line error and no output.
#![cfg(feature = "io")]

use std::path::Path;

use super::cli_support::run_example;

use llfc::metrics::attribution::{
    local_split_activation, local_split_conv, local_split_dense, ConvLayer, DenseLayer, LocalSplit,
};
use llfc::metrics::{conv2d, conv_commutativity, ConvGeometry};
use llfc::mlp;
use llfc::{io, Params};
use ndarray::{Array2, Array4, ArrayD, Ix1, Ix2, Ix4, IxDyn};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

/// `(success, stdout, stderr)` of `llfc_report args`.
fn run(args: &[&str]) -> (bool, String, String) {
    let out = run_example("llfc_report", args);
    (out.code == Some(0), out.stdout, out.stderr)
}

const LABELS: [&str; 2] = ["0.25", "0.5"];
const GEOMETRY: ConvGeometry = ConvGeometry {
    stride: [2, 1],
    padding: [1, 1],
    dilation: [1, 2],
    groups: 2,
};
const GEOMETRY_FLAG: &str = "conv=groups:2,stride:2x1,padding:1,dilation:1x2";

/// An MLP layer chain and a grouped conv layer, with every array the attribution needs.
struct Fixture {
    a: Params<f64>,
    b: Params<f64>,
    arrays: Vec<(String, ArrayD<f64>)>,
}

fn random4(rng: &mut ChaCha8Rng, shape: (usize, usize, usize, usize)) -> Array4<f64> {
    Array4::from_shape_simple_fn(shape, || rng.random_range(-1.0..1.0))
}

fn fixture() -> Fixture {
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let widths = [5, 12, 10, 4];
    let mut a: Params<f64> = mlp::init(&widths, &mut rng).unwrap();
    let mut b: Params<f64> = mlp::init(&widths, &mut rng).unwrap();
    let x = Array2::from_shape_fn((30, 5), |_| rng.random_range(-2.0..2.0));
    let (fa, fb) = (
        mlp::forward_features(&a, &x).unwrap(),
        mlp::forward_features(&b, &x).unwrap(),
    );
    let ft: Vec<_> = LABELS
        .iter()
        .map(|l| {
            mlp::forward_features(&a.interpolate(&b, l.parse().unwrap()).unwrap(), &x).unwrap()
        })
        .collect();
    let mut arrays: Vec<(String, ArrayD<f64>)> = Vec::new();
    let mut push = |k: String, v: ArrayD<f64>| arrays.push((k, v));
    for l in 0..3 {
        push(format!("A/layers.{l}"), fa.post[l].clone().into_dyn());
        push(format!("B/layers.{l}"), fb.post[l].clone().into_dyn());
        for (t, label) in ft.iter().zip(LABELS) {
            push(
                format!("alpha={label}/layers.{l}"),
                t.post[l].clone().into_dyn(),
            );
        }
        let input = |f: &mlp::Features<f64>| {
            if l == 0 {
                x.clone()
            } else {
                f.post[l - 1].clone()
            }
        };
        push(format!("in/A/layers.{l}"), input(&fa).into_dyn());
        push(format!("in/B/layers.{l}"), input(&fb).into_dyn());
        for (t, label) in ft.iter().zip(LABELS) {
            push(format!("in/alpha={label}/layers.{l}"), input(t).into_dyn());
        }
        if l < 2 {
            push(format!("pre/A/layers.{l}"), fa.pre[l].clone().into_dyn());
            push(format!("pre/B/layers.{l}"), fb.pre[l].clone().into_dyn());
            for (t, label) in ft.iter().zip(LABELS) {
                push(
                    format!("pre/alpha={label}/layers.{l}"),
                    t.pre[l].clone().into_dyn(),
                );
            }
        }
    }
    // A grouped conv layer `conv` (weights [6, 2, 3, 2] on 4 input channels, groups 2).
    let (wa, wb) = (
        random4(&mut rng, (6, 2, 3, 2)),
        random4(&mut rng, (6, 2, 3, 2)),
    );
    let bias = |rng: &mut ChaCha8Rng| {
        ndarray::Array1::from_shape_simple_fn(6, || rng.random_range(-1.0..1.0))
    };
    let (ba, bb) = (bias(&mut rng), bias(&mut rng));
    let (ha, hb) = (
        random4(&mut rng, (7, 4, 6, 5)),
        random4(&mut rng, (7, 4, 6, 5)),
    );
    let out = |w: &Array4<f64>, h: &Array4<f64>| {
        conv2d(w.view(), h.view(), &GEOMETRY).unwrap().into_dyn()
    };
    push("A/conv".into(), out(&wa, &ha));
    push("B/conv".into(), out(&wb, &hb));
    push("in/A/conv".into(), ha.clone().into_dyn());
    push("in/B/conv".into(), hb.clone().into_dyn());
    for label in LABELS {
        let h = random4(&mut rng, (7, 4, 6, 5));
        push(format!("alpha={label}/conv"), out(&wa, &h));
        push(format!("in/alpha={label}/conv"), h.into_dyn());
    }
    a.insert("conv.weight", wa.into_dyn());
    b.insert("conv.weight", wb.into_dyn());
    a.insert("conv.bias", ba.into_dyn());
    b.insert("conv.bias", bb.into_dyn());
    // A linear layer `fc` reading conv maps [7, 6, 3, 5], flattened per sample (no bias).
    let mut fc_arrays: Vec<(String, Vec<usize>)> = vec![
        ("A/fc".into(), vec![7, 3]),
        ("B/fc".into(), vec![7, 3]),
        ("in/A/fc".into(), vec![7, 6, 3, 5]),
        ("in/B/fc".into(), vec![7, 6, 3, 5]),
    ];
    for l in LABELS {
        fc_arrays.push((format!("alpha={l}/fc"), vec![7, 3]));
        fc_arrays.push((format!("in/alpha={l}/fc"), vec![7, 6, 3, 5]));
    }
    for (key, shape) in fc_arrays {
        push(
            key,
            ArrayD::from_shape_simple_fn(IxDyn(&shape), || rng.random_range(-1.0..1.0)),
        );
    }
    for p in [&mut a, &mut b] {
        let w = ArrayD::from_shape_simple_fn(IxDyn(&[3, 90]), || rng.random_range(-0.2..0.2));
        p.insert("fc.weight", w);
    }
    Fixture { a, b, arrays }
}

impl Fixture {
    fn get(&self, key: &str) -> &ArrayD<f64> {
        &self.arrays.iter().find(|(k, _)| k == key).unwrap().1
    }

    fn write(&self, dir: &Path, skip: &[&str]) -> [String; 3] {
        let (f, a, b) = (
            dir.join("f.npz"),
            dir.join("a.safetensors"),
            dir.join("b.safetensors"),
        );
        let kept = self
            .arrays
            .iter()
            .filter(|(k, _)| !skip.contains(&k.as_str()));
        io::write_npz_arrays(&f, kept.map(|(k, v)| (k, v))).unwrap();
        io::write_params(&a, &self.a).unwrap();
        io::write_params(&b, &self.b).unwrap();
        [f, a, b].map(|p| p.to_str().unwrap().to_string())
    }
}

/// `|json − lib| ≤ 4 ulps` (the JSON holds shortest round-trip decimals).
fn num(json: &Value, lib: Option<f64>, what: &str) {
    match (json.as_f64(), lib) {
        (None, None) => assert!(json.is_null(), "{what}: {json}"),
        (Some(x), Some(y)) => assert!(
            (x - y).abs() <= 4.0 * f64::EPSILON * x.abs().max(y.abs()),
            "{what}: JSON {x:e}, library {y:e}"
        ),
        (x, y) => panic!("{what}: JSON {x:?}, library {y:?}"),
    }
}

fn check_split(json: &Value, lib: &LocalSplit, what: &str) {
    num(&json["alpha"], Some(lib.alpha), what);
    num(&json["norm"], Some(lib.norm), what);
    num(&json["reference_norm"], Some(lib.reference_norm), what);
    num(&json["relative"], lib.relative, what);
    num(&json["closure"], lib.closure, what);
    for (key, part) in [("propagated", &lib.propagated), ("own", &lib.own)] {
        num(
            &json[key]["norm"],
            Some(part.norm),
            &format!("{what}.{key}"),
        );
        num(
            &json[key]["inner"],
            Some(part.inner),
            &format!("{what}.{key}"),
        );
        num(&json[key]["share"], part.share, &format!("{what}.{key}"));
    }
}

fn layer<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == name)
        .unwrap()
}

fn dense(p: &Params<f64>, l: usize) -> DenseLayer<'_, f64> {
    DenseLayer {
        weight: p[&format!("layers.{l}.weight")]
            .view()
            .into_dimensionality::<Ix2>()
            .unwrap(),
        bias: Some(
            p[&format!("layers.{l}.bias")]
                .view()
                .into_dimensionality::<Ix1>()
                .unwrap(),
        ),
    }
}

fn w(p: &Params<f64>) -> ndarray::ArrayView4<'_, f64> {
    p["conv.weight"]
        .view()
        .into_dimensionality::<Ix4>()
        .unwrap()
}

fn conv(p: &Params<f64>) -> ConvLayer<'_, f64> {
    ConvLayer {
        weight: w(p),
        bias: Some(p["conv.bias"].view().into_dimensionality::<Ix1>().unwrap()),
    }
}

#[test]
fn attribution_and_conv_json_equal_the_library() {
    let fx = fixture();
    let dir = tempfile::tempdir().unwrap();
    let files = fx.write(dir.path(), &[]);
    let json = dir.path().join("r.json");
    let (ok, stdout, stderr) = run(&with_files(&files, &["--json", json.to_str().unwrap()]));
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("LLFC error attribution of the pre-activations"),
        "{stdout}"
    );
    assert!(
        stdout.contains("LLFC error attribution of the ReLU"),
        "{stdout}"
    );
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let m = |k: &str| fx.get(k).view().into_dimensionality::<Ix2>().unwrap();
    for l in 0..3 {
        let name = format!("layers.{l}");
        let j = layer(&report, &name);
        assert!(j["conv"].is_null());
        let pre = j["attribution"]["pre"].as_array().unwrap();
        assert_eq!(pre.len(), 2);
        for (jp, label) in pre.iter().zip(LABELS) {
            let lib = local_split_dense(
                dense(&fx.a, l),
                dense(&fx.b, l),
                m(&format!("in/A/{name}")),
                m(&format!("in/B/{name}")),
                m(&format!("in/alpha={label}/{name}")),
                label.parse().unwrap(),
            )
            .unwrap();
            check_split(jp, &lib, &format!("{name} pre α={label}"));
            if l > 0 {
                assert!(lib.closure.unwrap() < 1e-12 && lib.norm > 0.0);
            }
        }
        let act = &j["attribution"]["activation"];
        if l < 2 {
            for (ja, label) in act.as_array().unwrap().iter().zip(LABELS) {
                let lib = local_split_activation(
                    fx.get(&format!("pre/A/{name}")),
                    fx.get(&format!("pre/B/{name}")),
                    fx.get(&format!("pre/alpha={label}/{name}")),
                    label.parse().unwrap(),
                )
                .unwrap();
                check_split(ja, &lib, &format!("{name} activation α={label}"));
            }
        } else {
            assert!(act.is_null());
        }
    }
    // The conv layer: commutativity, geometry and attribution.
    let j = layer(&report, "conv");
    let t = |k: &str| fx.get(k).view().into_dimensionality::<Ix4>().unwrap();
    let c = conv_commutativity(
        w(&fx.a),
        w(&fx.b),
        t("in/A/conv"),
        t("in/B/conv"),
        &GEOMETRY,
    )
    .unwrap();
    num(&j["commutativity"]["relative"], c.relative, "conv relative");
    num(&j["commutativity"]["vanilla"], c.vanilla, "conv vanilla");
    num(&j["commutativity"]["baseline"], c.baseline, "conv baseline");
    num(
        &j["commutativity"]["residual_norm"],
        Some(c.residual_norm),
        "conv norm",
    );
    assert_eq!(j["conv"]["stride"], serde_json::json!([2, 1]));
    assert_eq!(j["conv"]["padding"], serde_json::json!([1, 1]));
    assert_eq!(j["conv"]["dilation"], serde_json::json!([1, 2]));
    assert_eq!(j["conv"]["groups"], 2);
    for (jp, label) in j["attribution"]["pre"]
        .as_array()
        .unwrap()
        .iter()
        .zip(LABELS)
    {
        let lib = local_split_conv(
            conv(&fx.a),
            conv(&fx.b),
            t("in/A/conv"),
            t("in/B/conv"),
            t(&format!("in/alpha={label}/conv")),
            label.parse().unwrap(),
            &GEOMETRY,
        )
        .unwrap();
        check_split(jp, &lib, &format!("conv α={label}"));
    }
    // The linear layer fed by conv maps reads them flattened per sample.
    let j = layer(&report, "fc");
    let flat = |k: &str| {
        let a = fx.get(k);
        a.clone().into_shape_with_order((a.shape()[0], 90)).unwrap()
    };
    let fc = |p: &Params<f64>| p["fc.weight"].clone().into_dimensionality::<Ix2>().unwrap();
    let (wa, wb) = (fc(&fx.a), fc(&fx.b));
    let (ha, hb) = (flat("in/A/fc"), flat("in/B/fc"));
    let c = llfc::metrics::commutativity(wa.view(), wb.view(), ha.view(), hb.view()).unwrap();
    num(&j["commutativity"]["relative"], c.relative, "fc relative");
    for (jp, label) in j["attribution"]["pre"]
        .as_array()
        .unwrap()
        .iter()
        .zip(LABELS)
    {
        let lib = local_split_dense(
            DenseLayer {
                weight: wa.view(),
                bias: None,
            },
            DenseLayer {
                weight: wb.view(),
                bias: None,
            },
            ha.view(),
            hb.view(),
            flat(&format!("in/alpha={label}/fc")).view(),
            label.parse().unwrap(),
        )
        .unwrap();
        check_split(jp, &lib, &format!("fc α={label}"));
    }
}

#[test]
fn bad_attribution_inputs_fail_cleanly_without_output() {
    let fx = fixture();
    let dir = tempfile::tempdir().unwrap();
    let [f, a, b] = fx.write(dir.path(), &[]);
    let json = dir.path().join("r.json");
    let j = json.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--conv", "conv=stride:0"], "at least 1"),
        (vec!["--conv", "conv=size:3"], "unknown key `size`"),
        (vec!["--conv", "conv=stride:2,stride:1"], "given twice"),
        (
            vec!["--conv", "conv=stride:two"],
            "not a non-negative integer",
        ),
        (vec!["--conv", "nowhere=stride:1"], "not a reported layer"),
        (vec!["--conv", "layers.0=stride:1"], "not a conv weight"),
        (
            vec!["--conv", GEOMETRY_FLAG, "--conv", GEOMETRY_FLAG],
            "given twice",
        ),
        // Without the geometry the grouped weight does not fit the 4 input channels.
        (vec![], "groups"),
        (
            vec!["--conv", "conv=groups:2,dilation:9"],
            "no output position",
        ),
    ];
    for (flags, message) in cases {
        let mut args = vec![f.as_str(), "--a", &a, "--b", &b, "--json", j];
        args.extend(flags.iter().copied());
        let (ok, _, stderr) = run(&args);
        assert!(!ok && stderr.contains(message), "{flags:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(!json.exists());
    }
    // --conv needs checkpoints.
    let (ok, _, stderr) = run(&[&f, "--conv", GEOMETRY_FLAG]);
    assert!(
        !ok && stderr.contains("--conv needs the checkpoints"),
        "{stderr}"
    );
    // An input of θ(α) for one α but not the other.
    let files = fx.write(dir.path(), &["in/alpha=0.5/layers.1"]);
    fails(&files, &[], "in/alpha=0.5/layers.1", &json);
    // Reporting only α = 0.25 needs only that α's inputs.
    let (ok, stdout, stderr) = run(&with_files(&files, &["--alphas", "0.25"]));
    assert!(ok, "{stderr}");
    assert!(stdout.contains("LLFC error attribution"));
    // Inputs of the wrong shape for a conv layer.
    let mut bad = fixture();
    let flat = bad
        .get("in/alpha=0.25/conv")
        .clone()
        .into_shape_with_order(IxDyn(&[7, 120]))
        .unwrap();
    bad.arrays.retain(|(k, _)| k != "in/alpha=0.25/conv");
    bad.arrays.push(("in/alpha=0.25/conv".into(), flat));
    fails(
        &bad.write(dir.path(), &[]),
        &[],
        "in/alpha=0.25/conv",
        &json,
    );
}

/// `FEATURES --a A --b B --conv GEOMETRY` and `extra`.
fn with_files<'a>([f, a, b]: &'a [String; 3], extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![f.as_str(), "--a", a, "--b", b, "--conv", GEOMETRY_FLAG];
    args.extend_from_slice(extra);
    args
}

/// The report with `extra` flags and `--json json` fails with one line naming `message`,
/// and writes nothing.
fn fails(files: &[String; 3], extra: &[&str], message: &str, json: &Path) {
    let mut extra = extra.to_vec();
    extra.extend(["--json", json.to_str().unwrap()]);
    let (ok, _, stderr) = run(&with_files(files, &extra));
    assert!(!ok && stderr.contains(message), "{extra:?}: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(!json.exists());
}
