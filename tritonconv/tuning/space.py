"""Config spaces: each route's axes (in `registry.SPECS`), and the pruning that runs before anything compiles.

A space is a dict of axes; its candidates are the product of the axes, each clamped to the problem
by the route's own clamp (a 128-row tile over a 40-row GEMM is the 64-row tile plus masking) and
deduplicated, then pruned by shared memory: operand tiles times the pipeline's buffers must fit the
architecture's per-block limit (`devices.GpuArch`: shared memory or LDS, and how many stages it
buffers). The order of the candidates is fixed, so a tie between equally fast configs breaks the
same way everywhere.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json

from ..problem.arithmetic import ConvProblem
from ..problem.config import KernelConfig
from ..problem.devices import DEFAULT_ARCH, GpuArch
from ..routes.registry import REGISTRY, Variant, spec

SPACES: dict[tuple[str, str], dict[str, tuple]] = {key: dict(s.space) for key, s in REGISTRY.items()}


def space_digest(pass_name: str, variant: str) -> str:
    """A short hash of a space's axes: part of a cache entry's fingerprint, so widening a space
    retunes the shapes it covers and nothing else."""
    axes = spec(pass_name, variant).space
    return hashlib.sha256(json.dumps(axes, sort_keys=True).encode()).hexdigest()[:12]


def shared_memory_bytes(config: KernelConfig, element_size: int, variant: str, arch: GpuArch = DEFAULT_ARCH) -> int:
    """Operand tiles held in shared memory (LDS), one copy per buffered pipeline stage
    (`GpuArch.staged_buffers`). On an H100 with Triton 3.6 the compiled kernels' allocation matched
    this to within a 2 KiB scratch buffer (e.g. 98,304 bytes for 128x128x64 bf16 tiles at 3 stages;
    `python -m tritonconv.tools.bench.profile`); the kernel gate's reports compare it per arch."""
    if variant in (Variant.DEPTHWISE, Variant.DEPTHWISE_1D):
        return 0  # no tl.dot: nothing is staged through shared memory
    per_stage = (config.block_m * config.block_k + config.block_k * config.block_n) * config.block_g
    return per_stage * element_size * arch.staged_buffers(config.num_stages)


def candidates(problem: ConvProblem, pass_name: str, variant: str, arch: GpuArch = DEFAULT_ARCH) -> list[KernelConfig]:
    """Every config of the route's space worth compiling for `problem` on `arch`, in the space's fixed order."""
    route = spec(pass_name, variant)
    names = list(route.space)
    seen: dict[KernelConfig, None] = {}
    for values in itertools.product(*(route.space[name] for name in names)):
        base = KernelConfig(block_m=16, block_n=16)
        config = route.clamp(dataclasses.replace(base, **dict(zip(names, values, strict=True))), problem)
        if shared_memory_bytes(config, problem.element_size, variant, arch) <= arch.shared_memory:
            seen.setdefault(config, None)
    return list(seen)
