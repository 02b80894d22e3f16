"""Screens of the console; each gets the :class:`~meshdesk.tui.console.Console`."""

from __future__ import annotations

from meshdesk.tui.screens.call import CallScreen, PickScreen
from meshdesk.tui.screens.citizen import QrScreen
from meshdesk.tui.screens.dashboard import DashboardScreen
from meshdesk.tui.screens.form import CaseFormScreen
from meshdesk.tui.screens.help import HelpScreen
from meshdesk.tui.screens.log import LogScreen
from meshdesk.tui.screens.notices import NoticesScreen
from meshdesk.tui.screens.queue import QueueScreen
from meshdesk.tui.screens.sync import SyncScreen

__all__ = [
    "CallScreen",
    "CaseFormScreen",
    "DashboardScreen",
    "HelpScreen",
    "LogScreen",
    "NoticesScreen",
    "PickScreen",
    "QrScreen",
    "QueueScreen",
    "SyncScreen",
]
