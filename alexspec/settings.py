"""Every switch alexspec reads from the environment, parsed in this one place.

    ALEXSPEC_AUTOTUNE        full (default) | quick: each kernel's first config, nothing timed
    ALEXSPEC_CONV            auto (default: per shape, the faster) | triton | cudnn: every conv one way
    ALEXSPEC_PRETUNED        1 (default) | 0: time every choice here instead of taking the shipped tables
    ALEXSPEC_COMPILE_AHEAD   1 (default) | 0: compile each kernel at its first launch instead
    TRITON_INTERPRET         1: the Triton kernels run in Triton's interpreter (on CPU)
    WORLD_SIZE, RANK, LOCAL_RANK, LOCAL_WORLD_SIZE   set by torchrun for data-parallel training

A value out of range warns and falls back to the default: a mistyped switch should not stop a
run. `current()` is what the modules read; tests change it with `override(...)`.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, replace
import os
from typing import Iterator, Mapping
import warnings

CONV_MODES = ("auto", "triton", "cudnn")


@dataclass(frozen=True)
class Settings:
    autotune: str = "full"        # full | quick
    conv: str = "auto"            # one of CONV_MODES: how convs start out (conv_choice.set_mode changes it)
    pretuned: bool = True         # take the choices shipped for this GPU model
    compile_ahead: bool = True    # compile a step's kernels all at once before it
    interpret: bool = False       # Triton's interpreter (TRITON_INTERPRET=1)
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    local_world_size: int = 1     # processes on this node


def _switch(env: Mapping[str, str], name: str, fallback_said: str) -> bool:
    value = env.get(name, "1")
    if value not in ("0", "1"):
        warnings.warn(f"{name}={value!r} is neither 0 nor 1; {fallback_said}", stacklevel=3)
    return value != "0"


def _count(env: Mapping[str, str], name: str, default: int) -> int:
    value = env.get(name, str(default))
    try:
        return int(value)
    except ValueError:
        warnings.warn(f"{name}={value!r} is not a whole number; taking {default}", stacklevel=3)
        return default


def from_environment(env: Mapping[str, str] = os.environ) -> Settings:
    """The settings `env` asks for (warning about, and falling back from, values out of range)."""
    autotune = env.get("ALEXSPEC_AUTOTUNE", "full")
    if autotune not in ("full", "quick"):
        warnings.warn(f"ALEXSPEC_AUTOTUNE={autotune!r} is neither 'full' nor 'quick'; autotuning in full",
                      stacklevel=2)
        autotune = "full"
    conv = env.get("ALEXSPEC_CONV", "auto")
    if conv not in CONV_MODES:
        warnings.warn(f"ALEXSPEC_CONV={conv!r} is not one of {', '.join(CONV_MODES)}; using 'auto'", stacklevel=2)
        conv = "auto"
    return Settings(autotune=autotune, conv=conv,
                    pretuned=_switch(env, "ALEXSPEC_PRETUNED", "using the shipped choices"),
                    compile_ahead=_switch(env, "ALEXSPEC_COMPILE_AHEAD", "compiling ahead"),
                    interpret=env.get("TRITON_INTERPRET", "0") == "1",
                    world_size=_count(env, "WORLD_SIZE", 1), rank=_count(env, "RANK", 0),
                    local_rank=_count(env, "LOCAL_RANK", 0),
                    local_world_size=_count(env, "LOCAL_WORLD_SIZE", 1))


_current = from_environment()


def current() -> Settings:
    """The settings in force: the environment's when the process started, unless overridden."""
    return _current


@contextmanager
def override(**changes) -> Iterator[Settings]:
    """Within: current() with `changes` (e.g. override(pretuned=False)); as before after."""
    global _current
    before, _current = _current, replace(_current, **changes)
    try:
        yield _current
    finally:
        _current = before
