"""Fixtures shared by every test tier.

``wait_until`` and ``async_wait_until`` poll a condition instead of sleeping; they
are fixtures, requested by name, and their types are importable for annotations
from tests/waits.py (this folder is on ``sys.path`` through pytest's ``pythonpath``
setting; the tests directory itself is not a package)::

    from waits import AsyncWaitUntil, WaitUntil

    def test_peer_appears(wait_until: WaitUntil) -> None:
        wait_until(lambda: peer.seen, timeout=5, message="peer never showed up")

    async def test_link_up(async_wait_until: AsyncWaitUntil) -> None:
        await async_wait_until(lambda: link.ready, timeout=5)

``ca`` is a deployment CA, one per test module.
"""

from __future__ import annotations

import datetime as dt

import pytest
import waits

from meshdesk.identity import CertificateAuthority

#: When the shared ``ca`` is created. Its certificate is back-dated a day, so every
#: test clock on 2026-11-22 (the date the identity and link tests use) is inside it.
CA_NOW = dt.datetime(2026, 11, 22, 9, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="session")
def wait_until() -> waits.WaitUntil:
    """``wait_until(predicate, timeout, interval=0.05, *, message=None)``."""
    return waits.wait_until


@pytest.fixture(scope="session")
def async_wait_until() -> waits.AsyncWaitUntil:
    """``await async_wait_until(predicate, timeout, interval=0.05, *, message=None)``."""
    return waits.async_wait_until


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    """The deployment CA of "デモ市" (a new key per test module)."""
    return CertificateAuthority.create("デモ市", now=CA_NOW)
