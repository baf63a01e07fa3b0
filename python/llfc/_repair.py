"""REPAIR and the BatchNorm reset (Jordan et al., *REPAIR*, ICLR 2023): the Python layer of
``llfc::repair`` and ``llfc::mlp::repair_report``.

The drivers take the caller's forward pass as ``measure(params, features)``: for a parameter
dict (names, order and integer tensors as given) and a list of feature keys, it returns one
:class:`UnitStats` (or a feature array ``[samples, units]`` / ``[samples, channels, h, w]``,
converted with :meth:`UnitStats.from_features`) per key, measured on the data. A PyTorch model
is measured with forward hooks after ``model.load_state_dict({k: torch.from_numpy(v) ...})``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Sequence, Tuple, Union

import numpy as np

from . import _llfc
from ._llfc import UnitStats
from . import _float_array, _params, _restore

__all__ = [
    "LayerRepair",
    "Repaired",
    "UnitStats",
    "fold_correction",
    "mlp_repair",
    "repair",
    "repair_towards",
    "reset_batchnorm",
]

Measure = Callable[[Dict[str, np.ndarray], List[str]], Sequence[Any]]
Layer = Union[str, Tuple[str, str, str]]


@dataclass(frozen=True)
class LayerRepair:
    """What REPAIR did to one layer: the units ``feature`` produced by ``weight``/``bias``,
    their statistics ``measured`` on θ(α) (earlier layers already repaired), the targets
    ``μ_α = α μ_A + (1 − α) μ_B`` (``target_mean``) and ``σ_α`` (``target_std``), the folded
    correction ``z ← scale ⊙ z + shift`` and the indices of the ``zero_variance`` units
    (constant on the data: shifted to ``μ_α``, not rescaled)."""

    feature: str
    weight: str
    bias: str
    measured: UnitStats
    target_mean: np.ndarray
    target_std: np.ndarray
    scale: np.ndarray
    shift: np.ndarray
    zero_variance: List[int]


@dataclass(frozen=True)
class Repaired:
    """The repaired parameters (same names, order and dtypes as θ(α)) and one
    :class:`LayerRepair` per layer, in the order repaired."""

    params: Dict[str, np.ndarray]
    layers: List[LayerRepair]

    @property
    def zero_variance_units(self) -> List[Tuple[str, int]]:
        """``(feature, unit)`` of every unit left unscaled because its variance was zero."""
        return [(l.feature, k) for l in self.layers for k in l.zero_variance]


def _layer_triples(layers: Sequence[Layer], suffixes: Tuple[str, str]) -> List[Tuple[str, str, str]]:
    if isinstance(layers, (str, bytes)):
        raise TypeError("layers: expected a sequence of module names or triples, got a string")
    out = []
    for l in layers:
        if isinstance(l, str):
            out.append((l, f"{l}.{suffixes[0]}", f"{l}.{suffixes[1]}"))
        else:
            t = tuple(l)
            if len(t) != 3 or not all(isinstance(x, str) for x in t):
                raise TypeError(f"layers: expected a module name or a triple of str, got {l!r}")
            out.append(t)
    return out


def _as_stats(s: Any) -> UnitStats:
    return s if isinstance(s, UnitStats) else UnitStats.from_features(_float_array(s, "measured feature"))


def _measure(measure: Measure, params: Mapping[str, Any], others: Dict[str, np.ndarray]):
    """The native driver's callback: ``(items, features) -> [UnitStats]``, calling ``measure``
    with a full parameter dict in the caller's order (integer tensors included)."""
    if not callable(measure):
        raise TypeError(f"measure: expected a callable, got {type(measure).__name__}")
    keys = list(params)

    def call(items, features):
        got = dict(items)
        full = {k: got[k] if k in got else others[k] for k in keys}
        return [_as_stats(s) for s in measure(full, list(features))]

    return call


def _repaired(d: dict, params: Mapping[str, Any], dtypes, others) -> Repaired:
    layers = [LayerRepair(**l) for l in d["layers"]]
    return Repaired(_restore(params, dtypes, others, d["items"]), layers)


def repair(
    params_a: Mapping[str, Any],
    params_b: Mapping[str, Any],
    alpha: float,
    layers: Sequence[Layer],
    measure: Measure,
    *,
    zero_std_tolerance: float = 1e-9,
) -> Repaired:
    """REPAIR of ``θ(α) = α θ_A + (1 − α) θ_B`` (``params_b`` already aligned to A).

    Every unit of each layer, from the input up, is rescaled to the interpolated statistics
    ``z ← (z − μ̃) σ_α / σ̃ + μ_α`` with ``μ_α = α μ_A + (1 − α) μ_B`` and
    ``σ_α = α σ_A + (1 − α) σ_B``, measured on the network whose earlier layers are already
    repaired, and the correction is folded into the producing layer (``W ← s W``,
    ``b ← s (b − μ̃) + μ_α``, ``s = σ_α / σ̃``): the result is a checkpoint of the same model.

    ``layers``: module names (``"fc1"`` means feature ``"fc1"``, parameters ``fc1.weight`` and
    ``fc1.bias``; for conv → BN → ReLU name the BN) or ``(feature, weight, bias)`` triples.
    ``measure(params, features)`` is called ``2 + len(layers)`` times (see the module docs).
    Raises ``ValueError`` for α outside ``[0, 1]``, a missing bias (which must absorb the
    shift), widths that disagree, statistics without samples; an exception of ``measure``
    propagates.
    """
    (fa, fb), (oa, _), _ = _params((params_a, "params_a"), (params_b, "params_b"))
    d = _llfc.repair(fa, fb, float(alpha), _layer_triples(layers, ("weight", "bias")),
                     _measure(measure, params_a, oa), zero_std_tolerance)
    return _repaired(d, params_a, {k: a.dtype for k, a in fa}, oa)


def repair_towards(
    theta: Mapping[str, Any],
    layers: Sequence[Layer],
    targets: Sequence[Tuple[Any, Any]],
    measure: Measure,
    *,
    zero_std_tolerance: float = 1e-9,
) -> Repaired:
    """The layer-by-layer part of :func:`repair` for given targets: one ``(mean, std)`` pair of
    per-unit arrays per layer (e.g. A's and B's statistics computed once for many α, or
    exported by another framework)."""
    (ft,), (ot,), _ = _params((theta, "theta"))
    tg = [(np.asarray(m, dtype=np.float64), np.asarray(s, dtype=np.float64)) for m, s in targets]
    d = _llfc.repair_towards(ft, _layer_triples(layers, ("weight", "bias")), tg,
                             _measure(measure, theta, ot), zero_std_tolerance)
    return _repaired(d, theta, {k: a.dtype for k, a in ft}, ot)


def reset_batchnorm(
    params: Mapping[str, Any],
    layers: Sequence[Layer],
    measure: Measure,
    *,
    variance: str = "unbiased",
) -> Dict[str, np.ndarray]:
    """Reset the BatchNorm running statistics of ``params`` (typically θ(α)) from its own
    activations, layer by layer from the input with the network in eval mode.

    ``layers``: BN module names (``"bn1"`` means feature ``"bn1"``, the BN's **input**, and
    buffers ``bn1.running_mean``, ``bn1.running_var``) or ``(input, running_mean,
    running_var)`` triples. ``measure(params, [input])`` returns the statistics of that BN's
    input with every earlier BN already reset. ``variance``: ``"unbiased"`` (PyTorch's
    ``running_var``, default) or ``"population"``. Barriers and LLFC of BatchNorm networks
    should be measured after a reset. Returns new arrays; ``num_batches_tracked`` is kept.
    """
    (fp,), (op,), _ = _params((params, "params"))
    items = _llfc.reset_batchnorm(fp, _layer_triples(layers, ("running_mean", "running_var")),
                                  _measure(measure, params, op), variance)
    return _restore(params, {k: a.dtype for k, a in fp}, op, items)


def fold_correction(
    params: Mapping[str, Any], weight: str, bias: str, scale: Any, shift: Any
) -> Dict[str, np.ndarray]:
    """Fold ``z ← scale ⊙ z + shift`` of the units a layer produces into it:
    ``W[k] ← scale_k W[k]``, ``b_k ← scale_k b_k + shift_k`` (a linear ``[out, in]``, conv
    ``[out, in, kh, kw]`` or norm ``[out]`` weight). Returns new arrays."""
    (fp,), (op,), _ = _params((params, "params"))
    items = _llfc.fold_correction(fp, weight, bias, np.asarray(scale, dtype=np.float64),
                                  np.asarray(shift, dtype=np.float64))
    return _restore(params, {k: a.dtype for k, a in fp}, op, items)


def mlp_repair(
    params_a: Mapping[str, Any],
    params_b: Mapping[str, Any],
    alpha: float,
    x: Any,
    *,
    zero_std_tolerance: float = 1e-9,
) -> Repaired:
    """REPAIR of the reference ReLU MLP (``layers.{i}.weight/bias``) on inputs ``x``
    (``[samples, in]``): every hidden layer's pre-activations, measured in Rust with the GIL
    released. ``params_b`` should already be aligned to A. α = 1 returns A and α = 0 B exactly.
    """
    (fa, fb), (oa, _), dtype = _params((params_a, "params_a"), (params_b, "params_b"))
    xs = np.asarray(_float_array(x, "x"), dtype=dtype)
    d = _llfc.mlp_repair(fa, fb, float(alpha), xs, zero_std_tolerance)
    return _repaired(d, params_a, {k: a.dtype for k, a in fa}, oa)
