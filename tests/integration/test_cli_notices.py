"""``meshdesk announce …`` and ``meshdesk message …`` on the store when no node runs,
and CAP 1.2 files through the CLI (issue 16)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lxml import etree

from meshdesk.cli import main

SCHEMA = Path(__file__).parents[1] / "data" / "cap" / "CAP-v1.2.xsd"


@pytest.fixture
def hq(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    home = tmp_path / "hq"
    assert main(["deployment", "create", "--home", str(home), "--name", "秋田市"]) == 0
    capsys.readouterr()
    return home


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_announce_new_list_ack_export_and_import(
    hq: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = ("--home", str(hq), "--operator", "山田")
    code, out, err = run(
        capsys, "announce", "new", *home, "--title", "給水は14時に体育館で",
        "--body", "ポリタンクをお持ちください。", "--severity", "severe", "--to", "site:体育館",
        "--expires", "6h", "--exercise", "--json",
    )  # fmt: skip
    assert code == 0, err
    posted = json.loads(out)
    assert posted["severity"] == "severe"
    assert posted["to"]["sites"] == ["体育館"]
    code, out, _ = run(capsys, "announce", "list", *home)
    assert "給水は14時に体育館で" in out
    assert code == 0

    cap = tmp_path / "alert.xml"
    code, out, err = run(
        capsys, "announce", "export", posted["id"][24:], "--format", "cap", "--out", str(cap),
        *home,
    )  # fmt: skip
    assert code == 0, err
    etree.XMLSchema(etree.parse(str(SCHEMA))).assertValid(etree.parse(str(cap)))
    code, out, err = run(capsys, "announce", "import", str(cap), *home, "--json")
    assert code == 0, err
    again = json.loads(out)
    assert again["id"] != posted["id"]
    assert (again["title_ja"], again["severity"], again["exercise"]) == (
        "給水は14時に体育館で",
        "severe",
        True,
    )
    assert again["to"]["sites"] == ["体育館"]

    code, out, err = run(capsys, "announce", "ack", posted["id"], *home, "--json")
    assert code == 0, err
    assert json.loads(out)["acknowledged"] is True

    (tmp_path / "bad.xml").write_text("<alert>", encoding="utf-8")
    code, out, err = run(capsys, "announce", "import", str(tmp_path / "bad.xml"), *home)
    assert code != 0
    assert err.strip().count("\n") == 0
    assert "CAP: not well-formed XML" in err


def test_a_desk_may_not_announce_and_messages_need_a_recipient(
    hq: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kit = tmp_path / "desk.kit"
    args = ["deployment", "issue", "--home", str(hq), "--name", "窓口", "--site", "体育館"]
    assert main([*args, "--role", "desk", "--out", str(kit)]) == 0
    desk = tmp_path / "desk"
    assert main(["init", "--home", str(desk), "--kit", str(kit)]) == 0
    capsys.readouterr()
    code, _, err = run(
        capsys, "announce", "new", "--home", str(desk), "--operator", "田中", "--title", "x"
    )
    assert code != 0
    assert "may not post announcements" in err
    code, _, err = run(capsys, "message", "send", "--home", str(desk), "--operator", "田中", "hi")
    assert code != 0
    assert "--to NODE or --dept" in err
    code, out, err = run(
        capsys, "message", "send", "--home", str(hq), "--operator", "山田", "--to", "窓口",
        "テスト", "--json",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["text"] == "テスト"  # the sender can read its own
    code, out, _ = run(capsys, "message", "list", "--home", str(hq))
    assert "-> 窓口  (0 delivered, 0 read): テスト" in out
