"""Stand-ins for the model-zoo patterns `patch` must serve, written here with the same structure as
the real ones (timm and Hugging Face cannot be imported on a CPU-only torch: timm imports
torchvision, whose wheel is built against CUDA torch):

- `Conv2dSame`: TensorFlow-style dynamic 'same' padding computed in forward, then `F.conv2d`
  (timm's `tf_*` models);
- `StdConv2d` / `ScaledStdConv2d`: weight standardisation in forward through `F.batch_norm` on the
  weight, then `F.conv2d` (timm's NFNets, BiT, ViT-hybrid stems);
- `WeightStandardizedConv2d`: the same through `nn.functional` (Hugging Face's BiT);
- `BatchNormAct2d`: a BatchNorm2d subclass that applies `drop` then `act` after normalizing, and
  `ConvNormAct`, a conv followed by one, as a wrapper module (timm's RegNet, EfficientNet,
  MobileNetV3 building blocks).

And small models built from them: NFNet-, BiT- and TF-EfficientNet-style (custom-forward convs) and
RegNet-, EfficientNet- and MobileNetV3-style (norm-act modules, for fusion).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn


def same_padding(size: int, kernel: int, stride: int, dilation: int) -> int:
    return max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)


class Conv2dSame(nn.Conv2d):
    """'same' padding decided per input size in forward (possibly uneven), then an unpadded conv."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, dilation=1, groups=1, bias=True):
        super().__init__(in_channels, out_channels, kernel_size, stride, 0, dilation, groups, bias)

    def forward(self, x):
        pad_h = same_padding(x.shape[-2], self.kernel_size[0], self.stride[0], self.dilation[0])
        pad_w = same_padding(x.shape[-1], self.kernel_size[1], self.stride[1], self.dilation[1])
        x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, (0, 0), self.dilation, self.groups)


class StdConv2d(nn.Conv2d):
    """Weights standardised per output channel in every forward."""

    def __init__(self, *args, eps=1e-6, **kwargs):
        super().__init__(*args, **kwargs)
        self.eps = eps

    def forward(self, x):
        flat = self.weight.reshape(1, self.out_channels, -1)
        weight = F.batch_norm(flat, None, None, training=True, momentum=0.0, eps=self.eps).reshape_as(self.weight)
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class ScaledStdConv2d(nn.Conv2d):
    """Standardised weights scaled by a learned gain and 1/sqrt(fan-in) (NFNets)."""

    def __init__(self, *args, eps=1e-6, **kwargs):
        super().__init__(*args, **kwargs)
        self.gain = nn.Parameter(torch.ones(self.out_channels, 1, 1, 1))
        self.scale = self.weight[0].numel() ** -0.5
        self.eps = eps

    def forward(self, x):
        flat = self.weight.reshape(1, self.out_channels, -1)
        weight = F.batch_norm(flat, None, None, weight=(self.gain * self.scale).view(-1), training=True, momentum=0.0,
                              eps=self.eps).reshape_as(self.weight)  # fmt: skip
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class WeightStandardizedConv2d(nn.Conv2d):
    """Hugging Face BiT's: the standardisation through `nn.functional`, padding done in forward."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, eps=1e-8):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding=0, bias=False)
        self.pad = nn.ZeroPad2d(kernel_size // 2) if kernel_size > 1 else None
        self.eps = eps

    def forward(self, hidden_state):
        if self.pad is not None:
            hidden_state = self.pad(hidden_state)
        flat = self.weight.reshape(1, self.out_channels, -1)
        weight = nn.functional.batch_norm(flat, None, None, training=True, momentum=0.0, eps=self.eps)
        return nn.functional.conv2d(hidden_state, weight.reshape_as(self.weight), self.bias, self.stride,
                                    self.padding, self.dilation, self.groups)  # fmt: skip


class BatchNormAct2d(nn.BatchNorm2d):
    """Normalize, then `drop`, then `act` (an identity when `act_layer` is None)."""

    def __init__(self, num_features, act_layer=nn.ReLU, drop_layer=None):
        super().__init__(num_features)
        self.drop = drop_layer() if drop_layer is not None else nn.Identity()
        self.act = act_layer() if act_layer is not None else nn.Identity()

    def forward(self, x):
        x = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                         self.training, self.momentum, self.eps)  # fmt: skip
        return self.act(self.drop(x))


class ConvNormAct(nn.Module):
    """A conv and its norm-act, as one wrapper module."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, groups=1, act_layer=nn.ReLU):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups,
                              bias=False)  # fmt: skip
        self.bn = BatchNormAct2d(out_channels, act_layer)

    def forward(self, x):
        return self.bn(self.conv(x))


class SqueezeExcite(nn.Module):
    def __init__(self, channels, reduced, gate=nn.Sigmoid):
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.act = nn.ReLU()
        self.expand = nn.Conv2d(reduced, channels, 1)
        self.gate = gate()

    def forward(self, x):
        scale = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.expand(self.act(self.reduce(scale))))


# ---- custom-forward convs: served through routed functional calls ----------------------------


class NFNetStyle(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = ScaledStdConv2d(3, 8, 3, stride=2, padding=1)
        self.conv1 = ScaledStdConv2d(8, 8, 1)
        self.conv2 = ScaledStdConv2d(8, 8, 3, padding=1, groups=2)
        self.same = Conv2dSame(8, 8, 3, stride=2)
        self.act = nn.GELU()

    def forward(self, x):
        x = self.act(self.stem(x))
        x = x + self.conv2(self.act(self.conv1(x))) * 0.2
        return self.same(x)


class BiTStyle(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = StdConv2d(3, 8, 3, stride=2, padding=1, bias=False)
        self.norm = nn.GroupNorm(2, 8)
        self.conv1 = WeightStandardizedConv2d(8, 8, 1)
        self.conv2 = WeightStandardizedConv2d(8, 8, 3)

    def forward(self, x):
        x = torch.relu(self.norm(self.stem(x)))
        return x + self.conv2(torch.relu(self.conv1(x)))


class TFEfficientNetStyle(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv_stem = Conv2dSame(3, 8, 3, stride=2, bias=False)
        self.bn1 = BatchNormAct2d(8, nn.SiLU)
        self.conv_dw = Conv2dSame(8, 8, 3, stride=2, groups=8, bias=False)
        self.bn2 = BatchNormAct2d(8, nn.SiLU)
        self.se = SqueezeExcite(8, 4)
        self.conv_pw = nn.Conv2d(8, 16, 1, bias=False)
        self.bn3 = BatchNormAct2d(16, None)

    def forward(self, x):
        x = self.bn1(self.conv_stem(x))
        return self.bn3(self.conv_pw(self.se(self.bn2(self.conv_dw(x)))))


# ---- norm-act modules: folded by fuse=True --------------------------------------------------


class RegNetBlock(nn.Module):
    def __init__(self, channels, groups):
        super().__init__()
        self.conv1 = ConvNormAct(channels, channels, 1)
        self.conv2 = ConvNormAct(channels, channels, 3, groups=groups)
        self.se = SqueezeExcite(channels, channels // 4)
        self.conv3 = ConvNormAct(channels, channels, 1, act_layer=None)
        self.act3 = nn.ReLU()

    def forward(self, x):
        return self.act3(self.conv3(self.se(self.conv2(self.conv1(x)))) + x)


class RegNetStyle(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = ConvNormAct(3, 8, 3, stride=2)
        self.blocks = nn.Sequential(RegNetBlock(8, 2), RegNetBlock(8, 4))

    def forward(self, x):
        return self.blocks(self.stem(x))


class DepthwiseSeparable(nn.Module):
    def __init__(self, channels, out_channels, act_layer):
        super().__init__()
        self.conv_dw = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.bn1 = BatchNormAct2d(channels, act_layer)
        self.se = SqueezeExcite(channels, 4)
        self.conv_pw = nn.Conv2d(channels, out_channels, 1, bias=False)
        self.bn2 = BatchNormAct2d(out_channels, None)
        self.residual = channels == out_channels

    def forward(self, x):
        shortcut = x
        x = self.bn2(self.conv_pw(self.se(self.bn1(self.conv_dw(x)))))
        return x + shortcut if self.residual else x  # data-dependent only on a constructor flag


class EfficientNetStyle(nn.Module):
    def __init__(self, act_layer=nn.SiLU):
        super().__init__()
        self.conv_stem = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False)
        self.bn1 = BatchNormAct2d(8, act_layer)
        self.blocks = nn.Sequential(DepthwiseSeparable(8, 8, act_layer), DepthwiseSeparable(8, 16, act_layer))
        self.conv_head = nn.Conv2d(16, 32, 1, bias=False)
        self.bn2 = BatchNormAct2d(32, act_layer)

    def forward(self, x):
        return self.bn2(self.conv_head(self.blocks(self.bn1(self.conv_stem(x)))))


class MobileNetV3Style(EfficientNetStyle):
    """Hard-swish in the stem and head (no epilogue for it: folded, then applied), ReLU inside."""

    def __init__(self):
        super().__init__(nn.ReLU)
        self.bn1 = BatchNormAct2d(8, nn.Hardswish)
        self.bn2 = BatchNormAct2d(32, nn.Hardswish)
        self.blocks[0].se = SqueezeExcite(8, 4, gate=nn.Hardsigmoid)


class UntraceableRegNetStyle(RegNetStyle):
    """Data-dependent control flow at the top: the model does not trace whole, its wrappers do."""

    def forward(self, x):
        if x.shape[-1] % 2:
            x = F.pad(x, (0, 1, 0, 1))
        return super().forward(x)
