"""A conv by aten's convolution (cuDNN on a GPU), forward and backward, in the call form of the
Triton implementations (kernels.ops.conv_triton), and the same on input channels zero-padded to a
multiple of 8, where cuDNN's channels-last kernels cannot vectorise the channel count (AlexNet's
conv1 reads 3)."""
from __future__ import annotations

import torch

from alexspec.kernels.ops.launch import memory_format_of

def backward(dy, x, weight, has_bias, stride, padding, groups, output_mask):
    """(dx, dw, db) by aten.convolution_backward (cuDNN on CUDA); None where not asked for."""
    return torch.ops.aten.convolution_backward(
        dy, x, weight, [weight.shape[0]] if has_bias else None, stride, padding, [1, 1], False, [0, 0], groups,
        [output_mask[0], output_mask[1], output_mask[2] and has_bias])


def forward(x, weight, bias, stride, padding, groups, relu) -> torch.Tensor:
    """aten's convolution (cuDNN on CUDA; autocast does not recast it), ReLU in place, in x's memory format."""
    y = torch.ops.aten.convolution(x, weight, bias, stride, padding, [1, 1], False, [0, 0], groups)
    if relu:
        y.relu_()
    return y.contiguous(memory_format=memory_format_of(x))


CHANNEL_MULTIPLE = 8  # cuDNN's fast channels-last kernels read 8 bf16 channels (16 bytes) at a time


def channels_padded(x: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x and weight with their input channels zero-padded to a multiple of 8 (same memory
    formats): the same conv, one cuDNN runs with its vectorised kernels (AlexNet's conv1 reads 3)."""
    n, c, h, w = x.shape
    padded = -(-c // CHANNEL_MULTIPLE) * CHANNEL_MULTIPLE
    xp = torch.empty((n, padded, h, w), dtype=x.dtype, device=x.device, memory_format=memory_format_of(x))
    xp[:, c:] = 0
    xp[:, :c] = x
    wp = torch.empty((weight.shape[0], padded, *weight.shape[2:]), dtype=weight.dtype, device=weight.device,
                     memory_format=memory_format_of(weight))
    wp[:, c:] = 0
    wp[:, :c] = weight
    return xp, wp


def padded_forward(x, weight, bias, stride, padding, groups, relu) -> torch.Tensor:
    """forward on input channels zero-padded to a multiple of 8 (one group only)."""
    xp, wp = channels_padded(x, weight)
    return forward(xp, wp, bias, stride, padding, groups, relu)


def padded_backward(dy, x, weight, has_bias, stride, padding, groups, output_mask):
    """backward on input channels zero-padded to a multiple of 8 (one group only): the
    padding's gradients are dropped."""
    c = x.shape[1]
    xp, wp = channels_padded(x, weight)
    dx, dw, db = backward(dy, xp, wp, has_bias, stride, padding, groups, output_mask)
    dx = dx[:, :c].contiguous(memory_format=memory_format_of(x)) if dx is not None else None
    dw = dw[:, :c].contiguous(memory_format=memory_format_of(weight)) if dw is not None else None
    return dx, dw, db


def pads_channels(x: torch.Tensor, groups: int) -> bool:
    """Whether cuDNN is also timed on channels zero-padded to a multiple of 8: one group, a
    channel count that is not a multiple of 8, channels-last 16-bit input (where cuDNN's fast
    kernels need it)."""
    return (groups == 1 and x.shape[1] % CHANNEL_MULTIPLE != 0 and x.dtype in (torch.bfloat16, torch.float16)
            and memory_format_of(x) == torch.channels_last)
