"""tritonconv.Conv2d under DistributedDataParallel: 2 gloo processes on CPU (or GPU), a few SGD steps.

Each rank trains on its half of the batch; DDP averages the gradients, so both replicas must end
identical, and equal (to rounding) to one process training torch's nn.Conv2d on the whole batch.
"""

import gc
import os
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from conv_reference import needs_runtime_loops
from torch import nn

import tritonconv

pytestmark = needs_runtime_loops
WORLD_SIZE = 2
STEPS = 3
SPAWN_TIMEOUT_S = 240


def build_model(conv: type[nn.Conv2d] = tritonconv.Conv2d) -> nn.Module:
    """The same initial parameters for either conv class (same seed, same construction order)."""
    torch.manual_seed(5)
    return nn.Sequential(
        conv(3, 8, 3, padding=1), nn.ReLU(), conv(8, 8, 3, stride=2, padding=1, groups=2), nn.ReLU(), conv(8, 4, 1)
    )


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(9)
    return torch.randn(4, 3, 8, 8, generator=gen), torch.randn(4, 4, 4, 4, generator=gen)


def train(model: nn.Module, data: torch.Tensor, target: torch.Tensor) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(STEPS):
        opt.zero_grad()
        F.mse_loss(model(data), target).backward()
        opt.step()


def _rank_main(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    try:
        model = nn.parallel.DistributedDataParallel(build_model())
        data, target = batch()
        shard = slice(rank * 2, rank * 2 + 2)
        train(model, data[shard], target[shard])
        torch.save(model.module.state_dict(), os.path.join(out_dir, f"rank{rank}.pt"))
        # Free DDP's reducer while the process group is still registered: freed after it, at the end of
        # the process, gloo's destructor can wait on a worker thread that waits for the GIL (a torch race
        # that hung one run here).
        del model
        gc.collect()
    finally:
        dist.destroy_process_group()


def _spawn(function, args: tuple, timeout_s: float = SPAWN_TIMEOUT_S) -> None:
    """`mp.spawn`, but a rank that has not finished within `timeout_s` fails the test instead of
    hanging it."""
    context = mp.spawn(function, args=args, nprocs=WORLD_SIZE, join=False)
    deadline = time.monotonic() + timeout_s
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"the DDP ranks did not finish within {timeout_s} s")


def test_ddp_replicas_stay_identical_and_match_one_process(tmp_path):
    _spawn(_rank_main, (str(tmp_path / "init"), str(tmp_path)))
    states = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(WORLD_SIZE)]
    single = build_model(nn.Conv2d)
    train(single, *batch())
    for name, value in states[0].items():
        assert torch.equal(value, states[1][name]), f"replicas differ in {name}"
        torch.testing.assert_close(value, single.state_dict()[name], rtol=1e-5, atol=1e-6)
    assert any(not torch.equal(v, build_model().state_dict()[k]) for k, v in states[0].items()), "nothing trained"
