"""The city side: an HQ node imports its hub credential and pins the prefecture CA.

::

    HOME/hub/               0700  (in the city HQ's node home)
      prefecture-ca.crt     the pinned prefecture CA: written at the first join only
      servers.pem           the hub servers' certificates
      city.crt              this city's client certificate for the hub
      city.key              0600  its private key
      hub.json              municipality code, city and prefecture names, hub URLs

The first join shows the prefecture CA's fingerprint; the operator compares it
with the one the prefecture read out (or printed) and confirms (``--yes`` in
scripts). From then on a credential is accepted only if that pinned CA signed it:
a credential from another prefecture — or a forged one — is refused in one line,
and nothing in ``hub/`` changes. Only an HQ node joins; the city's centres and
desks never talk to the hub.

The leaf node configuration (:mod:`meshdesk.hub`) reads its TLS files with
:func:`load_city_hub`, which checks them against the pin again.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from meshdesk._fs import ensure_private_dir, write_private
from meshdesk.errors import AuthError, HomeError, UsageError
from meshdesk.home import NodeHome
from meshdesk.identity import Role
from meshdesk.identity.certs import cert_pem, load_certificate, load_p256_key, private_key_pem
from meshdesk.identity.nodeid import NodeId
from meshdesk.prefecture.ca import prefecture_id
from meshdesk.prefecture.credential import MAX_CREDENTIAL_BYTES, HubCredential

__all__ = ["CityHubFiles", "JoinPlan", "join_hub", "load_city_hub", "plan_join"]


@dataclass(frozen=True, slots=True)
class CityHubFiles:
    """Where a city HQ keeps what it needs to reach the prefecture hub."""

    dir: Path

    @classmethod
    def of(cls, home: NodeHome) -> CityHubFiles:
        return cls(home.path / "hub")

    @property
    def ca_path(self) -> Path:
        return self.dir / "prefecture-ca.crt"

    @property
    def servers_path(self) -> Path:
        return self.dir / "servers.pem"

    @property
    def cert_path(self) -> Path:
        return self.dir / "city.crt"

    @property
    def key_path(self) -> Path:
        return self.dir / "city.key"

    @property
    def info_path(self) -> Path:
        return self.dir / "hub.json"

    def joined(self) -> bool:
        return self.key_path.exists() and self.info_path.exists()

    def pinned_ca(self) -> x509.Certificate | None:
        """The prefecture CA this HQ pinned, or None before its first join."""
        if not self.ca_path.exists():
            return None
        try:
            data = self.ca_path.read_bytes()
        except OSError as exc:
            raise HomeError(f"cannot read {self.ca_path}: {exc.strerror}") from exc
        return load_certificate(data, f"the pinned prefecture CA {self.ca_path}", AuthError)


@dataclass(frozen=True, slots=True)
class JoinPlan:
    """What a join would do, for the operator to confirm."""

    credential: HubCredential
    #: True on the first join: the prefecture CA gets pinned (needs confirmation).
    pins: bool

    @property
    def fingerprint(self) -> NodeId:
        return self.credential.prefecture_id


def _require_hq(home: NodeHome, now: dt.datetime) -> None:
    role = home.load_identity(now=now).info.role
    if role is not Role.HQ:
        raise UsageError(
            f"only the city's HQ node joins the prefecture hub; this node is a {role} node"
        )


def plan_join(
    home: NodeHome, path: Path, *, passphrase: bytes | None = None, now: dt.datetime
) -> JoinPlan:
    """Read a credential and check it against this HQ's pin (if any).

    Raises:
        HomeError: not a provisioned node home.
        UsageError: not an HQ node, or the credential is for another city than
            the one this HQ joined as.
        AuthError: a damaged or tampered credential, a wrong passphrase, or a
            credential not signed by the pinned prefecture CA.
    """
    _require_hq(home, now)
    credential = HubCredential.read(path, passphrase=passphrase, now=now)
    files = CityHubFiles.of(home)
    pinned = files.pinned_ca()
    if pinned is not None and pinned != credential.ca_cert:
        raise AuthError(
            f"{path} is signed by prefecture CA {credential.prefecture_id}, but this HQ "
            f"pinned {prefecture_id(pinned)}: refusing it (a credential of another "
            "prefecture, or a forged one)"
        )
    if files.joined():
        joined = _read_info(files)
        if joined.get("city_code") != credential.city_code:
            raise UsageError(
                f"this HQ joined the hub as city {joined.get('city_code')}; {path} is "
                f"for city {credential.city_code}"
            )
    return JoinPlan(credential=credential, pins=pinned is None)


def join_hub(home: NodeHome, plan: JoinPlan, *, confirmed: bool) -> CityHubFiles:
    """Write the credential into ``HOME/hub/``, pinning the CA on the first join.

    A later join (a replaced credential) keeps the pin and replaces the rest.

    Raises:
        UsageError: the first join was not confirmed.
        HomeError: the files cannot be written.
    """
    if plan.pins and not confirmed:
        raise UsageError(
            f"not joined: confirm the prefecture CA fingerprint {plan.fingerprint} "
            "(answer yes, or pass --yes after checking it)"
        )
    credential = plan.credential
    files = CityHubFiles.of(home)
    info = {
        "city_code": credential.city_code,
        "city_name": credential.city_name,
        "prefecture": credential.prefecture,
        "prefecture_id": str(credential.prefecture_id),
        "urls": list(credential.urls),
    }
    try:
        ensure_private_dir(files.dir)
        if plan.pins:
            write_private(files.ca_path, cert_pem(credential.ca_cert))
        servers = b"".join(cert_pem(s) for s in credential.servers)
        write_private(files.servers_path, servers, overwrite=True)
        write_private(files.cert_path, cert_pem(credential.cert), overwrite=True)
        write_private(files.key_path, private_key_pem(credential.key), overwrite=True)
        # Last: hub.json marks the join complete.
        text = json.dumps(info, ensure_ascii=False, indent=1) + "\n"
        write_private(files.info_path, text.encode("utf-8"), overwrite=True)
    except FileExistsError as exc:
        raise HomeError(f"{files.ca_path} appeared meanwhile; join again") from exc
    except OSError as exc:
        raise HomeError(f"cannot write into {files.dir}: {exc.strerror or exc}") from exc
    return files


def _read_info(files: CityHubFiles) -> dict[str, object]:
    try:
        obj = json.loads(files.info_path.read_bytes()[:MAX_CREDENTIAL_BYTES])
    except (OSError, ValueError) as exc:
        raise HomeError(f"{files.info_path} is damaged or unreadable: join again") from exc
    if not isinstance(obj, dict):
        raise HomeError(f"{files.info_path} is damaged: join again")
    return obj


def load_city_hub(home: NodeHome, *, now: dt.datetime) -> HubCredential:
    """The joined hub credential, checked against the pin: what the leaf node uses.

    Raises:
        HomeError: this HQ has not joined a hub, or its files are unreadable.
        AuthError: the files were altered (not signed by the pinned CA, key mismatch).
    """
    files = CityHubFiles.of(home)
    if not files.joined():
        raise HomeError(
            f"{home.path} has not joined a prefecture hub: run 'meshdesk hub join FILE' "
            "with the credential the prefecture issued"
        )
    pinned = files.pinned_ca()
    if pinned is None:
        raise HomeError(f"{files.ca_path} is missing: join again")
    info = _read_info(files)
    try:
        if files.key_path.stat().st_mode & 0o077:
            raise HomeError(
                f"{files.key_path} is readable by other users; fix it with: "
                f"chmod 600 {files.key_path}"
            )
        servers_pem = files.servers_path.read_bytes()
        key_pem = files.key_path.read_bytes()
        cert_data = files.cert_path.read_bytes()
        servers = tuple(x509.load_pem_x509_certificates(servers_pem)) if servers_pem else ()
    except OSError as exc:
        raise HomeError(f"cannot read the hub files in {files.dir}: {exc.strerror}") from exc
    except ValueError as exc:
        raise AuthError(f"{files.servers_path} is damaged: {exc}") from exc
    urls = info.get("urls")
    return HubCredential.assemble(
        prefecture=str(info.get("prefecture", "")),
        city_name=str(info.get("city_name", "")),
        key=load_p256_key(key_pem, str(files.key_path), AuthError),
        cert=load_certificate(cert_data, str(files.cert_path), AuthError),
        ca_cert=pinned,
        servers=servers,
        urls=tuple(str(u) for u in urls) if isinstance(urls, list) else (),
        now=now,
    )
