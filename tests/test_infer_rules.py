"""Inference rules one by one: rounding, towers, layer placement in the stack, bounds."""
from __future__ import annotations

import pytest

from alexspec.errors import SpecError
from alexspec.spec import analyse, load_text
from conftest import HEADER, spec_text

TOWERS2 = HEADER.replace("layers:\n", "towers: 2\nlayers:\n")


def infer_text(text: str):
    return analyse(load_text(text, "t.yaml"))


def messages(text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        infer_text(text)
    return [p.message + " | " + p.hint for p in info.value.problems]


def test_a_rounding_problem_does_not_cascade():
    text = spec_text("{name: c1, type: conv, out: 8, kernel: 4, stride: 3}",  # (32-4)/3+1 = 10.33
                     "{name: p1, type: maxpool, kernel: 3, stride: 2}",       # would be fractional after it
                     "{name: c2, type: conv, out: 9, kernel: 3, groups: 2}")  # still reported: 8 % 2 ok, 9 % 2 not
    found = messages(text)
    assert len(found) == 2
    assert "10.3333 is not an integer" in found[0]
    assert "out 9 does not divide into 2 groups" in found[1]


def test_ceil_rounding_follows_pytorch_for_pools_and_is_refused_for_convs():
    text = spec_text("{name: p1, type: maxpool, kernel: 3, stride: 2, rounding: ceil}",   # 15.5 -> 16
                     "{name: p2, type: maxpool, kernel: 2, stride: 2, padding: 1, rounding: ceil}")
    info = infer_text(text)
    assert info.layers[0].output_shape == (3, 16, 16)
    # (16 + 2 - 2) / 2 + 1 = 9 exactly; no rounding
    assert info.layers[1].output_shape == (3, 9, 9)
    text = spec_text("{name: p, type: maxpool, kernel: 2, stride: 3, padding: 1, rounding: ceil}")
    # ceil((32 + 2 - 2) / 3) + 1 = 12, but the 12th window would start in the padding: PyTorch gives 11
    assert infer_text(text).layers[0].output_shape == (3, 11, 11)
    found = messages(spec_text("{name: c, type: conv, out: 4, kernel: 4, stride: 3, rounding: ceil}"))
    assert "`ceil` applies to pooling only" in found[0]


def test_pool_padding_is_at_most_half_the_kernel():
    assert "more than half the kernel" in messages(spec_text("{name: p, type: maxpool, kernel: 2, padding: 2}"))[0]


def test_image_layers_need_an_image_and_linear_needs_features():
    found = messages(spec_text("{name: f, type: flatten}", "{name: c, type: conv, out: 4, kernel: 1}"))
    assert "needs a C x H x W input" in found[0]
    found = messages(spec_text("{name: fc, type: linear, out: 4}"))
    assert "add a `flatten` layer" in found[0]


def test_softmax_only_last_and_classes_checked():
    found = messages(spec_text("{name: f, type: flatten}", "{name: s, type: softmax}", "{name: fc, type: linear, out: 4}"))
    assert "softmax may only be the last layer" in found[0]
    found = messages(spec_text("{name: f, type: flatten}", "{name: fc, type: linear, out: 4}",
                               header=HEADER.replace("layers:", "classes: 10\nlayers:")))
    assert "`classes` is 10" in found[0]


def test_towers_rules():
    # a conv on the shared input may not be grouped; a crossing conv may not be grouped either
    found = messages(spec_text("{name: c, type: conv, out: 4, kernel: 1, groups: 2}", header=TOWERS2))
    assert "reads the shared input" in found[0]
    found = messages(spec_text("{name: c1, type: conv, out: 4, kernel: 1}",
                               "{name: c2, type: conv, out: 4, kernel: 1, groups: 2, towers: cross}", header=TOWERS2))
    assert "cannot also be grouped" in found[0]
    # tower-local conv after a split: groups multiply with towers
    info = infer_text(spec_text("{name: c1, type: conv, out: 8, kernel: 1}",
                                "{name: c2, type: conv, out: 8, kernel: 1, groups: 2}",
                                "{name: n, type: lrn, size: 3}", header=TOWERS2))
    assert [li.groups for li in info.layers] == [1, 4, 2]
    assert info.layers[1].params == 8 * (8 // 4) + 8
    found = messages(spec_text("{name: c1, type: conv, out: 6, kernel: 1}",
                               "{name: c2, type: conv, out: 8, kernel: 1, groups: 2}", header=TOWERS2))
    assert "6 input channels do not divide into 4 towers x groups" in found[0]


def test_linear_split_across_towers_and_softmax_gathers():
    info = infer_text(spec_text("{name: c1, type: conv, out: 4, kernel: 1}", "{name: f, type: flatten}",
                                "{name: fc, type: linear, out: 6, towers: cross}", "{name: s, type: softmax}",
                                header=TOWERS2))
    assert [li.split for li in info.layers] == [True, True, True, False]
    assert "does not split evenly" in messages(spec_text(
        "{name: c1, type: conv, out: 4, kernel: 1}", "{name: f, type: flatten}",
        "{name: fc, type: linear, out: 5, towers: cross}", header=TOWERS2))[0]


def test_adaptive_avgpool_and_macs():
    info = infer_text(spec_text("{name: a, type: adaptive_avgpool, output: [2, 3]}", "{name: f, type: flatten}",
                                "{name: fc, type: linear, out: 5, bias: false}"))
    assert info.layers[0].output_shape == (3, 2, 3)
    assert info.layers[2].params == 18 * 5 and info.layers[2].macs == 18 * 5


def test_non_square_kernels_and_strides():
    info = infer_text(spec_text("{name: c, type: conv, out: 2, kernel: [3, 5], stride: [1, 3], padding: [1, 0]}"))
    assert info.layers[0].output_shape == (2, 32, 10)
    assert info.layers[0].macs == 2 * 32 * 10 * 3 * 3 * 5
