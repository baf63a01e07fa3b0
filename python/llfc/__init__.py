"""llfc: linear mode connectivity, LLFC and Git Re-Basin permutation matching.

A thin Python layer over the Rust crate ``llfc`` (PyO3 + maturin): NumPy arrays in and out,
the GIL released during every computation (run several alignments from a thread pool), and
Rust errors raised as ``ValueError`` (bad input) or ``OSError`` (files).

Conventions (the crate's): tensors use PyTorch layouts (a linear weight is ``[out, in]``, a conv
weight ``[out, in, kh, kw]``); a permutation ``p`` maps model A's unit ``i`` to model B's unit
``p[i]``; matching permutes **B towards A**; interpolation is ``θ(α) = α θ_A + (1 − α) θ_B``
(``α = 1`` is A).

PyTorch users pass ``{k: t.detach().cpu().numpy() for k, t in model.state_dict().items()}``
and load results back with ``model.load_state_dict({k: torch.from_numpy(v) for k, v in out.items()})``.

Areas: linear assignment (a SciPy drop-in), permutation specs (builders, builtins for
torchvision / the LLFC paper / Hugging Face transformers, the extended JSON form and the
functional ``check_invariance``), weight / activation / commutativity matching, LLFC metrics
and the error attribution, REPAIR and the BatchNorm reset, and ``llfc.io``. Functions that need
the model's forward pass (``check_invariance``, ``repair``, ``reset_batchnorm``) take it as a
Python callable, so any framework works.

Parameter sets (``params_a``, ``params_b``, ``params``) are any mapping of names to arrays, in
order. Floating tensors are computed in float32 when every one is float32, else in float64, and
returned in their own dtype; integer and boolean tensors (``num_batches_tracked``) pass through.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import _llfc
from ._llfc import ActivationStats, Assignment, PermutationSpec

__version__ = _llfc.__version__

__all__ = [
    "ActivationStats",
    "Assignment",
    "Barrier",
    "Commutativity",
    "CommutativityMatching",
    "InvarianceReport",
    "LlfcLayer",
    "Matching",
    "PermutationSpec",
    "SampleStats",
    "WeakAdditivity",
    "activation_matching",
    "apply_permutations",
    "barrier",
    "commutativity",
    "commutativity_matching",
    "commutativity_objective",
    "commutativity_residual",
    "cosine_distances",
    "io",
    "linear_sum_assignment",
    "llfc_layer",
    "solve_assignment",
    "weak_additivity",
    "weight_matching",
]

Params = Mapping[str, Any]
Perms = Dict[str, np.ndarray]

# ---------------------------------------------------------------------------- conversions


def _float_array(x: Any, name: str) -> np.ndarray:
    """``x`` as a float32/float64 array: other real dtypes are cast to float64 (SciPy's rule)."""
    a = np.asarray(x)
    if a.dtype in (np.float32, np.float64):
        return a
    if a.dtype.kind in "biuf":
        return a.astype(np.float64, casting="safe" if a.dtype.kind != "f" else "same_kind")
    raise TypeError(f"{name}: expected a real (float, integer or bool) array, got dtype {a.dtype}")


def _same_float(arrays: Sequence[Any], names: Sequence[str]) -> List[np.ndarray]:
    """Arrays converted to one float dtype (float32 only if all are float32)."""
    out = [_float_array(a, n) for a, n in zip(arrays, names)]
    dtype = np.float32 if all(a.dtype == np.float32 for a in out) else np.float64
    return [a.astype(dtype, copy=False) for a in out]


def _split(params: Params, what: str) -> Tuple[List[Tuple[str, np.ndarray]], Dict[str, np.ndarray]]:
    """(float tensors in order, other tensors) of a parameter mapping."""
    if not isinstance(params, Mapping):
        raise TypeError(f"{what}: expected a mapping of names to arrays, got {type(params).__name__}")
    floats, others = [], {}
    for k, v in params.items():
        if not isinstance(k, str):
            raise TypeError(f"{what}: parameter names must be str, got {k!r}")
        a = np.asarray(v)
        if a.dtype.kind == "f":
            floats.append((k, a))
        elif a.dtype.kind in "biu":
            others[k] = a
        else:
            raise TypeError(f"{what}: parameter {k!r} has unsupported dtype {a.dtype}")
    return floats, others


def _params(*sets: Tuple[Params, str]):
    """Float tensors of each set in one common dtype, the sets' other tensors, and that dtype."""
    split = [_split(p, w) for p, w in sets]
    all_f32 = all(a.dtype == np.float32 for fl, _ in split for _, a in fl)
    dtype = np.float32 if all_f32 else np.float64
    floats = [[(k, a.astype(dtype, copy=False)) for k, a in fl] for fl, _ in split]
    return floats, [o for _, o in split], dtype


def _float_items(params: Params) -> Tuple[List[Tuple[str, np.ndarray]], List[str]]:
    """The float tensors of a mapping in one dtype, and the names of the others (used by
    ``PermutationSpec.validate`` and ``perm_sizes``)."""
    (floats,), (others,), _ = _params((params, "params"))
    return floats, list(others)


def _check_spec_floats(spec: PermutationSpec, others: Dict[str, np.ndarray], what: str) -> None:
    for name in spec.to_dict():
        if name in others:
            raise ValueError(
                f"{what}: the spec permutes {name!r}, which is a {others[name].dtype} tensor "
                "(only floating-point tensors can be permuted)"
            )


def _restore(params: Params, dtypes: Mapping[str, np.dtype], others: Mapping[str, np.ndarray], items) -> Dict[str, np.ndarray]:
    """A result parameter set in the order of ``params``: the computed float tensors ``items``
    back in their own dtypes, the integer tensors ``others`` copied through."""
    new = dict(items)
    return {k: new[k].astype(dtypes[k], copy=False) if k in new else np.array(others[k]) for k in params}


def _forward_items(forward: Callable[[Dict[str, np.ndarray], Any], Any], params: Params):
    """The native ``check_invariance``'s callback: ``(items, inputs) -> float array``, calling
    ``forward`` with a full parameter dict in the caller's order (integer tensors included)."""
    if not callable(forward):
        raise TypeError(f"forward: expected a callable, got {type(forward).__name__}")
    keys = list(params)
    others = {k: np.asarray(v) for k, v in params.items() if np.asarray(v).dtype.kind in "biu"}

    def call(items, inputs):
        got = dict(items)
        out = forward({k: got[k] if k in got else others[k] for k in keys}, inputs)
        return _float_array(out, "forward's output")

    return call


def _perm_arrays(perms: Mapping[str, Any]) -> Perms:
    out = {}
    for k, v in perms.items():
        a = np.asarray(v)
        if a.ndim != 1 or a.dtype.kind not in "iu":
            raise ValueError(f"permutation {k!r} must be a 1-D integer array, got {a.dtype} {a.shape}")
        out[k] = a.astype(np.int64)
    return out


# ---------------------------------------------------------------------- linear assignment


def solve_assignment(
    cost_matrix: Any,
    maximize: bool = False,
    *,
    solver: str = "native",
    ties: str = "scipy",
    warm_start: Optional[Assignment] = None,
    presolve: str = "auto",
    candidates: str = "auto",
) -> Assignment:
    """Solve a linear assignment problem and return an :class:`Assignment` with its duals.

    Same contract as :func:`linear_sum_assignment`; the returned object also carries the total
    and the dual potentials ``u``, ``v``, and can be passed back as ``warm_start`` to re-solve a
    slightly changed matrix of the same shape faster (the result is exactly as optimal).

    ``solver``: ``"native"`` (Jonker–Volgenant / Crouse shortest augmenting paths, default) or
    ``"kuhn-munkres"`` (an independent cross-check, no duals). ``ties``: ``"scipy"`` (default:
    among several optimal assignments, the one SciPy returns) or ``"any"`` (fastest).

    ``presolve`` and ``candidates`` (each ``"auto"``, the default, ``"always"`` or ``"never"``)
    switch the native solver's two exact presolves: an f32 solve of large float64 matrices and
    the sparse candidate lists of large square matrices (from 2048 × 2048), each followed by the
    duality certificate on the full matrix, so the optimum is the same either way; ``"never"``
    is for timing the plain solver. Warm starts use neither.
    """
    a = np.asarray(cost_matrix)
    if a.ndim != 2:
        raise ValueError(f"expected a matrix (2-D array), got a {a.ndim}-D array")
    if a.dtype not in (np.float32, np.float64):
        if a.dtype.kind not in "biuf":
            # SciPy's message for strings and objects.
            raise TypeError(f"Cannot cast array data from {a.dtype!r} to dtype('float64') according to the rule 'safe'")
        a = a.astype(np.float64)
    return _llfc.solve_assignment(a, bool(maximize), solver, ties, warm_start, presolve, candidates)


def linear_sum_assignment(
    cost_matrix: Any,
    maximize: bool = False,
    *,
    solver: str = "native",
    warm_start: Optional[Assignment] = None,
    presolve: str = "auto",
    candidates: str = "auto",
) -> Tuple[np.ndarray, np.ndarray]:
    """Drop-in replacement for ``scipy.optimize.linear_sum_assignment``.

    Minimise (or maximise) ``cost_matrix[row_ind, col_ind].sum()`` over assignments of rows to
    columns. Rectangular matrices are allowed (every row is assigned when ``rows <= cols``,
    every column otherwise). NaN raises ``ValueError("... contains invalid numeric entries")``;
    ``+inf`` (``-inf`` when maximising) marks a forbidden pair, and a matrix whose every complete
    assignment uses one raises ``ValueError("cost matrix is infeasible ...")``. float32 and float64
    matrices are read as they are (any memory order, no copy for C order); other real dtypes are
    converted to float64. Among several optimal assignments the one SciPy returns is returned.

    Returns ``(row_ind, col_ind)``: int64 arrays, ``row_ind`` increasing. The keyword options
    are those of :func:`solve_assignment`.

    Examples
    --------
    >>> import numpy as np, llfc
    >>> llfc.linear_sum_assignment(np.array([[4, 1, 3], [2, 0, 5], [3, 2, 2]]))
    (array([0, 1, 2]), array([1, 0, 2]))
    """
    sol = solve_assignment(
        cost_matrix,
        maximize,
        solver=solver,
        warm_start=warm_start,
        presolve=presolve,
        candidates=candidates,
    )
    return sol.row_ind, sol.col_ind


# ---------------------------------------------------------------------------- matching


@dataclass(frozen=True)
class Matching:
    """Result of :func:`weight_matching`.

    ``perms``: one int64 permutation per name of the spec (A's unit ``i`` ↔ B's unit ``p[i]``);
    ``objective``: ``⟨θ_A, π(θ_B)⟩``; ``initial_objective``: at the initial permutations;
    ``sweeps``; ``converged`` (False if ``max_iter`` stopped the loop); ``history``: the
    objective after each sweep.
    """

    perms: Perms
    objective: float
    initial_objective: float
    sweeps: int
    converged: bool
    history: List[float] = field(default_factory=list)


def weight_matching(
    spec: PermutationSpec,
    params_a: Params,
    params_b: Params,
    *,
    seed: int = 0,
    max_iter: int = 100,
    fixed_order: Union[bool, Sequence[str]] = False,
    init: Optional[Mapping[str, Any]] = None,
    tolerance: float = 1e-12,
    solver: str = "native",
    warm_start: bool = True,
    progress: Optional[Callable[[dict], Any]] = None,
) -> Matching:
    """Weight matching (Git Re-Basin, Algorithm 1) of ``params_b`` onto ``params_a``.

    Coordinate ascent on ``⟨θ_A, π(θ_B)⟩``: each sweep visits the spec's permutations (in an
    order drawn from ``seed``, or the spec's name order with ``fixed_order=True``, or the given
    sequence of names) and solves one linear assignment per permutation; it stops after a sweep
    without progress (gain ``<= tolerance``) or after ``max_iter`` sweeps.

    ``progress`` is called after every step with a dict ``{"event": "step", "sweep", "perm",
    "before", "after"}`` and after every sweep with ``{"event": "sweep", "sweep", "objective",
    "progress"}`` (e.g. ``lambda e: bar.update(e["event"] == "sweep")`` with tqdm). An exception
    raised by it, or Ctrl-C, stops the run and propagates. The GIL is released meanwhile.
    """
    (fa, fb), (oa, ob), _ = _params((params_a, "params_a"), (params_b, "params_b"))
    _check_spec_floats(spec, oa, "params_a")
    _check_spec_floats(spec, ob, "params_b")
    if fixed_order is True:
        order = spec.perm_names()
    elif fixed_order is False or fixed_order is None:
        order = None
    else:
        order = [str(x) for x in fixed_order]
    init_arrays = None if init is None else _perm_arrays(init)
    d = _llfc.weight_matching(
        spec, fa, fb, seed=seed, max_iter=max_iter, order=order, init=init_arrays,
        tolerance=tolerance, solver=solver, warm_start=warm_start, progress=progress,
    )
    return Matching(**d)


def apply_permutations(spec: PermutationSpec, perms: Mapping[str, Any], params: Params) -> Dict[str, np.ndarray]:
    """Permute a parameter set: for every parameter and axis the spec names, ``W ← W[p]`` along
    that axis (``P W``, ``W Pᵀ``). Returns new arrays in the order and dtypes of ``params``;
    the inputs are untouched; integer tensors are copied through."""
    (floats,), (others,), _ = _params((params, "params"))
    _check_spec_floats(spec, others, "params")
    permuted = _llfc.apply_permutations(spec, _perm_arrays(perms), floats)
    return _restore(params, {k: a.dtype for k, a in floats}, others, permuted)


def activation_matching(
    stats: Mapping[str, ActivationStats], statistic: str = "correlation", *, solver: str = "native"
) -> Perms:
    """Activation matching: for each named layer, the permutation maximising
    ``Σ_i C[i, p(i)]`` with ``C`` the layer's ``statistic`` (``"correlation"``,
    ``"covariance"`` or ``"inner-product"``). Layers are solved in parallel."""
    return _llfc.activation_matching(dict(stats), statistic, solver)


@dataclass(frozen=True)
class InvarianceReport:
    """Result of :meth:`PermutationSpec.check_invariance`: ``passed`` (``max_abs_diff <= tol``),
    ``max_abs_diff`` = ``max |f(π(θ); x) − f(θ; x)|`` with every permutation applied,
    ``max_abs_output`` = ``max |f(θ; x)|``, the random ``perms`` applied, and, only when the
    check failed, ``per_perm`` (each permutation applied alone: its ``max |Δ|``) and
    ``broken`` (the permutations that change the output on their own)."""

    passed: bool
    broken: List[str]
    max_abs_diff: float
    max_abs_output: float
    tol: float
    perms: Perms
    per_perm: Dict[str, float]


@dataclass(frozen=True)
class CommutativityMatching:
    """Result of :func:`commutativity_matching` (``objective`` is ``Σ_ℓ J_ℓ``, smaller is better)."""

    perms: Perms
    objective: float
    initial_objective: float
    layer_objectives: List[float]
    sweeps: int
    converged: bool


def commutativity_matching(
    params_a: Params,
    params_b: Params,
    x: Any,
    *,
    start: str = "identity",
    statistic: str = "correlation",
    max_iter: int = 100,
    seed: int = 0,
    tolerance: float = 1e-4,
) -> CommutativityMatching:
    """Commutativity matching of two ReLU MLPs (``layers.{i}.weight/bias``) on inputs ``x``
    (``[samples, in]``): permutations of B minimising the per-sample squared commutativity
    residual ``Σ_ℓ ‖(W_A − W̃_B)(H_A − H̃_B)‖²`` (Zhou et al. 2023, Def. 4). ``start``:
    ``"identity"``, ``"weight"`` or ``"activation"`` matching. A step is taken only if it
    lowers the objective by more than ``tolerance`` times it (the Rust default, ``1e-4``)."""
    (fa, fb), _, dtype = _params((params_a, "params_a"), (params_b, "params_b"))
    xs = np.asarray(_float_array(x, "x"), dtype=dtype)
    d = _llfc.commutativity_matching(fa, fb, xs, start=start, statistic=statistic,
                                     max_iter=max_iter, seed=seed, tolerance=tolerance)
    return CommutativityMatching(**d)


def commutativity_objective(params_a: Params, params_b: Params, x: Any, perms: Mapping[str, Any]) -> Tuple[float, List[float]]:
    """The commutativity objective of (A, π(B)) on ``x``: ``(total, per-layer J_ℓ)``."""
    (fa, fb), _, dtype = _params((params_a, "params_a"), (params_b, "params_b"))
    xs = np.asarray(_float_array(x, "x"), dtype=dtype)
    d = _llfc.commutativity_objective(fa, fb, xs, _perm_arrays(perms))
    return d["total"], d["layers"]


# ----------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class SampleStats:
    """Per-sample values (``NaN`` where a sample was skipped, e.g. a zero vector), with the
    count of defined and skipped samples and their mean and population standard deviation
    (``None`` if every sample was skipped)."""

    values: np.ndarray
    count: int
    skipped: int
    mean: Optional[float]
    std: Optional[float]


@dataclass(frozen=True)
class LlfcLayer:
    """LLFC at one layer and α: ``distance`` (``1 − cos⟨f(θ(α)), α f_A + (1−α) f_B⟩`` per sample),
    ``baseline`` (``1 − cos⟨f_A, f_B⟩``), the scale ``coef`` and ``c = 1/coef`` per sample, and
    the whole-array ``matrix_coef`` / ``matrix_c``."""

    alpha: float
    distance: SampleStats
    baseline: SampleStats
    coef: SampleStats
    c: SampleStats
    matrix_coef: Optional[float]
    matrix_c: Optional[float]


@dataclass(frozen=True)
class WeakAdditivity:
    """Weak additivity of ReLU at α: ``relative`` = ``‖left − right‖ / ‖right‖``, ``vanilla`` =
    ``‖left − right‖² / (‖left‖ ‖right‖)``, per-sample ``cosine`` distances."""

    alpha: float
    relative: Optional[float]
    vanilla: Optional[float]
    cosine: SampleStats


@dataclass(frozen=True)
class Commutativity:
    """Commutativity at one layer: ``relative`` = ``‖R‖ / ‖W_A H_A + W_B H_B‖``, the vanilla
    distance, the A-vs-B baseline, and ``‖R‖``."""

    relative: Optional[float]
    vanilla: Optional[float]
    baseline: Optional[float]
    residual_norm: float


@dataclass(frozen=True)
class Barrier:
    """A barrier's ``height``, the ``alpha`` where it is reached and its ``index`` in the grid."""

    height: float
    alpha: float
    index: int


def _stats(d: dict) -> SampleStats:
    return SampleStats(**d)


def _features(arrays: Sequence[Any], names: Sequence[str]) -> List[np.ndarray]:
    return _same_float(arrays, names)


def cosine_distances(a: Any, b: Any, variant: str = "signed") -> SampleStats:
    """Per-sample ``1 − cos⟨a_i, b_i⟩`` (``variant="absolute"``: ``1 − |cos|``) of two feature
    arrays ``[samples, ...]`` flattened per sample; zero vectors are skipped."""
    a, b = _features([a, b], ["a", "b"])
    return _stats(_llfc.cosine_distances(a, b, variant))


def llfc_layer(f_alpha: Any, f_a: Any, f_b: Any, alpha: float, variant: str = "signed") -> LlfcLayer:
    """LLFC at one layer: features of ``θ(α)``, of A and of B on the same samples."""
    x, a, b = _features([f_alpha, f_a, f_b], ["f_alpha", "f_a", "f_b"])
    d = _llfc.llfc_layer(x, a, b, float(alpha), variant)
    for k in ("distance", "baseline", "coef", "c"):
        d[k] = _stats(d[k])
    return LlfcLayer(**d)


def weak_additivity(z_a: Any, z_b: Any, alpha: float) -> WeakAdditivity:
    """Weak additivity of ReLU on the pre-activations ``Z_A``, ``Z_B`` at ``alpha``."""
    a, b = _features([z_a, z_b], ["z_a", "z_b"])
    d = _llfc.weak_additivity(a, b, float(alpha))
    d["cosine"] = _stats(d["cosine"])
    return WeakAdditivity(**d)


def commutativity_residual(w_a: Any, w_b: Any, h_a: Any, h_b: Any) -> np.ndarray:
    """``R = (H_A − H_B)(W_A − W_B)ᵀ`` (``[samples, out]``) for weights ``[out, in]`` and
    inputs ``[samples, in]``."""
    return _llfc.commutativity_residual(*_features([w_a, w_b, h_a, h_b], ["w_a", "w_b", "h_a", "h_b"]))


def commutativity(w_a: Any, w_b: Any, h_a: Any, h_b: Any) -> Commutativity:
    """Norms of the commutativity residual (see :class:`Commutativity`)."""
    d = _llfc.commutativity(*_features([w_a, w_b, h_a, h_b], ["w_a", "w_b", "h_a", "h_b"]))
    return Commutativity(**d)


def barrier(alphas: Iterable[float], values: Iterable[float], kind: str = "interpolated") -> Barrier:
    """The barrier of a curve ``values`` over the grid ``alphas`` (containing 0 and 1):
    ``"interpolated"``: ``max_α [v(α) − (α v(1) + (1 − α) v(0))]``; ``"midpoint"``:
    ``max_α v(α) − ½ (v(0) + v(1))``."""
    h, a, i = _llfc.barrier([float(x) for x in alphas], [float(x) for x in values], kind)
    return Barrier(h, a, i)


from . import io  # noqa: E402  (the submodules use the helpers above)
from ._attribution import *  # noqa: E402,F401,F403
from ._attribution import __all__ as _attribution_all  # noqa: E402
from ._repair import *  # noqa: E402,F401,F403
from ._repair import __all__ as _repair_all  # noqa: E402

__all__ += _attribution_all + _repair_all
