"""Case event payloads: a round trip per kind, strict decoding of hostile bodies, and
the case index's quick reading of openings held to the full decoder."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshdesk.cases.events import (
    BODY_MAX,
    OP_MAX,
    PAYLOAD_TYPES,
    REF_SIZE,
    SEALED_MAX,
    SEEN_MAX,
    CallLogged,
    CaseErased,
    CaseOpened,
    ConsentAdded,
    ConsentWithdrawn,
    ErasureReceipt,
    EventKind,
    EventRef,
    Exported,
    FieldSet,
    KeyGranted,
    NoteAdded,
    OpeningFields,
    Payload,
    PersonalSet,
    ReferralAdded,
    ReferralStateSet,
    decode_body,
    is_redacted,
    opening_fields,
    sealed_ref,
)
from meshdesk.cases.hlc import HLC_MAX, make_hlc
from meshdesk.cases.model import CaseField, Category, ReferralState, Urgency
from meshdesk.errors import SyncError, UsageError
from meshdesk.identity.nodeid import NodeId

A, B, C = (NodeId.from_public_bytes(bytes([i]) * 32).text for i in (1, 2, 3))
ID1 = "0190f1c2-7a3b-7c4d-8e5f-0123456789ab"
ID2 = "0190f1c2-7a3b-7c4d-9e5f-0123456789ac"
T0 = make_hlc(1_700_000_000_000)

EXAMPLES: dict[EventKind, list[Payload]] = {
    EventKind.CASE_OPENED: [
        CaseOpened("佐藤 花子", "横手南小学校", Category.MEDICAL, Urgency.IMMEDIATE),
        CaseOpened(
            "Sato",
            "HQ",
            Category.WELFARE_ELDERCARE,
            Urgency.LOW,
            consent=("子育て支援課", "長寿支援課"),
            department="福祉課",
            sealed=b"\x00sealed",
        ),
    ],
    EventKind.FIELD_SET: [
        FieldSet("佐藤", CaseField.URGENCY, "high", (EventRef(A, 1), EventRef(B, 7))),
        FieldSet("佐藤", CaseField.DEPARTMENT, "税務課"),
        FieldSet("佐藤", CaseField.DEPARTMENT, ""),
        FieldSet("佐藤", CaseField.STATUS, "in_progress", (EventRef(A, 1),)),
        FieldSet("佐藤", CaseField.CATEGORY, "housing"),
    ],
    EventKind.NOTE_ADDED: [NoteAdded("田中", ID1, b"n" * SEALED_MAX)],
    EventKind.REFERRAL_ADDED: [
        ReferralAdded("田中", ID1, "長寿支援課", "介護認定の申請について。\n至急。")
    ],
    EventKind.REFERRAL_STATE: [
        ReferralStateSet("田中", ID1, ReferralState.ACCEPTED, (EventRef(C, 3),)),
        ReferralStateSet("田中", ID1, ReferralState.DONE),
    ],
    EventKind.CONSENT_ADDED: [ConsentAdded("田中", "子育て支援課")],
    EventKind.CALL_LOGGED: [
        CallLogged("田中", ID2, (A, B, C), T0, T0 + 1000, 312),
        CallLogged("田中", ID2, (A,), T0, None, 0),
    ],
    EventKind.PERSONAL_SET: [PersonalSet("田中", b"\x01" * 100, (EventRef(A, 1),))],
    EventKind.KEY_GRANT: [KeyGranted("田中", b"\x07wrapped keys")],
    EventKind.CASE_ERASED: [
        CaseErased("本部 山田", "本人から利用停止の申出 (request to stop use)")
    ],
    EventKind.ERASURE_RECEIPT: [ErasureReceipt("meshdesk (automatic)", 3)],
    EventKind.CONSENT_WITHDRAWN: [ConsentWithdrawn("田中", "子育て支援課")],
    EventKind.EXPORTED: [
        Exported("本部 鈴木", "xlsx", ("name", "phone"), '{"site": "第一小学校"}', 120, "a.xlsx"),
        Exported("本部", "hxl", (), "{}", 0, "partners.csv"),
    ],
}
ALL_EXAMPLES = [p for examples in EXAMPLES.values() for p in examples]


def test_every_kind_has_a_payload_type_and_an_example() -> None:
    assert set(PAYLOAD_TYPES) == set(EventKind)
    assert set(EXAMPLES) == set(EventKind), "add an example for every new kind"
    for kind, examples in EXAMPLES.items():
        assert all(type(p) is PAYLOAD_TYPES[kind] and p.KIND is kind for p in examples)


def test_kind_numbers_are_the_contract() -> None:
    assert {k.name: k.value for k in EventKind} == {
        "CASE_OPENED": 1,
        "FIELD_SET": 2,
        "NOTE_ADDED": 3,
        "REFERRAL_ADDED": 4,
        "REFERRAL_STATE": 5,
        "CONSENT_ADDED": 6,
        "CALL_LOGGED": 7,
        "PERSONAL_SET": 8,
        "KEY_GRANT": 9,
        "CASE_ERASED": 30,
        "ERASURE_RECEIPT": 31,
        "EXPORTED": 32,
        "CONSENT_WITHDRAWN": 33,
    }


@pytest.mark.parametrize("payload", ALL_EXAMPLES, ids=lambda p: type(p).__name__)
def test_round_trip(payload: Payload) -> None:
    body = payload.encode()
    decoded = decode_body(payload.KIND, body).attach(
        {sealed_ref(blob): blob for blob in payload.detached()}
    )
    assert decoded == payload
    assert type(decoded) is type(payload)
    assert decoded.encode() == body
    raw = msgpack.unpackb(body)
    assert list(raw) == [f.name for f in dataclasses.fields(payload)]
    assert raw["op"] == payload.op


@pytest.mark.parametrize("payload", ALL_EXAMPLES, ids=lambda p: type(p).__name__)
def test_sealed_blobs_leave_the_body_as_references(payload: Payload) -> None:
    """A body names each sealed blob by SHA-256; the blob travels beside it, so an
    erasure can drop it without changing the body (or any hash)."""
    body = payload.encode()
    blobs = payload.detached()
    assert len(blobs) == len(payload.SEALED) - sum(
        getattr(payload, name) is None for name in payload.SEALED
    )
    for blob in blobs:
        assert blob not in body
        assert sealed_ref(blob) in body
    decoded = decode_body(payload.KIND, body)
    assert decoded.detached() == ()  # references only, nothing personal
    assert decoded.encode() == body  # a reference stays a reference
    for name in payload.SEALED:
        value = getattr(decoded, name)
        assert value is None or len(value) == REF_SIZE
    # A blob that is gone (erased) leaves the reference in place.
    assert decoded.attach({}) == decoded


def test_redacted_bodies_are_recognised() -> None:
    assert is_redacted(b"\xc1" + bytes(32))
    assert not is_redacted(b"\xc1" + bytes(31))
    assert not is_redacted(EXAMPLES[EventKind.NOTE_ADDED][0].encode())
    with pytest.raises(SyncError):
        decode_body(EventKind.NOTE_ADDED, b"\xc1" + bytes(32))
    with pytest.raises(UsageError, match="reason"):
        CaseErased("op", "  ")


def test_body_shape_is_plain_msgpack() -> None:
    body = EXAMPLES[EventKind.FIELD_SET][0].encode()
    assert msgpack.unpackb(body) == {
        "op": "佐藤",
        "field": "urgency",
        "value": "high",
        "seen": [[A, 1], [B, 7]],
    }


def test_constructors_coerce_plain_values() -> None:
    opened = CaseOpened("op", "site", "medical", "low", ["b", "a"])  # type: ignore[arg-type]
    assert opened.category is Category.MEDICAL
    assert opened.urgency is Urgency.LOW
    assert opened.consent == ("b", "a")
    field = FieldSet("op", "status", "closed", [(A, 1)])  # type: ignore[arg-type]
    assert field.field is CaseField.STATUS
    assert field.seen == (EventRef(A, 1),)
    assert type(field.value) is str


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: ConsentAdded("", "課"), "op must not be empty"),
        (lambda: ConsentAdded("x" * (OP_MAX + 1), "課"), "op is longer than 64"),
        (lambda: ConsentAdded("op", " 課"), "must not start or end with blanks"),
        (lambda: ConsentAdded("op", "課\t"), "control characters"),
        (lambda: CaseOpened("op", "s", "food", "low"), "category cannot be 'food'"),
        (lambda: CaseOpened("op", "s", "other", "low", ("a", "a")), "distinct departments"),
        (lambda: CaseOpened("op", "s", "other", "low", sealed=b""), "sealed must be 1 to"),
        (
            lambda: FieldSet("op", "urgency", "urgent"),
            "urgency cannot be 'urgent'; allowed: immediate, high, normal, low",
        ),
        (lambda: FieldSet("op", "owner", "x"), "field cannot be 'owner'"),
        (lambda: FieldSet("op", "status", 3), "value must be text"),
        (lambda: FieldSet("op", "department", "a", ((A, 0),)), "bad seq"),
        (lambda: FieldSet("op", "department", "a", ((A, 1), (A, 1))), "event twice"),
        (lambda: FieldSet("op", "department", "a", (("nobody", 1),)), "not a canonical node"),
        (lambda: FieldSet("op", "department", "a", ((A,),)), "seen must hold"),
        (
            lambda: FieldSet("op", "department", "a", tuple((A, i) for i in range(1, 258))),
            f"more than {SEEN_MAX}",
        ),
        (lambda: NoteAdded("op", "note-1", b"x"), "note_id is not a canonical UUIDv7"),
        (lambda: NoteAdded("op", ID1, b"x" * (SEALED_MAX + 1)), "sealed must be 1 to"),
        (lambda: ReferralAdded("op", ID1, "課", ""), "reason must not be empty"),
        (lambda: ReferralStateSet("op", ID1, "lost"), "state cannot be 'lost'"),
        (lambda: CallLogged("op", ID1, (), T0, None, 1), "participants must list 1 to"),
        (lambda: CallLogged("op", ID1, (A, A), T0, None, 1), "lists a node twice"),
        (lambda: CallLogged("op", ID1, (A,), T0, T0 - 1, 1), "ended_hlc is before"),
        (lambda: CallLogged("op", ID1, (A,), -1, None, 1), "started_hlc is not an HLC"),
        (lambda: CallLogged("op", ID1, (A,), HLC_MAX + 1, None, 1), "not an HLC"),
        (lambda: CallLogged("op", ID1, (A,), T0, None, -1), "duration_s must be"),
        (lambda: KeyGranted("op", b""), "grants must be 1 to"),
        (lambda: PersonalSet("op", "text", ()), "sealed must be 1 to"),  # type: ignore[arg-type]
    ],
)
def test_constructors_refuse_bad_operator_input(build: Any, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        build()


def _body(kind: EventKind, **changes: Any) -> bytes:
    data = msgpack.unpackb(EXAMPLES[kind][0].encode())
    data.update(changes)
    return msgpack.packb({k: v for k, v in data.items() if v is not ...}, use_bin_type=True)


@pytest.mark.parametrize(
    ("kind", "body", "message"),
    [
        (0, b"\x80", "unknown case event kind 0"),
        (10, b"\x80", "unknown case event kind 10"),
        (EventKind.KEY_GRANT, b"", "KEY_GRANT body is not valid msgpack"),
        (EventKind.KEY_GRANT, b"\x80\x80", "not valid msgpack"),  # trailing data
        (EventKind.KEY_GRANT, msgpack.packb([1]), "must be a map, got list"),
        (EventKind.KEY_GRANT, msgpack.packb({1: 2}), "not valid msgpack"),  # int key
        (EventKind.KEY_GRANT, _body(EventKind.KEY_GRANT, grants=...), "lacks grants"),
        (EventKind.KEY_GRANT, _body(EventKind.KEY_GRANT, x=1), "unknown keys 'x'"),
        (EventKind.KEY_GRANT, _body(EventKind.KEY_GRANT, op=1), "op must be str, got int"),
        (EventKind.KEY_GRANT, _body(EventKind.KEY_GRANT, grants="s"), "grants must be bytes"),
        (EventKind.CALL_LOGGED, _body(EventKind.CALL_LOGGED, duration_s=True), "must be int"),
        (EventKind.CALL_LOGGED, _body(EventKind.CALL_LOGGED, participants=[1]), "list of str"),
        (EventKind.CALL_LOGGED, _body(EventKind.CALL_LOGGED, ended_hlc=1.5), "must be int"),
        (EventKind.CASE_OPENED, _body(EventKind.CASE_OPENED, category="x"), "category must be"),
        (EventKind.FIELD_SET, _body(EventKind.FIELD_SET, seen=[[A]]), "list of \\[author, seq"),
        (EventKind.FIELD_SET, _body(EventKind.FIELD_SET, seen=[[A, "1"]]), "author, seq"),
        (EventKind.FIELD_SET, _body(EventKind.FIELD_SET, seen=[[A, 2**63]]), "bad seq: 92"),
        (EventKind.FIELD_SET, _body(EventKind.FIELD_SET, value="top"), "urgency cannot be"),
        (EventKind.FIELD_SET, _body(EventKind.FIELD_SET, op="x" * 65), "FIELD_SET body: op is"),
        (EventKind.NOTE_ADDED, b"\xc6" + (SEALED_MAX + 1).to_bytes(4), "not valid msgpack"),
        (EventKind.NOTE_ADDED, b"\x81" + b"\x00" * BODY_MAX, r"bytes \(limit"),
        (EventKind.NOTE_ADDED, b"\x91" * 2000, "not valid msgpack"),  # deep nesting
        (EventKind.NOTE_ADDED, b"\xd6\xff\x00\x00\x00\x00", "not valid msgpack"),  # ext
    ],
)
def test_decode_names_what_is_wrong(kind: int, body: bytes, message: str) -> None:
    with pytest.raises(SyncError, match=message):
        decode_body(kind, body)


def test_decode_refuses_non_bytes() -> None:
    with pytest.raises(SyncError, match="must be bytes"):
        decode_body(EventKind.KEY_GRANT, bytearray(b"\x80"))  # type: ignore[arg-type]


FUZZ = settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
kinds = st.sampled_from([*EventKind, 0, 10, -1, 2**40])
msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=40)
    | st.binary(max_size=40)
    | st.sampled_from([A, ID1, "medical", "status", "done", [A, 1]]),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)


def _valid_or_sync_error(kind: int, body: bytes) -> None:
    if kind == EventKind.CASE_OPENED:
        _opening_read_alike(body)
    try:
        payload = decode_body(kind, body)
    except SyncError:
        return
    assert kind == payload.KIND
    # A blob held inline (an old body) is written back as a reference, beside it.
    again = decode_body(kind, payload.encode())
    assert again.attach({sealed_ref(b): b for b in payload.detached()}) == payload


@FUZZ
@given(kinds, st.binary(max_size=400))
def test_arbitrary_bytes_raise_sync_error_only(kind: int, body: bytes) -> None:
    _valid_or_sync_error(kind, body)


@FUZZ
@given(st.sampled_from(ALL_EXAMPLES), st.data())
def test_mutated_fields_raise_sync_error_only(payload: Payload, data: st.DataObject) -> None:
    fields = msgpack.unpackb(payload.encode())
    for _ in range(data.draw(st.integers(1, 3))):
        action = data.draw(st.sampled_from(["replace", "drop", "add"]))
        key = data.draw(st.sampled_from(sorted(fields) or ["op"]))
        if action == "replace":
            fields[key] = data.draw(msgpack_values)
        elif action == "drop":
            fields.pop(key, None)
        else:
            fields[data.draw(st.text(max_size=8))] = data.draw(msgpack_values)
    _valid_or_sync_error(payload.KIND, msgpack.packb(fields, use_bin_type=True))


@FUZZ
@given(st.sampled_from(ALL_EXAMPLES), kinds, st.data())
def test_mutated_bytes_raise_sync_error_only(
    payload: Payload, kind: int, data: st.DataObject
) -> None:
    body = bytearray(payload.encode())
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(body)))
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip" and at < len(body):
            body[at] = data.draw(st.integers(0, 255))
        elif action == "cut":
            del body[at:]
        else:
            body[at:at] = data.draw(st.binary(min_size=1, max_size=8))
    _valid_or_sync_error(kind, bytes(body))


def _opening_read_alike(body: bytes) -> None:
    """``opening_fields`` refuses what ``decode_body`` refuses and reads the rest alike."""
    try:
        payload = decode_body(EventKind.CASE_OPENED, body)
    except SyncError:
        assert opening_fields(body) is None
        return
    assert isinstance(payload, CaseOpened)
    assert opening_fields(body) == OpeningFields(
        payload.op, payload.site, str(payload.category), str(payload.urgency),
        payload.consent, payload.department, payload.sealed,
    )  # fmt: skip


_LABELS = ["", " ", "hq", " hq", "hq ", "福祉課", "x" * 64, "x" * 65, "a\nb", "a\x85b",
           "a\u2028b", 1, None, True, b"hq", ["hq"]]  # fmt: skip
_TRICKY: dict[str, list[object]] = {
    "op": [*_LABELS, "佐藤\t花子"],
    "site": _LABELS,
    "category": ["medical", "Medical", "", "housing ", 1, None, ["medical"]],
    "urgency": ["high", "HIGH", "", None, 0, True],
    "consent": [
        [],
        ["福祉課"],
        ["a", "a"],
        [f"d{i}" for i in range(64)],
        [f"d{i}" for i in range(65)],
        [" a"],
        [""],
        [1],
        "a",
        None,
        [["a"]],
    ],
    "department": _LABELS,
    "sealed": [None, b"", b"x", bytes(REF_SIZE), b"x" * SEALED_MAX, "sealed", 0, [b"x"]],
}


@pytest.mark.parametrize(
    ("field", "value"), [(f, v) for f, values in _TRICKY.items() for v in values]
)
def test_the_index_reads_an_opening_as_the_decoder_does(field: str, value: object) -> None:
    base = msgpack.unpackb(EXAMPLES[EventKind.CASE_OPENED][1].encode())
    _opening_read_alike(msgpack.packb({**base, field: value}, use_bin_type=True))


def test_the_index_refuses_openings_of_another_shape() -> None:
    base = msgpack.unpackb(EXAMPLES[EventKind.CASE_OPENED][0].encode())
    assert opening_fields(msgpack.packb(base, use_bin_type=True)) is not None
    for body in (
        msgpack.packb({**base, "extra": 1}, use_bin_type=True),
        msgpack.packb({k: v for k, v in base.items() if k != "sealed"}, use_bin_type=True),
        msgpack.packb(list(base.values()), use_bin_type=True),
        msgpack.packb(base, use_bin_type=True) + b"\x00",
        b"\xc1" + bytes(REF_SIZE),  # a redacted body
        bytes(BODY_MAX + 1),
    ):
        _opening_read_alike(body)
        assert opening_fields(body) is None
