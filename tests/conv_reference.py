"""The correctness reference every kernel test shares: torch's conv in float64, one tolerance table.

Tolerances are bounds, not guesses (`torch_reference.error_bound`, shared with the GPU quick run):
with T = conv(|x|, |w|) and L = (C/groups)*R*S for the forward, an element may be off by
SAFETY * (out_eps * |ref| + (in_eps + L * acc_eps) * T).
"""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from tritonconv.problem.arithmetic import is_channels_last_like, problem_from_tensors, problem_from_tensors_3d
from tritonconv.problem.torch_reference import error_bound


def tf32_in_effect(dtype: torch.dtype, device: torch.device | str) -> bool:
    """The interpreter multiplies fp32 exactly; only a GPU with TF32 allowed rounds operands."""
    return dtype == torch.float32 and torch.device(device).type == "cuda" and torch.backends.cudnn.allow_tf32


def random_conv_inputs(
    n: int,
    c: int,
    h: int,
    w: int,
    k: int,
    r: int,
    s: int,
    groups: int = 1,
    bias: bool = True,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    channels_last: bool = False,
    seed: int = 0,
):
    """Fresh normal inputs (never zeros), already rounded to `dtype`."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=gen).to(dtype=dtype, device=device)
    weight = torch.randn(k, c // groups, r, s, generator=gen).to(dtype=dtype, device=device)
    b = torch.randn(k, generator=gen).to(dtype=dtype, device=device) if bias else None
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    return x, weight, b


def _torch_conv(weight: torch.Tensor):
    """torch's convolution of a weight's rank: conv2d for 4-D weights, conv3d for 5-D."""
    return F.conv3d if weight.dim() == 5 else F.conv2d


def _problem(input, weight, bias, kwargs):
    build = problem_from_tensors_3d if weight.dim() == 5 else problem_from_tensors
    return build(input, weight, bias, groups=kwargs.get("groups", 1), **_geometry(kwargs))


def reference_conv2d(input, weight, bias=None, **kwargs):
    """torch's conv2d (conv3d for a 5-D weight) in float64 on CPU from the same (already rounded) inputs."""
    to64 = lambda t: None if t is None else t.detach().to("cpu", torch.float64)  # noqa: E731
    return _torch_conv(weight)(to64(input), to64(weight), to64(bias), **kwargs)


def assert_conv2d_close(actual: torch.Tensor, input, weight, bias=None, **kwargs) -> None:
    """Check `actual` against the float64 reference, element by element, within the bound above."""
    expected = reference_conv2d(input, weight, bias, **kwargs)
    assert actual.shape == expected.shape, f"shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert actual.dtype == input.dtype
    if weight.dim() == 5:  # torch's CUDA rule (cuDNN): channels_last_3d when the input or the weight is; its CPU
        # kernels differ by dtype (bf16 keeps channels_last_3d, fp32 and fp64 do not)
        batched = input if input.dim() == 5 else input.unsqueeze(0)
        wanted = is_channels_last_like(batched) or is_channels_last_like(weight)
        assert is_channels_last_like(actual if actual.dim() == 5 else actual.unsqueeze(0)) == wanted, actual.stride()
        assert actual.is_contiguous(memory_format=torch.channels_last_3d if wanted else torch.contiguous_format)
    elif _both_layouts(input):  # torch's own CPU kernels pick either here, by dtype (fp64 contiguous, fp32 not)
        assert actual.is_contiguous() or actual.is_contiguous(memory_format=torch.channels_last), actual.stride()
    else:
        assert memory_layout(actual) == memory_layout(expected), (
            f"strides {actual.stride()} != torch's {expected.stride()}"
        )
    got = actual.detach().to("cpu", torch.float64)
    assert not torch.isnan(got).any(), f"{int(torch.isnan(got).sum())} output elements were never written"
    magnitude = reference_conv2d(input.abs(), weight.abs(), None if bias is None else bias.abs(), **kwargs)
    problem = _problem(input, weight, bias, kwargs)
    key = "tf32" if tf32_in_effect(input.dtype, input.device) else input.dtype
    bound = error_bound(expected, magnitude, key, problem.gemm_k)
    excess = (got - expected).abs() - bound
    worst = int(excess.argmax())
    assert excess.max() <= 0, (
        f"max error {float((got - expected).abs().flatten()[worst]):.3e} exceeds bound "
        f"{float(bound.flatten()[worst]):.3e} at flat index {worst} ({key}, L={problem.gemm_k})"
    )


def reference_grads(input, weight, bias, grad_output, **kwargs):
    """torch's float64 gradients (input, weight, bias) of conv2d for `grad_output`, on CPU."""
    leaves = [
        None if t is None else t.detach().to("cpu", torch.float64).requires_grad_() for t in (input, weight, bias)
    ]
    out = _torch_conv(weight)(*leaves, **kwargs)
    out.backward(grad_output.detach().to("cpu", torch.float64))
    return [None if t is None else t.grad for t in leaves]


def assert_grads_close(grads, input, weight, bias, grad_output, **kwargs) -> None:
    """Each gradient within the forward's bound, with its own reduction length and magnitudes taken
    from the gradients of the all-absolute-values problem."""
    expected = reference_grads(input, weight, bias, grad_output, **kwargs)
    magnitude = reference_grads(
        input.abs(), weight.abs(), None if bias is None else bias.abs(), grad_output.abs(), **kwargs
    )
    problem = _problem(input, weight, bias, kwargs)
    reductions = (problem.k_per_group * problem.t * problem.r * problem.s, problem.gemm_m, problem.gemm_m)
    key = "tf32" if tf32_in_effect(input.dtype, input.device) else input.dtype
    for name, got, want, mag, length, like in zip(
        ("input", "weight", "bias"), grads, expected, magnitude, reductions, (input, weight, bias), strict=True
    ):
        if want is None:
            assert got is None, f"grad of {name} computed though not needed"
            continue
        assert got is not None, f"grad of {name} missing"
        assert got.shape == like.shape and got.dtype == like.dtype, f"grad of {name}: {got.shape} {got.dtype}"
        if like.dim() in (4, 5):  # channels_last(_3d) stays so (a gradient is dense even when its input is a view;
            # a 1x1 kernel's two layouts are the same memory and differ only in the strides of size-1 dims)
            same_memory = memory_layout(got) == memory_layout(like)
            assert same_memory or is_channels_last_like(got) == is_channels_last_like(like), (
                f"grad of {name}: {got.stride()}"
            )
        got64 = got.detach().to("cpu", torch.float64)
        assert not torch.isnan(got64).any(), f"grad of {name}: elements never written"
        bound = error_bound(want, mag, key, length)
        excess = (got64 - want).abs() - bound
        assert excess.max() <= 0, (
            f"grad of {name}: error {float((got64 - want).abs().max()):.3e} over bound (L={length})"
        )


def _both_layouts(input: torch.Tensor) -> bool:
    """An input that is NCHW and channels_last at once (every spatial size 1, or one channel): its
    layout does not say which the output should be."""
    batched = input if input.dim() == 4 else input.unsqueeze(0)
    return batched.is_contiguous() and batched.is_contiguous(memory_format=torch.channels_last)


def memory_layout(tensor: torch.Tensor) -> list[tuple[int, int]]:
    """(dim, stride) for every dimension longer than 1: the strides that address memory at all."""
    return [
        (dim, stride) for dim, (size, stride) in enumerate(zip(tensor.shape, tensor.stride(), strict=True)) if size > 1
    ]


def _geometry(kwargs):
    return {name: kwargs[name] for name in ("stride", "padding", "dilation") if name in kwargs}


@triton.jit
def _count_to_runtime_bound(out_ptr, n):
    total = 0
    for _ in range(0, n):
        total += 1
    tl.store(out_ptr, total)


@functools.cache
def loops_to_runtime_bounds() -> bool:
    """Whether this Triton can run a loop whose bound is a kernel argument. Compiled kernels always
    can; the interpreters of Triton 3.2 to 3.6 cannot under numpy 2 (an argument arrives as a
    one-element array that `range` refuses), which the backward reductions over N*P*Q need."""
    out = torch.zeros(1, dtype=torch.int32, device="cuda" if torch.cuda.is_available() else "cpu")
    try:
        _count_to_runtime_bound[(1,)](out, 3)
    except Exception:  # any failure means the feature is missing
        return False
    return int(out.item()) == 3


needs_runtime_loops = pytest.mark.skipif(
    not loops_to_runtime_bounds(), reason="this Triton interpreter cannot loop to a runtime bound (Triton <= 3.6)"
)


def recording_launcher(launched: list, name: str, prepare, *args):
    """A route's launcher (`registry.VariantSpec.prepare`) that notes `name` at each launch of what
    it prepares, so a test sees which routes a call really ran."""
    run = prepare(*args)

    def recorded(*tensors):
        launched.append(name)
        return run(*tensors)

    return recorded


def spy_on(monkeypatch, module, names: tuple[str, ...]) -> list[str]:
    """Replace each of `module`'s functions `names` by one that records its name, then calls it:
    the names of the calls made, in order (tests show which passes ran)."""
    ran: list[str] = []
    for name in names:
        original = getattr(module, name)

        def spy(*args, _original=original, _name=name):
            ran.append(_name)
            return _original(*args)

        monkeypatch.setattr(module, name, spy)
    return ran


def assert_float64_close(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    """Two float64 results that must agree to rounding (torch's and tritonconv's), named on failure."""
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9, msg=lambda message: f"{what}: {message}")


def random_batchnorm_statistics(model: torch.nn.Module) -> torch.nn.Module:
    """Every BatchNorm of `model` given running statistics and affine parameters that are not the
    identity (so folding them is tested), from torch's global generator; `model` back."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            module.weight.data.uniform_(0.5, 2)
            module.bias.data.uniform_(-1, 1)
    return model
