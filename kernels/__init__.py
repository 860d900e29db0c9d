"""Triton kernels and their torch references (imported as `alexspec.kernels`)."""
