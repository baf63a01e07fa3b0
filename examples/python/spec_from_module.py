"""Generate an `llfc` permutation spec (JSON) from a PyTorch module, so nobody writes one by hand.

    python3 spec_from_module.py --graph graph.json -o spec.json          # no PyTorch needed
    # or, from Python with PyTorch installed:
    from spec_from_module import spec_from_module
    spec = spec_from_module(model, torch.randn(1, 3, 224, 224))        # a dict, json.dump it

How it works. The model is traced with `torch.fx` (shapes propagated on the example input) into a
plain-data *graph*: nodes in execution order, each with an `op` and the names of its inputs.
`spec_from_graph` then tracks which permutation ("channel space") each value carries:

- `linear`, `conv` (groups = 1), `embedding` produce a new space on their weight's output axis
  and consume their input's space on the input axis (`W[p, :]`, `W[:, p]`);
- `norm` (BatchNorm, LayerNorm over the channels) and `pointwise` ops (ReLU, GELU, dropout,
  pooling, identity) keep their input's space; their vectors are permuted by it;
- `add` (a residual connection) merges the spaces of its inputs: one permutation for all of
  them, as in Git Re-Basin's ResNet spec;
- `flatten` of a `[N, C, h, w]` map keeps the channel space in blocks of `h·w` consecutive
  features; the linear layer that reads it gets an `unflatten` view (torchvision's VGG:
  `classifier.0.weight` as `[4096, 512, 7, 7]`);
- `attention` (`nn.MultiheadAttention`) consumes its input's space on `in_proj_weight`'s input
  axis and produces a new space on `out_proj`'s output; heads are not permuted (conservative:
  always a symmetry);
- `output` and anything the tracer does not know (`opaque`: concatenation, padding, reshapes
  that mix channels, grouped convs) fix the spaces they touch: those units are not permuted.

The recorder assumes the layout of PyTorch's layers: convs and BatchNorm read the channels on
axis 1, linear layers and LayerNorm the last axis (MLPs, batch-first transformers, features
after a flatten). A model that applies an `nn.Linear` to the last axis of a conv map breaks that
assumption: run `check_invariance` (below), which catches any spec that is not a symmetry.

A space merged with a fixed one is not permuted; every other space becomes one permutation,
named `P_<first producing module>`. Unknown ops only ever remove permutations, so the spec is a
symmetry by construction; check it anyway (`align --check`, or the PyTorch snippet in the
README). Graph format (JSON), one object per node:

    {"name": "features.0", "op": "conv", "inputs": ["x"],
     "weight": "features.0.weight", "bias": "features.0.bias", "rank": 4}
    {"name": "features.1", "op": "norm", "inputs": ["features.0"],
     "params": ["features.1.weight", "features.1.bias", "features.1.running_mean", ...]}
    {"name": "flatten", "op": "flatten", "inputs": ["avgpool"], "inner": [7, 7]}
    {"name": "add", "op": "add", "inputs": ["layer1.0.bn2", "maxpool"]}
    {"name": "attn", "op": "attention", "inputs": ["ln_1"], "in_proj_weight": ...,
     "in_proj_bias": ..., "out_weight": ..., "out_bias": ...}
    {"name": "x", "op": "input"}    {"name": "out", "op": "output", "inputs": ["fc"]}
"""

import argparse
import json
import sys

FIXED = 0  # the space of units that are never permuted (inputs, outputs, unknown ops)

PRODUCERS = ("linear", "conv", "embedding", "attention")
OPS = PRODUCERS + ("input", "output", "norm", "pointwise", "add", "flatten", "opaque")


class _Spaces:
    """Union-find over channel spaces; space 0 is FIXED and always its own root."""

    def __init__(self):
        self.parent = [FIXED]
        self.producer = [None]

    def new(self, producer):
        self.parent.append(len(self.parent))
        self.producer.append(producer)
        return len(self.parent) - 1

    def find(self, s):
        while self.parent[s] != s:
            self.parent[s] = self.parent[self.parent[s]]
            s = self.parent[s]
        return s

    def union(self, a, b):
        a, b = self.find(a), self.find(b)
        if a == b:
            return a
        # FIXED wins; otherwise the older space (the first producer) names the class.
        root, child = (a, b) if a == FIXED or (b != FIXED and a < b) else (b, a)
        self.parent[child] = root
        return root


def spec_from_graph(graph):
    """The JSON spec (a dict) for a recorded module graph (see the module docstring)."""
    nodes = graph["nodes"] if isinstance(graph, dict) else graph
    spaces = _Spaces()
    value = {}  # node name -> (space, inner block or None)
    entries = []  # (param, [space or None per axis], unflatten or None)

    def inputs(node):
        missing = [i for i in node.get("inputs", []) if i not in value]
        if missing:
            raise ValueError(f"node {node['name']!r} reads {missing}, which no earlier node produces")
        return [value[i] for i in node.get("inputs", [])]

    def fix(vals):
        for s, _ in vals:
            spaces.union(s, FIXED)

    for node in nodes:
        op, name = node.get("op"), node["name"]
        if op not in OPS:
            raise ValueError(f"node {name!r}: unknown op {op!r} (known: {', '.join(OPS)})")
        ins = inputs(node)
        if op == "input":
            value[name] = (FIXED, None)
        elif op == "output":
            fix(ins)
        elif op in ("linear", "conv"):
            if len(ins) != 1:
                raise ValueError(f"node {name!r}: a {op} reads one input, got {len(ins)}")
            (s_in, inner), out = ins[0], spaces.new(name)
            rank = node.get("rank", 2 if op == "linear" else 4)
            axes = [out, s_in] + [None] * (rank - 2)
            view = None
            if inner:
                if op != "linear":
                    fix(ins)
                    axes[1] = None
                else:
                    axes = [out, s_in] + [None] * len(inner)
                    view = {"axis": 1, "inner": list(inner)}
            entries.append((node["weight"], axes, view))
            if node.get("bias"):
                entries.append((node["bias"], [out], None))
            value[name] = (out, None)
        elif op == "embedding":
            out = spaces.new(name)
            entries.append((node["weight"], [None, out], None))
            value[name] = (out, None)
        elif op == "attention":
            (s_in, inner), out = ins[0], spaces.new(name)
            if inner:
                fix(ins)
            entries.append((node["in_proj_weight"], [None, s_in], None))
            if node.get("in_proj_bias"):
                entries.append((node["in_proj_bias"], [None], None))
            entries.append((node["out_weight"], [out, None], None))
            if node.get("out_bias"):
                entries.append((node["out_bias"], [out], None))
            value[name] = (out, None)
        elif op == "norm":
            (s, inner), = ins
            if inner:
                fix(ins)
            for p in node.get("params", []):
                entries.append((p, [s], None))
            value[name] = (s, inner)
        elif op == "pointwise":
            if len(ins) != 1:
                fix(ins)
                value[name] = (FIXED, None)
            else:
                value[name] = ins[0]
        elif op == "add":
            inners = {tuple(i) if i else None for _, i in ins}
            if len(inners) != 1:
                fix(ins)
                value[name] = (FIXED, None)
            else:
                s = ins[0][0]
                for t, _ in ins[1:]:
                    s = spaces.union(s, t)
                value[name] = (s, ins[0][1])
        elif op == "flatten":
            (s, inner), = ins
            if inner:
                fix(ins)
                value[name] = (FIXED, None)
            else:
                block = [int(v) for v in node.get("inner", [])]
                value[name] = (s, block if any(v != 1 for v in block) else None)
        else:  # opaque
            fix(ins)
            value[name] = (FIXED, None)

    def perm(s):
        if s is None:
            return None
        root = spaces.find(s)
        return None if root == FIXED else f"P_{spaces.producer[root]}"

    spec = {}
    for param, axes, view in entries:
        resolved = [perm(a) for a in axes]
        if param in spec:
            raise ValueError(f"parameter {param!r} is used by two nodes (shared weights are not supported)")
        spec[param] = {"axes": resolved, "unflatten": view} if view else resolved
    return spec


# --- Recording a torch.nn.Module (needs PyTorch) ------------------------------------------------


def record_graph(model, example_input):
    """Trace `model` with torch.fx on `example_input` into the plain-data graph format."""
    import operator

    import torch
    from torch import nn
    from torch.fx import symbolic_trace
    from torch.fx.passes.shape_prop import ShapeProp

    traced = symbolic_trace(model)
    ShapeProp(traced).propagate(example_input)
    state = dict(model.state_dict())
    pointwise_modules = (
        nn.ReLU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.LeakyReLU, nn.ELU, nn.Dropout,
        nn.Identity, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
        nn.MaxPool1d, nn.AvgPool1d, nn.AdaptiveAvgPool1d,
    )
    pointwise_functions = {
        torch.relu, torch.nn.functional.relu, torch.nn.functional.gelu, torch.tanh,
        torch.sigmoid, torch.nn.functional.dropout, torch.nn.functional.max_pool2d,
        torch.nn.functional.avg_pool2d, torch.nn.functional.adaptive_avg_pool2d,
        torch.nn.functional.silu,
    }
    pointwise_methods = {"relu", "sigmoid", "tanh", "contiguous", "clone"}

    def shape(n):
        meta = n.meta.get("tensor_meta") if hasattr(n, "meta") else None
        if isinstance(meta, (tuple, list)):  # a module returning a tuple (attention): its first
            meta = meta[0] if meta else None
        return list(meta.shape) if meta is not None and hasattr(meta, "shape") else None

    attention_nodes = set()

    def tensor_inputs(n):
        return [a.name for a in n.all_input_nodes if shape(a) is not None]

    def params_of(prefix, names):
        return [f"{prefix}.{k}" for k in names if f"{prefix}.{k}" in state]

    nodes = []
    for n in traced.graph.nodes:
        entry = {"name": n.name, "inputs": tensor_inputs(n)}
        if n.op == "placeholder":
            entry = {"name": n.name, "op": "input"}
        elif n.op == "output":
            entry["op"] = "output"
        elif n.op == "get_attr":
            entry["op"] = "opaque"
        elif n.op == "call_module":
            m, t = traced.get_submodule(n.target), n.target
            if isinstance(m, nn.Linear):
                entry.update(op="linear", weight=f"{t}.weight", bias=f"{t}.bias" if m.bias is not None else None, rank=2)
            elif isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and m.groups == 1:
                entry.update(op="conv", weight=f"{t}.weight", bias=f"{t}.bias" if m.bias is not None else None, rank=m.weight.dim())
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)) or (
                # LayerNorm over the last axis, on features whose last axis is the units
                isinstance(m, nn.LayerNorm) and len(m.normalized_shape) == 1
                and len(shape(n.all_input_nodes[0]) or [0, 0, 0, 0]) <= 3
            ):
                entry.update(op="norm", params=params_of(t, ["weight", "bias", "running_mean", "running_var"]))
            elif isinstance(m, nn.Embedding):
                entry.update(op="embedding", weight=f"{t}.weight")
            elif isinstance(m, nn.MultiheadAttention) and m._qkv_same_embed_dim:
                attention_nodes.add(n.name)
                entry.update(op="attention", inputs=entry["inputs"][:1],
                             in_proj_weight=f"{t}.in_proj_weight",
                             in_proj_bias=f"{t}.in_proj_bias" if m.in_proj_bias is not None else None,
                             out_weight=f"{t}.out_proj.weight",
                             out_bias=f"{t}.out_proj.bias" if m.out_proj.bias is not None else None)
            elif isinstance(m, nn.Flatten):
                entry.update(op="flatten", inner=shape(n.all_input_nodes[0])[2:])
            elif isinstance(m, pointwise_modules):
                entry["op"] = "pointwise"
            else:
                entry["op"] = "opaque"
        elif n.op in ("call_function", "call_method"):
            target = n.target
            if target in (operator.add, operator.iadd, torch.add) or target in ("add", "add_"):
                entry["op"] = "add"
            elif target is operator.getitem and n.args[0].name in attention_nodes and n.args[1] == 0:
                entry.update(op="pointwise", inputs=[n.args[0].name])  # attention's output
            elif target in pointwise_functions or target in pointwise_methods:
                entry["op"] = "pointwise"
            elif target in (torch.flatten, "flatten", "view", "reshape") and shape(n) and len(shape(n)) == 2:
                src = shape(n.all_input_nodes[0])
                if src and len(src) >= 2 and src[0] == shape(n)[0]:
                    entry.update(op="flatten", inner=src[2:])
                else:
                    entry["op"] = "opaque"
            elif shape(n) is None:
                continue  # not a tensor (x.size(0), getattr): carries no units
            else:
                entry["op"] = "opaque"
        nodes.append(entry)
    return {"nodes": nodes}


def spec_from_module(model, example_input):
    """The JSON spec (a dict) of a `torch.nn.Module`, traced on `example_input`."""
    return spec_from_graph(record_graph(model, example_input))


# --- Applying a spec and checking it in PyTorch (or NumPy) --------------------------------------


def _entry(entry):
    return (entry["axes"], entry.get("unflatten")) if isinstance(entry, dict) else (entry, None)


def _view_shape(shape, view):
    if not view:
        return list(shape)
    axis, inner = view["axis"], list(view["inner"])
    block = 1
    for v in inner:
        block *= v
    return list(shape[:axis]) + [shape[axis] // block] + inner + list(shape[axis + 1:])


def perm_sizes(state, spec):
    """Size of every permutation of `spec`, read off a state_dict (tensors or NumPy arrays)."""
    sizes = {}
    for name, entry in spec.items():
        axes, view = _entry(entry)
        shape = _view_shape(tuple(state[name].shape), view)
        for axis, p in enumerate(axes):
            if p is not None:
                if sizes.setdefault(p, shape[axis]) != shape[axis]:
                    raise ValueError(f"{p} has sizes {sizes[p]} and {shape[axis]} ({name}, axis {axis})")
    return sizes


def permute_state_dict(state, spec, perms):
    """`W <- W[p]` on every axis the spec names (`llfc.apply_permutations`), through the views.

    `perms` maps each permutation name to an index sequence; tensors may be torch tensors or
    NumPy arrays. Returns a new dict; `state` is not modified."""
    out = {}
    for name, t in state.items():
        if name not in spec:
            out[name] = t
            continue
        axes, view = _entry(spec[name])
        shape = tuple(t.shape)
        t = t.reshape(_view_shape(shape, view))
        for axis, p in enumerate(axes):
            if p is not None:
                if hasattr(t, "index_select"):  # torch
                    import torch

                    t = t.index_select(axis, torch.as_tensor(list(perms[p]), device=t.device))
                else:
                    t = t.take(list(perms[p]), axis=axis)
        out[name] = t.reshape(shape)
    return out


def check_invariance(model, spec, inputs, tol=1e-5, seed=0):
    """Permute a copy of `model` by random permutations through `spec` and return
    `max |model(x) - permuted(x)|` in eval mode (PyTorch). A correct spec gives rounding noise
    only (~1e-6 relative in float32); anything larger means the spec breaks the model."""
    import copy

    import torch

    gen = torch.Generator().manual_seed(seed)
    state = model.state_dict()
    perms = {k: torch.randperm(n, generator=gen) for k, n in perm_sizes(state, spec).items()}
    other = copy.deepcopy(model)
    other.load_state_dict(permute_state_dict(state, spec, perms))
    model.eval(), other.eval()
    with torch.no_grad():
        diff = (model(inputs) - other(inputs)).abs().max().item()
    if diff > tol:
        print(f"spec is NOT a symmetry: max |diff| = {diff:.3e} > {tol}", file=sys.stderr)
    return diff


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--graph", required=True, help="a recorded module graph (JSON)")
    parser.add_argument("-o", "--output", help="where to write the spec (default: stdout)")
    args = parser.parse_args(argv)
    with open(args.graph) as f:
        spec = spec_from_graph(json.load(f))
    text = json.dumps(spec, indent=2, sort_keys=True) + "\n"
    if args.output:
        with open(args.output, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
