"""A node's home folder: where its identity, config and database live.

::

    HOME/                 0700
      config.toml         settings (see meshdesk.config)
      identity/           0700
        node.key          0600  Ed25519 private key (PKCS#8 PEM)
        sealing.key       0600  X25519 private key that opens sealed personal data
        node.crt          node certificate (PEM)
        ca.crt            deployment CA certificate (PEM)
        ca.key            0600  CA private key — only on the HQ node that created it
        web-ca.crt        the deployment's web CA certificate (ECDSA P-256)
        web-ca.key        0600  web CA private key — only on the HQ node that created it
        web-subca.crt     this node's web sub-CA (signs its HTTPS leaf)
        web-subca.key     0600  its private key
      web/                0700  the HTTPS leaf for citizens' phones (renewed by the node)
      store.db            0600  SQLite database (WAL)
      control.sock        0600  local control socket while the node runs

The home is chosen by ``--home``, else ``$MESHDESK_HOME``, else the platform's
user data folder.
"""

from __future__ import annotations

import datetime as dt
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from meshdesk._fs import ensure_private_dir, resolve_home, write_private
from meshdesk.config import Config, write_config
from meshdesk.errors import HomeError, KitError
from meshdesk.identity.kit import NodeKit
from meshdesk.identity.pki import CertificateAuthority
from meshdesk.identity.webpki import WebCA, WebSubCA

__all__ = ["HOME_ENV", "NodeHome"]

HOME_ENV = "MESHDESK_HOME"


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _pem_key(key: Ed25519PrivateKey | X25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass(frozen=True, slots=True)
class NodeHome:
    """Paths of one node home and the operations on its identity files."""

    path: Path

    @classmethod
    def resolve(cls, arg: str | os.PathLike[str] | None, env: Mapping[str, str]) -> NodeHome:
        """``--home`` first, then ``$MESHDESK_HOME``, then the user data folder."""
        return cls(resolve_home(arg, env, HOME_ENV, "meshdesk"))

    # -- paths ---------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.path / "config.toml"

    @property
    def identity_dir(self) -> Path:
        return self.path / "identity"

    @property
    def key_path(self) -> Path:
        return self.identity_dir / "node.key"

    @property
    def sealing_key_path(self) -> Path:
        return self.identity_dir / "sealing.key"

    @property
    def cert_path(self) -> Path:
        return self.identity_dir / "node.crt"

    @property
    def ca_cert_path(self) -> Path:
        return self.identity_dir / "ca.crt"

    @property
    def ca_key_path(self) -> Path:
        return self.identity_dir / "ca.key"

    @property
    def web_ca_cert_path(self) -> Path:
        return self.identity_dir / "web-ca.crt"

    @property
    def web_ca_key_path(self) -> Path:
        return self.identity_dir / "web-ca.key"

    @property
    def web_subca_cert_path(self) -> Path:
        return self.identity_dir / "web-subca.crt"

    @property
    def web_subca_key_path(self) -> Path:
        return self.identity_dir / "web-subca.key"

    @property
    def web_dir(self) -> Path:
        return self.path / "web"

    @property
    def store_path(self) -> Path:
        return self.path / "store.db"

    @property
    def control_socket(self) -> Path:
        return self.path / "control.sock"

    # -- state ---------------------------------------------------------------------

    def is_provisioned(self) -> bool:
        return self.key_path.exists()

    def has_ca(self) -> bool:
        return self.ca_key_path.exists()

    def require_provisioned(self) -> None:
        """Raises HomeError with what to do when there is no node here."""
        if not self.path.exists():
            raise HomeError(
                f"no meshdesk home at {self.path}: provision one with "
                f"'meshdesk init --home {self.path} --kit FILE' "
                f"(or 'meshdesk deployment create' on the HQ node)"
            )
        if not self.path.is_dir():
            raise HomeError(f"{self.path} is not a folder")
        if not self.is_provisioned():
            raise HomeError(
                f"{self.path} holds no node identity: run "
                f"'meshdesk init --home {self.path} --kit FILE'"
            )

    def require_empty(self) -> None:
        """Refuse to provision over an existing node: its key would be lost."""
        if self.path.exists() and not self.path.is_dir():
            raise HomeError(f"{self.path} exists and is not a folder")
        if self.is_provisioned():
            raise HomeError(
                f"{self.path} already holds a node; use another --home "
                "(meshdesk never overwrites a node's key)"
            )

    # -- config --------------------------------------------------------------------

    def write_config(self, config: Config) -> None:
        """Write ``config`` as this home's commented ``config.toml`` (0600, atomically).

        The way to change a home's settings in code: ``load_config`` →
        ``dataclasses.replace`` → ``write_config``; never edit the text.

        Raises:
            ConfigError: the file cannot be written.
        """
        write_config(self.config_path, config)

    # -- identity ------------------------------------------------------------------

    def _read(self, path: Path, *, secret: bool) -> bytes:
        try:
            if secret:
                mode = path.stat().st_mode
                if mode & (stat.S_IRWXG | stat.S_IRWXO):
                    raise HomeError(
                        f"{path} is readable by other users (mode {stat.S_IMODE(mode):o}); "
                        f"fix it with: chmod 600 {path}"
                    )
            return path.read_bytes()
        except FileNotFoundError as exc:
            raise HomeError(f"{path} is missing; the node home {self.path} is incomplete") from exc
        except OSError as exc:
            raise HomeError(f"cannot read {path}: {exc.strerror}") from exc

    def load_identity(self, *, now: dt.datetime) -> NodeKit:
        """Load and verify this node's key, certificate and CA certificate.

        Raises:
            HomeError: not provisioned, files missing or too widely readable.
            KitError: the files do not belong together or are damaged.
        """
        self.require_provisioned()
        try:
            key = serialization.load_pem_private_key(
                self._read(self.key_path, secret=True), password=None
            )
            cert = x509.load_pem_x509_certificate(self._read(self.cert_path, secret=False))
            ca_cert = x509.load_pem_x509_certificate(self._read(self.ca_cert_path, secret=False))
            sealing = None
            if self.sealing_key_path.exists():
                sealing = serialization.load_pem_private_key(
                    self._read(self.sealing_key_path, secret=True), password=None
                )
        except (ValueError, TypeError) as exc:
            raise KitError(f"identity files in {self.identity_dir} are damaged: {exc}") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise KitError(f"{self.key_path} does not hold an Ed25519 key")
        if sealing is not None and not isinstance(sealing, X25519PrivateKey):
            raise KitError(f"{self.sealing_key_path} does not hold an X25519 key")
        return NodeKit.assemble(
            key, cert, ca_cert, sealing_key=sealing, web=self.load_web_subca(), now=now
        )

    def load_web_subca(self) -> WebSubCA | None:
        """This node's web sub-CA, or None in a home provisioned before the web port."""
        if not self.web_subca_key_path.exists():
            return None
        return WebSubCA.from_pem(
            self._read(self.web_subca_key_path, secret=True),
            self._read(self.web_subca_cert_path, secret=False),
            self._read(self.web_ca_cert_path, secret=False),
        )

    def has_web_ca(self) -> bool:
        return self.web_ca_key_path.exists()

    def load_web_ca(self) -> WebCA:
        """The deployment's web CA (HQ only).

        Raises:
            HomeError: this home holds none (not HQ, or created before the web port:
                ``meshdesk deployment web-ca`` adds it).
        """
        if not self.has_web_ca():
            raise HomeError(
                f"{self.path} holds no web CA: on the HQ node run "
                f"'meshdesk deployment web-ca --home {self.path}'"
            )
        return WebCA.from_pem(
            self._read(self.web_ca_key_path, secret=True),
            self._read(self.web_ca_cert_path, secret=False),
        )

    def write_web_ca(self, web_ca: WebCA) -> None:
        """Keep the deployment's web CA in this (HQ) home; never overwrites one."""
        try:
            write_private(self.web_ca_key_path, web_ca.key_pem())
            write_private(self.web_ca_cert_path, web_ca.cert_pem(), overwrite=True)
        except FileExistsError as exc:
            raise HomeError(f"{self.web_ca_key_path} exists; a web CA is never replaced") from exc
        except OSError as exc:
            raise HomeError(f"cannot write the web CA into {self.path}: {exc}") from exc

    def write_web_subca(self, web: WebSubCA) -> None:
        """Install (or replace) this node's web sub-CA; the key goes last."""
        try:
            ensure_private_dir(self.identity_dir)
            write_private(self.web_subca_cert_path, web.cert_pem(), overwrite=True)
            if not self.has_web_ca():
                write_private(self.web_ca_cert_path, web.root_pem(), overwrite=True)
            write_private(self.web_subca_key_path, web.key_pem(), overwrite=True)
        except OSError as exc:
            raise HomeError(f"cannot write the web sub-CA into {self.path}: {exc}") from exc

    def load_ca(self) -> CertificateAuthority:
        """The deployment CA, present only on the HQ node that created it."""
        if not self.has_ca():
            raise HomeError(
                f"{self.path} holds no deployment CA: issue and revoke on the HQ node "
                "that ran 'meshdesk deployment create'"
            )
        try:
            key = serialization.load_pem_private_key(
                self._read(self.ca_key_path, secret=True), password=None
            )
            cert = x509.load_pem_x509_certificate(self._read(self.ca_cert_path, secret=False))
        except (ValueError, TypeError) as exc:
            raise KitError(f"CA files in {self.identity_dir} are damaged: {exc}") from exc
        if not isinstance(key, Ed25519PrivateKey) or cert.public_key() != key.public_key():
            raise KitError(f"{self.ca_key_path} does not match {self.ca_cert_path}")
        return CertificateAuthority(key=key, cert=cert)

    def write_identity(self, kit: NodeKit, *, ca: CertificateAuthority | None = None) -> None:
        """Write the node's identity files (and the CA key on the creating HQ).

        Raises:
            HomeError: the home already holds a node, or cannot be written.
        """
        self.require_empty()
        try:
            ensure_private_dir(self.path)
            ensure_private_dir(self.identity_dir)
            # Leftovers of an interrupted provisioning (no node.key yet) are replaced.
            write_private(self.ca_cert_path, _pem_cert(kit.ca_cert), overwrite=True)
            write_private(self.cert_path, _pem_cert(kit.cert), overwrite=True)
            if ca is not None:
                write_private(self.ca_key_path, ca.key_pem(), overwrite=True)
            if kit.sealing_key is not None:
                write_private(self.sealing_key_path, _pem_key(kit.sealing_key), overwrite=True)
            if kit.web is not None:
                self.write_web_subca(kit.web)
            # The key last: its presence is what marks the home as provisioned.
            write_private(self.key_path, _pem_key(kit.key))
        except OSError as exc:
            raise HomeError(f"cannot write the node identity into {self.path}: {exc}") from exc
