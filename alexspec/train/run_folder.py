"""A run folder: where one training run, and the runs that continue it, write everything.

A run writes only inside its own run folder: `-o/--output`, or, when it continues a checkpoint, the
folder that checkpoint's run wrote. alexspec marks the folders it makes with MARKER, which also
lists the numbered checkpoints its runs wrote: only those are ever pruned, so a user's own
files beside them are never deleted. A folder that holds other files and no marker is not
taken as a run folder.
"""
from __future__ import annotations

import json
from pathlib import Path

from alexspec import __version__
from alexspec.errors import BadInput
from alexspec.fsutil import lock_folder, remove_stray_temporaries, write_atomic
from alexspec.spec.bundled import RECIPE, RUN_SPEC

MARKER = "alexspec-run.json"
LOCK = ".alexspec-run.lock"  # held by the run writing the folder (see claim)


def is_run_folder(path: Path) -> bool:
    """Whether alexspec made `path` as a run folder."""
    return (Path(path) / MARKER).is_file()


def _marker(run_dir: Path) -> dict:
    try:
        data = json.loads((Path(run_dir) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def checkpoints_written(run_dir: Path) -> list[str]:
    """The checkpoint files (names in checkpoints/) that this folder's runs wrote."""
    names = _marker(run_dir).get("checkpoints", [])
    return [n for n in names if isinstance(n, str) and "/" not in n and "\\" not in n] \
        if isinstance(names, list) else []


def record_checkpoints(run_dir: Path, names: list[str]) -> None:
    """Mark `run_dir` as a run folder whose runs wrote the checkpoints `names`."""
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    write_atomic(Path(run_dir) / MARKER, json.dumps({"made_by": f"alexspec {__version__}",
                                                     "checkpoints": names}, indent=1) + "\n")


def claim(run_dir: Path, continuing: bool):
    """Make `run_dir` this run's folder, or refuse (BadInput) where that could overwrite files
    that are not this run's: a folder another run is writing now, a folder with files and no
    marker, or (for a new run) a run folder that already holds checkpoints. Leftovers of saves a
    crash interrupted are removed. Returns the folder's lock, held until it is closed (or the
    process ends): while one run holds it, no other claims the folder."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise BadInput(f"{run_dir}: is a file, not a run folder; give a folder with -o/--output")
    held = [p.name for p in run_dir.iterdir()] if run_dir.is_dir() else []
    if held and held != [LOCK] and not is_run_folder(run_dir):
        raise BadInput(f"{run_dir}: holds files and is not a run folder alexspec made; give -o/--output a new or "
                       "empty folder")
    lock = _lock(run_dir)
    try:
        if not continuing and checkpoints_written(run_dir):
            raise BadInput(f"{run_dir}: already holds a run's checkpoints; continue it with --resume {run_dir}, or "
                           "give -o/--output another folder")
        if not is_run_folder(run_dir):
            record_checkpoints(run_dir, [])
        for folder in (run_dir, run_dir / "checkpoints"):
            remove_stray_temporaries(folder)
    except BaseException:
        lock.close()
        raise
    return lock


def _lock(run_dir: Path):
    """The lock on `run_dir` (LOCK); BadInput where another process holds it."""
    def busy(holder: str) -> BadInput:
        return BadInput(f"{run_dir}: another run is writing this folder now{f' ({holder})' if holder else ''}; wait "
                        "for it to end, or give -o/--output another folder")

    return lock_folder(run_dir, LOCK, busy)


def default(name: str) -> Path:
    """runs/<name>-<date>-<time>, made now and new: where a run started in the same second made
    that folder, -2 (-3, ...) is added, so two runs never share one."""
    base = Path("runs") / f"{name}-{_now().strftime('%Y%m%d-%H%M%S')}"
    base.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, 10_000):
        folder = base if attempt == 1 else base.with_name(f"{base.name}-{attempt}")
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        return folder
    raise BadInput(f"{base}: 10,000 run folders of this name already; give -o/--output a folder")


def _now():
    import datetime

    return datetime.datetime.now()


def append_metrics(run_dir: Path, record: dict) -> None:
    """One line of metrics.jsonl (a step's loss, an epoch's validation)."""
    with open(Path(run_dir) / "metrics.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def read_metrics(run_dir: Path) -> tuple[list[dict], int]:
    """metrics.jsonl's records, and how many of its lines are none: a line a stopped run cut short
    (its last), or one edited by hand, is left out, not a reason to refuse the rest."""
    records, unreadable = [], 0
    for line in (Path(run_dir) / "metrics.jsonl").read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict) and isinstance(record.get("step"), int) and "kind" in record:
            records.append(record)
        else:
            unreadable += 1
    return records, unreadable


def truncate_metrics(run_dir: Path, step: int) -> None:
    """Drop metrics.jsonl's lines past `step` (written after the checkpoint a run resumes from),
    and any line that is no record."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return
    records, _ = read_metrics(run_dir)
    write_atomic(path, "".join(json.dumps(record) + "\n" for record in records if record["step"] <= step))


def write_recipe(run_dir: Path, spec: dict, config: dict) -> None:
    """RUN_SPEC (the spec as run, overrides applied) and RECIPE (everything else it ran with)."""
    import yaml

    write_atomic(Path(run_dir) / RUN_SPEC, yaml.safe_dump(spec, sort_keys=False))
    write_atomic(Path(run_dir) / RECIPE, json.dumps(config, indent=2) + "\n")


def recorded(run_dir: Path) -> dict:
    """What the run in `run_dir` ran with, as its RECIPE records it: its data source, devices (as
    given; absent: the spec's placement), precision and memory format, each where recorded and of
    its kind."""
    try:
        config = json.loads((Path(run_dir) / RECIPE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(config, dict):
        return {}
    kinds = {"data": lambda v: isinstance(v, str),
             "devices": lambda v: isinstance(v, list) and v and all(isinstance(d, str) for d in v),
             "precision": lambda v: v in ("fp32", "bf16"), "channels_last": lambda v: isinstance(v, bool)}
    return {key: config[key] for key, of_kind in kinds.items() if key in config and of_kind(config[key])}
