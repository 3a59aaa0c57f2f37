"""The GPU architectures tritonconv compiles for, as one table of the limits every layer reads: the
kernel gate (is a compiled kernel fit?), the tuning spaces (which configs fit a block's shared
memory or LDS?), the heuristics and the routes (is there TMA?).

An entry is a family's flagship part: shared memory (NVIDIA) or LDS (AMD) a block may use, warp or
wavefront width, SM or CU count, the register budget of one thread (lane), and the matrix
instructions and tensor-memory copies its `tl.dot` and descriptors may lower to. On a real device
`arch_of` picks the entry from torch's device properties (on ROCm builds of torch, `torch.version.hip`
and `gcnArchName`); a compile-only run sets one with `runtime.target_arch`.
"""

from __future__ import annotations

import dataclasses
import re

import torch

KIB = 1024


@dataclasses.dataclass(frozen=True)
class GpuArch:
    """What a kernel must fit on one architecture, and what it can use."""

    name: str  # 'sm90', 'gfx942': also the report's file name and the gate's --arch value
    backend: str  # Triton's: 'cuda' or 'hip'
    target: int | str  # Triton's GPUTarget arch: 90, 100, 'gfx942'
    part: str  # the part the numbers are for
    warp_size: int  # threads of a warp (NVIDIA) or wavefront (AMD)
    shared_memory: int  # bytes of shared memory (LDS) one block may use
    multiprocessors: int  # SMs or CUs
    registers_per_thread: int  # NVIDIA: 32-bit registers a thread may hold; AMD: VGPRs + AGPRs of a lane
    matrix_instruction: str  # what a 2-D tl.dot should lower to: 'wgmma', 'tcgen05' or 'mfma'
    tma: bool  # tensor-memory copies through descriptors (TMA)
    capability: tuple[int, int] | None = None  # NVIDIA compute capability
    pipeline_stages: int = 3  # the heuristics' software-pipeline depth (num_stages) for tl.dot kernels
    stages_in_registers: int = 0  # pipeline stages held in registers, not in shared memory (LDS)

    @property
    def is_amd(self) -> bool:
        return self.backend == "hip"

    @property
    def accumulator_in_tensor_memory(self) -> bool:
        """Blackwell's tcgen05 accumulates in tensor memory, not in the threads' registers."""
        return self.matrix_instruction == "tcgen05"

    @property
    def target_programs(self) -> int:
        """Programs a split reduction aims for: two waves of one program per SM (CU)."""
        return 2 * self.multiprocessors

    def staged_buffers(self, num_stages: int) -> int:
        """Copies of a pipelined loop's operand tiles in shared memory (LDS) at `num_stages`. Triton keeps
        one per stage, except where a stage waits in registers: on gfx942 (CDNA3 has no direct
        global-to-LDS copy, so a tile goes global -> VGPRs -> LDS) a 128x128x64 bf16 tile took 64 KiB at
        3 stages and 32 KiB at 2 (the kernel gate, Triton 3.9), on gfx950 96 KiB and 64 KiB, as on sm_90."""
        return max(1, num_stages - self.stages_in_registers)

    def waves_per_simd(self, vgprs: int) -> int:
        """AMD occupancy: wavefronts one SIMD holds at `vgprs` (VGPRs + AGPRs, allocated in granules of 8
        from a lane's 512), at most 8."""
        granule = 8
        used = max(granule, -(-vgprs // granule) * granule)
        return min(8, self.registers_per_thread // used)


ARCHES: dict[str, GpuArch] = {
    arch.name: arch
    for arch in (
        GpuArch("sm90", "cuda", 90, "H100/H200", 32, 227 * KIB, 132, 255, "wgmma", True, (9, 0)),
        GpuArch("sm100", "cuda", 100, "B200", 32, 227 * KIB, 148, 255, "tcgen05", True, (10, 0)),
        # AMD's stream pipeliner: two stages (one tile in flight while the other feeds v_mfma), so two
        # workgroups' tiles fit a CU's LDS (64 KiB on gfx942, 160 KiB on gfx950) where three stages fit one.
        GpuArch(
            "gfx942",
            "hip",
            "gfx942",
            "MI300X",
            64,
            64 * KIB,
            304,
            512,
            "mfma",
            False,
            pipeline_stages=2,
            stages_in_registers=1,
        ),
        GpuArch("gfx950", "hip", "gfx950", "MI355X", 64, 160 * KIB, 256, 512, "mfma", False, pipeline_stages=2),
    )
}
DEFAULT_ARCH = ARCHES["sm90"]


def arch_named(name: str) -> GpuArch:
    if name not in ARCHES:
        raise ValueError(f"unknown arch {name!r}; known: {', '.join(ARCHES)}")
    return ARCHES[name]


def arch_for_capability(capability: tuple[int, int]) -> GpuArch:
    """The NVIDIA entry of a compute capability; one the table lacks gets sm90's limits under its own
    name (and TMA from sm_90 on)."""
    for arch in ARCHES.values():
        if arch.capability == tuple(capability):
            return arch
    major, minor = capability
    return dataclasses.replace(DEFAULT_ARCH, name=f"sm{major}{minor}", target=major * 10 + minor,
                               capability=(major, minor), tma=major >= 9)  # fmt: skip


def arch_of(device: torch.device) -> GpuArch:
    """The entry of a real GPU, from torch's device properties; the table's limits, with the device's
    own shared memory and multiprocessor count where torch reports them."""
    properties = torch.cuda.get_device_properties(device)
    if torch.version.hip:
        gcn = re.match(r"gfx[0-9a-f]+", getattr(properties, "gcnArchName", "") or "")
        name = gcn.group(0) if gcn else "gfx942"
        base = ARCHES.get(name, dataclasses.replace(ARCHES["gfx942"], name=name, target=name))
    else:
        base = arch_for_capability(torch.cuda.get_device_capability(device))
    shared = getattr(properties, "shared_memory_per_block_optin", 0) or base.shared_memory
    return dataclasses.replace(base, shared_memory=shared, multiprocessors=properties.multi_processor_count)
