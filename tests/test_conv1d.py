"""`tritonconv.conv1d` and `tritonconv.Conv1d`: torch's 1-D semantics through the 2-D kernels (H = 1)."""

import pytest
import torch
import torch.nn.functional as F
from conv_reference import needs_runtime_loops

import tritonconv

CASES = {  # (n or None for unbatched, c, length, k, kernel, kwargs)
    "plain": (2, 4, 9, 6, 3, {}),
    "strided padded": (2, 4, 10, 6, 3, dict(stride=2, padding=1)),
    "same dilated even": (1, 4, 9, 4, 4, dict(padding="same", dilation=2)),
    "valid grouped": (2, 6, 8, 6, 3, dict(padding="valid", groups=3)),
    "depthwise tuple args": (1, 4, 7, 4, 5, dict(stride=(1,), padding=(2,), dilation=(1,), groups=4)),
    "unbatched": (None, 3, 8, 5, 3, dict(padding=1)),
}


@needs_runtime_loops
@pytest.mark.parametrize("case", list(CASES))
def test_conv1d_matches_torch_in_value_shape_strides_and_gradients(case, device):
    n, c, length, k, kernel, kwargs = CASES[case]
    generator = torch.Generator().manual_seed(0)
    shape = (c, length) if n is None else (n, c, length)
    x = torch.randn(shape, generator=generator).to(device).requires_grad_()
    weight = torch.randn(k, c // kwargs.get("groups", 1), kernel, generator=generator).to(device).requires_grad_()
    bias = torch.randn(k, generator=generator).to(device).requires_grad_()
    got = tritonconv.conv1d(x, weight, bias, **kwargs)
    wide = [t.detach().double().requires_grad_() for t in (x, weight, bias)]
    expected = F.conv1d(*wide, **kwargs)
    assert got.shape == expected.shape and got.stride() == expected.stride()
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-4)
    grad = torch.randn(expected.shape, generator=generator, dtype=torch.float64)
    got.backward(grad.to(got))
    expected.backward(grad)
    for ours, theirs in zip((x, weight, bias), wide, strict=True):
        torch.testing.assert_close(ours.grad.double(), theirs.grad, rtol=1e-4, atol=1e-4)


def test_a_length_major_input_is_read_in_place_and_the_output_is_contiguous(device):
    x = torch.randn(2, 9, 4).to(device).transpose(1, 2)  # (N, C, L) with C innermost
    weight = torch.randn(3, 4, 3).to(device)
    got = tritonconv.conv1d(x, weight, padding=1)
    assert got.is_contiguous()
    torch.testing.assert_close(got, F.conv1d(x, weight, padding=1), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
def test_the_layer_matches_nn_conv1d(padding_mode, device):
    torch.manual_seed(0)
    reference = torch.nn.Conv1d(4, 6, 3, padding=1, padding_mode=padding_mode).to(device)
    layer = tritonconv.Conv1d(4, 6, 3, padding=1, padding_mode=padding_mode).to(device)
    layer.load_state_dict(reference.state_dict())
    x = torch.randn(2, 4, 8).to(device)
    torch.testing.assert_close(layer(x), reference(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs",
    [
        ((2, 3, 4, 5), (4, 3, 3), {}),
        ((2, 3, 8), (4, 3, 3, 3), {}),
        ((2, 3, 8), (4, 2, 3), {}),
        ((2, 4, 8), (4, 4, 3), dict(stride=(1, 2))),
    ],
    ids=["4-D input", "4-D weight", "channels", "two strides"],
)
def test_refusals_carry_torchs_messages(x_shape, w_shape, kwargs):
    x, weight = torch.randn(x_shape), torch.randn(w_shape)
    with pytest.raises(RuntimeError) as theirs:
        F.conv1d(x, weight, **kwargs)
    with pytest.raises(RuntimeError) as ours:
        tritonconv.conv1d(x, weight, **kwargs)
    assert str(ours.value) == str(theirs.value)
