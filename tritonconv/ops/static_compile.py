"""Compile a kernel launch for a GPU that is not here, and read what the GPU would get.

Triton compiles for Hopper (sm_90) on a machine with no GPU and no driver: `JITFunction.warmup`
binds and specialises the arguments exactly as a launch does and compiles without launching, once
the active driver names the target. `compiling_for('sm90')` installs such a driver (it knows its
target and nothing else) and makes the launchers choose as they would on that GPU (the 1x1 route's
tensor descriptors, for one). The compiled kernel then gives:
- registers and stack bytes, from the cubin through the `cuobjdump -res-usage` Triton ships. ptxas
  puts spilled registers in the stack frame, and tritonconv's kernels have no local arrays or
  calls, so the stack is the spill;
- shared memory, from `metadata.shared` (what the launch would request);
- the tensor-core instructions, from the PTX: `wgmma.mma_async` (Hopper's warpgroup MMA),
  `mma.sync` (the Ampere-style MMA) and `cp.async.bulk.tensor` (TMA loads).

The process must import tritonconv without TRITON_INTERPRET: interpreted kernels do not compile.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from ..problem import runtime

# Per-block shared memory an H100 grants a kernel (227 KiB of its 228).
HOPPER_SHARED_MEMORY = 227 * 1024
ARCHES = {"sm90": (9, 0)}


@dataclasses.dataclass(frozen=True)
class StaticUsage:
    """What one compiled kernel needs of the GPU and which instructions it issues."""

    registers: int
    spill_bytes: int
    shared_bytes: int
    wgmma: bool
    mma_sync: bool
    tma: bool


class _CompileOnlyDriver:
    """The driver `warmup` asks for its target, device and stream: enough to compile, not to run."""

    def __init__(self, capability: tuple[int, int]):
        from triton.backends.compiler import GPUTarget

        major, minor = capability
        self.target = GPUTarget("cuda", major * 10 + minor, 32)

    def get_current_target(self):
        return self.target

    def get_current_device(self) -> int:
        return 0

    def get_current_stream(self, device: int | None = None) -> int:
        return 0

    def is_active(self) -> bool:
        return True


@contextlib.contextmanager
def compiling_for(arch: str | tuple[int, int]) -> Iterator[None]:
    """Within this context kernels compile for `arch` (a key of `ARCHES`, or a compute capability)
    and launchers plan for it."""
    if not isinstance(arch, tuple) and arch not in ARCHES:
        raise ValueError(f"unknown arch {arch!r}; known: {', '.join(ARCHES)}")
    from triton.runtime import driver

    capability = arch if isinstance(arch, tuple) else ARCHES[arch]
    previous = driver._active  # None until a driver was needed (`reset_active` would create one: none here)
    driver.set_active(_CompileOnlyDriver(capability))
    with runtime.target_capability(capability):
        try:
            yield
        finally:
            driver.set_active(previous)


def compile_launch(
    kernel: object, grid: Sequence[int], arguments: Sequence[object], constexprs: Mapping[str, object]
) -> object:
    """Compile `kernel[grid](*arguments, **constexprs)` without launching it (inside `compiling_for`)."""
    if runtime.is_interpreted(kernel):
        raise RuntimeError("kernels run in the interpreter here: compile for a GPU without TRITON_INTERPRET=1")
    return kernel.warmup(*arguments, grid=tuple(grid), **constexprs)


def compile_captured(kernel_launch: object, pointers: Sequence[object]) -> object:
    """Compile a launch recorded by `ops.launch.captured()` with the pointers it was called with."""
    arguments = (*pointers, *kernel_launch.scalars)
    return compile_launch(kernel_launch.kernel, kernel_launch.grid, arguments, kernel_launch.constexprs)


def usage(compiled: object) -> StaticUsage:
    """Registers, spills, shared memory and tensor-core instructions of a compiled kernel."""
    ptx = compiled.asm["ptx"]
    registers, stack = _resource_usage(compiled.asm["cubin"])
    return StaticUsage(
        registers=registers,
        spill_bytes=stack,
        shared_bytes=int(compiled.metadata.shared),
        wgmma="wgmma.mma_async" in ptx,
        mma_sync=re.search(r"\bmma\.sync\b", ptx) is not None,
        tma="cp.async.bulk.tensor" in ptx,
    )


def resource_problems(found: StaticUsage, shared_memory: int = HOPPER_SHARED_MEMORY) -> list[str]:
    """What makes a compiled kernel unfit whatever its speed: spills, or more shared memory than a
    block of the GPU gets (such a launch fails)."""
    problems = []
    if found.spill_bytes:
        problems.append(f"spills {found.spill_bytes} bytes")
    if found.shared_bytes > shared_memory:
        problems.append(f"shared memory {found.shared_bytes} > {shared_memory} bytes")
    return problems


def _cuobjdump() -> Path:
    import triton.backends.nvidia as nvidia

    return Path(nvidia.__file__).parent / "bin" / "cuobjdump"


def _resource_usage(cubin: bytes) -> tuple[int, int]:
    """(registers, stack bytes) of the cubin's one function, as `cuobjdump -res-usage` prints them."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as file:
        file.write(cubin)
        file.flush()
        report = subprocess.run(
            [str(_cuobjdump()), "-res-usage", file.name], check=True, capture_output=True, text=True
        ).stdout
    found = re.search(r"REG:(\d+)\s+STACK:(\d+)", report)
    if found is None:
        raise RuntimeError(f"cuobjdump printed no resource usage:\n{report}")
    return int(found.group(1)), int(found.group(2))
