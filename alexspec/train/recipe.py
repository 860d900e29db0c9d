"""The spec's training recipe as torch objects: optimizer with per-layer LR multipliers, LR schedule."""
from __future__ import annotations

import math
from typing import Optional

import torch

from alexspec import ir
from alexspec.train.weight_copies import SGDWithCopies, WeightCopies
from alexspec.words import count


def parameter_groups(module: torch.nn.Module, attributes: dict[str, str], training: ir.Training) -> list[dict]:
    """Optimizer parameter groups: one per (layer, weight|bias) with an lr multiplier, one for the rest."""
    groups, claimed = [], set()
    for layer_name, mults in training.lr_mult.items():
        layer = getattr(module, attributes[layer_name])
        for kind in ("weight", "bias"):
            params = [p for n, p in layer.named_parameters() if n.endswith(kind)]
            if params:
                groups.append({"params": params, "lr_mult": float(mults.get(kind, 1.0)), "name": f"{layer_name}.{kind}"})
                claimed.update(id(p) for p in params)
    rest = [p for p in module.parameters() if id(p) not in claimed]
    return [{"params": rest, "lr_mult": 1.0, "name": "default"}] + groups


def optimizer(module: torch.nn.Module, attributes: dict[str, str], training: ir.Training,
              copies: Optional[WeightCopies] = None, fused: Optional[bool] = None) -> torch.optim.Optimizer:
    """The spec's optimizer over `module`'s parameter groups; with `copies` (SGD only), one that
    also writes the weights' bf16 copies (alexspec.train.weight_copies). `fused`: one fused
    kernel a device (default: where fused_supported), else torch's default (foreach)."""
    groups = parameter_groups(module, attributes, training)
    for group in groups:
        group["lr"] = training.lr * group["lr_mult"]
    if copies is not None:
        if training.optimizer != "sgd":
            raise ValueError(f"bf16 weight copies are written by the SGD step; the spec's optimizer is "
                             f"{training.optimizer}")
        return SGDWithCopies(groups, copies, lr=training.lr, momentum=training.momentum,
                             nesterov=training.nesterov, weight_decay=training.weight_decay)
    fused = fused_supported(module) if fused is None else fused
    if training.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=training.lr, momentum=training.momentum, nesterov=training.nesterov,
                               weight_decay=training.weight_decay, fused=fused)
    cls = torch.optim.AdamW if training.optimizer == "adamw" else torch.optim.Adam
    return cls(groups, lr=training.lr, weight_decay=training.weight_decay, fused=fused)


def fused_supported(module: torch.nn.Module) -> bool:
    """Whether the optimizer can update all parameters in one fused kernel per device: every
    parameter a float tensor on CUDA or CPU (tower parallel over several GPUs included)."""
    params = list(module.parameters())
    return bool(params) and all(p.is_floating_point() and p.device.type in ("cuda", "cpu") for p in params) \
        and len({p.device.type for p in params}) == 1


class Schedule:
    """The learning rate per epoch: warm-up, then constant, step, cosine, or the paper's plateau rule."""

    def __init__(self, training: ir.Training, epochs: int):
        self.spec, self.base, self.epochs = training.schedule, training.lr, epochs
        self.scale = 1.0      # plateau: product of the drops so far
        self.drops = 0
        self.best = math.inf
        self.stale = 0

    def lr(self, epoch: int, fraction: float = 0.0) -> float:
        """The rate at `epoch` (0-based) plus `fraction` of it."""
        s = self.spec
        t = epoch + fraction
        if s.warmup and t < s.warmup:
            return self.base * (t + 1e-3) / s.warmup
        if s.type == "step":
            return self.base * s.factor ** (epoch // s.every)
        if s.type == "cosine":
            span = max(self.epochs - s.warmup, 1)
            return self.base * 0.5 * (1 + math.cos(math.pi * min(t - s.warmup, span) / span))
        if s.type == "plateau":
            return self.base * self.scale
        return self.base

    def notes(self) -> list[str]:
        """What in the schedule does not fit a run of this many epochs: a warm-up as long as the run,
        a step schedule that never steps."""
        s, said = self.spec, []
        if s.warmup >= self.epochs:
            said.append(f"the warm-up (schedule.warmup: {s.warmup}) lasts as long as the run of "
                        f"{count(self.epochs, 'epoch')} or longer: the learning rate only rises, to "
                        f"{self.lr(self.epochs - 1, 1.0):.3g} at the end (training.lr: {self.base:g})")
        if s.type == "step" and s.every >= self.epochs:
            said.append(f"the step schedule multiplies the learning rate by {s.factor:g} every "
                        f"{count(s.every, 'epoch')} and the run has {self.epochs}: it stays at training.lr "
                        f"({self.base:g})")
        return said

    @property
    def spans_the_run(self) -> bool:
        """Whether the rate at an epoch depends on how many epochs the run has (cosine's does)."""
        return self.spec.type == "cosine"

    def observe(self, val_error: float) -> bool:
        """Feed an epoch's validation error (plateau rule); True when the rate was just divided."""
        if self.spec.type != "plateau":
            return False
        if val_error < self.best - 1e-9:
            self.best, self.stale = val_error, 0
            return False
        self.stale += 1
        if self.stale >= self.spec.patience and self.drops < self.spec.times:
            self.scale *= self.spec.factor
            self.drops, self.stale = self.drops + 1, 0
            return True
        return False

    def state_dict(self) -> dict:
        return {"scale": self.scale, "drops": self.drops, "best": self.best, "stale": self.stale}

    def load_state_dict(self, state: dict) -> None:
        self.scale, self.drops, self.best, self.stale = state["scale"], state["drops"], state["best"], state["stale"]


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    """`lr` times each group's multiplier; a rate kept in a tensor (a graphed step's) is filled in place."""
    for group in opt.param_groups:
        value = lr * group.get("lr_mult", 1.0)
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(value)
        else:
            group["lr"] = value
