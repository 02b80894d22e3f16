"""Invitations for citizens' phones: pure rules, the current time always passed in.

An invitation is a single-use URL ``https://ADDR:PORT/j/TOKEN`` (a 192-bit token).
Its life::

    new ──open──▶ opened ──lobby──▶ waiting (4-digit code) ──admit──▶ admitted ──▶ ended
     │              │                 │                                  (hang-up)
     └──────────────┴───── expired ◀──┴── declined

- It **binds to the first browser** that opens it: that browser gets a secret (a
  cookie); every later request must carry it, so a forwarded or photographed QR
  code is worthless once the citizen opened it.
- An unopened invitation expires ``ttl`` seconds after it was made; an opened one
  that staff have not admitted expires ``ttl`` seconds after it was opened.
- It **dies at hang-up**: once its call ends (or the citizen hangs up) nothing can
  use it again.
- Tokens are looked up by their SHA-256, never compared as text; a wrong, expired or
  reused token gets a friendly page and never a call (:mod:`meshdesk.web.server`),
  and counts against the address in :class:`RateLimiter`.

Each invitation keeps a short list of events for the phone (``admitted``,
``declined``, ``ended``, ``degraded`` …) which the page long-polls.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field
from enum import StrEnum

from meshdesk.errors import UsageError

__all__ = [
    "EVENTS_MAX",
    "TOKEN_BYTES",
    "Invitation",
    "InviteBook",
    "InviteState",
    "RateLimiter",
    "token_hash",
]

#: 24 random bytes: 192 bits, 32 URL-safe characters.
TOKEN_BYTES = 24
#: Events kept per invitation for the phone to poll.
EVENTS_MAX = 64
#: Finished invitations kept so that their token still gets "ended"/"expired".
FINISHED_KEPT = 64
#: Invitations open at once (waiting or in a call) on one node.
OPEN_MAX = 32


class InviteState(StrEnum):
    NEW = "new"
    OPENED = "opened"
    WAITING = "waiting"
    ADMITTED = "admitted"
    DECLINED = "declined"
    EXPIRED = "expired"
    ENDED = "ended"


#: States in which an invitation can still lead to (or be in) a call.
ALIVE = frozenset({InviteState.NEW, InviteState.OPENED, InviteState.WAITING, InviteState.ADMITTED})


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "replace")).digest()


@dataclass
class Invitation:
    """One invitation. ``token`` is kept in memory only, to show the QR code again."""

    invite_id: str
    token: str
    case_id: str | None
    call_id: str | None
    created_at: float
    deadline: float
    state: InviteState = InviteState.NEW
    code: str | None = None
    browser: bytes | None = None
    remote: str | None = None
    lang: str = "ja"
    events: list[dict[str, object]] = field(default_factory=list)
    seq: int = 0
    reason: str | None = None
    #: Kept ready for a phone of another desk's call this node may take over: it is
    #: admitted as soon as this node hosts that call (the citizen was admitted once).
    transfer: bool = False
    #: Where this phone reconnects if this desk goes (a successor's invitation).
    backup_url: str | None = None

    @property
    def guest_id(self) -> str:
        """How calls and the case's call log name this citizen."""
        return f"citizen:{self.invite_id}"

    @property
    def alive(self) -> bool:
        return self.state in ALIVE

    def push(self, kind: str, **data: object) -> None:
        self.seq += 1
        self.events.append({"seq": self.seq, "kind": kind, **data})
        del self.events[:-EVENTS_MAX]

    def events_after(self, seq: int) -> list[dict[str, object]]:
        return [e for e in self.events if isinstance(e["seq"], int) and e["seq"] > seq]

    def to_json(self, now: float) -> dict[str, object]:
        return {
            "invite_id": self.invite_id,
            "guest_id": self.guest_id,
            "state": str(self.state),
            "code": self.code,
            "case_id": self.case_id,
            "call_id": self.call_id,
            "expires_in_s": round(max(self.deadline - now, 0.0), 1) if self.alive else None,
            "remote": self.remote,
            "reason": self.reason,
        }


class InviteBook:
    """Every invitation of one node, and the rules of their life."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._by_hash: dict[bytes, Invitation] = {}
        self._finished: OrderedDict[bytes, None] = OrderedDict()

    def all(self) -> list[Invitation]:
        """Every invitation kept, oldest first."""
        return sorted(self._by_hash.values(), key=lambda i: i.created_at)

    def create(self, now: float, *, case_id: str | None, call_id: str | None) -> Invitation:
        open_ = sum(1 for i in self._by_hash.values() if i.alive)
        if open_ >= OPEN_MAX:
            raise UsageError(f"{open_} invitations are open; decline or let some expire first")
        ids = {i.invite_id for i in self._by_hash.values()}
        invite_id = secrets.token_hex(4)
        while invite_id in ids:
            invite_id = secrets.token_hex(4)
        token = secrets.token_urlsafe(TOKEN_BYTES)
        invite = Invitation(
            invite_id, token, case_id, call_id, created_at=now, deadline=now + self.ttl
        )
        self._by_hash[token_hash(token)] = invite
        return invite

    def adopt(
        self,
        now: float,
        *,
        invite_id: str,
        token: str,
        code: str | None,
        case_id: str | None,
        call_id: str,
        ttl: float,
    ) -> Invitation:
        """Keep ready an invitation another desk made for a phone in ``call_id`` (the
        same id, so the same citizen in the call, and the same code), under a new
        ``token`` that desk chose; it waits up to ``ttl`` to be opened.

        Raises:
            UsageError: too many open, or the token or id is unusable.
        """
        if not 16 <= len(token) <= 64 or not invite_id or len(invite_id) > 16:
            raise UsageError("a standby invitation needs a token of 16-64 characters and an id")
        if sum(1 for i in self._by_hash.values() if i.alive) >= OPEN_MAX:
            raise UsageError("too many invitations are open")
        for other in self._by_hash.values():
            if other.invite_id == invite_id and other.alive:
                return other
        invite = Invitation(invite_id, token, case_id, call_id, created_at=now,
                            deadline=now + ttl, code=code, transfer=True)  # fmt: skip
        self._by_hash[token_hash(token)] = invite
        return invite

    def by_token(self, token: str) -> Invitation | None:
        """The invitation of ``token`` in any state, or None (never made, or forgotten)."""
        return self._by_hash.get(token_hash(token))

    def find(self, key: str) -> Invitation:
        """An invitation by its 4-digit code (while waiting or admitted) or its id.

        Raises:
            UsageError: nothing, or more than one, matches.
        """
        key = key.strip()
        found = [
            i
            for i in self._by_hash.values()
            if key in (i.invite_id, i.guest_id) or (i.code == key and i.alive)
        ]
        if not found:
            raise UsageError(f"no open invitation with code or id {key[:40]!r}")
        if len(found) > 1:
            raise UsageError(f"{key[:40]!r} names {len(found)} invitations; use the id")
        return found[0]

    # -- the phone's side -------------------------------------------------------------

    def open(self, invite: Invitation, now: float) -> str:
        """Bind ``invite`` to the browser opening it; that browser's secret (a cookie)."""
        if invite.state is not InviteState.NEW:
            raise UsageError("this invitation was opened already")
        secret = secrets.token_urlsafe(TOKEN_BYTES)
        invite.browser = token_hash(secret)
        invite.state = InviteState.OPENED
        invite.deadline = now + self.ttl
        return secret

    @staticmethod
    def owns(invite: Invitation, secret: str | None) -> bool:
        """Does ``secret`` (the cookie) belong to the browser the invitation is bound to?"""
        if invite.browser is None or not secret:
            return False
        return hmac.compare_digest(invite.browser, token_hash(secret))

    def lobby(self, invite: Invitation, now: float) -> str:
        """The citizen asks to join: give the invitation its 4-digit code (idempotent)."""
        if invite.state is InviteState.WAITING or invite.state is InviteState.ADMITTED:
            assert invite.code is not None
            return invite.code
        if invite.state is not InviteState.OPENED:
            raise UsageError(f"this invitation is {invite.state}")
        code = invite.code  # a transferred invitation keeps the code staff know
        if code is None:
            taken = {i.code for i in self._by_hash.values() if i.alive and i.code is not None}
            code = f"{secrets.randbelow(10000):04d}"
            while code in taken:
                code = f"{secrets.randbelow(10000):04d}"
        invite.code = code
        invite.state = InviteState.WAITING
        invite.push("waiting", code=code)
        return code

    # -- the desk's side --------------------------------------------------------------

    def admit(self, invite: Invitation) -> None:
        if invite.state is not InviteState.WAITING:
            raise UsageError(f"invitation {invite.invite_id} is {invite.state}, not waiting")
        invite.state = InviteState.ADMITTED
        invite.push("admitted")

    def finish(self, invite: Invitation, state: InviteState, reason: str) -> bool:
        """Decline, expire or end ``invite`` (False if it was finished already)."""
        if not invite.alive:
            return False
        invite.state = state
        invite.reason = reason
        invite.push(str(state), reason=reason)
        self._finished[token_hash(invite.token)] = None
        while len(self._finished) > FINISHED_KEPT:
            old, _ = self._finished.popitem(last=False)
            self._by_hash.pop(old, None)
        return True

    def expire(self, now: float) -> list[Invitation]:
        """Invitations whose time ran out before admission (finished here)."""
        late = [
            i
            for i in self._by_hash.values()
            if i.state in (InviteState.NEW, InviteState.OPENED, InviteState.WAITING)
            and now >= i.deadline
        ]
        for invite in late:
            self.finish(invite, InviteState.EXPIRED, "expired")
        return late


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """A token bucket per key (a client address): ``rate`` per second, up to ``burst``.

    At most ``max_keys`` buckets are kept (the least recently used go first), so a
    flood from many addresses cannot grow memory without bound.
    """

    def __init__(self, rate: float, burst: float, *, max_keys: int = 4096) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def allow(self, key: str, now: float, cost: float = 1.0) -> bool:
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            bucket = _Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        ok = bucket.tokens >= cost
        if ok:
            bucket.tokens -= cost
        self._buckets[key] = bucket
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return ok

    def blocked(self, key: str, now: float, cost: float = 1.0) -> bool:
        """Would ``cost`` be refused now? (Does not spend anything.)"""
        bucket = self._buckets.get(key)
        if bucket is None:
            return False
        tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
        return tokens < cost
