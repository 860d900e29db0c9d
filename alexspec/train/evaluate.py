"""A network's validation error: loss, top-1 and top-5 error over a data source's validation
split, the softmax averaged over 1 or 10 crops; `alexspec eval` and the trainer's epochs use it.
It needs no optimizer: `evaluate_checkpoint` builds the network, loads a checkpoint and evaluates."""
from __future__ import annotations

from pathlib import Path
import sys
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from alexspec import ir
from alexspec.train import augment
from alexspec.train.augment import NetworkInput
from alexspec.train.data import Dataset
from alexspec.train.progress import counting
from alexspec.train.step import autocast
from alexspec.words import count, listed


def evaluate(module: torch.nn.Module, network: ir.Network, data: Dataset, inputs: NetworkInput, precision: str,
             crops: int = 1, batch: int = 256, dist=None, shown: Optional[Callable[[int], None]] = None) -> dict:
    """val_loss, top1_error and top5_error of `module` (left in training mode) on `data.val` (top5_error
    only where the network has more than 5 outputs: with 5 or fewer, every class is in the top 5); with
    `dist` (alexspec.train.distributed.Distributed) each process takes its share of the images and
    the sums are combined, so data-parallel validation takes 1/world of the time. `shown` is told
    the number of images done after each batch (a progress display)."""
    module.eval()
    total, loss_sum, top1, top5, outputs = 0, 0.0, 0, 0, 0
    ends_with_softmax = isinstance(network.layers[-1], ir.Softmax)
    _, height, width = network.input
    share = torch.arange(len(data.val))[dist.rank::dist.world] if dist is not None else torch.arange(len(data.val))
    with torch.no_grad(), autocast(inputs.device.type, precision):
        for start in range(0, len(share), batch):
            images, labels = data.val.batch(share[start:start + batch])
            labels = labels.to(inputs.device)
            views = [images]
            if crops == 10:
                views = augment.ten_crops(images, height, width) if images.shape[2:] != (height, width) else \
                    [images, images.flip(-1)] * 5
            probs = sum(_probabilities(module, inputs(view), ends_with_softmax) for view in views) / len(views)
            loss_sum += F.nll_loss(torch.log(probs.clamp_min(1e-12)), labels, reduction="sum").item()
            outputs = probs.shape[1]
            best5 = probs.topk(min(5, outputs), dim=1).indices
            top1 += (best5[:, 0] == labels).sum().item()
            top5 += (best5 == labels[:, None]).any(dim=1).sum().item()
            total += len(labels)
            if shown is not None:
                shown(total)
    module.train()
    if dist is not None:
        sums = torch.tensor([total, loss_sum, top1, top5], dtype=torch.float64)
        total, loss_sum, top1, top5 = dist.sum(sums).tolist()
    found = {"val_loss": loss_sum / total, "top1_error": 1 - top1 / total}
    return {**found, "top5_error": 1 - top5 / total} if outputs > 5 else found


def _probabilities(module: torch.nn.Module, x: torch.Tensor, ends_with_softmax: bool) -> torch.Tensor:
    out = module(x).float()
    return out if ends_with_softmax else out.softmax(dim=1)


def check_data(data: Dataset, network: ir.Network, classes: int) -> None:
    """BadInput where `data`'s images or classes do not fit the network: a line for each misfit."""
    from alexspec.errors import BadInput

    channels, height, width = network.input
    c, h, w = data.image_shape
    misfits = []
    if c != channels:
        remade = f"`alexspec prepare-data SRC DST --channels {channels}` makes shards of {channels}" \
            if channels in (1, 3) and data.name not in ("digits", "synthetic") else ""
        sets = _input_channels_sets(network, c)
        retaken = f"`{' '.join('--set ' + s for s in sets)}` makes the network take {c}" if sets else ""
        misfits.append(f"the data's images have {count(c, 'channel')} but {network.name} takes {channels}; "
                       + (" or ".join(filter(None, [remade, retaken])) or f"use images of {channels}"))
    if h < height or w < width:
        remade = f"`alexspec prepare-data SRC DST --size {max(height, width)}`"
        misfits.append(f"the data's images are {c}x{h}x{w} but {network.name} takes {channels}x{height}x{width}; "
                       + (f"give --data an image folder, or shards from {remade}" if data.name == "digits" else
                          f"use data of that size or larger, to crop from ({remade})"))
    if len(data.classes) == 1:
        misfits.append(f"{data.name} has one class ({data.classes[0]}): a classifier learns to tell classes apart, "
                       "and with one the answer is always that class (its error is 0 whatever it learns); give the "
                       "data a folder of images for each class, two or more")
    if len(data.classes) > classes:
        found = len(data.classes)
        misfits.append(f"the data has {found} classes ({listed(data.classes)}) but {network.name} outputs "
                       f"{classes}; {_last_layer_fix(network, found)}")
    if misfits:
        raise BadInput("\n".join(misfits))


def classes_not_validated(data: Dataset) -> Optional[str]:
    """A note where the validation split holds no image of some of the data's classes (a val/
    without their folders): the validation error says nothing of them; None where it has each, and
    for synthetic data (random labels, often of more classes than it has validation images)."""
    if data.name == "synthetic":
        return None
    present = set(torch.unique(data.val.labels).tolist())
    missing = [name for index, name in enumerate(data.classes) if index not in present]
    if not missing:
        return None
    return (f"note: {data.name}'s validation images hold none of {listed(missing)} ({len(missing)} of its "
            f"{len(data.classes)} classes); the validation error says nothing of "
            f"{'that class' if len(missing) == 1 else 'those classes'}")


def small_crops(data: Dataset, network: ir.Network, resize: Optional[int]) -> Optional[str]:
    """A note where the network sees under half of each image (its input cropped from much larger
    images: shards prepared for another net?); None where the crop holds half or more."""
    _, height, width = network.input
    _, h, w = data.image_shape
    if 2 * height * width >= h * w:
        return None
    smaller = (f"lower training.augmentation.resize ({resize}) or remove it" if resize and
               isinstance(data.train.images, torch.Tensor) else
               f"give shards from `alexspec prepare-data SRC DST --size {max(height, width)}` or the image folder")
    return (f"note: {data.name}'s images are {h}x{w} but {network.name} takes {height}x{width}, so it sees "
            f"{height}x{width} crops of them, {height * width / (h * w):.0%} of each image; to show it whole images, "
            f"{smaller}")


def unused_outputs(data: Dataset, network: ir.Network, classes: int) -> Optional[str]:
    """A note where the network has more outputs than the data has classes (the rest are never a
    label: a spec made for other data?); None where they match."""
    found = len(data.classes)
    if _fitting_out(network, found) >= classes:  # as few as the towers allow
        return None
    return (f"note: the data has {found} classes but {network.name} outputs {classes}, so {classes - found} of its "
            f"outputs are never a label; to fit the data, {_last_layer_fix(network, found)}")


def _fitting_out(network: ir.Network, classes: int) -> int:
    """The fewest outputs, `classes` or more, that the network's towers split evenly."""
    return -(-classes // network.towers) * network.towers


def _input_channels_sets(network: ir.Network, channels: int) -> list[str]:
    """The --set arguments that make `network` take images of `channels`: input.channels (the
    expectations written for the file's input are then not checked), the normalisation's mean and
    std as one value a channel (their average), and no colour lighting but for RGB."""
    sets = [f"input.channels={channels}"]
    augmentation = network.training.augmentation if network.training else None
    for key in ("mean", "std"):
        values = getattr(augmentation, key, None)
        if values and len(values) != channels:
            sets.append(f"training.augmentation.{key}=[{','.join([f'{sum(values) / len(values):g}'] * channels)}]")
    if augmentation is not None and augmentation.lighting and channels != 3:
        sets.append("training.augmentation.lighting=0")  # colour noise: RGB only
    return sets


def _last_layer_fix(network: ir.Network, classes: int) -> str:
    """'give its last layer (NAME) out: N (`--set layers.NAME.out=N ...`)', NAME its last conv or
    linear layer, N `classes` rounded up to a multiple of the towers (each tower's share is whole),
    the --set arguments all those the spec needs changed with it: its `classes`, and the `expect`
    of that layer and of those after it (their shapes change)."""
    weighted = [i for i, layer in enumerate(network.layers) if isinstance(layer, (ir.Conv, ir.Linear))]
    if not weighted:
        return f"give its last layer out: {classes}"
    last = network.layers[weighted[-1]]
    out = _fitting_out(network, classes)
    sets = [f"layers.{last.name}.out={out}"] + ([f"classes={out}"] if network.classes is not None else [])
    sets += [f"layers.{layer.name}.expect={{}}" for layer in network.layers[weighted[-1]:] if layer.expect]
    towers = f", the least multiple of its {network.towers} towers" if out != classes else ""
    fix = f" (`{' '.join('--set ' + s for s in sets)}`)" if "." not in last.name else ""
    return f"give its last layer ({last.name}) out: {out}{towers}{fix}"


def evaluate_checkpoint(doc, checkpoint_path: Path, data_name: str, crops: Optional[int] = None,
                        backend: str = "auto", devices: Optional[list[str]] = None, precision: str = "fp32",
                        channels_last: bool = False, log=print) -> dict:
    """Build `doc`'s network, load the checkpoint at `checkpoint_path` (checked to be of this
    network, inside its run folder), open `data_name` and evaluate with `crops` (default: the
    spec's eval_crops). Returns the metrics with the checkpoint, crops and network name. Under
    torchrun each process evaluates its share of the images (`cuda`: its own GPU) and every
    process returns the whole's metrics; only rank 0 logs and shows progress."""
    from alexspec.builder import build, load_state
    from alexspec.train import checkpoint
    from alexspec.train.data import open_data
    from alexspec.train.distributed import Distributed, per_process

    built = build(doc, backend, per_process(devices))
    network, training = built.info.network, built.info.network.training or ir.Training()
    path = checkpoint.in_run_folder(Path(checkpoint_path))
    state = checkpoint.load(path, checkpoint.network_hash(built.info))
    load_state(built.module, state["model"])
    module = built.module.to(memory_format=torch.channels_last) if channels_last else built.module
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    dist = Distributed(str(device))
    try:
        shown_here = sys.stderr.isatty() if dist.main else None
        classes = built.info.output_shape[0]
        data = open_data(data_name, network.input, classes, training.augmentation.resize, training.seed,
                         progress=shown_here)
        check_data(data, network, classes)
        checkpoint.check_classes(path, state, data, "evaluate it on data of the classes it was trained on")
        for note in filter(None, [small_crops(data, network, training.augmentation.resize),
                                  classes_not_validated(data)]) if dist.main else ():
            log(note)
        crops = crops or training.eval_crops
        _, height, width = network.input
        if crops == 10 and data.image_shape[1:] == (height, width) and dist.main:
            log(f"note: the images are {height}x{width}, the network's input, so there is nothing to crop: the 10 "
                "views are the image and its mirror image, 5 times each; where a mirrored image is another class "
                "(digits, text), expect a worse error than with --crops 1")
        inputs = NetworkInput(network.input, training.augmentation, device, channels_last)
        share = len(range(dist.rank, len(data.val), dist.world))
        with counting(f"evaluating ({count(crops, 'crop')})", share, "image", shown_here) as shown:
            metrics = evaluate(module, network, data, inputs, precision, crops, dist=dist, shown=shown)
    finally:
        dist.close()
    return {"checkpoint": str(path), "crops": crops, "network": network.name, "images": len(data.val), **metrics}
