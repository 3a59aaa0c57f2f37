"""Host-side tensor descriptors (TMA on Hopper): whether a call can use them, and re-pointing a
prepared descriptor at a new call's tensor without validating it again."""

from __future__ import annotations

import functools

import torch

from ..problem.runtime import device_arch, is_interpreted


@functools.cache
def tensor_descriptor() -> type | None:
    """Triton's host-side `TensorDescriptor` class (Triton >= 3.4), or None; imported on first use,
    so `import tritonconv` does not import Triton."""
    try:
        from triton.tools.tensor_descriptor import TensorDescriptor
    except ImportError:  # pragma: no cover - depends on the installed Triton
        return None
    return TensorDescriptor


def descriptors_usable(device: torch.device, kernel: object) -> bool:
    """TMA exists from Hopper (sm_90) on, not on AMD Instinct (`devices.GpuArch.tma`: there the
    pointer kernels serve); the interpreter emulates descriptors anywhere."""
    if tensor_descriptor() is None:
        return False
    if is_interpreted(kernel):
        return True
    arch = device_arch(device)
    return arch is not None and arch.tma


def aligned(*tensors: torch.Tensor) -> bool:
    """A descriptor's base and every stride but the last (which must be 1) are 16-byte aligned."""
    return all(
        t.data_ptr() % 16 == 0 and t.stride()[-1] == 1 and all(s * t.element_size() % 16 == 0 for s in t.stride()[:-1])
        for t in tensors
    )


def dense_nhwc(tensor: torch.Tensor) -> torch.Tensor | None:
    """A dense channels_last 4-D tensor as its [N, H, W, C] view (unit inner stride), else None."""
    _, c, h, w = tensor.shape
    return tensor.permute(0, 2, 3, 1) if tensor.stride() == (h * w * c, 1, w * c, c) else None


def rebased(descriptor: object, base: torch.Tensor) -> object:
    """`descriptor` over `base`'s memory instead of its own base's. Shape, strides and 16-byte
    alignment are those the descriptor was validated with (the call key fixes them), so the
    constructor's checks are not run again on every call."""
    moved = object.__new__(tensor_descriptor())
    moved.__dict__.update(descriptor.__dict__)
    moved.base = base
    return moved
