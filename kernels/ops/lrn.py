"""Local response normalisation across channels in Triton: forward, one-pass backward, custom op.

Forward: scale = k + alpha' * sum_{j in window(c)} x_j^2 and y = x * scale^-beta; it saves x and
the scale. Backward in one pass:
    dx_c = dy_c * scale_c^-beta - 2 alpha' beta x_c * sum_{j : c in window(j)} dy_j x_j scale_j^(-beta-1)
Window and zero padding as torch.nn.LocalResponseNorm, restricted to the channel's group
(per-tower LRN). Each program loads a (pixels, channels) tile once, with a halo of a few
channels each side, and sums over the windows with a 0/1 band matrix on the tensor cores: no
shifted reloads, one power per element. One kernel serves NCHW and channels-last through
strides; it accumulates in fp32 (fp64 for fp64 inputs). A NaN or infinite input makes its
whole tile NaN (the band multiplies it by zero), not only the windows that hold it.
"""
from __future__ import annotations

import torch

from alexspec.kernels.ops import reference
from alexspec.kernels.ops.launch import INTERPRET, call, check_tensor, eager_function, image_layout, memory_format_of, needs_grad, tl, triton
from alexspec.kernels.tuning.autotune import autotune

_OP = "alexspec::lrn"

if triton is not None:
    # (pixels, channels) tiles; channel blocks stay inside one group (per-tower LRN)
    _CONFIGS = [triton.Config({"BLOCK_P": bp, "BLOCK_C": bc}, num_warps=w)  # 32x128 in 4 warps spills (triton 3.6)
                for bp, bc, w in ((32, 32, 4), (64, 64, 4), (32, 128, 8), (64, 128, 8), (128, 32, 4))]
    # The backward holds three inputs and their halos: its wide-channel tiles use every register
    # a thread has and spill (bench/kernel_resources.py), so it tries narrower ones. 16 channels
    # also tile the paper's 48-channel groups of norm1 with no block left part empty.
    _BACKWARD_CONFIGS = [triton.Config({"BLOCK_P": bp, "BLOCK_C": bc}, num_warps=w)
                         for bp, bc, w in ((32, 32, 4), (64, 32, 4), (64, 64, 4), (128, 32, 4), (128, 16, 4))]

    def _small_tiles_for_fp64(configs, named_args, **constants):
        """fp64 sums its windows as broadcast products, (pixels, channels, channels) at once: only
        the smallest tile keeps that in registers."""
        return configs[:1] if constants.get("FP64") else configs

    @triton.jit
    def _tile(HW, group_c, stride_n, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, HALF: tl.constexpr):
        """This program's image offset and pixels; its block of channels and their halo (HALF
        channels each side), each as channel numbers, offsets from the block's first channel,
        and where they exist in the block's group."""
        blocks = tl.cdiv(group_c, BLOCK_C)
        group_start = (tl.program_id(1) // blocks) * group_c
        first = group_start + (tl.program_id(1) % blocks) * BLOCK_C
        p = tl.program_id(2) * BLOCK_P + tl.arange(0, BLOCK_P)
        rel = tl.arange(0, BLOCK_C)
        i = tl.arange(0, 2 * HALF)
        halo_rel = tl.where(i < HALF, i - HALF, BLOCK_C + i - HALF)
        c, halo = first + rel, first + halo_rel
        group_end = group_start + group_c
        return (tl.program_id(0).to(tl.int64) * stride_n, p, c, rel, c < group_end,
                halo, halo_rel, (halo >= group_start) & (halo < group_end))

    @triton.jit
    def _load(ptr, base, p, c, c_ok, HW, stride_c, stride_hw, other, acc_type: tl.constexpr):
        """The (pixels, channels) tile at p, c as acc_type (`other` where p or c is out of range),
        its offsets and mask."""
        offs = base + p[:, None] * stride_hw + c[None, :] * stride_c
        mask = (p < HW)[:, None] & c_ok[None, :]
        return tl.load(ptr + offs, mask=mask, other=other).to(acc_type), offs, mask

    from triton.language.extra import libdevice

    @triton.jit
    def power(x, exponent, FAST: tl.constexpr):
        """x ** exponent for x > 0, as exp2(exponent * log2(x)). FAST (fp32 on a GPU) takes the
        GPU's one-instruction log2 (about 2**-22 off) for tl.log2's accurate sequence of about 15,
        which made a third of the LRN kernels' instructions; the interpreter has only tl.log2."""
        if FAST:
            return tl.exp2(exponent * libdevice.fast_log2f(x))
        return tl.exp2(exponent * tl.log2(x))

    @triton.jit
    def _relu(x):
        """max(x, 0), NaN kept (as torch.relu)."""
        return tl.where((x > 0) | (x != x), x, 0.0)

    @triton.jit
    def _window(rows_rel, cols_rel, BEFORE: tl.constexpr, AFTER: tl.constexpr, acc_type: tl.constexpr):
        """The 0/1 band matrix: row channel j lies in [c - BEFORE, c + AFTER] of column channel c."""
        d = rows_rel[:, None] - cols_rel[None, :]
        return ((d >= -BEFORE) & (d <= AFTER)).to(acc_type)

    @triton.jit
    def _windowed_sum(v, v_halo, band, band_halo, FP64: tl.constexpr, FP32: tl.constexpr):
        """sum over each channel's window of v (the block and its halo): two small matrix products
        on the tensor cores, tf32 for 16-bit inputs, 3xtf32 (about fp32's precision) for fp32, and
        products and sums for fp64 (no fp64 tl.dot on every GPU)."""
        if FP64:
            return (tl.sum(v[:, :, None] * band[None, :, :], axis=1)
                    + tl.sum(v_halo[:, :, None] * band_halo[None, :, :], axis=1))
        elif FP32:
            return (tl.dot(v, band, input_precision="tf32x3")
                    + tl.dot(v_halo, band_halo, input_precision="tf32x3"))
        else:
            return tl.dot(v, band, input_precision="tf32") + tl.dot(v_halo, band_halo, input_precision="tf32")

    @autotune(_CONFIGS, key=["C", "HW", "group_c", "stride_c", "SIZE"], prune=_small_tiles_for_fp64)
    @triton.jit
    def _lrn_forward_kernel(x_ptr, y_ptr, scale_ptr, C, HW, stride_n, stride_c, stride_hw, group_c,
                            alpha, beta, k, SIZE: tl.constexpr, HALF: tl.constexpr, FP64: tl.constexpr,
                            FP32: tl.constexpr, RELU: tl.constexpr, FAST: tl.constexpr, SAVE: tl.constexpr,
                            BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
        base, p, c, rel, c_ok, halo, halo_rel, halo_ok = _tile(HW, group_c, stride_n, BLOCK_P, BLOCK_C, HALF)
        acc_type = tl.float64 if FP64 else tl.float32
        x, offs, mask = _load(x_ptr, base, p, c, c_ok, HW, stride_c, stride_hw, 0.0, acc_type)
        x_halo, _, _ = _load(x_ptr, base, p, halo, halo_ok, HW, stride_c, stride_hw, 0.0, acc_type)
        if RELU:
            x, x_halo = _relu(x), _relu(x_halo)
        # the window of c is [c - SIZE // 2, c + (SIZE - 1) // 2]
        squares = _windowed_sum(x * x, x_halo * x_halo, _window(rel, rel, SIZE // 2, (SIZE - 1) // 2, acc_type),
                                _window(halo_rel, rel, SIZE // 2, (SIZE - 1) // 2, acc_type), FP64, FP32)
        scale = k + alpha * squares
        y = x * power(scale, -beta, FAST)
        tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)
        if SAVE:
            tl.store(scale_ptr + offs, scale.to(scale_ptr.dtype.element_ty), mask=mask)

    @autotune(_BACKWARD_CONFIGS, key=["C", "HW", "group_c", "stride_c", "SIZE"], prune=_small_tiles_for_fp64)
    @triton.jit
    def _lrn_backward_kernel(dy_ptr, x_ptr, scale_ptr, dx_ptr, C, HW, stride_n, stride_c, stride_hw, group_c,
                             alpha, beta, SIZE: tl.constexpr, HALF: tl.constexpr, FP64: tl.constexpr,
                             FP32: tl.constexpr, RELU: tl.constexpr, FAST: tl.constexpr, BLOCK_P: tl.constexpr,
                             BLOCK_C: tl.constexpr):
        base, p, c, rel, c_ok, halo, halo_rel, halo_ok = _tile(HW, group_c, stride_n, BLOCK_P, BLOCK_C, HALF)
        acc_type = tl.float64 if FP64 else tl.float32
        dy, offs, mask = _load(dy_ptr, base, p, c, c_ok, HW, stride_c, stride_hw, 0.0, acc_type)
        x, _, _ = _load(x_ptr, base, p, c, c_ok, HW, stride_c, stride_hw, 0.0, acc_type)
        s, _, _ = _load(scale_ptr, base, p, c, c_ok, HW, stride_c, stride_hw, 1.0, acc_type)
        dy_h, _, _ = _load(dy_ptr, base, p, halo, halo_ok, HW, stride_c, stride_hw, 0.0, acc_type)
        x_h, _, _ = _load(x_ptr, base, p, halo, halo_ok, HW, stride_c, stride_hw, 0.0, acc_type)
        s_h, _, _ = _load(scale_ptr, base, p, halo, halo_ok, HW, stride_c, stride_hw, 1.0, acc_type)
        if RELU:
            x, x_h = _relu(x), _relu(x_h)
        a = dy * power(s, -beta, FAST)  # dy * scale^-beta (dy is not needed after this)
        # every j whose window holds c: j in [c - (SIZE - 1) // 2, c + SIZE // 2]
        terms = _windowed_sum(a * x / s, dy_h * x_h * power(s_h, -beta - 1.0, FAST),
                              _window(rel, rel, (SIZE - 1) // 2, SIZE // 2, acc_type),
                              _window(halo_rel, rel, (SIZE - 1) // 2, SIZE // 2, acc_type), FP64, FP32)
        dx = a - 2.0 * alpha * beta * x * terms
        if RELU:  # ReLU's backward: only where its input was positive (where relu(x) is)
            dx = tl.where(x > 0, dx, 0.0)
        tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)


def _grid(x: torch.Tensor, groups: int):
    n, c, h, w = x.shape
    return lambda meta: (n, groups * triton.cdiv(c // groups, meta["BLOCK_C"]), triton.cdiv(h * w, meta["BLOCK_P"]))


def _constants(x: torch.Tensor, size: int, relu: bool) -> dict:
    """The kernels' compile-time constants: the halo each side (>= size // 2, and 2 * HALF >= 16,
    the smallest matrix product), the accumulation precision, ReLU on load, the GPU's fast log2
    (fp32 and 16-bit inputs, compiled)."""
    return dict(SIZE=size, HALF=max(8, triton.next_power_of_2(size // 2)), FP64=x.dtype == torch.float64,
                FP32=x.dtype == torch.float32, RELU=relu, FAST=fast_log2(x))


def fast_log2(x: torch.Tensor) -> bool:
    """Whether kernels on x take the GPU's one-instruction log2 (power's FAST): fp32 and 16-bit
    inputs, compiled; not fp64 or the interpreter."""
    return x.dtype != torch.float64 and not INTERPRET


def _strides(x: torch.Tensor) -> tuple[int, int, int]:
    return x.stride(0), x.stride(1), x.stride(3)  # hw = h*W + w has the stride of w in both layouts


def _lrn_forward(x: torch.Tensor, size: int, alpha: float, beta: float, k: float, groups: int, relu: bool,
                save: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, scale) of LRN(relu(x) if relu else x) for `alpha` already per term (the paper's
    convention); the scale (for a backward) only with `save`, else empty."""
    n, c, h, w = x.shape
    y, scale = _empty_outputs(x, save)
    _lrn_forward_kernel[_grid(x, groups)](x, y, scale if save else y, c, h * w, *_strides(x), c // groups, alpha, beta,
                                          k, SAVE=save, **_constants(x, size, relu))
    return y, scale


lrn_forward = torch.library.custom_op(f"{_OP}_forward", mutates_args=())(_lrn_forward)


def _empty_outputs(x: torch.Tensor, save: bool) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.empty_like(x), torch.empty_like(x) if save else x.new_empty(0)


@lrn_forward.register_fake
def _(x, size, alpha, beta, k, groups, relu, save):
    return _empty_outputs(x, save)


def _lrn_backward(dy: torch.Tensor, x: torch.Tensor, scale: torch.Tensor, size: int, alpha: float,
                 beta: float, groups: int, relu: bool) -> torch.Tensor:
    """dx of LRN (of ReLU, with `relu`) from dy and the forward's saved x and scale (all in x's
    memory format)."""
    n, c, h, w = x.shape
    dy = dy.contiguous(memory_format=memory_format_of(x))
    dx = torch.empty_like(x)
    _lrn_backward_kernel[_grid(x, groups)](dy, x, scale, dx, c, h * w, *_strides(x), c // groups, alpha, beta,
                                           **_constants(x, size, relu))
    return dx


lrn_backward = torch.library.custom_op(f"{_OP}_backward", mutates_args=())(_lrn_backward)


@lrn_backward.register_fake
def _(dy, x, scale, size, alpha, beta, groups, relu):
    return torch.empty_like(x)


def _setup_context(ctx, inputs, output):
    x, size, alpha, beta, k, groups, relu, save = inputs
    ctx.save_for_backward(x, output[1])
    ctx.args = (size, alpha, beta, groups, relu)
    ctx.backward_op = lrn_backward


def _backward(ctx, grad_y, grad_scale):
    x, scale = ctx.saved_tensors
    return ctx.backward_op(grad_y, x, scale, *ctx.args), None, None, None, None, None, None, None


lrn_forward.register_autograd(_backward, setup_context=_setup_context)
_eager_lrn = eager_function(_lrn_forward, _lrn_backward, _setup_context, _backward)


def check_lrn_arguments(x: torch.Tensor, size: int, alpha: float, beta: float, k: float, groups: int) -> None:
    """Raise ValueError naming what is wrong with x or an LRN argument."""
    check_tensor("x", x, ndim=4)
    image_layout("x", x)
    check_lrn_settings(x.shape[1], size, alpha, beta, k, groups)


def check_lrn_settings(channels: int, size: int, alpha: float, beta: float, k: float, groups: int) -> None:
    """Raise ValueError naming what is wrong with an LRN argument for `channels` channels."""
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    if not isinstance(groups, int) or groups < 1 or channels % groups:
        raise ValueError(f"groups must be a positive int dividing the {channels} channels, got {groups!r}")
    if beta < 0 or k < 0 or alpha < 0:
        raise ValueError(f"alpha, beta and k must be >= 0, got {alpha}, {beta}, {k}")


def lrn(x: torch.Tensor, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0,
        convention: str = "paper", groups: int = 1, relu: bool = False) -> torch.Tensor:
    """LRN across channels (autograd-aware), computed by the Triton kernels.

    x: (N, C, H, W), NCHW or channels-last, fp32/bf16/fp16 (fp64 for checks). `convention`:
    "paper" (k + alpha*sum) or "caffe"/"torch" (k + alpha/size*sum). `groups`: normalise within
    each of this many channel groups (the paper's per-tower LRN on one device). `relu=True`
    normalises relu(x): ReLU on load, its mask folded into the backward.
    """
    check_lrn_arguments(x, size, alpha, beta, k, groups)
    y, _ = call(lrn_forward, _eager_lrn, x, size, reference.lrn_alpha(alpha, size, convention), float(beta),
                float(k), groups, bool(relu), needs_grad(x))
    return y
