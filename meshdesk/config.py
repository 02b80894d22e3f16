"""The node configuration: ``config.toml`` in the node home.

Every key is optional; a missing file means all defaults. Each problem in the file is
reported as one :class:`~meshdesk.errors.ConfigError` line naming the file and the key::

    config.toml: network.listen: expected HOST:PORT, got '0.0.0.0'

The dataclasses validate themselves (``ValueError``), so a ``Config`` built in code,
e.g. a test shrinking timings, holds the same invariants as one loaded from disk.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import re
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

from meshdesk._fs import write_private
from meshdesk.errors import ConfigError

__all__ = [
    "DEFAULT_PORT",
    "DEFAULT_WEB_PORT",
    "CallSettings",
    "Config",
    "Endpoint",
    "HubSettings",
    "NetworkSettings",
    "NodeSettings",
    "RecordSettings",
    "Timings",
    "WebSettings",
    "config_text",
    "default_config_text",
    "load_config",
    "write_config",
    "write_default_config",
]

DEFAULT_PORT = 7420
DEFAULT_WEB_PORT = 7443

Language = Literal["ja", "en"]
_LANGUAGES: tuple[str, ...] = get_args(Language)
_ROLES = ("hq", "center", "desk")
_IFNAME_MAX = 15  # IFNAMSIZ - 1 on Linux, in bytes
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")  # "_" as resolvers allow


def _num(x: float) -> str:
    """A number as written in the file: ``-1`` rather than ``-1.0``."""
    return str(int(x)) if isinstance(x, int) or x.is_integer() else repr(x)


def _check_host(host: str) -> None:
    if ":" in host:
        ipaddress.IPv6Address(host)  # raises ValueError with a reason
        return
    labels = host.split(".")
    if labels[-1].isdigit():  # looks numeric: getaddrinfo would read it as IPv4
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(f"not a valid IPv4 address: {host!r}") from None
        return
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise ValueError(f"not a valid host name: {host!r}")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A host (IPv4, IPv6 or host name) and a TCP/UDP port; ``str()`` is canonical."""

    host: str
    port: int

    def __post_init__(self) -> None:
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise ValueError(f"port must be an integer, got {self.port!r}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0..65535, got {self.port}")
        _check_host(self.host)

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        """Parse ``HOST:PORT`` (IPv6 as ``[ADDR]:PORT``); raise ``ValueError`` if bad."""
        if text.startswith("["):
            addr, sep, port = text[1:].partition("]:")
            if not sep or not addr:
                raise ValueError(f"expected [IPV6]:PORT, got {text!r}")
            try:
                host = str(ipaddress.IPv6Address(addr))
            except ValueError:
                raise ValueError(f"brackets must hold an IPv6 address, got {text!r}") from None
        else:
            host, sep, port = text.rpartition(":")
            if not sep or not host:
                raise ValueError(f"expected HOST:PORT, got {text!r}")
            if ":" in host:
                raise ValueError(f"IPv6 needs brackets, e.g. '[::1]:7420', got {text!r}")
            host = host.lower()
        if not (port.isascii() and port.isdigit()) or len(port) > 5:
            raise ValueError(f"port must be a number 0..65535, got {port!r} in {text!r}")
        return cls(host, int(port))

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class NodeSettings:
    language: Language = "ja"
    #: Roles whose operators may post announcements from this node (meshdesk.notices).
    announce_roles: tuple[str, ...] = ("hq",)

    def __post_init__(self) -> None:
        if self.language not in _LANGUAGES:
            raise ValueError(f"language: must be one of 'ja', 'en', got {self.language!r}")
        object.__setattr__(self, "announce_roles", tuple(dict.fromkeys(self.announce_roles)))
        for role in self.announce_roles:
            if role not in _ROLES:
                raise ValueError(f"announce_roles: {role!r} is not one of hq, center, desk")


@dataclass(frozen=True, slots=True)
class NetworkSettings:
    """Interfaces, listen address and peer discovery. Lists become deduplicated tuples."""

    interfaces: tuple[str, ...] = ()
    listen: Endpoint = Endpoint("0.0.0.0", DEFAULT_PORT)
    static_peers: tuple[Endpoint, ...] = ()
    mdns: bool = True
    peer_exchange: bool = True

    def __post_init__(self) -> None:
        for i, name in enumerate(self.interfaces):
            bad = not name or len(name.encode()) > _IFNAME_MAX or "/" in name
            if bad or not all(c.isprintable() and not c.isspace() for c in name):
                raise ValueError(
                    f"interfaces[{i}]: must be 1..{_IFNAME_MAX} bytes without '/' or "
                    f"whitespace, got {name!r}"
                )
        for i, peer in enumerate(self.static_peers):
            if peer.port == 0:
                raise ValueError(f"static_peers[{i}]: a peer needs a port 1..65535, got '{peer}'")
        object.__setattr__(self, "interfaces", tuple(dict.fromkeys(self.interfaces)))
        object.__setattr__(self, "static_peers", tuple(dict.fromkeys(self.static_peers)))


@dataclass(frozen=True, slots=True)
class Timings:
    """Protocol timing knobs in seconds; tests shrink these instead of patching."""

    heartbeat_interval: float = 1.0
    dead_after: float = 5.0
    connect_timeout: float = 5.0
    reconnect_min: float = 0.5
    reconnect_max: float = 30.0
    #: Ask the network for peers again this often: a laptop that comes into reach
    #: later (a courier, a cable plugged in) is found without waiting for
    #: zeroconf's query backoff, which grows towards an hour.
    discovery_refresh: float = 20.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not math.isfinite(value):
                raise ValueError(f"{f.name}: must be a finite number, got {value}")
            if value <= 0:
                raise ValueError(f"{f.name}: must be > 0, got {_num(value)}")
        if self.dead_after <= self.heartbeat_interval:
            raise ValueError(
                f"dead_after: must be > heartbeat_interval ({_num(self.heartbeat_interval)}), "
                f"got {_num(self.dead_after)}"
            )
        if self.reconnect_max < self.reconnect_min:
            raise ValueError(
                f"reconnect_max: must be >= reconnect_min ({_num(self.reconnect_min)}), "
                f"got {_num(self.reconnect_max)}"
            )


@dataclass(frozen=True, slots=True)
class CallSettings:
    auto_accept: bool = False
    #: Outgoing media when this node answers: device, synthetic or file:PATH.
    media: str = "device"
    #: Received audio: "auto" plays it on the default output device if there is one.
    playback: str = "auto"
    #: Fall back to audio only when loss or RTT stays above these for 3 s.
    fallback_loss_pct: float = 10.0
    fallback_rtt_ms: float = 500.0
    #: The sound server's echo canceller for calls with a microphone: auto, on, off.
    echo_cancel: Literal["auto", "on", "off"] = "auto"
    #: The camera ``device`` media opens (v4l2).
    camera: str = "/dev/video0"
    #: The synthetic media's tone (Hz).
    tone_hz: int = 440

    def __post_init__(self) -> None:
        if self.echo_cancel not in ("auto", "on", "off"):
            raise ValueError(
                f"echo_cancel: expected 'auto', 'on' or 'off', got {self.echo_cancel!r}"
            )
        if not 100 <= self.tone_hz <= 4000:
            raise ValueError(f"tone_hz: must be between 100 and 4000, got {self.tone_hz}")
        if not self.camera.startswith("/"):
            raise ValueError(f"camera: expected an absolute device path, got {self.camera!r}")
        if self.playback not in ("auto", "off"):
            raise ValueError(f"playback: expected 'auto' or 'off', got {self.playback!r}")
        if not 0 < self.fallback_loss_pct <= 100:
            raise ValueError(
                f"fallback_loss_pct: must be in (0, 100], got {_num(self.fallback_loss_pct)}"
            )
        if self.fallback_rtt_ms <= 0:
            raise ValueError(f"fallback_rtt_ms: must be > 0, got {_num(self.fallback_rtt_ms)}")
        ok = self.media in ("device", "synthetic") or (
            self.media.startswith("file:") and len(self.media) > len("file:")
        )
        if not ok:
            raise ValueError(
                f"media: expected 'device', 'synthetic' or 'file:PATH', got {self.media!r}"
            )


@dataclass(frozen=True, slots=True)
class WebSettings:
    """The HTTPS port citizens' phones join calls on (see meshdesk.web)."""

    enabled: bool = True
    listen: Endpoint = Endpoint("0.0.0.0", DEFAULT_WEB_PORT)
    #: Plain HTTP here only redirects to the HTTPS port; port 0 turns it off.
    redirect_listen: Endpoint = Endpoint("0.0.0.0", 7080)
    #: Seconds an invitation may wait to be opened, and then to be admitted.
    invite_ttl: float = 600.0
    #: Seconds between looks at this machine's addresses (the certificate names them).
    address_check: float = 10.0

    def __post_init__(self) -> None:
        for name in ("invite_ttl", "address_check"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name}: must be a finite number > 0, got {_num(value)}")


#: Roles a node can have (``identity.Role`` values), for ``[records] export_roles``.
_ROLES = ("hq", "center", "desk")


@dataclass(frozen=True, slots=True)
class RecordSettings:
    """Citizen data stewardship: retention of personal data, who may export it."""

    #: Erase a case's personal data this many days after it was resolved or closed.
    erase_after_days: int = 0
    #: Seconds between looks for cases past their retention.
    retention_check: float = 3600.0
    #: Roles whose nodes may export personal fields (``--personal``).
    export_roles: tuple[str, ...] = ("hq",)

    def __post_init__(self) -> None:
        if not 0 <= self.erase_after_days <= 36500:
            raise ValueError(
                f"erase_after_days: must be 0 (off) to 36500, got {self.erase_after_days}"
            )
        if not math.isfinite(self.retention_check) or self.retention_check <= 0:
            raise ValueError(
                f"retention_check: must be a finite number > 0, got {_num(self.retention_check)}"
            )
        for role in self.export_roles:
            if role not in _ROLES:
                raise ValueError(f"export_roles: {role!r} is not a role ({', '.join(_ROLES)})")


_CITY = re.compile(r"[a-z0-9](?:[a-z0-9_]{0,30}[a-z0-9])?")
_HUB_URL = re.compile(r"tls://[^\s/]+:\d{1,5}")


@dataclass(frozen=True, slots=True)
class HubSettings:
    """The city HQ's feed to the prefecture hub (meshdesk.hub; off by default)."""

    enabled: bool = False
    #: The city's name on the feed ("": the municipality code of its hub credential).
    city: str = ""
    #: The hub servers' leaf ports, as "tls://HOST:PORT" (empty: the credential's).
    hub_urls: tuple[str, ...] = ()
    #: Where the HQ's own leaf node takes clients (this node only: loopback).
    leaf_listen: Endpoint = Endpoint("127.0.0.1", 7422)
    #: Events read from the store and published per batch.
    batch: int = 2000
    #: Seconds between looks for new events to publish: a fallback, as every stored
    #: run wakes the publisher at once.
    poll_interval: float = 1.0
    #: Seconds before a leaf node that died is started again.
    restart_delay: float = 2.0

    def __post_init__(self) -> None:
        if self.city and not _CITY.fullmatch(self.city):
            raise ValueError(
                f"city: {self.city!r} must be 1 to 32 of a-z, 0-9 and _ (not at either end)"
            )
        for url in self.hub_urls:
            if not _HUB_URL.fullmatch(url):
                raise ValueError(f"hub_urls: expected tls://HOST:PORT, got {url!r}")
        if not 1 <= self.batch <= 10_000:
            raise ValueError(f"batch: must be 1 to 10000, got {self.batch}")
        for name in ("poll_interval", "restart_delay"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name}: must be a finite number > 0, got {_num(value)}")


@dataclass(frozen=True, slots=True)
class Config:
    """The whole node configuration, one field per TOML table."""

    node: NodeSettings = field(default_factory=NodeSettings)
    network: NetworkSettings = field(default_factory=NetworkSettings)
    timings: Timings = field(default_factory=Timings)
    calls: CallSettings = field(default_factory=CallSettings)
    web: WebSettings = field(default_factory=WebSettings)
    records: RecordSettings = field(default_factory=RecordSettings)
    hub: HubSettings = field(default_factory=HubSettings)

    def with_overrides(
        self,
        *,
        listen: Endpoint | str | None = None,
        static_peers: Iterable[Endpoint | str] | None = None,
        interfaces: Iterable[str] | None = None,
        mdns: bool | None = None,
        web_listen: Endpoint | str | None = None,
        web_redirect: Endpoint | str | None = None,
    ) -> Config:
        """A copy with the given network (and web port) settings replaced (for flags).

        Strings are parsed as in the file. Raises ``ConfigError`` naming the setting.
        """
        changes: dict[str, Any] = {}
        try:
            if listen is not None:
                changes["listen"] = _endpoint(listen, "listen")
            if static_peers is not None:
                changes["static_peers"] = _endpoints(static_peers, "static_peers")
            if interfaces is not None:
                changes["interfaces"] = _strs(interfaces, "interfaces")
            if mdns is not None:
                changes["mdns"] = bool(mdns)
            web: dict[str, Any] = {}
            if web_listen is not None:
                web["listen"] = _endpoint(web_listen, "web_listen")
            if web_redirect is not None:
                web["redirect_listen"] = _endpoint(web_redirect, "web_redirect")
            return replace(
                self, network=replace(self.network, **changes), web=replace(self.web, **web)
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from None


# --- loading ------------------------------------------------------------------------------

_TABLES: dict[str, type[Any]] = {
    "node": NodeSettings,
    "network": NetworkSettings,
    "timings": Timings,
    "calls": CallSettings,
    "web": WebSettings,
    "records": RecordSettings,
    "hub": HubSettings,
}


def _describe(value: object) -> str:
    """TOML's name for a value's type, with the value when it is a scalar."""
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    for kind, name in ((int, "integer"), (float, "float"), (str, "string")):
        if isinstance(value, kind):
            return f"{name} {value!r}"
    if isinstance(value, dict):
        return "table"
    return "array" if isinstance(value, list | tuple) else "date/time"


def _to_bool(value: object, key: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{key}: expected true or false, got {_describe(value)}")
    return value


def _to_float(value: object, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key}: expected a number, got {_describe(value)}")
    return float(value)


def _to_str(value: object, key: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{key}: expected a string, got {_describe(value)}")
    return value


def _endpoint(value: object, key: str) -> Endpoint:
    if isinstance(value, Endpoint):
        return value
    text = _to_str(value, key)
    try:
        return Endpoint.parse(text)
    except ValueError as exc:
        raise ValueError(f"{key}: {exc}") from None


def _list(value: object, key: str) -> list[object]:
    if isinstance(value, str | dict) or not isinstance(value, Iterable):
        raise ValueError(f"{key}: expected an array of strings, got {_describe(value)}")
    return list(value)


@dataclass(frozen=True, slots=True)
class _Codec:
    """How one field's value is read from TOML (and checked) and written back."""

    load: Callable[[object, str], object]
    dump: Callable[[Any], str]


def _items(load: Callable[[object, str], Any], value: object, key: str) -> tuple[Any, ...]:
    return tuple(load(item, f"{key}[{i}]") for i, item in enumerate(_list(value, key)))


def _strs(value: object, key: str) -> tuple[str, ...]:
    return _items(_to_str, value, key)


def _endpoints(value: object, key: str) -> tuple[Endpoint, ...]:
    return _items(_endpoint, value, key)


def _dump_bool(value: bool) -> str:
    return "true" if value else "false"


def _to_int(value: object, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{key}: expected an integer, got {_describe(value)}")
    return value


def _dump_int(value: int) -> str:
    return str(int(value))


def _dump_float(value: float) -> str:
    """A TOML float: ``1.0``, ``0.25``, ``1e+16``, ``inf``, never an integer."""
    value = float(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return repr(value)  # always holds '.' or 'e', and reads back as the same float


_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def _dump_str(value: str) -> str:
    """A TOML basic string; other text (Japanese too) is written as it is."""
    out = []
    for ch in value:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ch < " " or ch == "\x7f":  # control characters TOML does not allow raw
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _codec(hint: object) -> _Codec:
    """The codec for a field's type, from the type itself (``typing.get_type_hints``)."""
    if hint is bool:
        return _Codec(_to_bool, _dump_bool)
    if hint is float:
        return _Codec(_to_float, _dump_float)
    if hint is int:
        return _Codec(_to_int, _dump_int)
    if hint is str:
        return _Codec(_to_str, _dump_str)
    if get_origin(hint) is Literal and all(isinstance(a, str) for a in get_args(hint)):
        return _Codec(_to_str, _dump_str)  # the dataclass checks the value is one of them
    if hint is Endpoint:
        return _Codec(_endpoint, lambda value: _dump_str(str(value)))
    if get_origin(hint) is tuple:
        item_type, *rest = get_args(hint)
        if rest == [Ellipsis]:
            item = _codec(item_type)
            return _Codec(
                functools.partial(_items, item.load),
                lambda value: "[" + ", ".join(item.dump(v) for v in value) + "]",
            )
    raise TypeError(f"meshdesk.config has no converter for fields of type {hint!r}")


def _codecs(cls: type[Any]) -> dict[str, _Codec]:
    hints = get_type_hints(cls)
    return {f.name: _codec(hints[f.name]) for f in fields(cls)}


#: Every table's fields, in file order, with their codecs (checked at import).
_CODECS: dict[str, dict[str, _Codec]] = {name: _codecs(cls) for name, cls in _TABLES.items()}


def _load_table(table: str, cls: type[Any], raw: object) -> Any:
    if not isinstance(raw, dict):
        raise ValueError(f"{table}: expected a table, got {_describe(raw)}")
    known = _CODECS[table]
    kwargs = {}
    for key, value in raw.items():
        if key not in known:
            raise ValueError(f"unknown key '{table}.{key}' (known: {', '.join(sorted(known))})")
        kwargs[key] = known[key].load(value, f"{table}.{key}")
    try:
        return cls(**kwargs)
    except ValueError as exc:
        raise ValueError(f"{table}.{exc}") from None


def _from_document(doc: dict[str, Any]) -> Config:
    tables = {}
    for name, raw in doc.items():
        if name not in _TABLES:
            what = "table" if isinstance(raw, dict) else "key"
            known = ", ".join(sorted(_TABLES))
            raise ValueError(f"unknown {what} '{name}' (known tables: {known})")
        tables[name] = _load_table(name, _TABLES[name], raw)
    return Config(**tables)


def load_config(path: Path) -> Config:
    """Read ``config.toml``; a missing file gives the defaults.

    Raises:
        ConfigError: the file is unreadable, not UTF-8, not TOML, or holds a bad key
            or value. The message is one line naming the file and the key.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return Config()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        text = data.decode("utf-8-sig")  # tolerate the BOM some Windows editors write
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}: line {line}: not UTF-8 text (save it as UTF-8)") from exc
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib (3.11) puts the position only into the text: "Invalid value (at line 3, ...)"
        m = re.fullmatch(r"(.*) \(at (.*)\)", str(exc))
        where = f"{m[2]}: " if m else ""
        raise ConfigError(f"{path}: {where}invalid TOML ({m[1] if m else exc})") from exc
    try:
        return _from_document(doc)
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None


# --- writing ------------------------------------------------------------------------------

_HEADER = """\
# meshdesk node configuration (TOML, UTF-8).
#
# Every setting is optional: a key that is left out, or commented out with '#',
"""
_KEEPS_DEFAULT = "# keeps the default shown here. Comments may be written in any language."
_KEEPS_NOTED = """\
# keeps its default: the value shown here, or on the "Default:" line above a
# changed value. Comments may be written in any language."""

#: What each key means, written above it in the file (a table's "" entry introduces
#: the table). A key without an entry shares the comment of the key before it
#: (``reconnect_max``, ``fallback_rtt_ms``); a test checks that no other key lacks one.
_HELP: dict[str, dict[str, str]] = {
    "node": {
        "language": 'Language of the operator console: "ja" (Japanese) or "en" (English).',
        "announce_roles": """\
Roles of node ("hq", "center", "desk") whose operators may post announcements
to other sites from this node. Every node shows what it receives either way.""",
    },
    "network": {
        "interfaces": """\
Network interfaces to use, by name, e.g. ["wlan0", "eth0"].
Empty means every IPv4 interface that is up, except loopback.""",
        "listen": """\
Where to accept connections from peers, as "HOST:PORT".
Write IPv6 in brackets, e.g. "[::]:7420". Port 0 picks any free port.""",
        "static_peers": """\
Peers to connect to even when discovery cannot see them (another subnet,
multicast blocked), e.g. ["10.0.0.2:7420", "[fd00::2]:7420", "hq.local:7420"].""",
        "mdns": "Find peers on the local network with mDNS (zeroconf).",
        "peer_exchange": "Learn about more peers from the peers this node is connected to.",
    },
    "timings": {
        "": "In seconds; fractions such as 0.5 are allowed. Every value must be above 0.",
        "heartbeat_interval": "How often to tell connected peers that this node is alive.",
        "dead_after": """\
Consider a peer gone after this long without a word from it.
Must be greater than heartbeat_interval.""",
        "connect_timeout": "Give up on a connection attempt after this long.",
        "reconnect_min": """\
Wait between attempts to reconnect: starts at reconnect_min and grows up to
reconnect_max (which must be at least reconnect_min).""",
        "discovery_refresh": """\
Ask the local network for meshdesk nodes again this often, so a laptop that
comes into reach later (a courier arriving, a cable plugged in) is found soon.""",
    },
    "calls": {
        "auto_accept": "Answer incoming calls without asking the operator first.",
        "media": """\
What this node sends when it answers: "device" (camera and microphone),
"synthetic" (test pattern and tone, for drills) or "file:PATH".""",
        "playback": """\
Received audio: "auto" plays it on the sound server (PulseAudio or PipeWire,
through pacat) or else the ALSA card, when there is one; "off" never plays it.""",
        "echo_cancel": """\
A laptop's speaker is heard by its own microphone. "auto" uses the sound
server's echo canceller (module-echo-cancel) when it offers one, loading it if
needed; "on" refuses a microphone call without it; "off" never uses it (use a
headset then).""",
        "camera": """\
The camera "device" media opens. A missing or busy camera makes the call audio
only (one line says so); it never fails the call.""",
        "tone_hz": """\
The pitch (Hz) of the "synthetic" media's tone: give drill nodes different ones
to tell who is heard.""",
        "fallback_loss_pct": """\
A call falls back to audio only when packet loss (percent) or round-trip time
(milliseconds) stays above these for 3 seconds.""",
    },
    "web": {
        "": """\
The HTTPS page citizens open on their own phones (QR code from an invitation).
It needs the web sub-CA of a kit issued with it; without one the port stays off.""",
        "enabled": "Serve the citizens' page (only invitation-scoped endpoints).",
        "listen": 'Where to serve it, as "HOST:PORT" (the QR code names this port).',
        "redirect_listen": """\
Plain http:// requests here are redirected to the HTTPS port. Port 0: off.""",
        "invite_ttl": """\
Seconds an invitation waits to be opened on a phone, then to be admitted.""",
        "address_check": """\
Seconds between looks at this laptop's IP addresses: the page's certificate
names them and is renewed when they change.""",
    },
    "records": {
        "": """\
Citizen data stewardship. Erasing a case drops its personal data (the sealed
blocks and keys) on every node; the case's open facts and history stay.""",
        "erase_after_days": """\
Erase a case's personal data this many days after it was resolved or closed
(counted from its last change), through the same signed erasure as
`meshdesk case erase`, with receipts. 0 (the default) never erases by itself.
Only an HQ node, or the case's origin for its own cases, erases.""",
        "retention_check": "Seconds between looks for cases past that time.",
        "export_roles": """\
Roles whose nodes may export personal fields (`meshdesk export --personal`):
any of "hq", "center", "desk". Only cases this node can read are exported.""",
    },
    "hub": {
        "": """\
When the wide-area network returns, the city HQ feeds the prefecture hub (NATS
JetStream, then PostgreSQL) with what the prefecture may see: open metadata,
announcements, erasures, and a case's personal block, still sealed, only when the
citizen consented to "prefecture". The HQ runs a nats-server leaf node for it with
the hub credential that `meshdesk hub join FILE` wrote into the node home's hub/
folder. See docs/ARCHITECTURE.md, "Prefecture hub".""",
        "enabled": "Run the leaf node and publish the feed (HQ nodes only).",
        "city": """\
The city's name on the feed: 1 to 32 of a-z, 0-9, _. Empty: the municipality code
of the hub credential (`meshdesk hub join`), as the prefecture expects.""",
        "hub_urls": """\
The hub servers' leaf ports, e.g. ["tls://hub1.pref.example:7422"], tried in turn.
Empty: the URLs in the hub credential.""",
        "leaf_listen": """\
Where the leaf node takes clients, as "HOST:PORT": keep it on the loopback.""",
        "batch": "Events read from the store and published to the leaf node per batch.",
        "poll_interval": "Seconds between looks for newly stored events to publish (a\n"
        "fallback: each stored run wakes the feed at once).",
        "restart_delay": "Seconds before a leaf node that died is started again.",
    },
}


def _comment(text: str) -> list[str]:
    return [f"# {line}" for line in text.splitlines()]


def config_text(config: Config) -> str:
    """``config`` as a commented ``config.toml`` for a person to read and edit.

    Every key is written, each under a comment that says what it means; a value that
    differs from the default gets a ``# Default: …`` line as well.
    ``load_config`` of the text gives ``config`` back.
    """
    defaults = Config()
    keeps = _KEEPS_DEFAULT if config == defaults else _KEEPS_NOTED
    lines = [_HEADER + keeps]
    for table, codecs in _CODECS.items():
        settings, default_settings = getattr(config, table), getattr(defaults, table)
        lines += ["", f"[{table}]"]
        lines += _comment(_HELP[table].get("", ""))
        for key, codec in codecs.items():
            lines += _comment(_HELP[table].get(key, ""))
            value, default = getattr(settings, key), getattr(default_settings, key)
            if value != default:
                lines.append(f"# Default: {codec.dump(default)}")
            lines.append(f"{key} = {codec.dump(value)}")
    return "\n".join(lines) + "\n"


def default_config_text() -> str:
    """A commented ``config.toml`` that holds the defaults, for a person to edit."""
    return config_text(Config())


def write_config(path: Path, config: Config, *, overwrite: bool = True) -> None:
    """Write ``config`` as :func:`config_text` to ``path``: owner-only (0o600), atomically.

    The text goes to a temporary file in the same folder that is then renamed over
    ``path``, so a reader sees the old file or the new one, never half of it.

    Raises:
        ConfigError: ``path`` exists and ``overwrite`` is false, or it cannot be written.
    """
    try:
        write_private(path, config_text(config).encode("utf-8"), overwrite=overwrite)
    except FileExistsError as exc:
        raise ConfigError(f"{path}: already exists; not overwriting it") from exc
    except OSError as exc:
        verb = "write" if path.exists() else "create"
        raise ConfigError(f"{path}: cannot {verb}: {exc.strerror or exc}") from exc


def write_default_config(path: Path) -> None:
    """Write :func:`default_config_text` to ``path``, readable by the owner only (0o600).

    Raises:
        ConfigError: ``path`` exists already (it is never overwritten) or cannot be written.
    """
    write_config(path, Config(), overwrite=False)
