"""Citizens joining from their phones: the QR code to show, and admitting who waits.

Staff invite from the case form (the case's consultation) or the call screen (the
running call): the node makes a single-use invitation and :class:`QrScreen` shows
its QR code, black on white, for the citizen's phone to scan. When the citizen
taps "start" on the phone, the console rings ("citizen waiting" with the 4-digit
code the phone shows) and staff admit or decline from the call screen.
"""

from __future__ import annotations

from typing import Any, ClassVar

import segno
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, Static

from meshdesk.tui.console import Console, attempt, plain
from meshdesk.tui.i18n import N_, tr

__all__ = ["QrScreen", "invite_citizen", "qr_text", "waiting_citizens"]


def qr_text(data: str) -> Text:
    """``data`` as a QR code in half-block characters, dark on light (what phones read)."""
    rows = [list(row) for row in segno.make(data, error="m").matrix_iter(scale=1, border=2)]
    if len(rows) % 2:
        rows.append([0] * len(rows[0]))
    lines = []
    for top, bottom in zip(rows[::2], rows[1::2], strict=True):
        chars = {(1, 1): "█", (1, 0): "▀", (0, 1): "▄", (0, 0): " "}
        lines.append("".join(chars[(bool(t), bool(b))] for t, b in zip(top, bottom, strict=True)))
    return Text("\n".join(lines), style="black on white", no_wrap=True)


def waiting_citizens(console: Console) -> list[dict[str, Any]]:
    """Invitations whose citizen waits in the lobby, oldest first."""
    return [i for i in console.citizens.values() if i.get("state") == "waiting"]


class QrScreen(ModalScreen[None]):
    """An invitation's QR code and URL; Escape closes (the invitation stays valid)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "close", N_("Close"))]

    def __init__(self, invite: dict[str, Any]) -> None:
        super().__init__()
        self.invite = invite

    def compose(self) -> ComposeResult:
        url = str(self.invite.get("url") or "")
        with Vertical(id="qr"):
            yield Label(plain(tr("Show this to the citizen")), classes="panel-title")
            yield Static(qr_text(url), id="qr-code")
            yield Static(plain(url), id="qr-url")
            yield Static(
                plain(
                    tr("Single use; expires in {minutes} min if not opened.").format(
                        minutes=round(float(self.invite.get("expires_in_s") or 0) / 60)
                    )
                )
            )
            yield Static(plain(tr("The phone will show a 4-digit code; admit it with y.")))

    def action_close(self) -> None:
        self.dismiss(None)


async def invite_citizen(
    widget: Any, console: Console, *, case_id: str | None, call_id: str | None
) -> None:
    """Make an invitation on the node and show its QR code (errors become notices)."""
    invite = await attempt(
        widget, console.api.request("invite_new", {"case": case_id, "call_id": call_id})
    )
    if isinstance(invite, dict):
        console.citizens[str(invite["invite_id"])] = invite
        console.publish("citizens")
        widget.app.push_screen(QrScreen(invite))
