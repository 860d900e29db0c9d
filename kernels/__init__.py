"""Triton kernels for the ops that make AlexNet slow in stock PyTorch, with their torch references.

    lrn(x, size, alpha, beta, k, convention="paper", groups=1)           LRN across channels
    max_pool2d(x, kernel, stride=None, padding=0, ceil_mode=False, relu=False)
    conv2d_bias_relu(x, weight, bias, stride=1, padding=0, groups=1, relu=True)
    lrn_max_pool2d(x, size, ..., kernel=3, stride=2, ..., relu=False)  LRN then max pooling, one kernel

Each is autograd-aware and registered as a PyTorch custom op (torch.ops.alexspec.*), so
torch.compile traces through it and torch.export keeps it; eager calls run the same code as
a plain autograd.Function, which costs about half the host time. nn.Module forms with a
`backend` switch ("triton" or "torch"): layers.LRN, layers.MaxPool2d, layers.Conv2d,
layers.Linear; layers.resolve_backend picks one for a set of devices. On a GPU, conv_choice
runs each conv shape by the Triton kernel or cuDNN, whichever it timed faster. `reference`
holds the plain-torch definition of each op (any device). `ahead` compiles every kernel a
step will launch, all at once, before the step (what the trainer and the benchmark do).
`sgd.sgd_step_` is torch's SGD step of one weight in one pass that also writes the weight's
bf16 copy (alexspec.train.weight_copies).
The kernels run on CUDA tensors, or on CPU with TRITON_INTERPRET=1 set before triton is
imported (how the tests run them). Imported as `alexspec.kernels`; knows nothing of specs.
"""
from alexspec.kernels import reference
from alexspec.kernels._common import triton_available
from alexspec.kernels.conv import conv2d_bias_relu
from alexspec.kernels.lrn import lrn
from alexspec.kernels.lrn_pool import lrn_max_pool2d
from alexspec.kernels.maxpool import max_pool2d
from alexspec.kernels import layers  # noqa: E402  (after the ops it wraps)
from alexspec.kernels.layers import LRN, Conv2d, Linear, MaxPool2d, resolve_backend

__all__ = ["LRN", "Conv2d", "Linear", "MaxPool2d", "conv2d_bias_relu", "layers", "lrn", "lrn_max_pool2d",
           "max_pool2d", "reference", "resolve_backend", "triton_available"]
