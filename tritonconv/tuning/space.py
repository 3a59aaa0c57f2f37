"""Config spaces as data, per (pass, variant), and the pruning that runs before anything compiles.

A space is a dict of axes; its candidates are the product of the axes, each clamped to the problem
(a 128-row tile over a 40-row GEMM is the 64-row tile plus masking) and deduplicated, then pruned by
shared memory: operand tiles times pipeline stages must fit the device's per-block limit. The order
of the candidates is fixed, so a tie between equally fast configs breaks the same way everywhere.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json

import triton

from ..arithmetic import ConvProblem
from ..config import KernelConfig

# Per-block shared memory of an H100 (227 KiB usable of 228); the tuner passes the device's own limit.
DEFAULT_SHARED_MEMORY = 227 * 1024

GEMM_AXES = {
    "block_m": (64, 128, 256),
    "block_n": (32, 64, 128, 256),
    "block_k": (32, 64, 128),
    "group_m": (8,),
    "num_warps": (4, 8),
    "num_stages": (2, 3, 4, 5),
}
DEPTHWISE_AXES = {
    "block_m": (8, 16, 32, 64),
    "block_n": (16, 32, 64, 128),
    "halo_in_registers": (False, True),
    "num_warps": (2, 4, 8),
    "num_stages": (1,),
}
SPACES: dict[tuple[str, str], dict[str, tuple]] = {
    ("fwd", "implicit_gemm"): GEMM_AXES,
    ("fwd", "conv1x1"): GEMM_AXES,
    ("fwd", "grouped_tile"): {
        "block_m": (32, 64, 128),
        "block_n": (16, 32),
        "block_k": (16, 32, 64),
        "block_g": (1, 2, 4, 8),
        "num_warps": (4, 8),
        "num_stages": (2, 3),
    },
    ("fwd", "depthwise"): DEPTHWISE_AXES,
    ("dgrad", "implicit_gemm"): GEMM_AXES,
    ("dgrad", "conv1x1"): GEMM_AXES,  # the conv1x1 forward kernel on dY and the transposed weight
    ("dgrad", "depthwise"): DEPTHWISE_AXES,  # the depthwise forward kernel on dY and the flipped weight
    ("wgrad", "implicit_gemm"): {
        "block_m": (64, 128),
        "block_n": (64, 128),
        "block_k": (32, 64),
        "split_k": (1, 2, 4, 8, 16, 32),
        "num_warps": (4, 8),
        "num_stages": (3, 4),
    },
    ("wgrad", "depthwise"): {  # block_m pixels by block_n channels of one tap, no tl.dot
        "block_m": (16, 32, 64, 128),
        "block_n": (16, 32, 64, 128),
        "split_k": (1, 4, 16, 64),
        "num_warps": (2, 4, 8),
        "num_stages": (1,),
    },
}


def space_key(pass_name: str, variant: str) -> tuple[str, str]:
    key = (pass_name, variant)
    if key not in SPACES:
        known = ", ".join("/".join(k) for k in SPACES)
        raise KeyError(f"no config space for pass {pass_name!r} and variant {variant!r}; known: {known}")
    return key


def space_digest(pass_name: str, variant: str) -> str:
    """A short hash of a space's axes: part of a cache entry's fingerprint, so widening a space
    retunes the shapes it covers and nothing else."""
    axes = SPACES[space_key(pass_name, variant)]
    return hashlib.sha256(json.dumps(axes, sort_keys=True).encode()).hexdigest()[:12]


def _gemm_sides(problem: ConvProblem, pass_name: str) -> tuple[int, int, int]:
    """(M, N, reduction) of the GEMM a pass computes for one group."""
    if pass_name == "fwd":
        return problem.gemm_m, problem.k_per_group, problem.gemm_k
    if pass_name == "dgrad":
        return problem.n * problem.h * problem.w, problem.c_per_group, problem.k_per_group * problem.r * problem.s
    if pass_name == "wgrad":
        return problem.k_per_group, problem.gemm_k, problem.n * problem.p * problem.q
    raise ValueError(f"unknown pass {pass_name!r}; expected 'fwd', 'dgrad' or 'wgrad'")


def _fit(block: int, size: int, smallest: int) -> int:
    """A block no larger than the power of two covering `size`, and no smaller than `smallest`."""
    return max(smallest, min(block, triton.next_power_of_2(max(size, 1))))


def _clamped(config: KernelConfig, problem: ConvProblem, pass_name: str, variant: str) -> KernelConfig:
    m, n, k = _gemm_sides(problem, pass_name)
    if variant == "depthwise" and pass_name == "wgrad":  # pixels by channels, pixels split
        block_m = _fit(config.block_m, k, 16)
        split_k = max(1, min(config.split_k, triton.cdiv(k, block_m)))
        return dataclasses.replace(
            config, block_m=block_m, block_n=_fit(config.block_n, problem.k, 16), split_k=split_k
        )
    if variant == "depthwise":  # one output row per program; dgrad's output is the input, H x W
        width = problem.w if pass_name == "dgrad" else problem.q
        return dataclasses.replace(
            config, block_m=_fit(config.block_m, width, 8), block_n=_fit(config.block_n, problem.k, 16)
        )
    changes = {"block_m": _fit(config.block_m, m, 16), "block_n": _fit(config.block_n, n, 16)}
    if pass_name != "wgrad":
        changes["block_k"] = _fit(config.block_k, k, 16)
    else:  # the reduction is N*P*Q; more splits than blocks of it are empty programs
        changes["split_k"] = max(1, min(config.split_k, triton.cdiv(k, config.block_k)))
    if variant == "grouped_tile":
        changes["block_g"] = min(config.block_g, triton.next_power_of_2(problem.groups))
    return dataclasses.replace(config, **changes)


def shared_memory_bytes(config: KernelConfig, element_size: int, variant: str) -> int:
    """Operand tiles held in shared memory, one copy per pipeline stage. On an H100 with Triton 3.6
    the compiled kernels' allocation matched this to within a 2 KiB scratch buffer (e.g. 98,304
    bytes for 128x128x64 bf16 tiles at 3 stages; `python -m tritonconv.bench.profile`)."""
    if variant == "depthwise":
        return 0  # no tl.dot: nothing is staged through shared memory
    per_stage = (config.block_m * config.block_k + config.block_k * config.block_n) * config.block_g
    return per_stage * element_size * config.num_stages


def candidates(
    problem: ConvProblem, pass_name: str, variant: str, shared_memory: int = DEFAULT_SHARED_MEMORY
) -> list[KernelConfig]:
    """Every config of the space worth compiling for `problem`, in the space's fixed order."""
    axes = SPACES[space_key(pass_name, variant)]
    names = list(axes)
    seen: dict[KernelConfig, None] = {}
    for values in itertools.product(*(axes[name] for name in names)):
        base = KernelConfig(block_m=16, block_n=16)
        config = _clamped(
            dataclasses.replace(base, **dict(zip(names, values, strict=True))), problem, pass_name, variant
        )
        if shared_memory_bytes(config, problem.element_size, variant) <= shared_memory:
            seen.setdefault(config, None)
    return list(seen)
