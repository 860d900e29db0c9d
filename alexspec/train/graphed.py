"""The training step replayed as one CUDA graph: forward, loss, backward and optimizer step
launched by a single call, so the GPU never waits for Python to launch its next kernel.

The first steps run as usual on a side stream (Triton autotunes, cuDNN picks its algorithms,
the optimizer makes its momentum buffers); then one step is recorded and replayed from then
on, each batch copied into the recorded input. The learning rate lives in a tensor on the
device (`recipe.set_lr` fills it), so schedules work unchanged; dropout draws fresh masks on
every replay from the seed set before it. A batch of another shape (a short last batch) runs
as usual. One CUDA device in one process only: towers over several GPUs and DDP run eagerly.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

MODES = ("auto", "on", "off")


def unavailable_reason(devices: set[torch.device], world: int) -> Optional[str]:
    """Why the step cannot be a CUDA graph here (None: it can)."""
    if not torch.cuda.is_available() or any(d.type != "cuda" for d in devices):
        return "the model is not on a CUDA device"
    if len(devices) > 1:
        return f"the model spans {len(devices)} devices (towers in parallel)"
    if world > 1:
        return "the run is data parallel (one graph per process is not supported yet)"
    return None


def lr_on_device(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Each parameter group's learning rate as a 0-d tensor on `device`, which a recorded
    optimizer step reads at every replay."""
    for group in optimizer.param_groups:
        group["lr"] = torch.tensor(float(group["lr"]), device=device)


class GraphedStep:
    """`step(x, labels) -> loss` (a 0-d tensor), recorded after `warmup` ordinary steps.

    `step` must read only x, labels, the module's parameters and the optimizer's state, and
    zero nothing itself: gradients are set to None before the warm-up steps and the recording.
    """

    def __init__(self, step: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 optimizer: torch.optim.Optimizer, warmup: int = 3):
        self.step, self.optimizer, self.warmup = step, optimizer, warmup
        self.steps_run = 0
        self.graph: Optional[torch.cuda.CUDAGraph] = None
        self.x = self.labels = self.loss = None
        self.stream = torch.cuda.Stream()

    def takes(self, x: torch.Tensor, labels: torch.Tensor) -> bool:
        """Whether this batch can use the graph (before the recording: any batch)."""
        return self.graph is None or (x.shape == self.x.shape and x.stride() == self.x.stride()
                                      and labels.shape == self.labels.shape)

    def __call__(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.graph is not None:
            self.x.copy_(x)
            self.labels.copy_(labels)
            self.graph.replay()
            return self.loss
        if self.steps_run < self.warmup:
            self.steps_run += 1
            return self._on_side_stream(lambda: self._eager(x, labels))
        self.x, self.labels = x.clone(), labels.clone()
        lr_on_device(self.optimizer, x.device)
        self.optimizer.zero_grad(set_to_none=True)  # gradients come from the graph's own memory
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):  # the data threads go on meanwhile
            self.loss = self.step(self.x, self.labels)
        self.graph = graph
        graph.replay()  # recording ran nothing: this is the step
        return self.loss

    def _eager(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        return self.step(x, labels)

    def _on_side_stream(self, run: Callable[[], torch.Tensor]) -> torch.Tensor:
        """As torch.cuda.graphs asks of warm-up work: on a side stream, the main stream waiting for it."""
        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.stream):
            out = run()
        torch.cuda.current_stream().wait_stream(self.stream)
        return out
