"""bf16 weight copies written by the SGD step (alexspec.train.weight_copies): the same training as
autocast with torch's SGD, the copies always the weights rounded, checkpoints unchanged."""
from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from alexspec.builder import build  # noqa: E402
from alexspec.train import checkpoint  # noqa: E402
from alexspec.train.weight_copies import SGDWithCopies, WeightCopies  # noqa: E402
from conftest import ROOT, TINY_TOWERS, run_cli  # noqa: E402

SGD = dict(lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=False)


def steps(module, x, labels, copies: bool, count: int = 4):
    """`count` bf16 steps: on copies with SGDWithCopies, or autocast with torch.optim.SGD."""
    forward = WeightCopies(module) if copies else module
    opt = SGDWithCopies(module.parameters(), forward, **SGD) if copies else \
        torch.optim.SGD(module.parameters(), foreach=False, **SGD)
    for _ in range(count):
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False):
            out = forward(x)
        torch.nn.functional.cross_entropy(out.float(), labels).backward()
        opt.step()
    return forward, opt


@pytest.fixture
def towers(tmp_path):
    spec = tmp_path / "towers.yaml"
    spec.write_text(TINY_TOWERS)
    torch.manual_seed(0)
    module = build(spec, backend="torch", devices=["cpu"]).module.to(memory_format=torch.channels_last)
    x = torch.randn(8, 1, 8, 8).contiguous(memory_format=torch.channels_last)
    return module, x, torch.randint(0, 4, (8,))


def test_training_on_copies_is_autocast_training(towers):
    module, x, labels = towers
    twin = build_twin(module)
    copies, opt = steps(module, x, labels, copies=True)
    _, plain_opt = steps(twin, x, labels, copies=False)
    for (name, p), q in zip(module.named_parameters(), twin.parameters()):
        assert p.dtype == torch.float32 and torch.equal(p, q), name  # same operands, same gradients, same step
    # the gradients went to the copies, and each copy is its new weight rounded to bf16
    assert len(copies) == len(list(module.parameters()))  # every parameter is a conv's or a linear layer's
    for param, copy in copies.of.items():
        assert param.grad is None and copy.grad is not None and copy.grad.dtype == torch.bfloat16
        assert torch.equal(copy, param.to(torch.bfloat16)) and copy.stride() == param.stride()
    # the optimizer's state is torch's (the same momentum), and a checkpoint of it loads into torch's SGD
    for p, q in zip(module.parameters(), twin.parameters()):
        assert torch.equal(opt.state[p]["momentum_buffer"], plain_opt.state[q]["momentum_buffer"])
    fresh = torch.optim.SGD(twin.parameters(), **SGD)
    fresh.load_state_dict(opt.state_dict())
    assert all(torch.equal(fresh.state[q]["momentum_buffer"], opt.state[p]["momentum_buffer"])
               for p, q in zip(module.parameters(), twin.parameters()))


def build_twin(module):
    import copy

    return copy.deepcopy(module)


def test_copies_follow_weights_loaded_by_hand(towers):
    module, x, _ = towers
    copies = WeightCopies(module)
    with torch.no_grad():
        for p in module.parameters():
            p.mul_(-2)
    copies.refresh()
    assert all(torch.equal(copy, p.to(torch.bfloat16)) for p, copy in copies.of.items())
    with torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False):
        torch.testing.assert_close(copies(x).float(), module(x).float())  # the module's own forward, on copies


def test_resuming_from_a_run_on_copies_keeps_this_runs_fused_step(towers):
    # torch's load_state_dict takes "fused" from the saved groups: an fp32 run resumed from a bf16
    # run on copies (which saves fused None) would step unfused from then on
    from alexspec.train.loop import load_optimizer_state

    module, x, labels = towers
    _, on_copies = steps(module, x, labels, copies=True, count=1)
    fused = torch.optim.SGD(module.parameters(), fused=True, **SGD)
    load_optimizer_state(fused, on_copies.state_dict())
    assert all(group["fused"] is True for group in fused.param_groups)
    p = next(module.parameters())
    assert torch.equal(fused.state[p]["momentum_buffer"], on_copies.state[p]["momentum_buffer"])


def test_dampening_is_refused(towers):
    module, _, _ = towers
    with pytest.raises(ValueError, match="dampening"):
        SGDWithCopies(module.parameters(), WeightCopies(module), lr=0.1, momentum=0.9, dampening=0.1)


SMALL_BF16 = ["digits", "--epochs", "1", "--max-steps", "8", "--precision", "bf16", "--channels-last"]


@pytest.mark.slow
def test_the_trainer_takes_copies_for_bf16_sgd_and_trains_as_autocast_does(tmp_path):
    on = run_cli("train", *SMALL_BF16, "--out", str(tmp_path / "on"))
    off = run_cli("train", *SMALL_BF16, "--weight-copies", "off", "--out", str(tmp_path / "off"))
    assert on.returncode == 0 and off.returncode == 0, on.stderr + off.stderr
    assert "bf16 copies of their 8 weights and biases" in on.stdout and "bf16 copies" not in off.stdout
    with_copies = checkpoint.load(checkpoint.latest(tmp_path / "on"))
    without = checkpoint.load(checkpoint.latest(tmp_path / "off"))
    for key, value in without["model"].items():
        assert with_copies["model"][key].dtype == torch.float32
        assert torch.equal(with_copies["model"][key], value), key
    # resumed from the checkpoint (copies refreshed from the loaded weights) it goes on as an unbroken run
    longer = ["digits", "--epochs", "1", "--max-steps", "12", "--precision", "bf16", "--channels-last"]
    whole = run_cli("train", *longer, "--out", str(tmp_path / "whole"))
    resumed = run_cli("train", *longer, "--out", str(tmp_path / "on"), "--resume")
    assert whole.returncode == 0 and resumed.returncode == 0, whole.stderr + resumed.stderr
    a = checkpoint.load(checkpoint.latest(tmp_path / "whole"))["model"]
    b = checkpoint.load(checkpoint.latest(tmp_path / "on"))["model"]
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_weight_copies_on_where_they_cannot_be_used_is_a_clear_error(tmp_path):
    result = run_cli("train", "digits", "--max-steps", "1", "--weight-copies", "on", "--out", str(tmp_path / "r"))
    assert result.returncode == 2
    assert "--weight-copies on cannot be kept: they serve bf16 training (--precision bf16)" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.gpu
def test_gpu_a_graphed_bf16_run_on_copies_trains_as_autocast(tmp_path):
    # 15 steps: 3 ordinary (the rate a number), the recorded one and replays (the rate read from the GPU)
    runs, said = {}, {}
    for mode in ("on", "off"):
        result = run_cli("train", "digits", "--device", "cuda", "--backend", "torch", "--epochs", "1", "--batch",
                         "100", "--precision", "bf16", "--channels-last", "--weight-copies", mode,
                         "--out", str(tmp_path / mode))
        assert result.returncode == 0, result.stderr
        runs[mode], said[mode] = checkpoint.load(checkpoint.latest(tmp_path / mode))["model"], result.stdout
    assert "bf16 copies" in said["on"] and "runs as one CUDA graph" in said["on"]
    for key in runs["off"]:
        torch.testing.assert_close(runs["on"][key], runs["off"][key], rtol=1e-3, atol=1e-4, msg=key)


@pytest.mark.slow
def test_the_sgd_step_compiles_ahead_for_an_h100_without_spilling(tmp_path):
    # the stand-in GPU of alexspec.kernels.tuning.ahead: what the trainer compiles before a graphed bf16 run
    import os
    import subprocess
    import sys

    script = f"""
import json, torch
from alexspec.builder import build
from alexspec.kernels.ops import sgd
from alexspec.kernels.tuning import ahead
from alexspec.kernels.tuning.resources import resources
from alexspec.train.weight_copies import SGDWithCopies, WeightCopies
module = build({str(ROOT / "specs" / "lenet5.yaml")!r}, backend="torch", devices=["cpu"]).module
copies = WeightCopies(module)
opt = SGDWithCopies(module.parameters(), copies, lr=0.1, momentum=0.9)
with ahead.stand_in_gpu(90):
    assert ahead.compile_ahead(lambda: opt.compile_ahead(lr_on_device=True))
binaries = [k.result() if hasattr(k, "result") else k for c in sgd._sgd_kernel.device_caches.values() for k in c[0].values()]
print(json.dumps({{"count": len(binaries), "spilled": [resources(k).spilled_bytes for k in binaries],
                  "sm90": all(".target sm_90" in k.asm["ptx"] for k in binaries)}}))
"""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=600,
                          env={**env, "TRITON_CACHE_DIR": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    # rate as a number and on the device, each for sizes that are and are not multiples of 16
    assert found["count"] >= 2 and found["sm90"] and not any(found["spilled"])
