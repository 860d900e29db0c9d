"""A network too big for the machine's memory is refused before anything is allocated or written,
and running out of memory later is told as what to change: exit 2, never an internal error."""
from __future__ import annotations

import pytest

from conftest import ROOT, locate, run_cli, spec_text

pytest.importorskip("torch")

# 3x32x32 -> conv 3x3 (30x30) -> flatten -> linear: counted here, by the layers' formulas
WIDE = 100_000
HUGE = spec_text(f"{{name: conv1, type: conv, out: {WIDE}, kernel: 3}}", "{name: flatten, type: flatten}",
                 f"{{name: fc, type: linear, out: {WIDE}}}")
HUGE_PARAMS = (3 * 3 * 3 * WIDE + WIDE) + (WIDE * 30 * 30 * WIDE + WIDE)  # 9.0e12: 36 TB in fp32

SMALL = spec_text("{name: conv1, type: conv, out: 8, kernel: 3}", "{name: flatten, type: flatten}",
                  "{name: fc, type: linear, out: 10}")
SMALL_PARAMS = (3 * 3 * 3 * 8 + 8) + (8 * 30 * 30 * 10 + 10)


@pytest.mark.parametrize("command", [["train", "-o", "run"], ["export", "-o", "net.onnx"]])
def test_weights_no_machine_could_hold_are_refused_before_anything_is_written(command, tmp_path):
    spec = tmp_path / "huge.yaml"
    spec.write_text(HUGE)
    done = run_cli(command[0], str(spec), *command[1:], cwd=tmp_path)  # torch's allocator raised, a traceback
    assert done.returncode == 2, done.stderr
    line, col = locate(HUGE, "{name: fc")
    assert f"{HUGE_PARAMS:,} parameters" in done.stderr and f"huge.yaml:{line}:{col}" in done.stderr, done.stderr
    assert "fewer outputs" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / command[2]).exists()  # no run folder, no half-written export


@pytest.mark.parametrize("training, states, copies", [
    (False, "", 1),                          # building: the weights
    (True, "optimizer: sgd, momentum: 0", 2),  # + gradients
    (True, "optimizer: sgd, momentum: 0.9", 3),  # + the momentum buffer
    (True, "optimizer: adam", 4),            # + two moments
])
def test_the_check_counts_what_a_build_and_a_training_run_hold(training, states, copies, monkeypatch):
    from alexspec import memory_check
    from alexspec.builder import build
    from alexspec.errors import BadInput
    from alexspec.spec import load_text

    text = SMALL.replace("layers:\n", f"training: {{{states}}}\nlayers:\n") if states else SMALL
    need = copies * SMALL_PARAMS * 4
    monkeypatch.setattr(memory_check, "capacity", lambda device: need)  # exactly enough
    assert build(load_text(text, "small.yaml"), devices=["cpu"], training=training).info.total_params == SMALL_PARAMS
    monkeypatch.setattr(memory_check, "capacity", lambda device: need - 1)  # one byte short
    with pytest.raises(BadInput, match=f"{SMALL_PARAMS:,} parameters"):
        build(load_text(text, "small.yaml"), devices=["cpu"], training=training)


def test_running_out_of_memory_later_says_what_to_change(monkeypatch, tmp_path, capsys):
    torch = pytest.importorskip("torch")
    from alexspec.cli import main
    from alexspec.train.loop import Trainer

    errors = {"cuda": torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
              "cpu": RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory"),
              "other": RuntimeError("not about memory")}
    for kind, error in errors.items():
        def run(*args, error=error):
            raise error
        monkeypatch.setattr(Trainer, "run", run)
        code = main(["train", "-o", str(tmp_path / kind)])
        err = capsys.readouterr().err
        if kind == "other":  # anything else stays an internal error, with its traceback
            assert code == 1 and "internal error" in err
            continue
        assert code == 2 and "internal error" not in err, err
        assert f"alexspec train: out of memory ({str(error).strip()[:160]}); a smaller --batch" in err


def test_train_counts_the_gradients_and_momentum_a_build_alone_does_not(monkeypatch, tmp_path, capsys):
    from alexspec import memory_check
    from alexspec.cli import main

    digits_params = 43_786  # docs/specs.md; trained with SGD with momentum
    monkeypatch.setattr(memory_check, "capacity", lambda device: 3 * digits_params * 4 - 1)
    assert main(["train", "-o", str(tmp_path / "run")]) == 2
    assert "training digits needs at least 513.1 KiB: 3 copies of its 43,786 parameters" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    assert main(["export", "digits", "-o", str(tmp_path / "digits.pt2")]) == 0  # one copy fits


def test_train_warns_of_a_batch_whose_estimate_outweighs_the_memory_and_names_one_that_fits(monkeypatch, tmp_path,
                                                                                             capsys):
    from alexspec import analyse, memory_check
    from alexspec.cli import main

    info = analyse(ROOT / "specs" / "digits.yaml")
    weights = 3 * 43_786 * 4  # weights, gradients, momentum in fp32
    per_image = info.memory(128, "fp32").training_saved // 128
    monkeypatch.setattr(memory_check, "capacity", lambda device: weights + 100 * per_image + per_image // 2)
    for batch, warned in ((128, True), (100, False)):
        assert main(["train", "--batch", str(batch), "--max-steps", "1", "-o", str(tmp_path / str(batch))]) == 0
        out = capsys.readouterr().out
        assert ("warning: training digits at batch 128 (fp32) may run out of memory" in out) is warned, out
        assert ("--batch 100 fits that estimate" in out) is warned
