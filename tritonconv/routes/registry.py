"""Every kernel route tritonconv has, one spec each: the single place that says what a variant is.

A `VariantSpec` names, for one (pass, variant):
- `applies`: the problems its kernel computes correctly (the autotuner may time any of them);
- `preferred`: the problems the untimed rule sends to it (the first preferred spec in `SPECS`
  order wins, so the rule for a pass reads top to bottom);
- `prepare`: its launcher, which builds the launch for a call's tensors (`ops/`);
- `kernel_modules`: the `kernels/` modules it runs (their source is part of a tuned entry's
  fingerprint);
- `space`, `heuristic` and `clamp`: its config space as data, its untimed config (`heuristic(problem,
  arch=None)`, sized for the architecture being planned for unless one is given), and how a config
  of the space is fitted to a problem;
- `competes`: a forward route the tuner times wherever it applies though the rule never picks it
  (a new kernel not yet measured on a GPU);
- `fuses_bias_grad`: a weight-gradient route whose launcher also computes the bias gradient from
  the dY it reads (`prepare(..., grad_bias=...)`), so no separate bias reduction runs;
- `returns_output`: a route whose run allocates its result and returns it (torch's), so the caller
  allocates nothing for it (a kernel route's run writes the tensor it is given and returns None).

The last spec of each pass is `torch`: torch's own convolution (`ops/torch_conv.py`), which
applies everywhere, is never the rule's choice and is timed by the tuner beside the kernels.
`routes` lists a problem's kernel routes, `served_routes` those and torch's.

Planning (`dispatch`), the tuner, the fingerprint and `explain` read this table and nothing else.
Adding a variant is a kernel, a launcher and one spec here.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from ..ops import conv1x1, conv3d, depthwise, depthwise_1d, dgrad, grouped_tile, implicit_gemm, tma, torch_conv, wgrad
from ..ops.descriptors import tensor_descriptor
from ..ops.forward import prepare_forward
from ..problem.arithmetic import (
    CHANNELS_LAST,
    CONTIGUOUS,
    ConvProblem,
    cdiv,
    dgrad_as_conv1x1,
    dgrad_as_depthwise,
    dilated_reach,
    next_power_of_2,
)
from ..problem.config import (
    KernelConfig,
    conv3d_config,
    conv3d_depthwise_config,
    conv3d_depthwise_wgrad_config,
    conv3d_dgrad_config,
    conv3d_wgrad_config,
    depthwise_1d_config,
    depthwise_1d_wgrad_config,
    depthwise_wgrad_config,
    dgrad_by_phase,
    dgrad_masking_config,
    dgrad_phased_config,
    heuristic_config,
    tma_config,
    tma_dgrad_config,
    tma_wgrad_config,
    wgrad_config,
)
from ..problem.runtime import current_arch


class Pass(StrEnum):
    FWD = "fwd"
    DGRAD = "dgrad"
    WGRAD = "wgrad"


class Variant(StrEnum):
    IMPLICIT_GEMM = "implicit_gemm"
    CONV1X1 = "conv1x1"
    GROUPED_TILE = "grouped_tile"
    DEPTHWISE = "depthwise"
    STRIDE_PHASED = "stride_phased"
    TMA = "tma"
    IMPLICIT_GEMM_3D = "implicit_gemm_3d"
    DEPTHWISE_3D = "depthwise_3d"
    DEPTHWISE_1D = "depthwise_1d"
    TORCH = "torch"


# A transposed convolution is the input gradient of its underlying convolution
# (`transposed.transposed_problem`): each of its passes is one of that convolution's.
TRANSPOSED_PASSES = {Pass.FWD: Pass.DGRAD, Pass.DGRAD: Pass.FWD, Pass.WGRAD: Pass.WGRAD}

GROUPED_TILE_MAX_CHANNELS = 32

GEMM_AXES = {
    "block_m": (64, 128, 256),
    "block_n": (32, 64, 128, 256),
    "block_k": (32, 64, 128),
    "group_m": (8,),
    "num_warps": (4, 8),
    "num_stages": (2, 3, 4, 5),
}
DEPTHWISE_AXES = {
    "block_m": (8, 16, 32, 64),
    "block_n": (16, 32, 64, 128),
    "halo_in_registers": (False, True),
    "num_warps": (2, 4, 8),
    "num_stages": (1,),
}
GROUPED_TILE_AXES = {
    "block_m": (32, 64, 128),
    "block_n": (16, 32),
    "block_k": (16, 32, 64),
    "block_g": (1, 2, 4, 8),
    "num_warps": (4, 8),
    "num_stages": (2, 3),
}
WGRAD_AXES = {
    "block_m": (64, 128),
    "block_n": (64, 128),
    "block_k": (32, 64),
    "split_k": (1, 2, 4, 8, 16, 32),
    "num_warps": (4, 8),
    "num_stages": (3, 4),
}
DEPTHWISE_1D_AXES = {  # block_m positions by block_n channels of one sequence, no tl.dot
    "block_m": (16, 32, 64, 128, 256),
    "block_n": (16, 32, 64, 128),
    "num_warps": (2, 4, 8),
    "num_stages": (1,),
}
DEPTHWISE_1D_WGRAD_AXES = {**DEPTHWISE_1D_AXES, "block_m": (16, 32, 64), "split_k": (1, 4, 16, 64, 256)}
DEPTHWISE_WGRAD_AXES = {  # block_m pixels by block_n channels of one tap, no tl.dot
    "block_m": (16, 32, 64, 128),
    "block_n": (16, 32, 64, 128),
    "split_k": (1, 4, 16, 64),
    "num_warps": (2, 4, 8),
    "num_stages": (1,),
}


# ---- when a route applies -------------------------------------------------------------------


def no_padding(problem: ConvProblem) -> bool:
    return problem.padding == (0, 0) and problem.padding_end == (0, 0)


def is_conv1x1(problem: ConvProblem) -> bool:
    """1x1 kernel, groups == 1, no padding (any stride; dilation is moot at 1x1): a plain GEMM."""
    return problem.groups == 1 and problem.r == problem.s == 1 and no_padding(problem)


def is_depthwise(problem: ConvProblem) -> bool:
    """Groups of one input channel each (any channel multiplier K/groups)."""
    return problem.groups > 1 and problem.c_per_group == 1


def is_grouped(problem: ConvProblem) -> bool:
    """A grouped convolution: the grouped-tile kernel's batch of groups has something to batch (with
    one group it is the implicit GEMM with a batched dot of one, so it is not offered there)."""
    return problem.groups > 1


def is_small_grouped(problem: ConvProblem) -> bool:
    """Groups too small to fill a tensor-core tile alone: one grouped_tile program covers several."""
    return (
        problem.groups > 1
        and problem.c_per_group <= GROUPED_TILE_MAX_CHANNELS
        and problem.k_per_group <= GROUPED_TILE_MAX_CHANNELS
    )


def dgrad_is_conv1x1(problem: ConvProblem) -> bool:
    return is_conv1x1(problem) and problem.stride == (1, 1)


def dgrad_is_depthwise_conv(problem: ConvProblem) -> bool:
    """Stride 1, one output channel per input channel, and padding no wider than the dilated kernel
    on any side (so the transposed padding dil*(k-1) - pad is not negative)."""
    if not is_depthwise(problem) or problem.k_per_group != 1 or problem.stride != (1, 1):
        return False
    reach = dilated_reach(problem)
    pads = (*problem.padding, *problem.padding_end)
    return all(pad <= reach[index % 2] for index, pad in enumerate(pads))


MAX_TAPS_1D = 8


def is_depthwise_1d(problem: ConvProblem) -> bool:
    """A depthwise 1-D convolution as a conv1d gives it (H = 1, a 1 x S kernel, no height padding):
    one channel per group, multiplier 1, stride 1, at most 8 taps, any dilation and padding (causal
    or symmetric). The short convolutions of Mamba-style models, over long sequences."""
    return (
        not problem.is_3d
        and problem.h == problem.r == 1
        and problem.padding[0] == problem.padding_end[0] == 0
        and is_depthwise(problem)
        and problem.k_per_group == 1
        and problem.stride == (1, 1)
        and problem.s <= MAX_TAPS_1D
    )


def dgrad_is_depthwise_1d(problem: ConvProblem) -> bool:
    """`is_depthwise_1d` with an input gradient that is the flipped-weight forward (`dgrad_is_depthwise_conv`)."""
    return is_depthwise_1d(problem) and dgrad_is_depthwise_conv(problem)


def is_strided(problem: ConvProblem) -> bool:
    return problem.stride != (1, 1)


def always(problem: ConvProblem) -> bool:
    return True


def never(problem: ConvProblem) -> bool:
    return False


def tma_applies(problem: ConvProblem) -> bool:
    """Stride 1, one group, channels_last, and channel rows a descriptor can address (16-byte
    multiples: C a multiple of 8 in 16-bit dtypes, of 4 in fp32). The launcher falls back to the
    pointer kernel for tensors it cannot address (an NCHW weight, a strided view, no TMA)."""
    return (
        problem.stride == (1, 1)
        and problem.groups == 1
        and problem.layout == CHANNELS_LAST
        and problem.element_size in (2, 4)
        and problem.c * problem.element_size % 16 == 0
        and tensor_descriptor() is not None
        and _tma_here()
    )


def _tma_here() -> bool:
    """The GPU launches are prepared for has TMA (`devices.GpuArch.tma`: not AMD Instinct); the
    interpreter and a machine with no GPU offer the route (the interpreter emulates descriptors)."""
    arch = current_arch()
    return arch is None or arch.tma


def tma_dgrad_applies(problem: ConvProblem) -> bool:
    """As `tma_applies`, with dY's rows (K channels) addressable too."""
    return tma_applies(problem) and problem.k * problem.element_size % 16 == 0


# ---- fitting a config to a problem ------------------------------------------------------------


def _fit(block: int, size: int, smallest: int) -> int:
    """A block no larger than the power of two covering `size`, and no smaller than `smallest`."""
    return max(smallest, min(block, next_power_of_2(max(size, 1))))


def _gemm_clamp(sides: Callable[[ConvProblem], tuple[int, int, int]]) -> Callable[..., KernelConfig]:
    """Fit block_m/n/k to the (M, N, reduction) GEMM a route computes for one group."""

    def clamp(config: KernelConfig, problem: ConvProblem) -> KernelConfig:
        m, n, k = sides(problem)
        return dataclasses.replace(
            config, block_m=_fit(config.block_m, m, 16), block_n=_fit(config.block_n, n, 16),
            block_k=_fit(config.block_k, k, 16),
        )  # fmt: skip

    return clamp


def _forward_sides(problem: ConvProblem) -> tuple[int, int, int]:
    return problem.gemm_m, problem.k_per_group, problem.gemm_k


def _tma_sides(problem: ConvProblem) -> tuple[int, int, int]:
    return problem.gemm_m, problem.k_per_group, problem.c_per_group


def _tma_dgrad_sides(problem: ConvProblem) -> tuple[int, int, int]:
    return problem.n * problem.h * problem.w, problem.c_per_group, problem.k_per_group


def _conv3d_dgrad_sides(problem: ConvProblem) -> tuple[int, int, int]:
    rows = problem.n * problem.d * problem.h * problem.w
    return rows, problem.c_per_group, problem.k_per_group * problem.t * problem.r * problem.s


def _masking_dgrad_sides(problem: ConvProblem) -> tuple[int, int, int]:
    return problem.n * problem.h * problem.w, problem.c_per_group, problem.k_per_group * problem.r * problem.s


def _phased_dgrad_sides(problem: ConvProblem) -> tuple[int, int, int]:
    """Pixels of one stride phase; a reduction tile holds output channels of one tap."""
    rows, columns = (cdiv(size, step) for size, step in zip((problem.h, problem.w), problem.stride, strict=True))
    return problem.n * rows * columns, problem.c_per_group, problem.k_per_group


def _grouped_tile_clamp(config: KernelConfig, problem: ConvProblem) -> KernelConfig:
    config = _gemm_clamp(_forward_sides)(config, problem)
    return dataclasses.replace(config, block_g=min(config.block_g, next_power_of_2(problem.groups)))


def _depthwise_clamp(width: Callable[[ConvProblem], int]) -> Callable[..., KernelConfig]:
    """One output row per program: block_m columns of `width`, block_n channels. Fewer than 16
    channels take a block of 4 or 8 and proportionally more columns (as the heuristic does)."""

    def clamp(config: KernelConfig, problem: ConvProblem) -> KernelConfig:
        if problem.k >= 16:
            block_n, block_m = _fit(config.block_n, problem.k, 16), config.block_m
        else:  # the tile of a 16-channel block, its spare lanes spent on columns
            block_n = _fit(config.block_n, problem.k, 4)
            block_m = config.block_m * 16 // block_n
        return dataclasses.replace(config, block_m=_fit(block_m, width(problem), 8), block_n=block_n)

    return clamp


def _wgrad_clamp(config: KernelConfig, problem: ConvProblem) -> KernelConfig:
    """M = K/g, N = (C/g)*R*S; the reduction is N*P*Q, and more splits than blocks of it are empty programs."""
    reduction = problem.gemm_m
    return dataclasses.replace(
        config, block_m=_fit(config.block_m, problem.k_per_group, 16), block_n=_fit(config.block_n, problem.gemm_k, 16),
        split_k=max(1, min(config.split_k, cdiv(reduction, config.block_k))),
    )  # fmt: skip


def _tma_wgrad_clamp(config: KernelConfig, problem: ConvProblem) -> KernelConfig:
    """M = K, N = C at one tap, block_k pixels per box; more splits than boxes are empty programs."""
    block_k = _fit(config.block_k, problem.p * problem.q, 16)
    boxes = problem.n * cdiv(problem.p * problem.q, block_k)
    block_m, block_n = _fit(config.block_m, problem.k_per_group, 16), _fit(config.block_n, problem.c_per_group, 16)
    split_k = max(1, min(config.split_k, boxes))
    return dataclasses.replace(config, block_m=block_m, block_n=block_n, block_k=block_k, split_k=split_k)


def _depthwise_wgrad_clamp(config: KernelConfig, problem: ConvProblem) -> KernelConfig:
    """Pixels by channels, the pixels split."""
    reduction = problem.gemm_m
    block_m = _fit(config.block_m, reduction, 16)
    return dataclasses.replace(
        config, block_m=block_m, block_n=_fit(config.block_n, problem.k, 16),
        split_k=max(1, min(config.split_k, cdiv(reduction, block_m))),
    )  # fmt: skip


# ---- the table ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What will run for a pass of a problem: the variant, its launch config, and where the config
    came from ('heuristic', 'tuned cache', ...; see `dispatch.plan_pass`)."""

    variant: Variant
    config: KernelConfig
    config_source: str


@dataclass(frozen=True)
class VariantSpec:
    """One kernel route of one pass; see the module docstring for each field."""

    pass_name: Pass
    variant: Variant
    applies: Callable[[ConvProblem], bool]
    preferred: Callable[[ConvProblem], bool]
    prepare: Callable
    kernel_modules: tuple[str, ...]
    space: Mapping[str, tuple]
    heuristic: Callable[..., KernelConfig]  # (problem, arch=None): arch None is the one being planned for
    clamp: Callable[[KernelConfig, ConvProblem], KernelConfig]
    competes: bool = False  # a forward route the tuner times wherever it applies, though the rule never picks it
    fuses_bias_grad: bool = False  # a weight-gradient route that computes the bias gradient too
    returns_output: bool = False  # a route whose run allocates and returns its result (torch's): none is made for it

    @property
    def key(self) -> tuple[Pass, Variant]:
        return self.pass_name, self.variant


def _forward(prepare_variant: Callable, **options: object) -> Callable:
    """A forward variant's launcher: `prepare(x, weight, bias, y, problem, config, epilogue)`."""
    return functools.partial(prepare_forward, prepare_variant, **options)


def _forward_heuristic(variant: Variant) -> Callable[..., KernelConfig]:
    return lambda problem, arch=None: heuristic_config(problem, variant, arch=arch)


SPECS: tuple[VariantSpec, ...] = (
    VariantSpec(Pass.FWD, Variant.CONV1X1, is_conv1x1, is_conv1x1, _forward(conv1x1.prepare), ("conv1x1_fwd",),
                GEMM_AXES, _forward_heuristic(Variant.CONV1X1), _gemm_clamp(_forward_sides)),
    VariantSpec(Pass.FWD, Variant.DEPTHWISE, lambda problem: problem.c_per_group == 1, is_depthwise,
                _forward(depthwise.prepare), ("depthwise_fwd",), DEPTHWISE_AXES,
                _forward_heuristic(Variant.DEPTHWISE), _depthwise_clamp(lambda problem: problem.q)),
    VariantSpec(Pass.FWD, Variant.GROUPED_TILE, is_grouped, is_small_grouped, _forward(grouped_tile.prepare),
                ("grouped_tile_fwd",), GROUPED_TILE_AXES, _forward_heuristic(Variant.GROUPED_TILE),
                _grouped_tile_clamp),
    # Stride-1 convolutions fed by tensor descriptors (TMA): not the rule's choice until measured on a GPU.
    VariantSpec(Pass.FWD, Variant.TMA, tma_applies, never, _forward(tma.prepare), ("tma_fwd", "implicit_gemm_fwd"),
                GEMM_AXES, tma_config, _gemm_clamp(_tma_sides), competes=True),
    VariantSpec(Pass.FWD, Variant.IMPLICIT_GEMM, always, always, _forward(implicit_gemm.prepare),
                ("implicit_gemm_fwd",), GEMM_AXES, _forward_heuristic(Variant.IMPLICIT_GEMM),
                _gemm_clamp(_forward_sides)),
    # dX of a stride-1 1x1 conv: the conv1x1 GEMM on dY and the transposed weight.
    VariantSpec(Pass.DGRAD, Variant.CONV1X1, dgrad_is_conv1x1, dgrad_is_conv1x1, dgrad.prepare_conv1x1_route,
                ("conv1x1_fwd",), GEMM_AXES,
                lambda problem, arch=None: heuristic_config(dgrad_as_conv1x1(problem, CONTIGUOUS), Variant.CONV1X1,
                                                               arch=arch),
                _gemm_clamp(_masking_dgrad_sides)),
    # dX of a stride-1 depthwise conv: the depthwise kernel on dY and the flipped weight.
    VariantSpec(Pass.DGRAD, Variant.DEPTHWISE, dgrad_is_depthwise_conv, dgrad_is_depthwise_conv,
                dgrad.prepare_depthwise_route, ("depthwise_fwd",), DEPTHWISE_AXES,
                lambda problem, arch=None: heuristic_config(dgrad_as_depthwise(problem, CONTIGUOUS), Variant.DEPTHWISE,
                                                               arch=arch),
                _depthwise_clamp(lambda problem: problem.w)),
    VariantSpec(Pass.DGRAD, Variant.STRIDE_PHASED, is_strided, dgrad_by_phase, dgrad.prepare_phased,
                ("dgrad_phased",), GEMM_AXES, dgrad_phased_config, _gemm_clamp(_phased_dgrad_sides)),
    # dX of a stride-1 conv by the TMA-fed forward kernel, roles swapped: not the rule's choice until measured.
    VariantSpec(Pass.DGRAD, Variant.TMA, tma_dgrad_applies, never, tma.prepare_dgrad, ("tma_fwd", "dgrad"),
                GEMM_AXES, tma_dgrad_config, _gemm_clamp(_tma_dgrad_sides)),
    VariantSpec(Pass.DGRAD, Variant.IMPLICIT_GEMM, always, always, dgrad.prepare_masking, ("dgrad",), GEMM_AXES,
                dgrad_masking_config, _gemm_clamp(_masking_dgrad_sides)),
    VariantSpec(Pass.WGRAD, Variant.DEPTHWISE, is_depthwise, is_depthwise, wgrad.prepare_depthwise, ("wgrad",),
                DEPTHWISE_WGRAD_AXES, depthwise_wgrad_config, _depthwise_wgrad_clamp),
    # dW of a stride-1 conv fed by descriptors, K x C per tap: not the rule's choice until measured on a GPU.
    VariantSpec(Pass.WGRAD, Variant.TMA, tma_dgrad_applies, never, tma.prepare_wgrad, ("tma_wgrad", "wgrad"),
                WGRAD_AXES, tma_wgrad_config, _tma_wgrad_clamp, fuses_bias_grad=True),
    VariantSpec(Pass.WGRAD, Variant.IMPLICIT_GEMM, always, always, wgrad.prepare_split_k, ("wgrad",), WGRAD_AXES,
                wgrad_config, _wgrad_clamp),
)  # fmt: skip


def is_3d(problem: ConvProblem) -> bool:
    return problem.is_3d


def is_depthwise_3d(problem: ConvProblem) -> bool:
    return problem.is_3d and is_depthwise(problem)


def dgrad_is_depthwise_conv_3d(problem: ConvProblem) -> bool:
    """`dgrad_is_depthwise_conv` for a 3-D problem, its depth axis included."""
    depth = problem.depth
    if (
        not is_depthwise_3d(problem)
        or depth.stride != 1
        or max(depth.padding, depth.padding_end) > depth.dilation * (depth.kernel - 1)
    ):
        return False
    return dgrad_is_depthwise_conv(dataclasses.replace(problem, depth=None))


DEPTHWISE_3D_AXES = {k: v for k, v in DEPTHWISE_AXES.items() if k != "halo_in_registers"}


def _sequence_clamp(config: KernelConfig, problem: ConvProblem) -> KernelConfig:
    """Blocks no longer than the sequence (the longer of input and output: the input gradient writes
    the input's positions) and no wider than its channels need."""
    return dataclasses.replace(
        config,
        block_m=_fit(config.block_m, max(problem.w, problem.q), 16),
        block_n=_fit(config.block_n, problem.k, 16),
    )


# Long-sequence depthwise 1-D convolutions (`ops/depthwise_1d.py`): ahead of the 2-D routes in each
# pass, so the rule takes them for a conv1d's depthwise problem before the 2-D depthwise kernels.
SEQUENCE_SPECS: tuple[VariantSpec, ...] = (
    VariantSpec(Pass.FWD, Variant.DEPTHWISE_1D, is_depthwise_1d, is_depthwise_1d, _forward(depthwise_1d.prepare),
                ("depthwise_1d",), DEPTHWISE_1D_AXES, depthwise_1d_config, _sequence_clamp),
    # dX of a stride-1 one: the forward kernel on dY with the weight read back to front.
    VariantSpec(Pass.DGRAD, Variant.DEPTHWISE_1D, dgrad_is_depthwise_1d, dgrad_is_depthwise_1d,
                depthwise_1d.prepare_dgrad, ("depthwise_1d",), DEPTHWISE_1D_AXES,
                lambda problem, arch=None: depthwise_1d_config(dgrad_as_depthwise(problem, problem.layout), arch=arch),
                _sequence_clamp),
    VariantSpec(Pass.WGRAD, Variant.DEPTHWISE_1D, is_depthwise_1d, is_depthwise_1d, depthwise_1d.prepare_wgrad,
                ("depthwise_1d", "wgrad"), DEPTHWISE_1D_WGRAD_AXES, depthwise_1d_wgrad_config, _sequence_clamp,
                fuses_bias_grad=True),
)  # fmt: skip


def _planar(spec: VariantSpec) -> VariantSpec:
    """A 2-D route: it neither applies to nor is preferred for a 3-D problem."""
    applies, preferred = spec.applies, spec.preferred
    return dataclasses.replace(
        spec,
        applies=lambda problem: not problem.is_3d and applies(problem),
        preferred=lambda problem: not problem.is_3d and preferred(problem),
    )


# 3-D convolutions (`ops/conv3d.py`): one general implicit-GEMM route per pass, and direct depthwise
# ones (the forward, the stride-1 input gradient, the weight gradient), first in each pass so the
# rule reads "3-D problems here" before the 2-D routes, which never apply to them.
VOLUME_SPECS: tuple[VariantSpec, ...] = (
    VariantSpec(Pass.FWD, Variant.DEPTHWISE_3D, is_depthwise_3d, is_depthwise_3d, conv3d.prepare_depthwise_forward,
                ("conv3d",), DEPTHWISE_3D_AXES, conv3d_depthwise_config, _depthwise_clamp(lambda problem: problem.q)),
    VariantSpec(Pass.FWD, Variant.IMPLICIT_GEMM_3D, is_3d, is_3d, conv3d.prepare_forward, ("conv3d",), GEMM_AXES,
                conv3d_config, _gemm_clamp(_forward_sides)),
    # dX of a stride-1 depthwise 3-D conv: the depthwise 3-D forward on dY with the weight read back to front.
    VariantSpec(Pass.DGRAD, Variant.DEPTHWISE_3D, dgrad_is_depthwise_conv_3d, dgrad_is_depthwise_conv_3d,
                conv3d.prepare_depthwise_dgrad, ("conv3d",), DEPTHWISE_3D_AXES,
                lambda problem, arch=None: conv3d_depthwise_config(dgrad_as_depthwise(problem, CONTIGUOUS), arch=arch),
                _depthwise_clamp(lambda problem: problem.w)),
    VariantSpec(Pass.DGRAD, Variant.IMPLICIT_GEMM_3D, is_3d, is_3d, conv3d.prepare_dgrad, ("conv3d",), GEMM_AXES,
                conv3d_dgrad_config, _gemm_clamp(_conv3d_dgrad_sides)),
    VariantSpec(Pass.WGRAD, Variant.DEPTHWISE_3D, is_depthwise_3d, is_depthwise_3d, conv3d.prepare_depthwise_wgrad,
                ("conv3d", "wgrad"), DEPTHWISE_WGRAD_AXES, conv3d_depthwise_wgrad_config, _depthwise_wgrad_clamp),
    VariantSpec(Pass.WGRAD, Variant.IMPLICIT_GEMM_3D, is_3d, is_3d, conv3d.prepare_wgrad, ("conv3d", "wgrad"),
                WGRAD_AXES, conv3d_wgrad_config, _wgrad_clamp),
)  # fmt: skip


def _no_config(problem: ConvProblem, arch: object = None) -> KernelConfig:
    return torch_conv.TORCH_CONFIG


def _as_given(config: KernelConfig, problem: ConvProblem) -> KernelConfig:
    return config


# torch's own convolution (`ops/torch_conv.py`), last in each pass: it computes every problem, the
# rule never picks it, and the tuner times it beside the kernels wherever it tunes, so a tuned
# problem runs whichever is faster. Its weight gradient computes the bias gradient in the same call.
TORCH_SPECS: tuple[VariantSpec, ...] = (
    VariantSpec(Pass.FWD, Variant.TORCH, always, never, torch_conv.prepare_forward, (), {}, _no_config, _as_given,
                returns_output=True),
    VariantSpec(Pass.DGRAD, Variant.TORCH, always, never, torch_conv.prepare_dgrad, (), {}, _no_config, _as_given,
                returns_output=True),
    VariantSpec(Pass.WGRAD, Variant.TORCH, always, never, torch_conv.prepare_wgrad, (), {}, _no_config, _as_given,
                fuses_bias_grad=True, returns_output=True),
)  # fmt: skip
SPECS = tuple(
    spec
    for pass_name in Pass
    for spec in (*VOLUME_SPECS, *SEQUENCE_SPECS, *map(_planar, SPECS), *TORCH_SPECS)
    if spec.pass_name == pass_name
)
REGISTRY: dict[tuple[Pass, Variant], VariantSpec] = {spec.key: spec for spec in SPECS}


def spec(pass_name: str, variant: str) -> VariantSpec:
    """The spec of (pass, variant); KeyError naming the known ones otherwise."""
    try:
        return REGISTRY[Pass(pass_name), Variant(variant)]
    except (KeyError, ValueError):
        known = ", ".join(f"{p}/{v}" for p, v in REGISTRY)
        raise KeyError(f"no kernel route for pass {pass_name!r} and variant {variant!r}; known: {known}") from None


def pass_specs(pass_name: str) -> tuple[VariantSpec, ...]:
    return tuple(s for s in SPECS if s.pass_name == pass_name)


@functools.lru_cache(maxsize=4096)
def rule_variant(problem: ConvProblem, pass_name: str) -> Variant:
    """The untimed rule's choice: the first spec of the pass (in `SPECS` order) that prefers the problem."""
    return next(s.variant for s in pass_specs(Pass(pass_name)) if s.preferred(problem))


def routes(problem: ConvProblem, pass_name: str) -> tuple[Variant, ...]:
    """Every Triton kernel route of the pass that computes `problem` on the GPU launches are prepared
    for (no TMA route where it has no TMA), the rule's choice first; `served_routes` adds torch's."""
    return _routes(problem, pass_name, _tma_here())


def served_routes(problem: ConvProblem, pass_name: str) -> tuple[Variant, ...]:
    """Every route a plan of the pass may name: the kernel routes (`routes`), then torch's own."""
    return (*_routes(problem, pass_name, _tma_here()), Variant.TORCH)


@functools.lru_cache(maxsize=4096)
def _routes(problem: ConvProblem, pass_name: str, tma_here: bool) -> tuple[Variant, ...]:
    chosen = rule_variant(problem, pass_name)
    others = (
        s.variant
        for s in pass_specs(Pass(pass_name))
        if s.applies(problem) and s.variant not in (chosen, Variant.TORCH)
    )
    return (chosen, *others)


def kernel_specs() -> tuple[VariantSpec, ...]:
    """Every route that runs a Triton kernel of tritonconv's (all but torch's)."""
    return tuple(s for s in SPECS if s.variant != Variant.TORCH)


def tuned_variants(problem: ConvProblem, pass_name: str) -> list[Variant]:
    """What the autotuner times: the forward, the rule's choice and, if different, the general
    kernel (the other forward variants serve any problem but are never faster off their class);
    a backward pass, every route it has, so the specialised routes compete with the general ones."""
    if Pass(pass_name) != Pass.FWD:
        return list(routes(problem, pass_name))
    general = [s.variant for s in pass_specs(Pass.FWD) if s.variant == Variant.IMPLICIT_GEMM and s.applies(problem)]
    competing = [s.variant for s in pass_specs(Pass.FWD) if s.competes and s.applies(problem)]
    return list(dict.fromkeys([rule_variant(problem, pass_name), *general, *competing]))
