"""Signed hash chains and sealed personal blocks."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from meshdesk.cases.chain import ChainWriter, Checkpoint, UnsignedEvent, verify_run
from meshdesk.cases.sealing import Recipient, audience, grant, open_sealed, recipients_of, seal
from meshdesk.errors import AuthError, SyncError
from meshdesk.identity import CertificateAuthority, NodeInfo, Role, verify_node_cert
from meshdesk.store.records import StoredEvent

NOW = dt.datetime(2026, 11, 22, tzinfo=dt.UTC)
AUTHOR = "AUTHOR"


def unsigned(events: list[StoredEvent]) -> list[UnsignedEvent]:
    return [UnsignedEvent(e.seq, e.hlc, e.case_id, e.kind, e.body, e.prev_hash) for e in events]


def written(n: int, key: Ed25519PrivateKey, head: tuple[int, bytes] | None = None) -> ChainWriter:
    writer = ChainWriter(AUTHOR, key, head)
    for i in range(n):
        writer.append(hlc=1000 + i, case_id="c1", kind=2, body=f"本文 {i}".encode())
    return writer


def test_a_committed_batch_verifies_and_continues() -> None:
    key = Ed25519PrivateKey.generate()
    writer = written(5, key)
    first, cp1 = writer.commit()
    assert verify_run(AUTHOR, None, unsigned(first), cp1, key.public_key()) == first
    writer.append(hlc=2000, case_id=None, kind=1, body=b"x")
    second, cp2 = writer.commit()
    head = (first[-1].seq, first[-1].hash)
    assert verify_run(AUTHOR, head, unsigned(second), cp2, key.public_key()) == second
    assert cp2.seq == 6


def test_commit_without_events_is_a_bug() -> None:
    with pytest.raises(ValueError, match="nothing to commit"):
        ChainWriter(AUTHOR, Ed25519PrivateKey.generate(), None).commit()


@pytest.mark.parametrize("field", ["hlc", "body", "kind", "case_id"])
def test_tampered_event_is_refused(field: str) -> None:
    key = Ed25519PrivateKey.generate()
    events, cp = written(3, key).commit()
    run = unsigned(events)
    changed = {"hlc": 1, "body": b"forged", "kind": 9, "case_id": "other"}[field]
    run[1] = dataclasses.replace(run[1], **{field: changed})
    with pytest.raises(SyncError):
        verify_run(AUTHOR, None, run, cp, key.public_key())


def test_forged_signature_gap_and_half_batch_are_refused() -> None:
    key = Ed25519PrivateKey.generate()
    events, cp = written(4, key).commit()
    run = unsigned(events)
    with pytest.raises(SyncError, match="forged"):
        verify_run(AUTHOR, None, run, cp, Ed25519PrivateKey.generate().public_key())
    with pytest.raises(SyncError, match="forged"):
        verify_run(AUTHOR, None, run, dataclasses.replace(cp, sig=bytes(64)), key.public_key())
    with pytest.raises(SyncError, match="expected seq 1"):
        verify_run(AUTHOR, None, run[1:], cp, key.public_key())
    with pytest.raises(SyncError, match="checkpoint is for seq 4"):
        verify_run(AUTHOR, None, run[:2], cp, key.public_key())  # half a batch
    with pytest.raises(SyncError, match="does not continue"):
        verify_run(AUTHOR, (0, b"\x01" * 32), run, cp, key.public_key())
    with pytest.raises(SyncError, match="checkpoint of"):
        verify_run(AUTHOR, None, run, Checkpoint("X", cp.seq, cp.hash, cp.sig), key.public_key())
    with pytest.raises(SyncError, match="empty run"):
        verify_run(AUTHOR, None, [], cp, key.public_key())


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 5), st.integers(0, 200), st.binary(min_size=1, max_size=8))
def test_any_single_byte_change_in_a_body_is_caught(index: int, pos: int, junk: bytes) -> None:
    key = Ed25519PrivateKey.generate()
    events, cp = written(6, key).commit()
    run = unsigned(events)
    body = bytearray(run[index].body)
    body[pos % len(body)] ^= junk[0] or 1
    run[index] = dataclasses.replace(run[index], body=bytes(body))
    with pytest.raises(SyncError):
        verify_run(AUTHOR, None, run, cp, key.public_key())


# -- sealing ------------------------------------------------------------------------


def member() -> tuple[Recipient, X25519PrivateKey]:
    key = X25519PrivateKey.generate()
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return Recipient(f"N{id(key)}", raw), key


AAD = b"case:0193-...:personal"
SECRET = "山田 花子 / やまだ はなこ / 090-1234-5678".encode()


def test_only_the_audience_can_open() -> None:
    (a, ka), (b, kb), (outsider, ko) = member(), member(), member()
    blob = seal(SECRET, [a, b], aad=AAD)
    assert open_sealed(blob, a.node_id, ka, aad=AAD) == SECRET
    assert open_sealed(blob, b.node_id, kb, aad=AAD) == SECRET
    assert recipients_of(blob) == {a.node_id, b.node_id}
    assert SECRET not in blob
    with pytest.raises(AuthError, match="not in the audience"):
        open_sealed(blob, outsider.node_id, ko, aad=AAD)
    with pytest.raises(AuthError):  # someone else's key under a member's name
        open_sealed(blob, a.node_id, ko, aad=AAD)
    with pytest.raises(AuthError):  # replayed into another case
        open_sealed(blob, a.node_id, ka, aad=b"case:other:personal")


def test_grant_lets_a_member_add_newcomers_without_changing_the_data() -> None:
    (a, ka), (new, kn), (outsider, ko) = member(), member(), member()
    blob = seal(SECRET, [a], aad=AAD)
    wider = grant(blob, a.node_id, ka, [new], aad=AAD)
    assert open_sealed(wider, new.node_id, kn, aad=AAD) == SECRET
    assert msgpack.unpackb(wider)["c"] == msgpack.unpackb(blob)["c"]
    with pytest.raises(AuthError):
        grant(blob, outsider.node_id, ko, [outsider], aad=AAD)


def test_tampered_and_malformed_blocks() -> None:
    a, ka = member()
    obj = msgpack.unpackb(seal(SECRET, [a], aad=AAD))
    obj["c"] = obj["c"][:-1] + bytes([obj["c"][-1] ^ 1])
    with pytest.raises(AuthError, match="does not decrypt"):
        open_sealed(msgpack.packb(obj), a.node_id, ka, aad=AAD)
    for junk in (b"", b"\xc1", msgpack.packb({"v": 9}), msgpack.packb([1, 2])):
        with pytest.raises(SyncError, match="malformed"):
            open_sealed(junk, a.node_id, ka, aad=AAD)
    with pytest.raises(ValueError, match="at least one"):
        seal(SECRET, [], aad=AAD)


def test_audience_is_origin_hq_and_consented_departments() -> None:
    ca = CertificateAuthority.create("秋田市", now=NOW)

    def node(name: str, role: Role, depts: tuple[str, ...], sealed: bool = True) -> NodeInfo:
        key = Ed25519PrivateKey.generate()
        sealing = X25519PrivateKey.generate().public_key() if sealed else None
        cert = ca.issue(
            key.public_key(), name=name, site="s", role=role, departments=depts,
            sealing_key=sealing, now=NOW,
        )  # fmt: skip
        return verify_node_cert(cert, ca.cert, now=NOW)

    origin = node("shelter", Role.CENTER, ())
    hq = node("hq", Role.HQ, ())
    welfare = node("welfare desk", Role.DESK, ("福祉課",))
    housing = node("housing desk", Role.DESK, ("住宅課",))
    other_shelter = node("other shelter", Role.CENTER, ())
    keyless_hq = node("old hq", Role.HQ, (), sealed=False)
    chosen = audience(
        origin=str(origin.node_id),
        consent=["福祉課"],
        directory=[origin, hq, welfare, housing, other_shelter, keyless_hq],
    )
    assert {r.node_id for r in chosen} == {
        str(origin.node_id),
        str(hq.node_id),
        str(welfare.node_id),
    }


def test_payloads_ride_beside_the_chain_and_must_be_named_by_the_body() -> None:
    """A detached sealed blob is not hashed: its SHA-256 in the body binds it, so a
    run verifies with or without it, and a blob the body does not name is refused."""
    key = Ed25519PrivateKey.generate()
    blob = b"sealed personal block" * 4
    writer = ChainWriter(AUTHOR, key, None)
    body = msgpack.packb({"op": "x", "sealed": hashlib.sha256(blob).digest()})
    writer.append(hlc=1, case_id="c1", kind=3, body=body, payloads=(blob,))
    events, cp = writer.commit()
    assert events[0].payloads == (blob,)
    with_blob = [dataclasses.replace(u, payloads=(blob,)) for u in unsigned(events)]
    verified = verify_run(AUTHOR, None, with_blob, cp, key.public_key())
    assert verified[0].payloads == (blob,)
    assert verify_run(AUTHOR, None, unsigned(events), cp, key.public_key())[0].payloads == ()
    stranger = [dataclasses.replace(u, payloads=(b"another blob",)) for u in unsigned(events)]
    with pytest.raises(SyncError, match="does not name"):
        verify_run(AUTHOR, None, stranger, cp, key.public_key())


def test_a_redacted_old_body_still_verifies_and_a_forged_one_does_not() -> None:
    """An erasure replaces an old body holding a sealed blob inline by 0xC1 + its
    hash: the chain then takes that hash, vouched for by the successor and the
    signed checkpoint; a wrong hash breaks the chain."""
    key = Ed25519PrivateKey.generate()
    writer = ChainWriter(AUTHOR, key, None)
    writer.append(hlc=1, case_id="c1", kind=1, body=b"\x81\xa6sealed\xc4\x05inline")
    writer.append(hlc=2, case_id="c1", kind=2, body=b"\x80")
    events, cp = writer.commit()
    redacted = unsigned(events)
    redacted[0] = dataclasses.replace(redacted[0], body=b"\xc1" + events[0].hash)
    assert verify_run(AUTHOR, None, redacted, cp, key.public_key())[0].hash == events[0].hash
    forged = list(redacted)
    forged[0] = dataclasses.replace(forged[0], body=b"\xc1" + bytes(32))
    with pytest.raises(SyncError):
        verify_run(AUTHOR, None, forged, cp, key.public_key())
    not_sealed = unsigned(events)
    not_sealed[1] = dataclasses.replace(not_sealed[1], body=b"\xc1" + events[1].hash)
    with pytest.raises(SyncError, match="never held data"):
        verify_run(AUTHOR, None, not_sealed, cp, key.public_key())


def test_too_many_payloads_are_refused() -> None:
    key = Ed25519PrivateKey.generate()
    blobs = tuple(bytes([i]) * 40 for i in range(5))
    body = msgpack.packb([hashlib.sha256(b).digest() for b in blobs])
    writer = ChainWriter(AUTHOR, key, None)
    writer.append(hlc=1, case_id="c1", kind=3, body=body, payloads=blobs)
    events, cp = writer.commit()
    with pytest.raises(SyncError, match="too many payloads"):
        verify_run(AUTHOR, None, [dataclasses.replace(u, payloads=blobs) for u in unsigned(events)],
                   cp, key.public_key())  # fmt: skip
