"""Field schemas compiled from dataclass type hints.

A frame's type hints are its wire schema: each field compiles once into a small node
that checks a value and converts it between its Python form (tuples, nested
dataclasses) and its msgpack form (arrays). The same checks run when decoding and
when encoding, so we only send what we would accept.

Supported hints: ``int``, ``bool``, ``float``, ``str``, ``bytes``, ``X | None``,
``tuple[X, ...]`` and nested frozen dataclasses, each optionally wrapped in
``Annotated[..., MaxLen(n)]`` or ``Annotated[int, Range(lo, hi)]``.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from meshdesk._slots import slot_builder
from meshdesk.errors import WireError
from meshdesk.wire._limits import WireLimits

__all__ = ["MaxLen", "Range", "Record", "compile_record"]

_T = TypeVar("_T")

#: msgpack integers span int64 and uint64; an unbounded ``int`` field spans both.
_MSGPACK_INT_MIN = -(2**63)
_MSGPACK_INT_MAX = 2**64 - 1


@dataclass(frozen=True, slots=True)
class MaxLen:
    """Upper bound on a field: characters of a str, bytes of a bytes, items of a tuple."""

    n: int

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 0:
            raise ValueError(f"MaxLen needs a non-negative int, got {self.n!r}")


@dataclass(frozen=True, slots=True)
class Range:
    """Inclusive bounds on an int field; ``None`` means the msgpack integer limit."""

    lo: int | None = None
    hi: int | None = None

    def __post_init__(self) -> None:
        lo = _MSGPACK_INT_MIN if self.lo is None else self.lo
        hi = _MSGPACK_INT_MAX if self.hi is None else self.hi
        if not _MSGPACK_INT_MIN <= lo <= hi <= _MSGPACK_INT_MAX:
            raise ValueError(f"Range({self.lo}, {self.hi}) is empty or beyond msgpack ints")


class _Invalid(Exception):
    """A value failed its check; carries the path back up to the record's root.

    Path parts are appended innermost first while the exception unwinds, so the happy
    path never formats a field name.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path: list[str] = []

    def where(self, root: str) -> str:
        return root + "".join(reversed(self.path))


def _name(value: object) -> str:
    return "None" if value is None else type(value).__name__


def _expected(what: str, value: object) -> _Invalid:
    return _Invalid(f"expected {what}, got {_name(value)}")


class _Node:
    """One compiled field type: ``load`` checks decoded msgpack, ``dump`` checks Python."""

    __slots__ = ()

    def load(self, value: object) -> object:
        raise NotImplementedError

    def dump(self, value: object, limits: WireLimits) -> object:
        raise NotImplementedError


class _Int(_Node):
    __slots__ = ("hi", "lo")

    def __init__(self, bounds: Range) -> None:
        self.lo = _MSGPACK_INT_MIN if bounds.lo is None else bounds.lo
        self.hi = _MSGPACK_INT_MAX if bounds.hi is None else bounds.hi

    def _check(self, value: int) -> int:
        if not self.lo <= value <= self.hi:
            raise _Invalid(f"{value} is outside {self.lo}..{self.hi}")
        return value

    def load(self, value: object) -> object:
        if type(value) is not int:  # bool is an int subclass; refuse it here
            raise _expected("int", value)
        if self.lo <= value <= self.hi:
            return value
        return self._check(value)

    def dump(self, value: object, limits: WireLimits) -> object:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _expected("int", value)
        return self._check(int(value))  # IntEnum members go out as plain ints


class _Bool(_Node):
    __slots__ = ()

    def load(self, value: object) -> object:
        if type(value) is not bool:
            raise _expected("bool", value)
        return value

    def dump(self, value: object, limits: WireLimits) -> object:
        return self.load(value)


class _Float(_Node):
    __slots__ = ()

    def load(self, value: object) -> object:
        if type(value) is not float:
            raise _expected("float", value)
        if not math.isfinite(value):  # NaN breaks equality and dedup; inf has no use
            raise _Invalid(f"non-finite float {value}")
        return value

    def dump(self, value: object, limits: WireLimits) -> object:
        if not isinstance(value, float):
            raise _expected("float", value)
        return self.load(float(value))


class _Str(_Node):
    __slots__ = ("max_chars",)

    def __init__(self, max_chars: int | None) -> None:
        self.max_chars = max_chars

    def _check(self, value: str) -> str:
        if self.max_chars is not None and len(value) > self.max_chars:
            raise _Invalid(f"{len(value)} characters exceeds the limit of {self.max_chars}")
        return value

    def load(self, value: object) -> object:
        if type(value) is not str:
            raise _expected("str", value)
        if self.max_chars is None or len(value) <= self.max_chars:
            return value
        return self._check(value)

    def dump(self, value: object, limits: WireLimits) -> object:
        if not isinstance(value, str):
            raise _expected("str", value)
        try:
            size = len(value.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise _Invalid(f"not encodable as UTF-8 ({exc.reason})") from None
        if size > limits.max_str:
            raise _Invalid(f"string of {size} bytes exceeds the {limits.max_str}-byte limit")
        return self._check(str(value))


class _Bytes(_Node):
    __slots__ = ("max_len",)

    def __init__(self, max_len: int | None) -> None:
        self.max_len = max_len

    def _check(self, value: bytes, cap: int | None) -> bytes:
        for limit in (self.max_len, cap):
            if limit is not None and len(value) > limit:
                raise _Invalid(f"{len(value)} bytes exceeds the limit of {limit}")
        return value

    def load(self, value: object) -> object:
        if type(value) is not bytes:
            raise _expected("bytes", value)
        if self.max_len is None or len(value) <= self.max_len:
            return value
        return self._check(value, None)

    def dump(self, value: object, limits: WireLimits) -> object:
        if not isinstance(value, bytes):
            raise _expected("bytes", value)
        return self._check(bytes(value), limits.max_bin)


class _Optional(_Node):
    __slots__ = ("inner",)

    def __init__(self, inner: _Node) -> None:
        self.inner = inner

    def load(self, value: object) -> object:
        return None if value is None else self.inner.load(value)

    def dump(self, value: object, limits: WireLimits) -> object:
        return None if value is None else self.inner.dump(value, limits)


class _Tuple(_Node):
    __slots__ = ("item", "max_items")

    def __init__(self, item: _Node, max_items: int | None) -> None:
        self.item = item
        self.max_items = max_items

    def _check_len(self, n: int, cap: int | None) -> None:
        for limit in (self.max_items, cap):
            if limit is not None and n > limit:
                raise _Invalid(f"{n} items exceeds the limit of {limit}")

    def load(self, value: object) -> object:
        if type(value) is not list:
            raise _expected("array", value)
        self._check_len(len(value), None)
        load = self.item.load
        try:
            return tuple([load(item) for item in value])  # the happy path: no bookkeeping
        except _Invalid:
            pass
        for i, item in enumerate(value):  # again, to say which item
            try:
                load(item)
            except _Invalid as exc:
                exc.path.append(f"[{i}]")
                raise
        raise AssertionError("an item failed once and passed again")  # pragma: no cover

    def dump(self, value: object, limits: WireLimits) -> object:
        if not isinstance(value, tuple):
            raise _expected("tuple", value)
        self._check_len(len(value), limits.max_array)
        dump = self.item.dump
        try:
            return [dump(item, limits) for item in value]
        except _Invalid:
            pass
        for i, item in enumerate(value):
            try:
                dump(item, limits)
            except _Invalid as exc:
                exc.path.append(f"[{i}]")
                raise
        raise AssertionError("an item failed once and passed again")  # pragma: no cover


def _load_test(node: _Node, x: str) -> str | None:
    """A Python expression true when the decoded value ``x`` passes ``node`` as it is
    (None: the node has no such test; its ``load`` runs)."""
    if isinstance(node, _Int):
        return f"(type({x}) is int and {node.lo} <= {x} <= {node.hi})"
    if isinstance(node, _Str):
        cap = "" if node.max_chars is None else f" and len({x}) <= {node.max_chars}"
        return f"(type({x}) is str{cap})"
    if isinstance(node, _Bytes):
        cap = "" if node.max_len is None else f" and len({x}) <= {node.max_len}"
        return f"(type({x}) is bytes{cap})"
    if isinstance(node, _Bool):
        return f"(type({x}) is bool)"
    if isinstance(node, _Optional):
        inner = _load_test(node.inner, x)
        return None if inner is None else f"({x} is None or {inner})"
    return None


def _dump_test(node: _Node, x: str) -> str | None:
    """As :func:`_load_test`, for a Python value about to be sent under ``limits``
    (a str must be ASCII here, so its length is its UTF-8 size; else ``dump`` runs)."""
    if isinstance(node, _Int):
        return f"(type({x}) is int and {node.lo} <= {x} <= {node.hi})"
    if isinstance(node, _Str):
        cap = "" if node.max_chars is None else f" and len({x}) <= {node.max_chars}"
        return f"(type({x}) is str and {x}.isascii() and len({x}) <= limits.max_str{cap})"
    if isinstance(node, _Bytes):
        cap = "" if node.max_len is None else f" and len({x}) <= {node.max_len}"
        return f"(type({x}) is bytes and len({x}) <= limits.max_bin{cap})"
    if isinstance(node, _Bool):
        return f"(type({x}) is bool)"
    if isinstance(node, _Optional):
        inner = _dump_test(node.inner, x)
        return None if inner is None else f"({x} is None or {inner})"
    return None


def _tuple_load(node: _Tuple, v: str) -> list[str] | None:
    """Lines checking the decoded ``v`` for a tuple of items with an inline test and
    making it a tuple, or None (then the tuple's own ``load`` runs)."""
    test = _load_test(node.item, "x")
    if test is None:
        return None
    cap = "" if node.max_items is None else f" or len({v}) > {node.max_items}"
    return [f"    if type({v}) is not list{cap}:", "        return slow(value)",
            f"    for x in {v}:", f"        if not {test}:", "            return slow(value)",
            f"    {v} = tuple({v})"]  # fmt: skip


def _tuple_dump(node: _Tuple, v: str) -> list[str] | None:
    """As :func:`_tuple_load`, for a tuple about to be sent (made a list)."""
    test = _dump_test(node.item, "x")
    if test is None:
        return None
    cap = "" if node.max_items is None else f" or len({v}) > {node.max_items}"
    return [f"    if type({v}) is not tuple or len({v}) > limits.max_array{cap}:",
            "        return slow(value, limits)", f"    for x in {v}:", f"        if not {test}:",
            "            return slow(value, limits)", f"    {v} = list({v})"]  # fmt: skip


def _compile_fast(record: Record[Any]) -> tuple[Any, Any]:
    """A record's happy paths as generated functions: each field's checks inline (no
    call per field), any failure handed to the careful path, which says where.

    A class without ``__post_init__`` is built by setting its slots directly
    (:func:`meshdesk._slots.slot_builder`): a catch-up decodes thousands of events a
    second, and their frozen ``__init__`` would cost more than all their checks.
    """
    n = len(record.fields)
    names = [f"v{i}" for i in range(n)]
    ns: dict[str, Any] = {"cls": record.cls, "_Invalid": _Invalid}
    unpack = ", ".join(names) + ("," if n == 1 else "")
    load = ["def load(value, slow):", f"    if type(value) is not list or len(value) != {n}:",
            "        return slow(value)", f"    {unpack} = value"]  # fmt: skip
    dump = ["def dump(value, limits, slow):", "    if type(value) is not cls:",
            "        return slow(value, limits)"]  # fmt: skip
    for i, (attr, node) in enumerate(record.fields):
        v = names[i]
        ns[f"load{i}"], ns[f"dump{i}"] = node.load, node.dump
        test = _load_test(node, v)
        tuple_lines = _tuple_load(node, v) if isinstance(node, _Tuple) else None
        if tuple_lines is not None:
            load += tuple_lines
        elif test is None:
            load += ["    try:", f"        {v} = load{i}({v})", "    except _Invalid:",
                     "        return slow(value)"]  # fmt: skip
        else:
            load += [f"    if not {test}:", "        return slow(value)"]
        dump.append(f"    {v} = value.{attr}")
        test = _dump_test(node, v)
        tuple_lines = _tuple_dump(node, v) if isinstance(node, _Tuple) else None
        if tuple_lines is not None:
            dump += tuple_lines
        elif test is None:
            dump += ["    try:", f"        {v} = dump{i}({v}, limits)", "    except _Invalid:",
                     "        return slow(value, limits)"]  # fmt: skip
        else:
            dump += [f"    if not {test}:", "        return slow(value, limits)"]
    try:
        ns["build"] = slot_builder(record.cls)
    except TypeError:  # it checks its fields in __post_init__: its __init__ runs
        ns["build"] = record.cls
    load.append(f"    return build({', '.join(names)})")
    dump.append(f"    return [{', '.join(names)}]")
    # Generated from the record's own schema, never from input.
    exec("\n".join(load) + "\n\n" + "\n".join(dump), ns)
    return ns["load"], ns["dump"]


class Record(_Node, Generic[_T]):
    """A frozen dataclass on the wire: an array of its field values in declared order.

    ``load`` and ``dump`` first try a generated happy path (every field's checks
    inline); whatever it refuses goes through the careful path, which names the field.
    """

    __slots__ = ("_fast_dump", "_fast_load", "cls", "fields", "getters", "loads", "names")

    def __init__(self, cls: type[_T], fields: tuple[tuple[str, _Node], ...]) -> None:
        self.cls = cls
        self.fields = fields
        self.names = tuple(f".{name}" for name, _ in fields)
        self.loads = tuple(node.load for _, node in fields)
        self.getters = tuple((attr, node.dump) for attr, node in fields)
        self._fast_load, self._fast_dump = _compile_fast(self)

    def load(self, value: object) -> object:
        return self._fast_load(value, self._load)

    def _load(self, value: object) -> object:
        if type(value) is not list:
            raise _expected("array", value)
        if len(value) != len(self.fields):
            raise _Invalid(f"expected {len(self.fields)} fields, got {len(value)}")
        args = []
        for (_, node), item, name in zip(self.fields, value, self.names, strict=True):
            try:
                args.append(node.load(item))
            except _Invalid as exc:
                exc.path.append(name)
                raise
        return self.cls(*args)

    def dump(self, value: object, limits: WireLimits) -> object:
        if len(self.fields) > limits.max_array:
            raise _Invalid(f"{len(self.fields)} fields exceeds the limit of {limits.max_array}")
        return self._fast_dump(value, limits, self._dump)

    def _dump(self, value: object, limits: WireLimits) -> object:
        if type(value) is not self.cls:
            raise _expected(self.cls.__name__, value)
        out = []
        for (attr, node), name in zip(self.fields, self.names, strict=True):
            try:
                out.append(node.dump(getattr(value, attr), limits))
            except _Invalid as exc:
                exc.path.append(name)
                raise
        return out

    def decode(self, value: object) -> _T:
        """Build an instance from its decoded field array, or raise :class:`WireError`."""
        try:
            return typing.cast(_T, self.load(value))
        except _Invalid as exc:
            raise WireError(f"{exc.where(self.cls.__name__)}: {exc.reason}") from None

    def encode(self, value: object, limits: WireLimits) -> list[object]:
        """Turn an instance into its field array, or raise :class:`WireError`."""
        try:
            return typing.cast(list[object], self.dump(value, limits))
        except _Invalid as exc:
            raise WireError(f"{exc.where(self.cls.__name__)}: {exc.reason}") from None


_RECORDS: dict[type, Record[Any]] = {}
_COMPILING: set[type] = set()


def compile_record(cls: type[_T]) -> Record[_T]:
    """Compile (once, then cached) the schema of a frozen dataclass.

    Raises:
        TypeError: ``cls`` is not a frozen dataclass, or a field's hint is unsupported.
            These are programming errors, found when the frame class is registered.
    """
    cached = _RECORDS.get(cls)
    if cached is not None:
        return cached
    if not dataclasses.is_dataclass(cls) or not cls.__dataclass_params__.frozen:  # type: ignore[attr-defined]
        raise TypeError(f"{cls.__qualname__} must be a frozen dataclass")
    if cls in _COMPILING:
        raise TypeError(f"{cls.__qualname__} refers to itself; recursive records are unsupported")
    _COMPILING.add(cls)
    try:
        hints = typing.get_type_hints(cls, include_extras=True)
        nodes = []
        for f in dataclasses.fields(cls):
            if not f.init or f.kw_only:
                raise TypeError(f"{cls.__qualname__}.{f.name} must be a positional init field")
            nodes.append((f.name, _compile(hints[f.name], (), f"{cls.__qualname__}.{f.name}")))
    finally:
        _COMPILING.discard(cls)
    record: Record[_T] = Record(cls, tuple(nodes))
    _RECORDS[cls] = record
    return record


def _compile(hint: object, meta: tuple[object, ...], where: str) -> _Node:
    origin = typing.get_origin(hint)
    if origin is typing.Annotated:
        return _compile(hint.__origin__, meta + hint.__metadata__, where)  # type: ignore[attr-defined]
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        others = [a for a in args if a is not type(None)]
        if len(args) != 2 or len(others) != 1:
            raise TypeError(f"{where}: only `X | None` unions are supported, got {hint!r}")
        return _Optional(_compile(others[0], meta, where))

    max_len = min((m.n for m in meta if isinstance(m, MaxLen)), default=None)
    ranges = [m for m in meta if isinstance(m, Range)]
    if ranges and hint is not int:
        raise TypeError(f"{where}: Range applies to int fields only")
    if max_len is not None and hint not in (str, bytes) and origin is not tuple:
        raise TypeError(f"{where}: MaxLen applies to str, bytes and tuple fields only")

    if hint is bool:
        return _Bool()
    if hint is int:
        if len(ranges) > 1:
            raise TypeError(f"{where}: more than one Range")
        return _Int(ranges[0] if ranges else Range())
    if hint is float:
        return _Float()
    if hint is str:
        return _Str(max_len)
    if hint is bytes:
        return _Bytes(max_len)
    if origin is tuple:
        args = typing.get_args(hint)
        if len(args) != 2 or args[1] is not Ellipsis:
            raise TypeError(f"{where}: only `tuple[X, ...]` is supported, got {hint!r}")
        return _Tuple(_compile(args[0], (), f"{where}[]"), max_len)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return compile_record(hint)
    raise TypeError(f"{where}: unsupported field type {hint!r}")
