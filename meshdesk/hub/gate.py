"""The hub's second gate: records only from cities the prefecture's roster admits.

The hub servers refuse a revoked city's next leaf connection (its certificate maps
to no user once the configuration is reloaded: :mod:`meshdesk.prefecture.nats`),
but a link opened before the revocation lasts until it reconnects, and the hub
stream may still hold what the city sent before. The projection therefore asks
:class:`RosterGate` about every record's city and drops the records of a city the
roster does not admit (revoked, expired, never admitted).

The gate reads ``roster.json`` through :meth:`PrefectureHome.load_roster` (every
signature checked against the prefecture CA) and again whenever the file changes,
never accepting an older revocation list than one it has seen (a copy put back).
A roster that fails to load keeps the last good one and is logged.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable

from meshdesk.errors import MeshdeskError
from meshdesk.prefecture.home import PrefectureHome
from meshdesk.prefecture.roster import Roster

__all__ = ["RosterGate"]

log = logging.getLogger("meshdesk.hub.gate")

#: Seconds between looks at ``roster.json``'s modification time.
CHECK_EVERY = 1.0


class RosterGate:
    """``gate(city) -> bool``: whether the roster admits the city now.

    Raises (on creation):
        HomeError, AuthError: the roster cannot be read or does not verify.
    """

    def __init__(
        self,
        home: PrefectureHome,
        *,
        check_every: float = CHECK_EVERY,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._home = home
        self._clock = clock
        self._check_every = check_every
        self._now = now
        self._roster: Roster = home.load_roster()
        self._stamp = self._mtime()
        self._looked = clock()
        self._crl = self._roster.revocations.number

    def _mtime(self) -> int:
        try:
            return self._home.roster_path.stat().st_mtime_ns
        except OSError:
            return -1

    def _refresh(self) -> None:
        if self._clock() - self._looked < self._check_every:
            return
        self._looked = self._clock()
        stamp = self._mtime()
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            roster = self._home.load_roster(min_crl=self._crl)
        except MeshdeskError as exc:
            log.error("hub roster not reloaded (the last good one stays): %s", exc)
            return
        self._roster, self._crl = roster, roster.revocations.number
        log.info("hub roster reloaded: %d cities admitted", len(roster.active()))

    def __call__(self, city: str) -> bool:
        self._refresh()
        return self._roster.admitted(city, now=self._now())
