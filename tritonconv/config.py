"""Launch configurations: the block sizes, warps and stages a kernel is compiled with.

The heuristic here picks a sound config from the problem alone, with no timing; it is what runs
when nothing better is known.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import triton

from .arithmetic import ConvProblem


@dataclass(frozen=True)
class KernelConfig:
    """Tile sizes in GEMM vocabulary: M over N*P*Q, N over a group's output channels, K over (C/g)*R*S."""

    block_m: int
    block_n: int
    block_k: int
    group_m: int = 8
    num_warps: int = 4
    num_stages: int = 3

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def launch_kwargs(self) -> dict[str, int]:
        """Meta-parameters as the kernels name them."""
        return {
            "BLOCK_M": self.block_m,
            "BLOCK_N": self.block_n,
            "BLOCK_K": self.block_k,
            "GROUP_M": self.group_m,
            "num_warps": self.num_warps,
            "num_stages": self.num_stages,
        }


def _clamp_pow2(value: int, low: int, high: int) -> int:
    return max(low, min(high, triton.next_power_of_2(max(value, 1))))


def heuristic_config(problem: ConvProblem) -> KernelConfig:
    """A config sized to the problem: no tile far larger than the GEMM it covers.

    `tl.dot` needs every tile dimension to be at least 16. Wider operands take more shared memory per
    element, so the tiles shrink with the element size to keep three pipeline stages well inside an
    SM's shared memory: 96 KiB for 16- and 32-bit operands, 48 KiB for fp64.
    """
    max_mn = 64 if problem.element_size >= 8 else 128
    max_k = {2: 64, 4: 32}.get(problem.element_size, 16)
    block_m = _clamp_pow2(problem.gemm_m, 16, max_mn)
    block_n = _clamp_pow2(problem.gemm_n, 16, max_mn)
    block_k = _clamp_pow2(problem.gemm_k, 16, max_k)
    num_warps = 8 if block_m * block_n >= 128 * 128 else 4
    return KernelConfig(block_m=block_m, block_n=block_n, block_k=block_k, num_warps=num_warps)
