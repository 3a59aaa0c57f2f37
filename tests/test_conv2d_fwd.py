"""Forward convolution against torch's float64 conv: every argument, dtype, layout and masking edge."""

import os

import pytest
import torch
import torch.nn.functional as F
import triton
from conv_reference import assert_conv2d_close, random_conv_inputs, reference_conv2d
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tritonconv
from tritonconv.ops import common as launch_common
from tritonconv.plan.dispatch import Plan, applicable_variants
from tritonconv.problem.arithmetic import problem_from_tensors
from tritonconv.problem.config import KernelConfig, heuristic_config
from tritonconv.problem.runtime import check_device, new_output, supports_fp64_dot
from tritonconv.routes import calls as fwd_module

# (name, n, c, h, w, k, r, s, stride, padding, dilation, groups, bias): odd sizes on purpose, so
# every tile has a ragged edge in M, N and the reduction.
SHAPES = [
    ("1x1", 2, 8, 5, 7, 16, 1, 1, 1, 0, 1, 1, True),
    ("1x1 stride 2", 2, 8, 9, 9, 12, 1, 1, 2, 0, 1, 1, False),
    ("3x3 pad 1", 2, 5, 7, 6, 9, 3, 3, 1, 1, 1, 1, True),
    ("stem 7x7 s2 C=3", 1, 3, 17, 15, 8, 7, 7, 2, 3, 1, 1, False),
    ("5x5 stride (2,3) pad (2,1)", 1, 4, 11, 13, 6, 5, 5, (2, 3), (2, 1), 1, 1, True),
    ("3x2 kernel pad (0,2)", 2, 3, 6, 8, 5, 3, 2, 1, (0, 2), 1, 1, True),
    ("dilation 2", 1, 4, 12, 10, 6, 3, 3, 1, 2, 2, 1, True),
    ("dilation (2,3) stride 2", 1, 3, 15, 17, 4, 3, 3, 2, 1, (2, 3), 1, False),
    ("same, odd kernel", 2, 4, 7, 9, 5, 3, 5, 1, "same", 1, 1, True),
    ("same, even kernel", 1, 3, 8, 7, 4, 4, 2, 1, "same", 1, 1, True),
    ("same, even dilated kernel", 1, 3, 9, 8, 4, 2, 4, 1, "same", (3, 2), 1, False),
    ("valid", 2, 4, 6, 6, 5, 3, 3, 1, "valid", 1, 1, True),
    ("groups 2", 2, 8, 6, 7, 6, 3, 3, 1, 1, 1, 2, True),
    ("groups 4 stride 2", 1, 8, 9, 9, 12, 3, 3, 2, 1, 1, 4, True),
    ("depthwise", 2, 6, 7, 7, 6, 3, 3, 1, 1, 1, 6, True),
    ("depthwise multiplier 2", 1, 4, 8, 8, 8, 5, 5, 1, 2, 1, 4, False),
    ("C=1", 2, 1, 9, 9, 4, 3, 3, 1, 0, 1, 1, True),
    ("K=1", 1, 5, 6, 6, 1, 3, 3, 1, 1, 1, 1, True),
    ("kernel covers input", 2, 3, 5, 4, 7, 5, 4, 1, 0, 1, 1, True),
    ("padding wider than kernel", 1, 2, 3, 3, 3, 2, 2, 1, 3, 1, 1, True),
    ("long reduction, K not a power of 2", 1, 40, 5, 5, 33, 3, 3, 1, 1, 1, 1, True),
    ("several M tiles", 3, 3, 12, 13, 20, 3, 3, 1, 1, 1, 1, True),
    ("1x1 on 1x1 pixels", 4, 7, 1, 1, 5, 1, 1, 1, 0, 1, 1, True),
]
SHAPE_IDS = [shape[0] for shape in SHAPES]
FP64 = pytest.param(
    torch.float64, marks=pytest.mark.skipif(not supports_fp64_dot(), reason="Triton < 3.5 has no fp64 tl.dot")
)
DTYPES = [torch.float32, torch.float16, torch.bfloat16, FP64]


def run_case(shape, dtype, device, channels_last, seed=0):
    _, n, c, h, w, k, r, s, stride, padding, dilation, groups, bias = shape
    x, weight, b = random_conv_inputs(n, c, h, w, k, r, s, groups, bias, dtype, device, channels_last, seed)
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    return tritonconv.conv2d(x, weight, b, **kwargs), (x, weight, b), kwargs


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_matches_torch(shape, dtype, channels_last, device):
    y, args, kwargs = run_case(shape, dtype, device, channels_last)
    assert_conv2d_close(y, *args, **kwargs)


@st.composite
def conv_problems(draw):
    """Small random problems over the whole argument space, always with an output of at least 1x1."""
    groups = draw(st.integers(1, 3))
    r, s = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = draw(st.one_of(st.just("same"), st.just("valid"), st.tuples(st.integers(0, 3), st.integers(0, 3))))
    stride = (1, 1) if padding == "same" else (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    pads = (0, 0) if isinstance(padding, str) else padding
    min_h = max(1, dilation[0] * (r - 1) + 1 - 2 * pads[0])
    min_w = max(1, dilation[1] * (s - 1) + 1 - 2 * pads[1])
    return dict(
        n=draw(st.integers(1, 3)),
        c=groups * draw(st.integers(1, 5)),
        h=draw(st.integers(min_h, min_h + 7)),
        w=draw(st.integers(min_w, min_w + 7)),
        k=groups * draw(st.integers(1, 6)),
        r=r,
        s=s,
        groups=groups,
        bias=draw(st.booleans()),
        dtype=draw(st.sampled_from([torch.float32, torch.float16])),
        channels_last=draw(st.booleans()),
        seed=draw(st.integers(0, 2**16)),
        conv=dict(stride=stride, padding=padding, dilation=dilation, groups=groups),
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=conv_problems())
def test_random_problems_match_torch(case):
    """Through the public API (the variant the rule picks), then through every applicable variant."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    names = ("n", "c", "h", "w", "k", "r", "s", "groups", "bias", "dtype")
    x, weight, b = random_conv_inputs(
        *(case[name] for name in names), device=device, channels_last=case["channels_last"], seed=case["seed"]
    )
    assert_conv2d_close(tritonconv.conv2d(x, weight, b, **case["conv"]), x, weight, b, **case["conv"])
    problem = problem_from_tensors(x, weight, b, **case["conv"])
    for variant in applicable_variants(problem):
        plan = Plan(variant, heuristic_config(problem, variant), "test")
        assert_conv2d_close(fwd_module.conv2d_fwd(x, weight, b, problem, plan), x, weight, b, **case["conv"])


@pytest.mark.parametrize(
    "config",
    [
        KernelConfig(block_m=16, block_n=16, block_k=16, group_m=1),
        KernelConfig(block_m=32, block_n=16, block_k=32, group_m=2),
        KernelConfig(block_m=64, block_n=32, block_k=16, group_m=8),
    ],
    ids=lambda cfg: f"{cfg.block_m}x{cfg.block_n}x{cfg.block_k}g{cfg.group_m}",
)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_tile_configs_cover_ragged_edges(config, channels_last, device):
    """Tiles smaller than the problem in every GEMM dimension, with ragged last tiles and swizzling."""
    x, weight, b = random_conv_inputs(2, 6, 9, 7, 34, 3, 3, 2, True, torch.float16, device, channels_last)
    kwargs = dict(stride=1, padding=1, dilation=1, groups=2)
    problem = problem_from_tensors(x, weight, b, **kwargs)
    y = fwd_module.conv2d_fwd(x, weight, b, problem, Plan("implicit_gemm", config, "test"))
    assert_conv2d_close(y, x, weight, b, **kwargs)


@pytest.mark.parametrize(
    "weight_layout", ["contiguous", "channels_last", "expanded"], ids=["w_nchw", "w_cl", "w_expanded"]
)
@pytest.mark.parametrize(
    "input_view",
    ["sliced", "sliced_channels_last", "permuted", "transposed_hw", "broadcast_rows"],
)
def test_strided_views_read_in_place(input_view, weight_layout, device, monkeypatch):
    """Any strided view works, and no `.contiguous()` copy is made (it would drop channels_last).

    The output strides are checked against torch's inside `assert_conv2d_close`.
    """
    gen = torch.Generator().manual_seed(3)
    base = torch.randn(3, 10, 12, 14, generator=gen).to(device)
    if input_view == "sliced":
        x = base[:, 2:8, 1::2, ::3]
    elif input_view == "sliced_channels_last":
        x = base.to(memory_format=torch.channels_last)[1:, :5, 2:, 1:-1]
    elif input_view == "permuted":
        x = base.permute(0, 2, 1, 3)[:, :6, :7]
    elif input_view == "transposed_hw":
        x = base[:, :6].transpose(2, 3)
    else:
        x = base[:, :6, :1].expand(3, 6, 9, 14)  # stride 0 along H
    c = x.shape[1]
    weight = torch.randn(5, c, 3, 2, generator=gen).to(device)
    if weight_layout == "channels_last":
        weight = weight.to(memory_format=torch.channels_last)
    elif weight_layout == "expanded":
        weight = weight[:1].expand(5, c, 3, 2)
    bias = torch.randn(15, generator=gen).to(device)[::3]  # a strided bias view

    def no_copy(*args, **kwargs):
        raise AssertionError("tritonconv made a contiguous copy of an input")

    kwargs = dict(stride=(1, 2), padding=1)
    monkeypatch.setattr(torch.Tensor, "contiguous", no_copy)
    y = tritonconv.conv2d(x, weight, bias, **kwargs)
    monkeypatch.undo()
    assert_conv2d_close(y, x, weight, bias, **kwargs)


@pytest.mark.parametrize(
    "x_cl, w_cl", [(False, False), (True, False), (False, True), (True, True)], ids=["nchw", "x_cl", "w_cl", "both_cl"]
)
def test_output_memory_format_follows_torch(x_cl, w_cl, device):
    x, weight, bias = random_conv_inputs(2, 4, 6, 5, 3, 3, 3, device=device, channels_last=x_cl)
    if w_cl:
        weight = weight.to(memory_format=torch.channels_last)
    y = tritonconv.conv2d(x, weight, bias, padding=1)
    assert y.is_contiguous(memory_format=torch.channels_last) == (x_cl or w_cl)
    assert y.is_contiguous() == (not (x_cl or w_cl))
    assert_conv2d_close(y, x, weight, bias, padding=1)


@pytest.mark.parametrize("weight_channels_last", [False, True], ids=["w_nchw", "w_cl"])
@pytest.mark.parametrize("padding", [0, 1, "same", "valid"])
def test_unbatched_input(padding, weight_channels_last, device):
    """(C, H, W) in, (K, P, Q) out, with the strides torch gives it (NHWC-like for a channels_last weight)."""
    x, weight, bias = random_conv_inputs(1, 4, 7, 6, 5, 3, 2, device=device)
    x = x[0]
    if weight_channels_last:
        weight = weight.to(memory_format=torch.channels_last)
    y = tritonconv.conv2d(x, weight, bias, padding=padding)
    assert y.dim() == 3
    assert_conv2d_close(y, x, weight, bias, padding=padding)


@pytest.mark.parametrize("channels_last", [False, True])
def test_zero_batch_returns_empty(channels_last, device):
    x, weight, bias = random_conv_inputs(0, 4, 7, 6, 5, 3, 3, device=device, channels_last=channels_last)
    y = tritonconv.conv2d(x, weight, bias, padding=1)
    expected = reference_conv2d(x, weight, bias, padding=1)
    assert y.shape == expected.shape == (0, 5, 7, 6)
    assert y.dtype == x.dtype


def test_batch_split_into_32bit_launches(device, monkeypatch):
    """Problems whose N*P*Q passes 2**31 are launched in batch chunks; shrink the limit to see it."""
    monkeypatch.setattr(launch_common, "INT32_LIMIT", 3 * 20 + 16)
    assert launch_common.batch_chunks(n=7, pixels=20, block_m=16) == [(0, 3), (3, 6), (6, 7)]
    with pytest.raises(RuntimeError, match="61 pixels per image is too large"):
        launch_common.batch_chunks(n=1, pixels=61, block_m=16)
    x, weight, bias = random_conv_inputs(7, 3, 5, 4, 6, 3, 3, device=device)
    problem = problem_from_tensors(x, weight, bias, padding=1)
    plan = Plan("implicit_gemm", KernelConfig(block_m=16, block_n=16, block_k=16), "test")
    y = fwd_module.conv2d_fwd(x, weight, bias, problem, plan)
    assert_conv2d_close(y, x, weight, bias, padding=1)


@pytest.mark.skipif(
    os.environ.get("TRITONCONV_SKIP_BIG_MEMORY") == "1", reason="TRITONCONV_SKIP_BIG_MEMORY=1 (needs 4 GiB)"
)
def test_offsets_beyond_int32(device):
    """An input whose last image starts past element 2**31: 32-bit offsets would wrap and read garbage.

    The storage is 4 GiB of fp16 but only the elements the view covers are ever touched, so this runs
    in the interpreter too. The per-image stride itself fits 32 bits, so only 64-bit products save it.
    """
    n, c, h, w = 3, 2, 5, 6
    image_stride = 2**30 + 7
    storage = torch.empty(image_stride * (n - 1) + c * h * w, dtype=torch.float16, device=device)
    x = storage.as_strided((n, c, h, w), (image_stride, h * w, w, 1))
    gen = torch.Generator().manual_seed(5)
    x.copy_(torch.randn(n, c, h, w, generator=gen).half())
    weight = torch.randn(4, c, 3, 3, generator=gen).half().to(device)
    y = tritonconv.conv2d(x, weight, padding=1)
    assert_conv2d_close(y, x, weight, padding=1)


def test_poisoning_is_active():
    """The NaN fill the tests rely on to catch unwritten elements is really switched on."""
    assert torch.isnan(new_output((2, 3), torch.empty(0))).all()


def test_device_check_names_the_fix():
    class CompiledKernel:
        pass

    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        check_device(torch.empty(1), CompiledKernel())
    with pytest.raises(RuntimeError, match="meta"):
        check_device(torch.empty(1, device="meta"), CompiledKernel())


def test_float64_refused_clearly_where_triton_lacks_it(monkeypatch):
    assert not supports_fp64_dot("3.4.0")
    assert supports_fp64_dot("3.5.1") and supports_fp64_dot("3.10.0+git1234")
    monkeypatch.setattr(triton, "__version__", "3.4.0")
    x, weight, _ = random_conv_inputs(1, 2, 4, 4, 2, 3, 3, bias=False, dtype=torch.float64)
    with pytest.raises(RuntimeError, match=r"float64 convolution needs Triton >= 3.5 .* this is Triton 3.4.0"):
        tritonconv.conv2d(x, weight)


def test_tf32_switch_picks_dot_precision(restore_tf32):
    torch.backends.cudnn.allow_tf32 = True
    assert launch_common.dot_precision(torch.float32) == "tf32"
    assert launch_common.dot_precision(torch.float16) == "ieee"
    torch.backends.cudnn.allow_tf32 = False
    assert launch_common.dot_precision(torch.float32) == "ieee"


def test_agrees_with_functional_conv2d_on_int_and_tuple_args(device):
    """int, 1-tuple and 2-tuple spellings of the same arguments give the same result."""
    x, weight, bias = random_conv_inputs(1, 3, 8, 8, 4, 3, 3, device=device)
    a = tritonconv.conv2d(x, weight, bias, stride=2, padding=1, dilation=1)
    b = tritonconv.conv2d(x, weight, bias, stride=(2,), padding=[1, 1], dilation=(1, 1))
    assert torch.equal(a, b)
    assert a.shape == F.conv2d(x.cpu(), weight.cpu(), bias.cpu(), stride=2, padding=1).shape


def test_inputs_without_channels_behave_as_in_torch():
    """A (2, 0, 8, 8) input with a (16, 0, 3, 3) weight is valid for torch, which returns an empty
    result: so do conv2d and conv1d (with gradients), and a mismatched one raises torch's error."""
    x, weight, bias = torch.randn(2, 0, 8, 8, requires_grad=True), torch.randn(16, 0, 3, 3), torch.randn(16)
    weight.requires_grad_()
    got, want = tritonconv.conv2d(x, weight, bias), F.conv2d(x, weight, bias)
    assert got.shape == want.shape and got.stride() == want.stride() and torch.equal(got, want)
    got.sum().backward()
    assert x.grad.shape == x.shape and weight.grad.shape == weight.shape
    line, line_weight = torch.randn(2, 0, 9), torch.randn(16, 0, 3)
    assert tritonconv.conv1d(line, line_weight, padding=1).shape == F.conv1d(line, line_weight, padding=1).shape
    with pytest.raises(RuntimeError, match=r"expected input\[2, 0, 8, 8\] to have 4 channels"):
        tritonconv.conv2d(x, torch.randn(16, 4, 3, 3))


ZERO_SIZE_CASES = [  # (function, input shape, weight shape, arguments)
    ("conv2d", (0, 3, 8, 8), (4, 3, 3, 3), {}),
    ("conv2d", (2, 3, 0, 8), (4, 3, 1, 1), {}),
    ("conv2d", (2, 0, 8, 8), (4, 0, 3, 3), {"groups": 2}),
    ("conv1d", (0, 3, 8), (4, 3, 3), {}),
    ("conv1d", (2, 3, 0), (4, 3, 1), {}),
    ("conv1d", (2, 0, 9), (4, 0, 3), {}),
    ("conv_transpose2d", (0, 4, 5, 5), (4, 3, 3, 3), {}),
    ("conv_transpose2d", (2, 4, 0, 5), (4, 3, 1, 1), {}),
    ("conv_transpose2d", (2, 0, 5, 5), (0, 3, 3, 3), {}),
    ("conv_transpose1d", (2, 4, 0), (4, 3, 1), {}),
]


@pytest.mark.parametrize("case", ZERO_SIZE_CASES, ids=[f"{c[0]} {c[1]} {c[2]}" for c in ZERO_SIZE_CASES])
def test_zero_size_inputs_behave_as_in_torch(case):
    """The same empty result (shape and strides) or the same error as torch's function."""
    name, input_shape, weight_shape, arguments = case
    x, weight = torch.randn(input_shape), torch.randn(weight_shape)
    outcomes = []
    for function in (getattr(F, name), getattr(tritonconv, name)):
        try:
            y = function(x, weight, **arguments)
            outcomes.append((tuple(y.shape), y.stride()))
        except RuntimeError as error:
            outcomes.append(str(error))
    assert outcomes[1] == outcomes[0]
