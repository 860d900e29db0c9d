"""One training step, as `alexspec train` runs it and `alexspec bench` times it.

A step sets the gradients to None, runs the forward under bf16 autocast (--precision bf16;
on the weights' bf16 copies where the SGD step writes them: alexspec.train.weight_copies),
the loss, the backward and the optimizer's update. `TrainingStep` runs it eagerly or, where
asked, replays it as one CUDA graph after three ordinary steps (alexspec.train.graphed), and
compiles every Triton kernel it launches at once before the first (alexspec.kernels.tuning.ahead).
"""
from __future__ import annotations

import functools
import time
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from alexspec import ir
from alexspec.train import graphed


def autocast(device_type: str, precision: str):
    """bf16 autocast for --precision bf16, nothing for fp32 (no cast cache: CUDA graphs cannot record one)."""
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bf16", cache_enabled=False)


def loss_function(network: ir.Network, training: ir.Training) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The training loss of `network`'s output: cross-entropy (with the recipe's label smoothing),
    or, for a network that ends with a softmax, the negative log of its probabilities."""
    if isinstance(network.layers[-1], ir.Softmax):
        return lambda out, labels: F.nll_loss(torch.log(out.float().clamp_min(1e-12)), labels)
    return lambda out, labels: F.cross_entropy(out.float(), labels, label_smoothing=training.label_smoothing)


def no_mark(phase: str) -> None:
    """What forward_backward_update calls after each phase when nobody times them."""


class TrainingStep:
    """`step(x, labels) -> loss` (a 0-d tensor on the device): one optimizer step on a batch.

    forward: what runs the batch (the module, its DDP wrapper, its weight copies or a
    torch.compile of it); module: the nn.Module whose parameters `optimizer` updates; with
    `graph`, the step is replayed as a CUDA graph once recorded (one CUDA device only)."""

    def __init__(self, forward: Callable[[torch.Tensor], torch.Tensor], module: torch.nn.Module,
                 optimizer: torch.optim.Optimizer, loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 precision: str, graph: bool = False):
        self.forward, self.module, self.optimizer, self.loss, self.precision = forward, module, optimizer, loss, precision
        self.graph = graphed.GraphedStep(self.forward_backward_update, optimizer) if graph else None

    def __call__(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.graph is not None and self.graph.takes(x, labels):
            return self.graph(x, labels)
        self.optimizer.zero_grad(set_to_none=True)
        return self.forward_backward_update(x, labels)

    @property
    def recorded(self) -> bool:
        """Whether the step now replays a CUDA graph."""
        return self.graph is not None and self.graph.graph is not None

    def forward_backward_update(self, x: torch.Tensor, labels: torch.Tensor,
                                mark: Callable[[str], None] = no_mark) -> torch.Tensor:
        """The loss of a batch, its gradients and the optimizer's update (gradients zeroed
        before); `mark(phase)` after each of forward, backward and optimizer step."""
        with autocast(x.device.type, self.precision):
            out = self.forward(x)
        mark("forward")
        loss = self.loss(out, labels.to(out.device))
        loss.backward()
        mark("backward")
        self.optimizer.step()
        mark("optimizer step")
        return loss.detach()

    def compile_ahead(self, x: torch.Tensor, inference: bool = False) -> Optional[float]:
        """Compile every Triton kernel of a step on batches like `x` (with `inference`, of a
        validation forward too) and of the optimizer, at once, before the first step; the
        seconds it took, None where nothing was compiled (no GPU, the interpreter, the torch
        backend, ALEXSPEC_COMPILE_AHEAD=0)."""
        from alexspec.kernels.tuning import ahead

        also = getattr(self.optimizer, "compile_ahead", None)
        if also is not None:  # the SGD step's kernels (a graphed step reads its rate from the GPU)
            also = functools.partial(also, lr_on_device=self.graph is not None)
        start = time.perf_counter()
        dtype = torch.bfloat16 if self.precision == "bf16" else None
        if ahead.compile_module_ahead(self.module, x, dtype, inference=inference, also=also):
            return round(time.perf_counter() - start, 2)
        return None
