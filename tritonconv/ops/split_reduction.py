"""Weight gradients' split reduction: how the N*P*Q pixels are cut into chunks, and the ordered sum.

Each chunk's partial dW goes to its own row of an fp32 (fp64 for fp64) workspace; one kernel then adds
the rows in index order, so the result does not depend on which program finished first.
"""

from __future__ import annotations

import torch
import triton

from ..arithmetic import ConvProblem
from ..kernels import _sum_splits_kernel

SUM_BLOCK = 1024


def split_reduction(reduction: int, numel: int, split_k: int, block: int) -> tuple[int, int]:
    """(splits, chunk): at most `split_k` chunks of whole `block`s, and a workspace whose split
    stride stays within 32-bit offsets."""
    split = max(1, min(split_k, (2**31 - 1) // numel))
    chunk = triton.cdiv(triton.cdiv(reduction, split), block) * block
    return triton.cdiv(reduction, chunk), chunk


def new_workspace(splits: int, numel: int, like: torch.Tensor) -> torch.Tensor:
    """[splits, numel] partial sums laid out as [K, C/g, R, S] per split, in the accumulation dtype."""
    acc_dtype = torch.float64 if like.dtype == torch.float64 else torch.float32
    return torch.empty((splits, numel), dtype=acc_dtype, device=like.device)


def sum_splits(partial: torch.Tensor, grad_weight: torch.Tensor, problem: ConvProblem) -> None:
    """grad_weight = the workspace's rows added in order, cast to its dtype, written through its strides."""
    splits, numel = partial.shape
    _sum_splits_kernel[(triton.cdiv(numel, SUM_BLOCK),)](
        partial,
        grad_weight,
        splits,
        numel,
        partial.stride(0),
        *grad_weight.stride(),
        C_PER_GROUP=problem.c_per_group,
        R=problem.r,
        S=problem.s,
        BLOCK=SUM_BLOCK,
    )
