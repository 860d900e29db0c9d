"""nn.Module layers whose ops come from a backend: "triton" (the kernels here) or "torch" (reference).

Both backends compute the same function with the same parameters, so a model can be built
with either and a checkpoint moves between them.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from alexspec.kernels.nn.backend import check_backend, resolve_backend, resolve_devices  # noqa: F401 (generated code calls them here)
from alexspec.kernels.ops import reference
from alexspec.kernels.ops.launch import as_pair
from alexspec.kernels.ops.conv import conv2d_bias_relu
from alexspec.kernels.ops.conv_lrn import conv2d_bias_relu_lrn, takes as conv_lrn_takes
from alexspec.kernels.ops.lrn import lrn
from alexspec.kernels.ops.lrn_pool import lrn_max_pool2d
from alexspec.kernels.ops.maxpool import max_pool2d

# The activations besides ReLU that a Conv2d or Linear applies to its output (`activation=`).
ACTIVATIONS = {"none": lambda x: x, "relu6": nn.functional.relu6, "leaky_relu": nn.functional.leaky_relu,
               "tanh": torch.tanh, "sigmoid": torch.sigmoid, "gelu": nn.functional.gelu, "silu": nn.functional.silu,
               "hardswish": nn.functional.hardswish, "hardsigmoid": nn.functional.hardsigmoid}


def check_input(x: torch.Tensor, network: str, shape: tuple[int, int, int], one_size: bool) -> None:
    """ValueError unless `x` is a batch of the images `network` takes: `shape` (channels, height,
    width), any height and width where it is not `one_size` (its layers take any)."""
    channels, height, width = shape
    if torch.jit.is_tracing():  # ONNX's tracer: the shapes it traces with were checked before (alexspec export)
        return
    if x.dim() == 4 and x.shape[1] == channels and (not one_size or tuple(x.shape[2:]) == (height, width)):
        return
    images = f"{channels}x{height}x{width} images" if one_size else f"images of {channels} channels"
    single = " (one image? x[None] makes it a batch of one)" if x.dim() == 3 else ""
    dims = f"{height} x {width}" if one_size else "H x W"
    raise ValueError(f"{network} takes a batch of {images} (N x {channels} x {dims}), got a tensor of shape "
                     f"{'x'.join(map(str, x.shape)) or '() (a number)'}{single}")


def _check_activation(activation: str) -> str:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)} (relu: relu=True), got {activation!r}")
    return activation


class Conv2d(nn.Module):
    """Conv2d with bias and an optional fused ReLU, or another activation after it; PyTorch's default
    initialisation. A dilated conv runs torch's conv on either backend (the kernels take dilation 1)."""

    def __init__(self, in_channels: int, out_channels: int, kernel, stride=1, padding=0, groups: int = 1,
                 bias: bool = True, relu: bool = False, backend: str = "triton", dilation=1,
                 activation: str = "none"):
        super().__init__()
        conv = nn.Conv2d(in_channels, out_channels, as_pair("kernel", kernel), stride, padding, groups=groups,
                         bias=bias)
        self.weight, self.bias = conv.weight, conv.bias
        self.stride, self.padding = as_pair("stride", stride), as_pair("padding", padding)
        self.dilation, self.activation = as_pair("dilation", dilation), _check_activation(activation)
        self.groups, self.relu, self.backend = groups, relu, check_backend(backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ACTIVATIONS[self.activation](self._conv(x))

    def _conv(self, x: torch.Tensor) -> torch.Tensor:
        if self.backend == "torch" or self.dilation != (1, 1):
            return reference.conv2d_bias_relu(x, self.weight, self.bias, self.stride, self.padding, self.groups,
                                              self.relu, self.dilation)
        x, weight, bias = self._operands(x)
        return conv2d_bias_relu(x, weight, bias, self.stride, self.padding, self.groups, self.relu)

    def _operands(self, x: torch.Tensor):
        """x, weight and bias as the kernel takes them: in the autocast dtype where autocast is on,
        as autocast treats aten's conv."""
        weight, bias = self.weight, self.bias
        device = x.device.type
        if torch.is_autocast_enabled(device):
            dtype = torch.get_autocast_dtype(device)
            x, weight = x.to(dtype), weight.to(dtype)
            bias = bias.to(dtype) if bias is not None else None
        return x, weight, bias

    def takes_lrn(self, norm: "LRN") -> bool:
        """Whether `norm` can run in this conv's epilogue (conv_lrn): both on the triton backend,
        a conv + ReLU the kernel takes, and LRN groups it takes (kernels.ops.conv_lrn.takes)."""
        return (self.backend == norm.backend == "triton" and self.relu and self.activation == "none"
                and self.dilation == (1, 1) and not norm.relu
                and conv_lrn_takes(self.weight.shape[0], self.groups, norm.groups))

    def with_lrn(self, norm: "LRN", x: torch.Tensor) -> torch.Tensor:
        """norm(self(x)) in one kernel, the LRN in the conv's epilogue (where takes_lrn)."""
        x, weight, bias = self._operands(x)
        return conv2d_bias_relu_lrn(x, weight, bias, self.stride, self.padding, self.groups, norm.size, norm.alpha,
                                    norm.beta, norm.k, norm.convention, norm.groups)

    def extra_repr(self) -> str:
        oc, icg, kh, kw = self.weight.shape
        dilation = f", dilation={self.dilation}" if self.dilation != (1, 1) else ""
        activation = f", activation={self.activation!r}" if self.activation != "none" else ""
        return (f"{icg * self.groups}, {oc}, kernel={(kh, kw)}, stride={self.stride}, padding={self.padding}"
                f"{dilation}, groups={self.groups}, bias={self.bias is not None}, relu={self.relu}{activation}, "
                f"backend={self.backend!r}")


class LRN(nn.Module):
    """Local response normalisation across channels; `relu=True` normalises relu(x) (see
    `alexspec.kernels.ops.lrn`)."""

    def __init__(self, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0,
                 convention: str = "paper", groups: int = 1, backend: str = "triton", relu: bool = False):
        super().__init__()
        reference.lrn_alpha(alpha, size, convention)  # checks the convention now, not at the first call
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k
        self.convention, self.groups, self.backend, self.relu = convention, groups, check_backend(backend), relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        args = (self.size, self.alpha, self.beta, self.k, self.convention, self.groups)
        if self.backend == "triton":
            return lrn(x, *args, relu=self.relu)
        return reference.lrn(torch.relu(x) if self.relu else x, *args)

    def extra_repr(self) -> str:
        return (f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}, "
                f"convention={self.convention!r}, groups={self.groups}, backend={self.backend!r}"
                + (", relu=True" if self.relu else ""))


class MaxPool2d(nn.Module):
    """Max pooling; `relu=True` pools relu(x) (see `alexspec.kernels.max_pool2d`)."""

    def __init__(self, kernel, stride=None, padding=0, ceil_mode: bool = False, relu: bool = False,
                 backend: str = "triton"):
        super().__init__()
        self.kernel, self.stride, self.padding = kernel, stride if stride is not None else kernel, padding
        self.ceil_mode, self.relu, self.backend = ceil_mode, relu, check_backend(backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        op = max_pool2d if self.backend == "triton" else reference.max_pool2d
        return op(x, self.kernel, self.stride, self.padding, self.ceil_mode, self.relu)

    def extra_repr(self) -> str:
        return (f"kernel={self.kernel}, stride={self.stride}, padding={self.padding}, "
                f"ceil_mode={self.ceil_mode}, relu={self.relu}, backend={self.backend!r}")


class Add(nn.Module):
    """The elementwise sum of its inputs (a residual connection)."""

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        total = xs[0]
        for x in xs[1:]:
            total = total + x
        return total


class Multiply(nn.Module):
    """The elementwise product of its inputs: of one shape, or (N, C, H, W) scaled per channel by
    (N, C, 1, 1) or (N, C) factors (a squeeze-and-excitation gate)."""

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        images = max(x.dim() for x in xs) == 4
        product = None
        for x in xs:
            x = x[:, :, None, None] if images and x.dim() == 2 else x
            product = x if product is None else product * x
        return product


class Concat(nn.Module):
    """Its inputs side by side along dimension 1 (channels, or features)."""

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, dim=1)


class GlobalPool(nn.Module):
    """The mean ("mean") or maximum ("max") of each channel: (N, C, H, W) -> (N, C)."""

    def __init__(self, reduce: str):
        super().__init__()
        if reduce not in ("mean", "max"):
            raise ValueError(f"reduce must be mean or max, got {reduce!r}")
        self.reduce = reduce

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3)) if self.reduce == "mean" else x.amax(dim=(2, 3))

    def extra_repr(self) -> str:
        return repr(self.reduce)


def lrn_max_pool(norm: LRN, pool: MaxPool2d, x: torch.Tensor, relu: bool = False) -> torch.Tensor:
    """pool(norm(relu(x) if relu else x)): one fused kernel each way on the triton backend, the two
    layers' own ops on the torch backend. `pool` must not apply its own ReLU."""
    if pool.relu:
        raise ValueError("lrn_max_pool takes a pool without relu (the ReLU goes before the LRN: relu=True)")
    if norm.backend == "triton":
        return lrn_max_pool2d(x, norm.size, norm.alpha, norm.beta, norm.k, norm.convention, norm.groups,
                              pool.kernel, pool.stride, pool.padding, pool.ceil_mode, relu)
    return pool(norm(torch.relu(x) if relu else x))


def conv_lrn(conv: Conv2d, norm: LRN, x: torch.Tensor) -> torch.Tensor:
    """norm(conv(x)): one kernel where the conv can take the LRN into its epilogue
    (Conv2d.takes_lrn), the two layers' own ops elsewhere (the torch backend included)."""
    return conv.with_lrn(norm, x) if conv.takes_lrn(norm) else norm(conv(x))


class Linear(nn.Linear):
    """nn.Linear with an optional ReLU (or another activation) and dropout on its output (the paper's
    fc6, fc7)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, relu: bool = False,
                 dropout: float = 0.0, activation: str = "none"):
        super().__init__(in_features, out_features, bias=bias)
        self.relu, self.dropout, self.activation = relu, dropout, _check_activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x)
        x = torch.relu(x) if self.relu else ACTIVATIONS[self.activation](x)
        return nn.functional.dropout(x, self.dropout, self.training) if self.dropout else x

    def extra_repr(self) -> str:
        activation = f", activation={self.activation!r}" if self.activation != "none" else ""
        return super().extra_repr() + f", relu={self.relu}{activation}, dropout={self.dropout}"


def init_parameters(module: nn.Module, std: Optional[float] = None, bias: Optional[float] = None) -> None:
    """Weights from N(0, std^2) when std is given, biases set to `bias` when given, in every
    layer of `module` that has them (tower parts included); anything not given keeps PyTorch's default."""
    with torch.no_grad():
        for name, param in module.named_parameters():
            if name.endswith("weight") and std is not None:
                param.normal_(0.0, std)
            elif name.endswith("bias") and bias is not None:
                param.fill_(bias)
