"""A static cost model of one implicit-GEMM launch, to rank a tuning space's candidates before any
of them runs (issue 26: a 15-minute GPU window can time a handful per layer, not hundreds).

A config of a GEMM route computes an (M x N) output per group with a reduction of length L (the
pass's sides below), in programs of block_m x block_n, each reducing its share L / split_k in steps
of block_k. Its time is bounded below by two things and stretched by two more:

- tensor-core work: the FLOPs the programs issue (padded tiles included) over the SMs' rate, where
  a program keeps its SM's tensor cores busy only if its tile's arithmetic intensity (FLOPs per
  byte staged through shared memory, 2*bm*bn / ((bm + bn) * element size)) reaches what the SM's
  shared-memory bandwidth needs to feed them (`DeviceModel.balance`);
- memory traffic: every byte the programs load, at the L2's bandwidth, and the bytes that must
  cross HBM at least once (operands, output, split-K partial sums written and summed), at its;
- wave quantisation: an SM runs ceil(programs / SMs) programs, so 133 programs on 132 SMs take two
  programs' time;
- latency hiding: fewer than `HIDING_WARPS` resident warps per SM (from num_warps and the blocks
  that fit its shared memory) stall; fewer than three pipeline stages expose load latency.

The numbers are datasheet rates, not measurements (`DeviceModel`); the model ranks candidates, and
its ranks are checked against the H100 sweep in `reports/h100/cost_model_validation.md`.
"""

from __future__ import annotations

import dataclasses

import torch

from ..problem.arithmetic import ConvProblem, cdiv
from ..problem.config import KernelConfig
from ..routes.registry import Pass, Variant

HIDING_WARPS = 8  # resident warps per SM below which memory latency shows (assumption)
STAGE_EFFICIENCY = {1: 0.6, 2: 0.85}  # exposed load latency with fewer than 3 stages (assumption)
SPLIT_SUM_SECONDS = 3e-6  # the ordered split-K sum's own launch (assumption)
# Routes that are no GEMM of this shape (no tl.dot, or a batched 3-D one over groups): not modelled.
UNMODELLED = frozenset({Variant.DEPTHWISE, Variant.DEPTHWISE_3D, Variant.DEPTHWISE_1D, Variant.GROUPED_TILE})


@dataclasses.dataclass(frozen=True)
class DeviceModel:
    """Datasheet rates of a GPU: dense tensor-core FLOP/s per dtype, HBM and L2 bandwidth, and the
    per-SM limits that decide occupancy."""

    name: str
    sms: int
    tensor_flops: dict[torch.dtype, float]
    hbm_bytes_per_second: float
    l2_bytes_per_second: float
    shared_memory_per_sm: int
    shared_memory_bytes_per_clock: int = 128
    clock_hz: float = 1.755e9
    max_warps_per_sm: int = 64
    max_blocks_per_sm: int = 32

    def balance(self, dtype: torch.dtype) -> float:
        """FLOPs per shared-memory byte a tile needs to keep the tensor cores busy."""
        per_sm_flops = self.tensor_flops[dtype] / self.sms
        return per_sm_flops / (self.shared_memory_bytes_per_clock * self.clock_hz)


_HOPPER_TENSOR = {torch.bfloat16: 989e12, torch.float16: 989e12, torch.float32: 494e12, torch.float64: 67e12}
H100_SXM = DeviceModel("H100 SXM", 132, _HOPPER_TENSOR, 3.35e12, 10e12, 228 * 1024)
H200 = DeviceModel("H200", 132, _HOPPER_TENSOR, 4.8e12, 10e12, 228 * 1024)


def gemm_sides(problem: ConvProblem, pass_name: str) -> tuple[int, int, int]:
    """(M, N, L) of a pass's implicit GEMM for one group: fwd (pixels, K/g, (C/g)*taps), dgrad
    (input pixels, C/g, (K/g)*taps), wgrad (K/g, (C/g)*taps, output pixels)."""
    taps = problem.t * problem.r * problem.s
    if pass_name == Pass.FWD:
        return problem.gemm_m, problem.k_per_group, problem.gemm_k
    if pass_name == Pass.DGRAD:
        pixels = problem.n * problem.d * problem.h * problem.w
        return pixels, problem.c_per_group, problem.k_per_group * taps
    if pass_name == Pass.WGRAD:
        return problem.k_per_group, problem.gemm_k, problem.gemm_m
    raise ValueError(f"unknown pass {pass_name!r}")


@dataclasses.dataclass(frozen=True)
class Estimate:
    """The model's seconds for a launch and the terms behind them."""

    seconds: float
    programs: int
    waves: int
    blocks_per_sm: int
    compute_seconds: float
    memory_seconds: float


def estimate(problem: ConvProblem, pass_name: str, config: KernelConfig, device: DeviceModel = H100_SXM) -> Estimate:
    """The model's time for `config` of a GEMM route of `problem`'s pass (module docstring)."""
    m, n, reduction = gemm_sides(problem, pass_name)
    size = problem.element_size
    split = max(1, config.split_k)
    bm, bn, bk = config.block_m, config.block_n, config.block_k
    steps = cdiv(cdiv(reduction, split), bk)
    programs = cdiv(m, bm) * cdiv(n, bn) * problem.groups * split
    program_flops = 2 * bm * bn * bk * steps
    stage_bytes = (bm + bn) * bk * size
    shared = stage_bytes * max(1, config.num_stages)
    blocks_per_sm = max(1, min(device.max_blocks_per_sm, device.max_warps_per_sm // config.num_warps,
                               device.shared_memory_per_sm // max(shared, 1)))  # fmt: skip
    waves = cdiv(programs, device.sms * blocks_per_sm)
    programs_per_sm = cdiv(programs, device.sms)
    intensity = 2 * bm * bn / ((bm + bn) * size)
    tile_efficiency = min(1.0, intensity / device.balance(problem.dtype))
    hiding = min(1.0, min(blocks_per_sm, programs_per_sm) * config.num_warps / HIDING_WARPS)
    pipeline = STAGE_EFFICIENCY.get(config.num_stages, 1.0)
    per_sm_flops = device.tensor_flops[problem.dtype] / device.sms
    compute = programs_per_sm * program_flops / (per_sm_flops * tile_efficiency * hiding * pipeline)
    loaded = programs * stage_bytes * steps
    output = m * n * problem.groups
    once = (m * reduction + reduction * n) * problem.groups * size + output * size
    partials = output * 4 * 2 * (split - 1) if split > 1 else 0  # fp32 partial sums written, then read by the sum
    memory = max(loaded / device.l2_bytes_per_second, (once + partials) / device.hbm_bytes_per_second)
    seconds = max(compute, memory) + (SPLIT_SUM_SECONDS if split > 1 else 0.0)
    return Estimate(seconds, programs, waves, blocks_per_sm, compute, memory)


def rank(problem: ConvProblem, pass_name: str, configs: list[KernelConfig], device: DeviceModel = H100_SXM) -> list:
    """`configs` from the model's fastest to its slowest (ties keep their order)."""
    return sorted(configs, key=lambda config: estimate(problem, pass_name, config, device).seconds)
