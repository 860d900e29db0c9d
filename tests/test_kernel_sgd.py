"""The one-pass SGD step (kernels.sgd) held to torch.optim.SGD, its copy to a cast of the new weight."""
from __future__ import annotations

import pytest

from kernel_helpers import torch

from alexspec.kernels.ops import reference
from alexspec.kernels.ops.launch import INTERPRET
from alexspec.kernels.ops.sgd import _kernel_takes, sgd_step_ as torch_or_kernel_step


def sgd_step_(*args):
    """The kernel on the test's CPU tensors (interpreted), where they are CPU tensors."""
    return torch_or_kernel_step(*args, on_cpu=True)

CASES = [  # (shape, channels_last, momentum, nesterov, weight_decay, lr as a tensor)
    ((96, 3, 11, 11), False, 0.9, False, 5e-4, False),   # conv1, AlexNet's recipe
    ((16, 8, 3, 3), True, 0.9, True, 1e-3, True),       # channels-last, Nesterov, a graphed step's lr
    ((4099,), False, 0.0, False, 0.0, False),            # a bias over two blocks, plain SGD
    ((33, 70), False, 0.5, False, 0.0, True),
]


def torch_sgd_steps(param, grads, lr, momentum, nesterov, weight_decay):
    """The weights after torch.optim.SGD's steps on the fp32 values of `grads`."""
    p = torch.nn.Parameter(param.clone())
    opt = torch.optim.SGD([p], lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                          foreach=False)
    for grad in grads:
        p.grad = grad.float()
        opt.step()
    return p.detach()


@pytest.mark.parametrize("step", [sgd_step_, reference.sgd_step_], ids=["triton", "reference"])
@pytest.mark.parametrize("shape, channels_last, momentum, nesterov, weight_decay, lr_tensor", CASES)
def test_three_steps_from_bf16_gradients_match_torch_sgd_and_the_copy_is_the_cast(
        step, shape, channels_last, momentum, nesterov, weight_decay, lr_tensor):
    torch.manual_seed(0)
    form = torch.channels_last if channels_last else torch.contiguous_format
    param = torch.randn(shape).contiguous(memory_format=form)
    grads = [torch.randn(shape).to(torch.bfloat16).contiguous(memory_format=form) for _ in range(3)]
    expected = torch_sgd_steps(param, grads, 0.01, momentum, nesterov, weight_decay)
    if step is sgd_step_:
        assert _kernel_takes(param, grads[0], torch.zeros_like(param), None, 0.01, on_cpu=True)  # not the torch ops
    weight, buffer = param.clone(), torch.zeros_like(param)
    copy = weight.to(torch.bfloat16)
    lr = torch.tensor(0.01) if lr_tensor else 0.01
    for grad in grads:
        step(weight, grad, buffer, copy, lr, weight_decay, momentum, nesterov)
    torch.testing.assert_close(weight, expected, rtol=1e-6, atol=1e-7)
    assert_is_the_cast(copy, weight, interpreted=step is sgd_step_ and INTERPRET)
    assert copy.stride() == weight.stride()


def assert_is_the_cast(copy, weight, interpreted: bool):
    """copy == weight cast to bf16 (rounded to nearest even, as autocast casts); the interpreter
    truncates its fp32 -> bf16 conversions (a GPU rounds: see test_gpu_the_copy_is_the_cast),
    which is within one bf16 step."""
    if interpreted:
        torch.testing.assert_close(copy.float(), weight, rtol=2 ** -7, atol=0)
    else:
        assert torch.equal(copy, weight.to(torch.bfloat16))


@pytest.mark.gpu
def test_gpu_the_copy_is_the_cast_and_the_step_torch_sgds():
    torch.manual_seed(0)
    param = torch.randn(4096, 1000, device="cuda")
    grad = torch.randn(4096, 1000, device="cuda").bfloat16()
    expected = torch_sgd_steps(param, [grad], 0.01, 0.9, False, 5e-4)
    weight, buffer, copy = param.clone(), torch.zeros_like(param), torch.empty_like(param, dtype=torch.bfloat16)
    sgd_step_(weight, grad, buffer, copy, torch.tensor(0.01, device="cuda"), 5e-4, 0.9, False)
    torch.testing.assert_close(weight, expected, rtol=1e-6, atol=1e-7)
    assert torch.equal(copy, weight.to(torch.bfloat16))


def test_without_a_copy_only_the_weight_and_momentum_change():
    param, grad = torch.randn(300), torch.randn(300)
    weight, buffer = param.clone(), torch.zeros(300)
    sgd_step_(weight, grad, buffer, None, 0.1, 0.0, 0.9, False)
    torch.testing.assert_close(buffer, grad)  # the first step's momentum is the gradient (torch's clone)
    torch.testing.assert_close(weight, param - 0.1 * grad)


def test_momentum_without_a_buffer_is_refused():
    with pytest.raises(ValueError, match="momentum_buffer"):
        sgd_step_(torch.zeros(3), torch.zeros(3), None, None, 0.1, 0.0, 0.9, False)


def test_cpu_tensors_take_the_torch_ops_unless_asked():
    assert not _kernel_takes(torch.zeros(3), torch.zeros(3), None, None, 0.1)


def test_tensors_laid_out_unlike_the_weight_take_the_torch_ops():
    param = torch.randn(8, 4, 3, 3)
    grad = torch.randn(8, 4, 3, 3).contiguous(memory_format=torch.channels_last)
    assert not _kernel_takes(param, grad, None, None, 0.1, on_cpu=True)
    weight = param.clone()
    sgd_step_(weight, grad, None, None, 0.1, 0.0, 0.0, False)
    torch.testing.assert_close(weight, param - 0.1 * grad)
