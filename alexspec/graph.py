"""graph.json: the IR and its inferred facts as stable JSON, for tools and for codegen to read."""
from __future__ import annotations

import dataclasses
import json

from alexspec import ir
from alexspec.network_info import NetworkInfo

GRAPH_VERSION = 1


def _plain(value):
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)
                if f.compare and f.name not in ("file",)}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def layer_dict(layer: ir.Layer) -> dict:
    """One layer's IR fields, with its type first and the spec line it came from."""
    fields = _plain(layer)
    if not fields.get("inputs"):  # the layer before it: a chain's layers read as they did before graphs
        fields.pop("inputs", None)
    if isinstance(layer, (ir.Conv, ir.Linear)):  # written as before these keys, so older checkpoints match
        if fields["activation"] in ("none", "relu"):
            fields["relu"] = fields.pop("activation") == "relu"
        if fields.get("dilation") == [1, 1]:
            fields.pop("dilation")
    if isinstance(layer, ir.Dropout) and not layer.channels:
        fields.pop("channels")
    return {"type": layer.type, **fields, "line": layer.loc.line}


def graph_data(info: NetworkInfo) -> dict:
    """The whole graph: network fields, then each layer's IR with its inferred shapes and counts."""
    net = info.network
    layers = []
    for li in info.layers:
        layers.append({**layer_dict(li.layer), "inferred": {
            "input_shape": list(li.input_shape), "output_shape": list(li.output_shape),
            "weights": li.weights, "biases": li.biases, "macs": li.macs, "groups": li.groups,
            "split": li.split, "rounded": list(li.rounded)}})
    return {
        "graph_version": GRAPH_VERSION, "name": net.name, "spec": net.file, "follows": net.follows,
        "input_shape": list(net.input), "towers": net.towers, "placement": list(net.placement),
        "classes": net.classes, "training": _plain(net.training) if net.training else None,
        "layers": layers, "total_params": info.total_params, "total_macs": info.total_macs,
    }


def graph_json(info: NetworkInfo) -> str:
    """graph.json text: deterministic (same spec, same bytes)."""
    return json.dumps(graph_data(info), indent=2) + "\n"
