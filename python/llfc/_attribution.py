"""LLFC error attribution and convolution metrics: the Python layer of
``llfc::metrics::attribution`` and ``llfc::metrics::{conv2d, conv_commutativity}``.

For ``θ(α) = α θ_A + (1 − α) θ_B`` and a chain of layers ``Z^ℓ = H^{ℓ−1} W^ℓᵀ + b^ℓ``,
``H^ℓ = σ(Z^ℓ)``, the deviation from the linear path obeys exactly

    ΔZ^ℓ = ΔH^{ℓ−1} W_αᵀ − α(1 − α)(H_A^{ℓ−1} − H_B^{ℓ−1})(W_A^ℓ − W_B^ℓ)ᵀ
    ΔH^ℓ = S^ℓ ⊙ ΔZ^ℓ + [σ(Z_lin^ℓ) − α σ(Z_A^ℓ) − (1 − α) σ(Z_B^ℓ)]

(``S`` the secant slope of σ), so the deviation of every layer is the sum of the transported
contributions of the commutativity sources ``C{ℓ}`` and the weak-additivity sources ``E{ℓ}``.
Every result reports, per source, the norm of its contribution, its inner product with the
deviation and its share ``⟨c, Δ⟩ / ‖Δ‖²`` (shares sum to 1), and the ``closure``
``‖Σ c − Δ‖ / ‖Δ‖`` (rounding only). Computed in float64.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import _llfc
from . import Commutativity, _float_array, _params, _same_float

__all__ = [
    "Attribution",
    "Deviation",
    "LayerAttribution",
    "LocalSplit",
    "Part",
    "attribution_dense",
    "attribution_mlp",
    "conv2d",
    "conv_commutativity",
    "local_split_activation",
    "local_split_conv",
    "local_split_dense",
]

Layer = Union[Any, Tuple[Any, Optional[Any]]]


@dataclass(frozen=True)
class Part:
    """One part ``c`` of a deviation ``Δ``: ``‖c‖``, ``⟨c, Δ⟩`` and the share
    ``⟨c, Δ⟩ / ‖Δ‖²`` (``None`` if ``Δ = 0``)."""

    norm: float
    inner: float
    share: Optional[float]


@dataclass(frozen=True)
class Deviation:
    """A deviation ``Δ = Z_α − Z_lin`` (or ``H_α − H_lin``): its ``norm``, the linear target's
    ``reference_norm``, their ratio ``relative``, the ``closure`` and the ``contributions``
    of the sources that reach it, keyed ``"C{ℓ}"`` (commutativity, ``−α(1 − α) C^ℓ``) and
    ``"E{ℓ}"`` (weak additivity of the ReLU after layer ℓ)."""

    norm: float
    reference_norm: float
    relative: Optional[float]
    closure: Optional[float]
    contributions: Dict[str, Part]


@dataclass(frozen=True)
class LayerAttribution:
    """Layer ``layer`` at ``alpha``: the pre-activation deviation ``pre`` (``ΔZ``) and the
    post-activation one ``post`` (``ΔH``)."""

    layer: int
    alpha: float
    pre: Deviation
    post: Deviation


@dataclass(frozen=True)
class Attribution:
    """The attribution of a chain: ``layers[i][ℓ]`` is layer ℓ at ``alphas[i]``; ``sources``
    in order of appearance (``C0, E0, C1, E1, …``); ``samples``."""

    alphas: List[float]
    sources: List[str]
    layers: List[List[LayerAttribution]]
    samples: int


@dataclass(frozen=True)
class LocalSplit:
    """One layer's deviation from its own features: ``propagated`` (what arrives from below)
    plus ``own`` (the layer's commutativity source, or ``E`` for an activation)."""

    alpha: float
    norm: float
    reference_norm: float
    relative: Optional[float]
    closure: Optional[float]
    propagated: Part
    own: Part


def _deviation(d: dict) -> Deviation:
    d = dict(d)
    d["contributions"] = {k: Part(**v) for k, v in d["contributions"].items()}
    return Deviation(**d)


def _attribution(d: dict) -> Attribution:
    layers = [
        [LayerAttribution(l["layer"], l["alpha"], _deviation(l["pre"]), _deviation(l["post"])) for l in row]
        for row in d["layers"]
    ]
    return Attribution(d["alphas"], d["sources"], layers, d["samples"])


def _split(d: dict) -> LocalSplit:
    d = dict(d)
    d["propagated"], d["own"] = Part(**d["propagated"]), Part(**d["own"])
    return LocalSplit(**d)


def _layers(layers: Sequence[Layer], what: str) -> List[Tuple[Any, Optional[Any]]]:
    """``(weight, bias or None)`` pairs from weights or pairs."""
    out = []
    for l in layers:
        if isinstance(l, tuple):
            if len(l) != 2:
                raise TypeError(f"{what}: expected a weight or a (weight, bias) pair, got a {len(l)}-tuple")
            out.append(l)
        else:
            out.append((l, None))
    return out


def _coerce(layers_list: Sequence[List[Tuple[Any, Optional[Any]]]], arrays: Sequence[Any], names: Sequence[str]):
    """Every weight, bias and array in one float dtype (float32 only if all are float32)."""
    flat, where = [], []
    for li, layers in enumerate(layers_list):
        for k, (w, b) in enumerate(layers):
            flat.append(w)
            where.append((li, k, 0))
            if b is not None:
                flat.append(b)
                where.append((li, k, 1))
    coerced = _same_float(list(flat) + list(arrays), [f"weight/bias {i}" for i in range(len(flat))] + list(names))
    out_layers = [[[w, b] for w, b in layers] for layers in layers_list]
    for (li, k, j), a in zip(where, coerced):
        out_layers[li][k][j] = a
    return [[tuple(p) for p in layers] for layers in out_layers], coerced[len(flat):]


def attribution_mlp(params_a: Mapping[str, Any], params_b: Mapping[str, Any], x: Any, alphas: Sequence[float]) -> Attribution:
    """The attribution of two reference ReLU MLPs (``layers.{i}.weight/bias``, ReLU after
    every layer but the logits; ``params_b`` aligned to A) on inputs ``x`` at each α."""
    (fa, fb), _, dtype = _params((params_a, "params_a"), (params_b, "params_b"))
    xs = np.asarray(_float_array(x, "x"), dtype=dtype)
    return _attribution(_llfc.attribution_mlp(fa, fb, xs, [float(a) for a in alphas]))


def attribution_dense(
    layers_a: Sequence[Layer],
    layers_b: Sequence[Layer],
    activations: Sequence[str],
    x: Any,
    alphas: Sequence[float],
    *,
    chunk_size: int = 256,
) -> Attribution:
    """The attribution of a chain of dense layers: ``layers_*`` are weights ``[out, in]`` or
    ``(weight, bias)`` pairs (bias ``None`` allowed, the same in both models), ``activations``
    one ``"relu"`` or ``"identity"`` per layer, ``x`` the input ``[samples, in]``. Samples are
    processed in blocks of ``chunk_size`` (memory), in parallel, without the GIL."""
    (la, lb), (xs,) = _coerce([_layers(layers_a, "layers_a"), _layers(layers_b, "layers_b")], [x], ["x"])
    return _attribution(_llfc.attribution_dense(la, lb, list(activations), xs, [float(a) for a in alphas], chunk_size))


def local_split_dense(layer_a: Layer, layer_b: Layer, h_a: Any, h_b: Any, h_alpha: Any, alpha: float) -> LocalSplit:
    """``ΔZ = ΔH W_αᵀ + K`` of one dense layer from what it reads in A, B and θ(α)
    (``[samples, in]``) and its weights (``[out, in]`` or ``(weight, bias)``)."""
    (la, lb), hs = _coerce([_layers([layer_a], "layer_a"), _layers([layer_b], "layer_b")],
                           [h_a, h_b, h_alpha], ["h_a", "h_b", "h_alpha"])
    return _split(_llfc.local_split_dense(la[0], lb[0], *hs, float(alpha)))


def _pair(v: Union[int, Sequence[int]], name: str) -> List[int]:
    if isinstance(v, (int, np.integer)):
        return [int(v), int(v)]
    t = [int(x) for x in v]
    if len(t) != 2:
        raise ValueError(f"{name}: expected an int or a pair (h, w), got {v!r}")
    return t


def _geometry(stride, padding, dilation, groups) -> tuple:
    return (_pair(stride, "stride"), _pair(padding, "padding"), _pair(dilation, "dilation"), int(groups))


def local_split_conv(
    layer_a: Layer, layer_b: Layer, h_a: Any, h_b: Any, h_alpha: Any, alpha: float,
    *, stride=1, padding=0, dilation=1, groups=1,
) -> LocalSplit:
    """:func:`local_split_dense` for an ``nn.Conv2d`` layer: weights ``[out, in/groups, kh,
    kw]`` (or ``(weight, bias)``), input maps ``[samples, in, h, w]``."""
    (la, lb), hs = _coerce([_layers([layer_a], "layer_a"), _layers([layer_b], "layer_b")],
                           [h_a, h_b, h_alpha], ["h_a", "h_b", "h_alpha"])
    return _split(_llfc.local_split_conv(la[0], lb[0], *hs, float(alpha), *_geometry(stride, padding, dilation, groups)))


def local_split_activation(z_a: Any, z_b: Any, z_alpha: Any, alpha: float) -> LocalSplit:
    """``ΔH = S ⊙ ΔZ + E`` of a ReLU from the pre-activations in A, B and θ(α)."""
    za, zb, zal = _same_float([z_a, z_b, z_alpha], ["z_a", "z_b", "z_alpha"])
    return _split(_llfc.local_split_activation(za, zb, zal, float(alpha)))


def conv2d(weight: Any, x: Any, *, stride=1, padding=0, dilation=1, groups=1) -> np.ndarray:
    """``conv(W, x)`` as PyTorch's ``nn.Conv2d`` without bias (a cross-correlation), in float64:
    weight ``[out, in/groups, kh, kw]``, input ``[samples, in, h, w]``."""
    w, xs = _same_float([weight, x], ["weight", "x"])
    return _llfc.conv2d(w, xs, *_geometry(stride, padding, dilation, groups))


def conv_commutativity(w_a: Any, w_b: Any, h_a: Any, h_b: Any, *, stride=1, padding=0, dilation=1, groups=1) -> Commutativity:
    """:func:`llfc.commutativity` of a conv layer: every product ``W H`` is ``conv(W, H)``;
    ``R = conv(W_A − W_B, H_A − H_B)``."""
    arrays = _same_float([w_a, w_b, h_a, h_b], ["w_a", "w_b", "h_a", "h_b"])
    return Commutativity(**_llfc.conv_commutativity(*arrays, *_geometry(stride, padding, dilation, groups)))
