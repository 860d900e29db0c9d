"""Towers in a graph: branches, merges and batchnorm in a network split across two towers
compute what two towers would, on one device (collapsed into channel groups) and on a device
per tower, and a checkpoint moves between the two."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import alexspec  # noqa: E402
from alexspec.fold import fold_batchnorm  # noqa: E402
from alexspec.builder import load_state  # noqa: E402
from conftest import locate, run_cli  # noqa: E402

# Two towers: a batchnorm per tower, a residual add and a concat of one tower's outputs, a
# crossing conv branch (each tower reads both towers' channels) and a crossing classifier.
TOWERED_GRAPH = """\
alexspec: 1
name: tower_graph
input: {channels: 1, height: 8, width: 8}
towers: 2
layers:
  - {name: conv1, type: conv, out: 8, kernel: 3, padding: 1}
  - {name: bn1, type: batchnorm}
  - {name: relu1, type: relu}
  - {name: conv2a, type: conv, out: 8, kernel: 3, padding: 1, activation: relu}
  - {name: sum, type: add, inputs: [conv2a, relu1]}
  - {name: conv2b, type: conv, out: 4, kernel: 1, towers: cross, inputs: relu1}
  - {name: cat, type: concat, inputs: [sum, conv2b]}
  - {name: pool, type: maxpool, kernel: 2}
  - {name: flatten, type: flatten}
  - {name: fc, type: linear, out: 10, towers: cross}
"""


def build(write_spec, devices, backend="torch"):
    return alexspec.build(write_spec(TOWERED_GRAPH), backend=backend, devices=devices)


def two_towers_by_hand(state: dict, x: torch.Tensor, training: bool) -> torch.Tensor:
    """The oracle: the net as two towers, each with its half of every layer's weights (tower 0's first)."""
    F = torch.nn.functional
    half = {key: value.chunk(2, 0) if value.dim() else (value, value) for key, value in state.items()}
    bn = []
    for t in range(2):
        h = F.conv2d(x, half["conv1.weight"][t], half["conv1.bias"][t], padding=1)
        h = F.batch_norm(h, half["bn1.running_mean"][t].clone(), half["bn1.running_var"][t].clone(),
                         half["bn1.weight"][t], half["bn1.bias"][t], training=training, eps=1e-5)
        bn.append(F.relu(h))
    both = torch.cat(bn, 1)  # what a crossing layer reads: every tower's channels, tower 0's first
    features = []
    for t in range(2):
        a = F.relu(F.conv2d(bn[t], half["conv2a.weight"][t], half["conv2a.bias"][t], padding=1))
        b = F.conv2d(both, half["conv2b.weight"][t], half["conv2b.bias"][t])
        features.append(F.max_pool2d(torch.cat([a + bn[t], b], 1), 2).flatten(1))
    crossed = torch.cat(features, 1)
    return torch.cat([F.linear(crossed, half["fc.weight"][t], half["fc.bias"][t]) for t in range(2)], 1)


@pytest.mark.parametrize("devices, training, backend", [
    (["cpu"], False, "torch"), (["cpu"], True, "torch"), (["cpu", "cpu"], False, "torch"),
    (["cpu", "cpu"], True, "torch"), (["cpu", "cpu"], False, "triton")],
    ids=["one-device-eval", "one-device-train", "device-per-tower-eval", "device-per-tower-train", "triton"])
def test_a_towered_graph_computes_what_two_towers_by_hand_do(write_spec, devices, training, backend):
    torch.manual_seed(0)
    module = build(write_spec, devices, backend).module.train(training)
    state = {key: value.detach().clone() for key, value in module.state_dict().items()}
    for key in state:  # statistics that are not the identity, so that eval mode tests them
        if "running" in key:
            state[key] = torch.rand_like(state[key]) + 0.5
    load_state(module, state)
    x = torch.randn(4, 1, 8, 8)
    torch.testing.assert_close(module(x), two_towers_by_hand(state, x, training), rtol=1e-5, atol=1e-5)


def test_a_checkpoint_moves_between_one_device_and_a_device_per_tower(write_spec):
    torch.manual_seed(0)
    one = build(write_spec, ["cpu"]).module.train()
    two = build(write_spec, ["cpu", "cpu"]).module.train()
    x = torch.randn(4, 1, 8, 8)
    one(x)  # a training step's statistics: running means, variances and the count of batches
    load_state(two, one.state_dict())
    assert one.state_dict().keys() == two.state_dict().keys()
    for key, value in one.state_dict().items():
        assert torch.equal(two.state_dict()[key], value), key
    assert int(two.state_dict()["bn1.num_batches_tracked"]) == 1
    one.eval(), two.eval()
    torch.testing.assert_close(two(x), one(x), rtol=1e-5, atol=1e-6)


def test_batchnorm_folds_into_each_tower_s_conv(write_spec):
    torch.manual_seed(0)
    built = build(write_spec, ["cpu", "cpu"])
    module = built.module.train()
    for _ in range(3):
        module(torch.randn(8, 1, 8, 8))
    module.eval()
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        before = module(x)
        assert fold_batchnorm(built) == [("conv1", "bn1")]
        torch.testing.assert_close(module(x), before, rtol=1e-5, atol=1e-5)


def test_the_generated_module_names_each_tower_merge(write_spec):
    source = build(write_spec, ["cpu"]).generated.source
    assert "self.sum = t.add()" in source and "self.cat = t.concat(split=True)" in source
    assert "self.bn1 = t.batchnorm(8, eps=1e-05, momentum=0.1, affine=True, image=True)" in source
    assert "t.conv(4, 4, kernel=(1, 1)" not in source and "reads='cross')" in source


def test_a_merge_of_split_and_shared_outputs_is_one_located_problem(write_spec):
    text = ("alexspec: 1\nname: g\ninput: {channels: 4, height: 8, width: 8}\ntowers: 2\nlayers:\n"
            "  - {name: a, type: conv, out: 4, kernel: 3, padding: 1}\n"
            "  - {name: b, type: add, inputs: [a, input]}\n")
    path = write_spec(text)
    result = run_cli("validate", str(path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    line, col = locate(text, "[a, input]")
    problem = next(text for text in result.stderr.splitlines() if "add combines outputs split" in text)
    assert problem.startswith(f"{path}:{line}:{col}:") and "'input'" in problem


def test_batchnorm_of_the_image_in_a_network_of_towers_is_refused_where_it_stands(write_spec):
    text = ("alexspec: 1\nname: g\ninput: {channels: 3, height: 8, width: 8}\ntowers: 2\nlayers:\n"
            "  - {name: bn0, type: batchnorm}\n"
            "  - {name: conv1, type: conv, out: 8, kernel: 3}\n"
            "  - {name: flatten, type: flatten}\n"
            "  - {name: fc, type: linear, out: 4, towers: cross}\n")
    path = write_spec(text)
    result = run_cli("report", str(path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{path.name}:6:5" in result.stderr and "statistics of its own" in result.stderr


def test_the_picture_draws_each_tower_s_branches_merges_and_crossings():
    from alexspec.diagram import dot
    from alexspec.spec import analyse
    from alexspec.spec.loader import load_text

    edges = set(line.strip() for line in dot(analyse(load_text(TOWERED_GRAPH, "g.yaml"))).splitlines() if "->" in line)
    assert {"conv2a_t0 -> sum_t0;", "relu1_t0 -> sum_t0;", "sum_t1 -> cat_t1;", "conv2b_t1 -> cat_t1;",
            "relu1_t0 -> conv2b_t0;", 'relu1_t1 -> conv2b_t0 [color="#c0392b", penwidth=1.5];'} <= edges
    assert not any(edge.startswith("sum_t0 -> conv2b") or edge.startswith("relu1_t1 -> sum_t0") for edge in edges)


IMAGE_READ_TWICE = """\
alexspec: 1
name: two_stems
input: {channels: 1, height: 5, width: 5}
towers: 2
layers:
  - {name: a, type: conv, out: 4, kernel: 1}
  - {name: b, type: conv, out: 2, kernel: 3, padding: 1, inputs: input}
  - {name: cat, type: concat, inputs: [a, b]}
"""


@pytest.mark.parametrize("devices", [["cpu"], ["cpu", "cpu"]], ids=["one-device", "device-per-tower"])
def test_a_second_reader_of_the_image_reads_it_as_the_towers_do(write_spec, devices):
    F = torch.nn.functional
    torch.manual_seed(0)
    module = alexspec.build(write_spec(IMAGE_READ_TWICE), backend="torch", devices=devices).module
    state = module.state_dict()
    half = {key: value.chunk(2, 0) for key, value in state.items()}
    x = torch.randn(3, 1, 5, 5)
    by_hand = torch.cat([torch.cat([F.conv2d(x, half["a.weight"][t], half["a.bias"][t]),
                                    F.conv2d(x, half["b.weight"][t], half["b.bias"][t], padding=1)], 1)
                         for t in range(2)], 1)
    torch.testing.assert_close(module(x), by_hand, rtol=1e-5, atol=1e-6)
