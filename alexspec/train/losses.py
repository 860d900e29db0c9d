"""Training losses read from the device a window of steps at a time."""
from __future__ import annotations

import torch


class PendingLosses:
    """Each step's loss (a 0-d tensor) stays on its device until read(): one host sync for a
    window of steps instead of one per step, so the GPU can queue the next steps while Python
    prepares them, rather than idle while it waits."""

    def __init__(self):
        self.steps: list[tuple[int, float]] = []  # (step, learning rate) of each loss kept
        self.losses: list[torch.Tensor] = []

    def __len__(self) -> int:
        return len(self.losses)

    def add(self, step: int, lr: float, loss: torch.Tensor) -> None:
        """Keep `loss` of `step` (copied: a replayed CUDA graph rewrites its output in place)."""
        self.steps.append((step, lr))
        self.losses.append(loss.detach().reshape(()).clone())

    def read(self, combine=None) -> list[tuple[int, float, float]]:
        """(step, learning rate, loss) of each step kept since the last read, oldest first; the
        losses first passed through `combine` (a stacked tensor in, one of its shape out) where given."""
        if not self.losses:
            return []
        stacked = torch.stack(self.losses)
        values = (combine(stacked) if combine is not None else stacked).tolist()
        read = [(step, lr, value) for (step, lr), value in zip(self.steps, values)]
        self.steps, self.losses = [], []
        return read
