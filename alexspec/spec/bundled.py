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


RUN_SPEC = "spec.yaml"  # what a run folder of `alexspec train` holds: the spec as run, its --set values applied
RECIPE = "config.json"  # and everything else it ran with: its --set arguments (`overrides`), data, devices, ...
CHECKPOINTS = "checkpoints"  # the folder of a run folder that holds its checkpoints


def run_folder_of(name: str | Path) -> Path | None:
    """The folder `name` where it is one holding a RUN_SPEC (a run folder), else None."""
    try:
        return Path(name) if (Path(name) / RUN_SPEC).is_file() else None
    except OSError:  # say, a name too long for a path
        return None


def home_of(path: str | Path) -> Path | None:
    """The folder whose CHECKPOINTS folder holds the checkpoint file at `path`, else None."""
    path = Path(path)
    return path.parent.parent if path.parent.name == CHECKPOINTS else None


def run_folder_holding(name: str | Path) -> Path | None:
    """The run folder whose checkpoint `name` is (RUN/checkpoints/*.pt), else None."""
    home = home_of(name)
    try:
        is_checkpoint = home is not None and Path(name).suffix == ".pt" and Path(name).is_file()
    except OSError:
        return None
    return run_folder_of(home) if is_checkpoint else None


def resolve(name: str | Path) -> str:
    """A spec path as given, a run folder's spec (RUN_SPEC; a checkpoint of a run folder names its
    run's), or the file of the bundled spec named `name` where no such path exists."""
    text = str(name)
    run_dir = run_folder_of(text) or run_folder_holding(text)
    if run_dir is not None:
        return str(run_dir / RUN_SPEC)
    try:
        exists = Path(text).exists()
    except OSError:  # say, a name too long for a path: it names no file, and the loader says so
        exists = False
    if exists or text.endswith((".yaml", ".yml")) or "/" in text:
        return text
    bundled = bundled_specs()
    return str(bundled[text]) if text in bundled else text  # the loader reports it missing, with a hint
