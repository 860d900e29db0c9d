"""How the kernels autotune: every config of a new shape compiled at once, then timed; the
environment switches (ALEXSPEC_AUTOTUNE, ALEXSPEC_CONV) and what a bad value does."""
from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from kernel_helpers import torch  # noqa: F401  (skips without torch and triton)

import triton
from triton.runtime import _async_compile

from alexspec.kernels.ops.launch import INTERPRET
from alexspec.kernels.tuning.autotune import autotune, compiling_in_parallel


class FakeTuner:
    """What compiling_in_parallel uses of a triton Autotuner: prune_configs, nargs, fn.warmup, and
    cache_results (off: no timings kept from an earlier process to look up)."""

    def __init__(self, configs):
        self.configs, self.warmed, self.lock = configs, [], threading.Lock()
        self.nargs = {"x_ptr": "x", "n": 10}
        self.fn = self
        self.cache_results = False

    def prune_configs(self, kwargs):
        return self.configs[1:]  # a pruning the wrapper must keep

    def warmup(self, *args, grid, **kwargs):
        with self.lock:  # Triton's warmup under AsyncCompileMode only submits the compilation
            self.warmed.append((args, kwargs, _async_compile.active_mode.get() is not None))


def test_every_config_of_a_new_key_is_compiled_in_async_mode_before_timing():
    configs = [triton.Config({"BLOCK": b}, num_warps=w) for b, w in ((16, 2), (32, 4), (64, 8))]
    tuner = compiling_in_parallel(FakeTuner(configs))
    pruned = tuner.prune_configs({"grid": (4,), "warmup": False, "SIZE": 5})
    assert pruned == configs[1:]
    assert len(tuner.warmed) == 2
    for (args, kwargs, in_async_mode), config in zip(tuner.warmed, configs[1:]):
        assert args == ("x", 10) and in_async_mode
        assert kwargs["SIZE"] == 5 and "grid" not in kwargs and "warmup" not in kwargs
        assert kwargs["BLOCK"] == config.kwargs["BLOCK"] and kwargs["num_warps"] == config.num_warps
    assert _async_compile.active_mode.get() is None  # the mode ends with the compilations


def test_a_failing_parallel_compile_warns_and_leaves_compiling_to_the_autotuner():
    class Broken(FakeTuner):
        __name__ = "broken_kernel"

        def warmup(self, *args, grid, **kwargs):
            raise TypeError("warmup() got an unexpected keyword argument")

    tuner = compiling_in_parallel(Broken([triton.Config({"BLOCK": 16}), triton.Config({"BLOCK": 32})]))
    with pytest.warns(UserWarning, match="compiling broken_kernel's configs in parallel failed"):
        assert len(tuner.prune_configs({"grid": (1,)})) == 1  # the pruning still stands
    assert tuner.prune_configs.__func__ is Broken.prune_configs  # the plain one from now on


@pytest.mark.skipif(not INTERPRET, reason="about the interpreter (TRITON_INTERPRET=1)")
def test_the_interpreter_tunes_nothing():
    configs = [triton.Config({"BLOCK": b}) for b in (16, 32)]

    @triton.jit
    def kernel(x_ptr, BLOCK: triton.language.constexpr):
        pass

    assert [c.kwargs for c in autotune(configs, key=[])(kernel).configs] == [{"BLOCK": 16}]


@pytest.mark.parametrize("variable, message", [
    ("ALEXSPEC_AUTOTUNE", "ALEXSPEC_AUTOTUNE='fast' is neither 'full' nor 'quick'"),
    ("ALEXSPEC_CONV", "ALEXSPEC_CONV='fast' is not one of auto, triton, cudnn"),
    ("ALEXSPEC_COMPILE_AHEAD", "ALEXSPEC_COMPILE_AHEAD='fast' is neither 0 nor 1; compiling ahead"),
])
def test_a_bad_switch_value_warns_and_falls_back(variable, message):
    done = subprocess.run([sys.executable, "-c", "import alexspec.kernels.tuning.ahead"], capture_output=True, text=True,
                          env={**os.environ, variable: "fast"})
    assert done.returncode == 0 and message in done.stderr


def test_the_time_spent_timing_configs_and_implementations_is_counted(monkeypatch):
    # what `alexspec bench --cold-start` reports of a first step besides compiling
    import time

    import triton.testing

    from alexspec.kernels.tuning import autotune, conv_choice

    def slow_bench(fn, **options):
        time.sleep(0.02)
        return 1.0

    monkeypatch.setattr(triton.testing, "do_bench", slow_bench)
    from alexspec.kernels.tuning.stopwatch import Stopwatch

    monkeypatch.setattr(autotune, "timing", Stopwatch())
    monkeypatch.setattr(conv_choice, "timing", Stopwatch())
    assert autotune._short_bench(lambda: None, None) == 1.0 and autotune._short_bench(lambda: None, None) == 1.0
    assert conv_choice._do_bench(lambda: None) == 1.0
    assert 0.04 <= autotune.timing.seconds < 1 and 0.02 <= conv_choice.timing.seconds < 1


def test_a_launch_runs_on_its_tensors_gpu(monkeypatch):
    # Triton launches on the current GPU: a tower's layer on cuda:1 must make cuda:1 current
    import torch

    from alexspec.kernels.ops import launch

    entered = []

    class Device:
        def __init__(self, device):
            self.device = device

        def __enter__(self):
            entered.append(str(self.device))

        def __exit__(self, *exc):
            return False

    class OnGpu:
        is_cuda = True

        def __init__(self, index):
            self.device = torch.device("cuda", index)

    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "device", Device)
    for tensor in (OnGpu(1), OnGpu(0), torch.zeros(1), None):
        with launch.on_device_of(tensor):
            pass
    assert entered == ["cuda:1"]  # only where the tensor's GPU is not the current one
