"""PyTorch's own test samples for its convolutions (the OpInfo entries of
`torch.testing._internal.common_methods_invocations` for nn.functional.conv1d/2d/3d and
conv_transpose1d/2d/3d: strides, paddings including 'same' and 'valid', dilations, groups,
output_padding, unbatched inputs, bias or none), run through tritonconv two ways a user would:
`patch_torch()` (the Python functions) and `use_aten()` (aten's kernels). Values and every
gradient must equal torch's in float64, and every sample must be served by tritonconv.

The interpreter is slow, so samples of more than 450 elements in all are left out (half of the
3-D ones; the test fails if a kind loses more than half of its samples)."""

import pytest
import torch
import torch.nn.functional as F

import tritonconv

frozen = torch.backends.flags_frozen()
common_methods_invocations = pytest.importorskip("torch.testing._internal.common_methods_invocations")
# Importing torch's test utilities freezes torch.backends' flags for the whole process (PyTorch's
# own suites set them through context managers only); the other tests here flip TF32 directly.
torch.backends.flags_frozen.__globals__["__allow_nonbracketed_mutation_flag"] = not frozen

KINDS = ("conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d")
MAX_ELEMENTS = 450


def _samples(kind: str) -> list:
    (op,) = [op for op in common_methods_invocations.op_db if op.name == f"nn.functional.{kind}"]
    samples = list(op.sample_inputs("cpu", torch.float64, requires_grad=True))
    small = [s for s in samples if sum(t.numel() for t in _tensors(s)) <= MAX_ELEMENTS]
    assert len(small) >= len(samples) // 2, f"{kind}: only {len(small)} of {len(samples)} samples are small enough"
    return small


def _tensors(sample) -> list[torch.Tensor]:
    return [t for t in (sample.input, *sample.args) if isinstance(t, torch.Tensor)]


def _value_and_gradients(function, sample) -> tuple[torch.Tensor, ...]:
    output = function(sample.input, *sample.args, **sample.kwargs)
    leaves = [t for t in _tensors(sample) if t.requires_grad]
    return output, *torch.autograd.grad(output.square().sum(), leaves)


@pytest.mark.parametrize("route", ["patch_torch", "use_aten"])
@pytest.mark.parametrize("kind", KINDS)
def test_pytorchs_samples_give_torchs_values_and_gradients(kind, route):
    if route == "use_aten" and not hasattr(torch.library, "get_kernel"):
        pytest.skip("use_aten needs torch >= 2.9")
    samples = _samples(kind)
    op = "aten.convolution" if route == "use_aten" else kind  # the name stats() counts it under
    for index, sample in enumerate(samples):
        want = _value_and_gradients(getattr(F, kind), sample)
        tritonconv.reset_stats()
        if route == "use_aten":
            with tritonconv.use_aten():
                got = _value_and_gradients(getattr(F, kind), sample)
        else:
            tritonconv.patch_torch()
            try:
                got = _value_and_gradients(getattr(F, kind), sample)
            finally:
                tritonconv.unpatch_torch()
        described = f"{kind} sample {index}: shapes {[list(t.shape) for t in _tensors(sample)]}, {sample.kwargs}"
        for name, g, w in zip(("output", *(f"gradient {i}" for i in range(len(want) - 1))), got, want, strict=True):
            torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-9, msg=lambda m, n=name, d=described: f"{d}, {n}: {m}")
        stats = tritonconv.stats()[op]
        assert stats["torch"] == 0 and stats["tritonconv"] >= 1, f"{described}: {stats}"
