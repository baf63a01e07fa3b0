"""Weight matching, permutations and specs through the Python API."""

import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import llfc
from conftest import mlp_forward, mlp_shapes, planted, random_params, resnet20_shapes, vgg_shapes

CASES = [
    ("mlp", llfc.PermutationSpec.mlp(4), mlp_shapes([10, 24, 24, 24, 5])),
    ("vgg", llfc.PermutationSpec.vgg(num_conv=3, num_linear=2), vgg_shapes([8, 12, 16, 20, 10], 2)),
    ("resnet20", llfc.PermutationSpec.resnet20(), resnet20_shapes(4)),
]


@pytest.mark.parametrize("name,spec,shapes", CASES, ids=[c[0] for c in CASES])
def test_planted_permutations_are_recovered(name, spec, shapes):
    a = random_params(shapes, 1)
    spec.validate(a)
    b, perms = planted(spec, a, 2)
    m = llfc.weight_matching(spec, a, b)
    assert m.converged and set(m.perms) == set(perms)
    for k in perms:
        assert m.perms[k].dtype == np.int64
        assert np.array_equal(m.perms[k], perms[k]), k
    back = llfc.apply_permutations(spec, m.perms, b)
    assert list(back) == list(a)
    for k in a:
        assert np.array_equal(back[k], a[k])
    # The objective at the recovered permutations is ⟨θ_A, θ_A⟩, computed here in NumPy.
    assert m.objective == pytest.approx(sum(float((v * v).sum()) for v in a.values()), rel=1e-12)
    assert m.history[-1] == m.objective and m.sweeps == len(m.history)


def test_permuted_mlp_computes_the_same_function():
    a = random_params(mlp_shapes([7, 30, 30, 30, 4]), 3)
    spec = llfc.PermutationSpec.mlp(4)
    rng = np.random.default_rng(4)
    perms = {k: rng.permutation(n) for k, n in spec.perm_sizes(a).items()}
    b = llfc.apply_permutations(spec, perms, a)
    x = rng.standard_normal((50, 7))
    assert np.max(np.abs(mlp_forward(a, x) - mlp_forward(b, x))) <= 1e-12
    assert any(not np.array_equal(a[k], b[k]) for k in a)
    # Apply the same permutation by hand with NumPy indexing.
    w0 = a["layers.0.weight"][perms["P_0"], :]
    assert np.array_equal(b["layers.0.weight"], w0)
    assert np.array_equal(b["layers.1.weight"], a["layers.1.weight"][perms["P_1"]][:, perms["P_0"]])


def test_dtypes_integer_tensors_and_inputs_untouched():
    shapes = mlp_shapes([5, 12, 12, 3])
    a = random_params(shapes, 5, np.float32)
    a["num_batches_tracked"] = np.array(7, dtype=np.int64)
    keep = {k: v.copy() for k, v in a.items()}
    spec = llfc.PermutationSpec.mlp(3)
    b, perms = planted(spec, a, 6)
    assert b["layers.0.weight"].dtype == np.float32 and b["num_batches_tracked"].dtype == np.int64
    m = llfc.weight_matching(spec, a, b)
    for k in perms:
        assert np.array_equal(m.perms[k], perms[k])
    for k in a:
        assert np.array_equal(a[k], keep[k])
    v = spec.validate(a)
    assert v["unmentioned"] == ["num_batches_tracked"]
    assert v["perm_sizes"] == {"P_0": 12, "P_1": 12}


def test_progress_fixed_order_init_and_max_iter():
    a = random_params(mlp_shapes([6, 16, 16, 16, 3]), 7)
    b = random_params(mlp_shapes([6, 16, 16, 16, 3]), 8)
    spec = llfc.PermutationSpec.mlp(4)
    events = []
    m = llfc.weight_matching(spec, a, b, fixed_order=True, progress=events.append)
    steps = [e for e in events if e["event"] == "step"]
    sweeps = [e for e in events if e["event"] == "sweep"]
    assert len(sweeps) == m.sweeps and [e["objective"] for e in sweeps] == m.history
    assert [e["perm"] for e in steps[:3]] == ["P_0", "P_1", "P_2"]
    again = llfc.weight_matching(spec, a, b, init=m.perms)
    assert again.initial_objective == pytest.approx(m.objective, rel=1e-12)
    one = llfc.weight_matching(spec, a, b, fixed_order=True, max_iter=1)
    assert one.sweeps == 1 and one.history == m.history[:1]


def test_progress_exceptions_propagate():
    a = random_params(mlp_shapes([6, 16, 16, 3]), 9)
    b = random_params(mlp_shapes([6, 16, 16, 3]), 10)

    def boom(event):
        raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        llfc.weight_matching(llfc.PermutationSpec.mlp(3), a, b, progress=boom)

    def interrupt(event):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        llfc.weight_matching(llfc.PermutationSpec.mlp(3), a, b, progress=interrupt)


def test_ctrl_c_interrupts_a_long_matching():
    """A real SIGINT while the main thread is inside the Rust loop (GIL released) raises
    KeyboardInterrupt at the next step: the signal is sent 30 % into the first sweep of a run
    that needs several sweeps, and the run stops long before its uninterrupted duration.
    Widths of 1024 make the run last ~1 s (first sweep ~0.4 s), so that the timer thread fires
    well inside it even on a loaded machine (at 384 units the whole run took 76 ms and the
    signal could arrive after it had returned)."""
    spec = llfc.PermutationSpec.mlp(5)
    a = random_params(mlp_shapes([64, 1024, 1024, 1024, 1024, 10]), 11)
    b = random_params(mlp_shapes([64, 1024, 1024, 1024, 1024, 10]), 12)
    t0 = time.perf_counter()
    llfc.weight_matching(spec, a, b, fixed_order=True, max_iter=1)
    first_sweep = time.perf_counter() - t0
    t0 = time.perf_counter()
    full = llfc.weight_matching(spec, a, b, fixed_order=True)
    t_full = time.perf_counter() - t0
    assert full.sweeps >= 3
    timer = threading.Timer(0.3 * first_sweep, lambda: os.kill(os.getpid(), signal.SIGINT))
    # A process started in the background by a non-interactive shell (`cmd &`, as CI runners
    # may do) inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler:
    # install Python's own for the test, and restore what was there.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        t0 = time.perf_counter()
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            llfc.weight_matching(spec, a, b, fixed_order=True)
        elapsed = time.perf_counter() - t0
        timer.join()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert elapsed < 0.9 * t_full, (elapsed, first_sweep, t_full)


def test_thread_pool_runs_alignments_in_parallel():
    """Four alignments in a thread pool: identical results, and faster than in sequence
    (the GIL is released; the LAP of each run is single-threaded)."""
    spec = llfc.PermutationSpec.mlp(3)  # LAP-bound: two 512-unit permutations, ~20 sweeps
    pairs = [
        (random_params(mlp_shapes([32, 512, 512, 10]), 20 + i),
         random_params(mlp_shapes([32, 512, 512, 10]), 30 + i))
        for i in range(4)
    ]
    run = lambda ab: llfc.weight_matching(spec, ab[0], ab[1])  # noqa: E731
    run(pairs[0])  # warm-up (thread pools, page faults)
    best_seq, best_par = np.inf, np.inf
    for _ in range(5):  # best of up to 5 rounds: the CI machine may be shared and noisy
        t0 = time.perf_counter()
        seq = [run(p) for p in pairs]
        best_seq = min(best_seq, time.perf_counter() - t0)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(4) as ex:
            par = list(ex.map(run, pairs))
        best_par = min(best_par, time.perf_counter() - t0)
        if best_par < best_seq:
            break
    for s, p in zip(seq, par):
        assert s.objective == p.objective
        assert all(np.array_equal(s.perms[k], p.perms[k]) for k in s.perms)
    assert best_par < best_seq, (best_par, best_seq)


def test_gil_is_released_during_a_solve():
    """A pure-Python thread keeps running while the main thread is inside a large solve."""
    c = np.random.default_rng(0).random((1500, 1500))
    ticks = []
    stop = threading.Event()

    def counter():
        while not stop.is_set():
            ticks.append(1)
            time.sleep(0.001)

    t = threading.Thread(target=counter)
    t.start()
    time.sleep(0.01)
    before = len(ticks)
    t0 = time.perf_counter()
    llfc.linear_sum_assignment(c)
    elapsed = time.perf_counter() - t0
    during = len(ticks) - before
    stop.set()
    t.join()
    assert elapsed > 0.02 and during >= 5, (elapsed, during)


def test_specs_round_trip_and_bad_input(tmp_path):
    spec = llfc.PermutationSpec.resnet20()
    d = spec.to_dict()
    assert llfc.PermutationSpec.from_dict(d) == spec
    assert d["layer1.0.conv1.weight"] == [d["layer1.0.conv1.weight"][0], "P_res1"] or len(d) > 0
    path = tmp_path / "spec.json"
    path.write_text(spec.to_json())
    assert llfc.PermutationSpec.from_json(path) == spec
    assert json.loads(spec.to_json()) == d
    custom = llfc.PermutationSpec({"fc1.weight": ["H", None], "fc1.bias": ["H"], "fc2.weight": [None, "H"]})
    assert custom.perm_names() == ["H"] and len(custom) == 3
    with pytest.raises(ValueError, match="invalid permutation spec"):
        llfc.PermutationSpec.from_json_str("[1, 2]")
    with pytest.raises(OSError):
        llfc.PermutationSpec.from_json(tmp_path / "missing.json")
    a = random_params(mlp_shapes([5, 8, 3]), 1)
    with pytest.raises(ValueError, match="layers.2"):
        llfc.PermutationSpec.mlp(3).validate(a)  # the spec names a layer the model lacks
    bad = dict(a)
    bad["layers.1.weight"] = np.zeros((3, 9))
    with pytest.raises(ValueError, match="P_0"):
        llfc.PermutationSpec.mlp(2).validate(bad)
    with pytest.raises(ValueError, match="shortcut"):
        llfc.PermutationSpec.resnet20("identity")


def test_matching_bad_input():
    spec = llfc.PermutationSpec.mlp(2)
    a = random_params(mlp_shapes([5, 8, 3]), 1)
    b = random_params(mlp_shapes([5, 9, 3]), 2)
    with pytest.raises(ValueError):
        llfc.weight_matching(spec, a, b)  # widths differ
    nan = dict(a)
    nan["layers.0.weight"] = a["layers.0.weight"].copy()
    nan["layers.0.weight"][0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        llfc.weight_matching(spec, a, nan)
    ints = dict(a)
    ints["layers.0.bias"] = np.arange(8)
    with pytest.raises(ValueError, match="integer|int64"):
        llfc.weight_matching(spec, a, ints)
    with pytest.raises(ValueError, match="P_0"):
        llfc.apply_permutations(spec, {"P_0": np.array([0, 0, 1, 2, 3, 4, 5, 6])}, a)
    with pytest.raises(ValueError, match="negative"):
        llfc.apply_permutations(spec, {"P_0": -np.arange(8)}, a)
    with pytest.raises(TypeError):
        llfc.weight_matching(spec, a, [1, 2])
    with pytest.raises(TypeError):
        llfc.apply_permutations(spec, {"P_0": np.arange(8)}, {"x": np.array(["a"])})
    # Non-contiguous views are read correctly (same result as a contiguous copy).
    big = {k: np.repeat(v[..., None], 2, axis=-1)[..., 0] for k, v in a.items()}
    assert not big["layers.0.weight"].flags.c_contiguous
    p = {"P_0": np.random.default_rng(0).permutation(8)}
    x, y = llfc.apply_permutations(spec, p, big), llfc.apply_permutations(spec, p, a)
    assert all(np.array_equal(x[k], y[k]) for k in a)
