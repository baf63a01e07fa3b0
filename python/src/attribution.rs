//! LLFC error attribution (`llfc::metrics::attribution`) and the convolution metrics
//! (`llfc::metrics::{conv2d, conv_commutativity}`).

use llfc::metrics::attribution::{
    self, Activation, Attribution, AttributionOptions, ConvLayer, DenseLayer, Deviation,
    LocalSplit, Part,
};
use llfc::metrics::{self, ConvGeometry};
use llfc::Float;
use ndarray::{Array1, Array2};
use numpy::IntoPyArray;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::convert::{owned, params, Array2F, Array4F, ArrayDF, FloatArray};
use crate::errors::{bad_choice, ToPy};
use crate::metrics::commutativity_dict;
use crate::{with_floats, with_pair};

type Items<'py> = Vec<(String, ArrayDF<'py>)>;
/// A layer's weight and optional bias, as the Python layer passes them.
type LayerArgs<'py, D> = (FloatArray<'py, D>, Option<FloatArray<'py, ndarray::Ix1>>);

fn part_dict<'py>(py: Python<'py>, p: &Part) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("norm", p.norm)?;
    d.set_item("inner", p.inner)?;
    d.set_item("share", p.share)?;
    Ok(d)
}

fn deviation_dict<'py>(py: Python<'py>, v: &Deviation) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("norm", v.norm)?;
    d.set_item("reference_norm", v.reference_norm)?;
    d.set_item("relative", v.relative)?;
    d.set_item("closure", v.closure)?;
    let parts = PyDict::new(py);
    for c in &v.contributions {
        parts.set_item(c.source.to_string(), part_dict(py, &c.part)?)?;
    }
    d.set_item("contributions", parts)?;
    Ok(d)
}

fn attribution_dict<'py>(py: Python<'py>, a: &Attribution) -> PyResult<Bound<'py, PyDict>> {
    let layers = a
        .layers
        .iter()
        .map(|row| {
            row.iter()
                .map(|l| {
                    let d = PyDict::new(py);
                    d.set_item("layer", l.layer)?;
                    d.set_item("alpha", l.alpha)?;
                    d.set_item("pre", deviation_dict(py, &l.pre)?)?;
                    d.set_item("post", deviation_dict(py, &l.post)?)?;
                    Ok(d)
                })
                .collect::<PyResult<Vec<_>>>()
        })
        .collect::<PyResult<Vec<_>>>()?;
    let d = PyDict::new(py);
    d.set_item("alphas", a.alphas.clone())?;
    let sources: Vec<String> = a.sources.iter().map(ToString::to_string).collect();
    d.set_item("sources", sources)?;
    d.set_item("layers", layers)?;
    d.set_item("samples", a.samples)?;
    Ok(d)
}

fn split_dict<'py>(py: Python<'py>, s: &LocalSplit) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("alpha", s.alpha)?;
    d.set_item("norm", s.norm)?;
    d.set_item("reference_norm", s.reference_norm)?;
    d.set_item("relative", s.relative)?;
    d.set_item("closure", s.closure)?;
    d.set_item("propagated", part_dict(py, &s.propagated)?)?;
    d.set_item("own", part_dict(py, &s.own)?)?;
    Ok(d)
}

/// A layer's weight and optional bias in the precision `F`.
type Owned<F, D> = (ndarray::Array<F, D>, Option<Array1<F>>);

/// Weights and biases in the precision `F` (owned copies, so that the GIL can be released).
fn owned_layers<F: Float, D: ndarray::Dimension>(layers: &[LayerArgs<'_, D>]) -> Vec<Owned<F, D>> {
    layers
        .iter()
        .map(|(w, b)| (owned(w), b.as_ref().map(owned)))
        .collect()
}

fn dense<F: Float>(layers: &[Owned<F, ndarray::Ix2>]) -> Vec<DenseLayer<'_, F>> {
    layers
        .iter()
        .map(|(w, b)| DenseLayer {
            weight: w.view(),
            bias: b.as_ref().map(|b| b.view()),
        })
        .collect()
}

fn conv_layer<F>((w, b): &Owned<F, ndarray::Ix4>) -> ConvLayer<'_, F> {
    ConvLayer {
        weight: w.view(),
        bias: b.as_ref().map(|b| b.view()),
    }
}

fn activation(name: &str) -> PyResult<Activation> {
    match name {
        "relu" => Ok(Activation::Relu),
        "identity" => Ok(Activation::Identity),
        _ => Err(bad_choice("activation", name, &["relu", "identity"])),
    }
}

/// The attribution of a dense chain on inputs `x` (GIL released).
#[pyfunction]
#[pyo3(signature = (layers_a, layers_b, activations, x, alphas, chunk_size = 256))]
fn attribution_dense<'py>(
    py: Python<'py>,
    layers_a: Vec<LayerArgs<'_, ndarray::Ix2>>,
    layers_b: Vec<LayerArgs<'_, ndarray::Ix2>>,
    activations: Vec<String>,
    x: Array2F<'_>,
    alphas: Vec<f64>,
    chunk_size: usize,
) -> PyResult<Bound<'py, PyDict>> {
    let acts = activations
        .iter()
        .map(|a| activation(a))
        .collect::<PyResult<Vec<_>>>()?;
    let options = AttributionOptions { chunk_size };
    let att = with_floats!(x => {
        let (la, lb) = (owned_layers(&layers_a), owned_layers(&layers_b));
        let (da, db) = (dense(&la), dense(&lb));
        py.detach(|| attribution::attribution_dense(&da, &db, &acts, &x, &alphas, &options))
    })
    .py()?;
    attribution_dict(py, &att)
}

/// The attribution of two reference MLPs (`layers.{i}.weight/bias`) on inputs `x`.
#[pyfunction]
fn attribution_mlp<'py>(
    py: Python<'py>,
    params_a: Items<'_>,
    params_b: Items<'_>,
    x: Array2F<'_>,
    alphas: Vec<f64>,
) -> PyResult<Bound<'py, PyDict>> {
    let att = with_pair!(params(params_a)?, params(params_b)?, |a, b| {
        let x: Array2<_> = owned(&x);
        py.detach(|| attribution::attribution_mlp(&a, &b, &x, &alphas))
    })
    .py()?;
    attribution_dict(py, &att)
}

/// The local split of one dense layer from its inputs under A, B and θ(α).
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn local_split_dense<'py>(
    py: Python<'py>,
    layer_a: LayerArgs<'_, ndarray::Ix2>,
    layer_b: LayerArgs<'_, ndarray::Ix2>,
    h_a: Array2F<'_>,
    h_b: Array2F<'_>,
    h_alpha: Array2F<'_>,
    alpha: f64,
) -> PyResult<Bound<'py, PyDict>> {
    let s = with_floats!(h_a, h_b, h_alpha => {
        let (la, lb) = (owned_layers(&[layer_a]), owned_layers(&[layer_b]));
        let (da, db) = (dense(&la)[0], dense(&lb)[0]);
        py.detach(|| attribution::local_split_dense(da, db, h_a, h_b, h_alpha, alpha))
    })
    .py()?;
    split_dict(py, &s)
}

/// PyTorch `nn.Conv2d` geometry from `(stride, padding, dilation, groups)`.
pub fn geometry(
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
    groups: usize,
) -> ConvGeometry {
    ConvGeometry {
        stride,
        padding,
        dilation,
        groups,
    }
}

/// The local split of one conv layer from its input maps under A, B and θ(α).
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn local_split_conv<'py>(
    py: Python<'py>,
    layer_a: LayerArgs<'_, ndarray::Ix4>,
    layer_b: LayerArgs<'_, ndarray::Ix4>,
    h_a: Array4F<'_>,
    h_b: Array4F<'_>,
    h_alpha: Array4F<'_>,
    alpha: f64,
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
    groups: usize,
) -> PyResult<Bound<'py, PyDict>> {
    let g = geometry(stride, padding, dilation, groups);
    let s = with_floats!(h_a, h_b, h_alpha => {
        let (la, lb) = (owned_layers(&[layer_a]), owned_layers(&[layer_b]));
        let (ca, cb) = (conv_layer(&la[0]), conv_layer(&lb[0]));
        py.detach(|| attribution::local_split_conv(ca, cb, h_a, h_b, h_alpha, alpha, &g))
    })
    .py()?;
    split_dict(py, &s)
}

/// The local split of a ReLU from the pre-activations under A, B and θ(α).
#[pyfunction]
fn local_split_activation<'py>(
    py: Python<'py>,
    z_a: ArrayDF<'_>,
    z_b: ArrayDF<'_>,
    z_alpha: ArrayDF<'_>,
    alpha: f64,
) -> PyResult<Bound<'py, PyDict>> {
    let s = with_floats!(z_a, z_b, z_alpha => {
        py.detach(|| attribution::local_split_activation(&z_a, &z_b, &z_alpha, alpha))
    })
    .py()?;
    split_dict(py, &s)
}

/// `conv(W, H)` of PyTorch's `nn.Conv2d` without bias, in float64.
#[pyfunction]
fn conv2d<'py>(
    py: Python<'py>,
    weight: Array4F<'_>,
    input: Array4F<'_>,
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
    groups: usize,
) -> PyResult<Bound<'py, numpy::PyArray4<f64>>> {
    let g = geometry(stride, padding, dilation, groups);
    let y = with_floats!(weight, input => py.detach(|| metrics::conv2d(weight, input, &g)));
    Ok(y.py()?.into_pyarray(py))
}

/// The commutativity of one conv layer.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn conv_commutativity<'py>(
    py: Python<'py>,
    w_a: Array4F<'_>,
    w_b: Array4F<'_>,
    h_a: Array4F<'_>,
    h_b: Array4F<'_>,
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
    groups: usize,
) -> PyResult<Bound<'py, PyDict>> {
    let g = geometry(stride, padding, dilation, groups);
    let c = with_floats!(w_a, w_b, h_a, h_b => {
        py.detach(|| metrics::conv_commutativity(w_a, w_b, h_a, h_b, &g))
    })
    .py()?;
    commutativity_dict(py, &c)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(attribution_dense, m)?)?;
    m.add_function(wrap_pyfunction!(attribution_mlp, m)?)?;
    m.add_function(wrap_pyfunction!(local_split_dense, m)?)?;
    m.add_function(wrap_pyfunction!(local_split_conv, m)?)?;
    m.add_function(wrap_pyfunction!(local_split_activation, m)?)?;
    m.add_function(wrap_pyfunction!(conv2d, m)?)?;
    m.add_function(wrap_pyfunction!(conv_commutativity, m)?)?;
    Ok(())
}
