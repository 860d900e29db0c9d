"""`--set training.lr=0.02`: change keys of a loaded spec before it is validated."""
from __future__ import annotations

from alexspec.errors import Loc, Problem, SpecError
from alexspec.spec.loader import Document, load_text


def apply_overrides(doc: Document, assignments: list[str]) -> Document:
    """A copy of `doc` with each KEY.PATH=VALUE applied (VALUE read as YAML: 0.02, true, [1, 2]).

    Paths name mapping keys (`training.schedule.type`, a key not there yet is added) and list
    items by their `name` or by index (`layers.conv1.stride`, `layers.0.stride`). Validation
    afterwards checks the result like any spec; a problem with what --set wrote, or with a key
    it added, points at the --set argument.
    """
    import copy

    data = copy.deepcopy(doc.data)
    value_locs, key_locs = dict(doc.value_locs), dict(doc.key_locs)
    problems = []
    for text in assignments:
        where = Loc(f"--set {text}", 1, 1)
        key, sep, raw = text.partition("=")
        if not sep or not key.strip():
            problems.append(Problem(where, "", "expected KEY.PATH=VALUE", "e.g. --set training.lr=0.02"))
            continue
        try:
            value = load_text(f"v: {raw}" if raw.strip() else "v: ''", "--set").data["v"]
        except SpecError:
            problems.append(Problem(where, key, f"cannot read the value {raw!r}", "quote text values"))
            continue
        parts = key.strip().split(".")
        node, path = data, ()
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            if isinstance(node, list):
                index = _item(node, part)
                if index is None:
                    problems.append(Problem(where, key, f"'{part}' names no item of {'.'.join(parts[:depth])}",
                                            _items_hint(node)))
                    break
                path += (index,)
                if last:
                    node[index] = value
                else:
                    node = node[index]
            elif isinstance(node, dict):
                path += (part,)
                if last:
                    node[part] = value
                else:
                    if part not in node:  # added by --set: its problems are the argument's
                        node[part] = {}
                        key_locs[path] = value_locs[path] = where
                    node = node[part]
            else:
                problems.append(Problem(where, key, f"{'.'.join(parts[:depth])} is a value, not a mapping or "
                                                    f"a list, so it has no '{part}'"))
                break
        else:
            # a problem with what --set wrote points at the --set argument, not at the spec's file
            value_locs = {p: loc for p, loc in value_locs.items() if p[:len(path)] != path}
            value_locs[path] = key_locs[path] = where
    if problems:
        raise SpecError(problems)
    return Document(doc.file, data, value_locs, key_locs)


def _item(items: list, part: str) -> int | None:
    """The index of the item `part` names: its `name` (layers.conv1), else its index (layers.0)."""
    for index, item in enumerate(items):
        if isinstance(item, dict) and item.get("name") == part:
            return index
    if part.isdigit() and int(part) < len(items):
        return int(part)
    return None


def _items_hint(items: list) -> str:
    """What names the items of a list: their names where they have them, and their indices."""
    names = [str(item["name"]) for item in items if isinstance(item, dict) and isinstance(item.get("name"), str)]
    shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
    span = f"0 to {len(items) - 1}" if items else "none: the list is empty"
    return f"name one of {shown}, or give an index ({span})" if names else f"give an index ({span})"
