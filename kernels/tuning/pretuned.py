"""Choices timed on a GPU model and shipped with alexspec, for a cold start on that model.

From an empty Triton cache, a first step compiles every autotune config of every kernel shape,
times them, and times each conv shape by Triton and by cuDNN: most of a cold start goes to
compiling configs that lose (the measured figures are in bench/results/ and the README). kernels/tuning/gpu-choices/<GPU model>.json holds what
won on that model (bench/pretune.py makes it from a GPU run's autotune-DATE.json): per kernel
and tuning key, the winning config; per conv shape, the winning implementation. Where this
machine's GPU has a table, a launch that finds no choice in Triton's cache takes the table's
(compiling only that config, timing nothing), and so does a conv shape.

Where the table has no entry for a shape, it is timed as before. A shape tuned at another
batch size serves too: the same kernel with the same key except its batch-scaled arguments
(BATCH_SCALED: the pixel count M and the slice count SPLIT of the conv kernels), the nearest
batch within a factor of MAX_BATCH_RATIO; for a conv choice, the same shape at the nearest such
batch. A config the kernel no longer offers, or an implementation no longer a candidate, is
ignored. Choices this machine timed (Triton's cache, the conv choice file) come first.
ALEXSPEC_PRETUNED=0 times everything on this machine instead.

A GPU model with no table of its own takes a sibling's: a table made on a model of the same
compute capability and number of multiprocessors (SMs), whose kernels compile to the same code
and run on as many SMs (an H200 takes an H100 SXM's: 9.0 and 132 SMs; an H100 PCIe, with 114,
takes none). Its choices may be a little off where the two differ (memory bandwidth, clocks).
"""
from __future__ import annotations

import functools
import json
import math
import re
import warnings
from pathlib import Path
from typing import Optional

from alexspec import settings
from alexspec.kernels.scoped import Scoped

FOLDER = Path(__file__).resolve().parent / "gpu-choices"
BATCH_SCALED = ("M", "SPLIT")  # tuning-key arguments that grow with the batch
MAX_BATCH_RATIO = 4.0



def enabled() -> bool:
    """Whether the shipped choices serve (ALEXSPEC_PRETUNED=0: every choice is timed here)."""
    return settings.current().pretuned


stand_in_device: Scoped = Scoped()  # a GPU model named by ahead.stand_in_gpu(), while it lasts
used = {"autotune": 0, "conv": 0}  # how many choices this process took from a table
_seen: dict[str, tuple[str, int]] = {}  # GPU model -> (compute capability, multiprocessors), as met


def table_path(device_name: str) -> Path:
    """Where the table of the GPU model `device_name` (as torch.cuda.get_device_name says it) lives."""
    return FOLDER / (re.sub(r"[^A-Za-z0-9]+", "_", device_name).strip("_") + ".json")


@functools.lru_cache(maxsize=None)
def table(device_name: str) -> Optional[dict]:
    """The shipped table of `device_name`, or None where there is none (or it is unreadable)."""
    found = _read(table_path(device_name))
    return found if found is not None and found.get("device") == device_name else None


def serving(device_name: Optional[str]) -> Optional[dict]:
    """The table that serves `device_name`: its own, else a sibling's (the same compute
    capability and multiprocessor count, as met by device_name() or named by ahead.stand_in_gpu),
    else None."""
    if not device_name:
        return None
    own = table(device_name)
    if own is not None or device_name not in _seen:
        return own
    return _sibling(*_seen[device_name])


def what_served(device_name: Optional[str]) -> dict:
    """{"shipped_table": the GPU model whose table serves `device_name` (None where none does),
    "shipped_choices_taken": how many choices this process took from a table}."""
    return {"shipped_table": (serving(device_name) or {}).get("device"),
            "shipped_choices_taken": used["autotune"] + used["conv"]}


def reload() -> None:
    """Read the tables anew (after FOLDER or a file in it changed)."""
    table.cache_clear()
    _sibling.cache_clear()


def seen(device_name: str, compute_capability: str, multiprocessors: int) -> None:
    """Note what a GPU model is, so that serving() can find its siblings."""
    _seen[device_name] = (compute_capability, multiprocessors)


@functools.lru_cache(maxsize=None)
def _sibling(compute_capability: str, multiprocessors: int) -> Optional[dict]:
    for path in sorted(FOLDER.glob("*.json")):
        found = _read(path)
        if found is not None and (found.get("compute_capability"), found.get("multiprocessors")) == (
                compute_capability, multiprocessors):
            return found
    return None


def _read(path: Path) -> Optional[dict]:
    try:
        found = json.loads(path.read_text())
    except OSError:
        return None
    except ValueError as exc:
        warnings.warn(f"{path} is not valid JSON ({exc}); timing every choice", stacklevel=3)
        return None
    return found if isinstance(found, dict) else None


def device_name(tensor=None) -> Optional[str]:
    """The GPU model the kernels run on: a stand-in's, or `tensor`'s GPU (default: the current one)."""
    if stand_in_device:
        return stand_in_device.get()
    import torch

    if tensor is not None and getattr(tensor, "is_cuda", False):
        device = tensor.device
    elif tensor is None and torch.cuda.is_available():
        device = torch.cuda.current_device()
    else:
        return None
    found = torch.cuda.get_device_properties(device)
    if found.name not in _seen:
        seen(found.name, f"{found.major}.{found.minor}", found.multi_processor_count)
    return found.name


def autotune_config(kernel: str, key_names: list[str], key: tuple, configs: list, device: Optional[str]):
    """The one of `configs` (triton Configs) that `device`'s table says won for `kernel` at tuning
    key `key` (the values of the arguments `key_names`, then the tensors' dtypes), or at the
    nearest batch; None where the table has none of them."""
    entries = _table_part(device, "autotune").get(kernel, [])
    scaled = [i for i, name in enumerate(key_names) if name in BATCH_SCALED]
    best, best_distance = None, math.inf
    for entry in entries:
        theirs = entry.get("key")
        if not isinstance(theirs, list) or len(theirs) != len(key):
            continue
        if any(str(a) != str(b) for i, (a, b) in enumerate(zip(theirs, key)) if i not in scaled):
            continue
        distance = _batch_distance([theirs[i] for i in scaled], [key[i] for i in scaled])
        if distance < best_distance:
            best, best_distance = entry, distance
    if best is None:
        return None
    for config in configs:
        if _same_config(config, best.get("config", {})):
            used["autotune"] += 1
            return config
    return None


def conv_implementation(shape: str, implementations, device: Optional[str]) -> Optional[str]:
    """The implementation `device`'s table says won for the conv `shape` (conv_choice's
    description, "x [N, C, H, W] ..."), or for the same conv at the nearest batch; None where it
    has none, or where that implementation is not among `implementations`."""
    batch, rest = _split_batch(shape)
    best, best_distance = None, math.inf
    for theirs, implementation in _table_part(device, "conv").items():
        their_batch, their_rest = _split_batch(theirs)
        if their_rest != rest or batch is None or their_batch is None:
            continue
        distance = _batch_distance([their_batch], [batch])
        if distance < best_distance:
            best, best_distance = implementation, distance
    if best in implementations:
        used["conv"] += 1
        return best
    return None


def _table_part(device: Optional[str], part: str) -> dict:
    found = serving(device) if enabled() else None
    value = found.get(part) if found else None
    return value if isinstance(value, dict) else {}


def _batch_distance(theirs: list, ours: list) -> float:
    """How far apart two batches are (the largest ratio of batch-scaled values, as a log); inf
    past MAX_BATCH_RATIO."""
    distance = 0.0
    for a, b in zip(theirs, ours):
        if not (isinstance(a, int) and isinstance(b, int) and a > 0 and b > 0):
            return math.inf if a != b else distance
        distance = max(distance, abs(math.log(a / b)))
    return distance if distance <= math.log(MAX_BATCH_RATIO) else math.inf


_BATCH = re.compile(r"^x \[(\d+), ")


def _split_batch(shape: str) -> tuple[Optional[int], str]:
    match = _BATCH.match(shape)
    return (int(match.group(1)), shape[match.end():]) if match else (None, shape)


def _same_config(config, described: dict) -> bool:
    """Whether a triton Config is the one `described` (as Triton's cache writes it) names."""
    return (described.get("kwargs") == config.kwargs
            and all(described.get(name) == getattr(config, name, None)
                    for name in ("num_warps", "num_stages", "num_ctas", "maxnreg") if name in described))


def from_autotune_record(record: dict, device: str, made_from: str = "", compute_capability: Optional[str] = None,
                         multiprocessors: Optional[int] = None) -> dict:
    """A table for `device` from what bench/autotune_choices.py gathered after a run on it:
    each autotuned launch's winner, and each conv choice timed on that device; with the device's
    compute capability and multiprocessor count, it also serves its siblings."""
    autotune: dict[str, list] = {}
    for tuned in record.get("autotune", []):
        best = {name: value for name, value in tuned["best"].items() if name not in ("pre_hook", "ir_override")}
        autotune.setdefault(tuned["kernel"], []).append({"key": tuned["key"], "config": best})
    conv: dict[str, str] = {}
    for stored_as, entry in sorted(record.get("conv_choices", {}).items()):
        timed_on, shape = split_stored_choice(stored_as)
        if timed_on == device and isinstance(entry, dict) and "implementation" in entry:
            conv[shape] = entry["implementation"]
    siblings = {"compute_capability": compute_capability, "multiprocessors": multiprocessors} \
        if compute_capability and multiprocessors else {}
    return {"device": device, **siblings, "made_from": made_from, "autotune": autotune, "conv": conv}


def split_stored_choice(stored_as: str) -> tuple[str, str]:
    """(GPU model, conv shape) of a name conv_choice stores a choice under: "<model>, torch ...,
    triton ..., conv code ... | <shape>"."""
    machine, _, shape = stored_as.partition(" | ")
    return machine.split(",")[0], shape
