"""Benchmarking in the quick run: a suite's passes against cuDNN, its host time, a whole model's step.

`bench_suite` times each (layer, pass) five ways on the same tensors, eager (`do_bench`) and in
CUDA-graph replay: tritonconv as it plans now (`tuned`: the table stage b filled, whose choice may be
torch's own kernel where that won), the best Triton candidate of that tuning alone (`triton`), the
untimed rule (`heuristic`), the TMA route at its heuristic config where it applies (`tma`), and torch
with `cudnn.benchmark = True` (`torch`). `host_suite` is the host benchmark's calls on the same layers.
`model_steps` times a model, patched and not: a training step (eager) and inference with
`fuse=True` (eager and graph), at each batch size.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch

from ....models.patch import patch
from ....plan.dispatch import heuristic_plan, plan_pass
from ....problem.config import KernelConfig
from ....problem.suites import load_suite
from ....routes.registry import Pass, Plan, Variant, routes, spec
from ....tuning.session import find_entry
from ....tuning.tuner import TOLERANCE, best_triton
from .. import harness
from ..host import host_rows
from .context import QuickRun

PROVIDERS = ("tuned", "triton", "heuristic", "tma", "torch")


def _tma_plan(problem, pass_name: str) -> Plan | None:
    if Variant.TMA not in routes(problem, pass_name):
        return None
    return Plan(Variant.TMA, spec(pass_name, Variant.TMA).heuristic(problem), "tma heuristic")


def _triton_plan(problem, pass_name: str) -> Plan:
    """The best Triton candidate tuning found (its "triton" part: the entry's choice when that is a
    Triton route, kept beside torch's time when torch won), else the untimed rule's plan."""
    found = find_entry(problem, pass_name, borrow=False)
    best = None if found is None else best_triton(found[0])
    if best is None:
        return heuristic_plan(problem, pass_name)
    return Plan(Variant(best["variant"]), KernelConfig(**best["config"]), "tuned, Triton alone")


def providers() -> dict[str, harness.Provider]:
    return {
        "tuned": harness.PROVIDERS["triton"],
        "triton": harness.pinned_provider(_triton_plan),
        "heuristic": harness.pinned_provider(heuristic_plan),
        "tma": harness.pinned_provider(_tma_plan),
        "torch": harness.PROVIDERS["torch"],
    }


def _plan_of(provider: str, case: harness.Case) -> Plan | None:
    if provider == "tuned":
        return plan_pass(case.prepared.problem, case.pass_name)
    if provider == "triton":
        return None if case.planar is not None else _triton_plan(case.problem, case.pass_name)
    if provider == "heuristic":
        return heuristic_plan(case.problem, case.pass_name)
    return _tma_plan(case.problem, case.pass_name) if provider == "tma" else None


def launchers(run: QuickRun, suite: str) -> list[Callable[[], object]]:
    """Each pinned provider's call of every (layer, pass), for capturing their launches (the tuned
    plans are among the tuning stage's candidates)."""
    calls = []
    for layer in load_suite(suite, batch=run.batch, dtype=run.dtype, layout=run.layout):
        for pass_name in Pass:
            case = harness.make_case(layer, str(pass_name), device=str(run.torch_device))
            for name in ("heuristic", "tma"):
                call = providers()[name](case)
                if call is not None:
                    calls.append(call)
    return calls


def timed_calls(run: QuickRun, suite: str) -> tuple[int, int]:
    """(layer-passes, provider calls) `bench_suite` times, counted without tensors where the count
    does not need them: tuned and torch always, Triton alone, the rule and TMA where they apply; a 3-D layer's case
    is built, since only its tensors say whether it runs as a planar 2-D convolution (never pinned)."""
    passes = calls = 0
    for layer in load_suite(suite, batch=run.batch, dtype=run.dtype, layout=run.layout):
        for pass_name in Pass:
            passes += 1
            case = (
                harness.make_case(layer, str(pass_name), device=str(run.torch_device)) if layer.problem.is_3d else None
            )
            planar = case is not None and case.planar is not None
            calls += 2 + (0 if planar else 2 + (_tma_plan(layer.problem, str(pass_name)) is not None))
    return passes, calls


def bench_suite(run: QuickRun, suite: str, stage: str) -> pd.DataFrame:
    """Every (layer, pass) of the suite by every provider into `quick_<suite>.csv`; resumes from
    the journal."""
    journal = run.journal(stage)
    done = journal.keys()
    timer = lambda fn: (run.timers.eager(fn), run.timers.graph(fn))  # noqa: E731
    for layer in load_suite(suite, batch=run.batch, dtype=run.dtype, layout=run.layout):
        for pass_name in Pass:
            key = f"{layer.name}|{pass_name}"
            if key in done:
                continue
            run.check_time(f"benchmarking {key}")
            case = harness.make_case(layer, str(pass_name), device=str(run.torch_device))
            rows = harness.measure(case, providers(), reference="torch", timer=timer)
            found = []
            for row in rows:
                plan = _plan_of(row["provider"], case)
                found.append({
                    "key": key, "layer": layer.name, "count": layer.count, "pass": str(pass_name), **row,
                    "correct": row["max_rel_err"] <= TOLERANCE[layer.problem.dtype],
                    "variant": None if plan is None else str(plan.variant),
                    "config": None if plan is None else plan.config.as_text(),
                    "config_source": None if plan is None else plan.config_source,
                })  # fmt: skip
            journal.add(found)
    table = pd.DataFrame(journal.rows()).assign(suite=Path(suite).stem, device=run.device, dtype=str(run.dtype)[6:],
                                                layout=run.layout)  # fmt: skip
    table.to_csv(run.reports / f"quick_{Path(suite).stem}.csv", index=False)
    journal.close()
    return table


def host_suite(run: QuickRun, suite: str) -> pd.DataFrame:
    """The host benchmark's calls on the suite's layers into `quick_host_<suite>.csv`."""
    layers = load_suite(suite, batch=run.batch, dtype=run.dtype, layout=run.layout)
    table = pd.DataFrame(host_rows(layers, run.gpu, run.timers.host)).assign(device=run.device)
    table.to_csv(run.reports / f"quick_host_{Path(suite).stem}.csv", index=False)
    return table


@dataclasses.dataclass
class ModelCase:
    """One batch size of the model: its timed calls (unpatched and patched copies on one input)."""

    batch: int
    calls: dict[str, Callable[[], object]]


def model_case(run: QuickRun, batch: int) -> ModelCase:
    """The model four ways at `batch`: train step and inference, unpatched and patched (`fuse=True`
    for inference, which folds eval-mode BatchNorm into the convolutions)."""
    device, memory_format = run.torch_device, torch.channels_last
    base = run.model().to(device=device, dtype=run.dtype, memory_format=memory_format)
    x = torch.randn(batch, *run.model_input, device=device).to(run.dtype).to(memory_format=memory_format)
    train_plain, train_patched = base.train(), copy.deepcopy(base).train()
    patch(train_patched)
    infer_plain = copy.deepcopy(base).eval()
    infer_patched = copy.deepcopy(base).eval()
    patch(infer_patched, fuse=True)

    def train_step(model: torch.nn.Module) -> Callable[[], object]:
        parameters = [p for p in model.parameters() if p.requires_grad]

        def step() -> None:
            for parameter in parameters:
                parameter.grad = None
            model(x).float().sum().backward()

        return step

    def infer(model: torch.nn.Module) -> Callable[[], object]:
        def forward() -> torch.Tensor:
            with torch.no_grad():
                return model(x)

        return forward

    calls = {
        "train step unpatched": train_step(train_plain),
        "train step patched": train_step(train_patched),
        "inference unpatched": infer(infer_plain),
        "inference patched fuse=True": infer(infer_patched),
    }
    return ModelCase(batch, calls)


def model_launchers(run: QuickRun) -> list[Callable[[], object]]:
    """The patched calls of every batch size, for capturing their launches."""
    if run.model is None:
        return []
    calls = []
    for batch in run.model_batches:
        case = model_case(run, batch)
        calls += [call for name, call in case.calls.items() if name.endswith(("patched", "fuse=True"))]
    return calls


def model_steps(run: QuickRun) -> pd.DataFrame:
    """Each batch size's four calls, eager (and graph for inference), into `quick_model.csv`; the
    patched inference's largest error relative to the unpatched one's output."""
    rows = []
    if run.model is None:
        rows.append({"model": run.model_name, "status": "not run: no model factory (torchvision not installed)"})
    for batch in run.model_batches if run.model is not None else ():
        run.check_time(f"the model at batch {batch}")
        case = model_case(run, batch)
        plain, fused = case.calls["inference unpatched"](), case.calls["inference patched fuse=True"]()
        error = float((fused.double() - plain.double()).abs().max() / plain.double().abs().max().clamp_min(1e-30))
        for name, call in case.calls.items():
            eager = run.timers.eager(call)
            graph = run.timers.graph(call) if name.startswith("inference") else math.nan
            rows.append({"model": run.model_name, "batch": batch, "call": name, "ms": eager, "graph_ms": graph,
                         "inference_rel_err": error, "status": "timed"})  # fmt: skip
        del case
        if run.gpu:
            torch.cuda.empty_cache()
    table = pd.DataFrame(rows).assign(device=run.device, dtype=str(run.dtype)[6:])
    table.to_csv(run.reports / "quick_model.csv", index=False)
    return table
