"""OASIS CAP 1.2 (Common Alerting Protocol) for announcements.

:func:`cap_xml` writes one ``alert`` for an announcement: ``identifier`` (its id),
``sender`` (the posting node), ``sent``, ``status`` (``Exercise`` for drill
announcements, else ``Actual``), ``msgType`` ``Alert``, ``scope`` (``Public`` for
every site, else ``Restricted`` with the audience), and one ``info`` per language
with category, event, urgency, severity, certainty, expiry, headline, description,
our audience as ``parameter``\\s (so an import reads it back exactly) and an
``area`` naming the sites. Tests validate it against the official CAP 1.2 schema.

:func:`read_cap` turns a CAP file into the arguments of ``announce_new``. CAP
comes from outside (other alerting systems), so it is read with limits: at most
256 KiB, no DOCTYPE (no entities at all), the CAP 1.2 namespace, and clear errors.
Written and read with the standard library: no XML dependency at run time.
"""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from meshdesk._fs import write_private
from meshdesk.errors import UsageError

__all__ = ["CAP_MAX", "CAP_NS", "cap_xml", "parse_cap", "read_cap", "write_cap"]

CAP_NS = "urn:oasis:names:tc:emergency:cap:1.2"
#: Bytes of a CAP file we read.
CAP_MAX = 256 * 1024
_SEVERITY = {"info": "Minor", "warning": "Moderate", "severe": "Severe"}
_FROM_CAP = {"Extreme": "severe", "Severe": "severe", "Moderate": "warning"}
_URGENCY = {"info": "Expected", "warning": "Expected", "severe": "Immediate"}
_LANGS = {"ja": "ja-JP", "en": "en-US"}
_TO = "meshdesk-to"


def _cap_time(when: str) -> str:
    """CAP's dateTime: no fractions, an explicit offset (``+00:00``, never ``Z``)."""
    parsed = dt.datetime.fromisoformat(when.replace("Z", "+00:00"))
    return parsed.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def cap_xml(view: dict[str, Any], *, sender: str) -> bytes:
    """One CAP 1.2 alert from an announcement's view (``announce_show``)."""
    ET.register_namespace("", CAP_NS)

    def sub(parent: ET.Element, tag: str, text: str | None = None) -> ET.Element:
        node = ET.SubElement(parent, f"{{{CAP_NS}}}{tag}")
        if text is not None:
            node.text = text
        return node

    to = view["to"]
    targets = [f"site:{s}" for s in to["sites"]] + [f"role:{r}" for r in to["roles"]]
    targets += [f"dept:{d}" for d in to["departments"]]
    alert = ET.Element(f"{{{CAP_NS}}}alert")
    sub(alert, "identifier", view["id"])
    sub(alert, "sender", sender)
    sub(alert, "sent", _cap_time(view["posted_at"]))
    sub(alert, "status", "Exercise" if view["exercise"] else "Actual")
    sub(alert, "msgType", "Alert")
    sub(alert, "scope", "Restricted" if targets else "Public")
    if targets:
        sub(alert, "restriction", "meshdesk: " + " ".join(targets))
    for lang in ("ja", "en"):
        title, body = view.get(f"title_{lang}"), view.get(f"body_{lang}")
        if title is None and body is None:
            continue
        info = sub(alert, "info")
        sub(info, "language", _LANGS[lang])
        sub(info, "category", "Other")
        sub(info, "event", title or body)
        sub(info, "urgency", _URGENCY[view["severity"]])
        sub(info, "severity", _SEVERITY[view["severity"]])
        sub(info, "certainty", "Observed")
        if view.get("expires_at"):
            sub(info, "expires", _cap_time(view["expires_at"]))
        sub(info, "senderName", f"{view['from']} ({view['op']})")
        if title:
            sub(info, "headline", title)
        if body:
            sub(info, "description", body)
        for target in targets:
            param = sub(info, "parameter")
            sub(param, "valueName", _TO)
            sub(param, "value", target)
        area = sub(info, "area")
        sites = to["sites"]
        sub(area, "areaDesc", ", ".join(sites) if sites else "all sites")
    return bytes(ET.tostring(alert, encoding="utf-8", xml_declaration=True))


def write_cap(view: dict[str, Any], out: Path) -> Path:
    """Write the CAP alert of an announcement's view to ``out`` (atomically, 0600).

    Raises:
        UsageError: ``out`` cannot be written.
    """
    data = cap_xml(view, sender=f"{view['from_node']}@meshdesk")
    try:
        write_private(out, data, overwrite=True)
    except OSError as exc:
        raise UsageError(f"cannot write {out}: {exc.strerror or exc}") from None
    return out


def _time_arg(text: str | None) -> str | None:
    if text is None:
        return None
    try:
        return dt.datetime.fromisoformat(text.strip()).isoformat()
    except ValueError:
        raise UsageError(f"CAP: {text!r} is not a date and time") from None


def parse_cap(data: bytes) -> dict[str, Any]:
    """The ``announce_new`` arguments (without the operator) of a CAP 1.2 alert.

    Raises:
        UsageError: too large, a DOCTYPE, not XML, not a CAP 1.2 alert, or no
            ``info`` with a headline or event. One line, naming the problem.
    """
    if len(data) > CAP_MAX:
        raise UsageError(f"CAP: the file is larger than {CAP_MAX // 1024} KiB")
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise UsageError("CAP: a DOCTYPE or entity declaration is not accepted")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise UsageError(f"CAP: not well-formed XML ({exc})") from None
    if root.tag != f"{{{CAP_NS}}}alert":
        raise UsageError(f"CAP: expected a CAP 1.2 alert ({CAP_NS}), got {root.tag[:80]!r}")

    def find(parent: ET.Element, tag: str) -> str | None:
        node = parent.find(f"{{{CAP_NS}}}{tag}")
        return None if node is None or node.text is None else node.text.strip() or None

    status = find(root, "status")
    args: dict[str, Any] = {"exercise": status in ("Exercise", "Test")}
    severity = "info"
    targets: list[str] = []
    expires: str | None = None
    for info in root.findall(f"{{{CAP_NS}}}info"):
        language = (find(info, "language") or "en-US").lower()
        lang = "ja" if language.startswith("ja") else "en"
        title = find(info, "headline") or find(info, "event")
        if title is None or f"title_{lang}" in args:
            continue
        args[f"title_{lang}"] = title[:120]
        body = find(info, "description")
        if body is not None:
            args[f"body_{lang}"] = body[:4000]
        severity = _FROM_CAP.get(find(info, "severity") or "", severity)
        expires = expires or find(info, "expires")
        for param in info.findall(f"{{{CAP_NS}}}parameter"):
            value = find(param, "value")
            if find(param, "valueName") == _TO and value is not None and value not in targets:
                targets.append(value)
    if not any(k.startswith("title_") for k in args):
        raise UsageError("CAP: no info block has a headline or event to announce")
    out: dict[str, Any] = {"severity": severity, "exercise": args.pop("exercise")}
    if "title_ja" in args:
        out.update(title=args.pop("title_ja"), lang="ja", body=args.pop("body_ja", None))
        out.update({k: v for k, v in args.items() if k in ("title_en", "body_en")})
    else:
        out.update(title=args.pop("title_en"), lang="en", body=args.pop("body_en", None))
    if targets:
        out["to"] = targets
    if expires is not None:
        out["expires"] = _time_arg(expires)
    return {k: v for k, v in out.items() if v is not None}


def read_cap(path: Path) -> dict[str, Any]:
    """:func:`parse_cap` of a file (refused before reading when too large)."""
    try:
        size = path.stat().st_size
        if size > CAP_MAX:
            raise UsageError(f"CAP: {path} is larger than {CAP_MAX // 1024} KiB")
        return parse_cap(path.read_bytes())
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
