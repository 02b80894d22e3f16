"""Replication of consultation records (imported as ``meshdesk.sync``).

:class:`SyncCore` is the sans-IO core of one link: it takes the peer's sync frames
and its driver's answers, and returns frames to send and store work to do. The
async driver that moves frames and talks to the store is a separate, thin shell.
See :mod:`meshdesk.sync.core` for the protocol and :mod:`meshdesk.sync.messages`
for the inputs and effects.
"""

from __future__ import annotations

from meshdesk.sync.core import SyncCore, SyncProgress
from meshdesk.sync.messages import (
    SYNC_FRAME_TYPES,
    Deferred,
    Effect,
    EventsLoaded,
    Input,
    LocalAdded,
    LocalLog,
    LocalRun,
    NeedEvents,
    Rejected,
    ReportPeer,
    Run,
    Send,
    Stored,
    SyncConfig,
    SyncFrame,
    Tick,
    VerifyAndStore,
)

__all__ = [
    "SYNC_FRAME_TYPES",
    "Deferred",
    "Effect",
    "EventsLoaded",
    "Input",
    "LocalAdded",
    "LocalLog",
    "LocalRun",
    "NeedEvents",
    "Rejected",
    "ReportPeer",
    "Run",
    "Send",
    "Stored",
    "SyncConfig",
    "SyncCore",
    "SyncFrame",
    "SyncProgress",
    "Tick",
    "VerifyAndStore",
]
