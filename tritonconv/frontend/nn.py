"""`tritonconv.Conv2d`, `Conv1d`, `Conv3d`, `ConvTranspose2d`, `ConvTranspose1d` and `ConvTranspose3d`: `torch.nn`
convolutions whose convolution runs through tritonconv's kernels (1-D through the 2-D kernels with
H = 1, 3-D through the 3-D ones)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.common_types import _size_1_t, _size_2_t, _size_3_t

from ..ops.epilogue import ACTIVATIONS
from .functional import conv1d, conv2d
from .transposed import conv_transpose1d, conv_transpose2d, conv_transpose3d
from .volume import conv3d


class _TritonConvolution:
    """Only `_conv_forward` is replaced, the method `nn.Conv1d/2d.forward` calls, so everything else
    is torch's own code. Non-zero padding modes ('reflect', 'replicate', 'circular') pad the input
    the way torch does and then run the kernel unpadded; 'zeros' padding happens inside the kernel.
    `_convolve` is the functional form (patched modules swap in one that falls back to torch);
    `_epilogue()` the keywords of a fused activation, if any."""

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        padding = self.padding
        if self.padding_mode != "zeros":
            input, padding = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode), 0
        return self._convolve(input, weight, bias, self.stride, padding, self.dilation, self.groups, **self._epilogue())

    def _epilogue(self) -> dict:
        return {}


class _EpilogueActivation:
    """A layer that takes `activation` ('relu', 'silu', 'gelu', 'gelu_tanh', 'leaky_relu' with
    `negative_slope`) and applies it in the kernel's epilogue."""

    def __init__(self, *args, activation: str | None = None, negative_slope: float = 0.01, **kwargs):
        super().__init__(*args, **kwargs)
        if activation is not None and activation not in ACTIVATIONS:
            raise ValueError(f"activation must be None or one of {', '.join(ACTIVATIONS)}; got {activation!r}")
        # Private names: a patched user subclass may have an `activation` attribute of its own.
        self._tritonconv_activation, self._tritonconv_negative_slope = activation, negative_slope

    def _epilogue(self) -> dict:
        activation = self.__dict__.get("_tritonconv_activation")  # absent on a patched nn.Conv2d
        if activation is None:
            return {}
        return {"activation": activation, "negative_slope": self._tritonconv_negative_slope}

    def extra_repr(self) -> str:
        epilogue = self._epilogue()
        if not epilogue:
            return super().extra_repr()
        slope = f", negative_slope={epilogue['negative_slope']}" if epilogue["activation"] == "leaky_relu" else ""
        return f"{super().extra_repr()}, activation={epilogue['activation']!r}{slope}"


# Each layer's constructor spells out torch's parameters (editors and `inspect.signature` show them),
# then the epilogue's two keywords.


class Conv2d(_EpilogueActivation, _TritonConvolution, torch.nn.Conv2d):
    """Drop-in for `torch.nn.Conv2d`: same constructor and defaults, same parameters and state_dict
    keys (checkpoints load both ways), same repr, hooks and padding modes.

    `activation` ('relu', 'silu', 'gelu', 'gelu_tanh', 'leaky_relu' with `negative_slope`) is
    applied in the kernel's epilogue: the layer computes activation(conv2d(x) + bias)."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: _size_2_t, stride: _size_2_t = 1,
        padding: _size_2_t | str = 0, dilation: _size_2_t = 1, groups: int = 1, bias: bool = True,
        padding_mode: str = "zeros", device=None, dtype=None, *, activation: str | None = None,
        negative_slope: float = 0.01,
    ) -> None:  # fmt: skip
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode,
                         device, dtype, activation=activation, negative_slope=negative_slope)  # fmt: skip

    _convolve = staticmethod(conv2d)


class Conv1d(_TritonConvolution, torch.nn.Conv1d):
    """Drop-in for `torch.nn.Conv1d`, in the same way `Conv2d` is for `nn.Conv2d`."""

    _convolve = staticmethod(conv1d)


class Conv3d(_EpilogueActivation, _TritonConvolution, torch.nn.Conv3d):
    """Drop-in for `torch.nn.Conv3d`, in the same way `Conv2d` is for `nn.Conv2d` (video and volumes,
    NCDHW or channels_last_3d), `activation` in the epilogue included."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: _size_3_t, stride: _size_3_t = 1,
        padding: _size_3_t | str = 0, dilation: _size_3_t = 1, groups: int = 1, bias: bool = True,
        padding_mode: str = "zeros", device=None, dtype=None, *, activation: str | None = None,
        negative_slope: float = 0.01,
    ) -> None:  # fmt: skip
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode,
                         device, dtype, activation=activation, negative_slope=negative_slope)  # fmt: skip

    _convolve = staticmethod(conv3d)


class ConvTranspose2d(_EpilogueActivation, torch.nn.ConvTranspose2d):
    """Drop-in for `torch.nn.ConvTranspose2d` (same constructor, parameters, `state_dict` keys and
    `forward(input, output_size=None)`), computed by `tritonconv.conv_transpose2d`, with `activation`
    in the kernel's epilogue as `Conv2d` has it."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: _size_2_t, stride: _size_2_t = 1,
        padding: _size_2_t = 0, output_padding: _size_2_t = 0, groups: int = 1, bias: bool = True,
        dilation: _size_2_t = 1, padding_mode: str = "zeros", device=None, dtype=None, *,
        activation: str | None = None, negative_slope: float = 0.01,
    ) -> None:  # fmt: skip
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, output_padding, groups, bias,
                         dilation, padding_mode, device, dtype, activation=activation,
                         negative_slope=negative_slope)  # fmt: skip

    def forward(self, input: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if self.padding_mode != "zeros":
            raise ValueError("Only `zeros` padding mode is supported for ConvTranspose2d")
        output_padding = self._output_padding(input, output_size, self.stride, self.padding, self.kernel_size, 2,
                                              self.dilation)  # fmt: skip
        return conv_transpose2d(input, self.weight, self.bias, self.stride, self.padding, output_padding, self.groups,
                                self.dilation, **self._epilogue())  # fmt: skip


class ConvTranspose3d(_EpilogueActivation, torch.nn.ConvTranspose3d):
    """Drop-in for `torch.nn.ConvTranspose3d`, in the same way as `ConvTranspose2d`."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: _size_3_t, stride: _size_3_t = 1,
        padding: _size_3_t = 0, output_padding: _size_3_t = 0, groups: int = 1, bias: bool = True,
        dilation: _size_3_t = 1, padding_mode: str = "zeros", device=None, dtype=None, *,
        activation: str | None = None, negative_slope: float = 0.01,
    ) -> None:  # fmt: skip
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, output_padding, groups, bias,
                         dilation, padding_mode, device, dtype, activation=activation,
                         negative_slope=negative_slope)  # fmt: skip

    def forward(self, input: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if self.padding_mode != "zeros":
            raise ValueError("Only `zeros` padding mode is supported for ConvTranspose3d")
        output_padding = self._output_padding(input, output_size, self.stride, self.padding, self.kernel_size, 3,
                                              self.dilation)  # fmt: skip
        return conv_transpose3d(input, self.weight, self.bias, self.stride, self.padding, output_padding, self.groups,
                                self.dilation, **self._epilogue())  # fmt: skip


class ConvTranspose1d(_EpilogueActivation, torch.nn.ConvTranspose1d):
    """Drop-in for `torch.nn.ConvTranspose1d`, in the same way as `ConvTranspose2d`."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: _size_1_t, stride: _size_1_t = 1,
        padding: _size_1_t = 0, output_padding: _size_1_t = 0, groups: int = 1, bias: bool = True,
        dilation: _size_1_t = 1, padding_mode: str = "zeros", device=None, dtype=None, *,
        activation: str | None = None, negative_slope: float = 0.01,
    ) -> None:  # fmt: skip
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, output_padding, groups, bias,
                         dilation, padding_mode, device, dtype, activation=activation,
                         negative_slope=negative_slope)  # fmt: skip

    def forward(self, input: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if self.padding_mode != "zeros":
            raise ValueError("Only `zeros` padding mode is supported for ConvTranspose1d")
        output_padding = self._output_padding(input, output_size, self.stride, self.padding, self.kernel_size, 1,
                                              self.dilation)  # fmt: skip
        return conv_transpose1d(input, self.weight, self.bias, self.stride, self.padding, output_padding, self.groups,
                                self.dilation, **self._epilogue())  # fmt: skip
