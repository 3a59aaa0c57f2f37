"""Time tritonconv and its baselines on a suite's layers: one row per layer x pass x dtype x layout.

For every (layer, pass) the same tensors feed every provider, in one process:
- `triton`: tritonconv with the plan it would run (tuned cache, shipped table or heuristic);
- `torch`: what autograd runs, with `torch.backends.cudnn.benchmark = True` (cuDNN on a GPU):
  `F.conv2d` forward, `aten::convolution_backward` asking for the one gradient of the pass;
- `inductor` (optional): the same torch call under `torch.compile(mode="max-autotune")`.
Each result is checked against torch's before anything is timed. On a GPU the times are
`triton.testing.do_bench` medians (warm-up first, L2 flushed between runs), plus the median of
CUDA-graph replays (the GPU's time alone, no host work). Without a GPU the kernels run in Triton's
interpreter: one wall-clock run each, which says nothing about kernels (the `device` column says so).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F

from ..arithmetic import ConvProblem
from ..dispatch import plan_pass
from ..ops.epilogue import NO_EPILOGUE
from ..prepared import PreparedConv
from ..suites import SuiteLayer
from ..tuning.fingerprint import device_slug
from ..tuning.tuner import TOLERANCE, interpreted
from .timing import graph_ms, median_ms, relative_error

BASELINES = ("torch", "inductor")
PASS_INDEX = {"dgrad": 0, "wgrad": 1}


@dataclasses.dataclass
class Measurement:
    """One (layer, pass): what ran, how long each provider took, and how far tritonconv was from torch."""

    layer: SuiteLayer
    pass_name: str
    variant: str
    config: dict
    config_source: str
    times_ms: dict[str, float]  # provider -> median ms ('triton', 'torch', 'inductor', '<provider>_graph')
    max_rel_err: float
    correct: bool


def on_gpu() -> bool:
    return torch.cuda.is_available() and not interpreted()


def _tensors(problem: ConvProblem, device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)

    def tensor(shape):
        return torch.randn(shape, generator=generator).to(device, problem.dtype).to(memory_format=problem.memory_format)

    return tensor(problem.input_shape), tensor(problem.weight_shape), tensor(problem.output_shape)


def _providers(
    problem: ConvProblem, pass_name: str, baselines: Iterable[str], device: str
) -> dict[str, Callable[[], torch.Tensor]]:
    x, weight, grad_output = _tensors(problem, device)
    prepared = PreparedConv(problem, x, weight, NO_EPILOGUE)  # planned once, as a repeated call is
    geometry = dict(stride=problem.stride, padding=problem.padding, dilation=problem.dilation, groups=problem.groups)
    if pass_name == "fwd":

        def torch_call():
            return F.conv2d(x, weight, **geometry)

        providers = {"triton": lambda: prepared.forward(x, weight, None)}
    else:
        index = PASS_INDEX[pass_name]
        mask = [i == index for i in range(3)]
        flat = (list(problem.stride), list(problem.padding), list(problem.dilation), False, [0, 0], problem.groups)

        def torch_call():
            return torch.ops.aten.convolution_backward(grad_output, x, weight, None, *flat, mask)[index]

        if pass_name == "dgrad":
            providers = {"triton": lambda: prepared.input_grad(grad_output, weight)}
        else:
            providers = {"triton": lambda: prepared.weight_grad(x, grad_output)}
    if "torch" in baselines:
        providers["torch"] = torch_call
    if "inductor" in baselines:
        # Every layer's closure shares one code object: without a reset, dynamo's recompile limit
        # would quietly leave later layers running eager torch under the "inductor" name.
        torch.compiler.reset()
        providers["inductor"] = torch.compile(torch_call, mode="max-autotune", dynamic=False)
    return providers


def _gpu_times(fn: Callable[[], object]) -> tuple[float, float]:
    return median_ms(fn), graph_ms(fn)


def _interpreter_ms(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def measure(layer: SuiteLayer, pass_name: str, baselines: Iterable[str] = ("torch",)) -> Measurement:
    """Check tritonconv against torch on one layer and pass, then time every provider."""
    problem = layer.problem
    device = "cuda" if on_gpu() else "cpu"
    providers = _providers(problem, pass_name, ("torch", *baselines), device)
    got, expected = providers["triton"](), providers["torch"]()  # also their warm-up
    error = relative_error(got, expected)
    times = {}
    for name, fn in providers.items():
        if name not in ("triton", *baselines):
            continue
        if name not in ("triton", "torch"):
            fn()  # warm-up: compiles now, not inside the timed run
        if device == "cuda":
            times[name], times[f"{name}_graph"] = _gpu_times(fn)
        else:
            times[name] = _interpreter_ms(fn)
    plan = plan_pass(problem, pass_name)
    return Measurement(
        layer, pass_name, plan.variant, plan.config.as_dict(), plan.config_source, times, error,
        error <= TOLERANCE[problem.dtype],
    )  # fmt: skip


def device_name() -> str:
    """What the `device` column says: the GPU's slug, or that times are the interpreter's."""
    return device_slug() if on_gpu() else "cpu (Triton interpreter: times are not GPU figures)"
