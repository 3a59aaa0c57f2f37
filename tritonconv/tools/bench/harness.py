"""One harness for every benchmark: a suite's layers, one pass, named providers fed the same tensors.

A `Case` is one (layer, pass) with its tensors (input, weight, grad_output, bias, and a residual when
the case has one) and the call tritonconv prepares for them. A provider turns a case into the call
it times, or None where it does not apply (a plain GEMM only for stride-1 1x1 layers, say):
- `triton`: tritonconv's planned call (tuned, shipped or heuristic), the pass's prepared launch;
- `triton api`: the forward through `tritonconv.conv2d` itself (the key lookup included);
- `variant_provider(variant)`: one forward route pinned at its heuristic config (the variants study
  names it after the variant);
- `torch`: what autograd runs, `F.conv2d` or `aten::convolution_backward` for the one gradient;
- `inductor`: that torch call under `torch.compile(mode="max-autotune")`;
- `torch.matmul`: the plain GEMM a stride-1 1x1 forward is;
- `fused` / `unfused`: conv + bias + relu (+ residual) in tritonconv's epilogue, or torch's conv
  followed by its add and relu.
`measure` checks every provider against a reference provider, then times each: on a GPU the
`triton.testing.do_bench` median (warm-up first, L2 flushed; host work included) and the median of
CUDA-graph replays (the GPU's time alone); in the interpreter one wall-clock run, which says nothing
about kernels. The studies (`forward`, `backward`, `variants`, `epilogue`, `profile`) and the suite
report (`run.py`) are choices of suite, pass and providers over this.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping

import torch
import torch.nn.functional as F

from ...frontend.functional import conv2d as tritonconv_conv2d
from ...frontend.volume import conv3d as tritonconv_conv3d
from ...ops.epilogue import NO_EPILOGUE
from ...plan.prepared import PreparedConv
from ...problem.planar import PlanarCall, planar_call, volume_problem
from ...problem.suites import SuiteLayer
from ...routes.registry import Pass, Plan, spec
from ...tuning.tuner import on_gpu
from . import timing

Call = Callable[[], torch.Tensor]
Provider = Callable[["Case"], Call | None]
GRADIENT_INDEX = {Pass.DGRAD: 0, Pass.WGRAD: 1}


@dataclasses.dataclass
class Case:
    """One layer and pass, with the tensors every provider shares."""

    layer: SuiteLayer
    pass_name: str
    x: torch.Tensor
    weight: torch.Tensor
    grad_output: torch.Tensor
    bias: torch.Tensor
    residual: torch.Tensor | None
    prepared: PreparedConv
    planar: PlanarCall | None = None  # a 3-D layer that runs as a 2-D convolution on views (`planar.py`)

    @property
    def problem(self):
        return self.layer.problem

    @property
    def geometry(self) -> dict:
        """torch's keyword arguments for the layer (a 3-D layer's axes depth first)."""
        problem, depth = self.problem, self.problem.depth
        if depth is None:
            return dict(
                stride=problem.stride, padding=problem.padding, dilation=problem.dilation, groups=problem.groups
            )
        return dict(stride=(depth.stride, *problem.stride), padding=(depth.padding, *problem.padding),
                    dilation=(depth.dilation, *problem.dilation), groups=problem.groups)  # fmt: skip


def make_case(layer: SuiteLayer, pass_name: str, with_residual: bool = False, device: str | None = None) -> Case:
    """Seeded random tensors for the layer, in its dtype and memory format, on the GPU when there is one."""
    problem = layer.problem
    device = device or ("cuda" if on_gpu() else "cpu")
    generator = torch.Generator().manual_seed(0)

    def tensor(shape):
        return torch.randn(shape, generator=generator).to(device, problem.dtype).to(memory_format=problem.memory_format)

    x, weight, grad_output = tensor(problem.input_shape), tensor(problem.weight_shape), tensor(problem.output_shape)
    bias = torch.randn(problem.k, generator=generator).to(device, problem.dtype)
    residual = tensor(problem.output_shape) if with_residual else None
    case = Case(layer, pass_name, x, weight, grad_output, bias, residual, None)
    if problem.is_3d:  # what a conv3d call runs: a planar layer's 2-D convolution on views
        geometry = case.geometry
        running, case.planar = volume_problem(x, weight, None, geometry["stride"], geometry["padding"],
                                              geometry["dilation"], geometry["groups"])  # fmt: skip
        if case.planar is not None:
            case.prepared = PreparedConv(running, case.planar.input, case.planar.weight, NO_EPILOGUE)
            return case
    case.prepared = PreparedConv(problem, x, weight, NO_EPILOGUE)  # planned once, as a repeated call is
    return case


def _triton(case: Case) -> Call:
    prepared, x, weight, grad_output = case.prepared, case.x, case.weight, case.grad_output
    if case.planar is not None:
        return _planar_triton(case)
    if case.pass_name == Pass.FWD:
        return lambda: prepared.forward(x, weight, None)
    if case.pass_name == Pass.DGRAD:
        return lambda: prepared.input_grad(grad_output, weight)
    return lambda: prepared.weight_grad(x, grad_output)


def _planar_triton(case: Case) -> Call:
    """A planar 3-D layer's pass as a conv3d call runs it: the 2-D pass on views, its result seen
    as the 3-D one (dX written into the slices it covers, as autograd's view backward does)."""
    planar, prepared, x, weight = case.planar, case.prepared, case.x, case.weight
    grad_output = planar.flatten(case.grad_output)
    if case.pass_name == Pass.FWD:
        return lambda: planar.restore(prepared.forward(planar.input, planar.weight, None))
    if case.pass_name == Pass.WGRAD:
        return lambda: prepared.weight_grad(planar.input, grad_output).view(weight.shape)
    geometry = case.geometry

    def input_grad() -> torch.Tensor:
        grad_input = torch.zeros_like(x)
        covered = planar_call(grad_input, weight, geometry["stride"], geometry["padding"], geometry["dilation"],
                              geometry["groups"])  # fmt: skip
        covered.input.copy_(prepared.input_grad(grad_output, planar.weight))
        return grad_input

    return input_grad


def _triton_api(case: Case) -> Call | None:
    x, weight, geometry = case.x, case.weight, case.geometry
    convolve = tritonconv_conv3d if case.problem.is_3d else tritonconv_conv2d
    return (lambda: convolve(x, weight, **geometry)) if case.pass_name == Pass.FWD else None


def _torch(case: Case) -> Call:
    x, weight, geometry = case.x, case.weight, case.geometry
    if case.pass_name == Pass.FWD:
        convolve = F.conv3d if case.problem.is_3d else F.conv2d
        return lambda: convolve(x, weight, **geometry)
    index = GRADIENT_INDEX[case.pass_name]
    mask = [i == index for i in range(3)]
    axes = len(geometry["stride"])
    flat = (*(list(geometry[name]) for name in ("stride", "padding", "dilation")), False, [0] * axes,
            geometry["groups"])  # fmt: skip
    return lambda: torch.ops.aten.convolution_backward(case.grad_output, x, weight, None, *flat, mask)[index]


def _inductor(case: Case) -> Call:
    # Every layer's closure shares one code object: without a reset, dynamo's recompile limit would
    # quietly leave later layers running eager torch under the "inductor" name.
    torch.compiler.reset()
    return torch.compile(_torch(case), mode="max-autotune", dynamic=False)


def _matmul(case: Case) -> Call | None:
    """The stride-1 1x1 forward as the plain [N*H*W, C] x [C, K] GEMM, reshaped back to NCHW."""
    problem = case.problem
    if case.pass_name != Pass.FWD or (problem.r, problem.s, problem.stride, problem.groups) != (1, 1, (1, 1), 1):
        return None
    x_mat = case.x.permute(0, 2, 3, 1).reshape(-1, problem.c)
    w_mat = case.weight[:, :, 0, 0].t()
    n, k, p, q = problem.output_shape
    return lambda: (x_mat @ w_mat).reshape(n, p, q, k).permute(0, 3, 1, 2)


def _fused(case: Case) -> Call:
    x, weight, bias, residual, geometry = case.x, case.weight, case.bias, case.residual, case.geometry
    return lambda: tritonconv_conv2d(x, weight, bias, **geometry, activation="relu", residual=residual)


def _unfused(case: Case) -> Call:
    x, weight, bias, residual, geometry = case.x, case.weight, case.bias, case.residual, case.geometry

    def separate() -> torch.Tensor:
        out = F.conv2d(x, weight, bias, **geometry)
        return F.relu(out if residual is None else out + residual)

    return separate


def variant_provider(variant: str, **config_changes: object) -> Provider:
    """A forward route pinned at its heuristic config (with `config_changes`), where it applies."""

    def provide(case: Case) -> Call | None:
        route = spec(Pass.FWD, variant)
        if case.pass_name != Pass.FWD or not route.applies(case.problem):
            return None
        config = dataclasses.replace(route.heuristic(case.problem), **config_changes)
        plan = Plan(variant, config, "heuristic")
        pinned = PreparedConv(case.problem, case.x, case.weight, NO_EPILOGUE, plans={Pass.FWD: plan})
        return lambda: pinned.forward(case.x, case.weight, None)

    return provide


def pinned_provider(choose: Callable[[object, str], Plan | None]) -> Provider:
    """tritonconv's call of any pass with its plan pinned to `choose(problem, pass)`, where that
    gives one (None: the provider does not apply; planar 3-D layers are never pinned)."""

    def provide(case: Case) -> Call | None:
        plan = None if case.planar is not None else choose(case.problem, case.pass_name)
        if plan is None:
            return None
        pinned = PreparedConv(case.problem, case.x, case.weight, NO_EPILOGUE, plans={Pass(case.pass_name): plan})
        return _triton(dataclasses.replace(case, prepared=pinned))

    return provide


PROVIDERS: dict[str, Provider] = {
    "triton": _triton,
    "triton api": _triton_api,
    "torch": _torch,
    "inductor": _inductor,
    "torch.matmul": _matmul,
    "fused": _fused,
    "unfused": _unfused,
}


def graph_ms(fn: Callable[[], object]) -> float:
    """`timing.graph_ms`, or NaN (with the reason printed) for a call that cannot be captured."""
    try:
        return timing.graph_ms(fn)
    except Exception as error:
        print(f"  (graph capture failed: {type(error).__name__}: {error})")
        return float("nan")


def time_call(fn: Callable[[], object]) -> tuple[float, float]:
    """(median ms, CUDA-graph median ms) on a GPU; (median wall-clock ms of several runs, NaN) on the
    CPU, where the kernels run in the interpreter (`timing.cpu_median_ms`)."""
    if on_gpu():
        return timing.median_ms(fn), graph_ms(fn)
    return timing.cpu_median_ms(fn), float("nan")


def measure(
    case: Case, providers: Mapping[str, Provider] | Iterable[str], reference: str = "torch",
    reproducibility: bool = False, timer: Callable[[Call], tuple[float, float]] | None = None,
) -> list[dict]:  # fmt: skip
    """One row per applicable provider: `provider`, `ms`, `graph_ms` (by `timer`, default
    `time_call`), `max_rel_err` against the `reference` provider's result (checked before anything
    is timed) and, with `reproducibility`, whether two runs were bitwise equal."""
    timer = timer or time_call
    if not isinstance(providers, Mapping):
        providers = {name: PROVIDERS[name] for name in providers}
    calls = {name: call for name, provider in providers.items() if (call := provider(case)) is not None}
    expected = calls[reference]() if reference in calls else PROVIDERS[reference](case)()
    rows = []
    for name, call in calls.items():
        got = call()  # also the warm-up: a compile happens here, not in the timed run
        row = {"provider": name, "max_rel_err": timing.relative_error(got, expected)}
        if reproducibility:
            row["bitwise_reproducible"] = torch.equal(got, call())
        row["ms"], row["graph_ms"] = timer(call)
        rows.append(row)
    return rows
