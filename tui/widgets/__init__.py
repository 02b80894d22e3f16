"""Widgets of the console."""

from __future__ import annotations

from meshdesk.tui.widgets.banner import Banner
from meshdesk.tui.widgets.case_table import CaseTable
from meshdesk.tui.widgets.preview import VideoPreview

__all__ = ["Banner", "CaseTable", "VideoPreview"]
