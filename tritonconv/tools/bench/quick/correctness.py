"""Stage a of the quick run: every kernel route of every pass, in every precision, against torch in float64.

The interpreter cannot check a bf16 `tl.dot` (it computes it wrongly) nor TF32 (it multiplies fp32
exactly), so this is the first thing a GPU is asked. Each route that computes a layer of a small
suite (`registry.routes`: the rule's choice and every alternative) runs at its heuristic config on
NaN-poisoned outputs, in bf16, fp16, fp32 with TF32 and fp32 IEEE, in both memory formats, and is
held to the bound `torch_reference.error_bound` states (scaled with the reduction length).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator

import torch

from ....problem.arithmetic import CHANNELS_LAST, CONTIGUOUS, ConvProblem
from ....problem.suites import load_suite
from ....problem.torch_reference import error_bound
from ....routes.registry import Pass, routes, spec
from ....tuning.cost_model import gemm_sides
from ....tuning.tuner import make_workload, poisoned_outputs, torch_answer

# name -> (dtype, TF32 allowed for fp32 convolutions)
PRECISIONS = {"bf16": (torch.bfloat16, True), "fp16": (torch.float16, True), "tf32": (torch.float32, True),
              "fp32 ieee": (torch.float32, False)}  # fmt: skip
LAYOUTS = (CHANNELS_LAST, CONTIGUOUS)
COLUMNS = ("layer", "pass", "variant", "precision", "layout", "config", "reduction", "max_abs_error",
           "error_over_bound", "verdict")  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Check:
    """One route of one pass of one layer in one precision and layout."""

    layer: str
    problem: ConvProblem
    pass_name: str
    variant: str
    precision: str


def checks(suite: str, batch: int | None, precisions: tuple[str, ...], layouts: tuple[str, ...]) -> list[Check]:
    """Every (layer, pass, route, precision, layout) of the suite, in a fixed order."""
    found = []
    for name in precisions:
        dtype = PRECISIONS[name][0]
        for layout in layouts:
            for layer in load_suite(suite, batch=batch, dtype=dtype, layout=layout):
                for pass_name in Pass:
                    for variant in routes(layer.problem, pass_name):
                        found.append(Check(layer.name, layer.problem, str(pass_name), str(variant), name))
    return found


@contextlib.contextmanager
def precision(name: str) -> Iterator[None]:
    """torch's TF32 switch for convolutions (which tritonconv follows) as `name` wants it."""
    saved = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = PRECISIONS[name][1]
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = saved


def launcher(check: Check, device: torch.device) -> Callable[[], object]:
    """The check's route at its heuristic config on random operands, for capturing its launches."""
    workload = make_workload(check.problem, check.pass_name, device, answer=False)
    config = spec(check.pass_name, check.variant).heuristic(check.problem)

    def run() -> object:
        with precision(check.precision):
            return workload.run(check.variant, config)

    return run


def run_check(check: Check, device: torch.device) -> dict:
    """Run the route on poisoned outputs and hold it to the float64 bound; one report row."""
    problem, pass_name = check.problem, check.pass_name
    config = spec(pass_name, check.variant).heuristic(problem)
    reduction = gemm_sides(problem, pass_name)[2]
    row = {"layer": check.layer, "pass": pass_name, "variant": check.variant, "precision": check.precision,
           "layout": problem.layout, "config": config.as_text(),
           "reduction": reduction}  # fmt: skip
    try:
        workload = make_workload(problem, pass_name, device, reference_dtype=torch.float64)
        with precision(check.precision), poisoned_outputs():
            got = workload.run(check.variant, config).to(torch.float64)
        magnitude = torch_answer(problem, pass_name, *(t.abs() for t in workload.operands), torch.float64)
    except Exception as error:  # a route that fails to compile or launch: the finding, not a crash
        return {**row, "verdict": f"error: {type(error).__name__}: {' '.join(str(error).split())[:200]}"}
    if torch.isnan(got).any():
        return {**row, "verdict": f"wrong: {int(torch.isnan(got).sum())} elements never written (NaN)"}
    tf32 = problem.dtype == torch.float32 and PRECISIONS[check.precision][1] and device.type == "cuda"
    bound = error_bound(workload.expected, magnitude, "tf32" if tf32 else problem.dtype, reduction)
    error = (got - workload.expected).abs()
    ratio = float((error / bound.clamp_min(1e-300)).max())
    verdict = "ok" if ratio <= 1 else f"wrong: error {ratio:.3g}x the bound"
    return {**row, "max_abs_error": float(error.max()), "error_over_bound": ratio, "verdict": verdict}
