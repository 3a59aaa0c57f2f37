"""Facts about where kernels run: the Triton interpreter or a GPU, and torch's fp32 precision policy.

Nothing here touches CUDA at import time, so `import tritonconv` works on machines without a GPU.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable

import torch
from packaging.version import Version

from .devices import DEFAULT_ARCH, GpuArch, arch_of

FP64_DOT_SINCE = Version("3.5")


def is_interpreted(kernel: object) -> bool:
    """True when `kernel` was decorated while TRITON_INTERPRET was set.

    Triton picks the interpreter when `@triton.jit` runs, not at launch, so the kernel object (not
    the current environment) is the truth about how a launch will execute.
    """
    return type(kernel).__name__ == "InterpretedFunction"


def check_device(tensor: torch.Tensor, kernel: object) -> None:
    """Refuse tensors the compiled kernels cannot reach, with the fix in the message."""
    if tensor.device.type == "cuda":
        if is_interpreted(kernel):
            raise RuntimeError(
                "tritonconv was imported with TRITON_INTERPRET=1, so its kernels run on the CPU; "
                "pass CPU tensors or unset TRITON_INTERPRET before importing tritonconv"
            )
        return
    if tensor.device.type == "cpu" and (is_interpreted(kernel) or _target_arch is not None):
        return  # the interpreter runs CPU tensors; a compile-only run prepares launches with them
    raise RuntimeError(
        f"tritonconv runs on CUDA tensors, but got a tensor on {tensor.device}; for CPU tensors set "
        "TRITON_INTERPRET=1 before importing tritonconv (the Triton interpreter, slow, for testing)"
    )


def on_device_of(tensor: torch.Tensor) -> contextlib.AbstractContextManager:
    """Make `tensor`'s GPU current for a launch: Triton launches on the current device, not the tensor's.

    Switching devices costs two driver calls per launch, so it is done only when the tensor's GPU is
    not already the current one (the common case on one GPU and under DDP, one GPU per process).
    """
    if tensor.device.type != "cuda" or tensor.device.index == torch.cuda.current_device():
        return contextlib.nullcontext()
    return torch.cuda.device(tensor.device)


_target_arch: GpuArch | None = None


def device_arch(device: torch.device) -> GpuArch | None:
    """The architecture launches for `device` are prepared for: the GPU's own, or the target a
    compile-only run set (`target_arch`); None for a CPU tensor outside such a run."""
    if _target_arch is not None:
        return _target_arch
    if device.type != "cuda":
        return None
    return _gpu_arch(torch.cuda.current_device() if device.index is None else device.index)


def current_arch() -> GpuArch | None:
    """`device_arch` of the current GPU (None on a machine without one and outside a compile-only run)."""
    if _target_arch is not None:
        return _target_arch
    return _gpu_arch(torch.cuda.current_device()) if torch.cuda.is_available() else None


def planning_arch() -> GpuArch:
    """The architecture the heuristics size configs for: `current_arch`, or (the interpreter, no GPU)
    the default arch's limits."""
    return current_arch() or DEFAULT_ARCH


@functools.cache
def _gpu_arch(index: int) -> GpuArch:
    return arch_of(torch.device("cuda", index))


@contextlib.contextmanager
def target_arch(arch: GpuArch):
    """Prepare launches as for a GPU of `arch` (compile-only runs: `ops/static_compile.py`)."""
    global _target_arch
    previous, _target_arch = _target_arch, arch
    try:
        yield
    finally:
        _target_arch = previous


def triton_version() -> str:
    """The installed Triton's version (imports Triton: a call needs it, `import tritonconv` does not)."""
    import triton

    return triton.__version__


def supports_fp64_dot(version: str | None = None) -> bool:
    """Triton accepts fp64 operands in tl.dot from 3.5 on (earlier versions assert on them); `version`
    is the installed Triton's by default."""
    return Version(version or triton_version()).release >= FP64_DOT_SINCE.release


def check_dtype_supported(dtype: torch.dtype) -> None:
    """Refuse fp64 up front where the installed Triton cannot compile an fp64 dot."""
    if dtype == torch.float64 and not supports_fp64_dot():
        raise RuntimeError(
            f"float64 convolution needs Triton >= {FP64_DOT_SINCE} (fp64 tl.dot); this is Triton {triton_version()}"
        )


def fp32_dot_precision() -> str:
    """'tf32' when torch lets convolutions use TF32 (torch.backends.cudnn.allow_tf32), else 'ieee'.

    tritonconv follows cuDNN's switch rather than matmul's, so swapping it in for `F.conv2d` keeps the
    precision a user already chose.
    """
    return "tf32" if torch.backends.cudnn.allow_tf32 else "ieee"


POISON_ENV = "TRITONCONV_POISON_OUTPUTS"


def environment_reader(name: str) -> Callable[[], str | None]:
    """A function returning the environment variable `name` (None when unset), for the per-call path.

    `os.environ.get` costs about 0.5 us (it encodes the key and decodes the value each time), which
    is a tenth of a convolution call's host budget. On POSIX `os.environ` keeps its values in the
    dict `_data`, keyed and valued by bytes, and every assignment through `os.environ` (a user's,
    pytest's monkeypatch) updates it, so reading it directly sees the same values at a dictionary
    lookup's cost. Elsewhere the ordinary read is used.
    """
    data = getattr(os.environ, "_data", None)
    if os.name != "posix" or not isinstance(data, dict):
        return lambda: os.environ.get(name)
    key = os.fsencode(name)

    def read() -> str | None:
        value = data.get(key)
        return None if value is None else os.fsdecode(value)

    return read


@contextlib.contextmanager
def environment_variable(name: str, value: str):
    """Within: the environment variable `name` is `value`; afterwards what it was (or unset)."""
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            del os.environ[name]
        else:
            os.environ[name] = previous


def poison_outputs() -> bool:
    """True when TRITONCONV_POISON_OUTPUTS=1: outputs start NaN-filled so unwritten elements show.

    A debugging and testing switch, like torch's `fill_uninitialized_memory`; off by default because
    the fill costs one extra pass over every output.
    """
    return os.environ.get(POISON_ENV, "0") == "1"


def new_output(
    shape: tuple[int, ...], like: torch.Tensor, memory_format: torch.memory_format = torch.contiguous_format
) -> torch.Tensor:
    """Allocate a kernel's output on `like`'s device and dtype, NaN-poisoned when asked to be."""
    output = torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=memory_format)
    if poison_outputs():
        output.fill_(float("nan"))
    return output


def assume_constant_result(function: Callable) -> Callable:
    """`torch.compiler.assume_constant_result` without importing torch._dynamo when tritonconv is
    imported (about 1.3 s, most of what `import tritonconv` cost): the mark is the attribute that
    decorator sets and Dynamo reads when it meets the function while tracing. A test compiles a
    fallback with fullgraph=True, which breaks if Dynamo stops honouring it."""
    function._dynamo_marked_constant = True
    return function


def rerun_under_interpreter_without_gpu(module: str) -> None:
    """For command-line entry points: on a machine without CUDA, restart once under the interpreter.

    Triton chooses the interpreter when kernels are decorated, which happens when `tritonconv` is
    imported, before any entry point's code runs; so the only way to switch is a fresh process.
    """
    if torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET", "0") == "1":
        return
    env = dict(os.environ, TRITON_INTERPRET="1")
    os.execve(sys.executable, [sys.executable, "-m", module, *sys.argv[1:]], env)


def rerun_compiled(module: str) -> None:
    """For compile-only entry points: restart once without TRITON_INTERPRET, whose kernels do not
    compile (Triton decides when `tritonconv` is imported, so only a fresh process can switch)."""
    if os.environ.get("TRITON_INTERPRET", "0") != "1":
        return
    env = {name: value for name, value in os.environ.items() if name != "TRITON_INTERPRET"}
    os.execve(sys.executable, [sys.executable, "-m", module, *sys.argv[1:]], env)
