"""A plain torch.nn build of an inferred network, written for the tests as an independent oracle.

It uses only stock torch layers (the one-device form: towers become groups), so its
parameter counts and output shapes are what PyTorch itself says.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from alexspec import ir
from alexspec.network_info import LayerInfo, NetworkInfo


class GroupedLRN(nn.Module):
    def __init__(self, layer: ir.LRN, groups: int):
        super().__init__()
        # torch divides alpha by size; the paper does not
        alpha = layer.alpha * layer.size if layer.convention == "paper" else layer.alpha
        self.lrn, self.groups = nn.LocalResponseNorm(layer.size, alpha, layer.beta, layer.k), groups

    def forward(self, x):
        n, c, h, w = x.shape
        return self.lrn(x.reshape(n * self.groups, c // self.groups, h, w)).reshape(n, c, h, w)


def activation_module(kind: str, negative_slope: float = 0.01) -> nn.Module:
    return {"relu6": nn.ReLU6(), "tanh": nn.Tanh(), "sigmoid": nn.Sigmoid(), "gelu": nn.GELU(), "silu": nn.SiLU(),
            "hardswish": nn.Hardswish(), "hardsigmoid": nn.Hardsigmoid(),
            "leaky_relu": nn.LeakyReLU(negative_slope)}[kind]


def layer_module(info: LayerInfo) -> nn.Module:
    layer = info.layer
    parts: list[nn.Module] = []
    if isinstance(layer, ir.Conv):
        parts.append(nn.Conv2d(info.input_shape[0], layer.out, layer.kernel, layer.stride, layer.padding,
                               layer.dilation, groups=info.groups, bias=layer.bias))
    elif isinstance(layer, ir.Linear):
        parts.append(nn.Linear(info.input_shape[0], layer.out, bias=layer.bias))
    elif isinstance(layer, ir.LRN):
        parts.append(GroupedLRN(layer, info.groups))
    elif isinstance(layer, ir.MaxPool):
        parts.append(nn.MaxPool2d(layer.kernel, layer.stride, layer.padding, ceil_mode=layer.rounding == "ceil"))
    elif isinstance(layer, ir.AvgPool):
        parts.append(nn.AvgPool2d(layer.kernel, layer.stride, layer.padding, ceil_mode=layer.rounding == "ceil"))
    elif isinstance(layer, ir.AdaptiveAvgPool):
        parts.append(nn.AdaptiveAvgPool2d(layer.output))
    elif isinstance(layer, ir.AdaptiveMaxPool):
        parts.append(nn.AdaptiveMaxPool2d(layer.output))
    elif isinstance(layer, (ir.GlobalAvgPool, ir.GlobalMaxPool)):
        pool = nn.AdaptiveAvgPool2d(1) if isinstance(layer, ir.GlobalAvgPool) else nn.AdaptiveMaxPool2d(1)
        parts += [pool, nn.Flatten()]
    elif isinstance(layer, ir.BatchNorm):
        norm = nn.BatchNorm2d if len(info.input_shape) == 3 else nn.BatchNorm1d
        parts.append(norm(info.input_shape[0], eps=layer.eps, momentum=layer.momentum, affine=layer.affine))
    elif isinstance(layer, ir.Activation):
        parts.append(activation_module(layer.type, getattr(layer, "negative_slope", 0.01)))
    elif isinstance(layer, ir.Flatten):
        parts.append(nn.Flatten())
    elif isinstance(layer, ir.Dropout):
        parts.append(nn.Dropout2d(layer.p) if layer.channels else nn.Dropout(layer.p))
    elif isinstance(layer, ir.Softmax):
        parts.append(nn.Softmax(dim=1))
    if isinstance(layer, ir.ReLU) or getattr(layer, "relu", False):
        parts.append(nn.ReLU())
    elif getattr(layer, "activation", "none") != "none":
        parts.append(activation_module(layer.activation))
    if getattr(layer, "dropout", 0):
        parts.append(nn.Dropout(layer.dropout))
    return nn.Sequential(*parts)


def torch_shapes_and_params(info: NetworkInfo, batch: int = 2):
    """[(output shape per image, parameter count)] for every layer, as torch computes them; a
    layer reads the one before it, or the layers its spec's `inputs` name (`input`: the image)."""
    values = {"input": torch.randn(batch, *info.network.input)}
    previous, result = "input", []
    with torch.no_grad():
        for li in info.layers:
            read = [values[name] for name in li.layer.inputs] or [values[previous]]
            if isinstance(li.layer, ir.Add):
                y, params = sum(read[1:], read[0]), 0
            elif isinstance(li.layer, ir.Multiply):  # per-channel factors broadcast as (N, C, 1, 1)
                rank = max(r.dim() for r in read)
                factors = [r.reshape(*r.shape, *[1] * (rank - r.dim())) for r in read]
                y, params = math.prod(factors[1:], start=factors[0]), 0
            elif isinstance(li.layer, ir.Concat):
                y, params = torch.cat(read, dim=1), 0
            else:
                module = layer_module(li)
                y, params = module(read[0]), sum(p.numel() for p in module.parameters())
            values[li.layer.name] = y
            previous = li.layer.name
            result.append((tuple(y.shape[1:]), params))
    return result
