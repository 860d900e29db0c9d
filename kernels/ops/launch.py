"""What every op file shares: triton (or None), the interpreter switch, argument checks, the
autograd wrapper of a custom op, strides and launch grids."""
from __future__ import annotations

import contextlib

import torch

from alexspec import settings
from alexspec.kernels.scoped import Scoped

try:
    import triton
    import triton.language as tl
except ImportError:  # torch without triton (a CPU build): the references still work
    triton = None
    tl = None

INTERPRET = settings.current().interpret  # decided when triton is imported, so read once
FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


def triton_available() -> bool:
    """True when the Triton kernels can run here: triton installed, and CUDA or the interpreter."""
    return triton is not None and (cpu_tensors_taken() or torch.cuda.is_available())


def cpu_tensors_taken() -> bool:
    """Whether the kernels take CPU tensors: under the interpreter, or while ahead.stand_in_gpu()
    compiles for a GPU that is not there (nothing launches then)."""
    return INTERPRET or bool(stand_in)


stand_in: Scoped = Scoped()  # the stand-in GPU's compute capability, within ahead.stand_in_gpu()



def on_device_of(tensor):
    """A context in which `tensor`'s GPU is the current one (Triton launches on the current GPU:
    a tower's layers on a second GPU launch there); nothing to do for a tensor on the current
    GPU or not on one."""
    if getattr(tensor, "is_cuda", False) and tensor.device.index not in (None, torch.cuda.current_device()):
        return torch.cuda.device(tensor.device)
    return contextlib.nullcontext()


def check_tensor(name: str, t, ndim: int | None = None, dtypes=FLOAT_DTYPES) -> None:
    """Raise ValueError naming `name` when `t` is not a tensor a kernel can take."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(t.shape)}")
    if t.dtype not in dtypes:
        names = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise ValueError(f"{name} has dtype {str(t.dtype).replace('torch.', '')}; expected one of {names}")
    if triton is None:
        raise ValueError("triton is not installed; use the torch references in alexspec.kernels.ops.reference")
    if t.device.type != "cuda" and not cpu_tensors_taken():
        raise ValueError(f"{name} is on {t.device}; the Triton kernels run on CUDA tensors (or on CPU "
                         "with TRITON_INTERPRET=1); alexspec.kernels.ops.reference has torch versions for any device")
    if t.numel() >= 2 ** 31:
        raise ValueError(f"{name} has {t.numel():,} elements; the kernels index with 32 bits (< 2**31)")


def needs_grad(x: torch.Tensor) -> bool:
    """Whether a backward can follow an op on x: what only the backward reads (an argmax, an
    LRN scale) is stored only then, so inference writes none of it."""
    return torch.is_grad_enabled() and x.requires_grad


def check_same(name: str, t: torch.Tensor, like: torch.Tensor, like_name: str) -> None:
    """Raise ValueError when `t` is not on the same device with the same dtype as `like`."""
    if t.device != like.device:
        raise ValueError(f"{name} is on {t.device} but {like_name} is on {like.device}")
    if t.dtype != like.dtype:
        raise ValueError(f"{name} has dtype {t.dtype} but {like_name} has {like.dtype}")


def image_layout(name: str, x: torch.Tensor) -> bool:
    """True for channels-last (NHWC) memory, False for NCHW; ValueError for anything else."""
    n, c, h, w = x.shape
    if x.is_contiguous():
        return False
    if x.is_contiguous(memory_format=torch.channels_last):
        return True
    raise ValueError(f"{name} must be contiguous in NCHW or channels-last (NHWC) memory format, "
                     f"got strides {x.stride()}; call .contiguous() first")


def memory_format_of(t: torch.Tensor) -> torch.memory_format:
    """channels_last for a dense NHWC tensor that is not also NCHW-contiguous, else contiguous_format."""
    if not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def as_pair(name: str, value) -> tuple[int, int]:
    """An int or a pair of ints as (h, w); ValueError naming `name` otherwise."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value, value
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return int(value[0]), int(value[1])
    raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")


def eager_function(forward_impl, backward_impl, setup_context, backward):
    """The op whose implementations are `forward_impl` and `backward_impl` as a plain
    torch.autograd.Function, with the setup_context and backward its custom op registers
    (the backward finds the function to run in ctx.backward_op). Eager calls take this path:
    it skips the dispatcher's custom-op machinery, about half the host time of a forward +
    backward, which every layer pays in a step that is not replayed as a CUDA graph. Named
    after the op (alexspec_conv for _conv_forward): the profiler lists each op's forward under
    that name and its backward as alexspec_convBackward."""

    class Eager(torch.autograd.Function):
        @staticmethod
        def forward(ctx, *inputs):
            output = forward_impl(*inputs)
            setup_context(ctx, inputs, output)
            ctx.backward_op, ctx.input_count = backward_impl, len(inputs)
            ctx.set_materialize_grads(False)  # the outputs after the first (argmax, scale) get no gradient
            if isinstance(output, tuple):
                ctx.mark_non_differentiable(*output[1:])
            return output

        @staticmethod
        def backward(ctx, *grads):
            if grads[0] is None:  # no gradient reached the output: none leaves for the inputs
                return (None,) * ctx.input_count
            return backward(ctx, *grads)

    op = forward_impl.__name__.strip("_").removesuffix("_forward")
    return type(f"alexspec_{op}", (Eager,), {}).apply  # a subclass: torch names its backward node after it


def call(op, eager, *args):
    """The custom op `op` where torch.compile or torch.export traces, its `eager` Function elsewhere."""
    return op(*args) if torch.compiler.is_compiling() else eager(*args)


def strides4(t: torch.Tensor) -> tuple[int, int, int, int]:
    """A 4-D tensor's strides, as the kernels take them (NCHW or channels-last alike)."""
    return t.stride(0), t.stride(1), t.stride(2), t.stride(3)


def image_block_grid(n: int, c: int, pixels: int):
    """The launch grid of a kernel whose programs each take one image's BLOCK_C channels by
    BLOCK_P pixels (its autotuned config names the two)."""
    return lambda meta: (n, -(-c // meta["BLOCK_C"]), -(-pixels // meta["BLOCK_P"]))
