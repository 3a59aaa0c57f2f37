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

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch.overrides import TorchFunctionMode

from ..frontend import transposed
from ..frontend.functional import as_conv2d, autocast, autocast_dtype_for, torch_computes
from ..frontend.transposed import TORCH_CONV_TRANSPOSE1D, TORCH_CONV_TRANSPOSE2D, TORCH_CONV_TRANSPOSE3D
from ..problem.arithmetic import ConvProblem, conv1d_problem, problem_from_tensors
from ..problem.planar import volume_problem
from ..problem.torch_reference import TORCH_CONV1D, TORCH_CONV2D, TORCH_CONV3D
from ..tuning.distributed import Shard
from ..tuning.session import device_cache, tune_problems
from ..tuning.tuner import ALL_ROUTES, Timer
from .verdict import ModelVerdict, verdict_of

CONV_PARAMETERS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
GEOMETRY_DEFAULTS = {"stride": 1, "padding": 0, "dilation": 1, "groups": 1}


@dataclass(frozen=True)
class RecordedConv:
    """One convolution call a model made: the innermost module that made it ('' for the model's own
    forward), the problem tritonconv runs for it and, for a transposed convolution, that it is one
    (its problem is the underlying convolution, whose passes serve it: `registry.TRANSPOSED_PASSES`)."""

    layer: str
    problem: ConvProblem
    transposed: bool = False


class _ConvRecorder(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[RecordedConv] = []
        self.layers: list[str] = []  # the modules being run, innermost last
        self._noted: ConvProblem | None = None

    @property
    def layer(self) -> str:
        return self.layers[-1] if self.layers else ""

    def note(self, problem: ConvProblem) -> None:
        """`functional.note_problem`: the next call runs `problem` (not what its arguments say)."""
        self._noted = problem

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (TORCH_CONV1D, TORCH_CONV2D, TORCH_CONV3D):
            problem, self._noted = self._noted or _problem_of_call(func, *args, **kwargs), None
            self.calls.append(RecordedConv(self.layer, problem))
        elif func in (TORCH_CONV_TRANSPOSE1D, TORCH_CONV_TRANSPOSE2D, TORCH_CONV_TRANSPOSE3D):
            problem = transposed.problem_of_call(func is TORCH_CONV_TRANSPOSE1D, *args, **kwargs)
            self.calls.append(RecordedConv(self.layer, problem, transposed=True))
        return func(*args, **kwargs)

    @contextlib.contextmanager
    def naming_layers(self, model: object) -> Iterator[None]:
        """While the model runs, know which of its modules is running (hooks, removed afterwards)."""
        if not isinstance(model, torch.nn.Module):
            yield
            return

        def leave(*_) -> None:  # a forward hook's return value would replace the module's output
            self.layers.pop()

        handles = []
        for name, module in model.named_modules():
            handles.append(module.register_forward_pre_hook(lambda *_, name=name: self.layers.append(name)))
            handles.append(module.register_forward_hook(leave))
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()


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
    calls = record_calls(model, *example_inputs, **example_kwargs)
    return [c.problem for c in calls if not c.transposed], [c.problem for c in calls if c.transposed]


def record_calls(model: Callable, *example_inputs, **example_kwargs) -> list[RecordedConv]:
    """Every convolution call the model makes, in order, with the module that made it."""
    recorder = _ConvRecorder()
    with torch.no_grad(), torch_computes(recorder.note), recorder, recorder.naming_layers(model):
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
    routes: str = ALL_ROUTES,
    **example_kwargs,
) -> ModelVerdict:
    """Tune the distinct convolution problems `model` runs on the example inputs, for `passes`
    ('fwd', 'dgrad', 'wgrad'), into this device's cache; already-cached ones are skipped unless
    `force`. Put the model and inputs on the device, dtype and memory format you will run (or run
    it under the autocast you will use): those are part of each problem.

    Every problem-pass times torch's own convolution beside the Triton candidates, and a patched
    model then runs whichever is faster (`routes='triton'` keeps torch out of the choice, to
    measure Triton alone; torch is still timed for the verdict). Transposed convolutions are tuned
    as the passes of their underlying convolutions that serve them ('fwd' of a transposed layer is
    its convolution's 'dgrad').

    Returns the verdict (`models.verdict.ModelVerdict`): per (layer, pass) the best Triton route
    and time, torch's time, the choice and the ratio, `line()` for the model, `table()`, `write_csv`;
    and the tuning summary's `tuned`, `cached`, `failed` and `problems`.
    """
    calls = record_calls(model, *example_inputs, **example_kwargs)
    problems = [call.problem for call in calls if not call.transposed]
    transposed_problems = [call.problem for call in calls if call.transposed]
    cache = device_cache()
    summary = tune_problems(
        problems, passes, cache=cache, force=force, max_candidates=max_candidates, timer=timer, progress=progress,
        shard=shard, transposed=transposed_problems, routes=routes,
    )  # fmt: skip
    return verdict_of(calls, passes, cache, summary)
