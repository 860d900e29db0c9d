"""Which neighbouring layers the generated module runs together (codegen's speed levers).

- A conv's fused ReLU moves into the layer after it when that layer can apply it for free:
  a max pool (max_pool(relu(x)) = relu(max_pool(x)), its mask folded into the pool's gather),
  an LRN or a fused LRN + pool (ReLU on load, mask in its backward). The conv then skips the
  elementwise ReLU-mask pass over its output in backward, and keeps no copy of its output for it.
- Opt-in (`lrn_pool=True`): LRN directly followed by max pooling runs as one kernel
  (`lrn_max_pool`), the LRN output never reaching memory. Off by default: measured on a GPU,
  the fused kernel was slower than the LRN and pool kernels one after the other (the figures
  are in bench/results/ and the README's Speed section).

The layers keep their attributes and parameters, so a fused and an unfused build share
checkpoints; `fuse=False` gives a module whose every layer runs on its own.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from alexspec import ir
from alexspec.network_info import NetworkInfo


@dataclass(frozen=True)
class FusionPlan:
    """relu_moved: conv name -> the layer that applies its ReLU; lrn_pool: LRN name -> the pool run with it."""

    relu_moved: dict[str, str] = field(default_factory=dict)
    lrn_pool: dict[str, str] = field(default_factory=dict)

    def describe(self) -> list[str]:
        """One line per fusion, for reports and the generated module's docstring."""
        return ([f"{lrn} + {pool}: one LRN + max-pool kernel" for lrn, pool in self.lrn_pool.items()]
                + [f"{conv}: ReLU applied by {by}" for conv, by in self.relu_moved.items()])


def plan(info: NetworkInfo, enabled: bool = True, lrn_pool: bool = False) -> FusionPlan:
    """The fusions for a sequential network (none when not `enabled`; LRN + pool kernels only
    with `lrn_pool`)."""
    if not enabled:
        return FusionPlan()
    readers = info.readers()
    # only a layer that alone reads the one before it may run with it (a branch sees the plain output)
    pairs = [(a.layer, b.layer) for a, b in zip(info.layers, info.layers[1:])
             if b.sources == (a.index,) and readers.get(a.index) == [b.index]]
    lrn_pools = {a.name: b.name for a, b in pairs if lrn_pool and isinstance(a, ir.LRN) and isinstance(b, ir.MaxPool)}
    relu_moved = {}
    for a, b in pairs:
        if isinstance(a, ir.Conv) and a.relu and isinstance(b, (ir.MaxPool, ir.LRN)):
            relu_moved[a.name] = b.name
    return FusionPlan(relu_moved, lrn_pools)
