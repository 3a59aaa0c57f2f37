"""Launchers: allocate outputs, pick a config, build the grid and launch a kernel (one module per pass)."""

from .forward import conv2d_fwd

__all__ = ["conv2d_fwd"]
