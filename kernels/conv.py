"""Conv2d with a fused bias + ReLU epilogue in Triton: an implicit GEMM, any stride/padding/groups.

Per group g the output is a GEMM: M = N*OH*OW output pixels, N = OC/groups channels,
K = (IC/groups)*KH*KW taps, with the input patch matrix gathered on the fly (no im2col
buffer) and K ordered (kh, kw, ic) so that channels-last input is read in contiguous runs.
The epilogue adds the bias, applies ReLU and stores in the input's memory format.
On a GPU each conv shape runs by the Triton kernel or by cuDNN (aten's convolution, then an
in-place ReLU), whichever was faster when first timed (`conv_choice`; ALEXSPEC_CONV forces one).

Backward: the ReLU mask (y > 0) is applied to dy, then, again by whichever was faster when
first timed, either aten.convolution_backward (cuDNN on a GPU) or Triton: the input gradient
of a stride-1 conv is the forward kernel run on dy with the weight flipped and transposed
(cuDNN for other strides), the weight gradient a second implicit GEMM (dy^T times the input
patches, its long sum over N*OH*OW pixels cut into slices whose partial sums are added
afterwards), the bias gradient a sum of dy. Where both gradients are asked for and Triton
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

from alexspec.kernels import conv_choice, pretuned
from alexspec.kernels._common import (INTERPRET, as_pair, autotune, call, check_same, check_tensor, eager_function,
                                      image_layout, memory_format_of, tl, triton)

_OP = "alexspec::conv2d_bias_relu"

if triton is not None:
    _CONFIGS = [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=s)
                for bm, bn, bk, w, s in ((64, 32, 32, 4, 2), (128, 64, 32, 4, 3), (128, 128, 32, 8, 3),
                                         (64, 64, 64, 4, 3), (128, 32, 64, 4, 4), (64, 128, 32, 4, 4))]

    @triton.jit
    def _quotient(n, inverse):
        """n // d for 0 <= n < 2**22 from inverse = 1 / d (fp32): a multiply, where an integer
        division by a run-time d costs about twenty instructions (exact: the error of the two
        roundings stays under the 0.5 / d by which (n + 0.5) / d misses an integer)."""
        return ((n.to(tl.float32) + 0.5) * inverse).to(tl.int32)

    @triton.jit
    def _tap_offset(k, ICG, KW: tl.constexpr, sxc, sxh, sxw):
        """Where tap k (ordered kh, kw, ic) of a window lies from the window's first input pixel.
        An integer division, not _quotient: the compiler sees through it that a channels-last
        window's channels are contiguous (ICG a multiple of 16) and loads them as vectors."""
        ic, tap = k % ICG, k // ICG
        return ic * sxc + (tap // KW) * sxh + (tap % KW) * sxw

    @triton.jit
    def _in_window(m_ok, k, K, ICG, top, left, H, W, KW: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr):
        """(pixels, taps) mask of the input values to read: those in the image. Without padding a
        window never leaves the image, so only the pixel and tap counts bound it (no 2-D bounds
        arithmetic in the inner loop)."""
        ok = m_ok[:, None] & (k < K)[None, :]
        if PH > 0:
            kh = (k // ICG) // KW
            ih = top[:, None] + kh[None, :]
            ok &= (ih >= 0) & (ih < H)
        if PW > 0:
            kw = (k // ICG) % KW
            iw = left[:, None] + kw[None, :]
            ok &= (iw >= 0) & (iw < W)
        return ok

    # The epilogue's bias and ReLU are run-time flags, not compile-time ones: a conv, the same conv
    # with its ReLU moved into the next layer and its input gradient (no bias, no ReLU) share one
    # compiled kernel, which saves a cold start a third of the conv compilations. They are passed
    # as ints 0/1: triton 3.6's interpreter takes no bool argument.
    @autotune(_CONFIGS, key=["M", "OCG", "K", "sxc", "KH", "KW"])
    @triton.jit(do_not_specialize=["has_bias", "relu"])
    def _conv_forward_kernel(x_ptr, w_ptr, b_ptr, y_ptr, M, OCG, K, ICG, H, W, OH, OW,
                             sxn, sxc, sxh, sxw, syn, syc, syh, syw, has_bias, relu,
                             KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
                             PH: tl.constexpr, PW: tl.constexpr,
                             FP64: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
                             BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        g = tl.program_id(2)
        m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        oc = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        m_ok, oc_ok = m < M, oc < OCG
        image, pixel = m // (OH * OW), m % (OH * OW)
        oh, ow = pixel // OW, pixel % OW
        top, left = oh * SH - PH, ow * SW - PW  # each window's first input pixel
        windows = x_ptr + image.to(tl.int64) * sxn + (g * ICG).to(tl.int64) * sxc + top * sxh + left * sxw
        w_base = w_ptr + g.to(tl.int64) * K * OCG
        acc_type = tl.float64 if FP64 else tl.float32
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=acc_type)
        for k0 in range(0, K, BLOCK_K):
            k = k0 + tl.arange(0, BLOCK_K)
            a_ok = _in_window(m_ok, k, K, ICG, top, left, H, W, KW, PH, PW)
            a = tl.load(windows[:, None] + _tap_offset(k, ICG, KW, sxc, sxh, sxw)[None, :], mask=a_ok, other=0.0)
            b = tl.load(w_base + k[:, None] * OCG + oc[None, :], mask=(k < K)[:, None] & oc_ok[None, :], other=0.0)
            if UPCAST:  # the interpreter's bf16 tl.dot is wrong (triton 3.8); bf16 -> fp32 is exact
                a, b = a.to(tl.float32), b.to(tl.float32)
            if FP64:
                acc += tl.dot(a, b, out_dtype=tl.float64)
            else:
                acc += tl.dot(a, b, input_precision=PRECISION)
        channel = g * OCG + oc
        if has_bias:
            acc += tl.load(b_ptr + channel, mask=oc_ok, other=0.0).to(acc_type)[None, :]
        if relu:
            acc = tl.maximum(acc, 0.0)
        y_offs = (image.to(tl.int64) * syn + oh * syh + ow * syw)[:, None] + channel[None, :] * syc
        tl.store(y_ptr + y_offs, acc.to(y_ptr.dtype.element_ty), mask=m_ok[:, None] & oc_ok[None, :])

    _WEIGHT_GRAD_CONFIGS = [triton.Config({"BLOCK_OC": bo, "BLOCK_K": bk, "BLOCK_M": bm}, num_warps=w, num_stages=s)
                            for bo, bk, bm, w, s in ((32, 32, 32, 4, 2), (64, 128, 32, 4, 3), (128, 128, 32, 8, 3),
                                                     (128, 64, 64, 4, 3), (64, 64, 64, 4, 4))]

    @autotune(_WEIGHT_GRAD_CONFIGS, key=["M", "OCG", "K", "sxc", "KH", "KW", "SPLIT"])
    @triton.jit
    def _conv_weight_grad_kernel(x_ptr, dy_ptr, part_ptr, M, OCG, K, ICG, H, W, OH, OW, inv_ohw, inv_ow,
                                 sxn, sxc, sxh, sxw, syn, syc, syh, syw, M_PER_SPLIT, SPLIT,
                                 KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
                                 PH: tl.constexpr, PW: tl.constexpr, FP64: tl.constexpr, PRECISION: tl.constexpr,
                                 UPCAST: tl.constexpr, BLOCK_OC: tl.constexpr, BLOCK_K: tl.constexpr,
                                 BLOCK_M: tl.constexpr):
        """One (out channels, taps) tile of group g's weight gradient, summed over one slice of
        the output pixels: sum_m dy[m, oc] * patch[m, (kh, kw, ic)], stored as that slice's part."""
        k_tiles = tl.cdiv(K, BLOCK_K)
        oc = (tl.program_id(0) // k_tiles) * BLOCK_OC + tl.arange(0, BLOCK_OC)
        k = (tl.program_id(0) % k_tiles) * BLOCK_K + tl.arange(0, BLOCK_K)
        g, part = tl.program_id(1) // SPLIT, tl.program_id(1) % SPLIT
        oc_ok, k_ok = oc < OCG, k < K
        # offsets in int32 (x has under 2**31 elements, and dy: _check_weight_grad_takes)
        taps = (g * ICG) * sxc + _tap_offset(k, ICG, KW, sxc, sxh, sxw)
        dy_channel = (g * OCG + oc) * syc
        acc = tl.zeros((BLOCK_OC, BLOCK_K), dtype=tl.float64 if FP64 else tl.float32)
        m_end = tl.minimum((part + 1) * M_PER_SPLIT, M)
        for m0 in range(part * M_PER_SPLIT, m_end, BLOCK_M):
            m = m0 + tl.arange(0, BLOCK_M)
            m_ok = m < m_end
            # m's image and pixel from m0's (one scalar division) and small quotients (< 2**22)
            first_image = m0 // (OH * OW)
            rel = (m0 - first_image * (OH * OW)) + tl.arange(0, BLOCK_M)
            later = _quotient(rel, inv_ohw)
            image, pixel = first_image + later, rel - later * (OH * OW)
            oh = _quotient(pixel, inv_ow)
            ow = pixel - oh * OW
            dy_t = tl.load(dy_ptr + (dy_channel[:, None] + (image * syn + oh * syh + ow * syw)[None, :]),
                           mask=oc_ok[:, None] & m_ok[None, :], other=0.0)
            top, left = oh * SH - PH, ow * SW - PW
            windows = image * sxn + top * sxh + left * sxw
            a = tl.load(x_ptr + (windows[:, None] + taps[None, :]),
                        mask=_in_window(m_ok, k, K, ICG, top, left, H, W, KW, PH, PW), other=0.0)
            if UPCAST:
                dy_t, a = dy_t.to(tl.float32), a.to(tl.float32)
            if FP64:
                acc += tl.dot(dy_t, a, out_dtype=tl.float64)
            else:
                acc += tl.dot(dy_t, a, input_precision=PRECISION)
        parts = part_ptr + (tl.program_id(1) * OCG + oc).to(tl.int64)[:, None] * K + k[None, :]
        tl.store(parts, acc, mask=oc_ok[:, None] & k_ok[None, :])


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """floor((size + 2*padding - kernel) / stride) + 1, as PyTorch."""
    return (size + 2 * padding - kernel) // stride + 1


def _gemm_weight(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """(OC, ICg, KH, KW) -> (groups, KH*KW*ICg, OC/groups): K ordered (kh, kw, ic) as the kernel reads it."""
    oc, icg, kh, kw = weight.shape
    return weight.reshape(groups, oc // groups, icg, kh, kw).permute(0, 3, 4, 2, 1) \
        .reshape(groups, kh * kw * icg, oc // groups).contiguous()


def _precision(x: torch.Tensor) -> str:
    allow_tf32 = x.device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32
    return "tf32" if allow_tf32 else "ieee"


def _empty_output(x: torch.Tensor, weight: torch.Tensor, stride, padding) -> torch.Tensor:
    """Uninitialised conv output in x's memory format (the op and its fake share it)."""
    n, _, h, w = x.shape
    oc, _, kh, kw = weight.shape
    oh, ow = conv_output_size(h, kh, stride[0], padding[0]), conv_output_size(w, kw, stride[1], padding[1])
    return torch.empty((n, oc, oh, ow), device=x.device, dtype=x.dtype, memory_format=memory_format_of(x))


_SMALL = 2 ** 22 - 256  # what _quotient divides exactly, less the widest tile


def _check_weight_grad_takes(dy: torch.Tensor) -> None:
    """ValueError where the weight-gradient kernel cannot take dy: it indexes with 32 bits and
    splits pixel numbers by multiplying (_quotient)."""
    n, oc, oh, ow = dy.shape
    if dy.numel() >= 2 ** 31 or oh * ow >= _SMALL:
        raise ValueError(f"the Triton weight gradient takes outputs under 2**31 elements and output images under "
                         f"{_SMALL:,} pixels, not {list(dy.shape)}: run this conv by cuDNN (ALEXSPEC_CONV=cudnn)")


def _triton_forward(x, weight, bias, stride, padding, groups, relu) -> torch.Tensor:
    n, c, h, w = x.shape
    oc, icg, kh, kw = weight.shape
    y = _empty_output(x, weight, stride, padding)
    oh, ow = y.shape[2:]
    ocg, k = oc // groups, icg * kh * kw
    grid = lambda meta: (triton.cdiv(n * oh * ow, meta["BLOCK_M"]), triton.cdiv(ocg, meta["BLOCK_N"]), groups)
    _conv_forward_kernel[grid](
        x, _gemm_weight(weight, groups), bias if bias is not None else weight, y, n * oh * ow, ocg, k, icg, h, w,
        oh, ow, *x.stride(), *y.stride(), int(bias is not None), int(relu), KH=kh, KW=kw, SH=stride[0], SW=stride[1],
        PH=padding[0], PW=padding[1], FP64=x.dtype == torch.float64, PRECISION=_precision(x),
        UPCAST=INTERPRET and x.dtype == torch.bfloat16)
    return y


def _slices(pixels: int, tiles: int, device: torch.device) -> int:
    """Into how many slices the weight gradient's sum over `pixels` (N*OH*OW) is cut, for `tiles`
    (out channels x taps) tiles of 64 x 64 over all groups: enough programs for about 8 on each
    of the GPU's SMs, each slice at least 2,048 pixels, at most 64 slices. Each slice writes an
    fp32 part of the whole gradient that is added afterwards: more slices than the GPU needs
    only add traffic (AlexNet's conv2 wrote 79 MB of parts a step with 64)."""
    wanted = -(-8 * _multiprocessors(device) // tiles)
    return max(1, min(64, wanted, pixels // 2048))


@functools.lru_cache(maxsize=None)
def _multiprocessors(device: torch.device) -> int:
    """The SM count of a CUDA device; an H100's (132) elsewhere, where it only shapes the slices."""
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 132


def _triton_weight_grad(dy: torch.Tensor, x: torch.Tensor, weight_shape, stride, padding, groups) -> torch.Tensor:
    """dL/dweight by the weight-gradient kernel: fp32 (fp64) partial sums per slice, added here."""
    n, _, h, w = x.shape
    oc, icg, kh, kw = weight_shape
    oh, ow = dy.shape[2:]
    _check_weight_grad_takes(dy)
    ocg, k, pixels = oc // groups, icg * kh * kw, n * oh * ow
    split = _slices(pixels, triton.cdiv(ocg, 64) * triton.cdiv(k, 64) * groups, x.device)
    parts = torch.empty((groups * split, ocg, k), device=x.device,
                        dtype=torch.float64 if x.dtype == torch.float64 else torch.float32)
    grid = lambda meta: (triton.cdiv(ocg, meta["BLOCK_OC"]) * triton.cdiv(k, meta["BLOCK_K"]), groups * split)
    _conv_weight_grad_kernel[grid](
        x, dy, parts, pixels, ocg, k, icg, h, w, oh, ow, 1.0 / (oh * ow), 1.0 / ow, *x.stride(), *dy.stride(),
        triton.cdiv(pixels, split), split,
        KH=kh, KW=kw, SH=stride[0], SW=stride[1], PH=padding[0], PW=padding[1], FP64=x.dtype == torch.float64,
        PRECISION=_precision(x), UPCAST=INTERPRET and x.dtype == torch.bfloat16)
    dw = parts.view(groups, split, ocg, kh, kw, icg).sum(1)  # K ran over (kh, kw, ic)
    return dw.permute(0, 1, 4, 2, 3).to(x.dtype).contiguous().view(oc, icg, kh, kw)


def _triton_input_grad(dy: torch.Tensor, weight: torch.Tensor, padding, groups) -> torch.Tensor:
    """dL/dx of a stride-1 conv: the conv of dy with each group's weight transposed (in <-> out
    channels) and flipped, padded by kernel - 1 - padding; no bias, no ReLU."""
    oc, icg, kh, kw = weight.shape
    flipped = weight.reshape(groups, oc // groups, icg, kh, kw).transpose(1, 2).flip(3, 4) \
        .reshape(groups * icg, oc // groups, kh, kw)
    return _triton_forward(dy, flipped, None, (1, 1), (kh - 1 - padding[0], kw - 1 - padding[1]), groups, False)


def _triton_computes_dx(weight_shape, stride, padding) -> bool:
    """Whether the Triton kernels compute this conv's input gradient (stride 1, padding under the kernel)."""
    kh, kw = weight_shape[2:]
    return list(stride) == [1, 1] and padding[0] < kh and padding[1] < kw


def _triton_backward(dy, x, weight, has_bias, stride, padding, groups, output_mask):
    """(dx, dw, db) by the Triton kernels (dx by cuDNN for a stride other than 1); None where not asked for."""
    dx = None
    if output_mask[0]:
        if _triton_computes_dx(weight.shape, stride, padding):
            dx = _triton_input_grad(dy, weight, padding, groups)
        else:
            dx = _cudnn_backward(dy, x, weight, False, stride, padding, groups, [True, False, False])[0]
    dw = _triton_weight_grad(dy, x, weight.shape, stride, padding, groups) if output_mask[1] else None
    db = dy.sum(dim=(0, 2, 3)) if output_mask[2] and has_bias else None
    return dx, dw, db


def _cudnn_backward(dy, x, weight, has_bias, stride, padding, groups, output_mask):
    """(dx, dw, db) by aten.convolution_backward (cuDNN on CUDA); None where not asked for."""
    return torch.ops.aten.convolution_backward(
        dy, x, weight, [weight.shape[0]] if has_bias else None, stride, padding, [1, 1], False, [0, 0], groups,
        [output_mask[0], output_mask[1], output_mask[2] and has_bias])


def _cudnn_forward(x, weight, bias, stride, padding, groups, relu) -> torch.Tensor:
    """aten's convolution (cuDNN on CUDA; autocast does not recast it), ReLU in place, in x's memory format."""
    y = torch.ops.aten.convolution(x, weight, bias, stride, padding, [1, 1], False, [0, 0], groups)
    if relu:
        y.relu_()
    return y.contiguous(memory_format=memory_format_of(x))


_CHANNEL_MULTIPLE = 8  # cuDNN's fast channels-last kernels read 8 bf16 channels (16 bytes) at a time


def _channels_padded(x: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x and weight with their input channels zero-padded to a multiple of 8 (same memory
    formats): the same conv, one cuDNN runs with its vectorised kernels (AlexNet's conv1 reads 3)."""
    n, c, h, w = x.shape
    padded = -(-c // _CHANNEL_MULTIPLE) * _CHANNEL_MULTIPLE
    xp = torch.empty((n, padded, h, w), dtype=x.dtype, device=x.device, memory_format=memory_format_of(x))
    xp[:, c:] = 0
    xp[:, :c] = x
    wp = torch.empty((weight.shape[0], padded, *weight.shape[2:]), dtype=weight.dtype, device=weight.device,
                     memory_format=memory_format_of(weight))
    wp[:, c:] = 0
    wp[:, :c] = weight
    return xp, wp


def _cudnn_padded_forward(x, weight, bias, stride, padding, groups, relu) -> torch.Tensor:
    """_cudnn_forward on input channels zero-padded to a multiple of 8 (one group only)."""
    xp, wp = _channels_padded(x, weight)
    return _cudnn_forward(xp, wp, bias, stride, padding, groups, relu)


def _cudnn_padded_backward(dy, x, weight, has_bias, stride, padding, groups, output_mask):
    """_cudnn_backward on input channels zero-padded to a multiple of 8 (one group only): the
    padding's gradients are dropped."""
    c = x.shape[1]
    xp, wp = _channels_padded(x, weight)
    dx, dw, db = _cudnn_backward(dy, xp, wp, has_bias, stride, padding, groups, output_mask)
    dx = dx[:, :c].contiguous(memory_format=memory_format_of(x)) if dx is not None else None
    dw = dw[:, :c].contiguous(memory_format=memory_format_of(weight)) if dw is not None else None
    return dx, dw, db


def _pads_channels(x: torch.Tensor, groups: int) -> bool:
    """Whether cuDNN is also timed on channels zero-padded to a multiple of 8: one group, a
    channel count that is not a multiple of 8, channels-last 16-bit input (where cuDNN's fast
    kernels need it)."""
    return (groups == 1 and x.shape[1] % _CHANNEL_MULTIPLE != 0 and x.dtype in (torch.bfloat16, torch.float16)
            and memory_format_of(x) == torch.channels_last)


def _mixed_backward(dx_by, dw_by):
    """A backward that takes dx from `dx_by` and dw, db from `dw_by` (two of the backwards above)."""
    def backward(dy, x, weight, has_bias, stride, padding, groups, output_mask):
        dx = dx_by(dy, x, weight, False, stride, padding, groups, [output_mask[0], False, False])[0]
        _, dw, db = dw_by(dy, x, weight, has_bias, stride, padding, groups, [False, *output_mask[1:]])
        return dx, dw, db
    return backward


_IMPLEMENTATIONS = {"triton": _triton_forward, "cudnn": _cudnn_forward}
_BACKWARDS = {"triton": _triton_backward, "cudnn": _cudnn_backward}
# named dx+dw: each gradient by whichever computes it faster, where both are asked for
_MIXED_BACKWARDS = {"triton+cudnn": _mixed_backward(_triton_backward, _cudnn_backward),
                    "cudnn+triton": _mixed_backward(_cudnn_backward, _triton_backward)}


def _forwards(x: torch.Tensor, groups: int) -> dict:
    """The forwards to choose from: Triton, cuDNN, and cuDNN on padded channels where it may help."""
    return {**_IMPLEMENTATIONS, "cudnn_c8": _cudnn_padded_forward} if _pads_channels(x, groups) else _IMPLEMENTATIONS


def _backwards(x: torch.Tensor, weight_shape, stride, padding, groups, output_mask) -> dict:
    """The backwards to choose from: all Triton, all cuDNN; where dx and dw are both asked for
    and the Triton kernels compute dx, each mix of the two; cuDNN on padded channels where it
    may help."""
    backwards = dict(_BACKWARDS)
    if output_mask[0] and output_mask[1] and _triton_computes_dx(weight_shape, stride, padding):
        backwards.update(_MIXED_BACKWARDS)
    if _pads_channels(x, groups):
        backwards["cudnn_c8"] = _cudnn_padded_backward
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
                           f"triton {triton.__version__}, conv.py {_source_hash()}")
    shipped = lambda: pretuned.conv_implementation(describe(), implementations, pretuned.device_name(x))  # noqa: E731
    return conv_choice.choose(key, describe, implementations, args, lambda: _can_time(x), machine=machine,
                              pretuned=shipped)


@functools.lru_cache(maxsize=None)
def _source_hash() -> str:
    """A short hash of this file: the kernels and the candidates a stored choice was made among."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]


def _shape_key(x, weight, stride, padding, groups, has_bias, what: str):
    """(key, describe) of a conv for conv_choice: what tells a forward (its ReLU) from a backward."""
    layout = "nhwc" if memory_format_of(x) == torch.channels_last else "nchw"
    key = (x.device, x.dtype, layout, tuple(x.shape), tuple(weight.shape), has_bias, tuple(stride),
           tuple(padding), groups, what, _precision(x))
    describe = lambda: (f"x {list(x.shape)} {layout} {str(x.dtype).replace('torch.', '')}, weight "
                        f"{list(weight.shape)}, stride {list(stride)}, padding {list(padding)}, groups {groups}, "
                        f"{what}")
    return key, describe


@conv_forward.register_fake
def _(x, weight, bias, stride, padding, groups, relu):
    return _empty_output(x, weight, stride, padding)


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
    weight = weight.contiguous()
    return call(conv_forward, _eager_conv, x, weight, bias, list(stride), list(padding), groups, bool(relu))
