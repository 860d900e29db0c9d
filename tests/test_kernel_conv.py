"""The Triton conv + bias + ReLU held to torch's conv2d, forward and every gradient, on AlexNet's shapes."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings, strategies as st

from kernel_helpers import FORMATS, check_against_reference, only_config, torch

from alexspec.kernels import Conv2d, conv2d_bias_relu
from alexspec.kernels.ops import conv as conv_module, conv_cudnn, conv_triton, reference
from alexspec.kernels.tuning import conv_choice

# AlexNet's five convolutions at small spatial sizes (and fewer channels where the interpreter
# would be slow), keeping what makes each hard: 11x11 stride 4, 5x5 pad 2 in two groups,
# 3x3 pad 1 with and without groups; channel counts that do not fill a block.
CASES = {  # name: (input shape, out channels, kernel, stride, padding, groups)
    "conv1 11x11/4": ((2, 3, 27, 31), 10, 11, 4, 0, 1),
    "conv2 5x5 pad 2 groups 2": ((2, 12, 9, 9), 20, 5, 1, 2, 2),
    "conv3 3x3 pad 1": ((1, 24, 6, 7), 18, 3, 1, 1, 1),
    "conv4 3x3 pad 1 groups 2": ((1, 18, 5, 5), 18, 3, 1, 1, 2),
    "conv5 3x3 pad 1 groups 2, odd": ((2, 14, 5, 6), 10, 3, 1, 1, 2),
    "non-square": ((1, 5, 8, 9), 7, (3, 2), (1, 2), (1, 0), 1),
    "non-square, padded across only": ((1, 4, 7, 8), 6, (2, 3), (2, 1), (0, 1), 1),
    "1x1": ((1, 6, 4, 4), 33, 1, 1, 0, 3),
}


def make(case, dtype=torch.float32, bias=True):
    shape, out, kernel, stride, padding, groups = CASES[case]
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    x = torch.randn(shape)
    weight = torch.randn(out, shape[1] // groups, kh, kw) / (shape[1] // groups * kh * kw) ** 0.5
    b = torch.randn(out) if bias else None
    return x, weight, b, stride, padding, groups


@pytest.mark.parametrize("implementation", ["triton", "cudnn"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("layout", FORMATS)
@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("case", sorted(CASES))
def test_forward_and_gradients_match_torch(case, relu, layout, dtype, implementation):
    x, weight, bias, stride, padding, groups = make(case)
    tolerance = (1e-4, 1e-4) if dtype == torch.float32 else None  # long sums
    with conv_choice.using(implementation):
        check_against_reference(
            lambda x, w, b: conv2d_bias_relu(x, w, b, stride, padding, groups, relu),
            lambda x, w, b: reference.conv2d_bias_relu(x, w, b, stride, padding, groups, relu),
            [x, weight, bias], dtype, tolerance=tolerance, memory_format=FORMATS[layout])


@settings(max_examples=25, deadline=None)
@given(groups=st.integers(1, 3), icg=st.integers(1, 5), ocg=st.integers(1, 5), kh=st.integers(1, 4),
       kw=st.integers(1, 4), sh=st.integers(1, 3), sw=st.integers(1, 3), relu=st.booleans(), bias=st.booleans(),
       nhwc=st.booleans(), slices=st.integers(1, 3), data=st.data())
def test_random_convs_match_torch(groups, icg, ocg, kh, kw, sh, sw, relu, bias, nhwc, slices, data):
    # any window, step, padding and grouping the kernels take, forward and every gradient (dx by the
    # flipped-weight forward where the stride is 1), the weight gradient summed in 1-3 slices
    ph, pw = data.draw(st.integers(0, kh - 1)), data.draw(st.integers(0, kw - 1))
    torch.manual_seed(0)  # the same values each time hypothesis replays an example
    h = data.draw(st.integers(max(1, kh - 2 * ph), 10))
    w = data.draw(st.integers(max(1, kw - 2 * pw), 10))
    x = torch.randn(data.draw(st.integers(1, 2)), groups * icg, h, w)
    weight = torch.randn(groups * ocg, icg, kh, kw) / (icg * kh * kw) ** 0.5
    b = torch.randn(groups * ocg) if bias else None
    args = ((sh, sw), (ph, pw), groups, relu)
    with pytest.MonkeyPatch.context() as patched, conv_choice.using("triton"):
        patched.setattr(conv_triton, "slices", lambda pixels, tiles, device: slices)
        check_against_reference(lambda x, w, b: conv2d_bias_relu(x, w, b, *args),
                                lambda x, w, b: reference.conv2d_bias_relu(x, w, b, *args),
                                [x, weight, b], torch.float32, tolerance=(1e-4, 1e-4),
                                memory_format=torch.channels_last if nhwc else torch.contiguous_format)


def test_the_weight_gradient_takes_as_many_slices_as_fill_the_gpu():
    # AlexNet's convs at batch 256 on an H100 (132 SMs): (pixels, 64x64 tiles over the groups)
    cpu = torch.device("cpu")  # counted as an H100
    shapes = {"conv1": (256 * 55 * 55, 2 * 6), "conv2": (256 * 27 * 27, 2 * 19 * 2),
              "conv3": (256 * 13 * 13, 6 * 36), "conv5": (256 * 13 * 13, 2 * 27 * 2)}
    found = {name: conv_triton.slices(pixels, tiles, cpu) for name, (pixels, tiles) in shapes.items()}
    assert found == {"conv1": 64, "conv2": 14, "conv3": 5, "conv5": 10}
    for name, (pixels, tiles) in shapes.items():  # at least 8 programs an SM, no more slices than that needs
        assert found[name] * tiles >= 8 * 132 > (found[name] - 1) * tiles or found[name] == 64
    assert conv_triton.slices(2048 * 3 - 1, 1, cpu) == 2  # each slice at least 2,048 pixels
    assert conv_triton.slices(100, 1, cpu) == 1


@pytest.mark.parametrize("slices", [1, 3, 7])
@pytest.mark.parametrize("case", ["conv1 11x11/4", "conv2 5x5 pad 2 groups 2", "non-square"])
def test_the_weight_gradient_summed_in_slices_is_the_whole_sum(case, slices, monkeypatch):
    # on a GPU the sum over N*OH*OW pixels is cut into slices (uneven here) whose parts are added after
    monkeypatch.setattr(conv_triton, "slices", lambda pixels, tiles, device: slices)
    x, weight, bias, stride, padding, groups = make(case)
    with conv_choice.using("triton"):
        check_against_reference(lambda x, w, b: conv2d_bias_relu(x, w, b, stride, padding, groups),
                                lambda x, w, b: reference.conv2d_bias_relu(x, w, b, stride, padding, groups),
                                [x, weight, bias], torch.float64)


def test_deterministic_algorithms_sum_the_weight_gradient_in_one_slice(monkeypatch):
    # slices add into dw in the order they finish; torch's deterministic mode gets one slice, one add
    monkeypatch.setattr(conv_triton, "slices", lambda pixels, tiles, device: pytest.fail("cut into slices"))
    x, weight, bias, stride, padding, groups = make("conv2 5x5 pad 2 groups 2")
    dy = torch.randn(2, 20, 9, 9)
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        dw, db = conv_triton.weight_grad(dy, x, weight.shape, [stride] * 2, [padding] * 2, groups, bias=True)
    finally:
        torch.use_deterministic_algorithms(was)
    expected = torch.ops.aten.convolution_backward(dy, x, weight, [20], [stride] * 2, [padding] * 2, [1, 1],
                                                   False, [0, 0], groups, [False, True, True])
    torch.testing.assert_close(dw, expected[1], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(db, expected[2], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("config", conv_triton._CONFIGS, ids=lambda c: f"{c.kwargs}-warps{c.num_warps}")
def test_every_forward_tile_gives_the_same_answer(config):
    # channels that fill no tile, and more pixels than the largest tile's 128
    x, weight, bias, stride, padding, groups = make("conv3 3x3 pad 1")
    x = torch.randn(4, 24, 6, 7).to(memory_format=torch.channels_last)
    with conv_choice.using("triton"), only_config(config, conv_triton._conv_forward_kernel):
        ours = conv2d_bias_relu(x, weight, bias, stride, padding, groups)
    torch.testing.assert_close(ours, reference.conv2d_bias_relu(x, weight, bias, stride, padding, groups),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("config", conv_triton._WEIGHT_GRAD_CONFIGS, ids=lambda c: f"{c.kwargs}-warps{c.num_warps}")
def test_every_weight_gradient_tile_gives_the_same_answer(config):
    x, weight, bias, stride, padding, groups = make("conv5 3x3 pad 1 groups 2, odd")
    with conv_choice.using("triton"), only_config(config, conv_triton._conv_weight_grad_kernel):
        check_against_reference(lambda x, w, b: conv2d_bias_relu(x, w, b, stride, padding, groups),
                                lambda x, w, b: reference.conv2d_bias_relu(x, w, b, stride, padding, groups),
                                [x, weight, bias], torch.float32, tolerance=(1e-4, 1e-4),
                                memory_format=torch.channels_last)


def test_the_backward_is_chosen_per_shape_like_the_forward(monkeypatch):
    monkeypatch.setattr(conv_choice._state, "chosen", {})
    monkeypatch.setattr(conv_choice, "_do_bench", lambda run: run() is None or 1.0)
    monkeypatch.setattr(conv_module, "_can_time", lambda x: True)
    x, weight, bias, stride, padding, groups = make("conv3 3x3 pad 1")
    x.requires_grad_()
    with conv_choice.using("auto"):
        conv2d_bias_relu(x, weight.requires_grad_(), bias, stride, padding, groups).sum().backward()
    shapes = [entry["shape"] for entry in conv_choice.choices()]
    assert len(shapes) == 2 and shapes[0].endswith("relu True") and shapes[1].endswith("backward of dx dw")


@pytest.mark.parametrize("winner", ["triton+cudnn", "cudnn+triton"])
def test_a_backward_may_take_each_gradient_from_the_faster_implementation(monkeypatch, winner):
    # timed in order: triton, cudnn, triton+cudnn, cudnn+triton; the winner is said to be fastest
    monkeypatch.setattr(conv_choice._state, "chosen", {})
    monkeypatch.setattr(conv_module, "_can_time", lambda x: True)
    timed = []

    def timer(run):
        run()
        timed.append(len(timed))
        return 1.0 if ["triton", "cudnn", "triton+cudnn", "cudnn+triton"][len(timed) - 1] == winner else 2.0

    monkeypatch.setattr(conv_choice, "_do_bench", lambda run: timer(run) if len(conv_choice.choices()) else 1.0)
    x, weight, bias, stride, padding, groups = make("conv2 5x5 pad 2 groups 2")
    with conv_choice.using("auto"):
        check_against_reference(lambda x, w, b: conv2d_bias_relu(x, w, b, stride, padding, groups),
                                lambda x, w, b: reference.conv2d_bias_relu(x, w, b, stride, padding, groups),
                                [x, weight, bias], torch.float32, tolerance=(1e-4, 1e-4))
    forward, backward = conv_choice.choices()
    assert backward["implementation"] == winner and backward["shape"].endswith("backward of dx dw db")
    assert {key for key in backward if key.endswith("_ms")} == \
        {"triton_ms", "cudnn_ms", "triton+cudnn_ms", "cudnn+triton_ms"}


def test_a_strided_conv_or_one_without_dx_times_only_the_two_backwards(monkeypatch):
    monkeypatch.setattr(conv_choice._state, "chosen", {})
    monkeypatch.setattr(conv_choice, "_do_bench", lambda run: run() is None or 1.0)
    monkeypatch.setattr(conv_module, "_can_time", lambda x: True)
    for case, x_grad in (("conv1 11x11/4", True), ("conv3 3x3 pad 1", False)):
        x, weight, bias, stride, padding, groups = make(case)
        with conv_choice.using("auto"):
            conv2d_bias_relu(x.requires_grad_(x_grad), weight.requires_grad_(), bias, stride, padding,
                             groups).sum().backward()
    backwards = [entry for entry in conv_choice.choices() if "backward" in entry["shape"]]
    assert len(backwards) == 2
    assert all({key for key in entry if key.endswith("_ms")} == {"triton_ms", "cudnn_ms"} for entry in backwards)


def test_cudnn_on_channels_padded_to_eight_is_the_same_conv():
    x, weight, bias, stride, padding, groups = make("conv1 11x11/4")
    x = x.contiguous(memory_format=torch.channels_last)
    stride, padding = [stride, stride], [padding, padding]  # as the op passes them
    y = conv_cudnn.padded_forward(x, weight, bias, stride, padding, groups, True)
    torch.testing.assert_close(y, reference.conv2d_bias_relu(x, weight, bias, stride, padding, groups),
                               rtol=1e-4, atol=1e-4)
    assert y.is_contiguous(memory_format=torch.channels_last)
    dy = torch.randn_like(y)
    dx, dw, db = conv_cudnn.padded_backward(dy, x, weight, True, stride, padding, groups, [True, True, True])
    expected = conv_cudnn.backward(dy, x, weight, True, stride, padding, groups, [True, True, True])
    for got, want in zip((dx, dw, db), expected):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert dx.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("case, dtype, layout, timed", [
    ("conv1 11x11/4", torch.bfloat16, torch.channels_last, True),        # conv1 as bf16 training runs it
    ("conv1 11x11/4", torch.float32, torch.channels_last, False),        # cuDNN's fp32 kernels do not need it
    ("conv1 11x11/4", torch.bfloat16, torch.contiguous_format, False),
    ("conv2 5x5 pad 2 groups 2", torch.bfloat16, torch.channels_last, False),  # groups: not padded
])
def test_padded_channels_are_timed_only_where_cudnn_needs_them(monkeypatch, case, dtype, layout, timed):
    monkeypatch.setattr(conv_choice._state, "chosen", {})
    monkeypatch.setattr(conv_module, "_can_time", lambda x: True)

    def timer(run):
        run()
        return 1.0 if run.func.__name__.startswith("padded_") else 2.0  # cudnn_c8, where offered, wins

    monkeypatch.setattr(conv_choice, "_do_bench", timer)
    x, weight, bias, stride, padding, groups = make(case)
    x = x.to(dtype).contiguous(memory_format=layout)
    weight, bias = weight.to(dtype).requires_grad_(), bias.to(dtype)
    with conv_choice.using("auto"):
        y = conv2d_bias_relu(x, weight, bias, stride, padding, groups)
        y.float().sum().backward()
    forward, backward = conv_choice.choices()
    names = {"triton", "cudnn", "cudnn_c8"} if timed else {"triton", "cudnn"}
    for entry in (forward, backward):
        assert {key[:-3] for key in entry if key.endswith("_ms")} == names
        assert entry["implementation"] == ("cudnn_c8" if timed else "triton")
    torch.testing.assert_close(y.float(), reference.conv2d_bias_relu(x.float(), weight.float(), bias.float(), stride,
                                                                     padding, groups), rtol=2e-2, atol=2e-2)


def quotient_as_the_kernel_computes_it(n, d):
    """_quotient's arithmetic in numpy: fp32 (n + 0.5) times fp32(1 / d), truncated."""
    import numpy as np

    return ((n.astype(np.float32) + np.float32(0.5)) * np.float32(1.0 / d)).astype(np.int64)


def test_the_division_by_multiplying_is_exact_below_its_limit():
    # the numbers nearest an error: each multiple of d and the one before it, for every divisor
    # up to 5,000 (output image sizes and widths), all below _SMALL + the widest tile
    import numpy as np

    limit = conv_triton._SMALL + 256
    for d in range(1, 5001):
        multiples = np.arange(0, limit, d, dtype=np.int64)
        n = np.concatenate([multiples, multiples[1:] - 1, np.array([limit - 1])])
        assert np.array_equal(quotient_as_the_kernel_computes_it(n, d), n // d), d
    # and the kernel computes it so (the interpreter's fp32 arithmetic)
    import triton
    import triton.language as tl

    @triton.jit
    def quotients(n_ptr, q_ptr, inverse, BLOCK: tl.constexpr):
        i = tl.arange(0, BLOCK)
        tl.store(q_ptr + i, conv_triton._quotient(tl.load(n_ptr + i), inverse))

    n = torch.tensor(sorted({0, 1} | {3025 * j + e for j in range(1, 8) for e in (-1, 0)}), dtype=torch.int32)
    q = torch.empty(16, dtype=torch.int32)
    quotients[(1,)](n, q, 1.0 / 3025, BLOCK=16)
    assert q.tolist() == (n // 3025).tolist()


def test_the_weight_gradient_refuses_what_it_cannot_index(monkeypatch):
    monkeypatch.setattr(conv_triton, "_SMALL", 50)  # a 7x8 output is over it
    with pytest.raises(ValueError, match="output images under 50 pixels.*ALEXSPEC_CONV=cudnn"):
        conv_triton.check_weight_grad_takes(torch.empty(1, 2, 7, 8))
    conv_triton.check_weight_grad_takes(torch.empty(1, 2, 7, 7))


def test_cudnn_path_keeps_the_dtype_under_autocast():
    x, weight, bias, stride, padding, groups = make("conv3 3x3 pad 1")
    with conv_choice.using("cudnn"), torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv2d_bias_relu(x, weight, bias, stride, padding, groups)
    assert y.dtype == torch.float32  # the op computes in its inputs' dtype, as the Triton kernel does
    torch.testing.assert_close(y, reference.conv2d_bias_relu(x, weight, bias, stride, padding, groups))


def test_auto_times_each_shape_once_and_runs_the_faster(monkeypatch):
    """The wiring of conv_forward to conv_choice, with a timer that runs each candidate (so both
    implementations really execute) and says cuDNN is faster."""
    timed = []

    def timer(run):
        run()
        timed.append(run)
        return 1.0 if len(timed) % 2 == 0 else 2.0  # candidates come in order: triton, cudnn

    monkeypatch.setattr(conv_choice, "_do_bench", timer)
    monkeypatch.setattr(conv_choice._state, "chosen", {})
    monkeypatch.setattr(conv_module, "_can_time", lambda x: True)
    real, ran = dict(conv_module._IMPLEMENTATIONS), []

    def recording(name):
        def run(*args):
            ran.append(name)
            return real[name](*args)
        return run

    monkeypatch.setattr(conv_module, "_IMPLEMENTATIONS", {name: recording(name) for name in real})
    x, weight, bias, stride, padding, groups = make("conv2 5x5 pad 2 groups 2")
    with conv_choice.using("auto"):
        for _ in range(3):
            y = conv2d_bias_relu(x, weight, bias, stride, padding, groups)
            torch.testing.assert_close(y, reference.conv2d_bias_relu(x, weight, bias, stride, padding, groups),
                                       rtol=1e-4, atol=1e-4)
        assert len(timed) == 2  # the first call timed both, the next two reused the choice
        assert ran == ["triton", "cudnn", "cudnn", "cudnn", "cudnn"]
        (entry,) = conv_choice.choices()
        assert entry["implementation"] == "cudnn" and entry["triton_ms"] == 2.0 and entry["cudnn_ms"] == 1.0
        assert entry["shape"].startswith("x [2, 12, 9, 9] nchw float32, weight [20, 6, 5, 5]")
        conv2d_bias_relu(x.contiguous(memory_format=torch.channels_last), weight, bias, stride, padding, groups)
        assert len(conv_choice.choices()) == 2 and len(timed) == 4  # another layout is another shape


def test_choose_falls_back_to_triton_where_it_cannot_time(monkeypatch):
    monkeypatch.setattr(conv_choice._state, "chosen", {})
    calls = []
    choose = lambda can_time: conv_choice.choose(("key",), lambda: "shape", {"triton": None, "cudnn": None}, (),
                                                 lambda: can_time, timer=lambda run: calls.append(run) or 1.0)
    with conv_choice.using("auto"):
        assert choose(can_time=False) == "triton" and not calls and not conv_choice.choices()
    for forced in ("triton", "cudnn"):
        with conv_choice.using(forced):
            assert choose(can_time=True) == forced and not calls


def test_an_implementation_that_fails_is_left_out_with_a_warning(monkeypatch):
    monkeypatch.setattr(conv_choice._state, "chosen", {})

    def broken():
        raise RuntimeError("PTX too new for this driver")

    implementations = {"triton": broken, "cudnn": lambda: "ran"}
    with conv_choice.using("auto"), pytest.warns(UserWarning, match="the triton implementation failed"):
        assert conv_choice.choose(("k",), lambda: "x [1]", implementations, (), lambda: True,
                                  timer=lambda run: run() and 1.0) == "cudnn"
    assert conv_choice.choices() == [{"shape": "x [1]", "implementation": "cudnn", "triton_ms": None,
                                      "cudnn_ms": 1.0}]
    with conv_choice.using("auto"), pytest.raises(RuntimeError, match="PTX"), pytest.warns(UserWarning):
        conv_choice.choose(("other",), lambda: "x [2]", {"triton": broken}, (), lambda: True, timer=lambda r: r())


def test_an_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="one of auto, triton, cudnn"):
        conv_choice.set_mode("cublas")
    assert conv_choice.mode() in conv_choice.MODES


def test_without_bias():
    x, weight, _, stride, padding, groups = make("conv2 5x5 pad 2 groups 2", bias=False)
    check_against_reference(lambda x, w: conv2d_bias_relu(x, w, None, stride, padding, groups),
                            lambda x, w: reference.conv2d_bias_relu(x, w, None, stride, padding, groups),
                            [x, weight], torch.float64)


def test_input_without_grad_gets_none():
    x, weight, bias, stride, padding, groups = make("conv1 11x11/4")
    weight.requires_grad_()
    y = conv2d_bias_relu(x, weight, bias, stride, padding, groups)
    (dw,) = torch.autograd.grad(y.sum(), [weight])
    assert dw.shape == weight.shape


@pytest.mark.slow
def test_gradcheck_float64():
    x = torch.randn(1, 4, 5, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: conv2d_bias_relu(x, w, b, 2, 1, 2, relu=False), (x, w, b))


def test_opcheck():
    x, w, b = torch.randn(1, 4, 6, 6, requires_grad=True), torch.randn(6, 2, 3, 3, requires_grad=True), \
        torch.randn(6, requires_grad=True)
    torch.library.opcheck(torch.ops.alexspec.conv2d_bias_relu_forward.default, (x, w, b, [1, 1], [1, 1], 2, True))
    y = torch.ops.alexspec.conv2d_bias_relu_forward(x.detach(), w.detach(), b.detach(), [1, 1], [1, 1], 2, True)
    torch.library.opcheck(torch.ops.alexspec.conv2d_bias_relu_backward.default,
                          (torch.randn_like(y), x.detach(), w.detach(), y, True, [1, 1], [1, 1], 2, True,
                           [True, True, True]))


def test_module_form_uses_pytorch_default_init():
    torch.manual_seed(0)
    module = Conv2d(4, 6, 3, padding=1, groups=2, relu=True)
    torch.manual_seed(0)
    stock = torch.nn.Conv2d(4, 6, 3, padding=1, groups=2)
    assert torch.equal(module.weight, stock.weight) and torch.equal(module.bias, stock.bias)
    x = torch.randn(1, 4, 5, 5)
    torch.testing.assert_close(module(x), torch.relu(stock(x)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("call, message", [
    (lambda: conv2d_bias_relu(torch.randn(1, 4, 5, 5), torch.randn(6, 3, 3, 3)), "weight expects 3 input channels"),
    (lambda: conv2d_bias_relu(torch.randn(1, 4, 5, 5), torch.randn(6, 4, 3, 3), torch.randn(5)), "bias has 5"),
    (lambda: conv2d_bias_relu(torch.randn(1, 4, 5, 5), torch.randn(6, 4, 3, 3).double()), "weight has dtype"),
    (lambda: conv2d_bias_relu(torch.randn(1, 4, 5, 5), torch.randn(6, 2, 3, 3), groups=3), "groups must be"),
    (lambda: conv2d_bias_relu(torch.randn(1, 4, 2, 2), torch.randn(6, 4, 3, 3)), "too small for kernel"),
    (lambda: conv2d_bias_relu(torch.randn(4, 5, 5), torch.randn(6, 4, 3, 3)), "x must be 4-D"),
    (lambda: conv2d_bias_relu(torch.randn(1, 4, 5, 5), torch.randn(6, 4, 3, 3), stride=(1, 0)), "stride must be"),
])
def test_bad_input_names_the_argument(call, message):
    with pytest.raises(ValueError, match=message):
        call()


GPU_SHAPES = {  # the real AlexNet layers at batch 16 (one device: towers as groups)
    "conv1": ((16, 3, 227, 227), 96, 11, 4, 0, 1),
    "conv2": ((16, 96, 27, 27), 256, 5, 1, 2, 2),
    "conv3": ((16, 256, 13, 13), 384, 3, 1, 1, 1),
    "conv4": ((16, 384, 13, 13), 384, 3, 1, 1, 2),
    "conv5": ((16, 384, 13, 13), 256, 3, 1, 1, 2),
}


@pytest.mark.gpu
@pytest.mark.parametrize("implementation", ["auto", "triton", "cudnn"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("layout", FORMATS)
@pytest.mark.parametrize("layer", sorted(GPU_SHAPES))
def test_alexnet_layers_on_gpu(layer, layout, dtype, implementation):
    shape, out, kernel, stride, padding, groups = GPU_SHAPES[layer]
    x = torch.randn(shape, device="cuda")
    w = torch.randn(out, shape[1] // groups, kernel, kernel, device="cuda") / (shape[1] // groups * kernel ** 2) ** 0.5
    b = torch.randn(out, device="cuda")
    tolerance = (2e-3, 2e-3) if dtype == torch.float32 else (3e-2, 3e-2)  # TF32 / bf16 products
    kept = {}

    def ours(x, w, b):
        kept["y"] = conv2d_bias_relu(x, w, b, stride, padding, groups)
        return kept["y"]

    def theirs(x, w, b):
        """fp64 conv + bias through the ReLU mask of the output we computed: an output within
        rounding of 0 (TF32, bf16) may fall on the other side of it than in fp64, which changes
        the gradient by a whole dy * w there; the backward must match the forward it follows."""
        y = reference.conv2d_bias_relu(x, w, b, stride, padding, groups, relu=False)
        return torch.where(kept["y"] > 0, y, torch.zeros((), dtype=y.dtype, device=y.device))

    with conv_choice.using(implementation):
        check_against_reference(ours, theirs, [x, w, b], dtype, tolerance=tolerance, memory_format=FORMATS[layout])
    plain = reference.conv2d_bias_relu(*(t.to(dtype).double() for t in (x, w, b)), stride, padding, groups)
    torch.testing.assert_close(kept["y"].double(), plain, rtol=tolerance[0], atol=tolerance[1])  # the plain ReLU
    if implementation == "auto":  # this shape was timed both ways (or earlier in the session)
        assert any(entry["shape"].startswith(f"x {list(shape)} {layout}") for entry in conv_choice.choices())


def test_without_relu_the_output_is_not_kept_for_backward():
    x = torch.randn(2, 3, 9, 9, requires_grad=True)
    weight = torch.randn(4, 3, 3, 3, requires_grad=True)
    for relu, expected in ((True, 3), (False, 2)):  # x, weight (+ the output for the ReLU mask)
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
            y = conv2d_bias_relu(x, weight, None, relu=relu)
        assert len(saved) == expected
        assert not any(t.shape == y.shape for t in saved) or relu
        y.sum().backward()


def test_a_choice_is_kept_for_the_next_process_on_the_same_machine(tmp_path, monkeypatch):
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(conv_choice._state, "chosen", {})
    monkeypatch.setattr(conv_choice._state, "stored", None)
    implementations = {"triton": lambda: None, "cudnn": lambda: None}
    times = iter([2.0, 1.0])

    def choose(machine, timer=lambda run: next(times)):
        return conv_choice.choose(("k",), lambda: "x [1] nhwc", implementations, (), lambda: True, timer=timer,
                                  machine=lambda: machine)

    with conv_choice.using("auto"):
        assert choose("H100, torch 2.11") == "cudnn"
        kept = json.loads(conv_choice.store_path().read_text())
        assert kept == {"H100, torch 2.11 | x [1] nhwc": {"shape": "x [1] nhwc", "implementation": "cudnn",
                                                          "triton_ms": 2.0, "cudnn_ms": 1.0}}
        conv_choice.forget()  # as a new process: the file answers, nothing is timed
        assert choose("H100, torch 2.11", timer=lambda run: pytest.fail("timed again")) == "cudnn"
        conv_choice.forget()  # another GPU or versions: timed
        assert choose("A100, torch 2.11", timer=lambda run: 5.0) == "triton"
        assert len(json.loads(conv_choice.store_path().read_text())) == 2
        conv_choice.store_path().write_text("{not json")
        conv_choice.forget()  # an unreadable file is timed over
        assert choose("H100, torch 2.11", timer=lambda run: 3.0) == "triton"
