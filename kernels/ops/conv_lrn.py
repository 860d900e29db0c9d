"""Conv + bias + ReLU with the LRN after it in the same kernel's epilogue: the op and its autograd.

Where the channels one LRN normalises together (a tower's, in AlexNet's conv1 and conv2) fit one
tile of the conv's output, the implicit GEMM (conv_triton._conv_tile) sums its tile, adds the
bias, and normalises relu(conv) across the tile's channels before storing it: the windows' sums
of squares are one small matrix product with a 0/1 band matrix on the tensor cores, as in the
LRN kernel. Inference writes only the LRN's output; training also writes what LRN's backward
reads (the conv's output before ReLU, and the LRN's scale), so it saves the LRN's read of the
conv's output. Backward: LRN's (with ReLU's mask) by the LRN kernel, then the conv's (no ReLU)
by whichever conv backward conv_choice picks.
"""
from __future__ import annotations

from typing import Optional

import torch

from alexspec.kernels.ops import conv, conv_triton, lrn, reference
from alexspec.kernels.ops.launch import INTERPRET, call, eager_function, needs_grad, tl, triton
from alexspec.kernels.tuning.autotune import autotune

_OP = "alexspec::conv2d_bias_relu_lrn"
WIDEST_GROUP = 128  # the most channels one LRN group may have: the widest tile the epilogue holds

if triton is not None:
    from alexspec.kernels.ops.conv_triton import _conv_tile
    from alexspec.kernels.ops.lrn import _relu, _window, power

    # BLOCK_N is not tuned: it is the LRN group's channel count rounded up to a power of two. The
    # first config fits every group (the interpreter and ALEXSPEC_AUTOTUNE=quick take only it).
    _CONFIGS = [triton.Config({"BLOCK_M": bm, "BLOCK_K": bk}, num_warps=w, num_stages=s)
                for bm, bk, w, s in ((64, 32, 8, 3), (64, 64, 8, 4), (32, 64, 4, 3), (64, 32, 4, 2), (64, 64, 4, 3),
                                     (128, 32, 8, 3), (128, 64, 8, 3))]

    def _accumulators_fit(configs, named_args, **constants):
        """The configs whose threads each hold at most 32 of the tile's fp32 sums: with more, the
        epilogue's second tile (the squares' window sums) spills on sm_90 (bench/kernel_resources.py,
        conv2's 128-channel groups: 136-168 bytes a thread)."""
        return [c for c in configs if c.kwargs["BLOCK_M"] * constants["BLOCK_N"] <= 32 * 32 * c.num_warps]

    @triton.jit
    def _band_sum(v, band, FP64: tl.constexpr, FP32: tl.constexpr):
        """v's sums over each channel's window: one matrix product with the band (3xtf32, about
        fp32's precision, for fp32; tf32 for 16-bit inputs; fp64 for fp64)."""
        if FP64:
            return tl.dot(v, band, out_dtype=tl.float64)
        elif FP32:
            return tl.dot(v, band, input_precision="tf32x3")
        else:
            return tl.dot(v, band, input_precision="tf32")

    @autotune(_CONFIGS, key=["M", "OCG", "K", "sxc", "KH", "KW", "LRN_C"], prune=_accumulators_fit)
    @triton.jit(do_not_specialize=["has_bias"])
    def _conv_lrn_forward_kernel(x_ptr, w_ptr, b_ptr, z_ptr, c_ptr, scale_ptr, M, OCG, K, ICG, H, W, OH, OW,
                                 sxn, sxc, sxh, sxw, syn, syc, syh, syw, has_bias, alpha, beta, k_lrn,
                                 LRN_C: tl.constexpr, SIZE: tl.constexpr, SAVE: tl.constexpr, FAST: tl.constexpr,
                                 KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
                                 PH: tl.constexpr, PW: tl.constexpr, FP64: tl.constexpr, FP32: tl.constexpr,
                                 PRECISION: tl.constexpr, UPCAST: tl.constexpr,
                                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        """One (pixels, LRN group) tile: z = LRN(relu(conv + bias)); with SAVE also the conv +
        bias (c) and the LRN's scale, for the backward. Program (i, j, g) takes pixel block i and
        LRN group j of conv group g."""
        rel = tl.arange(0, BLOCK_N)
        oc_ok = rel < LRN_C
        acc, m_ok, image, oh, ow, channel = _conv_tile(x_ptr, w_ptr, b_ptr, tl.program_id(1) * LRN_C + rel, oc_ok,
                                                       M, OCG, K, ICG, H, W, OH, OW, sxn, sxc, sxh, sxw, has_bias,
                                                       KH, KW, SH, SW, PH, PW, FP64, PRECISION, UPCAST,
                                                       BLOCK_M, BLOCK_N, BLOCK_K)
        offs = (image.to(tl.int64) * syn + oh * syh + ow * syw)[:, None] + channel[None, :] * syc
        ok = m_ok[:, None] & oc_ok[None, :]
        if SAVE:
            tl.store(c_ptr + offs, acc.to(c_ptr.dtype.element_ty), mask=ok)
        r = _relu(acc)  # zero in the channels past the group (their weights and bias load as zero)
        # the window of channel c: [c - SIZE // 2, c + (SIZE - 1) // 2]
        band = _window(rel, rel, SIZE // 2, (SIZE - 1) // 2, acc.dtype)
        scale = k_lrn + alpha * _band_sum(r * r, band, FP64, FP32)
        tl.store(z_ptr + offs, (r * power(scale, -beta, FAST)).to(z_ptr.dtype.element_ty), mask=ok)
        if SAVE:
            tl.store(scale_ptr + offs, scale.to(scale_ptr.dtype.element_ty), mask=ok)


def _conv_lrn_forward(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], stride: list[int],
                      padding: list[int], groups: int, size: int, alpha: float, beta: float, k: float,
                      lrn_groups: int, save: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(z, c, scale): z = LRN(relu(conv2d(x, weight) + bias)) with `alpha` per term, in x's memory
    format; with `save` also c = conv2d(x, weight) + bias and the LRN's scale, else both empty."""
    n = x.shape[0]
    oc, icg, kh, kw = weight.shape
    z, c, scale = _empty_outputs(x, weight, stride, padding, save)
    oh, ow = z.shape[2:]
    ocg, lrn_c = oc // groups, oc // lrn_groups
    grid = lambda meta: (triton.cdiv(n * oh * ow, meta["BLOCK_M"]), ocg // lrn_c, groups)  # noqa: E731
    _conv_lrn_forward_kernel[grid](
        x, conv_triton._gemm_weight(weight, groups), bias if bias is not None else weight, z, c if save else z,
        scale if save else z, n * oh * ow, ocg, icg * kh * kw, icg, *x.shape[2:], oh, ow, *x.stride(), *z.stride(),
        int(bias is not None), alpha, beta, k, LRN_C=lrn_c, SIZE=size, SAVE=save, FAST=lrn.fast_log2(x),
        KH=kh, KW=kw, SH=stride[0], SW=stride[1], PH=padding[0], PW=padding[1], FP64=x.dtype == torch.float64,
        FP32=x.dtype == torch.float32, PRECISION=conv_triton.precision(x),
        UPCAST=INTERPRET and x.dtype == torch.bfloat16, BLOCK_N=max(16, triton.next_power_of_2(lrn_c)))
    return z, c, scale


def _empty_outputs(x, weight, stride, padding, save: bool):
    """z, and c and scale where `save` (else empty): the op and its fake share them."""
    z = conv_triton.empty_output(x, weight, stride, padding)
    return (z, torch.empty_like(z), torch.empty_like(z)) if save else (z, z.new_empty(0), z.new_empty(0))


conv_lrn_forward = torch.library.custom_op(f"{_OP}_forward", mutates_args=())(_conv_lrn_forward)


@conv_lrn_forward.register_fake
def _(x, weight, bias, stride, padding, groups, size, alpha, beta, k, lrn_groups, save):
    return _empty_outputs(x, weight, stride, padding, save)


def _conv_lrn_backward(grad_z: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, c: torch.Tensor,
                       scale: torch.Tensor, has_bias: bool, stride: list[int], padding: list[int], groups: int,
                       size: int, alpha: float, beta: float, lrn_groups: int,
                       output_mask: list[bool]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx, dweight, dbias): back through the LRN and the ReLU (the LRN kernel), then the conv
    (conv's backward, no ReLU); entries not asked for by output_mask are empty."""
    grad_c = lrn._lrn_backward(grad_z, c, scale, size, alpha, beta, lrn_groups, True)
    return conv._conv_backward(grad_c, x, weight, None, has_bias, stride, padding, groups, False, output_mask)


conv_lrn_backward = torch.library.custom_op(f"{_OP}_backward", mutates_args=())(_conv_lrn_backward)


@conv_lrn_backward.register_fake
def _(grad_z, x, weight, c, scale, has_bias, stride, padding, groups, size, alpha, beta, lrn_groups, output_mask):
    return (torch.empty_like(x) if output_mask[0] else x.new_empty(0),
            torch.empty_like(weight) if output_mask[1] else x.new_empty(0),
            x.new_empty(weight.shape[0]) if output_mask[2] and has_bias else x.new_empty(0))


def _setup_context(ctx, inputs, output):
    x, weight, bias, stride, padding, groups, size, alpha, beta, k, lrn_groups, save = inputs
    ctx.save_for_backward(x, weight, output[1], output[2])
    ctx.args = (bias is not None, stride, padding, groups, size, alpha, beta, lrn_groups)
    ctx.backward_op = conv_lrn_backward


def _backward(ctx, grad_z, grad_c, grad_scale):
    x, weight, c, scale = ctx.saved_tensors
    has_bias = ctx.args[0]
    mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], has_bias and ctx.needs_input_grad[2]]
    dx, dw, db = ctx.backward_op(grad_z, x, weight, c, scale, *ctx.args, mask)
    return (dx if mask[0] else None, dw if mask[1] else None, db if mask[2] else None) + (None,) * 9


conv_lrn_forward.register_autograd(_backward, setup_context=_setup_context)
_eager_conv_lrn = eager_function(_conv_lrn_forward, _conv_lrn_backward, _setup_context, _backward)


def takes(channels: int, groups: int, lrn_groups: int) -> bool:
    """Whether the kernel takes an LRN of `lrn_groups` groups after a conv of `channels` outputs
    in `groups` groups: each LRN group inside one conv group, of at most WIDEST_GROUP channels."""
    return lrn_groups % groups == 0 and channels % lrn_groups == 0 and channels // lrn_groups <= WIDEST_GROUP


def conv2d_bias_relu_lrn(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None, stride=1,
                         padding=0, groups: int = 1, size: int = 5, alpha: float = 1e-4, beta: float = 0.75,
                         k: float = 2.0, convention: str = "paper", lrn_groups: Optional[int] = None) -> torch.Tensor:
    """lrn(relu(conv2d(x, weight) + bias)) (autograd-aware) in one Triton kernel.

    The conv's arguments as conv2d_bias_relu's, the LRN's as lrn's. `lrn_groups` (default: the
    conv's `groups`): normalise within each of this many channel groups, each inside one conv
    group and of at most WIDEST_GROUP channels (the paper's towers on one device: conv1 with
    lrn_groups=2, conv2 with groups=2).
    """
    lrn_groups = groups if lrn_groups is None else lrn_groups
    stride, padding = conv.check_conv_arguments(x, weight, bias, stride, padding, groups)
    oc = weight.shape[0]
    lrn.check_lrn_settings(oc, size, alpha, beta, k, lrn_groups)
    if not takes(oc, groups, lrn_groups):
        raise ValueError(f"the LRN's {lrn_groups} groups of {oc // lrn_groups} channels must each lie inside one of "
                         f"the conv's {groups} groups and hold at most {WIDEST_GROUP} channels: run the conv and "
                         f"the LRN apart (conv2d_bias_relu, then lrn)")
    z, _, _ = call(conv_lrn_forward, _eager_conv_lrn, x, weight.contiguous(), bias, list(stride), list(padding),
                   groups, size, reference.lrn_alpha(alpha, size, convention), float(beta), float(k), lrn_groups,
                   any(needs_grad(t) for t in (x, weight, bias) if t is not None))
    return z
