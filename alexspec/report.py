"""Reports of an inferred network: a terminal table, markdown, CSV and JSON (the machine interface).

One function gathers the facts (`report_data`); each format only renders them, so every
format says the same thing.
"""
from __future__ import annotations

import csv
import io
import json

from alexspec import ir
from alexspec.network_info import DTYPE_BYTES, LayerInfo, NetworkInfo
from alexspec.words import count, listed

# Neurons per layer as printed in the paper (conv1-5, fc6-8). The first is a known erratum.
PAPER_NEURONS = (253_440, 186_624, 64_896, 64_896, 43_264, 4096, 4096, 1000)
FORMATS = ("table", "markdown", "csv", "json", "dot")


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def human_count(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:.0f}"


def type_text(layer: ir.Layer) -> str:
    text = layer.type
    if getattr(layer, "activation", "none") != "none":
        text += f"+{layer.activation}"
    if getattr(layer, "dropout", 0):
        text += f"+drop{layer.dropout:g}"
    if isinstance(layer, ir.LRN):
        text += f" ({layer.convention})"
    if getattr(layer, "channels", False):
        text += " (channels)"
    return text


def window_of(layer: ir.Layer) -> dict | None:
    if isinstance(layer, (ir.Conv, ir.Pool)):
        window = {"kernel": list(layer.kernel), "stride": list(layer.stride), "padding": list(layer.padding)}
        if getattr(layer, "dilation", (1, 1)) != (1, 1):
            window["dilation"] = list(layer.dilation)
        return window
    return None


def window_text(window: dict | None) -> str:
    if window is None:
        return ""
    text = "/".join(str(v[0]) if v[0] == v[1] else f"{v[0]}x{v[1]}" for k, v in window.items() if k != "dilation")
    if "dilation" in window:
        d = window["dilation"]
        text += f" d{d[0]}" if d[0] == d[1] else f" d{d[0]}x{d[1]}"
    return text


def _tower_role(info: LayerInfo, towers: int, previous_split: bool) -> str:
    if towers == 1:
        return "0"
    if not info.split:
        return "gather" if previous_split else "shared"
    if getattr(info.layer, "towers", "local") == "cross" and previous_split:
        return "cross"
    return "local"


def report_data(info: NetworkInfo, batch: int = 1, dtype: str = "fp32") -> dict:
    """Everything a report shows, as JSON-ready data."""
    net = info.network
    size = DTYPE_BYTES[dtype]
    total = info.total_params or 1
    layers, previous_split = [], False
    for li in info.layers:
        towers = list(range(net.towers))
        layers.append({
            "index": li.index, "name": li.layer.name, "type": li.layer.type, "kind": type_text(li.layer),
            "input_shape": list(li.input_shape), "output_shape": list(li.output_shape),
            **({"window": window_of(li.layer)} if window_of(li.layer) else {}),
            "groups": li.groups, "tower": towers, "towers_role": _tower_role(li, net.towers, previous_split),
            "device": sorted({net.device_of(t) for t in towers}),
            "params": li.params, "weights": li.weights, "biases": li.biases,
            "params_percent": round(100 * li.params / total, 2), "macs": li.macs,
            "output_bytes": li.output_elements * size * batch, "rounded": list(li.rounded),
        })
        previous_split = li.split
    memory = info.memory(batch, dtype)
    return {
        "name": net.name, "file": net.file, "follows": net.follows,
        "input_shape": list(net.input), "output_shape": list(info.output_shape),
        "towers": net.towers, "placement": list(net.placement), "batch": batch, "dtype": dtype,
        "layers": layers,
        "per_tower": [{"tower": t, "device": net.device_of(t), "params": tt.params, "macs": tt.macs,
                       "output_bytes": tt.output_elements * size * batch}
                      for t, tt in enumerate(info.tower_totals())],
        "per_block": [{"name": use.name, "block": use.block, "repeat": use.repeat, "layers": use.count,
                       "output_shape": list(info.layers[use.first + use.count - 1].output_shape),
                       "params": t.params, "params_percent": round(100 * t.params / total, 2), "macs": t.macs,
                       "output_bytes": t.output_elements * size * batch}
                      for use, t in zip(net.block_uses, info.block_totals())],
        "per_device": [{"device": d.label, "params": d.params, "macs": d.macs,
                        "output_bytes": d.output_elements * size * batch} for d in info.device_totals()],
        "total_params": info.total_params, "total_macs": info.total_macs,
        # every weight and bias of these layers learns; frozen layers and running statistics would not
        "trainable_params": info.total_params, "non_trainable_params": 0,
        "memory": {"params_bytes": memory.params, "outputs_bytes": memory.outputs,
                   "training_saved_bytes": memory.training_saved, "training_total_bytes": memory.training_total,
                   "optimizer": memory.optimizer, "optimizer_states": memory.optimizer_states},
        "notes": notes(info),
    }


def unchecked_note(info: NetworkInfo) -> str:
    """That the `expect` of some layers was not held to: written for the spec file's input, not --set's."""
    return (f"{listed(list(info.unchecked), 4)}: `expect` not checked (written for the input the spec file gives, which "
            f"{info.network.input_set} changed)")


def notes(info: NetworkInfo) -> list[str]:
    """Remarks a reader should see: rounded sizes, expectations a new input set aside and, for the
    paper's net, its printed figures."""
    result = [f"{li.layer.name}: {note}" for li in info.layers for note in li.rounded]
    if info.unchecked:
        result.append(unchecked_note(info))
    if info.network.follows == "alexnet-paper":
        neurons = [li.output_elements for li in info.layers if isinstance(li.layer, (ir.Conv, ir.Linear))]
        names = [li.layer.name for li in info.layers if isinstance(li.layer, (ir.Conv, ir.Linear))]
        for name, ours, printed in zip(names, neurons, PAPER_NEURONS):
            if ours != printed:
                result.append(f"{name}: the paper prints {printed:,} neurons; this spec has {ours:,} "
                              + ("(a known erratum in the paper: 96x55x55 = 290,400)" if printed == 253_440
                                 else "(the spec differs from the paper here)"))
    return result


def render(info: NetworkInfo, fmt: str = "table", batch: int = 1, dtype: str = "fp32",
           width: int | None = None) -> str:
    """The report as text in `fmt` (one of FORMATS); a table fits in `width` characters where
    given (a terminal's), leaving out its least needed columns first."""
    if fmt == "dot":
        from alexspec.diagram import dot

        return dot(info)
    data = report_data(info, batch, dtype)
    if fmt == "json":
        return json.dumps(data, indent=2) + "\n"
    if fmt == "csv":
        return _csv(data)
    return _markdown(data) if fmt == "markdown" else _table(data, width)


_COLUMNS = ("#", "layer", "type", "output", "k/s/p", "groups", "tower", "device", "params", "% params",
            "MACs", "output mem")


def _cells(row: dict, batch: int) -> list[str]:
    """A layer's row; its output shape with the batch first, as torchinfo shows it."""
    shape = "x".join(map(str, [batch, *row["output_shape"]])) + ("*" if row["rounded"] else "")
    return [str(row["index"]), row["name"], row["kind"], shape, window_text(row.get("window")),
            str(row["groups"]) if row["groups"] > 1 else "", row["towers_role"], "+".join(row["device"]),
            f"{row['params']:,}" if row["params"] else "", f"{row['params_percent']:.1f}" if row["params"] else "",
            human_count(row["macs"]) if row["macs"] else "", human_bytes(row["output_bytes"])]


def _total_rows(data: dict) -> list[list[str]]:
    """The rows under the layers: each block use, each tower and device where there are several, the total."""
    rows = [["", f"block {b['name']}", f"{b['block']} x{b['repeat']}" if b["repeat"] > 1 else b["block"],
             "x".join(map(str, [data["batch"], *b["output_shape"]])), "", "", "", "", f"{b['params']:,}",
             f"{b['params_percent']:.1f}", human_count(b["macs"]), human_bytes(b["output_bytes"])]
            for b in data["per_block"]]
    if data["towers"] > 1:
        rows += [["", f"tower {t['tower']}", "", "", "", "", str(t["tower"]), t["device"], f"{t['params']:,}", "",
                  human_count(t["macs"]), human_bytes(t["output_bytes"])] for t in data["per_tower"]]
    if len(data["per_device"]) > 1 or data["towers"] > 1:
        rows += [["", f"device {d['device']}", "", "", "", "", "", d["device"], f"{d['params']:,}", "",
                  human_count(d["macs"]), human_bytes(d["output_bytes"])] for d in data["per_device"]]
    out_bytes = sum(r["output_bytes"] for r in data["layers"])
    rows.append(["", "total", "", "x".join(map(str, [data["batch"], *data["output_shape"]])), "", "", "", "",
                 f"{data['total_params']:,}", "100.0", human_count(data["total_macs"]), human_bytes(out_bytes)])
    return rows


def _summary_lines(data: dict) -> list[str]:
    mem = data["memory"]
    lines = [
        f"{data['name']}: input {'x'.join(map(str, data['input_shape']))}, {len(data['layers'])} layers, "
        f"{count(data['towers'], 'tower')} on {', '.join(data['placement'])}",
        f"params {data['total_params']:,} (trainable {data['trainable_params']:,}, non-trainable "
        f"{data['non_trainable_params']:,}; {human_bytes(mem['params_bytes'])} {data['dtype']}); "
        f"{data['total_macs']:,} MACs per image ({human_count(2 * data['total_macs'])} FLOPs)",
        f"batch {data['batch']}, {data['dtype']}: activations saved for backward "
        f"{human_bytes(mem['training_saved_bytes'])}; training total ({mem['optimizer']}) "
        f"{human_bytes(mem['training_total_bytes'])}",
    ]
    return lines + [f"note: {n}" for n in data["notes"]] + (
        ["* output size rounded (see notes)"] if any(r["rounded"] for r in data["layers"]) else [])


_RIGHT_ALIGNED = {"#", "groups", "params", "% params", "MACs", "output mem"}


_LEAST_NEEDED = ("% params", "k/s/p", "groups", "output mem", "device", "tower", "MACs")  # left out first


def _shown(data: dict, leave_out: tuple[str, ...] = ()):
    """The columns a reader needs, and a function keeping those of a row: one tower on one device
    has no tower or device to tell apart; `leave_out` names more to drop."""
    one_place = data["towers"] == 1 and len(data["per_device"]) <= 1
    keep = [i for i, name in enumerate(_COLUMNS)
            if not (one_place and name in ("tower", "device")) and name not in leave_out]
    return [_COLUMNS[i] for i in keep], lambda cells: [cells[i] for i in keep]


def _table(data: dict, width: int | None = None) -> str:
    """A box-drawn table (no terminal library: the report must answer fast) that fits in `width`
    where it can, then the summary."""
    for dropped in range(len(_LEAST_NEEDED) + 1):
        columns, pick = _shown(data, _LEAST_NEEDED[:dropped])
        body = [pick(_cells(row, data["batch"])) for row in data["layers"]]
        totals = [pick(row) for row in _total_rows(data)]
        widths = [max(len(str(c)) for c in column) for column in zip(columns, *body, *totals)]
        if width is None or sum(widths) + 3 * len(widths) + 1 <= width:
            break

    def line(cells) -> str:
        padded = [str(c).rjust(w) if name in _RIGHT_ALIGNED else str(c).ljust(w)
                  for c, w, name in zip(cells, widths, columns)]
        return "│ " + " │ ".join(padded) + " │"

    def rule(left: str, middle: str, right: str) -> str:
        return left + middle.join("─" * (w + 2) for w in widths) + right

    out = [f"{data['name']} ({data['file']})", rule("┌", "┬", "┐"), line(columns), rule("├", "┼", "┤")]
    out += [line(cells) for cells in body]
    out += [rule("├", "┼", "┤")] + [line(cells) for cells in totals] + [rule("└", "┴", "┘")]
    return "\n".join(out + _summary_lines(data)) + "\n"


def _markdown(data: dict) -> str:
    def line(cells):
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    columns, pick = _shown(data)
    out = [f"# {data['name']}", "", line(columns), line(["---"] * len(columns))]
    out += [line(pick(_cells(row, data["batch"]))) for row in data["layers"]]
    out += [line(pick(row)) for row in _total_rows(data)]
    out += [""] + [f"- {text}" for text in _summary_lines(data)]
    return "\n".join(out) + "\n"


def _csv(data: dict) -> str:
    buffer = io.StringIO()
    fields = ["index", "name", "type", "input_shape", "output_shape", "kernel", "stride", "padding", "groups",
              "tower", "device", "params", "macs", "output_bytes", "rounded"]
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in data["layers"]:
        window = row.get("window", {})
        writer.writerow({
            "index": row["index"], "name": row["name"], "type": row["kind"],
            "input_shape": "x".join(map(str, row["input_shape"])),
            "output_shape": "x".join(map(str, row["output_shape"])),
            **{k: "x".join(map(str, window[k])) if k in window else "" for k in ("kernel", "stride", "padding")},
            "groups": row["groups"], "tower": row["towers_role"], "device": "+".join(row["device"]),
            "params": row["params"], "macs": row["macs"], "output_bytes": row["output_bytes"],
            "rounded": "; ".join(row["rounded"])})
    writer.writerow({"name": "total", "type": "total", "input_shape": "x".join(map(str, data["input_shape"])),
                     "output_shape": "x".join(map(str, data["output_shape"])), "params": data["total_params"],
                     "macs": data["total_macs"], "output_bytes": sum(r["output_bytes"] for r in data["layers"])})
    return buffer.getvalue()
