"""Reaching every site: HQ announcements with receipts, operator messages, CAP 1.2.

- :mod:`meshdesk.notices.events`: the event kinds (block 20–29) and their strict codec.
- :mod:`meshdesk.notices.board`: :class:`NoticeBoard`, the fold and the operations.
- :mod:`meshdesk.notices.cap`: OASIS CAP 1.2 export and import of announcements.
"""

from __future__ import annotations

from meshdesk.notices.board import NoticeBoard, addressed, parse_expiry, parse_targets
from meshdesk.notices.events import (
    Announcement,
    Message,
    NoticeKind,
    Receipt,
    ReceiptState,
    Severity,
    decode_notice,
    is_notice_kind,
)

__all__ = [
    "Announcement",
    "Message",
    "NoticeBoard",
    "NoticeKind",
    "Receipt",
    "ReceiptState",
    "Severity",
    "addressed",
    "decode_notice",
    "is_notice_kind",
    "parse_expiry",
    "parse_targets",
]
