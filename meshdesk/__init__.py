"""meshdesk: an offline-first mesh communicator for municipal consultation desks.

The core package. ``meshdesk.sync`` (replication) and ``meshdesk.tui`` (console)
are built from the top-level ``sync/`` and ``tui/`` folders.
"""

from __future__ import annotations

from meshdesk._version import __version__
from meshdesk.errors import (
    AuthError,
    CallError,
    ChannelClosed,
    ConfigError,
    HomeError,
    KitError,
    LinkError,
    MeshdeskError,
    StoreError,
    SyncError,
    UsageError,
    WireError,
)

__all__ = [
    "AuthError",
    "CallError",
    "ChannelClosed",
    "ConfigError",
    "HomeError",
    "KitError",
    "LinkError",
    "MeshdeskError",
    "StoreError",
    "SyncError",
    "UsageError",
    "WireError",
    "__version__",
]
