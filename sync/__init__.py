"""Replication of consultation records (imported as ``meshdesk.sync``).

The sans-IO replication core and its async driver arrive with the records issue.
"""

from __future__ import annotations

__all__: list[str] = []
