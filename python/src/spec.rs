//! `PermutationSpec`: which axes of which parameters each permutation acts on.

use std::collections::BTreeMap;
use std::path::PathBuf;

use llfc::spec::{
    BatchNormParams, Builtin, InvarianceReport, Shortcut, TransformerConfig, VggConfig,
};
use llfc::{Float, Params, PermutationSpec};
use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::callback::Raised;
use crate::convert::{owned, params, params_to_py, perms, perms_to_py, ArrayDF};
use crate::errors::{bad_choice, ToPy};
use crate::with_params;

/// A permutation spec: for every parameter, which permutation (if any) acts on each axis, plus
/// the structure of structured permutations (attention heads, ties, embeddings, views).
///
/// Build one with `mlp`, `vgg`, `resnet20`, `resnet_cifar`, `resnet_cifar_option_a`, `gpt2`,
/// `bert`, `llama`, `builtin(name)` (torchvision and the LLFC paper's models) or from its JSON
/// form (`from_dict`, `from_json`); check it against a checkpoint with `validate` and against a
/// model with `check_invariance`.
#[pyclass(name = "PermutationSpec", module = "llfc", frozen, eq)]
#[derive(Clone, PartialEq)]
pub struct PySpec {
    pub inner: PermutationSpec,
}

fn shortcut(name: &str) -> PyResult<Shortcut> {
    match name {
        "conv1x1" => Ok(Shortcut::Conv1x1),
        "padding" => Ok(Shortcut::Padding),
        _ => Err(bad_choice("shortcut", name, &["conv1x1", "padding"])),
    }
}

fn batch_norm(name: &str) -> PyResult<BatchNormParams> {
    match name {
        "full" => Ok(BatchNormParams::Full),
        "running-stats" | "running_stats" => Ok(BatchNormParams::RunningStatsOnly),
        "none" => Ok(BatchNormParams::None),
        _ => Err(bad_choice(
            "batch_norm",
            name,
            &["full", "running-stats", "none"],
        )),
    }
}

fn transformer(layers: usize, heads: usize, d_model: usize, lm_head: bool) -> TransformerConfig {
    TransformerConfig {
        layers,
        heads,
        d_model,
        lm_head,
    }
}

/// `check_invariance` with the caller's forward pass `forward(items, inputs) -> float array`.
fn check<F: Float + numpy::Element>(
    spec: &PermutationSpec,
    params: &Params<F>,
    forward: &Py<PyAny>,
    inputs: &Py<PyAny>,
    tol: f64,
    seed: u64,
    raised: &mut Raised,
) -> llfc::Result<InvarianceReport> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let run = |p: &Params<F>, x: &Py<PyAny>| {
        raised.call("forward", |py| {
            let out = forward.call1(py, (params_to_py(py, p.clone())?, x.clone_ref(py)))?;
            Ok(owned::<F, _>(&out.extract::<ArrayDF<'_>>(py)?))
        })
    };
    spec.check_invariance(params, run, inputs, tol, &mut rng)
}

impl PySpec {
    /// The float tensors of a parameter mapping, converted by the Python layer's one helper
    /// (`llfc._float_items`: order kept, one common dtype), and the names of its integer and
    /// boolean tensors, which the spec must not permute.
    #[allow(clippy::type_complexity)]
    fn float_items<'py>(
        &self,
        params: &Bound<'py, PyAny>,
    ) -> PyResult<(Vec<(String, ArrayDF<'py>)>, Vec<String>)> {
        let helper = params.py().import("llfc")?.getattr("_float_items")?;
        let (items, others): (Vec<(String, ArrayDF<'py>)>, Vec<String>) =
            helper.call1((params,))?.extract()?;
        if let Some(name) = others.iter().find(|o| self.inner.axes(o).is_some()) {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "the spec permutes `{name}`, which is not a floating-point tensor"
            )));
        }
        Ok((items, others))
    }
}

#[pymethods]
impl PySpec {
    /// A spec from its JSON form as a Python mapping (plain or extended).
    #[new]
    #[pyo3(signature = (axes = None))]
    fn new(axes: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        match axes {
            None => Ok(Self {
                inner: PermutationSpec::new(),
            }),
            Some(d) => {
                let text: String = d
                    .py()
                    .import("json")?
                    .call_method1("dumps", (d,))?
                    .extract()?;
                Self::from_json_str(&text)
            }
        }
    }

    /// The MLP `layers.{i}.weight/bias` with `num_layers` linear layers: hidden permutations
    /// `P_0 … P_{L−2}`.
    #[staticmethod]
    fn mlp(num_layers: usize) -> Self {
        Self {
            inner: PermutationSpec::mlp(num_layers),
        }
    }

    /// A VGG-style CNN `conv{i}` (+ `bn{i}`), then `fc{j}`: one permutation per layer.
    #[staticmethod]
    #[pyo3(signature = (num_conv = 13, num_linear = 3, batch_norm = true, conv_bias = false))]
    fn vgg(num_conv: usize, num_linear: usize, batch_norm: bool, conv_bias: bool) -> Self {
        Self {
            inner: PermutationSpec::vgg(&VggConfig {
                num_conv,
                num_linear,
                batch_norm,
                conv_bias,
            }),
        }
    }

    /// The CIFAR ResNet-20 (`shortcut`: `"conv1x1"` or `"padding"`), residual streams shared
    /// per stage.
    #[staticmethod]
    #[pyo3(signature = (shortcut = "conv1x1"))]
    fn resnet20(shortcut: &str) -> PyResult<Self> {
        Ok(Self {
            inner: PermutationSpec::resnet20(self::shortcut(shortcut)?),
        })
    }

    /// A CIFAR ResNet with the given blocks per stage (naming of `resnet20`).
    #[staticmethod]
    #[pyo3(signature = (blocks_per_stage, shortcut = "conv1x1"))]
    fn resnet_cifar(blocks_per_stage: Vec<usize>, shortcut: &str) -> PyResult<Self> {
        Ok(Self {
            inner: PermutationSpec::resnet_cifar(&blocks_per_stage, self::shortcut(shortcut)?),
        })
    }

    /// A spec from its JSON form as Python objects (plain `{param: [perm or None, …]}` or the
    /// extended `{"params": …, "perms": …}`), as `to_dict` returns it.
    #[staticmethod]
    fn from_dict(axes: &Bound<'_, PyAny>) -> PyResult<Self> {
        Self::new(Some(axes))
    }

    /// A builtin spec by name; with `params`, checked against that checkpoint.
    #[staticmethod]
    #[pyo3(signature = (name, params = None))]
    fn builtin(name: &str, params: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let b: Builtin = name.parse().py()?;
        let Some(params) = params else {
            return Ok(Self { inner: b.spec() });
        };
        let probe = Self { inner: b.spec() };
        let items = probe.float_items(params)?.0;
        let inner = with_params!(self::params(items)?, |p| b.spec_for(&p).py())?;
        Ok(Self { inner })
    }

    /// The names `builtin` accepts (torchvision VGG/ResNet, the LLFC paper's VGG and CIFAR
    /// ResNets).
    #[staticmethod]
    fn builtin_names() -> Vec<String> {
        Builtin::all().iter().map(Builtin::name).collect()
    }

    /// A CIFAR ResNet with option-A (zero-padding) shortcuts and base width `width`:
    /// `P_res{s+1}` embeds `P_res{s}` at offset `width · 2^s / 4`. `batch_norm`: `"full"`,
    /// `"running-stats"` (affine=False) or `"none"`.
    #[staticmethod]
    #[pyo3(signature = (blocks_per_stage, width = 16, batch_norm = "full"))]
    fn resnet_cifar_option_a(
        blocks_per_stage: Vec<usize>,
        width: usize,
        batch_norm: &str,
    ) -> PyResult<Self> {
        Ok(Self {
            inner: PermutationSpec::resnet_cifar_option_a(
                &blocks_per_stage,
                width,
                self::batch_norm(batch_norm)?,
            ),
        })
    }

    /// The option-A ResNet-20 (three stages of three blocks).
    #[staticmethod]
    #[pyo3(signature = (width = 16, batch_norm = "full"))]
    fn resnet20_option_a(width: usize, batch_norm: &str) -> PyResult<Self> {
        Self::resnet_cifar_option_a(vec![3, 3, 3], width, batch_norm)
    }

    /// Hugging Face GPT-2 (`transformer.h.{i}…`, Conv1D `[in, out]` weights, fused q/k/v):
    /// `P_res` shared by the residual stream, head-structured `P_h{i}.qk` / `P_h{i}.vo` (same
    /// head permutation), `P_h{i}.mlp`; `lm_head`: whether `lm_head.weight` is stored.
    #[staticmethod]
    #[pyo3(signature = (layers, heads, d_model, lm_head = false))]
    fn gpt2(layers: usize, heads: usize, d_model: usize, lm_head: bool) -> Self {
        Self {
            inner: PermutationSpec::gpt2(&transformer(layers, heads, d_model, lm_head)),
        }
    }

    /// A Hugging Face BERT encoder under `prefix` (post-LN; add a head reading `P_res` with
    /// `to_dict` / `from_dict`).
    #[staticmethod]
    #[pyo3(signature = (layers, heads, d_model, prefix = "bert"))]
    fn bert(layers: usize, heads: usize, d_model: usize, prefix: &str) -> Self {
        Self {
            inner: PermutationSpec::bert_encoder(
                &transformer(layers, heads, d_model, false),
                prefix,
            ),
        }
    }

    /// Hugging Face LLaMA (RMSNorm, rotary embeddings: the q/k permutation moves whole heads
    /// only; gated MLP). Multi-head attention only.
    #[staticmethod]
    #[pyo3(signature = (layers, heads, d_model, lm_head = false))]
    fn llama(layers: usize, heads: usize, d_model: usize, lm_head: bool) -> Self {
        Self {
            inner: PermutationSpec::llama(&transformer(layers, heads, d_model, lm_head)),
        }
    }

    /// Random permutations with the spec's declared structure, sized from `params`.
    #[pyo3(signature = (params, seed = 0))]
    fn random_perms<'py>(
        &self,
        py: Python<'py>,
        params: &Bound<'_, PyAny>,
        seed: u64,
    ) -> PyResult<Bound<'py, PyDict>> {
        let items = self.float_items(params)?.0;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let perms = with_params!(self::params(items)?, |p| {
            self.inner.random_perms(&p, &mut rng).py()
        })?;
        perms_to_py(py, &perms)
    }

    /// Check that permutations have the structure the spec declares.
    fn check_structure(
        &self,
        perms: BTreeMap<String, numpy::PyReadonlyArray1<'_, i64>>,
    ) -> PyResult<()> {
        self.inner.check_structure(&self::perms(perms)?).py()
    }

    /// Check that the spec is a symmetry of a model: permute `params` by random permutations
    /// drawn from `seed` (with the spec's structure: heads, ties, embeddings) and compare
    /// `forward(params, inputs)` before and after, elementwise; passes when
    /// `max |Δ| <= tol` (absolute, float64). `forward(params_dict, inputs)` is any callable
    /// returning an array (a NumPy forward, a PyTorch model after `load_state_dict`); `inputs`
    /// is passed through as it is. If the check fails, each permutation is also applied alone
    /// and the ones that change the output are listed in `broken`. Returns an
    /// `llfc.InvarianceReport`; a failed check is not an exception.
    #[pyo3(signature = (params, forward, inputs, tol = 1e-10, seed = 0))]
    fn check_invariance<'py>(
        &self,
        py: Python<'py>,
        params: &Bound<'_, PyAny>,
        forward: &Bound<'_, PyAny>,
        inputs: Py<PyAny>,
        tol: f64,
        seed: u64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let items = self.float_items(params)?.0;
        let llfc_mod = py.import("llfc")?;
        // `forward(items, inputs)`: the caller's forward on a full parameter dict, its output
        // as a float array.
        let forward: Py<PyAny> = llfc_mod
            .getattr("_forward_items")?
            .call1((forward, params))?
            .unbind();
        let mut raised = Raised::default();
        let spec = &self.inner;
        let r = with_params!(self::params(items)?, |p| {
            py.detach(|| check(spec, &p, &forward, &inputs, tol, seed, &mut raised))
        });
        let r = raised.finish(r)?;
        let d = PyDict::new(py);
        d.set_item("passed", r.passed())?;
        d.set_item("broken", r.broken())?;
        d.set_item("max_abs_diff", r.max_abs_diff)?;
        d.set_item("max_abs_output", r.max_abs_output)?;
        d.set_item("tol", r.tol)?;
        d.set_item("perms", perms_to_py(py, &r.perms)?)?;
        d.set_item("per_perm", r.per_perm)?;
        llfc_mod.getattr("InvarianceReport")?.call((), Some(&d))
    }

    /// A spec from a JSON file (plain or extended form); `OSError` if it cannot be read.
    #[staticmethod]
    fn from_json(path: PathBuf) -> PyResult<Self> {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| PyOSError::new_err(format!("cannot read `{}`: {e}", path.display())))?;
        Self::from_json_str(&text)
    }

    /// A spec from JSON text.
    #[staticmethod]
    fn from_json_str(text: &str) -> PyResult<Self> {
        Ok(Self {
            inner: PermutationSpec::from_json(text).py()?,
        })
    }

    /// The JSON form as Python objects (plain `{param: [perm or None, …]}` for a plain spec).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        py.import("json")?
            .call_method1("loads", (self.inner.to_json(),))
    }

    /// The JSON text (pretty-printed; the form `from_json` reads).
    fn to_json(&self) -> String {
        self.inner.to_json()
    }

    /// The permutation names, sorted.
    fn perm_names(&self) -> Vec<String> {
        self.inner.perm_names()
    }

    /// The size of every permutation in a parameter mapping.
    fn perm_sizes(&self, params: &Bound<'_, PyAny>) -> PyResult<BTreeMap<String, usize>> {
        let items = self.float_items(params)?.0;
        with_params!(self::params(items)?, |p| self.inner.perm_sizes(&p).py())
    }

    /// Check the spec against a parameter mapping: `{"perm_sizes", "unmentioned"}`.
    fn validate<'py>(
        &self,
        py: Python<'py>,
        params: &Bound<'_, PyAny>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let (items, others) = self.float_items(params)?;
        let mut v = with_params!(self::params(items)?, |p| self.inner.validate(&p).py())?;
        v.unmentioned.extend(others);
        let d = PyDict::new(py);
        d.set_item("perm_sizes", v.perm_sizes)?;
        d.set_item("unmentioned", v.unmentioned)?;
        Ok(d)
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    fn __repr__(&self) -> String {
        format!(
            "PermutationSpec({} parameters, permutations {:?})",
            self.inner.len(),
            self.inner.perm_names()
        )
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PySpec>()
}
