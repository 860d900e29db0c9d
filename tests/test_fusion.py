"""Codegen's fusions: which layers run together, and that a fused module computes what the unfused one does."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

import alexspec  # noqa: E402
from alexspec.fusion import plan  # noqa: E402
from alexspec.spec import analyse, load_text  # noqa: E402
from conftest import SPECS, TINY_TOWERS, run_cli  # noqa: E402
from strategies import valid_specs  # noqa: E402


def test_alexnet_moves_the_relus_into_its_lrns_and_last_pool():
    fusion = plan(analyse(SPECS / "alexnet.yaml"))
    assert fusion.lrn_pool == {} and fusion.relu_moved == {"conv1": "norm1", "conv2": "norm2", "conv5": "pool5"}


def test_opted_in_alexnet_fuses_both_norm_pool_pairs_and_moves_three_relus():
    fusion = plan(analyse(SPECS / "alexnet.yaml"), lrn_pool=True)
    assert fusion.lrn_pool == {"norm1": "pool1", "norm2": "pool2"}
    assert fusion.relu_moved == {"conv1": "norm1", "conv2": "norm2", "conv5": "pool5"}
    assert plan(analyse(SPECS / "alexnet.yaml"), enabled=False, lrn_pool=True) == plan(analyse(SPECS / "lenet5.yaml"),
                                                                                       enabled=False)


def test_opted_in_alexnet_runs_norm1_and_norm2_in_their_convs_epilogues():
    fusion = plan(analyse(SPECS / "alexnet.yaml"), conv_lrn=True, lrn_pool=True)
    # a tower's 48 and 128 channels fit a tile; an LRN in a conv is not also fused with its pool
    assert fusion.conv_lrn == {"conv1": "norm1", "conv2": "norm2"} and fusion.lrn_pool == {}
    assert fusion.relu_moved == {"conv5": "pool5"}  # conv1's and conv2's ReLUs stay in their kernels
    caffe = plan(analyse(SPECS / "caffe-alexnet.yaml"), conv_lrn=True)
    assert caffe.conv_lrn == {"conv1": "norm1"}  # Caffe's norm2 spans both groups' 256 channels
    assert caffe.relu_moved["conv2"] == "norm2"
    assert plan(analyse(SPECS / "zfnet.yaml"), conv_lrn=True).conv_lrn == {}  # its LRNs follow pools


def test_lenet_has_no_lrn_and_moves_its_pooled_relus():
    fusion = plan(analyse(SPECS / "lenet5.yaml"))
    assert fusion.lrn_pool == {} and fusion.relu_moved == {"c1": "s2", "c3": "s4"}  # c5 feeds flatten: kept


def test_generated_source_shows_the_fusions():
    source = alexspec.build(SPECS / "alexnet-1gpu.yaml", backend="torch", devices=["cpu"],
                            fuse_lrn_pool=True).generated.source
    assert "x = layers.lrn_max_pool(self.norm1, self.pool1, x, relu=True)" in source
    assert "relu=False" in next(line for line in source.splitlines() if "self.conv1 =" in line)
    assert "relu=True" in next(line for line in source.splitlines() if "self.pool5 =" in line)
    assert "x = self.pool1(x)" not in source
    assert "relu=True" not in next(line for line in source.splitlines() if "self.norm1 =" in line)  # the fused kernel's
    default = alexspec.build(SPECS / "alexnet-1gpu.yaml", backend="torch", devices=["cpu"]).generated.source
    assert "relu=True" in next(line for line in default.splitlines() if "self.norm1 =" in line)
    assert "relu=False" in next(line for line in default.splitlines() if "self.conv2 =" in line)
    unfused = alexspec.build(SPECS / "alexnet-1gpu.yaml", backend="torch", devices=["cpu"], fuse=False)
    assert "lrn_max_pool" not in unfused.generated.source and "x = self.pool1(x)" in unfused.generated.source


def test_compile_no_fuse_writes_an_unfused_module(tmp_path):
    said = run_cli("compile", "lenet5", "-o", str(tmp_path / "a")).stdout
    assert "fused: c1: ReLU applied by s2; c3: ReLU applied by s4" in said
    assert "fused: nothing (--no-fuse)" in run_cli("compile", "lenet5", "-o", str(tmp_path / "b"), "--no-fuse").stdout
    fused, unfused = ((tmp_path / d / "lenet5.py").read_text() for d in "ab")
    pool = "self.s2 = layers.MaxPool2d((2, 2), stride=(2, 2), padding=(0, 0), ceil_mode=False"
    assert f"{pool}, relu=True, backend=backend)" in fused and f"{pool}, backend=backend)" in unfused


def test_compile_fuse_lrn_pool_opts_in(tmp_path):
    said = run_cli("compile", "alexnet-1gpu", "-o", str(tmp_path / "a"), "--fuse-lrn-pool").stdout
    assert "fused: norm1 + pool1: one LRN + max-pool kernel; norm2 + pool2" in said
    said = run_cli("compile", "alexnet-1gpu", "-o", str(tmp_path / "b")).stdout
    assert "fused: conv1: ReLU applied by norm1; conv2: ReLU applied by norm2; conv5: ReLU applied by pool5 (" in said
    assert "lrn_max_pool" not in (tmp_path / "b").joinpath(
        "alexnet_1gpu.py").read_text()


def test_compile_fuse_conv_lrn_opts_in(tmp_path):
    said = run_cli("compile", "alexnet-1gpu", "-o", str(tmp_path), "--fuse-conv-lrn").stdout
    assert "fused: conv1 + norm1: one conv + ReLU + LRN kernel; conv2 + norm2: one conv + ReLU + LRN kernel;" in said
    source = (tmp_path / "alexnet_1gpu.py").read_text()
    assert "x = layers.conv_lrn(self.conv1, self.norm1, x)  # conv1 + norm1, one kernel: 96x55x55" in source
    assert "x = self.norm1(x)" not in source and "x = self.pool1(x)" in source


def assert_same_function(fused, unfused, x):
    """Same weights, same outputs and same gradients."""
    unfused.load_state_dict(fused.state_dict())
    outs = [m.eval()(x) for m in (fused, unfused)]
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-4, atol=1e-5)
    for out in outs:
        (out * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
    for (name, a), (_, b) in zip(fused.named_parameters(), unfused.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5, msg=name)


OPT_INS = {"default": {}, "lrn_pool": dict(fuse_lrn_pool=True), "conv_lrn": dict(fuse_conv_lrn=True),
           "both": dict(fuse_lrn_pool=True, fuse_conv_lrn=True)}


@pytest.mark.parametrize("opt_in", OPT_INS)
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_fused_digits_equals_unfused_torch(backend, opt_in):
    torch.manual_seed(0)
    fused = alexspec.compile(SPECS / "digits.yaml", backend=backend, devices=["cpu"], **OPT_INS[opt_in])
    unfused = alexspec.compile(SPECS / "digits.yaml", backend="torch", devices=["cpu"], fuse=False)
    assert_same_function(fused, unfused, torch.randn(3, 1, 8, 8) * 4)


# an LRN after a conv that reads every tower's channels, and a second conv + LRN pair
CROSS_CONV_LRN = TINY_TOWERS.replace("towers: cross}\n",
                                     "towers: cross}\n  - {name: norm2, type: lrn, size: 5, alpha: 0.05, k: 2}\n", 1)


@pytest.mark.parametrize("opt_in", OPT_INS)
@pytest.mark.parametrize("devices", [["cpu"], ["cpu", "cpu"]])
@pytest.mark.parametrize("text", [TINY_TOWERS, CROSS_CONV_LRN], ids=["tiny", "cross conv + lrn"])
def test_fused_towers_equal_unfused(text, devices, opt_in):
    torch.manual_seed(0)
    doc = load_text(text, "tiny.yaml")
    fused = alexspec.compile(doc, backend="triton", devices=devices, **OPT_INS[opt_in])
    unfused = alexspec.compile(doc, backend="torch", devices=devices, fuse=False)
    assert_same_function(fused, unfused, torch.randn(2, 1, 8, 8) * 4)


@pytest.mark.parametrize("devices", [["cpu"], ["cpu", "cpu"]])
def test_opted_in_towers_run_the_conv_lrn_kernel_once_a_tower(devices, monkeypatch):
    from alexspec.kernels.nn import layers

    calls = []
    kernel = layers.conv2d_bias_relu_lrn
    monkeypatch.setattr(layers, "conv2d_bias_relu_lrn", lambda *args: calls.append(args[-1]) or kernel(*args))
    net = alexspec.compile(load_text(CROSS_CONV_LRN, "tiny.yaml"), backend="triton", devices=devices,
                           fuse_conv_lrn=True)
    net(torch.randn(2, 1, 8, 8)).sum().backward()
    # lrn_groups: on one device each LRN normalises 2 towers of 4 channels; on two, each tower its own 4
    assert calls == ([2, 2] if len(devices) == 1 else [1, 1, 1, 1])
    assert net.conv1.weight.grad is not None if len(devices) == 1 else net.conv1.parts[0].weight.grad is not None


@pytest.mark.slow
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_specs(), st.sampled_from(list(OPT_INS)))
def test_random_specs_fused_equal_unfused(case, opt_in):
    spec, _ = case
    torch.manual_seed(0)
    for fused_backend, batch in (("torch", 3), ("triton", 1)):  # the interpreter is slow: one image
        fused = alexspec.compile(spec, backend=fused_backend, devices=["cpu"], **OPT_INS[opt_in])
        unfused = alexspec.compile(spec, backend="torch", devices=["cpu"], fuse=False)
        x = torch.randn(batch, *fused.input_shape) * 3
        assert_same_function(fused, unfused, x)


def test_fused_paper_alexnet_equals_unfused():
    torch.manual_seed(0)
    fused = alexspec.compile(SPECS / "alexnet-1gpu.yaml", backend="torch", devices=["cpu"], fuse_lrn_pool=True)
    unfused = alexspec.compile(SPECS / "alexnet-1gpu.yaml", backend="torch", devices=["cpu"], fuse=False)
    assert_same_function(fused, unfused, torch.randn(1, 3, 227, 227))


def test_triton_convs_follow_autocast_like_torch_convs():
    """Under bf16 autocast the Triton conv computes in bf16 as aten's does, and the next layers stay bf16."""
    torch.manual_seed(0)
    triton_net = alexspec.compile(SPECS / "digits.yaml", backend="triton", devices=["cpu"])
    torch_net = alexspec.compile(SPECS / "digits.yaml", backend="torch", devices=["cpu"])
    torch_net.load_state_dict(triton_net.state_dict())
    seen = {}
    triton_net.conv2.register_forward_hook(lambda _m, _i, out: seen.update(conv2=out.dtype))
    x = torch.randn(4, 1, 8, 8) * 4
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outs = [net.eval()(x) for net in (triton_net, torch_net)]
    assert seen["conv2"] == torch.bfloat16 and outs[0].dtype == outs[1].dtype == torch.bfloat16
    torch.testing.assert_close(outs[0].float(), outs[1].float(), rtol=0.05, atol=0.05)
    outs[0].float().sum().backward()
    assert triton_net.conv1.weight.grad.dtype == torch.float32  # master weights stay fp32
