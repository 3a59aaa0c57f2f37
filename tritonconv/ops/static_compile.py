"""Compile a kernel launch for a GPU that is not here, and read what the GPU would get.

Triton compiles for NVIDIA Hopper (sm_90) and Blackwell (sm_100) and for AMD Instinct (gfx942,
gfx950) on a machine with no GPU and no driver: `JITFunction.warmup` binds and specialises the
arguments exactly as a launch does and compiles without launching, once the active driver names
the target. `compiling_for('gfx942')` installs such a driver (it knows its target and nothing else)
and makes the launchers choose as they would on that GPU (tensor descriptors only where the
architecture has TMA, `problem/devices.py`). The compiled kernel then gives:
- NVIDIA: registers and stack bytes, from the cubin through the `cuobjdump -res-usage` Triton ships
  (ptxas puts spilled registers in the stack frame, and tritonconv's kernels have no local arrays
  or calls, so the stack is the spill); shared memory from `metadata.shared`; from the PTX, the
  tensor-core instructions `wgmma.mma_async` (Hopper), `tcgen05.mma` (Blackwell), `mma.sync` (the
  Ampere-style MMA), TMA loads (`cp.async.bulk.tensor`) and tensor-memory allocation (`tcgen05.alloc`);
- AMD: from the AMDGCN text's kernel descriptor, `.vgpr_count`, `.agpr_count`, `.sgpr_count` and
  `.private_segment_fixed_size` (scratch: spills); LDS from `metadata.shared` (Triton allocates it
  dynamically, so the descriptor's group segment is 0); `v_mfma` matrix instructions.

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
from ..problem.devices import DEFAULT_ARCH, GpuArch, arch_for_capability, arch_named


@dataclasses.dataclass(frozen=True)
class StaticUsage:
    """What one compiled kernel needs of the GPU and which instructions it issues. `registers` is a
    thread's (NVIDIA) or a lane's VGPRs, AGPRs included (AMD); `spill_bytes` the stack (NVIDIA) or
    scratch (AMD) per thread; `shared_bytes` shared memory or LDS per block."""

    registers: int
    spill_bytes: int
    shared_bytes: int
    wgmma: bool
    mma_sync: bool
    tma: bool
    tcgen05: bool = False
    tmem: bool = False
    mfma: bool = False
    agprs: int = 0
    sgprs: int = 0
    backend: str = "cuda"


# A device number per target: the JIT keeps one compiled-kernel cache (and backend) per device, made
# for the target current when it was made, so two targets in one process must not share a number.
_DEVICE_OF_TARGET: dict[tuple, int] = {}


class _CompileOnlyDriver:
    """The driver `warmup` asks for its target, device and stream: enough to compile, not to run."""

    def __init__(self, arch: GpuArch):
        from triton.backends.compiler import GPUTarget

        self.target = GPUTarget(arch.backend, arch.target, arch.warp_size)
        self.device = _DEVICE_OF_TARGET.setdefault((arch.backend, arch.target), len(_DEVICE_OF_TARGET))

    def get_current_target(self):
        return self.target

    def get_current_device(self) -> int:
        return self.device

    def get_current_stream(self, device: int | None = None) -> int:
        return 0

    def is_active(self) -> bool:
        return True


def resolve_arch(arch: str | tuple[int, int] | GpuArch) -> GpuArch:
    """An arch given by name (a key of `devices.ARCHES`), by NVIDIA compute capability, or itself."""
    if isinstance(arch, GpuArch):
        return arch
    return arch_for_capability(arch) if isinstance(arch, tuple) else arch_named(arch)


@contextlib.contextmanager
def compiling_for(arch: str | tuple[int, int] | GpuArch) -> Iterator[GpuArch]:
    """Within this context kernels compile for `arch` and launchers plan for it."""
    resolved = resolve_arch(arch)
    from triton.runtime import driver

    previous = driver._active  # None until a driver was needed (`reset_active` would create one: none here)
    driver.set_active(_CompileOnlyDriver(resolved))
    with runtime.target_arch(resolved):
        try:
            yield resolved
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
    """Registers, spills, shared memory (LDS) and matrix instructions of a compiled kernel."""
    if "amdgcn" in compiled.asm:
        return _amd_usage(compiled.asm["amdgcn"], int(compiled.metadata.shared))
    ptx = compiled.asm["ptx"]
    registers, stack = _resource_usage(compiled.asm["cubin"])
    return StaticUsage(
        registers=registers,
        spill_bytes=stack,
        shared_bytes=int(compiled.metadata.shared),
        wgmma="wgmma.mma_async" in ptx,
        mma_sync=re.search(r"\bmma\.sync\b", ptx) is not None,
        tma="cp.async.bulk.tensor" in ptx,
        tcgen05=re.search(r"\btcgen05\.mma\b", ptx) is not None,
        tmem="tcgen05.alloc" in ptx,
    )


def _amd_usage(amdgcn: str, shared: int) -> StaticUsage:
    def field(name: str) -> int:
        found = re.search(rf"\.{name}:\s*(\d+)", amdgcn)
        if found is None:
            raise RuntimeError(f"the AMDGCN text has no .{name}")
        return int(found.group(1))

    return StaticUsage(
        registers=field("vgpr_count"),
        spill_bytes=field("private_segment_fixed_size"),
        shared_bytes=shared,
        wgmma=False,
        mma_sync=False,
        tma=False,
        mfma=re.search(r"\bv_mfma_", amdgcn) is not None,
        agprs=field("agpr_count"),
        sgprs=field("sgpr_count"),
        backend="hip",
    )


def resource_problems(found: StaticUsage, arch: GpuArch = DEFAULT_ARCH) -> list[str]:
    """What makes a compiled kernel unfit on `arch` whatever its speed: spills (stack or scratch),
    more shared memory (LDS) than a block of the GPU gets, or (AMD) more VGPRs than a lane has
    (such a launch fails)."""
    memory = "LDS" if found.backend == "hip" else "shared memory"
    problems = []
    if found.spill_bytes:
        problems.append(f"{'scratch' if found.backend == 'hip' else 'spills'} {found.spill_bytes} bytes")
    if found.shared_bytes > arch.shared_memory:
        problems.append(f"{memory} {found.shared_bytes} > {arch.shared_memory} bytes")
    if found.backend == "hip" and found.registers > arch.registers_per_thread:
        problems.append(f"VGPRs {found.registers} > {arch.registers_per_thread}")
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
