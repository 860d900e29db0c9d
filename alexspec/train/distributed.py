"""Data parallelism under torchrun: each process (rank) takes its share of every global batch,
DistributedDataParallel averages the gradients, rank 0 writes. A no-op in one process."""
from __future__ import annotations

import torch

from alexspec import settings


class Distributed:
    """Rank and world size under torchrun (WORLD_SIZE, RANK); the process group joined on first use."""

    def __init__(self, device: str):
        self.world, self.rank = settings.current().world_size, settings.current().rank
        if self.world > 1 and not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if device.startswith("cuda") else "gloo")

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

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """`values` averaged over the ranks (each rank's own where there is one)."""
        if self.world == 1:
            return values
        total = values.clone()
        torch.distributed.all_reduce(total)
        return total / self.world

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def close(self) -> None:
        """Leave the process group (left to interpreter shutdown, gloo's threads can abort the process)."""
        if self.world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
