"""One SGD step of a weight in one Triton kernel, writing the weight's low-precision copy too.

    sgd_step_(param, grad, momentum_buffer, copy, lr, weight_decay, momentum, nesterov)

torch.optim.SGD's step (dampening 0): d = grad + weight_decay * param; with momentum
buf = momentum * buf + d and d = buf (Nesterov: d + momentum * buf); param -= lr * d. The
gradient may have another dtype than the fp32 weight (the bf16 gradient of a bf16 copy); the
copy, when given, receives the new weight rounded to its dtype (to nearest, as a cast). One
pass reads the gradient, the weight and the momentum and writes the last two and the copy,
where autocast and torch's SGD pass over the weights three times (the forward's cast, the
gradient's cast, the step). `lr` is a number, or a 0-d tensor on the device (what a step
recorded as a CUDA graph reads at each replay). Torch ops (reference.sgd_step_) where the
kernel does not run: no triton, CPU tensors (unless asked: `on_cpu`), tensors with other strides.
"""
from __future__ import annotations

from typing import Optional, Union

import torch

from alexspec.kernels.ops import launch
from alexspec.kernels.ops import reference
from alexspec.kernels.ops.launch import tl, triton

_BLOCK, _WARPS = 2048, 8

if triton is not None:
    @triton.jit
    def _sgd_kernel(param_ptr, grad_ptr, buffer_ptr, copy_ptr, lr_ptr, lr, weight_decay, momentum, n,
                    LR_IN_TENSOR: tl.constexpr, MOMENTUM: tl.constexpr, NESTEROV: tl.constexpr,
                    COPY: tl.constexpr, BLOCK: tl.constexpr):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        param = tl.load(param_ptr + offs, mask=mask)
        d = tl.load(grad_ptr + offs, mask=mask).to(param.dtype) + weight_decay * param
        if MOMENTUM:
            buffer = momentum * tl.load(buffer_ptr + offs, mask=mask) + d
            tl.store(buffer_ptr + offs, buffer, mask=mask)
            d = d + momentum * buffer if NESTEROV else buffer
        rate = tl.load(lr_ptr).to(param.dtype) if LR_IN_TENSOR else lr
        param = param - rate * d
        tl.store(param_ptr + offs, param, mask=mask)
        if COPY:
            tl.store(copy_ptr + offs, param.to(copy_ptr.dtype.element_ty, fp_downcast_rounding="rtne"), mask=mask)


def sgd_step_(param: torch.Tensor, grad: torch.Tensor, momentum_buffer: Optional[torch.Tensor],
              copy: Optional[torch.Tensor], lr: Union[float, torch.Tensor], weight_decay: float, momentum: float,
              nesterov: bool, on_cpu: bool = False) -> None:
    """In place: one SGD step of `param` (and of `momentum_buffer`, needed when momentum is not
    0) from `grad`, and `copy` (when given) set to the new weight in its own dtype. `on_cpu`:
    CPU tensors take the kernel too, under TRITON_INTERPRET=1 (whose fp32 -> bf16 conversion
    truncates where a GPU rounds to nearest), as the tests run it."""
    if momentum and momentum_buffer is None:
        raise ValueError("momentum needs a momentum_buffer (zeros before the first step)")
    if not _kernel_takes(param, grad, momentum_buffer, copy, lr, on_cpu):
        reference.sgd_step_(param, grad, momentum_buffer, copy, lr, weight_decay, momentum, nesterov)
        return
    args, constants = _arguments(param, grad, momentum_buffer, copy, lr, weight_decay, momentum, nesterov)
    with launch.on_device_of(param):  # a tower's weights on a second GPU step there
        _sgd_kernel[(triton.cdiv(param.numel(), _BLOCK),)](*args, **constants, num_warps=_WARPS)


def compile_ahead(param: torch.Tensor, grad_dtype: torch.dtype, copy: Optional[torch.Tensor], lr_in_tensor: bool,
                  momentum: bool, nesterov: bool) -> None:
    """Start compiling the kernel sgd_step_ will launch for `param` (within ahead.compile_ahead(),
    which launches nothing); nothing where the kernel would not run."""
    grad = torch.empty_like(param, dtype=grad_dtype)
    lr = param.new_ones(()) if lr_in_tensor else 1.0
    buffer = torch.empty_like(param) if momentum else None
    if _kernel_takes(param, grad, buffer, copy, lr, on_cpu=True):
        args, constants = _arguments(param, grad, buffer, copy, lr, 0.0, 0.9 if momentum else 0.0, nesterov)
        _sgd_kernel.warmup(*args, **constants, num_warps=_WARPS, grid=(1,))


def _arguments(param, grad, momentum_buffer, copy, lr, weight_decay, momentum, nesterov) -> tuple[list, dict]:
    in_tensor = isinstance(lr, torch.Tensor)
    args = [param, grad, momentum_buffer if momentum else param, copy if copy is not None else param,
            lr if in_tensor else param, 0.0 if in_tensor else float(lr), float(weight_decay), float(momentum),
            param.numel()]
    return args, dict(LR_IN_TENSOR=in_tensor, MOMENTUM=bool(momentum), NESTEROV=bool(nesterov),
                      COPY=copy is not None, BLOCK=_BLOCK)


def _kernel_takes(param, grad, momentum_buffer, copy, lr, on_cpu: bool = False) -> bool:
    """Whether the kernel runs on these: triton, CUDA tensors (CPU ones with `on_cpu` where the
    kernels take them), the weight fp32 or fp64 and dense, and the gradient, momentum and copy
    laid out as the weight (one flat pass covers them all)."""
    tensors = [t for t in (param, grad, momentum_buffer, copy) if t is not None]
    if triton is None or not (param.is_cuda or (on_cpu and launch.cpu_tensors_taken())):
        return False
    if isinstance(lr, torch.Tensor) and (lr.numel() != 1 or lr.device != param.device):
        return False
    dense = param.is_contiguous() or (param.dim() == 4 and param.is_contiguous(memory_format=torch.channels_last))
    return (dense and param.dtype in (torch.float32, torch.float64) and 0 < param.numel() < 2 ** 31
            and all(t.shape == param.shape and t.stride() == param.stride() and t.device == param.device
                    for t in tensors))
