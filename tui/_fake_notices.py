"""The notices half of the fake node: announcements and messages as the notice
operations return them (:mod:`meshdesk.notices.board`'s views).

A test plays HQ or another site with :meth:`FakeNotices.receive_announcement` and
:meth:`FakeNotices.receive_message`; each change is published as a ``notice`` event,
as a node does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from meshdesk.errors import UsageError
from meshdesk.ops import Args

__all__ = ["FakeNotices"]


def _iso(ms: int) -> str:
    import datetime as dt

    return (
        dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
        .isoformat(timespec="seconds")
        .replace("+00:00", "Z")
    )


class FakeNotices:
    """Notice ops in memory; every change is published as a ``notice`` event."""

    node_id: str
    name: str
    now_ms: Callable[[], int]
    announcements: dict[str, dict[str, Any]]
    messages: dict[str, dict[str, Any]]

    def publish(self, kind: str, data: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def _next_id(self) -> str:
        raise NotImplementedError

    def notice_handlers(self) -> dict[str, Callable[[Args], Any]]:
        """The notice operations of the registry, by name."""
        return {
            "announce_new": self._announce_new,
            "announce_list": lambda a: {"announcements": self._shown(all_=a.flag("all"))},
            "announce_show": lambda a: dict(self._find_notice(self.announcements, a.text("id"))),
            "announce_ack": self._announce_ack,
            "announce_banner": lambda _: {"announcements": self._banner()},
            "message_send": self._message_send,
            "message_list": lambda _: {
                "messages": [dict(m) for m in reversed(self.messages.values())]
            },
            "message_read": self._message_read,
            "bundle_export": self._bundle_export,
            "bundle_import": self._bundle_import,
        }

    def _banner(self) -> list[dict[str, Any]]:
        return [
            a
            for a in self._shown(all_=False)
            if a["severity"] == "severe"
            and not a["acknowledged"]
            and a["from_node"] != self.node_id
        ]

    def _shown(self, *, all_: bool) -> list[dict[str, Any]]:
        return [dict(a) for a in reversed(self.announcements.values()) if all_ or not a["expired"]]

    @staticmethod
    def _find_notice(table: dict[str, dict[str, Any]], text: str) -> dict[str, Any]:
        found = [v for k, v in table.items() if k.startswith(text) or k[24:].startswith(text)]
        if len(found) != 1:
            raise UsageError(f"no single notice {text!r} on this node")
        return found[0]

    def _changed(self, notice_id: str) -> None:
        self.publish("notice", {"ids": [notice_id]})

    def receive_announcement(
        self, title: str, *, severity: str = "info", body: str | None = None, by: str = "本部"
    ) -> str:
        """An announcement from another node arrives (for tests and snapshots)."""
        notice_id = self._next_id()
        self.announcements[notice_id] = {
            "id": notice_id, "from_node": "FAKEOTH-AAAAAAA-BBBBBBB-CCCCCC2", "from": by,
            "from_site": "市役所", "op": "山田", "severity": severity, "title_ja": title,
            "title_en": None, "body_ja": body, "body_en": None,
            "to": {"sites": [], "roles": [], "departments": []},
            "posted_at": _iso(self.now_ms()), "expires_at": None, "expired": False,
            "exercise": False, "acknowledged": False, "delivered_count": 1, "read_count": 0,
        }  # fmt: skip
        self._changed(notice_id)
        return notice_id

    def _announce_new(self, args: Args) -> dict[str, Any]:
        notice_id = self._next_id()
        lang = args.maybe_text("lang") or "ja"
        view: dict[str, Any] = {
            "id": notice_id, "from_node": self.node_id, "from": self.name,
            "from_site": None, "op": args.text("operator"),
            "severity": args.maybe_text("severity") or "info",
            "title_ja": args.text("title") if lang == "ja" else None,
            "title_en": args.text("title") if lang == "en" else args.maybe_text("title_en"),
            "body_ja": args.maybe_text("body") if lang == "ja" else None,
            "body_en": args.maybe_text("body") if lang == "en" else args.maybe_text("body_en"),
            "to": {"sites": [], "roles": [], "departments": []},
            "posted_at": _iso(self.now_ms()), "expires_at": None, "expired": False,
            "exercise": bool(args.maybe("exercise", bool)), "acknowledged": False,
            "delivered_count": 0, "read_count": 0, "sites": {}, "not_delivered": [],
        }  # fmt: skip
        self.announcements[notice_id] = view
        self._changed(notice_id)
        return dict(view)

    def _announce_ack(self, args: Args) -> dict[str, Any]:
        a = self._find_notice(self.announcements, args.text("id"))
        if not a["acknowledged"]:
            a["acknowledged"] = True
            a["read_count"] += 1
            self._changed(a["id"])
        return dict(a)

    def receive_message(self, text: str, *, by: str = "避難所1") -> str:
        """A message from another node arrives (for tests and snapshots)."""
        notice_id = self._next_id()
        self.messages[notice_id] = {
            "id": notice_id, "from_node": "FAKEOTH-AAAAAAA-BBBBBBB-CCCCCC2", "from": by,
            "op": "田中", "to_node": self.node_id, "to": self.name, "to_dept": None,
            "case": None, "text": text, "sent_at": _iso(self.now_ms()), "outgoing": False,
            "read_here": False, "recipients": [],
        }  # fmt: skip
        self._changed(notice_id)
        return notice_id

    def _message_send(self, args: Args) -> dict[str, Any]:
        to, dept = args.maybe_text("to"), args.maybe_text("dept")
        if (to is None) == (dept is None):
            raise UsageError("say whom: --to NODE or --dept DEPARTMENT (one of them)")
        notice_id = self._next_id()
        self.messages[notice_id] = {
            "id": notice_id, "from_node": self.node_id, "from": self.name,
            "op": args.text("operator"), "to_node": to, "to": to or f"dept:{dept}",
            "to_dept": dept, "case": args.maybe_text("case"), "text": args.text("text"),
            "sent_at": _iso(self.now_ms()), "outgoing": True, "read_here": False,
            "recipients": [],
        }  # fmt: skip
        self._changed(notice_id)
        return dict(self.messages[notice_id])

    @staticmethod
    def _absolute(args: Args, key: str) -> str:
        path = args.text(key)
        if not path.startswith("/"):
            raise UsageError(f"{key} must be an absolute path (the node may run elsewhere)")
        return path

    def _bundle_export(self, args: Args) -> dict[str, Any]:
        """What a node says after writing a bundle (nothing is written here)."""
        events = 2 * len(getattr(self, "cases", {})) + len(self.announcements)
        return {
            "file": self._absolute(args, "out"), "runs": events, "events": events,
            "authors": 1, "certificates": 1, "bytes": 570 * events, "seconds": 0.0,
        }  # fmt: skip

    def _bundle_import(self, args: Args) -> dict[str, Any]:
        """A bundle from another site: one announcement arrives with it."""
        self._absolute(args, "file")
        self.receive_announcement("USBで届いたお知らせ", by="避難所2")
        return {
            "creator": "避難所2", "created_at": _iso(self.now_ms()), "runs": 1, "events": 1,
            "new_events": 1, "seconds": 0.0,
        }  # fmt: skip

    def _message_read(self, args: Args) -> dict[str, Any]:
        m = self._find_notice(self.messages, args.text("id"))
        if m["outgoing"]:
            raise UsageError("that is a message this node sent")
        m["read_here"] = True
        self._changed(m["id"])
        return dict(m)
