"""Image folders (train/ and val/ under one root, a folder per class): listed and checked, then
decoded in threads (Pillow lets go of the GIL while it decodes and resizes), either into memory
(`alexspec train --data FOLDER`) or streamed into shards (`alexspec prepare-data`), so that an
ImageNet-sized folder is never whole in memory.

Unreadable images are left out and named; more than 1 % of them is a DataError.
"""
from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
import math
import os
from pathlib import Path
import shutil
from typing import Iterator, Optional

import numpy as np
import torch

from alexspec import memory_check
from alexspec.errors import first_line
from alexspec.report import human_bytes
from alexspec.train.data import Dataset, DataError, ShardWriter, Split, read_shards
from alexspec.train.progress import counting
from alexspec.words import count, listed

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".gif", ".webp", ".tif", ".tiff"}
SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}  # Pillow's 16-bit grey ("I": older Pillow's PNGs)
MAX_BAD_FRACTION = 0.01  # more unreadable images than this is an error, not a skip
PARTS = ("train", "val")


def default_workers() -> int:
    """Decoding threads where none are asked for: the machine's cores, at most 8."""
    return max(1, min(8, os.cpu_count() or 1))


@dataclass
class Listing:
    """What an image folder holds: its classes (train/'s folders, sorted) and each split's files
    with their labels."""

    root: Path
    classes: list[str]
    files: dict[str, list[tuple[Path, int]]]

    @property
    def total(self) -> int:
        return sum(len(files) for files in self.files.values())


def _missing_split(root: Path, part: str) -> str:
    """What to do where `root` lacks the folder of split `part`: where it holds class folders of
    images, say how to split them; where it has train/ only, how to make val/."""
    expected = f"expected {root}/train/<class>/*.jpg and {root}/val/<class>/*.jpg"
    if root.name in PARTS and all((root.parent / split).is_dir() for split in PARTS):
        return f"{root} is the {root.name}/ split of an image folder; give the folder that holds it, {root.parent}"
    if part == "val":
        return (f"{root} has train/ but no val/ folder; {expected}: move some of each class's images (say one in "
                f"ten) to {root}/val/<class>/, which measure the validation error")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not _hidden(p.name) and any(
        f.suffix.lower() in IMAGE_SUFFIXES for f in p.iterdir())) if root.is_dir() else []  # not walked: a home folder
    if classes:
        return (f"{root} holds class folders ({listed(classes)}) but no train/ and val/; {expected}: move the "
                f"class folders into {root}/train/, and some of each class's images (say one in ten) to "
                f"{root}/val/<class>/, which measure the validation error")
    return f"{root} has no train/ folder; {expected}"


def list_folder(root: Path) -> Listing:
    """The files of an image folder, its layout checked: both splits there, classes in train/, none
    only in val/, and an image file in each class folder of train/."""
    root = Path(root)
    for part in PARTS:
        if not (root / part).is_dir():
            raise DataError(_missing_split(root, part))
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir() and not _hidden(p.name))
    if not classes:
        raise DataError(f"{root}/train has no class folders")
    unknown = sorted(p.name for p in (root / "val").iterdir()
                     if p.is_dir() and not _hidden(p.name) and p.name not in classes and any(_image_files(p)))
    if unknown:
        raise DataError(f"{root}/val has class folders that {root}/train lacks ({', '.join(unknown)}); the classes "
                        "are train/'s folders: add training images of these classes, or move them out of val/")
    files = {part: [(file, label) for label, name in enumerate(classes) if (root / part / name).is_dir()
                    for file in sorted(_image_files(root / part / name))] for part in PARTS}
    _each_class_has_images(root, classes, [label for _, label in files["train"]])
    return Listing(root, classes, files)


def _hidden(name: str) -> bool:
    """Names a tool left, not a class or an image: .ipynb_checkpoints/, macOS's ._photo.jpg."""
    return name.startswith(".")


def _image_files(folder: Path) -> Iterator[Path]:
    """The image files in `folder` and its subfolders (a class's images may be grouped in
    folders of their own), hidden ones left out; symbolic links to folders are not followed
    below `folder` (a link to a folder above would loop)."""
    for where, folders, names in os.walk(folder):
        folders[:] = [name for name in folders if not _hidden(name)]
        yield from (Path(where) / name for name in names
                    if not _hidden(name) and Path(name).suffix.lower() in IMAGE_SUFFIXES)


def _each_class_has_images(root: Path, classes: list[str], labels: list[int]) -> None:
    """DataError naming the class folders of train/ that gave no image (each would be a class never seen)."""
    found = set(labels)
    empty = [name for label, name in enumerate(classes) if label not in found]
    if empty:
        raise DataError(f"{root}/train: {', '.join(empty)} holds no readable images; each folder of train/ is a "
                        "class: add its images, or remove the folder")


def _mode(channels: int) -> str:
    mode = {1: "L", 3: "RGB"}.get(channels)
    if mode is None:
        raise DataError(f"image folders hold 1- or 3-channel images; the spec's input has {channels} channels")
    return mode


def decode(file: Path, size: int, mode: str) -> np.ndarray | str:
    """The image in `file` as uint8 C x size x size (shorter side resized to `size`, then the centre
    square), or why it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as image:
            image = _resize_center(_eight_bit(image).convert(mode), size)
    except UnidentifiedImageError:
        return "not an image Pillow can read"
    except Image.DecompressionBombError:
        return "more pixels than Pillow's limit (Image.MAX_IMAGE_PIXELS) allows"
    except (OSError, ValueError) as exc:
        return first_line(exc, 80)
    array = np.asarray(image, dtype=np.uint8)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def _eight_bit(image):
    """A 16-bit grey image scaled to 8 bits (65535 -> 255): Pillow's own conversion clips at 255,
    which turns all but the darkest pixels white. ValueError for pixels that are not 8 or 16 bits."""
    from PIL import Image

    if image.mode == "F":
        raise ValueError("32-bit float pixels; save the image with 8 or 16 bits a channel")
    if image.mode not in SIXTEEN_BIT_MODES:
        return image
    values = np.asarray(image, dtype=np.int32)  # 65535 * 255 fits
    if values.size and (values.min() < 0 or values.max() > 65535):
        raise ValueError("32-bit pixels beyond 16 bits' 0..65535; save the image with 8 or 16 bits a channel")
    return Image.fromarray(((values * 255 + 32767) // 65535).astype(np.uint8), "L")


def _resize_center(image, size: int):
    """Shorter side to `size`, then the centre size x size square."""
    from PIL import Image

    w, h = image.size
    scale = size / min(w, h)
    image = image.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
    w, h = image.size
    left, top = (w - size) // 2, (h - size) // 2
    return image.crop((left, top, left + size, top + size))


def _decoded(files: list[tuple[Path, int]], size: int, mode: str, workers: int) -> Iterator[np.ndarray | str]:
    """decode() of each file, in order, `workers` threads at a time, a bounded number ahead."""
    if workers <= 1:
        for file, _ in files:
            yield decode(file, size, mode)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="alexspec-decode") as pool:
        pending: deque = deque()
        for file, _ in files:
            pending.append(pool.submit(decode, file, size, mode))
            if len(pending) >= 4 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


class _Reader:
    """Decodes an image folder's splits into arrays, readable images packed to the front, keeping
    the unreadable ones' names and stopping once they are more than 1 % of all."""

    def __init__(self, listing: Listing, size: int, channels: int, workers: Optional[int],
                 progress: Optional[bool]):
        """`progress`: True a bar (a terminal's), False a line a minute on stderr (a log's), None nothing."""
        self.listing, self.size, self.mode = listing, size, _mode(channels)
        self.shape = (channels, size, size)
        self.workers = workers or default_workers()
        self.unreadable: list[str] = []
        self.progress = progress

    def fill(self, part: str, store) -> np.ndarray:
        """Decode `part`'s files into `store` in order (store[0], store[1], ...: an array with room for
        them all, or a ShardWriter's file); returns the readable ones' labels."""
        files, labels = self.listing.files[part], []
        with counting(f"decoding {part}/", len(files), "image", self.progress) as shown:
            for done, ((file, label), image) in enumerate(zip(files, _decoded(files, self.size, self.mode,
                                                                              self.workers)), 1):
                if isinstance(image, str):
                    self.unreadable.append(f"{file.relative_to(self.listing.root)} ({image})")
                    self._check_unreadable()
                else:
                    store[len(labels)] = image
                    labels.append(label)
                shown(done)
        if not labels:
            raise DataError(f"{self.listing.root}/{part} holds no readable images")
        if part == "train":
            _each_class_has_images(self.listing.root, self.listing.classes, labels)
        return np.asarray(labels, dtype=np.int64)

    def _check_unreadable(self) -> None:
        total = self.listing.total
        if len(self.unreadable) > MAX_BAD_FRACTION * total:
            raise DataError(f"more than {MAX_BAD_FRACTION:.0%} of the {count(total, 'image')} in "
                            f"{self.listing.root} cannot be read: {named(self.unreadable)}; check the files")


def named(unreadable, shown: int = 3) -> str:
    """The first `shown` of the unreadable images (each file and why), and how many more."""
    more = len(unreadable) - shown
    return ", ".join(unreadable[:shown]) + (f" and {more} more" if more > 0 else "")


def left_out(unreadable) -> str:
    """What a user is told of the unreadable images a source left out."""
    return f"left out {count(len(unreadable), 'unreadable image')}: {named(unreadable)}"


def image_folder(root: Path, size: int, channels: int = 3, workers: Optional[int] = None,
                 progress: Optional[bool] = None) -> Dataset:
    """train/ and val/ under `root`, one sub-folder per class, images resized to size x size, in memory."""
    listing = list_folder(root)
    reader = _Reader(listing, size, channels, workers, progress)
    need, memory = listing.total * math.prod(reader.shape), memory_check.capacity("cpu")
    if memory is not None and need > memory:
        raise DataError(f"the {count(listing.total, 'image')} of {listing.root} take {human_bytes(need)} at "
                        f"{'x'.join(map(str, reader.shape))}, more than this machine's {human_bytes(memory)} of "
                        f"memory; write them to shards once (`alexspec prepare-data {listing.root} SHARDS --size "
                        f"{size}`) and train on those (--data SHARDS): shards stay on disk")
    splits = {}
    for part in PARTS:
        store = np.empty((len(listing.files[part]), *reader.shape), dtype=np.uint8)
        labels = reader.fill(part, store)
        splits[part] = Split(torch.from_numpy(store[:len(labels)]), torch.from_numpy(labels))
    return Dataset(listing.root.name, splits["train"], splits["val"], listing.classes, tuple(reader.unreadable))


def _check_room(out: Path, images: int, shape: tuple[int, ...]) -> None:
    """DataError, before any image is decoded, where `out`'s disk has no room for the shards."""
    need = images * math.prod(shape)
    where = next(folder for folder in (out, *out.absolute().parents) if folder.exists())
    free = shutil.disk_usage(where).free
    if need > free:
        per_pixel = images * math.prod(shape[:-2])
        fits = math.isqrt(int(0.95 * free) // per_pixel)  # the largest square size that leaves 5% of the free space
        smaller = (f", or give a --size from your network's input size up to {fits} "
                   f"({human_bytes(per_pixel * fits * fits)})") if fits else ""
        raise DataError(f"{out}: the shards of {count(images, 'image')} at {'x'.join(map(str, shape))} need "
                        f"{human_bytes(need)}, and its disk has {human_bytes(free)} free; free some space"
                        f"{',' if fits else ' or'} write them to another disk{smaller}")


def prepare_shards(root: Path, out: Path, size: int, channels: int = 3, workers: Optional[int] = None,
                   progress: Optional[bool] = None) -> Dataset:
    """Decode the image folder `root` straight into shards in `out` (alexspec.train.data.ShardWriter:
    the old shards stay until the new ones are whole); returns them, memory-mapped."""
    listing = list_folder(root)
    for part in PARTS:
        if Path(out).resolve().is_relative_to((Path(root) / part).resolve()):
            raise DataError(f"{out} is inside {root}/{part}/, where it would be read as a class of images; write "
                            "the shards outside the image folder's train/ and val/")
    reader = _Reader(listing, size, channels, workers, progress)
    _check_room(Path(out), listing.total, reader.shape)
    with ShardWriter(Path(out), listing.classes) as writer:
        for part in PARTS:
            writer.split(part, reader.shape, partial(reader.fill, part))
        writer.publish()
    return replace(read_shards(Path(out)), unreadable=tuple(reader.unreadable))
