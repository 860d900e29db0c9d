"""Conv2d with a fused bias + ReLU epilogue: the op, its autograd, and the choice of who computes it.

The Triton implicit GEMM (conv_triton) adds the bias, applies ReLU and stores in the input's
memory format; any stride/padding/groups.
On a GPU each conv shape runs by the Triton kernel or by cuDNN (aten's convolution, then an
in-place ReLU), whichever was faster when first timed (`conv_choice`; ALEXSPEC_CONV forces one).

Backward: the ReLU mask (y > 0) is applied to dy, then, again by whichever was faster when
first timed, either aten.convolution_backward (cuDNN on a GPU) or Triton: the input gradient
of a stride-1 conv is the forward kernel run on dy with the weight flipped and transposed
(cuDNN for other strides), the weight gradient a second implicit GEMM (dy^T times the input
patches, its long sum over N*OH*OW pixels cut into slices that each add their part into the
gradient) that also sums dy into the bias gradient. Where both gradients are asked for and Triton
computes dx, the two mixes are timed too (Triton's dx with cuDNN's dw, and the reverse).
Where the input has a channel count cuDNN's channels-last kernels cannot vectorise (AlexNet's
conv1: 3), cuDNN on the channels zero-padded to 8 is timed too, both ways ("cudnn_c8").
"""
from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Optional

import torch

from alexspec.kernels.ops import conv_cudnn, conv_triton
from alexspec.kernels.ops.conv_triton import conv_output_size
from alexspec.kernels.ops.launch import (as_pair, call, check_same, check_tensor, eager_function, image_layout,
                                         memory_format_of, triton)
from alexspec.kernels.tuning import conv_choice, pretuned

_OP = "alexspec::conv2d_bias_relu"


def _triton_backward(dy, x, weight, has_bias, stride, padding, groups, output_mask):
    """(dx, dw, db) by the Triton kernels (dx by cuDNN for a stride other than 1); None where not asked for."""
    dx = None
    if output_mask[0]:
        if conv_triton.computes_dx(weight.shape, stride, padding):
            dx = conv_triton.input_grad(dy, weight, padding, groups)
        else:
            dx = conv_cudnn.backward(dy, x, weight, False, stride, padding, groups, [True, False, False])[0]
    dw = db = None
    with_db = output_mask[2] and has_bias
    if output_mask[1]:  # db in the same pass over dy
        dw, db = conv_triton.weight_grad(dy, x, weight.shape, stride, padding, groups, bias=with_db)
    elif with_db:
        db = dy.sum(dim=(0, 2, 3))
    return dx, dw, db


def _mixed_backward(dx_by, dw_by):
    """A backward that takes dx from `dx_by` and dw, db from `dw_by` (two of the backwards above)."""
    def backward(dy, x, weight, has_bias, stride, padding, groups, output_mask):
        dx = dx_by(dy, x, weight, False, stride, padding, groups, [output_mask[0], False, False])[0]
        _, dw, db = dw_by(dy, x, weight, has_bias, stride, padding, groups, [False, *output_mask[1:]])
        return dx, dw, db
    return backward


_IMPLEMENTATIONS = {"triton": conv_triton.forward, "cudnn": conv_cudnn.forward}
_BACKWARDS = {"triton": _triton_backward, "cudnn": conv_cudnn.backward}
# named dx+dw: each gradient by whichever computes it faster, where both are asked for
_MIXED_BACKWARDS = {"triton+cudnn": _mixed_backward(_triton_backward, conv_cudnn.backward),
                    "cudnn+triton": _mixed_backward(conv_cudnn.backward, _triton_backward)}


def _forwards(x: torch.Tensor, groups: int) -> dict:
    """The forwards to choose from: Triton, cuDNN, and cuDNN on padded channels where it may help."""
    return {**_IMPLEMENTATIONS, "cudnn_c8": conv_cudnn.padded_forward} if conv_cudnn.pads_channels(x, groups) else _IMPLEMENTATIONS


def _backwards(x: torch.Tensor, weight_shape, stride, padding, groups, output_mask) -> dict:
    """The backwards to choose from: all Triton, all cuDNN; where dx and dw are both asked for
    and the Triton kernels compute dx, each mix of the two; cuDNN on padded channels where it
    may help."""
    backwards = dict(_BACKWARDS)
    if output_mask[0] and output_mask[1] and conv_triton.computes_dx(weight_shape, stride, padding):
        backwards.update(_MIXED_BACKWARDS)
    if conv_cudnn.pads_channels(x, groups):
        backwards["cudnn_c8"] = conv_cudnn.padded_backward
    return backwards


def _can_time(x: torch.Tensor) -> bool:
    """Whether the implementations can be timed now: on a GPU, outside a CUDA graph's recording."""
    return x.is_cuda and not torch.cuda.is_current_stream_capturing()


def _conv_forward(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], stride: list[int],
                 padding: list[int], groups: int, relu: bool) -> torch.Tensor:
    """relu(conv2d(x, weight) + bias), in x's memory format, by the implementation conv_choice picks."""
    args = (x, weight, bias, stride, padding, groups, relu)
    key, describe = _shape_key(x, weight, stride, padding, groups, bias is not None, f"relu {relu}")
    forwards = _forwards(x, groups)
    return forwards[_choose(key, describe, forwards, args, x)](*args)


conv_forward = torch.library.custom_op(f"{_OP}_forward", mutates_args=())(_conv_forward)


def _choose(key, describe, implementations: dict, args: tuple, x: torch.Tensor) -> str:
    """conv_choice.choose for a conv on x; on a GPU the choice is kept for its model, the torch
    and triton versions and this file's code (changed kernels or candidates are timed anew), and
    one shipped for its model (kernels.pretuned) is taken where none was kept."""
    machine = None
    if x.is_cuda:
        machine = lambda: (f"{torch.cuda.get_device_name(x.device)}, torch {torch.__version__}, "  # noqa: E731
                           f"triton {triton.__version__}, conv code {_source_hash()}")
    shipped = lambda: pretuned.conv_implementation(describe(), implementations, pretuned.device_name(x))  # noqa: E731
    return conv_choice.choose(key, describe, implementations, args, lambda: _can_time(x), machine=machine,
                              pretuned=shipped)


_SOURCES = ("conv.py", "conv_triton.py", "conv_cudnn.py")  # every file that computes a conv


@functools.lru_cache(maxsize=None)
def _source_hash() -> str:
    """A short hash of the files that compute a conv (_SOURCES): the kernels and the candidates a
    stored choice was made among."""
    digest = hashlib.sha256()
    for name in _SOURCES:
        digest.update((Path(__file__).parent / name).read_bytes())
    return digest.hexdigest()[:12]


def _shape_key(x, weight, stride, padding, groups, has_bias, what: str):
    """(key, describe) of a conv for conv_choice: what tells a forward (its ReLU) from a backward."""
    layout = "nhwc" if memory_format_of(x) == torch.channels_last else "nchw"
    key = (x.device, x.dtype, layout, tuple(x.shape), tuple(weight.shape), has_bias, tuple(stride),
           tuple(padding), groups, what, conv_triton.precision(x))
    describe = lambda: (f"x {list(x.shape)} {layout} {str(x.dtype).replace('torch.', '')}, weight "
                        f"{list(weight.shape)}, stride {list(stride)}, padding {list(padding)}, groups {groups}, "
                        f"{what}")
    return key, describe


@conv_forward.register_fake
def _(x, weight, bias, stride, padding, groups, relu):
    return conv_triton.empty_output(x, weight, stride, padding)


def _conv_backward(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, y: Optional[torch.Tensor],
                  has_bias: bool, stride: list[int], padding: list[int], groups: int, relu: bool,
                  output_mask: list[bool]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx, dweight, dbias) through the ReLU mask (y: the output, given when relu); entries not
    asked for by output_mask are empty."""
    if relu:  # ReLU's own backward: one pass (a where of y > 0 took two)
        dy = torch.ops.aten.threshold_backward(dy, y, 0)
    dy = dy.contiguous(memory_format=memory_format_of(x))
    args = (dy, x, weight, has_bias, stride, padding, groups, output_mask)
    asked = "backward of " + "".join(name for name, on in zip(("dx ", "dw ", "db"), output_mask) if on).strip()
    key, describe = _shape_key(x, weight, stride, padding, groups, has_bias, asked)
    backwards = _backwards(x, weight.shape, stride, padding, groups, output_mask)
    grads = backwards[_choose(key, describe, backwards, args, x)](*args)
    return tuple(t if t is not None else dy.new_empty(0) for t in grads)


conv_backward = torch.library.custom_op(f"{_OP}_backward", mutates_args=())(_conv_backward)


@conv_backward.register_fake
def _(dy, x, weight, y, has_bias, stride, padding, groups, relu, output_mask):
    return (torch.empty_like(x) if output_mask[0] else dy.new_empty(0),
            torch.empty_like(weight) if output_mask[1] else dy.new_empty(0),
            dy.new_empty(weight.shape[0]) if output_mask[2] and has_bias else dy.new_empty(0))


def _setup_context(ctx, inputs, output):
    x, weight, bias, stride, padding, groups, relu = inputs
    ctx.save_for_backward(x, weight, output if relu else None)  # the output only for the ReLU mask
    ctx.args = (bias is not None, stride, padding, groups, relu)
    ctx.backward_op = conv_backward


def _backward(ctx, grad_y):
    x, weight, y = ctx.saved_tensors
    has_bias = ctx.args[0]
    mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], has_bias and ctx.needs_input_grad[2]]
    dx, dw, db = ctx.backward_op(grad_y, x, weight, y, *ctx.args, mask)
    return (dx if mask[0] else None, dw if mask[1] else None, db if mask[2] else None,
            None, None, None, None)


conv_forward.register_autograd(_backward, setup_context=_setup_context)
_eager_conv = eager_function(_conv_forward, _conv_backward, _setup_context, _backward)


def conv2d_bias_relu(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None, stride=1,
                     padding=0, groups: int = 1, relu: bool = True) -> torch.Tensor:
    """relu(conv2d(x, weight) + bias) (autograd-aware) by the Triton implicit-GEMM kernel.

    x: (N, C, H, W) NCHW or channels-last; weight: (OC, C/groups, KH, KW); bias: (OC,) or None;
    all one dtype (fp32/bf16/fp16; fp64 for checks) on one device. stride, padding: int or (h, w).
    """
    stride, padding = check_conv_arguments(x, weight, bias, stride, padding, groups)
    weight = weight.contiguous()
    return call(conv_forward, _eager_conv, x, weight, bias, list(stride), list(padding), groups, bool(relu))


def check_conv_arguments(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], stride, padding,
                         groups: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """(stride, padding) as (h, w) pairs; ValueError naming what is wrong with a conv's arguments."""
    check_tensor("x", x, ndim=4)
    image_layout("x", x)
    check_tensor("weight", weight, ndim=4)
    check_same("weight", weight, x, "x")
    if bias is not None:
        check_tensor("bias", bias, ndim=1)
        check_same("bias", bias, x, "x")
    stride, padding = as_pair("stride", stride), as_pair("padding", padding)
    if min(stride) < 1 or min(padding) < 0:
        raise ValueError(f"stride must be >= 1 and padding >= 0, got {stride} and {padding}")
    oc, icg, kh, kw = weight.shape
    if not isinstance(groups, int) or groups < 1 or x.shape[1] % groups or oc % groups:
        raise ValueError(f"groups must be a positive int dividing the {x.shape[1]} input and {oc} output "
                         f"channels, got {groups!r}")
    if icg * groups != x.shape[1]:
        raise ValueError(f"weight expects {icg * groups} input channels ({icg} per group x {groups} groups), "
                         f"x has {x.shape[1]}")
    if bias is not None and bias.shape[0] != oc:
        raise ValueError(f"bias has {bias.shape[0]} entries for {oc} output channels")
    sizes = [conv_output_size(s, k, st, p) for s, k, st, p in zip(x.shape[2:], (kh, kw), stride, padding)]
    if min(sizes) < 1:
        raise ValueError(f"x of spatial size {tuple(x.shape[2:])} is too small for kernel {(kh, kw)} "
                         f"with padding {padding} (output {sizes})")
    return stride, padding
