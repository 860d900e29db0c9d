"""The folder `alexspec compile -o` writes into: a file there is replaced only where a compile wrote
it before (alexspec-build.json lists what compiles wrote), never one of someone else's, such as a
project's own report.json in `-o .`, and never one changed since a compile wrote it (the marker
keeps each written file's SHA-256), such as a hand-edited module."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Optional

from alexspec.errors import BadInput
from alexspec.fsutil import write_atomic

MARKER = "alexspec-build.json"


def _marker(out: Path) -> Optional[dict]:
    """The marker's content ({"compiled": names, "sha256": {name: digest}}; empty where there is
    none); None where a file of that name is not alexspec's."""
    try:
        found = json.loads((out / MARKER).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"compiled": [], "sha256": {}}
    except (OSError, ValueError):
        return None
    files = found.get("compiled") if isinstance(found, dict) else None
    if not (isinstance(files, list) and all(isinstance(f, str) for f in files)):
        return None
    digests = found.get("sha256")
    return {"compiled": files, "sha256": digests if isinstance(digests, dict) else {}}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def claim(out: Path, names: list[str]) -> None:
    """Record `names` as compiled into `out`, or raise BadInput naming those of them that `out`
    already holds and that no compile wrote, or that were changed since (nothing is written then)."""
    marker = _marker(out)
    if marker is None:
        raise BadInput(f"{out / MARKER} is not the list of files `alexspec compile` writes; choose another "
                       "folder with -o")
    compiled = set(marker["compiled"])
    theirs = sorted(name for name in names if name not in compiled and (out / name).exists())
    if theirs:
        raise BadInput(f"{out} already holds {', '.join(theirs)}, not listed in its {MARKER} as written by "
                       f"`alexspec compile`, so not replaced; compile into another folder (-o {out / 'build'}), or "
                       f"move {'that file' if len(theirs) == 1 else 'those files'} away")
    edited = sorted(name for name in names if name in marker["sha256"] and (out / name).is_file()
                    and _digest(out / name) != marker["sha256"][name])
    if edited:
        it = "it" if len(edited) == 1 else "them"
        raise BadInput(f"{', '.join(str(out / name) for name in edited)} changed since `alexspec compile` wrote {it}, "
                       f"so not replaced (the change would be lost); move {it} away (or delete {it}) and compile "
                       f"again, or compile into another folder (-o {out / 'build'})")
    write_atomic(out / MARKER, json.dumps({**marker, "compiled": sorted(compiled | set(names))}, indent=2) + "\n")


def record(out: Path, written: list[Path]) -> None:
    """Keep the SHA-256 of each file a compile just wrote in `out`, so that a later compile can tell
    whether it was changed since."""
    marker = _marker(out) or {"compiled": [], "sha256": {}}
    digests = {**marker["sha256"], **{path.name: _digest(path) for path in written}}
    write_atomic(out / MARKER, json.dumps({**marker, "sha256": dict(sorted(digests.items()))}, indent=2) + "\n")
