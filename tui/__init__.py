"""The operator console (imported as ``meshdesk.tui``).

The Textual app arrives with the console issue; the core never imports this package.
"""

from __future__ import annotations

__all__: list[str] = []
