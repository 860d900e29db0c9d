"""The training loop: any compiled spec, any data source, the spec's recipe, resumable.

Every random choice in a step (data order, crops, flips, lighting, dropout) derives from
(seed, epoch, step), so a run resumed from a checkpoint continues exactly as it would have:
on CPU an interrupted and resumed run ends bit-identical to an uninterrupted one. SIGINT and
SIGTERM only set a flag; the loop saves at the next step boundary and exits cleanly.
Data parallelism: run under torchrun (WORLD_SIZE > 1; alexspec.train.distributed). The step
itself (forward, loss, backward, update, CUDA graph) is alexspec.train.step's, which
`alexspec bench` times; validation is alexspec.train.evaluate's.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
import contextlib
import math
from pathlib import Path
import signal
import sys
import time
from typing import Optional

import torch

from alexspec import ir, settings
from alexspec.builder import Build, build, fit, load_state
from alexspec.errors import BadInput, TrainingError
from alexspec.memory_check import batch_warning
from alexspec.report import unchecked_note
from alexspec.spec import Document
from alexspec.train import checkpoint, graphed, run_folder
from alexspec.train.augment import NetworkInput
from alexspec.train.data import Dataset, lasting, on_device_ahead, open_data, read_ahead
from alexspec.train.distributed import Distributed, per_process
from alexspec.train.evaluate import check_data, classes_not_validated, evaluate, small_crops, unused_outputs
from alexspec.train.image_folder import left_out
from alexspec.train.losses import PendingLosses
from alexspec.train.progress import Progress
from alexspec.train.recipe import Schedule, optimizer as make_optimizer, set_lr
from alexspec.train.step import TrainingStep, loss_function
from alexspec.train.weight_copies import WeightCopies
from alexspec.words import count, listed


@dataclass
class TrainConfig:
    """Everything a run needs besides the spec (command-line options; None: the spec's value)."""

    data: Optional[str] = None       # None: the resumed run's, else digits
    overrides: list[str] = field(default_factory=list)  # --set KEY=VALUE, applied to the spec
    epochs: Optional[int] = None
    batch: Optional[int] = None
    out: Optional[str] = None
    resume: Optional[str] = None
    weights: Optional[str] = None    # a new run starts from these weights (a checkpoint, or a run folder's best)
    devices: Optional[list[str]] = None
    backend: str = "auto"
    precision: Optional[str] = None  # None: the resumed run's, else fp32
    channels_last: Optional[bool] = None  # None: the resumed run's, else False
    cuda_graphs: str = "auto"        # auto: the step as one CUDA graph where it can be (see alexspec.train.graphed)
    weight_copies: str = "auto"      # auto: bf16 SGD runs on bf16 copies of the weights (alexspec.train.weight_copies)
    seed: Optional[int] = None
    log_every: int = 20
    checkpoint_every: int = 0      # steps between mid-epoch checkpoints (0: end of each epoch only)
    keep: int = 3
    max_steps: Optional[int] = None  # stop after this many steps in total (tests, smoke runs)
    workers: int = 4                 # threads reading shard batches ahead
    progress: Optional[bool] = None  # None: a bar on a terminal, plain lines otherwise


@dataclass
class RunResult:
    run_dir: Path
    steps: int
    epochs_done: int
    last: dict = field(default_factory=dict)  # the last epoch's metrics
    stopped_by_signal: bool = False
    stopped_at_max_steps: bool = False


class _StopFlag:
    """Set by SIGINT/SIGTERM; the loop acts on it between steps (never save in a handler)."""

    def __init__(self):
        self.signal: Optional[int] = None
        self.previous = {}

    def __enter__(self):
        if threading_main():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.signal = signum

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


@dataclass
class Position:
    """Where a run is: what a checkpoint saves and a resumed run starts from."""

    epoch: int = 0
    step_in_epoch: int = 0  # steps of `epoch` already run
    step: int = 0           # steps run in all
    best: float = math.inf  # the best top-1 error of an epoch so far
    last: dict = field(default_factory=dict)  # the last epoch's metrics
    loss_sum: float = 0.0   # of `epoch`'s steps so far

    @classmethod
    def of(cls, state: dict) -> "Position":
        return cls(state["epoch"], state["step_in_epoch"], state["step"], state["best_top1_error"], state["metrics"],
                   float(state.get("epoch_loss_sum", 0.0)))


class _EpochLosses:
    """An epoch's step losses: kept on the device and read a window at a time (one host sync per
    window; data parallel, averaged over the processes), summed for the epoch's mean, every
    log_every-th written to metrics.jsonl; a non-finite one stops the run (every process)."""

    def __init__(self, trainer: "Trainer", run_dir: Path, epoch: int, loss_sum: float):
        self.trainer, self.run_dir, self.epoch = trainer, run_dir, epoch
        self.pending, self.sum, self.latest = PendingLosses(), loss_sum, None
        self.start, self.seen = time.perf_counter(), 0

    def rate(self) -> float:
        """Images a second of this process so far in the epoch."""
        return self.seen / max(time.perf_counter() - self.start, 1e-9)

    def settle(self) -> None:
        rate = self.rate()
        for at, lr, loss in self.pending.read(combine=self.trainer.dist.mean):  # DDP: the processes' mean
            if not math.isfinite(loss):
                raise TrainingError(f"the loss became {loss} at epoch {self.epoch + 1}, step {at}; the last good "
                                    f"checkpoint is in {checkpoint.folder(self.run_dir)}. Lower the learning rate "
                                    f"(now {lr:g}) or check the data")
            self.sum, self.latest = self.sum + loss, loss
            if self.trainer.dist.main and at % self.trainer.config.log_every == 0:
                run_folder.append_metrics(self.run_dir, {"kind": "step", "epoch": self.epoch + 1, "step": at,
                                                         "loss": loss, "lr": lr, "images_per_s": round(rate, 1)})


class Trainer:
    def __init__(self, doc: Document, config: TrainConfig, log=print):
        config = replace(config, precision=config.precision or "fp32", channels_last=bool(config.channels_last))
        self.config, self.log = config, log
        self.devices = per_process(config.devices)  # torchrun: one GPU per process
        spec_training = doc.data.get("training") if isinstance(doc.data, dict) else None
        spec_seed = spec_training.get("seed", 0) if isinstance(spec_training, dict) else 0
        torch.manual_seed(config.seed if config.seed is not None else spec_seed)  # the initial weights
        built = build(doc, config.backend, self.devices, training=True)
        self.build: Build = built
        self.info = built.info
        self.net = built.info.network
        self.training = self.net.training or ir.Training()
        self.data = config.data or "digits"
        self.epochs = config.epochs or self.training.epochs
        self.batch = config.batch or self.training.batch
        self.seed = self.training.seed if config.seed is None else config.seed
        self.device = torch.device(_first_device(built.module))
        self.batch_of_one_problem = self.info.batch_of_one_problem
        world = settings.current().world_size
        if self.batch < self._fewest_images() * world:
            raise BadInput(f"the batch, {self.batch}, is too small: {self._share_needs(world)}; give --batch "
                           f"{self._fewest_images() * world} or more")
        self.dist = Distributed(str(self.device))
        warning = batch_warning(self.info, built.devices, math.ceil(self.batch / self.dist.world),
                                config.precision)
        if warning and self.dist.main:
            log(f"warning: {warning}")
        self.module = built.module
        if config.channels_last:
            self.module = self.module.to(memory_format=torch.channels_last)
        self.model = self.module
        if self.dist.world > 1:
            self.model = torch.nn.parallel.DistributedDataParallel(self.module)
        self.inputs = NetworkInput(self.net.input, self.training.augmentation, self.device, config.channels_last)
        self.copies = self._weight_copies(config.weight_copies)
        self.optimizer = make_optimizer(self.module, built.generated.attributes, self.training, self.copies)
        self.training_step = TrainingStep(self.copies if self.copies is not None else self.model, self.module,
                                          self.optimizer, loss_function(self.net, self.training), config.precision,
                                          graph=self._step_as_graph(config.cuda_graphs))
        self.kernels_compiled = False
        self.classes: Optional[list[str]] = None  # the data's, once opened: each checkpoint records them
        self.schedule = Schedule(self.training, self.epochs)
        unchecked = [unchecked_note(self.info)] if self.info.unchecked else []
        for note in self.schedule.notes() + unchecked if self.dist.main else ():
            log(f"note: {note}")
        self.network_hash = checkpoint.network_hash(self.info)
        self.doc = doc

    def evaluate(self, data: Dataset, crops: int = 1) -> dict:
        """Loss and top-1/top-5 error on the validation split (alexspec.train.evaluate); data parallel,
        each process validates its share, with rank 0's buffers."""
        self.dist.share_buffers(self.module)
        return evaluate(self.module, self.net, data, self.inputs, self.config.precision, crops, dist=self.dist)

    def recipe(self) -> dict:
        """What a resumed run takes from its checkpoint unless told otherwise: the data, epochs,
        batch, seed, --set overrides, devices (as given; None: the spec's placement), precision and
        memory format (so `--resume RUN_DIR` alone continues the same run)."""
        return {"data": lasting(self.data), "epochs": self.epochs, "batch": self.batch, "seed": self.seed,
                "overrides": list(self.config.overrides), "devices": self.config.devices,
                "precision": self.config.precision, "channels_last": self.config.channels_last}

    def state(self, at: Position) -> dict:
        optimizer = self.optimizer.state_dict()
        for group in optimizer["param_groups"]:  # a graphed step keeps its rates on the GPU: save numbers
            if isinstance(group["lr"], torch.Tensor):
                group["lr"] = group["lr"].item()
        return {"model": self.module.state_dict(), "optimizer": optimizer,
                "schedule": self.schedule.state_dict(), "epoch": at.epoch, "step_in_epoch": at.step_in_epoch,
                "step": at.step, "best_top1_error": at.best, "metrics": at.last, "network_hash": self.network_hash,
                "seed": self.seed, "batch": self.batch, "spec_name": self.net.name, "recipe": self.recipe(),
                "epoch_loss_sum": at.loss_sum, "classes": self.classes}

    def restore(self, state: dict) -> None:
        """Load a checked checkpoint of this network (checkpoint.load(..., resume=True), then
        checkpoint.check_network): weights, optimizer, schedule."""
        load_state(self.module, state["model"])
        if self.copies is not None:
            self.copies.refresh()
        try:
            load_optimizer_state(self.optimizer, state["optimizer"])
        except ValueError:  # saved with another tower placement: its per-tensor momentum does not map
            self.log("note: the checkpoint's optimizer state belongs to another placement of the towers; "
                     "the weights carry over, momentum restarts from zero")
        except (KeyError, TypeError, IndexError) as exc:
            raise checkpoint.CheckpointError(f"the checkpoint's optimizer state does not fit this optimizer "
                                             f"({type(exc).__name__}: {exc})") from None
        self.schedule.load_state_dict(state["schedule"])

    def start_from(self, weights: dict, source: Path) -> None:
        """Load the weights of `weights` (a state dict) that fit this network, by name and shape, for a
        new run; the layers none fit keep the spec's initialisation (a new last layer for other
        classes), and a note names them. CheckpointError where none fit."""
        own = self.module.state_dict()
        found = fit(own, weights)
        if not found.fits:
            raise checkpoint.CheckpointError(f"{source}: none of its weights fit {self.net.name} (no layer of the same "
                                             "name and shape); were they saved from another kind of network?")
        self.module.load_state_dict({**own, **found.fits})
        if self.copies is not None:
            self.copies.refresh()
        fresh = _layers([key for key in own if key not in found.fits])  # in the network's order
        unused = _layers(found.unexpected)
        if self.dist.main:
            self.log(f"starting from the weights in {source}" + (
                f"; the spec initialises {listed(fresh)}, for which {source.name} holds no weights of the right "
                "shape" if fresh else "") + (f"; not used: {listed(unused)} (no layer of that name here)" if unused
                                             else ""))

    def open_data(self) -> Dataset:
        """The run's data source, opened and checked against the network."""
        data = open_data(self.data, self.net.input, self.info.output_shape[0],
                         self.training.augmentation.resize, self.seed,
                         progress=sys.stderr.isatty() if self.dist.main else None)
        check_data(data, self.net, self.info.output_shape[0])
        self.classes = list(data.classes)
        notes = [unused_outputs(data, self.net, self.info.output_shape[0]),
                 small_crops(data, self.net, self.training.augmentation.resize), classes_not_validated(data)]
        for note in filter(None, notes) if self.dist.main else ():
            self.log(note)
        if self.batch > len(data.train) and self.dist.main:
            self.log(f"note: the batch, {self.batch:,}, is larger than the {len(data.train):,} training images: each "
                     f"epoch is one step of all {len(data.train):,}")
        if data.unreadable:
            self.log(left_out(data.unreadable))
        return data

    def run(self, run_dir: Path, data: Dataset, resumed: Optional[dict] = None,
            resumed_from: Optional[Path] = None) -> RunResult:
        """Train on `data` in `run_dir`, from the start or from `resumed` (a checkpoint's state,
        already restored)."""
        steps_per_epoch = self._steps_per_epoch(len(data.train))
        at = Position() if resumed is None else self._resumed_at(resumed, resumed_from, steps_per_epoch)
        if self.dist.main:
            run_folder.truncate_metrics(run_dir, at.step)
        at.step_in_epoch = min(at.step_in_epoch, steps_per_epoch)  # saved after the epoch's last step: only its end
        if self.config.max_steps is not None and at.step >= self.config.max_steps:
            self.log(f"the run is at step {at.step} already (--max-steps {self.config.max_steps}): nothing to do")
            return RunResult(run_dir, at.step, at.epoch, at.last, stopped_at_max_steps=True)
        if at.epoch >= self.epochs:
            more = f", more than --epochs {self.epochs}" if at.epoch > self.epochs else ""
            self.log(f"the run has trained {count(at.epoch, 'epoch')} already{more}: nothing to do "
                     f"(--epochs {at.epoch + 10} trains it 10 more)")
        self.module.train()
        with _StopFlag() as stop, Progress(self.epochs, steps_per_epoch, self.dist.main, self.log,
                                           self.config.progress) as progress:
            while at.epoch < self.epochs:
                losses = _EpochLosses(self, run_dir, at.epoch, at.loss_sum if at.step_in_epoch else 0.0)
                stopped = self._train_epoch(run_dir, data, at, steps_per_epoch, losses, stop, progress)
                if stopped is not None:
                    return stopped
                self._end_epoch(run_dir, data, at, steps_per_epoch, losses, progress)
        return RunResult(run_dir, at.step, at.epoch, at.last)

    def _fewest_images(self) -> int:
        """The fewest images a process's share of a batch may hold: 1, or 2 where a batchnorm
        normalises over one value an image."""
        return 2 if self.batch_of_one_problem else 1

    def _share_needs(self, world: int) -> str:
        """Why a batch must give each of `world` processes _fewest_images: a process with no image
        would make the loss NaN; a batchnorm cannot normalise one value."""
        if world == 1:
            return self.batch_of_one_problem
        if self.batch_of_one_problem:
            return f"it cannot give each of the {world} processes 2 images ({self.batch_of_one_problem})"
        return f"it cannot give each of the {world} processes an image"

    def _steps_per_epoch(self, images: int) -> int:
        """The batches of an epoch of `images`; a last batch too small for every process's share
        (_share_needs) is left out, and the log says so."""
        full, rest = divmod(images, self.batch)
        if 0 < rest < self._fewest_images() * self.dist.world:
            if self.dist.main:
                self.log(f"note: each epoch's last batch, {count(rest, 'image')}, is left out: "
                         f"{self._share_needs(self.dist.world)}")
            return full
        return full + (rest > 0)

    def _resumed_at(self, resumed: dict, resumed_from: Optional[Path], steps_per_epoch: int) -> Position:
        at = Position.of(resumed)
        if resumed["batch"] != self.batch or resumed["seed"] != self.seed:
            self.log(f"note: batch/seed differ from the checkpoint's ({resumed['batch']}/{resumed['seed']}); the "
                     "run continues but will not repeat the original exactly")
        planned = resumed.get("recipe", {}).get("epochs")
        if planned and planned != self.epochs and self.schedule.spans_the_run and at.epoch < self.epochs:
            fraction = min(at.step_in_epoch, steps_per_epoch) / steps_per_epoch
            was, now = Schedule(self.training, planned).lr(at.epoch, fraction), self.schedule.lr(at.epoch, fraction)
            self.log(f"note: the run's {self.schedule.spec.type} schedule was made for {count(planned, 'epoch')} and "
                     f"now spans {self.epochs}, so the learning rate from step {at.step} is {now:.3g} where the "
                     f"{planned}-epoch schedule gave {was:.3g}" + (" (it rises again)" if now > was else ""))
        self.log(f"resumed from {resumed_from} at epoch {at.epoch + 1}, step {at.step}")
        return at

    def _train_epoch(self, run_dir: Path, data: Dataset, at: Position, steps_per_epoch: int,
                     losses: _EpochLosses, stop: "_StopFlag", progress: Progress) -> Optional[RunResult]:
        """The rest of epoch `at.epoch`, from step `at.step_in_epoch`; a RunResult where a signal or
        --max-steps stopped the run (saved), None at the epoch's end."""
        config, epoch = self.config, at.epoch
        order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(self.seed * 7919 + epoch))
        shares = [order[i * self.batch:(i + 1) * self.batch][self.dist.rank::self.dist.world]
                  for i in range(at.step_in_epoch, steps_per_epoch)]  # this process's share of each batch
        self.lr = self.schedule.lr(epoch, max(at.step_in_epoch - 1, 0) / steps_per_epoch)  # the last step's
        cuda = self.device.type == "cuda"
        with contextlib.closing(read_ahead(data.train, shares, config.workers, pin=cuda)) as read, \
                contextlib.closing(on_device_ahead(read, self.device)) as batches:
            for index, (images, labels) in zip(range(at.step_in_epoch, steps_per_epoch), batches):
                self.lr = self.schedule.lr(epoch, index / steps_per_epoch)
                set_lr(self.optimizer, self.lr)
                losses.pending.add(at.step + 1, self.lr, self.step(images, labels, at.step))
                at.step += 1
                losses.seen += min(self.batch, len(data.train) - index * self.batch)
                signalled = self.dist.any(stop.signal is not None)
                at_max = config.max_steps is not None and at.step >= config.max_steps
                saving = signalled or at_max or (config.checkpoint_every and at.step % config.checkpoint_every == 0)
                if saving or at.step % config.log_every == 0 or index + 1 == steps_per_epoch:
                    losses.settle()  # the one host sync of these steps
                progress.update(epoch, index + 1, losses.latest, self.lr, losses.rate())
                if saving:  # index + 1 may be the epoch's end: a resumed run then only ends the epoch
                    at.step_in_epoch, at.loss_sum = index + 1, losses.sum
                    self._save(run_dir, self.state(at), at.step)
                if signalled or at_max:
                    why = "by signal" if signalled else f"at --max-steps {config.max_steps}"
                    self.log(f"stopped {why} at epoch {epoch + 1}, step {at.step}; checkpoint saved in "
                             f"{checkpoint.folder(run_dir)}")
                    return RunResult(run_dir, at.step, epoch, at.last, stopped_by_signal=signalled,
                                     stopped_at_max_steps=not signalled)
        losses.settle()
        return None

    def _end_epoch(self, run_dir: Path, data: Dataset, at: Position, steps_per_epoch: int, losses: _EpochLosses,
                   progress: Progress) -> None:
        """Validate, apply the plateau rule, write the epoch's metrics and save its checkpoint."""
        seconds = time.perf_counter() - losses.start
        at.last = {"kind": "epoch", "epoch": at.epoch + 1, "step": at.step, "lr": self.lr,
                   "train_loss": losses.sum / max(steps_per_epoch, 1), **self.evaluate(data),
                   "seconds": round(seconds, 2), "images_per_s": round(losses.seen / max(seconds, 1e-9), 1)}
        improved = at.last["top1_error"] < at.best
        at.best = min(at.best, at.last["top1_error"])
        if self.schedule.observe(at.last["top1_error"]):
            self.log(f"validation error stopped improving: learning rate divided (drop "
                     f"{self.schedule.drops} of {self.training.schedule.times})")
        at.epoch, at.step_in_epoch, at.loss_sum = at.epoch + 1, 0, 0.0
        if self.dist.main:
            run_folder.append_metrics(run_dir, at.last)
        progress.epoch_done(at.last)
        self._save(run_dir, self.state(at), at.step, best=improved)

    def step(self, images: torch.Tensor, labels: torch.Tensor, step: int) -> torch.Tensor:
        """One optimizer step on this process's share of a global batch; its loss, on the device."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + step * 31 + self.dist.rank)
        torch.manual_seed(self.seed * 1_000_033 + step * 37 + self.dist.rank)  # dropout masks
        x = self.inputs(images, generator, train=True)
        labels = labels.to(self.device)
        if not self.kernels_compiled:
            self._compile_kernels_ahead(x)
        return self.training_step(x, labels)

    def _compile_kernels_ahead(self, x: torch.Tensor) -> None:
        """Compile every Triton kernel of a training and a validation step at once, before the
        first step (on a GPU, with the triton backend): see alexspec.kernels.tuning.ahead."""
        self.kernels_compiled = True
        if self.build.backend != "triton" or self.device.type != "cuda":
            return
        seconds = self.training_step.compile_ahead(x, inference=True)
        if seconds is not None:
            self.log(f"compiled the Triton kernels (every autotune config) in {seconds:.1f} s; the first steps time them")

    def _weight_copies(self, mode: str) -> Optional[WeightCopies]:
        """bf16 copies of the weights, written by the SGD step, when `mode` (auto|on|off) and this
        run allow them (bf16, SGD, one process)."""
        if mode not in ("auto", "on", "off"):
            raise BadInput(f"weight_copies must be one of auto, on, off, got {mode!r}")
        reason = None
        if self.config.precision != "bf16":
            reason = "they serve bf16 training (--precision bf16)"
        elif self.training.optimizer != "sgd":
            reason = f"only the SGD step writes them, and the spec's optimizer is {self.training.optimizer}"
        elif self.dist.world > 1:
            reason = "the run is data parallel (DDP reduces the fp32 weights' gradients)"
        if mode == "on" and reason:
            raise BadInput(f"--weight-copies on cannot be kept: {reason}; use --weight-copies auto or off")
        if mode == "off" or reason:
            return None
        copies = WeightCopies(self.module)
        if not len(copies):
            return None
        self.log(f"the conv and fully connected layers run on bf16 copies of their {len(copies)} weights and biases, "
                 "written by the SGD step (--weight-copies off: autocast casts them each step)")
        return copies

    def _step_as_graph(self, mode: str) -> bool:
        """Whether the step runs as a CUDA graph: `mode` (auto|on|off) and this run allow it."""
        if mode not in graphed.MODES:
            raise BadInput(f"cuda_graphs must be one of {', '.join(graphed.MODES)}, got {mode!r}")
        reason = graphed.unavailable_reason({p.device for p in self.module.parameters()}, self.dist.world)
        if mode == "on" and reason:
            raise BadInput(f"--cuda-graphs on cannot be kept: {reason}; use --cuda-graphs auto or off")
        if mode == "off" or reason:
            if mode == "auto" and self.device.type == "cuda":
                self.log(f"the training step runs eagerly: {reason}")
            return False
        self.log("the training step runs as one CUDA graph after 3 ordinary steps (--cuda-graphs off: eagerly)")
        return True

    def _save(self, run_dir: Path, state: dict, step: int, best: bool = False) -> None:
        if not all(torch.isfinite(p).all() for p in self.module.parameters()):
            raise TrainingError(f"the weights are no longer finite at step {step}; not saving them. The last good "
                                f"checkpoint is in {checkpoint.folder(run_dir)}; lower the learning rate")
        if self.dist.main:
            checkpoint.save(run_dir, state, step, self.config.keep, best)
        self.dist.barrier()


def _layers(keys: list[str]) -> list[str]:
    """The layers that state-dict keys (`conv1.weight`) belong to, each once, in order."""
    return list(dict.fromkeys(key.rsplit(".", 1)[0] for key in keys))


def load_optimizer_state(optimizer: torch.optim.Optimizer, saved: dict) -> None:
    """optimizer.load_state_dict(saved), keeping how this run's optimizer steps (fused, foreach):
    torch takes those from the saved groups too, and the run that saved them may have stepped
    another way (on bf16 weight copies, on another device)."""
    how = [{key: group[key] for key in ("fused", "foreach") if key in group} for group in optimizer.param_groups]
    optimizer.load_state_dict(saved)
    for group, kept in zip(optimizer.param_groups, how):
        group.update(kept)


def _first_device(module: torch.nn.Module) -> str:
    for param in module.parameters():
        return str(param.device)
    return "cpu"
