"""Reference forward passes in NumPy (written independently of llfc, PyTorch conventions and
parameter names), and random parameters for them, for the REPAIR, attribution and builtin-spec
tests."""

import numpy as np

EPS = 1e-5


# ------------------------------------------------------------------------------ layers


def conv2d(x, w, stride=1, padding=0, dilation=1, groups=1):
    """``nn.Conv2d`` without bias: x ``[n, c, h, w]``, w ``[o, c/groups, kh, kw]``."""
    s = (stride, stride) if np.isscalar(stride) else tuple(stride)
    p = (padding, padding) if np.isscalar(padding) else tuple(padding)
    d = (dilation, dilation) if np.isscalar(dilation) else tuple(dilation)
    o, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])))
    win = np.lib.stride_tricks.sliding_window_view(xp, (d[0] * (kh - 1) + 1, d[1] * (kw - 1) + 1), axis=(2, 3))
    win = win[:, :, :: s[0], :: s[1], :: d[0], :: d[1]]
    og = o // groups
    outs = [
        np.einsum("nchwij,ocij->nohw", win[:, g * cg:(g + 1) * cg], w[g * og:(g + 1) * og])
        for g in range(groups)
    ]
    return np.concatenate(outs, axis=1)


def bn(x, p, name):
    """Eval-mode BatchNorm2d (channels on axis 1)."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    r = lambda k: p[f"{name}.{k}"].reshape(shape)  # noqa: E731
    return (x - r("running_mean")) / np.sqrt(r("running_var") + EPS) * r("weight") + r("bias")


def relu(x):
    return np.maximum(x, 0.0)


def maxpool(x, k=2, stride=2, padding=0):
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)), constant_values=-np.inf)
    win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]
    return win.max(axis=(4, 5))


def adaptive_avgpool(x, out):
    n, c, h, w = x.shape
    rows = [(i * h // out, -(-(i + 1) * h // out)) for i in range(out)]
    cols = [(j * w // out, -(-(j + 1) * w // out)) for j in range(out)]
    y = np.empty((n, c, out, out))
    for i, (r0, r1) in enumerate(rows):
        for j, (c0, c1) in enumerate(cols):
            y[:, :, i, j] = x[:, :, r0:r1, c0:c1].mean(axis=(2, 3))
    return y


def linear(x, p, name, bias=True):
    y = x @ p[f"{name}.weight"].T
    return y + p[f"{name}.bias"] if bias else y


def layer_norm(x, w, b):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + EPS) * w + b


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def gelu(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


# ----------------------------------------------------------------------------- params


class Builder:
    """Random parameters in insertion order."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.p = {}

    def add(self, name, shape, scale=None):
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        s = scale if scale is not None else np.sqrt(2.0 / fan_in)
        self.p[name] = self.rng.standard_normal(shape) * s

    def conv(self, name, o, i, k, bias=False):
        self.add(f"{name}.weight", (o, i, k, k))
        if bias:
            self.add(f"{name}.bias", (o,), 0.1)

    def bn(self, name, c):
        self.add(f"{name}.weight", (c,), 0.2)
        self.p[f"{name}.weight"] += 1.0
        self.add(f"{name}.bias", (c,), 0.2)
        self.add(f"{name}.running_mean", (c,), 0.2)
        self.p[f"{name}.running_var"] = 0.5 + self.rng.random(c)
        self.p[f"{name}.num_batches_tracked"] = np.array(7, dtype=np.int64)

    def basic_block(self, pre, c, cin):
        """A ResNet basic block's two 3×3 convs and BatchNorms."""
        self.conv(f"{pre}.conv1", c, cin, 3)
        self.bn(f"{pre}.bn1", c)
        self.conv(f"{pre}.conv2", c, c, 3)
        self.bn(f"{pre}.bn2", c)

    def linear(self, name, o, i, bias=True):
        self.add(f"{name}.weight", (o, i))
        if bias:
            self.add(f"{name}.bias", (o,), 0.1)


# -------------------------------------------------------------------------------- VGG

def vgg_features(widths, batch_norm):
    """torchvision's ``features`` indices: ``[(index, kind, channels)]`` for vgg11's layout."""
    out, i = [], 0
    for stage, n in enumerate([1, 1, 2, 2, 2]):
        for _ in range(n):
            out.append((i, "conv", widths[stage]))
            i += 3 if batch_norm else 2
        out.append((i, "pool", None))
        i += 1
    return out


def vgg_params(widths, hidden, classes, batch_norm, torchvision, seed):
    b = Builder(seed)
    cin = 3
    for i, kind, c in vgg_features(widths, batch_norm):
        if kind == "conv":
            b.conv(f"features.{i}", c, cin, 3, bias=True)
            if batch_norm:
                b.bn(f"features.{i + 1}", c)
            cin = c
    b.linear("classifier.0", hidden, cin * (49 if torchvision else 1))
    b.linear("classifier.3", hidden, hidden)
    b.linear("classifier.6", classes, hidden)
    return b.p


def vgg_forward(p, x, widths, batch_norm, torchvision):
    h = x
    for i, kind, _ in vgg_features(widths, batch_norm):
        if kind == "pool":
            h = maxpool(h)
            continue
        h = conv2d(h, p[f"features.{i}.weight"], padding=1) + p[f"features.{i}.bias"][:, None, None]
        if batch_norm:
            h = bn(h, p, f"features.{i + 1}")
        h = relu(h)
    h = adaptive_avgpool(h, 7).reshape(len(h), -1) if torchvision else h.mean(axis=(2, 3))
    h = relu(linear(h, p, "classifier.0"))
    h = relu(linear(h, p, "classifier.3"))
    return linear(h, p, "classifier.6")


# ----------------------------------------------------------------------------- ResNet


def resnet_params(widths, blocks, classes, torchvision, seed):
    """Basic-block ResNet (resnet18/34 layout): torchvision (7×7 stem, max-pool,
    ``downsample``, ``fc``) or the LLFC CIFAR one (3×3 stem, ``shortcut``, ``linear``)."""
    b = Builder(seed)
    b.conv("conv1", widths[0], 3, 7 if torchvision else 3)
    b.bn("bn1", widths[0])
    cin = widths[0]
    short = "downsample" if torchvision else "shortcut"
    for s, (c, n) in enumerate(zip(widths, blocks), start=1):
        for k in range(n):
            pre = f"layer{s}.{k}"
            b.basic_block(pre, c, cin)
            if k == 0 and (s > 1 or cin != c):
                b.conv(f"{pre}.{short}.0", c, cin, 1)
                b.bn(f"{pre}.{short}.1", c)
            cin = c
    b.linear("fc" if torchvision else "linear", classes, cin)
    return b.p


def resnet_forward(p, x, blocks, torchvision):
    if torchvision:
        h = maxpool(relu(bn(conv2d(x, p["conv1.weight"], 2, 3), p, "bn1")), 3, 2, 1)
    else:
        h = relu(bn(conv2d(x, p["conv1.weight"], 1, 1), p, "bn1"))
    short = "downsample" if torchvision else "shortcut"
    for s, n in enumerate(blocks, start=1):
        for k in range(n):
            pre = f"layer{s}.{k}"
            stride = 2 if (k == 0 and s > 1) else 1
            out = relu(bn(conv2d(h, p[f"{pre}.conv1.weight"], stride, 1), p, f"{pre}.bn1"))
            out = bn(conv2d(out, p[f"{pre}.conv2.weight"], 1, 1), p, f"{pre}.bn2")
            if f"{pre}.{short}.0.weight" in p:
                h = bn(conv2d(h, p[f"{pre}.{short}.0.weight"], stride), p, f"{pre}.{short}.1")
            h = relu(out + h)
    return linear(h.mean(axis=(2, 3)), p, "fc" if torchvision else "linear")


def bottleneck_params(planes, blocks, classes, seed):
    """torchvision's resnet50 layout (bottleneck blocks, expansion 4) at widths ``planes``."""
    b = Builder(seed)
    b.conv("conv1", planes[0], 3, 7)
    b.bn("bn1", planes[0])
    cin = planes[0]
    for s, (c, n) in enumerate(zip(planes, blocks), start=1):
        for k in range(n):
            pre = f"layer{s}.{k}"
            for j, (o, i, ks) in enumerate(((c, cin, 1), (c, c, 3), (4 * c, c, 1)), start=1):
                b.conv(f"{pre}.conv{j}", o, i, ks)
                b.bn(f"{pre}.bn{j}", o)
            if k == 0:
                b.conv(f"{pre}.downsample.0", 4 * c, cin, 1)
                b.bn(f"{pre}.downsample.1", 4 * c)
            cin = 4 * c
    b.linear("fc", classes, cin)
    return b.p


def bottleneck_forward(p, x, blocks):
    h = maxpool(relu(bn(conv2d(x, p["conv1.weight"], 2, 3), p, "bn1")), 3, 2, 1)
    for s, n in enumerate(blocks, start=1):
        for k in range(n):
            pre = f"layer{s}.{k}"
            stride = 2 if (k == 0 and s > 1) else 1
            out = relu(bn(conv2d(h, p[f"{pre}.conv1.weight"]), p, f"{pre}.bn1"))
            out = relu(bn(conv2d(out, p[f"{pre}.conv2.weight"], stride, 1), p, f"{pre}.bn2"))
            out = bn(conv2d(out, p[f"{pre}.conv3.weight"]), p, f"{pre}.bn3")
            if k == 0:
                h = bn(conv2d(h, p[f"{pre}.downsample.0.weight"], stride), p, f"{pre}.downsample.1")
            h = relu(out + h)
    return linear(h.mean(axis=(2, 3)), p, "fc")


def resnet_option_a_params(width, blocks, classes, seed):
    b = Builder(seed)
    b.conv("conv1", width, 3, 3)
    b.bn("bn1", width)
    cin = width
    for s, n in enumerate(blocks, start=1):
        c = width << (s - 1)
        for k in range(n):
            b.basic_block(f"layer{s}.{k}", c, cin)
            cin = c
    b.linear("linear", classes, cin)
    return b.p


def resnet_option_a_forward(p, x, blocks):
    """He et al.'s option-A shortcut: ``F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, c/4, c/4))``."""
    h = relu(bn(conv2d(x, p["conv1.weight"], 1, 1), p, "bn1"))
    for s, n in enumerate(blocks, start=1):
        for k in range(n):
            pre = f"layer{s}.{k}"
            down = k == 0 and s > 1
            out = relu(bn(conv2d(h, p[f"{pre}.conv1.weight"], 2 if down else 1, 1), p, f"{pre}.bn1"))
            out = bn(conv2d(out, p[f"{pre}.conv2.weight"], 1, 1), p, f"{pre}.bn2")
            if down:
                planes = out.shape[1]
                h = np.pad(h[:, :, ::2, ::2], ((0, 0), (planes // 4, planes // 4), (0, 0), (0, 0)))
            h = relu(out + h)
    return linear(h.mean(axis=(2, 3)), p, "linear")


# ------------------------------------------------------------------------------ GPT-2


def gpt2_params(layers, d, vocab, positions, seed):
    b = Builder(seed)
    b.add("transformer.wte.weight", (vocab, d), 0.5)
    b.add("transformer.wpe.weight", (positions, d), 0.5)
    for i in range(layers):
        pre = f"transformer.h.{i}"
        for ln in ("ln_1", "ln_2"):
            b.add(f"{pre}.{ln}.weight", (d,), 0.2)
            b.p[f"{pre}.{ln}.weight"] += 1.0
            b.add(f"{pre}.{ln}.bias", (d,), 0.2)
        # Conv1D weights are [in, out].
        for name, i_, o in (("attn.c_attn", d, 3 * d), ("attn.c_proj", d, d), ("mlp.c_fc", d, 4 * d), ("mlp.c_proj", 4 * d, d)):
            b.add(f"{pre}.{name}.weight", (i_, o), 1 / np.sqrt(i_))
            b.add(f"{pre}.{name}.bias", (o,), 0.1)
        b.p[f"{pre}.attn.bias"] = np.tril(np.ones((positions, positions)))[None, None]  # a buffer
    b.add("transformer.ln_f.weight", (d,), 0.2)
    b.p["transformer.ln_f.weight"] += 1.0
    b.add("transformer.ln_f.bias", (d,), 0.2)
    return b.p


def attention(q, k, v, heads, causal):
    n, t, d = q.shape
    dh = d // heads
    split = lambda z: z.reshape(n, t, heads, dh).transpose(0, 2, 1, 3)  # noqa: E731
    q, k, v = split(q), split(k), split(v)
    s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(dh)
    if causal:
        s = np.where(np.tril(np.ones((t, t), dtype=bool)), s, -np.inf)
    return (softmax(s) @ v).transpose(0, 2, 1, 3).reshape(n, t, d)


def gpt2_forward(p, ids, layers, heads):
    t = ids.shape[1]
    h = p["transformer.wte.weight"][ids] + p["transformer.wpe.weight"][np.arange(t)]
    for i in range(layers):
        pre = f"transformer.h.{i}"
        c = lambda x, name: x @ p[f"{pre}.{name}.weight"] + p[f"{pre}.{name}.bias"]  # noqa: E731
        a = layer_norm(h, p[f"{pre}.ln_1.weight"], p[f"{pre}.ln_1.bias"])
        q, k, v = np.split(c(a, "attn.c_attn"), 3, axis=-1)
        h = h + c(attention(q, k, v, heads, True), "attn.c_proj")
        a = layer_norm(h, p[f"{pre}.ln_2.weight"], p[f"{pre}.ln_2.bias"])
        h = h + c(gelu(c(a, "mlp.c_fc")), "mlp.c_proj")
    h = layer_norm(h, p["transformer.ln_f.weight"], p["transformer.ln_f.bias"])
    return h @ p["transformer.wte.weight"].T  # the tied LM head


# ------------------------------------------------------------------------------- BERT


def bert_params(layers, d, vocab, positions, seed):
    """``BertModel`` under ``bert`` with its pooler (``[out, in]`` linear weights)."""
    b = Builder(seed)
    for e, n in (("word", vocab), ("position", positions), ("token_type", 2)):
        b.add(f"bert.embeddings.{e}_embeddings.weight", (n, d), 0.5)

    def ln(name):
        b.add(f"{name}.weight", (d,), 0.2)
        b.p[f"{name}.weight"] += 1.0
        b.add(f"{name}.bias", (d,), 0.2)

    ln("bert.embeddings.LayerNorm")
    for i in range(layers):
        pre = f"bert.encoder.layer.{i}"
        for name, o, n in (("attention.self.query", d, d), ("attention.self.key", d, d), ("attention.self.value", d, d),
                           ("attention.output.dense", d, d), ("intermediate.dense", 4 * d, d), ("output.dense", d, 4 * d)):
            b.linear(f"{pre}.{name}", o, n)
        ln(f"{pre}.attention.output.LayerNorm")
        ln(f"{pre}.output.LayerNorm")
    b.linear("bert.pooler.dense", d, d)
    return b.p


def bert_forward(p, ids, layers, heads):
    """Post-LN encoder, then the pooler ``tanh(W h_[CLS] + b)``."""
    t = ids.shape[1]
    e = "bert.embeddings"
    h = p[f"{e}.word_embeddings.weight"][ids] + p[f"{e}.position_embeddings.weight"][np.arange(t)]
    h = layer_norm(h + p[f"{e}.token_type_embeddings.weight"][0], p[f"{e}.LayerNorm.weight"], p[f"{e}.LayerNorm.bias"])
    for i in range(layers):
        pre = f"bert.encoder.layer.{i}"
        lin = lambda x, name: linear(x, p, f"{pre}.{name}")  # noqa: E731
        norm = lambda x, name: layer_norm(x, p[f"{pre}.{name}.weight"], p[f"{pre}.{name}.bias"])  # noqa: E731
        q, k, v = (lin(h, f"attention.self.{n}") for n in ("query", "key", "value"))
        h = norm(h + lin(attention(q, k, v, heads, False), "attention.output.dense"), "attention.output.LayerNorm")
        h = norm(h + lin(gelu(lin(h, "intermediate.dense")), "output.dense"), "output.LayerNorm")
    return np.tanh(linear(h[:, 0], p, "bert.pooler.dense"))


# ------------------------------------------------------------------------------ LLaMA


def llama_params(layers, d, vocab, seed):
    b = Builder(seed)
    b.add("model.embed_tokens.weight", (vocab, d), 0.5)
    for i in range(layers):
        pre = f"model.layers.{i}"
        b.add(f"{pre}.input_layernorm.weight", (d,), 0.2)
        b.p[f"{pre}.input_layernorm.weight"] += 1.0
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            b.linear(f"{pre}.self_attn.{name}", d, d, bias=False)
        b.add(f"{pre}.post_attention_layernorm.weight", (d,), 0.2)
        b.p[f"{pre}.post_attention_layernorm.weight"] += 1.0
        b.linear(f"{pre}.mlp.gate_proj", 3 * d, d, bias=False)
        b.linear(f"{pre}.mlp.up_proj", 3 * d, d, bias=False)
        b.linear(f"{pre}.mlp.down_proj", d, 3 * d, bias=False)
    b.add("model.norm.weight", (d,), 0.2)
    b.p["model.norm.weight"] += 1.0
    b.add("lm_head.weight", (vocab, d), 0.5)
    return b.p


def rms_norm(x, w):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + EPS) * w


def rotary(x, heads):
    """Hugging Face's rotate-half RoPE on ``[n, t, d]`` (dimension ``i`` pairs with
    ``i + d_head/2`` in each head)."""
    n, t, d = x.shape
    dh = d // heads
    inv = 1.0 / (10000 ** (np.arange(0, dh, 2) / dh))
    ang = np.arange(t)[:, None] * inv[None]
    cos, sin = np.cos(np.concatenate([ang, ang], -1)), np.sin(np.concatenate([ang, ang], -1))
    xh = x.reshape(n, t, heads, dh)
    rot = np.concatenate([-xh[..., dh // 2:], xh[..., : dh // 2]], -1)
    return (xh * cos[None, :, None] + rot * sin[None, :, None]).reshape(n, t, d)


def llama_forward(p, ids, layers, heads):
    h = p["model.embed_tokens.weight"][ids]
    silu = lambda z: z / (1 + np.exp(-z))  # noqa: E731
    for i in range(layers):
        pre = f"model.layers.{i}"
        lin = lambda x, name: linear(x, p, f"{pre}.{name}", bias=False)  # noqa: E731
        a = rms_norm(h, p[f"{pre}.input_layernorm.weight"])
        q, k = rotary(lin(a, "self_attn.q_proj"), heads), rotary(lin(a, "self_attn.k_proj"), heads)
        h = h + lin(attention(q, k, lin(a, "self_attn.v_proj"), heads, True), "self_attn.o_proj")
        a = rms_norm(h, p[f"{pre}.post_attention_layernorm.weight"])
        h = h + lin(silu(lin(a, "mlp.gate_proj")) * lin(a, "mlp.up_proj"), "mlp.down_proj")
    return linear(rms_norm(h, p["model.norm.weight"]), p, "lm_head", bias=False)
