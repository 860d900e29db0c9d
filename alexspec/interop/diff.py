"""`alexspec diff A B`: the layers, shapes, parameters and MACs that differ between two specs, and
their training recipes' differing keys."""
from __future__ import annotations

from collections.abc import Mapping
import dataclasses
import difflib
import json

from alexspec import ir
from alexspec.graph import layer_dict
from alexspec.network_info import LayerInfo, NetworkInfo
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


def pairs(a: NetworkInfo, b: NetworkInfo) -> tuple[list[tuple[LayerInfo, LayerInfo]], list, list]:
    """(matched layers, layers only in a, layers only in b). Layers are matched by their place in
    the net, not by name: the longest common subsequence of layer types, in order, and of those
    the one that pairs the most equal names, so a spec imported under other names still matches
    the one it came from layer for layer."""
    la, lb = a.layers, b.layers
    if len(la) * len(lb) > 4_000_000:  # very long specs: difflib's blocks, not the exact subsequence
        matcher = difflib.SequenceMatcher(a=[x.layer.type for x in la], b=[x.layer.type for x in lb], autojunk=False)
        index = [(block.a + k, block.b + k) for block in matcher.get_matching_blocks() for k in range(block.size)]
    else:
        index = _common_subsequence(la, lb)
    matched = [(la[i], lb[j]) for i, j in index]
    in_a, in_b = {i for i, _ in index}, {j for _, j in index}
    return matched, [x for i, x in enumerate(la) if i not in in_a], [x for j, x in enumerate(lb) if j not in in_b]


def _common_subsequence(la, lb) -> list[tuple[int, int]]:
    """Index pairs of the longest common subsequence of layer types (ties: the most equal names)."""
    n, m = len(la), len(lb)
    best = [[(0, 0)] * (m + 1) for _ in range(n + 1)]  # (types matched, names matched) of la[i:], lb[j:]
    for i in range(n - 1, -1, -1):
        for j in range(m - 1, -1, -1):
            options = [best[i + 1][j], best[i][j + 1]]
            if la[i].layer.type == lb[j].layer.type:
                after = best[i + 1][j + 1]
                options.append((after[0] + 1, after[1] + (la[i].layer.name == lb[j].layer.name)))
            best[i][j] = max(options)
    found, i, j = [], 0, 0
    while i < n and j < m:
        if la[i].layer.type == lb[j].layer.type and best[i][j] == (
                best[i + 1][j + 1][0] + 1, best[i + 1][j + 1][1] + (la[i].layer.name == lb[j].layer.name)):
            found.append((i, j))
            i, j = i + 1, j + 1
        elif best[i + 1][j] == best[i][j]:
            i += 1
        else:
            j += 1
    return found


def _label(la: LayerInfo, lb: LayerInfo) -> str:
    """A matched pair's name: one name where both use it, `a/b` where they differ."""
    return la.layer.name if la.layer.name == lb.layer.name else f"{la.layer.name}/{lb.layer.name}"


def _recipe(value, prefix: str = "training") -> dict:
    """The training recipe as dotted keys (training.lr, training.schedule.type, ...) -> values, each
    mapping (lr_mult) a plain dict."""
    if dataclasses.is_dataclass(value):
        return {key: item for f in dataclasses.fields(value)
                for key, item in _recipe(getattr(value, f.name), f"{prefix}.{f.name}").items()}
    if isinstance(value, Mapping):
        return {prefix: {key: dict(item) if isinstance(item, Mapping) else item for key, item in value.items()}}
    return {prefix: list(value) if isinstance(value, tuple) else value}


def _training_differences(a: NetworkInfo, b: NetworkInfo, ran: tuple[dict, dict]) -> dict:
    """Each key of the recipes `alexspec train` follows (a spec without `training:` takes the
    defaults; `ran`, a run's own values, e.g. its --epochs, over its spec's) whose values differ:
    key -> [a's, b's]."""
    ra, rb = ({**_recipe(info.network.training or ir.Training()), **values} for info, values in zip((a, b), ran))
    return {key: [ra[key], rb[key]] for key in ra if ra[key] != rb[key]}


def run_values(name: str) -> dict:
    """What the run folder `name` (or the run of its checkpoint) trained with instead of its spec's
    values (--epochs, --batch, --seed: config.json): recipe key -> value; {} for a spec file."""
    from alexspec.spec.bundled import run_folder_holding, run_folder_of
    from alexspec.train.run_folder import RECIPE

    run_dir = run_folder_of(name) or run_folder_holding(name)
    try:
        config = json.loads((run_dir / RECIPE).read_text()) if run_dir else {}
    except (OSError, ValueError):
        return {}
    return {f"training.{key}": config[key] for key in ("epochs", "batch", "seed")
            if isinstance(config, dict) and config.get(key) is not None}


def diff_data(a: NetworkInfo, b: NetworkInfo, ran: tuple[dict, dict] = ({}, {})) -> dict:
    """Layers matched by their place in the net (see `pairs`): changed ones with each differing
    field, and those only in one spec; and the training recipe's differing keys (`ran`: each
    side's run_values)."""
    matched, only_a, only_b = pairs(a, b)
    training = _training_differences(a, b, ran)
    changed = []
    for la, lb in matched:
        fields = _differing(la, lb)
        if fields:
            changed.append({"name": _label(la, lb), "fields": fields})
    network = {key: [va, vb] for key, va, vb in (
        ("input_shape", list(a.network.input), list(b.network.input)), ("towers", a.network.towers, b.network.towers),
        ("total_params", a.total_params, b.total_params), ("total_macs", a.total_macs, b.total_macs),
        ("output_shape", list(a.output_shape), list(b.output_shape))) if va != vb}
    renamed = [[la.layer.name, lb.layer.name] for la, lb in matched if la.layer.name != lb.layer.name]
    moved = _moved(a, b, only_a, only_b)
    only_a = [li for li in only_a if li.layer.name not in moved]
    only_b = [li for li in only_b if li.layer.name not in moved]
    same_network = not (network or changed or moved or only_a or only_b)
    return {"a": a.network.file, "b": b.network.file, "network": network, "changed": changed,
            "moved": list(moved.values()),
            "only_in_a": [{"name": li.layer.name, **_facts(li)} for li in only_a],
            "only_in_b": [{"name": li.layer.name, **_facts(li)} for li in only_b], "renamed": renamed,
            "same_network": same_network, "training": training, "same": same_network and not training}


def _moved(a: NetworkInfo, b: NetworkInfo, only_a: list, only_b: list) -> dict[str, dict]:
    """Layers of one name and type that each spec has, at another place (ZFNet's norm1 after pool1,
    AlexNet's before it): by name, each with the layer before it in A and in B and the fields that differ."""
    in_b = {li.layer.name: li for li in only_b}
    moved = {}
    for la in only_a:
        lb = in_b.get(la.layer.name)
        if lb is None or lb.layer.type != la.layer.type:
            continue
        moved[la.layer.name] = {"name": la.layer.name, "type": la.layer.type,
                                "after": [_before(a, la), _before(b, lb)], "fields": _differing(la, lb)}
    return moved


def _differing(la: LayerInfo, lb: LayerInfo) -> dict:
    """Each compared field (see _facts) whose values differ between two layers: name -> [a's, b's]."""
    fa, fb = _facts(la), _facts(lb)
    return {k: [fa.get(k), fb.get(k)] for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)}


def _before(net: NetworkInfo, li: LayerInfo) -> str | None:
    """The name of the layer just before `li` in its spec (None for the first)."""
    at = next(i for i, x in enumerate(net.layers) if x is li)
    return net.layers[at - 1].layer.name if at else None


def _value(v) -> str:
    """A field's value as a person writes it: 55x55, 1,000, std 0.01 and bias 1, default."""
    if v is None:
        return "default"
    if isinstance(v, dict):
        given = [f"{key} {_value(item)}" for key, item in v.items() if item is not None]
        return ", ".join(given) if given else "default"
    if isinstance(v, list):
        return "x".join(map(str, v)) if all(isinstance(x, int) for x in v) else ", ".join(_value(x) for x in v)
    if isinstance(v, bool):
        return "yes" if v else "no"
    return f"{v:,}" if isinstance(v, int) else str(v)


def render(a: NetworkInfo, b: NetworkInfo, fmt: str = "text", ran: tuple[dict, dict] = ({}, {})) -> str:
    """The diff of `a` and `b` as text (side by side) or JSON."""
    return render_data(diff_data(a, b, ran), fmt)


def render_data(data: dict, fmt: str = "text") -> str:
    """What diff_data found, as text (side by side) or JSON."""
    if fmt == "json":
        return json.dumps(data, indent=2) + "\n"
    renamed = f" (with {count(len(data['renamed']), 'layer')} named otherwise)" if data["renamed"] else ""
    if data["same"]:
        return f"{data['a']} and {data['b']} describe the same network{renamed}, trained alike\n"
    rows = [("", data["a"], data["b"])]
    rows += [(key, _value(va), _value(vb)) for key, (va, vb) in data["network"].items()]
    for layer in data["changed"]:
        rows += [(f"{layer['name']}.{key}", _value(va), _value(vb)) for key, (va, vb) in layer["fields"].items()]
    for layer in data["moved"]:
        rows += [(f"{layer['name']}.after", *(after or "(first)" for after in layer["after"]))]
        rows += [(f"{layer['name']}.{key}", _value(va), _value(vb)) for key, (va, vb) in layer["fields"].items()]
    rows += [(f"{layer['name']}", f"{layer['type']} {_value(layer['output_shape'])}", "-") for layer in data["only_in_a"]]
    rows += [(f"{layer['name']}", "-", f"{layer['type']} {_value(layer['output_shape'])}") for layer in data["only_in_b"]]
    rows += [(key, _value(va), _value(vb)) for key, (va, vb) in data["training"].items()]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}" for r in rows]
    changed = sorted({layer["name"] for layer in data["changed"]})
    verb = "differs" if len(changed) == 1 else "differ"
    if data["same_network"]:
        return "\n".join(lines + [f"the same network{renamed}; their training differs"]) + "\n"
    summary = (f"{count(len(changed), 'layer')} {verb} ({', '.join(changed)})" if changed else "no shared layer differs") + \
        (f"; moved: {', '.join(l['name'] for l in data['moved'])}" if data["moved"] else "") + \
        (f"; only in A: {', '.join(l['name'] for l in data['only_in_a'])}" if data["only_in_a"] else "") + \
        (f"; only in B: {', '.join(l['name'] for l in data['only_in_b'])}" if data["only_in_b"] else "") + \
        ("; their training differs" if data["training"] else "")
    return "\n".join(lines + [summary]) + "\n"
