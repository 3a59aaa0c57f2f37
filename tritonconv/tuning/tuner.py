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
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

from .. import kernels
from ..ops import launch, launch_spec, static_compile
from ..ops.torch_conv import TORCH_CONFIG, cropped_back, symmetric_padding
from ..problem.arithmetic import CHANNELS_LAST, ConvProblem
from ..problem.config import KernelConfig
from ..problem.devices import DEFAULT_ARCH, GpuArch
from ..problem.runtime import POISON_ENV, device_arch, environment_variable, fp32_dot_precision, is_interpreted
from ..problem.torch_reference import TORCH_CONV2D, TORCH_CONV3D
from ..routes.calls import conv2d_dgrad, conv2d_fwd, conv2d_wgrad
from ..routes.registry import Plan, Variant, spec, tuned_variants
from . import cost_model, prune
from .fingerprint import device_slug, problem_fingerprint
from .select import choose, prefer_torch, spread
from .space import candidates

Timer = Callable[[Callable[[], object]], Sequence[float]]
# Largest relative error (max |got - ref| / max |ref|) a correct config shows, by operand precision.
TOLERANCE = {torch.float16: 1e-2, torch.bfloat16: 4e-2, torch.float32: 1e-2, torch.float64: 1e-9}
INTERPRETER_CANDIDATES = 3
# What a tuning run may choose from: every route (torch's own convolution included) or Triton's only.
ALL_ROUTES, TRITON_ROUTES = "all", "triton"
ROUTE_CHOICES = (ALL_ROUTES, TRITON_ROUTES)


def interpreted() -> bool:
    return is_interpreted(kernels._conv2d_fwd_implicit_gemm_kernel)


def gpu_timer(fn: Callable[[], object]) -> Sequence[float]:
    import triton.testing

    return triton.testing.do_bench(fn, return_mode="all")


INTERPRETER_REPEAT_BELOW_MS = 10.0


def interpreter_timer(fn: Callable[[], object]) -> Sequence[float]:
    """The CPU time of an interpreted run (this process's, all its threads: time another process
    takes from the cores does not count, so a busy machine cannot reorder the candidates): says
    nothing about kernels; only keeps the logic honest. A run under `INTERPRETER_REPEAT_BELOW_MS`
    (torch's own kernel, not an interpreted one) is run twice more and the median taken. torch runs on
    one intra-op thread meanwhile: on a busy machine its pool's other threads wait, descheduled, and a
    tiny convolution then takes 10-20 ms instead of 0.1 (seen on this 2-core machine)."""
    samples, threads = [], torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(3):
            start = time.process_time()
            fn()
            samples.append((time.process_time() - start) * 1e3)
            if samples[0] >= INTERPRETER_REPEAT_BELOW_MS:
                break
    finally:
        torch.set_num_threads(threads)
    return samples


def poisoned_outputs() -> contextlib.AbstractContextManager:
    """Within: every output starts NaN-filled (`runtime.poison_outputs`), so an unwritten element shows."""
    return environment_variable(POISON_ENV, "1")


@dataclasses.dataclass
class Workload:
    """Random inputs for one problem, the pass's launcher and torch's answer to check it against."""

    run: Callable[[str, KernelConfig], torch.Tensor]
    expected: torch.Tensor | None
    operands: tuple[torch.Tensor, ...] = ()


def make_workload(
    problem: ConvProblem, pass_name: str, device: torch.device, reference_dtype: torch.dtype | None = None,
    answer: bool = True,
) -> Workload:  # fmt: skip
    """Seeded random operands on `device` and torch's answer (in `reference_dtype`, by default fp32,
    fp64 for fp64 problems; none without `answer`, for a run that only captures the launches);
    `workload.operands` keeps (x, weight, grad_output) for other checks."""
    generator = torch.Generator().manual_seed(0)
    channels_last = problem.layout == CHANNELS_LAST

    def tensor(shape):
        return torch.randn(shape, generator=generator).to(device, problem.dtype).to(memory_format=problem.memory_format)

    x, weight, grad_output = tensor(problem.input_shape), tensor(problem.weight_shape), tensor(problem.output_shape)
    expected = torch_answer(problem, pass_name, x, weight, grad_output, reference_dtype) if answer else None
    operands = (x, weight, grad_output)
    if pass_name == "fwd":
        return Workload(
            lambda variant, config: conv2d_fwd(x, weight, None, problem, Plan(variant, config, "tuning")),
            expected,
            operands,
        )
    if pass_name == "dgrad":
        return Workload(
            lambda variant, config: conv2d_dgrad(
                grad_output, weight, problem, channels_last, Plan(variant, config, "tuning")
            ),
            expected,
            operands,
        )
    return Workload(
        lambda variant, config: conv2d_wgrad(x, grad_output, problem, channels_last, Plan(variant, config, "tuning")),
        expected,
        operands,
    )


def torch_answer(
    problem: ConvProblem, pass_name: str, x: torch.Tensor, weight: torch.Tensor, grad_output: torch.Tensor,
    reference_dtype: torch.dtype | None = None,
) -> torch.Tensor:  # fmt: skip
    """torch's forward, input gradient or weight gradient of the problem, in `reference_dtype` (by
    default fp32, fp64 for fp64), through autograd. Padding that differs at the two ends ('same'
    with an even kernel, a causal conv1d) is made symmetric by adding the extra to x with torch's
    pad first, as torch's 'same' does, and the input gradient is cropped back."""
    stride, both, dilation, extra = symmetric_padding(problem)
    reference_dtype = reference_dtype or (torch.float64 if problem.dtype == torch.float64 else torch.float32)
    padded = F.pad(x.to(reference_dtype), extra).requires_grad_()
    wide_weight = weight.to(reference_dtype).requires_grad_()
    convolve = TORCH_CONV3D if problem.is_3d else TORCH_CONV2D
    with torch.enable_grad():
        y = convolve(padded, wide_weight, None, stride, both, dilation, problem.groups)
    if pass_name == "fwd":
        return y.detach()
    y.backward(grad_output.to(reference_dtype))
    if pass_name == "dgrad":
        return padded.grad[cropped_back(extra, tuple(x.shape[2:]))]
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
    top_k: int | None = None,
    records: list[dict] | None = None,
    routes: str = ALL_ROUTES,
) -> dict:
    """Time and check every candidate of every tuned variant (at most `max_candidates` per variant),
    or, with `top_k`, only the pruned few (`prune.pruned`: the heuristic's, the TMA route's and the
    cost model's `top_k` best), then torch's own convolution on the same tensors; return the cache
    entry: the best Triton candidate under "triton", torch's time ("torch_ms") and the choice made
    from `routes` ('all': torch's kernel may be chosen, `select.prefer_torch`; 'triton': Triton's
    only, torch timed for the verdict alone), "config" None when nothing ran. With `records`, one
    row per candidate is appended to it: why it was picked, its static numbers and its time or why
    it was not timed (`candidate_record`)."""
    if routes not in ROUTE_CHOICES:
        raise ValueError(f"routes must be one of {', '.join(ROUTE_CHOICES)}; got {routes!r}")
    gpu = on_gpu()
    device = device or torch.device("cuda" if gpu else "cpu")
    timer = timer or (gpu_timer if gpu else interpreter_timer)
    if max_candidates is None and not gpu:
        max_candidates = INTERPRETER_CANDIDATES
    workload = make_workload(problem, pass_name, device)
    arch = _arch(device)
    if top_k is not None:
        picked = prune.pruned(problem, pass_name, top_k, arch)
    else:
        picked = [prune.Candidate(variant, config, prune.SPREAD if max_candidates else "space")
                  for variant in tuned_variants(problem, pass_name)
                  for config in _sample(candidates(problem, pass_name, variant, arch), max_candidates,
                                        problem, pass_name, variant, arch)]  # fmt: skip
    tried, timings, failed = [], {}, []
    for candidate in picked:
        variant, config = candidate.variant, candidate.config
        index = len(tried)
        tried.append((variant, config))
        numbers: dict = {}
        reason = static_reason(workload, variant, config, arch, numbers) or _gate(
            workload, variant, config, problem.dtype
        )
        if reason is None:
            timings[index] = _timed(timer, workload, problem, pass_name, variant, config)
        else:
            failed.append({"variant": variant, "config": config.as_dict(), "reason": reason})
        if records is not None:
            records.append(candidate_record(problem, pass_name, candidate, numbers, reason, timings.get(index)))
    torch_samples = None
    # torch's kernel, checked once like any candidate and timed on the same tensors, whatever `routes`
    # (a run that keeps it out of the choice still reports its time).
    reason = _gate(workload, Variant.TORCH, TORCH_CONFIG, problem.dtype)
    if reason is None:
        torch_samples = _timed(timer, workload, problem, pass_name, Variant.TORCH, TORCH_CONFIG)
    else:
        failed.append({"variant": Variant.TORCH, "config": TORCH_CONFIG.as_dict(), "reason": reason})
    if records is not None:
        torch_candidate = prune.Candidate(Variant.TORCH, TORCH_CONFIG, prune.TORCH)
        records.append(candidate_record(problem, pass_name, torch_candidate, {}, reason, torch_samples))
    entry = {
        "pass": pass_name,
        "problem": problem_fields(problem),
        "candidates": len(tried),
        "failed": failed,
        "device": device_slug(device if device.type == "cuda" else None),
        "timed_on": "gpu" if gpu else "interpreter (times mean nothing)",
        **({} if top_k is None else {"pruned_to": f"heuristic, TMA and the cost model's top {top_k}"}),
        "tuned_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    entry["fingerprint"] = problem_fingerprint(pass_name, tuned_variants(problem, pass_name))
    entry["torch_ms"] = None if torch_samples is None else statistics.median(torch_samples)
    entry["torch_spread_ms"] = None if torch_samples is None else spread(torch_samples)
    triton = None
    if timings:
        choice = choose(timings)
        variant, config = tried[choice.index]
        triton = {"variant": variant, "config": config.as_dict(), "median_ms": choice.median_ms,
                  "spread_ms": choice.spread_ms, "tied": len(choice.tied)}  # fmt: skip
    return decide({**entry, "triton": triton}, routes)


def decide(entry: dict, routes: str) -> dict:
    """`entry` (with its "triton" best and "torch_ms"/"torch_spread_ms") with its choice made from
    `routes`: torch's kernel when it may compete and `select.prefer_torch` says it is faster beyond
    the noise, else the best Triton candidate ("config" None when there is none). No timing: a cached
    entry is re-decided this way when a run asks for other routes."""
    triton, torch_ms, torch_spread = entry.get("triton"), entry.get("torch_ms"), entry.get("torch_spread_ms")
    decided = {**entry, "routes": routes}
    if routes == ALL_ROUTES and prefer_torch(triton, torch_ms, torch_spread):
        return {**decided, "variant": Variant.TORCH, "config": TORCH_CONFIG.as_dict(), "median_ms": torch_ms,
                "spread_ms": torch_spread, "tied": 1}  # fmt: skip
    if triton is None:
        return {**decided, "variant": None, "config": None}
    return {**decided, **triton}


def best_triton(entry: Mapping[str, object]) -> dict | None:
    """The best Triton candidate an entry holds: its "triton" part (None when every candidate
    failed), or, for an entry written before torch was timed, the entry's own choice."""
    if "triton" in entry:
        return entry["triton"]
    return dict(entry) if entry.get("config") is not None and entry.get("variant") != Variant.TORCH else None


def redecidable(entry: dict) -> bool:
    """Whether `decide` can choose for `entry` again without timing (it holds both routes' times)."""
    return "triton" in entry and "torch_ms" in entry


# The candidate being timed now, (problem, pass, variant), for a timer that wants to know (tests' fakes).
timing_now: tuple[ConvProblem, str, str] | None = None


def _timed(
    timer: Timer, workload: Workload, problem: ConvProblem, pass_name: str, variant: str, config: KernelConfig
) -> list[float]:
    """The timer's samples of one candidate, `timing_now` naming it meanwhile."""
    global timing_now
    timing_now = (problem, pass_name, variant)
    try:
        return list(timer(lambda: workload.run(variant, config)))
    finally:
        timing_now = None


def problem_fields(problem: ConvProblem) -> dict:
    """The problem as plain JSON fields, so a cache entry can lend its config to a similar shape."""
    return {
        "n": problem.n, "c": problem.c, "h": problem.h, "w": problem.w, "k": problem.k, "r": problem.r,
        "s": problem.s, "stride": list(problem.stride), "padding": list(problem.padding),
        "padding_end": list(problem.padding_end), "dilation": list(problem.dilation), "groups": problem.groups,
        "dtype": str(problem.dtype).removeprefix("torch."), "layout": problem.layout,
        **({} if problem.depth is None else {"depth": dataclasses.asdict(problem.depth)}),
    }  # fmt: skip


def static_reason(
    workload: Workload, variant: str, config: KernelConfig, arch: GpuArch, numbers: dict | None = None
) -> str | None:
    """Why a candidate is unfit before anything runs: its kernels, compiled for this GPU but not
    launched, spill registers or need more shared memory (LDS) than a block gets, or more VGPRs
    than an AMD lane has, on `arch`. None when they are fit,
    or where nothing compiles (the interpreter); a compile error is left to `_gate`, which records it.
    `numbers`, if given, receives what the launches showed (`static_numbers`)."""
    try:
        with launch.captured() as launches:
            workload.run(variant, config)
    except Exception:  # a launcher that refuses the config: `_gate` runs it and records why
        return None
    usages = []
    try:
        for kernel_launch, pointers in launches if not interpreted() else ():
            found, warps = launch_spec.captured_usage(kernel_launch, pointers)
            usages.append((found, warps))
            problems = static_compile.resource_problems(found, arch)
            if problems:
                return f"statically unfit ({kernel_launch.kernel.__name__}): {'; '.join(problems)}"
    except Exception:  # compile errors and the like: `_gate` runs the candidate and records them
        return None
    finally:
        if numbers is not None:
            numbers.update(static_numbers(launches, usages))
    return None


def static_numbers(launches: Sequence, usages: Sequence[tuple[static_compile.StaticUsage, int]]) -> dict:
    """The launches' kernels and programs and, where they were compiled, the heaviest kernel's
    registers per thread and shared bytes, the spill bytes of all, and the blocks of it one SM holds
    (`occupancy`). The main kernel (most programs) stands for the call."""
    if not launches:
        return {}
    grids = [math.prod(kernel_launch.grid) for kernel_launch, _ in launches]
    numbers = {"kernels": " ".join(kernel_launch.kernel.__name__ for kernel_launch, _ in launches),
               "launches": len(launches), "programs": max(grids)}  # fmt: skip
    if usages:
        main = grids.index(max(grids))
        found, warps = usages[min(main, len(usages) - 1)]
        numbers.update(registers=max(u.registers for u, _ in usages), spill_bytes=sum(u.spill_bytes for u, _ in usages),
                       shared_bytes=max(u.shared_bytes for u, _ in usages),
                       blocks_per_sm=occupancy(found, warps))  # fmt: skip
    return numbers


def occupancy(
    found: static_compile.StaticUsage, num_warps: int, device: cost_model.DeviceModel = cost_model.H200
) -> int:
    """Blocks of a kernel one SM holds: the least of its warp slots, its 64K registers (allocated per
    warp in 256s) and its shared memory (at least 1)."""
    per_warp = -(-max(found.registers, 1) * 32 // 256) * 256
    by_registers = 65536 // (per_warp * num_warps)
    by_shared = device.shared_memory_per_sm // found.shared_bytes if found.shared_bytes else device.max_blocks_per_sm
    return max(1, min(device.max_blocks_per_sm, device.max_warps_per_sm // num_warps, by_registers, by_shared))


def candidate_record(
    problem: ConvProblem, pass_name: str, candidate: prune.Candidate, numbers: dict, reason: str | None,
    samples: Sequence[float] | None,
) -> dict:  # fmt: skip
    """One timed (or refused) candidate as a row of the per-candidate report: why it was picked, the
    cost model's estimate, its static numbers and waves over the SMs, its median time."""
    unmodelled = candidate.variant in cost_model.UNMODELLED or candidate.variant == Variant.TORCH
    estimate = None if unmodelled else cost_model.estimate(
        problem, pass_name, candidate.config, cost_model.H200)  # fmt: skip
    sms = torch.cuda.get_device_properties(0).multi_processor_count if on_gpu() else cost_model.H200.sms
    programs = numbers.get("programs")
    blocks = numbers.get("blocks_per_sm")
    return {
        "pass": str(pass_name), "variant": str(candidate.variant), "why": candidate.why,
        "model_rank": candidate.model_rank, **candidate.config.as_dict(),
        "model_us": None if estimate is None else estimate.seconds * 1e6,
        **{name: numbers.get(name) for name in ("kernels", "launches", "programs", "registers", "spill_bytes",
                                                "shared_bytes", "blocks_per_sm")},
        "sms": sms, "waves": None if programs is None or blocks is None else -(-programs // (sms * blocks)),
        "status": "timed" if reason is None else reason,
        "median_ms": None if samples is None else statistics.median(samples),
        "samples": None if samples is None else len(samples),
    }  # fmt: skip


def on_gpu() -> bool:
    """Kernels compile and run on a CUDA GPU here (not in the interpreter)."""
    return not interpreted() and torch.cuda.is_available()


def _gate(workload: Workload, variant: str, config: KernelConfig, dtype: torch.dtype) -> str | None:
    try:
        with poisoned_outputs():
            got = workload.run(variant, config)
        return check(got, workload.expected, dtype)
    except Exception as error:  # compile errors, out of resources: recorded, never fatal
        return f"{type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}"


def _sample(
    configs: list[KernelConfig], limit: int | None, problem: ConvProblem, pass_name: str, variant: str,
    arch: GpuArch = DEFAULT_ARCH,
) -> list[KernelConfig]:  # fmt: skip
    """At most `limit` of a route's configs (all when no limit): for a GEMM route, the heuristic's
    config and the static cost model's best (`cost_model.rank`); for the others, which the model
    does not describe, configs spread evenly over the space's order."""
    if limit is None or len(configs) <= limit:
        return configs
    if variant in cost_model.UNMODELLED:
        return prune.spread(configs, limit)
    heuristic = spec(pass_name, variant).heuristic(problem, arch=arch)
    ranked = cost_model.rank(problem, pass_name, configs)
    first = [heuristic] if heuristic in configs else []
    return [*first, *(config for config in ranked if config != heuristic)][:limit]


def _arch(device: torch.device) -> GpuArch:
    """The limits the candidates must fit: the GPU's (`devices.arch_of`), a compile-only run's
    target, or (the interpreter) the default arch's."""
    return device_arch(device) or DEFAULT_ARCH


def tf32_key() -> bool:
    return fp32_dot_precision() == "tf32"
