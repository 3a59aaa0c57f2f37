"""Shared GPU timing: same inputs for every provider, do_bench medians, results stamped with versions."""

from __future__ import annotations

import datetime
import statistics
import time
from collections.abc import Callable

import pandas as pd
import torch
import triton
import triton.testing


def require_gpu(command: str) -> None:
    if not torch.cuda.is_available():
        raise SystemExit(f"{command} needs a CUDA GPU: interpreter timings on a CPU say nothing about kernels")
    torch.backends.cudnn.benchmark = True


def median_ms(fn: Callable[[], object]) -> float:
    """Median of `triton.testing.do_bench` (which warms up and flushes L2 between runs)."""
    return triton.testing.do_bench(fn, return_mode="median")


CPU_MIN_RUNS = 5
CPU_MIN_SECONDS = 0.25
CPU_MAX_RUNS = 1000


def cpu_median_ms(fn: Callable[[], object]) -> float:
    """Median wall-clock ms on the CPU (the interpreter, torch's CPU kernels): one warm-up run, then
    at least CPU_MIN_RUNS runs and CPU_MIN_SECONDS in all. A single run swung 100x between two
    `make demo`s (a sub-millisecond torch call is at the mercy of its thread pool waking up); the
    median of enough runs does not."""
    fn()
    times: list[float] = []
    began = time.perf_counter()
    while len(times) < CPU_MIN_RUNS or (time.perf_counter() - began < CPU_MIN_SECONDS and len(times) < CPU_MAX_RUNS):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def graph_ms(fn: Callable[[], object]) -> float:
    """Median time of `fn` replayed from a CUDA graph: the GPU's time alone, with no host work between
    launches. Next to `median_ms` it separates a slow kernel from a slow Python path or launch."""
    return triton.testing.do_bench_cudagraph(fn, return_mode="median")


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    """max |got - expected| / max |expected|, in float64 (the plain max difference when `expected`
    is all zeros)."""
    difference = (got.double() - expected.double()).abs().max().item()
    scale = expected.double().abs().max().item()
    return difference / scale if scale else difference


def stamp(table: pd.DataFrame, device: str | None = None) -> pd.DataFrame:
    """Add device (default: the current GPU's name), versions and time, so every row says where its
    numbers came from."""
    return table.assign(
        device=device or torch.cuda.get_device_name(),
        torch_version=torch.__version__,
        triton_version=triton.__version__,
        timestamp=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    )
