"""Public functional API with `torch.nn.functional` semantics, differentiable through Triton kernels."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch

from ..ops.epilogue import ACTIVATIONS, Epilogue, saves_output, slope_constant, torch_activation, with_torch_epilogue
from ..plan.direct import Geometry
from ..plan.prepared import PreparedConv, call_key, prepared_conv, tensor_key
from ..plan.prepared import _prepared as PREPARED
from ..problem.arithmetic import ConvProblem, conv1d_problem, hashable
from ..problem.torch_reference import TORCH_CONV1D, TORCH_CONV2D, TORCH_CONV3D, check_like_torch
from . import differentiable, library_ops
from .autograd import ConvGradients, conv_gradients, save_operands
from .differentiable import Gradients, transforms_active


class Conv2dFunction(torch.autograd.Function):
    """conv2d with a Triton backward, through a prepared call (`prepared.PreparedConv`): the
    gradients' kernels are planned and prepared on the first backward and replayed after."""

    @staticmethod
    def forward(ctx, input, weight, bias, prepared: PreparedConv):
        output = prepared.forward(input, weight, bias)
        save_operands(ctx, input, weight)
        ctx.prepared = prepared
        return output

    @staticmethod
    def backward(ctx, grad_output):
        return (*conv_gradients(ctx, grad_output, gradients_of(ctx.prepared, grad_output)), None)


def gradients_of(prepared: PreparedConv, grad_output: torch.Tensor) -> ConvGradients:
    """Where a backward's gradients come from: the prepared call's kernels or, when the backward is
    itself recorded (`create_graph=True`, for double backward), carries tangents (forward-over-reverse
    AD) or runs under vmap (`jacrev`), the same kernels through the Functions of `differentiable.py`,
    whose derivatives and vmap rules make that work. Under torch's legacy vmap (gradcheck's batched
    gradients), which knows no Function's vmap rule, they are the gradient ops, which its fallback
    runs one sample at a time."""
    if torch.is_grad_enabled() or transforms_active() or _is_legacy_batched(grad_output):
        gradients = Gradients.of(prepared.problem, prepared.input_channels_last, prepared.weight_channels_last)
        return gradients.for_operands(grad_output)
    return prepared


_is_legacy_batched = torch._C._functorch.is_legacy_batchedtensor


def _recorded_preactivation_grad(epilogue: Epilogue, grad_output: torch.Tensor, saved: torch.Tensor) -> torch.Tensor:
    """dZ = dY * activation'(Z) in torch's ops, for a recorded backward. relu's and leaky_relu's
    derivative is piecewise constant, so this is exact to any order; the smooth activations' second
    derivative needs Z as a function of the inputs, which the fused kernel does not keep."""
    if epilogue.activation not in ("relu", "leaky_relu"):
        raise RuntimeError(
            f"tritonconv: double backward (create_graph=True) through a fused {epilogue.activation!r} epilogue is not "
            "supported; apply the activation outside the convolution (tritonconv.conv2d without activation=, or "
            "patch() without fuse=True)"
        )
    slope = 0.0 if epilogue.activation == "relu" else epilogue.negative_slope
    return grad_output * torch.where(saved > 0, 1.0, slope).to(grad_output.dtype)


class FusedConv2dFunction(torch.autograd.Function):
    """activation(conv2d(input, weight, bias) + residual), all in the forward kernel's epilogue.

    The backward turns dY into dZ (Z = conv + bias + residual) in one Triton pass, from the output
    for relu and leaky_relu and from Z, written by the forward kernel beside Y, for the others; Z is
    written only when some gradient is needed. dZ is then the residual's gradient and feeds the
    convolution's gradients by the formula `Conv2dFunction` uses."""

    @staticmethod
    def forward(ctx, input, weight, bias, residual, prepared: PreparedConv):
        output, saved = prepared.forward_with_epilogue(input, weight, bias, residual, for_backward=True)
        save_operands(ctx, input, weight, saved)
        ctx.prepared = prepared
        return output

    @staticmethod
    def backward(ctx, grad_output):
        prepared = ctx.prepared
        saved = ctx.saved_tensors[2] if prepared.epilogue.activation else None
        grad_z = preactivation_gradient(prepared, prepared.epilogue, grad_output, saved)
        grad_residual = grad_z if ctx.needs_input_grad[3] else None
        return (*conv_gradients(ctx, grad_z, gradients_of(prepared, grad_z)), grad_residual, None)


def preactivation_gradient(
    prepared: PreparedConv, epilogue: Epilogue, grad_output: torch.Tensor, saved: torch.Tensor | None
) -> torch.Tensor:
    """dZ of a fused call (Z = conv + bias + residual) from dY and what its activation's derivative
    reads (`saved`): one Triton pass, or torch's ops where the backward is itself recorded or dY is
    batched by torch's legacy vmap (gradcheck's batched checks: no kernel reads a batched tensor);
    dY itself without an activation."""
    if not epilogue.activation:
        return grad_output
    if torch.is_grad_enabled():
        return _recorded_preactivation_grad(epilogue, grad_output, saved)
    if _is_legacy_batched(grad_output):
        return _batched_preactivation_grad(epilogue, grad_output, saved)
    return prepared.preactivation_grad(grad_output, saved, epilogue)


def _batched_preactivation_grad(epilogue: Epilogue, grad_output: torch.Tensor, saved: torch.Tensor) -> torch.Tensor:
    """dZ = dY * activation'(Z) for a dY batched by torch's legacy vmap: autograd through torch's own
    activation at Z (the smooth activations keep Z), or the piecewise-constant derivative from the
    output (relu, leaky_relu)."""
    if saves_output(epilogue.activation, epilogue.negative_slope):
        return _recorded_preactivation_grad(epilogue, grad_output, saved)
    with torch.enable_grad():
        z = saved.detach().requires_grad_()
        activated = torch_activation(z, epilogue.activation, epilogue.negative_slope)
        return torch.autograd.grad(activated, z, grad_output)[0]


def conv2d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: str | int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    *,
    activation: str | None = None,
    residual: torch.Tensor | None = None,
    negative_slope: float = 0.01,
) -> torch.Tensor:
    """2-D convolution computed by Triton kernels, with exactly `torch.nn.functional.conv2d`'s semantics.

    Accepts batched (N, C, H, W) and unbatched (C, H, W) inputs, NCHW, channels_last or any strided
    view (read in place, never copied), `padding='same'|'valid'`, and fp16, bf16, fp32 (TF32 when
    `torch.backends.cudnn.allow_tf32` is set) and fp64. The output has the memory format torch gives it.
    Differentiable in input, weight and bias; every gradient is computed by Triton kernels. Under
    `torch.autocast` it computes in the autocast dtype, as `F.conv2d` does.

    Fused epilogue: `activation` ('relu', 'silu', 'gelu', 'gelu_tanh', 'leaky_relu' with
    `negative_slope`) and `residual` (a tensor of the output's shape and dtype, any strides) make the
    result `activation(conv2d(input, weight, bias) + residual)`, computed before the kernel stores
    its tile; `residual` receives its gradient too.

    The first call with a given key (shapes, strides, dtypes, flags: `prepared.call_key`) plans and
    prepares its kernels; later ones only allocate the output and launch.
    """
    if activation is not None or residual is not None:
        return _fused(input, weight, bias, (stride, padding, dilation, groups), activation, residual, negative_slope)
    if _shapes_only:  # recording a model's problems (models.tune_model): torch computes, no kernel compiles
        return TORCH_CONV2D(input, weight, bias, stride, padding, dilation, groups)
    if input.dim() in (3, 4) and input.shape[-3] == 0:  # no input channels: torch's empty result (or its error)
        return TORCH_CONV2D(input, weight, bias, stride, padding, dilation, groups)
    autocast_dtype = autocast_dtype_for(input)
    if autocast_dtype is not None:
        input, weight, bias = (autocast(t, autocast_dtype) for t in (input, weight, bias))
    if torch.compiler.is_compiling():  # torch.compile holds the custom op in its graph (library_ops.py)
        return library_ops.conv2d(input, weight, bias, stride, padding, dilation, groups)
    geometry = (stride, padding, dilation, groups)
    if transforms_active():  # forward AD or torch.func: Functions with tangents and vmap rules
        check_like_torch(TORCH_CONV2D, input, weight, bias, geometry)
        return differentiable.convolution(input, weight, bias, Geometry.of(*geometry))
    try:
        key = call_key(input, weight, bias, geometry)
        prepared = PREPARED.get(key) or prepared_conv(key, input, weight, bias, geometry)
    except TypeError as error:  # a geometry argument given as a list: the same call with tuples
        if "unhashable" not in str(error):
            raise
        return conv2d(input, weight, bias, *(hashable(a) for a in geometry))
    return _run(prepared, input, weight, bias)


def _run(prepared: PreparedConv, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    batched = input.dim() == 4
    if not batched:
        input = input.unsqueeze(0)
    if torch.is_grad_enabled() and (
        input.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
    ):
        output = Conv2dFunction.apply(input, weight, bias, prepared)
    else:  # inference: no autograd node to build, so skip Function.apply's cost on every call
        output = prepared.forward(input, weight, bias)
    return output if batched else output.squeeze(0)


def _fused(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    geometry: tuple,
    activation: str | None,
    residual: torch.Tensor | None,
    negative_slope: float,
) -> torch.Tensor:
    """conv2d with an epilogue: in the kernel, or, while recording, under torch.compile (Inductor
    fuses the epilogue itself) and under forward AD or torch.func (whose tangents and vmap rules
    torch's own add and activation have), as the convolution followed by torch's add and activation."""
    check_activation(activation)
    if _shapes_only or torch.compiler.is_compiling() or transforms_active():
        return with_torch_epilogue(conv2d(input, weight, bias, *geometry), activation, residual, negative_slope)
    autocast_dtype = autocast_dtype_for(input)
    if autocast_dtype is not None:
        input, weight, bias = (autocast(t, autocast_dtype) for t in (input, weight, bias))
    batched = input.dim() == 4
    needs_grad = fused_needs_grad(input, weight, bias, residual)
    activation = activation or ""
    epilogue_key = fused_key(activation, negative_slope, residual, needs_grad)
    key = call_key(input, weight, bias, tuple(hashable(a) for a in geometry), epilogue_key)
    epilogue = Epilogue(activation, slope_constant(activation, negative_slope))
    prepared = prepared_conv(key, input, weight, bias, geometry, epilogue, residual=residual)
    if residual is not None and not batched:
        residual = residual.unsqueeze(0)
    output = run_fused(prepared, input if batched else input.unsqueeze(0), weight, bias, residual, needs_grad)
    return output if batched else output.squeeze(0)


def check_activation(activation: str | None) -> None:
    if activation is not None and activation not in ACTIVATIONS:
        raise ValueError(f"activation must be None or one of {', '.join(ACTIVATIONS)}; got {activation!r}")


def fused_needs_grad(input, weight, bias, residual) -> bool:
    residual_wants_grad = residual is not None and residual.requires_grad and torch.is_grad_enabled()
    return _needs_grad(input, weight, bias) or residual_wants_grad


def fused_key(activation: str, negative_slope: float, residual: torch.Tensor | None, needs_grad: bool) -> tuple:
    """A fused call's part of its key: the epilogue's constexprs, the residual's layout, and whether
    the pre-activation is kept for the backward."""
    keeps_z = needs_grad and bool(activation) and not saves_output(activation, negative_slope)
    return activation, slope_constant(activation, negative_slope), negative_slope >= 0, tensor_key(residual), keeps_z


def run_fused(prepared: PreparedConv, input, weight, bias, residual, needs_grad: bool) -> torch.Tensor:
    """A prepared fused call on a batched input (2-D or 3-D), through autograd when a gradient is needed."""
    if needs_grad:
        return FusedConv2dFunction.apply(input, weight, bias, residual, prepared)
    return prepared.forward_with_epilogue(input, weight, bias, residual, for_backward=False)[0]


def torch_with_epilogue(torch_conv: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """The unfused computation in torch alone: torch's conv (`F.conv2d`, `F.conv3d`, a transposed
    one), then its add and activation, with the fused call's keywords."""

    def unfused(*arguments, activation=None, residual=None, negative_slope=0.01, **conv_keywords) -> torch.Tensor:
        output = torch_conv(*arguments, **conv_keywords)
        return with_torch_epilogue(output, activation, residual, negative_slope)

    return unfused


torch_conv2d_with_epilogue = torch_with_epilogue(TORCH_CONV2D)
torch_conv3d_with_epilogue = torch_with_epilogue(TORCH_CONV3D)


def conv1d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: str | int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
) -> torch.Tensor:
    """1-D convolution with `torch.nn.functional.conv1d`'s semantics, computed by the 2-D kernels
    with H = 1: (N, C, L) or unbatched (C, L) inputs, weight (K, C/groups, S), padding int or
    'same'/'valid'. The output is contiguous, as torch's is; gradients flow as in `conv2d`."""
    if _shapes_only or (input.dim() in (2, 3) and 0 in input.shape[-2:]):  # recording, or no channels or length
        return TORCH_CONV1D(input, weight, bias, stride, padding, dilation, groups)
    autocast_dtype = autocast_dtype_for(input)
    if autocast_dtype is not None:
        input, weight, bias = (autocast(t, autocast_dtype) for t in (input, weight, bias))
    input_2d, weight_2d, geometry = as_conv2d(input, weight, stride, padding, dilation, groups)
    if torch.compiler.is_compiling():
        return library_ops.conv2d(input_2d, weight_2d, bias, *geometry).squeeze(-2)
    if transforms_active():
        check_like_torch(TORCH_CONV1D, input, weight, bias, (stride, padding, dilation, groups), batched_dim=3)
        return differentiable.convolution(input_2d, weight_2d, bias, Geometry.of(*geometry, True)).squeeze(-2)
    key = call_key(input_2d, weight_2d, bias, geometry, CONV1D_KEY)
    prepared = prepared_conv(key, input_2d, weight_2d, bias, geometry, as_problem=conv1d_problem)
    return _run(prepared, input_2d, weight_2d, bias).squeeze(-2)


CONV1D_KEY = ("conv1d",)  # a conv1d's output is contiguous whatever its input's strides: its own plans


def as_conv2d(
    input: torch.Tensor,
    weight: torch.Tensor,
    stride: int | Sequence[int],
    padding: str | int | Sequence[int],
    dilation: int | Sequence[int],
    groups: int,
) -> tuple[torch.Tensor, torch.Tensor, tuple]:
    """A conv1d call as the conv2d it is with H = 1: the input and weight with a unit height axis
    (views), and (stride, padding, dilation, groups) for the 2-D call. Refuses what `F.conv1d`
    refuses, with its messages."""
    if input.dim() not in (2, 3):
        raise RuntimeError(
            f"Expected 2D (unbatched) or 3D (batched) input to conv1d, but got input of size: {list(input.shape)}"
        )
    if weight.dim() != 3:
        raise RuntimeError(
            f"Expected {weight.dim()}-dimensional input for {weight.dim()}-dimensional weight {list(weight.shape)}, "
            f"but got {input.dim()}-dimensional input of size {list(input.shape)} instead"
        )
    channels = input.shape[-2]
    if groups > 0 and weight.shape[1] * groups != channels:
        batched_shape = list(input.shape) if input.dim() == 3 else [1, *input.shape]
        raise RuntimeError(
            f"Given groups={groups}, weight of size {list(weight.shape)}, expected input{batched_shape} "
            f"to have {weight.shape[1] * groups} channels, but got {channels} channels instead"
        )
    padding = padding if isinstance(padding, str) else (0, _single(padding, "padding"))
    geometry = ((1, _single(stride, "stride")), padding, (1, _single(dilation, "dilation")), groups)
    return input.unsqueeze(-2), weight.unsqueeze(-2), geometry


def _single(value: int | Sequence[int], name: str) -> int:
    """conv1d's int or 1-sequence argument as an int."""
    if isinstance(value, Sequence):
        if len(value) != 1:
            raise RuntimeError(
                f"expected {name} to be a single integer value or a list of 1 values to match the "
                f"convolution dimensions, but got {name}={list(value)}"
            )
        (value,) = value
    return value


def _needs_grad(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    if not torch.is_grad_enabled():
        return False
    return input.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)


_shapes_only = False
_note: Callable[[ConvProblem], None] | None = None


def recording_shapes() -> bool:
    """True while `torch_computes()` holds: a model's problems are being recorded (`models.tune_model`)."""
    return _shapes_only


@contextlib.contextmanager
def torch_computes(note: Callable[[ConvProblem], None] | None = None) -> Iterator[None]:
    """Within this context `conv2d` hands every call to `F.conv2d`: `models.tune_model` records the
    problems a model runs through torch's own conv, where a model already using tritonconv would
    otherwise compile (and, with TRITONCONV_AUTOTUNE=on, tune) mid-recording. `note` receives the
    problems a caller reports itself (`note_problem`)."""
    global _shapes_only, _note
    previous = _shapes_only, _note
    _shapes_only, _note = True, note
    try:
        yield
    finally:
        _shapes_only, _note = previous


def note_problem(problem: ConvProblem) -> None:
    """While recording: `problem` is what the next torch convolution call really runs (a causal
    conv1d computes its padded conv1d then crops; tritonconv runs the causal problem itself)."""
    if _note is not None:
        _note(problem)


# One C call that is False outside every autocast region: the common case costs no more than that.
_any_autocast = getattr(torch._C, "_is_any_autocast_enabled", lambda: True)


def autocast_dtype_for(input: torch.Tensor) -> torch.dtype | None:
    """The dtype autocast would run F.conv2d in on `input`'s device, or None outside autocast."""
    if not _any_autocast():
        return None
    device_type = input.device.type
    if device_type not in ("cuda", "cpu") or not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type)


def autocast(tensor: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """Cast as autocast does: floating tensors other than float64 (differentiably)."""
    if tensor is None or not tensor.is_floating_point() or tensor.dtype == torch.float64:
        return tensor
    return tensor.to(dtype)
