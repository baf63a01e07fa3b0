//! `PermutationSpec`: which axes of which parameters each permutation acts on.

use std::collections::BTreeMap;
use std::path::PathBuf;

use llfc::spec::{Shortcut, VggConfig};
use llfc::PermutationSpec;
use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::convert::{params, ArrayDF};
use crate::errors::{bad_choice, ToPy};
use crate::with_params;

/// A permutation spec (see the Python docstring of `llfc.PermutationSpec`).
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
    #[new]
    #[pyo3(signature = (axes = None))]
    fn new(axes: Option<BTreeMap<String, Vec<Option<String>>>>) -> Self {
        let mut inner = PermutationSpec::new();
        for (param, list) in axes.unwrap_or_default() {
            inner.insert(param, &list);
        }
        Self { inner }
    }

    #[staticmethod]
    fn mlp(num_layers: usize) -> Self {
        Self {
            inner: PermutationSpec::mlp(num_layers),
        }
    }

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

    #[staticmethod]
    #[pyo3(signature = (shortcut = "conv1x1"))]
    fn resnet20(shortcut: &str) -> PyResult<Self> {
        Ok(Self {
            inner: PermutationSpec::resnet20(self::shortcut(shortcut)?),
        })
    }

    #[staticmethod]
    #[pyo3(signature = (blocks_per_stage, shortcut = "conv1x1"))]
    fn resnet_cifar(blocks_per_stage: Vec<usize>, shortcut: &str) -> PyResult<Self> {
        Ok(Self {
            inner: PermutationSpec::resnet_cifar(&blocks_per_stage, self::shortcut(shortcut)?),
        })
    }

    #[staticmethod]
    fn from_dict(axes: BTreeMap<String, Vec<Option<String>>>) -> Self {
        Self::new(Some(axes))
    }

    #[staticmethod]
    fn from_json(path: PathBuf) -> PyResult<Self> {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| PyOSError::new_err(format!("cannot read `{}`: {e}", path.display())))?;
        Self::from_json_str(&text)
    }

    #[staticmethod]
    fn from_json_str(text: &str) -> PyResult<Self> {
        Ok(Self {
            inner: PermutationSpec::from_json(text).py()?,
        })
    }

    fn to_dict(&self) -> BTreeMap<String, Vec<Option<String>>> {
        self.inner
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_vec()))
            .collect()
    }

    fn to_json(&self) -> String {
        self.inner.to_json()
    }

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
