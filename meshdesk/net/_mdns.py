"""What a node puts into DNS-SD and how a sighting is read back; no sockets here.

A node announces ``<instance>._meshdesk._tcp.local.`` where the instance name is its
human name plus the short node ID (``本庁 災害対策本部 (MFZWI3D)``), so that two nodes
with the same name never collide and a person browsing the network can tell them
apart. The TXT record carries the full node ID and the labels the console shows.

Everything read from the network is hostile until checked: :func:`parse_txt` raises
:class:`BadAdvert` (a ``ValueError``) with a reason for anything it does not accept.
A sighting is only a hint; the TLS link proves who the peer is.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from zeroconf import RecordUpdate, RecordUpdateListener, Zeroconf

# Re-exported by ``zeroconf`` only implicitly; imported from where they live (typed).
from zeroconf._dns import DNSPointer, DNSQuestion
from zeroconf._protocol.outgoing import DNSOutgoing

from meshdesk.identity import NodeId, NodeInfo, check_label

SERVICE_TYPE = "_meshdesk._tcp.local."

#: DNS labels (and so DNS-SD instance names) are at most 63 bytes (RFC 6763 §4.1.1).
INSTANCE_MAX_BYTES = 63
#: One TXT string, ``key=value``, is at most 255 bytes (RFC 6763 §6.1).
TXT_ITEM_MAX_BYTES = 255
#: Limits on what a peer may put into the labels we show (``check_label`` allows 64).
_LABEL_MAX_CHARS = 64
_ROLE = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_DIGITS = re.compile(r"[0-9]{1,5}")
TXT_KEYS = ("id", "name", "site", "role", "proto", "port")
# DNS constants (RFC 1035).
_FLAGS_QUERY = 0x0000
_TYPE_PTR = 12
_TYPE_TXT = 16
_TYPE_SRV = 33
_CLASS_IN = 1


class BadAdvert(ValueError):
    """A service's TXT record or addresses are not a meshdesk advertisement we accept."""


@dataclass(frozen=True, slots=True)
class Advert:
    """The checked content of a peer's TXT record."""

    node_id: NodeId
    name: str
    site: str
    role: str
    proto: int
    port: int


def _cut(text: str, max_bytes: int) -> str:
    """The longest prefix of ``text`` whose UTF-8 form fits ``max_bytes``.

    Cuts between characters, never inside one, and never between a character and
    the combining marks after it (that would silently change the character).
    """
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    cut = data[:max_bytes].decode("utf-8", errors="ignore")
    while cut and unicodedata.combining(text[len(cut)]):
        cut = cut[:-1]
    return cut


def instance_name(info: NodeInfo) -> str:
    """The DNS-SD instance name: ``NAME (SHORTID)``, at most 63 UTF-8 bytes.

    python-zeroconf splits names at dots and the name must contain no control
    characters, so dots become middle dots and whitespace runs become one space.
    A long name is cut at a character boundary; the short ID always survives, so
    the name stays unique per node.
    """
    suffix = f" ({info.node_id.short})"
    name = unicodedata.normalize("NFC", info.name).replace(".", "·")
    name = " ".join("".join(ch if ch.isprintable() else " " for ch in name).split())
    name = _cut(name, INSTANCE_MAX_BYTES - len(suffix.encode())).rstrip()
    return f"{name}{suffix}" if name else info.node_id.short


def host_name(node_id: NodeId) -> str:
    """The mDNS host name the node's A records are published under."""
    return f"meshdesk-{node_id.short.lower()}.local."


def build_txt(info: NodeInfo, *, port: int, proto: int) -> dict[str, str]:
    """The TXT record a node announces (keys in :data:`TXT_KEYS`).

    A label too long for one TXT string (64 four-byte characters) is cut at a
    character boundary: it is for display only, the certificate holds the truth.
    """
    values = {
        "id": str(info.node_id),
        "name": info.name,
        "site": info.site,
        "role": str(info.role),
        "proto": str(proto),
        "port": str(port),
    }
    return {k: _cut(v, TXT_ITEM_MAX_BYTES - len(k) - 1) for k, v in values.items()}


def _text(props: Mapping[bytes, bytes | None], key: str) -> str:
    raw = props.get(key.encode())
    if raw is None:
        raise BadAdvert(f"TXT key {key!r} is missing")
    if len(raw) > TXT_ITEM_MAX_BYTES:
        raise BadAdvert(f"TXT value of {key!r} is oversized ({len(raw)} bytes)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadAdvert(f"TXT value of {key!r} is not UTF-8") from None


def _label(props: Mapping[bytes, bytes | None], key: str) -> str:
    text = _text(props, key)
    if len(text) > _LABEL_MAX_CHARS:
        raise BadAdvert(f"TXT value of {key!r} is oversized ({len(text)} characters)")
    try:
        return check_label(key, text)
    except ValueError as exc:
        raise BadAdvert(f"TXT value of {key!r} is not a valid label: {exc}") from None


def _number(props: Mapping[bytes, bytes | None], key: str, low: int, high: int) -> int:
    text = _text(props, key)
    if not _DIGITS.fullmatch(text) or not low <= int(text) <= high:
        raise BadAdvert(f"TXT value of {key!r} must be a number {low}..{high}, got {text[:16]!r}")
    return int(text)


def parse_txt(props: Mapping[bytes, bytes | None], *, srv_port: int | None) -> Advert:
    """Check a peer's TXT record (as python-zeroconf decodes it: bytes to bytes).

    Args:
        props: the TXT key/value pairs; a key without ``=`` maps to ``None``.
        srv_port: the port of the SRV record; the TXT ``port`` must agree with it.

    Raises:
        BadAdvert: a key is missing, a value is not UTF-8, too long, not a node ID
            (wrong length or check characters), a bad label or number, or the
            ports disagree.
    """
    id_text = _text(props, "id")
    try:
        node_id = NodeId.parse(id_text)
    except ValueError:
        raise BadAdvert(f"TXT 'id' is not a node id: {id_text[:40]!r}") from None
    role = _text(props, "role")
    if not _ROLE.fullmatch(role):
        raise BadAdvert(f"TXT 'role' is not a role name: {role[:40]!r}")
    advert = Advert(
        node_id=node_id,
        name=_label(props, "name"),
        site=_label(props, "site"),
        role=role,
        proto=_number(props, "proto", 1, 65535),
        port=_number(props, "port", 1, 65535),
    )
    if srv_port is not None and srv_port != advert.port:
        raise BadAdvert(f"TXT 'port' {advert.port} disagrees with the SRV port {srv_port}")
    return advert


def dialable_ipv4(addresses: list[str]) -> tuple[str, ...]:
    """The addresses a peer can be dialled at: IPv4, not loopback/unspecified/multicast."""
    found: dict[str, None] = {}
    for text in addresses:
        try:
            addr = ipaddress.IPv4Address(text)
        except ValueError:
            continue
        if not (addr.is_loopback or addr.is_unspecified or addr.is_multicast):
            found[str(addr)] = None
    return tuple(found)


def service_query() -> DNSOutgoing:
    """A multicast PTR question for our service type with no known answers.

    The browser's own queries list the answers it has cached, which silences the
    peers it already knows (RFC 6762 §7.1); this one makes every responder answer.
    """
    out = DNSOutgoing(_FLAGS_QUERY, multicast=True)
    out.add_question(DNSQuestion(SERVICE_TYPE, _TYPE_PTR, _CLASS_IN))
    return out


class AnswerListener(RecordUpdateListener):
    """Calls ``on_name`` once for each of our services that answers while it listens.

    Unlike the browser, it also sees answers that only refresh cached records.
    """

    def __init__(self, on_name: Callable[[str], None]) -> None:
        super().__init__()
        self._on_name = on_name
        self._suffix = "." + SERVICE_TYPE.lower()
        self._pending: dict[str, str] = {}  # lower case -> as announced
        self._answered: set[str] = set()

    def async_update_records(self, zc: Zeroconf, now: float, records: list[RecordUpdate]) -> None:
        for update in records:
            record = update.new
            if record.is_expired(now):
                continue
            if isinstance(record, DNSPointer) and record.name.lower() == SERVICE_TYPE.lower():
                name = record.alias
            elif record.type in (_TYPE_SRV, _TYPE_TXT):
                name = record.name
            else:
                continue
            key = name.lower()
            if key.endswith(self._suffix) and key not in self._answered:
                self._pending[key] = name

    def async_update_records_complete(self) -> None:
        # Called once the cache holds the batch, so a resolve now reads fresh records.
        pending, self._pending = self._pending, {}
        for key, name in pending.items():
            self._answered.add(key)
            self._on_name(name)
