"""What inference knows of a network: each layer's shapes, parameters, MACs and what it keeps
for backward (LayerInfo), and the network's totals and memory (NetworkInfo). Made by
alexspec.infer; read by the report, codegen, the picture and the trainer."""
from __future__ import annotations

from dataclasses import dataclass
import math

from alexspec import ir

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
_FIXED_BYTES = {"int64": 8, "bool": 1}


@dataclass(frozen=True)
class Saved:
    """What autograd keeps for a layer's backward, as the torch reference backend computes it.

    `input`/`output`: the layer's input or output tensor; `extra`: other tensors, as
    (elements per image, kind) with kind "act" (activation dtype), "int64" or "bool".
    """

    input: bool = False
    output: bool = False
    extra: tuple[tuple[int, str], ...] = ()


@dataclass(frozen=True)
class LayerInfo:
    """One layer with everything inference knows about it (per image unless stated)."""

    layer: ir.Layer
    index: int
    input_shape: ir.Shape
    output_shape: ir.Shape
    weights: int = 0
    biases: int = 0
    macs: int = 0
    groups: int = 1              # groups of the equivalent one-device op (conv, lrn)
    split: bool = False          # output divided among towers
    rounded: tuple[str, ...] = ()  # e.g. "height 55.25 -> 55 (floor)"
    saved: Saved = Saved()
    aliases_input: bool = False  # the output is a view of the input (flatten)
    sources: tuple[int, ...] = ()  # the layers it reads, by index (-1: the image); set by inference

    @property
    def params(self) -> int:
        return self.weights + self.biases

    @property
    def output_elements(self) -> int:
        return math.prod(self.output_shape)


@dataclass(frozen=True)
class Totals:
    """Sums over a set of layers: per tower, per device or overall."""

    label: str
    params: int
    macs: int
    output_elements: int


@dataclass(frozen=True)
class Memory:
    """Memory figures in bytes for a batch at a dtype."""

    batch: int
    dtype: str
    params: int
    outputs: int        # every layer's forward output, all kept at once (an upper bound)
    training_saved: int  # activations autograd keeps for backward (input image included)
    optimizer: str = "SGD with momentum"  # the spec's, in words
    optimizer_states: int = 1             # tensors the optimizer keeps per parameter tensor

    @property
    def training_total(self) -> int:
        """Parameters + their gradients + the optimizer's state + saved activations."""
        return (2 + self.optimizer_states) * self.params + self.training_saved


def optimizer_state(training: ir.Training) -> tuple[str, int]:
    """The recipe's optimizer in words, and how many tensors of a parameter's size it keeps per
    parameter (SGD: a momentum buffer, none without momentum; Adam and AdamW: two moments)."""
    if training.optimizer in ("adam", "adamw"):
        return {"adam": "Adam", "adamw": "AdamW"}[training.optimizer], 2
    return ("SGD with momentum", 1) if training.momentum else ("SGD without momentum", 0)


@dataclass(frozen=True)
class NetworkInfo:
    """The inferred network."""

    network: ir.Network
    layers: tuple[LayerInfo, ...]
    unchecked: tuple[str, ...] = ()  # layers whose `expect`, written for the file's input, --set's input changed

    @property
    def total_params(self) -> int:
        return sum(info.params for info in self.layers)

    @property
    def total_macs(self) -> int:
        return sum(info.macs for info in self.layers)

    def readers(self) -> dict[int, list[int]]:
        """Each output's readers: layer index (-1: the image) -> the indices of the layers that read it."""
        found: dict[int, list[int]] = {}
        for info in self.layers:
            for source in info.sources:
                found.setdefault(source, []).append(info.index)
        return found

    def is_split(self, index: int) -> bool:
        """Whether output `index` (a layer's; -1: the image, which every tower reads whole) is split
        across the towers."""
        return index >= 0 and self.layers[index].split

    @property
    def output_shape(self) -> ir.Shape:
        return self.layers[-1].output_shape

    @property
    def batch_of_one_problem(self) -> str | None:
        """Why the network cannot train on a batch of one image: a batchnorm with one value an image
        for each channel (of features, or of a 1x1 map) has nothing to normalise; None where it can."""
        norm = next((info.layer.name for info in self.layers if info.layer.type == "batchnorm"
                     and math.prod(info.output_shape[1:]) == 1), None)
        return f"{norm} (batchnorm) normalises each feature over a batch's images, which takes 2 or more" if norm \
            else None

    def memory(self, batch: int = 1, dtype: str = "fp32") -> Memory:
        """Memory for `batch` images with activations and parameters in `dtype`."""
        size = DTYPE_BYTES[dtype]
        root = {-1: -1}  # the tensor each layer's output really is (views share their input's storage)
        for info in self.layers:
            root[info.index] = root[info.sources[0]] if info.aliases_input else info.index
        elements = {-1: math.prod(self.network.input)}
        elements.update({info.index: info.output_elements for info in self.layers})
        kept: set[int] = set()  # each tensor once, however many layers keep it (a branch point's output)
        extra = 0
        for info in self.layers:
            if info.saved.input:
                kept.update(root[source] for source in info.sources)
            if info.saved.output:
                kept.add(root[info.index])
            extra += sum(n * _FIXED_BYTES.get(kind, size) for n, kind in info.saved.extra)
        saved = sum(elements[r] for r in kept) * size + extra
        outputs = sum(info.output_elements for info in self.layers) * size
        name, states = optimizer_state(self.network.training or ir.Training())
        return Memory(batch, dtype, self.total_params * size, outputs * batch, saved * batch, name, states)

    def tower_totals(self) -> list[Totals]:
        """Each tower's share: split layers divide evenly, shared ones are held by every tower."""
        towers = self.network.towers
        return [Totals(f"tower {t}",
                       sum(i.params // towers if i.split else i.params for i in self.layers),
                       sum(i.macs // towers if i.split else i.macs for i in self.layers),
                       sum(i.output_elements // towers if i.split else i.output_elements for i in self.layers))
                for t in range(towers)]

    def block_totals(self) -> list[Totals]:
        """Each block use's layers summed, labelled by the use's name (the towers' shares together)."""
        totals = []
        for use in self.network.block_uses:
            span = self.layers[use.first:use.first + use.count]
            totals.append(Totals(use.name, sum(i.params for i in span), sum(i.macs for i in span),
                                 sum(i.output_elements for i in span)))
        return totals

    def device_totals(self) -> list[Totals]:
        """Sums of the tower totals per device of the placement."""
        by_device: dict[str, list[Totals]] = {}
        for t, totals in enumerate(self.tower_totals()):
            by_device.setdefault(self.network.device_of(t), []).append(totals)
        return [Totals(device, sum(t.params for t in ts), sum(t.macs for t in ts),
                       sum(t.output_elements for t in ts)) for device, ts in by_device.items()]
