"""Which network interfaces a node announces itself on and listens for peers.

mDNS must be bound to chosen interfaces, never to "all": on a multi-homed laptop
"all" makes zeroconf answer with addresses of the wrong network and echo its own
packets (python-zeroconf #54, #330). So the choice is always an explicit list:
the interfaces named in ``network.interfaces``, or, when none are named, every
interface that is up, is not loopback, can multicast and has an IPv4 address.

The system is read through two small callables so that the selection rules can be
tested with fake adapters: ``ifaddr`` for addresses and ``/sys/class/net`` for the
interface state (on a system without ``/sys`` every interface counts as up).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import ifaddr

from meshdesk.errors import ConfigError

__all__ = ["Interface", "read_sys_net", "select_interfaces"]

# Bits of ``/sys/class/net/NAME/flags`` (``dev->flags``; IFF_RUNNING is not in it).
_IFF_UP = 0x1
_IFF_LOOPBACK = 0x8
_IFF_MULTICAST = 0x1000
#: ``operstate`` values of an interface that can carry traffic; virtual interfaces
#: without carrier detection (dummy, some tunnels, ``lo``) report "unknown".
_OPER_UP = frozenset({"up", "unknown"})

#: Reads one attribute of ``/sys/class/net/NAME/``; ``None`` when it cannot be read.
SysReader = Callable[[str, str], str | None]
#: Lists the system's adapters (``ifaddr.get_adapters`` or a fake for tests).
AdapterLister = Callable[[], Iterable[ifaddr.Adapter]]


@dataclass(frozen=True, slots=True)
class Interface:
    """A network interface chosen for discovery, with its IPv4 addresses."""

    name: str
    ipv4: tuple[str, ...]


def read_sys_net(name: str, attr: str, root: Path = Path("/sys/class/net")) -> str | None:
    """Read ``/sys/class/net/NAME/ATTR`` stripped, or ``None`` if it cannot be read."""
    try:
        return (root / name / attr).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None


def _ipv4_of(adapter: ifaddr.Adapter) -> tuple[str, ...]:
    """The adapter's usable IPv4 addresses in system order, deduplicated."""
    found: dict[str, None] = {}
    for ip in adapter.ips:
        if not isinstance(ip.ip, str):  # IPv6 entries are (address, flowinfo, scope) tuples
            continue
        try:
            addr = ipaddress.IPv4Address(ip.ip)
        except ValueError:
            continue
        # 169.254/16 stays: an offline LAN without DHCP runs on link-local addresses.
        if not (addr.is_unspecified or addr.is_multicast):
            found[str(addr)] = None
    return tuple(found)


def _flags(name: str, read_sys: SysReader) -> int | None:
    text = read_sys(name, "flags")
    if text is None:
        return None
    try:
        return int(text, 16)
    except ValueError:
        return None


def _is_loopback(ipv4: tuple[str, ...], flags: int | None) -> bool:
    if flags is not None:
        return bool(flags & _IFF_LOOPBACK)
    # No /sys (not Linux): judge by the addresses.
    return bool(ipv4) and all(ipaddress.IPv4Address(a).is_loopback for a in ipv4)


def _is_usable(name: str, flags: int | None, read_sys: SysReader) -> bool:
    """Up (administratively and with carrier) and able to multicast."""
    if flags is None:
        return True  # nothing to go by; ifaddr only lists configured interfaces
    if not flags & _IFF_UP or not flags & _IFF_MULTICAST:
        return False
    state = read_sys(name, "operstate")
    return state is None or state in _OPER_UP


def select_interfaces(
    names: Sequence[str],
    *,
    adapters: AdapterLister = ifaddr.get_adapters,
    read_sys: SysReader = read_sys_net,
) -> list[Interface]:
    """Choose the interfaces discovery binds to.

    Args:
        names: interface names from ``network.interfaces``; empty means automatic.
        adapters: lists the system's adapters (injectable for tests).
        read_sys: reads ``/sys/class/net/NAME/ATTR`` (injectable for tests).

    Returns:
        With ``names``: exactly those interfaces, in that order (whatever their
        state: the operator asked for them). Without: every interface that is up,
        not loopback, multicast-capable and has an IPv4 address, sorted by name.
        Possibly empty (a laptop with no network yet).

    Raises:
        ConfigError: a named interface does not exist or has no IPv4 address.
    """
    by_name: dict[str, tuple[str, ...]] = {}
    for adapter in adapters():
        known = by_name.get(adapter.name, ())
        by_name[adapter.name] = known + tuple(a for a in _ipv4_of(adapter) if a not in known)

    if not names:
        chosen = []
        for name in sorted(by_name):
            ipv4 = by_name[name]
            flags = _flags(name, read_sys)
            if ipv4 and not _is_loopback(ipv4, flags) and _is_usable(name, flags, read_sys):
                chosen.append(Interface(name, ipv4))
        return chosen

    available = ", ".join(
        sorted(
            name
            for name, ipv4 in by_name.items()
            if ipv4 and not _is_loopback(ipv4, _flags(name, read_sys))
        )
    )
    hint = f" (available: {available})" if available else " (no interface has an IPv4 address)"
    chosen = []
    for name in dict.fromkeys(names):
        if name not in by_name:
            raise ConfigError(f"interface '{name}' does not exist{hint}")
        if not by_name[name]:
            raise ConfigError(f"interface '{name}' has no IPv4 address{hint}")
        chosen.append(Interface(name, by_name[name]))
    return chosen
