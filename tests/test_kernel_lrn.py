"""The Triton LRN held to the paper's formula and the torch reference, forward and backward."""
from __future__ import annotations

import importlib

import pytest
from hypothesis import given, settings, strategies as st

from kernel_helpers import FORMATS, check_against_reference, only_config, torch

from alexspec.kernels import LRN, lrn, reference

lrn_module = importlib.import_module("alexspec.kernels.ops.lrn")  # the package exports the function lrn


def paper_lrn_by_hand(x, n=5, k=2.0, alpha=1e-4, beta=0.75):
    """b = a / (k + alpha * sum_{j=max(0,i-n/2)}^{min(N-1,i+n/2)} a_j^2)^beta, written out (Section 3.3)."""
    out = torch.empty_like(x)
    channels = x.shape[1]
    for b in range(x.shape[0]):
        for i in range(channels):
            total = sum(x[b, j] ** 2 for j in range(max(0, i - n // 2), min(channels - 1, i + n // 2) + 1))
            out[b, i] = x[b, i] / (k + alpha * total) ** beta
    return out


@pytest.mark.parametrize("layout", FORMATS)
def test_matches_the_paper_formula(layout):
    x = torch.randn(2, 11, 4, 5, dtype=torch.float64).contiguous(memory_format=FORMATS[layout]) * 10
    y = lrn(x, 5, 1e-4, 0.75, 2.0, convention="paper")
    torch.testing.assert_close(y, paper_lrn_by_hand(x), rtol=1e-12, atol=1e-12)


def test_caffe_convention_equals_torch_local_response_norm():
    x = torch.randn(2, 7, 3, 3, dtype=torch.float64) * 5
    expected = torch.nn.LocalResponseNorm(5, alpha=1e-2, beta=0.75, k=1.0)(x)
    for convention in ("caffe", "torch"):
        torch.testing.assert_close(lrn(x, 5, 1e-2, 0.75, 1.0, convention=convention), expected)
    # the paper's alpha is torch's alpha / n
    torch.testing.assert_close(lrn(x, 5, 1e-2 / 5, 0.75, 1.0, convention="paper"), expected)


def test_groups_normalise_within_each_group_only():
    x = torch.randn(1, 8, 3, 3, dtype=torch.float64)
    y = lrn(x, 5, 0.5, 0.75, 1.0, groups=2)
    torch.testing.assert_close(y[:, :4], lrn(x[:, :4].contiguous(), 5, 0.5, 0.75, 1.0))
    torch.testing.assert_close(y[:, 4:], lrn(x[:, 4:].contiguous(), 5, 0.5, 0.75, 1.0))


CASES = [  # (shape, size, groups, convention): odd C, partial blocks, even window sizes, groups
    ((2, 9, 5, 7), 5, 1, "paper"),
    ((1, 12, 3, 3), 5, 2, "paper"),
    ((2, 7, 6, 1), 4, 1, "caffe"),
    ((1, 33, 2, 17), 3, 3, "caffe"),
    ((3, 5, 1, 1), 1, 1, "paper"),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("layout", FORMATS)
@pytest.mark.parametrize("shape, size, groups, convention", CASES)
def test_forward_and_backward_match_the_reference(shape, size, groups, convention, layout, dtype):
    x = torch.randn(shape) * 3
    check_against_reference(
        lambda t: lrn(t, size, 1e-2, 0.75, 2.0, convention, groups),
        lambda t: reference.lrn(t, size, 1e-2, 0.75, 2.0, convention, groups),
        [x], dtype, memory_format=FORMATS[layout])


def tile_shapes():
    """Each config of the forward or the backward once."""
    shapes = {f"{c.kwargs}-warps{c.num_warps}": c for c in lrn_module._CONFIGS + lrn_module._BACKWARD_CONFIGS}
    return [pytest.param(config, id=name) for name, config in shapes.items()]


@pytest.mark.parametrize("config", tile_shapes())
@pytest.mark.parametrize("layout", FORMATS)
def test_every_tile_shape_gives_the_same_answer(config, layout):
    # groups of 40 channels: several channel blocks and halos across block edges for the narrow
    # tiles, one block with its halo outside the group for the wide ones; a window of 7
    x = torch.randn(2, 80, 5, 3) * 3
    with only_config(config, lrn_module._lrn_forward_kernel, lrn_module._lrn_backward_kernel):
        check_against_reference(lambda t: lrn(t, 7, 1e-2, 0.75, 2.0, "paper", 2),
                                lambda t: reference.lrn(t, 7, 1e-2, 0.75, 2.0, "paper", 2),
                                [x], torch.float32, memory_format=FORMATS[layout])


@pytest.mark.parametrize("configs", [lrn_module._CONFIGS, lrn_module._BACKWARD_CONFIGS], ids=["forward", "backward"])
def test_fp64_autotunes_over_the_smallest_tile_only(configs):
    kept = lrn_module._small_tiles_for_fp64(configs, {}, SIZE=5, FP64=True)
    size = lambda c: c.kwargs["BLOCK_P"] * c.kwargs["BLOCK_C"] ** 2  # noqa: E731  (the broadcast product)
    assert kept == [min(configs, key=size)]
    assert lrn_module._small_tiles_for_fp64(configs, {}, SIZE=5, FP64=False) == configs


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("layout", FORMATS)
def test_relu_on_load_is_lrn_of_relu(layout, dtype):
    # a conv's ReLU moved into the LRN: forward of relu(x), backward through ReLU's mask
    x = torch.randn(2, 40, 4, 5) * 3
    check_against_reference(lambda t: lrn(t, 5, 1e-2, 0.75, 2.0, "paper", 2, relu=True),
                            lambda t: reference.lrn(torch.relu(t), 5, 1e-2, 0.75, 2.0, "paper", 2),
                            [x], dtype, memory_format=FORMATS[layout])


def test_relu_on_load_passes_no_gradient_below_zero_and_keeps_nan():
    x = torch.tensor([-1.0, 0.5, 2.0, -3.0]).reshape(1, 4, 1, 1).requires_grad_(True)
    y = lrn(x, 3, 0.1, 0.75, 1.0, relu=True)
    assert y[0, 0].item() == 0 and y[0, 3].item() == 0 and y[0, 2].item() > 0
    y[0, 2].sum().backward()
    assert x.grad[0, 0].item() == 0 and x.grad[0, 3].item() == 0 and x.grad[0, 1].item() != 0
    assert lrn(torch.tensor([float("nan")]).reshape(1, 1, 1, 1), 3, relu=True).isnan().all()  # as torch.relu


@pytest.mark.slow
def test_gradcheck_float64():
    x = torch.randn(1, 6, 3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: lrn(t, 3, 0.3, 0.75, 1.0, groups=2), (x,))


@pytest.mark.slow
@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 2), groups=st.integers(1, 3), per_group=st.integers(1, 6), h=st.integers(1, 6),
       w=st.integers(1, 6), size=st.integers(1, 7), alpha=st.floats(0, 1), beta=st.floats(0, 2),
       k=st.floats(0.5, 3), convention=st.sampled_from(["paper", "caffe"]), nhwc=st.booleans())
def test_random_shapes_and_parameters(n, groups, per_group, h, w, size, alpha, beta, k, convention, nhwc):
    x = torch.randn(n, groups * per_group, h, w, dtype=torch.float64)
    check_against_reference(lambda t: lrn(t, size, alpha, beta, k, convention, groups),
                            lambda t: reference.lrn(t, size, alpha, beta, k, convention, groups),
                            [x], torch.float64, memory_format=FORMATS["nhwc" if nhwc else "nchw"])


def test_opcheck():
    x = torch.randn(2, 6, 3, 4, requires_grad=True)
    for relu in (False, True):
        torch.library.opcheck(torch.ops.alexspec.lrn_forward.default, (x, 5, 1e-2, 0.75, 2.0, 2, relu, True))
        y, scale = torch.ops.alexspec.lrn_forward(x.detach(), 5, 1e-2, 0.75, 2.0, 2, relu, True)
        torch.library.opcheck(torch.ops.alexspec.lrn_backward.default, (torch.randn_like(y), x.detach(), scale,
                                                                         5, 1e-2, 0.75, 2, relu))


def test_module_form():
    module = LRN(5, alpha=1e-4, beta=0.75, k=2.0, convention="paper", groups=2)
    x = torch.randn(1, 8, 3, 3)
    torch.testing.assert_close(module(x), reference.lrn(x, 5, 1e-4, 0.75, 2.0, "paper", 2))
    assert "convention='paper'" in repr(module) and "relu" not in repr(module)
    for backend in ("triton", "torch"):
        with_relu = LRN(5, alpha=1e-4, beta=0.75, k=2.0, convention="paper", groups=2, backend=backend, relu=True)
        torch.testing.assert_close(with_relu(x), reference.lrn(torch.relu(x), 5, 1e-4, 0.75, 2.0, "paper", 2))
        assert "relu=True" in repr(with_relu)


@pytest.mark.parametrize("call, message", [
    (lambda: lrn(torch.randn(2, 3, 4), 5), "x must be 4-D"),
    (lambda: lrn(torch.randn(1, 4, 2, 2).to(torch.int32), 5), "x has dtype int32"),
    (lambda: lrn(torch.randn(1, 4, 4, 4)[:, :, ::2], 5), "x must be contiguous"),
    (lambda: lrn(torch.randn(1, 6, 2, 2), 5, groups=4), "groups must be a positive int dividing the 6"),
    (lambda: lrn(torch.randn(1, 6, 2, 2), 0), "size must be a positive int"),
    (lambda: lrn(torch.randn(1, 6, 2, 2), 5, convention="tf"), "convention must be one of"),
    (lambda: lrn("x", 5), "x must be a torch.Tensor"),
])
def test_bad_input_names_the_argument(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_cpu_tensor_without_interpreter_is_refused(monkeypatch):
    from alexspec.kernels.ops import launch
    monkeypatch.setattr(launch, "INTERPRET", False)
    if torch.cuda.is_available():
        pytest.skip("a GPU machine runs the kernels for real")
    with pytest.raises(ValueError, match="x is on cpu; the Triton kernels run on CUDA"):
        lrn(torch.randn(1, 4, 2, 2), 5)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("layout", FORMATS)
@pytest.mark.parametrize("shape, groups", [((16, 96, 55, 55), 2), ((16, 256, 27, 27), 2), ((16, 96, 55, 55), 1)])
def test_alexnet_shapes_on_gpu(shape, groups, layout, dtype):
    x = torch.randn(shape, device="cuda") * 3
    check_against_reference(lambda t: lrn(t, 5, 1e-4, 0.75, 2.0, "paper", groups),
                            lambda t: reference.lrn(t, 5, 1e-4, 0.75, 2.0, "paper", groups),
                            [x], dtype, memory_format=FORMATS[layout])


@pytest.mark.gpu
@pytest.mark.parametrize("relu", [False, True])
def test_fast_log2_keeps_fp32_accuracy_where_the_scale_spans_decades(relu):
    # alpha 1e-2, k 1 and |x| up to ~20: scales from 1 to over 100, so scale**-beta and
    # scale**(-beta-1) (the GPU's approximate log2 on a GPU) are exercised far from 1
    x = torch.randn(8, 96, 27, 27, device="cuda") * 6
    check_against_reference(lambda t: lrn(t, 5, 1e-2, 0.75, 1.0, "paper", 2, relu=relu),
                            lambda t: reference.lrn(torch.relu(t) if relu else t, 5, 1e-2, 0.75, 1.0, "paper", 2),
                            [x], torch.float32, memory_format=torch.channels_last)

def test_reference_backward_passes_gradcheck():
    x = torch.randn(2, 7, 3, 2, dtype=torch.float64, requires_grad=True)
    for size, groups in ((5, 1), (4, 1), (3, 7), (2, 1)):
        assert torch.autograd.gradcheck(lambda t: reference.lrn(t, size, 0.3, 0.75, 1.0, "paper", groups), (x,))


def test_reference_forward_is_the_paper_formula():
    x = torch.randn(2, 9, 3, 3, dtype=torch.float64) * 10
    torch.testing.assert_close(reference.lrn(x, 5, 1e-4, 0.75, 2.0), paper_lrn_by_hand(x), rtol=1e-12, atol=1e-12)
