"""Reading specs: load YAML with locations, check it against the schema, build the IR."""
from __future__ import annotations

from pathlib import Path

from alexspec.ir import Network
from alexspec.spec.loader import Document, load_file, load_text
from alexspec.spec.validate import to_network

__all__ = ["Document", "load_file", "load_text", "to_network", "read_network"]


def read_network(source: str | Path | Document) -> Network:
    """The validated IR of a spec file (or already loaded Document). Raises SpecError."""
    doc = source if isinstance(source, Document) else load_file(source)
    return to_network(doc)
