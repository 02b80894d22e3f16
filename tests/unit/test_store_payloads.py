"""Sealed payloads beside the chain (schema 4): kept, read back, erased for good."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from meshdesk.cases.chain import ChainWriter
from meshdesk.errors import StoreError
from meshdesk.store import Store
from meshdesk.store._payloads import pack_payloads, unpack_payloads

CASE = "0190f1c2-7a3b-7c4d-8e5f-0123456789ab"
OTHER = "0190f1c2-7a3b-7c4d-8e5f-0123456789ac"


def blob(tag: str) -> bytes:
    return f"sealed:{tag}:".encode() * 8


def event_with(writer: ChainWriter, case_id: str, tag: str, hlc: int) -> None:
    data = blob(tag)
    body = b"\x81\xa6sealed\xc4\x20" + hashlib.sha256(data).digest()
    writer.append(hlc=hlc, case_id=case_id, kind=3, body=body, payloads=(data,))


async def test_payloads_are_kept_read_back_and_never_stored_again_once_erased(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store.db"
    writer = ChainWriter("A", Ed25519PrivateKey.generate(), None)
    async with Store.open(path, create=True) as store:
        event_with(writer, CASE, "one", 1)
        event_with(writer, OTHER, "other", 2)
        events, cp = writer.commit()
        await store.append_run(events, cp, received_at=1)
        read = await store.events_after("A", 0, 10)
        assert [e.payloads for e in read] == [(blob("one"),), (blob("other"),)]
        assert (await store.events_for_case(CASE))[0].payloads == (blob("one"),)

        assert await store.erase_case(CASE, [], erased_at=5) == 1
        assert await store.erased_cases() == {CASE: 5}
        assert (await store.events_for_case(CASE))[0].payloads == ()
        assert (await store.events_for_case(OTHER))[0].payloads == (blob("other"),)
        # A late copy of the erased case's payload (a peer that had not erased yet).
        event_with(writer, CASE, "late", 3)
        events, cp = writer.commit()
        assert await store.append_run(events, cp, received_at=6) == 1
        assert (await store.events_after("A", 2, 10))[0].payloads == ()
        assert await store.erase_case(CASE, [], erased_at=7) == 0  # nothing left
        assert await store.erased_cases() == {CASE: 5}  # the first erasure stands
    data = path.read_bytes()
    assert blob("one") not in data
    assert blob("late") not in data
    assert blob("other") in data


async def test_a_payload_missing_here_is_kept_when_its_event_comes_again(tmp_path: Path) -> None:
    """A peer that withheld a payload (or had erased the case) sent the event without
    it; the same event from another peer brings it, and it is kept then."""
    writer = ChainWriter("A", Ed25519PrivateKey.generate(), None)
    event_with(writer, CASE, "one", 1)
    events, cp = writer.commit()
    async with Store.open(tmp_path / "store.db", create=True) as store:
        bare = [dataclasses.replace(e, payloads=()) for e in events]
        assert await store.append_run(bare, cp, received_at=1) == 1
        assert (await store.events_after("A", 0, 10))[0].payloads == ()
        assert await store.append_run(events, cp, received_at=2) == 0  # nothing new
        assert (await store.events_after("A", 0, 10))[0].payloads == (blob("one"),)
        await store.erase_case(CASE, [], erased_at=3)
        await store.append_run(events, cp, received_at=4)  # erased: never again
        assert (await store.events_after("A", 0, 10))[0].payloads == ()


def test_a_damaged_payload_list_is_a_clear_store_error() -> None:
    assert unpack_payloads(None) == ()
    assert unpack_payloads(memoryview(pack_payloads([b"a", b"b"]) or b"")) == (b"a", b"b")
    for damaged in (b"\xc1", msgpack.packb(b"one blob"), msgpack.packb([b"a", "text"]),
                    msgpack.packb([b"a", 1]), msgpack.packb([b"x"] * 5)):  # fmt: skip
        with pytest.raises(StoreError, match="payload list is damaged"):
            unpack_payloads(damaged)
