"""Plain-torch definitions of each op: the `torch` backend, and the oracle the Triton kernels are held to.

Any device, any float dtype, autograd by torch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

CONVENTIONS = ("paper", "caffe", "torch")


def lrn_alpha(alpha: float, size: int, convention: str) -> float:
    """The factor on each squared activation: alpha (paper) or alpha/size (caffe, torch)."""
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {', '.join(CONVENTIONS)}, got {convention!r}")
    return alpha if convention == "paper" else alpha / size


def lrn(x: torch.Tensor, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0,
        convention: str = "paper", groups: int = 1) -> torch.Tensor:
    """Local response normalisation across channels, within each of `groups` channel groups.

    b_c = a_c / (k + alpha' * sum_{j=c-size//2}^{c+(size-1)//2} a_j^2) ** beta, where channels
    outside the group count as zero and alpha' follows `convention` (see `lrn_alpha`).
    The window matches torch.nn.LocalResponseNorm (symmetric for odd sizes). Autograd keeps
    only x and the scale for backward, as the Triton kernel does.
    """
    return _LRNFunction.apply(x, size, lrn_alpha(alpha, size, convention), beta, k, groups)


class _LRNFunction(torch.autograd.Function):
    """LRN with the backward written out (saves x and the scale, not every intermediate)."""

    @staticmethod
    def forward(ctx, x, size, alpha_per_term, beta, k, groups):
        scale = lrn_scale(x, size, alpha_per_term, k, groups)
        ctx.save_for_backward(x, scale)
        ctx.args = (size, alpha_per_term, beta, groups)
        return x * scale.pow(-beta)

    @staticmethod
    def backward(ctx, dy):
        x, scale = ctx.saved_tensors
        size, alpha_per_term, beta, groups = ctx.args
        # dx_c = dy_c s_c^-b - 2 a b x_c sum_{j : c in window(j)} dy_j x_j s_j^(-b-1); the transposed window
        # of j runs from j - (size-1)//2 to j + size//2, so it is the window of a mirrored size.
        t = dy * x * scale.pow(-beta - 1)
        n, c, h, w = x.shape
        t = t.reshape(n * groups, c // groups, h, w)
        padded = F.pad(t, (0, 0, 0, 0, (size - 1) // 2, size // 2))
        window = sum(padded[:, i:i + c // groups] for i in range(size)).reshape(n, c, h, w)
        dx = dy * scale.pow(-beta) - 2 * alpha_per_term * beta * x * window
        return dx, None, None, None, None, None


def lrn_scale(x: torch.Tensor, size: int, alpha_per_term: float, k: float, groups: int) -> torch.Tensor:
    """k + alpha' * (sum of squares over each channel's window): the denominator before ** beta."""
    n, c, h, w = x.shape
    squares = x.pow(2).reshape(n * groups, c // groups, h, w)
    padded = F.pad(squares, (0, 0, 0, 0, size // 2, (size - 1) // 2))
    window = sum(padded[:, i:i + c // groups] for i in range(size))
    return (k + alpha_per_term * window).reshape(n, c, h, w)


def max_pool2d(x: torch.Tensor, kernel, stride=None, padding=0, ceil_mode: bool = False,
               relu: bool = False) -> torch.Tensor:
    """Max pooling; with `relu`, of relu(x) (which equals relu of the max)."""
    y = F.max_pool2d(x, kernel, stride if stride is not None else kernel, padding, ceil_mode=ceil_mode)
    return F.relu(y) if relu else y


def conv2d_bias_relu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride=1,
                     padding=0, groups: int = 1, relu: bool = True) -> torch.Tensor:
    """conv2d + bias, then ReLU when `relu`."""
    y = F.conv2d(x, weight, bias, stride, padding, 1, groups)
    return F.relu(y) if relu else y
