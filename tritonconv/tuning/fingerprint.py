"""What a tuned entry depends on: the device it ran on, and the code and space it was chosen from."""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import re

import torch

from .. import kernels
from .._version import __version__
from ..problem.runtime import device_arch, is_interpreted, triton_version
from ..routes.registry import spec
from .space import space_digest


def device_slug(device: torch.device | None = None) -> str:
    """'interpreter' when the kernels run in Triton's interpreter, else the GPU's name and compute
    architecture (`devices.GpuArch.name`), e.g. 'nvidia-h100-80gb-hbm3-sm90' or 'amd-instinct-mi300x-gfx942':
    the cache file a device reads and writes."""
    if is_interpreted(kernels._conv2d_fwd_implicit_gemm_kernel) or not torch.cuda.is_available():
        return "interpreter"
    name = re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(device).lower()).strip("-")
    return f"{name}-{device_arch(device if device is not None else torch.device('cuda')).name}"


# jit helpers inlined into every kernel: a change to them changes every kernel.
SHARED_KERNEL_MODULES = ("common", "constexprs", "epilogue")


@functools.cache
def kernel_digest(pass_name: str, variant: str) -> str:
    """A short hash of the source of the kernels that serve (pass, variant)."""
    digest = hashlib.sha256()
    for module in (*spec(pass_name, variant).kernel_modules, *SHARED_KERNEL_MODULES):
        digest.update(inspect.getsource(importlib.import_module(f"{kernels.__name__}.{module}")).encode())
    return digest.hexdigest()[:12]


def fingerprint(pass_name: str, variant: str) -> dict[str, str]:
    return {
        "triton": triton_version(),
        "tritonconv": __version__,
        "kernel": kernel_digest(pass_name, variant),
        "space": space_digest(pass_name, variant),
    }


def problem_fingerprint(pass_name: str, variants: list[str]) -> dict[str, str]:
    """The fingerprint of a tuned problem: every variant that competed, since a change to any of them
    can change the winner."""
    parts = [fingerprint(pass_name, variant) for variant in sorted(variants)]
    return {
        "triton": triton_version(),
        "tritonconv": parts[0]["tritonconv"],
        "kernel": "+".join(part["kernel"] for part in parts),
        "space": "+".join(part["space"] for part in parts),
    }
