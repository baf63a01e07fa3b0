from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

from . import io as io

__version__: str

Params = Mapping[str, npt.ArrayLike]
Perms = Dict[str, npt.NDArray[np.int64]]

class Assignment:
    @property
    def row_ind(self) -> npt.NDArray[np.int64]: ...
    @property
    def col_ind(self) -> npt.NDArray[np.int64]: ...
    @property
    def total(self) -> float: ...
    @property
    def u(self) -> Optional[npt.NDArray[np.float64]]: ...
    @property
    def v(self) -> Optional[npt.NDArray[np.float64]]: ...
    @property
    def shape(self) -> Tuple[int, int]: ...

class PermutationSpec:
    def __init__(self, axes: Optional[Mapping[str, Any]] = None) -> None: ...
    @staticmethod
    def mlp(num_layers: int) -> "PermutationSpec": ...
    @staticmethod
    def vgg(num_conv: int = 13, num_linear: int = 3, batch_norm: bool = True, conv_bias: bool = False) -> "PermutationSpec": ...
    @staticmethod
    def resnet20(shortcut: str = "conv1x1") -> "PermutationSpec": ...
    @staticmethod
    def resnet_cifar(blocks_per_stage: Sequence[int], shortcut: str = "conv1x1") -> "PermutationSpec": ...
    @staticmethod
    def resnet_cifar_option_a(blocks_per_stage: Sequence[int], width: int = 16, batch_norm: str = "full") -> "PermutationSpec": ...
    @staticmethod
    def resnet20_option_a(width: int = 16, batch_norm: str = "full") -> "PermutationSpec": ...
    @staticmethod
    def gpt2(layers: int, heads: int, d_model: int, lm_head: bool = False) -> "PermutationSpec": ...
    @staticmethod
    def bert(layers: int, heads: int, d_model: int, prefix: str = "bert") -> "PermutationSpec": ...
    @staticmethod
    def llama(layers: int, heads: int, d_model: int, lm_head: bool = False) -> "PermutationSpec": ...
    @staticmethod
    def builtin(name: str, params: Optional[Params] = None) -> "PermutationSpec": ...
    @staticmethod
    def builtin_names() -> List[str]: ...
    @staticmethod
    def from_dict(axes: Mapping[str, Any]) -> "PermutationSpec": ...
    @staticmethod
    def from_json(path: Union[str, "os.PathLike[str]"]) -> "PermutationSpec": ...
    @staticmethod
    def from_json_str(text: str) -> "PermutationSpec": ...
    def to_dict(self) -> Dict[str, Any]: ...
    def to_json(self) -> str: ...
    def perm_names(self) -> List[str]: ...
    def perm_sizes(self, params: Params) -> Dict[str, int]: ...
    def validate(self, params: Params) -> Dict[str, Any]: ...
    def random_perms(self, params: Params, seed: int = 0) -> Perms: ...
    def check_structure(self, perms: Mapping[str, npt.ArrayLike]) -> None: ...
    def check_invariance(
        self,
        params: Params,
        forward: Callable[[Dict[str, np.ndarray], Any], npt.ArrayLike],
        inputs: Any,
        tol: float = 1e-10,
        seed: int = 0,
    ) -> "InvarianceReport": ...
    def __len__(self) -> int: ...

class ActivationStats:
    def __init__(self, d_a: int, d_b: int) -> None: ...
    def update(self, a: npt.ArrayLike, b: npt.ArrayLike) -> None: ...
    def merge(self, other: "ActivationStats") -> None: ...
    def statistic(self, statistic: str = "correlation") -> npt.NDArray[np.float64]: ...
    @property
    def count(self) -> int: ...
    @property
    def dims(self) -> Tuple[int, int]: ...

class UnitStats:
    def __init__(self, units: int) -> None: ...
    @staticmethod
    def from_features(features: npt.ArrayLike) -> "UnitStats": ...
    @staticmethod
    def from_moments(count: int, mean: npt.ArrayLike, variance: npt.ArrayLike) -> "UnitStats": ...
    def update(self, features: npt.ArrayLike) -> None: ...
    def merge(self, other: "UnitStats") -> None: ...
    def unbiased_variance(self) -> npt.NDArray[np.float64]: ...
    @property
    def count(self) -> int: ...
    @property
    def units(self) -> int: ...
    @property
    def mean(self) -> npt.NDArray[np.float64]: ...
    @property
    def variance(self) -> npt.NDArray[np.float64]: ...
    @property
    def std(self) -> npt.NDArray[np.float64]: ...

@dataclass(frozen=True)
class InvarianceReport:
    passed: bool
    broken: List[str]
    max_abs_diff: float
    max_abs_output: float
    tol: float
    perms: Perms
    per_perm: Dict[str, float]

@dataclass(frozen=True)
class LayerRepair:
    feature: str
    weight: str
    bias: str
    measured: UnitStats
    target_mean: npt.NDArray[np.float64]
    target_std: npt.NDArray[np.float64]
    scale: npt.NDArray[np.float64]
    shift: npt.NDArray[np.float64]
    zero_variance: List[int]

@dataclass(frozen=True)
class Repaired:
    params: Dict[str, np.ndarray]
    layers: List[LayerRepair]
    @property
    def zero_variance_units(self) -> List[Tuple[str, int]]: ...

@dataclass(frozen=True)
class Part:
    norm: float
    inner: float
    share: Optional[float]

@dataclass(frozen=True)
class Deviation:
    norm: float
    reference_norm: float
    relative: Optional[float]
    closure: Optional[float]
    contributions: Dict[str, Part]

@dataclass(frozen=True)
class LayerAttribution:
    layer: int
    alpha: float
    pre: Deviation
    post: Deviation

@dataclass(frozen=True)
class Attribution:
    alphas: List[float]
    sources: List[str]
    layers: List[List[LayerAttribution]]
    samples: int

@dataclass(frozen=True)
class LocalSplit:
    alpha: float
    norm: float
    reference_norm: float
    relative: Optional[float]
    closure: Optional[float]
    propagated: Part
    own: Part

@dataclass(frozen=True)
class Matching:
    perms: Perms
    objective: float
    initial_objective: float
    sweeps: int
    converged: bool
    history: List[float]

@dataclass(frozen=True)
class CommutativityMatching:
    perms: Perms
    objective: float
    initial_objective: float
    layer_objectives: List[float]
    sweeps: int
    converged: bool

@dataclass(frozen=True)
class SampleStats:
    values: npt.NDArray[np.float64]
    count: int
    skipped: int
    mean: Optional[float]
    std: Optional[float]

@dataclass(frozen=True)
class LlfcLayer:
    alpha: float
    distance: SampleStats
    baseline: SampleStats
    coef: SampleStats
    c: SampleStats
    matrix_coef: Optional[float]
    matrix_c: Optional[float]

@dataclass(frozen=True)
class WeakAdditivity:
    alpha: float
    relative: Optional[float]
    vanilla: Optional[float]
    cosine: SampleStats

@dataclass(frozen=True)
class Commutativity:
    relative: Optional[float]
    vanilla: Optional[float]
    baseline: Optional[float]
    residual_norm: float

@dataclass(frozen=True)
class Barrier:
    height: float
    alpha: float
    index: int

def solve_assignment(
    cost_matrix: npt.ArrayLike,
    maximize: bool = False,
    *,
    solver: str = "native",
    ties: str = "scipy",
    warm_start: Optional[Assignment] = None,
    presolve: str = "auto",
    candidates: str = "auto",
) -> Assignment: ...
def linear_sum_assignment(
    cost_matrix: npt.ArrayLike,
    maximize: bool = False,
    *,
    solver: str = "native",
    warm_start: Optional[Assignment] = None,
    presolve: str = "auto",
    candidates: str = "auto",
) -> Tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]: ...
def weight_matching(
    spec: PermutationSpec,
    params_a: Params,
    params_b: Params,
    *,
    seed: int = 0,
    max_iter: int = 100,
    fixed_order: Union[bool, Sequence[str]] = False,
    init: Optional[Mapping[str, npt.ArrayLike]] = None,
    tolerance: float = 1e-12,
    solver: str = "native",
    warm_start: bool = True,
    progress: Optional[Callable[[Dict[str, Any]], Any]] = None,
) -> Matching: ...
def apply_permutations(spec: PermutationSpec, perms: Mapping[str, npt.ArrayLike], params: Params) -> Dict[str, np.ndarray]: ...
def activation_matching(stats: Mapping[str, ActivationStats], statistic: str = "correlation", *, solver: str = "native") -> Perms: ...
def commutativity_matching(
    params_a: Params,
    params_b: Params,
    x: npt.ArrayLike,
    *,
    start: str = "identity",
    statistic: str = "correlation",
    max_iter: int = 100,
    seed: int = 0,
    tolerance: float = 1e-4,
) -> CommutativityMatching: ...
def commutativity_objective(params_a: Params, params_b: Params, x: npt.ArrayLike, perms: Mapping[str, npt.ArrayLike]) -> Tuple[float, List[float]]: ...
def cosine_distances(a: npt.ArrayLike, b: npt.ArrayLike, variant: str = "signed") -> SampleStats: ...
def llfc_layer(f_alpha: npt.ArrayLike, f_a: npt.ArrayLike, f_b: npt.ArrayLike, alpha: float, variant: str = "signed") -> LlfcLayer: ...
def weak_additivity(z_a: npt.ArrayLike, z_b: npt.ArrayLike, alpha: float) -> WeakAdditivity: ...
def commutativity_residual(w_a: npt.ArrayLike, w_b: npt.ArrayLike, h_a: npt.ArrayLike, h_b: npt.ArrayLike) -> np.ndarray: ...
def commutativity(w_a: npt.ArrayLike, w_b: npt.ArrayLike, h_a: npt.ArrayLike, h_b: npt.ArrayLike) -> Commutativity: ...
def barrier(alphas: Iterable[float], values: Iterable[float], kind: str = "interpolated") -> Barrier: ...

import os

Measure = Callable[[Dict[str, np.ndarray], List[str]], Sequence[Union[UnitStats, npt.ArrayLike]]]
Layer = Union[str, Tuple[str, str, str]]
DenseLayer = Union[npt.ArrayLike, Tuple[npt.ArrayLike, Optional[npt.ArrayLike]]]
Pair = Union[int, Tuple[int, int]]

def repair(
    params_a: Params, params_b: Params, alpha: float, layers: Sequence[Layer], measure: Measure, *, zero_std_tolerance: float = 1e-9
) -> Repaired: ...
def repair_towards(
    theta: Params,
    layers: Sequence[Layer],
    targets: Sequence[Tuple[npt.ArrayLike, npt.ArrayLike]],
    measure: Measure,
    *,
    zero_std_tolerance: float = 1e-9,
) -> Repaired: ...
def reset_batchnorm(params: Params, layers: Sequence[Layer], measure: Measure, *, variance: str = "unbiased") -> Dict[str, np.ndarray]: ...
def fold_correction(params: Params, weight: str, bias: str, scale: npt.ArrayLike, shift: npt.ArrayLike) -> Dict[str, np.ndarray]: ...
def mlp_repair(params_a: Params, params_b: Params, alpha: float, x: npt.ArrayLike, *, zero_std_tolerance: float = 1e-9) -> Repaired: ...
def attribution_mlp(params_a: Params, params_b: Params, x: npt.ArrayLike, alphas: Sequence[float]) -> Attribution: ...
def attribution_dense(
    layers_a: Sequence[DenseLayer],
    layers_b: Sequence[DenseLayer],
    activations: Sequence[str],
    x: npt.ArrayLike,
    alphas: Sequence[float],
    *,
    chunk_size: int = 256,
) -> Attribution: ...
def local_split_dense(
    layer_a: DenseLayer, layer_b: DenseLayer, h_a: npt.ArrayLike, h_b: npt.ArrayLike, h_alpha: npt.ArrayLike, alpha: float
) -> LocalSplit: ...
def local_split_conv(
    layer_a: DenseLayer,
    layer_b: DenseLayer,
    h_a: npt.ArrayLike,
    h_b: npt.ArrayLike,
    h_alpha: npt.ArrayLike,
    alpha: float,
    *,
    stride: Pair = 1,
    padding: Pair = 0,
    dilation: Pair = 1,
    groups: int = 1,
) -> LocalSplit: ...
def local_split_activation(z_a: npt.ArrayLike, z_b: npt.ArrayLike, z_alpha: npt.ArrayLike, alpha: float) -> LocalSplit: ...
def conv2d(
    weight: npt.ArrayLike, x: npt.ArrayLike, *, stride: Pair = 1, padding: Pair = 0, dilation: Pair = 1, groups: int = 1
) -> npt.NDArray[np.float64]: ...
def conv_commutativity(
    w_a: npt.ArrayLike,
    w_b: npt.ArrayLike,
    h_a: npt.ArrayLike,
    h_b: npt.ArrayLike,
    *,
    stride: Pair = 1,
    padding: Pair = 0,
    dilation: Pair = 1,
    groups: int = 1,
) -> Commutativity: ...
