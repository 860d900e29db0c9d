"""Triton kernels for the ops that make AlexNet slow in stock PyTorch, with their torch references.

    lrn(x, size, alpha, beta, k, convention="paper", groups=1)           LRN across channels
    max_pool2d(x, kernel, stride=None, padding=0, ceil_mode=False, relu=False)
    conv2d_bias_relu(x, weight, bias, stride=1, padding=0, groups=1, relu=True)
    lrn_max_pool2d(x, size, ..., kernel=3, stride=2, ..., relu=False)  LRN then max pooling, one kernel
    conv2d_bias_relu_lrn(x, weight, bias, stride, padding, groups, size, ..., lrn_groups=None)
                                                                      conv + bias + ReLU then LRN, one kernel

Each is autograd-aware and registered as a PyTorch custom op (torch.ops.alexspec.*), so
torch.compile traces through it and torch.export keeps it; eager calls run the same code as
a plain autograd.Function, which costs about half the host time. nn.Module forms with a
`backend` switch ("triton" or "torch") in nn/: layers.LRN, layers.MaxPool2d, layers.Conv2d,
layers.Linear; backend.resolve_backend picks one for a set of devices; towers places the
paper's towers on devices.

    ops/     one op a file (lrn, maxpool, lrn_pool, conv with conv_triton and conv_cudnn, conv_lrn, sgd),
             reference (the plain-torch definition of each, any device), launch (what they share)
    tuning/  autotune, ahead (every kernel a step launches compiled at once, before it),
             conv_choice (Triton or cuDNN per conv shape, whichever it timed faster), pretuned
             and gpu-choices/ (choices shipped per GPU model), stopwatch, resources
    nn/      layers, backend, towers

`ops.sgd.sgd_step_` is torch's SGD step of one weight in one pass that also writes the
weight's bf16 copy (alexspec.train.weight_copies).
The kernels run on CUDA tensors, or on CPU with TRITON_INTERPRET=1 set before triton is
imported (how the tests run them). Imported as `alexspec.kernels`; knows nothing of specs.
"""
import sys

from alexspec.kernels.ops import reference
from alexspec.kernels.ops.launch import triton_available
from alexspec.kernels.ops.conv import conv2d_bias_relu
from alexspec.kernels.ops.conv_lrn import conv2d_bias_relu_lrn
from alexspec.kernels.ops.lrn import lrn
from alexspec.kernels.ops.lrn_pool import lrn_max_pool2d
from alexspec.kernels.ops.maxpool import max_pool2d
from alexspec.kernels.nn import layers, towers
from alexspec.kernels.nn.backend import resolve_backend
from alexspec.kernels.nn.layers import LRN, Conv2d, Linear, MaxPool2d

# generated modules import alexspec.kernels.layers and .towers: the same modules as kernels.nn's
sys.modules[f"{__name__}.layers"], sys.modules[f"{__name__}.towers"] = layers, towers

__all__ = ["LRN", "Conv2d", "Linear", "MaxPool2d", "conv2d_bias_relu", "conv2d_bias_relu_lrn", "layers", "lrn", "lrn_max_pool2d",
           "max_pool2d", "reference", "resolve_backend", "towers", "triton_available"]
