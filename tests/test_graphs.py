"""Graph specs: layers that name their inputs, `add` and `concat`; ResNet-18 to torchvision's
numbers, errors where a graph is wrong, the generated forward against an independent walk of
the spec, and a residual net trained on the digits."""
from __future__ import annotations

import json

import pytest

from conftest import SPECS, run_cli
from kernel_helpers import torch

import alexspec
from alexspec import ir
from alexspec.spec import analyse
from alexspec.spec.loader import load_text


def test_resnet18_has_torchvisions_parameters_and_macs():
    info = analyse(SPECS / "resnet18.yaml")
    assert info.total_params == 11_689_512  # torchvision's resnet18
    assert abs(info.total_macs - 1.82e9) < 0.01e9  # "about 1.82 G MACs at 224"
    adds = [li for li in info.layers if isinstance(li.layer, ir.Add)]
    assert len(adds) == 8 and [li.output_shape for li in adds][::2] == [(64, 56, 56), (128, 28, 28), (256, 14, 14),
                                                                          (512, 7, 7)]


@pytest.mark.parametrize("spec, params, macs", [
    ("resnet50.yaml", 25_557_032, 4.09e9), ("squeezenet1_0.yaml", 1_248_424, 0.82e9),
    ("mobilenet_v2.yaml", 3_504_872, 0.30e9), ("googlenet.yaml", 6_624_904, 1.50e9),
    ("densenet121.yaml", 7_978_856, 2.83e9)])
def test_the_graph_specs_have_torchvisions_parameter_counts(spec, params, macs):
    info = analyse(SPECS / spec)
    assert info.total_params == params  # torchvision's resnet50, squeezenet1_0, mobilenet_v2, googlenet, densenet121
    assert abs(info.total_macs - macs) < 0.01 * macs  # as commonly published for each at 224


def _walk(module, info, x):
    """The spec's dataflow computed layer by layer with the built module's own layers: each reads
    the layer before it or the layers `inputs` names (independent of the generated forward)."""
    values, previous = {"input": x}, "input"
    for li in info.layers:
        read = [values[name] for name in li.layer.inputs] or [values[previous]]
        layer = getattr(module, li.layer.name)
        values[li.layer.name] = layer(*read)
        previous = li.layer.name
    return values[previous]


@pytest.mark.parametrize("spec, kept, merged", [
    ("digits-resnet.yaml", "x = stem_relu = self.stem_relu(x)", "x = self.block1_add(x, stem_relu)"),
    ("resnet18.yaml", "x = maxpool = self.maxpool(x)", "x = self.layer1_1_add(x, maxpool)")])
def test_the_generated_forward_computes_the_spec_s_dataflow(spec, kept, merged):
    built = alexspec.build(SPECS / spec, backend="torch", devices=["cpu"])
    built.module.eval()
    x = torch.randn(2, *built.info.network.input)
    with torch.no_grad():
        torch.testing.assert_close(built.module(x), _walk(built.module, built.info, x))
    source = built.generated.source
    assert kept in source and merged in source  # a value a later layer reads is named, the rest stay in x


def test_a_relu_is_not_moved_into_a_pool_where_a_branch_reads_the_conv(write_spec):
    path = write_spec("""
alexspec: 1
name: branchy
input: {channels: 1, height: 8, width: 8}
layers:
  - {name: conv1, type: conv, out: 4, kernel: 3, padding: 1, activation: relu}
  - {name: pool1, type: maxpool, kernel: 2}
  - {name: side, type: maxpool, kernel: 2, inputs: conv1}
  - {name: both, type: add, inputs: [pool1, side]}
  - {name: gap, type: global_maxpool}
""")
    fused = alexspec.build(path, backend="torch", devices=["cpu"])
    plain = alexspec.build(path, backend="torch", devices=["cpu"], fuse=False)
    assert fused.generated.fusion.relu_moved == {}  # the side branch must see relu(conv1) too
    plain.module.load_state_dict(fused.module.state_dict())
    x = torch.randn(3, 1, 8, 8)
    torch.testing.assert_close(fused.module(x), plain.module(x))


@pytest.mark.parametrize("layers, where, says", [
    ("  - {name: a, type: conv, out: 4, kernel: 3, padding: 1}\n"
     "  - {name: b, type: add, inputs: [a, aa]}\n", "8:38", "no layer above this one is named 'aa'; did you mean 'a'?"),
    ("  - {name: a, type: conv, out: 4, kernel: 3, padding: 1, inputs: b}\n"
     "  - {name: b, type: conv, out: 4, kernel: 3, padding: 1}\n", "7:66", "'b' is below this layer"),
    ("  - {name: a, type: conv, out: 4, kernel: 3, padding: 1}\n"
     "  - {name: b, type: conv, out: 8, kernel: 3, stride: 2, padding: 1, rounding: floor, inputs: input}\n"
     "  - {name: c, type: add, inputs: [a, b]}\n", "9:34", "add needs inputs of one shape: a gives 4x8x8, b gives 8x4x4"),
    ("  - {name: a, type: conv, out: 4, kernel: 3}\n"
     "  - {name: b, type: conv, out: 4, kernel: 3, padding: 1, inputs: input}\n"
     "  - {name: c, type: concat, inputs: [a, b]}\n", "9:37",
     "concat needs inputs of one height and width: a gives 4x6x6, b gives 4x8x8"),
    ("  - {name: a, type: conv, out: 4, kernel: 3, padding: 1}\n"
     "  - {name: b, type: conv, out: 4, kernel: 3, padding: 1, inputs: input}\n", "7:5", "the output of 'a' is never read"),
    ("  - {name: a, type: conv, out: 4, kernel: 3, padding: 1}\n"
     "  - {name: b, type: conv, out: 4, kernel: 1, inputs: [a, input]}\n", "8:54", "a conv layer reads one layer"),
    ("  - {name: a, type: conv, out: 4, kernel: 3, padding: 1}\n"
     "  - {name: b, type: add, inputs: [a]}\n", "8:34", "an add layer combines two or more layers"),
])
def test_a_wrong_graph_is_one_located_problem_each(write_spec, layers, where, says):
    path = write_spec("alexspec: 1\nname: g\ninput: {channels: 1, height: 8, width: 8}\n\nlayers:\n\n" + layers)
    result = run_cli("validate", str(path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    line = next(line for line in result.stderr.splitlines() if says in line)
    assert line.startswith(f"{path}:{where}:"), line


def test_a_chain_spec_s_graph_json_and_network_hash_do_not_change_with_graphs():
    from alexspec.graph import graph_data
    from alexspec.train.checkpoint import network_hash

    info = analyse(SPECS / "alexnet.yaml")
    assert all("inputs" not in layer for layer in graph_data(info)["layers"])  # what the hash is made of
    explicit = (SPECS / "digits.yaml").read_text().replace("type: lrn,", "type: lrn, inputs: conv1,")
    assert network_hash(analyse(SPECS / "digits.yaml")) != network_hash(analyse(load_text(explicit, "d.yaml")))
    resnet = graph_data(analyse(SPECS / "digits-resnet.yaml"))
    assert {layer["name"]: layer["inputs"] for layer in resnet["layers"] if "inputs" in layer}["mixed"] == \
        ["branch1x1", "branch3x3"]


def test_the_picture_draws_each_merge_from_its_inputs():
    result = run_cli("report", "digits-resnet", "--format", "dot")
    assert result.returncode == 0
    edges = {line.strip() for line in result.stdout.splitlines() if "->" in line}
    assert {"block1_bn2 -> block1_add;", "stem_relu -> block1_add;", "block1_relu -> block2_down;",
            "branch1x1 -> mixed;", "branch3x3 -> mixed;"} <= edges


@pytest.mark.slow
def test_the_digits_residual_net_trains_on_cpu(tmp_path):
    result = run_cli("train", "digits-resnet", "--epochs", "2", "-o", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    epochs = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
              if json.loads(line)["kind"] == "epoch"]
    assert len(epochs) == 2 and epochs[-1]["top1_error"] < 0.2  # ten classes: chance is 0.9
    evaluated = run_cli("eval", "digits-resnet", "--checkpoint", str(tmp_path / "run" / "checkpoints" / "best.pt"))
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout.splitlines()[-1])["top1_error"] == pytest.approx(
        min(e["top1_error"] for e in epochs), abs=1e-9)


def test_a_branching_torch_model_imports_as_a_graph_with_its_logits():
    from tiny_resnet import TinyResNet

    from alexspec.interop.from_torch import spec_from_torch

    torch.manual_seed(0)
    model = TinyResNet()
    with torch.no_grad():  # running statistics as a trained model has them
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5), module.running_var.uniform_(0.5, 2)
    imported = spec_from_torch(model, (3, 16, 16), "tiny")
    merges = {layer["name"]: layer["inputs"] for layer in imported.spec["layers"] if layer["type"] in ("add", "concat")}
    assert merges == {"add1": ["bn3", "relu1"], "add2": ["bn5", "bn6"], "concat1": ["conv7", "conv8"]}
    shortcut = next(layer for layer in imported.spec["layers"] if layer["name"] == "conv6")
    assert shortcut["inputs"] == "relu3" and shortcut["stride"] == 2 and shortcut["kernel"] == 1
    built = alexspec.build(imported.spec, backend="torch", devices=["cpu"])
    alexspec.builder.load_state(built.module, imported.convert_state_dict(model.state_dict()))
    built.module.eval(), model.eval()
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(built.module(x), model(x))
    assert built.info.total_params == sum(p.numel() for p in model.parameters())


@pytest.mark.slow
def test_the_import_command_writes_a_graph_spec_and_its_weights(tmp_path):
    import os
    import subprocess
    import sys

    from conftest import ROOT

    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'tests'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run([sys.executable, "-m", "alexspec", "import", "python:tiny_resnet:TinyResNet", "--input",
                           "3,16,16", "-o", str(tmp_path / "tiny.yaml"), "--weights-out", str(tmp_path / "w.pt")],
                          cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    report = run_cli("report", str(tmp_path / "tiny.yaml"), "--format", "json")
    layers = json.loads(report.stdout)["layers"]
    assert [layer["type"] for layer in layers].count("add") == 2
    exported = run_cli("export", str(tmp_path / "tiny.yaml"), "--checkpoint", str(tmp_path / "w.pt"),
                       "-o", str(tmp_path / "tiny.pt2"))
    assert exported.returncode == 0, exported.stderr


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_an_exported_graph_net_takes_any_batch(tmp_path, backend):
    from alexspec.interop.export import export  # (the triton backend: interpreted on CPU, as every test runs it)

    torch.manual_seed(1)  # export builds with the spec's initialisation: the same weights below
    out = export(SPECS / "digits-resnet.yaml", None, "torch-export", tmp_path / "net.pt2", backend=backend)
    program = torch.export.load(str(out)).module()
    torch.manual_seed(1)
    module = alexspec.compile(SPECS / "digits-resnet.yaml", backend=backend, devices=["cpu"]).eval()
    for batch in (1, 3, 17):
        x = torch.randn(batch, 1, 8, 8)
        with torch.no_grad():
            torch.testing.assert_close(program(x), module(x), rtol=1e-4, atol=1e-5)


def test_batchnorm_folds_into_the_conv_before_it_for_inference_and_at_export(tmp_path):
    from alexspec.errors import BadInput
    from alexspec.interop.export import export

    torch.manual_seed(0)
    built = alexspec.build(SPECS / "resnet18.yaml", backend="torch", devices=["cpu"])
    with pytest.raises(BadInput, match="eval mode"):
        alexspec.fold_batchnorm(built)
    with torch.no_grad():
        for module in built.module.modules():  # statistics and a scale and shift as training leaves them
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2), module.running_var.uniform_(0.5, 2)
                module.weight.uniform_(0.5, 1.5), module.bias.uniform_(-0.2, 0.2)
    built.module.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = built.module(x)
        folded = alexspec.fold_batchnorm(built)
        after = built.module(x)
    assert len(folded) == 20 and ("layer2_1_shortcut", "layer2_1_shortcut_bn") in folded  # every conv of resnet18
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in built.module.modules())
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)
    program = torch.export.load(str(export(SPECS / "digits-resnet.yaml", None, "torch-export", tmp_path / "n.pt2")))
    assert not [node for node in program.graph.nodes if "batch_norm" in str(node.target)]


CAFFE_DAG = """
name: "dag"
input: "data"
input_shape { dim: 1 dim: 3 dim: 16 dim: 16 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 8 kernel_size: 3 pad: 1 bias_term: false } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" }
layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "inc/1x1" type: "Convolution" bottom: "conv1" top: "inc/1x1" convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "inc/relu_1x1" type: "ReLU" bottom: "inc/1x1" top: "inc/1x1" }
layer { name: "inc/3x3" type: "Convolution" bottom: "conv1" top: "inc/3x3"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "inc/output" type: "Concat" bottom: "inc/1x1" bottom: "inc/3x3" top: "inc/output" }
layer { name: "res" type: "Eltwise" bottom: "inc/output" bottom: "conv1" top: "res" }
layer { name: "pool" type: "Pooling" bottom: "res" top: "pool" pooling_param { pool: AVE global_pooling: true } }
layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc" inner_product_param { num_output: 10 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""


def test_a_caffe_dag_prototxt_imports_as_a_graph_spec():
    from alexspec.interop.caffe import ImportProblem, spec_from_prototxt

    spec = spec_from_prototxt(CAFFE_DAG)
    by_name = {layer["name"]: layer for layer in spec["layers"]}
    assert [layer["type"] for layer in spec["layers"]] == ["conv", "batchnorm", "relu", "conv", "conv", "concat", "add",
                                                          "global_avgpool", "linear", "softmax"]
    assert by_name["inc_1x1"]["activation"] == "relu" and by_name["inc_3x3"]["inputs"] == "relu1"
    assert by_name["inc_output"]["inputs"] == ["inc_1x1", "inc_3x3"] and by_name["res"]["inputs"] == ["inc_output",
                                                                                                      "relu1"]
    info = analyse(load_text(json.dumps(spec), "dag.yaml"))
    assert info.output_shape == (10,) and [li.output_shape for li in info.layers][6] == (8, 16, 16)
    with pytest.raises(ImportProblem, match="res \\(Eltwise\\)"):
        spec_from_prototxt(CAFFE_DAG.replace('top: "res" }', 'top: "res" eltwise_param { operation: PROD } }'))


@pytest.mark.parametrize("name, bundled", [
    ("resnet18", "resnet18"), ("resnet50", "resnet50"), ("googlenet", "googlenet"), ("squeezenet1_0", "squeezenet1_0"),
    ("mobilenet_v2", "mobilenet_v2"), ("densenet121", "densenet121"),
    pytest.param("vgg11_bn", "vgg11-bn", marks=pytest.mark.slow)])
def test_torchvision_s_graph_models_import_with_their_logits(name, bundled):
    torchvision = pytest.importorskip("torchvision")
    import yaml

    from alexspec.interop.from_torch import spec_from_torch

    torch.manual_seed(0)
    options = {"aux_logits": False, "init_weights": False} if name == "googlenet" else {}
    model = getattr(torchvision.models, name)(weights=None, **options).eval()
    with torch.no_grad():  # batchnorm statistics as a trained model has them
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1), module.running_var.uniform_(0.8, 1.2)
    imported = spec_from_torch(model, (3, 224, 224), name)  # refused unless the built spec gives the model's logits
    info = analyse(load_text(yaml.safe_dump(imported.spec, sort_keys=False), f"{name}.yaml"))
    shipped = analyse(SPECS / f"{bundled}.yaml")
    assert (info.total_params, info.total_macs) == (shipped.total_params, shipped.total_macs)
    built = alexspec.build(imported.spec, backend="torch", devices=["cpu"])
    alexspec.builder.load_state(built.module, imported.convert_state_dict(model.state_dict()))
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(built.module.eval()(x), model(x), rtol=1e-4, atol=1e-4)
