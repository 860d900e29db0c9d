"""The kernels as custom ops inside a model: torch.compile without graph breaks, torch.export, CUDA graphs."""
from __future__ import annotations

import unittest.mock

import pytest

from kernel_helpers import torch
from torch.utils._python_dispatch import TorchDispatchMode

from alexspec import kernels
from alexspec.kernels import LRN, Conv2d, MaxPool2d
from alexspec.kernels.ops import reference


class TinyAlexNet(torch.nn.Module):
    """conv+ReLU -> LRN -> overlapping pool -> grouped conv+ReLU -> pool(relu) -> linear."""

    def __init__(self):
        super().__init__()
        self.conv1 = Conv2d(3, 8, 5, stride=2, relu=True)
        self.norm1 = LRN(5, 1e-2, 0.75, 2.0, groups=2)
        self.pool1 = MaxPool2d(3, 2)
        self.conv2 = Conv2d(8, 8, 3, padding=1, groups=2, relu=False)
        self.pool2 = MaxPool2d(3, 2, relu=True)
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x):
        x = self.pool1(self.norm1(self.conv1(x)))
        x = self.pool2(self.conv2(x))
        return self.fc(torch.flatten(x, 1))

    def reference(self, x):
        x = reference.conv2d_bias_relu(x, self.conv1.weight, self.conv1.bias, 2)
        x = reference.max_pool2d(reference.lrn(x, 5, 1e-2, 0.75, 2.0, groups=2), 3, 2)
        x = reference.conv2d_bias_relu(x, self.conv2.weight, self.conv2.bias, 1, 1, 2, relu=False)
        x = reference.max_pool2d(x, 3, 2, relu=True)
        return self.fc(torch.flatten(x, 1))


def test_model_matches_reference_forward_and_backward():
    torch.manual_seed(0)
    model = TinyAlexNet()
    x = torch.randn(2, 3, 23, 23)
    out, expected = model(x), model.reference(x)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    grads = torch.autograd.grad(out.sum(), list(model.parameters()))
    expected_grads = torch.autograd.grad(expected.sum(), list(model.parameters()))
    for g, e in zip(grads, expected_grads):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)


class AlexspecOps(TorchDispatchMode):
    """Records the alexspec ops the dispatcher runs under it."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "alexspec":
            self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def test_eager_calls_skip_the_dispatcher_and_compute_what_the_custom_ops_do():
    # eager: plain autograd.Functions around the same implementations (less host time per layer);
    # the registered custom ops stay what torch.compile and torch.export see (the tests above and below)
    torch.manual_seed(0)
    model = TinyAlexNet()
    x = torch.randn(2, 3, 23, 23)
    with AlexspecOps() as seen:
        out = model(x)
        out.sum().backward()
    assert seen.ops == []
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    with AlexspecOps() as seen:  # the same model through the custom ops, as torch.compile traces it
        with unittest.mock.patch("torch.compiler.is_compiling", return_value=True):
            dispatched = model(x)
            dispatched.sum().backward()
    assert "alexspec.lrn_forward.default" in seen.ops and "alexspec.conv2d_bias_relu_backward.default" in seen.ops
    torch.testing.assert_close(dispatched, out)
    for p, g in zip(model.parameters(), grads):
        torch.testing.assert_close(p.grad, g)


def test_the_profiler_names_each_eager_op_and_its_backward():
    x = torch.randn(1, 4, 7, 7, requires_grad=True)
    weight = torch.randn(8, 4, 3, 3, requires_grad=True)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiled:
        y = kernels.conv2d_bias_relu(x, weight, None, padding=1)
        z = kernels.max_pool2d(kernels.lrn(y, 5), 3, 2)
        z.sum().backward()
    names = {event.key for event in profiled.key_averages()}
    assert {"alexspec_conv", "alexspec_lrn", "alexspec_max_pool"} <= names
    assert {"alexspec_convBackward", "alexspec_lrnBackward", "alexspec_max_poolBackward"} <= {
        name.split(": ")[-1] for name in names}
    assert z.grad_fn.name() == "alexspec_max_poolBackward"


@pytest.mark.slow
def test_torch_compile_traces_without_graph_breaks():
    torch.manual_seed(0)
    model = TinyAlexNet()
    x = torch.randn(2, 3, 23, 23)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)  # fullgraph: a break is an error
    out = compiled(x)
    torch.testing.assert_close(out, model(x))
    out.sum().backward()
    assert model.conv1.weight.grad is not None


def test_torch_export_keeps_the_custom_ops():
    torch.manual_seed(0)
    model = TinyAlexNet().eval()
    x = torch.randn(2, 3, 23, 23)
    program = torch.export.export(model, (x,))
    text = str(program.graph)
    for op in ("alexspec.lrn_forward", "alexspec.max_pool2d_forward", "alexspec.conv2d_bias_relu_forward"):
        assert op in text
    torch.testing.assert_close(program.module()(x), model(x))


@pytest.mark.gpu
def test_cuda_graph_capture():
    torch.manual_seed(0)
    model = TinyAlexNet().cuda()
    x = torch.randn(8, 3, 23, 23, device="cuda")
    model(x)  # compile and autotune outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = model(x)
    x.copy_(torch.randn_like(x))
    graph.replay()
    torch.testing.assert_close(out, model(x))


@pytest.mark.slow
def test_benchmark_script_runs_and_writes_json(tmp_path):
    import json
    import subprocess
    import sys

    from conftest import ROOT

    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, "bench/kernels.py", "--smoke", "--out", str(out)], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert {"device", "torch", "triton", "date"} <= set(report) and report["complete"] is True
    assert len(result.stdout.splitlines()) == len(report["results"]) + 2  # the device, a line per row, "wrote"
    hardware = report["hardware"]
    assert hardware["copy_GB/s"] > 0 and hardware["matmul_TFLOP/s_float32"] > 0
    for row in report["results"]:  # each rate read against the device's, measured in the same run
        if "GB/s" in row:
            assert row["of_copy_bandwidth"] == pytest.approx(row["GB/s"] / hardware["copy_GB/s"], abs=1e-3)
        else:
            assert row["of_matmul_peak"] == pytest.approx(row["TFLOP/s"] / hardware["matmul_TFLOP/s_float32"],
                                                          abs=1e-3)
    ops = {(row["op"], row["pass"]) for row in report["results"]}
    assert ops == {(op, mode) for op in ("lrn", "maxpool", "conv+bias+relu", "relu+lrn+maxpool", "conv+relu+lrn")
                   for mode in ("fwd", "fwd+bwd")}
    assert all(row["ms"] > 0 and row["torch_ms"] > 0 for row in report["results"])
    assert all(row["ms_graphed"] is None for row in report["results"])  # CUDA graphs only on a GPU


def test_a_smoke_run_of_the_kernel_benchmark_keeps_its_timings_out_of_the_results_folder():
    import importlib.util

    from conftest import ROOT

    spec = importlib.util.spec_from_file_location("bench_kernels", ROOT / "bench" / "kernels.py")
    bench_kernels = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_kernels)
    smoke, gpu_run = {"smoke": True, "device": "cpu", "date": "2026-12-06"}, \
        {"smoke": False, "device": "NVIDIA H200", "date": "2026-12-06"}
    assert bench_kernels.output_file(None, smoke) is None
    assert str(bench_kernels.output_file("smoke.json", smoke)) == "smoke.json"
    assert str(bench_kernels.output_file(None, gpu_run)) == "bench/results/kernels-NVIDIA_H200-2026-12-06.json"


def test_both_backends_compute_the_same_function():
    torch.manual_seed(0)
    triton_model = TinyAlexNet()
    torch_model = TinyAlexNet()
    torch_model.load_state_dict(triton_model.state_dict())
    for module in torch_model.modules():
        if hasattr(module, "backend"):
            module.backend = "torch"
    x = torch.randn(2, 3, 23, 23)
    torch.testing.assert_close(triton_model(x), torch_model(x), rtol=1e-5, atol=1e-5)


def test_backend_choice_is_explained():
    from alexspec.kernels import resolve_backend

    assert resolve_backend("auto", ["cpu"]) == ("torch", "torch reference ops: the Triton kernels need CUDA")
    assert resolve_backend("auto", ["cuda:0", "cpu"])[1].endswith("need CUDA on every device, not cuda:0, cpu")
    assert resolve_backend("torch", ["cuda:0"]) == ("torch", "torch reference ops")
    with pytest.raises(ValueError, match="backend must be auto, triton or torch"):
        resolve_backend("cudnn", ["cpu"])


def test_without_triton_the_torch_backend_still_trains():
    """A CPU-only torch build has no triton: alexspec still builds and trains on the torch backend,
    and a Triton op says what to use instead."""
    import subprocess
    import sys

    code = """
import sys
sys.modules["triton"] = sys.modules["triton.language"] = None  # as if triton were not installed
import torch, alexspec
from alexspec import kernels
model = alexspec.compile("specs/digits.yaml", backend="auto", devices=["cpu"])
assert not kernels.triton_available() and model.backend_reason.startswith("torch reference ops")
model(torch.randn(2, 1, 8, 8)).sum().backward()
try:
    kernels.lrn_max_pool2d(torch.randn(1, 4, 5, 5), 3)
except ValueError as error:
    print(error)
"""
    from conftest import ROOT

    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "triton is not installed; use the torch references" in done.stdout
