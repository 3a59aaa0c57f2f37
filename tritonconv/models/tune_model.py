"""Tune what a user runs: record the convolutions a model executes on example inputs, tune those.

Recording runs the model once, under `torch.no_grad`, with a torch function mode that sees every
`F.conv2d`, `F.conv1d`, `F.conv3d`, `F.conv_transpose2d` and `F.conv_transpose1d` call (from the `nn` layers,
from functional code, and from tritonconv's own layers, which hand their calls to torch while
recording). Each call becomes the `ConvProblem` tritonconv would run: the dtype autocast would
compute in, the memory format of the input, 'same' padding resolved, a 1-D conv as the 2-D one
with H = 1 that serves it, and a transposed one as its underlying convolution, whose passes serve
the transposed one's (`registry.TRANSPOSED_PASSES`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.overrides import TorchFunctionMode

from ..frontend import transposed
from ..frontend.functional import as_conv2d, autocast, autocast_dtype_for, torch_computes
from ..frontend.transposed import TORCH_CONV_TRANSPOSE1D, TORCH_CONV_TRANSPOSE2D, TORCH_CONV_TRANSPOSE3D
from ..problem.arithmetic import ConvProblem, conv1d_problem, problem_from_tensors
from ..problem.planar import volume_problem
from ..problem.torch_reference import TORCH_CONV1D, TORCH_CONV2D, TORCH_CONV3D
from ..tuning.distributed import Shard
from ..tuning.session import TuneSummary, tune_problems
from ..tuning.tuner import Timer

CONV_PARAMETERS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
GEOMETRY_DEFAULTS = {"stride": 1, "padding": 0, "dilation": 1, "groups": 1}


class _ConvRecorder(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[ConvProblem] = []
        self.transposed: list[ConvProblem] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (TORCH_CONV1D, TORCH_CONV2D, TORCH_CONV3D):
            self.calls.append(_problem_of_call(func, *args, **kwargs))
        elif func in (TORCH_CONV_TRANSPOSE1D, TORCH_CONV_TRANSPOSE2D, TORCH_CONV_TRANSPOSE3D):
            self.transposed.append(transposed.problem_of_call(func is TORCH_CONV_TRANSPOSE1D, *args, **kwargs))
        return func(*args, **kwargs)


def _problem_of_call(func: object, *args, **kwargs) -> ConvProblem:
    """The problem of a call to torch's conv1d, conv2d or conv3d (`func`)."""
    call = dict(zip(CONV_PARAMETERS, args, strict=False)) | kwargs
    input, weight, bias = call["input"], call["weight"], call.get("bias")
    dtype = autocast_dtype_for(input)
    if dtype is not None:
        input, weight, bias = (autocast(tensor, dtype) for tensor in (input, weight, bias))
    geometry = [call.get(name, default) for name, default in GEOMETRY_DEFAULTS.items()]
    if func is TORCH_CONV3D:  # the 2-D problem that runs it, where it runs as one (`planar.py`)
        return volume_problem(input, weight, bias, *geometry)[0]
    if func is TORCH_CONV2D:
        return problem_from_tensors(input, weight, bias, *geometry)
    input, weight, geometry = as_conv2d(input, weight, *geometry)
    return conv1d_problem(input, weight, bias, *geometry)


def record_problems(model: Callable, *example_inputs, **example_kwargs) -> list[ConvProblem]:
    """Every convolution `model(*example_inputs, **example_kwargs)` runs, as problems, in call order
    (a layer called twice appears twice); transposed ones are left out (`record_all_problems`)."""
    return record_all_problems(model, *example_inputs, **example_kwargs)[0]


def record_all_problems(
    model: Callable, *example_inputs, **example_kwargs
) -> tuple[list[ConvProblem], list[ConvProblem]]:
    """(convolutions, transposed convolutions as their underlying convolutions) the model runs."""
    recorder = _ConvRecorder()
    with torch.no_grad(), torch_computes(), recorder:
        model(*example_inputs, **example_kwargs)
    return recorder.calls, recorder.transposed


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

    Transposed convolutions are tuned as the passes of their underlying convolutions that serve
    them ('fwd' of a transposed layer is its convolution's 'dgrad').

    Returns the summary (`tuned`, `cached`, `failed`, `line()`); `problems` holds the distinct
    problems recorded.
    """
    problems, transposed_problems = record_all_problems(model, *example_inputs, **example_kwargs)
    return tune_problems(
        problems, passes, force=force, max_candidates=max_candidates, timer=timer, progress=progress, shard=shard,
        transposed=transposed_problems,
    )  # fmt: skip
