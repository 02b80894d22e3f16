"""What a meshdesk database looks like on disk, and how it is brought up to date.

Three steps guard a user's database, in this order, and none of them writes to a file
it refuses:

1. :func:`prepare_file` reads the 100-byte SQLite header in plain Python, before SQLite
   opens the file, so a foreign, damaged, truncated or newer database is refused
   without SQLite creating ``-wal``/``-shm`` files next to it.
2. :func:`check_database` asks SQLite itself (which replays a hot WAL) for the schema
   version and, optionally, runs ``PRAGMA quick_check`` -- all reads.
3. :func:`migrate` runs the missing forward migrations, one transaction each.

The schema version lives in ``PRAGMA user_version``; ``PRAGMA application_id`` marks
the file as meshdesk's. Databases are never moved, renamed or rebuilt.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeAlias

import aiosqlite

from meshdesk.errors import StoreError

__all__ = [
    "APPLICATION_ID",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Migration",
    "MigrationStep",
    "check_database",
    "latest_version",
    "migrate",
    "prepare_file",
]

#: ``PRAGMA application_id`` of every meshdesk database: ASCII "MshD".
APPLICATION_ID = 0x4D736844

#: A migration written in Python. It runs inside the migration's transaction and must
#: not commit, roll back or call ``executescript`` (which would commit).
MigrationStep: TypeAlias = Callable[[aiosqlite.Connection], Awaitable[None]]

#: ``(version, step)``: the SQL script or callable that turns ``version - 1`` into
#: ``version``. An SQL script must not contain BEGIN/COMMIT of its own.
Migration: TypeAlias = tuple[int, str | MigrationStep]

_SCHEMA_1 = """
CREATE TABLE events (
    author      TEXT    NOT NULL CHECK (typeof(author) = 'text' AND author <> ''),
    seq         INTEGER NOT NULL CHECK (typeof(seq) = 'integer' AND seq >= 1),
    hlc         INTEGER NOT NULL CHECK (typeof(hlc) = 'integer'),
    case_id     TEXT             CHECK (case_id IS NULL OR typeof(case_id) = 'text'),
    kind        INTEGER NOT NULL CHECK (typeof(kind) = 'integer'),
    body        BLOB    NOT NULL CHECK (typeof(body) = 'blob'),
    prev_hash   BLOB    NOT NULL CHECK (typeof(prev_hash) = 'blob' AND length(prev_hash) = 32),
    hash        BLOB    NOT NULL CHECK (typeof(hash) = 'blob' AND length(hash) = 32),
    received_at INTEGER NOT NULL CHECK (typeof(received_at) = 'integer'),
    PRIMARY KEY (author, seq)
);

CREATE INDEX events_by_case ON events (case_id) WHERE case_id IS NOT NULL;

-- Append-only, enforced by the database and not only by the Store class.
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only: UPDATE refused');
END;

CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only: DELETE refused');
END;

-- Every event must extend its author's chain: seq 1 with a zero prev_hash, or the
-- successor of the stored event whose hash is prev_hash. With the primary key this
-- makes gaps and forks impossible even for a writer that bypasses the Store class.
CREATE TRIGGER events_chain BEFORE INSERT ON events
WHEN NOT (
    (NEW.seq = 1 AND NEW.prev_hash = zeroblob(32))
    OR EXISTS (
        SELECT 1 FROM events
        WHERE author = NEW.author AND seq = NEW.seq - 1 AND hash = NEW.prev_hash
    )
)
BEGIN
    SELECT RAISE(ABORT, 'event does not extend its author''s hash chain');
END;

CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value BLOB NOT NULL
) WITHOUT ROWID;

CREATE TABLE issued_nodes (
    node_id     TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL,
    site        TEXT NOT NULL,
    role        TEXT NOT NULL,
    departments TEXT NOT NULL,  -- JSON list of strings
    serial      TEXT NOT NULL UNIQUE,
    cert_pem    TEXT NOT NULL,
    issued_at   INTEGER NOT NULL
);

CREATE INDEX issued_nodes_by_name ON issued_nodes (name);

-- At most one row: the newest CA-signed revocation list (X.509 CRL, DER).
CREATE TABLE revocation_lists (
    slot       INTEGER PRIMARY KEY CHECK (slot = 0),
    crl_number INTEGER NOT NULL CHECK (crl_number >= 0),
    der        BLOB NOT NULL
);

CREATE TABLE revoked (
    node_id    TEXT PRIMARY KEY NOT NULL,
    serial     TEXT NOT NULL,
    revoked_at INTEGER NOT NULL,
    reason     TEXT NOT NULL
);
"""

# Version 2: signed checkpoints of each author's chain (docs/design/records.md) and a
# directory of node certificates, to verify authors met only through relays and to
# know every node's sealing key.
_SCHEMA_2 = """
CREATE TABLE checkpoints (
    author TEXT    NOT NULL,
    seq    INTEGER NOT NULL CHECK (seq >= 1),
    hash   BLOB    NOT NULL CHECK (length(hash) = 32),
    sig    BLOB    NOT NULL CHECK (length(sig) = 64),
    PRIMARY KEY (author, seq),
    FOREIGN KEY (author, seq) REFERENCES events (author, seq)
);

CREATE TRIGGER checkpoints_match_chain BEFORE INSERT ON checkpoints
WHEN (SELECT hash FROM events WHERE author = NEW.author AND seq = NEW.seq) IS NOT NEW.hash
BEGIN
    SELECT RAISE(ABORT, 'checkpoint does not match the stored chain');
END;

CREATE TRIGGER checkpoints_no_update BEFORE UPDATE ON checkpoints
BEGIN
    SELECT RAISE(ABORT, 'checkpoints are append-only');
END;

CREATE TRIGGER checkpoints_no_delete BEFORE DELETE ON checkpoints
BEGIN
    SELECT RAISE(ABORT, 'checkpoints are append-only');
END;

CREATE TABLE certificates (
    node_id TEXT    PRIMARY KEY NOT NULL,
    der     BLOB    NOT NULL,
    seen_at INTEGER NOT NULL
);
"""

# Version 3: the case index (docs/ARCHITECTURE.md, "Case index"). One row per case with
# its folded open metadata, kept by the store in the transaction that stores the
# case's events; sort columns are NOT NULL so that keyset paging can compare them.
# The rowid (case_key) breaks ties and keys the search tables. Nothing personal is
# here: name search works on keyed hashes (case_terms), never on plaintext.
_SCHEMA_3 = """
CREATE TABLE case_index (
    case_key     INTEGER PRIMARY KEY,
    case_id      TEXT    NOT NULL UNIQUE,
    opened       INTEGER NOT NULL,
    created_hlc  INTEGER NOT NULL,
    updated_hlc  INTEGER NOT NULL,
    events       INTEGER NOT NULL,
    origin       TEXT    NOT NULL,
    site         TEXT    NOT NULL,
    category     TEXT    NOT NULL,
    urgency      TEXT    NOT NULL,
    urgency_rank INTEGER NOT NULL,
    status       TEXT    NOT NULL,
    status_rank  INTEGER NOT NULL,
    department   TEXT    NOT NULL,
    consent      TEXT    NOT NULL,  -- JSON list of departments
    referrals    TEXT    NOT NULL,  -- JSON list of [department, state]
    conflicts    TEXT    NOT NULL,  -- JSON list of conflicted fields
    conflicted   INTEGER NOT NULL,
    personal     BLOB,              -- digest of the displayed sealed personal block
    grants       INTEGER NOT NULL
);

CREATE INDEX case_index_urgency ON case_index (urgency_rank, created_hlc);
CREATE INDEX case_index_status ON case_index (status_rank, urgency_rank, created_hlc);
CREATE INDEX case_index_site ON case_index (site, urgency_rank, created_hlc);
CREATE INDEX case_index_department ON case_index (department, urgency_rank, created_hlc);
-- No index per category: each holds a tenth of the cases or more, so a page of one walks
-- the urgency index a few hundred rows (and every index costs each stored case a b-tree
-- insert). Departments have one: search words are matched against their names, read
-- with one index step per department.
CREATE INDEX case_index_created ON case_index (created_hlc);
CREATE INDEX case_index_conflicted ON case_index (urgency_rank, created_hlc) WHERE conflicted;
-- The last group of the id (12 hex characters, random): what staff read off a screen.
CREATE INDEX case_index_tail ON case_index (substr(case_id, 25));

-- How many cases have each urgency and status (the dashboard's grid), kept with the
-- rows so that it never needs a scan of the index.
CREATE TABLE case_counts (
    urgency_rank INTEGER NOT NULL,
    status_rank  INTEGER NOT NULL,
    n            INTEGER NOT NULL,
    PRIMARY KEY (urgency_rank, status_rank)
) WITHOUT ROWID;

-- Cases whose events were stored without the case index in step (a store opened
-- without an indexer, or this migration): the indexer folds them when it opens.
CREATE TABLE case_index_todo (case_id TEXT PRIMARY KEY NOT NULL) WITHOUT ROWID;
INSERT INTO case_index_todo SELECT DISTINCT case_id FROM events WHERE case_id IS NOT NULL;

-- Name search over the cases this node can read: keyed hashes of name fragments
-- (HMAC under a key derived from the node's own sealing key), never plaintext.
CREATE TABLE case_terms (
    term     INTEGER NOT NULL,
    case_key INTEGER NOT NULL,
    PRIMARY KEY (term, case_key)
) WITHOUT ROWID;

-- What the terms of a case were made from (the personal digest) and which they are.
CREATE TABLE case_search (
    case_key INTEGER PRIMARY KEY,
    personal BLOB,
    terms    BLOB NOT NULL
);

-- Cases whose personal block or key grants changed since their terms were made.
CREATE TABLE search_todo (case_key INTEGER PRIMARY KEY);

-- Each signed batch's sending priority (urgency rank), so a new link need not read
-- every event to rank batches; NULL for batches stored before version 3.
ALTER TABLE checkpoints ADD COLUMN rank INTEGER;
"""

# Version 4: citizen data stewardship (docs/ARCHITECTURE.md, "Erasure"). Sealed blobs
# (personal blocks, notes, key grants) live beside the chain: an event's body names
# each by its SHA-256 and the blobs sit in the row's `payloads` column (a msgpack list,
# not hashed), so an erasure can clear them while every chain still verifies. `erased`
# lists the cases this node has erased: their payloads are never kept again. Events
# written before this version hold their blob inline; for an erased case (only) the
# store may replace such a body by its redaction, 0xC1 followed by the event's own
# hash (the chain takes that hash as given). These are the only UPDATEs allowed.
_SCHEMA_4 = """
ALTER TABLE events ADD COLUMN payloads BLOB;

CREATE TABLE erased (
    case_id   TEXT PRIMARY KEY NOT NULL,
    erased_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TRIGGER erased_no_delete BEFORE DELETE ON erased
BEGIN
    SELECT RAISE(ABORT, 'an erasure is never undone');
END;

DROP TRIGGER events_no_update;
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
WHEN NOT (
    NEW.author = OLD.author AND NEW.seq = OLD.seq AND NEW.hlc = OLD.hlc
    AND NEW.case_id IS OLD.case_id AND NEW.kind = OLD.kind
    AND NEW.prev_hash = OLD.prev_hash AND NEW.hash = OLD.hash
    AND NEW.received_at = OLD.received_at
    AND (
        -- an erasure: payloads cleared, an old body kept or redacted
        (
            EXISTS (SELECT 1 FROM erased WHERE case_id = OLD.case_id)
            AND NEW.payloads IS NULL
            AND (
                NEW.body = OLD.body
                OR (typeof(NEW.body) = 'blob' AND length(NEW.body) = 33
                    AND substr(NEW.body, 1, 1) = x'c1' AND substr(NEW.body, 2) = OLD.hash)
            )
        )
        -- payloads arriving late for an event stored without them
        OR (
            OLD.payloads IS NULL AND NEW.body = OLD.body
            AND NOT EXISTS (SELECT 1 FROM erased WHERE case_id = OLD.case_id)
        )
    )
)
BEGIN
    SELECT RAISE(ABORT, 'events are append-only: UPDATE refused');
END;

-- A payload of an erased case that arrives (a peer that has not erased yet) is
-- dropped as it is stored.
CREATE TRIGGER events_erased_payloads AFTER INSERT ON events
WHEN NEW.payloads IS NOT NULL AND EXISTS (SELECT 1 FROM erased WHERE case_id = NEW.case_id)
BEGIN
    UPDATE events SET payloads = NULL WHERE author = NEW.author AND seq = NEW.seq;
END;

-- Erasure events (kind 30) whose case is not erased here yet: found at start-up.
CREATE INDEX events_erasures ON events (case_id) WHERE kind = 30;
-- Export records (kind 32), for a case's trail.
CREATE INDEX events_exports ON events (hlc) WHERE kind = 32;
"""

# Version 5 (issue 16): events that belong to no case (announcements, messages and
# their receipts, meshdesk/notices) are read by kind at start-up; a partial index
# keeps that a lookup however many case events the store holds. Self-contained: it
# only adds an index over the events table of version 1.
_SCHEMA_5 = """
CREATE INDEX events_without_case ON events (kind, author, seq) WHERE case_id IS NULL;
"""

#: The forward migrations this meshdesk knows, oldest first.
MIGRATIONS: tuple[Migration, ...] = (
    (1, _SCHEMA_1),
    (2, _SCHEMA_2),
    (3, _SCHEMA_3),
    (4, _SCHEMA_4),
    (5, _SCHEMA_5),
)

_HEADER_SIZE = 100
_MAGIC = b"SQLite format 3\x00"


def latest_version(migrations: Sequence[Migration]) -> int:
    """Check that ``migrations`` count 1, 2, 3, ... and return the last version.

    Raises:
        ValueError: the list is empty or its versions are not consecutive from 1.
    """
    versions = [version for version, _ in migrations]
    if not versions or versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"migration versions must be 1, 2, 3, ... in order, got {versions}")
    return versions[-1]


#: Schema version of the built-in migrations.
SCHEMA_VERSION = latest_version(MIGRATIONS)


def newer_error(path: Path, version: int, known: int) -> StoreError:
    """The error for a database written by a newer meshdesk."""
    return StoreError(
        f"database {path} has schema version {version}, "
        f"this meshdesk knows up to {known}; upgrade meshdesk"
    )


def not_meshdesk_error(path: Path, why: str) -> StoreError:
    """The error for a file that is not (or no longer) a usable meshdesk database."""
    return StoreError(f"{path} is not a usable meshdesk database: {why}")


def prepare_file(path: Path, *, create: bool, known_version: int) -> None:
    """Refuse a bad file before SQLite touches it, or create a new empty one.

    Blocking; run it in a thread. An existing file is only read (its first 100 bytes),
    never written. The header checks are skipped when a ``-wal`` or ``-journal`` file
    with content lies next to the database: the header may then be stale until SQLite
    replays it, and :func:`check_database` checks again after that.

    Raises:
        StoreError: the file is missing (and ``create`` is false), its directory is
            missing, it is not a regular file, not an SQLite database, truncated, of
            another application, or of a newer schema.
    """
    if create and _create_owner_only(path):
        return
    try:
        with path.open("rb") as file:
            info = os.fstat(file.fileno())
            header = file.read(_HEADER_SIZE) if stat.S_ISREG(info.st_mode) else b""
    except FileNotFoundError as exc:
        raise StoreError(f"no database at {path}") from exc
    except IsADirectoryError as exc:
        raise StoreError(f"{path} is a directory, not a database") from exc
    except OSError as exc:
        raise StoreError(f"cannot read database {path}: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(info.st_mode):
        raise StoreError(f"{path} is not a regular file, not a database")
    if info.st_size == 0 or _has_hot_journal(path):
        return  # an empty file is a new database; a hot journal is SQLite's to replay
    _check_header(path, header, info.st_size, known_version)


def _create_owner_only(path: Path) -> bool:
    """Create ``path`` empty with mode 0o600; False if it exists already."""
    if not path.parent.is_dir():
        raise StoreError(f"cannot create database {path}: directory {path.parent} does not exist")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return False
    except OSError as exc:
        raise StoreError(f"cannot create database {path}: {exc.strerror or exc}") from exc
    try:
        os.fchmod(fd, 0o600)  # whatever the umask says
    finally:
        os.close(fd)
    return True


def _has_hot_journal(path: Path) -> bool:
    for suffix in ("-wal", "-journal"):
        with contextlib.suppress(OSError):
            if path.with_name(path.name + suffix).stat().st_size > 0:
                return True
    return False


def _check_header(path: Path, header: bytes, size: int, known_version: int) -> None:
    """Apply the SQLite file-format rules (sqlite.org/fileformat.html) to the header."""
    if len(header) < _HEADER_SIZE or not header.startswith(_MAGIC):
        raise not_meshdesk_error(path, "not an SQLite database, or its header is damaged")
    page_size = int.from_bytes(header[16:18], "big")
    if page_size == 1:
        page_size = 65536
    if page_size < 512 or page_size & (page_size - 1):
        raise not_meshdesk_error(path, f"damaged header (page size {page_size})")
    if header[19] > 2:
        raise not_meshdesk_error(path, "written in a file format this SQLite cannot read")
    change_counter = header[24:28]
    pages = int.from_bytes(header[28:32], "big")
    if pages and header[92:96] == change_counter and size < pages * page_size:
        raise not_meshdesk_error(
            path, f"truncated ({size} bytes, its header says {pages * page_size})"
        )
    application_id = int.from_bytes(header[68:72], "big", signed=True)
    if application_id not in (0, APPLICATION_ID):
        raise not_meshdesk_error(path, f"it belongs to another application (id {application_id})")
    version = int.from_bytes(header[60:64], "big", signed=True)
    if version > known_version:
        raise newer_error(path, version, known_version)
    if version < 0:
        raise not_meshdesk_error(path, f"impossible schema version {version}")


async def check_database(
    db: aiosqlite.Connection, path: Path, *, known_version: int, quick_check: bool
) -> int:
    """Read-only checks through SQLite; return the database's schema version.

    Runs before anything is written (before even ``journal_mode=WAL``), so a refused
    database is left as it was.

    Raises:
        StoreError: newer schema, another application's database, or damage found
            by ``PRAGMA quick_check``.
        sqlite3.Error: SQLite could not read the file; the caller translates it.
    """
    version = await _pragma_int(db, "user_version")
    if version > known_version:
        raise newer_error(path, version, known_version)
    application_id = await _pragma_int(db, "application_id")
    if application_id not in (0, APPLICATION_ID):
        raise not_meshdesk_error(path, f"it belongs to another application (id {application_id})")
    if version == 0:
        rows = await db.execute_fetchall("SELECT count(*) FROM sqlite_master")
        if next(iter(rows))[0]:
            raise not_meshdesk_error(path, "it holds tables but no meshdesk schema version")
    elif quick_check:
        problems = [str(row[0]) for row in await db.execute_fetchall("PRAGMA quick_check")]
        if problems != ["ok"]:
            first = problems[0].splitlines()[-1] if problems else "no answer"
            raise not_meshdesk_error(path, f"damaged ({first})")
    return version


async def migrate(
    db: aiosqlite.Connection, path: Path, migrations: Sequence[Migration], current: int
) -> int:
    """Run the migrations newer than ``current``, one transaction each.

    A failing migration is rolled back and leaves the database at the last version
    that committed.

    Returns:
        The schema version reached.

    Raises:
        StoreError: a migration failed in SQLite.
    """
    for version, step in migrations:
        if version <= current:
            continue
        stamp = f"PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {version};"
        try:
            if isinstance(step, str):
                # executescript commits before it starts, so the transaction lives
                # inside the script.
                await db.executescript(f"BEGIN IMMEDIATE;\n{step}\n;\n{stamp}\nCOMMIT;")
            else:
                await db.execute("BEGIN IMMEDIATE")
                await step(db)
                await db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                await db.execute(f"PRAGMA user_version = {version}")
                await db.execute("COMMIT")
        except Exception as exc:
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    await db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise StoreError(
                    f"cannot migrate database {path} to schema version {version}: {exc}"
                ) from exc
            raise
        current = version
    return current


async def _pragma_int(db: aiosqlite.Connection, name: str) -> int:
    rows = await db.execute_fetchall(f"PRAGMA {name}")
    return int(next(iter(rows))[0])
