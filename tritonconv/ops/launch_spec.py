"""A captured launch as data: what decides its compiled kernel, without its memory, so another
process can compile it ahead (`bench.quick.precompile`), and the static numbers of launches so
compiled, which the tuner's static check reads instead of compiling again."""

from __future__ import annotations

import importlib
from collections.abc import Sequence

import torch

from . import static_compile
from .descriptors import rebased, tensor_descriptor

# A captured launch without its memory, picklable: (module, kernel name, grid, pointer stand-ins,
# scalars, constexprs). Equal specs compile to the same kernel.
LaunchSpec = tuple[str, str, tuple, tuple, tuple, tuple]
# Static numbers of kernels compiled ahead (`tools.bench.quick.precompile`): compile key -> (usage, num_warps).
KNOWN_USAGE: dict[tuple, tuple[static_compile.StaticUsage, int]] = {}


def launch_spec(kernel_launch: object, pointers: Sequence[object]) -> LaunchSpec:
    """What decides a launch's compiled kernel, without its memory: each pointer's dtype and address
    mod 16 (Triton specialises 16-byte alignment; a descriptor's fields too), the scalars (Triton
    specialises 1 and multiples of 16) and the constexprs."""
    fn = kernel_launch.kernel.fn
    return (fn.__module__, fn.__name__, kernel_launch.grid, tuple(_pointer_spec(p) for p in pointers),
            tuple(kernel_launch.scalars), tuple(sorted(kernel_launch.constexprs.items())))  # fmt: skip


def compile_key(spec: LaunchSpec) -> tuple:
    """What of a launch Triton's compile depends on: not its grid, and of each scalar only the class
    Triton specialises it by (1, a multiple of 16, 32 or 64 bits), so two layers whose sizes differ
    but fall in the same classes share one kernel."""
    module, name, _, pointers, scalars, constexprs = spec
    return module, name, pointers, tuple(_scalar_class(value) for value in scalars), constexprs


def _scalar_class(value: object) -> object:
    if isinstance(value, tuple):  # a stride tuple: Triton specialises each element
        return tuple(_scalar_class(element) for element in value)
    if isinstance(value, bool) or not isinstance(value, int):
        return type(value).__name__ if not isinstance(value, bool) else value
    bits = 32 if -(2**31) <= value < 2**31 else 64
    return "one" if value == 1 else (bits, value % 16 == 0)


def _pointer_spec(pointer: object) -> tuple:
    if isinstance(pointer, torch.Tensor):
        return ("tensor", str(pointer.dtype), pointer.data_ptr() % 16)
    descriptor_class = tensor_descriptor()
    if descriptor_class is not None and isinstance(pointer, descriptor_class):
        fields = tuple((name, tuple(value) if isinstance(value, list | tuple) else value)
                       for name, value in sorted(vars(pointer).items()) if name != "base")  # fmt: skip
        return ("descriptor", str(pointer.base.dtype), pointer.base.data_ptr() % 16, fields)
    return ("value", pointer)


def _stand_in(spec: tuple) -> object:
    """A CPU object a compile takes for the pointer `spec` describes: a tensor of its dtype at an
    address with the same remainder mod 16 (or a descriptor over one)."""
    kind = spec[0]
    if kind == "value":
        return spec[1]
    dtype = getattr(torch, spec[1].removeprefix("torch."))
    raw = torch.empty(128, dtype=torch.uint8)
    skip = (spec[2] - raw.data_ptr()) % 16
    base = raw[skip : skip + 64].view(dtype)
    if kind == "tensor":
        return base
    descriptor = object.__new__(tensor_descriptor())
    descriptor.__dict__.update({name: list(value) if isinstance(value, tuple) else value for name, value in spec[3]})
    return rebased(descriptor, base)


def compile_spec(spec: LaunchSpec) -> tuple[str | None, tuple[static_compile.StaticUsage, int] | None]:
    """Compile one captured launch (inside `static_compile.compiling_for`): (None, (usage, num_warps)), or (the
    error, None)."""
    module, name, grid, pointers, scalars, constexprs = spec
    kernel = getattr(importlib.import_module(module), name)
    try:
        compiled = static_compile.compile_launch(kernel, grid, (*map(_stand_in, pointers), *scalars), dict(constexprs))
        return None, (static_compile.usage(compiled), compiled.metadata.num_warps)
    except Exception as error:  # the timed run meets the same error and records it against its candidate
        return f"{name}: {type(error).__name__}: {' '.join(str(error).split())[:200]}", None


def captured_usage(kernel_launch: object, pointers: Sequence[object]) -> tuple[static_compile.StaticUsage, int]:
    """(usage, num_warps) of a captured launch: remembered from a compile ahead, else compiled now."""
    known = KNOWN_USAGE.get(compile_key(launch_spec(kernel_launch, pointers)))
    if known is not None:
        return known
    compiled = static_compile.compile_captured(kernel_launch, pointers)
    return static_compile.usage(compiled), compiled.metadata.num_warps
