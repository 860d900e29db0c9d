"""The folder `alexspec compile -o` writes into: a file there is replaced only where a compile wrote
it before (alexspec-build.json lists what compiles wrote), never one of someone else's, such as a
project's own report.json in `-o .`."""
from __future__ import annotations

import json
from pathlib import Path

from alexspec.errors import BadInput
from alexspec.fsutil import write_atomic

MARKER = "alexspec-build.json"


def _compiled(out: Path) -> set[str] | None:
    """The files compiles wrote in `out`, from its marker (empty where there is none); None where
    a file of that name is not alexspec's."""
    try:
        found = json.loads((out / MARKER).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return set()
    except (OSError, ValueError):
        return None
    files = found.get("compiled") if isinstance(found, dict) else None
    return set(files) if isinstance(files, list) and all(isinstance(f, str) for f in files) else None


def claim(out: Path, names: list[str]) -> None:
    """Record `names` as compiled into `out`, or raise BadInput naming those of them that `out`
    already holds and that no compile wrote (nothing is written then)."""
    compiled = _compiled(out)
    if compiled is None:
        raise BadInput(f"{out / MARKER} is not the list of files `alexspec compile` writes; choose another "
                       "folder with -o")
    theirs = sorted(name for name in names if name not in compiled and (out / name).exists())
    if theirs:
        raise BadInput(f"{out} already holds {', '.join(theirs)}, not listed in its {MARKER} as written by "
                       f"`alexspec compile`, so not replaced; compile into another folder (-o {out / 'build'}), or "
                       f"move {'that file' if len(theirs) == 1 else 'those files'} away")
    write_atomic(out / MARKER, json.dumps({"compiled": sorted(compiled | set(names))}, indent=2) + "\n")
