"""Turn a loaded spec into the typed IR, checking what the schema cannot express.

The schema has already checked types, keys and ranges. Here: layer names are unique and
safe, placement matches the towers, softmax is last, training keys that name layers name
real ones, augmentation fits the input. Shape rules live in `alexspec.infer`.
"""
from __future__ import annotations

import keyword
from typing import Any

from alexspec import ir
from alexspec.errors import Problem, did_you_mean, quote, raise_if_any
from alexspec.spec import schema as sch
from alexspec.spec.blocks import expand
from alexspec.spec.loader import Document
from alexspec.spec.schema_check import SchemaResult, check
from alexspec.words import count


def to_network(doc: Document) -> ir.Network:
    """The IR of a loaded spec (its blocks written out). Raises SpecError listing every problem found."""
    doc = expand(doc)
    checked = check(doc)
    network, more = build(doc, checked)
    raise_if_any(checked.problems + more)
    return network


def build(doc: Document, checked: SchemaResult) -> tuple[ir.Network | None, list[Problem]]:
    """The IR of what the schema check found sound, and the problems found building it.

    The network is None when no layer is sound.
    """
    if not checked.sound_layers:
        return None, []
    builder = _Builder(doc, checked.sound_layers, checked.training_sound)
    network = builder.network()
    return network, builder.problems


def _pair(value) -> ir.Pair:
    return (value, value) if isinstance(value, int) else (value[0], value[1])


def _optional_pair(value) -> ir.Pair | None:
    return None if value is None else _pair(value)


class _Builder:
    def __init__(self, doc: Document, layer_count: int, training_sound: bool):
        self.doc = doc
        self.data: dict = doc.data
        self.complete = layer_count == len(doc.data["layers"])
        self.training_sound = training_sound
        self.raw_layers: list = doc.data["layers"][:layer_count]
        self.problems: list[Problem] = []

    def problem(self, path: tuple, message: str, hint: str = "", key: bool = False) -> None:
        self.problems.append(Problem(self.doc.loc(path, key=key), self.doc.path_text(path), message, hint))

    def network(self) -> ir.Network:
        d = self.data
        towers = d.get("towers", 1)
        placement = tuple(d.get("placement", ["auto"] * towers))
        if len(placement) != towers:
            self.problem(("placement",), f"placement lists {count(len(placement), 'device')} for {count(towers, 'tower')}",
                         f"give one device per tower, e.g. [{', '.join(f'cuda:{i}' for i in range(towers))}]")
        layers = tuple(self.layer(i, raw) for i, raw in enumerate(self.raw_layers))
        self.check_names(layers)
        self.check_graph(layers)
        for layer in layers[:-1]:
            if isinstance(layer, ir.Softmax):
                self.problem(("layers", layers.index(layer)), "softmax may only be the last layer",
                             "move it to the end, or remove it (training applies softmax in the loss)")
        training = self.training(d["training"], layers) if "training" in d and self.complete and self.training_sound \
            else None
        return ir.Network(
            name=d["name"], input=(d["input"]["channels"], d["input"]["height"], d["input"]["width"]),
            layers=layers, towers=towers, placement=placement, classes=d.get("classes"),
            follows=d.get("follows", ""), description=d.get("description", ""),
            training=training, file=self.doc.file, complete=self.complete,
            block_uses=self.doc.block_uses if self.complete else (), input_set=self.input_set())

    def input_set(self) -> str:
        """The --set arguments that changed the input the spec file gives ("" where none did)."""
        places = {self.doc.loc(("input", key)).file for key in ("channels", "height", "width")}
        return ", ".join(sorted(place for place in places if place.startswith("--set ")))

    # --- layers -------------------------------------------------------------------------

    def layer(self, index: int, raw: dict) -> ir.Layer:
        kind = raw["type"]
        props = sch.LAYER_TYPES[kind]["properties"]
        path = ("layers", index)

        def get(key: str) -> Any:
            return raw.get(key, sch.default(props, key))

        locs = {key: self.doc.loc(path + (key,)) for key in raw}
        for key in ("shape", "params", "macs"):
            if isinstance(raw.get("expect"), dict) and key in raw["expect"]:
                locs[f"expect.{key}"] = self.doc.loc(path + ("expect", key))
        inputs = raw.get("inputs", ())
        common: dict[str, Any] = {"name": raw["name"], "loc": self.doc.loc(path), "locs": locs,
                                  "expect": self.expect(raw.get("expect")),
                                  "inputs": (inputs,) if isinstance(inputs, str) else tuple(inputs)}
        rounding = raw.get("rounding", self.data.get("rounding", "exact"))
        if kind == "conv":
            return ir.Conv(**common, out=raw["out"], kernel=_pair(raw["kernel"]), stride=_pair(get("stride")),
                           padding=_pair(get("padding")), dilation=_pair(get("dilation")), groups=get("groups"),
                           bias=get("bias"), activation=get("activation"), towers=get("towers"), rounding=rounding,
                           init=self.init(raw.get("init")))
        if kind == "linear":
            return ir.Linear(**common, out=raw["out"], bias=get("bias"), activation=get("activation"),
                             dropout=float(get("dropout")), towers=get("towers"), init=self.init(raw.get("init")))
        if kind == "lrn":
            return ir.LRN(**common, size=raw["size"], alpha=float(get("alpha")), beta=float(get("beta")),
                          k=float(get("k")), convention=get("convention"), groups=get("groups"))
        if kind in ("maxpool", "avgpool"):
            cls = ir.MaxPool if kind == "maxpool" else ir.AvgPool
            kernel = _pair(raw["kernel"])
            return cls(**common, kernel=kernel, stride=_pair(raw.get("stride", kernel)),
                       padding=_pair(get("padding")), rounding=rounding)
        if kind in ("adaptive_avgpool", "adaptive_maxpool"):
            return ir.LAYER_CLASSES[kind](**common, output=_pair(raw["output"]))
        if kind == "batchnorm":
            return ir.BatchNorm(**common, eps=float(get("eps")), momentum=float(get("momentum")), affine=get("affine"))
        if kind == "leaky_relu":
            return ir.LeakyReLU(**common, negative_slope=float(get("negative_slope")))
        if kind == "dropout":
            return ir.Dropout(**common, p=float(raw["p"]), channels=get("channels"))
        return ir.LAYER_CLASSES[kind](**common)

    def expect(self, raw: dict | None) -> ir.Expect | None:
        if not raw:
            return None
        shape = tuple(raw["shape"]) if "shape" in raw else None
        return ir.Expect(shape=shape, params=raw.get("params"), macs=raw.get("macs"))

    def init(self, raw: dict | None) -> ir.Init:
        default = self.data.get("init", {})
        merged = {**default, **(raw or {})}
        return ir.Init(std=merged.get("std"), bias=merged.get("bias"))

    def check_names(self, layers: tuple[ir.Layer, ...]) -> None:
        first_use: dict[str, ir.Layer] = {}
        for i, layer in enumerate(layers):
            path = ("layers", i, "name")
            if keyword.iskeyword(layer.name) or keyword.issoftkeyword(layer.name):
                self.problem(path, f"'{layer.name}' is a Python keyword and cannot name a layer",
                             f"rename it, e.g. {layer.name}_1")
            if layer.name in first_use:
                self.problem(path, f"duplicate layer name '{layer.name}' (first used on line "
                                   f"{first_use[layer.name].loc.line})", "give every layer its own name")
            else:
                first_use[layer.name] = layer

    def check_graph(self, layers: tuple[ir.Layer, ...]) -> None:
        """What `inputs` names: layers above (or the image), two or more for a merge; every
        output read by a later layer (the last one's is the network's)."""
        above: dict[str, int] = {}
        read: set[str] = set()
        for i, layer in enumerate(layers):
            path = ("layers", i, "inputs")
            if isinstance(layer, ir.Merge) and len(layer.inputs) < 2:
                article = "an" if layer.type[0] in "aeiou" else "a"
                self.problem(path, f"{article} {layer.type} layer combines two or more layers, `inputs` names "
                                   f"{count(len(layer.inputs), 'layer')}", "e.g. inputs: [conv2b, pool1]")
            if not isinstance(layer, ir.Merge) and len(layer.inputs) > 1:
                self.problem(path, f"a {layer.type} layer reads one layer, `inputs` names {len(layer.inputs)}",
                             "combine them first with an `add`, `multiply` or `concat` layer")
            listed = not isinstance(self.raw_layers[i].get("inputs"), str)
            for k, name in enumerate(layer.inputs):
                if name != ir.IMAGE and name not in above:
                    self.unknown_input(path + ((k,) if listed else ()), name, i, layers, list(above))
                read.add(name)
            if not layer.inputs and i:
                read.add(layers[i - 1].name)
            above.setdefault(layer.name, i)
        if any(layer.inputs for layer in layers):
            for i, layer in enumerate(layers[:-1]):
                if layer.name not in read:
                    self.problem(("layers", i), f"the output of {quote(layer.name)} is never read",
                                 "name it in a later layer's `inputs`, or remove the layer")

    def unknown_input(self, path: tuple, name: str, index: int, layers: tuple[ir.Layer, ...], above: list[str]):
        position = next((j for j, other in enumerate(layers) if other.name == name), None)
        if position is None:
            self.problem(path, f"no layer above this one is named {quote(name)}", did_you_mean(name, above + [ir.IMAGE]))
        else:
            self.problem(path, f"{quote(name)} is {'this layer' if position == index else 'below this layer'}: a "
                               "layer reads only layers above it (or `input`, the image)",
                         "move the layer it reads above it")

    # --- training -----------------------------------------------------------------------

    def training(self, raw: dict, layers: tuple[ir.Layer, ...]) -> ir.Training:
        props = sch.schema()["properties"]["training"]["properties"]

        def get(key: str) -> Any:
            return raw.get(key, sch.default(props, key))

        names = [layer.name for layer in layers]
        learnt = {layer.name for layer in layers if isinstance(layer, (ir.Conv, ir.Linear))
                  or (isinstance(layer, ir.BatchNorm) and layer.affine)}
        for name in raw.get("lr_mult", {}):
            if name not in names:
                self.problem(("training", "lr_mult", name), f"no layer is named {quote(name)}",
                             did_you_mean(name, names), key=True)
            elif name not in learnt:
                kind = next(layer.type for layer in layers if layer.name == name)
                self.problem(("training", "lr_mult", name), f"{quote(name)} is a {kind} layer, which learns no "
                             "weights for a learning-rate multiplier to scale",
                             "name a conv, linear or batchnorm layer", key=True)
        aug_raw = raw.get("augmentation", {})
        self.check_augmentation(aug_raw)
        sched_raw = raw.get("schedule", {"type": "constant"})
        if sched_raw["type"] == "step" and "every" not in sched_raw:
            self.problem(("training", "schedule"), "a step schedule needs `every` (epochs between drops)",
                         "e.g. {type: step, every: 30, factor: 0.1}")
        sched_props = props["schedule"]["properties"]
        schedule = ir.Schedule(**{k: sched_raw.get(k, sch.default(sched_props, k)) for k in
                                  ("type", "factor", "every", "patience", "times", "warmup")})
        aug_props = props["augmentation"]["properties"]
        augmentation = ir.Augmentation(
            resize=aug_raw.get("resize"), crop=_optional_pair(aug_raw.get("crop")), flip=aug_raw.get("flip", False),
            lighting=float(aug_raw.get("lighting", sch.default(aug_props, "lighting"))),
            mean=tuple(aug_raw["mean"]) if "mean" in aug_raw else None,
            std=tuple(aug_raw["std"]) if "std" in aug_raw else None)
        return ir.Training(
            optimizer=get("optimizer"), lr=float(get("lr")), momentum=float(get("momentum")),
            nesterov=get("nesterov"), weight_decay=float(get("weight_decay")), batch=get("batch"),
            epochs=get("epochs"), label_smoothing=float(get("label_smoothing")), seed=get("seed"),
            schedule=schedule, lr_mult=raw.get("lr_mult", {}), augmentation=augmentation,
            eval_crops=raw.get("eval", {}).get("crops", 1))

    def check_augmentation(self, aug: dict) -> None:
        """The augmentation's crop, mean, std and lighting against the network's input."""
        channels, height, width = (self.data["input"][k] for k in ("channels", "height", "width"))
        path = ("training", "augmentation")
        crop, resize = _optional_pair(aug.get("crop")), aug.get("resize")
        if crop is not None and crop != (height, width):
            self.problem(path + ("crop",), f"crop {crop[0]}x{crop[1]} does not match the input {height}x{width}",
                         f"crops are what the network sees: use crop: "
                         f"{height if height == width else f'[{height}, {width}]'} or change `input`")
        if crop is not None and resize is not None and max(crop) > resize:
            self.problem(path + ("crop",), f"crop {crop[0]}x{crop[1]} is larger than the resized image "
                         f"({resize}x{resize})", "resize to at least the crop size (the paper: 256, crop 227)")
        elif crop is None and resize is not None and resize < max(height, width):
            self.problem(path + ("resize",), f"resize {resize} is smaller than the input {height}x{width}, which "
                         "crops of the resized images feed", f"resize to at least {max(height, width)} (the "
                         "paper: 256 for its 227 input)")
        for key in ("mean", "std"):
            if key in aug and len(aug[key]) != channels:
                self.problem(path + (key,), f"{key} has {count(len(aug[key]), 'value')} for {count(channels, 'input channel')}",
                             "give one value per input channel")
        if aug.get("lighting", 0) > 0 and channels != 3:
            self.problem(path + ("lighting",), f"lighting is colour noise along ImageNet's RGB principal components; "
                         f"it needs 3 input channels and this network takes {channels}",
                         "remove it (or give lighting: 0), or take RGB input (input.channels: 3)")
