"""Check a loaded spec against the JSON Schema, as readable, located problems."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
import re
from typing import TYPE_CHECKING

from alexspec.errors import Problem, did_you_mean, quote
from alexspec.spec.conforms import conforms, pattern_regex
from alexspec.spec.loader import Document
from alexspec.spec.schema import LAYER_TYPES, VERSION, schema
from alexspec.words import count

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import ValidationError


@lru_cache(maxsize=1)
def _validator_class():
    from jsonschema import Draft202012Validator, ValidationError, validators  # only for a spec with problems

    # JSON Schema counts 3.0 as an integer; a spec that writes 3.0 for a channel count is a mistake.
    strict_int = Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _checker, x: isinstance(x, int) and not isinstance(x, bool))

    def pattern(validator, rule, instance, _schema):  # ECMA-262's `$`, as the fast check reads it
        if validator.is_type(instance, "string") and not pattern_regex(rule).search(instance):
            yield ValidationError(f"{instance!r} does not match {rule!r}")

    return validators.extend(Draft202012Validator, validators={"pattern": pattern}, type_checker=strict_int)


@lru_cache(maxsize=None)
def _validator(part: str = "top", layer_type: str = "") -> Draft202012Validator:
    """Validators for parts of the one schema: the top level without the layers' contents, one
    layer of a known type (its `then` branch), or any layer (the full item schema). Checking
    layer by layer with its own branch is what keeps a 10,000-layer spec fast."""
    full = schema()
    items = full["properties"]["layers"]["items"]
    if part == "top":
        top = {**full, "properties": {**full["properties"], "layers": {**full["properties"]["layers"], "items": {}}}}
        return _validator_class()(top)
    if part == "typed":
        branch = next(b["then"] for b in items["allOf"] if b["if"]["properties"]["type"]["const"] == layer_type)
        return _validator_class()(branch)
    return _validator_class()(items)


def _errors(data: dict):
    """(path prefix, error) for every schema violation of a spec mapping."""
    for error in _validator().iter_errors(data):
        yield (), error
    layers = data.get("layers")
    if not isinstance(layers, list):
        return
    for i, layer in enumerate(layers):
        kind = layer.get("type") if isinstance(layer, dict) else None
        known = isinstance(kind, str) and kind in LAYER_TYPES
        validator = _validator("typed", kind) if known else _validator("layer")
        for error in validator.iter_errors(layer):
            yield ("layers", i), error


@dataclass(frozen=True)
class SchemaResult:
    """Schema problems, and which parts of the spec are still sound enough to build and infer.

    `sound_layers` leading layers are well-formed (None: something outside `layers` and
    `training` is broken, so nothing can be built); `training_sound` says the same of `training`.
    Building what is sound lets a user see shape problems together with schema problems.
    """

    problems: list[Problem]
    sound_layers: int | None
    training_sound: bool = True


def check(doc: Document) -> SchemaResult:
    """Every schema violation in `doc`, one problem each, and what is sound despite them."""
    data = doc.data
    if not isinstance(data, dict):
        return SchemaResult([Problem(doc.loc(()), "", f"a spec is a mapping of keys (alexspec, name, input, "
                                     f"layers), not {_describe(data)}", "see specs/alexnet.yaml for the form")], None)
    if "alexspec" in data and data["alexspec"] != VERSION:
        return SchemaResult([Problem(doc.loc(("alexspec",)), "alexspec",
                                     f"unsupported spec version {quote(data['alexspec'])}",
                                     f"this alexspec reads version {VERSION}: write `alexspec: {VERSION}`")], None)
    if conforms(data, schema()):
        return SchemaResult([], len(data["layers"]), True)
    problems: list[Problem] = []
    training_sound = True
    sound: int | None = len(data["layers"]) if isinstance(data.get("layers"), list) else None
    typed_paths = set()
    for prefix, error in sorted(_errors(data), key=lambda pe: pe[1].validator != "type"):
        path = prefix + tuple(error.absolute_path)
        if error.validator != "type" and any(path[:len(t)] == t for t in typed_paths):
            continue  # a value of the wrong type: its range or form says nothing more
        if error.validator == "type":
            typed_paths.add(path)
        problems.extend(_explain(error, doc, prefix))
        if error.validator == "additionalProperties":
            continue  # the IR is built from known keys only: an unknown one does not stop inference
        if len(path) >= 2 and path[0] == "layers" and isinstance(path[1], int):
            sound = min(sound, path[1]) if sound is not None else None
        elif path and path[0] == "training":
            training_sound = False
        else:
            sound = None
    return SchemaResult(_unique(problems), sound, training_sound)


def _unique(problems: list[Problem]) -> list[Problem]:
    seen, result = set(), []
    for p in problems:
        if (p.loc, p.message) not in seen:
            seen.add((p.loc, p.message))
            result.append(p)
    return result


_TYPE_NAMES = {"integer": "an integer", "number": "a number", "string": "text", "array": "a list",
               "object": "a mapping", "boolean": "true or false"}


def _describe(value) -> str:
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"the text {quote(value, 40)}" if value else "empty text"
    if isinstance(value, float):
        return f"the decimal number {value:g}"
    if isinstance(value, int):
        return f"the integer {value}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if value is None:
        return "nothing (null)"
    return f"a {type(value).__name__} ({value})"


def _layer_kind(doc: Document, path: tuple) -> str:
    if len(path) >= 2 and path[0] == "layers" and isinstance(path[1], int):
        layer = doc.data["layers"][path[1]]
        if isinstance(layer, dict) and isinstance(layer.get("type"), str):
            return f"a {layer['type']} layer"
    return "this mapping"


def _explain(error: ValidationError, doc: Document, prefix: tuple = ()) -> list[Problem]:
    path = prefix + tuple(error.absolute_path)
    where, text = doc.loc(path), doc.path_text(path)
    kind, value, sch = error.validator, error.instance, error.schema

    if kind == "additionalProperties":
        allowed = sorted(sch.get("properties", {}))
        extras = [k for k in value if k not in sch.get("properties", {})]
        kind = _layer_kind(doc, path)
        keys = f"{kind.removeprefix('a ').removesuffix(' layer')} keys" if kind.startswith("a ") else "keys here"
        return [Problem(doc.loc(path + (k,), key=True), doc.path_text(path + (k,)), f"unknown key {quote(k)} for {kind}",
                        did_you_mean(k, allowed) or f"{keys} are: {', '.join(allowed)}") for k in extras]
    if kind == "required":
        missing = re.search(r"'([^']+)' is a required property", error.message)
        key = missing.group(1) if missing else str(error.validator_value)
        hint = f"write `alexspec: {VERSION}` as the first line" if key == "alexspec" and path == () else \
            _property_hint(sch, key)
        return [Problem(where, text, f"missing key '{key}'", hint)]
    if kind == "type":
        expected = error.validator_value
        names = " or ".join(_TYPE_NAMES.get(t, t) for t in (expected if isinstance(expected, list) else [expected]))
        expected_types = expected if isinstance(expected, list) else [expected]
        hint = f"write a list, e.g. [{value}]" if expected_types == ["array"] and not isinstance(value, (dict, list)) \
            else _type_hint(value)
        return [Problem(where, text, f"expected {names}, got {_describe(value)}", hint)]
    if kind in ("enum", "const"):
        choices = error.validator_value if kind == "enum" else [error.validator_value]
        shown = ", ".join(str(c) for c in choices)
        return [Problem(where, text, f"{_short(value)} is not one of: {shown}",
                        _foreign_name(value, choices) or did_you_mean(value, [str(c) for c in choices]))]
    if kind in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        word = {"minimum": "at least", "exclusiveMinimum": "greater than",
                "maximum": "at most", "exclusiveMaximum": "less than"}[kind]
        return [Problem(where, text, f"must be {word} {_number(error.validator_value)}, got {_short(value)}")]
    if kind == "pattern":
        if path and path[-1] == "name" or path == ("name",):
            return [Problem(where, text, f"{_short(value)} is not a valid name",
                            "use a letter, then letters, digits or _ (at most 64), e.g. conv1")]
        return [Problem(where, text, f"{_short(value)} is not a device",
                        "use cpu, cuda, cuda:N, mps or auto")]
    if kind in ("minItems", "maxItems"):
        word = "at least" if kind == "minItems" else "at most"
        return [Problem(where, text, f"needs {word} {count(error.validator_value, 'item')}, has {len(value)}")]
    if kind == "maxLength":
        return [Problem(where, text, f"is longer than {error.validator_value} characters")]
    if kind == "anyOf":
        specific = [e for e in error.context if e.validator != "type"]
        if specific:
            return _explain(specific[0], doc, prefix)
        return [Problem(where, text, f"expected {sch.get('x-expected', 'another form')}, got {_describe(value)}",
                        _type_hint(value))]
    return [Problem(where, text, error.message)]


# What other frameworks (torch, Caffe, Keras) call the layer types and activations a spec names
# otherwise, where the spelling is too far from this language's for did_you_mean.
_FOREIGN_NAMES = {
    "conv2d": ("conv",), "convolution": ("conv",), "dense": ("linear",), "fc": ("linear",),
    "innerproduct": ("linear",), "localresponsenorm": ("lrn",), "mul": ("multiply",), "prod": ("multiply",),
    "product": ("multiply",), "eltwise": ("add", "multiply"), "sum": ("add",), "cat": ("concat",),
    "concatenate": ("concat",), "swish": ("silu",), "pooling": ("maxpool", "avgpool"),
    "dropout2d": ("dropout",), "batchnorm1d": ("batchnorm",)}


def _foreign_name(value, choices) -> str:
    """'did you mean ...?' where `value` is another framework's name for one of `choices`, else ''."""
    meant = _FOREIGN_NAMES.get(re.sub(r"[^a-z0-9]", "", value.lower()), ()) if isinstance(value, str) else ()
    if not meant or not set(meant) <= {str(choice) for choice in choices}:
        return ""
    extra = " (with `channels: true`)" if meant == ("dropout",) and "2d" in value.lower() else ""
    return f"did you mean {' or '.join(repr(name) for name in meant)}{extra}?"


def _type_hint(value) -> str:
    """How to fix the commonest wrong-type values: quoted numbers and whole numbers written as decimals."""
    if isinstance(value, str) and re.fullmatch(r"[-+]?[0-9][0-9.eE_+-]*", value.strip()):
        return f"write {value.strip()} without quotes"
    if isinstance(value, float) and value.is_integer():
        return f"write {int(value)} (a whole number, no decimal point or exponent)"
    return ""


def _number(value) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else f"{value:g}"


_short = quote


def _property_hint(sch: dict, key: str) -> str:
    description = sch.get("properties", {}).get(key, {}).get("description", "")
    return f"add `{key}:` ({description.rstrip('.')})" if description else f"add `{key}:`"
