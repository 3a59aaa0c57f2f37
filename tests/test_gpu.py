"""GPU-only checks: compiled kernels (not the interpreter) on real-network-sized layers.

Run on a GPU machine with `PYTHONPATH=. python3 -m pytest -m gpu`. Here bf16 goes through the tensor
cores' own bf16 path, fp32 through TF32 or IEEE as torch's switch says, and fp64 through Triton's
fp64 dot.
"""

import copy
import dataclasses

import pytest
import torch
from conv_reference import assert_conv2d_close, assert_grads_close, random_conv_inputs
from test_conv2d_fwd import SHAPE_IDS, SHAPES, run_case

import tritonconv
from tritonconv.ops import depthwise
from tritonconv.plan.dispatch import Plan, applicable_variants
from tritonconv.problem.arithmetic import problem_from_tensors
from tritonconv.problem.config import heuristic_config
from tritonconv.problem.runtime import supports_fp64_dot
from tritonconv.routes.calls import conv2d_fwd

pytestmark = pytest.mark.gpu

# (name, n, c, h, w, k, r, s, stride, padding, dilation, groups, bias): ResNet-50, ResNeXt, MobileNet
# and ConvNeXt layer classes at batch 4 (enough tiles to fill the GPU, small enough for a float64 check).
LAYERS = [
    ("resnet stem 7x7 s2", 4, 3, 112, 112, 64, 7, 7, 2, 3, 1, 1, False),
    ("resnet 3x3", 4, 64, 56, 56, 64, 3, 3, 1, 1, 1, 1, False),
    ("resnet 1x1", 4, 256, 28, 28, 64, 1, 1, 1, 0, 1, 1, True),
    ("resnet 1x1 s2", 4, 256, 28, 28, 512, 1, 1, 2, 0, 1, 1, False),
    ("resnet 3x3 @7", 4, 512, 7, 7, 512, 3, 3, 1, 1, 1, 1, True),
    ("resnext grouped 3x3", 4, 128, 28, 28, 128, 3, 3, 1, 1, 1, 32, False),
    ("convnext depthwise 7x7", 4, 96, 28, 28, 96, 7, 7, 1, 3, 1, 96, True),
    ("mobilenet depthwise 3x3 s2", 4, 96, 56, 56, 96, 3, 3, 2, 1, 1, 96, True),
    ("same 4x4 dilated", 2, 32, 30, 31, 48, 4, 4, 1, "same", 2, 1, True),
]
PRECISIONS = {
    "fp16": (torch.float16, True),
    "bf16": (torch.bfloat16, True),
    "tf32": (torch.float32, True),
    "fp32_ieee": (torch.float32, False),
}
if supports_fp64_dot():
    PRECISIONS["fp64"] = (torch.float64, False)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("precision", PRECISIONS, ids=PRECISIONS.keys())
@pytest.mark.parametrize("layer", LAYERS, ids=[layer[0] for layer in LAYERS])
def test_layers_match_torch(layer, precision, channels_last, device, restore_tf32):
    dtype, allow_tf32 = PRECISIONS[precision]
    torch.backends.cudnn.allow_tf32 = allow_tf32
    y, args, kwargs = run_case(layer, dtype, device, channels_last)
    assert_conv2d_close(y, *args, **kwargs)


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_edge_shapes_in_bf16(shape, device):
    """The interpreter upcasts bf16 before tl.dot; this is the real bf16 tensor-core path."""
    y, args, kwargs = run_case(shape, torch.bfloat16, device, channels_last=True)
    assert_conv2d_close(y, *args, **kwargs)


def test_output_beyond_int32_elements(device):
    """An output of more than 2**31 elements: every one written (poisoned buffer), none misplaced."""
    x, weight, _ = random_conv_inputs(1, 8, 1024, 1025, 2048, 1, 1, bias=False, dtype=torch.float16, device=device)
    y = tritonconv.conv2d(x, weight)
    assert y.numel() > 2**31
    expected = torch.nn.functional.conv2d(x.float(), weight.float())
    assert not torch.isnan(y).any()
    assert ((y.float() - expected).abs() <= 1e-2 * (1 + expected.abs())).all()


def test_3d_activations_beyond_int32_elements_in_every_pass(device):
    """A video activation of more than 2**31 elements (33 clips of 32 x 256 x 512 with 16 channels,
    bf16, channels_last_3d, 4.4 GB each): the forward, dX and dW against torch's (cuDNN's) within bf16
    rounding, every output element written. The flat voxel indices themselves pass 2**31 here."""
    generator = torch.Generator(device=device).manual_seed(0)
    shape = (33, 16, 32, 256, 512)
    x = torch.randn(shape, device=device, dtype=torch.bfloat16, generator=generator)
    x = x.to(memory_format=torch.channels_last_3d).requires_grad_()
    weight = 0.2 * torch.randn(16, 16, 3, 1, 1, device=device, dtype=torch.bfloat16, generator=generator)
    weight = weight.to(memory_format=torch.channels_last_3d).requires_grad_()
    assert x.numel() > 2**31
    y = tritonconv.conv3d(x, weight, padding=(1, 0, 0))
    grad_output = torch.randn_like(y)
    grad_x, grad_w = torch.autograd.grad(y, (x, weight), grad_output)
    with torch.no_grad():
        want = torch.nn.functional.conv3d(x, weight, padding=(1, 0, 0))
    want_x, want_w = torch.autograd.grad(torch.nn.functional.conv3d(x, weight, padding=(1, 0, 0)), (x, weight),
                                         grad_output)  # fmt: skip
    for got, expected in ((y, want), (grad_x, want_x)):
        assert not torch.isnan(got).any()
        assert ((got.float() - expected.float()).abs() <= 2e-2 * (1 + expected.float().abs())).all()
    torch.testing.assert_close(grad_w.float(), want_w.float(), rtol=2e-2, atol=2e-2 * want_w.float().abs().max().item())


LARGE_DEPTHWISE = ("replknet depthwise 31x31", 2, 32, 28, 28, 32, 31, 31, 1, 15, 1, 32, False)


@pytest.mark.parametrize("layer", [*LAYERS, LARGE_DEPTHWISE], ids=[layer[0] for layer in [*LAYERS, LARGE_DEPTHWISE]])
def test_every_applicable_variant_in_bf16(layer, device):
    """Compiled, each kernel that can serve a layer agrees with torch, not only the one dispatch picks."""
    _, n, c, h, w, k, r, s, stride, padding, dilation, groups, bias = layer
    x, weight, b = random_conv_inputs(n, c, h, w, k, r, s, groups, bias, torch.bfloat16, device, channels_last=True)
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    problem = problem_from_tensors(x, weight, b, **kwargs)
    plans = [Plan(v, heuristic_config(problem, v), "test") for v in applicable_variants(problem)]
    if "depthwise" in applicable_variants(problem) and depthwise.has_gather():
        halo = dataclasses.replace(heuristic_config(problem, "depthwise"), halo_in_registers=True)
        plans.append(Plan("depthwise", halo, "test"))
    for plan in plans:
        assert_conv2d_close(conv2d_fwd(x, weight, b, problem, plan), x, weight, b, **kwargs)


@pytest.mark.parametrize("layer", LAYERS, ids=[layer[0] for layer in LAYERS])
def test_gradients_in_bf16(layer, device):
    """dgrad, wgrad and bias grad compiled, bf16 channels_last, against torch float64."""
    _, n, c, h, w, k, r, s, stride, padding, dilation, groups, bias = layer
    x, weight, b = random_conv_inputs(n, c, h, w, k, r, s, groups, bias, torch.bfloat16, device, channels_last=True)
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    leaves = [None if t is None else t.clone().requires_grad_() for t in (x, weight, b)]
    y = tritonconv.conv2d(*leaves, **kwargs)
    grad_output = torch.randn_like(y)
    y.backward(grad_output)
    grads = [None if t is None else t.grad for t in leaves]
    assert_grads_close(grads, x, weight, b, grad_output, **kwargs)


def test_backward_is_bitwise_reproducible(device):
    """Two backward runs of a ResNet-50 layer give bitwise equal gradients (no float atomics)."""
    x, weight, b = random_conv_inputs(8, 64, 56, 56, 64, 3, 3, 1, True, torch.bfloat16, device, channels_last=True)
    runs = []
    for _ in range(2):
        leaves = [t.clone().requires_grad_() for t in (x, weight, b)]
        tritonconv.conv2d(*leaves, padding=1).float().square().mean().backward()
        runs.append([t.grad for t in leaves])
    assert all(torch.equal(a, b) for a, b in zip(*runs, strict=True))


@pytest.mark.parametrize("compile_mode", [None, "inductor"], ids=["eager", "compiled"])
def test_patched_model_in_bf16_channels_last(compile_mode, device):
    """A small ResNet-style model, patched, against the same model on cuDNN: outputs and gradients,
    eager and under torch.compile with Inductor (the custom op in a real compiled graph)."""
    from torch import nn

    torch.manual_seed(0)
    reference = nn.Sequential(
        nn.Conv2d(3, 32, 7, stride=2, padding=3), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1, groups=32),
        nn.Conv2d(32, 64, 1), nn.ReLU(), nn.Conv2d(64, 64, 3, stride=2, padding=1, groups=4),
    ).to(device, torch.bfloat16, memory_format=torch.channels_last)  # fmt: skip
    model = copy.deepcopy(reference)
    assert len(tritonconv.patch(model).patched) == 4
    x = torch.randn(8, 3, 64, 64, device=device, dtype=torch.bfloat16).to(memory_format=torch.channels_last)
    run = model if compile_mode is None else torch.compile(model, backend=compile_mode)
    tritonconv.reset_stats()
    got, expected = run(x), reference(x)
    assert got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got.float(), expected.float(), rtol=5e-2, atol=5e-2)
    got.float().square().mean().backward()
    expected.float().square().mean().backward()
    for ref, param in zip(reference.parameters(), model.parameters(), strict=True):
        scale = ref.grad.float().abs().max().item()
        assert (param.grad.float() - ref.grad.float()).abs().max().item() <= 5e-2 * scale
    if compile_mode is None:
        assert tritonconv.stats()["conv2d"] == {"tritonconv": 4, "torch": 0, "fallbacks": {}}


def test_suite_bench_on_the_gpu_times_every_provider():
    """`tritonconv bench`'s measurement on a GPU: do_bench and CUDA-graph times for tritonconv, cuDNN
    and Inductor, results within tolerance, and a report row with finite roofline figures."""
    from tritonconv.problem.suites import load_suite
    from tritonconv.tools.bench import report
    from tritonconv.tools.bench.run import measure

    layer = load_suite("resnet50", batch=8)[2]
    peaks = {torch.bfloat16: report.measure_peaks(torch.bfloat16)}
    assert peaks[torch.bfloat16].tflops > 50 and peaks[torch.bfloat16].gbps > 500
    measurements = [measure(layer, "fwd", ("torch", "inductor"))] + [measure(layer, p) for p in ("dgrad", "wgrad")]
    assert all(m.correct for m in measurements)
    assert set(measurements[0].times_ms) == {
        "triton",
        "torch",
        "inductor",
        "triton_graph",
        "torch_graph",
        "inductor_graph",
    }
    table = report.rows("resnet50", measurements, peaks)
    assert (table[["speedup", "graph_speedup", "roofline_pct"]] > 0).all().all()
    assert table["device"].str.startswith("nvidia").all()


@pytest.mark.parametrize("with_residual", [False, True], ids=["no residual", "residual"])
@pytest.mark.parametrize("activation", ["relu", "silu", "gelu_tanh"])
@pytest.mark.parametrize("layer", LAYERS[:8], ids=[layer[0] for layer in LAYERS[:8]])
def test_fused_epilogue_in_bf16_channels_last(layer, activation, with_residual, device):
    """Every variant's compiled epilogue (the 1x1 one through its tensor-descriptor store when there
    is no residual), values and gradients, against torch's unfused ops in float32."""
    from tritonconv.ops.epilogue import torch_activation

    _, n, c, h, w, k, r, s, stride, padding, dilation, groups, has_bias = layer
    x, weight, bias = random_conv_inputs(n, c, h, w, k, r, s, groups, has_bias, torch.bfloat16, device, True)
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    x, weight = x.requires_grad_(), weight.requires_grad_()
    output_shape = tritonconv.problem_from_tensors(x, weight, bias, **kwargs).output_shape
    residual = None
    if with_residual:
        residual = torch.randn(output_shape, device=device, dtype=torch.bfloat16).to(memory_format=torch.channels_last)
    got = tritonconv.conv2d(x, weight, bias, **kwargs, activation=activation, residual=residual)
    wide = [t.detach().float().requires_grad_() for t in (x, weight)]
    expected = torch.nn.functional.conv2d(*wide, None if bias is None else bias.float(), **kwargs)
    expected = torch_activation(expected if residual is None else expected + residual.float(), activation)
    scale = expected.abs().max().item()
    assert (got.float() - expected).abs().max().item() <= 2e-2 * scale
    grad = torch.randn_like(expected)
    ours = torch.autograd.grad(got, (x, weight), grad.bfloat16())
    theirs = torch.autograd.grad(expected, wide, grad)
    for mine, reference in zip(ours, theirs, strict=True):
        assert (mine.float() - reference).abs().max().item() <= 3e-2 * reference.abs().max().item()


def test_the_compile_only_register_counts_match_the_drivers():
    """What the compile gate reads from a cubin is what the driver reports for the loaded kernel."""
    from tritonconv.tools import kernel_gate

    items = kernel_gate.gate_items(("smoke",), (torch.bfloat16,))[:6]
    table = kernel_gate.against_driver(items, None)
    assert len(table) >= 6
    assert (table["driver_registers"] == table["cubin_registers"]).all(), table
    assert ((table["driver_spills"] > 0) == (table["cubin_spill_bytes"] > 0)).all(), table
