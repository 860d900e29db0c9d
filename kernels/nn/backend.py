"""Which backend a model's layers use: "triton" (the kernels) or "torch" (the references), and on
which devices; the reasons said in words (what `alexspec` prints) and mistakes as BadInput."""
from __future__ import annotations

import torch

from alexspec.errors import BadInput
from alexspec.kernels.ops.launch import cpu_tensors_taken, triton_available
from alexspec.words import count

BACKENDS = ("triton", "torch")


def resolve_backend(backend: str, devices: list[str] | tuple[str, ...] = ("cpu",)) -> tuple[str, str]:
    """(backend, why) for a requested backend ("auto", "triton" or "torch") and target devices.

    "auto" picks triton on CUDA devices and torch otherwise; the reason says which and why.
    Raises BadInput when triton is asked for where it cannot run.
    """
    on_cuda = all(str(d).startswith("cuda") for d in devices)
    if backend == "auto":
        if on_cuda and triton_available():
            return "triton", "triton kernels on CUDA"
        if not on_cuda:
            mixed = any(str(d).startswith("cuda") for d in devices)
            return "torch", "torch reference ops: the Triton kernels need CUDA" + (
                f" on every device, not {', '.join(devices)}" if mixed else "")
        return "torch", "torch reference ops: triton is not installed"
    if backend == "triton":
        if not triton_available():
            raise BadInput("backend 'triton' needs triton and a CUDA GPU (or TRITON_INTERPRET=1 on CPU); "
                             "use backend 'torch'")
        if not on_cuda and not cpu_tensors_taken():
            raise BadInput(f"backend 'triton' runs on CUDA devices, not {', '.join(devices)}; use backend "
                             "'torch', or set TRITON_INTERPRET=1 to interpret the kernels on CPU (slow)")
        return "triton", "triton kernels" + (" (interpreted on CPU)" if not on_cuda else "")
    if backend == "torch":
        return "torch", "torch reference ops"
    raise BadInput(f"backend must be auto, triton or torch, got {backend!r}")


def resolve_devices(devices) -> list[str]:
    """Device names with "auto" made concrete: "cuda" when a GPU is present, else "cpu".

    Raises BadInput for a name that is no device, and for a CUDA or MPS device on a machine
    without one (say which, and the way out).
    """
    cuda = torch.cuda.is_available()
    resolved = [("cuda" if cuda else "cpu") if str(d) == "auto" else str(d) for d in devices]
    for name in resolved:
        try:
            torch.device(name)
        except RuntimeError:
            raise BadInput(f"{name!r} is not a device; name cpu, cuda, cuda:N, mps or auto") from None
    wanted = [d for d in resolved if d.startswith("cuda")]
    if wanted and not cuda:
        named = f"the devices {', '.join(resolved)} need" if len(resolved) > 1 else f"the device {resolved[0]} needs"
        towers = ", the towers sharing it" if len(resolved) > 1 else ""
        raise BadInput(f"{named} CUDA, which this machine does not have; run on the CPU with --device cpu{towers} "
                       "(in Python: devices=['cpu'])")
    if "mps" in resolved and not torch.backends.mps.is_available():
        raise BadInput("the device mps needs Apple's Metal (MPS), which this machine (or this PyTorch build) does "
                       "not have; choose cpu" + (" or cuda" if cuda else ""))
    if cuda and any(":" in d and int(d.split(":")[1]) >= torch.cuda.device_count() for d in wanted):
        raise BadInput(f"this machine has {count(torch.cuda.device_count(), 'CUDA device')}; {', '.join(wanted)} "
                         "asks for more (give one device to collapse the towers into groups)")
    return resolved


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise BadInput(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    return backend
