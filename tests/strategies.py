"""Hypothesis strategies: random valid specs (with the shapes the formula gives) and mutations of them.

The shape oracle here is written out independently of alexspec.infer:
out = floor((in + 2*pad - kernel) / stride) + 1, and PyTorch's ceil-mode rule for pooling.
"""
from __future__ import annotations

import math

from hypothesis import strategies as st


def window_out(size: int, kernel: int, stride: int, pad: int, ceil: bool = False) -> int:
    if not ceil:
        return (size + 2 * pad - kernel) // stride + 1
    out = -(-(size + 2 * pad - kernel) // stride) + 1
    if (out - 1) * stride >= size + pad:
        out -= 1
    return out


ACTIVATIONS = ["relu6", "leaky_relu", "tanh", "sigmoid", "gelu", "silu", "hardswish", "hardsigmoid"]


def _activation(draw) -> dict:
    layer = {"type": draw(st.sampled_from(ACTIVATIONS))}
    if layer["type"] == "leaky_relu":
        layer["negative_slope"] = draw(st.sampled_from([0.01, 0.2]))
    return layer


def _batchnorm(draw) -> dict:
    return {"type": "batchnorm", "eps": draw(st.sampled_from([1e-5, 1e-3])), "affine": draw(st.booleans())}


@st.composite
def valid_specs(draw, max_image_layers: int = 6):
    """(spec as a dict, expected output shape of every layer)."""
    towers = draw(st.sampled_from([1, 1, 2]))
    channels, height, width = draw(st.integers(1, 4)), draw(st.integers(5, 40)), draw(st.integers(5, 40))
    shape, split = (channels, height, width), False
    layers, shapes = [], []

    def add(layer: dict, out_shape: tuple):
        layer["name"] = f"{layer['type']}_{len(layers)}"
        layers.append(layer)
        shapes.append(out_shape)

    for _ in range(draw(st.integers(0, max_image_layers))):
        kind = draw(st.sampled_from(["conv", "conv", "conv", "maxpool", "avgpool", "lrn", "relu", "dropout",
                                     "activation", "batchnorm", "adaptive_maxpool", "residual", "branches", "gate"]))
        c, h, w = shape
        if kind in ("residual", "gate") and towers > 1 and not split:  # a merge of split and shared is refused
            continue
        branch_point = layers[-1]["name"] if layers else "input"
        if kind == "residual":  # conv (and maybe batchnorm) of the same shape, added to what it read
            add({"type": "conv", "out": c, "kernel": 3, "padding": 1, "bias": draw(st.booleans())}, shape)
            if draw(st.booleans()):
                add(_batchnorm(draw), shape)
            add({"type": "add", "inputs": [layers[-1]["name"], branch_point]}, shape)
            continue
        if kind == "gate":  # squeeze-and-excitation: per-channel factors from a pooled branch scale what it read
            gate = draw(st.sampled_from(["sigmoid", "hardsigmoid"]))
            if towers == 1 and draw(st.booleans()):
                add({"type": "global_avgpool"}, (c,))
                add({"type": "linear", "out": c, "activation": gate}, (c,))
            else:
                add({"type": "adaptive_avgpool", "output": 1}, (c, 1, 1))
                add({"type": "conv", "out": c, "kernel": 1, "activation": gate}, (c, 1, 1))
            factors = [layers[-1]["name"], branch_point]
            add({"type": "multiply", "inputs": draw(st.permutations(factors))}, shape)
            continue
        if kind == "branches":  # two to three convs reading one layer, concatenated
            outs = [towers * draw(st.integers(1, 6 // towers)) for _ in range(draw(st.integers(2, 3)))]
            names = []
            for out in outs:
                kernel = draw(st.sampled_from([1, 3]))
                add({"type": "conv", "out": out, "kernel": kernel, "padding": kernel // 2, "inputs": branch_point},
                    (out, h, w))
                names.append(layers[-1]["name"])
            shape, split = (sum(outs), h, w), towers > 1
            add({"type": "concat", "inputs": names}, shape)
            continue
        if kind == "conv":
            cross = towers > 1 and split and draw(st.booleans())
            inner = draw(st.sampled_from([1, 1, 2])) if (towers == 1 or (split and not cross)) else 1
            effective = inner * (towers if towers > 1 and split and not cross else 1)
            if c % effective:
                inner, effective = 1, (towers if towers > 1 and split and not cross else 1)
            if c % effective:
                continue
            out = math.lcm(effective, towers) * draw(st.integers(1, 4))
            kh, kw = draw(st.integers(1, min(h, 7))), draw(st.integers(1, min(w, 7)))
            ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
            sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
            dilation = draw(st.sampled_from([1, 1, 1, 2, 3]))
            eh, ew = dilation * (kh - 1) + 1, dilation * (kw - 1) + 1  # the window a dilated kernel reads
            if eh > h + 2 * ph or ew > w + 2 * pw:
                dilation, eh, ew = 1, kh, kw
            layer = {"type": "conv", "out": out, "kernel": kh if kh == kw else [kh, kw],
                     "stride": sh if sh == sw else [sh, sw], "padding": ph if ph == pw else [ph, pw],
                     "activation": draw(st.sampled_from(["relu", "relu", "none", "none", *ACTIVATIONS])),
                     "bias": draw(st.booleans())}
            if dilation > 1:
                layer["dilation"] = dilation
            if inner > 1:
                layer["groups"] = inner
            if cross:
                layer["towers"] = "cross"
            shape, split = (out, window_out(h, eh, sh, ph), window_out(w, ew, sw, pw)), towers > 1
            add(layer, shape)
        elif kind in ("maxpool", "avgpool"):
            kh, kw = draw(st.integers(1, min(h, 4))), draw(st.integers(1, min(w, 4)))
            sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
            ph, pw = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))
            ceil = draw(st.booleans())
            layer = {"type": kind, "kernel": [kh, kw], "stride": [sh, sw], "padding": [ph, pw],
                     "rounding": "ceil" if ceil else "floor"}
            shape = (c, window_out(h, kh, sh, ph, ceil), window_out(w, kw, sw, pw, ceil))
            add(layer, shape)
        elif kind == "lrn":
            groups = draw(st.sampled_from([1, 2])) if c % 2 == 0 else 1
            if towers > 1 and split and c % (towers * groups):
                continue
            add({"type": "lrn", "size": draw(st.integers(1, 7)), "groups": groups,
                 "convention": draw(st.sampled_from(["paper", "caffe"])), "k": 2}, shape)
        elif kind == "relu":
            add({"type": "relu"}, shape)
        elif kind == "activation":
            add(_activation(draw), shape)
        elif kind == "batchnorm":
            if towers == 1 or split:  # towers may not normalise the image they all hold whole
                add(_batchnorm(draw), shape)
        elif kind == "adaptive_maxpool":
            oh, ow = draw(st.integers(1, h)), draw(st.integers(1, w))
            add({"type": "adaptive_maxpool", "output": [oh, ow]}, (c, oh, ow))
            shape = (c, oh, ow)
        else:
            add({"type": "dropout", "p": draw(st.sampled_from([0.1, 0.5])), "channels": draw(st.booleans())}, shape)

    ending = draw(st.sampled_from(["flatten", "flatten", "global_avgpool", "global_maxpool"]))
    shape = (math.prod(shape),) if ending == "flatten" else (shape[0],)
    add({"type": ending}, shape)
    for _ in range(draw(st.integers(1, 3))):
        out = towers * draw(st.integers(1, 8))
        layer = {"type": "linear", "out": out, "activation": draw(st.sampled_from(["relu", "none", *ACTIVATIONS])),
                 "dropout": draw(st.sampled_from([0, 0, 0.5]))}
        if towers > 1:
            layer["towers"] = "cross"
        shape = (out,)
        add(layer, shape)
        if draw(st.integers(0, 3)) == 0:  # a linear layer's output is split across towers too
            add(_batchnorm(draw), shape)
        if draw(st.integers(0, 3)) == 0:
            add(_activation(draw), shape)
    if draw(st.booleans()):
        add({"type": "softmax"}, shape)
    spec = {"alexspec": 1, "name": "random", "input": {"channels": channels, "height": height, "width": width},
            "rounding": "floor", "towers": towers, "layers": layers}
    return spec, shapes


JUNK = st.one_of(
    st.integers(-(10 ** 15), 10 ** 15), st.floats(allow_nan=False, allow_infinity=False), st.booleans(),
    st.none(), st.text(max_size=12), st.lists(st.integers(-5, 5), max_size=4),
    st.dictionaries(st.text(max_size=5), st.integers(-3, 3), max_size=2),
    st.sampled_from(["conv", "maxpool", "cross", "exact", "ceil", "3", "1e12", "-3", "x; import os"]))


def value_paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from value_paths(item, prefix + (key,))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from value_paths(item, prefix + (i,))


@st.composite
def mutated(draw, spec: dict):
    """`spec` with one to three random edits: a value replaced, a key removed, renamed or added."""
    import copy

    spec = copy.deepcopy(spec)
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in value_paths(spec) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = spec
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "replace", "delete", "rename", "add"]))
        last = path[-1]
        if action == "replace":
            parent[last] = draw(JUNK)
        elif action == "delete":
            del parent[last]
        elif action == "rename" and isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=8))] = parent.pop(last)
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.sampled_from(["kernal", "towers", "groups", "out", "extra"]))] = draw(JUNK)
    return spec


@st.composite
def block_specs(draw):
    """(spec using `blocks:`, expected output shape of every written-out layer): a stem, then uses of
    a plain block (conv, maybe an activation) and of a residual one (conv, batchnorm, add to
    `$input`), each with `with` values and maybe `repeat`."""
    channels, size = draw(st.integers(1, 3)), draw(st.integers(6, 16))
    blocks = {
        "plain": {"params": {"out": 4, "kernel": 3, "activation": "relu"},
                  "layers": [{"name": "conv", "type": "conv", "out": "$out", "kernel": "$kernel",
                              "activation": "$activation"}]},
        "residual": {"params": {"width": 4},
                     "layers": [{"name": "conv", "type": "conv", "out": "$width", "kernel": 3, "padding": 1},
                                {"name": "bn", "type": "batchnorm"},
                                {"name": "add", "type": "add", "inputs": ["bn", "$input"]},
                                {"name": "act", "type": "relu"}]},
    }
    layers = [{"name": "stem", "type": "conv", "out": 4, "kernel": 1}]
    shapes, (c, h) = [(4, size, size)], (4, size)
    for u in range(draw(st.integers(1, 4))):
        repeat = draw(st.integers(1, 3))
        use = {"name": f"use{u}", "type": "block", "block": draw(st.sampled_from(["plain", "residual"]))}
        if repeat > 1:
            use["repeat"] = repeat
        if use["block"] == "plain":
            out, kernel = draw(st.integers(1, 6)), draw(st.sampled_from([1, 1, 3]))
            if h - repeat * (kernel - 1) < 1:
                kernel = 1
            use["with"] = {"out": out, "kernel": kernel, "activation": draw(st.sampled_from(["relu", "none", "tanh"]))}
            for _ in range(repeat):
                h -= kernel - 1
                shapes.append((out, h, h))
            c = out
        else:
            use["with"] = {"width": c}  # the add needs the block's input channels
            shapes += [(c, h, h)] * (4 * repeat)
        layers.append(use)
    layers.append({"name": "gap", "type": "global_avgpool"})
    shapes.append((c,))
    spec = {"alexspec": 1, "name": "blocks", "input": {"channels": channels, "height": size, "width": size},
            "blocks": blocks, "layers": layers}
    return spec, shapes
