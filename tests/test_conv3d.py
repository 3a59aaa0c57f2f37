"""3-D convolution (issue 18): `tritonconv.conv3d` and `Conv3d` against torch's conv3d in float64,
forward and every gradient, over every argument, both layouts, ragged tiles and the dtypes; torch's
errors; a video model and a 3-D U-Net patched; tuning, explain and the suite."""

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from conv_reference import assert_conv2d_close, assert_grads_close

import tritonconv
from tritonconv.ops.epilogue import NO_EPILOGUE
from tritonconv.plan import prepared
from tritonconv.problem.arithmetic import make_problem_3d
from tritonconv.routes import registry
from tritonconv.routes.registry import Pass, Plan, Variant

# (n, c, d, h, w, k, t, r, s, arguments): what each case pins down
CASES = {
    "3x3x3 pad 1": (2, 4, 5, 6, 7, 8, (3, 3, 3), dict(padding=1)),
    "strides, rectangular padding and dilation per axis, groups": (
        1,
        6,
        5,
        7,
        6,
        4,
        (3, 2, 3),
        dict(stride=(2, 1, 2), padding=(1, 0, 1), dilation=(1, 2, 1), groups=2),
    ),
    "(2+1)D temporal 3x1x1, stride 2 in time": (2, 8, 6, 4, 4, 8, (3, 1, 1), dict(stride=(2, 1, 1), padding=(1, 0, 0))),
    "spatial 1x3x3 stride 2 (R(2+1)D, X3D)": (1, 4, 3, 9, 8, 8, (1, 3, 3), dict(stride=(1, 2, 2), padding=(0, 1, 1))),
    "1x1x1 projection": (2, 8, 3, 4, 5, 16, (1, 1, 1), {}),
    "depthwise 3x3x3 (X3D)": (1, 8, 4, 5, 5, 8, (3, 3, 3), dict(padding=1, groups=8)),
    "'same' with an even kernel": (1, 4, 5, 6, 5, 4, (2, 4, 2), dict(padding="same", dilation=(1, 1, 2))),
    "'valid', kernel as large as the input": (1, 3, 3, 4, 4, 5, (3, 4, 4), dict(padding="valid")),
}


def _inputs(n, c, d, h, w, k, kernel, groups=1, dtype=torch.float32, channels_last=False, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, d, h, w, generator=generator).to(dtype)
    weight = torch.randn(k, c // groups, *kernel, generator=generator).to(dtype)
    bias = torch.randn(k, generator=generator).to(dtype)
    if channels_last:
        x, weight = (t.to(memory_format=torch.channels_last_3d) for t in (x, weight))
    return x, weight, bias


@pytest.mark.parametrize("channels_last", [False, True], ids=["NCDHW", "channels_last_3d"])
@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_conv3d_and_its_gradients_match_torch(case, channels_last):
    n, c, d, h, w, k, kernel, arguments = CASES[case]
    x, weight, bias = _inputs(n, c, d, h, w, k, kernel, arguments.get("groups", 1), channels_last=channels_last)
    leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
    y = tritonconv.conv3d(*leaves, **arguments)
    assert_conv2d_close(y, x, weight, bias, **arguments)  # layout (torch's memory format) included
    grad_output = torch.randn_like(y)
    y.backward(grad_output)
    assert_grads_close([t.grad for t in leaves], x, weight, bias, grad_output, **arguments)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64], ids=["fp16", "bf16", "fp64"])
def test_conv3d_in_every_dtype(dtype):
    x, weight, bias = _inputs(1, 8, 4, 5, 6, 8, (3, 3, 3), dtype=dtype, channels_last=dtype == torch.bfloat16)
    leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
    y = tritonconv.conv3d(*leaves, padding=1)
    assert_conv2d_close(y, x, weight, bias, padding=1)
    grad_output = torch.randn_like(y)
    y.backward(grad_output)
    assert_grads_close([t.grad for t in leaves], x, weight, bias, grad_output, padding=1)


@pytest.mark.parametrize("split_k", [1, 3], ids=["direct", "split"])
@pytest.mark.parametrize("pass_name", list(Pass))
def test_ragged_tiles_in_every_pass(pass_name, split_k):
    """16-wide tiles over sizes that are not multiples of 16 in M, N and the reduction; dW both
    written directly and through the ordered sum of 3 splits, the same bit for bit twice."""
    x, weight, _ = _inputs(2, 5, 3, 5, 7, 11, (3, 2, 3), seed=1)
    problem = make_problem_3d(n=2, c=5, d=3, h=5, w=7, k=11, t=3, r=2, s=3, padding=(1, 1, 1))
    config = dataclasses.replace(registry.spec(pass_name, Variant.IMPLICIT_GEMM_3D).heuristic(problem), block_m=16,
                                 block_n=16, block_k=16, split_k=split_k)  # fmt: skip
    call = prepared.PreparedConv(problem, x, weight, NO_EPILOGUE,
                                 plans={pass_name: Plan(Variant.IMPLICIT_GEMM_3D, config, "test")})  # fmt: skip
    grad_output = torch.randn(problem.output_shape)
    x64, w64 = x.double().requires_grad_(), weight.double().requires_grad_()
    y64 = F.conv3d(x64, w64, padding=1)
    y64.backward(grad_output.double())
    got, want = {
        Pass.FWD: (lambda: call.forward(x, weight, None), y64),
        Pass.DGRAD: (lambda: call.input_grad(grad_output, weight), x64.grad),
        Pass.WGRAD: (lambda: call.weight_grad(x, grad_output), w64.grad),
    }[pass_name]
    first = got()
    torch.testing.assert_close(first.double(), want.detach(), rtol=1e-5, atol=1e-4)
    assert torch.equal(got(), first), "not bitwise reproducible"


def test_unbatched_inputs_and_strided_views():
    x, weight, bias = _inputs(2, 4, 5, 6, 7, 4, (3, 3, 3))
    assert_conv2d_close(tritonconv.conv3d(x[0], weight, bias, padding=1), x[0], weight, bias, padding=1)
    view = x[:, :, 1:, ::2]  # read in place through its strides
    assert_conv2d_close(tritonconv.conv3d(view, weight, bias), view, weight, bias)


ERRORS = {
    "4-D weight": (torch.randn(1, 2, 4, 4, 4), torch.randn(2, 2, 3, 3), {}),
    "channels mismatch": (torch.randn(1, 3, 4, 4, 4), torch.randn(2, 2, 3, 3, 3), {}),
    "kernel larger than the input": (torch.randn(1, 2, 2, 4, 4), torch.randn(2, 2, 3, 3, 3), {}),
    "'same' with a stride": (torch.randn(1, 2, 4, 4, 4), torch.randn(2, 2, 3, 3, 3), dict(padding="same", stride=2)),
    "two strides": (torch.randn(1, 2, 4, 4, 4), torch.randn(2, 2, 3, 3, 3), dict(stride=(1, 2))),
    "negative padding": (torch.randn(1, 2, 4, 4, 4), torch.randn(2, 2, 3, 3, 3), dict(padding=-1)),
    "groups not dividing K": (torch.randn(1, 4, 4, 4, 4), torch.randn(3, 2, 3, 3, 3), dict(groups=2)),
    "6-D input": (torch.randn(1, 1, 2, 4, 4, 4), torch.randn(2, 2, 3, 3, 3), {}),
}


@pytest.mark.parametrize("case", ERRORS, ids=list(ERRORS))
def test_errors_are_torchs(case):
    x, weight, arguments = ERRORS[case]
    with pytest.raises(Exception) as expected:
        F.conv3d(x, weight, **arguments)
    with pytest.raises(type(expected.value)) as got:
        tritonconv.conv3d(x, weight, **arguments)
    assert str(got.value) == str(expected.value)


class _VideoNet(torch.nn.Module):
    """An R(2+1)D-style block stack: a (2+1)D stem, a factorised residual block, a strided one, pooling."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Sequential(
            torch.nn.Conv3d(3, 8, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), bias=False),
            torch.nn.BatchNorm3d(8), torch.nn.ReLU(),
            torch.nn.Conv3d(8, 8, (3, 1, 1), padding=(1, 0, 0), bias=False), torch.nn.BatchNorm3d(8), torch.nn.ReLU(),
        )  # fmt: skip
        self.spatial = torch.nn.Conv3d(8, 8, (1, 3, 3), padding=(0, 1, 1))
        self.temporal = torch.nn.Conv3d(8, 8, (3, 1, 1), padding=(1, 0, 0))
        self.down = torch.nn.Conv3d(8, 16, 3, stride=2, padding=1)
        self.depthwise = torch.nn.Conv3d(16, 16, 3, padding=1, groups=16)  # X3D's channel-wise 3x3x3
        self.head = torch.nn.Linear(16, 5)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.temporal(torch.relu(self.spatial(x)))
        x = self.depthwise(torch.relu(self.down(x)))
        return self.head(x.mean((2, 3, 4)))


class _UNet3d(torch.nn.Module):
    """A two-level 3-D U-Net as Cicek et al. build one: double 3x3x3 convs, a strided
    down-convolution, a 2x2x2 stride-2 up-convolution (ConvTranspose3d) and a skip concatenation."""

    def __init__(self):
        super().__init__()
        self.enc = torch.nn.Sequential(torch.nn.Conv3d(2, 4, 3, padding=1), torch.nn.ReLU(),
                                       torch.nn.Conv3d(4, 4, 3, padding=1), torch.nn.ReLU())  # fmt: skip
        self.down = torch.nn.Conv3d(4, 8, 2, stride=2)
        self.mid = torch.nn.Conv3d(8, 8, 3, padding=1)
        self.up = torch.nn.ConvTranspose3d(8, 8, 2, stride=2)
        self.dec = torch.nn.Conv3d(12, 4, 3, padding=1)
        self.out = torch.nn.Conv3d(4, 3, 1)

    def forward(self, x):
        skip = self.enc(x)
        y = self.up(torch.relu(self.mid(torch.relu(self.down(skip)))))
        return self.out(torch.relu(self.dec(torch.cat([y, skip], dim=1))))


@pytest.mark.parametrize("build, shape", [(_VideoNet, (2, 3, 4, 8, 8)), (_UNet3d, (1, 2, 4, 6, 6))],
                         ids=["video (R(2+1)D / X3D style)", "3-D U-Net"])  # fmt: skip
def test_a_patched_video_model_and_3d_unet_match_torch(build, shape):
    torch.manual_seed(0)
    model = build().double()
    reference = copy.deepcopy(model)
    report = tritonconv.patch(model)
    convs = [name for name, module in model.named_modules() if isinstance(module, torch.nn.Conv3d)]
    up = [name for name, module in model.named_modules() if isinstance(module, torch.nn.ConvTranspose3d)]
    assert sorted(report.patched) == sorted(convs) and report.routed == up and not report.skipped
    x = torch.randn(shape, dtype=torch.float64)
    tritonconv.reset_stats()
    loss = model(x).square().sum()
    loss.backward()
    want = reference(x).square().sum()
    want.backward()
    assert tritonconv.stats()["conv3d"] == {"tritonconv": len(convs), "torch": 0, "fallbacks": {}}
    if up:
        assert tritonconv.stats()["conv_transpose3d"] == {"tritonconv": len(up), "torch": 0, "fallbacks": {}}
    torch.testing.assert_close(loss, want, rtol=1e-10, atol=1e-10)
    for (name, got), expected in zip(model.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(
            got.grad, expected.grad, rtol=1e-8, atol=1e-10, msg=lambda m, name=name: f"{name}: {m}"
        )
    tritonconv.unpatch(model)
    assert not any(type(module).__module__.startswith("tritonconv") for module in model.modules())


def test_conv3d_layer_is_a_drop_in():
    torch.manual_seed(0)
    layer = tritonconv.Conv3d(4, 8, 3, padding=1, padding_mode="replicate")
    reference = torch.nn.Conv3d(4, 8, 3, padding=1, padding_mode="replicate")
    reference.load_state_dict(layer.state_dict())
    x = torch.randn(1, 4, 3, 5, 5)
    torch.testing.assert_close(layer(x), reference(x), rtol=1e-5, atol=1e-5)
    assert isinstance(layer, torch.nn.Conv3d) and repr(layer) == repr(reference)


def test_tuning_explain_and_tune_model_cover_3d(tmp_path, monkeypatch):
    monkeypatch.setenv("TRITONCONV_CACHE_DIR", str(tmp_path))
    model = torch.nn.Sequential(torch.nn.Conv3d(3, 8, 3, padding=1), torch.nn.Conv3d(8, 8, (3, 1, 1)))
    x = torch.randn(1, 3, 4, 6, 6)
    summary = tritonconv.tune_model(model, x, passes=("fwd", "wgrad"), timer=lambda fn: [1.0], max_candidates=1)
    # the second is a 2-D convolution over (D, H*W) with a 3x1 kernel (`planar.py`), and is tuned as one
    assert [(p.is_3d, p.h, p.r) for p in summary.problems] == [(True, 6, 3), (False, 4, 3)] and summary.tuned == 4
    answer = tritonconv.explain(x, model[0].weight, model[0].bias, padding=1)
    assert answer["variant"] == "implicit_gemm_3d" and answer["config_source"] == "tuned cache"
    assert answer["problem"].output_shape == (1, 8, 4, 6, 6)
    assert answer["routes"] == {name: ["implicit_gemm_3d", "torch"] for name in ("fwd", "dgrad", "wgrad")}


def test_the_video_suite_loads_3d_layers():
    layers = tritonconv.problem.suites.load_suite("video", dtype=torch.bfloat16)
    assert layers and all(layer.problem.is_3d for layer in layers)
    assert {layer.problem.t for layer in layers} >= {1, 3}


@pytest.mark.parametrize("pass_name", list(Pass))
def test_a_planted_off_by_one_in_depth_is_caught(pass_name, monkeypatch):
    """Mutation check: every 3-D pass launched one slice off in depth (PAD_D + 1) must fail the
    comparison these tests make; the same pass unshifted passes it."""
    from tritonconv.ops import conv3d as launchers

    x, weight, _ = _inputs(1, 4, 4, 5, 5, 8, (3, 3, 3), seed=2)
    problem = make_problem_3d(n=1, c=4, d=4, h=5, w=5, k=8, t=3, r=3, s=3, padding=1)
    grad_output = torch.randn(problem.output_shape)
    x64, w64 = x.double().requires_grad_(), weight.double().requires_grad_()
    F.conv3d(x64, w64, padding=1).backward(grad_output.double())

    def error() -> float:
        call = prepared.PreparedConv(problem, x, weight, NO_EPILOGUE)
        got, want = {
            Pass.FWD: (lambda: call.forward(x, weight, None), F.conv3d(x64, w64, padding=1)),
            Pass.DGRAD: (lambda: call.input_grad(grad_output, weight), x64.grad),
            Pass.WGRAD: (lambda: call.weight_grad(x, grad_output), w64.grad),
        }[pass_name]
        return float((got().double() - want.detach()).abs().max())

    assert error() < 1e-4
    original = launchers.KernelLaunch

    def shifted(kernel, grid, scalars, constexprs):
        return original(kernel, grid, scalars, _depth_padded(constexprs))

    monkeypatch.setattr(launchers, "KernelLaunch", shifted)
    assert error() > 1e-2


def _depth_padded(constexprs: dict) -> dict:
    """A launch's constexprs with one more leading depth padding: a wrong launch the tests must see."""
    geometry = constexprs["GEOMETRY"]
    return {**constexprs, "GEOMETRY": geometry._replace(pad_d=geometry.pad_d + 1)}


def test_the_64_bit_voxel_path_in_every_pass(monkeypatch):
    """What a > 2^31-voxel video takes (64-bit flat indices; the GPU test runs one that size), here
    forced on a small problem: the same answers, every launch with INDEX_64."""
    from tritonconv.ops import conv3d as launchers

    monkeypatch.setattr(launchers, "INT32_LIMIT", 300)  # any 3-D launch with more than 44 rows goes 64-bit
    seen = []
    original = launchers.KernelLaunch

    def noting(kernel, grid, scalars, constexprs):
        seen.append(constexprs["NUMERICS"].index_64)
        return original(kernel, grid, scalars, constexprs)

    monkeypatch.setattr(launchers, "KernelLaunch", noting)
    x, weight, bias = _inputs(2, 4, 4, 5, 6, 8, (3, 3, 3), channels_last=True, seed=3)
    leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
    y = tritonconv.conv3d(*leaves, padding=1, stride=(1, 2, 1))
    assert_conv2d_close(y, x, weight, bias, padding=1, stride=(1, 2, 1))
    grad_output = torch.randn_like(y)
    y.backward(grad_output)
    assert_grads_close([t.grad for t in leaves], x, weight, bias, grad_output, padding=1, stride=(1, 2, 1))
    assert seen and all(seen)


def test_patch_with_fuse_serves_3d_convolutions_too():
    """fuse=True folds and fuses 2-D chains only; its 3-D convolutions are patched all the same."""
    torch.manual_seed(1)
    model = _VideoNet().double().eval()
    reference = copy.deepcopy(model)
    report = tritonconv.patch(model, fuse=True)
    assert len(report.patched) == sum(isinstance(m, torch.nn.Conv3d) for m in reference.modules())
    x = torch.randn(1, 3, 4, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-10, atol=1e-10)


TRANSPOSED_CASES = {  # (n, c_in, d, h, w, c_out / groups, kernel, arguments)
    "2x2x2 stride 2 (U-Net up-convolution)": (2, 8, 3, 4, 3, 4, (2, 2, 2), dict(stride=2)),
    "3x3x3 stride 2, output_padding, groups": (1, 4, 3, 3, 4, 3, (3, 3, 3),
                                                dict(stride=2, padding=1, output_padding=(1, 0, 1), groups=2)),
    "dilation and per-axis stride": (1, 4, 3, 4, 4, 2, (3, 2, 3),
                                     dict(stride=(1, 2, 1), padding=(1, 0, 2), dilation=2)),
}  # fmt: skip


@pytest.mark.parametrize("channels_last", [False, True], ids=["NCDHW", "channels_last_3d"])
@pytest.mark.parametrize("case", TRANSPOSED_CASES, ids=list(TRANSPOSED_CASES))
def test_conv_transpose3d_and_its_gradients_match_torch(case, channels_last):
    n, c_in, d, h, w, c_out, kernel, arguments = TRANSPOSED_CASES[case]
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(n, c_in, d, h, w, generator=generator)
    weight = torch.randn(c_in, c_out, *kernel, generator=generator)
    bias = torch.randn(c_out * arguments.get("groups", 1), generator=generator)
    if channels_last:
        x, weight = (t.to(memory_format=torch.channels_last_3d) for t in (x, weight))
    leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
    y = tritonconv.conv_transpose3d(*leaves, **arguments)
    doubles = [t.detach().double().requires_grad_() for t in (x, weight, bias)]
    want = F.conv_transpose3d(*doubles, **arguments)
    assert y.shape == want.shape
    assert y.is_contiguous(memory_format=torch.channels_last_3d if channels_last else torch.contiguous_format)
    torch.testing.assert_close(y.double(), want, rtol=1e-5, atol=1e-4)
    grad_output = torch.randn_like(want)
    y.backward(grad_output.float())
    want.backward(grad_output)
    for got, expected in zip(leaves, doubles, strict=True):
        torch.testing.assert_close(got.grad.double(), expected.grad, rtol=1e-5, atol=1e-4)


def test_conv_transpose3d_errors_and_the_layer_are_torchs():
    torch.manual_seed(0)
    x, weight = torch.randn(1, 4, 3, 3, 3), torch.randn(4, 2, 3, 3, 3)
    for arguments in (dict(stride=1, output_padding=1), dict(stride=2, output_padding=(1, 2, 1)), dict(groups=3)):
        with pytest.raises(RuntimeError) as expected:
            F.conv_transpose3d(x, weight, **arguments)
        with pytest.raises(RuntimeError) as got:
            tritonconv.conv_transpose3d(x, weight, **arguments)
        assert str(got.value) == str(expected.value)
    layer = tritonconv.ConvTranspose3d(4, 2, 3, stride=2, padding=1)
    reference = torch.nn.ConvTranspose3d(4, 2, 3, stride=2, padding=1)
    reference.load_state_dict(layer.state_dict())
    torch.testing.assert_close(layer(x, output_size=[6, 6, 6]), reference(x, output_size=[6, 6, 6]))
    # Second derivatives in float64 (in fp32 their sums of squares round differently in each
    # implementation, beyond any fixed bound for some random inputs).
    x = x.double().requires_grad_()
    pairs = (
        (tritonconv.conv_transpose3d, F.conv_transpose3d, weight.double()),
        (tritonconv.conv3d, F.conv3d, weight.double().transpose(0, 1)),
    )
    for convolve, torchs, w in pairs:  # the second order runs the 3-D kernels too (differentiable.py)
        w = w.detach().requires_grad_()
        second = []
        for function in (convolve, torchs):
            (grad,) = torch.autograd.grad(function(x, w, padding=1).square().sum(), x, create_graph=True)
            second.append(torch.autograd.grad(grad.square().sum(), (x, w)))
        for got, want in zip(*second, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def _kernels_run(call) -> list[str]:
    """The names of the kernels `call()` launches."""
    from tritonconv.ops.launch import KernelLaunch

    launched, original = [], KernelLaunch.__call__

    def noting(self, *pointers):
        launched.append(self.kernel.__name__)
        return original(self, *pointers)

    KernelLaunch.__call__ = noting
    try:
        call()
    finally:
        KernelLaunch.__call__ = original
    return launched


PLANAR_CASES = {  # (input shape, kernel, arguments, channels_last_3d, runs as): what `planar.py` decides
    "spatial 1x3x3, channels_last_3d: depth slices": ((2, 8, 4, 6, 6), (1, 3, 3), dict(padding=(0, 1, 1)), True,
                                                       "slices"),
    "1x1x1 stride 2 downsample, channels_last_3d": ((1, 8, 4, 6, 6), (1, 1, 1), dict(stride=2), True, "slices"),
    "temporal 3x1x1 stride 2, NCDHW: columns": ((2, 8, 5, 3, 4), (3, 1, 1), dict(stride=(2, 1, 1), padding=(1, 0, 0)),
                                                 False, "columns"),
    "temporal 3x1x1, channels_last_3d: columns": ((1, 8, 5, 3, 4), (3, 1, 1), dict(padding="same"), True, "columns"),
    "spatial 1x3x3, NCDHW: the 3-D kernels": ((2, 8, 4, 6, 6), (1, 3, 3), dict(padding=(0, 1, 1)), False, None),
    "3x3x3: the 3-D kernels": ((1, 8, 4, 5, 5), (3, 3, 3), dict(padding=1), True, None),
}  # fmt: skip


@pytest.mark.parametrize("case", PLANAR_CASES, ids=list(PLANAR_CASES))
def test_3d_convolutions_that_are_2d_ones_run_the_2d_routes(case):
    """A 3-D call that is a 2-D convolution on a view runs conv2d's kernels (no 3-D kernel), gives
    torch's answer, gradients and layout, and explain and tune_model name the 2-D problem."""
    shape, kernel, arguments, channels_last, kind = PLANAR_CASES[case]
    x, weight, bias = _inputs(*shape[:2], *shape[2:], 8, kernel, channels_last=channels_last, seed=5)
    leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
    grad_output = None

    def run():
        nonlocal grad_output
        y = tritonconv.conv3d(*leaves, **arguments)
        grad_output = torch.randn_like(y)
        y.backward(grad_output)
        return y

    launched = _kernels_run(lambda: assert_conv2d_close(run(), x, weight, bias, **arguments))
    assert_grads_close([t.grad for t in leaves], x, weight, bias, grad_output, **arguments)
    uses_3d_kernels = any(name.startswith("_conv3d") for name in launched)
    assert uses_3d_kernels == (kind is None), launched
    answer = tritonconv.explain(x, weight, bias, **arguments)
    assert answer.get("planar") == kind and (answer["problem"].is_3d == (kind is None))
    recorded = tritonconv.models.tune_model.record_problems(lambda t: F.conv3d(t, weight, bias, **arguments), x)
    assert recorded == [answer["problem"]]


def test_depthwise_3d_runs_its_direct_kernel_and_a_planted_error_is_caught(monkeypatch):
    """X3D's channel-wise 3x3x3: the depthwise route (no tl.dot), torch's answer, and a launch one
    slice off in depth (PAD_D + 1) fails the same comparison."""
    from tritonconv.ops import conv3d as launchers

    x, weight, bias = _inputs(2, 8, 4, 5, 6, 16, (3, 3, 3), groups=8, channels_last=True, seed=6)
    problem = tritonconv.problem.arithmetic.problem_from_tensors_3d(x, weight, bias, 1, 1, 1, 8)
    assert registry.rule_variant(problem, Pass.FWD) == Variant.DEPTHWISE_3D  # multiplier 2 included
    launched = _kernels_run(lambda: assert_conv2d_close(tritonconv.conv3d(x, weight, bias, padding=1, groups=8), x,
                                                        weight, bias, padding=1, groups=8))  # fmt: skip
    assert launched == ["_conv3d_fwd_depthwise_kernel"]
    original = launchers.KernelLaunch
    monkeypatch.setattr(launchers, "KernelLaunch", lambda kernel, grid, scalars, constexprs: original(
        kernel, grid, scalars, _depth_padded(constexprs)))  # fmt: skip
    shifted = prepared.PreparedConv(problem, x, weight, NO_EPILOGUE).forward(x, weight, bias)
    with pytest.raises(AssertionError):
        assert_conv2d_close(shifted, x, weight, bias, padding=1, groups=8)


DEPTHWISE_WGRAD_CASES = {  # (n, c, d, h, w, multiplier, kernel, arguments, split_k)
    "X3D 3x3x3, one split": (1, 8, 4, 5, 5, 1, (3, 3, 3), dict(padding=1), 1),
    "channel multiplier 2, strides, dilation, three splits": (
        2, 4, 5, 6, 7, 2, (3, 2, 3), dict(stride=(2, 1, 2), padding=(1, 1, 2), dilation=(1, 2, 2)), 3,
    ),
}  # fmt: skip


@pytest.mark.parametrize("channels_last", [False, True], ids=["NCDHW", "channels_last_3d"])
@pytest.mark.parametrize("case", DEPTHWISE_WGRAD_CASES, ids=list(DEPTHWISE_WGRAD_CASES))
def test_the_depthwise_3d_weight_gradient_kernel_matches_float64(case, channels_last):
    """X3D's depthwise weight gradient runs a kernel of its own (no one-column GEMM tile), split or
    direct, and matches torch's float64 gradient; explain names it first."""
    n, c, d, h, w, multiplier, kernel, arguments, split_k = DEPTHWISE_WGRAD_CASES[case]
    x, weight, bias = _inputs(n, c, d, h, w, c * multiplier, kernel, groups=c, channels_last=channels_last)
    arguments = dict(arguments, groups=c)
    problem = tritonconv.explain(x, weight, bias, **arguments)["problem"]
    assert registry.routes(problem, Pass.WGRAD) == (Variant.DEPTHWISE_3D, Variant.IMPLICIT_GEMM_3D)
    config = dataclasses.replace(registry.spec(Pass.WGRAD, Variant.DEPTHWISE_3D).heuristic(problem), split_k=split_k,
                                 block_m=16)  # fmt: skip
    grad_output = torch.randn(F.conv3d(x, weight, bias, **arguments).shape)
    call = prepared.PreparedConv(problem, x, weight, NO_EPILOGUE)
    call.plans[Pass.WGRAD] = Plan(Variant.DEPTHWISE_3D, config, "test")
    got = call.weight_grad(x, grad_output)
    x64, weight64 = x.double().requires_grad_(), weight.double().requires_grad_()
    F.conv3d(x64, weight64, None, **arguments).backward(grad_output.double())
    torch.testing.assert_close(got.double(), weight64.grad, rtol=1e-4, atol=1e-4)
    assert got.shape == weight.shape and got.stride() == weight.stride()


DEPTHWISE_DGRAD_CASES = {  # (n, c, d, h, w, kernel, arguments): stride 1, one output channel per input channel
    "X3D 3x3x3 pad 1": (1, 8, 4, 5, 5, (3, 3, 3), dict(padding=1)),
    "dilation, uneven padding per axis": (2, 4, 5, 6, 7, (3, 2, 3), dict(padding=(2, 1, 0), dilation=(1, 2, 2))),
    "'same' with an even kernel": (1, 4, 4, 5, 6, (2, 3, 4), dict(padding="same")),
}


@pytest.mark.parametrize("channels_last", [False, True], ids=["NCDHW", "channels_last_3d"])
@pytest.mark.parametrize("case", DEPTHWISE_DGRAD_CASES, ids=list(DEPTHWISE_DGRAD_CASES))
def test_the_stride_1_depthwise_3d_input_gradient_runs_the_flipped_depthwise_kernel(case, channels_last):
    """dX of a stride-1 depthwise 3-D convolution is the depthwise 3-D forward kernel on dY with the
    weight read back to front: chosen by the rule, and equal to torch's float64 gradient."""
    n, c, d, h, w, kernel, arguments = DEPTHWISE_DGRAD_CASES[case]
    x, weight, bias = _inputs(n, c, d, h, w, c, kernel, groups=c, channels_last=channels_last)
    arguments = dict(arguments, groups=c)
    problem = tritonconv.explain(x, weight, bias, **arguments)["problem"]
    assert registry.routes(problem, Pass.DGRAD)[0] == Variant.DEPTHWISE_3D
    strided = dataclasses.replace(problem, depth=dataclasses.replace(problem.depth, stride=2))
    assert registry.routes(strided, Pass.DGRAD) == (Variant.IMPLICIT_GEMM_3D,)  # strided: the general kernel
    grad_output = torch.randn(F.conv3d(x, weight, bias, **arguments).shape)
    if channels_last:
        grad_output = grad_output.to(memory_format=torch.channels_last_3d)
    got = prepared.PreparedConv(problem, x, weight, NO_EPILOGUE).input_grad(grad_output, weight)
    x64 = x.double().requires_grad_()
    F.conv3d(x64, weight.double(), None, **arguments).backward(grad_output.double())
    torch.testing.assert_close(got.double(), x64.grad, rtol=1e-4, atol=1e-4)
    assert got.is_contiguous(memory_format=torch.channels_last_3d if channels_last else torch.contiguous_format)
