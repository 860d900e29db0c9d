"""Data sources and augmentation: image folders, shards, and the paper's augmentations' properties."""
from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given, settings, strategies as st
import numpy as np
import pytest

torch = pytest.importorskip("torch")
Image = pytest.importorskip("PIL.Image")

from alexspec.train import augment, checkpoint  # noqa: E402
from alexspec.train.data import DataError, digits, read_shards  # noqa: E402
from alexspec.train.image_folder import decode, image_folder, prepare_shards  # noqa: E402
from conftest import run_cli  # noqa: E402


def make_folder(root, per_class=6, size=(24, 20), corrupt=0):
    rng = np.random.default_rng(0)
    for part in ("train", "val"):
        for c, name in enumerate(("cat", "dog")):
            folder = root / part / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 80, (size[1], size[0], 3), dtype=np.uint8)
                pixels[:, :, c] += 150  # the class shows in one colour channel
                Image.fromarray(pixels).save(folder / f"{i}.{'png' if i % 2 else 'jpg'}")
            for i in range(corrupt if part == "train" else 0):
                (folder / f"broken{i}.jpg").write_bytes(b"not an image at all")
    return root


def test_image_folder_resizes_and_labels(tmp_path):
    data = image_folder(make_folder(tmp_path / "imgs"), size=16)
    assert data.classes == ["cat", "dog"]
    assert tuple(data.train.images.shape) == (12, 3, 16, 16) and data.train.images.dtype == torch.uint8
    assert data.train.labels.tolist() == [0] * 6 + [1] * 6
    means = data.train.images.float().mean(dim=(2, 3))
    assert (means[:6, 0] > means[:6, 1]).all() and (means[6:, 1] > means[6:, 0]).all()


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_grey_images_are_scaled_to_8_bits_not_clipped_white(tmp_path, suffix):
    ramp = (np.arange(16 * 16).reshape(16, 16) * 257).astype(np.uint16)  # 0, 257, ... 65535: 8-bit 0..255
    Image.fromarray(ramp).save(tmp_path / f"ramp{suffix}")
    assert Image.open(tmp_path / f"ramp{suffix}").mode.startswith("I")
    for mode, channels in (("L", 1), ("RGB", 3)):
        image = decode(tmp_path / f"ramp{suffix}", size=16, mode=mode)
        assert image.shape == (channels, 16, 16)
        assert (image == np.arange(256, dtype=np.uint8).reshape(16, 16)).all()


def test_tiff_images_are_read_from_an_image_folder(tmp_path):
    root = make_folder(tmp_path / "imgs")
    for folder in sorted((root / "train").iterdir()):
        ramp = (np.arange(24 * 20).reshape(20, 24) * 100).astype(np.uint16)
        Image.fromarray(ramp).save(folder / "extra.tiff")
    data = image_folder(root, size=16)
    assert tuple(data.train.images.shape) == (14, 3, 16, 16)


def test_float_images_are_named_unreadable_not_guessed(tmp_path):
    Image.fromarray(np.full((16, 16), 0.5, dtype=np.float32)).save(tmp_path / "float.tif")
    assert "float" in decode(tmp_path / "float.tif", size=16, mode="L")


def test_an_image_too_large_to_decode_safely_is_skipped_not_a_traceback(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "imgs", per_class=100, size=(8, 8))
    Image.fromarray(np.zeros((20, 24, 3), dtype=np.uint8)).save(root / "train" / "cat" / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 200)  # 480 pixels: over twice the limit, a decompression bomb
    data = image_folder(root, size=8)
    assert len(data.unreadable) == 1 and len(data.train) == 200


def test_unreadable_images_are_skipped_and_counted_or_refused(tmp_path):
    few = image_folder(make_folder(tmp_path / "few", per_class=100, size=(8, 8), corrupt=1), size=8)
    assert len(few.train) == 200
    assert few.unreadable == ("train/cat/broken0.jpg (not an image Pillow can read)",
                              "train/dog/broken0.jpg (not an image Pillow can read)")
    with pytest.raises(DataError, match=r"more than 1% of the 30 images in .*many cannot be read: "
                                        r"train/cat/broken0.jpg \(not an image Pillow can read\); check the files"):
        image_folder(make_folder(tmp_path / "many", corrupt=3), size=8)
    with pytest.raises(DataError, match=f"many/train is the train/ split of an image folder; give the folder that "
                                        f"holds it, {tmp_path / 'many'}$"):
        image_folder(tmp_path / "many" / "train", size=8)


def test_hidden_files_and_folders_are_no_images_or_classes_and_subfolders_hold_images(tmp_path):
    root = make_folder(tmp_path / "imgs")
    for part in ("train", "val"):  # what macOS and Jupyter leave in a folder copied or opened there
        (root / part / ".ipynb_checkpoints").mkdir()
        Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(root / part / ".ipynb_checkpoints" / "0.png")
        (root / part / "cat" / "._0.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (root / "train" / "dog" / "batch2" / ".cache").mkdir(parents=True)  # a class's images grouped in folders
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(root / "train" / "dog" / "batch2" / "7.png")
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(root / "train" / "dog" / "batch2" / ".cache" / "x.png")
    data = image_folder(root, size=8)
    assert data.classes == ["cat", "dog"] and data.unreadable == ()
    assert data.train.labels.tolist() == [0] * 6 + [1] * 7 and len(data.val) == 12


def test_a_class_with_no_images_or_seen_only_in_validation_is_refused_by_name(tmp_path):
    # either would make a class the network never trains on, with its number shifting the others'
    root = make_folder(tmp_path / "imgs")
    (root / "train" / "bird").mkdir()
    with pytest.raises(DataError, match="imgs/train: bird holds no readable images; each folder of train/ is a class"):
        image_folder(root, size=8)
    (root / "train" / "bird").rmdir()
    (root / "val" / "empty").mkdir()  # a folder without images is harmless
    assert image_folder(root, size=8).classes == ["cat", "dog"]
    (root / "val" / "horse").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(root / "val" / "horse" / "0.png")
    with pytest.raises(DataError, match=r"imgs/val has class folders that .*imgs/train lacks \(horse\)"):
        image_folder(root, size=8)


def test_a_folder_of_class_folders_without_train_and_val_is_told_how_to_split_them(tmp_path):
    import shutil

    root = make_folder(tmp_path / "imgs", per_class=1)
    shutil.rmtree(root / "val")  # train/ only
    with pytest.raises(DataError) as caught:
        image_folder(root, size=8)
    assert str(caught.value) == (f"{root} has train/ but no val/ folder; expected {root}/train/<class>/*.jpg and "
                                 f"{root}/val/<class>/*.jpg: move some of each class's images (say one in ten) to "
                                 f"{root}/val/<class>/, which measure the validation error")
    for name in ("cat", "dog"):
        (root / "train" / name).rename(root / name)  # a class folder each, as many datasets come
    (root / "train").rmdir()
    (root / "notes").mkdir()  # no images: not named as a class
    result = run_cli("prepare-data", str(root), str(tmp_path / "shards"))
    assert result.returncode == 2 and result.stderr == (
        f"alexspec prepare-data: {root} holds class folders (cat, dog) but no train/ and val/; expected "
        f"{root}/train/<class>/*.jpg and {root}/val/<class>/*.jpg: move the class folders into {root}/train/, and "
        f"some of each class's images (say one in ten) to {root}/val/<class>/, which measure the validation "
        "error\n"), result.stderr


def test_more_classes_than_outputs_names_them_and_the_layer_to_change(tmp_path):
    from alexspec.errors import BadInput
    from alexspec.spec import analyse, load_text
    from alexspec.train.data import synthetic
    from alexspec.train.evaluate import check_data

    network = analyse(load_text(SPEC, "pets.yaml")).network
    data = synthetic((3, 16, 16), classes=7)
    with pytest.raises(BadInput, match=r"the data has 7 classes \(0, 1, 2, 3, 4, ... \(2 more\)\) but pets outputs 2; "
                                        r"give its last layer \(fc\) out: 7 \(`--set layers.fc.out=7`\)"):
        check_data(data, network, 2)


def test_data_of_one_class_is_refused():
    from alexspec.errors import BadInput
    from alexspec.spec import analyse, load_text
    from alexspec.train.data import synthetic
    from alexspec.train.evaluate import check_data

    network = analyse(load_text(SPEC, "pets.yaml")).network
    check_data(synthetic((3, 16, 16), classes=2), network, 2)
    with pytest.raises(BadInput, match=r"synthetic has one class \(0\): a classifier learns to tell classes apart"):
        check_data(synthetic((3, 16, 16), classes=1), network, 2)


def test_fewer_classes_than_outputs_is_a_note_naming_the_layer_to_change():
    from alexspec.spec import analyse, load_text
    from alexspec.train.data import synthetic
    from alexspec.train.evaluate import unused_outputs

    network = analyse(load_text(SPEC.replace("out: 2", "out: 5"), "pets.yaml")).network
    assert unused_outputs(synthetic((3, 16, 16), classes=5), network, 5) is None
    note = unused_outputs(synthetic((3, 16, 16), classes=2), network, 5)
    assert note == ("note: the data has 2 classes but pets outputs 5, so 3 of its outputs are never a label; to fit "
                    "the data, give its last layer (fc) out: 2 (`--set layers.fc.out=2`)")


def test_prepare_data_writes_shards_that_read_back_equal(tmp_path):
    source = make_folder(tmp_path / "imgs")
    result = run_cli("prepare-data", str(source), str(tmp_path / "shards"), "--size", "16")
    assert result.returncode == 0, result.stderr
    shards = read_shards(tmp_path / "shards")
    folder = image_folder(source, size=16)
    assert np.array_equal(np.asarray(shards.train.images), folder.train.images.numpy())
    order = torch.tensor([5, 0, 11, 3])
    images, labels = shards.train.batch(order)
    assert torch.equal(images, folder.train.images[order]) and torch.equal(labels, folder.train.labels[order])
    assert json.loads((tmp_path / "shards" / "index.json").read_text())["classes"] == ["cat", "dog"]
    (tmp_path / "shards" / "val.labels.npy").unlink()
    with pytest.raises(DataError, match="not a complete shard folder"):
        read_shards(tmp_path / "shards")


def test_a_folder_too_big_for_memory_is_sent_to_prepare_data_before_any_image_is_decoded(tmp_path, monkeypatch):
    from alexspec import memory_check
    from alexspec.train import image_folder as folder_module

    source = make_folder(tmp_path / "imgs")  # 24 images: 24 x 3x16x16 = 18,432 bytes in memory
    monkeypatch.setattr(memory_check, "capacity", lambda device: 18_432 - 1)
    decode = folder_module.decode
    monkeypatch.setattr(folder_module, "decode", lambda *args: pytest.fail("decoded"))
    with pytest.raises(DataError, match=r"the 24 images of .*imgs take 18.0 KiB at 3x16x16, more than this machine's "
                                        r"18.0 KiB of memory; write them to shards once \(`alexspec prepare-data "):
        image_folder(source, size=16)
    monkeypatch.setattr(folder_module, "decode", decode)
    monkeypatch.setattr(memory_check, "capacity", lambda device: 18_432)  # exactly enough
    assert len(image_folder(source, size=16).train) == 12


def test_prepare_data_leaves_out_unreadable_images_by_name_and_decodes_in_any_number_of_threads(tmp_path):
    source = make_folder(tmp_path / "imgs", per_class=60, size=(10, 12), corrupt=1)  # 1 in 121 per class
    result = run_cli("prepare-data", str(source), str(tmp_path / "one"), "--size", "8", "--workers", "1")
    assert result.returncode == 0, result.stderr
    assert "wrote 120 training and 120 validation images (3x8x8, 2 classes)" in result.stdout
    assert "left out 2 unreadable images: train/cat/broken0.jpg (not an image Pillow can read), " \
           "train/dog/broken0.jpg (not an image Pillow can read)" in result.stdout
    one = read_shards(tmp_path / "one")  # its images file cut to the 120 read: read_shards checks the size
    folder = image_folder(source, size=8)
    assert np.array_equal(np.asarray(one.train.images), folder.train.images.numpy())
    assert torch.equal(one.train.labels, folder.train.labels)
    three = prepare_shards(source, tmp_path / "three", size=8, workers=3)  # threads keep the files' order
    assert np.array_equal(np.asarray(three.train.images), np.asarray(one.train.images))
    assert np.array_equal(np.asarray(three.val.images), np.asarray(one.val.images))


def test_prepare_data_streams_the_images_to_disk_instead_of_holding_them_all(tmp_path):
    import tracemalloc

    source = make_folder(tmp_path / "imgs", per_class=100, size=(8, 8))
    every_image = 400 * 3 * 64 * 64  # 4.9 MB: what the folder read into memory takes
    tracemalloc.start()
    try:
        prepare_shards(source, tmp_path / "shards", size=64, workers=2)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < every_image / 4, peak
    assert read_shards(tmp_path / "shards").train.images.shape == (200, 3, 64, 64)


def test_a_second_prepare_data_into_the_same_folder_is_refused_while_the_first_writes(tmp_path):
    import os
    import socket

    from alexspec.train.data import ShardWriter

    source, shards = make_folder(tmp_path / "imgs"), tmp_path / "shards"
    assert run_cli("prepare-data", str(source), str(shards), "--size", "8").returncode == 0
    before = {p.name: p.read_bytes() for p in shards.iterdir()}
    with ShardWriter(shards, ["cat", "dog"]):  # as a prepare-data in another process, still decoding
        result = run_cli("prepare-data", str(source), str(shards), "--size", "12")
        assert result.returncode == 2, result.stderr
        assert f"{shards}: another prepare-data is writing shards here now (process {os.getpid()} on " \
               f"{socket.gethostname()}); wait for it to end" in result.stderr, result.stderr
        assert {p.name: p.read_bytes() for p in shards.iterdir() if p.suffix != ".lock"} == \
            {name: data for name, data in before.items() if not name.endswith(".lock")}
    assert run_cli("prepare-data", str(source), str(shards), "--size", "12").returncode == 0
    assert read_shards(shards).train.images.shape[-1] == 12


def test_prepare_data_stopped_by_sigterm_leaves_no_temporaries(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from conftest import ROOT

    source, shards = make_folder(tmp_path / "imgs", per_class=40), tmp_path / "shards"
    slow_decoding = ("import time, sys\n"
                     "from alexspec.train import image_folder\n"
                     "decode = image_folder.decode\n"
                     "image_folder.decode = lambda *a: (time.sleep(0.05), decode(*a))[1]\n"
                     "from alexspec.cli import main\n"
                     "sys.exit(main(sys.argv[1:]))\n")
    process = subprocess.Popen([sys.executable, "-c", slow_decoding, "prepare-data", str(source), str(shards),
                                "--size", "8", "--workers", "1"], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (shards / ".train.images.u8.tmp").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)  # decoding now
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM and "stopped by SIGTERM" in stderr, stderr
    assert sorted(p.name for p in shards.iterdir()) == [".alexspec-shards.lock"]  # no half-written shards


def test_prepare_data_says_before_decoding_when_the_disk_has_no_room_for_the_shards(tmp_path, monkeypatch):
    import shutil

    from alexspec.train import image_folder

    source, shards = make_folder(tmp_path / "imgs"), tmp_path / "new" / "shards"
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda where: usage._replace(free=10_000))
    monkeypatch.setattr(image_folder, "decode", lambda *a: pytest.fail("decoded before the disk was checked"))
    with pytest.raises(DataError) as refused:
        prepare_shards(source, shards, size=16)
    # 24 images of 3 x 16 x 16 bytes: 18,432 bytes; 72 bytes a pixel, so 11 x 11 (8,712 bytes) is the largest
    # size within 95% of the 10,000 free (12 x 12: 10,368)
    assert str(refused.value) == (f"{shards}: the shards of 24 images at 3x16x16 need 18.0 KiB, and its disk has "
                                  "9.8 KiB free; free some space, write them to another disk, or give a --size from "
                                  "your network's input size up to 11 (8.5 KiB)")
    assert not (tmp_path / "new").exists()
    monkeypatch.setattr(shutil, "disk_usage", lambda where: usage._replace(free=50))  # not one 1x1 image each
    with pytest.raises(DataError, match="50 B free; free some space or write them to another disk$"):
        prepare_shards(source, shards, size=16)


def test_a_disk_filling_up_midway_is_a_clear_error_not_a_crash_and_keeps_the_old_shards(tmp_path, monkeypatch):
    import builtins
    import errno

    from alexspec.train import data

    source, shards = make_folder(tmp_path / "imgs"), tmp_path / "shards"
    assert run_cli("prepare-data", str(source), str(shards), "--size", "8").returncode == 0
    shard_files = lambda: {p.name: p.read_bytes() for p in shards.iterdir() if p.suffix != ".lock"}  # noqa: E731
    before = shard_files()

    class FillingUp:  # a disk with room for 2,000 more bytes
        def __init__(self, handle):
            self.handle, self.room = handle, 2000

        def write(self, chunk):
            if len(chunk) > self.room:
                raise OSError(errno.ENOSPC, "No space left on device")
            self.room -= len(chunk)
            return self.handle.write(chunk)

        def __getattr__(self, name):
            return getattr(self.handle, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

    monkeypatch.setattr(data, "open", lambda *a, **k: FillingUp(builtins.open(*a, **k)), raising=False)
    with pytest.raises(DataError, match=f"^{shards}: its disk is full; free some space"):
        prepare_shards(source, shards, size=16)  # each image 768 bytes: the third does not fit
    assert shard_files() == before  # the old shards, whole, and no temporaries


def test_prepare_data_without_a_terminal_says_where_it_is_once_a_minute(tmp_path, monkeypatch, capsys):
    from alexspec.train import progress

    monkeypatch.setattr(progress, "LINE_EVERY_S", 0.0)  # every image instead of once a minute
    prepare_shards(make_folder(tmp_path / "imgs"), tmp_path / "shards", size=8, progress=False)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" images (")[0] for line in lines] == \
        [f"decoding {part}/: {done}/12" for part in ("train", "val") for done in range(1, 12)]
    assert lines[0].startswith("decoding train/: 1/12 images (8%), ") and " images/s, about " in lines[0]
    prepare_shards(tmp_path / "imgs", tmp_path / "again", size=8, progress=None)  # a DDP process other than rank 0
    assert capsys.readouterr().err == ""


@pytest.mark.slow
def test_a_run_records_its_image_folder_by_its_whole_path_for_eval_and_resume_from_elsewhere(tmp_path):
    make_folder(tmp_path / "imgs")
    trained = run_cli("train", "digits", "--data", "imgs", "--max-steps", "1", "-o", "run", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data"] == str(tmp_path / "imgs")
    saved = checkpoint.load(checkpoint.latest(tmp_path / "run"), resume=True)
    assert saved["recipe"]["data"] == str(tmp_path / "imgs")  # what --resume takes
    (tmp_path / "elsewhere" / "imgs").mkdir(parents=True)  # a folder of the same name that is no data
    evaluated = run_cli("eval", str(tmp_path / "run"), cwd=tmp_path / "elsewhere")
    assert evaluated.returncode == 0 and f"digits on {tmp_path / 'imgs'} (12 images" in evaluated.stdout, \
        evaluated.stderr  # before: "imgs: ... no train/ folder", the recipe's "imgs" taken from the working folder


def test_prepare_data_never_writes_over_a_folder_of_other_files(tmp_path):
    source = make_folder(tmp_path / "imgs")
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.json").write_text('{"pages": 3}')  # shards would replace an index.json
    result = run_cli("prepare-data", str(source), str(site), "--size", "8")
    assert result.returncode == 2 and "holds files that are not shards (index.json)" in result.stderr, result.stderr
    assert sorted(p.name for p in site.iterdir()) == ["index.json"] and (site / "index.json").read_text() == \
        '{"pages": 3}'
    assert run_cli("prepare-data", str(source), str(tmp_path / "shards"), "--size", "8").returncode == 0
    assert run_cli("prepare-data", str(source), str(tmp_path / "shards"), "--size", "12").returncode == 0  # replaced
    assert read_shards(tmp_path / "shards").train.images.shape[-1] == 12


def test_prepare_data_never_writes_into_the_image_folders_splits(tmp_path):
    source = make_folder(tmp_path / "imgs")
    for inside in ("train/shards", "val"):
        with pytest.raises(DataError, match=f"imgs/{inside} is inside .*imgs/{inside.split('/')[0]}/, where it "
                                            "would be read as a class"):
            prepare_shards(source, source / inside, size=8)
    assert not (source / "train" / "shards").exists() and image_folder(source, size=8).classes == ["cat", "dog"]
    prepare_shards(source, source / "shards", size=8)  # beside train/ and val/: the folder reads as before
    assert image_folder(source, size=8).classes == ["cat", "dog"] and len(read_shards(source / "shards").train) == 12


def test_prepare_data_stopped_while_decoding_keeps_the_old_shards_and_no_temporary(tmp_path, monkeypatch):
    from alexspec.train import image_folder as folder_module

    source = make_folder(tmp_path / "imgs")
    folder_module.prepare_shards(source, tmp_path / "shards", size=8)
    before = {p.name: p.read_bytes() for p in (tmp_path / "shards").iterdir()}
    decode, calls = folder_module.decode, []

    def stopped_at_the_fifteenth(*args):  # Ctrl-C during the val split
        calls.append(args)
        if len(calls) == 15:
            raise KeyboardInterrupt
        return decode(*args)

    monkeypatch.setattr(folder_module, "decode", stopped_at_the_fifteenth)
    with pytest.raises(KeyboardInterrupt):
        folder_module.prepare_shards(source, tmp_path / "shards", size=12, workers=2)
    assert {p.name: p.read_bytes() for p in (tmp_path / "shards").iterdir()} == before


def test_shards_written_again_and_stopped_midway_are_the_old_ones_or_refused(tmp_path, monkeypatch):
    source = make_folder(tmp_path / "imgs")
    prepare_shards(source, tmp_path / "shards", size=8)
    old = read_shards(tmp_path / "shards")
    old_images = np.array(old.val.images)
    saved = np.save

    def stopped_at_the_val_labels(handle, labels):  # a full disk or Ctrl-C while writing at another size
        if "val" in handle.name:
            raise KeyboardInterrupt
        saved(handle, labels)

    monkeypatch.setattr(np, "save", stopped_at_the_val_labels)
    with pytest.raises(KeyboardInterrupt):
        prepare_shards(source, tmp_path / "shards", size=12)
    kept = read_shards(tmp_path / "shards")  # every file written aside: the old shards, whole
    assert np.array_equal(np.array(kept.val.images), old_images) and kept.val.images.shape[-1] == 8

    monkeypatch.setattr(np, "save", saved)
    moved = []

    def stopped_after_two_names(self, target):
        if len(moved) == 2:
            raise KeyboardInterrupt
        moved.append(target)
        return Path.rename(self, target)

    monkeypatch.setattr(Path, "replace", stopped_after_two_names)
    with pytest.raises(KeyboardInterrupt):  # stopped while the new files take their names
        prepare_shards(source, tmp_path / "shards", size=12)
    with pytest.raises(DataError, match="not a complete shard folder"):  # no index over a mix of old and new
        read_shards(tmp_path / "shards")


def test_shards_whose_images_are_not_what_the_index_says_are_refused(tmp_path):
    prepare_shards(make_folder(tmp_path / "imgs"), tmp_path / "shards", size=8)
    images = tmp_path / "shards" / "train.images.u8"
    images.write_bytes(images.read_bytes() * 2)  # 12 images of 3x8x8 where 12 were written, and as many again
    with pytest.raises(DataError, match=r"train.images.u8 holds 4,608 bytes where index.json says 2,304 \(12x3x8x8\)"):
        read_shards(tmp_path / "shards")


@pytest.mark.parametrize("labels, said", [
    (b"not an array", r"val.labels.npy: not a NumPy array of labels"),
    ([[0, 1]] * 6, r"val.labels.npy: holds a int64 array of shape \[6, 2\], not a list of whole numbers"),
    ([0.0] * 12, r"val.labels.npy: holds a float64 array of shape \[12\], not a list of whole numbers"),
    ([0, 1] * 5, r"val.labels.npy: 10 labels for 12 images \(index.json\)"),
    ([0, 1] * 5 + [2, -1], r"val.labels.npy: label 2 \(image 10\) is not one of the 2 classes \(0 to 1\) that "
                           r"index.json names \(1 more labels are not either\)"),
])
def test_shards_whose_labels_are_no_classes_are_refused_before_training(tmp_path, labels, said):
    prepare_shards(make_folder(tmp_path / "imgs"), tmp_path / "shards", size=8)
    path = tmp_path / "shards" / "val.labels.npy"
    if isinstance(labels, bytes):
        path.write_bytes(labels)
    else:
        np.save(path, np.array(labels))
    with pytest.raises(DataError, match=said + "; write the folder again with `alexspec prepare-data`"):
        read_shards(tmp_path / "shards")


def test_shard_labels_that_are_a_pickle_are_not_unpickled(tmp_path):
    prepare_shards(make_folder(tmp_path / "imgs"), tmp_path / "shards", size=8)
    np.save(tmp_path / "shards" / "val.labels.npy", np.array([object()] * 12), allow_pickle=True)
    with pytest.raises(DataError, match="not a NumPy array of labels") as refused:
        read_shards(tmp_path / "shards")
    assert "allow_pickle" not in str(refused.value)


SPEC = """\
alexspec: 1
name: pets
input: {channels: 3, height: 16, width: 16}
layers:
  - {name: conv1, type: conv, out: 8, kernel: 3, padding: 1, activation: relu}
  - {name: pool1, type: maxpool, kernel: 2}
  - {name: flatten, type: flatten}
  - {name: fc, type: linear, out: 2}
training: {lr: 0.05, batch: 4, epochs: 2, augmentation: {resize: 20, crop: 16, flip: true, lighting: 0.1}}
"""


@pytest.mark.slow
@pytest.mark.parametrize("prepared", [False, True])
def test_training_on_an_image_folder_and_on_shards(tmp_path, prepared):
    source = make_folder(tmp_path / "imgs", size=(30, 26))
    (tmp_path / "pets.yaml").write_text(SPEC)
    data = str(source)
    if prepared:
        assert run_cli("prepare-data", data, str(tmp_path / "shards"), "--size", "20").returncode == 0
        data = str(tmp_path / "shards")
    result = run_cli("train", str(tmp_path / "pets.yaml"), "--data", data, "--out", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    epochs = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert epochs[-1]["kind"] == "epoch" and epochs[-1]["top1_error"] <= 0.5


@pytest.mark.slow
def test_wrong_image_size_is_explained(tmp_path):
    (tmp_path / "pets.yaml").write_text(SPEC.replace("height: 16, width: 16", "height: 32, width: 32")
                                        .replace("crop: 16", "crop: 32").replace("resize: 20", "resize: 40"))
    result = run_cli("train", str(tmp_path / "pets.yaml"), "--data", "digits")
    too_small = "alexspec train: the data's images are 1x8x8 but pets takes {}x32x32; give --data an image folder, " \
        "or shards from `alexspec prepare-data SRC DST --size 32`"
    classes = "alexspec train: the data has 10 classes (0, 1, 2, 3, 4, ... (5 more)) but pets outputs 2; give its " \
        "last layer (fc) out: 10 (`--set layers.fc.out=10`)"
    assert result.returncode == 2 and result.stderr.splitlines()[-3:] == [  # every misfit at once, a line each
        "alexspec train: the data's images have 1 channel but pets takes 3; `--set input.channels=1 --set "
        "training.augmentation.lighting=0` makes the network take 1",  # the spec's colour lighting needs RGB
        too_small.format(3), classes], result.stderr
    result = run_cli("train", str(tmp_path / "pets.yaml"), "--data", "digits", "--set", "input.channels=1",
                     "--set", "training.augmentation.lighting=0")
    assert result.returncode == 2 and result.stderr.splitlines()[-2:] == [too_small.format(1), classes], result.stderr
    small = make_folder(tmp_path / "imgs", per_class=2)
    assert run_cli("prepare-data", str(small), str(tmp_path / "shards"), "--size", "20").returncode == 0
    result = run_cli("train", str(tmp_path / "pets.yaml"), "--data", str(tmp_path / "shards"))
    assert result.returncode == 2 and "the data's images are 3x20x20 but pets takes 3x32x32; use data of that " \
        "size or larger, to crop from (`alexspec prepare-data SRC DST --size 32`)" in result.stderr, result.stderr


def test_a_crop_of_under_half_the_image_is_a_note_saying_how_to_show_it_whole(tmp_path):
    from alexspec.spec import analyse, load_text
    from alexspec.train.data import synthetic
    from alexspec.train.evaluate import small_crops

    network = analyse(load_text(SPEC, "pets.yaml")).network  # takes 16x16
    assert small_crops(synthetic((3, 16, 16), classes=2), network, None) is None
    assert small_crops(synthetic((3, 22, 22), classes=2), network, None) is None  # 53% of each image
    note = small_crops(synthetic((3, 24, 24), classes=2), network, 24)  # an image folder resized to 24
    assert note == ("note: synthetic's images are 24x24 but pets takes 16x16, so it sees 16x16 crops of them, 44% "
                    "of each image; to show it whole images, lower training.augmentation.resize (24) or remove it")
    source = make_folder(tmp_path / "imgs", per_class=2)
    assert run_cli("prepare-data", str(source), str(tmp_path / "shards"), "--size", "64").returncode == 0
    note = small_crops(read_shards(tmp_path / "shards"), network, 20)
    assert note == ("note: shards's images are 64x64 but pets takes 16x16, so it sees 16x16 crops of them, 6% of "
                    "each image; to show it whole images, give shards from `alexspec prepare-data SRC DST --size 16` "
                    "or the image folder")


@pytest.mark.slow
def test_training_on_shards_made_for_a_larger_net_says_it_sees_a_small_crop(tmp_path):
    (tmp_path / "pets.yaml").write_text(SPEC)
    source = make_folder(tmp_path / "imgs", per_class=2)
    assert run_cli("prepare-data", str(source), str(tmp_path / "shards"), "--size", "64").returncode == 0
    result = run_cli("train", str(tmp_path / "pets.yaml"), "--data", str(tmp_path / "shards"), "--max-steps", "1",
                     "--out", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    assert "so it sees 16x16 crops of them, 6% of each image" in result.stdout + result.stderr
    result = run_cli("eval", str(tmp_path / "run"))
    assert result.returncode == 0 and "6% of each image" in result.stdout + result.stderr, result.stderr


def test_random_crops_lie_inside_the_image():
    images = torch.arange(2 * 3 * 9 * 11, dtype=torch.float32).reshape(2, 3, 9, 11)
    crops = augment.random_crop(images, 5, torch.Generator().manual_seed(1))
    for image, crop in zip(images, crops):
        top, left = divmod(int(crop[0, 0, 0].item()) % 99, 11)  # the value encodes its position
        assert torch.equal(crop, image[:, top:top + 5, left:left + 5])
    with pytest.raises(ValueError, match="larger than the images"):
        augment.random_crop(images, 10, torch.Generator())


def test_crops_of_a_network_input_wider_than_high_are_that_shape():
    images = torch.arange(2 * 3 * 9 * 11, dtype=torch.float32).reshape(2, 3, 9, 11)
    crops = augment.random_crop(images, 4, torch.Generator().manual_seed(2), width=7)
    for image, crop in zip(images, crops):
        top, left = divmod(int(crop[0, 0, 0].item()) % 99, 11)
        assert crop.shape == (3, 4, 7) and torch.equal(crop, image[:, top:top + 4, left:left + 7])
    assert torch.equal(augment.center_crop(images, 5, 9), images[:, :, 2:7, 1:10])
    views = augment.ten_crops(images, 5, 9)
    assert torch.equal(views[3], images[:, :, 4:, 2:]) and torch.equal(views[8], images[:, :, 4:, 2:].flip(-1))
    assert {tuple(view.shape[2:]) for view in views} == {(5, 9)}


@settings(max_examples=60, deadline=None)
@given(height=st.integers(1, 12), width=st.integers(1, 12), extra=st.integers(0, 5), crop=st.booleans(),
       train=st.booleans(), flip=st.booleans())
def test_what_reaches_the_network_is_its_input_shape(height, width, extra, crop, train, flip):
    """Images of any size at least the input's (square, as image folders and shards are): training's
    random crops, evaluation's centre crop and the ten crops all have the network's height and width."""
    from alexspec import ir
    from alexspec.train.augment import NetworkInput

    side = max(height, width) + extra
    images = torch.randint(0, 256, (3, 2, side, side), dtype=torch.uint8)
    aug = ir.Augmentation(crop=(height, width) if crop else None, flip=flip)
    seen = NetworkInput((2, height, width), aug, torch.device("cpu"))(images, torch.Generator().manual_seed(0), train)
    assert seen.shape == (3, 2, height, width)
    assert {tuple(view.shape) for view in augment.ten_crops(images, height, width)} == {(3, 2, height, width)}


def test_a_network_input_wider_than_high_trains_and_evaluates_on_larger_images(tmp_path):
    # before, a square crop of the input's height reached the network: a shape error in its last layer
    source = make_folder(tmp_path / "imgs", per_class=4)
    (tmp_path / "wide.yaml").write_text(
        "alexspec: 1\nname: wide\ninput: {channels: 3, height: 12, width: 18}\nlayers:\n"
        "  - {name: conv1, type: conv, out: 4, kernel: 3, activation: relu}\n  - {name: flatten, type: flatten}\n"
        "  - {name: fc, type: linear, out: 2}\n"
        "training: {batch: 4, epochs: 1, augmentation: {resize: 24, crop: [12, 18], flip: true}}\n")  # random crops
    trained = run_cli("train", str(tmp_path / "wide.yaml"), "--data", str(source), "--out", str(tmp_path / "run"))
    assert trained.returncode == 0, trained.stderr
    evaluated = run_cli("eval", str(tmp_path / "run"), "--crops", "10")
    assert evaluated.returncode == 0 and "(8 images, 10 crops)" in evaluated.stdout, evaluated.stderr


def test_a_run_whose_data_folder_moved_says_so_and_takes_it_from_data(tmp_path):
    source = make_folder(tmp_path / "imgs", per_class=2, size=(16, 16))
    spec = tmp_path / "pets.yaml"
    spec.write_text(SPEC.replace("resize: 20, crop: 16, ", ""))
    trained = run_cli("train", str(spec), "--data", str(source), "--epochs", "1", "--out", str(tmp_path / "run"))
    assert trained.returncode == 0, trained.stderr
    source.rename(tmp_path / "moved")
    gone = f"{source}, the data {tmp_path / 'run'} was trained on, is no longer there; give --data where it is now"
    for args in (["eval", str(tmp_path / "run")], ["train", str(tmp_path / "run"), "--resume", "--epochs", "2"]):
        refused = run_cli(*args)  # before: "no such folder; --data takes ...", where no --data was given
        assert refused.returncode == 2 and gone in refused.stderr, refused.stderr
    again = run_cli("train", str(tmp_path / "run"), "--resume", "--epochs", "2", "--data", str(tmp_path / "moved"))
    assert again.returncode == 0, again.stderr


def test_synthetic_data_gets_no_note_of_classes_its_few_validation_images_miss():
    from dataclasses import replace

    from alexspec.train.data import synthetic
    from alexspec.train.evaluate import classes_not_validated

    data = synthetic((1, 4, 4), classes=1000)  # 128 validation images for 1000 classes: most have none
    assert classes_not_validated(data) is None
    missing = 1000 - len(set(data.val.labels.tolist()))
    assert f"({missing} of its 1000 classes)" in classes_not_validated(replace(data, name="folder"))


def test_validation_images_of_some_classes_only_are_noted(tmp_path):
    import shutil

    source = make_folder(tmp_path / "imgs", per_class=2, size=(16, 16))
    spec = tmp_path / "pets.yaml"
    spec.write_text(SPEC.replace("resize: 20, crop: 16, ", ""))
    note = "validation images hold none of dog (1 of its 2 classes); the validation error says nothing of that class"
    whole = run_cli("train", str(spec), "--data", str(source), "--epochs", "1", "--out", str(tmp_path / "whole"))
    assert whole.returncode == 0 and "validation images hold none" not in whole.stdout, whole.stderr
    shutil.rmtree(source / "val" / "dog")  # every validation image a cat: an error of 0 says little
    trained = run_cli("train", str(spec), "--data", str(source), "--epochs", "1", "--out", str(tmp_path / "run"))
    assert trained.returncode == 0 and note in trained.stdout, trained.stderr
    evaluated = run_cli("eval", str(tmp_path / "run"))
    assert evaluated.returncode == 0 and note in evaluated.stderr, evaluated.stderr


def test_flipping_twice_with_the_same_draws_is_the_identity():
    images = torch.randn(16, 3, 4, 5)
    once = augment.random_flip(images, torch.Generator().manual_seed(3))
    twice = augment.random_flip(once, torch.Generator().manual_seed(3))
    assert torch.equal(twice, images) and not torch.equal(once, images)
    flipped = ~torch.all((once == images).flatten(1), dim=1)
    assert torch.equal(once[flipped], images[flipped].flip(-1))


def test_lighting_noise_has_the_stated_covariance():
    sigma, n = 0.1, 40_000
    shifted = augment.lighting(torch.zeros(n, 3, 1, 1), sigma, torch.Generator().manual_seed(0))
    shifts = shifted[:, :, 0, 0].double()
    v, lam = augment.IMAGENET_EIGVEC.double(), augment.IMAGENET_EIGVAL.double()
    expected = v @ torch.diag((sigma * lam) ** 2) @ v.T
    torch.testing.assert_close(torch.cov(shifts.T), expected, rtol=0.05, atol=2e-6)
    assert torch.equal(augment.lighting(torch.ones(2, 3, 2, 2), 0.0, torch.Generator()), torch.ones(2, 3, 2, 2))


def test_ten_crops_are_corners_centre_and_mirrors():
    images = torch.randn(2, 3, 8, 8)
    crops = augment.ten_crops(images, 6)
    assert len(crops) == 10
    assert torch.equal(crops[0], images[:, :, :6, :6]) and torch.equal(crops[3], images[:, :, 2:, 2:])
    assert torch.equal(crops[4], images[:, :, 1:7, 1:7])
    for plain, mirrored in zip(crops[:5], crops[5:]):
        assert torch.equal(mirrored, plain.flip(-1))


def test_normalise_uses_mean_and_std():
    images = torch.full((1, 3, 2, 2), 128.0)
    out = augment.normalise(images, [100.0, 128.0, 156.0], [2.0, 1.0, 4.0])
    assert out[0, :, 0, 0].tolist() == [14.0, 0.0, -7.0]
    assert augment.normalise(images, None, None)[0, 0, 0, 0].item() == pytest.approx(128 / 255)


def test_read_ahead_returns_every_batch_in_order_and_stops_cleanly(tmp_path):
    from alexspec.train.data import read_ahead

    prepare_shards(make_folder(tmp_path / "imgs", per_class=10), tmp_path / "shards", size=8)
    split = read_shards(tmp_path / "shards").train
    batches = [torch.randperm(20, generator=torch.Generator().manual_seed(i))[:7] for i in range(6)]
    for workers in (1, 3):
        got = list(read_ahead(split, batches, workers=workers, ahead=2))
        assert len(got) == len(batches)
        for (images, labels), indices in zip(got, batches):
            expected_images, expected_labels = split.batch(indices)
            assert torch.equal(images, expected_images) and torch.equal(labels, expected_labels)
    reader = read_ahead(split, batches, workers=2)
    next(reader)
    reader.close()  # leaving early (a signal, --max-steps) shuts the threads down
    import threading
    assert not [t for t in threading.enumerate() if t.name.startswith("alexspec-data")]


def test_on_device_ahead_passes_batches_through_off_cuda():
    from alexspec.train.data import on_device_ahead

    batches = [(torch.full((2, 1, 3, 3), i, dtype=torch.uint8), torch.tensor([i, i])) for i in range(3)]
    assert list(on_device_ahead(iter(batches), torch.device("cpu"))) == batches


@pytest.mark.gpu
def test_batches_read_into_pinned_memory_reach_the_gpu_in_order(tmp_path):
    from alexspec.train.data import on_device_ahead, read_ahead

    prepare_shards(make_folder(tmp_path / "imgs", per_class=10), tmp_path / "shards", size=8)
    for split in (read_shards(tmp_path / "shards").train, digits(0).train):  # memory-mapped, in memory
        batches = [torch.randperm(len(split), generator=torch.Generator().manual_seed(i))[:7] for i in range(5)]
        read = read_ahead(split, batches, workers=3, pin=True)
        got = list(on_device_ahead(read, torch.device("cuda")))
        assert len(got) == len(batches)
        for (images, labels), indices in zip(got, batches):
            expected_images, expected_labels = split.batch(indices)
            assert images.is_cuda and labels.is_cuda
            assert torch.equal(images.cpu(), expected_images) and torch.equal(labels.cpu(), expected_labels)


def test_the_digits_read_from_disk_are_scikit_learns():
    from sklearn.datasets import load_digits

    from alexspec.train.data import _digits_on_disk

    pixels, labels = _digits_on_disk()
    reference = load_digits()
    assert np.array_equal(pixels, reference.data) and np.array_equal(labels, reference.target)


def test_an_image_folder_opened_for_training_shows_its_decoding_where_asked(tmp_path, capsys):
    from alexspec.train.data import open_data

    source = make_folder(tmp_path / "imgs")
    open_data(str(source), (3, 8, 8), 2, None)
    assert "image/s" not in capsys.readouterr().err  # not on a terminal: no bar
    data = open_data(str(source), (3, 8, 8), 2, None, progress=True)
    err = capsys.readouterr().err
    assert "decoding train/: 100%" in err and "12/12" in err and "decoding val/: 100%" in err and len(data.train) == 12


def test_data_that_names_a_file_is_told_it_is_a_file(tmp_path):
    from alexspec.train.data import open_data

    (tmp_path / "cat.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"cat.png: a file, not a folder; --data takes digits, synthetic, an image "):
        open_data(str(tmp_path / "cat.png"), (3, 8, 8), 2, None)
    with pytest.raises(DataError, match=r"dog: no such folder; --data takes"):
        open_data(str(tmp_path / "dog"), (3, 8, 8), 2, None)


@pytest.mark.parametrize("name", ["alexnet", "digits", "lenet5", "resnet18", "googlenet", "squeezenet1_0", "nin"])
def test_the_set_arguments_a_class_mismatch_suggests_make_a_valid_spec_of_that_many_classes(name):
    import re

    from alexspec.spec import analyse, load_file
    from alexspec.spec.bundled import bundled_specs
    from alexspec.spec.overrides import apply_overrides
    from alexspec.train.data import synthetic
    from alexspec.train.evaluate import unused_outputs

    doc = load_file(bundled_specs()[name])
    info = analyse(doc)
    note = unused_outputs(synthetic((1, 1, 1), classes=3), info.network, info.output_shape[0])
    sets = re.search(r"\(`(--set .*)`\)$", note).group(1).split(" ")
    fitted = analyse(apply_overrides(doc, sets[1::2]))
    fewest = 4 if name == "alexnet" else 3  # alexnet's fc8 splits between its 2 towers
    assert sets[0::2] == ["--set"] * (len(sets) // 2) and fitted.output_shape == (fewest,)
    assert unused_outputs(synthetic((1, 1, 1), classes=3), fitted.network, fewest) is None


@pytest.mark.parametrize("name", ["alexnet", "digits", "lenet5", "resnet18", "googlenet", "squeezenet1_0", "nin",
                                  "vgg11-bn", "mobilenet_v2", "densenet121", "digits-resnet"])
def test_the_set_arguments_a_channel_mismatch_suggests_make_a_valid_spec_taking_those_channels(name):
    import re

    from alexspec.errors import BadInput
    from alexspec.spec import analyse, load_file
    from alexspec.spec.bundled import bundled_specs
    from alexspec.spec.overrides import apply_overrides
    from alexspec.train.data import synthetic
    from alexspec.train.evaluate import check_data

    doc = load_file(bundled_specs()[name])
    info = analyse(doc)
    taken, height, width = info.network.input
    channels = 1 if taken == 3 else 3
    with pytest.raises(BadInput) as refused:
        check_data(synthetic((channels, height, width), classes=2), info.network, info.output_shape[0])
    said = str(refused.value)
    assert said.startswith(f"the data's images have {channels} channel") and "prepare-data" not in said
    sets = re.search(r"`(--set .*)` makes the network take", said).group(1).split(" ")
    fitted = analyse(apply_overrides(doc, sets[1::2]))
    assert sets[0::2] == ["--set"] * (len(sets) // 2) and fitted.network.input == (channels, height, width)


def test_shards_of_other_channels_are_told_how_to_prepare_them_again(tmp_path):
    from dataclasses import replace

    from alexspec.errors import BadInput
    from alexspec.spec import analyse
    from alexspec.spec.bundled import bundled_specs
    from alexspec.train.data import synthetic
    from alexspec.train.evaluate import check_data

    info = analyse(bundled_specs()["lenet5"])
    data = replace(synthetic((3, 32, 32), classes=2), name=str(tmp_path / "shards"))
    with pytest.raises(BadInput, match=r"have 3 channels but lenet5 takes 1; `alexspec prepare-data SRC DST "
                                       r"--channels 1` makes shards of 1 or `--set input.channels=3` makes the "
                                       r"network take 3"):
        check_data(data, info.network, 10)
