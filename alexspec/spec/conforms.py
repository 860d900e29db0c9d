"""A fast yes/no check of a value against the spec schema, without importing jsonschema.

Most specs are valid, and importing jsonschema costs more than the rest of `alexspec report`.
This checker answers only "does it conform?" for the JSON Schema keywords the spec schema uses;
when the answer is no, `schema_check` asks jsonschema for the located, explained errors. A
keyword it does not know raises `UnknownKeyword` (`supported` checks a whole schema), so a
schema change cannot slip past it.
"""
from __future__ import annotations

import re
from functools import lru_cache

ANNOTATIONS = frozenset({"$id", "$schema", "title", "description", "default", "x-expected"})


class UnknownKeyword(ValueError):
    """The schema uses a keyword this checker does not implement."""


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "number": _is_number,
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),  # 3.0 is not an integer here
}


def _equal(a, b) -> bool:
    """JSON equality: true is not 1, 1 is 1.0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if _is_number(a) and _is_number(b):
        return a == b
    return type(a) is type(b) and a == b


@lru_cache(maxsize=None)
def pattern_regex(pattern: str) -> re.Pattern:
    """A JSON Schema `pattern` compiled with its own meaning. Patterns are ECMA-262 regexes, whose
    `$` (without the m flag) matches only at the very end of the text; Python's `$` also matches
    before a final newline, so `^[a-z]+$` would pass "conv1\\n". Each `$` outside a character
    class becomes `\\Z`. Both schema checkers (this one and jsonschema's) search with it."""
    out, escaped, in_class = [], False, False
    for char in pattern:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "[":
            in_class = True
        elif char == "]":
            in_class = False
        elif char == "$" and not in_class:
            char = r"\Z"
        out.append(char)
    return re.compile("".join(out))


def _bounds(check):
    return lambda value, rule, _schema: not _is_number(value) or check(value, rule)


def _on(kind, check):
    """A keyword that constrains only values of one JSON type (the others pass)."""
    return lambda value, rule, schema: not isinstance(value, kind) or check(value, rule, schema)


def _additional(value: dict, rule, schema: dict) -> bool:
    known = schema.get("properties", {})
    extra = [value[key] for key in value if key not in known]
    return all(conforms(v, rule) for v in extra) if isinstance(rule, dict) else rule or not extra


_KEYWORDS = {
    "type": lambda value, rule, _: any(_TYPES[t](value) for t in ([rule] if isinstance(rule, str) else rule)),
    "enum": lambda value, rule, _: any(_equal(value, option) for option in rule),
    "const": lambda value, rule, _: _equal(value, rule),
    "allOf": lambda value, rule, _: all(conforms(value, part) for part in rule),
    "anyOf": lambda value, rule, _: any(conforms(value, part) for part in rule),
    "if": lambda value, rule, schema: not conforms(value, rule) or conforms(value, schema.get("then", {})),
    "then": lambda *_: True,  # checked with its `if`
    "minimum": _bounds(lambda v, r: v >= r),
    "maximum": _bounds(lambda v, r: v <= r),
    "exclusiveMinimum": _bounds(lambda v, r: v > r),
    "exclusiveMaximum": _bounds(lambda v, r: v < r),
    "pattern": _on(str, lambda value, rule, _: pattern_regex(rule).search(value) is not None),
    "maxLength": _on(str, lambda value, rule, _: len(value) <= rule),
    "items": _on(list, lambda value, rule, _: all(conforms(item, rule) for item in value)),
    "minItems": _on(list, lambda value, rule, _: len(value) >= rule),
    "maxItems": _on(list, lambda value, rule, _: len(value) <= rule),
    "required": _on(dict, lambda value, rule, _: all(key in value for key in rule)),
    "properties": _on(dict, lambda value, rule, _: all(conforms(value[k], sub) for k, sub in rule.items()
                                                       if k in value)),
    "additionalProperties": _on(dict, _additional),
    **{name: (lambda *_: True) for name in ANNOTATIONS},
}


def supported(schema) -> bool:
    """Raise UnknownKeyword if `schema` (anywhere inside) uses a keyword `conforms` does not know."""
    if isinstance(schema, dict):
        for name, rule in schema.items():
            if name not in _KEYWORDS:
                raise UnknownKeyword(f"the fast schema check does not implement {name!r}")
            if name in ("properties",):
                for sub in rule.values():
                    supported(sub)
            elif name in ("items", "if", "then", "additionalProperties"):
                supported(rule)
            elif name in ("allOf", "anyOf"):
                for sub in rule:
                    supported(sub)
    return True


def conforms(value, schema: dict | bool) -> bool:
    """Whether `value` is valid against `schema` (the keyword subset the spec schema uses)."""
    if isinstance(schema, bool):
        return schema
    try:
        return all(_KEYWORDS[name](value, rule, schema) for name, rule in schema.items())
    except KeyError as missing:
        raise UnknownKeyword(f"the fast schema check does not implement {missing}") from None
