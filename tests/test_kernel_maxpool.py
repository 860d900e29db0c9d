"""The Triton max-pool held to torch's, forward and backward: ties, NaN, padding, ceil mode, fused ReLU."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from kernel_helpers import FORMATS, check_against_reference, torch

import torch.nn.functional as F

from alexspec.kernels import MaxPool2d, max_pool2d
from alexspec.kernels.ops import reference

CASES = [  # (shape, kernel, stride, padding, ceil_mode)
    ((2, 5, 13, 13), 3, 2, 0, False),       # AlexNet's overlapping pool, odd C
    ((1, 3, 9, 12), 3, 2, 1, True),         # padding, ceil mode, partial last window
    ((2, 4, 7, 8), (2, 3), (1, 2), (1, 1), False),
    ((1, 17, 6, 6), 2, 2, 0, False),        # LeNet's pool, C over one block
    ((1, 2, 11, 11), 5, 3, 2, True),
    ((1, 1, 1, 1), 1, 1, 0, False),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("layout", FORMATS)
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("shape, kernel, stride, padding, ceil_mode", CASES)
def test_forward_and_backward_match_torch(shape, kernel, stride, padding, ceil_mode, relu, layout, dtype):
    x = torch.randn(shape)
    check_against_reference(lambda t: max_pool2d(t, kernel, stride, padding, ceil_mode, relu),
                            lambda t: reference.max_pool2d(t, kernel, stride, padding, ceil_mode, relu),
                            [x], dtype, memory_format=FORMATS[layout])


@pytest.mark.parametrize("layout", FORMATS)
def test_ties_send_the_gradient_where_torch_does(layout):
    x = torch.zeros(1, 2, 5, 5, dtype=torch.float64)
    x[0, 0, 1:4, 1:4] = 1.0               # one plateau shared by overlapping windows
    x[0, 1] = torch.tensor([[1.0, 2, 2, 0, 2]] * 5)
    x = x.contiguous(memory_format=FORMATS[layout]).requires_grad_()
    ours = max_pool2d(x, 3, 2)
    grad_ours, = torch.autograd.grad(ours, x, torch.arange(1.0, 9.0, dtype=torch.float64).view(1, 2, 2, 2))
    x_ref = x.detach().clone().requires_grad_()
    theirs = F.max_pool2d(x_ref, 3, 2)
    grad_theirs, = torch.autograd.grad(theirs, x_ref, torch.arange(1.0, 9.0, dtype=torch.float64).view(1, 2, 2, 2))
    assert torch.equal(ours, theirs)
    assert torch.equal(grad_ours, grad_theirs)


def test_nan_wins_like_torch():
    x = torch.randn(1, 1, 5, 5)
    x[0, 0, 2, 2] = float("nan")
    torch.testing.assert_close(max_pool2d(x, 3, 2), F.max_pool2d(x, 3, 2), equal_nan=True)


def test_all_minus_infinity_windows_pick_a_real_position():
    x = torch.full((1, 1, 4, 4), float("-inf"), requires_grad=True)
    y = max_pool2d(x, 3, 2, padding=1)
    grad, = torch.autograd.grad(y.sum(), x)
    x_ref = x.detach().clone().requires_grad_()
    grad_ref, = torch.autograd.grad(F.max_pool2d(x_ref, 3, 2, padding=1).sum(), x_ref)
    assert torch.equal(grad, grad_ref)


def test_saved_argmax_is_compact():
    y, idx = torch.ops.alexspec.max_pool2d_forward(torch.randn(2, 3, 13, 13), [3, 3], [2, 2], [0, 0], False, False,
                                                   True)
    assert idx.dtype == torch.int8 and idx.shape == y.shape == (2, 3, 6, 6)
    assert int(idx.min()) >= 0 and int(idx.max()) <= 8


@pytest.mark.slow
def test_gradcheck_float64():
    x = torch.randn(1, 2, 6, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: max_pool2d(t, 3, 2, 1, True, True), (x,))


@settings(max_examples=30, deadline=None)
@given(c=st.integers(1, 6), h=st.integers(1, 12), w=st.integers(1, 12), kh=st.integers(1, 4), kw=st.integers(1, 4),
       sh=st.integers(1, 3), sw=st.integers(1, 3), ceil_mode=st.booleans(), relu=st.booleans(), nhwc=st.booleans(),
       data=st.data())
def test_random_windows(c, h, w, kh, kw, sh, sw, ceil_mode, relu, nhwc, data):
    ph, pw = data.draw(st.integers(0, kh // 2)), data.draw(st.integers(0, kw // 2))
    if (h + 2 * ph - kh) < 0 or (w + 2 * pw - kw) < 0:
        return
    x = torch.randn(2, c, h, w, dtype=torch.float64).round(decimals=1)  # rounding makes ties common
    check_against_reference(lambda t: max_pool2d(t, (kh, kw), (sh, sw), (ph, pw), ceil_mode, relu),
                            lambda t: reference.max_pool2d(t, (kh, kw), (sh, sw), (ph, pw), ceil_mode, relu),
                            [x], torch.float64, memory_format=FORMATS["nhwc" if nhwc else "nchw"])


def test_a_1x1_image_is_both_layouts_and_pools_like_torch():
    x = torch.randn(2, 2, 1, 1, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    assert x.is_contiguous()  # channels-last of a 1x1 image is NCHW too: either output layout is right
    check_against_reference(lambda t: max_pool2d(t, (1, 2), (1, 1), (0, 1)),
                            lambda t: reference.max_pool2d(t, (1, 2), (1, 1), (0, 1)),
                            [x], torch.float64, memory_format=FORMATS["nhwc"])


def test_opcheck():
    x = torch.randn(2, 3, 7, 7, requires_grad=True)
    torch.library.opcheck(torch.ops.alexspec.max_pool2d_forward.default, (x, [3, 3], [2, 2], [1, 1], True, True, True))
    y, idx = torch.ops.alexspec.max_pool2d_forward(x.detach(), [3, 3], [2, 2], [1, 1], True, True, True)
    torch.library.opcheck(torch.ops.alexspec.max_pool2d_backward.default,
                          (torch.randn_like(y), idx, y, 7, 7, [3, 3], [2, 2], [1, 1]))


def test_module_form():
    x = torch.randn(1, 2, 9, 9)
    torch.testing.assert_close(MaxPool2d(3, 2, relu=True)(x), F.relu(F.max_pool2d(x, 3, 2)))


@pytest.mark.parametrize("call, message", [
    (lambda: max_pool2d(torch.randn(3, 9, 9), 3), "x must be 4-D"),
    (lambda: max_pool2d(torch.randn(1, 1, 9, 9), 3, padding=2), "at most half the kernel"),
    (lambda: max_pool2d(torch.randn(1, 1, 2, 2), 3), "too small for kernel"),
    (lambda: max_pool2d(torch.randn(1, 1, 9, 9), "3"), "kernel must be an int or a pair"),
    (lambda: max_pool2d(torch.randn(1, 1, 9, 9), 3, 0), "stride must be >= 1"),
    (lambda: max_pool2d(torch.randn(1, 4, 8, 8).transpose(2, 3), 2), "x must be contiguous"),
])
def test_bad_input_names_the_argument(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("layout", FORMATS)
@pytest.mark.parametrize("shape", [(32, 96, 55, 55), (32, 256, 27, 27), (32, 256, 13, 13)])
def test_alexnet_shapes_on_gpu(shape, layout, dtype):
    x = torch.randn(shape, device="cuda")
    check_against_reference(lambda t: max_pool2d(t, 3, 2), lambda t: reference.max_pool2d(t, 3, 2),
                            [x], dtype, memory_format=FORMATS[layout])
