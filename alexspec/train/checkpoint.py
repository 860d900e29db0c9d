"""Checkpoints that never lose work.

Each is written whole to a temporary file, fsynced, then renamed into place, so a file with
a checkpoint's name is always complete and a crash mid-write leaves the previous ones
untouched. Loading uses torch.load(weights_only=True): a checkpoint cannot run code. Each
records a hash of the network it belongs to; a checkpoint of another network is refused.
"""
from __future__ import annotations

import hashlib
import io
import json
import pickle
import re
import zipfile
from pathlib import Path

import torch

from alexspec.fsutil import write_atomic
from alexspec.graph import layer_dict
from alexspec.infer import NetworkInfo

PATTERN = re.compile(r"^step-(\d{9})\.pt$")
BEST = "best.pt"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, truncated, corrupt, unsafe or of another network."""


def network_hash(info: NetworkInfo) -> str:
    """A hash of what a checkpoint's weights depend on: input, towers and every layer (not the recipe)."""
    net = info.network
    layers = [{k: v for k, v in layer_dict(layer).items() if k != "line"} for layer in net.layers]
    text = json.dumps({"input": list(net.input), "towers": net.towers, "layers": layers}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def folder(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def save(run_dir: Path, state: dict, step: int, keep: int = 3, best: bool = False) -> Path:
    """Write `state` as checkpoint `step` (atomically), keep the newest `keep`, and copy to best.pt if `best`."""
    target_dir = folder(run_dir)
    target_dir.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    path = target_dir / f"step-{step:09d}.pt"
    write_atomic(path, data)
    if best:
        write_atomic(target_dir / BEST, data)
    for old in sorted(_numbered(target_dir))[:-keep] if keep > 0 else []:
        old[1].unlink(missing_ok=True)
    return path


def _numbered(directory: Path) -> list[tuple[int, Path]]:
    return [(int(m.group(1)), p) for p in directory.glob("step-*.pt") if (m := PATTERN.match(p.name))]


def latest(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run (None when it has none)."""
    found = sorted(_numbered(folder(run_dir)))
    return found[-1][1] if found else None


def load(path: Path, expected_hash: str | None = None) -> dict:
    """A checkpoint's state. Raises CheckpointError (with what to do) for anything unusable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{path}: refused: it holds more than tensors and plain values, so loading it "
                              f"could run code ({str(exc).splitlines()[0][:120]})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: truncated or corrupt ({str(exc).splitlines()[0][:120]}); "
                              "use an earlier checkpoint") from None
    if not isinstance(state, dict) or "model" not in state or "network_hash" not in state:
        raise CheckpointError(f"{path}: not an alexspec checkpoint")
    if expected_hash is not None and state["network_hash"] != expected_hash:
        raise CheckpointError(f"{path}: saved from another network (hash {state['network_hash']}, this spec "
                              f"{expected_hash}); resume with the spec it was trained from")
    return state
