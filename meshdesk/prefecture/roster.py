"""The hub's roster: which cities the prefecture admitted, and which it revoked.

The roster is a JSON file in the prefecture home (``roster.json``). Nothing in it
is trusted for its own sake: each admission is the city's certificate, signed by
the prefecture CA, and revocations are a standard X.509 CRL signed by the same
CA (:class:`meshdesk.identity.revocation.RevocationList`, as for nodes). The
names, dates and reasons beside them are for people. Loading checks every
signature; a roster whose plain fields disagree with the signed ones is refused.

Removing a city's entry from the file only takes the city out (fail closed);
dropping a revocation breaks the CRL's signature; an older CRL is refused by its
lower number when a newer one is known (:meth:`Roster.load` with ``min_crl``).

Two things are read from it at the hub: the NATS authorization block
(:func:`meshdesk.prefecture.nats.render_authorization`) and :meth:`Roster.admitted`,
the check the hub's consumer makes before it applies anything a city sent.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from cryptography import x509

from meshdesk.errors import AuthError
from meshdesk.identity.certs import cert_pem
from meshdesk.identity.revocation import RevocationList, RevokingCA
from meshdesk.prefecture.ca import CityCert, city_cert_info, verify_city_cert

__all__ = ["MAX_ROSTER_BYTES", "CityEntry", "Roster"]

ROSTER_VERSION = 1
#: Thousands of municipalities fit in a few MiB; a bigger file is not ours.
MAX_ROSTER_BYTES = 16 * 1024 * 1024
_MAX_TEXT = 512


@dataclass(frozen=True, slots=True)
class CityEntry:
    """One hub credential issued to a city (a city re-admitted has several)."""

    code: str
    name: str
    cert: x509.Certificate
    issued_at: dt.datetime
    revoked_at: dt.datetime | None = None
    reason: str = ""

    @property
    def info(self) -> CityCert:
        return city_cert_info(self.cert)

    @property
    def serial(self) -> int:
        return self.cert.serial_number

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def to_json(self) -> dict[str, object]:
        return {
            "code": self.code,
            "name": self.name,
            "serial": f"{self.serial:x}",
            "subject": self.info.subject,
            "issued_at": self.issued_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "reason": self.reason,
        }


def _text(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or len(value) > _MAX_TEXT:
        raise AuthError(f"hub roster entry has a bad {key!r}")
    return value


def _time(value: object, key: str) -> dt.datetime:
    if not isinstance(value, str):
        raise AuthError(f"hub roster entry has a bad {key!r}")
    try:
        stamp = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise AuthError(f"hub roster entry has a bad {key!r}: {value!r}") from exc
    if stamp.tzinfo is None:
        raise AuthError(f"hub roster entry has a {key!r} without a time zone")
    return stamp


@dataclass(frozen=True, slots=True)
class Roster:
    """The verified roster: cities' credentials and the signed revocation list."""

    ca_cert: x509.Certificate
    entries: tuple[CityEntry, ...]
    revocations: RevocationList

    @classmethod
    def new(cls, ca: RevokingCA, *, now: dt.datetime) -> Roster:
        """An empty roster with revocation list #1 (nothing revoked)."""
        return cls(ca.cert, (), RevocationList.build(ca, [], number=1, now=now))

    # -- questions the hub asks ----------------------------------------------------

    def admitted(self, city_code: str, *, now: dt.datetime | None = None) -> bool:
        """Whether the city may feed the hub: it holds a credential not revoked
        (and, given ``now``, not expired). Anything else a city sends is dropped."""
        return any(
            entry.code == city_code and (now is None or now <= entry.cert.not_valid_after_utc)
            for entry in self.active()
        )

    def active(self) -> list[CityEntry]:
        """Credentials that still map to a hub user, in issue order."""
        return [e for e in self.entries if not self.revocations.is_revoked(e.serial)]

    def city(self, code: str) -> list[CityEntry]:
        return [e for e in self.entries if e.code == code]

    def is_revoked(self, serial: int) -> bool:
        return self.revocations.is_revoked(serial)

    # -- changes (made in the prefecture home, with the CA key) ----------------------

    def add(self, entry: CityEntry) -> Roster:
        verify_city_cert(entry.cert, self.ca_cert, now=entry.issued_at)
        return replace(self, entries=(*self.entries, entry))

    def revoke(
        self, serials: Iterable[int], ca: RevokingCA, *, reason: str, now: dt.datetime
    ) -> Roster:
        """A roster with ``serials`` revoked, under a CRL one number higher."""
        gone = set(serials)
        entries = tuple(
            replace(e, revoked_at=now, reason=reason)
            if e.serial in gone and e.revoked_at is None
            else e
            for e in self.entries
        )
        revoked = [(e.serial, e.revoked_at) for e in entries if e.revoked_at is not None]
        crl = RevocationList.build(ca, revoked, number=self.revocations.number + 1, now=now)
        return Roster(self.ca_cert, entries, crl)

    # -- bytes ---------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        doc = {
            "version": ROSTER_VERSION,
            "revocations": base64.b64encode(self.revocations.der).decode("ascii"),
            "cities": [
                {**e.to_json(), "cert": cert_pem(e.cert).decode("ascii")} for e in self.entries
            ],
        }
        return (json.dumps(doc, ensure_ascii=False, indent=1) + "\n").encode("utf-8")

    @classmethod
    def load(
        cls,
        data: bytes,
        ca_cert: x509.Certificate,
        *,
        min_crl: int = 0,
        source: str = "hub roster",
    ) -> Roster:
        """Parse and verify a roster against the prefecture CA.

        Raises:
            AuthError: damaged, tampered (a certificate or the revocation list not
                signed by the CA, plain fields contradicting signed ones), or older
                than revocation list ``min_crl``.
        """
        if len(data) > MAX_ROSTER_BYTES:
            raise AuthError(f"{source} is larger than {MAX_ROSTER_BYTES} bytes")
        try:
            doc = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise AuthError(f"{source} is damaged: {exc}") from exc
        if not isinstance(doc, dict) or doc.get("version") != ROSTER_VERSION:
            raise AuthError(f"{source} is not a version {ROSTER_VERSION} hub roster")
        cities = doc.get("cities")
        crl_text = doc.get("revocations")
        if not isinstance(cities, list) or not isinstance(crl_text, str):
            raise AuthError(f"{source} is damaged: no cities or no revocation list")
        try:
            crl_der = base64.b64decode(crl_text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise AuthError(f"{source} is damaged: bad revocation list encoding") from exc
        crl = RevocationList.load(crl_der, ca_cert)
        if crl.number < min_crl:
            raise AuthError(
                f"{source} carries revocation list #{crl.number}, older than #{min_crl} "
                "already seen: refusing to forget revocations"
            )
        entries: list[CityEntry] = []
        for item in cities:
            if not isinstance(item, dict):
                raise AuthError(f"{source} is damaged: a city entry is not an object")
            entries.append(cls._entry(item, ca_cert, crl))
        serials = [e.serial for e in entries]
        if len(set(serials)) != len(serials):
            raise AuthError(f"{source} lists one credential twice")
        return cls(ca_cert, tuple(entries), crl)

    @staticmethod
    def _entry(item: dict[str, Any], ca_cert: x509.Certificate, crl: RevocationList) -> CityEntry:
        try:
            cert = x509.load_pem_x509_certificate(_text_pem(item).encode("ascii"))
        except ValueError as exc:
            raise AuthError("hub roster entry holds a damaged certificate") from exc
        issued_at = _time(item.get("issued_at"), "issued_at")
        # Signature only: an expired credential stays listed (and unmapped by expiry).
        info = verify_city_cert(cert, ca_cert, now=cert.not_valid_before_utc)
        code = _text(item, "code")
        if code != info.code:
            raise AuthError(
                f"hub roster entry says city {code} but its certificate names {info.code}"
            )
        revoked_at = None
        if item.get("revoked_at") is not None:
            revoked_at = _time(item.get("revoked_at"), "revoked_at")
        if (revoked_at is not None) != crl.is_revoked(cert.serial_number):
            raise AuthError(
                f"hub roster entry of city {code} disagrees with the signed revocation list"
            )
        return CityEntry(
            code=code,
            name=_text(item, "name"),
            cert=cert,
            issued_at=issued_at,
            revoked_at=revoked_at,
            reason=_text(item, "reason"),
        )


def _text_pem(item: dict[str, Any]) -> str:
    value = item.get("cert")
    if not isinstance(value, str) or len(value) > 8192:
        raise AuthError("hub roster entry has no certificate")
    return value
