"""From a spec to a live nn.Module: analyse, generate the source, execute it, instantiate.

The in-process path (`alexspec.compile`) writes no files: the generated source is compiled
under a pseudo file name registered with linecache, so tracebacks show the generated lines.
"""
from __future__ import annotations

from dataclasses import dataclass
import linecache
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml

from alexspec.codegen import Generated, generate
from alexspec.errors import BadInput
from alexspec.kernels.nn.backend import resolve_devices
from alexspec.memory_check import check_fits
from alexspec.network_info import NetworkInfo
from alexspec.spec import Document, analyse, load_text


@dataclass
class Build:
    """A built network: the module, what inference knows of it, and its generated source."""

    module: Any          # torch.nn.Module
    info: NetworkInfo
    generated: Generated
    backend: str
    backend_reason: str
    devices: tuple[str, ...]  # where it runs, "auto" made concrete


def spec_source(spec: str | Path | dict | Document) -> Document | str | Path:
    """A dict spec becomes YAML text (so problems still get line numbers); others pass through."""
    if isinstance(spec, dict):
        return load_text(yaml.safe_dump(spec, sort_keys=False), "<dict>")
    return spec


def module_class(generated: Generated, filename: str):
    """Execute generated source and return its class."""
    linecache.cache[filename] = (len(generated.source), None, generated.source.splitlines(True), filename)
    namespace: dict = {"__name__": f"alexspec_generated_{generated.class_name}"}
    exec(compile(generated.source, filename, "exec"), namespace)
    return namespace[generated.class_name]


def build(spec: str | Path | dict | Document, backend: str = "auto",
          devices: Optional[Sequence[str]] = None, fuse: bool = True, fuse_lrn_pool: bool = False,
          fuse_conv_lrn: bool = False, training: bool = False) -> Build:
    """Analyse `spec` and instantiate its module on `devices` (default: the spec's placement).
    `fuse=False` runs every layer on its own, `fuse_lrn_pool=True` each LRN + max pool as one
    kernel, `fuse_conv_lrn=True` each conv + ReLU + LRN that fits (see alexspec.fusion).

    Raises SpecError for a bad spec, and BadInput for an impossible backend or device list or a
    network whose parameters (with their gradients and optimizer state where `training`) cannot
    fit the devices' memory (alexspec.memory_check).
    """
    info = analyse(spec_source(spec))
    placed = not devices
    devices = tuple(devices) if devices else tuple(info.network.placement)
    try:
        resolved = tuple(resolve_devices(devices))
    except BadInput as error:
        if not placed:
            raise
        raise BadInput(f"{info.network.name}'s spec places it on {', '.join(devices)} (its `placement`); {error}") \
            from None
    check_fits(info, resolved, training)
    generated = generate(info, fuse=fuse, fuse_lrn_pool=fuse_lrn_pool, fuse_conv_lrn=fuse_conv_lrn)
    cls = module_class(generated, f"<alexspec {info.network.name}>")
    module = cls(backend=backend, devices=devices)
    return Build(module, info, generated, _backend_of(module), module.backend_reason, resolved)


def _backend_of(module) -> str:
    return "triton" if module.backend_reason.startswith("triton") else "torch"


@dataclass
class Fit:
    """How saved weights fit a module's state dict, by name and shape."""

    fits: dict             # the saved entries of one of the module's names and its shape
    missing: list[str]     # the module's names the saved weights lack
    unexpected: list[str]  # saved names the module lacks
    resized: list[str]     # names of both, of another shape


def fit(own: dict, saved: dict) -> Fit:
    """How `saved` (a state dict) fits `own` (a module's), each list in `own`'s order (`unexpected`:
    `saved`'s)."""
    fits = {key: value for key, value in saved.items() if key in own and tuple(value.shape) == tuple(own[key].shape)}
    return Fit(fits, [key for key in own if key not in saved], [key for key in saved if key not in own],
               [key for key in own if key in saved and key not in fits])


def load_state(module, state_dict: dict) -> None:
    """Load `state_dict` into `module`, or raise BadInput naming every layer that does not match.

    Checkpoints hold the one-device layout (see alexspec.kernels.nn.towers), so one saved from a
    tower-parallel build loads into a one-device build and back.
    """
    own = module.state_dict()
    found = fit(own, state_dict)
    missing, unexpected = sorted(found.missing), sorted(found.unexpected)
    resized = [f"{key} (checkpoint {list(state_dict[key].shape)}, network {list(own[key].shape)})"
               for key in found.resized]
    problems = ([f"shapes differ: {', '.join(resized)}"] if resized else []) + \
        ([f"missing from the checkpoint: {', '.join(missing)}"] if missing else []) + \
        ([f"not in this network: {', '.join(unexpected)}"] if unexpected else [])
    if problems:
        layers = sorted({key.rsplit(".", 1)[0] for key in missing + unexpected}
                        | {r.split(" ", 1)[0].rsplit(".", 1)[0] for r in resized})
        raise BadInput(f"the weights do not fit this network (layers {', '.join(layers)}): " + "; ".join(problems)
                         + ". Was the checkpoint saved from another spec?")
    module.load_state_dict(state_dict)
