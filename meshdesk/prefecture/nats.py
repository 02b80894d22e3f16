"""NATS configuration text for the hub's trust: pure functions, no files, no processes.

The hub's NATS servers accept city HQs' leaf nodes over TLS with
``verify_and_map``: the server checks the client certificate against the
prefecture CA, then looks its subject up among the ``authorization`` users. A
city whose credential was revoked is simply absent from those users, so after a
configuration reload (``nats-server --signal reload``, or SIGHUP) its leaf node
is refused however valid its certificate's signature.

Where the blocks go (checked against nats-server 2.15 by
tests/integration/test_prefecture_nats.py)::

    authorization { users = [...] }     # render_authorization: at the TOP level
    leafnodes {
      listen: "0.0.0.0:7422"
      tls { ... verify_and_map: true }  # render_tls
    }

The users belong at the top level, not inside ``leafnodes {}``: nats-server
refuses to reload leaf node users ("config reload not supported for LeafNode:
field Users"), while top-level users reload and leaf nodes are checked against
them. A reload refuses the revoked city's *new* connections; a leaf connection
opened before the revocation stays up until it next reconnects (a WAN cut, a
restart of either side), which is why the hub's consumer also drops whatever a
city not :meth:`~meshdesk.prefecture.roster.Roster.admitted` sends. Client
connections (not leaf nodes) are closed by the reload itself. (``pinned_certs``
in the leaf node TLS block would not help: nats-server refuses to reload it too.)
To cut such a link at once, restart the hub server holding it (its ``/leafz``
lists it by name): in the three-server cluster the others keep serving, and the
city's reconnection is refused everywhere.

The generator of the hub's configuration (:mod:`meshdesk.hub`) places these blocks.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from meshdesk.prefecture.roster import Roster

__all__ = [
    "NO_CITY_USER",
    "Permissions",
    "admitted_users",
    "render_authorization",
    "render_tls",
]

#: Given the users list when no city is admitted. NATS treats an empty users list
#: as "no authorization", which with a verified CA would let any of its
#: certificates in — a revoked one too. No certificate the prefecture CA issues
#: carries this subject, so it matches nobody.
NO_CITY_USER = "CN=no city admitted,O=meshdesk"

#: ``{"publish": [...], "subscribe": [...]}`` for one city, by municipality code.
Permissions = Callable[[str], Mapping[str, Sequence[str]]]


def _quote(text: str) -> str:
    if any(ch in text for ch in '"\\\n\r') or not text.isprintable():
        raise ValueError(f"cannot put {text!r} into a NATS configuration")
    return json.dumps(text, ensure_ascii=False)


def admitted_users(roster: Roster, *, now: dt.datetime | None = None) -> list[tuple[str, str]]:
    """``(municipality code, certificate subject)`` of every credential that maps to
    a user: not revoked, and (given ``now``) not expired. Revoked ones never appear."""
    return [
        (entry.code, entry.info.subject)
        for entry in roster.active()
        if now is None or now <= entry.cert.not_valid_after_utc
    ]


def render_authorization(
    roster: Roster,
    *,
    now: dt.datetime | None = None,
    account: str | None = None,
    permissions: Permissions | None = None,
    clients: Sequence[str] = (),
    client_permissions: Mapping[str, Sequence[str]] | None = None,
    city_connections: Sequence[str] = (),
    client_connections: Sequence[str] = (),
    indent: int = 0,
) -> str:
    """The ``authorization { users = [...] }`` block mapping city certificates to users.

    Args:
        roster: the verified hub roster.
        now: leave out credentials expired at this time (None: keep them).
        account: bind every city user to this NATS account (leaf node users).
        permissions: per-city publish/subscribe allow lists, by municipality code.
        clients: subjects of the prefecture's own hub clients
            (:meth:`~meshdesk.prefecture.home.PrefectureHome.client_subjects`: the
            projection), admitted beside the cities with no account.
        client_permissions: the publish/subscribe allow lists of every client
            (:func:`meshdesk.hub.natsconf.hub_client_permissions`); None: none.
        city_connections, client_connections: the kinds of connection
            (``allowed_connection_types``: ``LEAFNODE``, ``STANDARD``, …) a city's
            and a client's certificate may open; empty: any.
        indent: spaces before each line, to nest the block.

    Raises:
        ValueError: a value that cannot be written into NATS configuration text.
    """
    pad = " " * indent
    names = {entry.code: entry.name for entry in roster.entries}
    lines = [f"{pad}authorization {{", f"{pad}  users = ["]
    users = admitted_users(roster, now=now)
    for code, subject in users:
        fields = [f"user: {_quote(subject)}"]
        if account is not None:
            fields.append(f"account: {_quote(account)}")
        if permissions is not None:
            fields.append(_permissions(permissions(code)))
        if city_connections:
            fields.append(_connections(city_connections))
        label = " ".join(names.get(code, "").split())
        lines.append(f"{pad}    # {code} {label}".rstrip())
        lines.append(f"{pad}    {{{', '.join(fields)}}}")
    for subject in clients:
        fields = [f"user: {_quote(subject)}"]
        if client_permissions is not None:
            fields.append(_permissions(client_permissions))
        if client_connections:
            fields.append(_connections(client_connections))
        lines.append(f"{pad}    # the prefecture's hub client")
        lines.append(f"{pad}    {{{', '.join(fields)}}}")
    if not users and not clients:
        lines.append(f"{pad}    # no city is admitted: a user no certificate maps to")
        lines.append(f"{pad}    {{user: {_quote(NO_CITY_USER)}}}")
    lines += [f"{pad}  ]", f"{pad}}}"]
    return "\n".join(lines) + "\n"


def _permissions(allow: Mapping[str, Sequence[str]]) -> str:
    parts = [
        f"{kind}: {{allow: [{', '.join(_quote(s) for s in allow[kind])}]}}"
        for kind in ("publish", "subscribe")
        if kind in allow
    ]
    return f"permissions: {{{', '.join(parts)}}}"


def _connections(kinds: Sequence[str]) -> str:
    return f"allowed_connection_types: [{', '.join(_quote(k) for k in kinds)}]"


def render_tls(
    *,
    cert_file: Path,
    key_file: Path,
    ca_file: Path,
    verify_and_map: bool = True,
    timeout_s: float = 5.0,
    indent: int = 0,
) -> str:
    """A ``tls { … }`` block: this server's certificate, the prefecture CA, and
    (by default) ``verify_and_map`` so client certificates name their users.

    Raises:
        ValueError: a path that cannot be written into NATS configuration text.
    """
    pad = " " * indent
    mode = "verify_and_map: true" if verify_and_map else "verify: true"
    return (
        f"{pad}tls {{\n"
        f"{pad}  cert_file: {_quote(str(cert_file))}\n"
        f"{pad}  key_file: {_quote(str(key_file))}\n"
        f"{pad}  ca_file: {_quote(str(ca_file))}\n"
        f"{pad}  {mode}\n"
        f"{pad}  timeout: {timeout_s:g}\n"
        f"{pad}}}\n"
    )
