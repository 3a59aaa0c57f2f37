"""Route the functional convolutions one module makes to tritonconv while that module runs, and
nothing else: how `patch` serves conv subclasses whose own forward calls `F.conv2d` (timm's
`Conv2dSame` and `StdConv2d`, Hugging Face's `WeightStandardizedConv2d`) and torch's transposed
convolution modules (whose forward, `output_size` included, stays torch's).

While at least one routed module is running, `F.conv2d`, `F.conv1d`, `F.conv3d`, `F.conv_transpose2d`,
`F.conv_transpose1d` and their `torch.*` forms are dispatchers; a dispatcher sends a call to
tritonconv (with torch as the fallback, `fallback.py`) only from a thread that is inside a routed
module's forward, and to torch's own function otherwise. When the last routed module returns,
torch's functions are put back. Code that imported the function object itself before (rather than
calling it through its module) is not routed, and neither is anything under torch.compile (which
compiles the module's own forward).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

import torch

from ..frontend.fallback import FUNCTIONAL_CONVS

_local = threading.local()
_lock = threading.Lock()
_running = 0  # routed forwards running now, over all threads


def _dispatcher(served: Callable, original: Callable) -> Callable:
    def dispatch(*args, **kwargs):
        if getattr(_local, "depth", 0):
            return served(*args, **kwargs)
        return original(*args, **kwargs)

    dispatch.__name__, dispatch.__doc__ = original.__name__, original.__doc__
    return dispatch


_ROUTES = tuple(
    (owner, name, _dispatcher(served, original), original) for owner, name, served, original in FUNCTIONAL_CONVS
)
_DISPATCH_CONV2D = _ROUTES[0][2]  # F.conv2d's dispatcher


@contextlib.contextmanager
def functional_convs_routed() -> Iterator[None]:
    """Within this block (in this thread), the functional convolutions go to tritonconv."""
    global _running
    with _lock:
        if _running == 0:
            for owner, name, dispatcher, original in _ROUTES:
                if getattr(owner, name) is original:  # `patch_torch()` may have routed it for good already
                    setattr(owner, name, dispatcher)
        _running += 1
    _local.depth = getattr(_local, "depth", 0) + 1
    try:
        yield
    finally:
        _local.depth -= 1
        with _lock:
            _running -= 1
            if _running == 0:
                for owner, name, dispatcher, original in _ROUTES:
                    if getattr(owner, name) is dispatcher:
                        setattr(owner, name, original)


def routes_installed() -> bool:
    """True while some routed module is running (the dispatchers are in place)."""
    return torch.nn.functional.conv2d is _DISPATCH_CONV2D
