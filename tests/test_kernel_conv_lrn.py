"""The conv + bias + ReLU + LRN kernel held to torch's conv, ReLU and the LRN reference, forward and backward."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from kernel_helpers import FORMATS, check_against_reference, only_config, torch

from alexspec.kernels import conv2d_bias_relu_lrn, reference
from alexspec.kernels.ops import conv_lrn
from alexspec.kernels.tuning import conv_choice

# (in channels, out channels, kernel, stride, padding, conv groups, LRN groups, image size)
CASES = {
    "conv1's towers: one conv, an LRN per tower": (3, 24, 5, 2, 0, 1, 2, 13),
    "conv2's towers: grouped conv, grouped LRN": (8, 32, 3, 1, 1, 2, 2, 9),
    "groups that fill no power of two (12 of 16 channels)": (4, 12, 3, 1, 1, 1, 1, 8),
    "two LRN groups in each conv group": (4, 16, 1, 1, 0, 2, 4, 7),
}


def composed(x, weight, bias, stride, padding, groups, size, alpha, beta, k, convention, lrn_groups):
    """What the fused op must equal: torch's conv2d and ReLU, then the LRN reference."""
    y = torch.relu(torch.nn.functional.conv2d(x, weight, bias, stride, padding, groups=groups))
    return reference.lrn(y, size, alpha, beta, k, convention, lrn_groups)


def make(case, bias=True):
    ic, oc, kernel, stride, padding, groups, lrn_groups, size = CASES[case]
    torch.manual_seed(0)
    x = torch.randn(2, ic, size, size, dtype=torch.float64)
    weight = torch.randn(oc, ic // groups, kernel, kernel, dtype=torch.float64) / kernel
    b = torch.randn(oc, dtype=torch.float64) if bias else None
    # alpha large enough that the normalisation is far from a constant scale
    return [x, weight, b, stride, padding, groups, 5, 0.05, 0.75, 2.0, "paper", lrn_groups]


@pytest.mark.parametrize("layout", FORMATS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", CASES)
def test_equals_conv_relu_then_lrn(case, dtype, layout):
    check_against_reference(conv2d_bias_relu_lrn, composed, make(case), dtype, memory_format=FORMATS[layout])


@settings(max_examples=20, deadline=None)
@given(groups=st.integers(1, 2), splits=st.integers(1, 2), group_channels=st.integers(1, 9), icg=st.integers(1, 3),
       kernel=st.integers(1, 3), stride=st.integers(1, 2), size=st.integers(1, 7), beta=st.floats(0, 1.5),
       k=st.floats(0.5, 3), convention=st.sampled_from(["paper", "caffe"]), bias=st.booleans(), nhwc=st.booleans(),
       data=st.data())
def test_random_convs_then_lrns_equal_the_two_apart(groups, splits, group_channels, icg, kernel, stride, size, beta,
                                                     k, convention, bias, nhwc, data):
    # conv groups of one or two LRN groups each, LRN groups of any width (one that fills no power
    # of two among them), windows wider than a group, strong normalisation (alpha up to 0.5)
    lrn_groups = groups * splits
    torch.manual_seed(0)  # the same values each time hypothesis replays an example
    padding, image = data.draw(st.integers(0, kernel - 1)), data.draw(st.integers(kernel, 8))
    x = torch.randn(data.draw(st.integers(1, 2)), groups * icg, image, image, dtype=torch.float64)
    weight = torch.randn(lrn_groups * group_channels, icg, kernel, kernel, dtype=torch.float64) / kernel
    b = torch.randn(lrn_groups * group_channels, dtype=torch.float64) if bias else None
    alpha = data.draw(st.floats(0, 0.5))
    check_against_reference(conv2d_bias_relu_lrn, composed,
                            [x, weight, b, stride, padding, groups, size, alpha, beta, k, convention, lrn_groups],
                            torch.float32, memory_format=FORMATS["nhwc" if nhwc else "nchw"])


def test_without_bias_and_in_the_torch_convention():
    inputs = make("conv2's towers: grouped conv, grouped LRN", bias=False)
    inputs[10] = "torch"
    check_against_reference(conv2d_bias_relu_lrn, composed, inputs, torch.float64)


@pytest.mark.parametrize("config", conv_lrn._CONFIGS, ids=lambda c: f"{c.kwargs}-warps{c.num_warps}")
def test_every_tile_gives_the_same_answer(config):
    x, weight, bias, *rest = make("conv1's towers: one conv, an LRN per tower")
    x = torch.randn(3, 3, 31, 31, dtype=torch.float64)  # more output pixels (3 x 14 x 14) than the tallest tile
    with only_config(config, conv_lrn._conv_lrn_forward_kernel):
        ours = conv2d_bias_relu_lrn(x.float(), weight.float(), bias.float(), *rest)
    torch.testing.assert_close(ours.double(), composed(x, weight, bias, *rest), rtol=2e-5, atol=2e-5)


def test_inference_writes_only_the_output():
    x, weight, bias, stride, padding, groups, size, alpha, beta, k, _, lrn_groups = make(
        "conv2's towers: grouped conv, grouped LRN")
    args = (x, weight, bias, [stride] * 2, [padding] * 2, groups, size, alpha, beta, k, lrn_groups)
    z, c, scale = conv_lrn._conv_lrn_forward(*args, False)
    assert c.numel() == 0 and scale.numel() == 0
    z_saved, c_saved, scale_saved = conv_lrn._conv_lrn_forward(*args, True)
    torch.testing.assert_close(z, z_saved, rtol=0, atol=0)
    torch.testing.assert_close(c_saved, torch.nn.functional.conv2d(x, weight, bias, stride, padding, groups=groups),
                               rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(scale_saved, reference.lrn_scale(torch.relu(c_saved), size, alpha, k, lrn_groups),
                               rtol=1e-10, atol=1e-12)


def test_the_conv_backward_is_the_one_conv_choice_picks():
    inputs = make("conv2's towers: grouped conv, grouped LRN")
    with conv_choice.using("cudnn"):  # on CPU: aten's convolution backward
        check_against_reference(conv2d_bias_relu_lrn, composed, inputs, torch.float64)


@pytest.mark.parametrize("change, message", [
    (dict(groups=1, lrn_groups=2), "groups of 192 channels .* hold at most 128 channels"),
    (dict(lrn_groups=5), "groups must be a positive int dividing the 384 channels"),
    (dict(groups=4, lrn_groups=2), "must each lie inside one of the conv's 4 groups"),
    (dict(convention="lasagne"), "convention must be one of"),
    (dict(size=0), "size must be a positive int"),
])
def test_arguments_it_cannot_take_are_clear_errors(change, message):
    x = torch.randn(1, 8, 5, 5)
    args = dict(stride=1, padding=1, groups=4, lrn_groups=4, size=5, convention="paper") | change
    weight = torch.randn(384, 8 // args["groups"], 3, 3)
    with pytest.raises(ValueError, match=message):
        conv2d_bias_relu_lrn(x, weight, None, **args)


def test_opcheck():
    x, w, b = torch.randn(1, 4, 6, 6, requires_grad=True), torch.randn(8, 2, 3, 3, requires_grad=True), \
        torch.randn(8, requires_grad=True)
    args = ([1, 1], [1, 1], 2, 5, 1e-2, 0.75, 2.0, 2)
    torch.library.opcheck(torch.ops.alexspec.conv2d_bias_relu_lrn_forward.default, (x, w, b, *args, True))
    z, c, scale = torch.ops.alexspec.conv2d_bias_relu_lrn_forward(x.detach(), w.detach(), b.detach(), *args, True)
    torch.library.opcheck(torch.ops.alexspec.conv2d_bias_relu_lrn_backward.default,
                          (torch.randn_like(z), x.detach(), w.detach(), c, scale, True, *args[:3], 5, 1e-2, 0.75, 2,
                           [True, True, True]))


def test_torch_compile_traces_through_it():
    inputs = make("two LRN groups in each conv group")
    tensors = [t.float() for t in inputs[:3]]
    compiled = torch.compile(lambda x, w, b: conv2d_bias_relu_lrn(x, w, b, *inputs[3:]), backend="eager",
                             fullgraph=True)
    torch.testing.assert_close(compiled(*tensors), conv2d_bias_relu_lrn(*tensors, *inputs[3:]), rtol=0, atol=0)


def test_the_fusion_plan_asks_for_no_wider_groups_than_the_kernel_takes():
    from alexspec import fusion

    assert fusion.WIDEST_LRN_GROUP == conv_lrn.WIDEST_GROUP
