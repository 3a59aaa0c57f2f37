"""Put tritonconv into a model its user did not write, in one line, and take it out again.

`patch(model)` changes the class of each convolution module it can serve, in place: the module
object stays the same, so its Parameters (and an optimizer built on them), hooks, training mode,
device, dtype, name and state_dict keys are untouched. The new class derives from the module's own
class and from `tritonconv.Conv2d` (or `Conv1d`, `Conv3d`), keeps the original's name, and remembers the
original, so `unpatch` restores it exactly. Patched modules fall back to torch for calls tritonconv
cannot serve (`fallback.py`).

A conv subclass with a forward of its own that calls the functional convolution itself (timm's
`Conv2dSame`, `StdConv2d`; Hugging Face's `WeightStandardizedConv2d`) keeps its forward; its class
is swapped for one that routes the functional convolutions it makes to tritonconv while it runs
(`routing.py`), and `unpatch` restores it too.

`patch_torch()` / `unpatch_torch()` / `patched()` route the functional forms instead
(`torch.nn.functional.conv1d`/`conv2d`/`conv3d` and the transposed ones, and their
`torch.*` forms), for code that calls them; code
that imported the function itself before patching keeps torch's.
"""

from __future__ import annotations

import contextlib
import fnmatch
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd, _ConvTransposeNd
from torch.nn.modules.lazy import LazyModuleMixin

from ..frontend import nn as tritonconv_nn
from ..frontend.fallback import (
    FUNCTIONAL_CONVS,
    served_conv1d,
    served_conv2d,
    served_conv3d,
    served_conv_transpose1d,
    served_conv_transpose2d,
    served_conv_transpose3d,
)
from ..problem.arithmetic import SUPPORTED_DTYPES
from . import fusion
from .routing import functional_convs_routed
from .swap import Swapped, derived_class, restore

ModuleFilter = str | Sequence[str] | Callable[[str, nn.Module], bool]


@dataclass
class PatchReport:
    """What `patch` did: the names of the modules it serves directly (`patched`), those whose own
    forward's functional convolutions it routes (`routed`), the convolution modules it left alone
    with the reason (name, class, reason), and with `fuse=True` the chains it fused and the ones it
    did not, with why."""

    patched: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)
    fused: list[str] = field(default_factory=list)
    not_fused: list[str] = field(default_factory=list)
    routed: list[str] = field(default_factory=list)

    def table(self) -> str:
        rows = [(name, "patched", "") for name in self.patched]
        rows += [(name, "routed", ROUTED_WHY) for name in self.routed]
        rows += [(name, "left alone", f"{kind}: {reason}") for name, kind, reason in self.skipped]
        if not rows:
            return "no convolution modules found"
        rows = [(name or "(the model itself)", status, why) for name, status, why in rows]
        width = max(len("module"), *(len(name) for name, _, _ in rows))
        lines = [f"{'module':<{width}}  {'status':<10}  why", f"{'-' * width}  {'-' * 10}  ---"]
        lines += [f"{name:<{width}}  {status:<10}  {why}".rstrip() for name, status, why in rows]
        lines.append(f"{len(self.patched)} patched, {len(self.routed)} routed, {len(self.skipped)} left alone")
        lines += [f"fused: {chain}" for chain in self.fused] + [f"not fused: {why}" for why in self.not_fused]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


class _Served(Swapped):
    """Mixin of every patched class (`swap.py`: a saved or copied patched model stays patched, and
    `unpatch` works on the copy). A conv fused with its BatchNorm and activation (`fusion.py`)
    folds and activates here."""

    def _conv_forward(self, input, weight, bias):
        weight, bias = fusion.folded_parameters(self, weight, bias)
        return super()._conv_forward(input, weight, bias)

    def _epilogue(self) -> dict:
        fused = fusion.fused_keywords(self)
        return super()._epilogue() if fused is None else fused


ROUTED_WHY = "its own forward runs; the functional convolutions it calls go to tritonconv"


class _Routed(Swapped):
    """Mixin of a conv subclass whose own forward calls the functional convolution: that forward
    runs as written, with its functional convolutions routed to tritonconv."""

    def forward(self, *args, **kwargs):
        # No routing in a traced graph, and none for a fused transposed convolution (its BatchNorm
        # folded, its activation in the epilogue): torch's transposed forward, written out and served.
        if torch.compiler.is_compiling() or fusion.is_fused(self):
            served = type(self)._tritonconv_served_forward
            return served(self, *args, **kwargs) if served else super().forward(*args, **kwargs)
        with functional_convs_routed():
            return super().forward(*args, **kwargs)


# torch's transposed convolution modules: their forward's functional call, and tritonconv's served form.
TRANSPOSED_MODULES = (
    (nn.ConvTranspose1d, 1, served_conv_transpose1d),
    (nn.ConvTranspose2d, 2, served_conv_transpose2d),
    (nn.ConvTranspose3d, 3, served_conv_transpose3d),
)


def _served_transposed_forward(original: type) -> Callable | None:
    """For a class whose forward is torch's own transposed forward, that forward with its functional
    call served by tritonconv (what routing does eagerly, written out so a traced graph holds
    tritonconv's op); None for any other class (its forward is compiled as written)."""
    for base, axes, served in TRANSPOSED_MODULES:
        if issubclass(original, base) and original.forward is base.forward:

            def forward(module, input, output_size=None, axes=axes, served=served):
                if module.padding_mode != "zeros":
                    raise ValueError(f'Only "zeros" padding mode is supported for {type(module).__name__}')
                output_padding = module._output_padding(input, output_size, module.stride, module.padding,
                                                        module.kernel_size, axes, module.dilation)  # fmt: skip
                weight, bias = fusion.folded_parameters(module, module.weight, module.bias)
                return served(input, weight, bias, module.stride, module.padding, output_padding, module.groups,
                              module.dilation, **(fusion.fused_keywords(module) or {}))  # fmt: skip

            return forward
    return None


def routed_class(original: type) -> type:
    """`_Routed` over `original`, holding `_served_transposed_forward(original)` (built once per class)."""
    served = _served_transposed_forward(original)
    return derived_class(routed_class, (_Routed,), original,
                         _tritonconv_served_forward=None if served is None else staticmethod(served))  # fmt: skip


def has_custom_forward(module: nn.Module) -> bool:
    """True when the module is a transposed convolution (served through its forward's functional
    call) or its class overrides `forward` or `_conv_forward` of nn.Conv1d/nn.Conv2d."""
    if isinstance(module, _ConvTransposeNd):
        return True
    base = next(base for base in (nn.Conv1d, nn.Conv2d, nn.Conv3d) if isinstance(module, base))
    cls = type(module)
    return cls.forward is not base.forward or cls._conv_forward is not base._conv_forward


def patched_class(original: type) -> type:
    """The class a module of class `original` becomes: `_Served`, then tritonconv's layer, then
    `original` (whose own methods other than the convolution are kept). One per original class."""
    layer, served = next(
        (layer, served) for base, layer, served in (
            (nn.Conv2d, tritonconv_nn.Conv2d, served_conv2d),
            (nn.Conv1d, tritonconv_nn.Conv1d, served_conv1d),
            (nn.Conv3d, tritonconv_nn.Conv3d, served_conv3d),
        ) if issubclass(original, base)
    )  # fmt: skip
    return derived_class(patched_class, (_Served, layer), original, _convolve=staticmethod(served))


def why_not_served(module: nn.Module) -> str | None:
    """Why `patch` leaves a convolution module alone, or None if it can serve it."""
    if isinstance(module, (_Served, _Routed)):
        return "already patched"
    if isinstance(module, (tritonconv_nn.Conv2d, tritonconv_nn.Conv1d, tritonconv_nn.Conv3d,
                           tritonconv_nn.ConvTranspose2d, tritonconv_nn.ConvTranspose1d,
                           tritonconv_nn.ConvTranspose3d)):  # fmt: skip
        return "already a tritonconv layer"
    if isinstance(module, LazyModuleMixin) and module.has_uninitialized_params():
        return "lazy module not yet initialised (run one forward first)"
    if not isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                               nn.ConvTranspose3d)):  # fmt: skip
        return f"{type(module).__name__} is not a convolution tritonconv serves"
    if module.weight.dtype not in SUPPORTED_DTYPES:
        return f"dtype {module.weight.dtype} is not supported"
    return None


def _matches(spec: ModuleFilter, name: str, module: nn.Module) -> bool:
    if callable(spec):
        return bool(spec(name, module))
    patterns = [spec] if isinstance(spec, str) else list(spec)
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def patch(
    model: nn.Module,
    *,
    include: ModuleFilter | None = None,
    exclude: ModuleFilter | None = None,
    fuse: bool = False,
) -> PatchReport:
    """Make every `nn.Conv1d`, `nn.Conv2d` and `nn.Conv3d` in `model` (the model itself included) that tritonconv
    can serve a tritonconv layer, in place, and report what was patched and what was left alone. A
    conv subclass with a forward of its own keeps it, and the functional convolutions it calls are
    routed to tritonconv while it runs (`routed` in the report).

    `include` and `exclude` take module-name patterns (`fnmatch`, e.g. `'layer1.*'`), a list of
    them, or a predicate `(name, module) -> bool`: only included modules are patched (all, when
    None), and excluded ones never are. A module reachable under two names is patched once.

    `fuse=True` also folds a `BatchNorm2d` (`BatchNorm3d`) in eval mode that follows a patched
    `Conv2d` or `ConvTranspose2d` (`Conv3d`, `ConvTranspose3d`) into its weights and bias, and runs a
    following ReLU/SiLU/GELU/LeakyReLU module in its epilogue (in `Sequential`s, and through
    `torch.fx` where the model traces; `fusion.py`).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"patch() expects a torch.nn.Module (a model or a layer); got {type(model).__name__}")
    report = PatchReport()
    for name, module in model.named_modules():
        if not isinstance(module, _ConvNd):
            continue
        reason = why_not_served(module)
        if reason is None and include is not None and not _matches(include, name, module):
            reason = "not included"
        if reason is None and exclude is not None and _matches(exclude, name, module):
            reason = "excluded"
        if reason is None and has_custom_forward(module):
            module.__class__ = routed_class(type(module))
            report.routed.append(name)
        elif reason is None:
            module.__class__ = patched_class(type(module))
            report.patched.append(name)
        else:
            report.skipped.append((name, type(module).__name__, reason))
    if fuse:
        _fuse(model, report)
    return report


def _fuse(model: nn.Module, report: PatchReport) -> None:
    convs = [
        name for name, module in model.named_modules()
        if _fusable(module) and not fusion.is_fused(module)
    ]  # fmt: skip
    chains, trace_error = fusion.find_chains(model, convs)
    if trace_error is not None:
        report.not_fused.append(f"torch.fx could not trace the model ({trace_error}); only Sequentials were searched")
    for chain in chains:
        fused, why = fusion.fuse_chain(model, chain)
        if fused is not None:
            report.fused.append(fused)
        if why is not None:
            report.not_fused.append(why)


def _fusable(module: nn.Module) -> bool:
    """A patched Conv2d or Conv3d, or a routed ConvTranspose2d or ConvTranspose3d whose forward is
    torch's own (its class holds that forward written out and served: `routed_class`)."""
    if isinstance(module, _Served):
        return isinstance(module, (nn.Conv2d, nn.Conv3d))
    return (
        isinstance(module, _Routed)
        and isinstance(module, (nn.ConvTranspose2d, nn.ConvTranspose3d))
        and type(module)._tritonconv_served_forward is not None
    )


def unpatch(model: nn.Module) -> list[str]:
    """Give every module `patch` changed its original class back (and undo any fusion); return the
    names of the convolution modules restored."""
    fusion.unfuse(model)
    restored = []
    for name, module in model.named_modules():
        if isinstance(module, (_Served, _Routed)):
            restore(module)
            restored.append(name)
    return restored


def patch_torch() -> None:
    """Route `F.conv2d`, `F.conv1d`, `F.conv3d`, `F.conv_transpose2d`, `F.conv_transpose1d` and their `torch.*`
    forms through tritonconv (with torch as the fallback). torch's conv modules call these, so
    unpatched modules follow too."""
    for owner, name, served, _ in FUNCTIONAL_CONVS:
        setattr(owner, name, served)


def unpatch_torch() -> None:
    """Give torch its own functions back."""
    for owner, name, _, original in FUNCTIONAL_CONVS:
        setattr(owner, name, original)


def torch_is_patched() -> bool:
    return torch.nn.functional.conv2d is served_conv2d


@contextlib.contextmanager
def patched() -> Iterator[None]:
    """`patch_torch()` for the body of a `with`, restored on exit even when the body raises; nested
    or inside a `patch_torch()`, it leaves the routing as it found it."""
    already = torch_is_patched()
    patch_torch()
    try:
        yield
    finally:
        if not already:
            unpatch_torch()
