"""Data parallelism under torchrun: each process (rank) takes its share of every global batch,
DistributedDataParallel averages the gradients, rank 0 writes. A no-op in one process."""
from __future__ import annotations

from typing import Optional

import torch

from alexspec import settings


def backend(device: str) -> str:
    """The process group's backends: gloo for CPU tensors (the stop flag, the validation sums) and, on
    GPUs, NCCL for CUDA ones (the gradients, the losses); NCCL alone refuses CPU tensors."""
    return "cpu:gloo,cuda:nccl" if device.startswith("cuda") else "gloo"


def per_process(devices: Optional[list[str]]) -> Optional[list[str]]:
    """`devices` as one process of a torchrun launch takes them: `cuda` is its own GPU, cuda:LOCAL_RANK."""
    here = settings.current()
    if not devices or here.world_size == 1:
        return devices
    return [f"cuda:{here.local_rank}" if device == "cuda" else device for device in devices]


class Distributed:
    """Rank and world size under torchrun (WORLD_SIZE, RANK); the process group joined on first use."""

    def __init__(self, device: str):
        self.world, self.rank = settings.current().world_size, settings.current().rank
        if self.world > 1 and not torch.distributed.is_initialized():
            torch.distributed.init_process_group(backend(device))

    @property
    def main(self) -> bool:
        return self.rank == 0

    def any(self, flag: bool) -> bool:
        """True when `flag` is set on any rank (so every rank stops together)."""
        if self.world == 1:
            return flag
        value = torch.tensor([1.0 if flag else 0.0])
        torch.distributed.all_reduce(value)
        return bool(value.item())

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """`values` summed over the ranks (a new tensor; `values` itself where there is one rank)."""
        if self.world == 1:
            return values
        total = values.clone()
        torch.distributed.all_reduce(total)
        return total

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """`values` averaged over the ranks."""
        return self.sum(values) / self.world if self.world > 1 else values

    def share_buffers(self, module: torch.nn.Module) -> None:
        """Give every rank rank 0's buffers (batch-norm statistics, which each rank's last training
        step updated from its own share of the batch), as the checkpoint holds them."""
        if self.world > 1:
            for buffer in module.buffers():
                torch.distributed.broadcast(buffer, 0)

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def close(self) -> None:
        """Leave the process group (left to interpreter shutdown, gloo's threads can abort the process)."""
        if self.world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
