"""Checkpoints that never lose work and are checked before they are used.

Each is written whole to a temporary file, fsynced, then renamed into place, so a file with
a checkpoint's name is always complete and a crash mid-write leaves the previous ones
untouched. Each holds a SHA-256 digest of its contents (every tensor's bytes and every
value), verified on load: a flipped byte is refused, not trained on. Loading uses
torch.load(weights_only=True), so a checkpoint cannot run code, and then checks the form of
what it holds. Each records a hash of the network it belongs to; a checkpoint of another
network is refused. Old numbered checkpoints are pruned only where this run folder's runs
wrote them (alexspec.train.run_folder keeps the list).
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

from alexspec.errors import BadInput, first_line
from alexspec.fsutil import write_atomic
from alexspec.graph import layer_dict
from alexspec.network_info import NetworkInfo
from alexspec.spec.bundled import CHECKPOINTS, RUN_SPEC, home_of, run_folder_of
from alexspec.train import run_folder
from alexspec.words import count, listed

PATTERN = re.compile(r"^step-(\d{9})\.pt$")
BEST = "best.pt"
DIGEST = "digest"


class CheckpointError(BadInput):
    """A checkpoint that cannot be used: missing, truncated, corrupt, unsafe or of another network."""


def network_hash(info: NetworkInfo) -> str:
    """A hash of what a checkpoint's weights depend on: input, towers and every layer (not the recipe)."""
    net = info.network
    layers = [{k: v for k, v in layer_dict(layer).items() if k != "line"} for layer in net.layers]
    text = json.dumps({"input": list(net.input), "towers": net.towers, "layers": layers}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def content_digest(state: dict) -> str:
    """SHA-256 of everything in `state` but its digest: each tensor's dtype, shape and bytes, and
    every other value's repr, in order."""
    digest = hashlib.sha256()

    def feed(value) -> None:
        if isinstance(value, torch.Tensor):
            tensor = value.detach().cpu().contiguous()
            digest.update(f"tensor {tensor.dtype} {tuple(tensor.shape)}:".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
        elif isinstance(value, dict):
            digest.update(b"{")
            for key, item in value.items():
                feed(key)
                feed(item)
            digest.update(b"}")
        elif isinstance(value, (list, tuple)):
            digest.update(b"[" if isinstance(value, list) else b"(")
            for item in value:
                feed(item)
            digest.update(b"]")
        else:
            digest.update(f"{type(value).__name__} {value!r};".encode())

    feed({key: value for key, value in state.items() if key != DIGEST})
    return "sha256:" + digest.hexdigest()


def to_bytes(state: dict) -> bytes:
    """`state` with its content digest, as torch.save writes it."""
    buffer = io.BytesIO()
    torch.save({**state, DIGEST: content_digest(state)}, buffer)
    return buffer.getvalue()


def folder(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINTS


def save(run_dir: Path, state: dict, step: int, keep: int = 3, best: bool = False) -> Path:
    """Write `state` as checkpoint `step` (atomically, with its digest), keep the newest `keep` of
    those this run folder's runs wrote, and copy it to best.pt if `best`."""
    target_dir = folder(run_dir)
    target_dir.mkdir(parents=True, exist_ok=True)
    data = to_bytes(state)
    path = target_dir / f"step-{step:09d}.pt"
    written = [name for name in run_folder.checkpoints_written(run_dir) if name != path.name] + [path.name]
    run_folder.record_checkpoints(run_dir, written)  # before the file: a crash leaves nothing unlisted
    write_atomic(path, data)
    if best:
        write_atomic(target_dir / BEST, data)
    numbered = sorted((int(m.group(1)), name) for name in written if (m := PATTERN.match(name)))
    pruned = {name for _, name in numbered[:-keep]} if keep > 0 else set()
    for name in pruned:
        (target_dir / name).unlink(missing_ok=True)
    if pruned:
        run_folder.record_checkpoints(run_dir, [name for name in written if name not in pruned])
    return path


IMPORTED = "alexspec import"  # the `made_by` of an imported model's weights


def save_weights(path: Path, model_state: dict, network: str) -> None:
    """Write weights alone (an imported model's) as a checkpoint that eval and export take."""
    write_atomic(path, to_bytes({"model": model_state, "network_hash": network, "step": 0, "made_by": IMPORTED}))


def is_imported_weights(path: Path) -> bool:
    """Whether `path` holds weights that save_weights wrote (so writing them again loses nothing)."""
    try:
        return _read(Path(path)).get("made_by") == IMPORTED
    except (CheckpointError, AttributeError):
        return False


def _numbered(directory: Path) -> list[tuple[int, Path]]:
    return [(int(m.group(1)), p) for p in directory.glob("step-*.pt") if (m := PATTERN.match(p.name))]


def latest(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run (None when it has none)."""
    found = sorted(_numbered(folder(run_dir)))
    return found[-1][1] if found else None


def in_run_folder(path: Path) -> Path:
    """`path`, or where it is a run folder, its best.pt (else its newest checkpoint)."""
    path = Path(path)
    if not path.is_dir():
        return path
    best = folder(path) / BEST
    found = best if best.is_file() else latest(path)
    if found is None:
        raise CheckpointError(f"{path}: a folder with no checkpoint in checkpoints/; give a checkpoint file or a "
                              "run folder of `alexspec train`")
    return found


def load(path: Path, expected_hash: str | None = None, resume: bool = False) -> dict:
    """A checkpoint's state, checked: its form (with `resume`, all a training run needs), the
    network it belongs to and its digest. Raises CheckpointError (saying what is wrong and what
    to do) for anything unusable."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder; give a checkpoint file (e.g. {path}/checkpoints/best.pt)")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    state = _read(path)
    if resume and isinstance(state, dict) and state.get("made_by") == IMPORTED:
        raise CheckpointError(f"{path}: holds weights alone (written by alexspec import), not a run to continue; "
                              f"start a new run from them with --weights {path}")
    problem = _form_problem(state, resume)
    if problem:
        raise CheckpointError(f"{path}: not an alexspec checkpoint: {problem}")
    if expected_hash is not None:
        check_network(path, state, expected_hash)
    if not isinstance(state.get(DIGEST), str):
        raise CheckpointError(f"{path}: holds no content digest, so its contents cannot be checked; "
                              "it was not written by alexspec")
    if content_digest(state) != state[DIGEST]:
        raise CheckpointError(f"{path}: corrupt: its contents do not match the digest saved with them (a changed "
                              "byte); use an earlier checkpoint")
    return state


def check_network(path: Path, state: dict, expected_hash: str) -> None:
    """CheckpointError unless the checkpoint at `path` (loaded as `state`) is of the network whose
    hash is `expected_hash`."""
    if state["network_hash"] != expected_hash:
        home = home_of(path)
        run_dir = run_folder_of(home) if home is not None else None
        where = ""
        if run_dir is not None and _spec_hash(run_dir / RUN_SPEC) == state["network_hash"]:
            where = f" (its run folder's, {run_dir / RUN_SPEC}: give {run_dir} as SPEC)"
        elif run_dir is not None:
            where = f"; its run folder's {run_dir / RUN_SPEC} no longer describes it: undo the change made to it"
        raise CheckpointError(f"{path}: saved from another network (hash {state['network_hash']}, this spec "
                              f"{expected_hash}); use the spec it was trained from{where}")


def _spec_hash(spec: Path) -> str | None:
    """network_hash of the spec in file `spec` (None where it cannot be read or checked)."""
    from alexspec import analyse
    from alexspec.errors import SpecError

    try:
        return network_hash(analyse(str(spec)))
    except (SpecError, BadInput, OSError):
        return None


def check_classes(path: Path, state: dict, data, fix: str) -> None:
    """CheckpointError where the checkpoint at `path` (loaded as `state`) was trained on other
    classes than `data`'s (a Dataset), so that each of its outputs would be read as another class.
    A checkpoint that records no classes (imported weights, older runs) is not checked."""
    trained, found = state.get("classes"), list(data.classes)
    if trained is None or list(trained) == found:
        return
    if len(trained) == len(found):
        at = next(i for i, (was, now) in enumerate(zip(trained, found)) if was != now)
        differ = f"its output {at} is class {trained[at]!r}, where label {at} of {data.name} is {found[at]!r}"
    else:
        differ = (f"it was trained on {count(len(trained), 'class', 'classes')} ({listed(trained)}), {data.name} has "
                  f"{len(found)} ({listed(found)})")
    raise CheckpointError(f"{path}: trained on other classes than the data's: {differ}; {fix}")


def check_newest(path: Path, state: dict, run_dir: Path) -> None:
    """CheckpointError where `run_dir` holds checkpoints later than the one at `path` (loaded as
    `state`): a run continued from it there would replace them, and the metrics after its step."""
    later = sorted((step, p) for step, p in _numbered(folder(run_dir)) if step > state["step"])
    if later:
        names = listed([p.name for _, p in later], 3)
        raise CheckpointError(f"{path} is at step {state['step']}, but {run_dir} holds later checkpoints ({names}), "
                              f"which a run continued from it there would replace, with the metrics after step "
                              f"{state['step']}; continue it in a new folder (-o NEW_DIR), resume the newest "
                              f"({later[-1][1]}), or delete the later ones to go back in place")


def read_tensors(path: Path) -> dict:
    """Any file torch.save wrote of tensors and plain values (a torchvision .pth), read without
    running code; CheckpointError for anything else."""
    return _read(Path(path))


def _read(path: Path) -> dict:
    """What torch.load(weights_only=True) finds in a file torch.save wrote; CheckpointError otherwise."""
    with open(path, "rb") as handle:
        head = handle.read(MAX_PICKLE_SCAN)
    if not head.startswith(b"PK\x03\x04"):  # torch.save writes a zip archive; anything else is refused unloaded
        if not head:
            raise CheckpointError(f"{path}: not a checkpoint (an empty file)")
        names = _pickle_globals(head)
        if names:
            raise CheckpointError(f"{path}: refused: a pickle that imports {', '.join(names[:3])}, so loading it "
                                  "could run code; alexspec checkpoints hold only tensors and plain values")
        raise CheckpointError(f"{path}: not a checkpoint (not a file that torch.save writes)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        foreign = [name for name in _archive_globals(path) if not name.startswith(_SAFE_GLOBALS)]
        if foreign:
            raise CheckpointError(f"{path}: refused: it holds more than tensors and plain values (it imports "
                                  f"{', '.join(foreign[:3])}), so loading it could run code") from None
        raise CheckpointError(f"{path}: truncated or corrupt ({first_line(exc, 120)}); use an earlier checkpoint") from None
    except Exception as exc:  # torch raises many kinds for a damaged archive: none of them is a bug here
        raise CheckpointError(f"{path}: truncated or corrupt ({type(exc).__name__}: {first_line(exc, 120)}); "
                              "use an earlier checkpoint") from None


MAX_PICKLE_SCAN = 1 << 20


def _pickle_globals(data: bytes) -> list[str]:
    """The module.name globals a pickle would import (where `data` reads as a pickle at all)."""
    import pickletools

    names, strings = [], []
    try:
        for opcode, arg, _ in pickletools.genops(data):
            if opcode.name == "GLOBAL":
                names.append(str(arg).replace(" ", "."))
            elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                names.append(f"{strings[-2]}.{strings[-1]}")
            elif isinstance(arg, str):
                strings.append(arg)
    except Exception:  # not (or no longer) a pickle: what was read so far is what counts
        pass
    return names


_SAFE_GLOBALS = ("torch.", "collections.OrderedDict", "builtins.set", "_codecs.encode")  # what torch.save names


def _archive_globals(path: Path) -> list[str]:
    """The globals the pickle inside a torch.save archive would import ([] where it cannot be read)."""
    try:
        with zipfile.ZipFile(path) as archive:
            name = next(n for n in archive.namelist() if n.endswith("data.pkl"))
            return _pickle_globals(archive.read(name)[:MAX_PICKLE_SCAN])
    except Exception:  # not a readable archive: corrupt, as torch.load said
        return []


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_state_dict(value) -> bool:
    """Whether `value` is a mapping of parameter names to tensors (what load_state_dict takes)."""
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())


def _form_problem(state, resume: bool) -> str:
    """What is missing or malformed in a loaded checkpoint ('' when nothing): the weights always,
    and with `resume` everything a run continues from."""
    if not isinstance(state, dict):
        return f"it holds {type(state).__name__}, not a mapping"
    if not isinstance(state.get("network_hash"), str):
        return "no network hash (network_hash)"
    if not is_state_dict(state.get("model")):
        return "`model` is not a mapping of parameter names to tensors"
    classes = state.get("classes")
    if classes is not None and not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        return f"`classes` is {_shown(classes)}, not a list of class names"
    if not resume:
        return ""
    for key in ("epoch", "step_in_epoch", "step", "seed", "batch"):
        if not _is_int(state.get(key)) or state[key] < (1 if key == "batch" else 0):
            return f"`{key}` is {_shown(state.get(key))}, not a whole number{' >= 1' if key == 'batch' else ''}"
    optimizer = state.get("optimizer")
    if not isinstance(optimizer, dict) or not isinstance(optimizer.get("state"), dict) \
            or not isinstance(optimizer.get("param_groups"), list) \
            or not all(isinstance(g, dict) and isinstance(g.get("params"), list) for g in optimizer["param_groups"]):
        return "`optimizer` is not an optimizer's state (state and param_groups)"
    schedule = state.get("schedule")
    if not isinstance(schedule, dict) or not all(_is_number(schedule.get(k)) for k in ("scale", "drops", "best",
                                                                                       "stale")):
        return "`schedule` is not a learning-rate schedule's state (scale, drops, best, stale)"
    if not _is_number(state.get("best_top1_error")) or not isinstance(state.get("metrics"), dict):
        return "`best_top1_error` or `metrics` is missing"
    recipe = state.get("recipe", {})
    if not isinstance(recipe, dict) or not isinstance(recipe.get("overrides", []), list) \
            or not all(isinstance(o, str) for o in recipe.get("overrides", [])) \
            or not isinstance(recipe.get("data", ""), (str, type(None))) \
            or not all(recipe.get(k) is None or (_is_int(recipe[k]) and recipe[k] >= 1) for k in ("epochs", "batch")) \
            or not (recipe.get("seed") is None or _is_int(recipe["seed"])) \
            or not (recipe.get("devices") is None or (isinstance(recipe["devices"], list) and recipe["devices"]
                                                      and all(isinstance(d, str) for d in recipe["devices"]))) \
            or recipe.get("precision") not in (None, "fp32", "bf16") \
            or recipe.get("channels_last") not in (None, True, False):
        return "`recipe` is not a run's recipe (data, epochs, batch, seed, overrides, devices, precision, " \
               "channels_last)"
    return ""


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
