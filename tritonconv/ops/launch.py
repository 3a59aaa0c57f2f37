"""One kernel launch with everything decided but its pointers: what a planned call replays.

A `KernelLaunch` holds a kernel, its grid, its scalar arguments (sizes and strides) and its
constexprs, all fixed by the call's key (shapes, strides, dtypes, alignment, flags). Each call then
passes only the pointers, which are the kernel's leading parameters by the project's argument order.

On a GPU, after the first launch through the JIT (which compiles and caches the kernel), later
launches go straight to the compiled kernel's own launcher, as the JIT itself does at its end, but
without binding and specialising every argument again (vLLM's `CachedKernel` and FlagGems'
`LibEntry` do the same). Where that launcher's calling convention is not the one known here (a
Triton without `triton.knobs`, the interpreter), or while a launch hook is installed (a profiler),
the ordinary JIT launch runs instead. `STUB`, set by the host benchmark, replaces the final launch
so the host time of everything else can be measured on a machine without a GPU.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Mapping, Sequence

from ..problem.runtime import is_interpreted


@functools.cache
def _triton_knobs() -> object | None:
    """Triton >= 3.4's `triton.knobs` (the launcher takes every parameter in order, and the hooks live
    there), or None; imported at the first launch, not with tritonconv."""
    try:
        from triton import knobs
    except ImportError:  # pragma: no cover - depends on the installed Triton
        return None
    return knobs


LAUNCH_OPTIONS = ("num_warps", "num_stages")

# Replaces every launch when set (host benchmark only): called with the launch and its pointers.
STUB: Callable[..., None] | None = None


class KernelLaunch:
    """`kernel[grid](*pointers, *scalars, **constexprs)`, with pointers given per call."""

    __slots__ = ("_direct", "constexprs", "grid", "kernel", "scalars")

    def __init__(self, kernel: object, grid: Sequence[int], scalars: Sequence[int], constexprs: Mapping[str, object]):
        self.kernel = kernel
        self.grid = tuple(grid)
        self.scalars = tuple(scalars)
        self.constexprs = dict(constexprs)
        self._direct: Callable[..., None] | None = None

    def __call__(self, *pointers: object) -> None:
        if STUB is not None:
            STUB(self, *pointers)
            return
        direct = self._direct
        if direct is not None and not _hooks_installed():
            direct(*pointers)
            return
        compiled = self.kernel[self.grid](*pointers, *self.scalars, **self.constexprs)
        if direct is None and compiled is not None and not is_interpreted(self.kernel):
            self._direct = _bind(self, compiled, len(pointers)) or _jit_only

    @property
    def bound(self) -> bool:
        """True once later launches skip the JIT's argument binding."""
        return self._direct not in (None, _jit_only)


def _jit_only(*pointers: object) -> None:  # pragma: no cover - a marker, never called
    raise AssertionError("KernelLaunch._jit_only is a marker")


def _hooks_installed() -> bool:
    runtime = _triton_knobs().runtime
    return bool(runtime.launch_enter_hook.calls or runtime.launch_exit_hook.calls)


def _bind(launch: KernelLaunch, compiled: object, pointer_count: int) -> Callable[..., None] | None:
    """The compiled kernel's launcher with the fixed arguments appended, or None where this
    Triton's calling convention is not the known one (then every launch goes through the JIT)."""
    knobs = _triton_knobs()
    if knobs is None or not hasattr(knobs.runtime.launch_enter_hook, "calls"):
        return None
    try:
        from triton.runtime import driver

        params = [param.name for param in launch.kernel.params]
        constexpr_names = params[pointer_count + len(launch.scalars) :]
        options = {name: value for name, value in launch.constexprs.items() if name in LAUNCH_OPTIONS}
        if set(constexpr_names) != set(launch.constexprs) - set(options):
            return None
        tail = (*launch.scalars, *(launch.constexprs[name] for name in constexpr_names))
        run, function, metadata = compiled.run, compiled.function, compiled.packed_metadata
        device = driver.active.get_current_device()
        current_stream = driver.active.get_current_stream
        grid_0, grid_1, grid_2 = (*launch.grid, 1, 1)[:3]
    except Exception:  # an internal that moved: the JIT launch stays correct
        return None

    def direct(*pointers: object) -> None:
        run(grid_0, grid_1, grid_2, current_stream(device), function, metadata, None, None, None, *pointers, *tail)

    return direct


@contextlib.contextmanager
def captured() -> Iterator[list[tuple[KernelLaunch, tuple]]]:
    """Within the block every launch is recorded, as (launch, pointers), instead of run: what a
    call would launch, for the compile-only gate, the tuner's static check and the host benchmark."""
    launches: list[tuple[KernelLaunch, tuple]] = []
    global STUB
    previous, STUB = STUB, lambda kernel_launch, *pointers: launches.append((kernel_launch, pointers))
    try:
        yield launches
    finally:
        STUB = previous


class LaunchCache:
    """Launches by call key (shapes, strides, dtypes, flags), so a call with a key seen before
    replays its launch (bound to the compiled kernel after its first run) instead of preparing one.
    Emptied when full: a serving process meets a handful of keys."""

    def __init__(self, limit: int = 1024):
        self.limit = limit
        self._launches: dict[tuple, KernelLaunch] = {}

    def get(self, key: tuple, build: Callable[[], KernelLaunch]) -> KernelLaunch:
        """The launch of `key`, built by `build()` (which checks the call's arguments) on first use."""
        launch = self._launches.get(key)
        if launch is None:
            launch = build()
            if len(self._launches) >= self.limit:
                self._launches.clear()
            self._launches[key] = launch
        return launch

    def clear(self) -> None:
        self._launches.clear()
