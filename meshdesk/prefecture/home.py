"""The prefecture home: the hub's CA, its roster of cities, its servers' certificates.

::

    PREFECTURE_HOME/        0700
      ca.key                0600  prefecture CA private key (ECDSA P-256, PKCS#8 PEM)
      ca.crt                prefecture CA certificate — what cities pin
      roster.json           0600  admitted and revoked cities (meshdesk.prefecture.roster)
      servers/              0700
        NAME.crt            a hub NATS server's certificate
        NAME.key            0600  its private key
      clients/              0700
        NAME.crt            a hub client's certificate (the projection, meshdesk hub run)
        NAME.key            0600  its private key

Chosen by ``--home``, else ``$MESHDESK_PREFECTURE_HOME``, else the platform's user
data folder ``meshdesk-prefecture``; never a city node's home. Every write is
atomic and owner-only (:func:`meshdesk._fs.write_private`).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from meshdesk._fs import ensure_private_dir, resolve_home, write_private
from meshdesk.errors import AuthError, HomeError, UsageError
from meshdesk.identity.certs import cert_pem, load_certificate, load_p256_key, private_key_pem
from meshdesk.identity.pki import check_label
from meshdesk.prefecture.ca import (
    PrefectureCA,
    municipality_code,
    verify_client_cert,
    verify_server_cert,
)
from meshdesk.prefecture.credential import HubCredential, check_hub_url
from meshdesk.prefecture.roster import MAX_ROSTER_BYTES, CityEntry, Roster

__all__ = ["PREFECTURE_HOME_ENV", "PrefectureHome", "ServerFiles"]

PREFECTURE_HOME_ENV = "MESHDESK_PREFECTURE_HOME"
_SERVER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


@dataclass(frozen=True, slots=True)
class ServerFiles:
    """Where one hub server's (or hub client's) TLS files are: what its NATS
    ``tls {}`` block names, or what a client loads."""

    name: str
    cert_path: Path
    key_path: Path
    ca_path: Path


@dataclass(frozen=True, slots=True)
class PrefectureHome:
    """Paths of one prefecture home and the operations on the hub's trust."""

    path: Path

    @classmethod
    def resolve(cls, arg: str | os.PathLike[str] | None, env: Mapping[str, str]) -> PrefectureHome:
        """``--home`` first, then ``$MESHDESK_PREFECTURE_HOME``, then the user data folder."""
        return cls(resolve_home(arg, env, PREFECTURE_HOME_ENV, "meshdesk-prefecture"))

    @property
    def ca_key_path(self) -> Path:
        return self.path / "ca.key"

    @property
    def ca_cert_path(self) -> Path:
        return self.path / "ca.crt"

    @property
    def roster_path(self) -> Path:
        return self.path / "roster.json"

    @property
    def servers_dir(self) -> Path:
        return self.path / "servers"

    @property
    def clients_dir(self) -> Path:
        return self.path / "clients"

    def exists(self) -> bool:
        return self.ca_key_path.exists()

    def _require(self) -> None:
        if not self.exists():
            raise HomeError(
                f"{self.path} holds no prefecture CA: create one with "
                f"'meshdesk prefecture init --home {self.path} --name NAME'"
            )

    def _read(self, path: Path, *, secret: bool, limit: int = 64 * 1024) -> bytes:
        try:
            if secret:
                mode = path.stat().st_mode
                if mode & (stat.S_IRWXG | stat.S_IRWXO):
                    raise HomeError(
                        f"{path} is readable by other users (mode {stat.S_IMODE(mode):o}); "
                        f"fix it with: chmod 600 {path}"
                    )
            with path.open("rb") as fh:
                data = fh.read(limit + 1)
        except FileNotFoundError as exc:
            raise HomeError(f"{path} is missing; the prefecture home is incomplete") from exc
        except OSError as exc:
            raise HomeError(f"cannot read {path}: {exc.strerror}") from exc
        if len(data) > limit:
            raise HomeError(f"{path} is larger than {limit} bytes: not a meshdesk file")
        return data

    def _write(self, path: Path, data: bytes, *, overwrite: bool) -> None:
        try:
            write_private(path, data, overwrite=overwrite)
        except FileExistsError as exc:
            raise HomeError(f"{path} exists; not overwriting it") from exc
        except OSError as exc:
            raise HomeError(f"cannot write {path}: {exc.strerror or exc}") from exc

    # -- the CA and the roster -----------------------------------------------------

    def init(self, name: str, *, now: dt.datetime) -> PrefectureCA:
        """Create the prefecture CA and an empty roster here.

        Raises:
            HomeError: a CA exists here already (never replaced), or no write access.
            UsageError: a bad name.
        """
        if self.exists():
            raise HomeError(f"{self.path} already holds a prefecture CA; it is never replaced")
        try:
            ca = PrefectureCA.create(name, now=now)
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        try:
            ensure_private_dir(self.path)
        except OSError as exc:
            raise HomeError(f"cannot create {self.path}: {exc.strerror or exc}") from exc
        self._write(self.ca_cert_path, ca.cert_pem(), overwrite=True)
        self._write(self.roster_path, Roster.new(ca, now=now).to_bytes(), overwrite=True)
        # The key last: its presence is what marks the home as made.
        self._write(self.ca_key_path, ca.key_pem(), overwrite=False)
        return ca

    def load_ca(self) -> PrefectureCA:
        """The prefecture CA (key and certificate), checked to belong together.

        Raises:
            HomeError: no CA here, or its key readable by others.
            AuthError: damaged files, or the key is not the certificate's.
        """
        self._require()
        key = load_p256_key(
            self._read(self.ca_key_path, secret=True), f"{self.ca_key_path}", AuthError
        )
        cert = self.load_ca_cert()
        if cert.public_key() != key.public_key():
            raise AuthError(f"{self.ca_key_path} does not belong to {self.ca_cert_path}")
        return PrefectureCA(key=key, cert=cert)

    def load_ca_cert(self) -> x509.Certificate:
        return load_certificate(
            self._read(self.ca_cert_path, secret=False), f"{self.ca_cert_path}", AuthError
        )

    def load_roster(self, *, min_crl: int = 0) -> Roster:
        """The hub's roster, every signature checked against the prefecture CA.

        This is what the hub's consumer reads for :meth:`Roster.admitted`. It needs
        ``ca.crt`` and ``roster.json`` only: a hub machine gets copies of those two,
        never the CA key. ``min_crl``: the highest revocation list number the
        caller has seen; an older roster (a copy put back) is refused.

        Raises:
            HomeError: missing or unreadable.
            AuthError: damaged or tampered.
        """
        if not self.ca_cert_path.exists():
            self._require()
        data = self._read(self.roster_path, secret=False, limit=MAX_ROSTER_BYTES)
        return Roster.load(data, self.load_ca_cert(), min_crl=min_crl, source=str(self.roster_path))

    def _save_roster(self, roster: Roster) -> None:
        self._write(self.roster_path, roster.to_bytes(), overwrite=True)

    # -- hub servers ---------------------------------------------------------------

    def _files(self, folder: Path, what: str, name: str, example: str) -> ServerFiles:
        """Where a certificate named ``name`` (a hub server's or a hub client's) and
        its key live in ``folder``."""
        if not _SERVER_NAME.fullmatch(name):
            raise UsageError(
                f"{what} name {name!r}: use letters, digits, '.', '-' or '_' (e.g. {example})"
            )
        return ServerFiles(
            name=name,
            cert_path=folder / f"{name}.crt",
            key_path=folder / f"{name}.key",
            ca_path=self.ca_cert_path,
        )

    def server_files(self, name: str) -> ServerFiles:
        return self._files(self.servers_dir, "server", name, "hub1")

    def issue_server(self, name: str, hosts: Sequence[str], *, now: dt.datetime) -> ServerFiles:
        """Sign a certificate for hub server ``name`` and keep it (and its key) here.

        Raises:
            UsageError: a bad name or host.
            HomeError: that server has a certificate already, or no write access.
        """
        files = self.server_files(name)
        ca = self.load_ca()
        if files.key_path.exists():
            raise HomeError(f"hub server {name} has a certificate already ({files.cert_path})")
        key, cert = ca.issue_server(name, hosts, now=now)
        try:
            ensure_private_dir(self.servers_dir)
        except OSError as exc:
            raise HomeError(f"cannot create {self.servers_dir}: {exc.strerror or exc}") from exc
        self._write(files.cert_path, cert_pem(cert), overwrite=True)
        self._write(files.key_path, private_key_pem(key), overwrite=False)
        return files

    def server_certs(self) -> list[x509.Certificate]:
        """Every hub server certificate issued here, checked against the CA, by name."""
        if not self.servers_dir.is_dir():
            return []
        ca_cert = self.load_ca_cert()
        certs = []
        for path in sorted(self.servers_dir.glob("*.crt")):
            cert = load_certificate(self._read(path, secret=False), str(path), AuthError)
            verify_server_cert(cert, ca_cert)
            certs.append(cert)
        return certs

    # -- the prefecture's own hub clients --------------------------------------------

    def client_files(self, name: str) -> ServerFiles:
        return self._files(self.clients_dir, "client", name, "projection")

    def issue_client(self, name: str, *, now: dt.datetime) -> ServerFiles:
        """Sign a client certificate for the prefecture's hub client ``name`` (the
        projection) and keep it here; the hub servers' authorization admits it.

        Raises:
            UsageError: a bad name.
            HomeError: that client has a certificate already, or no write access.
        """
        files = self.client_files(name)
        ca = self.load_ca()
        if files.key_path.exists():
            raise HomeError(f"hub client {name} has a certificate already ({files.cert_path})")
        key, cert = ca.issue_client(name, now=now)
        try:
            ensure_private_dir(self.clients_dir)
        except OSError as exc:
            raise HomeError(f"cannot create {self.clients_dir}: {exc.strerror or exc}") from exc
        self._write(files.cert_path, cert_pem(cert), overwrite=True)
        self._write(files.key_path, private_key_pem(key), overwrite=False)
        return files

    def client_subjects(self) -> list[str]:
        """The NATS user (certificate subject) of every hub client issued here, each
        checked against the CA: what the hub servers' authorization admits beside
        the cities.

        Raises:
            AuthError: a certificate the CA did not sign, or no hub client's.
        """
        if not self.clients_dir.is_dir():
            return []
        ca_cert = self.load_ca_cert()
        subjects = []
        for path in sorted(self.clients_dir.glob("*.crt")):
            cert = load_certificate(self._read(path, secret=False), str(path), AuthError)
            subjects.append(verify_client_cert(cert, ca_cert))
        return subjects

    # -- cities --------------------------------------------------------------------

    def issue_city(
        self,
        code: str,
        *,
        name: str,
        urls: Sequence[str],
        out: Path,
        replace: bool = False,
        passphrase: bytes | None = None,
        now: dt.datetime,
    ) -> HubCredential:
        """Admit a city: write its hub credential to ``out`` (sealed under
        ``passphrase`` when given) and list it in the roster.

        Raises:
            UsageError: a bad code, name or URL; the city holds a credential already
                (``replace`` revokes it first); ``out`` exists.
            HomeError, AuthError: the home cannot be read or written.
        """
        code = municipality_code(code)
        try:
            name = check_label("city name", name)
            hub_urls = tuple(check_hub_url(u) for u in urls)
        except (ValueError, AuthError) as exc:
            raise UsageError(str(exc)) from exc
        if out.exists():
            raise UsageError(f"{out} exists; not overwriting it")
        ca = self.load_ca()
        roster = self.load_roster()
        current = [e for e in roster.active() if e.code == code]
        if current and not replace:
            raise UsageError(
                f"city {code} already holds a hub credential (issued "
                f"{current[0].issued_at:%Y-%m-%d}); add --replace to revoke it and issue a new one"
            )
        key, cert = ca.issue_city(code, now=now)
        credential = HubCredential.assemble(
            prefecture=ca.name,
            city_name=name,
            key=key,
            cert=cert,
            ca_cert=ca.cert,
            servers=tuple(self.server_certs()),
            urls=hub_urls,
            now=now,
        )
        # The file first: if the roster cannot be saved, the credential admits nobody.
        self._write(out, credential.to_bytes(passphrase), overwrite=False)
        if current:
            roster = roster.revoke(
                [e.serial for e in current], ca, reason="replaced by a new credential", now=now
            )
        self._save_roster(roster.add(CityEntry(code=code, name=name, cert=cert, issued_at=now)))
        return credential

    def revoke_city(self, code: str, *, reason: str, now: dt.datetime) -> Roster:
        """Revoke every credential of city ``code``; returns the new roster.

        Raises:
            UsageError: a bad code, or the city holds no credential that is not revoked.
        """
        code = municipality_code(code)
        ca = self.load_ca()
        roster = self.load_roster()
        current = [e for e in roster.active() if e.code == code]
        if not current:
            known = "is revoked already" if roster.city(code) else "was never admitted"
            raise UsageError(f"city {code} {known}; nothing to revoke")
        roster = roster.revoke([e.serial for e in current], ca, reason=reason.strip(), now=now)
        self._save_roster(roster)
        return roster
