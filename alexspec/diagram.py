"""The network as a Graphviz DOT picture, like the paper's two-tower figure.

Towers stand side by side as clusters; edges that cross between towers are drawn in red; a
branch leaves the layer it reads, a merge (add, multiply, concat) takes an edge from each of its inputs;
each box names the layer, its type and its output shape (per tower where split).
`render_svg` turns the DOT into SVG/PNG when Graphviz's `dot` program is installed.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from alexspec.network_info import NetworkInfo
from alexspec.report import type_text, window_of, window_text


def _shape(shape) -> str:
    return "x".join(map(str, shape))


def dot(info: NetworkInfo) -> str:
    """DOT source for the network."""
    net = info.network
    towers = net.towers
    lines = [f"digraph {net.name} {{",
             '  rankdir=TB; newrank=true; node [shape=box, style="rounded,filled", fillcolor="#eef3fb", '
             'fontname="Helvetica", fontsize=10]; edge [color="#555555"];',
             f'  input [shape=ellipse, fillcolor="#ffffff", label="input\\n{_shape(net.input)}"];']
    nodes_of = {-1: ["input"] * towers}  # layer index (-1: the image) -> the node of each tower's share
    clusters: dict[int, list[str]] = {t: [] for t in range(towers)}
    outside: list[str] = []
    edges: list[str] = []
    for li in info.layers:
        layer = li.layer
        window = window_text(window_of(layer))
        kind = type_text(layer) + (f" {window}" if window else "")
        if li.split and towers > 1:
            per_tower = (li.output_shape[0] // towers, *li.output_shape[1:])
            nodes = [f"{layer.name}_t{t}" for t in range(towers)]
            for t, node in enumerate(nodes):
                clusters[t].append(f'{node} [label="{layer.name}\\n{kind}\\n{_shape(per_tower)}"];')
                for source in li.sources:
                    crosses = info.is_split(source) and getattr(layer, "towers", "local") == "cross"
                    for s, source_node in enumerate(nodes_of[source] if crosses else [nodes_of[source][t]]):
                        style = ' [color="#c0392b", penwidth=1.5]' if crosses and s != t else ""
                        edges.append(f"{source_node} -> {node}{style};")
        else:
            node = layer.name
            nodes = [node] * towers
            outside.append(f'{node} [label="{layer.name}\\n{kind}\\n{_shape(li.output_shape)}"];')
            for source_node in dict.fromkeys(n for source in li.sources for n in nodes_of[source]):
                edges.append(f"{source_node} -> {node};")
        nodes_of[li.index] = nodes
    previous = nodes_of[info.layers[-1].index]
    for t in range(towers):
        if clusters[t]:
            lines.append(f"  subgraph cluster_tower{t} {{")
            lines.append(f'    label="tower {t} ({net.device_of(t)})"; style=rounded; color="#8899aa";')
            lines += [f"    {entry}" for entry in clusters[t]]
            lines.append("  }")
    lines += [f"  {entry}" for entry in outside]
    lines.append(f'  output [shape=ellipse, fillcolor="#ffffff", label="output\\n{_shape(info.output_shape)}"];')
    edges += [f"{source} -> output;" for source in dict.fromkeys(previous)]
    lines += [f"  {edge}" for edge in edges]
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(dot_file: Path, formats=("svg", "png")) -> list[Path]:
    """Render `dot_file` with Graphviz when `dot` is installed; returns the files written."""
    program = shutil.which("dot")
    if program is None:
        return []
    written = []
    for fmt in formats:
        target = dot_file.with_suffix(f".{fmt}")
        result = subprocess.run([program, f"-T{fmt}", str(dot_file), "-o", str(target)], capture_output=True,
                                text=True, timeout=120)
        if result.returncode == 0:
            written.append(target)
    return written
