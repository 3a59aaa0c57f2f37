"""Shared GPU timing: same inputs for every provider, do_bench medians, results stamped with versions."""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable

import pandas as pd
import torch
import triton
import triton.testing

from ..arithmetic import ConvProblem, make_problem


def require_gpu(command: str) -> None:
    if not torch.cuda.is_available():
        raise SystemExit(f"{command} needs a CUDA GPU: interpreter timings on a CPU say nothing about kernels")
    torch.backends.cudnn.benchmark = True


def median_ms(fn: Callable[[], object]) -> float:
    """Median of `triton.testing.do_bench` (which warms up and flushes L2 between runs)."""
    return triton.testing.do_bench(fn, return_mode="median")


def graph_ms(fn: Callable[[], object]) -> float:
    """Median time of `fn` replayed from a CUDA graph: the GPU's time alone, with no host work between
    launches. Next to `median_ms` it separates a slow kernel from a slow Python path or launch."""
    return triton.testing.do_bench_cudagraph(fn, return_mode="median")


def channels_last_inputs(problem: ConvProblem) -> tuple[torch.Tensor, torch.Tensor]:
    """Random input and weight for `problem` on the GPU, in its dtype, both channels_last."""
    cl = torch.channels_last
    x = torch.randn(problem.input_shape, device="cuda", dtype=problem.dtype).to(memory_format=cl)
    weight = torch.randn(problem.weight_shape, device="cuda", dtype=problem.dtype).to(memory_format=cl)
    return x, weight


@dataclasses.dataclass
class LayerTensors:
    """One ResNet-style layer (name, c, h, k, r, stride, padding) at a batch size, with channels_last
    input, weight and grad_output on the GPU, and cuDNN's backward on exactly those tensors."""

    problem: ConvProblem
    x: torch.Tensor
    weight: torch.Tensor
    grad_output: torch.Tensor
    stride: int
    padding: int

    def cudnn_backward(self, pass_index: int) -> Callable[[], torch.Tensor]:
        """The gradient autograd's `aten::convolution_backward` computes: 0 for the input's, 1 for
        the weight's (asking for that one alone)."""
        geometry = ([self.stride] * 2, [self.padding] * 2, [1, 1], False, [0, 0], 1)
        mask = [index == pass_index for index in range(3)]
        return lambda: torch.ops.aten.convolution_backward(
            self.grad_output, self.x, self.weight, None, *geometry, mask
        )[pass_index]


def layer_problem(layer: tuple, batch: int, dtype: torch.dtype) -> ConvProblem:
    """The problem of a (name, c, h, k, r, stride, padding) layer: square, channels_last."""
    _, c, h, k, r, stride, padding = layer
    return make_problem(
        n=batch, c=c, h=h, w=h, k=k, r=r, s=r, stride=stride, padding=padding, dtype=dtype, layout="channels_last"
    )


def layer_tensors(layer: tuple, batch: int, dtype: torch.dtype) -> LayerTensors:
    problem = layer_problem(layer, batch, dtype)
    x, weight = channels_last_inputs(problem)
    grad_output = torch.randn(problem.output_shape, device=x.device, dtype=dtype).to(memory_format=torch.channels_last)
    return LayerTensors(problem, x, weight, grad_output, problem.stride[0], problem.padding[0])


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    """max |got - expected| / max |expected|, in float64 (the plain max difference when `expected`
    is all zeros)."""
    difference = (got.double() - expected.double()).abs().max().item()
    scale = expected.double().abs().max().item()
    return difference / scale if scale else difference


def stamp(table: pd.DataFrame, device: str | None = None) -> pd.DataFrame:
    """Add device (default: the current GPU's name), versions and time, so every row says where its
    numbers came from."""
    return table.assign(
        device=device or torch.cuda.get_device_name(),
        torch_version=torch.__version__,
        triton_version=triton.__version__,
        timestamp=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    )
