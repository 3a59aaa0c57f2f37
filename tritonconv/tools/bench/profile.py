"""Where a pass's time goes on a GPU: kernel time, host overhead, and each compiled kernel's resources.

`do_bench` times a call from the host's point of view, so a slow Python path or a slow launch looks
like a slow kernel. This script separates them for each pass of a few ResNet-50 layers (bf16,
channels_last): the do_bench median, the same call replayed from a CUDA graph (no host work), the
host time per call, and the GPU time of each kernel the call launched (torch.profiler), for
tritonconv and for torch's own convolution (cuDNN) on the same tensors. It ends with each compiled
Triton kernel's registers, spills and shared memory.

With --host-profile it also prints where the host time of one forward and one input-gradient call
goes (cProfile over 200 calls), and with --wgrad-sweep the kernel time of a grid of weight-gradient
configs on two 3x3 layers (each checked against cuDNN first).

The layers are the suite's (`--suite`, ResNet-50 by default), named by `--layers`; their tensors
and calls come from the bench harness (`harness.py`).

Usage: python -m tritonconv.tools.bench.profile [--suite resnet50] [--batch N] [--layers NAME,...] [--host-profile]
       [--wgrad-sweep] [--out CSV]
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import itertools
import pstats
import time
from collections.abc import Callable

import pandas as pd
import torch

import tritonconv
from tritonconv import kernels
from tritonconv.ops.epilogue import NO_EPILOGUE
from tritonconv.plan.prepared import PreparedConv
from tritonconv.problem.config import wgrad_config
from tritonconv.routes.calls import conv2d_wgrad
from tritonconv.routes.registry import Pass, Plan, Variant

from ...problem.suites import SuiteLayer, load_suite
from . import harness
from .timing import median_ms, require_gpu, stamp

DEFAULT_LAYERS = ("conv1 7x7 s2", "l1.b1.c1 1x1", "l1.c2 3x3", "l2.c3 1x1", "l3.b2-6.c2 3x3", "l4.b1.ds 1x1 s2")


def host_us(fn: Callable[[], object], calls: int = 50) -> float:
    """Host time per call with the GPU queue left to run behind: what the Python path and launch cost."""
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    elapsed = time.perf_counter() - start
    torch.cuda.synchronize()
    return elapsed / calls * 1e6


def kernel_us(fn: Callable[[], object], calls: int = 20) -> dict[str, float]:
    """GPU microseconds per call of each kernel `fn` launches, from torch.profiler's CUDA events."""
    fn()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    totals: dict[str, float] = {}
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            totals[event.name] = totals.get(event.name, 0.0) + event.device_time / calls
    return totals


def providers(layer: SuiteLayer) -> dict[str, Callable[[], object]]:
    """Every pass's calls on one layer, tritonconv's and cuDNN's, on the harness's shared tensors."""
    cases = {pass_name: harness.make_case(layer, pass_name) for pass_name in (Pass.FWD, Pass.DGRAD, Pass.WGRAD)}
    forward = cases[Pass.FWD]
    x, weight, geometry, problem = forward.x, forward.weight, forward.geometry, forward.problem
    calls = {"fwd api": lambda: tritonconv.conv2d(x, weight, **geometry)}
    for pass_name, case in cases.items():
        calls[f"{pass_name} op"] = harness.PROVIDERS["triton"](case)
        calls[f"{pass_name} cudnn"] = harness.PROVIDERS["torch"](case)
    if problem.r == 1:
        k = problem.k
        strided_weight = torch.empty_strided(weight.shape, (1, k, k, k), device=x.device, dtype=weight.dtype)
        strided_weight.copy_(weight)  # not unit-stride over channels: the 1x1 kernel's pointer path
        no_descriptor = PreparedConv(problem, x, strided_weight, NO_EPILOGUE)
        calls["fwd op no-descriptor"] = lambda: no_descriptor.forward(x, strided_weight, None)
    return {name: calls[name] for name in sorted(calls, key=_PROVIDER_ORDER.index)}


_PROVIDER_ORDER = ["fwd api", "fwd op", "fwd cudnn", "dgrad op", "dgrad cudnn", "wgrad op", "wgrad cudnn",
                   "fwd op no-descriptor"]  # fmt: skip


def compiled_kernels() -> pd.DataFrame:
    """Registers, spills and shared memory of every Triton kernel compiled in this process."""
    rows = []
    for name in kernels.__all__:
        jit_function = getattr(kernels, name)
        for device_cache in getattr(jit_function, "device_caches", {}).values():
            for compiled in device_cache[0].values():
                metadata = compiled.metadata
                rows.append(
                    {
                        "kernel": name,
                        "num_warps": getattr(metadata, "num_warps", None),
                        "num_stages": getattr(metadata, "num_stages", None),
                        "n_regs": getattr(compiled, "n_regs", None),
                        "n_spills": getattr(compiled, "n_spills", None),
                        "shared_bytes": getattr(metadata, "shared", None),
                    }
                )
    return pd.DataFrame(rows)


def host_profile(calls: dict[str, Callable[[], object]], names: tuple[str, ...] = ("fwd op", "dgrad op")) -> None:
    for name in names:
        fn = calls[name]
        for _ in range(20):
            fn()
        torch.cuda.synchronize()
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(200):
            fn()
        profiler.disable()
        torch.cuda.synchronize()
        print(f"\nhost profile of {name!r}, 200 calls:")
        pstats.Stats(profiler).sort_stats("tottime").print_stats(14)


def wgrad_sweep(layer: SuiteLayer) -> pd.DataFrame:
    """Kernel time (CUDA graph replay) of a grid of wgrad configs on one layer, each checked first."""
    case = harness.make_case(layer, Pass.WGRAD)
    problem, x, grad_output = case.problem, case.x, case.grad_output
    expected = harness.PROVIDERS["torch"](case)()
    base = wgrad_config(problem)
    rows = []
    grid = itertools.product([(128, 128), (64, 128), (128, 64)], [4, 8], [2, 4, 8, 16], [3, 4])
    for (block_m, block_n), num_warps, split_k, num_stages in grid:
        config = dataclasses.replace(
            base, block_m=block_m, block_n=block_n, num_warps=num_warps, split_k=split_k, num_stages=num_stages
        )
        try:
            plan = Plan(Variant.IMPLICIT_GEMM, config, "sweep")
            got = conv2d_wgrad(x, grad_output, problem, True, plan)
            error = ((got.float() - expected.float()).abs().max() / expected.float().abs().max()).item()
            ms = harness.graph_ms(lambda plan=plan: conv2d_wgrad(x, grad_output, problem, True, plan))
        except Exception as failure:  # out of resources: recorded, not fatal
            error, ms = float("nan"), float("nan")
            print(f"  {config}: {type(failure).__name__}")
        rows.append({"layer": layer.name, **config.as_dict(), "graph_ms": ms, "max_rel_err": error})
    table = pd.DataFrame(rows).sort_values("graph_ms")
    print(f"\nwgrad sweep, {layer.name} (heuristic: {base}):")
    print(table.head(8).to_string(index=False))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default="resnet50")
    parser.add_argument("--batch", type=int, help="override every layer's batch size (default: the suite's)")
    parser.add_argument("--layers", default=",".join(DEFAULT_LAYERS), help="the suite's layer names")
    parser.add_argument("--host-profile", action="store_true")
    parser.add_argument("--wgrad-sweep", action="store_true")
    parser.add_argument("--out", help="also write the table to this CSV file")
    args = parser.parse_args()
    require_gpu("tritonconv.tools.bench.profile")
    layers = {layer.name: layer for layer in load_suite(args.suite, batch=args.batch, dtype=torch.bfloat16)}
    if args.host_profile:
        host_profile(providers(layers["l1.c2 3x3"]))
    rows = []
    for name in args.layers.split(","):
        for provider, fn in providers(layers[name]).items():
            kernel_times = kernel_us(fn)
            rows.append(
                {
                    "layer": name,
                    "provider": provider,
                    "bench_ms": median_ms(fn),
                    "graph_ms": harness.graph_ms(fn),
                    "host_us": host_us(fn),
                    "gpu_us": sum(kernel_times.values()),
                    "kernels": "; ".join(f"{kernel[:40]}={us:.1f}" for kernel, us in kernel_times.items()),
                }
            )
            print(pd.DataFrame(rows[-1:]).to_string(index=False, header=len(rows) == 1), flush=True)
    table = stamp(pd.DataFrame(rows))
    pd.set_option("display.width", 250)
    print(table.drop(columns=["kernels", "device", "torch_version", "triton_version", "timestamp"]).to_string())
    print(compiled_kernels().to_string())
    if args.out:
        table.to_csv(args.out, index=False)
    if args.wgrad_sweep:
        sweeps = [wgrad_sweep(layers[name]) for name in ("l1.c2 3x3", "l3.b2-6.c2 3x3")]
        if args.out:
            stamp(pd.concat(sweeps)).to_csv(args.out.removesuffix(".csv") + "_wgrad_sweep.csv", index=False)


if __name__ == "__main__":
    main()
