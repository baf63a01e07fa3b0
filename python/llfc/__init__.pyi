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
    def __init__(self, axes: Optional[Mapping[str, Sequence[Optional[str]]]] = None) -> None: ...
    @staticmethod
    def mlp(num_layers: int) -> "PermutationSpec": ...
    @staticmethod
    def vgg(num_conv: int = 13, num_linear: int = 3, batch_norm: bool = True, conv_bias: bool = False) -> "PermutationSpec": ...
    @staticmethod
    def resnet20(shortcut: str = "conv1x1") -> "PermutationSpec": ...
    @staticmethod
    def resnet_cifar(blocks_per_stage: Sequence[int], shortcut: str = "conv1x1") -> "PermutationSpec": ...
    @staticmethod
    def from_dict(axes: Mapping[str, Sequence[Optional[str]]]) -> "PermutationSpec": ...
    @staticmethod
    def from_json(path: Union[str, "os.PathLike[str]"]) -> "PermutationSpec": ...
    @staticmethod
    def from_json_str(text: str) -> "PermutationSpec": ...
    def to_dict(self) -> Dict[str, List[Optional[str]]]: ...
    def to_json(self) -> str: ...
    def perm_names(self) -> List[str]: ...
    def perm_sizes(self, params: Params) -> Dict[str, int]: ...
    def validate(self, params: Params) -> Dict[str, Any]: ...
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
) -> Assignment: ...
def linear_sum_assignment(
    cost_matrix: npt.ArrayLike,
    maximize: bool = False,
    *,
    solver: str = "native",
    warm_start: Optional[Assignment] = None,
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
    tolerance: float = 1e-12,
) -> CommutativityMatching: ...
def commutativity_objective(params_a: Params, params_b: Params, x: npt.ArrayLike, perms: Mapping[str, npt.ArrayLike]) -> Tuple[float, List[float]]: ...
def cosine_distances(a: npt.ArrayLike, b: npt.ArrayLike, variant: str = "signed") -> SampleStats: ...
def llfc_layer(f_alpha: npt.ArrayLike, f_a: npt.ArrayLike, f_b: npt.ArrayLike, alpha: float, variant: str = "signed") -> LlfcLayer: ...
def weak_additivity(z_a: npt.ArrayLike, z_b: npt.ArrayLike, alpha: float) -> WeakAdditivity: ...
def commutativity_residual(w_a: npt.ArrayLike, w_b: npt.ArrayLike, h_a: npt.ArrayLike, h_b: npt.ArrayLike) -> np.ndarray: ...
def commutativity(w_a: npt.ArrayLike, w_b: npt.ArrayLike, h_a: npt.ArrayLike, h_b: npt.ArrayLike) -> Commutativity: ...
def barrier(alphas: Iterable[float], values: Iterable[float], kind: str = "interpolated") -> Barrier: ...

import os
