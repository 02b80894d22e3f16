"""The web port's certificate: a leaf naming this laptop's current addresses.

The node's web sub-CA (from its kit, :mod:`meshdesk.identity.webpki`) signs a fresh
ECDSA P-256 leaf whenever the addresses change (a new Wi-Fi, a cable, DHCP) or the
leaf nears its end; the TLS context loads the new chain at once, so the next
connection gets it. The leaf's key is written 0600 under ``HOME/web/`` and is never
reused across renewals.
"""

from __future__ import annotations

import datetime as dt
import logging
import ssl
from collections.abc import Callable, Sequence

from cryptography.hazmat.primitives import serialization

from meshdesk._fs import ensure_private_dir, write_private
from meshdesk.errors import ConfigError, HomeError
from meshdesk.home import NodeHome
from meshdesk.identity.webpki import LEAF_VALIDITY, WebSubCA, leaf_addresses
from meshdesk.net.interfaces import select_interfaces

__all__ = ["LeafKeeper", "local_addresses"]

log = logging.getLogger("meshdesk.web")

#: Renew a leaf this long before it ends, whatever the addresses do.
_RENEW_BEFORE = LEAF_VALIDITY / 3


def local_addresses(listen_host: str, interfaces: Sequence[str]) -> list[str]:
    """The addresses phones may reach the web port on, best first.

    A specific listen address is the only one; otherwise every up IPv4 interface's
    (``network.interfaces`` when named), then loopback.
    """
    if listen_host not in ("0.0.0.0", "::", ""):
        return [listen_host]
    found: list[str] = []
    try:
        for interface in select_interfaces(interfaces):
            found.extend(a for a in interface.ipv4 if a not in found)
    except ConfigError as exc:
        log.warning("web: %s; the certificate names loopback only", exc)
    return [*found, "127.0.0.1"]


class LeafKeeper:
    """Keeps ``HOME/web/leaf.pem`` (leaf + sub-CA) and its key current; owns the SSL context."""

    def __init__(
        self,
        home: NodeHome,
        subca: WebSubCA,
        addresses: Callable[[], list[str]],
        *,
        now: Callable[[], dt.datetime],
    ) -> None:
        self._home = home
        self._subca = subca
        self._addresses = addresses
        self._now = now
        self.names: list[str] = []
        self.not_after: dt.datetime | None = None
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2

    @property
    def chain_path(self) -> str:
        return str(self._home.web_dir / "leaf.pem")

    @property
    def key_path(self) -> str:
        return str(self._home.web_dir / "leaf.key")

    def refresh(self) -> bool:
        """Issue a new leaf if the addresses changed or the leaf is old; True if it did.

        Raises:
            HomeError: the leaf cannot be written.
        """
        names = leaf_addresses(self._addresses())
        now = self._now()
        due = self.not_after is None or now >= self.not_after - _RENEW_BEFORE
        if names == self.names and not due:
            return False
        key, cert = self._subca.issue_leaf(names, now=now)
        chain = cert.public_bytes(serialization.Encoding.PEM) + self._subca.cert_pem()
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        try:
            ensure_private_dir(self._home.web_dir)
            write_private(self._home.web_dir / "leaf.key", key_pem, overwrite=True)
            write_private(self._home.web_dir / "leaf.pem", chain, overwrite=True)
            self.context.load_cert_chain(self.chain_path, self.key_path)
        except (OSError, ssl.SSLError) as exc:
            where = self._home.web_dir
            raise HomeError(f"cannot write the web certificate in {where}: {exc}") from exc
        if self.names:
            log.info("web: addresses changed to %s; new certificate", ", ".join(names))
        self.names = names
        self.not_after = cert.not_valid_after_utc
        return True
