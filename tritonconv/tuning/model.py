"""Tune what a user runs: record the convolutions a model executes on example inputs, tune those.

Recording runs the model once, under `torch.no_grad`, with a torch function mode that sees every
`F.conv2d` call (from `nn.Conv2d`, from functional code, and from tritonconv's own layers, which hand
their calls to torch while recording). Each call becomes the `ConvProblem` tritonconv would run:
the dtype autocast would compute in, the memory format of the input, 'same' padding resolved.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from ..arithmetic import ConvProblem, problem_from_tensors
from ..functional import autocast, autocast_dtype_for, torch_computes
from .distributed import Shard
from .session import TuneSummary, tune_problems
from .tuner import Timer

CONV2D_PARAMETERS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")


class _ConvRecorder(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[ConvProblem] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.conv2d:
            self.calls.append(_problem_of_call(*args, **kwargs))
        return func(*args, **kwargs)


def _problem_of_call(*args, **kwargs) -> ConvProblem:
    call = dict(zip(CONV2D_PARAMETERS, args, strict=False)) | kwargs
    input, weight, bias = call["input"], call["weight"], call.get("bias")
    dtype = autocast_dtype_for(input)
    if dtype is not None:
        input, weight, bias = (autocast(tensor, dtype) for tensor in (input, weight, bias))
    geometry = {name: call[name] for name in ("stride", "padding", "dilation", "groups") if name in call}
    return problem_from_tensors(input, weight, bias, **geometry)


def record_problems(model: Callable, *example_inputs, **example_kwargs) -> list[ConvProblem]:
    """Every convolution `model(*example_inputs, **example_kwargs)` runs, as problems, in call order
    (a layer called twice appears twice)."""
    recorder = _ConvRecorder()
    with torch.no_grad(), torch_computes(), recorder:
        model(*example_inputs, **example_kwargs)
    return recorder.calls


def tune_model(
    model: Callable,
    *example_inputs,
    passes: Sequence[str] = ("fwd",),
    force: bool = False,
    max_candidates: int | None = None,
    timer: Timer | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    shard: Shard | None = None,
    **example_kwargs,
) -> TuneSummary:
    """Tune the distinct convolution problems `model` runs on the example inputs, for `passes`
    ('fwd', 'dgrad', 'wgrad'), into this device's cache; already-cached ones are skipped unless
    `force`. Put the model and inputs on the device, dtype and memory format you will run (or run
    it under the autocast you will use): those are part of each problem.

    Returns the summary (`tuned`, `cached`, `failed`, `line()`); `problems` holds the distinct
    problems recorded.
    """
    problems = record_problems(model, *example_inputs, **example_kwargs)
    return tune_problems(
        problems, passes, force=force, max_candidates=max_candidates, timer=timer, progress=progress, shard=shard
    )
