"""A benchmark's JSON: the versions it ran with, written atomically."""
from __future__ import annotations

import json
import platform
from pathlib import Path


def versions() -> dict:
    import torch

    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    from alexspec import __version__

    return {"alexspec": __version__, "torch": torch.__version__, "triton": triton_version,
            "python": platform.python_version()}


def write(result: dict, out: Path) -> None:
    from alexspec.fsutil import write_atomic

    write_atomic(out, json.dumps(result, indent=2) + "\n")
