"""Model parallelism by towers, as the paper split AlexNet across two GPUs.

An activation between layers is either one tensor (one device: the towers collapsed into
channel groups) or a list with one tensor per tower, each on its tower's device. `Towers`
builds each layer in the right form:

- `reads="shared"`: the layer reads an input every tower sees whole (the image), and each
  tower computes its share of the output channels;
- `reads="local"`: each tower reads only its own channels (on one device: groups x towers);
- `reads="cross"`: each tower reads every tower's channels (the paper's conv3 and fc6-8):
  the towers' activations are first gathered onto every device.

An add or a concat combines split outputs tower by tower. On one device a split output's
channels are tower 0's then tower 1's, so a concat there interleaves its inputs per tower
([a0 b0 a1 b1], not [a0 a1 b0 b1]): the layout each tower would hold on a device of its own.

Checkpoints always hold the one-device layout: a tower-parallel layer's state_dict
concatenates its towers' weights and per-channel buffers (batchnorm's running statistics)
along the output dimension (tower 0 first), and loading splits them again, so a checkpoint
moves between a one-device and a multi-device build.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from alexspec.errors import BadInput
from alexspec.kernels.nn import layers
from alexspec.kernels.nn.layers import LRN, Conv2d, Linear

READS = ("shared", "local", "cross")


class TowerParallel(nn.Module):
    """One copy of a layer per tower, each on its device; input and output are per-tower lists."""

    def __init__(self, parts: list[nn.Module], devices: list[str], reads: str):
        super().__init__()
        if reads not in READS:
            raise ValueError(f"reads must be one of {', '.join(READS)}, got {reads!r}")
        self.parts = nn.ModuleList(part.to(device) for part, device in zip(parts, devices))
        self.devices, self.reads = list(devices), reads
        self.register_state_dict_post_hook(TowerParallel._merge_towers)
        self.register_load_state_dict_pre_hook(TowerParallel._split_towers)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        return [part(x) for part, x in zip(self.parts, self.inputs(xs))]

    def inputs(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        """What each part reads of the towers' activations `xs`."""
        if self.reads == "cross":  # every tower reads all towers' channels, in tower order
            return [torch.cat([x.to(device) for x in xs], dim=1) for device in self.devices]
        return xs

    def extra_repr(self) -> str:
        return f"reads={self.reads!r}, devices={self.devices}"

    def _state_names(self) -> list[str]:
        """What each part saves: its parameters and its buffers (a batchnorm's statistics)."""
        return list(self.parts[0].state_dict())

    @staticmethod
    def _merge_towers(module, state_dict, prefix, local_metadata):
        for name in module._state_names():
            keys = [f"{prefix}parts.{i}.{name}" for i in range(len(module.parts))]
            values = [state_dict.pop(key).to(module.devices[0]) for key in keys]
            # a 0-dim buffer (batchnorm's count of batches) is the same in every tower
            state_dict[prefix + name] = torch.cat(values, 0) if values[0].dim() else values[0]

    @staticmethod
    def _split_towers(module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                      error_msgs):
        for name in module._state_names():
            if prefix + name in state_dict:
                merged = state_dict.pop(prefix + name)
                chunks = torch.chunk(merged, len(module.parts), dim=0) if merged.dim() else [merged] * len(module.parts)
                for i, chunk in enumerate(chunks):
                    state_dict[f"{prefix}parts.{i}.{name}"] = chunk


class TowerMerge(nn.Module):
    """An add, multiply or concat of per-tower lists: tower i's output combines every input's tower i."""

    def __init__(self, merge: nn.Module):
        super().__init__()
        self.merge = merge

    def forward(self, *inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        return [self.merge(*xs) for xs in zip(*inputs)]


class TowerConcat(nn.Module):
    """A concat of split outputs on one device: each tower's channels of every input, tower by tower."""

    def __init__(self, towers: int):
        super().__init__()
        self.towers = towers

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        batch, rest = xs[0].shape[0], xs[0].shape[2:]
        per_tower = [x.reshape(batch, self.towers, -1, *rest) for x in xs]
        return torch.cat(per_tower, dim=2).reshape(batch, -1, *rest)

    def extra_repr(self) -> str:
        return f"towers={self.towers}"


class Towers(nn.Module):
    """Builds layers for `towers` towers placed on `devices` (one device: collapsed to groups)."""

    def __init__(self, towers: int, devices: list[str] | tuple[str, ...], backend: str = "torch"):
        super().__init__()
        devices = list(devices)
        if len(devices) not in (1, towers):
            raise BadInput(f"{towers} towers need 1 device or {towers}, got {len(devices)}: {devices}")
        self.towers, self.devices, self.backend = towers, devices, backend
        self.parallel = towers > 1 and len(devices) == towers

    def extra_repr(self) -> str:
        return f"towers={self.towers}, devices={self.devices}, parallel={self.parallel}"

    # --- moving activations --------------------------------------------------------------

    def scatter(self, x: torch.Tensor):
        """The input image for every tower (a list when parallel)."""
        return [x.to(device) for device in self.devices] if self.parallel else x

    def gather(self, xs) -> torch.Tensor:
        """The towers' outputs concatenated on the first device (tower 0's channels first)."""
        return torch.cat([x.to(self.devices[0]) for x in xs], dim=1) if self.parallel else xs

    # --- building layers -----------------------------------------------------------------

    def _build(self, make: Callable[[int], nn.Module], reads: str) -> nn.Module:
        """make(towers_sharing_the_layer) -> a layer; per tower when parallel, one layer otherwise."""
        if not self.parallel:
            return make(1).to(self.devices[0])
        return TowerParallel([make(self.towers) for _ in range(self.towers)], self.devices, reads)

    def conv(self, in_channels: int, out_channels: int, kernel, stride=1, padding=0, groups: int = 1,
             bias: bool = True, relu: bool = False, reads: str = "local", dilation=1,
             activation: str = "none") -> nn.Module:
        """A conv whose `out_channels` (all towers) are divided among the towers."""
        def make(parts: int) -> nn.Module:
            local = reads == "local" and self.towers > 1
            inputs = in_channels // parts if local else in_channels
            grouping = groups * (self.towers // parts if local else 1)
            return Conv2d(inputs, out_channels // parts, kernel, stride, padding, grouping, bias, relu, self.backend,
                          dilation, activation)
        return self._build(make, reads)

    def linear(self, in_features: int, out_features: int, bias: bool = True, relu: bool = False,
               dropout: float = 0.0, reads: str = "cross", activation: str = "none") -> nn.Module:
        """A linear layer whose `out_features` are divided among the towers; it reads all features."""
        return self._build(lambda parts: Linear(in_features, out_features // parts, bias, relu, dropout, activation),
                           reads)

    def lrn(self, size: int, alpha: float, beta: float, k: float, convention: str, groups: int = 1,
            reads: str = "local", relu: bool = False) -> nn.Module:
        """LRN within each tower's channels (and `groups` within a tower), of relu(x) with `relu`."""
        def make(parts: int) -> nn.Module:
            grouping = groups * (self.towers // parts if reads == "local" else 1)
            return LRN(size, alpha, beta, k, convention, grouping, self.backend, relu)
        return self._build(make, reads)

    def batchnorm(self, channels: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True,
                  image: bool = True) -> nn.Module:
        """A batchnorm of a split output (`channels`: all towers'), each tower normalising its own."""
        kind = nn.BatchNorm2d if image else nn.BatchNorm1d
        return self._build(lambda parts: kind(channels // parts, eps=eps, momentum=momentum, affine=affine), "local")

    def add(self) -> nn.Module:
        """The sum of outputs of one kind (split or shared), tower by tower."""
        return TowerMerge(layers.Add()) if self.parallel else layers.Add()

    def multiply(self) -> nn.Module:
        """The product of outputs of one kind (split or shared), tower by tower: each tower's channels
        scaled by its own channels' factors."""
        return TowerMerge(layers.Multiply()) if self.parallel else layers.Multiply()

    def concat(self, split: bool = True) -> nn.Module:
        """Outputs side by side, tower by tower: split ones interleaved per tower on one device."""
        if self.parallel:
            return TowerMerge(layers.Concat())
        return TowerConcat(self.towers) if split else layers.Concat()

    def each(self, make: Callable[[], nn.Module]) -> nn.Module:
        """A parameter-free layer (pooling, ReLU, dropout, flatten) applied in every tower."""
        return self._build(lambda parts: make(), "local")

    def conv_lrn(self, conv: nn.Module, norm: nn.Module, x):
        """`layers.conv_lrn` of layers this builder made, in every tower."""
        if not self.parallel:
            return layers.conv_lrn(conv, norm, x)
        return [layers.conv_lrn(c, n, xi) for c, n, xi in zip(conv.parts, norm.parts, conv.inputs(x))]

    def lrn_max_pool(self, norm: nn.Module, pool: nn.Module, x, relu: bool = False):
        """`layers.lrn_max_pool` of layers this builder made, in every tower."""
        if not self.parallel:
            return layers.lrn_max_pool(norm, pool, x, relu)
        return [layers.lrn_max_pool(n, p, xi, relu) for n, p, xi in zip(norm.parts, pool.parts, x)]
