"""Borrowing a tuned config for a shape nobody tuned: the nearest tuned shape of the same class.

Same class means the same pass, dtype, layout, TF32 setting, variant rule (and for a gradient, the
same routes), kernel size, stride, dilation and grouping (depthwise, grouped or dense): what decides
which kernel runs and how its inner loop looks. Among those, the nearest is the one closest in log
scale over the GEMM's three sides (pixels, output and input channels per group), so a batch of 16
borrows from a batch of 32 before a layer with twice the channels does. Ties go to the smaller key,
so the choice is stable.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping

import torch

from ..problem.arithmetic import ConvProblem, DepthAxis, make_problem
from ..routes.registry import Pass, is_depthwise, routes, rule_variant


def problem_class(problem: ConvProblem, pass_name: str) -> tuple:
    grouping = "depthwise" if is_depthwise(problem) else problem.groups > 1
    return (
        str(problem.dtype).removeprefix("torch."),
        problem.layout,
        rule_variant(problem, pass_name) if pass_name == Pass.FWD else routes(problem, pass_name),
        problem.r,
        problem.s,
        tuple(problem.stride),
        tuple(problem.dilation),
        grouping,
        None if problem.depth is None else (problem.t, problem.depth.stride, problem.depth.dilation),
    )


def _entry_problem(entry: Mapping) -> ConvProblem | None:
    fields = entry.get("problem")
    if not fields:
        return None
    try:
        problem = make_problem(
            n=fields["n"], c=fields["c"], h=fields["h"], w=fields["w"], k=fields["k"], r=fields["r"],
            s=fields["s"], stride=tuple(fields["stride"]), padding=tuple(fields["padding"]),
            dilation=tuple(fields["dilation"]), groups=fields["groups"], dtype=getattr(torch, fields["dtype"]),
            layout=fields["layout"],
        )  # fmt: skip
        if "depth" in fields:
            problem = dataclasses.replace(problem, depth=DepthAxis(**fields["depth"]))
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError):
        return None
    return problem


def _sides(problem: ConvProblem) -> tuple[float, float, float]:
    """log2 of the GEMM's sides (an empty batch counts as one pixel)."""
    return (math.log2(max(problem.gemm_m, 1)), math.log2(problem.k_per_group), math.log2(problem.c_per_group))


def nearest_entry(
    problem: ConvProblem, pass_name: str, tf32_suffix: str, entries: Iterable[tuple[str, Mapping]]
) -> tuple[str, Mapping] | None:
    """(key, entry) of the nearest same-class tuned shape with a working config, or None.

    `entries` must already be filtered to those whose fingerprint is current; `tf32_suffix` is the
    `tf32=...` ending of this call's keys.
    """
    wanted = problem_class(problem, pass_name)
    here = _sides(problem)
    best = None
    for key, entry in entries:
        if entry.get("pass") != pass_name or entry.get("config") is None or not key.endswith(tf32_suffix):
            continue
        other = _entry_problem(entry)
        if other is None or problem_class(other, pass_name) != wanted:
            continue
        distance = math.dist(here, _sides(other))
        if best is None or (distance, key) < best[0]:
            best = ((distance, key), (key, entry))
    return None if best is None else best[1]
