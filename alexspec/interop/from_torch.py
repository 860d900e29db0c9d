"""Specs from torch.nn models built of standard layers (torchvision's AlexNet, VGG, LeNet-style nets).

The model's forward is traced with torch.fx, so the spec follows its real dataflow, not the
order its layers were registered in: a chain, or a graph where the forward branches (a
residual sum becomes `add`, a gate's product `multiply`, torch.cat along channels `concat`, a
layer reading anything but the one before it names its `inputs`). A layer applied twice (shared
weights) is refused, naming the place. An activation right after a conv or linear layer is fused
into it (`activation:`) where nothing else reads the conv's output. A layer this spec language
cannot express is an error naming it; a training-only one that is the identity at inference
(stochastic depth) is left out, and the spec's description says so. As a last guard, the source model and the built
spec run on the same random input, and the import is refused, naming the first layer whose
output differs, unless they agree: the importer never produces a silently different network.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field

from alexspec.errors import BadInput, SpecError, first_line
from alexspec.builder import spec_source
from alexspec.ir import FUSED_ACTIVATIONS
from alexspec.spec import analyse
from alexspec.words import count, listed


class ImportProblem(BadInput):
    """The source model uses something the spec language cannot express."""


@dataclass
class Imported:
    """A spec (as data) and where each spec layer's weights come from in the source."""

    spec: dict
    weight_sources: dict = field(default_factory=dict)  # spec layer name -> source module name
    outputs: dict = field(default_factory=dict, repr=False)  # spec layer name -> the fx node giving its output
    log_softmax: bool = False  # the model returns the log_softmax of the spec's outputs (left out: see spec_from_torch)
    training_only: list[str] = field(default_factory=list)  # training-only layers left out, a sentence a kind

    def convert_state_dict(self, source: dict) -> dict:
        """The source model's state dict with keys renamed for the compiled spec's module."""
        result = {}
        for layer, module in self.weight_sources.items():
            for kind in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
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


def trace(model):
    """The model's forward at inference (eval mode: GoogLeNet's and Inception's auxiliary classifiers
    only train) as a torch.fx graph; ImportProblem where it cannot be traced."""
    import torch.fx

    training = model.training
    model.eval()
    try:
        return torch.fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many kinds for data-dependent Python in forward()
        raise ImportProblem(f"cannot trace the model's forward with torch.fx ({type(exc).__name__}: "
                            f"{first_line(exc, 160)}); "
                            "alexspec imports models whose forward is a fixed sequence of layers") from None
    finally:
        model.train(training)


def _where(node) -> str:
    return f"{node.name} ({node.op} {getattr(node.target, '__name__', node.target)})"


def _functional_layer(node, namer, sizes) -> dict | None:
    """The layer a call_function / call_method node is, where it is one a spec can write; `sizes(value)`
    is `value` with sizes computed from the input's shape resolved (a pool's kernel x.size()[2:])."""
    import torch
    import torch.nn.functional as F

    target, args = node.target, node.args
    if target in (torch.flatten, "flatten") and (args[1:] or [node.kwargs.get("start_dim", 0)])[0] == 1 \
            and node.kwargs.get("end_dim", -1) == -1 and len(args) <= 2:
        return {"name": "flatten", "type": "flatten"}
    if target in ("view", "reshape") and len(args) == 3 and args[2] == -1:
        first = args[1]
        if getattr(first, "op", None) == "call_method" and first.target == "size" and first.args[1:] == (0,):
            return {"name": "flatten", "type": "flatten"}
    if target in ("view", "reshape") and len(args) == 3 and args[1] == -1 and isinstance(args[2], int):
        return {"name": "flatten", "type": "flatten"}  # x.view(-1, 320): a flatten where 320 is C*H*W (checked)
    if target in (torch.relu, torch.relu_, F.relu, "relu", "relu_"):  # in place or not: the same value
        return {"name": namer("relu"), "type": "relu"}
    activations = {torch.tanh: "tanh", F.tanh: "tanh", "tanh": "tanh", torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid",
                   "sigmoid": "sigmoid", F.silu: "silu", F.relu6: "relu6", F.gelu: "gelu", F.hardswish: "hardswish",
                   F.hardsigmoid: "hardsigmoid"}
    if _hashable(target) in activations and (len(args) == 1 or (len(args) == 2 and isinstance(args[1], bool))) \
            and node.kwargs.get("approximate", "none") == "none":
        kind = activations[target]  # F.silu's, F.relu6's and F.hard*'s `inplace` gives the same value
        return {"name": namer(kind), "type": kind}
    if target is F.leaky_relu and len(args) <= 2 and set(node.kwargs) <= {"negative_slope", "inplace"}:
        slope = args[1] if len(args) > 1 else node.kwargs.get("negative_slope", 0.01)
        return {"name": namer("leaky_relu"), "type": "leaky_relu", "negative_slope": slope}
    if target in (F.softmax, torch.softmax, "softmax") and len(args) <= 2 and node.kwargs.get("dtype") is None \
            and set(node.kwargs) <= {"dim", "_stacklevel", "dtype"} \
            and (args[1] if len(args) > 1 else node.kwargs.get("dim")) in (1, -1):
        return {"name": "softmax", "type": "softmax"}
    if target in (F.dropout, F.dropout2d):  # F.dropout(x, p, training=self.training): traced in eval, it is False
        given = {**dict(zip(("p", "training", "inplace"), args[1:])), **node.kwargs}
        if given.get("training", True) is False and isinstance(given.get("p", 0.5), float):
            return {"name": namer("drop"), "type": "dropout", "p": given.get("p", 0.5),
                    **({"channels": True} if target is F.dropout2d else {})}
    if target in (F.max_pool2d, F.avg_pool2d):  # Inception v3's forward pools this way
        return _functional_pool(target, sizes(args[1:]), sizes(node.kwargs), namer)
    if target in (torch.mean, "mean") and len(args) <= 3 and set(node.kwargs) <= {"dim", "keepdim"}:
        dims = args[1] if len(args) > 1 else node.kwargs.get("dim")  # MnasNet's x.mean([2, 3])
        keep = args[2] if len(args) > 2 else node.kwargs.get("keepdim", False)
        if isinstance(dims, (list, tuple)) and sorted(dims) in ([2, 3], [-2, -1]):
            return {"name": namer("adaptive"), "type": "adaptive_avgpool", "output": [1, 1]} if keep else \
                {"name": namer("pool"), "type": "global_avgpool"}
    if target in (F.adaptive_avg_pool2d, F.adaptive_max_pool2d) and not node.kwargs.get("return_indices"):
        size = args[1] if len(args) > 1 else node.kwargs.get("output_size")  # MobileNetV2's and DenseNet's pool
        kind = "adaptive_avgpool" if target is F.adaptive_avg_pool2d else "adaptive_maxpool"
        if isinstance(size, int) or (isinstance(size, (tuple, list)) and all(isinstance(s, int) for s in size)):
            return {"name": namer("adaptive"), "type": kind, "output": _pair(size)}
    return None


def _hashable(target):
    """`target` where it can be a dict key (an fx node's function or method name), else None."""
    try:
        hash(target)
    except TypeError:
        return None
    return target


def _stochastic_depth(node) -> float | None:
    """The drop rate of torchvision's stochastic_depth where `node` calls it in eval mode (the identity,
    as traced: training False), else None."""
    target = node.target
    if node.op != "call_function" or getattr(target, "__name__", "") != "stochastic_depth" \
            or not getattr(target, "__module__", "").startswith("torchvision."):
        return None
    given = {**dict(zip(("input", "p", "mode", "training"), node.args)), **node.kwargs}
    return given["p"] if given.get("training", True) is False and isinstance(given.get("p"), float) else None


def _merge(node) -> dict | None:
    """The merge layer a node is (a sum or product of two values, a concatenation along dimension 1), else None."""
    import torch

    if node.target in (operator.add, torch.add, "add") and len(node.args) == 2 and not node.kwargs \
            and all(hasattr(a, "op") for a in node.args):
        return {"type": "add"}
    if node.target in (operator.mul, torch.mul, "mul") and len(node.args) == 2 and not node.kwargs \
            and all(hasattr(a, "op") for a in node.args):  # squeeze-and-excitation's `scale * x`
        return {"type": "multiply"}
    if node.target in (torch.cat, "cat") and isinstance(node.args[0], (list, tuple)):
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        return {"type": "concat"} if dim == 1 else None
    return None


def _dataflow(graph):
    """(node, the value nodes it reads) for each node of the forward, in order; arithmetic on sizes
    (`x.size(0)` feeding a view, `b, c, h, w = x.size()`, `x.shape[2] // 2`) is left out, so that
    the ops that use it are what an error names. Raises ImportProblem unless the forward takes one
    input and returns one value."""
    inputs = [n for n in graph.nodes if n.op == "placeholder"]
    if len(inputs) != 1:
        raise ImportProblem(f"the model's forward takes {len(inputs)} inputs; alexspec imports models of one image input")
    (output,) = [n for n in graph.nodes if n.op == "output"]
    if not hasattr(output.args[0], "op"):
        raise ImportProblem(f"the forward returns {output.args[0]!r}; alexspec imports models that return one tensor")
    sizes = set()  # x.size(), x.shape, and what is computed from them alone
    for node in graph.nodes:
        if (node.op == "call_method" and node.target == "size") or (
                node.op == "call_function" and node.target is getattr and node.args[1:] == ("shape",)) or (
                node.op == "call_function" and node.all_input_nodes and set(node.all_input_nodes) <= sizes):
            sizes.add(node)
    flow = [(node, [a for a in node.all_input_nodes if a not in sizes]) for node in graph.nodes
            if node.op not in ("placeholder", "output") and node not in sizes]
    return inputs[0], flow, output.args[0]


def spec_from_torch(model, input_shape: tuple[int, int, int], name: str, follows: str = "") -> Imported:
    """A spec computing what `model` computes on (C, H, W) inputs (floor rounding only where needed):
    a chain, or a graph where the forward branches (`inputs`, `add`, `concat`).

    Raises ImportProblem for what a spec cannot express, and where the built spec's outputs
    differ from the model's on the same random input."""
    _not_compiled_by_alexspec(model)
    traced = trace(model)
    _runs_on(model, input_shape)
    image, flow, returned = _dataflow(traced.graph)
    log_softmax = _is_log_softmax(traced, returned)
    if log_softmax:  # the logits are the spec's outputs: training's cross-entropy takes their log_softmax itself
        flow, returned = [(node, reads) for node, reads in flow if node is not returned], returned.all_input_nodes[0]
    builder = _SpecBuilder(traced, image, input_shape)
    for node, reads in flow:
        builder.add(node, reads)
    if builder.unsupported:
        raise ImportProblem(f"cannot express these layers in a spec: {listed(builder.unsupported, 8)}; supported: "
                            "Conv2d, LocalResponseNorm, BatchNorm2d/1d, Linear, Dropout, Dropout2d (or F.dropout(x, "
                            "p, self.training), F.dropout2d), MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, "
                            "AdaptiveMaxPool2d (modules or F. functions), ReLU, Tanh, Sigmoid, GELU, SiLU, ReLU6, "
                            "LeakyReLU, Hardswish, Hardsigmoid (modules or functions), Flatten (or torch.flatten(x, "
                            "1), x.view(-1, N)), Softmax (or F.softmax), a last log_softmax, x.mean([2, 3]), and the "
                            "sum (+), product (*: of one shape, or per-channel factors) or torch.cat(dim=1) of "
                            "branches")
    if not builder.layers or builder.layer_of.get(returned) != builder.layers[-1]["name"]:
        raise ImportProblem(f"the forward returns {returned.name}, not the output of its last layer")
    training_only = builder.training_only()
    left_out = (["Its outputs are logits: the model's last op, log_softmax, is left out (alexspec's cross-entropy "
                 "applies it)."] if log_softmax else []) + training_only
    spec = {"alexspec": 1, "name": name, **({"follows": follows} if follows else {}),
            **({"description": " ".join(left_out)} if left_out else {}),
            "input": {"channels": input_shape[0], "height": input_shape[1], "width": input_shape[2]},
            "layers": builder.layers}
    imported = Imported(_with_rounding(spec), builder.sources, builder.outputs, log_softmax, training_only)
    check_same_function(model, traced, imported, input_shape)
    return imported


def _is_log_softmax(traced, node) -> bool:
    """Whether `node` is a log_softmax over the classes of one value (F.log_softmax(x, dim=1),
    x.log_softmax(1), nn.LogSoftmax(dim=1)): the last op of many classifiers trained with NLL loss."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    if len(node.all_input_nodes) != 1:
        return False
    if node.op == "call_module":
        module = traced.get_submodule(node.target)
        return isinstance(module, nn.LogSoftmax) and module.dim in (1, -1)
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    return node.target in (F.log_softmax, torch.log_softmax, "log_softmax") and dim in (1, -1)


def _not_compiled_by_alexspec(model) -> None:
    """ImportProblem where `model` holds alexspec's own layers: a module `alexspec compile` wrote
    (or alexspec.build made) already has a spec, the one it was compiled from; a model of the
    user's own that uses alexspec.kernels' layers is told which torch.nn layers import."""
    import sys

    ours = sorted({type(m).__name__ for m in model.modules() if type(m).__module__.startswith("alexspec.")})
    if not ours:
        return
    where = type(model).__module__
    spec_file = getattr(sys.modules.get(where), "SPEC_FILE", None)
    if isinstance(spec_file, str) or where.startswith("alexspec_generated"):
        origin = f" ({spec_file})" if isinstance(spec_file, str) else ""
        raise ImportProblem(f"the model was compiled by alexspec (it is made of alexspec's own layers: "
                            f"{', '.join(ours)}); the spec it was compiled from{origin} describes it: edit that "
                            "spec instead of importing the module")
    raise ImportProblem(f"the model uses alexspec.kernels' layers ({', '.join(ours)}), which import does not read; "
                        "write them as torch.nn layers (nn.Conv2d + nn.ReLU, nn.LocalResponseNorm, nn.MaxPool2d, "
                        "nn.Linear), which import as the same spec layers")


def _runs_on(model, input_shape: tuple[int, int, int]) -> None:
    """ImportProblem, with PyTorch's reason, unless `model` runs on a batch of (C, H, W) inputs."""
    import torch

    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(2, *input_shape))
    except Exception as exc:  # the model's own forward refused the shape: say so, and how to give another
        raise ImportProblem(f"the model does not run on {'x'.join(map(str, input_shape))} inputs "
                            f"({first_line(exc, 160)}); "
                            "give its input shape with --input C,H,W") from None
    finally:
        model.train(training)


class _SpecBuilder:
    """The spec's layers, made node by node from a traced forward."""

    def __init__(self, traced, image, input_shape: tuple[int, int, int]):
        self.traced, self.input_shape = traced, input_shape
        self.layers: list[dict] = []
        self.sources: dict = {}   # spec layer name -> source module name (its weights)
        self.outputs: dict = {}   # spec layer name -> the fx node giving its output
        self.layer_of = {image: "input"}  # fx node -> the spec layer whose output it is
        self.is_image = {image: True}
        self.unsupported: list[str] = []
        self.used_modules: set[str] = set()
        self.namer = _Namer()
        self.stochastic_depth: list[float] = []  # each left-out StochasticDepth's p
        self._runs: list | None = None  # see runs()

    def add(self, node, reads: list) -> None:
        from torch import nn

        merge = _merge(node)
        if merge is not None and merge["type"] == "concat" and len(reads) == 1:  # torch.cat([x], 1) is x
            self.alias(node, reads[0])
            return
        if node.op == "get_attr":
            raise ImportProblem(f"the forward uses {node.target}, a tensor of the model's own outside any layer (a "
                                "class token, a position embedding?); a spec's weights are its layers'")
        if merge is None and self.is_passthrough(node):  # per image the same value, or the same factors
            self.alias(node, node.args[0])
            return
        if merge is None and len(reads) != 1:
            raise ImportProblem(f"{_where(node)} reads {', '.join(a.name for a in reads) or 'no value'}; a spec "
                                "layer reads one value, or merges two by a sum (+), a product (*) or "
                                "torch.cat(..., dim=1)")
        if merge is None and (rate := _stochastic_depth(node)) is not None:  # the identity at inference: left out
            self.stochastic_depth.append(rate)
            self.alias(node, reads[0])
            return
        if merge is None and node.op == "call_module" and isinstance(self.traced.get_submodule(node.target),
                                                                      nn.Identity):
            self.alias(node, reads[0])
            return
        layer = {"name": self.namer(merge["type"]), **merge} if merge is not None else self.layer(node)
        if layer is None:  # recorded as unsupported; what reads it goes on, so that every such layer is named
            self.alias(node, reads[0])
            return
        read_layers = [self.layer_of[a] for a in reads]
        previous = self.layers[-1] if self.layers else None
        fusable = layer["type"] in FUSED_ACTIVATIONS and layer.get("negative_slope", 0.01) == 0.01
        if fusable and previous and previous["type"] in ("conv", "linear") and "activation" not in previous \
                and read_layers == [previous["name"]] \
                and len(reads[0].users) == 1:  # fused only where nothing else reads the conv's plain output
            previous["activation"] = layer["type"]
            self.outputs[previous["name"]], self.layer_of[node], self.is_image[node] = node, previous["name"], \
                self.is_image[reads[0]]
            return
        image = any(self.is_image[read] for read in reads)  # a product's factors may be features
        if layer["type"] == "linear" and image and not self.unsupported:  # else an unsupported layer may flatten
            raise ImportProblem(f"{node.target} (Linear) is applied to the 4-D image, not to a flattened one; "
                                "flatten before it (torch.flatten(x, 1))")
        if merge is not None or read_layers != [previous["name"] if previous else "input"]:
            layer["inputs"] = read_layers[0] if len(read_layers) == 1 else read_layers
        taken, name, n = {spec_layer["name"] for spec_layer in self.layers}, layer["name"], 2
        while layer["name"] in taken:  # a second flatten: flatten2
            layer["name"], n = f"{name}{n}", n + 1
        if layer["type"] in ("conv", "linear", "batchnorm"):
            self.sources[layer["name"]] = node.target
        self.layers.append(layer)
        self.outputs[layer["name"]], self.layer_of[node] = node, layer["name"]
        self.is_image[node] = image and layer["type"] not in ("flatten", "global_avgpool", "global_maxpool")

    def alias(self, node, value) -> None:
        """`node` gives what `value` gives: no layer of its own."""
        self.layer_of[node], self.is_image[node] = self.layer_of[value], self.is_image[value]

    def is_passthrough(self, node) -> bool:
        """A view, reshape, expand... a spec needs no layer for: the same shape per image, or per-channel
        factors (C features, C x 1 x 1, or those expanded to C x H x W) that only products read."""
        if not _reshapes(node) or _functional_layer(node, _Namer(), lambda value: value) is not None:
            return False
        return self.reshaped(node) in ("same", "factors")

    def reshaped(self, node) -> str | None:
        """What a view/reshape/expand/... node does to its value per image, as the forward's runs at two
        batches show: "same", "flatten" (C x H x W to features), "factors" (see is_passthrough); else None."""
        before, after = self.image_shape(node.args[0]), self.image_shape(node)
        if before is None or after is None:
            return None
        if before == after:
            return "same"
        if len(before) == 3 and after == (math.prod(before),):
            return "flatten"
        channels = before[0]
        factors = before in ((channels,), (channels, 1, 1)) and len(after) == 3 and after[0] == channels
        return "factors" if factors and all(_merge(user) == {"type": "multiply"} or (
            _reshapes(user) and user.args[0] is node and self.reshaped(user) == "factors") for user in node.users) \
            else None

    def runs(self) -> list[tuple[dict, dict]]:
        """(sizes, tensor shapes) of each node in eval-mode forwards of batches of 1 and 3 (run once)."""
        if self._runs is None:
            self._runs = [_traced_values(self.traced, self.input_shape, batch) for batch in (1, 3)]
        return self._runs

    def image_shape(self, node) -> tuple | None:
        """The shape per image of the tensor `node` gives (the same at both batches), else None."""
        if not hasattr(node, "op"):
            return None
        (_, one), (_, three) = self.runs()
        if node not in one or node not in three or (one[node][:1], three[node][:1]) != ((1,), (3,)) \
                or one[node][1:] != three[node][1:]:
            return None
        return tuple(one[node][1:])

    def resolve_sizes(self, value):
        """`value` (an argument, or a tuple or dict of them) with each node that computes a size from
        the input's shape alone replaced by what it computes; one that depends on the batch stays."""
        import torch.fx

        if isinstance(value, (tuple, list)):
            return type(value)(self.resolve_sizes(v) for v in value)
        if isinstance(value, dict):
            return {key: self.resolve_sizes(v) for key, v in value.items()}
        if not isinstance(value, torch.fx.Node):
            return value
        (one, _), (three, _) = self.runs()
        resolved = one[value] if value in one and three.get(value) == one[value] else value
        return tuple(resolved) if isinstance(resolved, torch.Size) else resolved

    def training_only(self) -> list[str]:
        """A sentence on each kind of training-only layer left out of the spec (it trains without them)."""
        if not self.stochastic_depth:
            return []
        low, high = min(self.stochastic_depth), max(self.stochastic_depth)
        rates = f"p {low:.3g}" if low == high else f"p {low:.3g} to {high:.3g}"
        return [f"Stochastic depth ({count(len(self.stochastic_depth), 'block')}, {rates}) is left out: it is the "
                "identity at inference, and a spec has no such layer, so this spec trains without it."]

    def layer(self, node) -> dict | None:
        """The spec layer of a module call or function node; None (recorded) where there is none."""
        from torch import nn

        if node.op != "call_module":
            layer = _functional_layer(node, self.namer, self.resolve_sizes)
            if layer is None and _reshapes(node) and self.reshaped(node) == "flatten":  # x.view(b, c) after a 1x1 pool
                layer = {"name": "flatten", "type": "flatten"}
            if layer is None:
                self.unsupported.append(_where(node))
            return layer
        module = self.traced.get_submodule(node.target)
        stateful = any(True for _ in module.parameters()) or any(True for _ in module.buffers())
        if node.target in self.used_modules and stateful:  # a ReLU module applied twice is two ReLUs
            raise ImportProblem(f"{node.target} is applied twice in the forward (shared weights); a spec layer "
                                "has weights of its own")
        self.used_modules.add(node.target)
        if isinstance(module, nn.ReLU):
            return {"name": self.namer("relu"), "type": "relu"}
        layer = _layer(module, self.namer)
        if layer is None:
            self.unsupported.append(f"{node.target or '<model>'} ({type(module).__name__})")
            return None
        layer["note"] = f"from {node.target}"
        return layer


def _reshapes(node) -> bool:
    """Whether `node` is a view, reshape, expand, unsqueeze, squeeze, flatten or contiguous of its first argument."""
    import torch

    methods = ("view", "reshape", "expand", "expand_as", "unsqueeze", "squeeze", "flatten", "contiguous")
    return (node.op == "call_method" and node.target in methods) or (
        node.op == "call_function" and node.target in (torch.reshape, torch.unsqueeze, torch.squeeze, torch.flatten))


def _traced_values(traced, input_shape: tuple[int, int, int], batch: int) -> tuple[dict, dict]:
    """(the value of each node of `traced` that is not a tensor: sizes and what is computed from them;
    the shape of each that is), in an eval-mode forward of `batch` zero images of `input_shape`; both
    empty where the forward fails on that batch (its sizes then depend on the batch)."""
    import torch
    import torch.fx

    values: dict = {}
    shapes: dict = {}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, node):
            value = super().run_node(node)
            if isinstance(value, torch.Tensor):
                shapes[node] = tuple(value.shape)
            else:
                values[node] = value
            return value

    modes = {module: module.training for module in traced.modules()}
    traced.eval()
    try:
        with torch.no_grad():
            Recorder(traced).run(torch.zeros(batch, *input_shape))
    except Exception:  # the model's own forward, with sizes that depend on the batch
        return {}, {}
    finally:
        for module, training in modes.items():
            module.train(training)
    return values, shapes


def check_same_function(model, traced, imported: Imported, input_shape: tuple[int, int, int]) -> None:
    """Run the model and the built spec (torch backend, CPU, every layer on its own) on one random
    batch; ImportProblem unless they agree, naming the first spec layer whose output differs from
    the traced model's at that point."""
    import torch
    import torch.fx

    from alexspec.builder import build, load_state

    with torch.random.fork_rng(devices=[]):  # the check leaves the caller's random numbers as they were
        built = build(imported.spec, backend="torch", devices=["cpu"], fuse=False)
    load_state(built.module, imported.convert_state_dict(model.state_dict()))
    built.module.eval()
    source_values: dict = {}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, node):
            source_values[node] = super().run_node(node)
            return source_values[node]

    x = torch.randn(2, *input_shape, generator=torch.Generator().manual_seed(0))
    modes = (model.training, traced.training)
    model.eval(), traced.eval()
    try:
        with torch.no_grad():
            ours = built.module(x)
            if _same(torch.log_softmax(ours, dim=1) if imported.log_softmax else ours, model(x)):
                return
            Recorder(traced).run(x)
            values, previous = {"input": x}, "input"
            for spec_layer in imported.spec["layers"]:
                reads = spec_layer.get("inputs", previous)
                layer = getattr(built.module, built.generated.attributes[spec_layer["name"]])
                value = values[spec_layer["name"]] = layer(*[values[n] for n in ([reads] if isinstance(reads, str)
                                                                                  else reads)])
                previous = spec_layer["name"]
                expected = source_values[imported.outputs[spec_layer["name"]]]
                if not _same(value, expected):
                    raise ImportProblem(f"the imported spec computes something else than the model from layer "
                                        f"{spec_layer['name']} on (output {_describe(value)}, the model's "
                                        f"{_describe(expected)}); this model cannot be imported")
            raise ImportProblem("the imported spec computes something else than the model, though each traced "
                                "layer agrees: the model's forward does more than its traced layers (hooks?)")
    finally:
        model.train(modes[0]), traced.train(modes[1])


def _same(value, expected) -> bool:
    import torch

    if tuple(value.shape) != tuple(expected.shape):
        return False
    scale = float(expected.abs().max()) if expected.numel() else 0.0  # to its own size: logits can be 0.01
    return bool(torch.allclose(value, expected, rtol=1e-4, atol=1e-5 * scale + 1e-30))


def _describe(value) -> str:
    shape = "x".join(map(str, value.shape))
    return f"{shape}, mean {float(value.float().mean()):.4g}" if value.numel() else shape


def _conv_layer(module, namer) -> dict | None:
    """A conv layer for an nn.Conv2d (None for string padding or padding other than zeros)."""
    if isinstance(module.padding, str) or module.padding_mode != "zeros":
        return None
    layer = {"name": namer("conv"), "type": "conv", "out": module.out_channels,
             "kernel": _pair(module.kernel_size), "stride": _pair(module.stride), "padding": _pair(module.padding)}
    if _pair(module.dilation) != 1:
        layer["dilation"] = _pair(module.dilation)
    if module.groups != 1:
        layer["groups"] = module.groups
    if module.bias is None:
        layer["bias"] = False
    return layer


def _functional_pool(function, args, kwargs, namer) -> dict | None:
    """The layer of F.max_pool2d / F.avg_pool2d called with `args` after the input and `kwargs`:
    that of the module taking the same arguments (None where they are not constants)."""
    import torch.fx
    import torch.nn.functional as F
    from torch import nn

    module, names = (nn.MaxPool2d, ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")) \
        if function is F.max_pool2d else \
        (nn.AvgPool2d, ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"))
    given = {**dict(zip(names, args)), **kwargs}
    if len(args) > len(names) or not set(given) <= set(names) or "kernel_size" not in given \
            or any(isinstance(value, torch.fx.Node) for value in given.values()):
        return None
    return _pool_layer(module(**given), namer)


def _pool_layer(module, namer) -> dict | None:
    """A maxpool or avgpool layer (None for what a spec cannot say: dilation, indices, divisors)."""
    from torch import nn

    is_max = isinstance(module, nn.MaxPool2d)
    if is_max and (module.dilation not in (1, (1, 1)) or module.return_indices):
        return None
    if not is_max and (not module.count_include_pad or module.divisor_override):
        return None
    layer = {"name": namer("pool" if is_max else "avgpool"), "type": "maxpool" if is_max else "avgpool",
             "kernel": _pair(module.kernel_size), "stride": _pair(module.stride), "padding": _pair(module.padding)}
    if module.ceil_mode:
        layer["rounding"] = "ceil"
    return layer


def _layer(module, namer) -> dict | None:
    from torch import nn

    if isinstance(module, nn.Conv2d):
        return _conv_layer(module, namer)
    if isinstance(module, nn.Linear):
        return {"name": namer("fc"), "type": "linear", "out": module.out_features,
                **({"bias": False} if module.bias is None else {})}
    if isinstance(module, nn.LocalResponseNorm):
        return {"name": namer("norm"), "type": "lrn", "size": module.size, "alpha": module.alpha, "beta": module.beta,
                "k": module.k, "convention": "torch"}
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        return _pool_layer(module, namer)
    if isinstance(module, nn.AdaptiveAvgPool2d):
        size = module.output_size
        if size is None or (isinstance(size, tuple) and None in size):
            return None
        return {"name": namer("adaptive"), "type": "adaptive_avgpool", "output": _pair(size)}
    if isinstance(module, nn.AdaptiveMaxPool2d):
        size = module.output_size
        if size is None or (isinstance(size, tuple) and None in size) or module.return_indices:
            return None
        return {"name": namer("adaptive"), "type": "adaptive_maxpool", "output": _pair(size)}
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        if not module.track_running_stats or module.momentum is None:
            return None
        return {"name": namer("bn"), "type": "batchnorm", "eps": module.eps, "momentum": module.momentum,
                **({} if module.affine else {"affine": False})}
    if isinstance(module, nn.LeakyReLU):
        return {"name": namer("leaky_relu"), "type": "leaky_relu", "negative_slope": module.negative_slope}
    if isinstance(module, nn.GELU) and module.approximate != "none":
        return None
    for cls, kind in ((nn.Tanh, "tanh"), (nn.Sigmoid, "sigmoid"), (nn.GELU, "gelu"), (nn.SiLU, "silu"),
                      (nn.ReLU6, "relu6"), (nn.Hardswish, "hardswish"), (nn.Hardsigmoid, "hardsigmoid")):
        if type(module) is cls:
            return {"name": namer(kind), "type": kind}
    if isinstance(module, nn.Dropout):
        return {"name": namer("drop"), "type": "dropout", "p": module.p}
    if type(module) is nn.Dropout2d:  # whole channels of the 4-D maps it reads (the spec checks they are maps)
        return {"name": namer("drop"), "type": "dropout", "p": module.p, "channels": True}
    if isinstance(module, nn.Flatten):
        return {"name": "flatten", "type": "flatten"} if module.start_dim == 1 and module.end_dim == -1 else None
    if isinstance(module, nn.Softmax):
        return {"name": "softmax", "type": "softmax"} if module.dim in (1, -1) else None
    return None


def _not_a_spec(error: SpecError) -> ImportProblem:
    """The problems of the spec an import made, by their place in it (its lines are in no file)."""
    said = "; ".join(f"{p.path}: {p.message}" + (f" ({p.hint})" if p.hint else "") for p in error.problems)
    return ImportProblem(f"the network makes no valid spec: {said}")


def _with_rounding(spec: dict) -> dict:
    """`spec` as it is if every size divides; else with `rounding: floor` (what PyTorch did) and a
    description saying where fractions were dropped."""
    try:
        analyse(spec_source(spec))
        return spec
    except SpecError as error:
        fractions = [p for p in error.problems if "is not an integer" in p.message]
        if not fractions or len(fractions) != len(error.problems):
            raise _not_a_spec(error) from None
    floored = {**spec, "rounding": "floor"}
    try:
        info = analyse(spec_source(floored))
    except SpecError as error:
        raise _not_a_spec(error) from None
    notes = [f"{li.layer.name}: {note}" for li in info.layers for note in li.rounded]
    ordered = {k: floored[k] for k in ("alexspec", "name", "follows") if k in floored}
    ordered["description"] = " ".join(filter(None, [spec.get("description"), (
        f"Imported from PyTorch, which rounds output sizes down; this spec does too ({'; '.join(notes)}).")]))
    return {**ordered, **{k: v for k, v in floored.items() if k not in ordered}}
