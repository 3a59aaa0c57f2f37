"""Compile every kernel a quick run will launch before its clock runs, in parallel over the cores.

Compiling one Triton kernel costs a third of a second to a second of one core, and the quick run's
tuning alone launches hundreds of distinct kernels: compiled one by one as the tuner reaches them,
they would eat most of a 15-minute GPU window. So each stage first runs its work with every launch
captured instead of run (`ops.launch.captured`: the launchers plan for the real tensors, nothing
reaches the GPU), and the distinct launches are compiled by a pool of worker processes. A worker
has no CUDA state: it compiles for the GPU's compute capability through the compile-only driver of
`static_compile` (as the kernel gate does), on CPU stand-ins with the same dtypes and 16-byte
alignment as the real pointers, so the kernel lands in Triton's on-disk cache under the key the real
launch computes, and the timing loop only loads it.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from ....ops import launch, launch_spec, static_compile


def capture(work: Iterable[Callable[[], object]]) -> list[launch_spec.LaunchSpec]:
    """The distinct kernels the calls in `work` launch, captured instead of run (a call that raises is
    skipped: the stage records its error when it runs for real). Launches that differ only in their
    grid compile to one kernel, so they count once."""
    found: dict[tuple, launch_spec.LaunchSpec] = {}
    for call in work:
        with launch.captured() as launches:
            try:
                call()
            except Exception:  # a refused config is the stage's to report when it runs, not the compile's
                continue
        for kernel_launch, pointers in launches:
            spec = launch_spec.launch_spec(kernel_launch, pointers)
            found.setdefault(launch_spec.compile_key(spec), spec)
    return list(found.values())


def triton_cache_entries() -> int:
    """How many compiled kernels (folders) Triton's on-disk cache holds now."""
    try:
        from triton import knobs

        folder = Path(knobs.cache.dir)
    except (ImportError, AttributeError):  # pragma: no cover - Triton < 3.4
        folder = Path(os.environ.get("TRITON_CACHE_DIR", Path.home() / ".triton" / "cache"))
    return sum(1 for entry in folder.iterdir() if entry.is_dir()) if folder.is_dir() else 0


def compile_all(specs: list[launch_spec.LaunchSpec], capability: tuple[int, int], jobs: int | None = None) -> dict:
    """Compile `specs` for `capability` in `jobs` processes (default: one per core), remembering each
    kernel's static numbers for the tuner (`launch_spec.KNOWN_USAGE`); what happened: launches,
    the entries this added to Triton's cache (compiled now), the rest (found compiled), the errors
    and the seconds it took."""
    began, before = time.monotonic(), triton_cache_entries()
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(specs)))
    if not specs:
        results = []
    elif jobs == 1:
        with static_compile.compiling_for(capability):
            results = [launch_spec.compile_spec(spec) for spec in specs]
    else:
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no CUDA state, no TRITON_INTERPRET
        with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context, initializer=_start_worker,
                                                    initargs=(capability,)) as pool:  # fmt: skip
            results = list(pool.map(launch_spec.compile_spec, specs, chunksize=max(1, len(specs) // (4 * jobs))))
    compiled = max(0, triton_cache_entries() - before)
    failed = [error for error, _ in results if error]
    launch_spec.KNOWN_USAGE.update((launch_spec.compile_key(spec), found)
                                   for spec, (_, found) in zip(specs, results, strict=True) if found)  # fmt: skip
    return {"launches": len(specs), "compiled": min(compiled, len(specs)),
            "found_compiled": max(0, len(specs) - compiled - len(failed)), "errors": failed,
            "seconds": round(time.monotonic() - began, 1), "jobs": jobs}  # fmt: skip


_worker_context = None


def _start_worker(capability: tuple[int, int]) -> None:
    os.environ.pop("TRITON_INTERPRET", None)
    global _worker_context
    _worker_context = static_compile.compiling_for(capability)
    _worker_context.__enter__()
