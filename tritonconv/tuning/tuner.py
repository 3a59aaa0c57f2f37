"""Tune one problem: time every pruned candidate of its space once checked, keep the winner.

On a GPU each candidate's kernels are first compiled without running, and a candidate that spills
registers or needs more shared memory than a block gets is dropped untimed (`static_reason`). Each
remaining candidate runs on a NaN-poisoned output and is compared with torch's result on the same
inputs; a config that fails to compile, runs out of resources or computes a wrong answer is recorded
with its reason and never timed or chosen. The rest are timed (`triton.testing.do_bench` samples on
a GPU, which clears L2 before each; any injected timer in tests) and `select.choose` picks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import time
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F

from .. import kernels, static_compile
from ..arithmetic import CHANNELS_LAST, ConvProblem
from ..calls import conv2d_dgrad, conv2d_fwd, conv2d_wgrad
from ..config import KernelConfig
from ..ops import launch
from ..registry import Plan, spec, tuned_variants
from ..runtime import POISON_ENV, fp32_dot_precision, is_interpreted
from ..torch_reference import TORCH_CONV2D, TORCH_CONV3D
from . import cost_model
from .fingerprint import device_slug, problem_fingerprint
from .select import choose
from .space import DEFAULT_SHARED_MEMORY, candidates

Timer = Callable[[Callable[[], object]], Sequence[float]]
# Largest relative error (max |got - ref| / max |ref|) a correct config shows, by operand precision.
TOLERANCE = {torch.float16: 1e-2, torch.bfloat16: 4e-2, torch.float32: 1e-2, torch.float64: 1e-9}
INTERPRETER_CANDIDATES = 3


def interpreted() -> bool:
    return is_interpreted(kernels._conv2d_fwd_implicit_gemm_kernel)


def gpu_timer(fn: Callable[[], object]) -> Sequence[float]:
    import triton.testing

    return triton.testing.do_bench(fn, return_mode="all")


def interpreter_timer(fn: Callable[[], object]) -> Sequence[float]:
    """Wall time of one interpreted run: says nothing about kernels; only keeps the logic honest."""
    start = time.perf_counter()
    fn()
    return [(time.perf_counter() - start) * 1e3]


@contextlib.contextmanager
def poisoned_outputs() -> Iterator[None]:
    previous = os.environ.get(POISON_ENV)
    os.environ[POISON_ENV] = "1"
    try:
        yield
    finally:
        if previous is None:
            del os.environ[POISON_ENV]
        else:
            os.environ[POISON_ENV] = previous


@dataclasses.dataclass
class Workload:
    """Random inputs for one problem, the pass's launcher and torch's answer to check it against."""

    run: Callable[[str, KernelConfig], torch.Tensor]
    expected: torch.Tensor


def make_workload(problem: ConvProblem, pass_name: str, device: torch.device) -> Workload:
    generator = torch.Generator().manual_seed(0)
    channels_last = problem.layout == CHANNELS_LAST

    def tensor(shape):
        return torch.randn(shape, generator=generator).to(device, problem.dtype).to(memory_format=problem.memory_format)

    x, weight, grad_output = tensor(problem.input_shape), tensor(problem.weight_shape), tensor(problem.output_shape)
    expected = torch_answer(problem, pass_name, x, weight, grad_output)
    if pass_name == "fwd":
        return Workload(
            lambda variant, config: conv2d_fwd(x, weight, None, problem, Plan(variant, config, "tuning")), expected
        )
    if pass_name == "dgrad":
        return Workload(
            lambda variant, config: conv2d_dgrad(
                grad_output, weight, problem, channels_last, Plan(variant, config, "tuning")
            ),
            expected,
        )
    return Workload(
        lambda variant, config: conv2d_wgrad(x, grad_output, problem, channels_last, Plan(variant, config, "tuning")),
        expected,
    )


def torch_answer(
    problem: ConvProblem, pass_name: str, x: torch.Tensor, weight: torch.Tensor, grad_output: torch.Tensor
) -> torch.Tensor:
    """torch's forward, input gradient or weight gradient of the problem, in fp32 (fp64 for fp64),
    through autograd. Padding that is larger at the end ('same' with an even kernel) is added to x
    by torch's pad first, as torch itself does, and the input gradient is cropped back."""
    depth = problem.depth
    axes = [] if depth is None else [(depth.stride, depth.padding, depth.padding_end, depth.dilation)]
    axes += list(zip(problem.stride, problem.padding, problem.padding_end, problem.dilation, strict=True))
    stride, begin, end, dilation = (tuple(axis[i] for axis in axes) for i in range(4))
    reference_dtype = torch.float64 if problem.dtype == torch.float64 else torch.float32
    extra = [amount for b, e in reversed(list(zip(begin, end, strict=True))) for amount in (0, e - b)]
    padded = F.pad(x.to(reference_dtype), extra).requires_grad_()
    wide_weight = weight.to(reference_dtype).requires_grad_()
    convolve = TORCH_CONV3D if depth is not None else TORCH_CONV2D
    with torch.enable_grad():
        y = convolve(padded, wide_weight, None, stride, begin, dilation, problem.groups)
    if pass_name == "fwd":
        return y.detach()
    y.backward(grad_output.to(reference_dtype))
    if pass_name == "dgrad":
        return padded.grad[(..., *(slice(0, size) for size in x.shape[2:]))]
    return wide_weight.grad


def check(got: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype) -> str | None:
    """None when `got` is right, else why not."""
    got = got.to(expected.dtype)
    if torch.isnan(got).any():
        return "wrong result: elements left unwritten (NaN)"
    scale = expected.abs().max().clamp_min(1e-30)
    error = ((got - expected).abs().max() / scale).item()
    return None if error <= TOLERANCE[dtype] else f"wrong result: relative error {error:.3g}"


def tune_problem(
    problem: ConvProblem,
    pass_name: str,
    *,
    timer: Timer | None = None,
    device: torch.device | None = None,
    max_candidates: int | None = None,
) -> dict:
    """Time and check every candidate of every tuned variant; return the cache entry (its "config"
    is None when every candidate failed)."""
    on_gpu = not interpreted() and torch.cuda.is_available()
    device = device or torch.device("cuda" if on_gpu else "cpu")
    timer = timer or (gpu_timer if on_gpu else interpreter_timer)
    if max_candidates is None and not on_gpu:
        max_candidates = INTERPRETER_CANDIDATES
    workload = make_workload(problem, pass_name, device)
    shared_memory = _shared_memory(device)
    tried, timings, failed = [], {}, []
    for variant in tuned_variants(problem, pass_name):
        for config in _sample(candidates(problem, pass_name, variant, shared_memory), max_candidates, problem,
                              pass_name, variant):  # fmt: skip
            index = len(tried)
            tried.append((variant, config))
            reason = static_reason(workload, variant, config, shared_memory) or _gate(
                workload, variant, config, problem.dtype
            )
            if reason is not None:
                failed.append({"variant": variant, "config": config.as_dict(), "reason": reason})
                continue
            timings[index] = list(timer(lambda variant=variant, config=config: workload.run(variant, config)))
    entry = {
        "pass": pass_name,
        "problem": problem_fields(problem),
        "candidates": len(tried),
        "failed": failed,
        "device": device_slug(device if device.type == "cuda" else None),
        "timed_on": "gpu" if on_gpu else "interpreter (times mean nothing)",
        "tuned_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    entry["fingerprint"] = problem_fingerprint(pass_name, tuned_variants(problem, pass_name))
    if not timings:
        return {**entry, "variant": None, "config": None}
    choice = choose(timings)
    variant, config = tried[choice.index]
    return {
        **entry,
        "variant": variant,
        "config": config.as_dict(),
        "median_ms": choice.median_ms,
        "spread_ms": choice.spread_ms,
        "tied": len(choice.tied),
    }


def problem_fields(problem: ConvProblem) -> dict:
    """The problem as plain JSON fields, so a cache entry can lend its config to a similar shape."""
    return {
        "n": problem.n, "c": problem.c, "h": problem.h, "w": problem.w, "k": problem.k, "r": problem.r,
        "s": problem.s, "stride": list(problem.stride), "padding": list(problem.padding),
        "padding_end": list(problem.padding_end), "dilation": list(problem.dilation), "groups": problem.groups,
        "dtype": str(problem.dtype).removeprefix("torch."), "layout": problem.layout,
        **({} if problem.depth is None else {"depth": dataclasses.asdict(problem.depth)}),
    }  # fmt: skip


def static_reason(workload: Workload, variant: str, config: KernelConfig, shared_memory: int) -> str | None:
    """Why a candidate is unfit before anything runs: its kernels, compiled for this GPU but not
    launched, spill registers or need more shared memory than a block gets. None when they are fit,
    or where nothing compiles (the interpreter); a compile error is left to `_gate`, which records it."""
    if interpreted():
        return None
    try:
        with launch.captured() as launches:
            workload.run(variant, config)
        for kernel_launch, pointers in launches:
            compiled = static_compile.compile_captured(kernel_launch, pointers)
            problems = static_compile.resource_problems(static_compile.usage(compiled), shared_memory)
            if problems:
                return f"statically unfit ({kernel_launch.kernel.__name__}): {'; '.join(problems)}"
    except Exception:  # compile errors and the like: `_gate` runs the candidate and records them
        return None
    return None


def _gate(workload: Workload, variant: str, config: KernelConfig, dtype: torch.dtype) -> str | None:
    try:
        with poisoned_outputs():
            got = workload.run(variant, config)
        return check(got, workload.expected, dtype)
    except Exception as error:  # compile errors, out of resources: recorded, never fatal
        return f"{type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}"


def _sample(
    configs: list[KernelConfig], limit: int | None, problem: ConvProblem, pass_name: str, variant: str
) -> list[KernelConfig]:  # fmt: skip
    """At most `limit` of a route's configs (all when no limit): for a GEMM route, the heuristic's
    config and the static cost model's best (`cost_model.rank`); for the others, which the model
    does not describe, configs spread evenly over the space's order."""
    if limit is None or len(configs) <= limit:
        return configs
    if variant in cost_model.UNMODELLED:
        step = len(configs) / limit
        return [configs[int(i * step)] for i in range(limit)]
    heuristic = spec(pass_name, variant).heuristic(problem)
    ranked = cost_model.rank(problem, pass_name, configs)
    first = [heuristic] if heuristic in configs else []
    return [*first, *(config for config in ranked if config != heuristic)][:limit]


def _shared_memory(device: torch.device) -> int:
    if device.type != "cuda":
        return DEFAULT_SHARED_MEMORY
    properties = torch.cuda.get_device_properties(device)
    return getattr(properties, "shared_memory_per_block_optin", DEFAULT_SHARED_MEMORY)


def tf32_key() -> bool:
    return fp32_dot_precision() == "tf32"
