"""Fast positional constructors for frozen, slotted dataclasses.

A frozen dataclass's ``__init__`` sets each field with ``object.__setattr__``, which
looks the name up through the class every time: for the events a catch-up decodes,
verifies and stores by the thousand a second, that costs more than checking them.
:func:`slot_builder` makes a function that sets the slots through their descriptors
instead, at about half the cost, for classes that check nothing in ``__post_init__``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["slot_builder"]

_T = TypeVar("_T")


def slot_builder(cls: type[_T]) -> Callable[..., _T]:
    """``build(*fields)``: an instance of ``cls`` from every field, in declared order.

    Raises:
        TypeError: ``cls`` has a ``__post_init__`` (its checks would be skipped) or no
            slots of its own.
    """
    names = tuple(getattr(cls, "__slots__", ()))
    fields = tuple(f.name for f in dataclasses.fields(cls)) if dataclasses.is_dataclass(cls) else ()
    if hasattr(cls, "__post_init__") or not names or names != fields:
        raise TypeError(f"{cls.__qualname__} is not a slotted dataclass without __post_init__")
    ns: dict[str, Any] = {"new": object.__new__, "cls": cls}
    ns.update((f"set{i}", getattr(cls, name).__set__) for i, name in enumerate(names))
    args = ", ".join(f"v{i}" for i in range(len(names)))
    lines = [f"def build({args}):", "    obj = new(cls)"]
    lines += [f"    set{i}(obj, v{i})" for i in range(len(names))]
    lines.append("    return obj")
    exec("\n".join(lines), ns)  # made from the class's own slot count, never from input
    build: Callable[..., _T] = ns["build"]
    return build
