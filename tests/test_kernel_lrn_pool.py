"""The fused LRN + max-pool kernel held to the torch composition it replaces, forward and backward."""
from __future__ import annotations

import importlib

import pytest
from hypothesis import given, settings, strategies as st

from kernel_helpers import FORMATS, check_against_reference, torch

from alexspec.kernels import lrn, max_pool2d, reference
from alexspec.kernels.ops.lrn_pool import lrn_max_pool2d


def composed(x, size, alpha, beta, k, convention, groups, kernel, stride, padding, ceil_mode, relu):
    """What the fused op must equal: torch's relu, the LRN reference, torch's max pooling."""
    x = torch.relu(x) if relu else x
    y = reference.lrn(x, size, alpha, beta, k, convention, groups)
    return torch.nn.functional.max_pool2d(y, kernel, stride, padding, ceil_mode=ceil_mode)


def distinct(*shape):
    """Values with no ties (a tie's gradient may go either way), both signs, LRN in its nonlinear range."""
    n = 1
    for s in shape:
        n *= s
    return (torch.randperm(n, dtype=torch.float64) - n / 3).reshape(shape) / n * 40


@pytest.mark.parametrize("layout", FORMATS)
@pytest.mark.parametrize("relu", [False, True])
def test_alexnet_norm_pool_shape_fp64(layout, relu):
    args = [5, 1e-4, 0.75, 2.0, "paper", 1, 3, 2, 0, False, relu]
    check_against_reference(lrn_max_pool2d, composed, [distinct(2, 7, 11, 11), *args], torch.float64,
                            memory_format=FORMATS[layout])


def test_relu_mask_reaches_windows_that_are_all_negative():
    """Where a whole window is negative, relu makes it all zeros: the gradient must stop at the ReLU."""
    x = distinct(2, 6, 9, 9) - 20  # mostly negative
    check_against_reference(lrn_max_pool2d, composed, [x, 5, 1e-2, 0.75, 1.0, "paper", 1, 3, 2, 0, False, True],
                            torch.float64)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_lower_precisions(dtype):
    args = [5, 1e-2, 0.75, 1.0, "caffe", 2, 3, 2, 0, False, True]
    check_against_reference(lrn_max_pool2d, composed, [distinct(2, 8, 9, 9), *args], dtype)


def test_windows_that_leave_pixels_unvisited_give_them_zero_gradient():
    """Kernel 2, stride 3: every third row and column is in no window; its scale is never stored."""
    x = distinct(1, 4, 8, 8).requires_grad_(True)
    y = lrn_max_pool2d(x, 3, 1e-2, 0.75, 1.0, kernel=2, stride=3)
    y.backward(torch.ones_like(y))
    unvisited = x.grad[:, :, 2::3, :]
    assert torch.isfinite(x.grad).all() and (unvisited == 0).all()
    check_against_reference(lrn_max_pool2d, composed, [x.detach(), 3, 1e-2, 0.75, 1.0, "paper", 1, 2, 3, 0, False,
                                                       False], torch.float64)


@pytest.mark.slow
@settings(max_examples=25, deadline=None)
@given(channels=st.integers(1, 9), size=st.integers(1, 6), groups=st.sampled_from([1, 2, 3]),
       height=st.integers(3, 9), width=st.integers(3, 9), kernel=st.integers(2, 3), stride=st.integers(1, 3),
       padding=st.integers(0, 1), ceil_mode=st.booleans(), relu=st.booleans(), layout=st.sampled_from(list(FORMATS)))
def test_random_shapes_match_the_composition(channels, size, groups, height, width, kernel, stride, padding,
                                             ceil_mode, relu, layout):
    if channels % groups:
        groups = 1
    x = distinct(2, channels, height, width)
    check_against_reference(lrn_max_pool2d, composed, [x, size, 1e-2, 0.75, 1.0, "paper", groups, kernel, stride,
                                                       padding, ceil_mode, relu], torch.float64,
                            memory_format=FORMATS[layout])


def test_saves_no_lrn_output_for_backward():
    x = torch.randn(2, 6, 9, 9, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        lrn_max_pool2d(x, 5, relu=True)
    assert sorted(tuple(t.shape) for t in saved) == [(2, 6, 4, 4), (2, 6, 9, 9), (2, 6, 9, 9)]  # argmax, x, scale
    assert {t.dtype for t in saved} == {torch.int8, torch.float32}


def visited(height, width, kernel, stride, padding, ceil_mode):
    """(H, W) bool: the input pixels some pooling window covers (by brute force over the windows)."""
    out_h, out_w = (torch.nn.functional.max_pool2d(torch.zeros(1, 1, height, width), kernel, stride, padding,
                                                   ceil_mode=ceil_mode).shape[2:])
    mask = torch.zeros(height, width, dtype=torch.bool)
    for oh in range(out_h):
        for ow in range(out_w):
            top, left = oh * stride - padding, ow * stride - padding
            mask[max(top, 0):top + kernel, max(left, 0):left + kernel] = True
    return mask


@pytest.mark.slow
@settings(max_examples=20, deadline=None)
@given(height=st.integers(3, 11), width=st.integers(3, 11), kernel=st.integers(1, 4), stride=st.integers(1, 4),
       padding=st.integers(0, 2), ceil_mode=st.booleans(), layout=st.sampled_from(list(FORMATS)))
def test_the_scale_of_every_visited_pixel_is_stored(height, width, kernel, stride, padding, ceil_mode, layout):
    """Each pixel's LRN scale is stored by one window only; none may be missed. Two calls with other
    inputs, so that a missed pixel cannot hold a right value left over from the first."""
    padding = min(padding, kernel // 2)
    if (height + 2 * padding < kernel) or (width + 2 * padding < kernel):
        return
    args = (5, 1e-2, 0.75, 1.0, 1, [kernel] * 2, [stride] * 2, [padding] * 2, ceil_mode, True, True)
    seen = visited(height, width, kernel, stride, padding, ceil_mode)
    for _ in range(2):
        x = distinct(2, 6, height, width).contiguous(memory_format=FORMATS[layout])
        _, _, scale = torch.ops.alexspec.lrn_max_pool2d_forward(x, *args)
        squares = torch.nn.functional.pad(torch.relu(x) ** 2, (0, 0, 0, 0, 2, 2))
        expected = 1.0 + 1e-2 * sum(squares[:, d:d + 6] for d in range(5))
        torch.testing.assert_close(scale[:, :, seen], expected[:, :, seen])


@pytest.mark.parametrize("op, module, eager", [
    (lambda x: lrn_max_pool2d(x, 5, relu=True), "lrn_pool", "_eager_lrn_pool"),
    (lambda x: lrn(x, 5), "lrn", "_eager_lrn"),
    (lambda x: max_pool2d(x, 3, 2, relu=True), "maxpool", "_eager_max_pool"),
], ids=["lrn_max_pool2d", "lrn", "max_pool2d"])
def test_inference_writes_nothing_for_a_backward(op, module, eager, monkeypatch):
    """Without grad (inference) the ops leave the argmax and the LRN scale out; with it they keep them."""
    module = importlib.import_module(f"alexspec.kernels.ops.{module}")
    real, outputs = getattr(module, eager), []
    monkeypatch.setattr(module, eager, lambda *args: outputs.append(real(*args)) or outputs[-1])
    x = torch.randn(2, 6, 9, 9)
    for grad, kept in ((False, 0), (True, 1)):
        outputs.clear()
        with torch.set_grad_enabled(grad):
            y = op(x.clone().requires_grad_(grad))
        (output,) = outputs
        assert all((saved.numel() > 0) == kept for saved in output[1:])
        torch.testing.assert_close(y, op(x).detach())


def test_the_ops_leave_out_what_only_a_backward_reads():
    x = torch.randn(2, 6, 9, 9)
    _, idx, scale = torch.ops.alexspec.lrn_max_pool2d_forward(x, 5, 1e-4, 0.75, 2.0, 1, [3, 3], [2, 2], [0, 0], False,
                                                              True, False)
    _, lrn_scale = torch.ops.alexspec.lrn_forward(x, 5, 1e-4, 0.75, 2.0, 1, False, False)
    _, pool_idx = torch.ops.alexspec.max_pool2d_forward(x, [3, 3], [2, 2], [0, 0], False, True, False)
    assert idx.numel() == scale.numel() == lrn_scale.numel() == pool_idx.numel() == 0


@pytest.mark.slow
def test_opcheck_and_compile():
    x = torch.randn(2, 4, 7, 7, requires_grad=True)
    torch.library.opcheck(torch.ops.alexspec.lrn_max_pool2d_forward.default,
                          (x, 5, 1e-4, 0.75, 2.0, 1, [3, 3], [2, 2], [0, 0], False, True, True))
    torch.library.opcheck(torch.ops.alexspec.lrn_max_pool2d_forward.default,
                          (x.detach(), 5, 1e-4, 0.75, 2.0, 1, [3, 3], [2, 2], [0, 0], False, True, False))
    compiled = torch.compile(lambda t: lrn_max_pool2d(t, 5, relu=True), fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), lrn_max_pool2d(x, 5, relu=True))


@pytest.mark.parametrize("bad, message", [
    (dict(groups=4), "groups must be a positive int dividing the 6 channels"),
    (dict(kernel=3, padding=2), "must be at most half the kernel"),
    (dict(kernel=9), "too small for kernel"),
])
def test_bad_arguments_say_what_to_fix(bad, message):
    with pytest.raises(ValueError, match=message):
        lrn_max_pool2d(torch.randn(1, 6, 5, 5), 5, **bad)


@pytest.mark.gpu
@pytest.mark.parametrize("layout", FORMATS)
@pytest.mark.parametrize("shape, groups", [((8, 96, 55, 55), 2), ((8, 256, 27, 27), 2)])
def test_alexnet_shapes_on_gpu(shape, groups, layout):
    x = distinct(*shape).cuda()
    check_against_reference(lrn_max_pool2d, composed, [x, 5, 1e-4, 0.75, 2.0, "paper", groups, 3, 2, 0, False, True],
                            torch.float32, memory_format=FORMATS[layout])
