"""The training loop: any compiled spec, any data source, the spec's recipe, resumable.

Every random choice in a step (data order, crops, flips, lighting, dropout) derives from
(seed, epoch, step), so a run resumed from a checkpoint continues exactly as it would have:
on CPU an interrupted and resumed run ends bit-identical to an uninterrupted one. SIGINT and
SIGTERM only set a flag; the loop saves at the next step boundary and exits cleanly.
Data parallelism: run under torchrun (WORLD_SIZE > 1) and each process takes its share of
every global batch; gradients are averaged by DistributedDataParallel; rank 0 writes.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
import contextlib
import datetime
import functools
import json
import math
from pathlib import Path
import signal
import sys
import time
from typing import Optional

import torch
import torch.nn.functional as F
import yaml

from alexspec import ir, settings
from alexspec.builder import Build, build, load_state
from alexspec.errors import BadInput, TrainingError
from alexspec.fsutil import write_atomic
from alexspec.spec import Document, load_file
from alexspec.spec.overrides import apply_overrides
from alexspec.train import augment, checkpoint, graphed, run_folder
from alexspec.train.data import Dataset, on_device_ahead, open_data, read_ahead
from alexspec.train.losses import PendingLosses
from alexspec.train.recipe import Schedule, optimizer as make_optimizer, set_lr
from alexspec.train.weight_copies import WeightCopies
from alexspec.words import count


@dataclass
class TrainConfig:
    """Everything a run needs besides the spec (command-line options; None: the spec's value)."""

    data: Optional[str] = None       # None: the resumed run's, else digits
    overrides: list[str] = field(default_factory=list)  # --set KEY=VALUE, applied to the spec
    epochs: Optional[int] = None
    batch: Optional[int] = None
    out: Optional[str] = None
    resume: Optional[str] = None
    devices: Optional[list[str]] = None
    backend: str = "auto"
    precision: str = "fp32"
    channels_last: bool = False
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


class _Distributed:
    """Rank and world size under torchrun; a no-op otherwise."""

    def __init__(self, device: str):
        self.world, self.rank = settings.current().world_size, settings.current().rank
        if self.world > 1 and not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if device.startswith("cuda") else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def any(self, flag: bool) -> bool:
        """True when `flag` is set on any rank (so every rank stops together)."""
        if self.world == 1:
            return flag
        value = torch.tensor([1.0 if flag else 0.0])
        torch.distributed.all_reduce(value)
        return bool(value.item())

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def close(self) -> None:
        """Leave the process group (left to interpreter shutdown, gloo's threads can abort the process)."""
        if self.world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


class Trainer:
    def __init__(self, doc: Document, config: TrainConfig, log=print):
        self.config, self.log = config, log
        self.devices = config.devices
        if self.devices and settings.current().world_size > 1:  # torchrun: one GPU per process
            local = settings.current().local_rank
            self.devices = [f"cuda:{local}" if d == "cuda" else d for d in self.devices]
        spec_training = doc.data.get("training") if isinstance(doc.data, dict) else None
        spec_seed = spec_training.get("seed", 0) if isinstance(spec_training, dict) else 0
        torch.manual_seed(config.seed if config.seed is not None else spec_seed)  # the initial weights
        built = build(doc, config.backend, self.devices)
        self.build: Build = built
        self.info = built.info
        self.net = built.info.network
        self.training = self.net.training or ir.Training()
        self.data = config.data or "digits"
        self.epochs = config.epochs or self.training.epochs
        self.batch = config.batch or self.training.batch
        self.seed = self.training.seed if config.seed is None else config.seed
        self.device = torch.device(_first_device(built.module))
        self.dist = _Distributed(str(self.device))
        self.module = built.module
        if config.channels_last:
            self.module = self.module.to(memory_format=torch.channels_last)
        self.model = self.module
        if self.dist.world > 1:
            self.model = torch.nn.parallel.DistributedDataParallel(self.module)
        self.copies = self._weight_copies(config.weight_copies)
        self.forward = self.copies if self.copies is not None else self.model
        self.optimizer = make_optimizer(self.module, built.generated.attributes, self.training, self.copies)
        self.graphed = self._graphed_step(config.cuda_graphs)
        self.kernels_compiled = False
        self.schedule = Schedule(self.training, self.epochs)
        self.network_hash = checkpoint.network_hash(self.info)
        self.ends_with_softmax = isinstance(self.net.layers[-1], ir.Softmax)
        self.doc = doc

    # --- data ---------------------------------------------------------------------------

    def prepare(self, images: torch.Tensor, generator: Optional[torch.Generator], train: bool) -> torch.Tensor:
        """uint8 batch -> the network's input: crop/flip/lighting when training, centre crop otherwise."""
        aug = self.training.augmentation
        x = images.to(self.device, non_blocking=True).float()
        _, height, width = self.net.input
        if train and aug.crop and (x.shape[2] > height or x.shape[3] > width):
            x = augment.random_crop(x, height, generator)
        elif x.shape[2] != height or x.shape[3] != width:
            x = augment.center_crop(x, height)
        if train and aug.flip:
            x = augment.random_flip(x, generator)
        if train and aug.lighting and x.shape[1] == 3:
            x = augment.lighting(x / 255.0, aug.lighting, generator) * 255.0
        x = augment.normalise(x, aug.mean, aug.std)
        return x.contiguous(memory_format=torch.channels_last) if self.config.channels_last else x

    def check_data(self, data: Dataset) -> None:
        channels, height, width = self.net.input
        c, h, w = data.image_shape
        if c != channels or h < height or w < width:
            raise BadInput(f"the data's images are {c}x{h}x{w} but {self.net.name} takes {channels}x{height}x"
                             f"{width}; use data of that size (or larger, to crop from)")
        classes = self.info.output_shape[0]
        if len(data.classes) > classes:
            raise BadInput(f"the data has {len(data.classes)} classes but the network outputs {classes}")

    # --- steps --------------------------------------------------------------------------

    def loss(self, out: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        out = out.float()
        if self.ends_with_softmax:  # the spec ends with probabilities: train on their log
            return F.nll_loss(torch.log(out.clamp_min(1e-12)), labels)
        return F.cross_entropy(out, labels, label_smoothing=self.training.label_smoothing)

    def autocast(self):
        enabled = self.config.precision == "bf16"  # no cast cache: CUDA graphs cannot record one
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled, cache_enabled=False)

    def evaluate(self, data: Dataset, crops: int = 1, batch: int = 256) -> dict:
        """Loss and top-1/top-5 error on the validation split (softmax averaged over `crops`)."""
        self.module.eval()
        total, loss_sum, top1, top5 = 0, 0.0, 0, 0
        _, height, _ = self.net.input
        with torch.no_grad(), self.autocast():
            for start in range(0, len(data.val), batch):
                images, labels = data.val.batch(torch.arange(start, min(start + batch, len(data.val))))
                labels = labels.to(self.device)
                views = [images]
                if crops == 10:
                    views = augment.ten_crops(images, height) if images.shape[2] > height else \
                        [images, images.flip(-1)] * 5
                probs = sum(self._probabilities(self.prepare(v, None, train=False)) for v in views) / len(views)
                loss_sum += F.nll_loss(torch.log(probs.clamp_min(1e-12)), labels, reduction="sum").item()
                best5 = probs.topk(min(5, probs.shape[1]), dim=1).indices
                top1 += (best5[:, 0] == labels).sum().item()
                top5 += (best5 == labels[:, None]).any(dim=1).sum().item()
                total += len(labels)
        self.module.train()
        return {"val_loss": loss_sum / total, "top1_error": 1 - top1 / total, "top5_error": 1 - top5 / total}

    def _probabilities(self, x: torch.Tensor) -> torch.Tensor:
        out = self.module(x).float()
        return out if self.ends_with_softmax else out.softmax(dim=1)

    # --- the run ------------------------------------------------------------------------

    def recipe(self) -> dict:
        """What a resumed run takes from its checkpoint unless told otherwise: the data, epochs,
        batch, seed and --set overrides (so `--resume RUN_DIR` alone continues the same run)."""
        return {"data": self.data, "epochs": self.epochs, "batch": self.batch, "seed": self.seed,
                "overrides": list(self.config.overrides)}

    def state(self, epoch: int, step_in_epoch: int, step: int, best: float, metrics: dict,
              epoch_loss_sum: float = 0.0) -> dict:
        optimizer = self.optimizer.state_dict()
        for group in optimizer["param_groups"]:  # a graphed step keeps its rates on the GPU: save numbers
            if isinstance(group["lr"], torch.Tensor):
                group["lr"] = group["lr"].item()
        return {"model": self.module.state_dict(), "optimizer": optimizer,
                "schedule": self.schedule.state_dict(), "epoch": epoch, "step_in_epoch": step_in_epoch,
                "step": step, "best_top1_error": best, "metrics": metrics, "network_hash": self.network_hash,
                "seed": self.seed, "batch": self.batch, "spec_name": self.net.name, "recipe": self.recipe(),
                "epoch_loss_sum": epoch_loss_sum}

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

    def open_data(self) -> Dataset:
        """The run's data source, opened and checked against the network."""
        data = open_data(self.data, self.net.input, self.info.output_shape[0],
                         self.training.augmentation.resize, self.seed)
        self.check_data(data)
        if data.skipped:
            self.log(f"skipped {count(data.skipped, 'unreadable image')}")
        return data

    def run(self, run_dir: Path, data: Dataset, resumed: Optional[dict] = None,
            resumed_from: Optional[Path] = None) -> RunResult:
        """Train on `data` in `run_dir`, from the start or from `resumed` (a checkpoint's state,
        already restored)."""
        config = self.config
        epoch, first_step, step, best, last, resumed_loss_sum = 0, 0, 0, math.inf, {}, 0.0
        if resumed is not None:
            epoch, first_step, step = resumed["epoch"], resumed["step_in_epoch"], resumed["step"]
            best, last = resumed["best_top1_error"], resumed["metrics"]
            resumed_loss_sum = float(resumed.get("epoch_loss_sum", 0.0))
            if resumed["batch"] != self.batch or resumed["seed"] != self.seed:
                self.log(f"note: batch/seed differ from the checkpoint's ({resumed['batch']}/{resumed['seed']}); the "
                         "run continues but will not repeat the original exactly")
            self.log(f"resumed from {resumed_from} at epoch {epoch + 1}, step {step}")
        metrics_file = run_dir / "metrics.jsonl"
        if self.dist.main:
            _truncate_metrics(metrics_file, step)
        steps_per_epoch = math.ceil(len(data.train) / self.batch)
        first_step = min(first_step, steps_per_epoch)  # saved after the epoch's last step: only its end is left
        if config.max_steps is not None and step >= config.max_steps:
            self.log(f"the run is at step {step} already (--max-steps {config.max_steps}): nothing to do")
            return RunResult(run_dir, step, epoch, last, stopped_at_max_steps=True)
        self.module.train()
        pending, loss = PendingLosses(), None
        with _StopFlag() as stop, _Progress(self, steps_per_epoch) as progress:
            while epoch < self.epochs:
                order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(self.seed * 7919 + epoch))
                epoch_start, seen, loss_sum = time.perf_counter(), 0, resumed_loss_sum if first_step else 0.0
                lr = self.schedule.lr(epoch, max(first_step - 1, 0) / steps_per_epoch)  # the last step's, if all ran
                shares = [order[i * self.batch:(i + 1) * self.batch][self.dist.rank::self.dist.world]
                          for i in range(first_step, steps_per_epoch)]  # this process's share of each batch

                def settle() -> None:
                    """Read the losses kept on the device; stop at a non-finite one; log them."""
                    nonlocal loss_sum, loss
                    rate = seen / max(time.perf_counter() - epoch_start, 1e-9)
                    for at, lr_then, loss in pending.read():
                        if not math.isfinite(loss):
                            raise TrainingError(f"the loss became {loss} at epoch {epoch + 1}, step {at}; the last "
                                                f"good checkpoint is in {checkpoint.folder(run_dir)}. Lower the "
                                                f"learning rate (now {lr_then:g}) or check the data")
                        loss_sum += loss
                        if self.dist.main and at % config.log_every == 0:
                            _append(metrics_file, {"kind": "step", "epoch": epoch + 1, "step": at, "loss": loss,
                                                   "lr": lr_then, "images_per_s": round(rate, 1)})

                cuda = self.device.type == "cuda"
                with contextlib.closing(read_ahead(data.train, shares, config.workers, pin=cuda)) as read, \
                        contextlib.closing(on_device_ahead(read, self.device)) as batches:
                    for index, (images, labels) in zip(range(first_step, steps_per_epoch), batches):
                        lr = self.schedule.lr(epoch, index / steps_per_epoch)
                        set_lr(self.optimizer, lr)
                        pending.add(step + 1, lr, self.step(images, labels, step))
                        step += 1
                        seen += min(self.batch, len(data.train) - index * self.batch)
                        signalled = self.dist.any(stop.signal is not None)
                        at_max = config.max_steps is not None and step >= config.max_steps
                        saving = signalled or at_max or (config.checkpoint_every and step % config.checkpoint_every == 0)
                        if saving or step % config.log_every == 0 or index + 1 == steps_per_epoch:
                            settle()  # the one host sync of these steps
                        progress.update(epoch, index + 1, loss, lr, seen / max(time.perf_counter() - epoch_start, 1e-9))
                        if saving:  # index + 1 may be the epoch's end: a resumed run then only ends the epoch
                            self._save(run_dir, self.state(epoch, index + 1, step, best, last, loss_sum), step)
                        if signalled or at_max:
                            why = "by signal" if signalled else f"at --max-steps {config.max_steps}"
                            self.log(f"stopped {why} at epoch {epoch + 1}, step {step}; checkpoint saved in "
                                     f"{checkpoint.folder(run_dir)}")
                            return RunResult(run_dir, step, epoch, last, stopped_by_signal=signalled,
                                             stopped_at_max_steps=not signalled)
                settle()
                first_step = 0
                last = {"kind": "epoch", "epoch": epoch + 1, "step": step, "lr": lr,
                        "train_loss": loss_sum / max(steps_per_epoch, 1),
                        **self.evaluate(data), "seconds": round(time.perf_counter() - epoch_start, 2),
                        "images_per_s": round(seen / max(time.perf_counter() - epoch_start, 1e-9), 1)}
                improved = last["top1_error"] < best
                best = min(best, last["top1_error"])
                if self.schedule.observe(last["top1_error"]):
                    self.log(f"validation error stopped improving: learning rate divided (drop "
                             f"{self.schedule.drops} of {self.training.schedule.times})")
                epoch += 1
                if self.dist.main:
                    _append(metrics_file, last)
                progress.epoch_done(last)
                self._save(run_dir, self.state(epoch, 0, step, best, last), step, best=improved)
        return RunResult(run_dir, step, epoch, last)

    def step(self, images: torch.Tensor, labels: torch.Tensor, step: int) -> torch.Tensor:
        """One optimizer step on this process's share of a global batch; its loss, on the device."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + step * 31 + self.dist.rank)
        torch.manual_seed(self.seed * 1_000_033 + step * 37 + self.dist.rank)  # dropout masks
        x = self.prepare(images, generator, train=True)
        labels = labels.to(self.device)
        if not self.kernels_compiled:
            self._compile_kernels_ahead(x)
        if self.graphed is not None and self.graphed.takes(x, labels):
            return self.graphed(x, labels)
        self.optimizer.zero_grad(set_to_none=True)
        return self._forward_backward_update(x, labels)

    def _forward_backward_update(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The loss of a batch, its gradients and the optimizer's step (gradients zeroed before)."""
        with self.autocast():
            out = self.forward(x)
        loss = self.loss(out, labels.to(out.device))
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def _compile_kernels_ahead(self, x: torch.Tensor) -> None:
        """Compile every Triton kernel of a training and a validation step at once, before the
        first step (on a GPU, with the triton backend): see alexspec.kernels.ahead."""
        self.kernels_compiled = True
        if self.build.backend != "triton" or self.device.type != "cuda":
            return
        from alexspec.kernels import ahead

        start = time.perf_counter()
        dtype = torch.bfloat16 if self.config.precision == "bf16" else None
        also = None
        if self.copies is not None:  # the SGD step's kernels (a graphed step reads its rate from the GPU)
            also = functools.partial(self.optimizer.compile_ahead, lr_on_device=self.graphed is not None)
        if ahead.compile_module_ahead(self.module, x, dtype, inference=True, also=also):
            self.log(f"compiled the Triton kernels (every autotune config) in {time.perf_counter() - start:.1f} s; "
                     "the first steps time them")

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

    def _graphed_step(self, mode: str) -> Optional[graphed.GraphedStep]:
        """The step as a CUDA graph when `mode` (auto|on|off) and this run allow it."""
        if mode not in graphed.MODES:
            raise BadInput(f"cuda_graphs must be one of {', '.join(graphed.MODES)}, got {mode!r}")
        reason = graphed.unavailable_reason({p.device for p in self.module.parameters()}, self.dist.world)
        if mode == "on" and reason:
            raise BadInput(f"--cuda-graphs on cannot be kept: {reason}; use --cuda-graphs auto or off")
        if mode == "off" or reason:
            if mode == "auto" and self.device.type == "cuda":
                self.log(f"the training step runs eagerly: {reason}")
            return None
        self.log("the training step runs as one CUDA graph after 3 ordinary steps (--cuda-graphs off: eagerly)")
        return graphed.GraphedStep(self._forward_backward_update, self.optimizer)

    def _save(self, run_dir: Path, state: dict, step: int, best: bool = False) -> None:
        if not all(torch.isfinite(p).all() for p in self.module.parameters()):
            raise TrainingError(f"the weights are no longer finite at step {step}; not saving them. The last good "
                                f"checkpoint is in {checkpoint.folder(run_dir)}; lower the learning rate")
        if self.dist.main:
            checkpoint.save(run_dir, state, step, self.config.keep, best)
        self.dist.barrier()


def load_optimizer_state(optimizer: torch.optim.Optimizer, saved: dict) -> None:
    """optimizer.load_state_dict(saved), keeping how this run's optimizer steps (fused, foreach):
    torch takes those from the saved groups too, and the run that saved them may have stepped
    another way (on bf16 weight copies, on another device)."""
    how = [{key: group[key] for key in ("fused", "foreach") if key in group} for group in optimizer.param_groups]
    optimizer.load_state_dict(saved)
    for group, kept in zip(optimizer.param_groups, how):
        group.update(kept)


class _Progress:
    """A progress bar with ETA on a terminal; a plain line per epoch otherwise."""

    def __init__(self, trainer: Trainer, steps_per_epoch: int):
        self.trainer, self.steps = trainer, steps_per_epoch
        show = trainer.config.progress
        self.bar_wanted = (sys.stderr.isatty() if show is None else show) and trainer.dist.main
        self.bar = None

    def __enter__(self):
        return self

    def update(self, epoch: int, index: int, loss: Optional[float], lr: float, rate: float) -> None:
        """After a step; `loss` is the last one read from the device (None before the first)."""
        if not self.bar_wanted:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=self.steps, desc=f"epoch {epoch + 1}/{self.trainer.epochs}", unit="step",
                            file=sys.stderr, dynamic_ncols=True)
            self.bar.update(index - 1)
        self.bar.update(1)
        self.bar.set_postfix(loss="..." if loss is None else f"{loss:.3f}", lr=f"{lr:.3g}", img_s=f"{rate:.0f}")

    def epoch_done(self, metrics: dict) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.trainer.dist.main:
            self.trainer.log(f"epoch {metrics['epoch']}/{self.trainer.epochs}: train loss {metrics['train_loss']:.4f}, "
                             f"val loss {metrics['val_loss']:.4f}, top-1 error {metrics['top1_error']:.2%}, "
                             f"top-5 error {metrics['top5_error']:.2%}, lr {metrics['lr']:.3g}, "
                             f"{metrics['images_per_s']:.0f} img/s")

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()


def _first_device(module: torch.nn.Module) -> str:
    for param in module.parameters():
        return str(param.device)
    return "cpu"


def _append(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines past `step` (written after the checkpoint a run resumes from)."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    write_atomic(path, "".join(line + "\n" for line in kept))


def default_run_dir(name: str) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{name}-{stamp}"


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
                                         "--resume RUN_DIR, or --resume CHECKPOINT_FILE")
    if target.is_dir():
        found, home = checkpoint.latest(target), target
        if found is None:
            raise checkpoint.CheckpointError(f"{target}: no checkpoint to resume from (no checkpoints/step-*.pt)")
    else:
        found, home = target, target.parent.parent if target.parent.name == "checkpoints" else None
    if out is None and home is not None and run_folder.is_run_folder(home):
        out = home
    return found, out


def _with_recipe(config: TrainConfig, recipe: dict) -> TrainConfig:
    """`config` with what it leaves open taken from a resumed run's recipe (its --set overrides
    first, then this run's)."""
    return replace(config, data=config.data or recipe.get("data"), epochs=config.epochs or recipe.get("epochs"),
                   batch=config.batch or recipe.get("batch"),
                   seed=config.seed if config.seed is not None else recipe.get("seed"),
                   overrides=[*recipe.get("overrides", []), *config.overrides])


def start(spec: str | Path | Document, config: TrainConfig, log=print) -> RunResult:
    """Train `spec` (a file or a loaded Document; config.overrides applied): a new run, or one
    continued from a checkpoint (config.resume), whose recipe it takes where config leaves it open.

    The checkpoint and the spec are checked before anything is written, and the run writes only
    inside its run folder (alexspec.train.run_folder)."""
    resume_from, run_dir = _resume_target(config)
    state = None
    if resume_from is not None:
        state = checkpoint.load(resume_from, resume=True)
        config = _with_recipe(config, state.get("recipe", {}))
    doc = spec if isinstance(spec, Document) else load_file(spec)
    if config.overrides:
        doc = apply_overrides(doc, config.overrides)
    trainer = Trainer(doc, config, log)
    if state is not None:
        checkpoint.check_network(resume_from, state, trainer.network_hash)
        trainer.restore(state)
    data = trainer.open_data()  # a bad data source is refused before a run folder exists
    if run_dir is None:
        run_dir = default_run_dir(trainer.net.name)
        if resume_from is not None:
            log(f"{resume_from} is not in a run folder alexspec made; the continued run writes to {run_dir}")
    if trainer.dist.main:
        run_folder.claim(run_dir, continuing=state is not None)
        write_atomic(run_dir / "spec.yaml", yaml.safe_dump(doc.data, sort_keys=False))
        resolved = {**asdict(replace(config, out=str(run_dir))), **trainer.recipe(), "backend": trainer.build.backend,
                    "device": str(trainer.device), "world_size": trainer.dist.world,
                    "network_hash": trainer.network_hash, "torch": torch.__version__}
        write_atomic(run_dir / "config.json", json.dumps(resolved, indent=2) + "\n")
        log(f"training {trainer.net.name} ({trainer.info.total_params:,} params) on {trainer.data}: "
            f"{count(trainer.epochs, 'epoch')}, batch {trainer.batch}, {trainer.build.backend_reason}, device "
            f"{trainer.device}; run folder {run_dir}")
    try:
        return trainer.run(run_dir, data, state, resume_from)
    finally:
        trainer.dist.close()
