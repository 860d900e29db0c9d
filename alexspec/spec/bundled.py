"""The specs that ship with alexspec (specs/), by name: `alexnet`, `digits`, `lenet5`, ..."""
from __future__ import annotations

from functools import lru_cache
import importlib.util
from pathlib import Path


@lru_cache(maxsize=1)
def bundled_specs() -> dict[str, Path]:
    """Each bundled spec's name and file."""
    found = importlib.util.find_spec("alexspec.specs")
    folders = list(found.submodule_search_locations or []) if found else []
    files = [entry for folder in folders for entry in Path(folder).glob("*.yaml")]
    return {entry.stem: entry for entry in sorted(files, key=lambda entry: entry.stem)}


def resolve(name: str | Path) -> str:
    """A spec path as given, or the file of the bundled spec named `name` where no such path exists."""
    text = str(name)
    try:
        exists = Path(text).exists()
    except OSError:  # say, a name too long for a path: it names no file, and the loader says so
        exists = False
    if exists or text.endswith((".yaml", ".yml")) or "/" in text:
        return text
    bundled = bundled_specs()
    return str(bundled[text]) if text in bundled else text  # the loader reports it missing, with a hint
