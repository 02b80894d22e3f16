"""Catalogs: compiled .mo match their .po, every message has a Japanese text, and the
language is chosen from --lang, the locale, then the node's configuration."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import read_mo, write_mo
from babel.messages.pofile import read_po
from rich.cells import cell_len

from meshdesk.tui.i18n import LOCALE_DIR, choose_language, gettext_for
from meshdesk.tui.index import CaseRow
from meshdesk.tui.widgets.case_table import COLUMNS, row_cells

TUI = LOCALE_DIR.parent


def _po(lang: str) -> Path:
    return LOCALE_DIR / lang / "LC_MESSAGES" / "meshdesk.po"


def _messages(catalog: Catalog) -> dict[object, object]:
    """What a catalog means: each message id (plural ids as tuples) and its text."""
    return {m.id: m.string for m in catalog if m.id and m.string}


@pytest.mark.parametrize("lang", ["ja", "en"])
def test_compiled_catalog_matches_its_source(lang: str) -> None:
    # Compare the messages, not the bytes: a .mo embeds the version of the tool that
    # compiled it, and that is no reason to fail.
    with _po(lang).open("rb") as f:
        source = read_po(f, locale=lang)
    with _po(lang).with_suffix(".mo").open("rb") as f:
        compiled = read_mo(f)
    assert _messages(compiled) == _messages(source), f"{lang} .mo is stale: run `make i18n`"


def test_the_catalog_comparison_sees_a_stale_translation() -> None:
    with _po("ja").open("rb") as f:
        source = read_po(f, locale="ja")
    stale = io.BytesIO()
    write_mo(stale, source, use_fuzzy=True)
    stale.seek(0)
    compiled = read_mo(stale)
    assert _messages(compiled) == _messages(source)
    compiled["Dashboard"].string = "ダッシュボード"
    assert _messages(compiled) != _messages(source)


def test_every_message_of_the_source_has_a_japanese_text() -> None:
    with _po("ja").open("rb") as f:
        catalog = read_po(f, locale="ja")
    extracted = {
        message
        for _, _, message, _, _ in extract_from_dir(
            TUI, keywords={"tr": None, "N_": None}, method_map=[("**.py", "python")]
        )
    }
    assert extracted, "nothing extracted: the keywords changed?"
    missing = sorted(m for m in extracted if not catalog.get(m) or not catalog[m].string)
    assert not missing, f"no Japanese for: {missing} (run `make i18n` and translate)"


def test_a_translation_is_used() -> None:
    assert gettext_for("ja").gettext("Dashboard") == "概況"
    assert gettext_for("en").gettext("Dashboard") == "Dashboard"


@pytest.mark.parametrize(
    ("flag", "env", "configured", "expected"),
    [
        ("en", {"LANG": "ja_JP.UTF-8"}, "ja", "en"),
        (None, {"LANG": "ja_JP.UTF-8"}, "en", "ja"),
        (None, {"LC_ALL": "en_US.UTF-8", "LANG": "ja_JP.UTF-8"}, "ja", "en"),
        (None, {"LANG": "C.UTF-8"}, "en", "en"),
        (None, {}, "ja", "ja"),
        (None, {"LANG": "fr_FR.UTF-8"}, "en", "en"),
    ],
)
def test_language_choice(
    flag: str | None, env: dict[str, str], configured: str, expected: str
) -> None:
    assert choose_language(flag, env, configured) == expected


def test_a_japanese_row_lines_up_with_the_column_widths() -> None:
    row = CaseRow.of(
        {
            "id": "01990000-0000-7000-8000-00000000abcd",
            "urgency": "immediate",
            "status": "in_progress",
            "category": "welfare_eldercare",
            "name": "山田 花子さん（とても長い氏名の例）",
            "site": "第一小学校避難所 大町地区",
            "created_at": "2025-09-01T09:00:00Z",
            "conflicts": [{"field": "urgency"}],
        }
    )
    for lang in ("ja", "en"):
        cells = row_cells(row, lang)  # type: ignore[arg-type]
        assert [cell_len(c) for c in cells] == [w for _, w in COLUMNS]
    ja = row_cells(row, "ja")
    assert ja[0].startswith("緊急")
    assert ja[3].startswith("山田 花子")
