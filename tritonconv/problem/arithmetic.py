"""Convolution arithmetic: torch-style arguments in, one normalized problem description out.

Every layer of tritonconv (launchers, autotuner, benchmarks) reads the same `ConvProblem`, so the
output size, padding convention and FLOP count are computed in exactly one place. Validation mirrors
`torch.nn.functional.conv2d`: the same conditions are refused, with messages that name the shapes.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
from collections.abc import Sequence
from dataclasses import dataclass

import torch


def cdiv(numerator: int, denominator: int) -> int:
    """ceil(numerator / denominator) for launch grids and tiles, as `triton.cdiv` computes it (here so
    planning a call does not import Triton)."""
    return (numerator + denominator - 1) // denominator


def next_power_of_2(value: int) -> int:
    """The smallest power of two >= value (0 for 0), as `triton.next_power_of_2` gives it."""
    return 0 if value <= 0 else 1 << (value - 1).bit_length()


SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
CHANNELS_LAST = "channels_last"
CONTIGUOUS = "contiguous"

IntPair = tuple[int, int]


@dataclass(frozen=True)
class DepthAxis:
    """The third spatial axis of a 3-D convolution: input depth, kernel depth (T), stride, leading
    and trailing padding, dilation."""

    size: int
    kernel: int
    stride: int = 1
    padding: int = 0
    padding_end: int = 0
    dilation: int = 1

    @property
    def output_size(self) -> int:
        return conv_output_size(self.size, self.kernel, self.stride, self.padding, self.padding_end, self.dilation)


@dataclass(frozen=True)
class ConvProblem:
    """A 2-D convolution with every argument resolved to numbers, or a 3-D one (`depth` set: the
    (D, H, W) volume's depth axis; h, w, r, s and the pairs stay height and width).

    Padding is stored as leading (top, left) and trailing (bottom, right) amounts because
    `padding='same'` with an even dilated kernel pads one more element at the end, as torch does.
    `layout` is the memory format of the output (and the one the kernels are tuned for):
    channels_last means channels_last_3d for a 3-D problem.
    """

    n: int
    c: int
    h: int
    w: int
    k: int
    r: int
    s: int
    stride: IntPair = (1, 1)
    padding: IntPair = (0, 0)
    padding_end: IntPair = (0, 0)
    dilation: IntPair = (1, 1)
    groups: int = 1
    dtype: torch.dtype = torch.float32
    layout: str = CONTIGUOUS
    has_bias: bool = False
    depth: DepthAxis | None = None

    @property
    def is_3d(self) -> bool:
        return self.depth is not None

    @property
    def d(self) -> int:
        """Input depth (1 for a 2-D problem)."""
        return 1 if self.depth is None else self.depth.size

    @property
    def t(self) -> int:
        """Kernel depth (1 for a 2-D problem)."""
        return 1 if self.depth is None else self.depth.kernel

    @functools.cached_property
    def o(self) -> int:
        """Output depth (1 for a 2-D problem)."""
        return 1 if self.depth is None else self.depth.output_size

    @functools.cached_property
    def p(self) -> int:
        """Output height (cached: every launch asks)."""
        return conv_output_size(self.h, self.r, self.stride[0], self.padding[0], self.padding_end[0], self.dilation[0])

    @functools.cached_property
    def q(self) -> int:
        """Output width (cached: every launch asks)."""
        return conv_output_size(self.w, self.s, self.stride[1], self.padding[1], self.padding_end[1], self.dilation[1])

    @property
    def c_per_group(self) -> int:
        return self.c // self.groups

    @property
    def k_per_group(self) -> int:
        return self.k // self.groups

    @property
    def gemm_m(self) -> int:
        """Rows of the implicit GEMM: one per output pixel (voxel), N*P*Q (N*O*P*Q)."""
        return self.n * self.o * self.p * self.q

    @property
    def gemm_n(self) -> int:
        """Columns of the implicit GEMM per group: output channels of one group."""
        return self.k_per_group

    @property
    def gemm_k(self) -> int:
        """Reduction length per group, (C/groups)*R*S (*T): the length every output element sums over."""
        return self.c_per_group * self.t * self.r * self.s

    @property
    def flops(self) -> int:
        """Multiply-adds counted as two FLOPs: 2*N*K*(O)*P*Q*(C/g)*(T)*R*S (no epilogue term)."""
        return 2 * self.gemm_m * self.k * self.gemm_k

    @property
    def element_size(self) -> int:
        return torch.empty((), dtype=self.dtype).element_size()

    @property
    def min_bytes(self) -> int:
        """Bytes moved if input, weight, bias and output each cross memory exactly once."""
        elems = self.n * self.c * self.d * self.h * self.w + self.k * self.gemm_k + self.gemm_m * self.k
        if self.has_bias:
            elems += self.k
        return elems * self.element_size

    @property
    def arithmetic_intensity(self) -> float:
        """FLOPs per byte at the minimum traffic: decides memory- versus compute-bound."""
        return self.flops / self.min_bytes

    @property
    def input_shape(self) -> tuple[int, ...]:
        if self.depth is not None:
            return (self.n, self.c, self.d, self.h, self.w)
        return (self.n, self.c, self.h, self.w)

    @property
    def weight_shape(self) -> tuple[int, ...]:
        if self.depth is not None:
            return (self.k, self.c_per_group, self.t, self.r, self.s)
        return (self.k, self.c_per_group, self.r, self.s)

    @property
    def output_shape(self) -> tuple[int, ...]:
        if self.depth is not None:
            return (self.n, self.k, self.o, self.p, self.q)
        return (self.n, self.k, self.p, self.q)

    @property
    def spatial_arguments(self) -> tuple[tuple[int, ...], ...]:
        """(stride, leading padding, trailing padding, dilation), one entry per spatial axis: (D,) H, W."""
        arguments = (self.stride, self.padding, self.padding_end, self.dilation)
        depth = self.depth
        if depth is None:
            return arguments
        depth_arguments = (depth.stride, depth.padding, depth.padding_end, depth.dilation)
        return tuple((first, *rest) for first, rest in zip(depth_arguments, arguments, strict=True))

    @property
    def memory_format(self) -> torch.memory_format:
        """The torch memory format of `layout`: what outputs are allocated in."""
        return memory_format_of(len(self.output_shape), self.layout == CHANNELS_LAST)


def memory_format_of(dims: int, channels_last: bool) -> torch.memory_format:
    """channels_last (4-D) or channels_last_3d (5-D) when asked, else contiguous."""
    if not channels_last:
        return torch.contiguous_format
    return torch.channels_last_3d if dims == 5 else torch.channels_last


def conv_output_size(size: int, kernel: int, stride: int, pad_begin: int, pad_end: int, dilation: int) -> int:
    """o = floor((i + pad_begin + pad_end - d*(k-1) - 1) / s) + 1, the seed's formula with split padding."""
    return (size + pad_begin + pad_end - dilation * (kernel - 1) - 1) // stride + 1


def to_pair(value: int | Sequence[int], name: str) -> IntPair:
    """Normalize an int or a 1- or 2-sequence of ints into (height, width), as torch accepts them."""
    return per_axis(value, name, 2)


def per_axis(value: int | Sequence[int], name: str, axes: int) -> tuple[int, ...]:
    """An int or a 1- or `axes`-sequence of ints as one int per spatial axis, with torch's errors."""
    items = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value]
    if len(items) not in (1, axes):
        raise RuntimeError(
            f"expected {name} to be a single integer value or a list of {axes} values to match the "
            f"convolution dimensions, but got {name}={items}"
        )
    try:
        return tuple(operator.index(item) for item in (items * axes if len(items) == 1 else items))
    except TypeError:
        raise TypeError(f"{name} must be an int or a tuple of ints, but got {name}={value!r}") from None


def resolve_padding(
    padding: str | int | Sequence[int], kernel: Sequence[int], stride: Sequence[int], dilation: Sequence[int]
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Return (leading, trailing) padding, one per spatial axis of `kernel`; 'same' puts the odd
    element at the end, as torch does."""
    axes = len(kernel)
    if isinstance(padding, str):
        if padding == "valid":
            return (0,) * axes, (0,) * axes
        if padding != "same":
            raise RuntimeError(f"Invalid padding string: '{padding}'")
        if any(step != 1 for step in stride):
            raise RuntimeError("padding='same' is not supported for strided convolutions")
        totals = [d * (k - 1) for d, k in zip(dilation, kernel, strict=True)]
        begin = tuple(total // 2 for total in totals)
        return begin, tuple(total - first for total, first in zip(totals, begin, strict=True))
    amounts = per_axis(padding, "padding", axes)
    if min(amounts) < 0:
        raise RuntimeError("negative padding is not supported")
    return amounts, amounts


def make_problem(
    *,
    n: int,
    c: int,
    h: int,
    w: int,
    k: int,
    r: int,
    s: int,
    stride: int | Sequence[int] = 1,
    padding: str | int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    dtype: torch.dtype = torch.float32,
    layout: str = CONTIGUOUS,
    has_bias: bool = False,
) -> ConvProblem:
    """Build and validate a problem from sizes alone (for suites and benchmarks: no tensors needed).

    Every convolution call describes its problem, so results are memoised on the (hashable) arguments:
    a model's calls repeat a handful of problems, and validation is pure.
    """
    args = (n, c, h, w, k, r, s, hashable(stride), hashable(padding), hashable(dilation), groups, dtype, layout)
    try:
        return _cached_problem(*args, has_bias)
    except TypeError as error:
        if "unhashable" not in str(error):
            raise
    return _build_problem(n, c, h, w, k, r, s, stride, padding, dilation, groups, dtype, layout, has_bias)


def hashable(value: object) -> object:
    """A list argument as the tuple it means, so calls can be keyed on it."""
    return tuple(value) if isinstance(value, list) else value


def _build_problem(
    n: int,
    c: int,
    h: int,
    w: int,
    k: int,
    r: int,
    s: int,
    stride: int | Sequence[int],
    padding: str | int | Sequence[int],
    dilation: int | Sequence[int],
    groups: int,
    dtype: torch.dtype,
    layout: str,
    has_bias: bool,
) -> ConvProblem:
    stride_hw = to_pair(stride, "stride")
    dilation_hw = to_pair(dilation, "dilation")
    groups = operator.index(groups)
    if groups <= 0:
        raise RuntimeError("non-positive groups is not supported")
    if min(stride_hw) <= 0:
        raise RuntimeError("non-positive stride is not supported")
    if min(dilation_hw) <= 0:
        raise RuntimeError("non-positive dilation is not supported")
    pad_begin, pad_end = resolve_padding(padding, (r, s), stride_hw, dilation_hw)
    if c % groups != 0 or c == 0:
        raise RuntimeError(
            f"Given groups={groups}, expected input to have a positive number of channels divisible by "
            f"{groups}, but got {c} channels instead"
        )
    weight_size = [k, c // groups, r, s]
    if k <= 0:
        raise RuntimeError(
            f"Given groups={groups}, expected weight to be at least 1 at dimension 0, "
            f"but got weight of size {weight_size} instead"
        )
    if k % groups != 0:
        raise RuntimeError(
            f"Given groups={groups}, expected weight to be divisible by {groups} at dimension 0, "
            f"but got weight of size {weight_size} instead"
        )
    if r <= 0 or s <= 0:
        raise RuntimeError(f"Expected a kernel of at least 1x1, but got weight of size {weight_size}")
    if layout not in (CHANNELS_LAST, CONTIGUOUS):
        raise ValueError(f"layout must be '{CHANNELS_LAST}' or '{CONTIGUOUS}', got {layout!r}")
    check_dtype(dtype, "input")
    padded = (h + pad_begin[0] + pad_end[0], w + pad_begin[1] + pad_end[1])
    dilated = (dilation_hw[0] * (r - 1) + 1, dilation_hw[1] * (s - 1) + 1)
    if padded[0] < dilated[0] or padded[1] < dilated[1]:
        raise RuntimeError(
            f"Calculated padded input size per channel: ({padded[0]} x {padded[1]}). "
            f"Kernel size: ({dilated[0]} x {dilated[1]}). Kernel size can't be greater than actual input size"
        )
    return ConvProblem(
        n=n,
        c=c,
        h=h,
        w=w,
        k=k,
        r=r,
        s=s,
        stride=stride_hw,
        padding=pad_begin,
        padding_end=pad_end,
        dilation=dilation_hw,
        groups=groups,
        dtype=dtype,
        layout=layout,
        has_bias=has_bias,
    )


_cached_problem = functools.lru_cache(maxsize=4096)(_build_problem)


IntTriple = tuple[int, int, int]


def to_triple(value: int | Sequence[int], name: str) -> IntTriple:
    """An int or a 1- or 3-sequence of ints as (depth, height, width), as torch's conv3d takes them."""
    return per_axis(value, name, 3)


def make_problem_3d(
    *,
    n: int,
    c: int,
    d: int,
    h: int,
    w: int,
    k: int,
    t: int,
    r: int,
    s: int,
    stride: int | Sequence[int] = 1,
    padding: str | int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    dtype: torch.dtype = torch.float32,
    layout: str = CONTIGUOUS,
    has_bias: bool = False,
) -> ConvProblem:
    """A 3-D problem (`F.conv3d` on (N, C, D, H, W)) from sizes alone: the 2-D problem of its height
    and width, validated as `make_problem` does, with its depth axis."""
    stride_dhw, dilation_dhw = to_triple(stride, "stride"), to_triple(dilation, "dilation")
    if isinstance(padding, str):
        if padding not in ("same", "valid"):
            raise RuntimeError(f"Invalid padding string: '{padding}'")
        if padding == "same" and stride_dhw != (1, 1, 1):
            raise RuntimeError("padding='same' is not supported for strided convolutions")
        depth_total = dilation_dhw[0] * (t - 1) if padding == "same" else 0
        depth_pads, plane_padding = (depth_total // 2, depth_total - depth_total // 2), padding
    else:
        padding_dhw = to_triple(padding, "padding")
        if min(padding_dhw) < 0:
            raise RuntimeError("negative padding is not supported")
        depth_pads, plane_padding = (padding_dhw[0], padding_dhw[0]), padding_dhw[1:]
    if min(stride_dhw) <= 0:
        raise RuntimeError("non-positive stride is not supported")
    if min(dilation_dhw) <= 0:
        raise RuntimeError("non-positive dilation is not supported")
    if t <= 0:
        raise RuntimeError(
            f"Expected a kernel of at least 1x1x1, but got weight of size {[k, c // max(groups, 1), t, r, s]}"
        )
    plane = make_problem(
        n=n, c=c, h=h, w=w, k=k, r=r, s=s, stride=stride_dhw[1:], padding=plane_padding, dilation=dilation_dhw[1:],
        groups=groups, dtype=dtype, layout=layout, has_bias=has_bias,
    )  # fmt: skip
    depth = DepthAxis(d, t, stride_dhw[0], *depth_pads, dilation_dhw[0])
    if d + sum(depth_pads) < dilation_dhw[0] * (t - 1) + 1:
        padded = (
            d + sum(depth_pads),
            h + plane.padding[0] + plane.padding_end[0],
            w + plane.padding[1] + plane.padding_end[1],
        )
        dilated = (
            dilation_dhw[0] * (t - 1) + 1,
            *(dl * (kk - 1) + 1 for dl, kk in zip(plane.dilation, (r, s), strict=True)),
        )
        raise RuntimeError(
            f"Calculated padded input size per channel: ({' x '.join(map(str, padded))}). "
            f"Kernel size: ({' x '.join(map(str, dilated))}). Kernel size can't be greater than actual input size"
        )
    return dataclasses.replace(plane, depth=depth)


def problem_from_tensors_3d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: str | int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
) -> ConvProblem:
    """The (batched) problem of `F.conv3d` arguments whose shapes torch accepts (the front end has
    checked them with torch's own function): an unbatched (C, D, H, W) input has n = 1. The layout
    is channels_last(_3d) when the input or the weight is, torch's rule for the output."""
    check_dtype(input.dtype, "input")
    n, c, d, h, w = tuple(input.shape) if input.dim() == 5 else (1, *input.shape)
    k, _, t, r, s = weight.shape
    batched = input if input.dim() == 5 else input.unsqueeze(0)
    channels_last = is_channels_last_like(batched) or is_channels_last_like(weight)
    return make_problem_3d(
        n=n, c=c, d=d, h=h, w=w, k=k, t=t, r=r, s=s, stride=hashable(stride), padding=hashable(padding),
        dilation=hashable(dilation), groups=groups, dtype=input.dtype,
        layout=CHANNELS_LAST if channels_last else CONTIGUOUS, has_bias=bias is not None,
    )  # fmt: skip


def check_dtype(dtype: torch.dtype, what: str) -> None:
    if dtype not in SUPPORTED_DTYPES:
        names = ", ".join(str(d).removeprefix("torch.") for d in SUPPORTED_DTYPES)
        raise RuntimeError(f"tritonconv supports {names}; got {what} of dtype {dtype}")


def is_channels_last_like(tensor: torch.Tensor) -> bool:
    """True when a 4-D tensor's strides order it as NHWC (a 5-D one's as NDHWC), torch's rule for
    suggesting channels_last (channels_last_3d).

    Follows `is_channels_last_strides_2d`/`_3d`: walk C, W, H, (D,) N and require non-decreasing
    strides, so a sliced or otherwise non-contiguous NHWC view still counts, and an NCHW tensor with
    C == 1 does not.
    """
    order = {4: (1, 3, 2, 0), 5: (1, 4, 3, 2, 0)}.get(tensor.dim())
    if order is None:
        return False
    sizes, strides = tensor.shape, tensor.stride()
    if strides[1] == 0:
        return False
    minimum = 0
    for dim in order:
        if sizes[dim] == 0 or strides[dim] < minimum:
            return False
        if dim == 0 and minimum == strides[1]:
            return False
        minimum = strides[dim] * sizes[dim]
    return True


def problem_from_tensors(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: str | int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
) -> ConvProblem:
    """Validate `F.conv2d` arguments and describe the (batched) problem they pose.

    An unbatched (C, H, W) input is described with n = 1; the caller adds and removes that axis.
    """
    if input.dim() not in (3, 4):
        raise RuntimeError(
            f"Expected 3D (unbatched) or 4D (batched) input to conv2d, but got input of size: {list(input.shape)}"
        )
    if weight.dim() != 4:
        raise RuntimeError(
            "Expected 4D weight (out_channels, in_channels/groups, kH, kW) for conv2d, "
            f"but got weight of size: {list(weight.shape)}"
        )
    check_dtype(input.dtype, "input")
    if weight.dtype != input.dtype:
        raise RuntimeError(f"Input type ({input.dtype}) and weight type ({weight.dtype}) should be the same")
    if weight.device != input.device:
        raise RuntimeError(
            f"Expected all tensors to be on the same device, but got weight on {weight.device}, input on {input.device}"
        )
    k = weight.shape[0]
    if bias is not None:
        if bias.dtype != input.dtype:
            raise RuntimeError(f"Input type ({input.dtype}) and bias type ({bias.dtype}) should be the same")
        if bias.device != input.device:
            raise RuntimeError(
                f"Expected all tensors to be on the same device, but got bias on {bias.device}, input on {input.device}"
            )
        if bias.dim() != 1 or bias.shape[0] != k:
            raise RuntimeError(
                f"Given weight of size {list(weight.shape)}, expected bias to be 1-dimensional with {k} elements, "
                f"but got bias of size {list(bias.shape)} instead"
            )
    batched_shape = tuple(input.shape) if input.dim() == 4 else (1, *input.shape)
    n, c, h, w = batched_shape
    groups = operator.index(groups)
    if groups > 0 and weight.shape[1] * groups != c:
        raise RuntimeError(
            f"Given groups={groups}, weight of size {list(weight.shape)}, expected input{list(batched_shape)} "
            f"to have {weight.shape[1] * groups} channels, but got {c} channels instead"
        )
    batched_input = input if input.dim() == 4 else input.unsqueeze(0)
    channels_last = is_channels_last_like(batched_input) or is_channels_last_like(weight)
    return make_problem(
        n=n,
        c=c,
        h=h,
        w=w,
        k=k,
        r=weight.shape[2],
        s=weight.shape[3],
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        dtype=input.dtype,
        layout=CHANNELS_LAST if channels_last else CONTIGUOUS,
        has_bias=bias is not None,
    )


def problem_from_schema(
    input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: Sequence[int],
    padding: Sequence[int], dilation: Sequence[int], groups: int,
) -> ConvProblem:  # fmt: skip
    """`problem_from_tensors` for the custom ops' list arguments, whose padding is four integers
    (top, left, bottom, right): 'same' with an even dilated kernel pads one more at the end."""
    problem = problem_from_tensors(input, weight, bias, tuple(stride), tuple(padding[:2]), tuple(dilation), groups)
    if tuple(padding[2:]) != problem.padding_end:
        problem = dataclasses.replace(problem, padding_end=(padding[2], padding[3]))
    return problem


def conv1d_problem(
    input_2d: torch.Tensor, weight_2d: torch.Tensor, bias: torch.Tensor | None, *geometry: object
) -> ConvProblem:
    """The 2-D problem that serves a conv1d, from its H = 1 views and (stride, padding, dilation,
    groups): a contiguous output whatever the input's strides, as torch's conv1d gives."""
    return _contiguous(problem_from_tensors(input_2d, weight_2d, bias, *geometry))


@functools.lru_cache(maxsize=4096)
def _contiguous(problem: ConvProblem) -> ConvProblem:
    return dataclasses.replace(problem, layout=CONTIGUOUS)


def dgrad_as_conv1x1(problem: ConvProblem, layout: str) -> ConvProblem:
    """The forward problem whose output is a stride-1 1x1 convolution's input gradient: dY (K
    channels, P x Q = H x W) convolved with the transposed weight (C filters of K channels)."""
    return make_problem(n=problem.n, c=problem.k, h=problem.p, w=problem.q, k=problem.c, r=1, s=1,
                        dtype=problem.dtype, layout=layout)  # fmt: skip


def dilated_reach(problem: ConvProblem) -> IntPair:
    """How far the dilated kernel reaches past its first tap, dil*(k-1), in height and width."""
    return problem.dilation[0] * (problem.r - 1), problem.dilation[1] * (problem.s - 1)


def dgrad_as_depthwise(problem: ConvProblem, layout: str) -> ConvProblem:
    """The forward problem whose output is a stride-1, multiplier-1 depthwise convolution's input
    gradient: dY convolved with the spatially flipped weight, padded dil*(k-1) - pad on each side
    (of every axis: a 3-D problem's depth too)."""
    reach = dilated_reach(problem)
    depth = problem.depth
    if depth is not None:
        depth_reach = depth.dilation * (depth.kernel - 1)
        depth = dataclasses.replace(depth, size=depth.output_size, padding=depth_reach - depth.padding,
                                    padding_end=depth_reach - depth.padding_end)  # fmt: skip
    return dataclasses.replace(
        problem,
        depth=depth,
        h=problem.p,
        w=problem.q,
        padding=(reach[0] - problem.padding[0], reach[1] - problem.padding[1]),
        padding_end=(reach[0] - problem.padding_end[0], reach[1] - problem.padding_end[1]),
        layout=layout,
        has_bias=False,
    )
