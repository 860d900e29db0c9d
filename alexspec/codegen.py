"""Code generation: an inferred network -> the source of a readable PyTorch module.

One attribute per layer, a forward() that reads like the spec with each step's inferred
shape as a comment, and `# spec:LINE` comments mapping each layer back to its spec line.
The source imports only torch and alexspec.kernels. A spec cannot inject code: identifiers
come from validated names, passed through a namespace that keeps them legal, unique and clear
of nn.Module's own attributes, and every text from the spec or the command line (the spec's
file name, `follows`, devices) enters the source only as a Python literal made by `literal`,
never as raw text in a docstring or comment. Same spec, same bytes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alexspec import __version__, ir
from alexspec.fusion import FusionPlan, plan
from alexspec.network_info import LayerInfo, NetworkInfo

# nn.Module's attributes and the names the generated class itself uses.
_RESERVED = frozenset("""
T_destination add_module apply bfloat16 buffers call_super_init children compile cpu cuda double dump_patches
eval extra_repr float forward get_buffer get_extra_state get_parameter get_submodule half ipu load_state_dict
modules mtia named_buffers named_children named_modules named_parameters parameters register_backward_hook
register_buffer register_forward_hook register_forward_pre_hook register_full_backward_hook
register_full_backward_pre_hook register_load_state_dict_post_hook register_load_state_dict_pre_hook
register_module register_parameter register_state_dict_post_hook register_state_dict_pre_hook requires_grad_
set_extra_state set_submodule share_memory state_dict to to_empty train training type xpu zero_grad
towers backend backend_reason input_shape spec reset_parameters
""".split())

PAPER = "Krizhevsky, Sutskever & Hinton, ImageNet Classification with Deep Convolutional Neural Networks (NIPS 2012)"


@dataclass(frozen=True)
class Generated:
    """Generated module source and how its names map to the spec."""

    source: str
    class_name: str
    attributes: dict  # spec layer name -> Python attribute name
    line_map: dict    # generated line number -> spec line number
    fusion: FusionPlan  # which layers run together


def class_name(spec_name: str) -> str:
    """alexnet_1gpu -> Alexnet1gpu: a CamelCase class name from a validated spec name."""
    name = "".join(part[:1].upper() + part[1:] for part in spec_name.split("_") if part)
    return name if name.isidentifier() and not name[0].isdigit() else f"Net{name}"


def attribute_names(layers: tuple[ir.Layer, ...]) -> dict[str, str]:
    """Each layer's attribute name: its own name, with a suffix where that would shadow something."""
    taken: set[str] = set()
    result = {}
    for layer in layers:
        name, n = layer.name, 0
        while name in _RESERVED or name in taken:
            n += 1
            name = f"{layer.name}_{n}" if n > 1 or layer.name in taken else f"{layer.name}_"
        taken.add(name)
        result[layer.name] = _identifier(name)
    return result


_NOT_VALUES = frozenset({"x", "self", "torch", "nn", "layers", "towers", "t"})


def value_names(info: NetworkInfo, attrs: dict[str, str]) -> dict[int, str]:
    """The variable that keeps a layer's output (by index; -1: the image) where a layer other than
    the next one reads it; every other output lives in `x` until the next layer replaces it."""
    kept = sorted({source for li in info.layers for source in li.sources if source != li.index - 1})
    names, taken = {}, set(_NOT_VALUES)
    for index in kept:
        base = "image" if index < 0 else attrs[info.layers[index].layer.name]
        name, n = base, 1
        while name in taken:
            n += 1
            name = f"{base}_{n}"
        taken.add(name)
        names[index] = _identifier(name)
    return names


def literal(text: str) -> str:
    """The Python literal of any text: the one way text reaches generated source (repr escapes
    quotes, backslashes, newlines and every unprintable character, so the result always parses
    back to `text`)."""
    if not isinstance(text, str):
        raise TypeError(f"literal() quotes text, not {type(text).__name__}")
    return repr(text)


def _identifier(name: str) -> str:
    """`name` if it is a plain ASCII Python identifier; anything else is a bug upstream."""
    if not (name.isascii() and name.isidentifier()):
        raise AssertionError(f"codegen was given {name!r} as an identifier; validation should have refused it")
    return name


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def _other_activation(layer: ir.Conv | ir.Linear) -> str:
    """The `activation=` argument of a conv or linear layer whose activation is not ReLU (or none)."""
    return f", activation={literal(layer.activation)}" if layer.activation not in ("none", "relu") else ""


class _Writer:
    def __init__(self, info: NetworkInfo, devices: tuple[str, ...] | None, backend: str, fusion: FusionPlan):
        self.info, self.fusion = info, fusion
        self.relu_into = set(fusion.relu_moved.values())
        self.fused_pools = {pool: lrn for lrn, pool in fusion.lrn_pool.items()}
        self.fused_lrns = {lrn: conv for conv, lrn in fusion.conv_lrn.items()}
        self.default_devices = tuple(devices or info.network.placement)
        self.default_backend = backend
        self.net = info.network
        self.towered = self.net.towers > 1
        self.attrs = attribute_names(self.net.layers)
        self.values = value_names(info, self.attrs)
        self.lines: list[str] = []
        self.line_map: dict[int, int] = {}

    def emit(self, text: str = "", spec_line: int | None = None) -> None:
        self.lines.append(text)
        if spec_line is not None:
            self.line_map[len(self.lines)] = spec_line

    def reads(self, li: LayerInfo) -> str:
        if not self.info.is_split(li.sources[0]):
            return "shared"
        return "cross" if getattr(li.layer, "towers", "local") == "cross" else "local"

    def constructor(self, li: LayerInfo) -> str:
        """The expression that builds one layer."""
        layer, towered = li.layer, self.towered
        if isinstance(layer, ir.Conv):
            args = (f"{li.input_shape[0]}, {layer.out}, kernel={layer.kernel}, stride={layer.stride}, "
                    f"padding={layer.padding}" + (f", dilation={layer.dilation}" if layer.dilation != (1, 1) else ""))
            flags = f"bias={layer.bias}, relu={layer.relu and layer.name not in self.fusion.relu_moved}" \
                    + _other_activation(layer)
            if towered:
                return f"t.conv({args}, groups={layer.groups}, {flags}, reads={literal(self.reads(li))})"
            return f"layers.Conv2d({args}, groups={li.groups}, {flags}, backend=backend)"
        if isinstance(layer, ir.Linear):
            args = (f"{li.input_shape[0]}, {layer.out}, bias={layer.bias}, relu={layer.relu}, dropout={layer.dropout!r}"
                    + _other_activation(layer))
            return f"t.linear({args}, reads={literal(self.reads(li))})" if towered else f"layers.Linear({args})"
        if isinstance(layer, ir.LRN):
            args = (f"{layer.size}, alpha={layer.alpha!r}, beta={layer.beta!r}, k={layer.k!r}, "
                    f"convention={literal(layer.convention)}")
            relu = ", relu=True" if layer.name in self.relu_into and layer.name not in self.fusion.lrn_pool else ""
            if towered:
                return f"t.lrn({args}, groups={layer.groups}, reads={literal(self.reads(li))}{relu})"
            return f"layers.LRN({args}, groups={li.groups}, backend=backend{relu})"
        if towered and isinstance(layer, ir.BatchNorm):
            return (f"t.batchnorm({li.input_shape[0]}, eps={layer.eps!r}, momentum={layer.momentum!r}, "
                    f"affine={layer.affine}, image={len(li.input_shape) == 3})")
        if towered and isinstance(layer, ir.Merge):
            return f"t.concat(split={li.split})" if isinstance(layer, ir.Concat) else f"t.{layer.type}()"
        plain = self.plain_layer(li, relu=li.layer.name in self.relu_into)
        if towered and not isinstance(layer, ir.Softmax):
            return f"t.each(lambda: {plain})"
        return plain

    @staticmethod
    def plain_layer(li: LayerInfo, relu: bool = False) -> str:
        layer = li.layer
        if isinstance(layer, ir.MaxPool):
            return (f"layers.MaxPool2d({layer.kernel}, stride={layer.stride}, padding={layer.padding}, "
                    f"ceil_mode={layer.rounding == 'ceil'}{', relu=True' if relu else ''}, backend=backend)")
        if isinstance(layer, ir.AvgPool):
            return (f"nn.AvgPool2d({layer.kernel}, stride={layer.stride}, padding={layer.padding}, "
                    f"ceil_mode={layer.rounding == 'ceil'})")
        if isinstance(layer, ir.AdaptiveAvgPool):
            return f"nn.AdaptiveAvgPool2d({layer.output})"
        if isinstance(layer, ir.AdaptiveMaxPool):
            return f"nn.AdaptiveMaxPool2d({layer.output})"
        if isinstance(layer, ir.GlobalPool):
            return f"layers.GlobalPool({literal(layer.reduce)})"
        if isinstance(layer, ir.BatchNorm):
            kind = "BatchNorm2d" if len(li.input_shape) == 3 else "BatchNorm1d"
            return f"nn.{kind}({li.input_shape[0]}, eps={layer.eps!r}, momentum={layer.momentum!r}, affine={layer.affine})"
        if isinstance(layer, ir.LeakyReLU):
            return f"nn.LeakyReLU({layer.negative_slope!r})"
        if isinstance(layer, ir.Dropout):
            return f"nn.Dropout{'2d' if layer.channels else ''}({layer.p!r})"
        return {"relu": "nn.ReLU()", "flatten": "nn.Flatten()", "softmax": "nn.Softmax(dim=1)", "relu6": "nn.ReLU6()",
                "tanh": "nn.Tanh()", "sigmoid": "nn.Sigmoid()", "gelu": "nn.GELU()", "silu": "nn.SiLU()",
                "hardswish": "nn.Hardswish()", "hardsigmoid": "nn.Hardsigmoid()", "add": "layers.Add()",
                "multiply": "layers.Multiply()", "concat": "layers.Concat()"}[layer.type]

    def shape_comment(self, li: LayerInfo) -> str:
        text = _shape(li.output_shape)
        if self.towered and li.split:
            text += f" ({self.net.towers} towers x {li.output_shape[0] // self.net.towers})"
        if li.macs:
            text += f", {li.macs / 1e6:.1f}M MACs"
        if li.rounded:
            text += f", rounded: {'; '.join(li.rounded)}"
        return text

    def source(self) -> str:
        """The module's whole source: docstring, imports and constants, then the class."""
        self._docstring()
        self._imports_and_constants()
        self.emit()
        self.emit()
        self.emit(f"class {_identifier(class_name(self.net.name))}(nn.Module):")
        self.emit(f'    """{self.net.name}, compiled from SPEC_FILE. backend: "auto", "triton" or "torch"; devices: one '
                  f'per tower, or one."""')
        self.emit()
        self.emit(f"    input_shape = {tuple(self.net.input)}")
        self.emit()
        self._init()
        self.emit()
        self._reset_parameters()
        self.emit()
        self._forward()
        return "\n".join(self.lines) + "\n"

    def _docstring(self) -> None:
        net, info = self.net, self.info
        self.emit(f'"""{_identifier(net.name)}: generated by alexspec {__version__} from the spec SPEC_FILE names; '
                  'edit the spec, not this file.')
        self.emit()
        if net.follows == "alexnet-paper":
            self.emit(f"After {PAPER}.")
        elif net.follows:
            self.emit("What it follows: FOLLOWS.")
        self.emit(f"Input {_shape(net.input)} -> {_shape(info.output_shape)}; {info.total_params:,} parameters; "
                  f"{info.total_macs:,} MACs per image.")
        if self.towered:
            self.emit(f"{net.towers} towers; with one device they collapse into channel groups.")
        if self.fusion.describe():
            self.emit("Run together (alexspec.fusion; compile with --no-fuse to run every layer on its own):")
            for line in self.fusion.describe():
                self.emit(f"    {line}")
        self.emit('"""')

    def _imports_and_constants(self) -> None:
        net = self.net
        spec_file = Path(net.file).name if net.file and not net.file.startswith("<") else net.file
        self.emit("import torch")
        self.emit("from torch import nn")
        self.emit()
        self.emit("from alexspec.kernels import layers" + (", towers" if self.towered else ""))
        self.emit()
        self.emit(f"SPEC_FILE = {literal(spec_file or '')}")
        if net.follows:
            self.emit(f"FOLLOWS = {literal(net.follows)}")

    def _init(self) -> None:
        """__init__: a line per layer, each with its spec line."""
        default_devices = self.default_devices
        devices_text = "(" + ", ".join(map(literal, default_devices)) + ("," if len(default_devices) == 1 else "") + ")"
        self.emit(f'    def __init__(self, backend: str = {literal(self.default_backend)}, devices={devices_text}):')
        self.emit("        super().__init__()")
        self.emit("        devices = layers.resolve_devices(devices)")
        self.emit("        backend, self.backend_reason = layers.resolve_backend(backend, devices)")
        if self.towered:
            self.emit(f"        self.towers = t = towers.Towers({self.net.towers}, devices, backend)")
        for li in self.info.layers:
            note = f"; its ReLU runs in {self.fusion.relu_moved[li.layer.name]}" \
                if li.layer.name in self.fusion.relu_moved else ""
            self.emit(f"        self.{self.attrs[li.layer.name]} = {self.constructor(li)}  # spec:{li.layer.loc.line}"
                      f"{note}", li.layer.loc.line)
        self.emit("        self.reset_parameters()")
        if not self.towered:
            self.emit("        self.to(devices[0])")

    def _reset_parameters(self) -> None:
        self.emit("    def reset_parameters(self) -> None:")
        self.emit('        """The spec\'s initialisation (PyTorch\'s default where the spec gives none)."""')
        inits = [(li, li.layer.init) for li in self.info.layers
                 if isinstance(li.layer, (ir.Conv, ir.Linear)) and (li.layer.init.std is not None
                                                                   or li.layer.init.bias is not None)]
        for li, init in inits:
            self.emit(f"        layers.init_parameters(self.{self.attrs[li.layer.name]}, std={init.std!r}, "
                      f"bias={init.bias!r})", li.layer.loc.line)
        if not inits:
            self.emit("        return")

    def _forward(self) -> None:
        """forward: a line per layer (or per layers run together), each with its output shape."""
        self.emit("    def forward(self, x: torch.Tensor) -> torch.Tensor:")
        one_size = takes_one_size(self.info)
        self.emit(f"        layers.check_input(x, {self.net.name!r}, self.input_shape, one_size={one_size})  "
                  f"# x: batch x {_shape(self.net.input)}")
        if self.towered:
            self.emit("        x = self.towers.scatter(x)")
        if -1 in self.values:  # kept as the towers read it (on a device per tower: a copy on each)
            self.emit(f"        {self.values[-1]} = x")
        gathered = False
        for li in self.info.layers:
            if self.towered and isinstance(li.layer, ir.Softmax) and not gathered:
                self.emit("        x = self.towers.gather(x)")
                gathered = True
            name = li.layer.name
            if name in self.fused_pools or name in self.fused_lrns:
                continue  # ran with the layer before it
            if name in self.fusion.conv_lrn:
                norm = self.info.layers[li.index + 1]
                call = "self.towers.conv_lrn" if self.towered else "layers.conv_lrn"
                self.emit(f"        x = {call}(self.{self.attrs[name]}, self.{self.attrs[norm.layer.name]}, x)  "
                          f"# {name} + {norm.layer.name}, one kernel: {self.shape_comment(norm)}", li.layer.loc.line)
                continue
            if name in self.fusion.lrn_pool:
                pool = self.info.layers[li.index + 1]
                call = "self.towers.lrn_max_pool" if self.towered else "layers.lrn_max_pool"
                relu = ", relu=True" if name in self.relu_into else ""
                self.emit(f"        x = {call}(self.{self.attrs[name]}, self.{self.attrs[pool.layer.name]}, x{relu})  "
                          f"# {name} + {pool.layer.name}, one kernel: {self.shape_comment(pool)}", li.layer.loc.line)
                continue
            args = ", ".join("x" if source == li.index - 1 else self.values[source] for source in li.sources)
            kept = f"{self.values[li.index]} = " if li.index in self.values else ""
            self.emit(f"        x = {kept}self.{self.attrs[name]}({args})  # {self.shape_comment(li)}", li.layer.loc.line)
        if self.towered and not gathered:
            self.emit(f"        return self.towers.gather(x)  # {_shape(self.info.output_shape)}")
        else:
            self.emit("        return x")


def takes_one_size(info: NetworkInfo) -> bool:
    """Whether the network takes only its input's height and width: a linear layer or a batchnorm on
    features reads values whose count follows the image size (no adaptive or global pooling between)."""
    follows = {-1: True}  # whether a layer's output size follows the image's height and width
    for li in info.layers:
        reads = any(follows[source] for source in li.sources)
        per_feature = isinstance(li.layer, ir.Linear) or isinstance(li.layer, ir.BatchNorm) and len(li.input_shape) == 1
        if reads and per_feature:
            return True
        follows[li.index] = reads and not isinstance(li.layer, (ir.AdaptiveAvgPool, ir.AdaptiveMaxPool, ir.GlobalPool,
                                                                 ir.Linear))
    return False


def generate(info: NetworkInfo, devices: tuple[str, ...] | None = None, backend: str = "auto",
             fuse: bool = True, fuse_lrn_pool: bool = False, fuse_conv_lrn: bool = False) -> Generated:
    """The module source for an inferred network; `devices` and `backend` become its defaults
    (devices: the spec's placement unless given). `fuse`: apply `alexspec.fusion`'s plan,
    `fuse_lrn_pool` / `fuse_conv_lrn`: with its opt-in LRN + max-pool / conv + LRN kernels."""
    fusion = plan(info, fuse, fuse_lrn_pool, fuse_conv_lrn)
    writer = _Writer(info, devices, backend, fusion)
    source = writer.source()
    return Generated(source, class_name(info.network.name), writer.attrs, writer.line_map, fusion)
