"""Data sources: scikit-learn's bundled digits, synthetic images, image folders (read by
alexspec.train.image_folder), uint8 shards.

Every source yields uint8 images (N, C, H, W) and int64 labels; augmentation and scaling
happen on tensors afterwards (on the GPU when there is one). Small sources live in memory;
shards (`alexspec prepare-data`) are numpy memmaps read one batch at a time.
"""
from __future__ import annotations

from dataclasses import dataclass
import errno
import json
import math
import os
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from alexspec.errors import BadInput
from alexspec.fsutil import lock_folder, write_atomic


class DataError(BadInput):
    """Data that cannot be used, with a message saying why and what to do."""


@dataclass
class Split:
    """Images (uint8 N x C x H x W: a tensor or a memmap) and labels (int64 N)."""

    images: object
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, indices: torch.Tensor, pin: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """The images and labels at `indices`, in that order (images in page-locked memory with `pin`)."""
        images = self.empty_batch(len(indices), pin)
        if isinstance(self.images, torch.Tensor):
            torch.index_select(self.images, 0, indices, out=images)
        else:
            self.read_into(images, indices, torch.arange(len(indices)))
        return images, self.labels[indices]

    def empty_batch(self, size: int, pin: bool = False) -> torch.Tensor:
        """An uninitialised uint8 batch of `size` images; page-locked with `pin` (CUDA copies from it can
        overlap computation)."""
        return torch.empty((size, *self.images.shape[1:]), dtype=torch.uint8, pin_memory=pin)

    def read_into(self, out: torch.Tensor, indices: torch.Tensor, positions: torch.Tensor) -> None:
        """out[positions] = the images at indices[positions], read from the memmap in file order."""
        index, where = indices[positions].numpy(), positions.numpy()
        ascending = np.argsort(index)  # a memmap reads fastest front to back
        out.numpy()[where[ascending]] = self.images[index[ascending]]


def read_ahead(split: Split, batches, workers: int = 4, ahead: int = 2, pin: bool = False):
    """(images, labels) for each index tensor in `batches`, in order; images in page-locked
    memory with `pin`.

    For memory-mapped shards, threads copy each batch in `workers` chunks straight into its
    buffer (numpy releases the GIL while copying) while up to `ahead` batches are read before
    they are needed; in-memory splits are simply indexed.
    """
    if isinstance(split.images, torch.Tensor) or workers < 1:
        for indices in batches:
            yield split.batch(indices, pin)
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(workers, thread_name_prefix="alexspec-data")
    pending: deque = deque()
    batches = iter(batches)
    try:
        while True:
            while len(pending) < ahead:
                indices = next(batches, None)
                if indices is None:
                    break
                images = split.empty_batch(len(indices), pin)
                reads = [pool.submit(split.read_into, images, indices, chunk)
                         for chunk in torch.chunk(torch.arange(len(indices)), workers)]
                pending.append((images, split.labels[indices], reads))
            if not pending:
                return
            images, labels, reads = pending.popleft()
            for read in reads:
                read.result()
            yield images, labels
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def on_device_ahead(batches, device: torch.device):
    """Each (images, labels) of `batches` on `device`, the next batch's copy started before this
    one is handed out: on CUDA, on a copy stream from page-locked memory (read_ahead's `pin`),
    so the transfer runs while this batch trains. Elsewhere the batches pass unchanged."""
    if device.type != "cuda":
        yield from batches
        return
    copies = torch.cuda.Stream(device)
    previous = None
    for images, labels in batches:
        with torch.cuda.stream(copies):
            moved = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        copied = torch.cuda.Event()
        copied.record(copies)
        if previous is not None:
            yield _arrived(*previous)
        previous = moved, copied
    if previous is not None:
        yield _arrived(*previous)


def _arrived(moved: tuple[torch.Tensor, ...], copied: torch.cuda.Event) -> tuple[torch.Tensor, ...]:
    """`moved` for use on the current stream, once its copy is done (and kept until that stream is)."""
    stream = torch.cuda.current_stream()
    stream.wait_event(copied)
    for tensor in moved:
        tensor.record_stream(stream)
    return moved


@dataclass
class Dataset:
    """A training split, a validation split, and what they hold."""

    name: str
    train: Split
    val: Split
    classes: list[str]
    unreadable: tuple[str, ...] = ()  # images left out: each one's file and why

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])


def digits(seed: int = 0, val_fraction: float = 0.2) -> Dataset:
    """scikit-learn's 1,797 real 8x8 handwritten digits (shipped on disk), scaled from 0-16 to 0-255."""
    pixels, target = _digits_on_disk()
    images = torch.from_numpy((pixels.reshape(-1, 8, 8) * (255.0 / 16.0)).round().astype(np.uint8)).unsqueeze(1)
    labels = torch.from_numpy(target.astype(np.int64))
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    cut = int(len(labels) * (1 - val_fraction))
    return Dataset("digits", Split(images[order[:cut]], labels[order[:cut]]),
                   Split(images[order[cut:]], labels[order[cut:]]), [str(d) for d in range(10)])


def _digits_on_disk() -> tuple[np.ndarray, np.ndarray]:
    """(pixels, labels) of the digits file scikit-learn ships, read without importing scikit-learn
    (its import is most of a second); through load_digits where the file is not where it was."""
    import importlib.util

    found = importlib.util.find_spec("sklearn")
    data = Path(found.origin).parent / "datasets" / "data" / "digits.csv.gz" if found and found.origin else None
    if data is not None and data.is_file():
        table = np.loadtxt(data, delimiter=",")
        return table[:, :-1], table[:, -1]
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.data, bunch.target


def synthetic(shape: tuple[int, int, int], classes: int, train_size: int = 512, val_size: int = 128,
              seed: int = 0) -> Dataset:
    """Random images with a learnable signal: each class brightens its own band of rows."""
    generator = torch.Generator().manual_seed(seed)

    def make(n: int) -> Split:
        labels = torch.randint(0, classes, (n,), generator=generator)
        images = torch.randint(0, 128, (n, *shape), generator=generator, dtype=torch.int16)
        rows = shape[1]
        for c in range(classes):
            band = slice(c * rows // classes, max((c + 1) * rows // classes, c * rows // classes + 1))
            images[labels == c, :, band] += 100
        return Split(images.clamp(0, 255).to(torch.uint8), labels)

    return Dataset("synthetic", make(train_size), make(val_size), [str(c) for c in range(classes)])


SHARD_FORMAT = "alexspec-shards-1"
SHARD_LOCK = ".alexspec-shards.lock"  # held by the prepare-data writing the folder
SHARD_FILES = {"index.json", SHARD_LOCK, *(f"{prefix}{split}.{kind}{suffix}" for split in ("train", "val")
                                for kind in ("images.u8", "labels.npy")
                                for prefix, suffix in (("", ""), (".", ".tmp")))}  # what a ShardWriter writes


class ShardWriter:
    """Writes a shard folder (<split>.images.u8, a memmap; <split>.labels.npy; index.json) so that
    one stopped midway leaves its old shards or no index (refused by read_shards), never an index
    over other data: every file is written in full under a temporary name; `publish` then removes
    the old index, gives the files their names and writes the new index last. Temporaries of a
    write that stopped are removed. One writer at a time: while one holds the folder's lock, another
    is refused."""

    def __init__(self, out: Path, classes: list[str]):
        self.out = out
        self.index = {"format": SHARD_FORMAT, "classes": list(classes), "splits": {}}
        self.written: list[tuple[Path, Path]] = []  # (temporary, final name)

    def __enter__(self) -> "ShardWriter":
        if self.out.is_dir():
            others = sorted(p.name for p in self.out.iterdir()
                            if p.name not in SHARD_FILES or p.name == "index.json" and not _shard_index(p))
            if others:
                raise DataError(f"{self.out} holds files that are not shards ({', '.join(others[:3])}"
                                f"{', ...' if len(others) > 3 else ''}); write the shards to a new or empty folder, "
                                "or to one `alexspec prepare-data` wrote (its shards are replaced)")
        elif self.out.exists():
            raise DataError(f"{self.out} is a file; the shards go to a folder: name a new one")
        self.lock = lock_folder(self.out, SHARD_LOCK, self._busy)
        return self

    def _busy(self, holder: str) -> DataError:
        return DataError(f"{self.out}: another prepare-data is writing shards here now"
                         f"{f' ({holder})' if holder else ''}; wait for it to end, or write to another folder")

    def split(self, name: str, shape: tuple[int, ...], fill) -> None:
        """Write split `name`: `fill(store)` puts its uint8 images of `shape` into `store` in order
        (store[0] = first, store[1] = ...) and returns their labels (int64)."""
        self.written.append((self.out / f".{name}.images.u8.tmp", self.out / f"{name}.images.u8"))
        try:
            with open(self.written[-1][0], "wb") as handle:
                labels = fill(_Appender(handle))
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            raise DataError(f"{self.out}: its disk is full; free some space, write the shards to another disk, "
                            "or give a smaller --size (the shards there before are kept)") from None
        self.written.append((self.out / f".{name}.labels.npy.tmp", self.out / f"{name}.labels.npy"))
        with open(self.written[-1][0], "wb") as handle:
            np.save(handle, labels)
            handle.flush()
            os.fsync(handle.fileno())
        self.index["splits"][name] = {"count": len(labels), "shape": list(shape)}

    def publish(self) -> None:
        (self.out / "index.json").unlink(missing_ok=True)
        while self.written:
            temporary, final = self.written[0]
            temporary.replace(final)
            self.written.pop(0)
        write_atomic(self.out / "index.json", json.dumps(self.index, indent=2) + "\n")

    def __exit__(self, *exc) -> None:
        for temporary, _ in self.written:  # a write that stopped: its files never take their names
            temporary.unlink(missing_ok=True)
        self.lock.close()


class _Appender:
    """A split's images file written one image after another (`appender[i] = image`, i counting up
    from 0): a full disk fails a file write with ENOSPC, where a memmap's write into a sparse file
    would end the process with SIGBUS midway."""

    def __init__(self, handle):
        self.handle, self.count = handle, 0

    def __setitem__(self, index: int, image: np.ndarray) -> None:
        if index != self.count:
            raise IndexError(f"images are appended in order: image {self.count} next, not {index}")
        self.handle.write(np.ascontiguousarray(image, dtype=np.uint8).tobytes())
        self.count += 1


def _shard_index(path: Path) -> bool:
    """Whether `path` is the index.json of shards (not some other program's index.json)."""
    try:
        return json.loads(path.read_text()).get("format") == SHARD_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def read_shards(root: Path) -> Dataset:
    """A dataset written by a ShardWriter (`alexspec prepare-data`), its images memory-mapped (nothing
    read until used)."""
    try:
        index = json.loads((root / "index.json").read_text())
        splits = {}
        for name in ("train", "val"):
            info = index["splits"][name]
            shape = (info["count"], *info["shape"])
            found, expected = (root / f"{name}.images.u8").stat().st_size, math.prod(shape)
            if found != expected:
                raise DataError(f"{root}: {name}.images.u8 holds {found:,} bytes where index.json says "
                                f"{expected:,} ({'x'.join(map(str, shape))}); write it again with "
                                "`alexspec prepare-data`")
            images = np.memmap(root / f"{name}.images.u8", dtype=np.uint8, mode="r", shape=shape)
            splits[name] = Split(images, _read_labels(root / f"{name}.labels.npy", info["count"],
                                                      len(index["classes"])))
        return Dataset(root.name, splits["train"], splits["val"], list(index["classes"]))
    except (OSError, KeyError, ValueError, json.JSONDecodeError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{root} is not a complete shard folder ({exc}); write it with `alexspec prepare-data`") \
            from None


def _read_labels(path: Path, count: int, classes: int) -> torch.Tensor:
    """A split's labels: `count` whole numbers from 0 to classes - 1 (a label past them would stop
    training inside the loss: on a GPU, a device-side assert); DataError otherwise."""
    fix = "write the folder again with `alexspec prepare-data`"
    try:
        labels = np.load(path, allow_pickle=False)
    except ValueError:  # a pickle, or no .npy at all
        raise DataError(f"{path}: not a NumPy array of labels; {fix}") from None
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataError(f"{path}: holds a {labels.dtype} array of shape {list(labels.shape)}, not a list of whole "
                        f"numbers; {fix}")
    if len(labels) != count:
        raise DataError(f"{path}: {len(labels)} labels for {count} images (index.json); {fix}")
    outside = np.flatnonzero((labels < 0) | (labels >= classes))
    if len(outside):
        more = f" ({len(outside) - 1} more labels are not either)" if len(outside) > 1 else ""
        raise DataError(f"{path}: label {labels[outside[0]]} (image {outside[0]}) is not one of the {classes} classes "
                        f"(0 to {classes - 1}) that index.json names{more}; {fix}")
    return torch.from_numpy(labels.astype(np.int64))


NAMED_SOURCES = ("digits", "synthetic")  # data sources given by name, not by a folder


def lasting(source: str) -> str:
    """`source` as a run records it: a folder by its absolute path (the run may be resumed, or
    evaluated, from another working folder), a named source by its name."""
    return source if source in NAMED_SOURCES else str(Path(source).absolute())


def check_recorded(source: str, run: str) -> None:
    """DataError where `source`, the data `run` was trained on as its record says, is a folder no
    longer there (a command taking it from the record would otherwise blame --data, not given)."""
    if source not in NAMED_SOURCES and not Path(source).exists():
        raise DataError(f"{source}, the data {run} was trained on, is no longer there; give --data where it is now "
                        "(images of the same classes)")


def open_data(source: str, image_shape: tuple[int, int, int], classes: int, resize: int | None,
              seed: int = 0, progress: Optional[bool] = None) -> Dataset:
    """The dataset named by `source`: "digits", "synthetic", a shard folder or an image folder
    (decoded into memory, shown as alexspec.train.progress.counting shows `progress`)."""
    if source == "digits":
        return digits(seed)
    if source == "synthetic":
        return synthetic(image_shape, classes, seed=seed)
    path = Path(source)
    if not path.is_dir():
        raise DataError(f"{source}: {'a file, not a folder' if path.exists() else 'no such folder'}; --data takes "
                        "digits, synthetic, an image folder (train/ and val/ with a folder per class) or a folder "
                        "from `alexspec prepare-data`")
    if (path / "index.json").exists():
        return read_shards(path)
    from alexspec.train.image_folder import image_folder

    return image_folder(path, resize or max(image_shape[1:]), image_shape[0], progress=progress)
