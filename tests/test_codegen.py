"""Codegen and placement: the built module is what inference says, on either backend and any placement."""
from __future__ import annotations

import json
import py_compile
import re
import subprocess
import sys

import pytest
import yaml
from hypothesis import HealthCheck, given, settings

torch = pytest.importorskip("torch")

import alexspec  # noqa: E402
from alexspec.builder import load_state  # noqa: E402
from alexspec.codegen import generate  # noqa: E402
from alexspec.spec import analyse, load_text  # noqa: E402
from conftest import SPECS, TINY_TOWERS, run_cli  # noqa: E402
from strategies import valid_specs  # noqa: E402

ALL_SPECS = sorted(p.name for p in SPECS.glob("*.yaml"))
HEAVY = {"densenet121.yaml", "resnet50.yaml", "vgg16.yaml", "vgg11-bn.yaml"}  # seconds each on a CPU: the slow stage
BUILT_SPECS = [pytest.param(spec, marks=pytest.mark.slow) if spec in HEAVY else spec for spec in ALL_SPECS]


def layer_outputs(build, x):
    """Each layer's output shape per image and parameter count, measured with forward hooks."""
    module, attributes = build.module, build.generated.attributes
    split = {li.layer.name: li.split for li in build.info.layers}
    seen = {}

    def hook(name):
        def record(_module, _inputs, output):
            if isinstance(output, list):  # tower parallel: each tower's channels, or copies of a shared tensor
                output = torch.cat([o.to("cpu") for o in output], dim=1) if split[name] else output[0]
            seen[name] = tuple(output.shape[1:])
        return record

    handles = [getattr(module, attr).register_forward_hook(hook(name)) for name, attr in attributes.items()]
    with torch.no_grad():
        module.eval()(x)
    for handle in handles:
        handle.remove()
    params = {name: sum(p.numel() for p in getattr(module, attr).parameters()) for name, attr in attributes.items()}
    return seen, params


def assert_module_matches_inference(build):
    x = torch.randn(2, *build.info.network.input)
    shapes, params = layer_outputs(build, x)
    for li in build.info.layers:
        assert shapes[li.layer.name] == li.output_shape, li.layer.name
        assert params[li.layer.name] == li.params, li.layer.name
    assert sum(p.numel() for p in build.module.parameters()) == build.info.total_params


@pytest.mark.parametrize("spec", BUILT_SPECS)
def test_every_shipped_spec_builds_what_the_report_says(spec):
    assert_module_matches_inference(alexspec.build(SPECS / spec, backend="torch", devices=["cpu"], fuse=False))


def test_two_tower_parallel_build_matches_inference():
    build = alexspec.build(SPECS / "alexnet.yaml", backend="torch", devices=["cpu", "cpu"], fuse=False)
    assert_module_matches_inference(build)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_specs())
def test_random_specs_build_what_inference_says(case):
    spec, _ = case
    info = analyse(load_text(yaml.safe_dump(spec), "random.yaml"))
    placements = [["cpu"]] + ([["cpu", "cpu"]] if info.network.towers == 2 else [])
    for devices in placements:
        assert_module_matches_inference(alexspec.build(spec, backend="torch", devices=devices, fuse=False))


def merged_grads(module):
    """Parameter gradients keyed like the state dict (tower parts concatenated, as checkpoints are)."""
    grads = {}
    for name, param in module.named_parameters():
        if ".parts." in name:
            prefix, rest = name.split(".parts.", 1)
            key = f"{prefix}.{rest.split('.', 1)[1]}"
            grads.setdefault(key, []).append(param.grad)
        else:
            grads[name] = [param.grad]
    return {key: torch.cat(parts, 0) for key, parts in grads.items()}


def test_two_towers_on_two_devices_equal_one_device_grouped():
    torch.manual_seed(0)
    two = alexspec.build(SPECS / "alexnet.yaml", backend="torch", devices=["cpu", "cpu"]).module.eval()
    one = alexspec.build(SPECS / "alexnet-1gpu.yaml", backend="torch", devices=["cpu"]).module.eval()
    load_state(one, two.state_dict())
    x = torch.randn(2, 3, 227, 227)
    out_two, out_one = two(x), one(x)
    torch.testing.assert_close(out_two, out_one, rtol=1e-5, atol=1e-6)
    out_two.square().sum().backward()
    out_one.square().sum().backward()
    grads_two, grads_one = merged_grads(two), merged_grads(one)
    assert grads_two.keys() == grads_one.keys()
    for key in grads_one:  # the same sums in another order: fp32 rounding relative to the gradient's size
        scale = grads_one[key].abs().max().item()
        torch.testing.assert_close(grads_two[key], grads_one[key], rtol=1e-4, atol=1e-5 * scale, msg=key)


def test_checkpoints_move_between_placements_and_refuse_another_spec(tmp_path):
    two = alexspec.compile(SPECS / "alexnet.yaml", backend="torch", devices=["cpu", "cpu"])
    one = alexspec.compile(SPECS / "alexnet.yaml", backend="torch", devices=["cpu"])
    path = tmp_path / "w.pt"
    torch.save(one.state_dict(), path)
    load_state(two, torch.load(path, weights_only=True))
    for key, value in two.state_dict().items():
        assert torch.equal(value, one.state_dict()[key]), key
    other = alexspec.compile(SPECS / "caffe-alexnet.yaml", backend="torch", devices=["cpu"])
    with pytest.raises(ValueError) as error:
        load_state(other, one.state_dict())
    message = str(error.value)
    assert "conv2" in message and "conv4" in message and "conv5" in message and "conv1" not in message


def test_spec_initialisation_is_applied():
    torch.manual_seed(0)
    module = alexspec.compile(SPECS / "alexnet-1gpu.yaml", backend="torch", devices=["cpu"])
    assert torch.all(module.conv2.bias == 1) and torch.all(module.conv1.bias == 0)
    assert torch.all(module.fc6.bias == 1) and torch.all(module.fc8.bias == 0)
    assert abs(module.fc6.weight.std().item() - 0.01) < 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["digits.yaml", "lenet5.yaml"])
def test_triton_backend_equals_torch_backend(spec):
    torch.manual_seed(0)
    triton_build = alexspec.build(SPECS / spec, backend="triton", devices=["cpu"])
    torch_build = alexspec.build(SPECS / spec, backend="torch", devices=["cpu"])
    assert triton_build.backend == "triton" and torch_build.backend == "torch"
    torch_build.module.load_state_dict(triton_build.module.state_dict())
    x = torch.randn(3, *triton_build.info.network.input)
    outs = [b.module.eval()(x) for b in (triton_build, torch_build)]
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-4, atol=1e-5)
    for out in outs:
        out.square().sum().backward()
    for (name, a), (_, b) in zip(triton_build.module.named_parameters(), torch_build.module.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5, msg=name)




def test_triton_backend_in_tower_parallel_mode():
    torch.manual_seed(0)
    doc = load_text(TINY_TOWERS, "tiny.yaml")
    parallel = alexspec.build(doc, backend="triton", devices=["cpu", "cpu"]).module.eval()
    collapsed = alexspec.build(doc, backend="torch", devices=["cpu"]).module.eval()
    load_state(collapsed, parallel.state_dict())
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(parallel(x), collapsed(x), rtol=1e-4, atol=1e-5)


def measured_saved_bytes(module, x):
    """Bytes autograd really saves for backward: each storage once, parameters excluded."""
    params = {p.untyped_storage().data_ptr() for p in module.parameters()}
    storages = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module.train()(x)
    return sum(storages.values())


@pytest.mark.parametrize("spec", BUILT_SPECS)
def test_report_training_memory_matches_what_autograd_saves(spec):
    build = alexspec.build(SPECS / spec, backend="torch", devices=["cpu"])
    batch = 2
    x = torch.randn(batch, *build.info.network.input)
    predicted = build.info.memory(batch, "fp32").training_saved
    measured = measured_saved_bytes(build.module, x)
    assert abs(predicted - measured) <= 0.05 * measured, (predicted, measured)


def test_generated_source_is_deterministic_importable_and_maps_to_the_spec(tmp_path):
    info = analyse(SPECS / "alexnet.yaml")
    first, second = generate(info), generate(analyse(SPECS / "alexnet.yaml"))
    assert first.source == second.source
    path = tmp_path / "alexnet.py"
    path.write_text(first.source)
    py_compile.compile(str(path), doraise=True)
    spec_lines = (SPECS / "alexnet.yaml").read_text().splitlines()
    for generated_line, spec_line in first.line_map.items():
        attributes = re.findall(r"self\.(\w+)", first.source.splitlines()[generated_line - 1])
        assert any(f"name: {a.rstrip('_')}," in spec_lines[spec_line - 1] for a in attributes), generated_line
    code = "import torch, alexnet; m = alexnet.Alexnet(devices=['cpu']); print(tuple(m(torch.randn(1, 3, 227, 227)).shape))"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(1, 1000)"


def test_names_that_would_shadow_module_attributes_are_renamed():
    text = """\
alexspec: 1
name: shadows
input: {channels: 1, height: 8, width: 8}
layers:
  - {name: forward, type: conv, out: 4, kernel: 3}
  - {name: training, type: relu}
  - {name: towers, type: flatten}
  - {name: to, type: linear, out: 2}
"""
    build = alexspec.build(load_text(text, "s.yaml"), backend="torch", devices=["cpu"])
    assert build.generated.attributes == {"forward": "forward_", "training": "training_", "towers": "towers_",
                                          "to": "to_"}
    assert build.module(torch.randn(2, 1, 8, 8)).shape == (2, 2)


@pytest.mark.slow
def test_compile_cli_writes_an_importable_package(tmp_path):
    result = run_cli("compile", str(SPECS / "alexnet.yaml"), "-o", "build", "--devices", "cpu", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for name in ("alexnet.py", "graph.json", "report.json", "alexnet.dot"):
        assert (tmp_path / "build" / name).exists(), name
    code = "from build.alexnet import Alexnet; import torch; print(Alexnet()(torch.randn(1, 3, 227, 227)).shape[1])"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1000"


def test_compile_replaces_only_the_files_compiles_wrote(tmp_path):
    (tmp_path / "report.json").write_text('{"mine": 1}')  # a project's own file, in the folder compiled into
    refused = run_cli("compile", "digits", "-o", ".", cwd=tmp_path)
    assert refused.returncode == 2 and "already holds report.json, not listed in its alexspec-build.json" in \
        refused.stderr, refused.stderr
    assert (tmp_path / "report.json").read_text() == '{"mine": 1}' and not (tmp_path / "digits.py").exists()
    for spec in ("digits", "lenet5", "digits"):  # again, and a second net beside it
        assert run_cli("compile", spec, "-o", "build", cwd=tmp_path).returncode == 0
    assert json.loads((tmp_path / "build" / "report.json").read_text())["name"] == "digits"
    assert {"digits.py", "lenet5.py", "graph.json"} <= set(json.loads((tmp_path / "build" / "alexspec-build.json")
                                                                      .read_text())["compiled"])
    (tmp_path / "build" / "alexspec-build.json").write_text("not the list")
    again = run_cli("compile", "digits", "-o", "build", cwd=tmp_path)
    assert again.returncode == 2 and "alexspec-build.json is not the list of files" in again.stderr


def test_compile_keeps_a_compiled_file_changed_since(tmp_path):
    assert run_cli("compile", "digits", "-o", "build", cwd=tmp_path).returncode == 0
    module = tmp_path / "build" / "digits.py"
    assert run_cli("compile", "digits", "-o", "build", cwd=tmp_path).returncode == 0  # unchanged: replaced
    edited, report = module.read_text() + "# a hand edit\n", (tmp_path / "build" / "report.json").read_text()
    module.write_text(edited)
    refused = run_cli("compile", "digits", "--set", "layers.fc3.out=32", "-o", "build", cwd=tmp_path)
    assert refused.returncode == 2 and "build/digits.py changed since `alexspec compile` wrote it" in refused.stderr
    assert module.read_text() == edited and (tmp_path / "build" / "report.json").read_text() == report
    module.unlink()  # moved away: compiled afresh, and replaceable again after
    for _ in range(2):
        assert run_cli("compile", "digits", "--set", "layers.fc3.out=32", "-o", "build", cwd=tmp_path).returncode == 0
    assert "a hand edit" not in module.read_text()


def test_diagram_shows_towers_and_crossings():
    result = run_cli("report", "alexnet", "--format", "dot")
    assert result.returncode == 0
    text = result.stdout
    assert "subgraph cluster_tower0" in text and "subgraph cluster_tower1" in text
    assert 'pool2_t0 -> conv3_t1 [color="#c0392b"' in text  # conv3 crosses towers
    assert "pool2_t1 -> conv3_t1;" in text
    assert "conv1_t0 -> conv2_t1" not in text and "conv1_t0 -> norm1_t0;" in text
    assert 'label="conv2\\nconv+relu 5/1/2\\n128x27x27"' in text


def test_bad_device_lists_are_clear():
    with pytest.raises(ValueError, match="2 towers need 1 device or 2"):
        alexspec.compile(SPECS / "alexnet.yaml", backend="torch", devices=["cpu", "cpu", "cpu"])
    result = run_cli("compile", "alexnet", "--devices", "cpu,cpu,cpu")
    assert result.returncode == 2 and "3 devices for 2 towers" in result.stderr


def test_cuda_placement_on_a_machine_without_cuda_is_explained():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="need CUDA, which this machine does not have"):
        alexspec.compile(SPECS / "alexnet.yaml")  # the spec places its towers on cuda:0 and cuda:1
    from alexspec.builder import build

    with pytest.raises(ValueError) as placed:
        build(SPECS / "alexnet.yaml")
    assert str(placed.value) == ("alexnet's spec places it on cuda:0, cuda:1 (its `placement`); the devices cuda:0, "
                                 "cuda:1 need CUDA, which this machine does not have; run on the CPU with --device "
                                 "cpu, the towers sharing it (in Python: devices=['cpu'])")
    with pytest.raises(ValueError) as given:
        build(SPECS / "digits.yaml", devices=["cuda"])
    assert str(given.value) == ("the device cuda needs CUDA, which this machine does not have; run on the CPU with "
                                "--device cpu (in Python: devices=['cpu'])")


@pytest.mark.parametrize("spec, folder", [("alexnet", "build"), ("digits", "my-build"), ("lenet5", "out dir/build")])
def test_the_use_it_line_compile_prints_works_on_this_machine(tmp_path, spec, folder):
    result = run_cli("compile", spec, "-o", folder, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    line = result.stdout.splitlines()[-1]
    assert line.startswith("use it: ")
    command = line.removeprefix("use it: ").split(" (")[0] if spec == "alexnet" else line.removeprefix("use it: ")
    used = subprocess.run(["bash", "-c", command.replace("python ", f"{sys.executable} ", 1)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert used.returncode == 0, used.stderr
    assert "(conv1): " in used.stdout or "(c1): " in used.stdout
    assert ("cd " in line) == (folder != "build")  # no `cd .` where the module imports from here


def test_a_compiled_module_names_the_images_it_takes():
    """A batch of another shape is refused with the shape the network takes, not with a shape error
    inside a layer ("mat1 and mat2 shapes cannot be multiplied" at fc6 for 224x224 images)."""
    model = alexspec.compile("alexnet", devices=["cpu"], backend="torch")
    wants = "alexnet takes a batch of 3x227x227 images (N x 3 x 227 x 227), got a tensor of shape "
    for shape, said in [((1, 3, 224, 224), "1x3x224x224"), ((2, 1, 227, 227), "2x1x227x227"),
                        ((3, 227, 227), "3x227x227 (one image? x[None] makes it a batch of one)")]:
        with pytest.raises(ValueError) as refused:
            model(torch.zeros(shape))
        assert str(refused.value) == wants + said
    resnet = alexspec.compile("resnet18", devices=["cpu"], backend="torch")
    with pytest.raises(ValueError, match=r"resnet18 takes a batch of images of 3 channels \(N x 3 x H x W\), got a "
                                         r"tensor of shape 1x4x224x224$"):
        resnet(torch.zeros(1, 4, 224, 224))


@pytest.mark.parametrize("spec, one_size", [("alexnet", True), ("lenet5", True), ("digits", True),
                                            ("torchvision-alexnet", False), ("resnet18", False), ("nin", False)])
def test_only_a_network_whose_features_follow_the_image_size_takes_one_size(spec, one_size, monkeypatch):
    """The check is as strict as the layers: a network that pools to a fixed size before its linear
    layers (or has none) runs on larger images too; one that does not fails in a layer without it."""
    from alexspec.codegen import takes_one_size
    from alexspec.kernels import layers

    info = analyse(spec)
    assert takes_one_size(info) is one_size
    channels, height, width = info.network.input
    model = alexspec.compile(spec, devices=["cpu"], backend="torch").eval()
    larger = torch.zeros(1, channels, height + 32, width + 32)
    if one_size:
        with pytest.raises(ValueError, match="takes a batch of"):
            model(larger)
        monkeypatch.setattr(layers, "check_input", lambda *args, **kwargs: None)
        with pytest.raises(RuntimeError):  # the layers' own error: mat1 and mat2 shapes cannot be multiplied
            model(larger)
    else:
        assert model(larger).shape == (1, info.output_shape[0])


def test_a_batchnorm_on_flattened_features_fixes_the_image_size():
    info = analyse(load_text("alexspec: 1\nname: bnf\ninput: {channels: 1, height: 8, width: 8}\nlayers:\n"
                             "  - {name: conv, type: conv, out: 2, kernel: 3}\n  - {name: flat, type: flatten}\n"
                             "  - {name: bn, type: batchnorm}\n", "bnf.yaml"))
    from alexspec.codegen import takes_one_size

    assert takes_one_size(info)
