"""Reading specs: load YAML with locations, check it against the schema, build the IR."""
from __future__ import annotations

from pathlib import Path

from alexspec.errors import SpecError, raise_if_any
from alexspec.infer import infer
from alexspec.network_info import NetworkInfo
from alexspec.ir import Network
from alexspec.spec.blocks import expand
from alexspec.spec.loader import Document, load_file, load_text
from alexspec.spec.schema_check import check
from alexspec.spec.validate import build, to_network

__all__ = ["Document", "load_file", "load_text", "to_network", "read_network", "analyse"]


def read_network(source: str | Path | Document) -> Network:
    """The validated IR of a spec file (or already loaded Document). Raises SpecError."""
    doc = source if isinstance(source, Document) else load_file(source)
    return to_network(doc)


def analyse(source: str | Path | Document) -> NetworkInfo:
    """Load, validate and infer a spec file (or loaded Document).

    Raises SpecError listing every problem: schema, naming and shape problems together
    (shapes are still inferred for the layers before the first malformed one).
    """
    doc = expand(source if isinstance(source, Document) else load_file(source))
    checked = check(doc)
    network, more = build(doc, checked)
    problems = checked.problems + more
    if network is not None:
        try:
            info = infer(network)
        except SpecError as error:
            problems += error.problems
    raise_if_any(problems)
    return info
