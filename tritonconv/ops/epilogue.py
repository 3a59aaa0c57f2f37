"""What a forward launch does to its tile after the reduction, besides the bias: add a residual,
keep the pre-activation for the backward, apply an activation (`kernels/epilogue.py`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton

from ..arithmetic import is_channels_last_like
from ..kernels import _activation_grad_kernel
from ..runtime import new_output, on_device_of
from .common import needs_int64

ACTIVATIONS = ("relu", "silu", "gelu", "gelu_tanh", "leaky_relu")


@dataclass(frozen=True)
class Epilogue:
    """`activation` is '' for none; `residual` is added before it, and `preactivation`, when given,
    receives conv + bias + residual (what the backward of silu and gelu needs)."""

    activation: str = ""
    negative_slope: float = 0.01
    residual: torch.Tensor | None = None
    preactivation: torch.Tensor | None = None

    @property
    def reads_or_writes_extra(self) -> bool:
        """True when the epilogue touches a tensor besides the output (no tensor-descriptor store then)."""
        return self.residual is not None or self.preactivation is not None

    def pointers(self, output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The kernels' residual and pre-activation slots; the output stands in for an absent one, unread."""
        return (
            output if self.residual is None else self.residual,
            output if self.preactivation is None else self.preactivation,
        )

    def residual_strides(self) -> tuple[int, ...]:
        return (0, 0, 0, 0) if self.residual is None else self.residual.stride()

    def kwargs(self) -> dict[str, object]:
        return {
            "HAS_RESIDUAL": self.residual is not None,
            "ACTIVATION": self.activation,
            "NEGATIVE_SLOPE": slope_constant(self.activation, self.negative_slope),
            "STORE_PREACTIVATION": self.preactivation is not None,
        }

    def chunk(self, start: int, stop: int) -> Epilogue:
        """The epilogue of the batch images [start, stop)."""
        if not self.reads_or_writes_extra:
            return self
        residual = None if self.residual is None else self.residual[start:stop]
        preactivation = None if self.preactivation is None else self.preactivation[start:stop]
        return Epilogue(self.activation, self.negative_slope, residual, preactivation)


NO_EPILOGUE = Epilogue()


def slope_constant(activation: str, negative_slope: float) -> float:
    """The NEGATIVE_SLOPE constexpr: only leaky_relu reads it, so every other activation passes one
    constant and compiles once whatever slope the caller gave."""
    return float(negative_slope) if activation == "leaky_relu" else 0.0


def saves_output(activation: str, negative_slope: float) -> bool:
    """Whether the activation's derivative can be read off its output (relu; leaky_relu with a
    slope >= 0), so the backward needs no pre-activation tensor."""
    return activation == "relu" or (activation == "leaky_relu" and negative_slope >= 0)


def activation_grad(
    grad_output: torch.Tensor, saved: torch.Tensor, activation: str, negative_slope: float
) -> torch.Tensor:
    """dL/dz = dL/dy * activation'(z), one Triton pass, laid out like `grad_output`; `saved` is the
    output when `saves_output`, else the pre-activation."""
    channels_last = is_channels_last_like(grad_output)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    grad = new_output(tuple(grad_output.shape), grad_output, memory_format)
    _, k, p, q = grad.shape
    block = 1024
    with on_device_of(grad_output):
        _activation_grad_kernel[(triton.cdiv(grad.numel(), block),)](
            grad_output,
            saved,
            grad,
            k,
            p,
            q,
            grad.numel(),
            *grad_output.stride(),
            *saved.stride(),
            *grad.stride(),
            ACTIVATION=activation,
            NEGATIVE_SLOPE=slope_constant(activation, negative_slope),
            CHANNELS_INNER=channels_last,
            INDEX_64=needs_int64(grad_output, saved, grad) or grad.numel() > 2**31 - 1 - block,
            ACC_FP64=grad.dtype == torch.float64,
            BLOCK=block,
        )
    return grad
