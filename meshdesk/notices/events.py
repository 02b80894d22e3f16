"""Announcements, messages and their receipts as events of the node's own chain.

They travel exactly like case events — hash-chained, signed per batch, stored and
forwarded hop by hop by sync, carried on a USB stick by a bundle — because they
*are* events of the same log: ``case_id`` is None and the kinds are the block
below (20–29, next to the case kinds 1–19). Sync never decodes bodies, so no part
of replication knows them; only :mod:`meshdesk.notices.board` does.

Bodies are strict msgpack maps, like case bodies: exactly the payload's fields,
limits on every size, validated when built (operator input, ``UsageError``) and when
decoded from anyone (``SyncError``).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar, TypeAlias, get_args

import msgpack

from meshdesk.cases.ids import is_valid_id
from meshdesk.cases.model import check_text
from meshdesk.errors import SyncError, UsageError
from meshdesk.identity.nodeid import NodeId

__all__ = [
    "BODY_MAX",
    "Announcement",
    "Message",
    "NoticeKind",
    "NoticePayload",
    "Receipt",
    "ReceiptState",
    "Severity",
    "decode_notice",
    "is_notice_kind",
]


class NoticeKind(enum.IntEnum):
    """``StoredEvent.kind`` of notices (block 20–29). On the wire: never reuse one."""

    ANNOUNCEMENT = 20
    RECEIPT = 21
    MESSAGE = 22


class Severity(enum.StrEnum):
    """How loud an announcement is; ``severe`` puts a banner on every console until
    its operator acknowledges it (CAP ``Minor``/``Moderate``/``Severe``)."""

    INFO = "info"
    WARNING = "warning"
    SEVERE = "severe"


class ReceiptState(enum.StrEnum):
    DELIVERED = "delivered"
    READ = "read"


_TITLE_MAX = 120
_TEXT_MAX = 4000
_LABEL_MAX = 64
_OP_MAX = 64
#: Sites, roles or departments one announcement may name.
AUDIENCE_MAX = 64
#: Bytes of a sealed message (4,000 characters sealed for up to a few hundred nodes).
SEALED_MAX = 192 * 1024
BODY_MAX = SEALED_MAX + 32 * 1024
_MS_MAX = (1 << 53) - 1
_UNPACK_LIMITS: dict[str, Any] = {
    "max_str_len": 4 * _TEXT_MAX,
    "max_bin_len": SEALED_MAX,
    "max_array_len": AUDIENCE_MAX,
    "max_map_len": 16,
    "max_ext_len": 0,
}


def _opt_text(what: str, value: object, limit: int, *, multiline: bool = False) -> None:
    if value is not None:
        check_text(what, value, limit, multiline=multiline)


def _labels(what: str, values: tuple[str, ...]) -> None:
    if len(values) > AUDIENCE_MAX or len(set(values)) != len(values):
        raise UsageError(f"{what} must list up to {AUDIENCE_MAX} distinct names")
    for value in values:
        text = check_text(what, value, _LABEL_MAX)
        if text != text.strip():
            raise UsageError(f"{what} must not start or end with blanks: {text!r}")


def _id(what: str, value: object) -> None:
    if not is_valid_id(value):
        raise UsageError(f"{what} is not a canonical UUIDv7: {value!r:.60}")


def _coerce(obj: object, name: str, enum_type: type[enum.StrEnum]) -> None:
    value = getattr(obj, name)
    try:
        object.__setattr__(obj, name, enum_type(value))
    except ValueError:
        allowed = ", ".join(enum_type)
        raise UsageError(f"{name} cannot be {value!r:.40}; allowed: {allowed}") from None


class _Payload:
    __slots__ = ()
    KIND: ClassVar[NoticeKind]

    def encode(self) -> bytes:
        data: dict[str, object] = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, enum.Enum):
                value = value.value
            data[f.name] = value
        return bytes(msgpack.packb(data, use_bin_type=True))


@dataclass(frozen=True, slots=True)
class Announcement(_Payload):
    """HQ tells sites something. Audience: every node when ``sites``, ``roles`` and
    ``departments`` are all empty, else a node matching any of them. Plain text:
    announcements are for everyone who is addressed, not personal data."""

    KIND: ClassVar[NoticeKind] = NoticeKind.ANNOUNCEMENT
    notice_id: str
    op: str
    severity: Severity
    title_ja: str | None
    title_en: str | None
    body_ja: str | None
    body_en: str | None
    sites: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    departments: tuple[str, ...] = ()
    expires_ms: int | None = None
    exercise: bool = False

    def __post_init__(self) -> None:
        _id("notice_id", self.notice_id)
        check_text("op", self.op, _OP_MAX)
        _coerce(self, "severity", Severity)
        _opt_text("title_ja", self.title_ja, _TITLE_MAX)
        _opt_text("title_en", self.title_en, _TITLE_MAX)
        _opt_text("body_ja", self.body_ja, _TEXT_MAX, multiline=True)
        _opt_text("body_en", self.body_en, _TEXT_MAX, multiline=True)
        if self.title_ja is None and self.title_en is None:
            raise UsageError("an announcement needs a title (Japanese or English)")
        for name in ("sites", "roles", "departments"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
            _labels(name, getattr(self, name))
        e = self.expires_ms
        bad = isinstance(e, bool) or not isinstance(e, int) or not 0 < e <= _MS_MAX
        if e is not None and bad:
            raise UsageError(f"expires_ms is not a time: {e!r:.40}")
        if not isinstance(self.exercise, bool):
            raise UsageError("exercise must be true or false")


@dataclass(frozen=True, slots=True)
class Message(_Payload):
    """One operator's line to a node or to a department (every node serving it),
    sealed to them and to the sender: it may name citizens."""

    KIND: ClassVar[NoticeKind] = NoticeKind.MESSAGE
    notice_id: str
    op: str
    to_node: str | None
    to_dept: str | None
    case_id: str | None
    sealed: bytes

    def __post_init__(self) -> None:
        _id("notice_id", self.notice_id)
        check_text("op", self.op, _OP_MAX)
        if (self.to_node is None) == (self.to_dept is None):
            raise UsageError("a message goes to one node or to one department")
        if self.to_node is not None:
            try:
                NodeId(self.to_node)
            except (ValueError, TypeError) as exc:
                raise UsageError(f"to_node: {exc}") from exc
        if self.to_dept is not None:
            _labels("to_dept", (self.to_dept,))
        if self.case_id is not None:
            _id("case_id", self.case_id)
        if not isinstance(self.sealed, bytes) or not 1 <= len(self.sealed) <= SEALED_MAX:
            raise UsageError(f"sealed must be 1 to {SEALED_MAX} bytes")


@dataclass(frozen=True, slots=True)
class Receipt(_Payload):
    """The writing node has the announcement or message (``delivered``, written by
    the node itself) or an operator read it (``read``, with the operator's name)."""

    KIND: ClassVar[NoticeKind] = NoticeKind.RECEIPT
    notice_id: str
    state: ReceiptState
    op: str | None = None

    def __post_init__(self) -> None:
        _id("notice_id", self.notice_id)
        _coerce(self, "state", ReceiptState)
        _opt_text("op", self.op, _OP_MAX)
        if (self.state is ReceiptState.READ) != (self.op is not None):
            raise UsageError("a read receipt names its operator; a delivery receipt does not")


NoticePayload: TypeAlias = Announcement | Message | Receipt
_TYPES: Mapping[int, type[NoticePayload]] = {int(c.KIND): c for c in get_args(NoticePayload)}


def is_notice_kind(kind: int) -> bool:
    return kind in _TYPES


def _typed(expected: type, optional: bool) -> Callable[[str, object], object]:
    def convert(name: str, raw: object) -> object:
        if raw is None and optional:
            return None
        if (expected is not bool and isinstance(raw, bool)) or not isinstance(raw, expected):
            raise SyncError(f"{name} must be {expected.__name__}, got {type(raw).__name__}")
        return raw

    return convert


def _strs(name: str, raw: object) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        raise SyncError(f"{name} must be a list of strings")
    return tuple(raw)


_CONVERTERS: Mapping[str, Callable[[str, object], object]] = {
    "str": _typed(str, False),
    "str | None": _typed(str, True),
    "bytes": _typed(bytes, False),
    "int | None": _typed(int, True),
    "bool": _typed(bool, False),
    "tuple[str, ...]": _strs,
    "Severity": _typed(str, False),
    "ReceiptState": _typed(str, False),
}
_SCHEMAS = {
    kind: tuple((f.name, _CONVERTERS[str(f.type)]) for f in fields(cls))
    for kind, cls in _TYPES.items()
}


def decode_notice(kind: int, body: bytes) -> NoticePayload:
    """Decode and validate a notice body from anyone.

    Raises:
        SyncError: not a notice kind, too large, not msgpack, not exactly the
            kind's fields, or a value that breaks the payload's rules.
    """
    cls = _TYPES.get(kind)
    if cls is None:
        raise SyncError(f"unknown notice kind {kind!r}")
    name = NoticeKind(kind).name
    if not isinstance(body, bytes) or len(body) > BODY_MAX:
        raise SyncError(f"{name} body must be bytes, at most {BODY_MAX}")
    try:
        obj: Any = msgpack.unpackb(body, raw=False, strict_map_key=True, **_UNPACK_LIMITS)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise SyncError(f"{name} body is not valid msgpack: {exc}") from exc
    schema = _SCHEMAS[kind]
    if not isinstance(obj, dict) or set(obj) != {n for n, _ in schema}:
        raise SyncError(f"{name} body must be a map of exactly its fields")
    try:
        values: dict[str, Any] = {n: convert(n, obj[n]) for n, convert in schema}
        return cls(**values)
    except (SyncError, UsageError) as exc:
        raise SyncError(f"{name} body: {exc}") from exc
