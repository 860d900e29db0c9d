"""The typed IR: a network is an input shape, tower placement and an ordered tuple of layers.

IR nodes carry meaning only (what a layer computes and with which parameters), never
kernels or shapes: shapes come from `alexspec.infer`, kernels from a backend. Every node
is a frozen dataclass built by `alexspec.spec.validate` from a checked spec, so its
values are already in range and its names are safe Python identifiers. `loc`/`locs`
point back into the spec file for error messages and do not take part in equality.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Mapping, Optional

from alexspec.errors import Loc

Pair = tuple[int, int]
# The activations a conv or linear layer applies to its output by `activation:` (leaky_relu with its
# default slope, 0.01): ReLU runs in the conv kernel's epilogue, the others as torch ops after it.
FUSED_ACTIVATIONS = ("relu", "relu6", "leaky_relu", "tanh", "sigmoid", "gelu", "silu", "hardswish", "hardsigmoid")
Shape = tuple[int, ...]  # (C, H, W) for images, (F,) for features; one image, no batch


@dataclass(frozen=True)
class Init:
    """Weights from N(0, std^2) when std is set (else the framework default); bias constant."""

    std: Optional[float] = None
    bias: Optional[float] = None


@dataclass(frozen=True)
class Expect:
    """What the spec's author asserts a layer produces."""

    shape: Optional[Shape] = None
    params: Optional[int] = None
    macs: Optional[int] = None


@dataclass(frozen=True, kw_only=True)
class Layer:
    """Fields every layer has. `type` is the spec's type name."""

    type: ClassVar[str] = ""
    name: str
    inputs: tuple[str, ...] = ()  # the layers it reads ("input": the image); empty: the layer before it
    expect: Optional[Expect] = None
    loc: Loc = field(default=Loc("<spec>", 1, 1), compare=False, repr=False)
    locs: Mapping[str, Loc] = field(default_factory=dict, compare=False, hash=False, repr=False)

    def where(self, key: str) -> Loc:
        """Location of `key` (e.g. "kernel", "expect.shape") in the spec, else of the layer."""
        return self.locs.get(key, self.loc)


@dataclass(frozen=True, kw_only=True)
class Conv(Layer):
    type: ClassVar[str] = "conv"
    out: int
    kernel: Pair
    stride: Pair = (1, 1)
    padding: Pair = (0, 0)
    dilation: Pair = (1, 1)
    groups: int = 1          # within a tower when towers == "local"
    bias: bool = True
    activation: str = "none"  # "none" or one of FUSED_ACTIVATIONS
    towers: str = "local"    # "local" | "cross"
    rounding: str = "exact"  # "exact" | "floor" | "ceil", already resolved from the spec default
    init: Init = Init()

    @property
    def relu(self) -> bool:
        return self.activation == "relu"

    @property
    def extent(self) -> Pair:
        """The input window one output reads: the kernel, spread by the dilation."""
        return tuple(d * (k - 1) + 1 for k, d in zip(self.kernel, self.dilation))


@dataclass(frozen=True, kw_only=True)
class Linear(Layer):
    type: ClassVar[str] = "linear"
    out: int
    bias: bool = True
    activation: str = "none"
    dropout: float = 0.0
    towers: str = "local"
    init: Init = Init()

    @property
    def relu(self) -> bool:
        return self.activation == "relu"


@dataclass(frozen=True, kw_only=True)
class LRN(Layer):
    type: ClassVar[str] = "lrn"
    size: int
    alpha: float = 1e-4
    beta: float = 0.75
    k: float = 2.0
    convention: str = "paper"  # "paper": k + alpha*sum; "caffe"/"torch": k + alpha/size*sum
    groups: int = 1

    @property
    def alpha_per_term(self) -> float:
        """The factor on each squared activation in the sum, whatever the convention."""
        return self.alpha if self.convention == "paper" else self.alpha / self.size


@dataclass(frozen=True, kw_only=True)
class Pool(Layer):
    kernel: Pair
    stride: Pair
    padding: Pair = (0, 0)
    rounding: str = "exact"


@dataclass(frozen=True, kw_only=True)
class MaxPool(Pool):
    type: ClassVar[str] = "maxpool"


@dataclass(frozen=True, kw_only=True)
class AvgPool(Pool):
    type: ClassVar[str] = "avgpool"


@dataclass(frozen=True, kw_only=True)
class AdaptiveAvgPool(Layer):
    type: ClassVar[str] = "adaptive_avgpool"
    output: Pair


@dataclass(frozen=True, kw_only=True)
class AdaptiveMaxPool(Layer):
    type: ClassVar[str] = "adaptive_maxpool"
    output: Pair


@dataclass(frozen=True, kw_only=True)
class GlobalPool(Layer):
    """The mean (or maximum) of each channel: C x H x W -> C features."""

    type: ClassVar[str] = ""
    reduce: ClassVar[str] = ""


@dataclass(frozen=True, kw_only=True)
class GlobalAvgPool(GlobalPool):
    type: ClassVar[str] = "global_avgpool"
    reduce: ClassVar[str] = "mean"


@dataclass(frozen=True, kw_only=True)
class GlobalMaxPool(GlobalPool):
    type: ClassVar[str] = "global_maxpool"
    reduce: ClassVar[str] = "max"


@dataclass(frozen=True, kw_only=True)
class BatchNorm(Layer):
    """Batch normalisation per channel (C x H x W) or per feature: running statistics with
    `momentum`, `eps` in the variance, a learnt scale and shift when `affine`."""

    type: ClassVar[str] = "batchnorm"
    eps: float = 1e-5
    momentum: float = 0.1
    affine: bool = True


@dataclass(frozen=True, kw_only=True)
class ReLU(Layer):
    type: ClassVar[str] = "relu"


@dataclass(frozen=True, kw_only=True)
class Activation(Layer):
    """An elementwise activation besides ReLU (which has its own type, and fuses into the layers
    around it); `type` names the function."""


@dataclass(frozen=True, kw_only=True)
class ReLU6(Activation):
    type: ClassVar[str] = "relu6"


@dataclass(frozen=True, kw_only=True)
class LeakyReLU(Activation):
    type: ClassVar[str] = "leaky_relu"
    negative_slope: float = 0.01


@dataclass(frozen=True, kw_only=True)
class Tanh(Activation):
    type: ClassVar[str] = "tanh"


@dataclass(frozen=True, kw_only=True)
class Sigmoid(Activation):
    type: ClassVar[str] = "sigmoid"


@dataclass(frozen=True, kw_only=True)
class GELU(Activation):
    type: ClassVar[str] = "gelu"


@dataclass(frozen=True, kw_only=True)
class SiLU(Activation):
    type: ClassVar[str] = "silu"


@dataclass(frozen=True, kw_only=True)
class Hardswish(Activation):
    type: ClassVar[str] = "hardswish"


@dataclass(frozen=True, kw_only=True)
class Hardsigmoid(Activation):
    type: ClassVar[str] = "hardsigmoid"


@dataclass(frozen=True, kw_only=True)
class Merge(Layer):
    """A layer that combines the outputs of several (`inputs`)."""


@dataclass(frozen=True, kw_only=True)
class Add(Merge):
    """The elementwise sum of inputs of one shape (a residual connection)."""

    type: ClassVar[str] = "add"


@dataclass(frozen=True, kw_only=True)
class Multiply(Merge):
    """The elementwise product of inputs of one shape, or of a C x H x W input and per-channel
    factors (C x 1 x 1, or C features) that scale it: squeeze-and-excitation's gate."""

    type: ClassVar[str] = "multiply"


@dataclass(frozen=True, kw_only=True)
class Concat(Merge):
    """The inputs side by side along channels (C x H x W: the same H and W) or features."""

    type: ClassVar[str] = "concat"


IMAGE = "input"  # what `inputs` calls the network's input image


@dataclass(frozen=True, kw_only=True)
class Dropout(Layer):
    type: ClassVar[str] = "dropout"
    p: float
    channels: bool = False  # zero whole channels of a C x H x W input (nn.Dropout2d), not single elements


@dataclass(frozen=True, kw_only=True)
class Flatten(Layer):
    type: ClassVar[str] = "flatten"


@dataclass(frozen=True, kw_only=True)
class Softmax(Layer):
    type: ClassVar[str] = "softmax"


LAYER_CLASSES: dict[str, type[Layer]] = {
    cls.type: cls for cls in (Conv, Linear, LRN, MaxPool, AvgPool, AdaptiveAvgPool, AdaptiveMaxPool, GlobalAvgPool,
                              GlobalMaxPool, BatchNorm, ReLU, ReLU6, LeakyReLU, Tanh, Sigmoid, GELU, SiLU, Hardswish,
                              Hardsigmoid, Add, Multiply, Concat, Dropout, Flatten, Softmax)}


@dataclass(frozen=True)
class Schedule:
    type: str = "constant"   # constant | step | plateau | cosine
    factor: float = 0.1
    every: Optional[int] = None
    patience: int = 5
    times: int = 3
    warmup: int = 0


@dataclass(frozen=True)
class Augmentation:
    resize: Optional[int] = None
    crop: Optional[Pair] = None  # height, width
    flip: bool = False
    lighting: float = 0.0
    mean: Optional[tuple[float, ...]] = None
    std: Optional[tuple[float, ...]] = None


@dataclass(frozen=True)
class Training:
    """The recipe `alexspec train` follows."""

    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    batch: int = 128
    epochs: int = 90
    label_smoothing: float = 0.0
    seed: int = 0
    schedule: Schedule = Schedule()
    lr_mult: Mapping[str, Mapping[str, float]] = field(default_factory=dict, hash=False)
    augmentation: Augmentation = Augmentation()
    eval_crops: int = 1


@dataclass(frozen=True)
class BlockUse:
    """A `type: block` layer of the spec: `repeat` instances of `block`, written out as the layers
    layers[first : first + count]."""

    name: str
    block: str
    repeat: int
    first: int
    count: int


@dataclass(frozen=True)
class Network:
    """A validated network: what to build, before any shape is known."""

    name: str
    input: Shape                 # (C, H, W)
    layers: tuple[Layer, ...]
    towers: int = 1
    placement: tuple[str, ...] = ("auto",)  # one device per tower
    classes: Optional[int] = None
    follows: str = ""
    description: str = ""
    training: Optional[Training] = None
    file: str = field(default="<spec>", compare=False)
    complete: bool = field(default=True, compare=False)  # False: the spec's later layers were unusable
    block_uses: tuple[BlockUse, ...] = field(default=(), compare=False)  # how the spec wrote them: a report's
    input_set: str = field(default="", compare=False)  # the --set arguments that changed the file's input, if any

    def device_of(self, tower: int) -> str:
        """The device tower `tower` runs on."""
        return self.placement[tower]
