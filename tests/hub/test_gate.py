"""The hub's second gate: the prefecture roster, reloaded when it changes."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

from meshdesk.hub.gate import RosterGate
from meshdesk.prefecture.home import PrefectureHome

NOW = dt.datetime.now(dt.UTC)


def test_a_revoked_city_is_refused_once_the_roster_changes(tmp_path: Path) -> None:
    home = PrefectureHome(tmp_path / "pref")
    home.init("テスト県", now=NOW)
    home.issue_city("221007", name="静岡市", urls=[], out=tmp_path / "a.cred", now=NOW)
    clock = [0.0]
    gate = RosterGate(home, clock=lambda: clock[0])
    assert gate("221007")
    assert not gate("131016")  # never admitted
    home.revoke_city("221007", reason="laptop stolen", now=NOW)
    stat = home.roster_path.stat()
    os.utime(home.roster_path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert gate("221007")  # not looked at again yet
    clock[0] += 2
    assert not gate("221007")


def test_a_tampered_roster_keeps_the_last_good_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    home = PrefectureHome(tmp_path / "pref")
    home.init("テスト県", now=NOW)
    home.issue_city("221007", name="静岡市", urls=[], out=tmp_path / "a.cred", now=NOW)
    clock = [0.0]
    gate = RosterGate(home, clock=lambda: clock[0])
    home.roster_path.write_text("{}", encoding="utf-8")
    clock[0] += 2
    assert gate("221007")
    assert "not reloaded" in caplog.text
