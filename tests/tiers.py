"""The rule for tests that need something a laptop may lack (root, namespaces, FUSE,
a Debian tool): they skip where it is missing, but under ``CI=true`` a missing
requirement fails the run, because CI must run every tier.

    from tiers import require

    require(["needs root"] if os.geteuid() else [], tier="durability")
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import pytest

__all__ = ["require"]


def require(problems: Sequence[str], *, tier: str) -> None:
    """Skip (on a laptop) or fail (under ``CI=true``) when ``problems`` is not empty."""
    if not problems:
        return
    message = f"{tier}: " + "; ".join(problems)
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} — CI must run the {tier} tier", pytrace=False)
    pytest.skip(message)
