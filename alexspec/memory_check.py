"""Whether a network's parameters fit its devices, checked before any is allocated, and torch's
out-of-memory errors told as what a user can change.

The check is a lower bound, so it never refuses a network that would fit: every parameter lives
somewhere at least once (in fp32 while the module is built; training adds its gradient and the
optimizer's state), so a network whose parameters alone outweigh all its devices' memory cannot
run. Without it torch fails on the first allocation too large, as an internal error, or, where
Linux overcommits memory, the kernel kills the process while the weights are initialised.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

from alexspec import ir
from alexspec.errors import BadInput
from alexspec.network_info import NetworkInfo, optimizer_state
from alexspec.report import human_bytes
from alexspec.words import count

FP32 = 4
_CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def capacity(device: str) -> Optional[int]:
    """Bytes of memory `device` has (the CPU's: physical memory, or the container's limit where
    lower), or None where that cannot be told."""
    if device.startswith("cuda"):
        import torch
        index = int(device.split(":")[1]) if ":" in device else torch.cuda.current_device()
        return torch.cuda.get_device_properties(index).total_memory
    if device != "cpu":
        return None
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None
    limits = [int(text) for text in (_read(path) for path in _CGROUP_LIMITS) if text.isdigit()]
    return min([physical, *limits])


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def _memory_of(devices: Sequence[str]) -> tuple[list[str], Optional[int]]:
    """The distinct devices, and the memory they have together (None where one's cannot be told)."""
    distinct = sorted(set(devices))
    sizes = [capacity(device) for device in distinct]
    return distinct, None if not distinct or None in sizes else sum(sizes)


def check_fits(info: NetworkInfo, devices: Sequence[str], training: bool = False) -> None:
    """Raise BadInput when `info`'s parameters in fp32 (with their gradients and the optimizer's
    state where `training`) need more memory than `devices` (resolved names) have together."""
    distinct, memory = _memory_of(devices)
    if memory is None:
        return
    optimizer, states = optimizer_state(info.network.training or ir.Training()) if training else ("", 0)
    copies = 2 + states if training else 1
    need = copies * info.total_params * FP32
    if need <= memory:
        return
    what = (f"training {info.network.name} needs at least {human_bytes(need)}: {copies} copies of its "
            f"{info.total_params:,} parameters in fp32 (the weights, their gradients"
            f"{' and the optimizer state of ' + optimizer if states else ''})" if training else
            f"{info.network.name}'s {info.total_params:,} parameters take {human_bytes(need)} in fp32")
    largest = sorted((layer for layer in info.layers if layer.params), key=lambda layer: -layer.params)[:3]
    where = ", ".join(f"{layer.layer.name} ({count(layer.params, 'parameter')}, {layer.layer.loc})"
                      for layer in largest)
    raise BadInput(f"{what}, more than the {human_bytes(memory)} of memory {', '.join(distinct)} "
                   f"{'has' if len(distinct) == 1 else 'have'}; most of them are in {where}: give those layers "
                   "fewer outputs (out:) or the network a smaller input")


def batch_warning(info: NetworkInfo, devices: Sequence[str], batch: int, precision: str) -> Optional[str]:
    """A warning where training `batch` images at a time (one process's share) is estimated to need
    more memory than `devices` have (the weights, gradients and optimizer state in fp32, and the
    activations kept for backward in `precision`: `alexspec report`'s training total), with the
    largest batch the estimate allows; None where it fits or the memory cannot be told."""
    distinct, memory = _memory_of(devices)
    if memory is None:
        return None
    _, states = optimizer_state(info.network.training or ir.Training())
    weights = (2 + states) * info.total_params * FP32
    per_image = info.memory(1, precision).training_saved
    need = weights + batch * per_image
    if need <= memory:
        return None
    fits = (memory - weights) // per_image if per_image else 0
    return (f"training {info.network.name} at batch {batch} ({precision}) may run out of memory: it needs about "
            f"{human_bytes(need)} (weights, gradients and optimizer state in fp32, and the activations kept for "
            f"backward, which `alexspec report SPEC --batch {batch} --dtype {precision}` lists), and "
            f"{', '.join(distinct)} {'has' if len(distinct) == 1 else 'have'} {human_bytes(memory)}"
            + (f"; --batch {fits} fits that estimate" if fits > 0 else ""))


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` is torch running out of memory: CUDA's OutOfMemoryError, or the CPU allocator's."""
    return type(exc).__name__ == "OutOfMemoryError" or (
        isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc))
