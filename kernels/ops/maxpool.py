"""Max pooling in Triton (any kernel/stride/padding; AlexNet's overlapping 3/2 first).

Forward keeps the running max over the window taps in order and saves a compact argmax:
the tap's offset in the window (kh * KW + kw) as int8 (int16/int32 for windows over 127
taps). Ties and NaNs resolve as torch does: the first maximum wins, a NaN always wins.
Backward is a gather, no atomics: each input pixel visits the few windows that cover it
and adds the gradient of those whose argmax is itself. `relu=True` computes
max_pool(relu(x)) = relu(max_pool(x)) and folds ReLU's backward mask (y > 0) into the gather.
"""
from __future__ import annotations

from typing import Optional

import torch

from alexspec.kernels.ops.launch import as_pair, call, check_tensor, eager_function, image_block_grid, image_layout, memory_format_of, needs_grad, strides4, tl, triton
from alexspec.kernels.tuning.autotune import autotune

_OP = "alexspec::max_pool2d"

if triton is not None:
    POOL_CONFIGS = [triton.Config({"BLOCK_C": bc, "BLOCK_P": bp}, num_warps=w)  # tiles of (channels, pixels)
                    for bc, bp, w in ((16, 64, 4), (32, 32, 4), (8, 128, 4), (64, 16, 4), (32, 64, 8))]

    @triton.jit
    def tile(C, P, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
        """This program's image, channels, pixels (of P) and the in-bounds mask."""
        c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        p = tl.program_id(2) * BLOCK_P + tl.arange(0, BLOCK_P)
        return tl.program_id(0).to(tl.int64), c, p, (c < C)[:, None] & (p < P)[None, :]

    # relu is a run-time flag (as the conv's): a pool with a ReLU moved into it (AlexNet's pool5)
    # and one without (pool1, pool2) share their compiled kernels
    @autotune(POOL_CONFIGS, key=["C", "OH", "OW", "sxc", "KH", "KW", "SH", "SW"])
    @triton.jit(do_not_specialize=["relu"])
    def _max_pool_forward_kernel(x_ptr, y_ptr, idx_ptr, C, H, W, OH, OW, sxn, sxc, sxh, sxw, syn, syc, syh, syw, relu,
                                 KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
                                 PH: tl.constexpr, PW: tl.constexpr, FP64: tl.constexpr,
                                 SAVE: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
        n, c, p, out_ok = tile(C, OH * OW, BLOCK_C, BLOCK_P)
        oh, ow = p // OW, p % OW
        value_type = tl.float64 if FP64 else tl.float32  # exact for every input dtype
        best = tl.full((BLOCK_C, BLOCK_P), float("-inf"), value_type)
        arg = tl.zeros((BLOCK_C, BLOCK_P), tl.int32)
        seen = tl.zeros((BLOCK_C, BLOCK_P), tl.int1)
        x_base = x_ptr + n * sxn + c[:, None] * sxc
        for kh in tl.static_range(KH):
            ih = oh * SH - PH + kh
            for kw in tl.static_range(KW):
                iw = ow * SW - PW + kw
                ok = out_ok & ((ih >= 0) & (ih < H) & (iw >= 0) & (iw < W))[None, :]
                v = tl.load(x_base + (ih * sxh + iw * sxw)[None, :], mask=ok, other=float("-inf")).to(value_type)
                take = ok & ((v > best) | (v != v) | (seen == 0))
                best = tl.where(take, v, best)
                arg = tl.where(take, kh * KW + kw, arg)
                seen = seen | ok
        if relu:
            best = tl.where((best > 0) | (best != best), best, tl.zeros_like(best))
        y_offs = n * syn + c[:, None] * syc + (oh * syh + ow * syw)[None, :]
        tl.store(y_ptr + y_offs, best.to(y_ptr.dtype.element_ty), mask=out_ok)
        if SAVE:
            tl.store(idx_ptr + y_offs, arg.to(idx_ptr.dtype.element_ty), mask=out_ok)

    @triton.jit
    def gathered_grad(dy_ptr, idx_ptr, y_ptr, y_chan, ih, iw, rows_ok, OH, OW, syh, syw, KH: tl.constexpr,
                      KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr,
                      relu, acc_type: tl.constexpr):
        """The gradient reaching input pixels (ih, iw) of the channels at offsets y_chan: the sum over
        the pooling windows that cover a pixel and chose it (with relu, only where the output > 0)."""
        last_oh, last_ow = (ih + PH) // SH, (iw + PW) // SW  # the last windows that start at or before ih, iw
        acc = tl.zeros(rows_ok.shape, acc_type)
        for i in tl.static_range((KH + SH - 1) // SH):
            oh = last_oh - i
            kh = ih + PH - oh * SH
            for j in tl.static_range((KW + SW - 1) // SW):
                ow = last_ow - j
                kw = iw + PW - ow * SW
                valid = rows_ok & ((oh >= 0) & (oh < OH) & (kh < KH) & (ow >= 0) & (ow < OW) & (kw < KW))[None, :]
                offs = y_chan + (oh * syh + ow * syw)[None, :]
                winner = tl.load(idx_ptr + offs, mask=valid, other=-1).to(tl.int32)
                hit = valid & (winner == (kh * KW + kw)[None, :])
                g = tl.load(dy_ptr + offs, mask=hit, other=0.0).to(acc_type)
                if relu:
                    g = tl.where(tl.load(y_ptr + offs, mask=hit, other=0.0) > 0, g, 0.0)
                acc += g
        return acc

    @autotune(POOL_CONFIGS, key=["C", "H", "W", "sxc", "KH", "KW", "SH", "SW"])
    @triton.jit(do_not_specialize=["relu"])
    def _max_pool_backward_kernel(dy_ptr, idx_ptr, y_ptr, dx_ptr, C, H, W, OH, OW, sxn, sxc, sxh, sxw,
                                  syn, syc, syh, syw, relu, KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr,
                                  SW: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr,
                                  FP64: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
        n, c, q, in_ok = tile(C, H * W, BLOCK_C, BLOCK_P)
        ih, iw = q // W, q % W
        acc_type = tl.float64 if FP64 else tl.float32
        acc = gathered_grad(dy_ptr, idx_ptr, y_ptr, n * syn + c[:, None] * syc, ih, iw, in_ok, OH, OW, syh, syw,
                            KH, KW, SH, SW, PH, PW, relu, acc_type)
        dx_offs = n * sxn + c[:, None] * sxc + (ih * sxh + iw * sxw)[None, :]
        tl.store(dx_ptr + dx_offs, acc.to(dx_ptr.dtype.element_ty), mask=in_ok)


def pool_output_size(size: int, kernel: int, stride: int, padding: int, ceil_mode: bool) -> int:
    """PyTorch's pooling output size (ceil mode: the last window must start inside the input)."""
    span = size + 2 * padding - kernel
    out = (span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def pool_arguments(x: torch.Tensor, kernel, stride, padding, ceil_mode: bool):
    """(kernel, stride, padding) as (h, w) pairs (stride defaults to the kernel), or a ValueError
    saying what is wrong with them for pooling x."""
    kernel = as_pair("kernel", kernel)
    stride = as_pair("stride", stride if stride is not None else kernel)
    padding = as_pair("padding", padding)
    if min(kernel) < 1 or min(stride) < 1 or min(padding) < 0:
        raise ValueError(f"kernel and stride must be >= 1 and padding >= 0, got {kernel}, {stride}, {padding}")
    if padding[0] * 2 > kernel[0] or padding[1] * 2 > kernel[1]:
        raise ValueError(f"padding {padding} must be at most half the kernel {kernel}")
    sizes = [pool_output_size(s, k, st, p, ceil_mode) for s, k, st, p in zip(x.shape[2:], kernel, stride, padding)]
    if min(sizes) < 1:
        raise ValueError(f"x of spatial size {tuple(x.shape[2:])} is too small for kernel {kernel} "
                         f"with padding {padding} (output {sizes})")
    return kernel, stride, padding


def _index_dtype(taps: int) -> torch.dtype:
    return torch.int8 if taps <= 127 else torch.int16 if taps <= 32767 else torch.int32


def empty_pool_outputs(x: torch.Tensor, kernel, stride, padding, ceil_mode: bool,
                   save: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Uninitialised y and argmax (empty unless `save`) for pooling x, in x's memory format (the
    op and its fake share it)."""
    n, c, h, w = x.shape
    oh, ow = (pool_output_size(s, k, st, p, ceil_mode) for s, k, st, p in zip((h, w), kernel, stride, padding))
    fmt = memory_format_of(x)
    y = torch.empty((n, c, oh, ow), device=x.device, dtype=x.dtype, memory_format=fmt)
    index_dtype = _index_dtype(kernel[0] * kernel[1])
    if not save:
        return y, torch.empty(0, device=x.device, dtype=index_dtype)
    return y, torch.empty((n, c, oh, ow), device=x.device, dtype=index_dtype, memory_format=fmt)


def _empty_input_grad(dy: torch.Tensor, idx: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Uninitialised dx of the pooled input, in the argmax's memory format."""
    n, c = idx.shape[:2]
    return torch.empty((n, c, height, width), device=dy.device, dtype=dy.dtype, memory_format=memory_format_of(idx))


def _max_pool_forward(x: torch.Tensor, kernel: list[int], stride: list[int], padding: list[int],
                     ceil_mode: bool, relu: bool, save: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, argmax offsets in the window); the argmax only with `save` (for a backward), else empty."""
    n, c, h, w = x.shape
    y, idx = empty_pool_outputs(x, kernel, stride, padding, ceil_mode, save)
    oh, ow = y.shape[2:]
    _max_pool_forward_kernel[image_block_grid(n, c, oh * ow)](
        x, y, idx if save else y, c, h, w, oh, ow, *strides4(x), *strides4(y), int(relu), KH=kernel[0], KW=kernel[1],
        SH=stride[0], SW=stride[1], PH=padding[0], PW=padding[1], FP64=x.dtype == torch.float64, SAVE=save)
    return y, idx


max_pool_forward = torch.library.custom_op(f"{_OP}_forward", mutates_args=())(_max_pool_forward)


@max_pool_forward.register_fake
def _(x, kernel, stride, padding, ceil_mode, relu, save):
    return empty_pool_outputs(x, kernel, stride, padding, ceil_mode, save)


def _max_pool_backward(dy: torch.Tensor, idx: torch.Tensor, y: Optional[torch.Tensor], input_height: int,
                      input_width: int, kernel: list[int], stride: list[int], padding: list[int]) -> torch.Tensor:
    """dx from dy and the saved argmax; with `y` (relu=True), only where y > 0."""
    n, c, oh, ow = idx.shape
    dy = dy.contiguous(memory_format=memory_format_of(idx))
    dx = _empty_input_grad(dy, idx, input_height, input_width)
    _max_pool_backward_kernel[image_block_grid(n, c, input_height * input_width)](
        dy, idx, y if y is not None else dy, dx, c, input_height, input_width, oh, ow, *strides4(dx), *strides4(idx),
        int(y is not None), KH=kernel[0], KW=kernel[1], SH=stride[0], SW=stride[1], PH=padding[0], PW=padding[1],
        FP64=dy.dtype == torch.float64)
    return dx


max_pool_backward = torch.library.custom_op(f"{_OP}_backward", mutates_args=())(_max_pool_backward)


@max_pool_backward.register_fake
def _(dy, idx, y, input_height, input_width, kernel, stride, padding):
    return _empty_input_grad(dy, idx, input_height, input_width)


def _setup_context(ctx, inputs, output):
    x, kernel, stride, padding, ceil_mode, relu, save = inputs
    y, idx = output
    ctx.save_for_backward(idx, y if relu else None)
    ctx.args = (x.shape[2], x.shape[3], kernel, stride, padding)
    ctx.backward_op = max_pool_backward


def _backward(ctx, grad_y, grad_idx):
    idx, y = ctx.saved_tensors
    return ctx.backward_op(grad_y, idx, y, *ctx.args), None, None, None, None, None, None


max_pool_forward.register_autograd(_backward, setup_context=_setup_context)
_eager_max_pool = eager_function(_max_pool_forward, _max_pool_backward, _setup_context, _backward)


def max_pool2d(x: torch.Tensor, kernel, stride=None, padding=0, ceil_mode: bool = False,
               relu: bool = False) -> torch.Tensor:
    """Max pooling (autograd-aware) by the Triton kernels; `relu=True` pools relu(x).

    x: (N, C, H, W), NCHW or channels-last, fp32/bf16/fp16 (fp64 for checks).
    kernel, stride (default: kernel), padding: an int or (h, w). Padding is at most kernel // 2.
    """
    check_tensor("x", x, ndim=4)
    image_layout("x", x)
    kernel, stride, padding = pool_arguments(x, kernel, stride, padding, ceil_mode)
    y, _ = call(max_pool_forward, _eager_max_pool, x, list(kernel), list(stride), list(padding), bool(ceil_mode),
                bool(relu), needs_grad(x))
    return y
