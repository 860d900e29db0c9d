"""Interop: torch.nn models and Caffe prototxt in, torch.export / ONNX out, spec diffs."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import alexspec  # noqa: E402
from alexspec.builder import load_state, spec_source  # noqa: E402
from alexspec.ir import Softmax  # noqa: E402
from alexspec.interop.caffe import spec_from_prototxt  # noqa: E402
from alexspec.interop.from_torch import ImportProblem, spec_from_torch  # noqa: E402
from alexspec.spec import analyse, load_text  # noqa: E402
from conftest import ROOT, SPECS, run_cli, with_trained_statistics  # noqa: E402


def torchvision_style_alexnet() -> nn.Module:
    """torchvision.models.alexnet's structure, written out with torch.nn (torchvision itself is optional)."""
    class AlexNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
                nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
                nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
                nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
                nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2))
            self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
            self.classifier = nn.Sequential(
                nn.Dropout(0.5), nn.Linear(9216, 4096), nn.ReLU(inplace=True),
                nn.Dropout(0.5), nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Linear(4096, 1000))

        def forward(self, x):
            return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))
    return AlexNet()


def lenet() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Conv2d(16, 120, 5), nn.ReLU(), nn.Flatten(), nn.Linear(120, 84),
                         nn.ReLU(), nn.Linear(84, 10))


@pytest.mark.parametrize("make, shape, params", [(torchvision_style_alexnet, (3, 224, 224), 61_100_840),
                                                 (lenet, (1, 32, 32), 61_706)])
def test_round_trip_gives_the_same_logits(make, shape, params):
    torch.manual_seed(0)
    original = make().eval()
    imported = spec_from_torch(original, shape, "net")
    build = alexspec.build(imported.spec, backend="torch", devices=["cpu"])
    assert build.info.total_params == params
    load_state(build.module, imported.convert_state_dict(original.state_dict()))
    x = torch.randn(2, *shape)
    with torch.no_grad():
        torch.testing.assert_close(build.module.eval()(x), original(x), rtol=1e-5, atol=1e-5)


def test_a_dilated_conv_net_imports_with_its_logits_from_torch_and_its_shapes_from_caffe():
    torch.manual_seed(0)
    atrous = nn.Sequential(nn.Conv2d(3, 8, 3, padding=2, dilation=2), nn.ReLU(),
                           nn.Conv2d(8, 8, 3, dilation=(1, 3)), nn.Flatten(), nn.Linear(8 * 14 * 10, 4)).eval()
    imported = spec_from_torch(atrous, (3, 16, 16), "atrous")
    assert [layer.get("dilation") for layer in imported.spec["layers"][:2]] == [2, [1, 3]]
    build = alexspec.build(imported.spec, backend="torch", devices=["cpu"])
    load_state(build.module, imported.convert_state_dict(atrous.state_dict()))
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(build.module.eval()(x), atrous(x))
    caffe = spec_from_prototxt(CAFFE_ALEXNET.replace("num_output: 384 pad: 1 kernel_size: 3 }",
                                                     "num_output: 384 pad: 2 dilation: 2 kernel_size: 3 }"))
    shapes = {li.layer.name: li.output_shape for li in alexspec.build(caffe, backend="torch", devices=["cpu"]).info.layers}
    assert shapes["conv3"] == (384, 13, 13) and shapes["pool5"] == (256, 6, 6)  # (13 + 4 - 5) + 1: the size kept


def test_torchvision_alexnet_imports_with_floor_rounding_said():
    spec = spec_from_torch(torchvision_style_alexnet(), (3, 224, 224), "tv").spec
    assert spec["rounding"] == "floor"
    assert "55.25 -> 55" in spec["description"]
    lenet_spec = spec_from_torch(lenet(), (1, 32, 32), "lenet").spec
    assert "rounding" not in lenet_spec  # every size divides: no rounding needed


@pytest.mark.parametrize("shape, said", [((3, 32, 32), "expected input[2, 3, 32, 32] to have 1 channels"),
                                          ((1, 4, 4), "Kernel size can't be greater than actual input size")])
def test_an_input_shape_the_model_does_not_take_is_said_as_such(shape, said):
    model = lenet()  # 1x32x32 in; before, these were a weights mismatch or a problem in an unseen spec
    with pytest.raises(ImportProblem) as caught:
        spec_from_torch(model, shape, "lenet")
    assert f"the model does not run on {'x'.join(map(str, shape))} inputs (" in str(caught.value)
    assert said in str(caught.value) and str(caught.value).endswith("give its input shape with --input C,H,W")
    assert model.training  # left in the mode it came in


def test_unsupported_layers_are_named():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.InstanceNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 30 * 30, 2))
    with pytest.raises(ImportProblem, match=r"1 \(InstanceNorm2d\)"):
        spec_from_torch(model, (3, 32, 32), "instance_norm")


CAFFE_ALEXNET = """
name: "AlexNet"
layer { name: "data" type: "Input" top: "data" input_param { shape: { dim: 10 dim: 3 dim: 227 dim: 227 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 96 kernel_size: 11 stride: 4 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "norm1" type: "LRN" bottom: "conv1" top: "norm1" lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 } }
layer { name: "pool1" type: "Pooling" bottom: "norm1" top: "pool1" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
        convolution_param { num_output: 256 pad: 2 kernel_size: 5 group: 2 } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "norm2" type: "LRN" bottom: "conv2" top: "norm2" lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 } }
layer { name: "pool2" type: "Pooling" bottom: "norm2" top: "pool2" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "conv3" type: "Convolution" bottom: "pool2" top: "conv3" convolution_param { num_output: 384 pad: 1 kernel_size: 3 } }
layer { name: "relu3" type: "ReLU" bottom: "conv3" top: "conv3" }
layer { name: "conv4" type: "Convolution" bottom: "conv3" top: "conv4"
        convolution_param { num_output: 384 pad: 1 kernel_size: 3 group: 2 } }
layer { name: "relu4" type: "ReLU" bottom: "conv4" top: "conv4" }
layer { name: "conv5" type: "Convolution" bottom: "conv4" top: "conv5"
        convolution_param { num_output: 256 pad: 1 kernel_size: 3 group: 2 } }
layer { name: "relu5" type: "ReLU" bottom: "conv5" top: "conv5" }
layer { name: "pool5" type: "Pooling" bottom: "conv5" top: "pool5" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "fc6" type: "InnerProduct" bottom: "pool5" top: "fc6" inner_product_param { num_output: 4096 } }
layer { name: "relu6" type: "ReLU" bottom: "fc6" top: "fc6" }
layer { name: "drop6" type: "Dropout" bottom: "fc6" top: "fc6" dropout_param { dropout_ratio: 0.5 } }
layer { name: "fc7" type: "InnerProduct" bottom: "fc6" top: "fc7" inner_product_param { num_output: 4096 } }
layer { name: "relu7" type: "ReLU" bottom: "fc7" top: "fc7" }
layer { name: "drop7" type: "Dropout" bottom: "fc7" top: "fc7" dropout_param { dropout_ratio: 0.5 } }
layer { name: "fc8" type: "InnerProduct" bottom: "fc7" top: "fc8" inner_product_param { num_output: 1000 } }
layer { name: "prob" type: "Softmax" bottom: "fc8" top: "prob" }
"""


def test_caffe_alexnet_imports_to_the_paper_numbers(tmp_path):
    (tmp_path / "deploy.prototxt").write_text(CAFFE_ALEXNET)
    result = run_cli("import", "caffe", str(tmp_path / "deploy.prototxt"), "-o", str(tmp_path / "caffe.yaml"))
    assert result.returncode == 0, result.stderr
    info = analyse(tmp_path / "caffe.yaml")
    assert info.total_params == 60_965_224
    shapes = {li.layer.name: li.output_shape for li in info.layers}
    assert (shapes["conv1"], shapes["pool1"], shapes["conv2"], shapes["pool2"], shapes["conv3"], shapes["pool5"]) == \
        ((96, 55, 55), (96, 27, 27), (256, 27, 27), (256, 13, 13), (384, 13, 13), (256, 6, 6))
    norm1 = next(li.layer for li in info.layers if li.layer.name == "norm1")
    assert norm1.convention == "paper" and norm1.alpha == pytest.approx(1e-4 / 5) and norm1.k == 1.0
    assert "divided by local_size 5" in yaml.safe_load((tmp_path / "caffe.yaml").read_text())["layers"][1]["note"]
    assert isinstance(info.network.layers[-1], Softmax)


def test_caffe_lrn_conversion_computes_caffe_s_function():
    spec = spec_from_prototxt(CAFFE_ALEXNET)
    lrn = next(layer for layer in spec["layers"] if layer["type"] == "lrn")
    x = torch.randn(1, 8, 3, 3, dtype=torch.float64) * 10
    from alexspec.kernels.ops import reference
    caffe = reference.lrn(x, 5, 1e-4, 0.75, 1.0, convention="caffe")  # Caffe: k + alpha/n * sum
    torch.testing.assert_close(reference.lrn(x, lrn["size"], lrn["alpha"], lrn["beta"], lrn["k"], "paper"), caffe)


def test_caffe_problems_are_named():
    text = CAFFE_ALEXNET.replace('type: "LRN" bottom: "conv1"', 'type: "Deconvolution" bottom: "conv1"')
    with pytest.raises(ImportProblem, match=r"norm1 \(Deconvolution\)"):
        spec_from_prototxt(text)
    with pytest.raises(ImportProblem, match="no input shape"):
        spec_from_prototxt('layer { name: "fc" type: "InnerProduct" inner_product_param { num_output: 2 } }')
    with pytest.raises(ImportProblem, match="layer norm1: lrn_param.local_size must be a whole number of channels, "
                                            "1 or more, got 0"):
        spec_from_prototxt(CAFFE_ALEXNET.replace("local_size: 5", "local_size: 0", 1))
    relu_reading_the_last = CAFFE_ALEXNET.replace('type: "ReLU" bottom: "conv1" top: "conv1"', 'type: "ReLU"')
    assert spec_from_prototxt(relu_reading_the_last)["layers"][0]["activation"] == "relu"  # a bottom-less ReLU


CONV_8X8 = ('input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8\nlayer {{ name: "c" type: "Convolution" '
            'convolution_param {{ num_output: 4 {} }} }}')


@pytest.mark.parametrize("window, torch_conv", [
    ("kernel_size: 3 pad: 1 pad: 2", dict(kernel_size=3, padding=(1, 2))),  # repeated: height, then width
    ("kernel_size: 3 kernel_size: 5 stride: 2 stride: 1", dict(kernel_size=(3, 5), stride=(2, 1))),
    ("kernel_h: 1 kernel_w: 3 pad_h: 0 pad_w: 1", dict(kernel_size=(1, 3), padding=(0, 1))),
    ("kernel_size: 3 pad: 1", dict(kernel_size=3, padding=1)),
])
def test_a_caffe_conv_window_given_per_side_imports_as_caffe_reads_it(window, torch_conv):
    spec = spec_from_prototxt(CONV_8X8.format(window))
    info = analyse(spec_source(spec))
    expected = torch.nn.Conv2d(3, 4, **torch_conv)(torch.zeros(1, 3, 8, 8)).shape[1:]
    assert info.layers[0].output_shape == tuple(expected)
    assert info.layers[0].params == sum(p.numel() for p in torch.nn.Conv2d(3, 4, **torch_conv).parameters())


@pytest.mark.parametrize("text, said", [
    ('name: "x"\nlayer { name: "fc"\n', "x.prototxt:2:7: this '{' is never closed; close it with '}'"),
    ('name: "x"\n  }\n', "x.prototxt:2:3: this '}' closes no '{'; remove it"),
    ('name: "x"\n: 3\n', "x.prototxt:2:1: unexpected ':'; a field name was expected (name: value, or name { ... })"),
    ('name: "x"\n', "x.prototxt: the prototxt gives no input shape"),
    ("layer: 3\n", "x.prototxt: layer must be a message (layer { ... }), got 3"),
    ('input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8\nlayer { name: "c" type: "Convolution" '
     'convolution_param { num_output: "x" kernel_size: 3 } }', "x.prototxt: layer c: convolution_param.num_output must "
                                                              "be a number, got 'x'"),
    ('input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8\nlayer { name: "c" type: "Convolution" '
     'convolution_param { num_output: 0 kernel_size: 3 } }', "x.prototxt: the network makes no valid spec: "
                                                            "layers[0].c.out: must be at least 1, got 0"),
    (CONV_8X8.format("kernel_size: 3 pad: 1 pad: 1 pad: 1"), "x.prototxt: layer c: convolution_param.pad is given 3 "
     "times; a 2-D convolution takes it once (both sides) or twice (height, width)"),
    (CONV_8X8.format("kernel_size: 3 dilation: 1 dilation: 2 dilation: 2"), "x.prototxt: layer c: convolution_param."
     "dilation is given 3 times; a 2-D convolution takes it once (both sides) or twice (height, width)"),
    (CONV_8X8.format("kernel_h: 3"), "x.prototxt: layer c: convolution_param.kernel_h and kernel_w go together: give "
     "both, or kernel_size for both sides"),
    (CONV_8X8.format("kernel_size: 3 stride_h: 1 stride_w: 2 stride: 1"), "x.prototxt: layer c: convolution_param."
     "give stride or stride_h/stride_w, not both"),
    ('input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8\nlayer { name: "p" type: "Pooling" '
     'pooling_param { pool: MAX kernel_size: 2 kernel_size: 3 } }', "x.prototxt: layer p: pooling_param.kernel_size "
                                                                     "is given 2 times; it takes one value"),
    (b"\x08\x01\x12\xff\xfe weights", "x.prototxt: not UTF-8 text; give the network's prototxt (a .caffemodel "
                                     "holds weights, not the network)")])
def test_a_prototxt_that_does_not_parse_or_fit_is_located(tmp_path, text, said):
    (tmp_path / "x.prototxt").write_bytes(text if isinstance(text, bytes) else text.encode())
    result = run_cli("import", "caffe", "x.prototxt", "-o", "x.yaml", cwd=tmp_path)
    assert result.returncode == 2 and f"alexspec import: {said}" in result.stderr, result.stderr
    assert not (tmp_path / "x.yaml").exists()


PROTOTXT_WORDS = ["{", "}", ":", '"x"', "3", "0", "-1", "2.5", "1e9", "layer", "name", "type", "bottom", "top",
                  '"Convolution"', '"Pooling"', '"InnerProduct"', '"Concat"', '"Eltwise"', '"BatchNorm"', '"Scale"',
                  "convolution_param", "pooling_param", "num_output", "kernel_size", "stride", "pad", "group",
                  "input_dim", "input_shape", "dim", "pool", "MAX", "global_pooling", "true", '"data"', '"conv1"']


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["delete", "insert", "replace"]), st.integers(0, 10 ** 6),
                          st.sampled_from(PROTOTXT_WORDS)), min_size=1, max_size=4))
def test_edited_prototxts_import_or_raise_only_import_problems(edits):
    tokens = re.findall(r'"[^"]*"|[{}:]|[^\s{}:]+', CAFFE_ALEXNET)
    for edit, at, word in edits:
        at %= len(tokens)
        if edit == "delete":
            del tokens[at]
        else:
            tokens[at:at + (edit == "replace")] = [word]
    try:
        spec = spec_from_prototxt(" ".join(tokens))
    except ImportProblem as problem:
        assert "\n" not in str(problem) and "<dict>" not in str(problem)
    else:
        assert spec["layers"]


class SqueezeExcite(nn.Module):
    """A squeeze-and-excitation gate as torchvision writes it (its factors first or second)."""

    def __init__(self, channels: int, squeezed: int, gate: nn.Module, factors_first: bool):
        super().__init__()
        self.pool, self.fc1, self.fc2 = nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, squeezed, 1), \
            nn.Conv2d(squeezed, channels, 1)
        self.gate, self.factors_first = gate, factors_first

    def forward(self, x):
        scale = self.gate(self.fc2(torch.relu(self.fc1(self.pool(x)))))
        return scale * x if self.factors_first else x * scale


@st.composite
def torch_sequentials(draw):
    """A random nn.Sequential of the layers import reads, on a small image, with its input shape."""
    channels, size = draw(st.integers(1, 4)), draw(st.integers(4, 10))
    layers, shape = [], (channels, size, size)
    for _ in range(draw(st.integers(1, 5))):
        c, h, _ = shape
        kind = draw(st.sampled_from(["conv", "pool", "bn", "lrn", "act", "adaptive", "drop", "gate"]))
        if kind == "conv":
            kernel, out = draw(st.integers(1, min(3, h))), draw(st.integers(1, 6))
            groups = draw(st.sampled_from([g for g in (1, 2) if c % g == 0 and out % g == 0]))
            layer = nn.Conv2d(c, out, kernel, draw(st.integers(1, 2)), draw(st.integers(0, kernel // 2)),
                              dilation=draw(st.integers(1, 2)) if kernel * 2 <= h else 1, groups=groups,
                              bias=draw(st.booleans()))
        elif kind == "pool" and h >= 2:
            kernel = draw(st.integers(1, 2))
            layer = draw(st.sampled_from([nn.MaxPool2d, nn.AvgPool2d]))(
                kernel, draw(st.integers(1, 2)), draw(st.integers(0, kernel // 2)), ceil_mode=draw(st.booleans()))
        elif kind == "bn":
            layer = nn.BatchNorm2d(c)
        elif kind == "lrn":
            layer = nn.LocalResponseNorm(draw(st.integers(1, 5)))
        elif kind == "adaptive":
            layer = draw(st.sampled_from([nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d]))(draw(st.integers(1, 3)))
        elif kind == "drop":
            layer = draw(st.sampled_from([nn.Dropout, nn.Dropout2d]))(0.3)
        elif kind == "gate":
            layer = SqueezeExcite(c, draw(st.integers(1, 4)), draw(st.sampled_from([nn.Sigmoid, nn.Hardsigmoid]))(),
                                  draw(st.booleans()))
        elif kind == "act":
            layer = draw(st.sampled_from([nn.ReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, nn.ReLU6, nn.LeakyReLU,
                                           nn.Hardswish, nn.Hardsigmoid]))()
        else:
            continue
        shape = tuple(layer(torch.zeros(2, *shape)).shape[1:])  # 2: a batchnorm of a 1x1 map trains on two
        layers.append(layer)
    layers += [nn.Flatten(), nn.Linear(shape[0] * shape[1] * shape[2], draw(st.integers(1, 5)))]
    return nn.Sequential(*layers), (channels, size, size)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(torch_sequentials())
def test_random_models_of_the_layers_import_reads_import_with_their_logits_and_parameters(case):
    model, shape = with_trained_statistics(case[0]), case[1]
    imported = spec_from_torch(model, shape, "net")  # refused unless the built spec gives the model's logits
    info = analyse(load_text(yaml.safe_dump(imported.spec, sort_keys=False), "net.yaml"))
    assert info.total_params == sum(p.numel() for p in model.parameters())
    assert_same_logits(imported, model, shape)


@pytest.mark.slow
def test_import_cli_from_a_python_factory_with_weights(tmp_path):
    (tmp_path / "mynets.py").write_text("from torch import nn\n"
                                        "def LeNet():\n    return nn.Sequential(" + ", ".join([
                                            "nn.Conv2d(1, 6, 5)", "nn.ReLU()", "nn.MaxPool2d(2)", "nn.Flatten()",
                                            "nn.Linear(6 * 14 * 14, 10)"]) + ")\n")
    import os
    import subprocess
    import sys
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    result = subprocess.run([sys.executable, "-m", "alexspec", "import", "python:mynets:LeNet", "--input", "1,32,32",
                             "-o", str(tmp_path / "lenet.yaml"), "--weights-out", str(tmp_path / "w.pt")],
                            cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    result = run_cli("export", str(tmp_path / "lenet.yaml"), "--checkpoint", str(tmp_path / "w.pt"),
                     "-o", str(tmp_path / "lenet.pt2"))
    assert result.returncode == 0, result.stderr


def test_import_finds_a_module_in_the_current_folder_and_says_what_the_users_code_raised(tmp_path):
    import subprocess
    import sys

    (tmp_path / "mynets.py").write_text("from torch import nn\n"
                                        "def Small():\n    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten())\n"
                                        "class NeedsArgs(nn.Module):\n    def __init__(self, n):\n"
                                        "        super().__init__()\n"
                                        "def Five():\n    return 5\nSIZE = 3\nmodel = Small()\n")
    (tmp_path / "raises.py").write_text("x = 1\nraise RuntimeError('no GPU here')\n")
    (tmp_path / "broken.py").write_text("def f(:\n")
    console = Path(sys.executable).with_name("alexspec")  # the installed command: its sys.path lacks the folder
    done = subprocess.run([str(console), "import", "python:mynets:Small", "--input", "1,5,5", "-o", "small.yaml"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert yaml.safe_load((tmp_path / "small.yaml").read_text())["layers"][0]["out"] == 2
    assert run_cli("import", "python:mynets:model", "--input", "1,5,5", "-o", "made.yaml", cwd=tmp_path).returncode == 0
    made, small = (yaml.safe_load((tmp_path / name).read_text()) for name in ("made.yaml", "small.yaml"))
    assert made["layers"] == small["layers"]  # a model the module made already is taken as it is
    for source, said in [
            ("mynets:NeedsArgs", "mynets:NeedsArgs() raised TypeError: NeedsArgs.__init__() missing 1 required "
                                 "positional argument: 'n'; the callable must make the model with no arguments"),
            ("mynets:Five", "mynets:Five() returned an object of type int, not a torch.nn.Module"),
            ("mynets:SIZE", "python:mynets:SIZE is an object of type int, not a model or a callable that makes one"),
            ("mynets:Nope", f"cannot load mynets:Nope: mynets ({tmp_path / 'mynets.py'}) has no 'Nope'"),
            ("raises:f", f"cannot load raises:f: importing raises raised RuntimeError: no GPU here "
                         f"({tmp_path / 'raises.py'}:2)"),
            ("broken:f", f"importing broken raised SyntaxError: invalid syntax ({tmp_path / 'broken.py'}:1)"),
            ("nomodule:f", "cannot load nomodule:f: No module named 'nomodule' (modules are looked for in the "
                           "current folder and on PYTHONPATH)")]:
        result = run_cli("import", f"python:{source}", "-o", "x.yaml", cwd=tmp_path)
        assert result.returncode == 2 and said in result.stderr, result.stderr
        assert "Traceback" not in result.stderr and not (tmp_path / "x.yaml").exists()


def test_import_never_writes_its_spec_or_weights_over_a_file_of_another_kind(tmp_path):
    source = "from torch import nn\ndef Small():\n    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten())\n"
    (tmp_path / "mynets.py").write_text(source)
    (tmp_path / "deploy.prototxt").write_text('name: "x"\n')
    for args, said in [(["python:mynets:Small", "-o", "mynets.py"], "-o mynets.py: the spec is YAML; name it .yaml"),
                       (["caffe", "deploy.prototxt", "-o", "deploy.prototxt"], "-o deploy.prototxt: the spec is YAML"),
                       (["python:mynets:Small", "-o", "s.yaml", "--weights-out", "mynets.py"],
                        "--weights-out mynets.py: the weights are a checkpoint; name it .pt or .pth")]:
        result = run_cli("import", *args, "--input", "1,5,5", cwd=tmp_path)
        assert result.returncode == 2 and said in result.stderr, result.stderr
    # before: the model's source became the spec (or the checkpoint), and the prototxt its spec
    assert (tmp_path / "mynets.py").read_text() == source
    assert (tmp_path / "deploy.prototxt").read_text() == 'name: "x"\n'
    assert not (tmp_path / "s.yaml").exists()


def test_import_writes_again_only_over_its_own_outputs(tmp_path):
    import torch

    (tmp_path / "mynets.py").write_text("from torch import nn\n"
                                        "def Small():\n    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten())\n")
    again = ["import", "python:mynets:Small", "--input", "1,5,5", "-o", "s.yaml", "--weights-out", "w.pt"]
    for _ in range(2):  # an import's own spec and weights are written again
        result = run_cli(*again, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    (tmp_path / "mine.yaml").write_text("alexspec: 1  # my own net\n")
    trained = {"model": {"0.weight": torch.ones(2, 1, 3, 3)}, "step": 500}
    torch.save(trained, tmp_path / "trained.pt")
    before = (tmp_path / "trained.pt").read_bytes()
    for args, said in [(["-o", "mine.yaml"], "-o mine.yaml: a spec that alexspec import did not write is there"),
                       (["-o", "s2.yaml", "--weights-out", "trained.pt"],
                        "--weights-out trained.pt: weights that alexspec import did not write are there")]:
        result = run_cli("import", "python:mynets:Small", "--input", "1,5,5", *args, cwd=tmp_path)
        assert result.returncode == 2 and said in result.stderr, result.stderr
    assert (tmp_path / "mine.yaml").read_text() == "alexspec: 1  # my own net\n"
    assert (tmp_path / "trained.pt").read_bytes() == before and not (tmp_path / "s2.yaml").exists()


def test_import_keeps_a_spec_edited_since_it_wrote_it(tmp_path):
    (tmp_path / "mynets.py").write_text("from torch import nn\n"
                                        "def Small():\n    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten())\n")
    again = ["import", "python:mynets:Small", "--input", "1,5,5", "-o", "s.yaml"]
    assert run_cli(*again, cwd=tmp_path).returncode == 0
    spec = tmp_path / "s.yaml"
    edited = spec.read_text().replace("name: small", "name: small_edited")
    assert edited != spec.read_text()
    spec.write_text(edited)
    refused = run_cli(*again, cwd=tmp_path)
    assert refused.returncode == 2 and "-o s.yaml: the spec there was edited since alexspec import wrote it" in \
        refused.stderr, refused.stderr
    assert spec.read_text() == edited
    assert run_cli("validate", "s.yaml", cwd=tmp_path).returncode == 0  # the note is a comment: the spec still loads


def test_a_module_alexspec_compiled_is_sent_back_to_its_spec(tmp_path):
    # before, its layers were traced into and refused as "conv1_weight (get_attr conv1.weight) reads no value"
    assert run_cli("compile", "digits", "-o", str(tmp_path / "build")).returncode == 0
    result = run_cli("import", "python:build.digits:Digits", "--input", "1,8,8", "-o", "x.yaml", cwd=tmp_path)
    assert result.returncode == 2 and not (tmp_path / "x.yaml").exists()
    assert "the model was compiled by alexspec (it is made of alexspec's own layers: Conv2d, LRN, Linear, " \
           "MaxPool2d); the spec it was compiled from (digits.yaml) describes it" in result.stderr, result.stderr
    with pytest.raises(ImportProblem, match="compiled by alexspec"):  # one alexspec.build made
        spec_from_torch(alexspec.build("lenet5", backend="torch", devices=["cpu"]).module, (1, 32, 32), "x")


def test_a_model_using_alexspecs_kernel_layers_is_told_the_torch_layers_that_import():
    from alexspec.kernels import layers

    model = nn.Sequential(nn.Conv2d(1, 4, 3), layers.LRN(5), nn.Flatten(), nn.Linear(144, 10))
    with pytest.raises(ImportProblem, match=r"the model uses alexspec.kernels' layers \(LRN\), which import does "
                                            r"not read; write them as torch.nn layers"):
        spec_from_torch(model, (1, 8, 8), "x")


@pytest.mark.slow
def test_torch_export_runs_like_the_module(tmp_path):
    run = run_cli("train", "digits", "--epochs", "1", "--out", str(tmp_path / "run"))
    assert run.returncode == 0, run.stderr
    ckpt = tmp_path / "run" / "checkpoints" / "best.pt"
    result = run_cli("export", "digits", "--checkpoint", str(ckpt), "-o",
                     str(tmp_path / "digits.pt2"))
    assert result.returncode == 0, result.stderr
    program = torch.export.load(str(tmp_path / "digits.pt2"))
    module = alexspec.compile(SPECS / "digits.yaml", backend="torch", devices=["cpu"])
    from alexspec.train import checkpoint
    load_state(module, checkpoint.load(ckpt)["model"])
    x = torch.randn(1, 1, 8, 8)
    torch.testing.assert_close(program.module()(x), module.eval()(x), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_onnx_export_runs_like_the_module(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    result = run_cli("export", "alexnet-1gpu", "--format", "onnx", "-o", str(tmp_path / "a.onnx"))
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr  # the exporter's note on the LRN's padding is not the user's problem
    torch.manual_seed(0)  # the export used the spec's initialisation: compare on the same weights
    from alexspec.interop.export import export
    module_file = tmp_path / "b.onnx"
    torch.manual_seed(1)
    export(SPECS / "alexnet-1gpu.yaml", None, "onnx", module_file)
    torch.manual_seed(1)
    module = alexspec.compile(SPECS / "alexnet-1gpu.yaml", backend="torch", devices=["cpu"]).eval()
    x = torch.randn(1, 3, 227, 227)
    session = ort.InferenceSession(str(module_file), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"images": x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(out), module(x), rtol=1e-4, atol=1e-5)


def test_an_onnx_export_says_what_it_wrote_and_nothing_else(tmp_path):
    pytest.importorskip("onnx")
    result = run_cli("export", "digits", "-o", str(tmp_path / "digits.onnx"))
    assert result.returncode == 0 and result.stdout.endswith("(onnx)\n"), result.stderr
    assert result.stderr == ""  # no exporter warnings about the LRN's padding
    assert (tmp_path / "digits.onnx").stat().st_size > 4 * 43_786  # digits' 43,786 fp32 weights are in it


def test_an_export_carries_the_names_of_the_classes_it_was_trained_on(tmp_path):
    onnx = pytest.importorskip("onnx")
    assert run_cli("train", "--max-steps", "1", "-o", str(tmp_path / "run")).returncode == 0
    digits = [str(digit) for digit in range(10)]  # the digits' labels, named as load_digits numbers them
    result = run_cli("export", str(tmp_path / "run"), "-o", str(tmp_path / "m.pt2"))
    assert result.returncode == 0, result.stderr
    assert "the names of its 10 outputs, the classes it was trained on (0, 1, 2, 3, 4, ... (5 more))" in result.stdout
    from alexspec.interop.export import export
    said = []
    export(tmp_path / "run" / "spec.yaml", tmp_path / "run", "onnx", tmp_path / "m.onnx", log=said.append)
    assert "are in its metadata 'classes' (a JSON list)" in said[-1]
    extra = {"classes.json": ""}
    torch.export.load(str(tmp_path / "m.pt2"), extra_files=extra)
    assert json.loads(extra["classes.json"]) == digits
    metadata = {entry.key: entry.value for entry in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert json.loads(metadata["classes"]) == digits


def test_an_export_of_a_net_with_more_outputs_than_classes_says_which_outputs_are_named(tmp_path):
    from PIL import Image

    for split in ("train", "val"):
        for name in ("cat", "dog"):
            (tmp_path / "pets" / split / name).mkdir(parents=True)
            Image.new("L", (8, 8), 40 if name == "cat" else 200).save(tmp_path / "pets" / split / name / "1.png")
    result = run_cli("train", "--data", str(tmp_path / "pets"), "--max-steps", "1", "-o", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr  # digits outputs 10; the data has 2 classes
    result = run_cli("export", str(tmp_path / "run"), "-o", str(tmp_path / "m.pt2"))
    assert result.returncode == 0, result.stderr
    assert "the names of the first 2 of its 10 outputs (the rest were never a label), the classes it was trained " \
        "on (cat, dog), are in its extra file" in result.stdout


@pytest.mark.parametrize("fmt, writer", [("torch-export", "torch.export.save"), ("onnx", "torch.onnx.export")])
def test_a_failed_export_leaves_the_file_it_would_replace(tmp_path, monkeypatch, fmt, writer):
    from alexspec.interop.export import export

    def breaks(*args, **kwargs):  # writes part of the program, then fails (a full disk, Ctrl-C)
        file = args[1] if fmt == "torch-export" else args[2]
        file.write(b"half a program")
        raise RuntimeError("disk full")

    monkeypatch.setattr(writer, breaks)
    out = tmp_path / "digits.model"
    out.write_bytes(b"an earlier export")
    with pytest.raises(RuntimeError, match="disk full"):
        export(SPECS / "digits.yaml", None, fmt, out)
    assert out.read_bytes() == b"an earlier export" and list(tmp_path.iterdir()) == [out]


def test_diff_names_exactly_the_changed_layers():
    result = run_cli("diff", "alexnet", "alexnet-1gpu", "--format", "json")
    data = json.loads(result.stdout)
    assert data["changed"] == [] and data["network"] == {"towers": [2, 1]}
    data = json.loads(run_cli("diff", "alexnet", "caffe-alexnet", "--format", "json").stdout)
    changed = {layer["name"]: set(layer["fields"]) for layer in data["changed"]}
    # the paper's groups against Caffe's ungrouped convs, k=2 against k=1, init: and nothing else
    assert {"conv2", "conv4", "conv5"} <= set(changed) and "groups" in changed["conv2"] and "params" in changed["conv2"]
    assert changed["norm1"] == {"k", "convention", "groups"}  # per-tower LRN; alpha is 1e-4 in both
    assert "conv3" in changed and changed["conv3"] == {"init"}
    data = json.loads(run_cli("diff", "alexnet", "torchvision-alexnet", "--format", "json").stdout)
    assert [layer["name"] for layer in data["only_in_a"]] == ["norm1", "norm2"]
    assert [layer["name"] for layer in data["only_in_b"]] == ["avgpool", "drop6", "drop7"]
    text = run_cli("diff", "alexnet", "torchvision-alexnet").stdout
    assert "conv1.out" in text and "96" in text and "64" in text
    same = run_cli("diff", "alexnet", "alexnet", "--exit-code")
    assert same.returncode == 0 and "the same network" in same.stdout
    assert run_cli("diff", "alexnet", "lenet5", "--exit-code").returncode == 1


def test_diff_names_the_training_keys_that_differ_and_that_alone_is_a_difference(tmp_path):
    spec = (SPECS / "digits.yaml").read_text()
    (tmp_path / "a.yaml").write_text(spec)
    (tmp_path / "b.yaml").write_text(spec.replace("lr: 0.1", "lr: 0.05").replace("type: cosine", "type: constant"))
    result = run_cli("diff", str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml"), "--exit-code")
    assert result.returncode == 1, result.stdout  # before: "describe the same network", exit 0
    rows = [line.split() for line in result.stdout.splitlines()]
    assert rows[1:] == [["training.lr", "0.1", "0.05"], ["training.schedule.type", "cosine", "constant"],
                        "the same network; their training differs".split()]
    data = json.loads(run_cli("diff", str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml"), "-f", "json").stdout)
    assert data["training"] == {"training.lr": [0.1, 0.05], "training.schedule.type": ["cosine", "constant"]}
    assert data["same_network"] and not data["same"]
    (tmp_path / "c.yaml").write_text(spec.replace("  epochs: 20\n", "  epochs: 90\n"))  # 90: the default
    (tmp_path / "d.yaml").write_text(spec.replace("  epochs: 20\n", ""))
    same = run_cli("diff", str(tmp_path / "c.yaml"), str(tmp_path / "d.yaml"), "--exit-code")
    assert same.returncode == 0 and same.stdout.endswith("describe the same network, trained alike\n"), same.stdout
    assert run_cli("train", "--epochs", "3", "--max-steps", "1", "-o", str(tmp_path / "run")).returncode == 0
    result = run_cli("diff", str(tmp_path / "run"), "digits")  # its spec says 20 epochs; it ran 3 (--epochs)
    assert [line.split() for line in result.stdout.splitlines()][1] == ["training.epochs", "3", "20"], result.stdout


def test_diff_names_a_layer_that_moved():
    # AlexNet normalises before pooling, ZFNet after: the same LRN layers at another place
    data = json.loads(run_cli("diff", "alexnet", "zfnet", "--format", "json").stdout)
    moved = {layer["name"]: layer for layer in data["moved"]}
    assert set(moved) == {"norm1", "norm2"} and moved["norm1"]["after"] == ["conv1", "pool1"]
    assert moved["norm2"]["fields"]["output_shape"] == [[256, 27, 27], [256, 13, 13]]
    assert data["only_in_a"] == [] and data["only_in_b"] == []
    result = run_cli("diff", "alexnet", "zfnet", "--exit-code")
    assert result.returncode == 1 and result.stdout.rstrip().endswith("moved: norm1, norm2; their training differs")
    assert "norm1.after" in result.stdout and "only in" not in result.stdout


class Fire(nn.Module):
    """SqueezeNet's Fire module: a squeeze conv, then two expand convs whose outputs are concatenated."""

    def __init__(self, cin: int, squeeze: int, expand: int):
        super().__init__()
        self.squeeze, self.relu = nn.Conv2d(cin, squeeze, 1), nn.ReLU()
        self.expand1, self.expand3 = nn.Conv2d(squeeze, expand, 1), nn.Conv2d(squeeze, expand, 3, padding=1)

    def forward(self, x):
        x = self.relu(self.squeeze(x))
        return torch.cat([self.expand1(x), self.expand3(x)], 1)


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.flat, self.fc = nn.Conv2d(3, 3, 3, padding=1), nn.Flatten(), nn.Linear(3 * 8 * 8, 10)

    def forward(self, x):
        return self.fc(self.flat(x + self.conv(x)))


class Reordered(nn.Module):
    """Layers registered in another order than the forward runs them."""

    def __init__(self):
        super().__init__()
        self.fc, self.pool, self.conv = nn.Linear(6 * 4 * 4, 10), nn.MaxPool2d(2), nn.Conv2d(1, 6, 3, padding=1)

    def forward(self, x):
        x = self.pool(torch.relu(self.conv(x)))
        return self.fc(x.view(x.size(0), -1))


class Gated(nn.Module):
    def __init__(self, gate_channels=3):
        super().__init__()
        self.conv, self.flat = nn.Conv2d(3, gate_channels, 3, padding=1), nn.Flatten()

    def forward(self, x):
        return self.flat(x * self.conv(x))


def assert_same_logits(imported, model, shape):
    """The spec built and loaded with the model's converted weights gives the model's logits."""
    built = alexspec.build(imported.spec, backend="torch", devices=["cpu"])
    load_state(built.module, imported.convert_state_dict(model.state_dict()))
    x = torch.randn(2, *shape)
    with torch.no_grad():
        torch.testing.assert_close(built.module.eval()(x), model.eval()(x))


@pytest.mark.parametrize("model, merges", [
    (nn.Sequential(Fire(3, 4, 8), nn.Flatten(), nn.Linear(16 * 8 * 8, 10)), {"concat1": ["conv2", "conv3"]}),
    (Residual(), {"add1": ["input", "conv1"]}),
])
def test_models_whose_forward_branches_import_as_graphs_with_their_logits(model, merges):
    torch.manual_seed(0)
    imported = spec_from_torch(model, (3, 8, 8), "net")
    assert {layer["name"]: layer["inputs"] for layer in imported.spec["layers"]
            if layer["type"] in ("add", "concat")} == merges
    assert_same_logits(imported, model, (3, 8, 8))


class MeanPooled(nn.Module):
    """A channel mean written as MnasNet and EfficientNet write it: x.mean over height and width."""

    def __init__(self, keepdim: bool):
        super().__init__()
        self.keepdim = keepdim
        self.conv, self.fc = nn.Conv2d(3, 6, 3), nn.Linear(6, 4)

    def forward(self, x):
        x = torch.relu(self.conv(x))
        x = torch.mean(x, dim=(-2, -1), keepdim=True).flatten(1) if self.keepdim else x.mean([2, 3])
        return self.fc(x)


@pytest.mark.parametrize("keepdim, pool", [(False, {"type": "global_avgpool"}),
                                           (True, {"type": "adaptive_avgpool", "output": [1, 1]})])
def test_a_mean_over_height_and_width_imports_as_a_pool_with_the_same_logits(keepdim, pool):
    torch.manual_seed(0)
    model = MeanPooled(keepdim)
    imported = spec_from_torch(model, (3, 8, 8), "net")  # raises unless the spec computes what the model does
    assert [{k: v for k, v in layer.items() if k != "name"} for layer in imported.spec["layers"]
            if "pool" in layer["type"]] == [pool]
    assert_same_logits(imported, model, (3, 8, 8))


class FunctionallyPooled(nn.Module):
    def __init__(self, include_pad: bool = True):
        super().__init__()
        self.include_pad = include_pad
        self.conv, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4 * 5 * 5, 3)

    def forward(self, x):
        x = F.max_pool2d(torch.relu(self.conv(x)), 3, 2, ceil_mode=True)  # 10 -> 5 (ceil)
        x = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=self.include_pad)
        return self.fc(torch.flatten(x, 1))


def test_functional_pools_import_as_pool_layers_with_the_same_logits():
    torch.manual_seed(0)
    imported = spec_from_torch(FunctionallyPooled(), (3, 10, 10), "net")  # raises unless the logits agree
    pools = [{k: v for k, v in layer.items() if k != "name"} for layer in imported.spec["layers"]
             if "pool" in layer["type"]]
    assert pools == [{"type": "maxpool", "kernel": 3, "stride": 2, "padding": 0, "rounding": "ceil"},
                     {"type": "avgpool", "kernel": 3, "stride": 1, "padding": 1}]
    with pytest.raises(ImportProblem, match=r"cannot express these layers in a spec: avg_pool2d \(call_function"):
        spec_from_torch(FunctionallyPooled(include_pad=False), (3, 10, 10), "net")  # a divisor a spec cannot say


class PooledBySize(nn.Module):
    """A pool whose kernel is computed from the feature map's size, as many CIFAR nets write the last pool."""

    def __init__(self, kernel):
        super().__init__()
        self.kernel = kernel
        self.conv, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4, 3)

    def forward(self, x):
        x = torch.relu(self.conv(x))
        x = F.avg_pool2d(x, self.kernel(x))
        return self.fc(x.view(x.size(0), -1))


@pytest.mark.parametrize("kernel", [lambda x: x.size()[2:], lambda x: x.size()[3], lambda x: x.shape[-1]],
                         ids=["size()[2:]", "size()[3]", "shape[-1]"])
def test_a_pool_kernel_computed_from_the_map_s_size_imports_as_the_size_it_is(kernel):
    torch.manual_seed(0)
    model = PooledBySize(kernel).eval()
    imported = spec_from_torch(model, (3, 6, 6), "net")  # raises unless the logits agree
    assert [layer for layer in imported.spec["layers"] if layer["type"] == "avgpool"] == [
        {"name": "avgpool1", "type": "avgpool", "kernel": 6, "stride": 6, "padding": 0}]
    assert_same_logits(imported, model, (3, 6, 6))
    with pytest.raises(ImportProblem, match=r"cannot express these layers in a spec: avg_pool2d \(call_function"):
        spec_from_torch(PooledBySize(lambda x: x.size(0)), (3, 2, 2), "net")  # the batch's size: no spec's kernel


def test_functional_channel_dropout_tied_to_training_imports_as_channel_dropout():
    class ChannelDropped(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4 * 4 * 4, 3)

        def forward(self, x):
            return self.fc(F.dropout2d(torch.relu(self.conv(x)), 0.3, self.training).flatten(1))

    model = ChannelDropped().eval()
    imported = spec_from_torch(model, (3, 6, 6), "net")
    assert [layer for layer in imported.spec["layers"] if layer["type"] == "dropout"] == [
        {"name": "drop1", "type": "dropout", "p": 0.3, "channels": True}]
    assert_same_logits(imported, model, (3, 6, 6))


class SELayer(nn.Module):
    """The squeeze-and-excitation layer as senet.pytorch writes it: linear gates on the pooled
    features, viewed as (b, c, 1, 1) and expanded to the maps they scale."""

    def __init__(self, channels: int, expand: bool = True, merge=torch.mul):
        super().__init__()
        self.pool, self.expand, self.merge = nn.AdaptiveAvgPool2d(1), expand, merge
        self.fc = nn.Sequential(nn.Linear(channels, channels // 4, bias=False), nn.ReLU(inplace=True),
                                nn.Linear(channels // 4, channels, bias=False), nn.Sigmoid())

    def forward(self, x):
        b, c, _, _ = x.size()
        y = self.fc(self.pool(x).view(b, c)).view(b, c, 1, 1)
        return self.merge(x, y.expand_as(x) if self.expand else y).contiguous()


@pytest.mark.parametrize("expand", [True, False], ids=["expand_as", "broadcast"])
def test_a_gate_viewed_as_per_channel_factors_imports_as_multiply(expand):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), SELayer(8, expand), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(8, 5)).eval()
    imported = spec_from_torch(model, (3, 6, 6), "net")  # raises unless the logits agree
    assert [layer["type"] for layer in imported.spec["layers"]] == [
        "conv", "adaptive_avgpool", "flatten", "linear", "linear", "multiply", "adaptive_avgpool", "flatten",
        "linear"]  # the ReLUs and the sigmoid fused into the layer before each
    assert [layer["name"] for layer in imported.spec["layers"] if layer["type"] == "flatten"] == ["flatten",
                                                                                                  "flatten2"]
    assert analyse(load_text(yaml.safe_dump(imported.spec), "se.yaml")).total_params == \
        sum(p.numel() for p in model.parameters())
    assert_same_logits(imported, model, (3, 6, 6))
    summed = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), SELayer(8, merge=torch.add), nn.Flatten(), nn.Linear(288, 5))
    with pytest.raises(ImportProblem, match=r"expand_as \(call_method expand_as\) reads view_1, \w+; a spec layer"):
        spec_from_torch(summed, (3, 6, 6), "net")  # factors added, not multiplied: not a gate


def test_a_forward_that_returns_more_while_training_imports_its_inference_forward():
    class WithAuxiliary(nn.Module):  # as GoogLeNet: an auxiliary classifier's logits only in training
        def __init__(self):
            super().__init__()
            self.conv, self.flat = nn.Conv2d(3, 4, 3), nn.Flatten()
            self.fc, self.aux = nn.Linear(64, 3), nn.Linear(64, 3)

        def forward(self, x):
            features = self.flat(torch.relu(self.conv(x)))
            return (self.fc(features), self.aux(features)) if self.training else self.fc(features)

    model = WithAuxiliary()
    imported = spec_from_torch(model, (3, 6, 6), "net")
    assert [layer["type"] for layer in imported.spec["layers"]] == ["conv", "flatten", "linear"]
    assert model.training and imported.weight_sources["fc1"] == "fc"


class MnistExample(nn.Module):
    """pytorch/examples' MNIST net: functional ReLU and pooling, dropout modules, a last log_softmax."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 32, 3, 1), nn.Conv2d(32, 64, 3, 1)
        self.dropout1, self.dropout2 = nn.Dropout(0.25), nn.Dropout(0.5)
        self.fc1, self.fc2 = nn.Linear(9216, 128), nn.Linear(128, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
        x = self.fc1(torch.flatten(self.dropout1(x), 1))
        return F.log_softmax(self.fc2(self.dropout2(F.relu(x))), dim=1)


class OldMnistExample(nn.Module):
    """Its earlier form: nn.Dropout2d on conv2's maps, x.view(-1, 320) and F.dropout(x, training=self.training)."""

    def __init__(self, dropout_in_eval: bool = False):
        super().__init__()
        self.dropout_in_eval = dropout_in_eval
        self.conv1, self.conv2 = nn.Conv2d(1, 10, kernel_size=5), nn.Conv2d(10, 20, kernel_size=5)
        self.conv2_drop = nn.Dropout2d()
        self.fc1, self.fc2 = nn.Linear(320, 50), nn.Linear(50, 10)

    def forward(self, x):
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2)).view(-1, 320)
        x = F.dropout(F.relu(self.fc1(x)), training=self.training or self.dropout_in_eval)
        return F.log_softmax(self.fc2(x), dim=1)


@pytest.mark.parametrize("make, params", [(MnistExample, 1_199_882), (OldMnistExample, 21_840)])
def test_the_pytorch_mnist_examples_import_with_logits_whose_log_softmax_is_the_models_output(make, params):
    torch.manual_seed(0)
    model = make()
    imported = spec_from_torch(model, (1, 28, 28), "mnist")
    assert imported.log_softmax and "log_softmax, is left out" in imported.spec["description"]
    assert [layer["type"] for layer in imported.spec["layers"]][-1] == "linear"  # the logits
    dropouts = [layer.get("channels", False) for layer in imported.spec["layers"] if layer["type"] == "dropout"]
    assert dropouts == [True, False] if make is OldMnistExample else dropouts == [False, False]  # conv2_drop: Dropout2d
    assert analyse(load_text(yaml.safe_dump(imported.spec), "mnist.yaml")).total_params == params \
        == sum(p.numel() for p in model.parameters())
    built = alexspec.build(imported.spec, backend="torch", devices=["cpu"])
    load_state(built.module, imported.convert_state_dict(model.state_dict()))
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(torch.log_softmax(built.module.eval()(x), dim=1), model.eval()(x))


def test_import_says_it_left_out_a_last_log_softmax(tmp_path):
    (tmp_path / "classifier.py").write_text("import torch\nfrom torch import nn\n"
                                            "class Net(nn.Sequential):\n    def __init__(self):\n"
                                            "        super().__init__(nn.Flatten(), nn.Linear(48, 4),\n"
                                            "                         nn.LogSoftmax(dim=1))\n")
    result = run_cli("import", "python:classifier:Net", "--input", "3,4,4", "-o", str(tmp_path / "net.yaml"),
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == (
        "note: its outputs are logits: the model's last op, log_softmax, is left out (alexspec's cross-entropy "
        "applies it; the class with the largest logit is the model's choice)")
    assert [layer["type"] for layer in yaml.safe_load((tmp_path / "net.yaml").read_text())["layers"]] == \
        ["flatten", "linear"]


@pytest.mark.parametrize("softmax", [lambda x: F.softmax(x, dim=1), lambda x: x.softmax(-1),
                                     lambda x: torch.softmax(x, 1)])
def test_a_functional_softmax_imports_as_the_softmax_layer(softmax):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(48, 4)

        def forward(self, x):
            return softmax(self.fc(torch.flatten(x, 1)))

    imported = spec_from_torch(Net(), (3, 4, 4), "net")  # refused unless the spec's outputs are the model's
    assert [layer["type"] for layer in imported.spec["layers"]] == ["flatten", "linear", "softmax"]


@pytest.mark.parametrize("pool, kind", [(F.adaptive_max_pool2d, "adaptive_maxpool"),
                                        (F.adaptive_avg_pool2d, "adaptive_avgpool")])
def test_functional_adaptive_pools_import_as_their_layers(pool, kind):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(16, 4)

        def forward(self, x):
            return self.fc(torch.flatten(pool(self.conv(x), 2), 1))

    imported = spec_from_torch(Net(), (3, 6, 6), "net")  # refused unless the spec's outputs are the model's
    assert imported.spec["layers"][1] == {"name": "adaptive1", "type": kind, "output": 2}


def test_functional_activations_import_as_their_layers():
    class Net(nn.Module):
        def __init__(self, tanh_gelu: bool = False):
            super().__init__()
            self.tanh_gelu = tanh_gelu
            self.conv, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(64, 4)

        def forward(self, x):
            x = F.sigmoid(torch.tanh(self.conv(x))).sigmoid()
            x = F.gelu(F.relu6(F.silu(x), True), approximate="tanh" if self.tanh_gelu else "none")
            return self.fc(torch.flatten(F.leaky_relu(x, 0.2).tanh(), 1))

    torch.manual_seed(0)
    imported = spec_from_torch(Net(), (3, 4, 4), "net")  # refused unless the spec's outputs are the model's
    assert [layer["type"] for layer in imported.spec["layers"]] == [
        "conv", "sigmoid", "sigmoid", "silu", "relu6", "gelu", "leaky_relu", "tanh", "flatten", "linear"]
    assert imported.spec["layers"][0]["activation"] == "tanh"  # fused: nothing else reads the conv's output
    assert imported.spec["layers"][6]["negative_slope"] == 0.2
    with pytest.raises(ImportProblem, match=r"cannot express these layers in a spec: gelu \(call_function gelu\)"):
        spec_from_torch(Net(tanh_gelu=True), (3, 4, 4), "net")  # the spec's gelu is the exact one


def test_an_activation_right_after_a_conv_or_linear_is_fused_where_the_spec_can_say_it():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Hardswish(), nn.Conv2d(4, 4, 1), nn.LeakyReLU(0.2), nn.Flatten(),
                          nn.Linear(16, 8), nn.LeakyReLU(), nn.Linear(8, 3), nn.Sigmoid()).eval()
    imported = spec_from_torch(model, (3, 4, 4), "net")  # refused unless the logits agree
    assert [(layer["type"], layer.get("activation")) for layer in imported.spec["layers"]] == [
        ("conv", "hardswish"), ("conv", None), ("leaky_relu", None), ("flatten", None), ("linear", "leaky_relu"),
        ("linear", "sigmoid")]  # a conv's `activation: leaky_relu` has slope 0.01: 0.2 stays a layer


def test_dropout_that_runs_in_eval_mode_too_is_not_imported_as_a_dropout_layer():
    with pytest.raises(ImportProblem, match=r"cannot express these layers in a spec: dropout \(call_function "):
        spec_from_torch(OldMnistExample(dropout_in_eval=True), (1, 28, 28), "mnist")

def test_ops_on_the_inputs_size_and_the_models_own_tensors_are_named_as_what_a_spec_cannot_express():
    class Shuffled(nn.Module):  # ShuffleNet's channel shuffle
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)

        def forward(self, x):
            x = self.conv(x)
            b, c, h, w = x.size()
            return x.view(b, 2, c // 2, h, w).transpose(1, 2).contiguous().view(b, -1, h, w)

    with pytest.raises(ImportProblem, match=r"cannot express these layers in a spec: view \(call_method view\), "
                                            r"transpose \(call_method transpose\), view_1 \(call_method view\);"):
        spec_from_torch(Shuffled(), (3, 4, 4), "net")  # before: "getitem ... reads no value"; contiguous: no change

    class Tokened(nn.Module):  # a ViT's class token: a tensor of the model's, used outside any layer
        def __init__(self):
            super().__init__()
            self.conv, self.token = nn.Conv2d(3, 4, 1), nn.Parameter(torch.zeros(1, 4, 1, 1))

        def forward(self, x):
            return self.conv(x) + self.token

    with pytest.raises(ImportProblem, match=r"^the forward uses token, a tensor of the model's own outside any layer"):
        spec_from_torch(Tokened(), (3, 4, 4), "net")

def test_an_unsupported_op_that_flattens_is_named_not_blamed_on_the_linear_after_it():
    class MaxReduced(MeanPooled):
        def forward(self, x):
            return self.fc(torch.relu(self.conv(x)).amax(dim=(2, 3)))

    with pytest.raises(ImportProblem, match=r"cannot express these layers in a spec: amax \(call_method amax\)"):
        spec_from_torch(MaxReduced(False), (3, 8, 8), "net")


def test_a_product_of_two_values_imports_as_multiply_and_one_of_other_shapes_is_refused():
    model = Gated().eval()
    imported = spec_from_torch(model, (3, 8, 8), "net")
    assert [(layer["type"], layer.get("inputs")) for layer in imported.spec["layers"]] == [
        ("conv", None), ("multiply", ["input", "conv1"]), ("flatten", None)]
    assert_same_logits(imported, model, (3, 8, 8))
    with pytest.raises(ImportProblem, match=r"multiply needs inputs of one shape, or of one C x H x W and C x 1 x 1 "
                                            r"or C features: input gives 3x8x8, conv1 gives 1x8x8"):
        spec_from_torch(Gated(gate_channels=1), (3, 8, 8), "net")  # a spatial gate: one factor a position


def test_the_forward_order_is_followed_not_the_registration_order():
    torch.manual_seed(0)
    model = Reordered().eval()
    imported = spec_from_torch(model, (1, 8, 8), "net")
    assert [layer["type"] for layer in imported.spec["layers"]] == ["conv", "maxpool", "flatten", "linear"]
    build = alexspec.build(imported.spec, backend="torch", devices=["cpu"])
    load_state(build.module, imported.convert_state_dict(model.state_dict()))
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(build.module.eval()(x), model(x))


def test_an_import_that_would_compute_something_else_is_refused_naming_the_layer():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 3 * 3, 10))
    model[2].register_forward_hook(lambda _module, _inputs, output: output * 2)  # invisible to the layer list
    with pytest.raises(ImportProblem, match="computes something else than the model from layer pool1 on"):
        spec_from_torch(model, (1, 8, 8), "net")


def test_a_difference_small_beside_small_outputs_is_still_a_difference():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 3 * 3, 10))
    with torch.no_grad():
        model[4].weight.mul_(0.01), model[4].bias.zero_()  # logits of about 0.01, as an untrained net's
    model[2].register_forward_hook(lambda _module, _inputs, output: output * 1.001)  # a tenth of a percent
    with pytest.raises(ImportProblem, match="computes something else than the model from layer pool1 on"):
        spec_from_torch(model, (1, 8, 8), "net")


def test_import_cli_refuses_a_difference_of_two_values_with_exit_2(tmp_path):
    import os
    import subprocess
    import sys
    (tmp_path / "resnets.py").write_text("import torch\nfrom torch import nn\n\n"
                                         "class Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
                                         "        self.conv = nn.Conv2d(3, 3, 3, padding=1)\n"
                                         "        self.flat = nn.Flatten()\n        self.fc = nn.Linear(3 * 8 * 8, 10)\n\n"
                                         "    def forward(self, x):\n"
                                         "        return self.fc(self.flat(x - self.conv(x)))\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    result = subprocess.run([sys.executable, "-m", "alexspec", "import", "python:resnets:Net", "--input", "3,8,8",
                             "-o", str(tmp_path / "net.yaml")], cwd=ROOT, capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == 2 and "sub (call_function sub) reads x, conv; a spec layer reads one value" \
        in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "net.yaml").exists()


def test_diff_matches_layers_by_their_place_when_the_names_differ():
    from alexspec.interop.diff import diff_data, render

    imported = spec_from_torch(torchvision_style_alexnet(), (3, 224, 224), "tv").spec
    ours = analyse(load_text(yaml.safe_dump(imported, sort_keys=False), "imported.yaml"))
    bundled = analyse(SPECS / "torchvision-alexnet.yaml")
    data = diff_data(ours, bundled)
    assert data["same"] and ["fc1", "fc6"] in data["renamed"]
    assert "describe the same network (with 7 layers named otherwise)" in render(ours, bundled)
    text = run_cli("diff", "alexnet", "torchvision-alexnet").stdout
    assert "{'std'" not in text and "None" not in text  # values as a person writes them
    assert "std 0.01, bias 1" in text and "default" in text
