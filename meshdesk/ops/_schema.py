"""What a control operation's arguments may be, checked in one place.

A :class:`Param` names one argument, its kind and its limits; :func:`check_args`
turns a JSON-shaped mapping into :class:`Args` or raises the operation's error
class with one line naming the key. The control socket, the offline CLI and the
console's fake node all check through it, so each refuses the same input the same
way, and a handler only ever sees values of the declared kinds.

Missing means absent, ``null``, or ``""`` for the text-like kinds: a required
argument that is missing is an error, an optional one takes its default.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TypeVar

from meshdesk.errors import MeshdeskError

__all__ = [
    "Args",
    "Kind",
    "Param",
    "check_args",
    "choice",
    "date",
    "flag",
    "integer",
    "shown",
    "text",
    "texts",
]

_T = TypeVar("_T")


class Kind(enum.StrEnum):
    """The kinds of argument an operation can take (JSON types with rules)."""

    TEXT = "text"
    CHOICE = "choice"
    INT = "int"
    BOOL = "bool"
    TEXTS = "texts"
    DATE = "date"


class _Bad(Exception):
    """One argument is wrong; the message names it."""


#: Longest piece of client input an error message repeats.
SHOWN = 40


def shown(value: object) -> str:
    """``repr(value)``, cut short: an error line must stay one short line."""
    out = repr(value)
    return out if len(out) <= SHOWN else out[: SHOWN - 1] + "…"


@dataclass(frozen=True)
class Param:
    """One argument of an operation.

    ``positional`` and ``metavar`` only shape the generated command line.
    """

    name: str
    kind: Kind
    help: str = ""
    required: bool = False
    default: object = None
    choices: tuple[str, ...] = ()
    low: int | None = None
    high: int | None = None
    max_len: int | None = None
    min_items: int = 0
    max_items: int | None = None
    positional: bool = False
    metavar: str | None = None

    def describe(self) -> str:
        """A short description of the accepted values, for help texts."""
        match self.kind:
            case Kind.CHOICE:
                return "one of: " + ", ".join(self.choices)
            case Kind.INT:
                low = "" if self.low is None else f" from {self.low}"
                high = "" if self.high is None else f" up to {self.high}"
                return f"a whole number{low}{high}"
            case Kind.BOOL:
                return "true or false"
            case Kind.TEXTS:
                return "a list of texts"
            case Kind.DATE:
                return "a date, YYYY-MM-DD"
            case _:
                return "text"

    def check(self, value: object) -> object:
        """The checked value (or the default); raises ``_Bad`` naming the key."""
        textual = self.kind in (Kind.TEXT, Kind.CHOICE, Kind.DATE)
        if value is None or (textual and value == ""):
            if self.required:
                raise _Bad(f"{self.name} is required")
            return list(self.default) if isinstance(self.default, tuple) else self.default
        key = self.name
        match self.kind:
            case Kind.TEXT:
                if not isinstance(value, str):
                    raise _Bad(f"{key} must be text")
                if self.max_len is not None and len(value) > self.max_len:
                    raise _Bad(f"{key} is longer than {self.max_len} characters")
                return value
            case Kind.CHOICE:
                if value not in self.choices:
                    raise _Bad(
                        f"unknown {key} {shown(value)}; choose one of: {', '.join(self.choices)}"
                    )
                return value
            case Kind.INT:
                if not isinstance(value, int) or isinstance(value, bool):
                    raise _Bad(f"{key} must be a whole number")
                if self.low is not None and value < self.low:
                    raise _Bad(f"{key} must be at least {self.low}, not {value}")
                if self.high is not None and value > self.high:
                    raise _Bad(f"{key} must be at most {self.high}, not {value}")
                return value
            case Kind.BOOL:
                if not isinstance(value, bool):
                    raise _Bad(f"{key} must be true or false")
                return value
            case Kind.TEXTS:
                return self._texts(value)
            case Kind.DATE:
                if not isinstance(value, str):
                    raise _Bad(f"{key} must be a date, YYYY-MM-DD")
                try:
                    return dt.date.fromisoformat(value)
                except ValueError:
                    raise _Bad(f"{key} {shown(value)} is not a date (YYYY-MM-DD)") from None
        raise AssertionError(f"unhandled kind {self.kind}")  # pragma: no cover

    def _texts(self, value: object) -> list[str]:
        key = self.name
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise _Bad(f"{key} must be a list of non-empty texts")
        most = self.max_items
        if len(value) < self.min_items or (most is not None and len(value) > most):
            most_text = "" if most is None else f" to {most}"
            raise _Bad(f"{key} must list {self.min_items}{most_text} texts")
        if self.max_len is not None and any(len(v) > self.max_len for v in value):
            raise _Bad(f"{key} holds a text longer than {self.max_len} characters")
        return list(value)


class Args(Mapping[str, object]):
    """Checked arguments: every declared key, each of its declared kind or None.

    The typed getters are for handlers; a value of another type than the handler
    expects means the handler and the schema disagree (a bug), hence ``TypeError``.
    """

    def __init__(self, values: Mapping[str, object]) -> None:
        self._values = dict(values)

    def __getitem__(self, key: str) -> object:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Args({self._values!r})"

    def maybe(self, key: str, kind: type[_T]) -> _T | None:
        value = self._values[key]
        if value is None or isinstance(value, kind):
            return value
        raise TypeError(f"argument {key} is {type(value).__name__}, not {kind.__name__}")

    def text(self, key: str) -> str:
        value = self.maybe(key, str)
        if value is None:
            raise TypeError(f"argument {key} is missing; declare it required")
        return value

    def maybe_text(self, key: str) -> str | None:
        return self.maybe(key, str)

    def flag(self, key: str) -> bool:
        return bool(self.maybe(key, bool))

    def texts(self, key: str) -> list[str]:
        return [str(v) for v in self.maybe(key, list) or []]


def check_args(
    params: Iterable[Param],
    raw: Mapping[str, object],
    *,
    op: str,
    error: type[MeshdeskError],
) -> Args:
    """Check ``raw`` against ``params``; the one place argument errors come from.

    Raises:
        MeshdeskError: of class ``error``: an unknown key, a missing required one,
            or a value of the wrong kind — one line naming the key.
    """
    declared = {p.name: p for p in params}
    unknown = sorted(set(raw) - set(declared))
    if unknown:
        takes = ", ".join(declared) if declared else "no arguments"
        raise error(f"unknown argument {shown(unknown[0])} for {op} (it takes: {takes})")
    try:
        return Args({name: p.check(raw.get(name)) for name, p in declared.items()})
    except _Bad as exc:
        raise error(str(exc)) from None


# -- building parameters -----------------------------------------------------------


def text(
    name: str,
    help: str = "",
    *,
    required: bool = False,
    default: str | None = None,
    max_len: int | None = None,
    positional: bool = False,
    metavar: str | None = None,
) -> Param:
    """A text; missing when absent, null or empty."""
    return Param(
        name,
        Kind.TEXT,
        help,
        required=required or positional,
        default=default,
        max_len=max_len,
        positional=positional,
        metavar=metavar,
    )


def choice(
    name: str,
    values: Iterable[str] | type[enum.Enum],
    help: str = "",
    *,
    required: bool = False,
    positional: bool = False,
) -> Param:
    """One of ``values`` (the members' values when given an enum)."""
    options = tuple(str(m.value) for m in values) if isinstance(values, type) else tuple(values)
    return Param(
        name,
        Kind.CHOICE,
        help,
        required=required or positional,
        choices=options,
        positional=positional,
    )


def integer(
    name: str,
    help: str = "",
    *,
    low: int | None = None,
    high: int | None = None,
    required: bool = False,
    default: int | None = None,
) -> Param:
    """A whole number (never a boolean), within ``low``..``high`` when given."""
    return Param(name, Kind.INT, help, required=required, default=default, low=low, high=high)


def flag(name: str, help: str = "", *, default: bool | None = False) -> Param:
    """true or false; absent or null gives ``default`` (None keeps "unchanged")."""
    return Param(name, Kind.BOOL, help, default=default)


def texts(
    name: str,
    help: str = "",
    *,
    min_items: int = 0,
    max_items: int | None = None,
    max_len: int | None = None,
    default: tuple[str, ...] | None = (),
    metavar: str | None = None,
) -> Param:
    """A list of non-empty texts; absent or null gives ``default`` (a fresh list)."""
    return Param(
        name,
        Kind.TEXTS,
        help,
        default=default,
        min_items=min_items,
        max_items=max_items,
        max_len=max_len,
        metavar=metavar,
    )


def date(name: str, help: str = "", *, required: bool = False) -> Param:
    """A calendar date as ``YYYY-MM-DD`` text; handlers get a :class:`datetime.date`."""
    return Param(name, Kind.DATE, help, required=required)
