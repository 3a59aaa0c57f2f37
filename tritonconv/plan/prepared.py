"""Plan once, then launch directly: everything a convolution call with a given key needs, resolved
on the first call with that key and replayed by every later one.

The key (`call_key`) names all that decides what runs and how it is launched: shapes, strides,
dtypes, devices and 16-byte alignment of every operand, the convolution's geometry, the epilogue,
TF32, the autotune mode, output poisoning and the tuning cache's generation. A call whose key was
seen before does three things: look the key up, allocate the output, launch the prepared kernels
with the call's pointers. Autocast is resolved before the key is built (the cast operands' dtype
is in it), so changing any of these re-plans and no stale launch can happen (tested).

The first call validates the arguments exactly as `F.conv2d` does (errors are never cached), plans
every pass it runs (`dispatch.plan_pass`), and prepares each launch (`ops/`); the gradients' routes
are planned and prepared on the first backward, per grad_output layout.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping

import torch

from ..ops.activation_grad import has_4d_view, prepare_activation_grad
from ..ops.epilogue import NO_EPILOGUE, Epilogue, saves_output
from ..ops.torch_conv import returned_or
from ..ops.wgrad import bias_grad_operand, prepare_bias_grad
from ..problem.arithmetic import ConvProblem, is_channels_last_like, memory_format_of, problem_from_tensors
from ..problem.runtime import POISON_ENV, environment_reader, poison_outputs
from ..routes.calls import check_runnable
from ..routes.registry import Pass, Plan, spec
from ..tuning import cache as tuning_cache
from .dispatch import AUTOTUNE_ENV, plan_and_finality

MAX_PREPARED = 4096
_prepared: dict[tuple, PreparedConv] = {}
_built = 0
_last_route: str | None = None  # the variant of the last forward launched (`take_route`)


def call_key(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    geometry: tuple,
    epilogue: tuple = (),
) -> tuple:
    """Everything about a call that changes what runs or how it is launched (module docstring)."""
    return (
        input.shape, input.stride(), input.dtype, input.device, input.data_ptr() & 15,
        weight.shape, weight.stride(), weight.dtype, weight.device, weight.data_ptr() & 15,
        tensor_key(bias), geometry, epilogue, flags_key(),
    )  # fmt: skip


def flags_key() -> tuple:
    """The part of `call_key` that is not the call's arguments: TF32, the autotune mode, output
    poisoning and the tuning cache's generation (for keys of calls made with other arguments)."""
    return _cudnn_allows_tf32(), _autotune_mode(), _poison(), tuning_cache._generation


# torch's TF32 switch for convolutions, read without the `torch.backends` property's Python layers.
_cudnn_allows_tf32 = getattr(torch._C, "_get_cudnn_allow_tf32", lambda: torch.backends.cudnn.allow_tf32)
_autotune_mode = environment_reader(AUTOTUNE_ENV)
_poison = environment_reader(POISON_ENV)


def tensor_key(tensor: torch.Tensor | None) -> tuple | None:
    """A tensor operand's part of a key: what its launch depends on, not its values."""
    if tensor is None:
        return None
    return (tensor.shape, tensor.stride(), tensor.dtype, tensor.device, tensor.data_ptr() & 15)


def lookup(key: tuple, build: Callable[[], tuple[PreparedConv, bool]]) -> PreparedConv:
    """The prepared call of `key`, built (and kept, when its plans are final) on first use."""
    prepared = _prepared.get(key)
    if prepared is None:
        global _built
        prepared, final = build()
        _built += 1
        if final:
            if len(_prepared) >= MAX_PREPARED:
                _prepared.clear()
            _prepared[key] = prepared
    return prepared


def prepared_conv(
    key: tuple,
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    geometry: tuple,
    epilogue: Epilogue = NO_EPILOGUE,
    as_problem: Callable[..., ConvProblem] = problem_from_tensors,
    residual: torch.Tensor | None = None,
) -> PreparedConv:
    """The prepared 2-D call of `key` (`call_key`). Its first use validates the call as `F.conv2d`
    does, raising its errors (`as_problem(input, weight, bias, *geometry)`, and a fused call's
    `residual` against the output), plans it and prepares its launches; an unbatched input is
    prepared as a batch of one."""

    def build() -> tuple[PreparedConv, bool]:
        problem = as_problem(input, weight, bias, *geometry)
        batched = input.dim() == 4
        prepared = PreparedConv(problem, input if batched else input.unsqueeze(0), weight, epilogue)
        if residual is not None:
            prepared.check_residual(residual, batched)
        return prepared, prepared.final

    return lookup(key, build)


def check_residual(
    output_shape: tuple[int, ...], residual: torch.Tensor, batched: bool, dtype: torch.dtype, device: torch.device
) -> None:  # fmt: skip
    """A fused call's residual must be exactly its output's shape (`output_shape`, batched; unbatched
    for an unbatched call), dtype and device."""
    expected = output_shape if batched else output_shape[1:]
    if tuple(residual.shape) != tuple(expected) or residual.dtype != dtype or residual.device != device:
        raise RuntimeError(
            f"residual must match the convolution's output: shape {list(expected)}, dtype {dtype}, device "
            f"{device}; got shape {list(residual.shape)}, dtype {residual.dtype}, device {residual.device}"
        )


def take_route() -> str | None:
    """The variant the last planned forward ran since the previous call (None if none ran): what
    `stats(routes=True)` counts for a served call."""
    global _last_route
    route, _last_route = _last_route, None
    return route


def builds() -> int:
    """How many prepared calls this process has built: a re-plan shows as one more."""
    return _built


class PreparedConv:
    """One key's convolution: the problem, the forward's prepared launch and output allocation, and
    the backward's, prepared on first use per grad_output layout."""

    def __init__(
        self,
        problem: ConvProblem,
        input: torch.Tensor,
        weight: torch.Tensor,
        epilogue: Epilogue,
        plans: Mapping[Pass, Plan] | None = None,
    ):
        """`plans` pins a pass's plan (tests and benches); the others are planned as usual."""
        check_runnable(input)
        self._describe(problem, input, is_channels_last_like(input), is_channels_last_like(weight), epilogue, plans)
        self.forward_plan, self.final = self._plan(Pass.FWD)
        self._forward_returns = spec(Pass.FWD, self.forward_plan.variant).returns_output

    @classmethod
    def for_gradients(
        cls,
        problem: ConvProblem,
        like: torch.Tensor,
        input_channels_last: bool,
        weight_channels_last: bool,
        plans: Mapping[Pass, Plan] | None = None,
    ) -> PreparedConv:
        """A call made for its gradient passes (the gradient custom ops, which see neither the input
        nor the weight whole; transposed convolutions, whose forward is this one's input gradient):
        the forward is planned and prepared only if it runs. `like` gives the dtype and device;
        `plans` pins passes as in `__init__`."""
        check_runnable(like)
        prepared = cls.__new__(cls)
        prepared._describe(problem, like, input_channels_last, weight_channels_last, NO_EPILOGUE, plans)
        prepared.forward_plan, prepared.final = None, True
        prepared._forward_returns = False
        return prepared

    def _describe(
        self,
        problem: ConvProblem,
        like: torch.Tensor,
        input_channels_last: bool,
        weight_channels_last: bool,
        epilogue: Epilogue,
        plans: Mapping[Pass, Plan] | None,
    ) -> None:
        self.problem = problem
        self.plans = dict(plans or {})
        self.poison = poison_outputs()
        self.epilogue = epilogue
        self.input_channels_last = input_channels_last
        self.weight_channels_last = weight_channels_last
        output = torch.empty(problem.output_shape, device="meta", memory_format=problem.memory_format)
        self._output = (output.shape, output.stride(), like.dtype, like.device)
        self._output_empty = output.numel() == 0
        self._device = like.device if like.device.type == "cuda" else None
        self._forward: Callable | None = None
        self._gradients: dict[tuple, tuple] = {}

    def _plan(self, pass_name: Pass) -> tuple[Plan, bool]:
        if pass_name in self.plans:
            return self.plans[pass_name], True
        return plan_and_finality(self.problem, pass_name)

    def _new(self, allocation: tuple | None) -> torch.Tensor | None:
        """A tensor as `allocation` describes (None for a route that returns its own result)."""
        if allocation is None:
            return None
        shape, strides, dtype, device = allocation
        tensor = torch.empty_strided(shape, strides, dtype=dtype, device=device)
        if self.poison:
            tensor.fill_(math.nan)
        return tensor

    def _launch(self, run: Callable, *tensors: torch.Tensor | None) -> object:
        """Launch on the operands' GPU: Triton launches on the current device, not the tensors'.
        Returns what `run` returns: None for a kernel route, the result for torch's."""
        device = self._device
        if device is not None and device.index != torch.cuda.current_device():
            with torch.cuda.device(device):
                return run(*tensors)
        return run(*tensors)

    def _weight_format(self) -> torch.memory_format:
        return memory_format_of(len(self.problem.weight_shape), self.weight_channels_last)

    def new_output(self) -> torch.Tensor:
        """A tensor shaped and laid out like the output (the fused forward keeps Z in one)."""
        return self._new(self._output)

    def forward(
        self,
        input: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        residual: torch.Tensor | None = None,
        preactivation: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Y (4-D) for the call's tensors; `preactivation`, when the epilogue keeps one, receives Z."""
        run = self._forward
        if run is not None and self._forward_returns:  # torch's route: it allocates its own output
            global _last_route
            _last_route = self.forward_plan.variant
            return self._launch(run, input, weight, bias, None, residual, preactivation)
        output = self._new(self._output)
        if self._output_empty:
            return output
        if run is None:
            prepare = functools.partial(self._prepare_forward, input, weight, bias, output, residual, preactivation)
            if self.forward_plan is None:  # a call made for its gradients (`for_gradients`): its operands vary
                run = self._gradient(Pass.FWD, (input, weight), lambda: (prepare(), None, True))[0]
            else:
                run = self._forward = prepare()
        output = returned_or(self._launch(run, input, weight, bias, output, residual, preactivation), output)
        if self.forward_plan is not None:
            _last_route = self.forward_plan.variant
        return output

    def forward_with_epilogue(
        self,
        input: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        residual: torch.Tensor | None,
        for_backward: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(Y, what the activation's derivative reads: Y itself, the pre-activation Z, or None) of a
        fused call; Z is written beside Y only when a backward (`for_backward`) needs it."""
        activation = self.epilogue.activation
        from_output = self.keeps_output_for_backward
        preactivation = self.new_output() if activation and not from_output and for_backward else None
        output = self.forward(input, weight, bias, residual, preactivation)
        return output, ((output if from_output else preactivation) if activation else None)

    def check_residual(self, residual: torch.Tensor, batched: bool) -> None:
        """A fused call's residual must be exactly the output's shape, dtype and device."""
        check_residual(self.problem.output_shape, residual, batched, *self._output[2:])

    def _prepare_forward(self, input, weight, bias, output, residual, preactivation) -> Callable:
        """The forward's launch for these tensors' layouts (planned now for a `for_gradients` call,
        whose forward runs only for a transposed convolution's input gradient)."""
        plan = self.forward_plan or self._plan(Pass.FWD)[0]
        epilogue = Epilogue(self.epilogue.activation, self.epilogue.negative_slope, residual, preactivation)
        return spec(Pass.FWD, plan.variant).prepare(input, weight, bias, output, self.problem, plan.config, epilogue)

    def _gradient(
        self, pass_name: Pass | str | tuple, operands: tuple[torch.Tensor, ...], prepare: Callable[[], tuple]
    ) -> tuple:
        """(run, allocation) of a pass, prepared once per layout of its `operands` and kept when its
        plan is final. Every operand whose strides the call's key does not fix is in the layout: dY
        always, and for a transposed convolution (`for_gradients`) x and dY in every role."""
        key = (pass_name, *(item for t in operands for item in (t.stride(), t.dtype, t.data_ptr() & 15)))
        entry = self._gradients.get(key)
        if entry is None:
            run, allocation, final = prepare()
            entry = run, allocation
            if final:
                self._gradients[key] = entry
        return entry

    def _planned_gradient(
        self, pass_name: Pass, shape: tuple[int, ...], channels_last: bool, *operands: torch.Tensor, **fused: object
    ) -> tuple:
        """(run, allocation, final) of a gradient pass's planned route, prepared for these operands
        (the first one gives the gradient's dtype and device) and a gradient laid out as asked;
        `fused` (bias, epilogue) goes to an input gradient that is a transposed convolution's forward."""
        like = operands[0]
        gradient = torch.empty(shape, dtype=like.dtype, device=like.device,
                               memory_format=memory_format_of(len(shape), channels_last))  # fmt: skip
        plan, final = self._plan(pass_name)
        route = spec(pass_name, plan.variant)
        run = route.prepare(*operands, gradient, self.problem, plan.config, **fused)
        return run, None if route.returns_output else _allocation(gradient), final

    def input_grad(
        self,
        grad_output: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None = None,
        epilogue: Epilogue = NO_EPILOGUE,
    ) -> torch.Tensor:
        """dX, laid out like the input. A transposed convolution's forward (dX is its output) passes
        its bias and fused `epilogue` (activation, residual, the tensor receiving the pre-activation),
        which the route applies before its store, as a forward kernel applies its own."""
        fused = bias is not None or epilogue is not NO_EPILOGUE
        extra = (bias, epilogue.residual, epilogue.preactivation) if fused else ()

        def prepare() -> tuple:
            shape, channels_last = self.problem.input_shape, self.input_channels_last
            arguments = {"bias": bias, "epilogue": epilogue} if fused else {}
            return self._planned_gradient(Pass.DGRAD, shape, channels_last, grad_output, weight, **arguments)

        if math.prod(self.problem.input_shape) == 0:
            return _empty(self.problem.input_shape, grad_output, self.input_channels_last)
        # A fused call's key: which optional tensors it has and the epilogue's constexprs, then their layouts.
        name = (Pass.DGRAD, *(t is not None for t in extra), epilogue.activation, epilogue.negative_slope)
        operands = (grad_output, weight, *(t for t in extra if t is not None))
        run, allocation = self._gradient(name if fused else Pass.DGRAD, operands, prepare)
        grad_input = self._new(allocation)
        return returned_or(self._launch(run, grad_output, weight, grad_input, *extra), grad_input)

    def input_grad_with_epilogue(
        self,
        grad_output: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        residual: torch.Tensor | None,
        epilogue: Epilogue,
        for_backward: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`forward_with_epilogue` for a transposed convolution, whose output is this call's dX:
        (dX, what the activation's derivative reads), `epilogue` giving the activation and slope; the
        pre-activation is written beside dX only when a backward needs it."""
        activation, slope = epilogue.activation, epilogue.negative_slope
        from_output = saves_output(activation, slope)
        preactivation = None
        if activation and not from_output and for_backward:
            preactivation = _empty(self.problem.input_shape, grad_output, self.input_channels_last)
            if self.poison:
                preactivation.fill_(math.nan)
        output = self.input_grad(grad_output, weight, bias, Epilogue(activation, slope, residual, preactivation))
        return output, ((output if from_output else preactivation) if activation else None)

    def weight_grad(self, input: torch.Tensor, grad_output: torch.Tensor) -> torch.Tensor:
        """dW, laid out like the weight."""

        def prepare() -> tuple:
            shape, channels_last = self.problem.weight_shape, self.weight_channels_last
            return self._planned_gradient(Pass.WGRAD, shape, channels_last, input, grad_output)

        problem = self.problem
        if problem.gemm_m == 0:  # no output pixel (an empty batch): nothing to sum, dW = 0
            return _empty(problem.weight_shape, input, self.weight_channels_last).zero_()
        run, allocation = self._gradient(Pass.WGRAD, (input, grad_output), prepare)
        grad_weight = self._new(allocation)
        return returned_or(self._launch(run, input, grad_output, grad_weight), grad_weight)

    def weight_and_bias_grad(self, input: torch.Tensor, grad_output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """dW and db: one launch where the weight gradient's route computes db from the dY it reads
        (`VariantSpec.fuses_bias_grad`), else the two passes apart."""

        def prepare() -> tuple:
            plan, final = self._plan(Pass.WGRAD)
            route = spec(Pass.WGRAD, plan.variant)
            if not route.fuses_bias_grad:
                return None, None, final
            like = input
            grad_weight = torch.empty(self.problem.weight_shape, dtype=like.dtype, device=like.device,
                                      memory_format=self._weight_format())  # fmt: skip
            grad_bias = torch.empty((self.problem.k,), dtype=like.dtype, device=like.device)
            run = route.prepare(input, grad_output, grad_weight, self.problem, plan.config, grad_bias=grad_bias)
            allocations = (None, None) if route.returns_output else (_allocation(grad_weight), _allocation(grad_bias))
            return run, allocations, final

        if self.problem.gemm_m == 0:
            return self.weight_grad(input, grad_output), self.bias_grad(grad_output)
        run, allocations = self._gradient("weight and bias", (input, grad_output), prepare)
        if run is None:
            return self.weight_grad(input, grad_output), self.bias_grad(grad_output)
        grad_weight, grad_bias = self._new(allocations[0]), self._new(allocations[1])
        result = self._launch(run, input, grad_output, grad_weight, grad_bias)
        return (grad_weight, grad_bias) if result is None else result

    def bias_grad(self, grad_output: torch.Tensor) -> torch.Tensor:
        """db, one Triton reduction over batch and pixels (a 3-D dY with its depth and height as one
        axis: a view in both layouts)."""
        grad_output = bias_grad_operand(grad_output)

        def prepare() -> tuple:
            grad_bias = torch.empty((grad_output.shape[1],), dtype=grad_output.dtype, device=grad_output.device)
            return prepare_bias_grad(grad_output, grad_bias), _allocation(grad_bias), True

        run, allocation = self._gradient("bias", (grad_output,), prepare)
        grad_bias = self._new(allocation)
        self._launch(run, grad_output, grad_bias)
        return grad_bias

    def preactivation_grad(
        self, grad_output: torch.Tensor, saved: torch.Tensor, epilogue: Epilogue | None = None
    ) -> torch.Tensor:
        """dZ = dY * activation'(Z), laid out like dY (see `ops/activation_grad.py`), for the call's
        epilogue or the one given (a transposed convolution's, which its input gradient computes). A 5-D
        dY whose depth and height strides do not nest (no 4-D view of it) is first copied in its own layout."""
        epilogue = epilogue or self.epilogue
        layout = memory_format_of(grad_output.dim(), is_channels_last_like(grad_output))
        if not has_4d_view(grad_output):
            grad_output = grad_output.contiguous(memory_format=layout)

        def prepare() -> tuple:
            grad = torch.empty(grad_output.shape, dtype=grad_output.dtype, device=grad_output.device,
                               memory_format=layout)  # fmt: skip
            run = prepare_activation_grad(grad_output, saved, grad, epilogue.activation, epilogue.negative_slope)
            return run, _allocation(grad), True

        name = ("activation", epilogue.activation, epilogue.negative_slope)
        run, allocation = self._gradient(name, (grad_output, saved), prepare)
        grad = self._new(allocation)
        self._launch(run, grad_output, saved, grad)
        return grad

    @property
    def keeps_output_for_backward(self) -> bool:
        return saves_output(self.epilogue.activation, self.epilogue.negative_slope)


def _empty(shape: tuple[int, ...], like: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """An uninitialised tensor of `like`'s dtype and device, in the memory format asked for."""
    format = memory_format_of(len(shape), channels_last)
    return torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=format)


def _allocation(tensor: torch.Tensor) -> tuple:
    return tensor.shape, tensor.stride(), tensor.dtype, tensor.device
