"""Which neighbouring layers the generated module runs together (codegen's speed levers).

- A conv's fused ReLU moves into the layer after it when that layer can apply it for free:
  a max pool (max_pool(relu(x)) = relu(max_pool(x)), its mask folded into the pool's gather),
  an LRN or a fused LRN + pool (ReLU on load, mask in its backward). The conv then skips the
  elementwise ReLU-mask pass over its output in backward, and keeps no copy of its output for it.
- Opt-in (`lrn_pool=True`): LRN directly followed by max pooling runs as one kernel
  (`lrn_max_pool`), the LRN output never reaching memory. Off by default: measured on a GPU,
  the fused kernel was slower than the LRN and pool kernels one after the other (the figures
  are in bench/results/ and the README's Speed section).
- Opt-in (`conv_lrn=True`): a conv + ReLU directly followed by an LRN whose channel groups each
  lie in one of the conv's groups and hold at most 128 channels (AlexNet's conv1 + norm1 and
  conv2 + norm2: a tower's 48 and 128) runs as one kernel (`conv_lrn`): the LRN in the conv's
  epilogue. Off until a GPU has measured it. Such an LRN is not also fused with its pool.

The layers keep their attributes and parameters, so a fused and an unfused build share
checkpoints; `fuse=False` gives a module whose every layer runs on its own.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from alexspec import ir
from alexspec.network_info import LayerInfo, NetworkInfo

WIDEST_LRN_GROUP = 128  # the widest tile of the conv + LRN kernel's epilogue (kernels.ops.conv_lrn)


@dataclass(frozen=True)
class FusionPlan:
    """relu_moved: conv name -> the layer that applies its ReLU; lrn_pool: LRN name -> the pool run
    with it; conv_lrn: conv name -> the LRN run in its epilogue."""

    relu_moved: dict[str, str] = field(default_factory=dict)
    lrn_pool: dict[str, str] = field(default_factory=dict)
    conv_lrn: dict[str, str] = field(default_factory=dict)

    def describe(self) -> list[str]:
        """One line per fusion, for reports and the generated module's docstring."""
        return ([f"{conv} + {lrn}: one conv + ReLU + LRN kernel" for conv, lrn in self.conv_lrn.items()]
                + [f"{lrn} + {pool}: one LRN + max-pool kernel" for lrn, pool in self.lrn_pool.items()]
                + [f"{conv}: ReLU applied by {by}" for conv, by in self.relu_moved.items()])


def plan(info: NetworkInfo, enabled: bool = True, lrn_pool: bool = False, conv_lrn: bool = False) -> FusionPlan:
    """The fusions for a sequential network (none when not `enabled`; LRN + pool kernels only
    with `lrn_pool`, conv + LRN kernels only with `conv_lrn`)."""
    if not enabled:
        return FusionPlan()
    readers = info.readers()
    # only a layer that alone reads the one before it may run with it (a branch sees the plain output)
    pairs = [(a, b) for a, b in zip(info.layers, info.layers[1:])
             if b.sources == (a.index,) and readers.get(a.index) == [b.index]]
    conv_lrns = {a.layer.name: b.layer.name for a, b in pairs if conv_lrn and lrn_in_epilogue(a, b)}
    in_epilogue = set(conv_lrns.values())
    lrn_pools = {a.layer.name: b.layer.name for a, b in pairs if lrn_pool and isinstance(a.layer, ir.LRN)
                 and isinstance(b.layer, ir.MaxPool) and a.layer.name not in in_epilogue}
    relu_moved = {}
    for a, b in pairs:
        if (isinstance(a.layer, ir.Conv) and a.layer.relu and isinstance(b.layer, (ir.MaxPool, ir.LRN))
                and a.layer.name not in conv_lrns):
            relu_moved[a.layer.name] = b.layer.name
    return FusionPlan(relu_moved, lrn_pools, conv_lrns)


def lrn_in_epilogue(conv: LayerInfo, norm: LayerInfo) -> bool:
    """Whether `norm` can run in the epilogue of `conv` (a conv + ReLU, then an LRN): each LRN
    group inside one conv group, of at most WIDEST_LRN_GROUP channels, and a conv the Triton
    kernel takes (no dilation)."""
    if not (isinstance(conv.layer, ir.Conv) and conv.layer.relu and isinstance(norm.layer, ir.LRN)):
        return False
    channels = norm.output_shape[0]
    return (conv.layer.dilation == (1, 1) and norm.groups % conv.groups == 0
            and channels // norm.groups <= WIDEST_LRN_GROUP)
