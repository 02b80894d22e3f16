"""Case events: the kinds, their payloads, and the strict codec of the ``body``.

A ``StoredEvent``'s ``body`` is a msgpack map whose keys are exactly the payload's
field names (see ``docs/design/records.md``). Bodies are written once and replicated
for ever, hash-chained and signed, so they are validated twice: when a payload is
built here (operator input, :class:`~meshdesk.errors.UsageError`) and when a body
from a peer is decoded (:class:`~meshdesk.errors.SyncError`, naming the problem).
Unknown keys are refused too: a body has exactly one meaning, and a new field needs
a new kind rather than being silently dropped by older nodes.

Sealed material (citizen details, notes, key grants) is opaque bytes here; the
sealing module produces and opens it. It is never inside a body written today: a body
names each sealed blob by its SHA-256 (a 32-byte *reference*, :func:`sealed_ref`) and
the blobs travel and rest beside the chain (``StoredEvent.payloads``, the store's
``payloads`` table), so an erasure can drop them while every chain still verifies
(docs/ARCHITECTURE.md, "Erasure"). Bodies written before that carry the blob inline
(any length but 32: a sealed block is always longer); on erasure the store replaces
such a body by a *redaction* (:data:`REDACTED`, then the event's hash).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar, NamedTuple, TypeAlias, get_args

import msgpack

from meshdesk.cases.chain import REDACTABLE_KINDS, author_node
from meshdesk.cases.hlc import HLC_MAX
from meshdesk.cases.ids import is_valid_id
from meshdesk.cases.model import CaseField, Category, ReferralState, Status, Urgency, check_text
from meshdesk.errors import SyncError, UsageError
from meshdesk.identity.nodeid import NodeId

__all__ = [
    "BODY_MAX",
    "GUEST_ID",
    "LIST_MAX",
    "OP_MAX",
    "PAYLOAD_TYPES",
    "REDACTED",
    "REF_SIZE",
    "SEALED_KINDS",
    "SEALED_MAX",
    "SEEN_MAX",
    "CallLogged",
    "CaseErased",
    "CaseOpened",
    "ConsentAdded",
    "ConsentWithdrawn",
    "ErasureReceipt",
    "EventKind",
    "EventRef",
    "Exported",
    "FieldSet",
    "KeyGranted",
    "NoteAdded",
    "OpeningFields",
    "Payload",
    "PersonalSet",
    "ReferralAdded",
    "ReferralStateSet",
    "decode_body",
    "is_redacted",
    "is_ref",
    "opening_fields",
    "sealed_ref",
]


class EventKind(enum.IntEnum):
    """``StoredEvent.kind`` of case events. Values are on the wire: never reuse one."""

    CASE_OPENED = 1
    FIELD_SET = 2
    NOTE_ADDED = 3
    REFERRAL_ADDED = 4
    REFERRAL_STATE = 5
    CONSENT_ADDED = 6
    CALL_LOGGED = 7
    PERSONAL_SET = 8
    KEY_GRANT = 9
    # 30-39: stewardship (issue 15): erasure, receipts, exports, consent withdrawal.
    CASE_ERASED = 30
    ERASURE_RECEIPT = 31
    EXPORTED = 32
    CONSENT_WITHDRAWN = 33


class EventRef(NamedTuple):
    """Names one event: its author's node id and its seq in the author's chain."""

    author: str
    seq: int


#: Characters of an operator name, a site or a department.
OP_MAX = 64
_LABEL_MAX = 64
_REASON_MAX = 1000
#: Bytes of one sealed blob (personal block, note, key grants).
SEALED_MAX = 64 * 1024
#: Heads one write may list as seen (one per concurrent writer).
SEEN_MAX = 256
#: Departments in a consent list, node ids in a call.
LIST_MAX = 64
#: Bytes of a whole body: the largest payload is one sealed blob plus small fields.
BODY_MAX = SEALED_MAX + 8 * 1024
_SEQ_MAX = (1 << 63) - 1
#: Bytes of a reference to a detached sealed blob (its SHA-256).
REF_SIZE = 32
#: First byte of a redacted body (msgpack never uses 0xC1, so no body starts with
#: it); the event's 32-byte hash follows, which the chain then takes as given.
REDACTED = b"\xc1"
_DURATION_MAX = 7 * 24 * 3600
_UNPACK_LIMITS: dict[str, Any] = {
    "max_str_len": 4 * _REASON_MAX,
    "max_bin_len": SEALED_MAX,
    "max_array_len": SEEN_MAX,
    "max_map_len": 16,
    "max_ext_len": 0,
}
#: ``msgpack.unpackb`` under those limits (bound once: a catch-up unpacks every body).
_unpack: Callable[[bytes], Any] = functools.partial(
    msgpack.unpackb, raw=False, strict_map_key=True, **_UNPACK_LIMITS
)


def _label(what: str, value: object) -> str:
    """A site or department name: one line, no surrounding blanks (it is a key)."""
    text = check_text(what, value, _LABEL_MAX)
    if text != text.strip():
        raise UsageError(f"{what} must not start or end with blanks: {text!r}")
    return text


def _blob(what: str, value: object) -> bytes:
    if not isinstance(value, bytes) or not 1 <= len(value) <= SEALED_MAX:
        raise UsageError(f"{what} must be 1 to {SEALED_MAX} bytes")
    return value


def _item_id(what: str, value: object) -> str:
    if not is_valid_id(value):
        raise UsageError(f"{what} is not a canonical UUIDv7: {value!r}")
    return str(value)


def _hlc(what: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= HLC_MAX:
        raise UsageError(f"{what} is not an HLC value: {value!r}")
    return value


#: A citizen who joined a call from a phone's browser (meshdesk.web): no node, so
#: the call log names the invitation instead (``citizen:`` and 8 hex digits).
GUEST_ID = re.compile(r"citizen:[0-9a-f]{8}")


def _node_ids(what: str, values: tuple[str, ...], lo: int, *, guests: bool = False) -> None:
    if not lo <= len(values) <= LIST_MAX:
        raise UsageError(f"{what} must list {lo} to {LIST_MAX} node ids")
    for value in values:
        if not isinstance(value, str):
            raise UsageError(f"{what} must hold node ids, not {type(value).__name__}")
        if guests and GUEST_ID.fullmatch(value):
            continue
        try:
            NodeId(value)
        except ValueError as exc:
            raise UsageError(f"{what}: {exc}") from exc
    if len(set(values)) != len(values):
        raise UsageError(f"{what} lists a node twice")


def _coerce(obj: object, name: str, enum_type: type[enum.StrEnum]) -> None:
    """Store field ``name`` of a frozen payload as a member of ``enum_type``."""
    value = getattr(obj, name)
    if type(value) is enum_type:
        return  # already a member (decoding converts first)
    try:
        member = enum_type(value)
    except ValueError:
        allowed = ", ".join(enum_type)
        raise UsageError(f"{name} cannot be {value!r}; allowed: {allowed}") from None
    object.__setattr__(obj, name, member)


def _refs(obj: object) -> None:
    """Store ``obj.seen`` as a tuple of :class:`EventRef` and validate it."""
    try:
        refs = tuple(EventRef(*item) for item in obj.seen)  # type: ignore[attr-defined]
    except TypeError as exc:
        raise UsageError(f"seen must hold (author, seq) pairs: {exc}") from exc
    object.__setattr__(obj, "seen", refs)
    if len(refs) > SEEN_MAX:
        raise UsageError(f"seen lists more than {SEEN_MAX} events")
    for author in {ref.author for ref in refs}:
        if not isinstance(author, str):
            raise UsageError(f"seen must hold chain authors, not {type(author).__name__}")
        try:
            author_node(author)
        except ValueError as exc:
            raise UsageError(f"seen: {exc}") from exc
    for _, seq in refs:
        if isinstance(seq, bool) or not isinstance(seq, int) or not 1 <= seq <= _SEQ_MAX:
            raise UsageError(f"seen holds a bad seq: {seq!r:.30}")
    if len(set(refs)) != len(refs):
        raise UsageError("seen lists an event twice")


def _wire(value: object) -> object:
    if isinstance(value, tuple):
        return [_wire(item) for item in value]
    if isinstance(value, enum.Enum):
        return value.value
    return value


def is_ref(value: bytes) -> bool:
    """Whether a sealed field holds a reference (today's bodies), not the blob itself."""
    return len(value) == REF_SIZE


def sealed_ref(blob: bytes) -> bytes:
    """The reference a body keeps for a sealed blob: its SHA-256 (a reference stays)."""
    return blob if is_ref(blob) else hashlib.sha256(blob).digest()


def is_redacted(body: bytes) -> bool:
    """Whether ``body`` is the redaction of an old body that held a sealed blob inline."""
    return len(body) == 1 + REF_SIZE and body[:1] == REDACTED


class _Payload:
    """Shared behaviour of the payload dataclasses below."""

    __slots__ = ()
    KIND: ClassVar[EventKind]
    #: Fields holding a sealed blob: the body keeps only their references.
    SEALED: ClassVar[tuple[str, ...]] = ()

    def encode(self) -> bytes:
        """The event ``body``: a msgpack map of every field, in declared order; each
        sealed blob is replaced by its reference (:meth:`detached` gives the blobs)."""
        data = {f.name: _wire(getattr(self, f.name)) for f in fields(self)}  # type: ignore[arg-type]
        for name in self.SEALED:
            value = data[name]
            if isinstance(value, bytes):
                data[name] = sealed_ref(value)
        return msgpack.packb(data, use_bin_type=True)

    def detached(self) -> tuple[bytes, ...]:
        """The sealed blobs this payload holds (not references): they are stored and
        sent beside the event, and dropped by an erasure."""
        out = []
        for name in self.SEALED:
            value = getattr(self, name)
            if isinstance(value, bytes) and not is_ref(value):
                out.append(value)
        return tuple(out)

    def attach(self, blobs: Mapping[bytes, bytes]) -> Any:
        """This payload with each reference replaced by its blob from ``blobs``
        (by SHA-256); a reference whose blob is gone (erased) stays a reference."""
        changes = {}
        for name in self.SEALED:
            value = getattr(self, name)
            if isinstance(value, bytes) and is_ref(value) and value in blobs:
                changes[name] = blobs[value]
        return dataclasses.replace(self, **changes) if changes else self  # type: ignore[type-var]


@dataclass(frozen=True, slots=True)
class CaseOpened(_Payload):
    """A case is created; the author is its origin node."""

    KIND: ClassVar[EventKind] = EventKind.CASE_OPENED
    SEALED: ClassVar[tuple[str, ...]] = ("sealed",)
    op: str
    site: str
    category: Category
    urgency: Urgency
    consent: tuple[str, ...] = ()
    department: str | None = None
    sealed: bytes | None = None

    def __post_init__(self) -> None:
        check_text("op", self.op, OP_MAX)
        _label("site", self.site)
        _coerce(self, "category", Category)
        _coerce(self, "urgency", Urgency)
        object.__setattr__(self, "consent", tuple(self.consent))
        if len(self.consent) > LIST_MAX or len(set(self.consent)) != len(self.consent):
            raise UsageError(f"consent must list up to {LIST_MAX} distinct departments")
        for department in self.consent:
            _label("consent department", department)
        if self.department is not None:
            _label("department", self.department)
        if self.sealed is not None:
            _blob("sealed", self.sealed)


@dataclass(frozen=True, slots=True)
class FieldSet(_Payload):
    """A scalar field takes ``value``, superseding the writes listed in ``seen``.

    For ``department`` the empty string means "no department assigned".
    """

    KIND: ClassVar[EventKind] = EventKind.FIELD_SET
    op: str
    field: CaseField
    value: str
    seen: tuple[EventRef, ...] = ()

    def __post_init__(self) -> None:
        check_text("op", self.op, OP_MAX)
        vocab: Mapping[CaseField, type[enum.StrEnum]] = {
            CaseField.CATEGORY: Category,
            CaseField.URGENCY: Urgency,
            CaseField.STATUS: Status,
        }
        _coerce(self, "field", CaseField)
        if not isinstance(self.value, str):
            raise UsageError(f"{self.field} value must be text, not {type(self.value).__name__}")
        object.__setattr__(self, "value", str(self.value))  # a plain str, even from an enum
        if self.field in vocab:
            allowed = list(vocab[self.field])
            if self.value not in allowed:
                raise UsageError(
                    f"{self.field} cannot be {self.value!r}; allowed: {', '.join(allowed)}"
                )
        elif self.value != "":
            _label("department", self.value)
        _refs(self)


@dataclass(frozen=True, slots=True)
class NoteAdded(_Payload):
    """A free-text note, sealed like the personal block."""

    KIND: ClassVar[EventKind] = EventKind.NOTE_ADDED
    SEALED: ClassVar[tuple[str, ...]] = ("sealed",)
    op: str
    note_id: str
    sealed: bytes

    def __post_init__(self) -> None:
        check_text("op", self.op, OP_MAX)
        _item_id("note_id", self.note_id)
        _blob("sealed", self.sealed)


@dataclass(frozen=True, slots=True)
class ReferralAdded(_Payload):
    """The case is referred to a department; the referral starts as requested."""

    KIND: ClassVar[EventKind] = EventKind.REFERRAL_ADDED
    op: str
    referral_id: str
    department: str
    reason: str

    def __post_init__(self) -> None:
        check_text("op", self.op, OP_MAX)
        _item_id("referral_id", self.referral_id)
        _label("department", self.department)
        check_text("reason", self.reason, _REASON_MAX, multiline=True)


@dataclass(frozen=True, slots=True)
class ReferralStateSet(_Payload):
    """A referral's state changes, superseding the writes listed in ``seen``."""

    KIND: ClassVar[EventKind] = EventKind.REFERRAL_STATE
    op: str
    referral_id: str
    state: ReferralState
    seen: tuple[EventRef, ...] = ()

    def __post_init__(self) -> None:
        check_text("op", self.op, OP_MAX)
        _item_id("referral_id", self.referral_id)
        _coerce(self, "state", ReferralState)
        _refs(self)


@dataclass(frozen=True, slots=True)
class ConsentAdded(_Payload):
    """The citizen agreed to share the case with one more department."""

    KIND: ClassVar[EventKind] = EventKind.CONSENT_ADDED
    op: str
    department: str

    def __post_init__(self) -> None:
        check_text("op", self.op, OP_MAX)
        _label("department", self.department)


@dataclass(frozen=True, slots=True)
class ConsentWithdrawn(_Payload):
    """The citizen no longer shares the case with ``department``: later notes and
    personal blocks are not sealed to it (what it could read stays read). Per
    department the newer of an addition and a withdrawal (fold order) wins."""

    KIND: ClassVar[EventKind] = EventKind.CONSENT_WITHDRAWN
    op: str
    department: str

    def __post_init__(self) -> None:
        check_text("op", self.op, OP_MAX)
        _label("department", self.department)


@dataclass(frozen=True, slots=True)
class CallLogged(_Payload):
    """Who took part in a call about the case and for how long (never the media)."""

    KIND: ClassVar[EventKind] = EventKind.CALL_LOGGED
    op: str
    call_id: str
    participants: tuple[str, ...]
    started_hlc: int
    ended_hlc: int | None
    duration_s: int

    def __post_init__(self) -> None:
        check_text("op", self.op, OP_MAX)
        _item_id("call_id", self.call_id)
        object.__setattr__(self, "participants", tuple(self.participants))
        _node_ids("participants", self.participants, 1, guests=True)
        _hlc("started_hlc", self.started_hlc)
        if self.ended_hlc is not None and _hlc("ended_hlc", self.ended_hlc) < self.started_hlc:
            raise UsageError("ended_hlc is before started_hlc")
        d = self.duration_s
        if isinstance(d, bool) or not isinstance(d, int) or not 0 <= d <= _DURATION_MAX:
            raise UsageError(f"duration_s must be 0 to {_DURATION_MAX}, got {d!r}")


@dataclass(frozen=True, slots=True)
class PersonalSet(_Payload):
    """A new sealed personal block replaces those listed in ``seen``."""

    KIND: ClassVar[EventKind] = EventKind.PERSONAL_SET
    SEALED: ClassVar[tuple[str, ...]] = ("sealed",)
    op: str
    sealed: bytes
    seen: tuple[EventRef, ...] = ()

    def __post_init__(self) -> None:
        check_text("op", self.op, OP_MAX)
        _blob("sealed", self.sealed)
        _refs(self)


@dataclass(frozen=True, slots=True)
class KeyGranted(_Payload):
    """The case's data key re-sealed for nodes that joined its audience."""

    KIND: ClassVar[EventKind] = EventKind.KEY_GRANT
    SEALED: ClassVar[tuple[str, ...]] = ("grants",)
    op: str
    grants: bytes

    def __post_init__(self) -> None:
        check_text("op", self.op, OP_MAX)
        _blob("grants", self.grants)


@dataclass(frozen=True, slots=True)
class CaseErased(_Payload):
    """The citizen's data is erased: every node drops the case's sealed payloads.

    Valid from an HQ node or the case's origin only (the case book checks the
    author's certificate before it applies one); the open metadata stays.
    """

    KIND: ClassVar[EventKind] = EventKind.CASE_ERASED
    op: str
    reason: str

    def __post_init__(self) -> None:
        check_text("op", self.op, OP_MAX)
        check_text("reason", self.reason, _REASON_MAX, multiline=True)
        if not self.reason.strip():
            raise UsageError("say why the data is erased: the reason must not be empty")


@dataclass(frozen=True, slots=True)
class ErasureReceipt(_Payload):
    """The author's node applied the case's erasure: ``dropped`` payloads are gone."""

    KIND: ClassVar[EventKind] = EventKind.ERASURE_RECEIPT
    op: str
    dropped: int

    def __post_init__(self) -> None:
        check_text("op", self.op, OP_MAX)
        d = self.dropped
        if isinstance(d, bool) or not isinstance(d, int) or not 0 <= d <= _SEQ_MAX:
            raise UsageError(f"dropped must be a count, got {d!r}")


@dataclass(frozen=True, slots=True)
class Exported(_Payload):
    """Cases were exported to a file: who, in which format, which personal fields,
    which filters (``scope``, JSON), how many rows. A node fact (no case id)."""

    KIND: ClassVar[EventKind] = EventKind.EXPORTED
    op: str
    format: str
    personal: tuple[str, ...]
    scope: str
    rows: int
    file: str

    def __post_init__(self) -> None:
        check_text("op", self.op, OP_MAX)
        check_text("format", self.format, 8)
        object.__setattr__(self, "personal", tuple(self.personal))
        if len(self.personal) > 32:
            raise UsageError("personal lists too many fields")
        for name in self.personal:
            check_text("personal field", name, 32)
        check_text("scope", self.scope, _REASON_MAX)
        check_text("file", self.file, 255)
        r = self.rows
        if isinstance(r, bool) or not isinstance(r, int) or not 0 <= r <= _SEQ_MAX:
            raise UsageError(f"rows must be a count, got {r!r}")


Payload: TypeAlias = (
    CaseOpened
    | FieldSet
    | NoteAdded
    | ReferralAdded
    | ReferralStateSet
    | ConsentAdded
    | CallLogged
    | PersonalSet
    | KeyGranted
    | CaseErased
    | ErasureReceipt
    | Exported
    | ConsentWithdrawn
)

PAYLOAD_TYPES: Mapping[EventKind, type[Payload]] = {cls.KIND: cls for cls in get_args(Payload)}
#: Kinds whose bodies hold sealed blobs (inline when written before references).
SEALED_KINDS = frozenset(kind for kind, cls in PAYLOAD_TYPES.items() if cls.SEALED)
assert SEALED_KINDS == REDACTABLE_KINDS, "chain.REDACTABLE_KINDS must name the sealed kinds"


# -- decoding ----------------------------------------------------------------------------


def _typed(expected: type, optional: bool = False) -> Callable[[str, object], object]:
    def convert(name: str, raw: object) -> object:
        if raw is None and optional:
            return None
        if isinstance(raw, bool) or not isinstance(raw, expected):
            raise SyncError(f"{name} must be {expected.__name__}, got {type(raw).__name__}")
        return raw

    return convert


def _str_tuple(name: str, raw: object) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        raise SyncError(f"{name} must be a list of strings")
    return tuple(raw)


def _ref_tuple(name: str, raw: object) -> tuple[EventRef, ...]:
    if not isinstance(raw, list):
        raise SyncError(f"{name} must be a list of [author, seq]")
    refs = []
    for item in raw:
        if not (
            isinstance(item, list)
            and len(item) == 2
            and isinstance(item[0], str)
            and isinstance(item[1], int)
            and not isinstance(item[1], bool)
        ):
            raise SyncError(f"{name} must be a list of [author, seq], got {item!r:.60}")
        refs.append(EventRef(item[0], item[1]))
    return tuple(refs)


def _member(enum_type: type[enum.StrEnum]) -> Callable[[str, object], object]:
    members = {str(m): m for m in enum_type}

    def convert(name: str, raw: object) -> object:
        member = members.get(raw) if isinstance(raw, str) else None
        if member is None:
            allowed = ", ".join(enum_type)
            raise SyncError(f"{name} must be one of {allowed}, got {raw!r:.60}")
        return member

    return convert


#: Field annotation (a string, thanks to ``from __future__ import annotations``) ->
#: converter from the unpacked msgpack value. Checked for every payload at import.
_CONVERTERS: Mapping[str, Callable[[str, object], object]] = {
    "str": _typed(str),
    "str | None": _typed(str, optional=True),
    "bytes": _typed(bytes),
    "bytes | None": _typed(bytes, optional=True),
    "int": _typed(int),
    "int | None": _typed(int, optional=True),
    "tuple[str, ...]": _str_tuple,
    "tuple[EventRef, ...]": _ref_tuple,
    "Category": _member(Category),
    "Urgency": _member(Urgency),
    "CaseField": _member(CaseField),
    "ReferralState": _member(ReferralState),
}
_SCHEMAS: Mapping[EventKind, tuple[tuple[str, Callable[[str, object], object]], ...]] = {
    kind: tuple((f.name, _CONVERTERS[str(f.type)]) for f in fields(cls))
    for kind, cls in PAYLOAD_TYPES.items()
}
_KINDS: Mapping[int, EventKind] = {int(k): k for k in EventKind}
_NAMES: Mapping[EventKind, frozenset[str]] = {
    kind: frozenset(name for name, _ in schema) for kind, schema in _SCHEMAS.items()
}


def decode_body(kind: int, body: bytes) -> Payload:
    """Decode and validate the body of a case event received from anyone.

    Raises:
        SyncError: unknown ``kind``; ``body`` too large, not msgpack, not a map of
            exactly the kind's fields, or a value breaks the payload's rules. The
            message names the kind and the field.
    """
    try:
        event_kind = _KINDS[kind]  # what EventKind(kind) finds, without its machinery
    except (KeyError, TypeError):
        raise SyncError(f"unknown case event kind {kind!r}") from None
    if not isinstance(body, bytes):
        raise SyncError(f"{event_kind.name} body must be bytes")
    if len(body) > BODY_MAX:
        raise SyncError(f"{event_kind.name} body is {len(body)} bytes (limit {BODY_MAX})")
    try:
        obj: Any = _unpack(body)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise SyncError(f"{event_kind.name} body is not valid msgpack: {exc}") from exc
    if not isinstance(obj, dict):
        raise SyncError(f"{event_kind.name} body must be a map, got {type(obj).__name__}")
    schema = _SCHEMAS[event_kind]
    names = _NAMES[event_kind]
    if obj.keys() != names:
        if missing := sorted(names - set(obj)):
            raise SyncError(f"{event_kind.name} body lacks {', '.join(missing)}")
        unknown = sorted(repr(key) for key in set(obj) - names)
        raise SyncError(f"{event_kind.name} body has unknown keys {', '.join(unknown):.200}")
    try:  # the schema lists the fields in declaration order: positional arguments
        values: list[Any] = [convert(name, obj[name]) for name, convert in schema]
        return PAYLOAD_TYPES[event_kind](*values)
    except (SyncError, UsageError) as exc:
        raise SyncError(f"{event_kind.name} body: {exc}") from exc


class OpeningFields(NamedTuple):
    """What a valid ``CASE_OPENED`` body holds, as plain values (see
    :func:`opening_fields`): the enums as their text, the consent as a tuple."""

    op: str
    site: str
    category: str
    urgency: str
    consent: tuple[str, ...]
    department: str | None
    sealed: bytes | None


_OPENING_NAMES = _NAMES[EventKind.CASE_OPENED]
_CATEGORIES = frozenset(str(m) for m in Category)
_URGENCIES = frozenset(str(m) for m in Urgency)


def opening_fields(body: object) -> OpeningFields | None:
    """The fields of a ``CASE_OPENED`` body read without building a payload, for the
    case index, which reads one opening per case of a catch-up; None whenever
    ``decode_body(CASE_OPENED, body)`` would refuse the body.

    Exactly as strict as :func:`decode_body` and :class:`CaseOpened` (a test holds
    the two to each other); the error message is what this leaves out, so a caller
    that needs one decodes the body again.
    """
    if type(body) is not bytes or len(body) > BODY_MAX:
        return None
    try:
        obj = _unpack(body)
    except (ValueError, TypeError, msgpack.UnpackException):
        return None
    if type(obj) is not dict or obj.keys() != _OPENING_NAMES:
        return None
    op, site, category, urgency = obj["op"], obj["site"], obj["category"], obj["urgency"]
    consent, department, sealed = obj["consent"], obj["department"], obj["sealed"]
    if (
        type(category) is not str
        or category not in _CATEGORIES
        or type(urgency) is not str
        or urgency not in _URGENCIES
        or type(consent) is not list
        or len(consent) > LIST_MAX
        or not (department is None or type(department) is str)
        or not (sealed is None or (type(sealed) is bytes and 1 <= len(sealed) <= SEALED_MAX))
    ):
        return None
    try:
        check_text("op", op, OP_MAX)
        _label("site", site)
        for item in consent:
            _label("consent department", item)
        if department is not None:
            _label("department", department)
    except UsageError:
        return None
    if len(set(consent)) != len(consent):
        return None
    return OpeningFields(op, site, category, urgency, tuple(consent), department, sealed)
