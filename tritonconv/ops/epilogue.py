"""What a forward launch does to its tile after the reduction, besides the bias: add a residual,
keep the pre-activation for the backward, apply an activation (`kernels/epilogue.py`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

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

    def tensors(self) -> tuple[torch.Tensor, ...]:
        """The tensors the epilogue reads or writes besides the output."""
        return tuple(t for t in (self.residual, self.preactivation) if t is not None)

    def residual_strides(self, rank: int = 4) -> tuple[int, ...]:
        return (0,) * rank if self.residual is None else tuple(self.residual.stride())

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


def torch_activation(output: torch.Tensor, activation: str, negative_slope: float = 0.01) -> torch.Tensor:
    """torch's own form of each fusable activation (the reference the fused kernels match)."""
    if activation == "relu":
        return F.relu(output)
    if activation == "silu":
        return F.silu(output)
    if activation == "gelu":
        return F.gelu(output)
    if activation == "gelu_tanh":
        return F.gelu(output, approximate="tanh")
    return F.leaky_relu(output, negative_slope)


def with_torch_epilogue(
    output: torch.Tensor, activation: str | None, residual: torch.Tensor | None, negative_slope: float
) -> torch.Tensor:
    """torch's unfused epilogue: the residual added, then the activation (None: none)."""
    if residual is not None:
        output = output + residual
    return output if activation is None else torch_activation(output, activation, negative_slope)
