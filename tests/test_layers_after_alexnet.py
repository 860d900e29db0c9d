"""The layers of the CNNs that followed AlexNet (batchnorm, more activations, global and adaptive
max pooling) and the specs shipped with them, held to torchvision's counts, the papers' shapes
and torch's own layers."""
from __future__ import annotations

import json

import pytest

from conftest import SPECS, run_cli
from kernel_helpers import torch  # noqa: F401  (skips without torch)

import alexspec
from alexspec.spec import analyse
from alexspec.spec.loader import load_text


@pytest.mark.parametrize("spec, params", [("vgg11-bn.yaml", 132_868_840), ("vgg16.yaml", 138_357_544)])
def test_vgg_specs_have_torchvisions_parameter_counts(spec, params):
    assert analyse(SPECS / spec).total_params == params  # torchvision's published counts


@pytest.mark.parametrize("spec, shapes", [
    ("nin.yaml", {"conv1": (96, 54, 54), "pool1": (96, 26, 26), "pool2": (256, 12, 12), "pool3": (384, 5, 5),
                  "cccp4_2": (10, 5, 5), "gap": (10,)}),  # d2l's NiN
    ("zfnet.yaml", {"conv1": (96, 110, 110), "pool1": (96, 55, 55), "conv2": (256, 26, 26),
                    "pool2": (256, 13, 13), "conv5": (256, 13, 13), "pool5": (256, 6, 6)}),  # Zeiler & Fergus, Fig. 3
])
def test_nin_and_zfnet_have_their_papers_shapes(spec, shapes):
    found = {li.layer.name: li.output_shape for li in analyse(SPECS / spec).layers}
    assert {name: found[name] for name in shapes} == shapes


EVERY_NEW_LAYER = """
alexspec: 1
name: every_new_layer
input: {channels: 3, height: 12, width: 12}
layers:
  - {name: conv1, type: conv, out: 8, kernel: 3, padding: 1, bias: false}
  - {name: bn1, type: batchnorm, eps: 1.0e-3, momentum: 0.2}
  - {name: act1, type: relu6}
  - {name: conv2, type: conv, out: 8, kernel: 3, padding: 1}
  - {name: act2, type: leaky_relu, negative_slope: 0.2}
  - {name: pool, type: adaptive_maxpool, output: [5, 4]}
  - {name: act3, type: tanh}
  - {name: act4, type: sigmoid}
  - {name: act5, type: gelu}
  - {name: act6, type: silu}
  - {name: gap, type: global_maxpool}
  - {name: fc, type: linear, out: 6}
  - {name: bn2, type: batchnorm, affine: false}
"""


def _by_hand():
    """EVERY_NEW_LAYER written with torch's own layers."""
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8, eps=1e-3, momentum=0.2), nn.ReLU6(),
        nn.Conv2d(8, 8, 3, padding=1), nn.LeakyReLU(0.2), nn.AdaptiveMaxPool2d((5, 4)), nn.Tanh(), nn.Sigmoid(),
        nn.GELU(), nn.SiLU(), nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(8, 6), nn.BatchNorm1d(6, affine=False))


def test_the_new_layers_compute_what_torchs_own_layers_do():
    import torch

    built = alexspec.build(load_text(EVERY_NEW_LAYER, "new.yaml"), backend="torch", devices=["cpu"])
    reference = _by_hand()
    assert built.info.total_params == sum(p.numel() for p in reference.parameters()) == 216 + 16 + 584 + 54
    ours = [p for name, p in built.module.state_dict().items() if not name.endswith("num_batches_tracked")]
    theirs = [name for name in reference.state_dict() if not name.endswith("num_batches_tracked")]
    reference.load_state_dict({name: value for name, value in zip(theirs, ours)}, strict=False)
    x = torch.randn(4, 3, 12, 12)
    for mode in ("train", "eval"):  # batch statistics, then the running ones both have updated alike
        getattr(built.module, mode)(), getattr(reference, mode)()
        torch.testing.assert_close(built.module(x), reference(x))
    assert built.module.bn1.running_mean.abs().sum() > 0


def test_an_imported_model_with_the_new_layers_gives_its_logits():
    import torch

    from alexspec.interop.from_torch import spec_from_torch

    torch.manual_seed(0)
    model = _by_hand()
    with torch.no_grad():
        for module in model.modules():  # running statistics as a trained model has them
            if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                module.running_mean.uniform_(-1, 1), module.running_var.uniform_(0.5, 2)
    imported = spec_from_torch(model, (3, 12, 12), "imported")
    types = [layer["type"] for layer in imported.spec["layers"]]
    assert types == ["conv", "batchnorm", "relu6", "conv", "leaky_relu", "adaptive_maxpool", "tanh", "sigmoid",
                     "gelu", "silu", "adaptive_maxpool", "flatten", "linear", "batchnorm"]
    built = alexspec.build(imported.spec, backend="torch", devices=["cpu"])
    alexspec.builder.load_state(built.module, imported.convert_state_dict(model.state_dict()))
    x = torch.randn(3, 3, 12, 12)
    built.module.eval(), model.eval()
    with torch.no_grad():
        torch.testing.assert_close(built.module(x), model(x))


@pytest.mark.slow
def test_batchnorm_statistics_train_into_the_checkpoint_and_the_plot_overlays_two_runs(tmp_path, write_spec):
    import torch

    spec = write_spec((SPECS / "figure1-relu.yaml").read_text().replace(
        "  - {name: conv2,", "  - {name: bn1, type: batchnorm}\n  - {name: conv2,"))
    for name in ("a", "b"):
        result = run_cli("train", str(spec), "--epochs", "1", "-o", str(tmp_path / name))
        assert result.returncode == 0, result.stderr
    saved = torch.load(next((tmp_path / "a" / "checkpoints").glob("step-*.pt")), weights_only=True)
    steps = saved["step"]
    assert steps > 1 and int(saved["model"]["bn1.num_batches_tracked"]) == steps  # one update a training step
    assert saved["model"]["bn1.running_var"].ne(1).any()
    result = run_cli("plot", str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(tmp_path / "both.png"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "both.png").read_bytes()[:4] == b"\x89PNG"
    missing = run_cli("plot", str(tmp_path / "a"), str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "has no metrics.jsonl" in missing.stderr


def test_the_figure_1_pair_is_one_net_with_relu_and_with_tanh():
    relu, tanh = (analyse(SPECS / f"figure1-{kind}.yaml") for kind in ("relu", "tanh"))
    assert relu.total_params == tanh.total_params and relu.output_shape == tanh.output_shape
    assert [li.layer.type for li in tanh.layers].count("tanh") == 3
    assert json.dumps([li.layer.type for li in relu.layers]).count("tanh") == 0


CAFFE_BN = """
name: "bn_net"
input: "data"
input_dim: 1 input_dim: 3 input_dim: 16 input_dim: 16
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 8 kernel_size: 3 pad: 1 bias_term: false } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" batch_norm_param { eps: 0.001 } }
layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "bn2" type: "BatchNorm" bottom: "conv1" top: "conv1" }
layer { name: "tanh1" type: "TanH" bottom: "conv1" top: "conv1" }
layer { name: "fc" type: "InnerProduct" bottom: "conv1" top: "fc" inner_product_param { num_output: 10 } }
"""


def test_caffe_batchnorm_and_its_scale_import_as_one_batchnorm():
    from alexspec.interop.caffe import ImportProblem, spec_from_prototxt

    spec = spec_from_prototxt(CAFFE_BN)
    norms = [layer for layer in spec["layers"] if layer["type"] == "batchnorm"]
    assert [(n["name"], n["eps"], n["momentum"], n.get("affine", True)) for n in norms] == [
        ("bn1", 0.001, 0.001, True), ("bn2", 1e-5, 0.001, False)]  # Caffe's moving_average_fraction 0.999
    assert [layer["type"] for layer in spec["layers"]] == ["conv", "batchnorm", "relu", "batchnorm", "tanh", "flatten",
                                                          "linear"]
    assert alexspec.analyse(load_text(json.dumps(spec), "bn.yaml")).total_params == 216 + 16 + 8 * 16 * 16 * 10 + 10
    with pytest.raises(ImportProblem, match=r"scale1 \(Scale, other than with a bias right after BatchNorm or of "
                                            r"two blobs along axis 0\)"):
        spec_from_prototxt(CAFFE_BN.replace("scale_param { bias_term: true }", ""))


FUSED = """
alexspec: 1
name: fused_activations
input: {channels: 2, height: 9, width: 9}
layers:
  - {name: c_relu6, type: conv, out: 4, kernel: 3, padding: 1, activation: relu6}
  - {name: c_leaky, type: conv, out: 4, kernel: 3, padding: 2, dilation: 2, activation: leaky_relu}
  - {name: c_tanh, type: conv, out: 4, kernel: [3, 1], dilation: [2, 1], activation: tanh, expect: {shape: [4, 5, 9]}}
  - {name: c_sigmoid, type: conv, out: 4, kernel: 1, activation: sigmoid}
  - {name: c_gelu, type: conv, out: 4, kernel: 3, padding: 1, activation: gelu}
  - {name: c_silu, type: conv, out: 4, kernel: 3, padding: 1, activation: silu}
  - {name: flat, type: flatten}
  - {name: fc_gelu, type: linear, out: 6, activation: gelu}
  - {name: fc_tanh, type: linear, out: 3, activation: tanh}
"""


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_fused_activations_and_dilation_compute_what_torch_does(backend):
    import torch
    import torch.nn.functional as F

    built = alexspec.build(load_text(FUSED, "fused.yaml"), backend=backend, devices=["cpu"])
    m = built.module
    x = torch.randn(2, 2, 9, 9, requires_grad=True)
    y = m(x)
    by_hand = F.relu6(F.conv2d(x, m.c_relu6.weight, m.c_relu6.bias, padding=1))
    by_hand = F.leaky_relu(F.conv2d(by_hand, m.c_leaky.weight, m.c_leaky.bias, padding=2, dilation=2), 0.01)
    by_hand = torch.tanh(F.conv2d(by_hand, m.c_tanh.weight, m.c_tanh.bias, dilation=(2, 1)))
    by_hand = torch.sigmoid(F.conv2d(by_hand, m.c_sigmoid.weight, m.c_sigmoid.bias))
    by_hand = F.gelu(F.conv2d(by_hand, m.c_gelu.weight, m.c_gelu.bias, padding=1))
    by_hand = F.silu(F.conv2d(by_hand, m.c_silu.weight, m.c_silu.bias, padding=1))
    by_hand = F.gelu(F.linear(by_hand.flatten(1), m.fc_gelu.weight, m.fc_gelu.bias))
    by_hand = torch.tanh(F.linear(by_hand, m.fc_tanh.weight, m.fc_tanh.bias))
    torch.testing.assert_close(y, by_hand)
    grad = torch.randn_like(y)
    ours = torch.autograd.grad(y, [x, m.c_silu.weight], grad)
    torch.testing.assert_close(ours, torch.autograd.grad(by_hand, [x, m.c_silu.weight], grad))
    shapes = {li.layer.name: li.output_shape for li in built.info.layers}
    assert shapes["c_leaky"] == (4, 9, 9) and shapes["c_tanh"] == (4, 5, 9)  # (9 + 4 - 5) + 1; 9 - 5 + 1
    assert built.info.layers[1].weights == 4 * 4 * 3 * 3  # dilation spreads the taps, it adds none


def test_the_report_names_each_fused_activation_and_dilation(write_spec):
    result = run_cli("report", str(write_spec(FUSED)))
    assert result.returncode == 0, result.stderr
    rows = {line.split("│")[2].strip(): line for line in result.stdout.splitlines() if line.count("│") > 5}
    assert "conv+relu6" in rows["c_relu6"] and "conv+silu" in rows["c_silu"] and "linear+tanh" in rows["fc_tanh"]
    assert "3/1/2 d2" in rows["c_leaky"] and "3x1/1/0 d2x1" in rows["c_tanh"]


def test_an_unknown_fused_activation_lists_the_ones_there_are(write_spec):
    result = run_cli("validate", str(write_spec(FUSED.replace("activation: silu", "activation: swish"))))
    assert result.returncode == 2
    assert "spec.yaml:" in result.stderr.splitlines()[0]
    assert "swish" in result.stderr and "gelu" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("spec, digest", [("alexnet.yaml", "f3a2e5839beac661"), ("digits.yaml", "ee4f3fc6654937dc"),
                                          ("resnet18.yaml", "d15a258e975146f2"),
                                          ("torchvision-alexnet.yaml", "8fdb068a668185c4")])
def test_checkpoints_written_before_activation_keys_still_match_their_spec(spec, digest):
    from alexspec.train.checkpoint import network_hash

    assert network_hash(analyse(SPECS / spec)) == digest  # as version 0.1 wrote them, before `dilation`, the
    # fused activations besides relu and dropout's `channels` (torchvision-alexnet: as written before `channels`)


CHANNEL_DROPOUT = """\
alexspec: 1
name: spatial
input: {channels: 3, height: 6, width: 6}
layers:
  - {name: conv1, type: conv, out: 8, kernel: 3, padding: 1, activation: relu}
  - {name: drop1, type: dropout, p: 0.4, channels: true}
  - {name: flatten, type: flatten}
  - {name: fc, type: linear, out: 5}
"""


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_channel_dropout_zeroes_what_torchs_dropout2d_does(write_spec, backend):
    import torch
    from torch.nn import functional as F

    built = alexspec.build(write_spec(CHANNEL_DROPOUT), backend=backend, devices=["cpu"])
    m, x = built.module, torch.randn(16, 3, 6, 6)
    conv = F.relu(F.conv2d(x, m.conv1.weight, m.conv1.bias, padding=1)).detach()
    torch.manual_seed(1)
    ours = m.train()(x)
    torch.manual_seed(1)  # the same random numbers: the same channels dropped
    theirs = F.linear(torch.nn.Dropout2d(0.4).train()(conv).flatten(1), m.fc.weight, m.fc.bias)
    torch.testing.assert_close(ours, theirs)
    with torch.no_grad():
        torch.testing.assert_close(m.eval()(x), F.linear(conv.flatten(1), m.fc.weight, m.fc.bias))
    assert "drop1 = nn.Dropout2d(0.4)" in built.generated.source.replace("self.", "")


def test_channel_dropout_saves_a_scale_per_channel_and_is_refused_after_the_flatten(write_spec):
    from test_codegen import measured_saved_bytes

    built = alexspec.build(write_spec(CHANNEL_DROPOUT), backend="torch", devices=["cpu"], fuse=False)
    x = torch.randn(4, 3, 6, 6)  # a factor per image and channel, as on a GPU (no fused kernel there either)
    assert built.info.memory(4, "fp32").training_saved == measured_saved_bytes(built.module, x)
    assert [li for li in built.info.layers if li.layer.name == "drop1"][0].saved.extra == ((8, "act"),)
    text = CHANNEL_DROPOUT.replace("p: 0.4, channels: true}\n  - {name: flatten, type: flatten}",
                                   "p: 0.4}\n  - {name: flatten, type: flatten}\n"
                                   "  - {name: drop2, type: dropout, p: 0.1, channels: true}")
    path = write_spec(text, "after.yaml")
    result = run_cli("validate", str(path))
    line = text.count("\n", 0, text.index("channels: true")) + 1
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"{path}:{line}:") and "zeroes whole channels of a C x H x W input, but " \
        "this dropout's input is 288 features; move it before the flatten" in result.stderr, result.stderr
