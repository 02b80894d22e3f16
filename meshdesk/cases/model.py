"""The vocabulary of a consultation case (相談記録) and the citizen's sealed block.

The enums are the open, replicated metadata every node may read; their values are
the wire form (stable English identifiers), their labels what staff see in Japanese
or English. The citizen's details travel only sealed, so :class:`Personal` is the
plaintext that the sealing module encrypts; it is validated here so a bad entry is
refused at the desk, before it is sealed and replicated for good.

The shape of a folded case (:class:`~meshdesk.cases.state.CaseState` and its parts)
is in :mod:`meshdesk.cases.state`: it names event kinds and refs, which are built on
this vocabulary.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import msgpack

from meshdesk.errors import SyncError, UsageError

__all__ = [
    "CASE_FIELD_LABELS",
    "CATEGORY_LABELS",
    "LABELS",
    "PERSONAL_REGISTER",
    "REFERRAL_STATE_LABELS",
    "STATUS_LABELS",
    "STATUS_TRANSITIONS",
    "URGENCY_LABELS",
    "CaseField",
    "Category",
    "Lang",
    "Personal",
    "ReferralState",
    "Status",
    "Urgency",
    "Value",
    "check_text",
    "check_transition",
    "referral_register",
]

Lang = Literal["ja", "en"]
#: What a register holds: an enum value or a department (str), a sealed block
#: (bytes), or "no department" (None).
Value = str | bytes | None


class _Labelled(enum.StrEnum):
    """A StrEnum whose members have a Japanese and an English label."""

    def label(self, lang: Lang = "ja") -> str:
        """The member's label in ``lang`` ("ja" or "en")."""
        ja, en = LABELS[type(self)][self]
        return ja if lang == "ja" else en


class Category(_Labelled):
    """What the consultation is about (相談分類)."""

    MEDICAL = "medical"
    WELFARE_ELDERCARE = "welfare_eldercare"
    CHILD_REARING = "child_rearing"
    HOUSING = "housing"
    SUPPLIES = "supplies"
    SAFETY_MISSING = "safety_missing"
    PROCEDURES_TAX = "procedures_tax"
    MENTAL_HEALTH = "mental_health"
    OTHER = "other"


class Urgency(_Labelled):
    """How soon someone must act (緊急度); :attr:`rank` sorts the queue."""

    IMMEDIATE = "immediate"
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"

    @property
    def rank(self) -> int:
        """0 for the most urgent; sort ascending to put urgent cases first."""
        return list(Urgency).index(self)


class Status(_Labelled):
    """Where the case stands (状況); see :data:`STATUS_TRANSITIONS`."""

    NEW = "new"
    IN_PROGRESS = "in_progress"
    REFERRED = "referred"
    RESOLVED = "resolved"
    CLOSED = "closed"


class ReferralState(_Labelled):
    """Progress of one referral to a department (紹介)."""

    REQUESTED = "requested"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    DONE = "done"


class CaseField(_Labelled):
    """The scalar metadata an operator can set with a FIELD_SET event."""

    CATEGORY = "category"
    URGENCY = "urgency"
    STATUS = "status"
    DEPARTMENT = "department"


CATEGORY_LABELS: Mapping[Category, tuple[str, str]] = {
    Category.MEDICAL: ("医療", "Medical"),
    Category.WELFARE_ELDERCARE: ("福祉・介護", "Welfare and elder care"),
    Category.CHILD_REARING: ("子育て", "Child-rearing"),
    Category.HOUSING: ("住まい", "Housing"),
    Category.SUPPLIES: ("物資", "Supplies"),
    Category.SAFETY_MISSING: ("安否確認・行方不明", "Safety check and missing persons"),
    Category.PROCEDURES_TAX: ("手続き・税", "Procedures and tax"),
    Category.MENTAL_HEALTH: ("こころの健康", "Mental health"),
    Category.OTHER: ("その他", "Other"),
}
URGENCY_LABELS: Mapping[Urgency, tuple[str, str]] = {
    Urgency.IMMEDIATE: ("緊急", "Immediate"),
    Urgency.HIGH: ("高", "High"),
    Urgency.NORMAL: ("通常", "Normal"),
    Urgency.LOW: ("低", "Low"),
}
STATUS_LABELS: Mapping[Status, tuple[str, str]] = {
    Status.NEW: ("新規", "New"),
    Status.IN_PROGRESS: ("対応中", "In progress"),
    Status.REFERRED: ("紹介済み", "Referred"),
    Status.RESOLVED: ("解決", "Resolved"),
    Status.CLOSED: ("終了", "Closed"),
}
REFERRAL_STATE_LABELS: Mapping[ReferralState, tuple[str, str]] = {
    ReferralState.REQUESTED: ("依頼中", "Requested"),
    ReferralState.ACCEPTED: ("受付済み", "Accepted"),
    ReferralState.DECLINED: ("辞退", "Declined"),
    ReferralState.DONE: ("対応完了", "Done"),
}
CASE_FIELD_LABELS: Mapping[CaseField, tuple[str, str]] = {
    CaseField.CATEGORY: ("相談分類", "Category"),
    CaseField.URGENCY: ("緊急度", "Urgency"),
    CaseField.STATUS: ("状況", "Status"),
    CaseField.DEPARTMENT: ("担当課", "Department"),
}
#: Every labelled enum and its labels, value -> (ja, en).
LABELS: Mapping[type[enum.StrEnum], Mapping[Any, tuple[str, str]]] = {
    Category: CATEGORY_LABELS,
    Urgency: URGENCY_LABELS,
    Status: STATUS_LABELS,
    ReferralState: REFERRAL_STATE_LABELS,
    CaseField: CASE_FIELD_LABELS,
}

#: Status changes an operator may make; "reopen" is resolved/closed -> in_progress.
STATUS_TRANSITIONS: Mapping[Status, frozenset[Status]] = {
    Status.NEW: frozenset({Status.IN_PROGRESS, Status.REFERRED, Status.RESOLVED, Status.CLOSED}),
    Status.IN_PROGRESS: frozenset({Status.REFERRED, Status.RESOLVED, Status.CLOSED}),
    Status.REFERRED: frozenset({Status.IN_PROGRESS, Status.RESOLVED, Status.CLOSED}),
    Status.RESOLVED: frozenset({Status.CLOSED, Status.IN_PROGRESS}),
    Status.CLOSED: frozenset({Status.IN_PROGRESS}),
}


def check_transition(current: Status, new: Status) -> None:
    """Refuse a status change an operator may not make, naming the allowed ones.

    Only writes are checked: the fold takes concurrent writes as they are, since
    each was valid on the node that made it.

    Raises:
        UsageError: ``new`` is not reachable from ``current``.
    """
    allowed = STATUS_TRANSITIONS[current]
    if new == current:
        raise UsageError(f"status is already {current}")
    if new not in allowed:
        names = ", ".join(sorted(allowed))
        raise UsageError(f"cannot go from {current} to {new}; allowed: {names}")


#: Register name of the sealed personal block (beside the :class:`CaseField` names).
PERSONAL_REGISTER = "personal"


def referral_register(referral_id: str) -> str:
    """Register name of one referral's state, as conflicts and heads name it."""
    return f"referral:{referral_id}"


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_CONTROL_MULTILINE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")


def check_text(what: str, value: object, max_len: int, *, multiline: bool = False) -> str:
    """Validate operator text: a non-empty str, at most ``max_len`` characters.

    Japanese (full-width) text is fine; control characters are not, except newline
    and tab in ``multiline`` fields, since they break tables and terminals.

    Raises:
        UsageError: not a str, empty, too long, control characters, or not UTF-8.
    """
    if not isinstance(value, str):
        raise UsageError(f"{what} must be text, not {type(value).__name__}")
    if not value.strip():
        raise UsageError(f"{what} must not be empty")
    if len(value) > max_len:
        raise UsageError(f"{what} is longer than {max_len} characters")
    if (_CONTROL_MULTILINE if multiline else _CONTROL).search(value):
        raise UsageError(f"{what} contains control characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise UsageError(f"{what} is not valid Unicode text") from exc
    return value


def _check_int(what: str, value: object, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise UsageError(f"{what} must be a whole number from {lo} to {hi}, got {value!r}")
    return value


_TEXT_LIMITS: Mapping[str, int] = {
    "name": 100,
    "furigana": 100,
    "phone": 32,
    "address": 200,
    "shelter": 100,
    "language": 32,
    "needs": 2000,
}
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_PERSONAL_UNPACK: dict[str, Any] = {
    "max_str_len": 8 * 2000 + 64,  # needs: 2000 characters of up to 4 UTF-8 bytes
    "max_bin_len": 0,
    "max_array_len": 0,
    "max_map_len": 16,
    "max_ext_len": 0,
}


@dataclass(frozen=True, slots=True)
class Personal:
    """The citizen's details: the plaintext of a case's sealed block.

    Only ``name`` is required: in a disaster a first consultation often has no
    more. ``age`` or ``birth_date`` (or both) may be given.

    Raises:
        UsageError: a field has the wrong type, is empty or too long.
    """

    name: str
    furigana: str | None = None
    age: int | None = None
    birth_date: dt.date | None = None
    phone: str | None = None
    address: str | None = None
    shelter: str | None = None
    household_size: int | None = None
    language: str | None = None
    needs: str | None = None

    def __post_init__(self) -> None:
        for key, limit in _TEXT_LIMITS.items():
            value = getattr(self, key)
            if value is not None or key == "name":
                check_text(key, value, limit, multiline=key in ("address", "needs"))
        if self.age is not None:
            _check_int("age", self.age, 0, 150)
        if self.household_size is not None:
            _check_int("household_size", self.household_size, 1, 99)
        if self.birth_date is not None and (
            type(self.birth_date) is not dt.date or self.birth_date.year < 1850
        ):
            raise UsageError(f"birth_date must be a date after 1850, got {self.birth_date!r}")

    def to_msgpack(self) -> bytes:
        """Canonical msgpack map of every field (None included), to be sealed."""
        data = asdict(self)
        if self.birth_date is not None:
            data["birth_date"] = self.birth_date.isoformat()
        return msgpack.packb(data, use_bin_type=True)

    @classmethod
    def from_msgpack(cls, data: bytes) -> Personal:
        """Decode an unsealed block written by :meth:`to_msgpack` on any node.

        Raises:
            SyncError: not a map of exactly the known fields with valid values.
        """
        try:
            obj = msgpack.unpackb(data, raw=False, strict_map_key=True, **_PERSONAL_UNPACK)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise SyncError(f"personal block is not valid msgpack: {exc}") from exc
        names = {f.name for f in fields(cls)}
        if not isinstance(obj, dict) or set(obj) != names:
            got = sorted(map(str, obj)) if isinstance(obj, dict) else type(obj).__name__
            raise SyncError(f"personal block must be a map of {sorted(names)}, got {got}")
        birth = obj["birth_date"]
        try:
            if birth is not None:
                if not isinstance(birth, str) or not _DATE.fullmatch(birth):
                    raise UsageError(f"birth_date must be YYYY-MM-DD, got {birth!r}")
                try:
                    obj["birth_date"] = dt.date.fromisoformat(birth)
                except ValueError as exc:
                    raise UsageError(f"birth_date is not a date: {birth!r}") from exc
            return cls(**obj)
        except UsageError as exc:
            raise SyncError(f"personal block: {exc}") from exc
