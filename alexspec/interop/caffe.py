"""Specs from Caffe's text prototxt (deploy nets: a chain of layers).

Caffe's conventions are translated explicitly: its LRN divides alpha by local_size (the spec
says `convention: paper` with alpha / local_size, and a note gives Caffe's numbers), its pooling
rounds output sizes up (`rounding: ceil`), `group` becomes conv groups, an in-place ReLU is
fused into the layer before it. Weights (.caffemodel, binary protobuf) are not read: load them
with Caffe or a converter and save a PyTorch state dict keyed by the spec's layer names.
"""
from __future__ import annotations

import re

from alexspec.interop.from_torch import ImportProblem, _with_rounding

_TOKEN = re.compile(r'\s*(?:(#[^\n]*)|("(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\')|([{}:])|([^\s{}:#]+))')


def parse_prototxt(text: str) -> dict:
    """Protobuf text format -> {field: [values]} (nested messages as dicts)."""
    tokens = []
    for match in _TOKEN.finditer(text):
        comment, string, punct, word = match.groups()
        if string is not None:
            tokens.append(("value", string[1:-1]))
        elif punct is not None:
            tokens.append((punct, punct))
        elif word is not None:
            tokens.append(("word", word))
    position = 0

    def message(closing: bool) -> dict:
        nonlocal position
        fields: dict = {}
        while position < len(tokens):
            kind, value = tokens[position]
            if kind == "}":
                if not closing:
                    raise ImportProblem("unbalanced '}' in the prototxt")
                position += 1
                return fields
            if kind != "word":
                raise ImportProblem(f"unexpected {value!r} in the prototxt")
            position += 1
            if position < len(tokens) and tokens[position][0] == ":":
                position += 1
            if position < len(tokens) and tokens[position][0] == "{":
                position += 1
                fields.setdefault(value, []).append(message(True))
            elif position < len(tokens):
                fields.setdefault(value, []).append(_scalar(tokens[position][1]))
                position += 1
        if closing:
            raise ImportProblem("a '{' in the prototxt is never closed")
        return fields

    return message(False)


def _scalar(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _one(message: dict, key: str, default=None):
    values = message.get(key)
    return values[0] if values else default


def _window(param: dict, name: str, default=None):
    """kernel_size / stride / pad, or their _h/_w forms, as an int or [h, w]."""
    h, w = _one(param, f"{name}_h"), _one(param, f"{name}_w")
    if h is not None and w is not None:
        return h if h == w else [h, w]
    plain = {"kernel": "kernel_size", "stride": "stride", "pad": "pad"}[name]
    return _one(param, plain, default)


def spec_from_prototxt(text: str, name: str | None = None, input_shape: tuple | None = None) -> dict:
    """A spec for a Caffe deploy prototxt. Raises ImportProblem naming what cannot be expressed."""
    net = parse_prototxt(text)
    layers_in = net.get("layer") or net.get("layers") or []
    shape = input_shape or _input_shape(net, layers_in)
    if shape is None:
        raise ImportProblem("the prototxt gives no input shape (input_dim, input_shape or an Input layer); "
                            "pass --input C,H,W")
    layers, unsupported, image = [], [], True
    previous_top = None
    for raw in layers_in:
        kind, lname = str(_one(raw, "type", "")), str(_one(raw, "name", "layer"))
        bottom = _one(raw, "bottom")
        if kind in ("Input", "Data", "ImageData", "SoftmaxWithLoss", "Accuracy", "Silence"):
            continue
        if previous_top is not None and bottom is not None and bottom != previous_top:
            raise ImportProblem(f"layer {lname} reads {bottom!r}, not the layer before it ({previous_top!r}); only "
                                "chains of layers can be imported")
        previous_top = _one(raw, "top", previous_top)
        safe = re.sub(r"\W", "_", lname)
        safe = safe if safe[:1].isalpha() else f"l_{safe}"
        if kind == "ReLU":
            if layers and layers[-1]["type"] in ("conv", "linear") and "activation" not in layers[-1]:
                layers[-1]["activation"] = "relu"
            else:
                layers.append({"name": safe, "type": "relu"})
            continue
        if kind == "BatchNorm":  # Caffe normalises without a scale and shift; a Scale layer after it adds them
            param = _one(raw, "batch_norm_param", {})
            layers.append({"name": safe, "type": "batchnorm", "eps": float(_one(param, "eps", 1e-5)),
                           "momentum": round(1 - float(_one(param, "moving_average_fraction", 0.999)), 12),
                           "affine": False, "note": f"from Caffe layer {lname}"})
            continue
        if kind == "Scale":
            if layers and layers[-1]["type"] == "batchnorm" and layers[-1].get("affine") is False \
                    and _one(_one(raw, "scale_param", {}), "bias_term", False) in (True, "true"):
                del layers[-1]["affine"]
                layers[-1]["note"] += f" and its Scale layer {lname}"
            else:
                unsupported.append(f"{lname} (Scale, other than with a bias right after BatchNorm)")
            continue
        if kind in ("TanH", "Sigmoid"):
            layers.append({"name": safe, "type": kind.lower(), "note": f"from Caffe layer {lname}"})
            continue
        if kind == "InnerProduct" and image:
            layers.append({"name": "flatten", "type": "flatten"})
            image = False
        layer = _caffe_layer(kind, safe, raw)
        if layer is None:
            unsupported.append(f"{lname} ({kind})")
            continue
        layer["note"] = f"from Caffe layer {lname}" + layer.pop("_note", "")
        layers.append(layer)
    if unsupported:
        raise ImportProblem(f"cannot express these Caffe layers in a spec: {', '.join(unsupported)}; supported: "
                            "Convolution, ReLU, TanH, Sigmoid, LRN (across channels), Pooling (MAX, AVE), "
                            "BatchNorm (and a Scale with bias after it), InnerProduct, Dropout, Softmax")
    spec = {"alexspec": 1, "name": re.sub(r"\W", "_", name or str(_one(net, "name", "caffe_net"))),
            "follows": "caffe", "input": {"channels": shape[0], "height": shape[1], "width": shape[2]},
            "layers": layers}
    if not spec["name"][:1].isalpha():
        spec["name"] = f"net_{spec['name']}"
    return _with_rounding(spec)


def _input_shape(net: dict, layers: list) -> tuple | None:
    dims = net.get("input_dim")
    if dims and len(dims) == 4:
        return tuple(dims[1:])
    shape = _one(net, "input_shape")
    if shape and len(shape.get("dim", [])) == 4:
        return tuple(shape["dim"][1:])
    for raw in layers:
        if _one(raw, "type") == "Input":
            dims = _one(_one(raw, "input_param", {}), "shape", {}).get("dim", [])
            if len(dims) == 4:
                return tuple(dims[1:])
    return None


def _caffe_layer(kind: str, name: str, raw: dict) -> dict | None:
    if kind == "Convolution":
        p = _one(raw, "convolution_param", {})
        if _one(p, "dilation", 1) != 1:
            return None
        layer = {"name": name, "type": "conv", "out": _one(p, "num_output"), "kernel": _window(p, "kernel"),
                 "stride": _window(p, "stride", 1), "padding": _window(p, "pad", 0)}
        if _one(p, "group", 1) != 1:
            layer["groups"] = _one(p, "group")
        if str(_one(p, "bias_term", "true")).lower() == "false":
            layer["bias"] = False
        return layer
    if kind == "LRN":
        p = _one(raw, "lrn_param", {})
        if str(_one(p, "norm_region", "ACROSS_CHANNELS")) != "ACROSS_CHANNELS":
            return None
        size, alpha = _one(p, "local_size", 5), float(_one(p, "alpha", 1.0))
        return {"name": name, "type": "lrn", "size": size, "alpha": alpha / size, "beta": float(_one(p, "beta", 0.75)),
                "k": float(_one(p, "k", 1.0)), "convention": "paper",
                "_note": f"; Caffe's alpha {alpha:g} is divided by local_size {size}: alpha {alpha / size:g} in "
                         "the paper's convention"}
    if kind == "Pooling":
        p = _one(raw, "pooling_param", {})
        pool = str(_one(p, "pool", "MAX"))
        if pool not in ("MAX", "AVE") or str(_one(p, "global_pooling", "false")).lower() == "true":
            return None
        return {"name": name, "type": "maxpool" if pool == "MAX" else "avgpool", "kernel": _window(p, "kernel"),
                "stride": _window(p, "stride", 1), "padding": _window(p, "pad", 0), "rounding": "ceil"}
    if kind == "InnerProduct":
        p = _one(raw, "inner_product_param", {})
        layer = {"name": name, "type": "linear", "out": _one(p, "num_output")}
        if str(_one(p, "bias_term", "true")).lower() == "false":
            layer["bias"] = False
        return layer
    if kind == "Dropout":
        return {"name": name, "type": "dropout", "p": float(_one(_one(raw, "dropout_param", {}), "dropout_ratio", 0.5))}
    if kind == "Softmax":
        return {"name": name, "type": "softmax"}
    return None
