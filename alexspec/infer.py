"""Inference: every layer's shapes, parameters, MACs and memory, and the checks they imply.

Pure Python over the IR (no torch). Output sizes follow
floor((in + 2*pad - kernel) / stride) + 1 and PyTorch's ceil-mode rule; a fraction is an
error under `exact` rounding. Towers: an activation is either *shared* (the input image,
seen whole by every tower) or *split* (each tower holds channels/towers of it). Conv and
linear layers always produce split outputs in a multi-tower net; a tower-local layer reading
a split input is grouped by the towers, a crossing layer reads every tower's channels. An add
or concat combines split outputs tower by tower (or shared ones), never the two kinds.
"""
from __future__ import annotations

from dataclasses import replace
import math
from typing import Optional

from alexspec import ir
from alexspec.errors import Loc, Problem, raise_if_any
from alexspec.ir import Pair
from alexspec.network_info import LayerInfo, NetworkInfo, Saved


def infer(network: ir.Network) -> NetworkInfo:
    """Infer every layer of `network`. Raises SpecError listing every shape problem."""
    return _Inferrer(network).run()


def _fmt(span: int, stride: int) -> str:
    """span / stride + 1 as a short decimal (e.g. 54.25)."""
    return f"{span / stride + 1:.6g}"


class _Inferrer:
    def __init__(self, network: ir.Network):
        self.net = network
        self.problems: list[Problem] = []
        self.shapes_uncertain = False  # after a rounding problem, later sizes depend on how it is fixed
        self.unchecked: list[str] = []  # layers whose expectation the input --set gave makes untrue

    def problem(self, loc: Loc, layer: ir.Layer, index: int, message: str, hint: str = "") -> None:
        self.problems.append(Problem(loc, f"layers[{index}].{layer.name}", message, hint))

    def run(self) -> NetworkInfo:
        index_of = {ir.IMAGE: -1}
        outputs: dict[int, tuple[ir.Shape, bool]] = {-1: (self.net.input, False)}  # index -> (shape, split)
        infos: list[LayerInfo] = []
        for index, layer in enumerate(self.net.layers):
            if any(name not in index_of for name in layer.inputs):  # validation said where
                break
            sources = tuple(index_of[name] for name in layer.inputs) or (index - 1,)
            before = len(self.problems)
            if isinstance(layer, ir.Merge):
                info = self.merge(layer, index, sources, outputs)
            else:
                info = self.layer(index, layer, *outputs[sources[0]])
            if info is None:  # the problem is recorded; later shapes would only repeat it
                break
            info = replace(info, sources=sources)
            if len(self.problems) == before and not self.shapes_uncertain:  # only a sound layer's expectation
                self.check_expect(info)
            infos.append(info)
            outputs[index] = (info.output_shape, info.split)
            index_of.setdefault(layer.name, index)
        if self.net.complete and infos and len(infos) == len(self.net.layers):
            self.check_classes(infos[-1])
        raise_if_any(self.problems)
        return NetworkInfo(self.net, tuple(infos), tuple(self.unchecked))

    # --- per layer ---------------------------------------------------------------------

    def layer(self, index: int, layer: ir.Layer, shape: ir.Shape, split: bool) -> Optional[LayerInfo]:
        common = dict(layer=layer, index=index, input_shape=shape)
        needs_image = isinstance(layer, (ir.Conv, ir.LRN, ir.Pool, ir.AdaptiveAvgPool, ir.AdaptiveMaxPool,
                                         ir.GlobalPool, ir.Flatten))
        if needs_image and len(shape) != 3:
            self.problem(layer.loc, layer, index, f"a {layer.type} layer needs a C x H x W input, "
                         f"but its input is {len(shape)}-D {list(shape)}",
                         "move it before the flatten layer")
            return None
        if isinstance(layer, ir.Linear) and len(shape) != 1:
            self.problem(layer.loc, layer, index, f"a linear layer needs features, but its input is "
                         f"{'x'.join(map(str, shape))}", "add a `flatten` layer before it")
            return None
        if isinstance(layer, ir.Conv):
            return self.conv(layer, index, shape, split, common)
        if isinstance(layer, ir.Linear):
            return self.linear(layer, index, shape, split, common)
        if isinstance(layer, ir.LRN):
            return self.lrn(layer, index, shape, split, common)
        if isinstance(layer, ir.Pool):
            return self.pool(layer, index, shape, split, common)
        if isinstance(layer, ir.AdaptiveAvgPool):
            return LayerInfo(**common, output_shape=(shape[0], *layer.output), split=split,
                             saved=Saved(input=True))
        if isinstance(layer, ir.AdaptiveMaxPool):
            out_shape = (shape[0], *layer.output)
            return LayerInfo(**common, output_shape=out_shape, split=split,
                             saved=Saved(input=True, extra=((math.prod(out_shape), "int64"),)))
        if isinstance(layer, ir.GlobalPool):
            keeps = isinstance(layer, ir.GlobalMaxPool)  # its backward compares the input with the maxima
            return LayerInfo(**common, output_shape=(shape[0],), split=split, saved=Saved(input=keeps, output=keeps))
        if isinstance(layer, ir.BatchNorm):
            return self.batchnorm(layer, index, shape, split, common)
        if isinstance(layer, ir.Flatten):
            return LayerInfo(**common, output_shape=(math.prod(shape),), split=split, aliases_input=True)
        if isinstance(layer, ir.Dropout):
            return self.dropout(layer, index, shape, split, common)
        if isinstance(layer, ir.Activation):  # tanh and sigmoid differentiate from their output
            from_output = isinstance(layer, (ir.Tanh, ir.Sigmoid))
            return LayerInfo(**common, output_shape=shape, split=split,
                             saved=Saved(output=from_output, input=not from_output))
        # relu and softmax keep their shape; softmax gathers every tower's classes
        return LayerInfo(**common, output_shape=shape, split=split and not isinstance(layer, ir.Softmax),
                         saved=Saved(output=True))

    def tower_groups(self, layer, index: int, channels: int, split: bool, groups: int, crosses: bool) -> int:
        """The one-device groups for a conv or LRN, or 0 after recording a problem."""
        towers = self.net.towers
        if towers == 1 or not split:
            if towers > 1 and groups > 1 and isinstance(layer, ir.Conv):
                self.problem(layer.where("groups"), layer, index, "groups > 1 on a conv that reads the shared "
                             "input of all towers is not supported", "remove `groups`")
                return 0
            return groups
        if crosses:
            if groups > 1:
                self.problem(layer.where("groups"), layer, index, "a crossing conv reads every channel of "
                             "every tower, so it cannot also be grouped", "remove `groups` or `towers: cross`")
                return 0
            return 1
        return towers * groups

    def conv(self, layer: ir.Conv, index: int, shape: ir.Shape, split: bool, common: dict):
        channels, height, width = shape
        groups = self.tower_groups(layer, index, channels, split, layer.groups, layer.towers == "cross")
        if not groups:
            return None
        self.divisible(layer, index, channels, layer.out, groups, split)  # a problem here does not stop shapes
        (out_h, out_w), notes = self.window2d(layer, index, (height, width))
        if out_h is None or out_w is None:
            return None
        per_output = channels // groups * layer.kernel[0] * layer.kernel[1]
        return LayerInfo(**common, output_shape=(layer.out, out_h, out_w), weights=layer.out * per_output,
                         biases=layer.out if layer.bias else 0, macs=layer.out * out_h * out_w * per_output,
                         groups=groups, split=self.net.towers > 1, rounded=notes,
                         saved=Saved(input=True, output=layer.activation != "none"))

    def linear(self, layer: ir.Linear, index: int, shape: ir.Shape, split: bool, common: dict):
        towers = self.net.towers
        if towers > 1 and split and layer.towers == "local":
            self.problem(layer.loc, layer, index, f"a linear layer reads every feature, but its input is split "
                         f"across {towers} towers and the layer does not declare the crossing",
                         "add `towers: cross` (each tower then reads all towers' features, as the paper's fc6)")
            return None
        if towers > 1 and layer.out % towers:
            self.problem(layer.where("out"), layer, index, f"out {layer.out} does not split evenly across "
                         f"{towers} towers", f"use a multiple of {towers}")
            return None
        features = shape[0]
        extra: list[tuple[int, str]] = []
        activated = layer.activation != "none"
        if activated and layer.dropout:
            extra.append((layer.out, "act"))  # the activation's output, which dropout then replaces
        if layer.dropout:
            extra.append((layer.out, "bool"))
        return LayerInfo(**common, output_shape=(layer.out,), weights=features * layer.out,
                         biases=layer.out if layer.bias else 0, macs=features * layer.out, split=towers > 1,
                         saved=Saved(input=True, output=activated and not layer.dropout, extra=tuple(extra)))

    def merge(self, layer: ir.Merge, index: int, sources: tuple[int, ...], outputs: dict) -> Optional[LayerInfo]:
        """An add (inputs of one shape) or a concat (C x H x W of one H and W, or features)."""
        shapes = [outputs[source][0] for source in sources]
        named = ", ".join(f"{name} gives {'x'.join(map(str, shape))}" for name, shape in zip(layer.inputs, shapes))
        splits = {outputs[source][1] for source in sources}
        if len(splits) > 1:  # towers: one tower's channels cannot meet every tower's
            shared = [name for name, source in zip(layer.inputs, sources) if not outputs[source][1]]
            self.problem(layer.where("inputs"), layer, index, f"{layer.type} combines outputs split across "
                         f"{self.net.towers} towers with {' and '.join(map(repr, shared))}, which every tower "
                         "holds whole", "pass the shared input through a conv first, so that it is split as well")
            return None
        if isinstance(layer, ir.Add):
            output = shapes[0] if all(shape == shapes[0] for shape in shapes) else None
            needs = "one shape"
            hint = "make the branches agree (ResNet's shortcut: a 1x1 conv with the stride and channels of the other)"
        elif isinstance(layer, ir.Multiply):
            output = _scaled_shape(shapes)
            needs = "one shape, or of one C x H x W and C x 1 x 1 or C features"
            hint = ("scale each channel by a gate of as many channels (squeeze-and-excitation: adaptive_avgpool "
                    "output 1, 1x1 convs, sigmoid), or multiply outputs of one shape")
        else:
            same_size = len({len(shape) for shape in shapes}) == 1 and len({shape[1:] for shape in shapes}) == 1
            output = (sum(shape[0] for shape in shapes), *shapes[0][1:]) if same_size else None
            needs = "one height and width"
            hint = "concatenate outputs of one height and width (or features with features)"
        if output is None:
            self.problem(layer.where("inputs"), layer, index, f"{layer.type} needs inputs of {needs}: {named}", hint)
            return None
        saved = Saved(input=isinstance(layer, ir.Multiply))  # each factor's gradient is the others' product
        return LayerInfo(layer=layer, index=index, input_shape=shapes[0], output_shape=output, split=splits.pop(),
                         saved=saved)

    def dropout(self, layer: ir.Dropout, index: int, shape: ir.Shape, split: bool, common: dict):
        if layer.channels and len(shape) != 3:
            self.problem(layer.where("channels"), layer, index, f"`channels: true` zeroes whole channels of a "
                         f"C x H x W input, but this dropout's input is {'x'.join(map(str, shape))} features",
                         "move it before the flatten, or drop `channels` to zero single features")
            return None
        mask = (shape[0], "act") if layer.channels else (math.prod(shape), "bool")  # a scale per channel, or a mask
        return LayerInfo(**common, output_shape=shape, split=split, saved=Saved(extra=(mask,)))

    def batchnorm(self, layer: ir.BatchNorm, index: int, shape: ir.Shape, split: bool, common: dict):
        if self.net.towers > 1 and not split:
            self.problem(layer.loc, layer, index, f"batchnorm of an input every one of the {self.net.towers} towers "
                         "holds whole (the image) would give each tower statistics of its own",
                         "normalise after the first conv, whose output the towers split")
            return None
        affine = shape[0] if layer.affine else 0
        return LayerInfo(**common, output_shape=shape, weights=affine, biases=affine, split=split,
                         saved=Saved(input=True))

    def lrn(self, layer: ir.LRN, index: int, shape: ir.Shape, split: bool, common: dict):
        groups = self.tower_groups(layer, index, shape[0], split, layer.groups, crosses=False)
        self.divisible(layer, index, shape[0], None, groups, split)
        return LayerInfo(**common, output_shape=shape, groups=groups, split=split,
                         saved=Saved(input=True, extra=((math.prod(shape), "act"),)))

    def pool(self, layer: ir.Pool, index: int, shape: ir.Shape, split: bool, common: dict):
        channels, height, width = shape
        for axis in range(2):
            if layer.padding[axis] * 2 > layer.kernel[axis]:
                self.problem(layer.where("padding"), layer, index, f"padding {layer.padding[axis]} is more than "
                             f"half the kernel {layer.kernel[axis]}", "PyTorch allows at most kernel // 2")
                return None
        (out_h, out_w), notes = self.window2d(layer, index, (height, width))
        if out_h is None or out_w is None:
            return None
        out_shape = (channels, out_h, out_w)
        extra = ((math.prod(out_shape), "int64"),) if isinstance(layer, ir.MaxPool) else ()
        return LayerInfo(**common, output_shape=out_shape, split=split, rounded=notes,
                         saved=Saved(input=True, extra=extra))

    # --- checks ------------------------------------------------------------------------

    def divisible(self, layer, index: int, channels: int, out: Optional[int], groups: int, split: bool) -> bool:
        towers = self.net.towers
        where = "towers x groups" if split and towers > 1 and groups > 1 else "groups"
        if channels % groups:
            self.problem(layer.where("groups"), layer, index, f"{channels} input channels do not divide into "
                         f"{groups} {where}", f"use channels that are a multiple of {groups}")
            return False
        need = math.lcm(groups, towers)
        if out is not None and out % need:
            self.problem(layer.where("out"), layer, index, f"out {out} does not divide into {need} "
                         f"{'towers' if need == towers and groups < towers else where}",
                         f"use a multiple of {need}, e.g. {out + (-out) % need}")
            return False
        return True

    def window2d(self, layer, index: int, size: Pair) -> tuple[tuple[Optional[int], Optional[int]], tuple[str, ...]]:
        """Output (height, width) of a conv or pool window, and notes on rounded fractions.

        A square case is checked once, so a problem is not reported twice.
        """
        first = index == 0
        kernel = layer.extent if isinstance(layer, ir.Conv) else layer.kernel
        axes = list(zip(("height", "width"), size, kernel, layer.stride, layer.padding))
        if axes[0][1:] == axes[1][1:]:
            out, notes = self.window(layer, index, "height and width", *axes[0][1:], first)
            return (out, out), notes
        (out_h, notes_h), (out_w, notes_w) = (self.window(layer, index, *axis, first) for axis in axes)
        return (out_h, out_w), notes_h + notes_w

    def window(self, layer, index: int, axis: str, size: int, kernel: int, stride: int, pad: int,
               first: bool) -> tuple[Optional[int], tuple[str, ...]]:
        """Output size along one axis, and a note when a fraction was rounded away.

        After a rounding problem the size is still returned (rounded down), so that the
        layers after it are checked too.
        """
        span = size + 2 * pad - kernel
        formula = f"({size}{f' + 2*{pad}' if pad else ''} - {kernel}) / {stride} + 1"
        if span < 0:
            if self.shapes_uncertain:
                return None, ()
            self.problem(layer.where("kernel"), layer, index, f"kernel {kernel} is larger than the "
                         f"{'padded ' if pad else ''}input {axis} {size + 2 * pad}",
                         "use a smaller kernel, more padding, or fewer downsampling layers before it")
            return None, ()
        floor = span // stride + 1  # integer arithmetic: exact for any size
        if span % stride == 0:
            return floor, ()
        shown = _fmt(span, stride)
        rounding = layer.rounding
        if rounding == "exact" and self.shapes_uncertain:
            return floor, ()
        if rounding == "exact":
            self.shapes_uncertain = True
            self.problem(layer.loc, layer, index, f"output {axis} {formula} = {shown} is not an integer",
                         self.fraction_hint(axis, size, kernel, stride, pad, first))
            return floor, ()
        if rounding == "ceil" and isinstance(layer, ir.Conv):
            self.shapes_uncertain = True
            self.problem(layer.where("rounding") if "rounding" in layer.locs else layer.loc, layer, index,
                         f"output {axis} {formula} = {shown} needs rounding, and `ceil` applies to pooling "
                         f"only (PyTorch and Caffe round convolutions down)", "set `rounding: floor` on this layer")
            return floor, ()
        out = floor
        if rounding == "ceil":
            out = floor + 1
            if (out - 1) * stride >= size + pad:  # PyTorch: the last window must start inside the input
                out -= 1
        return out, (f"{axis} {shown} -> {out} ({rounding})",)

    @staticmethod
    def fraction_hint(axis: str, size: int, kernel: int, stride: int, pad: int, first: bool) -> str:
        span = size + 2 * pad - kernel
        better = size + (-span) % stride
        target = (better + 2 * pad - kernel) // stride + 1
        options = [f"use input {axis} {better} (-> {target})" if first
                   else f"an input {axis} of {better} here would divide (-> {target})"]
        exact_pad = next((p for p in range(pad + 1, pad + stride + 1) if (size + 2 * p - kernel) % stride == 0), None)
        if exact_pad is not None:
            options.append(f"padding {exact_pad} (-> {(size + 2 * exact_pad - kernel) // stride + 1})")
        else:
            floor_pad = next((p for p in range(pad, pad + kernel + 1)
                              if (size + 2 * p - kernel) // stride + 1 == target), None)
            if floor_pad is not None and floor_pad != pad:
                options.append(f"padding {floor_pad} with `rounding: floor` (-> {target})")
        options.append(f"`rounding: floor` as PyTorch does (-> {span // stride + 1})")
        return ", or ".join(options)

    def check_expect(self, info: LayerInfo) -> None:
        layer, expect = info.layer, info.layer.expect
        if expect is None:
            return
        checks = [("shape", expect.shape, info.output_shape, list), ("params", expect.params, info.params, _commas),
                  ("macs", expect.macs, info.macs, _commas)]
        for key, wanted, actual, show in checks:
            if wanted is not None and tuple([wanted] if isinstance(wanted, int) else wanted) != \
                    tuple([actual] if isinstance(actual, int) else actual):
                if self.net.input_set:  # written for the input the file gives, not the one --set gave
                    self.unchecked.append(layer.name)
                    return
                self.problem(layer.where(f"expect.{key}"), layer, info.index,
                             f"expect.{key} says {show(wanted)} but inference gives {show(actual)}",
                             "fix the layer, or the expectation if it is the one that is wrong")

    def check_classes(self, last: LayerInfo) -> None:
        classes = self.net.classes
        if classes is not None and last.output_shape != (classes,):
            self.problem(last.layer.loc, last.layer, last.index, f"the network ends with "
                         f"{'x'.join(map(str, last.output_shape))} outputs but `classes` is {classes}",
                         f"make the last layer output {classes} features")


def _commas(value: int) -> str:
    return f"{value:,}"


def _scaled_shape(shapes: list[ir.Shape]) -> Optional[ir.Shape]:
    """The shape a product of `shapes` has: the largest, where each of the others equals it or,
    for C x H x W, is a factor per channel (C x 1 x 1, or C features); None where one is neither."""
    largest = max(shapes, key=lambda shape: (len(shape), math.prod(shape)))
    per_channel = ((largest[0],), (largest[0], 1, 1)) if len(largest) == 3 else ()
    return largest if all(shape == largest or shape in per_channel for shape in shapes) else None
