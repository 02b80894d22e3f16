"""What a node knows about its peers: identities, addresses, link state.

Plain records; :class:`~meshdesk.net.mesh.LinkManager` owns and updates them and
the control socket reports them (``meshdesk peers --json``).
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field

from meshdesk.net.channel import PeerAddress

__all__ = ["SOURCE_RANK", "PeerRecord", "PeerState", "is_dialable"]


class PeerState(enum.StrEnum):
    LINKED = "linked"
    CONNECTING = "connecting"
    DOWN = "down"
    REFUSED = "refused"
    #: Sent malformed or forged frames: shut out for a while (see Quarantine).
    QUARANTINED = "quarantined"


#: When one address is learned several ways, the most trustworthy source is kept.
SOURCE_RANK = {"static": 0, "mdns": 1, "inbound": 2, "exchange": 3}


def is_dialable(host: str, port: int) -> bool:
    """Addresses learned from peers must be IP literals with a real port.

    A peer's word is never turned into a DNS lookup or a connection to port 0.
    """
    if not 1 <= port <= 65535:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return not (address.is_multicast or address.is_unspecified)


@dataclass(slots=True)
class PeerRecord:
    """One known peer node."""

    node_id: str
    name: str = ""
    site: str = ""
    role: str = ""
    #: address -> every way it was learned (static, mdns, exchange, inbound)
    addresses: dict[tuple[str, int], set[str]] = field(default_factory=dict)
    state: PeerState = PeerState.DOWN
    #: Wall-clock milliseconds of the last frame or sighting.
    last_seen_ms: int | None = None
    rtt_ms: float | None = None
    reason: str | None = None
    #: Address of a second running node with this identity that was refused (a copy).
    twin: str | None = None
    #: The peer's wall clock minus ours, in ms (from its pings); None if never linked.
    clock_offset_ms: int | None = None
    #: Malformed or forged frames it sent (each one cut the link; see Quarantine).
    offences: int = 0

    def learn(self, address: PeerAddress) -> bool:
        """Remember an address and how it was learned; True when that is new."""
        sources = self.addresses.setdefault((address.host, address.port), set())
        if address.source in sources:
            return False
        sources.add(address.source)
        return True

    def best_source(self, host: str, port: int) -> str:
        """The most trustworthy way ``host:port`` was learned (for gossip)."""
        return min(self.addresses[(host, port)], key=SOURCE_RANK.__getitem__)

    def sources(self) -> list[str]:
        """Every way this peer was found, most trustworthy first."""
        found = set().union(*self.addresses.values()) if self.addresses else set()
        return sorted(found, key=SOURCE_RANK.__getitem__)

    def to_json(self) -> dict[str, object]:
        return {
            "node_id": self.node_id,
            "name": self.name,
            "site": self.site,
            "role": self.role,
            "addresses": [
                str(PeerAddress(host, port, self.best_source(host, port)))
                for host, port in sorted(self.addresses)
            ],
            "found_by": self.sources(),
            "state": str(self.state),
            "last_seen_ms": self.last_seen_ms,
            "rtt_ms": None if self.rtt_ms is None else round(self.rtt_ms, 3),
            "reason": self.reason,
            "twin": self.twin,
            "clock_offset_ms": self.clock_offset_ms,
            "offences": self.offences,
        }
