"""A city HQ's part of the hub: its supervised leaf node and the feed publisher.

:func:`start_city_feed` is the one call the node makes: with ``[hub] enabled`` on
an HQ node it starts the leaf node (configuration written into ``<home>/hub/leaf``,
JetStream data under it, output in the node's log, restarted when it dies) and the
:class:`~meshdesk.hub.publisher.FeedPublisher`, both stopped with the node. The hub
credential is the one ``meshdesk hub join`` wrote into ``<home>/hub``
(:mod:`meshdesk.prefecture.city`), checked against the pinned prefecture CA at
every start; the feed's city name and hub URLs come from it unless ``[hub] city`` or
``hub_urls`` say otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from pathlib import Path
from typing import Protocol

from meshdesk._lifecycle import cancel_and_wait
from meshdesk.cases.book import CaseBook
from meshdesk.config import Config
from meshdesk.errors import AuthError, ConfigError, HomeError
from meshdesk.home import NodeHome
from meshdesk.hub.natsconf import TlsFiles, leaf_config
from meshdesk.hub.publisher import FeedPublisher, SealedOf
from meshdesk.hub.server import NatsServer
from meshdesk.identity import NodeKit, Role
from meshdesk.prefecture.city import CityHubFiles, load_city_hub
from meshdesk.store import Store

__all__ = ["CityFeed", "FeedHost", "hub_folder", "hub_tls", "start_city_feed"]

log = logging.getLogger("meshdesk.hub")


def hub_folder(home: NodeHome) -> Path:
    """Where a node keeps its hub credential (:class:`CityHubFiles`) and its leaf node."""
    return CityHubFiles.of(home).dir


def hub_tls(home: NodeHome) -> TlsFiles:
    """The city's side of the leaf link: the credential ``meshdesk hub join`` wrote."""
    files = CityHubFiles.of(home)
    return TlsFiles(files.cert_path, files.key_path, files.ca_path)


class FeedHost(Protocol):
    """The parts of a node the feed uses (:class:`meshdesk.node.Node`)."""

    @property
    def home(self) -> NodeHome: ...
    @property
    def config(self) -> Config: ...
    @property
    def kit(self) -> NodeKit: ...
    @property
    def store(self) -> Store: ...
    @property
    def cases(self) -> CaseBook: ...


class CityFeed:
    """The running leaf node and publisher of one city HQ."""

    def __init__(self, leaf: NatsServer, publisher: FeedPublisher) -> None:
        self.leaf = leaf
        self.publisher = publisher

    def stored(self) -> None:
        """The node stored events (a local write, or a run from a peer or a bundle):
        the publisher looks for them now. Its poll (``[hub] poll_interval``) stays as
        the fallback."""
        self.publisher.wake()


async def start_city_feed(stack: contextlib.AsyncExitStack, node: FeedHost) -> CityFeed | None:
    """Start the hub feed when the node's config enables it on an HQ node (else None);
    ``stack`` stops it.

    A missing credential or nats-server, or a leaf node that does not start, is
    logged as an error: the HQ serves its city without the feed.
    """
    hub, home, store, cases = node.config.hub, node.home, node.store, node.cases
    if not hub.enabled:
        return None
    if node.kit.info.role is not Role.HQ:
        log.warning("[hub] is enabled, but only an HQ node feeds the prefecture: off here")
        return None
    try:  # the credential `meshdesk hub join` wrote, checked against the pinned CA
        credential = load_city_hub(home, now=dt.datetime.now(dt.UTC))
    except (HomeError, AuthError) as exc:  # the node serves its city all the same
        log.error("[hub] is enabled but %s; no feed until the node restarts with it", exc)
        return None
    city = hub.city or credential.city_code
    urls = hub.hub_urls or credential.urls
    folder = hub_folder(home) / "leaf"
    host, port = hub.leaf_listen.host, hub.leaf_listen.port
    try:
        text = leaf_config(city=city, host=host, port=port, store_dir=folder / "jetstream",
                           hub_urls=urls, tls=hub_tls(home))  # fmt: skip
        leaf = NatsServer(f"leaf {city}", folder, text, host=host, port=port,
                          restart_delay=hub.restart_delay)  # fmt: skip
        await stack.enter_async_context(leaf)
    except (ConfigError, ValueError) as exc:
        log.error("no hub feed: %s", exc)
        return None
    publisher = FeedPublisher(
        store,
        city,
        leaf.url,
        _sealed_of(cases),
        batch=hub.batch,
        poll_interval=hub.poll_interval,
        retry_delay=hub.restart_delay,
    )
    task = asyncio.create_task(publisher.run(), name=f"hub feed {city}")
    stack.push_async_callback(cancel_and_wait, task)
    log.info("hub feed of %s: leaf node on %s, hub %s", city, leaf.url,
             ", ".join(urls) or "not set")  # fmt: skip
    return CityFeed(leaf, publisher)


def _sealed_of(cases: CaseBook) -> SealedOf:
    async def sealed(case_id: str) -> bytes | None:
        return (await cases.state(case_id)).personal_sealed

    return sealed
