"""Who hosts a call, under :class:`~meshdesk.calls.manager.CallManager`: growing into a
star, handing the host over, and shrinking back to a full mesh.

The rules (who is fit, who is next, when a host is gone) are pure, in
:mod:`meshdesk.calls.hosting`; this layer carries them out on the calls, legs and
forwarders of :class:`~meshdesk.calls._core.CallCore`:

- ``_switch_to_relay``: the host's fifth node (or a citizen) makes the mesh a star.
- Members send the host their standing (``CallStanding``); the host ranks them and
  tells everyone who comes next (``CallHost``, same epoch).
- ``_host_lost``: the host left, its link dropped, or it went silent
  (``_watch_hosts``): the first successor still here takes over (``_take_over``:
  next epoch, announced) and everyone follows (``_follow``): a star through the new
  host, which offers every member a leg, or a full mesh when the call is down to
  :data:`MESH_MAX` nodes without a citizen.
- A host that stays unfit hands over by itself and stays as a member.
- ``_maybe_mesh``: a star down to :data:`MESH_MAX` nodes goes back to a full mesh;
  the host forwards to each member until that member says it is meshed (its
  roster), so nobody's audio stops meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Protocol, Self

from meshdesk.calls._core import MESH_MAX, CallCore, is_guest
from meshdesk.calls.hosting import (
    HOST_SILENCE,
    STANDING_INTERVAL,
    UNKNOWN,
    CpuMeter,
    HostFitness,
    Standing,
    better_host,
    host_silent,
    rank,
)
from meshdesk.calls.model import Call, CallState, Participant, PartState
from meshdesk.calls.relay import Forwarder
from meshdesk.errors import CallError
from meshdesk.wire import CallGuestReady, CallGuestStandby, CallHost, CallStanding

__all__ = ["TAKEOVER_WAIT", "WATCH_INTERVAL", "GuestDesk", "HostingCore"]

log = logging.getLogger("meshdesk.calls")

#: How often members look for a silent host (seconds).
WATCH_INTERVAL = 0.25
#: A successor that has not announced itself this long after the host was lost is
#: passed over for the next one.
TAKEOVER_WAIT = 3.0


class GuestDesk(Protocol):
    """What hosting needs of the node's citizen desk (:class:`meshdesk.web.CitizenDesk`)."""

    def standby(
        self, call_id: str, guest_id: str, code: str, token: str, case_id: str | None, remote: str
    ) -> str | None:
        """Keep an invitation ready for a phone of ``call_id``; its URL (None: no web port)."""
        ...

    def backup_ready(self, guest_id: str, url: str | None) -> None:
        """Tell that phone where it reconnects if this desk goes (None: nowhere now)."""
        ...


class HostingCore(CallCore):
    """Calls' hosts: relay, handover, shrink (see the module docstring)."""

    _cpu: CpuMeter
    _cpu_free: int
    #: The node's citizen desk, once the web layer started (see :class:`GuestDesk`).
    guest_desk: GuestDesk | None = None

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        self._cpu = CpuMeter()
        self._cpu_free = self._cpu.free_pct()
        self._spawn(self._watch_hosts(), "call host watch")
        return self

    # -- shape -----------------------------------------------------------------------

    def _nodes(self, call: Call, excluding: frozenset[str] = frozenset()) -> list[Participant]:
        """Live participants that are nodes (not citizens), but ``excluding``."""
        return [p for p in call.live() if not is_guest(p.node_id) and p.node_id not in excluding]

    def _needs_star(self, call: Call, excluding: frozenset[str] = frozenset()) -> bool:
        """More nodes than a mesh holds, or a citizen whose leg ends here."""
        guests = [p for p in call.live() if is_guest(p.node_id)]
        return len(self._nodes(call, excluding)) + 1 > MESH_MAX or (
            bool(guests) and call.host == self._my_id
        )

    async def _switch_to_relay(self, call: Call, guest: Participant) -> None:
        """Turn the mesh into a star through this node (the host) as ``guest`` joins.

        Members learn it from the roster (more members than a mesh holds, from the
        host): they drop their legs with each other. The host then replaces its leg
        to each member with one that has forwarding slots.
        """
        call.relayed = True
        self._forwarders[call.call_id] = Forwarder(
            self._relay, audio_only=call.audio_only or call.degraded
        )
        call.fitness = self._fitness()
        log.info("call %s: %d nodes is over the mesh limit of %d; relaying through this node",
                 call.call_id, len(call.live()) + 1, MESH_MAX)  # fmt: skip
        members = [p for p in call.live() if p is not guest]
        roster = self._roster(call)
        for other in members:
            await self._send(other.node_id, roster)
        for other in members:
            try:
                await self._offer(call, other, join=True)
            except CallError as exc:
                self._drop(call, other, PartState.DROPPED, str(exc))
        call.successors = self._ranking(call)
        await self._announce(call, "relayed through this node")

    def _fitness(self) -> HostFitness:
        return HostFitness(
            max_rtt_ms=self._settings.fallback_rtt_ms,
            max_loss_pct=self._settings.fallback_loss_pct,
        )

    def _ranking(self, call: Call, excluding: frozenset[str] = frozenset()) -> list[str]:
        standings = {
            p.node_id: call.standings.get(p.node_id, UNKNOWN) for p in self._nodes(call, excluding)
        }
        return rank(
            standings,
            max_rtt_ms=self._settings.fallback_rtt_ms,
            max_loss_pct=self._settings.fallback_loss_pct,
        )

    async def _announce(self, call: Call, reason: str) -> None:
        """Tell every node in the call who hosts it, its shape and who comes next."""
        frame = CallHost(call.call_id, call.host, call.epoch, call.relayed,
                         tuple(call.successors[:16]), reason[:256])  # fmt: skip
        for part in self._nodes(call):
            if part.state is not PartState.INVITED:  # an invitee has no call yet
                await self._send(part.node_id, frame)
        if call.host == self._my_id:
            await self._offer_standby(call)

    # -- citizens' phones ------------------------------------------------------------

    async def _offer_standby(self, call: Call) -> None:
        """Host: the first successor keeps an invitation ready for each of our phones."""
        if not call.successors:
            return
        heir = call.successors[0]
        for part in call.live():
            guest = part.node_id
            if not is_guest(guest) or part.leg is None or call.standby_sent.get(guest) == heir:
                continue
            call.standby_sent[guest] = heir
            frame = CallGuestStandby(call.call_id, guest, self._guest_codes.get(guest, ""),
                                     secrets.token_urlsafe(24), call.case_id,
                                     self._guest_remote.get(guest, ""))  # fmt: skip
            await self._send(heir, frame)

    def _on_guest_standby(self, call: Call, sender: str, frame: CallGuestStandby) -> None:
        """Successor: keep an invitation ready for the host's phone; say where."""
        if sender != call.host or not is_guest(frame.guest_id) or self.guest_desk is None:
            return
        url = self.guest_desk.standby(call.call_id, frame.guest_id, frame.code, frame.token,
                                      frame.case_id, frame.remote)  # fmt: skip
        if url is None:
            return
        call.standby_guests.add(frame.guest_id)
        ready = CallGuestReady(call.call_id, frame.guest_id, url[:512])
        self._spawn(self._send_quietly(sender, ready), "guest standby")

    def _drop(self, call: Call, part: Participant, state: PartState, reason: str) -> None:
        super()._drop(call, part, state, reason)
        if call.host != self._my_id:
            return
        # A node that kept phones ready left: they have nowhere to go until the next
        # successor keeps them ready (the next ranking announces it).
        for guest, keeper in list(call.standby_sent.items()):
            if keeper == part.node_id:
                del call.standby_sent[guest]
                if self.guest_desk is not None:
                    self.guest_desk.backup_ready(guest, None)

    async def _send_quietly(self, node_id: str, frame: CallGuestReady) -> None:
        await self._send(node_id, frame)

    async def _send_roster(self, call: Call) -> None:
        """The host's roster, and who comes next (a member that just joined learns it)."""
        await super()._send_roster(call)
        if call.host == self._my_id and call.successors:
            await self._announce(call, "successors")

    # -- standing --------------------------------------------------------------------

    def _standing(self, call: Call) -> Standing:
        """This node's standing in ``call``: CPU headroom, worst link RTT, loss."""
        others = {p.node_id for p in self._nodes(call)}
        rtts = [r.rtt_ms for r in self._peers() if r.node_id in others and r.rtt_ms]
        loss = call.stats.get("loss_pct") or 0.0
        return Standing(
            cpu_free_pct=self._cpu_free,
            rtt_ms=min(round(max(rtts, default=0.0)), 600_000),
            loss_pct=min(round(float(loss)), 100),
        )

    async def _hosting_tick(self, call: Call, now: float) -> None:
        """Once a second: members report to the host; the host re-ranks and checks
        its own fitness (handing over when it stays unfit)."""
        self._cpu_free = self._cpu.free_pct()
        if call.ended or not call.relayed or call.state is not CallState.ACTIVE:
            return
        if call.host != self._my_id:
            if now - call.standing_at >= STANDING_INTERVAL:
                call.standing_at = now
                own = self._standing(call)
                await self._send(call.host, CallStanding(
                    call.call_id, own.cpu_free_pct, own.rtt_ms, own.loss_pct))  # fmt: skip
            return
        ranking = self._ranking(call)
        if ranking != call.successors:
            call.successors = ranking
            await self._announce(call, "successors")
        if call.fitness is None or not ranking:
            return
        own = self._standing(call)
        why = call.fitness.observe(own)
        best = call.standings.get(ranking[0], UNKNOWN)
        limits = {"max_rtt_ms": self._settings.fallback_rtt_ms,
                  "max_loss_pct": self._settings.fallback_loss_pct}  # fmt: skip
        if why is not None and better_host(own, best, **limits):
            new = call.participants[ranking[0]]
            log.warning("call %s: this host is struggling (%s); %s takes over",
                        call.call_id, why, new.name)  # fmt: skip
            call.epoch += 1
            call.host = new.node_id
            call.successors = [n for n in ranking if n != new.node_id] + [self._my_id]
            await self._announce(call, f"{self._me.name} handed over: {why}")
            await self._follow(call, new.node_id, relayed=True, old=self._my_id)

    def _on_standing(self, call: Call, sender: str, frame: CallStanding) -> None:
        if call.host == self._my_id:
            call.standings[sender] = Standing(frame.cpu_free_pct, frame.rtt_ms, frame.loss_pct)

    # -- handover --------------------------------------------------------------------

    async def _watch_hosts(self) -> None:
        """Give up a relayed call's host that has gone silent on media and link alike."""
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            now, wall = self._clock(), self._wall_ms()
            for call in list(self._calls.values()):
                if call.ended or not call.relayed or call.host == self._my_id:
                    continue
                host = call.participants.get(call.host)
                if host is None or host.state is not PartState.CONNECTED or host.leg is None:
                    continue
                record = next((r for r in self._peers() if r.node_id == call.host), None)
                seen = record.last_seen_ms if record is not None else None
                link_at = now - (wall - seen) / 1000 if seen is not None else None
                if host_silent(media_at=host.leg.last_media_at, link_at=link_at, now=now):
                    self._drop(call, host, PartState.DROPPED,
                               f"silent for {HOST_SILENCE:g} s (media and link)")  # fmt: skip

    def _next_hosts(self, call: Call, gone: frozenset[str]) -> list[str]:
        """Who may take over, in order: the announced successors still here, then the
        other nodes by id (the same order on every member)."""
        here = {p.node_id for p in self._nodes(call, gone)} | {self._my_id}
        ordered = [n for n in call.successors if n in here]
        return ordered + sorted(here - set(ordered))

    async def _host_lost(self, call: Call, host: Participant, why: str) -> None:
        """The host left or vanished: the first successor takes over."""
        if call.ended or call.host != host.node_id:
            return  # a new host announced itself meanwhile
        gone = frozenset({host.node_id})
        candidates = self._next_hosts(call, gone)
        phones = [g for g in call.standby_guests if g in call.participants]
        if call.state is CallState.RINGING or (len(candidates) < 2 and not phones):
            await self._end(call, f"the host {host.name} {why}; the call ends without it")
            return
        new = candidates[0]
        log.warning("call %s: the host %s %s; %s takes over", call.call_id, host.name, why,
                    "this node" if new == self._my_id else call.participants[new].name)  # fmt: skip
        if new == self._my_id:
            await self._take_over(call, host, why)
        else:
            self._spawn(self._await_host(call, host, new, call.epoch), "await new host")

    async def _await_host(self, call: Call, old: Participant, new: str, epoch: int) -> None:
        await asyncio.sleep(TAKEOVER_WAIT)
        if call.ended or call.epoch != epoch:
            return
        part = call.participants[new]
        log.warning("call %s: %s did not take over in %g s", call.call_id, part.name,
                    TAKEOVER_WAIT)  # fmt: skip
        call.successors = [n for n in call.successors if n != new]
        if part.state in (PartState.INVITED, PartState.CONNECTING, PartState.CONNECTED):
            part.state = PartState.DROPPED
        await self._host_lost(call, old, "is gone")

    async def _take_over(self, call: Call, old: Participant, why: str) -> None:
        gone = frozenset({old.node_id})
        for part in call.live():
            if not is_guest(part.node_id) or part.leg is not None:
                continue
            if part.node_id in call.standby_guests:
                # Its page reconnects here (moved, or told to): the call waits for it.
                part.state = PartState.INVITED
                self._spawn(self._guest_grace(call, part, f"{old.name} {why}"), "guest grace")
            else:
                # A citizen's phone ends at its desk: without it, it cannot be reached.
                part.state = PartState.LEFT
                log.warning("call %s: %s was connected through %s; it is cut off",
                            call.call_id, part.name, old.name)  # fmt: skip
        call.epoch += 1
        call.host = self._my_id
        relayed = self._needs_star(call, gone)
        call.relayed = relayed  # what the announcement says
        call.successors = self._ranking(call, gone)
        await self._announce(call, f"the host {old.name} {why}; {self._me.name} hosts")
        await self._follow(call, self._my_id, relayed=relayed, old=old.node_id)

    async def _on_host(self, call: Call, sender: str, frame: CallHost) -> None:
        """A host's announcement: a new host (higher epoch), or the current one's
        order of successors and shape."""
        if frame.epoch < call.epoch or (frame.epoch == call.epoch and sender != call.host):
            log.info("call %s: stale host announcement from %s ignored", call.call_id,
                     call.participants[sender].name)  # fmt: skip
            return
        known = frame.host == self._my_id or frame.host in call.participants
        if not known:
            return
        call.successors = [n for n in frame.successors if n != frame.host]
        if frame.epoch > call.epoch:
            call.epoch = frame.epoch
            who = (
                call.participants[frame.host].name
                if frame.host in call.participants
                else "this node"
            )
            log.info("call %s: %s hosts now (%s)", call.call_id, who, frame.reason)
            # A host that hands over announces it itself and stays (a successor); a
            # host the new one took over from is gone, whatever this node saw of it.
            old = call.host
            gone = sender != old and old not in frame.successors and old != self._my_id
            await self._follow(call, frame.host, relayed=frame.relayed, old=old, gone=gone)
        elif not frame.relayed and call.host != self._my_id:
            if call.relayed:
                log.info("call %s: back to a full mesh (%s)", call.call_id, frame.reason)
                call.meshed = False
            # Also when a member's mesh offer came first and made it a mesh here:
            # the legs this node offers are still to open.
            call.relayed = False
            await self._mesh_up(call)
        self._publish(call)

    async def _follow(
        self, call: Call, new: str, *, relayed: bool, old: str, gone: bool = False
    ) -> None:
        """Take ``new`` as the host: a star through it (legs only to it, which it
        offers), or a full mesh (legs to everyone). ``gone``: the old host is not in
        the call any more (the new host took over from it), so no leg goes to it."""
        was = call.participants.get(old)
        if was is not None and was.leg is not None:
            call.handover_mark = was.leg.last_media_at
            leg, was.leg = was.leg, None
            self._spawn(self._retire(leg), f"retire leg {was.name}")
        if old == self._my_id:
            forwarder = self._forwarders.pop(call.call_id, None)
            if forwarder is not None:
                forwarder.close()
            call.forwarding = {}
            call.fitness = None
        call.host = new
        call.meshed = False
        if gone and was is not None:
            self._drop(call, was, PartState.DROPPED, "gone: the new host took over from it")
        if new == self._my_id:
            call.handover_mark = None
            await self._become_host(call, relayed)
        elif relayed:
            call.relayed = True
            for part in call.participants.values():
                if part.node_id != new and part.leg is not None:
                    leg, part.leg = part.leg, None
                    self._spawn(self._retire(leg), f"retire leg {part.name}")
        else:
            call.relayed = False
            await self._mesh_up(call)
        self._publish(call)

    async def _become_host(self, call: Call, relayed: bool) -> None:
        call.fitness = self._fitness()
        call.standings.clear()
        if not relayed:
            call.relayed = False
            await self._mesh_up(call)
            return
        call.relayed = True
        self._forwarders[call.call_id] = Forwarder(
            self._relay, audio_only=call.audio_only or call.degraded
        )
        for part in self._nodes(call):
            try:
                await self._offer(call, part, join=True)
            except CallError as exc:
                self._drop(call, part, PartState.DROPPED, str(exc))
        await self._send_roster(call)

    # -- a full mesh again -----------------------------------------------------------

    async def _mesh_up(self, call: Call) -> None:
        """Open the legs a full mesh needs: to every node we have none with; the lower
        node id offers, so two members never offer each other at once."""
        for part in self._nodes(call):
            if part.leg is None and self._my_id < part.node_id:
                try:
                    await self._offer(call, part, join=True)
                except CallError as exc:
                    self._drop(call, part, PartState.DROPPED, str(exc))
        self._check_meshed(call)

    def _maybe_mesh(self, call: Call) -> None:
        """Host: a star down to a mesh's size (and no citizen) becomes a mesh again."""
        if call.relayed and call.host == self._my_id and not self._needs_star(call):
            log.info("call %s: %d nodes; back to a full mesh", call.call_id,
                     len(self._nodes(call)) + 1)  # fmt: skip
            call.relayed = False
            self._spawn(self._announce(call, "back to a full mesh"), "mesh again")

    def _check_meshed(self, call: Call) -> None:
        """Member: once every mesh leg is up, tell the host (it stops forwarding to us)."""
        if call.relayed or call.meshed or call.host == self._my_id or call.ended:
            return
        nodes = self._nodes(call)
        if all(p.leg is not None and p.leg.state == "connected" for p in nodes):
            call.meshed = True
            self._spawn(self._tell_meshed(call), "meshed")

    async def _tell_meshed(self, call: Call) -> None:
        await self._send(call.host, self._roster(call))

    def _on_member_roster(self, call: Call, sender: str) -> None:
        """Host of a call going back to a mesh: ``sender`` is meshed; stop forwarding
        to it (and close the forwarder when nobody needs it)."""
        forwarder = self._forwarders.get(call.call_id)
        if call.relayed or call.host != self._my_id or forwarder is None:
            return
        forwarder.forget(sender)
        if forwarder.targets:
            self._rewire(call)
            return
        self._forwarders.pop(call.call_id, None)
        forwarder.close()
        call.forwarding = {}
        log.info("call %s: every member is meshed; no more forwarding", call.call_id)
