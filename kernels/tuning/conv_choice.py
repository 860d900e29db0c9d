"""Which implementation runs a conv forward, or a conv backward, of a given shape: Triton or cuDNN
(and, for some shapes, the variants kernels.conv offers: a backward mixing the two, cuDNN on
zero-padded channels).

Neither wins everywhere: cuDNN is hard to beat on large dense convs, the Triton implicit GEMM
saves a pass over the output with its bias + ReLU epilogue. In mode "auto" (the default) the
first forward (and the first backward) of each shape on a GPU times both and keeps the faster;
the choice is also kept beside Triton's own autotuning results (alexspec-conv-choices.json in
TRITON_CACHE_DIR, default ~/.triton/cache), per GPU model, torch/triton versions and kernel code,
so later processes start without timing. "triton" and "cudnn" force one, both ways. ALEXSPEC_CONV sets
the mode at start, set_mode() and using() change it, choices() lists what was chosen and the
times it was chosen by. Both compute the same function.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
import warnings
from contextlib import contextmanager
from functools import partial
from typing import Callable, Iterator, Optional

from alexspec.fsutil import write_atomic
from alexspec import settings
from alexspec.errors import BadInput
from alexspec.kernels.tuning.stopwatch import Stopwatch

MODES = settings.CONV_MODES
_FALLBACK = "triton"  # where nothing can be timed: on CPU (the interpreter), or while a CUDA graph records



@dataclass
class _State:
    mode: str = field(default_factory=lambda: settings.current().conv)  # ALEXSPEC_CONV; set_mode changes it
    chosen: dict[tuple, dict] = field(default_factory=dict)
    stored: Optional[dict[str, dict]] = None  # the file's choices, read at the first need
    planning: bool = False  # within planning()


_state = _State()


def mode() -> str:
    """The current mode: auto, triton or cudnn."""
    return _state.mode


def set_mode(new_mode: str) -> str:
    """Set the mode (auto, triton or cudnn); returns the previous one. Earlier choices are kept."""
    if new_mode not in MODES:
        raise BadInput(f"conv implementation must be one of {', '.join(MODES)}, got {new_mode!r}")
    previous, _state.mode = _state.mode, new_mode
    return previous


@contextmanager
def planning() -> Iterator[None]:
    """A block that only shapes a computation (ahead.compile_ahead's dry run): in mode "auto" each
    conv takes the implementation already chosen, stored or shipped for its shape, and the
    Triton kernel where none is (so that it gets compiled), timing nothing."""
    previous, _state.planning = _state.planning, True
    try:
        yield
    finally:
        _state.planning = previous


@contextmanager
def using(new_mode: str) -> Iterator[None]:
    """Run a block in another mode: `with conv_choice.using("cudnn"): ...`."""
    previous = set_mode(new_mode)
    try:
        yield
    finally:
        set_mode(previous)


def choices() -> list[dict]:
    """What "auto" chose so far, a dict per conv shape: shape, implementation and each one's time in ms."""
    return [dict(entry) for entry in _state.chosen.values()]


def forget() -> None:
    """Drop every choice this process made or read (the file keeps them: see store_path)."""
    _state.chosen.clear()
    _state.stored = None


def store_path() -> Path:
    """The file choices are kept in, beside Triton's autotuning cache."""
    cache = os.environ.get("TRITON_CACHE_DIR") or Path.home() / ".triton" / "cache"
    return Path(cache) / "alexspec-conv-choices.json"


def _stored_choices() -> dict[str, dict]:
    if _state.stored is None:
        try:
            stored = json.loads(store_path().read_text())
        except (OSError, ValueError):  # none yet, or unreadable: time again
            stored = {}
        _state.stored = stored if isinstance(stored, dict) else {}
    return _state.stored


def _store(name: str, entry: dict) -> None:
    stored = _stored_choices()
    stored[name] = entry
    path = store_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(stored, indent=1, sort_keys=True) + "\n")
    except OSError as exc:  # a read-only cache: choices last for this process only
        warnings.warn(f"could not keep conv choices in {path} ({exc})", stacklevel=3)


def choose(key: tuple, describe: Callable[[], str], implementations: dict[str, Callable[..., object]],
           args: tuple, can_time: Callable[[], bool],
           timer: Callable[[Callable[[], object]], float] | None = None,
           machine: Callable[[], str] | None = None,
           pretuned: Callable[[], Optional[str]] | None = None) -> str:
    """The implementation to run for the conv identified by `key` (a forward pays only a lookup
    once its shape is chosen).

    implementations: name -> a function of `args` that runs it. In mode "auto" the first call
    for a key where `can_time()` times each on `args` with `timer` (default:
    triton.testing.do_bench, in ms) and remembers the fastest (one that fails is warned about
    and left out, its time None); where it cannot time it returns the Triton kernel and
    remembers nothing. With `machine` (the GPU and versions, as text) the choice is also read
    from and written to the file at store_path(). Where that file has none, `pretuned()` may
    name the implementation that won on this GPU model (kernels.pretuned): it is taken untimed.
    Within planning(), nothing is timed: a choice not known yet is the Triton kernel.
    """
    if _state.mode != "auto":
        return _state.mode
    chosen = _state.chosen
    if key in chosen:
        return chosen[key]["implementation"]
    stored_as = f"{machine()} | {describe()}" if machine is not None else None
    stored = _stored_choices().get(stored_as) if stored_as else None
    if isinstance(stored, dict) and stored.get("implementation") in implementations:
        chosen[key] = dict(stored)
        return stored["implementation"]
    shipped = pretuned() if pretuned is not None else None
    if shipped in implementations:
        chosen[key] = {"shape": describe(), "implementation": shipped, "pretuned": True}
        return shipped
    if _state.planning or not can_time():
        return _FALLBACK
    timer = timer or _do_bench
    times, errors = {}, []
    for name, run in implementations.items():
        try:
            times[name] = timer(partial(run, *args))
        except Exception as exc:  # say, a kernel this GPU cannot compile: the others still serve
            errors.append(exc)
            warnings.warn(f"conv {describe()}: the {name} implementation failed ({exc}); the others are "
                          "timed without it", stacklevel=2)
    if not times:
        raise errors[0]
    best = min(times, key=times.get)
    chosen[key] = {"shape": describe(), "implementation": best,
                    **{f"{name}_ms": round(times[name], 4) if name in times else None for name in implementations}}
    if stored_as:
        _store(stored_as, chosen[key])
    return best


timing = Stopwatch()  # this process's time spent timing implementations (bench.first_step reports it)


def _do_bench(run: Callable[[], object]) -> float:
    """Median ms of `run` on the GPU (after its first call, where Triton compiles and autotunes)."""
    from triton.testing import do_bench

    return timing.run(do_bench, run, warmup=5, rep=20, return_mode="median")
