"""Load YAML spec text into plain Python values, remembering where every value came from.

Only YAML's safe constructs are accepted (mappings, sequences, plain scalars). Aliases
and merge keys are refused (an alias bomb cannot expand), duplicate keys are an error
(PyYAML would silently keep the last), and size/depth are bounded. Numbers follow
YAML 1.2, so `5e-4` is a float, as a person means it (PyYAML's YAML 1.1 reads a string).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
import math
import re
from typing import Any

import yaml

from alexspec.errors import Loc, Problem, SpecError, quote

MAX_BYTES = 4_000_000
MAX_NODES = 500_000
MAX_DEPTH = 32

Path_ = tuple  # a path into the document: ("layers", 3, "kernel")


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml's parser when PyYAML has it
    """A safe loader with YAML 1.2 floats. Aliases are refused by the builder below (an aliased
    node is the same object met twice), before anything is expanded."""


_Loader.yaml_implicit_resolvers = {
    key: list(resolvers) for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
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
    """Read and load a spec file. Raises SpecError for a missing, unreadable or bad file."""
    name = str(path)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise SpecError([Problem(Loc(name, 1, 1), "", "no such file",
                                 "check the path; example specs live in specs/")]) from None
    except OSError as exc:
        raise SpecError([Problem(Loc(name, 1, 1), "", f"cannot read the file ({exc.strerror})")]) from None
    if len(raw) > MAX_BYTES:
        raise SpecError([Problem(Loc(name, 1, 1), "",
                                 f"the file is {len(raw):,} bytes; specs are limited to {MAX_BYTES:,}")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise SpecError([Problem(Loc(name, line, 1), "", "the file is not UTF-8 text",
                                 "save it as UTF-8")]) from None
    return load_text(text, name)


def load_text(text: str, file: str = "<spec>") -> Document:
    """Load spec text. Raises SpecError with the location of the first YAML syntax problem."""
    if len(text) > MAX_BYTES:
        raise SpecError([Problem(Loc(file, 1, 1), "", f"the spec is longer than {MAX_BYTES:,} characters")])
    loader = None
    try:
        loader = _Loader(text)
        root = loader.get_single_node()
        if root is None:
            raise SpecError([Problem(Loc(file, 1, 1), "", "the file is empty",
                                     "a spec starts with `alexspec: 1`; see specs/alexnet.yaml")])
        builder = _Builder(file, loader)
        data = builder.build(root, ())
        if builder.problems:
            raise SpecError(builder.problems)
    except _AliasFound:
        raise SpecError([Problem(_first_alias(text, file), "", "YAML aliases (*name) are not supported in specs",
                                 "write the value out")]) from None
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


class _AliasFound(Exception):
    """Raised inside the builder; reported with the alias's own location."""


def _first_alias(text: str, file: str) -> Loc:
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.AliasEvent):
            return _mark_loc(file, event.start_mark)
    return Loc(file, 1, 1)


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
    """Turns a composed YAML node tree into plain values plus location maps."""

    def __init__(self, file: str, loader: _Loader):
        self.file = file
        self.loader = loader
        self.value_locs: dict = {}
        self.key_locs: dict = {}
        self.nodes = 0
        self.seen: set[int] = set()
        self.problems: list[Problem] = []

    def _fail(self, node, message: str, hint: str = ""):
        raise SpecError([Problem(_mark_loc(self.file, node.start_mark), "", message, hint)])

    def build(self, node, path: Path_) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            self._fail(node, f"the spec has more than {MAX_NODES:,} values; it is too large")
        if len(path) > MAX_DEPTH:
            self._fail(node, f"the spec is nested more than {MAX_DEPTH} levels deep")
        if id(node) in self.seen:  # an alias: the same node again (all nodes are alive, ids are unique)
            raise _AliasFound()
        self.seen.add(id(node))
        self.value_locs[path] = _mark_loc(self.file, node.start_mark)
        if isinstance(node, yaml.ScalarNode):
            value = self.loader.construct_object(node, deep=True)
            if isinstance(value, float) and not math.isfinite(value):
                self._fail(node, f"{node.value} is not a usable number here", "write a finite number")
            return value
        expected_tag = "tag:yaml.org,2002:seq" if isinstance(node, yaml.SequenceNode) else "tag:yaml.org,2002:map"
        if node.tag != expected_tag:
            self._fail(node, f"the YAML tag {node.tag} is not supported in specs", "remove the tag")
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, path + (i,)) for i, item in enumerate(node.value)]
        return self._mapping(node, path)

    def _mapping(self, node: yaml.MappingNode, path: Path_) -> dict:
        result: dict = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                self._fail(key_node, "YAML merge keys (<<) are not supported in specs")
            if not isinstance(key_node, yaml.ScalarNode):
                self._fail(key_node, "a mapping key must be plain text")
            key = self.loader.construct_object(key_node)
            if not isinstance(key, str):
                key = key_node.value  # `1:` or `yes:` as keys: keep the text the person wrote
            if key in result:
                self.problems.append(Problem(_mark_loc(self.file, key_node.start_mark), dotted(path),
                                             f"duplicate key {quote(key)}", "each key may appear once in a mapping"))
                continue
            self.key_locs[path + (key,)] = _mark_loc(self.file, key_node.start_mark)
            result[key] = self.build(value_node, path + (key,))
        return result
