"""`tritonconv.Conv2d` and `tritonconv.Conv1d`: `torch.nn` convolutions whose convolution runs
through tritonconv's kernels (1-D through the 2-D kernels with H = 1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .functional import conv1d, conv2d


class _TritonConvolution:
    """Only `_conv_forward` is replaced, the method `nn.Conv1d/2d.forward` calls, so everything else
    is torch's own code. Non-zero padding modes ('reflect', 'replicate', 'circular') pad the input
    the way torch does and then run the kernel unpadded; 'zeros' padding happens inside the kernel.
    `_convolve` is the functional form (patched modules swap in one that falls back to torch)."""

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if self.padding_mode != "zeros":
            padded = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return self._convolve(padded, weight, bias, self.stride, 0, self.dilation, self.groups)
        return self._convolve(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)


class Conv2d(_TritonConvolution, torch.nn.Conv2d):
    """Drop-in for `torch.nn.Conv2d`: same constructor and defaults, same parameters and state_dict
    keys (checkpoints load both ways), same repr, hooks and padding modes."""

    _convolve = staticmethod(conv2d)


class Conv1d(_TritonConvolution, torch.nn.Conv1d):
    """Drop-in for `torch.nn.Conv1d`, in the same way `Conv2d` is for `nn.Conv2d`."""

    _convolve = staticmethod(conv1d)
