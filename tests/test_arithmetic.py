"""Conv arithmetic: output sizes against torch, FLOPs and bytes, the GEMM view, and every refusal."""

import re

import pytest
import torch
import torch.nn.functional as F

import tritonconv
from tritonconv.problem.arithmetic import (
    conv_output_size,
    is_channels_last_like,
    make_problem,
    problem_from_tensors,
    resolve_padding,
    to_pair,
)

# (input shape, weight shape, stride, padding, dilation, groups)
GEOMETRIES = [
    ((2, 3, 224, 224), (64, 3, 7, 7), 2, 3, 1, 1),
    ((1, 4, 9, 10), (6, 4, 3, 3), 1, "same", 1, 1),
    ((1, 4, 9, 10), (6, 4, 4, 2), 1, "same", 1, 1),
    ((1, 4, 9, 10), (6, 4, 2, 4), 1, "same", (3, 2), 1),
    ((1, 4, 9, 10), (6, 4, 3, 3), 1, "valid", 1, 1),
    ((1, 4, 9, 10), (6, 4, 3, 3), (2, 3), (1, 2), (2, 1), 1),
    ((1, 8, 5, 5), (8, 2, 3, 3), 1, 1, 1, 4),
    ((1, 8, 5, 5), (16, 1, 5, 5), 2, 2, 1, 8),
    ((4, 9, 9), (5, 4, 3, 3), 1, 0, 1, 1),
    ((1, 2, 3, 3), (2, 2, 3, 3), 1, 0, 1, 1),
    ((1, 2, 3, 3), (2, 2, 1, 1), 4, 5, 1, 1),
]


@pytest.mark.parametrize("input_shape, weight_shape, stride, padding, dilation, groups", GEOMETRIES)
def test_output_shape_matches_torch(input_shape, weight_shape, stride, padding, dilation, groups):
    x, w = torch.randn(input_shape), torch.randn(weight_shape)
    problem = problem_from_tensors(x, w, None, stride, padding, dilation, groups)
    expected = F.conv2d(x, w, None, stride, padding, dilation, groups).shape
    batched = expected if len(expected) == 4 else (1, *expected)
    assert problem.output_shape == tuple(batched)


def test_same_padding_puts_the_odd_element_at_the_end():
    assert resolve_padding("same", (4, 3), (1, 1), (1, 1)) == ((1, 1), (2, 1))
    assert resolve_padding("same", (2, 4), (1, 1), (3, 2)) == ((1, 3), (2, 3))
    assert resolve_padding("valid", (5, 5), (2, 2), (1, 1)) == ((0, 0), (0, 0))
    assert resolve_padding((1, 2), (3, 3), (2, 2), (1, 1)) == ((1, 2), (1, 2))


def test_output_size_formula():
    # o = floor((i + 2p - d(k-1) - 1) / s) + 1
    assert conv_output_size(224, 7, 2, 3, 3, 1) == 112
    assert conv_output_size(56, 3, 2, 1, 1, 1) == 28
    assert conv_output_size(10, 3, 1, 0, 0, 4) == 2
    assert conv_output_size(7, 2, 1, 0, 1, 1) == 7


def test_to_pair_normalizes_like_torch():
    assert to_pair(3, "stride") == (3, 3)
    assert to_pair((2,), "stride") == (2, 2)
    assert to_pair([1, 4], "stride") == (1, 4)
    with pytest.raises(TypeError, match="stride must be an int"):
        to_pair(1.5, "stride")


def test_resnet50_stem_arithmetic_matches_reference_table():
    """conv1 of ResNet-50 at N=32 in shared/reference/shape_suites.md: 7.55 GFLOP, 61.0 MB (bf16)."""
    problem = make_problem(n=32, c=3, h=224, w=224, k=64, r=7, s=7, stride=2, padding=3, dtype=torch.bfloat16)
    assert (problem.p, problem.q) == (112, 112)
    assert problem.flops == 2 * 32 * 64 * 112 * 112 * 3 * 7 * 7
    assert round(problem.flops / 1e9, 2) == 7.55
    assert round(problem.min_bytes / 1e6, 1) == 61.0
    assert (problem.gemm_m, problem.gemm_n, problem.gemm_k) == (32 * 112 * 112, 64, 3 * 7 * 7)
    assert round(problem.arithmetic_intensity) == 124


def test_grouped_gemm_view_is_per_group():
    problem = make_problem(n=32, c=128, h=56, w=56, k=128, r=3, s=3, padding=1, groups=32, dtype=torch.bfloat16)
    assert (problem.gemm_m, problem.gemm_n, problem.gemm_k) == (32 * 56 * 56, 4, 4 * 3 * 3)
    assert round(problem.flops / 1e9, 2) == 0.92
    assert round(problem.min_bytes / 1e6, 1) == 51.4


def test_bias_counts_in_min_bytes():
    without = make_problem(n=1, c=4, h=5, w=5, k=6, r=3, s=3, dtype=torch.float32)
    with_bias = make_problem(n=1, c=4, h=5, w=5, k=6, r=3, s=3, dtype=torch.float32, has_bias=True)
    assert with_bias.min_bytes - without.min_bytes == 6 * 4


CL = torch.channels_last
VIEWS = {
    "nchw": torch.randn(2, 3, 4, 5),
    "channels_last": torch.randn(2, 3, 4, 5).to(memory_format=CL),
    "channels_last sliced": torch.randn(2, 3, 4, 5).to(memory_format=CL)[:, :2, 1:, 1:],
    "channels_last stepped in W": torch.randn(2, 3, 4, 5).to(memory_format=CL)[:, :2, 1:, ::2],
    "C=1 contiguous": torch.randn(2, 1, 4, 5),
    "1x1 pixels contiguous": torch.randn(2, 3, 1, 1),
    "1x1 pixels channels_last": torch.randn(2, 3, 1, 1).to(memory_format=CL),
    "permuted NHCW": torch.randn(2, 4, 3, 5).permute(0, 2, 1, 3),
}


@pytest.mark.parametrize("view", VIEWS.values(), ids=VIEWS.keys())
def test_channels_last_detection_follows_torch(view):
    """Allocating by our rule gives exactly the strides torch's conv output has (1x1 pixels included)."""
    expected = F.conv2d(view, torch.randn(4, view.shape[1], 1, 1))
    memory_format = CL if is_channels_last_like(view) else torch.contiguous_format
    assert torch.empty(expected.shape, memory_format=memory_format).stride() == expected.stride()


X = torch.randn(2, 4, 8, 8)
W = torch.randn(6, 4, 3, 3)

# (id, call arguments, exception type, message regex); torch refuses each of these as well.
INVALID = [
    ("input rank 5", (torch.randn(1, 2, 4, 8, 8), W), {}, RuntimeError, r"Expected 3D \(unbatched\) or 4D"),
    ("input rank 2", (torch.randn(4, 8), W), {}, RuntimeError, r"but got input of size: \[4, 8\]"),
    ("weight rank 3", (X, torch.randn(6, 4, 3)), {}, RuntimeError, r"Expected 4D weight .* size: \[6, 4, 3\]"),
    ("channels != weight*groups", (X, torch.randn(6, 3, 3, 3)), {}, RuntimeError, r"to have 3 channels, but got 4"),
    (
        "C % groups",
        (torch.randn(2, 5, 8, 8), torch.randn(6, 1, 3, 3)),
        {"groups": 2},
        RuntimeError,
        r"Given groups=2, weight of size \[6, 1, 3, 3\], expected input\[2, 5, 8, 8\] to have 2 channels",
    ),
    (
        "K % groups",
        (X, torch.randn(5, 2, 3, 3)),
        {"groups": 2},
        RuntimeError,
        r"expected weight to be divisible by 2 at dimension 0, but got weight of size \[5, 2, 3, 3\]",
    ),
    ("K == 0", (X, torch.randn(0, 4, 3, 3)), {}, RuntimeError, r"expected weight to be at least 1 at dimension 0"),
    ("groups 0", (X, W), {"groups": 0}, RuntimeError, r"non-positive groups is not supported"),
    ("groups -1", (X, W), {"groups": -1}, RuntimeError, r"non-positive groups is not supported"),
    ("stride 0", (X, W), {"stride": 0}, RuntimeError, r"non-positive stride is not supported"),
    ("stride (1, -2)", (X, W), {"stride": (1, -2)}, RuntimeError, r"non-positive stride is not supported"),
    ("dilation 0", (X, W), {"dilation": 0}, RuntimeError, r"non-positive dilation is not supported"),
    ("padding -1", (X, W), {"padding": -1}, RuntimeError, r"negative padding is not supported"),
    ("stride of 3 values", (X, W), {"stride": (1, 1, 1)}, RuntimeError, r"a list of 2 values .* stride=\[1, 1, 1\]"),
    ("padding of 4 values", (X, W), {"padding": (1, 1, 1, 1)}, RuntimeError, r"padding=\[1, 1, 1, 1\]"),
    ("float stride", (X, W), {"stride": 1.5}, TypeError, r"stride must be an int"),
    ("unknown padding string", (X, W), {"padding": "full"}, RuntimeError, r"Invalid padding string: 'full'"),
    ("same with stride 2", (X, W), {"stride": 2, "padding": "same"}, RuntimeError, r"'same' is not supported for str"),
    (
        "output smaller than 1",
        (torch.randn(1, 4, 2, 2), W),
        {},
        RuntimeError,
        r"padded input size per channel: \(2 x 2\)\. Kernel size: \(3 x 3\)",
    ),
    (
        "dilated kernel too large",
        (torch.randn(1, 4, 5, 5), W),
        {"dilation": 3},
        RuntimeError,
        r"Kernel size: \(7 x 7\)",
    ),
    ("H == 0", (torch.randn(1, 4, 0, 8), W), {}, RuntimeError, r"padded input size per channel: \(0 x 8\)"),
    (
        "weight dtype",
        (X, W.double()),
        {},
        RuntimeError,
        r"Input type \(torch.float32\) and weight type \(torch.float64",
    ),
    (
        "bias dtype",
        (X, W, torch.randn(6).double()),
        {},
        RuntimeError,
        r"Input type \(torch.float32\) and bias type \(torch.float64\)",
    ),
    ("bias length", (X, W, torch.randn(5)), {}, RuntimeError, r"bias to be 1-dimensional with 6 elements.*\[5\]"),
    ("bias rank", (X, W, torch.randn(6, 1)), {}, RuntimeError, r"but got bias of size \[6, 1\]"),
]


@pytest.mark.parametrize("args, kwargs, error, message", [case[1:] for case in INVALID], ids=[c[0] for c in INVALID])
def test_refuses_what_torch_refuses(args, kwargs, error, message):
    with pytest.raises(error, match=message):
        tritonconv.conv2d(*args, **kwargs)
    with pytest.raises((RuntimeError, TypeError, ValueError)):
        F.conv2d(*args, **kwargs)


@pytest.mark.parametrize(
    "dtype", [torch.int64, torch.int32, torch.bool, torch.complex64, torch.uint8], ids=lambda d: str(d)
)
def test_refuses_non_floating_dtypes(dtype):
    """torch's CPU conv accepts some of these, CUDA convs do not; the kernels are floating point only."""
    x, w = X.to(dtype), W.to(dtype)
    with pytest.raises(RuntimeError, match=re.escape(f"got input of dtype {dtype}")):
        tritonconv.conv2d(x, w)


def test_refuses_mixed_devices():
    with pytest.raises(RuntimeError, match="Expected all tensors to be on the same device"):
        tritonconv.conv2d(X, W.to("meta"))
    with pytest.raises(RuntimeError, match="got bias on meta"):
        tritonconv.conv2d(X, W, torch.empty(6, device="meta"))


def test_make_problem_refuses_bad_sizes():
    with pytest.raises(RuntimeError, match="positive number of channels divisible by 3"):
        make_problem(n=1, c=4, h=5, w=5, k=6, r=3, s=3, groups=3)
    with pytest.raises(RuntimeError, match="kernel of at least 1x1"):
        make_problem(n=1, c=4, h=5, w=5, k=6, r=0, s=3)
    with pytest.raises(ValueError, match="layout must be"):
        make_problem(n=1, c=4, h=5, w=5, k=6, r=3, s=3, layout="nhwc")
