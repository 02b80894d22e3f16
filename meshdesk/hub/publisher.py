"""The city HQ's side of the feed: stored events become records on the city's stream.

The publisher reads the HQ's store in the order it took events in
(:meth:`~meshdesk.store.Store.events_in_order`): what it reads is committed, so
nothing is published before it is durable. Each record goes to the city's stream on
the HQ's own leaf node, in feed messages of up to a thousand records whose
``Nats-Msg-Id`` is the hash of the newest event in them
(:func:`~meshdesk.hub.feed.messages_of`); once JetStream has acknowledged every
message of a batch (the leaf syncs each write to disk first), the batch's last
position is stored in the store's meta table. After any failure — the
leaf restarted, the connection lost, the node stopped mid-batch — it starts again
from the stored position, and the records of the unacknowledged tail are published
again: the stream's duplicate window, and the hub projection's key on the event
hash, make the second copy a no-op. The wide-area link is not on this path at all:
the hub's stream sources the city's stream whenever the link is up.

With the position the publisher also stores the stream sequence of the batch's
last acknowledgement. A session that finds the city's stream behind that sequence
(the leaf's JetStream folder wiped or lost: the stream starts again at sequence 1)
publishes the whole store again from position 0; every message keeps its
``Nats-Msg-Id``, so the hub takes nothing twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import nats
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import BadRequestError

from meshdesk.cases.summary import summarise
from meshdesk.errors import MeshdeskError
from meshdesk.hub.feed import FeedRecord, messages_of, records_of, shares_with_prefecture
from meshdesk.hub.natsconf import city_stream, city_subject
from meshdesk.store import Store, StoredEvent

__all__ = ["POSITION_KEY", "FeedPublisher", "PublisherStats", "SealedOf"]

log = logging.getLogger("meshdesk.hub.publisher")

#: The store meta key of the last position whose record JetStream acknowledged.
#: Its value: the position (8 bytes, big-endian), then the city stream's sequence
#: of that batch's last acknowledgement (8 bytes; absent in older stores).
POSITION_KEY = "hub.feed.position"
#: Seconds of the city stream's duplicate window: a republished tail within it is
#: dropped by JetStream (beyond it, by the hub projection's key on the event hash).
DUPLICATE_WINDOW = 24 * 3600.0
#: Seconds to wait for JetStream's acknowledgements of one batch.
ACK_TIMEOUT = 10.0
#: Batches published ahead of their acknowledgements.
IN_FLIGHT = 3


class _Flight(NamedTuple):
    """A published batch: its last position, its record count, its acknowledgements."""

    position: int
    records: int
    futures: list[asyncio.Future[Any]]


SealedOf = Callable[[str], Awaitable[bytes | None]]


@dataclass(slots=True)
class PublisherStats:
    """What the publisher did, for status and tests."""

    position: int = 0
    published: int = 0
    batches: int = 0
    failures: int = 0
    #: Times the city's stream was found behind what it had acknowledged (wiped).
    restarts: int = 0
    #: ``time.perf_counter()`` when the current session began reading the store
    #: (connected to the leaf, its stream checked); 0 before the first.
    feeding_since: float = 0.0


def _pack(position: int, stream_seq: int) -> bytes:
    return position.to_bytes(8, "big") + stream_seq.to_bytes(8, "big")


def _unpack(value: bytes | None) -> tuple[int, int]:
    """``(position, stream sequence)``; (0, 0) for nothing or a damaged value, the
    sequence 0 (unknown: not checked) for an older store's 8-byte value."""
    if value is None or len(value) not in (8, 16):
        return 0, 0
    return int.from_bytes(value[:8], "big"), int.from_bytes(value[8:], "big")


class FeedPublisher:
    """Publishes a city's feed from ``store`` to the leaf node at ``url``.

    Args:
        store: The HQ's store.
        city: The city's feed name.
        url: The leaf node's client URL.
        sealed_of: The displayed sealed personal block of a case (the case book's
            fold), asked only for cases whose consent lists the prefecture.
        batch: Events read per batch (their records go in messages of up to
            ``per_message`` records, all published before one wait for the acks).
        poll_interval: Seconds between looks for new events when none are waiting.
        retry_delay: Seconds after a failure before starting again.
    """

    def __init__(
        self,
        store: Store,
        city: str,
        url: str,
        sealed_of: SealedOf,
        *,
        batch: int = 2000,
        per_message: int = 1000,
        poll_interval: float = 1.0,
        retry_delay: float = 1.0,
    ) -> None:
        self._store = store
        self._city = city
        self._url = url
        self._sealed_of = sealed_of
        self._batch = batch
        self._per_message = per_message
        self._poll = poll_interval
        self._retry = retry_delay
        self.stats = PublisherStats()
        self._wake = asyncio.Event()
        self._unacked: list[asyncio.Future[Any]] = []
        self._acked = 0  # the city stream's sequence of the last acknowledgement
        self._landed_at = 0  # the position of the last batch wholly acknowledged
        self._dirty = asyncio.Event()  # a position landed that is not saved yet

    def wake(self) -> None:
        """Look for new events now (the node stored some)."""
        self._wake.set()

    async def run(self) -> None:
        """Publish forever; failures are logged and retried from the stored position."""
        while True:
            try:
                await self._session()
            except (MeshdeskError, NatsError, OSError, TimeoutError) as exc:
                self.stats.failures += 1
                log.warning("hub feed of %s paused: %s; retrying", self._city, exc or type(exc))
            except Exception:  # a bug: said loudly, and the feed goes on from disk
                self.stats.failures += 1
                log.exception("hub feed of %s failed unexpectedly; retrying", self._city)
            await asyncio.sleep(self._retry)

    async def _session(self) -> None:
        nc = await nats.connect(
            self._url,
            name=f"meshdesk-feed-{self._city}",
            allow_reconnect=False,  # a lost leaf ends the session: we resume from disk
            connect_timeout=5,
            error_cb=_quiet,
        )
        try:
            js = nc.jetstream()
            await self._ensure_stream(nc)
            position, acked = _unpack(await self._store.get_meta(POSITION_KEY))
            if acked > 0:
                position, acked = await self._check_stream(js, position, acked)
            self._acked, self._landed_at = acked, position
            self.stats.position = position
            subject, stream = city_subject(self._city), city_stream(self._city)
            read_from = position
            self.stats.feeding_since = time.perf_counter()
            # Up to IN_FLIGHT batches are published ahead of their acknowledgements:
            # the next is read and built while JetStream syncs the last to disk. A
            # position is saved only once all of its messages, and those of every
            # batch before it, are acknowledged; saving it (a durable commit) runs
            # beside the feed, always taking the newest acknowledged position.
            flights: deque[_Flight] = deque()
            saver = asyncio.create_task(self._save_positions())
            try:
                while True:
                    if saver.done():
                        saver.result()  # a failed save ends the session (retried)
                    self._wake.clear()  # before the read: a wake during it is kept
                    batch = await self._store.events_in_order(read_from, self._batch)
                    if not batch:
                        if flights:
                            await self._landed(flights.popleft())
                            continue
                        await self._idle(nc)
                        continue
                    records = await self.records(batch)
                    futures = [
                        await js.publish_async(
                            subject, payload, stream=stream, headers={"Nats-Msg-Id": msg_id}
                        )
                        for msg_id, payload in messages_of(records, self._per_message)
                    ]
                    self._unacked.extend(futures)
                    flights.append(_Flight(batch[-1][0], len(records), futures))
                    read_from = batch[-1][0]
                    while len(flights) >= IN_FLIGHT:
                        await self._landed(flights.popleft())
            finally:
                saver.cancel()
                (outcome,) = await asyncio.gather(saver, return_exceptions=True)
                if not isinstance(outcome, asyncio.CancelledError | None):
                    log.warning("hub feed of %s: saving its position failed: %s", self._city,
                                outcome)  # fmt: skip
        finally:
            for future in self._unacked:  # never acknowledged: published again next time
                future.cancel()
            self._unacked.clear()
            await nc.close()

    async def _idle(self, nc: Client) -> None:
        """Wait for new events: woken (since the last read began), or the poll
        interval passed."""
        try:
            async with asyncio.timeout(self._poll):
                await self._wake.wait()
        except TimeoutError:
            pass
        if nc.is_closed or not nc.is_connected:
            raise ConnectionError("the leaf node went away")

    async def _check_stream(self, js: Any, position: int, acked: int) -> tuple[int, int]:
        """Where to publish from: ``(position, acked)``, or from the start when the
        city's stream ends before what it acknowledged (its folder wiped: it began
        again at sequence 1)."""
        info = await js.stream_info(city_stream(self._city))
        last = int(info.state.last_seq or 0)
        if last >= acked:
            return position, acked
        log.warning(
            "hub feed of %s: the leaf's stream ends at sequence %d but had acknowledged %d"
            " (its JetStream folder was wiped?); publishing the store again from the start",
            self._city,
            last,
            acked,
        )
        self.stats.restarts += 1
        await self._store.set_meta(POSITION_KEY, _pack(0, last))
        return 0, last

    async def _landed(self, flight: _Flight) -> None:
        """Wait for a batch's acknowledgements; its position is then saved (soon)."""
        async with asyncio.timeout(ACK_TIMEOUT):
            acks = await asyncio.gather(*flight.futures)
        done = set(flight.futures)
        self._unacked = [f for f in self._unacked if f not in done]
        self._acked = max([self._acked, *(int(a.seq) for a in acks)])
        self._landed_at = flight.position
        self._dirty.set()
        self.stats.published += flight.records
        self.stats.batches += 1

    async def _save_positions(self) -> None:
        """Save the newest acknowledged position durably, whenever one landed."""
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            position, acked = self._landed_at, self._acked
            if position <= self.stats.position:
                continue
            await self._store.set_meta(POSITION_KEY, _pack(position, acked))
            self.stats.position = position

    async def _ensure_stream(self, nc: Client) -> None:
        js = nc.jetstream()
        config = StreamConfig(
            name=city_stream(self._city),
            subjects=[city_subject(self._city)],
            storage=StorageType.FILE,
            duplicate_window=DUPLICATE_WINDOW,
        )
        try:
            await js.add_stream(config)
        except BadRequestError:
            await js.update_stream(config)  # made by an older version: bring it in line

    async def records(self, batch: Sequence[tuple[int, StoredEvent]]) -> list[FeedRecord]:
        """The feed records of a batch read from the store."""
        wanted = list(dict.fromkeys(e.case_id for _, e in batch if e.case_id is not None))
        summaries = await self._store.index.summaries(wanted)
        for case_id in wanted:
            if case_id not in summaries:  # not indexed yet (queued at start-up): fold it
                events = await self._store.index.case_events(case_id)
                summaries[case_id] = summarise(case_id, events)
        consented = [c for c, s in summaries.items() if shares_with_prefecture(s)]
        erased: set[str] = set()
        personal: dict[str, bytes] = {}
        if consented:
            erased = set(await self._store.erased_cases())
            for case_id in consented:
                if case_id not in erased:
                    sealed = await self._sealed_of(case_id)
                    if sealed is not None:
                        personal[case_id] = sealed
        return records_of(self._city, batch, summaries, personal, erased)


async def _quiet(exc: Exception) -> None:
    """nats-py's error callback: one debug line (the session's end says the rest)."""
    log.debug("nats client: %s", exc)
