"""Node operations: status, peers, sync progress, store digest, directory,
revocation reload, and ``subscribe`` (the event stream).

Their context is the running node, seen through :class:`NodeParts` (the parts
these handlers read), so this module does not import :mod:`meshdesk.node`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from meshdesk._version import __version__
from meshdesk.clock import ClockWatch
from meshdesk.ops._registry import Topic
from meshdesk.ops._schema import Args, texts
from meshdesk.store import digest_of
from meshdesk.web.desk import CitizenDesk

if TYPE_CHECKING:
    from meshdesk.directory import Directory
    from meshdesk.identity import NodeKit
    from meshdesk.net.mesh import LinkManager
    from meshdesk.net.tls import TlsListener
    from meshdesk.store import Store
    from meshdesk.sync.driver import SyncService

__all__ = ["MAX_KINDS", "MAX_KIND_LEN", "NODE_OPS", "NodeParts"]

#: Most event kinds one subscription may name, and the longest kind name.
MAX_KINDS = 32
MAX_KIND_LEN = 32


class NodeParts(Protocol):
    """What the node operations read of a running :class:`~meshdesk.node.Node`."""

    @property
    def kit(self) -> NodeKit: ...

    @property
    def store(self) -> Store: ...

    @property
    def manager(self) -> LinkManager: ...

    @property
    def listener(self) -> TlsListener: ...

    @property
    def directory(self) -> Directory: ...

    @property
    def sync(self) -> SyncService: ...

    @property
    def uptime_s(self) -> float: ...

    @property
    def clock(self) -> ClockWatch: ...

    @property
    def citizens(self) -> CitizenDesk: ...


NODE_OPS: Topic[NodeParts] = Topic("node", "the running node")


@NODE_OPS.op("status", "this node's identity, uptime, links and store counts")
async def _status(node: NodeParts, args: Args) -> object:
    counts = await node.store.counts()
    peers = node.manager.peers()
    return {
        **node.kit.info.to_json(),
        "deployment_id": str(node.kit.deployment_id),
        "version": __version__,
        "running": True,
        "uptime_s": round(node.uptime_s, 1),
        "listen_port": node.listener.port,
        "peers_known": len(peers),
        "peers_linked": sum(1 for p in peers if p.state == "linked"),
        "store": {"events": counts.events, "authors": counts.authors, "cases": counts.cases},
        "clock": node.clock.view.to_json(),
        "web": {"port": node.citizens.port, "unavailable": node.citizens.unavailable},
    }


@NODE_OPS.op("peers", "every peer this node knows: addresses, how found, link state")
async def _peers(node: NodeParts, args: Args) -> object:
    return [record.to_json() for record in node.manager.peers()]


@NODE_OPS.op("directory", "every node of the deployment with a valid certificate")
async def _directory(node: NodeParts, args: Args) -> object:
    return [info.to_json() for info in await node.directory.nodes()]


@NODE_OPS.op("sync", "per linked peer: outbox, inbox, events sent/received, last exchange")
async def _sync(node: NodeParts, args: Args) -> object:
    return node.sync.progress()


@NODE_OPS.op("digest", "SHA-256 over every stored (author, seq, hash), the event count, each head")
async def _digest(node: NodeParts, args: Args) -> object:
    entries = await node.store.event_hashes()
    heads: dict[str, int] = {}
    for author, seq, _hash in entries:
        heads[author] = max(heads.get(author, 0), seq)
    return {"digest": digest_of(entries), "events": len(entries), "heads": heads}


@NODE_OPS.op("reload_revocations", "adopt the revocation list in the store if it is newer")
async def _reload_revocations(node: NodeParts, args: Args) -> object:
    return await node.directory.reload_revocations()


NODE_OPS.stream(
    "subscribe",
    "stream the node's events (one JSON line each) until the client hangs up",
    texts(
        "kinds",
        "event kinds to stream (null: all)",
        min_items=1,
        max_items=MAX_KINDS,
        max_len=MAX_KIND_LEN,
        default=None,
    ),
)
