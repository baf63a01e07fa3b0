"""Tests of spec_from_module.py's core logic on recorded module graphs, without PyTorch.

The graphs are built here node by node, in the order torch.fx records the forward passes of
torchvision's VGG/ResNet, the LLFC paper's CIFAR models, an MLP and a pre-LN transformer block.
`python3 test_spec_from_module.py --write-fixtures` refreshes `../fixtures/*.json`, which the
Rust suite (`tests/suite/spec_generator.rs`) turns into specs and compares with the builtins.
"""

import json
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import numpy as np  # noqa: E402

from spec_from_module import perm_sizes, permute_state_dict, spec_from_graph  # noqa: E402

FIXTURES = os.path.join(os.path.dirname(HERE), "fixtures")
BN = ["weight", "bias", "running_mean", "running_var"]


class Graph:
    def __init__(self):
        self.nodes = [{"name": "x", "op": "input"}]
        self.last = "x"

    def add(self, name, op, inputs=None, **kw):
        self.nodes.append({"name": name, "op": op, "inputs": inputs or [self.last], **kw})
        self.last = name
        return name

    def conv(self, name, bias=False, rank=4, inputs=None):
        return self.add(name, "conv", inputs, weight=f"{name}.weight",
                        bias=f"{name}.bias" if bias else None, rank=rank)

    def linear(self, name, bias=True, inputs=None):
        return self.add(name, "linear", inputs, weight=f"{name}.weight",
                        bias=f"{name}.bias" if bias else None, rank=2)

    def norm(self, name, fields=BN, inputs=None):
        return self.add(name, "norm", inputs, params=[f"{name}.{f}" for f in fields])

    def graph(self):
        self.add("output", "output")
        return {"nodes": self.nodes}


VGG_CFG = {11: [1, 1, 2, 2, 2], 13: [2, 2, 2, 2, 2], 16: [2, 2, 3, 3, 3], 19: [2, 2, 4, 4, 4]}


def vgg_graph(depth, bn, pool):
    """torchvision's VGG (pool = [7, 7]) or the LLFC code's (pool = [1, 1])."""
    g, n = Graph(), 0
    for count in VGG_CFG[depth]:
        for _ in range(count):
            g.conv(f"features.{n}", bias=True)
            if bn:
                g.norm(f"features.{n + 1}")
            g.add(f"features.{n + 1 + bn}", "pointwise")
            n += 2 + bn
        g.add(f"features.{n}", "pointwise")  # max-pool
        n += 1
    g.add("avgpool", "pointwise")
    g.add("flatten", "flatten", inner=pool)
    for m in (0, 3, 6):
        g.linear(f"classifier.{m}")
        if m < 6:
            g.add(f"classifier.{m + 1}", "pointwise")
            g.add(f"classifier.{m + 2}", "pointwise")
    return g.graph()


def resnet_graph(blocks, bottleneck, torchvision):
    """torchvision's ResNet or the LLFC code's CIFAR ResNet (`shortcut`, `linear`)."""
    sc, head = ("downsample", "fc") if torchvision else ("shortcut", "linear")
    g = Graph()
    g.conv("conv1")
    g.norm("bn1")
    g.add("relu", "pointwise")
    if torchvision:
        g.add("maxpool", "pointwise")
    for s, count in enumerate(blocks, start=1):
        for b in range(count):
            pre, x = f"layer{s}.{b}", g.last
            convs = 3 if bottleneck else 2
            for k in range(1, convs + 1):
                g.conv(f"{pre}.conv{k}")
                g.norm(f"{pre}.bn{k}")
                if k < convs:
                    g.add(f"{pre}.relu{k}", "pointwise")
            main = g.last
            if b == 0 and (s > 1 or bottleneck):
                g.conv(f"{pre}.{sc}.0", inputs=[x])
                short = g.norm(f"{pre}.{sc}.1")
            else:
                short = x
            g.add(f"{pre}.add", "add", inputs=[main, short])
            g.add(f"{pre}.relu", "pointwise")
    g.add("avgpool", "pointwise")
    g.add("flatten", "flatten", inner=[1, 1])
    g.linear(head)
    return g.graph()


def fixtures():
    """The graphs the Rust suite compares with the builtins, by builtin name."""
    return {
        "torchvision-vgg11-bn": vgg_graph(11, True, [7, 7]),
        "torchvision-vgg16": vgg_graph(16, False, [7, 7]),
        "llfc-vgg13-bn": vgg_graph(13, True, [1, 1]),
        "torchvision-resnet18": resnet_graph([2, 2, 2, 2], False, True),
        "torchvision-resnet50": resnet_graph([3, 4, 6, 3], True, True),
        "cifar-resnet34": resnet_graph([3, 4, 6, 3], False, False),
        "cifar-resnet50": resnet_graph([3, 4, 6, 3], True, False),
    }


def test_mlp_chain():
    g = Graph()
    for i in range(3):
        g.linear(f"layers.{i}")
        if i < 2:
            g.add(f"act{i}", "pointwise")
    spec = spec_from_graph(g.graph())
    assert spec == {
        "layers.0.weight": ["P_layers.0", None], "layers.0.bias": ["P_layers.0"],
        "layers.1.weight": ["P_layers.1", "P_layers.0"], "layers.1.bias": ["P_layers.1"],
        "layers.2.weight": [None, "P_layers.1"], "layers.2.bias": [None],
    }


def test_torchvision_vgg_flatten_is_an_unflatten_view():
    spec = spec_from_graph(vgg_graph(11, True, [7, 7]))
    assert spec["classifier.0.weight"] == {
        "axes": ["P_classifier.0", "P_features.25", None, None],
        "unflatten": {"axis": 1, "inner": [7, 7]},
    }
    assert spec["features.26.running_var"] == ["P_features.25"]
    assert spec["classifier.6.weight"] == [None, "P_classifier.3"]
    # Global pooling (the LLFC models): a plain column permutation.
    llfc = spec_from_graph(vgg_graph(11, False, [1, 1]))
    assert llfc["classifier.0.weight"] == ["P_classifier.0", "P_features.18"]


def test_residual_adds_share_one_permutation():
    spec = spec_from_graph(resnet_graph([2, 2, 2, 2], False, True))
    stem = spec["conv1.weight"][0]
    assert spec["layer1.0.conv2.weight"][0] == stem
    assert spec["layer1.1.conv1.weight"][1] == stem
    assert spec["layer2.0.downsample.0.weight"] == ["P_layer2.0.conv2", stem, None, None]
    assert spec["layer2.1.bn2.bias"] == ["P_layer2.0.conv2"]
    assert spec["fc.weight"] == [None, "P_layer4.0.conv2"]
    assert spec["layer3.1.conv1.weight"][0] == "P_layer3.1.conv1"  # inner: free
    # A Bottleneck's shortcut in layer1 starts a new stream after the stem.
    b = spec_from_graph(resnet_graph([3, 4, 6, 3], True, True))
    assert b["layer1.0.downsample.0.weight"][:2] == ["P_layer1.0.conv3", "P_conv1"]


def test_unknown_ops_and_outputs_fix_their_units():
    g = Graph()
    a = g.linear("a")
    b = g.linear("b", inputs=["x"])
    g.add("cat", "opaque", inputs=[a, b])
    g.linear("c")
    spec = spec_from_graph(g.graph())
    assert spec["a.weight"] == [None, None] and spec["b.weight"] == [None, None]
    assert spec["c.weight"] == [None, None]
    # Adding a fixed value to a permuted one fixes the permuted one too.
    g = Graph()
    h = g.linear("h")
    g.add("res", "add", inputs=[h, "x"])
    g.linear("o")
    spec = spec_from_graph(g.graph())
    assert spec["h.weight"] == [None, None]


def test_pre_ln_transformer_block_shares_the_residual_stream():
    g = Graph()
    g.nodes[0] = {"name": "tokens", "op": "input"}
    g.last = "tokens"
    emb = g.add("wte", "embedding", weight="wte.weight")
    g.norm("ln_1", ["weight", "bias"])
    attn = g.add("attn", "attention", in_proj_weight="attn.in_proj_weight",
                 in_proj_bias="attn.in_proj_bias", out_weight="attn.out_proj.weight",
                 out_bias="attn.out_proj.bias")
    r1 = g.add("add1", "add", inputs=[emb, attn])
    g.norm("ln_2", ["weight", "bias"])
    g.linear("mlp.fc")
    g.add("gelu", "pointwise")
    g.linear("mlp.proj")
    g.add("add2", "add", inputs=[r1, "mlp.proj"])
    g.norm("ln_f", ["weight", "bias"])
    g.linear("head", bias=False)
    spec = spec_from_graph(g.graph())
    res = "P_wte"
    assert spec["wte.weight"] == [None, res]
    assert spec["attn.in_proj_weight"] == [None, res]
    assert spec["attn.in_proj_bias"] == [None]
    assert spec["attn.out_proj.weight"] == [res, None]
    assert spec["mlp.fc.weight"] == ["P_mlp.fc", res]
    assert spec["mlp.proj.weight"] == [res, "P_mlp.fc"]
    assert spec["ln_f.bias"] == [res] and spec["head.weight"] == [None, res]


def test_malformed_graphs_are_rejected():
    with pytest.raises(ValueError, match="unknown op"):
        spec_from_graph({"nodes": [{"name": "x", "op": "input"}, {"name": "y", "op": "matmul", "inputs": ["x"]}]})
    with pytest.raises(ValueError, match="no earlier node"):
        spec_from_graph({"nodes": [{"name": "y", "op": "linear", "inputs": ["x"], "weight": "w"}]})


def test_permute_state_dict_keeps_a_vgg_head_function_with_numpy():
    # conv features [N, 3 channels, 2, 2] -> flatten -> linear -> relu -> linear, in NumPy.
    rng = np.random.default_rng(0)
    g = Graph()
    g.conv("conv", bias=True)
    g.add("relu0", "pointwise")
    g.add("flatten", "flatten", inner=[2, 2])
    g.linear("fc0")
    g.add("relu1", "pointwise")
    g.linear("fc1")
    spec = spec_from_graph(g.graph())
    state = {"conv.weight": rng.normal(size=(3, 2, 1, 1)), "conv.bias": rng.normal(size=3),
             "fc0.weight": rng.normal(size=(5, 12)), "fc0.bias": rng.normal(size=5),
             "fc1.weight": rng.normal(size=(4, 5)), "fc1.bias": rng.normal(size=4)}

    def forward(s, x):
        h = np.einsum("oc,nchw->nohw", s["conv.weight"][:, :, 0, 0], x) + s["conv.bias"][None, :, None, None]
        h = np.maximum(h, 0).reshape(len(x), -1)
        h = np.maximum(h @ s["fc0.weight"].T + s["fc0.bias"], 0)
        return h @ s["fc1.weight"].T + s["fc1.bias"]

    assert perm_sizes(state, spec) == {"P_conv": 3, "P_fc0": 5}
    perms = {"P_conv": [2, 0, 1], "P_fc0": [4, 3, 0, 1, 2]}
    permuted = permute_state_dict(state, spec, perms)
    x = rng.normal(size=(6, 2, 2, 2))
    np.testing.assert_allclose(forward(permuted, x), forward(state, x), rtol=0, atol=1e-12)
    # Through the view, channel c's block of 2·2 consecutive columns moves as a whole.
    np.testing.assert_array_equal(permuted["fc0.weight"][:, 0:4], state["fc0.weight"][perms["P_fc0"]][:, 8:12])
    assert state["fc0.weight"].shape == (5, 12)  # inputs untouched


def test_fixtures_are_up_to_date():
    for name, graph in fixtures().items():
        with open(os.path.join(FIXTURES, f"{name}.json")) as f:
            assert json.load(f) == graph, f"run `python3 {__file__} --write-fixtures`"


if __name__ == "__main__" and "--write-fixtures" in sys.argv:
    os.makedirs(FIXTURES, exist_ok=True)
    for name, graph in fixtures().items():
        with open(os.path.join(FIXTURES, f"{name}.json"), "w") as f:
            nodes = ",\n".join(json.dumps(n) for n in graph["nodes"])
            f.write('{"nodes": [\n' + nodes + "\n]}\n")
