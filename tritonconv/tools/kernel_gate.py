"""`tritonconv check-kernels --arch sm90,sm100,gfx942,gfx950`: every kernel route compiled for each
architecture (`problem/devices.py`) at the configs that would run, on a machine without a GPU, and
checked for what the interpreter cannot see.

For each layer of the chosen suites, each pass (fwd, dgrad, wgrad, bias grad), each dtype, in
channels_last, every route that computes the layer (`registry.routes`) is prepared at its heuristic
config and at any config a shipped table for the arch (`autotune/*-<arch>.json`) holds for it; with
`space=True` at every candidate of its tuning space too. Each kernel the route launches is compiled
(`static_compile`) and gets one row: registers, spills, shared memory (LDS) and the matrix and
tensor-memory instructions. A route the arch does not offer (the TMA routes on AMD Instinct, which
has no TMA) gets a row that says so ("unavailable on <arch>"): none is skipped silently.

A chosen config (heuristic or shipped table) fails the gate on a compile error, any spill (NVIDIA
stack, AMD scratch), more shared memory (LDS) than a block of the arch gets, more VGPRs than an AMD
lane has, or a 2-D `tl.dot` kernel that does not issue the arch's matrix instruction: wgmma on sm_90
and tcgen05 on sm_100 at a tile they serve (a multiple of 64 rows per warpgroup of 4 warps), v_mfma
on AMD at any tile. Space candidates are reported, not gated: the tuner drops the bad ones before
timing (`tuning.tuner`).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import inspect
import multiprocessing
import os
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import pandas as pd
import torch
import triton

from ..ops import launch, static_compile
from ..ops.causal_packed import launch_varlen, run_seq, run_seq_wgrad, varlen_launch
from ..ops.causal_update import run_update
from ..ops.epilogue import NO_EPILOGUE
from ..ops.static_compile import resolve_arch
from ..ops.wgrad import bias_grad_operand, prepare_bias_grad
from ..problem import runtime
from ..problem.arithmetic import CHANNELS_LAST, ConvProblem, memory_format_of
from ..problem.config import KernelConfig
from ..problem.devices import DEFAULT_ARCH, GpuArch, arch_for_capability
from ..problem.suites import load_suite, suites_folder
from ..routes.registry import Pass, is_depthwise_1d, routes, spec
from ..tuning.cache import TuningCache
from ..tuning.session import cached_entry
from ..tuning.space import candidates, shared_memory_bytes
from .choices import GATE_SUITES

DEFAULT_SUITES = GATE_SUITES
DEFAULT_DTYPES = (torch.bfloat16, torch.float16)
BIAS_GRAD = "bias grad"
# The causal conv1d's own kernels, for every conv1d depthwise layer: the decode step (`ops/causal_update.py`),
# one token against a state, shifting and circular (`cache_seqlens`); the packed sequences' (`seq_idx`)
# forward, input and weight gradients and the packed prefill with a state cache (`ops/causal_packed.py`).
# Item name -> (its variant column, what it launches for the layer's problem).
SEQUENCE_STEPS: dict[str, tuple[str, Callable[[ConvProblem], None]]] = {
    "decode step": ("causal update", lambda problem: _decode_step(problem, circular=False)),
    "decode step (circular)": ("causal update", lambda problem: _decode_step(problem, circular=True)),
    "packed fwd": ("seq_idx", lambda problem: _packed(problem, "fwd")),
    "packed dgrad": ("seq_idx", lambda problem: _packed(problem, "dgrad")),
    "packed wgrad + bias grad": ("seq_idx", lambda problem: _packed(problem, "wgrad")),
    "packed prefill": ("varlen", lambda problem: _packed_prefill(problem)),
}
WGRAD_WITH_BIAS = "wgrad + bias grad"  # a weight-gradient route that sums db as it goes (`fuses_bias_grad`)
CHOSEN = ("heuristic", "shipped table")
# Kernels whose tl.dot is batched (3-D): Triton lowers it to mma.sync on NVIDIA, never wgmma or tcgen05.
BATCHED_DOT_KERNELS = frozenset({"_conv2d_fwd_grouped_tile_kernel"})
WGMMA_ROWS = 64
UNAVAILABLE = "unavailable"  # the source of a route the arch does not offer
# The report's columns of each backend's usage (`static_compile.StaticUsage`), after the item's.
USAGE_COLUMNS = {
    "cuda": ("registers", "spill_bytes", "shared_bytes", "wgmma", "mma_sync", "tma", "tcgen05", "tmem"),
    "hip": ("registers", "agprs", "sgprs", "spill_bytes", "shared_bytes", "mfma", "waves_per_simd"),
}


@dataclasses.dataclass(frozen=True)
class GateItem:
    """One route at one config for one layer: what a worker prepares and compiles."""

    suite: str
    layer: str
    problem: ConvProblem
    pass_name: str
    variant: str
    config: KernelConfig | None
    source: str


def default_report(arch: str) -> Path:
    return Path("reports") / "static" / f"{arch}_triton{triton.__version__}.csv"


def gate_items(
    suites: Sequence[str] = DEFAULT_SUITES, dtypes: Sequence[torch.dtype] = DEFAULT_DTYPES, space: bool = False,
    arch: str = "sm90",
) -> list[GateItem]:  # fmt: skip
    """Every (layer, pass, route, config) the gate compiles for `arch`, in a fixed order, and one
    item (source `UNAVAILABLE`, no config) per route that computes a layer elsewhere but is not
    offered on `arch`."""
    tables = _shipped_tables(arch)
    target = resolve_arch(arch)
    items: dict[GateItem, None] = {}
    for suite in suites:
        for dtype in dtypes:
            for layer in load_suite(suite, dtype=dtype, layout=CHANNELS_LAST):
                problem = layer.problem
                for pass_name in (Pass.FWD, Pass.DGRAD, Pass.WGRAD):
                    with runtime.target_arch(target):
                        offered = routes(problem, pass_name)  # the arch's routes; the heuristics take it too
                    for variant in routes(problem, pass_name):  # outside the arch: every route there is
                        if variant not in offered:
                            unavailable = GateItem(suite, layer.name, problem, pass_name, variant, None, UNAVAILABLE)
                            items.setdefault(unavailable)
                    for variant in offered:
                        configs = {spec(pass_name, variant).heuristic(problem, arch=target): "heuristic"}
                        for table in tables:
                            entry = cached_entry(table, problem, pass_name)
                            if entry and entry.get("variant") == variant and entry.get("config"):
                                configs.setdefault(KernelConfig(**entry["config"]), "shipped table")
                        if space:
                            for config in candidates(problem, pass_name, variant, target):
                                configs.setdefault(config, "space")
                        fused = pass_name == Pass.WGRAD and spec(pass_name, variant).fuses_bias_grad
                        for config, source in configs.items():
                            items.setdefault(GateItem(suite, layer.name, problem, pass_name, variant, config, source))
                            if fused:
                                items.setdefault(
                                    GateItem(suite, layer.name, problem, WGRAD_WITH_BIAS, variant, config, source)
                                )
                items.setdefault(GateItem(suite, layer.name, problem, BIAS_GRAD, "reduction", None, "heuristic"))
                if is_depthwise_1d(problem):
                    for step, (variant, _) in SEQUENCE_STEPS.items():
                        items.setdefault(GateItem(suite, layer.name, problem, step, variant, None, "heuristic"))
    return list(items)


def _shipped_tables(arch: str) -> list[TuningCache]:
    return [TuningCache(path) for path in sorted(suites_folder().glob(f"*-{arch}.json"))]


def check(items: Iterable[GateItem], arch: str = "sm90", jobs: int | None = None) -> pd.DataFrame:
    """Compile every item's kernels for `arch` in `jobs` worker processes; one row per kernel launch."""
    items = list(items)
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(items)))
    if jobs == 1:  # in this process, which must not run the interpreter
        with static_compile.compiling_for(arch):
            rows = _compile_share(items)
    else:
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no TRITON_INTERPRET, no CUDA state
        with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context, initializer=_start_worker,
                                                    initargs=(arch,)) as pool:  # fmt: skip
            shares = [items[start::jobs] for start in range(jobs)]
            rows = [row for share in pool.map(_compile_share, shares) for row in share]
    order = {item: index for index, item in enumerate(items)}
    table = pd.DataFrame(rows)
    return table.sort_values("item", key=lambda column: column.map(order), kind="stable").drop(columns="item")


def failures(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of chosen configs that fail the gate."""
    return table[table["source"].isin(CHOSEN) & (table["verdict"] != "ok")]


_worker_context = None


def _start_worker(arch: str) -> None:
    os.environ.pop("TRITON_INTERPRET", None)
    global _worker_context
    _worker_context = static_compile.compiling_for(arch)
    _worker_context.__enter__()


def _compile_share(items: list[GateItem]) -> list[dict]:
    return [row for item in items for row in compile_item(item)]


def compile_item(item: GateItem) -> list[dict]:
    """Prepare the item's route as a call would and compile each kernel it launches (inside
    `static_compile.compiling_for`)."""
    base = {
        "suite": item.suite, "layer": item.layer, "pass": item.pass_name, "variant": item.variant,
        "dtype": str(item.problem.dtype).removeprefix("torch."),
        "config": "" if item.config is None else item.config.as_text(), "source": item.source,
    }  # fmt: skip
    if item.source == UNAVAILABLE:
        reason = f"unavailable on {runtime.current_arch().name}: no TMA"
        return [{**base, "item": item, "kernel": "", "verdict": reason}]
    try:
        launches = _launches(item)
    except Exception as error:  # a launcher that refuses the config: that is the finding
        return [{**base, "item": item, "kernel": "", "verdict": f"prepare error: {_one_line(error)}"}]
    rows = []
    for kernel_launch, pointers in launches:
        row = {**base, "item": item, "kernel": kernel_launch.kernel.__name__}
        try:
            compiled = static_compile.compile_captured(kernel_launch, pointers)
            found = static_compile.usage(compiled)
        except Exception as error:
            row["verdict"] = f"compile error: {_one_line(error)}"
        else:
            arch = runtime.current_arch()
            row.update(usage_columns(found, arch), num_warps=compiled.metadata.num_warps)
            if item.config is not None and _has_dot(kernel_launch.kernel):  # the space estimates the GEMM's tiles
                row["estimated_shared_bytes"] = shared_memory_bytes(item.config, item.problem.element_size,
                                                                    item.variant, arch)  # fmt: skip
            row["verdict"] = verdict(kernel_launch.kernel, kernel_launch.constexprs, found, arch)
        rows.append(row)
    return rows


def usage_columns(found: static_compile.StaticUsage, arch: GpuArch) -> dict:
    """The report's numbers of one compiled kernel: its backend's columns (`USAGE_COLUMNS`), AMD's
    occupancy (wavefronts per SIMD its VGPRs allow) included."""
    values = {**dataclasses.asdict(found), "waves_per_simd": arch.waves_per_simd(found.registers)}
    return {name: values[name] for name in USAGE_COLUMNS[found.backend]}


def verdict(kernel: object, constexprs: dict, found: static_compile.StaticUsage, arch: GpuArch = DEFAULT_ARCH) -> str:
    """'ok', or why the compiled kernel is unfit on `arch`."""
    reasons = static_compile.resource_problems(found, arch)
    instruction = arch.matrix_instruction
    if _has_dot(kernel) and _expects_matrix_instruction(kernel, constexprs, arch) and not getattr(found, instruction):
        reasons.append(f"tl.dot without {'v_mfma' if arch.is_amd else instruction}")
    return "; ".join(reasons) or "ok"


def _expects_matrix_instruction(kernel: object, constexprs: dict, arch: GpuArch) -> bool:
    """AMD: every tile lowers to v_mfma, the batched 3-D dot included. NVIDIA: a 2-D dot at a tile
    the warpgroup MMA serves (the batched dot is mma.sync by design)."""
    return arch.is_amd or (kernel.__name__ not in BATCHED_DOT_KERNELS and _warpgroup_tile(constexprs))


def _warpgroup_tile(constexprs: dict) -> bool:
    """A tile of whole 64-row warpgroup MMAs per warpgroup of 4 warps (what wgmma and tcgen05 serve)."""
    warps = constexprs.get("num_warps", 4)
    rows = constexprs.get("BLOCK_M") or constexprs.get("BLOCK_P", 0) * constexprs.get("BLOCK_Q", 0)  # a box of pixels
    return warps % 4 == 0 and rows > 0 and rows % (WGMMA_ROWS * (warps // 4)) == 0


def _has_dot(kernel: object) -> bool:
    """Whether the kernel multiplies tiles: `tl.dot` itself or the shared `common.dot_accumulate`."""
    return re.search(r"\b(tl\.dot|dot_accumulate)\(", inspect.getsource(kernel.fn)) is not None


def _launches(item: GateItem) -> list[tuple[launch.KernelLaunch, tuple]]:
    """The launches `item`'s route makes, captured instead of launched (CPU tensors stand in)."""
    problem = item.problem
    x, weight = _tensor(problem.input_shape, problem), _tensor(problem.weight_shape, problem)
    grad_output = _tensor(problem.output_shape, problem)
    run_route: dict[str, Callable[[], None]] = {
        Pass.FWD: lambda: _forward(x, weight, problem, item),
        Pass.DGRAD: lambda: _gradient(item, problem.input_shape, grad_output, weight),
        Pass.WGRAD: lambda: _gradient(item, problem.weight_shape, x, grad_output),
        WGRAD_WITH_BIAS: lambda: _weight_and_bias_gradient(item, x, grad_output),
        BIAS_GRAD: lambda: _bias_gradient(bias_grad_operand(grad_output)),
        **{step: (lambda launch=launch: launch(problem)) for step, (_, launch) in SEQUENCE_STEPS.items()},
    }
    with launch.captured() as launches:
        run_route[item.pass_name]()
    return launches


def _decode_step(problem: ConvProblem, *, circular: bool) -> None:
    """One token of each of the layer's sequences against a state of W - 1 columns (W + 2 for a
    circular one), the weight fp32 as the serving engines keep it."""
    batch, channels, width = problem.n, problem.c, problem.s
    x = torch.empty(batch, channels, 1, dtype=problem.dtype)
    state = torch.empty(batch, channels, width + 2 if circular else width - 1, dtype=problem.dtype)
    weight = torch.randn(channels, width)
    seqlens = torch.zeros(batch, dtype=torch.int32) if circular else None
    run_update(x, state, weight, torch.randn(channels), torch.empty_like(x), seqlens, None, silu=True)


def _packed(problem: ConvProblem, pass_name: str) -> None:
    """The layer's sequences packed with `seq_idx` (their (B, L, D) layout), SiLU and bias, the weight fp32."""
    batch, channels, length, width = problem.n, problem.c, problem.w, problem.s
    x = torch.empty(batch, length, channels, dtype=problem.dtype).transpose(1, 2)
    seq_idx = torch.zeros(batch, length, dtype=torch.int32)
    weight = torch.randn(channels, width)
    if pass_name == "wgrad":
        run_seq_wgrad(x, torch.empty_like(x, dtype=torch.float32), seq_idx, width, 1, True)  # SiLU's fp32 dY
        return
    flip = pass_name == "dgrad"
    bias = None if flip else torch.randn(channels)
    run_seq(x, weight, bias, seq_idx, torch.empty_like(x), silu=not flip, dilation=1, flip=flip)


def _packed_prefill(problem: ConvProblem) -> None:
    """The layer's batch as packed prompts of the layer's length each, from a cache of twice as many lines."""
    batch, channels, length, width = problem.n, problem.c, problem.w, problem.s
    x = torch.empty(batch * length, channels, dtype=problem.dtype).t()
    starts = torch.arange(batch + 1, dtype=torch.int32) * length
    states = torch.empty(2 * batch, channels, width - 1, dtype=problem.dtype)
    indices, has_state = torch.arange(batch, dtype=torch.int32), torch.ones(batch, dtype=torch.bool)
    weight, bias = torch.randn(channels, width), torch.randn(channels)
    launch_varlen(varlen_launch(x, weight, bias, torch.empty_like(x), states, starts, indices, has_state, True, -1),
                  x, weight, bias, torch.empty_like(x), states, starts, indices, has_state)  # fmt: skip


def _forward(x: torch.Tensor, weight: torch.Tensor, problem: ConvProblem, item: GateItem) -> None:
    output = _tensor(problem.output_shape, problem)
    run = spec(Pass.FWD, item.variant).prepare(x, weight, None, output, problem, item.config, NO_EPILOGUE)
    run(x, weight, None, output, None, None)


def _gradient(item: GateItem, shape: tuple[int, ...], *operands: torch.Tensor) -> None:
    gradient = _tensor(shape, item.problem)
    spec(item.pass_name, item.variant).prepare(*operands, gradient, item.problem, item.config)(*operands, gradient)


def _bias_gradient(grad_output: torch.Tensor) -> None:
    grad_bias = grad_output.new_empty(grad_output.shape[1])
    prepare_bias_grad(grad_output, grad_bias)(grad_output, grad_bias)


def _weight_and_bias_gradient(item: GateItem, x: torch.Tensor, grad_output: torch.Tensor) -> None:
    problem = item.problem
    grad_weight, grad_bias = _tensor(problem.weight_shape, problem), grad_output.new_empty(problem.k)
    run = spec(Pass.WGRAD, item.variant).prepare(x, grad_output, grad_weight, problem, item.config, grad_bias=grad_bias)
    run(x, grad_output, grad_weight, grad_bias)


def _tensor(shape: tuple[int, ...], problem: ConvProblem) -> torch.Tensor:
    """An uninitialised channels_last(_3d) CPU tensor: its pointer, strides and dtype are all a compile reads."""
    return torch.empty(shape, dtype=problem.dtype, memory_format=memory_format_of(len(shape), True))


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:300]}"


def summary(table: pd.DataFrame) -> str:
    """Kernels, configs, spills and failures, for the console and the issue notes."""
    chosen = table[table["source"].isin(CHOSEN)]
    spills = int((table.get("spill_bytes", pd.Series(dtype=float)).fillna(0) > 0).sum())
    under = (table["shared_bytes"] - table["estimated_shared_bytes"]).max() if "estimated_shared_bytes" in table else 0
    return (
        f"kernels: {table['kernel'].replace('', pd.NA).dropna().nunique()}, compiled launches: {len(table)} "
        f"({len(chosen)} at chosen configs), spilling: {spills}, failures at chosen configs: {len(failures(table))}, "
        f"most shared memory the space's estimate under-counts: {max(0, int(under or 0))} bytes"
    )


def against_driver(items: Sequence[GateItem], static_table: pd.DataFrame | None) -> pd.DataFrame:
    """On a GPU: each item's kernels compiled for this GPU and loaded by its driver, the driver's
    registers and spills (`n_regs`, `n_spills`) beside what the cubin says (`cuobjdump`) and what the
    compile-only gate committed for the same row (`static_table`, a report of this Triton)."""
    capability = torch.cuda.get_device_capability()
    rows = []
    with runtime.target_arch(arch_for_capability(capability)):  # CPU tensors stand in, launches prepared for this GPU
        for item in items:
            for kernel_launch, pointers in _launches(item):
                compiled = static_compile.compile_captured(kernel_launch, pointers)
                compiled._init_handles()  # loads the module: the driver's register and spill counts
                found = static_compile.usage(compiled)
                rows.append({
                    "layer": item.layer, "pass": str(item.pass_name), "variant": item.variant,
                    "kernel": kernel_launch.kernel.__name__, "dtype": str(item.problem.dtype).removeprefix("torch."),
                    "config": "" if item.config is None else item.config.as_text(),
                    "driver_registers": compiled.n_regs, "driver_spills": compiled.n_spills,
                    "cubin_registers": found.registers, "cubin_spill_bytes": found.spill_bytes,
                })  # fmt: skip
    table = pd.DataFrame(rows)
    if static_table is not None:
        keys = ["layer", "pass", "variant", "kernel", "dtype", "config"]
        committed = static_table[[*keys, "registers", "spill_bytes"]].rename(
            columns={"registers": "static_registers", "spill_bytes": "static_spill_bytes"}
        )
        table = table.merge(committed.fillna({"config": ""}), on=keys, how="left")
    return table


def main() -> int:
    import argparse

    parser = argparse.ArgumentParser(description="the compile-only gate's numbers against a GPU driver's")
    parser.add_argument("--against-driver", action="store_true", required=True)
    parser.add_argument("--suite", default="resnet50")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    if not torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET", "0") == "1":
        raise SystemExit("--against-driver needs a CUDA GPU (and TRITON_INTERPRET unset)")
    committed = Path("reports") / "static" / f"sm90_triton{triton.__version__}.csv"
    static_table = pd.read_csv(committed, keep_default_na=False, na_values=[""]) if committed.exists() else None
    items = [item for item in gate_items((args.suite,), (torch.bfloat16,)) if item.source in CHOSEN]
    table = against_driver(items, static_table)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    print(table.to_string(index=False))
    source = committed if static_table is not None else "none for this Triton"
    print(f"wrote {args.out} ({len(table)} kernels; the compile-only report compared: {source})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
