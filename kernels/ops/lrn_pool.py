"""LRN followed by max pooling in one Triton kernel (AlexNet's norm1+pool1, norm2+pool2), ReLU optional.

Unfused, LRN writes a full-size output that pooling reads back, and the backward writes a
full-size gradient that LRN's backward reads back. Fused:

- forward: each program owns a tile of pooled outputs; for every window tap it computes the
  LRN of that input pixel in registers (`relu=True` first applies ReLU to the input), keeps
  the running max and its tap (int8), and stores the LRN scale of the pixels it visits (the
  backward needs it), each pixel's once: from the window whose first `stride` rows and columns
  hold it, or from the last window for the rows and columns no later window starts at. None
  of what only the backward reads is stored when no backward can follow (inference);
- backward: each program owns a tile of input pixels; the LRN-output gradient of a pixel is
  gathered from the pooled gradients whose argmax is that pixel (no atomics), then LRN's
  one-pass backward runs on it and, with `relu=True`, ReLU's mask (x > 0) is applied.

Saved for backward: x, the scale and the argmax; the LRN output never reaches memory.
Ties, NaNs and window rules are those of `alexspec.kernels.max_pool2d`; the LRN is that of
`alexspec.kernels.ops.lrn` (window, groups, conventions).
"""
from __future__ import annotations

import torch

from alexspec.kernels.ops import reference
from alexspec.kernels.ops.launch import call, eager_function, image_block_grid, memory_format_of, needs_grad, strides4, tl, triton
from alexspec.kernels.tuning.autotune import autotune
from alexspec.kernels.ops.lrn import check_lrn_arguments, fast_log2
from alexspec.kernels.ops.maxpool import empty_pool_outputs, pool_arguments

_OP = "alexspec::lrn_max_pool2d"

if triton is not None:
    from alexspec.kernels.ops.lrn import power
    from alexspec.kernels.ops.maxpool import POOL_CONFIGS, gathered_grad, tile

    @triton.jit
    def channel_in_group(c, j, C, group_c):
        """Where channel j[i] exists in row i's group (LRN windows stop at group edges)."""
        group_start = (c // group_c) * group_c
        return (j >= group_start) & (j < group_start + group_c) & (j < C)

    @triton.jit
    def _relu_load(ptr, mask, RELU: tl.constexpr, acc_type: tl.constexpr):
        v = tl.load(ptr, mask=mask, other=0.0).to(acc_type)
        if RELU:
            v = tl.maximum(v, 0.0)
        return v

    @autotune(POOL_CONFIGS, key=["C", "OH", "OW", "sxc", "SIZE", "KH", "KW", "SH", "SW"])
    @triton.jit
    def _lrn_pool_forward_kernel(x_ptr, scale_ptr, y_ptr, idx_ptr, C, H, W, OH, OW, group_c, alpha, beta, k,
                                 sxn, sxc, sxh, sxw, syn, syc, syh, syw, SIZE: tl.constexpr,
                                 KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
                                 PH: tl.constexpr, PW: tl.constexpr, RELU: tl.constexpr, FP64: tl.constexpr,
                                 FAST: tl.constexpr, SAVE: tl.constexpr, BLOCK_C: tl.constexpr,
                                 BLOCK_P: tl.constexpr):
        n, c, p, out_ok = tile(C, OH * OW, BLOCK_C, BLOCK_P)
        oh, ow = p // OW, p % OW
        acc_type = tl.float64 if FP64 else tl.float32
        best = tl.full((BLOCK_C, BLOCK_P), float("-inf"), acc_type)
        arg = tl.zeros((BLOCK_C, BLOCK_P), tl.int32)
        seen = tl.zeros((BLOCK_C, BLOCK_P), tl.int1)
        x_image = x_ptr + n * sxn
        for kh in tl.static_range(KH):
            ih = oh * SH - PH + kh
            row_owned = (kh < SH) | (oh == OH - 1)  # this window stores the scale of row ih
            for kw in tl.static_range(KW):
                iw = ow * SW - PW + kw
                pixel_ok = (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
                ok = out_ok & pixel_ok[None, :]
                pixel = (ih * sxh + iw * sxw)[None, :]
                sum_sq = tl.zeros((BLOCK_C, BLOCK_P), acc_type)
                for d in tl.static_range(SIZE):  # the LRN window of c at this pixel
                    j = c - SIZE // 2 + d
                    m = channel_in_group(c, j, C, group_c)[:, None] & ok
                    v = _relu_load(x_image + j[:, None] * sxc + pixel, m, RELU, acc_type)
                    sum_sq += v * v
                scale = k + alpha * sum_sq
                v = _relu_load(x_image + c[:, None] * sxc + pixel, ok, RELU, acc_type)
                v = v * power(scale, -beta, FAST)
                if SAVE:
                    owned = row_owned & ((kw < SW) | (ow == OW - 1))
                    tl.store(scale_ptr + n * sxn + c[:, None] * sxc + pixel, scale.to(scale_ptr.dtype.element_ty),
                             mask=ok & owned[None, :])
                take = ok & ((v > best) | (v != v) | (seen == 0))
                best = tl.where(take, v, best)
                arg = tl.where(take, kh * KW + kw, arg)
                seen = seen | ok
        y_offs = n * syn + c[:, None] * syc + (oh * syh + ow * syw)[None, :]
        tl.store(y_ptr + y_offs, best.to(y_ptr.dtype.element_ty), mask=out_ok)
        if SAVE:
            tl.store(idx_ptr + y_offs, arg.to(idx_ptr.dtype.element_ty), mask=out_ok)

    @autotune(POOL_CONFIGS, key=["C", "H", "W", "sxc", "SIZE", "KH", "KW", "SH", "SW"])
    @triton.jit
    def _lrn_pool_backward_kernel(dy_ptr, idx_ptr, x_ptr, scale_ptr, dx_ptr, C, H, W, OH, OW, group_c, alpha, beta,
                                  sxn, sxc, sxh, sxw, syn, syc, syh, syw, SIZE: tl.constexpr,
                                  KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
                                  PH: tl.constexpr, PW: tl.constexpr, RELU: tl.constexpr, FP64: tl.constexpr,
                                  FAST: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
        n, c, q, in_ok = tile(C, H * W, BLOCK_C, BLOCK_P)
        ih, iw = q // W, q % W
        acc_type = tl.float64 if FP64 else tl.float32
        x_image = x_ptr + n * sxn
        scale_image = scale_ptr + n * sxn
        pixel = (ih * sxh + iw * sxw)[None, :]
        window = tl.zeros((BLOCK_C, BLOCK_P), acc_type)
        dy_c = tl.zeros((BLOCK_C, BLOCK_P), acc_type)
        for d in tl.static_range(SIZE):  # every channel j whose LRN window holds c
            j = c - (SIZE - 1) // 2 + d
            m = channel_in_group(c, j, C, group_c)[:, None] & in_ok
            dy_j = gathered_grad(dy_ptr, idx_ptr, dy_ptr, n * syn + j[:, None] * syc, ih, iw, m, OH, OW, syh, syw,
                                 KH, KW, SH, SW, PH, PW, False, acc_type)
            if d == (SIZE - 1) // 2:
                dy_c = dy_j
            reached = dy_j != 0  # a pixel no window chose has no scale stored: keep it out
            x_j = _relu_load(x_image + j[:, None] * sxc + pixel, m & reached, RELU, acc_type)
            s_j = tl.load(scale_image + j[:, None] * sxc + pixel, mask=m & reached, other=1.0).to(acc_type)
            window += dy_j * x_j * power(s_j, -beta - 1.0, FAST)
        reached = dy_c != 0
        x_raw = tl.load(x_image + c[:, None] * sxc + pixel, mask=in_ok, other=0.0).to(acc_type)
        x = tl.maximum(x_raw, 0.0) if RELU else x_raw
        s = tl.load(scale_image + c[:, None] * sxc + pixel, mask=in_ok & reached, other=1.0).to(acc_type)
        dx = dy_c * power(s, -beta, FAST) - 2.0 * alpha * beta * x * window
        if RELU:
            dx = tl.where(x_raw > 0, dx, 0.0)
        tl.store(dx_ptr + n * sxn + c[:, None] * sxc + pixel, dx.to(dx_ptr.dtype.element_ty), mask=in_ok)


def _empty_outputs(x: torch.Tensor, kernel, stride, padding, ceil_mode: bool, save: bool):
    """Uninitialised (y, argmax, scale) in x's memory format, argmax and scale empty unless `save`
    (the op and its fake share it)."""
    y, idx = empty_pool_outputs(x, kernel, stride, padding, ceil_mode, save)
    return y, idx, torch.empty_like(x) if save else x.new_empty(0)


def _lrn_pool_forward(x: torch.Tensor, size: int, alpha: float, beta: float, k: float, groups: int,
                     kernel: list[int], stride: list[int], padding: list[int], ceil_mode: bool, relu: bool,
                     save: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(pooled LRN output, argmax tap, LRN scale) for `alpha` already per term (the paper's
    convention); argmax and scale (for a backward) only with `save`, else empty."""
    n, c, h, w = x.shape
    y, idx, scale = _empty_outputs(x, kernel, stride, padding, ceil_mode, save)
    oh, ow = y.shape[2:]
    _lrn_pool_forward_kernel[image_block_grid(n, c, oh * ow)](
        x, scale if save else y, y, idx if save else y, c, h, w, oh, ow, c // groups, alpha, beta, k, *strides4(x),
        *strides4(y), SIZE=size, KH=kernel[0], KW=kernel[1], SH=stride[0], SW=stride[1], PH=padding[0],
        PW=padding[1], RELU=relu, FP64=x.dtype == torch.float64, FAST=fast_log2(x), SAVE=save)
    return y, idx, scale


lrn_pool_forward = torch.library.custom_op(f"{_OP}_forward", mutates_args=())(_lrn_pool_forward)


@lrn_pool_forward.register_fake
def _(x, size, alpha, beta, k, groups, kernel, stride, padding, ceil_mode, relu, save):
    return _empty_outputs(x, kernel, stride, padding, ceil_mode, save)


def _lrn_pool_backward(dy: torch.Tensor, idx: torch.Tensor, x: torch.Tensor, scale: torch.Tensor, size: int,
                      alpha: float, beta: float, groups: int, kernel: list[int], stride: list[int],
                      padding: list[int], relu: bool) -> torch.Tensor:
    """dx from the pooled gradient and the forward's saved argmax, x and scale."""
    n, c, h, w = x.shape
    oh, ow = idx.shape[2:]
    dy = dy.contiguous(memory_format=memory_format_of(idx))
    dx = torch.empty_like(x)
    _lrn_pool_backward_kernel[image_block_grid(n, c, h * w)](
        dy, idx, x, scale, dx, c, h, w, oh, ow, c // groups, alpha, beta, *strides4(x), *strides4(idx), SIZE=size,
        KH=kernel[0], KW=kernel[1], SH=stride[0], SW=stride[1], PH=padding[0], PW=padding[1], RELU=relu,
        FP64=x.dtype == torch.float64, FAST=fast_log2(x))
    return dx


lrn_pool_backward = torch.library.custom_op(f"{_OP}_backward", mutates_args=())(_lrn_pool_backward)


@lrn_pool_backward.register_fake
def _(dy, idx, x, scale, size, alpha, beta, groups, kernel, stride, padding, relu):
    return torch.empty_like(x)


def _setup_context(ctx, inputs, output):
    x, size, alpha, beta, k, groups, kernel, stride, padding, ceil_mode, relu, save = inputs
    _, idx, scale = output
    ctx.save_for_backward(idx, x, scale)
    ctx.args = (size, alpha, beta, groups, kernel, stride, padding, relu)
    ctx.backward_op = lrn_pool_backward


def _backward(ctx, grad_y, grad_idx, grad_scale):
    idx, x, scale = ctx.saved_tensors
    return (ctx.backward_op(grad_y, idx, x, scale, *ctx.args),) + (None,) * 11


lrn_pool_forward.register_autograd(_backward, setup_context=_setup_context)
_eager_lrn_pool = eager_function(_lrn_pool_forward, _lrn_pool_backward, _setup_context, _backward)


def lrn_max_pool2d(x: torch.Tensor, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0,
                   convention: str = "paper", groups: int = 1, kernel=3, stride=2, padding=0,
                   ceil_mode: bool = False, relu: bool = False) -> torch.Tensor:
    """max_pool2d(lrn(relu(x) if relu else x)) (autograd-aware) in one Triton kernel each way.

    LRN arguments as `alexspec.kernels.ops.lrn`, pooling arguments as `alexspec.kernels.max_pool2d`.
    x: (N, C, H, W), NCHW or channels-last, fp32/bf16/fp16 (fp64 for checks).
    """
    check_lrn_arguments(x, size, alpha, beta, k, groups)
    kernel, stride, padding = pool_arguments(x, kernel, stride, padding, ceil_mode)
    y, _, _ = call(lrn_pool_forward, _eager_lrn_pool, x, size, reference.lrn_alpha(alpha, size, convention),
                   float(beta), float(k), groups, list(kernel), list(stride), list(padding), bool(ceil_mode),
                   bool(relu), needs_grad(x))
    return y
