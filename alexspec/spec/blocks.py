"""Reusable blocks: a spec's `blocks:` written once, a `type: block` layer where each is used.

    blocks:
      basic:
        params: {out: 64}                    # each parameter with its default
        layers:
          - {name: conv1, type: conv, out: $out, kernel: 3, padding: 1}
          - {name: add, type: add, inputs: [conv1, $input]}
    layers:
      - {name: stage1, type: block, block: basic, repeat: 2, with: {out: 128}}

`expand` writes each use out as plain layers before anything else reads the spec: instance k of
`stage1` names its layers `stage1_k_conv1` (`stage1_conv1` without `repeat`), `$name` takes the
parameter's value, `$input` is what the instance reads (the layer before it), and an `inputs`
name of a layer of the block is that instance's. A problem in an expanded layer is located
where the block writes it (a parameter's value: where the use or the default gives it).
"""
from __future__ import annotations

import copy
import re

from alexspec.errors import Problem, SpecError, did_you_mean, quote
from alexspec.ir import BlockUse
from alexspec.spec.loader import Document

MAX_EXPANDED = 10_000  # layers after expansion, as schema.MAX_LAYERS
_PARAM = re.compile(r"^\$([A-Za-z][A-Za-z0-9_]*)$")


def expand(doc: Document) -> Document:
    """`doc` with every block layer written out (unchanged where it uses none); SpecError for a
    use of an unknown block or parameter."""
    data = doc.data
    if not isinstance(data, dict) or not isinstance(data.get("layers"), list):
        return doc
    if not any(isinstance(layer, dict) and layer.get("type") == "block" for layer in data["layers"]):
        return doc
    expander = _Expander(doc)
    layers = expander.layers()
    if expander.problems:
        raise SpecError(expander.problems)
    expanded = {**{k: v for k, v in data.items()}, "layers": layers}
    return Document(doc.file, expanded, expander.value_locs, expander.key_locs, tuple(expander.uses))


class _Expander:
    def __init__(self, doc: Document):
        self.doc = doc
        blocks = doc.data.get("blocks")
        self.blocks = {k: v for k, v in blocks.items() if isinstance(k, str) and isinstance(v, dict)} \
            if isinstance(blocks, dict) else {}
        self.problems: list[Problem] = []
        self.uses: list[BlockUse] = []  # each block layer, with the span of layers it became
        self.given_at: dict = {}  # of the layer being written: template path -> where its $parameter's value is
        # locations of everything outside `layers` stay; the layers' are written anew
        self.value_locs = {p: loc for p, loc in doc.value_locs.items() if p[:1] != ("layers",)}
        self.key_locs = {p: loc for p, loc in doc.key_locs.items() if p[:1] != ("layers",)}

    def problem(self, path: tuple, message: str, hint: str = "", key: bool = False) -> None:
        found = Problem(self.doc.loc(path, key=key), self.doc.path_text(path), message, hint)
        if found not in self.problems:  # a block's mistake is said once, not once per use
            self.problems.append(found)

    def layers(self) -> list:
        out: list = []
        for i, layer in enumerate(self.doc.data["layers"]):
            if isinstance(layer, dict) and layer.get("type") == "block":
                self.use(i, layer, out)
            else:
                self.place(out, copy.deepcopy(layer), ("layers", i))
            if len(out) > MAX_EXPANDED:
                self.problem(("layers", i), f"the blocks expand to more than {MAX_EXPANDED:,} layers",
                             "use fewer repeats")
                break
        return out

    def use(self, i: int, layer: dict, out: list) -> None:
        """Write out the block layer at layers[i]: each instance's layers, renamed and parameterised."""
        path = ("layers", i)
        block_name, name = layer.get("block"), layer.get("name")
        block = self.blocks.get(block_name) if isinstance(block_name, str) else None
        if not isinstance(name, str) or not name.isidentifier():
            self.problem(path, "a block layer needs a `name`", "e.g. {name: stage1, type: block, block: basic}")
            return
        if block is None or not isinstance(block.get("layers"), list) or not block["layers"]:
            known = list(self.blocks)
            self.problem(path + ("block",) if "block" in layer else path,
                         f"no block named {quote(block_name)} in `blocks:`" if block_name is not None
                         else "a block layer names its block with `block:`",
                         did_you_mean(block_name, known) or (f"blocks: {', '.join(known)}" if known else
                                                             "define it under `blocks:` at the top of the spec"))
            return
        if "inputs" in layer:
            self.problem(path + ("inputs",), "a block layer reads the layer before it", "name other inputs in the "
                         "block's own layers (`$input` is what the block reads)", key=True)
            return
        repeat = layer.get("repeat", 1)
        if not isinstance(repeat, int) or isinstance(repeat, bool) or not 1 <= repeat <= 1000:
            self.problem(path + ("repeat",), f"repeat must be a whole number from 1 to 1000, got {repeat!r}")
            return
        params = block.get("params", {})
        given = layer.get("with", {})
        for key, value, where in (("params", params, ("blocks", block_name, "params")), ("with", given, path + ("with",))):
            if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
                self.problem(where, f"`{key}` maps parameter names to values, got {type(value).__name__}",
                             "e.g. {out: 64, stride: 2}")
                return
        for key in given:
            if key not in params:
                self.problem(path + ("with", key), f"block {quote(block_name)} has no parameter {quote(key)}",
                             did_you_mean(key, list(params)) or f"its parameters: {', '.join(params) or 'none'}",
                             key=True)
        values = {key: (given[key], path + ("with", key)) if key in given else
                  (default, ("blocks", block_name, "params", key)) for key, default in params.items()}
        if len(out) + repeat * len(block["layers"]) > MAX_EXPANDED:
            self.problem(path + ("repeat",) if "repeat" in layer else path, f"{repeat} x {len(block['layers'])} "
                         f"layers of block {quote(block_name)} make more than {MAX_EXPANDED:,} layers", "use fewer repeats")
            return
        self.uses.append(BlockUse(name, block_name, repeat, len(out), repeat * len(block["layers"])))
        for k in range(1, repeat + 1):
            prefix = f"{name}_{k}" if repeat > 1 else name
            local = {b["name"]: f"{prefix}_{b['name']}" for b in block["layers"]
                     if isinstance(b, dict) and isinstance(b.get("name"), str)}
            reads = out[-1]["name"] if out and isinstance(out[-1], dict) and "name" in out[-1] else "input"
            for j, template in enumerate(block["layers"]):
                where = ("blocks", block_name, "layers", j)
                if isinstance(template, dict) and template.get("type") == "block":
                    self.problem(where, "a block's layers cannot be blocks", "write the inner block's layers out")
                    return
                self.given_at: dict = {}
                made = self.instance_layer(template, where, values, local, reads, block_name)
                self.place(out, made, where, self.given_at)

    def instance_layer(self, template, where: tuple, values: dict, local: dict, reads: str, block_name: str):
        """One layer of an instance: $parameters replaced, names and inputs made the instance's."""
        if not isinstance(template, dict):
            return copy.deepcopy(template)
        made = {}
        for key, value in template.items():
            made[key] = self.substitute(value, where + (key,), values, block_name)
        if isinstance(made.get("name"), str):
            made["name"] = local.get(made["name"], made["name"])
        if isinstance(made.get("inputs"), (str, list)):  # anything else: the schema check says what is wrong
            names = made["inputs"] if isinstance(made["inputs"], list) else [made["inputs"]]
            names = [reads if n == "$input" else local.get(n, n) if isinstance(n, str) else n for n in names]
            made["inputs"] = names if isinstance(made["inputs"], list) else names[0]
        return made

    def substitute(self, value, path: tuple, values: dict, block_name: str):
        if isinstance(value, str) and value != "$input" and _PARAM.match(value):
            key = _PARAM.match(value).group(1)
            if key not in values:
                self.problem(path, f"block {quote(block_name)} has no parameter {quote(key)}",
                             did_you_mean(key, list(values)) or "declare it under the block's `params:`")
                return value
            self.given_at[path] = values[key][1]  # where the value was given: the use, or the default
            return copy.deepcopy(values[key][0])
        if isinstance(value, list):
            return [self.substitute(v, path + (i,), values, block_name) for i, v in enumerate(value)]
        if isinstance(value, dict):
            return {k: self.substitute(v, path + (k,), values, block_name) for k, v in value.items()}
        return value

    def place(self, out: list, layer, source: tuple, given_at: dict | None = None) -> None:
        """Append `layer` as layers[len(out)], its locations those of `source`, a parameter's value
        located where it was given (`given_at`: template path -> the path of the given value)."""
        target = ("layers", len(out))
        out.append(layer)
        for table, copied in ((self.doc.value_locs, self.value_locs), (self.doc.key_locs, self.key_locs)):
            for p, loc in table.items():
                if p[:len(source)] == source:
                    copied[target + p[len(source):]] = loc
        for p, given in (given_at or {}).items():
            self.value_locs[target + p[len(source):]] = self.doc.loc(given)
