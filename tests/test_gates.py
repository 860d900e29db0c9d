"""Squeeze-and-excitation: `multiply` (a product of one shape, or channels scaled by per-channel
factors) and the hardswish / hardsigmoid activations, held to the same net written by hand with
torch.nn.functional, in one tower and in two, and torchvision's MobileNetV3 and EfficientNet
imported with their documented parameter counts and their logits."""
from __future__ import annotations

import pytest

from conftest import locate, run_cli, with_trained_statistics
from kernel_helpers import torch

import alexspec
from alexspec.builder import load_state
from alexspec.spec import analyse
from alexspec.spec.loader import load_text

F = torch.nn.functional

# A gate from 1x1 convs (C x 1 x 1 factors) and one from a linear layer (C features), as
# MobileNetV3 and the SENet paper write them.
GATED = """\
alexspec: 1
name: gated
input: {channels: 3, height: 8, width: 8}
layers:
  - {name: conv1, type: conv, out: 8, kernel: 3, padding: 1}
  - {name: act1, type: hardswish}
  - {name: squeeze, type: adaptive_avgpool, output: 1}
  - {name: reduce, type: conv, out: 4, kernel: 1, activation: relu}
  - {name: expand, type: conv, out: 8, kernel: 1, activation: hardsigmoid}
  - {name: scaled, type: multiply, inputs: [act1, expand]}
  - {name: pool, type: global_avgpool}
  - {name: gate, type: linear, out: 8}
  - {name: gate_act, type: sigmoid}
  - {name: features, type: multiply, inputs: [gate_act, pool]}
  - {name: fc, type: linear, out: 10, activation: hardswish}
"""


def gated_by_hand(p: dict, x: torch.Tensor) -> torch.Tensor:
    a = F.hardswish(F.conv2d(x, p["conv1.weight"], p["conv1.bias"], padding=1))
    s = F.relu(F.conv2d(F.adaptive_avg_pool2d(a, 1), p["reduce.weight"], p["reduce.bias"]))
    s = F.hardsigmoid(F.conv2d(s, p["expand.weight"], p["expand.bias"]))
    pooled = (a * s).mean(dim=(2, 3))
    gate = torch.sigmoid(F.linear(pooled, p["gate.weight"], p["gate.bias"]))
    return F.hardswish(F.linear(pooled * gate, p["fc.weight"], p["fc.bias"]))


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_a_gated_net_computes_and_differentiates_what_it_does_by_hand(write_spec, backend):
    torch.manual_seed(0)
    module = alexspec.build(write_spec(GATED), backend=backend, devices=["cpu"]).module
    params = dict(module.named_parameters())
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    ours, theirs = module(x), gated_by_hand(params, x)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(ours)
    wrt = [x, params["conv1.weight"], params["expand.bias"], params["gate.weight"]]
    torch.testing.assert_close(torch.autograd.grad(ours, wrt, grad), torch.autograd.grad(theirs, wrt, grad),
                               rtol=1e-4, atol=1e-5)


def test_the_report_infers_the_scaled_shapes_and_the_memory_autograd_saves(write_spec):
    from test_codegen import measured_saved_bytes

    build = alexspec.build(write_spec(GATED), backend="torch", devices=["cpu"], fuse=False)
    shapes = {li.layer.name: li.output_shape for li in build.info.layers}
    assert shapes["scaled"] == (8, 8, 8) and shapes["features"] == (8,)
    x = torch.randn(3, 3, 8, 8)
    predicted = build.info.memory(3, "fp32").training_saved
    assert abs(predicted - measured_saved_bytes(build.module, x)) <= 0.05 * predicted


TWO_TOWERS = """\
alexspec: 1
name: gated_towers
input: {channels: 3, height: 8, width: 8}
towers: 2
layers:
  - {name: conv1, type: conv, out: 8, kernel: 3, padding: 1, activation: relu}
  - {name: squeeze, type: adaptive_avgpool, output: 1}
  - {name: expand, type: conv, out: 8, kernel: 1, activation: sigmoid}
  - {name: scaled, type: multiply, inputs: [conv1, expand]}
  - {name: flatten, type: flatten}
  - {name: fc, type: linear, out: 4, towers: cross}
"""


def two_towers_by_hand(state: dict, x: torch.Tensor) -> torch.Tensor:
    """Each tower's channels scaled by the factors its own half of `expand` computes from them."""
    half = {key: value.chunk(2, 0) for key, value in state.items()}
    towers = []
    for t in range(2):
        a = F.relu(F.conv2d(x, half["conv1.weight"][t], half["conv1.bias"][t], padding=1))
        s = torch.sigmoid(F.conv2d(F.adaptive_avg_pool2d(a, 1), half["expand.weight"][t], half["expand.bias"][t]))
        towers.append((a * s).flatten(1))
    both = torch.cat(towers, 1)
    return torch.cat([F.linear(both, half["fc.weight"][t], half["fc.bias"][t]) for t in range(2)], 1)


@pytest.mark.parametrize("devices", [["cpu"], ["cpu", "cpu"]], ids=["one-device", "device-per-tower"])
def test_each_tower_scales_its_own_channels(write_spec, devices):
    torch.manual_seed(0)
    module = alexspec.build(write_spec(TWO_TOWERS), backend="torch", devices=devices).module
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():  # the state dict holds the one-device layout: tower 0's channels first
        torch.testing.assert_close(module(x), two_towers_by_hand(module.state_dict(), x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("inputs, says", [
    ("[conv1, narrow]", "multiply needs inputs of one shape, or of one C x H x W and C x 1 x 1 or C features: "
                        "conv1 gives 8x8x8, narrow gives 4x1x1"),
    ("[conv1, pool2]", "multiply needs inputs of one shape, or of one C x H x W and C x 1 x 1 or C features: "
                       "conv1 gives 8x8x8, pool2 gives 8x4x4"),
    ("[conv1]", "a multiply layer combines two or more layers"),
])
def test_factors_that_do_not_fit_are_one_located_problem(write_spec, inputs, says):
    text = ("alexspec: 1\nname: g\ninput: {channels: 3, height: 8, width: 8}\nlayers:\n"
            "  - {name: conv1, type: conv, out: 8, kernel: 3, padding: 1}\n"
            "  - {name: pool2, type: maxpool, kernel: 2}\n"
            "  - {name: narrow, type: adaptive_avgpool, output: 1, inputs: conv1}\n"
            "  - {name: narrow4, type: conv, out: 4, kernel: 1, inputs: narrow}\n"
            f"  - {{name: product, type: multiply, inputs: {inputs}}}\n")
    text = text.replace("name: narrow,", "name: narrow_pool,").replace("inputs: narrow}", "inputs: narrow_pool}") \
        .replace("name: narrow4,", "name: narrow,")
    path = write_spec(text)
    result = run_cli("validate", str(path))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    line, col = locate(text, inputs)
    problem = next(row for row in result.stderr.splitlines() if says in row)
    assert problem.startswith(f"{path}:{line}:{col}:"), problem


def test_a_product_of_several_values_of_one_shape_the_image_among_them(write_spec):
    text = ("alexspec: 1\nname: g\ninput: {channels: 3, height: 8, width: 8}\nlayers:\n"
            "  - {name: conv1, type: conv, out: 3, kernel: 3, padding: 1}\n"
            "  - {name: act, type: tanh}\n"
            "  - {name: product, type: multiply, inputs: [conv1, input, act]}\n")
    module = alexspec.build(write_spec(text), backend="torch", devices=["cpu"]).module
    x = torch.randn(2, 3, 8, 8)
    c = F.conv2d(x, module.conv1.weight, module.conv1.bias, padding=1)
    with torch.no_grad():
        torch.testing.assert_close(module(x), c * x * torch.tanh(c))


@pytest.mark.parametrize("name, params", [
    ("mobilenet_v3_small", 2_542_856), ("mobilenet_v3_large", 5_483_032), ("efficientnet_b0", 5_288_548),
    ("regnet_y_400mf", 4_344_144)])
def test_torchvision_s_squeeze_and_excitation_nets_import_with_their_logits(name, params):
    torchvision = pytest.importorskip("torchvision")
    import yaml

    from alexspec.interop.from_torch import spec_from_torch

    torch.manual_seed(0)
    model = with_trained_statistics(getattr(torchvision.models, name)(weights=None).eval())
    imported = spec_from_torch(model, (3, 224, 224), name)
    info = analyse(load_text(yaml.safe_dump(imported.spec, sort_keys=False), f"{name}.yaml"))
    assert info.total_params == params  # torchvision's documented num_params for the weights it ships
    built = alexspec.build(imported.spec, backend="torch", devices=["cpu"])
    load_state(built.module, imported.convert_state_dict(model.state_dict()))
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        ours, theirs = built.module.eval()(x), model(x)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5 * theirs.abs().max().item())  # logits ~0.01
    depth = [m.stochastic_depth.p for m in model.modules() if getattr(m, "use_res_connect", False)  # where called
             and hasattr(m, "stochastic_depth")]
    if depth:
        said = f"Stochastic depth ({len(depth)} blocks, p {min(depth):.3g} to {max(depth):.3g}) is left out"
        assert said in imported.spec["description"]
    assert bool(depth) == bool(imported.training_only)
