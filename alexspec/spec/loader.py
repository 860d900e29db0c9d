"""Load YAML spec text into plain Python values, remembering where every value came from.

Only YAML's safe constructs are accepted (mappings, sequences, plain scalars: text, numbers,
true/false, null). Aliases, merge keys and other tags are refused (an alias bomb cannot
expand), duplicate keys are an error (PyYAML would silently keep the last). Values are built
straight from the parser's events, so the limits (bytes, values, list items, depth) refuse
an oversized spec while it is read, before it costs time or memory. Numbers follow YAML 1.2,
so `5e-4` is a float, as a person means it (PyYAML's YAML 1.1 reads a string), and
`2001-12-14` is text, not a date.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
import math
import re
from typing import Any

import yaml

from alexspec.errors import Loc, Problem, SpecError, did_you_mean, quote
from alexspec.spec.schema import MAX_LAYERS

MAX_BYTES = 4_000_000
MAX_NODES = 150_000  # values and keys: 10,000 layers of 6 keys each, with room; read in well under a second
MAX_ITEMS = MAX_LAYERS  # no list in a spec has more items than `layers` may
MAX_DEPTH = 32
MAX_INT = 2 ** 64  # no spec value comes near; past Python's 4,300 digits an int cannot even be printed

_SCALAR_TAGS = {f"tag:yaml.org,2002:{name}": name for name in ("str", "int", "float", "bool", "null")}
_KIND_WORDS = {"str": "text", "int": "an integer", "float": "a number", "bool": "true or false", "null": "null"}

Path_ = tuple  # a path into the document: ("layers", 3, "kernel")


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml's parser when PyYAML has it
    """A safe loader with YAML 1.2 floats and no timestamps. Only its parser and scalar
    constructors are used: the builder below makes values from the events itself."""


_Loader.yaml_implicit_resolvers = {  # YAML 1.2 has no timestamps: 2001-12-14 is text
    key: [r for r in resolvers if r[0] != "tag:yaml.org,2002:timestamp"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


@dataclass(frozen=True)
class Document:
    """A loaded spec: plain data plus the location of every value and mapping key."""

    file: str
    data: Any
    value_locs: dict = field(default_factory=dict, repr=False)
    key_locs: dict = field(default_factory=dict, repr=False)
    block_uses: tuple = field(default=(), repr=False)  # ir.BlockUse of each block written out (spec.blocks)

    def loc(self, path: Path_, key: bool = False) -> Loc:
        """Where `path` is written (its key when `key` is set), else its nearest parent."""
        path = tuple(path)
        if key and path in self.key_locs:
            return self.key_locs[path]
        while path not in self.value_locs and path:
            path = path[:-1]
        return self.value_locs.get(path, Loc(self.file, 1, 1))

    def path_text(self, path: Path_) -> str:
        """A readable path: ("layers", 3, "groups") -> "layers[3].conv2.groups"."""
        parts: list = list(path)
        if len(parts) >= 2 and parts[0] == "layers" and isinstance(parts[1], int):
            layers = self.data.get("layers") if isinstance(self.data, dict) else None
            if isinstance(layers, list) and parts[1] < len(layers) and isinstance(layers[parts[1]], dict):
                name = layers[parts[1]].get("name")
                if isinstance(name, str) and name.isidentifier():
                    parts.insert(2, name)
        return dotted(tuple(parts))


def load_file(path: str | Path) -> Document:
    """Read and load a spec file, or the bundled spec of that name (`alexnet`). Raises SpecError
    for a missing, unreadable or bad file."""
    from alexspec.spec.bundled import CHECKPOINTS, RUN_SPEC, bundled_specs, resolve

    path = name = resolve(path)
    try:
        size = Path(path).stat().st_size
        if size > MAX_BYTES:
            raise SpecError([Problem(Loc(name, 1, 1), "", f"the file is {size:,} bytes; specs are limited to "
                                     f"{MAX_BYTES:,}", "is it a spec? a spec is a page of YAML")])
        with open(path, "rb") as handle:
            raw = handle.read(MAX_BYTES + 1)  # a file that grew since stat() is still cut off
    except IsADirectoryError:
        raise SpecError([Problem(Loc(name, 1, 1), "", "is a folder, not a spec file",
                                 f"give a spec file, or a run folder of `alexspec train` (it holds {RUN_SPEC})")]) from None
    except FileNotFoundError:
        meant = did_you_mean(name, bundled_specs()) if "/" not in name and not name.endswith((".yaml", ".yml")) else ""
        raise SpecError([Problem(Loc(name, 1, 1), "", "no such file", f"{meant} (a bundled spec)" if meant else
                                 f"check the path, or name a bundled spec: {', '.join(bundled_specs())}")]) from None
    except OSError as exc:
        raise SpecError([Problem(Loc(name, 1, 1), "", f"cannot read the file ({exc.strerror or exc})")]) from None
    if len(raw) > MAX_BYTES:
        raise SpecError([Problem(Loc(name, 1, 1), "", f"the file is over {MAX_BYTES:,} bytes; specs are limited "
                                 f"to {MAX_BYTES:,}", "is it a spec? a spec is a page of YAML")])
    if raw.startswith(b"PK\x03\x04"):
        raise SpecError([Problem(Loc(name, 1, 1), "", "a zip archive (a checkpoint? a .pt2 export?), not a spec",
                                 f"give the spec it was made from; a checkpoint in a run folder "
                                 f"(RUN/{CHECKPOINTS}/*.pt) stands for the spec its run trained")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise SpecError([Problem(Loc(name, line, 1), "", "the file is not UTF-8 text",
                                 "save it as UTF-8")]) from None
    doc = load_text(text, name)
    return _as_run(doc, Path(path).parent) if Path(path).name == RUN_SPEC else doc


def _as_run(doc: Document, run_dir: Path) -> Document:
    """A run folder's spec with the `--set input...` its run recorded set again (the values are in it
    already), so that it loads as it did in the run: expectations written for another input set aside."""
    import json

    from alexspec.spec.bundled import RECIPE
    from alexspec.spec.overrides import apply_overrides

    try:
        overrides = json.loads((run_dir / RECIPE).read_text(encoding="utf-8")).get("overrides") or []
    except (OSError, ValueError, AttributeError):
        return doc
    keys = [(text, text.split("=", 1)[0].strip()) for text in overrides if isinstance(text, str)]
    inputs = [text for text, key in keys if key == "input" or key.startswith("input.")]
    return apply_overrides(doc, inputs) if inputs else doc


def load_text(text: str, file: str = "<spec>") -> Document:
    """Load spec text. Raises SpecError with the location of the first YAML syntax problem."""
    if len(text) > MAX_BYTES:
        raise SpecError([Problem(Loc(file, 1, 1), "", f"the spec is longer than {MAX_BYTES:,} characters")])
    loader = None
    try:
        loader = _Loader(text)
        builder = _Builder(file, loader)
        data = builder.document()
        if builder.problems:
            raise SpecError(builder.problems)
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        col = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        raise SpecError([Problem(Loc(file, line, col), "", f"the character #x{exc.character:04x} is not allowed "
                                 "in YAML", "remove it; specs are plain text")]) from None
    except yaml.MarkedYAMLError as exc:
        raise SpecError([_yaml_problem(exc, file, text)]) from None
    except yaml.YAMLError as exc:
        raise SpecError([Problem(Loc(file, 1, 1), "", f"not valid YAML: {exc}")]) from None
    except RecursionError:
        raise SpecError([Problem(Loc(file, 1, 1), "", "the YAML is nested too deeply")]) from None
    finally:
        if loader is not None:
            loader.dispose()
    return Document(file, data, builder.value_locs, builder.key_locs)


def dotted(path: Path_) -> str:
    """("layers", 3, "groups") -> "layers[3].groups"."""
    def part(i: int, p) -> str:
        if isinstance(p, int):
            return f"[{p}]"
        text = p if p.isidentifier() else quote(p, 30)
        return f".{text}" if i else text
    return "".join(part(i, p) for i, p in enumerate(path))


def _mark_loc(file: str, mark) -> Loc:
    return Loc(file, mark.line + 1, mark.column + 1) if mark else Loc(file, 1, 1)


def _yaml_problem(exc: yaml.MarkedYAMLError, file: str, text: str) -> Problem:
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or exc.context or "not valid YAML"
    at_tab = mark is not None and 0 <= mark.index < len(text) and text[mark.index] == "\t"
    if at_tab or "'\\t'" in problem or "tab" in problem:
        return Problem(_mark_loc(file, mark), "", "a tab character where YAML needs spaces",
                       "indent with spaces, not tabs")
    hint = ""
    if "mapping values are not allowed" in problem:
        hint = "a value containing ': ' needs quotes, or a key is indented wrongly"
    elif "could not find expected ':'" in problem:
        hint = "each line of a mapping is `key: value`"
    return Problem(_mark_loc(file, mark), "", f"not valid YAML: {problem}", hint)


class _Builder:
    """Builds plain values and location maps from the parser's events, one value at a time."""

    def __init__(self, file: str, loader: _Loader):
        self.file = file
        self.loader = loader
        self.value_locs: dict = {}
        self.key_locs: dict = {}
        self.nodes = 0
        self.problems: list[Problem] = []

    def _fail(self, event, message: str, hint: str = ""):
        raise SpecError([Problem(_mark_loc(self.file, event.start_mark), "", message, hint)])

    def document(self) -> Any:
        """The one document of the stream."""
        loader = self.loader
        loader.get_event()  # stream start
        if loader.check_event(yaml.StreamEndEvent):
            raise SpecError([Problem(Loc(self.file, 1, 1), "", "the file is empty",
                                     "a spec starts with `alexspec: 1`; see specs/alexnet.yaml")])
        loader.get_event()  # document start
        data = self.value(())
        loader.get_event()  # document end
        if not loader.check_event(yaml.StreamEndEvent):
            self._fail(loader.peek_event(), "a spec is one YAML document; this file has more",
                       "remove the second `---` and what follows it")
        return data

    def _count(self, event, depth: int) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            self._fail(event, f"the spec has more than {MAX_NODES:,} values; it is too large")
        if depth > MAX_DEPTH:
            self._fail(event, f"the spec is nested more than {MAX_DEPTH} levels deep")
        if isinstance(event, yaml.AliasEvent):
            self._fail(event, "YAML aliases (*name) are not supported in specs", "write the value out")

    def value(self, path: Path_) -> Any:
        """The value whose events come next, at `path` in the document."""
        event = self.loader.get_event()
        self._count(event, len(path))
        self.value_locs[path] = _mark_loc(self.file, event.start_mark)
        if isinstance(event, yaml.ScalarEvent):
            return self._scalar(event)
        kind = yaml.SequenceNode if isinstance(event, yaml.SequenceStartEvent) else yaml.MappingNode
        tag = event.tag if event.tag not in (None, "!") else self.loader.resolve(kind, None, event.implicit)
        if tag != ("tag:yaml.org,2002:seq" if kind is yaml.SequenceNode else "tag:yaml.org,2002:map"):
            self._fail(event, f"the YAML tag {quote(tag, 40)} is not supported in specs", "remove the tag")
        if kind is yaml.SequenceNode:
            return self._sequence(event, path)
        return self._mapping(path)

    def _sequence(self, start, path: Path_) -> list:
        items: list = []
        while not self.loader.check_event(yaml.SequenceEndEvent):
            if len(items) == MAX_ITEMS:
                self._fail(start, f"the list has more than {MAX_ITEMS:,} items; it is too long",
                           f"specs are limited to {MAX_LAYERS:,} layers")
            items.append(self.value(path + (len(items),)))
        self.loader.get_event()
        return items

    def _skip(self, depth: int) -> None:
        """Consume the next value's events (a duplicate key's value), counting them."""
        open_ = 0
        while True:
            event = self.loader.get_event()
            if isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                open_ -= 1
            else:
                self._count(event, depth + open_)
                open_ += isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent))
            if open_ == 0:
                return

    def _scalar(self, event) -> Any:
        """A plain value: text, a number, true/false or null. Other YAML tags (!!timestamp, !!binary,
        python/...), a tagged text that is not of its tag (`!!int x`) and numbers too large to use
        are located problems."""
        tag = event.tag if event.tag not in (None, "!") else \
            self.loader.resolve(yaml.ScalarNode, event.value, event.implicit)
        node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
        if tag == "tag:yaml.org,2002:merge":
            self._fail(node, "YAML merge keys (<<) are not supported in specs", "write the keys out")
        kind = _SCALAR_TAGS.get(node.tag)
        if kind is None:
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            self._fail(node, f"the YAML tag {quote(tag, 40)} is not supported in specs",
                       "remove the tag: write a plain value (text, a number, true/false)")
        if kind == "int" and len(node.value) > 100:  # before int() meets Python's limit on digits
            self._fail(node, f"the number {quote(node.value, 40)} is too large", "numbers in a spec are below 2**64")
        try:
            value = self.loader.yaml_constructors[tag](self.loader, node)
        except (ValueError, TypeError, KeyError, AttributeError, yaml.YAMLError):
            self._fail(node, f"{quote(node.value, 40)} is not a valid !!{kind}",
                       f"write {_KIND_WORDS[kind]} there, or remove the !!{kind} tag")
        if isinstance(value, float) and not math.isfinite(value):
            self._fail(node, f"{quote(node.value, 40)} is not a usable number here", "write a finite number")
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= MAX_INT:
            self._fail(node, f"the number {quote(node.value, 40)} is too large", "numbers in a spec are below 2**64")
        return value

    def _mapping(self, path: Path_) -> dict:
        result: dict = {}
        while not self.loader.check_event(yaml.MappingEndEvent):
            key_event = self.loader.get_event()
            self._count(key_event, len(path) + 1)
            if not isinstance(key_event, yaml.ScalarEvent):
                self._fail(key_event, "a mapping key must be plain text")
            key = self._scalar(key_event)
            if not isinstance(key, str):
                key = key_event.value  # `1:` or `yes:` as keys: keep the text the person wrote
            if key in result:
                self.problems.append(Problem(_mark_loc(self.file, key_event.start_mark), dotted(path),
                                             f"duplicate key {quote(key)}", "each key may appear once in a mapping"))
                self._skip(len(path) + 1)
                continue
            self.key_locs[path + (key,)] = _mark_loc(self.file, key_event.start_mark)
            result[key] = self.value(path + (key,))
        self.loader.get_event()
        return result
