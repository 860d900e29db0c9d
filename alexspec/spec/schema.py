"""The spec language v1 as a JSON Schema: the reference for every key, type, bound and default.

`alexspec schema` prints it (point an editor's YAML language server at the file), docs/
is generated from it, and `check` turns schema violations into located, readable problems.
Bounds keep inference cheap: no size here lets a spec make the compiler blow memory or time.
"""
from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from alexspec.ir import FUSED_ACTIVATIONS

VERSION = 1
SCHEMA_ID = "https://alexspec.dev/schema/v1.json"
NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_]{0,63}$"
DEVICE_PATTERN = r"^(cpu|cuda(:[0-9]{1,2})?|mps|auto)$"
MAX_LAYERS = 10_000
MAX_CHANNELS = 1 << 20
MAX_SPATIAL = 1 << 16
MAX_KERNEL = 1024
MAX_TOWERS = 8


def _int(description: str, minimum: int = 1, maximum: int = MAX_CHANNELS, **extra) -> dict:
    return {"type": "integer", "minimum": minimum, "maximum": maximum, "description": description, **extra}


def _num(description: str, **bounds) -> dict:
    return {"type": "number", "description": description, **bounds}


def _enum(description: str, values: list, **extra) -> dict:
    return {"enum": values, "description": description, **extra}


def _pair(description: str, minimum: int, maximum: int, **extra) -> dict:
    """An integer, or [height, width]."""
    item = {"type": "integer", "minimum": minimum, "maximum": maximum}
    return {"anyOf": [item, {"type": "array", "items": item, "minItems": 2, "maxItems": 2}],
            "x-expected": f"an integer from {minimum} to {maximum}, or a pair [height, width]",
            "description": description, **extra}


_EXPECT = {
    "type": "object", "additionalProperties": False,
    "description": "What the author asserts this layer produces; a mismatch with inference is an error.",
    "properties": {
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 1 << 40},
                  "minItems": 1, "maxItems": 3,
                  "description": "Output shape per image: [C, H, W], or [features] after flatten."},
        "params": _int("Learnable parameters (weights + biases).", 0, 1 << 40),
        "macs": _int("Multiply-accumulates per image.", 0, 1 << 50),
    },
}
_INIT = {
    "type": "object", "additionalProperties": False,
    "description": "Initialisation. Without `std`, PyTorch's default initialisation is used.",
    "properties": {
        "std": _num("Weights drawn from N(0, std^2).", exclusiveMinimum=0, maximum=10),
        "bias": _num("Constant bias value.", minimum=-1e6, maximum=1e6),
    },
}
_ROUNDING = _enum("How a fractional output size is rounded: `exact` makes a fraction an error, "
                  "`floor` drops it (PyTorch), `ceil` rounds up (Caffe pooling). "
                  "Default: the spec's `rounding`.", ["exact", "floor", "ceil"])
_TOWERS = _enum("`local`: each tower sees only its own channels (grouped by towers). "
                "`cross`: every tower reads all towers' channels (the paper's conv3, fc6-8).",
                ["local", "cross"], default="local")
_ACTIVATION = _enum("Activation applied to the output: `relu` runs in the conv kernel's epilogue, the others "
                    "as torch ops after it (`leaky_relu` with slope 0.01; for another, a `leaky_relu` layer).",
                    ["none", *FUSED_ACTIVATIONS], default="none")
_POOL_WINDOW = {
    "kernel": _pair("Window size.", 1, MAX_KERNEL),
    "stride": _pair("Step between windows. Default: the kernel size.", 1, MAX_KERNEL),
    "padding": _pair("Implicit padding on each side.", 0, MAX_KERNEL, default=0),
    "rounding": _ROUNDING,
}

LAYER_TYPES: dict[str, dict] = {
    "conv": {
        "description": "2-D convolution, optionally with fused bias and activation.",
        "required": ["out", "kernel"],
        "properties": {
            "out": _int("Output channels (all towers together)."),
            "kernel": _pair("Kernel size.", 1, MAX_KERNEL),
            "stride": _pair("Stride.", 1, MAX_KERNEL, default=1),
            "padding": _pair("Zero padding on each side.", 0, MAX_KERNEL, default=0),
            "dilation": _pair("Spacing between kernel taps (atrous convolution): a k x k kernel reads a window of "
                              "dilation*(k-1)+1. Dilated convs run torch's conv on either backend.", 1, MAX_KERNEL,
                              default=1),
            "groups": _int("Channel groups (within a tower when `towers: local`).", 1, 4096, default=1),
            "bias": {"type": "boolean", "default": True, "description": "Learn a bias per output channel."},
            "activation": _ACTIVATION,
            "towers": _TOWERS,
            "rounding": _ROUNDING,
            "init": _INIT,
        },
    },
    "linear": {
        "description": "Fully connected layer over the flattened features.",
        "required": ["out"],
        "properties": {
            "out": _int("Output features (all towers together)."),
            "bias": {"type": "boolean", "default": True, "description": "Learn a bias per output."},
            "activation": _ACTIVATION,
            "dropout": _num("Dropout probability applied to the output in training (after the "
                            "activation), as the paper does on fc6 and fc7.", minimum=0, exclusiveMaximum=1,
                            default=0),
            "towers": _TOWERS,
            "init": _INIT,
        },
    },
    "lrn": {
        "description": "Local response normalisation across channels.",
        "required": ["size"],
        "properties": {
            "size": _int("Channels in the window (n).", 1, 255),
            "alpha": _num("Scale (see `convention`).", minimum=0, maximum=1e3, default=1e-4),
            "beta": _num("Exponent.", minimum=0, maximum=16, default=0.75),
            "k": _num("Additive constant.", minimum=0, maximum=1e3, default=2.0),
            "convention": _enum("`paper`: k + alpha*sum(a^2); `caffe` and `torch`: k + alpha/n*sum(a^2).",
                                ["paper", "caffe", "torch"], default="paper"),
            "groups": _int("Normalise within each of this many channel groups (the one-device form "
                           "of per-tower LRN).", 1, 4096, default=1),
        },
    },
    "maxpool": {"description": "Max pooling (overlapping when stride < kernel).",
                "required": ["kernel"], "properties": dict(_POOL_WINDOW)},
    "avgpool": {"description": "Average pooling (padding counted in the average, as PyTorch).",
                "required": ["kernel"], "properties": dict(_POOL_WINDOW)},
    "adaptive_avgpool": {
        "description": "Average pooling to a fixed output size (torchvision's AlexNet uses 6x6).",
        "required": ["output"],
        "properties": {"output": _pair("Output size.", 1, MAX_SPATIAL)},
    },
    "adaptive_maxpool": {
        "description": "Max pooling to a fixed output size.",
        "required": ["output"],
        "properties": {"output": _pair("Output size.", 1, MAX_SPATIAL)},
    },
    "global_avgpool": {"description": "The mean of each channel: C x H x W -> C features (NiN, GoogLeNet, "
                                      "ResNet's last pooling, with the flatten built in).", "properties": {}},
    "global_maxpool": {"description": "The maximum of each channel: C x H x W -> C features.", "properties": {}},
    "batchnorm": {
        "description": "Batch normalisation per channel (after a conv) or per feature (after a linear layer): "
                       "batch statistics in training, running ones in evaluation.",
        "properties": {
            "eps": _num("Added to the variance.", exclusiveMinimum=0, maximum=1, default=1e-5),
            "momentum": _num("Weight of each batch in the running statistics.", minimum=0, maximum=1, default=0.1),
            "affine": {"type": "boolean", "default": True, "description": "Learn a scale and a shift per channel."},
        },
    },
    "add": {"description": "The elementwise sum of the layers `inputs` names, all of one shape (a residual "
                           "connection: `inputs: [conv2b, pool1]`).", "required": ["inputs"], "properties": {}},
    "multiply": {"description": "The elementwise product of the layers `inputs` names: of one shape, or a C x H x W "
                                "output scaled channel by channel by C x 1 x 1 or C features (squeeze-and-excitation: "
                                "`inputs: [conv3, gate]`).", "required": ["inputs"], "properties": {}},
    "concat": {"description": "The layers `inputs` names side by side along channels (the same height and "
                              "width), or along features (GoogLeNet's inception branches).",
               "required": ["inputs"], "properties": {}},
    "block": {
        "description": "A use of a block from `blocks:`, written out as its layers, `repeat` times: instance k "
                       "names them NAME_k_LAYER (NAME_LAYER without `repeat`).",
        "required": ["block"],
        "properties": {
            "block": {"type": "string", "pattern": NAME_PATTERN, "description": "The block's name in `blocks:`."},
            "repeat": _int("Instances, one after the other.", 1, 1000, default=1),
            "with": {"type": "object", "description": "Values of the block's parameters (`$name` in its layers); "
                                                      "the others take their defaults."},
        },
    },
    "relu": {"description": "ReLU activation.", "properties": {}},
    "relu6": {"description": "min(max(x, 0), 6) (MobileNet).", "properties": {}},
    "leaky_relu": {"description": "x where x > 0, else negative_slope * x.",
                   "properties": {"negative_slope": _num("The slope below zero.", minimum=0, maximum=1,
                                                         default=0.01)}},
    "tanh": {"description": "tanh activation (the saturating unit the paper's Figure 1 compares ReLU with).",
             "properties": {}},
    "sigmoid": {"description": "Logistic sigmoid activation.", "properties": {}},
    "gelu": {"description": "GELU activation (exact, as torch.nn.GELU).", "properties": {}},
    "silu": {"description": "SiLU (swish) activation: x * sigmoid(x).", "properties": {}},
    "hardswish": {"description": "x * relu6(x + 3) / 6 (MobileNetV3).", "properties": {}},
    "hardsigmoid": {"description": "relu6(x + 3) / 6 (MobileNetV3's squeeze-and-excitation gate).", "properties": {}},
    "dropout": {"description": "Dropout in training.", "required": ["p"],
                "properties": {"p": _num("Probability of zeroing an element (a channel, with `channels`).",
                                         minimum=0, exclusiveMaximum=1),
                               "channels": {"type": "boolean", "default": False,
                                            "description": "Zero whole channels of a C x H x W input, not single "
                                                           "elements (spatial dropout: torch's nn.Dropout2d)."}}},
    "flatten": {"description": "Flatten C x H x W to features.", "properties": {}},
    "softmax": {"description": "Softmax over classes; only as the last layer (training uses the logits "
                               "before it).", "properties": {}},
}

_LAYER_COMMON = {
    "name": {"type": "string", "pattern": NAME_PATTERN,
             "description": "Unique layer name: a letter, then letters, digits or _ (64 at most). "
                            "It becomes a Python attribute in generated code."},
    "type": _enum("Layer type.", sorted(LAYER_TYPES)),
    "inputs": {"anyOf": [{"type": "string", "pattern": NAME_PATTERN},
                         {"type": "array", "items": {"type": "string", "pattern": NAME_PATTERN},
                          "minItems": 1, "maxItems": 64}],
               "x-expected": "a layer name, or a list of layer names",
               "description": "The layers this one reads, by name (`input`: the image); each must stand above "
                              "it. Default: the layer before it. `add`, `multiply` and `concat` read two or more."},
    "expect": _EXPECT,
    "note": {"type": "string", "maxLength": 500, "description": "Free text shown nowhere but the spec."},
}

_SCHEDULE = {
    "type": "object", "additionalProperties": False, "required": ["type"],
    "description": "Learning-rate schedule.",
    "properties": {
        "type": _enum("`constant`; `step`: multiply by `factor` every `every` epochs; `plateau`: "
                      "multiply by `factor` when validation error stops improving for `patience` epochs, "
                      "at most `times` times (the paper: 0.1, 3 times); `cosine`: to 0 over the run.",
                      ["constant", "step", "plateau", "cosine"]),
        "factor": _num("Multiplier applied at each drop.", exclusiveMinimum=0, exclusiveMaximum=1, default=0.1),
        "every": _int("Epochs between drops (`step`).", 1, 100_000),
        "patience": _int("Epochs without improvement before a drop (`plateau`).", 1, 1000, default=5),
        "times": _int("Most drops (`plateau`).", 1, 100, default=3),
        "warmup": _int("Epochs of linear warm-up before the schedule.", 0, 1000, default=0),
    },
}

_TRAINING = {
    "type": "object", "additionalProperties": False,
    "description": "The training recipe `alexspec train` follows; `--set training.KEY=VALUE` overrides a key.",
    "properties": {
        "optimizer": _enum("Optimizer.", ["sgd", "adam", "adamw"], default="sgd"),
        "lr": _num("Base learning rate.", exclusiveMinimum=0, maximum=100, default=0.01),
        "momentum": _num("Momentum (SGD).", minimum=0, exclusiveMaximum=1, default=0.9),
        "nesterov": {"type": "boolean", "default": False, "description": "Nesterov momentum (SGD)."},
        "weight_decay": _num("L2 weight decay.", minimum=0, maximum=1, default=5e-4),
        "batch": _int("Images per step (all devices together).", 1, 1 << 20, default=128),
        "epochs": _int("Passes over the training data.", 1, 100_000, default=90),
        "label_smoothing": _num("Label smoothing.", minimum=0, exclusiveMaximum=1, default=0),
        "seed": _int("Random seed.", 0, (1 << 31) - 1, default=0),
        "schedule": _SCHEDULE,
        "lr_mult": {
            "type": "object", "description": "Per-layer learning-rate multipliers, by layer name.",
            "additionalProperties": {
                "type": "object", "additionalProperties": False,
                "properties": {"weight": _num("Weight LR multiplier.", minimum=0, maximum=1000),
                               "bias": _num("Bias LR multiplier.", minimum=0, maximum=1000)}},
        },
        "augmentation": {
            "type": "object", "additionalProperties": False, "description": "Training-time augmentation.",
            "properties": {
                "resize": _int("Shorter side resized to this before cropping.", 1, MAX_SPATIAL),
                "crop": _pair("Random crop size, [height, width] or one number for a square; must equal the "
                              "input's.", 1, MAX_SPATIAL),
                "flip": {"type": "boolean", "default": False, "description": "Random horizontal flips."},
                "lighting": _num("PCA colour lighting sigma (the paper: 0.1); RGB input only.", minimum=0, maximum=10,
                                 default=0),
                "mean": {"type": "array", "items": {"type": "number"}, "minItems": 1, "maxItems": 4,
                         "description": "Per-channel mean subtracted (input scale 0-255)."},
                "std": {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0},
                        "minItems": 1, "maxItems": 4, "description": "Per-channel std divided by."},
            },
        },
        "eval": {
            "type": "object", "additionalProperties": False, "description": "Evaluation.",
            "properties": {"crops": _enum("1: centre crop; 10: four corners + centre and their flips, "
                                          "softmax averaged (the paper).", [1, 10], default=1)},
        },
    },
}


def _layer_branch(type_name: str, spec: dict) -> dict:
    then = {"type": "object", "additionalProperties": False,
            "required": ["name", "type", *spec.get("required", [])],
            "properties": {**_LAYER_COMMON, **spec["properties"]}}
    return {"if": {"properties": {"type": {"const": type_name}}, "required": ["type"]}, "then": then}


def build_schema() -> dict:
    """The JSON Schema (draft 2020-12) of spec language v1."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "alexspec network spec, version 1",
        "type": "object",
        "additionalProperties": False,
        "required": ["alexspec", "name", "input", "layers"],
        "properties": {
            "alexspec": {"const": VERSION, "description": "Spec language version; this alexspec reads 1."},
            "name": {"type": "string", "pattern": NAME_PATTERN,
                     "description": "Network name; the generated module's class is named after it."},
            "description": {"type": "string", "maxLength": 10_000, "description": "Free text."},
            "follows": {"type": "string", "maxLength": 200,
                        "description": "What the spec reproduces. `alexnet-paper` makes the report "
                                       "compare with the paper's printed neuron counts."},
            "input": {
                "type": "object", "additionalProperties": False,
                "required": ["channels", "height", "width"],
                "description": "One input image: channels x height x width.",
                "properties": {"channels": _int("Input channels.", 1, 4096),
                               "height": _int("Input height.", 1, MAX_SPATIAL),
                               "width": _int("Input width.", 1, MAX_SPATIAL)},
            },
            "classes": _int("Number of classes the last layer outputs (checked against it).", 1, MAX_CHANNELS),
            "blocks": {
                "type": "object", "description": "Reusable blocks by name, each used by `type: block` layers.",
                "additionalProperties": {
                    "type": "object", "additionalProperties": False, "required": ["layers"],
                    "properties": {
                        "params": {"type": "object", "description": "Each parameter and its default; `$name` in "
                                                                    "the layers takes its value."},
                        "layers": {"type": "array", "minItems": 1, "items": {"type": "object"},
                                   "description": "The block's layers (as the spec's, with `$name` values; "
                                                  "`$input` in `inputs`: what the block reads)."},
                    },
                },
            },
            "towers": _int("Model-parallel towers (the paper: 2 GPUs). Tower-local layers split their "
                           "channels evenly between towers.", 1, MAX_TOWERS, default=1),
            "placement": {"type": "array", "minItems": 1, "maxItems": MAX_TOWERS,
                          "items": {"type": "string", "pattern": DEVICE_PATTERN},
                          "description": "Device of each tower, e.g. [cuda:0, cuda:1]. `--devices` overrides. "
                                         "Default: `auto` (CUDA when present, else CPU)."},
            "rounding": _enum("Default output-size rounding for conv and pooling layers.",
                              ["exact", "floor", "ceil"], default="exact"),
            "init": {**_INIT, "description": "Default initialisation for every layer with weights."},
            "layers": {"type": "array", "minItems": 1, "maxItems": MAX_LAYERS,
                       "description": "The layers, in order; each reads the previous one's output.",
                       "items": {"type": "object", "required": ["name", "type"], "properties": _LAYER_COMMON,
                                 "allOf": [_layer_branch(t, s) for t, s in LAYER_TYPES.items()]}},
            "training": _TRAINING,
        },
    }


@lru_cache(maxsize=1)
def schema() -> dict:
    """The schema, built once."""
    return build_schema()


def schema_json() -> str:
    """The schema as stable, indented JSON text."""
    return json.dumps(schema(), indent=2, sort_keys=False) + "\n"


def default(properties: dict, key: str) -> Any:
    """The schema's default for `key` in a `properties` mapping (None when it has none)."""
    return properties.get(key, {}).get("default")
