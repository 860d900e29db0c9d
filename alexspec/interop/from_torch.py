"""Specs from torch.nn models built of standard layers (torchvision's AlexNet, VGG, LeNet-style nets).

The model's leaf modules are read in registration order (how torchvision's Sequential nets run);
a ReLU right after a conv or linear layer is fused into it, a flatten is inserted before the
first linear layer of an image network. A layer this spec language cannot express is an
error naming it: the importer never produces a silently different network.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from alexspec.errors import SpecError
from alexspec.builder import spec_source
from alexspec.spec import analyse


class ImportProblem(ValueError):
    """The source model uses something the spec language cannot express."""


@dataclass
class Imported:
    """A spec (as data) and where each spec layer's weights come from in the source."""

    spec: dict
    weight_sources: dict = field(default_factory=dict)  # spec layer name -> source module name

    def convert_state_dict(self, source: dict) -> dict:
        """The source model's state dict with keys renamed for the compiled spec's module."""
        result = {}
        for layer, module in self.weight_sources.items():
            for kind in ("weight", "bias"):
                if f"{module}.{kind}" in source:
                    result[f"{layer}.{kind}"] = source[f"{module}.{kind}"]
        return result


def _pair(value):
    return list(value) if isinstance(value, (tuple, list)) and value[0] != value[1] else \
        (value[0] if isinstance(value, (tuple, list)) else value)


class _Namer:
    def __init__(self):
        self.counts: dict[str, int] = {}

    def __call__(self, prefix: str) -> str:
        self.counts[prefix] = self.counts.get(prefix, 0) + 1
        return f"{prefix}{self.counts[prefix]}"


def spec_from_torch(model, input_shape: tuple[int, int, int], name: str, follows: str = "") -> Imported:
    """A spec reproducing `model` for (C, H, W) inputs, with floor rounding only where it is needed."""
    from torch import nn

    layers, sources, unsupported = [], {}, []
    namer = _Namer()
    image = True
    for qualified, module in model.named_modules():
        if list(module.children()) or isinstance(module, nn.Identity):
            continue
        previous = layers[-1] if layers else None
        if isinstance(module, nn.ReLU):
            if previous and previous["type"] in ("conv", "linear") and previous.get("activation") != "relu":
                previous["activation"] = "relu"
            else:
                layers.append({"name": namer("relu"), "type": "relu"})
            continue
        if isinstance(module, nn.Linear) and image:
            layers.append({"name": "flatten", "type": "flatten"})
            image = False
        layer = _layer(module, namer)
        if layer is None:
            unsupported.append(f"{qualified or '<model>'} ({type(module).__name__})")
            continue
        layer["note"] = f"from {qualified}"
        if layer["type"] == "flatten":
            image = False
        if layer["type"] in ("conv", "linear"):
            sources[layer["name"]] = qualified
        layers.append(layer)
    if unsupported:
        raise ImportProblem(f"cannot express these layers in a spec: {', '.join(unsupported)}; supported: Conv2d, "
                            "ReLU, LocalResponseNorm, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, Dropout, Linear, "
                            "Flatten, Softmax")
    spec = {"alexspec": 1, "name": name, **({"follows": follows} if follows else {}),
            "input": {"channels": input_shape[0], "height": input_shape[1], "width": input_shape[2]},
            "layers": layers}
    return Imported(_with_rounding(spec), sources)


def _layer(module, namer) -> dict | None:
    from torch import nn

    if isinstance(module, nn.Conv2d):
        if module.dilation not in ((1, 1), 1) or isinstance(module.padding, str) or module.padding_mode != "zeros":
            return None
        layer = {"name": namer("conv"), "type": "conv", "out": module.out_channels,
                 "kernel": _pair(module.kernel_size), "stride": _pair(module.stride), "padding": _pair(module.padding)}
        if module.groups != 1:
            layer["groups"] = module.groups
        if module.bias is None:
            layer["bias"] = False
        return layer
    if isinstance(module, nn.Linear):
        return {"name": namer("fc"), "type": "linear", "out": module.out_features,
                **({"bias": False} if module.bias is None else {})}
    if isinstance(module, nn.LocalResponseNorm):
        return {"name": namer("norm"), "type": "lrn", "size": module.size, "alpha": module.alpha, "beta": module.beta,
                "k": module.k, "convention": "torch"}
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        if isinstance(module, nn.MaxPool2d) and (module.dilation not in (1, (1, 1)) or module.return_indices):
            return None
        if isinstance(module, nn.AvgPool2d) and (not module.count_include_pad or module.divisor_override):
            return None
        layer = {"name": namer("pool" if isinstance(module, nn.MaxPool2d) else "avgpool"),
                 "type": "maxpool" if isinstance(module, nn.MaxPool2d) else "avgpool",
                 "kernel": _pair(module.kernel_size), "stride": _pair(module.stride), "padding": _pair(module.padding)}
        if module.ceil_mode:
            layer["rounding"] = "ceil"
        return layer
    if isinstance(module, nn.AdaptiveAvgPool2d):
        size = module.output_size
        if size is None or (isinstance(size, tuple) and None in size):
            return None
        return {"name": namer("adaptive"), "type": "adaptive_avgpool", "output": _pair(size)}
    if isinstance(module, nn.Dropout):
        return {"name": namer("drop"), "type": "dropout", "p": module.p}
    if isinstance(module, nn.Flatten):
        return {"name": "flatten", "type": "flatten"} if module.start_dim == 1 and module.end_dim == -1 else None
    if isinstance(module, nn.Softmax):
        return {"name": "softmax", "type": "softmax"} if module.dim in (1, -1) else None
    return None


def _with_rounding(spec: dict) -> dict:
    """`spec` as it is if every size divides; else with `rounding: floor` (what PyTorch did) and a
    description saying where fractions were dropped."""
    try:
        analyse(spec_source(spec))
        return spec
    except SpecError as error:
        fractions = [p for p in error.problems if "is not an integer" in p.message]
        if not fractions or len(fractions) != len(error.problems):
            raise
    floored = {**spec, "rounding": "floor"}
    info = analyse(spec_source(floored))
    notes = [f"{li.layer.name}: {note}" for li in info.layers for note in li.rounded]
    ordered = {k: floored[k] for k in ("alexspec", "name", "follows") if k in floored}
    ordered["description"] = ("Imported from PyTorch, which rounds output sizes down; this spec does too "
                              f"({'; '.join(notes)}).")
    return {**ordered, **{k: v for k, v in floored.items() if k not in ordered}}
