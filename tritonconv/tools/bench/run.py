"""Time tritonconv and its baselines on a suite's layers: one row per layer x pass x dtype x layout.

For every (layer, pass) the same tensors feed every provider, in one process:
- `triton`: tritonconv with the plan it would run (tuned cache, shipped table or heuristic);
- `torch`: what autograd runs, with `torch.backends.cudnn.benchmark = True` (cuDNN on a GPU):
  `F.conv2d` forward, `aten::convolution_backward` asking for the one gradient of the pass;
- `inductor` (optional): the same torch call under `torch.compile(mode="max-autotune")`.
Each result is checked against torch's before anything is timed. On a GPU the times are
`triton.testing.do_bench` medians (warm-up first, L2 flushed between runs), plus the median of
CUDA-graph replays (the GPU's time alone, no host work). Without a GPU the kernels run in Triton's
interpreter: medians of several wall-clock runs (`timing.cpu_median_ms`), stable from run to run
but saying nothing about kernels (the `device` column and the summary say so).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from ...plan.dispatch import plan_pass
from ...problem.suites import SuiteLayer
from ...tuning.fingerprint import device_slug
from ...tuning.tuner import TOLERANCE
from . import harness
from .harness import on_gpu


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


def measure(layer: SuiteLayer, pass_name: str, baselines: Iterable[str] = ("torch",)) -> Measurement:
    """Check tritonconv against torch on one layer and pass, then time every provider."""
    case = harness.make_case(layer, pass_name)
    rows = harness.measure(case, ("triton", "torch", *baselines))
    times = {}
    for row in rows:
        if row["provider"] in ("triton", *baselines):
            times[row["provider"]] = row["ms"]
            if on_gpu():
                times[f"{row['provider']}_graph"] = row["graph_ms"]
    error = next(row["max_rel_err"] for row in rows if row["provider"] == "triton")
    plan = plan_pass(case.prepared.problem, pass_name)  # a planar 3-D layer's: its 2-D problem's
    return Measurement(
        layer, pass_name, plan.variant, plan.config.as_dict(), plan.config_source, times, error,
        error <= TOLERANCE[layer.problem.dtype],
    )  # fmt: skip


def device_name() -> str:
    """What the `device` column says: the GPU's slug, or that times are the interpreter's."""
    return device_slug() if on_gpu() else "cpu (Triton interpreter: times are not GPU figures)"
