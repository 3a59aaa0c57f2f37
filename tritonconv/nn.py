"""`tritonconv.Conv2d`: a `torch.nn.Conv2d` whose convolution runs through tritonconv's kernels."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .functional import conv2d


class Conv2d(nn.Conv2d):
    """Drop-in for `torch.nn.Conv2d`: same constructor and defaults, same parameters and state_dict
    keys (checkpoints load both ways), same repr, hooks and padding modes.

    Only `_conv_forward` is replaced, the method `nn.Conv2d.forward` calls, so everything else is
    torch's own code. Non-zero padding modes ('reflect', 'replicate', 'circular') pad the input the
    way torch does and then run the kernel unpadded; 'zeros' padding happens inside the kernel.
    """

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if self.padding_mode != "zeros":
            padded = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return conv2d(padded, weight, bias, self.stride, 0, self.dilation, self.groups)
        return conv2d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)
