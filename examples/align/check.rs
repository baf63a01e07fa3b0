//! `align`'s function check: the spec is a symmetry, and the aligned B computes what B computes.

use llfc::spec::{Builtin, ResNetLayout, ResNetNaming, VggLayout};
use llfc::{mlp, Error, Params, PermutationSpec};
use ndarray::{Array2, Array4, ArrayD, Ix2, Ix4};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::cli::CliError;
use crate::cnn;

/// Tolerance of the function check: absolute, on outputs computed in f64 (a permutation only
/// reorders the terms of sums, ~1e-16 relative).
pub(crate) const CHECK_TOL: f64 = 1e-8;

/// A reference forward pass `align` can run.
pub(crate) enum Forward {
    /// `llfc::mlp::forward`.
    Mlp,
    /// `cnn::vgg_forward`.
    Vgg(VggLayout),
    /// `cnn::resnet_forward`.
    ResNet(ResNetLayout),
}

impl Forward {
    /// Random inputs for the model: 64 rows for an MLP, two 32×32 images for a CNN.
    fn inputs(&self, params: &Params<f64>, rng: &mut ChaCha8Rng) -> Result<ArrayD<f64>, Error> {
        let mut draw =
            |shape: &[usize]| ArrayD::from_shape_fn(shape, |_| rng.random_range(-2.0..2.0));
        Ok(match self {
            Self::Mlp => draw(&[64, mlp::widths(params)?[0]]),
            Self::Vgg(l) => {
                let first = format!("features.{}.weight", l.convs[0]);
                draw(&[2, params.require(&first)?.shape()[1], 32, 32])
            }
            Self::ResNet(_) => draw(&[2, params.require("conv1.weight")?.shape()[1], 32, 32]),
        })
    }

    fn run(&self, params: &Params<f64>, x: &ArrayD<f64>) -> Result<Array2<f64>, Error> {
        let shape_error = |rank: usize| Error::ShapeMismatch {
            what: "check inputs".into(),
            expected: vec![0; rank],
            found: x.shape().to_vec(),
        };
        match self {
            Self::Mlp => {
                let x = x
                    .view()
                    .into_dimensionality::<Ix2>()
                    .map_err(|_| shape_error(2))?;
                mlp::forward(params, &x)
            }
            Self::Vgg(l) => {
                let x: Array4<f64> = x
                    .clone()
                    .into_dimensionality::<Ix4>()
                    .map_err(|_| shape_error(4))?;
                cnn::vgg_forward(params, l, &x)
            }
            Self::ResNet(l) => {
                let x: Array4<f64> = x
                    .clone()
                    .into_dimensionality::<Ix4>()
                    .map_err(|_| shape_error(4))?;
                cnn::resnet_forward(params, l, &x)
            }
        }
    }
}

/// The reference forward for B's model: the MLP whenever the checkpoint is one, the CNN
/// builtins' forwards with `--check`.
pub(crate) fn reference_forward(
    spec: &str,
    params: &Params<f64>,
    check: bool,
) -> Result<Option<Forward>, CliError> {
    if mlp::widths(params).is_ok() {
        return Ok(Some(Forward::Mlp));
    }
    if !check {
        return Ok(None);
    }
    // A builtin names its family; any other spec (JSON, `resnet20`) is checked with the family
    // its checkpoint's names belong to.
    let has = |k: &str| params.contains(k);
    let forward = match spec.parse::<Builtin>() {
        Ok(Builtin::TorchvisionVgg { .. } | Builtin::LlfcVgg { .. }) => {
            Forward::Vgg(VggLayout::from_params(params)?)
        }
        Ok(Builtin::TorchvisionResNet(_)) => {
            Forward::ResNet(ResNetLayout::from_params(params, ResNetNaming::Torchvision)?)
        }
        Ok(Builtin::CifarResNet(_)) => {
            Forward::ResNet(ResNetLayout::from_params(params, ResNetNaming::Cifar)?)
        }
        _ if has("features.0.weight") && has("classifier.0.weight") => {
            Forward::Vgg(VggLayout::from_params(params)?)
        }
        _ if has("layer1.0.conv1.weight") && (has("fc.weight") || has("linear.weight")) => {
            let naming = if has("fc.weight") {
                ResNetNaming::Torchvision
            } else {
                ResNetNaming::Cifar
            };
            Forward::ResNet(ResNetLayout::from_params(params, naming)?)
        }
        _ => {
            return Err(CliError::Usage(format!(
                "--check: no reference forward for the model of spec `{spec}` (it covers MLPs `layers.{{i}}.*` and the torchvision / LLFC-code VGGs (`features.N`, `classifier.M`) and ResNets (`layer{{s}}.{{b}}.conv{{k}}`, `fc` or `linear`))"
            )))
        }
    };
    Ok(Some(forward))
}

/// Check that the spec is a symmetry of the model and that the aligned B computes what B
/// computes; the summary line, or an error that stops `align` before it writes anything.
pub(crate) fn check_function(
    forward: &Forward,
    spec: &PermutationSpec,
    b: &Params<f64>,
    aligned: &Params<f64>,
    seed: u64,
) -> Result<String, CliError> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let x = forward.inputs(b, &mut rng)?;
    let report = spec.check_invariance(b, |p, x| forward.run(p, x), &x, CHECK_TOL, &mut rng)?;
    if !report.passed() {
        return Err(CliError::Usage(format!(
            "refusing to write: the spec is not a symmetry of the model. {report}"
        )));
    }
    let (y, y_aligned) = (forward.run(b, &x)?, forward.run(aligned, &x)?);
    let diff = (&y - &y_aligned).iter().fold(0.0_f64, |m, d| {
        if d.is_nan() {
            f64::INFINITY
        } else {
            m.max(d.abs())
        }
    });
    if diff > CHECK_TOL {
        return Err(CliError::Usage(format!(
            "refusing to write: the aligned B computes another function (max |Δoutput| = {diff:.3e} > {CHECK_TOL:.0e})"
        )));
    }
    // A model whose outputs do not depend on its input (dead units) passes any spec.
    let first = y.row(0);
    let spread = y
        .rows()
        .into_iter()
        .flat_map(|r| {
            r.iter()
                .zip(first.iter())
                .map(|(a, b)| (a - b).abs())
                .collect::<Vec<_>>()
        })
        .fold(0.0_f64, f64::max);
    let note = if spread <= CHECK_TOL {
        " - INCONCLUSIVE: the outputs do not depend on the inputs"
    } else {
        ""
    };
    Ok(format!(
        "passed (aligned B vs B: max |Δoutput| {diff:.1e}; random permutations through the spec: {:.1e}; {} random inputs, tolerance {CHECK_TOL:.0e}){note}",
        report.max_abs_diff,
        x.shape()[0]
    ))
}
