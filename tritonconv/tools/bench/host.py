"""Host time per call: what tritonconv's Python path and launch cost, pass by pass, on a suite's layers.

For each layer it times, in steady state (the call's key already prepared):
- `fwd`: `tritonconv.conv2d(x, w, stride=, padding=)` on operands that need no gradient (no autograd);
- `patched module fwd`: an `nn.Conv2d` holding the layer, after `tritonconv.models.patch` (frozen
  parameters); the reference is the same module unpatched;
- `fused fwd`: the same with a bias, `activation='relu'` and a residual;
- `dgrad`, `wgrad`, `bias grad`: the gradient calls autograd's backward makes on the prepared call;
- `backward`: `output.backward(grad_output)` through a retained graph of one convolution, all
  three gradients, autograd's engine included;
- `decode step` (conv1d depthwise layers): `causal_conv1d_update` of one token per sequence;
- `train step`: forward with autograd and `backward()`, all three gradients (autograd's own
  engine included);
and, with the forward planned to torch's own kernel (the `torch` route, as a tuned cache entry that
chose it would plan it), `torch route fwd`: `tritonconv.conv2d` resolving to torch, beside
`torch fwd (same tensors)`, `F.conv2d` on the same operands; their difference is what the planned call
adds to calling torch directly (the key lookup). Each row counts the kernel launches. Without a GPU
every launch is replaced by a stub (`ops.launch.STUB`) that takes the launch and its pointers, so
everything but the launch itself is timed; the reference is `F.conv2d` on meta tensors (aten's
dispatch and shape checks, no compute). With a GPU the launches are real and the reference is
`F.conv2d` (cuDNN) on the same tensors.

Each figure is the median over `--repeats` batches of `--calls` calls of the mean per call.

Usage: python -m tritonconv.tools.bench.host [--suite resnet50] [--batch N] [--dtype bfloat16] [--out CSV]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pandas as pd
import torch
import torch.nn.functional as F

import tritonconv
from tritonconv.ops import launch
from tritonconv.ops.torch_conv import TORCH_CONFIG
from tritonconv.plan.dispatch import forget_plans
from tritonconv.plan.prepared import call_key, lookup
from tritonconv.problem.runtime import environment_variable, rerun_under_interpreter_without_gpu
from tritonconv.problem.suites import load_suite
from tritonconv.routes.registry import Variant, is_depthwise_1d, tuned_variants
from tritonconv.tuning.cache import CACHE_ENV, problem_key
from tritonconv.tuning.fingerprint import device_slug, problem_fingerprint
from tritonconv.tuning.session import device_cache
from tritonconv.tuning.tuner import tf32_key

from .timing import stamp


def host_us(fn: Callable[[], object], calls: int, repeats: int) -> float:
    """Median over `repeats` batches of the mean host microseconds per call of `fn`."""
    for _ in range(20):
        fn()
    synchronize = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    means = []
    for _ in range(repeats):
        synchronize()
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        means.append((time.perf_counter() - start) / calls * 1e6)
    synchronize()
    return statistics.median(means)


def launches_per_call(fn: Callable[[], object]) -> str:
    """The kernels one call of `fn` launches, as 'name=count; ...' (captured, not run)."""
    with launch.captured() as launches:
        fn()
    counts = Counter(kernel_launch.kernel.__name__ for kernel_launch, _ in launches)
    return "; ".join(f"{name}={count}" for name, count in sorted(counts.items()))


def no_launch(kernel_launch: launch.KernelLaunch, *pointers: object) -> None:
    """The launch stub while timing: takes the launch and its pointers, does nothing (counting
    launches would add its own cost to every figure)."""


def as_module(problem, weight: torch.Tensor, device: str | torch.device) -> torch.nn.Conv2d:
    """The layer as an `nn.Conv2d` holding `weight`, its parameters frozen (no autograd)."""
    module = torch.nn.Conv2d(problem.c, problem.k, problem.weight_shape[2:], stride=problem.stride,
                             padding=problem.padding, dilation=problem.dilation, groups=problem.groups, bias=False,
                             device="meta")  # fmt: skip
    module.weight = torch.nn.Parameter(weight.to(device), requires_grad=False)
    return module


def layer_calls(problem, device: str, dtype: torch.dtype) -> dict[str, Callable[[], object]]:
    """The timed calls of one layer, keyed by pass."""
    shape = dict(dtype=dtype, device=device)
    cl = torch.channels_last
    x = torch.randn(problem.input_shape, **shape).to(memory_format=cl)
    weight = torch.randn(problem.weight_shape, **shape).to(memory_format=cl)
    bias = torch.randn(problem.k, **shape)
    residual = torch.randn(problem.output_shape, **shape).to(memory_format=cl)
    grad_output = torch.randn(problem.output_shape, **shape).to(memory_format=cl)
    geometry = dict(stride=problem.stride, padding=problem.padding, dilation=problem.dilation, groups=problem.groups)
    tritonconv.conv2d(x, weight, **geometry)  # prepares the key
    key_geometry = (problem.stride, problem.padding, problem.dilation, problem.groups)
    prepared = lookup(call_key(x, weight, None, key_geometry), lambda: (_ for _ in ()).throw(AssertionError))
    leaves = [t.detach().requires_grad_() for t in (x, weight, bias)]

    def clear_gradients() -> None:
        for leaf in leaves:  # no gradient accumulation: that is torch's add, not tritonconv's path
            leaf.grad = None

    def train_step() -> None:
        clear_gradients()
        tritonconv.conv2d(*leaves, **geometry).backward(grad_output)

    graph = tritonconv.conv2d(*leaves, **geometry)

    def backward() -> None:
        clear_gradients()
        graph.backward(grad_output, retain_graph=True)

    module = as_module(problem, weight, device)
    tritonconv.patch(module)
    calls = {
        "fwd": lambda: tritonconv.conv2d(x, weight, **geometry),  # operands that need no gradient: no autograd
        "patched module fwd": lambda: module(x),
        "fused fwd": lambda: tritonconv.conv2d(x, weight, bias, **geometry, activation="relu", residual=residual),
        "dgrad": lambda: prepared.input_grad(grad_output, weight),
        "wgrad": lambda: prepared.weight_grad(x, grad_output),
        "bias grad": lambda: prepared.bias_grad(grad_output),
        "backward": backward,
        "train step": train_step,
    }

    reference = "cuDNN" if device == "cuda" else "meta"
    torch_leaves = [t.detach().to(reference if reference == "meta" else device).requires_grad_() for t in leaves]
    torch_graph = F.conv2d(*torch_leaves, **geometry)
    torch_grad_output = grad_output.to(torch_graph.device)

    def torch_backward() -> None:
        for leaf in torch_leaves:
            leaf.grad = None
        torch_graph.backward(torch_grad_output, retain_graph=True)

    torch_operands = [leaf.detach() for leaf in torch_leaves[:2]]
    calls[f"torch fwd ({reference})"] = lambda: F.conv2d(*torch_operands, **geometry)
    torch_module, torch_input = as_module(problem, torch_operands[1], torch_operands[1].device), torch_operands[0]
    calls[f"torch module fwd ({reference})"] = lambda: torch_module(torch_input)
    calls[f"torch backward ({reference})"] = torch_backward
    return calls


@contextlib.contextmanager
def torch_route_planned(problem) -> Iterator[None]:
    """Within: the forward of `problem` is planned to the torch route, by a cache entry in a scratch
    cache directory (what tuning writes when torch's kernel wins); the user's cache is untouched."""
    with tempfile.TemporaryDirectory() as directory, environment_variable(CACHE_ENV, directory):
        try:
            entry = {"pass": "fwd", "variant": str(Variant.TORCH), "config": TORCH_CONFIG.as_dict(), "routes": "all",
                     "fingerprint": problem_fingerprint("fwd", tuned_variants(problem, "fwd"))}  # fmt: skip
            device_cache().store({problem_key(problem, "fwd", tf32_key()): entry})
            forget_plans()
            yield
        finally:
            forget_plans()


def torch_route_rows(problem, device: str, time_us: Callable[[Callable[[], object]], float]) -> dict[str, float]:
    """µs per call of `tritonconv.conv2d` planned to the torch route and of `F.conv2d` on the same tensors."""
    x = torch.randn(problem.input_shape, dtype=problem.dtype, device=device).to(memory_format=torch.channels_last)
    weight = torch.randn(problem.weight_shape, dtype=problem.dtype, device=device).to(memory_format=torch.channels_last)
    geometry = dict(stride=problem.stride, padding=problem.padding, dilation=problem.dilation, groups=problem.groups)
    with torch_route_planned(problem):
        assert tritonconv.explain(x, weight, **geometry)["variant"] == Variant.TORCH
        return {"torch route fwd": time_us(lambda: tritonconv.conv2d(x, weight, **geometry)),
                "torch fwd (same tensors)": time_us(lambda: F.conv2d(x, weight, **geometry))}  # fmt: skip


def decode_step_call(problem, device: str) -> Callable[[], object]:
    """`causal_conv1d_update` of one token per sequence of the layer's batch, a state of W - 1 columns
    and an fp32 weight, as a serving engine's decode loop calls it."""
    x = torch.randn(problem.n, problem.c, dtype=problem.dtype, device=device)
    state = torch.randn(problem.n, problem.c, problem.s - 1, dtype=problem.dtype, device=device)
    weight, bias = torch.randn(problem.c, problem.s, device=device), torch.randn(problem.c, device=device)
    return lambda: tritonconv.causal_conv1d_update(x, state, weight, bias, "silu")


def host_rows(layers: list, on_gpu: bool, time_us: Callable[[Callable[[], object]], float]) -> list[dict]:
    """One row per (layer, timed call): µs per call by `time_us`, with real launches on a GPU and
    stubbed ones without (the kernels each call launches are listed there). 3-D layers are skipped:
    the calls timed here are conv2d's."""
    device = "cuda" if on_gpu else "cpu"
    rows = []

    def row(layer, pass_name: str, microseconds: float, kernels: str, launched: str) -> None:
        rows.append({"layer": layer.name, "pass": pass_name, "host_us": microseconds, "launches": kernels,
                     "launch": launched, "batch": layer.problem.n,
                     "dtype": str(layer.problem.dtype).removeprefix("torch.")})  # fmt: skip
        print(f"{layer.name:>20s} {pass_name:>18s} {microseconds:8.2f} us  {kernels}", flush=True)

    for layer in layers:
        if layer.problem.is_3d:
            print(f"{layer.name:>20s} skipped: a 3-D layer", flush=True)
            continue
        calls = layer_calls(layer.problem, device, layer.problem.dtype)
        if is_depthwise_1d(layer.problem):  # a conv1d of a Mamba-style model: its decode step too
            calls["decode step"] = decode_step_call(layer.problem, device)
        for pass_name, fn in calls.items():
            kernels = "" if pass_name.startswith("torch") or on_gpu else launches_per_call(fn)
            launch.STUB = None if on_gpu else no_launch
            try:
                microseconds = time_us(fn)
            finally:
                launch.STUB = None
            row(layer, pass_name, microseconds, kernels, "real" if on_gpu else "stub")
        for pass_name, microseconds in torch_route_rows(layer.problem, device, time_us).items():
            row(layer, pass_name, microseconds, "", "real (torch's kernel)")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default="resnet50")
    parser.add_argument("--batch", type=int, default=None, help="default: the suite's on a GPU, 1 without")
    parser.add_argument("--dtype", default="bfloat16", choices=("float16", "bfloat16", "float32"))
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default="host.csv")
    args = parser.parse_args()
    rerun_under_interpreter_without_gpu("tritonconv.tools.bench.host")  # CPU tensors need the interpreter
    on_gpu = torch.cuda.is_available() and device_slug() != "interpreter"
    batch = args.batch if args.batch is not None else (None if on_gpu else 1)
    layers = load_suite(args.suite, batch=batch, dtype=getattr(torch, args.dtype))
    rows = host_rows(layers, on_gpu, lambda fn: host_us(fn, args.calls, args.repeats))
    table = stamp(pd.DataFrame(rows), torch.cuda.get_device_name() if on_gpu else "cpu (launch stubbed)")
    table.to_csv(args.out, index=False)
    summary = table.groupby("pass", sort=False)["host_us"].median()
    print("\nmedian host us per call over the layers:")
    print(summary.to_string(float_format=lambda v: f"{v:.2f}"))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
