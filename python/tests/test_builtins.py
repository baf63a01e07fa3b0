"""Builtin specs, option-A ResNets, transformer specs, the extended JSON form and
``check_invariance``, proved against forward passes written in NumPy in ``numpy_nets``."""

import json

import numpy as np
import pytest

import llfc
import numpy_nets as nets

VGG_WIDTHS = [4, 6, 8, 8, 8]
RESNET_WIDTHS = [4, 6, 8, 10]


def image(n, side, seed):
    return np.random.default_rng(seed).standard_normal((n, 3, side, side))


# (builtin name, params, forward, inputs)
def cnn_case(name):
    if name.startswith(("torchvision-vgg11", "llfc-vgg11")):
        bnorm, tv = name.endswith("-bn"), name.startswith("torchvision")
        p = nets.vgg_params(VGG_WIDTHS, 10, 5, bnorm, tv, seed=1)
        return p, lambda q, x: nets.vgg_forward(q, x, VGG_WIDTHS, bnorm, tv), image(3, 32, 2)
    if name in ("torchvision-resnet18", "cifar-resnet18"):
        tv = name.startswith("torchvision")
        p = nets.resnet_params(RESNET_WIDTHS, [2, 2, 2, 2], 5, tv, seed=3)
        return p, lambda q, x: nets.resnet_forward(q, x, [2, 2, 2, 2], tv), image(3, 16 if tv else 8, 4)
    if name == "torchvision-resnet50":
        p = nets.bottleneck_params([2, 3, 4, 5], [3, 4, 6, 3], 5, seed=20)
        return p, lambda q, x: nets.bottleneck_forward(q, x, [3, 4, 6, 3]), image(2, 16, 21)
    raise KeyError(name)


CNN_BUILTINS = ["torchvision-vgg11", "torchvision-vgg11-bn", "llfc-vgg11", "llfc-vgg11-bn", "torchvision-resnet18",
                "cifar-resnet18", "torchvision-resnet50"]


def test_builtin_names_and_unknown_names():
    names = llfc.PermutationSpec.builtin_names()
    for depth in (11, 13, 16, 19):
        for prefix in ("torchvision-vgg", "llfc-vgg"):
            assert f"{prefix}{depth}" in names and f"{prefix}{depth}-bn" in names
    for d in (18, 34, 50):
        assert f"torchvision-resnet{d}" in names and f"cifar-resnet{d}" in names
    assert len(set(names)) == len(names)
    # `_` stands for `-` (torchvision's module names).
    assert llfc.PermutationSpec.builtin("torchvision-vgg16_bn") == llfc.PermutationSpec.builtin("torchvision-vgg16-bn")
    with pytest.raises(ValueError, match="unknown builtin spec `vgg17`.*torchvision-vgg11"):
        llfc.PermutationSpec.builtin("vgg17")


@pytest.mark.parametrize("name", CNN_BUILTINS)
def test_cnn_builtins_are_symmetries_of_a_numpy_forward(name):
    p, forward, x = cnn_case(name)
    spec = llfc.PermutationSpec.builtin(name, p)  # validated against the checkpoint
    report = spec.check_invariance(p, forward, x, tol=1e-10, seed=5)
    assert report.passed and report.broken == [] and report.per_perm == {}
    assert report.max_abs_diff <= 1e-10 and report.max_abs_output > 1e-2  # outputs far above the tolerance
    assert set(report.perms) == set(spec.perm_names())
    assert all(not np.array_equal(q, np.arange(len(q))) for q in report.perms.values())
    # The same with the planted permutations applied here, compared by the NumPy forward.
    perms = spec.random_perms(p, seed=6)
    b = llfc.apply_permutations(spec, perms, p)
    assert np.max(np.abs(forward(b, x) - forward(p, x))) <= 1e-10
    assert any(not np.array_equal(b[k], p[k]) for k in p)


@pytest.mark.parametrize("name", ["llfc-vgg11-bn", "cifar-resnet18"])
def test_weight_matching_recovers_planted_permutations_of_builtins(name):
    p, _, _ = cnn_case(name)
    spec = llfc.PermutationSpec.builtin(name)
    perms = spec.random_perms(p, seed=7)
    inverse = {k: np.argsort(v) for k, v in perms.items()}
    b = llfc.apply_permutations(spec, inverse, p)
    m = llfc.weight_matching(spec, p, b)
    for k in perms:
        assert np.array_equal(m.perms[k], perms[k]), k


def test_wrong_spec_fails_the_check_and_names_the_permutation():
    p, forward, x = cnn_case("cifar-resnet18")
    d = llfc.PermutationSpec.builtin("cifar-resnet18").to_dict()
    # The shortcut conv of layer2.0 left out of P_res2: its output is no longer permuted.
    d["layer2.0.shortcut.0.weight"] = [None, "P_res1", None, None]
    for f in ("weight", "bias", "running_mean", "running_var"):
        d[f"layer2.0.shortcut.1.{f}"] = [None]
    report = llfc.PermutationSpec(d).check_invariance(p, forward, x, tol=1e-10)
    assert not report.passed and report.max_abs_diff > 1e-3
    assert report.broken == ["P_res2"]
    assert report.per_perm["P_res1"] <= 1e-10


def test_builtin_refuses_another_model():
    p, _, _ = cnn_case("cifar-resnet18")
    with pytest.raises(ValueError, match="P_res|layer|missing"):
        llfc.PermutationSpec.builtin("torchvision-resnet18", p)
    p["extra.weight"] = np.zeros(3)
    with pytest.raises(ValueError, match="does not know the parameters extra.weight"):
        llfc.PermutationSpec.builtin("cifar-resnet18", p)


def _option_a_bn_names(blocks):
    return ["bn1"] + [f"layer{s}.{k}.bn{j}" for s, n in enumerate(blocks, 1) for k in range(n) for j in (1, 2)]


@pytest.mark.parametrize("bn", ["full", "running-stats", "none"])
def test_option_a_resnet_is_a_symmetry(bn):
    blocks = [2, 1, 1]
    p = nets.resnet_option_a_params(4, blocks, 5, seed=8)
    x = image(3, 8, 9)
    kept = {"full": ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"),
            "running-stats": ("running_mean", "running_var", "num_batches_tracked"), "none": ()}[bn]
    names = _option_a_bn_names(blocks)
    p = {k: v for k, v in p.items() if k.rsplit(".", 1)[0] not in names or k.rsplit(".", 1)[1] in kept}

    def forward(q, x):
        # A missing affine part is the identity (affine=False); missing running statistics
        # are mean 0, variance 1 − eps: an identity normalisation.
        q = dict(q)
        for name in names:
            c = len(q[f"{name}.running_mean"]) if f"{name}.running_mean" in q else None
            if c is None:
                conv = "conv1" if name == "bn1" else name[:-3] + "conv" + name[-1]
                c = q[f"{conv}.weight"].shape[0]
                q[f"{name}.running_mean"], q[f"{name}.running_var"] = np.zeros(c), np.full(c, 1 - nets.EPS)
            q.setdefault(f"{name}.weight", np.ones(c))
            q.setdefault(f"{name}.bias", np.zeros(c))
        return nets.resnet_option_a_forward(q, x, blocks)

    spec = llfc.PermutationSpec.resnet_cifar_option_a(blocks, width=4, batch_norm=bn)
    assert spec.validate(p)["unmentioned"] == [k for k in p if k.endswith("num_batches_tracked")]
    report = spec.check_invariance(p, forward, x, tol=1e-10, seed=10)
    assert report.passed, report
    # The embedding: P_res2 (8 channels) holds P_res1 (4 channels) shifted to offset 8 / 4 = 2.
    r1, r2 = report.perms["P_res1"], report.perms["P_res2"]
    assert np.array_equal(r2[2:6], r1 + 2)
    spec.check_structure(report.perms)
    bad = dict(report.perms)
    bad["P_res2"] = np.roll(np.arange(8), 1)
    with pytest.raises(ValueError, match="P_res2"):
        spec.check_structure(bad)
    if bn == "full":
        assert llfc.PermutationSpec.resnet20_option_a(4) == llfc.PermutationSpec.resnet_cifar_option_a([3, 3, 3], 4)
    with pytest.raises(ValueError, match="invalid batch_norm"):
        llfc.PermutationSpec.resnet20_option_a(4, batch_norm="half")


def test_gpt2_spec_is_a_symmetry_and_heads_must_stay_whole():
    layers, heads, d = 2, 2, 8
    p = nets.gpt2_params(layers, d, vocab=11, positions=5, seed=11)
    ids = np.random.default_rng(12).integers(0, 11, size=(3, 5))
    forward = lambda q, x: nets.gpt2_forward(q, x, layers, heads)  # noqa: E731
    spec = llfc.PermutationSpec.gpt2(layers, heads, d)
    assert spec.validate(p)["unmentioned"] == [f"transformer.h.{i}.attn.bias" for i in range(layers)]
    report = spec.check_invariance(p, forward, ids, tol=1e-10, seed=13)
    assert report.passed and report.max_abs_output > 0.1, report
    spec.check_structure(report.perms)
    # Heads moved whole: every head's block of P_h0.qk maps to one block of the same σ as vo.
    qk, vo = report.perms["P_h0.qk"], report.perms["P_h0.vo"]
    dh = d // heads
    for h in range(heads):
        assert len({int(v) // dh for v in qk[h * dh:(h + 1) * dh]}) == 1
        assert qk[h * dh] // dh == vo[h * dh] // dh
    # The same parameters in the plain form (no head declarations) are not a symmetry: free
    # permutations of the q/k units mix the heads, and the check names them.
    d_ext = spec.to_dict()
    plain = llfc.PermutationSpec.from_dict({"params": d_ext["params"]})
    bad = plain.check_invariance(p, forward, ids, tol=1e-10, seed=13)
    assert not bad.passed
    assert set(bad.broken) <= {f"P_h{i}.{r}" for i in range(layers) for r in ("qk", "vo")} and bad.broken


def test_llama_spec_is_a_symmetry():
    layers, heads, d = 2, 2, 8
    p = nets.llama_params(layers, d, vocab=13, seed=14)
    ids = np.random.default_rng(15).integers(0, 13, size=(2, 6))
    forward = lambda q, x: nets.llama_forward(q, x, layers, heads)  # noqa: E731
    spec = llfc.PermutationSpec.llama(layers, heads, d, lm_head=True)
    assert spec.validate(p)["unmentioned"] == []
    report = spec.check_invariance(p, forward, ids, tol=1e-10, seed=16)
    assert report.passed, report
    # Rotary embeddings: the q/k permutation moves whole heads, in order inside each head.
    qk = report.perms["P_h0.qk"]
    dh = d // heads
    for h in range(heads):
        block = qk[h * dh:(h + 1) * dh]
        assert np.array_equal(block, np.arange(block[0], block[0] + dh))


def test_bert_spec_with_a_pooler_is_a_symmetry():
    layers, heads, d = 2, 2, 8
    p = nets.bert_params(layers, d, vocab=20, positions=6, seed=17)
    ids = np.random.default_rng(18).integers(0, 20, size=(3, 6))
    forward = lambda q, x: nets.bert_forward(q, x, layers, heads)  # noqa: E731
    spec = llfc.PermutationSpec.bert(layers, heads, d)
    assert sorted(spec.validate(p)["unmentioned"]) == ["bert.pooler.dense.bias", "bert.pooler.dense.weight"]
    # The encoder's output is the permuted residual stream: the pooler reads it (through P_res),
    # added in the extended JSON form.
    ext = spec.to_dict()
    ext["params"]["bert.pooler.dense.weight"] = [None, "P_res"]
    ext["params"]["bert.pooler.dense.bias"] = [None]
    full = llfc.PermutationSpec.from_dict(ext)
    assert full.validate(p)["unmentioned"] == [] and full.validate(p)["perm_sizes"]["P_h1.mlp"] == 4 * d
    report = full.check_invariance(p, forward, ids, tol=1e-10, seed=19)
    assert report.passed and report.max_abs_output > 1e-2, report
    full.check_structure(report.perms)
    # Without the pooler's entry the output changes, and the check says which permutation.
    bad = spec.check_invariance(p, forward, ids, tol=1e-10, seed=19)
    assert bad.broken == ["P_res"]


def test_extended_json_round_trips_and_bad_json_is_a_clear_error(tmp_path):
    spec = llfc.PermutationSpec.gpt2(1, 2, 8)
    d = spec.to_dict()
    assert set(d) == {"params", "perms"} and d["perms"]["P_h0.qk"]["heads"] == 2
    assert llfc.PermutationSpec.from_dict(d) == spec and llfc.PermutationSpec(d) == spec
    path = tmp_path / "gpt2.json"
    path.write_text(spec.to_json())
    assert llfc.PermutationSpec.from_json(path) == spec
    assert json.loads(spec.to_json()) == d
    # A plain spec keeps the plain form.
    assert llfc.PermutationSpec.mlp(2).to_dict() == {
        "layers.0.bias": ["P_0"], "layers.0.weight": ["P_0", None], "layers.1.weight": [None, "P_0"], "layers.1.bias": [None],
    }
    bad = {"params": d["params"], "perms": {"P_h0.qk": {"heads": 2, "colour": "red"}}}
    with pytest.raises(ValueError, match="unknown key `colour`"):
        llfc.PermutationSpec.from_dict(bad)
    with pytest.raises(TypeError):
        llfc.PermutationSpec.from_dict({"a.weight": [object()]})


def test_check_invariance_errors():
    p = nets.gpt2_params(1, 8, vocab=11, positions=5, seed=19)
    ids = np.zeros((1, 5), dtype=np.int64)
    spec = llfc.PermutationSpec.gpt2(1, 2, 8)
    forward = lambda q, x: nets.gpt2_forward(q, x, 1, 2)  # noqa: E731

    def boom(q, x):
        raise KeyError("no such layer")

    with pytest.raises(KeyError, match="no such layer"):
        spec.check_invariance(p, boom, ids)
    with pytest.raises(ValueError, match="not finite|non-finite"):
        spec.check_invariance(p, lambda q, x: np.full(3, np.nan), ids)
    with pytest.raises(ValueError, match="tol"):
        spec.check_invariance(p, forward, ids, tol=-1.0)
    with pytest.raises(TypeError, match="callable"):
        spec.check_invariance(p, "forward", ids)
    calls = []

    def shape_changing(q, x):
        calls.append(1)
        return np.zeros(len(calls))

    with pytest.raises(ValueError, match="shape mismatch|output of the permuted model"):
        spec.check_invariance(p, shape_changing, ids)
    wrong = dict(p)
    wrong["transformer.h.0.attn.c_proj.weight"] = np.zeros((8, 9))
    with pytest.raises(ValueError, match="c_proj"):
        spec.check_invariance(wrong, forward, ids)
