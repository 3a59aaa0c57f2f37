"""The specialised forward variants (conv1x1, grouped_tile, depthwise), the dispatch rule and explain."""

import dataclasses

import pytest
import torch
from conv_reference import assert_conv2d_close, random_conv_inputs
from test_conv2d_fwd import FP64, SHAPE_IDS, SHAPES

import tritonconv
from tritonconv.ops import conv1x1, depthwise
from tritonconv.ops.descriptors import tensor_descriptor
from tritonconv.plan import dispatch
from tritonconv.plan.dispatch import GROUPED_TILE_MAX_CHANNELS, Plan, applicable_variants, choose_variant
from tritonconv.problem.arithmetic import problem_from_tensors
from tritonconv.problem.config import KernelConfig, heuristic_config
from tritonconv.routes import calls as fwd_module
from tritonconv.routes import registry

LAYOUTS = pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
DTYPES = pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, FP64], ids=str)


def run_variant(variant, x, weight, bias, config=None, **kwargs):
    problem = problem_from_tensors(x, weight, bias, **kwargs)
    assert variant in applicable_variants(problem)
    plan = Plan(variant, config or heuristic_config(problem, variant), "test")
    return fwd_module.conv2d_fwd(x, weight, bias, problem, plan)


# (n, c, h, w, k, r, s, stride, padding, dilation, groups) -> the variant the rule must name.
RULE_CASES = [
    ((2, 64, 14, 14, 256, 1, 1, 1, 0, 1, 1), "conv1x1"),
    ((2, 256, 14, 14, 512, 1, 1, 2, 0, 1, 1), "conv1x1"),
    ((2, 16, 14, 14, 32, 1, 1, 1, 0, 3, 1), "conv1x1"),  # dilation is moot at 1x1
    ((2, 16, 14, 14, 32, 1, 1, 1, 1, 1, 1), "implicit_gemm"),  # padding makes a border ring
    ((2, 3, 32, 32, 16, 7, 7, 2, 3, 1, 1), "implicit_gemm"),
    ((2, 96, 14, 14, 96, 7, 7, 1, 3, 1, 96), "depthwise"),
    ((2, 32, 14, 14, 64, 3, 3, 2, 1, 1, 32), "depthwise"),  # channel multiplier 2
    ((2, 32, 14, 14, 32, 1, 1, 1, 0, 1, 32), "depthwise"),  # 1x1 depthwise is still depthwise
    ((2, 128, 14, 14, 128, 3, 3, 1, 1, 1, 32), "grouped_tile"),  # ResNeXt 32x4d
    ((2, 1024, 7, 7, 1024, 3, 3, 1, 1, 1, 32), "grouped_tile"),  # 32 channels per group
    ((2, 64, 14, 14, 64, 1, 1, 1, 0, 1, 4), "grouped_tile"),  # grouped pointwise
    ((2, 256, 14, 14, 256, 3, 3, 1, 1, 1, 2), "implicit_gemm"),  # 128 per group fills its own tiles
    ((2, 1, 14, 14, 8, 3, 3, 1, 1, 1, 1), "implicit_gemm"),  # one channel, but not grouped
]


@pytest.mark.parametrize("case, variant", RULE_CASES, ids=[f"{v}-{i}" for i, (_, v) in enumerate(RULE_CASES)])
def test_explain_names_the_variant_the_rule_picks(case, variant):
    n, c, h, w, k, r, s, stride, padding, dilation, groups = case
    x, weight, bias = random_conv_inputs(n, c, h, w, k, r, s, groups)
    info = tritonconv.explain(x, weight, bias, stride=stride, padding=padding, dilation=dilation, groups=groups)
    assert info["variant"] == variant
    assert info["config_source"] == "heuristic"
    assert info["config"] == heuristic_config(info["problem"], variant).as_dict()
    assert {"block_m", "block_n", "block_k", "num_warps", "num_stages"} <= info["config"].keys()
    assert info["flops"] == info["problem"].flops


def test_grouped_tile_threshold_is_the_documented_one():
    base = dict(n=1, h=8, w=8, r=3, s=3, padding=1, groups=2)
    at_limit = tritonconv.make_problem(c=2 * GROUPED_TILE_MAX_CHANNELS, k=2 * GROUPED_TILE_MAX_CHANNELS, **base)
    past_limit = tritonconv.make_problem(c=2 * GROUPED_TILE_MAX_CHANNELS + 2, k=2 * GROUPED_TILE_MAX_CHANNELS, **base)
    assert choose_variant(at_limit) == "grouped_tile"
    assert choose_variant(past_limit) == "implicit_gemm"


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_every_applicable_variant_agrees_with_torch(shape, device):
    """Each table shape through every kernel that can serve it, not only the one the rule picks."""
    _, n, c, h, w, k, r, s, stride, padding, dilation, groups, bias = shape
    x, weight, b = random_conv_inputs(n, c, h, w, k, r, s, groups, bias, torch.float16, device, channels_last=True)
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    for variant in applicable_variants(problem_from_tensors(x, weight, b, **kwargs)):
        assert_conv2d_close(run_variant(variant, x, weight, b, **kwargs), x, weight, b, **kwargs)


def test_explain_agrees_with_what_runs(device, monkeypatch):
    """The launcher that actually runs receives exactly the variant and config explain reports."""
    launched = []
    for key, spec in list(registry.REGISTRY.items()):
        if key[0] != registry.Pass.FWD:
            continue

        def record(*args, _variant=key[1], _prepare=spec.prepare):
            launched.append((_variant, args[5]))
            return _prepare(*args)

        monkeypatch.setitem(registry.REGISTRY, key, dataclasses.replace(spec, prepare=record))
    dispatch.forget_plans()  # calls prepared before the launchers were wrapped would not show
    for case, expected in RULE_CASES:
        _, c, h, w, k, r, s, stride, padding, dilation, groups = case
        x, weight, bias = random_conv_inputs(1, c, min(h, 7), min(w, 7), k, r, s, groups, device=device)
        kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
        info = tritonconv.explain(x, weight, bias, **kwargs)
        launched.clear()
        tritonconv.conv2d(x, weight, bias, **kwargs)
        assert {(v, cfg.as_dict()["block_m"]) for v, cfg in launched} == {(expected, info["config"]["block_m"])}
        assert all(cfg.as_dict() == info["config"] for _, cfg in launched)


# ---- conv1x1 ---------------------------------------------------------------------------------


@DTYPES
@LAYOUTS
@pytest.mark.parametrize("stride", [1, 2, (2, 3)])
def test_conv1x1_strides_layouts_dtypes(stride, channels_last, dtype, device):
    x, weight, bias = random_conv_inputs(2, 24, 9, 11, 40, 1, 1, 1, True, dtype, device, channels_last)
    y = run_variant("conv1x1", x, weight, bias, stride=stride)
    assert_conv2d_close(y, x, weight, bias, stride=stride)


@pytest.mark.parametrize(
    "config",
    [KernelConfig(16, 16, 16, group_m=1), KernelConfig(32, 32, 16, group_m=4), KernelConfig(64, 16, 32)],
    ids=["16x16x16", "32x32x16", "64x16x32"],
)
@LAYOUTS
def test_conv1x1_ragged_tiles(config, channels_last, device):
    """M, K and C all leave a partial last tile; descriptors (when used) must clip them too."""
    x, weight, bias = random_conv_inputs(3, 40, 5, 7, 24, 1, 1, 1, True, torch.float16, device, channels_last)
    assert_conv2d_close(run_variant("conv1x1", x, weight, bias, config), x, weight, bias)


def test_conv1x1_uses_descriptors_only_for_dense_aligned_nhwc(device):
    cl = torch.channels_last
    x, weight, _ = random_conv_inputs(2, 16, 6, 6, 32, 1, 1, 1, False, torch.float16, device)
    y = torch.empty(2, 32, 6, 6, dtype=torch.float16, device=device)
    problem = problem_from_tensors(x.to(memory_format=cl), weight)
    expected = tensor_descriptor() is not None
    assert (conv1x1.gemm_views(x.to(memory_format=cl), weight, y.to(memory_format=cl), problem) is not None) == expected
    assert conv1x1.gemm_views(x, weight, y, problem) is None  # NCHW is a batched GEMM, not one matrix
    strided = problem_from_tensors(x.to(memory_format=cl), weight, stride=2)
    y_half = torch.empty(2, 32, 3, 3, dtype=torch.float16, device=device, memory_format=cl)
    assert conv1x1.gemm_views(x.to(memory_format=cl), weight, y_half, strided) is None
    x_odd, w_odd, _ = random_conv_inputs(2, 6, 6, 6, 32, 1, 1, 1, False, torch.float16, device, True)
    odd = problem_from_tensors(x_odd, w_odd)
    assert conv1x1.gemm_views(x_odd, w_odd, y.to(memory_format=cl), odd) is None  # 12-byte rows: unaligned


@pytest.mark.skipif(tensor_descriptor() is None, reason="this Triton has no host tensor descriptors")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_conv1x1_descriptor_path_agrees_with_torch(dtype, device):
    x, weight, bias = random_conv_inputs(2, 48, 7, 5, 40, 1, 1, 1, True, dtype, device, channels_last=True)
    y = torch.empty(2, 40, 7, 5, dtype=dtype, device=device, memory_format=torch.channels_last)
    assert conv1x1.gemm_views(x, weight, y, problem_from_tensors(x, weight, bias)) is not None
    assert_conv2d_close(run_variant("conv1x1", x, weight, bias, KernelConfig(16, 16, 16)), x, weight, bias)


# ---- grouped_tile ----------------------------------------------------------------------------

# (c, k, r, s, stride, padding, dilation, groups): per-group channel counts from 1 to 32.
GROUPED = [
    (8, 8, 3, 3, 1, 1, 1, 4),
    (12, 18, 3, 3, 2, 1, 1, 6),
    (32, 16, 3, 3, 1, "same", 2, 8),
    (10, 15, 1, 1, 1, 0, 1, 5),
    (64, 64, 3, 3, 1, 1, 1, 2),
    (6, 9, 2, 4, (2, 1), (0, 2), (1, 2), 3),
]


@LAYOUTS
@pytest.mark.parametrize("case", GROUPED, ids=[f"c{c}-k{k}-g{g}-{r}x{s}" for c, k, r, s, *_, g in GROUPED])
def test_grouped_tile_geometry(case, channels_last, device):
    run_grouped(*case, torch.float16, channels_last, device)


@DTYPES
def test_grouped_tile_dtypes(dtype, device):
    run_grouped(*GROUPED[1], dtype, True, device)


def run_grouped(c, k, r, s, stride, padding, dilation, groups, dtype, channels_last, device):
    x, weight, bias = random_conv_inputs(2, c, 6, 7, k, r, s, groups, True, dtype, device, channels_last)
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    assert_conv2d_close(run_variant("grouped_tile", x, weight, bias, **kwargs), x, weight, bias, **kwargs)


@pytest.mark.parametrize("block_g", [1, 2, 4, 8])
def test_grouped_tile_group_blocks_with_ragged_last_block(block_g, device):
    """6 groups in blocks of 4 or 8 leave a partial block of groups that must be masked."""
    x, weight, bias = random_conv_inputs(1, 12, 6, 5, 18, 3, 3, 6, True, torch.float16, device, True)
    config = KernelConfig(block_m=16, block_n=16, block_k=16, block_g=block_g)
    assert_conv2d_close(run_variant("grouped_tile", x, weight, bias, config, padding=1, groups=6), x, weight, bias,
                        padding=1, groups=6)  # fmt: skip


# ---- depthwise -------------------------------------------------------------------------------

# (c, multiplier, r, s, stride, padding, dilation)
DEPTHWISE = [
    (8, 1, 3, 3, 1, 1, 1),
    (6, 2, 3, 3, 2, 1, 1),
    (5, 3, 5, 5, 1, 2, 1),
    (8, 1, 7, 7, 1, 3, 1),
    (4, 1, 3, 3, 1, "same", 2),
    (4, 1, 4, 2, 1, "same", 1),
    (6, 1, 1, 1, 1, 0, 1),
    (3, 2, 3, 5, (2, 3), (0, 2), (2, 1)),
]


def halo_modes():
    modes = [False]
    if depthwise.has_gather():
        modes.append(True)
    return pytest.mark.parametrize("halo_in_registers", modes, ids=[f"halo={m}" for m in modes])


def run_depthwise(c, multiplier, r, s, stride, padding, dilation, dtype, channels_last, halo, device, hw=(6, 7)):
    """One image, and output rows no wider than one column block: the interpreter pays per tap."""
    x, weight, bias = random_conv_inputs(1, c, *hw, c * multiplier, r, s, c, True, dtype, device, channels_last)
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=c)
    problem = problem_from_tensors(x, weight, bias, **kwargs)
    config = KernelConfig(block_m=8, block_n=16, halo_in_registers=halo)
    y = fwd_module.conv2d_fwd(x, weight, bias, problem, Plan("depthwise", config, "test"))
    assert_conv2d_close(y, x, weight, bias, **kwargs)


@halo_modes()
@LAYOUTS
@pytest.mark.parametrize("case", DEPTHWISE, ids=[f"c{c}-m{m}-{r}x{s}-s{st}" for c, m, r, s, st, *_ in DEPTHWISE])
def test_depthwise_geometry(case, channels_last, halo_in_registers, device):
    run_depthwise(*case, torch.float16, channels_last, halo_in_registers, device)


@halo_modes()
@DTYPES
def test_depthwise_dtypes(dtype, halo_in_registers, device):
    run_depthwise(6, 2, 3, 3, 2, 1, 1, dtype, True, halo_in_registers, device)


@halo_modes()
def test_depthwise_large_kernel(halo_in_registers, device):
    """A RepLKNet-style 15x15 kernel (padding 7) on a 5x6 map: most taps of every output fall outside."""
    run_depthwise(16, 1, 15, 15, 1, 7, 1, torch.float16, True, halo_in_registers, device, hw=(5, 6))


def test_depthwise_splits_rows_into_column_and_channel_blocks(device):
    """Wider rows than one column block and more channels than one channel block."""
    x, weight, bias = random_conv_inputs(1, 20, 3, 19, 20, 3, 3, 20, True, torch.float16, device, True)
    problem = problem_from_tensors(x, weight, bias, padding=1, groups=20)
    y = fwd_module.conv2d_fwd(x, weight, bias, problem, Plan("depthwise", KernelConfig(8, 16), "test"))
    assert_conv2d_close(y, x, weight, bias, padding=1, groups=20)


def test_depthwise_halo_width_covers_every_tap():
    problem = tritonconv.make_problem(n=1, c=4, h=9, w=15, k=4, r=3, s=5, stride=2, padding=1, dilation=3, groups=4)
    # 8 outputs at stride 2 span 15 columns, plus (5 - 1) * 3 of kernel reach = 27 -> 32.
    assert depthwise.halo_width(problem, 8) == 32


@pytest.mark.parametrize("channels", [3, 8])
def test_a_depthwise_route_with_few_channels_agrees_with_torch_at_every_candidate(channels, device):
    """Fewer than 16 channels take a channel block of 4 or 8 and more columns (the heuristic and the
    tuning space): every such config, forward and input gradient, against torch in float64."""
    from tritonconv.tuning.space import candidates

    x, weight, bias = random_conv_inputs(1, channels, 3, 40, channels, 3, 3, groups=channels, dtype=torch.float64,
                                         device=device, channels_last=True, seed=12)  # fmt: skip
    problem = problem_from_tensors(x, weight, bias, padding=1, groups=channels)
    configs = {heuristic_config(problem, "depthwise"): None} | dict.fromkeys(candidates(problem, "fwd", "depthwise"))
    assert heuristic_config(problem, "depthwise").block_n == (4 if channels == 3 else 8)
    grad_output = torch.randn(problem.output_shape, dtype=torch.float64, device=device)
    want_dx = torch.nn.grad.conv2d_input(x.shape, weight, grad_output, padding=1, groups=channels)
    for config in configs:
        plan = Plan("depthwise", config, "test")
        y = fwd_module.conv2d_fwd(x, weight, bias, problem, plan)
        assert_conv2d_close(y, x, weight, bias, padding=1, groups=channels)
        dx = fwd_module.conv2d_dgrad(grad_output, weight, problem, True, plan)
        torch.testing.assert_close(dx, want_dx, rtol=1e-9, atol=1e-9, msg=lambda m, c=config: f"dgrad at {c}: {m}")
