"""bf16 training with bf16 copies of the weights, written by the optimizer step.

Under autocast every step casts each fp32 conv and fully connected weight to bf16 for the
forward, and each bf16 weight gradient back to fp32 for the optimizer: two passes over the
weights besides the step's own (AlexNet: 61M parameters, about 0.7 GB moved a step for
nothing). Here those layers run on bf16 copies kept beside the fp32 weights (`WeightCopies`,
a callable that runs the module on them); their gradients stay bf16; and SGDWithCopies
updates each fp32 weight from its copy's gradient and writes the new copy in the same pass
(kernels.sgd). The arithmetic is autocast's: the same bf16 operands (the fp32 weight rounded to
nearest) and the same gradient values, upcast exactly. The module's own parameters stay the
fp32 weights: its state_dict, checkpoints and evaluation are as without copies.
"""
from __future__ import annotations

from typing import Iterable

import torch

from alexspec.kernels.ops import sgd
from alexspec.kernels.nn import layers

COPIED_LAYERS = (torch.nn.Conv2d, torch.nn.Linear, layers.Conv2d)  # what autocast runs in bf16


class WeightCopies:
    """Copies in `dtype` of the floating-point weights and biases of `module`'s conv and
    fully connected layers. Call it as the module: `copies(x)` runs the module's forward
    with the copies in place of those parameters (gradients reach the copies)."""

    def __init__(self, module: torch.nn.Module, dtype: torch.dtype = torch.bfloat16):
        self.module, self.dtype = module, dtype
        self.by_name: dict[str, torch.Tensor] = {}
        self.of: dict[torch.Tensor, torch.Tensor] = {}  # fp32 parameter -> its copy
        for layer_name, layer in module.named_modules():
            if not isinstance(layer, COPIED_LAYERS):
                continue
            for name, param in layer.named_parameters(recurse=False):
                if param.is_floating_point() and param.dtype != dtype and param not in self.of:
                    copy = param.detach().to(dtype).requires_grad_(param.requires_grad)  # same memory format
                    self.by_name[f"{layer_name}.{name}" if layer_name else name] = copy
                    self.of[param] = copy

    def __call__(self, *args, **kwargs):
        return torch.func.functional_call(self.module, self.by_name, args, kwargs)

    def __len__(self) -> int:
        return len(self.of)

    @torch.no_grad()
    def refresh(self) -> None:
        """Set every copy from its weight (after the weights were loaded or changed by hand)."""
        for param, copy in self.of.items():
            copy.copy_(param)


class SGDWithCopies(torch.optim.SGD):
    """torch.optim.SGD (dampening 0, minimising) whose step reads the gradient of each copied
    weight from its copy, and writes the copy with the weight: one kernel a weight on a GPU
    (kernels.sgd). Other parameters (say a batch norm's) step from their own gradients. Its
    state (momentum buffers) and state_dict are torch.optim.SGD's, so a checkpoint moves
    between the two."""

    def __init__(self, params: Iterable, copies: WeightCopies, lr=1e-3, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False, maximize: bool = False):
        if dampening or maximize:
            raise ValueError("SGDWithCopies steps without dampening and minimises; use torch.optim.SGD for those")
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov,
                         foreach=False)
        self.copies = copies

    def zero_grad(self, set_to_none: bool = True) -> None:
        super().zero_grad(set_to_none)
        for copy in self.copies.of.values():
            if set_to_none:
                copy.grad = None
            elif copy.grad is not None:
                copy.grad.zero_()

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                copy = self.copies.of.get(param)
                grad = (copy if copy is not None else param).grad
                if grad is None:
                    continue
                sgd.sgd_step_(param, grad, self._momentum_buffer(param, group), copy, group["lr"],
                              group["weight_decay"], group["momentum"], group["nesterov"])
        return loss

    def compile_ahead(self, lr_on_device: bool = False) -> None:
        """Start compiling the kernels of its steps (within alexspec.kernels.tuning.ahead.compile_ahead()):
        with the rate as a number, and also read from the device with `lr_on_device` (what a
        step recorded as a CUDA graph does after ordinary warm-up steps)."""
        for group in self.param_groups:
            for param in group["params"]:
                copy = self.copies.of.get(param)
                for in_tensor in (False, True) if lr_on_device else (False,):
                    sgd.compile_ahead(param, copy.dtype if copy is not None else param.dtype, copy, in_tensor,
                                      bool(group["momentum"]), group["nesterov"])

    def _momentum_buffer(self, param: torch.Tensor, group: dict):
        """The parameter's momentum buffer (zeros at first: the first step's is then the
        gradient, as torch.optim.SGD's), None without momentum."""
        if not group["momentum"]:
            return None
        state = self.state[param]
        if state.get("momentum_buffer") is None:
            state["momentum_buffer"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        return state["momentum_buffer"]
