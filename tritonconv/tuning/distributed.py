"""Tuning across processes: under `torchrun`, each rank tunes a shard of the problems on its own GPU
and every rank's results are merged into every rank's cache.

A problem is tuned by exactly one rank, so there is one choice per problem and no two ranks can
disagree about it. The exchange carries cached entries as well as new ones, so ranks whose caches
differ (one per node, say) all end with every entry.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Shard:
    """This process's place among `world` tuning processes, and how they exchange results:
    `gather(obj)` returns every rank's `obj`, in rank order (an all-gather)."""

    rank: int
    world: int
    gather: Callable[[object], list[object]]

    def take(self, work: list) -> list:
        """This rank's share of `work`: every world-th item from its rank (the same list on every rank
        gives disjoint shares that cover it)."""
        return work[self.rank :: self.world]


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def shard_from_environment() -> Shard | None:
    """The Shard of a process started by torchrun (WORLD_SIZE > 1), with the process group joined
    (nccl on GPUs, one per local rank; gloo without), or None for a single process."""
    if not launched_by_torchrun():
        return None
    on_gpu = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") != "1"
    if on_gpu:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if on_gpu else "gloo")
    return Shard(rank=dist.get_rank(), world=dist.get_world_size(), gather=_all_gather)


def _all_gather(obj: object) -> list[object]:
    gathered: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def leave() -> None:
    """Leave the process group `shard_from_environment` joined."""
    if dist.is_initialized():
        dist.destroy_process_group()
