"""Changing a module's class in place to one derived from it, and back: how `patch` and fusion work.

The module object stays the same (its Parameters, hooks, name and state_dict keys with it); only its
class changes, to `mixins + (original,)`, named and documented as the original. A swapped module
pickles and deep-copies as 'the factory's class for the original', so it loads swapped.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn


class Swapped:
    """Base of every swapped class: remembers the original class and the factory that made it."""

    _tritonconv_original: type
    _tritonconv_factory: Callable[[type], type]

    def __reduce_ex__(self, protocol):
        cls = type(self)
        return _rebuild, (cls._tritonconv_factory, cls._tritonconv_original), self.__dict__


_DERIVED: dict[tuple[Callable, type], type] = {}


def derived_class(factory: Callable[[type], type], mixins: tuple[type, ...], original: type, **namespace) -> type:
    """The class `factory` swaps modules of class `original` to (one per factory and original):
    `mixins`, then `original`, with `namespace` added."""
    key = (factory, original)
    if key not in _DERIVED:
        namespace |= {
            "_tritonconv_original": original,
            "_tritonconv_factory": factory,
            "__module__": original.__module__,
            "__qualname__": original.__qualname__,
            "__doc__": original.__doc__,
        }
        _DERIVED[key] = type(original.__name__, (*mixins, original), namespace)
    return _DERIVED[key]


def restore(module: nn.Module) -> None:
    """Give a swapped module its original class back."""
    module.__class__ = type(module)._tritonconv_original


def _rebuild(factory: Callable[[type], type], original: type) -> nn.Module:
    return object.__new__(factory(original))
