"""Triton kernels, one file per algorithm. Only `@triton.jit` code lives here; launchers are in `ops/`."""

from .implicit_gemm_fwd import _conv2d_fwd_implicit_gemm_kernel

__all__ = ["_conv2d_fwd_implicit_gemm_kernel"]
