"""Specs from Caffe's text prototxt (deploy nets: chains, and graphs of Concat and Eltwise layers).

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
    """Protobuf text format -> {field: [values]} (nested messages as dicts). A problem is an
    ImportProblem starting `LINE:COL: `."""
    tokens = []  # (kind, value, "line:col")
    for match in _TOKEN.finditer(text):
        comment, string, punct, word = match.groups()
        start = match.start(match.lastindex) if match.lastindex else match.start()
        where = f"{text.count(chr(10), 0, start) + 1}:{start - text.rfind(chr(10), 0, start)}"
        if string is not None:
            tokens.append(("value", string[1:-1], where))
        elif punct is not None:
            tokens.append((punct, punct, where))
        elif word is not None:
            tokens.append(("word", word, where))
    position = 0

    def message(opened_at: str | None) -> dict:
        nonlocal position
        fields: dict = {}
        while position < len(tokens):
            kind, value, where = tokens[position]
            if kind == "}":
                if opened_at is None:
                    raise ImportProblem(f"{where}: this '}}' closes no '{{'; remove it")
                position += 1
                return fields
            if kind != "word":
                raise ImportProblem(f"{where}: unexpected {value!r}; a field name was expected (name: value, "
                                    "or name { ... })")
            position += 1
            if position < len(tokens) and tokens[position][0] == ":":
                position += 1
            if position < len(tokens) and tokens[position][0] == "{":
                position += 1
                fields.setdefault(value, []).append(message(tokens[position - 1][2]))
            elif position < len(tokens):
                fields.setdefault(value, []).append(_scalar(tokens[position][1]))
                position += 1
        if opened_at is not None:
            raise ImportProblem(f"{opened_at}: this '{{' is never closed; close it with '}}'")
        return fields

    return message(None)


def _scalar(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


# Fields read as messages (`name { ... }`) and as numbers; a prototxt that gives another form is refused
# by _check_form, naming the field, before anything reads it.
_MESSAGES = {"layer", "layers", "input_shape", "shape"}
_NUMBERS = {"input_dim", "dim", "num_output", "kernel_size", "kernel_h", "kernel_w", "stride", "stride_h", "stride_w",
            "pad", "pad_h", "pad_w", "group", "dilation", "local_size", "alpha", "beta", "k", "eps",
            "moving_average_fraction", "axis", "dropout_ratio"}


def _check_form(message: dict, where: str = "") -> None:
    """ImportProblem for the first field in `message` (recursively) that is not in the form Caffe
    gives it: a message where _MESSAGES or a `*_param` says so, a number where _NUMBERS does."""
    for key, values in message.items():
        for value in values:
            inside = f"{where}{key}"
            if key in _MESSAGES or key.endswith("_param"):
                if not isinstance(value, dict):
                    raise ImportProblem(f"{inside} must be a message ({key} {{ ... }}), got {value!r}")
                name = value.get("name", [None])[0] if key in ("layer", "layers") else None
                _check_form(value, f"layer {name}: " if name is not None else f"{inside}.")
            elif key in _NUMBERS and not isinstance(value, (int, float)):
                raise ImportProblem(f"{inside} must be a number, got {value!r}")


def _one(message: dict, key: str, default=None):
    values = message.get(key)
    return values[0] if values else default


_PER_SIDE = "a 2-D convolution takes it once (both sides) or twice (height, width)"


def _window(param: dict, name: str, default=None, where: str = "", per_side: bool = False):
    """kernel_size / stride / pad, or their _h/_w forms, as an int or [h, w]. A convolution's
    (`per_side`) may give the plain field once for both sides or twice, height then width."""
    plain = {"kernel": "kernel_size", "stride": "stride", "pad": "pad"}[name]
    h, w, values = _one(param, f"{name}_h"), _one(param, f"{name}_w"), param.get(plain, [])
    if (h is None) != (w is None):
        raise ImportProblem(f"{where}{name}_h and {name}_w go together: give both, or {plain} for both sides")
    if h is not None:
        if values:
            raise ImportProblem(f"{where}give {plain} or {name}_h/{name}_w, not both")
        return h if h == w else [h, w]
    if len(values) > (2 if per_side else 1):
        raise ImportProblem(f"{where}{plain} is given {len(values)} times; "
                            + (_PER_SIDE if per_side
                               else "it takes one value (or " + name + "_h and " + name + "_w)"))
    if len(values) == 2:
        return values[0] if values[0] == values[1] else list(values)
    return values[0] if values else default


def spec_from_prototxt(text: str, name: str | None = None, input_shape: tuple | None = None) -> dict:
    """A spec for a Caffe deploy prototxt: a chain, or a graph where layers read other blobs than
    the one before them (Concat, Eltwise SUM or PROD). Raises ImportProblem naming what cannot be expressed."""
    net = parse_prototxt(text)
    _check_form(net)
    layers_in = net.get("layer") or net.get("layers") or []
    shape = input_shape or _input_shape(net, layers_in)
    if shape is None:
        raise ImportProblem("the prototxt gives no input shape (input_dim, input_shape or an Input layer); "
                            "pass --input C,H,W")
    reader = _BlobReader(net, layers_in)
    for raw in layers_in:
        reader.add(raw)
    if reader.unsupported:
        raise ImportProblem(f"cannot express these Caffe layers in a spec: {', '.join(reader.unsupported)}; supported: "
                            "Convolution, ReLU, TanH, Sigmoid, LRN (across channels), Pooling (MAX, AVE, global), "
                            "BatchNorm (and a Scale with bias after it), Scale of two blobs (axis 0: SENet's gate), "
                            "Concat, Eltwise (SUM, PROD), InnerProduct, Dropout, Softmax")
    spec = {"alexspec": 1, "name": re.sub(r"\W", "_", name or str(_one(net, "name", "caffe_net"))),
            "follows": "caffe", "input": {"channels": shape[0], "height": shape[1], "width": shape[2]},
            "layers": reader.layers}
    if not spec["name"][:1].isalpha():
        spec["name"] = f"net_{spec['name']}"
    return _with_rounding(spec)


_SKIPPED = ("Input", "Data", "ImageData", "SoftmaxWithLoss", "Accuracy", "Silence")


class _BlobReader:
    """The spec's layers from Caffe layers in order, following blobs: each blob holds the output of
    one spec layer (`input` for the data), so a layer reading another blob than the last layer's
    names its `inputs`. An in-place layer (top = bottom) rewrites its blob."""

    def __init__(self, net: dict, layers_in: list):
        self.layers: list[dict] = []
        self.unsupported: list[str] = []
        data = [str(b) for b in net.get("input", [])] + [str(t) for raw in layers_in if str(_one(raw, "type", "")) in
                                                          ("Input", "Data", "ImageData") for t in raw.get("top", [])]
        self.blob_of = {blob: "input" for blob in data or ["data"]}
        self.is_image = {"input": True}
        self.readers: dict[str, int] = {}  # blob -> how many layers read it (a ReLU on a blob read elsewhere stays apart)
        for raw in layers_in:
            for blob in raw.get("bottom", []):
                self.readers[str(blob)] = self.readers.get(str(blob), 0) + 1

    def add(self, raw: dict) -> None:
        kind, lname = str(_one(raw, "type", "")), str(_one(raw, "name", "layer"))
        if kind in _SKIPPED:
            return
        bottoms, tops = [str(b) for b in raw.get("bottom", [])], [str(t) for t in raw.get("top", [])]
        unknown = [b for b in bottoms if b not in self.blob_of]
        if unknown:
            raise ImportProblem(f"layer {lname} reads {unknown[0]!r}, which no layer above it writes")
        sources = [self.blob_of[b] for b in bottoms] or [self.last()]
        safe = re.sub(r"\W", "_", lname)
        safe = safe if safe[:1].isalpha() else f"l_{safe}"
        written = self.layer(kind, safe, lname, raw, sources, bottoms, tops)
        for top in tops or bottoms:
            self.blob_of[top] = written if written is not None else sources[0]

    def last(self) -> str:
        return self.layers[-1]["name"] if self.layers else "input"

    def layer(self, kind: str, safe: str, lname: str, raw: dict, sources: list, bottoms: list, tops: list):
        """Append the spec layer(s) of one Caffe layer; the name of the one whose output its top holds."""
        previous = self.layers[-1] if self.layers else None
        in_place = bool(tops) and tops == bottoms
        if kind == "ReLU" and previous and previous["type"] in ("conv", "linear") and "activation" not in previous \
                and sources == [previous["name"]] and (in_place or not bottoms or self.readers.get(bottoms[0], 0) == 1):
            previous["activation"] = "relu"
            return previous["name"]
        if kind == "Scale":
            if previous and previous["type"] == "batchnorm" and previous.get("affine") is False \
                    and sources == [previous["name"]] \
                    and _one(_one(raw, "scale_param", {}), "bias_term", False) in (True, "true"):
                del previous["affine"]
                previous["note"] += f" and its Scale layer {lname}"
                return previous["name"]
            param = _one(raw, "scale_param", {})
            if len(sources) == 2 and str(_one(param, "axis", 1)) == "0" \
                    and _one(param, "bias_term", False) in (False, "false"):  # SENet's gate: maps x factors per channel
                self.append({"name": safe, "type": "multiply", "note": f"from Caffe layer {lname}"}, sources)
                self.is_image[safe] = self.is_image.get(sources[0], False)
                return safe
            self.unsupported.append(f"{lname} (Scale, other than with a bias right after BatchNorm or of two "
                                    "blobs along axis 0)")
            return None
        layer = self.simple_layer(kind, safe, lname, raw)
        if layer is None:
            self.unsupported.append(f"{lname} ({kind})")
            return None
        image = self.is_image.get(sources[0], False)
        if layer["type"] == "linear" and image:  # Caffe flattens in InnerProduct
            self.append({"name": f"{safe}_flatten", "type": "flatten"}, sources)
            sources, image = [self.last()], False
        self.append(layer, sources)
        self.is_image[layer["name"]] = image and layer["type"] not in ("flatten", "global_avgpool", "global_maxpool")
        return layer["name"]

    def simple_layer(self, kind: str, safe: str, lname: str, raw: dict) -> dict | None:
        note = f"from Caffe layer {lname}"
        if kind == "ReLU":
            return {"name": safe, "type": "relu", "note": note}
        if kind in ("TanH", "Sigmoid"):
            return {"name": safe, "type": kind.lower(), "note": note}
        if kind == "BatchNorm":  # Caffe normalises without a scale and shift; a Scale layer after it adds them
            param = _one(raw, "batch_norm_param", {})
            return {"name": safe, "type": "batchnorm", "eps": float(_one(param, "eps", 1e-5)),
                    "momentum": round(1 - float(_one(param, "moving_average_fraction", 0.999)), 12),
                    "affine": False, "note": note}
        if kind == "Concat":
            param = _one(raw, "concat_param", {})
            return {"name": safe, "type": "concat", "note": note} if _one(param, "axis", 1) == 1 else None
        if kind == "Eltwise":
            param = _one(raw, "eltwise_param", {})
            operation = {"SUM": "add", "1": "add", "PROD": "multiply", "0": "multiply"}.get(
                str(_one(param, "operation", "SUM")))
            return {"name": safe, "type": operation, "note": note} if operation and not param.get("coeff") else None
        if kind == "Pooling" and str(_one(_one(raw, "pooling_param", {}), "global_pooling", "false")).lower() == "true":
            pool = str(_one(_one(raw, "pooling_param", {}), "pool", "MAX"))
            return {"name": safe, "type": "global_maxpool" if pool == "MAX" else "global_avgpool", "note": note} \
                if pool in ("MAX", "AVE") else None
        layer = _caffe_layer(kind, safe, raw)
        if layer is not None:
            layer["note"] = note + layer.pop("_note", "")
        return layer

    def append(self, layer: dict, sources: list) -> None:
        if layer["type"] in ("add", "multiply", "concat") or sources != [self.last()]:
            layer["inputs"] = sources[0] if len(sources) == 1 else sources
        self.layers.append(layer)


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
        where = f"layer {name}: convolution_param."
        layer = {"name": name, "type": "conv", "out": _one(p, "num_output"),
                 "kernel": _window(p, "kernel", None, where, per_side=True),
                 "stride": _window(p, "stride", 1, where, per_side=True),
                 "padding": _window(p, "pad", 0, where, per_side=True)}
        dilation = [int(d) for d in p.get("dilation", [])]
        if len(dilation) > 2:
            raise ImportProblem(f"{where}dilation is given {len(dilation)} times; {_PER_SIDE}")
        if dilation and set(dilation) != {1}:
            layer["dilation"] = dilation[0] if len(dilation) == 1 else dilation[:2]
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
        if not isinstance(size, int) or size < 1:
            raise ImportProblem(f"layer {name}: lrn_param.local_size must be a whole number of channels, 1 or more, "
                                f"got {size!r}")
        return {"name": name, "type": "lrn", "size": size, "alpha": alpha / size, "beta": float(_one(p, "beta", 0.75)),
                "k": float(_one(p, "k", 1.0)), "convention": "paper",
                "_note": f"; Caffe's alpha {alpha:g} is divided by local_size {size}: alpha {alpha / size:g} in "
                         "the paper's convention"}
    if kind == "Pooling":
        p = _one(raw, "pooling_param", {})
        pool = str(_one(p, "pool", "MAX"))
        if pool not in ("MAX", "AVE") or str(_one(p, "global_pooling", "false")).lower() == "true":
            return None
        where = f"layer {name}: pooling_param."
        return {"name": name, "type": "maxpool" if pool == "MAX" else "avgpool",
                "kernel": _window(p, "kernel", None, where), "stride": _window(p, "stride", 1, where),
                "padding": _window(p, "pad", 0, where), "rounding": "ceil"}
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
