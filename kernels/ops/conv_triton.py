"""The Triton implicit GEMMs of a conv: the forward with its bias + ReLU epilogue, the weight
gradient, and the input gradient of a stride-1 conv (the forward run on dy with the weight
flipped and transposed). kernels.ops.conv chooses between these and cuDNN (conv_cudnn).

Per group g the output is a GEMM: M = N*OH*OW output pixels, N = OC/groups channels,
K = (IC/groups)*KH*KW taps, with the input patch matrix gathered on the fly (no im2col
buffer) and K ordered (kh, kw, ic) so that channels-last input is read in contiguous runs.
The weight gradient is dy^T times the input patches, its long sum over N*OH*OW pixels cut into
slices that each add their partial sum into the gradient (an atomic fp32 add, in the weight's own
layout: no buffer of parts, no pass to add them up); the bias gradient, the sum of dy, is taken
in the same pass over dy.
"""
from __future__ import annotations

import functools
from typing import Optional

import torch

from alexspec.kernels.ops.launch import INTERPRET, memory_format_of, tl, triton
from alexspec.kernels.tuning.autotune import autotune

if triton is not None:
    _CONFIGS = [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=s)
                for bm, bn, bk, w, s in ((64, 32, 32, 4, 2), (128, 64, 32, 4, 3), (128, 128, 32, 8, 3),
                                         (64, 64, 64, 4, 3), (128, 32, 64, 4, 4), (64, 128, 32, 4, 4),
                                         (128, 128, 64, 8, 3))]

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

    @triton.jit
    def _conv_tile(x_ptr, w_ptr, b_ptr, oc, oc_ok, M, OCG, K, ICG, H, W, OH, OW, sxn, sxc, sxh, sxw, has_bias,
                   KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
                   PH: tl.constexpr, PW: tl.constexpr, FP64: tl.constexpr, PRECISION: tl.constexpr,
                   UPCAST: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        """The tile of this program's pixels (block program_id(0)) and out channels oc of group
        program_id(2): the implicit GEMM's main loop summed over every tap, plus the bias where
        has_bias. Returns the sums, which pixels exist, each pixel's image, row and column, and
        each channel's number among all groups'."""
        g = tl.program_id(2)
        m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        m_ok = m < M
        image, pixel = m // (OH * OW), m % (OH * OW)
        oh, ow = pixel // OW, pixel % OW
        top, left = oh * SH - PH, ow * SW - PW  # each window's first input pixel
        windows = x_ptr + image.to(tl.int64) * sxn + (g * ICG).to(tl.int64) * sxc + top * sxh + left * sxw
        w_base = w_ptr + g.to(tl.int64) * K * OCG
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float64 if FP64 else tl.float32)
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
            acc += tl.load(b_ptr + channel, mask=oc_ok, other=0.0).to(acc.dtype)[None, :]
        return acc, m_ok, image, oh, ow, channel

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
        oc = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        oc_ok = oc < OCG
        acc, m_ok, image, oh, ow, channel = _conv_tile(x_ptr, w_ptr, b_ptr, oc, oc_ok, M, OCG, K, ICG, H, W, OH, OW,
                                                       sxn, sxc, sxh, sxw, has_bias, KH, KW, SH, SW, PH, PW, FP64,
                                                       PRECISION, UPCAST, BLOCK_M, BLOCK_N, BLOCK_K)
        if relu:
            acc = tl.maximum(acc, 0.0)
        y_offs = (image.to(tl.int64) * syn + oh * syh + ow * syw)[:, None] + channel[None, :] * syc
        tl.store(y_ptr + y_offs, acc.to(y_ptr.dtype.element_ty), mask=m_ok[:, None] & oc_ok[None, :])

    _WEIGHT_GRAD_CONFIGS = [triton.Config({"BLOCK_OC": bo, "BLOCK_K": bk, "BLOCK_M": bm}, num_warps=w, num_stages=s)
                            for bo, bk, bm, w, s in ((32, 32, 32, 4, 2), (64, 128, 32, 4, 3), (128, 128, 32, 8, 3),
                                                     (128, 64, 64, 4, 3), (64, 64, 64, 4, 4))]

    # sums_ptr: dw, then db, which each slice adds into: zeroed again before each config is timed
    @autotune(_WEIGHT_GRAD_CONFIGS, key=["M", "OCG", "K", "sxc", "KH", "KW", "SPLIT"], reset_to_zero=["sums_ptr"])
    @triton.jit(do_not_specialize=["has_bias", "db_start"])
    def _conv_weight_grad_kernel(x_ptr, dy_ptr, sums_ptr, M, OCG, K, ICG, H, W, OH, OW, inv_ohw, inv_ow,
                                 sxn, sxc, sxh, sxw, syn, syc, syh, syw, M_PER_SPLIT, SPLIT, has_bias, db_start,
                                 KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
                                 PH: tl.constexpr, PW: tl.constexpr, FP64: tl.constexpr, PRECISION: tl.constexpr,
                                 UPCAST: tl.constexpr, BLOCK_OC: tl.constexpr, BLOCK_K: tl.constexpr,
                                 BLOCK_M: tl.constexpr):
        """One (out channels, taps) tile of group g's weight gradient, summed over one slice of
        the output pixels: sum_m dy[m, oc] * patch[m, (kh, kw, ic)], added into dw (OC, ICg, KH,
        KW) at the start of sums; the programs of the first taps tile also add sum_m dy[m, oc] into
        db, from sums[db_start], where has_bias."""
        k_tiles = tl.cdiv(K, BLOCK_K)
        k_tile = tl.program_id(0) % k_tiles
        oc = (tl.program_id(0) // k_tiles) * BLOCK_OC + tl.arange(0, BLOCK_OC)
        k = k_tile * BLOCK_K + tl.arange(0, BLOCK_K)
        g, part = tl.program_id(1) // SPLIT, tl.program_id(1) % SPLIT
        oc_ok, k_ok = oc < OCG, k < K
        # offsets in int32 (x has under 2**31 elements, and dy: check_weight_grad_takes)
        taps = (g * ICG) * sxc + _tap_offset(k, ICG, KW, sxc, sxh, sxw)
        dy_channel = (g * OCG + oc) * syc
        acc_type = tl.float64 if FP64 else tl.float32
        acc = tl.zeros((BLOCK_OC, BLOCK_K), dtype=acc_type)
        bias_acc = tl.zeros((BLOCK_OC,), dtype=acc_type)
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
            bias_acc += tl.sum(dy_t.to(acc_type), axis=1)
        channel = g * OCG + oc
        ic, tap = k % ICG, k // ICG  # dw[oc, ic, kh, kw] lies at oc*K + ic*KH*KW + (kh*KW + kw)
        tl.atomic_add(sums_ptr + channel[:, None] * K + (ic * (KH * KW) + tap)[None, :], acc,
                      mask=oc_ok[:, None] & k_ok[None, :], sem="relaxed")
        tl.atomic_add(sums_ptr + db_start + channel, bias_acc, mask=oc_ok & (k_tile == 0) & (has_bias != 0),
                      sem="relaxed")


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """floor((size + 2*padding - kernel) / stride) + 1, as PyTorch."""
    return (size + 2 * padding - kernel) // stride + 1


def _gemm_weight(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """(OC, ICg, KH, KW) -> (groups, KH*KW*ICg, OC/groups): K ordered (kh, kw, ic) as the kernel reads it."""
    oc, icg, kh, kw = weight.shape
    return weight.reshape(groups, oc // groups, icg, kh, kw).permute(0, 3, 4, 2, 1) \
        .reshape(groups, kh * kw * icg, oc // groups).contiguous()


def precision(x: torch.Tensor) -> str:
    allow_tf32 = x.device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32
    return "tf32" if allow_tf32 else "ieee"


def empty_output(x: torch.Tensor, weight: torch.Tensor, stride, padding) -> torch.Tensor:
    """Uninitialised conv output in x's memory format (the op and its fake share it)."""
    n, _, h, w = x.shape
    oc, _, kh, kw = weight.shape
    oh, ow = conv_output_size(h, kh, stride[0], padding[0]), conv_output_size(w, kw, stride[1], padding[1])
    return torch.empty((n, oc, oh, ow), device=x.device, dtype=x.dtype, memory_format=memory_format_of(x))


_SMALL = 2 ** 22 - 256  # what _quotient divides exactly, less the widest tile


def check_weight_grad_takes(dy: torch.Tensor) -> None:
    """ValueError where the weight-gradient kernel cannot take dy: it indexes with 32 bits and
    splits pixel numbers by multiplying (_quotient)."""
    n, oc, oh, ow = dy.shape
    if dy.numel() >= 2 ** 31 or oh * ow >= _SMALL:
        raise ValueError(f"the Triton weight gradient takes outputs under 2**31 elements and output images under "
                         f"{_SMALL:,} pixels, not {list(dy.shape)}: run this conv by cuDNN (ALEXSPEC_CONV=cudnn)")


def forward(x, weight, bias, stride, padding, groups, relu) -> torch.Tensor:
    n, c, h, w = x.shape
    oc, icg, kh, kw = weight.shape
    y = empty_output(x, weight, stride, padding)
    oh, ow = y.shape[2:]
    ocg, k = oc // groups, icg * kh * kw
    grid = lambda meta: (triton.cdiv(n * oh * ow, meta["BLOCK_M"]), triton.cdiv(ocg, meta["BLOCK_N"]), groups)
    _conv_forward_kernel[grid](
        x, _gemm_weight(weight, groups), bias if bias is not None else weight, y, n * oh * ow, ocg, k, icg, h, w,
        oh, ow, *x.stride(), *y.stride(), int(bias is not None), int(relu), KH=kh, KW=kw, SH=stride[0], SW=stride[1],
        PH=padding[0], PW=padding[1], FP64=x.dtype == torch.float64, PRECISION=precision(x),
        UPCAST=INTERPRET and x.dtype == torch.bfloat16)
    return y


def slices(pixels: int, tiles: int, device: torch.device) -> int:
    """Into how many slices the weight gradient's sum over `pixels` (N*OH*OW) is cut, for `tiles`
    (out channels x taps) tiles of 64 x 64 over all groups: enough programs for about 8 on each
    of the GPU's SMs, each slice at least 2,048 pixels, at most 64 slices. Each slice adds a
    whole gradient's worth of fp32 into the gradient: more slices than the GPU needs only add
    traffic (AlexNet's conv2 gradient is 1.2 MB: 64 slices would add 79 MB a step)."""
    wanted = -(-8 * multiprocessors(device) // tiles)
    return max(1, min(64, wanted, pixels // 2048))


@functools.lru_cache(maxsize=None)
def multiprocessors(device: torch.device) -> int:
    """The SM count of a CUDA device; an H100's (132) elsewhere, where it only shapes the slices."""
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 132


def weight_grad(dy: torch.Tensor, x: torch.Tensor, weight_shape, stride, padding, groups,
                bias: bool = False) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """(dL/dweight, dL/dbias where `bias`, else None) by the weight-gradient kernel, summed in
    fp32 (fp64 for fp64). Its slices add in whatever order they finish, so the last bits may differ
    from run to run; under torch.use_deterministic_algorithms(True) it sums in one slice."""
    n, _, h, w = x.shape
    oc, icg, kh, kw = weight_shape
    oh, ow = dy.shape[2:]
    check_weight_grad_takes(dy)
    ocg, k, pixels = oc // groups, icg * kh * kw, n * oh * ow
    split = 1 if torch.are_deterministic_algorithms_enabled() else \
        slices(pixels, triton.cdiv(ocg, 64) * triton.cdiv(k, 64) * groups, x.device)
    sums = torch.zeros(oc * k + (oc if bias else 0), device=x.device,  # dw, then db
                       dtype=torch.float64 if x.dtype == torch.float64 else torch.float32)
    grid = lambda meta: (triton.cdiv(ocg, meta["BLOCK_OC"]) * triton.cdiv(k, meta["BLOCK_K"]), groups * split)
    _conv_weight_grad_kernel[grid](
        x, dy, sums, pixels, ocg, k, icg, h, w, oh, ow, 1.0 / (oh * ow), 1.0 / ow, *x.stride(), *dy.stride(),
        triton.cdiv(pixels, split), split, int(bias), oc * k,
        KH=kh, KW=kw, SH=stride[0], SW=stride[1], PH=padding[0], PW=padding[1], FP64=x.dtype == torch.float64,
        PRECISION=precision(x), UPCAST=INTERPRET and x.dtype == torch.bfloat16)
    dw, db = sums[:oc * k].view(weight_shape), sums[oc * k:]
    return dw.to(x.dtype), db.to(x.dtype, copy=True) if bias else None  # db a tensor of its own, not a view


def input_grad(dy: torch.Tensor, weight: torch.Tensor, padding, groups) -> torch.Tensor:
    """dL/dx of a stride-1 conv: the conv of dy with each group's weight transposed (in <-> out
    channels) and flipped, padded by kernel - 1 - padding; no bias, no ReLU."""
    oc, icg, kh, kw = weight.shape
    flipped = weight.reshape(groups, oc // groups, icg, kh, kw).transpose(1, 2).flip(3, 4) \
        .reshape(groups * icg, oc // groups, kh, kw)
    return forward(dy, flipped, None, (1, 1), (kh - 1 - padding[0], kw - 1 - padding[1]), groups, False)


def computes_dx(weight_shape, stride, padding) -> bool:
    """Whether the Triton kernels compute this conv's input gradient (stride 1, padding under the kernel)."""
    kh, kw = weight_shape[2:]
    return list(stride) == [1, 1] and padding[0] < kh and padding[1] < kw
