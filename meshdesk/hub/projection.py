"""The hub's projection: the hub stream, kept in PostgreSQL (``meshdesk hub run``).

:func:`apply_batch` writes one batch of records in ONE transaction together with
the stream position of its last message (``hub_meta.stream_seq``), so a crash
between the two cannot happen: after any failure the service reads the position
and consumes again from the message after it. Every write is idempotent besides:

- ``hub_events`` is keyed by the event hash (the message id): a record taken twice
  (a city that republished after a cut beyond the duplicate window) is dropped;
- a case row, and its sealed block, is replaced only by a record of a higher city
  position (:attr:`~meshdesk.hub.feed.FeedRecord.pos`), so order does not matter;
- an erasure drops the case's sealed block and keeps any from coming back.

A message that does not decode, that names a city other than its subject's, or
that comes from a city the prefecture's roster does not admit (revoked: the
hub's second gate, :mod:`meshdesk.hub.gate`), is logged and skipped: it changes
nothing but the position.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import ssl
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import nats
from nats.errors import Error as NatsError
from nats.js.api import (
    ConsumerConfig,
    DeliverPolicy,
    ExternalStream,
    StorageType,
    StreamConfig,
    StreamSource,
)
from nats.js.errors import NotFoundError

from meshdesk.cases.hlc import to_datetime
from meshdesk.errors import ConfigError, MeshdeskError, WireError
from meshdesk.hub.feed import FeedRecord, RecordKind, decode_message
from meshdesk.hub.natsconf import HUB_STREAM, city_stream, city_subject
from meshdesk.hub.schema import SCHEMA, VIEWS

__all__ = [
    "Message",
    "Projection",
    "ProjectionStats",
    "apply_batch",
    "decode_messages",
    "ensure_hub_stream",
    "ensure_schema",
    "hub_client_tls",
    "stored_position",
]

log = logging.getLogger("meshdesk.hub.projection")

POSITION = "stream_seq"


@dataclass(frozen=True, slots=True)
class Message:
    """One message of the hub stream: its stream sequence, subject and data."""

    stream_seq: int
    subject: str
    data: bytes


@dataclass(slots=True)
class ProjectionStats:
    """What the projection did: position in the hub stream, records applied, copies
    dropped, messages refused."""

    position: int = 0
    applied: int = 0
    duplicates: int = 0
    refused: int = 0


def _ts(iso: str | None) -> dt.datetime | None:
    return None if iso is None else dt.datetime.fromisoformat(iso)


Admitted = Callable[[str], bool]


def decode_messages(
    messages: Iterable[Message], stats: ProjectionStats, admitted: Admitted | None = None
) -> list[FeedRecord]:
    """The records of the messages that decode, name their subject's city, and come
    from a city ``admitted`` admits (None: every city). A message holds one city's
    records: the checks are per message."""
    out: list[FeedRecord] = []
    for message in messages:
        try:
            records = decode_message(message.data)
            city = records[0].city
            if message.subject != city_subject(city):
                raise WireError(f"records of {city!r} on subject {message.subject!r}")
            if admitted is not None and not admitted(city):
                raise WireError(f"city {city} is not admitted (revoked or unknown)")
        except WireError as exc:
            stats.refused += 1
            log.warning("hub stream #%d refused: %s", message.stream_seq, exc)
            continue
        out.extend(records)
    return out


#: Staging tables of this connection: a batch is COPied in (asyncpg encodes COPY
#: rows cheaply, arrays of parameters dearly), then merged from there; emptied
#: at every commit.
_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS staged_events (
    event_hash bytea, city text, pos bigint, kind smallint, case_id text, author text,
    seq bigint, hlc bigint, stream_seq bigint
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS staged_cases (
    city text, case_id text, pos bigint, created_at timestamptz, updated_at timestamptz,
    site text, category text, urgency text, status text, department text, consent text,
    referrals text, events integer, referral_count integer, sealed boolean
) ON COMMIT DELETE ROWS;
"""
_EVENT_COLUMNS = ("event_hash", "city", "pos", "kind", "case_id", "author", "seq", "hlc",
                  "stream_seq")  # fmt: skip
_CASE_COLUMNS = ("city", "case_id", "pos", "created_at", "updated_at", "site", "category",
                 "urgency", "status", "department", "consent", "referrals", "events",
                 "referral_count")  # fmt: skip


async def ensure_schema(conn: asyncpg.Connection) -> None:
    """Create the tables and views (idempotent), and this connection's staging
    tables (:func:`apply_batch` needs them)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(7420017)")  # one creator at a time
        await conn.execute(SCHEMA)
        await conn.execute(VIEWS)
    await conn.execute(_STAGING)


async def stored_position(conn: asyncpg.Connection) -> int:
    value = await conn.fetchval("SELECT value FROM hub_meta WHERE key = $1", POSITION)
    return 0 if value is None else int(value)


async def apply_batch(
    conn: asyncpg.Connection,
    messages: Sequence[Message],
    stats: ProjectionStats,
    *,
    now: dt.datetime,
    admitted: Admitted | None = None,
) -> None:
    """Apply messages of the hub stream and store the last one's position: one
    transaction. Messages of cities ``admitted`` refuses change nothing else."""
    if not messages:
        return
    records = decode_messages(messages, stats, admitted)
    last = messages[-1].stream_seq
    async with conn.transaction():
        fresh = await _take_events(conn, records, last)
        stats.duplicates += len(records) - len(fresh)
        await _erasures(conn, [r for r in fresh if r.kind is RecordKind.ERASURE], now)
        await _cases(conn, fresh)
        await _announcements(conn, [r for r in fresh if r.kind is RecordKind.ANNOUNCEMENT])
        await _cities(conn, records, fresh, now)
        await conn.execute(
            "INSERT INTO hub_meta (key, value) VALUES ($1, $2)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            POSITION,
            last,
        )
    stats.applied += len(fresh)
    stats.position = last


async def _take_events(
    conn: asyncpg.Connection, records: list[FeedRecord], stream_seq: int
) -> list[FeedRecord]:
    if not records:
        return []
    await conn.copy_records_to_table(
        "staged_events",
        columns=_EVENT_COLUMNS,
        records=[(r.event_hash, r.city, r.pos, r.kind, r.case_id, r.author, r.seq, r.hlc,
                  stream_seq) for r in records],
    )  # fmt: skip
    rows = await conn.fetch(
        f"INSERT INTO hub_events ({', '.join(_EVENT_COLUMNS)})"
        f" SELECT {', '.join(_EVENT_COLUMNS)} FROM staged_events"
        " ON CONFLICT (event_hash) DO NOTHING RETURNING event_hash"
    )
    new = {bytes(row[0]) for row in rows}
    out, seen = [], set()
    for r in records:
        if r.event_hash in new and r.event_hash not in seen:  # a batch may repeat one too
            seen.add(r.event_hash)
            out.append(r)
    return out


async def _erasures(conn: asyncpg.Connection, erasures: list[FeedRecord], now: dt.datetime) -> None:
    if not erasures:
        return
    cities = [r.city for r in erasures]
    ids = [r.case_id for r in erasures]
    await conn.execute(
        "INSERT INTO hub_erasures (city, case_id, erased_at)"
        " SELECT u.city, u.case_id, $3 FROM unnest($1::text[], $2::text[]) AS u(city, case_id)"
        " ON CONFLICT DO NOTHING",
        cities,
        ids,
        now,
    )
    await conn.execute(
        "DELETE FROM hub_personal AS p USING unnest($1::text[], $2::text[]) AS u(city, case_id)"
        " WHERE p.city = u.city AND p.case_id = u.case_id",
        cities,
        ids,
    )


async def _cases(conn: asyncpg.Connection, fresh: list[FeedRecord]) -> None:
    latest: dict[tuple[str, str], FeedRecord] = {}
    for r in fresh:
        if r.case_id is None:
            continue
        key = (r.city, r.case_id)
        if key not in latest or latest[key].pos < r.pos:
            latest[key] = r
    if not latest:
        return
    rows = list(latest.values())
    staged = []
    for r in rows:
        f, n = r.fields, r.counts
        created, updated = _ts(f.get("created_at")), _ts(f.get("updated_at"))
        staged.append((r.city, r.case_id, r.pos, created, updated, f.get("site"),
                       f.get("category"), f.get("urgency"), f.get("status"), f.get("department"),
                       f.get("consent"), f.get("referrals"), n.get("events", 0),
                       n.get("referrals", 0), r.personal is not None))  # fmt: skip
    await conn.copy_records_to_table("staged_cases", columns=(*_CASE_COLUMNS, "sealed"),
                                     records=staged)  # fmt: skip
    await conn.execute(
        f"INSERT INTO hub_cases ({', '.join(_CASE_COLUMNS)})"
        f" SELECT {', '.join(_CASE_COLUMNS)} FROM staged_cases"
        " ON CONFLICT (city, case_id) DO UPDATE SET pos = excluded.pos,"
        "  created_at = excluded.created_at, updated_at = excluded.updated_at,"
        "  site = excluded.site, category = excluded.category, urgency = excluded.urgency,"
        "  status = excluded.status, department = excluded.department,"
        "  consent = excluded.consent, referrals = excluded.referrals,"
        "  events = excluded.events, referral_count = excluded.referral_count"
        " WHERE hub_cases.pos < excluded.pos"
    )
    await conn.execute(
        "UPDATE hub_cases AS c SET erased = true FROM hub_erasures AS e, staged_cases AS u"
        " WHERE c.city = u.city AND c.case_id = u.case_id"
        " AND e.city = u.city AND e.case_id = u.case_id AND NOT c.erased"
    )
    sealed = [r for r in rows if r.personal is not None]
    if sealed:
        await conn.execute(
            "INSERT INTO hub_personal (city, case_id, pos, sealed)"
            " SELECT u.* FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bytea[])"
            "  AS u(city, case_id, pos, sealed)"
            " WHERE NOT EXISTS (SELECT 1 FROM hub_erasures AS e"
            "  WHERE e.city = u.city AND e.case_id = u.case_id)"
            " ON CONFLICT (city, case_id) DO UPDATE SET pos = excluded.pos,"
            "  sealed = excluded.sealed WHERE hub_personal.pos < excluded.pos",
            [r.city for r in sealed],
            [r.case_id for r in sealed],
            [r.pos for r in sealed],
            [r.personal for r in sealed],
        )
    if len(sealed) < len(rows):  # consent withdrawn (or never given) as of a newer record
        await conn.execute(
            "DELETE FROM hub_personal AS p USING staged_cases AS u"
            " WHERE p.city = u.city AND p.case_id = u.case_id AND p.pos < u.pos AND NOT u.sealed"
        )


async def _announcements(conn: asyncpg.Connection, notices: list[FeedRecord]) -> None:
    rows: list[tuple[Any, ...]] = []
    for r in notices:
        a = r.announcement
        assert a is not None
        rows.append((r.city, a["notice_id"], to_datetime(r.hlc), a["severity"], a["title_ja"],
                     a["title_en"], a["body_ja"], a["body_en"], list(a["sites"]),
                     a["exercise"]))  # fmt: skip
    if rows:
        await conn.executemany(
            "INSERT INTO hub_announcements (city, notice_id, posted_at, severity, title_ja,"
            " title_en, body_ja, body_en, sites, exercise)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING",
            rows,
        )


async def _cities(
    conn: asyncpg.Connection, records: list[FeedRecord], fresh: list[FeedRecord], now: dt.datetime
) -> None:
    newest: dict[str, int] = {}
    counts: dict[str, int] = {}
    for r in records:
        newest[r.city] = max(newest.get(r.city, 0), r.hlc)
        counts.setdefault(r.city, 0)
    for r in fresh:
        counts[r.city] += 1
    if not newest:
        return
    cities = sorted(newest)
    await conn.execute(
        "INSERT INTO hub_cities (city, records, last_contact, last_event_at)"
        " SELECT u.city, u.records, $3, u.newest"
        " FROM unnest($1::text[], $2::bigint[], $4::timestamptz[]) AS u(city, records, newest)"
        " ON CONFLICT (city) DO UPDATE SET records = hub_cities.records + excluded.records,"
        "  last_contact = excluded.last_contact,"
        "  last_event_at = greatest(hub_cities.last_event_at, excluded.last_event_at)",
        cities,
        [counts[c] for c in cities],
        now,
        [to_datetime(newest[c]) for c in cities],
    )


async def ensure_hub_stream(js: Any, cities: Sequence[str], replicas: int = 3) -> None:
    """The hub stream, sourcing every city's stream (sources are only ever added)."""
    try:
        info = await js.stream_info(HUB_STREAM)
        known = {s.name for s in info.config.sources or []}
    except NotFoundError:
        info, known = None, set()
    wanted = known | {city_stream(c) for c in cities}
    by_name = {city_stream(c): c for c in cities}
    sources = []
    for name in sorted(wanted):
        city = by_name.get(name, name.removeprefix(city_stream("")))
        sources.append(StreamSource(name=name, external=ExternalStream(api=f"$JS.{city}.API")))
    config = StreamConfig(name=HUB_STREAM, storage=StorageType.FILE, num_replicas=replicas,
                          sources=sources, duplicate_window=24 * 3600.0)  # fmt: skip
    if info is None:
        await js.add_stream(config)
    elif wanted != known:
        await js.update_stream(config)


def hub_client_tls(cert: Path, key: Path, ca: Path) -> ssl.SSLContext:
    """The TLS context of a prefecture hub client: its certificate and key (from
    ``meshdesk prefecture issue-client``), the hub servers checked against the
    prefecture CA ``ca``.

    Raises:
        ConfigError: a file that cannot be read or does not fit.
    """
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
        context.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"hub client certificate {cert}: {exc}") from exc
    return context


class Projection:
    """Consumes the hub stream into PostgreSQL until cancelled.

    Args:
        nats_urls: The hub servers' client URLs.
        dsn: The PostgreSQL database.
        cities: Cities whose streams the hub stream must source (added if missing).
        admitted: Whether a city may feed the hub (the prefecture roster's
            :class:`~meshdesk.hub.gate.RosterGate`); None takes every city.
        tls: The projection's client identity on the hub servers (its prefecture
            client certificate: :func:`hub_client_tls`); None connects without.
        batch: Messages (of up to a thousand records each) per transaction.
        retry_delay: Seconds after a failure before starting again.
    """

    def __init__(
        self,
        nats_urls: Sequence[str],
        dsn: str,
        cities: Sequence[str] = (),
        *,
        batch: int = 16,
        retry_delay: float = 1.0,
        replicas: int = 3,
        admitted: Admitted | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._urls = list(nats_urls)
        self._tls = tls
        self._dsn = dsn
        self._cities = list(cities)
        self._batch = batch
        self._retry = retry_delay
        self._replicas = replicas
        self._admitted = admitted
        self.stats = ProjectionStats()

    async def run(self) -> None:
        while True:
            try:
                await self._session()
            except (MeshdeskError, NatsError, OSError, TimeoutError) as exc:
                log.warning("hub projection paused: %s; retrying", exc or type(exc).__name__)
            except asyncpg.PostgresError as exc:
                log.warning("hub projection paused: PostgreSQL: %s; retrying", exc)
            except Exception:  # a bug: said loudly; the position is in the database
                log.exception("hub projection failed unexpectedly; retrying")
            await asyncio.sleep(self._retry)

    async def _session(self) -> None:
        conn = await asyncpg.connect(self._dsn, timeout=10)
        nc = None
        try:
            await ensure_schema(conn)
            nc = await nats.connect(self._urls, connect_timeout=5, max_reconnect_attempts=-1,
                                    reconnect_time_wait=0.5, error_cb=_quiet,
                                    tls=self._tls)  # fmt: skip
            js = nc.jetstream(timeout=10)
            await ensure_hub_stream(js, self._cities, self._replicas)
            position = await stored_position(conn)
            self.stats.position = position
            sub = await js.subscribe(
                "meshdesk.feed.>",
                stream=HUB_STREAM,
                ordered_consumer=True,
                idle_heartbeat=2.0,
                config=ConsumerConfig(
                    deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=position + 1
                ),
            )
            while True:
                messages = await _next_batch(sub, self._batch)
                messages = [m for m in messages if m.stream_seq > self.stats.position]
                await apply_batch(conn, messages, self.stats, now=dt.datetime.now(dt.UTC),
                                  admitted=self._admitted)  # fmt: skip
        finally:
            if nc is not None:
                await nc.close()
            await conn.close()


async def _next_batch(sub: Any, size: int) -> list[Message]:
    out: list[Message] = []
    wait = 1.0
    while len(out) < size:
        try:
            msg = await sub.next_msg(timeout=wait)
        except nats.errors.TimeoutError:
            break
        out.append(Message(msg.metadata.sequence.stream, msg.subject, msg.data))
        wait = 0.02
    return out


async def _quiet(exc: Exception) -> None:
    log.debug("nats client: %s", exc)
