"""The node's local database: signed, hash-chained events and a few node facts.

One :class:`Store` wraps one SQLite file (WAL, schema version in
``PRAGMA user_version``, forward migrations). Events are append-only, enforced by
the database itself; appends are batched, all or nothing. HQ also keeps the
registry of kits it issued and the CA's revocation list here.

::

    async with Store.open(path, create=True) as store:
        inserted = await store.append_events(events, received_at=now_ms)
"""

from __future__ import annotations

from meshdesk.store._caseindex import SORTS, CasePage, CaseQuery, Word
from meshdesk.store._payloads import unpack_payloads
from meshdesk.store._schema import MIGRATIONS, SCHEMA_VERSION, Migration, MigrationStep
from meshdesk.store._store import Store, StoreState
from meshdesk.store.records import (
    ZERO_HASH,
    CaseIndexer,
    CaseSummary,
    Checkpoint,
    IssuedNode,
    RevokedNode,
    StoreCounts,
    StoredEvent,
    digest_of,
)

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "SORTS",
    "ZERO_HASH",
    "CaseIndexer",
    "CasePage",
    "CaseQuery",
    "CaseSummary",
    "Checkpoint",
    "IssuedNode",
    "Migration",
    "MigrationStep",
    "RevokedNode",
    "Store",
    "StoreCounts",
    "StoreState",
    "StoredEvent",
    "Word",
    "digest_of",
    "unpack_payloads",
]
