"""The paper's numbers (../shared/alexnet-facts.md) as oracles for inference."""
from __future__ import annotations

import pytest

from alexspec import analyse
from conftest import SPECS

PAPER_SHAPES = {  # alexnet-facts.md, "The paper's network"
    "conv1": (96, 55, 55), "norm1": (96, 55, 55), "pool1": (96, 27, 27), "conv2": (256, 27, 27),
    "norm2": (256, 27, 27), "pool2": (256, 13, 13), "conv3": (384, 13, 13), "conv4": (384, 13, 13),
    "conv5": (256, 13, 13), "pool5": (256, 6, 6), "flatten": (9216,), "fc6": (4096,), "fc7": (4096,),
    "fc8": (1000,),
}
GROUPED_PARAMS = {"conv1": 34_944, "conv2": 307_456, "conv3": 885_120, "conv4": 663_936, "conv5": 442_624,
                  "fc6": 37_752_832, "fc7": 16_781_312, "fc8": 4_097_000}
UNGROUPED_PARAMS = {"conv1": 34_944, "conv2": 614_656, "conv3": 885_120, "conv4": 1_327_488,
                    "conv5": 884_992, "fc6": 37_752_832, "fc7": 16_781_312, "fc8": 4_097_000}


@pytest.mark.parametrize("spec", ["alexnet.yaml", "alexnet-1gpu.yaml"])
def test_paper_alexnet_shapes_and_params(spec):
    info = analyse(SPECS / spec)
    shapes = {li.layer.name: li.output_shape for li in info.layers}
    assert shapes == PAPER_SHAPES
    params = {li.layer.name: li.params for li in info.layers if li.params}
    assert params == GROUPED_PARAMS
    assert info.total_params == 60_965_224


def test_paper_alexnet_macs_about_724_million():
    info = analyse(SPECS / "alexnet.yaml")
    assert round(info.total_macs / 1e6, 1) == 724.4
    # conv1 by hand: 96 kernels x 55 x 55 positions x 3 x 11 x 11 taps
    assert info.layers[0].macs == 96 * 55 * 55 * 3 * 11 * 11


def test_ungrouped_caffe_alexnet():
    info = analyse(SPECS / "caffe-alexnet.yaml")
    assert {li.layer.name: li.params for li in info.layers if li.params} == UNGROUPED_PARAMS
    assert info.total_params == 62_378_344


@pytest.mark.parametrize("spec, params, output", [
    ("torchvision-alexnet.yaml", 61_100_840, (1000,)),
    ("d2l-alexnet.yaml", 46_764_746, (10,)),
    ("lenet5.yaml", 61_706, (10,)),
])
def test_variants(spec, params, output):
    info = analyse(SPECS / spec)
    assert info.total_params == params
    assert info.output_shape == output


def test_floor_variants_note_the_dropped_fractions():
    tv = analyse(SPECS / "torchvision-alexnet.yaml")
    assert tv.layers[0].output_shape == (64, 55, 55)
    assert tv.layers[0].rounded == ("height and width 55.25 -> 55 (floor)",)
    d2l = {li.layer.name: li for li in analyse(SPECS / "d2l-alexnet.yaml").layers}
    assert d2l["conv1"].rounded == ("height and width 54.75 -> 54 (floor)",)
    assert d2l["pool1"].rounded == ("height and width 26.5 -> 26 (floor)",)
    assert d2l["pool5"].output_shape == (256, 5, 5)
    assert d2l["flatten"].output_shape == (6400,)


def test_neurons_per_layer_match_the_paper_except_the_erratum():
    info = analyse(SPECS / "alexnet.yaml")
    neurons = [li.output_elements for li in info.layers if li.layer.type in ("conv", "linear")]
    assert neurons == [290_400, 186_624, 64_896, 64_896, 43_264, 4096, 4096, 1000]


def test_two_towers_split_everything_evenly():
    info = analyse(SPECS / "alexnet.yaml")
    towers = info.tower_totals()
    assert [t.params for t in towers] == [60_965_224 // 2] * 2
    assert sum(t.macs for t in towers) == info.total_macs
    devices = info.device_totals()
    assert [d.label for d in devices] == ["cuda:0", "cuda:1"]
    # the paper's towers collapse to groups 2 on one device
    groups = {li.layer.name: li.groups for li in info.layers}
    assert (groups["conv1"], groups["conv2"], groups["conv3"], groups["conv4"], groups["conv5"]) == (1, 2, 1, 2, 2)
    assert (groups["norm1"], groups["norm2"]) == (2, 2)


def test_one_gpu_and_two_tower_specs_are_the_same_computation():
    two = analyse(SPECS / "alexnet.yaml")
    one = analyse(SPECS / "alexnet-1gpu.yaml")
    assert [(a.output_shape, a.params, a.macs, a.groups) for a in two.layers] == \
        [(b.output_shape, b.params, b.macs, b.groups) for b in one.layers]


def test_memory_counts_bytes_by_hand():
    info = analyse(SPECS / "lenet5.yaml")
    mem = info.memory(batch=4, dtype="bf16")
    assert mem.params == 61_706 * 2
    outputs = [6 * 28 * 28, 6 * 14 * 14, 16 * 10 * 10, 16 * 5 * 5, 120, 120, 84, 10]
    assert mem.outputs == sum(outputs) * 4 * 2
    # saved for backward: the input image (c1), c1/s2/c3/s4/c5 relu outputs and pool inputs
    # (shared tensors counted once), c5's flattened output (a view: already counted), f6's
    # relu output, plus max-pool indices (int64) for s2 and s4
    activations = 32 * 32 + 6 * 28 * 28 + 6 * 14 * 14 + 16 * 10 * 10 + 16 * 5 * 5 + 120 + 84
    indices = (6 * 14 * 14 + 16 * 5 * 5) * 8
    assert mem.training_saved == (activations * 2 + indices) * 4
