"""The spec language reference (docs/spec-language.md), generated from the JSON Schema."""
from __future__ import annotations

from alexspec.spec import loader
from alexspec.spec.schema import LAYER_TYPES, VERSION, schema


def _type_text(prop: dict) -> str:
    if "enum" in prop:
        return " \\| ".join(f"`{v}`" for v in prop["enum"])
    if "const" in prop:
        return f"`{prop['const']}`"
    if "anyOf" in prop:
        return "int or [h, w]"
    kind = prop.get("type", "")
    if kind == "array":
        item = prop.get("items", {}).get("type", "value")
        return "list of layers" if item == "object" else f"list of {_type_text({'type': item})}s"
    if kind == "object":
        return "mapping"
    return {"integer": "int", "number": "number", "string": "text", "boolean": "bool"}.get(kind, kind)


def _value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)) and float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def _range_text(prop: dict) -> str:
    inner = prop.get("anyOf", [prop])[0]
    low = inner.get("minimum", inner.get("exclusiveMinimum"))
    high = inner.get("maximum", inner.get("exclusiveMaximum"))
    if low is None and high is None:
        return ""
    left = "(" if "exclusiveMinimum" in inner else "["
    right = ")" if "exclusiveMaximum" in inner else "]"
    return f"{left}{'' if low is None else _value(low)}, {'' if high is None else _value(high)}{right}"


def _table(properties: dict, required: list[str]) -> list[str]:
    lines = ["| key | type | range | default | meaning |", "|---|---|---|---|---|"]
    for key, prop in properties.items():
        default = prop.get("default")
        default_text = "required" if key in required else ("" if default is None else f"`{_value(default)}`")
        lines.append(f"| `{key}` | {_type_text(prop)} | {_range_text(prop)} | {default_text} | "
                     f"{prop.get('description', '').replace('|', '/')} |")
    return lines


def markdown() -> str:
    """The reference as markdown text."""
    root = schema()
    props = root["properties"]
    out = [
        f"# The alexspec spec language, version {VERSION}",
        "",
        "Generated from the JSON Schema (`alexspec schema`) by `alexspec schema --format markdown`; "
        "do not edit by hand. A tutorial is in [tutorial.md](tutorial.md).",
        "",
        "A spec is a YAML mapping of plain values: text, numbers, true/false, null. Numbers follow YAML 1.2 "
        "(`5e-4` is a number, `2001-12-14` is text); aliases, merge keys and tags other than !!str, !!int, "
        "!!float, !!bool and !!null are not accepted; every key is checked, so a misspelt key is an error, "
        "not ignored. A spec is at most "
        f"{loader.MAX_BYTES / 1e6:g} MB, {loader.MAX_NODES:,} values and {loader.MAX_ITEMS:,} items a list, "
        "refused while it is read when it is larger.",
        "",
        "## Top level",
        "",
        *_table({k: v for k, v in props.items() if k not in ("training",)}, root["required"]),
        "",
        "`input`: " + ", ".join(f"`{k}` ({v['description'].rstrip('.')})"
                                for k, v in props["input"]["properties"].items()) + ".",
        "",
        "`init` (top level and per layer): " + ", ".join(
            f"`{k}` ({v['description'].rstrip('.')})" for k, v in props["init"]["properties"].items()) + ".",
        "",
        "## Layers",
        "",
        "Every layer has `name` and `type`, and may have `expect` (asserted `shape`, `params`, `macs`: "
        "a mismatch with inference is an error) and `note` (free text).",
        "",
    ]
    for type_name, spec in LAYER_TYPES.items():
        out += [f"### `{type_name}`", "", spec["description"], ""]
        if spec["properties"]:
            out += _table(spec["properties"], spec.get("required", [])) + [""]
        else:
            out += ["No parameters.", ""]
    training = props["training"]["properties"]
    out += ["## Training", "", props["training"]["description"], "",
            *_table(training, []), ""]
    for key in ("schedule", "augmentation", "eval"):
        out += [f"### `training.{key}`", "", *_table(training[key]["properties"],
                                                      training[key].get("required", [])), ""]
    return "\n".join(out)
