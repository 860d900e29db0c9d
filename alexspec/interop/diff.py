"""`alexspec diff A B`: the layers, shapes, parameters and MACs that differ between two specs."""
from __future__ import annotations

import json

from alexspec.graph import layer_dict
from alexspec.infer import LayerInfo, NetworkInfo
from alexspec.words import count

# Not compared: names and spec lines; expectations; and how a spec says things whose effect
# the inferred facts already show (tower annotations and per-tower groups -> effective groups,
# rounding -> output shape).
_IGNORED = {"name", "line", "expect", "towers", "groups", "rounding"}


def _facts(li: LayerInfo) -> dict:
    """What is compared for one layer: what it computes (IR fields, effective groups) and its numbers."""
    fields = {k: v for k, v in layer_dict(li.layer).items() if k not in _IGNORED}
    return {**fields, "output_shape": list(li.output_shape), "params": li.params, "macs": li.macs,
            "groups": li.groups}


def diff_data(a: NetworkInfo, b: NetworkInfo) -> dict:
    """Layers matched by name: changed ones with each differing field, and those only in one spec."""
    layers_a = {li.layer.name: li for li in a.layers}
    layers_b = {li.layer.name: li for li in b.layers}
    changed, only_a, only_b = [], [], []
    for name, li in layers_a.items():
        if name not in layers_b:
            only_a.append({"name": name, **_facts(li)})
            continue
        fa, fb = _facts(li), _facts(layers_b[name])
        fields = {k: [fa.get(k), fb.get(k)] for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)}
        if fields:
            changed.append({"name": name, "fields": fields})
    only_b = [{"name": name, **_facts(li)} for name, li in layers_b.items() if name not in layers_a]
    network = {key: [va, vb] for key, va, vb in (
        ("input_shape", list(a.network.input), list(b.network.input)), ("towers", a.network.towers, b.network.towers),
        ("total_params", a.total_params, b.total_params), ("total_macs", a.total_macs, b.total_macs),
        ("output_shape", list(a.output_shape), list(b.output_shape))) if va != vb}
    return {"a": a.network.file, "b": b.network.file, "network": network, "changed": changed,
            "only_in_a": only_a, "only_in_b": only_b, "same": not (network or changed or only_a or only_b)}


def _value(v) -> str:
    if isinstance(v, list):
        return "x".join(map(str, v)) if all(isinstance(x, int) for x in v) else str(v)
    return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v)


def render(a: NetworkInfo, b: NetworkInfo, fmt: str = "text") -> str:
    """The diff as text (side by side) or JSON."""
    data = diff_data(a, b)
    if fmt == "json":
        return json.dumps(data, indent=2) + "\n"
    if data["same"]:
        return f"{data['a']} and {data['b']} describe the same network\n"
    rows = [("", data["a"], data["b"])]
    rows += [(key, _value(va), _value(vb)) for key, (va, vb) in data["network"].items()]
    for layer in data["changed"]:
        rows += [(f"{layer['name']}.{key}", _value(va), _value(vb)) for key, (va, vb) in layer["fields"].items()]
    rows += [(f"{layer['name']}", f"{layer['type']} {_value(layer['output_shape'])}", "-") for layer in data["only_in_a"]]
    rows += [(f"{layer['name']}", "-", f"{layer['type']} {_value(layer['output_shape'])}") for layer in data["only_in_b"]]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}" for r in rows]
    changed = sorted({layer["name"] for layer in data["changed"]})
    verb = "differs" if len(changed) == 1 else "differ"
    summary = (f"{count(len(changed), 'layer')} {verb} ({', '.join(changed)})" if changed else "no shared layer differs") + \
        (f"; only in A: {', '.join(l['name'] for l in data['only_in_a'])}" if data["only_in_a"] else "") + \
        (f"; only in B: {', '.join(l['name'] for l in data['only_in_b'])}" if data["only_in_b"] else "")
    return "\n".join(lines + [summary]) + "\n"
