"""What a checkpoint guarantees: it resumes from any step, it is checked (digest, form, network)
before use, and a run writes only inside its own run folder."""
from __future__ import annotations

import json
import math
import os
import shutil
import zipfile
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from alexspec.errors import BadInput  # noqa: E402
from alexspec.spec import analyse  # noqa: E402
from alexspec.train import checkpoint, run_folder  # noqa: E402
from alexspec.train.loop import TrainConfig  # noqa: E402
from alexspec.train.session import start  # noqa: E402
from conftest import ROOT, run_cli  # noqa: E402

DIGITS = ROOT / "specs" / "digits.yaml"
SHORT = ["training.batch=512"]  # 3 steps an epoch on the digits


def train(run_dir: Path, **options):
    config = TrainConfig(devices=["cpu"], out=str(run_dir), **{"overrides": SHORT, "epochs": 2, **options})
    return start(DIGITS, config, log=lambda *_: None)


def resume(run_dir: Path, **options):
    return start(DIGITS, TrainConfig(devices=["cpu"], resume=str(run_dir), **options), log=lambda *_: None)


def epochs(run_dir: Path) -> list[dict]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in m.items() if k not in ("seconds", "images_per_s")} for m in lines if m["kind"] == "epoch"]


def newest(run_dir: Path) -> dict:
    return checkpoint.load(checkpoint.latest(run_dir), resume=True)


@pytest.mark.slow
def test_a_run_stopped_after_any_step_of_an_epoch_resumes_to_the_same_run(tmp_path):
    whole = train(tmp_path / "whole")
    per_epoch = whole.steps // 2
    assert per_epoch == 3
    for stop in range(1, per_epoch + 1):  # the last one saves step_in_epoch == steps per epoch
        part = tmp_path / f"stopped-at-{stop}"
        result = train(part, max_steps=stop)
        assert result.stopped_at_max_steps and newest(part)["step_in_epoch"] == stop
        done = resume(part)  # the recipe (epochs, batch via --set) comes from the checkpoint
        assert done.epochs_done == 2 and done.steps == whole.steps
        expected, got = newest(tmp_path / "whole")["model"], newest(part)["model"]
        assert all(torch.equal(expected[key], got[key]) for key in expected), stop
        assert epochs(part) == epochs(tmp_path / "whole"), stop  # train loss of the split epoch included


def test_resuming_with_more_epochs_says_the_cosine_schedule_now_spans_them(tmp_path):
    """digits: lr 0.1, cosine without warm-up. Two epochs done of a 2-epoch schedule (rate 0 at
    its end); stretched to 4 epochs, step 6 is half way: 0.1 * (1 + cos(pi / 2)) / 2 = 0.05."""
    run = tmp_path / "run"
    train(run)
    said = []
    start(DIGITS, TrainConfig(devices=["cpu"], resume=str(run), epochs=4), log=said.append)
    notes = [line for line in said if "schedule" in line]
    assert notes == ["note: the run's cosine schedule was made for 2 epochs and now spans 4, so the learning rate "
                     "from step 6 is 0.05 where the 2-epoch schedule gave 0 (it rises again)"], said
    said.clear()
    start(DIGITS, TrainConfig(devices=["cpu"], resume=str(run), epochs=5, max_steps=13), log=said.append)
    assert [line for line in said if "schedule" in line] == [
        "note: the run's cosine schedule was made for 4 epochs and now spans 5, so the learning rate from step 12 is "
        f"{0.05 * (1 + math.cos(math.pi * 4 / 5)):.3g} where the 4-epoch schedule gave 0 (it rises again)"]
    said.clear()
    start(DIGITS, TrainConfig(devices=["cpu"], resume=str(run), max_steps=14), log=said.append)  # its own 5 now
    assert not [line for line in said if "schedule" in line]


def test_stray_temporaries_of_killed_saves_are_removed_at_the_next_start(tmp_path):
    run = tmp_path / "run"
    train(run, max_steps=1)
    strays = [run / ".spec.yaml.k3j4h5.tmp", run / "checkpoints" / ".step-000000002.pt.a8b7c6d5.tmp"]
    for stray in strays:
        stray.write_bytes(b"half a save")
    kept = run / "checkpoints" / "notes.tmp"
    kept.write_text("the user's")
    resume(run, max_steps=2)
    assert not any(stray.exists() for stray in strays) and kept.read_text() == "the user's"


def test_a_metrics_line_cut_short_by_a_stop_is_dropped_at_resume_and_left_out_of_the_plot(tmp_path):
    run = tmp_path / "run"
    train(run, max_steps=1, log_every=1)
    with open(run / "metrics.jsonl", "a", encoding="utf-8") as handle:
        handle.write('{"kind": "step", "step": 2, "lo')  # the stop came while this line was written
    resume(run, max_steps=2, log_every=1)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "step"] == [1, 2]
    (run / "metrics.jsonl").write_text((run / "metrics.jsonl").read_text() + "{half")
    result = run_cli("plot", str(run))
    assert result.returncode == 0 and (run / "curves.png").is_file(), result.stderr
    assert "metrics.jsonl: left out 1 line that is no record (a run stopped while writing it?)" in result.stderr


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_resuming_from_a_file_writes_only_in_the_new_run_folder(tmp_path):
    train(tmp_path / "made", max_steps=2)
    user = tmp_path / "V"
    (user / "sub").mkdir(parents=True)
    (user / "checkpoints").mkdir()
    shutil.copy(checkpoint.latest(tmp_path / "made"), user / "sub" / "ck.pt")
    for name, text in {"spec.yaml": "mine", "config.json": "{}", "metrics.jsonl": '{"step": 99}\n',
                       "checkpoints/step-000000001.pt": "the user's", "checkpoints/step-000000002.pt": "also"}.items():
        (user / name).write_text(text)
    before = snapshot(user)
    out = tmp_path / "W"
    result = run_cli("train", "digits", "--resume", str(user / "sub" / "ck.pt"), "--out", str(out), "--keep", "1")
    assert result.returncode == 0, result.stderr
    assert snapshot(user) == before
    assert run_folder.is_run_folder(out) and len(list((out / "checkpoints").glob("step-*.pt"))) == 1
    # a checkpoint outside any run folder: the continued run gets a new folder, not the current one
    here = tmp_path / "here"
    here.mkdir()
    shutil.copy(user / "sub" / "ck.pt", here / "ck.pt")
    (here / "spec.yaml").write_text("mine")
    result = run_cli("train", "digits", "--resume", "ck.pt", "--max-steps", "3", cwd=here)
    assert result.returncode == 0, result.stderr
    assert (here / "spec.yaml").read_text() == "mine" and "not in a run folder alexspec made" in result.stdout
    (new_run,) = (here / "runs").iterdir()
    assert run_folder.is_run_folder(new_run)


def test_pruning_deletes_only_the_checkpoints_the_run_folder_s_runs_wrote(tmp_path):
    run = tmp_path / "run"
    train(run, max_steps=1, checkpoint_every=1)
    users = run / "checkpoints" / "step-000000000.pt"
    users.write_text("the user's own")
    resume(run, checkpoint_every=1, keep=1)
    assert users.read_text() == "the user's own"
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*.pt")) == ["step-000000000.pt",
                                                                              "step-000000006.pt"]


@pytest.mark.slow
def test_a_new_run_never_takes_over_a_folder_that_holds_other_files(tmp_path):
    own = tmp_path / "own"
    own.mkdir()
    (own / "thesis.tex").write_text("years of work")
    result = run_cli("train", "digits", "--max-steps", "1", "--out", str(own))
    assert result.returncode == 2 and "is not a run folder alexspec made" in result.stderr
    assert snapshot(own) == {Path("thesis.tex"): b"years of work"}
    train(tmp_path / "run", max_steps=1)
    result = run_cli("train", "digits", "--max-steps", "1", "--out", str(tmp_path / "run"))
    assert result.returncode == 2 and "continue it with --resume" in result.stderr


def tensor_data_offset(path: Path) -> int:
    """Where the first tensor's bytes start in a torch.save archive."""
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if "/data/" in i.filename and i.file_size >= 64)
    with open(path, "rb") as handle:
        handle.seek(info.header_offset + 26)
        name_length, extra_length = (int.from_bytes(handle.read(2), "little") for _ in range(2))
    return info.header_offset + 30 + name_length + extra_length


@pytest.mark.slow
def test_a_flipped_byte_in_the_weights_is_refused(tmp_path):
    train(tmp_path / "run", max_steps=1)
    good = checkpoint.latest(tmp_path / "run")
    flipped = tmp_path / "flipped.pt"
    data = bytearray(good.read_bytes())
    data[tensor_data_offset(good) + 17] ^= 0x10
    flipped.write_bytes(bytes(data))
    assert isinstance(torch.load(flipped, weights_only=True), dict)  # torch itself loads it silently
    for command in (["eval", "digits", "--checkpoint", str(flipped)],
                    ["train", "digits", "--resume", str(flipped), "--out", str(tmp_path / "never")]):
        result = run_cli(*command)
        assert result.returncode == 2 and "do not match the digest" in result.stderr, result.stderr
    assert not (tmp_path / "never").exists()


def hand_made(tmp_path: Path, name: str, **changes) -> Path:
    state = {"model": {}, "network_hash": checkpoint.network_hash(analyse(DIGITS)), "optimizer":
             {"state": {}, "param_groups": []}, "schedule": {"scale": 1.0, "drops": 0, "best": 1.0, "stale": 0},
             "epoch": 0, "step_in_epoch": 0, "step": 3, "best_top1_error": 1.0, "metrics": {}, "seed": 0,
             "batch": 64, **changes}
    state = {k: v for k, v in state.items() if v is not None}
    path = tmp_path / f"{name}.pt"
    torch.save(state, path)
    return path


@pytest.mark.parametrize("name, changes, said", [
    ("no-optimizer", {"optimizer": None}, "`optimizer` is not an optimizer's state"),
    ("list-model", {"model": [1, 2]}, "`model` is not a mapping of parameter names to tensors"),
    ("string-step", {"step": "3"}, "`step` is '3', not a whole number"),
    ("no-digest", {}, "holds no content digest"),
    ("text-classes", {"classes": "cat,dog"}, "`classes` is 'cat,dog', not a list of class names"),
    ("fp16-recipe", {"recipe": {"precision": "fp16"}}, "`recipe` is not a run's recipe"),
    ("text-devices", {"recipe": {"devices": "cpu"}}, "`recipe` is not a run's recipe"),
    ("no-devices", {"recipe": {"devices": []}}, "`recipe` is not a run's recipe"),
    ("word-channels-last", {"recipe": {"channels_last": "yes"}}, "`recipe` is not a run's recipe"),
])
def test_hand_made_checkpoints_are_refused_saying_what_is_wrong(tmp_path, name, changes, said):
    path = hand_made(tmp_path, name, **changes)
    result = run_cli("train", "digits", "--resume", str(path), "--out", str(tmp_path / "never"))
    assert result.returncode == 2 and said in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "never").exists()  # nothing written before the checkpoint is checked


@pytest.mark.parametrize("content, said", [(b"", "not a checkpoint (an empty file)"),
                                           (os.urandom(4096), "not a checkpoint (not a file that torch.save writes)")])
def test_files_that_are_no_checkpoint_say_so(tmp_path, content, said):
    path = tmp_path / "x.pt"
    path.write_bytes(content)
    result = run_cli("eval", "digits", "--checkpoint", str(path))
    assert result.returncode == 2 and said in result.stderr and "could run code" not in result.stderr


@pytest.mark.slow
def test_the_printed_continue_command_continues_the_same_recipe(tmp_path):
    run = tmp_path / "run"
    first = run_cli("train", "digits", "--epochs", "3", "--set", "training.lr=0.05", "--set", "training.batch=512",
                    "--set", "placement=[cuda:0]", "--devices", "cpu", "--precision", "bf16", "--channels-last",
                    "--out", str(run), "--max-steps", "2")
    assert first.returncode == 0, first.stderr
    said = next(line for line in first.stdout.splitlines() if "continue with: " in line)
    command = said.split("continue with: alexspec ", 1)[1].split()
    assert command == ["train", str(run), "--resume"]
    second = run_cli(*command)  # before, it left --devices cpu behind: "cuda:0 needs CUDA" on a CPU machine
    assert second.returncode == 0, second.stderr
    state = newest(run)
    assert (state["epoch"], state["step"], state["batch"]) == (3, 9, 512)
    assert "lr: 0.05" in (run / "spec.yaml").read_text()
    assert [m["epoch"] for m in epochs(run)] == [1, 2, 3]
    ran = json.loads((run / "config.json").read_text())  # what the continued run ran with: bf16 and NHWC still
    assert (ran["devices"], ran["precision"], ran["channels_last"]) == (["cpu"], "bf16", True)
    evaluated = run_cli("eval", str(run))
    assert evaluated.returncode == 0, evaluated.stderr
    best = min(m["top1_error"] for m in epochs(run))  # best.pt's, evaluated as the run did: bf16 on the CPU
    assert json.loads(evaluated.stdout.splitlines()[-1])["top1_error"] == pytest.approx(best)


@pytest.mark.slow
def test_a_run_refused_for_its_data_leaves_no_run_folder(tmp_path):
    result = run_cli("train", "digits", "--data", str(tmp_path / "no-such-data"), "--out", str(tmp_path / "run"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_eval_takes_a_run_folder_and_says_when_ten_crops_are_only_mirror_images(tmp_path):
    train(tmp_path / "run", max_steps=1)
    result = run_cli("eval", "digits", "--checkpoint", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1])["checkpoint"] == str(checkpoint.latest(tmp_path / "run"))
    result = run_cli("eval", "digits", "--checkpoint", str(tmp_path / "run"), "--crops", "10")
    assert result.returncode == 0 and "nothing to crop: the 10 views are the image and its mirror" in result.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli("eval", "digits", "--checkpoint", str(empty))
    assert result.returncode == 2 and "a folder with no checkpoint" in result.stderr


def test_a_runs_checkpoint_given_as_spec_stands_for_its_run_with_those_weights(tmp_path, capsys):
    """RUN/checkpoints/step-3.pt as SPEC: the run's spec, and that checkpoint's weights (not best.pt)."""
    from alexspec import cli
    from alexspec.spec.bundled import resolve

    run = tmp_path / "run"
    train(run)  # 2 epochs of 3 steps: step-3 and step-6
    early = checkpoint.folder(run) / "step-000000003.pt"
    assert resolve(early) == str(run / "spec.yaml") and resolve(run / "spec.yaml") == str(run / "spec.yaml")
    capsys.readouterr()
    assert cli.main(["eval", str(early)]) == 0
    said = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert cli.main(["eval", str(run), "--checkpoint", str(early)]) == 0
    assert said == json.loads(capsys.readouterr().out.splitlines()[-1]) and said["checkpoint"] == str(early)
    exported = {}
    for name, args in {"spec": [str(early)], "option": [str(run), "--checkpoint", str(early)],
                       "best": [str(run)]}.items():
        assert cli.main(["export", *args, "-o", str(tmp_path / f"{name}.onnx")]) == 0
        exported[name] = (tmp_path / f"{name}.onnx").read_bytes()
    assert exported["spec"] == exported["option"] != exported["best"]
    assert cli.main(["train", str(early), "--resume"]) == 2  # older than the run's newest: only in a new folder
    assert f"{early} is at step 3, but {run} holds later checkpoints" in capsys.readouterr().err
    assert cli.main(["train", str(early), "--resume", "-o", str(tmp_path / "branch"), "--max-steps", "4"]) == 0
    assert f"resumed from {early} at epoch 2, step 3" in capsys.readouterr().out
    assert newest(tmp_path / "branch")["step"] == 4


def test_eval_in_a_process_of_a_torchrun_launch_takes_its_share_of_the_images(tmp_path, monkeypatch):
    """Rank 1 of 2 evaluates images 1, 3, 5, ... of the digits' 360 and adds its sums to the others'
    (a stand-in for the process group; tests/test_train.py runs two real processes)."""
    from alexspec import settings
    from alexspec.spec import load_file
    from alexspec.train import distributed
    from alexspec.train.evaluate import evaluate_checkpoint

    train(tmp_path / "run", max_steps=1)
    summed = []

    class Rank1Of2:
        def __init__(self, device):
            self.rank, self.world, self.main = 1, 2, False

        def sum(self, values):
            summed.append(values.tolist())
            return values

        def close(self):
            pass

    monkeypatch.setattr(distributed, "Distributed", Rank1Of2)
    said = []
    with settings.override(world_size=2, rank=1, local_rank=1):
        found = evaluate_checkpoint(load_file(tmp_path / "run" / "spec.yaml"), tmp_path / "run", "digits", crops=10,
                                    log=said.append)
    assert [images for images, *_ in summed] == [180] and found["images"] == 360 and said == []


@pytest.mark.slow
def test_a_checkpoint_of_another_network_is_refused_before_anything_is_written(tmp_path):
    config = TrainConfig(devices=["cpu"], out=str(tmp_path / "lenet"), data="synthetic", max_steps=1)
    start(ROOT / "specs" / "lenet5.yaml", config, log=lambda *_: None)
    other = checkpoint.latest(tmp_path / "lenet")
    result = run_cli("train", "digits", "--resume", str(other), "-o", str(tmp_path / "never"))
    assert result.returncode == 2 and f"{other}: saved from another network" in result.stderr
    assert "use the spec it was trained from" in result.stderr and not (tmp_path / "never").exists()


def test_resume_and_eval_on_data_of_other_classes_are_refused(tmp_path):
    from PIL import Image

    train(tmp_path / "run", epochs=1)
    assert newest(tmp_path / "run")["classes"] == [str(digit) for digit in range(10)]  # the digits' labels
    letters = tmp_path / "letters"  # 10 classes as the digits, named otherwise
    for part in ("train", "val"):
        for name in "abcdefghij":
            (letters / part / name).mkdir(parents=True)
            Image.new("L", (8, 8), ord(name)).save(letters / part / name / "0.png")
    before = sorted((tmp_path / "run").rglob("*")), (tmp_path / "run" / "metrics.jsonl").read_bytes()
    said = "trained on other classes than the data's: its output 0 is class '0', where label 0 of letters is 'a'"
    result = run_cli("train", "digits", "--resume", str(tmp_path / "run"), "--data", str(letters))
    assert result.returncode == 2 and said in result.stderr and "resume on the run's data (digits)" in result.stderr
    assert (sorted((tmp_path / "run").rglob("*")), (tmp_path / "run" / "metrics.jsonl").read_bytes()) == before
    result = run_cli("eval", "digits", "--checkpoint", str(tmp_path / "run"), "--data", str(letters))
    assert result.returncode == 2 and said in result.stderr, result.stderr
    assert run_cli("eval", "digits", "--checkpoint", str(tmp_path / "run")).returncode == 0


def test_a_resumed_run_keeps_its_devices_precision_and_memory_format_unless_given_again():
    from alexspec.train.loop import TrainConfig
    from alexspec.train.session import _with_recipe

    recipe = {"devices": ["cpu"], "precision": "bf16", "channels_last": True}
    kept = _with_recipe(TrainConfig(), recipe)
    assert (kept.devices, kept.precision, kept.channels_last) == (["cpu"], "bf16", True)
    given = _with_recipe(TrainConfig(devices=["cuda:0"], precision="fp32", channels_last=False), recipe)
    assert (given.devices, given.precision, given.channels_last) == (["cuda:0"], "fp32", False)
    older = _with_recipe(TrainConfig(), {})  # a checkpoint from before they were recorded
    assert (older.devices, older.precision, older.channels_last) == (None, None, None)


@pytest.mark.slow
def test_a_folder_another_run_is_writing_is_refused_until_that_run_ends(tmp_path):
    import socket

    run, fresh = tmp_path / "run", tmp_path / "fresh"
    assert run_cli("train", "digits", "-o", str(run), "--max-steps", "1").returncode == 0
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    locks = [run_folder.claim(run, continuing=True), run_folder.claim(fresh, continuing=False)]  # as runs in
    try:                                                           # other processes hold them while they train
        for command, folder in [(["train", "digits", "--resume", str(run), "--max-steps", "2"], run),
                                (["train", "digits", "-o", str(fresh), "--max-steps", "1"], fresh)]:
            result = run_cli(*command)
            assert result.returncode == 2, result.stderr
            assert f"{folder}: another run is writing this folder now (process {os.getpid()} on " \
                   f"{socket.gethostname()}); wait for it to end" in result.stderr, result.stderr
        assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before
        assert not (fresh / "checkpoints").exists() and not (fresh / "metrics.jsonl").exists()
    finally:
        for lock in locks:
            lock.close()
    result = run_cli("train", "digits", "--resume", str(run), "--max-steps", "2")
    assert result.returncode == 0 and checkpoint.latest(run).name == "step-000000002.pt", result.stderr


def test_runs_started_in_the_same_second_get_folders_of_their_own(tmp_path, monkeypatch):
    import datetime

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(run_folder, "_now", lambda: datetime.datetime(2026, 12, 7, 9, 30, 5))
    folders = [run_folder.default("digits") for _ in range(3)]
    assert [str(f) for f in folders] == ["runs/digits-20261207-093005", "runs/digits-20261207-093005-2",
                                         "runs/digits-20261207-093005-3"]
    assert all(f.is_dir() for f in folders)  # made as they are named: no second run can take one


def test_continuing_an_earlier_checkpoint_in_place_is_refused_so_the_later_ones_stay(tmp_path):
    run = tmp_path / "run"
    train(run, max_steps=2, checkpoint_every=1)
    earlier = run / "checkpoints" / "step-000000001.pt"
    before = snapshot(run)
    with pytest.raises(checkpoint.CheckpointError, match=r"is at step 1, but .*run holds later checkpoints "
                       r"\(step-000000002.pt\), which a run continued from it there would replace, with the metrics "
                       r"after step 1; continue it in a new folder \(-o NEW_DIR\)"):
        resume(earlier)
    assert snapshot(run) == before  # before: step-2 and its metrics were replaced without a word
    resume(earlier, out=str(tmp_path / "branch"), max_steps=3)  # a new folder takes the branch
    assert checkpoint.latest(tmp_path / "branch").name == "step-000000003.pt" and snapshot(run) == before


def test_a_run_is_continued_into_a_folder_of_its_own_never_into_another_runs(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    train(first, max_steps=1)
    train(second, max_steps=2)
    before = snapshot(first)
    with pytest.raises(BadInput, match=f"{first}: already holds a run's checkpoints"):
        resume(second, out=str(first))  # first's step 1 is older, so nothing said it would be replaced
    assert snapshot(first) == before  # before: its checkpoint was pruned, its metrics mixed with second's


def test_a_run_folder_as_spec_with_resume_and_o_continues_that_run_in_the_new_folder(tmp_path):
    run, branch = tmp_path / "run", tmp_path / "branch"
    train(run, max_steps=1)
    before = snapshot(run)
    result = run_cli("train", str(run), "--resume", "-o", str(branch), "--max-steps", "2")
    assert result.returncode == 0, result.stderr  # before: "branch: no such checkpoint" (--resume took -o's)
    assert f"resumed from {run / 'checkpoints' / 'step-000000001.pt'}" in result.stdout, result.stdout
    assert checkpoint.latest(branch).name == "step-000000002.pt" and snapshot(run) == before


def test_eval_without_a_terminal_says_where_it_is_once_a_minute(tmp_path, monkeypatch, capsys):
    from alexspec.builder import build
    from alexspec.spec import load_file
    from alexspec.train import progress
    from alexspec.train.evaluate import evaluate_checkpoint

    built = build(ROOT / "specs" / "digits.yaml", backend="torch", devices=["cpu"])
    checkpoint.save_weights(tmp_path / "w.pt", built.module.state_dict(), checkpoint.network_hash(built.info))
    monkeypatch.setattr(progress, "LINE_EVERY_S", 0.0)  # every batch instead of once a minute
    found = evaluate_checkpoint(load_file(ROOT / "specs" / "digits.yaml"), tmp_path / "w.pt", "digits", crops=1,
                                backend="torch", devices=["cpu"])
    assert found["images"] == 360  # in batches of 256: one line, after the first
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("evaluating (1 crop): 256/360 images (71%), "), lines
