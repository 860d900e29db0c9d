"""Graph specs: layers that name their inputs, `add` and `concat`; ResNet-18 to torchvision's
numbers, errors where a graph is wrong, the generated forward against an independent walk of
the spec, and a residual net trained on the digits."""
from __future__ import annotations

import json

import pytest

from conftest import SPECS, run_cli, with_trained_statistics
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
    ("densenet121.yaml", 7_978_856, 2.83e9), ("mobilenet_v3_small.yaml", 2_542_856, 0.056e9)])
def test_the_graph_specs_have_torchvisions_parameter_counts(spec, params, macs):
    info = analyse(SPECS / spec)
    assert info.total_params == params  # torchvision's resnet50, squeezenet1_0, mobilenet_v2, googlenet, densenet121,
    # mobilenet_v3_small (whose MACs are the MobileNetV3 paper's Table 3: 56 M MAdds)
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
    product = spec_from_prototxt(CAFFE_DAG.replace('top: "res" }', 'top: "res" eltwise_param { operation: PROD } }'))
    assert [(layer["type"], layer["inputs"]) for layer in product["layers"] if layer["name"] == "res"] == [
        ("multiply", ["inc_output", "relu1"])]
    with pytest.raises(ImportProblem, match="res \\(Eltwise\\)"):
        spec_from_prototxt(CAFFE_DAG.replace('top: "res" }', 'top: "res" eltwise_param { operation: MAX } }'))


# SENet's gate in Caffe, as its authors lay it out: a global pool, two InnerProducts, a Sigmoid,
# and a Scale of the maps by the factors along axis 0 (each image's channels).
CAFFE_SE = """
name: "se"
input: "data"
input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 16 kernel_size: 3 pad: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "se/pool" type: "Pooling" bottom: "conv1" top: "se/pool"
        pooling_param { pool: AVE global_pooling: true } }
layer { name: "se/ip1" type: "InnerProduct" bottom: "se/pool" top: "se/ip1" inner_product_param { num_output: 4 } }
layer { name: "se/relu" type: "ReLU" bottom: "se/ip1" top: "se/ip1" }
layer { name: "se/ip2" type: "InnerProduct" bottom: "se/ip1" top: "se/ip2" inner_product_param { num_output: 16 } }
layer { name: "se/sigmoid" type: "Sigmoid" bottom: "se/ip2" top: "se/ip2" }
layer { name: "se/scale" type: "Scale" bottom: "conv1" bottom: "se/ip2" top: "se/scale" scale_param { axis: 0 } }
layer { name: "fc" type: "InnerProduct" bottom: "se/scale" top: "fc" inner_product_param { num_output: 10 } }
"""


def test_senet_s_caffe_gate_imports_as_a_multiply_of_the_maps_and_their_factors():
    from alexspec.interop.caffe import ImportProblem, spec_from_prototxt

    spec = spec_from_prototxt(CAFFE_SE)
    by_name = {layer["name"]: layer for layer in spec["layers"]}
    assert by_name["se_scale"]["type"] == "multiply" and by_name["se_scale"]["inputs"] == ["conv1", "se_sigmoid"]
    info = analyse(load_text(json.dumps(spec), "se.yaml"))
    shapes = {li.layer.name: li.output_shape for li in info.layers}
    assert (shapes["se_sigmoid"], shapes["se_scale"], info.output_shape) == ((16,), (16, 8, 8), (10,))
    with pytest.raises(ImportProblem, match=r"se/scale \(Scale, other than"):  # a learned scale, not a gate
        spec_from_prototxt(CAFFE_SE.replace("scale_param { axis: 0 }", "scale_param { axis: 0 bias_term: true }"))


@pytest.mark.parametrize("name, bundled", [
    ("resnet18", "resnet18"), ("resnet50", "resnet50"), ("googlenet", "googlenet"), ("squeezenet1_0", "squeezenet1_0"),
    ("mobilenet_v2", "mobilenet_v2"), ("densenet121", "densenet121"), ("mobilenet_v3_small", "mobilenet_v3_small"),
    pytest.param("vgg11_bn", "vgg11-bn", marks=pytest.mark.slow)])
def test_torchvision_s_graph_models_import_with_their_logits(name, bundled):
    torchvision = pytest.importorskip("torchvision")
    import yaml

    from alexspec.interop.from_torch import spec_from_torch

    torch.manual_seed(0)
    options = {"aux_logits": False, "init_weights": False} if name == "googlenet" else {}
    model = with_trained_statistics(getattr(torchvision.models, name)(weights=None, **options).eval())
    imported = spec_from_torch(model, (3, 224, 224), name)  # refused unless the built spec gives the model's logits
    info = analyse(load_text(yaml.safe_dump(imported.spec, sort_keys=False), f"{name}.yaml"))
    shipped = analyse(SPECS / f"{bundled}.yaml")
    assert (info.total_params, info.total_macs) == (shipped.total_params, shipped.total_macs)
    norms = [[(li.layer.eps, li.layer.momentum) for li in each.layers if isinstance(li.layer, ir.BatchNorm)]
             for each in (info, shipped)]
    assert norms[0] == norms[1]  # the model's batchnorm eps and momentum, layer by layer
    built = alexspec.build(imported.spec, backend="torch", devices=["cpu"])
    alexspec.builder.load_state(built.module, imported.convert_state_dict(model.state_dict()))
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        ours, theirs = built.module.eval()(x), model(x)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5 * theirs.abs().max().item())  # to their size


def test_the_bundled_mobilenet_v3_small_with_torchvision_s_weights_gives_its_logits():
    torchvision = pytest.importorskip("torchvision")

    torch.manual_seed(0)
    model = with_trained_statistics(torchvision.models.mobilenet_v3_small(weights=None).eval())
    built = alexspec.build(SPECS / "mobilenet_v3_small.yaml", backend="torch", devices=["cpu"])
    ours, theirs = built.module.state_dict(), model.state_dict()  # the same tensors, layer by layer, in order
    assert [tuple(value.shape) for value in ours.values()] == [tuple(value.shape) for value in theirs.values()]
    alexspec.builder.load_state(built.module, dict(zip(ours, theirs.values())))
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        ours, theirs = built.module.eval()(x), model(x)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5 * theirs.abs().max().item())  # logits ~0.01


@pytest.mark.parametrize("name, shape", [
    ("mnasnet0_5", (3, 224, 224)),  # its forward ends x.mean([2, 3]), then Linear
    ("googlenet", (3, 224, 224)),  # auxiliary classifiers in training mode, as torchvision builds it
    ("inception_v3", (3, 299, 299)),  # F.max_pool2d and F.avg_pool2d; auxiliary logits too
])
def test_torchvision_models_with_functional_pools_and_training_only_outputs_import(name, shape):
    torchvision = pytest.importorskip("torchvision")
    import yaml

    from alexspec.interop.from_torch import spec_from_torch

    torch.manual_seed(0)
    options = {"init_weights": False} if name in ("googlenet", "inception_v3") else {}
    model = getattr(torchvision.models, name)(weights=None, **options)
    imported = spec_from_torch(model, shape, name)  # refused unless the spec gives the model's logits (eval mode)
    assert model.training  # left in the mode it came in
    info = analyse(load_text(yaml.safe_dump(imported.spec, sort_keys=False), f"{name}.yaml"))
    inference = [p for key, p in model.named_parameters() if not key.startswith(("aux1.", "aux2.", "AuxLogits."))]
    assert info.total_params == sum(p.numel() for p in inference)
    assert (len(inference) < len(list(model.parameters()))) == (name != "mnasnet0_5")  # the aux ones left out

# GoogLeNet's Table 1 (Szegedy et al. 2014): each inception's #1x1, #3x3 reduce, #3x3, #5x5 reduce,
# #5x5 and pool proj filters, and its output (channels, size). (The table's params column is left
# out: its figures do not follow from its own filter counts, e.g. 463K for 4c's 497.5K.)
GOOGLENET_TABLE_1 = {
    "3a": ((64, 96, 128, 16, 32, 32), (256, 28)), "3b": ((128, 128, 192, 32, 96, 64), (480, 28)),
    "4a": ((192, 96, 208, 16, 48, 64), (512, 14)), "4b": ((160, 112, 224, 24, 64, 64), (512, 14)),
    "4c": ((128, 128, 256, 24, 64, 64), (512, 14)), "4d": ((112, 144, 288, 32, 64, 64), (528, 14)),
    "4e": ((256, 160, 320, 32, 128, 128), (832, 14)), "5a": ((256, 160, 320, 32, 128, 128), (832, 7)),
    "5b": ((384, 192, 384, 48, 128, 128), (1024, 7))}


def googlenet_deploy_prototxt() -> str:
    """BVLC GoogLeNet's deploy.prototxt as Caffe's model zoo lays it out (its layer names, in-place
    ReLUs, LRN, Caffe's rounding-up pooling, an inception as four branches and a Concat)."""
    layers = []

    def conv(name, bottom, out, kernel, stride=1, pad=0):
        layers.append(f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}" convolution_param '
                      f'{{ num_output: {out} kernel_size: {kernel} stride: {stride} pad: {pad} }} }}')
        layers.append(f'layer {{ name: "{name}_relu" type: "ReLU" bottom: "{name}" top: "{name}" }}')
        return name

    def pool(name, bottom, kernel, stride, pad=0, kind="MAX"):
        layers.append(f'layer {{ name: "{name}" type: "Pooling" bottom: "{bottom}" top: "{name}" pooling_param '
                      f'{{ pool: {kind} kernel_size: {kernel} stride: {stride} pad: {pad} }} }}')
        return name

    def lrn(name, bottom):
        layers.append(f'layer {{ name: "{name}" type: "LRN" bottom: "{bottom}" top: "{name}" lrn_param '
                      f'{{ local_size: 5 alpha: 0.0001 beta: 0.75 }} }}')
        return name

    top = lrn("pool1/norm1", pool("pool1/3x3_s2", conv("conv1/7x7_s2", "data", 64, 7, 2, 3), 3, 2))
    top = conv("conv2/3x3", conv("conv2/3x3_reduce", top, 64, 1), 192, 3, pad=1)
    top = pool("pool2/3x3_s2", lrn("conv2/norm2", top), 3, 2)
    for stage, ((n1, r3, n3, r5, n5, proj), _) in GOOGLENET_TABLE_1.items():
        at = f"inception_{stage}"
        branches = [conv(f"{at}/1x1", top, n1, 1),
                    conv(f"{at}/3x3", conv(f"{at}/3x3_reduce", top, r3, 1), n3, 3, pad=1),
                    conv(f"{at}/5x5", conv(f"{at}/5x5_reduce", top, r5, 1), n5, 5, pad=2),
                    conv(f"{at}/pool_proj", pool(f"{at}/pool", top, 3, 1, 1), proj, 1)]
        layers.append(f'layer {{ name: "{at}/output" type: "Concat" ' + " ".join(f'bottom: "{b}"' for b in branches)
                      + f' top: "{at}/output" }}')
        top = f"{at}/output"
        if stage in ("3b", "4e"):
            top = pool(f"pool{3 if stage == '3b' else 4}/3x3_s2", top, 3, 2)
    top = pool("pool5/7x7_s1", top, 7, 1, kind="AVE")
    layers.append(f'layer {{ name: "pool5/drop_7x7_s1" type: "Dropout" bottom: "{top}" top: "{top}" '
                  'dropout_param { dropout_ratio: 0.4 } }')
    layers.append(f'layer {{ name: "loss3/classifier" type: "InnerProduct" bottom: "{top}" top: "loss3/classifier" '
                  'inner_product_param { num_output: 1000 } }')
    layers.append('layer { name: "prob" type: "Softmax" bottom: "loss3/classifier" top: "prob" }')
    return ('name: "GoogleNet"\nlayer { name: "data" type: "Input" top: "data" '
            'input_param { shape: { dim: 10 dim: 3 dim: 224 dim: 224 } } }\n' + "\n".join(layers) + "\n")


def test_bvlc_googlenet_s_deploy_prototxt_imports_to_the_paper_s_table_1():
    from alexspec.interop.caffe import spec_from_prototxt

    spec = spec_from_prototxt(googlenet_deploy_prototxt())
    info = analyse(load_text(json.dumps(spec), "googlenet.yaml"))
    by_name = {li.layer.name: li for li in info.layers}
    assert by_name["pool1_3x3_s2"].output_shape == (64, 56, 56)  # Caffe rounds 55.5 up
    assert by_name["pool2_3x3_s2"].output_shape == (192, 28, 28)
    reads = 192  # conv2's channels, then each inception's output
    for stage, ((n1, r3, n3, r5, n5, proj), (channels, size)) in GOOGLENET_TABLE_1.items():
        at = f"inception_{stage}_"
        assert n1 + n3 + n5 + proj == channels and by_name[at + "output"].output_shape == (channels, size, size), stage
        weights = reads * (n1 + r3 + r5 + proj) + r3 * n3 * 9 + r5 * n5 * 25
        assert sum(li.weights for name, li in by_name.items() if name.startswith(at)) == weights, stage
        reads = channels
    assert by_name["pool5_7x7_s1"].output_shape == (1024, 1, 1) and info.output_shape == (1000,)
    built = alexspec.build(spec, backend="torch", devices=["cpu"])
    with torch.no_grad():
        probabilities = built.module.eval()(torch.randn(1, 3, 224, 224))
    assert probabilities.shape == (1, 1000) and abs(probabilities.sum().item() - 1) < 1e-4
    assert round(by_name["loss3_classifier"].weights / 1024) == 1000


def resnet50_deploy_prototxt() -> str:
    """The original ResNet-50's deploy prototxt as its authors laid it out: conv, BatchNorm and Scale
    in place, bias-free convs, branch1 the projection shortcut, the stride on branch2a's 1x1, an
    Eltwise sum and its ReLU."""
    layers = []

    def conv_bn(name, bottom, out, kernel, stride=1, pad=0, relu=True):
        layers.append(f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}" '
                      f'convolution_param {{ num_output: {out} kernel_size: {kernel} pad: {pad} stride: {stride} '
                      'bias_term: false } }')
        suffix = name.replace("res", "", 1) if name.startswith("res") else "_" + name
        layers.append(f'layer {{ name: "bn{suffix}" type: "BatchNorm" bottom: "{name}" top: "{name}" '
                      'batch_norm_param { use_global_stats: true } }')
        layers.append(f'layer {{ name: "scale{suffix}" type: "Scale" bottom: "{name}" top: "{name}" '
                      'scale_param { bias_term: true } }')
        if relu:
            layers.append(f'layer {{ name: "{name}_relu" type: "ReLU" bottom: "{name}" top: "{name}" }}')
        return name

    top = conv_bn("conv1", "data", 64, 7, 2, 3)
    layers.append('layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" '
                  'pooling_param { kernel_size: 3 stride: 2 pool: MAX } }')
    top = "pool1"
    for stage, (blocks, width) in enumerate(((3, 64), (4, 128), (6, 256), (3, 512)), start=2):
        for b in range(blocks):
            at = f"res{stage}{'abcdef'[b]}"
            stride = 2 if b == 0 and stage > 2 else 1
            shortcut = conv_bn(f"{at}_branch1", top, 4 * width, 1, stride, relu=False) if b == 0 else top
            branch = conv_bn(f"{at}_branch2a", top, width, 1, stride)
            branch = conv_bn(f"{at}_branch2b", branch, width, 3, 1, 1)
            branch = conv_bn(f"{at}_branch2c", branch, 4 * width, 1, relu=False)
            layers.append(f'layer {{ name: "{at}" type: "Eltwise" bottom: "{shortcut}" bottom: "{branch}" top: "{at}" }}')
            layers.append(f'layer {{ name: "{at}_relu" type: "ReLU" bottom: "{at}" top: "{at}" }}')
            top = at
    layers.append(f'layer {{ name: "pool5" type: "Pooling" bottom: "{top}" top: "pool5" '
                  'pooling_param { kernel_size: 7 stride: 1 pool: AVE } }')
    layers.append('layer { name: "fc1000" type: "InnerProduct" bottom: "pool5" top: "fc1000" '
                  'inner_product_param { num_output: 1000 } }')
    layers.append('layer { name: "prob" type: "Softmax" bottom: "fc1000" top: "prob" }')
    return 'name: "ResNet-50"\ninput: "data"\ninput_dim: 1\ninput_dim: 3\ninput_dim: 224\ninput_dim: 224\n' \
        + "\n".join(layers) + "\n"


def test_the_original_resnet50_deploy_prototxt_imports_with_torchvision_s_parameters():
    from alexspec.interop.caffe import spec_from_prototxt

    spec = spec_from_prototxt(resnet50_deploy_prototxt())
    info = analyse(load_text(json.dumps(spec), "resnet50.yaml"))
    assert info.total_params == 25_557_032  # torchvision's resnet50: the same weights, the stride elsewhere
    by_name = {li.layer.name: li for li in info.layers}
    assert by_name["pool1"].output_shape == (64, 56, 56)  # Caffe rounds 55.5 up
    assert [by_name[f"res{s}a"].output_shape for s in (2, 3, 4, 5)] == [(256, 56, 56), (512, 28, 28), (1024, 14, 14),
                                                                       (2048, 7, 7)]
    assert sum(isinstance(li.layer, ir.BatchNorm) for li in info.layers) == 53 and info.output_shape == (1000,)


@pytest.mark.slow
def test_importing_torchvision_s_resnet50_with_its_weights_round_trips_to_its_logits(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    from alexspec.train import checkpoint

    torch.manual_seed(0)
    model = with_trained_statistics(torchvision.models.resnet50(weights=None).eval())
    torch.save(model.state_dict(), tmp_path / "resnet50.pth")  # as a downloaded torchvision file is
    done = run_cli("import", "torchvision:resnet50", "--weights", str(tmp_path / "resnet50.pth"),
                   "-o", str(tmp_path / "r50.yaml"), "--weights-out", str(tmp_path / "r50.pt"))
    assert done.returncode == 0, done.stderr
    built = alexspec.build(str(tmp_path / "r50.yaml"), backend="torch", devices=["cpu"])
    state = checkpoint.load(tmp_path / "r50.pt", checkpoint.network_hash(built.info))
    alexspec.builder.load_state(built.module, state["model"])
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        ours, theirs = built.module.eval()(x), model(x)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5 * theirs.abs().max().item())  # to their size


@pytest.mark.slow
def test_import_weights_that_do_not_fit_the_model_are_refused_with_what_differs(tmp_path):
    pytest.importorskip("torchvision")
    torch.save({"conv1.weight": torch.zeros(3)}, tmp_path / "wrong.pth")
    result = run_cli("import", "torchvision:alexnet", "--weights", str(tmp_path / "wrong.pth"),
                     "-o", str(tmp_path / "a.yaml"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "wrong.pth: does not fit the model" in result.stderr and not (tmp_path / "a.yaml").exists()
    (tmp_path / "code.pth").write_bytes(b"\x80\x04cos\nsystem\n.")
    result = run_cli("import", "torchvision:alexnet", "--weights", str(tmp_path / "code.pth"), "-o",
                     str(tmp_path / "a.yaml"))
    assert result.returncode == 2 and "could run code" in result.stderr and not (tmp_path / "a.yaml").exists()
