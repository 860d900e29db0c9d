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
    alpha_per_term = lrn_alpha(alpha, size, convention)
    if not (torch.is_grad_enabled() and x.requires_grad):  # inference: plain ops (exportable, e.g. to ONNX)
        return x * lrn_scale(x, size, alpha_per_term, k, groups).pow(-beta)
    return _LRNFunction.apply(x, size, alpha_per_term, beta, k, groups)


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
        window = _window_sum(dy * x * scale.pow(-beta - 1), (size - 1) // 2, size // 2, groups)
        dx = dy * scale.pow(-beta) - 2 * alpha_per_term * beta * x * window
        return dx, None, None, None, None, None


def lrn_scale(x: torch.Tensor, size: int, alpha_per_term: float, k: float, groups: int) -> torch.Tensor:
    """k + alpha' * (sum of squares over each channel's window): the denominator before ** beta."""
    return k + alpha_per_term * _window_sum(x.pow(2), size // 2, (size - 1) // 2, groups)


def _window_sum(t: torch.Tensor, before: int, after: int, groups: int) -> torch.Tensor:
    """For each channel c, the sum of t over channels c-before..c+after of its group (zero outside).

    Written with avg_pool3d over a padded channel axis, as torch's own LocalResponseNorm, so
    that it also exports to ONNX.
    """
    n, c, h, w = t.shape
    size = before + after + 1
    grouped = t.unsqueeze(1) if groups == 1 else t.reshape(n * groups, 1, c // groups, h, w)
    padded = F.pad(grouped, (0, 0, 0, 0, before, after))
    summed = F.avg_pool3d(padded, (size, 1, 1), stride=1) * size
    return summed.squeeze(1) if groups == 1 else summed.reshape(n, c, h, w)


def max_pool2d(x: torch.Tensor, kernel, stride=None, padding=0, ceil_mode: bool = False,
               relu: bool = False) -> torch.Tensor:
    """Max pooling; with `relu`, of relu(x) (which equals relu of the max)."""
    y = F.max_pool2d(x, kernel, stride if stride is not None else kernel, padding, ceil_mode=ceil_mode)
    return F.relu(y) if relu else y


def conv2d_bias_relu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride=1,
                     padding=0, groups: int = 1, relu: bool = True, dilation=1) -> torch.Tensor:
    """conv2d + bias, then ReLU when `relu`."""
    y = F.conv2d(x, weight, bias, stride, padding, dilation, groups)
    return F.relu(y) if relu else y


@torch.no_grad()
def sgd_step_(param: torch.Tensor, grad: torch.Tensor, momentum_buffer: torch.Tensor | None,
              copy: torch.Tensor | None, lr, weight_decay: float, momentum: float, nesterov: bool) -> None:
    """In place, torch.optim.SGD's step (dampening 0) of `param` from `grad` (any float dtype), and
    `copy` (when given) set to the new weight in its dtype: what kernels.sgd.sgd_step_ computes."""
    d = grad.to(param.dtype)
    if weight_decay:
        d = d.add(param, alpha=weight_decay)
    if momentum:
        momentum_buffer.mul_(momentum).add_(d)
        d = d.add(momentum_buffer, alpha=momentum) if nesterov else momentum_buffer
    if isinstance(lr, torch.Tensor):
        param.sub_(d * lr.to(param.dtype))
    else:
        param.add_(d, alpha=-lr)
    if copy is not None:
        copy.copy_(param)
