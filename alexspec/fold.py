"""Batchnorm folded into the conv before it, for inference: one conv instead of a conv and a
normalisation pass, the same function with the running statistics.

In eval mode batchnorm is a per-channel affine map, y = (x - mean) / sqrt(var + eps) * gamma + beta;
after a conv (no ReLU of its own between them, nothing else reading the conv) it folds into the
conv's weights and bias: w' = w * s, b' = (b - mean) * s + beta with s = gamma / sqrt(var + eps).
"""
from __future__ import annotations

from alexspec import ir
from alexspec.errors import BadInput


def foldable_pairs(info) -> list[tuple[str, str]]:
    """(conv, batchnorm) names where the batchnorm reads only the conv and nothing else reads it."""
    readers = info.readers()
    pairs = []
    for li in info.layers:
        if isinstance(li.layer, ir.BatchNorm) and len(li.sources) == 1 and li.sources[0] >= 0:
            conv = info.layers[li.sources[0]]
            if isinstance(conv.layer, ir.Conv) and conv.layer.activation == "none" and readers[conv.index] == [li.index]:
                pairs.append((conv.layer.name, li.layer.name))
    return pairs


def fold_batchnorm(built) -> list[tuple[str, str]]:
    """Fold each foldable batchnorm of a built network (alexspec.build) into its conv, in place:
    the batchnorm becomes an identity. The module must be in eval mode (training normalises by
    each batch's statistics, which no conv can hold). Returns the (conv, batchnorm) pairs folded."""
    import torch
    from torch import nn

    module = built.module
    if module.training:
        raise BadInput("fold batchnorm into convs in eval mode (module.eval()): training normalises each batch "
                       "by its own statistics")
    attrs = built.generated.attributes
    pairs = foldable_pairs(built.info)
    with torch.no_grad():
        for conv_name, norm_name in pairs:
            conv, norm = getattr(module, attrs[conv_name]), getattr(module, attrs[norm_name])
            # towers on devices of their own: a conv and a batchnorm per tower
            for conv_part, norm_part in zip(getattr(conv, "parts", [conv]), getattr(norm, "parts", [norm])):
                _fold(conv_part, norm_part)
            setattr(module, attrs[norm_name], nn.Identity())
    return pairs


def _fold(conv, norm) -> None:
    """w' = w * s, b' = (b - mean) * s + beta, with s = gamma / sqrt(var + eps)."""
    import torch
    from torch import nn

    scale = torch.rsqrt(norm.running_var + norm.eps)
    if norm.affine:
        scale = scale * norm.weight
    shift = -norm.running_mean * scale + (norm.bias if norm.affine else 0)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(norm.running_mean)
    conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
    conv.bias = nn.Parameter(bias * scale + shift)
