"""The operator console (Textual), imported as ``meshdesk.tui``.

The core never imports this package. The console talks to a node only through
:class:`~meshdesk.tui.api.NodeApi`: over the control socket
(:class:`~meshdesk.tui.client.SocketNode`) or a :class:`~meshdesk.tui.fake.FakeNode`.
"""

from __future__ import annotations

from meshdesk.tui.api import ConnectionLost, Event, NodeApi
from meshdesk.tui.app import MeshdeskApp
from meshdesk.tui.client import SocketNode
from meshdesk.tui.fake import FakeNode

__all__ = ["ConnectionLost", "Event", "FakeNode", "MeshdeskApp", "NodeApi", "SocketNode"]
