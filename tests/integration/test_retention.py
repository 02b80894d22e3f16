"""Retention: ``[records] erase_after_days`` erases through the signed erasure path."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from meshdesk.cases.book import CaseBook
from meshdesk.cases.model import Personal
from meshdesk.cases.summary import case_store
from meshdesk.config import Config, RecordSettings, config_text, load_config
from meshdesk.deploy import HomeSpec, build_deployment
from meshdesk.errors import ConfigError
from meshdesk.identity import NodeInfo, Role

DAY = 86_400_000
T0 = 1_795_300_000_000


async def test_cases_past_retention_are_erased_with_a_receipt(tmp_path: Path) -> None:
    specs = [HomeSpec("本部", Role.HQ, "市役所"), HomeSpec("shelter", Role.CENTER, "s")]
    homes = (await build_deployment(tmp_path, "保存市", specs, now=dt.datetime.now(dt.UTC))).homes
    kits = {name: home.load_identity(now=dt.datetime.now(dt.UTC)) for name, home in homes.items()}

    async def known() -> list[NodeInfo]:
        return [kit.info for kit in kits.values()]

    now = [T0]
    records = RecordSettings(erase_after_days=30)
    async with case_store(homes["本部"].store_path) as store:
        book = CaseBook(store, kits["本部"], directory=known, wall_ms=lambda: now[0],
                        records=records)  # fmt: skip
        ids = []
        for name in ("古い 相談", "新しい 相談", "未解決 相談"):
            state = await book.open_case(
                op="鈴木", category="housing", urgency="normal", personal=Personal(name=name)
            )
            ids.append(state.id)
        old, recent, open_ = ids
        await book.set_status(old, op="鈴木", status="resolved")
        now[0] += 20 * DAY
        await book.set_status(recent, op="鈴木", status="closed")
        now[0] += 11 * DAY  # old: resolved 31 days ago; recent: closed 11 days ago
        assert await book.steward.retention_pass() == [old]
        assert await book.steward.retention_pass() == []  # once
        state = await book.state(old)
        assert book.personal(state) is None
        assert [e.op for e in state.erasures] == ["retention ([records] erase_after_days)"]
        assert "30 days after the case was resolved" in state.erasures[0].reason
        assert [r.author for r in state.receipts] == [str(kits["本部"].node_id)]
        for kept in (recent, open_):
            assert book.personal(await book.state(kept)) is not None
        now[0] += 20 * DAY
        assert await book.steward.retention_pass() == [recent]


def test_retention_is_off_by_default_and_checked() -> None:
    assert Config().records.erase_after_days == 0
    text = config_text(Config())
    assert "0 (the default) never erases by itself" in text
    with pytest.raises(ValueError, match="export_roles"):
        RecordSettings(export_roles=("mayor",))
    with pytest.raises(ValueError, match="erase_after_days"):
        RecordSettings(erase_after_days=-1)


def test_a_bad_records_key_in_the_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[records]\nerase_after_days = -3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="erase_after_days"):
        load_config(path)
