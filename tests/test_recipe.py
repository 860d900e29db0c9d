"""The training recipe as torch objects: fused optimizers that step like the unfused ones, LR multipliers,
the schedule."""
from __future__ import annotations

import dataclasses

import pytest

torch = pytest.importorskip("torch")

import alexspec  # noqa: E402
from alexspec import ir  # noqa: E402
from alexspec.train.recipe import fused_supported, optimizer  # noqa: E402
from conftest import SPECS  # noqa: E402


def run_steps(build, training, fused: bool, steps: int = 3):
    torch.manual_seed(0)
    module = alexspec.compile(SPECS / "digits.yaml", backend="torch", devices=["cpu"])
    opt = optimizer(module, build.generated.attributes, training)
    if not fused:  # the same recipe, updated by the per-tensor (foreach) implementation
        drop = ("fused", "decoupled_weight_decay")
        groups = [{k: v for k, v in g.items() if k not in drop} for g in opt.param_groups]
        opt = type(opt)(groups, **{**{k: v for k, v in opt.defaults.items() if k not in drop}, "fused": False})
        assert not any(g["fused"] for g in opt.param_groups)
    x = torch.randn(16, 1, 8, 8)
    for _ in range(steps):
        opt.zero_grad()
        module(x).logsumexp(1).sum().backward()
        opt.step()
    return opt, [p.detach().clone() for p in module.parameters()]


@pytest.mark.parametrize("kind", ["sgd", "adam", "adamw"])
def test_fused_optimizer_steps_like_the_unfused_one(kind):
    build = alexspec.build(SPECS / "digits.yaml", backend="torch", devices=["cpu"])
    training = dataclasses.replace(build.info.network.training, optimizer=kind, lr=0.05, nesterov=kind == "sgd",
                                   lr_mult={"conv1": {"weight": 2.0, "bias": 0.5}})
    steps = 3 if kind == "sgd" else 1  # Adam turns rounding-sized gradient differences into +-lr steps
    opt, fused = run_steps(build, training, fused=True, steps=steps)
    assert opt.defaults["fused"] is True
    assert {g["name"]: g["lr"] for g in opt.param_groups} == {"default": 0.05, "conv1.weight": 0.1, "conv1.bias": 0.025}
    _, unfused = run_steps(build, training, fused=False, steps=steps)
    for a, b in zip(fused, unfused):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_fused_is_not_asked_for_where_parameters_are_not_floats_on_cpu_or_cuda():
    assert fused_supported(torch.nn.Linear(2, 2))
    assert not fused_supported(torch.nn.Linear(2, 2).to(torch.device("meta")))
    assert not fused_supported(torch.nn.ReLU())
    training = ir.Training()
    assert optimizer(torch.nn.Linear(2, 2).to(torch.device("meta")), {}, training).defaults["fused"] is False


def test_a_warm_up_as_long_as_the_run_is_a_note_giving_the_rate_it_reaches(tmp_path):
    from alexspec.train.loop import TrainConfig
    from alexspec.train.session import start

    said = []
    config = TrainConfig(devices=["cpu"], out=str(tmp_path / "run"), epochs=1, max_steps=1,
                         overrides=["training.batch=512", "training.schedule={type: cosine, warmup: 2}"])
    start(SPECS / "digits.yaml", config, log=said.append)  # lr 0.1 warmed up over 2 epochs: 0.05 after the run's one
    assert "note: the warm-up (schedule.warmup: 2) lasts as long as the run of 1 epoch or longer: the learning rate " \
        "only rises, to 0.05 at the end (training.lr: 0.1)" in said
    said.clear()
    start(SPECS / "digits.yaml", dataclasses.replace(config, out=str(tmp_path / "longer"), epochs=3), log=said.append)
    assert not [line for line in said if "warm-up" in line]


def test_a_step_schedule_that_never_steps_in_the_run_is_a_note():
    from alexspec.train.recipe import Schedule

    training = ir.Training(lr=0.1, schedule=ir.Schedule(type="step", every=30, factor=0.1))
    assert Schedule(training, 20).notes() == ["the step schedule multiplies the learning rate by 0.1 every 30 epochs "
                                              "and the run has 20: it stays at training.lr (0.1)"]
    assert Schedule(training, 31).notes() == [] and Schedule(training, 31).lr(30) == pytest.approx(0.01)
