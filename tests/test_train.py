"""The trainer as a user runs it: real digits, resume, signals, crash-safe checkpoints, bad checkpoints, DDP."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from alexspec.train import checkpoint  # noqa: E402
from conftest import ROOT, TINY_TOWERS, run_cli  # noqa: E402


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def final_weights(run_dir: Path) -> dict:
    return checkpoint.load(checkpoint.latest(run_dir))["model"]


def test_default_training_learns_real_digits(tmp_path):
    result = run_cli("train", "--out", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    epochs = [m for m in metrics(tmp_path / "run") if m["kind"] == "epoch"]
    assert len(epochs) == 20
    assert epochs[-1]["top1_error"] <= 0.015  # >= 98.5 % accuracy on 360 held-out digits
    assert result.stdout.startswith("alexspec train digits: loading torch")  # a word before torch's import
    assert "run folder" in result.stdout and str(tmp_path / "run") in result.stdout
    assert (tmp_path / "run" / "spec.yaml").exists() and json.loads((tmp_path / "run" / "config.json").read_text())
    result = run_cli("eval", "digits", "--checkpoint", str(tmp_path / "run" / "checkpoints" / "best.pt"))
    assert result.returncode == 0 and "top-1 error" in result.stdout
    assert json.loads(result.stdout.splitlines()[-1])["top1_error"] <= 0.015
    result = run_cli("plot", str(tmp_path / "run"))
    assert result.returncode == 0 and (tmp_path / "run" / "curves.png").stat().st_size > 10_000
    checkpoints = sorted((tmp_path / "run" / "checkpoints").iterdir())
    again = run_cli("train", "--resume", str(tmp_path / "run"))
    assert again.returncode == 0 and "has trained 20 epochs already: nothing to do" in again.stdout
    assert sorted((tmp_path / "run" / "checkpoints").iterdir()) == checkpoints


def test_plot_of_a_run_that_has_logged_nothing_yet_says_so(tmp_path):
    result = run_cli("train", "--out", str(tmp_path / "run"), "--max-steps", "2", "--set", "layers.fc4.out=12",
                     "--set", "classes=12")
    assert result.returncode == 0, result.stderr
    assert "note: the data has 10 classes but digits outputs 12, so 2 of its outputs are never a label" in result.stdout
    result = run_cli("plot", str(tmp_path / "run"))
    assert result.returncode == 2 and "the run has logged nothing yet" in result.stderr, result.stderr


def test_a_run_of_fewer_steps_than_log_every_plots_each_epochs_mean_training_loss(tmp_path, monkeypatch):
    import alexspec.train.plot as plot

    drawn = []
    monkeypatch.setattr(plot, "save", lambda fig, out: drawn.append(fig) or out)
    epochs = [{"kind": "epoch", "epoch": e, "step": 3 * e, "train_loss": 1.0 / e, "val_loss": 0.9 / e,
               "top1_error": 0.5, "lr": 0.1} for e in (1, 2)]  # 3 steps an epoch, none logged (--log-every 20)
    logged = [{"kind": "step", "step": 2, "loss": 3.0, "lr": 0.1}] + epochs
    for name, records in (("short", epochs), ("logged", logged)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    plot.plot_run(tmp_path / "short")
    plot.plot_runs([tmp_path / "short", tmp_path / "logged"], tmp_path / "both.png")
    single, overlaid = ([(line.get_label(), list(line.get_xdata()), list(line.get_ydata()))
                         for line in fig.axes[0].get_lines()] for fig in drawn)
    assert single[0] == ("train (epoch mean)", [3, 6], [1.0, 0.5])  # before: an empty training loss
    assert overlaid == [("short (epoch mean)", [3, 6], [1.0, 0.5]), ("logged", [2], [3.0])]


def test_a_batch_larger_than_the_data_is_said(tmp_path):
    result = run_cli("train", "--out", str(tmp_path / "run"), "--batch", "4096", "--epochs", "1")
    assert result.returncode == 0, result.stderr
    train_images = 1797 - 360  # scikit-learn's digits less the 360 held out
    assert f"note: the batch, 4,096, is larger than the {train_images:,} training images: each epoch is one step " \
           f"of all {train_images:,}" in result.stdout
    assert [m["step"] for m in metrics(tmp_path / "run") if m["kind"] == "epoch"] == [1]


def test_plot_writes_the_picture_format_its_name_says_and_refuses_other_names(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(json.dumps(record) + "\n" for record in [
        {"kind": "step", "step": 1, "loss": 2.3, "lr": 0.01},
        {"kind": "epoch", "epoch": 1, "step": 2, "val_loss": 2.2, "top1_error": 0.8, "top5_error": 0.4, "lr": 0.01}]))
    (tmp_path / "notes.py").write_text("keep me\n")
    (tmp_path / "figures").mkdir()
    for given, written, starts in [("c.svg", "c.svg", b"<?xml"), ("c.PDF", "c.PDF", b"%PDF"),
                                   ("curves", "curves.png", b"\x89PNG"), ("figures", "figures/compare.png", b"\x89PNG"),
                                   ("new/", "new/compare.png", b"\x89PNG")]:
        result = run_cli("plot", str(run), "-o", given, cwd=tmp_path)
        assert result.returncode == 0 and result.stdout == f"wrote {written}\n", result.stderr
        assert (tmp_path / written).read_bytes().startswith(starts)
    # before: .py was matplotlib's ValueError as an internal error, and a name with no suffix was
    # written as NAME.png while the command said "wrote NAME"
    result = run_cli("plot", str(run), "-o", "notes.py", cwd=tmp_path)
    assert result.returncode == 2 and "notes.py: alexspec draws png, svg or pdf, not .py; name the file notes.png" \
        in result.stderr and (tmp_path / "notes.py").read_text() == "keep me\n", result.stderr
    result = run_cli("bench", "--history", str(tmp_path), "--plot", "notes.py", cwd=tmp_path)
    assert result.returncode == 2 and "not .py" in result.stderr and not result.stdout, result.stderr
    assert not [path for path in tmp_path.rglob(".*.tmp")]


SMALL = ["digits", "--epochs", "2", "--set", "training.batch=128"]


@pytest.mark.slow
def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path):
    assert run_cli("train", *SMALL, "--out", str(tmp_path / "whole")).returncode == 0
    first = run_cli("train", *SMALL, "--out", str(tmp_path / "parts"), "--max-steps", "7")
    assert first.returncode == 0, first.stderr
    assert checkpoint.load(checkpoint.latest(tmp_path / "parts"))["step"] == 7
    second = run_cli("train", *SMALL, "--out", str(tmp_path / "parts"), "--resume")
    assert second.returncode == 0, second.stderr
    assert "resumed from" in second.stdout
    whole, parts = final_weights(tmp_path / "whole"), final_weights(tmp_path / "parts")
    for key in whole:
        assert torch.equal(whole[key], parts[key]), key
    steps = [m["step"] for m in metrics(tmp_path / "parts")]
    assert steps == sorted(steps) and len(steps) == len(set(steps))  # no duplicated lines after resuming


def start_training(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "alexspec", "train", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(path_glob, run_dir: Path, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if list(run_dir.glob(path_glob)):
            return
        time.sleep(0.05)
    raise AssertionError(f"nothing matched {path_glob} in {run_dir}")


@pytest.mark.slow
def test_sigterm_saves_at_the_next_step_and_exits_0(tmp_path):
    run_dir = tmp_path / "run"
    proc = start_training(["digits", "--epochs", "50", "--set", "training.batch=16", "--out", str(run_dir),
                           "--checkpoint-every", "10"])
    wait_for("checkpoints/step-*.pt", run_dir)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    line = next(line for line in out.splitlines() if line.startswith("stopped by signal"))
    stopped_at = int(line.split(", step ")[1].split(";")[0])
    state = checkpoint.load(checkpoint.latest(run_dir))
    assert state["step"] == stopped_at  # saved after the last finished step: nothing lost
    assert stopped_at >= 10
    resumed = run_cli("train", "digits", "--epochs", "1", "--set", "training.batch=16", "--resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr


SAVER = """
import os, random, sys, torch
from pathlib import Path
from alexspec.train import checkpoint
run = Path(sys.argv[1])
state = {"model": {"w": torch.randn(512, 1024)}, "network_hash": "x"}
step = int(sys.argv[2])
while True:
    step += 1
    state["step"] = step
    state["model"]["w"].fill_(step)
    checkpoint.save(run, state, step, keep=2)
    print(step, flush=True)
"""


@pytest.mark.slow
def test_sigkill_while_saving_never_leaves_a_broken_latest_checkpoint(tmp_path):
    script = tmp_path / "saver.py"
    script.write_text(SAVER)
    step = 0
    for attempt in range(12):
        proc = subprocess.Popen([sys.executable, str(script), str(tmp_path), str(step)], cwd=ROOT,
                                stdout=subprocess.PIPE, text=True)
        proc.stdout.readline()  # at least one save completed
        time.sleep(0.02 + 0.05 * (attempt % 4))
        proc.kill()
        proc.wait()
        latest = checkpoint.latest(tmp_path)
        state = checkpoint.load(latest)  # complete: loads, and holds what its name says
        assert torch.all(state["model"]["w"] == state["step"])
        numbered = sorted(checkpoint.folder(tmp_path).glob("step-*.pt"))
        for path in numbered:  # every kept checkpoint is intact, not only the newest
            checkpoint.load(path)
        step = state["step"]


@pytest.mark.slow
def test_bad_checkpoints_are_refused_without_harm(tmp_path):
    run = run_cli("train", "digits", "--epochs", "1", "--out", str(tmp_path / "run"))
    assert run.returncode == 0
    good = checkpoint.latest(tmp_path / "run")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:1000])
    marker = tmp_path / "executed"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    import pickle
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"model": Evil(), "network_hash": "x"}))
    torch.save({"model": {}, "network_hash": "0000", "step": 1}, tmp_path / "other.pt")
    before = {p: p.read_bytes() for p in (tmp_path / "run" / "checkpoints").iterdir()}
    cases = ((truncated, "truncated or corrupt"), (evil, "could run code"),
             (tmp_path / "other.pt", "saved from another network"), (tmp_path / "none.pt", "no such"))
    for bad, fragment in cases:
        result = run_cli("eval", "digits", "--checkpoint", str(bad))
        assert result.returncode == 2 and fragment in result.stderr and "Traceback" not in result.stderr, bad
    for bad, fragment in cases[:2]:
        result = run_cli("train", "digits", "--resume", str(bad), "--epochs", "1")
        assert result.returncode == 2 and fragment in result.stderr, bad
    assert not marker.exists()
    assert {p: p.read_bytes() for p in (tmp_path / "run" / "checkpoints").iterdir()} == before


@pytest.mark.slow
def test_a_diverging_loss_stops_with_exit_3_and_keeps_the_last_good_checkpoint(tmp_path):
    result = run_cli("train", "digits", "--epochs", "3", "--set", "init.std=10", "--set", "training.lr=100",
                     "--checkpoint-every", "1", "--out", str(tmp_path / "run"))
    assert result.returncode == 3, result.stderr
    assert "last good checkpoint" in result.stderr and "ower the learning rate" in result.stderr
    state = checkpoint.load(checkpoint.latest(tmp_path / "run"))
    assert all(torch.isfinite(t).all() for t in state["model"].values())


@pytest.mark.slow
def test_the_trainer_is_generic_lenet5_and_d2l(tmp_path):
    result = run_cli("train", "lenet5", "--data", "synthetic", "--epochs", "3", "--batch", "16",
                     "--out", str(tmp_path / "lenet"))
    assert result.returncode == 0, result.stderr
    epochs = [m for m in metrics(tmp_path / "lenet") if m["kind"] == "epoch"]
    assert epochs[-1]["top1_error"] < 0.5  # synthetic classes are learnable: better than chance (90 %)
    result = run_cli("train", "d2l-alexnet", "--data", "synthetic", "--batch", "2", "--max-steps", "2",
                     "--out", str(tmp_path / "d2l"))
    assert result.returncode == 0, result.stderr
    assert checkpoint.load(checkpoint.latest(tmp_path / "d2l"))["step"] == 2


@pytest.mark.slow
def test_overrides_are_validated_like_the_spec(tmp_path):
    result = run_cli("train", "digits", "--set", "training.lr=-1", "--out", str(tmp_path / "r"))
    assert result.returncode == 2 and "training.lr: must be greater than 0, got -1" in result.stderr
    result = run_cli("train", "digits", "--set", "training.optimiser=adam")
    assert result.returncode == 2 and "did you mean 'optimizer'" in result.stderr
    result = run_cli("train", "digits", "--data", "/no/such/folder")
    assert result.returncode == 2 and "no such folder" in result.stderr


def torchrun(args: list[str], port: int) -> subprocess.CompletedProcess:
    """`torchrun ARGS` (two CPU processes need gloo's port), run from the repository."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--master-port", str(port), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)


def train_one_and_two_processes(tmp_path, args: list[str], port: int) -> tuple[dict, dict, str]:
    """Final weights of `alexspec train ARGS` in one process and in two DDP (gloo) processes, and
    what the two processes printed."""
    single = run_cli("train", *args, "--out", str(tmp_path / "one"))
    assert single.returncode == 0, single.stderr
    ddp = torchrun(["--nproc-per-node", "2", "-m", "alexspec", "train", *args, "--out", str(tmp_path / "two")], port)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    return final_weights(tmp_path / "one"), final_weights(tmp_path / "two"), ddp.stdout


@pytest.mark.slow
def test_ddp_two_processes_match_one_process(tmp_path):
    # 512 synthetic images in batches of 128: 4 steps an epoch, validated (128 images) at step 4
    one, two, said = train_one_and_two_processes(tmp_path, ["lenet5", "--data", "synthetic", "--epochs", "3",
                                                            "--batch", "128", "--max-steps", "6", "--log-every",
                                                            "2", "--set", "training.lr=0.02"], 29517)
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-5, msg=key)
    logged = [{m["step"]: m["loss"] for m in metrics(tmp_path / run) if m["kind"] == "step"} for run in ("one", "two")]
    assert list(logged[0]) == [2, 4, 6] and logged[1] == pytest.approx(logged[0], rel=1e-4)  # the whole batch's
    validated = [[m for m in metrics(tmp_path / run) if m["kind"] == "epoch"] for run in ("one", "two")]
    assert [m["step"] for m in validated[1]] == [4]  # each process validated half; the sums are the whole's
    for key in ("val_loss", "top1_error", "top5_error", "train_loss"):
        assert validated[1][0][key] == pytest.approx(validated[0][0][key], rel=1e-4, abs=1e-6), key
    assert json.loads((tmp_path / "two" / "config.json").read_text())["world_size"] == 2
    lines = said.splitlines()  # rank 0 speaks for the run: each line once, the launch in the continue line
    assert len(lines) == len(set(lines)) == 5 and "in each of 2 processes (DDP" in lines[1], said
    continue_with = lines[-1].split("continue with: ")[1]
    assert continue_with == f"torchrun --nproc-per-node 2 -m alexspec train {tmp_path / 'two'} --resume"
    again = torchrun([*continue_with.split()[1:], "--max-steps", "8"], 29518)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (tmp_path / "two" / "checkpoints" / "step-000000008.pt").is_file()
    alone = run_cli("train", str(tmp_path / "two"), "--resume", "--max-steps", "10")  # one process goes on
    assert alone.returncode == 0 and (tmp_path / "two" / "checkpoints" / "step-000000010.pt").is_file(), alone.stderr


@pytest.mark.slow
def test_ddp_validation_with_batchnorm_is_the_checkpoints_and_eval_under_torchrun_shares_the_images(tmp_path):
    """Each process's last step updates its own batch-norm statistics; the epoch's validation, each
    process taking half the images, is made with rank 0's, the ones the checkpoint holds. `eval`
    under torchrun gives the same as in one process, each process taking half the images."""
    spec = tmp_path / "bn.yaml"
    spec.write_text("alexspec: 1\nname: tiny_bn\ninput: {channels: 1, height: 8, width: 8}\nlayers:\n"
                    "  - {name: conv, type: conv, out: 8, kernel: 3, padding: 1, bias: false}\n"
                    "  - {name: bn, type: batchnorm}\n  - {name: relu, type: relu}\n"
                    "  - {name: flatten, type: flatten}\n  - {name: fc, type: linear, out: 10}\n"
                    "training: {lr: 0.05, batch: 128, epochs: 1}\n")
    ddp = torchrun(["--nproc-per-node", "2", "-m", "alexspec", "train", str(spec), "--data", "synthetic",
                    "--out", str(tmp_path / "run")], 29531)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    [logged] = [m for m in metrics(tmp_path / "run") if m["kind"] == "epoch"]
    evaluated = run_cli("eval", str(tmp_path / "run"))
    assert evaluated.returncode == 0, evaluated.stderr
    found = json.loads(evaluated.stdout.splitlines()[-1])
    assert found["checkpoint"].endswith("best.pt")
    for key in ("val_loss", "top1_error", "top5_error"):
        assert found[key] == pytest.approx(logged[key], rel=1e-6, abs=1e-7), key  # rank 1's own: 1e-5 off
    shared = torchrun(["--nproc-per-node", "2", "-m", "alexspec", "eval", str(tmp_path / "run")], 29535)
    assert shared.returncode == 0, shared.stderr[-3000:]
    assert len(shared.stdout.splitlines()) == 2, shared.stdout  # said once, by rank 0
    halves = json.loads(shared.stdout.splitlines()[-1])  # each process evaluated half the images
    for key in ("val_loss", "top1_error", "top5_error"):
        assert halves[key] == pytest.approx(found[key], rel=1e-6, abs=1e-7), key


@pytest.mark.slow
def test_ddp_leaves_out_a_last_batch_too_small_to_share(tmp_path):
    # 512 synthetic images in batches of 511: the second batch, 1 image, cannot give 2 processes one each
    ddp = torchrun(["--nproc-per-node", "2", "-m", "alexspec", "train", "lenet5", "--data", "synthetic", "--epochs",
                    "1", "--batch", "511", "--out", str(tmp_path / "run")], 29533)
    assert ddp.returncode == 0, ddp.stdout + ddp.stderr[-3000:]  # before: "the loss became nan at epoch 1, step 2"
    assert "note: each epoch's last batch, 1 image, is left out: it cannot give each of the 2 processes an image" \
        in ddp.stdout
    [epoch] = [m for m in metrics(tmp_path / "run") if m["kind"] == "epoch"]
    assert epoch["step"] == 1 and math.isfinite(epoch["train_loss"])


@pytest.mark.parametrize("kernel, refused", [(4, True), (3, False)])  # a 1x1 map: one value an image; 2x2: four
def test_a_batchnorm_of_a_1x1_map_cannot_train_on_one_image_and_one_of_a_larger_map_can(kernel, refused):
    from alexspec.spec import analyse, load_text

    info = analyse(load_text("alexspec: 1\nname: tiny\ninput: {channels: 3, height: 4, width: 4}\nlayers:\n"
                             f"  - {{name: conv, type: conv, out: 5, kernel: {kernel}}}\n"
                             "  - {name: bn, type: batchnorm}\n  - {name: flat, type: flatten}\n"
                             "  - {name: fc, type: linear, out: 2}\n", "tiny.yaml"))
    assert info.batch_of_one_problem == ("bn (batchnorm) normalises each feature over a batch's images, which takes 2 "
                                         "or more" if refused else None)
    norm = torch.nn.BatchNorm2d(5).train()  # torch's own rule, the oracle
    shape = info.layers[1].output_shape
    if refused:
        with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
            norm(torch.zeros(1, *shape))
    else:
        norm(torch.zeros(1, *shape))


def test_a_batchnorm_of_features_gets_no_batch_of_one_image(tmp_path):
    spec = tmp_path / "bnf.yaml"  # digits with a batchnorm of fc3's 128 features: one value an image each
    spec.write_text((ROOT / "specs" / "digits.yaml").read_text().replace(
        "  - {name: fc4,", "  - {name: bnf, type: batchnorm}\n  - {name: fc4,"))
    refused = run_cli("train", str(spec), "--batch", "1", "--out", str(tmp_path / "one"))
    assert refused.returncode == 2 and refused.stderr.splitlines()[-1] == (
        "alexspec train: the batch, 1, is too small: bnf (batchnorm) normalises each feature over a batch's images, "
        "which takes 2 or more; give --batch 2 or more"), refused.stderr
    assert not (tmp_path / "one").exists()
    # 512 synthetic images in batches of 7: the last, 1 image, is left out (before: an internal error at its step)
    result = run_cli("train", str(spec), "--data", "synthetic", "--batch", "7", "--epochs", "1",
                     "--out", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    assert "note: each epoch's last batch, 1 image, is left out: bnf (batchnorm) normalises each feature over a " \
        "batch's images, which takes 2 or more" in result.stdout
    [epoch] = [m for m in metrics(tmp_path / "run") if m["kind"] == "epoch"]
    assert epoch["step"] == 512 // 7 and math.isfinite(epoch["train_loss"])


@pytest.mark.slow
def test_bf16_autocast_and_channels_last_train(tmp_path):
    result = run_cli("train", "digits", "--epochs", "5", "--precision", "bf16", "--channels-last",
                     "--out", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    epochs = [m for m in metrics(tmp_path / "run") if m["kind"] == "epoch"]
    assert epochs[-1]["train_loss"] < 0.5 * epochs[0]["train_loss"] and epochs[-1]["top1_error"] < 0.5
    assert json.loads((tmp_path / "run" / "config.json").read_text())["precision"] == "bf16"


@pytest.mark.slow
def test_tower_split_combined_with_ddp(tmp_path):
    """Each of two DDP processes runs the model split over two (CPU) devices, as the paper's
    towers would over two GPUs; the result equals one process on the same global batch."""
    spec = tmp_path / "towers.yaml"
    spec.write_text(TINY_TOWERS)
    one, two, _ = train_one_and_two_processes(tmp_path, [str(spec), "--device", "cpu,cpu", "--max-steps", "5"], 29523)
    assert sorted(one) == sorted(two) and "conv2.weight" in one  # one-device layout in both checkpoints
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-5, msg=key)


@pytest.mark.slow
def test_resume_on_another_placement_keeps_the_weights(tmp_path):
    spec = tmp_path / "towers.yaml"
    spec.write_text(TINY_TOWERS)
    first = run_cli("train", str(spec), "--device", "cpu,cpu", "--max-steps", "3", "--out", str(tmp_path / "run"))
    assert first.returncode == 0, first.stderr
    saved = final_weights(tmp_path / "run")
    # resumed on one device at the step it stopped: the checkpoint it writes holds exactly the loaded weights
    second = run_cli("train", str(spec), "--device", "cpu", "--max-steps", "3", "--resume", str(tmp_path / "run"))
    assert second.returncode == 0, second.stderr
    assert "momentum restarts" in second.stdout
    after = final_weights(tmp_path / "run")
    assert all(torch.equal(saved[k], after[k]) for k in saved)
    third = run_cli("train", str(spec), "--device", "cpu", "--max-steps", "5", "--resume", str(tmp_path / "run"))
    assert third.returncode == 0 and checkpoint.load(checkpoint.latest(tmp_path / "run"))["step"] == 5


@pytest.mark.slow
def test_cuda_graphs_on_where_they_cannot_be_is_a_clear_error(tmp_path):
    result = run_cli("train", "digits", "--device", "cpu", "--cuda-graphs", "on", "--max-steps", "1",
                     "--out", str(tmp_path / "run"))
    assert result.returncode == 2
    assert "--cuda-graphs on cannot be kept: the model is not on a CUDA device" in result.stderr
    assert not list((tmp_path / "run").glob("checkpoints/*.pt"))


def test_rates_kept_on_the_device_follow_the_schedule_and_are_saved_as_numbers():
    from alexspec.spec.loader import load_file
    from alexspec.train.graphed import lr_on_device
    from alexspec.train.loop import Position, TrainConfig, Trainer
    from alexspec.train.recipe import set_lr

    trainer = Trainer(load_file(ROOT / "specs" / "digits.yaml"), TrainConfig(devices=["cpu"]), log=lambda *a: None)
    lr_on_device(trainer.optimizer, torch.device("cpu"))
    rates = [group["lr"] for group in trainer.optimizer.param_groups]
    set_lr(trainer.optimizer, 0.25)
    assert all(isinstance(r, torch.Tensor) and r.item() == 0.25 for r in rates)  # filled in place
    assert [g["lr"] for g in trainer.optimizer.param_groups] == rates
    saved = trainer.state(Position(best=1.0))["optimizer"]["param_groups"]
    assert all(type(group["lr"]) is float and group["lr"] == 0.25 for group in saved)
    assert all(isinstance(g["lr"], torch.Tensor) for g in trainer.optimizer.param_groups)  # the live ones stay


@pytest.mark.gpu
def test_a_graphed_training_step_trains_as_the_eager_one(tmp_path):
    # one epoch of 15 steps: 3 ordinary, the recorded one, replays under a cosine schedule, a short last batch
    runs, said = {}, {}
    for mode in ("on", "off"):
        result = run_cli("train", "digits", "--device", "cuda", "--backend", "torch", "--epochs", "1", "--batch",
                         "100", "--cuda-graphs", mode, "--out", str(tmp_path / mode))  # torch: no timed choices
        assert result.returncode == 0, result.stderr
        runs[mode], said[mode] = final_weights(tmp_path / mode), result.stdout
    assert "runs as one CUDA graph" in said["on"] and "CUDA graph" not in said["off"]
    for key in runs["off"]:
        torch.testing.assert_close(runs["on"][key], runs["off"][key], rtol=1e-3, atol=1e-4, msg=key)


@pytest.mark.gpu
def test_training_with_the_triton_kernels_compiles_them_ahead(tmp_path):
    result = run_cli("train", "digits", "--device", "cuda", "--backend", "triton", "--max-steps", "4", "--batch", "64",
                     "--out", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    assert "compiled the Triton kernels (every autotune config) in" in result.stdout


def test_losses_are_read_from_the_device_once_per_log_window(tmp_path, monkeypatch):
    from alexspec.cli import main
    from alexspec.train import losses

    reads, read = [], losses.PendingLosses.read

    def recorded(self, combine=None):
        found = read(self, combine)
        if found:
            reads.append([step for step, _, _ in found])
        return found

    monkeypatch.setattr(losses.PendingLosses, "read", recorded)
    assert main(["train", "digits", "--device", "cpu", "--epochs", "1", "--batch", "128", "--log-every", "5",
                 "--out", str(tmp_path / "run")]) == 0
    # 1,437 training digits in batches of 128: 12 steps, read at steps 5 and 10 and at the epoch's end
    assert reads == [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10], [11, 12]]
    logged = [m for m in metrics(tmp_path / "run") if m["kind"] == "step"]
    assert [m["step"] for m in logged] == [5, 10] and all(math.isfinite(m["loss"]) for m in logged)


def test_a_kept_loss_is_a_copy_which_a_replayed_graph_cannot_overwrite():
    from alexspec.train.losses import PendingLosses

    pending, output = PendingLosses(), torch.tensor(1.5)
    pending.add(1, 0.1, output)
    output.fill_(float("nan"))  # what the next replay of a recorded step does to its output
    pending.add(2, 0.1, output)
    (first, second) = pending.read()
    assert first == (1, 0.1, 1.5) and second[:2] == (2, 0.1) and math.isnan(second[2])
    pending.add(3, 0.05, torch.tensor(2.0))
    assert pending.read() == [(3, 0.05, 2.0)] and pending.read() == [] and len(pending) == 0


def test_a_run_folder_serves_as_the_spec_with_its_overrides_checkpoint_and_data(tmp_path, capsys):
    from alexspec import build
    from alexspec.builder import load_state
    from alexspec.cli import main

    run_dir = str(tmp_path / "run")
    # fc3 narrowed from 128 to 64 on the command line: the bundled spec no longer fits the weights
    assert main(["train", "digits", "--set", "layers.6.out=64", "--data", "synthetic", "--epochs", "1",
                 "--batch", "128", "--device", "cpu", "--out", run_dir]) == 0
    assert f"alexspec eval {run_dir}" in capsys.readouterr().out
    epoch = [m for m in metrics(tmp_path / "run") if m["kind"] == "epoch"][-1]

    assert main(["eval", "digits", "--checkpoint", run_dir, "--data", "synthetic"]) == 2
    err = capsys.readouterr().err  # the plain spec's network is another one: the error names the run's
    assert "saved from another network" in err and f"give {run_dir} as SPEC" in err

    assert main(["eval", run_dir]) == 0
    out = capsys.readouterr().out
    assert out.startswith("digits on synthetic (128 images")  # the run's data, not the default digits
    found = json.loads(out.splitlines()[-1])
    assert found["checkpoint"] == str(tmp_path / "run" / "checkpoints" / "best.pt")
    assert found["top1_error"] == epoch["top1_error"]
    assert found["val_loss"] == pytest.approx(epoch["val_loss"], rel=1e-5)

    assert main(["export", run_dir, "-o", str(tmp_path / "run.pt2")]) == 0
    program = torch.export.load(str(tmp_path / "run.pt2"))
    built = build(str(tmp_path / "run" / "spec.yaml"), "torch", ["cpu"])
    load_state(built.module, checkpoint.load(tmp_path / "run" / "checkpoints" / "best.pt")["model"])
    x = torch.randn(3, 1, 8, 8)
    torch.testing.assert_close(program.module()(x), built.module.eval()(x), rtol=1e-5, atol=1e-5)

    assert main(["train", run_dir, "--resume", "--epochs", "2"]) == 0  # continues the run in its folder
    assert f"resumed from {tmp_path / 'run' / 'checkpoints'}" in capsys.readouterr().out
    assert [m["epoch"] for m in metrics(tmp_path / "run") if m["kind"] == "epoch"] == [1, 2]
    assert checkpoint.load(checkpoint.latest(tmp_path / "run"))["model"]["fc3.weight"].shape[0] == 64

    import yaml

    spec = yaml.safe_load((tmp_path / "run" / "spec.yaml").read_text())
    spec["layers"][6]["out"] = 48  # the run's own spec edited: giving the run as SPEC is no longer the fix
    (tmp_path / "run" / "spec.yaml").write_text(yaml.safe_dump(spec))
    assert main(["eval", run_dir]) == 2
    err = capsys.readouterr().err
    assert f"its run folder's {tmp_path / 'run' / 'spec.yaml'} no longer describes it: undo the change" in err
    assert "as SPEC" not in err


@pytest.mark.parametrize("outputs", [3, 6])
def test_top5_error_only_where_the_network_has_more_than_5_outputs(tmp_path, outputs):
    """With 5 outputs or fewer every class is in the top 5: a top-5 error of 0 whatever was learnt."""
    spec = tmp_path / "few.yaml"
    spec.write_text("alexspec: 1\nname: few\ninput: {channels: 1, height: 8, width: 8}\nlayers:\n"
                    f"  - {{name: flatten, type: flatten}}\n  - {{name: fc, type: linear, out: {outputs}}}\n"
                    "training: {lr: 0.05, batch: 64, epochs: 1}\n")
    trained = run_cli("train", str(spec), "--data", "synthetic", "--out", str(tmp_path / "run"))
    assert trained.returncode == 0, trained.stderr
    [epoch] = [m for m in metrics(tmp_path / "run") if m["kind"] == "epoch"]
    evaluated = run_cli("eval", str(tmp_path / "run"))
    assert evaluated.returncode == 0, evaluated.stderr
    found = json.loads(evaluated.stdout.splitlines()[-1])
    assert [("top5_error" in m) for m in (epoch, found)] == [outputs > 5] * 2
    said = [trained.stdout.count("top-5 error"), evaluated.stdout.count("top-5 error")]
    assert said == ([2, 1] if outputs > 5 else [0, 0]) and "top-1 error" in evaluated.stdout  # epoch, done; eval
    assert run_cli("plot", str(tmp_path / "run")).returncode == 0


def test_eval_without_weights_says_where_to_give_them(capsys):
    from alexspec.cli import main

    assert main(["eval", "digits"]) == 2
    err = capsys.readouterr().err
    assert "give --checkpoint CKPT" in err and "a run folder as SPEC" in err


@pytest.mark.parametrize("world, local, said", [
    (1, 1, "alexspec train 'runs/my run' --resume"),
    (4, 4, "torchrun --nproc-per-node 4 -m alexspec train 'runs/my run' --resume"),
    (16, 8, "torchrun --nproc-per-node 8 --nnodes 2 -m alexspec train 'runs/my run' --resume (on each node, "
            "with its --node-rank and --rdzv-endpoint)")])
def test_the_continue_line_repeats_the_torchrun_launch(world, local, said):
    from alexspec import settings
    from alexspec.cli.train_commands import _continue_command

    with settings.override(world_size=world, local_world_size=local):
        assert _continue_command(Path("runs/my run")) == said


def test_data_parallel_on_gpus_takes_gloo_for_cpu_tensors_beside_nccl():
    from alexspec.train.distributed import backend

    # the stop flag and the validation sums are CPU tensors, which NCCL alone refuses
    assert backend("cuda:0") == "cpu:gloo,cuda:nccl" and backend("cpu") == "gloo"


def test_without_a_terminal_training_says_where_it_is_once_a_minute(monkeypatch):
    from alexspec.train import progress

    said = []
    monkeypatch.setattr(progress, "LINE_EVERY_S", 0.0)  # every step instead of once a minute
    with progress.Progress(epochs=2, steps_per_epoch=4, main=True, log=said.append, bar=False) as shown:
        for index in range(1, 5):
            shown.update(0, index, None if index == 1 else 2.5, 0.01, 256.0)
    assert [line.split(", about")[0] for line in said] == [
        "epoch 1/2: 1/4 steps (25%), lr 0.01, 256 img/s", "epoch 1/2: 2/4 steps (50%), loss 2.500, lr 0.01, 256 img/s",
        "epoch 1/2: 3/4 steps (75%), loss 2.500, lr 0.01, 256 img/s"]  # the epoch's end has its own line
    assert all(" left" in line for line in said)
    quiet = []
    with progress.Progress(epochs=2, steps_per_epoch=4, main=False, log=quiet.append, bar=False) as shown:
        shown.update(0, 1, 2.5, 0.01, 256.0)
    assert quiet == []  # rank 0 speaks for a data-parallel run


def test_a_new_run_starts_from_imported_weights_and_refits_a_last_layer_for_other_classes(tmp_path):
    (tmp_path / "nets.py").write_text("from torch import nn\ndef Small():\n    return nn.Sequential("
                                      "nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))\n")
    imported = run_cli("import", "python:nets:Small", "--input", "1,8,8", "-o", "s.yaml", "--weights-out", "w.pt",
                       cwd=tmp_path)
    assert imported.returncode == 0, imported.stderr
    weights = checkpoint.load(tmp_path / "w.pt")["model"]
    resumed = run_cli("train", "s.yaml", "--resume", "w.pt", cwd=tmp_path)  # weights alone are no run to continue
    assert resumed.returncode == 2 and "w.pt: holds weights alone (written by alexspec import), not a run to " \
        "continue; start a new run from them with --weights w.pt" in resumed.stderr, resumed.stderr
    tiny_step = ["--max-steps", "1", "--set", "training.lr=1e-9", "--set", "training.weight_decay=0"]
    started = run_cli("train", "s.yaml", "--weights", "w.pt", *tiny_step, "--out", "run", cwd=tmp_path)
    assert started.returncode == 0 and "starting from the weights in w.pt\n" in started.stdout, started.stderr
    trained = final_weights(tmp_path / "run")
    for key in weights:  # one step of a rate of 1e-9 from the imported weights
        torch.testing.assert_close(trained[key], weights[key], atol=1e-6, rtol=0, msg=key)
    # three classes: the last layer is the spec's, the conv the imported one's
    refit = run_cli("train", "s.yaml", "--weights", "w.pt", "--set", "layers.fc1.out=3", "--data", "synthetic",
                    *tiny_step, "--out", "refit", cwd=tmp_path)
    assert refit.returncode == 0, refit.stderr
    assert "the spec initialises fc1, for which w.pt holds no weights of the right shape" in refit.stdout
    refitted = final_weights(tmp_path / "refit")
    torch.testing.assert_close(refitted["conv1.weight"], weights["conv1.weight"], atol=1e-6, rtol=0)
    assert refitted["fc1.weight"].shape == (3, 144)
    assert run_cli("train", "lenet5", "--weights", "w.pt", cwd=tmp_path).stderr.splitlines()[-1] == (
        "alexspec train: w.pt: none of its weights fit lenet5 (no layer of the same name and shape); were they "
        "saved from another kind of network?")
