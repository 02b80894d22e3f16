"""``meshdesk case …`` against the store when no node runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from meshdesk.cli import main


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


def new_case(capsys: pytest.CaptureFixture[str], home: Path, *extra: str) -> dict[str, object]:
    code, out, err = run(
        capsys, "case", "new", "--home", str(home), "--category", "welfare_eldercare",
        "--urgency", "high", "--name", "山田 花子", "--phone", "090-1234-5678",
        "--shelter", "第一小学校", "--summary", "介護と子育ての相談", "--consent", "福祉課",
        "--operator", "佐藤", "--json", *extra,
    )  # fmt: skip
    assert code == 0, err
    case = json.loads(out)
    assert isinstance(case, dict)
    return case


def test_new_list_show_round_trip_japanese(hq: Path, capsys: pytest.CaptureFixture[str]) -> None:
    case = new_case(capsys, hq)
    assert case["name"] == "山田 花子"
    assert case["status"] == "new"
    assert case["consent"] == ["福祉課"]
    code, out, _ = run(capsys, "case", "list", "--home", str(hq), "--json")
    listed = [json.loads(line) for line in out.splitlines()]  # one object per line
    assert [c["id"] for c in listed] == [case["id"]]
    assert {"id", "category", "urgency", "status", "name"} <= set(listed[0])
    code, out, err = run(capsys, "case", "show", str(case["id"])[:8], "--home", str(hq), "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["notes"][0]["text"] == "介護と子育ての相談"
    assert shown["shelter"] == "第一小学校"


def test_edits(hq: Path, capsys: pytest.CaptureFixture[str]) -> None:
    case_id = str(new_case(capsys, hq)["id"])
    base = ("--home", str(hq), "--operator", "鈴木", "--json")
    assert run(capsys, "case", "note", case_id, "--text", "電話で確認済み", *base)[0] == 0
    refer = ("--department", "福祉課", "--reason", "介護保険の申請")
    assert run(capsys, "case", "refer", case_id, *refer, *base)[0] == 0
    assert run(capsys, "case", "status", case_id, "in_progress", *base)[0] == 0
    assert run(capsys, "case", "consent", case_id, "--department", "住宅課", *base)[0] == 0
    code, out, err = run(capsys, "case", "resolve", case_id, *base)
    assert code == 0, err
    case = json.loads(out)
    assert case["status"] == "resolved"
    assert case["consent"] == ["住宅課", "福祉課"]
    assert [r["department"] for r in case["referrals"]] == ["福祉課"]
    assert [n["text"] for n in case["notes"]] == ["介護と子育ての相談", "電話で確認済み"]
    assert {h["op"] for h in case["history"]} == {"佐藤", "鈴木"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["status", "{id}", "new"], "status is already new"),
        (["status", "{id}", "flying"], "unknown status 'flying'"),
        (["show", "ffffffff"], "no case 'ffffffff'"),
        (["note", "{id}", "--text", "  "], "must not be empty"),
        (["set", "{id}", "--field", "urgency", "--value", "soon"], "urgency"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    hq: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    case_id = str(new_case(capsys, hq)["id"])
    before = run(capsys, "status", "--home", str(hq), "--json")[1]
    code, _, err = run(capsys, "case", *[a.format(id=case_id) for a in argv], "--home", str(hq))
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert message in err
    after = run(capsys, "status", "--home", str(hq), "--json")[1]
    assert json.loads(after)["store"]["events"] == json.loads(before)["store"]["events"]


def test_bad_category_on_new(hq: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(
        capsys, "case", "new", "--home", str(hq), "--category", "weather",
        "--urgency", "high", "--name", "x",
    )  # fmt: skip
    assert code == 2
    assert "unknown category 'weather'" in err
    assert len(err.strip().splitlines()) == 1


def test_invalid_transition(hq: Path, capsys: pytest.CaptureFixture[str]) -> None:
    case_id = str(new_case(capsys, hq)["id"])
    assert run(capsys, "case", "resolve", case_id, "--home", str(hq))[0] == 0
    code, _, err = run(capsys, "case", "status", case_id, "referred", "--home", str(hq))
    assert code == 2
    assert err.strip() == (
        "meshdesk: error: cannot go from resolved to referred; allowed: closed, in_progress"
    )


def test_list_pages_as_a_table_and_streams_json_lines(
    hq: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    made = [str(new_case(capsys, hq)["id"]) for _ in range(5)]
    code, out, _ = run(capsys, "case", "list", "--home", str(hq), "--limit", "2")
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith(made[0][24:])
    assert lines[-1] == f"More cases follow: add --after {made[1][24:]} for the next page."
    code, out, _ = run(
        capsys, "case", "list", "--home", str(hq), "--limit", "2", "--after", made[1][24:]
    )
    assert out.splitlines()[0].startswith(made[2][24:])
    code, out, _ = run(capsys, "case", "list", "--home", str(hq), "--json", "--limit", "3")
    assert [json.loads(line)["id"] for line in out.splitlines()] == made[:3]
    code, out, _ = run(capsys, "case", "list", "--home", str(hq), "--json", "--status", "closed")
    assert (code, out) == (0, "")
    code, out, _ = run(capsys, "case", "list", "--home", str(hq), "--search", "山田", "--json")
    assert len(out.splitlines()) == 5
    code, _, err = run(capsys, "case", "list", "--home", str(hq), "--since", "someday")
    assert code != 0
    assert "since" in err


def test_erase_history_and_export_from_the_command_line(
    hq: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    case = new_case(capsys, hq)
    case_id = str(case["id"])
    out_file = tmp_path / "cases.csv"
    code, out, err = run(capsys, "export", "--home", str(hq), "--format", "csv",
                         "--out", str(out_file), "--personal", "--operator", "本部")  # fmt: skip
    assert code == 0, err
    assert f"Exported 1 cases, with personal fields to {out_file}" in out
    assert "山田 花子" in out_file.read_text(encoding="utf-8-sig")
    code, out, err = run(capsys, "case", "erase", case_id[-12:], "--home", str(hq),
                         "--reason", "本人の申出", "--operator", "本部")  # fmt: skip
    assert code == 0, err
    assert "ERASED: erased on 1 of 1 nodes" in out
    code, out, err = run(capsys, "case", "erase", case_id[-12:], "--home", str(hq),
                         "--reason", "again", "--operator", "本部")  # fmt: skip
    assert code != 0
    assert "erased already" in err
    assert "Traceback" not in err
    code, out, err = run(capsys, "case", "history", case_id[-12:], "--home", str(hq))
    assert code == 0, err
    lines = out.splitlines()
    assert [line.split()[1] for line in lines[:2]] == ["opened", "note"]
    assert any("erased" in line and "本人の申出" in line for line in lines)
    assert any("exported" in line and "cases.csv" in line for line in lines)
