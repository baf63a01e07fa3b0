"""The package's surface: type stubs that match the runtime API, results that do not depend on
threads (the GIL is released), and the README's Python examples, run as written."""

import ast
import inspect
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

import llfc
from conftest import mlp_shapes, random_params

STUB = Path(llfc.__file__).with_name("__init__.pyi")
README = Path(__file__).resolve().parents[2] / "README.md"


def stub_defs():
    tree = ast.parse(STUB.read_text())
    funcs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    return funcs, classes


def test_every_public_name_has_a_stub_with_the_same_parameters():
    funcs, classes = stub_defs()
    for name in llfc.__all__:
        if name == "io":
            continue
        obj = getattr(llfc, name)
        assert name in funcs or name in classes, f"{name} is missing from __init__.pyi"
        if name in funcs and inspect.isfunction(obj):
            a = funcs[name].args
            stub = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
            assert stub == list(inspect.signature(obj).parameters), name
    # Methods of the native classes are declared too.
    spec_methods = {n.name for n in classes["PermutationSpec"].body if isinstance(n, ast.FunctionDef)}
    for m in ("builtin", "builtin_names", "gpt2", "bert", "llama", "resnet_cifar_option_a", "check_invariance", "random_perms"):
        assert m in spec_methods and hasattr(llfc.PermutationSpec, m), m
    unit_methods = {n.name for n in classes["UnitStats"].body if isinstance(n, ast.FunctionDef)}
    assert {m for m in dir(llfc.UnitStats) if not m.startswith("_")} <= unit_methods


def test_repair_and_attribution_in_threads_give_identical_results():
    shapes = mlp_shapes([16, 128, 128, 10])
    a, b = random_params(shapes, 1), random_params(shapes, 2)
    x = np.random.default_rng(3).standard_normal((2000, 16))

    def job(_):
        r = llfc.mlp_repair(a, b, 0.5, x)
        att = llfc.attribution_mlp(a, b, x, [0.5])
        return r.params["layers.1.weight"], att.layers[0][2].pre.norm

    seq = [job(i) for i in range(2)]
    with ThreadPoolExecutor(4) as pool:
        par = list(pool.map(job, range(4)))
    for w, n in par:
        assert np.array_equal(w, seq[0][0]) and n == seq[0][1]


def python_section():
    text = README.read_text()
    start = text.index("## Python")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else len(text)]


def test_readme_python_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", python_section(), re.S)
    assert len(blocks) >= 2, "the README's Python section has its examples"
    namespace = {}  # the examples continue one another
    for code in blocks:
        exec(compile(code, "README.md", "exec"), namespace)
    # What the REPAIR example's comment says.
    ns = namespace
    target = 0.5 * ns["hidden"](ns["a"], ns["x"])["layers.1"].std(0) + 0.5 * ns["hidden"](ns["b_aligned"], ns["x"])["layers.1"].std(0)
    np.testing.assert_allclose(ns["hidden"](ns["r"].params, ns["x"])["layers.1"].std(0), target, rtol=1e-10)
