"""Finding peers: mDNS/DNS-SD on chosen interfaces, and static addresses from config.

A :class:`ZeroconfDiscovery` announces this node as ``_meshdesk._tcp.local.`` and
browses for the others at the same time. Browsing starts *before* the node's own
name probing (RFC 6762 §8.1, ≈ 1 s), because a fresh browser sees the services
already on the LAN within ≈ 0.1 s: a new node dials its peers long before its own
announcement is out. Sightings arrive through the ``on_found``/``on_lost``
callbacks given at construction, and may arrive while ``__aenter__`` is still
probing.

Anyone on the LAN can announce anything: a sighting is only a hint of where to
dial. The TLS link proves which node answered (and must match ``node_id``).
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, Self

from zeroconf import Error as ZeroconfError
from zeroconf import (
    IPVersion,
    NonUniqueNameException,
    ServiceInfo,
    ServiceStateChange,
    Zeroconf,
)
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from meshdesk._lifecycle import AsyncResource
from meshdesk.config import Endpoint
from meshdesk.errors import ConfigError, LinkError
from meshdesk.identity import NodeId, NodeInfo
from meshdesk.net._mdns import (
    SERVICE_TYPE,
    AnswerListener,
    BadAdvert,
    build_txt,
    dialable_ipv4,
    host_name,
    instance_name,
    parse_txt,
    service_query,
)
from meshdesk.net.channel import PeerAddress
from meshdesk.net.interfaces import Interface

__all__ = [
    "SERVICE_TYPE",
    "Discovery",
    "Sighting",
    "StaticDiscovery",
    "ZeroconfDiscovery",
]

log = logging.getLogger(__name__)

#: Remember at most this many odd services so each is warned about once.
_WARNED_MAX = 1024


@dataclass(frozen=True, slots=True)
class Sighting:
    """A peer seen on the network: who it says it is and where to dial it."""

    node_id: NodeId
    name: str
    site: str
    role: str
    proto: int
    addresses: tuple[PeerAddress, ...]


class Discovery(Protocol):
    """A source of peer addresses, alive between ``__aenter__`` and ``aclose()``."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def refresh(self) -> None:
        """Look again now (a link dropped: find the peer's current address fast)."""
        ...

    async def aclose(self) -> None:
        """Stop, say goodbye where that means something; idempotent."""
        ...


class _State(enum.Enum):
    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    CLOSED = "closed"


class StaticDiscovery(AsyncResource):
    """Peers listed in ``network.static_peers``: fixed addresses, no network traffic.

    Static peers have no node ID until a link to them is verified, so there are no
    sightings; the link manager dials :attr:`addresses` and retries with backoff.
    """

    def __init__(self, endpoints: Iterable[Endpoint]) -> None:
        unique = dict.fromkeys(endpoints)
        self.addresses: tuple[PeerAddress, ...] = tuple(
            PeerAddress(e.host, e.port, "static") for e in unique
        )

    async def __aenter__(self) -> Self:
        return self

    async def refresh(self) -> None:
        """Nothing to look up: the addresses are fixed."""

    async def aclose(self) -> None:
        """Nothing to close."""


class ZeroconfDiscovery(AsyncResource):
    """Announce this node and browse for peers with python-zeroconf (IPv4 only).

    Args:
        info: this node's identity (its ID is announced and its own service ignored).
        port: the TCP port the node's TLS listener accepts links on.
        interfaces: the interfaces to bind mDNS to (see ``select_interfaces``); each
            IPv4 address is bound explicitly, never "all interfaces".
        on_found: called in the event loop with each new or changed sighting, and
            again for every peer that answers a :meth:`refresh`.
        on_lost: called with a node ID when its service is withdrawn (goodbye) or
            expires.
        proto: the link protocol version announced in TXT.
        resolve_timeout: seconds to wait for a new service's SRV/TXT/A records.
        refresh_window: seconds :meth:`refresh` listens for answers.

    ``on_found`` may be called before ``__aenter__`` returns: browsing starts first.
    Callbacks run in the event loop and must not block; an exception they raise is
    logged, not propagated.

    Raises:
        ConfigError: no interface with an IPv4 address was given.
        ValueError: ``port`` or a timing is out of range.
    """

    def __init__(
        self,
        info: NodeInfo,
        port: int,
        interfaces: list[Interface],
        *,
        on_found: Callable[[Sighting], None],
        on_lost: Callable[[NodeId], None],
        proto: int = 1,
        resolve_timeout: float = 3.0,
        refresh_window: float = 1.0,
        refresh_every: float | None = None,
    ) -> None:
        if not 1 <= port <= 65535:
            raise ValueError(f"port must be 1..65535, got {port}")
        if not (resolve_timeout > 0 and refresh_window > 0):
            raise ValueError("resolve_timeout and refresh_window must be > 0")
        self._addresses = list(dict.fromkeys(a for i in interfaces for a in i.ipv4))
        if not self._addresses:
            raise ConfigError(
                "no network interface with an IPv4 address to announce this node on "
                "(connect to the network, or set network.interfaces)"
            )
        self.info = info
        self.port = port
        self.interfaces = tuple(interfaces)
        self._on_found = on_found
        self._on_lost = on_lost
        self._resolve_timeout = resolve_timeout
        self._refresh_window = refresh_window
        self._refresh_every = refresh_every
        self.instance = instance_name(info)
        self._service = ServiceInfo(
            SERVICE_TYPE,
            f"{self.instance}.{SERVICE_TYPE}",
            port=port,
            properties=build_txt(info, port=port, proto=proto),
            server=host_name(info.node_id),
            parsed_addresses=self._addresses,
        )
        self._own_key = self._service.name.lower()
        self._state = _State.NEW
        self._aiozc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._tasks: set[asyncio.Future[Any]] = set()
        self._resolving: dict[str, asyncio.Task[None]] = {}
        self._forced: set[str] = set()  # names to report even if unchanged (refresh)
        self._sightings: dict[str, Sighting] = {}  # by service name (lower case)
        self._warned: set[str] = set()
        self._closing: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        """Start browsing, then register (probe the name); returns when both are up.

        Raises:
            LinkError: mDNS sockets cannot be opened on the interfaces, or another
                responder already holds this node's name (the same node twice).
        """
        if self._state is not _State.NEW:
            raise RuntimeError(f"ZeroconfDiscovery cannot be started when {self._state.value}")
        self._state = _State.STARTING
        try:
            await self._start()
        except BaseException:
            await self.aclose()
            raise
        self._state = _State.RUNNING
        return self

    async def _start(self) -> None:
        where = ", ".join(self._addresses)
        try:
            self._aiozc = AsyncZeroconf(interfaces=self._addresses, ip_version=IPVersion.V4Only)
        except OSError as exc:
            raise LinkError(f"cannot open mDNS on {where}: {exc.strerror or exc}") from exc
        zc = self._aiozc.zeroconf
        # Browse first: peers answer within ~0.1 s, our own probing takes ~1 s.
        self._browser = AsyncServiceBrowser(zc, SERVICE_TYPE, handlers=[self._on_state_change])
        log.debug("mDNS browsing %s on %s", SERVICE_TYPE, where)
        try:
            announce = await self._aiozc.async_register_service(self._service)
        except NonUniqueNameException:
            raise LinkError(
                f"another node already announces '{self.instance}' on this network: "
                f"is node {self.info.node_id} running twice?"
            ) from None
        announcing = asyncio.ensure_future(announce)
        if self._state is _State.CLOSED:  # aclose() ran while we were probing
            announcing.cancel()
            raise LinkError("mDNS discovery was closed while it was starting")
        # Probing is over and the records are answered; the announcements go on.
        self._track(announcing)
        log.debug("mDNS registered %r on %s", self._service.name, where)
        if self._refresh_every is not None:
            self._spawn(self._refresh_forever(self._refresh_every))

    async def aclose(self) -> None:
        """Stop browsing, send the mDNS goodbye and close the sockets; idempotent."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close())
        # A cancelled caller must not cancel the goodbye half-way for everybody.
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        registered = self._state is _State.RUNNING
        self._state = _State.CLOSED
        if self._browser is not None:
            await self._browser.async_cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._aiozc is None:
            return
        try:
            if registered:
                goodbye = await self._aiozc.async_unregister_service(self._service)
                await goodbye
        except ZeroconfError as exc:
            log.debug("mDNS goodbye failed: %s", exc)
        finally:
            await self._aiozc.async_close()

    # -- refresh -----------------------------------------------------------------------

    async def refresh(self) -> None:
        """Ask the network again now, bypassing the cache.

        Every peer that answers within ``refresh_window`` is reported through
        ``on_found`` again, even when nothing changed; new peers too. A peer that
        stays silent is not declared lost here: mDNS silence is no proof, links have
        their own heartbeat.
        """
        if self._state is not _State.RUNNING or self._aiozc is None:
            return
        zc = self._aiozc.zeroconf
        listener = AnswerListener(lambda name: self._resolve_later(name, force=True))
        zc.async_add_listener(listener, None)
        try:
            zc.async_send(service_query())  # no known answers: every responder replies
            await asyncio.sleep(self._refresh_window)
        finally:
            zc.async_remove_listener(listener)

    async def _refresh_forever(self, every: float) -> None:
        """Ask again every ``every`` s: zeroconf's own queries back off towards an
        hour, so a laptop that comes into reach later would wait that long."""
        while True:
            await asyncio.sleep(every)
            try:
                await self.refresh()
            except OSError as exc:  # no route or interface right now: try next time
                log.info("mDNS refresh failed: %s", exc)

    # -- browsing (runs in the event loop; must never raise) -------------------------------

    def _on_state_change(
        self,
        zeroconf: Zeroconf,
        service_type: str,
        name: str,
        state_change: ServiceStateChange,
    ) -> None:
        """python-zeroconf's browser callback: sync, so hand the work to a task."""
        if self._state is _State.CLOSED or name.lower() == self._own_key:
            return
        if state_change is ServiceStateChange.Removed:
            self._forget(name)
        else:  # Added, Updated (new address, TXT or port)
            self._resolve_later(name, force=False)

    def _track(self, future: asyncio.Future[Any]) -> None:
        self._tasks.add(future)
        future.add_done_callback(self._tasks.discard)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._track(task)
        task.add_done_callback(_log_failure)
        return task

    def _resolve_later(self, name: str, *, force: bool) -> None:
        if self._state is _State.CLOSED or name.lower() == self._own_key:
            return
        key = name.lower()
        if force:
            self._forced.add(key)
        previous = self._resolving.pop(key, None)
        if previous is not None:
            previous.cancel()  # the newer event reads the newer records
        task = self._spawn(self._resolve(name))
        self._resolving[key] = task
        task.add_done_callback(self._resolved)

    def _resolved(self, task: asyncio.Task[None]) -> None:
        for key, pending in list(self._resolving.items()):
            if pending is task:
                del self._resolving[key]

    async def _resolve(self, name: str) -> None:
        assert self._aiozc is not None
        try:
            service = AsyncServiceInfo(SERVICE_TYPE, name)
            complete = await service.async_request(
                self._aiozc.zeroconf, self._resolve_timeout * 1000
            )
        except (ZeroconfError, ValueError) as exc:  # a name python-zeroconf refuses
            self._warn_once(name.lower(), f"cannot resolve mDNS service {name!r}: {exc}")
            return
        if not complete:
            log.debug("mDNS: %r did not answer within %.1f s", name, self._resolve_timeout)
            return
        self._update(name, service)

    def _update(self, name: str, service: ServiceInfo) -> None:
        """Turn a resolved service into a sighting and report it if it is news."""
        key = name.lower()
        try:
            sighting = self._sighting(service)
        except BadAdvert as exc:
            self._warn_once(key, f"ignoring mDNS service {name!r}: {exc}")
            return
        if sighting is None:  # ourselves, under another name
            return
        self._warned.discard(key)
        old = self._sightings.get(key)
        self._sightings[key] = sighting
        if old is not None and old.node_id != sighting.node_id:
            self._lost_if_gone(old.node_id)
        if key in self._forced or old != sighting:
            self._forced.discard(key)
            _call(self._on_found, sighting)

    def _sighting(self, service: ServiceInfo) -> Sighting | None:
        advert = parse_txt(service.properties, srv_port=service.port)
        if advert.node_id == self.info.node_id:
            return None
        hosts = dialable_ipv4(service.parsed_addresses(IPVersion.V4Only))
        if not hosts:
            raise BadAdvert("no IPv4 address to dial")
        return Sighting(
            node_id=advert.node_id,
            name=advert.name,
            site=advert.site,
            role=advert.role,
            proto=advert.proto,
            addresses=tuple(PeerAddress(h, advert.port, "mdns") for h in hosts),
        )

    def _forget(self, name: str) -> None:
        key = name.lower()
        pending = self._resolving.pop(key, None)
        if pending is not None:
            pending.cancel()
        self._warned.discard(key)
        self._forced.discard(key)
        old = self._sightings.pop(key, None)
        if old is not None:
            self._lost_if_gone(old.node_id)

    def _lost_if_gone(self, node_id: NodeId) -> None:
        if all(s.node_id != node_id for s in self._sightings.values()):
            _call(self._on_lost, node_id)

    def _warn_once(self, key: str, message: str) -> None:
        if key in self._warned:
            log.debug("%s", message)
            return
        if len(self._warned) < _WARNED_MAX:
            self._warned.add(key)
        log.warning("%s", message)


def _call(callback: Callable[[Any], None], arg: object) -> None:
    """Run a user callback; its bug must not stop discovery."""
    try:
        callback(arg)
    except Exception:
        log.exception("discovery callback %r failed", callback)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("mDNS task failed", exc_info=exc)
