"""The Triton ops, one a file (kernels, launcher, custom op, autograd), their torch references
(reference.py) and what their launches share (launch.py)."""
