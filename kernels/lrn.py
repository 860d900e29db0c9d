"""Local response normalisation across channels in Triton: forward, one-pass backward, custom op.

Forward: scale = k + alpha' * sum_{j in window(c)} x_j^2 and y = x * scale^-beta; it saves x and
the scale. Backward in one pass:
    dx_c = dy_c * scale_c^-beta - 2 alpha' beta x_c * sum_{j : c in window(j)} dy_j x_j scale_j^(-beta-1)
Window and zero padding as torch.nn.LocalResponseNorm, restricted to the channel's group
(per-tower LRN). One kernel serves NCHW and channels-last through strides; it accumulates in
fp32 (fp64 for fp64 inputs).
"""
from __future__ import annotations

import torch

from alexspec.kernels import reference
from alexspec.kernels._common import autotune, check_tensor, image_layout, memory_format_of, needs_grad, tl, triton

_OP = "alexspec::lrn"

if triton is not None:
    _CONFIGS = [triton.Config({"BLOCK_C": bc, "BLOCK_HW": bhw}, num_warps=w)
                for bc, bhw, w in ((16, 128, 4), (32, 64, 4), (8, 256, 4), (64, 32, 4), (32, 128, 8))]

    @triton.jit
    def _tile(C, HW, stride_n, stride_c, stride_hw, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
        """This program's channels, pixels, image offset, element offsets and in-bounds mask."""
        c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        hw = tl.program_id(2) * BLOCK_HW + tl.arange(0, BLOCK_HW)
        base = tl.program_id(0).to(tl.int64) * stride_n
        offs = base + c[:, None] * stride_c + hw[None, :] * stride_hw
        return c, hw, base, offs, (c < C)[:, None] & (hw < HW)[None, :]

    @triton.jit
    def channel_in_group(c, j, C, group_c):
        """Where channel j[i] exists in row i's group (LRN windows stop at group edges)."""
        group_start = (c // group_c) * group_c
        return (j >= group_start) & (j < group_start + group_c) & (j < C)

    @triton.jit
    def _neighbour(c, j, hw, base, C, HW, group_c, stride_c, stride_hw):
        """Offsets of channel j[i] for row i, and where it exists in row i's group (zero elsewhere)."""
        ok = channel_in_group(c, j, C, group_c)
        return base + j[:, None] * stride_c + hw[None, :] * stride_hw, ok[:, None] & (hw < HW)[None, :]

    @autotune(_CONFIGS, key=["C", "HW", "stride_c", "SIZE"])
    @triton.jit
    def _lrn_forward_kernel(x_ptr, y_ptr, scale_ptr, C, HW, stride_n, stride_c, stride_hw, group_c,
                            alpha, beta, k, SIZE: tl.constexpr, FP64: tl.constexpr, SAVE: tl.constexpr,
                            BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
        c, hw, base, offs, mask = _tile(C, HW, stride_n, stride_c, stride_hw, BLOCK_C, BLOCK_HW)
        acc_type = tl.float64 if FP64 else tl.float32
        acc = tl.zeros((BLOCK_C, BLOCK_HW), dtype=acc_type)
        for d in tl.static_range(SIZE):  # the window of c
            offs_j, m = _neighbour(c, c - SIZE // 2 + d, hw, base, C, HW, group_c, stride_c, stride_hw)
            v = tl.load(x_ptr + offs_j, mask=m, other=0.0).to(acc_type)
            acc += v * v
        scale = k + alpha * acc
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(acc_type)
        y = x * tl.exp2(-beta * tl.log2(scale))
        tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)
        if SAVE:
            tl.store(scale_ptr + offs, scale.to(scale_ptr.dtype.element_ty), mask=mask)

    @autotune(_CONFIGS, key=["C", "HW", "stride_c", "SIZE"])
    @triton.jit
    def _lrn_backward_kernel(dy_ptr, x_ptr, scale_ptr, dx_ptr, C, HW, stride_n, stride_c, stride_hw, group_c,
                             alpha, beta, SIZE: tl.constexpr, FP64: tl.constexpr,
                             BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
        c, hw, base, offs, mask = _tile(C, HW, stride_n, stride_c, stride_hw, BLOCK_C, BLOCK_HW)
        acc_type = tl.float64 if FP64 else tl.float32
        acc = tl.zeros((BLOCK_C, BLOCK_HW), dtype=acc_type)
        for d in tl.static_range(SIZE):  # every j whose window holds c
            offs_j, m = _neighbour(c, c - (SIZE - 1) // 2 + d, hw, base, C, HW, group_c, stride_c, stride_hw)
            dy_j = tl.load(dy_ptr + offs_j, mask=m, other=0.0).to(acc_type)
            x_j = tl.load(x_ptr + offs_j, mask=m, other=0.0).to(acc_type)
            s_j = tl.load(scale_ptr + offs_j, mask=m, other=1.0).to(acc_type)
            acc += dy_j * x_j * tl.exp2((-beta - 1.0) * tl.log2(s_j))
        dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(acc_type)
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(acc_type)
        s = tl.load(scale_ptr + offs, mask=mask, other=1.0).to(acc_type)
        dx = dy * tl.exp2(-beta * tl.log2(s)) - 2.0 * alpha * beta * x * acc
        tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)


def _grid(x: torch.Tensor):
    n, c, h, w = x.shape
    return lambda meta: (n, triton.cdiv(c, meta["BLOCK_C"]), triton.cdiv(h * w, meta["BLOCK_HW"]))


def _strides(x: torch.Tensor) -> tuple[int, int, int]:
    return x.stride(0), x.stride(1), x.stride(3)  # hw = h*W + w has the stride of w in both layouts


@torch.library.custom_op(f"{_OP}_forward", mutates_args=())
def lrn_forward(x: torch.Tensor, size: int, alpha: float, beta: float, k: float, groups: int,
                save: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, scale) for `alpha` already per term (the paper's convention); the scale (for a
    backward) only with `save`, else empty."""
    n, c, h, w = x.shape
    y, scale = _empty_outputs(x, save)
    _lrn_forward_kernel[_grid(x)](x, y, scale if save else y, c, h * w, *_strides(x), c // groups, alpha, beta, k,
                                  SIZE=size, FP64=x.dtype == torch.float64, SAVE=save)
    return y, scale


def _empty_outputs(x: torch.Tensor, save: bool) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.empty_like(x), torch.empty_like(x) if save else x.new_empty(0)


@lrn_forward.register_fake
def _(x, size, alpha, beta, k, groups, save):
    return _empty_outputs(x, save)


@torch.library.custom_op(f"{_OP}_backward", mutates_args=())
def lrn_backward(dy: torch.Tensor, x: torch.Tensor, scale: torch.Tensor, size: int, alpha: float,
                 beta: float, groups: int) -> torch.Tensor:
    """dx of LRN from dy and the forward's saved x and scale (all in x's memory format)."""
    n, c, h, w = x.shape
    dy = dy.contiguous(memory_format=memory_format_of(x))
    dx = torch.empty_like(x)
    _lrn_backward_kernel[_grid(x)](dy, x, scale, dx, c, h * w, *_strides(x), c // groups, alpha, beta,
                                   SIZE=size, FP64=x.dtype == torch.float64)
    return dx


@lrn_backward.register_fake
def _(dy, x, scale, size, alpha, beta, groups):
    return torch.empty_like(x)


def _setup_context(ctx, inputs, output):
    x, size, alpha, beta, k, groups, save = inputs
    ctx.save_for_backward(x, output[1])
    ctx.args = (size, alpha, beta, groups)


def _backward(ctx, grad_y, grad_scale):
    x, scale = ctx.saved_tensors
    return lrn_backward(grad_y, x, scale, *ctx.args), None, None, None, None, None, None


lrn_forward.register_autograd(_backward, setup_context=_setup_context)


def check_lrn_arguments(x: torch.Tensor, size: int, alpha: float, beta: float, k: float, groups: int) -> None:
    """Raise ValueError naming what is wrong with x or an LRN argument."""
    check_tensor("x", x, ndim=4)
    image_layout("x", x)
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    if not isinstance(groups, int) or groups < 1 or x.shape[1] % groups:
        raise ValueError(f"groups must be a positive int dividing the {x.shape[1]} channels, got {groups!r}")
    if beta < 0 or k < 0 or alpha < 0:
        raise ValueError(f"alpha, beta and k must be >= 0, got {alpha}, {beta}, {k}")


def lrn(x: torch.Tensor, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0,
        convention: str = "paper", groups: int = 1) -> torch.Tensor:
    """LRN across channels (autograd-aware), computed by the Triton kernels.

    x: (N, C, H, W), NCHW or channels-last, fp32/bf16/fp16 (fp64 for checks). `convention`:
    "paper" (k + alpha*sum) or "caffe"/"torch" (k + alpha/size*sum). `groups`: normalise within
    each of this many channel groups (the paper's per-tower LRN on one device).
    """
    check_lrn_arguments(x, size, alpha, beta, k, groups)
    y, _ = lrn_forward(x, size, reference.lrn_alpha(alpha, size, convention), float(beta), float(k), groups,
                       needs_grad(x))
    return y
