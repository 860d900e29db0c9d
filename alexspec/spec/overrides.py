"""`--set training.lr=0.02`: change keys of a loaded spec before it is validated."""
from __future__ import annotations

from alexspec.errors import Loc, Problem, SpecError
from alexspec.spec.loader import Document, load_text


def apply_overrides(doc: Document, assignments: list[str]) -> Document:
    """A copy of `doc` with each KEY.PATH=VALUE applied (VALUE read as YAML: 0.02, true, [1, 2]).

    Paths name mapping keys (`training.schedule.type`) or list items by index
    (`layers.3.out`). Validation afterwards checks the result like any spec.
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
        for part in parts[:-1]:
            if isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node, path = node[int(part)], path + (int(part),)
            elif isinstance(node, dict):
                node, path = node.setdefault(part, {}), path + (part,)
            else:
                problems.append(Problem(where, key, f"'{part}' does not name a part of the spec"))
                break
        else:
            last = parts[-1]
            if isinstance(node, list) and last.isdigit() and int(last) < len(node):
                node[int(last)], path = value, path + (int(last),)
            elif isinstance(node, dict):
                node[last], path = value, path + (last,)
            else:
                problems.append(Problem(where, key, f"'{last}' does not name a part of the spec"))
                continue
            # a problem with what --set wrote points at the --set argument, not at the spec's file
            value_locs = {p: loc for p, loc in value_locs.items() if p[:len(path)] != path}
            value_locs[path] = key_locs[path] = where
    if problems:
        raise SpecError(problems)
    return Document(doc.file, data, value_locs, key_locs)
