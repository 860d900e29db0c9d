"""Interop: specs from torch.nn models and Caffe prototxt, export for inference, and spec diffs."""
