"""ICE the way a call between two linked nodes needs it: on the link's interface only.

One adjustment to aioice, installed once by :func:`install` (the same way
:mod:`meshdesk.calls.codecs` adjusts aiortc's encoders) the first time a leg makes
an offer or answer (the bench's raw aiortc baseline runs in a process without it),
and in effect only inside :func:`only_addresses`:

- **Gather on the link's interface only.** The link to the peer already proved which
  local address reaches it; :func:`local_address_towards` finds that address (a
  UDP ``connect``, which sends nothing), and inside :func:`only_addresses` aioice's
  host-candidate list is narrowed to it. Fewer candidates, fewer pairs to check,
  and media rides the network the authenticated link uses (a laptop's docker or VPN
  addresses are never offered). If the address is not among the host's (or cannot
  be found) every address is offered, as before.

aioice's 20 ms check pacing is left alone: trimming its last idle wait saved
~20 ms per setup but meant patching a private method, not worth it at ~100 ms.
"""

from __future__ import annotations

import contextlib
import contextvars
import ipaddress
import logging
import socket
from collections.abc import Callable, Iterator, Sequence

import aioice.ice as _ice

__all__ = ["install", "local_address_towards", "only_addresses"]

log = logging.getLogger(__name__)

_addresses: contextvars.ContextVar[tuple[str, ...] | None] = contextvars.ContextVar(
    "meshdesk_ice_addresses", default=None
)
_original_host_addresses: Callable[[bool, bool], list[str]] | None = None


def local_address_towards(remote: str) -> str | None:
    """The local address the kernel routes to ``remote`` (``host:port`` or a bare host)."""
    host = remote
    if host.startswith("["):
        host = host[1 : host.index("]")]
    elif host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((str(ip), 9))  # UDP connect: picks a route, sends nothing
            local = probe.getsockname()[0]
    except OSError as exc:
        log.debug("no route to %s for ICE: %s", host, exc)
        return None
    return str(local)


@contextlib.contextmanager
def only_addresses(addresses: Sequence[str] | None) -> Iterator[None]:
    """Inside this block (and tasks started in it) ICE gathers only ``addresses``."""
    install()
    token = _addresses.set(tuple(addresses) if addresses else None)
    try:
        yield
    finally:
        _addresses.reset(token)


def _host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    assert _original_host_addresses is not None
    every = _original_host_addresses(use_ipv4, use_ipv6)
    wanted = _addresses.get()
    if not wanted:
        return every
    chosen = [address for address in every if address in wanted]
    return chosen or every


def install() -> None:
    """Patch aioice once (idempotent); see the module docstring."""
    global _original_host_addresses
    if _original_host_addresses is None:
        _original_host_addresses = _ice.get_host_addresses
        _ice.get_host_addresses = _host_addresses
