"""One helper to hold a kernel to its torch reference, forward and every gradient, per dtype."""
from __future__ import annotations

import contextlib

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

TOLERANCE = {  # (rtol, atol) against an fp64 reference run on the same (rounded) inputs
    torch.float64: (1e-10, 1e-12),
    torch.float32: (2e-5, 2e-5),
    torch.float16: (2e-3, 2e-3),
    torch.bfloat16: (1.6e-2, 1e-2),
}
FORMATS = {"nchw": torch.contiguous_format, "nhwc": torch.channels_last}


def check_against_reference(kernel, reference, inputs, dtype=torch.float32, tolerance=None, memory_format=None):
    """Run `kernel` on `inputs` cast to `dtype` and `reference` on fp64 copies of the same values;
    assert outputs and the gradients of every float input agree within the dtype's tolerance.

    `inputs` is a list; tensors in it are cast, other values are passed through. The first
    tensor is put in `memory_format` when given. Returns the kernel's output.
    """
    rtol, atol = tolerance or TOLERANCE[dtype]
    cast, ref_inputs = [], []
    for i, value in enumerate(inputs):
        if isinstance(value, torch.Tensor):
            t = value.to(dtype)
            if i == 0 and memory_format is not None:
                t = t.contiguous(memory_format=memory_format)
            t = t.detach().requires_grad_(True)
            cast.append(t)
            ref_inputs.append(t.detach().double().requires_grad_(True))
        else:
            cast.append(value)
            ref_inputs.append(value)
    y = kernel(*cast)
    y_ref = reference(*ref_inputs)
    assert y.dtype == dtype and y.shape == y_ref.shape
    if memory_format is not None:
        first = cast[0]
        if first.is_contiguous() and first.is_contiguous(memory_format=torch.channels_last):
            # both layouts at once (say, 1x1 images): either is right for the output, as for torch's ops
            assert y.is_contiguous() or y.is_contiguous(memory_format=torch.channels_last)
        else:
            assert y.is_contiguous(memory_format=memory_format)
    torch.testing.assert_close(y.double(), y_ref, rtol=rtol, atol=atol)
    grad = torch.randn_like(y_ref)
    tensors = [t for t in cast if isinstance(t, torch.Tensor)]
    ref_tensors = [t for t in ref_inputs if isinstance(t, torch.Tensor)]
    grads = torch.autograd.grad(y, tensors, grad.to(dtype))
    ref_grads = torch.autograd.grad(y_ref, ref_tensors, grad)
    for index, (g, g_ref) in enumerate(zip(grads, ref_grads)):
        scale = max(1.0, g_ref.abs().max().item())  # gradients sum many terms: compare relative to their size
        torch.testing.assert_close(g.double(), g_ref, rtol=rtol, atol=atol * scale,
                                   msg=lambda m: f"gradient of input {index}: {m}")
    return y


@contextlib.contextmanager
def only_config(config, *tuners):
    """Run `tuners` (triton Autotuners) with just `config`, none of their cached choices: the
    interpreter otherwise runs only the first config, and a GPU may choose any of them."""
    saved = [(tuner.configs, tuner.cache) for tuner in tuners]
    for tuner in tuners:
        tuner.configs, tuner.cache = [config], {}
    try:
        yield
    finally:
        for tuner, (configs, cache) in zip(tuners, saved):
            tuner.configs, tuner.cache = configs, cache
