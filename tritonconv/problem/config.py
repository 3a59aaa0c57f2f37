"""Launch configurations: the block sizes, warps and stages a kernel is compiled with.

The heuristics here pick a sound config from the problem alone, with no timing; they are what runs
when nothing better is known. Each sizes its config for an architecture (`devices.GpuArch`; by
default `runtime.planning_arch()`, the GPU being planned for) and is cached per (problem, arch):
- the pipeline depth is the arch's (`pipeline_stages`: 3 on NVIDIA, 2 on AMD's stream pipeliner);
- budgets per thread count a wavefront's 64 lanes on AMD, a warp's 32 on NVIDIA;
- a split reduction aims for two programs per SM or CU;
- on Blackwell (tcgen05, accumulator in tensor memory) the rules `_for_tensor_memory` states.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, replace

from .arithmetic import CHANNELS_LAST, ConvProblem, cdiv, next_power_of_2
from .devices import GpuArch
from .runtime import planning_arch


@dataclass(frozen=True)
class KernelConfig:
    """Tile sizes in GEMM vocabulary: M over output pixels, N over a group's output channels, K over
    the (C/g)*R*S reduction.

    Variant-specific fields: `block_g` is the number of groups one grouped_tile program covers;
    `halo_in_registers` makes the depthwise kernel load each input row with its halo once and take
    every tap's window from registers (`tl.gather`) instead of loading once per tap; `split_k` is
    the number of chunks the weight gradient splits its N*P*Q reduction into.
    """

    block_m: int
    block_n: int
    block_k: int = 16
    group_m: int = 8
    block_g: int = 1
    halo_in_registers: bool = False
    split_k: int = 1
    num_warps: int = 4
    num_stages: int = 3

    def as_dict(self) -> dict[str, int | bool]:
        return asdict(self)

    def as_text(self) -> str:
        """'block_m=128 block_n=64 ...': the config as one CSV cell."""
        return " ".join(f"{name}={value}" for name, value in self.as_dict().items())

    def gemm_kwargs(self) -> dict[str, int]:
        """Meta-parameters of the tiled GEMM kernels (implicit GEMM and 1x1)."""
        return {
            "BLOCK_M": self.block_m,
            "BLOCK_N": self.block_n,
            "BLOCK_K": self.block_k,
            "GROUP_M": self.group_m,
            **self.options(),
        }

    def options(self) -> dict[str, int]:
        """The launch options every kernel takes besides its constexprs."""
        return {"num_warps": self.num_warps, "num_stages": self.num_stages}


def per_arch(heuristic):
    """`heuristic(problem, ..., arch=...)` with `arch` defaulting to the one being planned for, cached
    per (problem, arguments, arch): the same problem gets one config per architecture."""
    cached = functools.lru_cache(maxsize=4096)(heuristic)

    @functools.wraps(heuristic)
    def for_arch(problem: ConvProblem, *args: object, arch: GpuArch | None = None, **kwargs: object) -> KernelConfig:
        return cached(problem, *args, arch=arch or planning_arch(), **kwargs)

    return for_arch


def _clamp_pow2(value: int, low: int, high: int) -> int:
    return max(low, min(high, next_power_of_2(max(value, 1))))


def _tile_caps(element_size: int) -> tuple[int, int]:
    """(largest block_m/block_n, largest block_k) for an operand width.

    Wider operands take more shared memory per element, so the tiles shrink with the element size to
    keep three pipeline stages well inside an SM's shared memory: 96 KiB for 16- and 32-bit
    operands, 48 KiB for fp64.
    """
    return (64 if element_size >= 8 else 128), {2: 64, 4: 32}.get(element_size, 16)


def _gemm_tiles(element_size: int, m: int, n: int, k: int) -> tuple[int, int, int]:
    """(block_m, block_n, block_k) for an M x N x K GEMM: powers of two no larger than the GEMM
    (and at least 16, as `tl.dot` needs) within the caps above."""
    max_mn, max_k = _tile_caps(element_size)
    return _clamp_pow2(m, 16, max_mn), _clamp_pow2(n, 16, max_mn), _clamp_pow2(k, 16, max_k)


def _gemm_warps(block_m: int, block_n: int) -> int:
    """8 warps (wavefronts) for a 128x128 tile and up, else 4: on Hopper a thread then holds at most 64
    of the fp32 accumulator's elements; on AMD, 4 wavefronts put one on each SIMD of a CU."""
    return 8 if block_m * block_n >= 128 * 128 else 4


def _gemm_config(element_size: int, m: int, n: int, k: int, arch: GpuArch) -> KernelConfig:
    block_m, block_n, block_k = _gemm_tiles(element_size, m, n, k)
    return KernelConfig(block_m=block_m, block_n=block_n, block_k=block_k, num_warps=_gemm_warps(block_m, block_n),
                        num_stages=arch.pipeline_stages)  # fmt: skip


@per_arch
def heuristic_config(problem: ConvProblem, variant: str = "implicit_gemm", *, arch: GpuArch) -> KernelConfig:
    """A config for `variant` sized to `problem`, chosen without timing anything."""
    if variant == "depthwise":
        # One output row segment per program: block_m output columns by block_n channels, no tl.dot.
        # With fewer than 16 channels (an RGB image, a signal's few) the channel block shrinks to
        # them and the column block grows to up to 2048 outputs, the 32 x 64 tile of a wide layer:
        # a 16-wide block would leave 13 of 16 lanes masked for 3 channels, and a 32-column one make
        # the grid 64 times longer than it need be.
        few_channels = problem.k < 16
        block_n = _clamp_pow2(problem.k, 4, 16) if few_channels else _clamp_pow2(problem.k, 16, 64)
        return KernelConfig(
            block_m=_clamp_pow2(problem.q, 8, 2048 // block_n if few_channels else 32),
            block_n=block_n,
            halo_in_registers=False,
            num_warps=4,
            num_stages=1,
        )
    if variant == "grouped_tile":
        # Several small groups per program, side by side on a batch axis of a 3-D tl.dot.
        block_n = _clamp_pow2(problem.k_per_group, 16, 32)
        block_k = _clamp_pow2(problem.gemm_k, 16, 32)
        block_g = _clamp_pow2(problem.groups, 1, max(1, 64 // block_n))
        block_m = _clamp_pow2(problem.gemm_m, 16, 64)
        return KernelConfig(block_m=block_m, block_n=block_n, block_k=block_k, block_g=block_g, num_stages=2)
    config = _gemm_config(problem.element_size, problem.gemm_m, problem.gemm_n, problem.gemm_k, arch)
    if variant == "implicit_gemm" and cdiv(problem.gemm_k, config.block_k) == 2:
        return replace(config, block_k=_fit_gathered_tile(config, arch))
    return config


# Elements of a gathered operand tile (addresses and masks computed per element) one thread can hold
# without spilling, from the Hopper compile gate (`tritonconv check-kernels`, reports/static/). A 3-D
# tap is three coordinates, not two: 128x64 tiles at 8 warps spill up to 976 bytes there (R(2+1)D's
# 230-, 460- and 921-channel layers); half as many elements per thread do not. On Blackwell half
# that again (`_for_tensor_memory`).
GATHERED_ELEMENTS_PER_THREAD = 32
GATHERED_VOXEL_ELEMENTS_PER_THREAD = 16


def _fit_gathered_tile(config: KernelConfig, arch: GpuArch, per_thread: int = GATHERED_ELEMENTS_PER_THREAD) -> int:
    """The largest block_k (from the config's down, at least 16) whose block_m x block_k gathered tile
    holds at most `per_thread` elements per thread (per lane: a 64-wide wavefront shares a tile out
    over twice the lanes of a warp).

    The implicit-GEMM forward needs it when its constexpr reduction takes exactly two steps: the
    compiler unrolls them, so both steps' gathered tiles are live (sm_90, 3x3 with C = 8: 128x16x64
    tiles at 4 warps spill 224 bytes under Triton 3.9 and 312 under 3.6; at block_k 32, none)."""
    threads = arch.warp_size * config.num_warps
    block_k = config.block_k
    while block_k > 16 and config.block_m * block_k > per_thread * threads:
        block_k //= 2
    return block_k


def _for_tensor_memory(config: KernelConfig, arch: GpuArch, kernel: str) -> KernelConfig:
    """A config fitted to Blackwell, whose tcgen05 accumulates in tensor memory rather than in the
    threads' registers, so the warps and tiles that keep Hopper's kernels clear of spills are not the
    ones that keep Blackwell's clear. The rules come from the sm_100 compile gate (`tritonconv
    check-kernels --arch sm100`, the default suites under Triton 3.6 and 3.9, where Hopper's configs
    spilled on 10 and 20 launches):
    - `kernel="pixel wgrad"` (the 2-D weight gradient, both operands loaded pixel by pixel): 8 warps
      from a 128x64 tile up; at 4, ResNet-50's 1x1 layers (128x64x64) spilled 8-16 bytes.
    - `kernel="tma wgrad"`: tiles of at most 128x64, at 8 warps. 128x128 spilled at both warp counts
      somewhere: 8 bytes at 8 warps (1x1 layers with the bias gradient fused, Triton 3.9), 608-736
      bytes at 4 (3x3 layers); 128x64 at 8 warps compiled clean under both.
    - `kernel="voxels"` (the 3-D kernels, every operand element gathered by three coordinates): the
      voxel-gather budget halved, so 128-row tiles take block_k 16: 128x128x32 forward and input
      gradient tiles at 8 warps spilled 8 bytes, and 128x64x32 weight gradient tiles at 4 or 8 warps.
    Other architectures get `config` as it is."""
    if not arch.accumulator_in_tensor_memory:
        return config
    if kernel == "tma wgrad":
        config = replace(config, block_n=min(config.block_n, 64))
    if kernel in ("pixel wgrad", "tma wgrad") and config.block_m * config.block_n >= 128 * 64:
        return replace(config, num_warps=8)
    if kernel == "voxels":
        return replace(config, block_k=_fit_gathered_tile(config, arch, GATHERED_VOXEL_ELEMENTS_PER_THREAD // 2))
    return config


@per_arch
def tma_config(problem: ConvProblem, *, arch: GpuArch) -> KernelConfig:
    """The TMA-fed forward (`kernels/tma_fwd.py`): M = N*P*Q pixels in boxes, N = K; its reduction
    steps over one tap's C channels at a time, so block_k fits C, not C*R*S."""
    return _gemm_config(problem.element_size, problem.gemm_m, problem.k, problem.c, arch)


@per_arch
def tma_dgrad_config(problem: ConvProblem, *, arch: GpuArch) -> KernelConfig:
    """The TMA-fed stride-1 input gradient: M = N*H*W input pixels, N = C, each step over one tap's
    K channels of dY."""
    return _gemm_config(problem.element_size, problem.n * problem.h * problem.w, problem.c, problem.k, arch)


@per_arch
def tma_wgrad_config(problem: ConvProblem, target_programs: int | None = None, *, arch: GpuArch) -> KernelConfig:
    """The TMA-fed stride-1 weight gradient: M = K, N = C at one tap, block_k output pixels per
    reduction step (a box), the boxes split so that about `target_programs` programs run (see
    `wgrad_config`)."""
    max_mn, _ = _tile_caps(problem.element_size)
    block_m, block_n = _clamp_pow2(problem.k, 16, max_mn), _clamp_pow2(problem.c, 16, max_mn)
    block_k = _clamp_pow2(problem.p * problem.q, 16, 64)
    config = KernelConfig(block_m=block_m, block_n=block_n, block_k=block_k, num_warps=_gemm_warps(block_m, block_n),
                          num_stages=arch.pipeline_stages)  # fmt: skip
    config = _for_tensor_memory(config, arch, "tma wgrad")
    tiles = cdiv(problem.k, config.block_m) * problem.r * problem.s * cdiv(problem.c, config.block_n)
    return replace(config, split_k=_wgrad_splits(problem, tiles, block_k, target_programs or arch.target_programs))


PHASED_DGRAD_MIN_CHANNELS = 16


def dgrad_by_phase(problem: ConvProblem) -> bool:
    """The input gradient walks taps by stride phase (one tap, BLOCK_K output channels at a time)
    for strided convolutions whose groups have enough output channels to fill a reduction tile.

    With fewer channels (depthwise, tiny groups) the masking kernel's flattened (K/g)*R*S reduction
    wastes less of each tile. At stride 1 no tap is masked out, and on an H100 (bf16, ResNet-50
    3x3 layers, reports/h100/) the flattened kernel was as fast or faster; strided, the phased one
    skips the taps the masking kernel would load and discard (conv1 7x7 s2: 0.45 ms against 1.2)."""
    return problem.k_per_group >= PHASED_DGRAD_MIN_CHANNELS and problem.stride != (1, 1)


@per_arch
def dgrad_masking_config(problem: ConvProblem, *, arch: GpuArch) -> KernelConfig:
    """Input gradient by masking: M = N*H*W input pixels, N = C/g, reduction (K/g)*R*S."""
    m = problem.n * problem.h * problem.w
    reduction = problem.k_per_group * problem.r * problem.s
    return _gemm_config(problem.element_size, m, problem.c_per_group, reduction, arch)


@per_arch
def dgrad_phased_config(problem: ConvProblem, *, arch: GpuArch) -> KernelConfig:
    """Input gradient by stride phase: M = the input pixels of one phase, N = C/g; a reduction tile
    holds output channels of one tap, so block_k fits K/g."""
    stride_h, stride_w = problem.stride
    m = problem.n * cdiv(problem.h, stride_h) * cdiv(problem.w, stride_w)
    return _gemm_config(problem.element_size, m, problem.c_per_group, problem.k_per_group, arch)


WGRAD_WORKSPACE_BYTES = 32 * 2**20
# A weight gradient whose reduction columns are not whole channel blocks of one tap gathers every
# (channel, tap) column on its own. On sm_90 (the compile gate, `tritonconv check-kernels`) 128-wide
# or 64-deep gathered tiles spilled (ResNet-50 conv1 7x7, C = 3, 64x128x64 at 4 warps: 104 bytes
# under Triton 3.9; at 64x128x32, 16 bytes under 3.6); 64x64x32 spilled under neither, nor did
# the smoke suite's 3x3 and 5x5 stems.
FLAT_WGRAD_BLOCK_N = 64
FLAT_WGRAD_BLOCK_K = 32


@per_arch
def wgrad_config(problem: ConvProblem, target_programs: int | None = None, *, arch: GpuArch) -> KernelConfig:
    """Weight gradient: M = K/g, N = (C/g)*R*S, reduction over N*P*Q split into `split_k` chunks so
    that about `target_programs` programs (by default the arch's two per SM: 264 on a 132-SM H100)
    share the long reduction.

    block_n divides C/g when a power of two from 16 up can, so each tile's columns are channels of one
    tap (the kernel's TAP_MAJOR path). The split is capped so the fp32 partial sums stay within
    WGRAD_WORKSPACE_BYTES (they are written and read back once more; small enough to stay in L2).
    """
    reduction = problem.gemm_m
    max_mn, block_k = _tile_caps(problem.element_size)
    block_m, block_n, _ = _gemm_tiles(problem.element_size, problem.k_per_group, problem.gemm_k, reduction)
    channel_block = tap_major_block(problem.c_per_group, max_mn)
    if channel_block:
        block_n = channel_block
    else:  # every column gathers its own (channel, tap): a smaller gathered tile
        block_n, block_k = min(block_n, FLAT_WGRAD_BLOCK_N), min(block_k, FLAT_WGRAD_BLOCK_K)
    tiles = problem.groups * cdiv(problem.k_per_group, block_m) * cdiv(problem.gemm_k, block_n)
    split_k = _wgrad_splits(problem, tiles, block_k, target_programs or arch.target_programs)
    config = KernelConfig(block_m=block_m, block_n=block_n, block_k=block_k, split_k=split_k,
                          num_warps=_gemm_warps(block_m, block_n), num_stages=arch.pipeline_stages)  # fmt: skip
    return _for_tensor_memory(config, arch, "pixel wgrad")


def _wgrad_splits(problem: ConvProblem, tiles: int, block: int, target_programs: int) -> int:
    """Chunks of the N*P*Q reduction: enough for `tiles` output tiles to make about `target_programs`
    programs, at least 4 blocks of pixels per chunk, an fp32 workspace within WGRAD_WORKSPACE_BYTES,
    and at most 64."""
    reduction = problem.gemm_m
    workspace_splits = max(1, WGRAD_WORKSPACE_BYTES // (4 * problem.k * problem.gemm_k))  # k * gemm_k = dW's size
    return max(1, min(cdiv(target_programs, tiles), cdiv(reduction, 4 * block), workspace_splits, 64))


@per_arch
def depthwise_wgrad_config(problem: ConvProblem, target_programs: int | None = None, *, arch: GpuArch) -> KernelConfig:
    """Depthwise weight gradient: block_m pixels by block_n channels of one tap per program, the
    pixels split so that about `target_programs` programs run (see `wgrad_config`)."""
    block_m = _clamp_pow2(problem.n * problem.p * problem.q, 16, 64)
    block_n = _clamp_pow2(problem.k, 16, 64)
    tiles = cdiv(problem.k, block_n) * problem.r * problem.s
    split_k = _wgrad_splits(problem, tiles, block_m, target_programs or arch.target_programs)
    return KernelConfig(block_m=block_m, block_n=block_n, split_k=split_k, num_warps=4, num_stages=1)


@per_arch
def depthwise_1d_config(problem: ConvProblem, *, arch: GpuArch) -> KernelConfig:
    """The long-sequence depthwise 1-D forward (and its flipped input gradient): block_m positions by
    block_n channels, 2048 elements per program, long along the axis the output's layout makes
    contiguous: 16 positions by 128 channels for (B, L, C), 64 by 32 otherwise (a (B, C, L) output
    may come from a (B, L, C) input: conv1d's output is contiguous whatever its input's strides).
    A smaller tile (a short sequence, few channels) takes 2 warps: at 4, sm_100's ptxas under Triton
    3.6 spilled 8 bytes of the flipped fp16 kernel's 64 x 16 tile (48 registers; none at 2 warps)."""
    if problem.layout == CHANNELS_LAST:
        block_m, block_n = _clamp_pow2(problem.q, 16, 16), _clamp_pow2(problem.k, 16, 128)
    else:
        block_m, block_n = _clamp_pow2(problem.q, 16, 64), _clamp_pow2(problem.k, 16, 32)
    num_warps = 4 if block_m * block_n >= 2048 else 2
    return KernelConfig(block_m=block_m, block_n=block_n, num_warps=num_warps, num_stages=1)


@per_arch
def depthwise_1d_wgrad_config(
    problem: ConvProblem, target_programs: int | None = None, *, arch: GpuArch
) -> KernelConfig:  # fmt: skip
    """The long-sequence depthwise 1-D weight gradient: block_m rows (sequence positions) by block_n
    channels per program, the x tiles of every tap at once (so fewer rows for more taps), the N*L
    rows split so that about `target_programs` programs run."""
    rows = 32 if problem.s <= 4 else 16
    block_m, block_n = _clamp_pow2(problem.n * problem.q, 16, rows), _clamp_pow2(problem.k, 16, 64)
    split_k = _wgrad_splits(problem, cdiv(problem.k, block_n), block_m, target_programs or arch.target_programs)
    return KernelConfig(block_m=block_m, block_n=block_n, split_k=split_k, num_warps=4, num_stages=1)


@per_arch
def conv3d_depthwise_wgrad_config(
    problem: ConvProblem, target_programs: int | None = None, *, arch: GpuArch
) -> KernelConfig:  # fmt: skip
    """Depthwise 3-D weight gradient: block_m voxels by block_n channels of one tap per program, the
    voxels split as `depthwise_wgrad_config` splits pixels."""
    block_m = _clamp_pow2(problem.gemm_m, 16, 64)
    block_n = _clamp_pow2(problem.k, 16, 64)
    tiles = cdiv(problem.k, block_n) * problem.depth.kernel * problem.r * problem.s
    split_k = _wgrad_splits(problem, tiles, block_m, target_programs or arch.target_programs)
    return KernelConfig(block_m=block_m, block_n=block_n, split_k=split_k, num_warps=4, num_stages=1)


@per_arch
def conv3d_config(problem: ConvProblem, *, arch: GpuArch) -> KernelConfig:
    """The 3-D forward: M = N*O*P*Q voxels, N = K/g, reduction (C/g)*T*R*S, every operand element
    gathered (so block_k also fits the gathered tile, as the 2-D general kernel's does)."""
    config = _gemm_config(problem.element_size, problem.gemm_m, problem.k_per_group, problem.gemm_k, arch)
    return _fit_voxel_gather(config, problem.k_per_group, arch)


@per_arch
def conv3d_dgrad_config(problem: ConvProblem, *, arch: GpuArch) -> KernelConfig:
    """The 3-D input gradient: M = N*D*H*W voxels, N = C/g, reduction (K/g)*T*R*S."""
    rows = problem.n * problem.d * problem.h * problem.w
    reduction = problem.k_per_group * problem.t * problem.r * problem.s
    config = _gemm_config(problem.element_size, rows, problem.c_per_group, reduction, arch)
    return _fit_voxel_gather(config, problem.c_per_group, arch)


def _fit_voxel_gather(config: KernelConfig, output_channels: int, arch: GpuArch) -> KernelConfig:
    """block_k cut to the 3-D kernels' gathered-tile budget. Output rows of a channel count that is
    not a multiple of 8 (R(2+1)D's 230, 460, 921) are not 16-byte aligned, so the tile is stored
    element by element: on sm_90 that spills from 128x64 at 4 warps up (1 KiB and more) and not at
    128x64 with 8 warps (the compile gate), so such tiles take that shape."""
    if output_channels % 8:
        config = replace(config, block_n=min(config.block_n, 64), num_warps=8)
    config = replace(config, block_k=_fit_gathered_tile(config, arch, GATHERED_VOXEL_ELEMENTS_PER_THREAD))
    return _for_tensor_memory(config, arch, "voxels")


@per_arch
def conv3d_depthwise_config(problem: ConvProblem, *, arch: GpuArch) -> KernelConfig:
    """The depthwise 3-D forward: block_m output columns of one row by block_n channels, no tl.dot."""
    return KernelConfig(block_m=_clamp_pow2(problem.q, 8, 32), block_n=_clamp_pow2(problem.k, 16, 64), num_warps=4,
                        num_stages=1)  # fmt: skip


@per_arch
def conv3d_wgrad_config(problem: ConvProblem, target_programs: int | None = None, *, arch: GpuArch) -> KernelConfig:
    """The 3-D weight gradient: M = K/g, N = (C/g)*T*R*S (gathered per element), the N*O*P*Q
    reduction split as `wgrad_config` splits it."""
    block_m, block_n, _ = _gemm_tiles(problem.element_size, problem.k_per_group, problem.gemm_k, problem.gemm_m)
    block_n, block_k = min(block_n, FLAT_WGRAD_BLOCK_N), min(_tile_caps(problem.element_size)[1], FLAT_WGRAD_BLOCK_K)
    tiles = problem.groups * cdiv(problem.k_per_group, block_m) * cdiv(problem.gemm_k, block_n)
    config = KernelConfig(block_m=block_m, block_n=block_n, block_k=block_k, num_warps=_gemm_warps(block_m, block_n),
                          num_stages=arch.pipeline_stages)  # fmt: skip
    config = _for_tensor_memory(config, arch, "voxels")
    return replace(
        config, split_k=_wgrad_splits(problem, tiles, config.block_k, target_programs or arch.target_programs)
    )


def tap_major_block(channels: int, largest: int) -> int:
    """The largest power of two in [16, largest] that divides `channels`, or 0 if none does."""
    block = largest
    while block >= 16:
        if channels % block == 0:
            return block
        block //= 2
    return 0
