"""One `alexspec train`: a new run, or one continued from a checkpoint whose recipe (data,
epochs, batch, seed, --set overrides, devices, precision, memory format) it takes where the
command line leaves it open; the checkpoint and the spec checked before anything is written, the
run folder claimed (alexspec.train.run_folder), then the loop (alexspec.train.loop)."""
from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Optional

import torch

from alexspec.errors import BadInput
from alexspec.spec import Document, load_file
from alexspec.spec.overrides import apply_overrides
from alexspec.train import checkpoint, run_folder
from alexspec.train.data import check_recorded
from alexspec.train.loop import RunResult, TrainConfig, Trainer
from alexspec.words import count


def _resume_target(config: TrainConfig) -> tuple[Optional[Path], Optional[Path]]:
    """(the checkpoint to continue, the run folder to write) for config's --resume and -o/--output.

    The run folder is -o/--output, else the checkpoint's own run folder where alexspec made it, else
    None (a new one)."""
    out = Path(config.out) if config.out else None
    if config.resume is None:
        return None, out
    target = Path(config.resume) if config.resume else out
    if target is None:
        raise checkpoint.CheckpointError("--resume alone continues the run in -o/--output: give -o RUN_DIR, or "
                                         "--resume RUN_DIR, or --resume CHECKPOINT_FILE, or the run folder as SPEC")
    if target.is_dir():
        found, home = checkpoint.latest(target), target
        if found is None:
            raise checkpoint.CheckpointError(f"{target}: no checkpoint to resume from (no checkpoints/step-*.pt)")
    else:
        found, home = target, checkpoint.home_of(target)
    if out is None and home is not None and run_folder.is_run_folder(home):
        out = home
    return found, out


def _with_recipe(config: TrainConfig, recipe: dict) -> TrainConfig:
    """`config` with what it leaves open taken from a resumed run's recipe (its --set overrides
    first, then this run's)."""
    return replace(config, data=config.data or recipe.get("data"), epochs=config.epochs or recipe.get("epochs"),
                   batch=config.batch or recipe.get("batch"),
                   seed=config.seed if config.seed is not None else recipe.get("seed"),
                   overrides=[*recipe.get("overrides", []), *config.overrides],
                   devices=config.devices or recipe.get("devices"),
                   precision=config.precision or recipe.get("precision"),
                   channels_last=config.channels_last if config.channels_last is not None
                   else recipe.get("channels_last"))


def _processes(trainer: Trainer) -> str:
    """How a data-parallel run splits each batch, for its first line ('' in one process)."""
    world = trainer.dist.world
    if world == 1:
        return ""
    return f" in each of {world} processes (DDP, about {trainer.batch // world} images each a step)"


def _continues_in(resume_from: Optional[Path], run_dir: Path) -> bool:
    """Whether the run continues a checkpoint of `run_dir` itself (so its checkpoints are this run's;
    a checkpoint of another run is continued in a folder of its own)."""
    home = checkpoint.home_of(resume_from) if resume_from is not None else None
    return home is not None and home.resolve() == Path(run_dir).resolve()


def start(spec: str | Path | Document, config: TrainConfig, log=print) -> RunResult:
    """Train `spec` (a file or a loaded Document; config.overrides applied): a new run, or one
    continued from a checkpoint (config.resume), whose recipe it takes where config leaves it open.

    The checkpoint and the spec are checked before anything is written, and the run writes only
    inside its run folder (alexspec.train.run_folder)."""
    if config.weights is not None and config.resume is not None:
        raise BadInput("--weights starts a new run from weights and --resume continues a run (its weights "
                       "included): give one of them")
    resume_from, run_dir = _resume_target(config)
    state = None
    if resume_from is not None:
        state = checkpoint.load(resume_from, resume=True)
        if config.data is None and state.get("recipe", {}).get("data"):
            check_recorded(state["recipe"]["data"], str(checkpoint.home_of(resume_from) or resume_from))
        config = _with_recipe(config, state.get("recipe", {}))
    doc = spec if isinstance(spec, Document) else load_file(spec)
    if config.overrides:
        doc = apply_overrides(doc, config.overrides)
    trainer = Trainer(doc, config, log)
    if state is not None:
        checkpoint.check_network(resume_from, state, trainer.network_hash)
        trainer.restore(state)
    if config.weights is not None:
        source = checkpoint.in_run_folder(Path(config.weights))
        trainer.start_from(checkpoint.load(source)["model"], source)
    data = trainer.open_data()  # a bad data source is refused before a run folder exists
    if state is not None:
        trained_on = state.get("recipe", {}).get("data")
        checkpoint.check_classes(resume_from, state, data, f"resume on the run's data ({trained_on}), or train a new run")
    if run_dir is None:  # a new folder, made by the process that writes (DDP: rank 0; the others only name it)
        run_dir = run_folder.default(trainer.net.name) if trainer.dist.main else Path("runs") / trainer.net.name
        if resume_from is not None:
            log(f"{resume_from} is not in a run folder alexspec made; the continued run writes to {run_dir}")
    lock = None
    try:
        if trainer.dist.main:
            lock = run_folder.claim(run_dir, continuing=_continues_in(resume_from, run_dir))
            if state is not None:
                checkpoint.check_newest(resume_from, state, run_dir)
            resolved = {**asdict(replace(trainer.config, out=str(run_dir))), **trainer.recipe(),
                        "backend": trainer.build.backend, "device": str(trainer.device),
                        "world_size": trainer.dist.world, "network_hash": trainer.network_hash,
                        "torch": torch.__version__}
            run_folder.write_recipe(run_dir, doc.data, resolved)
            log(f"training {trainer.net.name} ({trainer.info.total_params:,} params) on {trainer.data}: "
                f"{count(trainer.epochs, 'epoch')}, batch {trainer.batch}, {trainer.build.backend_reason}, device "
                f"{trainer.device}{_processes(trainer)}; run folder {run_dir}")
        return trainer.run(run_dir, data, state, resume_from)
    finally:
        if lock is not None:
            lock.close()
        trainer.dist.close()
